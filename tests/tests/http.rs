//! Istio's HTTP Traffic Shifting and Request Routing tasks on Bookinfo's
//! reviews service, through the agent's L7 proxy: real HTTP clients in the
//! test's cgroup connect to the service address (the connect-time hook
//! sends them to the proxy) or to the gateway port, real `http-echo`
//! backends answer with their version.

use serde_json::Value;
use traffic_shift_tests::{Scenario, bookinfo_rule};

/// The reviews service address (ServiceEntry `addresses`, port 9080).
const REVIEWS: &str = "127.101.0.1:9080";
const REVIEWS_V6: &str = "[fd00:7473::2]:9080";
/// The bookinfo gateway's HTTP port, on the node's loopback.
const GATEWAY: &str = "127.0.0.1:8080";

fn count(reply: &Value, answer: &str) -> u64 {
    reply["answers"][answer].as_u64().unwrap_or(0)
}

fn assert_no_failure(reply: &Value, what: &str) {
    assert_eq!(reply["failed"], 0, "{what}: {reply}");
}

/// `n` requests over `conns` keep-alive connections, with `headers`.
fn requests(s: &mut Scenario, target: &str, n: usize, conns: usize, headers: &str) -> Value {
    s.client.call(&format!(
        "http {target} /reviews/1 {n} {conns} keepalive {headers}"
    ))
}

fn set_route(s: &mut Scenario, file: &str) {
    let event = s
        .agent
        .write_rules("virtual-service.yaml", bookinfo_rule(file));
    assert_eq!(event["result"], "applied", "{file}: {event}");
}

#[test]
fn reviews_shift_from_v1_to_v3_and_jason_gets_v2() {
    let mut s = Scenario::bookinfo(
        "http-shift",
        &[(
            "virtual-service.yaml",
            &bookinfo_rule("virtual-service.yaml"),
        )],
        &[],
    );

    // All to v1: 100 of 100, one connection per request and kept alive,
    // over IPv4 and IPv6 service addresses.
    for (target, conns) in [(REVIEWS, 1), (REVIEWS, 4), (REVIEWS_V6, 2)] {
        let reply = requests(&mut s, target, 100, conns, "");
        assert_no_failure(&reply, "all v1");
        assert_eq!(count(&reply, "v1"), 100, "all v1 via {target}: {reply}");
    }
    let closing = s
        .client
        .call(&format!("http {REVIEWS} /reviews/1 50 1 close"));
    assert_eq!(
        count(&closing, "v1"),
        50,
        "one connection per request: {closing}"
    );
    assert_eq!(closing["connections"], 50, "{closing}");

    // 50/50 v1/v3: per request, deterministic and smooth as the kernel
    // path: 500 +- 1 of 1000 (the bar), over 8 connections.
    set_route(&mut s, "examples/vs-reviews-50-v3.yaml");
    let reply = requests(&mut s, REVIEWS, 1000, 8, "");
    assert_no_failure(&reply, "50/50");
    let (v1, v3) = (count(&reply, "v1"), count(&reply, "v3"));
    assert_eq!(v1 + v3, 1000, "{reply}");
    assert!(v3.abs_diff(500) <= 1, "50/50 over 1000: v3 {v3}, {reply}");

    // All to v3.
    set_route(&mut s, "examples/vs-reviews-v3.yaml");
    let reply = requests(&mut s, REVIEWS, 100, 2, "");
    assert_eq!(count(&reply, "v3"), 100, "all v3: {reply}");

    // Request routing: end-user jason always v2, everyone else v1.
    set_route(&mut s, "examples/vs-reviews-jason-v2.yaml");
    let jason = requests(&mut s, REVIEWS, 100, 2, "end-user:jason");
    assert_eq!(count(&jason, "v2"), 100, "jason: {jason}");
    let others = requests(&mut s, REVIEWS, 100, 2, "end-user:someone-else");
    assert_eq!(count(&others, "v1"), 100, "others: {others}");
    let anonymous = requests(&mut s, REVIEWS, 100, 2, "");
    assert_eq!(count(&anonymous, "v1"), 100, "no end-user: {anonymous}");

    // The gateway port serves the bookinfo VirtualService (/reviews to
    // every reviews endpoint, round robin) and nothing else.
    let reply = requests(&mut s, GATEWAY, 90, 3, "");
    assert_no_failure(&reply, "gateway");
    for version in ["v1", "v2", "v3"] {
        assert_eq!(count(&reply, version), 30, "gateway {version}: {reply}");
    }
    let missing = s
        .client
        .call(&format!("http {GATEWAY} /productpage 10 1 keepalive"));
    assert_eq!(missing["status"]["404"], 10, "no route: {missing}");
}

#[test]
fn a_weight_change_under_100_keepalive_clients_fails_no_request() {
    let mut s = Scenario::bookinfo(
        "http-change",
        &[(
            "virtual-service.yaml",
            &bookinfo_rule("virtual-service.yaml"),
        )],
        &[],
    );
    let started = s
        .client
        .call(&format!("http_stream_start {REVIEWS} /reviews/1 100"));
    assert!(started["started"].is_u64(), "{started}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    for file in [
        "examples/vs-reviews-50-v3.yaml",
        "examples/vs-reviews-v3.yaml",
        "examples/vs-reviews-jason-v2.yaml",
        "examples/vs-reviews-v1.yaml",
    ] {
        set_route(&mut s, file);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let totals = s.client.call("http_stream_stop");
    assert_no_failure(&totals, "weight changes under load");
    let requests = totals["requests"].as_u64().unwrap_or(0);
    // The point is that requests were in flight across every change (no
    // rate is asserted: speed belongs to `cargo xtask bench`).
    assert!(requests >= 200, "the clients kept asking: {totals}");
    assert!(
        count(&totals, "v3") > 0 && count(&totals, "v1") > 0,
        "{totals}"
    );
    // Keep-alive held: about one connection per client (a reconnect would
    // show here as more).
    assert_eq!(totals["connections"], 100, "{totals}");
}
