//! The suite's backendRef-level filter cases: HTTPRouteBackendRequestRedirect
//! (`HTTPRouteBackendPathRedirect` in its Go source) and
//! HTTPRouteBackendURLRewrite, with their manifests; and what they leave
//! out, on the same routes: a backendRef's filter applies to the requests
//! its backend is picked for and to no other (a weighted split between a
//! backend that redirects, rewrites or mirrors and one that does not is
//! exact), and a backendRef's rewrite takes the place of its rule's.

use traffic_shift_tests::{Scenario, http_client::Response};

use super::{
    SAME_NAMESPACE, accepted_and_resolved, cond, conditions, count, filters::send_to, get,
    redirects::wait_seen, resource, seen_by, start_with,
};

/// The suite's two manifests (`httproute-backend-request-redirect.yaml`,
/// `httproute-backend-url-rewrite.yaml`), then this port's routes: each
/// rule splits its requests 1:1 between a backend with filters and one
/// without (or with others).
const ROUTES: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-request-redirect, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  hostnames: [redirect.example]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs:
    - name: infra-backend-v1
      port: 8080
      filters:
      - type: RequestRedirect
        requestRedirect: {scheme: https, hostname: redirect-example.com, port: 443, statusCode: 302}
    - name: infra-backend-v2
      port: 8080
      filters:
      - type: RequestRedirect
        requestRedirect: {scheme: http, hostname: redirect-example.com, port: 80, statusCode: 301}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-url-rewrite, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches: [{path: {type: PathPrefix, value: /full}}]
    backendRefs:
    - name: infra-backend-v1
      port: 8080
      filters:
      - type: URLRewrite
        urlRewrite:
          path: {type: ReplaceFullPath, replaceFullPath: /rewritten-full}
  - matches: [{path: {type: PathPrefix, value: /prefix}}]
    backendRefs:
    - name: infra-backend-v1
      port: 8080
      filters:
      - type: URLRewrite
        urlRewrite:
          path: {type: ReplacePrefixMatch, replacePrefixMatch: /rewritten-prefix}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-split, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches: [{path: {type: PathPrefix, value: /moved}}]
    backendRefs:
    - name: infra-backend-v1
      port: 8080
      filters:
      - type: RequestRedirect
        requestRedirect:
          hostname: new.example
          path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
    - {name: infra-backend-v2, port: 8080}
  - matches: [{path: {type: PathPrefix, value: /split}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /rule}
    backendRefs:
    - name: infra-backend-v1
      port: 8080
      filters:
      - type: URLRewrite
        urlRewrite:
          hostname: internal.example
          path: {type: ReplacePrefixMatch, replacePrefixMatch: /backend}
    - {name: infra-backend-v2, port: 8080}
  - matches: [{path: {type: PathPrefix, value: /bmirror}}]
    backendRefs:
    - name: infra-backend-v1
      port: 8080
      filters:
      - type: RequestMirror
        requestMirror:
          backendRef: {name: infra-backend-v3, port: 8080}
          percent: 50
    - {name: infra-backend-v2, port: 8080}
";

/// infra-backend-v3: only mirrors reach it.
const V3: &str = "127.0.0.1:19083";

/// The routes on an agent of its own (`test`: the name of its network
/// namespace and cgroup, one per test, as the tests run in parallel).
fn start(test: &str) -> Scenario {
    // Without the agent's active health checks, which would count on the
    // backends too (one request a second each).
    start_with(test, ROUTES, &["--health-interval", "0"])
}

/// `n` requests of `path` to same-namespace for `host`, one at a time,
/// each on its own connection.
fn each(s: &Scenario, host: &str, path: &str, n: usize) -> Vec<Response> {
    (0..n).map(|_| send_to(s, host, "GET", path, &[])).collect()
}

/// How many of `responses` are `(status, Location)`.
fn redirected(responses: &[Response], status: u16, location: &str) -> usize {
    responses
        .iter()
        .filter(|r| r.status == status && r.header("location") == Some(location))
        .count()
}

/// The `(version, path, authority)` the backend of each response saw.
fn seen(responses: &[Response]) -> Vec<(String, String, String)> {
    responses
        .iter()
        .map(|r| {
            let body = r.json().unwrap_or_else(|| panic!("not http-echo's: {r:?}"));
            let field = |name: &str| body[name].as_str().unwrap_or_default().to_owned();
            (field("version"), field("path"), field("authority"))
        })
        .collect()
}

/// HTTPRouteBackendRequestRedirect: each backendRef's own redirect, for
/// the requests its backend is picked for: 1:1, so exactly half of the
/// requests each (the suite's manifest has 302 for one and 301 for the
/// other; its Go table expects 302 for both, which no weighting makes
/// true: here each gets its own filter's code). Port 443 with `https` and
/// 80 with `http` are left out of `Location`; the path stays.
#[test]
fn httproute_backend_request_redirect() {
    let s = start("gwc-backend-redirect");
    accepted_and_resolved(&s, "backend-request-redirect");
    let responses = each(&s, "redirect.example", "/a/path?q=1", 20);
    assert_eq!(
        (
            redirected(&responses, 302, "https://redirect-example.com/a/path?q=1"),
            redirected(&responses, 301, "http://redirect-example.com/a/path?q=1"),
        ),
        (10, 10),
        "{responses:?}"
    );
    // A backendRef's redirect beside one without: half redirected (its
    // ReplacePrefixMatch replaces the rule's PathPrefix /moved), half
    // served by infra-backend-v2 as written.
    let responses = each(&s, "example.com", "/moved/x", 20);
    assert_eq!(
        redirected(&responses, 302, "http://new.example:8090/new/x"),
        10,
        "{responses:?}"
    );
    let served: Vec<_> = responses.into_iter().filter(|r| r.status == 200).collect();
    assert_eq!(
        seen(&served),
        vec![
            (
                "v2".to_owned(),
                "/moved/x".to_owned(),
                "example.com".to_owned()
            );
            10
        ]
    );
}

/// HTTPRouteBackendURLRewrite: the suite's two rows (ReplaceFullPath,
/// ReplacePrefixMatch at the backendRef level). Then a rule with its own
/// rewrite split 1:1: the backendRef with a rewrite of its own gets that
/// one (path and hostname), the other the rule's.
#[test]
fn httproute_backend_url_rewrite() {
    let mut s = start("gwc-backend-rewrite");
    accepted_and_resolved(&s, "backend-url-rewrite");
    accepted_and_resolved(&s, "backend-split");
    for (path, want) in [
        ("/full/original", "/rewritten-full"),
        ("/prefix/original", "/rewritten-prefix/original"),
    ] {
        let reply = get(&mut s, SAME_NAMESPACE, "example.com", path, 1);
        assert_eq!(count(&reply, "answers", "v1"), 1, "{path}: {reply}");
        assert_eq!(
            reply["last"]["path"].as_str(),
            Some(want),
            "{path}: {reply}"
        );
    }
    let mut seen = seen(&each(&s, "example.com", "/split/x", 20));
    seen.sort();
    let mut want = vec![("v1", "/backend/x", "internal.example"); 10];
    want.extend(vec![("v2", "/rule/x", "example.com"); 10]);
    let want: Vec<(String, String, String)> = want
        .into_iter()
        .map(|(v, p, a)| (v.to_owned(), p.to_owned(), a.to_owned()))
        .collect();
    assert_eq!(seen, want);
}

/// A backendRef's own RequestMirror (the spec allows it; the suite has no
/// case): 1000 requests split 1:1, infra-backend-v1's 500 mirrored at 50%
/// to infra-backend-v3, so exactly 250 copies (the shares are exact);
/// none of infra-backend-v2's.
#[test]
fn httproute_backend_request_mirror() {
    let mut s = start("gwc-backend-mirror");
    let before = seen_by(&s, V3);
    let reply = get(&mut s, SAME_NAMESPACE, "example.com", "/bmirror", 1000);
    assert_eq!(
        (
            count(&reply, "answers", "v1"),
            count(&reply, "answers", "v2")
        ),
        (500, 500),
        "{reply}"
    );
    wait_seen(&s, V3, before + 250, "the backendRef's 50% mirror");
    let route = resource(
        &s,
        "httproute",
        "gateway-conformance-infra",
        "backend-split",
    );
    assert_eq!(
        conditions(&route, 0),
        [
            cond("Accepted", "True", "Accepted"),
            cond("ResolvedRefs", "True", "ResolvedRefs")
        ]
    );
}
