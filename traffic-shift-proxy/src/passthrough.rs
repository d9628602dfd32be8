//! TLS passthrough by SNI: Gateway servers of protocol `TLS` in
//! `PASSTHROUGH` mode (and `TLSRoute`s). The route of a connection depends
//! on the SNI of its ClientHello, which comes after the connect, so no
//! connect-time or `sk_lookup` choice can make it: the agent accepts on
//! the port, peeks at the ClientHello (`MSG_PEEK`: nothing is consumed,
//! TLS is not terminated; a ClientHello split over several segments is
//! waited for, at most [`MAX_CLIENT_HELLO`] bytes and the hello timeout),
//! picks the route by SNI ([`sni::route_for`]: exact name, longest
//! wildcard, `*`), and hands the connection to [`Splice`], which picks the
//! endpoint with the route's weights (the same smooth, exact selection as
//! every other path) and connects. With a [`KernelSplicer`] (the agent's
//! `sk_skb` socket map) the kernel then moves the bytes both ways; without,
//! they are copied in user space, the ClientHello first. A ClientHello whose SNI no route takes (or bytes that
//! are no ClientHello) is accepted and then closed.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _, Interest},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use traffic_shift_config::model::TcpRoute;

use crate::{
    Splice,
    sni::{self, Hello, MAX_CLIENT_HELLO},
    splice::KernelSplicer,
};

/// A listener's routes: each route's SNI names and key.
type SniRoutes = Vec<(Vec<String>, Arc<str>)>;

/// The TLS passthrough ports' routes. Cheap to share (`Arc`); every
/// listener task holds one.
#[derive(Debug)]
pub struct Passthrough {
    splice: Arc<Splice>,
    /// By the address a listener is bound to (`0.0.0.0:8443`).
    routes: watch::Sender<Arc<HashMap<SocketAddr, SniRoutes>>>,
    hello_timeout: Duration,
    /// Splices in the kernel when set.
    kernel: Option<Arc<dyn KernelSplicer>>,
    /// Connections closed without a route: no ClientHello read in time,
    /// not a ClientHello, or an SNI no route takes.
    closed_unrouted: AtomicU64,
}

/// Why a connection got no route.
#[derive(Debug, thiserror::Error)]
enum NoRoute {
    #[error(transparent)]
    NotHello(#[from] sni::NotHello),
    #[error("the client closed before its ClientHello was complete")]
    Closed,
    #[error("no complete ClientHello within {0:?}")]
    Timeout(Duration),
    #[error("reading the ClientHello: {0}")]
    Io(#[from] std::io::Error),
}

impl Passthrough {
    /// No routes yet: connections are closed until [`Passthrough::update`].
    /// The routes' connections are made by `splice` (which must serve the
    /// same routes: [`Splice::update`]).
    pub fn new(
        splice: Arc<Splice>,
        hello_timeout: Duration,
        kernel: Option<Arc<dyn KernelSplicer>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            splice,
            routes: watch::Sender::new(Arc::new(HashMap::new())),
            hello_timeout,
            kernel,
            closed_unrouted: AtomicU64::new(0),
        })
    }

    /// Serves the TLS routes among `routes` (those with SNI names) from now
    /// on. Connections already spliced keep their endpoint.
    pub fn update(&self, routes: &[TcpRoute]) {
        let mut by_listener: HashMap<SocketAddr, SniRoutes> = HashMap::new();
        for route in routes.iter().filter(|r| r.is_tls()) {
            let key: Arc<str> = route.key.as_str().into();
            for listener in &route.listeners {
                by_listener
                    .entry(*listener)
                    .or_default()
                    .push((route.sni.clone(), Arc::clone(&key)));
            }
        }
        self.routes.send_replace(Arc::new(by_listener));
    }

    /// Connections closed without a route since the start.
    pub fn closed_unrouted(&self) -> u64 {
        self.closed_unrouted.load(Ordering::Relaxed)
    }

    /// Serves the connections accepted on `listener`. Runs until the task
    /// is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let at = match listener.local_addr() {
            Ok(at) => at,
            Err(err) => {
                tracing::error!(%err, "TLS passthrough: listener without an address");
                return;
            }
        };
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // E.g. out of file descriptors: wait, so it does not spin.
                    tracing::warn!(%err, %at, "TLS passthrough: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            tokio::spawn(Arc::clone(&self).connection(stream, at));
        }
    }

    /// One connection accepted on the listener bound to `at`.
    async fn connection(self: Arc<Self>, stream: TcpStream, at: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let hello = tokio::time::timeout(self.hello_timeout, peek_hello(&stream)).await;
        let (sni, peeked) = match hello {
            Ok(Ok(found)) => found,
            Ok(Err(why)) => return self.close(stream, at, None, &why.to_string(), 0).await,
            Err(_) => {
                let why = NoRoute::Timeout(self.hello_timeout).to_string();
                return self.close(stream, at, None, &why, 0).await;
            }
        };
        let key = {
            let routes = self.routes.borrow();
            routes
                .get(&at)
                .and_then(|routes| sni::route_for(routes, sni.as_deref()))
                .cloned()
        };
        let Some(key) = key else {
            let why = "no route takes this SNI";
            return self.close(stream, at, sni.as_deref(), why, peeked).await;
        };
        tracing::debug!(%at, sni = sni.as_deref().unwrap_or(""), route = %key, "TLS passthrough: routed");
        match &self.kernel {
            Some(kernel) => {
                let kernel = Arc::clone(kernel);
                let splice = Arc::clone(&self.splice);
                splice
                    .connection_in_kernel(stream, key, peeked, kernel)
                    .await;
            }
            None => Arc::clone(&self.splice).connection(stream, key).await,
        }
    }

    /// Closes a connection that got no route: the bytes peeked are read
    /// first, so the close is a FIN, not a reset.
    async fn close(
        &self,
        mut stream: TcpStream,
        at: SocketAddr,
        sni: Option<&str>,
        why: &str,
        peeked: usize,
    ) {
        self.closed_unrouted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%at, sni = sni.unwrap_or(""), "TLS passthrough: connection closed: {why}");
        let mut sink = vec![0u8; peeked.min(MAX_CLIENT_HELLO)];
        let _ = stream.read_exact(&mut sink).await;
        let _ = stream.shutdown().await;
    }
}

/// The SNI of the ClientHello the client sent first, and how many bytes it
/// took, peeked without consuming them: as more segments come, the bytes
/// are peeked again, up to [`MAX_CLIENT_HELLO`].
async fn peek_hello(stream: &TcpStream) -> Result<(Option<String>, usize), NoRoute> {
    let mut buf = vec![0u8; 1024];
    let mut seen = 0;
    loop {
        let n = stream
            .async_io(Interest::READABLE, || {
                let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
                let n = rustix::net::recv(stream, &mut buf, flags)?;
                if n == seen && n != 0 {
                    // Nothing new since the last peek: wait for more.
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            })
            .await?;
        if n == 0 {
            return Err(NoRoute::Closed);
        }
        seen = n;
        match sni::client_hello_sni(&buf[..n])? {
            Hello::Complete(sni) => return Ok((sni, n)),
            Hello::Incomplete { need } if need > MAX_CLIENT_HELLO => {
                return Err(sni::NotHello("the ClientHello is larger than 64 KiB").into());
            }
            Hello::Incomplete { need } if need > buf.len() => {
                buf.resize(need, 0);
            }
            Hello::Incomplete { .. } => {}
        }
    }
}

#[cfg(test)]
#[path = "passthrough_tests.rs"]
mod tests;
