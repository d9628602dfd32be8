//! Cross-resource checks, and the [`RoutingModel`] they resolve to.
//!
//! Host names, as Istio resolves them (`ResolveShortnameToFQDN`): a host
//! without a dot that a `VirtualService` (its `hosts`, its destinations) or
//! a `DestinationRule` writes is a short name, read as
//! `<host>.<namespace>.svc.cluster.local` in the namespace of the resource
//! that writes it; `*`, IP addresses and names with a dot are taken as
//! written. `ServiceEntry` hosts are always taken as written. So a
//! `VirtualService` host `tcp-echo` in `default` means the `ServiceEntry`
//! host `tcp-echo.default.svc.cluster.local`, and a `ServiceEntry` host
//! written `tcp-echo` matches no short name (as in Istio): write
//! `ServiceEntry` hosts in full. A `VirtualService` host
//! `*.suffix` selects every `ServiceEntry` host that ends in `.suffix`; a
//! `DestinationRule` host `*.suffix` applies to a host when no rule names
//! that host exactly. `exportTo` is checked, not applied: every resource is
//! visible everywhere, so a host has one `ServiceEntry` and one
//! `DestinationRule` at most.
//!
//! Gateway routes: a `tcp` rule applies to a Gateway the `VirtualService`'s
//! `gateways` names (or, for one match, the match's `gateways`, which
//! override the top-level list), and routes the Gateway's servers on the
//! ports its matches name, else on every server port that is not HTTP. A
//! server is routed when one of its hosts admits the `VirtualService`;
//! there, the `VirtualService` hosts need not be `ServiceEntry` hosts (they
//! are the names clients use), only destination hosts must. The Gateway
//! `selector` is not used: every Gateway is served on this node.
//!
//! `http` rules become the L7 proxy's listeners ([`http`]); `tls` rules
//! are refused.
//!
//! Every error is collected (per destination, per rule, per resource), so
//! `validate` lists them all.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use super::{
    RulesFile,
    common::RouteDestination,
    dto::{Resolution, SimpleLb},
    error::{ConfigError, FieldPath, Segment, Warning, fp},
    names::host_matches,
    policy::{HashKey, LbPolicy, LoadBalancer},
    resource::{
        DestinationRule, EndpointAddress, Gateway, L4Match, Resource, Server, ServiceEntry,
        ServicePort, Subset, TcpRule, VirtualService, WorkloadEndpoint, WorkloadEntry,
    },
    source::Source,
};
use crate::model::{Destination, Endpoint, Outlier, RoutingModel, Selection, TcpRoute};

mod http;

/// Cross-resource validation and resolution over the given files together:
/// the model, or the first error. Warnings are logged (`tracing`); see
/// [`resolve_all`] to have them, and every error.
pub fn resolve(files: &[RulesFile]) -> Result<RoutingModel, ConfigError> {
    let (model, warnings) = resolve_all(files);
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    model.map_err(|mut errors| errors.swap_remove(0))
}

/// Cross-resource validation and resolution over the given files together:
/// the model, or every error found (never an empty list); and the warnings
/// across resources (a subset that selects no endpoint, a rule never
/// reached), with or without errors. The files'
/// own warnings are in [`RulesFile::warnings`].
pub fn resolve_all(files: &[RulesFile]) -> (Result<RoutingModel, Vec<ConfigError>>, Vec<Warning>) {
    let resources: Vec<&Resource> = files.iter().flat_map(|file| &file.resources).collect();
    let mut sink = Sink::default();
    check_unique_names(&resources, &mut sink);
    let catalog = Catalog::new(&resources, &mut sink);

    let mut routes = Vec::new();
    let mut http = BTreeMap::new();
    // Mesh routes and gateway routes go to different kernel maps, so they
    // never conflict with each other.
    let mut mesh_claims: HashMap<SocketAddr, Claim> = HashMap::new();
    let mut gateway_claims: HashMap<SocketAddr, Claim> = HashMap::new();
    for resource in &resources {
        let Resource::VirtualService(vs) = resource else {
            continue;
        };
        for i in 0..vs.tls.len() {
            sink.errors.push(vs.source.error(
                fp!("spec.tls[{i}]"),
                "tls rules are not supported yet: the kernel path does not read the SNI of a \
                 connection; route the port with a tcp rule instead",
            ));
        }
        catalog.check_http(vs, &mut sink);
        let bindings = catalog.bindings(vs, &mut sink);
        catalog.http_listeners(vs, &bindings.top, &mut http, &mut sink);
        if vs.binds_mesh() {
            for (rule, route) in catalog.routes_of(vs, &mut sink) {
                claim(&mut mesh_claims, vs, rule, &route, &mut sink);
                routes.push(route);
            }
        }
        for (rule, route) in catalog.gateway_routes_of(vs, &bindings, &mut sink) {
            claim(&mut gateway_claims, vs, rule, &route, &mut sink);
            routes.push(route);
        }
    }
    let Sink { errors, warnings } = sink;
    let warnings = unique(warnings);
    if errors.is_empty() {
        routes.sort_by(|a, b| a.key.cmp(&b.key));
        (
            Ok(RoutingModel {
                routes,
                http: http.into_values().collect(),
            }),
            warnings,
        )
    } else {
        (Err(super::limits::capped(unique(errors))), warnings)
    }
}

/// What the checks found so far.
#[derive(Default)]
struct Sink {
    errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
}

impl Sink {
    /// The value, or `None` with its errors recorded.
    fn take<T>(&mut self, result: Result<T, Vec<ConfigError>>) -> Option<T> {
        result.map_err(|errors| self.errors.extend(errors)).ok()
    }
}

/// `items` without repeats, in order: a rule resolved for several ports
/// or gateways finds the same problem each time.
fn unique<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut kept: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !kept.contains(&item) {
            kept.push(item);
        }
    }
    kept
}

/// Which rule routes a service address (or gateway listener) already.
struct Claim<'a> {
    source: &'a Source,
    rule: usize,
    gateway: Option<String>,
}

/// Records that rule `rule` of `vs` routes the listeners of `route`; one
/// route per address and port (per kernel map: `claims` is the mesh's or
/// the gateways').
fn claim<'a>(
    claims: &mut HashMap<SocketAddr, Claim<'a>>,
    vs: &'a VirtualService,
    rule: usize,
    route: &TcpRoute,
    sink: &mut Sink,
) {
    for listener in &route.listeners {
        let claim = Claim {
            source: &vs.source,
            rule,
            gateway: route.gateway.clone(),
        };
        let Some(other) = claims.insert(*listener, claim) else {
            continue;
        };
        let message = match (&route.gateway, &other.gateway) {
            (Some(gateway), Some(other_gateway)) => format!(
                "gateway {gateway} listener {listener} is already routed by {} tcp[{}] (gateway \
                 {other_gateway}): an address and port where gateways accept takes one TCP \
                 route; merge the two rules, remove one, or bind the servers to different \
                 addresses",
                other.source.describe(),
                other.rule
            ),
            _ => format!(
                "service address {listener} is already routed by {} tcp[{}]: a service address \
                 and port takes one TCP route; merge the two rules or remove one",
                other.source.describe(),
                other.rule
            ),
        };
        sink.errors
            .push(vs.source.error(fp!("spec.tcp[{rule}]"), message));
        return;
    }
}

/// Two resources of one kind may not share a namespace and name.
fn check_unique_names(resources: &[&Resource], sink: &mut Sink) {
    let mut seen: HashMap<(&str, &str, &str), &Source> = HashMap::new();
    for resource in resources {
        let source = resource.source();
        let key = (source.kind, source.namespace.as_str(), source.name.as_str());
        if let Some(first) = seen.get(&key) {
            sink.errors.push(source.error(
                fp!("metadata.name"),
                format!(
                    "{} is defined twice, also in {} document {}: names are unique per kind and \
                     namespace; rename or remove one",
                    source.id(),
                    first.file.display(),
                    first.document
                ),
            ));
        } else {
            seen.insert(key, source);
        }
    }
}

/// A host a `VirtualService` or `DestinationRule` in `namespace` writes,
/// as Istio resolves it (`ResolveShortnameToFQDN`): a short name (no dot)
/// is `<host>.<namespace>.svc.cluster.local`; `*`, IP addresses and names
/// with a dot are as written.
pub fn qualify(host: &str, namespace: &str) -> String {
    if host == "*" || host.contains('.') || host.parse::<IpAddr>().is_ok() {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.cluster.local")
    }
}

struct Service<'a> {
    entry: &'a ServiceEntry,
    /// As written (Istio does not qualify ServiceEntry hosts), in order.
    hosts: Vec<&'a str>,
    /// The selected `WorkloadEntries`' endpoints, then its own.
    endpoints: Vec<&'a WorkloadEndpoint>,
}

impl Service<'_> {
    fn tcp_port(&self, number: u16) -> Option<&ServicePort> {
        self.entry
            .ports
            .iter()
            .find(|port| port.number == number && port.effective_protocol().takes_tcp_routes())
    }

    fn port_list(&self) -> String {
        list(self.entry.ports.iter().map(|port| port.number))
    }
}

struct Catalog<'a> {
    services: Vec<Service<'a>>,
    /// Each `services` host (as written) to its index: lookups by exact host
    /// stay constant-time with thousands of services.
    by_host: HashMap<&'a str, usize>,
    rules: Vec<(&'a DestinationRule, String)>,
    /// Each `rules` host (qualified) to its index.
    rule_by_host: HashMap<String, usize>,
    /// The indexes of the `rules` whose host is a wildcard, in order.
    wildcard_rules: Vec<usize>,
    gateways: Vec<&'a Gateway>,
}

/// The gateways a `VirtualService` binds, resolved.
struct Bindings<'a> {
    /// Its top-level `gateways`, `mesh` left out.
    top: Vec<&'a Gateway>,
    /// `matches[i][k]`: the `gateways` of `tcp[i].match[k]` (`mesh` left
    /// out); `None` when the match lists none and so inherits `top`.
    matches: Vec<Vec<Option<Vec<&'a Gateway>>>>,
    /// Every gateway above, once, in the order first written.
    all: Vec<&'a Gateway>,
}

impl Bindings<'_> {
    /// The matches of rule `i` that apply to `gateway`; `None` when the rule
    /// does not apply to it. Like [`mesh_matches`], an empty list means the
    /// rule has no match (it applies to every port).
    fn matches<'r>(
        &self,
        i: usize,
        rule: &'r TcpRule,
        gateway: &Gateway,
    ) -> Option<Vec<(usize, &'r L4Match)>> {
        let names = |list: &[&Gateway]| list.iter().any(|g| std::ptr::eq(*g, gateway));
        let top = names(&self.top);
        if rule.matches.is_empty() {
            return top.then(Vec::new);
        }
        let matches: Vec<(usize, &L4Match)> = rule
            .matches
            .iter()
            .enumerate()
            .filter(|(k, _)| match &self.matches[i][*k] {
                Some(list) => names(list),
                None => top,
            })
            .collect();
        (!matches.is_empty()).then_some(matches)
    }
}

impl<'a> Catalog<'a> {
    fn new(resources: &[&'a Resource], sink: &mut Sink) -> Self {
        let workloads: Vec<&WorkloadEntry> = resources
            .iter()
            .filter_map(|resource| match resource {
                Resource::WorkloadEntry(entry) => Some(entry),
                _ => None,
            })
            .collect();

        let mut services: Vec<Service> = Vec::new();
        let mut by_host: HashMap<&str, usize> = HashMap::new();
        let mut rules: Vec<(&DestinationRule, String)> = Vec::new();
        let mut rule_by_host: HashMap<String, usize> = HashMap::new();
        let mut gateways: Vec<&Gateway> = Vec::new();
        for resource in resources {
            match resource {
                Resource::ServiceEntry(entry) => {
                    let service = Service::new(entry, &workloads);
                    let mut duplicate = false;
                    for (i, host) in service.hosts.iter().enumerate() {
                        if let Some(other) = by_host.get(host).map(|&k| &services[k]) {
                            sink.errors.push(entry.source.error(
                                fp!("spec.hosts[{i}]"),
                                format!(
                                    "host {host} is also defined by {}: one ServiceEntry per \
                                     host (exportTo is not applied); merge them",
                                    other.entry.source.describe()
                                ),
                            ));
                            duplicate = true;
                        }
                    }
                    if !duplicate {
                        for host in &service.hosts {
                            by_host.insert(*host, services.len());
                        }
                        services.push(service);
                    }
                }
                Resource::DestinationRule(rule) => {
                    let host = qualify(&rule.host, &rule.source.namespace);
                    if let Some((other, _)) = rule_by_host.get(&host).map(|&k| &rules[k]) {
                        sink.errors.push(rule.source.error(
                            fp!("spec.host"),
                            format!(
                                "host {host} already has {}: merge the two DestinationRules into \
                                 one",
                                other.source.describe()
                            ),
                        ));
                    } else {
                        rule_by_host.insert(host.clone(), rules.len());
                        rules.push((rule, host));
                    }
                }
                Resource::Gateway(gateway) => gateways.push(gateway),
                _ => {}
            }
        }
        let wildcard_rules = (0..rules.len())
            .filter(|&k| rules[k].1.starts_with('*'))
            .collect();
        Self {
            services,
            by_host,
            rules,
            rule_by_host,
            wildcard_rules,
            gateways,
        }
    }

    /// The Gateway a `VirtualService` in `namespace` names `written`
    /// (`name`, `namespace/name`, or the legacy
    /// `name.namespace[.svc.cluster.local]`); `None` for `mesh`. A name that
    /// matches no Gateway is an error (IST0101) at `path`.
    fn gateway(
        &self,
        vs: &VirtualService,
        path: FieldPath,
        written: &str,
    ) -> Result<Option<&'a Gateway>, ConfigError> {
        if written == "mesh" {
            return Ok(None);
        }
        let (namespace, name) = gateway_name(written, &vs.source.namespace);
        self.gateways
            .iter()
            .find(|gateway| gateway.source.namespace == namespace && gateway.source.name == name)
            .copied()
            .map(Some)
            .ok_or_else(|| {
                vs.source.error(
                    path,
                    format!(
                        "referenced gateway not found: {written:?}; define a Gateway \
                         {namespace}/{name} or fix the name (a name without a namespace is a \
                         Gateway in the VirtualService's namespace, {})",
                        vs.source.namespace
                    ),
                )
            })
    }

    /// Every gateway `vs` names, top-level and per `tcp` match, resolved;
    /// names that match no Gateway are recorded and left out.
    fn bindings(&self, vs: &VirtualService, sink: &mut Sink) -> Bindings<'a> {
        let mut all: Vec<&Gateway> = Vec::new();
        let mut resolve = |path: FieldPath, written: &str, sink: &mut Sink| {
            let gateway = match self.gateway(vs, path, written) {
                Ok(gateway) => gateway,
                Err(error) => {
                    sink.errors.push(error);
                    None
                }
            };
            if let Some(gateway) = gateway
                && !all.iter().any(|g| std::ptr::eq(*g, gateway))
            {
                all.push(gateway);
            }
            gateway
        };
        let mut top = Vec::new();
        for (g, written) in vs.gateways.iter().enumerate() {
            top.extend(resolve(fp!("spec.gateways[{g}]"), written, sink));
        }
        let mut matches = Vec::with_capacity(vs.tcp.len());
        for (i, rule) in vs.tcp.iter().enumerate() {
            let mut per_match = Vec::with_capacity(rule.matches.len());
            for (k, m) in rule.matches.iter().enumerate() {
                if m.gateways.is_empty() {
                    per_match.push(None);
                    continue;
                }
                let mut list = Vec::new();
                for (g, written) in m.gateways.iter().enumerate() {
                    list.extend(resolve(
                        fp!("spec.tcp[{i}].match[{k}].gateways[{g}]"),
                        written,
                        sink,
                    ));
                }
                per_match.push(Some(list));
            }
            matches.push(per_match);
        }
        Bindings { top, matches, all }
    }

    /// The `http` rules of `vs`: what they name must exist (destination
    /// hosts and subsets, mirrors, match gateways).
    fn check_http(&self, vs: &VirtualService, sink: &mut Sink) {
        if vs.http.is_empty() {
            return;
        }
        let namespace = &vs.source.namespace;
        for (i, rule) in vs.http.iter().enumerate() {
            for (k, m) in rule.matches.iter().enumerate() {
                for (g, written) in m.gateways.iter().enumerate() {
                    let path = fp!("spec.http[{i}].match[{k}].gateways[{g}]");
                    if let Err(error) = self.gateway(vs, path, written) {
                        sink.errors.push(error);
                    }
                }
            }
            let destinations = rule
                .route
                .iter()
                .enumerate()
                .map(|(j, route)| {
                    (
                        fp!("spec.http[{i}].route[{j}].destination"),
                        &route.destination,
                    )
                })
                .chain(
                    rule.mirror
                        .iter()
                        .map(|mirror| (fp!("spec.http[{i}].mirror"), &mirror.destination)),
                )
                .chain(rule.mirrors.iter().enumerate().map(|(j, mirror)| {
                    (
                        fp!("spec.http[{i}].mirrors[{j}].destination"),
                        &mirror.destination,
                    )
                }));
            for (base, destination) in destinations {
                let host = &destination.host;
                if self.service(host, namespace).is_none() {
                    sink.errors.push(host_not_found(vs, base.key("host"), host));
                    continue;
                }
                if let Some(name) = &destination.subset
                    && let Err(error) =
                        find_subset(vs, &base, host, name, self.rule(host, namespace))
                {
                    sink.errors.push(error);
                }
            }
        }
    }

    /// The service of a destination host, with its host as the
    /// `ServiceEntry` writes it.
    fn service(&self, host: &str, namespace: &str) -> Option<(&Service<'a>, &'a str)> {
        let host = qualify(host, namespace);
        let &k = self.by_host.get(host.as_str())?;
        let service = &self.services[k];
        let written = service.hosts.iter().find(|written| **written == host)?;
        Some((service, *written))
    }

    /// The services a `VirtualService` host selects, each with its host
    /// that matched.
    fn select(&self, pattern: &str, namespace: &str) -> Vec<(&Service<'a>, &'a str)> {
        let pattern = qualify(pattern, namespace);
        if !pattern.starts_with('*') {
            // Not a wildcard: only the service with that very host matches.
            return self.service(&pattern, namespace).into_iter().collect();
        }
        self.services
            .iter()
            .filter_map(|service| {
                service
                    .hosts
                    .iter()
                    .find(|host| host_matches(&pattern, host))
                    .map(|host| (service, *host))
            })
            .collect()
    }

    /// The `DestinationRule` of a host: the one naming it, else the most
    /// specific wildcard one.
    fn rule(&self, host: &str, namespace: &str) -> Option<&'a DestinationRule> {
        let host = qualify(host, namespace);
        let exact = self.rule_by_host.get(&host).map(|&k| &self.rules[k]);
        exact
            .or_else(|| {
                self.wildcard_rules
                    .iter()
                    .map(|&k| &self.rules[k])
                    .filter(|(_, h)| host_matches(h, &host))
                    .max_by_key(|(_, h)| h.len())
            })
            .map(|(rule, _)| *rule)
    }

    /// The routes of a mesh-bound `VirtualService`, each with its rule
    /// index; the errors of the rules that cannot be routed are recorded.
    fn routes_of(&self, vs: &VirtualService, sink: &mut Sink) -> Vec<(usize, TcpRoute)> {
        let namespace = &vs.source.namespace;
        let applies: Vec<Option<Vec<(usize, &L4Match)>>> =
            vs.tcp.iter().map(mesh_matches).collect();
        if applies.iter().all(Option::is_none) {
            return Vec::new();
        }

        // The services the hosts select, once each, in the order written.
        let mut selected: Vec<(&Service, &str)> = Vec::new();
        let mut missing = false;
        for (h, host) in vs.hosts.iter().enumerate() {
            let found = self.select(host, namespace);
            if found.is_empty() {
                sink.errors
                    .push(host_not_found(vs, fp!("spec.hosts[{h}]"), host));
                missing = true;
            }
            for (service, matched) in found {
                if !selected.iter().any(|(s, ..)| std::ptr::eq(*s, service)) {
                    selected.push((service, matched));
                }
            }
        }
        if missing {
            // The ports of the rules depend on every host's service.
            return Vec::new();
        }

        let mut claimed: BTreeMap<u16, usize> = BTreeMap::new();
        let mut routes = Vec::new();
        for (i, (rule, matches)) in vs.tcp.iter().zip(applies).enumerate() {
            let Some(matches) = matches else {
                continue;
            };
            let Some(ports) = sink.take(
                rule_ports(vs, i, rule, &matches, &selected, &claimed).map_err(|error| vec![error]),
            ) else {
                continue;
            };
            if ports.is_empty() {
                sink.warnings.push(vs.source.warning(
                    fp!("spec.tcp[{i}]"),
                    format!(
                        "virtualService rule #{i} not used (IST0130): earlier rules route all its \
                         ports"
                    ),
                ));
                continue;
            }
            let mut built = 0;
            let mut failed = false;
            for port in &ports {
                claimed.insert(*port, i);
                match self.route(vs, i, rule, *port, &selected, &mut sink.warnings) {
                    Ok(Some(route)) => {
                        routes.push((i, route));
                        built += 1;
                    }
                    Ok(None) => {}
                    Err(errors) => {
                        sink.errors.extend(errors);
                        failed = true;
                    }
                }
            }
            if built == 0 && !failed {
                let (service, host) = selected
                    .iter()
                    .find(|(service, ..)| ports.iter().any(|p| service.tcp_port(*p).is_some()))
                    .unwrap_or(&selected[0]);
                sink.errors.push(service.entry.source.error(
                    fp!("spec.addresses"),
                    format!(
                        "service {host} has no addresses: the kernel path rewrites connections \
                         to a service address; add spec.addresses (routed by {} tcp[{i}])",
                        vs.source.describe()
                    ),
                ));
            }
        }
        routes
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
        warnings: &mut Vec<Warning>,
    ) -> Result<Option<TcpRoute>, Vec<ConfigError>> {
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
        let (selection, destinations) = self.destinations(vs, i, rule, Some(port), warnings)?;
        Ok(Some(TcpRoute {
            key: format!("{namespace}/{}/tcp[{i}]/port {port}", vs.source.name),
            source: vs.source.file.display().to_string(),
            gateway: None,
            service_host: service_host.to_owned(),
            service_port: port,
            listeners,
            selection,
            destinations,
        }))
    }

    /// The gateway routes of `vs`: for each gateway it binds, each rule
    /// that applies to that gateway, one route per server port; each with
    /// its rule index. The errors of rules that cannot be routed are
    /// recorded.
    fn gateway_routes_of(
        &self,
        vs: &VirtualService,
        bindings: &Bindings<'a>,
        sink: &mut Sink,
    ) -> Vec<(usize, TcpRoute)> {
        let mut routes = Vec::new();
        for gateway in &bindings.all {
            // Per gateway, the first rule that matches a port wins.
            let mut claimed: BTreeMap<u16, usize> = BTreeMap::new();
            for (i, rule) in vs.tcp.iter().enumerate() {
                let Some(matches) = bindings.matches(i, rule, gateway) else {
                    continue;
                };
                let ports =
                    gateway_ports(vs, i, rule, &matches, gateway, &claimed, &mut sink.warnings);
                let Some(ports) = sink.take(ports.map_err(|error| vec![error])) else {
                    continue;
                };
                for port in ports {
                    claimed.insert(port, i);
                    let route = self.gateway_route(vs, i, rule, gateway, port, &mut sink.warnings);
                    if let Some(Some(route)) = sink.take(route) {
                        routes.push((i, route));
                    }
                }
            }
        }
        routes
    }

    /// One gateway route: rule `i` of `vs` for the TCP servers of `gateway`
    /// on `port`; `None` when no such server's hosts match the
    /// `VirtualService`'s (Istio builds no route for them either).
    fn gateway_route(
        &self,
        vs: &VirtualService,
        i: usize,
        rule: &TcpRule,
        gateway: &Gateway,
        port: u16,
        warnings: &mut Vec<Warning>,
    ) -> Result<Option<TcpRoute>, Vec<ConfigError>> {
        let gateway_id = format!("{}/{}", gateway.source.namespace, gateway.source.name);
        let servers: Vec<&Server> = gateway
            .servers
            .iter()
            .filter(|server| {
                server.port.number == port && server.port.protocol.takes_gateway_tcp_routes()
            })
            .collect();
        let mut listeners = Vec::new();
        for server in servers
            .iter()
            .filter(|server| server_takes(server, gateway, vs))
        {
            let addresses = match server.bind {
                Some(bind) => vec![bind],
                None => vec![
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                ],
            };
            for address in addresses {
                let listener = SocketAddr::new(address, port);
                if !listeners.contains(&listener) {
                    listeners.push(listener);
                }
            }
        }
        if listeners.is_empty() {
            warnings.push(vs.source.warning(
                fp!("spec.tcp[{i}]"),
                format!(
                    "no host of gateway {gateway_id}'s server on port {port} ({}) matches the \
                     VirtualService's hosts ({}): no route for this server",
                    list(servers.iter().flat_map(|server| &server.hosts)),
                    vs.hosts.join(", ")
                ),
            ));
            return Ok(None);
        }

        let (selection, destinations) = self.destinations(vs, i, rule, None, warnings)?;
        Ok(Some(TcpRoute {
            key: format!(
                "{}/{}/tcp[{i}]/gateway {gateway_id} port {port}",
                vs.source.namespace, vs.source.name
            ),
            source: vs.source.file.display().to_string(),
            gateway: Some(gateway_id),
            service_host: destinations[0].host.clone(),
            service_port: port,
            listeners,
            selection,
            destinations,
        }))
    }

    /// The selection and destinations of rule `i`, for service port
    /// `service_port` (`None` for a gateway route: a gateway port is no port
    /// of the destination service). Every destination's errors.
    fn destinations(
        &self,
        vs: &VirtualService,
        i: usize,
        rule: &TcpRule,
        service_port: Option<u16>,
        warnings: &mut Vec<Warning>,
    ) -> Result<(Selection, Vec<Destination>), Vec<ConfigError>> {
        let mut errors = Vec::new();
        let first = &rule.route[0];
        let selection = match self.rule(&first.host, &vs.source.namespace) {
            Some(dr) => match dr
                .traffic_policy
                .load_balancer_for(first.port.or(service_port))
            {
                Some(lb) => selection(lb, dr, vs, &format!("tcp[{i}]")).unwrap_or_else(|error| {
                    errors.push(error);
                    Selection::default()
                }),
                None => Selection::default(),
            },
            None => Selection::default(),
        };
        let several = rule.route.len() > 1;
        let mut destinations = Vec::with_capacity(rule.route.len());
        for (j, destination) in rule.route.iter().enumerate() {
            let at = At {
                base: fp!("spec.tcp[{i}].route[{j}].destination"),
                rule: format!("tcp[{i}]"),
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
    fn destination(
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
        let Some((service, service_host)) = self.service(host, namespace) else {
            return Err(host_not_found(vs, base.key("host"), host));
        };
        check_endpoints_source(vs, &base, service)?;

        let dr = self.rule(host, namespace);
        let subset = match &destination.subset {
            Some(name) => Some(find_subset(vs, &base, host, name, dr)?),
            None => None,
        };
        let target = destination_port(vs, &base, service, destination.port, port)?;

        let wanted = subset.map(|subset| &subset.labels);
        let mut endpoints = Vec::new();
        for endpoint in service.endpoints.iter().filter(|endpoint| {
            wanted.is_none_or(|wanted| {
                wanted
                    .iter()
                    .all(|(key, value)| endpoint.labels.get(key) == Some(value))
            })
        }) {
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

impl<'a> Service<'a> {
    fn new(entry: &'a ServiceEntry, workloads: &[&'a WorkloadEntry]) -> Self {
        let hosts = entry.hosts.iter().map(String::as_str).collect();
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
    check_matches_supported(vs, i, matches)?;

    let tcp_ports: BTreeSet<u16> = selected
        .iter()
        .flat_map(|(service, ..)| &service.entry.ports)
        .filter(|port| port.effective_protocol().takes_tcp_routes())
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
                            .map(|p| format!("{} {}", p.number, p.effective_protocol().name()))
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
                    p.effective_protocol().name()
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

/// The match fields the kernel path cannot honour yet are refused, since
/// ignoring them would widen the rule.
fn check_matches_supported(
    vs: &VirtualService,
    i: usize,
    matches: &[(usize, &L4Match)],
) -> Result<(), ConfigError> {
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
                     the rule to every connection: remove it"
                ),
            ));
        }
    }
    Ok(())
}

/// The server ports of `gateway` rule `i` routes, in order, leaving out
/// those an earlier rule of the same `VirtualService` routes on this
/// gateway (first match wins): the ports its matches name, else every
/// server port that takes TCP routes.
fn gateway_ports(
    vs: &VirtualService,
    i: usize,
    rule: &TcpRule,
    matches: &[(usize, &L4Match)],
    gateway: &Gateway,
    claimed: &BTreeMap<u16, usize>,
    warnings: &mut Vec<Warning>,
) -> Result<BTreeSet<u16>, ConfigError> {
    check_matches_supported(vs, i, matches)?;
    let gateway_id = gateway.source.id();
    let tcp_ports: BTreeSet<u16> = gateway
        .servers
        .iter()
        .filter(|server| server.port.protocol.takes_gateway_tcp_routes())
        .map(|server| server.port.number)
        .collect();
    let server_list = || {
        list(
            gateway
                .servers
                .iter()
                .map(|s| format!("{} {}", s.port.number, s.port.protocol.name())),
        )
    };

    if rule.matches.is_empty() || matches.iter().any(|(_, m)| m.port.is_none()) {
        if tcp_ports.is_empty() {
            warnings.push(vs.source.warning(
                fp!("spec.tcp[{i}]"),
                format!(
                    "{gateway_id} has no TCP server (servers: {}; tcp rules apply to TCP, TLS \
                     and MONGO servers): no route for this rule on it",
                    server_list()
                ),
            ));
            return Ok(BTreeSet::new());
        }
        let ports: BTreeSet<u16> = tcp_ports
            .into_iter()
            .filter(|port| !claimed.contains_key(port))
            .collect();
        if ports.is_empty() {
            warnings.push(vs.source.warning(
                fp!("spec.tcp[{i}]"),
                format!(
                    "virtualService rule #{i} not used on {gateway_id} (IST0130): earlier rules \
                     route all the gateway's ports"
                ),
            ));
        }
        return Ok(ports);
    }

    let mut ports = BTreeSet::new();
    for (k, m) in matches {
        let Some(port) = m.port else { continue };
        let path = fp!("spec.tcp[{i}].match[{k}].port");
        if !tcp_ports.contains(&port) {
            let message = match gateway.servers.iter().find(|s| s.port.number == port) {
                Some(server) => format!(
                    "port {port} of {gateway_id} is {}: tcp rules apply to TCP, TLS and \
                     MONGO servers; route it with an http rule, or set the server's protocol to \
                     TCP",
                    server.port.protocol.name()
                ),
                None => format!(
                    "{gateway_id} has no server on port {port} (servers: {}): use one of \
                     its ports, or add a server for port {port} to the Gateway",
                    server_list()
                ),
            };
            return Err(vs.source.error(path, message));
        }
        if let Some(earlier) = claimed.get(&port) {
            return Err(vs.source.error(
                path,
                format!(
                    "port {port} of {gateway_id} is already routed by tcp[{earlier}] of \
                     this VirtualService, so this match never applies (first match wins): \
                     remove it"
                ),
            ));
        }
        ports.insert(port);
    }
    Ok(ports)
}

/// Whether a Gateway server exposes `vs`: a server host
/// (`[namespace/]dnsName`) admits the `VirtualService`'s namespace (`*`
/// any, `.` the Gateway's) and its name overlaps a `VirtualService` host
/// (either covers the other, as Istio's `host.Name.Matches`).
fn server_takes(server: &Server, gateway: &Gateway, vs: &VirtualService) -> bool {
    let vs_namespace = vs.source.namespace.as_str();
    let gateway_namespace = gateway.source.namespace.as_str();
    server.hosts.iter().any(|written| {
        let (namespace, name) = written.split_once('/').unwrap_or(("*", written));
        let admitted = match namespace {
            "*" => true,
            "." => vs_namespace == gateway_namespace,
            namespace => vs_namespace == namespace,
        };
        let name = qualify(name, gateway_namespace);
        admitted
            && vs.hosts.iter().any(|host| {
                let host = qualify(host, vs_namespace);
                host_matches(&host, &name) || host_matches(&name, &host)
            })
    })
}

/// `(namespace, name)` of a Gateway reference written in a
/// `VirtualService` of `namespace` (Istio's `resolveGatewayName`).
fn gateway_name<'w>(written: &'w str, namespace: &'w str) -> (&'w str, &'w str) {
    match written.split_once('/') {
        Some((".", name)) => (namespace, name),
        Some((ns, name)) => (ns, name),
        // Legacy: `name.namespace.svc.cluster.local` or `name.namespace`.
        None => match written.split_once('.') {
            Some((name, rest)) => (rest.split('.').next().unwrap_or(rest), name),
            None => (namespace, written),
        },
    }
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
/// `service_port` goes to: the port the destination names, else
/// `service_port` if the service has it, else the service's only port.
/// `service_port` is `None` for a gateway route.
fn destination_port<'s>(
    vs: &VirtualService,
    base: &FieldPath,
    service: &Service<'s>,
    written: Option<u16>,
    service_port: Option<u16>,
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
    if let Some(port) = service_port.and_then(|number| ports.iter().find(|p| p.number == number)) {
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
                "service {host} has several ports (ports: {}){}: set destination.port.number",
                service.port_list(),
                service_port
                    .map(|number| format!(" and none is {number}"))
                    .unwrap_or_default()
            ),
        )),
    }
}

/// Where in a `VirtualService` a destination is written, for messages.
struct At {
    /// `spec.tcp[0].route[1].destination`.
    base: FieldPath,
    /// `tcp[0]`, `http[2]`.
    rule: String,
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

/// A host a `VirtualService` names that no `ServiceEntry` defines (IST0101).
fn host_not_found(vs: &VirtualService, path: FieldPath, host: &str) -> ConfigError {
    vs.source.error(
        path,
        format!(
            "referenced host not found: {host:?}; define a ServiceEntry with hosts: [{}] or fix \
             the host",
            qualify(host, &vs.source.namespace)
        ),
    )
}

fn list<T: ToString>(items: impl Iterator<Item = T>) -> String {
    items
        .map(|item| item.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
