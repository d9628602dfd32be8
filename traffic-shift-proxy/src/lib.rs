//! The userspace L7 proxy: serves VirtualService `http` rules on hyper
//! and tokio, HTTP/1.1 (keep-alive) and HTTP/2 cleartext (prior knowledge)
//! from clients, pooled HTTP/1.1 or h2c connections to endpoints.
//!
//! A request: the listener (a Gateway server's, by key; or a mesh
//! service's, by the address the client connected to) -> the virtual host
//! by authority -> the first route whose matches admit it ([`routes`]) ->
//! fault injection -> `redirect` / `direct_response`, or a destination and
//! an endpoint picked as the kernel path does ([`select`]) -> header
//! operations and rewrite ([`rewrite`]) -> the upstream request with
//! timeout and retries, mirrors sent aside -> the response, with its header
//! operations. Errors are Envoy's: 404 no route (`NR`), 503 no healthy
//! upstream (`UH`), 503 on connect failure (`UF`) or reset (`UC`), 504 on
//! timeout (`UT`), each with a short body naming the cause.
//!
//! [`Proxy::update`] swaps the whole configuration at once: a request runs
//! to its end on the snapshot it started with; route cursors (by route key)
//! and the upstream connection pool (by endpoint) outlive updates.

mod routes;
mod select;
mod stats;

pub mod echo;
mod rewrite;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::{
    Request, Response, StatusCode, Uri, Version,
    body::{Bytes, Incoming},
    header::{self, HeaderMap, HeaderName, HeaderValue},
    service::service_fn,
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
};

pub use self::{
    routes::RegexError,
    stats::{EndpointOutcomes, RequestMetrics},
};
use self::{
    routes::{Config, MatchedUri, RequestView, Route},
    select::RouteState,
    stats::{Handles, Outcomes},
};
use traffic_shift_config::{
    http::{AbortError, DelayKind},
    labels::{IstioLabels, Reporter},
    model::{Destination, Endpoint, HttpDestination, HttpListener, HttpSelection},
};

/// A configuration built by [`Proxy::prepare`], served by [`Proxy::install`].
#[derive(Debug)]
pub struct Prepared {
    config: Config,
    /// Selection cursors of the routes in it, by route key.
    states: HashMap<String, Arc<RouteState>>,
    /// Every endpoint it can send to.
    endpoints: HashSet<SocketAddr>,
}

/// The body of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

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
    /// Request bodies are buffered (for retries and mirrors) up to this;
    /// a longer one gets 413.
    pub max_body_bytes: usize,
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
            max_body_bytes: 1 << 20,
            max_connections: 10_000,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Which route of `listeners` a request takes, as the proxy decides it
/// (listener by key, virtual host by authority, first route whose matches
/// admit it), and the path it is sent with after the route's rewrite: for
/// the fuzz target and tests. `Err`: the rules' regexes do not compile.
pub fn route_for(
    listeners: &[HttpListener],
    key: &str,
    request: &Request<()>,
) -> Result<Option<(String, String)>, RegexError> {
    let config = Config::build(listeners.to_vec(), |_| Arc::default())?;
    let Some(listener) = config.by_key(key) else {
        return Ok(None);
    };
    let authority = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| {
            request
                .uri()
                .authority()
                .map(hyper::http::uri::Authority::as_str)
        })
        .unwrap_or("");
    let view = RequestView {
        method: request.method(),
        uri: request.uri(),
        headers: request.headers(),
        authority,
        port: listener.port,
    };
    let Some((route, matched)) = listener.host(authority).and_then(|host| host.route(&view)) else {
        return Ok(None);
    };
    let path = match &route.model.rewrite {
        Some(rewrite) => rewrite::rewrite_path(
            rewrite,
            route.uri_regex.as_ref(),
            &matched,
            request.uri().path(),
            request.uri().query(),
        ),
        None => None,
    }
    .unwrap_or_else(|| request.uri().path().to_owned());
    Ok(Some((route.model.key.clone(), path)))
}

/// The address a mesh client connected to, from the accepted connection's
/// (peer, local) addresses.
pub type OriginalDst = Arc<dyn Fn(SocketAddr, SocketAddr) -> Option<SocketAddr> + Send + Sync>;

/// The L7 proxy. Cheap to share (`Arc`); every serve task holds one.
pub struct Proxy {
    options: Options,
    config: watch::Sender<Arc<Config>>,
    /// Route selection cursors by route key, kept across updates.
    states: Mutex<HashMap<String, Arc<RouteState>>>,
    http1: Client<HttpConnector, Full<Bytes>>,
    http2: Client<HttpConnector, Full<Bytes>>,
    metrics: Arc<RequestMetrics>,
    outcomes: Outcomes,
    connections: Arc<Semaphore>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Which listener serves a connection.
#[derive(Debug)]
enum Target {
    Gateway(String),
    Mesh(SocketAddr),
}

/// Why the proxy answered itself, with Envoy's response flag.
struct LocalReply {
    status: StatusCode,
    flags: &'static str,
    body: String,
}

impl LocalReply {
    fn new(status: StatusCode, flags: &'static str, body: impl Into<String>) -> Self {
        Self {
            status,
            flags,
            body: body.into(),
        }
    }
}

impl Proxy {
    /// A proxy with no listeners yet (every request gets 404 until
    /// [`Proxy::update`]).
    pub fn new(options: Options) -> Arc<Self> {
        let client = |http2: bool| {
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(options.connect_timeout));
            connector.set_nodelay(true);
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(256)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .http2_only(http2)
                .build(connector)
        };
        Arc::new(Self {
            http1: client(false),
            http2: client(true),
            config: watch::Sender::new(Arc::new(Config::default())),
            states: Mutex::new(HashMap::new()),
            metrics: Arc::new(RequestMetrics::default()),
            outcomes: Outcomes::default(),
            connections: Arc::new(Semaphore::new(options.max_connections)),
            options,
        })
    }

    /// Replaces the whole configuration at once: [`Proxy::prepare`] then
    /// [`Proxy::install`]. Requests in flight finish on the one they
    /// started with. On error the previous one stays.
    pub fn update(&self, listeners: Vec<HttpListener>) -> Result<(), RegexError> {
        let prepared = self.prepare(listeners)?;
        self.install(prepared);
        Ok(())
    }

    /// Builds the configuration for `listeners` without serving it yet: the
    /// step that can fail, taken before anything else of a rules change
    /// (the kernel tables) is touched. Routes that stay keep their
    /// selection cursors.
    pub fn prepare(&self, listeners: Vec<HttpListener>) -> Result<Prepared, RegexError> {
        let endpoints: HashSet<SocketAddr> = listeners
            .iter()
            .flat_map(|l| &l.virtual_hosts)
            .flat_map(|h| &h.routes)
            .flat_map(|r| {
                r.destinations
                    .iter()
                    .map(|d| &d.destination)
                    .chain(r.mirrors.iter().map(|m| &m.destination))
            })
            .flat_map(|d| d.endpoints.iter().map(|e| e.addr))
            .collect();
        let states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut kept = HashMap::new();
        let config = Config::build(listeners, |route| {
            let state = states.get(&route.key).cloned().unwrap_or_default();
            kept.insert(route.key.clone(), Arc::clone(&state));
            state
        })?;
        Ok(Prepared {
            config,
            states: kept,
            endpoints,
        })
    }

    /// Serves a configuration [`Proxy::prepare`] built; cannot fail.
    pub fn install(&self, prepared: Prepared) {
        let Prepared {
            config,
            states,
            endpoints,
        } = prepared;
        *self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = states;
        self.outcomes.retain(&endpoints);
        tracing::info!(
            listeners = config.listeners.len(),
            "L7 proxy configuration updated"
        );
        self.config.send_replace(Arc::new(config));
    }

    /// The request metrics, for the agent's metrics exporter.
    pub fn metrics(&self) -> Arc<RequestMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Upstream outcomes per endpoint since it entered the rules, for
    /// outlier detection: poll it (each interval) and eject an endpoint
    /// whose `consecutive_5xx` / `consecutive_gateway_errors` reached the
    /// DestinationRule's threshold. Counts of endpoints that left the rules
    /// are dropped at the next update.
    pub fn endpoint_outcomes(&self) -> std::collections::BTreeMap<SocketAddr, EndpointOutcomes> {
        self.outcomes.snapshot()
    }

    /// Serves connections accepted on a Gateway server socket with the
    /// listener of `key` (looked up in the configuration of each request).
    /// Runs until the task is dropped.
    pub async fn serve_gateway(self: Arc<Self>, listener: TcpListener, key: String) {
        let target = Arc::new(Target::Gateway(key));
        loop {
            let Some((stream, peer)) = accept(&listener).await else {
                continue;
            };
            tokio::spawn(Arc::clone(&self).connection(stream, peer, Arc::clone(&target)));
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
    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, target: Arc<Target>) {
        let Ok(_permit) = Arc::clone(&self.connections).try_acquire_owned() else {
            tracing::warn!(
                %peer,
                max = self.options.max_connections,
                "L7 proxy: too many client connections, connection closed"
            );
            return;
        };
        let _ = stream.set_nodelay(true);
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
        let proxy = Arc::clone(&self);
        let service = service_fn(move |request: Request<Incoming>| {
            let proxy = Arc::clone(&proxy);
            let target = Arc::clone(&target);
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
                .await
        };
        if let Err(err) = result {
            tracing::debug!(%peer, %err, "L7 proxy: client connection ended with an error");
        }
    }

    async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        target: &Target,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        // hyper bounds what it buffers, but a head that arrived in one read
        // can exceed it: refuse it here too, as Envoy does (431).
        let head: usize = request.uri().to_string().len()
            + request
                .headers()
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum::<usize>();
        if head > self.options.max_header_bytes {
            return self.local(
                &unknown_labels(),
                start,
                &LocalReply::new(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "-",
                    format!(
                        "request headers too large: {head} bytes, at most {}\n",
                        self.options.max_header_bytes
                    ),
                ),
            );
        }
        let config = Arc::clone(&self.config.borrow());
        let listener = match target {
            Target::Gateway(key) => config.by_key(key),
            Target::Mesh(addr) => config.by_addr(*addr),
        };
        let Some(listener) = listener else {
            let what = match target {
                Target::Gateway(key) => format!("listener {key}"),
                Target::Mesh(addr) => format!("service address {addr}"),
            };
            tracing::warn!("L7 proxy: no HTTP rules for {what} any more; request refused");
            return self.local(
                &unknown_labels(),
                start,
                &LocalReply::new(
                    StatusCode::NOT_FOUND,
                    "NR",
                    format!("no route: no HTTP rules for {what}\n"),
                ),
            );
        };
        let reporter = Reporter {
            route_key: "",
            gateway: listener.gateway.as_deref(),
            protocol: "http",
        };
        let no_route = |why: String| {
            (
                reporter.labels(None, &BTreeMap::new()),
                LocalReply::new(StatusCode::NOT_FOUND, "NR", format!("no route: {why}\n")),
            )
        };
        let authority = authority(&request);
        let Some(host) = listener.host(&authority) else {
            let (labels, reply) = no_route(format!("no virtual host for authority {authority:?}"));
            return self.local(&labels, start, &reply);
        };
        let view = RequestView {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            authority: &authority,
            port: listener.port,
        };
        let Some((route, matched)) = host.route(&view) else {
            let (labels, reply) = no_route(format!(
                "no rule of {} matches {} {}",
                host.model.virtual_service,
                request.method(),
                request.uri().path()
            ));
            return self.local(&labels, start, &reply);
        };
        let reporter = Reporter {
            route_key: &route.model.key,
            ..reporter
        };
        let cx = Routed {
            peer,
            port: listener.port,
            route,
            matched,
            authority,
            reporter,
            start,
        };
        let request = match self.answer_locally(&cx, request).await {
            Ok(request) => request,
            Err(response) => return response,
        };
        self.routed(&cx, request).await
    }

    /// Fault injection, `redirect`, `direct_response`: the answers a route
    /// gives without an upstream (`Err`); else the request back.
    async fn answer_locally(
        &self,
        cx: &Routed<'_>,
        request: Request<Incoming>,
    ) -> Result<Request<Incoming>, Response<ProxyBody>> {
        let model = &cx.route.model;
        if let Some(fault) = &model.fault {
            if let Some(delay) = &fault.delay
                && select::chance(delay.percentage.unwrap_or(100.0))
                && let DelayKind::Fixed(duration) = delay.delay
            {
                tokio::time::sleep(duration).await;
            }
            if let Some(abort) = &fault.abort
                && let Some(error) = &abort.error
                && select::chance(abort.percentage.unwrap_or(100.0))
            {
                return Err(self.route_local(cx, None, &fault_abort(error)));
            }
        }
        let mut response = if let Some(redirect) = &model.redirect {
            let location = rewrite::redirect_location(
                redirect,
                &cx.matched,
                &cx.authority,
                cx.port,
                request.uri().path(),
                request.uri().query(),
            );
            let status = StatusCode::from_u16(redirect.redirect_code)
                .unwrap_or(StatusCode::MOVED_PERMANENTLY);
            let mut response = full_response(status, Bytes::new());
            if let Ok(location) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        } else if let Some(direct) = &model.direct_response {
            let status = StatusCode::from_u16(direct.status).unwrap_or(StatusCode::OK);
            full_response(
                status,
                Bytes::from(rewrite::direct_body(direct.body.as_ref())),
            )
        } else if model.destinations.is_empty() {
            return Err(self.route_local(
                cx,
                None,
                &LocalReply::new(
                    StatusCode::NOT_FOUND,
                    "NR",
                    "no route: the rule has no destination\n",
                ),
            ));
        } else {
            return Ok(request);
        };
        rewrite::apply_headers(response.headers_mut(), &model.headers.response);
        self.handles(cx, None, None, response.status().as_u16(), "-")
            .record(cx.start.elapsed());
        Err(response)
    }

    /// A request that goes to a destination of its route.
    async fn routed(&self, cx: &Routed<'_>, request: Request<Incoming>) -> Response<ProxyBody> {
        let model = &cx.route.model;
        let hash = request_hash(&model.selection, &request, cx.peer);
        let index = cx.route.slots.pick(&model.selection, &cx.route.state, hash);
        let index = index.min(model.destinations.len() - 1);
        let chosen = &model.destinations[index];

        let endpoint_hash = request_hash(&chosen.endpoint_selection, &request, cx.peer);
        let (parts, body) = request.into_parts();
        let body = match self.read_body(body).await {
            Ok(body) => body,
            Err(reply) => return self.route_local(cx, Some(index), &reply),
        };
        let (outgoing, authority) = outgoing(cx, chosen, parts, body);
        for mirror in &model.mirrors {
            if select::chance(mirror.percentage) {
                self.mirror(
                    &outgoing,
                    &authority,
                    &mirror.destination,
                    mirror.http2,
                    model.timeout,
                );
            }
        }

        let (response, endpoint, flags) = self
            .forward(cx.route, index, endpoint_hash, &outgoing, cx.start)
            .await;
        let code = match &response {
            Ok(response) => response.status().as_u16(),
            Err(reply) => reply.status.as_u16(),
        };
        let handles = self.handles(cx, Some(index), endpoint, code, flags);
        let mut response = match response {
            Ok(mut response) => {
                strip_hop_by_hop(response.headers_mut());
                // Counted when the body has gone to the client (or the
                // client left): Istio's duration is the whole exchange.
                let done = Recorded {
                    handles,
                    start: cx.start,
                };
                response.map(|body| {
                    body.map_frame(move |frame| {
                        let _ = &done;
                        frame
                    })
                    .boxed()
                })
            }
            Err(reply) => {
                handles.record(cx.start.elapsed());
                reply_response(&reply)
            }
        };
        rewrite::apply_headers(response.headers_mut(), &chosen.headers.response);
        rewrite::apply_headers(response.headers_mut(), &model.headers.response);
        response
    }

    /// Sends the request to an endpoint of destination `index` (picked by
    /// its `endpoint_selection`, `endpoint_hash` the request's key for it),
    /// with the route's timeout and retries. Returns the answer (or the local error
    /// reply), the endpoint that gave it, and the response flags.
    async fn forward<'r>(
        &self,
        route: &'r Route,
        index: usize,
        endpoint_hash: Option<u32>,
        outgoing: &Outgoing,
        start: Instant,
    ) -> (
        Result<Response<ProxyBody>, LocalReply>,
        Option<&'r Endpoint>,
        &'static str,
    ) {
        let model = &route.model;
        let chosen = &model.destinations[index];
        let (dest, http2) = (&chosen.destination, chosen.http2);
        let retries = &model.retries;
        let deadline = model.timeout.map(|timeout| start + timeout);
        let attempts = retries.attempts.saturating_add(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(endpoint) = select::endpoint(
                dest,
                &chosen.endpoint_selection,
                index,
                &route.state,
                endpoint_hash,
            ) else {
                return (
                    Err(LocalReply::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "UH",
                        "no healthy upstream\n",
                    )),
                    None,
                    "UH",
                );
            };
            let limit = match (
                deadline.map(|d| d.saturating_duration_since(Instant::now())),
                retries.per_try_timeout.filter(|_| retries.attempts > 0),
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let request = outgoing.to_request(endpoint.addr, http2);
            let client = if http2 { &self.http2 } else { &self.http1 };
            let sent = client.request(request);
            let result = match limit {
                Some(limit) => tokio::time::timeout(limit, sent).await.map_err(|_| ()),
                None => Ok(sent.await),
            };
            let outcome = match result {
                Ok(Ok(response)) => Attempt::Answer(response),
                Ok(Err(err)) if err.is_connect() => Attempt::ConnectFailure(error_chain(&err)),
                Ok(Err(err)) => Attempt::Reset(error_chain(&err)),
                Err(()) => Attempt::Timeout,
            };
            self.outcomes.record(endpoint.addr, outcome.status());
            let deadline_passed = deadline.is_some_and(|d| Instant::now() >= d);
            if attempt < attempts && !deadline_passed && outcome.retriable(&retries.retry_on) {
                tracing::debug!(route = %model.key, endpoint = %endpoint.addr, status = outcome.status(), attempt, "L7 proxy: retrying");
                let backoff = retries.backoff.unwrap_or(Duration::from_millis(25));
                let backoff = deadline.map_or(backoff, |d| {
                    backoff.min(d.saturating_duration_since(Instant::now()))
                });
                tokio::time::sleep(backoff).await;
                continue;
            }
            let result = match outcome {
                Attempt::Answer(response) => {
                    return (Ok(response.map(BodyExt::boxed)), Some(endpoint), "-");
                }
                Attempt::ConnectFailure(why) => LocalReply::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UF",
                    format!(
                        "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: {why}\n"
                    ),
                ),
                Attempt::Reset(why) => LocalReply::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UC",
                    format!(
                        "upstream connect error or disconnect/reset before headers. reset reason: connection termination ({why})\n"
                    ),
                ),
                Attempt::Timeout => LocalReply::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "UT",
                    "upstream request timeout\n",
                ),
            };
            let flags = result.flags;
            return (Err(result), Some(endpoint), flags);
        }
    }

    /// Sends a copy of the request to a mirror destination, not waiting
    /// for it; its answer is dropped. The authority gets `-shadow`, as
    /// Envoy marks mirrored requests.
    fn mirror(
        &self,
        outgoing: &Outgoing,
        authority: &str,
        dest: &Destination,
        http2: bool,
        timeout: Option<Duration>,
    ) {
        let n = dest.endpoints.len();
        if n == 0 {
            return;
        }
        let endpoint = dest.endpoints[select::random_u32() as usize % n].addr;
        let mut copy = outgoing.clone();
        let host = routes::strip_port(authority);
        let shadow = format!("{host}-shadow{}", &authority[host.len()..]);
        if let Ok(value) = HeaderValue::from_str(&shadow) {
            copy.headers.insert(header::HOST, value);
        }
        let request = copy.to_request(endpoint, http2);
        let client = if http2 {
            self.http2.clone()
        } else {
            self.http1.clone()
        };
        let timeout = timeout.unwrap_or(Duration::from_secs(30));
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, client.request(request)).await {
                Ok(Ok(response)) => {
                    // Read the answer so the connection goes back to the pool.
                    let _ = response.into_body().collect().await;
                }
                Ok(Err(err)) => tracing::debug!(%endpoint, %err, "L7 proxy: mirror request failed"),
                Err(_) => tracing::debug!(%endpoint, "L7 proxy: mirror request timed out"),
            }
        });
    }

    /// The whole request body, bounded in size and in time between chunks.
    async fn read_body(&self, body: Incoming) -> Result<Bytes, LocalReply> {
        use hyper::body::Body as _;
        if body.is_end_stream() {
            return Ok(Bytes::new());
        }
        let mut limited = Limited::new(body, self.options.max_body_bytes);
        let mut out = Vec::new();
        loop {
            let frame =
                tokio::time::timeout(self.options.request_header_timeout, limited.frame()).await;
            match frame {
                Err(_) => {
                    return Err(LocalReply::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "DPE",
                        "request body timeout\n",
                    ));
                }
                Ok(None) => return Ok(Bytes::from(out)),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        out.extend_from_slice(&data);
                    }
                }
                Ok(Some(Err(err))) => {
                    if err
                        .downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        return Err(LocalReply::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "-",
                            format!(
                                "request body larger than {} bytes\n",
                                self.options.max_body_bytes
                            ),
                        ));
                    }
                    return Err(LocalReply::new(
                        StatusCode::BAD_REQUEST,
                        "DPE",
                        format!("bad request body: {err}\n"),
                    ));
                }
            }
        }
    }

    /// The series of `cx`'s route a request counts in: destination `dest`
    /// (`None`: the route answered itself; labelled with its first
    /// destination's host), the `endpoint` reached, `code` and `flags`.
    fn handles(
        &self,
        cx: &Routed<'_>,
        dest: Option<usize>,
        endpoint: Option<&Endpoint>,
        code: u16,
        flags: &'static str,
    ) -> Handles {
        let key = (dest, endpoint.map(|e| e.addr), code, flags);
        cx.route.series.get(key, &self.metrics, || {
            let destinations = &cx.route.model.destinations;
            let host = destinations
                .get(dest.unwrap_or(0))
                .map(|d| d.destination.host.as_str());
            let no_labels = BTreeMap::new();
            cx.reporter
                .labels(host, endpoint.map_or(&no_labels, |e| &e.labels))
        })
    }

    /// A reply of the proxy's own to a request of `cx`'s route, counted in
    /// its metrics.
    fn route_local(
        &self,
        cx: &Routed<'_>,
        dest: Option<usize>,
        reply: &LocalReply,
    ) -> Response<ProxyBody> {
        self.handles(cx, dest, None, reply.status.as_u16(), reply.flags)
            .record(cx.start.elapsed());
        reply_response(reply)
    }

    fn local(
        &self,
        labels: &IstioLabels,
        start: Instant,
        reply: &LocalReply,
    ) -> Response<ProxyBody> {
        self.metrics
            .record(labels, reply.status.as_u16(), reply.flags, start.elapsed());
        reply_response(reply)
    }
}

/// Istio's labels for a request refused before any rule applied to it.
fn unknown_labels() -> IstioLabels {
    Reporter {
        route_key: "",
        gateway: None,
        protocol: "http",
    }
    .labels(None, &BTreeMap::new())
}

/// Records a request in the metrics when dropped (with the response body).
struct Recorded {
    handles: Handles,
    start: Instant,
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.handles.record(self.start.elapsed());
    }
}

/// A request's route and what the route's actions need of it.
struct Routed<'a> {
    peer: SocketAddr,
    /// The listener's port.
    port: u16,
    route: &'a Route,
    matched: MatchedUri,
    /// As the client sent it.
    authority: String,
    reporter: Reporter<'a>,
    start: Instant,
}

/// The request as it goes to `chosen`: hop-by-hop headers removed,
/// authority kept (or rewritten), `x-forwarded-*` set, header operations
/// (the destination's, then the route's) and uri rewrite applied. Returns
/// it with the authority it carries.
fn outgoing(
    cx: &Routed<'_>,
    chosen: &HttpDestination,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> (Outgoing, String) {
    let model = &cx.route.model;
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    let authority = model
        .rewrite
        .as_ref()
        .and_then(|r| r.authority.clone())
        .unwrap_or_else(|| cx.authority.clone());
    if let Ok(value) = HeaderValue::from_str(&authority) {
        headers.insert(header::HOST, value);
    }
    append_forwarded_for(&mut headers, cx.peer);
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    rewrite::apply_headers(&mut headers, &chosen.headers.request);
    rewrite::apply_headers(&mut headers, &model.headers.request);
    let path_and_query = model
        .rewrite
        .as_ref()
        .and_then(|r| {
            rewrite::rewrite_path(
                r,
                cx.route.uri_regex.as_ref(),
                &cx.matched,
                parts.uri.path(),
                parts.uri.query(),
            )
        })
        .unwrap_or_else(|| {
            parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), ToString::to_string)
        });
    let outgoing = Outgoing {
        method: parts.method,
        path_and_query,
        headers,
        body,
    };
    (outgoing, authority)
}

/// What one upstream attempt gave.
enum Attempt {
    Answer(Response<Incoming>),
    ConnectFailure(String),
    Reset(String),
    Timeout,
}

impl Attempt {
    /// The status it counts as (a local error as Envoy answers it).
    fn status(&self) -> u16 {
        match self {
            Self::Answer(response) => response.status().as_u16(),
            Self::ConnectFailure(_) | Self::Reset(_) => 503,
            Self::Timeout => 504,
        }
    }

    /// Whether `retryOn` retries it (Envoy's policies; gRPC ones look at
    /// the `grpc-status` of the answer).
    fn retriable(&self, retry_on: &[String]) -> bool {
        let has = |policy: &str| retry_on.iter().any(|p| p == policy);
        match self {
            Self::ConnectFailure(_) => {
                has("connect-failure") || has("5xx") || has("gateway-error") || has("reset")
            }
            Self::Reset(_) => {
                has("reset") || has("5xx") || has("gateway-error") || has("refused-stream")
            }
            Self::Timeout => has("5xx") || has("gateway-error") || has("reset"),
            Self::Answer(response) => {
                let status = response.status().as_u16();
                let grpc = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u8>().ok());
                (has("5xx") && status >= 500)
                    || (has("gateway-error") && (502..=504).contains(&status))
                    || (has("retriable-4xx") && status == 409)
                    || retriable_status_codes(retry_on).any(|code| code == status)
                    || matches!(
                        grpc,
                        Some(1) if has("cancelled")
                    )
                    || matches!(grpc, Some(4) if has("deadline-exceeded"))
                    || matches!(grpc, Some(8) if has("resource-exhausted"))
                    || matches!(grpc, Some(14) if has("unavailable"))
                    || matches!(grpc, Some(13) if has("internal"))
            }
        }
    }
}

/// The status codes `retryOn` lists; `retriable-status-codes` alone means
/// 503 (what Istio's default policy lists).
fn retriable_status_codes(retry_on: &[String]) -> impl Iterator<Item = u16> + '_ {
    let listed = retry_on.iter().filter_map(|p| p.parse::<u16>().ok());
    let default = (retry_on.iter().any(|p| p == "retriable-status-codes")
        && !retry_on.iter().any(|p| p.parse::<u16>().is_ok()))
    .then_some(503);
    listed.chain(default)
}

/// The request as it goes upstream (body buffered, so it can be sent again
/// on a retry and copied to mirrors).
#[derive(Clone)]
struct Outgoing {
    method: hyper::Method,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Outgoing {
    fn to_request(&self, endpoint: SocketAddr, http2: bool) -> Request<Full<Bytes>> {
        let uri = Uri::try_from(format!("http://{endpoint}{}", self.path_and_query))
            .unwrap_or_else(|_| Uri::from_static("/"));
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = if http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *request.headers_mut() = self.headers.clone();
        request
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
async fn starts_with_h2_preface(stream: &TcpStream) -> std::io::Result<bool> {
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

/// The authority as the client sent it: `:authority` (HTTP/2, or an
/// absolute URI) else `Host`.
fn authority(request: &Request<Incoming>) -> String {
    request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// The consistent-hash key of a request, when its route hashes.
fn request_hash(
    selection: &HttpSelection,
    request: &Request<Incoming>,
    peer: SocketAddr,
) -> Option<u32> {
    match selection {
        HttpSelection::Smooth | HttpSelection::Random => None,
        HttpSelection::SourceIp => Some(select::client_hash(peer)),
        HttpSelection::Header(name) => {
            let values: Vec<&[u8]> = request
                .headers()
                .get_all(name.as_str())
                .iter()
                .map(HeaderValue::as_bytes)
                .collect();
            (!values.is_empty()).then(|| select::value_hash(&values.join(&b","[..])))
        }
        HttpSelection::Cookie(name) => request
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                (key == name).then(|| select::value_hash(value.as_bytes()))
            }),
        HttpSelection::QueryParameter(name) => request
            .uri()
            .query()
            .and_then(|q| routes::query_param(q, name))
            .map(|v| select::value_hash(v.as_bytes())),
    }
}

/// Removes the headers that describe one connection (RFC 9110 7.6.1), and
/// those the `Connection` header names; `te: trailers` stays (gRPC needs it).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
    ] {
        headers.remove(name);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Appends the client's address to `x-forwarded-for`, as Envoy does.
fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_canonical().to_string();
    let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(previous) => format!("{previous}, {ip}"),
        None => ip,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert("x-forwarded-for", value);
    }
}

fn fault_abort(error: &AbortError) -> LocalReply {
    match error {
        AbortError::HttpStatus(status) => LocalReply::new(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "FI",
            "fault filter abort\n",
        ),
        AbortError::GrpcStatus(name) => {
            let code = traffic_shift_config::GRPC_STATUS
                .iter()
                .position(|c| c == name)
                .unwrap_or(2);
            LocalReply {
                status: StatusCode::OK,
                flags: "FI",
                body: format!("fault filter abort: grpc-status {code}\n"),
            }
        }
    }
}

fn full_response(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let mut response = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
}

fn reply_response(reply: &LocalReply) -> Response<ProxyBody> {
    let mut response = full_response(reply.status, Bytes::from(reply.body.clone()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if let Some(code) = reply.body.strip_prefix("fault filter abort: grpc-status ")
        && let Ok(value) = HeaderValue::from_str(code.trim())
    {
        response.headers_mut().insert("grpc-status", value);
    }
    response
}

/// An error and its causes on one line.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
