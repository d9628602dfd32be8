//! Local replies: what the proxy answers itself, without an upstream. A
//! route's fault injection (a delay, then an abort), its `redirect` and
//! `direct_response`, and the errors, each with Envoy's response flag (`NR`
//! no route, `UH` no healthy upstream, `UF`/`UC` connect failure/reset, `UT`
//! timeout, `FI` fault, `DPE` bad request body), counted in the metrics.

use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{self, HeaderValue},
};
use traffic_shift_config::{
    http::{AbortError, DelayKind, HttpRedirect},
    labels::IstioLabels,
};

use crate::{Proxy, ProxyBody, request::Routed, rewrite, select};

/// Why the proxy answered itself, with Envoy's response flag.
pub(crate) struct LocalReply {
    pub(crate) status: StatusCode,
    pub(crate) flags: &'static str,
    pub(crate) body: String,
}

impl LocalReply {
    pub(crate) fn new(status: StatusCode, flags: &'static str, body: impl Into<String>) -> Self {
        Self {
            status,
            flags,
            body: body.into(),
        }
    }
}

impl Proxy {
    /// Fault injection, `redirect`, `direct_response`: the answers a route
    /// gives without an upstream (`Err`); else the request back.
    pub(crate) async fn answer_locally(
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
            redirect_response(cx, redirect, cx.route.uri_regex.as_ref(), request.uri())
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

    /// The redirect of destination `index` of `cx`'s route (a backendRef's
    /// own `RequestRedirect`), when it has one: answered, with the
    /// destination's and the route's response headers, and counted for
    /// that destination.
    pub(crate) fn destination_redirect(
        &self,
        cx: &Routed<'_>,
        index: usize,
        uri: &hyper::Uri,
    ) -> Option<Response<ProxyBody>> {
        let chosen = &cx.route.model.destinations[index];
        let redirect = chosen.actions.as_deref()?.redirect.as_ref()?;
        let uri_regex = cx.route.destination_uri_regex.get(index)?.as_ref();
        let mut response = redirect_response(cx, redirect, uri_regex, uri);
        rewrite::apply_headers(response.headers_mut(), &chosen.headers.response);
        rewrite::apply_headers(response.headers_mut(), &cx.route.model.headers.response);
        self.handles(cx, Some(index), None, response.status().as_u16(), "-")
            .record(cx.start.elapsed());
        Some(response)
    }

    /// A reply of the proxy's own to a request of `cx`'s route, counted in
    /// its metrics.
    pub(crate) fn route_local(
        &self,
        cx: &Routed<'_>,
        dest: Option<usize>,
        reply: &LocalReply,
    ) -> Response<ProxyBody> {
        self.handles(cx, dest, None, reply.status.as_u16(), reply.flags)
            .record(cx.start.elapsed());
        reply_response(reply)
    }

    /// A reply of the proxy's own to a request no route took, counted under
    /// `labels`.
    pub(crate) fn local(
        &self,
        labels: &IstioLabels,
        start: Instant,
        reply: &LocalReply,
    ) -> Response<ProxyBody> {
        if labels.get("request_protocol") == "grpc" {
            self.metrics
                .grpc_handles(
                    labels,
                    reply.status.as_u16(),
                    reply.flags,
                    None,
                    crate::grpc::status_of_http(reply.status),
                )
                .record(start.elapsed());
        } else {
            self.metrics
                .record(labels, reply.status.as_u16(), reply.flags, start.elapsed());
        }
        reply_response(reply)
    }
}

/// The answer of `redirect` (the route's, or one destination's, with its
/// compiled path regex) to a request for `uri`. Without a scheme, the
/// request's: https on an HTTPS listener.
fn redirect_response(
    cx: &Routed<'_>,
    redirect: &HttpRedirect,
    uri_regex: Option<&(regex::Regex, String)>,
    uri: &hyper::Uri,
) -> Response<ProxyBody> {
    let from_https;
    let redirect = if redirect.scheme.is_none() && cx.https {
        from_https = HttpRedirect {
            scheme: Some("https".to_owned()),
            ..redirect.clone()
        };
        &from_https
    } else {
        redirect
    };
    let location = rewrite::redirect_location(
        redirect,
        uri_regex,
        &cx.matched,
        &cx.authority,
        cx.port,
        uri.path(),
        uri.query(),
    );
    let status =
        StatusCode::from_u16(redirect.redirect_code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    let mut response = full_response(status, Bytes::new());
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
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

/// A response of the proxy's own, marked as such (a gRPC call gets it as
/// `grpc`'s trailers-only answer).
fn full_response(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let message = String::from_utf8_lossy(&body).into_owned();
    let mut response = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
        .extensions_mut()
        .insert(crate::grpc::Local { message });
    response
}

/// An empty body.
pub(crate) fn empty_body() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn reply_response(reply: &LocalReply) -> Response<ProxyBody> {
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
