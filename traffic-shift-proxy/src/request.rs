//! One request, from the listener to the answer: the listener (by Gateway
//! key, or by the service address the client connected to), the virtual host
//! by authority, the first route whose matches admit it ([`route_for`] gives
//! the same decision to the fuzz target); then the route's local answer
//! (`local`), or a destination picked per request, the body read, mirrors
//! sent (`mirror`) and the request forwarded (`forward`); each request counted
//! in its route's metrics when its answer has gone to the client.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Instant};

use http_body_util::{BodyExt, Limited};
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{self, HeaderValue},
};
use traffic_shift_config::{
    labels::{IstioLabels, Reporter},
    model::{Endpoint, HttpListener, HttpSelection},
};

use crate::{
    Proxy, ProxyBody,
    forward::{outgoing, strip_hop_by_hop},
    local::{LocalReply, reply_response},
    rewrite,
    routes::{self, Config, MatchedUri, RegexError, RequestView, Route},
    select,
    server::Target,
    stats::Handles,
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
    pub(crate) fn handles(
        &self,
        cx: &Routed<'_>,
        dest: Option<usize>,
        endpoint: Option<&Endpoint>,
        code: u16,
        flags: &'static str,
    ) -> Handles {
        let key = (dest, endpoint.map(|e| e.addr), code, flags);
        cx.route.series.get(key, || {
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
            self.metrics.handles(&labels, code, flags, Some(counts))
        })
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
pub(crate) struct Routed<'a> {
    pub(crate) peer: SocketAddr,
    /// The listener's port.
    pub(crate) port: u16,
    pub(crate) route: &'a Route,
    pub(crate) matched: MatchedUri,
    /// As the client sent it.
    pub(crate) authority: String,
    pub(crate) reporter: Reporter<'a>,
    pub(crate) start: Instant,
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
