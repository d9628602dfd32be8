//! One test per validation rule taken from Istio (and per warning): a
//! minimal document refused with the exact message, and a valid
//! counterpart accepted.

#![expect(
    clippy::too_many_lines,
    reason = "tables of cases: one line of YAML and its exact message each"
)]

use std::{path::Path, time::Duration};

use super::{
    ConfigError, DelayKind, HttpRule, Resource, RulesFile, StringMatch, Warning, parse_file_all,
    resolve_all,
};

const FILE: &str = "rules/r.yaml";

fn document(kind: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata: {{name: r}}\nspec:\n{spec}"
    )
}

fn vs(spec: &str) -> String {
    document("VirtualService", spec)
}

fn dr(spec: &str) -> String {
    document("DestinationRule", spec)
}

fn gw(spec: &str) -> String {
    document("Gateway", spec)
}

fn se(spec: &str) -> String {
    document("ServiceEntry", spec)
}

fn we(spec: &str) -> String {
    document("WorkloadEntry", spec)
}

fn errors_of(text: &str) -> Vec<ConfigError> {
    errors_in(FILE, text)
}

fn accepted(text: &str) -> RulesFile {
    accepted_in(FILE, text)
}

/// The errors of `text` as the rules file `file`; panics if it is accepted.
pub(crate) fn errors_in(file: &str, text: &str) -> Vec<ConfigError> {
    match parse_file_all(Path::new(file), text) {
        Ok(file) => panic!(
            "expected errors, the document was accepted: {:?}\n{text}",
            file.resources
        ),
        Err(errors) => errors,
    }
}

/// `text` parsed as the rules file `file`; panics with its errors if refused.
pub(crate) fn accepted_in(file: &str, text: &str) -> RulesFile {
    parse_file_all(Path::new(file), text).unwrap_or_else(|errors| {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!(
            "expected the document to be accepted, got:\n{}\n{text}",
            errors.join("\n")
        )
    })
}

/// Each `(text, field, message)`: `text` is refused, with (among others)
/// exactly this error at `field`; each `valid` text is accepted.
fn refused(cases: &[(String, &str, &str)]) {
    for (text, field, message) in cases {
        let errors = errors_of(text);
        assert!(
            errors
                .iter()
                .any(|error| error.field.to_string() == *field && error.message == *message),
            "expected {field}: {message}\ngot:\n{}\nin:\n{text}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

fn warnings_of(file: &RulesFile) -> Vec<String> {
    file.warnings
        .iter()
        .map(|warning| format!("{}: {}", warning.field, warning.message))
        .collect()
}

fn only_http_rule(file: &RulesFile) -> &HttpRule {
    match file.resources.as_slice() {
        [Resource::VirtualService(vs)] => &vs.http[0],
        other => panic!("expected one VirtualService, got {other:?}"),
    }
}

#[test]
fn errors_name_file_document_resource_field_and_line() {
    let text = vs(
        "  hosts: [a.example.com]\n  tcp:\n  - route:\n    - destination: {host: a.example.com}\n      weight: -1\n",
    );
    let errors = errors_of(&text);
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "rules/r.yaml: document 1 (VirtualService default/r): spec.tcp[0].route[0].weight: weight -1 < 0 (line 9)"
        ],
        "the issue's format: FILE: document N (Kind name): field.path[i]: message (line L)"
    );
}

#[test]
fn every_error_of_every_document_is_listed() {
    let text = format!(
        "{}---\n{}---\n{}",
        vs(
            "  hosts: [a.example.com]\n  tcp:\n  - route:\n    - destination: {host: a.example.com}\n      weight: -1\n    - destination: {host: \"*\"}\n"
        ),
        dr("  host: a.example.com\n  subsets: [{name: v1}, {name: v1}]\n"),
        gw("  servers:\n  - port: {number: 0, name: tcp, protocol: TCP}\n    hosts: [a]\n")
    );
    let errors: Vec<(Option<usize>, String, String)> = errors_of(&text)
        .into_iter()
        .map(|error| (error.document, error.field.to_string(), error.message))
        .collect();
    let expected: Vec<(Option<usize>, String, String)> = [
        (1, "spec.tcp[0].route[0].weight", "weight -1 < 0"),
        (
            1,
            "spec.tcp[0].route[1].destination.host",
            "invalid destination host *: name the ServiceEntry host to route to",
        ),
        (2, "spec.subsets[1].name", "duplicate subset names: v1"),
        (
            3,
            "spec.servers[0].hosts[0]",
            "short names (non FQDN) are not allowed: \"a\"; write the full host name, as \
             a.<namespace>.svc.cluster.local",
        ),
        (
            3,
            "spec.servers[0].port.number",
            "port number 0 must be in the range 1..65535",
        ),
    ]
    .into_iter()
    .map(|(document, field, message)| (Some(document), field.to_owned(), message.to_owned()))
    .collect();
    assert_eq!(
        errors, expected,
        "all errors of all three documents, in order"
    );
}

#[test]
fn virtual_service_rules() {
    let tcp = "  tcp:\n  - route: [{destination: {host: a.example.com}}]\n";
    refused(&[
        (
            vs(&format!("  gateways: [gw]\n{tcp}")),
            "spec.gateways",
            "delegate virtual service must have no gateways specified: a VirtualService without \
             hosts is a delegate; add spec.hosts",
        ),
        (
            vs(&format!(
                "  hosts: [a.example.com]\n  gateways: [./gw]\n{tcp}"
            )),
            "spec.gateways[0]",
            "invalid value for namespace: \".\": write <namespace>/<name>, or the name alone for \
             a Gateway in this namespace",
        ),
        (
            vs(&format!(
                "  hosts: [a.example.com]\n  gateways: [ns/gw_1]\n{tcp}"
            )),
            "spec.gateways[0]",
            "invalid value for gateway name: \"gw_1\"",
        ),
        (
            vs(&format!(
                "  hosts: [\"*.example.com\", a.example.com]\n{tcp}"
            )),
            "spec.hosts[1]",
            "duplicate hosts in virtual service: *.example.com & a.example.com",
        ),
        (
            vs("  hosts: [a.example.com]\n"),
            "spec",
            "http, tcp or tls must be provided in virtual service",
        ),
        (
            vs(&format!(
                "  hosts: [a.example.com]\n  exportTo: [\".\", \".\"]\n{tcp}"
            )),
            "spec.exportTo[1]",
            "duplicate entries in exportTo: . and current namespace default",
        ),
        (
            vs(
                "  hosts: [a.example.com]\n  tcp:\n  - match: [{sourceLabels: {-app: x}}]\n    route: [{destination: {host: a.example.com}}]\n",
            ),
            "spec.tcp[0].match[0].sourceLabels.-app",
            "invalid tag key: \"-app\"",
        ),
        (
            vs(
                "  hosts: [a.example.com]\n  tcp:\n  - match: [{destinationSubnets: [10.0.0.0/33]}]\n    route: [{destination: {host: a.example.com}}]\n",
            ),
            "spec.tcp[0].match[0].destinationSubnets[0]",
            "10.0.0.0/33 is not a valid CIDR block",
        ),
        (
            vs(
                "  hosts: [a.example.com]\n  tcp:\n  - route: [{destination: {host: a.example.com, port: {}}}]\n",
            ),
            "spec.tcp[0].route[0].destination.port.number",
            "port number 0 must be in the range 1..65535",
        ),
    ]);
    let file = accepted(&vs(&format!(
        "  hosts: [a.example.com, b.example.com]\n  gateways: [gw.istio-system, mesh]\n  exportTo: [\".\", istio-system]\n{tcp}"
    )));
    assert_eq!(
        warnings_of(&file),
        [
            "spec.gateways[0]: using legacy gatewayName format \"gw.istio-system\"; prefer the \
          <namespace>/<name> format: \"istio-system/gw\""
        ],
        "a legacy gateway name is a warning"
    );
}

#[test]
fn weights_are_relative_and_totals_other_than_100_warn() {
    let route = |weights: &str| {
        vs(&format!(
            "  hosts: [a.example.com]\n  tcp:\n  - route:\n{weights}"
        ))
    };
    let file = accepted(&route(
        "    - {destination: {host: a.example.com, subset: v1}, weight: 1}\n    - {destination: {host: a.example.com, subset: v2}, weight: 3}\n",
    ));
    assert_eq!(
        warnings_of(&file),
        [
            "spec.tcp[0].route: total destination weight is 4, not 100: weights are relative, so \
          the destinations get 1/4, 3/4 of the connections"
        ]
    );
    let file = accepted(&route(
        "    - {destination: {host: a.example.com}, weight: 50}\n",
    ));
    assert_eq!(
        warnings_of(&file),
        [
            "spec.tcp[0].route[0].weight: weight 50 of the only destination is ignored: one \
          destination gets all the traffic"
        ]
    );
    let file = accepted(&route(
        "    - {destination: {host: a.example.com, subset: v1}, weight: 80}\n    - {destination: {host: a.example.com, subset: v2}, weight: 20}\n",
    ));
    assert!(
        file.warnings.is_empty(),
        "80/20: no warning: {:?}",
        file.warnings
    );
    refused(&[
        (
            route(
                "    - {destination: {host: a.example.com, subset: v1}, weight: 0}\n    - {destination: {host: a.example.com, subset: v2}}\n",
            ),
            "spec.tcp[0].route",
            "total destination weight = 0: give at least one destination a weight above 0",
        ),
        (
            route("    - {destination: {host: a.example.com, subset: v1}, weight: 2147483648}\n"),
            "spec.tcp[0].route[0].weight",
            "weight 2147483648 is too large (at most 2147483647): weights are relative, scale \
             them down",
        ),
    ]);
}

/// An `http` rule with `rest` (YAML at the indentation of `route`).
fn http(rest: &str) -> String {
    vs(&format!("  hosts: [a.example.com]\n  http:\n  - {rest}"))
}

const ROUTE: &str = "route: [{destination: {host: a.example.com}}]\n";

#[test]
fn http_match_rules() {
    refused(&[
        (
            http(&format!(
                "match: [{{headers: {{x-user: {{prefix: \"\"}}}}}}]\n    {ROUTE}"
            )),
            "spec.http[0].match[0].headers.x-user.prefix",
            "\"headers\": prefix string match should not be empty",
        ),
        (
            http(&format!(
                "match: [{{headers: {{\"bad header\": {{exact: x}}}}}}]\n    {ROUTE}"
            )),
            "spec.http[0].match[0].headers.bad header",
            "header name bad header is not a valid header name",
        ),
        (
            http(&format!("match: [{{headers: {{x-user: }}}}]\n    {ROUTE}")),
            "spec.http[0].match[0].headers.x-user",
            "header match x-user cannot be null",
        ),
        (
            http(&format!(
                "match: [{{method: {{exact: GET, prefix: G}}}}]\n    {ROUTE}"
            )),
            "spec.http[0].match[0].method.prefix",
            "exact and prefix are both set: a string match is one of exact, prefix or regex",
        ),
        (
            http(&format!(
                "match: [{{queryParams: {{id: {{regex: \"\"}}}}}}]\n    {ROUTE}"
            )),
            "spec.http[0].match[0].queryParams.id.regex",
            "\"queryParams\": regex string match should not be empty",
        ),
        (
            http(&format!("match: [{{port: 70000}}]\n    {ROUTE}")),
            "spec.http[0].match[0].port",
            "port number 70000 must be in the range 1..65535",
        ),
        (
            http(&format!(
                "match: [{{sourceNamespace: \"a.b\"}}]\n    {ROUTE}"
            )),
            "spec.http[0].match[0].sourceNamespace",
            "sourceNamespace match a.b is invalid",
        ),
        (
            http(&format!(
                "match: [{{headers: {{\"@request.auth.claims.group\": {{exact: a}}}}}}]\n    {ROUTE}"
            )),
            "spec.http[0].match[0].headers.@request.auth.claims.group",
            "JWT claim based routing (key: @request.auth.claims.group) is only supported for \
             gateway, found no gateways: bind the VirtualService to a Gateway",
        ),
    ]);
    let bad_regex = errors_of(&http(&format!(
        "match: [{{uri: {{regex: \"(?<=a)b\"}}}}]\n    {ROUTE}"
    )));
    assert_eq!(
        bad_regex[0].field.to_string(),
        "spec.http[0].match[0].uri.regex"
    );
    assert!(
        bad_regex[0]
            .message
            .starts_with("\"uri\": regex parse error:")
            && bad_regex[0].message.ends_with(
                "Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
            ),
        "look-behind is not RE2: {}",
        bad_regex[0]
    );
    let huge = errors_of(&http(&format!(
        "match: [{{uri: {{regex: \"(a{{1000}}){{1000}}\"}}}}]\n    {ROUTE}"
    )));
    assert!(
        huge[0]
            .message
            .contains("the compiled regex is larger than"),
        "a regex that compiles to millions of states is refused: {}",
        huge[0]
    );

    let file = accepted(&http(&format!(
        "match:\n    - uri: {{prefix: /api}}\n      ignoreUriCase: true\n      method: {{exact: GET}}\n      headers: {{x-user: {{regex: \"^(alice|bob)$\"}}, x-canary: {{}}}}\n      queryParams: {{debug: {{exact: \"1\"}}}}\n      withoutHeaders: {{x-skip: {{regex: \"*\"}}}}\n      port: 8080\n      sourceLabels: {{app: web}}\n    - uri: {{prefix: \"\"}}\n    {ROUTE}"
    )));
    let rule = only_http_rule(&file);
    let first = &rule.matches[0];
    assert_eq!(first.uri, Some(StringMatch::Prefix("/api".to_owned())));
    assert!(first.ignore_uri_case);
    assert_eq!(
        first.headers["x-user"],
        StringMatch::Regex("^(alice|bob)$".to_owned())
    );
    assert_eq!(first.headers["x-canary"], StringMatch::Any, "{{}}: present");
    assert_eq!(
        first.without_headers["x-skip"],
        StringMatch::Any,
        "regex * is present"
    );
    assert_eq!(first.port, Some(8080));
    assert_eq!(
        rule.matches[1].uri,
        Some(StringMatch::Prefix(String::new())),
        "uri may be an empty prefix (Envoy allows it)"
    );
}

#[test]
fn http_route_rules() {
    refused(&[
        (
            http("timeout: 1s\n"),
            "spec.http[0]",
            "HTTP route, redirect or direct_response is required",
        ),
        (
            http(&format!("redirect: {{uri: /x}}\n    {ROUTE}")),
            "spec.http[0].route",
            "HTTP route cannot contain both route and redirect",
        ),
        (
            http("directResponse: {status: 503}\n    fault: {abort: {httpStatus: 500}}\n"),
            "spec.http[0].fault",
            "HTTP route cannot contain both fault and direct_response",
        ),
        (
            http("redirect: {}\n"),
            "spec.http[0].redirect",
            "redirect must specify URI, authority, scheme, or port",
        ),
        (
            http("redirect: {uri: /x, redirectCode: 200}\n"),
            "spec.http[0].redirect.redirectCode",
            "200 is not a valid redirect code, must be 3xx",
        ),
        (
            http("directResponse: {status: 700}\n"),
            "spec.http[0].directResponse.status",
            "HTTP status 700 is not in range 200-599",
        ),
        (
            http(&format!("timeout: 10\n    {ROUTE}")),
            "spec.http[0].timeout",
            "invalid type: integer `10`, expected a string",
        ),
        (
            http(&format!("timeout: 1500us\n    {ROUTE}")),
            "spec.http[0].timeout",
            "only durations to ms precision are supported (1500us)",
        ),
        (
            http(&format!("timeout: ten\n    {ROUTE}")),
            "spec.http[0].timeout",
            "invalid duration \"ten\": write a number and a unit, as 10s, 1.5s, 250ms or 1m30s \
             (units ns, us, ms, s, m, h)",
        ),
        (
            http(
                "route:\n    - destination: {host: a.example.com, subset: v1}\n      weight: -5\n",
            ),
            "spec.http[0].route[0].weight",
            "weight -5 < 0",
        ),
        (
            http(
                "route:\n    - {destination: {host: a.example.com, subset: v1}, weight: 0}\n    - {destination: {host: a.example.com, subset: v2}, weight: 0}\n",
            ),
            "spec.http[0].route",
            "total destination weight = 0: give at least one destination a weight above 0",
        ),
        (
            http("route:\n    - weight: 100\n"),
            "spec.http[0].route[0]",
            "destination is required",
        ),
        (
            http(&format!("rewrite: {{}}\n    {ROUTE}")),
            "spec.http[0].rewrite",
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one \
             of URI or UriRegexRewrite may be specified",
        ),
        (
            http(&format!(
                "rewrite: {{authority: b.example.com}}\n    headers: {{request: {{set: {{host: c.example.com}}}}}}\n    {ROUTE}"
            )),
            "spec.http[0].headers.request.set.host",
            "authority header cannot be set multiple times: have \"b.example.com\", attempting \
             to set \"c.example.com\"",
        ),
    ]);
}

#[test]
fn http_retries_fault_mirror_and_headers() {
    refused(&[
        (
            http(&format!(
                "retries: {{attempts: 3, retryOn: \"5xx,bogus\"}}\n    {ROUTE}"
            )),
            "spec.http[0].retries.retryOn",
            "\"bogus\" is not a valid retryOn policy: use 5xx, gateway-error, reset, \
             reset-before-request, connect-failure, retriable-4xx, refused-stream, \
             retriable-status-codes, retriable-headers, envoy-ratelimited, \
             http3-post-connect-failure, cancelled, deadline-exceeded, internal, \
             resource-exhausted, unavailable or an HTTP status code",
        ),
        (
            http(&format!(
                "retries: {{attempts: 0, perTryTimeout: 1s}}\n    {ROUTE}"
            )),
            "spec.http[0].retries.attempts",
            "http retry policy configured when attempts are set to 0 (disabled)",
        ),
        (
            http(&format!("retries: {{attempts: -1}}\n    {ROUTE}")),
            "spec.http[0].retries.attempts",
            "attempts cannot be negative",
        ),
        (
            http(&format!("fault: {{}}\n    {ROUTE}")),
            "spec.http[0].fault",
            "HTTP fault injection must have an abort and/or a delay",
        ),
        (
            http(&format!(
                "fault: {{abort: {{httpStatus: 700, percentage: {{value: 10}}}}}}\n    {ROUTE}"
            )),
            "spec.http[0].fault.abort.httpStatus",
            "HTTP status 700 is not in range 200-599",
        ),
        (
            http(&format!(
                "fault: {{abort: {{grpcStatus: NOPE}}}}\n    {ROUTE}"
            )),
            "spec.http[0].fault.abort.grpcStatus",
            "gRPC status \"NOPE\" is not supported. See \
             https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of \
             supported codes, for example 'NOT_FOUND'",
        ),
        (
            http(&format!(
                "fault: {{delay: {{fixedDelay: 5s, percentage: {{value: 101}}}}}}\n    {ROUTE}"
            )),
            "spec.http[0].fault.delay.percentage.value",
            "percentage 101 is neither 0.0, nor in range [0.0001, 100.0]",
        ),
        (
            http(&format!(
                "fault: {{delay: {{exponentialDelay: 5s}}}}\n    {ROUTE}"
            )),
            "spec.http[0].fault.delay.exponentialDelay",
            "exponentialDelay not supported yet",
        ),
        (
            http(&format!(
                "mirror: {{host: b.example.com}}\n    mirrorPercentage: {{value: 150}}\n    {ROUTE}"
            )),
            "spec.http[0].mirrorPercentage.value",
            "mirror_percentage must have a max value of 100 (it has 150)",
        ),
        (
            http(&format!(
                "mirror: {{host: b.example.com}}\n    mirrors: [{{destination: {{host: c.example.com}}}}]\n    {ROUTE}"
            )),
            "spec.http[0].mirrors",
            "HTTP route cannot contain both mirror and mirrors",
        ),
        (
            http(&format!(
                "mirrors: [{{percentage: {{value: 5}}}}]\n    {ROUTE}"
            )),
            "spec.http[0].mirrors[0]",
            "destination is required for mirrors",
        ),
        (
            http(&format!(
                "headers: {{request: {{set: {{\":path\": /x}}}}}}\n    {ROUTE}"
            )),
            "spec.http[0].headers.request.set.:path",
            "invalid header \":path\": header cannot have \":\" prefix",
        ),
        (
            http(&format!(
                "headers: {{response: {{remove: [host]}}}}\n    {ROUTE}"
            )),
            "spec.http[0].headers.response.remove[0]",
            "invalid header \"host\": cannot set Host header",
        ),
        (
            http(
                "route:\n    - destination: {host: a.example.com}\n      headers: {request: {add: {x-id: \"abc%\"}}}\n",
            ),
            "spec.http[0].route[0].headers.request.add.x-id",
            "header value configuration: invalid header configuration. Un-escaped %",
        ),
    ]);
    let file = accepted(&http(&format!(
        "timeout: 1.5s\n    retries: {{attempts: 3, perTryTimeout: 500ms, retryOn: \"5xx,connect-failure,503\"}}\n    fault:\n      delay: {{fixedDelay: 7s, percentage: {{value: 0.1}}}}\n      abort: {{httpStatus: 503, percentage: {{value: 5}}}}\n    mirror: {{host: b.example.com, subset: v2}}\n    mirrorPercentage: {{value: 12.5}}\n    rewrite: {{uri: /v2, authority: b.example.com}}\n    headers:\n      request: {{set: {{x-env: \"%HOSTNAME%\"}}, remove: [x-debug]}}\n      response: {{add: {{x-served-by: mesh}}}}\n    {ROUTE}"
    )));
    let rule = only_http_rule(&file);
    assert_eq!(rule.timeout, Some(Duration::from_millis(1500)));
    let retries = rule.retries.as_ref().expect("retries");
    assert_eq!(
        (
            retries.attempts,
            retries.per_try_timeout,
            retries.retry_on.len()
        ),
        (3, Some(Duration::from_millis(500)), 3)
    );
    let fault = rule.fault.as_ref().expect("fault");
    assert_eq!(
        fault
            .delay
            .as_ref()
            .map(|delay| (delay.delay, delay.percentage)),
        Some((DelayKind::Fixed(Duration::from_secs(7)), Some(0.1)))
    );
    let mirror = rule.mirror.as_ref().expect("mirror");
    assert_eq!(
        (mirror.destination.host.as_str(), mirror.percentage),
        ("b.example.com", Some(12.5))
    );
    assert_eq!(rule.headers.request.remove, ["x-debug"]);
    assert!(file.warnings.is_empty(), "{:?}", file.warnings);

    let file = accepted(&http(&format!(
        "mirror: {{host: b.example.com}}\n    mirrorPercent: 50\n    {ROUTE}"
    )));
    assert_eq!(
        warnings_of(&file),
        [
            "spec.http[0].mirrorPercent: using deprecated setting \"mirrorPercent\", use \
          \"mirrorPercentage\" instead"
        ]
    );
}

#[test]
fn unreachable_http_rules_warn() {
    let file = accepted(&vs(&format!(
        "  hosts: [a.example.com]\n  http:\n  - match: [{{uri: {{prefix: /a}}}}]\n    {ROUTE}  - match: [{{uri: {{prefix: /a}}}}]\n    {ROUTE}  - {ROUTE}  - {ROUTE}"
    )));
    assert_eq!(
        warnings_of(&file),
        [
            "spec.http[1].match[0]: virtualService rule #1 match #0 is not used \
             (duplicate/overlapping match in rule #0)",
            "spec.http[1]: virtualService rule #1 not used (all matches used by prior rules)",
            "spec.http[3]: virtualService rule #3 not used (only the last rule can have no \
             matches)",
        ]
    );
}

#[test]
fn tls_rules_are_checked_and_mesh_ones_refused_as_not_supported() {
    refused(&[
        (
            vs(
                "  hosts: [a.example.com]\n  tls:\n  - route: [{destination: {host: a.example.com}}]\n",
            ),
            "spec.tls[0].match",
            "TLS route must have at least one match condition",
        ),
        (
            vs(
                "  hosts: [a.example.com]\n  tls:\n  - match: [{port: 443}]\n    route: [{destination: {host: a.example.com}}]\n",
            ),
            "spec.tls[0].match[0].sniHosts",
            "TLS match must have at least one SNI host",
        ),
        (
            vs(
                "  hosts: [a.example.com]\n  tls:\n  - match: [{sniHosts: [b.example.com]}]\n    route: [{destination: {host: a.example.com}}]\n",
            ),
            "spec.tls[0].match[0].sniHosts[0]",
            "SNI host \"b.example.com\" is not a compatible subset of any of the virtual service \
             hosts: [a.example.com]",
        ),
        (
            vs("  hosts: [a.example.com]\n  tls:\n  - match: [{sniHosts: [a.example.com]}]\n"),
            "spec.tls[0].route",
            "TLS route is required",
        ),
    ]);
    let valid = vs(
        "  hosts: [\"*.example.com\"]\n  tls:\n  - match: [{sniHosts: [a.example.com], port: 443}]\n    route: [{destination: {host: a.example.com}}]\n",
    );
    let file = accepted(&valid);
    let (model, _) = resolve_all(&[file]);
    let errors = model.expect_err("mesh tls rules are refused at resolve");
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "rules/r.yaml: document 1 (VirtualService default/r): spec.tls[0]: tls rules bound \
             to the mesh are not supported yet: the connect-time hook does not read the SNI of a \
             connection; bind the rule to a Gateway server with protocol TLS and tls.mode \
             PASSTHROUGH, or route the port with a tcp rule (line 7)"
        ]
    );
}

#[test]
fn destination_rule_traffic_policy_rules() {
    let policy = |yaml: &str| dr(&format!("  host: a.example.com\n  trafficPolicy:\n{yaml}"));
    refused(&[
        (
            dr("  host: a.example.com\n  trafficPolicy: {}\n"),
            "spec.trafficPolicy",
            "traffic policy must have at least one field",
        ),
        (
            policy("    outlierDetection: {maxEjectionPercent: 150}\n"),
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
            "percentage 150 is not in range 0..100",
        ),
        (
            policy("    outlierDetection: {interval: 0.5ms}\n"),
            "spec.trafficPolicy.outlierDetection.interval",
            "duration must be greater than 1ms (it is 0.5ms)",
        ),
        (
            policy("    outlierDetection: {consecutiveLocalOriginFailures: 3}\n"),
            "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
            "outlier detection consecutive local origin failures is specified, but split \
             external local origin errors is set to false",
        ),
        (
            policy("    connectionPool: {}\n"),
            "spec.trafficPolicy.connectionPool",
            "connection pool must have at least one field",
        ),
        (
            policy("    connectionPool: {tcp: {maxConnections: -1}}\n"),
            "spec.trafficPolicy.connectionPool.tcp.maxConnections",
            "max connections must be non-negative (it is -1)",
        ),
        (
            policy("    connectionPool: {tcp: {connectTimeout: 0s}}\n"),
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
            "duration must be greater than 1ms (it is 0s)",
        ),
        (
            policy("    connectionPool: {http: {http2KeepAlive: {interval: 10s}}}\n"),
            "spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout",
            "http2 keepalive timeout is required",
        ),
        (
            policy(
                "    connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}\n",
            ),
            "spec.trafficPolicy.connectionPool.http.useClientProtocol",
            "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
        ),
        (
            policy("    portLevelSettings: [{loadBalancer: {simple: RANDOM}}]\n"),
            "spec.trafficPolicy.portLevelSettings[0].port",
            "portTrafficPolicy must have valid port",
        ),
        (
            policy("    portLevelSettings: [{port: {number: 80}}]\n"),
            "spec.trafficPolicy.portLevelSettings[0]",
            "port traffic policy must have at least one field",
        ),
        (
            policy(
                "    loadBalancer: {consistentHash: {maglev: {tableSize: 1000}, useSourceIp: true}}\n",
            ),
            "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
            "tableSize must be a prime number for maglev (it is 1000)",
        ),
        (
            policy("    loadBalancer: {consistentHash: {httpCookie: {ttl: 0s}}}\n"),
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
            "name required for HttpCookie",
        ),
        (
            dr("  host: a.example.com\n  subsets: [{name: v1, labels: {version: \"v 1\"}}]\n"),
            "spec.subsets[0].labels.version",
            "invalid tag value: \"v 1\"",
        ),
    ]);
    let file = accepted(&policy(
        "    loadBalancer: {simple: ROUND_ROBIN}\n    connectionPool:\n      tcp: {maxConnections: 100, connectTimeout: 30ms, idleTimeout: 0s, tcpKeepalive: {time: 7200s, interval: 75s}}\n      http: {http1MaxPendingRequests: 10, maxRequestsPerConnection: 1, http2KeepAlive: {interval: 10s, timeout: 1s}}\n    outlierDetection: {consecutive5xxErrors: 7, maxEjectionPercent: 50}\n    portLevelSettings:\n    - port: {number: 9000}\n      loadBalancer: {simple: RANDOM}\n      outlierDetection: {baseEjectionTime: 1m}\n",
    ));
    let Resource::DestinationRule(rule) = &file.resources[0] else {
        panic!("a DestinationRule");
    };
    let parsed = &rule.traffic_policy;
    let tcp = parsed
        .connection_pool
        .as_ref()
        .and_then(|pool| pool.tcp.as_ref())
        .expect("tcp pool");
    assert_eq!(
        (tcp.max_connections, tcp.connect_timeout, tcp.idle_timeout),
        (
            Some(100),
            Some(Duration::from_millis(30)),
            Some(Duration::ZERO)
        )
    );
    let outlier = parsed
        .outlier_detection
        .as_ref()
        .expect("outlier detection");
    assert_eq!(
        (
            outlier.consecutive_5xx_errors,
            outlier.interval,
            outlier.base_ejection_time,
            outlier.max_ejection_percent
        ),
        (7, Duration::from_secs(10), Duration::from_secs(30), 50),
        "Istio's defaults where not written"
    );
    let port = &parsed.port_level_settings[0];
    assert_eq!(port.port, 9000);
    assert_eq!(
        port.outlier_detection
            .as_ref()
            .map(|o| o.base_ejection_time),
        Some(Duration::from_mins(1))
    );
    assert_eq!(
        parsed
            .load_balancer_for(Some(9000))
            .map(|lb| lb.path.to_string()),
        Some("spec.trafficPolicy.portLevelSettings[0].loadBalancer.simple".to_owned()),
        "the port's loadBalancer applies to its port"
    );
    assert_eq!(
        parsed
            .load_balancer_for(Some(80))
            .map(|lb| lb.path.to_string()),
        Some("spec.trafficPolicy.loadBalancer.simple".to_owned())
    );
    let deprecated = accepted(&policy("    outlierDetection: {consecutiveErrors: 5}\n"));
    assert_eq!(
        warnings_of(&deprecated),
        [
            "spec.trafficPolicy.outlierDetection.consecutiveErrors: outlier detection consecutive \
          errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead"
        ]
    );
    accepted(&dr("  host: a.example.com\n  subsets: [{name: all}]\n"));
}

#[test]
fn gateway_rules() {
    let server = |yaml: &str| gw(&format!("  servers:\n  - {yaml}"));
    refused(&[
        (
            server("port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a]\n"),
            "spec.servers[0].hosts[0]",
            "short names (non FQDN) are not allowed: \"a\"; write the full host name, as \
             a.<namespace>.svc.cluster.local",
        ),
        (
            server(
                "port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*a.example.com\"]\n",
            ),
            "spec.servers[0].hosts[0]",
            "partial wildcard \"*a.example.com\" not allowed",
        ),
        (
            server(
                "port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"ns_1/a.example.com\"]\n",
            ),
            "spec.servers[0].hosts[0]",
            "invalid namespace value \"ns_1\" in gateway: use *, . or a namespace name before \
             the /",
        ),
        (
            server(
                "port: {number: 80, name: tcp, protocol: TCP, targetPort: 8080}\n    hosts: [\"*\"]\n",
            ),
            "spec.servers[0].port.targetPort",
            "targetPort has no impact on Gateways: remove it",
        ),
        (
            server("port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n"),
            "spec.servers[0].tls",
            "server must have TLS settings for HTTPS/TLS protocols: add tls: {mode: ...}",
        ),
        (
            server(
                "port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE, credentialName: c}\n",
            ),
            "spec.servers[0].tls",
            "server cannot have TLS settings for non HTTPS/TLS ports",
        ),
        (
            server(
                "port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE, credentialName: c}\n",
            ),
            "spec.servers[0].tls",
            "server cannot have TLS settings for plain text HTTP ports",
        ),
        (
            server(
                "port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE}\n",
            ),
            "spec.servers[0].tls",
            "SIMPLE TLS requires a server certificate",
        ),
        (
            server(
                "port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: ISTIO_MUTUAL, privateKey: /k}\n",
            ),
            "spec.servers[0].tls.privateKey",
            "ISTIO_MUTUAL TLS cannot have associated private key: the mesh's certificates are used; \
             remove privateKey",
        ),
    ]);
    accepted(&gw(
        "  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"ns1/a.example.com\", \"./b.example.com\", \"*/*.example.org\"]\n    tls: {httpsRedirect: true}\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}\n  - port: {number: 15443, name: tls, protocol: TLS}\n    hosts: [\"*.example.com\"]\n    tls: {mode: AUTO_PASSTHROUGH}\n",
    ));
}

#[test]
fn service_entry_rules() {
    let ports = "  ports: [{number: 80, name: http, protocol: HTTP}]\n";
    refused(&[
        (
            se(&format!(
                "  hosts: [\"*.example.com\"]\n{ports}  resolution: DNS\n"
            )),
            "spec.hosts[0]",
            "hosts must be FQDN or contain only prefix wildcards if no endpoints are provided \
             for resolution mode DNS, domain name \"*.example.com\" invalid (label \"*\" invalid)",
        ),
        (
            se(&format!(
                "  hosts: [a.example.com]\n{ports}  resolution: DNS_ROUND_ROBIN\n  endpoints: [{{address: 10.0.0.1}}, {{address: 10.0.0.2}}]\n"
            )),
            "spec.endpoints",
            "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN",
        ),
        (
            se(&format!(
                "  hosts: [a.example.com]\n{ports}  resolution: DYNAMIC_DNS\n"
            )),
            "spec.hosts[0]",
            "host must be wildcarded for resolution mode DYNAMIC_DNS",
        ),
        (
            se(
                "  hosts: [\"*.example.com\"]\n  ports: [{number: 9000, name: tcp, protocol: TCP}]\n  resolution: DYNAMIC_DNS\n",
            ),
            "spec.ports[0].protocol",
            "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type \
             DYNAMIC_DNS",
        ),
        (
            se(&format!(
                "  hosts: [a.example.com]\n{ports}  resolution: STATIC\n  workloadSelector: {{labels: {{app: \"*\"}}}}\n"
            )),
            "spec.workloadSelector.labels.app",
            "wildcard is not supported in selector: \"app=*\"",
        ),
        (
            se(
                "  hosts: [a.example.com]\n  ports: [{number: 80, name: http}, {number: 80, name: web}]\n",
            ),
            "spec.ports[1].number",
            "service entry port 80 already defined",
        ),
        (
            se("  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: SCTP}]\n"),
            "spec.ports[0].protocol",
            "unsupported protocol: SCTP: use one of HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, \
             HTTP_PROXY, MONGO, MYSQL, REDIS, TCP, TLS, UDP",
        ),
        (
            se(&format!(
                "  hosts: [a.example.com]\n{ports}  resolution: STATIC\n  endpoints: [{{address: \"unix:///run/a.sock\", ports: {{http: 80}}}}]\n"
            )),
            "spec.endpoints[0].ports",
            "unix endpoint unix:///run/a.sock must not include ports",
        ),
        (
            se(&format!(
                "  hosts: [a.example.com]\n{ports}  exportTo: [\"~\", \"*\"]\n"
            )),
            "spec.exportTo[0]",
            "cannot export service entry to no one (~) and someone",
        ),
    ]);
    let file = accepted(&se(&format!(
        "  hosts: [\"*a.example.com\"]\n{ports}  resolution: STATIC\n  workloadSelector: {{}}\n"
    )));
    assert_eq!(
        warnings_of(&file),
        [
            "spec.workloadSelector: service entry: workload selector specified without labels, \
             will be applied to all services in namespace",
            "spec.hosts[0]: partial wildcard \"*a.example.com\" not allowed",
        ]
    );
    accepted(&se(&format!(
        "  hosts: [a.example.com]\n{ports}  resolution: DNS\n  endpoints: [{{address: a-1.example.com}}, {{address: 10.0.0.1}}]\n  exportTo: [\"~\"]\n"
    )));
    accepted(&se(
        "  hosts: [\"*.example.com\"]\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  resolution: DYNAMIC_DNS\n",
    ));
}

#[test]
fn workload_entry_rules() {
    refused(&[
        (
            we("  labels: {app: a}\n"),
            "spec.address",
            "address is required: set the endpoint's IP address",
        ),
        (
            we("  address: bad_name\n"),
            "spec.address",
            "endpoint address \"bad_name\" is not a valid FQDN or an IP address",
        ),
        (
            we("  address: 10.0.0.1\n  ports: {http: 70000}\n"),
            "spec.ports.http",
            "port number 70000 must be in the range 1..65535",
        ),
        (
            we("  address: 10.0.0.1\n  labels: {app: \"a b\"}\n"),
            "spec.labels.app",
            "invalid tag value: \"a b\"",
        ),
    ]);
    accepted(&we(
        "  address: vm-1.example.com\n  ports: {http: 8080}\n  labels: {app: a}\n  weight: 3\n",
    ));
    let file = accepted(&we("  network: vpc-1\n"));
    assert_eq!(
        warnings_of(&file),
        ["spec.address: address is unset with network \"vpc-1\""]
    );
}

/// A service with a DNS-named endpoint is legal Istio; routing to it is
/// refused (the kernel path connects to IP addresses), only then.
#[test]
fn named_endpoints_are_refused_only_when_routed() {
    let service = se(
        "  hosts: [a.example.com]\n  addresses: [127.100.0.9]\n  ports: [{number: 9000, name: tcp, protocol: TCP}]\n  resolution: DNS\n  endpoints: [{address: backend.example.com}]\n",
    );
    let files = |texts: &[&str]| -> Vec<RulesFile> {
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                parse_file_all(Path::new(&format!("rules/{i}.yaml")), text)
                    .unwrap_or_else(|errors| panic!("file {i}: {errors:?}"))
            })
            .collect()
    };
    let (model, _) = resolve_all(&files(&[&service]));
    assert!(model.is_ok(), "unused: fine: {model:?}");
    let route =
        vs("  hosts: [a.example.com]\n  tcp:\n  - route: [{destination: {host: a.example.com}}]\n");
    let (model, _) = resolve_all(&files(&[&service, &route]));
    let errors = model.expect_err("routed: refused");
    assert_eq!(
        errors
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        [
            "endpoint backend.example.com of a.example.com (ServiceEntry default/r (rules/0.yaml \
          document 1)) is not an IP address: the kernel path connects to IP addresses and does \
          not resolve names; list IP endpoints"
        ]
    );
}

/// Short names are qualified with the writer's namespace, as Istio's
/// `ResolveShortnameToFQDN`; ServiceEntry hosts are taken as written.
#[test]
fn short_host_names_are_qualified_with_the_namespace() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  addresses: [127.100.0.7]
  ports: [{number: 9080, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  tcp:
  - route: [{destination: {host: reviews, subset: v1}}]
";
    let file = accepted(text);
    let (model, warnings) = resolve_all(&[file]);
    let model = model.unwrap_or_else(|errors| panic!("{errors:?}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(model.routes.len(), 1, "{model:?}");
    assert_eq!(
        model.routes[0].destinations[0].host, "reviews.default.svc.cluster.local",
        "reviews in namespace default is reviews.default.svc.cluster.local"
    );
    assert_eq!(
        model.routes[0].destinations[0].endpoints.len(),
        1,
        "the short-named DestinationRule applies"
    );
}

/// Resolve-stage warnings come with the model.
#[test]
fn subsets_that_select_no_endpoint_warn() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a}
spec:
  hosts: [a.example.com]
  addresses: [127.100.0.8]
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a}
spec:
  host: a.example.com
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [a.example.com]
  tcp:
  - route:
    - {destination: {host: a.example.com, subset: v1}, weight: 90}
    - {destination: {host: a.example.com, subset: v2}, weight: 10}
";
    let (model, warnings) = resolve_all(&[accepted(text)]);
    assert!(model.is_ok(), "{model:?}");
    let warnings: Vec<String> = warnings.iter().map(Warning::to_string).collect();
    assert_eq!(
        warnings,
        ["rules/r.yaml: document 3 (VirtualService default/a): \
          spec.tcp[0].route[1].destination.subset: subset v2 of a.example.com selects no \
          endpoint (IST0173): its connections will be refused; check the subset's labels \
          against the endpoints' (line 26)"]
    );
}

/// Thousands of services, each with its VirtualService and DestinationRule, plus a
/// wildcard DestinationRule: each route finds its own service and rule (hosts are
/// looked up by name, not by a walk over every service per route).
#[test]
fn many_services_each_route_to_their_own() {
    let doc = |kind: &str, name: String, spec: String| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n{spec}"
        )
    };
    let mut text = String::new();
    for i in 0..3000_u16 {
        let host = format!("svc-{i}.bench.local");
        text.push_str(&doc(
            "ServiceEntry",
            format!("svc-{i}"),
            format!(
                "  hosts: [{host}]\n  addresses: [127.101.{}.{}]\n  ports: [{{number: 9000, name: tcp, protocol: TCP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {}}}}}]\n",
                i / 250,
                i % 250 + 1,
                10_000 + i
            ),
        ));
        text.push_str(&doc(
            "VirtualService",
            format!("svc-{i}"),
            format!("  hosts: [{host}]\n  tcp:\n  - route:\n    - destination: {{host: {host}}}\n"),
        ));
        if i.is_multiple_of(2) {
            text.push_str(&doc(
                "DestinationRule",
                format!("svc-{i}"),
                format!("  host: {host}\n  trafficPolicy: {{loadBalancer: {{simple: RANDOM}}}}\n"),
            ));
        }
    }
    text.push_str(&doc(
        "DestinationRule",
        "wildcard".into(),
        "  host: \"*.bench.local\"\n  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}\n".into(),
    ));
    let (model, _) = resolve_all(&[accepted(&text)]);
    let model = model.expect("resolves");
    assert_eq!(model.routes.len(), 3000);
    for route in &model.routes {
        let i: u16 = route
            .service_host
            .strip_prefix("svc-")
            .and_then(|h| h.strip_suffix(".bench.local"))
            .and_then(|n| n.parse().ok())
            .expect("a generated host");
        let endpoint = &route.destinations[0].endpoints[0];
        assert_eq!(endpoint.addr.port(), 10_000 + i, "{}", route.key);
        let expected = if i.is_multiple_of(2) {
            crate::model::Selection::Random
        } else {
            crate::model::Selection::SourceHash
        };
        assert_eq!(route.selection, expected, "{}", route.key);
    }
}

/// Go's YAML reads `001:db8::` in a flow list as a string (one of Istio's
/// own fixtures); libyaml refuses the `:` before `]` unless the scalar is
/// quoted, which the parse does for it, keeping the lines.
#[test]
fn flow_scalars_ending_in_a_colon_are_strings_as_in_go() {
    let text = se(
        "  hosts: [example.com]\n  addresses: [1.2.3.4, 001:db8::]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n  exportTo: [bad/ns]\n",
    );
    let errors = errors_of(&text);
    assert_eq!(
        errors.iter().map(|e| e.line).collect::<Vec<_>>(),
        [Some(9)],
        "the lines are those of the text as written: {errors:?}"
    );
    let file = accepted(&text.replace("  exportTo: [bad/ns]\n", ""));
    match file.resources.as_slice() {
        [Resource::ServiceEntry(entry)] => assert_eq!(
            entry.addresses,
            [
                "1.2.3.4".parse::<std::net::IpAddr>().unwrap(),
                "1:db8::".parse().unwrap()
            ]
        ),
        other => panic!("expected one ServiceEntry, got {other:?}"),
    }
}

/// Resolves one file of these documents: the model's errors (`Err`) or the
/// warnings (`Ok`), each as `field: message`.
fn resolve_one(documents: &[String]) -> Result<Vec<String>, Vec<String>> {
    let (model, warnings) = resolve_all(&[accepted(&documents.join("---\n"))]);
    let render = |field: &dyn std::fmt::Display, message: &str| format!("{field}: {message}");
    match model {
        Ok(_) => Ok(warnings
            .iter()
            .map(|w| render(&w.field, &w.message))
            .collect()),
        Err(errors) => Err(errors
            .iter()
            .map(|e| render(&e.field, &e.message))
            .collect()),
    }
}

/// A tcp match whose port an earlier rule routes is never used: Istio's
/// `istioctl analyze` says so (IST0131, or IST0130 for a rule none of whose
/// matches is used) and applies the rules; so do we.
#[test]
fn shadowed_tcp_matches_warn_as_in_istio() {
    let service = se(
        "  hosts: [a.example.com]\n  addresses: [127.100.0.9]\n  ports: [{number: 9000, name: tcp-a, protocol: TCP}, {number: 9001, name: tcp-b, protocol: TCP}]\n  resolution: STATIC\n  endpoints: [{address: 10.0.0.1}]\n",
    );
    let dest = "{destination: {host: a.example.com, port: {number: 9000}}}";
    let mesh = vs(&format!(
        "  hosts: [a.example.com]\n  tcp:\n  - match: [{{port: 9000}}]\n    route: [{dest}]\n  - match: [{{port: 9000}}, {{port: 9001}}]\n    route: [{dest}]\n  - match: [{{port: 9001}}]\n    route: [{dest}]\n"
    ));
    assert_eq!(
        resolve_one(&[service.clone(), mesh]),
        Ok(vec![
            "spec.tcp[1].match[0].port: VirtualService rule tcp[1] match 0 is not used \
             (duplicate/overlapping match in rule tcp[0]) (IST0131): port 9000 is already routed \
             by tcp[0] (first match wins)"
                .to_owned(),
            "spec.tcp[2]: virtualService rule #2 not used (IST0130): earlier rules route all its \
             ports"
                .to_owned(),
        ])
    );
    let gateway = gw(
        "  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n",
    );
    let bound = document(
        "VirtualService",
        &format!(
            "  hosts: [\"*\"]\n  gateways: [r]\n  tcp:\n  - match: [{{port: 31400}}]\n    route: [{dest}]\n  - match: [{{port: 31400}}]\n    route: [{dest}]\n"
        ),
    )
    .replace("name: r}", "name: bound}");
    assert_eq!(
        resolve_one(&[service, gateway, bound]),
        Ok(vec![
            "spec.tcp[1]: virtualService rule #1 not used on Gateway default/r (IST0130): \
             earlier rules route all its ports"
                .to_owned()
        ])
    );
}

/// A destination without a port, to a service of several ports: an error
/// of `istioctl analyze` (IST0112), whatever port the rule routes.
#[test]
fn destinations_need_a_port_when_the_service_has_several() {
    let service = se(
        "  hosts: [a.example.com]\n  addresses: [127.100.0.9]\n  ports: [{number: 9000, name: tcp-a, protocol: TCP}, {number: 9001, name: tcp-b, protocol: TCP}]\n  resolution: STATIC\n  endpoints: [{address: 10.0.0.1}]\n",
    );
    let route = |destination: &str| {
        vs(&format!(
            "  hosts: [a.example.com]\n  tcp:\n  - match: [{{port: 9000}}]\n    route: [{{destination: {destination}}}]\n"
        ))
        .replace("name: r}", "name: route}")
    };
    assert_eq!(
        resolve_one(&[service.clone(), route("{host: a.example.com}")]),
        Err(vec![
            "spec.tcp[0].route[0].destination: IST0112: This VirtualService routes to a service \
             \"a.example.com\" that exposes multiple ports [9000 9001]. Specifying a port in the \
             destination is required to disambiguate: set destination.port.number (this route's \
             port is 9000)"
                .to_owned()
        ])
    );
    assert_eq!(
        resolve_one(&[
            service,
            route("{host: a.example.com, port: {number: 9000}}")
        ]),
        Ok(vec![])
    );
}

/// Servers of one Gateway on one port, one TCP and one HTTP: refused with
/// Istio's code for conflicting gateway servers (IST0145).
#[test]
fn a_port_serves_tcp_or_http_not_both() {
    let gateway = gw(
        "  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 8080, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [a.example.com]\n",
    );
    assert_eq!(
        resolve_one(&[gateway]),
        Err(vec![
            "spec.servers[1].port: IST0145: Conflict with spec.servers[0] of this gateway \
             (workload selector istio=ingressgateway, port 8080): a port takes TCP or HTTP, not \
             both (HTTP here, TCP there); use another port for one of them"
                .to_owned()
        ])
    );
}
