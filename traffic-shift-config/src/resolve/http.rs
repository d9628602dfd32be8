//! VirtualService `http` rules -> the [`HttpListener`]s the L7 proxy serves.
//!
//! Mesh: every HTTP port of every service a mesh-bound `VirtualService`
//! selects (a port whose `protocol` is HTTP, HTTP2, GRPC, GRPC-WEB or
//! HTTP_PROXY, or, without one, whose name says so as Istio reads it:
//! `http`, `http-web`, `grpc-api`) becomes one listener: its service
//! addresses x that port, sent to the proxy by the connect-time hook. One
//! `VirtualService` per service port: Istio merges several, and a merge
//! whose order nobody wrote is refused here instead.
//!
//! Gateway: every plain-HTTP server (HTTP, HTTP2, GRPC, GRPC-WEB) of a
//! Gateway a `VirtualService` binds, and whose hosts admit it, becomes one
//! listener per port, where the proxy listens itself. Several
//! `VirtualService`s share a server port as virtual hosts, chosen by the
//! request's authority; one host name per port.
//!
//! A rule applies to a binding (mesh, or one gateway) as Istio decides:
//! without `match`, where the `VirtualService` is bound; with `match`, the
//! matches whose `gateways` (else the `VirtualService`'s) name it, and only
//! those are kept. `sourceLabels` and `sourceNamespace` are refused (the
//! node does not know a client's labels, and ignoring them would widen the
//! rule), as is `delegate` (not supported yet).

use std::{
    collections::{BTreeMap, btree_map::Entry},
    net::SocketAddr,
};

use super::{
    At, Sink,
    catalog::Catalog,
    gateway::{add_listeners, server_takes},
    qualify,
};
use crate::{
    common::{Protocol, RouteDestination},
    dto::SimpleLb,
    error::{ConfigError, FieldPath, fp},
    http::{HttpMatch, HttpRule, Mirror, Retries},
    model::{
        Destination, HttpDestination, HttpDestinationActions, HttpListener, HttpMirror, HttpRoute,
        HttpSelection, ServicePrefix, VirtualHost,
    },
    policy::{HashKey, LbPolicy, LoadBalancer},
    resource::{DestinationRule, Gateway, ServicePort, VirtualService},
};

/// Where a rule is being resolved for.
#[derive(Clone, Copy)]
enum Binding<'g> {
    Mesh,
    Gateway(&'g Gateway),
}

/// Istio's retry policy when a route has none: 2 attempts on connection
/// failures, refused streams, `unavailable`, `cancelled` and 503.
pub fn default_retries() -> Retries {
    Retries {
        attempts: 2,
        retry_on: [
            "connect-failure",
            "refused-stream",
            "unavailable",
            "cancelled",
            "retriable-status-codes",
        ]
        .map(str::to_owned)
        .to_vec(),
        ..Retries::default()
    }
}

/// Whether an HTTP route may serve a server: plain HTTP, or HTTPS that
/// the proxy terminates (`https`).
fn serves_http(server: &crate::resource::Server) -> bool {
    plain_http(server.port.protocol) || super::https::terminates(server)
}

/// Whether an HTTP route may serve a port of this protocol in plain text.
fn plain_http(protocol: Protocol) -> bool {
    matches!(
        protocol,
        Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb | Protocol::HttpProxy
    )
}

/// Upstream connections to a port of this protocol speak HTTP/2.
fn speaks_http2(port: &ServicePort) -> bool {
    matches!(
        port.effective_protocol(),
        Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
    )
}

impl<'a> Catalog<'a> {
    /// The listeners the `http` rules of `vs` serve, merged into
    /// `listeners` (by key); errors recorded.
    pub(super) fn http_listeners(
        &self,
        vs: &VirtualService,
        top: &[&'a Gateway],
        listeners: &mut BTreeMap<String, HttpListener>,
        sink: &mut Sink,
    ) {
        if vs.http.is_empty() {
            return;
        }
        for (i, rule) in vs.http.iter().enumerate() {
            if let Some(error) = unsupported(vs, i, rule) {
                sink.errors.push(error);
                return;
            }
        }
        if vs.binds_mesh() || self.any_match_binds(vs, Binding::Mesh, top) {
            self.mesh_listeners(vs, top, listeners, sink);
        }
        let mut gateways: Vec<&Gateway> = top.to_vec();
        for rule in &vs.http {
            for m in &rule.matches {
                for written in &m.gateways {
                    if let Ok(Some(gateway)) = self.gateway(vs, FieldPath::default(), written)
                        && !gateways.iter().any(|g| std::ptr::eq(*g, gateway))
                    {
                        gateways.push(gateway);
                    }
                }
            }
        }
        for gateway in gateways {
            self.gateway_listeners(vs, gateway, top, listeners, sink);
        }
    }

    fn any_match_binds(&self, vs: &VirtualService, binding: Binding, top: &[&Gateway]) -> bool {
        vs.http.iter().any(|rule| {
            !self
                .matches_for(vs, rule, binding, top)
                .unwrap_or_default()
                .is_empty()
        })
    }

    /// The matches of `rule` that apply to `binding`: `None` when the rule
    /// does not apply there; an empty list when it applies to every
    /// request (no `match`).
    fn matches_for(
        &self,
        vs: &VirtualService,
        rule: &HttpRule,
        binding: Binding,
        top: &[&Gateway],
    ) -> Option<Vec<HttpMatch>> {
        let top_binds = match binding {
            Binding::Mesh => vs.binds_mesh(),
            Binding::Gateway(gateway) => top.iter().any(|g| std::ptr::eq(*g, gateway)),
        };
        if rule.matches.is_empty() {
            return top_binds.then(Vec::new);
        }
        let kept: Vec<HttpMatch> = rule
            .matches
            .iter()
            .filter(|m| {
                if m.gateways.is_empty() {
                    return top_binds;
                }
                m.gateways.iter().any(|written| match binding {
                    Binding::Mesh => written == "mesh",
                    Binding::Gateway(gateway) => matches!(
                        self.gateway(vs, FieldPath::default(), written),
                        Ok(Some(g)) if std::ptr::eq(g, gateway)
                    ),
                })
            })
            .cloned()
            .collect();
        (!kept.is_empty()).then_some(kept)
    }

    fn mesh_listeners(
        &self,
        vs: &VirtualService,
        top: &[&Gateway],
        listeners: &mut BTreeMap<String, HttpListener>,
        sink: &mut Sink,
    ) {
        let namespace = &vs.source.namespace;
        for (h, host) in vs.hosts.iter().enumerate() {
            let found = self.select(host, namespace);
            if found.is_empty() {
                sink.errors
                    .push(self.host_not_found(vs, fp!("spec.hosts[{h}]"), host));
            }
            for (service, entry_host, service_host) in found {
                let http_ports: Vec<&ServicePort> = service
                    .ports
                    .iter()
                    .copied()
                    .filter(|p| plain_http(p.effective_protocol()))
                    .collect();
                if !http_ports.is_empty()
                    && service.entry.addresses.is_empty()
                    && service.entry.address_ranges.is_empty()
                {
                    sink.errors.push(service.entry.source.error(
                        fp!("spec.addresses"),
                        format!(
                            "service {service_host} has no addresses: clients reach the L7 \
                             proxy by connecting to a service address; add spec.addresses \
                             (routed by {} http)",
                            vs.source.describe()
                        ),
                    ));
                    continue;
                }
                for port in http_ports {
                    // Keyed by the ServiceEntry host: the hosts one wildcard
                    // entry covers share its addresses, so one listener.
                    let key = format!("mesh {entry_host}:{}", port.number);
                    let Some(routes) =
                        self.http_routes(vs, Binding::Mesh, top, Some(port.number), sink)
                    else {
                        continue;
                    };
                    let virtual_host = VirtualHost {
                        virtual_service: format!("{namespace}/{}", vs.source.name),
                        source: std::sync::Arc::clone(&vs.source.file),
                        domains: vec![service_host.to_ascii_lowercase()],
                        routes,
                    };
                    match listeners.entry(key) {
                        Entry::Occupied(entry) => {
                            sink.errors.push(vs.source.error(
                                fp!("spec.hosts[{h}]"),
                                format!(
                                    "service {service_host} port {}{} is already routed by \
                                     VirtualService {} (http): one VirtualService per service \
                                     port; merge their http rules in the order they should apply",
                                    port.number,
                                    if entry_host == service_host {
                                        String::new()
                                    } else {
                                        format!(
                                            " (the ServiceEntry host {entry_host}, whose \
                                             addresses it shares)"
                                        )
                                    },
                                    entry.get().virtual_hosts[0].virtual_service
                                ),
                            ));
                        }
                        Entry::Vacant(entry) => {
                            let key = entry.key().clone();
                            entry.insert(HttpListener {
                                key,
                                gateway: None,
                                port: port.number,
                                unix: Vec::new(),
                                listeners: service
                                    .entry
                                    .addresses
                                    .iter()
                                    .map(|a| SocketAddr::new(*a, port.number))
                                    .collect(),
                                prefixes: service
                                    .entry
                                    .address_ranges
                                    .iter()
                                    .map(|range| ServicePrefix {
                                        network: range.network,
                                        len: range.len,
                                        port: port.number,
                                    })
                                    .collect(),
                                virtual_hosts: vec![virtual_host],
                                tls: None,
                            });
                        }
                    }
                }
            }
        }
    }

    /// The HTTP listeners of Gateway API Gateways that no route is
    /// attached to: they listen all the same, with no virtual host, so
    /// every request is answered 404, as a Gateway's listener is in
    /// Kubernetes (Envoy with no route). Istio Gateways keep theirs closed
    /// until a VirtualService binds them, as before.
    pub(super) fn unrouted_gateway_api_listeners(
        &self,
        listeners: &mut BTreeMap<String, HttpListener>,
    ) {
        for gateway in self
            .gateways
            .iter()
            .filter(|g| g.source.kind == crate::GATEWAY_KIND)
        {
            let gateway_id = format!("{}/{}", gateway.source.namespace, gateway.source.name);
            // Per port, the addresses of its servers (a Gateway API
            // Gateway's `spec.addresses`, each a server's `bind`).
            let mut ports: BTreeMap<u16, Vec<SocketAddr>> = BTreeMap::new();
            for server in gateway.servers.iter().filter(|s| serves_http(s)) {
                let port = server.port.number;
                add_listeners(server.bind, port, ports.entry(port).or_default());
            }
            for (port, addresses) in ports {
                let key = format!("gateway {gateway_id} port {port}");
                listeners
                    .entry(key.clone())
                    .or_insert_with(|| HttpListener {
                        key,
                        gateway: Some(gateway_id.clone()),
                        port,
                        listeners: addresses,
                        prefixes: Vec::new(),
                        unix: Vec::new(),
                        virtual_hosts: Vec::new(),
                        // Its certificates were checked by the Gateway API translation.
                        tls: self.listener_tls(gateway, port, &mut Sink::default()),
                    });
            }
        }
    }

    fn gateway_listeners(
        &self,
        vs: &VirtualService,
        gateway: &Gateway,
        top: &[&Gateway],
        listeners: &mut BTreeMap<String, HttpListener>,
        sink: &mut Sink,
    ) {
        let gateway_id = format!("{}/{}", gateway.source.namespace, gateway.source.name);
        let mut ports: BTreeMap<u16, Vec<SocketAddr>> = BTreeMap::new();
        let mut unix: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for server in gateway
            .servers
            .iter()
            .filter(|s| serves_http(s) && server_takes(s, gateway, vs))
        {
            if let Some(path) = &server.unix {
                let entry = unix.entry(server.port.number).or_default();
                if !entry.contains(path) {
                    entry.push(path.clone());
                }
                ports.entry(server.port.number).or_default();
                continue;
            }
            add_listeners(
                server.bind,
                server.port.number,
                ports.entry(server.port.number).or_default(),
            );
        }
        if ports.is_empty() {
            sink.warnings.push(vs.source.warning(
                fp!("spec.http"),
                format!(
                    "gateway {gateway_id} has no plain HTTP server whose hosts match the \
                     VirtualService's ({}): its http rules have no route there",
                    vs.hosts.join(", ")
                ),
            ));
            return;
        }
        let namespace = &vs.source.namespace;
        let domains: Vec<String> = vs
            .hosts
            .iter()
            .map(|h| qualify(h, namespace).to_ascii_lowercase())
            .collect();
        for (port, addresses) in ports {
            let Some(routes) = self.http_routes(vs, Binding::Gateway(gateway), top, None, sink)
            else {
                continue;
            };
            let key = format!("gateway {gateway_id} port {port}");
            let listener = listeners
                .entry(key.clone())
                .or_insert_with(|| HttpListener {
                    key,
                    gateway: Some(gateway_id.clone()),
                    port,
                    listeners: Vec::new(),
                    unix: Vec::new(),
                    prefixes: Vec::new(),
                    virtual_hosts: Vec::new(),
                    tls: self.listener_tls(gateway, port, sink),
                });
            for address in addresses {
                if !listener.listeners.contains(&address) {
                    listener.listeners.push(address);
                }
            }
            for path in unix.remove(&port).unwrap_or_default() {
                if !listener.unix.contains(&path) {
                    listener.unix.push(path);
                }
            }
            let routes = serving(routes, port);
            if routes.is_empty() {
                continue;
            }
            let taken = listener.virtual_hosts.iter().find_map(|other| {
                domains
                    .iter()
                    .find(|d| other.domains.contains(d))
                    .map(|d| (d, &other.virtual_service))
            });
            if let Some((domain, other)) = taken {
                sink.errors.push(vs.source.error(
                    fp!("spec.hosts"),
                    format!(
                        "host {domain} on gateway {gateway_id} port {port} is already served by \
                         VirtualService {other}: one VirtualService per host and gateway port; \
                         merge their http rules"
                    ),
                ));
                continue;
            }
            listener.virtual_hosts.push(VirtualHost {
                virtual_service: format!("{namespace}/{}", vs.source.name),
                source: std::sync::Arc::clone(&vs.source.file),
                domains: domains.clone(),
                routes,
            });
        }
    }

    /// The rules of `vs` that apply to `binding`, resolved for service port
    /// `port` (`None` on a gateway); `None` when one could not be (errors
    /// recorded) or none applies.
    fn http_routes(
        &self,
        vs: &VirtualService,
        binding: Binding,
        top: &[&Gateway],
        port: Option<u16>,
        sink: &mut Sink,
    ) -> Option<Vec<HttpRoute>> {
        let mut routes = Vec::new();
        let mut failed = false;
        for (i, rule) in vs.http.iter().enumerate() {
            let Some(matches) = self.matches_for(vs, rule, binding, top) else {
                continue;
            };
            match self.http_route(vs, i, rule, matches, port, &mut sink.warnings) {
                Ok(route) => routes.push(route),
                Err(errors) => {
                    sink.errors.extend(errors);
                    failed = true;
                }
            }
        }
        (!failed && !routes.is_empty()).then_some(routes)
    }

    fn http_route(
        &self,
        vs: &VirtualService,
        i: usize,
        rule: &HttpRule,
        matches: Vec<HttpMatch>,
        port: Option<u16>,
        warnings: &mut Vec<crate::error::Warning>,
    ) -> Result<HttpRoute, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let namespace = &vs.source.namespace;
        let label = format!("http[{i}]");
        let several = rule.route.len() > 1;
        let mut destinations = Vec::with_capacity(rule.route.len());
        for (j, route) in rule.route.iter().enumerate() {
            let at = At {
                base: fp!("spec.http[{i}].route[{j}].destination"),
                rule: label.clone(),
            };
            let actions = route.actions.as_deref().map(|actions| {
                let written =
                    actions.mirrors.iter().enumerate().map(|(k, m)| {
                        (fp!("spec.http[{i}].route[{j}].mirrors[{k}].destination"), m)
                    });
                let mirrors = self.http_mirrors(vs, &label, written, port, warnings, &mut errors);
                Box::new(HttpDestinationActions {
                    redirect: actions.redirect.clone(),
                    rewrite: actions.rewrite.clone(),
                    mirrors,
                })
            });
            match self.http_destination(vs, &at, &route.destination, port, several, warnings) {
                Ok((destination, http2, endpoint_selection)) => {
                    destinations.push(HttpDestination {
                        destination,
                        http2,
                        endpoint_selection,
                        headers: route.headers.clone(),
                        actions,
                    });
                }
                Err(error) => errors.push(error),
            }
        }
        let written = rule
            .mirror
            .iter()
            .map(|m| (fp!("spec.http[{i}].mirror"), m))
            .chain(
                rule.mirrors
                    .iter()
                    .enumerate()
                    .map(|(j, m)| (fp!("spec.http[{i}].mirrors[{j}].destination"), m)),
            );
        let mirrors = self.http_mirrors(vs, &label, written, port, warnings, &mut errors);
        let selection = match rule.route.first() {
            Some(first) => match self.rule(&first.destination.host, namespace) {
                Some(dr) => match dr
                    .traffic_policy
                    .load_balancer_for(first.destination.port.or(port))
                {
                    Some(lb) => http_selection(lb, dr, vs, &label).unwrap_or_else(|error| {
                        errors.push(error);
                        HttpSelection::default()
                    }),
                    None => HttpSelection::default(),
                },
                None => HttpSelection::default(),
            },
            None => HttpSelection::default(),
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(HttpRoute {
            key: vs.rule_key("http", i),
            name: rule.name.clone(),
            matches,
            destinations,
            selection,
            redirect: rule.redirect.clone(),
            direct_response: rule.direct_response.clone(),
            rewrite: rule.rewrite.clone(),
            timeout: rule.timeout,
            retries: rule.retries.clone().unwrap_or_else(default_retries),
            fault: rule.fault.clone(),
            mirrors,
            headers: rule.headers.clone(),
            cors: rule.cors_policy.clone(),
        })
    }

    /// Mirrors of an `http` rule (or of one of its destinations), each
    /// with where it is written; errors into `errors`.
    fn http_mirrors<'m>(
        &self,
        vs: &VirtualService,
        label: &str,
        written: impl Iterator<Item = (FieldPath, &'m Mirror)>,
        port: Option<u16>,
        warnings: &mut Vec<crate::error::Warning>,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<HttpMirror> {
        let mut mirrors = Vec::new();
        for (base, mirror) in written {
            let at = At {
                base,
                rule: label.to_owned(),
            };
            match self.http_destination(vs, &at, &mirror.destination, port, false, warnings) {
                Ok((destination, http2, _)) => mirrors.push(HttpMirror {
                    destination,
                    http2,
                    percentage: mirror.percentage.unwrap_or(100.0),
                }),
                Err(error) => errors.push(error),
            }
        }
        mirrors
    }

    /// A destination (or mirror) of an `http` rule: the destination, whether
    /// upstream connections speak HTTP/2, and how its endpoints are picked.
    fn http_destination(
        &self,
        vs: &VirtualService,
        at: &At,
        destination: &RouteDestination,
        port: Option<u16>,
        several: bool,
        warnings: &mut Vec<crate::error::Warning>,
    ) -> Result<(Destination, bool, HttpSelection), ConfigError> {
        let (resolved, target, lb) =
            self.destination(vs, at, destination, port, several, warnings)?;
        let endpoint_selection = match (lb, self.rule(&destination.host, &vs.source.namespace)) {
            (Some(lb), Some(dr)) => http_selection(lb, dr, vs, &at.rule)?,
            _ => HttpSelection::default(),
        };
        Ok((resolved, speaks_http2(target), endpoint_selection))
    }
}

/// The routes that can serve gateway port `port`: rules bound to other
/// ports only (`match.port`) never do. Without any left, the host is not
/// served there, so it does not hide a wildcard host that is.
fn serving(routes: Vec<HttpRoute>, port: u16) -> Vec<HttpRoute> {
    routes
        .into_iter()
        .filter(|r| {
            r.matches.is_empty() || r.matches.iter().any(|m| m.port.is_none_or(|p| p == port))
        })
        .collect()
}

/// What `http` rules may say that the proxy does not do: refused, naming
/// the field.
fn unsupported(vs: &VirtualService, i: usize, rule: &HttpRule) -> Option<ConfigError> {
    if rule.delegate.is_some() {
        return Some(vs.source.error(
            fp!("spec.http[{i}].delegate"),
            "delegate is not supported yet: write the delegate VirtualService's http rules here",
        ));
    }
    for (k, m) in rule.matches.iter().enumerate() {
        let field = if !m.source_labels.is_empty() {
            "sourceLabels"
        } else if m.source_namespace.is_some() {
            "sourceNamespace"
        } else {
            continue;
        };
        return Some(vs.source.error(
            fp!("spec.http[{i}].match[{k}].{field}"),
            format!(
                "match {field} is not supported: the node does not know a client's workload, \
                 and ignoring it would apply the rule to every request; remove it"
            ),
        ));
    }
    None
}

/// The [`HttpSelection`] of a `loadBalancer` setting (`rule` names the
/// rule that uses it, `http[0]`).
fn http_selection(
    lb: &LoadBalancer,
    dr: &DestinationRule,
    vs: &VirtualService,
    rule: &str,
) -> Result<HttpSelection, ConfigError> {
    Ok(match &lb.policy {
        LbPolicy::Simple(SimpleLb::Random) => HttpSelection::Random,
        LbPolicy::Simple(SimpleLb::Passthrough) => {
            return Err(dr.source.error(
                lb.path.clone(),
                format!(
                    "loadBalancer PASSTHROUGH is not supported: it forwards requests to the \
                     address the client dialed, and the proxy picks an endpoint; use \
                     ROUND_ROBIN (the default), RANDOM, or consistentHash (used by {} {rule})",
                    vs.source.id()
                ),
            ));
        }
        LbPolicy::Simple(_) => HttpSelection::Smooth,
        LbPolicy::ConsistentHash(HashKey::SourceIp) => HttpSelection::SourceIp,
        LbPolicy::ConsistentHash(HashKey::HttpHeaderName(name)) => {
            HttpSelection::Header(name.to_ascii_lowercase())
        }
        LbPolicy::ConsistentHash(HashKey::HttpCookie(cookie)) => {
            HttpSelection::Cookie(cookie.name.clone())
        }
        LbPolicy::ConsistentHash(HashKey::HttpQueryParameterName(name)) => {
            HttpSelection::QueryParameter(name.clone())
        }
    })
}
