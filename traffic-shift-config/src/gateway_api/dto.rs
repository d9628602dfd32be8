//! The Gateway API and core `v1` `Service` YAML as written: serde shapes,
//! strict (`deny_unknown_fields`) as the Istio kinds' are. Fields that are
//! read but not supported yet are `Option<IgnoredAny>` so that `check`
//! refuses them by name; what Kubernetes writes and nothing here depends on
//! is accepted and ignored. Numbers with a range are `i64`, so that `check`
//! reports them in its own words.

#![expect(
    dead_code,
    reason = "the ignored fields are never read: they exist so that deny_unknown_fields accepts them"
)]

use std::collections::BTreeMap;

use serde::{Deserialize, de::IgnoredAny};

/// Core `v1` `Service` `spec`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Option<Vec<String>>,
    pub ports: Option<Vec<ServicePort>>,
    pub selector: Option<BTreeMap<String, String>>,
    // Refused by `check`: not supported yet.
    #[serde(rename = "externalIPs")]
    pub external_ips: Option<IgnoredAny>,
    pub external_name: Option<IgnoredAny>,
    pub session_affinity: Option<String>,
    // Accepted and ignored: they change nothing on one node.
    pub session_affinity_config: Option<IgnoredAny>,
    pub ip_families: Option<IgnoredAny>,
    pub ip_family_policy: Option<IgnoredAny>,
    pub internal_traffic_policy: Option<IgnoredAny>,
    pub external_traffic_policy: Option<IgnoredAny>,
    pub publish_not_ready_addresses: Option<IgnoredAny>,
    pub traffic_distribution: Option<IgnoredAny>,
    pub allocate_load_balancer_node_ports: Option<IgnoredAny>,
    pub load_balancer_class: Option<IgnoredAny>,
    #[serde(rename = "loadBalancerIP")]
    pub load_balancer_ip: Option<IgnoredAny>,
    pub load_balancer_source_ranges: Option<IgnoredAny>,
    pub health_check_node_port: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: Option<i64>,
    pub target_port: Option<IntOrString>,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
    pub node_port: Option<IgnoredAny>,
}

/// Kubernetes' `IntOrString` (`targetPort: 9000` or `targetPort: http`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

/// `GatewayClass` `spec`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewayClassSpec {
    pub controller_name: Option<String>,
    pub description: Option<String>,
    pub parameters_ref: Option<IgnoredAny>,
}

/// `Gateway` `spec`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewaySpec {
    pub gateway_class_name: Option<String>,
    pub listeners: Option<Vec<Listener>>,
    pub addresses: Option<Vec<GatewayAddress>>,
    // Refused by `check`: not supported yet.
    pub backend_tls: Option<IgnoredAny>,
    pub allowed_listeners: Option<IgnoredAny>,
    // Accepted and ignored: how a cluster deploys the gateway.
    pub infrastructure: Option<IgnoredAny>,
}

/// A `spec.addresses` entry of a `Gateway`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayAddress {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Listener {
    pub name: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<i64>,
    pub protocol: Option<String>,
    pub allowed_routes: Option<AllowedRoutes>,
    /// `mode: Passthrough` on a TLS listener; refused otherwise.
    pub tls: Option<super::tls_route::ListenerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AllowedRoutes {
    pub namespaces: Option<RouteNamespaces>,
    pub kinds: Option<Vec<RouteGroupKind>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteNamespaces {
    pub from: Option<String>,
    pub selector: Option<LabelSelector>,
}

/// A Kubernetes `LabelSelector`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    pub match_labels: Option<BTreeMap<String, String>>,
    pub match_expressions: Option<Vec<LabelRequirement>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelRequirement {
    pub key: Option<String>,
    pub operator: Option<String>,
    pub values: Option<Vec<String>>,
}

/// `ReferenceGrant` `spec`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReferenceGrantSpec {
    pub from: Option<Vec<GrantFrom>>,
    pub to: Option<Vec<GrantTo>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrantFrom {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrantTo {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
}

/// Core `v1` `Namespace` `spec` (its labels are in `metadata`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceSpec {
    pub finalizers: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteGroupKind {
    pub group: Option<String>,
    pub kind: Option<String>,
}

/// A `parentRefs[]` entry of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParentRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub section_name: Option<String>,
    pub port: Option<i64>,
}

/// A `backendRefs[]` entry of a route rule (`filters` only in `HTTPRoute`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub port: Option<i64>,
    pub weight: Option<i64>,
    pub filters: Option<Vec<HttpFilter>>,
}

/// `TCPRoute` `spec`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpRouteSpec {
    pub parent_refs: Option<Vec<ParentRef>>,
    pub rules: Option<Vec<TcpRouteRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpRouteRule {
    pub name: Option<String>,
    pub backend_refs: Option<Vec<BackendRef>>,
}

/// `HTTPRoute` `spec`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteSpec {
    pub parent_refs: Option<Vec<ParentRef>>,
    pub hostnames: Option<Vec<String>>,
    pub rules: Option<Vec<HttpRouteRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteRule {
    pub name: Option<String>,
    pub matches: Option<Vec<HttpRouteMatch>>,
    pub filters: Option<Vec<HttpFilter>>,
    pub backend_refs: Option<Vec<BackendRef>>,
    pub timeouts: Option<Timeouts>,
    pub retry: Option<HttpRouteRetry>,
    // Refused by `check`: not supported yet.
    pub session_persistence: Option<IgnoredAny>,
}

/// `HTTPRouteRetry` (`retry.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteRetry {
    pub codes: Option<Vec<i64>>,
    pub attempts: Option<i64>,
    pub backoff: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteMatch {
    pub path: Option<PathMatch>,
    pub headers: Option<Vec<ValueMatch>>,
    pub query_params: Option<Vec<ValueMatch>>,
    pub method: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PathMatch {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub value: Option<String>,
}

/// A `headers[]` or `queryParams[]` match.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ValueMatch {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub name: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpFilter {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub request_header_modifier: Option<HeaderModifier>,
    pub response_header_modifier: Option<HeaderModifier>,
    pub request_redirect: Option<RequestRedirect>,
    #[serde(rename = "urlRewrite")]
    pub url_rewrite: Option<UrlRewrite>,
    pub request_mirror: Option<RequestMirror>,
    // Refused by `check`: not supported yet.
    pub extension_ref: Option<IgnoredAny>,
    pub external_auth: Option<IgnoredAny>,
    /// `cors.rs`.
    pub cors: Option<CorsFilter>,
}

/// `HTTPCORSFilter` (`cors.rs`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CorsFilter {
    pub allow_origins: Option<Vec<String>>,
    pub allow_credentials: Option<bool>,
    pub allow_methods: Option<Vec<String>>,
    pub allow_headers: Option<Vec<String>>,
    pub expose_headers: Option<Vec<String>>,
    pub max_age: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderModifier {
    pub set: Option<Vec<HeaderValue>>,
    pub add: Option<Vec<HeaderValue>>,
    pub remove: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderValue {
    pub name: Option<String>,
    pub value: Option<String>,
}

/// `HTTPRouteTimeouts`: Gateway API durations (`1h2m3s4ms`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Timeouts {
    pub request: Option<String>,
    pub backend_request: Option<String>,
}

/// `HTTPRequestRedirectFilter`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestRedirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
    pub port: Option<i64>,
    pub status_code: Option<i64>,
}

/// `HTTPURLRewriteFilter`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UrlRewrite {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

/// `HTTPPathModifier`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PathModifier {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub replace_full_path: Option<String>,
    pub replace_prefix_match: Option<String>,
}

/// `HTTPRequestMirrorFilter`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestMirror {
    pub backend_ref: Option<MirrorBackendRef>,
    pub percent: Option<i64>,
    pub fraction: Option<Fraction>,
}

/// A `BackendObjectReference` (no weight, no filters).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MirrorBackendRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub port: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fraction {
    pub numerator: Option<i64>,
    pub denominator: Option<i64>,
}

/// A `discovery.k8s.io/v1` `EndpointSlice`: no `spec`, its fields are at
/// the top of the document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointSliceDocument {
    pub api_version: String,
    pub kind: String,
    pub metadata: crate::dto::Metadata,
    pub address_type: Option<String>,
    pub endpoints: Option<Vec<SliceEndpoint>>,
    pub ports: Option<Vec<SlicePort>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SliceEndpoint {
    pub addresses: Option<Vec<String>>,
    pub conditions: Option<SliceConditions>,
    // Accepted and ignored: they change nothing on one node.
    pub hostname: Option<IgnoredAny>,
    pub target_ref: Option<IgnoredAny>,
    pub node_name: Option<IgnoredAny>,
    pub zone: Option<IgnoredAny>,
    pub hints: Option<IgnoredAny>,
    pub deprecated_topology: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SliceConditions {
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SlicePort {
    pub name: Option<String>,
    pub port: Option<i64>,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
}
