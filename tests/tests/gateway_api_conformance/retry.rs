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

/// The suite's `httproute-retry-with-timeouts.yaml`.
const RETRIES_WITH_TIMEOUTS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: retries-with-timeouts, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches: [{path: {type: PathPrefix, value: /retry/backend-request-timeout-200ms}}]
    retry: {attempts: 2}
    timeouts: {backendRequest: 200ms}
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /retry/request-timeout-200ms}}]
    retry: {codes: [500], attempts: 5}
    timeouts: {backendRequest: 200ms, request: 400ms}
    backendRefs: [{name: infra-backend-v3, port: 8080}]
";

/// HTTPRouteRetryWithTimeouts: each row's path, the backend's failures
/// (`succeedAfter` 500s, each after `delayRetry` ms: `http-echo`'s
/// `/fail/N/500/MS`), the status, and the tries the backend saw (a range
/// where the timing decides).
///
/// The first row is not the suite's: it expects 200 after two tries that
/// each outlive the 200 ms `backendRequest`. Istio writes the `retry` of
/// that rule as `retryOn: connect-failure,refused-stream,unavailable,
/// cancelled` (`conversion.go`), and Envoy retries a try that timed out
/// only when `retryOn` has `5xx`, `gateway-error` or `reset`
/// (`RetryStateImpl::wouldRetryFromReset`): the first try's timeout is the
/// answer, 504 after one try, here as with Istio.
///
/// The last row: 100 ms failures with the proxy's 25 ms backoff (Envoy's
/// default base interval, without its jitter) put the fourth try's start
/// at about 375 ms, so the 400 ms `request` timeout ends the
/// request during it, or, on a slow run, before it starts: 3 or 4 tries,
/// never the 6 the attempts allow.
#[test]
fn httproute_retry_with_timeouts() {
    let s = start_with(
        "gwc-retry-timeouts",
        RETRIES_WITH_TIMEOUTS,
        &["--health-interval", "0"],
    );
    accepted_and_resolved(&s, "retries-with-timeouts");
    let backend = "/retry/backend-request-timeout-200ms";
    let request = "/retry/request-timeout-200ms";
    for (path, fails, delay_ms, status, tries) in [
        // The suite: 200 (see above).
        (backend, 2, 300, 504, 1..=1),
        (backend, 3, 300, 504, 1..=1),
        (request, 1, 0, 200, 2..=2),
        (request, 4, 100, 504, 3..=4),
    ] {
        let addr: std::net::SocketAddr = V3.parse().expect("address");
        s.netns
            .run_in(|| {
                traffic_shift_tests::http_client::get(
                    addr,
                    &format!("/fail/{fails}/500/{delay_ms}"),
                    &[],
                )
            })
            .expect("set the backend's failures");
        let before = seen_by(&s, V3);
        let response = send(&s, "GET", path, &[]);
        let row = format!("{path}: {fails} x 500 after {delay_ms} ms");
        assert_eq!(response.status, status, "{row}: {}", response.text());
        let seen = seen_by(&s, V3) - before;
        assert!(tries.contains(&seen), "{row}: {seen} tries, want {tries:?}");
        s.netns
            .run_in(|| traffic_shift_tests::http_client::get(addr, "/fail/0", &[]))
            .expect("reset the backend's failures");
    }
}
