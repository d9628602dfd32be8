//! Maps shared by the programs. All are BTF maps, so `bpftool map dump`
//! prints field names. Field byte orders are documented on the types in
//! `traffic-shift-common`.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray, SockHash},
    macros::btf_map,
};
use traffic_shift_common::{
    Event, MAX_GATEWAYS, MAX_ORIG_DST, MAX_ROUTES, MAX_SERVICES, MAX_SOCKETS, OrigDst, RouteCursor,
    RouteTable, ServiceKey, ServiceValue,
};

/// Service address:port -> the route that covers it.
#[btf_map]
pub static TS_SERVICES: HashMap<ServiceKey, ServiceValue, { MAX_SERVICES as usize }> =
    HashMap::new();

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

/// Route id -> smooth-selection cursors (atomic adds from every CPU).
#[btf_map]
pub static TS_CURSORS: Array<RouteCursor, { MAX_ROUTES as usize }> = Array::new();

/// Socket cookie -> the service address the socket connected to, for
/// getpeername. LRU: entries of long-closed sockets age out.
#[btf_map]
pub static TS_ORIG_DST: LruHashMap<u64, OrigDst, { MAX_ORIG_DST as usize }> = LruHashMap::new();

/// `Event` -> how many times it happened, per CPU.
#[btf_map]
pub static TS_EVENTS: PerCpuArray<u64, { Event::COUNT as usize }> = PerCpuArray::new();

/// Counts one event on this CPU.
#[inline(always)]
pub fn count(event: Event) {
    if let Some(counter) = TS_EVENTS.get_ptr_mut(event as u32) {
        // SAFETY: per-CPU slot, and programs do not nest on one CPU for
        // these hooks; a pointer from a successful lookup is valid.
        unsafe { *counter += 1 };
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
