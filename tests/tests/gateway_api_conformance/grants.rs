//! HTTPRouteInvalidReferenceGrant: ReferenceGrants that each miss by one
//! field (the grant's namespace, `from` group, kind or namespace, `to`
//! group, kind or name) let no route use the Service of another
//! namespace: its share answers 500, and `ResolvedRefs` is
//! `RefNotPermitted`.

use std::fmt::Write as _;

use super::{SAME_NAMESPACE, cond, conditions, resource, start};

/// The suite's grants: name, the grant's namespace, `from` group, kind
/// and namespace, `to` group, kind and name.
const GRANTS: [[&str; 8]; 7] = [
    [
        "wrong-namespace",
        "gateway-conformance-infra",
        "gateway.networking.k8s.io",
        "HTTPRoute",
        "gateway-conformance-infra",
        "\"\"",
        "Service",
        "web-backend",
    ],
    [
        "wrong-from-group",
        "gateway-conformance-web-backend",
        "not-the-group-youre-looking-for",
        "HTTPRoute",
        "gateway-conformance-infra",
        "\"\"",
        "Service",
        "web-backend",
    ],
    [
        "wrong-from-kind",
        "gateway-conformance-web-backend",
        "gateway.networking.k8s.io",
        "Gateway",
        "gateway-conformance-infra",
        "\"\"",
        "Service",
        "web-backend",
    ],
    [
        "wrong-from-namespace",
        "gateway-conformance-web-backend",
        "gateway.networking.k8s.io",
        "HTTPRoute",
        "not-the-namespace-youre-looking-for",
        "\"\"",
        "Service",
        "web-backend",
    ],
    [
        "wrong-to-group",
        "gateway-conformance-web-backend",
        "gateway.networking.k8s.io",
        "HTTPRoute",
        "gateway-conformance-infra",
        "not-the-group-youre-looking-for",
        "Service",
        "web-backend",
    ],
    [
        "wrong-to-kind",
        "gateway-conformance-web-backend",
        "gateway.networking.k8s.io",
        "HTTPRoute",
        "gateway-conformance-infra",
        "\"\"",
        "Secret",
        "web-backend",
    ],
    [
        "wrong-to-name",
        "gateway-conformance-web-backend",
        "gateway.networking.k8s.io",
        "HTTPRoute",
        "gateway-conformance-infra",
        "\"\"",
        "Secret",
        "not-the-service-youre-looking-for",
    ],
];

#[test]
fn httproute_invalid_reference_grant() {
    let mut case = String::new();
    for [
        name,
        namespace,
        from_group,
        from_kind,
        from_namespace,
        to_group,
        to_kind,
        to_name,
    ] in GRANTS
    {
        let _ = write!(
            case,
            "apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {{name: reference-grant-{name}, namespace: {namespace}}}
spec:
  from: [{{group: {from_group}, kind: {from_kind}, namespace: {from_namespace}}}]
  to: [{{group: {to_group}, kind: {to_kind}, name: {to_name}}}]
---
"
        );
    }
    case.push_str(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reference-grant, namespace: gateway-conformance-infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - backendRefs: [{name: web-backend, namespace: gateway-conformance-web-backend, port: 8080}]
",
    );
    let mut s = start("gwc-badgrants", &case);
    super::check_rows(
        &mut s,
        "HTTPRouteInvalidReferenceGrant",
        &[super::row(SAME_NAMESPACE, "example.com", "/", 500, None)],
    );
    let route = resource(
        &s,
        "httproute",
        "gateway-conformance-infra",
        "reference-grant",
    );
    assert_eq!(
        conditions(&route, 0),
        [
            cond("Accepted", "True", "Accepted"),
            cond("ResolvedRefs", "False", "RefNotPermitted")
        ]
    );
}
