//! The XDP gateway's types: conntrack keys and entries (`TS_XDP_FLOWS`),
//! its counters, its source NAT port range and timeouts, and the checksum
//! update it applies to rewritten headers.

use crate::Addr;

/// Conntrack entries of the XDP gateway (`TS_XDP_FLOWS` size): two per
/// flow (one per direction). LRU: the least recently used go first.
pub const MAX_XDP_FLOWS: u32 = 1 << 18;
/// Source ports the XDP gateway gives its flows toward an endpoint (source
/// NAT to the node's address): above Linux's default ephemeral range
/// (32768-60999), so they never collide with the node's own connections.
/// The default; `--xdp-snat-ports` sets the range at load time through the
/// program's globals `XDP_SNAT_MIN_GLOBAL` and `XDP_SNAT_COUNT_GLOBAL`.
pub const XDP_SNAT_PORT_MIN: u16 = 61000;
pub const XDP_SNAT_PORT_MAX: u16 = 65535;
pub const XDP_SNAT_PORTS: u32 = XDP_SNAT_PORT_MAX as u32 + 1 - XDP_SNAT_PORT_MIN as u32;
/// The XDP program's global holding the first source port (u16).
pub const XDP_SNAT_MIN_GLOBAL: &str = "TS_XDP_SNAT_MIN";
/// The XDP program's global holding the number of source ports (u32, >= 1).
pub const XDP_SNAT_COUNT_GLOBAL: &str = "TS_XDP_SNAT_COUNT";
/// A flow no packet has used for this long is over (its entries and
/// source port are free to reuse).
pub const XDP_IDLE_TIMEOUT_NS: u64 = 300 * 1_000_000_000;
/// Once a FIN has been seen on a flow, it is over after this much silence
/// (the last ACKs of the close still pass).
pub const XDP_CLOSING_TIMEOUT_NS: u64 = 10 * 1_000_000_000;
/// A flow closed both ways whose endpoint closed first (or at the same
/// time) keeps its source port this long after its last packet: the
/// endpoint holds the 4-tuple in TIME_WAIT for Linux's `TCP_TIMEWAIT_LEN`
/// (60 s), and a new SYN on it could be answered as the old connection's.
/// A flow whose client closed first frees its port at the last ACK
/// instead (`nat_flags::PASSIVE_CLOSE`).
pub const XDP_TIME_WAIT_NS: u64 = 60 * 1_000_000_000;

/// How long a flow direction's next hop ([`NatEntry::hop_dmac`]) is used
/// before it is looked up again: a neighbour whose MAC address changes, or
/// a route that moves, is followed by open flows within this time.
pub const XDP_HOP_REFRESH_NS: u64 = 1_000_000_000;

/// `now_ns` in the units of [`NatEntry::hop_checked`] (2^20 ns, about a
/// millisecond), wrapping every 52 days.
#[expect(
    clippy::inline_always,
    reason = "called from eBPF programs, where it must be inlined"
)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "wraps by design: only differences are read"
)]
#[inline(always)]
pub const fn hop_time(now_ns: u64) -> u32 {
    (now_ns >> 20) as u32
}

impl NatEntry {
    /// Whether its next hop was looked up less than `XDP_HOP_REFRESH_NS`
    /// before `now_ns`.
    #[expect(
        clippy::inline_always,
        reason = "called from eBPF programs, where it must be inlined"
    )]
    #[inline(always)]
    pub const fn hop_fresh(&self, now_ns: u64) -> bool {
        self.hop_ifindex != 0
            && hop_time(now_ns).wrapping_sub(self.hop_checked) < hop_time(XDP_HOP_REFRESH_NS)
    }
}

/// Key of `TS_XDP_FLOWS`: one direction of a flow, as its packets carry it
/// (client -> gateway address, or endpoint -> node address).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct NatKey {
    /// Addresses in network byte order, as `ServiceKey::addr`.
    pub src: Addr,
    pub dst: Addr,
    /// Ports in network byte order.
    pub sport: u16,
    pub dport: u16,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    pub pad: [u8; 3],
}
const _: () = assert!(size_of::<NatKey>() == 40);
const _: () = assert!(core::mem::align_of::<NatKey>() == 4);

/// `addr` read in place as network-order words (what checksums are
/// computed over), with no copy: the XDP program's stack has no room for
/// one. Only for fields 4-aligned in a 4-aligned struct (asserted below).
#[expect(
    clippy::inline_always,
    reason = "called from eBPF programs, where it must be inlined"
)]
#[expect(
    clippy::cast_ptr_alignment,
    reason = "only called on 4-aligned fields, asserted where it is used"
)]
#[inline(always)]
const fn words_in_place(addr: &Addr) -> &[u32; 4] {
    // SAFETY: 16 bytes of plain integers; callers pass 4-aligned fields.
    unsafe { &*core::ptr::from_ref(addr).cast::<[u32; 4]>() }
}

impl NatKey {
    /// `src` and `dst` as network-order words, in place.
    #[expect(
        clippy::inline_always,
        reason = "called from eBPF programs, where it must be inlined"
    )]
    #[inline(always)]
    pub const fn addr_words(&self) -> (&[u32; 4], &[u32; 4]) {
        (words_in_place(&self.src), words_in_place(&self.dst))
    }
}
const _: () = assert!(
    core::mem::offset_of!(NatKey, src) % 4 == 0 && core::mem::offset_of!(NatKey, dst) % 4 == 0
);

/// Value of `TS_XDP_FLOWS`: what a packet of that direction is rewritten to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct NatEntry {
    /// New source and destination addresses, network byte order.
    pub src: Addr,
    pub dst: Addr,
    /// New ports, network byte order.
    pub sport: u16,
    pub dport: u16,
    /// The endpoint's counters (`TS_STATS`, `TS_XDP_STATS`).
    pub stat_id: u32,
    /// When a packet last used it (`bpf_ktime_get_ns`).
    pub last_seen_ns: u64,
    /// `nat_flags::*`.
    pub flags: u8,
    pub family: u8,
    /// The next hop of this direction as the last `bpf_fib_lookup` found
    /// it (destination and source MAC addresses, interface), kept so a
    /// packet of an established flow needs no lookup of its own (as
    /// Katran, whose next hop is fixed); looked up again once
    /// `XDP_HOP_REFRESH_NS` old. `hop_ifindex` 0: not looked up yet.
    pub hop_dmac: [u8; 6],
    pub hop_smac: [u8; 6],
    pub pad: [u8; 2],
    pub hop_ifindex: u32,
    /// When it was looked up: the coarse clock in units of 2^20 ns
    /// ([`hop_time`]), wrapping.
    pub hop_checked: u32,
    /// Once a FIN went this way: the sequence number just past it (the
    /// FIN's own plus its payload and one), host order; what the other
    /// side's ACK of the FIN carries.
    pub fin_end: u32,
    pub pad_end: u32,
}
const _: () = assert!(size_of::<NatEntry>() == 80);

const _: () = assert!(
    core::mem::align_of::<NatEntry>() >= 4
        && core::mem::offset_of!(NatEntry, src) % 4 == 0
        && core::mem::offset_of!(NatEntry, dst) % 4 == 0
);

impl NatEntry {
    /// `src` and `dst` as network-order words, in place.
    #[expect(
        clippy::inline_always,
        reason = "called from eBPF programs, where it must be inlined"
    )]
    #[inline(always)]
    pub const fn addr_words(&self) -> (&[u32; 4], &[u32; 4]) {
        (words_in_place(&self.src), words_in_place(&self.dst))
    }

    /// The key of the other direction's entry: the packet this one
    /// produces, answered.
    pub const fn reverse_key(&self) -> NatKey {
        NatKey {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            family: self.family,
            pad: [0; 3],
        }
    }
}

/// `NatEntry::flags`.
pub mod nat_flags {
    /// Endpoint -> client (the reply direction).
    pub const REPLY: u8 = 1;
    /// A FIN went this way.
    pub const FIN: u8 = 2;
    /// The endpoint answered the SYN (counted as established once).
    pub const ESTABLISHED: u8 = 4;
    /// The flow was counted closed.
    pub const CLOSED: u8 = 8;
    /// This way's FIN acknowledged the other way's: its sender closed
    /// second, so it holds no TIME_WAIT once the last ACK reaches it.
    pub const PASSIVE_CLOSE: u8 = 16;
}

/// Value of per-CPU `TS_XDP_STATS` (index: stat id): packets and bytes the
/// XDP gateway forwarded for one endpoint. Connections and payload bytes go
/// to `TS_STATS` as on the other paths.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct XdpStats {
    /// Client -> endpoint packets and their bytes (whole frames).
    pub request_packets: u64,
    pub request_bytes: u64,
    /// Endpoint -> client.
    pub response_packets: u64,
    pub response_bytes: u64,
    /// Flows started (SYNs given this endpoint).
    pub flows: u64,
}
const _: () = assert!(size_of::<XdpStats>() == 40);

/// One's complement checksum update (RFC 1624, eqn. 3) for 32-bit words
/// `old` replaced by `new`: `HC' = ~(~HC + ~m + m')`, 16 bits at a time.
/// Byte-order agnostic: `check` and the words must be read from the packet
/// the same way (here: native loads of network-order bytes).
#[expect(
    clippy::inline_always,
    reason = "called from eBPF programs, where it must be inlined"
)]
#[expect(
    clippy::cast_possible_truncation,
    reason = "the sum is folded below 2^16 first"
)]
#[inline(always)]
pub const fn csum_replace(check: u16, old: &[u32], new: &[u32]) -> u16 {
    let mut sum: u64 = (!check) as u64;
    let mut i = 0;
    while i < old.len() {
        sum += (!old[i] & 0xffff) as u64 + (!old[i] >> 16) as u64;
        sum += (new[i] & 0xffff) as u64 + (new[i] >> 16) as u64;
        i += 1;
    }
    // Four folds bring any sum of up to 2^32 terms below 2^16.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
