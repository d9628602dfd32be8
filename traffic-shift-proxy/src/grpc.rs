//! gRPC calls through the proxy. A call (`content-type: application/grpc`)
//! goes upstream over h2c whatever the destination port's protocol
//! (`forward`). An answer the proxy gives itself (no route, no healthy
//! upstream, a timeout, a backend that cannot be used) is turned into
//! what a gRPC client reads, as Envoy does for gRPC requests: HTTP 200,
//! no message, `grpc-status` and `grpc-message` in the headers
//! (trailers-only), the status from the HTTP one by Envoy's table
//! (`Grpc::Utility::httpToGrpcStatus`: 404 `UNIMPLEMENTED`, 503
//! `UNAVAILABLE`, ...).

use hyper::{
    HeaderMap, Response, StatusCode,
    header::{self, HeaderValue},
};

use crate::ProxyBody;

/// Marks a response the proxy made itself, with its text.
#[derive(Clone, Debug)]
pub(crate) struct Local {
    pub(crate) message: String,
}

/// Whether `headers` are a gRPC call's.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The `grpc-status` in `headers` (a head, or trailers).
pub(crate) fn status_in(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Envoy's `httpToGrpcStatus`.
pub(crate) fn status_of_http(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

/// A local reply to a gRPC call, as a gRPC client reads it; any other
/// response unchanged.
pub(crate) fn local_reply(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    let Some(local) = response.extensions_mut().remove::<Local>() else {
        return response;
    };
    let status = response.status();
    let headers = response.headers_mut();
    if !headers.contains_key("grpc-status") {
        headers.insert("grpc-status", HeaderValue::from(status_of_http(status)));
        let message: String = local
            .message
            .trim_end()
            .bytes()
            .map(|b| {
                // grpc-message is percent-encoded outside printable ASCII
                // (and `%` itself).
                if (0x20..0x7f).contains(&b) && b != b'%' {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        if let Ok(value) = HeaderValue::from_str(&message) {
            headers.insert("grpc-message", value);
        }
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::LOCATION);
    *response.status_mut() = StatusCode::OK;
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, crate::local::empty_body())
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;
    use crate::local::{LocalReply, reply_response};

    #[test]
    fn a_local_reply_to_a_call_is_trailers_only_with_envoys_status() {
        for (status, code) in [
            (StatusCode::NOT_FOUND, "12"),
            (StatusCode::SERVICE_UNAVAILABLE, "14"),
            (StatusCode::GATEWAY_TIMEOUT, "14"),
            (StatusCode::BAD_REQUEST, "13"),
            (StatusCode::INTERNAL_SERVER_ERROR, "2"),
        ] {
            let reply = LocalReply::new(status, "NR", "no route: 100% ü\n");
            let response = local_reply(reply_response(&reply));
            let headers = response.headers();
            assert_eq!(response.status(), StatusCode::OK, "{status}");
            assert_eq!(
                headers.get("grpc-status"),
                Some(&HeaderValue::from_static(code)),
                "{status}"
            );
            assert_eq!(
                headers.get("grpc-message"),
                Some(&HeaderValue::from_static("no route: 100%25 %C3%BC")),
                "percent-encoded, as gRPC says"
            );
            assert_eq!(
                headers.get(header::CONTENT_TYPE),
                Some(&HeaderValue::from_static("application/grpc"))
            );
        }
    }

    #[test]
    fn an_upstream_answer_is_left_alone() {
        let mut response = Response::new(crate::local::empty_body());
        *response.status_mut() = StatusCode::NOT_FOUND;
        let response = local_reply(response);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(response.headers().get("grpc-status").is_none());
    }
}
