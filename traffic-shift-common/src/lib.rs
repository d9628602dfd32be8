//! Types shared by the kernel programs (`traffic-shift-ebpf`) and the agent.
//!
//! Every map key and value is `#[repr(C)]` with explicit padding and a size
//! assertion. Byte order is stated on each field. Strings never reach the
//! kernel: user space turns hosts, subsets and endpoints into dense ids and
//! precomputes the selection table the kernel only indexes.
#![no_std]

use core::mem::size_of;

/// Names of the maps, as the kernel object declares them and as they are
/// pinned under the agent's bpffs directory.
pub mod map_names {
    pub const SERVICES: &str = "TS_SERVICES";
    pub const ROUTES: &str = "TS_ROUTES";
    pub const CURSORS: &str = "TS_CURSORS";
    pub const EVENTS: &str = "TS_EVENTS";
    pub const GATEWAYS: &str = "TS_GATEWAYS";
    pub const SOCKETS: &str = "TS_SOCKETS";
    pub const STATS: &str = "TS_STATS";
    pub const GATEWAY_FLOWS: &str = "TS_GATEWAY_FLOWS";
    /// Socket-local storage (`BPF_MAP_TYPE_SK_STORAGE`): pinned like the
    /// others, though bpftool cannot list it.
    pub const CONNS: &str = "TS_CONNS";
    pub const PROXY_FLOWS: &str = "TS_PROXY_FLOWS";
    pub const XDP_GATEWAYS: &str = "TS_XDP_GATEWAYS";
    pub const XDP_FLOWS: &str = "TS_XDP_FLOWS";
    pub const XDP_STATS: &str = "TS_XDP_STATS";
    /// Service address prefixes (`BPF_MAP_TYPE_LPM_TRIE`).
    pub const SERVICE_PREFIXES: &str = "TS_SVC_PREFIXES";
    /// Counter slots touched since the agent last read them (mmapable).
    pub const TOUCHED: &str = "TS_TOUCHED";
    /// The slot tables of routes with more slots than a route holds inline.
    pub const SLOTS: &str = "TS_SLOTS";
    /// Every map the agent pins, in the order it pins them.
    pub const ALL: [&str; 16] = [
        SERVICES,
        SERVICE_PREFIXES,
        ROUTES,
        SLOTS,
        CURSORS,
        EVENTS,
        GATEWAYS,
        SOCKETS,
        STATS,
        TOUCHED,
        GATEWAY_FLOWS,
        CONNS,
        PROXY_FLOWS,
        XDP_GATEWAYS,
        XDP_FLOWS,
        XDP_STATS,
    ];
}

/// Address family tags used in keys (not the kernel's `AF_*` values, which
/// differ between the two families' struct layouts we care about).
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Destinations (weighted subsets) a single route can name.
pub const MAX_DESTS: usize = 16;
/// Endpoints a single route can hold across all its destinations.
pub const MAX_BACKENDS: usize = 64;
/// Slots in a route's selection table. A power of two, so the kernel bounds an
/// index with a mask the verifier understands. 4096 gives weights a
/// resolution of 1/4096 (Istio's percentages are exact) and a source-hash
/// table 4096 buckets. A table of more than [`INLINE_SLOTS`] lives in
/// `TS_SLOTS` ([`SlotTable`]), not in the route.
pub const MAX_SLOTS: usize = 1 << 12;
/// Slots a [`RouteTable`] holds itself: weights that sum to at most 256
/// (every split in whole percentages) need no second map. 256 keeps a
/// route's kernel element (value, key and the hash map's 48-byte header)
/// within one 2 KB allocation; with all 4096 slots inline it took an 8 KB
/// one, and an insert took 33-35 us instead of 7.5.
pub const INLINE_SLOTS: usize = 1 << 8;
/// Routes the kernel can hold at once (`TS_ROUTES` / `TS_CURSORS` size).
pub const MAX_ROUTES: u32 = 1024;
/// Service address:port entries (`TS_SERVICES` size).
pub const MAX_SERVICES: u32 = 4096;
/// Service address prefix:port entries (`TS_SVC_PREFIXES` size).
pub const MAX_SERVICE_PREFIXES: u32 = 1024;
/// Gateway address:port entries (`TS_GATEWAYS` size).
pub const MAX_GATEWAYS: u32 = 1024;
/// Endpoint listening sockets the gateway can hand connections to (`TS_SOCKETS` size).
pub const MAX_SOCKETS: u32 = 4096;
/// Counter slots (`TS_STATS` size): one per (route, destination, endpoint)
/// in force, plus retired ones whose connections may still close.
pub const MAX_STATS: u32 = 4096;
/// Gateway connections between the SYN (`sk_lookup` picked the endpoint) and
/// the accept (`sock_ops` moves the pick onto the socket). LRU: a SYN whose
/// handshake never completes ages out.
pub const MAX_GATEWAY_FLOWS: u32 = 65536;
/// Default size of `TS_PROXY_FLOWS` (connections handed to the L7 proxy
/// and not yet accepted by it; LRU).
pub const MAX_PROXY_FLOWS: u32 = 65536;

/// How a route picks the destination (subset) of a new connection.
pub mod select {
    /// Deterministic and smooth: a shared per-route cursor walks the slot
    /// table, so over any window of N connections each destination gets its
    /// share to within one connection.
    pub const SMOOTH: u32 = 0;
    /// `loadBalancer.simple: RANDOM`: a random slot, so random by weight.
    pub const RANDOM: u32 = 1;
    /// `loadBalancer.consistentHash.useSourceIp`: the slot is a hash of the
    /// client's source address (of its network namespace when the socket is
    /// not bound yet); the table is a weighted rendezvous table, so growing one
    /// destination only moves clients onto it.
    pub const SOURCE_HASH: u32 = 2;
}

/// An address as map keys and values hold it: 16 bytes in network order,
/// so `bpftool map dump` prints it in its natural order (`127.100.0.1` is
/// `[127,100,0,1,0,...]`). IPv4 uses the first 4 bytes; the others are zero.
/// The same bytes as the kernel's 32-bit words (`bpf_sock_addr.user_ip6`):
/// [`addr_from_words`] and [`addr_words`] convert, for free.
pub type Addr = [u8; 16];

/// The address whose bytes are `words` (network-order 32-bit words, as the
/// kernel's contexts hold addresses): a reinterpretation, no byte swap.
#[expect(
    clippy::inline_always,
    reason = "called from eBPF programs, where it must be inlined"
)]
#[inline(always)]
pub const fn addr_from_words(words: [u32; 4]) -> Addr {
    // SAFETY: both are 16 bytes of plain integers; every bit pattern is valid.
    unsafe { core::mem::transmute::<[u32; 4], Addr>(words) }
}

/// The network-order 32-bit words of `addr` ([`addr_from_words`] undone).
#[expect(
    clippy::inline_always,
    reason = "called from eBPF programs, where it must be inlined"
)]
#[inline(always)]
pub const fn addr_words(addr: Addr) -> [u32; 4] {
    // SAFETY: as in `addr_from_words`.
    unsafe { core::mem::transmute::<Addr, [u32; 4]>(addr) }
}

/// The address of an IPv4 word (network order, as `bpf_sock_addr.user_ip4`).
#[expect(
    clippy::inline_always,
    reason = "called from eBPF programs, where it must be inlined"
)]
#[inline(always)]
pub const fn addr_from_ip4(word: u32) -> Addr {
    addr_from_words([word, 0, 0, 0])
}

/// Key of `TS_SERVICES` (a service address and port a mesh route covers),
/// of `TS_GATEWAYS` (an address and port a gateway route accepts on; the
/// zero address means any local address of the family) and of `TS_SOCKETS`
/// (an endpoint address and port, whose listening socket the map holds).
///
/// `align(4)`: the layout (and alignment) it had when `addr` was `[u32; 4]`,
/// so the programs still move the address as four 32-bit words.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ServiceKey {
    /// Address, network byte order ([`Addr`]).
    pub addr: Addr,
    /// Port in network byte order.
    pub port: u16,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    pub pad: u8,
}
const _: () = assert!(size_of::<ServiceKey>() == 20);
const _: () = assert!(core::mem::align_of::<ServiceKey>() == 4);

/// The data of a `TS_SVC_PREFIXES` key (an LPM trie key is the prefix
/// length in bits, then this): the port and family first, so that a prefix
/// length of [`PREFIX_HEADER_BITS`] + the address prefix matches them
/// whole and the address by its leading bits. A lookup gives the full
/// length ([`PREFIX_HEADER_BITS`] + 32 or 128); the trie answers the
/// longest prefix stored that matches, of the same port and family.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct PrefixData {
    /// Port in network byte order.
    pub port: u16,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    /// Zero.
    pub pad: u8,
    /// Address, network byte order ([`Addr`]); bits past the prefix are zero.
    pub addr: Addr,
}
const _: () = assert!(size_of::<PrefixData>() == 20);

/// Bits of [`PrefixData`] before the address (port, family, pad): always
/// part of a stored prefix, so the port and family match exactly.
pub const PREFIX_HEADER_BITS: u32 = 32;

/// Value of `TS_SERVICES` and `TS_SVC_PREFIXES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ServiceValue {
    /// Key into `TS_ROUTES` and index into `TS_CURSORS`.
    pub route_id: u32,
    /// Dense id of the service (host + port), for metrics.
    pub service_id: u32,
}
const _: () = assert!(size_of::<ServiceValue>() == 8);

/// One destination (a subset of a host) of a route.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Dest {
    /// Index of its first endpoint in `RouteTable::backends`.
    pub first_backend: u16,
    /// Number of endpoints; 0 means the subset has none and connections fail
    /// at once (refused), never hang.
    pub n_backends: u16,
    /// How an endpoint of this destination is picked: a `select::*` value
    /// (smooth is round robin here).
    pub endpoint_select: u32,
}
const _: () = assert!(size_of::<Dest>() == 8);

/// One endpoint a connection may be rewritten to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Backend {
    /// Address, network byte order ([`Addr`]).
    pub addr: Addr,
    /// Port in network byte order.
    pub port: u16,
    /// `FAMILY_V4` or `FAMILY_V6`; always the family of the service address.
    pub family: u8,
    /// `backend_flags::*`.
    pub flags: u8,
    /// Its counters' slot in `TS_STATS` (stable while the route, the
    /// destination and the endpoint stay in the rules).
    pub stat_id: u32,
}
const _: () = assert!(size_of::<Backend>() == 24);

/// `Backend::flags`.
pub mod backend_flags {
    /// The agent's L7 proxy, not an endpoint: the connection's service
    /// address is recorded for the proxy (`TS_PROXY_FLOWS`) and its
    /// counters are the proxy's business (per request), not `TS_STATS`'.
    pub const PROXY: u8 = 1;
}

/// Value of `TS_ROUTES`: everything one route needs to pick a backend. User
/// space replaces it with ONE map update, so a connection never sees a
/// half-written table (the map is `BPF_F_NO_PREALLOC`: a replaced element is
/// freed after an RCU grace period, never reused under a reader).
///
/// A table of more than [`INLINE_SLOTS`] slots is in `TS_SLOTS` under
/// ([route id, `slots_version`]): user space writes a new version there
/// first, then the route that names it, then removes the old version. A
/// program that finds its version gone (removed between its two lookups)
/// reads the route again.
#[repr(C)]
#[derive(Clone, Copy)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RouteTable {
    /// A `select::*` value.
    pub mode: u32,
    /// Slots in use (1..=`MAX_SLOTS`): in `slots` when at most
    /// [`INLINE_SLOTS`], else in the route's [`SlotTable`].
    pub n_slots: u32,
    /// Destinations in use in `dests`.
    pub n_dests: u32,
    /// Endpoints in use in `backends`.
    pub n_backends: u32,
    pub dests: [Dest; MAX_DESTS],
    pub backends: [Backend; MAX_BACKENDS],
    /// Each slot names a destination (index into `dests`).
    pub slots: [u8; INLINE_SLOTS],
    /// The version of the route's [`SlotTable`] (`SlotsKey::version`) when
    /// `n_slots` > [`INLINE_SLOTS`]; else 0. Last, so the bytes before
    /// `slots` and the slots in use say how a table behaves, whatever
    /// version holds them.
    pub slots_version: u32,
    pub pad: u32,
}
const _: () =
    assert!(size_of::<RouteTable>() == 16 + 8 * MAX_DESTS + 24 * MAX_BACKENDS + INLINE_SLOTS + 8);
// The kernel's element (a 48-byte header, the key rounded to 8, the value)
// fits one 2 KB allocation.
const _: () = assert!(48 + 8 + size_of::<RouteTable>() <= 2048);

/// Key of `TS_SLOTS`: a route and the version of its slot table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SlotsKey {
    pub route_id: u32,
    pub version: u32,
}
const _: () = assert!(size_of::<SlotsKey>() == 8);

/// Value of `TS_SLOTS`: the slot table of a route with more than
/// [`INLINE_SLOTS`] slots (a source-hash table, or weights that do not
/// reduce to 256 slots).
#[repr(C)]
#[derive(Clone, Copy)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SlotTable {
    /// Each slot names a destination (index into `RouteTable::dests`).
    pub slots: [u8; MAX_SLOTS],
}
const _: () = assert!(size_of::<SlotTable>() == MAX_SLOTS);

/// Value of `TS_CURSORS` (indexed by route id): the smooth selection cursors.
/// Kept apart from the table so a weight change keeps the sequence position.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RouteCursor {
    /// Next slot of the route's table (taken with an atomic add).
    pub next_slot: u64,
    /// Next endpoint per destination (round robin inside a subset).
    pub next_backend: [u64; MAX_DESTS],
}
const _: () = assert!(size_of::<RouteCursor>() == 8 + 8 * MAX_DESTS);

/// Value of `TS_CONNS`, the socket-local storage of a connection
/// traffic-shift routed: what `getpeername` must show and where its
/// counters go. Freed by the kernel with the socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ConnState {
    /// The request side's byte counter at the handshake (its SYN): the
    /// bytes moved since are the request's (client to endpoint).
    pub reported_request: u64,
    /// The response side's, likewise (endpoint to client).
    pub reported_response: u64,
    /// Unused (it held when the bytes were last added, while a program
    /// added them per RTT); kept for the layout of pinned maps.
    pub reserved: u64,
    /// The service address the client asked for, as `ServiceKey::addr`
    /// (zero for a gateway connection: nothing to restore).
    pub addr: Addr,
    /// Its port, network byte order.
    pub port: u16,
    /// `FAMILY_V4` / `FAMILY_V6`; 0 on a gateway connection.
    pub family: u8,
    /// `conn_flags::*`.
    pub flags: u8,
    /// Index into `TS_STATS`.
    pub stat_id: u32,
    pub route_id: u32,
    pub pad: u32,
}
const _: () = assert!(size_of::<ConnState>() == 56);

/// `ConnState::flags`.
pub mod conn_flags {
    /// The server side of a gateway connection (bytes it receives are the
    /// request), not a client's connection to a service address.
    pub const GATEWAY: u8 = 1;
    /// The handshake completed.
    pub const ESTABLISHED: u8 = 2;
    /// A retransmission timer expired for good: the connect timed out.
    pub const TIMED_OUT: u8 = 4;
    /// Closed and counted; nothing more to add.
    pub const CLOSED: u8 = 8;
    /// The peer's FIN arrived (it takes one byte of sequence space, which
    /// the kernel's byte counters include and ours must not).
    pub const PEER_FIN: u8 = 16;
    /// This side sent its FIN.
    pub const OUR_FIN: u8 = 32;
    /// Sent to the L7 proxy (`backend_flags::PROXY`): not counted here.
    pub const PROXIED: u8 = 64;
}

/// Value of per-CPU `TS_STATS` (index: stat id, one per route destination
/// endpoint): the connections and bytes `sock_ops` observed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct EndpointStats {
    /// Connects started (SYN sent) on the mesh path; connections accepted
    /// on the gateway path.
    pub opened: u64,
    pub established: u64,
    /// Every opened connection once it is gone, failed ones included.
    pub closed: u64,
    /// The endpoint answered the SYN with a reset.
    pub failed_refused: u64,
    /// The SYN retransmissions ran out.
    pub failed_timeout: u64,
    /// Any other end before the handshake (ICMP error, the client gave up).
    pub failed_other: u64,
    /// Bytes from client to endpoint (Istio's `received` bytes), counted as
    /// acknowledged or received, at close and about every second while open.
    pub request_bytes: u64,
    /// Bytes from endpoint to client (Istio's `sent` bytes).
    pub response_bytes: u64,
}
const _: () = assert!(size_of::<EndpointStats>() == 64);

impl EndpointStats {
    /// Connects that failed, whatever the reason.
    pub const fn failed(&self) -> u64 {
        self.failed_refused + self.failed_timeout + self.failed_other
    }
}

/// Key of `TS_GATEWAY_FLOWS`: a connection's 4-tuple as the server side
/// sees it. Also the key of `TS_PROXY_FLOWS`, there as the CLIENT sees
/// it (local: the client's address, remote: the proxy's): the value is the
/// service address (`ServiceKey`) the client connected to.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowKey {
    /// Local (gateway) address, as `ServiceKey::addr`.
    pub local: Addr,
    /// Remote (client) address.
    pub remote: Addr,
    /// Ports in network byte order.
    pub local_port: u16,
    pub remote_port: u16,
    pub family: u8,
    pub pad: [u8; 3],
}
const _: () = assert!(size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::align_of::<FlowKey>() == 4);

/// What a program did with a connection: an index into the per-CPU
/// `TS_EVENTS` array. Counted for every program run, so every fallback and
/// every refusal has a number.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// connect: rewritten to an endpoint.
    Rewritten = 0,
    /// connect: not TCP, left alone.
    NotTcp = 1,
    /// connect: destination is not a service address, left alone.
    NotService = 2,
    /// connect: service known but its route table is missing (should not
    /// happen: user space writes routes before services). Left alone.
    NoRoute = 3,
    /// connect: the chosen subset has no endpoint; refused.
    NoEndpoint = 4,
    /// connect: the table points outside itself (corrupt); refused.
    BadTable = 5,
    /// connect: endpoint family differs from the socket's; refused.
    FamilyMismatch = 6,
    /// connect: no socket storage for the connection (out of memory): it
    /// proceeds, but getpeername shows the endpoint and it is not counted.
    ConnStateFull = 7,
    /// getpeername: the service address was returned.
    PeerRestored = 8,
    /// getpeername: not a redirected socket, left alone.
    PeerUntouched = 9,
    /// sk_lookup: handed to the chosen endpoint's listening socket.
    GatewayAssigned = 10,
    /// sk_lookup: the chosen endpoint had no socket; handed to another
    /// endpoint of the same subset.
    GatewayFallback = 11,
    /// sk_lookup: no endpoint of the chosen subset has a socket (or the
    /// subset has no endpoint); refused with a reset.
    GatewayNoSocket = 12,
    /// sk_lookup: not TCP to a gateway address:port, passed to the normal lookup.
    GatewayPass = 13,
    /// sk_lookup: the pick could not be remembered for sock_ops (the flow
    /// table refused it); the connection proceeds uncounted.
    GatewayFlowFull = 14,
    /// sock_ops: a routed connection was accepted or started (counted).
    ConnTracked = 15,
    /// sock_ops: a gateway connection was accepted but its socket storage
    /// could not be made; it proceeds uncounted.
    SockOpsNoStorage = 16,
    /// sock_ops: the connection's stat id is outside `TS_STATS` (corrupt).
    BadStatId = 17,
    /// sk_lookup: gateway key known but its route table is missing (should
    /// not happen); passed to the normal lookup.
    GatewayNoRoute = 18,
    /// xdp: a SYN to a gateway address:port got an endpoint, a source port
    /// and a conntrack entry, and was forwarded.
    XdpNewFlow = 19,
    /// xdp: a packet of a known flow, client to endpoint, forwarded.
    XdpForward = 20,
    /// xdp: a packet of a known flow, endpoint to client, forwarded.
    XdpReply = 21,
    /// xdp: not TCP to a gateway address:port nor of a known flow: passed
    /// untouched.
    XdpPass = 22,
    /// xdp: a packet to a gateway address:port that is not a SYN and has no
    /// live flow (idle timeout, reset): passed to the stack, which answers
    /// with a reset.
    XdpUnknownFlow = 23,
    /// xdp: headers the program does not parse (truncated, IPv4 options,
    /// IPv6 extension headers, VLAN tags): passed untouched.
    XdpUnparsed = 24,
    /// xdp: an IPv4 fragment: passed untouched (the gateway translates
    /// whole segments only; TCP sets DF).
    XdpFragment = 25,
    /// xdp: the chosen subset has no endpoint (none healthy, none of the
    /// packet's family, or a bad table): the SYN is passed to the node's
    /// stack, which answers it with a reset.
    XdpNoEndpoint = 26,
    /// xdp: dropped: no free source port toward the endpoint.
    XdpNoPort = 27,
    /// xdp: dropped: the conntrack entry could not be written.
    XdpFlowFull = 28,
    /// xdp: dropped: no route to the endpoint or client (`bpf_fib_lookup`
    /// failed, or forwarding is disabled on the interface).
    XdpNoRoute = 29,
    /// xdp: dropped: the next hop's link-layer address is not resolved yet
    /// (the client retransmits; the agent's health probes keep it resolved).
    XdpNoNeighbour = 30,
    /// xdp: the TTL / hop limit ran out: passed to the stack, which sends
    /// the ICMP error.
    XdpTtlExceeded = 31,
    /// sock_ops: a connection sent to the L7 proxy; its service address
    /// recorded for the proxy.
    ProxyHandoff = 32,
}

impl Event {
    pub const COUNT: u32 = 33;
    pub const ALL: [Event; Self::COUNT as usize] = [
        Event::Rewritten,
        Event::NotTcp,
        Event::NotService,
        Event::NoRoute,
        Event::NoEndpoint,
        Event::BadTable,
        Event::FamilyMismatch,
        Event::ConnStateFull,
        Event::PeerRestored,
        Event::PeerUntouched,
        Event::GatewayAssigned,
        Event::GatewayFallback,
        Event::GatewayNoSocket,
        Event::GatewayPass,
        Event::GatewayFlowFull,
        Event::ConnTracked,
        Event::SockOpsNoStorage,
        Event::BadStatId,
        Event::GatewayNoRoute,
        Event::XdpNewFlow,
        Event::XdpForward,
        Event::XdpReply,
        Event::XdpPass,
        Event::XdpUnknownFlow,
        Event::XdpUnparsed,
        Event::XdpFragment,
        Event::XdpNoEndpoint,
        Event::XdpNoPort,
        Event::XdpFlowFull,
        Event::XdpNoRoute,
        Event::XdpNoNeighbour,
        Event::XdpTtlExceeded,
        Event::ProxyHandoff,
    ];

    /// Label value used in metrics and `status`.
    pub const fn name(self) -> &'static str {
        match self {
            Event::Rewritten => "rewritten",
            Event::NotTcp => "not_tcp",
            Event::NotService => "not_service",
            Event::NoRoute => "no_route",
            Event::NoEndpoint => "no_endpoint",
            Event::BadTable => "bad_table",
            Event::FamilyMismatch => "family_mismatch",
            Event::ConnStateFull => "conn_state_full",
            Event::PeerRestored => "peer_restored",
            Event::PeerUntouched => "peer_untouched",
            Event::GatewayAssigned => "gateway_assigned",
            Event::GatewayFallback => "gateway_fallback",
            Event::GatewayNoSocket => "gateway_no_socket",
            Event::GatewayPass => "gateway_pass",
            Event::GatewayFlowFull => "gateway_flow_full",
            Event::ConnTracked => "conn_tracked",
            Event::SockOpsNoStorage => "sock_ops_no_storage",
            Event::BadStatId => "bad_stat_id",
            Event::GatewayNoRoute => "gateway_no_route",
            Event::XdpNewFlow => "xdp_new_flow",
            Event::XdpForward => "xdp_forward",
            Event::XdpReply => "xdp_reply",
            Event::XdpPass => "xdp_pass",
            Event::XdpUnknownFlow => "xdp_unknown_flow",
            Event::XdpUnparsed => "xdp_unparsed",
            Event::XdpFragment => "xdp_fragment",
            Event::XdpNoEndpoint => "xdp_no_endpoint",
            Event::XdpNoPort => "xdp_no_port",
            Event::XdpFlowFull => "xdp_flow_full",
            Event::XdpNoRoute => "xdp_no_route",
            Event::XdpNoNeighbour => "xdp_no_neighbour",
            Event::XdpTtlExceeded => "xdp_ttl_exceeded",
            Event::ProxyHandoff => "proxy_handoff",
        }
    }

    /// The program that counts it (`connect`, `getpeername`, `sk_lookup`,
    /// `sock_ops`), a metrics label.
    pub const fn program(self) -> &'static str {
        match self {
            Event::Rewritten
            | Event::NotTcp
            | Event::NotService
            | Event::NoRoute
            | Event::NoEndpoint
            | Event::BadTable
            | Event::FamilyMismatch
            | Event::ConnStateFull => "connect",
            Event::PeerRestored | Event::PeerUntouched => "getpeername",
            Event::GatewayAssigned
            | Event::GatewayFallback
            | Event::GatewayNoSocket
            | Event::GatewayPass
            | Event::GatewayFlowFull
            | Event::GatewayNoRoute => "sk_lookup",
            Event::ConnTracked
            | Event::SockOpsNoStorage
            | Event::BadStatId
            | Event::ProxyHandoff => "sock_ops",
            Event::XdpNewFlow
            | Event::XdpForward
            | Event::XdpReply
            | Event::XdpPass
            | Event::XdpUnknownFlow
            | Event::XdpUnparsed
            | Event::XdpFragment
            | Event::XdpNoEndpoint
            | Event::XdpNoPort
            | Event::XdpFlowFull
            | Event::XdpNoRoute
            | Event::XdpNoNeighbour
            | Event::XdpTtlExceeded => "xdp",
        }
    }

    /// Whether the program dropped the packet (an XDP drop reason).
    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Event::XdpNoPort | Event::XdpFlowFull | Event::XdpNoRoute | Event::XdpNoNeighbour
        )
    }
}

#[cfg(feature = "user")]
impl RouteTable {
    /// Bytes of a table before its slots: mode, counts, destinations and
    /// endpoints.
    pub const HEAD: usize = core::mem::offset_of!(RouteTable, slots);

    /// Whether its slots are in `TS_SLOTS` rather than in the route.
    pub const fn slots_apart(&self) -> bool {
        self.n_slots as usize > INLINE_SLOTS
    }

    /// The bytes before its slots ([`Self::HEAD`] of them).
    pub fn head(&self) -> &[u8] {
        &bytemuck::bytes_of(self)[..Self::HEAD]
    }

    /// Its slots in use when they are in the route (empty when they are in
    /// `TS_SLOTS`).
    pub fn inline_slots(&self) -> &[u8] {
        if self.slots_apart() {
            &[]
        } else {
            &self.slots[..self.n_slots as usize]
        }
    }
}

#[cfg(feature = "user")]
extern crate std;
#[cfg(feature = "user")]
pub mod tables;

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are #[repr(C)], contain only integers and arrays of
    // integers, and have no implicit padding (bytemuck::Pod derive checks it).
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::PrefixData {}
    unsafe impl aya::Pod for super::RouteTable {}
    unsafe impl aya::Pod for super::SlotsKey {}
    unsafe impl aya::Pod for super::SlotTable {}
    unsafe impl aya::Pod for super::RouteCursor {}
    unsafe impl aya::Pod for super::ConnState {}
    unsafe impl aya::Pod for super::EndpointStats {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::NatKey {}
    unsafe impl aya::Pod for super::NatEntry {}
    unsafe impl aya::Pod for super::XdpStats {}
}

/// The hash of a client identity (source address words, or the netns cookie
/// split in two words) used by `select::SOURCE_HASH`. Shared so user space
/// and tests can predict the kernel's choice. A murmur3-style finalizer over
/// each word: cheap, branch-free and well mixed in the low bits the kernel
/// masks with.
#[expect(
    clippy::inline_always,
    reason = "called from eBPF programs, where it must be inlined"
)]
#[inline(always)]
pub const fn source_hash(words: [u32; 4]) -> u32 {
    let mut h: u32 = 0x9e37_79b9;
    let mut i = 0;
    while i < 4 {
        h ^= words[i];
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^= h >> 16;
        i += 1;
    }
    h
}

mod xdp;
pub use self::xdp::*;

#[cfg(test)]
mod tests;
