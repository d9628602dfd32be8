//! Which `VirtualServices` and `DestinationRules` a proxy in a namespace
//! sees (their `exportTo`), as Istio's `PushContext` decides
//! (`initVirtualServices`, `setDestinationRules`, `destinationRule`).
//!
//! The agent is the proxy of the node: with `--namespace N` it sees the
//! rules as Istio's sidecar (and gateway) in `N` sees them
//! ([`VisibleTo::filter`]); without, every rule applies (the node is no
//! namespace's).
//!
//! - A `VirtualService` is visible to `N` when its `exportTo` is absent (the
//!   default, `*`), holds `*`, or names `N` (`.` is its own namespace). `~`
//!   hides it from all. Its own namespace is not implied: `exportTo: [b]` in
//!   namespace `a` is visible in `b` only, as in Istio.
//! - A `DestinationRule` for a service is looked up as Istio looks it up,
//!   the first that has one for the host (the exact host, else the most
//!   specific wildcard) wins: (1) the rules of `N` itself whose `exportTo`
//!   is absent, `*`, `.` or `N` (when `N` is the root namespace, only its
//!   rules private to it); (2) the rules of the service's namespace exported
//!   to `N` (`exportTo` absent, `*`, or naming `N`; not `.` alone); (3) the
//!   rules of the root namespace ([`ROOT_NAMESPACE`]) exported to `N`. A
//!   rule of any other namespace does not apply, whatever its `exportTo`.
//!   Among rules of one namespace for one host the oldest wins (creation
//!   time, then name, then namespace).

use std::collections::BTreeMap;

use crate::{
    names::host_matches,
    resolve::qualify,
    resource::{DestinationRule, Resource, ServiceEntry, VirtualService},
};

/// Istio's default mesh root namespace (`meshConfig.rootNamespace`).
pub const ROOT_NAMESPACE: &str = "istio-system";

/// Whether a `VirtualService` of `namespace` with `export_to` is visible to
/// a proxy in `proxy` (Istio's `initVirtualServices` index, looked up by
/// `VirtualServicesForGateway`).
pub fn virtual_service_visible(namespace: &str, export_to: &[String], proxy: &str) -> bool {
    if export_to.is_empty() {
        return true;
    }
    if export_to.iter().any(|to| to == "~") {
        return false;
    }
    export_to
        .iter()
        .any(|to| to == "*" || to == proxy || (to == "." && namespace == proxy))
}

/// A `DestinationRule` as the lookup sees it.
#[derive(Clone, Debug)]
pub struct RuleView<'a, T> {
    pub namespace: &'a str,
    /// Qualified (`ResolveShortnameToFQDN`).
    pub host: String,
    pub export_to: &'a [String],
    /// Istio's order: creation time (none first), name, namespace.
    pub age: (Option<&'a str>, &'a str),
    pub rule: T,
}

/// Istio's `setDestinationRules` index, for [`DestinationRules::lookup`].
#[derive(Debug)]
pub struct DestinationRules<'a, T> {
    /// Per namespace: its rules a proxy of that namespace sees first.
    local: BTreeMap<&'a str, Vec<RuleView<'a, T>>>,
    /// Per namespace: its rules exported beyond it.
    exported: BTreeMap<&'a str, Vec<RuleView<'a, T>>>,
    /// The root namespace's rules private to it.
    root_local: Vec<RuleView<'a, T>>,
}

impl<'a, T: Clone> DestinationRules<'a, T> {
    pub fn new(rules: impl IntoIterator<Item = RuleView<'a, T>>) -> Self {
        let mut rules: Vec<RuleView<'a, T>> = rules.into_iter().collect();
        rules.sort_by(|a, b| (a.age, a.namespace).cmp(&(b.age, b.namespace)));
        let mut index = Self {
            local: BTreeMap::new(),
            exported: BTreeMap::new(),
            root_local: Vec::new(),
        };
        for rule in rules {
            let export = rule.export_to;
            let has = |to: &str| export.iter().any(|e| e == to);
            if export.is_empty() || has("*") || has(".") || has(rule.namespace) {
                index
                    .local
                    .entry(rule.namespace)
                    .or_default()
                    .push(rule.clone());
            }
            let private_only = export.len() == 1 && (has(".") || has(rule.namespace));
            if !private_only {
                index.exported.entry(rule.namespace).or_default().push(rule);
            } else if rule.namespace == ROOT_NAMESPACE {
                index.root_local.push(rule);
            }
        }
        index
    }

    /// The rule a proxy in `proxy` applies to `host`, a service of
    /// `service_namespace` (Istio's `destinationRule`).
    pub fn lookup(&self, proxy: &str, service_namespace: &str, host: &str) -> Option<&T> {
        let local = if proxy == ROOT_NAMESPACE {
            Some(&self.root_local)
        } else {
            self.local.get(proxy)
        };
        if let Some(rule) = local.and_then(|rules| most_specific(rules, host)) {
            return Some(&rule.rule);
        }
        for owner in [service_namespace, ROOT_NAMESPACE] {
            let Some(rule) = self
                .exported
                .get(owner)
                .and_then(|rules| most_specific(rules, host))
            else {
                continue;
            };
            let export = rule.export_to;
            if export.is_empty() || export.iter().any(|to| to == "*" || to == proxy) {
                return Some(&rule.rule);
            }
            // Istio: the most specific rule of that namespace is not
            // exported here; it looks no further in it.
        }
        None
    }
}

/// Istio's `MostSpecificHostMatch`: a rule for exactly `host`, else the
/// most specific wildcard that covers it (the longest); the oldest first.
fn most_specific<'r, 'a, T>(
    rules: &'r [RuleView<'a, T>],
    host: &str,
) -> Option<&'r RuleView<'a, T>> {
    if let Some(rule) = rules.iter().find(|r| r.host == host) {
        return Some(rule);
    }
    let mut best: Option<&RuleView<'a, T>> = None;
    for rule in rules
        .iter()
        .filter(|r| r.host.starts_with('*') && host_matches(&r.host, host))
    {
        if best.is_none_or(|b| rule.host.len() > b.host.len()) {
            best = Some(rule);
        }
    }
    best
}

/// The rules as a proxy in one namespace sees them.
#[derive(Clone, Debug)]
pub struct VisibleTo<'n> {
    pub namespace: &'n str,
}

impl VisibleTo<'_> {
    /// `resources` without the `VirtualServices` and `DestinationRules` a
    /// proxy in [`Self::namespace`] does not see. A `DestinationRule` stays
    /// when it is the one the proxy applies to a host of a `ServiceEntry`
    /// it sees (the oldest of a host, as `resolve` chooses).
    pub fn filter<'a>(&self, resources: Vec<&'a Resource>) -> Vec<&'a Resource> {
        let proxy = self.namespace;
        let rules = DestinationRules::new(resources.iter().filter_map(|r| match r {
            Resource::DestinationRule(rule) => Some(rule_view(rule)),
            _ => None,
        }));
        // Each host a visible ServiceEntry defines, and the namespace of
        // the oldest such entry.
        let mut services: BTreeMap<&str, &ServiceEntry> = BTreeMap::new();
        for resource in &resources {
            let Resource::ServiceEntry(entry) = resource else {
                continue;
            };
            if !service_entry_visible(entry, proxy) {
                continue;
            }
            for host in &entry.hosts {
                let older = services
                    .get(host.as_str())
                    .is_some_and(|other| service_age(other) <= service_age(entry));
                if !older {
                    services.insert(host, entry);
                }
            }
        }
        // The hosts a rule may be for: every ServiceEntry host, and every
        // host a DestinationRule names (a host a wildcard ServiceEntry
        // covers, `reviews.eu.bookinfo.com` of `*.eu.bookinfo.com`), each
        // with the namespace of its service (the exact host's, else the
        // most specific wildcard's).
        let rule_hosts = resources.iter().filter_map(|r| match r {
            Resource::DestinationRule(rule) => Some(qualify(&rule.host, &rule.source.namespace)),
            _ => None,
        });
        let hosts: Vec<String> = services
            .keys()
            .map(|h| (*h).to_owned())
            .chain(rule_hosts.filter(|h| !h.starts_with('*')))
            .collect();
        let service_of = |host: &str| {
            services.get(host).or_else(|| {
                services
                    .iter()
                    .filter(|(pattern, _)| pattern.starts_with('*') && host_matches(pattern, host))
                    .max_by_key(|(pattern, _)| pattern.len())
                    .map(|(_, entry)| entry)
            })
        };
        let applied: Vec<*const DestinationRule> = hosts
            .iter()
            .filter_map(|host| {
                let entry = service_of(host)?;
                rules.lookup(proxy, &entry.source.namespace, host)
            })
            .copied()
            .collect();
        resources
            .into_iter()
            .filter(|resource| match resource {
                Resource::VirtualService(vs) => visible_virtual_service(vs, proxy),
                Resource::DestinationRule(rule) => applied.contains(&std::ptr::from_ref(rule)),
                _ => true,
            })
            .collect()
    }
}

fn visible_virtual_service(vs: &VirtualService, proxy: &str) -> bool {
    virtual_service_visible(&vs.source.namespace, &vs.export_to, proxy)
}

fn rule_view(rule: &DestinationRule) -> RuleView<'_, *const DestinationRule> {
    RuleView {
        namespace: &rule.source.namespace,
        host: qualify(&rule.host, &rule.source.namespace),
        export_to: &rule.export_to,
        age: (
            rule.source.creation_timestamp.as_deref(),
            rule.source.name.as_str(),
        ),
        rule: std::ptr::from_ref(rule),
    }
}

/// Istio's `IsServiceVisible` for a `ServiceEntry`.
fn service_entry_visible(entry: &ServiceEntry, proxy: &str) -> bool {
    let export = &entry.export_to;
    export.is_empty()
        || export
            .iter()
            .any(|to| to == "*" || to == proxy || (to == "." && entry.source.namespace == proxy))
}

fn service_age(entry: &ServiceEntry) -> (Option<&str>, &str, &str) {
    (
        entry.source.creation_timestamp.as_deref(),
        &entry.source.name,
        &entry.source.namespace,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Istio's `TestSetDestinationRuleWithExportTo`
    /// (pilot/pkg/model/push_context_test.go): ten rules in seven
    /// namespaces, the root namespace `istio-system`; each case names the
    /// proxy's namespace, the service's and host, and the subsets of the
    /// rule Istio applies (`None`: no rule).
    #[test]
    #[expect(
        clippy::too_many_lines,
        reason = "Istio's ten rules and sixteen cases, as its test writes them"
    )]
    fn istio_set_destination_rule_with_export_to() {
        let test_host = "httpbin.org";
        // (name, namespace, host, exportTo, its subsets)
        let written: Vec<(&str, &str, &str, Vec<String>, &str)> = vec![
            (
                "rule1",
                "test1",
                test_host,
                strings(&[".", "ns1"]),
                "subset1,subset2",
            ),
            (
                "rule2",
                "test2",
                test_host,
                strings(&["test2", "ns1", "test1", "newNS"]),
                "subset3,subset4",
            ),
            (
                "rule3",
                "test3",
                test_host,
                strings(&["test1", "test2", "*"]),
                "subset5,subset6",
            ),
            (
                "rule4-local",
                "test4",
                test_host,
                strings(&["test4"]),
                "subset15,subset16",
            ),
            (
                "rule4",
                "istio-system",
                test_host,
                Vec::new(),
                "subset7,subset8",
            ),
            (
                "rule1",
                "istio-system",
                test_host,
                strings(&["."]),
                "subset9,subset10",
            ),
            (
                "rule2",
                "istio-system",
                "*.org",
                strings(&["."]),
                "subset11,subset12",
            ),
            (
                "rule3",
                "istio-system",
                "*.app.org",
                strings(&["."]),
                "subset13,subset14",
            ),
            (
                "rule5",
                "test5",
                "api.test.com",
                strings(&["istio-system"]),
                "subset5-0,subset5-1",
            ),
            (
                "rule6",
                "test6",
                "api.test.com",
                strings(&["istio-system"]),
                "subset6-0,subset6-1",
            ),
        ];
        let rules = DestinationRules::new(written.iter().map(
            |(name, namespace, host, export_to, subsets)| RuleView {
                namespace,
                host: (*host).to_owned(),
                export_to: export_to.as_slice(),
                age: (None, *name),
                rule: *subsets,
            },
        ));
        let cases = [
            ("test1", "test1", test_host, Some("subset1,subset2")),
            ("test1", "test2", test_host, Some("subset1,subset2")),
            ("test2", "test1", test_host, Some("subset3,subset4")),
            ("newNS", "test2", test_host, Some("subset3,subset4")),
            ("test3", "test1", test_host, Some("subset5,subset6")),
            ("test5", "test4", test_host, Some("subset7,subset8")),
            ("ns1", "test1", test_host, Some("subset1,subset2")),
            ("ns1", "random", test_host, Some("subset7,subset8")),
            ("random", "random", test_host, Some("subset7,subset8")),
            ("test3", "random", test_host, Some("subset5,subset6")),
            (
                "istio-system",
                "random",
                test_host,
                Some("subset9,subset10"),
            ),
            (
                "istio-system",
                "istio-system",
                test_host,
                Some("subset9,subset10"),
            ),
            (
                "istio-system",
                "istio-system",
                "foo.app.org",
                Some("subset13,subset14"),
            ),
            (
                "istio-system",
                "test5",
                "api.test.com",
                Some("subset5-0,subset5-1"),
            ),
            (
                "istio-system",
                "test6",
                "api.test.com",
                Some("subset6-0,subset6-1"),
            ),
            ("istio-system", "test7", "api.test.com", None),
        ];
        assert_eq!(cases.len(), 16, "every case of the Istio test");
        for (proxy, service, host, want) in cases {
            assert_eq!(
                rules.lookup(proxy, service, host).copied(),
                want,
                "TestSetDestinationRuleWithExportTo/{proxy}-{service} ({host})"
            );
        }
    }

    /// Istio's `TestVirtualServiceWithExportTo`: which `VirtualServices` a
    /// proxy in a namespace sees, for the mesh and for a gateway (root
    /// namespace `zzz`, whose rule is public by default).
    #[test]
    fn istio_virtual_service_with_export_to() {
        let gateway = "default/gateway";
        // (namespace, host, exportTo, gateways; empty: mesh)
        let written: Vec<(&str, &str, Vec<String>, Vec<&str>)> = vec![
            ("test1", "rule1.com", strings(&[".", "ns1"]), vec![]),
            (
                "test2",
                "rule2.com",
                strings(&["test2", "ns1", "test1"]),
                vec![],
            ),
            (
                "test3",
                "rule3.com",
                strings(&["test1", "test2", "*"]),
                vec!["mesh"],
            ),
            (
                "test2",
                "rule2gw.com",
                strings(&["test2", "ns1", "test1"]),
                vec![gateway, "mesh"],
            ),
            (
                "test3",
                "rule3gw.com",
                strings(&["test1", "test2", "*"]),
                vec![gateway],
            ),
            ("zzz", "rootNS.com", Vec::new(), vec![]),
        ];
        let seen = |proxy: &str, bound: &str| -> Vec<&str> {
            let mut hosts: Vec<&str> = written
                .iter()
                .filter(|(_, _, _, gateways)| {
                    if gateways.is_empty() {
                        bound == "mesh"
                    } else {
                        gateways.contains(&bound)
                    }
                })
                .filter(|(namespace, _, export_to, _)| {
                    virtual_service_visible(namespace, export_to, proxy)
                })
                .map(|(_, host, _, _)| *host)
                .collect();
            hosts.sort_unstable();
            hosts
        };
        let sorted = |mut hosts: Vec<&'static str>| {
            hosts.sort_unstable();
            hosts
        };
        let cases = [
            (
                "test1",
                "mesh",
                vec![
                    "rule1.com",
                    "rule2.com",
                    "rule2gw.com",
                    "rule3.com",
                    "rootNS.com",
                ],
            ),
            (
                "test2",
                "mesh",
                vec!["rule2.com", "rule2gw.com", "rule3.com", "rootNS.com"],
            ),
            (
                "ns1",
                "mesh",
                vec![
                    "rule1.com",
                    "rule2.com",
                    "rule2gw.com",
                    "rule3.com",
                    "rootNS.com",
                ],
            ),
            ("random", "mesh", vec!["rule3.com", "rootNS.com"]),
            ("test1", gateway, vec!["rule2gw.com", "rule3gw.com"]),
            ("test2", gateway, vec!["rule2gw.com", "rule3gw.com"]),
            ("ns1", gateway, vec!["rule2gw.com", "rule3gw.com"]),
            ("random", gateway, vec!["rule3gw.com"]),
        ];
        for (proxy, bound, want) in cases {
            assert_eq!(
                seen(proxy, bound),
                sorted(want),
                "TestVirtualServiceWithExportTo/{proxy}-{bound}"
            );
        }
    }

    #[test]
    fn virtual_service_export_to_none_and_own_namespace() {
        assert!(
            !virtual_service_visible("a", &strings(&["~"]), "a"),
            "~: none"
        );
        assert!(
            !virtual_service_visible("a", &strings(&["b"]), "a"),
            "not implied"
        );
        assert!(virtual_service_visible("a", &strings(&["b"]), "b"));
        assert!(virtual_service_visible("a", &strings(&["."]), "a"));
        assert!(!virtual_service_visible("a", &strings(&["."]), "b"));
        assert!(virtual_service_visible("a", &[], "b"), "absent: public");
    }
}
