//! `discovery.k8s.io/v1` `EndpointSlice`: the endpoints of a Service,
//! labelled `kubernetes.io/service-name`. Kubernetes' EndpointSlice
//! controller writes them for a Service with a selector; for a Service
//! without one (and a headless one) they are written by hand, and they are
//! its only endpoints.
//!
//! Two steps, as for the other kinds: [`endpoint_slice`] checks one
//! document; [`with_slices`], at the start of `translate`, merges the
//! slices of each Service into its endpoints (an address once, whatever the
//! slices it is in) and refuses a slice that names no Service, or that
//! lacks a port of its Service.
//!
//! When `EndpointSlice`s name a Service that has a selector, the slices'
//! endpoints are its endpoints, and the `WorkloadEntries` its selector
//! matches are not: in Kubernetes, kube-proxy reads the slices, which the
//! controller writes from the selector.

use std::{net::IpAddr, sync::Arc};

use serde_yaml_ng::Value;

use super::{
    GatewayApiResource, Service,
    check::{app_protocol, tcp_only},
    dto,
};
use crate::{
    check::{Check, Checked},
    common::{Labels, Protocol},
    error::{ConfigError, FieldPath, fp},
    lines::LineIndex,
    names::is_dns1123_label,
    resource::{
        EndpointAddress, PortNames, Resource, WorkloadEndpoint,
        document::{Place, serde_message, source_of},
    },
    source::Source,
};

/// The label that names the Service of a slice.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A checked `EndpointSlice`.
#[derive(Clone, Debug)]
pub struct EndpointSlice {
    pub source: Source,
    /// Its `kubernetes.io/service-name` label: the Service of its
    /// namespace whose endpoints these are.
    pub service: String,
    /// The first address of each endpoint that is ready, once each (the
    /// addresses of one endpoint are one Pod's, and Kubernetes' consumers
    /// may use the first alone: kube-proxy does).
    pub addresses: Vec<IpAddr>,
    /// Likewise, of the endpoints that are terminating but still serving:
    /// a Service's endpoints when none of its slices has a ready one
    /// (Kubernetes' fallback, which kube-proxy follows since 1.26: better a
    /// Pod shutting down than no Pod).
    pub terminating: Vec<IpAddr>,
    pub ports: Vec<SlicePort>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicePort {
    /// The name of the Service port it is for; empty for the one port of
    /// a Service with one port.
    pub name: String,
    /// The port the endpoints listen on.
    pub port: u16,
    /// From `appProtocol` (`http`, `kubernetes.io/h2c`, `tcp`); `None`
    /// when absent.
    pub protocol: Option<Protocol>,
}

/// One `EndpointSlice` document, checked (`labels`: its
/// `metadata.labels`).
pub(super) fn endpoint_slice(
    place: &Place,
    value: Value,
    lines: &Arc<LineIndex>,
    labels: &Labels,
) -> Checked<EndpointSlice> {
    let document: dto::EndpointSliceDocument =
        serde_path_to_error::deserialize(value).map_err(|error| {
            let path = FieldPath::from(error.path());
            vec![place.error(path, serde_message(&error.into_inner()))]
        })?;
    let source = source_of(place, "EndpointSlice", document.metadata, lines)?;
    let mut cx = Check::new(&source);
    let service = service_name(&mut cx, labels);
    let family = address_type(&mut cx, document.address_type.as_deref());
    let mut addresses: Vec<IpAddr> = Vec::new();
    let mut terminating: Vec<IpAddr> = Vec::new();
    for (i, endpoint) in document
        .endpoints
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let base = fp!("endpoints[{i}]");
        let written = endpoint.addresses.unwrap_or_default();
        if written.is_empty() {
            cx.error(
                base.key("addresses"),
                "an endpoint needs at least one address: list its IP address",
            );
        }
        let mut first = None;
        for (k, address) in written.iter().enumerate() {
            let parsed = ip_of(&mut cx, base.key("addresses").index(k), address, family);
            first = first.or(parsed);
        }
        // Kubernetes: ready absent means ready; an endpoint that is not
        // serving takes no new connections; one that is terminating and
        // serving only when the Service has no ready endpoint.
        let conditions = endpoint.conditions.unwrap_or_default();
        let ready = conditions.ready != Some(false) && conditions.serving != Some(false);
        let kept = if ready {
            &mut addresses
        } else if conditions.serving == Some(true) && conditions.terminating == Some(true) {
            &mut terminating
        } else {
            continue;
        };
        if let Some(address) = first
            && !kept.contains(&address)
        {
            kept.push(address);
        }
    }
    let mut ports: Vec<SlicePort> = Vec::new();
    for (j, port) in document.ports.unwrap_or_default().into_iter().enumerate() {
        if let Some(port) = slice_port(&mut cx, j, port, &ports) {
            ports.push(port);
        }
    }
    let warnings = cx.finish()?;
    Ok((
        EndpointSlice {
            source,
            service,
            addresses,
            terminating,
            ports,
        },
        warnings,
    ))
}

/// The `kubernetes.io/service-name` label, required.
fn service_name(cx: &mut Check, labels: &Labels) -> String {
    let path = fp!("metadata.labels").key(SERVICE_NAME_LABEL);
    match labels.get(SERVICE_NAME_LABEL) {
        None => cx.error(
            path,
            format!(
                "label {SERVICE_NAME_LABEL} is required: it names the Service of the slice's \
                 namespace whose endpoints these are; add it"
            ),
        ),
        Some(name) if !is_dns1123_label(name) => cx.error(
            path,
            format!(
                "{SERVICE_NAME_LABEL} {name:?} is not a Service name: use at most 63 \
                 lower-case letters, digits and '-'"
            ),
        ),
        Some(name) => return name.clone(),
    }
    String::new()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// `addressType`: `IPv4` or `IPv6`; `FQDN` is refused.
fn address_type(cx: &mut Check, written: Option<&str>) -> Option<Family> {
    let path = fp!("addressType");
    match written {
        Some("IPv4") => Some(Family::V4),
        Some("IPv6") => Some(Family::V6),
        Some("FQDN") => {
            cx.error(
                path,
                "addressType FQDN is not supported: the kernel path connects to IP addresses \
                 and does not resolve names; list the endpoints' IP addresses in a slice of \
                 addressType IPv4 or IPv6",
            );
            None
        }
        Some(other) => {
            cx.error(
                path,
                format!("addressType {other:?} is not known: use IPv4 or IPv6"),
            );
            None
        }
        None => {
            cx.error(
                path,
                "addressType is required: IPv4 or IPv6, the family of every address of the \
                 slice",
            );
            None
        }
    }
}

/// One address of an endpoint, of the slice's family (`None`: the family
/// is unknown, and its error is recorded).
fn ip_of(cx: &mut Check, path: FieldPath, written: &str, family: Option<Family>) -> Option<IpAddr> {
    let family = family?;
    let (name, fits): (&str, fn(&IpAddr) -> bool) = match family {
        Family::V4 => ("IPv4", IpAddr::is_ipv4),
        Family::V6 => ("IPv6", IpAddr::is_ipv6),
    };
    match written.parse::<IpAddr>() {
        Ok(address) if fits(&address) => Some(address),
        _ => {
            cx.error(
                path,
                format!(
                    "address {written:?} is not an {name} address, as addressType {name} \
                     says: write one, or put it in a slice of its own family"
                ),
            );
            None
        }
    }
}

/// `ports[j]` of a slice (`earlier`: the ports before it).
fn slice_port(
    cx: &mut Check,
    j: usize,
    port: dto::SlicePort,
    earlier: &[SlicePort],
) -> Option<SlicePort> {
    let base = fp!("ports[{j}]");
    let name = port.name.unwrap_or_default();
    if !name.is_empty() && !is_dns1123_label(&name) {
        cx.error(
            base.key("name"),
            format!(
                "port name {name:?} is not a valid name: use at most 63 lower-case letters, \
                 digits and '-'"
            ),
        );
    }
    if earlier.iter().any(|p| p.name == name) {
        cx.error(
            base.key("name"),
            format!("port name {name:?} is used twice: a slice names each port once"),
        );
    }
    tcp_only(cx, base.key("protocol"), port.protocol.as_deref());
    let protocol = port
        .app_protocol
        .as_deref()
        .map(|p| app_protocol(cx, base.key("appProtocol"), Some(p)));
    let Some(number) = port.port else {
        cx.error(
            base.key("port"),
            "port is required: a slice port without a number stands for every port, which \
             the kernel path cannot connect to; give the port the endpoints listen on",
        );
        return None;
    };
    let number = cx.port(base.key("port"), number)?;
    Some(SlicePort {
        name,
        port: number,
        protocol,
    })
}

/// `resources` with each Service that `EndpointSlice`s name replaced by
/// itself with their endpoints ([`Service::slice_endpoints`]) and the
/// `appProtocol` of their ports where the Service gives none. Refused: a
/// slice whose Service is not defined, a slice without a port of its
/// Service, two slices giving one Service port different `appProtocol`s.
pub(super) fn with_slices<'r>(
    resources: &[&'r Resource],
    store: &'r mut Vec<Resource>,
    errors: &mut Vec<ConfigError>,
) -> Vec<&'r Resource> {
    let slices: Vec<&EndpointSlice> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::GatewayApi(GatewayApiResource::EndpointSlice(s)) => Some(s),
            _ => None,
        })
        .collect();
    let services: Vec<&Service> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::GatewayApi(GatewayApiResource::Service(s)) => Some(s),
            _ => None,
        })
        .collect();
    for slice in &slices {
        let namespace = &slice.source.namespace;
        if !slice.service.is_empty()
            && !services
                .iter()
                .any(|s| s.source.namespace == *namespace && s.source.name == slice.service)
        {
            errors.push(slice.source.error(
                fp!("metadata.labels").key(SERVICE_NAME_LABEL),
                format!(
                    "Service {namespace}/{} is not defined: a slice gives the endpoints of a \
                     Service of its namespace; define the Service, or fix the label",
                    slice.service
                ),
            ));
        }
    }
    let mut replaced = Vec::new();
    for service in &services {
        let of_service: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|s| {
                s.source.namespace == service.source.namespace && s.service == service.source.name
            })
            .copied()
            .collect();
        if of_service.is_empty() {
            continue;
        }
        replaced.push(service.source.id());
        store.push(Resource::GatewayApi(GatewayApiResource::Service(merge(
            service,
            &of_service,
            errors,
        ))));
    }
    let store: &'r [Resource] = store;
    resources
        .iter()
        .map(|r| match r {
            Resource::GatewayApi(GatewayApiResource::Service(s))
                if replaced.contains(&s.source.id()) =>
            {
                store
                    .iter()
                    .find(|n| n.source().id() == s.source.id())
                    .unwrap_or(r)
            }
            _ => *r,
        })
        .collect()
}

/// `service` with the endpoints of its `slices`: each address once (the
/// first slice's ports for it), each Service port's endpoint port the
/// number of the slice port of its name.
fn merge(service: &Service, slices: &[&EndpointSlice], errors: &mut Vec<ConfigError>) -> Service {
    let mut service = service.clone();
    let mut endpoints: Vec<WorkloadEndpoint> = Vec::new();
    let no_ready = slices.iter().all(|slice| slice.addresses.is_empty());
    // Per Service port, the first appProtocol a slice gives it.
    let mut protocols: Vec<Option<(Protocol, &Source, usize)>> = vec![None; service.ports.len()];
    for slice in slices {
        let mut ports = Vec::new();
        for (k, service_port) in service.ports.iter().enumerate() {
            let Some(j) = slice.ports.iter().position(|p| p.name == service_port.name) else {
                errors.push(slice.source.error(
                    fp!("ports"),
                    format!(
                        "the slice has no port {} of Service {}/{} (its ports are {}): the \
                         endpoints of a slice serve the Service ports it names, and a slice \
                         for some ports of a Service is not supported yet; add the port, named \
                         as the Service names it",
                        port_name(&service_port.name),
                        service.source.namespace,
                        service.source.name,
                        slice_ports(slice)
                    ),
                ));
                continue;
            };
            let slice_port = &slice.ports[j];
            ports.push((service_port.name.clone(), slice_port.port));
            let Some(protocol) = slice_port.protocol else {
                continue;
            };
            match protocols[k] {
                None => protocols[k] = Some((protocol, &slice.source, j)),
                Some((first, other, i)) if first != protocol => {
                    errors.push(slice.source.error(
                        fp!("ports[{j}].appProtocol"),
                        format!(
                            "appProtocol {} differs from that of {} ports[{i}] for port {} of \
                             Service {}/{}: one protocol per Service port; write the same in \
                             each slice, or set it on the Service port",
                            protocol.name(),
                            other.describe(),
                            port_name(&service_port.name),
                            service.source.namespace,
                            service.source.name
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let ports: PortNames = ports.into_iter().collect();
        let addresses = if no_ready {
            &slice.terminating
        } else {
            &slice.addresses
        };
        for address in addresses {
            if endpoints.iter().any(|e| e.address.ip() == Some(*address)) {
                continue;
            }
            endpoints.push(WorkloadEndpoint {
                address: EndpointAddress::Ip(*address),
                ports: ports.clone(),
                labels: Labels::new(),
                network: None,
                locality: None,
                weight: None,
                service_account: None,
            });
        }
    }
    for (port, protocol) in service.ports.iter_mut().zip(protocols) {
        if port.protocol == Protocol::Tcp
            && let Some((protocol, _, _)) = protocol
        {
            port.protocol = protocol;
        }
    }
    service.slice_endpoints = Some(endpoints);
    service
}

fn port_name(name: &str) -> String {
    if name.is_empty() {
        "(unnamed)".to_owned()
    } else {
        format!("{name:?}")
    }
}

fn slice_ports(slice: &EndpointSlice) -> String {
    if slice.ports.is_empty() {
        return "none".to_owned();
    }
    slice
        .ports
        .iter()
        .map(|p| format!("{} {}", port_name(&p.name), p.port))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[path = "endpoint_slice_tests.rs"]
mod tests;
