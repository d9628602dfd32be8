//! The suite's header modifier cases, at rule level and at backendRef
//! level: HTTPRouteRequestHeaderModifier,
//! HTTPRouteBackendRequestHeaderModifier,
//! HTTPRouteRequestHeaderModifierBackendWeights and
//! HTTPRouteResponseHeaderModifier. Each row is the suite's: the headers
//! the client sends (and those it asks `http-echo` to answer with, the
//! suite's `X-Echo-Set-Header`), and the headers the backend must see, or
//! the client must get, and those that must be absent.

use std::fmt::Write as _;

use serde_json::Value;
use traffic_shift_tests::{
    Scenario,
    http_client::{Conn, Response},
};

use super::{SAME_NAMESPACE, accepted_and_resolved, base, start};

/// One request on a connection of its own to the Gateway same-namespace,
/// for `example.com`, with `headers`.
pub(super) fn send(s: &Scenario, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    send_to(s, "example.com", method, path, headers)
}

/// [`send`] for `host`.
pub(super) fn send_to(
    s: &Scenario,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let addr: std::net::SocketAddr = SAME_NAMESPACE.parse().expect("address");
    let mut all = vec![("host", host)];
    all.extend_from_slice(headers);
    s.netns
        .run_in(|| Conn::connect(addr)?.request(method, path, &all, b"", false))
        .unwrap_or_else(|e| panic!("{method} {host}{path}: {e}"))
}

/// Every value of the response header `name` (lower case), in order,
/// joined by `,` (as the suite reads a header sent several times).
fn header(response: &Response, name: &str) -> Option<String> {
    let values: Vec<&str> = response
        .headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The request headers the backend saw (`http-echo`'s `headers`: names in
/// lower case, the values of a repeated header joined by `,`).
fn seen(response: &Response) -> Value {
    response.json().expect("http-echo answers JSON")["headers"].clone()
}

/// One row: the path, the headers sent, the headers expected (names in
/// lower case) and those that must be absent.
type Row = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

/// HTTPRouteRequestHeaderModifier's rows (the backend's view).
const REQUEST_ROWS: &[Row] = &[
    (
        "/set",
        &[("Some-Other-Header", "val")],
        &[
            ("some-other-header", "val"),
            ("x-header-set", "set-overwrites-values"),
        ],
        &[],
    ),
    (
        "/set",
        &[
            ("Some-Other-Header", "val"),
            ("X-Header-Set", "some-other-value"),
        ],
        &[
            ("some-other-header", "val"),
            ("x-header-set", "set-overwrites-values"),
        ],
        &[],
    ),
    (
        "/add",
        &[("Some-Other-Header", "val")],
        &[
            ("some-other-header", "val"),
            ("x-header-add", "add-appends-values"),
        ],
        &[],
    ),
    (
        "/add",
        &[
            ("Some-Other-Header", "val"),
            ("X-Header-Add", "some-other-value"),
        ],
        &[
            ("some-other-header", "val"),
            ("x-header-add", "some-other-value,add-appends-values"),
        ],
        &[],
    ),
    (
        "/remove",
        &[("X-Header-Remove", "val")],
        &[],
        &["x-header-remove"],
    ),
    (
        "/multiple",
        &[
            ("X-Header-Set-2", "set-val-2"),
            ("X-Header-Add-2", "add-val-2"),
            ("X-Header-Remove-2", "remove-val-2"),
            ("Another-Header", "another-header-val"),
        ],
        &[
            ("x-header-set-1", "header-set-1"),
            ("x-header-set-2", "header-set-2"),
            ("x-header-add-1", "header-add-1"),
            ("x-header-add-2", "add-val-2,header-add-2"),
            ("x-header-add-3", "header-add-3"),
            ("another-header", "another-header-val"),
        ],
        &["x-header-remove-1", "x-header-remove-2"],
    ),
    (
        "/case-insensitivity",
        &[
            ("x-header-set", "original-val-set"),
            ("x-header-add", "original-val-add"),
            ("x-header-remove", "original-val-remove"),
            ("Another-Header", "another-header-val"),
        ],
        &[
            ("x-header-set", "header-set"),
            ("x-header-add", "original-val-add,header-add"),
            ("another-header", "another-header-val"),
        ],
        &["x-header-remove"],
    ),
];

/// The filters of HTTPRouteRequestHeaderModifier's rules, by path prefix.
const REQUEST_FILTERS: [(&str, &str); 5] = [
    (
        "/set",
        "{set: [{name: X-Header-Set, value: set-overwrites-values}]}",
    ),
    (
        "/add",
        "{add: [{name: X-Header-Add, value: add-appends-values}]}",
    ),
    ("/remove", "{remove: [X-Header-Remove]}"),
    (
        "/multiple",
        "{set: [{name: X-Header-Set-1, value: header-set-1}, {name: X-Header-Set-2, value: header-set-2}], \
         add: [{name: X-Header-Add-1, value: header-add-1}, {name: X-Header-Add-2, value: header-add-2}, \
         {name: X-Header-Add-3, value: header-add-3}], remove: [X-Header-Remove-1, X-Header-Remove-2]}",
    ),
    (
        "/case-insensitivity",
        "{set: [{name: X-Header-Set, value: header-set}], add: [{name: X-Header-Add, value: header-add}], \
         remove: [X-Header-Remove]}",
    ),
];

/// The route `request-header-modifier`: each of [`REQUEST_FILTERS`] on
/// its rule (`backend`: false) or on the rule's one backendRef (true,
/// the suite's `httproute-request-header-modifier-backend.yaml`).
fn request_header_modifier(backend: bool) -> String {
    let mut out = String::from(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: request-header-modifier, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
",
    );
    for (prefix, modifier) in REQUEST_FILTERS {
        let filter =
            format!("[{{type: RequestHeaderModifier, requestHeaderModifier: {modifier}}}]");
        let _ = writeln!(
            out,
            "  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]"
        );
        if backend {
            let _ = writeln!(
                out,
                "    backendRefs:\n    - {{name: infra-backend-v1, port: 8080, filters: {filter}}}"
            );
        } else {
            let _ = writeln!(
                out,
                "    filters: {filter}\n    backendRefs:\n    - {{name: infra-backend-v1, port: 8080}}"
            );
        }
    }
    out
}

/// Checks each row against what the backend saw.
fn check_request_rows(s: &Scenario, case: &str, rows: &[Row]) {
    for (path, sent, want, absent) in rows {
        let response = send(s, "GET", path, sent);
        assert_eq!(response.status, 200, "{case} {path}: {}", response.text());
        assert_eq!(response.answer(), "v1", "{case} {path}");
        let headers = seen(&response);
        for (name, value) in *want {
            assert_eq!(
                headers[name].as_str(),
                Some(*value),
                "{case} {path}: {name}: {headers}"
            );
        }
        for name in *absent {
            assert!(
                headers.get(name).is_none(),
                "{case} {path}: {name} is there: {headers}"
            );
        }
    }
}

/// The route of HTTPRouteRequestHeaderModifierBackendWeights: 10/10 over
/// infra-backend-v1 and v2, each setting `Backend` to its own name.
const BACKEND_WEIGHTS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: request-header-modifier-backend-weights, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - backendRefs:
    - name: infra-backend-v1
      port: 8080
      weight: 10
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier:
          set: [{name: Backend, value: infra-backend-v1}]
    - name: infra-backend-v2
      port: 8080
      weight: 10
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier:
          set: [{name: Backend, value: infra-backend-v2}]
";

/// Ours, not the suite's: response headers by backendRef, 1:1 over
/// infra-backend-v1 and v3, and the rule's own, which wins where both set
/// one header (as Envoy applies a route's after its weighted cluster's).
const BACKEND_RESPONSE_HEADERS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-response-headers, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches: [{path: {type: PathPrefix, value: /response}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Overridden, value: rule}]
    backendRefs:
    - name: infra-backend-v1
      port: 8080
      filters:
      - type: ResponseHeaderModifier
        responseHeaderModifier:
          set: [{name: X-Backend, value: infra-backend-v1}, {name: X-Overridden, value: v1}]
    - name: infra-backend-v3
      port: 8080
      filters:
      - type: ResponseHeaderModifier
        responseHeaderModifier:
          add: [{name: X-Backend, value: infra-backend-v3}]
          remove: [X-Overridden]
";

/// HTTPRouteRequestHeaderModifier and HTTPRouteBackendRequestHeaderModifier
/// (the same rows, the filters on the rules, then on their backendRefs),
/// then HTTPRouteRequestHeaderModifierBackendWeights: of 100 requests,
/// every one carries the `Backend` header of the backend that answers it,
/// and the 10/10 split is exactly 50/50.
#[test]
fn httproute_request_header_modifiers_at_rule_and_backend_level() {
    let mut s = start("gwc-reqheaders", &request_header_modifier(false));
    check_request_rows(&s, "HTTPRouteRequestHeaderModifier", REQUEST_ROWS);

    let event = s.agent.write_rules(
        "conformance.yaml",
        format!("{}---\n{}", base(), request_header_modifier(true)),
    );
    assert_eq!(event["result"], "applied", "{event}");
    check_request_rows(&s, "HTTPRouteBackendRequestHeaderModifier", REQUEST_ROWS);
    accepted_and_resolved(&s, "request-header-modifier");

    let event = s.agent.write_rules(
        "conformance.yaml",
        format!(
            "{}---\n{BACKEND_WEIGHTS}---\n{BACKEND_RESPONSE_HEADERS}",
            base()
        ),
    );
    assert_eq!(event["result"], "applied", "{event}");
    let mut answered = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..100 {
        let response = send(&s, "GET", "/", &[]);
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
        let answer = response.answer();
        assert_eq!(
            seen(&response)["backend"].as_str(),
            Some(format!("infra-backend-{answer}").as_str()),
            "request {i}: the Backend header names the backend that answered"
        );
        *answered.entry(answer).or_default() += 1;
    }
    assert_eq!(
        answered,
        [("v1".to_owned(), 50), ("v2".to_owned(), 50)].into(),
        "HTTPRouteRequestHeaderModifierBackendWeights: 10/10 is 50/50 exactly"
    );
    check_backend_response_headers(&s);
}

/// [`BACKEND_RESPONSE_HEADERS`]: each response carries the header of the
/// backend that answered it, and the rule's `X-Overridden`.
fn check_backend_response_headers(s: &Scenario) {
    let mut answered = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..10 {
        let response = send(s, "GET", "/response", &[]);
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
        let answer = response.answer();
        assert_eq!(
            (
                header(&response, "x-backend"),
                header(&response, "x-overridden")
            ),
            (
                Some(format!("infra-backend-{answer}")),
                Some("rule".to_owned())
            ),
            "request {i}: {:?}",
            response.headers
        );
        *answered.entry(answer).or_default() += 1;
    }
    assert_eq!(
        answered,
        [("v1".to_owned(), 5), ("v3".to_owned(), 5)].into()
    );
}

/// HTTPRouteResponseHeaderModifier's route (the suite's manifest).
const RESPONSE_HEADER_MODIFIER: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: response-header-modifier, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches: [{path: {type: PathPrefix, value: /set}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /add}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{name: X-Header-Add, value: add-appends-values}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /remove}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        remove: [X-Header-Remove]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /multiple}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set:
        - {name: X-Header-Set-1, value: header-set-1}
        - {name: X-Header-Set-2, value: header-set-2}
        add:
        - {name: X-Header-Add-1, value: header-add-1}
        - {name: X-Header-Add-2, value: header-add-2}
        - {name: X-Header-Add-3, value: header-add-3}
        remove: [X-Header-Remove-1, X-Header-Remove-2]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /case-insensitivity}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Header-Set, value: header-set}]
        add:
        - {name: X-Header-Add, value: header-add}
        - {name: x-lowercase-add, value: lowercase-add}
        - {name: x-Mixedcase-ADD-1, value: mixedcase-add-1}
        - {name: X-mixeDcase-add-2, value: mixedcase-add-2}
        - {name: X-UPPERCASE-ADD, value: uppercase-add}
        remove: [X-Header-Remove]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /response-and-request-header-modifiers}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set:
        - {name: X-Header-Set-1, value: header-set-1}
        - {name: X-Header-Set-2, value: header-set-2}
        add:
        - {name: X-Header-Add-1, value: header-add-1}
        - {name: X-Header-Add-2, value: header-add-2}
        remove: [X-Header-Remove-1, X-Header-Remove-2]
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add:
        - {name: X-Header-Add, value: header-val-1}
        - {name: X-Header-Add-Append, value: header-val-2}
        remove: [X-Header-Remove]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
";

/// One row of HTTPRouteResponseHeaderModifier: the path, the headers the
/// backend is asked to answer with, the response headers expected and
/// those that must be absent.
type ResponseRow = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

const RESPONSE_ROWS: &[ResponseRow] = &[
    (
        "/set",
        "Some-Other-Header:val",
        &[
            ("some-other-header", "val"),
            ("x-header-set", "set-overwrites-values"),
        ],
        &[],
    ),
    (
        "/set",
        "Some-Other-Header:val,X-Header-Set:some-other-value",
        &[
            ("some-other-header", "val"),
            ("x-header-set", "set-overwrites-values"),
        ],
        &[],
    ),
    (
        "/add",
        "Some-Other-Header:val",
        &[
            ("some-other-header", "val"),
            ("x-header-add", "add-appends-values"),
        ],
        &[],
    ),
    (
        "/add",
        "Some-Other-Header:val,X-Header-Add:some-other-value",
        &[
            ("some-other-header", "val"),
            ("x-header-add", "some-other-value,add-appends-values"),
        ],
        &[],
    ),
    ("/remove", "X-Header-Remove:val", &[], &["x-header-remove"]),
    (
        "/multiple",
        "X-Header-Set-2:set-val-2,X-Header-Add-2:add-val-2,X-Header-Remove-2:remove-val-2,\
         Another-Header:another-header-val,X-Header-Remove-1:val",
        &[
            ("x-header-set-1", "header-set-1"),
            ("x-header-set-2", "header-set-2"),
            ("x-header-add-1", "header-add-1"),
            ("x-header-add-2", "add-val-2,header-add-2"),
            ("x-header-add-3", "header-add-3"),
            ("another-header", "another-header-val"),
        ],
        &["x-header-remove-1", "x-header-remove-2"],
    ),
    (
        "/case-insensitivity",
        "x-header-set:original-val-set,x-header-add:original-val-add,\
         x-header-remove:original-val-remove,Another-Header:another-header-val",
        &[
            ("x-header-set", "header-set"),
            ("x-header-add", "original-val-add,header-add"),
            ("x-lowercase-add", "lowercase-add"),
            ("x-mixedcase-add-1", "mixedcase-add-1"),
            ("x-mixedcase-add-2", "mixedcase-add-2"),
            ("x-uppercase-add", "uppercase-add"),
            ("another-header", "another-header-val"),
        ],
        &["x-header-remove"],
    ),
    (
        "/response-and-request-header-modifiers",
        "X-Header-Set-2:set-val-2,X-Header-Add-2:add-val-2,X-Header-Remove-2:remove-val-2,\
         Another-Header:another-header-val,X-Header-Remove-1:remove-val-1,X-Header-Echo:echo",
        &[
            ("x-header-set-1", "header-set-1"),
            ("x-header-set-2", "header-set-2"),
            ("x-header-add-1", "header-add-1"),
            ("x-header-add-2", "add-val-2,header-add-2"),
            ("another-header", "another-header-val"),
            ("x-header-echo", "echo"),
        ],
        &["x-header-remove-1", "x-header-remove-2"],
    ),
];

/// HTTPRouteResponseHeaderModifier: the response headers the backend set,
/// modified as each rule says; the last rule modifies the request too.
#[test]
fn httproute_response_header_modifier() {
    let s = start("gwc-respheaders", RESPONSE_HEADER_MODIFIER);
    let case = "HTTPRouteResponseHeaderModifier";
    for (path, backend_sets, want, absent) in RESPONSE_ROWS {
        let mut sent = vec![("X-Echo-Set-Header", *backend_sets)];
        if path.starts_with("/response-and-request") {
            sent.extend([
                ("X-Header-Remove", "remove-val"),
                ("X-Header-Add-Append", "append-val-1"),
                ("X-Header-Echo", "echo"),
            ]);
        }
        let response = send(&s, "GET", path, &sent);
        assert_eq!(response.status, 200, "{case} {path}: {}", response.text());
        assert_eq!(response.answer(), "v1", "{case} {path}");
        for (name, value) in *want {
            assert_eq!(
                header(&response, name).as_deref(),
                Some(*value),
                "{case} {path}: {name}: {:?}",
                response.headers
            );
        }
        for name in *absent {
            assert_eq!(header(&response, name), None, "{case} {path}: {name}");
        }
    }
    // The last row's request, as the backend saw it.
    let response = send(
        &s,
        "GET",
        "/response-and-request-header-modifiers",
        &[
            ("X-Header-Remove", "remove-val"),
            ("X-Header-Add-Append", "append-val-1"),
            ("X-Header-Echo", "echo"),
        ],
    );
    let headers = seen(&response);
    for (name, value) in [
        ("x-header-add", "header-val-1"),
        ("x-header-set", "set-overwrites-values"),
        ("x-header-add-append", "append-val-1,header-val-2"),
        ("x-header-echo", "echo"),
    ] {
        assert_eq!(
            headers[name].as_str(),
            Some(value),
            "{case}: {name}: {headers}"
        );
    }
    assert!(
        headers.get("x-header-remove").is_none(),
        "{case}: {headers}"
    );
}
