//! What the resources define, indexed for the lookups of `resolve`: the
//! services (each `ServiceEntry` with the `WorkloadEntries` it selects), the
//! `DestinationRule` of a host, the Gateways a `VirtualService` binds.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{
    Sink, destination::find_subset, gateway::conflicting_gateways, host_not_found, list, qualify,
};
use crate::{
    error::{ConfigError, FieldPath, Warning, fp},
    names::host_matches,
    resource::{
        DestinationRule, Gateway, L4Match, Resource, ServiceEntry, ServicePort, TcpRule,
        VirtualService, WorkloadEndpoint, WorkloadEntry,
    },
};

#[derive(Clone)]
pub(super) struct Service<'a> {
    /// The oldest `ServiceEntry` of these hosts (by name: see
    /// [`Service::merge`]): its addresses, resolution and location apply.
    pub(super) entry: &'a ServiceEntry,
    /// As written (Istio does not qualify ServiceEntry hosts), in order.
    pub(super) hosts: Vec<&'a str>,
    /// The ports of every `ServiceEntry` merged here, once per number (the
    /// oldest entry's first).
    pub(super) ports: Vec<&'a ServicePort>,
    /// The selected `WorkloadEntries`' endpoints, then its own; then those
    /// of each `ServiceEntry` merged in. Each with the `ServiceEntry` that
    /// brings it: an endpoint serves the ports of its own entry only (Istio
    /// makes its instances per port of the entry).
    pub(super) endpoints: Vec<(&'a WorkloadEndpoint, &'a ServiceEntry)>,
    /// Whether one of the merged entries lists endpoints or selects
    /// workloads.
    pub(super) lists_endpoints: bool,
}

impl Service<'_> {
    pub(super) fn tcp_port(&self, number: u16) -> Option<&ServicePort> {
        self.ports
            .iter()
            .copied()
            .find(|port| port.number == number && port.effective_protocol().takes_tcp_routes())
    }

    pub(super) fn port_list(&self) -> String {
        list(self.ports.iter().map(|port| port.number))
    }
}

pub(super) struct Catalog<'a> {
    /// The namespace of the proxy the rules are resolved for (`--namespace`):
    /// the services a rule sees are those visible there, as Istio's sidecar
    /// there sees them; `None`: those visible to the rule's own namespace.
    pub(super) proxy: Option<String>,
    pub(super) services: Vec<Service<'a>>,
    /// Each `services` host (as written) to the indexes of its services,
    /// one per namespace that defines it (the `ServiceEntries` of a host in
    /// one namespace are merged): lookups by exact host stay constant-time
    /// with thousands of services.
    pub(super) by_host: HashMap<&'a str, Vec<usize>>,
    /// The `services` hosts that are wildcards (`*.suffix`, `*`), with
    /// their index, in order.
    pub(super) wildcard_hosts: Vec<(&'a str, usize)>,
    pub(super) rules: Vec<(&'a DestinationRule, String)>,
    /// Each `rules` host (qualified) to its index.
    pub(super) rule_by_host: HashMap<String, usize>,
    /// The indexes of the `rules` whose host is a wildcard, in order.
    pub(super) wildcard_rules: Vec<usize>,
    pub(super) gateways: Vec<&'a Gateway>,
    /// The `kubernetes.io/tls` Secrets: HTTPS servers' certificates.
    pub(super) secrets: Vec<&'a crate::gateway_api::Secret>,
}

/// The gateways a `VirtualService` binds, resolved.
pub(super) struct Bindings<'a> {
    /// Its top-level `gateways`, `mesh` left out.
    pub(super) top: Vec<&'a Gateway>,
    /// `matches[i][k]`: the `gateways` of `tcp[i].match[k]` (`mesh` left
    /// out); `None` when the match lists none and so inherits `top`.
    pub(super) matches: Vec<Vec<Option<Vec<&'a Gateway>>>>,
    /// Every gateway above, once, in the order first written.
    pub(super) all: Vec<&'a Gateway>,
}

impl Bindings<'_> {
    /// The matches of rule `i` that apply to `gateway`; `None` when the rule
    /// does not apply to it. Like `tcp::mesh_matches`, an empty list means the
    /// rule has no match (it applies to every port).
    pub(super) fn matches<'r>(
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

impl<'a> Service<'a> {
    pub(super) fn new(entry: &'a ServiceEntry, workloads: &[&'a WorkloadEntry]) -> Self {
        let hosts = entry.hosts.iter().map(String::as_str).collect();
        let mut endpoints: Vec<(&WorkloadEndpoint, &ServiceEntry)> = Vec::new();
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
                    .map(|workload| (&workload.endpoint, entry)),
            );
        }
        endpoints.extend(entry.endpoints.iter().map(|endpoint| (endpoint, entry)));
        Self {
            entry,
            hosts,
            ports: entry.ports.iter().collect(),
            endpoints,
            lists_endpoints: !entry.endpoints.is_empty() || entry.workload_selector.is_some(),
        }
    }

    /// `self` and `incoming` (one `ServiceEntry` of the same hosts and
    /// namespace) as Istio merges them: ports unioned, endpoints appended.
    /// Where they conflict (resolution, addresses, location, a port number
    /// with another name or protocol) the oldest entry wins, with a warning
    /// on `incoming`. Istio orders by creation time, then name:
    /// `metadata.creationTimestamp` (RFC 3339, compared as written; none is
    /// the oldest), then `metadata.name`.
    pub(super) fn merge(&self, incoming: &Service<'a>, warnings: &mut Vec<Warning>) -> Self {
        let new = incoming.entry;
        // Istio's order: creation time (none is the oldest, as Go's zero
        // time), then name.
        let age = |entry: &'a ServiceEntry| (&entry.source.creation_timestamp, &entry.source.name);
        let (older, newer) = if age(new) < age(self.entry) {
            (incoming, self)
        } else {
            (self, incoming)
        };
        let (kept, lost) = (older.entry, newer.entry);
        let host = incoming.hosts.first().copied().unwrap_or_default();
        let mut conflict = |path: FieldPath, what: &str, theirs: String, ours: String| {
            let (kept_value, lost_value) = if std::ptr::eq(kept, new) {
                (ours, theirs)
            } else {
                (theirs, ours)
            };
            warnings.push(new.source.warning(
                path,
                format!(
                    "host {host} is also defined by {}, with another {what}: Istio merges the \
                     ServiceEntries of a host and keeps the oldest one's {what} \
                     (metadata.creationTimestamp, then name): {} {kept_value} applies, not {} \
                     {lost_value}",
                    self.entry.source.describe(),
                    kept.source.id(),
                    lost.source.id()
                ),
            ));
        };
        let other = self.entry;
        if new.resolution != other.resolution {
            conflict(
                fp!("spec.resolution"),
                "resolution",
                other.resolution.name().to_owned(),
                new.resolution.name().to_owned(),
            );
        }
        let addresses = ServiceEntry::sorted_addresses;
        if addresses(new) != addresses(other) {
            let show = |all: Vec<String>| format!("[{}]", all.join(", "));
            conflict(
                fp!("spec.addresses"),
                "addresses",
                show(addresses(other)),
                show(addresses(new)),
            );
        }
        if new.location != other.location {
            conflict(
                fp!("spec.location"),
                "location",
                format!("{:?}", other.location),
                format!("{:?}", new.location),
            );
        }
        let mut ports = older.ports.clone();
        for port in &newer.ports {
            match ports.iter().find(|p| p.number == port.number) {
                None => ports.push(port),
                Some(p)
                    if p.name != port.name
                        || p.effective_protocol() != port.effective_protocol() =>
                {
                    let at = new.ports.iter().position(|q| q.number == port.number);
                    let show = |p: &ServicePort| {
                        format!(
                            "port {} {:?} {}",
                            p.number,
                            p.name,
                            p.effective_protocol().name()
                        )
                    };
                    let (theirs, ours) = match at {
                        Some(_) if std::ptr::eq(kept, new) => (show(port), show(p)),
                        _ => (show(p), show(port)),
                    };
                    conflict(
                        at.map_or_else(|| fp!("spec.ports"), |i| fp!("spec.ports[{i}]")),
                        "port definition",
                        theirs,
                        ours,
                    );
                }
                Some(_) => {}
            }
        }
        let mut endpoints = older.endpoints.clone();
        endpoints.extend(&newer.endpoints);
        Self {
            entry: kept,
            hosts: older.hosts.clone(),
            ports,
            endpoints,
            lists_endpoints: self.lists_endpoints || incoming.lists_endpoints,
        }
    }
}

/// Adds the service of one `ServiceEntry`, as Istio merges services per
/// namespace and host (`mergeServicesInstancesByNamespaceHost`): a host
/// that a `ServiceEntry` of the same namespace already defines is merged
/// into that host's service. When the two entries share only some hosts,
/// the shared ones become a service of their own (the older entry's, with
/// the newer merged in) and each entry keeps its other hosts alone. A host
/// defined in several namespaces has a service in each: which one a
/// resource sees is [`Catalog::service`]'s choice (`exportTo`, then age).
fn add_service<'a>(
    services: &mut Vec<Service<'a>>,
    by_host: &mut HashMap<&'a str, Vec<usize>>,
    service: Service<'a>,
    sink: &mut Sink,
) {
    let namespace = &service.entry.source.namespace;
    // The hosts no service of this namespace has yet, and per existing
    // service the hosts it shares with this one.
    let mut fresh: Vec<&'a str> = Vec::new();
    let mut shared: BTreeMap<usize, Vec<&'a str>> = BTreeMap::new();
    for host in &service.hosts {
        let existing = by_host.get(host).and_then(|indexes| {
            indexes
                .iter()
                .copied()
                .find(|&k| services[k].entry.source.namespace == *namespace)
        });
        match existing {
            Some(k) => shared.entry(k).or_default().push(host),
            None => fresh.push(host),
        }
    }
    if shared.is_empty() {
        let k = services.len();
        for host in &service.hosts {
            by_host.entry(*host).or_default().push(k);
        }
        services.push(service);
        return;
    }
    let with_hosts = |service: &Service<'a>, hosts: &[&'a str]| Service {
        hosts: hosts.to_vec(),
        ..service.clone()
    };
    if !fresh.is_empty() {
        let k = services.len();
        for host in &fresh {
            by_host.entry(*host).or_default().push(k);
        }
        services.push(with_hosts(&service, &fresh));
    }
    let set = |hosts: &[&'a str]| hosts.iter().copied().collect::<BTreeSet<_>>();
    for (k, hosts) in shared {
        let incoming = with_hosts(&service, &hosts);
        if set(&services[k].hosts) == set(&hosts) {
            services[k] = services[k].merge(&incoming, &mut sink.warnings);
            continue;
        }
        // Only some of its hosts: those move to a service of their own.
        let split = with_hosts(&services[k], &hosts).merge(&incoming, &mut sink.warnings);
        services[k].hosts.retain(|host| !hosts.contains(host));
        let n = services.len();
        for host in &hosts {
            if let Some(indexes) = by_host.get_mut(host) {
                for index in indexes.iter_mut().filter(|index| **index == k) {
                    *index = n;
                }
            }
        }
        services.push(split);
    }
}

/// Whether `entry` is visible to resources of `namespace` (Istio's
/// `IsServiceVisible`): `exportTo` absent or `*`, `.` from its own
/// namespace, or `namespace` named; `~` hides it from all.
fn visible(entry: &ServiceEntry, namespace: &str) -> bool {
    let export_to = &entry.export_to;
    export_to.is_empty()
        || export_to.iter().any(|to| {
            to == "*" || to == namespace || (to == "." && entry.source.namespace == namespace)
        })
}

/// Istio's order among services of one host (`sortServicesByCreationTime`):
/// creation time (none is the oldest), then name, then namespace.
fn age(entry: &ServiceEntry) -> (&Option<String>, &str, &str) {
    (
        &entry.source.creation_timestamp,
        &entry.source.name,
        &entry.source.namespace,
    )
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

impl<'a> Catalog<'a> {
    pub(super) fn new(resources: &[&'a Resource], sink: &mut Sink) -> Self {
        let workloads: Vec<&WorkloadEntry> = resources
            .iter()
            .filter_map(|resource| match resource {
                Resource::WorkloadEntry(entry) => Some(entry),
                _ => None,
            })
            .collect();

        let mut services: Vec<Service> = Vec::new();
        let mut by_host: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut rules: Vec<(&DestinationRule, String)> = Vec::new();
        let mut rule_by_host: HashMap<String, usize> = HashMap::new();
        let mut gateways: Vec<&Gateway> = Vec::new();
        let mut secrets = Vec::new();
        for resource in resources {
            match resource {
                Resource::ServiceEntry(entry) => {
                    add_service(
                        &mut services,
                        &mut by_host,
                        Service::new(entry, &workloads),
                        sink,
                    );
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
                Resource::Gateway(gateway) => {
                    sink.errors.extend(conflicting_gateways(gateway, &gateways));
                    gateways.push(gateway);
                }
                Resource::GatewayApi(crate::gateway_api::GatewayApiResource::Secret(secret)) => {
                    secrets.push(secret);
                }
                _ => {}
            }
        }
        let wildcard_hosts = services
            .iter()
            .enumerate()
            .flat_map(|(k, service)| {
                service
                    .hosts
                    .iter()
                    .filter(|host| host.starts_with('*'))
                    .map(move |host| (*host, k))
            })
            .collect();
        let wildcard_rules = (0..rules.len())
            .filter(|&k| rules[k].1.starts_with('*'))
            .collect();
        Self {
            proxy: None,
            services,
            by_host,
            wildcard_hosts,
            rules,
            rule_by_host,
            wildcard_rules,
            gateways,
            secrets,
        }
    }

    /// The Gateway a `VirtualService` in `namespace` names `written`
    /// (`name`, `namespace/name`, or the legacy
    /// `name.namespace[.svc.cluster.local]`); `None` for `mesh`. A name that
    /// matches no Gateway is an error (IST0101) at `path`.
    pub(super) fn gateway(
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
    pub(super) fn bindings(&self, vs: &VirtualService, sink: &mut Sink) -> Bindings<'a> {
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
    pub(super) fn check_http(&self, vs: &VirtualService, sink: &mut Sink) {
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
                if host == crate::model::UNUSABLE_BACKEND {
                    continue;
                }
                if self.service(host, namespace).is_none() {
                    sink.errors
                        .push(self.host_not_found(vs, base.key("host"), host));
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
    /// `ServiceEntry` writes it: the one naming the host, else the most
    /// specific wildcard host that covers it (Istio's `host.Name.Matches`:
    /// `*.eu.bookinfo.com` covers `reviews.eu.bookinfo.com`, `*` covers
    /// every host; the longest wins, the first written among equals).
    ///
    /// Only services visible to `namespace` count (`exportTo`); of a host
    /// defined in several namespaces, the oldest `ServiceEntry` wins, as in
    /// Istio (`appendSidecarServices` keeps the first by creation time;
    /// ports are not merged across namespaces).
    pub(super) fn service(&self, host: &str, namespace: &str) -> Option<(&Service<'a>, &'a str)> {
        let host = qualify(host, namespace);
        let seen_from = self.proxy.as_deref().unwrap_or(namespace);
        let visible_service = |k: usize| {
            let service = &self.services[k];
            visible(service.entry, seen_from).then_some(service)
        };
        if let Some(service) = self
            .by_host
            .get(host.as_str())
            .into_iter()
            .flatten()
            .filter_map(|&k| visible_service(k))
            .min_by_key(|service| age(service.entry))
        {
            let written = service.hosts.iter().find(|written| **written == host)?;
            return Some((service, *written));
        }
        self.wildcard_hosts
            .iter()
            .filter(|(pattern, _)| host_matches(pattern, &host))
            .filter_map(|&(pattern, k)| visible_service(k).map(|service| (service, pattern)))
            .min_by_key(|(service, pattern)| (std::cmp::Reverse(pattern.len()), age(service.entry)))
    }

    /// The error for a host no service visible to `vs` defines (IST0101),
    /// saying which `ServiceEntries` define it but do not export it to the
    /// `VirtualService`'s namespace.
    pub(super) fn host_not_found(
        &self,
        vs: &VirtualService,
        path: FieldPath,
        host: &str,
    ) -> ConfigError {
        let mut error = host_not_found(vs, path, host);
        let qualified = qualify(host, &vs.source.namespace);
        let namespace = self.proxy.as_deref().unwrap_or(&vs.source.namespace);
        let hidden: Vec<String> = self
            .services
            .iter()
            .filter(|service| {
                !visible(service.entry, namespace)
                    && service
                        .hosts
                        .iter()
                        .any(|h| host_matches(h, &qualified) || host_matches(&qualified, h))
            })
            .map(|service| {
                format!(
                    "{} (exportTo: [{}])",
                    service.entry.source.describe(),
                    service.entry.export_to.join(", ")
                )
            })
            .collect();
        if !hidden.is_empty() {
            error.message = format!(
                "{}; {} defines it but does not export it to namespace {namespace}: add \
                 {namespace} (or \"*\") to its exportTo",
                error.message,
                hidden.join(", ")
            );
        }
        error
    }

    /// The services a `VirtualService` host selects, each with its
    /// `ServiceEntry` host that matched and the host it routes: a host (not
    /// a wildcard) selects its service (see [`Catalog::service`]) under its
    /// own name, even when a wildcard `ServiceEntry` host covers it;
    /// `*.suffix` selects every service with a host it covers, under that
    /// host.
    pub(super) fn select(
        &self,
        pattern: &str,
        namespace: &str,
    ) -> Vec<(&Service<'a>, &'a str, String)> {
        let pattern = qualify(pattern, namespace);
        if !pattern.starts_with('*') {
            return self
                .service(&pattern, namespace)
                .map(|(service, written)| (service, written, pattern))
                .into_iter()
                .collect();
        }
        // Each host once, with the service `service` gives it (the visible
        // one of the namespaces that define it).
        self.services
            .iter()
            .filter_map(|service| {
                let host = service
                    .hosts
                    .iter()
                    .find(|host| host_matches(&pattern, host))?;
                let (chosen, _) = self.service(host, namespace)?;
                std::ptr::eq(chosen, service).then(|| (service, *host, (*host).to_owned()))
            })
            .collect()
    }

    /// The `DestinationRule` of a host: the one naming it, else the most
    /// specific wildcard one.
    pub(super) fn rule(&self, host: &str, namespace: &str) -> Option<&'a DestinationRule> {
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
}
