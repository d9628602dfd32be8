//! gRPC for the end-to-end tests: the `grpc-echo` backend and the client
//! `ts-client` calls it with. Unary calls over h2c (HTTP/2 with prior
//! knowledge, as the Gateway API asks of an HTTP listener serving
//! GRPCRoutes); messages encoded with prost, framed as gRPC frames them
//! (a compression flag, a 4-byte big-endian length, the message), the
//! status in the trailers (`grpc-status`, `grpc-message`) or, for an
//! answer without a message, in the headers (trailers-only).
//!
//! The service is the conformance suite's
//! (`gateway_api_conformance.echo_basic.grpcecho.GrpcEcho`, methods `Echo`,
//! `EchoTwo`, `EchoThree`; the backend answers these methods of any
//! service, as the suite's older manifests name it `grpc_echo`); every
//! answer names the backend, in the message and in the header
//! `x-backend`, as the suite's `grpc-echo` does.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use http_body_util::{BodyExt as _, Full};
use hyper::{
    HeaderMap, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{CONTENT_TYPE, HeaderValue},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use tokio::net::{TcpListener, TcpStream};

/// The conformance suite's echo service.
pub const SERVICE: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

/// The methods the echo service answers.
pub const METHODS: [&str; 3] = ["Echo", "EchoTwo", "EchoThree"];

/// gRPC's `UNIMPLEMENTED`: what a method nothing serves gets.
pub const UNIMPLEMENTED: u32 = 12;
/// gRPC's `UNAVAILABLE`.
pub const UNAVAILABLE: u32 = 14;

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
}

/// What the backend answers: who it is, what it was asked, the request
/// headers it saw (lower case; several values joined by `,`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoResponse {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(string, tag = "2")]
    pub backend: String,
    #[prost(string, tag = "3")]
    pub method: String,
    #[prost(string, tag = "4")]
    pub authority: String,
    #[prost(btree_map = "string, string", tag = "5")]
    pub headers: BTreeMap<String, String>,
    /// The calls this backend answered before this one (mirrored copies
    /// included).
    #[prost(uint64, tag = "6")]
    pub calls: u64,
}

/// One message, framed: flag 0 (not compressed), length, bytes.
fn frame(message: &impl prost::Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(0);
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&body);
    Bytes::from(out)
}

/// The one message of a unary call's body.
fn unframe(body: &[u8]) -> Result<&[u8], String> {
    let Some((&[flag, a, b, c, d], rest)) = body.split_first_chunk::<5>() else {
        return Err(format!(
            "a gRPC message needs a 5-byte prefix, got {} bytes",
            body.len()
        ));
    };
    if flag != 0 {
        return Err("compressed messages are not read".to_owned());
    }
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    rest.get(..len)
        .ok_or_else(|| format!("the message is {len} bytes, the body has {}", rest.len()))
}

/// Serves the echo service as backend `name` on `listener`, h2c only.
pub async fn serve(listener: TcpListener, name: String) {
    let calls = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let name = name.clone();
        let calls = Arc::clone(&calls);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let name = name.clone();
                let calls = Arc::clone(&calls);
                async move { Ok::<_, Infallible>(answer(request, &name, &calls).await) }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A trailers-only answer: the status in the headers, no message.
fn status_only(code: u32, message: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()).boxed());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(value) = HeaderValue::from_str(message) {
        headers.insert("grpc-message", value);
    }
    response
}

async fn answer(request: Request<Incoming>, name: &str, calls: &AtomicU64) -> Response<Body> {
    let grpc = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !grpc {
        let mut response = Response::new(Full::new(Bytes::from("not a gRPC request\n")).boxed());
        *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return response;
    }
    let path = request.uri().path().to_owned();
    let method = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .filter(|(_, method)| METHODS.contains(method))
        .map(|(_, method)| method.to_owned());
    let Some(method) = method else {
        return status_only(UNIMPLEMENTED, &format!("unknown method {path}"));
    };
    let authority = request
        .uri()
        .authority()
        .map(ToString::to_string)
        .unwrap_or_default();
    // A header given several times: its values joined by `,` in order.
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in request.headers() {
        let Ok(value) = value.to_str() else { continue };
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push(',');
                v.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
    }
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) => return status_only(13, &format!("request body: {err}")),
    };
    let message = match unframe(&body)
        .and_then(|m| EchoRequest::decode(m).map_err(|e| format!("not an EchoRequest: {e}")))
    {
        Ok(request) => request.message,
        Err(err) => return status_only(13, &err),
    };
    let reply = EchoResponse {
        message,
        backend: name.to_owned(),
        method,
        authority,
        headers,
        calls: calls.fetch_add(1, Ordering::Relaxed),
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(0));
    let body = Full::new(frame(&reply))
        .with_trailers(async move { Some(Ok(trailers)) })
        .boxed();
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    if let Ok(value) = HeaderValue::from_str(name) {
        headers.insert("x-backend", value);
    }
    response
}

/// The outcome of one call.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The HTTP status of the answer.
    pub http_status: u16,
    /// `grpc-status`; without one, from the HTTP status as gRPC clients
    /// map it (404: `UNIMPLEMENTED`, 503: `UNAVAILABLE`, ...).
    pub code: u32,
    pub grpc_message: Option<String>,
    /// The backend's answer, when the call succeeded.
    pub response: Option<EchoResponse>,
    /// The `x-backend` header, and the response headers of the answer.
    pub headers: BTreeMap<String, String>,
}

/// What a gRPC client makes of an HTTP status without `grpc-status` (the
/// gRPC spec's "HTTP to gRPC status code mapping").
pub fn code_of_http(status: u16) -> u32 {
    // 200 without grpc-status, and any status not listed: UNKNOWN.
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => UNIMPLEMENTED,
        429 | 502..=504 => UNAVAILABLE,
        _ => 2,
    }
}

/// One h2c connection to a gRPC server (or the proxy), for calls one
/// after the other.
pub struct Connection {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    authority: String,
}

impl Connection {
    /// Connects to `addr`; calls carry `authority` as `:authority`.
    pub async fn open(addr: SocketAddr, authority: &str) -> Result<Self, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| format!("h2 handshake with {addr}: {e}"))?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            authority: authority.to_owned(),
        })
    }

    /// One unary call of `method` (`Echo`, or a whole path `/svc/Method`)
    /// with `headers` (names as given).
    pub async fn call(
        &mut self,
        method: &str,
        headers: &[(String, String)],
    ) -> Result<Reply, String> {
        let path = if method.starts_with('/') {
            method.to_owned()
        } else {
            format!("/{SERVICE}/{method}")
        };
        let mut request = Request::post(format!("http://{}{path}", self.authority))
            .header(CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .body(Full::new(frame(&EchoRequest {
                message: "hello".to_owned(),
            })))
            .map_err(|e| e.to_string())?;
        for (name, value) in headers {
            let name = hyper::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("header {name}: {e}"))?;
            let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
            request.headers_mut().insert(name, value);
        }
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("call: {e}"))?;
        let http_status = response.status().as_u16();
        let head = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("answer body: {e}"))?;
        let trailers = body.trailers().cloned().unwrap_or_default();
        let bytes = body.to_bytes();
        let text = |name: &str| {
            trailers
                .get(name)
                .or_else(|| head.get(name))
                .and_then(|v| v.to_str().ok())
                .map(ToOwned::to_owned)
        };
        let code = text("grpc-status")
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| code_of_http(http_status));
        let response = if code == 0 && !bytes.is_empty() {
            let message = unframe(&bytes)?;
            Some(EchoResponse::decode(message).map_err(|e| format!("not an EchoResponse: {e}"))?)
        } else {
            None
        };
        Ok(Reply {
            http_status,
            code,
            grpc_message: text("grpc-message"),
            response,
            headers: head
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect(),
        })
    }
}
