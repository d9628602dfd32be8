//! [`Datapath::load`]: the programs loaded, attached and their maps pinned
//! (or adopted from a previous agent); the pin directory's lock.

use std::{
    collections::BTreeMap,
    fs::File,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, MapError},
};
use traffic_shift_common::{RouteTable, ServiceKey, ServiceValue, SlotTable, SlotsKey, map_names};

use crate::{
    Datapath, DatapathError, EBPF_OBJECT, KernelCounters, SnatPorts,
    adopt::{pinned_maps_compatible, read_back, read_keys, read_prefixes, remove_map_pins},
    attach::attach,
    open_bytes::OpenBytes,
    xdp::{attach_xdp, set_snat_ports},
};

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
        let logger = kernel_logger(&mut ebpf);
        let n_cpus =
            aya::util::nr_cpus().map_err(|(what, source)| DatapathError::Cpus { what, source })?;
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
        let service_prefixes = take_map(&mut ebpf, map_names::SERVICE_PREFIXES)?;
        let loaded_prefixes = read_prefixes(&service_prefixes)?;
        let gateways = take_map(&mut ebpf, map_names::GATEWAYS)?;
        let xdp_gateways: HashMap<MapData, ServiceKey, ServiceValue> =
            take_map(&mut ebpf, map_names::XDP_GATEWAYS)?;
        let loaded_xdp_gateways = read_keys(&xdp_gateways, map_names::XDP_GATEWAYS)?;
        let sockets = take_map(&mut ebpf, map_names::SOCKETS)?;
        let routes: HashMap<MapData, u32, RouteTable> = take_map(&mut ebpf, map_names::ROUTES)?;
        let mut slots: HashMap<MapData, SlotsKey, SlotTable> =
            take_map(&mut ebpf, map_names::SLOTS)?;
        let gateway_flows = take_map(&mut ebpf, map_names::GATEWAY_FLOWS)?;
        let (loaded_services, loaded_gateways, adopted_routes) =
            read_back(&services, &gateways, &routes, &mut slots)?;
        let conns = MapData::from_pin(pin_dir.join(map_names::CONNS)).map_err(|source| {
            DatapathError::Map {
                name: map_names::CONNS,
                source,
            }
        })?;
        let open_bytes = OpenBytes::new(netns, conns.fd().as_fd())?;
        let counters = KernelCounters::take(&mut ebpf, open_bytes)?;
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
            service_prefixes,
            loaded_prefixes,
            gateways,
            xdp_gateways,
            sockets,
            loaded_gateways,
            loaded_xdp_gateways,
            routes,
            slots,
            loaded_routes: BTreeMap::new(),
            loaded_services,
            pin_dir: pin_dir.to_owned(),
            _ebpf: ebpf,
            _lock: lock,
        })
    }

    /// `TS_CONNS`, the socket storage of routed connections.
    pub fn conns_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.conns.fd().as_fd()
    }

    /// Whether the maps were a previous agent's (kept across its restart).
    pub fn adopted(&self) -> bool {
        self.adopted
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

pub(crate) fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DatapathError>
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

/// Takes the pin directory's lock (flock): one agent per directory.
pub(crate) fn lock_pin_dir(pin_dir: &Path) -> Result<File, DatapathError> {
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

/// The reader of the programs' log lines, if aya-log can set one up.
fn kernel_logger(ebpf: &mut Ebpf) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
    match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => Some(logger),
        Err(err) => {
            tracing::warn!(%err, "kernel log lines will not be shown");
            None
        }
    }
}
