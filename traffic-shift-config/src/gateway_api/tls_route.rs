//! `TLSRoute` (`gateway.networking.k8s.io/v1`, since Gateway API 1.5, and
//! `v1alpha2`) and the `tls` of a Gateway listener: TLS passthrough chosen
//! by SNI. A listener of protocol `TLS` with `tls.mode: Passthrough` is an
//! Istio Gateway server of protocol `TLS` in `PASSTHROUGH` mode; a
//! `TLSRoute` attached to it is a `VirtualService` `tls` rule whose
//! `sniHosts` are the route's `hostnames` intersected with the listener's
//! `hostname`, as Istio's controller writes it. `resolve` (`resolve/tls.rs`)
//! turns that into a [`crate::model::TcpRoute`] with SNI names, which the
//! agent serves in user space: the ClientHello is read without terminating
//! TLS, then the bytes are spliced to the endpoint the weights pick.
//!
//! The checks and the translation follow `TCPRoute`'s: the same
//! `parentRefs`, `backendRefs` (weights, `ReferenceGrant`), status.
//!
//! Routes with the same SNI name on one listener port: the oldest takes
//! it (the spec's tie-break: `creationTimestamp`, then `namespace/name`;
//! [`ListenerClaims`]); a route left with no name on a parent is not accepted
//! there (`Accepted` `False`, reason `Conflicted`).

use std::sync::Arc;

use serde::{Deserialize, de::IgnoredAny};

use super::{
    BackendRef, Origin, ParentRef,
    check::{backend_refs, parent_refs},
    claims::{ListenerClaims, conflicted},
    dto,
    merge::intersection,
    status::{Condition, RouteStatus, Statuses},
    translate::{Index, gateway_id},
};
use crate::{
    check::{Check, Checked},
    common::Protocol,
    error::{FieldPath, fp},
    http::{TlsMatch, TlsRule},
    names::validate_domain,
    resource::VirtualService,
    source::Source,
};

/// `TLSRoute` `spec`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsRouteSpec {
    pub parent_refs: Option<Vec<dto::ParentRef>>,
    pub hostnames: Option<Vec<String>>,
    pub rules: Option<Vec<TlsRouteRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsRouteRule {
    #[expect(dead_code, reason = "accepted: a rule's name names nothing here")]
    pub name: Option<String>,
    pub backend_refs: Option<Vec<dto::BackendRef>>,
}

/// A listener's `tls`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenerTls {
    pub mode: Option<String>,
    /// Read on HTTPS listeners (Terminate mode); refused in Passthrough.
    pub certificate_refs: Option<Vec<super::https::CertificateRefDto>>,
    #[expect(
        dead_code,
        reason = "accepted: implementation-specific options, none read"
    )]
    pub options: Option<IgnoredAny>,
    pub frontend_validation: Option<IgnoredAny>,
}

/// A `TLSRoute`: one rule of weighted backends, for the SNI names of
/// `hostnames`.
#[derive(Clone, Debug)]
pub struct TlsRoute {
    pub source: Source,
    /// `metadata.generation` (1 when not written).
    pub generation: i64,
    pub parents: Vec<ParentRef>,
    /// Lowercase; a name or `*.suffix`. Empty: every SNI name.
    pub hostnames: Vec<String>,
    pub backends: Vec<BackendRef>,
}

/// A listener's `tls`: only `mode: Passthrough` (the default is
/// `Terminate`) on a `TLS` listener is served; `Terminate`, and `tls` on a
/// listener of another protocol, are refused.
pub(super) fn listener_tls(
    cx: &mut Check,
    base: &FieldPath,
    protocol: Option<&str>,
    tls: Option<ListenerTls>,
) {
    let path = base.key("tls");
    match (protocol, tls) {
        (Some("TLS"), None) => cx.error(
            path,
            "a TLS listener needs tls.mode: Passthrough (the spec's default mode is Terminate, \
             which a TLS listener does not serve: to terminate TLS and route HTTP, use protocol: \
             HTTPS); add tls: {mode: Passthrough}",
        ),
        (Some("TLS"), Some(tls)) => match tls.mode.as_deref() {
            Some("Passthrough") => {
                if tls.certificate_refs.is_some() {
                    cx.error(
                        path.key("certificateRefs"),
                        "certificateRefs is not read in Passthrough mode (the backend holds the \
                         certificate): remove it",
                    );
                }
                if tls.frontend_validation.is_some() {
                    cx.error(
                        path.key("frontendValidation"),
                        "frontendValidation is not read in Passthrough mode (the backend \
                         terminates TLS): remove it",
                    );
                }
            }
            None | Some("Terminate") => cx.error(
                path.key("mode"),
                "tls.mode Terminate is not supported: only Passthrough is served on a TLS \
                 listener (TLSRoute, by SNI); to terminate TLS and route HTTP, use protocol: \
                 HTTPS (HTTPRoute); else set mode: Passthrough",
            ),
            Some(other) => cx.error(
                path.key("mode"),
                format!("tls.mode {other:?} is not known: use Passthrough"),
            ),
        },
        (_, Some(_)) => cx.error(
            path,
            "listener tls is only read on a TLS listener (tls.mode: Passthrough) or an HTTPS \
             listener (tls.mode: Terminate): remove it",
        ),
        (_, None) => {}
    }
}

/// A `TLSRoute`.
pub(super) fn tls_route(source: Source, spec: TlsRouteSpec, generation: i64) -> Checked<TlsRoute> {
    let mut cx = Check::new(&source);
    let parents = parent_refs(&mut cx, spec.parent_refs, &source.namespace, false);
    let mut hostnames = Vec::new();
    for (h, hostname) in spec.hostnames.unwrap_or_default().into_iter().enumerate() {
        let hostname = hostname.to_ascii_lowercase();
        let path = fp!("spec.hostnames[{h}]");
        if hostname == "*" {
            cx.error(
                path,
                "hostname * is not valid: leave hostnames out to match every SNI name",
            );
        } else if hostname.parse::<std::net::IpAddr>().is_ok() {
            cx.error(
                path,
                format!(
                    "hostname {hostname} is an IP address: SNI carries names only (RFC 6066); \
                     use a name"
                ),
            );
        } else if let Err(message) = validate_domain(&hostname) {
            cx.error(path, message);
        } else if !hostnames.contains(&hostname) {
            hostnames.push(hostname);
        }
    }
    let rules = spec.rules.unwrap_or_default();
    if rules.is_empty() {
        cx.error(
            fp!("spec.rules"),
            "rules is required: one rule with backendRefs",
        );
    }
    if rules.len() > 1 {
        cx.error(
            fp!("spec.rules[1]"),
            "a TLSRoute with several rules is not supported: a TLS passthrough connection has \
             nothing but its SNI to choose by, and that is the route's hostnames; put every \
             backendRef in one rule",
        );
    }
    let mut backends = Vec::new();
    if let Some(rule) = rules.into_iter().next() {
        let base = fp!("spec.rules[0]");
        let written = rule.backend_refs.unwrap_or_default();
        for (j, backend) in written.iter().enumerate() {
            if backend.filters.is_some() {
                cx.error(
                    base.key("backendRefs").index(j).key("filters"),
                    "a TLSRoute backendRef has no filters: remove them",
                );
            }
        }
        backends = backend_refs(&mut cx, &base, Some(written), None, &source.namespace);
        if backends.is_empty() && cx.errors.is_empty() {
            cx.error(
                base.key("backendRefs"),
                "backendRefs is required: the Services that take the connections",
            );
        }
    }
    let warnings = cx.finish()?;
    Ok((
        TlsRoute {
            source,
            generation,
            parents,
            hostnames,
            backends,
        },
        warnings,
    ))
}

impl Index<'_> {
    /// The `VirtualService` of a `TLSRoute`: one `tls` rule, with a match
    /// per listener it is attached to (that listener's port and Gateway,
    /// and the SNI names its hostname and the route's intersect to, less
    /// those an older route takes there: `claims`).
    pub(super) fn tls_route(
        &self,
        route: &TlsRoute,
        claims: &mut ListenerClaims,
        statuses: &mut Statuses,
    ) -> Option<VirtualService> {
        let source = &route.source;
        let mut status = RouteStatus::new(source, route.generation);
        let mut gateways = Vec::new();
        let mut matches: Vec<TlsMatch> = Vec::new();
        for parent in &route.parents {
            let found = self.listeners(source, "TLSRoute", parent, &route.hostnames);
            let (gateway, listeners) = match found {
                Ok(found) => found,
                Err(condition) => {
                    if let Some(condition) = condition {
                        status.parent(parent, condition);
                    }
                    continue;
                }
            };
            let id = gateway_id(&gateway.source);
            let mut attached = Vec::new();
            let mut lost = Vec::new();
            for listener in listeners {
                debug_assert_eq!(
                    listener.protocol,
                    Protocol::Tls,
                    "TLSRoute on a TLS listener"
                );
                let names = intersection(listener.hostname.as_deref(), &route.hostnames);
                let sni_hosts: Vec<String> = names
                    .into_iter()
                    .filter(|name| claims.take((&id, listener.port), name, source, &mut lost))
                    .collect();
                if sni_hosts.is_empty() {
                    continue;
                }
                matches.push(TlsMatch {
                    sni_hosts,
                    port: Some(listener.port),
                    gateways: vec![id.clone()],
                    ..TlsMatch::default()
                });
                statuses.attach(&gateway.source, &listener.name, source);
                attached.push(listener);
            }
            if attached.is_empty() {
                status.parent(
                    parent,
                    conflicted(
                        &lost,
                        "TLSRoutes with one SNI name on a listener",
                        "give this route other hostnames, or remove one of them",
                    ),
                );
                continue;
            }
            status.parent(parent, Condition::attached(&id, &attached));
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
            tcp: Vec::new(),
            http: Vec::new(),
            tls: vec![TlsRule {
                matches,
                route: route_destinations,
            }],
            export_to: Vec::new(),
            origin: Some(Arc::new(Origin {
                tls: vec![("rules[0]".to_owned(), fp!("spec.rules[0]"))],
                tls_backends: vec![paths],
                ..Origin::default()
            })),
        })
    }
}
