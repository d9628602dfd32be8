//! Observability end to end: the kernel's sock_ops counters reach
//! `/metrics` under Istio's metric and label names, for the connect-time
//! path and the gateway, failures included. As root, each test in its own
//! network namespace and cgroup.

use traffic_shift_agent::metrics::{FAMILIES, FamilyType, REQUEST_DURATION_MILLISECONDS, REQUESTS};
use traffic_shift_tests::{
    BpfStats, RemoteClient, SERVICE_V4, Scenario, bookinfo_rule, metric, tcp_echo_rule,
};

const OPENED: &str = "istio_tcp_connections_opened_total";
const CLOSED: &str = "istio_tcp_connections_closed_total";
const SENT: &str = "istio_tcp_sent_bytes_total";
const RECEIVED: &str = "istio_tcp_received_bytes_total";
/// `hello\n` asked, `one hello\n` / `two hello\n` answered.
const REQUEST: u64 = 6;
const RESPONSE: u64 = 10;

fn version(v: &str) -> [(&'static str, &str); 2] {
    [
        ("destination_version", v),
        ("destination_service", "tcp-echo.local"),
    ]
}

#[test]
fn connections_and_bytes_per_version_at_80_20() {
    let mut s = Scenario::tcp_echo("metrics-split", &tcp_echo_rule("examples/vs-20-v2.yaml"));
    let (one, two) = s.client.burst(SERVICE_V4, 1000);
    assert_eq!((one, two), (800, 200), "the smooth split itself");
    // Every connection closed on the client side once its answer came;
    // the last ones finish closing (TIME_WAIT) within moments.
    let page = s.agent.wait_metrics("1000 connections closed", |p| {
        metric(p, CLOSED, &[("destination_service", "tcp-echo.local")]) >= 1000
    });
    for (v, n) in [("v1", 800), ("v2", 200)] {
        let labels = version(v);
        assert_eq!(metric(&page, OPENED, &labels), n, "{v} opened:\n{page}");
        assert_eq!(metric(&page, CLOSED, &labels), n, "{v} closed:\n{page}");
        assert_eq!(
            metric(&page, RECEIVED, &labels),
            n * REQUEST,
            "{v}: bytes the destination received (the requests):\n{page}"
        );
        assert_eq!(
            metric(&page, SENT, &labels),
            n * RESPONSE,
            "{v}: bytes the destination sent (the answers):\n{page}"
        );
    }
    // Istio's labels, with Istio's values where the node knows them.
    for label in [
        "reporter=\"source\"",
        "destination_service_name=\"tcp-echo\"",
        "destination_service_namespace=\"default\"",
        "destination_workload=\"tcp-echo-v1\"",
        "destination_app=\"tcp-echo\"",
        "request_protocol=\"tcp\"",
        "response_flags=\"-\"",
    ] {
        assert!(
            page.lines()
                .any(|l| l.starts_with(OPENED) && l.contains(label)),
            "{OPENED} carries {label}:\n{page}"
        );
    }
    assert_eq!(
        metric(
            &page,
            "traffic_shift_kernel_events_total",
            &[("event", "rewritten")]
        ),
        1000,
        "every connect rewritten:\n{page}"
    );
    assert_eq!(
        metric(
            &page,
            "traffic_shift_kernel_events_total",
            &[("program", "sock_ops"), ("event", "conn_tracked")]
        ),
        1000,
        "every connection followed by sock_ops:\n{page}"
    );
    assert_eq!(
        metric(
            &page,
            "traffic_shift_route_weight",
            &[("destination_version", "v2")]
        ),
        20 * 2,
        "configured weight of v2 on the mesh and gateway routes:\n{page}"
    );
    assert!(metric(&page, "traffic_shift_rules_applied_total", &[]) >= 1);
    assert!(
        page.contains("traffic_shift_map_entries{map=\"TS_SERVICES\"} 2"),
        "two service addresses (IPv4, IPv6):\n{page}"
    );
}

/// 80/20 with v2's IPv4 endpoint moved to `port` (where the test puts
/// nothing, or a black hole), and no probes taking it out first.
fn dead_v2(test: &str, port: u16) -> Scenario {
    let service_entry = tcp_echo_rule("service-entry.yaml").replace("19002", &port.to_string());
    assert!(
        service_entry.contains(&port.to_string()),
        "shipped ServiceEntry changed shape"
    );
    Scenario::tcp_echo_opts(
        test,
        &[
            ("service-entry.yaml", &service_entry),
            (
                "virtual-service.yaml",
                &tcp_echo_rule("examples/vs-20-v2.yaml"),
            ),
        ],
        &["--health-interval", "0"],
    )
}

#[test]
fn a_backend_that_refuses_shows_as_failed_connections_with_the_reason() {
    // v2's endpoint is a port nothing listens on: its connects get a reset.
    let mut s = dead_v2("metrics-refused", 19009);
    let (one, two, errors) = s.client.burst_with_errors(SERVICE_V4, 100);
    assert_eq!((one, two, errors.len()), (80, 0, 20), "{errors:?}");
    let failed = "traffic_shift_connections_failed_total";
    let page = s.agent.wait_metrics("20 refused", |p| {
        metric(p, failed, &[("reason", "refused")]) >= 20
    });
    assert_eq!(
        metric(
            &page,
            failed,
            &[
                ("destination_version", "v2"),
                ("endpoint", "127.0.0.1:19009"),
                ("reason", "refused")
            ]
        ),
        20,
        "{page}"
    );
    assert_eq!(metric(&page, failed, &[("reason", "timeout")]), 0, "{page}");
    assert_eq!(
        metric(&page, failed, &[("destination_version", "v1")]),
        0,
        "{page}"
    );
    // Istio's view: opened, then closed with Envoy's upstream-failure flag.
    assert_eq!(metric(&page, OPENED, &version("v2")), 20, "{page}");
    assert_eq!(
        metric(
            &page,
            CLOSED,
            &[("destination_version", "v2"), ("response_flags", "UF")]
        ),
        20,
        "{page}"
    );
    let healthy = "traffic_shift_endpoint_healthy";
    let page = s.agent.wait_metrics("v2's endpoint unhealthy", |p| {
        p.lines().any(|l| {
            l.starts_with(healthy)
                && l.contains("endpoint=\"127.0.0.1:19009\"")
                && l.ends_with(" 0")
        })
    });
    assert_eq!(
        metric(&page, healthy, &[("endpoint", "127.0.0.1:19001")]),
        1,
        "{page}"
    );
    // And in status (sampled every second): the endpoint is failing, its
    // failures counted.
    let v2_of = |status: &serde_json::Value| {
        status["routes"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["kind"] == "mesh"))
            .map(|mesh| mesh["destinations"][1].clone())
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut status = s.agent.status_json();
    while v2_of(&status)["failed_last_minute"] != 20 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        status = s.agent.status_json();
    }
    let v2 = v2_of(&status);
    assert_eq!(v2["subset"], "v2", "{status}");
    assert_eq!(v2["failed_last_minute"], 20, "{status}");
    assert_eq!(v2["endpoints"][0]["state"], "failing", "{status}");
    assert_eq!(v2["endpoints"][0]["failed_total"], 20, "{status}");
}

#[test]
fn a_backend_that_never_answers_shows_as_timed_out() {
    // v2's endpoint drops every SYN (full accept queue); the namespace
    // gives up after one retransmission (~3 s) instead of six (~2 min).
    let mut s = dead_v2("metrics-timeout", 19008);
    s.netns.sysctl("ipv4/tcp_syn_retries", "1");
    let _black_hole = s.netns.black_hole("127.0.0.1:19008".parse().expect("addr"));
    // 80/20 is exact over every 5 connections: one goes to v2.
    let (one, two, errors) = s.client.burst_with_errors(SERVICE_V4, 5);
    assert_eq!((one, two, errors.len()), (4, 0, 1), "{errors:?}");
    let failed = "traffic_shift_connections_failed_total";
    let page = s.agent.wait_metrics("1 timed out", |p| {
        metric(p, failed, &[("reason", "timeout")]) >= 1
    });
    assert_eq!(
        metric(
            &page,
            failed,
            &[("destination_version", "v2"), ("reason", "timeout")]
        ),
        1,
        "{page}"
    );
    assert_eq!(metric(&page, failed, &[("reason", "refused")]), 0, "{page}");
}

/// The bytes of a connection still open are in every scrape, exactly: the
/// scrape has the kernel add them (no program runs per ACK to report them).
#[test]
fn open_connections_report_their_bytes_exactly_at_every_scrape() {
    let mut s = Scenario::tcp_echo("metrics-long", &tcp_echo_rule("examples/vs-all-v1.yaml"));
    let held = s.client.call(&format!("hold {SERVICE_V4} 1"));
    assert_eq!(held["answers"][0], "one", "{held}");
    let page = s.agent.metrics();
    assert_eq!(metric(&page, RECEIVED, &version("v1")), REQUEST, "{page}");
    assert_eq!(metric(&page, SENT, &version("v1")), RESPONSE, "{page}");
    // `again\n` asked, `one again\n` answered: as many bytes once more.
    let again = s.client.call("held");
    assert_eq!(again["answers"][0], "one", "{again}");
    let page = s.agent.metrics();
    assert_eq!(
        metric(&page, RECEIVED, &version("v1")),
        2 * REQUEST,
        "{page}"
    );
    assert_eq!(metric(&page, SENT, &version("v1")), 2 * RESPONSE, "{page}");
    assert_eq!(
        metric(&page, CLOSED, &version("v1")),
        0,
        "still open:\n{page}"
    );
}

/// A routed connection runs no program per packet or per ACK: exchanges on
/// an open connection run the agent's sock_ops program not at all, as the
/// kernel counts its runs, where the RTT callback it used ran on every ACK.
#[test]
fn an_open_routed_connection_runs_no_program_per_ack() {
    const EXCHANGES: u64 = 100;
    let mut s = Scenario::tcp_echo("metrics-per-ack", &tcp_echo_rule("examples/vs-all-v1.yaml"));
    let stats = BpfStats::on();
    let sock_ops = |s: &Scenario| stats.runs(&s.agent.bpffs, "link_ts_sock_ops");
    let before = sock_ops(&s);
    let held = s.client.call(&format!("hold {SERVICE_V4} 1"));
    assert_eq!(held["answers"][0], "one", "{held}");
    let connected = sock_ops(&s);
    // The count works: a new connection's events (connect, established,
    // its state changes) ran it.
    assert!(
        connected >= before + 3,
        "sock_ops ran {} times for a new connection",
        connected - before
    );
    for _ in 0..EXCHANGES {
        let again = s.client.call("held");
        assert_eq!(again["answers"][0], "one", "{again}");
    }
    // Per ACK it would run at least once an exchange; other sockets of the
    // cgroup (a health probe) may run it a few times meanwhile.
    let ran = sock_ops(&s) - connected;
    assert!(
        ran < 10,
        "sock_ops ran {ran} times during {EXCHANGES} exchanges on an open connection"
    );
    let page = s.agent.metrics();
    assert_eq!(
        metric(&page, RECEIVED, &version("v1")),
        (EXCHANGES + 1) * REQUEST,
        "and every byte is counted:\n{page}"
    );
}

#[test]
fn kernel_log_lines_follow_the_bpf_log_level() {
    let all_v1 = tcp_echo_rule("examples/vs-all-v1.yaml");
    let mut s = Scenario::tcp_echo("metrics-log-debug", &all_v1);
    s.client.burst(SERVICE_V4, 3);
    let line = "traffic_shift::connect: connect: route";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.agent.log_text().matches(line).count() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        s.agent.log_text().matches(line).count(),
        3,
        "--bpf-log-level debug: one kernel line per connect in the agent's log:\n{}",
        s.agent.log_text()
    );
    drop(s);

    let mut s = Scenario::tcp_echo_opts(
        "metrics-log-info",
        &[("virtual-service.yaml", &all_v1)],
        &["--bpf-log-level", "info"],
    );
    s.client.burst(SERVICE_V4, 3);
    // The kernel ran the connect program of all three connects (its counter
    // comes after the line it would log), and the agent answered a scrape
    // since: a debug line, had it been compiled in, would be in the log.
    s.agent.wait_metrics("the three connects rewritten", |p| {
        metric(
            p,
            "traffic_shift_kernel_events_total",
            &[("program", "connect"), ("event", "rewritten")],
        ) >= 3
    });
    assert!(
        !s.agent.log_text().contains(line),
        "--bpf-log-level info: the kernel's debug lines are compiled out:\n{}",
        s.agent.log_text()
    );
}

#[test]
fn the_gateway_path_is_counted_per_version() {
    let s = Scenario::tcp_echo("metrics-gateway", &tcp_echo_rule("examples/vs-20-v2.yaml"));
    let mut remote = RemoteClient::start(&s.netns);
    let gateway = format!("{}:31400", traffic_shift_tests::NODE_ADDR);
    let (one, two, errors) = remote.client.burst_with_errors(&gateway, 100);
    assert_eq!((one, two, errors.len()), (80, 20, 0), "{errors:?}");
    let page = s.agent.wait_metrics("100 gateway connections closed", |p| {
        metric(p, CLOSED, &[("source_workload", "tcp-echo-gateway")]) >= 100
    });
    for (v, n) in [("v1", 80), ("v2", 20)] {
        let labels = [
            ("source_workload", "tcp-echo-gateway"),
            ("destination_version", v),
        ];
        assert_eq!(metric(&page, OPENED, &labels), n, "{v}:\n{page}");
        assert_eq!(
            metric(&page, RECEIVED, &labels),
            n * REQUEST,
            "{v}:\n{page}"
        );
        assert_eq!(metric(&page, SENT, &labels), n * RESPONSE, "{v}:\n{page}");
    }
    // The mesh route saw none of them: the backends' sockets are not the
    // client's, and nothing is counted twice. As Istio's proxies, the agent
    // has no series for what saw no traffic.
    assert!(
        !page
            .lines()
            .any(|l| l.starts_with(OPENED) && l.contains("source_workload=\"unknown\"")),
        "{page}"
    );
}

/// The agent's list of families (`traffic_shift_agent::metrics::FAMILIES`,
/// which the dashboard test reads) is what a real agent serves: every
/// family on `/metrics` is in it, with its type and help. Bookinfo, so the
/// L7 proxy's families are there too.
#[test]
fn every_family_served_is_in_the_agents_list() {
    let mut s = Scenario::bookinfo(
        "metrics-families",
        &[(
            "virtual-service.yaml",
            &bookinfo_rule("virtual-service.yaml"),
        )],
        &[],
    );
    let reply = s
        .client
        .call("http 127.101.0.1:9080 /reviews/1 2 1 keepalive");
    assert_eq!(reply["failed"], 0, "{reply}");
    let page = s.agent.metrics();
    let mut served = Vec::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
        let family = FAMILIES
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("/metrics serves {name}, which is not in FAMILIES:\n{page}"));
        let want = match family.kind {
            FamilyType::Counter => "counter",
            FamilyType::Gauge => "gauge",
            FamilyType::Histogram => "histogram",
        };
        assert_eq!(kind, want, "{name}");
        let help = page
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# HELP {name} ")))
            .unwrap_or_else(|| panic!("no # HELP for {name}"));
        // The registry ends the L7 proxy's help with a period.
        assert_eq!(help.trim_end_matches('.'), family.help, "{name}");
        served.push(name);
    }
    for family in [REQUESTS, REQUEST_DURATION_MILLISECONDS] {
        assert!(
            served.contains(&family.name),
            "{} served after two requests:\n{page}",
            family.name
        );
    }
}

/// `n` services `svc-NN.scale.local` on 127.102.0.N:9000, each to both
/// tcp-echo endpoints: routes nobody connects to.
fn idle_services(n: usize) -> String {
    use std::fmt::Write as _;
    let mut rules = String::new();
    for i in 0..n {
        let address = format!("127.102.{}.{}", i / 250, i % 250 + 1);
        let _ = write!(
            rules,
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc-{i:02}}}\n\
             spec: {{hosts: [svc-{i:02}.scale.local], addresses: [{address}], ports: [{{number: 9000, name: tcp, protocol: TCP}}], \
             resolution: STATIC, endpoints: [{{address: 127.0.0.1, ports: {{tcp: 19001}}}}]}}\n\
             ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc-{i:02}}}\n\
             spec: {{hosts: [svc-{i:02}.scale.local], tcp: [{{route: [{{destination: {{host: svc-{i:02}.scale.local}}}}]}}]}}\n"
        );
    }
    rules
}

/// Many services, traffic on one: `/metrics` has series for that one only
/// (no zero series for idle services, as Istio's proxies), `status` shows a
/// line per route with its observed split, and `status ROUTE` one in full.
#[test]
fn many_idle_services_add_no_series_and_status_shows_a_line_per_route() {
    let mut s = Scenario::tcp_echo_with(
        "metrics-many",
        &[
            (
                "virtual-service.yaml",
                &tcp_echo_rule("examples/vs-20-v2.yaml"),
            ),
            ("idle.yaml", &idle_services(40)),
        ],
    );
    let (one, two) = s.client.burst(SERVICE_V4, 100);
    assert_eq!((one, two), (80, 20));
    let page = s.agent.wait_metrics("100 connections closed", |p| {
        metric(p, CLOSED, &[("destination_service", "tcp-echo.local")]) >= 100
    });
    assert!(
        !page.contains("scale.local"),
        "no series for the 40 idle services:\n{page}"
    );
    let routes = s.agent.status_json()["routes"]
        .as_array()
        .expect("routes")
        .len();
    assert!(routes > 40, "{routes} routes");
    let summary = s.agent.wait_status("the observed split", |st| {
        st.lines().any(|l| {
            l.starts_with("default/tcp-echo/tcp[0]/port 9000 ")
                && l.contains(" 100  v1 80% v2 20% ")
        })
    });
    assert!(
        summary.contains(&format!("{routes} routes: a line each")),
        "{summary}"
    );
    let idle = summary
        .lines()
        .find(|l| l.starts_with("default/svc-07/tcp[0]/port 9000 "))
        .unwrap_or_else(|| panic!("a line for svc-07:\n{summary}"));
    assert!(
        idle.contains("svc-07 100%") && idle.contains(" 0  -"),
        "{idle}"
    );
    assert!(
        !summary.contains("DESTINATION"),
        "no route in full:\n{summary}"
    );
    let one_route = s.agent.status_with(&["default/svc-07"]);
    assert_eq!(one_route.matches("DESTINATION").count(), 1, "{one_route}");
    assert!(one_route.contains("svc-07.scale.local"), "{one_route}");
    assert!(!one_route.contains("tcp-echo"), "{one_route}");
    let full = s.agent.status_with(&["--full"]);
    assert_eq!(full.matches("DESTINATION").count(), routes, "{full}");
}

/// A large rule set (4 000 services, a status file over 1 MiB): traffic on
/// one route goes to the status file's delta, not a rewrite of the whole
/// file, and `status` reads the file with the delta applied.
#[test]
fn a_large_status_file_gets_a_delta_that_status_reads() {
    let mut s = Scenario::tcp_echo_opts(
        "metrics-delta",
        &[
            (
                "virtual-service.yaml",
                &tcp_echo_rule("examples/vs-20-v2.yaml"),
            ),
            ("idle.yaml", &idle_services(4000)),
        ],
        &[
            "--max-routes",
            "8192",
            "--max-services",
            "8192",
            "--max-counters",
            "16384",
        ],
    );
    let status_file = s.agent.status_file.clone();
    let delta = status_file.with_extension("delta.json");
    let whole = std::fs::metadata(&status_file).expect("status file").len();
    assert!(whole > 1 << 20, "the status file has {whole} bytes");
    assert_eq!(s.client.burst(SERVICE_V4, 100), (80, 20));
    let summary = s.agent.wait_status("the observed split", |st| {
        st.lines().any(|l| {
            l.starts_with("default/tcp-echo/tcp[0]/port 9000 ")
                && l.contains(" 100  v1 80% v2 20% ")
        })
    });
    assert!(summary.contains("routes: a line each"), "{summary}");
    // The counts came through the delta: the file as last written whole
    // still has none for tcp-echo.
    let written = std::fs::metadata(&delta).expect("a delta file").len();
    assert!(
        written * 20 < whole,
        "the delta ({written} bytes) is a small part of the file ({whole})"
    );
    let base = s.agent.status_json();
    let tcp_echo = base["routes"]
        .as_array()
        .and_then(|r| {
            r.iter()
                .find(|r| r["route"] == "default/tcp-echo/tcp[0]/port 9000")
        })
        .expect("tcp-echo's route in the file")
        .clone();
    assert!(
        tcp_echo["destinations"]
            .as_array()
            .expect("destinations")
            .iter()
            .all(|d| d.get("connections_total").is_none()),
        "the file as written whole predates the traffic: {tcp_echo}"
    );
    let one = s.agent.status_with(&["default/tcp-echo"]);
    assert!(one.contains("100 conn/min"), "{one}");
}
