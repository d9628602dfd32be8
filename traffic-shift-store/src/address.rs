//! Where the store is: its address (`etcd://` or `etcds://`) and the TLS
//! files `etcds://` needs.

use std::{fmt, path::PathBuf, str::FromStr};

use etcd_client::{Certificate, Identity, TlsOptions};

use crate::StoreError;

/// `--store-ca`, `--store-cert`, `--store-key`: the files for `etcds://`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed etcd's server certificate (PEM).
    pub ca: Option<PathBuf>,
    /// This client's certificate (PEM), for an etcd with `--client-cert-auth`.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// The TLS options for `url`, or none for `etcd://`.
    pub(crate) fn options(&self, url: &StoreUrl) -> Result<Option<TlsOptions>, StoreError> {
        if !url.tls {
            if self.is_empty() {
                return Ok(None);
            }
            return Err(StoreError::TlsOptions(format!(
                "--store-ca, --store-cert and --store-key are for TLS: write the address as etcds://{} (or leave them out for plain etcd://)",
                url.endpoints.join(",")
            )));
        }
        let read = |flag: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|source| StoreError::TlsFile {
                flag,
                path: path.display().to_string(),
                source,
            })
        };
        let Some(ca) = &self.ca else {
            return Err(StoreError::TlsOptions(
                "etcds:// needs --store-ca FILE: the CA (PEM) that signed etcd's server certificate".into(),
            ));
        };
        let mut tls =
            TlsOptions::new().ca_certificate(Certificate::from_pem(read("--store-ca", ca)?));
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read("--store-cert", cert)?,
                    read("--store-key", key)?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(StoreError::TlsOptions(
                    "--store-cert and --store-key go together: give both (the client certificate and its key, PEM) or neither".into(),
                ));
            }
        }
        Ok(Some(tls))
    }
}

/// `etcd://HOST:PORT[,HOST:PORT...]`: the members the client may use;
/// `etcds://` for TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreUrl {
    endpoints: Vec<String>,
    tls: bool,
}

impl StoreUrl {
    /// The members as `HOST:PORT`.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Whether it is `etcds://`.
    pub fn tls(&self) -> bool {
        self.tls
    }
}

impl FromStr for StoreUrl {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || StoreError::Url(text.to_owned());
        let (tls, rest) = match text.strip_prefix("etcds://") {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix("etcd://").ok_or_else(bad)?),
        };
        let endpoints: Vec<String> = rest.split(',').map(str::to_owned).collect();
        for endpoint in &endpoints {
            let (host, port) = endpoint.rsplit_once(':').ok_or_else(bad)?;
            if host.is_empty() || host.contains('/') || port.parse::<u16>().is_err() {
                return Err(bad());
            }
        }
        Ok(Self { endpoints, tls })
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "etcds" } else { "etcd" };
        write!(f, "{scheme}://{}", self.endpoints.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        let url: StoreUrl = "etcd://127.0.0.1:2379,[::1]:2380".parse().unwrap();
        assert_eq!(url.endpoints(), ["127.0.0.1:2379", "[::1]:2380"]);
        assert_eq!(url.to_string(), "etcd://127.0.0.1:2379,[::1]:2380");
        for bad in [
            "127.0.0.1:2379",
            "etcd://",
            "etcd://host",
            "etcd://h:99999",
            "http://h:1",
        ] {
            let err = bad.parse::<StoreUrl>().unwrap_err().to_string();
            assert!(err.contains("etcd://HOST:PORT"), "{bad}: {err}");
        }
    }

    /// A status written before node labels existed still parses (no
    /// labels: selectors not applied); one without labels writes none.
    #[test]
    fn tls_options() {
        let tls: StoreUrl = "etcds://127.0.0.1:2379".parse().unwrap();
        assert!(tls.tls());
        assert_eq!(tls.to_string(), "etcds://127.0.0.1:2379");
        let plain: StoreUrl = "etcd://127.0.0.1:2379".parse().unwrap();
        let files = |ca: Option<&str>, cert: Option<&str>, key: Option<&str>| TlsFiles {
            ca: ca.map(PathBuf::from),
            cert: cert.map(PathBuf::from),
            key: key.map(PathBuf::from),
        };
        assert!(TlsFiles::default().options(&plain).unwrap().is_none());
        let err = files(Some("ca.pem"), None, None)
            .options(&plain)
            .unwrap_err();
        assert!(err.to_string().contains("etcds://127.0.0.1:2379"), "{err}");
        let err = TlsFiles::default().options(&tls).unwrap_err();
        assert!(err.to_string().contains("needs --store-ca"), "{err}");
        let err = files(Some("/nonexistent/ca.pem"), None, None)
            .options(&tls)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read --store-ca file /nonexistent/ca.pem: No such file or directory (os error 2)"
        );
        let err = files(Some("/dev/null"), Some("/dev/null"), None)
            .options(&tls)
            .unwrap_err();
        assert!(err.to_string().contains("go together"), "{err}");
        let err = files(
            Some("/dev/null"),
            Some("/nonexistent/c.pem"),
            Some("/dev/null"),
        )
        .options(&tls)
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read --store-cert file /nonexistent/c.pem"),
            "{err}"
        );
    }
}
