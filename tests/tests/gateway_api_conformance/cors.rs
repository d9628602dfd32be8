//! The suite's HTTPRouteCORS (`httproute-cors.go` and its manifests):
//! every row, as the suite checks it. A preflight (`OPTIONS` with
//! `Origin` and `access-control-request-method`) of an allowed origin is
//! answered by the proxy (200, or 204) with the row's CORS headers; one of
//! another origin gets none (`unmatchedPreflights: IGNORE`, as Istio
//! writes the filter); a simple request reaches the backend and its answer
//! gets `access-control-allow-origin` (and the credentials header) when
//! the origin is allowed. Where the suite takes several values (a list in
//! either order, `*` or the origin), any of them passes, whitespace
//! ignored, as the suite's `IgnoreWhitespace`.

use super::{accepted_and_resolved, filters::send, start};

/// The suite's manifests, namespace and Gateway as `base()` writes them.
const CORS: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cors-multiple-origins-methods-headers, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - filters:
    - type: CORS
      cors:
        allowOrigins: ["https://www.foo.com", "https://*.bar.com"]
        allowMethods: [GET, OPTIONS]
        allowHeaders: [x-header-1, x-header-2]
        exposeHeaders: [x-header-3, x-header-4]
        allowCredentials: true
        maxAge: 3600
    matches: [{path: {type: PathPrefix, value: /cors-1}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cors-wildcard-methods, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - filters:
    - type: CORS
      cors:
        allowOrigins: ["https://www.foo.com"]
        allowMethods: ["*"]
    matches: [{path: {type: PathPrefix, value: /cors-2}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cors-wildcard-origin, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - filters:
    - type: CORS
      cors:
        allowOrigins: ["*"]
        allowMethods: [PUT]
        allowCredentials: false
    matches: [{path: {type: PathPrefix, value: /cors-wildcard-origin}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cors-wildcard-methods-headers, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - filters:
    - type: CORS
      cors:
        allowOrigins: ["*"]
        allowMethods: ["*"]
        allowHeaders: ["*"]
        allowCredentials: true
    matches: [{path: {type: PathPrefix, value: /cors-wildcard-methods-headers}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - filters:
    - type: CORS
      cors:
        allowOrigins: ["*"]
        allowMethods: ["*"]
        allowHeaders: ["*"]
        allowCredentials: false
    matches: [{path: {type: PathPrefix, value: /cors-wildcard-methods-headers-unauth}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"#;

/// One row of the suite: the request, the statuses it may get, the
/// headers it must get (each with the values the suite takes), the
/// headers it must not get, and whether the backend answers it (a simple
/// request) or the proxy does (a preflight).
struct Row {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    statuses: &'static [u16],
    valid: &'static [(&'static str, &'static [&'static str])],
    absent: &'static [&'static str],
    backend: bool,
}

const PREFLIGHT_OK: &[u16] = &[200, 204];
const ASK_GET_HEADERS: &[(&str, &str)] = &[
    ("access-control-request-method", "GET"),
    ("access-control-request-headers", "x-header-1, x-header-2"),
];
const GET_OPTIONS: &[&str] = &["GET, OPTIONS", "OPTIONS, GET"];
const HEADERS_1_2: &[&str] = &["x-header-1, x-header-2", "x-header-2, x-header-1"];
const HEADERS_3_4: &[&str] = &["x-header-3, x-header-4", "x-header-4, x-header-3"];

/// A preflight of `/cors-1` (its expected headers given by the row).
const fn cors_1_preflight(
    name: &'static str,
    headers: &'static [(&'static str, &'static str)],
) -> Row {
    Row {
        name,
        method: "OPTIONS",
        path: "/cors-1",
        headers,
        statuses: PREFLIGHT_OK,
        valid: &[],
        absent: &[],
        backend: false,
    }
}

const ROWS: &[Row] = &[
    Row {
        valid: &[
            ("access-control-allow-origin", &["https://www.foo.com"]),
            ("access-control-allow-methods", GET_OPTIONS),
            ("access-control-allow-headers", HEADERS_1_2),
            ("access-control-expose-headers", HEADERS_3_4),
            ("access-control-max-age", &["3600"]),
            ("access-control-allow-credentials", &["true"]),
        ],
        ..cors_1_preflight(
            "CORS preflight request from an exact matching origin should be allowed",
            &[
                ("origin", "https://www.foo.com"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-header-1, x-header-2"),
            ],
        )
    },
    Row {
        valid: &[
            ("access-control-allow-origin", &["https://www.bar.com"]),
            ("access-control-allow-methods", GET_OPTIONS),
            ("access-control-allow-headers", HEADERS_1_2),
            ("access-control-expose-headers", HEADERS_3_4),
            ("access-control-max-age", &["3600"]),
            ("access-control-allow-credentials", &["true"]),
        ],
        ..cors_1_preflight(
            "CORS preflight request from a wildcard matching origin should be allowed",
            &[
                ("origin", "https://www.bar.com"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-header-1, x-header-2"),
            ],
        )
    },
    Row {
        valid: &[
            ("access-control-allow-origin", &["https://xpto.www.bar.com"]),
            ("access-control-allow-methods", GET_OPTIONS),
            ("access-control-allow-headers", HEADERS_1_2),
            ("access-control-expose-headers", HEADERS_3_4),
            ("access-control-max-age", &["3600"]),
            ("access-control-allow-credentials", &["true"]),
        ],
        ..cors_1_preflight(
            "CORS preflight request from a wildcard matching any number of periods left to '*' \
             should be allowed",
            &[
                ("origin", "https://xpto.www.bar.com"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-header-1, x-header-2"),
            ],
        )
    },
    Row {
        name: "CORS preflight request from a non-matching origin should not be allowed",
        method: "OPTIONS",
        path: "/cors-1",
        headers: &[
            ("origin", "https://foobar.com"),
            ("access-control-request-method", "GET"),
        ],
        statuses: &[200, 204, 403],
        valid: &[],
        absent: &["access-control-allow-origin"],
        backend: false,
    },
    Row {
        name: "Simple request from an exact matching origin should be allowed",
        method: "GET",
        path: "/cors-1",
        headers: &[
            ("origin", "https://www.foo.com"),
            ASK_GET_HEADERS[0],
            ASK_GET_HEADERS[1],
        ],
        statuses: &[200],
        valid: &[("access-control-allow-origin", &["https://www.foo.com"])],
        absent: &[],
        backend: true,
    },
    Row {
        name: "Simple request from a wildcard matching origin should be allowed",
        method: "GET",
        path: "/cors-1",
        headers: &[
            ("origin", "https://www.bar.com"),
            ASK_GET_HEADERS[0],
            ASK_GET_HEADERS[1],
        ],
        statuses: &[200],
        valid: &[("access-control-allow-origin", &["https://www.bar.com"])],
        absent: &[],
        backend: true,
    },
    Row {
        name: "Simple request from a non-matching origin should not be allowed",
        method: "GET",
        path: "/cors-1",
        headers: &[
            ("origin", "https://foobar.com"),
            ("access-control-request-method", "GET"),
        ],
        // The suite checks no status here; the backend answers.
        statuses: &[200],
        valid: &[],
        absent: &["access-control-allow-origin"],
        backend: true,
    },
    Row {
        name: "CORS preflight request with POST method should be allowed by allowMethods with \
               wildcard",
        method: "OPTIONS",
        path: "/cors-2",
        headers: &[
            ("origin", "https://www.foo.com"),
            ("access-control-request-method", "POST"),
        ],
        statuses: PREFLIGHT_OK,
        valid: &[
            ("access-control-allow-methods", &["POST", "*"]),
            ("access-control-allow-origin", &["https://www.foo.com"]),
        ],
        absent: &["access-control-allow-credentials"],
        backend: false,
    },
    Row {
        name: "CORS preflight request should not receive access-control-allow-credentials header \
               without access-control-allow-credentials set to true",
        method: "OPTIONS",
        path: "/cors-2",
        headers: &[
            ("origin", "https://www.foo.com"),
            ("access-control-request-method", "POST"),
        ],
        statuses: PREFLIGHT_OK,
        valid: &[],
        absent: &["access-control-allow-credentials"],
        backend: false,
    },
    Row {
        name: "CORS preflight request from a wildcard origin should return header with '*' or \
               with the requested Origin",
        method: "OPTIONS",
        path: "/cors-wildcard-origin",
        headers: &[
            ("origin", "https://foobar.com"),
            ("access-control-request-method", "PUT"),
        ],
        statuses: PREFLIGHT_OK,
        valid: &[
            ("access-control-allow-origin", &["https://foobar.com", "*"]),
            ("access-control-allow-methods", &["PUT"]),
        ],
        absent: &["access-control-allow-credentials"],
        backend: false,
    },
    Row {
        name: "CORS preflight request from a wildcard origin containing a port should return \
               header with '*' or with the requested Origin",
        method: "OPTIONS",
        path: "/cors-wildcard-origin",
        headers: &[
            ("origin", "https://foobar.com:12345"),
            ("access-control-request-method", "PUT"),
        ],
        statuses: PREFLIGHT_OK,
        valid: &[
            (
                "access-control-allow-origin",
                &["https://foobar.com:12345", "*"],
            ),
            ("access-control-allow-methods", &["PUT"]),
        ],
        absent: &["access-control-allow-credentials"],
        backend: false,
    },
    Row {
        name: "Request from a wildcard origin containing a port should return header with '*' or \
               with the requested Origin",
        method: "PUT",
        path: "/cors-wildcard-origin",
        headers: &[("origin", "https://foobar.com:12345")],
        statuses: &[200],
        valid: &[(
            "access-control-allow-origin",
            &["https://foobar.com:12345", "*"],
        )],
        absent: &[],
        backend: true,
    },
    Row {
        name: "Simple request from a wildcard origin should return header with '*' or with the \
               requested Origin",
        method: "PUT",
        path: "/cors-wildcard-origin",
        headers: &[("origin", "https://foobar.com")],
        statuses: &[200],
        valid: &[("access-control-allow-origin", &["https://foobar.com", "*"])],
        absent: &["access-control-allow-credentials"],
        backend: true,
    },
    Row {
        name: "CORS preflight request requesting specific method and headers should be allowed \
               and always echo the origin with allowCredentials set to true",
        method: "OPTIONS",
        path: "/cors-wildcard-methods-headers",
        headers: &[
            ("origin", "https://other.foo.com"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-header-1, x-header-2"),
        ],
        statuses: PREFLIGHT_OK,
        valid: &[
            ("access-control-allow-origin", &["https://other.foo.com"]),
            ("access-control-allow-methods", &["PUT"]),
            ("access-control-allow-headers", HEADERS_1_2),
            ("access-control-allow-credentials", &["true"]),
        ],
        absent: &[],
        backend: false,
    },
    Row {
        name: "CORS preflight request requesting specific method and headers should hide \
               access-control-allow-credentials headers with allowCredentials set to false",
        method: "OPTIONS",
        path: "/cors-wildcard-methods-headers-unauth",
        headers: &[
            ("origin", "https://other.foo.com"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-header-1, x-header-2"),
        ],
        statuses: PREFLIGHT_OK,
        valid: &[
            (
                "access-control-allow-origin",
                &["https://other.foo.com", "*"],
            ),
            ("access-control-allow-methods", &["PUT", "*"]),
            (
                "access-control-allow-headers",
                &["x-header-1, x-header-2", "x-header-2, x-header-1", "*"],
            ),
        ],
        absent: &["access-control-allow-credentials"],
        backend: false,
    },
    Row {
        name: "CORS request should receive access-control-allow-credentials header with \
               allowCredentials set to true",
        method: "GET",
        path: "/cors-wildcard-methods-headers",
        headers: &[("origin", "https://other.foo.com")],
        statuses: &[200],
        valid: &[
            ("access-control-allow-origin", &["https://other.foo.com"]),
            ("access-control-allow-credentials", &["true"]),
        ],
        absent: &[],
        backend: true,
    },
    Row {
        name: "CORS request should not receive access-control-allow-credentials header without \
               allowCredentials set to true",
        method: "GET",
        path: "/cors-wildcard-methods-headers-unauth",
        headers: &[("origin", "https://other.foo.com")],
        statuses: &[200],
        valid: &[(
            "access-control-allow-origin",
            &["https://other.foo.com", "*"],
        )],
        absent: &["access-control-allow-credentials"],
        backend: true,
    },
];

fn without_spaces(value: &str) -> String {
    value.chars().filter(|c| !c.is_whitespace()).collect()
}

/// HTTPRouteCORS: each of the suite's 17 rows.
#[test]
fn httproute_cors() {
    let s = start("gwc-cors", CORS);
    for name in [
        "cors-multiple-origins-methods-headers",
        "cors-wildcard-methods",
        "cors-wildcard-origin",
        "cors-wildcard-methods-headers",
    ] {
        accepted_and_resolved(&s, name);
    }
    assert_eq!(ROWS.len(), 17, "every row of the suite");
    for row in ROWS {
        let response = send(&s, row.method, row.path, row.headers);
        let name = row.name;
        assert!(
            row.statuses.contains(&response.status),
            "{name}: status {} not in {:?}: {}",
            response.status,
            row.statuses,
            response.text()
        );
        for (header, values) in row.valid {
            let got = response
                .header(header)
                .unwrap_or_else(|| panic!("{name}: no {header} in {:?}", response.headers));
            assert!(
                values
                    .iter()
                    .any(|value| without_spaces(value) == without_spaces(got)),
                "{name}: {header}: {got:?} is none of {values:?}"
            );
        }
        for header in row.absent {
            assert_eq!(
                response.header(header),
                None,
                "{name}: {header} must be absent"
            );
        }
        // A simple request is the backend's (its JSON echo); a preflight
        // is the proxy's, with no body.
        assert_eq!(
            response.json().is_some(),
            row.backend,
            "{name}: answered by the backend: {}",
            response.text()
        );
    }
}
