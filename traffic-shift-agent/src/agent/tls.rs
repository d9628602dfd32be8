//! Gateway TLS passthrough ports (a `tls` rule on a `TLS` server in
//! `PASSTHROUGH` mode, or a `TLSRoute`): the listening sockets, served by
//! the proxy crate's [`Passthrough`] (the SNI read from the ClientHello
//! without terminating TLS; the route's endpoint picked and the bytes
//! spliced by the same [`Splice`](traffic_shift_proxy::Splice) as the unix
//! sockets' TCP routes, which [`unix`](super::unix) keeps up to date with
//! the TLS routes too). After the pick, the bytes are spliced in the kernel
//! ([`in_kernel`]: an `sk_skb` stream verdict program on a socket map), or
//! copied in user space where this kernel refuses it.
//!
//! As for the L7 proxy's gateway listeners: an address the rules need is
//! bound (in `--netns`) before they go in force, and a port that cannot be
//! bound refuses the change, the previous rules stay; a listener no rule
//! needs any more is closed. Connections already spliced stay open.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    os::fd::{AsRawFd as _, BorrowedFd},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{runtime::Runtime, task::JoinHandle};
use traffic_shift_config::model::{RoutingModel, TcpRoute};
use traffic_shift_datapath::netns::listen_in;
use traffic_shift_proxy::{KernelSplicer, Passthrough, Splice};

use super::error::L7Error;

/// How long a client has to send its whole ClientHello after connecting
/// (Envoy's TLS inspector waits as long as its listener filter timeout, 15 s
/// by default).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(15);

/// The TLS passthrough sockets a rules change needs, bound but not served.
pub struct TlsPlan {
    bound: Vec<(SocketAddr, String, std::net::TcpListener)>,
    wanted: BTreeSet<SocketAddr>,
    routes: Vec<TcpRoute>,
}

/// The TLS passthrough listeners.
pub struct TlsListeners {
    /// Made with the first TLS route, when the kernel splice is loaded: an
    /// agent that serves none loads no program and makes no socket map.
    passthrough: Option<Arc<Passthrough>>,
    splice: Arc<Splice>,
    netns: PathBuf,
    open: BTreeMap<SocketAddr, JoinHandle<()>>,
}

impl TlsListeners {
    pub fn new(netns: &Path, splice: Arc<Splice>) -> Self {
        Self {
            passthrough: None,
            splice,
            netns: netns.to_owned(),
            open: BTreeMap::new(),
        }
    }

    /// Binds the addresses the TLS routes of `model` accept on that are
    /// not open yet; nothing is served.
    pub fn prepare(&self, model: &RoutingModel) -> Result<TlsPlan, L7Error> {
        let routes: Vec<TcpRoute> = model
            .routes
            .iter()
            .filter(|r| r.is_tls())
            .cloned()
            .collect();
        let mut plan = TlsPlan {
            bound: Vec::new(),
            wanted: routes
                .iter()
                .flat_map(|r| r.listeners.iter().copied())
                .collect(),
            routes,
        };
        for route in &plan.routes {
            for addr in &route.listeners {
                if self.open.contains_key(addr) || plan.bound.iter().any(|(a, ..)| a == addr) {
                    continue;
                }
                let socket = listen_in(&self.netns, *addr).map_err(|source| L7Error::Bind {
                    listener: route.key.clone(),
                    addr: *addr,
                    source,
                })?;
                plan.bound.push((*addr, route.key.clone(), socket));
            }
        }
        Ok(plan)
    }

    /// The rules in force changed: the new routes by SNI, the listeners
    /// [`Self::prepare`] bound served, those no longer needed closed.
    /// Cannot fail: it runs after the kernel took the change.
    pub fn commit(&mut self, plan: TlsPlan, runtime: &Runtime) {
        if self.passthrough.is_none() && !plan.routes.is_empty() {
            self.passthrough = Some(Passthrough::new(
                Arc::clone(&self.splice),
                HELLO_TIMEOUT,
                in_kernel(),
            ));
        }
        let Some(passthrough) = &self.passthrough else {
            // No TLS route yet: nothing was bound, nothing is open.
            return;
        };
        passthrough.update(&plan.routes);
        for (addr, key, socket) in plan.bound {
            let socket = {
                let _runtime = runtime.enter();
                tokio::net::TcpListener::from_std(socket)
            };
            match socket {
                Ok(socket) => {
                    tracing::info!(%addr, route = %key, "TLS passthrough listener open");
                    let task = runtime.spawn(Arc::clone(passthrough).serve(socket));
                    self.open.insert(addr, task);
                }
                Err(err) => tracing::error!(%addr, %err, "cannot serve a TLS passthrough socket"),
            }
        }
        self.open.retain(|addr, task| {
            let keep = plan.wanted.contains(addr);
            if !keep {
                task.abort();
                tracing::info!(%addr, "TLS passthrough listener closed");
            }
            keep
        });
    }
}

impl Drop for TlsListeners {
    fn drop(&mut self) {
        for task in self.open.values() {
            task.abort();
        }
    }
}

/// The datapath's `sk_skb` socket map, as the proxy crate's splicer.
#[derive(Debug)]
pub struct InKernel(pub traffic_shift_datapath::kernel_splice::KernelSplice);

impl KernelSplicer for InKernel {
    fn pair(&self, a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> std::io::Result<(u64, u64)> {
        self.0.pair(&a, &b)
    }

    fn unpair(&self, pair: (u64, u64)) {
        self.0.unpair(pair);
    }

    fn bytes(&self, socket: BorrowedFd<'_>) -> Option<(u64, u64)> {
        // SAFETY: an all-zero tcp_info is valid; getsockopt writes at most
        // `len` bytes into it, on a socket the caller borrows.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>()).ok()?;
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&raw mut info).cast(),
                &raw mut len,
            )
        };
        (rc == 0).then_some((info.tcpi_bytes_received, info.tcpi_bytes_acked))
    }
}

/// The kernel splice, or `None` (with a warning) when this kernel refuses
/// it: then the bytes are copied in user space.
fn in_kernel() -> Option<Arc<dyn KernelSplicer>> {
    match traffic_shift_datapath::kernel_splice::KernelSplice::load() {
        Ok(splice) => {
            tracing::info!("TLS passthrough: spliced in the kernel (sk_skb socket map)");
            Some(Arc::new(InKernel(splice)))
        }
        Err(err) => {
            tracing::warn!(%err, "TLS passthrough: the kernel splice is not available; bytes are copied in user space");
            None
        }
    }
}
