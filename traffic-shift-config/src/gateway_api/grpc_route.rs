//! `GRPCRoute` (`gateway.networking.k8s.io/v1`, and `v1alpha2`): gRPC
//! requests routed by service, method and headers. A gRPC call is an
//! HTTP/2 `POST` to the path `/<service>/<method>`, so a `GRPCRoute` is
//! checked into the [`HttpRoute`] the translation already serves (its
//! `source.kind` says `GRPCRoute`: listeners' `allowedRoutes.kinds`,
//! `ReferenceGrant`s and status read it), as Istio's controller turns one
//! into a `VirtualService` `http` rule (`createGRPCURIMatch`):
//!
//! | `method` | `Exact` (the default) | `RegularExpression` |
//! |---|---|---|
//! | `service` and `method` | path exact `/<service>/<method>` | path regex `/<service>/<method>` |
//! | `service` alone | path prefix `/<service>/` | path regex `/<service>/.+` |
//! | `method` alone | path regex `/[^/]+/<method>` | path regex `/[^/]+/<method>` |
//!
//! Rules are ordered as the spec says for GRPCRoute: the longer service,
//! then the longer method, then more header matches ([`Precedence`]);
//! routes on one host merge as HTTPRoutes do (age, then name).
//!
//! An HTTPRoute and a GRPCRoute whose hosts intersect on one listener: the
//! spec accepts exactly one there, the older (creation time, then
//! `<namespace>/<name>`); the other is not attached to that listener
//! ([`Index::without_kind_conflicts`]). The same on one Service port
//! (GAMMA).
//!
//! The filters are the spec's for GRPCRoute: `RequestHeaderModifier`,
//! `ResponseHeaderModifier`, `RequestMirror` (rule level), the two header
//! modifiers at backendRef level; `ExtensionRef` is refused as for
//! HTTPRoute. The CRD's CEL rules are refused with the usual error.

use serde::{Deserialize, de::IgnoredAny};

use super::{
    Gateway, HttpRoute, HttpRouteRule, Listener, ParentKind, ParentRef, Precedence, RouteMatch,
    check::{backend_refs, filters, header_matches, parent_refs, route_hostnames},
    dto,
    merge::{age, listener_hosts},
    status::Condition,
    translate::Index,
};
use crate::{
    check::{Check, Checked},
    error::{FieldPath, fp},
    http::{HttpMatch, StringMatch},
    names::host_matches,
    source::Source,
    values,
};

/// `GRPCRoute` `spec`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcRouteSpec {
    pub parent_refs: Option<Vec<dto::ParentRef>>,
    pub hostnames: Option<Vec<String>>,
    pub rules: Option<Vec<GrpcRouteRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcRouteRule {
    #[expect(dead_code, reason = "accepted: a rule's name names nothing here")]
    pub name: Option<String>,
    pub matches: Option<Vec<GrpcRouteMatch>>,
    pub filters: Option<Vec<dto::HttpFilter>>,
    pub backend_refs: Option<Vec<dto::BackendRef>>,
    // Refused: not supported yet.
    pub session_persistence: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcRouteMatch {
    pub method: Option<GrpcMethodMatch>,
    pub headers: Option<Vec<dto::ValueMatch>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcMethodMatch {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub service: Option<String>,
    pub method: Option<String>,
}

/// The filter types of a `GRPCRoute` (`GRPCRouteFilterType`).
const GRPC_FILTERS: [&str; 4] = [
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "ExtensionRef",
];

/// The CRD's limits: at most 16 rules, 8 matches a rule, 16 hostnames.
const MAX_RULES: usize = 16;
const MAX_MATCHES: usize = 8;
const MAX_HOSTNAMES: usize = 16;

/// A `GRPCRoute`, as the [`HttpRoute`] it stands for.
pub(super) fn grpc_route(
    source: Source,
    spec: GrpcRouteSpec,
    generation: i64,
) -> Checked<HttpRoute> {
    let mut cx = Check::new(&source);
    let parents = parent_refs(&mut cx, spec.parent_refs, &source.namespace, true);
    if spec
        .hostnames
        .as_ref()
        .is_some_and(|h| h.len() > MAX_HOSTNAMES)
    {
        cx.error(
            fp!("spec.hostnames"),
            format!("at most {MAX_HOSTNAMES} hostnames (the CRD's maxItems): split the route"),
        );
    }
    let hostnames = route_hostnames(&mut cx, spec.hostnames);
    let written = spec.rules.unwrap_or_default();
    if written.len() > MAX_RULES {
        cx.error(
            fp!("spec.rules"),
            format!("at most {MAX_RULES} rules (the CRD's maxItems): split the route"),
        );
    }
    let mut rules: Vec<HttpRouteRule> = written
        .into_iter()
        .enumerate()
        .map(|(i, rule)| grpc_rule(&mut cx, &fp!("spec.rules[{i}]"), rule, &source.namespace))
        .collect();
    if rules.is_empty() {
        // The spec's default, as for HTTPRoute: every request, no backend.
        rules.push(grpc_rule(
            &mut cx,
            &fp!("spec.rules[0]"),
            GrpcRouteRule {
                name: None,
                matches: None,
                filters: None,
                backend_refs: None,
                session_persistence: None,
            },
            &source.namespace,
        ));
    }
    let warnings = cx.finish()?;
    Ok((
        HttpRoute {
            source,
            generation,
            parents,
            hostnames,
            rules,
        },
        warnings,
    ))
}

/// One rule. A rule without `matches` is one match of every request (so
/// its precedence is a GRPCRoute's, below every method match).
fn grpc_rule(
    cx: &mut Check,
    base: &FieldPath,
    rule: GrpcRouteRule,
    namespace: &str,
) -> HttpRouteRule {
    if rule.session_persistence.is_some() {
        cx.error(
            base.key("sessionPersistence"),
            "sessionPersistence is not supported yet: remove it",
        );
    }
    let written = rule.matches.unwrap_or_default();
    if written.len() > MAX_MATCHES {
        cx.error(
            base.key("matches"),
            format!("at most {MAX_MATCHES} matches a rule (the CRD's maxItems): split the rule"),
        );
    }
    let mut matches: Vec<RouteMatch> = written
        .into_iter()
        .enumerate()
        .filter_map(|(k, m)| grpc_match(cx, &base.key("matches").index(k), m))
        .collect();
    if matches.is_empty() {
        matches.push(RouteMatch {
            matches: vec![HttpMatch::default()],
            precedence: precedence(0, 0, 0),
        });
    }
    let written_filters = rule.filters.unwrap_or_default();
    grpc_filter_types(cx, base, &written_filters);
    let mut backends_written = rule.backend_refs.unwrap_or_default();
    for (j, backend) in backends_written.iter_mut().enumerate() {
        if let Some(filters) = &backend.filters {
            grpc_filter_types(cx, &base.key("backendRefs").index(j), filters);
        }
    }
    let filters = filters(cx, base, written_filters, None, namespace);
    let backends = backend_refs(cx, base, Some(backends_written), None, namespace);
    HttpRouteRule {
        matches,
        backends,
        headers: filters.headers,
        redirect: None,
        rewrite: None,
        mirrors: filters.mirrors,
        // GRPCRoute has no `CORS` filter.
        cors: None,
        timeout: None,
        backend_timeout: None,
        // GRPCRoute has no `retry`.
        retry: None,
    }
}

/// The filter types a GRPCRoute has (`HTTPRoute`'s `RequestRedirect`,
/// `URLRewrite`, `CORS`, `ExternalAuth` are not), and no field of another
/// kind's filter.
fn grpc_filter_types(cx: &mut Check, base: &FieldPath, written: &[dto::HttpFilter]) {
    for (f, filter) in written.iter().enumerate() {
        let path = base.key("filters").index(f);
        let kind = filter.type_.as_deref().unwrap_or_default();
        if !GRPC_FILTERS.contains(&kind) {
            cx.error(
                path.key("type"),
                format!(
                    "filter type {kind:?} is not a GRPCRoute filter: use RequestHeaderModifier, \
                     ResponseHeaderModifier or RequestMirror (a gRPC call is not redirected \
                     or rewritten)"
                ),
            );
        }
        for (field, set) in [
            ("requestRedirect", filter.request_redirect.is_some()),
            ("urlRewrite", filter.url_rewrite.is_some()),
            ("cors", filter.cors.is_some()),
            ("externalAuth", filter.external_auth.is_some()),
        ] {
            if set {
                cx.error(
                    path.key(field),
                    format!("{field} is not a field of a GRPCRoute filter: remove it"),
                );
            }
        }
    }
}

/// The precedence of a GRPCRoute match: the longer service, the longer
/// method, more headers.
fn precedence(service: usize, method: usize, headers: usize) -> Precedence {
    Precedence {
        path_rank: std::cmp::Reverse(0),
        path_length: std::cmp::Reverse(service),
        grpc_method: std::cmp::Reverse(method),
        method: std::cmp::Reverse(false),
        headers: std::cmp::Reverse(headers),
        query_params: std::cmp::Reverse(0),
    }
}

/// One `matches[]` entry: the path its `method` stands for, its headers.
fn grpc_match(cx: &mut Check, base: &FieldPath, m: GrpcRouteMatch) -> Option<RouteMatch> {
    let errors = cx.errors.len();
    let headers = header_matches(cx, base, m.headers);
    let (uri, service, method) = match m.method {
        Some(method) => method_match(cx, &base.key("method"), method)?,
        None => (None, 0, 0),
    };
    if cx.errors.len() > errors {
        return None;
    }
    let count = headers.len();
    Some(RouteMatch {
        matches: vec![HttpMatch {
            uri,
            headers,
            ..HttpMatch::default()
        }],
        precedence: precedence(service, method, count),
    })
}

/// A `method` match: the path match it stands for (Istio's
/// `createGRPCURIMatch`), and the lengths of its service and method (the
/// spec's precedence). The CRD's CEL rules: one of `service` or `method`;
/// with `Exact`, each of valid characters.
fn method_match(
    cx: &mut Check,
    base: &FieldPath,
    m: GrpcMethodMatch,
) -> Option<(Option<StringMatch>, usize, usize)> {
    let exact = match m.type_.as_deref() {
        None | Some("Exact") => true,
        Some("RegularExpression") => false,
        Some(other) => {
            cx.error(
                base.key("type"),
                format!("method match type {other:?} is not known: use Exact or RegularExpression"),
            );
            return None;
        }
    };
    let service = m.service.filter(|s| !s.is_empty());
    let method = m.method.filter(|s| !s.is_empty());
    if service.is_none() && method.is_none() {
        cx.error(
            base.clone(),
            "one or both of 'service' or 'method' must be specified: give the gRPC service \
             (package.Service), its method, or both",
        );
        return None;
    }
    for (field, value) in [("service", &service), ("method", &method)] {
        let Some(value) = value else { continue };
        if value.len() > 1024 {
            cx.error(
                base.key(field),
                format!("{field} is longer than 1024 characters: shorten it"),
            );
        } else if exact && !valid_name(field, value) {
            cx.error(
                base.key(field),
                if field == "service" {
                    format!(
                        "service {value:?} must only contain valid characters (matching \
                         ^(?i)\\.?[a-z_][a-z_0-9]*(\\.[a-z_][a-z_0-9]*)*$): write the \
                         fully-qualified service name, package.Service"
                    )
                } else {
                    format!(
                        "method {value:?} must only contain valid characters (matching \
                         ^[A-Za-z_][A-Za-z_0-9]*$): write the method's name alone"
                    )
                },
            );
        } else if !exact && let Err(error) = values::regex(value, field) {
            cx.error(base.key(field), error);
        }
    }
    let lengths = (
        service.as_ref().map_or(0, String::len),
        method.as_ref().map_or(0, String::len),
    );
    let uri = match (exact, service, method) {
        (true, Some(service), Some(method)) => StringMatch::Exact(format!("/{service}/{method}")),
        (true, Some(service), None) => StringMatch::Prefix(format!("/{service}/")),
        (false, Some(service), None) => StringMatch::Regex(format!("/{service}/.+")),
        (false, Some(service), Some(method)) => StringMatch::Regex(format!("/{service}/{method}")),
        (_, None, Some(method)) => StringMatch::Regex(format!("/[^/]+/{method}")),
        (_, None, None) => return None,
    };
    Some((Some(uri), lengths.0, lengths.1))
}

/// The CRD's character rules for an `Exact` service (`package.Service`,
/// case-insensitive, an optional leading dot) or method.
fn valid_name(field: &str, value: &str) -> bool {
    let ident = |part: &str| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if field == "method" {
        return ident(value);
    }
    value
        .strip_prefix('.')
        .unwrap_or(value)
        .split('.')
        .all(ident)
}

impl<'a> Index<'a> {
    /// `listeners` of `gateway` that `route` may be attached to: not those
    /// where an older route of the other kind (HTTPRoute, GRPCRoute) has
    /// hosts that intersect its own, as the spec says; and the `Accepted`
    /// condition that says so when none is left.
    pub(super) fn without_kind_conflicts(
        &self,
        route: &HttpRoute,
        gateway: &'a Gateway,
        listeners: Vec<&'a Listener>,
    ) -> (Vec<&'a Listener>, Option<Condition>) {
        let mut conflict = None;
        let kept = listeners
            .into_iter()
            .filter(
                |listener| match self.older_of_other_kind(route, gateway, listener) {
                    Some(older) => {
                        conflict = Some(Condition::accepted(
                            "Conflicted",
                            format!(
                                "listener {} serves {} {}/{}, older, on a host of this route: an \
                             HTTPRoute and a GRPCRoute with intersecting hostnames on one \
                             listener, the older is accepted (the spec)",
                                listener.name,
                                older.source.kind,
                                older.source.namespace,
                                older.source.name
                            ),
                        ));
                        false
                    }
                    None => true,
                },
            )
            .collect();
        (kept, conflict)
    }

    /// Why `route` is not attached to the Service of `parent` (GAMMA): an
    /// older route of the other kind is, on an overlapping port (the
    /// listeners' rule, applied to the Service's port).
    pub(super) fn mesh_kind_conflict(
        &self,
        route: &HttpRoute,
        parent: &ParentRef,
    ) -> Option<Condition> {
        let mine = age(&route.source);
        let older = self.http_routes.iter().find(|other| {
            other.source.kind != route.source.kind
                && age(&other.source) < mine
                && other.parents.iter().any(|p| {
                    p.kind == ParentKind::Service
                        && p.namespace == parent.namespace
                        && p.name == parent.name
                        && (p.port.is_none() || parent.port.is_none() || p.port == parent.port)
                })
        })?;
        Some(Condition::accepted(
            "Conflicted",
            format!(
                "Service {}/{} is served by {} {}/{}, older, on this port: an HTTPRoute and a \
                 GRPCRoute on one Service port, the older is accepted (the spec's rule for a \
                 listener)",
                parent.namespace,
                parent.name,
                older.source.kind,
                older.source.namespace,
                older.source.name
            ),
        ))
    }

    /// An older route of the other kind attached to `listener` of
    /// `gateway`, with a host that intersects one of `route`'s there.
    fn older_of_other_kind(
        &self,
        route: &HttpRoute,
        gateway: &Gateway,
        listener: &Listener,
    ) -> Option<&'a HttpRoute> {
        let hosts = listener_hosts(listener, &gateway.listeners, &route.hostnames);
        let mine = age(&route.source);
        self.http_routes.iter().copied().find(|other| {
            other.source.kind != route.source.kind
                && age(&other.source) < mine
                && other.parents.iter().any(|parent| {
                    parent.kind == ParentKind::Gateway
                        && self
                            .listeners(&other.source, other.source.kind, parent, &other.hostnames)
                            .is_ok_and(|(g, ls)| {
                                std::ptr::eq(g, gateway)
                                    && ls.iter().any(|l| l.name == listener.name)
                            })
                })
                && listener_hosts(listener, &gateway.listeners, &other.hostnames)
                    .iter()
                    .any(|theirs| {
                        hosts
                            .iter()
                            .any(|h| host_matches(h, theirs) || host_matches(theirs, h))
                    })
        })
    }
}
