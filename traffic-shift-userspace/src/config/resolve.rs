//! Cross-resource checks, and the [`RoutingModel`] they resolve to.
//!
//! Host matching, kept simple: a host written without a dot is a short
//! name, read as `<host>.<namespace>.svc.cluster.local` in the namespace of
//! the resource that writes it (Istio's rule); every other host is compared
//! as written. So a `VirtualService` host `tcp-echo` in `default` matches a
//! `ServiceEntry` host `tcp-echo.default.svc.cluster.local`, or `tcp-echo`
//! in `default`. A `VirtualService` host `*.suffix` selects every
//! `ServiceEntry` host that ends in `.suffix`; a `DestinationRule` host
//! `*.suffix` applies to a host when no rule names that host exactly.
//! `exportTo` is not implemented: every resource is visible everywhere, so
//! a host has one `ServiceEntry` and one `DestinationRule` at most.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
};

use tracing::{debug, warn};

use super::{
    RulesFile,
    error::{ConfigError, FieldPath, Segment},
    resource::{
        DestinationRule, HashKey, L4Match, LbPolicy, LoadBalancer, Resolution, Resource,
        RouteDestination, ServiceEntry, ServicePort, SimpleLb, Source, Subset, TcpRule,
        VirtualService, WorkloadEndpoint, WorkloadEntry, fp, host_matches,
    },
};
use crate::model::{Destination, Endpoint, RoutingModel, Selection, TcpRoute};

/// Cross-resource validation and resolution over the given files together.
pub fn resolve(files: &[RulesFile]) -> Result<RoutingModel, ConfigError> {
    let resources: Vec<&Resource> = files.iter().flat_map(|file| &file.resources).collect();
    check_unique_names(&resources)?;
    let catalog = Catalog::new(&resources)?;

    let mut routes = Vec::new();
    let mut claims: HashMap<SocketAddr, Claim> = HashMap::new();
    for resource in &resources {
        let Resource::VirtualService(vs) = resource else {
            continue;
        };
        if !vs.binds_mesh() {
            debug!(
                virtual_service = %vs.source.id(),
                "bound to gateways only; gateway routes are not implemented yet"
            );
            continue;
        }
        for (rule, route) in catalog.routes_of(vs)? {
            for listener in &route.listeners {
                let claim = Claim {
                    source: &vs.source,
                    rule,
                };
                if let Some(other) = claims.insert(*listener, claim) {
                    return Err(vs.source.error(
                        fp!("spec.tcp[{rule}]"),
                        format!(
                            "service address {listener} is already routed by {} tcp[{}]: a \
                             service address and port takes one TCP route; merge the two rules \
                             or remove one",
                            other.source.describe(),
                            other.rule
                        ),
                    ));
                }
            }
            routes.push(route);
        }
    }
    routes.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(RoutingModel { routes })
}

/// Which rule routes a service address already.
struct Claim<'a> {
    source: &'a Source,
    rule: usize,
}

/// Two resources of one kind may not share a namespace and name.
fn check_unique_names(resources: &[&Resource]) -> Result<(), ConfigError> {
    let mut seen: HashMap<(&str, &str, &str), &Source> = HashMap::new();
    for resource in resources {
        let source = resource.source();
        let key = (source.kind, source.namespace.as_str(), source.name.as_str());
        if let Some(first) = seen.insert(key, source) {
            return Err(source.error(
                fp!("metadata.name"),
                format!(
                    "{} is defined twice, also in {} document {}: names are unique per kind and \
                     namespace; rename or remove one",
                    source.id(),
                    first.file.display(),
                    first.document
                ),
            ));
        }
    }
    Ok(())
}

/// A host as it is compared: short names completed with the namespace.
fn canonical(host: &str, namespace: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.cluster.local")
    }
}

struct Service<'a> {
    entry: &'a ServiceEntry,
    /// `(as written, canonical)`, in the order written.
    hosts: Vec<(&'a str, String)>,
    /// The selected `WorkloadEntries`' endpoints, then its own.
    endpoints: Vec<&'a WorkloadEndpoint>,
}

impl Service<'_> {
    fn tcp_port(&self, number: u16) -> Option<&ServicePort> {
        self.entry
            .ports
            .iter()
            .find(|port| port.number == number && port.protocol.takes_tcp_routes())
    }

    fn port_list(&self) -> String {
        list(self.entry.ports.iter().map(|port| port.number))
    }
}

struct Catalog<'a> {
    services: Vec<Service<'a>>,
    rules: Vec<(&'a DestinationRule, String)>,
}

impl<'a> Catalog<'a> {
    fn new(resources: &[&'a Resource]) -> Result<Self, ConfigError> {
        let workloads: Vec<&WorkloadEntry> = resources
            .iter()
            .filter_map(|resource| match resource {
                Resource::WorkloadEntry(entry) => Some(entry),
                _ => None,
            })
            .collect();

        let mut services: Vec<Service> = Vec::new();
        let mut rules: Vec<(&DestinationRule, String)> = Vec::new();
        for resource in resources {
            match resource {
                Resource::ServiceEntry(entry) => {
                    let service = Service::new(entry, &workloads);
                    for (i, (host, canonical)) in service.hosts.iter().enumerate() {
                        if let Some(other) = services
                            .iter()
                            .find(|other| other.hosts.iter().any(|(_, c)| c == canonical))
                        {
                            return Err(entry.source.error(
                                fp!("spec.hosts[{i}]"),
                                format!(
                                    "host {host} is also defined by {}: one ServiceEntry per \
                                     host (exportTo is not implemented); merge them",
                                    other.entry.source.describe()
                                ),
                            ));
                        }
                    }
                    services.push(service);
                }
                Resource::DestinationRule(rule) => {
                    let host = canonical(&rule.host, &rule.source.namespace);
                    if let Some((other, _)) = rules.iter().find(|(_, h)| *h == host) {
                        return Err(rule.source.error(
                            fp!("spec.host"),
                            format!(
                                "host {} already has {}: merge the two DestinationRules into one",
                                rule.host,
                                other.source.describe()
                            ),
                        ));
                    }
                    rules.push((rule, host));
                }
                _ => {}
            }
        }
        Ok(Self { services, rules })
    }

    /// The service of a destination host.
    /// The service of a destination host, with its host as the
    /// `ServiceEntry` writes it.
    fn service(&self, host: &str, namespace: &str) -> Option<(&Service<'a>, &'a str)> {
        let host = canonical(host, namespace);
        self.services.iter().find_map(|service| {
            service
                .hosts
                .iter()
                .find(|(_, c)| *c == host)
                .map(|(written, _)| (service, *written))
        })
    }

    /// The services a `VirtualService` host selects, each with its host
    /// that matched.
    fn select(&self, pattern: &str, namespace: &str) -> Vec<(&Service<'a>, &'a str)> {
        let pattern = canonical(pattern, namespace);
        self.services
            .iter()
            .filter_map(|service| {
                service
                    .hosts
                    .iter()
                    .find(|(_, c)| host_matches(&pattern, c))
                    .map(|(host, _)| (service, *host))
            })
            .collect()
    }

    /// The `DestinationRule` of a host: the one naming it, else the most
    /// specific wildcard one.
    fn rule(&self, host: &str, namespace: &str) -> Option<&'a DestinationRule> {
        let host = canonical(host, namespace);
        self.rules
            .iter()
            .find(|(_, h)| *h == host)
            .or_else(|| {
                self.rules
                    .iter()
                    .filter(|(_, h)| h.starts_with('*') && host_matches(h, &host))
                    .max_by_key(|(_, h)| h.len())
            })
            .map(|(rule, _)| *rule)
    }

    /// The routes of a mesh-bound `VirtualService`, each with its rule index.
    fn routes_of(&self, vs: &VirtualService) -> Result<Vec<(usize, TcpRoute)>, ConfigError> {
        let namespace = &vs.source.namespace;
        let applies: Vec<Option<Vec<(usize, &L4Match)>>> =
            vs.tcp.iter().map(mesh_matches).collect();
        if applies.iter().all(Option::is_none) {
            return Ok(Vec::new());
        }

        // The services the hosts select, once each, in the order written.
        let mut selected: Vec<(&Service, &str)> = Vec::new();
        for (h, host) in vs.hosts.iter().enumerate() {
            let found = self.select(host, namespace);
            if found.is_empty() {
                return Err(vs.source.error(
                    fp!("spec.hosts[{h}]"),
                    format!(
                        "referenced host not found: {host:?}; define a ServiceEntry with hosts: \
                         [{host}] or fix the host"
                    ),
                ));
            }
            for (service, matched) in found {
                if !selected.iter().any(|(s, ..)| std::ptr::eq(*s, service)) {
                    selected.push((service, matched));
                }
            }
        }

        let mut claimed: BTreeMap<u16, usize> = BTreeMap::new();
        let mut routes = Vec::new();
        for (i, (rule, matches)) in vs.tcp.iter().zip(applies).enumerate() {
            let Some(matches) = matches else {
                debug!(virtual_service = %vs.source.id(), rule = i, "tcp rule does not apply to mesh");
                continue;
            };
            let ports = rule_ports(vs, i, rule, &matches, &selected, &claimed)?;
            if ports.is_empty() {
                warn!(
                    virtual_service = %vs.source.id(),
                    rule = i,
                    "tcp rule is unreachable (IST0130): earlier rules route all its ports"
                );
                continue;
            }
            let mut built = 0;
            for port in &ports {
                claimed.insert(*port, i);
                if let Some(route) = self.route(vs, i, rule, *port, &selected)? {
                    routes.push((i, route));
                    built += 1;
                }
            }
            if built == 0 {
                let (service, host) = selected
                    .iter()
                    .find(|(service, ..)| ports.iter().any(|p| service.tcp_port(*p).is_some()))
                    .unwrap_or(&selected[0]);
                return Err(service.entry.source.error(
                    fp!("spec.addresses"),
                    format!(
                        "service {host} has no addresses: the kernel path rewrites connections \
                         to a service address; add spec.addresses (routed by {} tcp[{i}])",
                        vs.source.describe()
                    ),
                ));
            }
        }
        Ok(routes)
    }

    /// One route: rule `i` of `vs` for service port `port`; `None` when no
    /// selected service has an address for it.
    fn route(
        &self,
        vs: &VirtualService,
        i: usize,
        rule: &TcpRule,
        port: u16,
        selected: &[(&Service, &str)],
    ) -> Result<Option<TcpRoute>, ConfigError> {
        let mut listeners = Vec::new();
        let mut service_host = None;
        for (service, host) in selected {
            if service.tcp_port(port).is_none() {
                continue;
            }
            service_host.get_or_insert(*host);
            for address in &service.entry.addresses {
                let listener = SocketAddr::new(*address, port);
                if !listeners.contains(&listener) {
                    listeners.push(listener);
                }
            }
        }
        let Some(service_host) = service_host.filter(|_| !listeners.is_empty()) else {
            return Ok(None);
        };

        let namespace = &vs.source.namespace;
        let selection = match self.rule(&rule.route[0].host, namespace) {
            Some(dr) => match &dr.load_balancer {
                Some(lb) => selection(lb, dr, vs, i)?,
                None => Selection::default(),
            },
            None => Selection::default(),
        };
        let several = rule.route.len() > 1;
        let destinations = rule
            .route
            .iter()
            .enumerate()
            .map(|(j, destination)| self.destination(vs, i, j, destination, port, several))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Some(TcpRoute {
            key: format!("{namespace}/{}/tcp[{i}]/port {port}", vs.source.name),
            source: vs.source.file.display().to_string(),
            service_host: service_host.to_owned(),
            service_port: port,
            listeners,
            selection,
            destinations,
        }))
    }

    /// `route[j]` of rule `i`, for service port `port`.
    fn destination(
        &self,
        vs: &VirtualService,
        i: usize,
        j: usize,
        destination: &RouteDestination,
        port: u16,
        several: bool,
    ) -> Result<Destination, ConfigError> {
        let base = fp!("spec.tcp[{i}].route[{j}].destination");
        let namespace = &vs.source.namespace;
        let host = &destination.host;
        let Some((service, service_host)) = self.service(host, namespace) else {
            return Err(vs.source.error(
                base.key("host"),
                format!(
                    "referenced host not found: {host:?}; define a ServiceEntry with hosts: \
                     [{host}] or fix the host"
                ),
            ));
        };
        check_endpoints_source(vs, &base, service)?;

        let dr = self.rule(host, namespace);
        let subset = match &destination.subset {
            Some(name) => Some(find_subset(vs, &base, host, name, dr)?),
            None => None,
        };
        let target = destination_port(vs, &base, service, destination.port, port)?;

        let wanted = subset.map(|subset| &subset.labels);
        let endpoints = service
            .endpoints
            .iter()
            .filter(|endpoint| {
                wanted.is_none_or(|wanted| {
                    wanted
                        .iter()
                        .all(|(key, value)| endpoint.labels.get(key) == Some(value))
                })
            })
            .map(|endpoint| Endpoint {
                addr: SocketAddr::new(
                    endpoint.address,
                    endpoint
                        .ports
                        .get(&target.name)
                        .copied()
                        .or(target.target_port)
                        .unwrap_or(target.number),
                ),
                labels: endpoint.labels.clone(),
            })
            .collect::<Vec<_>>();
        if endpoints.is_empty() {
            warn!(
                virtual_service = %vs.source.id(),
                host = %host,
                subset = ?destination.subset,
                "destination selects no endpoint (IST0173): its connections will be refused"
            );
        }

        let lb = subset
            .and_then(|subset| subset.load_balancer.as_ref())
            .or_else(|| dr.and_then(|dr| dr.load_balancer.as_ref()));
        let endpoint_selection = match (lb, dr) {
            (Some(lb), Some(dr)) => selection(lb, dr, vs, i)?,
            _ => Selection::default(),
        };
        let weight = match destination.weight {
            None | Some(0) if !several => 1,
            weight => weight.unwrap_or(0),
        };
        Ok(Destination {
            host: service_host.to_owned(),
            subset: destination.subset.clone(),
            weight,
            endpoint_selection,
            endpoints,
        })
    }
}

impl<'a> Service<'a> {
    fn new(entry: &'a ServiceEntry, workloads: &[&'a WorkloadEntry]) -> Self {
        let hosts = entry
            .hosts
            .iter()
            .map(|host| (host.as_str(), canonical(host, &entry.source.namespace)))
            .collect();
        let mut endpoints: Vec<&WorkloadEndpoint> = Vec::new();
        if let Some(selector) = &entry.workload_selector {
            endpoints.extend(
                workloads
                    .iter()
                    .filter(|workload| {
                        workload.source.namespace == entry.source.namespace
                            && selector.iter().all(|(key, value)| {
                                workload.endpoint.labels.get(key) == Some(value)
                            })
                    })
                    .map(|workload| &workload.endpoint),
            );
        }
        endpoints.extend(&entry.endpoints);
        Self {
            entry,
            hosts,
            endpoints,
        }
    }
}

/// The matches of a rule that apply to mesh clients; `None` when the rule
/// does not apply to them (it has matches, all bound to gateways).
fn mesh_matches(rule: &TcpRule) -> Option<Vec<(usize, &L4Match)>> {
    let matches: Vec<(usize, &L4Match)> = rule
        .matches
        .iter()
        .enumerate()
        .filter(|(_, m)| m.gateways.is_empty() || m.gateways.iter().any(|g| g == "mesh"))
        .collect();
    (rule.matches.is_empty() || !matches.is_empty()).then_some(matches)
}

/// The service ports rule `i` routes, in order, leaving out those an
/// earlier rule of the same `VirtualService` routes (first match wins).
fn rule_ports(
    vs: &VirtualService,
    i: usize,
    rule: &TcpRule,
    matches: &[(usize, &L4Match)],
    selected: &[(&Service, &str)],
    claimed: &BTreeMap<u16, usize>,
) -> Result<BTreeSet<u16>, ConfigError> {
    for (k, m) in matches {
        let base = fp!("spec.tcp[{i}].match[{k}]");
        let unsupported = [
            ("sourceLabels", !m.source_labels.is_empty()),
            ("sourceNamespace", m.source_namespace.is_some()),
            ("destinationSubnets", !m.destination_subnets.is_empty()),
            ("sourceSubnet", m.source_subnet.is_some()),
        ];
        if let Some((field, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(vs.source.error(
                base.key(field),
                format!(
                    "match {field} is not supported by the kernel path yet, which would apply \
                     the rule to every connection: remove it (or bind this match to gateways)"
                ),
            ));
        }
    }

    let tcp_ports: BTreeSet<u16> = selected
        .iter()
        .flat_map(|(service, ..)| &service.entry.ports)
        .filter(|port| port.protocol.takes_tcp_routes())
        .map(|port| port.number)
        .collect();
    if rule.matches.is_empty() || matches.iter().any(|(_, m)| m.port.is_none()) {
        if tcp_ports.is_empty() {
            return Err(vs.source.error(
                fp!("spec.tcp[{i}]"),
                format!(
                    "this tcp rule covers no port: {} has no TCP port (ports: {}); tcp rules \
                     apply to ports whose protocol is TCP (or unset)",
                    vs.hosts.join(", "),
                    list(
                        selected
                            .iter()
                            .flat_map(|(s, ..)| &s.entry.ports)
                            .map(|p| format!("{} {}", p.number, p.protocol.name()))
                    )
                ),
            ));
        }
        return Ok(tcp_ports
            .into_iter()
            .filter(|port| !claimed.contains_key(port))
            .collect());
    }

    let mut ports = BTreeSet::new();
    for (k, m) in matches {
        let Some(port) = m.port else { continue };
        let path = fp!("spec.tcp[{i}].match[{k}].port");
        let hosts = vs.hosts.join(", ");
        if !tcp_ports.contains(&port) {
            let written = selected.iter().find_map(|(service, host)| {
                service
                    .entry
                    .ports
                    .iter()
                    .find(|p| p.number == port)
                    .map(|p| (p, *host))
            });
            let message = match written {
                Some((p, host)) => format!(
                    "port {port} of {host} is {}: tcp rules apply to TCP ports; route it with \
                     an http or tls rule, or set the port's protocol to TCP",
                    p.protocol.name()
                ),
                None => format!(
                    "port {port} is not a port of {hosts} (ports: {}): use one of them, or add \
                     the port to the ServiceEntry",
                    list(
                        selected
                            .iter()
                            .flat_map(|(s, ..)| &s.entry.ports)
                            .map(|p| p.number)
                    )
                ),
            };
            return Err(vs.source.error(path, message));
        }
        if let Some(earlier) = claimed.get(&port) {
            return Err(vs.source.error(
                path,
                format!(
                    "port {port} is already routed by tcp[{earlier}] of this VirtualService, so \
                     this match never applies (first match wins): remove it"
                ),
            ));
        }
        ports.insert(port);
    }
    Ok(ports)
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
        _ if entry.endpoints.is_empty() && entry.workload_selector.is_none() => Some(
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

fn find_subset<'d>(
    vs: &VirtualService,
    base: &FieldPath,
    host: &str,
    name: &str,
    dr: Option<&'d DestinationRule>,
) -> Result<&'d Subset, ConfigError> {
    let path = base.key("subset");
    let Some(dr) = dr else {
        return Err(vs.source.error(
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
            vs.source.error(
                path,
                format!(
                    "subset {name:?} not found in {} for host {host} (subsets: \
                     {defined}): add the subset there or fix the name",
                    dr.source.describe()
                ),
            )
        })
}

/// Which port of the destination service a connection to service port
/// `service_port` goes to.
fn destination_port<'s>(
    vs: &VirtualService,
    base: &FieldPath,
    service: &Service<'s>,
    written: Option<u16>,
    service_port: u16,
) -> Result<&'s ServicePort, ConfigError> {
    let ports = &service.entry.ports;
    let host = &service.entry.hosts[0];
    if let Some(number) = written {
        return ports
            .iter()
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
    if let Some(port) = ports.iter().find(|port| port.number == service_port) {
        return Ok(port);
    }
    match ports.as_slice() {
        [only] => Ok(only),
        [] => Err(vs.source.error(
            base.key("host"),
            format!("service {host} has no ports: add spec.ports to its ServiceEntry"),
        )),
        _ => Err(vs.source.error(
            base.clone(),
            format!(
                "service {host} has several ports (ports: {}) and none is {service_port}: set \
                 destination.port.number",
                service.port_list()
            ),
        )),
    }
}

/// The `Selection` of a `loadBalancer` setting, for a TCP route.
fn selection(
    lb: &LoadBalancer,
    dr: &DestinationRule,
    vs: &VirtualService,
    rule: usize,
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
        format!("{problem} (used by {} tcp[{rule}])", vs.source.id()),
    ))
}

fn list<T: ToString>(items: impl Iterator<Item = T>) -> String {
    items
        .map(|item| item.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
