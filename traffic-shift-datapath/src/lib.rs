//! The kernel side, through aya: load the programs, attach them to a cgroup,
//! pin the maps, and reconcile map contents with what `compile` produced.
//!
//! Writes are ordered so that every connection sees a consistent state: a
//! route table is written before any service key points at it, and removed
//! only after no key does. Replacing a table is one map update.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    net::SocketAddr,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, MapError, PerCpuArray, PerCpuValues, SockHash},
    programs::{CgroupAttachMode, CgroupSockAddr, ProgramError, SkLookup, SockOps, Xdp},
};
use traffic_shift_common::{
    EndpointStats, Event, FlowKey, RouteTable, ServiceKey, ServiceValue, XDP_SNAT_COUNT_GLOBAL,
    XDP_SNAT_MIN_GLOBAL, XDP_SNAT_PORT_MAX, XDP_SNAT_PORT_MIN, XdpStats, map_names,
};

use crate::compile::Compiled;

pub mod compile;
pub mod drain;
pub mod inspect;
pub mod limits;
pub mod netns;
pub mod pins;
pub mod sockets;
pub mod stats;
#[cfg(test)]
mod xdp_tests;

/// The kernel programs, built by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/traffic-shift"));

/// Program names in the object and the hooks they attach to.
const PROGRAMS: [&str; 4] = [
    "ts_connect4",
    "ts_connect6",
    "ts_getpeername4",
    "ts_getpeername6",
];

/// The source ports the XDP gateway gives its flows toward an endpoint
/// (`--xdp-snat-ports LOW-HIGH`, both included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnatPorts {
    pub low: u16,
    pub high: u16,
}

impl Default for SnatPorts {
    fn default() -> Self {
        Self {
            low: XDP_SNAT_PORT_MIN,
            high: XDP_SNAT_PORT_MAX,
        }
    }
}

impl std::fmt::Display for SnatPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnatPortsError {
    #[error("`{0}` is not LOW-HIGH: write two port numbers joined by a dash, e.g. 61000-65535")]
    Syntax(String),
    #[error("`{0}`: LOW is above HIGH; write the range low to high, e.g. 61000-65535")]
    Reversed(String),
    #[error(
        "`{0}`: the range starts below 1024, among the ports of the node's own services; use ports from 1024 up, above the node's ephemeral range (net.ipv4.ip_local_port_range), e.g. 61000-65535"
    )]
    Privileged(String),
}

impl std::str::FromStr for SnatPorts {
    type Err = SnatPortsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || SnatPortsError::Syntax(text.to_owned());
        let (low, high) = text.split_once('-').ok_or_else(syntax)?;
        let port = |p: &str| p.trim().parse::<u16>().map_err(|_| syntax());
        let ports = Self {
            low: port(low)?,
            high: port(high)?,
        };
        if ports.low > ports.high {
            return Err(SnatPortsError::Reversed(text.to_owned()));
        }
        if ports.low < 1024 {
            return Err(SnatPortsError::Privileged(text.to_owned()));
        }
        Ok(ports)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "{path} is not a bpffs mount; run `mount -t bpf bpf /sys/fs/bpf` (cargo xtask setup does it)"
    )]
    NoBpffs { path: PathBuf },
    #[error("cannot use pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another traffic-shift agent holds {path}; stop it, or give this one its own --bpffs directory"
    )]
    Busy { path: PathBuf },
    #[error(
        "cannot open network namespace {path}: {source}; pass a netns file with --netns (e.g. /var/run/netns/NAME)"
    )]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open cgroup {path}: {source}; pass a cgroup v2 directory with --cgroup")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "loading the kernel programs failed (are you root, on a kernel >= 5.18 with BTF?): {0}"
    )]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("pinned link of {name} at {path}: {source}")]
    Link {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pinning {name} at {path}: {source}")]
    Pin {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("cannot count the possible CPUs ({0}): {1}")]
    Cpus(&'static str, #[source] std::io::Error),
    #[error("no free route id: {0} routes loaded")]
    NoRouteId(usize),
    #[error(
        "--xdp-iface {iface}: {source}; name an interface of the --netns namespace (`ip link` there lists them)"
    )]
    XdpIface {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--xdp-iface {iface}: IPv4 forwarding is off there, and the XDP gateway forwards packets (bpf_fib_lookup refuses otherwise); turn it on in the --netns namespace: sysctl -w net.ipv4.conf.all.forwarding=1"
    )]
    XdpForwardingOff { iface: String },
    #[error("attaching the XDP gateway to {iface}: {source}")]
    XdpAttach {
        iface: String,
        #[source]
        source: std::io::Error,
    },
}

/// Route ids to hand out: those below `max` not in `used`, lowest first.
struct FreeRouteIds {
    used: BTreeSet<u32>,
    next: u32,
    max: u32,
}

impl FreeRouteIds {
    fn take(&mut self) -> Result<u32, DatapathError> {
        while self.next < self.max {
            let id = self.next;
            self.next += 1;
            if self.used.insert(id) {
                return Ok(id);
            }
        }
        Err(DatapathError::NoRouteId(self.used.len()))
    }
}

/// What one route holds in the kernel now: its id and the used bytes of its
/// table (enough to tell a change, without a whole copy per route).
struct LoadedRoute {
    id: u32,
    table: Vec<u8>,
}

/// What an apply changed, by route key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub routes_added: Vec<String>,
    pub routes_changed: Vec<String>,
    pub routes_removed: Vec<String>,
    /// Service and gateway keys written and removed.
    pub keys_written: usize,
    pub keys_removed: usize,
}

pub struct Datapath {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    gateways: HashMap<MapData, ServiceKey, ServiceValue>,
    /// `TS_XDP_GATEWAYS`: gateway keys of routes to endpoints on other hosts.
    xdp_gateways: HashMap<MapData, ServiceKey, ServiceValue>,
    sockets: SockHash<MapData, ServiceKey>,
    routes: HashMap<MapData, u32, RouteTable>,
    counters: KernelCounters,
    gateway_flows: HashMap<MapData, FlowKey, u32>,
    /// Possible CPUs: the length of a per-CPU value.
    n_cpus: usize,
    /// Kernel log lines (aya-log), until the agent takes the reader.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    loaded_routes: BTreeMap<String, LoadedRoute>,
    /// Route tables a previous agent left (id -> used bytes) that no route
    /// of ours has taken over yet; removed once no key points at them.
    adopted_routes: BTreeMap<u32, Vec<u8>>,
    /// Whether the maps were a previous agent's.
    adopted: bool,
    /// `TS_CONNS` (socket storage), for `--drain-timeout`'s sock_diag queries.
    conns: MapData,
    limits: crate::limits::Limits,
    /// Remove every pin (detaching the programs) when dropped.
    unload_on_drop: bool,
    loaded_services: BTreeMap<ServiceKey, ServiceValue>,
    loaded_gateways: BTreeMap<ServiceKey, ServiceValue>,
    loaded_xdp_gateways: BTreeMap<ServiceKey, ServiceValue>,
    pin_dir: PathBuf,
    /// Owns the programs and their cgroup links: dropping it detaches them.
    _ebpf: Ebpf,
    /// flock on the pin directory: one agent per directory.
    _lock: File,
}

/// The XDP program's source port range as its globals hold it.
pub(crate) struct SnatGlobals {
    first: u16,
    count: u32,
}

impl SnatPorts {
    pub(crate) fn globals(self) -> SnatGlobals {
        SnatGlobals {
            first: self.low,
            count: u32::from(self.high) - u32::from(self.low) + 1,
        }
    }
}

/// Sets the XDP program's source port range (load-time constants).
pub(crate) fn set_snat_ports<'a>(loader: &mut EbpfLoader<'a>, globals: &'a SnatGlobals) {
    loader.override_global(XDP_SNAT_MIN_GLOBAL, &globals.first, true);
    loader.override_global(XDP_SNAT_COUNT_GLOBAL, &globals.count, true);
}

impl Datapath {
    /// Loads the programs, attaches the connect-time ones to `cgroup` and
    /// the gateway (`sk_lookup`) to the network namespace `netns` (a file
    /// such as `/proc/self/ns/net`), and pins the maps under `pin_dir`
    /// (created; must be inside a bpffs mount). The XDP gateway is attached
    /// to each interface of `xdp_ifaces` (in `netns`), giving its flows
    /// source ports from `snat_ports`.
    pub fn load(
        cgroup: &Path,
        netns: &Path,
        xdp_ifaces: &[String],
        snat_ports: SnatPorts,
        pin_dir: &Path,
        log_level: BpfLogLevel,
        limits: &crate::limits::Limits,
    ) -> Result<Self, DatapathError> {
        let parent = pin_dir.parent().unwrap_or(Path::new("/"));
        if !is_bpffs(parent) {
            return Err(DatapathError::NoBpffs {
                path: parent.to_owned(),
            });
        }
        let pin_err = |source| DatapathError::PinDir {
            path: pin_dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(pin_dir).map_err(pin_err)?;
        let lock = lock_pin_dir(pin_dir)?;
        // What a previous agent left pinned is kept and adopted: its maps
        // (routes, counters, the sockets of open connections) go on, and
        // its links get our programs swapped in. Maps of another layout
        // (an incompatible upgrade) cannot be: those start over.
        let adopted = match pinned_maps_compatible(pin_dir, limits) {
            Ok(adopted) => adopted,
            Err(reason) => {
                tracing::warn!(
                    pins = %pin_dir.display(),
                    "pinned maps are from an incompatible version ({reason}): starting them over; open connections are not affected, their getpeername and counters are"
                );
                remove_map_pins(pin_dir);
                false
            }
        };

        let level = log_level as u8;
        let snat = snat_ports.globals();
        let mut loader = EbpfLoader::new();
        // The level is a load-time constant: the verifier removes the
        // logging of disabled levels, so they cost nothing.
        loader.override_global(aya_log::LEVEL, &level, true);
        set_snat_ports(&mut loader, &snat);
        // Each map is opened from its pin when there is one, else created and pinned.
        for name in map_names::ALL {
            loader.map_pin_path(name, pin_dir.join(name));
        }
        for (name, size) in limits.map_sizes() {
            loader.map_max_entries(name, size);
        }
        let mut ebpf = loader.load(EBPF_OBJECT)?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(err) => {
                tracing::warn!(%err, "kernel log lines will not be shown");
                None
            }
        };
        let n_cpus = aya::util::nr_cpus().map_err(|(what, e)| DatapathError::Cpus(what, e))?;
        let mut links = attach(&mut ebpf, pin_dir, cgroup, netns)?;
        attach_xdp(&mut ebpf, pin_dir, netns, xdp_ifaces, &mut links)?;
        if adopted || links.updated > 0 {
            tracing::info!(
                maps_adopted = adopted,
                links_updated = links.updated,
                links_replaced = links.replaced,
                "adopted the pinned datapath: our programs swapped in, maps kept"
            );
        }
        let services = take_map(&mut ebpf, map_names::SERVICES)?;
        let gateways = take_map(&mut ebpf, map_names::GATEWAYS)?;
        let xdp_gateways: HashMap<MapData, ServiceKey, ServiceValue> =
            take_map(&mut ebpf, map_names::XDP_GATEWAYS)?;
        let loaded_xdp_gateways = read_keys(&xdp_gateways, map_names::XDP_GATEWAYS)?;
        let sockets = take_map(&mut ebpf, map_names::SOCKETS)?;
        let routes: HashMap<MapData, u32, RouteTable> = take_map(&mut ebpf, map_names::ROUTES)?;
        let counters = KernelCounters {
            events: take_map(&mut ebpf, map_names::EVENTS)?,
            stats: take_map(&mut ebpf, map_names::STATS)?,
            xdp_stats: take_map(&mut ebpf, map_names::XDP_STATS)?,
        };
        let gateway_flows = take_map(&mut ebpf, map_names::GATEWAY_FLOWS)?;
        let (loaded_services, loaded_gateways, adopted_routes) =
            read_back(&services, &gateways, &routes)?;
        let conns = MapData::from_pin(pin_dir.join(map_names::CONNS)).map_err(|source| {
            DatapathError::Map {
                name: map_names::CONNS,
                source,
            }
        })?;
        Ok(Self {
            conns,
            limits: *limits,
            adopted_routes,
            adopted,
            unload_on_drop: false,
            counters,
            gateway_flows,
            n_cpus,
            logger,
            services,
            gateways,
            xdp_gateways,
            sockets,
            loaded_gateways,
            loaded_xdp_gateways,
            routes,
            loaded_routes: BTreeMap::new(),
            loaded_services,
            pin_dir: pin_dir.to_owned(),
            _ebpf: ebpf,
            _lock: lock,
        })
    }

    /// Makes the kernel hold exactly `compiled`: new and changed route tables
    /// first (one update each), then service keys, then removals.
    pub fn apply(&mut self, compiled: &Compiled) -> Result<ApplyReport, DatapathError> {
        let mut report = ApplyReport::default();
        let map_err = |name| move |source| DatapathError::Map { name, source };

        // Counter slots taken over from endpoints that left the rules start
        // from zero, before any table points at them.
        for &id in compiled.stat_ids.recycled() {
            self.zero_slot(id)?;
        }
        // Desired keys of TS_SERVICES, TS_GATEWAYS, TS_XDP_GATEWAYS.
        let mut desired: [BTreeMap<ServiceKey, ServiceValue>; 3] = Default::default();
        let mut free_ids = None;
        // The one whole table written at a time (67 KB).
        let mut scratch: Option<Box<RouteTable>> = None;
        for (key, route) in &compiled.routes {
            if !self.loaded_routes.contains_key(key) {
                self.take_over_adopted(key, route);
            }
            let loaded = self.loaded_routes.get(key);
            let unchanged = loaded.is_some_and(|l| l.table == route.table.as_bytes());
            let id = match loaded {
                Some(l) => l.id,
                None => free_ids
                    .get_or_insert_with(|| self.free_route_ids())
                    .take()?,
            };
            if !unchanged {
                // One update replaces the whole table (by reference: it is 5.8 KB).
                let table = scratch.get_or_insert_with(bytemuck::zeroed_box);
                route.table.write_to(table);
                self.routes
                    .insert(id, table.as_ref(), 0)
                    .map_err(map_err(map_names::ROUTES))?;
                let list = if loaded.is_some() {
                    &mut report.routes_changed
                } else {
                    &mut report.routes_added
                };
                list.push(key.clone());
                self.loaded_routes.insert(
                    key.clone(),
                    LoadedRoute {
                        id,
                        table: route.table.as_bytes().to_vec(),
                    },
                );
            }
            // An XDP route is a gateway route: 0 mesh, 1 sk_lookup, 2 XDP.
            let map = usize::from(route.gateway) + usize::from(route.xdp);
            for listener in &route.listeners {
                desired[map].insert(
                    *listener,
                    ServiceValue {
                        route_id: id,
                        service_id: route.service_id,
                    },
                );
            }
        }
        for (map, loaded, desired, name) in [
            (
                &mut self.services,
                &mut self.loaded_services,
                &desired[0],
                map_names::SERVICES,
            ),
            (
                &mut self.gateways,
                &mut self.loaded_gateways,
                &desired[1],
                map_names::GATEWAYS,
            ),
            (
                &mut self.xdp_gateways,
                &mut self.loaded_xdp_gateways,
                &desired[2],
                map_names::XDP_GATEWAYS,
            ),
        ] {
            let (written, removed) = sync_keys(map, loaded, desired).map_err(map_err(name))?;
            report.keys_written += written;
            report.keys_removed += removed;
        }
        let gone: Vec<String> = self
            .loaded_routes
            .keys()
            .filter(|k| !compiled.routes.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            let id = self.loaded_routes[&key].id;
            self.routes
                .remove(&id)
                .map_err(map_err(map_names::ROUTES))?;
            self.loaded_routes.remove(&key);
            report.routes_removed.push(key.clone());
        }
        // A previous agent's tables no key points at any more.
        while let Some((&id, _)) = self.adopted_routes.first_key_value() {
            self.routes
                .remove(&id)
                .map_err(map_err(map_names::ROUTES))?;
            self.adopted_routes.remove(&id);
            report
                .routes_removed
                .push(format!("route id {id} (from the previous agent)"));
        }
        Ok(report)
    }

    /// Zeroes counter slot `id` (connections, bytes, XDP packets).
    fn zero_slot(&mut self, id: u32) -> Result<(), DatapathError> {
        let map_err = |name| move |source| DatapathError::Map { name, source };
        let zero = PerCpuValues::try_from(vec![EndpointStats::default(); self.n_cpus])
            .map_err(|e| DatapathError::Cpus("per-CPU value", e))?;
        self.counters
            .stats
            .set(id, zero, 0)
            .map_err(map_err(map_names::STATS))?;
        let zero = PerCpuValues::try_from(vec![XdpStats::default(); self.n_cpus])
            .map_err(|e| DatapathError::Cpus("per-CPU value", e))?;
        self.counters
            .xdp_stats
            .set(id, zero, 0)
            .map_err(map_err(map_names::XDP_STATS))
    }

    /// A route a previous agent left in the kernel exactly as we would
    /// write it (its listeners point at a table with the same bytes) is
    /// ours without a write: a restart with unchanged rules changes nothing.
    fn take_over_adopted(&mut self, key: &str, route: &crate::compile::KernelRoute) {
        let loaded = if route.xdp {
            &self.loaded_xdp_gateways
        } else if route.gateway {
            &self.loaded_gateways
        } else {
            &self.loaded_services
        };
        let Some(id) = route
            .listeners
            .iter()
            .find_map(|l| loaded.get(l).map(|v| v.route_id))
        else {
            return;
        };
        if self.adopted_routes.get(&id).map(Vec::as_slice) == Some(route.table.as_bytes()) {
            let table = self.adopted_routes.remove(&id).unwrap_or_default();
            self.loaded_routes
                .insert(key.to_owned(), LoadedRoute { id, table });
        }
    }

    /// `TS_CONNS`, the socket storage of routed connections.
    pub fn conns_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.conns.fd().as_fd()
    }

    /// Route id (`TS_ROUTES` key) and kernel route key (`KernelRoute::key`)
    /// of every route this agent wrote, for naming ids (`traffic-shift maps`).
    pub fn route_ids(&self) -> impl Iterator<Item = (u32, &str)> {
        self.loaded_routes
            .iter()
            .map(|(key, l)| (l.id, key.as_str()))
    }

    /// Whether the maps were a previous agent's (kept across its restart).
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Whether dropping this removes every pin, detaching the programs
    /// (`run --unload-on-exit`), instead of leaving the datapath in place
    /// for the next agent.
    pub fn set_unload_on_drop(&mut self, unload: bool) {
        self.unload_on_drop = unload;
    }

    /// The route ids no route holds now, handed out lowest first: built
    /// once per apply (once per new route made adding 10 000 routes take
    /// minutes).
    fn free_route_ids(&self) -> FreeRouteIds {
        FreeRouteIds {
            used: self
                .loaded_routes
                .values()
                .map(|r| r.id)
                .chain(self.adopted_routes.keys().copied())
                .collect(),
            next: 0,
            max: self.limits.max_routes,
        }
    }

    /// Puts `socket` (a listening socket) into the gateway's socket map for
    /// the endpoint `key`, replacing any socket it had. The map holds its own
    /// reference: the caller may close its fd, and when the backend closes
    /// the socket the kernel removes the entry by itself.
    pub fn register_socket(
        &mut self,
        key: ServiceKey,
        socket: &impl std::os::fd::AsRawFd,
    ) -> Result<(), DatapathError> {
        self.sockets
            .insert(key, socket.as_raw_fd(), 0)
            .map_err(|source| DatapathError::Map {
                name: map_names::SOCKETS,
                source,
            })
    }

    /// Removes the endpoint's socket, if any.
    pub fn unregister_socket(&mut self, key: &ServiceKey) {
        let _ = self.sockets.remove(key);
    }

    /// Endpoints that have a socket in the gateway's map now.
    pub fn registered_sockets(&self) -> BTreeSet<ServiceKey> {
        self.sockets.keys().filter_map(Result::ok).collect()
    }

    /// The kernel's counters.
    pub fn counters(&self) -> &KernelCounters {
        &self.counters
    }

    /// A second reader of the kernel's counters (the pinned maps opened
    /// again), for the metrics server's thread.
    pub fn counters_reader(&self) -> Result<KernelCounters, DatapathError> {
        fn open<V: aya::Pod>(
            pin_dir: &Path,
            name: &'static str,
        ) -> Result<PerCpuArray<MapData, V>, DatapathError> {
            let data = MapData::from_pin(pin_dir.join(name))
                .map_err(|source| DatapathError::Map { name, source })?;
            PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))
                .map_err(|source| DatapathError::Map { name, source })
        }
        Ok(KernelCounters {
            events: open(&self.pin_dir, map_names::EVENTS)?,
            stats: open(&self.pin_dir, map_names::STATS)?,
            xdp_stats: open(&self.pin_dir, map_names::XDP_STATS)?,
        })
    }

    /// Where the L7 proxy finds the service address of a connection the
    /// connect-time hook sent it (the pinned `TS_PROXY_FLOWS` opened again,
    /// for the proxy's tasks).
    pub fn proxy_flows(&self) -> Result<ProxyFlows, DatapathError> {
        let name = map_names::PROXY_FLOWS;
        let data = MapData::from_pin(self.pin_dir.join(name))
            .map_err(|source| DatapathError::Map { name, source })?;
        let map = HashMap::try_from(aya::maps::Map::LruHashMap(data))
            .map_err(|source| DatapathError::Map { name, source })?;
        Ok(ProxyFlows(std::sync::Mutex::new(map)))
    }

    /// How full each map is: (name, entries, capacity). Counted from our
    /// own record where we write the map, from the kernel otherwise.
    pub fn fill(&self) -> Vec<(&'static str, usize, u32)> {
        let l = &self.limits;
        vec![
            (
                map_names::SERVICES,
                self.loaded_services.len(),
                l.max_services,
            ),
            (
                map_names::GATEWAYS,
                self.loaded_gateways.len(),
                l.max_gateways,
            ),
            (
                map_names::XDP_GATEWAYS,
                self.loaded_xdp_gateways.len(),
                l.max_gateways,
            ),
            (
                map_names::ROUTES,
                self.loaded_routes.len() + self.adopted_routes.len(),
                l.max_routes,
            ),
            (
                map_names::SOCKETS,
                self.sockets.keys().count(),
                l.max_gateway_endpoints,
            ),
            (
                map_names::GATEWAY_FLOWS,
                self.gateway_flows.keys().count(),
                l.max_pending_gateway_connections,
            ),
        ]
    }

    /// The reader of the kernel's log lines (once): poll it for readability
    /// and `flush()` it to emit them through `log` (and so `tracing`).
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }
}

impl Drop for Datapath {
    /// By default nothing: the pinned links keep the programs attached and
    /// the pinned maps keep their state, so traffic is steered while no
    /// agent runs and the next one adopts it. With `unload_on_drop`, every
    /// pin goes and the programs detach: nothing is left behind.
    fn drop(&mut self) {
        if self.unload_on_drop {
            if let Err(err) = remove_all_pins(&self.pin_dir) {
                tracing::warn!(pins = %self.pin_dir.display(), %err, "could not remove every pin; `traffic-shift unload` finishes it");
            }
            let _ = std::fs::remove_dir(&self.pin_dir);
        }
    }
}

/// Gives every program a link: the pinned one a previous agent left
/// (our program swapped in), or a new one, pinned.
fn attach(
    ebpf: &mut Ebpf,
    pin_dir: &Path,
    cgroup: &Path,
    netns: &Path,
) -> Result<LinkReport, DatapathError> {
    let cgroup_file = File::open(cgroup).map_err(|source| DatapathError::Cgroup {
        path: cgroup.to_owned(),
        source,
    })?;
    let netns_file = File::open(netns).map_err(|source| DatapathError::Netns {
        path: netns.to_owned(),
        source,
    })?;
    let cgroup_id = crate::pins::target_id(cgroup).map_err(|source| DatapathError::Cgroup {
        path: cgroup.to_owned(),
        source,
    })?;
    let netns_id = crate::pins::target_id(netns).map_err(|source| DatapathError::Netns {
        path: netns.to_owned(),
        source,
    })?;
    let mut links = LinkReport::default();
    let err = |name| move |source| DatapathError::Program { name, source };
    // Load program `name` of type `$ty`; adopt its pinned link if there is
    // one on `$target`, else attach it with `$attach` and pin the link.
    macro_rules! link {
        ($ty:ty, $name:expr, $target:expr, |$p:ident| $attach:expr) => {{
            let name = $name;
            let $p: &mut $ty = program(ebpf, name)?;
            $p.load().map_err(err(name))?;
            let prog_fd = $p.fd().map_err(err(name))?.as_fd();
            if !links.adopt(pin_dir, name, prog_fd, $target)? {
                let id = $attach.map_err(err(name))?;
                let link = $p.take_link(id).map_err(err(name))?;
                pin_link(pin_dir, name, link)?;
            }
        }};
    }
    for name in PROGRAMS {
        link!(CgroupSockAddr, name, cgroup_id, |p| p
            .attach(&cgroup_file, CgroupAttachMode::Single));
    }
    link!(SockOps, "ts_sock_ops", cgroup_id, |p| p
        .attach(&cgroup_file, CgroupAttachMode::Single));
    link!(SkLookup, "ts_sk_lookup", netns_id, |p| p
        .attach(&netns_file));
    Ok(links)
}

/// Prefix of the pinned XDP links' names (`link_ts_xdp_<iface>`).
const XDP_LINK_PREFIX: &str = "ts_xdp_";

/// The XDP gateway on each of `ifaces` (interfaces of `netns`): the pinned
/// link a previous agent left there (our program swapped in), else a new
/// one, native mode where the driver has it, generic otherwise, pinned.
/// Pinned XDP links of interfaces no longer listed are removed (detached).
/// The program is loaded only when there is an interface to serve.
fn attach_xdp(
    ebpf: &mut Ebpf,
    pin_dir: &Path,
    netns: &Path,
    ifaces: &[String],
    links: &mut LinkReport,
) -> Result<(), DatapathError> {
    let wanted: BTreeSet<String> = ifaces.iter().map(|i| xdp_link_name(i)).collect();
    if let Ok(entries) = std::fs::read_dir(pin_dir) {
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_prefix("link_") else {
                continue;
            };
            if name.starts_with(XDP_LINK_PREFIX) && !wanted.contains(name) {
                tracing::info!(link = %file, "XDP gateway detached from an interface no longer listed in --xdp-iface");
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    if ifaces.is_empty() {
        return Ok(());
    }
    let name = "ts_xdp";
    let err = |source| DatapathError::Program { name, source };
    let xdp: &mut Xdp = program(ebpf, name)?;
    xdp.load().map_err(err)?;
    let prog_fd = xdp.fd().map_err(err)?.as_fd();
    for iface in ifaces {
        let iface_err = |source| DatapathError::XdpIface {
            iface: iface.clone(),
            source,
        };
        let (ifindex, forwarding, forwarding6) = crate::netns::run_in(netns, || {
            let c_name = std::ffi::CString::new(iface.as_str())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            // SAFETY: a valid NUL-terminated name.
            let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
            if index == 0 {
                return Err(std::io::Error::last_os_error());
            }
            let forwarding =
                std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"))?;
            // Absent when IPv6 is disabled on the interface.
            let forwarding6 =
                std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{iface}/forwarding"))
                    .unwrap_or_default();
            Ok((index, forwarding.trim() == "1", forwarding6.trim() == "1"))
        })
        .map_err(iface_err)?;
        if !forwarding {
            return Err(DatapathError::XdpForwardingOff {
                iface: iface.clone(),
            });
        }
        if !forwarding6 {
            // Not an error: a node may serve IPv4 gateways only.
            tracing::warn!(
                %iface,
                "XDP gateway: IPv6 forwarding is off there, so IPv6 gateway traffic is dropped (xdp_no_route; bpf_fib_lookup refuses); to serve IPv6 gateways turn it on in the --netns namespace: sysctl -w net.ipv6.conf.all.forwarding=1"
            );
        }
        let link_name = xdp_link_name(iface);
        if links.adopt(pin_dir, &link_name, prog_fd, u64::from(ifindex))? {
            tracing::info!(%iface, "XDP gateway: adopted the pinned link");
            continue;
        }
        let attach_err = |source| DatapathError::XdpAttach {
            iface: iface.clone(),
            source,
        };
        let (link, mode) = crate::netns::run_in(netns, || {
            crate::pins::xdp_link_create(prog_fd, ifindex, crate::pins::XDP_FLAGS_DRV_MODE)
                .map(|link| (link, "native"))
                .or_else(|_| {
                    crate::pins::xdp_link_create(prog_fd, ifindex, crate::pins::XDP_FLAGS_SKB_MODE)
                        .map(|link| (link, "generic"))
                })
        })
        .map_err(attach_err)?;
        let path = link_pin(pin_dir, &link_name);
        crate::pins::obj_pin(link.as_fd(), &path).map_err(|source| DatapathError::Link {
            name: link_name.clone(),
            path: path.clone(),
            source,
        })?;
        tracing::info!(%iface, mode, "XDP gateway attached");
    }
    Ok(())
}

/// The pinned link name of the XDP gateway on `iface` (bpffs names hold no dot).
fn xdp_link_name(iface: &str) -> String {
    format!("{XDP_LINK_PREFIX}{}", iface.replace('.', "_"))
}

/// What `Datapath::load` did with the links it found pinned.
#[derive(Default)]
struct LinkReport {
    /// Pinned links (ours, on the same cgroup/netns) given our program.
    updated: usize,
    /// Pinned links attached elsewhere (another --cgroup/--netns): removed.
    replaced: usize,
}

impl LinkReport {
    /// If `pin_dir` holds a link for program `name` attached to `target`
    /// (a cgroup id or netns inode), swaps `program` in (one atomic link
    /// update) and returns true. A link attached elsewhere is unpinned
    /// (which detaches it) and false returned: attach a new one.
    fn adopt(
        &mut self,
        pin_dir: &Path,
        name: &str,
        program: std::os::fd::BorrowedFd<'_>,
        target: u64,
    ) -> Result<bool, DatapathError> {
        let path = link_pin(pin_dir, name);
        if !path.exists() {
            return Ok(false);
        }
        let link_err = |source| DatapathError::Link {
            name: name.to_owned(),
            path: path.clone(),
            source,
        };
        let link = crate::pins::obj_get(&path).map_err(link_err)?;
        let info = crate::pins::link_target(link.as_fd()).map_err(link_err)?;
        if info.target != target {
            std::fs::remove_file(&path).map_err(link_err)?;
            self.replaced += 1;
            return Ok(false);
        }
        crate::pins::link_update(link.as_fd(), program).map_err(link_err)?;
        self.updated += 1;
        Ok(true)
    }
}

/// Where program `name`'s link is pinned.
fn link_pin(pin_dir: &Path, name: &str) -> PathBuf {
    pin_dir.join(format!("link_{name}"))
}

/// Pins a freshly attached link, so it outlives this process.
fn pin_link<L>(pin_dir: &Path, name: &'static str, link: L) -> Result<(), DatapathError>
where
    L: TryInto<aya::programs::links::FdLink>,
    L::Error: std::error::Error + Send + Sync + 'static,
{
    let path = link_pin(pin_dir, name);
    let fd_link: aya::programs::links::FdLink =
        link.try_into().map_err(|source| DatapathError::Link {
            name: name.to_owned(),
            path: path.clone(),
            source: std::io::Error::other(source),
        })?;
    fd_link
        .pin(&path)
        .map_err(|source| DatapathError::Pin { name, path, source })?;
    Ok(())
}

/// Whether the maps pinned in `pin_dir` can be adopted: `Ok(true)` when
/// every one is there with the layout this build expects, `Ok(false)` when
/// none is, `Err(why)` otherwise.
fn pinned_maps_compatible(pin_dir: &Path, limits: &crate::limits::Limits) -> Result<bool, String> {
    let names = map_names::ALL;
    let present = names.iter().filter(|n| pin_dir.join(n).exists()).count();
    if present == 0 {
        return Ok(false);
    }
    let object = aya_obj::Object::parse(EBPF_OBJECT)
        .map_err(|e| format!("cannot parse our own object: {e}"))?;
    for name in names {
        let path = pin_dir.join(name);
        let want = object
            .maps
            .get(name)
            .ok_or_else(|| format!("our object has no map {name}"))?;
        let have = aya::maps::MapInfo::from_pin(&path).map_err(|e| format!("{name}: {e}"))?;
        let max_entries = limits.size_of(name).unwrap_or_else(|| want.max_entries());
        let (w, h) = (
            (
                want.key_size(),
                want.value_size(),
                max_entries,
                want.map_flags(),
            ),
            (
                have.key_size(),
                have.value_size(),
                have.max_entries(),
                have.map_flags(),
            ),
        );
        if w != h {
            return Err(format!(
                "{name}: key/value size, max entries, flags {h:?}, this build wants {w:?}"
            ));
        }
    }
    Ok(true)
}

fn remove_map_pins(pin_dir: &Path) {
    for name in map_names::ALL {
        let _ = std::fs::remove_file(pin_dir.join(name));
    }
}

/// Removes every pin in `pin_dir`: links (detaching their programs) first,
/// then maps. Returns the paths removed.
fn remove_all_pins(pin_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths = std::fs::read_dir(pin_dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<PathBuf>>>()?;
    paths.sort_by_key(|p| {
        !p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("link_"))
    });
    for path in &paths {
        std::fs::remove_file(path)?;
    }
    Ok(paths)
}

/// Makes `map` hold exactly `desired`, writing only what differs from
/// `loaded` (our record of the map, kept exact even when a write fails).
/// Returns (keys written, keys removed).
fn sync_keys(
    map: &mut HashMap<MapData, ServiceKey, ServiceValue>,
    loaded: &mut BTreeMap<ServiceKey, ServiceValue>,
    desired: &BTreeMap<ServiceKey, ServiceValue>,
) -> Result<(usize, usize), MapError> {
    let mut written = 0;
    for (key, value) in desired {
        if loaded.get(key) != Some(value) {
            map.insert(key, value, 0)?;
            loaded.insert(*key, *value);
            written += 1;
        }
    }
    let stale: Vec<ServiceKey> = loaded
        .keys()
        .filter(|k| !desired.contains_key(k))
        .copied()
        .collect();
    for key in &stale {
        map.remove(key)?;
        loaded.remove(key);
    }
    Ok((written, stale.len()))
}

/// The program `name` of the object, as its type `P`.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, DatapathError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(DatapathError::Program {
            name,
            source: ProgramError::UnexpectedProgramType,
        })?
        .try_into()
        .map_err(|source| DatapathError::Program { name, source })
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(DatapathError::Map {
        name,
        source: MapError::InvalidName {
            name: name.to_owned(),
        },
    })?;
    T::try_from(map).map_err(|source| DatapathError::Map { name, source })
}

/// `TS_PROXY_FLOWS`: connections sent to the L7 proxy -> the service
/// address:port their client connected to.
pub struct ProxyFlows(std::sync::Mutex<HashMap<MapData, FlowKey, ServiceKey>>);

impl ProxyFlows {
    /// The service address the client at `peer` connected to, for the
    /// connection the proxy accepted on `local`; the entry is removed (each
    /// connection is accepted once). `None`: not a connection the hook sent
    /// (or its entry was evicted).
    pub fn take(&self, peer: SocketAddr, local: SocketAddr) -> Option<SocketAddr> {
        // As the client sees its socket: local is the client, remote the proxy.
        let client = crate::compile::service_key(peer);
        let proxy = crate::compile::service_key(local);
        let key = FlowKey {
            local: client.addr,
            remote: proxy.addr,
            local_port: client.port,
            remote_port: proxy.port,
            family: client.family,
            pad: [0; 3],
        };
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let service = map.get(&key, 0).ok()?;
        let _ = map.remove(&key);
        Some(crate::compile::socket_addr(&service))
    }
}

/// The kernel's per-CPU counters: events by kind, connections and bytes by
/// counter slot.
pub struct KernelCounters {
    events: PerCpuArray<MapData, u64>,
    stats: PerCpuArray<MapData, EndpointStats>,
    xdp_stats: PerCpuArray<MapData, XdpStats>,
}

impl KernelCounters {
    /// Event counters summed over CPUs, in `Event::ALL` order.
    pub fn events(&self) -> Result<Vec<(Event, u64)>, DatapathError> {
        Event::ALL
            .iter()
            .map(|&event| {
                let per_cpu =
                    self.events
                        .get(&(event as u32), 0)
                        .map_err(|source| DatapathError::Map {
                            name: map_names::EVENTS,
                            source,
                        })?;
                Ok((event, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// The XDP gateway's counters of slot `id`, summed over CPUs.
    pub fn xdp_stats(&self, id: u32) -> Result<XdpStats, DatapathError> {
        let per_cpu = self
            .xdp_stats
            .get(&id, 0)
            .map_err(|source| DatapathError::Map {
                name: map_names::XDP_STATS,
                source,
            })?;
        Ok(per_cpu.iter().fold(XdpStats::default(), |a, c| XdpStats {
            request_packets: a.request_packets + c.request_packets,
            request_bytes: a.request_bytes + c.request_bytes,
            response_packets: a.response_packets + c.response_packets,
            response_bytes: a.response_bytes + c.response_bytes,
            flows: a.flows + c.flows,
        }))
    }

    /// The counters of slot `id`, summed over CPUs.
    pub fn stats(&self, id: u32) -> Result<EndpointStats, DatapathError> {
        let per_cpu = self
            .stats
            .get(&id, 0)
            .map_err(|source| DatapathError::Map {
                name: map_names::STATS,
                source,
            })?;
        Ok(per_cpu
            .iter()
            .fold(EndpointStats::default(), |a, c| EndpointStats {
                opened: a.opened + c.opened,
                established: a.established + c.established,
                closed: a.closed + c.closed,
                failed_refused: a.failed_refused + c.failed_refused,
                failed_timeout: a.failed_timeout + c.failed_timeout,
                failed_other: a.failed_other + c.failed_other,
                request_bytes: a.request_bytes + c.request_bytes,
                response_bytes: a.response_bytes + c.response_bytes,
            }))
    }
}

/// What the maps hold already (adopted from a previous agent), so the first
/// apply writes only what differs: service keys, gateway keys, and route
/// tables by id (their used bytes).
#[expect(
    clippy::type_complexity,
    reason = "three plain maps, named at the call"
)]
fn read_back(
    services: &HashMap<MapData, ServiceKey, ServiceValue>,
    gateways: &HashMap<MapData, ServiceKey, ServiceValue>,
    routes: &HashMap<MapData, u32, RouteTable>,
) -> Result<
    (
        BTreeMap<ServiceKey, ServiceValue>,
        BTreeMap<ServiceKey, ServiceValue>,
        BTreeMap<u32, Vec<u8>>,
    ),
    DatapathError,
> {
    let loaded_services = read_keys(services, map_names::SERVICES)?;
    let loaded_gateways = read_keys(gateways, map_names::GATEWAYS)?;
    let adopted_routes = routes
        .iter()
        .map(|entry| entry.map(|(id, table): (u32, RouteTable)| (id, table.used_bytes().to_vec())))
        .collect::<Result<BTreeMap<_, _>, _>>()
        .map_err(|source| DatapathError::Map {
            name: map_names::ROUTES,
            source,
        })?;
    Ok((loaded_services, loaded_gateways, adopted_routes))
}

/// What a map of service or gateway keys holds.
fn read_keys(
    map: &HashMap<MapData, ServiceKey, ServiceValue>,
    name: &'static str,
) -> Result<BTreeMap<ServiceKey, ServiceValue>, DatapathError> {
    map.iter()
        .collect::<Result<BTreeMap<_, _>, _>>()
        .map_err(|source| DatapathError::Map { name, source })
}

/// `--bpf-log-level`: the most verbose kernel log line kept (aya-log levels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[repr(u8)]
pub enum BpfLogLevel {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

/// Takes the pin directory's lock (flock): one agent per directory.
fn lock_pin_dir(pin_dir: &Path) -> Result<File, DatapathError> {
    let lock = File::open(pin_dir).map_err(|source| DatapathError::PinDir {
        path: pin_dir.to_owned(),
        source,
    })?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(DatapathError::Busy {
            path: pin_dir.to_owned(),
        });
    }
    Ok(lock)
}

/// `traffic-shift unload`: removes everything pinned under `pin_dir` (what
/// an agent that was killed left behind) and the directory itself. Refused
/// while an agent holds the directory. Returns the paths removed.
pub fn unload(pin_dir: &Path) -> Result<Vec<PathBuf>, DatapathError> {
    if !pin_dir.exists() {
        return Ok(Vec::new());
    }
    let _lock = lock_pin_dir(pin_dir)?;
    let pin_err = |source| DatapathError::PinDir {
        path: pin_dir.to_owned(),
        source,
    };
    let mut removed = remove_all_pins(pin_dir).map_err(pin_err)?;
    std::fs::remove_dir(pin_dir).map_err(pin_err)?;
    removed.push(pin_dir.to_owned());
    Ok(removed)
}

/// Whether `path` is on a bpffs mount (`BPF_FS_MAGIC`).
fn is_bpffs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct we pass; the path is a valid C string.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c_path.as_ptr(), &raw mut stat) == 0 && stat.f_type == BPF_FS_MAGIC }
}

/// The cgroup v2 root of this machine: `/sys/fs/cgroup/unified` on hybrid
/// setups, `/sys/fs/cgroup` on unified ones.
pub fn default_cgroup() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

#[cfg(test)]
mod tests {
    use super::FreeRouteIds;

    #[test]
    fn free_route_ids_are_the_unused_ones_lowest_first_up_to_the_limit() {
        let mut ids = FreeRouteIds {
            used: [0, 1, 3, 6].into_iter().collect(),
            next: 0,
            max: 7,
        };
        let taken: Vec<u32> = std::iter::from_fn(|| ids.take().ok()).collect();
        assert_eq!(taken, [2, 4, 5]);
        assert!(ids.take().is_err(), "all 7 in use");
    }
}
