//! Golden tests: the whole output for known states, compared with
//! `src/status/golden/*.txt`. After an intended change of format, rewrite
//! them with `UPDATE_GOLDEN=1 cargo test -p traffic-shift-agent --lib
//! status` and review the diff; a run without it never writes them.

use std::path::PathBuf;

use super::*;
use crate::status::DestinationStatus;

/// When [`sample`] was taken, and "now", two seconds later.
const TAKEN_AT_MS: u64 = 1_795_000_000_000;
const NOW_MS: u64 = TAKEN_AT_MS + 2_400;

fn endpoint(
    address: &str,
    state: &str,
    last_minute: u64,
    total: u64,
    failed: u64,
) -> EndpointStatus {
    EndpointStatus {
        address: address.to_owned(),
        state: state.to_owned(),
        connections_last_minute: last_minute,
        connections_total: total,
        failed_total: failed,
        failed_last_minute: failed,
    }
}

fn destination(
    host: &str,
    subset: Option<&str>,
    weight: u32,
    (last_minute, total, failed): (u64, u64, u64),
    endpoints: Vec<EndpointStatus>,
) -> DestinationStatus {
    DestinationStatus {
        host: host.to_owned(),
        subset: subset.map(str::to_owned),
        weight,
        connections_last_minute: last_minute,
        connections_total: total,
        failed_last_minute: failed,
        endpoints,
    }
}

fn http_endpoint(
    address: &str,
    state: &str,
    last_minute: u64,
    total: u64,
    e5: u64,
) -> HttpEndpointStatus {
    HttpEndpointStatus {
        address: address.to_owned(),
        state: state.to_owned(),
        requests_last_minute: last_minute,
        requests_total: total,
        errors_5xx_last_minute: e5,
    }
}

#[allow(clippy::too_many_arguments)]
fn http_destination(
    subset: &str,
    weight: u32,
    (last_minute, total): (u64, u64),
    (e5, e4): (u64, u64),
    (p50, p99): (Option<f64>, Option<f64>),
    endpoints: Vec<HttpEndpointStatus>,
) -> HttpDestinationStatus {
    HttpDestinationStatus {
        host: "reviews.default.svc.cluster.local".to_owned(),
        subset: Some(subset.to_owned()),
        weight,
        requests_last_minute: last_minute,
        requests_total: total,
        errors_5xx_last_minute: e5,
        errors_4xx_last_minute: e4,
        errors_5xx_total: e5,
        p50_ms: p50,
        p99_ms: p99,
        duration_buckets: Vec::new(),
        endpoints,
    }
}

/// Bookinfo's reviews half way to v3, jason on v2: the mesh listener's
/// `end-user: jason` rule, its 50/50 rule (a v3 endpoint ejected after
/// 5xx), and the gateway's rule, idle (no latency: `-`).
fn http_sample() -> Vec<HttpRouteStatus> {
    let mesh = |route: &str, matches: &[&str], destinations| HttpRouteStatus {
        listener: "mesh reviews.default.svc.cluster.local:9080".to_owned(),
        kind: "mesh".to_owned(),
        service: "reviews.default.svc.cluster.local:9080".to_owned(),
        route: route.to_owned(),
        name: None,
        matches: matches.iter().map(|m| (*m).to_owned()).collect(),
        local_last_minute: 0,
        local_total: 0,
        destinations,
    };
    vec![
        mesh(
            "default/reviews/http[0]",
            &["header end-user = jason"],
            vec![http_destination(
                "v2",
                100,
                (20, 20),
                (0, 1),
                (Some(0.73), Some(4.9)),
                vec![http_endpoint("127.0.0.1:19082", "ok", 20, 20, 0)],
            )],
        ),
        mesh(
            "default/reviews/http[1]",
            &[],
            vec![
                http_destination(
                    "v1",
                    50,
                    (100, 1100),
                    (0, 0),
                    (Some(0.61), Some(2.3)),
                    vec![http_endpoint("127.0.0.1:19081", "ok", 100, 1100, 0)],
                ),
                http_destination(
                    "v3",
                    50,
                    (100, 300),
                    (12, 0),
                    (Some(1.2), Some(250.0)),
                    vec![
                        http_endpoint("127.0.0.1:19083", "ok", 88, 250, 0),
                        http_endpoint("127.0.0.1:19084", "ejected", 12, 50, 12),
                    ],
                ),
            ],
        ),
        HttpRouteStatus {
            listener: "gateway default/bookinfo-gateway port 8080".to_owned(),
            kind: "gateway default/bookinfo-gateway".to_owned(),
            service: "*:8080".to_owned(),
            route: "default/bookinfo/http[0]".to_owned(),
            name: Some("reviews".to_owned()),
            matches: vec!["uri prefix /reviews".to_owned(), "uri = /".to_owned()],
            local_last_minute: 0,
            local_total: 0,
            destinations: vec![http_destination(
                "v1",
                1,
                (0, 0),
                (0, 0),
                (None, None),
                vec![http_endpoint("127.0.0.1:19081", "ok", 0, 0, 0)],
            )],
        },
    ]
}

/// A node in the middle of a canary: the mesh route at 80/20 with traffic
/// (v2 has a failing endpoint), and a gateway route (a long key) whose v1
/// has an endpoint without a socket and whose canary, a host without
/// subset, has had no connection yet; and Bookinfo's HTTP routes
/// ([`http_sample`]).
fn sample() -> Status {
    let events = [
        ("rewritten", 2000),
        ("not_tcp", 0),
        ("not_service", 18_234),
        ("no_route", 0),
        ("no_endpoint", 0),
        ("bad_table", 0),
        ("family_mismatch", 0),
        ("conn_state_full", 0),
        ("peer_restored", 1994),
        ("peer_untouched", 6),
        ("gateway_assigned", 312),
        ("gateway_fallback", 20),
        ("gateway_no_socket", 0),
        ("gateway_pass", 41),
    ];
    Status {
        generation: 7,
        metrics: Some("127.0.0.1:15090".to_owned()),
        rules: "/etc/traffic-shift/rules".to_owned(),
        taken_at_ms: TAKEN_AT_MS,
        routes: vec![
            RouteStatus {
                route: "default/tcp-echo/tcp[0]/port 9000".to_owned(),
                kind: "mesh".to_owned(),
                service: "tcp-echo.local:9000".to_owned(),
                destinations: vec![
                    destination(
                        "tcp-echo.local",
                        Some("v1"),
                        80,
                        (158, 1600, 0),
                        vec![
                            endpoint("127.0.0.1:19001", "ok", 80, 810, 0),
                            endpoint("[::1]:19001", "ok", 78, 790, 0),
                        ],
                    ),
                    destination(
                        "tcp-echo.local",
                        Some("v2"),
                        20,
                        (42, 400, 3),
                        vec![
                            endpoint("127.0.0.1:19002", "failing", 21, 200, 3),
                            endpoint("[fd00:7473::2]:19002", "ok", 21, 200, 0),
                        ],
                    ),
                ],
            },
            RouteStatus {
                route: "default/tcp-echo/tcp[0]/gateway default/tcp-echo-gateway port 31400"
                    .to_owned(),
                kind: "gateway default/tcp-echo-gateway".to_owned(),
                service: "tcp-echo.local:9000".to_owned(),
                destinations: vec![
                    destination(
                        "tcp-echo.local",
                        Some("v1"),
                        90,
                        (40, 312, 0),
                        vec![
                            endpoint("127.0.0.1:19001", "registered", 40, 312, 0),
                            endpoint("127.0.0.1:19003", "missing", 0, 0, 0),
                        ],
                    ),
                    destination(
                        "tcp-echo-canary.default.svc.cluster.local",
                        None,
                        10,
                        (0, 0, 0),
                        vec![endpoint("127.0.0.1:19004", "registered", 0, 0, 0)],
                    ),
                ],
            },
        ],
        gateway_endpoints: vec![
            GatewayEndpoint {
                endpoint: "127.0.0.1:19001".to_owned(),
                state: "registered".to_owned(),
                pid: Some(4242),
                inode: Some(77_001),
            },
            GatewayEndpoint {
                endpoint: "127.0.0.1:19003".to_owned(),
                state: "missing".to_owned(),
                pid: None,
                inode: None,
            },
            GatewayEndpoint {
                endpoint: "127.0.0.1:19004".to_owned(),
                state: "registered".to_owned(),
                pid: Some(4250),
                inode: Some(77_002),
            },
        ],
        events: events.into_iter().map(|(n, c)| (n.to_owned(), c)).collect(),
        http_routes: http_sample(),
        ..Status::default()
    }
}

fn rendered(status: &Status, width: usize, now_ms: u64) -> String {
    let mut out = Vec::new();
    render(status, width, now_ms, &mut out).expect("writing to a Vec");
    String::from_utf8(out).expect("UTF-8 output")
}

/// Compares `actual` with `golden/<name>.txt`; with `UPDATE_GOLDEN=1`,
/// writes it there instead.
fn check_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/status/golden")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).expect("write the golden file");
        eprintln!("updated {}", path.display());
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "cannot read {}: {err}\nits output is:\n{actual}\n(create it with UPDATE_GOLDEN=1)",
            path.display()
        )
    });
    if actual != expected {
        let first = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, e)| a != e)
            .unwrap_or_else(|| actual.lines().count().min(expected.lines().count()));
        panic!(
            "{name}: the output differs from {} from line {}:\n\
             --- expected\n{expected}--- actual\n{actual}---\n\
             if the change is intended: UPDATE_GOLDEN=1 cargo test -p traffic-shift-agent --lib status, then review the diff",
            path.display(),
            first + 1
        );
    }
}

#[test]
fn golden_80_columns() {
    check_golden("sample-80", &rendered(&sample(), 80, NOW_MS));
}

#[test]
fn golden_40_columns() {
    check_golden("sample-40", &rendered(&sample(), 40, NOW_MS));
}

#[test]
fn golden_120_columns() {
    check_golden("sample-120", &rendered(&sample(), 120, NOW_MS));
}

#[test]
fn golden_no_routes() {
    let status = Status {
        generation: 1,
        rules: "/srv/rules".to_owned(),
        taken_at_ms: TAKEN_AT_MS,
        ..Status::default()
    };
    check_golden("no-routes", &rendered(&status, 80, NOW_MS));
}

/// Nothing observed yet: every share is `-`, the bars only show the
/// configured weights; a weight-0 destination is 0% with its marker at
/// the start.
#[test]
fn golden_idle_with_a_weight_0_destination() {
    let mut status = sample();
    status.routes.truncate(1);
    status.gateway_endpoints.clear();
    status.http_routes.clear();
    for dest in &mut status.routes[0].destinations {
        dest.connections_last_minute = 0;
        dest.connections_total = 0;
        dest.failed_last_minute = 0;
        for e in &mut dest.endpoints {
            *e = endpoint(&e.address, "ok", 0, 0, 0);
        }
    }
    status.routes[0].destinations[0].weight = 100;
    status.routes[0].destinations[1].weight = 0;
    for count in status.events.values_mut() {
        *count = 0;
    }
    check_golden("idle-weight-0", &rendered(&status, 80, NOW_MS));
}

/// A Gateway this node does not serve is said under the header, one line
/// each (wrapped with a hanging indent when narrow).
#[test]
fn gateways_not_served_here_are_said_under_the_header() {
    let mut status = sample();
    status.gateways_not_served = vec![
        "gateway default/tcp-echo-gateway: not served here (selector istio=ingressgateway does \
         not match node labels zone=b)"
            .to_owned(),
    ];
    let text = rendered(&status, 120, NOW_MS);
    let head: Vec<&str> = text.lines().take(2).collect();
    assert_eq!(
        head,
        [
            "rules /etc/traffic-shift/rules, generation 7, as of 2 s ago",
            "gateway default/tcp-echo-gateway: not served here (selector istio=ingressgateway does \
             not match node labels zone=b)",
        ],
        "{text}"
    );
    let narrow = rendered(&status, 40, NOW_MS);
    assert!(narrow.lines().all(|l| l.chars().count() <= 40), "{narrow}");
    assert!(
        narrow
            .lines()
            .any(|l| l.starts_with("gateway default/tcp-echo-gateway: not")),
        "{narrow}"
    );
    assert!(
        !rendered(&sample(), 120, NOW_MS).contains("not served here"),
        "nothing without them"
    );
}

#[test]
fn a_stale_status_says_the_agent_may_not_be_running() {
    let fresh = rendered(&sample(), 80, TAKEN_AT_MS + STALE_AFTER_MS);
    assert!(!fresh.contains("STALE"), "{fresh}");
    let stale = rendered(&sample(), 80, TAKEN_AT_MS + 5 * 60_000 + 7_000);
    let head: Vec<&str> = stale.lines().take(2).collect();
    assert_eq!(
        head,
        [
            "rules /etc/traffic-shift/rules, generation 7, as of 5 min ago",
            "STALE: not updated for over 10 s; the agent may not be running",
        ],
        "{stale}"
    );
}

#[test]
fn no_line_is_wider_than_the_width() {
    let mut idle = sample();
    for dest in idle.routes.iter_mut().flat_map(|r| &mut r.destinations) {
        dest.connections_last_minute = 0;
    }
    for dest in idle
        .http_routes
        .iter_mut()
        .flat_map(|r| &mut r.destinations)
    {
        dest.requests_last_minute = 0;
        dest.p50_ms = None;
        dest.p99_ms = None;
    }
    for status in [sample(), idle, Status::default()] {
        for width in 1..=160 {
            let (lines, clipped) = render_lines(&status, width, NOW_MS);
            for line in &lines {
                assert!(
                    columns(line) <= width,
                    "{} columns at width {width}: {line:?}",
                    columns(line)
                );
                assert_eq!(line.trim_end(), line, "trailing space: {line:?}");
            }
            if width >= 30 {
                assert_eq!(
                    clipped,
                    0,
                    "at width {width} the layout itself fits, no line is cut:\n{}",
                    lines.join("\n")
                );
            }
        }
    }
}

/// The bar is the first thing to go: while it is drawn, every number is.
#[test]
fn the_bar_goes_before_any_number() {
    for width in 30..=160 {
        let out = rendered(&sample(), width, NOW_MS);
        let header = out
            .lines()
            .find(|l| l.trim_start().starts_with("DEST"))
            .expect("a table header");
        if header.contains("OBSERVED") {
            for col in ["WEIGHT", "CONN/MIN", "SHARE", "FAIL/MIN", "TOTAL"] {
                assert!(header.contains(col), "width {width}: {header}");
            }
            assert!(out.contains(" 80% (80)"), "raw weights kept:\n{out}");
        }
    }
    // And from 80 columns on, the sample has its bars.
    for width in 80..=160 {
        assert!(
            rendered(&sample(), width, NOW_MS).contains("OBSERVED"),
            "width {width}"
        );
    }
}

#[test]
fn shares_round_without_hiding_a_little_or_rounding_to_all() {
    assert_eq!(percent(0, 0), "-");
    assert_eq!(percent(0, 10), "0%");
    assert_eq!(percent(1, 1000), "<1%");
    assert_eq!(percent(5, 1000), "1%");
    assert_eq!(percent(999, 1000), ">99%");
    assert_eq!(percent(10, 10), "100%");
    assert_eq!(percent(1, 3), "33%");
    assert_eq!(percent(2, 3), "67%");
    assert_eq!(percent(u64::MAX, u64::MAX), "100%");
}

#[test]
fn a_bar_shows_any_traffic_and_marks_the_configured_share() {
    assert_eq!(bar(Some((8, 10)), Some((80, 100)), 10), "########|.");
    assert_eq!(bar(Some((2, 10)), Some((20, 100)), 10), "##|.......");
    assert_eq!(bar(Some((1, 1000)), Some((1, 2)), 10), "#....|....");
    assert_eq!(bar(Some((999, 1000)), Some((1, 1)), 10), "#########|");
    assert_eq!(bar(None, Some((0, 1)), 10), "|.........");
    assert_eq!(bar(Some((0, 5)), None, 10), "..........");
}

#[test]
fn latencies_are_short_and_never_0_without_requests() {
    assert_eq!(http::latency(None), "-");
    assert_eq!(http::latency(Some(0.004)), "<0.01ms");
    assert_eq!(http::latency(Some(0.73)), "0.73ms");
    assert_eq!(http::latency(Some(4.94)), "4.9ms");
    assert_eq!(http::latency(Some(250.0)), "250ms");
    assert_eq!(http::latency(Some(1500.0)), "1.5s");
}

/// An older status file, without HTTP routes, still reads.
#[test]
fn a_status_without_http_routes_parses() {
    let mut old = serde_json::to_value(sample()).unwrap();
    old.as_object_mut().unwrap().remove("http_routes");
    let status: Status = serde_json::from_value(old).unwrap();
    assert!(status.http_routes.is_empty());
    let text = serde_json::to_string(&sample()).unwrap();
    assert_eq!(serde_json::from_str::<Status>(&text).unwrap(), sample());
}

#[test]
fn long_names_lose_their_middle() {
    assert_eq!(ellipsize("tcp-echo.local", 20), "tcp-echo.local");
    assert_eq!(ellipsize("tcp-echo-canary.default.svc", 11), "tcp-e…t.svc");
    assert_eq!(ellipsize("abc", 1), "…");
    assert_eq!(ellipsize("abc", 0), "");
}
