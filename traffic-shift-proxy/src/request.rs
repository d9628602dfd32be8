//! One request, from the listener to the answer: the listener (by Gateway
//! key, or by the service address the client connected to), the virtual host
//! by authority, the first route whose matches admit it ([`route_for`] gives
//! the same decision to the fuzz target); then the route's local answer
//! (`local`), or a destination picked per request, the body read, mirrors
//! sent (`mirror`) and the request forwarded (`forward`); each request counted
//! in its route's metrics when its answer has gone to the client.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Instant};

use http_body_util::BodyExt;
use hyper::{
    Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderValue},
    upgrade::OnUpgrade,
};
use hyper_util::rt::TokioIo;
use traffic_shift_config::{
    labels::{IstioLabels, Reporter},
    model::{Endpoint, HttpListener, HttpSelection},
};

use crate::{
    Proxy, ProxyBody,
    body::{Outbound, Replayable, Source},
    cors::Verdict,
    forward::{outgoing, strip_hop_by_hop},
    local::{LocalReply, reply_response},
    rewrite,
    routes::{self, Config, MatchedUri, RegexError, RequestView, Route},
    select,
    server::{ServerName, Target},
    stats::{Handles, SeriesCounts},
};

/// Which route of `listeners` a request takes, as the proxy decides it
/// (listener by key, virtual host by authority, first route whose matches
/// admit it), and the path it is sent with after the route's rewrite: for
/// the fuzz target and tests. `Err`: the rules' regexes do not compile.
pub fn route_for(
    listeners: &[HttpListener],
    key: &str,
    request: &Request<()>,
) -> Result<Option<(String, String)>, RegexError> {
    let config = Config::build(listeners.to_vec(), |_, _| Default::default())?;
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

impl Proxy {
    /// Serves one request of a connection to `target` from `peer`: a local
    /// reply when the head is too large or no route takes it, else the
    /// route's answer.
    pub(crate) async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        target: &Target,
    ) -> Response<ProxyBody> {
        if crate::grpc::is_grpc(request.headers()) {
            // The proxy's own answers to a gRPC call, as gRPC clients read them.
            return crate::grpc::local_reply(self.answer(request, peer, target).await);
        }
        self.answer(request, peer, target).await
    }

    /// hyper bounds what it buffers, but a head that arrived in one read
    /// can exceed it: refused here too, as Envoy does (431).
    fn head_too_large(&self, request: &Request<Incoming>) -> Option<LocalReply> {
        let head: usize = request.uri().to_string().len()
            + request
                .headers()
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum::<usize>();
        (head > self.options.max_header_bytes).then(|| {
            LocalReply::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "-",
                format!(
                    "request headers too large: {head} bytes, at most {}\n",
                    self.options.max_header_bytes
                ),
            )
        })
    }

    /// [`Self::handle`]'s answer, as HTTP.
    async fn answer(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        target: &Target,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        if let Some(reply) = self.head_too_large(&request) {
            return self.local(&unknown_labels(), start, &reply);
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
            // Istio's request_protocol: grpc for a gRPC call.
            protocol: if crate::grpc::is_grpc(request.headers()) {
                "grpc"
            } else {
                "http"
            },
        };
        let no_route = |why: String| {
            (
                reporter.labels(None, &BTreeMap::new()),
                LocalReply::new(StatusCode::NOT_FOUND, "NR", format!("no route: {why}\n")),
            )
        };
        let authority = authority(&request);
        if let Some(ServerName(sni)) = request.extensions().get()
            && let Some(why) = listener.misdirected(sni, &authority)
        {
            let labels = reporter.labels(None, &BTreeMap::new());
            let reply = LocalReply::new(StatusCode::MISDIRECTED_REQUEST, "-", why);
            return self.local(&labels, start, &reply);
        }
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
            https: listener.https,
            route,
            matched,
            authority,
            reporter,
            start,
        };
        self.served(&cx, request).await
    }

    /// The answer of the request's route: its CORS preflight answer, its
    /// local answer, or its destination's; an allowed origin's CORS headers
    /// added to either of the last two.
    async fn served(&self, cx: &Routed<'_>, request: Request<Incoming>) -> Response<ProxyBody> {
        let mut allowed = None;
        if let Some(cors) = &cx.route.cors {
            match cors.verdict(request.method(), request.headers()) {
                Verdict::Pass => {}
                Verdict::Answer(response) => {
                    self.handles(cx, None, None, response.status().as_u16(), "-")
                        .record(cx.start.elapsed());
                    return response;
                }
                Verdict::Allowed(origin) => allowed = Some((cors, origin)),
            }
        }
        let mut response = match self.answer_locally(cx, request).await {
            Ok(request) => self.routed(cx, request).await,
            Err(response) => response,
        };
        if let Some((cors, origin)) = allowed {
            cors.allowed(origin, response.headers_mut());
        }
        response
    }

    /// A request that goes to a destination of its route. Its body streams
    /// to the endpoint (kept for retries and mirrors up to the replay
    /// buffer); an HTTP/1.1 upgrade answered 101 is spliced both ways.
    async fn routed(&self, cx: &Routed<'_>, mut request: Request<Incoming>) -> Response<ProxyBody> {
        let model = &cx.route.model;
        let hash = request_hash(&model.selection, &request, cx.peer);
        let index = cx.route.slots.pick(&model.selection, &cx.route.state, hash);
        let index = index.min(model.destinations.len() - 1);
        let chosen = &model.destinations[index];
        if let Some(response) = self.destination_redirect(cx, index, request.uri()) {
            return response;
        }

        let endpoint_hash = request_hash(&chosen.endpoint_selection, &request, cx.peer);
        // An upgrade goes on to an HTTP/1.1 endpoint only (h2c has none).
        let upgrade = upgrade_protocol(&request)
            .filter(|_| !chosen.http2)
            .map(|protocol| (protocol, hyper::upgrade::on(&mut request)));
        let (parts, body) = request.into_parts();
        let mirrors = crate::mirror::picked(cx.route, index);
        let mut body = self.outbound(cx, body, chosen.actions.is_some());
        let (mut outgoing, authority) = outgoing(cx, index, parts);
        if let Some((protocol, _)) = &upgrade {
            set_upgrade(&mut outgoing.headers, protocol.clone());
        }
        let kept = match &body {
            Outbound::Replayable(replayable) => Some(replayable.clone()),
            Outbound::Empty | Outbound::Once(_) => None,
        };
        let send_mirrors = |kept: Option<Replayable>| {
            for mirror in &mirrors {
                self.mirror(
                    &outgoing,
                    &authority,
                    &mirror.destination,
                    mirror.http2,
                    model.timeout,
                    kept.clone(),
                );
            }
        };
        // Without a body, at once; with one, from the replay buffer once
        // the request has been sent.
        if kept.is_none() {
            send_mirrors(None);
        }
        let (response, endpoint, flags) = self
            .forward(
                cx.route,
                index,
                endpoint_hash,
                &outgoing,
                &mut body,
                cx.start,
            )
            .await;
        if kept.is_some() {
            send_mirrors(kept);
        }
        let code = match &response {
            Ok(response) => response.status().as_u16(),
            Err(reply) => reply.status.as_u16(),
        };
        // Counted when the body has gone to the client (or the client
        // left; an upgraded connection: when it closes): Istio's duration
        // is the whole exchange.
        let head = response.as_ref().ok().map(Response::headers);
        let series = self.series(cx, (index, endpoint), code, flags, head);
        let mut done = Recorded {
            series,
            start: cx.start,
        };
        let mut response = match response {
            Ok(mut response) => {
                let upgraded = upgrade
                    .filter(|_| response.status() == StatusCode::SWITCHING_PROTOCOLS)
                    .and_then(|(_, client)| {
                        let protocol = response.headers().get(header::UPGRADE)?.clone();
                        Some((protocol, client))
                    });
                strip_hop_by_hop(response.headers_mut());
                if let Some((protocol, client)) = upgraded {
                    set_upgrade(response.headers_mut(), protocol);
                    let upstream = hyper::upgrade::on(&mut response);
                    tokio::spawn(splice_upgraded(client, upstream, done));
                    response.map(BodyExt::boxed)
                } else {
                    response.map(|body| {
                        body.map_frame(move |frame| {
                            if let Some(trailers) = frame.trailers_ref() {
                                done.trailers(trailers);
                            }
                            frame
                        })
                        .boxed()
                    })
                }
            }
            Err(reply) => {
                drop(done);
                reply_response(&reply)
            }
        };
        rewrite::apply_headers(response.headers_mut(), &chosen.headers.response);
        rewrite::apply_headers(response.headers_mut(), &model.headers.response);
        response
    }

    /// The request body as its attempts get it: nothing, streamed once, or
    /// kept in a replay buffer when the route may send it again (it
    /// retries or mirrors, or the destination picked may mirror: `mirrored`).
    fn outbound(&self, cx: &Routed<'_>, body: Incoming, mirrored: bool) -> Outbound {
        use hyper::body::Body as _;
        if body.is_end_stream() {
            return Outbound::Empty;
        }
        let source = Source::new(body, self.options.request_header_timeout);
        let model = &cx.route.model;
        if model.retries.attempts == 0 && model.mirrors.is_empty() && !mirrored {
            return Outbound::Once(Some(source));
        }
        let overflow = cx
            .route
            .overflow
            .get_or_init(|| self.metrics.buffer_overflow(&model.key))
            .clone();
        Outbound::Replayable(Replayable::new(
            source,
            self.options.buffer_limit_bytes,
            overflow,
        ))
    }

    /// The series of `cx`'s route a request counts in: destination `dest`
    /// (`None`: the route answered itself; labelled with its first
    /// destination's host), the `endpoint` reached, `code` and `flags`.
    pub(crate) fn handles(
        &self,
        cx: &Routed<'_>,
        dest: Option<usize>,
        endpoint: Option<&Endpoint>,
        code: u16,
        flags: &'static str,
    ) -> Handles {
        if cx.reporter.protocol == "grpc" {
            // The proxy's own answer to a gRPC call: its gRPC status is
            // the HTTP one's (what `grpc::local_reply` sends).
            let (labels, counts) = series_parts(cx, dest, endpoint);
            let status = crate::grpc::status_of_http(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            );
            return self
                .metrics
                .grpc_handles(&labels, code, flags, Some(counts), status);
        }
        let key = (dest, endpoint.map(|e| e.addr), code, flags);
        cx.route.series.get(key, || {
            let (labels, counts) = series_parts(cx, dest, endpoint);
            self.metrics.handles(&labels, code, flags, Some(counts))
        })
    }

    /// The series an answer from an endpoint counts in: a gRPC call's
    /// waits for the status of its trailers (`head`: the answer's headers,
    /// `None` for the proxy's own).
    fn series(
        &self,
        cx: &Routed<'_>,
        (index, endpoint): (usize, Option<&Endpoint>),
        code: u16,
        flags: &'static str,
        head: Option<&hyper::HeaderMap>,
    ) -> Series {
        match head {
            Some(head) if cx.reporter.protocol == "grpc" => {
                let (labels, counts) = series_parts(cx, Some(index), endpoint);
                Series::Grpc(GrpcSeries {
                    metrics: Arc::clone(&self.metrics),
                    labels,
                    code,
                    flags,
                    counts,
                    status: crate::grpc::status_in(head),
                })
            }
            _ => Series::Known(self.handles(cx, Some(index), endpoint, code, flags)),
        }
    }
}

/// The labels and `status` counts of `cx`'s route's series for
/// destination `dest` and `endpoint` (see [`Proxy::handles`]).
fn series_parts(
    cx: &Routed<'_>,
    dest: Option<usize>,
    endpoint: Option<&Endpoint>,
) -> (IstioLabels, Arc<SeriesCounts>) {
    let destinations = &cx.route.model.destinations;
    let host = destinations
        .get(dest.unwrap_or(0))
        .map(|d| d.destination.host.as_str());
    let no_labels = BTreeMap::new();
    let labels = cx
        .reporter
        .labels(host, endpoint.map_or(&no_labels, |e| &e.labels));
    let destination = dest
        .and_then(|i| destinations.get(i))
        .map(|d| (d.destination.host.clone(), d.destination.subset.clone()));
    let counts = cx
        .route
        .counts
        .series((destination, endpoint.map(|e| e.addr)));
    (labels, counts)
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
    series: Series,
    start: Instant,
}

/// The series a request counts in: known when the answer's head came, or
/// for a gRPC call, with the status of its trailers.
enum Series {
    Known(Handles),
    Grpc(GrpcSeries),
}

/// A gRPC call's series but for its `grpc_response_status`.
struct GrpcSeries {
    metrics: Arc<crate::stats::RequestMetrics>,
    labels: IstioLabels,
    code: u16,
    flags: &'static str,
    counts: Arc<SeriesCounts>,
    /// `grpc-status` of the head (trailers-only) or of the trailers.
    status: Option<u32>,
}

impl Recorded {
    /// The answer's trailers went by: a gRPC call's status.
    fn trailers(&mut self, trailers: &hyper::HeaderMap) {
        if let Series::Grpc(grpc) = &mut self.series
            && let Some(status) = crate::grpc::status_in(trailers)
        {
            grpc.status = Some(status);
        }
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        match &self.series {
            Series::Known(handles) => handles.record(elapsed),
            // No grpc-status: what a client makes of the HTTP status.
            Series::Grpc(grpc) => grpc
                .metrics
                .grpc_handles(
                    &grpc.labels,
                    grpc.code,
                    grpc.flags,
                    Some(Arc::clone(&grpc.counts)),
                    grpc.status.unwrap_or_else(|| {
                        crate::grpc::status_of_http(
                            StatusCode::from_u16(grpc.code).unwrap_or(StatusCode::OK),
                        )
                    }),
                )
                .record(elapsed),
        }
    }
}

/// A request's route and what the route's actions need of it.
pub(crate) struct Routed<'a> {
    pub(crate) peer: SocketAddr,
    /// The listener's port.
    pub(crate) port: u16,
    /// The listener terminates TLS: the request's scheme is `https`.
    pub(crate) https: bool,
    pub(crate) route: &'a Route,
    pub(crate) matched: MatchedUri,
    /// As the client sent it.
    pub(crate) authority: String,
    pub(crate) reporter: Reporter<'a>,
    pub(crate) start: Instant,
}

/// The protocol an HTTP/1.1 request asks to switch to (`Connection:
/// upgrade` and `Upgrade: <protocol>`, e.g. a WebSocket handshake).
fn upgrade_protocol(request: &Request<Incoming>) -> Option<HeaderValue> {
    if request.version() != hyper::Version::HTTP_11 {
        return None;
    }
    let asks = request
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| request.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// Puts back the headers of an upgrade that hop-by-hop stripping removed.
fn set_upgrade(headers: &mut hyper::HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Copies the bytes of an upgraded connection both ways, client and
/// endpoint, until either side closes; then counts the request.
async fn splice_upgraded(client: OnUpgrade, upstream: OnUpgrade, done: Recorded) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(err) => {
            tracing::debug!(%err, "L7 proxy: an upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((sent, received)) => {
            tracing::debug!(sent, received, "L7 proxy: upgraded connection closed");
        }
        Err(err) => tracing::debug!(%err, "L7 proxy: upgraded connection ended with an error"),
    }
    drop(done);
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
        // A unix socket's client has no address (`0.0.0.0:0`): no key,
        // so at random, as Envoy hashes no pipe address.
        HttpSelection::SourceIp => (!peer.ip().is_unspecified()).then(|| select::client_hash(peer)),
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
