//! TLS termination on gateway listeners with HTTPS servers: the
//! certificate picked by the ClientHello's SNI among the servers' hosts
//! (as the passthrough path picks a route: [`crate::sni::route_for`]), the
//! handshake, then the connection served as a plain HTTP one (HTTP/2 when
//! the client's ALPN chose `h2`).

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use rustls::{
    ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use traffic_shift_config::model::{HttpListener, ListenerTls};

use crate::{Proxy, server::Target};

/// The TLS acceptors of the gateway listeners that terminate TLS, by
/// listener key.
#[derive(Default)]
pub(crate) struct Acceptors(HashMap<String, TlsAcceptor>);

impl std::fmt::Debug for Acceptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// The certificates of one listener, by the names they serve.
#[derive(Debug)]
struct BySni {
    certificates: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for BySni {
    /// The certificate of the server whose host is the SNI, else the
    /// longest `*.suffix` it ends with, else `*`; without SNI (or with a
    /// name no server has), the first server's.
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        crate::sni::route_for(&self.certificates, sni.as_deref())
            .or_else(|| self.certificates.first().map(|(_, key)| key))
            .cloned()
    }
}

/// The acceptors of `listeners`' HTTPS listeners. A certificate that does
/// not load (the config crate checked each Secret, so this is not
/// expected) is left out, with a log line; the listener then serves the
/// others.
pub(crate) fn acceptors(listeners: &[HttpListener]) -> Acceptors {
    Acceptors(
        listeners
            .iter()
            .filter_map(|listener| {
                let tls = listener.tls.as_ref()?;
                Some((listener.key.clone(), acceptor(&listener.key, tls)?))
            })
            .collect(),
    )
}

fn acceptor(key: &str, tls: &ListenerTls) -> Option<TlsAcceptor> {
    let certificates: Vec<(Vec<String>, Arc<CertifiedKey>)> = tls
        .certificates
        .iter()
        .filter_map(|server| match server.certificate.certified_key() {
            Ok(certified) => Some((server.hosts.clone(), Arc::new(certified))),
            Err(error) => {
                tracing::error!(listener = key, secret = server.secret, %error, "L7 proxy: certificate not served");
                None
            }
        })
        .collect();
    if certificates.is_empty() {
        return None;
    }
    #[expect(
        deprecated,
        reason = "ring is the provider already built (etcd-client uses it); the post-quantum \
                  providers need aws-lc, a C toolchain dependency the project does not have"
    )]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| tracing::error!(listener = key, %error, "L7 proxy: no TLS versions"))
        .ok()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni { certificates }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Some(TlsAcceptor::from(Arc::new(config)))
}

impl Proxy {
    /// The acceptor of the listener of `key`, if it terminates TLS.
    pub(crate) fn acceptor(&self, key: &str) -> Option<TlsAcceptor> {
        self.acceptors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .get(key)
            .cloned()
    }

    /// One client connection of an HTTPS listener: the handshake (within
    /// the request header timeout), then HTTP/2 if ALPN chose `h2`, else
    /// HTTP/1.1.
    pub(crate) async fn tls_connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        target: Arc<Target>,
        acceptor: TlsAcceptor,
    ) {
        let Some(_permit) = self.permit(peer) else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let stream = match tokio::time::timeout(
            self.options.request_header_timeout,
            acceptor.accept(stream),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                tracing::debug!(%peer, %err, "L7 proxy: TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "L7 proxy: TLS handshake not done in time, connection closed");
                return;
            }
        };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let sni = stream
            .get_ref()
            .1
            .server_name()
            .map(|name| Arc::from(name.to_ascii_lowercase()));
        self.serve_http(stream, h2, peer, target, sni).await;
    }
}
