//! Real TLS for the tests: certificates made by `openssl` at test time (a
//! CA and the leaves it signs), rustls acceptors and connectors on them,
//! and a tokio runtime whose threads are in a test's network namespace.

use std::{
    io::{BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::Command,
    sync::Arc,
};

use tokio::runtime::Runtime;
use tokio_rustls::{
    TlsAcceptor, TlsConnector,
    rustls::{
        self, ClientConnection, RootCertStore, StreamOwned,
        pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
    },
};

use crate::{
    Netns,
    http_client::{Response, read_response},
    unique_name,
};

/// The test's certificates: a CA, and a leaf for `*.example.com` (and
/// `tls.example.com`) it signed; [`Certs::leaf`] makes more.
pub struct Certs {
    dir: PathBuf,
}

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

impl Certs {
    pub fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{}-certs", unique_name(test)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("certs dir");
        let certs = Self { dir };
        certs.openssl(
            &[
                &["req", "-x509"][..],
                &EC,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=traffic-shift test CA",
                ],
            ]
            .concat(),
        );
        certs.leaf(
            "leaf",
            "tls.example.com",
            &["*.example.com", "tls.example.com"],
        );
        certs
    }

    /// Makes `<name>.pem` and `<name>.key`: a leaf with common name `cn`
    /// and `sans` as its DNS names, signed by the CA.
    pub fn leaf(&self, name: &str, cn: &str, sans: &[&str]) {
        let ext = format!("{name}.cnf");
        let names: Vec<String> = sans.iter().map(|s| format!("DNS:{s}")).collect();
        std::fs::write(
            self.dir.join(&ext),
            format!("subjectAltName={}\n", names.join(",")),
        )
        .expect("write the extensions");
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subject = format!("/CN={cn}");
        self.openssl(
            &[
                &["req"][..],
                &EC,
                &["-keyout", &key, "-out", &csr, "-subj", &subject],
            ]
            .concat(),
        );
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "1",
            "-extfile",
            &ext,
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The text of a file of the certificates (`leaf.pem`, `leaf.key`).
    pub fn text(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The DER of the certificate in `<name>.pem`.
    pub fn der(&self, name: &str) -> Vec<u8> {
        CertificateDer::from_pem_file(self.file(&format!("{name}.pem")))
            .unwrap_or_else(|e| panic!("{name}.pem: {e}"))
            .to_vec()
    }

    /// A server with the leaf `leaf.pem`.
    pub fn acceptor(&self) -> TlsAcceptor {
        let chain = CertificateDer::pem_file_iter(self.file("leaf.pem"))
            .expect("leaf.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse leaf.pem");
        let key = PrivateKeyDer::from_pem_file(self.file("leaf.key")).expect("leaf.key");
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("the leaf and its key");
        TlsAcceptor::from(Arc::new(config))
    }

    /// A client that trusts the CA alone.
    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.client_config())
    }

    /// The configuration of a client that trusts the CA alone.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = RootCertStore::empty();
        let ca = CertificateDer::from_pem_file(self.file("ca.pem")).expect("ca.pem");
        roots.add(ca).expect("the CA");
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[expect(
    deprecated,
    reason = "ring without post-quantum key exchange is enough here"
)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A tokio runtime whose threads joined `netns`: the sockets its tasks
/// make are in that namespace.
pub fn runtime_in(netns: &Netns) -> Runtime {
    use std::os::fd::AsRawFd as _;
    let file = Arc::new(
        std::fs::File::open(format!("/var/run/netns/{}", netns.name)).expect("open the netns"),
    );
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            // SAFETY: setns on this new thread only, with a netns fd the
            // closure keeps open.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        })
        .build()
        .expect("a runtime")
}

/// Runs `future` on a worker thread of `rt` (in its namespace).
pub fn run<T: Send + 'static>(rt: &Runtime, future: impl Future<Output = T> + Send + 'static) -> T {
    rt.block_on(rt.spawn(future)).expect("the task")
}

/// A blocking HTTPS/1.1 client connection (keep-alive): the handshake
/// done with SNI, then requests read with [`read_response`].
pub struct HttpsConn {
    reader: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl HttpsConn {
    /// Connects to `addr` and completes the handshake for `sni`; the
    /// server's certificate must chain to `config`'s roots and name `sni`.
    pub fn connect(
        config: &Arc<rustls::ClientConfig>,
        addr: SocketAddr,
        sni: &str,
    ) -> std::io::Result<Self> {
        let name = ServerName::try_from(sni.to_owned()).map_err(std::io::Error::other)?;
        let mut tls =
            ClientConnection::new(Arc::clone(config), name).map_err(std::io::Error::other)?;
        let mut tcp = TcpStream::connect(addr)?;
        while tls.is_handshaking() {
            tls.complete_io(&mut tcp)?;
        }
        Ok(Self {
            reader: BufReader::new(StreamOwned::new(tls, tcp)),
        })
    }

    /// The DER of the certificate the server presented.
    pub fn peer_certificate(&self) -> Vec<u8> {
        self.reader
            .get_ref()
            .conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|certificate| certificate.to_vec())
            .unwrap_or_default()
    }

    /// `GET path` with `Host: host`, and its response.
    pub fn get(&mut self, host: &str, path: &str) -> std::io::Result<Response> {
        let stream = self.reader.get_mut();
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())?;
        stream.flush()?;
        read_response(&mut self.reader, false)
    }
}

/// `GET` of each `(authority, path)` in turn on one HTTP/2 connection
/// over TLS to `addr` (ALPN `h2`, handshake for `sni`), as a browser
/// reuses one connection for every name the certificate covers: each
/// answer's status and body. Runs on `rt` (a runtime in the test's
/// namespace).
pub fn h2_gets(
    rt: &Runtime,
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    sni: &str,
    requests: &[(&str, &str)],
) -> std::io::Result<Vec<(u16, Vec<u8>)>> {
    use http_body_util::{BodyExt as _, Empty};
    use hyper::body::Bytes;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let mut config = (**config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(sni.to_owned()).map_err(std::io::Error::other)?;
    let requests: Vec<(String, String)> = requests
        .iter()
        .map(|(authority, path)| ((*authority).to_owned(), (*path).to_owned()))
        .collect();
    run(rt, async move {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let tls = connector.connect(name, tcp).await?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(std::io::Error::other(
                "the server did not choose h2 by ALPN",
            ));
        }
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        let mut answers = Vec::new();
        for (authority, path) in requests {
            let request = hyper::Request::get(format!("https://{authority}{path}"))
                .body(Empty::<Bytes>::new())
                .map_err(std::io::Error::other)?;
            sender.ready().await.map_err(std::io::Error::other)?;
            let response = sender
                .send_request(request)
                .await
                .map_err(std::io::Error::other)?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(std::io::Error::other)?
                .to_bytes()
                .to_vec();
            answers.push((status, body));
        }
        Ok(answers)
    })
}
