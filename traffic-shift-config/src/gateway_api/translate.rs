//! The checks across Gateway API resources, and the Istio resources they
//! stand for (see the module's documentation in `gateway_api`).

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use super::{
    BackendRef, FromNamespaces, Gateway, GatewayApiResource, HttpRoute, Listener, Namespace,
    Origin, ParentKind, ParentRef, ReferenceGrant, Service, TargetPort, TcpRoute,
    claims::{ListenerClaims, conflicted},
    gateway_class,
    merge::{Contribution, Rule, listener_hosts, merge, unserved_listener_hosts},
    status::{Condition, RouteStatus, Statuses},
};
use crate::{
    common::{Labels, Protocol, RouteDestination},
    dto::{Location, Resolution},
    error::{ConfigError, FieldPath, fp},
    http::{
        DestinationActions, DirectResponse, Headers, HttpMatch, HttpRouteDestination, HttpRule,
        Mirror, Retries,
    },
    model::{StatusKey, UNUSABLE_BACKEND},
    names::host_matches,
    resolve::{default_retries, qualify},
    resource::{
        self, GatewayPort, L4Match, Resource, Server, ServiceEntry, TcpRule, VirtualService,
    },
    source::Source,
};

impl<'a> Index<'a> {
    /// The resources of `resources` the translation reads, by kind.
    fn of(resources: &[&'a Resource]) -> Self {
        let mut index = Index::default();
        for resource in resources {
            match resource {
                Resource::GatewayApi(GatewayApiResource::Service(s)) => index.services.push(s),
                // A controller ignores the Gateways of the classes it does not
                // own, and the routes' references to them.
                Resource::GatewayApi(GatewayApiResource::Gateway(g))
                    if g.class_name != gateway_class() =>
                {
                    index.ignored_gateways.push(g);
                }
                Resource::GatewayApi(GatewayApiResource::Gateway(g)) => index.gateways.push(g),
                Resource::GatewayApi(GatewayApiResource::ReferenceGrant(g)) => index.grants.push(g),
                Resource::GatewayApi(GatewayApiResource::Namespace(n)) => index.namespaces.push(n),
                Resource::GatewayApi(GatewayApiResource::Secret(s)) => index.secrets.push(s),
                Resource::GatewayApi(GatewayApiResource::TcpRoute(r)) => index.tcp_routes.push(r),
                Resource::GatewayApi(GatewayApiResource::TlsRoute(r)) => index.tls_routes.push(r),
                Resource::GatewayApi(GatewayApiResource::HttpRoute(r)) => index.http_routes.push(r),
                Resource::ServiceEntry(entry) => index.entries.push(entry),
                Resource::Gateway(gateway) => index.istio_gateways.push(gateway),
                Resource::VirtualService(vs) if vs.binds_mesh() => {
                    let namespace = &vs.source.namespace;
                    index
                        .istio_hosts
                        .extend(vs.hosts.iter().map(|h| qualify(h, namespace)));
                }
                _ => {}
            }
        }
        index
    }
}

/// What the Gateway API resources among `resources` stand for, as Istio
/// resources for `resolve`; the errors of the checks across them; the
/// status of each resource the served class owns. `resources` are every
/// resource of the rules (the Istio ones to check what may not be shared
/// with them: hosts, Gateway names).
pub(crate) fn translate(
    resources: &[&Resource],
    errors: &mut Vec<ConfigError>,
) -> (Vec<Resource>, BTreeMap<StatusKey, serde_json::Value>) {
    // A Service that EndpointSlices name takes their endpoints.
    let mut sliced = Vec::new();
    let resources = super::endpoint_slice::with_slices(resources, &mut sliced, errors);
    let mut index = Index::of(&resources);
    let mut statuses = Statuses::default();
    let mut out = Vec::new();
    // A refused Gateway or Service has its error; the routes that name it
    // are left out without more (they would only repeat it).
    let overlapping = super::addresses::overlapping(&index.gateways, errors);
    let mut refused = overlapping.clone();
    for gateway in index
        .gateways
        .iter()
        .filter(|g| !overlapping.contains(&g.source.id()))
    {
        match index.gateway(gateway, errors) {
            Some(gateway) => out.push(Resource::Gateway(gateway)),
            None => refused.push(gateway.source.id()),
        }
    }
    for service in &index.services {
        match index.service_entry(service, errors) {
            Some(entry) => out.push(Resource::ServiceEntry(entry)),
            None => refused.push(service.source.id()),
        }
    }
    let (kept, refused_gateways): (Vec<&Gateway>, Vec<&Gateway>) = index
        .gateways
        .iter()
        .partition(|g| !refused.contains(&g.source.id()));
    index.gateways = kept;
    index.refused_gateways = refused_gateways;
    let refused_services: Vec<&Service> = index
        .services
        .iter()
        .filter(|s| refused.contains(&s.source.id()))
        .copied()
        .collect();
    index.refused_services = refused_services;
    // Oldest first: a TCP listener, or an SNI name on a TLS listener, is
    // the oldest route's.
    let mut tcp_routes = index.tcp_routes.clone();
    tcp_routes.sort_by_cached_key(|route| super::merge::age(&route.source));
    let mut claims = ListenerClaims::default();
    for route in tcp_routes {
        if let Some(vs) = index.tcp_route(route, &mut claims, &mut statuses) {
            out.push(Resource::VirtualService(vs));
        }
    }
    let mut tls_routes = index.tls_routes.clone();
    tls_routes.sort_by_cached_key(|route| super::merge::age(&route.source));
    for route in tls_routes {
        if let Some(vs) = index.tls_route(route, &mut claims, &mut statuses) {
            out.push(Resource::VirtualService(vs));
        }
    }
    // The Services that HTTPRoutes are attached to: no default route.
    let mut meshed: HashSet<(String, String)> = HashSet::new();
    let contributions: Vec<Contribution> = index
        .http_routes
        .iter()
        .filter_map(|route| index.http_route(route, &mut meshed, &mut statuses, errors))
        .collect();
    out.extend(
        merge(&contributions)
            .into_iter()
            .chain(unserved_listener_hosts(
                &index.gateways,
                &contributions,
                &empty_rule(),
            ))
            .map(Resource::VirtualService),
    );
    for gateway in &index.gateways {
        // An HTTPS listener's certificate that cannot be used.
        statuses.gateway(gateway, |listener| {
            (listener.protocol == Protocol::Https)
                .then(|| index.certificate(gateway, listener).err())
                .flatten()
        });
    }
    for service in &index.services {
        if index
            .refused_services
            .iter()
            .any(|refused| std::ptr::eq(*refused, *service))
        {
            continue;
        }
        if index.istio_hosts.contains(&service.host()) {
            // An Istio VirtualService routes it, as in Istio's own Bookinfo
            // (Kubernetes Services, Istio routes).
            continue;
        }
        let key = (
            service.source.namespace.clone(),
            service.source.name.clone(),
        );
        if let Some(vs) = default_route(service, meshed.contains(&key)) {
            out.push(Resource::VirtualService(vs));
        }
    }
    (out, statuses.into_map())
}

#[derive(Default)]
pub(super) struct Index<'a> {
    services: Vec<&'a Service>,
    gateways: Vec<&'a Gateway>,
    tcp_routes: Vec<&'a TcpRoute>,
    tls_routes: Vec<&'a super::TlsRoute>,
    /// HTTPRoutes and GRPCRoutes (`source.kind`).
    pub(super) http_routes: Vec<&'a HttpRoute>,
    entries: Vec<&'a ServiceEntry>,
    istio_gateways: Vec<&'a resource::Gateway>,
    /// Services refused (their error is recorded): a route that names one
    /// is left out.
    refused_services: Vec<&'a Service>,
    /// Gateways refused likewise.
    refused_gateways: Vec<&'a Gateway>,
    /// Gateways of another class: not ours.
    ignored_gateways: Vec<&'a Gateway>,
    grants: Vec<&'a ReferenceGrant>,
    namespaces: Vec<&'a Namespace>,
    secrets: Vec<&'a super::Secret>,
    /// The hosts of the mesh-bound Istio `VirtualServices` (qualified):
    /// a Service one of them routes has no default route.
    istio_hosts: Vec<String>,
}

/// `<namespace>/<name>`, as `VirtualService` `gateways` name a Gateway.
pub(super) fn gateway_id(source: &Source) -> String {
    format!("{}/{}", source.namespace, source.name)
}

impl<'a> Index<'a> {
    fn service(&self, namespace: &str, name: &str) -> Option<&'a Service> {
        self.services
            .iter()
            .find(|s| s.source.namespace == namespace && s.source.name == name)
            .copied()
    }

    /// The Istio `Gateway` of a Gateway API `Gateway`: one server per
    /// listener and address (`bind`; none: every local address), served
    /// on every node (no selector).
    fn gateway(
        &self,
        gateway: &Gateway,
        errors: &mut Vec<ConfigError>,
    ) -> Option<resource::Gateway> {
        let source = &gateway.source;
        if let Some(other) = self
            .istio_gateways
            .iter()
            .find(|g| g.source.namespace == source.namespace && g.source.name == source.name)
        {
            errors.push(source.error(
                fp!("metadata.name"),
                format!(
                    "{} has the name of the Istio {}: routes and metrics name a gateway by \
                     namespace/name, so the two kinds may not share one here; rename one",
                    source.id(),
                    other.source.describe()
                ),
            ));
            return None;
        }
        let binds = super::addresses::binds(gateway);
        let servers = gateway
            .listeners
            .iter()
            // An HTTPS listener whose certificate cannot be used is not
            // served (its status says why).
            .filter_map(|listener| match listener.protocol {
                Protocol::Https => self
                    .certificate(gateway, listener)
                    .ok()
                    .map(|credential| (listener, Some(credential))),
                _ => Some((listener, None)),
            })
            .flat_map(|(listener, credential)| {
                binds
                    .iter()
                    .map(move |bind| (listener, credential.clone(), *bind))
            })
            .map(|(listener, credential, bind)| Server {
                port: GatewayPort {
                    number: listener.port,
                    name: listener.name.clone(),
                    protocol: listener.protocol,
                },
                hosts: vec![listener.hostname.clone().unwrap_or_else(|| "*".to_owned())],
                bind,
                unix: None,
                default_endpoint: None,
                name: Some(listener.name.clone()),
                // A TLS listener is checked to be `tls.mode: Passthrough`.
                tls_mode: super::https::server_tls_mode(listener.protocol),
                credential,
            })
            .collect();
        Some(resource::Gateway {
            source: source.clone(),
            selector: Labels::new(),
            servers,
        })
    }

    /// The Secret an HTTPS listener of `gateway` serves, or why not.
    fn certificate(
        &self,
        gateway: &Gateway,
        listener: &Listener,
    ) -> Result<resource::SecretRef, super::https::Unresolved> {
        super::https::certificate(
            listener,
            &gateway.source.namespace,
            &self.secrets,
            &self.grants,
        )
    }

    /// The `ServiceEntry` of a `Service`: its host
    /// `<name>.<namespace>.svc.cluster.local`, its `clusterIP`s, its ports
    /// (a numeric `targetPort` as the entry's `targetPort`; a named one as
    /// the port name the `WorkloadEntries`' `ports` give a number), the
    /// `WorkloadEntries` its selector picks.
    fn service_entry(
        &self,
        service: &Service,
        errors: &mut Vec<ConfigError>,
    ) -> Option<ServiceEntry> {
        let host = service.host();
        if let Some(other) = self
            .entries
            .iter()
            .find(|entry| entry.hosts.contains(&host))
        {
            errors.push(service.source.error(
                fp!("metadata.name"),
                format!(
                    "host {host} is already defined by {}: the Istio and Gateway API forms of \
                     one service cannot both be in force; remove one",
                    other.source.describe()
                ),
            ));
            return None;
        }
        // With EndpointSlices, an endpoint's port is that of the slice port
        // of the Service port's name (`targetPort` is the controller's).
        let sliced = service.slice_endpoints.is_some();
        let ports = service
            .ports
            .iter()
            .map(|port| resource::ServicePort {
                number: port.port,
                name: match &port.target_port {
                    TargetPort::Name(name) if !sliced => name.clone(),
                    _ => port.name.clone(),
                },
                protocol: port.protocol,
                target_port: match port.target_port {
                    TargetPort::Number(number) if !sliced => Some(number),
                    _ => None,
                },
            })
            .collect();
        Some(ServiceEntry {
            source: service.source.clone(),
            hosts: vec![host],
            addresses: service.addresses.clone(),
            address_ranges: Vec::new(),
            ports,
            location: Location::MeshInternal,
            resolution: Resolution::Static,
            endpoints: service.slice_endpoints.clone().unwrap_or_default(),
            // A Service without a selector selects nothing (an empty
            // selector would select every WorkloadEntry).
            workload_selector: (service.slice_endpoints.is_none() && !service.selector.is_empty())
                .then(|| service.selector.clone()),
            export_to: Vec::new(),
        })
    }

    /// The backends of a rule, as destinations, each with where it is
    /// written; the backendRefs that cannot be used are one destination of
    /// [`UNUSABLE_BACKEND`] weighted by their weights (placed where the
    /// first of them is), and the first one's `ResolvedRefs` reason
    /// (`resolved`). `None` when one names a Service refused on its own
    /// (its error is recorded).
    pub(super) fn destinations(
        &self,
        route: &Source,
        backends: &[BackendRef],
        resolved: &mut Option<Condition>,
    ) -> Option<Vec<(HttpRouteDestination, FieldPath)>> {
        let mut out: Vec<(HttpRouteDestination, FieldPath)> = Vec::new();
        let mut unusable: Option<usize> = None;
        for backend in backends {
            if self
                .refused_services
                .iter()
                .any(|s| s.source.namespace == backend.namespace && s.source.name == backend.name)
            {
                return None;
            }
            let (service, port) = match self.backend(route, backend) {
                Ok(found) => found,
                Err(condition) => {
                    if resolved.is_none() {
                        *resolved = Some(condition);
                    }
                    if backend.weight == 0 {
                        continue;
                    }
                    if let Some(at) = unusable {
                        let weight = &mut out[at].0.destination.weight;
                        *weight = Some(weight.unwrap_or(0).saturating_add(backend.weight));
                    } else {
                        unusable = Some(out.len());
                        out.push((
                            HttpRouteDestination {
                                destination: RouteDestination {
                                    host: UNUSABLE_BACKEND.to_owned(),
                                    subset: None,
                                    port: None,
                                    weight: Some(backend.weight),
                                },
                                headers: Headers::default(),
                                actions: None,
                            },
                            backend.path.clone(),
                        ));
                    }
                    continue;
                }
            };
            let actions = backend.actions.as_deref().map(|actions| {
                Box::new(DestinationActions {
                    redirect: actions.redirect.clone(),
                    rewrite: actions.rewrite.clone(),
                    mirrors: self.mirrors(route, &actions.mirrors, resolved),
                })
            });
            out.push((
                HttpRouteDestination {
                    destination: RouteDestination {
                        host: service.host(),
                        subset: None,
                        port: Some(port),
                        weight: Some(backend.weight),
                    },
                    headers: backend.headers.clone(),
                    actions,
                },
                backend.path.clone(),
            ));
        }
        Some(out)
    }

    /// The mirrors of a rule (or of a backendRef) that can be used. One
    /// that cannot (as a backendRef: kind, grant, Service, port) is left
    /// out, and the first one's reason is the route's `ResolvedRefs`
    /// (`resolved`, when no backendRef set it).
    fn mirrors(
        &self,
        route: &Source,
        mirrors: &[super::MirrorRef],
        resolved: &mut Option<Condition>,
    ) -> Vec<Mirror> {
        let mut out = Vec::new();
        for mirror in mirrors {
            match self.backend(route, &mirror.backend) {
                Ok((service, port)) => out.push(Mirror {
                    destination: RouteDestination {
                        host: service.host(),
                        subset: None,
                        port: Some(port),
                        weight: None,
                    },
                    percentage: mirror.percentage,
                }),
                Err(condition) => {
                    if resolved.is_none() {
                        *resolved = Some(condition);
                    }
                }
            }
        }
        out
    }

    /// The Service and port a backendRef of `route` names, or why it
    /// cannot be used (`ResolvedRefs` False), checked as Istio does: the
    /// kind, then the `ReferenceGrant` for another namespace, then the
    /// Service and its port.
    fn backend(
        &self,
        route: &Source,
        backend: &BackendRef,
    ) -> Result<(&'a Service, u16), Condition> {
        let field = backend.path.to_string();
        if !(backend.group.is_empty() && backend.kind == "Service") {
            let group = if backend.group.is_empty() {
                "core"
            } else {
                backend.group.as_str()
            };
            return Err(Condition::resolved_refs(
                "InvalidKind",
                format!(
                    "{field}: backendRef kind {group}/{} is not supported: a backend is a \
                     Service (group \"\", kind Service); its share of the traffic fails",
                    backend.kind
                ),
            ));
        }
        if backend.namespace != route.namespace
            && !self.grants.iter().any(|grant| {
                grant.source.namespace == backend.namespace
                    && grant.allows(route.kind, &route.namespace, "", "Service", &backend.name)
            })
        {
            return Err(Condition::resolved_refs(
                "RefNotPermitted",
                format!(
                    "{field}: Service {}/{} is in another namespace, and no ReferenceGrant of \
                     namespace {} lets a {} of namespace {} refer to it; its share of the \
                     traffic fails",
                    backend.namespace, backend.name, backend.namespace, route.kind, route.namespace
                ),
            ));
        }
        let Some(service) = self.service(&backend.namespace, &backend.name) else {
            return Err(Condition::resolved_refs(
                "BackendNotFound",
                format!(
                    "{field}: Service {}/{} not found; its share of the traffic fails",
                    backend.namespace, backend.name
                ),
            ));
        };
        let port = backend.port.unwrap_or_default();
        if !service.ports.iter().any(|p| p.port == port) {
            return Err(Condition::resolved_refs(
                "BackendNotFound",
                format!(
                    "{field}: Service {}/{} has no port {port} (its ports are {}); its share \
                     of the traffic fails",
                    backend.namespace,
                    backend.name,
                    port_list(service)
                ),
            ));
        }
        Ok((service, port))
    }

    /// The listeners of a Gateway parent that take a route of `kind` in
    /// `namespace`, with the Gateway; else why not, as the route's
    /// `Accepted` condition (`None`: a Gateway refused on its own, whose
    /// error is recorded, or of a class not served, which is not ours to
    /// report on).
    pub(super) fn listeners(
        &self,
        route: &Source,
        kind: &str,
        parent: &ParentRef,
        hostnames: &[String],
    ) -> Result<(&'a Gateway, Vec<&'a Listener>), Option<Condition>> {
        let same =
            |g: &&&Gateway| g.source.namespace == parent.namespace && g.source.name == parent.name;
        if self.refused_gateways.iter().any(|g| same(&g))
            || self.ignored_gateways.iter().any(|g| same(&g))
        {
            return Err(None);
        }
        let Some(gateway) = self.gateways.iter().find(|g| same(g)).copied() else {
            return Err(Some(Condition::accepted(
                "NoMatchingParent",
                format!(
                    "parent Gateway {}/{} not found",
                    parent.namespace, parent.name
                ),
            )));
        };
        let candidates: Vec<&Listener> = gateway
            .listeners
            .iter()
            .filter(|l| parent.section_name.as_ref().is_none_or(|s| *s == l.name))
            .filter(|l| parent.port.is_none_or(|p| p == l.port))
            .collect();
        if candidates.is_empty() {
            let wanted = match (&parent.section_name, parent.port) {
                (Some(section), _) => format!("named {section}"),
                (None, Some(port)) => format!("on port {port}"),
                (None, None) => "at all".to_owned(),
            };
            return Err(Some(Condition::accepted(
                "NoMatchingParent",
                format!(
                    "Gateway {}/{} has no listener {wanted}: its listeners are {}",
                    parent.namespace,
                    parent.name,
                    gateway
                        .listeners
                        .iter()
                        .map(|l| format!("{} ({} {})", l.name, l.protocol.name(), l.port))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )));
        }
        let mut why = Vec::new();
        let mut hostname_only = true;
        let taken: Vec<&Listener> = candidates
            .into_iter()
            .filter(|l| match self.refusal(l, gateway, route, kind, hostnames) {
                Some((reason, hostname)) => {
                    hostname_only &= hostname;
                    why.push(reason);
                    false
                }
                None => true,
            })
            .collect();
        if taken.is_empty() {
            let reason = if hostname_only {
                "NoMatchingListenerHostname"
            } else {
                "NotAllowedByListeners"
            };
            return Err(Some(Condition::accepted(
                reason,
                format!(
                    "no listener of Gateway {}/{} takes this {kind}: {}",
                    parent.namespace,
                    parent.name,
                    why.join("; ")
                ),
            )));
        }
        Ok((gateway, taken))
    }

    /// The labels of `namespace`: its `Namespace` document's, else
    /// Kubernetes' own `kubernetes.io/metadata.name` alone.
    fn namespace_labels(&self, namespace: &str) -> Labels {
        self.namespaces
            .iter()
            .find(|n| n.source.name == namespace)
            .map_or_else(
                || {
                    Labels::from([(
                        "kubernetes.io/metadata.name".to_owned(),
                        namespace.to_owned(),
                    )])
                },
                |n| n.labels.clone(),
            )
    }

    /// Why listener `l` of `gateway` does not take a route of `kind` (in
    /// `route`'s namespace, for `hostnames`), and whether only for its
    /// hostname; `None` when it does.
    fn refusal(
        &self,
        l: &Listener,
        gateway: &Gateway,
        route: &Source,
        kind: &str,
        hostnames: &[String],
    ) -> Option<(String, bool)> {
        if !l.kinds.contains(&kind) {
            return Some((
                format!(
                    "listener {} allows {} (allowedRoutes.kinds), not {kind}",
                    l.name,
                    l.kinds.join(", ")
                ),
                false,
            ));
        }
        let namespace = &route.namespace;
        let why = match &l.namespaces {
            FromNamespaces::All => None,
            FromNamespaces::Same if gateway.source.namespace == *namespace => None,
            FromNamespaces::Same => Some(format!(
                "listener {} takes routes of its own namespace {} only \
                 (allowedRoutes.namespaces.from: Same)",
                l.name, gateway.source.namespace
            )),
            FromNamespaces::Selector(selector)
                if selector.matches(&self.namespace_labels(namespace)) =>
            {
                None
            }
            FromNamespaces::Selector(_) => Some(format!(
                "listener {} takes routes of the namespaces its selector matches \
                 (allowedRoutes.namespaces.from: Selector), and the labels of namespace \
                 {namespace} do not match",
                l.name
            )),
        };
        if let Some(why) = why {
            return Some((why, false));
        }
        if let Some(hostname) = &l.hostname
            && !hostnames.is_empty()
            && !hostnames
                .iter()
                .any(|h| host_matches(hostname, h) || host_matches(h, hostname))
        {
            return Some((
                format!(
                    "listener {} is for host {hostname}, which none of the route's hostnames \
                     matches",
                    l.name
                ),
                true,
            ));
        }
        None
    }

    /// The destinations of the one rule of an L4 route (TCPRoute,
    /// TLSRoute), and where each is written; the route's status recorded.
    /// `None` when it is attached to no listener (`attached` false) or a
    /// backend was refused. The spec: no backend that can be used (or every
    /// weight 0), and every connection is refused: one unusable destination.
    pub(super) fn l4_destinations(
        &self,
        source: &Source,
        backends: &[BackendRef],
        (mut status, statuses): (RouteStatus, &mut Statuses),
        attached: bool,
    ) -> Option<(Vec<RouteDestination>, Vec<FieldPath>)> {
        let mut resolved = None;
        let destinations = self.destinations(source, backends, &mut resolved);
        status.resolved(resolved);
        statuses.route(status);
        if !attached {
            return None;
        }
        let mut destinations = destinations?;
        let usable: u64 = destinations
            .iter()
            .filter(|(d, ..)| d.destination.host != UNUSABLE_BACKEND)
            .map(|(d, ..)| u64::from(d.destination.weight.unwrap_or(1)))
            .sum();
        if usable == 0 {
            destinations = vec![(
                HttpRouteDestination {
                    destination: RouteDestination {
                        host: UNUSABLE_BACKEND.to_owned(),
                        subset: None,
                        port: None,
                        weight: Some(1),
                    },
                    headers: Headers::default(),
                    actions: None,
                },
                fp!("spec.rules[0].backendRefs"),
            )];
        }
        let paths = destinations.iter().map(|(.., p)| p.clone()).collect();
        Some((
            destinations
                .into_iter()
                .map(|(d, _)| d.destination)
                .collect(),
            paths,
        ))
    }

    /// The `VirtualService` of a `TCPRoute`: its one rule on the listeners
    /// of its parents, each bound by a match on the listener's port.
    /// A listener an older route took is not this route's ([`ListenerClaims`]).
    fn tcp_route(
        &self,
        route: &TcpRoute,
        claims: &mut ListenerClaims,
        statuses: &mut Statuses,
    ) -> Option<VirtualService> {
        let source = &route.source;
        let mut status = RouteStatus::new(source, route.generation);
        let mut gateways = Vec::new();
        let mut matches = Vec::new();
        for parent in &route.parents {
            let (gateway, listeners) = match self.listeners(source, "TCPRoute", parent, &[]) {
                Ok(found) => found,
                Err(condition) => {
                    if let Some(condition) = condition {
                        status.parent(parent, condition);
                    }
                    continue;
                }
            };
            let id = gateway_id(&gateway.source);
            let mut lost = Vec::new();
            let listeners: Vec<_> = listeners
                .into_iter()
                .filter(|l| claims.take((&id, l.port), "", source, &mut lost))
                .collect();
            if listeners.is_empty() {
                let among = "TCPRoutes on a listener (a TCP connection has nothing else to \
                             choose a route by)";
                let todo = "bind this route to another listener (sectionName or port), or \
                            remove one of them";
                status.parent(parent, conflicted(&lost, among, todo));
                continue;
            }
            let attached = Condition::attached(&id, &listeners);
            for listener in &listeners {
                matches.push(L4Match {
                    port: Some(listener.port),
                    gateways: vec![id.clone()],
                    ..L4Match::default()
                });
                statuses.attach(&gateway.source, &listener.name, source);
            }
            status.parent(parent, attached);
            if !gateways.contains(&id) {
                gateways.push(id);
            }
        }
        let (route_destinations, paths) = self.l4_destinations(
            source,
            &route.backends,
            (status, statuses),
            !matches.is_empty(),
        )?;
        Some(VirtualService {
            source: source.clone(),
            hosts: vec!["*".to_owned()],
            gateways,
            tcp: vec![TcpRule {
                matches,
                route: route_destinations,
            }],
            http: Vec::new(),
            tls: Vec::new(),
            export_to: Vec::new(),
            origin: Some(Arc::new(Origin {
                tcp: vec![("rules[0]".to_owned(), fp!("spec.rules[0]"))],
                tcp_backends: vec![paths],
                ..Origin::default()
            })),
        })
    }

    /// What an `HTTPRoute` gives to the hosts it serves, to be merged with
    /// the other routes there (`merge`); `None` when it serves none, or
    /// something it names was refused (errors recorded). `meshed`: the
    /// Services HTTPRoutes are attached to.
    fn http_route(
        &self,
        route: &'a HttpRoute,
        meshed: &mut HashSet<(String, String)>,
        statuses: &mut Statuses,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Contribution<'a>> {
        let before = errors.len();
        let mut status = RouteStatus::new(&route.source, route.generation);
        let parents = self.http_parents(route, meshed, &mut status, statuses, errors);
        let mut resolved = None;
        let rules = self.http_rules(route, &mut resolved);
        status.resolved(resolved);
        statuses.route(status);
        let (Some(parents), Some(rules)) = (parents, rules) else {
            return None;
        };
        if errors.len() > before || (parents.mesh.is_empty() && parents.gateway.is_empty()) {
            return None;
        }
        Some(Contribution {
            route,
            rules,
            mesh: parents.mesh,
            gateway: parents.gateway,
        })
    }

    /// Where an `HTTPRoute` applies; `None` when a parent was refused on
    /// its own (its error is recorded), errors recorded for the others.
    fn http_parents(
        &self,
        route: &HttpRoute,
        meshed: &mut HashSet<(String, String)>,
        status: &mut RouteStatus,
        statuses: &mut Statuses,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Parents> {
        let source = &route.source;
        let mut parents = Parents::default();
        let mut failed = false;
        for parent in &route.parents {
            let base = fp!("spec.parentRefs[{}]", parent.index);
            if parent.kind == ParentKind::Gateway {
                let (gateway, listeners) =
                    match self.listeners(source, source.kind, parent, &route.hostnames) {
                        Ok(found) => found,
                        Err(condition) => {
                            if let Some(condition) = condition {
                                status.parent(parent, condition);
                            }
                            continue;
                        }
                    };
                // The spec: an HTTPRoute and a GRPCRoute with intersecting
                // hosts on one listener: the older is accepted there.
                let (listeners, conflict) = self.without_kind_conflicts(route, gateway, listeners);
                if listeners.is_empty() {
                    if let Some(conflict) = conflict {
                        status.parent(parent, conflict);
                    }
                    continue;
                }
                let id = gateway_id(&gateway.source);
                let attached = Condition::attached(&id, &listeners);
                for listener in listeners {
                    statuses.attach(&gateway.source, &listener.name, source);
                    for host in listener_hosts(listener, &gateway.listeners, &route.hostnames) {
                        let served = (id.clone(), host, listener.port);
                        if !parents.gateway.contains(&served) {
                            parents.gateway.push(served);
                        }
                    }
                }
                status.parent(parent, attached);
                continue;
            }
            if parent.namespace != source.namespace {
                errors.push(source.error(
                    base.key("namespace"),
                    format!(
                        "a route bound to a Service of another namespace ({}) is not supported \
                         yet: put the HTTPRoute in the Service's namespace",
                        parent.namespace
                    ),
                ));
                continue;
            }
            if self
                .refused_services
                .iter()
                .any(|s| s.source.namespace == parent.namespace && s.source.name == parent.name)
            {
                failed = true;
                continue;
            }
            let Some(service) = self.service(&parent.namespace, &parent.name) else {
                errors.push(source.error(
                    base.key("name"),
                    format!(
                        "parent Service {}/{} not found: define it or fix the name",
                        parent.namespace, parent.name
                    ),
                ));
                continue;
            };
            if !mesh_service(source, &base, service, parent.port, errors) {
                continue;
            }
            if let Some(conflict) = self.mesh_kind_conflict(route, parent) {
                status.parent(parent, conflict);
                continue;
            }
            meshed.insert((
                service.source.namespace.clone(),
                service.source.name.clone(),
            ));
            status.parent(parent, Condition::attached_to_service(parent));
            let served = (service.host(), parent.port);
            if !parents.mesh.contains(&served) {
                parents.mesh.push(served);
            }
        }
        (!failed).then_some(parents)
    }

    /// The rules of an `HTTPRoute`, one per match, in the spec's precedence
    /// (equals in the order written), each with its label and path for
    /// [`Origin`]; `None` when a backend was refused (errors recorded).
    fn http_rules(&self, route: &HttpRoute, resolved: &mut Option<Condition>) -> Option<Vec<Rule>> {
        let mut rules: Vec<Rule> = Vec::new();
        let mut failed = false;
        for (i, rule) in route.rules.iter().enumerate() {
            let Some(destinations) = self.destinations(&route.source, &rule.backends, resolved)
            else {
                failed = true;
                continue;
            };
            let usable: u64 = destinations
                .iter()
                .map(|(d, _)| &d.destination)
                .filter(|d| d.host != UNUSABLE_BACKEND)
                .map(|d| u64::from(d.weight.unwrap_or(1)))
                .sum();
            // The spec: no backendRef, every weight 0, or none that can be
            // used: 500; for a GRPCRoute UNAVAILABLE, which a gRPC client
            // reads from 503 (the proxy answers a gRPC call with it).
            let mirrors = self.mirrors(&route.source, &rule.mirrors, resolved);
            let (route_to, direct_response) = if rule.redirect.is_some() {
                // The redirect answers: the backendRefs take no traffic.
                (Vec::new(), None)
            } else if usable == 0 {
                let status = DirectResponse {
                    status: if route.source.kind == "GRPCRoute" {
                        503
                    } else {
                        500
                    },
                    body: None,
                };
                (Vec::new(), Some(status))
            } else {
                (destinations, None)
            };
            let backends: Vec<FieldPath> = route_to.iter().map(|(_, p)| p.clone()).collect();
            let route_to: Vec<HttpRouteDestination> =
                route_to.into_iter().map(|(d, _)| d).collect();
            let http_rule = |matches: Vec<HttpMatch>| HttpRule {
                matches,
                route: route_to.clone(),
                direct_response: direct_response.clone(),
                headers: rule.headers.clone(),
                cors_policy: rule.cors.clone(),
                redirect: rule.redirect.clone(),
                rewrite: rule.rewrite.clone(),
                timeout: rule.timeout,
                // `retry`, `backendRequest` each attempt's timeout (with
                // Istio's retries when the rule has no `retry`).
                retries: match &rule.retry {
                    Some(retry) => Some(retry.retries(rule.backend_timeout)),
                    None => rule.backend_timeout.map(|timeout| Retries {
                        per_try_timeout: Some(timeout),
                        ..default_retries()
                    }),
                },
                mirrors: mirrors.clone(),
                ..empty_rule()
            };
            if rule.matches.is_empty() {
                rules.push(Rule {
                    backends: backends.clone(),
                    precedence: super::check::default_precedence(),
                    label: format!("rules[{i}]"),
                    path: fp!("spec.rules[{i}]"),
                    http: http_rule(vec![HttpMatch::default()]),
                });
            }
            for (k, m) in rule.matches.iter().enumerate() {
                let (label, path) = if rule.matches.len() == 1 {
                    (format!("rules[{i}]"), fp!("spec.rules[{i}]"))
                } else {
                    (
                        format!("rules[{i}].matches[{k}]"),
                        fp!("spec.rules[{i}].matches[{k}]"),
                    )
                };
                rules.push(Rule {
                    backends: backends.clone(),
                    precedence: m.precedence,
                    label,
                    path,
                    http: http_rule(m.matches.clone()),
                });
            }
        }
        // The spec's precedence; equals keep the order written.
        rules.sort_by_key(|rule| rule.precedence);
        (!failed).then_some(rules)
    }
}

/// Where an `HTTPRoute` applies ([`Contribution`]'s `mesh` and
/// `gateway`).
#[derive(Default)]
struct Parents {
    mesh: Vec<(String, Option<u16>)>,
    gateway: Vec<(String, String, u16)>,
}

/// An `http` rule with nothing set.
fn empty_rule() -> HttpRule {
    HttpRule {
        name: None,
        matches: Vec::new(),
        route: Vec::new(),
        redirect: None,
        direct_response: None,
        delegate: None,
        rewrite: None,
        timeout: None,
        retries: None,
        fault: None,
        mirror: None,
        mirrors: Vec::new(),
        cors_policy: None,
        headers: Headers::default(),
    }
}

/// Whether `service` can be the parent of a mesh `HTTPRoute` (on `port`,
/// when given): it has a `clusterIP` and that port (or one port) is HTTP.
fn mesh_service(
    route: &Source,
    base: &FieldPath,
    service: &Service,
    port: Option<u16>,
    errors: &mut Vec<ConfigError>,
) -> bool {
    let id = format!("{}/{}", service.source.namespace, service.source.name);
    if service.headless {
        errors.push(route.error(
            base.key("name"),
            format!(
                "Service {id} is headless (clusterIP: None): it has no service address for \
                 the mesh to route, so a route cannot be bound to it; bind the route to a \
                 Gateway listener (the Service can be its backendRef), or give the Service a \
                 clusterIP"
            ),
        ));
        return false;
    }
    if service.addresses.is_empty() {
        errors.push(route.error(
            base.key("name"),
            format!(
                "Service {id} has no clusterIP: clients reach the L7 proxy by connecting to the \
                 service address; give the Service a clusterIP"
            ),
        ));
        return false;
    }
    let http = |protocol: Protocol| matches!(protocol, Protocol::Http | Protocol::Http2);
    match port {
        Some(number) => match service.ports.iter().find(|p| p.port == number) {
            None => {
                errors.push(route.error(
                    base.key("port"),
                    format!(
                        "Service {id} has no port {number}: its ports are {}",
                        port_list(service)
                    ),
                ));
                false
            }
            Some(p) if !http(p.protocol) => {
                errors.push(route.error(
                    base.key("port"),
                    format!(
                        "port {number} of Service {id} is not HTTP, so an HTTPRoute cannot \
                         route it: set appProtocol: http (or kubernetes.io/h2c) on it"
                    ),
                ));
                false
            }
            Some(_) => true,
        },
        None if service.ports.iter().any(|p| http(p.protocol)) => true,
        None => {
            errors.push(route.error(
                base.key("name"),
                format!(
                    "Service {id} has no HTTP port, so an HTTPRoute cannot route it: set \
                     appProtocol: http (or kubernetes.io/h2c) on its port"
                ),
            ));
            false
        }
    }
}

fn port_list(service: &Service) -> String {
    service
        .ports
        .iter()
        .map(|p| p.port.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What Kubernetes does for a Service with a `clusterIP` and no route: a
/// new connection to `clusterIP:port` goes to one of its endpoints (here
/// smooth, as every split). One mesh rule per port: `tcp` for TCP ports,
/// `http` for HTTP ones unless an `HTTPRoute` takes the Service
/// (`meshed`). Keys read `<ns>/<service>/ports[0]/port 9000`.
fn default_route(service: &Service, meshed: bool) -> Option<VirtualService> {
    if service.addresses.is_empty() {
        return None;
    }
    let host = service.host();
    let mut origin = Origin::default();
    let mut tcp = Vec::new();
    let mut http = Vec::new();
    for (p, port) in service.ports.iter().enumerate() {
        let destination = RouteDestination {
            host: host.clone(),
            subset: None,
            port: Some(port.port),
            weight: None,
        };
        let label = (format!("ports[{p}]"), fp!("spec.ports[{p}]"));
        if matches!(port.protocol, Protocol::Http | Protocol::Http2) {
            if meshed {
                continue;
            }
            http.push(HttpRule {
                matches: vec![HttpMatch {
                    port: Some(port.port),
                    ..HttpMatch::default()
                }],
                route: vec![HttpRouteDestination {
                    destination,
                    headers: Headers::default(),
                    actions: None,
                }],
                ..empty_rule()
            });
            origin.http.push(label);
            origin.http_backends.push(vec![fp!("spec.ports[{p}]")]);
        } else {
            tcp.push(TcpRule {
                matches: vec![L4Match {
                    port: Some(port.port),
                    ..L4Match::default()
                }],
                route: vec![destination],
            });
            origin.tcp.push(label);
            origin.tcp_backends.push(vec![fp!("spec.ports[{p}]")]);
        }
    }
    if tcp.is_empty() && http.is_empty() {
        return None;
    }
    Some(VirtualService {
        source: service.source.clone(),
        hosts: vec![host],
        gateways: Vec::new(),
        tcp,
        http,
        tls: Vec::new(),
        export_to: Vec::new(),
        origin: Some(Arc::new(origin)),
    })
}
