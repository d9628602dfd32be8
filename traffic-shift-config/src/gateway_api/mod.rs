//! The Kubernetes Gateway API and core `v1` `Service` -> the Istio
//! resources `resolve` already turns into the [`RoutingModel`], as Istio's
//! own Gateway API controller does (it writes `VirtualService`s and
//! `Gateway`s). So a `TCPRoute` through a Gateway listener takes the same
//! kernel path (`sk_lookup`) as a `VirtualService` `tcp` rule bound to an
//! Istio Gateway, an `HTTPRoute` bound to a Service the same L7 proxy
//! listener as a mesh `VirtualService` `http` rule, with the same smooth
//! splits and the same metrics.
//!
//! Two steps, as for the Istio kinds:
//!
//! 1. [`parse_document`] (`check`): one document through strict serde
//!    (`dto`) into a [`GatewayApiResource`], checked on its own; errors in
//!    the crate's format (file, document, resource, field path, line).
//! 2. [`translate`] (`translate`), at the start of `resolve`: the checks
//!    across resources (parents, listeners, backends, class names) and the
//!    Istio resources they stand for: a `ServiceEntry` per `Service` (its
//!    `clusterIP`s are the service addresses, its `selector` picks the
//!    `WorkloadEntries` of its namespace, or the `EndpointSlice`s that name
//!    it give its endpoints: `endpoint_slice`), with a default mesh route to its
//!    own endpoints (as kube-proxy balances a Service); an Istio `Gateway`
//!    per `Gateway`; a `VirtualService` per `TCPRoute`, and per Service
//!    and per host of a Gateway for the `HTTPRoute`s there, their rules
//!    merged in the spec's order (`merge`). Each keeps the `Source` of a
//!    document it came from (the oldest route's, for merged rules), so
//!    `resolve`'s errors (one route per address and port) name it, and
//!    route keys read `<ns>/<route>/rules[0]/...`, each rule with its own
//!    route's name ([`Origin`]).
//!
//! What the spec reports in status rather than refuses (a parent that does
//! not take a route, a backendRef that cannot be used, a listener's
//! `allowedRoutes.kinds` that are no route kind) is not an error:
//! the route is not attached, or the share of the backend fails (the
//! [`crate::model::UNUSABLE_BACKEND`] destination), and `status` says why
//! ([`crate::model::RoutingModel::gateway_api_status`]).
//!
//! docs/gateway-api.md says what is read, how it maps, and what is refused
//! as not supported yet.

mod addresses;
#[cfg(test)]
mod addresses_tests;
mod check;
mod claims;
mod cors;
#[cfg(test)]
mod cors_tests;
mod dto;
mod endpoint_slice;
mod grpc_route;
#[cfg(test)]
mod grpc_route_tests;
mod https;
#[cfg(test)]
mod kinds_tests;
mod merge;
mod place;
mod retry;
mod secret;
#[cfg(test)]
mod secret_tests;
mod status;
#[cfg(test)]
mod tests;
mod tls_route;
#[cfg(test)]
mod tls_route_tests;
mod translate;

use std::{net::IpAddr, path::Path, sync::Arc, time::Duration};

use serde_yaml_ng::Value;

pub use self::{
    endpoint_slice::EndpointSlice,
    secret::{CertificateError, PrivateKeyPem, REDACTED, Secret, TlsCertificate, redact},
    status::STATUS_KINDS,
    tls_route::TlsRoute,
};
pub(crate) use self::{place::place, translate::translate};
use crate::{
    check::Checked,
    common::{Labels, Protocol},
    error::{FieldPath, ResourceId, fp},
    http::{CorsPolicy, Headers, HttpMatch, HttpRedirect, Rewrite},
    lines::LineIndex,
    resource::document::{Place, typed},
    source::Source,
};

/// The `gatewayClassName` this agent serves by default (`--gateway-class`
/// of `run` and `validate` changes it: [`set_gateway_class`]).
pub const SERVED_GATEWAY_CLASS: &str = "istio";

/// The `controllerName` written in status, Istio's.
pub const CONTROLLER_NAME: &str = "istio.io/gateway-controller";

static GATEWAY_CLASS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the served `gatewayClassName` for the process (`--gateway-class`),
/// once, before anything is resolved; Gateways of other classes are
/// ignored, as a controller ignores the classes it does not own. Returns
/// `false` when it was already set to another name.
pub fn set_gateway_class(name: &str) -> bool {
    GATEWAY_CLASS.get_or_init(|| name.to_owned()) == name
}

/// The served `gatewayClassName`: [`set_gateway_class`]'s, else
/// [`SERVED_GATEWAY_CLASS`].
pub fn gateway_class() -> &'static str {
    GATEWAY_CLASS
        .get()
        .map_or(SERVED_GATEWAY_CLASS, String::as_str)
}

/// `Source::kind` of a Gateway API `Gateway`: qualified, as kubectl names
/// it, since Istio's `Gateway` is `Gateway`.
pub const GATEWAY_KIND: &str = "Gateway.gateway.networking.k8s.io";

const GROUP: &str = "gateway.networking.k8s.io";

/// The kinds read here, with the `apiVersion`s each is read at (newest
/// first).
pub const KINDS: [(&str, &[&str]); 11] = [
    ("Service", &["v1"]),
    ("Namespace", &["v1"]),
    ("Secret", &["v1"]),
    ("EndpointSlice", &["discovery.k8s.io/v1"]),
    (
        "ReferenceGrant",
        &[
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1beta1",
        ],
    ),
    (
        "GatewayClass",
        &[
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1beta1",
        ],
    ),
    (
        "Gateway",
        &[
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1beta1",
        ],
    ),
    (
        "HTTPRoute",
        &[
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1beta1",
        ],
    ),
    (
        "GRPCRoute",
        &[
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1alpha2",
        ],
    ),
    ("TCPRoute", &["gateway.networking.k8s.io/v1alpha2"]),
    (
        "TLSRoute",
        &[
            "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1alpha2",
        ],
    ),
];

/// One checked document of a kind read here.
#[derive(Clone, Debug)]
pub enum GatewayApiResource {
    Service(Service),
    GatewayClass(GatewayClass),
    Gateway(Gateway),
    TcpRoute(TcpRoute),
    TlsRoute(TlsRoute),
    HttpRoute(HttpRoute),
    ReferenceGrant(ReferenceGrant),
    Namespace(Namespace),
    EndpointSlice(EndpointSlice),
    Secret(Secret),
}

impl GatewayApiResource {
    pub fn source(&self) -> &Source {
        match self {
            Self::Service(r) => &r.source,
            Self::GatewayClass(r) => &r.source,
            Self::Gateway(r) => &r.source,
            Self::TcpRoute(r) => &r.source,
            Self::TlsRoute(r) => &r.source,
            Self::HttpRoute(r) => &r.source,
            Self::ReferenceGrant(r) => &r.source,
            Self::Namespace(r) => &r.source,
            Self::EndpointSlice(r) => &r.source,
            Self::Secret(r) => &r.source,
        }
    }

    /// Sets `metadata.generation` (status's `observedGeneration`) of the
    /// kinds that have a status, as the API server counts it: the agent's
    /// `apply` bumps it when a resource changes. The other kinds have none.
    pub fn set_generation(&mut self, generation: i64) {
        match self {
            Self::Gateway(r) => r.generation = generation,
            Self::TcpRoute(r) => r.generation = generation,
            Self::TlsRoute(r) => r.generation = generation,
            Self::HttpRoute(r) => r.generation = generation,
            _ => {}
        }
    }

    pub fn source_mut(&mut self) -> &mut Source {
        match self {
            Self::Service(r) => &mut r.source,
            Self::GatewayClass(r) => &mut r.source,
            Self::Gateway(r) => &mut r.source,
            Self::TcpRoute(r) => &mut r.source,
            Self::TlsRoute(r) => &mut r.source,
            Self::HttpRoute(r) => &mut r.source,
            Self::ReferenceGrant(r) => &mut r.source,
            Self::Namespace(r) => &mut r.source,
            Self::EndpointSlice(r) => &mut r.source,
            Self::Secret(r) => &mut r.source,
        }
    }
}

/// A core `v1` `Service`.
#[derive(Clone, Debug)]
pub struct Service {
    pub source: Source,
    /// `clusterIP` and `clusterIPs`, once each: the service addresses the
    /// connect-time hook rewrites. Empty: reached only as a backend.
    pub addresses: Vec<IpAddr>,
    /// `clusterIP: None`: no service address, reached only as a backend
    /// (a mesh route on it is refused).
    pub headless: bool,
    pub ports: Vec<ServicePort>,
    /// The `WorkloadEntries` of its namespace whose labels include these
    /// are its endpoints, unless `EndpointSlice`s name the Service (then
    /// theirs are). Empty: only its `EndpointSlice`s'.
    pub selector: Labels,
    /// The endpoints of the `EndpointSlice`s that name it, merged (each
    /// port name of the Service to the port of the slice port of that
    /// name); `None` when no slice names it. Set by `translate`.
    pub slice_endpoints: Option<Vec<crate::resource::WorkloadEndpoint>>,
}

impl Service {
    /// `<name>.<namespace>.svc.cluster.local`.
    pub fn host(&self) -> String {
        format!(
            "{}.{}.svc.cluster.local",
            self.source.name, self.source.namespace
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Required when the Service has several ports (as Kubernetes says).
    pub name: String,
    pub port: u16,
    pub target_port: TargetPort,
    /// `TCP`, or from `appProtocol`: `HTTP` (`http`), `HTTP2`
    /// (`kubernetes.io/h2c`); the L7 path for both.
    pub protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    /// A port name of the endpoints: a `WorkloadEntry` `ports` key.
    Name(String),
}

/// A `GatewayClass`: accepted; its name is what a Gateway's
/// `gatewayClassName` refers to.
#[derive(Clone, Debug)]
pub struct GatewayClass {
    pub source: Source,
    pub controller_name: String,
}

/// A `ReferenceGrant`: the resources of `from` (kind and namespace) may
/// refer to those of `to` in the grant's own namespace.
#[derive(Clone, Debug)]
pub struct ReferenceGrant {
    pub source: Source,
    pub from: Vec<GrantFrom>,
    pub to: Vec<GrantTo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantFrom {
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantTo {
    /// `""` for core kinds (`Service`).
    pub group: String,
    pub kind: String,
    /// `None`: every resource of the kind.
    pub name: Option<String>,
}

impl ReferenceGrant {
    /// Whether a `kind` in `namespace` may refer to the `to_group`
    /// `to_kind` `name` of the grant's namespace.
    pub fn allows(
        &self,
        kind: &str,
        namespace: &str,
        to_group: &str,
        to_kind: &str,
        name: &str,
    ) -> bool {
        self.from
            .iter()
            .any(|f| f.group == GROUP && f.kind == kind && f.namespace == namespace)
            && self.to.iter().any(|t| {
                t.group == to_group
                    && t.kind == to_kind
                    && t.name.as_deref().is_none_or(|n| n == name)
            })
    }
}

/// A core `v1` `Namespace`: its labels, which a listener's
/// `allowedRoutes.namespaces.selector` selects on. Kubernetes' own label
/// `kubernetes.io/metadata.name: <name>` is added, as the API server does.
#[derive(Clone, Debug)]
pub struct Namespace {
    pub source: Source,
    pub labels: Labels,
}

/// A Kubernetes `LabelSelector`: `matchLabels` and `matchExpressions`,
/// AND'ed; empty: everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub match_labels: Labels,
    pub match_expressions: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// As Kubernetes' `LabelSelectorAsSelector`: every label of
    /// `matchLabels`, every expression.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    Operator::In => value.is_some_and(|v| r.values.contains(v)),
                    Operator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// Which namespaces' routes a listener takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromNamespaces {
    Same,
    All,
    /// Those whose `Namespace` document's labels it matches (a namespace
    /// without a document has only `kubernetes.io/metadata.name`).
    Selector(LabelSelector),
}

/// A Gateway API `Gateway`.
#[derive(Clone, Debug)]
pub struct Gateway {
    pub source: Source,
    /// `metadata.generation`, 1 when not written: status's
    /// `observedGeneration`.
    pub generation: i64,
    pub class_name: String,
    pub listeners: Vec<Listener>,
    /// `spec.addresses`: the node's addresses its listeners accept on;
    /// empty: every local address.
    pub addresses: Vec<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    /// Absent: every host name.
    pub hostname: Option<String>,
    pub port: u16,
    /// `TCP`, `HTTP`, or `TLS` (`tls.mode: Passthrough`: TLSRoute).
    pub protocol: Protocol,
    /// `allowedRoutes.kinds`, or the listener protocol's default
    /// (`TCPRoute` for TCP, `HTTPRoute` for HTTP) when none is written.
    pub kinds: Vec<&'static str>,
    /// The kinds of `allowedRoutes.kinds` that are no route kind
    /// (`group/kind`): reported in status (`ResolvedRefs` False,
    /// `InvalidRouteKinds`), as the spec says, not refused.
    pub invalid_kinds: Vec<String>,
    /// `allowedRoutes.namespaces`.
    pub namespaces: FromNamespaces,
    /// HTTPS: `tls.certificateRefs` (the first is served).
    pub certificate_refs: Vec<https::CertificateRef>,
}

/// A `parentRefs[]` entry, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentRef {
    /// Its index in `spec.parentRefs`.
    pub index: usize,
    pub kind: ParentKind,
    pub namespace: String,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParentKind {
    Gateway,
    /// GAMMA: the route applies to clients of the Service (the mesh).
    Service,
}

/// A `backendRefs[]` entry: a `Service` and one of its ports (another
/// kind is valid, and cannot be used: `InvalidKind`).
#[derive(Clone, Debug, PartialEq)]
pub struct BackendRef {
    /// `spec.rules[0].backendRefs[1]`.
    pub path: FieldPath,
    /// `""` for core.
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Required for a Service.
    pub port: Option<u16>,
    /// Default 1; 0 is allowed (no traffic).
    pub weight: u32,
    /// Its `RequestHeaderModifier` and `ResponseHeaderModifier` filters.
    pub headers: Headers,
    /// Its `RequestRedirect`, `URLRewrite` and `RequestMirror` filters (an
    /// HTTPRoute's or, mirrors only, a GRPCRoute's); `None`: none.
    pub actions: Option<Box<BackendActions>>,
}

/// A backendRef's own `RequestRedirect`, `URLRewrite` and `RequestMirror`:
/// for the requests sent to it only. Its redirect or rewrite takes the
/// place of the rule's for them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackendActions {
    pub redirect: Option<HttpRedirect>,
    pub rewrite: Option<Rewrite>,
    pub mirrors: Vec<MirrorRef>,
}

/// A `TCPRoute` (one rule: a TCP connection has nothing to match on).
#[derive(Clone, Debug)]
pub struct TcpRoute {
    pub source: Source,
    /// `metadata.generation` (1 when not written).
    pub generation: i64,
    pub parents: Vec<ParentRef>,
    pub backends: Vec<BackendRef>,
}

/// An `HTTPRoute`, or a `GRPCRoute` (`source.kind`), whose method matches
/// are matches on the HTTP/2 path (`grpc_route`).
#[derive(Clone, Debug)]
pub struct HttpRoute {
    pub source: Source,
    /// `metadata.generation` (1 when not written).
    pub generation: i64,
    pub parents: Vec<ParentRef>,
    /// Lowercase, as written.
    pub hostnames: Vec<String>,
    pub rules: Vec<HttpRouteRule>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpRouteRule {
    /// Each a [`RouteMatch`]; empty: every request.
    pub matches: Vec<RouteMatch>,
    pub backends: Vec<BackendRef>,
    /// Its `RequestHeaderModifier` and `ResponseHeaderModifier` filters.
    pub headers: Headers,
    /// Its `RequestRedirect` filter: the proxy answers the redirect, and
    /// the backendRefs take no traffic.
    pub redirect: Option<HttpRedirect>,
    /// Its `URLRewrite` filter.
    pub rewrite: Option<Rewrite>,
    /// Its `RequestMirror` filters, resolved as backendRefs are.
    pub mirrors: Vec<MirrorRef>,
    /// Its `CORS` filter, as Istio writes it (`cors.rs`).
    pub cors: Option<CorsPolicy>,
    /// `timeouts.request`; `None`: absent or `0s` (no timeout).
    pub timeout: Option<Duration>,
    /// `timeouts.backendRequest`: each attempt's; `None`: absent or `0s`.
    pub backend_timeout: Option<Duration>,
    /// `retry` (`retry.rs`); `None`: absent (Istio's default retries).
    pub retry: Option<retry::Retry>,
}

/// A `RequestMirror` filter: its `backendRef` (weight 1, no filters) and
/// the share of the requests it copies (`None`: all).
#[derive(Clone, Debug, PartialEq)]
pub struct MirrorRef {
    pub backend: BackendRef,
    /// Of the requests, 0.0..=100.0.
    pub percentage: Option<f64>,
}

/// One `matches[]` entry: the `HttpMatch`es of the model it stands for
/// (OR'ed: `PathPrefix /a` is `exact /a` or `prefix /a/`, whole path
/// segments), and its precedence among the rules (the spec's order).
#[derive(Clone, Debug, PartialEq)]
pub struct RouteMatch {
    pub matches: Vec<HttpMatch>,
    pub precedence: Precedence,
}

/// The Gateway API's order of matches, most specific first, as Istio sorts
/// them (`sortHTTPRoutes`): path type (`Exact`, then
/// `RegularExpression`, then `PathPrefix`; no path is `PathPrefix /`),
/// longer path value, a `method`, more `headers`, more `queryParams`.
/// A `GRPCRoute`'s (the spec's, for its rules): the longer service, the
/// longer gRPC method, more `headers` (its `path_length` is the service's,
/// `grpc_method` the method's; the two kinds are never merged).
/// Sorting ascending puts the most specific first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence {
    path_rank: std::cmp::Reverse<u8>,
    path_length: std::cmp::Reverse<usize>,
    grpc_method: std::cmp::Reverse<usize>,
    method: std::cmp::Reverse<bool>,
    headers: std::cmp::Reverse<usize>,
    query_params: std::cmp::Reverse<usize>,
}

/// How a `VirtualService` translated from a Gateway API kind names its
/// rules: in route keys (`rules[0]` in `default/reviews/rules[0]`) and in
/// messages (the field path of the rule as written).
#[derive(Debug, Default)]
pub struct Origin {
    tcp: Vec<(String, FieldPath)>,
    http: Vec<(String, FieldPath)>,
    tls: Vec<(String, FieldPath)>,
    /// Per rule, where each destination is written (a `backendRefs[]`
    /// entry, or the Service port of a default route).
    tcp_backends: Vec<Vec<FieldPath>>,
    http_backends: Vec<Vec<FieldPath>>,
    /// Per `http` rule, the HTTPRoute it was written in, when the rules of
    /// several are merged on one host (`merge`): its route key's name, and
    /// where messages about the rule are placed. Empty: the
    /// `VirtualService`'s own.
    http_owners: Vec<Source>,
    tls_backends: Vec<Vec<FieldPath>>,
}

impl Origin {
    fn list(&self, list: &str) -> &[(String, FieldPath)] {
        match list {
            "tcp" => &self.tcp,
            "http" => &self.http,
            "tls" => &self.tls,
            _ => &[],
        }
    }

    pub(crate) fn label(&self, list: &str, i: usize) -> Option<String> {
        self.list(list).get(i).map(|(label, _)| label.clone())
    }

    pub(crate) fn path(&self, list: &str, i: usize) -> Option<FieldPath> {
        self.list(list).get(i).map(|(_, path)| path.clone())
    }

    /// `<ns>/<name>` of the resource rule `i` of `list` was written in,
    /// when not the `VirtualService`'s own.
    pub(crate) fn owner(&self, list: &str, i: usize) -> Option<String> {
        self.owner_source(list, i)
            .map(|owner| format!("{}/{}", owner.namespace, owner.name))
    }

    /// The resource rule `i` of `list` was written in, when not the
    /// `VirtualService`'s own.
    fn owner_source(&self, list: &str, i: usize) -> Option<&Source> {
        match list {
            "http" => self.http_owners.get(i),
            _ => None,
        }
    }

    /// Where destination `j` of rule `i` of `list` is written.
    fn backend(&self, list: &str, i: usize, j: usize) -> Option<&FieldPath> {
        let backends = match list {
            "tcp" => &self.tcp_backends,
            "http" => &self.http_backends,
            "tls" => &self.tls_backends,
            _ => return None,
        };
        backends.get(i)?.get(j)
    }
}

/// The kind a document of `api_version` and `kind` is known by
/// (`Source::kind`, what `apply` and `delete` key resources by): for the
/// kinds read here, as [`parse_document`] names them (a Gateway API
/// `Gateway` is [`GATEWAY_KIND`]); for the others, one of
/// [`crate::KINDS`] whatever the `apiVersion`, as before.
pub fn kind_of(api_version: &str, kind: &str) -> Option<&'static str> {
    if ours(api_version) {
        return KINDS
            .iter()
            .find(|(known, versions)| *known == kind && versions.contains(&api_version))
            .map(|(known, _)| {
                if *known == "Gateway" {
                    GATEWAY_KIND
                } else {
                    *known
                }
            });
    }
    crate::KINDS.into_iter().find(|known| *known == kind)
}

/// Whether a document's `apiVersion` is one read here (core `v1`,
/// `discovery.k8s.io`, or the Gateway API group).
fn ours(api_version: &str) -> bool {
    api_version == "v1"
        || api_version.starts_with(&format!("{GROUP}/"))
        || api_version.starts_with("discovery.k8s.io/")
}

/// One document of a kind read here, checked; `None` when its `apiVersion`
/// is not core `v1` nor the Gateway API's (the Istio kinds').
#[expect(
    clippy::too_many_lines,
    reason = "the envelope's checks, then one arm per kind read here"
)]
pub(crate) fn parse_document(
    file: &Path,
    document: usize,
    value: &Value,
    lines: &Arc<LineIndex>,
) -> Option<Checked<GatewayApiResource>> {
    let api_version = value.get("apiVersion").and_then(Value::as_str)?;
    if !ours(api_version) {
        return None;
    }
    let mut value = value.clone();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let known = KINDS.iter().find(|(known, _)| *known == kind);
    let source_kind = match known {
        Some(("Gateway", _)) => Some(GATEWAY_KIND),
        Some((known, _)) => Some(*known),
        None => None,
    };
    let resource = source_kind.and_then(|kind| {
        let metadata = value.get("metadata")?;
        Some(ResourceId {
            kind,
            namespace: metadata
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_owned(),
            name: metadata.get("name").and_then(Value::as_str)?.to_owned(),
        })
    });
    let place = Place::new(file, document, resource, lines);
    let (Some((_, versions)), Some(kind)) = (known, source_kind) else {
        let served: Vec<&str> = KINDS
            .iter()
            .filter(|(_, versions)| versions.contains(&api_version))
            .map(|(kind, _)| *kind)
            .collect();
        return Some(Err(vec![place.error(
            fp!("kind"),
            format!(
                "unsupported kind {kind:?} at apiVersion {api_version}: expected one of {}",
                if served.is_empty() {
                    "the Istio kinds (networking.istio.io), Service, Namespace or Secret (v1), \
                     EndpointSlice (discovery.k8s.io/v1), GatewayClass, Gateway, HTTPRoute, ReferenceGrant \
                     (gateway.networking.k8s.io/v1), GRPCRoute or TLSRoute (v1 or v1alpha2) or TCPRoute \
                     (gateway.networking.k8s.io/v1alpha2)"
                        .to_owned()
                } else {
                    served.join(", ")
                }
            ),
        )]));
    };
    if !versions.contains(&api_version) {
        return Some(Err(vec![place.error(
            fp!("apiVersion"),
            format!(
                "{} is not read at apiVersion {api_version}: use {}",
                known.map_or(kind, |(k, _)| *k),
                versions.join(" or ")
            ),
        )]));
    }
    if let Err(error) = value.apply_merge() {
        return Some(Err(vec![
            place.error(FieldPath::root(), format!("invalid YAML merge: {error}")),
        ]));
    }
    let (generation, labels) = generation_and_labels(&value);
    if kind == "Namespace"
        && let Some(map) = value.as_mapping_mut()
        && !map.contains_key("spec")
    {
        // A Namespace's spec (finalizers) is optional.
        map.insert(
            Value::from("spec"),
            Value::Mapping(serde_yaml_ng::Mapping::new()),
        );
    }
    Some(match known.map_or("", |(k, _)| *k) {
        "EndpointSlice" => endpoint_slice::endpoint_slice(&place, value, lines, &labels)
            .map(|(r, w)| (GatewayApiResource::EndpointSlice(r), w)),
        "Secret" => {
            secret::secret(&place, value, lines).map(|(r, w)| (GatewayApiResource::Secret(r), w))
        }
        "Namespace" => typed(&place, kind, std::borrow::Cow::Owned(value), lines)
            .and_then(|(source, spec)| check::namespace(source, spec, labels))
            .map(|(r, w)| (GatewayApiResource::Namespace(r), w)),
        "ReferenceGrant" => typed(&place, kind, std::borrow::Cow::Owned(value), lines)
            .and_then(|(source, spec)| check::reference_grant(source, spec))
            .map(|(r, w)| (GatewayApiResource::ReferenceGrant(r), w)),
        "Service" => typed(&place, kind, std::borrow::Cow::Owned(value), lines)
            .and_then(|(source, spec)| check::service(source, spec))
            .map(|(r, w)| (GatewayApiResource::Service(r), w)),
        "GatewayClass" => typed(&place, kind, std::borrow::Cow::Owned(value), lines)
            .and_then(|(source, spec)| check::gateway_class(source, spec))
            .map(|(r, w)| (GatewayApiResource::GatewayClass(r), w)),
        "Gateway" => typed(&place, kind, std::borrow::Cow::Owned(value), lines)
            .and_then(|(source, spec)| check::gateway(source, spec, generation))
            .map(|(r, w)| (GatewayApiResource::Gateway(r), w)),
        "TCPRoute" => typed(&place, kind, std::borrow::Cow::Owned(value), lines)
            .and_then(|(source, spec)| check::tcp_route(source, spec, generation))
            .map(|(r, w)| (GatewayApiResource::TcpRoute(r), w)),
        "GRPCRoute" => typed(&place, kind, std::borrow::Cow::Owned(value), lines)
            .and_then(|(source, spec)| grpc_route::grpc_route(source, spec, generation))
            .map(|(r, w)| (GatewayApiResource::HttpRoute(r), w)),
        "TLSRoute" => typed(&place, kind, std::borrow::Cow::Owned(value), lines)
            .and_then(|(source, spec)| tls_route::tls_route(source, spec, generation))
            .map(|(r, w)| (GatewayApiResource::TlsRoute(r), w)),
        _ => typed(&place, kind, std::borrow::Cow::Owned(value), lines)
            .and_then(|(source, spec)| check::http_route(source, spec, generation))
            .map(|(r, w)| (GatewayApiResource::HttpRoute(r), w)),
    })
}

/// A document's `metadata.generation` (1 when not written: status's
/// `observedGeneration`) and `metadata.labels` (a `Namespace`'s).
fn generation_and_labels(value: &Value) -> (i64, Labels) {
    let metadata = value.get("metadata");
    let generation = metadata
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let labels = metadata
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                .collect::<Labels>()
        })
        .unwrap_or_default();
    (generation, labels)
}
