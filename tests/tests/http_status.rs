//! `traffic-shift status` for HTTP routes (issue 19): Bookinfo's reviews at
//! 50/50 v1/v3 with Istio's `end-user: jason` -> v2 rule in front, real
//! clients through the L7 proxy, and the status file's per-destination
//! counts, errors and latencies, and their rendering.

use std::time::{Duration, Instant};

use serde_json::Value;
use traffic_shift_tests::Scenario;

/// The reviews service address (ServiceEntry `addresses`, port 9080).
const REVIEWS: &str = "127.101.0.1:9080";
const MESH: &str = "mesh reviews.default.svc.cluster.local:9080";

/// Istio's request routing in front of its 50/50 traffic shift.
const JASON_THEN_50_50: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 50
    - destination:
        host: reviews
        subset: v3
      weight: 50
";

/// Requests without the header (50/50), with it (v2), and with it to a
/// path v2 answers 503.
const N: u64 = 200;
const M: u64 = 30;
const M_503: u64 = 10;

/// The mesh listener's route `key` in the status file.
fn route<'a>(status: &'a Value, key: &str) -> Option<&'a Value> {
    status["http_routes"]
        .as_array()?
        .iter()
        .find(|r| r["listener"] == MESH && r["route"] == key)
}

/// Its destination of `subset`.
fn destination<'a>(status: &'a Value, key: &str, subset: &str) -> Option<&'a Value> {
    route(status, key)?["destinations"]
        .as_array()?
        .iter()
        .find(|d| d["subset"] == subset)
}

fn total(status: &Value, key: &str, subset: &str) -> u64 {
    destination(status, key, subset)
        .and_then(|d| d["requests_total"].as_u64())
        .unwrap_or(0)
}

/// Polls the status file (up to 10 s) until `ready`; returns it.
fn wait_status(s: &Scenario, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = s.agent.status_json();
        if ready(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the status never showed {what}:\n{status:#}\n{}",
            s.agent.status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn status_shows_http_routes_per_destination_with_errors_and_latency() {
    let mut s = Scenario::bookinfo(
        "http-status",
        &[("virtual-service.yaml", JASON_THEN_50_50)],
        &[],
    );
    // Before any request: the routes are there, with no latency ("-").
    let idle = wait_status(&s, "the reviews routes", |st| {
        destination(st, "default/reviews/http[1]", "v3").is_some()
    });
    let v1 = destination(&idle, "default/reviews/http[1]", "v1").unwrap();
    assert_eq!(v1["weight"], 50, "{v1}");
    assert_eq!(v1["requests_total"], 0, "{v1}");
    assert!(v1["p50_ms"].is_null() && v1["p99_ms"].is_null(), "{v1}");
    assert_eq!(
        route(&idle, "default/reviews/http[0]").unwrap()["matches"],
        serde_json::json!(["header end-user = jason"]),
    );

    let plain = s
        .client
        .call(&format!("http {REVIEWS} /reviews/1 {N} 4 keepalive"));
    assert_eq!(plain["failed"], 0, "{plain}");
    let jason = s.client.call(&format!(
        "http {REVIEWS} /reviews/1 {M} 2 keepalive end-user:jason"
    ));
    assert_eq!(jason["answers"]["v2"], M, "{jason}");
    // v2 answers these 503 (Istio's default retries try them again; the
    // client's request counts once).
    let failing = s.client.call(&format!(
        "http {REVIEWS} /status/503 {M_503} 1 keepalive end-user:jason"
    ));
    assert_eq!(failing["status"]["503"], M_503, "{failing}");

    let status = wait_status(&s, "every request", |st| {
        total(st, "default/reviews/http[1]", "v1") + total(st, "default/reviews/http[1]", "v3") == N
            && total(st, "default/reviews/http[0]", "v2") == M + M_503
    });
    // Smooth selection: exactly half each.
    for subset in ["v1", "v3"] {
        let d = destination(&status, "default/reviews/http[1]", subset).unwrap();
        assert_eq!(d["requests_total"], N / 2, "{subset}: {d}");
        assert_eq!(d["requests_last_minute"], N / 2, "{subset}: {d}");
        assert_eq!(d["errors_5xx_last_minute"], 0, "{subset}: {d}");
        assert_eq!(d["errors_4xx_last_minute"], 0, "{subset}: {d}");
        for p in ["p50_ms", "p99_ms"] {
            assert!(
                d[p].as_f64().is_some_and(|ms| ms > 0.0),
                "{subset} {p}: {d}"
            );
        }
        let endpoints = d["endpoints"].as_array().unwrap();
        assert_eq!(endpoints.len(), 1, "{d}");
        assert_eq!(endpoints[0]["state"], "ok", "{d}");
        assert_eq!(endpoints[0]["requests_total"], N / 2, "{d}");
    }
    let v2 = destination(&status, "default/reviews/http[0]", "v2").unwrap();
    assert_eq!(v2["requests_last_minute"], M + M_503, "{v2}");
    assert_eq!(v2["errors_5xx_last_minute"], M_503, "{v2}");
    assert_eq!(v2["endpoints"][0]["address"], "127.0.0.1:19082", "{v2}");
    assert_eq!(v2["endpoints"][0]["errors_5xx_last_minute"], M_503, "{v2}");
    assert!(v2["p99_ms"].as_f64().is_some(), "{v2}");

    // As `traffic-shift status` renders them, at 80 columns.
    let out = std::process::Command::new(
        std::env::var_os("TRAFFIC_SHIFT_BIN")
            .expect("TRAFFIC_SHIFT_BIN (cargo xtask test sets it)"),
    )
    .args(["status", "--width", "80", "--status-file"])
    .arg(&s.agent.status_file)
    .output()
    .expect("run traffic-shift status");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("UTF-8 status");
    eprintln!("{text}");
    for line in [
        "HTTP ROUTE default/reviews/http[0]",
        "  match header end-user = jason",
        "HTTP ROUTE default/reviews/http[1]",
        &format!("  mesh, service reviews.default.svc.cluster.local:9080, {N} req/min"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
    }
    let row = |subset: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{subset} ")))
            .unwrap_or_else(|| panic!("a {subset} row in:\n{text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // DESTINATION WEIGHT REQ SHARE 5XX 4XX P50 P99 TOTAL OBSERVED.
    let v3_row = row("v3");
    assert_eq!(v3_row[1..4], ["50%", "100", "50%"], "{v3_row:?}\n{text}");
    let v2_row = row("v2");
    assert_eq!(
        v2_row[1..5],
        ["100%", &(M + M_503).to_string(), "100%", &M_503.to_string()],
        "{v2_row:?}\n{text}"
    );
}
