//! The YAML as written: serde shapes of the Istio resources, strict
//! (`deny_unknown_fields`) so a misspelt field is an error, with the Istio
//! fields we do not implement yet accepted and ignored (`IgnoredAny`).
//! Numbers that have a range are read as `i64` so that validation, not
//! serde, reports them, in Istio's words (`weight -5 < 0`).

#![expect(
    dead_code,
    reason = "the ignored fields are never read: they exist so that deny_unknown_fields accepts them"
)]

use std::collections::BTreeMap;

use serde::{Deserialize, de::IgnoredAny};

use super::resource::{Location, Resolution, SimpleLb};

pub type Labels = BTreeMap<String, String>;

/// Every document: the Kubernetes envelope around a spec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Document<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: S,
    pub status: Option<IgnoredAny>,
}

/// `metadata`: `name` and `namespace` are used; what Kubernetes adds is
/// accepted and ignored; anything else is a typo (`namspace`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub labels: Option<IgnoredAny>,
    pub annotations: Option<IgnoredAny>,
    pub uid: Option<IgnoredAny>,
    pub resource_version: Option<IgnoredAny>,
    pub generation: Option<IgnoredAny>,
    pub creation_timestamp: Option<IgnoredAny>,
    pub deletion_timestamp: Option<IgnoredAny>,
    pub deletion_grace_period_seconds: Option<IgnoredAny>,
    pub managed_fields: Option<IgnoredAny>,
    pub owner_references: Option<IgnoredAny>,
    pub finalizers: Option<IgnoredAny>,
    pub generate_name: Option<IgnoredAny>,
    pub self_link: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    pub hosts: Option<Vec<String>>,
    pub addresses: Option<Vec<String>>,
    pub ports: Option<Vec<ServicePort>>,
    pub location: Option<Location>,
    pub resolution: Option<Resolution>,
    pub endpoints: Option<Vec<WorkloadEntrySpec>>,
    pub workload_selector: Option<WorkloadSelector>,
    pub export_to: Option<IgnoredAny>,
    pub subject_alt_names: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    pub number: Option<i64>,
    pub protocol: Option<String>,
    pub name: Option<String>,
    pub target_port: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSelector {
    pub labels: Option<Labels>,
}

/// A `WorkloadEntry` spec, and a `ServiceEntry` endpoint (same shape).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadEntrySpec {
    pub address: Option<String>,
    pub ports: Option<BTreeMap<String, i64>>,
    pub labels: Option<Labels>,
    pub network: Option<String>,
    pub locality: Option<String>,
    pub weight: Option<i64>,
    pub service_account: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    pub host: Option<String>,
    pub traffic_policy: Option<TrafficPolicy>,
    pub subsets: Option<Vec<Subset>>,
    pub export_to: Option<IgnoredAny>,
    pub workload_selector: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficPolicy {
    pub load_balancer: Option<LoadBalancer>,
    pub connection_pool: Option<IgnoredAny>,
    pub outlier_detection: Option<IgnoredAny>,
    pub tls: Option<IgnoredAny>,
    pub port_level_settings: Option<IgnoredAny>,
    pub tunnel: Option<IgnoredAny>,
    pub proxy_protocol: Option<IgnoredAny>,
    pub retry_budget: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancer {
    pub simple: Option<SimpleLb>,
    pub consistent_hash: Option<ConsistentHash>,
    pub locality_lb_setting: Option<IgnoredAny>,
    pub warmup_duration_secs: Option<IgnoredAny>,
    pub warmup: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConsistentHash {
    pub http_header_name: Option<String>,
    pub http_cookie: Option<IgnoredAny>,
    pub use_source_ip: Option<bool>,
    pub http_query_parameter_name: Option<String>,
    pub ring_hash: Option<RingHash>,
    pub maglev: Option<Maglev>,
    pub minimum_ring_size: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RingHash {
    pub minimum_ring_size: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Maglev {
    pub table_size: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Subset {
    pub name: Option<String>,
    pub labels: Option<Labels>,
    pub traffic_policy: Option<TrafficPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    pub hosts: Option<Vec<String>>,
    pub gateways: Option<Vec<String>>,
    pub tcp: Option<Vec<TcpRoute>>,
    pub http: Option<IgnoredAny>,
    pub tls: Option<IgnoredAny>,
    pub export_to: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpRoute {
    #[serde(rename = "match")]
    pub matches: Option<Vec<L4Match>>,
    pub route: Option<Vec<RouteDestination>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct L4Match {
    pub destination_subnets: Option<Vec<String>>,
    pub port: Option<i64>,
    pub source_subnet: Option<String>,
    pub source_labels: Option<Labels>,
    pub gateways: Option<Vec<String>>,
    pub source_namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteDestination {
    pub destination: Option<Destination>,
    pub weight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Destination {
    pub host: Option<String>,
    pub subset: Option<String>,
    pub port: Option<PortSelector>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortSelector {
    pub number: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewaySpec {
    pub servers: Option<Vec<Server>>,
    pub selector: Option<Labels>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Server {
    pub port: Option<GatewayPort>,
    pub bind: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub tls: Option<IgnoredAny>,
    pub default_endpoint: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewayPort {
    pub number: Option<i64>,
    pub protocol: Option<String>,
    pub name: Option<String>,
    pub target_port: Option<i64>,
}
