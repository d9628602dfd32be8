//! The agent's side of the L7 proxy: its sockets and its configuration.
//!
//! The proxy runs on a tokio runtime of its own whose threads joined the
//! `--netns` namespace, so its upstream connections leave from there, as
//! its listeners accept there (the agent's own threads may be elsewhere).
//!
//! Mesh: one listener per address family on loopback in the `--netns`
//! namespace (`--proxy-port`), where the connect-time hook sends clients
//! of HTTP service addresses; the proxy asks `TS_PROXY_FLOWS` which service
//! each accepted connection was for. Gateway: one listener per address a
//! Gateway HTTP server accepts on, bound before the rules that need it go
//! in force (a port that cannot be bound refuses the rules, the previous
//! ones stay), closed when no rule needs it any more. Gateway servers on
//! unix sockets, TCP and HTTP: [`unix`](super::unix).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use std::os::fd::AsRawFd as _;

use tokio::{runtime::Runtime, task::JoinHandle};
use traffic_shift_config::model::RoutingModel;
use traffic_shift_datapath::{ProxyFlows, compile::ProxyAddrs, netns::listen_in};
use traffic_shift_proxy::{OriginalDst, Prepared, Proxy};

use super::{
    error::L7Error,
    tls::{TlsListeners, TlsPlan},
    unix::{UnixPlan, UnixSockets},
};

/// A rules change on the proxy's side, prepared but not served yet.
pub struct Plan {
    /// Gateway sockets bound for rules not yet in force.
    bound: Vec<(SocketAddr, String, std::net::TcpListener)>,
    /// The proxy's new configuration.
    proxy: Prepared,
    /// The gateway listener addresses the rules need.
    wanted: BTreeSet<SocketAddr>,
    /// The gateway servers on unix sockets.
    unix: UnixPlan,
    /// The TLS passthrough ports.
    tls: TlsPlan,
}

pub struct L7 {
    /// `None` only while dropping.
    runtime: Option<Runtime>,
    proxy: Arc<Proxy>,
    netns: PathBuf,
    /// Where mesh connections reach the proxy (the kernel tables say so).
    pub addrs: ProxyAddrs,
    mesh: Vec<JoinHandle<()>>,
    /// Gateway listener address -> its listener's key and the task serving it.
    gateways: BTreeMap<SocketAddr, (String, JoinHandle<()>)>,
    /// Gateway servers on unix sockets (TCP and HTTP).
    unix: UnixSockets,
    /// Gateway TLS passthrough ports (routes by SNI, spliced by the unix
    /// sockets' splicer).
    tls: TlsListeners,
}

impl L7 {
    /// Binds the mesh listeners on `port` (0: a free one per family) and
    /// starts serving them. An address family without loopback in the
    /// namespace is left out, with a warning: its HTTP service addresses
    /// then refuse connections.
    pub fn start(
        proxy: Arc<Proxy>,
        netns: &Path,
        port: u16,
        flows: ProxyFlows,
    ) -> std::io::Result<Self> {
        let runtime = runtime_in(netns)?;
        let mut addrs = ProxyAddrs::loopback(port);
        let flows = Arc::new(flows);
        let original_dst: OriginalDst = Arc::new(move |peer, local| flows.take(peer, local));
        let mut mesh = Vec::new();
        for addr in [&mut addrs.v4, &mut addrs.v6] {
            let listener = match listen_in(netns, *addr) {
                Ok(listener) => listener,
                Err(err) if addr.is_ipv6() => {
                    tracing::warn!(%addr, %err, "L7 proxy: no IPv6 loopback; IPv6 HTTP service addresses will refuse connections");
                    continue;
                }
                Err(err) => return Err(err),
            };
            *addr = listener.local_addr()?;
            let listener = {
                let _runtime = runtime.enter();
                tokio::net::TcpListener::from_std(listener)?
            };
            mesh.push(
                runtime.spawn(Arc::clone(&proxy).serve_mesh(listener, Arc::clone(&original_dst))),
            );
            tracing::info!(%addr, "L7 proxy: taking connections to HTTP service addresses");
        }
        let unix = UnixSockets::new(
            netns,
            traffic_shift_proxy::Options::default().connect_timeout,
        );
        let tls = TlsListeners::new(netns, unix.splice());
        Ok(Self {
            runtime: Some(runtime),
            proxy,
            netns: netns.to_owned(),
            addrs,
            mesh,
            gateways: BTreeMap::new(),
            unix,
            tls,
        })
    }

    /// Everything of a rules change that can fail on the proxy's side, with
    /// nothing served yet: binds the gateway listeners `model` needs that
    /// are not bound yet, and builds the proxy's configuration from
    /// `usable` (the model without the endpoints health took out).
    pub fn prepare(&self, model: &RoutingModel, usable: &RoutingModel) -> Result<Plan, L7Error> {
        let mut bound = Vec::new();
        for listener in model.http.iter().filter(|l| l.gateway.is_some()) {
            for addr in &listener.listeners {
                if self.gateways.contains_key(addr) {
                    continue;
                }
                let socket = listen_in(&self.netns, *addr).map_err(|source| L7Error::Bind {
                    listener: listener.key.clone(),
                    addr: *addr,
                    source,
                })?;
                bound.push((*addr, listener.key.clone(), socket));
            }
        }
        let unix = self.unix.prepare(model, usable)?;
        let tls = self.tls.prepare(model)?;
        let proxy = self.prepare_update(usable)?;
        let wanted = usable
            .http
            .iter()
            .filter(|l| l.gateway.is_some())
            .flat_map(|l| l.listeners.iter().copied())
            .collect();
        Ok(Plan {
            bound,
            proxy,
            wanted,
            unix,
            tls,
        })
    }

    /// The proxy's configuration for `usable`, not served yet.
    pub fn prepare_update(&self, usable: &RoutingModel) -> Result<Prepared, L7Error> {
        #[cfg(feature = "failpoints")]
        fail::fail_point!("l7-prepare", |arg| Err(L7Error::Injected(
            arg.unwrap_or_else(|| "injected".to_owned())
        )));
        Ok(self.proxy.prepare(usable.http.clone())?)
    }

    /// Serves a configuration [`Self::prepare_update`] built for `usable`
    /// (endpoint health changed), and the unix sockets' TCP routes of it.
    /// Requests in flight finish on the one they started with.
    pub fn install(&self, prepared: Prepared, usable: &RoutingModel) {
        self.proxy.install(prepared);
        self.unix.update(usable);
    }

    /// The rules in force changed: serves what [`Self::prepare`] made
    /// (the new configuration and gateway sockets) and closes the listeners
    /// no longer needed. Cannot fail: it runs after the kernel took the change.
    pub fn commit(&mut self, plan: Plan) {
        let Plan {
            bound,
            proxy,
            wanted,
            unix,
            tls,
        } = plan;
        self.proxy.install(proxy);
        let runtime = self.runtime.as_ref().expect("set until dropped");
        self.unix.commit(unix, runtime, &self.proxy);
        self.tls.commit(tls, runtime);
        for (addr, key, socket) in bound {
            let socket = {
                let _runtime = runtime.enter();
                tokio::net::TcpListener::from_std(socket)
            };
            match socket {
                Ok(socket) => {
                    tracing::info!(%addr, listener = %key, "L7 proxy: gateway listener open");
                    let task =
                        runtime.spawn(Arc::clone(&self.proxy).serve_gateway(socket, key.clone()));
                    self.gateways.insert(addr, (key, task));
                }
                Err(err) => tracing::error!(%addr, %err, "L7 proxy: cannot serve a gateway socket"),
            }
        }
        self.gateways.retain(|addr, (key, task)| {
            let keep = wanted.contains(addr);
            if !keep {
                task.abort();
                tracing::info!(%addr, listener = %key, "L7 proxy: gateway listener closed");
            }
            keep
        });
    }

    /// The routes on unix sockets, for the metrics exporter.
    pub fn splice(&self) -> Arc<traffic_shift_proxy::Splice> {
        self.unix.splice()
    }

    /// Connections opened per unix-socket route and endpoint.
    pub fn unix_connections(&self) -> super::observe::UnixConnections {
        self.unix.connections()
    }

    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }
}

/// A runtime whose every thread joined the network namespace at `netns`.
fn runtime_in(netns: &Path) -> std::io::Result<Runtime> {
    let namespace = Arc::new(std::fs::File::open(netns)?);
    let path = netns.to_owned();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("l7-proxy")
        .enable_all()
        .on_thread_start(move || {
            // SAFETY: setns on this new thread only, with a namespace fd the
            // closure keeps open.
            if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                tracing::error!(netns = %path.display(), err = %std::io::Error::last_os_error(), "L7 proxy thread cannot join the namespace; its upstream connections will fail");
            }
        })
        .build()
}

impl Drop for L7 {
    fn drop(&mut self) {
        for task in self
            .mesh
            .iter()
            .chain(self.gateways.values().map(|(_, t)| t))
        {
            task.abort();
        }
        // Dropped from the agent's async context: a runtime may not block there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
