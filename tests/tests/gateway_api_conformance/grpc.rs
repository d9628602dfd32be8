//! The suite's GRPCRoute cases: GRPCExactMethodMatching,
//! GRPCRouteHeaderMatching, GRPCRouteListenerHostnameMatching,
//! GRPCRouteWeight, GRPCRouteAllBackendsWeightZero,
//! GRPCRouteRequestHeaderModifier (its rows that agree with its manifest)
//! and GRPCRouteRequestMirror.
//! The backends are `grpc-echo` processes named as the suite's
//! `grpc-infra-backend-vN` Services (each answer names its backend); the
//! calls are unary `Echo`, `EchoTwo`, `EchoThree` over h2c, each row's
//! expected backend or gRPC status the suite's.

use traffic_shift_tests::Scenario;

use super::{BASE, SAME_NAMESPACE, cond, conditions, resource};

/// The listener of GRPCRouteListenerHostnameMatching (the suite's 80).
const HOSTNAMES: &str = "127.0.0.1:8093";

/// Calls per row: every one must be answered as the row says.
const N: usize = 4;

/// The `grpc-infra-backend-vN` Services (port 8080, h2c) and their
/// `grpc-echo` backends' WorkloadEntries.
fn grpc_backends() -> String {
    (1..=3)
        .map(|v| {
            format!(
                "---
apiVersion: v1
kind: Service
metadata: {{name: grpc-infra-backend-v{v}, namespace: gateway-conformance-infra}}
spec:
  ports: [{{name: grpc, port: 8080, appProtocol: kubernetes.io/h2c}}]
  selector: {{app: grpc-infra-backend-v{v}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: grpc-infra-backend-v{v}, namespace: gateway-conformance-infra}}
spec:
  address: 127.0.0.1
  labels: {{app: grpc-infra-backend-v{v}}}
  ports: {{grpc: {port}}}
",
                port = 19510 + v
            )
        })
        .collect::<Vec<String>>()
        .concat()
}

fn start(test: &str, case: &str) -> Scenario {
    let rules = format!("{BASE}{}---\n{case}", grpc_backends());
    Scenario::grpc(
        test,
        &[("conformance.yaml", &rules)],
        &[
            ("grpc-infra-backend-v1", "127.0.0.1:19511"),
            ("grpc-infra-backend-v2", "127.0.0.1:19512"),
            ("grpc-infra-backend-v3", "127.0.0.1:19513"),
        ],
    )
}

/// One row: the call's method, `:authority`, metadata (`name:value`), and
/// the backend that answers (`Ok`) or the gRPC status (`Err`).
type Call = (
    &'static str,
    &'static str,
    &'static [&'static str],
    Result<&'static str, u32>,
);

/// UNIMPLEMENTED: what the suite expects of a call no route takes.
const UNIMPLEMENTED: Result<&str, u32> = Err(12);

fn check(s: &mut Scenario, case: &str, target: &str, rows: &[Call]) {
    for (method, authority, metadata, want) in rows {
        let calls = s.client.grpc(target, authority, method, N, metadata);
        let what = format!("{case}: {method} {authority} {metadata:?}");
        assert!(calls.errors.is_empty(), "{what}: {:?}", calls.errors);
        match want {
            Ok(backend) => assert_eq!(
                (
                    calls.code(0),
                    calls.backend(&format!("grpc-infra-backend-{backend}"))
                ),
                (N as u64, N as u64),
                "{what}: want {backend}: {calls:?}"
            ),
            Err(code) => assert_eq!(
                calls.code(*code),
                N as u64,
                "{what}: want status {code}: {calls:?}"
            ),
        }
    }
}

/// GRPCRoute `name` on the Gateway same-namespace, with `rules`.
fn route(name: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  parentRefs:
  - name: same-namespace
  rules:
{rules}"
    )
}

const SVC: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";

/// GRPCExactMethodMatching and GRPCRouteHeaderMatching, one after the
/// other on one agent (the second replaces the first).
#[test]
fn grpcroute_exact_method_and_header_matching() {
    let exact = route(
        "exact-matching",
        &format!(
            "  - matches: [{{method: {{service: {SVC}, method: Echo}}}}]
    backendRefs: [{{name: grpc-infra-backend-v1, port: 8080}}]
  - matches: [{{method: {{service: {SVC}, method: EchoTwo}}}}]
    backendRefs: [{{name: grpc-infra-backend-v2, port: 8080}}]
"
        ),
    );
    let mut s = start("gwc-grpc-match", &exact);
    let host = "example.com";
    check(
        &mut s,
        "GRPCExactMethodMatching",
        SAME_NAMESPACE,
        &[
            ("Echo", host, &[], Ok("v1")),
            ("EchoTwo", host, &[], Ok("v2")),
            ("EchoThree", host, &[], UNIMPLEMENTED),
        ],
    );
    let status = resource(
        &s,
        "grpcroute",
        "gateway-conformance-infra",
        "exact-matching",
    );
    assert_eq!(
        conditions(&status, 0),
        [
            cond("Accepted", "True", "Accepted"),
            cond("ResolvedRefs", "True", "ResolvedRefs")
        ],
        "{status}"
    );

    let header = |values: &str, version: u8| {
        format!(
            "  - matches:\n{values}    backendRefs: [{{name: grpc-infra-backend-v{version}, port: 8080}}]\n"
        )
    };
    let headers = route(
        "grpc-header-matching",
        &[
            header("    - headers: [{name: version, value: one}]\n", 1),
            header("    - headers: [{name: version, value: two}]\n", 2),
            header(
                "    - headers: [{name: version, value: two}, {name: color, value: orange}]\n",
                1,
            ),
            header(
                "    - headers: [{name: color, value: blue}]\n    - headers: [{name: color, value: green}]\n",
                1,
            ),
            header(
                "    - headers: [{name: color, value: red}]\n    - headers: [{name: color, value: yellow}]\n",
                2,
            ),
        ]
        .concat(),
    );
    let event = s.agent.write_rules(
        "conformance.yaml",
        format!("{BASE}{}---\n{headers}", grpc_backends()),
    );
    assert_eq!(event["result"], "applied", "{event}");
    check(
        &mut s,
        "GRPCRouteHeaderMatching",
        SAME_NAMESPACE,
        &[
            ("Echo", host, &["Version:one"], Ok("v1")),
            ("Echo", host, &["Version:two"], Ok("v2")),
            ("Echo", host, &["Version:two", "Color:orange"], Ok("v1")),
            ("Echo", host, &["Version:two", "Color:blue"], Ok("v2")),
            ("Echo", host, &["Color:orange"], UNIMPLEMENTED),
            ("Echo", host, &["Some-Other-Header:one"], UNIMPLEMENTED),
            ("Echo", host, &["Color:blue"], Ok("v1")),
            ("Echo", host, &["Color:green"], Ok("v1")),
            ("Echo", host, &["Color:red"], Ok("v2")),
            ("Echo", host, &["Color:yellow"], Ok("v2")),
            ("Echo", host, &["Color:purple"], UNIMPLEMENTED),
        ],
    );
}

/// GRPCRouteListenerHostnameMatching: four listeners of one port (8093
/// here), a GRPCRoute on each by `sectionName`; the call's `:authority`
/// picks the listener.
#[test]
fn grpcroute_listener_hostname_matching() {
    let listener = |name: &str, hostname: &str| {
        format!(
            "  - {{name: {name}, port: 8093, protocol: HTTP, hostname: '{hostname}', \
             allowedRoutes: {{namespaces: {{from: Same}}}}}}\n"
        )
    };
    let backend = |name: &str, sections: &[&str], version: u8| {
        let parents = sections
            .iter()
            .map(|section| {
                format!(
                    "  - {{name: grpcroute-listener-hostname-matching, namespace: \
                     gateway-conformance-infra, sectionName: {section}}}\n"
                )
            })
            .collect::<Vec<String>>()
            .concat();
        format!(
            "---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  parentRefs:
{parents}  rules:
  - backendRefs: [{{name: grpc-infra-backend-v{version}, port: 8080}}]
"
        )
    };
    let case = [
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: grpcroute-listener-hostname-matching, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: istio
  listeners:
"
        .to_owned(),
        listener("listener-1", "bar.com"),
        listener("listener-2", "foo.bar.com"),
        listener("listener-3", "*.bar.com"),
        listener("listener-4", "*.foo.com"),
        backend("backend-v1", &["listener-1"], 1),
        backend("backend-v2", &["listener-2"], 2),
        backend("backend-v3", &["listener-3", "listener-4"], 3),
    ]
    .concat();
    let mut s = start("gwc-grpc-hosts", &case);
    check(
        &mut s,
        "GRPCRouteListenerHostnameMatching",
        HOSTNAMES,
        &[
            ("Echo", "bar.com", &[], Ok("v1")),
            ("Echo", "foo.bar.com", &[], Ok("v2")),
            ("Echo", "baz.bar.com", &[], Ok("v3")),
            ("Echo", "boo.bar.com", &[], Ok("v3")),
            ("Echo", "multiple.prefixes.bar.com", &[], Ok("v3")),
            ("Echo", "multiple.prefixes.foo.com", &[], Ok("v3")),
            ("Echo", "foo.com", &[], UNIMPLEMENTED),
            ("Echo", "no.matching.host", &[], UNIMPLEMENTED),
        ],
    );
}

/// GRPCRouteWeight (70/30/0: exactly 700/300/0 of 1000 calls; the suite
/// allows a tolerance, the split here is exact), then
/// GRPCRouteAllBackendsWeightZero (every weight 0: UNAVAILABLE).
#[test]
fn grpcroute_weight_and_all_backends_weight_zero() {
    let weighted = |w: [u32; 3]| {
        route(
            "weighted-backends",
            &format!(
                "  - backendRefs:
    - {{name: grpc-infra-backend-v1, port: 8080, weight: {}}}
    - {{name: grpc-infra-backend-v2, port: 8080, weight: {}}}
    - {{name: grpc-infra-backend-v3, port: 8080, weight: {}}}
",
                w[0], w[1], w[2]
            ),
        )
    };
    let mut s = start("gwc-grpc-weight", &weighted([70, 30, 0]));
    let calls = s
        .client
        .grpc(SAME_NAMESPACE, "example.com", "Echo", 1000, &[]);
    println!("GRPCRouteWeight 70/30/0, 1000 calls: {:?}", calls.backends);
    assert!(calls.errors.is_empty(), "{:?}", calls.errors);
    assert_eq!(
        [1, 2, 3].map(|v| calls.backend(&format!("grpc-infra-backend-v{v}"))),
        [700, 300, 0],
        "GRPCRouteWeight: {calls:?}"
    );

    let event = s.agent.write_rules(
        "conformance.yaml",
        format!("{BASE}{}---\n{}", grpc_backends(), weighted([0, 0, 0])),
    );
    assert_eq!(event["result"], "applied", "{event}");
    check(
        &mut s,
        "GRPCRouteAllBackendsWeightZero",
        SAME_NAMESPACE,
        &[("Echo", "example.com", &[], Err(14))],
    );
}

/// GRPCRouteRequestHeaderModifier: the rows its manifest gives. The
/// suite's manifest routes `Echo` by three rules with the same match, of
/// which the first (set `X-Header-Set`) takes every call; its rows that
/// expect the add and remove rules to apply too are not ported. `EchoTwo`:
/// set, add and remove in one filter.
#[test]
fn grpcroute_request_header_modifier() {
    let rule = |method: &str, modifier: &str, version: u8| {
        format!(
            "  - matches: [{{method: {{service: {SVC}, method: {method}}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {modifier}
    backendRefs: [{{name: grpc-infra-backend-v{version}, port: 8080}}]
"
        )
    };
    let case = route(
        "grpc-request-header-modifier",
        &[
            rule("Echo", "{set: [{name: X-Header-Set, value: set-overwrites-values}]}", 1),
            rule("Echo", "{add: [{name: X-Header-Add, value: add-appends-values}]}", 1),
            rule("Echo", "{remove: [X-Header-Remove]}", 1),
            rule(
                "EchoTwo",
                "{set: [{name: X-Header-Set-1, value: header-set-1}, {name: X-Header-Set-2, value: header-set-2}], \
                 add: [{name: X-Header-Add-1, value: header-add-1}, {name: X-Header-Add-2, value: header-add-2}], \
                 remove: [X-Header-Remove-1, X-Header-Remove-2]}",
                2,
            ),
        ]
        .concat(),
    );
    let mut s = start("gwc-grpc-headers", &case);
    let seen = |s: &mut Scenario, method: &str, metadata: &[&str]| {
        let calls = s.client.grpc(SAME_NAMESPACE, SVC, method, 1, metadata);
        assert_eq!(calls.code(0), 1, "{method} {metadata:?}: {calls:?}");
        calls.last["request_headers"].clone()
    };
    let set = seen(
        &mut s,
        "Echo",
        &[
            "Some-Other-Header:this-header-should-be-set",
            "X-Header-Set:this-value-should-be-overwritten",
        ],
    );
    assert_eq!(
        (&set["x-header-set"], &set["some-other-header"]),
        (
            &serde_json::json!("set-overwrites-values"),
            &serde_json::json!("this-header-should-be-set")
        ),
        "set overwrites: {set}"
    );
    let multiple = seen(
        &mut s,
        "EchoTwo",
        &[
            "X-Header-Set-2:set-header-2",
            "X-Header-Add-2:add-header-2",
            "X-Header-Remove-2:should-be-removed-2",
            "Some-Other-Header:another-header-val",
        ],
    );
    for (name, want) in [
        ("x-header-set-1", Some("header-set-1")),
        ("x-header-set-2", Some("header-set-2")),
        ("x-header-add-1", Some("header-add-1")),
        // Added after the call's own value.
        ("x-header-add-2", Some("add-header-2,header-add-2")),
        ("some-other-header", Some("another-header-val")),
        ("x-header-remove-2", None),
    ] {
        assert_eq!(multiple[name].as_str(), want, "EchoTwo: {name}: {multiple}");
    }
}

/// The calls grpc-infra-backend-v2 (127.0.0.1:19512) answered before,
/// asked directly (`probes`: how many times this was asked before: each
/// asking is a call).
fn answered_by_v2(s: &mut Scenario, probes: u64) -> u64 {
    let calls = s.client.grpc("127.0.0.1:19512", "direct", "Echo", 1, &[]);
    calls.last["calls"].as_u64().expect("calls") - probes
}

/// GRPCRouteRequestMirror (its manifest with the `RequestMirror` filters
/// it has commented out): the client gets grpc-infra-backend-v1's
/// answers, with `EchoTwo`'s header changes, and grpc-infra-backend-v2
/// receives a copy of each call (fire and forget: waited for until a
/// deadline); a call no rule mirrors is not copied.
#[test]
fn grpcroute_request_mirror() {
    let mirrored = |method: &str, modifier: &str| {
        format!(
            "  - matches: [{{method: {{service: {SVC}, method: {method}}}}}]
    filters:
{modifier}    - type: RequestMirror
      requestMirror:
        backendRef: {{name: grpc-infra-backend-v2, namespace: gateway-conformance-infra, port: 8080}}
    backendRefs: [{{name: grpc-infra-backend-v1, port: 8080, namespace: gateway-conformance-infra}}]
"
        )
    };
    let case = route(
        "grpc-request-mirror",
        &[
            mirrored("Echo", ""),
            mirrored(
                "EchoTwo",
                "    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: header-val-1}, {name: X-Header-Add-Append, value: header-val-2}]
        remove: [X-Header-Remove]
",
            ),
            "  - matches: [{method: {service: other.Service}}]\n    backendRefs: [{name: grpc-infra-backend-v3, port: 8080}]\n"
                .to_owned(),
        ]
        .concat(),
    );
    let mut s = start("gwc-grpc-mirror", &case);
    let host = "example.com";
    check(
        &mut s,
        "GRPCRouteRequestMirror",
        SAME_NAMESPACE,
        &[
            ("Echo", host, &[], Ok("v1")),
            ("EchoTwo", host, &["X-Header-Remove:gone"], Ok("v1")),
        ],
    );
    let seen = s.client.grpc(
        SAME_NAMESPACE,
        host,
        "EchoTwo",
        1,
        &["X-Header-Remove:gone"],
    );
    let headers = &seen.last["request_headers"];
    assert_eq!(
        (
            headers["x-header-set"].as_str(),
            headers["x-header-add"].as_str(),
            headers["x-header-remove"].as_str()
        ),
        (Some("set-overwrites-values"), Some("header-val-1"), None),
        "EchoTwo's header changes: {seen:?}"
    );
    // 4 Echo, 4 + 1 EchoTwo: a copy of each.
    let want = 2 * N as u64 + 1;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut probes = 0;
    while answered_by_v2(&mut s, probes) < want && std::time::Instant::now() < deadline {
        probes += 1;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    probes += 1;
    assert_eq!(answered_by_v2(&mut s, probes), want, "a copy of each call");
    probes += 1;
    // Not mirrored: the other rule.
    let other = s
        .client
        .grpc(SAME_NAMESPACE, host, "/other.Service/Echo", N, &[]);
    assert_eq!(
        other.backend("grpc-infra-backend-v3"),
        N as u64,
        "{other:?}"
    );
    assert_eq!(
        answered_by_v2(&mut s, probes),
        want,
        "no copy of another rule's calls"
    );
}

/// GRPCRouteMultipleRoutesAttachmentSameHostnameIntersection: of routes
/// whose hostnames intersect a listener's to one host, the one whose own
/// hostname is the more specific takes it, though it is newer: on the
/// listener for `abc.example.com`, a route for `abc.example.com` over an
/// older one for `*.example.com`; on the listener for `*.example.com`, a
/// route for `*.example.com` over an older one for `*.com`. The suite's
/// two Gateways on port 80 are on 8093 and 8094 here.
#[test]
fn grpcroute_multiple_routes_attachment_same_hostname_intersection() {
    let gateway = |name: &str, port: u16, hostname: &str| {
        format!(
            "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  gatewayClassName: istio
  listeners:
  - {{name: listener, protocol: HTTP, port: {port}, hostname: '{hostname}', allowedRoutes: {{namespaces: {{from: Same}}, kinds: [{{kind: GRPCRoute}}]}}}}
"
        )
    };
    let grpc_route = |name: &str, created: &str, parent: &str, hostname: &str, v: u8| {
        format!(
            "---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: {name}, namespace: gateway-conformance-infra, creationTimestamp: '{created}'}}
spec:
  parentRefs: [{{name: {parent}, namespace: gateway-conformance-infra}}]
  hostnames: ['{hostname}']
  rules:
  - backendRefs: [{{name: grpc-infra-backend-v{v}, port: 8080}}]
"
        )
    };
    let (exact, wildcard) = (
        "gw-grpcroute-exact-hostname-x",
        "gw-grpcroute-wc-hostname-x",
    );
    let older = [
        gateway(exact, 8093, "abc.example.com"),
        gateway(wildcard, 8094, "*.example.com"),
        grpc_route(
            "grpcroute-wc-hostname-x-older",
            "2026-01-01T00:00:00Z",
            exact,
            "*.example.com",
            1,
        ),
        grpc_route(
            "grpcroute-less-specific-wc-hostname-x-older",
            "2026-01-01T00:00:00Z",
            wildcard,
            "*.com",
            1,
        ),
    ]
    .concat();
    let case = "GRPCRouteMultipleRoutesAttachmentSameHostnameIntersection";
    let mut s = start("gwc-grpc-intersection", &older);
    let rows: &[Call] = &[("Echo", "abc.example.com", &[], Ok("v1"))];
    check(&mut s, case, "127.0.0.1:8093", rows);
    check(&mut s, case, "127.0.0.1:8094", rows);

    let newer = [
        grpc_route(
            "grpcroute-exact-hostname-x-newer",
            "2026-01-01T00:00:01Z",
            exact,
            "abc.example.com",
            2,
        ),
        grpc_route(
            "grpcroute-more-specific-wc-hostname-x-newer",
            "2026-01-01T00:00:01Z",
            wildcard,
            "*.example.com",
            2,
        ),
    ]
    .concat();
    let rules = format!("{BASE}{}---\n{older}{newer}", grpc_backends());
    let event = s.agent.write_rules("conformance.yaml", rules);
    assert_eq!(event["result"], "applied", "{event}");
    let rows: &[Call] = &[("Echo", "abc.example.com", &[], Ok("v2"))];
    check(&mut s, case, "127.0.0.1:8093", rows);
    check(&mut s, case, "127.0.0.1:8094", rows);
}
