//! `WorkloadEntry`, and the endpoints a `ServiceEntry` lists, which have
//! the same shape (Istio's `validateWorkloadEntry`).

use std::{fmt, net::IpAddr};

use crate::{
    check::{Check, Checked, weight_message},
    common::Labels,
    dto::{self, Resolution},
    error::{FieldPath, fp},
    names::{is_dns1123_label_any_case, validate_fqdn},
    source::Source,
};

/// Where an endpoint is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointAddress {
    Ip(IpAddr),
    /// A DNS name (resolution `DNS`, or a `WorkloadEntry`): legal Istio,
    /// refused by `resolve` when a route would need it (the kernel path
    /// does not resolve names).
    Name(String),
    /// `unix://<path>`: legal Istio, refused by `resolve` likewise.
    Unix(String),
    /// No address, with a `network`: reached through that network's
    /// gateway in Istio; refused by `resolve` likewise.
    Unset,
}

impl EndpointAddress {
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::Ip(ip) => Some(*ip),
            Self::Name(_) | Self::Unix(_) | Self::Unset => None,
        }
    }
}

impl fmt::Display for EndpointAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::Name(name) => f.write_str(name),
            Self::Unix(path) => write!(f, "unix://{path}"),
            Self::Unset => f.write_str("(no address)"),
        }
    }
}

/// A `ServiceEntry` endpoint or a `WorkloadEntry` spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadEndpoint {
    pub address: EndpointAddress,
    /// Service port name -> this endpoint's port.
    pub ports: PortNames,
    pub labels: Labels,
    pub network: Option<String>,
    pub locality: Option<String>,
    /// Parsed, not used yet.
    pub weight: Option<u32>,
    pub service_account: Option<String>,
}

/// An endpoint's port numbers by service port name, sorted by name: a few
/// entries, where a `BTreeMap` node took ~300 bytes per endpoint (6 MB of
/// what 10 000 applied services held).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortNames(Box<[(String, u16)]>);

impl PortNames {
    /// The port of service port `name`.
    pub fn get(&self, name: &str) -> Option<&u16> {
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Name and port, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &u16)> {
        self.0.iter().map(|(n, p)| (n, p))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl FromIterator<(String, u16)> for PortNames {
    /// The last port of a name wins, as a map's insert does.
    fn from_iter<I: IntoIterator<Item = (String, u16)>>(iter: I) -> Self {
        let mut ports: Vec<(String, u16)> = iter.into_iter().collect();
        // Stable: of equal names the last written is kept by the dedup below.
        ports.sort_by(|a, b| a.0.cmp(&b.0));
        ports.reverse();
        ports.dedup_by(|later, earlier| later.0 == earlier.0);
        ports.reverse();
        Self(ports.into_boxed_slice())
    }
}

#[derive(Clone, Debug)]
pub struct WorkloadEntry {
    pub source: Source,
    pub endpoint: WorkloadEndpoint,
}

/// A `ServiceEntry` endpoint (`service` = its resolution and port names)
/// or a `WorkloadEntry` spec (`service` = `None`): Istio's
/// `validateWorkloadEntry`.
pub(super) fn workload_endpoint(
    cx: &mut Check,
    base: &FieldPath,
    endpoint: dto::WorkloadEntrySpec,
    service: Option<(Resolution, &[&str])>,
) -> Option<WorkloadEndpoint> {
    let errors_before = cx.errors.len();
    let address = endpoint_address(cx, base, &endpoint, service);

    let mut ports = Vec::new();
    for (name, number) in endpoint.ports.unwrap_or_default() {
        let path = base.key("ports").key(&name);
        if let Some((_, names)) = service
            && !names.contains(&name.as_str())
        {
            cx.error(
                path.clone(),
                format!(
                    "endpoint port {number} is not defined by the service entry: port name \
                     {name:?} is none of its port names ({})",
                    names.join(", ")
                ),
            );
        }
        if !is_dns1123_label_any_case(&name) {
            cx.error(path.clone(), format!("invalid port name: {name}"));
        }
        if let Some(number) = cx.port(path, number) {
            ports.push((name, number));
        }
    }
    let ports: PortNames = ports.into_iter().collect();
    let labels = endpoint.labels.unwrap_or_default();
    cx.labels(&base.key("labels"), &labels);

    let weight = endpoint.weight.and_then(|weight| {
        u32::try_from(weight)
            .map_err(|_| cx.error(base.key("weight"), weight_message(weight)))
            .ok()
    });

    let address = address.filter(|_| cx.errors.len() == errors_before)?;
    Some(WorkloadEndpoint {
        address,
        ports,
        labels,
        network: endpoint.network,
        locality: endpoint.locality,
        weight,
        service_account: endpoint.service_account,
    })
}

/// An endpoint's `address`: an IP, a DNS name (not with STATIC), a unix
/// socket, or none (with a `network`).
fn endpoint_address(
    cx: &mut Check,
    base: &FieldPath,
    endpoint: &dto::WorkloadEntrySpec,
    service: Option<(Resolution, &[&str])>,
) -> Option<EndpointAddress> {
    let written = endpoint.address.clone().unwrap_or_default();
    // Istio checks a DNS endpoint's address on its own: an IP or a name
    // (not a unix socket, not empty).
    if matches!(
        service,
        Some((Resolution::Dns | Resolution::DnsRoundRobin, _))
    ) {
        return if let Ok(ip) = written.parse() {
            Some(EndpointAddress::Ip(ip))
        } else if validate_fqdn(&written).is_ok() {
            Some(EndpointAddress::Name(written))
        } else {
            cx.error(
                base.key("address"),
                format!(
                    "endpoint address {written:?} is not a valid FQDN or an IP address: with \
                     resolution DNS endpoints are host names or IP addresses"
                ),
            );
            None
        };
    }
    if written.is_empty() {
        match &endpoint.network {
            Some(network) if !network.is_empty() => {
                cx.warn(
                    base.key("address"),
                    format!("address is unset with network {network:?}"),
                );
                Some(EndpointAddress::Unset)
            }
            _ => {
                cx.error(
                    base.key("address"),
                    "address is required: set the endpoint's IP address",
                );
                None
            }
        }
    } else if let Some(path) = written.strip_prefix("unix://") {
        if let Err(message) = unix_address(path) {
            cx.error(base.key("address"), message);
        }
        if endpoint
            .ports
            .as_ref()
            .is_some_and(|ports| !ports.is_empty())
        {
            cx.error(
                base.key("ports"),
                format!("unix endpoint {written} must not include ports"),
            );
        }
        if let Some((_, names)) = service
            && names.len() != 1
        {
            cx.error(
                base.key("address"),
                "exactly 1 service port required for unix endpoints",
            );
        }
        Some(EndpointAddress::Unix(path.to_owned()))
    } else if let Ok(ip) = written.parse() {
        Some(EndpointAddress::Ip(ip))
    } else if matches!(service, Some((Resolution::Static, _))) {
        cx.error(
            base.key("address"),
            format!(
                "endpoint address {written:?} is not a valid IP address: with resolution STATIC \
                 endpoints are IP addresses"
            ),
        );
        None
    } else if validate_fqdn(&written).is_err() {
        cx.error(
            base.key("address"),
            format!("endpoint address {written:?} is not a valid FQDN or an IP address"),
        );
        None
    } else {
        Some(EndpointAddress::Name(written))
    }
}

/// A `unix://` address Istio refuses (`unix_address`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnixAddressError {
    #[error("unix address must not be empty")]
    Empty,
    #[error("{path} is not an absolute path to a file")]
    NotAbsolute { path: String },
}

/// Istio's `ValidateUnixAddress` (the part after `unix://`).
pub(super) fn unix_address(path: &str) -> Result<(), UnixAddressError> {
    if path.is_empty() {
        return Err(UnixAddressError::Empty);
    }
    if path.starts_with('@') || (path.starts_with('/') && !path.ends_with('/')) {
        Ok(())
    } else {
        Err(UnixAddressError::NotAbsolute {
            path: path.to_owned(),
        })
    }
}

pub(super) fn validate(source: Source, spec: dto::WorkloadEntrySpec) -> Checked<WorkloadEntry> {
    let mut cx = Check::new(&source);
    let endpoint = workload_endpoint(&mut cx, &fp!("spec"), spec, None);
    let warnings = cx.finish()?;
    // `workload_endpoint` records an error whenever it gives `None`.
    let endpoint = endpoint
        .ok_or_else(|| vec![source.error(fp!("spec"), "invalid WorkloadEntry: fix its address")])?;
    Ok((WorkloadEntry { source, endpoint }, warnings))
}

#[cfg(test)]
mod tests {
    use super::PortNames;

    #[test]
    fn port_names_are_found_by_name_and_the_last_of_a_name_wins() {
        let ports: PortNames = [
            ("tcp", 9000),
            ("http", 8080),
            ("tcp", 9001),
            ("admin", 15000),
        ]
        .into_iter()
        .map(|(n, p)| (n.to_owned(), p))
        .collect();
        assert_eq!(ports.len(), 3);
        assert_eq!(ports.get("tcp"), Some(&9001));
        assert_eq!(ports.get("http"), Some(&8080));
        assert_eq!(ports.get("admin"), Some(&15000));
        assert_eq!(ports.get("grpc"), None);
        let names: Vec<&str> = ports.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["admin", "http", "tcp"]);
        assert!(PortNames::default().is_empty());
    }
}
