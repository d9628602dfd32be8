//! A real Prometheus server scrapes the real agent: the seed's "watch the
//! split in Prometheus" step, and every query of the shipped Grafana
//! dashboard returning data after a scenario (but the HTTP and XDP panels,
//! whose families come from other paths: see `OTHER_PATHS`). As root (the agent attaches
//! kernel programs); needs `/usr/bin/prometheus` (`cargo xtask setup`).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use traffic_shift_agent::metrics::{
    Family, REQUEST_DURATION_MILLISECONDS, REQUESTS, ROLLOUT_ANALYSIS_RUNS, ROLLOUT_CANARY_WEIGHT,
    ROLLOUT_PHASE, ROLLOUT_STEP, STORE_CONNECTED, STORE_RECONNECTS, STORE_REVISION, XDP_BYTES,
    XDP_FLOWS, XDP_PACKETS,
};
use traffic_shift_tests::{
    RemoteClient, SERVICE_V4, Scenario,
    dashboard::{ALL, load, promql_names, raw_queries, repo_dashboard, substitute, variables},
    prometheus::Prometheus,
    tcp_echo_rule,
};

/// Families this TCP scenario does not produce, so their panels are not
/// asked for data here: the L7 proxy's (no HTTP rules; `http.rs` reads them
/// from a real agent), the XDP gateway's (no XDP interface; `xdp.rs`) and
/// the fleet store's (no `--store`; `fleet_status.rs` reads them from
/// agents on a real etcd) and the rollouts' (no Rollout; `rollout.rs`
/// asks Prometheus for the rollout panels' queries after a rollout).
/// `dashboard.rs` checks their panels on a scraped exposition.
const OTHER_PATHS: [Family; 12] = [
    REQUESTS,
    REQUEST_DURATION_MILLISECONDS,
    XDP_PACKETS,
    XDP_BYTES,
    XDP_FLOWS,
    STORE_CONNECTED,
    STORE_REVISION,
    STORE_RECONNECTS,
    ROLLOUT_PHASE,
    ROLLOUT_STEP,
    ROLLOUT_CANARY_WEIGHT,
    ROLLOUT_ANALYSIS_RUNS,
];

#[test]
fn prometheus_sees_the_split_and_every_dashboard_query_has_data() {
    // v2 has a second endpoint nothing listens on: half of v2's connects
    // are refused, so the failure panels have data too.
    let service_entry = tcp_echo_rule("service-entry.yaml").replace(
        "  - address: 127.0.0.1\n    ports: {tcp: 19002}",
        "  - address: 127.0.0.1\n    ports: {tcp: 19002}\n    labels: {app: tcp-echo, version: v2}\n  - address: 127.0.0.1\n    ports: {tcp: 19007}",
    );
    assert!(
        service_entry.contains("19007"),
        "the shipped ServiceEntry changed shape:\n{service_entry}"
    );
    let mut s = Scenario::tcp_echo_opts(
        "prometheus",
        &[
            ("service-entry.yaml", &service_entry),
            (
                "virtual-service.yaml",
                &tcp_echo_rule("examples/vs-20-v2.yaml"),
            ),
        ],
        // A dead endpoint on purpose: no probes taking it out first.
        &["--health-interval", "0"],
    );
    let agent = s.agent.metrics_addr();
    let prometheus = Prometheus::start(&[agent]);
    prometheus.wait_for_scrape(agent);

    let (one, two, errors) = s.client.burst_with_errors(SERVICE_V4, 1000);
    assert_eq!(
        (one, two, errors.len()),
        (800, 100, 100),
        "v1 800; v2 200, half of them refused: {:?}",
        errors.first()
    );
    let mut remote = RemoteClient::start(&s.netns);
    let gateway = format!("{}:31400", traffic_shift_tests::NODE_ADDR);
    let (one, two, errors) = remote.client.burst_with_errors(&gateway, 10);
    assert_eq!((one + two, errors.len()), (10, 0), "{errors:?}");

    // The seed's check, as an operator types it (mesh path: source_workload unknown).
    let split = "sum by (destination_version) (istio_tcp_connections_opened_total{source_workload=\"unknown\"})";
    let samples = prometheus.wait_until(
        split,
        "800 v1 and 200 v2 scraped",
        |samples| samples.iter().map(|s| s.value).sum::<f64>() >= 1000.0,
        Duration::from_secs(20),
    );
    let by_version: BTreeMap<&str, f64> = samples
        .iter()
        .map(|s| (s.label("destination_version"), s.value))
        .collect();
    assert_eq!(
        by_version,
        BTreeMap::from([("v1", 800.0), ("v2", 200.0)]),
        "{split}"
    );
    // One more scrape after everything closed, so rates see the last step.
    prometheus.wait_until(
        "sum(istio_tcp_connections_closed_total)",
        "every connection closed",
        |samples| samples.iter().map(|s| s.value).sum::<f64>() >= 1010.0,
        Duration::from_secs(20),
    );
    prometheus.wait_for_next_scrape(agent);

    let dashboard = load(&repo_dashboard());
    let vars = variables(&dashboard);
    let values: BTreeMap<&str, &str> = vars.iter().map(|v| (v.as_str(), ALL)).collect();
    let mut empty = Vec::new();
    let queries = raw_queries(&dashboard);
    assert!(queries.len() >= 10, "{} queries", queries.len());
    let other_paths: BTreeSet<String> = OTHER_PATHS.iter().flat_map(Family::sample_names).collect();
    for q in &queries {
        let expr = substitute(&q.expr, &values, "1m");
        let metrics = promql_names(&expr).metrics;
        if metrics.iter().all(|m| other_paths.contains(m)) {
            eprintln!("not produced by this scenario: {}: {expr}", q.panel);
            continue;
        }
        if prometheus.query(&expr).is_empty() {
            empty.push(format!("{}: {expr}", q.panel));
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data after the scenario:\n{}\n\ntargets: {}",
        empty.join("\n"),
        prometheus.targets()
    );
}
