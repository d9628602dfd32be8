//! The agent: keeps the kernel in step with a rules directory.
//!
//! Files are accepted or refused whole. The accepted set is what the kernel
//! holds; a refused file (syntax, validation, a reference the other files do
//! not satisfy, a kernel limit) is logged as one line and the previous
//! version of that file stays in force.
//!
//! Resources applied over the admin socket (`traffic-shift apply`, see
//! `control`) are in force together with the directory's files.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use notify::Watcher as _;
use tokio::{signal::unix::SignalKind, sync::mpsc};

use std::sync::{Arc, Mutex};

use traffic_shift_common::{EndpointStats, ServiceKey};

mod control;
mod l7;

use traffic_shift_datapath::compile::{self, Compiled};

use traffic_shift_config::{self as config, RulesFile, labels};

use traffic_shift_datapath::{BpfLogLevel, Datapath, DatapathError};

use traffic_shift_config::model::RoutingModel;

use traffic_shift_datapath::sockets;

use traffic_shift_datapath::stats::StatIds;

use crate::{
    admin, applied,
    metrics::{self, Exporter, Shared, SlotInfo},
    status::{DestinationStatus, EndpointStatus, GatewayEndpoint, RouteStatus, Status},
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("cannot watch rules directory {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("rules directory {path}: {source}")]
    RulesDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no cgroup v2 mount found; mount one (mount -t cgroup2 none /sys/fs/cgroup) or pass --cgroup"
    )]
    NoCgroup2,
    #[error("cannot handle signals: {0}")]
    Signal(#[source] std::io::Error),
    #[error("cannot use network namespace {path} for health probes: {source}")]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}: {source}; pick another --metrics-addr")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the L7 proxy cannot listen on port {port} of 127.0.0.1 in {netns}: {source}; pick another --proxy-port"
    )]
    Proxy {
        port: u16,
        netns: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write events file {path}: {source}")]
    Events {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] applied::StateError),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
}

/// Where `traffic-shift run` keeps its status and `traffic-shift status`
/// reads it, unless told otherwise.
pub const DEFAULT_STATUS_FILE: &str = "/run/traffic-shift/status.json";

/// The longest the counters' tick lets the status file wait (a large rule
/// set's status is costly to build): half of what readers call stale.
const STATUS_MAX_WAIT: Duration = Duration::from_millis(crate::status::STALE_AFTER_MS / 2);

/// `traffic-shift run`'s options.
#[derive(Debug, clap::Args)]
pub struct AgentOptions {
    /// Directory of Istio YAML files (*.yaml, *.yml; not recursive). Example: `rules/tcp-echo`.
    #[arg(long, value_name = "DIR")]
    pub rules: PathBuf,
    /// cgroup v2 directory whose processes get the routing (and all its
    /// descendants). Default: the cgroup v2 root, i.e. every process on the node.
    /// Example: `/sys/fs/cgroup/unified/my-app`.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Where the maps are pinned (inside a bpffs mount); one agent per directory.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/traffic-shift")]
    pub bpffs: PathBuf,
    /// The network namespace whose incoming connections the gateway
    /// (sk_lookup) routes, as a file. Default: the agent's own.
    /// Example: `/var/run/netns/node`.
    #[arg(long, value_name = "PATH", default_value = "/proc/self/ns/net")]
    pub netns: PathBuf,
    /// Interfaces (of the --netns namespace) where the XDP gateway serves
    /// gateway routes whose endpoints are on other hosts: packet-level load
    /// balancing with conntrack and NAT. Repeat or separate with commas.
    /// Without it such routes are refused. Example: `--xdp-iface eth0`.
    #[arg(long, value_name = "IFACE", value_delimiter = ',')]
    pub xdp_iface: Vec<String>,
    /// The source ports the XDP gateway gives its flows toward endpoints
    /// (source NAT to the node's address), LOW-HIGH, both included. Keep
    /// it clear of the node's ephemeral range (net.ipv4.ip_local_port_range,
    /// 32768-60999 by default): a port in both could meet a connection of
    /// the node's own. Example: `--xdp-snat-ports 50000-59999`.
    #[arg(long, value_name = "LOW-HIGH", default_value = "61000-65535")]
    pub xdp_snat_ports: traffic_shift_datapath::SnatPorts,
    /// Where the agent keeps its status for `traffic-shift status` (JSON,
    /// replaced whole on every change).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_STATUS_FILE)]
    pub status_file: PathBuf,
    /// Append one JSON line per file applied or refused (for scripts and
    /// tests). Example: `/run/traffic-shift/events.jsonl`.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Where `/metrics` (Prometheus) is served. Loopback only by default;
    /// port 0 picks a free port (the status file says which).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15090")]
    pub metrics_addr: SocketAddr,
    /// The most verbose kernel log lines (aya-log) passed to the log
    /// output; fixed when the programs load, so disabled levels cost nothing.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub bpf_log_level: BpfLogLevel,
    /// On Ctrl-C/SIGTERM, detach the programs and remove every pin (as
    /// `traffic-shift unload`). Without it the datapath stays pinned and
    /// keeps steering new connections while no agent runs; the next agent
    /// on the same --bpffs adopts it without a gap.
    #[arg(long)]
    pub unload_on_exit: bool,
    #[command(flatten)]
    pub health: crate::health::HealthOptions,
    #[command(flatten)]
    pub limits: traffic_shift_datapath::limits::Limits,
    /// Close the connections routed to an endpoint this long after it left
    /// the rules (found in the --netns namespace; the log says how many).
    /// Default: never, they finish on their own.
    #[arg(long, value_name = "DURATION", value_parser = crate::health::parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// Where `traffic-shift apply|delete|get|version` reach the agent: a
    /// Unix socket the agent creates, mode 0600, root only.
    #[arg(long, value_name = "PATH", default_value = admin::DEFAULT_SOCKET)]
    pub admin_socket: PathBuf,
    /// Where the resources applied with `traffic-shift apply` are kept
    /// (`applied.yaml`), to be restored when the agent starts again. One
    /// agent per directory.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/traffic-shift")]
    pub state_dir: PathBuf,
    /// The port where the L7 proxy takes connections to HTTP service
    /// addresses (the connect-time hook sends them there), on 127.0.0.1
    /// and ::1 in the --netns namespace. Default: Istio's outbound port.
    #[arg(long, value_name = "PORT", default_value_t = compile::ProxyAddrs::DEFAULT_PORT)]
    pub proxy_port: u16,
}

/// The rules files on disk: each one's text, or why it cannot be read.
type Snapshot = BTreeMap<PathBuf, Result<String, String>>;

struct Agent {
    datapath: Datapath,
    rules: PathBuf,
    /// Files in force, with the text they were accepted from.
    accepted: BTreeMap<PathBuf, (String, RulesFile)>,
    /// Last refused version of a file (`None`: its removal was refused), so a
    /// refusal is reported once, not on every rescan.
    refused: BTreeMap<PathBuf, Option<String>>,
    events: Option<std::fs::File>,
    generation: u64,
    netns: PathBuf,
    /// `--xdp-iface` was given: gateway routes to other hosts go to XDP.
    xdp: bool,
    /// Endpoints of gateway routes: their listening sockets are wanted.
    gateway_endpoints: BTreeMap<ServiceKey, SocketAddr>,
    /// Sockets registered for them, so a backend restarted with a new
    /// socket (another inode) is noticed.
    registered: BTreeMap<ServiceKey, sockets::Listener>,
    /// The model in force.
    model: RoutingModel,
    status_file: PathBuf,
    /// The status last written, to write only changes.
    last_status: String,
    /// When the status was last built, and what building it cost.
    status_built: Option<(std::time::Instant, Duration)>,
    /// Counter slots of the rules in force (and retired ones).
    stat_ids: StatIds,
    limits: traffic_shift_datapath::limits::Limits,
    /// The L7 proxy's sockets and configuration.
    l7: l7::L7,
    /// The proxy's per-endpoint request outcomes at the last sample.
    http_outcomes: BTreeMap<SocketAddr, traffic_shift_proxy::EndpointOutcomes>,
    /// Per-second samples of every slot's counters, the last minute of them.
    history: std::collections::VecDeque<(std::time::Instant, BTreeMap<u32, EndpointStats>)>,
    /// What the metrics exporter needs from the agent.
    metrics: Arc<Mutex<Shared>>,
    metrics_addr: SocketAddr,
    /// Active probes (`None` with --health-interval 0).
    prober: Option<crate::health::Prober>,
    /// Endpoints whose probes failed: out of the selection tables.
    unhealthy: BTreeSet<SocketAddr>,
    /// Endpoints ejected by outlier detection.
    outliers: crate::health::Outliers,
    /// Resources applied over the admin socket, in force with the files.
    applied: applied::Store,
    drain_timeout: Option<Duration>,
    /// Counter slots of endpoints that left the rules, and since when: their
    /// connections are closed after --drain-timeout.
    draining: BTreeMap<u32, std::time::Instant>,
}

/// Runs until SIGINT or SIGTERM; then leaves the datapath pinned (or, with
/// `--unload-on-exit`, detaches it and removes the pins).
pub async fn run(options: AgentOptions) -> Result<(), AgentError> {
    // First of all, and once: a signal that arrives while the programs load
    // or the first rules apply must stop the agent cleanly, not kill it
    // with its programs attached; and a stream made per loop iteration would
    // miss a signal that arrives during a rescan.
    let signal = |kind| tokio::signal::unix::signal(kind).map_err(AgentError::Signal);
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let rules = options
        .rules
        .canonicalize()
        .map_err(|source| AgentError::RulesDir {
            path: options.rules.clone(),
            source,
        })?;
    let events = options.events.as_deref().map(open_events).transpose()?;
    let (applied, admin_server, mut admin_calls) = control::open(&options)?;
    let cgroup = match &options.cgroup {
        Some(cgroup) => cgroup.clone(),
        None => traffic_shift_datapath::default_cgroup().ok_or(AgentError::NoCgroup2)?,
    };
    let datapath = load_datapath(&options, &cgroup)?;
    let shared = Arc::new(Mutex::new(Shared::default()));
    let (l7, metrics_server, metrics_addr) =
        start_l7_and_metrics(&options, &datapath, Arc::clone(&shared)).await?;
    tracing::info!(
        cgroup = %cgroup.display(),
        netns = %options.netns.display(),
        pins = %datapath.pin_dir().display(),
        "programs attached"
    );
    let mut agent = Agent {
        datapath,
        rules: rules.clone(),
        accepted: BTreeMap::new(),
        refused: BTreeMap::new(),
        events,
        generation: 0,
        netns: options.netns.clone(),
        xdp: !options.xdp_iface.is_empty(),
        gateway_endpoints: BTreeMap::new(),
        registered: BTreeMap::new(),
        model: RoutingModel::default(),
        status_file: options.status_file.clone(),
        last_status: String::new(),
        status_built: None,
        stat_ids: StatIds::with_capacity(options.limits.max_counters),
        limits: options.limits,
        l7,
        http_outcomes: BTreeMap::new(),
        history: std::collections::VecDeque::new(),
        metrics: shared,
        metrics_addr,
        prober: start_prober(&options)?,
        unhealthy: BTreeSet::new(),
        outliers: crate::health::Outliers::default(),
        applied,
        drain_timeout: options.drain_timeout,
        draining: BTreeMap::new(),
    };

    let (_watcher, mut rx) = watch_rules(&rules)?;

    // The first apply registers the gateway endpoints' sockets too.
    agent.rescan();
    agent.restore_applied(&admin_server);
    agent.sample();
    agent.write_status(true);
    tracing::info!(rules = %agent.rules.display(), files = agent.accepted.len(), "serving; watching for changes");

    // Safety net for missed inotify events (e.g. a directory replaced whole).
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Endpoint sockets: a restarted backend is registered again within this.
    let mut socket_tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        // An event writes the status at once; the tick only when due.
        let event = tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            Some(()) = rx.recv() => {
                // Let an editor's write-rename sequence finish, then take it whole.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while rx.try_recv().is_ok() {}
                agent.rescan();
                true
            }
            _ = tick.tick() => {
                agent.rescan();
                agent.sample();
                false
            }
            // No status to write unless a socket came or went (see there).
            _ = socket_tick.tick() => if agent.register_sockets_changed() { true } else { continue },
            Some(verdict) = next_verdict(&mut agent.prober) => { agent.health_changed(verdict); true }
            Some(call) = admin_calls.recv() => { agent.serve_admin(call); true }
        };
        agent.write_status(event);
        if event {
            release_freed_memory();
        }
    }
    metrics_server.abort();
    log_stop(&options);
    let _ = std::fs::remove_file(&agent.status_file);
    drop(agent);
    Ok(())
}

impl Agent {
    /// Reads the directory and brings in every change it can. When something
    /// went in, files refused earlier get another chance (a VirtualService
    /// may have waited for its ServiceEntry).
    fn rescan(&mut self) {
        let refused_before: Vec<PathBuf> = self.refused.keys().cloned().collect();
        if self.rescan_once() && !refused_before.is_empty() {
            for path in refused_before {
                self.refused.remove(&path);
            }
            self.rescan_once();
        }
    }

    /// One pass; returns whether anything was applied.
    fn rescan_once(&mut self) -> bool {
        let disk = match read_rules_dir(&self.rules) {
            Ok(disk) => disk,
            Err(err) => {
                tracing::error!(rules = %self.rules.display(), %err, "cannot read rules directory; keeping the rules in force");
                return false;
            }
        };
        // A refused file that is gone is forgotten (with its text, up to
        // 4 MiB): files come and go under new names, memory must not grow.
        // A refused removal stays until the removal goes through.
        let accepted = &self.accepted;
        self.refused.retain(|path, text| {
            disk.contains_key(path) || (text.is_none() && accepted.contains_key(path))
        });
        let mut pending: Vec<(PathBuf, Option<String>)> = Vec::new();
        for (path, text) in &disk {
            // An unreadable file is tracked by its error, so it is reported
            // once, not on every rescan.
            let text = match text {
                Ok(text) => text,
                Err(error) => {
                    let marker = format!("\0unreadable: {error}");
                    if self
                        .refused
                        .get(path)
                        .is_none_or(|t| t.as_ref() != Some(&marker))
                    {
                        self.refuse(path, Some(marker), error);
                    }
                    continue;
                }
            };
            let unchanged = self.accepted.get(path).is_some_and(|(t, _)| t == text);
            let known_bad = self
                .refused
                .get(path)
                .is_some_and(|t| t.as_ref() == Some(text));
            if !unchanged && !known_bad {
                pending.push((path.clone(), Some(text.clone())));
            }
        }
        for path in self.accepted.keys() {
            if !disk.contains_key(path) && self.refused.get(path) != Some(&None) {
                pending.push((path.clone(), None));
            }
        }
        if pending.is_empty() {
            return false;
        }
        // Parse errors are final for this version of the file.
        let mut candidates = Vec::new();
        for (path, text) in pending {
            match text {
                None => candidates.push((path, None)),
                Some(text) => match config::parse_file(&path, &text) {
                    Ok(file) => {
                        for warning in &file.warnings {
                            tracing::warn!(file = %file_name(&path), "{warning}");
                        }
                        candidates.push((path, Some((text, file))));
                    }
                    Err(err) => self.refuse(&path, Some(text), &err.to_string()),
                },
            }
        }
        // All changes together first (files that depend on each other arrive
        // together); if that fails, one at a time until nothing more goes in.
        if candidates.len() > 1 && self.try_apply(&candidates).is_ok() {
            return true;
        }
        let mut applied = false;
        loop {
            let mut progress = false;
            let mut left = Vec::new();
            for candidate in candidates {
                match self.try_apply(std::slice::from_ref(&candidate)) {
                    Ok(()) => {
                        progress = true;
                        applied = true;
                    }
                    Err(err) => left.push((candidate, err)),
                }
            }
            if !progress || left.is_empty() {
                for ((path, change), err) in left {
                    self.refuse(&path, change.map(|(text, _)| text), &err);
                }
                return applied;
            }
            candidates = left.into_iter().map(|(c, _)| c).collect();
        }
    }

    /// Applies the changes if the whole resulting rule set is valid and fits.
    fn try_apply(
        &mut self,
        changes: &[(PathBuf, Option<(String, RulesFile)>)],
    ) -> Result<(), String> {
        let mut next = self.accepted.clone();
        for (path, change) in changes {
            match change {
                Some((text, file)) => next.insert(path.clone(), (text.clone(), file.clone())),
                None => next.remove(path),
            };
        }
        // The applied resources first: a rules file that repeats one of
        // them is the one refused.
        let mut files: Vec<RulesFile> = vec![self.applied.rules_file()];
        files.extend(next.values().map(|(_, f)| f.clone()));
        let model = config::resolve(&files).map_err(|e| e.to_string())?;
        let names: Vec<String> = changes.iter().map(|(path, _)| file_name(path)).collect();
        self.install(model, &names.join(" "))?;
        self.accepted = next;
        for (path, change) in changes {
            self.refused.remove(path);
            self.event(
                path,
                if change.is_some() {
                    "applied"
                } else {
                    "removed"
                },
                None,
            );
        }
        Ok(())
    }

    /// Compiles `model` and writes it to the kernel in one update; then it
    /// is the model in force. `what` names the change in the log.
    fn install(&mut self, model: RoutingModel, what: &str) -> Result<(), String> {
        let is_local = traffic_shift_datapath::netns::is_local_in(&self.netns)
            .map_err(|e| format!("cannot list the addresses of {}: {e}", self.netns.display()))?;
        let usable = self.usable(&model);
        let compiled: Compiled = compile::compile(
            &usable,
            &is_local,
            self.xdp,
            &self.stat_ids,
            &self.limits,
            &self.l7.addrs,
        )
        .map_err(|e| e.to_string())?;
        // The proxy's new gateway sockets are bound before anything changes:
        // a port that cannot be refuses the rules.
        let bound = self.l7.bind(&model)?;
        // Gateway endpoints on this node are handed sockets (sk_lookup);
        // those on other hosts are the XDP gateway's.
        let (local, remote): (Vec<SocketAddr>, Vec<SocketAddr>) = model
            .routes
            .iter()
            .filter(|r| r.gateway.is_some())
            .flat_map(|r| r.destinations.iter().flat_map(|d| &d.endpoints))
            .map(|e| e.addr)
            .partition(|addr| is_local(addr.ip()));
        // Sockets of new gateway endpoints go in before the tables that
        // point at them: the first connection after the change finds them.
        let wanted: BTreeMap<ServiceKey, SocketAddr> = local
            .into_iter()
            .map(|addr| (compile::service_key(addr), addr))
            .collect();
        self.sync_sockets(&wanted, false);
        // The XDP program cannot resolve a next hop's MAC address (it drops
        // the packet, `xdp_no_neighbour`): have the stack resolve the XDP
        // endpoints' before their tables go in, whether or not health
        // probes run.
        let remote: BTreeSet<std::net::IpAddr> = remote.iter().map(SocketAddr::ip).collect();
        if self.xdp
            && !remote.is_empty()
            && let Err(err) =
                traffic_shift_datapath::netns::resolve_neighbours(&self.netns, &remote)
        {
            tracing::warn!(%err, "cannot resolve the XDP endpoints' next hops; their first SYNs may be dropped");
        }
        match self.datapath.apply(&compiled) {
            Ok(report) => {
                self.generation += 1;
                tracing::info!(
                    generation = self.generation,
                    files = %what,
                    routes_added = report.routes_added.len(),
                    routes_changed = report.routes_changed.len(),
                    routes_removed = report.routes_removed.len(),
                    "rules applied"
                );
                for key in report.routes_added.iter().chain(&report.routes_changed) {
                    tracing::info!(route = %key, split = %compiled.routes[key].summary, "route in force");
                }
                for key in &report.routes_removed {
                    tracing::info!(route = %key, "route removed");
                }
                self.l7.commit(bound, &usable)?;
                self.model = model;
                self.stat_ids = compiled.stat_ids;
                self.track_removed();
                self.publish();
                if let Some(prober) = &self.prober {
                    prober.set_targets(self.endpoints());
                }
                self.gateway_endpoints = wanted;
                self.register_sockets();
                Ok(())
            }
            Err(err) => {
                // The kernel refused a write part-way (e.g. out of memory).
                // Our record of it is kept exact by `apply`; report and keep
                // the previous file set as the one in force.
                Err(format!("kernel update failed: {err}"))
            }
        }
    }

    /// Finds the listening socket of every gateway endpoint and registers a
    /// duplicate of it (pidfd_getfd) for the gateway; a backend that
    /// restarted with a new socket gets the new one registered. A socket the
    /// backend closed leaves the kernel map by itself.
    /// [`Self::register_sockets`]; whether the registered endpoints changed.
    /// The status shows which endpoint sockets are registered and nothing
    /// else this changes: with 10 000 services it is 5 MB to render, so not
    /// four times a second for nothing.
    fn register_sockets_changed(&mut self) -> bool {
        let before: Vec<ServiceKey> = self.registered.keys().copied().collect();
        self.register_sockets();
        !self.registered.keys().eq(before.iter())
    }

    fn register_sockets(&mut self) {
        let wanted = self.gateway_endpoints.clone();
        self.sync_sockets(&wanted, true);
    }

    /// Registers the sockets of `wanted` endpoints; with `remove_stale`,
    /// also unregisters endpoints no longer wanted.
    fn sync_sockets(&mut self, wanted: &BTreeMap<ServiceKey, SocketAddr>, remove_stale: bool) {
        if remove_stale {
            let stale: Vec<ServiceKey> = self
                .registered
                .keys()
                .filter(|k| !wanted.contains_key(k))
                .copied()
                .collect();
            for key in stale {
                self.datapath.unregister_socket(&key);
                self.registered.remove(&key);
            }
        }
        if wanted.is_empty() {
            return;
        }
        let in_map = self.datapath.registered_sockets();
        // One read of the socket tables and one walk of /proc for all of them.
        let addrs: Vec<SocketAddr> = wanted.values().copied().collect();
        let known: HashMap<SocketAddr, sockets::Listener> = wanted
            .iter()
            .filter(|(key, _)| in_map.contains(key))
            .filter_map(|(key, addr)| self.registered.get(key).map(|l| (*addr, l.clone())))
            .collect();
        let mut found = match sockets::find_listeners_known(
            &addrs,
            sockets::Netns::Path(&self.netns),
            &known,
        ) {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(%err, "cannot look for the endpoints' listening sockets");
                return;
            }
        };
        for (&key, &addr) in wanted {
            match found.remove(&addr) {
                Some(listener)
                    if self.registered.get(&key).map(|r| r.inode) == Some(listener.inode)
                        && in_map.contains(&key) => {}
                Some(listener) => match sockets::duplicate(&listener, addr) {
                    Ok(fd) => match self.datapath.register_socket(key, &fd) {
                        Ok(()) => {
                            tracing::info!(endpoint = %addr, pid = listener.pid, inode = listener.inode, "endpoint socket registered");
                            self.registered.insert(key, listener.clone());
                        }
                        Err(err) => {
                            tracing::warn!(endpoint = %addr, %err, "cannot register the endpoint's socket");
                        }
                    },
                    // The backend closed or replaced the socket since the
                    // scan (it is restarting): the next tick sees the new one.
                    Err(err) if err.is_race() => {
                        tracing::debug!(endpoint = %addr, %err, "listener changed during the scan");
                    }
                    Err(err) => {
                        tracing::warn!(endpoint = %addr, pid = listener.pid, %err, "cannot take the endpoint's socket");
                    }
                },
                None => {
                    if self.registered.remove(&key).is_some() {
                        self.datapath.unregister_socket(&key);
                        tracing::warn!(endpoint = %addr, "endpoint has no listening socket any more: missing");
                    }
                }
            }
        }
    }

    /// Every endpoint of the rules in force, and how to probe it: endpoints
    /// of HTTP routes with an HTTP GET.
    fn endpoints(&self) -> BTreeMap<SocketAddr, crate::health::Probe> {
        let mut endpoints: BTreeMap<SocketAddr, crate::health::Probe> = self
            .model
            .destinations()
            .flat_map(|d| &d.endpoints)
            .map(|e| (e.addr, crate::health::Probe::Tcp))
            .collect();
        for dest in self.model.http_destinations() {
            for endpoint in &dest.endpoints {
                endpoints.insert(
                    endpoint.addr,
                    crate::health::Probe::Http {
                        authority: dest.host.clone(),
                    },
                );
            }
        }
        endpoints
    }

    /// `model` without the endpoints that are unhealthy or ejected: what
    /// the selection tables may pick.
    fn usable(&self, model: &RoutingModel) -> RoutingModel {
        let mut usable = model.clone();
        for dest in usable.destinations_mut() {
            dest.endpoints.retain(|e| !self.excluded(e.addr));
        }
        usable
    }

    fn excluded(&self, endpoint: SocketAddr) -> bool {
        self.unhealthy.contains(&endpoint) || self.outliers.is_ejected(&endpoint)
    }

    /// A probe verdict changed: the tables follow.
    fn health_changed(&mut self, verdict: crate::health::Verdict) {
        if verdict.healthy {
            self.unhealthy.remove(&verdict.endpoint);
            tracing::info!(endpoint = %verdict.endpoint, "endpoint healthy again: back in the selection");
        } else {
            self.unhealthy.insert(verdict.endpoint);
            tracing::warn!(endpoint = %verdict.endpoint, "endpoint unhealthy (probes failed): out of the selection; its share goes to the others of its subset");
        }
        self.reapply();
    }

    /// Compiles the rules in force again (after a health change) and writes
    /// what differs.
    fn reapply(&mut self) {
        let is_local = match traffic_shift_datapath::netns::is_local_in(&self.netns) {
            Ok(is_local) => is_local,
            Err(err) => {
                tracing::warn!(%err, "cannot list local addresses; the tables keep the previous health");
                return;
            }
        };
        let usable = self.usable(&self.model);
        let result = compile::compile(
            &usable,
            &is_local,
            self.xdp,
            &self.stat_ids,
            &self.limits,
            &self.l7.addrs,
        )
        .map_err(|e| e.to_string())
        .and_then(|compiled| {
            self.datapath
                .apply(&compiled)
                .map(|report| (compiled, report))
                .map_err(|e| e.to_string())
        });
        match result {
            Ok((compiled, report)) => {
                self.stat_ids = compiled.stat_ids;
                if let Err(err) = self.l7.update(&usable) {
                    tracing::warn!(%err, "the L7 proxy keeps its previous endpoints");
                }
                for key in &report.routes_changed {
                    tracing::info!(route = %key, split = %compiled.routes[key].summary, "route tables follow endpoint health");
                }
            }
            Err(err) => tracing::warn!(%err, "cannot update the tables for the endpoints' health"),
        }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The counter slot of an endpoint of a route's destination.
    fn slot(
        &self,
        route: &traffic_shift_config::model::TcpRoute,
        dest: &traffic_shift_config::model::Destination,
        ep: &traffic_shift_config::model::Endpoint,
    ) -> Option<u32> {
        self.stat_ids.get(&compile::stat_key(route, dest, ep.addr))
    }

    /// Tells the metrics exporter about the rules just applied: the labels
    /// of every counter slot, the configured weights.
    fn publish(&mut self) {
        let live: BTreeSet<u32> = self.stat_ids.iter().map(|(_, id)| id).collect();
        let mut slots = std::mem::take(&mut self.shared().slots);
        // Slots reused for another endpoint lose their old labels.
        slots.retain(|id, _| live.contains(id));
        let mut weights = BTreeMap::new();
        for route in &self.model.routes {
            for dest in &route.destinations {
                let mut version = None;
                for ep in &dest.endpoints {
                    let labels = labels::istio_labels(route, dest, ep);
                    version = Some(labels.get("destination_version").to_owned());
                    if let Some(id) = self.slot(route, dest, ep) {
                        slots.insert(
                            id,
                            SlotInfo {
                                labels,
                                endpoint: ep.addr,
                                route: route.key.clone(),
                            },
                        );
                    }
                }
                let version = version
                    .or_else(|| dest.subset.clone())
                    .unwrap_or_else(|| "unknown".to_owned());
                *weights
                    .entry((route.key.clone(), dest.host.clone(), version))
                    .or_default() += dest.weight;
            }
        }
        let generation = self.generation;
        let mut shared = self.shared();
        shared.slots = slots;
        shared.weights = weights;
        shared.generation = generation;
        shared.rules_applied += 1;
    }

    /// Every second: takes a sample of the counters (for the last-minute
    /// figures of `status`) and tells the exporter how full the maps are
    /// and which gateway sockets are held.
    fn sample(&mut self) {
        let now = std::time::Instant::now();
        let counters = self.datapath.counters();
        let sample: BTreeMap<u32, EndpointStats> = self
            .stat_ids
            .iter()
            .filter_map(|(_, id)| counters.stats(id).ok().map(|s| (id, s)))
            .collect();
        self.history.push_back((now, sample));
        self.detect_outliers(now);
        self.drain(now);
        while self
            .history
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_mins(1))
        {
            self.history.pop_front();
        }
        let fill = self.datapath.fill();
        let mut healthy = BTreeMap::new();
        for route in &self.model.routes {
            for dest in &route.destinations {
                for ep in &dest.endpoints {
                    let version = labels::destination_version(ep);
                    let up = !is_failing(&self.observed(self.slot(route, dest, ep)).1)
                        && !self.excluded(ep.addr);
                    *healthy
                        .entry((dest.host.clone(), version, ep.addr.to_string()))
                        .or_insert(true) &= up;
                }
            }
        }
        let mut registered = BTreeMap::new();
        for route in self.model.routes.iter().filter(|r| r.gateway.is_some()) {
            for dest in &route.destinations {
                // Only the sk_lookup gateway's endpoints have sockets.
                let key = |ep: &&traffic_shift_config::model::Endpoint| {
                    self.gateway_endpoints
                        .contains_key(&compile::service_key(ep.addr))
                };
                for ep in dest.endpoints.iter().filter(key) {
                    registered.insert(
                        (
                            dest.host.clone(),
                            labels::destination_version(ep),
                            ep.addr.to_string(),
                        ),
                        self.registered.contains_key(&compile::service_key(ep.addr)),
                    );
                }
            }
        }
        let mut shared = self.shared();
        shared.map_fill = fill;
        shared.registered = registered;
        shared.healthy = healthy;
    }

    /// Notes the counter slots whose endpoints left the rules (a health
    /// exclusion does not count: those connections are not cut).
    fn track_removed(&mut self) {
        if self.drain_timeout.is_none() {
            return;
        }
        let live = compile::stat_keys(&self.model);
        let now = std::time::Instant::now();
        for (key, id) in self.stat_ids.iter() {
            if live.contains(key) {
                self.draining.remove(&id);
            } else {
                self.draining.entry(id).or_insert(now);
            }
        }
    }

    /// Closes the routed connections of endpoints that left the rules more
    /// than --drain-timeout ago.
    fn drain(&mut self, now: std::time::Instant) {
        let Some(timeout) = self.drain_timeout else {
            return;
        };
        let due: BTreeSet<u32> = self
            .draining
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= timeout)
            .map(|(id, _)| *id)
            .collect();
        if due.is_empty() {
            return;
        }
        let endpoints: Vec<String> = self
            .stat_ids
            .iter()
            .filter(|(_, id)| due.contains(id))
            .map(|(key, _)| key.endpoint.to_string())
            .collect();
        match traffic_shift_datapath::drain::close_routed(
            &self.netns,
            self.datapath.conns_fd(),
            &due,
        ) {
            Ok(closed) => tracing::info!(
                closed,
                endpoints = %endpoints.join(" "),
                timeout = ?timeout,
                "drain timeout: closed the connections still open to endpoints removed from the rules"
            ),
            Err(err) => {
                tracing::warn!(%err, endpoints = %endpoints.join(" "), "drain timeout: cannot close the connections of removed endpoints");
            }
        }
        for id in due {
            self.draining.remove(&id);
        }
    }

    /// Outlier detection over the last second's counters: endpoints whose
    /// connects keep failing are ejected (within `maxEjectionPercent`),
    /// and come back when their ejection is over.
    fn detect_outliers(&mut self, now: std::time::Instant) {
        let n = self.history.len();
        if n < 2 {
            return;
        }
        let (before, last) = (&self.history[n - 2].1, &self.history[n - 1].1);
        // (destination's endpoints, its policy, per endpoint: established, failed)
        let mut observed = Vec::new();
        for route in &self.model.routes {
            for dest in &route.destinations {
                let Some(policy) = dest.outlier else { continue };
                let deltas: Vec<(SocketAddr, u64, u64)> = dest
                    .endpoints
                    .iter()
                    .map(|ep| {
                        let id = self.slot(route, dest, ep);
                        let get = |s: &BTreeMap<u32, EndpointStats>| {
                            id.and_then(|id| s.get(&id)).copied().unwrap_or_default()
                        };
                        let (a, b) = (get(before), get(last));
                        (
                            ep.addr,
                            b.established.saturating_sub(a.established),
                            b.failed().saturating_sub(a.failed()),
                        )
                    })
                    .collect();
                observed.push((policy, deltas));
            }
        }
        // Requests the L7 proxy sent: a 5xx (or a failed connect, a reset,
        // a timeout) is a failure, any other answer a success.
        let outcomes = self.l7.proxy().endpoint_outcomes();
        for dest in self.model.http_destinations() {
            let Some(policy) = dest.outlier else { continue };
            let deltas = dest
                .endpoints
                .iter()
                .map(|ep| {
                    let now = outcomes.get(&ep.addr).copied().unwrap_or_default();
                    let then = self
                        .http_outcomes
                        .get(&ep.addr)
                        .copied()
                        .unwrap_or_default();
                    let (requests, errors) = (
                        now.requests.saturating_sub(then.requests),
                        now.errors_5xx.saturating_sub(then.errors_5xx),
                    );
                    // A success in the period breaks the streak; the failures
                    // after it are the proxy's consecutive count.
                    if requests > errors {
                        (ep.addr, 1, u64::from(now.consecutive_5xx))
                    } else {
                        (ep.addr, 0, errors)
                    }
                })
                .collect();
            observed.push((policy, deltas));
        }
        self.http_outcomes = outcomes;
        let mut changed = false;
        for (policy, deltas) in observed {
            let max = (deltas.len() * policy.max_ejection_percent as usize / 100).max(1);
            let mut ejected = deltas
                .iter()
                .filter(|(e, _, _)| self.outliers.is_ejected(e))
                .count();
            for (endpoint, established, failed) in deltas {
                if self
                    .outliers
                    .observe(endpoint, established, failed, &policy, ejected < max, now)
                {
                    ejected += 1;
                    changed = true;
                    tracing::warn!(%endpoint, consecutive_failures = policy.consecutive_failures, "outlier: endpoint ejected; its share goes to the others of its subset");
                }
            }
        }
        for endpoint in self.outliers.expire(now) {
            changed = true;
            tracing::info!(%endpoint, "outlier ejection over: back in the selection");
        }
        if changed {
            self.reapply();
        }
    }

    /// A slot's counters now, and how much they grew over the last minute
    /// (since the oldest sample kept).
    fn observed(&self, id: Option<u32>) -> (EndpointStats, EndpointStats) {
        let Some(id) = id else {
            return Default::default();
        };
        let get = |sample: Option<&(std::time::Instant, BTreeMap<u32, EndpointStats>)>| {
            sample
                .and_then(|(_, s)| s.get(&id).copied())
                .unwrap_or_default()
        };
        let now = get(self.history.back());
        let then = get(self.history.front());
        let delta = EndpointStats {
            opened: now.opened.saturating_sub(then.opened),
            established: now.established.saturating_sub(then.established),
            failed_refused: now.failed_refused.saturating_sub(then.failed_refused),
            failed_timeout: now.failed_timeout.saturating_sub(then.failed_timeout),
            failed_other: now.failed_other.saturating_sub(then.failed_other),
            ..EndpointStats::default()
        };
        (now, delta)
    }

    /// The status as of now (see [`crate::status`]).
    fn status(&self) -> Status {
        let gateway_endpoints = self
            .gateway_endpoints
            .iter()
            .map(|(key, addr)| match self.registered.get(key) {
                Some(l) => GatewayEndpoint {
                    endpoint: addr.to_string(),
                    state: "registered".into(),
                    pid: Some(l.pid),
                    inode: Some(l.inode),
                },
                None => GatewayEndpoint {
                    endpoint: addr.to_string(),
                    state: "missing".into(),
                    pid: None,
                    inode: None,
                },
            })
            .collect();
        let events = match self.datapath.counters().events() {
            Ok(events) => events
                .into_iter()
                .map(|(e, n)| (e.name().to_owned(), n))
                .collect(),
            Err(err) => {
                tracing::warn!(%err, "cannot read the kernel event counters");
                BTreeMap::new()
            }
        };
        let routes = self
            .model
            .routes
            .iter()
            .map(|route| RouteStatus {
                route: route.key.clone(),
                kind: route
                    .gateway
                    .as_ref()
                    .map_or_else(|| "mesh".to_owned(), |g| format!("gateway {g}")),
                service: format!("{}:{}", route.service_host, route.service_port),
                destinations: route
                    .destinations
                    .iter()
                    .map(|dest| self.destination_status(route, dest))
                    .collect(),
            })
            .collect();
        let kernel_routes = self
            .datapath
            .route_ids()
            .map(|(id, key)| (id, key.to_owned()))
            .collect();
        let counter_slots = self
            .stat_ids
            .iter()
            .filter(|(_, id)| !self.stat_ids.is_retired(*id))
            .map(|(key, id)| {
                let destination = match &key.subset {
                    Some(subset) => format!("{}/{subset}", key.host),
                    None => key.host.clone(),
                };
                let slot = crate::status::CounterSlot {
                    route: key.route.clone(),
                    destination,
                    endpoint: key.endpoint.to_string(),
                };
                (id, slot)
            })
            .collect();
        Status {
            generation: self.generation,
            rules: self.rules.display().to_string(),
            taken_at_ms: 0,
            routes,
            gateway_endpoints,
            events,
            metrics: Some(self.metrics_addr.to_string()),
            kernel_routes,
            counter_slots,
        }
    }

    /// One destination of a route, with what was observed for it.
    fn destination_status(
        &self,
        route: &traffic_shift_config::model::TcpRoute,
        dest: &traffic_shift_config::model::Destination,
    ) -> DestinationStatus {
        let endpoints: Vec<EndpointStatus> = dest
            .endpoints
            .iter()
            .map(|ep| {
                let (total, minute) = self.observed(self.slot(route, dest, ep));
                let state = if self.unhealthy.contains(&ep.addr) {
                    "unhealthy"
                } else if self.outliers.is_ejected(&ep.addr) {
                    "ejected"
                } else if route.gateway.is_some() {
                    self.socket_state(ep.addr)
                } else if is_failing(&minute) {
                    "failing"
                } else {
                    "ok"
                };
                EndpointStatus {
                    address: ep.addr.to_string(),
                    state: state.to_owned(),
                    connections_last_minute: minute.opened,
                    connections_total: total.opened,
                    failed_total: total.failed(),
                    failed_last_minute: minute.failed(),
                }
            })
            .collect();
        DestinationStatus {
            host: dest.host.clone(),
            subset: dest.subset.clone(),
            weight: dest.weight,
            connections_last_minute: endpoints.iter().map(|e| e.connections_last_minute).sum(),
            connections_total: endpoints.iter().map(|e| e.connections_total).sum(),
            failed_last_minute: endpoints.iter().map(|e| e.failed_last_minute).sum(),
            endpoints,
        }
    }

    /// `registered` or `missing`: whether the gateway holds the endpoint's socket.
    fn socket_state(&self, addr: SocketAddr) -> &'static str {
        if self.registered.contains_key(&compile::service_key(addr)) {
            "registered"
        } else {
            "missing"
        }
    }

    /// Writes the status file if anything in it changed, or every
    /// [`HEARTBEAT_MS`](crate::status::HEARTBEAT_MS) anyway, so `status`
    /// can tell a running agent from a file left behind (atomically: a
    /// reader sees the old or the new file, never half of one).
    ///
    /// After an `event` (rules, health, sockets, an admin request) at once;
    /// else (the counters' tick) when due: building it takes ~0.1 ms per
    /// route (0.7 s at 10 000 routes, which took a whole CPU every second),
    /// so it waits 20 times what it cost, at most `STATUS_MAX_WAIT`
    /// (under the readers' stale mark).
    fn write_status(&mut self, event: bool) {
        let now = std::time::Instant::now();
        if let Some((built, cost)) = self.status_built
            && !event
            && now.duration_since(built) < (cost * 20).min(STATUS_MAX_WAIT)
        {
            return;
        }
        let mut status = self.status();
        // Compared without the time, so an idle agent only rewrites it for the heartbeat.
        let text = serde_json::to_string(&status).expect("status serializes");
        self.status_built = Some((now, now.elapsed()));
        let heartbeat = Duration::from_millis(crate::status::HEARTBEAT_MS);
        let fresh = std::fs::metadata(&self.status_file)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < heartbeat);
        if text == self.last_status && fresh {
            return;
        }
        status.taken_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let stamped = serde_json::to_string(&status).expect("status serializes");
        let tmp = self.status_file.with_extension("tmp");
        let result = self
            .status_file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, &stamped))
            .and_then(|()| std::fs::rename(&tmp, &self.status_file));
        match result {
            Ok(()) => self.last_status = text,
            Err(err) => {
                tracing::warn!(file = %self.status_file.display(), %err, "cannot write the status file");
            }
        }
    }

    fn refuse(&mut self, path: &Path, text: Option<String>, err: &str) {
        let what = if text.is_some() {
            "refused"
        } else {
            "removal refused"
        };
        tracing::error!(file = %file_name(path), "{what}: {err}; the previous rules stay in force");
        self.shared().apply_errors += 1;
        self.event(path, what, Some(err));
        self.refused.insert(path.to_owned(), text);
    }

    fn event(&mut self, path: &Path, result: &str, error: Option<&str>) {
        if let Some(file) = &mut self.events {
            let line = serde_json::json!({
                "generation": self.generation,
                "file": file_name(path),
                "result": result,
                "error": error,
            });
            // One write per line, so a reader never sees half a line.
            let _ = file.write_all(format!("{line}\n").as_bytes());
        }
    }
}

/// Whether an endpoint's connects over a period all failed (some did, none
/// completed its handshake).
fn is_failing(period: &EndpointStats) -> bool {
    period.failed() > 0 && period.established == 0
}

/// Loads and attaches (or adopts) the datapath, and follows its log lines.
fn load_datapath(options: &AgentOptions, cgroup: &Path) -> Result<Datapath, AgentError> {
    let mut datapath = Datapath::load(
        cgroup,
        &options.netns,
        &options.xdp_iface,
        options.xdp_snat_ports,
        &options.bpffs,
        options.bpf_log_level,
        &options.limits,
    )?;
    datapath.set_unload_on_drop(options.unload_on_exit);
    if let Some(logger) = datapath.take_logger() {
        tokio::spawn(forward_kernel_logs(logger));
    }
    Ok(datapath)
}

/// Active health checks, unless --health-interval is 0.
fn start_prober(options: &AgentOptions) -> Result<Option<crate::health::Prober>, AgentError> {
    if options.health.health_interval.is_zero() {
        return Ok(None);
    }
    crate::health::Prober::start(options.netns.clone(), options.health.clone())
        .map(Some)
        .map_err(|source| AgentError::Netns {
            path: options.netns.clone(),
            source,
        })
}

/// The next probe verdict, or never when active checks are off.
async fn next_verdict(
    prober: &mut Option<crate::health::Prober>,
) -> Option<crate::health::Verdict> {
    match prober {
        Some(prober) => prober.verdicts.recv().await,
        None => std::future::pending().await,
    }
}

/// Says what stopping leaves behind.
fn log_stop(options: &AgentOptions) {
    if options.unload_on_exit {
        tracing::info!("stopping: detaching programs and removing pins");
    } else {
        tracing::info!(
            pins = %options.bpffs.display(),
            "stopping; the datapath stays pinned and keeps steering new connections (the next agent adopts it; `traffic-shift unload` removes it)"
        );
    }
}

/// Opens the `--events` file for appending.
fn open_events(path: &Path) -> Result<std::fs::File, AgentError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AgentError::Events {
            path: path.to_owned(),
            source,
        })
}

/// Serves `/metrics` on `addr`: returns the server task and the address it
/// listens on (port 0 picks one).
/// Watches the rules directory: a message on the channel per change (the
/// watcher stops when dropped).
fn watch_rules(
    rules: &Path,
) -> Result<(notify::RecommendedWatcher, mpsc::Receiver<()>), AgentError> {
    let (tx, rx) = mpsc::channel::<()>(16);
    let err = |source| AgentError::Watch {
        path: rules.to_owned(),
        source,
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        use notify::event::{AccessKind, AccessMode, EventKind};
        // inotify reports opens and reads too, the agent's own among them:
        // each rescan woke the next one (and rewrote the status), forever.
        // A file closed after writing is a change; other accesses are not.
        if let Ok(event) = &event
            && let EventKind::Access(kind) = event.kind
            && kind != AccessKind::Close(AccessMode::Write)
        {
            return;
        }
        let _ = tx.try_send(());
    })
    .map_err(err)?;
    watcher
        .watch(rules, notify::RecursiveMode::NonRecursive)
        .map_err(err)?;
    Ok((watcher, rx))
}

/// The L7 proxy on its listeners, and `/metrics` (with its request metrics).
async fn start_l7_and_metrics(
    options: &AgentOptions,
    datapath: &Datapath,
    shared: Arc<Mutex<Shared>>,
) -> Result<(l7::L7, tokio::task::JoinHandle<()>, SocketAddr), AgentError> {
    let proxy = traffic_shift_proxy::Proxy::new(traffic_shift_proxy::Options::default());
    let requests = proxy.metrics();
    let l7 = l7::L7::start(
        proxy,
        &options.netns,
        options.proxy_port,
        datapath.proxy_flows()?,
    )
    .map_err(|source| AgentError::Proxy {
        port: options.proxy_port,
        netns: options.netns.clone(),
        source,
    })?;
    let (server, addr) = start_metrics(datapath, options.metrics_addr, shared, requests).await?;
    tracing::info!(%addr, "serving /metrics");
    Ok((l7, server, addr))
}

async fn start_metrics(
    datapath: &Datapath,
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    requests: Arc<traffic_shift_proxy::RequestMetrics>,
) -> Result<(tokio::task::JoinHandle<()>, SocketAddr), AgentError> {
    let exporter = Arc::new(Exporter::new(datapath.counters_reader()?, shared));
    exporter.add_requests(requests);
    let err = |source| AgentError::Metrics { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
    let bound = listener.local_addr().map_err(err)?;
    Ok((tokio::spawn(metrics::serve(listener, exporter)), bound))
}

/// Passes the kernel's log lines (aya-log) to the log output as they come.
async fn forward_kernel_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring buffer's fd for its whole life and
    // always returns that fd; the AsyncFd owns the logger.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(err) => {
            tracing::warn!(err = %err, "cannot follow kernel log lines");
            return;
        }
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Every rules file directly in `dir` (as `config::load_dir` sees them), with its text.
fn read_rules_dir(dir: &Path) -> std::io::Result<Snapshot> {
    let mut files = Snapshot::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !config::is_rules_file(&path) {
            continue;
        }
        match config::read_rules_file(&path) {
            Ok(text) => {
                files.insert(path, Ok(text));
            }
            // Removed between read_dir and read: it is gone.
            Err(_) if !path.exists() => {}
            // Too big, not UTF-8, unreadable: refused like a file that does
            // not parse, and the others still go in.
            Err(err) => {
                files.insert(path, Err(err.to_string()));
            }
        }
    }
    Ok(files)
}

/// Gives the heap's free pages back to the kernel. An `apply` of 10 000
/// services parses, resolves and compiles the whole rule set a few times
/// over; glibc keeps what that freed (RSS stayed at the peak, ~2x what the
/// agent holds), so the agent returns it once it has handled an event.
fn release_freed_memory() {
    // SAFETY: malloc_trim only walks and trims glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
