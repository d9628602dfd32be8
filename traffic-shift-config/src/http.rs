//! VirtualService `http[]` and `tls[]` rules: modelled and checked as
//! Istio's `validateHTTPRoute` / `validateTLSRoute` do
//! (`istio/istio` `pkg/config/validation/virtualservice.go`,
//! `validation.go`). `resolve` turns `http` rules into the listeners of
//! the L7 proxy (`traffic-shift-proxy`), which serves them per request; it
//! refuses `tls` rules (nothing reads SNI yet).

use std::{collections::BTreeMap, time::Duration};

use super::{
    check::Check,
    common::{Labels, RouteDestination},
    dto,
    error::FieldPath,
    names::{host_matches, is_dns1123_label_any_case, validate_domain},
    values,
};

pub use super::dto::DerivePort;

/// `exact`, `prefix` or `regex` (RE2); `Any` is `{}`: for `headers`,
/// `queryParams` and `withoutHeaders` "present", elsewhere no condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
    Any,
}

/// One `http[]` rule.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpRule {
    pub name: Option<String>,
    /// OR'ed; empty: every request.
    pub matches: Vec<HttpMatch>,
    pub route: Vec<HttpRouteDestination>,
    pub redirect: Option<HttpRedirect>,
    pub direct_response: Option<DirectResponse>,
    pub delegate: Option<Delegate>,
    pub rewrite: Option<Rewrite>,
    pub timeout: Option<Duration>,
    pub retries: Option<Retries>,
    pub fault: Option<Fault>,
    /// `mirror`, with `mirrorPercentage` (or the deprecated
    /// `mirrorPercent`).
    pub mirror: Option<Mirror>,
    /// `mirrors`: not with `mirror`.
    pub mirrors: Vec<Mirror>,
    pub cors_policy: Option<CorsPolicy>,
    pub headers: Headers,
}

/// One `match[]` entry: its fields are AND'ed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpMatch {
    pub name: Option<String>,
    pub uri: Option<StringMatch>,
    pub scheme: Option<StringMatch>,
    pub method: Option<StringMatch>,
    pub authority: Option<StringMatch>,
    pub headers: BTreeMap<String, StringMatch>,
    pub query_params: BTreeMap<String, StringMatch>,
    pub without_headers: BTreeMap<String, StringMatch>,
    pub ignore_uri_case: bool,
    pub port: Option<u16>,
    pub source_labels: Labels,
    /// Overrides the `VirtualService`'s `gateways` for this match.
    pub gateways: Vec<String>,
    pub source_namespace: Option<String>,
    pub stat_prefix: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRouteDestination {
    pub destination: RouteDestination,
    /// Header changes for requests to this destination only.
    pub headers: Headers,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    pub request: HeaderOperations,
    pub response: HeaderOperations,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderOperations {
    pub set: BTreeMap<String, String>,
    pub add: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRedirect {
    pub uri: Option<String>,
    pub prefix_rewrite: Option<String>,
    pub authority: Option<String>,
    pub port: Option<RedirectPort>,
    pub scheme: Option<String>,
    /// Default 301.
    pub redirect_code: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectPort {
    Number(u16),
    Derive(DerivePort),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectResponse {
    pub status: u16,
    pub body: Option<DirectBody>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectBody {
    String(String),
    /// Base64, as written.
    Bytes(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delegate {
    pub name: String,
    /// Absent: the `VirtualService`'s namespace.
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    pub uri: Option<String>,
    pub authority: Option<String>,
    /// `uriRegexRewrite`: `(match, rewrite)`.
    pub uri_regex: Option<(String, String)>,
}

/// `Default`: no retries (`attempts: 0`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retries {
    /// 0 disables retries.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    /// `retryOn`, split at commas.
    pub retry_on: Vec<String>,
    pub retry_remote_localities: Option<bool>,
    pub retry_ignore_previous_hosts: Option<bool>,
    pub backoff: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FaultDelay {
    pub delay: DelayKind,
    /// Of the requests, 0.0..=100.0; absent: all of them.
    pub percentage: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelayKind {
    Fixed(Duration),
    /// Parsed; Istio refuses it ("not supported yet"), so do we.
    Exponential(Duration),
}

#[derive(Clone, Debug, PartialEq)]
pub struct FaultAbort {
    /// `None`: Istio warns "abort configured, but error type not set".
    pub error: Option<AbortError>,
    pub percentage: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortError {
    HttpStatus(u16),
    GrpcStatus(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Mirror {
    /// `weight` is always `None` here.
    pub destination: RouteDestination,
    /// Of the requests, 0.0..=100.0; absent: all of them.
    pub percentage: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorsPolicy {
    pub allow_origins: Vec<StringMatch>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Option<Duration>,
    pub allow_credentials: Option<bool>,
}

/// One `tls[]` rule. Modelled and checked; `resolve` refuses it (the
/// kernel path cannot read SNI yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsRule {
    pub matches: Vec<TlsMatch>,
    pub route: Vec<RouteDestination>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsMatch {
    pub sni_hosts: Vec<String>,
    pub destination_subnets: Vec<String>,
    pub port: Option<u16>,
    pub source_labels: Labels,
    pub gateways: Vec<String>,
    pub source_namespace: Option<String>,
}

/// What the rules of a `VirtualService` need to know of it.
pub(super) struct Context<'a> {
    pub hosts: &'a [String],
    /// Bound to gateways only (`gateways` set, without `mesh`).
    pub gateway_only: bool,
    /// No hosts: a delegate.
    pub delegate: bool,
}

/// `spec.http[i]`.
pub(super) fn http_rule(
    cx: &mut Check,
    context: &Context,
    i: usize,
    rule: dto::HttpRoute,
) -> Option<HttpRule> {
    let base = FieldPath::parse(&format!("spec.http[{i}]"));
    let errors_before = cx.errors.len();
    conflicts(cx, &base, context.delegate, &rule);

    let matches: Vec<HttpMatch> = rule
        .matches
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(k, m)| http_match(cx, context, &base.key("match").index(k), m))
        .collect();

    let headers = header_changes(cx, &base.key("headers"), rule.headers);
    let cors_policy = rule
        .cors_policy
        .map(|cors| cors_policy(cx, &base.key("corsPolicy"), cors));
    let fault = rule
        .fault
        .and_then(|fault| fault_injection(cx, &base.key("fault"), fault));

    let (mirror, mirrors) = http_mirrors(
        cx,
        &base,
        rule.mirror,
        rule.mirrors,
        rule.mirror_percent,
        rule.mirror_percentage,
    );

    let redirect = rule
        .redirect
        .and_then(|redirect| http_redirect(cx, &base.key("redirect"), redirect, &matches));
    let direct_response = rule
        .direct_response
        .map(|response| direct_response(cx, &base.key("directResponse"), response));
    let retries = rule
        .retries
        .map(|retries| http_retries(cx, &base.key("retries"), retries));
    let rewrite = rule
        .rewrite
        .and_then(|rewrite| http_rewrite(cx, &base.key("rewrite"), rewrite));
    authority_rewrite(cx, &base, rewrite.as_ref(), &headers);

    let mut route = Vec::new();
    let mut weights = Vec::new();
    for (j, destination) in rule.route.unwrap_or_default().into_iter().enumerate() {
        let path = base.key("route").index(j);
        let headers = header_changes(cx, &path.key("headers"), destination.headers);
        let weight = cx.weight(&path, destination.weight);
        weights.push(weight);
        let Some(written) = destination.destination else {
            cx.error(path, "destination is required");
            continue;
        };
        if let Some(mut destination) = cx.destination(&path.key("destination"), written) {
            destination.weight = weight.ok().flatten();
            route.push(HttpRouteDestination {
                destination,
                headers,
            });
        }
    }
    cx.total_weight(&base.key("route"), &weights);

    let timeout = rule
        .timeout
        .and_then(|timeout| cx.ok(base.key("timeout"), values::duration(&timeout)));
    let delegate = rule.delegate.map(|delegate| Delegate {
        name: delegate.name.unwrap_or_default(),
        namespace: delegate.namespace.filter(|namespace| !namespace.is_empty()),
    });
    if let Some(delegate) = &delegate {
        if delegate.name.is_empty() {
            cx.error(
                base.key("delegate").key("name"),
                "delegate name is required: name the delegate VirtualService",
            );
        }
        if let Some(namespace) = &delegate.namespace
            && !is_dns1123_label_any_case(namespace)
        {
            cx.error(
                base.key("delegate").key("namespace"),
                format!("invalid delegate namespace: {namespace:?}"),
            );
        }
    }

    (cx.errors.len() == errors_before).then_some(HttpRule {
        name: rule.name,
        matches,
        route,
        redirect,
        direct_response,
        delegate,
        rewrite,
        timeout,
        retries,
        fault,
        mirror,
        mirrors,
        cors_policy,
        headers,
    })
}

/// `mirror` (with `mirrorPercentage` / `mirrorPercent`) and `mirrors`.
fn http_mirrors(
    cx: &mut Check,
    base: &FieldPath,
    mirror: Option<dto::Destination>,
    written_mirrors: Option<Vec<dto::HttpMirrorPolicy>>,
    mirror_percent: Option<i64>,
    mirror_percentage: Option<dto::Percent>,
) -> (Option<Mirror>, Vec<Mirror>) {
    let mut mirrors = Vec::new();
    if mirror.is_some() && written_mirrors.is_some() {
        cx.error(
            base.key("mirrors"),
            "HTTP route cannot contain both mirror and mirrors",
        );
    }
    let mut percentage_of_mirror = None;
    if let Some(percent) = mirror_percent {
        cx.warn(
            base.key("mirrorPercent"),
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
        if percent > 100 {
            cx.error(
                base.key("mirrorPercent"),
                format!("mirror_percent must have a max value of 100 (it has {percent})"),
            );
        } else if percent < 0 {
            cx.error(
                base.key("mirrorPercent"),
                format!("mirror_percent must have a min value of 0 (it has {percent})"),
            );
        } else {
            percentage_of_mirror = Some(f64::from(u8::try_from(percent).unwrap_or(100)));
        }
    }
    if let Some(percentage) = mirror_percentage {
        let value = percentage.value.unwrap_or(0.0);
        let path = base.key("mirrorPercentage").key("value");
        if value > 100.0 {
            cx.error(
                path,
                format!("mirror_percentage must have a max value of 100 (it has {value})"),
            );
        } else if value < 0.0 {
            cx.error(
                path,
                format!("mirror_percentage must have a min value of 0 (it has {value})"),
            );
        } else {
            percentage_of_mirror = Some(value);
        }
    }
    let mirror = mirror.and_then(|mirror| {
        cx.destination(&base.key("mirror"), mirror)
            .map(|destination| Mirror {
                destination,
                percentage: percentage_of_mirror,
            })
    });
    for (k, mirror) in written_mirrors.unwrap_or_default().into_iter().enumerate() {
        let path = base.key("mirrors").index(k);
        let Some(destination) = mirror.destination else {
            cx.error(path, "destination is required for mirrors");
            continue;
        };
        let destination = cx.destination(&path.key("destination"), destination);
        let percentage = mirror.percentage.and_then(|percentage| {
            let value = percentage.value.unwrap_or(0.0);
            let path = path.key("percentage").key("value");
            if value > 100.0 {
                cx.error(
                    path,
                    format!("mirror percentage must have a max value of 100 (it has {value})"),
                );
                None
            } else if value < 0.0 {
                cx.error(
                    path,
                    format!("mirror percentage must have a min value of 0 (it has {value})"),
                );
                None
            } else {
                Some(value)
            }
        });
        mirrors.extend(destination.map(|destination| Mirror {
            destination,
            percentage,
        }));
    }

    (mirror, mirrors)
}

/// Istio's `validateHTTPRouteConflict`.
fn conflicts(cx: &mut Check, base: &FieldPath, delegate_vs: bool, rule: &dto::HttpRoute) {
    let name = rule.name.as_deref().unwrap_or_default();
    let has_route = rule.route.as_ref().is_some_and(|route| !route.is_empty());
    if !delegate_vs && rule.delegate.is_some() {
        // A root route: only delegate may be set.
        if rule.redirect.is_some() {
            cx.error(
                base.key("redirect"),
                format!("root HTTP route {name} must not specify redirect"),
            );
        }
        if rule.route.is_some() {
            cx.error(
                base.key("route"),
                format!("root HTTP route {name} must not specify route"),
            );
        }
        return;
    }
    if delegate_vs && rule.delegate.is_some() {
        cx.error(
            base.key("delegate"),
            "delegate HTTP route cannot contain delegate",
        );
    }
    if rule.redirect.is_some() {
        let conflicts = [
            (
                has_route,
                "route",
                "HTTP route cannot contain both route and redirect",
            ),
            (
                rule.fault.is_some(),
                "fault",
                "HTTP route cannot contain both fault and redirect",
            ),
            (
                rule.rewrite.is_some(),
                "rewrite",
                "HTTP route rule cannot contain both rewrite and redirect",
            ),
            (
                rule.direct_response.is_some(),
                "directResponse",
                "HTTP route rule cannot contain both direct_response and redirect",
            ),
        ];
        for (conflict, field, message) in conflicts {
            if conflict {
                cx.error(base.key(field), message);
            }
        }
    } else if rule.direct_response.is_some() {
        let conflicts = [
            (
                has_route,
                "route",
                "HTTP route cannot contain both route and direct_response",
            ),
            (
                rule.fault.is_some(),
                "fault",
                "HTTP route cannot contain both fault and direct_response",
            ),
            (
                rule.rewrite.is_some(),
                "rewrite",
                "HTTP route rule cannot contain both rewrite and direct_response",
            ),
        ];
        for (conflict, field, message) in conflicts {
            if conflict {
                cx.error(base.key(field), message);
            }
        }
    } else if !has_route {
        cx.error(
            base.clone(),
            "HTTP route, redirect or direct_response is required",
        );
    }
}

/// A `StringMatch`; `where_` is Istio's name for it in messages. `uri`
/// may be an empty prefix (Envoy allows it), other fields may not.
fn string_match(
    cx: &mut Check,
    path: &FieldPath,
    written: dto::StringMatch,
    where_: &str,
) -> Option<StringMatch> {
    let set: Vec<&str> = [
        ("exact", written.exact.is_some()),
        ("prefix", written.prefix.is_some()),
        ("regex", written.regex.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if set.len() > 1 {
        cx.error(
            path.key(set[1]),
            format!(
                "{} and {} are both set: a string match is one of exact, prefix or regex",
                set[0], set[1]
            ),
        );
        return None;
    }
    if let Some(exact) = written.exact {
        return Some(StringMatch::Exact(exact));
    }
    if let Some(prefix) = written.prefix {
        if prefix.is_empty() && where_ != "uri" {
            cx.error(
                path.key("prefix"),
                format!("{where_:?}: prefix string match should not be empty"),
            );
            return None;
        }
        return Some(StringMatch::Prefix(prefix));
    }
    if let Some(regex) = written.regex {
        let path = path.key("regex");
        if regex.is_empty() {
            cx.error(
                path,
                format!("{where_:?}: regex string match should not be empty"),
            );
            return None;
        }
        return cx
            .ok(path, values::regex(&regex, where_))
            .map(|()| StringMatch::Regex(regex));
    }
    Some(StringMatch::Any)
}

/// `headers`, `queryParams` or `withoutHeaders` of a match.
fn string_matches(
    cx: &mut Check,
    path: &FieldPath,
    written: Option<BTreeMap<String, Option<dto::StringMatch>>>,
    where_: &str,
) -> BTreeMap<String, StringMatch> {
    let mut matches = BTreeMap::new();
    for (name, written) in written.unwrap_or_default() {
        let path = path.key(&name);
        if where_ != "queryParams"
            && let Err(message) = values::header_match_name(&name)
        {
            cx.error(path.clone(), message);
        }
        let Some(written) = written else {
            if where_ == "withoutHeaders" {
                matches.insert(name, StringMatch::Any);
            } else {
                cx.error(path, format!("header match {name} cannot be null"));
            }
            continue;
        };
        // withoutHeaders: `regex: "*"` is not a regex but "present".
        if where_ == "withoutHeaders" && written.regex.as_deref() == Some("*") {
            matches.insert(name, StringMatch::Any);
            continue;
        }
        if let Some(found) = string_match(cx, &path, written, where_) {
            matches.insert(name, found);
        }
    }
    matches
}

fn http_match(
    cx: &mut Check,
    context: &Context,
    base: &FieldPath,
    m: dto::HttpMatchRequest,
) -> Option<HttpMatch> {
    let errors_before = cx.errors.len();
    let headers = string_matches(cx, &base.key("headers"), m.headers, "headers");
    let without_headers = string_matches(
        cx,
        &base.key("withoutHeaders"),
        m.without_headers,
        "withoutHeaders",
    );
    let query_params = string_matches(cx, &base.key("queryParams"), m.query_params, "queryParams");
    if !context.gateway_only {
        for name in headers.keys().chain(without_headers.keys()) {
            if values::is_jwt_claim(name) {
                cx.error(
                    base.key(if headers.contains_key(name) {
                        "headers"
                    } else {
                        "withoutHeaders"
                    })
                    .key(name),
                    format!(
                        "JWT claim based routing (key: {name}) is only supported for gateway, \
                         found no gateways: bind the VirtualService to a Gateway"
                    ),
                );
            }
        }
    }
    let single = |cx: &mut Check, field: &str, written: Option<dto::StringMatch>| {
        written.and_then(|written| string_match(cx, &base.key(field), written, field))
    };
    let uri = single(cx, "uri", m.uri);
    let scheme = single(cx, "scheme", m.scheme);
    let method = single(cx, "method", m.method);
    let authority = single(cx, "authority", m.authority);
    let port = m.port.and_then(|port| cx.port(base.key("port"), port));
    let source_labels = m.source_labels.unwrap_or_default();
    cx.labels(&base.key("sourceLabels"), &source_labels);
    let gateways = m.gateways.unwrap_or_default();
    cx.gateway_names(&base.key("gateways"), &gateways);
    let source_namespace = m.source_namespace.filter(|namespace| !namespace.is_empty());
    if let Some(namespace) = &source_namespace
        && !is_dns1123_label_any_case(namespace)
    {
        cx.error(
            base.key("sourceNamespace"),
            format!("sourceNamespace match {namespace} is invalid"),
        );
    }
    (cx.errors.len() == errors_before).then(|| HttpMatch {
        name: m.name,
        uri,
        scheme,
        method,
        authority,
        headers,
        query_params,
        without_headers,
        ignore_uri_case: m.ignore_uri_case.unwrap_or(false),
        port,
        source_labels,
        gateways,
        source_namespace,
        stat_prefix: m.stat_prefix,
    })
}

/// `headers` of a rule or of a route destination.
fn header_changes(cx: &mut Check, base: &FieldPath, written: Option<dto::Headers>) -> Headers {
    let Some(written) = written else {
        return Headers::default();
    };
    Headers {
        request: header_operations(cx, &base.key("request"), written.request, true),
        response: header_operations(cx, &base.key("response"), written.response, false),
    }
}

fn header_operations(
    cx: &mut Check,
    base: &FieldPath,
    written: Option<dto::HeaderOperations>,
    request: bool,
) -> HeaderOperations {
    let Some(written) = written else {
        return HeaderOperations::default();
    };
    let set = written.set.unwrap_or_default();
    let add = written.add.unwrap_or_default();
    let remove = written.remove.unwrap_or_default();
    for (operation, map) in [("set", &set), ("add", &add)] {
        for (name, value) in map {
            let path = base.key(operation).key(name);
            let name_check = if request {
                values::request_header_write(name)
            } else {
                values::header_operation(name)
            };
            if let Err(message) = name_check.and_then(|()| values::header_value(value)) {
                cx.error(path, message);
            }
        }
    }
    for (k, name) in remove.iter().enumerate() {
        if let Err(message) = values::header_operation(name) {
            cx.error(base.key("remove").index(k), message);
        }
    }
    HeaderOperations { set, add, remove }
}

/// Istio's `validateAuthorityRewrite`: the authority is rewritten in one
/// place only.
fn authority_rewrite(
    cx: &mut Check,
    base: &FieldPath,
    rewrite: Option<&Rewrite>,
    headers: &Headers,
) {
    let mut current = rewrite.and_then(|rewrite| rewrite.authority.clone());
    for (operation, map) in [("set", &headers.request.set), ("add", &headers.request.add)] {
        for (name, value) in map {
            if !(name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")) {
                continue;
            }
            if let Some(have) = &current {
                cx.error(
                    base.key("headers").key("request").key(operation).key(name),
                    format!(
                        "authority header cannot be set multiple times: have {have:?}, \
                         attempting to set {value:?}"
                    ),
                );
                return;
            }
            current = Some(value.clone());
        }
    }
}

fn cors_policy(cx: &mut Check, base: &FieldPath, cors: dto::CorsPolicy) -> CorsPolicy {
    let mut allow_origins = Vec::new();
    for (k, origin) in cors
        .allow_origins
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let path = base.key("allowOrigins").index(k);
        let empty = [&origin.exact, &origin.prefix, &origin.regex]
            .iter()
            .all(|value| value.as_deref().unwrap_or_default().is_empty());
        if empty {
            cx.error(
                path,
                "'' is not a valid match type for CORS allow origins: set exact, prefix or regex",
            );
            continue;
        }
        allow_origins.extend(string_match(cx, &path, origin, "corsPolicy.allowOrigins"));
    }
    for (k, origin) in cors
        .allow_origin
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        cx.warn(
            base.key("allowOrigin").index(k),
            "allowOrigin is deprecated: use allowOrigins: [{exact: ...}]",
        );
        allow_origins.push(StringMatch::Exact(origin));
    }
    let allow_methods = cors.allow_methods.unwrap_or_default();
    for (k, method) in allow_methods.iter().enumerate() {
        if !matches!(
            method.as_str(),
            "GET"
                | "HEAD"
                | "POST"
                | "PUT"
                | "PATCH"
                | "DELETE"
                | "CONNECT"
                | "OPTIONS"
                | "TRACE"
                | "*"
        ) {
            cx.error(
                base.key("allowMethods").index(k),
                format!("{method:?} is not a supported HTTP method"),
            );
        }
    }
    let allow_headers = cors.allow_headers.unwrap_or_default();
    let expose_headers = cors.expose_headers.unwrap_or_default();
    for (field, names) in [
        ("allowHeaders", &allow_headers),
        ("exposeHeaders", &expose_headers),
    ] {
        for (k, name) in names.iter().enumerate() {
            let path = base.key(field).index(k);
            if name.is_empty() {
                cx.error(path, "header name cannot be empty");
            } else if name != "*" && values::header_match_name(name).is_err() {
                cx.error(
                    path,
                    format!("header name {name} is not a valid header name"),
                );
            }
        }
    }
    let max_age = cors.max_age.and_then(|text| {
        let duration = cx.ok(base.key("maxAge"), values::duration(&text))?;
        if duration.subsec_nanos() != 0 {
            cx.error(
                base.key("maxAge"),
                "max_age duration is accurate only to seconds precision",
            );
        }
        Some(duration)
    });
    CorsPolicy {
        allow_origins,
        allow_methods,
        allow_headers,
        expose_headers,
        max_age,
        allow_credentials: cors.allow_credentials,
    }
}

fn fault_percentage(
    cx: &mut Check,
    base: &FieldPath,
    written: Option<dto::Percent>,
) -> Option<f64> {
    let value = written?.value.unwrap_or(0.0);
    cx.ok(
        base.key("percentage").key("value"),
        values::percentage(value),
    )
}

fn fault_injection(
    cx: &mut Check,
    base: &FieldPath,
    fault: dto::HttpFaultInjection,
) -> Option<Fault> {
    if fault.delay.is_none() && fault.abort.is_none() {
        cx.error(
            base.clone(),
            "HTTP fault injection must have an abort and/or a delay",
        );
        return None;
    }
    let delay = fault.delay.and_then(|delay| {
        let base = base.key("delay");
        let mut percentage = fault_percentage(cx, &base, delay.percentage);
        if let Some(percent) = delay.percent {
            cx.warn(
                base.key("percent"),
                "percent is deprecated: use percentage: {value: ...}",
            );
            percentage = percentage.or_else(|| {
                cx.ok(base.key("percent"), values::percent(percent))
                    .map(f64::from)
            });
        }
        let kind = match (delay.fixed_delay, delay.exponential_delay) {
            (Some(_), Some(_)) => {
                cx.error(
                    base.key("exponentialDelay"),
                    "set either fixedDelay or exponentialDelay, not both",
                );
                None
            }
            (Some(fixed), None) => cx
                .ok(base.key("fixedDelay"), values::duration(&fixed))
                .map(DelayKind::Fixed),
            (None, Some(exponential)) => {
                let duration = cx.ok(base.key("exponentialDelay"), values::duration(&exponential));
                cx.error(
                    base.key("exponentialDelay"),
                    "exponentialDelay not supported yet",
                );
                duration.map(DelayKind::Exponential)
            }
            (None, None) => {
                cx.error(
                    base.clone(),
                    "delay needs fixedDelay: how long to delay requests",
                );
                None
            }
        };
        kind.map(|delay| FaultDelay { delay, percentage })
    });
    let abort = fault
        .abort
        .map(|abort| fault_abort(cx, &base.key("abort"), abort));
    Some(Fault { delay, abort })
}

fn fault_abort(cx: &mut Check, base: &FieldPath, abort: dto::FaultAbort) -> FaultAbort {
    let percentage = fault_percentage(cx, base, abort.percentage);
    let set = [
        abort.http_status.is_some(),
        abort.grpc_status.is_some(),
        abort.http2_error.is_some(),
    ];
    if set.iter().filter(|set| **set).count() > 1 {
        cx.error(
            base.clone(),
            "set one of httpStatus, grpcStatus or http2Error",
        );
    }
    let error = if let Some(status) = abort.http_status {
        match u16::try_from(status) {
            Ok(status) if (200..=600).contains(&status) => Some(AbortError::HttpStatus(status)),
            _ => {
                cx.error(
                    base.key("httpStatus"),
                    format!("HTTP status {status} is not in range 200-599"),
                );
                None
            }
        }
    } else if let Some(status) = abort.grpc_status {
        if values::GRPC_STATUS.contains(&status.as_str()) {
            Some(AbortError::GrpcStatus(status))
        } else {
            cx.error(
                base.key("grpcStatus"),
                format!(
                    "gRPC status {status:?} is not supported. See \
                     https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list \
                     of supported codes, for example 'NOT_FOUND'"
                ),
            );
            None
        }
    } else if abort.http2_error.is_some() {
        cx.error(
            base.key("http2Error"),
            "HTTP/2 abort fault injection not supported yet",
        );
        None
    } else {
        cx.warn(base.clone(), "abort configured, but error type not set");
        None
    };
    FaultAbort { error, percentage }
}

fn http_redirect(
    cx: &mut Check,
    base: &FieldPath,
    redirect: dto::HttpRedirect,
    matches: &[HttpMatch],
) -> Option<HttpRedirect> {
    let uri = redirect.uri.filter(|uri| !uri.is_empty());
    let prefix_rewrite = redirect.prefix_rewrite.filter(|prefix| !prefix.is_empty());
    let authority = redirect.authority.filter(|authority| !authority.is_empty());
    let scheme = redirect.scheme.filter(|scheme| !scheme.is_empty());
    let errors_before = cx.errors.len();
    if uri.is_some() && prefix_rewrite.is_some() {
        cx.error(
            base.key("prefixRewrite"),
            "redirect may only specify one of uri or prefix_rewrite",
        );
    }
    if prefix_rewrite.is_some()
        && matches.iter().any(|m| {
            m.uri
                .as_ref()
                .is_some_and(|uri| !matches!(uri, StringMatch::Prefix(_)))
        })
    {
        cx.error(
            base.key("prefixRewrite"),
            "redirect prefix_rewrite requires all URI matches to use prefix match type",
        );
    }
    let port = match (redirect.port, redirect.derive_port) {
        (Some(_), Some(_)) => {
            cx.error(
                base.key("derivePort"),
                "set either port or derivePort, not both",
            );
            None
        }
        (Some(number), None) => cx.port(base.key("port"), number).map(RedirectPort::Number),
        (None, Some(derive)) => Some(RedirectPort::Derive(derive)),
        (None, None) => None,
    };
    if uri.is_none()
        && prefix_rewrite.is_none()
        && authority.is_none()
        && port.is_none()
        && scheme.is_none()
    {
        cx.error(
            base.clone(),
            "redirect must specify URI, authority, scheme, or port",
        );
    }
    let redirect_code = match redirect.redirect_code {
        None | Some(0) => 301,
        Some(code) => match u16::try_from(code) {
            Ok(code) if (300..=399).contains(&code) => code,
            _ => {
                cx.error(
                    base.key("redirectCode"),
                    format!("{code} is not a valid redirect code, must be 3xx"),
                );
                301
            }
        },
    };
    if let Some(scheme) = &scheme
        && scheme != "http"
        && scheme != "https"
    {
        cx.error(
            base.key("scheme"),
            "invalid redirect scheme, must be \"http\" or \"https\"",
        );
    }
    (cx.errors.len() == errors_before).then_some(HttpRedirect {
        uri,
        prefix_rewrite,
        authority,
        port,
        scheme,
        redirect_code,
    })
}

fn direct_response(
    cx: &mut Check,
    base: &FieldPath,
    response: dto::HttpDirectResponse,
) -> DirectResponse {
    let status = response.status.unwrap_or(0);
    let status = match u16::try_from(status) {
        Ok(status) if (200..=600).contains(&status) => status,
        _ => {
            cx.error(
                base.key("status"),
                format!("HTTP status {status} is not in range 200-599"),
            );
            0
        }
    };
    let body = response
        .body
        .and_then(|body| match (body.string, body.bytes) {
            (Some(_), Some(_)) => {
                cx.error(base.key("body"), "set either string or bytes, not both");
                None
            }
            (Some(text), None) => Some(DirectBody::String(text)),
            (None, Some(bytes)) => Some(DirectBody::Bytes(bytes)),
            (None, None) => None,
        });
    let size = match &body {
        Some(DirectBody::String(text)) => text.len(),
        // Base64: three bytes per four characters.
        Some(DirectBody::Bytes(text)) => text.len() / 4 * 3,
        None => 0,
    };
    if size > 1 << 20 {
        cx.error(
            base.key("body"),
            "large direct_responses may impact control plane performance, must be less than 1MB",
        );
    } else if size > 100 << 10 {
        cx.warn(
            base.key("body"),
            "large direct_responses may impact control plane performance",
        );
    }
    DirectResponse { status, body }
}

fn http_retries(cx: &mut Check, base: &FieldPath, retries: dto::HttpRetry) -> Retries {
    let attempts = retries.attempts.unwrap_or(0);
    let attempts = u32::try_from(attempts).unwrap_or_else(|_| {
        cx.error(base.key("attempts"), "attempts cannot be negative");
        0
    });
    let retry_on_text = retries.retry_on.unwrap_or_default();
    if attempts == 0
        && (retries.per_try_timeout.is_some()
            || !retry_on_text.is_empty()
            || retries.retry_remote_localities.is_some())
    {
        cx.error(
            base.key("attempts"),
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    let per_try_timeout = retries
        .per_try_timeout
        .and_then(|text| cx.ok(base.key("perTryTimeout"), values::duration(&text)));
    let backoff = retries
        .backoff
        .and_then(|text| cx.ok(base.key("backoff"), values::duration(&text)));
    let mut retry_on = Vec::new();
    if !retry_on_text.is_empty() {
        for policy in retry_on_text.split(',') {
            match values::retry_on(policy) {
                Ok(()) => retry_on.push(policy.to_owned()),
                Err(message) => cx.error(base.key("retryOn"), message),
            }
        }
    }
    Retries {
        attempts,
        per_try_timeout,
        retry_on,
        retry_remote_localities: retries.retry_remote_localities,
        retry_ignore_previous_hosts: retries.retry_ignore_previous_hosts,
        backoff,
    }
}

fn http_rewrite(cx: &mut Check, base: &FieldPath, rewrite: dto::HttpRewrite) -> Option<Rewrite> {
    let uri = rewrite.uri.filter(|uri| !uri.is_empty());
    let authority = rewrite.authority.filter(|authority| !authority.is_empty());
    if uri.is_some() && rewrite.uri_regex_rewrite.is_some() {
        cx.error(
            base.key("uriRegexRewrite"),
            "rewrite may only contain one of URI or UriRegexRewrite",
        );
        return None;
    }
    if uri.is_none() && rewrite.uri_regex_rewrite.is_none() && authority.is_none() {
        cx.error(
            base.clone(),
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one \
             of URI or UriRegexRewrite may be specified",
        );
        return None;
    }
    let uri_regex = match rewrite.uri_regex_rewrite {
        None => None,
        Some(regex) => {
            let path = base.key("uriRegexRewrite");
            let pattern = regex.pattern.unwrap_or_default();
            let replacement = regex.rewrite.unwrap_or_default();
            if pattern.is_empty() || replacement.is_empty() {
                cx.error(
                    path,
                    "UriRegexRewrite has errors: UriRegexRewrite requires both Rewrite and Match \
                     fields to be specified",
                );
                return None;
            }
            cx.ok(
                path.key("match"),
                values::regex(&pattern, "HTTPRewrite.UriRegexRewrite.Match")
                    .map_err(|message| format!("UriRegexRewrite has errors: {message}")),
            )?;
            Some((pattern, replacement))
        }
    };
    Some(Rewrite {
        uri,
        authority,
        uri_regex,
    })
}

/// `spec.tls[i]`.
pub(super) fn tls_rule(
    cx: &mut Check,
    context: &Context,
    i: usize,
    rule: dto::TlsRoute,
) -> Option<TlsRule> {
    let base = FieldPath::parse(&format!("spec.tls[{i}]"));
    let errors_before = cx.errors.len();
    let written = rule.matches.unwrap_or_default();
    if written.is_empty() {
        cx.error(
            base.key("match"),
            "TLS route must have at least one match condition",
        );
    }
    let mut matches = Vec::new();
    for (k, m) in written.into_iter().enumerate() {
        let path = base.key("match").index(k);
        let sni_hosts = m.sni_hosts.unwrap_or_default();
        if sni_hosts.is_empty() {
            cx.error(
                path.key("sniHosts"),
                "TLS match must have at least one SNI host",
            );
        }
        for (h, sni) in sni_hosts.iter().enumerate() {
            sni_host(cx, context, &path.key("sniHosts").index(h), sni);
        }
        let destination_subnets = m.destination_subnets.unwrap_or_default();
        for (s, subnet) in destination_subnets.iter().enumerate() {
            let _ = cx.ok(
                path.key("destinationSubnets").index(s),
                crate::names::validate_subnet(subnet),
            );
        }
        let port = m
            .port
            .filter(|port| *port != 0)
            .and_then(|port| cx.port(path.key("port"), port));
        let source_labels = m.source_labels.unwrap_or_default();
        cx.labels(&path.key("sourceLabels"), &source_labels);
        let gateways = m.gateways.unwrap_or_default();
        cx.gateway_names(&path.key("gateways"), &gateways);
        matches.push(TlsMatch {
            sni_hosts,
            destination_subnets,
            port,
            source_labels,
            gateways,
            source_namespace: m.source_namespace.filter(|namespace| !namespace.is_empty()),
        });
    }
    let routes = rule.route.unwrap_or_default();
    if routes.is_empty() {
        cx.error(base.key("route"), "TLS route is required");
    }
    let route = cx.route_destinations(&base.key("route"), routes);
    (cx.errors.len() == errors_before).then_some(TlsRule { matches, route })
}

/// Istio's `validateSniHost`: a domain (an IP is only a warning), covered
/// by a host of the `VirtualService`.
fn sni_host(cx: &mut Check, context: &Context, path: &FieldPath, sni: &str) {
    if let Err(message) = validate_domain(sni) {
        if sni.parse::<std::net::IpAddr>().is_ok() {
            cx.warn(
                path.clone(),
                format!(
                    "using an IP address ({sni:?}) goes against SNI spec and most clients do not \
                     support this"
                ),
            );
        } else {
            cx.error(path.clone(), message);
        }
        return;
    }
    if !context.hosts.iter().any(|host| host_subset_of(sni, host)) {
        cx.error(
            path.clone(),
            format!(
                "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: \
                 [{}]",
                context.hosts.join(", ")
            ),
        );
    }
}

/// Istio's `host.Name.SubsetOf`: every name `a` covers is covered by `b`.
fn host_subset_of(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (_, Some("")) => true,
        (Some(a_suffix), Some(b_suffix)) => a_suffix.ends_with(b_suffix),
        (None, Some(_)) => host_matches(b, a),
        (_, None) => a == b,
    }
}

/// Istio's `analyzeUnreachableHTTPRules`, its warnings (IST0130, IST0131):
/// a rule after a rule without matches is never used, as is a match that an
/// earlier rule already has.
pub(super) fn unreachable_http_rules(cx: &mut Check, rules: &[HttpRule]) {
    let mut empty_match_at: Option<usize> = None;
    let mut seen: Vec<(HttpMatch, usize)> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let path = FieldPath::parse(&format!("spec.http[{i}]"));
        let name = rule
            .name
            .as_ref()
            .map_or_else(|| format!("#{i}"), |name| format!("{name:?}"));
        if rule.matches.is_empty() {
            if empty_match_at.is_some() {
                cx.warn(
                    path,
                    format!(
                        "virtualService rule {name} not used (only the last rule can have no \
                         matches)"
                    ),
                );
            }
            empty_match_at = Some(i);
            continue;
        }
        let mut duplicates = 0;
        for (k, m) in rule.matches.iter().enumerate() {
            if empty_match_at.is_some() {
                cx.warn(
                    path.clone(),
                    format!(
                        "virtualService rule {name} not used (route without matches defined before)"
                    ),
                );
                break;
            }
            let unnamed = HttpMatch {
                name: None,
                ..m.clone()
            };
            if let Some((_, earlier)) = seen.iter().find(|(seen, _)| *seen == unnamed) {
                let match_name = m
                    .name
                    .as_ref()
                    .map_or_else(|| format!("#{k}"), |name| format!("{name:?}"));
                let earlier_name = rules[*earlier]
                    .name
                    .as_ref()
                    .map_or_else(|| format!("#{earlier}"), |name| format!("{name:?}"));
                cx.warn(
                    path.key("match").index(k),
                    format!(
                        "virtualService rule {name} match {match_name} is not used \
                         (duplicate/overlapping match in rule {earlier_name})"
                    ),
                );
                duplicates += 1;
            } else {
                seen.push((unnamed, i));
            }
        }
        if duplicates == rule.matches.len() {
            cx.warn(
                path,
                format!("virtualService rule {name} not used (all matches used by prior rules)"),
            );
        }
    }
}
