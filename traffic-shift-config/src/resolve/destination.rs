//! A route's destinations: the service and subset each names, the port it
//! reaches, its endpoints, and how they are picked (`loadBalancer`,
//! `outlierDetection`).

use std::net::SocketAddr;

use super::{
    At,
    catalog::{Catalog, Service},
    list,
};
use crate::{
    common::RouteDestination,
    dto::{Resolution, SimpleLb},
    error::{ConfigError, FieldPath, Segment, Warning, fp},
    model::{Destination, Endpoint, Outlier, Selection},
    policy::{HashKey, LbPolicy, LoadBalancer},
    resource::{
        DestinationRule, EndpointAddress, ServiceEntry, ServicePort, Subset, VirtualService,
    },
    source::Source,
};

impl<'a> Catalog<'a> {
    /// The selection and destinations of rule `i` of `list` (`tcp`, `tls`),
    /// whose `route` is `route`, for service port `service_port` (`None`
    /// for a gateway route: a gateway port is no port of the destination
    /// service). Every destination's errors.
    pub(super) fn destinations(
        &self,
        vs: &VirtualService,
        (list, i): (&str, usize),
        route: &[RouteDestination],
        service_port: Option<u16>,
        warnings: &mut Vec<Warning>,
    ) -> Result<(Selection, Vec<Destination>), Vec<ConfigError>> {
        let mut errors = Vec::new();
        let first = &route[0];
        let selection = match self.rule(&first.host, &vs.source.namespace) {
            Some(dr) => match dr
                .traffic_policy
                .load_balancer_for(first.port.or(service_port))
            {
                Some(lb) => {
                    selection(lb, dr, vs, &format!("{list}[{i}]")).unwrap_or_else(|error| {
                        errors.push(error);
                        Selection::default()
                    })
                }
                None => Selection::default(),
            },
            None => Selection::default(),
        };
        let several = route.len() > 1;
        let mut destinations = Vec::with_capacity(route.len());
        for (j, destination) in route.iter().enumerate() {
            let at = At {
                base: fp!("spec.{list}[{i}].route[{j}].destination"),
                rule: format!("{list}[{i}]"),
            };
            match self.destination(vs, &at, destination, service_port, several, warnings) {
                Ok((destination, ..)) => destinations.push(destination),
                Err(error) => errors.push(error),
            }
        }
        if errors.is_empty() {
            Ok((selection, destinations))
        } else {
            Err(errors)
        }
    }

    /// A destination of a rule, for service port `port` (see
    /// [`Catalog::destinations`]), with the service port it reaches and
    /// the `loadBalancer` that picks its endpoints.
    pub(super) fn destination(
        &self,
        vs: &VirtualService,
        at: &At,
        destination: &RouteDestination,
        port: Option<u16>,
        several: bool,
        warnings: &mut Vec<Warning>,
    ) -> Result<(Destination, &'a ServicePort, Option<&'a LoadBalancer>), ConfigError> {
        let base = at.base.clone();
        let namespace = &vs.source.namespace;
        let host = &destination.host;
        if host == crate::model::UNUSABLE_BACKEND {
            return Ok(unusable(destination));
        }
        let Some((service, service_host)) = self.service(host, namespace) else {
            return Err(self.host_not_found(vs, base.key("host"), host));
        };
        check_endpoints_source(vs, &base, service)?;

        let dr = self.rule(host, namespace);
        let subset = match &destination.subset {
            Some(name) => Some(find_subset(vs, &base, host, name, dr)?),
            None => None,
        };
        let target = destination_port(vs, &base, service, destination, port)?;

        let wanted = subset.map(|subset| &subset.labels);
        let mut endpoints = Vec::new();
        let serves = |entry: &ServiceEntry| entry.ports.iter().any(|p| p.number == target.number);
        for endpoint in service
            .endpoints
            .iter()
            .filter(|(_, entry)| serves(entry))
            .map(|(endpoint, _)| *endpoint)
            .filter(|endpoint| {
                wanted.is_none_or(|wanted| {
                    wanted
                        .iter()
                        .all(|(key, value)| endpoint.labels.get(key) == Some(value))
                })
            })
        {
            let EndpointAddress::Ip(address) = endpoint.address else {
                return Err(vs.source.error(
                    base.key("host"),
                    format!(
                        "endpoint {} of {service_host} ({}) is not an IP address: the kernel \
                         path connects to IP addresses and does not resolve names; list IP \
                         endpoints",
                        endpoint.address,
                        service.entry.source.describe()
                    ),
                ));
            };
            endpoints.push(Endpoint {
                addr: SocketAddr::new(
                    address,
                    endpoint
                        .ports
                        .get(&target.name)
                        .copied()
                        .or(target.target_port)
                        .unwrap_or(target.number),
                ),
                labels: endpoint.labels.clone(),
            });
        }
        if endpoints.is_empty() {
            let (field, what) = match &destination.subset {
                Some(subset) => (
                    base.key("subset"),
                    format!("subset {subset} of {service_host}"),
                ),
                None => (base.key("host"), format!("service {service_host}")),
            };
            warnings.push(vs.source.warning(
                field,
                format!(
                    "{what} selects no endpoint (IST0173): its connections will be refused; \
                     check the subset's labels against the endpoints'"
                ),
            ));
        }

        let lb = subset
            .and_then(|subset| subset.traffic_policy.load_balancer_for(Some(target.number)))
            .or_else(|| dr.and_then(|dr| dr.traffic_policy.load_balancer_for(Some(target.number))));
        let endpoint_selection = match (lb, dr) {
            (Some(lb), Some(dr)) if at.rule.starts_with("tcp") => selection(lb, dr, vs, &at.rule)?,
            _ => Selection::default(),
        };
        let weight = match destination.weight {
            None | Some(0) if !several => 1,
            weight => weight.unwrap_or(0),
        };
        let outlier = outlier(subset, dr, target.number);
        Ok((
            Destination {
                host: service_host.to_owned(),
                subset: destination.subset.clone(),
                weight,
                endpoint_selection,
                outlier,
                endpoints,
            },
            target,
            lb,
        ))
    }
}

/// The destination of Gateway API backendRefs that cannot be used: no
/// endpoints, no port (see [`crate::model::UNUSABLE_BACKEND`]).
fn unusable(
    destination: &RouteDestination,
) -> (
    Destination,
    &'static ServicePort,
    Option<&'static LoadBalancer>,
) {
    static NO_PORT: ServicePort = ServicePort {
        number: 0,
        name: String::new(),
        protocol: crate::common::Protocol::Tcp,
        target_port: None,
    };
    (
        Destination {
            host: destination.host.clone(),
            subset: None,
            weight: destination.weight.unwrap_or(1),
            endpoint_selection: Selection::default(),
            outlier: None,
            endpoints: Vec::new(),
        },
        &NO_PORT,
        None,
    )
}

/// The `outlierDetection` in force for a destination (its subset's, else
/// its rule's), as it applies to TCP: a failed connect is a gateway error.
fn outlier(subset: Option<&Subset>, dr: Option<&DestinationRule>, port: u16) -> Option<Outlier> {
    subset
        .and_then(|subset| subset.traffic_policy.outlier_detection_for(Some(port)))
        .or_else(|| dr.and_then(|dr| dr.traffic_policy.outlier_detection_for(Some(port))))
        .map(|od| Outlier {
            consecutive_failures: if od.split_external_local_origin_errors {
                od.consecutive_local_origin_failures.unwrap_or(5)
            } else {
                od.consecutive_gateway_errors
                    .unwrap_or(od.consecutive_5xx_errors)
            },
            interval: od.interval,
            base_ejection_time: od.base_ejection_time,
            max_ejection_percent: od.max_ejection_percent,
        })
}

/// The kernel path needs endpoints it can pick from.
fn check_endpoints_source(
    vs: &VirtualService,
    base: &FieldPath,
    service: &Service,
) -> Result<(), ConfigError> {
    let entry = service.entry;
    let problem = match entry.resolution {
        Resolution::None => Some(
            "has resolution NONE, which forwards connections to the address the client dialed, \
             and the kernel path picks endpoints: use resolution: STATIC with endpoints",
        ),
        Resolution::Static => None,
        _ if !service.lists_endpoints => Some(
            "resolves its hosts by DNS, which the kernel path does not do: list IP endpoints, \
             with resolution: STATIC",
        ),
        _ => None,
    };
    match problem {
        Some(problem) => Err(vs.source.error(
            base.key("host"),
            format!(
                "service {} ({}) {problem}",
                entry.hosts[0],
                entry.source.describe()
            ),
        )),
        None => Ok(()),
    }
}

pub(super) fn find_subset<'d>(
    vs: &VirtualService,
    base: &FieldPath,
    host: &str,
    name: &str,
    dr: Option<&'d DestinationRule>,
) -> Result<&'d Subset, ConfigError> {
    subset_of(&vs.source, base.key("subset"), host, name, dr)
}

/// Subset `name` of `host` in its `DestinationRule` `dr`, or the error of
/// the resource `source` that names it at `path` (Istio's wording).
pub(super) fn subset_of<'d>(
    source: &Source,
    path: FieldPath,
    host: &str,
    name: &str,
    dr: Option<&'d DestinationRule>,
) -> Result<&'d Subset, ConfigError> {
    let Some(dr) = dr else {
        return Err(source.error(
            path,
            format!(
                "subset {name:?} not found: there is no DestinationRule for host {host}; define \
                 one with host: {host} and subsets: [{{name: {name}, labels: {{...}}}}]"
            ),
        ));
    };
    dr.subsets
        .iter()
        .find(|subset| subset.name == name)
        .ok_or_else(|| {
            let defined = if dr.subsets.is_empty() {
                "none".to_owned()
            } else {
                list(dr.subsets.iter().map(|subset| &subset.name))
            };
            source.error(
                path,
                format!(
                    "subset {name:?} not found in {} for host {host} (subsets: \
                     {defined}): add the subset there or fix the name",
                    dr.source.describe()
                ),
            )
        })
}

/// The `Selection` of a `loadBalancer` setting, for a TCP route (`rule`
/// names it: `tcp[0]`).
fn selection(
    lb: &LoadBalancer,
    dr: &DestinationRule,
    vs: &VirtualService,
    rule: &str,
) -> Result<Selection, ConfigError> {
    let problem = match &lb.policy {
        LbPolicy::Simple(
            SimpleLb::Unspecified
            | SimpleLb::RoundRobin
            | SimpleLb::LeastRequest
            | SimpleLb::LeastConn,
        ) => return Ok(Selection::Smooth),
        LbPolicy::Simple(SimpleLb::Random) => return Ok(Selection::Random),
        LbPolicy::ConsistentHash(HashKey::SourceIp) => return Ok(Selection::SourceHash),
        LbPolicy::Simple(SimpleLb::Passthrough) => {
            "loadBalancer PASSTHROUGH is not supported for TCP routes: it forwards connections to \
             the address the client dialed, and the kernel path picks an endpoint; use \
             ROUND_ROBIN (the default), RANDOM, or consistentHash: {useSourceIp: true}"
                .to_owned()
        }
        LbPolicy::ConsistentHash(_) => {
            let field = match lb.path.segments().last() {
                Some(Segment::Key(field)) => field.as_str(),
                _ => "",
            };
            format!(
                "consistentHash.{field} hashes an HTTP request property, which a TCP connection \
                 does not have, so it is not supported for TCP routes: use consistentHash: \
                 {{useSourceIp: true}} to keep each client on one endpoint"
            )
        }
    };
    Err(dr.source.error(
        lb.path.clone(),
        format!("{problem} (used by {} {rule})", vs.source.id()),
    ))
}

/// Which port of the destination service a connection to service port
/// `service_port` goes to: the port the destination names, else the
/// service's only port. A service of several ports needs the port named,
/// whatever the route's port (Istio: IST0112, an error of `istioctl
/// analyze`). `service_port` is `None` for a gateway route.
fn destination_port<'s>(
    vs: &VirtualService,
    base: &FieldPath,
    service: &Service<'s>,
    destination: &RouteDestination,
    service_port: Option<u16>,
) -> Result<&'s ServicePort, ConfigError> {
    let ports = &service.ports;
    let host = &service.entry.hosts[0];
    if let Some(number) = destination.port {
        return ports
            .iter()
            .copied()
            .find(|port| port.number == number)
            .ok_or_else(|| {
                vs.source.error(
                    base.key("port").key("number"),
                    format!(
                        "port {number} is not a port of {host} (ports: {}): use one of them",
                        service.port_list()
                    ),
                )
            });
    }
    match ports.as_slice() {
        [only] => Ok(*only),
        [] => Err(vs.source.error(
            base.key("host"),
            format!("service {host} has no ports: add spec.ports to its ServiceEntry"),
        )),
        _ => Err(vs.source.error(
            base.clone(),
            format!(
                "IST0112: This VirtualService routes to a service {:?} that exposes multiple \
                 ports [{}]. Specifying a port in the destination is required to disambiguate: \
                 set destination.port.number{}",
                destination.host,
                ports
                    .iter()
                    .map(|port| port.number.to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
                service_port
                    .map(|number| format!(" (this route's port is {number})"))
                    .unwrap_or_default()
            ),
        )),
    }
}
