//! Maps shared by the programs. All are BTF maps, so `bpftool map dump`
//! prints field names. Field byte orders are documented on the types in
//! `traffic-shift-common`.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, BPF_SK_STORAGE_GET_F_CREATE, bpf_sock},
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, SkStorage, SockHash},
    helpers::generated::bpf_sk_storage_get,
    macros::btf_map,
};
use traffic_shift_common::{
    ConnState, EndpointStats, Event, FlowKey, MAX_GATEWAY_FLOWS, MAX_GATEWAYS, MAX_PROXY_FLOWS,
    MAX_ROUTES, MAX_SERVICE_PREFIXES, MAX_SERVICES, MAX_SOCKETS, MAX_STATS, MAX_XDP_FLOWS,
    NatEntry, NatKey, PrefixData, RouteCursor, RouteTable, ServiceKey, ServiceValue, SlotTable,
    SlotsKey, XdpStats,
};

/// Service address:port -> the route that covers it.
#[btf_map]
pub static TS_SERVICES: HashMap<ServiceKey, ServiceValue, { MAX_SERVICES as usize }> =
    HashMap::new();

/// Service address prefix (CIDR) + port -> the route that covers it;
/// consulted when `TS_SERVICES` has no exact entry. An LPM trie: a key is
/// the prefix length in bits (`PREFIX_HEADER_BITS` + the address prefix),
/// then `PrefixData` (port and family first, so they match whole); a
/// lookup answers the longest stored prefix. LPM tries: kernel 4.11+
/// (user space walks it with `get_next_key`: 4.16+).
#[btf_map]
pub static TS_SVC_PREFIXES: LpmTrie<PrefixData, ServiceValue, { MAX_SERVICE_PREFIXES as usize }> =
    LpmTrie::new();

/// Route id -> its whole selection table, replaced by one update.
/// `BPF_F_NO_PREALLOC`: a replaced element is freed after an RCU grace
/// period, so a program holding the old value keeps reading a consistent one.
#[btf_map]
pub static TS_ROUTES: HashMap<
    u32,
    RouteTable,
    { MAX_ROUTES as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// (route id, version) -> the slot table of a route with more than
/// `INLINE_SLOTS` slots (`RouteTable::slots_version` names the version in
/// force). Two per route at most: the one in force and its replacement.
#[btf_map]
pub static TS_SLOTS: HashMap<
    SlotsKey,
    SlotTable,
    { 2 * MAX_ROUTES as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// Route id -> smooth-selection cursors (atomic adds from every CPU).
#[btf_map]
pub static TS_CURSORS: Array<RouteCursor, { MAX_ROUTES as usize }> = Array::new();

/// Socket -> what traffic-shift knows of the connection (the service
/// address for getpeername, its counters' slot). Socket-local storage: no
/// lookup by key, no eviction, freed with the socket.
#[btf_map]
pub static TS_CONNS: SkStorage<ConnState> = SkStorage::new();

/// The connection state of socket `sk`; with `init`, created from it when
/// the socket has none. Null when there is none (or no memory for one).
#[inline(always)]
pub fn conn_state(sk: *mut bpf_sock, init: Option<&ConnState>) -> *mut ConnState {
    // sock_ops' `sk` may be null (the verifier insists on the check).
    if sk.is_null() {
        return core::ptr::null_mut();
    }
    let (value, flags) = match init {
        Some(v) => (
            core::ptr::from_ref(v).cast_mut().cast::<c_void>(),
            u64::from(BPF_SK_STORAGE_GET_F_CREATE),
        ),
        None => (core::ptr::null_mut(), 0),
    };
    // The map's address is what the loader relocates to the map.
    let map = (&raw const TS_CONNS).cast_mut().cast::<c_void>();
    // SAFETY: `sk` is a non-null socket from the program context; `value`
    // is null or a valid ConnState.
    unsafe { bpf_sk_storage_get(map, sk.cast(), value, flags) }.cast::<ConnState>()
}

/// Stat id -> connections and bytes observed, per CPU.
#[btf_map]
pub static TS_STATS: PerCpuArray<EndpointStats, { MAX_STATS as usize }> = PerCpuArray::new();

/// Stat id -> nonzero once its counters (`TS_STATS`, `TS_XDP_STATS`) were
/// touched since the agent last looked. The agent maps it (`mmap`), swaps
/// the marks to zero and reads only the slots marked: its work follows the
/// traffic, not the number of slots.
#[btf_map]
pub static TS_TOUCHED: Array<u64, { MAX_STATS as usize }, { BPF_F_MMAPABLE as usize }> =
    Array::new();

/// Marks slot `id` touched. A plain store, no read-modify-write: marks
/// from other CPUs or a softirq cannot be lost. Marked before the counter
/// moves: the agent reads a slot marked in a tick once more in the next
/// (a program finishes within microseconds, so the add has landed). Only
/// stored when not marked yet: a busy slot's packets then only read the
/// shared line, instead of taking it from the other CPUs each time. A mark
/// read just before the agent clears it is still safe: the slot was marked
/// in that tick, so it is read again in the next.
#[inline(always)]
pub fn touch(id: u32) {
    if let Some(mark) = TS_TOUCHED.get_ptr_mut(id) {
        // SAFETY: `mark` points into a map value, valid for the program run.
        unsafe {
            if core::ptr::read_volatile(mark) == 0 {
                core::ptr::write_volatile(mark, 1);
            }
        }
    }
}

/// Gateway 4-tuple -> the stat id `sk_lookup` picked, until `sock_ops`
/// sees the accepted socket.
#[btf_map]
pub static TS_GATEWAY_FLOWS: LruHashMap<FlowKey, u32, { MAX_GATEWAY_FLOWS as usize }> =
    LruHashMap::new();

/// `*counter += n`, atomically: a program on this CPU may be interrupted by
/// one from softirq (sock_ops runs in both) that adds to the same slot.
#[inline(always)]
pub fn add(counter: *mut u64, n: u64) {
    // SAFETY: `counter` points into a map value, valid for the program run.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {v}",
            p = in(reg) counter,
            v = in(reg) n,
            options(nostack),
        );
    }
}

/// Build B of the upgrade test: an instruction no other build has
/// (`r = 0xb`, its result unused), in every program (they all count), so
/// its programs' bytecode and `bpftool prog` tags differ from build A's,
/// maps unchanged. Build A (every real build) has nothing here.
#[inline(always)]
fn build_mark() {
    #[cfg(feature = "build-b")]
    // SAFETY: a move of an immediate into a scratch register.
    unsafe {
        core::arch::asm!("{r} = 0xb", r = out(reg) _, options(nomem, nostack));
    }
}

/// `Event` -> how many times it happened, per CPU.
#[btf_map]
pub static TS_EVENTS: PerCpuArray<u64, { Event::COUNT as usize }> = PerCpuArray::new();

/// Counts one event on this CPU.
#[inline(always)]
pub fn count(event: Event) {
    build_mark();
    if let Some(counter) = TS_EVENTS.get_ptr_mut(event as u32) {
        add(counter, 1);
    }
}

/// Gateway address:port -> the route that serves it (`ServiceValue`). The
/// zero address stands for any local address of the family.
#[btf_map]
pub static TS_GATEWAYS: HashMap<ServiceKey, ServiceValue, { MAX_GATEWAYS as usize }> =
    HashMap::new();

/// Endpoint address:port -> its listening socket (a duplicate the agent took
/// from the backend process with pidfd_getfd).
#[btf_map]
pub static TS_SOCKETS: SockHash<ServiceKey, { MAX_SOCKETS as usize }> = SockHash::new();

/// A connection sent to the L7 proxy, keyed by its 4-tuple as the client
/// sees it -> the service address:port it connected to. Written by
/// `sock_ops` when the connect starts; the proxy reads and deletes it when
/// it accepts the connection.
#[btf_map]
pub static TS_PROXY_FLOWS: LruHashMap<FlowKey, ServiceKey, { MAX_PROXY_FLOWS as usize }> =
    LruHashMap::new();

/// Gateway address:port served by the XDP gateway (endpoints on other
/// hosts) -> its route. The zero address stands for any address.
#[btf_map]
pub static TS_XDP_GATEWAYS: HashMap<ServiceKey, ServiceValue, { MAX_GATEWAYS as usize }> =
    HashMap::new();

/// The XDP gateway's conntrack: one entry per direction of each flow
/// (client -> gateway, endpoint -> node), what its packets become. LRU.
#[btf_map]
pub static TS_XDP_FLOWS: LruHashMap<NatKey, NatEntry, { MAX_XDP_FLOWS as usize }> =
    LruHashMap::new();

/// Stat id -> packets and bytes the XDP gateway forwarded, per CPU.
#[btf_map]
pub static TS_XDP_STATS: PerCpuArray<XdpStats, { MAX_STATS as usize }> = PerCpuArray::new();
