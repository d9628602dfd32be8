//! The demo HTTP backend served by the `http-echo` binary (and by the
//! proxy's tests in-process): answers every request with a JSON body that
//! names its service and version and echoes the request, over HTTP/1.1
//! (keep-alive) and HTTP/2 cleartext.
//!
//! Test controls, by path:
//! - `/status/NNN`: answers status NNN;
//! - `/delay/MS`: waits MS milliseconds, then answers;
//! - `/fail/N`: the next N requests (of any path but `/count`) get 503;
//! - `/failrate/P`: from now on P percent of the requests get 503, evenly
//!   spread (request k of them fails when `k * P / 100` moves on): exactly
//!   P of every 100 in a row;
//! - `/count`: `{"count": N}`, the requests seen (`/count` itself excluded).

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Bytes, header, service::service_fn};
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
    /// `/failrate/P`: the percentage, and the requests counted since.
    fail_rate: AtomicU64,
    rated: AtomicU64,
}

impl Echo {
    pub fn new(service: &str, version: &str) -> Arc<Self> {
        Arc::new(Self {
            service: service.to_owned(),
            version: version.to_owned(),
            requests: AtomicU64::new(0),
            fail_next: AtomicU64::new(0),
            fail_rate: AtomicU64::new(0),
            rated: AtomicU64::new(0),
        })
    }

    /// Requests seen (`/count` excluded).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The next `n` requests get 503.
    pub fn fail_next(&self, n: u64) {
        self.fail_next.store(n, Ordering::Relaxed);
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

    async fn answer(&self, request: &hyper::http::request::Parts) -> Response<Full<Bytes>> {
        let path = request.uri.path().to_owned();
        if path == "/count" {
            return json(
                StatusCode::OK,
                &serde_json::json!({ "count": self.requests(), "version": self.version }),
            );
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut status = StatusCode::OK;
        if let Some(n) = path.strip_prefix("/fail/").and_then(|n| n.parse().ok()) {
            self.fail_next(n);
        } else if let Some(p) = path
            .strip_prefix("/failrate/")
            .and_then(|p| p.parse::<u64>().ok())
        {
            self.rated.store(0, Ordering::Relaxed);
            self.fail_rate.store(p.min(100), Ordering::Relaxed);
        } else if self.fails_by_rate()
            || self
                .fail_next
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        {
            status = StatusCode::SERVICE_UNAVAILABLE;
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
        });
        json(status, &body)
    }
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
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
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let echo = Arc::clone(&echo);
                async move {
                    // Read the body, so keep-alive works after a POST.
                    let (parts, body) = request.into_parts();
                    let _ = body.collect().await;
                    Ok::<_, Infallible>(echo.answer(&parts).await)
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(err) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%err, "http-echo: connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
