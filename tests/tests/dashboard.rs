//! The Grafana dashboard (`dashboards/traffic-shift.json`) against a real Prometheus
//! server: it is well-formed, names only the metrics the agent exports, every query
//! parses, and on a scraped exposition shaped like the agent's every query has data
//! and the split, weight and fill panels compute what their titles say. Needs no root
//! and no agent; needs `/usr/bin/prometheus` (`cargo xtask setup`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener},
    time::Duration,
};

use serde_json::Value;
use traffic_shift_agent::metrics::FAMILIES;
use traffic_shift_tests::{
    dashboard::{
        ALL, DashboardQuery, ISTIO_LABELS, NOT_ON_DASHBOARD, TARGET_LABELS, TEST_INTERVAL,
        all_panels, dashboard_queries, exported_samples, legend_labels, load, promql_names,
        raw_queries, repo_dashboard, substitute, variables,
    },
    prometheus::{Prometheus, Sample},
};

fn substituted(dashboard: &Value, q: &DashboardQuery) -> String {
    let vars = variables(dashboard);
    let values: BTreeMap<&str, &str> = vars.iter().map(|v| (v.as_str(), ALL)).collect();
    substitute(&q.expr, &values, TEST_INTERVAL)
}

#[test]
fn dashboard_is_an_importable_grafana_dashboard() {
    let d = load(&repo_dashboard());
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!(schema >= 36, "schemaVersion {schema} < 36");
    assert_eq!(d["uid"], "traffic-shift");
    assert_eq!(
        d["__inputs"][0]["name"], "DS_PROMETHEUS",
        "Import asks for the data source through __inputs"
    );
    let vars = variables(&d);
    for v in ["DS_PROMETHEUS", "instance", "destination_service"] {
        assert!(vars.iter().any(|x| x == v), "no variable {v}: {vars:?}");
    }
    let panels = all_panels(&d);
    let graphs: Vec<&Value> = panels
        .iter()
        .copied()
        .filter(|p| p["type"] != "row")
        .collect();
    assert!(graphs.len() >= 8, "only {} panels", graphs.len());
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().expect("every panel has a title");
        let id = p["id"].as_u64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} twice ({title})");
        let pos = &p["gridPos"];
        let (x, w) = (pos["x"].as_u64(), pos["w"].as_u64());
        assert!(
            matches!((x, w), (Some(x), Some(w)) if x + w <= 24) && pos["h"].as_u64().is_some(),
            "{title}: gridPos {pos} outside the 24-column grid"
        );
    }
    for p in graphs {
        let title = p["title"].as_str().unwrap_or_default();
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{title}: data source"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert_eq!(
                t["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{title}: target data source"
            );
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "{title}: empty expr"
            );
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "{title}: refId twice"
            );
        }
    }
}

#[test]
fn dashboard_uses_only_the_exported_metrics_and_their_labels() {
    let d = load(&repo_dashboard());
    let queries = raw_queries(&d);
    let known = exported_samples();
    for q in &queries {
        let expr = substituted(&d, q);
        let names = promql_names(&expr);
        assert!(
            !names.metrics.is_empty(),
            "{}: `{expr}` names no metric",
            q.panel
        );
        let mut labels: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
        for m in &names.metrics {
            let sample = known.get(m.as_str()).unwrap_or_else(|| {
                panic!(
                    "{}: `{m}` is not a metric the agent exports (in `{expr}`)",
                    q.panel
                )
            });
            labels.extend(sample.labels.iter().copied());
        }
        for l in names.labels.iter().cloned().chain(legend_labels(&q.legend)) {
            assert!(
                labels.contains(l.as_str()),
                "{}: label `{l}` is not a label of {:?} (in `{expr}`, legend `{}`)",
                q.panel,
                names.metrics,
                q.legend
            );
        }
    }
    // Every exported family is on the dashboard, or listed as deliberately not.
    let used: BTreeSet<String> = queries
        .iter()
        .flat_map(|q| promql_names(&substituted(&d, q)).metrics)
        .collect();
    for family in FAMILIES {
        let shown = family.sample_names().iter().any(|m| used.contains(m));
        match NOT_ON_DASHBOARD
            .iter()
            .find(|(name, _)| *name == family.name)
        {
            Some((_, reason)) => {
                assert!(!reason.trim().is_empty(), "{}: no reason", family.name);
                assert!(
                    !shown,
                    "{} is on the dashboard and listed as not on it",
                    family.name
                );
            }
            None => assert!(
                shown,
                "no panel shows {} ({:?}): add one, or list it in NOT_ON_DASHBOARD with the reason",
                family.name,
                family.sample_names()
            ),
        }
    }
    for (name, _) in NOT_ON_DASHBOARD {
        assert!(
            FAMILIES.iter().any(|f| f.name == *name),
            "NOT_ON_DASHBOARD names {name}, which the agent does not export"
        );
    }
    assert!(ISTIO_LABELS.contains(&"destination_version"));
}

#[test]
fn every_dashboard_query_parses_in_prometheus() {
    let queries = dashboard_queries(&repo_dashboard());
    assert!(queries.len() >= 10, "only {} queries", queries.len());
    let prometheus = Prometheus::start(&[]);
    let errors: Vec<String> = queries
        .iter()
        .filter_map(|q| prometheus.try_query(q).err().map(|e| e.to_string()))
        .collect();
    assert!(
        errors.is_empty(),
        "{} of {} dashboard queries refused by Prometheus:\n{}",
        errors.len(),
        queries.len(),
        errors.join("\n")
    );
    // And the harness reports a parse error as one.
    let err = prometheus
        .try_query("sum(rate(x[1m])")
        .expect_err("unbalanced parentheses parse");
    assert_eq!(
        (err.status, err.error_type.as_str()),
        (400, "bad_data"),
        "{err}"
    );
}

/// Answers every request with the exposition of scrape number n (1, 2, ...): the
/// agent's metrics with counters growing by a fixed step per scrape.
fn fake_agent() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for (n, stream) in (1u64..).zip(listener.incoming()) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => request.extend_from_slice(&buf[..k]),
                }
            }
            let body = exposition(n);
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

fn istio(version: &str, flags: &str) -> String {
    ISTIO_LABELS
        .iter()
        .map(|l| {
            let v = match *l {
                "reporter" => "source",
                "destination_service" => "tcp-echo.local",
                "destination_service_name" | "destination_canonical_service" => "tcp-echo",
                "destination_version" | "destination_canonical_revision" => version,
                "request_protocol" => "tcp",
                "response_flags" => flags,
                "connection_security_policy" => "none",
                _ => "unknown",
            };
            format!(r#"{l}="{v}""#)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// 80/20: per scrape v1 opens 8 connections (1 of them UF), v2 2; v1 has 3 open.
fn exposition(n: u64) -> String {
    let mut t = String::new();
    let mut line = |metric: &str, labels: &str, v: u64| {
        let _ = writeln!(t, "{metric}{{{labels}}} {v}");
    };
    line(
        "istio_tcp_connections_opened_total",
        &istio("v1", "-"),
        7 * n,
    );
    line("istio_tcp_connections_opened_total", &istio("v1", "UF"), n);
    line(
        "istio_tcp_connections_opened_total",
        &istio("v2", "-"),
        2 * n,
    );
    line(
        "istio_tcp_connections_closed_total",
        &istio("v1", "-"),
        7 * n - 3,
    );
    line("istio_tcp_connections_closed_total", &istio("v1", "UF"), n);
    line("istio_tcp_sent_bytes_total", &istio("v1", "-"), 100 * n);
    line("istio_tcp_received_bytes_total", &istio("v1", "-"), 60 * n);
    let svc = r#"destination_service="tcp-echo.local""#;
    line(
        "traffic_shift_connections_failed_total",
        &format!(r#"{svc},destination_version="v1",endpoint="127.0.0.1:19001",reason="refused""#),
        n,
    );
    for (program, event, per_scrape) in [
        ("connect", "rewritten", 10),
        ("connect", "no_endpoint", 1),
        ("sk_lookup", "gateway_fallback", 1),
    ] {
        line(
            "traffic_shift_kernel_events_total",
            &format!(r#"program="{program}",event="{event}""#),
            per_scrape * n,
        );
    }
    http_and_xdp(&mut t, n);
    let mut bare = |metric: &str, labels: &str, v: u64| {
        let _ = if labels.is_empty() {
            writeln!(t, "{metric} {v}")
        } else {
            writeln!(t, "{metric}{{{labels}}} {v}")
        };
    };
    bare("traffic_shift_rules_applied_total", "", n);
    bare("traffic_shift_apply_errors_total", "", 1);
    bare("traffic_shift_rules_generation", "", n);
    // A node of a fleet: connected, one more store revision per scrape, one reconnect.
    bare("traffic_shift_store_connected", "", 1);
    bare("traffic_shift_store_revision", "", 40 + n);
    bare("traffic_shift_store_reconnects_total", "", 1);
    // A rollout at its third step, 20% on the canary; an interval a scrape.
    let rollout = r#"rollout="default/tcp-echo""#;
    for phase in ["Progressing", "Paused", "Healthy", "Degraded"] {
        bare(
            "traffic_shift_rollout_phase",
            &format!(r#"{rollout},phase="{phase}""#),
            u64::from(phase == "Progressing"),
        );
    }
    bare("traffic_shift_rollout_step", rollout, 2);
    bare("traffic_shift_rollout_canary_weight", rollout, 20);
    bare(
        "traffic_shift_rollout_analysis_runs_total",
        &format!(r#"{rollout},metric="connectionSuccessRate",result="successful""#),
        n,
    );
    bare("traffic_shift_map_entries", r#"map="TS_ORIG_DST""#, 16384);
    bare(
        "traffic_shift_map_max_entries",
        r#"map="TS_ORIG_DST""#,
        65536,
    );
    for (version, endpoint, registered, weight) in [
        ("v1", "127.0.0.1:19001", 1, 80),
        ("v2", "127.0.0.1:19002", 0, 20),
    ] {
        bare(
            "traffic_shift_endpoint_registered",
            &format!(r#"{svc},destination_version="{version}",endpoint="{endpoint}""#),
            registered,
        );
        bare(
            "traffic_shift_endpoint_healthy",
            &format!(r#"{svc},destination_version="{version}",endpoint="{endpoint}""#),
            1,
        );
        bare(
            "traffic_shift_route_weight",
            &format!(r#"route="default/tcp-echo tcp[0]",{svc},destination_version="{version}""#),
            weight,
        );
    }
    t
}

/// The L7 proxy's and the XDP gateway's families in scrape `n`, both 80/20.
fn http_and_xdp(t: &mut String, n: u64) {
    let mut line = |metric: &str, labels: &str, v: u64| {
        let _ = writeln!(t, "{metric}{{{labels}}} {v}");
    };
    let svc = r#"destination_service="tcp-echo.local""#;
    // HTTP through the L7 proxy, 80/20: every request took 10 to 25 ms.
    for (version, per_scrape) in [("v1", 8), ("v2", 2)] {
        let labels = istio(version, "-")
            .replace("request_protocol=\"tcp\"", "request_protocol=\"http\"")
            + ",response_code=\"200\"";
        line("istio_requests_total", &labels, per_scrape * n);
        for (le, count) in [("10", 0), ("25", per_scrape * n), ("+Inf", per_scrape * n)] {
            line(
                "istio_request_duration_milliseconds_bucket",
                &format!("{labels},le=\"{le}\""),
                count,
            );
        }
        line(
            "istio_request_duration_milliseconds_sum",
            &labels,
            20 * per_scrape * n,
        );
        line(
            "istio_request_duration_milliseconds_count",
            &labels,
            per_scrape * n,
        );
    }
    // The XDP gateway, 80/20 of its flows; 3 packets of 100 bytes per flow each way.
    for (version, endpoint, per_scrape) in
        [("v1", "127.0.0.1:19001", 8), ("v2", "127.0.0.1:19002", 2)]
    {
        let labels = format!(
            r#"route="default/tcp-echo tcp[0]",{svc},destination_version="{version}",endpoint="{endpoint}""#
        );
        line("traffic_shift_xdp_flows_total", &labels, per_scrape * n);
        for direction in ["request", "response"] {
            let labels = format!(r#"{labels},direction="{direction}""#);
            line(
                "traffic_shift_xdp_packets_total",
                &labels,
                3 * per_scrape * n,
            );
            line(
                "traffic_shift_xdp_bytes_total",
                &labels,
                300 * per_scrape * n,
            );
        }
    }
}

/// The samples of the panel titled `panel`, target with a legend starting with `legend`.
fn panel_samples(
    prometheus: &Prometheus,
    d: &Value,
    queries: &[DashboardQuery],
    panel: &str,
    legend: &str,
) -> Vec<Sample> {
    let q = queries
        .iter()
        .find(|q| q.panel.starts_with(panel) && q.legend.starts_with(legend))
        .unwrap_or_else(|| panic!("no panel `{panel}` with a legend `{legend}...`"));
    prometheus.query(&substituted(d, q))
}

fn by_version(samples: &[Sample]) -> BTreeMap<String, f64> {
    samples
        .iter()
        .map(|s| (s.label("destination_version").to_owned(), s.value))
        .collect()
}

fn assert_near(what: &str, got: Option<f64>, want: f64) {
    assert!(
        got.is_some_and(|g| (g - want).abs() < 0.01),
        "{what}: got {got:?}, want {want}"
    );
}

#[test]
fn dashboard_queries_compute_the_panels_from_scraped_metrics() {
    let agent = fake_agent();
    let prometheus = Prometheus::start(&[agent]);
    prometheus.wait_for_scrape(agent);
    let d = load(&repo_dashboard());
    let queries = raw_queries(&d);

    for q in &queries {
        let expr = substituted(&d, q);
        let samples = prometheus.query(&expr);
        assert!(
            !samples.is_empty(),
            "{} ({}): no data from an exposition that has every metric: `{expr}`",
            q.panel,
            q.legend
        );
    }

    let split = by_version(&panel_samples(
        &prometheus,
        &d,
        &queries,
        "Traffic split",
        "",
    ));
    assert_near("split v1 %", split.get("v1").copied(), 80.0);
    assert_near("split v2 %", split.get("v2").copied(), 20.0);
    let configured = by_version(&panel_samples(
        &prometheus,
        &d,
        &queries,
        "Configured weight vs observed share",
        "configured",
    ));
    assert_near("configured v1 %", configured.get("v1").copied(), 80.0);
    assert_near("configured v2 %", configured.get("v2").copied(), 20.0);
    let open = by_version(&panel_samples(
        &prometheus,
        &d,
        &queries,
        "Open connections",
        "",
    ));
    assert_near("open v1", open.get("v1").copied(), 3.0);
    assert!(
        open.get("v2").is_some_and(|&v| v >= 4.0),
        "open v2 (none closed yet) counts every opened connection: {open:?}"
    );
    let fill = panel_samples(&prometheus, &d, &queries, "BPF map fill levels", "");
    assert_near("TS_ORIG_DST fill %", fill.first().map(|s| s.value), 25.0);
    let drops: BTreeSet<String> = panel_samples(&prometheus, &d, &queries, "Kernel drops", "")
        .iter()
        .map(|s| format!("{} {}", s.label("program"), s.label("event")))
        .collect();
    assert_eq!(
        drops,
        BTreeSet::from([
            "connect no_endpoint".to_owned(),
            "sk_lookup gateway_fallback".to_owned()
        ]),
        "drops and fallbacks, without `rewritten`"
    );
    check_http_and_xdp_panels(&prometheus, &d, &queries);
    let uf = by_version(&panel_samples(
        &prometheus,
        &d,
        &queries,
        "Failed connections by reason",
        "Istio UF",
    ));
    assert_eq!(
        uf.keys().collect::<Vec<_>>(),
        ["v1"],
        "UF only on v1: {uf:?}"
    );
}

/// The HTTP split and p99, and the XDP flow split.
fn check_http_and_xdp_panels(prometheus: &Prometheus, d: &Value, queries: &[DashboardQuery]) {
    let http = by_version(&panel_samples(
        prometheus,
        d,
        queries,
        "HTTP request rate by version",
        "",
    ));
    assert_near(
        "HTTP requests v1 / v2",
        http.get("v1").zip(http.get("v2")).map(|(a, b)| a / b),
        4.0,
    );
    let p99 = by_version(&panel_samples(
        prometheus,
        d,
        queries,
        "HTTP request duration p99",
        "",
    ));
    // Every request in the (10, 25] ms bucket: 10 + 0.99 * 15.
    assert_near("HTTP p99 v1 ms", p99.get("v1").copied(), 24.85);
    let flows = by_version(&panel_samples(
        prometheus,
        d,
        queries,
        "XDP gateway: new flows",
        "",
    ));
    assert_near(
        "XDP flows v1 / v2",
        flows.get("v1").zip(flows.get("v2")).map(|(a, b)| a / b),
        4.0,
    );
}
