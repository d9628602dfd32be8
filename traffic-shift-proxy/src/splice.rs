//! TCP routes served in user space: a Gateway server bound to a unix socket
//! (`bind: unix://<path>`), which neither kernel path can take (`sk_lookup`
//! and XDP steer IP connections). Each connection accepted there picks a
//! destination and an endpoint of its route exactly as the L7 proxy picks
//! for a request ([`select`](crate::select): the slot table walked by a
//! per-route cursor, smooth and deterministic, so 80/20 is 20 of every 100),
//! connects to the endpoint and copies bytes both ways until either side
//! closes.
//!
//! [`Splice::update`] swaps the routes at once: a connection keeps the
//! endpoint it was given (a weight change never touches it); new ones take
//! the new weights. Cursors are kept by route key across updates, as the
//! kernel keeps `TS_CURSORS`.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use std::os::fd::{AsFd as _, BorrowedFd};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpStream, UnixListener},
    sync::watch,
};
use traffic_shift_config::model::{Destination, HttpSelection, Selection, TcpRoute};

use crate::select::{self, RouteState, Slots};

/// One route as served: its tables, cursors and counters.
#[derive(Debug)]
struct Served {
    route: TcpRoute,
    selection: HttpSelection,
    slots: Slots,
    state: Arc<RouteState>,
    counts: Arc<RouteConnections>,
}

/// What the connections of one endpoint of a route did, as Istio's TCP
/// metrics count it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounts {
    /// Connections given this endpoint.
    pub opened: u64,
    /// Of those, closed (both directions done), failed connects included.
    pub closed: u64,
    /// Of those, whose connect to the endpoint failed (Envoy's `UF`).
    pub failed: u64,
    /// Bytes from the endpoint to the client, of closed connections.
    pub sent: u64,
    /// Bytes from the client to the endpoint, of closed connections.
    pub received: u64,
}

#[derive(Debug, Default)]
struct Counters {
    opened: AtomicU64,
    closed: AtomicU64,
    failed: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

/// The counts of a route, per endpoint (since the route entered the rules;
/// kept across rules changes while it stays).
#[derive(Debug, Default)]
struct RouteConnections(Mutex<BTreeMap<SocketAddr, Arc<Counters>>>);

impl RouteConnections {
    fn endpoint(&self, addr: SocketAddr) -> Arc<Counters> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(map.entry(addr).or_default())
    }

    fn snapshot(&self) -> BTreeMap<SocketAddr, EndpointCounts> {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(addr, c)| {
                let counts = EndpointCounts {
                    opened: load(&c.opened),
                    closed: load(&c.closed),
                    failed: load(&c.failed),
                    sent: load(&c.sent),
                    received: load(&c.received),
                };
                (*addr, counts)
            })
            .collect()
    }
}

/// The TCP routes served on unix sockets. Cheap to share (`Arc`); every
/// listener task holds one.
#[derive(Debug)]
pub struct Splice {
    routes: watch::Sender<Arc<HashMap<String, Arc<Served>>>>,
    connect_timeout: Duration,
}

/// The TCP reading of a DestinationRule's `loadBalancer` as the proxy's
/// selection: a unix client has no source address, so `useSourceIp` has no
/// key and picks at random, as Envoy does for a request without one.
fn http_selection(selection: Selection) -> HttpSelection {
    match selection {
        Selection::Smooth => HttpSelection::Smooth,
        Selection::Random => HttpSelection::Random,
        Selection::SourceHash => HttpSelection::SourceIp,
    }
}

impl Splice {
    /// No routes yet: connections are closed until [`Splice::update`].
    pub fn new(connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            routes: watch::Sender::new(Arc::new(HashMap::new())),
            connect_timeout,
        })
    }

    /// Serves `routes` (the unix-socket routes of the rules in force) from
    /// now on. Routes that stay keep their cursors and counters.
    pub fn update(&self, routes: &[TcpRoute]) {
        let old = self.routes.borrow().clone();
        let served: HashMap<String, Arc<Served>> = routes
            .iter()
            .map(|route| {
                let destinations: Vec<&Destination> = route.destinations.iter().collect();
                let selection = http_selection(route.selection);
                let (state, counts) = old.get(&route.key).map_or_else(
                    || (Arc::default(), Arc::default()),
                    |s| (Arc::clone(&s.state), Arc::clone(&s.counts)),
                );
                let served = Served {
                    slots: Slots::weighted(&destinations, &selection),
                    selection,
                    route: route.clone(),
                    state,
                    counts,
                };
                (route.key.clone(), Arc::new(served))
            })
            .collect();
        self.routes.send_replace(Arc::new(served));
    }

    /// Connections opened per route key and endpoint, since each route
    /// entered the rules.
    pub fn connections(&self) -> BTreeMap<String, BTreeMap<SocketAddr, u64>> {
        self.counts()
            .into_iter()
            .map(|(key, endpoints)| {
                let opened = endpoints.into_iter().map(|(a, c)| (a, c.opened)).collect();
                (key, opened)
            })
            .collect()
    }

    /// What each route's connections did, per route key and endpoint,
    /// since each route entered the rules (for Istio's TCP metrics).
    pub fn counts(&self) -> BTreeMap<String, BTreeMap<SocketAddr, EndpointCounts>> {
        self.routes
            .borrow()
            .iter()
            .map(|(key, served)| (key.clone(), served.counts.snapshot()))
            .collect()
    }

    /// Serves the connections accepted on `listener` with the route of
    /// `key` (looked up for each connection). Runs until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: Arc<UnixListener>, key: String) {
        let key: Arc<str> = key.into();
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // E.g. out of file descriptors: wait, so it does not spin.
                    tracing::warn!(%err, route = %key, "unix gateway: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            tokio::spawn(Arc::clone(&self).connection(stream, Arc::clone(&key)));
        }
    }

    /// The endpoint for one new connection of route `key`, counted.
    fn pick(&self, key: &str) -> Result<(SocketAddr, Arc<Counters>), &'static str> {
        let served = self
            .routes
            .borrow()
            .get(key)
            .cloned()
            .ok_or("the route is no longer in the rules")?;
        let index = served.slots.pick(&served.selection, &served.state, None);
        let dest = served
            .route
            .destinations
            .get(index)
            .ok_or("the route has no destination")?;
        let endpoint = select::endpoint(
            dest,
            &http_selection(dest.endpoint_selection),
            index,
            &served.state,
            None,
        )
        .ok_or("the destination has no endpoint (IST0173)")?;
        let counters = served.counts.endpoint(endpoint.addr);
        counters.opened.fetch_add(1, Ordering::Relaxed);
        Ok((endpoint.addr, counters))
    }

    /// The endpoint of a new connection of route `key`, picked (counted)
    /// and connected; `None` when there is none, or the connect failed
    /// (counted as Envoy's `UF`).
    async fn upstream(&self, key: &str) -> Option<(TcpStream, SocketAddr, Arc<Counters>)> {
        let (endpoint, counters) = match self.pick(key) {
            Ok(picked) => picked,
            Err(why) => {
                tracing::warn!(route = %key, "user-space gateway: connection closed: {why}");
                return None;
            }
        };
        let upstream =
            tokio::time::timeout(self.connect_timeout, TcpStream::connect(endpoint)).await;
        let failed = || {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            counters.closed.fetch_add(1, Ordering::Relaxed);
        };
        match upstream {
            Ok(Ok(upstream)) => {
                let _ = upstream.set_nodelay(true);
                Some((upstream, endpoint, counters))
            }
            Ok(Err(err)) => {
                failed();
                tracing::warn!(route = %key, %endpoint, %err, "user-space gateway: connect to the endpoint failed, connection closed");
                None
            }
            Err(_) => {
                failed();
                tracing::warn!(route = %key, %endpoint, "user-space gateway: connect to the endpoint timed out, connection closed");
                None
            }
        }
    }

    /// One client connection of route `key` (accepted on a unix socket, or
    /// by SNI on a TLS passthrough port): an endpoint picked, connected,
    /// bytes copied both ways until both directions are closed. Bytes the
    /// client sent and nobody read yet (a peeked ClientHello) go first.
    pub async fn connection<S>(self: Arc<Self>, mut client: S, key: Arc<str>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some((mut upstream, endpoint, counters)) = self.upstream(&key).await else {
            return;
        };
        copy_both_ways(&mut client, &mut upstream, &counters, &key, endpoint).await;
    }

    /// One TLS passthrough connection of route `key`, spliced in the kernel
    /// by `kernel`: the endpoint picked and connected as
    /// [`Splice::connection`] does; the ClientHello the client sent
    /// (`hello_len` bytes, peeked so far) read out and written to the
    /// upstream once both sockets are in the kernel's socket map, so the
    /// server's answer is redirected too; then each side's end (which the
    /// kernel does not carry) passed to the other by a shutdown. Bytes are
    /// counted from the client socket's `tcp_info`. When the sockets cannot
    /// be put in the map, the bytes are copied in user space.
    pub async fn connection_in_kernel(
        self: Arc<Self>,
        mut client: TcpStream,
        key: Arc<str>,
        hello_len: usize,
        kernel: Arc<dyn KernelSplicer>,
    ) {
        let Some((mut upstream, endpoint, counters)) = self.upstream(&key).await else {
            return;
        };
        let mut hello = vec![0u8; hello_len];
        if let Err(err) = client.read_exact(&mut hello).await {
            tracing::debug!(route = %key, %endpoint, %err, "TLS passthrough: the client went away");
            counters.closed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let pair = match kernel.pair(client.as_fd(), upstream.as_fd()) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(route = %key, %endpoint, %err, "TLS passthrough: cannot splice in the kernel, copying in user space");
                if upstream.write_all(&hello).await.is_ok() {
                    copy_both_ways(&mut client, &mut upstream, &counters, &key, endpoint).await;
                } else {
                    counters.closed.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        };
        if let Err(err) = upstream.write_all(&hello).await {
            tracing::debug!(route = %key, %endpoint, %err, "TLS passthrough: the upstream went away");
        } else {
            wait_for_both_ends(&mut client, &mut upstream).await;
        }
        if let Some((received, sent)) = kernel.bytes(client.as_fd()) {
            counters.received.fetch_add(received, Ordering::Relaxed);
            counters.sent.fetch_add(sent, Ordering::Relaxed);
        }
        kernel.unpair(pair);
        counters.closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Splices two connected TCP sockets in the kernel (the agent's
/// `sk_skb` socket map): each one's data goes to the other.
pub trait KernelSplicer: Send + Sync + std::fmt::Debug {
    /// Puts `a` and `b` in the map, each the other's peer; returns what
    /// [`KernelSplicer::unpair`] takes.
    fn pair(&self, a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> std::io::Result<(u64, u64)>;
    /// Takes a pair out of the map.
    fn unpair(&self, pair: (u64, u64));
    /// What a socket received and what the other side acknowledged
    /// (`tcp_info` `bytes_received`, `bytes_acked`).
    fn bytes(&self, socket: BorrowedFd<'_>) -> Option<(u64, u64)>;
}

/// Copies both ways until both directions are closed, counted.
async fn copy_both_ways<S>(
    client: &mut S,
    upstream: &mut TcpStream,
    counters: &Counters,
    key: &str,
    endpoint: SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional(client, upstream).await {
        Ok((received, sent)) => {
            counters.received.fetch_add(received, Ordering::Relaxed);
            counters.sent.fetch_add(sent, Ordering::Relaxed);
        }
        Err(err) => {
            tracing::debug!(route = %key, %endpoint, %err, "user-space gateway: connection ended with an error");
        }
    }
    counters.closed.fetch_add(1, Ordering::Relaxed);
}

/// Spliced sockets: the kernel moves the data, not the FIN. Each side's
/// end (its read returns 0) is passed to the other by a shutdown; data
/// that still reaches user space (it came before the socket entered the
/// map) is forwarded.
async fn wait_for_both_ends(client: &mut TcpStream, upstream: &mut TcpStream) {
    let (mut client_done, mut upstream_done) = (false, false);
    let (mut from_client, mut from_upstream) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    while !(client_done && upstream_done) {
        tokio::select! {
            read = client.read(&mut from_client), if !client_done => match read {
                Ok(n) if n > 0 => {
                    if upstream.write_all(&from_client[..n]).await.is_err() {
                        return;
                    }
                }
                _ => {
                    client_done = true;
                    let _ = upstream.shutdown().await;
                }
            },
            read = upstream.read(&mut from_upstream), if !upstream_done => match read {
                Ok(n) if n > 0 => {
                    if client.write_all(&from_upstream[..n]).await.is_err() {
                        return;
                    }
                }
                _ => {
                    upstream_done = true;
                    let _ = client.shutdown().await;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::{TcpListener, UnixStream},
    };
    use traffic_shift_config::model::Endpoint;

    use super::*;

    /// A backend that answers every connection with `name` and echoes what
    /// it reads after it.
    async fn backend(name: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    stream.write_all(name.as_bytes()).await.ok();
                    let mut buf = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn route(weights: &[(u32, SocketAddr)]) -> TcpRoute {
        TcpRoute {
            key: "default/tcp-echo/tcp[0]/gateway default/gw port 0".into(),
            source: std::path::Path::new("test").into(),
            gateway: Some("default/gw".into()),
            service_host: "tcp-echo.local".into(),
            service_port: 0,
            listeners: Vec::new(),
            unix: vec!["/test.sock".into()],
            sni: Vec::new(),
            prefixes: Vec::new(),
            selection: Selection::Smooth,
            destinations: weights
                .iter()
                .enumerate()
                .map(|(i, (weight, addr))| Destination {
                    host: "tcp-echo.local".into(),
                    subset: Some(format!("v{}", i + 1)),
                    weight: *weight,
                    endpoint_selection: Selection::Smooth,
                    outlier: None,
                    endpoints: vec![Endpoint {
                        addr: *addr,
                        labels: BTreeMap::new(),
                    }],
                })
                .collect(),
        }
    }

    fn socket_path(name: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("ts-splice-{name}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    /// The first bytes a new connection through `path` gets.
    async fn first_word(path: &std::path::Path) -> (String, UnixStream) {
        let mut stream = UnixStream::connect(path).await.expect("connect");
        let mut buf = [0u8; 2];
        stream
            .read_exact(&mut buf)
            .await
            .expect("the backend's name");
        (String::from_utf8_lossy(&buf).into_owned(), stream)
    }

    #[tokio::test]
    async fn splits_exactly_and_held_connections_keep_their_endpoint() {
        let (v1, v2) = (backend("v1").await, backend("v2").await);
        let splice = Splice::new(Duration::from_secs(5));
        let route = route(&[(80, v1), (20, v2)]);
        splice.update(std::slice::from_ref(&route));
        let path = socket_path("split");
        let listener = UnixListener::bind(&path).expect("bind the unix socket");
        let task = tokio::spawn(Arc::clone(&splice).serve(Arc::new(listener), route.key.clone()));

        let mut v2_count = 0;
        for _ in 0..1000 {
            let (word, _) = first_word(&path).await;
            v2_count += usize::from(word == "v2");
        }
        assert_eq!(
            v2_count, 200,
            "80/20 over 1000 connections must give exactly 200 to v2"
        );
        let counted = &splice.connections()[&route.key];
        assert_eq!(
            (counted[&v1], counted[&v2]),
            (800, 200),
            "counted per endpoint"
        );

        // A held connection keeps its endpoint across a shift to all-v2.
        let (word, mut held) = first_word(&path).await;
        assert_eq!(word, "v1", "the 1001st of 80/20 goes to v1");
        splice.update(&[self::route(&[(0, v1), (100, v2)])]);
        for _ in 0..10 {
            assert_eq!(first_word(&path).await.0, "v2", "all-v2 after the shift");
        }
        held.write_all(b"still")
            .await
            .expect("the held connection is open");
        let mut buf = [0u8; 5];
        held.read_exact(&mut buf).await.expect("echoed by v1");
        assert_eq!(&buf, b"still");
        assert_eq!(
            splice.connections()[&route.key][&v1],
            801,
            "counters kept across the change"
        );
        task.abort();
        let _ = std::fs::remove_file(&path);
    }
}
