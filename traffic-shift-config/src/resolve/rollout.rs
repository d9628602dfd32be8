//! `Rollout`s: each target resolved against its VirtualService (the rule,
//! its destinations) and the host's DestinationRule (both subsets), into
//! the model's [`Rollout`]s.
//!
//! A target rule that does not name one of the two subsets gets it, with
//! weight 0, before the routes are resolved ([`Targets::augmented`]): the
//! model's route then has both destinations, the added one's endpoints
//! resolved as any destination's, and a rollout can start from "all to v1".
//! A rule with one destination (no weight, or any weight: it gets all the
//! traffic) is written 100 in the copy, so the weights read as percent.

use std::collections::{BTreeMap, HashMap};

use super::{Sink, catalog::Catalog, destination::subset_of, qualify};
use crate::{
    common::RouteDestination,
    error::{ConfigError, FieldPath, fp},
    http::{Headers, HttpRouteDestination},
    model::RoutingModel,
    resource::{Resource, RolloutResource, TargetRoute, VirtualService},
    rollout::{Analysis, MetricSource, Rollout, RolloutProtocol, Step},
    source::Source,
};

/// A rule of a VirtualService.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    Tcp(usize),
    Http(usize),
}

impl Rule {
    fn label(self) -> String {
        match self {
            Self::Tcp(i) => format!("tcp[{i}]"),
            Self::Http(i) => format!("http[{i}]"),
        }
    }

    fn protocol(self) -> RolloutProtocol {
        match self {
            Self::Tcp(_) => RolloutProtocol::Tcp,
            Self::Http(_) => RolloutProtocol::Http,
        }
    }
}

/// The rollouts of the rules, resolved, and the VirtualServices their
/// targets change.
#[derive(Default)]
pub(super) struct Targets {
    /// With the source of each, for warnings.
    pub(super) rollouts: Vec<(Rollout, Source)>,
    /// By `(namespace, name)`: a VirtualService with a subset added to a
    /// target rule (weight 0), to resolve instead of the one written.
    pub(super) augmented: HashMap<(String, String), VirtualService>,
}

impl Targets {
    /// The VirtualService to resolve for `vs`: its copy with the rollout
    /// subsets added, if one was made.
    pub(super) fn virtual_service<'v>(&'v self, vs: &'v VirtualService) -> &'v VirtualService {
        self.augmented
            .get(&(vs.source.namespace.clone(), vs.source.name.clone()))
            .unwrap_or(vs)
    }

    /// Warns of each rollout whose target rule makes no route in `model`
    /// (a rule that is never used, or has no address to route): the
    /// rollout would change nothing.
    pub(super) fn warn_unrouted(&self, model: &RoutingModel, sink: &mut Sink) {
        for (rollout, source) in &self.rollouts {
            let routed = model.routes.iter().any(|r| rollout.targets_tcp(&r.key))
                || model
                    .http
                    .iter()
                    .flat_map(|l| &l.virtual_hosts)
                    .flat_map(|v| &v.routes)
                    .any(|r| rollout.targets_http(&r.key));
            if !routed {
                let rule = rollout.route.rsplit('/').next().unwrap_or_default();
                sink.warnings.push(source.warning(
                    fp!("spec.target"),
                    format!(
                        "the target rule {rule} of VirtualService {} makes no route (no \
                         listener takes it): the rollout changes no traffic",
                        rollout.virtual_service
                    ),
                ));
            }
        }
    }

    /// The rollouts, sorted by name (`<namespace>/<name>`).
    pub(super) fn into_rollouts(self) -> Vec<Rollout> {
        let mut rollouts: Vec<Rollout> = self.rollouts.into_iter().map(|(r, _)| r).collect();
        rollouts.sort_by(|a, b| a.name.cmp(&b.name));
        rollouts
    }
}

/// Every `Rollout` of `resources`, resolved; errors recorded.
pub(super) fn targets(resources: &[&Resource], catalog: &Catalog, sink: &mut Sink) -> Targets {
    let virtual_services: HashMap<(&str, &str), &VirtualService> = resources
        .iter()
        .filter_map(|resource| match resource {
            Resource::VirtualService(vs) => {
                Some(((vs.source.namespace.as_str(), vs.source.name.as_str()), vs))
            }
            _ => None,
        })
        .collect();
    let mut rollouts: Vec<&RolloutResource> = resources
        .iter()
        .filter_map(|resource| match resource {
            Resource::Rollout(rollout) => Some(&**rollout),
            _ => None,
        })
        .collect();
    rollouts.sort_by(|a, b| {
        (&a.source.namespace, &a.source.name).cmp(&(&b.source.namespace, &b.source.name))
    });

    let mut targets = Targets::default();
    // Which Rollout targets each rule: (namespace, VirtualService, rule).
    let mut claimed: BTreeMap<(&str, &str, Rule), &Source> = BTreeMap::new();
    for rollout in rollouts {
        let Some((resolved, vs, rule, missing)) =
            sink.take(resolve_one(rollout, &virtual_services, catalog))
        else {
            continue;
        };
        let key = (vs.source.namespace.as_str(), vs.source.name.as_str(), rule);
        if let Some(first) = claimed.get(&key) {
            sink.errors.push(rollout.source.error(
                fp!("spec.target"),
                format!(
                    "{} {} is already the target of {}: one Rollout per rule; remove one of \
                     them, or target another rule",
                    vs.source.id(),
                    rule.label(),
                    first.describe()
                ),
            ));
            continue;
        }
        claimed.insert(key, &rollout.source);
        if let Some(subset) = missing {
            let copy = targets
                .augmented
                .entry((vs.source.namespace.clone(), vs.source.name.clone()))
                .or_insert_with(|| vs.clone());
            add_subset(copy, rule, &subset);
        }
        targets.rollouts.push((resolved, rollout.source.clone()));
    }
    targets
}

/// The fields of `spec.target` an error about the rule points at: `route`
/// when it is written, else `spec.target`.
fn route_path(rollout: &RolloutResource) -> FieldPath {
    if rollout.target.route.is_written() {
        fp!("spec.target.route")
    } else {
        fp!("spec.target")
    }
}

type Resolved<'v> = (Rollout, &'v VirtualService, Rule, Option<String>);

/// One Rollout: the model's [`Rollout`], its VirtualService, the target
/// rule, and the subset the rule lacks (to add with weight 0), if any.
fn resolve_one<'v>(
    rollout: &RolloutResource,
    virtual_services: &HashMap<(&str, &str), &'v VirtualService>,
    catalog: &Catalog,
) -> Result<Resolved<'v>, Vec<ConfigError>> {
    let source = &rollout.source;
    let target = &rollout.target;
    let namespace = source.namespace.as_str();
    let vs_namespace = target.namespace.as_deref().unwrap_or(namespace);
    let Some(vs) = virtual_services
        .get(&(vs_namespace, target.virtual_service.as_str()))
        .copied()
    else {
        let mut elsewhere: Vec<String> = virtual_services
            .keys()
            .filter(|(_, name)| *name == target.virtual_service)
            .map(|(ns, name)| format!("{ns}/{name}"))
            .collect();
        elsewhere.sort();
        let hint = if elsewhere.is_empty() {
            String::new()
        } else {
            format!(
                " (there is {}: name its namespace in spec.target.namespace)",
                elsewhere.join(", ")
            )
        };
        return Err(vec![source.error(
            fp!("spec.target.virtualService"),
            format!(
                "VirtualService {vs_namespace}/{} not found{hint}: define it, or fix \
                 spec.target.virtualService",
                target.virtual_service
            ),
        )]);
    };
    let rule = pick_rule(rollout, vs)
        .map_err(|message| vec![source.error(route_path(rollout), message)])?;
    let (host, missing) = check_destinations(rollout, vs, rule)
        .map_err(|message| vec![source.error(route_path(rollout), message)])?;

    let mut errors = Vec::new();
    check_metrics(rollout, vs, rule, &mut errors);
    // The host's service: when there is none, the VirtualService's own
    // resolution says so.
    let Some((_, service_host)) = catalog.service(&host, &vs.source.namespace) else {
        return Err(errors);
    };
    let dr = catalog.rule(&host, &vs.source.namespace);
    let qualified = qualify(&host, &vs.source.namespace);
    for (field, name) in [("stable", &target.stable), ("canary", &target.canary)] {
        if let Err(error) = subset_of(source, fp!("spec.target.{field}"), &qualified, name, dr) {
            errors.push(error);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let resolved = Rollout {
        name: format!("{namespace}/{}", source.name),
        source: source.file.display().to_string(),
        virtual_service: format!("{}/{}", vs.source.namespace, vs.source.name),
        route: format!(
            "{}/{}/{}",
            vs.source.namespace,
            vs.source.name,
            rule.label()
        ),
        protocol: rule.protocol(),
        host: service_host.to_owned(),
        stable: target.stable.clone(),
        canary: target.canary.clone(),
        steps: rollout.steps.clone(),
        analysis: rollout.analysis.clone(),
        spec_digest: rollout.spec_digest.clone(),
    };
    Ok((resolved, vs, rule, missing))
}

/// The rule `spec.target.route` names in `vs` (see [`TargetRoute`]).
fn pick_rule(rollout: &RolloutResource, vs: &VirtualService) -> Result<Rule, String> {
    let id = vs.source.id();
    let (tcp, http, tls) = (vs.tcp.len(), vs.http.len(), vs.tls.len());
    let rules = |kind: &str, n: usize| match n {
        0 => format!("it has no {kind} rules"),
        1 => format!("its {kind} rules: {kind}[0]"),
        n => format!("its {kind} rules: {kind}[0] to {kind}[{}]", n - 1),
    };
    let tls_target = || {
        format!(
            "the target rule of {id} is a tls rule: tls rules are not supported yet, and a \
             Rollout targets a tcp or http rule"
        )
    };
    match &rollout.target.route {
        TargetRoute::Only => match (tcp, http, tls) {
            (1, 0, 0) => Ok(Rule::Tcp(0)),
            (0, 1, 0) => Ok(Rule::Http(0)),
            (0, 0, 1) => Err(tls_target()),
            _ => Err(format!(
                "{id} has {} rules ({tcp} tcp, {http} http, {tls} tls): name the target with \
                 spec.target.route (tcp[N], http[N] or an http rule's name)",
                tcp + http + tls
            )),
        },
        TargetRoute::Tcp(i) if *i < tcp => Ok(Rule::Tcp(*i)),
        TargetRoute::Tcp(i) => Err(format!("{id} has no rule tcp[{i}] ({})", rules("tcp", tcp))),
        TargetRoute::Http(i) if *i < http => Ok(Rule::Http(*i)),
        TargetRoute::Http(i) => Err(format!(
            "{id} has no rule http[{i}] ({})",
            rules("http", http)
        )),
        TargetRoute::Index(i) => match (tcp, http) {
            (0, 0) if tls > 0 => Err(tls_target()),
            (_, 0) if *i < tcp => Ok(Rule::Tcp(*i)),
            (0, _) if *i < http => Ok(Rule::Http(*i)),
            (0, _) => Err(format!(
                "{id} has no rule http[{i}] ({})",
                rules("http", http)
            )),
            (_, 0) => Err(format!("{id} has no rule tcp[{i}] ({})", rules("tcp", tcp))),
            _ => Err(format!(
                "route {i} is ambiguous: {id} has both http and tcp rules; write http[{i}] or \
                 tcp[{i}]"
            )),
        },
        TargetRoute::Name(name) => vs
            .http
            .iter()
            .position(|rule| rule.name.as_deref() == Some(name))
            .map(Rule::Http)
            .ok_or_else(|| {
                let named: Vec<&str> = vs.http.iter().filter_map(|r| r.name.as_deref()).collect();
                format!(
                    "{id} has no http rule named {name:?} ({}): write an http rule's name, \
                     tcp[N] or http[N]",
                    if named.is_empty() {
                        "none of its http rules has a name".to_owned()
                    } else {
                        format!("named: {}", named.join(", "))
                    }
                )
            }),
    }
}

/// The destinations of the target rule: one host (returned as written),
/// only the stable and canary subsets, each once. The subset the rule
/// does not name, if any.
fn check_destinations(
    rollout: &RolloutResource,
    vs: &VirtualService,
    rule: Rule,
) -> Result<(String, Option<String>), String> {
    let target = &rollout.target;
    let destinations: Vec<&RouteDestination> = match rule {
        Rule::Tcp(i) => vs.tcp[i].route.iter().collect(),
        Rule::Http(i) => vs.http[i].route.iter().map(|d| &d.destination).collect(),
    };
    let at = format!("{} spec.{}", vs.source.id(), rule.label());
    let namespace = &vs.source.namespace;
    let Some(first) = destinations.first() else {
        return Err(format!(
            "{at} has no route destinations (it redirects or answers directly): a Rollout \
             shifts the weights of a rule's destinations"
        ));
    };
    let host = qualify(&first.host, namespace);
    let mut seen: Vec<&str> = Vec::new();
    for (j, destination) in destinations.iter().enumerate() {
        let other = qualify(&destination.host, namespace);
        if other != host {
            return Err(format!(
                "{at}.route[{j}] goes to host {other}, and route[0] to {host}: a Rollout shifts \
                 traffic between two subsets of one host"
            ));
        }
        let Some(subset) = destination.subset.as_deref() else {
            return Err(format!(
                "{at}.route[{j}] goes to {host} without a subset: the target rule's destinations \
                 must be the stable ({}) and canary ({}) subsets; add subset: {}",
                target.stable, target.canary, target.stable
            ));
        };
        if subset != target.stable && subset != target.canary {
            return Err(format!(
                "{at}.route[{j}] goes to subset {subset}: the target rule's destinations may only \
                 be the stable ({}) and canary ({}) subsets of {host}; remove it, or make it one \
                 of them",
                target.stable, target.canary
            ));
        }
        if seen.contains(&subset) {
            return Err(format!(
                "{at}.route[{j}] goes to subset {subset} again: each of the stable and canary \
                 subsets may be written once; merge the two"
            ));
        }
        seen.push(subset);
    }
    let missing = [&target.stable, &target.canary]
        .into_iter()
        .find(|subset| !seen.contains(&subset.as_str()))
        .cloned();
    Ok((first.host.clone(), missing))
}

/// The kernel's metric needs a tcp rule, the proxy's an http one.
fn check_metrics(
    rollout: &RolloutResource,
    vs: &VirtualService,
    rule: Rule,
    errors: &mut Vec<ConfigError>,
) {
    let analyses = rollout
        .analysis
        .iter()
        .map(|analysis| (fp!("spec.analysis"), analysis))
        .chain(
            rollout
                .steps
                .iter()
                .enumerate()
                .filter_map(|(i, step)| match step {
                    Step::Analysis(analysis) => Some((fp!("spec.steps[{i}].analysis"), analysis)),
                    _ => None,
                }),
        );
    let target = format!("the target rule {} of {}", rule.label(), vs.source.id());
    for (base, analysis) in analyses {
        for (k, metric) in metrics_of(analysis) {
            let kind = metric.kind();
            let problem = match (metric, rule) {
                (MetricSource::ConnectionSuccessRate, Rule::Http(_)) => format!(
                    "{kind} counts TCP connections in the kernel, and {target} is an http rule \
                     (requests through the L7 proxy): use requestSuccessRate or \
                     requestDurationP99"
                ),
                (
                    MetricSource::RequestSuccessRate | MetricSource::RequestDurationP99,
                    Rule::Tcp(_),
                ) => {
                    format!(
                        "{kind} measures HTTP requests through the L7 proxy, and {target} is a \
                         tcp rule (connections in the kernel): use connectionSuccessRate"
                    )
                }
                _ => continue,
            };
            errors.push(
                rollout
                    .source
                    .error(base.key("metrics").index(k).key(kind), problem),
            );
        }
    }
}

/// Each metric of `analysis` with its index as written. Metrics are kept
/// in order, and only valid analyses reach here, so the index is the one
/// written.
fn metrics_of(analysis: &Analysis) -> impl Iterator<Item = (usize, &MetricSource)> {
    analysis.metrics.iter().map(|m| &m.source).enumerate()
}

/// Adds `subset` to rule `rule` of `vs`, with weight 0, at the host and
/// port of the rule's first destination; a lone destination gets 100.
fn add_subset(vs: &mut VirtualService, rule: Rule, subset: &str) {
    let weigh = |route: &mut [&mut RouteDestination]| {
        if let [only] = route {
            only.weight = Some(100);
        }
    };
    let added = |first: &RouteDestination| RouteDestination {
        host: first.host.clone(),
        subset: Some(subset.to_owned()),
        port: first.port,
        weight: Some(0),
    };
    match rule {
        Rule::Tcp(i) => {
            let route = &mut vs.tcp[i].route;
            let destination = added(&route[0]);
            weigh(&mut route.iter_mut().collect::<Vec<_>>());
            route.push(destination);
        }
        Rule::Http(i) => {
            let route = &mut vs.http[i].route;
            let destination = added(&route[0].destination);
            weigh(
                &mut route
                    .iter_mut()
                    .map(|d| &mut d.destination)
                    .collect::<Vec<_>>(),
            );
            route.push(HttpRouteDestination {
                destination,
                headers: Headers::default(),
                actions: None,
            });
        }
    }
}
