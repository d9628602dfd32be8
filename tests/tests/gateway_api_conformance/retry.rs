//! The suite's HTTPRouteRetry and HTTPRouteRetryConnectionError: a rule's
//! `retry` (`codes`, `attempts`). The suite's echo fails a request
//! `succeedAfter` times with `responseCode` (or by closing the connection)
//! before it answers; here `http-echo`'s `/fail/N/CODE` (`/fail/N/0`: the
//! connection closed), asked directly, fails its next N requests so. Each
//! row also counts the tries the backend saw: the first and each retry,
//! exactly.

use super::{accepted_and_resolved, filters::send, seen_by, start_with};

/// infra-backend-v3, the suite's backend of these rules.
const V3: &str = "127.0.0.1:19083";

const RETRIES: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: retries, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches: [{path: {type: PathPrefix, value: /retry/code-500-attempts-3}}]
    retry: {codes: [500], attempts: 3}
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /retry/code-all-attempts-2}}]
    retry: {codes: [500, 502, 503, 504], attempts: 2}
    backendRefs: [{name: infra-backend-v3, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: retries-connection-error, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches: [{path: {type: PathPrefix, value: /retry/no-status-code-attempts-3}}]
    retry: {attempts: 3}
    backendRefs: [{name: infra-backend-v3, port: 8080}]
";

/// HTTPRouteRetry and HTTPRouteRetryConnectionError: each row's path, the
/// backend's failure (`responseCode`, 0 for a connection closed, and
/// `succeedAfter`), the status the client gets (the suite allows 500 or
/// 503 for connections that keep failing: here 503, Envoy's), and the
/// tries.
#[test]
fn httproute_retry() {
    // Without the agent's health checks, which would count on the backend.
    let s = start_with("gwc-retry", RETRIES, &["--health-interval", "0"]);
    accepted_and_resolved(&s, "retries");
    accepted_and_resolved(&s, "retries-connection-error");
    let three = "/retry/code-500-attempts-3";
    let all = "/retry/code-all-attempts-2";
    let closed = "/retry/no-status-code-attempts-3";
    for (path, code, fails, status, tries) in [
        (three, 500, 2, 200, 3),
        (three, 500, 4, 500, 4),
        (three, 503, 2, 503, 1),
        (all, 500, 1, 200, 2),
        (all, 500, 3, 500, 3),
        (all, 502, 1, 200, 2),
        (all, 502, 3, 502, 3),
        (all, 503, 1, 200, 2),
        (all, 503, 3, 503, 3),
        (all, 504, 1, 200, 2),
        (all, 504, 3, 504, 3),
        (closed, 0, 2, 200, 3),
        (closed, 0, 4, 503, 4),
    ] {
        let addr: std::net::SocketAddr = V3.parse().expect("address");
        s.netns
            .run_in(|| {
                traffic_shift_tests::http_client::get(addr, &format!("/fail/{fails}/{code}"), &[])
            })
            .expect("set the backend's failures");
        let before = seen_by(&s, V3);
        let response = send(&s, "GET", path, &[]);
        let row = format!("{path}: {fails} x {code}");
        assert_eq!(response.status, status, "{row}: {}", response.text());
        assert_eq!(seen_by(&s, V3) - before, tries, "{row}: the tries");
        s.netns
            .run_in(|| traffic_shift_tests::http_client::get(addr, "/fail/0", &[]))
            .expect("reset the backend's failures");
    }
}
