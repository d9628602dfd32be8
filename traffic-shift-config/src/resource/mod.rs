//! Validated resources: what one YAML document says, checked on its own.
//! One module per kind (the five Istio kinds, and our `Rollout`);
//! `document` reads the envelope every kind shares.
//! The checks that need other resources (hosts, subsets, listeners) are in
//! `resolve`.

mod destination_rule;
pub(crate) mod document;
mod gateway;
mod rollout;
mod server_tls;
mod service_entry;
mod virtual_service;
mod workload_entry;

use std::{borrow::Cow, path::Path, sync::Arc};

use serde_yaml_ng::Value;

pub use self::{
    destination_rule::{DestinationRule, Subset},
    gateway::{Gateway, GatewayPort, SecretRef, Server, ServerTlsMode},
    rollout::{RolloutResource, RolloutTarget, TargetRoute},
    service_entry::{ServiceEntry, ServicePort},
    virtual_service::{L4Match, TcpRule, VirtualService},
    workload_entry::{EndpointAddress, PortNames, WorkloadEndpoint, WorkloadEntry},
};
use crate::{check::Checked, lines::LineIndex, source::Source};

/// One validated resource: an Istio kind, or a `Rollout`.
#[derive(Clone, Debug)]
pub enum Resource {
    ServiceEntry(ServiceEntry),
    /// Boxed, as `Rollout`: the two largest kinds (592 and 360 bytes) made
    /// every resource as large; the applied set keeps one per resource.
    DestinationRule(Box<DestinationRule>),
    VirtualService(VirtualService),
    Gateway(Gateway),
    WorkloadEntry(WorkloadEntry),
    /// A Kubernetes `Service` or a Gateway API kind (`gateway_api`).
    GatewayApi(crate::gateway_api::GatewayApiResource),
    Rollout(Box<RolloutResource>),
}

impl Resource {
    pub fn source(&self) -> &Source {
        match self {
            Self::ServiceEntry(r) => &r.source,
            Self::DestinationRule(r) => &r.source,
            Self::VirtualService(r) => &r.source,
            Self::Gateway(r) => &r.source,
            Self::WorkloadEntry(r) => &r.source,
            Self::GatewayApi(r) => r.source(),
            Self::Rollout(r) => &r.source,
        }
    }

    /// See [`Source::relocate`].
    pub fn source_mut(&mut self) -> &mut Source {
        match self {
            Self::ServiceEntry(r) => &mut r.source,
            Self::DestinationRule(r) => &mut r.source,
            Self::VirtualService(r) => &mut r.source,
            Self::Gateway(r) => &mut r.source,
            Self::WorkloadEntry(r) => &mut r.source,
            Self::GatewayApi(r) => r.source_mut(),
            Self::Rollout(r) => &mut r.source,
        }
    }

    /// See [`crate::gateway_api::GatewayApiResource::set_generation`]; the
    /// Istio kinds have no generation.
    pub fn set_generation(&mut self, generation: i64) {
        if let Self::GatewayApi(r) = self {
            r.set_generation(generation);
        }
    }

    pub fn kind(&self) -> &'static str {
        self.source().kind
    }

    pub fn name(&self) -> &str {
        &self.source().name
    }

    /// `metadata.namespace`, `default` when absent.
    pub fn namespace(&self) -> &str {
        &self.source().namespace
    }
}

/// What one document gave: its resource and its warnings, or its errors
/// (all of them).
pub(crate) type Parsed = Checked<Resource>;

/// Parses one non-empty YAML document into a validated resource.
pub(crate) fn parse_document(
    file: &Path,
    document: usize,
    value: Cow<'_, Value>,
    lines: &Arc<LineIndex>,
) -> Parsed {
    if let Some(parsed) = crate::gateway_api::parse_document(file, document, &value, lines) {
        return parsed.map(|(r, warnings)| (Resource::GatewayApi(r), warnings));
    }
    let (place, kind, value) = document::envelope(file, document, value, lines)?;
    match kind {
        "ServiceEntry" => {
            let uses_waypoint = document::uses_waypoint(&value);
            let (source, spec) = document::typed(&place, kind, value, lines)?;
            service_entry::validate(source, spec, uses_waypoint)
                .map(|(r, warnings)| (Resource::ServiceEntry(r), warnings))
        }
        "DestinationRule" => {
            let (source, spec) = document::typed(&place, kind, value, lines)?;
            destination_rule::validate(source, spec)
                .map(|(r, warnings)| (Resource::DestinationRule(Box::new(r)), warnings))
        }
        "VirtualService" => {
            let (source, spec) = document::typed(&place, kind, value, lines)?;
            virtual_service::validate(source, spec)
                .map(|(r, warnings)| (Resource::VirtualService(r), warnings))
        }
        "Gateway" => {
            let (source, spec) = document::typed(&place, kind, value, lines)?;
            gateway::validate(source, spec).map(|(r, warnings)| (Resource::Gateway(r), warnings))
        }
        "Rollout" => {
            let (source, spec) = document::typed(&place, kind, value, lines)?;
            rollout::validate(source, spec)
                .map(|(r, warnings)| (Resource::Rollout(Box::new(r)), warnings))
        }
        _ => {
            let (source, spec) = document::typed(&place, kind, value, lines)?;
            workload_entry::validate(source, spec)
                .map(|(r, warnings)| (Resource::WorkloadEntry(r), warnings))
        }
    }
}
