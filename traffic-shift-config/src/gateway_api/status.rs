//! The `status` of the Gateway API resources the served class owns, as the
//! spec defines it, computed as the routes are translated: a route's
//! `parents[]` (one per `parentRefs` entry of a served Gateway, or a
//! Service), each with `controllerName` and the `Accepted` and
//! `ResolvedRefs` conditions; a Gateway's `Accepted` and `Programmed`
//! conditions and its `listeners[]` with `attachedRoutes`. Each condition
//! has the resource's `observedGeneration` (`metadata.generation`, 1 when
//! not written). `lastTransitionTime` is the agent's: the rules have no
//! history of conditions (`applied::transitions` in the agent).

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use super::{CONTROLLER_NAME, GATEWAY_KIND, GROUP, Gateway, Listener, ParentKind, ParentRef};
use crate::{model::StatusKey, source::Source};

/// One condition of the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Condition {
    /// `Accepted`: true with reason `Accepted`, else false with the
    /// reason.
    pub fn accepted(reason: &'static str, message: String) -> Self {
        Self {
            type_: "Accepted",
            status: reason == "Accepted",
            reason,
            message,
        }
    }

    /// `Accepted` true: attached to `listeners` of Gateway `gateway`
    /// (`<ns>/<name>`).
    pub fn attached(gateway: &str, listeners: &[&Listener]) -> Self {
        let names: Vec<String> = listeners
            .iter()
            .map(|l| format!("{} ({} {})", l.name, l.protocol.name(), l.port))
            .collect();
        Self::accepted(
            "Accepted",
            format!(
                "attached to Gateway {gateway} listener{} {}",
                if names.len() == 1 { "" } else { "s" },
                names.join(", ")
            ),
        )
    }

    /// `Accepted` true: attached to the Service of `parent` (GAMMA).
    pub fn attached_to_service(parent: &ParentRef) -> Self {
        Self::accepted(
            "Accepted",
            format!(
                "attached to Service {}/{}{}",
                parent.namespace,
                parent.name,
                parent
                    .port
                    .map(|p| format!(" port {p}"))
                    .unwrap_or_default()
            ),
        )
    }

    /// `ResolvedRefs` false, with the reason (`BackendNotFound`,
    /// `RefNotPermitted`, `InvalidKind`).
    pub fn resolved_refs(reason: &'static str, message: String) -> Self {
        Self {
            type_: "ResolvedRefs",
            status: false,
            reason,
            message,
        }
    }

    fn to_json(&self, generation: i64) -> Json {
        json!({
            "type": self.type_,
            "status": if self.status { "True" } else { "False" },
            "reason": self.reason,
            "message": self.message,
            "observedGeneration": generation,
        })
    }
}

/// The status of one route, built as it is translated.
pub struct RouteStatus {
    key: StatusKey,
    generation: i64,
    /// Per `parentRefs` entry reported on, in the order written.
    parents: Vec<(usize, Json, Condition)>,
    resolved: Option<Condition>,
}

impl RouteStatus {
    pub fn new(source: &Source, generation: i64) -> Self {
        Self {
            key: key(source),
            generation,
            parents: Vec::new(),
            resolved: None,
        }
    }

    /// `parentRefs[i]`'s `Accepted` condition.
    pub fn parent(&mut self, parent: &ParentRef, accepted: Condition) {
        let (group, kind) = match parent.kind {
            ParentKind::Gateway => (GROUP, "Gateway"),
            ParentKind::Service => ("", "Service"),
        };
        let mut reference = json!({
            "group": group,
            "kind": kind,
            "namespace": parent.namespace,
            "name": parent.name,
        });
        if let Some(section) = &parent.section_name {
            reference["sectionName"] = json!(section);
        }
        if let Some(port) = parent.port {
            reference["port"] = json!(port);
        }
        self.parents.push((parent.index, reference, accepted));
    }

    /// The first backendRef that cannot be used, if any (`ResolvedRefs`
    /// is for the whole route).
    pub fn resolved(&mut self, condition: Option<Condition>) {
        self.resolved = condition;
    }

    fn to_json(&self) -> Json {
        let resolved = self.resolved.clone().unwrap_or(Condition {
            type_: "ResolvedRefs",
            status: true,
            reason: "ResolvedRefs",
            message: "every backendRef resolved".to_owned(),
        });
        let mut parents: Vec<&(usize, Json, Condition)> = self.parents.iter().collect();
        parents.sort_by_key(|(index, ..)| *index);
        let parents: Vec<Json> = parents
            .into_iter()
            .map(|(_, reference, accepted)| {
                json!({
                    "parentRef": reference,
                    "controllerName": CONTROLLER_NAME,
                    "conditions": [
                        accepted.to_json(self.generation),
                        resolved.to_json(self.generation),
                    ],
                })
            })
            .collect();
        json!({ "parents": parents })
    }
}

/// Every status of one resolution.
#[derive(Default)]
pub struct Statuses {
    map: BTreeMap<StatusKey, Json>,
    /// Per Gateway and listener name, the routes attached.
    attached: BTreeMap<(StatusKey, String), Vec<StatusKey>>,
}

impl Statuses {
    pub fn route(&mut self, status: RouteStatus) {
        let json = status.to_json();
        self.map.insert(status.key, json);
    }

    /// `route` is attached to listener `listener` of the Gateway of
    /// `gateway`.
    pub fn attach(&mut self, gateway: &Source, listener: &str, route: &Source) {
        let routes = self
            .attached
            .entry((key(gateway), listener.to_owned()))
            .or_default();
        let route = key(route);
        if !routes.contains(&route) {
            routes.push(route);
        }
    }

    /// A served Gateway's status (after its routes'); `unresolved`: why
    /// a listener's certificate cannot be used, if it cannot.
    pub fn gateway(
        &mut self,
        gateway: &Gateway,
        unresolved: impl Fn(&Listener) -> Option<super::https::Unresolved>,
    ) {
        let id = key(&gateway.source);
        let generation = gateway.generation;
        let ok = |type_: &'static str, reason: &'static str, message: &str| {
            Condition {
                type_,
                status: true,
                reason,
                message: message.to_owned(),
            }
            .to_json(generation)
        };
        let listeners: Vec<Json> = gateway
            .listeners
            .iter()
            .map(|l| {
                let attached = self
                    .attached
                    .get(&(id.clone(), l.name.clone()))
                    .map_or(0, Vec::len);
                let resolved = if l.invalid_kinds.is_empty() {
                    let refs = if l.certificate_refs.is_empty() {
                        "no references to resolve"
                    } else {
                        "its certificate is served"
                    };
                    ok("ResolvedRefs", "ResolvedRefs", refs)
                } else {
                    Condition {
                        type_: "ResolvedRefs",
                        status: false,
                        reason: "InvalidRouteKinds",
                        message: format!(
                            "allowedRoutes.kinds names {}, which is no route kind a {} \
                             listener takes",
                            l.invalid_kinds.join(", "),
                            l.protocol.name()
                        ),
                    }
                    .to_json(generation)
                };
                json!({
                    "name": l.name,
                    "supportedKinds": l.kinds.iter().map(|k| json!({"group": GROUP, "kind": k})).collect::<Vec<_>>(),
                    "attachedRoutes": attached,
                    "conditions": match unresolved(l) {
                        None => json!([
                            ok("Accepted", "Accepted", "the listener is served"),
                            ok("Programmed", "Programmed", "the listener is served"),
                            resolved,
                        ]),
                        Some(unresolved) => unresolved_conditions(&unresolved, generation),
                    },
                })
            })
            .collect();
        let mut status = json!({
            "conditions": [
                ok("Accepted", "Accepted", "served by this node"),
                ok("Programmed", "Programmed", &super::addresses::programmed_message(gateway)),
            ],
            "listeners": listeners,
        });
        if let Some(addresses) = super::addresses::status_addresses(gateway) {
            status["addresses"] = addresses;
        }
        self.map.insert(id, status);
    }

    pub fn into_map(self) -> BTreeMap<StatusKey, Json> {
        self.map
    }
}

/// The conditions of a listener whose certificate cannot be used:
/// `Accepted`, then `Programmed` and `ResolvedRefs` `False`.
fn unresolved_conditions(unresolved: &super::https::Unresolved, generation: i64) -> Json {
    let condition = |type_: &'static str, status: bool, reason: &'static str, message: String| {
        Condition {
            type_,
            status,
            reason,
            message,
        }
        .to_json(generation)
    };
    json!([
        condition(
            "Accepted",
            true,
            "Accepted",
            "the listener is served".to_owned()
        ),
        condition(
            "Programmed",
            false,
            "Invalid",
            format!("not served: {}", unresolved.message)
        ),
        condition(
            "ResolvedRefs",
            false,
            unresolved.reason,
            unresolved.message.clone()
        ),
    ])
}

fn key(source: &Source) -> StatusKey {
    StatusKey {
        kind: source.kind.to_owned(),
        namespace: source.namespace.clone(),
        name: source.name.clone(),
    }
}

/// The kinds (as `Source::kind`) whose resources have a status here: what
/// `get` adds it to.
pub const STATUS_KINDS: [&str; 5] = [
    "HTTPRoute",
    "GRPCRoute",
    "TCPRoute",
    "TLSRoute",
    GATEWAY_KIND,
];
