//! `traffic-shift fleet simulate` (hidden; for the convergence bench,
//! scenario 8): many nodes in one process, each the agent's own store side
//! without a datapath. Each node runs the agent's follower and reporter
//! ([`store::start_on`]), reads each revision as the agent does
//! ([`store::Fleet::event`], [`store::Fleet::read`]), resolves it and
//! compiles it to the kernel tables with the datapath crate's pure
//! compile (what [`Kernel::plan`](super::kernel::Kernel::plan) calls),
//! writes no map, then settles and reports the revision in force like an
//! agent ([`store::Fleet::settle`], [`store::Fleet::publish`]).
//!
//! By default the nodes of a process share one etcd client (one gRPC
//! channel, a connection per member), each node with its own watch, lease
//! and keep-alive streams on it: what etcd's work grows with is there per
//! node, while a thousand clients' connections and HTTP/2 pings on the
//! same two cores would measure the simulator more than the store.
//! `--client-per-node` gives every node its own client, as real agents
//! have.

use std::{net::IpAddr, path::Path, sync::Arc};

use tokio::sync::mpsc;
use traffic_shift_datapath::{
    compile::{self, ProxyAddrs},
    limits::Limits,
    stats::StatIds,
};
use traffic_shift_store::{Store, StoreError, StoreUrl, TlsFiles};

use super::store::{self, Fleet, StoreEvent};

/// What `fleet simulate` runs.
#[derive(Clone, Debug)]
pub struct Simulation {
    pub url: StoreUrl,
    pub prefix: String,
    pub tls: TlsFiles,
    /// How many nodes.
    pub nodes: usize,
    /// Node `i` is named `{name_prefix}{i}`.
    pub name_prefix: String,
    /// One etcd client per node instead of one for all.
    pub client_per_node: bool,
}

/// Why the simulation could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read this host's addresses: {0}")]
    Addresses(#[source] std::io::Error),
}

/// Starts the nodes and runs until SIGINT or SIGTERM.
pub async fn simulate(simulation: Simulation) -> Result<(), SimulateError> {
    let Simulation {
        url,
        prefix,
        tls,
        nodes,
        name_prefix,
        client_per_node,
    } = simulation;
    // The host's addresses, read once: they are every simulated node's.
    let local = traffic_shift_datapath::netns::is_local_in(Path::new("/proc/self/ns/net"))
        .map_err(SimulateError::Addresses)?;
    let local: Arc<dyn Fn(IpAddr) -> bool + Send + Sync> = Arc::new(local);
    let shared = Store::connect(&url, &prefix, &tls).await?;
    for i in 0..nodes {
        let store = if client_per_node {
            Store::connect(&url, &prefix, &tls).await?
        } else {
            shared.clone()
        };
        let (fleet, events) =
            store::start_on(store, &url.to_string(), &format!("{name_prefix}{i}"));
        tokio::spawn(node(fleet, events, Arc::clone(&local)));
    }
    tracing::info!(%url, %prefix, nodes, client_per_node, "simulated nodes started");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

/// One simulated node: each revision read, resolved and compiled (no map
/// written), and its status published for the reporter.
async fn node(
    mut fleet: Fleet,
    mut events: mpsc::Receiver<StoreEvent>,
    is_local: Arc<dyn Fn(IpAddr) -> bool + Send + Sync>,
) {
    let limits = Limits::default();
    let proxy = ProxyAddrs::default();
    let mut stat_ids = StatIds::with_capacity(limits.max_counters);
    let mut routes = 0;
    while let Some(event) = events.recv().await {
        let Some((revision, resources)) = fleet.event(event) else {
            continue;
        };
        let result = fleet.read(&resources).and_then(|(entries, file)| {
            let model = traffic_shift_config::resolve(std::slice::from_ref(&file))
                .map_err(|e| e.to_string())?;
            let compiled = compile::compile(&model, &*is_local, false, &stat_ids, &limits, &proxy)
                .map_err(|e| e.to_string())?;
            stat_ids = compiled.stat_ids;
            routes = model.routes.len() + model.http.len();
            Ok((entries, file))
        });
        fleet.settle(revision, &resources, result);
        fleet.publish(routes);
    }
}
