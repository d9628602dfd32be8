//! Forwarding to the upstream: the request as it goes to the endpoint
//! (hop-by-hop headers removed, `x-forwarded-*` set, header operations and
//! rewrite applied), the pooled HTTP/1.1 and h2c clients, and the attempts
//! with the route's timeout and retries (Envoy's `retryOn` policies), each
//! outcome counted per endpoint for outlier detection.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use http_body_util::BodyExt;
use hyper::{
    Request, Response, StatusCode, Uri, Version,
    body::Incoming,
    header::{self, HeaderMap, HeaderName, HeaderValue},
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use traffic_shift_config::model::Endpoint;

use crate::{
    Proxy, ProxyBody,
    body::{BodyError, Outbound, RequestBody},
    local::LocalReply,
    request::Routed,
    rewrite,
    routes::Route,
    select,
};

/// How long a retry waits for the attempt before it to let go of the
/// request body (its connection drops it once the body is sent).
const REPLAY_WAIT: Duration = Duration::from_secs(1);

/// The upstream connection pools, HTTP/1.1 and h2c (prior knowledge), by
/// endpoint; they outlive configuration updates.
pub(crate) struct Upstream {
    http1: Client<HttpConnector, RequestBody>,
    http2: Client<HttpConnector, RequestBody>,
}

impl Upstream {
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        let client = |http2: bool| {
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(connect_timeout));
            connector.set_nodelay(true);
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(256)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .http2_only(http2)
                .build(connector)
        };
        Self {
            http1: client(false),
            http2: client(true),
        }
    }

    /// The pool of h2c connections if `http2`, else of HTTP/1.1 ones.
    pub(crate) fn client(&self, http2: bool) -> &Client<HttpConnector, RequestBody> {
        if http2 { &self.http2 } else { &self.http1 }
    }
}

impl Proxy {
    /// Sends the request to an endpoint of destination `index` (picked by
    /// its `endpoint_selection`, `endpoint_hash` the request's key for it),
    /// with the route's timeout and retries. Returns the answer (or the local error
    /// reply), the endpoint that gave it, and the response flags. A retry
    /// needs the body again: one that outgrew the replay buffer is not
    /// retried (the answer of the attempt that failed stands).
    pub(crate) async fn forward<'r>(
        &self,
        route: &'r Route,
        index: usize,
        endpoint_hash: Option<u32>,
        outgoing: &Outgoing,
        body: &mut Outbound,
        start: Instant,
    ) -> (
        Result<Response<ProxyBody>, LocalReply>,
        Option<&'r Endpoint>,
        &'static str,
    ) {
        let model = &route.model;
        let chosen = &model.destinations[index];
        // A gRPC call goes over h2c whatever the port's protocol: it cannot
        // be carried by HTTP/1.1 (Envoy's USE_DOWNSTREAM_PROTOCOL, which
        // Istio sets for ports it does not know to be HTTP/2).
        let (dest, http2) = (&chosen.destination, chosen.http2 || outgoing.is_grpc());
        let retries = &model.retries;
        let deadline = model.timeout.map(|timeout| start + timeout);
        let attempts = retries.attempts.saturating_add(1);
        if dest.is_unusable() {
            return (Err(unusable(outgoing)), None, "NC");
        }
        let mut attempt = 0;
        let mut next_body = body.first();
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
            let request = outgoing.to_request(
                endpoint.addr,
                http2,
                next_body.take().unwrap_or(RequestBody::Empty),
            );
            let client = self.upstream.client(http2);
            let sent = client.request(request);
            let result = match limit {
                Some(limit) => tokio::time::timeout(limit, sent).await.map_err(|_| ()),
                None => Ok(sent.await),
            };
            let outcome = match result {
                Ok(Ok(response)) => Attempt::Answer(response),
                Ok(Err(err)) if err.is_connect() => Attempt::ConnectFailure(error_chain(&err)),
                Ok(Err(err)) => match body_error(&err) {
                    Some(BodyError::Idle(_)) => Attempt::BodyTimeout,
                    Some(_) => Attempt::BadBody(error_chain(&err)),
                    None => Attempt::Reset(error_chain(&err)),
                },
                Err(()) => Attempt::Timeout,
            };
            if !matches!(outcome, Attempt::BodyTimeout | Attempt::BadBody(_)) {
                // The client's body failed: no fault of the endpoint.
                self.outcomes.record(endpoint.addr, outcome.status());
            }
            let deadline_passed = deadline.is_some_and(|d| Instant::now() >= d);
            if attempt < attempts && !deadline_passed && outcome.retriable(&retries.retry_on) {
                let backoff = retries.backoff.unwrap_or(Duration::from_millis(25));
                let backoff = deadline.map_or(backoff, |d| {
                    backoff.min(d.saturating_duration_since(Instant::now()))
                });
                tokio::time::sleep(backoff).await;
                let wait = deadline.map_or(REPLAY_WAIT, |d| {
                    REPLAY_WAIT.min(d.saturating_duration_since(Instant::now()))
                });
                next_body = body.again(wait).await;
                if next_body.is_some() {
                    tracing::debug!(route = %model.key, endpoint = %endpoint.addr, status = outcome.status(), attempt, "L7 proxy: retrying");
                    continue;
                }
                tracing::debug!(
                    route = %model.key, endpoint = %endpoint.addr, status = outcome.status(), attempt,
                    overflowed = body.overflowed(),
                    "L7 proxy: not retried: the request body is not kept (it outgrew the replay buffer, or the attempt still holds it)"
                );
            }
            return match outcome.into_answer() {
                Ok(response) => (Ok(response), Some(endpoint), "-"),
                Err(reply) => {
                    let flags = reply.flags;
                    (Err(reply), Some(endpoint), flags)
                }
            };
        }
    }
}

/// The request as it goes to destination `index` of the route:
/// hop-by-hop headers removed, authority kept (or rewritten),
/// `x-forwarded-*` set, header operations (the destination's, then the
/// route's) and uri rewrite (the destination's own, else the route's)
/// applied. Returns it with the authority it carries.
pub(crate) fn outgoing(
    cx: &Routed<'_>,
    index: usize,
    parts: hyper::http::request::Parts,
) -> (Outgoing, String) {
    let model = &cx.route.model;
    let chosen = &model.destinations[index];
    let rewrite = cx.route.rewrite_for(index);
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    let authority = rewrite
        .and_then(|(r, _)| r.authority.clone())
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
    let path_and_query = rewrite
        .and_then(|(r, uri_regex)| {
            rewrite::rewrite_path(
                r,
                uri_regex,
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
    };
    (outgoing, authority)
}

/// What one upstream attempt gave.
enum Attempt {
    Answer(Response<Incoming>),
    ConnectFailure(String),
    Reset(String),
    Timeout,
    /// The client stalled mid-body (not retried).
    BodyTimeout,
    /// The client's body failed (not retried).
    BadBody(String),
}

impl Attempt {
    /// The answer to pass on, or the local reply (with Envoy's flag) that
    /// stands for the failure.
    fn into_answer(self) -> Result<Response<ProxyBody>, LocalReply> {
        let reply = match self {
            Self::Answer(response) => return Ok(response.map(BodyExt::boxed)),
            Self::ConnectFailure(why) => LocalReply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UF",
                format!(
                    "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: {why}\n"
                ),
            ),
            Self::Reset(why) => LocalReply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UC",
                format!(
                    "upstream connect error or disconnect/reset before headers. reset reason: connection termination ({why})\n"
                ),
            ),
            Self::Timeout => LocalReply::new(
                StatusCode::GATEWAY_TIMEOUT,
                "UT",
                "upstream request timeout\n",
            ),
            Self::BodyTimeout => {
                LocalReply::new(StatusCode::REQUEST_TIMEOUT, "DPE", "request body timeout\n")
            }
            Self::BadBody(why) => LocalReply::new(
                StatusCode::BAD_REQUEST,
                "DPE",
                format!("bad request body: {why}\n"),
            ),
        };
        Err(reply)
    }

    /// The status it counts as (a local error as Envoy answers it).
    fn status(&self) -> u16 {
        match self {
            Self::Answer(response) => response.status().as_u16(),
            Self::ConnectFailure(_) | Self::Reset(_) => 503,
            Self::Timeout => 504,
            Self::BodyTimeout => 408,
            Self::BadBody(_) => 400,
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
            Self::BodyTimeout | Self::BadBody(_) => false,
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

/// The head of the request as it goes upstream (its body streams:
/// [`Outbound`]).
#[derive(Clone)]
pub(crate) struct Outgoing {
    pub(crate) method: hyper::Method,
    pub(crate) path_and_query: String,
    pub(crate) headers: HeaderMap,
}

impl Outgoing {
    /// Whether it is a gRPC call (`content-type: application/grpc...`).
    pub(crate) fn is_grpc(&self) -> bool {
        crate::grpc::is_grpc(&self.headers)
    }

    pub(crate) fn to_request(
        &self,
        endpoint: SocketAddr,
        http2: bool,
        body: RequestBody,
    ) -> Request<RequestBody> {
        let uri = Uri::try_from(format!("http://{endpoint}{}", self.path_and_query))
            .unwrap_or_else(|_| Uri::from_static("/"));
        let mut request = Request::new(body);
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

/// The answer to the share of a Gateway API backendRef that cannot be
/// used: Envoy's cluster_not_found, which Istio answers 500; to a gRPC call
/// 503, which it reads as UNAVAILABLE, as GRPCRoute's spec says.
fn unusable(outgoing: &Outgoing) -> LocalReply {
    LocalReply::new(
        if outgoing.is_grpc() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        },
        "NC",
        "the backend of this share of the route cannot be used\n",
    )
}

/// Removes the headers that describe one connection (RFC 9110 7.6.1), and
/// those the `Connection` header names; `te: trailers` stays (gRPC needs it).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
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

/// The request body's own error, when that is what failed an attempt.
fn body_error<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e BodyError> {
    let mut source = Some(err);
    while let Some(cause) = source {
        if let Some(body) = cause.downcast_ref::<BodyError>() {
            return Some(body);
        }
        source = cause.source();
    }
    None
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
