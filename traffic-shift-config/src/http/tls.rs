//! One `tls[]` rule (Istio's `validateTLSRoute`): SNI matches covered by
//! the `VirtualService`'s hosts, and its route.

use super::types::{Context, TlsMatch, TlsRule};
use crate::{
    check::Check,
    dto,
    error::FieldPath,
    names::{host_matches, validate_domain},
};

/// `spec.tls[i]`.
pub(crate) fn tls_rule(
    cx: &mut Check,
    context: &Context,
    i: usize,
    rule: dto::TlsRoute,
) -> Option<TlsRule> {
    let base = FieldPath::parse(&format!("spec.tls[{i}]"));
    let errors_before = cx.errors.len();
    let written = rule.matches.unwrap_or_default();
    if written.is_empty() {
        cx.error(
            base.key("match"),
            "TLS route must have at least one match condition",
        );
    }
    let mut matches = Vec::new();
    for (k, m) in written.into_iter().enumerate() {
        let path = base.key("match").index(k);
        let sni_hosts = m.sni_hosts.unwrap_or_default();
        if sni_hosts.is_empty() {
            cx.error(
                path.key("sniHosts"),
                "TLS match must have at least one SNI host",
            );
        }
        for (h, sni) in sni_hosts.iter().enumerate() {
            sni_host(cx, context, &path.key("sniHosts").index(h), sni);
        }
        let destination_subnets = m.destination_subnets.unwrap_or_default();
        for (s, subnet) in destination_subnets.iter().enumerate() {
            let _ = cx.ok(
                path.key("destinationSubnets").index(s),
                crate::names::validate_subnet(subnet),
            );
        }
        let port = m
            .port
            .filter(|port| *port != 0)
            .and_then(|port| cx.port(path.key("port"), port));
        let source_labels = m.source_labels.unwrap_or_default();
        cx.labels(&path.key("sourceLabels"), &source_labels);
        let gateways = m.gateways.unwrap_or_default();
        cx.gateway_names(&path.key("gateways"), &gateways);
        matches.push(TlsMatch {
            sni_hosts,
            destination_subnets,
            port,
            source_labels,
            gateways,
            source_namespace: m.source_namespace.filter(|namespace| !namespace.is_empty()),
        });
    }
    let routes = rule.route.unwrap_or_default();
    if routes.is_empty() {
        cx.error(base.key("route"), "TLS route is required");
    }
    let route = cx.route_destinations(&base.key("route"), routes);
    (cx.errors.len() == errors_before).then_some(TlsRule { matches, route })
}

/// Istio's `validateSniHost`: a domain (an IP is only a warning), covered
/// by a host of the `VirtualService`.
fn sni_host(cx: &mut Check, context: &Context, path: &FieldPath, sni: &str) {
    let checked = if context.gateway_only && sni.starts_with("outbound_") {
        generated_sni(sni)
    } else {
        validate_domain(sni).map_err(|error| error.to_string())
    };
    if let Err(message) = checked {
        if sni.parse::<std::net::IpAddr>().is_ok() {
            cx.warn(
                path.clone(),
                format!(
                    "using an IP address ({sni:?}) goes against SNI spec and most clients do not \
                     support this"
                ),
            );
        } else {
            cx.error(path.clone(), message);
        }
        return;
    }
    if !context.hosts.iter().any(|host| host_subset_of(sni, host)) {
        cx.error(
            path.clone(),
            format!(
                "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: \
                 [{}]",
                context.hosts.join(", ")
            ),
        );
    }
}

/// The SNI names AUTO_PASSTHROUGH generates, `outbound_.<PORT>_._.<HOSTNAME>`,
/// legal in the SNI matches of gateway-bound rules (Istio's
/// `ValidateWildcardDomainForVirtualServiceBoundToGateway`).
fn generated_sni(sni: &str) -> Result<(), String> {
    const FORMAT: &str = "outbound_.<PORT>_._.<HOSTNAME>";
    if sni.len() > 255 {
        return Err(format!("domain name {sni:?} too long (max 255)"));
    }
    let parts: Vec<&str> = sni.split('_').collect();
    let [_, port, _, hostname, ..] = parts.as_slice() else {
        return Err(format!(
            "domain name {sni} invalid, should follow '{FORMAT}' format"
        ));
    };
    let (port, hostname) = (port.trim_matches('.'), hostname.trim_matches('.'));
    if !port.chars().any(|c| c.is_ascii_digit()) {
        return Err(format!(
            "domain name {sni:?} invalid (label {port:?} invalid). should follow {FORMAT} format"
        ));
    }
    if !hostname.chars().any(|c| c.is_ascii_alphabetic()) {
        return Err(format!(
            "domain name {sni:?} invalid (label {hostname:?} invalid). should follow {FORMAT} \
             format"
        ));
    }
    Ok(())
}

/// Istio's `host.Name.SubsetOf`: every name `a` covers is covered by `b`.
fn host_subset_of(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (_, Some("")) => true,
        (Some(a_suffix), Some(b_suffix)) => a_suffix.ends_with(b_suffix),
        (None, Some(_)) => host_matches(b, a),
        (_, None) => a == b,
    }
}
