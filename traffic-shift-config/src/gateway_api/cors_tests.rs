//! The `CORS` filter of an HTTPRoute: its translation into the model's
//! `corsPolicy` as Istio writes it (origins exact, prefix or regex; the
//! CRD's default `maxAge`; preflights of other origins ignored), and each
//! rule of the CRD refused with its field and message.

use std::time::Duration;

use super::{cors::ANY_ORIGIN, tls_route_tests::resolved};
use crate::{
    http::{CorsPolicy, StringMatch, UnmatchedPreflights},
    model::RoutingModel,
};

/// A Service on a WorkloadEntry, a Gateway with an HTTP listener, and an
/// HTTPRoute whose one rule has the filter `CORS_FILTER`.
const BASE: &str = r"apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: 8080, appProtocol: http}]
  selector: {app: web}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web}
spec: {address: 127.0.0.1, ports: {http: 19601}, labels: {app: web}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 8080, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cors}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /cors}}]
    filters:
    - type: CORS
      cors: CORS_FILTER
    backendRefs: [{name: web, port: 8080}]
";

fn with_filter(filter: &str) -> String {
    BASE.replace("CORS_FILTER", filter)
}

/// The `corsPolicy` of the route's one rule.
fn policy(model: &RoutingModel) -> CorsPolicy {
    let listener = model
        .http
        .iter()
        .find(|l| l.gateway.is_some())
        .expect("the gateway listener");
    let route = &listener.virtual_hosts[0].routes[0];
    route.cors.clone().expect("the rule's corsPolicy")
}

fn translated(filter: &str) -> CorsPolicy {
    policy(&resolved(&with_filter(filter)).unwrap_or_else(|e| panic!("{e:#?}")))
}

#[test]
fn the_suites_first_route_becomes_istios_cors_policy() {
    let got = translated(
        "{allowOrigins: ['https://www.foo.com', 'https://*.bar.com'], allowMethods: [GET, \
         OPTIONS], allowHeaders: [x-header-1, x-header-2], exposeHeaders: [x-header-3, \
         x-header-4], allowCredentials: true, maxAge: 3600}",
    );
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        got,
        CorsPolicy {
            allow_origins: vec![
                StringMatch::Exact("https://www.foo.com".into()),
                StringMatch::Regex("^https://.*\\.bar\\.com$".into()),
            ],
            allow_methods: strings(&["GET", "OPTIONS"]),
            allow_headers: strings(&["x-header-1", "x-header-2"]),
            expose_headers: strings(&["x-header-3", "x-header-4"]),
            max_age: Some(Duration::from_hours(1)),
            allow_credentials: Some(true),
            unmatched_preflights: UnmatchedPreflights::Ignore,
        }
    );
}

#[test]
fn origins_are_matched_as_istio_writes_them_and_max_age_defaults_to_5() {
    let got = translated("{allowOrigins: ['*'], allowCredentials: false}");
    assert_eq!(got.allow_origins, [StringMatch::Regex(ANY_ORIGIN.into())]);
    // `false` is not written: the header is left out either way.
    assert_eq!(got.allow_credentials, None);
    assert_eq!(got.max_age, Some(Duration::from_secs(5)));
    // A host of `*` alone ends in the only `*`: a prefix.
    let got = translated("{allowOrigins: ['https://*', 'http://*:8080']}");
    assert_eq!(
        got.allow_origins,
        [
            StringMatch::Prefix("https://".into()),
            StringMatch::Regex("^http://.*:8080$".into()),
        ]
    );
    // No origin: none is allowed (the policy still answers preflights).
    assert!(translated("{}").allow_origins.is_empty());
}

/// Each CRD rule: the field path and a piece of the message.
#[test]
fn the_crd_rules_are_refused_with_their_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "{allowOrigins: ['*', 'https://a.com']}",
            "spec.rules[0].filters[0].cors.allowOrigins:",
            "cannot contain '*' alongside other origins",
        ),
        (
            "{allowOrigins: ['ftp://a.com']}",
            "spec.rules[0].filters[0].cors.allowOrigins[0]:",
            "the scheme must be http:// or https://",
        ),
        (
            "{allowOrigins: ['https://a.com/path']}",
            "spec.rules[0].filters[0].cors.allowOrigins[0]:",
            "the host must be DNS labels",
        ),
        (
            "{allowOrigins: ['https://a.*.com']}",
            "spec.rules[0].filters[0].cors.allowOrigins[0]:",
            "the host must be DNS labels",
        ),
        (
            "{allowOrigins: ['https://a.com:123456']}",
            "spec.rules[0].filters[0].cors.allowOrigins[0]:",
            "the port must be 1 to 5 digits",
        ),
        (
            "{allowOrigins: ['https://a.com', 'https://a.com']}",
            "spec.rules[0].filters[0].cors.allowOrigins[1]:",
            "is also spec.rules[0].filters[0].cors.allowOrigins[0]",
        ),
        (
            "{allowMethods: ['*', GET]}",
            "spec.rules[0].filters[0].cors.allowMethods:",
            "cannot contain '*' alongside other methods",
        ),
        (
            "{allowMethods: [get]}",
            "spec.rules[0].filters[0].cors.allowMethods[0]:",
            "method \"get\" is not allowed",
        ),
        (
            "{allowMethods: [GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH, GET]}",
            "spec.rules[0].filters[0].cors.allowMethods:",
            "has 10 items: at most 9",
        ),
        (
            "{allowHeaders: ['*', x-a]}",
            "spec.rules[0].filters[0].cors.allowHeaders:",
            "cannot contain '*' alongside other headers",
        ),
        (
            "{allowHeaders: ['x a']}",
            "spec.rules[0].filters[0].cors.allowHeaders[0]:",
            "is not a header name",
        ),
        (
            "{exposeHeaders: [':status']}",
            "spec.rules[0].filters[0].cors.exposeHeaders[0]:",
            "is not a header name",
        ),
        (
            "{maxAge: 0}",
            "spec.rules[0].filters[0].cors.maxAge:",
            "maxAge 0 is out of range",
        ),
        (
            "{allowOrigin: ['https://a.com']}",
            "spec.rules[0].filters[0].cors",
            "allowOrigin",
        ),
    ];
    for (filter, field, message) in cases {
        let errors = resolved(&with_filter(filter)).expect_err(filter);
        assert!(
            errors
                .iter()
                .any(|e| e.contains(field) && e.contains(message)),
            "{filter}: expected {field} {message:?} in {errors:#?}"
        );
    }
}

#[test]
fn cors_is_once_per_rule_with_its_field_and_not_in_a_backend_ref() {
    let twice = BASE.replace(
        "    - type: CORS\n      cors: CORS_FILTER\n",
        "    - {type: CORS, cors: {allowOrigins: ['*']}}\n    - {type: CORS, cors: {}}\n",
    );
    let errors = resolved(&twice).expect_err("twice");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.rules[0].filters[1].type:")
                && e.contains("CORS filter cannot be repeated")),
        "{errors:#?}"
    );
    let without = BASE.replace("      cors: CORS_FILTER\n", "");
    let errors = resolved(&without).expect_err("without cors");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.rules[0].filters[0].cors:")
                && e.contains("cors is required with type CORS")),
        "{errors:#?}"
    );
    let misplaced = BASE.replace(
        "    - type: CORS\n      cors: CORS_FILTER\n",
        "    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: a, value: b}]}, cors: {}}\n",
    );
    let errors = resolved(&misplaced).expect_err("misplaced");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.rules[0].filters[0].cors:")
                && e.contains("must be nil if the filter.type is not CORS")),
        "{errors:#?}"
    );
    let in_backend = BASE
        .replace(
            "    filters:\n    - type: CORS\n      cors: CORS_FILTER\n",
            "",
        )
        .replace(
            "backendRefs: [{name: web, port: 8080}]",
            "backendRefs: [{name: web, port: 8080, filters: [{type: CORS, cors: {}}]}]",
        );
    let errors = resolved(&in_backend).expect_err("in a backendRef");
    assert!(
        errors.iter().any(
            |e| e.contains("spec.rules[0].backendRefs[0].filters[0].type:")
                && e.contains("filter CORS in a backendRef is not supported")
        ),
        "{errors:#?}"
    );
}

/// An Istio `corsPolicy` is served too (it was refused before the proxy
/// answered CORS): `unmatchedPreflights` is Istio's `FORWARD` unless it
/// says `IGNORE`, and an unknown value is refused.
#[test]
fn an_istio_cors_policy_is_served_and_forwards_unmatched_preflights_by_default() {
    let vs = |extra: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web}}
spec:
  hosts: [web.example]
  addresses: [10.9.0.1]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web.example]
  http:
  - corsPolicy: {{allowOrigins: [{{exact: 'https://a.example'}}], allowMethods: [GET]{extra}}}
    route: [{{destination: {{host: web.example}}}}]
"
        )
    };
    let model = resolved(&vs("")).unwrap_or_else(|e| panic!("{e:#?}"));
    let route = &model.http[0].virtual_hosts[0].routes[0];
    let cors = route.cors.as_ref().expect("corsPolicy");
    assert_eq!(
        cors.allow_origins,
        [StringMatch::Exact("https://a.example".into())]
    );
    assert_eq!(cors.unmatched_preflights, UnmatchedPreflights::Forward);
    let model = resolved(&vs(", unmatchedPreflights: IGNORE")).unwrap_or_else(|e| panic!("{e:#?}"));
    let route = &model.http[0].virtual_hosts[0].routes[0];
    assert_eq!(
        route.cors.as_ref().map(|c| c.unmatched_preflights),
        Some(UnmatchedPreflights::Ignore)
    );
    let errors = resolved(&vs(", unmatchedPreflights: DROP")).expect_err("DROP");
    assert!(
        errors.iter().any(
            |e| e.contains("spec.http[0].corsPolicy.unmatchedPreflights:")
                && e.contains("use FORWARD or IGNORE")
        ),
        "{errors:#?}"
    );
}
