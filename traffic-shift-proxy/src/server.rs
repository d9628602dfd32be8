//! The server: the proxy's listeners (a Gateway server's socket, served with
//! that listener's rules; or the one the kernel redirects mesh connections to,
//! served by the address the client connected to), accepting, and serving each
//! client connection with hyper, HTTP/1.1 or HTTP/2 cleartext by its first
//! bytes, within the limits of [`Options`].

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use hyper::{Request, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, Interest},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
};

use crate::Proxy;

/// Limits and timeouts of the proxy.
#[derive(Clone, Debug)]
pub struct Options {
    /// A client connection must send a whole request head within this
    /// (also: the first bytes of a new connection, and a request body
    /// between its chunks); else it is closed.
    pub request_header_timeout: Duration,
    /// The largest request head (HTTP/1.1 read buffer; HTTP/2 header list),
    /// as Envoy's `max_request_headers_kb` (60 KiB). At least 8192.
    pub max_header_bytes: usize,
    /// The most request headers (Envoy's `max_request_headers_count`).
    pub max_headers: usize,
    /// The replay buffer of a request whose route retries or mirrors
    /// (Envoy's `per_request_buffer_limit_bytes`): its body is kept up to
    /// this many bytes so it can be sent again. A longer body streams on,
    /// is not retried nor mirrored, and is counted
    /// (`traffic_shift_http_retry_buffer_overflow_total`). Bodies are never
    /// refused for their size.
    pub buffer_limit_bytes: usize,
    /// Client connections at once; more are closed when accepted.
    pub max_connections: usize,
    /// Upstream connect timeout (Istio's `connectTimeout` default, 10s).
    pub connect_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            request_header_timeout: Duration::from_secs(10),
            max_header_bytes: 60 << 10,
            max_headers: 100,
            buffer_limit_bytes: 1 << 20,
            max_connections: 10_000,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The address a mesh client connected to, from the accepted connection's
/// (peer, local) addresses.
pub type OriginalDst = Arc<dyn Fn(SocketAddr, SocketAddr) -> Option<SocketAddr> + Send + Sync>;

/// The SNI of the ClientHello of a request's TLS connection (lower case),
/// in the request's extensions.
#[derive(Clone, Debug)]
pub(crate) struct ServerName(pub(crate) Arc<str>);

/// Which listener serves a connection.
#[derive(Debug)]
pub(crate) enum Target {
    Gateway(String),
    Mesh(SocketAddr),
}

impl Proxy {
    /// Serves connections accepted on a Gateway server socket with the
    /// listener of `key` (looked up in the configuration of each request).
    /// Runs until the task is dropped.
    pub async fn serve_gateway(self: Arc<Self>, listener: TcpListener, key: String) {
        let target = Arc::new(Target::Gateway(key.clone()));
        loop {
            let Some((stream, peer)) = accept(&listener).await else {
                continue;
            };
            // HTTPS servers: TLS first (`terminate`).
            let target = Arc::clone(&target);
            match self.acceptor(&key) {
                Some(acceptor) => {
                    tokio::spawn(Arc::clone(&self).tls_connection(stream, peer, target, acceptor));
                }
                None => {
                    tokio::spawn(Arc::clone(&self).connection(stream, peer, target));
                }
            }
        }
    }

    /// Serves connections accepted on a Gateway server's unix socket
    /// (`bind: unix://<path>`) with the listener of `key`, as
    /// [`Proxy::serve_gateway`]. A unix client has no IP address: the
    /// requests' peer is `0.0.0.0:0`. Runs until the task is dropped.
    pub async fn serve_gateway_unix(self: Arc<Self>, listener: Arc<UnixListener>, key: String) {
        let target = Arc::new(Target::Gateway(key));
        let peer = SocketAddr::from(([0, 0, 0, 0], 0));
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(Arc::clone(&self).connection(stream, peer, Arc::clone(&target)));
                }
                Err(err) => {
                    tracing::warn!(%err, "L7 proxy: accept failed on a unix socket");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Serves connections the kernel redirected to the proxy: each is
    /// served with the listener whose `listeners` hold the address
    /// `original_dst` says the client connected to. A connection whose
    /// address is unknown is closed, with a log line.
    pub async fn serve_mesh(self: Arc<Self>, listener: TcpListener, original_dst: OriginalDst) {
        loop {
            let Some((stream, peer)) = accept(&listener).await else {
                continue;
            };
            let local = match stream.local_addr() {
                Ok(local) => local,
                Err(err) => {
                    tracing::debug!(%err, %peer, "L7 proxy: no local address, connection closed");
                    continue;
                }
            };
            let Some(service) = original_dst(peer, local) else {
                tracing::warn!(
                    %peer, %local,
                    "L7 proxy: no original destination for a redirected connection (not a mesh service address?), connection closed"
                );
                continue;
            };
            let target = Arc::new(Target::Mesh(service));
            tokio::spawn(Arc::clone(&self).connection(stream, peer, target));
        }
    }

    /// One client connection: HTTP/2 if it opens with the h2 preface, else
    /// HTTP/1.1.
    async fn connection<S: ClientStream>(
        self: Arc<Self>,
        stream: S,
        peer: SocketAddr,
        target: Arc<Target>,
    ) {
        let Some(_permit) = self.permit(peer) else {
            return;
        };
        stream.no_delay();
        let h2 = match tokio::time::timeout(
            self.options.request_header_timeout,
            starts_with_h2_preface(&stream),
        )
        .await
        {
            Ok(Ok(h2)) => h2,
            Ok(Err(err)) => {
                tracing::debug!(%peer, %err, "L7 proxy: client connection failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "L7 proxy: client sent nothing in time, connection closed");
                return;
            }
        };
        self.serve_http(stream, h2, peer, target, None).await;
    }

    /// A place among the client connections at once, or `None` (logged)
    /// when there are `max_connections` already.
    pub(crate) fn permit(&self, peer: SocketAddr) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permit = Arc::clone(&self.connections).try_acquire_owned().ok();
        if permit.is_none() {
            tracing::warn!(
                %peer,
                max = self.options.max_connections,
                "L7 proxy: too many client connections, connection closed"
            );
        }
        permit
    }

    /// Serves the requests of one client connection, HTTP/2 or HTTP/1.1.
    pub(crate) async fn serve_http<S>(
        self: Arc<Self>,
        stream: S,
        h2: bool,
        peer: SocketAddr,
        target: Arc<Target>,
        sni: Option<Arc<str>>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let proxy = Arc::clone(&self);
        let service = service_fn(move |mut request: Request<Incoming>| {
            let proxy = Arc::clone(&proxy);
            let target = Arc::clone(&target);
            if let Some(name) = &sni {
                request
                    .extensions_mut()
                    .insert(ServerName(Arc::clone(name)));
            }
            async move { Ok::<_, Infallible>(proxy.handle(request, peer, &target).await) }
        });
        let io = TokioIo::new(stream);
        let result = if h2 {
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(
                    u32::try_from(self.options.max_header_bytes).unwrap_or(u32::MAX),
                )
                .max_concurrent_streams(256)
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .serve_connection(io, service)
                .await
        } else {
            hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(self.options.request_header_timeout)
                .max_buf_size(self.options.max_header_bytes.max(8192))
                .max_headers(self.options.max_headers)
                .serve_connection(io, service)
                .with_upgrades()
                .await
        };
        if let Err(err) = result {
            tracing::debug!(%peer, %err, "L7 proxy: client connection ended with an error");
        }
    }
}

/// Accepts one connection; on error (e.g. out of file descriptors) waits a
/// little, so a persistent error does not spin.
async fn accept(listener: &TcpListener) -> Option<(TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok(conn) => Some(conn),
        Err(err) => {
            tracing::warn!(%err, "L7 proxy: accept failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits for the first bytes of a connection and tells whether they are
/// the HTTP/2 preface (without consuming them).
async fn starts_with_h2_preface(stream: &impl ClientStream) -> std::io::Result<bool> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before a request",
            ));
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A partial preface: wait for the rest.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A client connection the proxy serves: TCP, or a unix socket's.
pub(crate) trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Sends small writes at once (TCP), where that applies.
    fn no_delay(&self);
    /// Reads what arrived without taking it from the stream.
    fn peek(&self, buf: &mut [u8]) -> impl Future<Output = std::io::Result<usize>> + Send;
}

impl ClientStream for TcpStream {
    fn no_delay(&self) {
        let _ = self.set_nodelay(true);
    }

    async fn peek(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        TcpStream::peek(self, buf).await
    }
}

impl ClientStream for UnixStream {
    fn no_delay(&self) {}

    async fn peek(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        // tokio has no peek for unix streams: recv(MSG_PEEK) once readable.
        self.async_io(Interest::READABLE, || {
            rustix::net::recv(
                self,
                buf,
                rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
            )
            .map_err(std::io::Error::from)
        })
        .await
    }
}
