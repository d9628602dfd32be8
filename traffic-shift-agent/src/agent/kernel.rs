//! The kernel stage: the datapath (programs and maps) and the listening
//! sockets of the gateway's endpoints that it holds.
//!
//! A rules change is [`Kernel::plan`]ned first (compiled for this node:
//! can refuse, changes nothing), then [`Kernel::write`]n in one update,
//! then [`Kernel::adopt`]ed as the state in force.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use traffic_shift_common::ServiceKey;
use traffic_shift_config::model::{Destination, Endpoint, RoutingModel, TcpRoute};
use traffic_shift_datapath::{
    ApplyReport, Datapath,
    compile::{self, Compiled, ProxyAddrs},
    limits::Limits,
    sockets,
    stats::StatIds,
};

use super::{AgentOptions, error::InstallError};
use crate::status::GatewayEndpoint;

pub struct Kernel {
    pub datapath: Datapath,
    /// The `--netns` namespace: its addresses are local, its listeners
    /// are the gateway's endpoints.
    pub netns: PathBuf,
    /// `--xdp-iface` was given: gateway routes to other hosts go to XDP.
    xdp: bool,
    limits: Limits,
    /// Counter slots of the rules in force (and retired ones).
    pub stat_ids: StatIds,
    /// Endpoints of gateway routes on this node: their listening sockets are wanted.
    gateway_endpoints: BTreeMap<ServiceKey, SocketAddr>,
    /// Sockets registered for them, so a backend restarted with a new
    /// socket (another inode) is noticed.
    registered: BTreeMap<ServiceKey, sockets::Listener>,
}

/// A rules change compiled for this node, not written yet.
pub struct Plan {
    pub compiled: Compiled,
    /// Gateway endpoints on this node (sk_lookup hands them connections).
    local: BTreeMap<ServiceKey, SocketAddr>,
    /// Next hops of gateway endpoints on other hosts (the XDP gateway's).
    remote: BTreeSet<IpAddr>,
}

impl Kernel {
    pub fn new(datapath: Datapath, options: &AgentOptions) -> Self {
        Self {
            datapath,
            netns: options.netns.clone(),
            xdp: !options.xdp_iface.is_empty(),
            limits: options.limits,
            stat_ids: StatIds::with_capacity(options.limits.max_counters),
            gateway_endpoints: BTreeMap::new(),
            registered: BTreeMap::new(),
        }
    }

    fn is_local(&self) -> Result<impl Fn(IpAddr) -> bool + use<>, InstallError> {
        traffic_shift_datapath::netns::is_local_in(&self.netns).map_err(|source| {
            InstallError::LocalAddresses {
                netns: self.netns.clone(),
                source,
            }
        })
    }

    /// The tables for `usable` (the rules in force without the endpoints
    /// health took out), or why they do not fit this node.
    pub fn compile(
        &self,
        usable: &RoutingModel,
        proxy: &ProxyAddrs,
    ) -> Result<Compiled, InstallError> {
        self.compile_with(usable, proxy, &self.is_local()?)
    }

    fn compile_with(
        &self,
        usable: &RoutingModel,
        proxy: &ProxyAddrs,
        is_local: &impl Fn(IpAddr) -> bool,
    ) -> Result<Compiled, InstallError> {
        Ok(compile::compile(
            usable,
            is_local,
            self.xdp,
            &self.stat_ids,
            &self.limits,
            proxy,
        )?)
    }

    /// Compiles `usable` and sorts the gateway endpoints of `model` into
    /// local (sockets) and remote (XDP next hops). Changes nothing.
    pub fn plan(
        &self,
        model: &RoutingModel,
        usable: &RoutingModel,
        proxy: &ProxyAddrs,
    ) -> Result<Plan, InstallError> {
        let is_local = self.is_local()?;
        let compiled = self.compile_with(usable, proxy, &is_local)?;
        // Gateway endpoints on this node are handed sockets (sk_lookup);
        // those on other hosts are the XDP gateway's. A route on a unix
        // socket connects in user space: neither.
        let (local, remote): (Vec<SocketAddr>, Vec<SocketAddr>) = model
            .routes
            .iter()
            .filter(|r| r.gateway.is_some() && !r.is_user_space())
            .flat_map(|r| r.destinations.iter().flat_map(|d| &d.endpoints))
            .map(|e| e.addr)
            .partition(|addr| is_local(addr.ip()));
        Ok(Plan {
            compiled,
            local: local
                .into_iter()
                .map(|addr| (compile::service_key(addr), addr))
                .collect(),
            remote: remote.iter().map(SocketAddr::ip).collect(),
        })
    }

    /// Writes `plan` to the kernel in one update: the sockets of new
    /// gateway endpoints first (the first connection after the change
    /// finds them), the XDP endpoints' next hops resolved, then the tables.
    pub fn write(&mut self, plan: &Plan) -> Result<ApplyReport, InstallError> {
        self.sync_sockets(&plan.local, false);
        // The XDP program cannot resolve a next hop's MAC address (it drops
        // the packet, `xdp_no_neighbour`): have the stack resolve the XDP
        // endpoints' before their tables go in, whether or not health
        // probes run.
        if self.xdp
            && !plan.remote.is_empty()
            && let Err(err) =
                traffic_shift_datapath::netns::resolve_neighbours(&self.netns, &plan.remote)
        {
            tracing::warn!(%err, "cannot resolve the XDP endpoints' next hops; their first SYNs may be dropped");
        }
        self.apply(&plan.compiled)
    }

    /// Writes what differs between `compiled` and the kernel's tables.
    pub fn apply(&mut self, compiled: &Compiled) -> Result<ApplyReport, InstallError> {
        Ok(self.datapath.apply(compiled)?)
    }

    /// `plan`, written, is the state in force: its counter slots, and its
    /// gateway endpoints' sockets (stale ones unregistered).
    pub fn adopt(&mut self, plan: Plan) {
        self.stat_ids = plan.compiled.stat_ids;
        self.gateway_endpoints = plan.local;
        self.register_sockets();
    }

    /// The counter slot of an endpoint of a route's destination.
    pub fn slot(&self, route: &TcpRoute, dest: &Destination, ep: &Endpoint) -> Option<u32> {
        self.stat_ids.get(&compile::stat_key(route, dest, ep.addr))
    }

    /// [`Self::register_sockets`]; whether the registered endpoints changed.
    /// The status shows which endpoint sockets are registered and nothing
    /// else this changes: with 10 000 services it is 5 MB to render, so not
    /// four times a second for nothing.
    pub fn register_sockets_changed(&mut self) -> bool {
        let before: Vec<ServiceKey> = self.registered.keys().copied().collect();
        self.register_sockets();
        !self.registered.keys().eq(before.iter())
    }

    /// Finds the listening socket of every gateway endpoint and registers a
    /// duplicate of it (pidfd_getfd) for the gateway; a backend that
    /// restarted with a new socket gets the new one registered. A socket the
    /// backend closed leaves the kernel map by itself.
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

    /// Whether `addr` is a gateway endpoint on this node (one with a socket).
    pub fn is_gateway_endpoint(&self, addr: SocketAddr) -> bool {
        self.gateway_endpoints
            .contains_key(&compile::service_key(addr))
    }

    /// Whether the gateway holds the socket of endpoint `addr`.
    pub fn has_socket(&self, addr: SocketAddr) -> bool {
        self.registered.contains_key(&compile::service_key(addr))
    }

    /// The gateway endpoints, registered or missing, for the status.
    pub fn gateway_status(&self) -> Vec<GatewayEndpoint> {
        self.gateway_endpoints
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
            .collect()
    }
}

/// Loads and attaches (or adopts) the datapath, and follows its log lines.
pub fn load(options: &AgentOptions, cgroup: &Path) -> Result<Datapath, super::AgentError> {
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
