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
//! that host exactly. A host (of a `VirtualService` or a destination) that
//! no `ServiceEntry` names is the service of the most specific wildcard
//! `ServiceEntry` host that covers it (Istio's `host.Name.Matches`), with
//! that entry's addresses, ports and endpoints. `ServiceEntries` of one
//! namespace that list a host are merged for that host as Istio merges them
//! (`catalog::Service::merge`), also when they share only some hosts. A host in `ServiceEntries` of several
//! namespaces has a service per namespace: a resource sees those whose
//! `exportTo` admits its namespace, the oldest first (`Catalog::service`).
//! The `exportTo` of `VirtualServices` and `DestinationRules` is applied
//! when a namespace is given ([`resolve_in`]: the rules as a proxy there
//! sees them, [`crate::visibility`]); without one every rule applies, and a
//! host has one `DestinationRule` at most.
//!
//! Gateway routes: a `tcp` rule applies to a Gateway the `VirtualService`'s
//! `gateways` names (or, for one match, the match's `gateways`, which
//! override the top-level list), and routes the Gateway's servers on the
//! ports its matches name, else on every server port that is not HTTP. A
//! server is routed when one of its hosts admits the `VirtualService`;
//! there, the `VirtualService` hosts need not be `ServiceEntry` hosts (they
//! are the names clients use), only destination hosts must. The Gateway
//! `selector` is not applied here: the model is the fleet's, the same on
//! every node, and carries each Gateway's selector
//! ([`RoutingModel::gateways`]); [`RoutingModel::for_node`]
//! (`placement`) keeps what one node serves.
//!
//! `http` rules become the L7 proxy's listeners ([`http`]); `tls` rules
//! are refused.
//!
//! `Rollout`s are resolved first ([`rollout`]): each target rule must exist
//! and route only to the Rollout's stable and canary subsets of one host;
//! a subset the rule does not name is added to it with weight 0 before
//! the VirtualServices are resolved.
//!
//! Every error is collected (per destination, per rule, per resource), so
//! `validate` lists them all.
//!
//! Here: the entry points, one route per listener, unique names. The
//! lookups are in `catalog`, mesh `tcp` routes in `tcp`, Gateway `tcp`
//! routes in `gateway`, a route's destinations in `destination`, `http`
//! rules in `http`, `Rollout` targets in `rollout`.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
};

use self::catalog::Catalog;
use super::{
    error::{ConfigError, FieldPath, Warning, fp},
    file::RulesFile,
    resource::{Resource, VirtualService},
    source::Source,
};
use crate::model::{GatewaySelector, RoutingModel, ServicePrefix, TcpRoute};

mod catalog;
mod destination;
mod gateway;
mod http;
mod https;
pub(crate) use http::default_retries;
mod rollout;
mod tcp;
mod tls;

/// Cross-resource validation and resolution over the given files together:
/// the model, or the first error. Warnings are logged (`tracing`); see
/// [`resolve_all`] to have them, and every error.
pub fn resolve(files: &[RulesFile]) -> Result<RoutingModel, ConfigError> {
    resolve_in(files, None)
}

/// [`resolve`] as a proxy in `namespace` sees the rules
/// ([`crate::visibility`]: the `exportTo` of `VirtualServices` and
/// `DestinationRules` applied); `None`: every rule applies.
pub fn resolve_in(
    files: &[RulesFile],
    namespace: Option<&str>,
) -> Result<RoutingModel, ConfigError> {
    let (model, warnings) = resolve_all_in(files, namespace);
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
    resolve_all_in(files, None)
}

/// [`resolve_all`] as a proxy in `namespace` sees the rules (see
/// [`resolve_in`]).
pub fn resolve_all_in(
    files: &[RulesFile],
    namespace: Option<&str>,
) -> (Result<RoutingModel, Vec<ConfigError>>, Vec<Warning>) {
    resolve_resources_in(
        files.iter().flat_map(|file| &file.resources).collect(),
        namespace,
    )
}

/// [`resolve_all`] of resources held elsewhere, in the order of their
/// files (no copy of 20 000 resources into files to resolve them).
pub fn resolve_resources(
    resources: Vec<&Resource>,
) -> (Result<RoutingModel, Vec<ConfigError>>, Vec<Warning>) {
    resolve_resources_in(resources, None)
}

/// [`resolve_resources`] as a proxy in `namespace` sees them (see
/// [`resolve_in`]). Names are checked across every resource, seen or not.
pub fn resolve_resources_in(
    resources: Vec<&Resource>,
    namespace: Option<&str>,
) -> (Result<RoutingModel, Vec<ConfigError>>, Vec<Warning>) {
    let mut sink = Sink::default();
    check_unique_names(&resources, &mut sink);
    // The Gateway API kinds as the Istio resources they stand for, after
    // the Istio ones: where both claim something, the Gateway API one is
    // refused, naming the Istio one.
    let (translated, gateway_api_status) =
        crate::gateway_api::translate(&resources, &mut sink.errors);
    let resources: Vec<&Resource> = resources.into_iter().chain(&translated).collect();
    let resources = match namespace {
        Some(namespace) => crate::visibility::VisibleTo { namespace }.filter(resources),
        None => resources,
    };
    let mut catalog = Catalog::new(&resources, &mut sink);
    catalog.proxy = namespace.map(str::to_owned);
    let mut gateways: Vec<GatewaySelector> = catalog
        .gateways
        .iter()
        .map(|g| GatewaySelector {
            gateway: format!("{}/{}", g.source.namespace, g.source.name),
            selector: g.selector.clone(),
        })
        .collect();
    gateways.sort_by(|a, b| a.gateway.cmp(&b.gateway));

    let targets = rollout::targets(&resources, &catalog, &mut sink);
    let mut routes = Vec::new();
    let mut http = BTreeMap::new();
    // Mesh routes and gateway routes go to different kernel maps, so they
    // never conflict with each other.
    let mut mesh_claims = Claims::default();
    let mut gateway_claims = Claims::default();
    // TLS passthrough routes, by SNI name, address and port.
    let mut tls_claims = tls::TlsClaims::default();
    for resource in &resources {
        let Resource::VirtualService(vs) = resource else {
            continue;
        };
        // With the subsets a Rollout adds, if any.
        let vs = targets.virtual_service(vs);
        for (rule, route) in catalog.tls_routes_of(vs, &mut sink) {
            tls_claims.claim(vs, rule, &route, &mut sink);
            routes.push(route);
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
    tls_claims.check_against(&gateway_claims, &mut sink);
    catalog.unrouted_gateway_api_listeners(&mut http);
    routes.sort_by(|a, b| a.key.cmp(&b.key));
    // Kept while the rules are in force: without the room grown while
    // pushing (up to as much again; 1.5 MB at 10 000 routes).
    routes.shrink_to_fit();
    let mut model = RoutingModel {
        routes,
        http: http.into_values().collect(),
        gateways,
        rollouts: Vec::new(),
        gateway_api_status,
    };
    if sink.errors.is_empty() {
        targets.warn_unrouted(&model, &mut sink);
    }
    model.rollouts = targets.into_rollouts();
    crate::gateway_api::place(&translated, &mut sink.errors, &mut sink.warnings);
    let Sink { errors, warnings } = sink;
    let warnings = unique(warnings);
    if errors.is_empty() {
        (Ok(model), warnings)
    } else {
        (Err(crate::limits::capped(unique(errors))), warnings)
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
    /// `tcp[0]` (`rules[0]` for a translated Gateway API route).
    rule: String,
    gateway: Option<String>,
}

/// The claims of one kernel map: by address and port, and (mesh) by
/// address range and port.
#[derive(Default)]
struct Claims<'a> {
    listeners: HashMap<SocketAddr, Claim<'a>>,
    prefixes: HashMap<ServicePrefix, Claim<'a>>,
}

/// Records that rule `rule` of `vs` routes the listeners of `route`; one
/// route per address and port, and per address range and port (per kernel
/// map: `claims` is the mesh's or the gateways'). Ranges of different
/// lengths may overlap: the longest that holds an address takes it.
fn claim<'a>(
    claims: &mut Claims<'a>,
    vs: &'a VirtualService,
    rule: usize,
    route: &TcpRoute,
    sink: &mut Sink,
) {
    let new_claim = || Claim {
        source: &vs.source,
        rule: vs.rule_label("tcp", rule),
        gateway: route.gateway.clone(),
    };
    for prefix in &route.prefixes {
        if let Some(other) = claims.prefixes.insert(*prefix, new_claim()) {
            sink.errors.push(vs.source.error(
                vs.rule_path("tcp", rule),
                format!(
                    "service address range {prefix} is already routed by {} {}: a service \
                     address range and port takes one TCP route; merge the two rules or remove \
                     one",
                    other.source.describe(),
                    other.rule
                ),
            ));
            return;
        }
    }
    for listener in &route.listeners {
        let Some(other) = claims.listeners.insert(*listener, new_claim()) else {
            continue;
        };
        let message = match (&route.gateway, &other.gateway) {
            (Some(gateway), Some(other_gateway)) => format!(
                "gateway {gateway} listener {listener} is already routed by {} {} (gateway \
                 {other_gateway}): an address and port where gateways accept takes one TCP \
                 route; merge the two rules, remove one, or bind the servers to different \
                 addresses",
                other.source.describe(),
                other.rule
            ),
            _ => format!(
                "service address {listener} is already routed by {} {}: a service address \
                 and port takes one TCP route; merge the two rules or remove one",
                other.source.describe(),
                other.rule
            ),
        };
        sink.errors
            .push(vs.source.error(vs.rule_path("tcp", rule), message));
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

/// Where in a `VirtualService` a destination is written, for messages.
struct At {
    /// `spec.tcp[0].route[1].destination`.
    base: FieldPath,
    /// `tcp[0]`, `http[2]`.
    rule: String,
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
