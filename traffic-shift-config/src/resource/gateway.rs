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

use super::{server_tls::server_tls, workload_entry::unix_address};

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
    /// The address the server accepts on; `None`: any local address (or
    /// the unix socket of `unix`).
    pub bind: Option<IpAddr>,
    /// `bind: unix://<path>`: the unix socket the server accepts on, the
    /// part after `unix://` (an absolute path, or `@name` in the abstract
    /// namespace); its port number is 0, as Istio requires.
    pub unix: Option<String>,
    pub default_endpoint: Option<String>,
    pub name: Option<String>,
    /// `tls.mode`, when `tls` is set.
    pub tls_mode: Option<ServerTlsMode>,
    /// `tls.credentialName`: the Secret (`kubernetes.io/tls`) of the
    /// Gateway's namespace an HTTPS server in `SIMPLE` mode serves; a
    /// Gateway API listener's `certificateRefs[0]`, of any namespace.
    pub credential: Option<SecretRef>,
}

/// A Secret, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
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
        // Served by the agent in user space (the kernel paths accept on IPs).
        let unix = server
            .bind
            .as_deref()
            .and_then(|b| b.strip_prefix("unix://"))
            .map(str::to_owned);
        if let Some(path) = &unix {
            cx.ok(fp!("spec.servers[{i}].bind"), unix_address(path));
        }
        let bind = server
            .bind
            .filter(|bind| !bind.is_empty() && unix.is_none())
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
        let number = match (&unix, port.number.unwrap_or(0)) {
            (Some(_), 0) => Some(0),
            (Some(_), _) => {
                cx.error(
                    fp!("spec.servers[{i}].port.number"),
                    "port number must be 0 for unix domain socket",
                );
                None
            }
            (None, number) => cx.port(fp!("spec.servers[{i}].port.number"), number),
        };
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
        let credential = server
            .tls
            .as_ref()
            .and_then(|tls| tls.credential_name.clone())
            .filter(|name| !name.is_empty())
            .map(|name| SecretRef {
                namespace: source.namespace.clone(),
                name,
            });
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
                unix,
                default_endpoint: server.default_endpoint,
                name: server.name,
                tls_mode,
                credential,
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
#[error("{}", bind_message(bind))]
pub struct BindError {
    pub bind: String,
}

/// Istio's words for a bad IP.
fn bind_message(bind: &str) -> String {
    format!(
        "{bind} is not a valid IP: the kernel path accepts on an IPv4 or IPv6 address; remove \
         bind to accept on every local address"
    )
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
