//! HTTPS servers of Gateways (`tls.mode: SIMPLE`, a `credentialName`): the
//! certificates the L7 proxy terminates TLS with on a gateway listener,
//! before it serves the requests as on a plain HTTP server.
//!
//! Istio's gateway reads `credentialName` as a Secret of the Gateway's
//! namespace; a Gateway API HTTPS listener's `certificateRefs[0]` (checked
//! and granted in `gateway_api::https`) may be of another namespace.

use super::{Sink, catalog::Catalog};
use crate::{
    common::Protocol,
    error::fp,
    gateway_api::Secret,
    model::{ListenerTls, ServerCertificate},
    resource::{Gateway, Server, ServerTlsMode},
};

/// Whether the proxy terminates TLS for `server`: HTTPS in `SIMPLE` mode
/// with a `credentialName`. Other HTTPS servers (certificate files,
/// `MUTUAL`) are not served.
pub(super) fn terminates(server: &Server) -> bool {
    server.port.protocol == Protocol::Https
        && server.tls_mode == Some(ServerTlsMode::Simple)
        && server.credential.is_some()
}

impl Catalog<'_> {
    /// The certificates of `gateway`'s HTTPS servers on `port`, in server
    /// order; `None` when the port's servers are plain HTTP. A
    /// `credentialName` that names no Secret is an error at the server.
    pub(super) fn listener_tls(
        &self,
        gateway: &Gateway,
        port: u16,
        sink: &mut Sink,
    ) -> Option<ListenerTls> {
        let mut certificates = Vec::new();
        for (i, server) in gateway.servers.iter().enumerate() {
            let Some(credential) = server.credential.as_ref().filter(|_| terminates(server)) else {
                continue;
            };
            if server.port.number != port {
                continue;
            }
            let secret = format!("{}/{}", credential.namespace, credential.name);
            let Some(found) = self.secret(&credential.namespace, &credential.name) else {
                sink.errors.push(gateway.source.error(
                    fp!("spec.servers[{i}].tls.credentialName"),
                    format!(
                        "Secret {secret} is not defined: an HTTPS server in SIMPLE mode serves \
                         the certificate of a Secret of type kubernetes.io/tls in the \
                         Gateway's namespace (tls.crt, tls.key); define it, or fix the name"
                    ),
                ));
                continue;
            };
            let hosts = server
                .hosts
                .iter()
                .map(|host| {
                    host.split_once('/')
                        .map_or(host.as_str(), |(_, name)| name)
                        .to_ascii_lowercase()
                })
                .collect();
            certificates.push(ServerCertificate {
                hosts,
                secret,
                certificate: found.certificate.clone(),
            });
        }
        (!certificates.is_empty()).then_some(ListenerTls {
            certificates,
            misdirected: gateway.source.kind == crate::GATEWAY_KIND,
        })
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<&Secret> {
        self.secrets
            .iter()
            .find(|s| s.source.namespace == namespace && s.source.name == name)
            .copied()
    }
}
