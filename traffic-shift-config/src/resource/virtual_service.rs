//! `VirtualService`: hosts, gateways and `tcp` rules (Istio's
//! `ValidateVirtualService`); its `http` and `tls` rules are checked in
//! `http`.

use std::net::IpAddr;

use crate::{
    check::{Check, Checked},
    common::{Labels, RouteDestination},
    dto,
    error::fp,
    http::{self, HttpRule, TlsRule},
    names::{host_matches, validate_domain, validate_subnet},
    source::Source,
};

#[derive(Clone, Debug)]
pub struct VirtualService {
    pub source: Source,
    /// As written; `resolve` qualifies short names with the namespace.
    /// Empty for a delegate.
    pub hosts: Vec<String>,
    /// Empty means `mesh`.
    pub gateways: Vec<String>,
    pub tcp: Vec<TcpRule>,
    /// Served per request by the L7 proxy (`traffic-shift-proxy`):
    /// `resolve` turns them into its listeners.
    pub http: Vec<HttpRule>,
    /// Modelled and checked; refused by `resolve` (not supported yet).
    pub tls: Vec<TlsRule>,
    /// `exportTo`, checked; applied by `resolve_in` (`crate::visibility`).
    pub export_to: Vec<String>,
    /// Set when this `VirtualService` was translated from another kind
    /// (`gateway_api`): how its rules are named in keys and messages.
    pub(crate) origin: Option<std::sync::Arc<crate::gateway_api::Origin>>,
}

impl VirtualService {
    /// How rule `i` of `tcp` (`"tcp"`) or `http` (`"http"`) is named in
    /// route keys and messages: `tcp[0]`, or the translated resource's own
    /// name for it (`rules[0]`).
    pub(crate) fn rule_label(&self, list: &str, i: usize) -> String {
        self.origin
            .as_ref()
            .and_then(|origin| origin.label(list, i))
            .unwrap_or_else(|| format!("{list}[{i}]"))
    }

    /// The route key of rule `i` of `list`: `<ns>/<name>/<label>`, where
    /// `<ns>/<name>` is this `VirtualService`'s, or the resource the rule
    /// was written in when the rules of several are merged (HTTPRoutes on
    /// one host).
    pub(crate) fn rule_key(&self, list: &str, i: usize) -> String {
        let owner = self
            .origin
            .as_ref()
            .and_then(|origin| origin.owner(list, i))
            .unwrap_or_else(|| format!("{}/{}", self.source.namespace, self.source.name));
        format!("{owner}/{}", self.rule_label(list, i))
    }

    /// The field path of rule `i` of `list`, in the document as written.
    pub(crate) fn rule_path(&self, list: &str, i: usize) -> crate::error::FieldPath {
        self.origin
            .as_ref()
            .and_then(|origin| origin.path(list, i))
            .unwrap_or_else(|| crate::error::fp!("spec.{list}[{i}]"))
    }

    /// Whether the rules apply to clients on this node (`gateways` absent
    /// or listing `mesh`).
    pub fn binds_mesh(&self) -> bool {
        binds_mesh(&self.gateways)
    }
}

fn binds_mesh(gateways: &[String]) -> bool {
    gateways.is_empty() || gateways.iter().any(|gateway| gateway == "mesh")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpRule {
    pub matches: Vec<L4Match>,
    pub route: Vec<RouteDestination>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct L4Match {
    pub port: Option<u16>,
    pub destination_subnets: Vec<String>,
    pub source_subnet: Option<String>,
    pub source_labels: Labels,
    /// Overrides the `VirtualService`'s `gateways` for this match.
    pub gateways: Vec<String>,
    pub source_namespace: Option<String>,
}

/// Istio's `ValidateVirtualService`.
pub(super) fn validate(source: Source, spec: dto::VirtualServiceSpec) -> Checked<VirtualService> {
    let mut cx = Check::new(&source);
    let hosts = spec.hosts.unwrap_or_default();
    let gateways = spec.gateways.unwrap_or_default();
    let tcp = spec.tcp.unwrap_or_default();
    let http = spec.http.unwrap_or_default();
    let tls = spec.tls.unwrap_or_default();

    if hosts.is_empty() {
        // A delegate.
        let delegate_rules = [
            (!gateways.is_empty(), "gateways", "gateways"),
            (!tls.is_empty(), "tls", "tls route"),
            (!tcp.is_empty(), "tcp", "tcp route"),
        ];
        for (set, field, what) in delegate_rules {
            if set {
                cx.error(
                    fp!("spec.{field}"),
                    format!(
                        "delegate virtual service must have no {what} specified: a \
                         VirtualService without hosts is a delegate; add spec.hosts"
                    ),
                );
            }
        }
    }
    cx.gateway_names(&fp!("spec.gateways"), &gateways);
    let mesh = binds_mesh(&gateways);
    let sni = tls.iter().any(|rule| {
        rule.matches
            .iter()
            .flatten()
            .any(|m| m.sni_hosts.as_ref().is_some_and(|hosts| !hosts.is_empty()))
    });

    virtual_service_hosts(&mut cx, &hosts, mesh, sni);
    if http.is_empty() && tcp.is_empty() && tls.is_empty() {
        cx.error(
            fp!("spec"),
            "http, tcp or tls must be provided in virtual service",
        );
    }

    let context = http::Context {
        hosts: &hosts,
        gateway_only: !mesh,
        delegate: hosts.is_empty(),
    };
    let http: Vec<HttpRule> = http
        .into_iter()
        .enumerate()
        .filter_map(|(i, rule)| http::http_rule(&mut cx, &context, i, rule))
        .collect();
    let tls: Vec<TlsRule> = tls
        .into_iter()
        .enumerate()
        .filter_map(|(i, rule)| http::tls_rule(&mut cx, &context, i, rule))
        .collect();
    let tcp: Vec<TcpRule> = tcp
        .into_iter()
        .enumerate()
        .filter_map(|(i, rule)| tcp_rule(&mut cx, i, rule))
        .collect();
    http::unreachable_http_rules(&mut cx, &http);
    let export_to = spec.export_to.unwrap_or_default();
    cx.export_to(&export_to, false);

    let warnings = cx.finish()?;
    Ok((
        VirtualService {
            origin: None,
            source,
            hosts,
            gateways,
            tcp,
            http,
            tls,
            export_to,
        },
        warnings,
    ))
}

/// The `hosts` of a `VirtualService`: valid (an IP too), `*` only for
/// gateways, no two overlapping.
fn virtual_service_hosts(cx: &mut Check, hosts: &[String], mesh: bool, sni: bool) {
    let mut all_hosts_valid = true;
    for (i, host) in hosts.iter().enumerate() {
        let path = fp!("spec.hosts[{i}]");
        let valid = if !mesh && sni && host.starts_with("outbound_") {
            // AUTO_PASSTHROUGH's generated names: outbound_.<port>_._.<host>.
            Ok(())
        } else {
            validate_domain(host)
        };
        match valid {
            Err(message) if host.parse::<IpAddr>().is_err() => {
                cx.error(path, message);
                all_hosts_valid = false;
            }
            Ok(()) if mesh && host == "*" => {
                cx.error(
                    path,
                    "wildcard host * is not allowed for virtual services bound to the mesh \
                     gateway: name the service hosts, or bind the rules to gateways only",
                );
                all_hosts_valid = false;
            }
            Ok(()) | Err(_) => {}
        }
    }
    if all_hosts_valid {
        for (j, host) in hosts.iter().enumerate() {
            if let Some(earlier) = hosts[..j]
                .iter()
                .find(|earlier| host_matches(earlier, host) || host_matches(host, earlier))
            {
                cx.error(
                    fp!("spec.hosts[{j}]"),
                    format!("duplicate hosts in virtual service: {earlier} & {host}"),
                );
            }
        }
    }
}

/// Istio's `validateTCPRoute`.
fn tcp_rule(cx: &mut Check, i: usize, rule: dto::TcpRoute) -> Option<TcpRule> {
    let errors_before = cx.errors.len();
    let mut matches = Vec::new();
    for (k, m) in rule.matches.unwrap_or_default().into_iter().enumerate() {
        let base = fp!("spec.tcp[{i}].match[{k}]");
        let port = m
            .port
            .filter(|port| *port != 0)
            .and_then(|port| cx.port(base.key("port"), port));
        let destination_subnets = m.destination_subnets.unwrap_or_default();
        for (s, subnet) in destination_subnets.iter().enumerate() {
            let _ = cx.ok(
                base.key("destinationSubnets").index(s),
                validate_subnet(subnet),
            );
        }
        let source_subnet = m.source_subnet.filter(|subnet| !subnet.is_empty());
        if let Some(subnet) = &source_subnet {
            let _ = cx.ok(base.key("sourceSubnet"), validate_subnet(subnet));
        }
        let source_labels = m.source_labels.unwrap_or_default();
        cx.labels(&base.key("sourceLabels"), &source_labels);
        let gateways = m.gateways.unwrap_or_default();
        cx.gateway_names(&base.key("gateways"), &gateways);
        matches.push(L4Match {
            port,
            destination_subnets,
            source_subnet,
            source_labels,
            gateways,
            source_namespace: m.source_namespace.filter(|namespace| !namespace.is_empty()),
        });
    }

    let routes = rule.route.unwrap_or_default();
    if routes.is_empty() {
        cx.error(
            fp!("spec.tcp[{i}].route"),
            "TCP route is required: list at least one destination",
        );
    }
    let route = cx.route_destinations(&fp!("spec.tcp[{i}].route"), routes);
    (cx.errors.len() == errors_before).then_some(TcpRule { matches, route })
}
