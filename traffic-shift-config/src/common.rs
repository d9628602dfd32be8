//! The names and types several kinds share: the `apiVersion`s and kinds
//! accepted (and which `apiVersion`s a kind takes: [`api_versions_of`]), port [`Protocol`]s, [`Labels`], and a route's
//! [`RouteDestination`].

use std::collections::BTreeMap;

/// The `apiVersion`s of the Istio kinds, newest first. A `Rollout` has
/// its own, [`ROLLOUT_API_VERSION`].
pub const API_VERSIONS: [&str; 3] = [
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

/// The `apiVersion` of a `Rollout` (also `rollout::API_VERSION`).
pub const ROLLOUT_API_VERSION: &str = "rollouts.traffic-shift.io/v1alpha1";

/// The kinds accepted: Istio's five, then our `Rollout`.
pub const KINDS: [&str; 6] = [
    "ServiceEntry",
    "DestinationRule",
    "VirtualService",
    "Gateway",
    "WorkloadEntry",
    "Rollout",
];

/// The `apiVersion`s a kind (one of [`KINDS`]) is written with, newest
/// first: [`API_VERSIONS`] for the Istio kinds, the rollouts group for a
/// `Rollout`.
pub fn api_versions_of(kind: &str) -> &'static [&'static str] {
    const ROLLOUT: [&str; 1] = [ROLLOUT_API_VERSION];
    if kind == "Rollout" {
        &ROLLOUT
    } else {
        &API_VERSIONS
    }
}

/// A port protocol, as Istio spells them (case-insensitive in the YAML).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Https,
    Grpc,
    GrpcWeb,
    Http2,
    HttpProxy,
    Mongo,
    Mysql,
    Redis,
    Tcp,
    Tls,
    Udp,
    /// Not given: Istio sniffs it; here it is plain TCP.
    Unspecified,
}

impl Protocol {
    pub(crate) const NAMES: [(&'static str, Self); 12] = [
        ("HTTP", Self::Http),
        ("HTTPS", Self::Https),
        ("GRPC", Self::Grpc),
        ("GRPC-WEB", Self::GrpcWeb),
        ("HTTP2", Self::Http2),
        ("HTTP_PROXY", Self::HttpProxy),
        ("MONGO", Self::Mongo),
        ("MYSQL", Self::Mysql),
        ("REDIS", Self::Redis),
        ("TCP", Self::Tcp),
        ("TLS", Self::Tls),
        ("UDP", Self::Udp),
    ];

    /// `""` is [`Protocol::Unspecified`]; `None` for a name Istio does not know.
    pub fn parse(name: &str) -> Option<Self> {
        if name.is_empty() {
            return Some(Self::Unspecified);
        }
        Self::NAMES
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|(_, protocol)| *protocol)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, protocol)| *protocol == self)
            .map_or("", |(name, _)| name)
    }

    /// Istio's `IsHTTP() || IsTLS()`: ports where Istio can tell hosts apart.
    pub fn is_http_or_tls(self) -> bool {
        matches!(
            self,
            Self::Http
                | Self::Https
                | Self::Grpc
                | Self::GrpcWeb
                | Self::Http2
                | Self::HttpProxy
                | Self::Tls
        )
    }

    /// Istio's `IsHTTP`.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Self::Http | Self::Http2 | Self::HttpProxy | Self::Grpc | Self::GrpcWeb
        )
    }

    /// Istio's `IsTCP`.
    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Self::Tcp | Self::Https | Self::Tls | Self::Mongo | Self::Redis | Self::Mysql
        )
    }

    /// Whether `VirtualService` `tcp` rules apply to a port of this protocol:
    /// not to HTTP-family or TLS ports (`http`/`tls` rules), nor UDP ones.
    pub fn takes_tcp_routes(self) -> bool {
        !self.is_http_or_tls() && self != Self::Udp
    }

    /// Whether `tcp` rules apply to a Gateway server of this protocol: TCP,
    /// TLS, MONGO (and REDIS, MYSQL: Istio builds a TCP filter chain for every
    /// server that is not HTTP); not the HTTP family (HTTP, HTTPS, HTTP2,
    /// GRPC, GRPC-WEB: `http` rules), nor UDP.
    pub fn takes_gateway_tcp_routes(self) -> bool {
        !matches!(
            self,
            Self::Http
                | Self::Https
                | Self::Grpc
                | Self::GrpcWeb
                | Self::Http2
                | Self::HttpProxy
                | Self::Udp
        )
    }
}

pub type Labels = BTreeMap<String, String>;

/// A destination of a route (or a mirror, without weight).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteDestination {
    /// As written; `resolve` qualifies a short name with the namespace.
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<u16>,
    /// As written (absent is not 0: see `resolve`).
    pub weight: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_case_insensitive_and_tcp_rules_skip_http_and_tls() {
        let cases = [
            ("TCP", Some(true)),
            ("tcp", Some(true)),
            ("", Some(true)),
            ("MONGO", Some(true)),
            ("HTTP", Some(false)),
            ("grpc-web", Some(false)),
            ("TLS", Some(false)),
            ("UDP", Some(false)),
            ("SCTP", None),
        ];
        for (name, takes_tcp) in cases {
            assert_eq!(
                Protocol::parse(name).map(Protocol::takes_tcp_routes),
                takes_tcp,
                "protocol {name:?}: known, and do tcp rules apply to it"
            );
        }
    }
}
