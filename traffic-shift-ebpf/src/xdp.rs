//! XDP (kernel 5.9 for the link, 6.7 for `BPF_FIB_LOOKUP_SRC`): the gateway
//! for endpoints on other hosts. Packet-level L4 load balancing with
//! conntrack and NAT, as Katran does but with source NAT instead of
//! encapsulation, so backends need no configuration.
//!
//! - A SYN to a gateway address:port (`TS_XDP_GATEWAYS`) gets an endpoint
//!   from its route's table (the same `pick` as every other path), a source
//!   port toward it and two conntrack entries (`TS_XDP_FLOWS`, LRU): client
//!   -> gateway becomes node -> endpoint, and the endpoint's answers to the
//!   node become gateway -> client again.
//! - Every later packet of either direction follows its entry, so a weight
//!   change never moves an open connection. A RST ends the flow (after it
//!   is forwarded), and so does the last ACK of a close the client began
//!   (the endpoint then holds no TIME_WAIT): its source port is free at
//!   once. A flow the endpoint closed first keeps its port for
//!   `XDP_TIME_WAIT_NS`, the endpoint's TIME_WAIT; a half-closed one ends
//!   after `XDP_CLOSING_TIMEOUT_NS` of silence, any other after
//!   `XDP_IDLE_TIMEOUT_NS`.
//! - The next hop (interface, MAC addresses, and the node's source address
//!   toward the endpoint) comes from `bpf_fib_lookup`; the packet leaves by
//!   `XDP_TX` (same interface) or `XDP_REDIRECT`. Each entry keeps its
//!   direction's next hop, looked up again once `XDP_HOP_REFRESH_NS` old:
//!   a packet of an established flow makes no lookup of its own.
//!
//! Everything else passes untouched: other protocols, other addresses,
//! headers the program does not parse (IPv4 options, IPv6 extension
//! headers, VLAN tags, truncated packets) and IPv4 fragments. A packet is
//! only dropped for a reason counted in `TS_EVENTS` (`Event::is_drop`).

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_ANY, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SRC,
        BPF_NOEXIST, bpf_fib_lookup, xdp_action,
    },
    helpers::generated::{
        bpf_fib_lookup as fib_lookup, bpf_get_prandom_u32, bpf_ktime_get_coarse_ns, bpf_redirect,
    },
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use traffic_shift_common::{
    EndpointStats, Event, FAMILY_V4, FAMILY_V6, MAX_STATS, NatEntry, NatKey, ServiceKey,
    XDP_CLOSING_TIMEOUT_NS, XDP_IDLE_TIMEOUT_NS, XDP_SNAT_PORT_MIN, XDP_SNAT_PORTS,
    XDP_TIME_WAIT_NS, XdpStats, addr_from_words, addr_words, csum_replace, hop_time, nat_flags,
};

use crate::{
    maps::{TS_STATS, TS_XDP_FLOWS, TS_XDP_GATEWAYS, TS_XDP_STATS, add, count, touch},
    select::route_and_pick,
};

/// `new_flow`'s working space (see there).
#[repr(C)]
pub struct Scratch {
    fib: bpf_fib_lookup,
    forward: NatEntry,
    reply: NatEntry,
    /// The reply entry's key while a source port is sought.
    reply_key: NatKey,
}

/// One `Scratch` per CPU. Not pinned: nothing in it outlives a program run.
#[map]
static TS_XDP_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_HLEN: usize = 20;
const IPPROTO_TCP: u8 = 6;
// IPv6 extension headers (RFC 8200 4.1; 139 HIP, 140 Shim6, 253/254
// experimental, written as numbers below).
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_MH: u8 = 135;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// The source NAT port range: the first port and how many (set at load
/// time, `XDP_SNAT_MIN_GLOBAL` and `XDP_SNAT_COUNT_GLOBAL` in common).
#[unsafe(no_mangle)]
static TS_XDP_SNAT_MIN: u16 = XDP_SNAT_PORT_MIN;
#[unsafe(no_mangle)]
static TS_XDP_SNAT_COUNT: u32 = XDP_SNAT_PORTS;

/// Source ports tried for a new flow before giving up (`XdpNoPort`).
const PORT_TRIES: u32 = 8;

#[xdp]
pub fn ts_xdp(ctx: XdpContext) -> u32 {
    let (action, event) = match try_xdp(&ctx) {
        Ok(verdict) => verdict,
        Err(event) if event.is_drop() => (xdp_action::XDP_DROP, event),
        // The TTL ran out: the stack sends the ICMP error.
        Err(event) => (xdp_action::XDP_PASS, event),
    };
    count(event);
    action
}

/// Where the headers are and what they say.
struct Packet {
    /// The IP header's offset is always `ETH_HLEN`; the TCP header's.
    l4: usize,
    family: u8,
    key: NatKey,
    tcp_flags: u8,
    /// Sequence and acknowledgment numbers, host order.
    seq: u32,
    ack: u32,
    /// IPv4 TTL or IPv6 hop limit.
    ttl: u8,
    /// Whole frame length, for the packet/byte counters.
    frame_len: u64,
    /// TCP payload bytes (what `TS_STATS` counts).
    payload_len: u64,
}

/// The packet's start and end, loaded from the context with volatile
/// reads: otherwise LLVM passes the 32-bit fields instead of the context
/// to the non-inlined functions, and the verifier refuses the result:
/// "R2 pointer arithmetic with <<= operator prohibited".
#[inline(always)]
fn bounds(ctx: &XdpContext) -> (usize, usize) {
    // SAFETY: the context pointer is valid for the program run.
    unsafe {
        (
            core::ptr::read_volatile(&raw const (*ctx.ctx).data) as usize,
            core::ptr::read_volatile(&raw const (*ctx.ctx).data_end) as usize,
        )
    }
}

/// Bounds-checked pointer to `T` at `offset` in the packet.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let (start, end) = bounds(ctx);
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Reads a `T` (unaligned) at `offset`, bounds-checked.
#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    // SAFETY: `ptr_at` checked the bounds.
    ptr_at::<T>(ctx, offset).map(|p| unsafe { p.read_unaligned() })
}

#[inline(always)]
fn write<T: Copy>(ctx: &XdpContext, offset: usize, value: T) {
    if let Some(p) = ptr_at::<T>(ctx, offset) {
        // SAFETY: `ptr_at` checked the bounds.
        unsafe { p.write_unaligned(value) }
    }
}

#[inline(always)]
fn try_xdp(ctx: &XdpContext) -> Result<(u32, Event), Event> {
    let pass = |event| Ok((xdp_action::XDP_PASS, event));
    // Filled in place: a returned Packet is one more copy on the stack.
    let mut packet = Packet {
        l4: 0,
        family: 0,
        key: NatKey {
            src: [0; 16],
            dst: [0; 16],
            sport: 0,
            dport: 0,
            family: 0,
            pad: [0; 3],
        },
        tcp_flags: 0,
        seq: 0,
        ack: 0,
        ttl: 0,
        frame_len: 0,
        payload_len: 0,
    };
    match parse(ctx, &mut packet) {
        Ok(true) => {}
        Ok(false) => return pass(Event::XdpPass),
        Err(event) => return pass(event),
    }
    // SAFETY: the bpf helper has no preconditions.
    // The coarse clock (jiffies, a few ms) is precise enough for timeouts of
    // seconds, and costs no clock-source read per packet.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let syn = packet.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if let Some(entry) = TS_XDP_FLOWS.get_ptr_mut(&packet.key) {
        // SAFETY: LRU values stay valid for the program run.
        let (flags, last_seen) = unsafe { ((*entry).flags, (*entry).last_seen_ns) };
        // A SYN after a close (or on a dead entry) is a new connection on
        // the same 4-tuple; a SYN on a live one is a retransmission.
        let reused = syn && flags & (nat_flags::FIN | nat_flags::REPLY) == nat_flags::FIN;
        if !expired(flags, last_seen, now) && !reused {
            return follow(ctx, &packet, entry, now);
        }
        // SAFETY: as above.
        let _ = TS_XDP_FLOWS.remove(&unsafe { (*entry).reverse_key() });
        let _ = TS_XDP_FLOWS.remove(&packet.key);
        if flags & nat_flags::REPLY != 0 {
            return pass(Event::XdpUnknownFlow);
        }
    }
    // One key on the stack, its address zeroed for the second lookup.
    let mut key = ServiceKey {
        addr: packet.key.dst,
        port: packet.key.dport,
        family: packet.family,
        pad: 0,
    };
    // SAFETY: entries are replaced, not written in place, by user space.
    let gateway = match unsafe { TS_XDP_GATEWAYS.get(&key) } {
        Some(gateway) => gateway,
        None => {
            key.addr = [0; 16];
            // SAFETY: as above.
            match unsafe { TS_XDP_GATEWAYS.get(&key) } {
                Some(gateway) => gateway,
                None => return pass(Event::XdpPass),
            }
        }
    };
    if !syn {
        return pass(Event::XdpUnknownFlow);
    }
    let hop = match new_flow(ctx, &packet, gateway.route_id, now)? {
        NewFlow::Made(hop) => hop,
        NewFlow::Pass(event) => return pass(event),
    };
    // Rewritten here, not in `new_flow`: the chain of calls through it to
    // `rewrite` would pass the 512-byte stack.
    let Some(scratch) = TS_XDP_SCRATCH.get_ptr_mut(0) else {
        return Err(Event::XdpFlowFull);
    };
    // SAFETY: this CPU's value, filled by `new_flow` in this run.
    let forward = unsafe { &(*scratch).forward };
    rewrite(ctx, &packet, forward, &forward.hop_dmac, &forward.hop_smac)?;
    account(&packet, forward, stats(forward.stat_id));
    Ok((hop.action(ctx), Event::XdpNewFlow))
}

/// Parses Ethernet, IPv4 or IPv6, and TCP into `out`. `Ok(false)`: not TCP over IP;
/// `Err(event)`: IP that the program does not handle (passed). Not
/// inlined: its header copies get their own frame (the BPF stack limit is
/// 512 bytes for the deepest chain of calls).
#[inline(never)]
fn parse(ctx: &XdpContext, out: &mut Packet) -> Result<bool, Event> {
    let (start, end) = bounds(ctx);
    let frame_len = (end - start) as u64;
    let Some(ethertype) = read::<u16>(ctx, 12) else {
        return Err(Event::XdpUnparsed);
    };
    let ethertype = u16::from_be(ethertype);
    let (family, l4, addrs, ip_payload, ttl) = match ethertype {
        ETH_P_IP => {
            let Some(ip) = read::<[u8; IPV4_HLEN]>(ctx, ETH_HLEN) else {
                return Err(Event::XdpUnparsed);
            };
            if ip[9] != IPPROTO_TCP {
                return Ok(false);
            }
            if ip[0] != 0x45 {
                // IPv4 options or a bad version/length.
                return Err(Event::XdpUnparsed);
            }
            // More fragments, or an offset: a fragment.
            if ip[6] & 0x3f != 0 || ip[7] != 0 {
                return Err(Event::XdpFragment);
            }
            let total = u16::from_be_bytes([ip[2], ip[3]]) as u64;
            if total < (IPV4_HLEN + TCP_HLEN) as u64 || ETH_HLEN as u64 + total > frame_len {
                return Err(Event::XdpUnparsed);
            }
            let word = |i: usize| u32::from_ne_bytes([ip[i], ip[i + 1], ip[i + 2], ip[i + 3]]);
            (
                FAMILY_V4,
                ETH_HLEN + IPV4_HLEN,
                ([word(12), 0, 0, 0], [word(16), 0, 0, 0]),
                total - IPV4_HLEN as u64,
                ip[8],
            )
        }
        ETH_P_IPV6 => {
            let Some(ip) = read::<[u32; IPV6_HLEN / 4]>(ctx, ETH_HLEN) else {
                return Err(Event::XdpUnparsed);
            };
            if ip[0].to_ne_bytes()[0] >> 4 != 6 {
                return Err(Event::XdpUnparsed);
            }
            let b = ip[1].to_ne_bytes();
            match b[2] {
                IPPROTO_TCP => {}
                // Extension headers are not walked: a fragment (the
                // fragment header) and any other passes to the stack.
                IPPROTO_FRAGMENT => return Err(Event::XdpFragment),
                IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_MH
                | 139 | 140 | 253 | 254 => return Err(Event::XdpUnparsed),
                _ => return Ok(false),
            }
            let payload = u16::from_be_bytes([b[0], b[1]]) as u64;
            if payload < TCP_HLEN as u64 || (ETH_HLEN + IPV6_HLEN) as u64 + payload > frame_len {
                return Err(Event::XdpUnparsed);
            }
            (
                FAMILY_V6,
                ETH_HLEN + IPV6_HLEN,
                ([ip[2], ip[3], ip[4], ip[5]], [ip[6], ip[7], ip[8], ip[9]]),
                payload,
                b[3],
            )
        }
        _ => return Ok(false),
    };
    let Some(tcp) = read::<[u8; TCP_HLEN]>(ctx, l4) else {
        return Err(Event::XdpUnparsed);
    };
    let data_offset = u64::from(tcp[12] >> 4) * 4;
    if data_offset < TCP_HLEN as u64 || data_offset > ip_payload {
        return Err(Event::XdpUnparsed);
    }
    *out = Packet {
        l4,
        family,
        key: NatKey {
            src: addr_from_words(addrs.0),
            dst: addr_from_words(addrs.1),
            sport: u16::from_ne_bytes([tcp[0], tcp[1]]),
            dport: u16::from_ne_bytes([tcp[2], tcp[3]]),
            family,
            pad: [0; 3],
        },
        tcp_flags: tcp[13],
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        ack: u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
        ttl,
        frame_len,
        payload_len: ip_payload - data_offset,
    };
    Ok(true)
}

/// Whether an entry with `flags`, last used at `last_seen`, is over.
#[inline(always)]
fn expired(flags: u8, last_seen: u64, now: u64) -> bool {
    let timeout = if flags & nat_flags::CLOSED != 0 {
        XDP_TIME_WAIT_NS
    } else if flags & nat_flags::FIN != 0 {
        XDP_CLOSING_TIMEOUT_NS
    } else {
        XDP_IDLE_TIMEOUT_NS
    };
    now.wrapping_sub(last_seen) > timeout
}

/// Whether sequence number `a` is at or after `b` (RFC 1982 arithmetic).
#[inline(always)]
fn seq_ge(a: u32, b: u32) -> bool {
    a.wrapping_sub(b) as i32 >= 0
}

/// What `new_flow` made of a SYN.
enum NewFlow {
    /// Entries made, the rewrite in the scratch: forward to the hop.
    Made(Hop),
    /// Nothing made: the packet goes to the stack, counted as this event.
    Pass(Event),
}

/// A SYN to a gateway: endpoint, source port, entries; the rewrite and the
/// next hop left in the per-CPU scratch for the caller to apply.
/// Not inlined (nor is `follow`): each gets its own stack frame, where
/// inlined together they exceed the 512-byte BPF stack.
#[inline(never)]
fn new_flow(ctx: &XdpContext, packet: &Packet, route_id: u32, now: u64) -> Result<NewFlow, Event> {
    // Before anything is made for the flow (`rewrite` checks it too late):
    // the stack answers with the ICMP error.
    if packet.ttl <= 1 {
        return Err(Event::XdpTtlExceeded);
    }
    // No endpoint (the subset has none, or none healthy; or none of the
    // packet's family): the node's stack answers the SYN with a reset (no
    // socket listens there), so the client fails at once, as on the other
    // paths, instead of retrying a dropped SYN.
    let no_endpoint = Ok(NewFlow::Pass(Event::XdpNoEndpoint));
    let picked = match route_and_pick(route_id, addr_words(packet.key.src)) {
        Ok((_, picked)) => picked,
        Err(None) => return Ok(NewFlow::Pass(Event::XdpPass)),
        Err(Some(_)) => return no_endpoint,
    };
    let backend = picked.backend;
    if backend.family != packet.family {
        return no_endpoint;
    }
    let stat_id = backend.stat_id;
    // Its large locals live in a per-CPU map: on the stack they would take
    // the chain of calls past 512 bytes ("combined stack size of 2 calls
    // is 640. Too large").
    let Some(scratch) = TS_XDP_SCRATCH.get_ptr_mut(0) else {
        return Err(Event::XdpFlowFull);
    };
    // SAFETY: this CPU's value, valid for the run; XDP does not nest on a CPU.
    let Scratch {
        fib,
        forward,
        reply,
        reply_key,
    } = unsafe { &mut *scratch };
    // The node's address toward the endpoint, and the next hop.
    fib_params(fib, packet.family, packet.key.src, backend.addr);
    let hop = next_hop(ctx, fib, BPF_FIB_LOOKUP_SRC)?;
    let node = if packet.family == FAMILY_V4 {
        // SAFETY: the union member of the family we asked for.
        [unsafe { fib.__bindgen_anon_3.ipv4_src }, 0, 0, 0]
    } else {
        // SAFETY: as above.
        unsafe { fib.__bindgen_anon_3.ipv6_src }
    };
    *forward = NatEntry {
        src: addr_from_words(node),
        dst: backend.addr,
        sport: 0,
        dport: backend.port,
        stat_id,
        last_seen_ns: now,
        flags: 0,
        family: packet.family,
        hop_dmac: fib.dmac,
        hop_smac: fib.smac,
        pad: [0; 2],
        hop_ifindex: hop.ifindex,
        hop_checked: hop_time(now),
        fin_end: 0,
        pad_end: 0,
    };
    // The reply's next hop is looked up with its first packet.
    *reply = NatEntry {
        src: packet.key.dst,
        dst: packet.key.src,
        sport: packet.key.dport,
        dport: packet.key.sport,
        stat_id,
        last_seen_ns: now,
        flags: nat_flags::REPLY,
        family: packet.family,
        hop_dmac: [0; 6],
        hop_smac: [0; 6],
        pad: [0; 2],
        hop_ifindex: 0,
        hop_checked: 0,
        fin_end: 0,
        pad_end: 0,
    };
    // A source port toward this endpoint that no live flow holds: the
    // reply entry's key (endpoint -> node:port) must be free. Written
    // with NOEXIST, so two CPUs never take the same one.
    // SAFETY: the bpf helper has no preconditions.
    let start = unsafe { bpf_get_prandom_u32() };
    // SAFETY: load-time constants; volatile, or the compiler would fold
    // in the defaults.
    let (first, count) = unsafe {
        (
            core::ptr::read_volatile(&raw const TS_XDP_SNAT_MIN),
            core::ptr::read_volatile(&raw const TS_XDP_SNAT_COUNT).max(1),
        )
    };
    let mut found = false;
    for i in 0..PORT_TRIES {
        let port = first.wrapping_add((start.wrapping_add(i * 7919) % count) as u16);
        forward.sport = port.to_be();
        *reply_key = forward.reverse_key();
        let key = &*reply_key;
        let flags = match TS_XDP_FLOWS.get_ptr(key) {
            None => u64::from(BPF_NOEXIST),
            // SAFETY: LRU values stay valid for the program run.
            Some(old) => {
                let (flags, last_seen) = unsafe { ((*old).flags, (*old).last_seen_ns) };
                if !expired(flags, last_seen, now) {
                    continue;
                }
                // A dead flow's port: its forward entry goes too.
                let _ = TS_XDP_FLOWS.remove(&unsafe { (*old).reverse_key() });
                u64::from(BPF_ANY)
            }
        };
        if TS_XDP_FLOWS.insert(key, &*reply, flags).is_ok() {
            found = true;
            break;
        }
    }
    if !found {
        return Err(Event::XdpNoPort);
    }
    if TS_XDP_FLOWS
        .insert(&packet.key, &*forward, u64::from(BPF_ANY))
        .is_err()
    {
        let _ = TS_XDP_FLOWS.remove(&*reply_key);
        return Err(Event::XdpFlowFull);
    }
    if let Some(s) = stats(stat_id) {
        // SAFETY: a per-CPU map value, valid for the run.
        unsafe { add(&raw mut (*s).opened, 1) };
    }
    if let Some(x) = xdp_stats(stat_id) {
        // SAFETY: a per-CPU map value, valid for the run.
        unsafe { add(&raw mut (*x).flows, 1) };
    }
    Ok(NewFlow::Made(hop))
}

/// A packet of a known flow: rewrite by its entry, keep the counters.
#[inline(never)]
fn follow(
    ctx: &XdpContext,
    packet: &Packet,
    entry: *mut NatEntry,
    now: u64,
) -> Result<(u32, Event), Event> {
    // SAFETY: LRU values stay valid for the program run.
    let nat = unsafe { &*entry };
    // The next hop the entry keeps, or looked up (and kept) when it is
    // stale. Another CPU may refresh it at the same time: both write
    // what the lookup found.
    let looked_up = !nat.hop_fresh(now);
    let (hop, dmac, smac) = if looked_up {
        // In the per-CPU scratch, as in `new_flow`: on the stack it takes
        // the chain of calls past 512 bytes.
        let Some(scratch) = TS_XDP_SCRATCH.get_ptr_mut(0) else {
            return Err(Event::XdpFlowFull);
        };
        // SAFETY: this CPU's value, valid for the run; XDP does not nest on a CPU.
        let fib = unsafe { &mut (*scratch).fib };
        fib_params(fib, nat.family, nat.src, nat.dst);
        (next_hop(ctx, fib, 0)?, fib.dmac, fib.smac)
    } else {
        (
            Hop {
                ifindex: nat.hop_ifindex,
            },
            nat.hop_dmac,
            nat.hop_smac,
        )
    };
    rewrite(ctx, packet, nat, &dmac, &smac)?;
    let mut flags = nat.flags;
    let reply = flags & nat_flags::REPLY != 0;
    let stat = stats(nat.stat_id);
    if reply && flags & nat_flags::ESTABLISHED == 0 {
        if packet.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
            flags |= nat_flags::ESTABLISHED;
            if let Some(s) = stat {
                // SAFETY: a per-CPU map value, valid for the run.
                unsafe { add(&raw mut (*s).established, 1) };
            }
        } else if packet.tcp_flags & TCP_RST != 0 {
            // The endpoint refused the connection: outlier detection counts it.
            if let Some(s) = stat {
                // SAFETY: a per-CPU map value, valid for the run.
                unsafe { add(&raw mut (*s).failed_refused, 1) };
            }
        }
    }
    let fin = packet.tcp_flags & TCP_FIN != 0;
    let rst = packet.tcp_flags & TCP_RST != 0;
    // Whether the flow is over for the endpoint, its entries (and source
    // port) free at once: at a reset, or at the last ACK of a close the
    // client began.
    let mut release = rst;
    // Where this way's FIN ends, once one passes (written only then: an
    // established flow's packet stores nothing more).
    let mut fin_end = None;
    // The other way's entry is read only while the flow closes (a FIN or
    // reset now, or a FIN this way before): an established flow's packet
    // makes no second lookup.
    if fin || rst || flags & nat_flags::FIN != 0 {
        let other = TS_XDP_FLOWS.get_ptr_mut(&nat.reverse_key());
        // SAFETY: LRU values stay valid for the program run.
        let (other_flags, other_fin_end) =
            other.map_or((0, 0), |o| unsafe { ((*o).flags, (*o).fin_end) });
        let acks_other_fin = other_flags & nat_flags::FIN != 0
            && packet.tcp_flags & TCP_ACK != 0
            && seq_ge(packet.ack, other_fin_end);
        if fin {
            flags |= nat_flags::FIN;
            // A retransmitted FIN writes the same.
            fin_end = Some(
                packet
                    .seq
                    .wrapping_add(packet.payload_len as u32)
                    .wrapping_add(1),
            );
            if acks_other_fin {
                flags |= nat_flags::PASSIVE_CLOSE;
            }
        }
        // Closed once both ways have sent a FIN, or at a reset.
        let done = rst || (fin && other_flags & nat_flags::FIN != 0);
        if done && flags & nat_flags::CLOSED == 0 {
            flags |= nat_flags::CLOSED;
            if let Some(o) = other {
                // SAFETY: as above; a racing writer only repeats the flags.
                unsafe { (*o).flags |= nat_flags::CLOSED | nat_flags::FIN };
            }
            if let Some(s) = stat {
                // SAFETY: a per-CPU map value, valid for the run.
                unsafe { add(&raw mut (*s).closed, 1) };
            }
        }
        // The client acknowledges the FIN of an endpoint that closed
        // second: the endpoint's socket goes from LAST_ACK to CLOSED, with
        // no TIME_WAIT, so its 4-tuple, and the source port, can carry a
        // new flow now (as Linux NAT reuses the tuple of a connection its
        // original side closed first, `nf_nat_used_tuple_harder`). The
        // client holds the TIME_WAIT, on its own 4-tuple. Should this ACK
        // be lost, the endpoint's retransmitted FIN meets no entry and the
        // node's stack answers it with a reset, which ends its socket.
        if !reply && other_flags & nat_flags::PASSIVE_CLOSE != 0 && acks_other_fin {
            release = true;
        }
    }
    account(packet, nat, stat);
    if release {
        // The packet itself is forwarded; the entries go, and with them
        // the source port.
        let reverse = nat.reverse_key();
        let _ = TS_XDP_FLOWS.remove(&reverse);
        let _ = TS_XDP_FLOWS.remove(&packet.key);
    } else {
        // SAFETY: the entry is valid for the run; concurrent writers (other
        // CPUs with packets of the same flow) write the same kind of values.
        unsafe {
            (*entry).last_seen_ns = now;
            (*entry).flags = flags;
            if let Some(end) = fin_end {
                (*entry).fin_end = end;
            }
            if looked_up {
                (*entry).hop_dmac = dmac;
                (*entry).hop_smac = smac;
                (*entry).hop_ifindex = hop.ifindex;
                (*entry).hop_checked = hop_time(now);
            }
        }
    }
    let event = if reply {
        Event::XdpReply
    } else {
        Event::XdpForward
    };
    Ok((hop.action(ctx), event))
}

/// Counts the packet against its endpoint (`stat`: its `TS_STATS` slot,
/// already marked touched).
#[inline(always)]
fn account(packet: &Packet, nat: &NatEntry, stat: Option<*mut EndpointStats>) {
    let reply = nat.flags & nat_flags::REPLY != 0;
    if let Some(s) = stat {
        // SAFETY: a per-CPU map value, valid for the run.
        let bytes = unsafe {
            if reply {
                &raw mut (*s).response_bytes
            } else {
                &raw mut (*s).request_bytes
            }
        };
        add(bytes, packet.payload_len);
    }
    if let Some(x) = TS_XDP_STATS.get_ptr_mut(nat.stat_id) {
        // SAFETY: a per-CPU map value, valid for the run. Only this program
        // writes `TS_XDP_STATS`, and XDP does not nest on a CPU: plain adds
        // (`TS_STATS` is shared with `sock_ops`, so its adds are atomic).
        unsafe {
            if reply {
                (*x).response_packets += 1;
                (*x).response_bytes += packet.frame_len;
            } else {
                (*x).request_packets += 1;
                (*x).request_bytes += packet.frame_len;
            }
        }
    }
}

#[inline(always)]
fn stats(id: u32) -> Option<*mut EndpointStats> {
    if id >= MAX_STATS {
        return None;
    }
    touch(id);
    TS_STATS.get_ptr_mut(id)
}

#[inline(always)]
fn xdp_stats(id: u32) -> Option<*mut XdpStats> {
    touch(id);
    TS_XDP_STATS.get_ptr_mut(id)
}

/// Sets `fib` up for a lookup of `src` -> `dst` (all other fields zero).
#[inline(always)]
fn fib_params(
    fib: &mut bpf_fib_lookup,
    family: u8,
    src: traffic_shift_common::Addr,
    dst: traffic_shift_common::Addr,
) {
    let (src, dst) = (addr_words(src), addr_words(dst));
    // SAFETY: an all-zero bpf_fib_lookup is valid (plain integers).
    *fib = unsafe { core::mem::zeroed() };
    fib.l4_protocol = IPPROTO_TCP;
    if family == FAMILY_V4 {
        fib.family = AF_INET;
        fib.__bindgen_anon_3.ipv4_src = src[0];
        fib.__bindgen_anon_4.ipv4_dst = dst[0];
    } else {
        fib.family = AF_INET6;
        fib.__bindgen_anon_3.ipv6_src = src;
        fib.__bindgen_anon_4.ipv6_dst = dst;
    }
}

/// Where the rewritten packet leaves.
struct Hop {
    ifindex: u32,
}

impl Hop {
    /// `XDP_TX` back out of the interface it came in on, else a redirect.
    #[inline(always)]
    fn action(&self, ctx: &XdpContext) -> u32 {
        if self.ifindex as usize == ctx.ingress_ifindex() {
            xdp_action::XDP_TX
        } else {
            // SAFETY: the bpf helper has no preconditions.
            unsafe { bpf_redirect(self.ifindex, 0) as u32 }
        }
    }
}

#[inline(always)]
fn next_hop(ctx: &XdpContext, fib: &mut bpf_fib_lookup, flags: u32) -> Result<Hop, Event> {
    fib.ifindex = ctx.ingress_ifindex() as u32;
    // SAFETY: `fib` is a valid bpf_fib_lookup of the size passed.
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            core::ptr::from_mut(fib),
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            flags,
        )
    };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => Ok(Hop {
            ifindex: fib.ifindex,
        }),
        BPF_FIB_LKUP_RET_NO_NEIGH => Err(Event::XdpNoNeighbour),
        _ => Err(Event::XdpNoRoute),
    }
}

/// Rewrites addresses, ports, TTL and MAC addresses, with incremental
/// checksum updates (IPv4 header, TCP over its pseudo-header).
#[inline(never)]
fn rewrite(
    ctx: &XdpContext,
    packet: &Packet,
    nat: &NatEntry,
    dmac: &[u8; 6],
    smac: &[u8; 6],
) -> Result<(), Event> {
    let l4 = packet.l4;
    let Some(tcp_check) = read::<u16>(ctx, l4 + 16) else {
        return Err(Event::XdpUnparsed);
    };
    let old_ports = u32::from(packet.key.sport) | (u32::from(packet.key.dport) << 16);
    let new_ports = u32::from(nat.sport) | (u32::from(nat.dport) << 16);
    let k = &packet.key;
    let (k_src, k_dst) = k.addr_words();
    let (nat_src, nat_dst) = nat.addr_words();
    if packet.family == FAMILY_V4 {
        let Some(ttl_proto) = read::<u16>(ctx, ETH_HLEN + 8) else {
            return Err(Event::XdpUnparsed);
        };
        let [ttl, proto] = ttl_proto.to_ne_bytes();
        if ttl <= 1 {
            return Err(Event::XdpTtlExceeded);
        }
        let Some(ip_check) = read::<u16>(ctx, ETH_HLEN + 10) else {
            return Err(Event::XdpUnparsed);
        };
        let new_ttl = u16::from_ne_bytes([ttl - 1, proto]);
        let ip_check = csum_replace(ip_check, &k_src[..1], &nat_src[..1]);
        let ip_check = csum_replace(ip_check, &k_dst[..1], &nat_dst[..1]);
        let ip_check = csum_replace(ip_check, &[u32::from(ttl_proto)], &[u32::from(new_ttl)]);
        let tcp_check = csum_replace(tcp_check, &k_src[..1], &nat_src[..1]);
        let tcp_check = csum_replace(tcp_check, &k_dst[..1], &nat_dst[..1]);
        let tcp_check = csum_replace(tcp_check, &[old_ports], &[new_ports]);
        write(ctx, ETH_HLEN + 8, new_ttl);
        write(ctx, ETH_HLEN + 10, ip_check);
        write(ctx, ETH_HLEN + 12, nat_src[0]);
        write(ctx, ETH_HLEN + 16, nat_dst[0]);
        write(ctx, l4 + 16, tcp_check);
    } else {
        let Some(hop_limit) = read::<u8>(ctx, ETH_HLEN + 7) else {
            return Err(Event::XdpUnparsed);
        };
        if hop_limit <= 1 {
            return Err(Event::XdpTtlExceeded);
        }
        let tcp_check = csum_replace(tcp_check, k_src, nat_src);
        let tcp_check = csum_replace(tcp_check, k_dst, nat_dst);
        let tcp_check = csum_replace(tcp_check, &[old_ports], &[new_ports]);
        write(ctx, ETH_HLEN + 7, hop_limit - 1);
        write(ctx, ETH_HLEN + 8, *nat_src);
        write(ctx, ETH_HLEN + 24, *nat_dst);
        write(ctx, l4 + 16, tcp_check);
    }
    write(ctx, l4, nat.sport);
    write(ctx, l4 + 2, nat.dport);
    write(ctx, 0, *dmac);
    write(ctx, 6, *smac);
    Ok(())
}
