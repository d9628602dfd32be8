//! The kernel side, through aya: load the programs, attach them to a cgroup,
//! pin the maps, and reconcile map contents with what `compile` produced.
//!
//! Writes are ordered so that every connection sees a consistent state: a
//! route table is written before any service key points at it, and removed
//! only after no key does. Replacing a table is one map update.
//!
//! # Modules
//!
//! [`Datapath`] is defined here; its methods live with their concern:
//!
//! - `load`: [`Datapath::load`] (the object, pins, loggers), [`BpfLogLevel`],
//!   the pin directory's lock, [`default_cgroup`].
//! - `attach`: the cgroup and `sk_lookup` programs attached, or their pinned
//!   links adopted (our program swapped in).
//! - `xdp`: the XDP gateway attached per interface, [`SnatPorts`].
//! - `adopt`: whether a previous agent's pinned maps fit this build (if not,
//!   `IncompatibleMaps` says why), and reading back what they hold.
//! - `apply`: [`Datapath::apply`] (route tables and keys reconciled with
//!   [`compile::Compiled`], [`ApplyReport`]), gateway socket registration,
//!   map fill.
//! - `counters`: [`KernelCounters`] (per-CPU counters summed), counter slots zeroed.
//! - `open_bytes`: [`OpenBytes`], the bytes of open connections read with
//!   sock_diag when the counters are read (no program per ACK).
//! - `proxy_flows`: [`ProxyFlows`], the L7 proxy's view of `TS_PROXY_FLOWS`.
//! - `unload`: [`unload`] and `--unload-on-exit` (every pin removed).
//! - `error`: [`DatapathError`].
//!
//! Public modules: [`compile`] (model -> kernel tables), [`stats`] (counter
//! slots), [`limits`] (map sizes), [`sockets`] (taking backends' listening
//! sockets for `sk_lookup`), [`drain`] (`--drain-timeout`), [`netns`]
//! (facts gathered inside a network namespace), [`pins`] (raw `bpf(2)`
//! calls on pinned links).
//!
//! # Tests that need root
//!
//! Loading eBPF programs, taking other processes' sockets and entering
//! network namespaces need root, so the unit tests that do so need it too.
//! They are in modules named `root_tests` (`apply::root_tests`, `xdp::root_tests`,
//! `sockets::root_tests`, `netns::root_tests`) and start with
//! `test_root::require_root`: run as another user they fail with a message
//! saying so, they never skip. `cargo xtask test` runs them as root; as
//! another user, `cargo test -p traffic-shift-datapath -- --skip root_tests`
//! runs the others, which need no privilege.

use std::{collections::BTreeMap, fs::File, path::PathBuf};

use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie, MapData, SockHash},
};
use traffic_shift_common::{
    FlowKey, PrefixData, RouteTable, ServiceKey, ServiceValue, SlotTable, SlotsKey,
};

pub mod compile;
pub mod drain;
pub mod inspect;
pub mod kernel_splice;
pub mod limits;
pub mod netns;
pub mod pins;
pub mod sockets;
pub mod stats;

mod adopt;
mod apply;
mod attach;
mod counters;
mod error;
mod load;
mod open_bytes;
mod proxy_flows;
#[cfg(test)]
mod test_root;
mod touched;
mod unload;
mod xdp;

pub use apply::ApplyReport;
pub use counters::KernelCounters;
pub use error::DatapathError;
pub use load::{BpfLogLevel, default_cgroup};
pub use open_bytes::OpenBytes;
pub use proxy_flows::ProxyFlows;
pub use touched::Touched;
pub use unload::unload;
pub use xdp::{SnatPorts, SnatPortsError};

/// The kernel programs, built by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/traffic-shift"));

/// The programs loaded and attached, their maps pinned, and our record of
/// what the maps hold. Methods by concern: see the module list above.
pub struct Datapath {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    /// `TS_SVC_PREFIXES`: service address ranges of mesh routes.
    service_prefixes: LpmTrie<MapData, PrefixData, ServiceValue>,
    gateways: HashMap<MapData, ServiceKey, ServiceValue>,
    /// `TS_XDP_GATEWAYS`: gateway keys of routes to endpoints on other hosts.
    xdp_gateways: HashMap<MapData, ServiceKey, ServiceValue>,
    sockets: SockHash<MapData, ServiceKey>,
    routes: HashMap<MapData, u32, RouteTable>,
    /// `TS_SLOTS`: the slot tables of routes with more than `INLINE_SLOTS`.
    slots: HashMap<MapData, SlotsKey, SlotTable>,
    counters: KernelCounters,
    gateway_flows: HashMap<MapData, FlowKey, u32>,
    /// Possible CPUs: the length of a per-CPU value.
    n_cpus: usize,
    /// Kernel log lines (aya-log), until the agent takes the reader.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    loaded_routes: BTreeMap<String, apply::LoadedRoute>,
    /// Route tables a previous agent left that no route of ours has taken
    /// over yet; removed once no key points at them.
    adopted_routes: BTreeMap<u32, adopt::AdoptedRoute>,
    /// Whether the maps were a previous agent's.
    adopted: bool,
    /// `TS_CONNS` (socket storage), for `--drain-timeout`'s sock_diag queries.
    conns: MapData,
    limits: crate::limits::Limits,
    /// Remove every pin (detaching the programs) when dropped.
    unload_on_drop: bool,
    loaded_services: BTreeMap<ServiceKey, ServiceValue>,
    loaded_prefixes: BTreeMap<compile::PrefixKey, ServiceValue>,
    loaded_gateways: BTreeMap<ServiceKey, ServiceValue>,
    loaded_xdp_gateways: BTreeMap<ServiceKey, ServiceValue>,
    pin_dir: PathBuf,
    /// Owns the programs and their cgroup links: dropping it detaches them.
    _ebpf: Ebpf,
    /// flock on the pin directory: one agent per directory.
    _lock: File,
}
