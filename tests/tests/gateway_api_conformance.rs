//! End-to-end: cases of the Gateway API conformance suite
//! (kubernetes-sigs/gateway-api `conformance/tests/`), ported as tables
//! against the running agent. Each case names its conformance test. Its
//! manifests are translated to one node: the namespaces are strings
//! (with `Namespace` documents for their labels), the `infra-backend-vN`,
//! `web-backend` and `app-backend-vN` Services select WorkloadEntries on
//! the `http-echo` backends of Bookinfo's reviews (which answer `v1`,
//! `v2`, `v3`), and the Gateway `same-namespace` listens on port 8090
//! (the suite's 80), `all-namespaces` on 8091. The expected backends and
//! codes are the suite's; counts are exact where the split is.

#[path = "gateway_api_conformance/backend_filters.rs"]
mod backend_filters;
#[path = "gateway_api_conformance/backends.rs"]
mod backends;
#[path = "gateway_api_conformance/cors.rs"]
mod cors;
#[path = "gateway_api_conformance/filters.rs"]
mod filters;
#[path = "gateway_api_conformance/grants.rs"]
mod grants;
#[path = "gateway_api_conformance/grpc.rs"]
mod grpc;
#[path = "gateway_api_conformance/matching.rs"]
mod matching;
#[path = "gateway_api_conformance/ports.rs"]
mod ports;
#[path = "gateway_api_conformance/redirects.rs"]
mod redirects;
#[path = "gateway_api_conformance/retry.rs"]
mod retry;

use std::time::Duration;

use serde_json::Value;
use traffic_shift_tests::Scenario;

const SAME_NAMESPACE: &str = "127.0.0.1:8090";
const ALL_NAMESPACES: &str = "127.0.0.1:8091";
/// The Gateway of HTTPRouteListenerHostnameMatching.
const G: &str = "127.0.0.1:8092";

/// The suite's base manifests (`conformance/base/manifests.yaml`), as
/// far as these cases use them.
const BASE: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: gateway-conformance-infra
  labels: {gateway-conformance: infra}
---
apiVersion: v1
kind: Namespace
metadata:
  name: gateway-conformance-web-backend
  labels: {gateway-conformance: web-backend}
---
apiVersion: v1
kind: Namespace
metadata:
  name: gateway-conformance-app-backend
  labels: {gateway-conformance: app-backend}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: istio}
spec: {controllerName: istio.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-namespace, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: 8090
    protocol: HTTP
    allowedRoutes:
      namespaces: {from: Same}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: all-namespaces, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: 8091
    protocol: HTTP
    allowedRoutes:
      namespaces: {from: All}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: other-class, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: not-ours
  listeners:
  - {name: http, port: 8090, protocol: HTTP}
";

/// A Service of `namespace` named `name` selecting the WorkloadEntry on
/// reviews `version`, with the suite's ports: 8080 (`http`), 8081
/// (`appProtocol: kubernetes.io/h2c`) and 8082 (`kubernetes.io/ws`), all
/// served by the one `http-echo` (HTTP/1.1, h2c and upgrades).
fn backend(namespace: &str, name: &str, version: u16) -> String {
    format!(
        "---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ports:
  - {{name: http, port: 8080, appProtocol: http}}
  - {{name: h2c, port: 8081, appProtocol: kubernetes.io/h2c}}
  - {{name: ws, port: 8082, appProtocol: kubernetes.io/ws}}
  selector: {{app: {name}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  address: 127.0.0.1
  labels: {{app: {name}}}
  ports: {{http: {port}, h2c: {port}, ws: {port}}}
",
        port = 19080 + version
    )
}

fn base() -> String {
    let infra = "gateway-conformance-infra";
    [
        BASE.to_owned(),
        backend(infra, "infra-backend-v1", 1),
        backend(infra, "infra-backend-v2", 2),
        backend(infra, "infra-backend-v3", 3),
        backend("gateway-conformance-web-backend", "web-backend", 2),
        backend("gateway-conformance-app-backend", "app-backend-v1", 1),
        backend("gateway-conformance-app-backend", "app-backend-v2", 3),
    ]
    .concat()
}

fn start(test: &str, case: &str) -> Scenario {
    start_with(test, case, &[])
}

fn start_with(test: &str, case: &str, agent_args: &[&str]) -> Scenario {
    Scenario::bookinfo(
        test,
        &[("conformance.yaml", &format!("{}---\n{case}", base()))],
        agent_args,
    )
}

/// `n` requests to `target` for `host` and `path`.
fn get(s: &mut Scenario, target: &str, host: &str, path: &str, n: usize) -> Value {
    s.client
        .call(&format!("http {target} {path} {n} 1 keepalive host:{host}"))
}

fn count(reply: &Value, field: &str, key: &str) -> u64 {
    reply[field][key].as_u64().unwrap_or(0)
}

/// `traffic-shift get KIND NAME -n NAMESPACE -o json`.
fn resource(s: &Scenario, kind: &str, namespace: &str, name: &str) -> Value {
    s.agent.get_json(kind, namespace, name)
}

/// `(type, status, reason)` of the conditions of a route's parent `i`.
fn conditions(route: &Value, i: usize) -> Vec<(String, String, String)> {
    let parent = &route["status"]["parents"][i];
    assert_eq!(
        parent["controllerName"], "istio.io/gateway-controller",
        "{route}"
    );
    parent["conditions"]
        .as_array()
        .unwrap_or_else(|| panic!("no conditions: {route}"))
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or_default().to_owned(),
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn cond(kind: &str, status: &str, reason: &str) -> (String, String, String) {
    (kind.to_owned(), status.to_owned(), reason.to_owned())
}

/// HTTPRoute `name` of gateway-conformance-infra is accepted by its first
/// parent, its references resolved.
fn accepted_and_resolved(s: &Scenario, name: &str) {
    let route = resource(s, "httproute", "gateway-conformance-infra", name);
    assert_eq!(
        conditions(&route, 0),
        [
            cond("Accepted", "True", "Accepted"),
            cond("ResolvedRefs", "True", "ResolvedRefs")
        ],
        "{name}"
    );
}

/// One request table row: to `target`, `host` and `path`, `n` requests,
/// expecting `status` from the backend answering `answer` (none for a
/// local reply).
struct Row {
    target: &'static str,
    host: &'static str,
    path: &'static str,
    status: u16,
    answer: Option<&'static str>,
}

const fn row(
    target: &'static str,
    host: &'static str,
    path: &'static str,
    status: u16,
    answer: Option<&'static str>,
) -> Row {
    Row {
        target,
        host,
        path,
        status,
        answer,
    }
}

fn check_rows(s: &mut Scenario, case: &str, rows: &[Row]) {
    for r in rows {
        let reply = get(s, r.target, r.host, r.path, 10);
        assert_eq!(
            count(&reply, "status", &r.status.to_string()),
            10,
            "{case}: {} {}{}: want {} from {:?}: {reply}",
            r.target,
            r.host,
            r.path,
            r.status,
            r.answer
        );
        if let Some(answer) = r.answer {
            assert_eq!(count(&reply, "answers", answer), 10, "{case}: {reply}");
        }
    }
}

/// HTTPRouteWeight: 70/30/0 over infra-backend-v1/v2/v3, exactly (the
/// suite allows a tolerance; the split here is smooth).
#[test]
fn httproute_weight() {
    let mut s = start(
        "gwc-weight",
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: weighted-backends, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - backendRefs:
    - {name: infra-backend-v1, port: 8080, weight: 70}
    - {name: infra-backend-v2, port: 8080, weight: 30}
    - {name: infra-backend-v3, port: 8080, weight: 0}
",
    );
    let reply = get(&mut s, SAME_NAMESPACE, "example.com", "/", 1000);
    println!("HTTPRouteWeight, 1000 requests: {}", reply["answers"]);
    assert_eq!(
        ["v1", "v2", "v3"].map(|v| count(&reply, "answers", v)),
        [700, 300, 0],
        "{reply}"
    );
    let route = resource(
        &s,
        "httproute",
        "gateway-conformance-infra",
        "weighted-backends",
    );
    assert_eq!(
        conditions(&route, 0),
        [
            cond("Accepted", "True", "Accepted"),
            cond("ResolvedRefs", "True", "ResolvedRefs")
        ]
    );
    // -o yaml: the document as applied, then its status.
    let out = s.agent.ctl(&[
        "get",
        "httproute",
        "weighted-backends",
        "-n",
        "gateway-conformance-infra",
        "-o",
        "yaml",
    ]);
    let yaml = String::from_utf8_lossy(&out.stdout);
    println!("{yaml}");
    // Each condition's lastTransitionTime (the time it took its status)
    // is left out of the comparison: its line first, the next one takes
    // its place in the list.
    let yaml = yaml
        .lines()
        .scan(None::<String>, |marker, line| {
            if let Some(at) = line.find("lastTransitionTime: ") {
                *marker = Some(line[..at].to_owned());
                return Some(None);
            }
            Some(Some(match marker.take() {
                Some(prefix) => format!("{prefix}{}", line.trim_start()),
                None => line.to_owned(),
            }))
        })
        .flatten()
        .map(|line| line + "\n")
        .collect::<String>();
    assert!(
        yaml.contains(
            "status:\n  parents:\n  - conditions:\n    - message: attached to Gateway gateway-conformance-infra/same-namespace listener http (HTTP 8090)\n      observedGeneration: 1\n      reason: Accepted\n      status: 'True'\n      type: Accepted\n"
        ) && yaml.contains("    controllerName: istio.io/gateway-controller\n    parentRef:\n      group: gateway.networking.k8s.io\n      kind: Gateway\n      name: same-namespace\n      namespace: gateway-conformance-infra\n"),
        "{yaml}"
    );
}

/// HTTPRouteCrossNamespace, HTTPRouteReferenceGrant and
/// HTTPRouteInvalidCrossNamespaceBackendRef: a backend of another
/// namespace is used only with a ReferenceGrant there; without one its
/// share answers 500 and ResolvedRefs is RefNotPermitted.
#[test]
fn httproute_cross_namespace_and_reference_grants() {
    // HTTPRouteCrossNamespace: a route of web-backend on the Gateway that
    // takes routes of every namespace, to its own namespace's Service.
    let cross = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cross-namespace, namespace: gateway-conformance-web-backend}
spec:
  parentRefs:
  - {name: all-namespaces, namespace: gateway-conformance-infra}
  rules:
  - backendRefs:
    - {name: web-backend, port: 8080}
";
    let mut s = start("gwc-refgrant", cross);
    check_rows(
        &mut s,
        "HTTPRouteCrossNamespace",
        &[row(ALL_NAMESPACES, "example.com", "/", 200, Some("v2"))],
    );
    let route = resource(
        &s,
        "httproute",
        "gateway-conformance-web-backend",
        "cross-namespace",
    );
    assert_eq!(
        conditions(&route, 0)[0],
        cond("Accepted", "True", "Accepted")
    );

    // HTTPRouteInvalidCrossNamespaceBackendRef: no ReferenceGrant.
    let invalid = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: invalid-cross-namespace-backend-ref, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - backendRefs:
    - {name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}
";
    let event = s
        .agent
        .write_rules("conformance.yaml", format!("{}---\n{invalid}", base()));
    assert_eq!(event["result"], "applied", "{event}");
    check_rows(
        &mut s,
        "HTTPRouteInvalidCrossNamespaceBackendRef",
        &[row(SAME_NAMESPACE, "example.com", "/", 500, None)],
    );
    let route = resource(
        &s,
        "httproute",
        "gateway-conformance-infra",
        "invalid-cross-namespace-backend-ref",
    );
    assert_eq!(
        conditions(&route, 0),
        [
            cond("Accepted", "True", "Accepted"),
            cond("ResolvedRefs", "False", "RefNotPermitted")
        ]
    );

    // Each condition has the time it took its status (metav1.Condition's
    // lastTransitionTime, to the second). The grant turns ResolvedRefs
    // True and moves its time; Accepted's stays: wait for the clock to pass
    // Accepted's second, so that a time reset by any change would show.
    let before = transition_times(&route);
    while now_ms() / 1000 <= before[0] / 1000 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let grant_applied_at = now_ms() / 1000 * 1000;

    // HTTPRouteReferenceGrant: the same route with the grant.
    let grant = "---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: reference-grant, namespace: gateway-conformance-web-backend}
spec:
  from:
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: gateway-conformance-infra}
  to:
  - {group: \"\", kind: Service, name: web-backend}
";
    let event = s.agent.write_rules(
        "conformance.yaml",
        format!("{}---\n{invalid}{grant}", base()),
    );
    assert_eq!(event["result"], "applied", "{event}");
    check_rows(
        &mut s,
        "HTTPRouteReferenceGrant",
        &[row(SAME_NAMESPACE, "example.com", "/", 200, Some("v2"))],
    );
    let route = resource(
        &s,
        "httproute",
        "gateway-conformance-infra",
        "invalid-cross-namespace-backend-ref",
    );
    assert_eq!(
        conditions(&route, 0)[1],
        cond("ResolvedRefs", "True", "ResolvedRefs")
    );
    let after = transition_times(&route);
    assert_eq!(after[0], before[0], "Accepted did not change: {route}");
    assert!(
        after[1] >= grant_applied_at,
        "ResolvedRefs turned True when the grant came: {route}"
    );
}

/// The `lastTransitionTime` of each condition of the first parent, in Unix
/// milliseconds.
fn transition_times(route: &Value) -> Vec<u64> {
    route["status"]["parents"][0]["conditions"]
        .as_array()
        .unwrap_or_else(|| panic!("no conditions: {route}"))
        .iter()
        .map(|c| {
            c["lastTransitionTime"]
                .as_str()
                .and_then(traffic_shift_config::parse_timestamp)
                .unwrap_or_else(|| panic!("no lastTransitionTime in {c}"))
        })
        .collect()
}

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    u64::try_from(since.expect("after 1970").as_millis()).expect("fits")
}

/// HTTPRoutePartiallyInvalidViaInvalidReferenceGrant: the grant names
/// app-backend-v1 only; /v2 goes to app-backend-v2 (500, RefNotPermitted),
/// the rest to app-backend-v1.
#[test]
fn httproute_partially_invalid_via_invalid_reference_grant() {
    let partial = "apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: invalid-reference-grant, namespace: gateway-conformance-app-backend}
spec:
  from:
  - {group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: gateway-conformance-infra}
  to:
  - {group: \"\", kind: Service, name: app-backend-v1}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: invalid-reference-grant, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches:
    - path: {type: PathPrefix, value: /v2}
    backendRefs:
    - {name: app-backend-v2, namespace: gateway-conformance-app-backend, port: 8080}
  - backendRefs:
    - {name: app-backend-v1, namespace: gateway-conformance-app-backend, port: 8080}
";
    let mut s = start("gwc-partial", partial);
    check_rows(
        &mut s,
        "HTTPRoutePartiallyInvalidViaInvalidReferenceGrant",
        &[
            row(SAME_NAMESPACE, "example.com", "/", 200, Some("v1")),
            row(SAME_NAMESPACE, "example.com", "/v2", 500, None),
        ],
    );
    let route = resource(
        &s,
        "httproute",
        "gateway-conformance-infra",
        "invalid-reference-grant",
    );
    assert_eq!(
        conditions(&route, 0),
        [
            cond("Accepted", "True", "Accepted"),
            cond("ResolvedRefs", "False", "RefNotPermitted")
        ]
    );
}

/// HTTPRouteInvalidNonExistentBackendRef and
/// HTTPRouteInvalidBackendRefUnknownKind: 500, ResolvedRefs
/// BackendNotFound / InvalidKind; and a weighted share of a backend that
/// does not exist answers 500 for exactly its share.
#[test]
fn httproute_invalid_backend_refs() {
    let route = |name: &str, backend: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - backendRefs:
    - {backend}
"
        )
    };
    let mut s = start(
        "gwc-invalid",
        &route("valid", "{name: infra-backend-v1, port: 8080}"),
    );
    check_rows(
        &mut s,
        "before",
        &[row(SAME_NAMESPACE, "example.com", "/", 200, Some("v1"))],
    );
    let cases = [
        (
            "HTTPRouteInvalidNonExistentBackendRef",
            "nonexistent-backend-ref",
            "{name: nonexistent, port: 8080}",
            "BackendNotFound",
        ),
        (
            "HTTPRouteInvalidBackendRefUnknownKind",
            "invalid-backend-ref-unknown-kind",
            "{group: unknownkind.example.com, kind: NonExistent, name: infra-backend-v1, port: 8080}",
            "InvalidKind",
        ),
    ];
    for (case, name, backend, reason) in cases {
        let event = s.agent.write_rules(
            "conformance.yaml",
            format!("{}---\n{}", base(), route(name, backend)),
        );
        assert_eq!(event["result"], "applied", "{case}: {event}");
        check_rows(
            &mut s,
            case,
            &[row(SAME_NAMESPACE, "example.com", "/", 500, None)],
        );
        let status = resource(&s, "httproute", "gateway-conformance-infra", name);
        assert_eq!(
            conditions(&status, 0),
            [
                cond("Accepted", "True", "Accepted"),
                cond("ResolvedRefs", "False", reason)
            ],
            "{case}"
        );
    }
    // Not a suite case: the spec's "500 for its share", exact.
    let event = s.agent.write_rules(
        "conformance.yaml",
        format!(
            "{}---\n{}",
            base(),
            route(
                "partly",
                "{name: infra-backend-v1, port: 8080, weight: 3}\n    - {name: nonexistent, port: 8080, weight: 1}"
            )
        ),
    );
    assert_eq!(event["result"], "applied", "{event}");
    let reply = get(&mut s, SAME_NAMESPACE, "example.com", "/", 1000);
    println!("3:1 with a backend that does not exist, 1000 requests: {reply}");
    assert_eq!(
        (
            count(&reply, "status", "200"),
            count(&reply, "status", "500")
        ),
        (750, 250),
        "{reply}"
    );
}

/// HTTPRouteInvalidCrossNamespaceParentRef: a route of web-backend on the
/// Gateway that takes routes of its own namespace only is not attached
/// (Accepted False NotAllowedByListeners, 0 routes on the Gateway); the
/// listener that takes routes of every namespace counts the two attached; a Gateway of another class is
/// ignored (its port is not served by it).
#[test]
fn httproute_parent_refs_and_attached_routes() {
    let mut s = start(
        "gwc-parents",
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: invalid-cross-namespace-parent-ref, namespace: gateway-conformance-web-backend}
spec:
  parentRefs:
  - {name: same-namespace, namespace: gateway-conformance-infra}
  rules:
  - backendRefs:
    - {name: web-backend, port: 8080}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attached-1, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: all-namespaces
  hostnames: [one.example.com]
  rules:
  - backendRefs:
    - {name: infra-backend-v1, port: 8080}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: attached-2, namespace: gateway-conformance-web-backend}
spec:
  parentRefs:
  - {name: all-namespaces, namespace: gateway-conformance-infra}
  hostnames: [two.example.com]
  rules:
  - backendRefs:
    - {name: web-backend, port: 8080}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other-class, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: other-class
  rules:
  - backendRefs:
    - {name: infra-backend-v3, port: 8080}
",
    );
    check_rows(
        &mut s,
        "HTTPRouteInvalidCrossNamespaceParentRef",
        &[
            // Not attached: the listener has no route (404).
            row(SAME_NAMESPACE, "example.com", "/", 404, None),
            row(ALL_NAMESPACES, "one.example.com", "/", 200, Some("v1")),
            row(ALL_NAMESPACES, "two.example.com", "/", 200, Some("v2")),
        ],
    );
    let route = resource(
        &s,
        "httproute",
        "gateway-conformance-web-backend",
        "invalid-cross-namespace-parent-ref",
    );
    assert_eq!(
        conditions(&route, 0)[0],
        cond("Accepted", "False", "NotAllowedByListeners")
    );
    let gateway = resource(
        &s,
        "gateway.gateway.networking.k8s.io",
        "gateway-conformance-infra",
        "all-namespaces",
    );
    println!("all-namespaces: {}", gateway["status"]);
    assert_eq!(
        gateway["status"]["listeners"][0]["attachedRoutes"], 2,
        "{gateway}"
    );
    assert_eq!(
        gateway["status"]["conditions"][0]["status"], "True",
        "{gateway}"
    );
    let same = resource(&s, "gtw", "gateway-conformance-infra", "same-namespace");
    assert_eq!(
        same["status"]["listeners"][0]["attachedRoutes"], 0,
        "{same}"
    );
    // A Gateway of another class has no status from this controller, and
    // a route bound only to it none either.
    let other = resource(&s, "gtw", "gateway-conformance-infra", "other-class");
    assert!(other.get("status").is_none(), "{other}");
    let route = resource(&s, "httproute", "gateway-conformance-infra", "other-class");
    assert_eq!(route["status"]["parents"], serde_json::json!([]), "{route}");
}

/// HTTPRouteListenerHostnameMatching: listeners on one port with
/// hostnames, each route bound to listeners by sectionName.
#[test]
fn httproute_listener_hostname_matching() {
    let mut s = start(
        "gwc-hostnames",
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: httproute-listener-hostname-matching, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: istio
  listeners:
  - {name: listener-1, port: 8092, protocol: HTTP, hostname: bar.com}
  - {name: listener-2, port: 8092, protocol: HTTP, hostname: foo.bar.com}
  - {name: listener-3, port: 8092, protocol: HTTP, hostname: '*.bar.com'}
  - {name: listener-4, port: 8092, protocol: HTTP, hostname: '*.foo.com'}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-v1, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - {name: httproute-listener-hostname-matching, sectionName: listener-1}
  rules:
  - backendRefs:
    - {name: infra-backend-v1, port: 8080}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-v2, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - {name: httproute-listener-hostname-matching, sectionName: listener-2}
  rules:
  - backendRefs:
    - {name: infra-backend-v2, port: 8080}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-v3, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - {name: httproute-listener-hostname-matching, sectionName: listener-3}
  - {name: httproute-listener-hostname-matching, sectionName: listener-4}
  rules:
  - backendRefs:
    - {name: infra-backend-v3, port: 8080}
",
    );
    check_rows(
        &mut s,
        "HTTPRouteListenerHostnameMatching",
        &[
            row(G, "bar.com", "/", 200, Some("v1")),
            row(G, "foo.bar.com", "/", 200, Some("v2")),
            row(G, "baz.bar.com", "/", 200, Some("v3")),
            row(G, "boo.bar.com", "/", 200, Some("v3")),
            row(G, "multiple.prefixes.bar.com", "/", 200, Some("v3")),
            row(G, "multiple.prefixes.foo.com", "/", 200, Some("v3")),
            row(G, "foo.com", "/", 404, None),
            row(G, "no.matching.host", "/", 404, None),
        ],
    );
}

/// TCPRouteReferenceGrant, TCPRouteInvalidCrossNamespaceBackendRef and
/// TCPRouteInvalidBackendRefNonexistent, on the tcp-echo backends (v1
/// answers `one`, v2 `two`) through the 31400 listener of the shipped
/// Gateway API form: a backend of another namespace takes connections
/// only with a ReferenceGrant there; without one, and for a Service that
/// does not exist, its share of the connections is refused (exactly) and
/// ResolvedRefs is False.
#[test]
fn tcproute_reference_grants_and_invalid_backends() {
    let route = |backends: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: tcp-echo}}
spec:
  parentRefs:
  - {{name: tcp-echo-gateway, sectionName: tcp-31400}}
  rules:
  - backendRefs:
{backends}
---
apiVersion: v1
kind: Service
metadata: {{name: tcp-reference-grant-backend, namespace: gateway-conformance-web-backend}}
spec:
  ports: [{{name: tcp, port: 9000}}]
  selector: {{app: tcp-echo-web}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: tcp-echo-web, namespace: gateway-conformance-web-backend}}
spec:
  address: 127.0.0.1
  labels: {{app: tcp-echo-web}}
  ports: {{tcp: 19002}}
"
        )
    };
    let cross = "    - {name: tcp-reference-grant-backend, namespace: gateway-conformance-web-backend, port: 9000}";
    let grant = "---
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: tcp-reference-grant, namespace: gateway-conformance-web-backend}
spec:
  from:
  - {group: gateway.networking.k8s.io, kind: TCPRoute, namespace: default}
  to:
  - {group: \"\", kind: Service}
";
    let mut s = Scenario::tcp_echo_dir(
        "gwc-tcp",
        "tcp-echo-gateway-api",
        &[("tcp-route.yaml", &format!("{}{grant}", route(cross)))],
    );
    let gateway = format!("{}:31400", traffic_shift_tests::NODE_ADDR);
    let mut remote = traffic_shift_tests::RemoteClient::start(&s.netns);
    let (one, two, errors) = remote.client.burst_with_errors(&gateway, 20);
    assert_eq!(
        (one, two, errors.len()),
        (0, 20, 0),
        "TCPRouteReferenceGrant: the cross-namespace backend: {errors:?}"
    );
    let status = resource(&s, "tcproute", "default", "tcp-echo");
    assert_eq!(
        conditions(&status, 0),
        [
            cond("Accepted", "True", "Accepted"),
            cond("ResolvedRefs", "True", "ResolvedRefs")
        ]
    );

    let cases = [
        (
            "TCPRouteReferenceGrant, the grant deleted (TCPRouteInvalidCrossNamespaceBackendRef)",
            route(cross),
            (0, 0, 100),
            "RefNotPermitted",
        ),
        (
            "TCPRouteInvalidBackendRefNonexistent",
            route("    - {name: nonexistent, port: 9000}"),
            (0, 0, 100),
            "BackendNotFound",
        ),
        (
            "a share of 20 that cannot be used",
            route(
                "    - {name: tcp-echo-v1, port: 9000, weight: 80}\n    - {name: nonexistent, port: 9000, weight: 20}",
            ),
            (80, 0, 20),
            "BackendNotFound",
        ),
    ];
    for (case, text, want, reason) in cases {
        let event = s.agent.write_rules("tcp-route.yaml", text);
        assert_eq!(event["result"], "applied", "{case}: {event}");
        let (one, two, errors) = remote.client.burst_with_errors(&gateway, 100);
        println!("{case}: one={one} two={two} refused={}", errors.len());
        assert_eq!((one, two, errors.len()), want, "{case}: {errors:?}");
        let status = resource(&s, "tcproute", "default", "tcp-echo");
        assert_eq!(
            conditions(&status, 0),
            [
                cond("Accepted", "True", "Accepted"),
                cond("ResolvedRefs", "False", reason)
            ],
            "{case}"
        );
    }
}

/// `run --gateway-class` and `validate --gateway-class`: the agent serves
/// the class named (the Gateway `other-class` of class `not-ours` on
/// 8090), and ignores the Gateways of the others (the suite's, of class
/// `istio`: no status, their routes not attached); `validate` reads the
/// same files the same way.
#[test]
fn the_gateway_class_flag_chooses_the_gateways_served() {
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other-class, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: other-class
  - name: same-namespace
  rules:
  - backendRefs:
    - {name: infra-backend-v3, port: 8080}
";
    let mut s = start_with("gwc-class", route, &["--gateway-class", "not-ours"]);
    check_rows(
        &mut s,
        "--gateway-class not-ours",
        &[row(SAME_NAMESPACE, "example.com", "/", 200, Some("v3"))],
    );
    let status = resource(&s, "httproute", "gateway-conformance-infra", "other-class");
    assert_eq!(
        status["status"]["parents"].as_array().map(Vec::len),
        Some(1),
        "only the parent of the class served is reported: {status}"
    );
    assert_eq!(
        status["status"]["parents"][0]["parentRef"]["name"],
        "other-class"
    );
    let same = resource(&s, "gtw", "gateway-conformance-infra", "same-namespace");
    assert!(same.get("status").is_none(), "{same}");

    // validate: the same files, each class.
    let file = s.rules_dir.join("conformance.yaml");
    for (class, served) in [("not-ours", "other-class"), ("istio", "same-namespace")] {
        let out = std::process::Command::new(traffic_shift_tests::traffic_shift_bin())
            .args(["validate", "-f"])
            .arg(&file)
            .args(["--gateway-class", class])
            .output()
            .expect("run traffic-shift validate");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{class}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("gateway-conformance-infra/{served} port 8090")),
            "validate --gateway-class {class} routes the Gateway {served}: {stdout}"
        );
    }
}

/// GatewayWithAttachedRoutes, without the `tls` Gateway (TLS listeners
/// are not read): a listener whose namespace selector is Kubernetes' own
/// name label counts its routes, `http-route-2` and `http-route-3` on one
/// host (their rules merged); a route whose hostnames miss the listener's
/// is not attached (NoMatchingListenerHostname) and not counted.
#[test]
fn gateway_with_attached_routes() {
    let listener = |name: &str, port: u16, hostname: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: {port}
    protocol: HTTP
{hostname}    allowedRoutes:
      kinds:
      - kind: HTTPRoute
      namespaces:
        from: Selector
        selector:
          matchLabels:
            kubernetes.io/metadata.name: gateway-conformance-infra
---
"
        )
    };
    let route = |name: &str, gateway: &str, hostnames: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
{hostnames}  parentRefs:
  - {{kind: Gateway, name: {gateway}, namespace: gateway-conformance-infra}}
  rules:
  - backendRefs:
    - {{name: infra-backend-v1, port: 8080}}
---
"
        )
    };
    let case = [
        listener("gateway-with-one-attached-route", 8094, ""),
        route("http-route-1", "gateway-with-one-attached-route", ""),
        listener(
            "gateway-with-two-attached-routes",
            8095,
            "    hostname: foo.example.com\n",
        ),
        route("http-route-2", "gateway-with-two-attached-routes", ""),
        // Serves foo.example.com as http-route-2 does: their rules merge.
        route("http-route-3", "gateway-with-two-attached-routes", ""),
        route(
            "http-route-not-accepted",
            "gateway-with-two-attached-routes",
            "  hostnames: [not-accepted.test.com]\n",
        ),
    ]
    .concat();
    let mut s = start("gwc-attached", &case);
    for (gateway, attached) in [
        ("gateway-with-one-attached-route", 1),
        ("gateway-with-two-attached-routes", 2),
    ] {
        let status = resource(&s, "gtw", "gateway-conformance-infra", gateway);
        let listener = &status["status"]["listeners"][0];
        assert_eq!(listener["name"], "http", "{status}");
        assert_eq!(listener["attachedRoutes"], attached, "{gateway}: {status}");
        assert_eq!(
            listener["supportedKinds"],
            // allowedRoutes.kinds names HTTPRoute alone.
            serde_json::json!([{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}]),
            "{status}"
        );
        for (k, condition) in ["Accepted", "Programmed", "ResolvedRefs"]
            .iter()
            .enumerate()
        {
            assert_eq!(listener["conditions"][k]["type"], *condition, "{status}");
            assert_eq!(listener["conditions"][k]["status"], "True", "{status}");
        }
    }
    let not_accepted = resource(
        &s,
        "httproute",
        "gateway-conformance-infra",
        "http-route-not-accepted",
    );
    assert_eq!(
        conditions(&not_accepted, 0)[0],
        cond("Accepted", "False", "NoMatchingListenerHostname")
    );
    check_rows(
        &mut s,
        "GatewayWithAttachedRoutes",
        &[
            row("127.0.0.1:8094", "example.com", "/", 200, Some("v1")),
            row("127.0.0.1:8095", "foo.example.com", "/", 200, Some("v1")),
            row("127.0.0.1:8095", "not-accepted.test.com", "/", 404, None),
        ],
    );
}

/// TCPRouteInvalidNonTCPListener: a TCPRoute bound by sectionName to an
/// HTTP listener that allows HTTPRoute only is not attached
/// (NotAllowedByListeners), and the Gateway counts no route.
#[test]
fn tcproute_invalid_non_tcp_listener() {
    let s = start(
        "gwc-nontcp",
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tcp-mixed-protocol-gateway, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: istio
  listeners:
  - name: only-allow-http-routes
    protocol: HTTP
    port: 5300
    allowedRoutes:
      kinds:
      - kind: HTTPRoute
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: tcp-route, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - {name: tcp-mixed-protocol-gateway, sectionName: only-allow-http-routes}
  rules:
  - backendRefs:
    - {name: tcp-echo-backend, port: 8080}
",
    );
    let route = resource(&s, "tcproute", "gateway-conformance-infra", "tcp-route");
    assert_eq!(
        conditions(&route, 0)[0],
        cond("Accepted", "False", "NotAllowedByListeners")
    );
    let gateway = resource(
        &s,
        "gtw",
        "gateway-conformance-infra",
        "tcp-mixed-protocol-gateway",
    );
    assert_eq!(
        gateway["status"]["listeners"][0]["attachedRoutes"], 0,
        "{gateway}"
    );
}

/// HTTPRouteInvalidParentRefNotMatchingListenerPort,
/// HTTPRouteInvalidParentRefNotMatchingSectionName and
/// HTTPRouteInvalidParentRefSectionNameNotMatchingPort (the suite's port 80
/// is 8090 here, 81 is 8099): no listener matches the parentRef, so
/// Accepted is False with NoMatchingParent, ResolvedRefs stays True, and
/// the Gateways count no route (their listeners answer 404).
#[test]
fn httproute_invalid_parent_ref_ports_and_section_names() {
    let route = |name: &str, gateway: &str, parent: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  parentRefs:
  - {{name: {gateway}, namespace: gateway-conformance-infra, {parent}}}
  rules:
  - backendRefs:
    - {{name: infra-backend-v1, kind: Service, port: 8080}}
---
"
        )
    };
    let case = [
        route(
            "httproute-listener-not-matching-route-port",
            "same-namespace",
            "port: 8099",
        ),
        route(
            "httproute-listener-not-matching-section-name",
            "same-namespace",
            "port: 8090, sectionName: http1",
        ),
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-with-one-not-matching-port-and-section-name-route, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: 8096
    protocol: HTTP
    allowedRoutes:
      kinds:
      - kind: HTTPRoute
      namespaces: {from: All}
---
"
        .to_owned(),
        route(
            "httproute-listener-section-name-not-matching-port",
            "gateway-with-one-not-matching-port-and-section-name-route",
            "sectionName: http, port: 8099",
        ),
    ]
    .concat();
    let mut s = start("gwc-parentref", &case);
    for name in [
        "httproute-listener-not-matching-route-port",
        "httproute-listener-not-matching-section-name",
        "httproute-listener-section-name-not-matching-port",
    ] {
        let route = resource(&s, "httproute", "gateway-conformance-infra", name);
        assert_eq!(
            conditions(&route, 0),
            [
                cond("Accepted", "False", "NoMatchingParent"),
                cond("ResolvedRefs", "True", "ResolvedRefs")
            ],
            "{name}"
        );
    }
    for gateway in [
        "same-namespace",
        "gateway-with-one-not-matching-port-and-section-name-route",
    ] {
        let status = resource(&s, "gtw", "gateway-conformance-infra", gateway);
        assert_eq!(
            status["status"]["listeners"][0]["attachedRoutes"], 0,
            "{gateway}: {status}"
        );
    }
    check_rows(
        &mut s,
        "no route attached",
        &[
            row(SAME_NAMESPACE, "example.com", "/", 404, None),
            row("127.0.0.1:8096", "example.com", "/", 404, None),
        ],
    );
}

/// One request from the test's network namespace, not followed: its
/// status and `Location`.
fn redirect(s: &Scenario, target: &str, host: &str, path: &str) -> (u16, String) {
    let addr: std::net::SocketAddr = target.parse().expect("address");
    let response = s
        .netns
        .run_in(|| traffic_shift_tests::http_client::get(addr, path, &[("host", host)]))
        .unwrap_or_else(|e| panic!("GET {target}{path}: {e}"));
    (
        response.status,
        response.header("location").unwrap_or_default().to_owned(),
    )
}

/// The routes of HTTPRouteRequestRedirect, HTTPRouteRedirectPortAndScheme
/// and HTTPRouteRedirectPath, in one HTTPRoute.
const REDIRECTS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: request-redirect, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches: [{path: {type: PathPrefix, value: /hostname-redirect}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: example.org}
    backendRefs:
    - {name: infra-backend-v1, port: 8080}
  - matches: [{path: {type: PathPrefix, value: /status-code-301}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {statusCode: 301}
  - matches: [{path: {type: PathPrefix, value: /host-and-status}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {statusCode: 301, hostname: example.org}
    backendRefs:
    - {name: infra-backend-v1, port: 8080}
  - matches: [{path: {type: PathPrefix, value: /scheme-nil-and-port-nil}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {hostname: example.org}
  - matches: [{path: {type: PathPrefix, value: /scheme-nil-and-port-80}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {port: 80, hostname: example.org}
  - matches: [{path: {type: PathPrefix, value: /scheme-https-and-port-nil}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: example.org}
  - matches: [{path: {type: PathPrefix, value: /scheme-https-and-port-8443}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, port: 8443, hostname: example.org}
  - matches: [{path: {type: PathPrefix, value: /original-prefix}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}
  - matches: [{path: {type: PathPrefix, value: /full-path-original}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}
  - backendRefs:
    - {name: infra-backend-v1, port: 8080}
";

/// HTTPRouteRequestRedirect, HTTPRouteRedirectPortAndScheme (the
/// suite's listener on 8080 is 8090 here) and HTTPRouteRedirectPath: the
/// status code and the `Location` of each redirect. With no port and no
/// scheme the listener's port is kept; a scheme's well-known port is left
/// out.
#[test]
fn httproute_request_redirect_port_scheme_and_path() {
    let mut s = start("gwc-redirect", REDIRECTS);
    let cases = [
        (
            "/hostname-redirect",
            302,
            "http://example.org:8090/hostname-redirect",
        ),
        (
            "/status-code-301",
            301,
            "http://example.com:8090/status-code-301",
        ),
        (
            "/host-and-status",
            301,
            "http://example.org:8090/host-and-status",
        ),
        (
            "/scheme-nil-and-port-nil",
            302,
            "http://example.org:8090/scheme-nil-and-port-nil",
        ),
        (
            "/scheme-nil-and-port-80",
            302,
            "http://example.org/scheme-nil-and-port-80",
        ),
        (
            "/scheme-https-and-port-nil",
            302,
            "https://example.org/scheme-https-and-port-nil",
        ),
        (
            "/scheme-https-and-port-8443",
            302,
            "https://example.org:8443/scheme-https-and-port-8443",
        ),
        (
            "/original-prefix/lemon?x=1",
            302,
            "http://example.com:8090/replacement-prefix/lemon?x=1",
        ),
        (
            "/original-prefix",
            302,
            "http://example.com:8090/replacement-prefix",
        ),
        (
            "/full-path-original/lemon",
            302,
            "http://example.com:8090/full-path-replacement",
        ),
    ];
    for (path, status, location) in cases {
        assert_eq!(
            redirect(&s, SAME_NAMESPACE, "example.com", path),
            (status, location.to_owned()),
            "{path}"
        );
    }
    // The rules without a redirect still reach their backend.
    check_rows(
        &mut s,
        "HTTPRouteRequestRedirect",
        &[row(
            SAME_NAMESPACE,
            "example.com",
            "/other",
            200,
            Some("v1"),
        )],
    );
    let route = resource(
        &s,
        "httproute",
        "gateway-conformance-infra",
        "request-redirect",
    );
    assert_eq!(
        conditions(&route, 0),
        [
            cond("Accepted", "True", "Accepted"),
            cond("ResolvedRefs", "True", "ResolvedRefs")
        ]
    );
}

/// HTTPRouteRewritePath and HTTPRouteRewriteHost: the backend sees the
/// rewritten path (prefix by whole segments, or the full path; the query
/// kept) and host.
#[test]
fn httproute_rewrite_path_and_host() {
    let mut s = start(
        "gwc-rewrite",
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: rewrite-path, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches: [{path: {type: PathPrefix, value: /prefix/one}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}
    backendRefs:
    - {name: infra-backend-v1, port: 8080}
  - matches: [{path: {type: PathPrefix, value: /strip-prefix}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /}
    backendRefs:
    - {name: infra-backend-v1, port: 8080}
  - matches: [{path: {type: PathPrefix, value: /full/one}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        path: {type: ReplaceFullPath, replaceFullPath: /one}
    backendRefs:
    - {name: infra-backend-v1, port: 8080}
  - matches: [{path: {type: PathPrefix, value: /host}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: one.example.org}
    backendRefs:
    - {name: infra-backend-v2, port: 8080}
",
    );
    let cases = [
        ("/prefix/one/two", "v1", "/one/two", "example.com"),
        ("/prefix/one", "v1", "/one", "example.com"),
        ("/strip-prefix/three", "v1", "/three", "example.com"),
        ("/strip-prefix", "v1", "/", "example.com"),
        ("/full/one/two?q=1", "v1", "/one?q=1", "example.com"),
        ("/host/a", "v2", "/host/a", "one.example.org"),
    ];
    for (path, version, seen, authority) in cases {
        let reply = get(&mut s, SAME_NAMESPACE, "example.com", path, 1);
        assert_eq!(count(&reply, "answers", version), 1, "{path}: {reply}");
        assert_eq!(
            (
                reply["last"]["path"].as_str(),
                reply["last"]["authority"].as_str()
            ),
            (Some(seen), Some(authority)),
            "{path}: {reply}"
        );
    }
}

/// The requests a reviews backend has seen (`/count` of `http-echo`).
fn seen_by(s: &Scenario, backend: &str) -> u64 {
    let addr: std::net::SocketAddr = backend.parse().expect("address");
    s.netns
        .run_in(|| traffic_shift_tests::http_client::get(addr, "/count", &[]))
        .unwrap_or_else(|e| panic!("GET {backend}/count: {e}"))
        .json()
        .expect("json")["count"]
        .as_u64()
        .expect("count")
}

/// HTTPRouteRequestMirror: the client gets infra-backend-v1's answers,
/// and infra-backend-v2 receives a copy of each request (fire and forget:
/// waited for until a deadline).
#[test]
fn httproute_request_mirror() {
    let mut s = start(
        "gwc-mirror",
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: request-mirror, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: infra-backend-v2, namespace: gateway-conformance-infra, port: 8080}
    backendRefs:
    - {name: infra-backend-v1, port: 8080}
  - backendRefs:
    - {name: infra-backend-v3, port: 8080}
",
    );
    let mirrored = "127.0.0.1:19082";
    let before = seen_by(&s, mirrored);
    check_rows(
        &mut s,
        "HTTPRouteRequestMirror",
        &[row(
            SAME_NAMESPACE,
            "example.com",
            "/mirror",
            200,
            Some("v1"),
        )],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while seen_by(&s, mirrored) < before + 10 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(seen_by(&s, mirrored), before + 10, "a copy of each request");
    // Not mirrored: the other rule.
    check_rows(
        &mut s,
        "HTTPRouteRequestMirror",
        &[row(SAME_NAMESPACE, "example.com", "/", 200, Some("v3"))],
    );
    assert_eq!(seen_by(&s, mirrored), before + 10, "no copy of other rules");
}

/// HTTPRouteTimeoutRequest and HTTPRouteTimeoutBackendRequest: a backend
/// slower than the timeout gets 504; `0s` has no timeout. The suite's
/// `?delay=1s` is `http-echo`'s `/delay/1000`, reached by a rewrite.
#[test]
fn httproute_timeouts() {
    let mut s = start(
        "gwc-timeout",
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: request-timeout, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches: [{path: {type: PathPrefix, value: /request-timeout}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /delay}
    timeouts: {request: 500ms}
    backendRefs:
    - {name: infra-backend-v1, port: 8080}
  - matches: [{path: {type: PathPrefix, value: /disable-request-timeout}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /delay}
    timeouts: {request: 0s}
    backendRefs:
    - {name: infra-backend-v1, port: 8080}
  - matches: [{path: {type: PathPrefix, value: /backend-request-timeout}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /delay}
    timeouts: {request: 10s, backendRequest: 500ms}
    backendRefs:
    - {name: infra-backend-v1, port: 8080}
",
    );
    check_rows(
        &mut s,
        "HTTPRouteTimeoutRequest",
        &[row(
            SAME_NAMESPACE,
            "example.com",
            "/request-timeout/0",
            200,
            Some("v1"),
        )],
    );
    for (path, status) in [
        ("/request-timeout/1000", 504),
        ("/disable-request-timeout/1000", 200),
        ("/backend-request-timeout/1000", 504),
        ("/backend-request-timeout/0", 200),
    ] {
        let reply = get(&mut s, SAME_NAMESPACE, "example.com", path, 1);
        assert_eq!(
            count(&reply, "status", &status.to_string()),
            1,
            "{path}: {reply}"
        );
    }
}
