//! `ServiceEntry`: hosts, addresses, ports, resolution and endpoints
//! (Istio's `ValidateServiceEntry`).

use std::{collections::BTreeSet, net::IpAddr};

use super::workload_entry::{WorkloadEndpoint, workload_endpoint};
use crate::{
    check::{Check, Checked},
    common::{Labels, Protocol},
    dto::{self, Location, Resolution},
    error::fp,
    names::{
        is_dns1123_label_any_case, is_partial_wildcard, parse_cidr, validate_domain, validate_fqdn,
    },
    source::Source,
};

#[derive(Clone, Debug)]
pub struct ServiceEntry {
    pub source: Source,
    /// As written: Istio does not qualify ServiceEntry hosts.
    pub hosts: Vec<String>,
    /// `/32` and `/128` CIDRs are read as their address.
    pub addresses: Vec<IpAddr>,
    /// CIDRs of more than one address (legal Istio for NONE and STATIC):
    /// mesh routes (`tcp`, and `http` through the L7 proxy) cover them (the
    /// kernel's prefix map).
    pub address_ranges: Vec<AddressRange>,
    pub ports: Vec<ServicePort>,
    pub location: Location,
    pub resolution: Resolution,
    pub endpoints: Vec<WorkloadEndpoint>,
    /// `workloadSelector.labels`: `WorkloadEntries` of the same namespace
    /// whose labels include these are endpoints too.
    pub workload_selector: Option<Labels>,
    /// `exportTo`, checked; applied by `resolve` (which namespaces see it).
    pub export_to: Vec<String>,
}

/// A ServiceEntry address that is a CIDR of more than one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressRange {
    /// Its index in `spec.addresses`.
    pub index: usize,
    /// As written (`10.0.0.1/8`).
    pub written: String,
    /// The range's first address (bits past `len` cleared: `10.0.0.0`).
    pub network: IpAddr,
    /// Prefix length, less than the family's width.
    pub len: u8,
}

impl ServiceEntry {
    /// Every address, as written for ranges, sorted (to compare entries).
    pub(crate) fn sorted_addresses(&self) -> Vec<String> {
        let mut all: Vec<String> = self.addresses.iter().map(ToString::to_string).collect();
        all.extend(
            self.address_ranges
                .iter()
                .map(|range| range.written.clone()),
        );
        all.sort();
        all
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub number: u16,
    pub name: String,
    pub protocol: Protocol,
    pub target_port: Option<u16>,
}

impl ServicePort {
    /// The protocol as Istio reads it: `protocol` when given, else the
    /// port name's prefix (`http`, `http-web`, `grpc-api`: Istio's port
    /// naming convention), else unspecified (plain TCP here).
    pub fn effective_protocol(&self) -> Protocol {
        if self.protocol != Protocol::Unspecified {
            return self.protocol;
        }
        let prefix = self.name.split('-').next().unwrap_or_default();
        Protocol::parse(prefix).unwrap_or(Protocol::Unspecified)
    }
}

/// Istio's `ValidateServiceEntry`.
/// `uses_waypoint`: `metadata.labels` has `istio.io/use-waypoint`.
pub(super) fn validate(
    source: Source,
    spec: dto::ServiceEntrySpec,
    uses_waypoint: bool,
) -> Checked<ServiceEntry> {
    let mut cx = Check::new(&source);
    let resolution = spec.resolution.unwrap_or_default();
    let location = spec.location.unwrap_or_default();

    let workload_selector = spec
        .workload_selector
        .map(|selector| workload_selector(&mut cx, selector));
    if workload_selector.is_some() && spec.endpoints.is_some() {
        cx.error(
            fp!("spec.workloadSelector"),
            "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
        );
    }

    let hosts = spec.hosts.unwrap_or_default();
    if hosts.is_empty() {
        cx.error(
            fp!("spec.hosts"),
            "service entry must have at least one host: add spec.hosts",
        );
    }
    for (i, host) in hosts.iter().enumerate() {
        let path = fp!("spec.hosts[{i}]");
        if host == "*" {
            cx.error(path, "invalid host *: a ServiceEntry names its hosts");
            continue;
        }
        if let Err(message) = validate_domain(host) {
            cx.error(path, message);
        } else if resolution != Resolution::DynamicDns && is_partial_wildcard(host) {
            cx.warn(path, format!("partial wildcard {host:?} not allowed"));
        }
    }

    let written_addresses = spec.addresses.unwrap_or_default();
    let mut addresses = Vec::new();
    let mut address_ranges = Vec::new();
    for (i, address) in written_addresses.iter().enumerate() {
        match cx.ok(
            fp!("spec.addresses[{i}]"),
            service_address(address, resolution),
        ) {
            Some(ServiceAddress::One(ip)) => addresses.push(ip),
            Some(ServiceAddress::Range { network, len }) => address_ranges.push(AddressRange {
                index: i,
                written: address.clone(),
                network,
                len,
            }),
            None => {}
        }
    }

    let ports = service_ports(
        &mut cx,
        spec.ports.unwrap_or_default(),
        written_addresses.is_empty(),
    );
    if resolution == Resolution::DynamicDns {
        dynamic_dns_rules(&mut cx, &hosts, location, uses_waypoint);
    }

    let endpoints = resolution_rules(
        &mut cx,
        resolution,
        &hosts,
        &written_addresses,
        &ports,
        spec.endpoints.unwrap_or_default(),
        workload_selector.is_some(),
    );

    // Istio: plain TCP cannot tell the hosts apart.
    if resolution != Resolution::None
        && hosts.len() > 1
        && ports.iter().any(|port| !port.protocol.is_http_or_tls())
    {
        cx.error(
            fp!("spec.hosts"),
            "multiple hosts provided with non-HTTP, non-TLS ports: use one ServiceEntry per host",
        );
    }
    let export_to = spec.export_to.unwrap_or_default();
    cx.export_to(&export_to, true);

    let warnings = cx.finish()?;
    Ok((
        ServiceEntry {
            source,
            hosts,
            addresses,
            address_ranges,
            ports,
            location,
            resolution,
            endpoints,
            workload_selector,
            export_to,
        },
        warnings,
    ))
}

/// `workloadSelector.labels`, checked (Istio's `ValidateAlphaWorkloadSelector`).
fn workload_selector(cx: &mut Check, selector: dto::WorkloadSelector) -> Labels {
    let labels = selector.labels.unwrap_or_default();
    for (key, value) in &labels {
        let path = fp!("spec.workloadSelector.labels").key(key);
        if key.is_empty() {
            cx.error(
                path,
                format!("empty key is not supported in selector: \"{key}={value}\""),
            );
        } else if key.contains('*') || value.contains('*') {
            cx.error(
                path,
                format!("wildcard is not supported in selector: \"{key}={value}\""),
            );
        }
    }
    if labels.is_empty() {
        cx.warn(
            fp!("spec.workloadSelector"),
            "service entry: workload selector specified without labels, will be applied to \
             all services in namespace",
        );
    }
    labels
}

/// Istio's DYNAMIC_DNS rules on the hosts and the location (those on
/// addresses, endpoints and ports are in [`resolution_rules`]).
fn dynamic_dns_rules(cx: &mut Check, hosts: &[String], location: Location, uses_waypoint: bool) {
    if hosts.is_empty() {
        cx.error(
            fp!("spec.hosts"),
            "at least one wildcard host must be provided for resolution type DYNAMIC_DNS",
        );
    }
    if location == Location::MeshInternal && uses_waypoint {
        cx.error(
            fp!("spec.location"),
            "location MESH_INTERNAL with resolution type DYNAMIC_DNS is not supported when \
             using waypoints: set location: MESH_EXTERNAL, or remove the \
             istio.io/use-waypoint label",
        );
    }
}

/// The rules that depend on `resolution` (Istio's switch on it), and the
/// endpoints.
fn resolution_rules(
    cx: &mut Check,
    resolution: Resolution,
    hosts: &[String],
    written_addresses: &[String],
    ports: &[ServicePort],
    written_endpoints: Vec<dto::WorkloadEntrySpec>,
    has_selector: bool,
) -> Vec<WorkloadEndpoint> {
    let port_names: Vec<&str> = ports.iter().map(|port| port.name.as_str()).collect();
    // As many as written (a Vec grown by push holds at least 4: a
    // ServiceEntry lives as long as it is applied).
    let mut endpoints = Vec::with_capacity(written_endpoints.len());
    match resolution {
        Resolution::None => {
            if !written_endpoints.is_empty() {
                cx.error(
                    fp!("spec.endpoints"),
                    "no endpoints should be provided for resolution type none: use resolution: \
                     STATIC",
                );
            }
            if has_selector {
                cx.warn(
                    fp!("spec.workloadSelector"),
                    "workloadSelector should not be set when resolution mode is NONE",
                );
            }
        }
        Resolution::Static | Resolution::Dns | Resolution::DnsRoundRobin => {
            if resolution != Resolution::Static && written_endpoints.is_empty() {
                for (i, host) in hosts.iter().enumerate() {
                    if let Err(message) = validate_fqdn(host) {
                        cx.error(
                            fp!("spec.hosts[{i}]"),
                            format!(
                                "hosts must be FQDN or contain only prefix wildcards if no \
                                 endpoints are provided for resolution mode {}, {message}",
                                resolution.name()
                            ),
                        );
                        break;
                    }
                }
            }
            if resolution == Resolution::DnsRoundRobin && written_endpoints.len() > 1 {
                cx.error(
                    fp!("spec.endpoints"),
                    "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN",
                );
            }
            for (i, endpoint) in written_endpoints.into_iter().enumerate() {
                endpoints.extend(workload_endpoint(
                    cx,
                    &fp!("spec.endpoints[{i}]"),
                    endpoint,
                    Some((resolution, &port_names)),
                ));
            }
            if resolution != Resolution::Static
                && !written_addresses.is_empty()
                && hosts.len() > 1
                && ports.iter().any(|port| port.protocol.is_tcp())
            {
                cx.warn(
                    fp!("spec.hosts"),
                    "service entry can not have more than one host specified simultaneously \
                     with address and tcp port",
                );
            }
        }
        Resolution::DynamicDns => {
            for (i, host) in hosts.iter().enumerate() {
                if !host.starts_with('*') {
                    cx.error(
                        fp!("spec.hosts[{i}]"),
                        "host must be wildcarded for resolution mode DYNAMIC_DNS",
                    );
                }
            }
            if !written_addresses.is_empty() {
                cx.error(
                    fp!("spec.addresses"),
                    "addresses cannot be set for resolution type DYNAMIC_DNS. HTTP route \
                     domains will only be generated from the hosts field values",
                );
            }
            if !written_endpoints.is_empty() {
                cx.error(
                    fp!("spec.endpoints"),
                    "endpoints cannot be set for resolution type DYNAMIC_DNS. Destination IP \
                     address determined from hosts field values",
                );
            }
            for (i, port) in ports.iter().enumerate() {
                if !matches!(
                    port.protocol,
                    Protocol::Http | Protocol::Tls | Protocol::Grpc | Protocol::Http2
                ) {
                    cx.error(
                        fp!("spec.ports[{i}].protocol"),
                        "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution \
                         type DYNAMIC_DNS",
                    );
                }
            }
        }
    }

    endpoints
}

/// A `ServiceEntry` address Istio (or the kernel path) refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceAddressError {
    #[error("{address} is not a valid IP: use an IPv4 or IPv6 address")]
    Ip { address: String },
    #[error("{address} is not a valid CIDR block")]
    Cidr { address: String },
    #[error(
        "CIDR addresses are allowed only for NONE/STATIC resolution types: write {ip} without \
         /{prefix}"
    )]
    CidrResolution { ip: IpAddr, prefix: u8 },
}

/// A valid `ServiceEntry` address.
enum ServiceAddress {
    /// An IP, or a CIDR that is one address.
    One(IpAddr),
    /// A CIDR of more than one address: its first address and length.
    Range { network: IpAddr, len: u8 },
}

fn service_address(
    address: &str,
    resolution: Resolution,
) -> Result<ServiceAddress, ServiceAddressError> {
    let Some((ip, prefix)) = address.split_once('/') else {
        return address
            .parse()
            .map(ServiceAddress::One)
            .map_err(|_| ServiceAddressError::Ip {
                address: address.to_owned(),
            });
    };
    let (ip, prefix) = parse_cidr(ip, prefix).ok_or_else(|| ServiceAddressError::Cidr {
        address: address.to_owned(),
    })?;
    if !matches!(resolution, Resolution::None | Resolution::Static) {
        return Err(ServiceAddressError::CidrResolution { ip, prefix });
    }
    let full = if ip.is_ipv4() { 32 } else { 128 };
    Ok(if prefix == full {
        ServiceAddress::One(ip)
    } else {
        ServiceAddress::Range {
            network: network_of(ip, prefix),
            len: prefix,
        }
    })
}

/// The first address of `ip/len`: the bits past `len` cleared (as Go's
/// `net.ParseCIDR` and Envoy's `CidrRange` read `10.0.0.1/8`).
pub(crate) fn network_of(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

/// `no_addresses`: `spec.addresses` is empty.
fn service_ports(
    cx: &mut Check,
    ports: Vec<Option<dto::ServicePort>>,
    no_addresses: bool,
) -> Vec<ServicePort> {
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    let mut valid = Vec::with_capacity(ports.len());
    for (i, port) in ports.into_iter().enumerate() {
        let Some(port) = port else {
            cx.error(
                fp!("spec.ports[{i}]"),
                "service entry port may not be null: give the port a number and a name",
            );
            continue;
        };
        let number = cx.port(fp!("spec.ports[{i}].number"), port.number.unwrap_or(0));
        let name = port.name.unwrap_or_default();
        if !names.insert(name.clone()) {
            cx.error(
                fp!("spec.ports[{i}].name"),
                format!("service entry port name {name:?} already defined"),
            );
        } else if !is_dns1123_label_any_case(&name) {
            cx.error(
                fp!("spec.ports[{i}].name"),
                format!(
                    "invalid port name: {name}: name the port with letters, digits and '-' \
                     (endpoints map port names to their ports)"
                ),
            );
        }
        if let Some(number) = number
            && !numbers.insert(number)
        {
            cx.error(
                fp!("spec.ports[{i}].number"),
                format!("service entry port {number} already defined"),
            );
        }
        let protocol_name = port.protocol.unwrap_or_default();
        // Istio compares the protocol as written here (`TCP` or unset).
        if no_addresses && (protocol_name.is_empty() || protocol_name == "TCP") {
            cx.warn(
                fp!("spec.ports[{i}]"),
                "addresses are required for ports serving TCP (or unset) protocol when IP \
                 Autoallocation is not enabled: add spec.addresses (there is no automatic \
                 allocation here)",
            );
        }
        let protocol = Protocol::parse(&protocol_name);
        if protocol.is_none() {
            cx.error(
                fp!("spec.ports[{i}].protocol"),
                format!(
                    "unsupported protocol: {protocol_name}: use one of {}",
                    Protocol::NAMES.map(|(name, _)| name).join(", ")
                ),
            );
        }
        let target_port = match port.target_port {
            None | Some(0) => None,
            Some(target) => cx.port(fp!("spec.ports[{i}].targetPort"), target),
        };
        if let (Some(number), Some(protocol)) = (number, protocol) {
            valid.push(ServicePort {
                number,
                name,
                protocol,
                target_port,
            });
        }
    }
    valid
}
