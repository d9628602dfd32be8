//! Routes on several Gateways and on several ports of one Gateway, merged
//! per Gateway and host: HTTPRouteMultipleGateways and
//! HTTPRouteListenerPortMatching.

use super::{
    ALL_NAMESPACES, SAME_NAMESPACE, cond, conditions,
    matching::{Request, check},
    resource, start,
};

/// An HTTPRoute of gateway-conformance-infra: `parents` (YAML flow
/// entries), every request under `prefix` to infra-backend-`version`.
fn route(name: &str, parents: &str, prefix: &str, version: u8) -> String {
    format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  parentRefs: [{parents}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
    backendRefs: [{{name: infra-backend-v{version}, port: 8080}}]
"
    )
}

/// HTTPRouteMultipleGateways: a route on both Gateways of the base
/// manifests serves `/shared` on each, merged with each Gateway's own
/// route for `/`.
#[test]
fn httproute_multiple_gateways() {
    let case = [
        route(
            "multiple-gateways-shared-route",
            "{name: same-namespace}, {name: all-namespaces}",
            "/shared",
            1,
        ),
        route(
            "same-namespace-dedicated-route",
            "{name: same-namespace}",
            "/",
            2,
        ),
        route(
            "all-namespaces-dedicated-route",
            "{name: all-namespaces}",
            "/",
            3,
        ),
    ]
    .concat();
    let mut s = start("gwc-multigw", case.trim_start_matches("---\n"));
    let e = "example.com";
    check(
        &mut s,
        "HTTPRouteMultipleGateways (same-namespace)",
        SAME_NAMESPACE,
        &[(e, "/shared", "", Some("v1")), (e, "/", "", Some("v2"))],
    );
    check(
        &mut s,
        "HTTPRouteMultipleGateways (all-namespaces)",
        ALL_NAMESPACES,
        &[(e, "/shared", "", Some("v1")), (e, "/", "", Some("v3"))],
    );
    let shared = resource(
        &s,
        "httproute",
        "gateway-conformance-infra",
        "multiple-gateways-shared-route",
    );
    for parent in 0..2 {
        assert_eq!(
            conditions(&shared, parent),
            [
                cond("Accepted", "True", "Accepted"),
                cond("ResolvedRefs", "True", "ResolvedRefs")
            ],
            "parent {parent}: {shared}"
        );
    }
}

/// HTTPRouteListenerPortMatching: five listeners on three ports (the
/// suite's 80, 8080 and 8090 are 8096, 8097 and 8098 here), routes bound
/// by `port` (and one by `sectionName` too): each port serves the routes
/// bound to it, per host; `foo.com` has a route on every port, merged.
#[test]
fn httproute_listener_port_matching() {
    let listener = |name: &str, port: u16, hostname: &str| {
        format!(
            "  - {{name: {name}, port: {port}, protocol: HTTP, hostname: {hostname}, \
             allowedRoutes: {{namespaces: {{from: Same}}}}}}\n"
        )
    };
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: httproute-listener-port-matching, namespace: gateway-conformance-infra}}
spec:
  gatewayClassName: istio
  listeners:
{}{}{}{}{}",
        listener("listener-1", 8096, "foo.com"),
        listener("listener-2", 8097, "foo.com"),
        listener("listener-3", 8097, "bar.com"),
        listener("listener-4", 8098, "foo.com"),
        listener("listener-5", 8098, "bar.com"),
    );
    let parent = |extra: &str| {
        format!(
            "{{name: httproute-listener-port-matching, namespace: gateway-conformance-infra, {extra}}}"
        )
    };
    let case = [
        gateway,
        route("backend-v1", &parent("port: 8096"), "/", 1),
        route("backend-v2", &parent("port: 8097"), "/", 2),
        route(
            "backend-v3",
            &parent("port: 8098, sectionName: listener-4"),
            "/",
            3,
        ),
    ]
    .concat();
    let mut s = start("gwc-ports", &case);
    let rows: [(&str, Request); 5] = [
        ("127.0.0.1:8096", ("foo.com", "/", "", Some("v1"))),
        ("127.0.0.1:8097", ("foo.com:8097", "/", "", Some("v2"))),
        ("127.0.0.1:8097", ("bar.com:8097", "/", "", Some("v2"))),
        ("127.0.0.1:8098", ("foo.com:8098", "/", "", Some("v3"))),
        ("127.0.0.1:8098", ("bar.com:8098", "/", "", None)),
    ];
    for (target, row) in rows {
        check(&mut s, "HTTPRouteListenerPortMatching", target, &[row]);
    }
    for name in ["backend-v1", "backend-v2", "backend-v3"] {
        let status = resource(&s, "httproute", "gateway-conformance-infra", name);
        assert_eq!(
            conditions(&status, 0),
            [
                cond("Accepted", "True", "Accepted"),
                cond("ResolvedRefs", "True", "ResolvedRefs")
            ],
            "{name}"
        );
    }
}
