//! Core `v1` `Secret` of `type: kubernetes.io/tls`: the certificate chain
//! and private key a gateway serves (an Istio server's `credentialName`, a
//! Gateway API HTTPS listener's `certificateRefs`).
//!
//! A Secret is checked on its own when read: `tls.crt` must hold one PEM
//! certificate or more (the server's first, then its chain) that parse,
//! and `tls.key` one PEM private key (PKCS#8, PKCS#1 or SEC1) that the
//! first certificate's public key matches. Values come from `data`
//! (base64, as Kubernetes stores them) or `stringData` (plain text, which
//! wins over `data`, as the API server merges them).
//!
//! The key is never shown: no message quotes a value, [`PrivateKeyPem`]'s
//! `Debug` is redacted, and [`redact`] replaces every value of a Secret
//! document that `get` prints.

use std::{collections::BTreeMap, sync::Arc};

use base64::Engine as _;
use rustls::{
    InconsistentKeys,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    sign::CertifiedKey,
};
use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::{
    check::{Check, Checked},
    error::{FieldPath, fp},
    lines::LineIndex,
    resource::document::{Place, serde_message, source_of},
    source::Source,
};

/// The only `type` of Secret read: a TLS certificate and its key.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// What `get` shows in place of every value of a Secret's `data` and
/// `stringData`.
pub const REDACTED: &str = "<redacted>";

/// A `v1` `Secret` document: no `spec`, its fields are at the top.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SecretDocument {
    #[expect(dead_code, reason = "checked by the envelope")]
    api_version: String,
    #[expect(dead_code, reason = "checked by the envelope")]
    kind: String,
    metadata: crate::dto::Metadata,
    #[serde(rename = "type")]
    type_: Option<String>,
    data: Option<BTreeMap<String, String>>,
    string_data: Option<BTreeMap<String, String>>,
    #[expect(
        dead_code,
        reason = "accepted and ignored: a Secret here is read-only anyway"
    )]
    immutable: Option<bool>,
}

/// A checked `kubernetes.io/tls` Secret.
#[derive(Clone, Debug)]
pub struct Secret {
    pub source: Source,
    pub certificate: TlsCertificate,
}

/// A certificate chain and its private key, both PEM, checked to parse and
/// to match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsCertificate {
    /// `tls.crt`: the server's certificate first, then its chain.
    pub chain_pem: Arc<str>,
    pub key_pem: PrivateKeyPem,
}

/// A PEM private key; its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyPem(pub Arc<str>);

impl std::fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Why a certificate and key cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate,
    #[error("holds a PEM block that does not parse")]
    BadPem,
    #[error("holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey,
    #[error("the private key is not one rustls can sign with: {0}")]
    Key(#[source] rustls::Error),
    #[error("the private key does not match the first certificate's public key")]
    Mismatch,
    #[error("the first certificate does not parse: {0}")]
    Certificate(#[source] rustls::Error),
}

impl TlsCertificate {
    /// The chain and key as rustls serves them (the ring provider), after
    /// checking that they parse and match.
    ///
    /// # Errors
    /// What is wrong with the chain (`NoCertificate`, `BadPem`,
    /// `Certificate`) or the key (`NoKey`, `Key`, `Mismatch`).
    pub fn certified_key(&self) -> Result<CertifiedKey, CertificateError> {
        certified_key(&self.chain_pem, &self.key_pem.0)
    }
}

fn certified_key(chain: &str, key: &str) -> Result<CertifiedKey, CertificateError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| CertificateError::BadPem)?;
    if chain.is_empty() {
        return Err(CertificateError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| CertificateError::NoKey)?;
    let key =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(CertificateError::Key)?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        // A key type whose public key rustls cannot tell: served as is.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(CertificateError::Mismatch),
        Err(error) => Err(CertificateError::Certificate(error)),
    }
}

/// One `Secret` document, checked.
pub(super) fn secret(place: &Place, value: Value, lines: &Arc<LineIndex>) -> Checked<Secret> {
    let document: SecretDocument = serde_path_to_error::deserialize(value).map_err(|error| {
        let path = FieldPath::from(error.path());
        vec![place.error(path, serde_message(&error.into_inner()))]
    })?;
    let source = source_of(place, "Secret", document.metadata, lines)?;
    let mut cx = Check::new(&source);
    match document.type_.as_deref() {
        Some(TLS_SECRET_TYPE) => {}
        Some(other) => cx.error(
            fp!("type"),
            format!(
                "Secret type {other:?} is not read: only type {TLS_SECRET_TYPE} (a gateway's \
                 certificate and key, in tls.crt and tls.key) is; keep other Secrets out of the \
                 rules"
            ),
        ),
        None => cx.error(
            fp!("type"),
            format!(
                "type is required: a Secret here is a gateway's certificate and key; write type: \
                 {TLS_SECRET_TYPE}"
            ),
        ),
    }
    let chain = value_of(
        &mut cx,
        document.data.as_ref(),
        document.string_data.as_ref(),
        "tls.crt",
    );
    let key = value_of(
        &mut cx,
        document.data.as_ref(),
        document.string_data.as_ref(),
        "tls.key",
    );
    let certificate = match (chain, key) {
        (Some((chain, chain_at)), Some((key, key_at))) => {
            match certified_key(&chain, &key) {
                Ok(_) => {}
                Err(
                    error @ (CertificateError::NoCertificate
                    | CertificateError::BadPem
                    | CertificateError::Certificate(_)),
                ) => cx.error(
                    chain_at,
                    format!("tls.crt {error}: give the server's certificate (PEM), then its chain"),
                ),
                Err(error) => cx.error(
                    key_at,
                    format!(
                        "tls.key: {error}: give the PEM private key of the first certificate of \
                         tls.crt"
                    ),
                ),
            }
            Some(TlsCertificate {
                chain_pem: chain.into(),
                key_pem: PrivateKeyPem(key.into()),
            })
        }
        _ => None,
    };
    let warnings = cx.finish()?;
    let certificate = certificate.expect("a Secret without both values has an error");
    Ok((
        Secret {
            source,
            certificate,
        },
        warnings,
    ))
}

/// The text of `key`: `stringData`'s, else `data`'s decoded; with where
/// it is written. An error (naming the field, never the value) when absent
/// or not base64 of UTF-8 text.
fn value_of(
    cx: &mut Check,
    data: Option<&BTreeMap<String, String>>,
    string_data: Option<&BTreeMap<String, String>>,
    key: &str,
) -> Option<(String, FieldPath)> {
    if let Some(text) = string_data.and_then(|d| d.get(key)) {
        return Some((text.clone(), fp!("stringData").key(key)));
    }
    let at = fp!("data").key(key);
    let Some(encoded) = data.and_then(|d| d.get(key)) else {
        cx.error(
            at,
            format!(
                "{key} is required in a {TLS_SECRET_TYPE} Secret: put the PEM {} in data (base64) \
                 or stringData",
                if key == "tls.crt" {
                    "certificate chain"
                } else {
                    "private key"
                }
            ),
        );
        return None;
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.split_ascii_whitespace().collect::<String>())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    if decoded.is_none() {
        cx.error(
            at.clone(),
            format!(
                "{key} is not base64 of PEM text: data values are base64 (base64 -w0 of the PEM \
                 file); or write the PEM text in stringData"
            ),
        );
    }
    decoded.map(|text| (text, at))
}

/// Replaces every value of a Secret document's `data` and `stringData`
/// with [`REDACTED`], keeping the keys: what `get` shows.
pub fn redact(document: &mut serde_json::Value) {
    for field in ["data", "stringData"] {
        if let Some(serde_json::Value::Object(values)) = document.get_mut(field) {
            for value in values.values_mut() {
                *value = serde_json::Value::String(REDACTED.to_owned());
            }
        }
    }
}
