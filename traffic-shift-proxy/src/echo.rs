//! The demo HTTP backend served by the `http-echo` binary (and by the
//! proxy's tests in-process): answers every request with a JSON body that
//! names its service and version and echoes the request, over HTTP/1.1
//! (keep-alive) and HTTP/2 cleartext.
//!
//! Test controls, by path:
//! - `/status/NNN`: answers status NNN;
//! - `/delay/MS`: waits MS milliseconds, then answers;
//! - `/fail/N`: the next N requests (of any path but `/count`) get 503;
//!   `/fail/N/CODE`: they get CODE (the conformance suite's retry cases);
//!   `/fail/N/0`: their connections are closed without an answer;
//!   `/fail/N/CODE/MS`: each of them waits MS milliseconds first (the
//!   suite's `delayRetry`: only the failing tries are slow);
//! - `/failrate/P`: from now on P percent of the requests get 503, evenly
//!   spread (request k of them fails when `k * P / 100` moves on): exactly
//!   P of every 100 in a row;
//! - `/count`: `{"count": N}`, the requests seen (`/count` itself excluded);
//! - `/bytes/N`: answers N bytes of [`pattern`], streamed (never whole in
//!   memory);
//! - every answer's JSON has `body_bytes`, the request body's length, and
//!   `body_pattern`, whether it was a non-empty run of [`pattern`] from its
//!   start: the body is read as it streams in, counted and checked, not
//!   kept;
//! - a request with `Connection: upgrade` and `Upgrade: P` gets 101 and
//!   then every byte it sends back (a WebSocket-style echo);
//! - `X-Echo-Set-Header: Name:value,Name2:value2` on a request: the answer
//!   carries those headers (the conformance suite's echo server does the
//!   same, so response header filters can be tested against what a backend
//!   sets).

use std::{
    collections::BTreeMap,
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http_body_util::{BodyExt, Either, Full};
use hyper::{
    Request, Response, StatusCode,
    body::{Body, Bytes, Frame, SizeHint},
    header,
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

/// One backend: its names and its counters.
#[derive(Debug)]
pub struct Echo {
    pub service: String,
    pub version: String,
    requests: AtomicU64,
    fail_next: AtomicU64,
    /// The status of the `fail_next` requests (503 unless `/fail/N/CODE`).
    fail_code: AtomicU64,
    /// How long each of the `fail_next` requests waits before it fails,
    /// in milliseconds (`/fail/N/CODE/MS`).
    fail_delay: AtomicU64,
    /// `/failrate/P`: the percentage, and the requests counted since.
    fail_rate: AtomicU64,
    rated: AtomicU64,
    /// Request body bytes received, all requests together.
    body_bytes: AtomicU64,
}

impl Echo {
    pub fn new(service: &str, version: &str) -> Arc<Self> {
        Arc::new(Self {
            service: service.to_owned(),
            version: version.to_owned(),
            requests: AtomicU64::new(0),
            fail_next: AtomicU64::new(0),
            fail_code: AtomicU64::new(503),
            fail_delay: AtomicU64::new(0),
            fail_rate: AtomicU64::new(0),
            rated: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
        })
    }

    /// Requests seen (`/count` excluded).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Request body bytes received, all requests together.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes.load(Ordering::Relaxed)
    }

    /// The next `n` requests get 503.
    pub fn fail_next(&self, n: u64) {
        self.fail_with(Fail {
            n,
            code: 503,
            delay_ms: 0,
        });
    }

    /// The next `n` requests get `code`, each after `delay_ms`.
    fn fail_with(&self, fail: Fail) {
        self.fail_code.store(fail.code, Ordering::Relaxed);
        self.fail_delay.store(fail.delay_ms, Ordering::Relaxed);
        self.fail_next.store(fail.n, Ordering::Relaxed);
    }

    /// Whether this request is one of the `/failrate/P` share.
    fn fails_by_rate(&self) -> bool {
        let rate = self.fail_rate.load(Ordering::Relaxed);
        if rate == 0 {
            return false;
        }
        let k = self.rated.fetch_add(1, Ordering::Relaxed) + 1;
        k * rate / 100 != (k - 1) * rate / 100
    }

    /// The answer to a request; `None`: close the connection without one
    /// (`/fail/N/0`).
    async fn answer(
        &self,
        request: &hyper::http::request::Parts,
        body: Received,
    ) -> Option<Response<EchoBody>> {
        let path = request.uri.path().to_owned();
        if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse().ok()) {
            self.requests.fetch_add(1, Ordering::Relaxed);
            return Some(Response::new(Either::Right(PatternBody {
                left: n,
                offset: 0,
            })));
        }
        if path == "/count" {
            return Some(json(
                StatusCode::OK,
                &serde_json::json!({ "count": self.requests(), "version": self.version }),
            ));
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut status = StatusCode::OK;
        if let Some(fail) = path.strip_prefix("/fail/").and_then(fail_args) {
            self.fail_with(fail);
        } else if let Some(p) = path
            .strip_prefix("/failrate/")
            .and_then(|p| p.parse::<u64>().ok())
        {
            self.rated.store(0, Ordering::Relaxed);
            self.fail_rate.store(p.min(100), Ordering::Relaxed);
        } else if self.fails_by_rate() {
            status = StatusCode::SERVICE_UNAVAILABLE;
        } else if self
            .fail_next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            let code = u16::try_from(self.fail_code.load(Ordering::Relaxed)).unwrap_or(503);
            let delay = self.fail_delay.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if code == 0 {
                return None;
            }
            status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        } else if let Some(code) = path.strip_prefix("/status/").and_then(|c| c.parse().ok()) {
            status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
        } else if let Some(ms) = path.strip_prefix("/delay/").and_then(|ms| ms.parse().ok()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let authority = request
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| request.uri.authority().map(ToString::to_string))
            .unwrap_or_default();
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in &request.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|v| {
                    v.push(',');
                    v.push_str(&value);
                })
                .or_insert_with(|| value.into_owned());
        }
        let body = serde_json::json!({
            "service": self.service,
            "version": self.version,
            "method": request.method.as_str(),
            "path": request.uri.path_and_query().map_or("/", |p| p.as_str()),
            "authority": authority,
            "protocol": format!("{:?}", request.version),
            "headers": headers,
            "body_bytes": body.bytes,
            "body_pattern": body.bytes > 0 && body.pattern.ok,
        });
        let mut response = json(status, &body);
        set_asked_headers(&request.headers, response.headers_mut());
        Some(response)
    }
}

/// What `/fail/` asks: how many requests fail, with which status, after
/// how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fail {
    n: u64,
    code: u64,
    delay_ms: u64,
}

/// `N`, `N/CODE` or `N/CODE/MS` of `/fail/` (503 and no delay by
/// default).
fn fail_args(rest: &str) -> Option<Fail> {
    let mut parts = rest.split('/');
    let n = parts.next()?.parse().ok()?;
    let code = parts.next().map_or(Some(503), |code| code.parse().ok())?;
    let delay_ms = parts.next().map_or(Some(0), |ms| ms.parse().ok())?;
    if parts.next().is_some() {
        return None;
    }
    Some(Fail { n, code, delay_ms })
}

/// The headers a request asks the answer to carry (`X-Echo-Set-Header:
/// Name:value,...`), appended in order; malformed entries are skipped.
fn set_asked_headers(request: &header::HeaderMap, response: &mut header::HeaderMap) {
    for asked in request.get_all("x-echo-set-header") {
        let Ok(asked) = asked.to_str() else { continue };
        for entry in asked.split(',') {
            let Some((name, value)) = entry.split_once(':') else {
                continue;
            };
            if let (Ok(name), Ok(value)) = (
                header::HeaderName::from_bytes(name.trim().as_bytes()),
                header::HeaderValue::from_str(value.trim()),
            ) {
                response.append(name, value);
            }
        }
    }
}

/// What the echo answers with: JSON, or a run of [`pattern`].
type EchoBody = Either<Full<Bytes>, PatternBody>;

fn json(status: StatusCode, body: &serde_json::Value) -> Response<EchoBody> {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(format!("{body}\n")))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, echo: Arc<Echo>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(%err, "http-echo: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let echo = Arc::clone(&echo);
        tokio::spawn(async move {
            let service = service_fn(move |mut request: Request<hyper::body::Incoming>| {
                let echo = Arc::clone(&echo);
                async move {
                    if let Some(protocol) = upgrade(&request) {
                        echo.requests.fetch_add(1, Ordering::Relaxed);
                        let upgraded = hyper::upgrade::on(&mut request);
                        tokio::spawn(echo_upgraded(upgraded));
                        let mut response = Response::new(Either::Left(Full::new(Bytes::new())));
                        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                        let headers = response.headers_mut();
                        headers.insert(
                            header::CONNECTION,
                            header::HeaderValue::from_static("upgrade"),
                        );
                        headers.insert(header::UPGRADE, protocol);
                        return Ok::<_, std::io::Error>(response);
                    }
                    // Read the body as it comes (so keep-alive works after
                    // a POST), counted and checked, not kept.
                    let (parts, mut body) = request.into_parts();
                    let mut received = Received::default();
                    while let Some(Ok(frame)) = body.frame().await {
                        if let Some(data) = frame.data_ref() {
                            received.bytes += data.len() as u64;
                            received.pattern.feed(data);
                        }
                    }
                    echo.body_bytes.fetch_add(received.bytes, Ordering::Relaxed);
                    echo.answer(&parts, received).await.ok_or_else(|| {
                        std::io::Error::other("closed without an answer, as /fail/N/0 asked")
                    })
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(err) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%err, "http-echo: connection ended with an error");
            }
        });
    }
}

/// The protocol a request asks to switch to (`Connection: upgrade`,
/// `Upgrade: P`).
fn upgrade(request: &Request<hyper::body::Incoming>) -> Option<header::HeaderValue> {
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

/// Sends back every byte of an upgraded connection until the client
/// closes it.
async fn echo_upgraded(upgraded: hyper::upgrade::OnUpgrade) {
    let upgraded = match upgraded.await {
        Ok(upgraded) => upgraded,
        Err(err) => {
            tracing::debug!(%err, "http-echo: upgrade failed");
            return;
        }
    };
    let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
    if let Err(err) = tokio::io::copy(&mut reader, &mut writer).await {
        tracing::debug!(%err, "http-echo: upgraded connection ended with an error");
    }
}

/// The request body as the echo saw it.
#[derive(Default)]
struct Received {
    bytes: u64,
    pattern: PatternCheck,
}

/// The period of [`pattern`]: a prime, so a body shifted, cut or repeated
/// by anything but a multiple of it does not match.
pub const PATTERN_PERIOD: usize = 65_521;

/// Two periods of the test byte pattern: byte `i` of a pattern run is
/// `pattern()[i % PATTERN_PERIOD]`, and any `PATTERN_PERIOD` bytes from an
/// offset below it are contiguous here.
pub fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        (0..2 * PATTERN_PERIOD)
            .map(|i| {
                let i = i % PATTERN_PERIOD;
                #[expect(clippy::cast_possible_truncation, reason = "a byte pattern")]
                let byte = (i * 31 + i / 251) as u8;
                byte
            })
            .collect()
    })
}

/// Checks that bytes fed in pieces are a run of [`pattern`] from its start.
#[derive(Debug)]
pub struct PatternCheck {
    /// Where the next byte falls in the period.
    offset: usize,
    pub ok: bool,
}

impl Default for PatternCheck {
    fn default() -> Self {
        Self {
            offset: 0,
            ok: true,
        }
    }
}

impl PatternCheck {
    pub fn feed(&mut self, mut data: &[u8]) {
        let pattern = pattern();
        while !data.is_empty() && self.ok {
            let n = data.len().min(PATTERN_PERIOD);
            self.ok = data[..n] == pattern[self.offset..self.offset + n];
            self.offset = (self.offset + n) % PATTERN_PERIOD;
            data = &data[n..];
        }
    }
}

/// `left` bytes of [`pattern`], in frames of up to a period (64 KiB)
/// borrowed from it.
pub struct PatternBody {
    left: u64,
    offset: usize,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(this.left)
            .unwrap_or(usize::MAX)
            .min(PATTERN_PERIOD);
        let chunk = Bytes::from_static(&pattern()[this.offset..this.offset + n]);
        this.offset = (this.offset + n) % PATTERN_PERIOD;
        this.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_takes_a_count_a_code_and_a_delay() {
        let fail = |n, code, delay_ms| Some(Fail { n, code, delay_ms });
        assert_eq!(fail_args("2"), fail(2, 503, 0));
        assert_eq!(fail_args("2/500"), fail(2, 500, 0));
        assert_eq!(fail_args("2/500/300"), fail(2, 500, 300));
        assert_eq!(fail_args("2/500/300/1"), None);
        assert_eq!(fail_args("x"), None);
    }

    #[test]
    fn a_fail_rate_fails_exactly_that_share_of_every_hundred() {
        let echo = Echo::new("reviews", "v3");
        echo.fail_rate.store(30, Ordering::Relaxed);
        let fails: Vec<bool> = (0..200).map(|_| echo.fails_by_rate()).collect();
        assert_eq!(fails[..100].iter().filter(|f| **f).count(), 30);
        assert_eq!(fails[100..].iter().filter(|f| **f).count(), 30);
        // Spread: never two in a row at 30%.
        assert!(!fails.windows(2).any(|w| w[0] && w[1]));
    }

    #[test]
    fn a_pattern_run_checks_in_any_pieces_and_a_shifted_one_does_not() {
        let run: Vec<u8> = (0..3 * PATTERN_PERIOD + 17)
            .map(|i| pattern()[i % PATTERN_PERIOD])
            .collect();
        for piece in [1, 1000, PATTERN_PERIOD, 70_000] {
            let mut check = PatternCheck::default();
            run.chunks(piece).for_each(|c| check.feed(c));
            assert!(check.ok, "in pieces of {piece}");
        }
        let mut shifted = PatternCheck::default();
        shifted.feed(&run[1..]);
        assert!(!shifted.ok, "a run from byte 1 is not one from the start");
    }
}
