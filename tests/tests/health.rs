//! Endpoint health: a dead endpoint leaves the selection (active probes,
//! or outlier detection from the DestinationRule) and comes back; a subset
//! with no healthy endpoint refuses at once. As root, each test in its own
//! network namespace and cgroup.

use std::time::{Duration, Instant};

use serde_json::Value;
use traffic_shift_tests::{
    SERVICE_V4, Scenario, echo_backend,
    exposition::{metric, try_metric},
    tcp_echo_rule,
};

const OPENED: &str = "istio_tcp_connections_opened_total";

/// The shipped ServiceEntry with a second v1 endpoint, 127.0.0.1:19003.
fn two_v1_endpoints() -> String {
    let se = tcp_echo_rule("service-entry.yaml").replace(
        "  - address: 127.0.0.1\n    ports: {tcp: 19002}",
        "  - address: 127.0.0.1\n    ports: {tcp: 19003}\n    labels: {app: tcp-echo, version: v1}\n  - address: 127.0.0.1\n    ports: {tcp: 19002}",
    );
    assert!(
        se.contains("19003"),
        "the shipped ServiceEntry changed shape"
    );
    se
}

/// The mesh route's endpoint `addr` in the status file.
fn endpoint(status: &Value, addr: &str) -> Value {
    status["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["kind"] == "mesh")
        .flat_map(|r| r["destinations"].as_array().into_iter().flatten())
        .flat_map(|d| d["endpoints"].as_array().into_iter().flatten())
        .find(|e| e["address"] == addr)
        .cloned()
        .unwrap_or_else(|| panic!("no endpoint {addr} in {status}"))
}

/// Waits (up to `limit`) until endpoint `addr`'s state is `state`; returns
/// how long it took.
fn wait_state(s: &Scenario, addr: &str, state: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let status = s.agent.status_json();
        if endpoint(&status, addr)["state"] == state {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{addr} not {state} within {limit:?}: {}\nagent log:\n{}",
            endpoint(&status, addr),
            s.agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (up to `limit`) until the status's counts of the mesh route, all
/// endpoints together, reach `n` connections; returns that status.
fn wait_mesh_connections(s: &Scenario, n: u64, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let status = s.agent.status_json();
        let total: u64 = status["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["kind"] == "mesh")
            .flat_map(|r| r["destinations"].as_array().into_iter().flatten())
            .flat_map(|d| d["endpoints"].as_array().into_iter().flatten())
            .filter_map(|e| e["connections_total"].as_u64())
            .sum();
        if total >= n {
            return status;
        }
        assert!(
            start.elapsed() < limit,
            "the status counts {total} of the mesh route's {n} connections after {limit:?}: {status}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const INTERVAL: &str = "200ms";

#[test]
fn a_dead_endpoint_leaves_the_selection_within_two_intervals_and_rejoins() {
    let mut s = Scenario::tcp_echo_opts(
        "health-active",
        &[
            ("service-entry.yaml", &two_v1_endpoints()),
            (
                "virtual-service.yaml",
                &tcp_echo_rule("examples/vs-all-v1.yaml"),
            ),
        ],
        &["--health-interval", INTERVAL],
    );
    let second = echo_backend(&s.netns, Some(&s.cgroup), "one", &["127.0.0.1:19003"]);
    assert_eq!(s.client.burst(SERVICE_V4, 10), (10, 0));

    drop(second);
    // Unhealthy after 2 failed probes, 200 ms apart; allow one more
    // interval and the status file's refresh.
    let took = wait_state(&s, "127.0.0.1:19003", "unhealthy", Duration::from_secs(3));
    eprintln!("dead endpoint out of the selection after {took:?}");
    assert!(took < Duration::from_millis(1200), "took {took:?}");
    let (one, two, errors) = s.client.burst_with_errors(SERVICE_V4, 100);
    assert_eq!(
        (one, two, errors.len()),
        (100, 0, 0),
        "every connection to v1's live endpoint: {errors:?}"
    );

    let second = echo_backend(&s.netns, Some(&s.cgroup), "one", &["127.0.0.1:19003"]);
    let took = wait_state(&s, "127.0.0.1:19003", "ok", Duration::from_secs(3));
    eprintln!("back in the selection after {took:?}");
    // Counts in the status are sampled every second: wait for the sample
    // that holds every connection made so far (10 + 100), so `before`
    // includes the first burst.
    let status = wait_mesh_connections(&s, 10 + 100, Duration::from_secs(3));
    let before = endpoint(&status, "127.0.0.1:19003")["connections_total"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(s.client.burst(SERVICE_V4, 20), (20, 0));
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut after = before;
    while after < before + 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = endpoint(&s.agent.status_json(), "127.0.0.1:19003")["connections_total"]
            .as_u64()
            .unwrap_or(0);
    }
    assert_eq!(
        after - before,
        10,
        "round robin again: half of 20 to the endpoint back"
    );
    drop(second);
}

/// Rules applied while an endpoint is dead, then the endpoint comes back:
/// its connections count in `status` and `/metrics` like the others' (the
/// agent's index of counter slots follows health, not only rule changes).
#[test]
fn an_endpoint_dead_when_the_rules_changed_is_counted_once_it_rejoins() {
    let mut s = Scenario::tcp_echo_opts(
        "health-late",
        &[
            ("service-entry.yaml", &two_v1_endpoints()),
            (
                "virtual-service.yaml",
                &tcp_echo_rule("examples/vs-all-v1.yaml"),
            ),
        ],
        &["--health-interval", INTERVAL],
    );
    // 127.0.0.1:19003 has no backend yet.
    wait_state(&s, "127.0.0.1:19003", "unhealthy", Duration::from_secs(3));
    s.agent.write_rules(
        "virtual-service.yaml",
        tcp_echo_rule("examples/vs-20-v2.yaml"),
    );
    let third = echo_backend(&s.netns, Some(&s.cgroup), "one", &["127.0.0.1:19003"]);
    wait_state(&s, "127.0.0.1:19003", "ok", Duration::from_secs(3));
    // 80/20 exactly; v1's 80 round robin over its two endpoints.
    assert_eq!(s.client.burst(SERVICE_V4, 100), (80, 20));
    let status = wait_mesh_connections(&s, 100, Duration::from_secs(3));
    assert_eq!(
        endpoint(&status, "127.0.0.1:19003")["connections_total"],
        40,
        "{status}"
    );
    let page = s.agent.wait_metrics("v1's 80 connections", |p| {
        try_metric(p, OPENED, &[("destination_version", "v1")]) == Some(80)
    });
    assert_eq!(
        metric(&page, OPENED, &[("destination_version", "v2")]),
        20,
        "{page}"
    );
    drop(third);
}

#[test]
fn a_subset_with_no_healthy_endpoint_refuses_at_once() {
    let mut s = Scenario::tcp_echo_opts(
        "health-subset",
        &[(
            "virtual-service.yaml",
            &tcp_echo_rule("examples/vs-20-v2.yaml"),
        )],
        &["--health-interval", INTERVAL],
    );
    // v2 is the second backend; stop it.
    s.backends.remove(1);
    wait_state(&s, "127.0.0.1:19002", "unhealthy", Duration::from_secs(3));
    let start = Instant::now();
    let (one, two, errors) = s.client.burst_with_errors(SERVICE_V4, 100);
    let took = start.elapsed();
    assert_eq!((one, two, errors.len()), (80, 0, 20), "{errors:?}");
    assert!(
        errors.iter().all(|e| e.contains("refused")),
        "refused, not timed out: {errors:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "100 connections, 20 refused, in {took:?}: nothing hangs"
    );
}

#[test]
fn outlier_detection_ejects_an_endpoint_whose_connects_fail() {
    let dr = tcp_echo_rule("destination-rule.yaml").replace(
        "  host: tcp-echo.local\n",
        "  host: tcp-echo.local\n  trafficPolicy:\n    outlierDetection:\n      consecutiveGatewayErrors: 3\n      interval: 1s\n      baseEjectionTime: 30s\n      maxEjectionPercent: 50\n",
    );
    assert!(dr.contains("outlierDetection"), "{dr}");
    // Active checks off: only the connects the kernel sees count.
    let mut s = Scenario::tcp_echo_opts(
        "health-outlier",
        &[
            ("service-entry.yaml", &two_v1_endpoints()),
            ("destination-rule.yaml", &dr),
            (
                "virtual-service.yaml",
                &tcp_echo_rule("examples/vs-all-v1.yaml"),
            ),
        ],
        &["--health-interval", "0"],
    );
    // Nothing listens on 127.0.0.1:19003: every other connect is refused.
    let (one, _, errors) = s.client.burst_with_errors(SERVICE_V4, 10);
    assert_eq!((one, errors.len()), (5, 5), "{errors:?}");
    wait_state(&s, "127.0.0.1:19003", "ejected", Duration::from_secs(3));
    assert!(
        s.agent.log_text().contains("outlier: endpoint ejected"),
        "{}",
        s.agent.log_text()
    );
    let (one, two, errors) = s.client.burst_with_errors(SERVICE_V4, 100);
    assert_eq!(
        (one, two, errors.len()),
        (100, 0, 0),
        "the ejected endpoint gets nothing: {errors:?}"
    );
}
