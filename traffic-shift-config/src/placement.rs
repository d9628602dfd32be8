//! Which node serves which Gateway: a Gateway's `selector` against a
//! node's labels, as Istio picks the gateway pods that serve it.
//!
//! A selector matches a node when every `key: value` of it is one of the
//! node's labels; an empty selector matches every node (Istio's
//! `labels.Instance.SubsetOf`). The rules are resolved for the whole
//! fleet, the same on every node ([`crate::resolve_all`]); then
//! [`RoutingModel::for_node`] keeps what a node serves: the mesh routes,
//! and the gateway routes and listeners of the Gateways whose selector
//! matches its labels. A `VirtualService` bound to a Gateway that this
//! node does not serve is no error here: it is valid for the fleet, and
//! has no route on this node.

use std::{collections::BTreeMap, fmt, str::FromStr};

use crate::{common::Labels, model::RoutingModel, values};

/// Whether `selector` picks a node with `labels`: every key and value of
/// the selector is among the labels (an empty selector picks every node).
pub fn selector_matches(selector: &Labels, labels: &Labels) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

/// `k=v,k2=v2` (sorted by key), or `<none>` for no labels.
pub fn labels_text(labels: &Labels) -> String {
    if labels.is_empty() {
        return "<none>".to_owned();
    }
    labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A node's labels (`traffic-shift run --node-labels k=v,...`), each a
/// valid Kubernetes label, as Istio validates labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLabels(Labels);

/// `--node-labels` that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeLabelsError {
    #[error(
        "node label {item:?} is not key=value: write labels as k=v,k2=v2 (e.g. zone=a,istio=ingressgateway)"
    )]
    NotKeyValue { item: String },
    #[error(
        "node label {item:?}: {error}; a key is [prefix/]name (name: up to 63 of A-Z a-z 0-9 - _ ., starting and ending alphanumeric), a value the same or empty"
    )]
    Invalid {
        item: String,
        error: values::LabelError,
    },
    #[error("node label key {key:?} is given twice ({first:?} and {second:?}): give each key once")]
    Repeated {
        key: String,
        first: String,
        second: String,
    },
}

impl FromStr for NodeLabels {
    type Err = NodeLabelsError;

    /// `k=v,k2=v2`; spaces around items are ignored, and an empty string
    /// is a node without labels (only Gateways with an empty selector).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut labels = BTreeMap::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(NodeLabelsError::NotKeyValue {
                    item: item.to_owned(),
                });
            };
            let (key, value) = (key.trim(), value.trim());
            values::label(key, value).map_err(|error| NodeLabelsError::Invalid {
                item: item.to_owned(),
                error,
            })?;
            if let Some(first) = labels.insert(key.to_owned(), value.to_owned()) {
                return Err(NodeLabelsError::Repeated {
                    key: key.to_owned(),
                    first,
                    second: value.to_owned(),
                });
            }
        }
        Ok(Self(labels))
    }
}

impl NodeLabels {
    pub fn new(labels: Labels) -> Self {
        Self(labels)
    }

    pub fn labels(&self) -> &Labels {
        &self.0
    }

    /// Whether this node serves a Gateway with `selector`.
    pub fn selected_by(&self, selector: &Labels) -> bool {
        selector_matches(selector, &self.0)
    }
}

impl fmt::Display for NodeLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&labels_text(&self.0))
    }
}

/// A Gateway this node does not serve, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotServed {
    /// `<namespace>/<name>`.
    pub gateway: String,
    pub selector: Labels,
    pub node_labels: Labels,
}

impl fmt::Display for NotServed {
    /// `gateway default/gw: not served here (selector istio=ingressgateway
    /// does not match node labels zone=b)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gateway {}: not served here (selector {} does not match node labels {})",
            self.gateway,
            labels_text(&self.selector),
            labels_text(&self.node_labels)
        )
    }
}

impl RoutingModel {
    /// What a node with `labels` serves: every mesh route and mesh HTTP
    /// listener, and the routes and listeners of the Gateways whose
    /// selector matches the labels; with the Gateways left out, in name
    /// order. `None` (no labels given): selectors are not applied, every
    /// Gateway is served.
    pub fn for_node(mut self, labels: Option<&NodeLabels>) -> (Self, Vec<NotServed>) {
        let Some(labels) = labels else {
            return (self, Vec::new());
        };
        let mut not_served: Vec<NotServed> = self
            .gateways
            .iter()
            .filter(|g| !labels.selected_by(&g.selector))
            .map(|g| NotServed {
                gateway: g.gateway.clone(),
                selector: g.selector.clone(),
                node_labels: labels.labels().clone(),
            })
            .collect();
        not_served.sort_by(|a, b| a.gateway.cmp(&b.gateway));
        let served = |gateway: &Option<String>| {
            gateway
                .as_ref()
                .is_none_or(|g| !not_served.iter().any(|n| &n.gateway == g))
        };
        self.routes.retain(|route| served(&route.gateway));
        self.http.retain(|listener| served(&listener.gateway));
        (self, not_served)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{RulesFile, model::GatewaySelector, parse_file, resolve};

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn rules(example: &str, files: &[&str]) -> RoutingModel {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../rules")
            .join(example);
        let files: Vec<RulesFile> = files
            .iter()
            .map(|file| {
                let path = dir.join(file);
                let text = std::fs::read_to_string(&path).expect("read the example");
                parse_file(&path, &text).expect("the example parses")
            })
            .collect();
        resolve(&files).expect("the example resolves")
    }

    /// The tcp-echo seeds: the Gateway selects `istio: ingressgateway`, the
    /// VirtualService binds it and the mesh.
    fn tcp_echo() -> RoutingModel {
        rules(
            "tcp-echo",
            &[
                "service-entry.yaml",
                "destination-rule.yaml",
                "gateway.yaml",
                "examples/vs-all-v1.yaml",
            ],
        )
    }

    #[test]
    fn a_selector_matches_when_each_of_its_labels_is_the_nodes() {
        let node = labels(&[("istio", "ingressgateway"), ("zone", "a")]);
        assert!(selector_matches(
            &labels(&[("istio", "ingressgateway")]),
            &node
        ));
        assert!(selector_matches(&node, &node));
        assert!(!selector_matches(&labels(&[("zone", "b")]), &node));
        assert!(!selector_matches(&labels(&[("app", "x")]), &node));
        assert!(!selector_matches(
            &labels(&[("istio", "ingressgateway"), ("zone", "b")]),
            &node
        ));
        assert!(
            selector_matches(&Labels::new(), &Labels::new()),
            "an empty selector selects every node, one without labels too"
        );
        assert!(!selector_matches(&labels(&[("zone", "a")]), &Labels::new()));
    }

    #[test]
    fn node_labels_parse_as_istio_labels() {
        let parsed: NodeLabels =
            " zone=a, istio=ingressgateway ,topology.kubernetes.io/region=eu-1,empty="
                .parse()
                .unwrap();
        assert_eq!(
            parsed.to_string(),
            "empty=,istio=ingressgateway,topology.kubernetes.io/region=eu-1,zone=a"
        );
        let none: NodeLabels = "".parse().unwrap();
        assert!(none.labels().is_empty());
        assert_eq!(none.to_string(), "<none>");

        let error = |text: &str| text.parse::<NodeLabels>().unwrap_err().to_string();
        assert_eq!(
            error("zone"),
            "node label \"zone\" is not key=value: write labels as k=v,k2=v2 (e.g. zone=a,istio=ingressgateway)"
        );
        assert!(
            error("zone=a b").starts_with("node label \"zone=a b\": invalid tag value: \"a b\"; "),
            "{}",
            error("zone=a b")
        );
        assert!(
            error("-zone=a").starts_with("node label \"-zone=a\": invalid tag key: \"-zone\"; "),
            "{}",
            error("-zone=a")
        );
        assert!(error(&format!("{}=a", "k".repeat(64))).contains("(name is too long)"));
        assert_eq!(
            error("zone=a,zone=b"),
            "node label key \"zone\" is given twice (\"a\" and \"b\"): give each key once"
        );
        for text in ["zone=a b", "-zone=a", "zone"] {
            assert_eq!(error(text).lines().count(), 1, "one line: {}", error(text));
        }
    }

    #[test]
    fn the_model_carries_every_gateway_and_its_selector() {
        assert_eq!(
            tcp_echo().gateways,
            vec![GatewaySelector {
                gateway: "default/tcp-echo-gateway".into(),
                selector: labels(&[("istio", "ingressgateway")]),
            }]
        );
    }

    #[test]
    fn a_node_the_selector_does_not_match_keeps_only_the_mesh_routes() {
        let model = tcp_echo();
        let gateway_routes =
            |m: &RoutingModel| m.routes.iter().filter(|r| r.gateway.is_some()).count();
        let mesh_routes =
            |m: &RoutingModel| m.routes.iter().filter(|r| r.gateway.is_none()).count();
        assert_eq!((mesh_routes(&model), gateway_routes(&model)), (1, 1));

        let zone_b: NodeLabels = "zone=b".parse().unwrap();
        let (on_b, not_served) = model.clone().for_node(Some(&zone_b));
        assert_eq!((mesh_routes(&on_b), gateway_routes(&on_b)), (1, 0));
        assert_eq!(
            not_served
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "gateway default/tcp-echo-gateway: not served here (selector istio=ingressgateway does not match node labels zone=b)"
            ]
        );
        assert_eq!(on_b.gateways, model.gateways, "the Gateways stay known");

        let gateway_node: NodeLabels = "istio=ingressgateway,zone=a".parse().unwrap();
        let (on_a, not_served) = model.clone().for_node(Some(&gateway_node));
        assert_eq!(on_a, model, "a node the selector matches serves everything");
        assert!(not_served.is_empty());

        let (unlabelled, not_served) = model.clone().for_node(None);
        assert_eq!(
            unlabelled, model,
            "without node labels every Gateway is served"
        );
        assert!(not_served.is_empty());

        let (bare, not_served) = model.clone().for_node(Some(&NodeLabels::default()));
        assert_eq!((mesh_routes(&bare), gateway_routes(&bare)), (1, 0));
        assert!(not_served[0].to_string().ends_with("node labels <none>)"));
    }

    #[test]
    fn an_unserved_gateway_takes_its_http_listeners_along_and_mesh_listeners_stay() {
        let model = rules(
            "bookinfo",
            &[
                "service-entry.yaml",
                "destination-rule.yaml",
                "gateway.yaml",
                "virtual-service.yaml",
            ],
        );
        assert!(
            model.http.iter().any(|l| l.gateway.is_some()),
            "{:#?}",
            model.http
        );
        let mesh = model.http.iter().filter(|l| l.gateway.is_none()).count();
        assert!(mesh > 0);
        let (on_node, not_served) = model.for_node(Some(&"zone=b".parse().unwrap()));
        assert_eq!(not_served.len(), 1);
        assert!(on_node.http.iter().all(|l| l.gateway.is_none()));
        assert_eq!(on_node.http.len(), mesh);
    }

    #[test]
    fn an_empty_selector_is_served_by_every_node() {
        let gateway = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules/tcp-echo/gateway.yaml"),
        )
        .unwrap()
        .replace("  selector:\n    istio: ingressgateway\n", "");
        assert!(!gateway.contains("selector"));
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules/tcp-echo");
        let mut files: Vec<RulesFile> = [
            "service-entry.yaml",
            "destination-rule.yaml",
            "examples/vs-all-v1.yaml",
        ]
        .iter()
        .map(|f| {
            let path = dir.join(f);
            parse_file(&path, &std::fs::read_to_string(&path).unwrap()).unwrap()
        })
        .collect();
        files.push(parse_file(&dir.join("gateway.yaml"), &gateway).unwrap());
        let model = resolve(&files).unwrap();
        let (on_node, not_served) = model.clone().for_node(Some(&"zone=b".parse().unwrap()));
        assert!(not_served.is_empty());
        assert_eq!(on_node, model);
    }
}
