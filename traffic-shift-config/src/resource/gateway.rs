//! `Gateway`: its servers, their ports, hosts and TLS settings (Istio's
//! `ValidateGateway`).

use std::{collections::BTreeSet, net::IpAddr};

pub use crate::dto::ServerTlsMode;
use crate::{
    check::{Check, Checked},
    common::{Labels, Protocol},
    dto,
    error::fp,
    names::{
        DomainError, is_dns1123_label, is_dns1123_label_any_case, is_partial_wildcard,
        validate_domain,
    },
    source::Source,
};

#[derive(Clone, Debug)]
pub struct Gateway {
    pub source: Source,
    pub selector: Labels,
    pub servers: Vec<Server>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub port: GatewayPort,
    /// `[namespace/]dnsName`, as written (`namespace` is `*`, `.` or a
    /// namespace name).
    pub hosts: Vec<String>,
    /// The address the server accepts on; `None`: any local address.
    pub bind: Option<IpAddr>,
    pub default_endpoint: Option<String>,
    pub name: Option<String>,
    /// `tls.mode`, when `tls` is set.
    pub tls_mode: Option<ServerTlsMode>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayPort {
    pub number: u16,
    pub name: String,
    pub protocol: Protocol,
}

/// Istio's `ValidateGateway`.
#[expect(
    clippy::too_many_lines,
    reason = "one server's checks, in Istio's order, with what each check needs"
)]
pub(super) fn validate(source: Source, spec: dto::GatewaySpec) -> Checked<Gateway> {
    let mut cx = Check::new(&source);
    if !is_dns1123_label(&source.name) {
        cx.error(
            fp!("metadata.name"),
            format!(
                "invalid gateway name: {:?}: a Gateway name has no dots",
                source.name
            ),
        );
    }
    let selector = spec.selector.unwrap_or_default();
    cx.labels(&fp!("spec.selector"), &selector);
    let servers = spec.servers.unwrap_or_default();
    if servers.is_empty() {
        cx.error(fp!("spec.servers"), "gateway must have at least one server");
    }
    let mut port_names = BTreeSet::new();
    let mut valid = Vec::with_capacity(servers.len());
    for (i, server) in servers.into_iter().enumerate() {
        let errors_before = cx.errors.len();
        let hosts = server.hosts.unwrap_or_default();
        if hosts.is_empty() {
            cx.error(
                fp!("spec.servers[{i}].hosts"),
                "server config must contain at least one host",
            );
        }
        for (h, host) in hosts.iter().enumerate() {
            if let Err(message) = validate_server_host(host) {
                cx.error(fp!("spec.servers[{i}].hosts[{h}]"), message);
            }
        }
        let bind = server
            .bind
            .filter(|bind| !bind.is_empty())
            .and_then(|bind| {
                cx.ok(
                    fp!("spec.servers[{i}].bind"),
                    bind.parse::<IpAddr>()
                        .map_err(|_| BindError { bind: bind.clone() }),
                )
            });
        let Some(port) = server.port else {
            cx.error(fp!("spec.servers[{i}].port"), "port is required");
            continue;
        };
        let protocol_name = port.protocol.unwrap_or_default();
        let protocol =
            Protocol::parse(&protocol_name).filter(|protocol| *protocol != Protocol::Unspecified);
        if protocol.is_none() {
            cx.error(
                fp!("spec.servers[{i}].port.protocol"),
                format!(
                    "invalid protocol {protocol_name:?}, supported protocols are HTTP, HTTPS, \
                     HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP, TLS"
                ),
            );
        }
        let number = cx.port(
            fp!("spec.servers[{i}].port.number"),
            port.number.unwrap_or(0),
        );
        if port.target_port.is_some_and(|target| target > 0) {
            cx.error(
                fp!("spec.servers[{i}].port.targetPort"),
                "targetPort has no impact on Gateways: remove it",
            );
        }
        let name = port.name.unwrap_or_default();
        if name.is_empty() {
            cx.error(fp!("spec.servers[{i}].port.name"), "port name must be set");
        } else if !port_names.insert(name.clone()) {
            cx.error(
                fp!("spec.servers[{i}].port.name"),
                format!("port names in servers must be unique: duplicate name {name}"),
            );
        }
        let tls_mode = server_tls(&mut cx, i, protocol, server.tls);
        if let (Some(number), Some(protocol)) = (number, protocol)
            && cx.errors.len() == errors_before
        {
            valid.push(Server {
                port: GatewayPort {
                    number,
                    name,
                    protocol,
                },
                hosts,
                bind,
                default_endpoint: server.default_endpoint,
                name: server.name,
                tls_mode,
            });
        }
    }
    let warnings = cx.finish()?;
    Ok((
        Gateway {
            source,
            selector,
            servers: valid,
        },
        warnings,
    ))
}

/// A server's `tls` against its protocol (Istio's `validateServer` and the
/// main rules of `validateTLSOptions`); its mode.
fn server_tls(
    cx: &mut Check,
    i: usize,
    protocol: Option<Protocol>,
    tls: Option<dto::ServerTls>,
) -> Option<ServerTlsMode> {
    let path = fp!("spec.servers[{i}].tls");
    let is_tls = matches!(protocol, Some(Protocol::Https | Protocol::Tls));
    let is_http = protocol.is_some_and(Protocol::is_http);
    let Some(tls) = tls else {
        if is_tls {
            cx.error(
                path,
                "server must have TLS settings for HTTPS/TLS protocols: add tls: {mode: ...}",
            );
        }
        return None;
    };
    let mode = tls.mode.unwrap_or_default();
    let set = |value: &Option<String>| value.as_deref().is_some_and(|value| !value.is_empty());
    let has_certificates = set(&tls.server_certificate)
        || set(&tls.private_key)
        || set(&tls.ca_certificates)
        || set(&tls.credential_name);
    if protocol.is_some() && !is_tls {
        let passthrough = matches!(
            mode,
            ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
        );
        if !is_http {
            cx.error(
                path.clone(),
                "server cannot have TLS settings for non HTTPS/TLS ports",
            );
        } else if !passthrough || has_certificates {
            cx.error(
                path.clone(),
                "server cannot have TLS settings for plain text HTTP ports",
            );
        }
    }
    if tls.https_redirect == Some(true) && !is_http {
        cx.warn(
            path.key("httpsRedirect"),
            "tls.httpsRedirect should only be used with http servers",
        );
    }
    let credential = set(&tls.credential_name)
        || tls
            .credential_names
            .as_ref()
            .is_some_and(|names| !names.is_empty());
    let certificates_listed = tls
        .tls_certificates
        .as_ref()
        .is_some_and(|certificates| !certificates.is_empty());
    match mode {
        ServerTlsMode::IstioMutual => {
            for (field, value) in [
                ("serverCertificate", &tls.server_certificate),
                ("privateKey", &tls.private_key),
                ("caCertificates", &tls.ca_certificates),
                ("credentialName", &tls.credential_name),
            ] {
                if set(value) {
                    cx.error(
                        path.key(field),
                        format!("ISTIO_MUTUAL TLS cannot have associated {field}"),
                    );
                }
            }
        }
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
            if !credential && !certificates_listed =>
        {
            let prefix = if mode == ServerTlsMode::Simple {
                "SIMPLE TLS"
            } else {
                "MUTUAL TLS"
            };
            if !set(&tls.server_certificate) {
                cx.error(
                    path.clone(),
                    format!("{prefix} requires a server certificate"),
                );
            }
            if !set(&tls.private_key) {
                cx.error(path.clone(), format!("{prefix} requires a private key"));
            }
            if mode != ServerTlsMode::Simple && !set(&tls.ca_certificates) {
                cx.error(path, format!("{prefix} requires a client CA bundle"));
            }
        }
        _ => {}
    }
    Some(mode)
}

/// A Gateway server host Istio refuses (`validate_server_host`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServerHostError {
    #[error("config namespace and dnsName in host entry cannot be empty")]
    EmptyPart,
    #[error(
        "invalid namespace value {namespace:?} in gateway: use *, . or a namespace name before \
         the /"
    )]
    Namespace { namespace: String },
    #[error(
        "short names (non FQDN) are not allowed: {name:?}; write the full host name, as \
         {name}.<namespace>.svc.cluster.local"
    )]
    ShortName { name: String },
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("partial wildcard {name:?} not allowed")]
    PartialWildcard { name: String },
}

/// A `bind` that is no IP address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "bind {bind:?} is not an IP address: the kernel path accepts on an IPv4 or IPv6 address \
     (unix domain sockets are not supported); remove bind to accept on every local address"
)]
pub struct BindError {
    pub bind: String,
}

/// A Gateway server host: `[namespace/]dnsName` (Istio's
/// `ValidateNamespaceSlashWildcardHostname` for gateways).
fn validate_server_host(host: &str) -> Result<(), ServerHostError> {
    let name = match host.split_once('/') {
        Some((namespace, name)) => {
            if namespace.is_empty() || name.is_empty() {
                return Err(ServerHostError::EmptyPart);
            }
            if !(namespace == "*" || namespace == "." || is_dns1123_label_any_case(namespace)) {
                return Err(ServerHostError::Namespace {
                    namespace: namespace.to_owned(),
                });
            }
            name
        }
        None => host,
    };
    if name != "*" && !name.contains('.') {
        return Err(ServerHostError::ShortName {
            name: name.to_owned(),
        });
    }
    if let Err(error) = validate_domain(name)
        && name.parse::<IpAddr>().is_err()
    {
        return Err(error.into());
    }
    if is_partial_wildcard(name) {
        return Err(ServerHostError::PartialWildcard {
            name: name.to_owned(),
        });
    }
    Ok(())
}
