//! Gateway `tls` rules: TLS passthrough, chosen by the SNI of the
//! ClientHello. A `VirtualService` `tls` rule bound to a Gateway server of
//! protocol `TLS` in `PASSTHROUGH` mode (or a `TLSRoute`, translated into
//! one) becomes one [`TcpRoute`] per server port with its SNI names
//! ([`TcpRoute::sni`]). The kernel does not see these routes: the choice
//! needs the ClientHello, which comes after the connect, so the agent
//! accepts on the port in user space, reads the SNI without terminating
//! TLS, and splices the connection to the endpoint the weights pick.
//!
//! One address and port takes the TLS routes of several rules (each its
//! own SNI names), or one kernel TCP route, not both; one SNI name on one
//! address and port takes one rule.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
};

use super::{Claim, Claims, Sink, catalog::Catalog, gateway::server_takes};
use crate::{
    common::Protocol,
    error::fp,
    http::TlsRule,
    model::TcpRoute,
    resource::{Gateway, Server, ServerTlsMode, VirtualService},
};

/// Whether `server` takes `tls` rules: protocol `TLS`, `tls.mode:
/// PASSTHROUGH`, on a port (not a unix socket).
fn passthrough(server: &Server) -> bool {
    server.port.protocol == Protocol::Tls
        && server.tls_mode == Some(ServerTlsMode::Passthrough)
        && server.unix.is_none()
}

impl Catalog<'_> {
    /// The routes of the `tls` rules of `vs` (bound to Gateways; a rule
    /// bound to the mesh is refused: the connect-time hook cannot read the
    /// SNI), each with its rule index. The errors of rules that cannot be
    /// routed are recorded.
    pub(super) fn tls_routes_of(
        &self,
        vs: &VirtualService,
        sink: &mut Sink,
    ) -> Vec<(usize, TcpRoute)> {
        let mut routes = Vec::new();
        for (i, rule) in vs.tls.iter().enumerate() {
            // (gateway, port) -> the SNI names of the matches bound there.
            let mut wanted: Vec<(&Gateway, u16, Vec<String>)> = Vec::new();
            for (k, m) in rule.matches.iter().enumerate() {
                let written = if m.gateways.is_empty() {
                    vs.gateways
                        .iter()
                        .enumerate()
                        .map(|(g, w)| (fp!("spec.gateways[{g}]"), w))
                        .collect::<Vec<_>>()
                } else {
                    m.gateways
                        .iter()
                        .enumerate()
                        .map(|(g, w)| (fp!("spec.tls[{i}].match[{k}].gateways[{g}]"), w))
                        .collect()
                };
                if written.is_empty() || written.iter().any(|(_, w)| *w == "mesh") {
                    sink.errors.push(vs.source.error(
                        vs.rule_path("tls", i),
                        "tls rules bound to the mesh are not supported yet: the connect-time \
                         hook does not read the SNI of a connection; bind the rule to a Gateway \
                         server with protocol TLS and tls.mode PASSTHROUGH, or route the port \
                         with a tcp rule",
                    ));
                    continue;
                }
                for (path, name) in written {
                    let gateway = match self.gateway(vs, path, name) {
                        Ok(Some(gateway)) => gateway,
                        Ok(None) => continue,
                        Err(error) => {
                            sink.errors.push(error);
                            continue;
                        }
                    };
                    let ports: BTreeSet<u16> = gateway
                        .servers
                        .iter()
                        .filter(|s| passthrough(s) && m.port.is_none_or(|p| p == s.port.number))
                        .filter(|s| server_takes(s, gateway, vs))
                        .map(|s| s.port.number)
                        .collect();
                    if ports.is_empty() {
                        sink.warnings.push(vs.source.warning(
                            vs.rule_path("tls", i),
                            format!(
                                "{} has no server with protocol TLS and tls.mode PASSTHROUGH{} \
                                 whose hosts match the VirtualService's: no route for this \
                                 rule on it",
                                gateway.source.id(),
                                m.port.map(|p| format!(" on port {p}")).unwrap_or_default()
                            ),
                        ));
                        continue;
                    }
                    for port in ports {
                        let at = wanted
                            .iter()
                            .position(|(g, p, _)| std::ptr::eq(*g, gateway) && *p == port)
                            .unwrap_or_else(|| {
                                wanted.push((gateway, port, Vec::new()));
                                wanted.len() - 1
                            });
                        let names = &mut wanted[at].2;
                        for sni in &m.sni_hosts {
                            let sni = sni.to_ascii_lowercase();
                            if !names.contains(&sni) {
                                names.push(sni);
                            }
                        }
                    }
                }
            }
            for (gateway, port, sni) in wanted {
                let route = self.tls_route(vs, i, rule, gateway, port, sni, &mut sink.warnings);
                if let Some(route) = sink.take(route) {
                    routes.push((i, route));
                }
            }
        }
        routes
    }

    /// One TLS route: rule `i` of `vs` on the passthrough servers of
    /// `gateway` on `port`, for the SNI names `sni`.
    #[expect(clippy::too_many_arguments, reason = "one route's parts, each needed")]
    fn tls_route(
        &self,
        vs: &VirtualService,
        i: usize,
        rule: &TlsRule,
        gateway: &Gateway,
        port: u16,
        sni: Vec<String>,
        warnings: &mut Vec<crate::error::Warning>,
    ) -> Result<TcpRoute, Vec<crate::error::ConfigError>> {
        let gateway_id = format!("{}/{}", gateway.source.namespace, gateway.source.name);
        let mut listeners = Vec::new();
        for server in gateway
            .servers
            .iter()
            .filter(|s| passthrough(s) && s.port.number == port && server_takes(s, gateway, vs))
        {
            super::gateway::add_listeners(server.bind, port, &mut listeners);
        }
        let (selection, destinations) =
            self.destinations(vs, ("tls", i), &rule.route, None, warnings)?;
        Ok(TcpRoute {
            key: format!(
                "{}/{}/{}/gateway {gateway_id} port {port}",
                vs.source.namespace,
                vs.source.name,
                vs.rule_label("tls", i)
            ),
            source: std::sync::Arc::clone(&vs.source.file),
            gateway: Some(gateway_id),
            service_host: destinations[0].host.clone(),
            service_port: port,
            listeners,
            unix: Vec::new(),
            sni,
            prefixes: Vec::new(),
            selection,
            destinations,
        })
    }
}

/// The SNI names each TLS address and port takes, and by which rule.
#[derive(Default)]
pub(super) struct TlsClaims<'a> {
    names: HashMap<(SocketAddr, String), Claim<'a>>,
}

impl<'a> TlsClaims<'a> {
    /// Records that rule `rule` of `vs` takes the SNI names of `route` on
    /// its listeners: one rule per name, address and port.
    pub(super) fn claim(
        &mut self,
        vs: &'a VirtualService,
        rule: usize,
        route: &TcpRoute,
        sink: &mut Sink,
    ) {
        for listener in &route.listeners {
            for sni in &route.sni {
                let claim = Claim {
                    source: &vs.source,
                    rule: vs.rule_label("tls", rule),
                    gateway: route.gateway.clone(),
                };
                if let Some(other) = self.names.insert((*listener, sni.clone()), claim) {
                    sink.errors.push(vs.source.error(
                        vs.rule_path("tls", rule),
                        format!(
                            "SNI {sni} on gateway listener {listener} is already routed by {} \
                             {}: an SNI name on an address and port takes one TLS route; \
                             merge the two rules, or give them different SNI names",
                            other.source.describe(),
                            other.rule
                        ),
                    ));
                    return;
                }
            }
        }
    }

    /// A TLS route's address and port that a kernel TCP route (of a `tcp`
    /// rule or a `TCPRoute`) takes too: refused, naming the TCP route.
    pub(super) fn check_against(&self, tcp: &Claims<'a>, sink: &mut Sink) {
        let mut seen = BTreeSet::new();
        let mut names: Vec<_> = self.names.iter().collect();
        names.sort_by(|a, b| a.0.cmp(b.0));
        for ((listener, _), claim) in names {
            let Some(other) = tcp.listeners.get(listener) else {
                continue;
            };
            if !seen.insert(*listener) {
                continue;
            }
            sink.errors.push(claim.source.error(
                fp!("spec"),
                format!(
                    "{} {}: gateway listener {listener} is already routed by {} {} as TCP: an \
                     address and port takes TLS routes by SNI or one TCP route, not both; \
                     move one to another port",
                    claim.source.describe(),
                    claim.rule,
                    other.source.describe(),
                    other.rule
                ),
            ));
        }
    }
}
