//! Gateway `tcp` routes: for each Gateway a `VirtualService` binds, the
//! rules that apply to it, one route per server port, on the servers'
//! bind addresses (any local address when unset).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use super::{
    Sink,
    catalog::{Bindings, Catalog},
    list, qualify,
    tcp::{check_matches_supported, ineffective_match},
};
use crate::{
    error::{ConfigError, Warning, fp},
    model::TcpRoute,
    names::host_matches,
    resource::{Gateway, L4Match, Server, TcpRule, VirtualService},
};

impl<'a> Catalog<'a> {
    /// The gateway routes of `vs`: for each gateway it binds, each rule
    /// that applies to that gateway, one route per server port; each with
    /// its rule index. The errors of rules that cannot be routed are
    /// recorded.
    pub(super) fn gateway_routes_of(
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
    pub(super) fn gateway_route(
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
        let mut unix = Vec::new();
        for server in servers
            .iter()
            .filter(|server| server_takes(server, gateway, vs))
        {
            if let Some(path) = &server.unix {
                if !unix.contains(path) {
                    unix.push(path.clone());
                }
                continue;
            }
            add_listeners(server.bind, port, &mut listeners);
        }
        if listeners.is_empty() && unix.is_empty() {
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

        let (selection, destinations) =
            self.destinations(vs, ("tcp", i), &rule.route, None, warnings)?;
        Ok(Some(TcpRoute {
            key: format!(
                "{}/{}/{}/gateway {gateway_id} port {port}",
                vs.source.namespace,
                vs.source.name,
                vs.rule_label("tcp", i)
            ),
            source: std::sync::Arc::clone(&vs.source.file),
            gateway: Some(gateway_id),
            service_host: destinations[0].host.clone(),
            service_port: port,
            listeners,
            unix,
            sni: Vec::new(),
            prefixes: Vec::new(),
            selection,
            destinations,
        }))
    }
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
    let mut shadowed = Vec::new();
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
            shadowed.push((path, *k, port, *earlier));
            continue;
        }
        ports.insert(port);
    }
    // A match never used is a warning, as in Istio (IST0131), and a rule
    // none of whose matches is used too (IST0130).
    if ports.is_empty() {
        warnings.push(vs.source.warning(
            fp!("spec.tcp[{i}]"),
            format!(
                "virtualService rule #{i} not used on {gateway_id} (IST0130): earlier rules \
                 route all its ports"
            ),
        ));
    } else {
        let on = format!(" of {gateway_id}");
        for (path, k, port, earlier) in shadowed {
            warnings.push(
                vs.source
                    .warning(path, ineffective_match(i, k, port, earlier, &on)),
            );
        }
    }
    Ok(ports)
}

/// Whether a Gateway server exposes `vs`: a server host
/// (`[namespace/]dnsName`) admits the `VirtualService`'s namespace (`*`
/// any, `.` the Gateway's) and its name overlaps a `VirtualService` host
/// (either covers the other, as Istio's `host.Name.Matches`).
pub(super) fn server_takes(server: &Server, gateway: &Gateway, vs: &VirtualService) -> bool {
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

/// Istio's IST0145 (an error of `istioctl analyze`): a server of `gateway`
/// on the port, bind address and a host of a server of an `earlier`
/// Gateway with the same selector (both would take the same connections).
/// Within `gateway` itself, two servers on one port and bind address whose
/// protocols take different routes (TCP and HTTP): Istio keeps one of them
/// and drops the other; refused here with the same code.
pub(super) fn conflicting_gateways(gateway: &Gateway, earlier: &[&Gateway]) -> Vec<ConfigError> {
    let selector = || {
        gateway
            .selector
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut errors = Vec::new();
    for (i, server) in gateway.servers.iter().enumerate() {
        let path = fp!("spec.servers[{i}]");
        let same_place = |other: &Server| {
            other.port.number == server.port.number
                && other.bind == server.bind
                && other.unix == server.unix
        };
        let others: Vec<String> = earlier
            .iter()
            .filter(|other| {
                other.selector == gateway.selector
                    && other.servers.iter().any(|o| {
                        same_place(o) && o.hosts.iter().any(|host| server.hosts.contains(host))
                    })
            })
            .map(|other| format!("{}/{}", other.source.namespace, other.source.name))
            .collect();
        if !others.is_empty() {
            errors.push(gateway.source.error(
                path.clone(),
                format!(
                    "IST0145: Conflict with gateways {} (workload selector {}, port {}, hosts \
                     {}): one server per port and host on the same workloads; merge the \
                     servers into one Gateway or change the port",
                    others.join(","),
                    selector(),
                    server.port.number,
                    server.hosts.join(",")
                ),
            ));
        }
        let tcp = server.port.protocol.takes_gateway_tcp_routes();
        if let Some(j) = gateway.servers[..i].iter().position(|other| {
            same_place(other) && other.port.protocol.takes_gateway_tcp_routes() != tcp
        }) {
            let other = &gateway.servers[j];
            errors.push(gateway.source.error(
                path.key("port"),
                format!(
                    "IST0145: Conflict with spec.servers[{j}] of this gateway (workload selector \
                     {}, port {}): a port takes TCP or HTTP, not both ({} here, {} there); use \
                     another port for one of them",
                    selector(),
                    server.port.number,
                    server.port.protocol.name(),
                    other.port.protocol.name()
                ),
            ));
        }
    }
    errors
}

/// Adds the sockets a server of `port` listens on to `listeners`, once
/// each: its `bind` address, else every address of both families.
pub(super) fn add_listeners(bind: Option<IpAddr>, port: u16, listeners: &mut Vec<SocketAddr>) {
    let addresses = match bind {
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
