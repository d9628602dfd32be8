//! A Gateway server's `tls` (Istio's `validateTLSOptions`, and the rules
//! of `validateServer` on TLS against the port's protocol).

use crate::{
    check::Check,
    common::Protocol,
    dto::{self, ServerTlsMode},
    error::{FieldPath, fp},
};

/// The cipher suites Istio knows for `cipherSuites` (its
/// `ValidCipherSuites`).
const CIPHER_SUITES: [&str; 15] = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

/// Istio's `IsValidCipherSuite`: a known name, `ALL`, or an expression
/// (starting with an operator such as `-` or `+`, not parsed).
fn is_valid_cipher_suite(suite: &str) -> bool {
    match suite.chars().next() {
        None => true,
        Some(first) if !first.is_alphanumeric() => true,
        Some(_) => suite == "ALL" || CIPHER_SUITES.contains(&suite),
    }
}

fn set(value: Option<&String>) -> bool {
    value.is_some_and(|value| !value.is_empty())
}

/// Server `i`'s `tls` against its protocol, and its options; its mode.
pub(super) fn server_tls(
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
    if protocol.is_some() && !is_tls {
        let passthrough = matches!(
            mode,
            ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
        );
        let certificates = set(tls.server_certificate.as_ref())
            || set(tls.private_key.as_ref())
            || set(tls.ca_certificates.as_ref());
        if !is_http {
            cx.error(
                path.clone(),
                "server cannot have TLS settings for non HTTPS/TLS ports",
            );
        } else if !passthrough || certificates {
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
    tls_options(cx, &path, mode, &tls);
    Some(mode)
}

/// Which of a server's certificate sources are written.
#[expect(
    clippy::struct_excessive_bools,
    reason = "one flag per field of the server's tls that may be written"
)]
struct Given {
    /// `tlsCertificates` has entries.
    certificates: bool,
    /// `credentialNames` has entries.
    credential_names: bool,
    server_certificate: bool,
    private_key: bool,
    credential_name: bool,
    ca_certificates: bool,
}

impl Given {
    fn of(tls: &dto::ServerTls) -> Self {
        Self {
            certificates: tls.tls_certificates.as_ref().is_some_and(|c| !c.is_empty()),
            credential_names: tls
                .credential_names
                .as_ref()
                .is_some_and(|names| !names.is_empty()),
            server_certificate: set(tls.server_certificate.as_ref()),
            private_key: set(tls.private_key.as_ref()),
            credential_name: set(tls.credential_name.as_ref()),
            ca_certificates: set(tls.ca_certificates.as_ref()),
        }
    }
}

/// Istio's `validateTLSOptions`.
fn tls_options(cx: &mut Check, path: &FieldPath, mode: ServerTlsMode, tls: &dto::ServerTls) {
    cipher_suites(cx, path, tls);
    let Given {
        certificates,
        credential_names,
        server_certificate,
        private_key,
        credential_name,
        ca_certificates,
    } = Given::of(tls);

    if mode == ServerTlsMode::IstioMutual {
        istio_mutual(cx, path, tls);
        return;
    }
    if matches!(
        mode,
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
    ) && (set(tls.ca_crl.as_ref())
        || server_certificate
        || private_key
        || ca_certificates
        || certificates
        || credential_name
        || credential_names)
    {
        let name = if mode == ServerTlsMode::Passthrough {
            "PASSTHROUGH"
        } else {
            "AUTO_PASSTHROUGH"
        };
        cx.warn(
            path.clone(),
            format!("{name} mode does not use certificates, they will be ignored"),
        );
    }

    let sources = [
        server_certificate && private_key,
        credential_name,
        credential_names,
        certificates,
    ];
    if sources.iter().filter(|source| **source).count() > 1 {
        cx.error(
            path.clone(),
            "only one of credential_name, credential_names, server_certificate/private_key, \
             tls_certificates should be specified",
        );
    }
    let terminates = matches!(
        mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    );
    // Credentials are fetched by name: no file needed.
    if terminates && (credential_name || credential_names) {
        return;
    }
    if terminates {
        let prefix = if mode == ServerTlsMode::Simple {
            "SIMPLE TLS"
        } else {
            if !ca_certificates {
                cx.error(path.clone(), "MUTUAL TLS requires a client CA bundle");
            }
            "MUTUAL TLS"
        };
        server_certificates(cx, path, prefix, tls);
    }
    if set(tls.ca_crl.as_ref()) {
        if credential_name {
            cx.error(
                path.key("caCrl"),
                "CRL is not supported with credentialName. CRL has to be specified in the \
                 credential",
            );
        }
        if mode == ServerTlsMode::Simple {
            cx.error(path.key("caCrl"), "CRL is not supported with SIMPLE TLS");
        }
    }
}

/// ISTIO_MUTUAL uses the mesh's certificates: none may be given.
fn istio_mutual(cx: &mut Check, path: &FieldPath, tls: &dto::ServerTls) {
    let Given {
        certificates,
        credential_names,
        server_certificate,
        private_key,
        credential_name,
        ca_certificates,
    } = Given::of(tls);
    for (field, what, written) in [
        (
            "serverCertificate",
            "server certificate",
            server_certificate,
        ),
        ("privateKey", "private key", private_key),
        ("caCertificates", "CA bundle", ca_certificates),
        ("tlsCertificates", "tlsCertificates", certificates),
        ("credentialName", "credentialName", credential_name),
        ("credentialNames", "credentialNames", credential_names),
    ] {
        if written {
            cx.error(
                path.key(field),
                format!(
                    "ISTIO_MUTUAL TLS cannot have associated {what}: the mesh's certificates \
                     are used; remove {field}"
                ),
            );
        }
    }
}

/// Each server certificate of `tls` (`tlsCertificates`, else the
/// `serverCertificate` / `privateKey` pair) has its certificate and key.
fn server_certificates(cx: &mut Check, path: &FieldPath, prefix: &str, tls: &dto::ServerTls) {
    let certificates = tls.tls_certificates.as_deref().unwrap_or_default();
    let server_certificate = set(tls.server_certificate.as_ref());
    let private_key = set(tls.private_key.as_ref());
    if certificates.len() > 2 {
        cx.warn(
            path.key("tlsCertificates"),
            format!("{prefix} can support up to 2 server certificates"),
        );
    }
    let pairs: Vec<(FieldPath, bool, bool)> = if certificates.is_empty() {
        vec![(path.clone(), server_certificate, private_key)]
    } else {
        certificates
            .iter()
            .enumerate()
            .map(|(k, certificate)| {
                (
                    path.key("tlsCertificates").index(k),
                    set(certificate.server_certificate.as_ref()),
                    set(certificate.private_key.as_ref()),
                )
            })
            .collect()
    };
    for (at, certificate, key) in pairs {
        if !certificate {
            cx.error(
                at.clone(),
                format!("{prefix} requires a server certificate"),
            );
        }
        if !key {
            cx.error(at, format!("{prefix} requires a private key"));
        }
    }
}

/// Istio's warnings on `cipherSuites` and `minProtocolVersion`.
fn cipher_suites(cx: &mut Check, path: &FieldPath, tls: &dto::ServerTls) {
    let suites = tls.cipher_suites.as_deref().unwrap_or_default();
    if matches!(
        tls.min_protocol_version.as_deref(),
        Some("TLSV1_0" | "TLSV1_1")
    ) && suites.is_empty()
    {
        cx.warn(
            path.key("minProtocolVersion"),
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no \
             longer include compatible ciphers.",
        );
    }
    let mut invalid = std::collections::BTreeSet::new();
    let mut valid = std::collections::BTreeSet::new();
    let mut duplicate = std::collections::BTreeSet::new();
    for suite in suites {
        if !is_valid_cipher_suite(suite) {
            invalid.insert(suite.as_str());
        } else if !valid.insert(suite.as_str()) {
            duplicate.insert(suite.as_str());
        }
    }
    // Go's `%v` of a list: `[a b]`.
    let list = |names: &std::collections::BTreeSet<&str>| {
        format!("[{}]", names.iter().copied().collect::<Vec<_>>().join(" "))
    };
    if !invalid.is_empty() {
        cx.warn(
            path.key("cipherSuites"),
            format!("ignoring invalid cipher suites: {}", list(&invalid)),
        );
    }
    if !duplicate.is_empty() {
        cx.warn(
            path.key("cipherSuites"),
            format!("ignoring duplicate cipher suites: {}", list(&duplicate)),
        );
    }
}
