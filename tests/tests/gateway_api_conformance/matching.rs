//! The suite's matching cases, and those where several HTTPRoutes serve
//! one host (merged in the spec's precedence): HTTPRouteSimpleSameNamespace,
//! HTTPRouteExactPathMatching, HTTPRoutePathMatchOrder, HTTPRouteMatching,
//! HTTPRouteHeaderMatching, HTTPRouteMethodMatching,
//! HTTPRouteQueryParamMatching, HTTPRouteMatchingAcrossRoutes and
//! HTTPRouteHostnameIntersection. Each row is the suite's request (host,
//! path, headers, method) and the backend it expects (`v1` for
//! infra-backend-v1, ...), or its 404.

use std::fmt::Write as _;

use traffic_shift_tests::Scenario;

use super::{SAME_NAMESPACE, base, cond, conditions, count, resource, start};

/// One request row: host, path, the client's extra arguments (`Name:value`
/// headers, `@METHOD`), and the backend that answers (`None`: 404).
pub(super) type Request = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
);

/// Requests per row: every one must be answered as the row says.
const N: u64 = 4;

pub(super) fn check(s: &mut Scenario, case: &str, target: &str, rows: &[Request]) {
    for (host, path, extra, want) in rows {
        let reply = s.client.call(&format!(
            "http {target} {path} {N} 1 keepalive host:{host} {extra}"
        ));
        let what = format!("{case}: {host}{path} {extra}");
        match want {
            Some(backend) => {
                assert_eq!(count(&reply, "status", "200"), N, "{what}: {reply}");
                assert_eq!(
                    count(&reply, "answers", backend),
                    N,
                    "{what}: want {backend}: {reply}"
                );
            }
            None => assert_eq!(
                count(&reply, "status", "404"),
                N,
                "{what}: want 404: {reply}"
            ),
        }
    }
}

/// An HTTPRoute of gateway-conformance-infra on the Gateway
/// same-namespace, `name`, with `rules` (YAML, indented as under
/// `spec`) and `extra` lines of `spec` (`hostnames`).
fn route(name: &str, extra: &str, rules: &str) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  parentRefs:
  - name: same-namespace
{extra}  rules:
{rules}"
    )
}

/// A rule of `matches` (YAML flow) to infra-backend-`version`.
fn rule(matches: &str, version: u8) -> String {
    format!(
        "  - matches: {matches}\n    backendRefs: [{{name: infra-backend-v{version}, port: 8080}}]\n"
    )
}

/// Each case: its name, its manifests, its rows (the suite's).
#[expect(
    clippy::too_many_lines,
    reason = "a table: the manifests and the request rows of eight cases"
)]
fn cases() -> Vec<(&'static str, String, Vec<Request>)> {
    let e = "example.com";
    vec![
        (
            "HTTPRouteSimpleSameNamespace",
            route(
                "gateway-conformance-infra-test",
                "",
                "  - backendRefs: [{name: infra-backend-v1, port: 8080}]\n",
            ),
            vec![(e, "/", "", Some("v1"))],
        ),
        (
            "HTTPRouteExactPathMatching",
            route(
                "exact-matching",
                "",
                &[
                    rule("[{path: {type: Exact, value: /one}}]", 1),
                    rule("[{path: {type: Exact, value: /two}}]", 2),
                ]
                .concat(),
            ),
            vec![
                (e, "/one", "", Some("v1")),
                (e, "/two", "", Some("v2")),
                (e, "/", "", None),
                (e, "/one/example", "", None),
                (e, "/two/", "", None),
                (e, "/Two", "", None),
            ],
        ),
        (
            "HTTPRoutePathMatchOrder",
            route(
                "path-matching-order",
                "",
                &[
                    rule("[{path: {type: Exact, value: /match}}]", 1),
                    rule("[{path: {type: Exact, value: /match/exact}}]", 2),
                    rule("[{path: {type: Exact, value: /match/exact/one}}]", 3),
                    rule("[{path: {type: PathPrefix, value: /match/}}]", 3),
                    rule("[{path: {type: PathPrefix, value: /match/prefix/}}]", 1),
                    rule("[{path: {type: PathPrefix, value: /match/prefix/one}}]", 2),
                ]
                .concat(),
            ),
            vec![
                (e, "/match/exact/one", "", Some("v3")),
                (e, "/match/exact", "", Some("v2")),
                (e, "/match", "", Some("v1")),
                (e, "/match/prefix/one/any", "", Some("v2")),
                (e, "/match/prefix/any", "", Some("v1")),
                (e, "/match/any", "", Some("v3")),
            ],
        ),
        (
            "HTTPRouteMatching",
            route(
                "matching",
                "",
                &[
                    rule(
                        "[{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]",
                        1,
                    ),
                    rule(
                        "[{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]",
                        2,
                    ),
                ]
                .concat(),
            ),
            vec![
                (e, "/", "", Some("v1")),
                (e, "/example", "", Some("v1")),
                (e, "/", "Version:one", Some("v1")),
                (e, "/v2", "", Some("v2")),
                (e, "/v2/example", "", Some("v2")),
                (e, "/", "Version:two", Some("v2")),
                (e, "/v2/", "", Some("v2")),
                (e, "/v2example", "", Some("v1")),
                (e, "/foo/v2/example", "", Some("v1")),
            ],
        ),
        (
            "HTTPRouteHeaderMatching",
            route(
                "header-matching",
                "",
                &[
                    rule("[{headers: [{name: version, value: one}]}]", 1),
                    rule("[{headers: [{name: version, value: two}]}]", 2),
                    rule(
                        "[{headers: [{name: version, value: two}, {name: color, value: orange}]}]",
                        1,
                    ),
                    rule(
                        "[{headers: [{name: color, value: blue}]}, {headers: [{name: color, value: green}]}]",
                        1,
                    ),
                    rule(
                        "[{headers: [{name: color, value: red}]}, {headers: [{name: color, value: yellow}]}]",
                        2,
                    ),
                ]
                .concat(),
            ),
            vec![
                (e, "/", "Version:one", Some("v1")),
                (e, "/", "Version:two", Some("v2")),
                (e, "/", "Version:two Color:orange", Some("v1")),
                (e, "/", "Version:two Color:blue", Some("v2")),
                (e, "/", "Color:orange", None),
                (e, "/", "Some-Other-Header:one", None),
                (e, "/", "Color:blue", Some("v1")),
                (e, "/", "Color:green", Some("v1")),
                (e, "/", "Color:red", Some("v2")),
                (e, "/", "Color:yellow", Some("v2")),
                (e, "/", "Color:purple", None),
            ],
        ),
        (
            "HTTPRouteMethodMatching",
            route(
                "method-matching",
                "",
                &[
                    rule("[{method: POST}]", 1),
                    rule("[{method: GET}]", 2),
                    rule("[{path: {type: PathPrefix, value: /path1}, method: GET}]", 1),
                    rule("[{headers: [{name: version, value: one}], method: PUT}]", 2),
                    rule(
                        "[{path: {type: PathPrefix, value: /path2}, headers: [{name: version, value: two}], method: POST}]",
                        3,
                    ),
                    rule(
                        "[{path: {type: PathPrefix, value: /path3}, method: PATCH}, \
                         {path: {type: PathPrefix, value: /path4}, headers: [{name: version, value: three}], method: DELETE}]",
                        1,
                    ),
                    rule("[{path: {type: PathPrefix, value: /path5}}]", 1),
                    rule("[{method: PATCH}]", 2),
                    rule("[{headers: [{name: version, value: four}]}]", 3),
                ]
                .concat(),
            ),
            vec![
                (e, "/", "@POST", Some("v1")),
                (e, "/", "@GET", Some("v2")),
                (e, "/", "@HEAD", None),
                (e, "/path1", "@GET", Some("v1")),
                (e, "/", "version:one @PUT", Some("v2")),
                (e, "/path2", "version:two @POST", Some("v3")),
                (e, "/path3", "@PATCH", Some("v1")),
                (e, "/path4", "version:three @DELETE", Some("v1")),
                (e, "/", "@PUT", None),
                (e, "/path4", "@DELETE", None),
                (e, "/path5", "@PATCH", Some("v1")),
                (e, "/", "version:four @PATCH", Some("v2")),
            ],
        ),
        (
            "HTTPRouteQueryParamMatching",
            route(
                "query-param-matching",
                "",
                &[
                    rule("[{queryParams: [{name: animal, value: whale}]}]", 1),
                    rule("[{queryParams: [{name: animal, value: dolphin}]}]", 2),
                    rule(
                        "[{queryParams: [{name: animal, value: dolphin}, {name: color, value: blue}]}, \
                         {queryParams: [{name: ANIMAL, value: Whale}]}]",
                        3,
                    ),
                    rule(
                        "[{path: {type: PathPrefix, value: /path1}, queryParams: [{name: animal, value: whale}]}]",
                        1,
                    ),
                    rule(
                        "[{headers: [{name: version, value: one}], queryParams: [{name: animal, value: whale}]}]",
                        2,
                    ),
                    rule(
                        "[{path: {type: PathPrefix, value: /path2}, headers: [{name: version, value: two}], \
                         queryParams: [{name: animal, value: whale}]}]",
                        3,
                    ),
                    rule(
                        "[{path: {type: PathPrefix, value: /path3}, queryParams: [{name: animal, value: shark}]}, \
                         {path: {type: PathPrefix, value: /path4}, headers: [{name: version, value: three}], \
                         queryParams: [{name: animal, value: kraken}]}]",
                        1,
                    ),
                    rule("[{path: {type: PathPrefix, value: /path5}}]", 1),
                    rule("[{queryParams: [{name: animal, value: hydra}]}]", 2),
                    rule("[{headers: [{name: version, value: four}]}]", 3),
                ]
                .concat(),
            ),
            vec![
                (e, "/?animal=whale", "", Some("v1")),
                (e, "/?animal=dolphin", "", Some("v2")),
                (e, "/?animal=dolphin&color=blue", "", Some("v3")),
                (e, "/?ANIMAL=Whale", "", Some("v3")),
                (e, "/?animal=whale&otherparam=irrelevant", "", Some("v1")),
                (e, "/?animal=dolphin&color=yellow", "", Some("v2")),
                (e, "/?color=blue", "", None),
                (e, "/?animal=dog", "", None),
                (e, "/?animal=whaledolphin", "", None),
                (e, "/", "", None),
                (e, "/path1?animal=whale", "", Some("v1")),
                (e, "/?animal=whale", "version:one", Some("v2")),
                (e, "/path2?animal=whale", "version:two", Some("v3")),
                (e, "/path3?animal=shark", "", Some("v1")),
                (e, "/path4?animal=kraken", "version:three", Some("v1")),
                (e, "/?animal=shark", "", None),
                (e, "/path4?animal=kraken", "", None),
                (e, "/path5?animal=hydra", "", Some("v1")),
                (e, "/?animal=hydra", "version:four", Some("v3")),
            ],
        ),
        (
            "HTTPRouteMatchingAcrossRoutes",
            [
                route(
                    "matching-part1",
                    "  hostnames: [example.com, example.net]\n",
                    &rule(
                        "[{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]",
                        1,
                    ),
                ),
                route(
                    "matching-part2",
                    "  hostnames: [example.com]\n",
                    &rule(
                        "[{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]",
                        2,
                    ),
                ),
            ]
            .concat(),
            vec![
                (e, "/", "", Some("v1")),
                (e, "/example", "", Some("v1")),
                ("example.net", "/example", "", Some("v1")),
                (e, "/example", "Version:one", Some("v1")),
                (e, "/v2", "", Some("v2")),
                ("example.net", "/v2", "", Some("v1")),
                (e, "/v2/example", "", Some("v2")),
                (e, "/", "Version:two", Some("v2")),
            ],
        ),
    ]
}

/// The matching cases, one after the other on one agent: each replaces
/// the routes of the one before; every row, `N` requests each.
#[test]
fn httproute_matching_cases() {
    let cases = cases();
    let (first, manifest, rows) = &cases[0];
    let mut s = start("gwc-matching", manifest.trim_start_matches("---\n"));
    check(&mut s, first, SAME_NAMESPACE, rows);
    for (case, manifest, rows) in &cases[1..] {
        let event = s
            .agent
            .write_rules("conformance.yaml", format!("{}{manifest}", base()));
        assert_eq!(event["result"], "applied", "{case}: {event}");
        check(&mut s, case, SAME_NAMESPACE, rows);
    }
    // Both routes of HTTPRouteMatchingAcrossRoutes are accepted, their
    // backends resolved.
    for name in ["matching-part1", "matching-part2"] {
        let route = resource(&s, "httproute", "gateway-conformance-infra", name);
        assert_eq!(
            conditions(&route, 0),
            [
                cond("Accepted", "True", "Accepted"),
                cond("ResolvedRefs", "True", "ResolvedRefs")
            ],
            "{name}"
        );
    }
}

/// HTTPRouteHostnameIntersection: routes serve the intersection of their
/// hostnames with the listeners' (three listeners of one port, 8092 here);
/// two routes serve very.specific.com (merged); a route with no hostname
/// in common is not accepted (NoMatchingListenerHostname) and not counted
/// in `attachedRoutes`. The Gateway without hostnames is on 8093.
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "the case's manifests, status and request rows, as the suite has them"
)]
fn httproute_hostname_intersection() {
    const G: &str = "127.0.0.1:8092";
    const ALL: &str = "127.0.0.1:8093";
    let listener = |name: &str, hostname: &str| {
        format!(
            "  - name: {name}\n    port: 8092\n    protocol: HTTP\n    hostname: \"{hostname}\"\n    \
             allowedRoutes: {{namespaces: {{from: Same}}}}\n"
        )
    };
    let gateways = format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: httproute-hostname-intersection, namespace: gateway-conformance-infra}}
spec:
  gatewayClassName: istio
  listeners:
{}{}{}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: httproute-hostname-intersection-all, namespace: gateway-conformance-infra}}
spec:
  gatewayClassName: istio
  listeners:
  - {{name: listener-1, port: 8093, protocol: HTTP, allowedRoutes: {{namespaces: {{from: Same}}}}}}
",
        listener("listener-1", "very.specific.com"),
        listener("listener-2", "*.wildcard.io"),
        listener("listener-3", "*.anotherwildcard.io"),
    );
    let route = |name: &str, gateway: &str, hostnames: &str, prefix: &str, version: u8| {
        format!(
            "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  parentRefs: [{{name: {gateway}, namespace: gateway-conformance-infra}}]
  hostnames: [{hostnames}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
    backendRefs: [{{name: infra-backend-v{version}, port: 8080}}]
"
        )
    };
    let g = "httproute-hostname-intersection";
    let case = [
        gateways,
        route(
            "specific-host-matches-listener-specific-host",
            g,
            "non.matching.com, \"*.nonmatchingwildcard.io\", very.specific.com",
            "/s1",
            1,
        ),
        route(
            "specific-host-matches-listener-wildcard-host",
            g,
            "non.matching.com, wildcard.io, foo.wildcard.io, bar.wildcard.io, foo.bar.wildcard.io",
            "/s2",
            2,
        ),
        route(
            "wildcard-host-matches-listener-specific-host",
            g,
            "non.matching.com, \"*.specific.com\"",
            "/s3",
            3,
        ),
        route(
            "wildcard-host-matches-listener-wildcard-host",
            g,
            "\"*.anotherwildcard.io\"",
            "/s4",
            1,
        ),
        route(
            "no-intersecting-hosts",
            g,
            "specific.but.wrong.com, wildcard.io",
            "/s5",
            2,
        ),
        route(
            "httproute-hostname-intersection-all",
            "httproute-hostname-intersection-all",
            "first.com, sub.first.com, second.com, sub.second.com",
            "/",
            2,
        ),
    ]
    .concat();
    let mut s = start("gwc-hostnames", &case);
    let ns = "gateway-conformance-infra";
    for name in [
        "specific-host-matches-listener-specific-host",
        "specific-host-matches-listener-wildcard-host",
        "wildcard-host-matches-listener-specific-host",
        "wildcard-host-matches-listener-wildcard-host",
        "httproute-hostname-intersection-all",
    ] {
        let status = resource(&s, "httproute", ns, name);
        assert_eq!(
            conditions(&status, 0),
            [
                cond("Accepted", "True", "Accepted"),
                cond("ResolvedRefs", "True", "ResolvedRefs")
            ],
            "{name}"
        );
    }
    let status = resource(&s, "httproute", ns, "no-intersecting-hosts");
    assert_eq!(
        conditions(&status, 0)[0],
        cond("Accepted", "False", "NoMatchingListenerHostname")
    );
    let gateway = resource(&s, "gtw", ns, g);
    let attached: Vec<(String, u64)> = gateway["status"]["listeners"]
        .as_array()
        .unwrap_or_else(|| panic!("no listeners: {gateway}"))
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap_or_default().to_owned(),
                l["attachedRoutes"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    assert_eq!(
        attached,
        [
            ("listener-1".to_owned(), 2),
            ("listener-2".to_owned(), 1),
            ("listener-3".to_owned(), 1)
        ],
        "{gateway}"
    );
    let specific = "very.specific.com";
    let rows: &[Request] = &[
        // specific-host-matches-listener-specific-host
        (specific, "/s1", "", Some("v1")),
        ("very.specific.com:1234", "/s1", "", Some("v1")),
        ("non.matching.com", "/s1", "", None),
        ("foo.nonmatchingwildcard.io", "/s1", "", None),
        ("foo.wildcard.io", "/s1", "", None),
        (specific, "/non-matching-prefix", "", None),
        // specific-host-matches-listener-wildcard-host
        ("foo.wildcard.io", "/s2", "", Some("v2")),
        ("bar.wildcard.io", "/s2", "", Some("v2")),
        ("foo.bar.wildcard.io", "/s2", "", Some("v2")),
        ("non.matching.com", "/s2", "", None),
        ("wildcard.io", "/s2", "", None),
        (specific, "/s2", "", None),
        ("foo.wildcard.io", "/non-matching-prefix", "", None),
        // wildcard-host-matches-listener-specific-host
        (specific, "/s3", "", Some("v3")),
        ("non.matching.com", "/s3", "", None),
        ("foo.specific.com", "/s3", "", None),
        ("foo.wildcard.io", "/s3", "", None),
        (specific, "/non-matching-prefix", "", None),
        // wildcard-host-matches-listener-wildcard-host
        ("foo.anotherwildcard.io", "/s4", "", Some("v1")),
        ("bar.anotherwildcard.io", "/s4", "", Some("v1")),
        ("foo.bar.anotherwildcard.io", "/s4", "", Some("v1")),
        ("anotherwildcard.io", "/s4", "", None),
        ("foo.wildcard.io", "/s4", "", None),
        (specific, "/s4", "", None),
        ("foo.anotherwildcard.io", "/non-matching-prefix", "", None),
        // no-intersecting-hosts
        ("specific.but.wrong.com", "/s5", "", None),
        ("wildcard.io", "/s5", "", None),
    ];
    check(&mut s, "HTTPRouteHostnameIntersection", G, rows);
    check(
        &mut s,
        "HTTPRouteHostnameIntersection (a listener without hostname)",
        ALL,
        &[
            ("first.com", "/", "", Some("v2")),
            ("sub.first.com", "/", "", Some("v2")),
            ("second.com", "/", "", Some("v2")),
            ("sub.second.com", "/", "", Some("v2")),
            ("third.com", "/", "", None),
            ("sub.third.com", "/", "", None),
        ],
    );
}

/// GatewayHTTPListenerIsolation: four listeners of one port (8094 here),
/// without hostname, `*.example.com`, `*.foo.example.com` and
/// `abc.foo.example.com`; a request is served only by the routes of the
/// most specific listener its host matches. First with hostnames on the
/// listeners only, then with routes whose hostnames name the other
/// listeners' too (their intersections, less what a more specific
/// listener takes).
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "the case's manifests, its two parts and ours, as the suite has them"
)]
fn gateway_http_listener_isolation() {
    const L: &str = "127.0.0.1:8094";
    let gateway_yaml = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: http-listener-isolation, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: istio
  listeners:
  - {name: empty-hostname, port: 8094, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: wildcard-example-com, port: 8094, protocol: HTTP, hostname: \"*.example.com\", allowedRoutes: {namespaces: {from: All}}}
  - {name: wildcard-foo-example-com, port: 8094, protocol: HTTP, hostname: \"*.foo.example.com\", allowedRoutes: {namespaces: {from: All}}}
  - {name: abc-foo-example-com, port: 8094, protocol: HTTP, hostname: abc.foo.example.com, allowedRoutes: {namespaces: {from: All}}}
";
    let listeners = [
        "empty-hostname",
        "wildcard-example-com",
        "wildcard-foo-example-com",
        "abc-foo-example-com",
    ];
    let routes = |hostnames: &str| {
        let mut out = String::new();
        for listener in listeners {
            let _ = write!(
                out,
                "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: attaches-to-{listener}, namespace: gateway-conformance-infra}}
spec:
  parentRefs:
  - {{name: http-listener-isolation, namespace: gateway-conformance-infra, sectionName: {listener}}}
{hostnames}  rules:
  - matches: [{{path: {{type: PathPrefix, value: /{listener}}}}}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
"
            );
        }
        out
    };
    // Per host, the one path (of the listener it is isolated to) that
    // answers; the other three answer 404.
    let expected = [
        ("bar.com", "empty-hostname"),
        ("bar.example.com", "wildcard-example-com"),
        ("bar.foo.example.com", "wildcard-foo-example-com"),
        ("abc.foo.example.com", "abc-foo-example-com"),
    ];
    let rows: Vec<Request> = expected
        .iter()
        .flat_map(|(host, served)| {
            listeners.iter().map(move |listener| {
                (
                    *host,
                    rows_path(listener),
                    "",
                    (listener == served).then_some("v1"),
                )
            })
        })
        .collect();
    let mut s = start("gwc-isolation", &format!("{gateway_yaml}{}", routes("")));
    check(
        &mut s,
        "GatewayHTTPListenerIsolation (hostnames on the listeners only)",
        L,
        &rows,
    );
    let hostnames =
        "  hostnames: [bar.com, \"*.example.com\", \"*.foo.example.com\", abc.foo.example.com]\n";
    let event = s.agent.write_rules(
        "conformance.yaml",
        format!("{}---\n{gateway_yaml}{}", base(), routes(hostnames)),
    );
    assert_eq!(event["result"], "applied", "{event}");
    check(
        &mut s,
        "GatewayHTTPListenerIsolation (intersecting hostnames on the routes)",
        L,
        &rows,
    );
    let gateway = resource(
        &s,
        "gtw",
        "gateway-conformance-infra",
        "http-listener-isolation",
    );
    for (i, listener) in listeners.iter().enumerate() {
        assert_eq!(
            gateway["status"]["listeners"][i]["attachedRoutes"], 1,
            "{listener}: {gateway}"
        );
    }
    // Not the suite's: without a route, the listener abc-foo-example-com
    // still isolates its host: 404, not the routes of *.foo.example.com.
    let without_abc: String = routes(hostnames)
        .split_inclusive("---\n")
        .filter(|doc| !doc.contains("name: attaches-to-abc-foo-example-com,"))
        .collect();
    let event = s.agent.write_rules(
        "conformance.yaml",
        format!("{}---\n{gateway_yaml}{without_abc}", base()),
    );
    assert_eq!(event["result"], "applied", "{event}");
    let abc: Vec<Request> = listeners
        .iter()
        .map(|listener| ("abc.foo.example.com", rows_path(listener), "", None))
        .collect();
    check(
        &mut s,
        "a listener without a route isolates its host",
        L,
        &abc,
    );
}

/// The path a route of GatewayHTTPListenerIsolation serves: `/<listener>`.
fn rows_path(listener: &str) -> &'static str {
    match listener {
        "empty-hostname" => "/empty-hostname",
        "wildcard-example-com" => "/wildcard-example-com",
        "wildcard-foo-example-com" => "/wildcard-foo-example-com",
        _ => "/abc-foo-example-com",
    }
}
