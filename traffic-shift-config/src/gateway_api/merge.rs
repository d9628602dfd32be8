//! Several `HTTPRoute`s on one parent and host, merged as the spec says:
//! every route attached to a listener (or to a Service, GAMMA) gives its
//! rules, and per host (a listener's, after the intersection with the
//! route's `hostnames`) the rules of all of them are in one order: first
//! the routes whose own hostname for that host is the most specific
//! ([`hostname_specificity`]), then the spec's precedence of matches
//! ([`Precedence`]: an `Exact` path, then the longer
//! prefix, a `method`, more `headers`, more `queryParams`), ties broken by
//! the oldest route (`metadata.creationTimestamp`, which the agent sets to
//! the time it first saw a route that has none), then `<namespace>/<name>`
//! in alphabetical order, then the order of the rules within the route.
//!
//! One `VirtualService` per host of a Gateway and per Service stands for
//! the merge; each of its rules keeps the route key and field paths of
//! the route it was written in ([`Origin`]'s owners).

use std::{collections::BTreeMap, sync::Arc};

use super::{Gateway, HttpRoute, Listener, Origin, Precedence};
use crate::{
    error::{FieldPath, fp},
    http::{DirectResponse, HttpMatch, HttpRule},
    names::host_matches,
    resource::VirtualService,
    source::Source,
    timestamp::parse_timestamp,
};

/// One rule of an `HTTPRoute` for one of its matches.
pub(super) struct Rule {
    pub precedence: Precedence,
    /// `rules[0]`, `rules[0].matches[1]`: in route keys.
    pub label: String,
    /// Where it is written: in messages.
    pub path: FieldPath,
    pub http: HttpRule,
    /// Where each of its destinations is written.
    pub backends: Vec<FieldPath>,
}

/// What one `HTTPRoute` gives to the hosts it serves.
pub(super) struct Contribution<'a> {
    pub route: &'a HttpRoute,
    /// In the route's own precedence (equals in the order written).
    pub rules: Vec<Rule>,
    /// The hosts of the Services it is attached to, each with the port of
    /// the parentRef (`None`: every port).
    pub mesh: Vec<(String, Option<u16>)>,
    /// `(gateway id, host, listener port)` for each host it serves on a
    /// listener it is attached to.
    pub gateway: Vec<(String, String, u16)>,
}

/// `(gateway, port)` bindings of a route's matches in one scope: `mesh`
/// or a Gateway id, and a port.
type Bindings = Vec<(String, Option<u16>)>;

/// Where rules are merged: a Service (its host), or a host of a Gateway.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Mesh(String),
    Gateway { gateway: String, host: String },
}

/// How old a route is, oldest first: its creation time (none: after every
/// route that has one), then `<namespace>/<name>`.
pub(super) fn age(source: &Source) -> (bool, u64, String, String) {
    let created = source
        .creation_timestamp
        .as_deref()
        .and_then(parse_timestamp);
    (
        created.is_none(),
        created.unwrap_or_default(),
        source.namespace.clone(),
        source.name.clone(),
    )
}

/// The `VirtualService`s of the merged rules: one per Service and one per
/// host of each Gateway.
pub(super) fn merge(contributions: &[Contribution]) -> Vec<VirtualService> {
    // Per scope, the routes (by index) and the bindings of each.
    let mut scopes: BTreeMap<Scope, Vec<(usize, Bindings)>> = BTreeMap::new();
    for (c, contribution) in contributions.iter().enumerate() {
        let mut add = |scope: Scope, binding: (String, Option<u16>)| {
            let routes = scopes.entry(scope).or_default();
            match routes.iter_mut().find(|(r, _)| *r == c) {
                Some((_, bindings)) => {
                    if !bindings.contains(&binding) {
                        bindings.push(binding);
                    }
                }
                None => routes.push((c, vec![binding])),
            }
        };
        for (host, port) in &contribution.mesh {
            add(Scope::Mesh(host.clone()), ("mesh".to_owned(), *port));
        }
        for (gateway, host, port) in &contribution.gateway {
            add(
                Scope::Gateway {
                    gateway: gateway.clone(),
                    host: host.clone(),
                },
                (gateway.clone(), Some(*port)),
            );
        }
    }
    scopes
        .into_iter()
        .map(|(scope, routes)| merged(contributions, &scope, &routes))
        .collect()
}

/// The `VirtualService` of one scope: the rules of `routes` in the spec's
/// order, each match repeated for each binding of its route.
fn merged(
    contributions: &[Contribution],
    scope: &Scope,
    routes: &[(usize, Bindings)],
) -> VirtualService {
    let ages: Vec<_> = routes
        .iter()
        .map(|(c, _)| age(&contributions[*c].route.source))
        .collect();
    let mut order: Vec<(usize, usize)> = routes
        .iter()
        .enumerate()
        .flat_map(|(r, (c, _))| (0..contributions[*c].rules.len()).map(move |k| (r, k)))
        .collect();
    let host = match scope {
        Scope::Gateway { host, .. } => Some(host.as_str()),
        Scope::Mesh(_) => None,
    };
    let specific: Vec<(usize, usize)> = routes
        .iter()
        .map(|(c, _)| hostname_specificity(&contributions[*c].route.hostnames, host))
        .collect();
    order.sort_by(|&(ra, ka), &(rb, kb)| {
        let rule = |r: usize, k: usize| &contributions[routes[r].0].rules[k];
        specific[rb]
            .cmp(&specific[ra])
            .then_with(|| rule(ra, ka).precedence.cmp(&rule(rb, kb).precedence))
            .then_with(|| ages[ra].cmp(&ages[rb]))
            .then(ka.cmp(&kb))
    });
    // The oldest route names the VirtualService (messages about the host).
    let oldest = (0..routes.len())
        .min_by(|&a, &b| ages[a].cmp(&ages[b]))
        .map_or(0, |r| routes[r].0);
    let several = routes.len() > 1;
    let mut origin = Origin::default();
    let mut http = Vec::with_capacity(order.len());
    for (r, k) in order {
        let (c, bindings) = &routes[r];
        let route = contributions[*c].route;
        let Rule {
            label,
            path,
            http: rule,
            backends,
            ..
        } = &contributions[*c].rules[k];
        let mut rule = rule.clone();
        rule.matches = rule
            .matches
            .iter()
            .flat_map(|m| {
                bindings.iter().map(move |(gateway, port)| HttpMatch {
                    gateways: vec![gateway.clone()],
                    port: *port,
                    ..m.clone()
                })
            })
            .collect();
        origin.http_backends.push(backends.clone());
        origin.http.push((label.clone(), path.clone()));
        if several {
            origin.http_owners.push(route.source.clone());
        }
        http.push(rule);
    }
    let (hosts, gateways) = match scope {
        Scope::Mesh(host) => (vec![host.clone()], vec!["mesh".to_owned()]),
        Scope::Gateway { gateway, host } => (vec![host.clone()], vec![gateway.clone()]),
    };
    VirtualService {
        source: contributions[oldest].route.source.clone(),
        hosts,
        gateways,
        tcp: Vec::new(),
        http,
        tls: Vec::new(),
        export_to: Vec::new(),
        origin: Some(Arc::new(origin)),
    }
}

/// How specific the hostname is by which a route serves `host` (a
/// Gateway's host; `None` on a Service, where `hostnames` do not apply):
/// the characters of its matching non-wildcard hostname, then of its
/// matching hostname. The spec gives precedence to the rules of the route
/// with the most of each, before matches and age: a route written for
/// `abc.example.com` comes before an older one for `*.example.com` there.
fn hostname_specificity(hostnames: &[String], host: Option<&str>) -> (usize, usize) {
    let Some(host) = host else {
        return (0, 0);
    };
    hostnames
        .iter()
        .filter(|h| host_matches(h, host))
        .map(|h| (if h.starts_with('*') { 0 } else { h.len() }, h.len()))
        .max()
        .unwrap_or((0, 0))
}

/// The hosts of a route's `hostnames` (none: every host) that a listener
/// of `hostname` (none: every host) takes, as the spec intersects them:
/// the more specific of the two where one covers the other.
pub(super) fn intersection(hostname: Option<&str>, hostnames: &[String]) -> Vec<String> {
    match (hostname, hostnames.is_empty()) {
        (None, true) => vec!["*".to_owned()],
        (Some(listener), true) => vec![listener.to_owned()],
        (None, false) => hostnames.to_vec(),
        (Some(listener), false) => hostnames
            .iter()
            .filter_map(|h| {
                if host_matches(listener, h) {
                    Some(h.clone())
                } else if host_matches(h, listener) {
                    Some(listener.to_owned())
                } else {
                    None
                }
            })
            .collect(),
    }
}

/// The hosts a route attached to `listener` serves there: the
/// [`intersection`] of its `hostnames` with the listener's `hostname`;
/// less those that a more specific listener of the same
/// port of the Gateway (`others`) takes, as a request is served only by
/// the routes of the most specific listener that matches it (listener
/// isolation).
pub(super) fn listener_hosts(
    listener: &Listener,
    others: &[Listener],
    hostnames: &[String],
) -> Vec<String> {
    let hosts = intersection(listener.hostname.as_deref(), hostnames);
    let own = listener.hostname.as_deref().unwrap_or("*");
    let mut out: Vec<String> = Vec::new();
    for host in hosts {
        let isolated = others.iter().any(|other| {
            other.name != listener.name
                && other.port == listener.port
                && other.hostname.as_deref().is_some_and(|theirs| {
                    theirs != own && host_matches(own, theirs) && host_matches(theirs, &host)
                })
        });
        if !isolated && !out.contains(&host) {
            out.push(host);
        }
    }
    out
}

/// A listener whose host a less specific listener of the same port also
/// matches, and that no route serves there, answers 404 for it: a request
/// is served only by the routes of the most specific listener that
/// matches its host (listener isolation), and that one has none. One
/// `VirtualService` per Gateway and such host, its rules keyed
/// `<ns>/<gateway>/listeners[i]`. `empty` is an `http` rule with nothing
/// set.
pub(super) fn unserved_listener_hosts(
    gateways: &[&Gateway],
    contributions: &[Contribution],
    empty: &HttpRule,
) -> Vec<VirtualService> {
    let mut out = Vec::new();
    for gateway in gateways {
        let id = format!("{}/{}", gateway.source.namespace, gateway.source.name);
        let mut hosts: BTreeMap<&str, (Origin, Vec<HttpRule>)> = BTreeMap::new();
        for (i, listener) in gateway.listeners.iter().enumerate() {
            let Some(hostname) = listener.hostname.as_deref() else {
                continue;
            };
            let shadowed = gateway.listeners.iter().any(|other| {
                other.name != listener.name
                    && other.port == listener.port
                    && other
                        .hostname
                        .as_deref()
                        .is_none_or(|theirs| theirs != hostname && host_matches(theirs, hostname))
            });
            let served = contributions.iter().any(|c| {
                c.gateway
                    .iter()
                    .any(|(g, h, p)| *g == id && h == hostname && *p == listener.port)
            });
            if !shadowed || served {
                continue;
            }
            let (origin, rules) = hosts.entry(hostname).or_default();
            origin
                .http
                .push((format!("listeners[{i}]"), fp!("spec.listeners[{i}]")));
            origin.http_backends.push(Vec::new());
            rules.push(HttpRule {
                matches: vec![HttpMatch {
                    gateways: vec![id.clone()],
                    port: Some(listener.port),
                    ..HttpMatch::default()
                }],
                direct_response: Some(DirectResponse {
                    status: 404,
                    body: None,
                }),
                ..empty.clone()
            });
        }
        for (host, (origin, http)) in hosts {
            out.push(VirtualService {
                source: gateway.source.clone(),
                hosts: vec![host.to_owned()],
                gateways: vec![id.clone()],
                tcp: Vec::new(),
                http,
                tls: Vec::new(),
                export_to: Vec::new(),
                origin: Some(Arc::new(origin)),
            });
        }
    }
    out
}
