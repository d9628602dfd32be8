//! Istio's standard metric labels (`reporter`, `source_*`, `destination_*`,
//! `request_protocol`, ...) for a destination of the routing model, in
//! Istio's order, so dashboards and alerts built on Istio's metrics keep
//! working; and the descriptor of a metric family ([`Family`]). Shared by
//! the agent's TCP metrics and the L7 proxy's request metrics.

use std::collections::BTreeMap;

use crate::model::{Destination, Endpoint, TcpRoute};

/// Istio's label names and values for a destination endpoint, in Istio's
/// order. Values Istio takes from Kubernetes that a node does not have are
/// `unknown`, as Istio reports them when it cannot tell.
pub fn istio_labels(route: &TcpRoute, dest: &Destination, endpoint: &Endpoint) -> IstioLabels {
    Reporter {
        route_key: &route.key,
        gateway: route.gateway.as_deref(),
        protocol: "tcp",
    }
    .labels(Some(&dest.host), &endpoint.labels)
}

/// Who reports a metric: a route (its key names its namespace), through a
/// gateway or not, for a protocol (`tcp`, `http`).
#[derive(Clone, Copy, Debug)]
pub struct Reporter<'a> {
    pub route_key: &'a str,
    pub gateway: Option<&'a str>,
    pub protocol: &'static str,
}

impl Reporter<'_> {
    /// Istio's labels for a destination `host` (`None`: no destination,
    /// e.g. no route matched) and the labels of the endpoint reached
    /// (empty when none was).
    pub fn labels(&self, host: Option<&str>, endpoint: &BTreeMap<String, String>) -> IstioLabels {
        let route_namespace = self
            .route_key
            .split('/')
            .next()
            .unwrap_or("default")
            .to_owned();
        let unknown = || "unknown".to_owned();
        // `name.namespace.svc.<domain>` names its namespace; other hosts (a
        // ServiceEntry's `tcp-echo.local`) belong to the rule's namespace.
        let (name, namespace) = match host {
            Some(host) => {
                let mut parts = host.split('.');
                let name = parts.next().unwrap_or(host).to_owned();
                let namespace = match (parts.next(), parts.next()) {
                    (Some(ns), Some("svc")) => ns.to_owned(),
                    _ => route_namespace,
                };
                (name, namespace)
            }
            None => (unknown(), unknown()),
        };
        let label = |k: &str| endpoint.get(k).cloned();
        let app = label("app").unwrap_or_else(unknown);
        let version = version_of(endpoint);
        let workload = match (label("app"), label("version")) {
            (Some(app), Some(version)) => format!("{app}-{version}"),
            (Some(app), None) => app,
            _ => unknown(),
        };
        let canonical_service = label("service.istio.io/canonical-name")
            .or_else(|| label("app"))
            .unwrap_or_else(|| name.clone());
        let canonical_revision = label("service.istio.io/canonical-revision")
            .or_else(|| label("version"))
            .unwrap_or_else(|| "latest".to_owned());
        let (source_workload, source_namespace) = match self.gateway {
            Some(gateway) => {
                let (ns, name) = gateway.split_once('/').unwrap_or(("default", gateway));
                (name.to_owned(), ns.to_owned())
            }
            None => (unknown(), unknown()),
        };
        let values = [
            "source".to_owned(),
            source_workload.clone(),
            source_namespace,
            unknown(),
            unknown(),
            unknown(),
            source_workload,
            "latest".to_owned(),
            unknown(),
            workload,
            namespace.clone(),
            unknown(),
            app,
            version,
            host.map_or_else(unknown, str::to_owned),
            name,
            namespace,
            canonical_service,
            canonical_revision,
            unknown(),
            self.protocol.to_owned(),
            unknown(),
        ];
        IstioLabels(ISTIO_LABEL_NAMES.into_iter().zip(values).collect())
    }
}

/// The names of Istio's standard labels, in the order [`Reporter::labels`]
/// gives them.
pub const ISTIO_LABEL_NAMES: [&str; 22] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "connection_security_policy",
];

/// Istio's `destination_version` of an endpoint: its workload's `version`
/// label (else `app.kubernetes.io/version`), else `unknown`.
pub fn destination_version(endpoint: &Endpoint) -> String {
    version_of(&endpoint.labels)
}

fn version_of(labels: &BTreeMap<String, String>) -> String {
    labels
        .get("version")
        .or_else(|| labels.get("app.kubernetes.io/version"))
        .cloned()
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Label pairs in a fixed order.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct IstioLabels(pub Vec<(&'static str, String)>);

impl IstioLabels {
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map_or("unknown", |(_, v)| v.as_str())
    }

    /// These labels and one more, last.
    pub fn with(&self, name: &'static str, value: &str) -> Vec<(&'static str, String)> {
        let mut labels = self.0.clone();
        labels.push((name, value.to_owned()));
        labels
    }
}

/// How Prometheus types a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyType {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family served on the agent's `/metrics`: the agent's list
/// (`traffic_shift_agent::metrics::FAMILIES`) names each one once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    /// As registered: the name on the family's `# TYPE` line. A counter's
    /// samples add `_total`; a histogram's `_bucket`, `_sum` and `_count`.
    pub name: &'static str,
    pub kind: FamilyType,
    pub help: &'static str,
}

impl Family {
    /// The names its samples carry, as a query names them.
    pub fn sample_names(&self) -> Vec<String> {
        match self.kind {
            FamilyType::Counter => vec![format!("{}_total", self.name)],
            FamilyType::Gauge => vec![self.name.to_owned()],
            FamilyType::Histogram => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|suffix| format!("{}{suffix}", self.name))
                .collect(),
        }
    }
}
