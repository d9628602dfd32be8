//! Endpoint health on the L7 path: HTTP GET probes, and outlier detection
//! from the 5xx answers the proxy sees. Two v1 endpoints of reviews
//! (`http-echo` answering `v1` on :19081 and `v1-b` on :19084); one of
//! them starts failing every request with 503.

use std::time::{Duration, Instant};

use serde_json::Value;
use traffic_shift_tests::{Scenario, bookinfo_rule, http_backend, http_client};

const REVIEWS: &str = "127.101.0.1:9080";
const SECOND_V1: &str = "127.0.0.1:19084";

/// The shipped ServiceEntry with a second v1 endpoint.
fn service_entry() -> String {
    let se = bookinfo_rule("service-entry.yaml");
    let extra = "  - address: 127.0.0.1\n    ports: {http: 19084}\n    labels: {app: reviews, version: v1}\n";
    format!("{}\n{extra}", se.trim_end())
}

/// The shipped DestinationRule, with `policy` as the top-level trafficPolicy.
fn destination_rule(policy: &str) -> String {
    format!(
        "{}\n  trafficPolicy:\n{policy}",
        bookinfo_rule("destination-rule.yaml").trim_end()
    )
}

const ALL_V1_NO_RETRIES: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - retries: {attempts: 0}
    route:
    - destination: {host: reviews, subset: v1}
";

fn scenario(test: &str, policy: &str, agent_args: &[&str]) -> Scenario {
    let se = service_entry();
    let dr = destination_rule(policy);
    Scenario::bookinfo(
        test,
        &[
            ("service-entry.yaml", &se),
            ("destination-rule.yaml", &dr),
            ("virtual-service.yaml", ALL_V1_NO_RETRIES),
        ],
        agent_args,
    )
}

/// Starts the second v1 endpoint (kept by the caller).
fn second_v1(s: &Scenario) -> traffic_shift_tests::Process {
    http_backend(&s.netns, Some(&s.cgroup), "reviews", "v1-b", &[SECOND_V1])
}

/// Sets how many of the next requests the second v1 endpoint fails with 503.
fn fail_next(s: &Scenario, n: u64) {
    let addr = SECOND_V1.parse().expect("address");
    let reply = s
        .netns
        .run_in(|| http_client::get(addr, &format!("/fail/{n}"), &[]))
        .expect("reach the backend directly");
    assert_eq!(reply.status, 200, "{}", reply.text());
}

fn requests(s: &mut Scenario, n: usize) -> Value {
    s.client
        .call(&format!("http {REVIEWS} /reviews/1 {n} 2 keepalive"))
}

/// Asks until `n` requests in a row avoid the failing endpoint; returns how
/// long that took.
fn until_avoided(s: &mut Scenario, n: usize, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let reply = requests(s, n);
        if reply["answers"]["v1"] == n && reply["failed"] == 0 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "still reaching the failing endpoint after {limit:?}: {reply}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn consecutive_5xx_eject_an_endpoint_from_the_proxy_selection() {
    let policy = "    outlierDetection:\n      consecutive5xxErrors: 3\n      interval: 1s\n      baseEjectionTime: 60s\n      maxEjectionPercent: 50\n";
    let mut s = scenario("http-outlier", policy, &["--health-interval", "0"]);
    let _second = second_v1(&s);
    // Both v1 endpoints answer, in turn.
    let reply = requests(&mut s, 20);
    assert_eq!(reply["answers"]["v1"], 10, "{reply}");
    assert_eq!(reply["answers"]["v1-b"], 10, "{reply}");

    fail_next(&s, 100_000);
    let reply = requests(&mut s, 20);
    // Its share fails (until the ejection, which may come mid-way).
    assert!(
        reply["status"]["503"].as_u64().unwrap_or(0) >= 3,
        "the failing endpoint's share fails: {reply}"
    );
    // Ejected within a few outlier intervals (1 s each); then nothing fails.
    let took = until_avoided(&mut s, 50, Duration::from_secs(10));
    eprintln!("ejected after {took:?}");
    assert!(
        s.agent.log_text().contains("outlier: endpoint ejected"),
        "the log says why"
    );
    let reply = requests(&mut s, 100);
    assert_eq!(reply["answers"]["v1"], 100, "{reply}");
}

#[test]
fn http_probes_take_an_endpoint_out_and_bring_it_back() {
    let mut s = scenario(
        "http-probes",
        "    loadBalancer: {simple: ROUND_ROBIN}\n",
        &["--health-interval", "200ms", "--health-timeout", "500ms"],
    );
    let _second = second_v1(&s);
    // The probes may have taken the second endpoint out before it started:
    // wait until they see both up, i.e. round robin gives it half again.
    let start = Instant::now();
    loop {
        let reply = requests(&mut s, 20);
        if reply["answers"]["v1-b"] == 10 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the second endpoint not in the selection after 5 s: {reply}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("both up after {:?}", start.elapsed());

    // Its GET / now answers 503: unhealthy after 2 probes (~0.4 s).
    fail_next(&s, 100_000);
    let took = until_avoided(&mut s, 50, Duration::from_secs(5));
    eprintln!("out after {took:?}");

    // Healthy again: back in the selection.
    fail_next(&s, 0);
    let start = Instant::now();
    loop {
        let reply = requests(&mut s, 20);
        if reply["answers"]["v1-b"] == 10 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not back after 5 s: {reply}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("back after {:?}", start.elapsed());
}
