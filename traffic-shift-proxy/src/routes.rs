//! The proxy's compiled form of [`HttpListener`]s: regexes built once per
//! update, and the pure functions that pick a virtual host and a route for
//! a request (no I/O here, so the rules are unit tested directly).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use hyper::{HeaderMap, Method, Uri};
use regex::{Regex, RegexBuilder};

use super::{
    cors::Cors,
    select::{RouteState, Slots},
    stats::{RouteCounts, SeriesCache},
};
use traffic_shift_config::model::{
    HttpListener, HttpRedirect, HttpRoute, Rewrite, StringMatch, VirtualHost,
};

/// A bound on the compiled size of one regex (as `config` checks them).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A regex in the rules that does not compile (the rules were checked, so
/// this means a model built by hand or a changed regex engine).
#[derive(Debug, thiserror::Error)]
#[error("route {route}: regex {pattern:?} does not compile: {source}")]
pub struct RegexError {
    pub route: String,
    pub pattern: String,
    #[source]
    pub source: regex::Error,
}

/// Everything the proxy serves, as one immutable snapshot: an update swaps
/// the whole of it, and a request keeps the snapshot it started with.
#[derive(Debug, Default)]
pub struct Config {
    pub listeners: Vec<Listener>,
    by_key: HashMap<String, usize>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Mesh service address ranges (network, length, port) and their
    /// listener, longest first: what `by_addr` falls back to.
    by_prefix: Vec<(IpAddr, u8, u16, usize)>,
}

impl Config {
    /// Compiles `listeners`; `state` gives each route (of the listener
    /// whose key it is given) its selection state (kept by route key across
    /// updates) and its counts for `status` (kept by listener and route).
    pub fn build(
        listeners: Vec<HttpListener>,
        mut state: impl FnMut(&str, &HttpRoute) -> (Arc<RouteState>, Arc<RouteCounts>),
    ) -> Result<Self, RegexError> {
        let mut config = Self::default();
        for listener in listeners {
            let index = config.listeners.len();
            config.by_key.insert(listener.key.clone(), index);
            for addr in &listener.listeners {
                config.by_addr.insert(*addr, index);
            }
            for prefix in &listener.prefixes {
                let (network, len) = canonical_prefix(prefix.network, prefix.len);
                config.by_prefix.push((network, len, prefix.port, index));
            }
            let mut hosts = Vec::with_capacity(listener.virtual_hosts.len());
            for host in listener.virtual_hosts {
                let mut routes = Vec::with_capacity(host.routes.len());
                for route in &host.routes {
                    let (state, counts) = state(&listener.key, route);
                    routes.push(Route::build(route, state, counts)?);
                }
                hosts.push(Host {
                    routes,
                    model: VirtualHost {
                        routes: Vec::new(),
                        ..host
                    },
                });
            }
            let servers = listener
                .tls
                .iter()
                .filter(|tls| tls.misdirected)
                .flat_map(|tls| tls.certificates.iter().map(|c| c.hosts.clone()))
                .zip(0..)
                .collect();
            config.listeners.push(Listener {
                gateway: listener.gateway,
                port: listener.port,
                https: listener.tls.is_some(),
                servers,
                hosts,
            });
        }
        config
            .by_prefix
            .sort_by_key(|&(_, len, _, _)| std::cmp::Reverse(len));
        Ok(config)
    }

    pub fn by_key(&self, key: &str) -> Option<&Listener> {
        self.by_key.get(key).map(|&i| &self.listeners[i])
    }

    /// The listener serving connections to `addr` (a mesh service
    /// address:port): the one naming it exactly, else the one of the
    /// longest address range that holds it, as the connect-time hook chose
    /// (`TS_SERVICES`, then `TS_SVC_PREFIXES`).
    pub fn by_addr(&self, addr: SocketAddr) -> Option<&Listener> {
        let canonical = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        self.by_addr
            .get(&addr)
            .or_else(|| self.by_addr.get(&canonical))
            .or_else(|| {
                self.by_prefix
                    .iter()
                    .find(|&&(network, len, port, _)| {
                        port == canonical.port() && in_prefix(network, len, canonical.ip())
                    })
                    .map(|(_, _, _, index)| index)
            })
            .map(|&i| &self.listeners[i])
    }
}

/// An IPv4-mapped IPv6 range of at least 96 bits as the IPv4 range.
fn canonical_prefix(network: IpAddr, len: u8) -> (IpAddr, u8) {
    match network {
        IpAddr::V6(v6) if len >= 96 => v6
            .to_ipv4_mapped()
            .map_or((network, len), |v4| (IpAddr::V4(v4), len - 96)),
        _ => (network, len),
    }
}

/// Whether `ip` (canonical) is in `network/len` (canonical).
fn in_prefix(network: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (network, ip) {
        (IpAddr::V4(n), IpAddr::V4(ip)) => {
            let mask = u32::MAX
                .checked_shl(32_u32.saturating_sub(len.into()))
                .unwrap_or(0);
            u32::from(n) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(ip)) => {
            let mask = u128::MAX
                .checked_shl(128_u32.saturating_sub(len.into()))
                .unwrap_or(0);
            u128::from(n) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

#[derive(Debug)]
pub struct Listener {
    pub gateway: Option<String>,
    pub port: u16,
    /// It terminates TLS (an HTTPS server): its requests' scheme is
    /// `https`.
    pub https: bool,
    /// The hosts of each HTTPS server (in order), when a request whose
    /// authority picks another server than its SNI did is answered 421
    /// ([`ListenerTls::misdirected`]); else empty.
    ///
    /// [`ListenerTls::misdirected`]: traffic_shift_config::model::ListenerTls::misdirected
    servers: Vec<(Vec<String>, usize)>,
    pub hosts: Vec<Host>,
}

#[derive(Debug)]
pub struct Host {
    /// The virtual host without its routes (those are compiled in `routes`).
    pub model: VirtualHost,
    pub routes: Vec<Route>,
}

#[derive(Debug)]
pub struct Route {
    pub model: HttpRoute,
    matches: Vec<Match>,
    /// `rewrite.uriRegexRewrite` (or the redirect's regex, a Gateway API
    /// `ReplacePrefixMatch`), compiled.
    pub uri_regex: Option<(Regex, String)>,
    /// The same of each destination's own rewrite or redirect, by index.
    pub destination_uri_regex: Vec<Option<(Regex, String)>>,
    pub slots: Slots,
    pub state: Arc<RouteState>,
    /// Its request metrics' series.
    pub series: SeriesCache,
    /// Its requests by destination and endpoint, for `status`.
    pub counts: Arc<RouteCounts>,
    /// Its replay buffer overflow counter, made at its first request with
    /// a body it could retry or mirror.
    pub overflow: std::sync::OnceLock<prometheus_client::metrics::counter::Counter>,
    /// Its `corsPolicy`, origins compiled.
    pub(crate) cors: Option<Cors>,
}

impl Route {
    fn build(
        model: &HttpRoute,
        state: Arc<RouteState>,
        counts: Arc<RouteCounts>,
    ) -> Result<Self, RegexError> {
        let regex = |pattern: &str| {
            compile_regex(pattern, false).map_err(|source| RegexError {
                route: model.key.clone(),
                pattern: pattern.to_owned(),
                source,
            })
        };
        let mut matches = Vec::with_capacity(model.matches.len());
        for m in &model.matches {
            let optional = |value: &Option<StringMatch>, ignore_case: bool| {
                value
                    .as_ref()
                    .map(|v| Matcher::build(v, ignore_case, &regex))
                    .transpose()
            };
            let named = |values: &std::collections::BTreeMap<String, StringMatch>| {
                values
                    .iter()
                    .map(|(name, v)| {
                        Ok((name.to_ascii_lowercase(), Matcher::build(v, false, &regex)?))
                    })
                    .collect::<Result<Vec<_>, RegexError>>()
            };
            matches.push(Match {
                uri: optional(&m.uri, m.ignore_uri_case)?,
                scheme: optional(&m.scheme, false)?,
                method: optional(&m.method, false)?,
                authority: optional(&m.authority, false)?,
                headers: named(&m.headers)?,
                query_params: m
                    .query_params
                    .iter()
                    .map(|(name, v)| Ok((name.clone(), Matcher::build(v, false, &regex)?)))
                    .collect::<Result<Vec<_>, RegexError>>()?,
                without_headers: named(&m.without_headers)?,
                port: m.port,
            });
        }
        let path_regex = |rewrite: Option<&Rewrite>, redirect: Option<&HttpRedirect>| match rewrite
            .and_then(|r| r.uri_regex.as_ref())
            .or_else(|| redirect.and_then(|r| r.uri_regex.as_ref()))
        {
            Some((pattern, replacement)) => Ok(Some((
                compile_regex(pattern, true).map_err(|source| RegexError {
                    route: model.key.clone(),
                    pattern: pattern.clone(),
                    source,
                })?,
                super::rewrite::re2_replacement(replacement),
            ))),
            None => Ok(None),
        };
        let uri_regex = path_regex(model.rewrite.as_ref(), model.redirect.as_ref())?;
        let destination_uri_regex = model
            .destinations
            .iter()
            .map(|d| match d.actions.as_deref() {
                Some(actions) => path_regex(actions.rewrite.as_ref(), actions.redirect.as_ref()),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>, RegexError>>()?;
        let cors = model
            .cors
            .as_ref()
            .map(|policy| Cors::build(policy, &regex))
            .transpose()?;
        Ok(Self {
            cors,
            slots: Slots::build(model),
            model: model.clone(),
            matches,
            uri_regex,
            destination_uri_regex,
            state,
            series: SeriesCache::default(),
            counts,
            overflow: std::sync::OnceLock::new(),
        })
    }

    /// The rewrite of the requests sent to destination `index`, with its
    /// compiled regex: the destination's own, else the route's.
    pub fn rewrite_for(&self, index: usize) -> Option<(&Rewrite, Option<&(Regex, String)>)> {
        let own = self.model.destinations.get(index)?.actions.as_deref();
        match own.and_then(|actions| actions.rewrite.as_ref()) {
            Some(rewrite) => Some((rewrite, self.destination_uri_regex.get(index)?.as_ref())),
            None => self
                .model
                .rewrite
                .as_ref()
                .map(|rewrite| (rewrite, self.uri_regex.as_ref())),
        }
    }

    /// Whether the request is admitted (any match, or no matches at all).
    /// Returns the matched uri prefix for a prefix rewrite.
    pub fn admits(&self, request: &RequestView<'_>) -> Option<MatchedUri> {
        if self.matches.is_empty() {
            return Some(MatchedUri::root(request.uri.path()));
        }
        self.matches.iter().find_map(|m| m.admits(request))
    }
}

/// What of the path the admitting match matched: a `uri.prefix` rewrite
/// replaces the prefix, any other the whole path (as Istio does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchedUri {
    Prefix(usize),
    Whole,
}

impl MatchedUri {
    /// A route without a uri match matches the prefix `/` (Envoy's route
    /// match for it).
    fn root(path: &str) -> Self {
        Self::Prefix(usize::from(path.starts_with('/')))
    }
}

/// The parts of a request the rules look at.
#[derive(Debug)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// As the client sent it (`Host` or `:authority`).
    pub authority: &'a str,
    /// The listener's port (`match[].port` compares with it).
    pub port: u16,
}

impl RequestView<'_> {
    /// Every value of the header joined with `,`, as Envoy matches headers.
    fn header(&self, name: &str) -> Option<String> {
        let mut values = self
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let first = values.next()?;
        Some(values.fold(first, |all, v| all + "," + &v))
    }

    fn query_param(&self, name: &str) -> Option<String> {
        query_param(self.uri.query()?, name)
    }
}

/// The first value of `name` in a query string (not percent-decoded, as
/// Envoy matches it).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| value.to_owned())
    })
}

#[derive(Debug)]
struct Match {
    uri: Option<Matcher>,
    scheme: Option<Matcher>,
    method: Option<Matcher>,
    authority: Option<Matcher>,
    headers: Vec<(String, Matcher)>,
    query_params: Vec<(String, Matcher)>,
    without_headers: Vec<(String, Matcher)>,
    port: Option<u16>,
}

impl Match {
    fn admits(&self, r: &RequestView<'_>) -> Option<MatchedUri> {
        if self.port.is_some_and(|port| port != r.port) {
            return None;
        }
        let test = |m: &Option<Matcher>, value: &str| m.as_ref().is_none_or(|m| m.test(value));
        let scheme = r.uri.scheme_str().unwrap_or("http");
        if !test(&self.method, r.method.as_str())
            || !test(&self.scheme, scheme)
            || !test(&self.authority, r.authority)
        {
            return None;
        }
        let header = |(name, m): &(String, Matcher)| r.header(name).is_some_and(|v| m.test(&v));
        if !self.headers.iter().all(header) || self.without_headers.iter().any(header) {
            return None;
        }
        let query = |(name, m): &(String, Matcher)| r.query_param(name).is_some_and(|v| m.test(&v));
        if !self.query_params.iter().all(query) {
            return None;
        }
        match &self.uri {
            None => Some(MatchedUri::root(r.uri.path())),
            Some(m) => {
                let path = r.uri.path();
                let matched = match m {
                    Matcher::Prefix { prefix, .. } => MatchedUri::Prefix(prefix.len()),
                    _ => MatchedUri::Whole,
                };
                m.test(path).then_some(matched)
            }
        }
    }
}

/// One `StringMatch`, regexes compiled and anchored.
#[derive(Debug)]
pub(crate) enum Matcher {
    Exact {
        value: String,
        ignore_case: bool,
    },
    Prefix {
        prefix: String,
        ignore_case: bool,
    },
    Regex(Regex),
    /// `{}`: present.
    Any,
}

impl Matcher {
    pub(crate) fn build(
        value: &StringMatch,
        ignore_case: bool,
        regex: &impl Fn(&str) -> Result<Regex, RegexError>,
    ) -> Result<Self, RegexError> {
        Ok(match value {
            StringMatch::Exact(value) => Self::Exact {
                value: value.clone(),
                ignore_case,
            },
            StringMatch::Prefix(prefix) => Self::Prefix {
                prefix: prefix.clone(),
                ignore_case,
            },
            StringMatch::Regex(pattern) => Self::Regex(regex(pattern)?),
            StringMatch::Any => Self::Any,
        })
    }

    pub(crate) fn test(&self, value: &str) -> bool {
        match self {
            Self::Exact {
                value: want,
                ignore_case,
            } => {
                if *ignore_case {
                    want.eq_ignore_ascii_case(value)
                } else {
                    want == value
                }
            }
            Self::Prefix {
                prefix,
                ignore_case,
            } => value.get(..prefix.len()).is_some_and(|head| {
                if *ignore_case {
                    head.eq_ignore_ascii_case(prefix)
                } else {
                    head == prefix
                }
            }),
            Self::Regex(regex) => regex.is_match(value),
            Self::Any => true,
        }
    }
}

/// Compiles an RE2 pattern; `anchored` unless it is a rewrite pattern
/// (which replaces every match, as Envoy's `regex_rewrite` does).
fn compile_regex(pattern: &str, rewrite: bool) -> Result<Regex, regex::Error> {
    let full = if rewrite {
        pattern.to_owned()
    } else {
        format!("^(?:{pattern})$")
    };
    RegexBuilder::new(&full)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
}

impl Listener {
    /// The virtual host for `authority` as Envoy picks it: a domain equal
    /// to the host (port removed, case-insensitive), else the longest
    /// `*.suffix` it ends with, else `*`. A mesh listener's single virtual
    /// host takes every request.
    /// Why a request for `authority` on a connection whose ClientHello
    /// named `sni` is misdirected, when it is: the two names pick different
    /// servers of the listener (as the certificate was picked: the name,
    /// else the longest `*.suffix`, else `*`). An SNI no server takes
    /// (the first certificate answered it) checks nothing.
    pub fn misdirected(&self, sni: &str, authority: &str) -> Option<String> {
        let by_sni = crate::sni::route_for(&self.servers, Some(sni))?;
        let host = strip_port(authority).to_ascii_lowercase();
        let by_host = crate::sni::route_for(&self.servers, Some(&host));
        (by_host != Some(by_sni)).then(|| {
            format!(
                "misdirected request: the authority {authority:?} is not served by the \
                 listener the connection's SNI {sni:?} chose; connect with that name as SNI\n"
            )
        })
    }

    pub fn host(&self, authority: &str) -> Option<&Host> {
        if self.gateway.is_none() {
            return self.hosts.first();
        }
        let host = strip_port(authority).to_ascii_lowercase();
        let exact = self.hosts.iter().find(|h| h.model.domains.contains(&host));
        if exact.is_some() {
            return exact;
        }
        let mut best: Option<(usize, &Host)> = None;
        for h in &self.hosts {
            for domain in &h.model.domains {
                if let Some(suffix) = domain.strip_prefix('*')
                    && !suffix.is_empty()
                    && host.ends_with(suffix)
                    && host.len() > suffix.len()
                    && best.is_none_or(|(len, _)| suffix.len() > len)
                {
                    best = Some((suffix.len(), h));
                }
            }
        }
        best.map(|(_, h)| h).or_else(|| {
            self.hosts
                .iter()
                .find(|h| h.model.domains.iter().any(|d| d == "*"))
        })
    }
}

impl Host {
    /// The first route that admits the request, in the order written.
    pub fn route(&self, request: &RequestView<'_>) -> Option<(&Route, MatchedUri)> {
        self.routes
            .iter()
            .find_map(|route| route.admits(request).map(|m| (route, m)))
    }
}

/// `host:port` -> `host`; `[v6]:port` -> `[v6]`.
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hyper::header::HeaderValue;

    use super::*;
    use traffic_shift_config::model::{Headers, HttpMatch, Retries};

    fn route(key: &str, matches: Vec<HttpMatch>) -> HttpRoute {
        HttpRoute {
            key: key.into(),
            name: None,
            matches,
            destinations: Vec::new(),
            selection: traffic_shift_config::model::HttpSelection::Smooth,
            redirect: None,
            direct_response: None,
            rewrite: None,
            timeout: None,
            retries: Retries::default(),
            fault: None,
            mirrors: Vec::new(),
            headers: Headers::default(),
            cors: None,
        }
    }

    fn host(name: &str, domains: &[&str], routes: Vec<HttpRoute>) -> VirtualHost {
        VirtualHost {
            virtual_service: name.into(),
            source: std::path::Path::new("test").into(),
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            routes,
        }
    }

    fn config(gateway: Option<&str>, hosts: Vec<VirtualHost>) -> Config {
        Config::build(
            vec![HttpListener {
                tls: None,
                unix: Vec::new(),
                key: "l".into(),
                gateway: gateway.map(str::to_owned),
                port: 8080,
                listeners: vec!["127.100.0.9:8080".parse().unwrap()],
                prefixes: Vec::new(),
                virtual_hosts: hosts,
            }],
            |_, _| Default::default(),
        )
        .unwrap()
    }

    fn chosen<'a>(config: &'a Config, authority: &str) -> Option<&'a str> {
        config
            .by_key("l")
            .unwrap()
            .host(authority)
            .map(|h| h.model.virtual_service.as_str())
    }

    #[test]
    fn a_mesh_address_takes_its_exact_listener_then_the_longest_range() {
        use traffic_shift_config::model::ServicePrefix;
        let mesh = |key: &str, listeners: &[&str], prefixes: &[(&str, u8)]| HttpListener {
            tls: None,
            unix: Vec::new(),
            key: key.into(),
            gateway: None,
            port: 9080,
            listeners: listeners.iter().map(|l| l.parse().unwrap()).collect(),
            prefixes: prefixes
                .iter()
                .map(|(network, len)| ServicePrefix {
                    network: network.parse().unwrap(),
                    len: *len,
                    port: 9080,
                })
                .collect(),
            virtual_hosts: vec![host(key, &["*"], vec![])],
        };
        let c = Config::build(
            vec![
                mesh("wide", &[], &[("198.18.0.0", 16)]),
                mesh("exact", &["198.18.7.77:9080"], &[]),
                mesh("narrow", &[], &[("198.18.7.0", 24), ("fd00:7473::", 64)]),
                mesh("mapped", &[], &[("::ffff:10.1.0.0", 112)]),
            ],
            |_, _| Default::default(),
        )
        .unwrap();
        let at = |addr: &str| {
            c.by_addr(addr.parse().unwrap())
                .map(|l| l.hosts[0].model.virtual_service.clone())
        };
        assert_eq!(at("198.18.7.77:9080").as_deref(), Some("exact"));
        assert_eq!(at("198.18.7.5:9080").as_deref(), Some("narrow"));
        assert_eq!(at("[::ffff:198.18.7.5]:9080").as_deref(), Some("narrow"));
        assert_eq!(at("198.18.9.5:9080").as_deref(), Some("wide"));
        assert_eq!(at("[fd00:7473::9]:9080").as_deref(), Some("narrow"));
        assert_eq!(at("10.1.2.3:9080").as_deref(), Some("mapped"));
        assert_eq!(at("198.18.7.5:9081"), None, "another port");
        assert_eq!(at("198.19.0.1:9080"), None, "outside every range");
    }

    #[test]
    fn virtual_host_exact_then_longest_suffix_then_any() {
        let c = config(
            Some("default/gw"),
            vec![
                host("any", &["*"], vec![]),
                host("example", &["*.example.com"], vec![]),
                host("shop", &["*.shop.example.com"], vec![]),
                host("exact", &["www.shop.example.com"], vec![]),
            ],
        );
        assert_eq!(chosen(&c, "WWW.shop.example.com:8080"), Some("exact"));
        assert_eq!(chosen(&c, "api.shop.example.com"), Some("shop"));
        assert_eq!(chosen(&c, "api.example.com"), Some("example"));
        assert_eq!(chosen(&c, "example.com"), Some("any"));
        let no_any = config(Some("default/gw"), vec![host("a", &["a.test"], vec![])]);
        assert_eq!(chosen(&no_any, "b.test"), None);
        // A mesh listener's one virtual host takes every authority.
        let mesh = config(None, vec![host("m", &["reviews"], vec![])]);
        assert_eq!(chosen(&mesh, "10.0.0.1:9080"), Some("m"));
        assert!(mesh.by_addr("127.100.0.9:8080".parse().unwrap()).is_some());
        assert!(
            mesh.by_addr("[::ffff:127.100.0.9]:8080".parse().unwrap())
                .is_some()
        );
    }

    #[test]
    fn first_matching_route_wins_and_fields_are_anded() {
        let both = HttpMatch {
            uri: Some(StringMatch::Prefix("/api".into())),
            headers: BTreeMap::from([("x-a".to_owned(), StringMatch::Regex("1|2".into()))]),
            port: Some(8080),
            ..HttpMatch::default()
        };
        let other_port = HttpMatch {
            port: Some(9090),
            ..HttpMatch::default()
        };
        let c = config(
            Some("default/gw"),
            vec![host(
                "h",
                &["*"],
                vec![
                    route("r0", vec![other_port]),
                    route("r1", vec![both]),
                    route("r2", vec![]),
                ],
            )],
        );
        let host = c.by_key("l").unwrap().host("x").unwrap();
        let pick = |path: &str, header: Option<&str>| {
            let uri: Uri = path.parse().unwrap();
            let mut headers = HeaderMap::new();
            if let Some(v) = header {
                headers.append("x-a", HeaderValue::from_str(v).unwrap());
            }
            let view = RequestView {
                method: &Method::GET,
                uri: &uri,
                headers: &headers,
                authority: "x",
                port: 8080,
            };
            host.route(&view).map(|(r, m)| (r.model.key.clone(), m))
        };
        assert_eq!(
            pick("/api/v1", Some("2")),
            Some(("r1".into(), MatchedUri::Prefix(4)))
        );
        // The regex must match the whole value.
        assert_eq!(pick("/api/v1", Some("12")).unwrap().0, "r2");
        assert_eq!(pick("/api/v1", None).unwrap().0, "r2");
        assert_eq!(
            pick("/other", Some("1")),
            Some(("r2".into(), MatchedUri::Prefix(1)))
        );
    }

    #[test]
    fn authorities_and_queries() {
        assert_eq!(strip_port("a.example:8080"), "a.example");
        assert_eq!(strip_port("a.example"), "a.example");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(query_param("a=1&b=2&b=3", "b"), Some("2".into()));
        assert_eq!(query_param("flag&a=1", "flag"), Some(String::new()));
        assert_eq!(query_param("a=1", "c"), None);
    }
}
