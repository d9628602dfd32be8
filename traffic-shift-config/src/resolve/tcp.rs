//! Mesh `tcp` routes: the rules of a mesh-bound `VirtualService`, one
//! route per service port its matches name (else every TCP port of the
//! services its hosts select), on the services' addresses.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use super::{
    Sink,
    catalog::{Catalog, Service},
    list,
};
use crate::{
    error::{ConfigError, Warning, fp},
    model::{ServicePrefix, TcpRoute},
    resource::{L4Match, TcpRule, VirtualService},
};

impl Catalog<'_> {
    /// The routes of a mesh-bound `VirtualService`, each with its rule
    /// index; the errors of the rules that cannot be routed are recorded.
    pub(super) fn routes_of(&self, vs: &VirtualService, sink: &mut Sink) -> Vec<(usize, TcpRoute)> {
        let namespace = &vs.source.namespace;
        let applies: Vec<Option<Vec<(usize, &L4Match)>>> =
            vs.tcp.iter().map(mesh_matches).collect();
        if applies.iter().all(Option::is_none) {
            return Vec::new();
        }

        // The services the hosts select, once each, in the order written.
        let mut selected: Vec<(&Service, String)> = Vec::new();
        let mut missing = false;
        for (h, host) in vs.hosts.iter().enumerate() {
            let found = self.select(host, namespace);
            if found.is_empty() {
                sink.errors
                    .push(self.host_not_found(vs, fp!("spec.hosts[{h}]"), host));
                missing = true;
            }
            for (service, _, matched) in found {
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
            let ports = rule_ports(
                vs,
                i,
                rule,
                &matches,
                &selected,
                &claimed,
                &mut sink.warnings,
            );
            let Some(ports) = sink.take(ports.map_err(|error| vec![error])) else {
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
    pub(super) fn route(
        &self,
        vs: &VirtualService,
        i: usize,
        rule: &TcpRule,
        port: u16,
        selected: &[(&Service, String)],
        warnings: &mut Vec<Warning>,
    ) -> Result<Option<TcpRoute>, Vec<ConfigError>> {
        let mut listeners = Vec::new();
        let mut prefixes = Vec::new();
        let mut service_host = None;
        for (service, host) in selected {
            if service.tcp_port(port).is_none() {
                continue;
            }
            service_host.get_or_insert(host.as_str());
            for address in &service.entry.addresses {
                let listener = SocketAddr::new(*address, port);
                if !listeners.contains(&listener) {
                    listeners.push(listener);
                }
            }
            for range in &service.entry.address_ranges {
                let prefix = ServicePrefix {
                    network: range.network,
                    len: range.len,
                    port,
                };
                if !prefixes.contains(&prefix) {
                    prefixes.push(prefix);
                }
            }
        }
        let Some(service_host) =
            service_host.filter(|_| !listeners.is_empty() || !prefixes.is_empty())
        else {
            return Ok(None);
        };

        let namespace = &vs.source.namespace;
        let (selection, destinations) =
            self.destinations(vs, ("tcp", i), &rule.route, Some(port), warnings)?;
        Ok(Some(TcpRoute {
            key: format!(
                "{namespace}/{}/{}/port {port}",
                vs.source.name,
                vs.rule_label("tcp", i)
            ),
            source: std::sync::Arc::clone(&vs.source.file),
            gateway: None,
            service_host: service_host.to_owned(),
            service_port: port,
            listeners,
            unix: Vec::new(),
            sni: Vec::new(),
            prefixes,
            selection,
            destinations,
        }))
    }
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
/// earlier rule of the same `VirtualService` routes (first match wins: a
/// match that is never used is a warning, as in Istio).
fn rule_ports(
    vs: &VirtualService,
    i: usize,
    rule: &TcpRule,
    matches: &[(usize, &L4Match)],
    selected: &[(&Service, String)],
    claimed: &BTreeMap<u16, usize>,
    warnings: &mut Vec<Warning>,
) -> Result<BTreeSet<u16>, ConfigError> {
    check_matches_supported(vs, i, matches)?;

    let tcp_ports: BTreeSet<u16> = selected
        .iter()
        .flat_map(|(service, ..)| &service.ports)
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
                            .flat_map(|(s, ..)| &s.ports)
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
    let mut shadowed = Vec::new();
    for (k, m) in matches {
        let Some(port) = m.port else { continue };
        let path = fp!("spec.tcp[{i}].match[{k}].port");
        let hosts = vs.hosts.join(", ");
        if !tcp_ports.contains(&port) {
            let written = selected.iter().find_map(|(service, host)| {
                service
                    .ports
                    .iter()
                    .find(|p| p.number == port)
                    .map(|p| (*p, host.as_str()))
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
                            .flat_map(|(s, ..)| &s.ports)
                            .map(|p| p.number)
                    )
                ),
            };
            return Err(vs.source.error(path, message));
        }
        if let Some(earlier) = claimed.get(&port) {
            shadowed.push((path, *k, port, *earlier));
            continue;
        }
        ports.insert(port);
    }
    // Every match shadowed: the caller warns that the rule is not used.
    if !ports.is_empty() {
        for (path, k, port, earlier) in shadowed {
            warnings.push(
                vs.source
                    .warning(path, ineffective_match(i, k, port, earlier, "")),
            );
        }
    }
    Ok(ports)
}

/// Istio's IST0131 (an `istioctl analyze` info): match `k` of tcp rule `i`
/// names port `port`, which rule `earlier` routes already. `on` names the
/// gateway, if any (` on Gateway ns/name`).
pub(super) fn ineffective_match(i: usize, k: usize, port: u16, earlier: usize, on: &str) -> String {
    format!(
        "VirtualService rule tcp[{i}] match {k} is not used (duplicate/overlapping match in rule \
         tcp[{earlier}]) (IST0131): port {port}{on} is already routed by tcp[{earlier}] (first \
         match wins)"
    )
}

/// The match fields the kernel path cannot honour yet are refused, since
/// ignoring them would widen the rule.
pub(super) fn check_matches_supported(
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
