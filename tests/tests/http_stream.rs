//! Bodies through the agent's L7 proxy: a 1 GiB upload and a 1 GiB download
//! stream through the gateway port with the agent's memory bounded, the
//! replay buffer of a route with retries (a body over it is not retried,
//! and counted), and an `Upgrade` (WebSocket-style) connection spliced both
//! ways. Real `http-echo` backends stream, count and check the bytes (a
//! pattern with a prime period, so a byte lost, doubled or out of order
//! shows).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    time::Duration,
};

use serde_json::Value;
use traffic_shift_proxy::echo::{PATTERN_PERIOD, PatternCheck, pattern};
use traffic_shift_tests::{Scenario, metric, try_metric};

/// The gateway's HTTP port, on the node's loopback.
const GATEWAY: &str = "127.0.0.1:8080";
const GIB: u64 = 1 << 30;
/// The agent's RSS may grow by less than this over 1 GiB each way.
const RSS_BOUND_KIB: u64 = 16 << 10;
/// Over the proxy's default replay buffer (1 MiB), and under it.
const OVER_BUFFER: u64 = 2 << 20;
const UNDER_BUFFER: u64 = 512 << 10;

/// The bookinfo gateway on port 8080 with one rule per test: bodies (Istio's
/// default retries, so the body is kept while it fits the buffer), retries
/// on 5xx, and upgrades.
const GATEWAY_RULES: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match:
    - uri: {prefix: /bytes}
    - uri: {prefix: /upload}
    route:
    - destination: {host: reviews, subset: v1}
  - match:
    - uri: {prefix: /retry}
    retries: {attempts: 2, retryOn: 5xx}
    route:
    - destination: {host: reviews, subset: v3}
  - match:
    - uri: {prefix: /chat}
    route:
    - destination: {host: reviews, subset: v2}
"#;

/// The overflow counter's series of the `/retry` rule.
const RETRY_ROUTE: [(&str, &str); 1] = [("route", "default/bookinfo/http[1]")];
const OVERFLOW: &str = "traffic_shift_http_retry_buffer_overflow_total";

fn scenario(test: &str) -> Scenario {
    Scenario::bookinfo(test, &[("gateway.yaml", GATEWAY_RULES)], &[])
}

/// A `/proc/PID/status` field of the agent, in KiB.
fn status_kib(s: &Scenario, field: &str) -> u64 {
    let path = format!("/proc/{}/status", s.agent.process.child.id());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {path}:\n{text}"))
}

/// The agent's peak RSS (`VmHWM`) starts again from its RSS now.
fn reset_peak_rss(s: &Scenario) {
    let path = format!("/proc/{}/clear_refs", s.agent.process.child.id());
    std::fs::write(&path, "5").unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// A response head: status and headers (names lowercased).
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> u64 {
        self.header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no content-length: {:?}", self.headers))
    }
}

/// Reads a response head, leaving the body in `reader`.
fn read_head(reader: &mut impl BufRead) -> Head {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            return Head { status, headers };
        }
        let (name, value) = line.split_once(':').expect("name: value");
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
}

/// A connection to the gateway port, from the test's namespace (on the
/// thread that `Netns::run_in` runs).
fn connect() -> TcpStream {
    let stream = TcpStream::connect(GATEWAY).unwrap_or_else(|e| panic!("connect {GATEWAY}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_mins(2)))
        .expect("read timeout");
    stream
}

/// POSTs `size` bytes of the pattern to `path`, written as they are made
/// (a period at a time: never the whole body in memory); returns the status
/// and the echo's JSON answer.
fn post_pattern(path: &str, size: u64) -> (u16, Value) {
    let mut stream = connect();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: bookinfo\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n"
    )
    .expect("request head");
    let period = &pattern()[..PATTERN_PERIOD];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left).map_or(PATTERN_PERIOD, |l| l.min(PATTERN_PERIOD));
        stream.write_all(&period[..n]).expect("request body");
        left -= n as u64;
    }
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader);
    let mut body = Vec::new();
    reader.read_to_end(&mut body).expect("response body");
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (head.status, json)
}

/// GETs `/bytes/{size}`; returns the bytes received and whether they are
/// the pattern from its start, read and checked as they come.
fn get_pattern(size: u64) -> (u64, bool) {
    let mut stream = connect();
    write!(
        stream,
        "GET /bytes/{size} HTTP/1.1\r\nhost: bookinfo\r\nconnection: close\r\n\r\n"
    )
    .expect("request head");
    let mut reader = BufReader::with_capacity(256 << 10, stream);
    let head = read_head(&mut reader);
    assert_eq!(head.status, 200, "{:?}", head.headers);
    assert_eq!(head.content_length(), size);
    let (mut received, mut check) = (0u64, PatternCheck::default());
    loop {
        let chunk = reader.fill_buf().expect("response body");
        if chunk.is_empty() {
            return (received, check.ok);
        }
        let n = chunk.len();
        check.feed(chunk);
        received += n as u64;
        reader.consume(n);
    }
}

#[test]
fn a_1_gib_upload_and_a_1_gib_download_stream_with_the_agent_rss_bounded() {
    let s = scenario("http-stream");
    // Warm up (threads, pools, buffers) before the baseline.
    let (status, answer) = s.netns.run_in(|| post_pattern("/upload", 16 << 20));
    assert_eq!(status, 200, "{answer}");
    let (n, ok) = s.netns.run_in(|| get_pattern(16 << 20));
    assert!(
        n == 16 << 20 && ok,
        "warm-up download: {n} bytes, pattern {ok}"
    );

    let rss_before = status_kib(&s, "VmRSS:");
    reset_peak_rss(&s);
    let (status, answer) = s.netns.run_in(|| post_pattern("/upload", GIB));
    assert_eq!(status, 200, "1 GiB upload: {answer}");
    assert_eq!(answer["body_bytes"], GIB, "every byte reached v1: {answer}");
    assert_eq!(answer["body_pattern"], true, "in order: {answer}");
    assert_eq!(answer["version"], "v1", "{answer}");
    let (received, ok) = s.netns.run_in(|| get_pattern(GIB));
    assert_eq!(received, GIB, "1 GiB download");
    assert!(ok, "the download is the pattern, in order");
    let (rss_after, peak) = (status_kib(&s, "VmRSS:"), status_kib(&s, "VmHWM:"));
    println!(
        "agent RSS {rss_before} KiB before, {rss_after} KiB after, peak {peak} KiB over 1 GiB up and 1 GiB down"
    );
    assert!(
        peak.saturating_sub(rss_before) < RSS_BOUND_KIB,
        "the agent's RSS peaked {} KiB over its {rss_before} KiB before the transfers (bound {RSS_BOUND_KIB} KiB)",
        peak.saturating_sub(rss_before)
    );
    // Both transfers counted, by Istio's names.
    let page = s.agent.metrics();
    let v1_200 = [("destination_version", "v1"), ("response_code", "200")];
    assert_eq!(metric(&page, "istio_requests_total", &v1_200), 4, "{page}");
    // The rule has Istio's default retries: both uploads outgrew the
    // replay buffer, were counted, and streamed on all the same.
    let body_route = [("route", "default/bookinfo/http[0]")];
    assert_eq!(metric(&page, OVERFLOW, &body_route), 2, "{page}");
}

#[test]
fn a_body_over_the_replay_buffer_is_not_retried_and_is_counted() {
    replay_buffer(&scenario("http-replay"), OVER_BUFFER, UNDER_BUFFER);
}

/// `--http-buffer-limit` sets the replay buffer: 64 KiB here, so 128 KiB is
/// over it and 32 KiB under.
#[test]
fn the_replay_buffer_is_what_the_agent_is_told() {
    let s = Scenario::bookinfo(
        "http-replay-limit",
        &[("gateway.yaml", GATEWAY_RULES)],
        &["--http-buffer-limit", "65536"],
    );
    replay_buffer(&s, 128 << 10, 32 << 10);
}

/// A body of `over` bytes to the `/retry` rule, whose v3 backend fails
/// once, gets the 503 (one attempt) and is counted; one of `under` bytes is
/// retried whole.
fn replay_buffer(s: &Scenario, over: u64, under: u64) {
    let v3_count = || {
        let addr = "127.0.0.1:19083".parse().expect("address");
        let reply = s
            .netns
            .run_in(|| traffic_shift_tests::http_client::get(addr, "/count", &[]))
            .expect("GET /count");
        reply.json().expect("json")["count"]
            .as_u64()
            .expect("count")
    };
    let fail_next = || {
        let addr = "127.0.0.1:19083".parse().expect("address");
        let reply = s
            .netns
            .run_in(|| traffic_shift_tests::http_client::get(addr, "/fail/1", &[]))
            .expect("GET /fail/1");
        assert_eq!(reply.status, 200, "{}", reply.text());
    };

    // Over the buffer: v3's 503 reaches the client, one attempt, counted.
    fail_next();
    let before = v3_count();
    let (status, answer) = s.netns.run_in(|| post_pattern("/retry", over));
    assert_eq!(status, 503, "not retried: {answer}");
    assert_eq!(v3_count(), before + 1, "one attempt");
    let page = s.agent.metrics();
    assert_eq!(metric(&page, OVERFLOW, &RETRY_ROUTE), 1, "{page}");

    // Under it: retried with the whole body, not counted.
    fail_next();
    let before = v3_count();
    let (status, answer) = s.netns.run_in(|| post_pattern("/retry", under));
    assert_eq!(status, 200, "retried: {answer}");
    assert_eq!(answer["body_bytes"], under, "{answer}");
    assert_eq!(answer["body_pattern"], true, "{answer}");
    assert_eq!(v3_count(), before + 2, "the 503 and the retry");
    let page = s.agent.metrics();
    assert_eq!(metric(&page, OVERFLOW, &RETRY_ROUTE), 1, "{page}");
}

#[test]
fn an_upgrade_is_spliced_both_ways_through_the_agent() {
    let s = scenario("http-upgrade");
    let size = 4 << 20;
    let echoed = s.netns.run_in(|| {
        let mut stream = connect();
        stream
            .write_all(
                b"GET /chat HTTP/1.1\r\nhost: bookinfo\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n",
            )
            .expect("request head");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let head = read_head(&mut reader);
        assert_eq!(head.status, 101, "{:?}", head.headers);
        assert_eq!(head.header("upgrade"), Some("websocket"), "{:?}", head.headers);
        // Both ways at once: the writer on its own thread, more bytes than
        // any buffer on the way holds.
        let writer = std::thread::spawn(move || {
            let period = &pattern()[..PATTERN_PERIOD];
            let mut left = size;
            while left > 0 {
                let n = left.min(PATTERN_PERIOD);
                stream.write_all(&period[..n]).expect("upgraded write");
                left -= n;
            }
            stream
                .shutdown(std::net::Shutdown::Write)
                .expect("shutdown");
        });
        let (mut received, mut check) = (0, PatternCheck::default());
        loop {
            let chunk = reader.fill_buf().expect("upgraded read");
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            check.feed(chunk);
            received += n;
            reader.consume(n);
        }
        writer.join().expect("writer");
        (received, check.ok)
    });
    assert_eq!(echoed, (size, true), "the bytes came back, in order");
    // One request, 101, counted once the connection closed.
    let labels = [("destination_version", "v2"), ("response_code", "101")];
    let page = s
        .agent
        .wait_metrics("the upgraded request counted", |page| {
            try_metric(page, "istio_requests_total", &labels) == Some(1)
        });
    assert_eq!(metric(&page, "istio_requests_total", &labels), 1, "{page}");
}
