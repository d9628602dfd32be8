//! HTTPS listeners (`protocol: HTTPS`, `tls.mode: Terminate`): the
//! listener's `certificateRefs` checked as the CRD's rules say, then
//! resolved to a `kubernetes.io/tls` Secret (of the Gateway's namespace,
//! or of another one that a `ReferenceGrant` from Gateways opens). The
//! listener becomes an Istio server of protocol `HTTPS`, `tls.mode:
//! SIMPLE`, with that Secret as its credential: the L7 proxy terminates
//! TLS there and serves the HTTPRoutes attached as on an HTTP listener.
//!
//! A reference that cannot be used is reported, not refused, as the spec
//! says: the listener's `ResolvedRefs` is `False` (`InvalidCertificateRef`
//! or `RefNotPermitted`), its `Programmed` `False`, and it is not served.

use serde::Deserialize;

use super::{Listener, ReferenceGrant, Secret};
use crate::{
    check::Check,
    common::Protocol,
    error::FieldPath,
    resource::{SecretRef, ServerTlsMode},
};

/// A `certificateRefs[]` entry as written (`SecretObjectReference`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CertificateRefDto {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

/// A `certificateRefs[]` entry, checked: group and kind as written
/// (defaults `""` and `Secret`), the namespace defaulted to the Gateway's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRef {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// Why a listener's certificate cannot be used: the `ResolvedRefs`
/// reason and its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    pub reason: &'static str,
    pub message: String,
}

/// The Istio `tls.mode` a listener of `protocol` stands for.
pub(super) fn server_tls_mode(protocol: Protocol) -> Option<ServerTlsMode> {
    match protocol {
        Protocol::Tls => Some(ServerTlsMode::Passthrough),
        Protocol::Https => Some(ServerTlsMode::Simple),
        _ => None,
    }
}

/// A listener's `tls`, as written: on an HTTPS listener, its
/// `certificateRefs`; on the others, `tls_route`'s checks.
pub(super) fn listener_tls(
    cx: &mut Check,
    base: &FieldPath,
    protocol: Option<&str>,
    namespace: &str,
    tls: Option<super::tls_route::ListenerTls>,
) -> Vec<CertificateRef> {
    if protocol != Some("HTTPS") {
        super::tls_route::listener_tls(cx, base, protocol, tls);
        return Vec::new();
    }
    let path = base.key("tls");
    let Some(tls) = tls else {
        cx.error(
            path,
            "an HTTPS listener needs tls: {certificateRefs: [{name: <Secret>}]} (the spec's \
             rule: tls must be specified for protocols HTTPS and TLS)",
        );
        return Vec::new();
    };
    match tls.mode.as_deref() {
        None | Some("Terminate") => {}
        Some("Passthrough") => cx.error(
            path.key("mode"),
            "tls mode must be Terminate for protocol HTTPS (the spec's rule): remove mode, or \
             use protocol: TLS with mode: Passthrough and a TLSRoute",
        ),
        Some(other) => cx.error(
            path.key("mode"),
            format!("tls.mode {other:?} is not known: use Terminate"),
        ),
    }
    if tls.frontend_validation.is_some() {
        cx.error(
            path.key("frontendValidation"),
            "frontendValidation (client certificates) is not supported yet: remove it",
        );
    }
    let written = tls.certificate_refs.unwrap_or_default();
    if written.is_empty() {
        cx.error(
            path.key("certificateRefs"),
            "certificateRefs is required in Terminate mode (the spec's rule: certificateRefs or \
             options must be specified): name the Secret of type kubernetes.io/tls that holds \
             the certificate",
        );
    }
    if written.len() > 64 {
        cx.error(
            path.key("certificateRefs"),
            "at most 64 certificateRefs (the spec's limit)",
        );
    }
    written
        .into_iter()
        .enumerate()
        .filter_map(|(k, reference)| {
            let Some(name) = reference.name.filter(|n| !n.is_empty()) else {
                cx.error(
                    path.key("certificateRefs").index(k).key("name"),
                    "name is required: the Secret's name",
                );
                return None;
            };
            Some(CertificateRef {
                group: reference.group.unwrap_or_default(),
                kind: reference.kind.unwrap_or_else(|| "Secret".to_owned()),
                namespace: reference.namespace.unwrap_or_else(|| namespace.to_owned()),
                name,
            })
        })
        .collect()
}

/// The Secret an HTTPS listener of a Gateway in `namespace` serves (its
/// first `certificateRefs` entry), or why it cannot.
pub(super) fn certificate(
    listener: &Listener,
    namespace: &str,
    secrets: &[&Secret],
    grants: &[&ReferenceGrant],
) -> Result<SecretRef, Unresolved> {
    let Some(reference) = listener.certificate_refs.first() else {
        return Err(Unresolved {
            reason: "InvalidCertificateRef",
            message: "no certificateRefs".to_owned(),
        });
    };
    let at = format!(
        "listener {} tls.certificateRefs[0] ({}/{})",
        listener.name, reference.namespace, reference.name
    );
    if !reference.group.is_empty() || reference.kind != "Secret" {
        let group = if reference.group.is_empty() {
            "core"
        } else {
            &reference.group
        };
        return Err(Unresolved {
            reason: "InvalidCertificateRef",
            message: format!(
                "{at}: {group} kind {} is not a certificate this gateway reads: refer to a Secret \
                 (group \"\", kind Secret)",
                reference.kind
            ),
        });
    }
    if reference.namespace != namespace
        && !grants.iter().any(|grant| {
            grant.source.namespace == reference.namespace
                && grant.allows("Gateway", namespace, "", "Secret", &reference.name)
        })
    {
        return Err(Unresolved {
            reason: "RefNotPermitted",
            message: format!(
                "{at}: no ReferenceGrant in namespace {} lets Gateways of namespace {namespace} \
                 refer to Secret {}: add one (from: group gateway.networking.k8s.io, kind \
                 Gateway, namespace {namespace}; to: group \"\", kind Secret)",
                reference.namespace, reference.name
            ),
        });
    }
    if !secrets
        .iter()
        .any(|s| s.source.namespace == reference.namespace && s.source.name == reference.name)
    {
        return Err(Unresolved {
            reason: "InvalidCertificateRef",
            message: format!(
                "{at}: Secret {}/{} is not defined: define it (type kubernetes.io/tls, with \
                 tls.crt and tls.key)",
                reference.namespace, reference.name
            ),
        });
    }
    Ok(SecretRef {
        namespace: reference.namespace.clone(),
        name: reference.name.clone(),
    })
}
