//! The suite's redirect and mirror cases not in `gateway_api_conformance.rs`:
//! HTTPRouteRedirectHostAndStatus, HTTPRouteRedirectPort,
//! HTTPRouteRedirectScheme, HTTPRoute303Redirect, HTTPRoute307Redirect,
//! HTTPRoute308Redirect (their routes on one host, merged), and
//! HTTPRouteRequestMultipleMirrors and HTTPRouteRequestPercentageMirror.
//! The suite's listener on port 80 is 8090 here, so a redirect that keeps
//! the port says `:8090`.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use traffic_shift_tests::Scenario;

use super::{
    SAME_NAMESPACE, count, filters::send, matching::Request, matching::check, seen_by, start,
    start_with,
};

/// An HTTPRoute of gateway-conformance-infra on same-namespace named
/// `name`, a rule per `(prefix, requestRedirect)` (YAML flow).
fn redirect_route(name: &str, rules: &[(&str, &str)]) -> String {
    let mut out = format!(
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  parentRefs:
  - name: same-namespace
  rules:
"
    );
    for (prefix, redirect) in rules {
        let _ = write!(
            out,
            "  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
    filters: [{{type: RequestRedirect, requestRedirect: {redirect}}}]
"
        );
    }
    out
}

/// The six cases' routes, as the suite writes them.
fn redirect_routes() -> String {
    [
        redirect_route(
            "redirect-host-and-status",
            &[
                ("/hostname-redirect", "{hostname: example.org}"),
                (
                    "/host-and-status",
                    "{statusCode: 301, hostname: example.org}",
                ),
            ],
        ),
        redirect_route(
            "redirect-port",
            &[
                ("/port", "{port: 8083}"),
                ("/port-and-host", "{hostname: example.org, port: 8083}"),
                ("/port-and-status", "{port: 8083, statusCode: 301}"),
                (
                    "/port-and-host-and-status",
                    "{port: 8083, hostname: example.org, statusCode: 302}",
                ),
            ],
        ),
        redirect_route(
            "redirect-scheme",
            &[
                ("/scheme", "{scheme: https}"),
                ("/scheme-and-host", "{hostname: example.org, scheme: https}"),
                ("/scheme-and-status", "{scheme: https, statusCode: 301}"),
                (
                    "/scheme-and-host-and-status",
                    "{scheme: https, statusCode: 302, hostname: example.org}",
                ),
            ],
        ),
        redirect_route("303-redirect", &[("/see-other", "{statusCode: 303}")]),
        redirect_route("307-redirect", &[("/temporary", "{statusCode: 307}")]),
        redirect_route("308-redirect", &[("/permanent", "{statusCode: 308}")]),
    ]
    .concat()
}

/// HTTPRouteRedirectHostAndStatus, HTTPRouteRedirectPort,
/// HTTPRouteRedirectScheme, HTTPRoute303Redirect (a POST),
/// HTTPRoute307Redirect and HTTPRoute308Redirect: each row's status and
/// `Location` (the suite checks its scheme, host, port and path).
#[test]
fn httproute_redirect_host_status_port_and_scheme() {
    let s = start(
        "gwc-redirects",
        redirect_routes().trim_start_matches("---\n"),
    );
    let rows = [
        (
            "GET",
            "/hostname-redirect",
            302,
            "http://example.org:8090/hostname-redirect",
        ),
        (
            "GET",
            "/host-and-status",
            301,
            "http://example.org:8090/host-and-status",
        ),
        ("GET", "/port", 302, "http://example.com:8083/port"),
        (
            "GET",
            "/port-and-host",
            302,
            "http://example.org:8083/port-and-host",
        ),
        (
            "GET",
            "/port-and-status",
            301,
            "http://example.com:8083/port-and-status",
        ),
        (
            "GET",
            "/port-and-host-and-status",
            302,
            "http://example.org:8083/port-and-host-and-status",
        ),
        ("GET", "/scheme", 302, "https://example.com/scheme"),
        (
            "GET",
            "/scheme-and-host",
            302,
            "https://example.org/scheme-and-host",
        ),
        (
            "GET",
            "/scheme-and-status",
            301,
            "https://example.com/scheme-and-status",
        ),
        (
            "GET",
            "/scheme-and-host-and-status",
            302,
            "https://example.org/scheme-and-host-and-status",
        ),
        (
            "POST",
            "/see-other",
            303,
            "http://example.com:8090/see-other",
        ),
        (
            "GET",
            "/temporary",
            307,
            "http://example.com:8090/temporary",
        ),
        (
            "GET",
            "/permanent",
            308,
            "http://example.com:8090/permanent",
        ),
    ];
    for (method, path, status, location) in rows {
        let response = send(&s, method, path, &[]);
        assert_eq!(
            (response.status, response.header("location")),
            (status, Some(location)),
            "{method} {path}"
        );
    }
}

/// The mirror cases' routes (the suite's manifests).
const MIRRORS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: request-multiple-mirrors, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches: [{path: {type: PathPrefix, value: /multi-mirror}}]
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: infra-backend-v2, namespace: gateway-conformance-infra, port: 8080}
    - type: RequestMirror
      requestMirror:
        backendRef: {name: infra-backend-v3, namespace: gateway-conformance-infra, port: 8080}
    backendRefs:
    - {name: infra-backend-v1, port: 8080, namespace: gateway-conformance-infra}
  - matches: [{path: {type: PathPrefix, value: /multi-mirror-and-modify-request-headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add:
        - {name: X-Header-Add, value: header-val-1}
        - {name: X-Header-Add-Append, value: header-val-2}
        remove: [X-Header-Remove]
    - type: RequestMirror
      requestMirror:
        backendRef: {name: infra-backend-v2, namespace: gateway-conformance-infra, port: 8080}
    - type: RequestMirror
      requestMirror:
        backendRef: {name: infra-backend-v3, namespace: gateway-conformance-infra, port: 8080}
    backendRefs:
    - {name: infra-backend-v1, port: 8080, namespace: gateway-conformance-infra}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: request-percentage-mirror, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches: [{path: {type: PathPrefix, value: /percent-mirror}}]
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: infra-backend-v2, namespace: gateway-conformance-infra, port: 8080}
        percent: 20
    backendRefs:
    - {name: infra-backend-v1, port: 8080, namespace: gateway-conformance-infra}
  - matches: [{path: {type: PathPrefix, value: /percent-mirror-fraction}}]
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: infra-backend-v2, namespace: gateway-conformance-infra, port: 8080}
        fraction: {numerator: 25, denominator: 50}
    backendRefs:
    - {name: infra-backend-v1, port: 8080, namespace: gateway-conformance-infra}
  - matches: [{path: {type: PathPrefix, value: /percent-mirror-and-modify-headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add:
        - {name: X-Header-Add, value: header-val-1}
        - {name: X-Header-Add-Append, value: header-val-2}
        remove: [X-Header-Remove]
    - type: RequestMirror
      requestMirror:
        backendRef: {name: infra-backend-v2, namespace: gateway-conformance-infra, port: 8080}
        percent: 35
    backendRefs:
    - {name: infra-backend-v1, port: 8080, namespace: gateway-conformance-infra}
";

/// infra-backend-v2 and v3 (v1 takes the requests themselves).
const V2: &str = "127.0.0.1:19082";
const V3: &str = "127.0.0.1:19083";

/// Waits (up to 10 s: the copies are fire and forget) until `backend`
/// has seen `want` requests, then checks it has seen exactly that many.
pub(super) fn wait_seen(s: &Scenario, backend: &str, want: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen_by(s, backend) < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        seen_by(s, backend),
        want,
        "{what}: requests seen by {backend}"
    );
}

/// HTTPRouteRequestMultipleMirrors and HTTPRouteRequestPercentageMirror:
/// the client gets infra-backend-v1's answers (with the request headers
/// modified where the rule says); each mirror gets a copy of each request,
/// or of exactly its share: the agent's mirror shares are exact (20% is
/// 200 of 1000 requests in a row), so the counts are too.
#[test]
fn httproute_request_multiple_and_percentage_mirrors() {
    // Without the agent's active health checks, which would count on the
    // backends too (one request a second each).
    let mut s = start_with("gwc-mirrors", MIRRORS, &["--health-interval", "0"]);
    let e = "example.com";
    let modified: Request = (
        e,
        "/multi-mirror-and-modify-request-headers",
        "X-Header-Remove:remove-val X-Header-Add-Append:append-val-1",
        Some("v1"),
    );
    for (case, path, extra) in [
        ("HTTPRouteRequestMultipleMirrors", "/multi-mirror", ""),
        ("HTTPRouteRequestMultipleMirrors", modified.1, modified.2),
    ] {
        let (v2, v3) = (seen_by(&s, V2), seen_by(&s, V3));
        check(
            &mut s,
            case,
            SAME_NAMESPACE,
            &[(e, path, extra, Some("v1"))],
        );
        // `check` sends 4 requests.
        wait_seen(&s, V2, v2 + 4, path);
        wait_seen(&s, V3, v3 + 4, path);
    }
    let (v2, v3) = (seen_by(&s, V2), seen_by(&s, V3));
    let response = send(
        &s,
        "GET",
        modified.1,
        &[
            ("X-Header-Remove", "remove-val"),
            ("X-Header-Add-Append", "append-val-1"),
        ],
    );
    let headers = &response.json().expect("JSON")["headers"];
    for (name, value) in [
        ("x-header-add", "header-val-1"),
        ("x-header-add-append", "append-val-1,header-val-2"),
        ("x-header-set", "set-overwrites-values"),
    ] {
        assert_eq!(headers[name].as_str(), Some(value), "{name}: {headers}");
    }
    assert!(headers.get("x-header-remove").is_none(), "{headers}");
    wait_seen(&s, V2, v2 + 1, modified.1);
    wait_seen(&s, V3, v3 + 1, modified.1);

    for (path, copies) in [
        ("/percent-mirror", 200),
        ("/percent-mirror-fraction", 500),
        ("/percent-mirror-and-modify-headers", 350),
    ] {
        let before = seen_by(&s, V2);
        let reply = s.client.call(&format!(
            "http {SAME_NAMESPACE} {path} 1000 1 keepalive host:{e} X-Header-Remove:remove-val"
        ));
        assert_eq!(count(&reply, "answers", "v1"), 1000, "{path}: {reply}");
        wait_seen(
            &s,
            V2,
            before + copies,
            &format!("HTTPRouteRequestPercentageMirror {path}"),
        );
    }
    // None of another rule's requests is copied.
    let before = seen_by(&s, V2);
    let reply = s.client.call(&format!(
        "http {SAME_NAMESPACE} /other 10 1 keepalive host:{e}"
    ));
    assert_eq!(count(&reply, "status", "404"), 10, "{reply}");
    assert_eq!(
        seen_by(&s, V2),
        before,
        "no copy of a request no rule takes"
    );
}
