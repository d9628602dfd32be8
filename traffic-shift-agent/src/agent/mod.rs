//! The agent: keeps the kernel and the L7 proxy in step with the rules.
//!
//! Stages, one job each, owned by [`Agent`]:
//! - [`sources`]: the rules directory's files (each accepted or refused
//!   whole; a refused file leaves its previous version in force) and the
//!   resources applied over the admin socket ([`control`]);
//! - [`install`]: a resolved model put in force, all or nothing, kernel
//!   and proxy together;
//! - [`kernel`]: the datapath and the gateway endpoints' sockets;
//! - [`l7`]: the L7 proxy's listeners and configuration;
//! - [`unix`]: Gateway servers on unix sockets (TCP routes spliced in user
//!   space, HTTP listeners of the proxy);
//! - [`health`]: endpoints out of the selection (probes, outlier detection);
//! - [`observe`]: counter samples, the metrics exporter's labels, the status file;
//! - [`drain`]: closing connections to endpoints that left the rules.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::signal::unix::SignalKind;
use traffic_shift_config::{NodeLabels, NotServed, model::RoutingModel};
use traffic_shift_datapath::Datapath;

mod control;
mod drain;
mod error;
mod fleet_rollouts;
mod health;
mod install;
mod kernel;
mod l7;
mod observe;
mod options;
mod rollouts;
mod sampler;
pub mod simulate;
mod sources;
mod status_file;
mod store;
mod tls;
mod unix;

use self::{
    drain::Drain,
    health::Health,
    kernel::Kernel,
    observe::Observer,
    sources::{Sources, open_events, watch_rules},
};
pub use self::{
    error::{AgentError, ApplyError, InstallError, L7Error},
    options::{AgentOptions, DEFAULT_STATUS_FILE, StoreTlsArgs},
};
use crate::metrics::{self, Exporter, Shared};

/// The agent's state: its stages, the model in force and its generation.
struct Agent {
    sources: Sources,
    kernel: Kernel,
    l7: l7::L7,
    health: Health,
    observer: Observer,
    drain: Drain,
    /// `--node-labels`: which Gateways this node serves (`None`: every one,
    /// selectors not applied).
    node_labels: Option<NodeLabels>,
    /// `--namespace`: the namespace whose proxy this node is (`None`:
    /// every VirtualService and DestinationRule applies).
    namespace: Option<String>,
    /// The Gateways of the rules in force that this node does not serve.
    not_served: Vec<NotServed>,
    /// The model in force: what this node serves of the rules (shared
    /// with the metrics exporter, whose counter slots it labels).
    model: Arc<RoutingModel>,
    /// Rules changes put in force so far.
    generation: u64,
    /// The rollouts' controller: its weights are laid over every model
    /// put in force.
    rollouts: rollouts::Rollouts,
    /// With `--store`: the rollouts' states, driver and commands in the
    /// store (the controller runs only while this node drives).
    fleet_rollouts: Option<fleet_rollouts::FleetRollouts>,
    /// The applied set's state file of the change being put in force,
    /// written while it compiles: waited for before the kernel is written.
    persisting: Option<crate::applied::PendingWrite>,
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
        .as_ref()
        .map(|rules| {
            rules.canonicalize().map_err(|source| AgentError::RulesDir {
                path: rules.clone(),
                source,
            })
        })
        .transpose()?;
    let events = options.events.as_deref().map(open_events).transpose()?;
    let (applied, admin_server, mut admin_calls) = control::open(&options)?;
    #[cfg(feature = "failpoints")]
    for failpoint in &options.failpoint {
        let (name, actions) = failpoint.split_once('=').unwrap_or((failpoint, ""));
        fail::cfg(name, actions).map_err(AgentError::Failpoint)?;
    }
    let cgroup = match &options.cgroup {
        Some(cgroup) => cgroup.clone(),
        None => traffic_shift_datapath::default_cgroup().ok_or(AgentError::NoCgroup2)?,
    };
    let datapath = kernel::load(&options, &cgroup)?;
    let shared = Arc::new(Mutex::new(Shared {
        status_file: options.status_file.clone(),
        ..Shared::default()
    }));
    let (l7, metrics_server, metrics_addr) =
        start_l7_and_metrics(&options, &datapath, Arc::clone(&shared)).await?;
    tracing::info!(
        cgroup = %cgroup.display(),
        netns = %options.netns.display(),
        pins = %datapath.pin_dir().display(),
        "programs attached"
    );
    let (fleet, mut store_events, fleet_rollouts, mut rollouts_io) =
        store::open(&options).await.map_err(AgentError::Store)?;
    let (rollouts, mut rollout_answers) =
        rollouts::Rollouts::for_agent(&options.state_dir, fleet_rollouts.is_some())?;
    let mut agent = Agent {
        sources: Sources::new(rules.clone(), events, applied, fleet),
        kernel: Kernel::new(datapath, &options),
        l7,
        health: Health::start(&options)?,
        observer: Observer::new(shared, metrics_addr, options.status_file.clone()),
        drain: Drain::new(options.drain_timeout),
        node_labels: options.node_labels.clone(),
        namespace: options.namespace.clone(),
        not_served: Vec::new(),
        model: Arc::default(),
        generation: 0,
        rollouts,
        fleet_rollouts,
        persisting: None,
    };
    log_node_labels(options.node_labels.as_ref());

    let (_watcher, mut rx) = watch_rules(rules.as_deref())?;

    agent.start(&admin_server);

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
                agent.rollout_tick();
                false
            }
            () = sleep_until(agent.rollout_wake()) => { agent.rollout_tick(); true }
            Some(answer) = rollout_answers.recv() => { agent.rollout_answer(answer); true }
            // No status to write unless a socket came or went (see there).
            _ = socket_tick.tick() => if agent.kernel.register_sockets_changed() { agent.observer.sockets_changed(); true } else { continue },
            Some(verdict) = agent.health.next_verdict() => { agent.health_changed(verdict); true }
            Some(call) = admin_calls.recv() => { agent.serve_admin(call); false }
            Some(event) = next_store_event(&mut store_events) => { agent.store_event(event); true }
            Some(event) = next_rollouts_event(&mut rollouts_io) => { agent.fleet_rollouts_event(event); true }
        };
        // An `apply` is not an event (it answers its caller first), and its
        // status may be written a turn later: the memory is given back after
        // whichever write follows a change of the rules.
        if agent.write_status(event) || event {
            release_freed_memory();
        }
    }
    metrics_server.abort();
    log_stop(&options);
    agent.stop().await;
    drop(agent);
    Ok(())
}

impl Agent {
    /// After the loop: the status file removed; the rollouts' leader key
    /// given up if this node drives.
    async fn stop(&self) {
        let path = self.observer.status.path();
        for file in [
            crate::status::files::delta_path(path),
            crate::status::summary_path(path),
            path.to_owned(),
        ] {
            let _ = std::fs::remove_file(file);
        }
        if let Some(rollouts) = &self.fleet_rollouts {
            rollouts.resign().await;
        }
    }

    /// The rules in force at start: the directory's, the applied set, the
    /// store's last snapshot; then the first status.
    fn start(&mut self, admin_server: &crate::admin::AdminServer) {
        // The first apply registers the gateway endpoints' sockets too.
        self.rescan();
        self.restore_applied(admin_server);
        self.restore_store_snapshot();
        self.sample();
        self.write_status(true);
        self.publish_node_status();
        tracing::info!(rules = %self.rules_description(), files = self.sources.accepted.len(), "serving; watching for changes");
    }
}

/// Until `at`; never, without one.
async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The next event of the store's follower; never, without a store.
async fn next_store_event(
    events: &mut Option<tokio::sync::mpsc::Receiver<store::StoreEvent>>,
) -> Option<store::StoreEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// The next event of the fleet's rollouts (a view, an election, the
/// nodes' statuses changed); never, without a store.
async fn next_rollouts_event(
    io: &mut Option<fleet_rollouts::RolloutsIo>,
) -> Option<fleet_rollouts::RolloutsEvent> {
    match io {
        Some(io) => tokio::select! {
            event = io.events.recv() => event,
            Ok(()) = io.nodes.changed() => {
                Some(fleet_rollouts::RolloutsEvent::Nodes(std::sync::Arc::clone(&io.nodes.borrow_and_update())))
            }
        },
        None => std::future::pending().await,
    }
}

/// This host's name: the node's name in the store unless `--node` says.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Says once which Gateways this node serves.
fn log_node_labels(labels: Option<&NodeLabels>) {
    if let Some(labels) = labels {
        tracing::info!(
            node_labels = %labels,
            "serving the Gateways whose selector matches the node labels"
        );
    } else {
        tracing::info!(
            "no --node-labels: Gateway selectors are not applied, this node serves every Gateway"
        );
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

/// The L7 proxy on its listeners, and `/metrics` (with its request metrics).
async fn start_l7_and_metrics(
    options: &AgentOptions,
    datapath: &Datapath,
    shared: Arc<Mutex<Shared>>,
) -> Result<(l7::L7, tokio::task::JoinHandle<()>, SocketAddr), AgentError> {
    let proxy = traffic_shift_proxy::Proxy::new(traffic_shift_proxy::Options {
        buffer_limit_bytes: options.http_buffer_limit,
        ..traffic_shift_proxy::Options::default()
    });
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
    let (server, addr) = start_metrics(
        datapath,
        options.metrics_addr,
        shared,
        requests,
        l7.splice(),
    )
    .await?;
    tracing::info!(%addr, "serving /metrics");
    Ok((l7, server, addr))
}

async fn start_metrics(
    datapath: &Datapath,
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    requests: Arc<traffic_shift_proxy::RequestMetrics>,
    unix: Arc<traffic_shift_proxy::Splice>,
) -> Result<(tokio::task::JoinHandle<()>, SocketAddr), AgentError> {
    let exporter = Arc::new(Exporter::new(datapath.counters_reader()?, shared));
    exporter.add_requests(requests);
    exporter.add_unix(unix);
    let err = |source| AgentError::Metrics { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
    let bound = listener.local_addr().map_err(err)?;
    Ok((tokio::spawn(metrics::serve(listener, exporter)), bound))
}

/// Gives the heap's free pages back to the kernel. An `apply` of 10 000
/// services parses, resolves and compiles the whole rule set a few times
/// over; what that freed goes back once the agent has handled an event,
/// not a decay period later.
fn release_freed_memory() {
    // jemalloc's `MALLCTL_ARENAS_ALL`: every arena.
    const PURGE_ALL: &std::ffi::CStr = c"arena.4096.purge";
    // SAFETY: a void mallctl: no old or new value is read or written.
    let failed = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if failed != 0 {
        tracing::debug!(errno = failed, "jemalloc did not purge its arenas");
    }
}
