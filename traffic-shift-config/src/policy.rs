//! DestinationRule `trafficPolicy`, top-level, per subset and per port:
//! `loadBalancer`, `connectionPool`, `outlierDetection`,
//! `portLevelSettings`, checked as Istio's `validateTrafficPolicy` does.
//! `resolve` applies `loadBalancer` (the kernel path and the L7 proxy pick
//! endpoints with it) and `outlierDetection` (endpoint ejection);
//! `connectionPool` is modelled and checked, not applied.

use std::time::Duration;

use super::{check::Check, dto, dto::SimpleLb, error::FieldPath};

mod locality;

pub use super::dto::H2UpgradePolicy;

/// One `trafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrafficPolicy {
    pub load_balancer: Option<LoadBalancer>,
    pub connection_pool: Option<ConnectionPool>,
    pub outlier_detection: Option<OutlierDetection>,
    /// `portLevelSettings`: for their port, these override the fields above.
    pub port_level_settings: Vec<PortTrafficPolicy>,
}

impl TrafficPolicy {
    /// The `loadBalancer` in force for destination port `port`: the port's
    /// own setting, else the policy's.
    pub fn load_balancer_for(&self, port: Option<u16>) -> Option<&LoadBalancer> {
        port.and_then(|port| {
            self.port_level_settings
                .iter()
                .find(|settings| settings.port == port)
                .and_then(|settings| settings.load_balancer.as_ref())
        })
        .or(self.load_balancer.as_ref())
    }

    /// The `outlierDetection` in force for destination port `port`: the
    /// port's own setting, else the policy's.
    pub fn outlier_detection_for(&self, port: Option<u16>) -> Option<&OutlierDetection> {
        port.and_then(|port| {
            self.port_level_settings
                .iter()
                .find(|settings| settings.port == port)
                .and_then(|settings| settings.outlier_detection.as_ref())
        })
        .or(self.outlier_detection.as_ref())
    }
}

/// A `portLevelSettings` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct PortTrafficPolicy {
    pub port: u16,
    pub load_balancer: Option<LoadBalancer>,
    pub connection_pool: Option<ConnectionPool>,
    pub outlier_detection: Option<OutlierDetection>,
}

/// A `loadBalancer` setting and where it is written, since whether it can
/// be used depends on the route that uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadBalancer {
    pub policy: LbPolicy,
    /// The field that chose the policy (`...loadBalancer.simple`,
    /// `...loadBalancer.consistentHash.useSourceIp`).
    pub path: FieldPath,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LbPolicy {
    Simple(SimpleLb),
    ConsistentHash(HashKey),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    SourceIp,
    HttpHeaderName(String),
    HttpCookie(HttpCookie),
    HttpQueryParameterName(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCookie {
    pub name: String,
    pub path: Option<String>,
    /// Absent: a session cookie.
    pub ttl: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionPool {
    pub tcp: Option<TcpSettings>,
    pub http: Option<HttpSettings>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpSettings {
    pub max_connections: Option<u32>,
    pub connect_timeout: Option<Duration>,
    pub tcp_keepalive: Option<TcpKeepalive>,
    pub max_connection_duration: Option<Duration>,
    /// `Some(ZERO)`: no idle timeout.
    pub idle_timeout: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpKeepalive {
    pub probes: Option<u32>,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpSettings {
    pub http1_max_pending_requests: Option<u32>,
    pub http2_max_requests: Option<u32>,
    pub max_requests_per_connection: Option<u32>,
    pub max_retries: Option<u32>,
    pub idle_timeout: Option<Duration>,
    pub h2_upgrade_policy: H2UpgradePolicy,
    pub use_client_protocol: bool,
    pub max_concurrent_streams: Option<u32>,
    /// `http2KeepAlive`: `(interval, timeout)`.
    pub http2_keep_alive: Option<(Duration, Duration)>,
}

/// `outlierDetection`, Istio's defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Default 5.
    pub consecutive_5xx_errors: u32,
    pub consecutive_gateway_errors: Option<u32>,
    pub consecutive_local_origin_failures: Option<u32>,
    pub split_external_local_origin_errors: bool,
    /// Default 10s.
    pub interval: Duration,
    /// Default 30s.
    pub base_ejection_time: Duration,
    /// Default 10 (0 written means the default).
    pub max_ejection_percent: u32,
    /// Default 0.
    pub min_health_percent: u32,
    pub http_error_codes: Vec<u16>,
}

/// `<path>` of a `trafficPolicy` (DestinationRule or subset); `None` when
/// absent.
pub(super) fn traffic_policy(
    cx: &mut Check,
    path: &FieldPath,
    policy: Option<dto::TrafficPolicy>,
) -> TrafficPolicy {
    let Some(policy) = policy else {
        return TrafficPolicy::default();
    };
    // validateTrafficPolicy: "traffic policy must have at least one field".
    if policy.load_balancer.is_none()
        && policy.connection_pool.is_none()
        && policy.outlier_detection.is_none()
        && policy.tls.is_none()
        && policy.port_level_settings.is_none()
        && policy.tunnel.is_none()
        && policy.proxy_protocol.is_none()
        && policy.retry_budget.is_none()
    {
        cx.error(path.clone(), "traffic policy must have at least one field");
    }
    if let Some(tls) = &policy.tls {
        client_tls(cx, &path.key("tls"), tls);
    }
    if policy.tunnel.is_some() && policy.proxy_protocol.is_some() {
        cx.error(
            path.clone(),
            "tunnel and proxyProtocol must not be set together",
        );
    }
    let has_outlier = policy.outlier_detection.is_some();
    let outlier_detection =
        parse_outlier_detection(cx, &path.key("outlierDetection"), policy.outlier_detection);
    let connection_pool =
        parse_connection_pool(cx, &path.key("connectionPool"), policy.connection_pool);
    let load_balancer = parse_load_balancer(
        cx,
        &path.key("loadBalancer"),
        policy.load_balancer,
        has_outlier,
    );
    let port_level_settings =
        port_level_settings(cx, path, policy.port_level_settings.unwrap_or_default());
    TrafficPolicy {
        load_balancer,
        connection_pool,
        outlier_detection,
        port_level_settings,
    }
}

/// `<path>.portLevelSettings`, checked; one policy per valid port.
fn port_level_settings(
    cx: &mut Check,
    path: &FieldPath,
    settings: Vec<dto::PortTrafficPolicy>,
) -> Vec<PortTrafficPolicy> {
    let mut port_level_settings = Vec::new();
    let mut ports = Vec::new();
    for (i, settings) in settings.into_iter().enumerate() {
        let base = path.key("portLevelSettings").index(i);
        let port = match settings.port.and_then(|port| port.number) {
            None => {
                cx.error(base.key("port"), "portTrafficPolicy must have valid port");
                None
            }
            Some(number) => cx.port(base.key("port").key("number"), number),
        };
        if let Some(port) = port {
            if ports.contains(&port) {
                cx.error(
                    base.key("port").key("number"),
                    format!(
                        "port {port} has several portLevelSettings: only the first would apply; \
                         merge them"
                    ),
                );
            }
            ports.push(port);
        }
        if settings.load_balancer.is_none()
            && settings.connection_pool.is_none()
            && settings.outlier_detection.is_none()
            && settings.tls.is_none()
        {
            cx.error(
                base.clone(),
                "port traffic policy must have at least one field",
            );
            continue;
        }
        if let Some(tls) = &settings.tls {
            client_tls(cx, &base.key("tls"), tls);
        }
        let has_outlier = settings.outlier_detection.is_some();
        let outlier_detection = parse_outlier_detection(
            cx,
            &base.key("outlierDetection"),
            settings.outlier_detection,
        );
        let connection_pool =
            parse_connection_pool(cx, &base.key("connectionPool"), settings.connection_pool);
        let load_balancer = parse_load_balancer(
            cx,
            &base.key("loadBalancer"),
            settings.load_balancer,
            has_outlier,
        );
        if let Some(port) = port {
            port_level_settings.push(PortTrafficPolicy {
                port,
                load_balancer,
                connection_pool,
                outlier_detection,
            });
        }
    }
    port_level_settings
}

/// `loadBalancer`; whether a TCP route can use it is `resolve`'s call.
/// `outlier`: the same traffic policy sets `outlierDetection`.
fn parse_load_balancer(
    cx: &mut Check,
    base: &FieldPath,
    lb: Option<dto::LoadBalancer>,
    outlier: bool,
) -> Option<LoadBalancer> {
    let lb = lb?;
    if let Some(setting) = &lb.locality_lb_setting {
        locality::check(cx, &base.key("localityLbSetting"), setting, outlier);
    }
    if let Some(warmup) = &lb.warmup {
        check_warmup(cx, &base.key("warmup"), warmup);
    }
    if lb.locality_lb_setting.is_some() && lb.zone_aware_lb_setting.is_some() {
        cx.error(
            base.clone(),
            "only one of localityLbSetting and zoneAwareLbSetting can be set",
        );
    }
    match (lb.simple, lb.consistent_hash) {
        (Some(_), Some(_)) => {
            cx.error(
                base.clone(),
                "set either simple or consistentHash in loadBalancer, not both",
            );
            None
        }
        (Some(simple), None) => Some(LoadBalancer {
            policy: LbPolicy::Simple(simple),
            path: base.key("simple"),
        }),
        (None, Some(hash)) => consistent_hash(cx, &base.key("consistentHash"), hash),
        // Only settings we ignore (localityLbSetting, warmup).
        (None, None) => None,
    }
}

fn consistent_hash(
    cx: &mut Check,
    base: &FieldPath,
    hash: dto::ConsistentHash,
) -> Option<LoadBalancer> {
    let mut keys = Vec::new();
    if hash.use_source_ip == Some(true) {
        keys.push(("useSourceIp", Some(HashKey::SourceIp)));
    }
    if let Some(name) = hash.http_header_name {
        keys.push(("httpHeaderName", Some(HashKey::HttpHeaderName(name))));
    }
    if let Some(cookie) = hash.http_cookie {
        keys.push((
            "httpCookie",
            http_cookie(cx, &base.key("httpCookie"), cookie).map(HashKey::HttpCookie),
        ));
    }
    if let Some(name) = hash.http_query_parameter_name {
        keys.push((
            "httpQueryParameterName",
            Some(HashKey::HttpQueryParameterName(name)),
        ));
    }
    if hash.ring_hash.is_some() && hash.maglev.is_some() {
        cx.error(base.clone(), "set either ringHash or maglev, not both");
    }
    if hash.minimum_ring_size.is_some_and(|size| size != 0) {
        if hash.ring_hash.is_some() || hash.maglev.is_some() {
            cx.error(
                base.key("minimumRingSize"),
                "only one of MinimumRingSize or Maglev/Ringhash can be specified",
            );
        }
        cx.warn(
            base.key("minimumRingSize"),
            "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash \
             configuration instead",
        );
    }
    if let Some(maglev) = &hash.maglev {
        let path = base.key("maglev").key("tableSize");
        match maglev.table_size {
            None | Some(0) => cx.error(path, "tableSize must be set for maglev"),
            Some(size) if size >= 5_000_011 => cx.error(
                path,
                format!("tableSize must be less than 5000011 for maglev (it is {size})"),
            ),
            Some(size) if !is_prime(size) => cx.error(
                path,
                format!("tableSize must be a prime number for maglev (it is {size})"),
            ),
            Some(_) => {}
        }
    }
    let ring_sizes = [
        (
            base.key("ringHash").key("minimumRingSize"),
            hash.ring_hash.and_then(|ring| ring.minimum_ring_size),
        ),
        (base.key("minimumRingSize"), hash.minimum_ring_size),
    ];
    for (path, size) in ring_sizes {
        if let Some(size) = size
            && size < 0
        {
            cx.error(path, format!("minimumRingSize {size} < 0"));
        }
    }
    match keys.len() {
        0 => {
            cx.error(
                base.clone(),
                "consistentHash needs a hash key: set useSourceIp: true (the one a TCP route can \
                 use), httpHeaderName, httpCookie or httpQueryParameterName",
            );
            None
        }
        1 => {
            let (field, key) = keys.remove(0);
            key.map(|key| LoadBalancer {
                policy: LbPolicy::ConsistentHash(key),
                path: base.key(field),
            })
        }
        _ => {
            cx.error(
                base.key(keys[1].0),
                format!(
                    "consistentHash takes one hash key, and {} and {} are both set: keep one",
                    keys[0].0, keys[1].0
                ),
            );
            None
        }
    }
}

fn http_cookie(cx: &mut Check, base: &FieldPath, cookie: dto::HttpCookie) -> Option<HttpCookie> {
    let name = cookie.name.unwrap_or_default();
    if name.is_empty() {
        cx.error(base.key("name"), "name required for HttpCookie");
    }
    let mut attributes = Vec::new();
    for (i, attribute) in cookie.attributes.unwrap_or_default().iter().enumerate() {
        let path = base.key("attributes").index(i).key("name");
        match attribute.name.as_deref().unwrap_or_default() {
            "" => cx.error(path, "cookie attribute name cannot be empty"),
            name if attributes.contains(&name) => {
                cx.error(path, format!("duplicate cookie attribute name: {name}"));
            }
            name => attributes.push(name),
        }
    }
    // A TTL of 0s is legal: a session cookie.
    let ttl = cookie
        .ttl
        .and_then(|ttl| cx.ok(base.key("ttl"), super::values::duration_or_zero(&ttl)));
    (!name.is_empty()).then(|| HttpCookie {
        name,
        path: cookie.path,
        ttl: ttl.filter(|ttl| !ttl.is_zero()),
    })
}

/// Envoy's `isPrime`, as Istio copies it.
pub(super) fn is_prime(n: i64) -> bool {
    n >= 2 && (2..=n.isqrt()).all(|d| n % d != 0)
}

/// A count that Istio keeps in an `int32` and wants non-negative
/// (`"max connections must be non-negative"`), or a `uint32`.
fn count(cx: &mut Check, path: FieldPath, value: Option<i64>, what: &str) -> Option<u32> {
    let value = value?;
    match u32::try_from(value) {
        Ok(value) if i32::try_from(value).is_ok() => Some(value),
        Ok(_) => {
            cx.error(
                path,
                format!("{what} {value} is too large (at most {})", i32::MAX),
            );
            None
        }
        Err(_) => {
            cx.error(path, format!("{what} must be non-negative (it is {value})"));
            None
        }
    }
}

fn parse_connection_pool(
    cx: &mut Check,
    base: &FieldPath,
    pool: Option<dto::ConnectionPool>,
) -> Option<ConnectionPool> {
    let pool = pool?;
    if pool.tcp.is_none() && pool.http.is_none() {
        cx.error(base.clone(), "connection pool must have at least one field");
        return None;
    }
    let tcp = pool.tcp.map(|tcp| tcp_settings(cx, &base.key("tcp"), tcp));
    let http = pool.http.map(|http| {
        let base = base.key("http");
        let h2_upgrade_policy = http.h2_upgrade_policy.unwrap_or_default();
        let use_client_protocol = http.use_client_protocol.unwrap_or(false);
        if h2_upgrade_policy == H2UpgradePolicy::Upgrade && use_client_protocol {
            cx.error(
                base.key("useClientProtocol"),
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            );
        }
        let http2_keep_alive = http.http2_keep_alive.and_then(|keepalive| {
            let base = base.key("http2KeepAlive");
            let part = |cx: &mut Check, field: &str, text: Option<String>| match text {
                None => {
                    cx.error(
                        base.key(field),
                        format!("http2 keepalive {field} is required"),
                    );
                    None
                }
                Some(text) => cx.ok(base.key(field), super::values::duration(&text)),
            };
            let interval = part(cx, "interval", keepalive.interval);
            let timeout = part(cx, "timeout", keepalive.timeout);
            interval.zip(timeout)
        });
        HttpSettings {
            http1_max_pending_requests: count(
                cx,
                base.key("http1MaxPendingRequests"),
                http.http1_max_pending_requests,
                "http1 max pending requests",
            ),
            http2_max_requests: count(
                cx,
                base.key("http2MaxRequests"),
                http.http2_max_requests,
                "http2 max requests",
            ),
            max_requests_per_connection: count(
                cx,
                base.key("maxRequestsPerConnection"),
                http.max_requests_per_connection,
                "max requests per connection",
            ),
            max_retries: count(cx, base.key("maxRetries"), http.max_retries, "max retries"),
            idle_timeout: http
                .idle_timeout
                .and_then(|text| cx.ok(base.key("idleTimeout"), super::values::duration(&text))),
            h2_upgrade_policy,
            use_client_protocol,
            max_concurrent_streams: count(
                cx,
                base.key("maxConcurrentStreams"),
                http.max_concurrent_streams,
                "max concurrent streams",
            ),
            http2_keep_alive,
        }
    });
    Some(ConnectionPool { tcp, http })
}

fn tcp_settings(cx: &mut Check, base: &FieldPath, tcp: dto::TcpSettings) -> TcpSettings {
    let duration = |cx: &mut Check, field: &str, text: Option<String>| {
        text.and_then(|text| cx.ok(base.key(field), super::values::duration(&text)))
    };
    TcpSettings {
        max_connections: count(
            cx,
            base.key("maxConnections"),
            tcp.max_connections,
            "max connections",
        ),
        connect_timeout: duration(cx, "connectTimeout", tcp.connect_timeout),
        tcp_keepalive: tcp.tcp_keepalive.map(|keepalive| {
            let base = base.key("tcpKeepalive");
            TcpKeepalive {
                probes: count(cx, base.key("probes"), keepalive.probes, "probes"),
                time: keepalive
                    .time
                    .and_then(|text| cx.ok(base.key("time"), super::values::duration(&text))),
                interval: keepalive
                    .interval
                    .and_then(|text| cx.ok(base.key("interval"), super::values::duration(&text))),
            }
        }),
        max_connection_duration: duration(cx, "maxConnectionDuration", tcp.max_connection_duration),
        // "Skip validation if the value is 0s, as it indicates that the
        // timeout is disabled entirely."
        idle_timeout: tcp.idle_timeout.and_then(|text| {
            cx.ok(
                base.key("idleTimeout"),
                super::values::duration_or_zero(&text),
            )
        }),
    }
}

fn parse_outlier_detection(
    cx: &mut Check,
    base: &FieldPath,
    outlier: Option<dto::OutlierDetection>,
) -> Option<OutlierDetection> {
    let outlier = outlier?;
    if outlier.consecutive_errors.is_some_and(|errors| errors != 0) {
        cx.warn(
            base.key("consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or \
             consecutive5xxErrors instead",
        );
    }
    let split = outlier.split_external_local_origin_errors.unwrap_or(false);
    let local_origin = count(
        cx,
        base.key("consecutiveLocalOriginFailures"),
        outlier.consecutive_local_origin_failures,
        "consecutiveLocalOriginFailures",
    );
    if !split && local_origin.is_some_and(|failures| failures > 0) {
        cx.error(
            base.key("consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split \
             external local origin errors is set to false",
        );
    }
    let duration = |cx: &mut Check, field: &str, text: Option<String>, default: u64| {
        text.and_then(|text| cx.ok(base.key(field), super::values::duration(&text)))
            .unwrap_or(Duration::from_secs(default))
    };
    let interval = duration(cx, "interval", outlier.interval, 10);
    let base_ejection_time = duration(cx, "baseEjectionTime", outlier.base_ejection_time, 30);
    let percent = |cx: &mut Check, field: &str, value: Option<i64>| {
        value.and_then(|value| cx.ok(base.key(field), super::values::percent(value)))
    };
    let max_ejection_percent = percent(cx, "maxEjectionPercent", outlier.max_ejection_percent)
        .filter(|percent| *percent != 0)
        .unwrap_or(10);
    let min_health_percent =
        percent(cx, "minHealthPercent", outlier.min_health_percent).unwrap_or(0);
    let mut http_error_codes = Vec::new();
    for (i, code) in outlier
        .http_error_codes
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        match u16::try_from(code) {
            Ok(code) if (100..=599).contains(&code) => http_error_codes.push(code),
            _ => cx.error(
                base.key("outlierDetectionHttpErrorCodes").index(i),
                format!("HTTP status {code} is not in range 100-599"),
            ),
        }
    }
    Some(OutlierDetection {
        consecutive_5xx_errors: count(
            cx,
            base.key("consecutive5xxErrors"),
            outlier.consecutive_5xx_errors,
            "consecutive5xxErrors",
        )
        .unwrap_or(5),
        consecutive_gateway_errors: count(
            cx,
            base.key("consecutiveGatewayErrors"),
            outlier.consecutive_gateway_errors,
            "consecutiveGatewayErrors",
        ),
        consecutive_local_origin_failures: local_origin,
        split_external_local_origin_errors: split,
        interval,
        base_ejection_time,
        max_ejection_percent,
        min_health_percent,
        http_error_codes,
    })
}

/// `loadBalancer.warmup`, checked as Istio does (its webhook, and the
/// CRD's lower bound of `minimumPercent`); not applied.
fn check_warmup(cx: &mut Check, base: &FieldPath, warmup: &dto::Warmup) {
    match &warmup.duration {
        None => cx.error(base.key("duration"), "duration is required"),
        Some(text) => {
            cx.ok(base.key("duration"), super::values::duration(text));
        }
    }
    if let Some(percent) = warmup.minimum_percent {
        if percent > 100.0 {
            cx.error(
                base.key("minimumPercent"),
                "minimumPercent value should be less than or equal to 100",
            );
        } else if percent < 0.0 {
            cx.error(
                base.key("minimumPercent"),
                "minimumPercent value should be at least 0",
            );
        }
    }
    if warmup
        .aggression
        .is_some_and(|aggression| aggression <= 0.0)
    {
        cx.error(
            base.key("aggression"),
            "aggression should be greater than 0",
        );
    }
}

/// A `tls` (`ClientTLSSettings`), checked as Istio's `ValidateTLS` does;
/// not applied (the kernel path does not originate TLS).
fn client_tls(cx: &mut Check, path: &FieldPath, tls: &dto::ClientTls) {
    let set = |value: &Option<String>| value.as_deref().is_some_and(|value| !value.is_empty());
    let mode = tls.mode.as_deref().unwrap_or("DISABLE");
    let credential = set(&tls.credential_name);
    if tls.insecure_skip_verify == Some(true) {
        // Go's `SubjectAltNames != nil`: written, even empty.
        let names = tls.subject_alt_names.is_some();
        if mode == "SIMPLE" && (set(&tls.ca_certificates) || credential || names) {
            cx.error(
                path.key("insecureSkipVerify"),
                "cannot specify CaCertificates or CredentialName or SubjectAltNames when \
                 InsecureSkipVerify is set true",
            );
        }
        if mode == "MUTUAL" && (set(&tls.ca_certificates) || names) {
            cx.error(
                path.key("insecureSkipVerify"),
                "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set \
                 true",
            );
        }
    }
    if matches!(mode, "SIMPLE" | "MUTUAL") && credential {
        if set(&tls.client_certificate)
            || set(&tls.ca_certificates)
            || set(&tls.private_key)
            || set(&tls.ca_crl)
        {
            cx.error(
                path.key("credentialName"),
                "cannot specify client certificates or CA certificate or CA CRL If credentialName \
                 is set",
            );
        }
        return;
    }
    if mode == "MUTUAL" {
        if !set(&tls.client_certificate) {
            cx.error(path.clone(), "client certificate required for mutual tls");
        }
        if !set(&tls.private_key) {
            cx.error(path.clone(), "private key required for mutual tls");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn primes() {
        let primes: Vec<i64> = (0..30).filter(|n| super::is_prime(*n)).collect();
        assert_eq!(
            primes,
            [2, 3, 5, 7, 11, 13, 17, 19, 23, 29],
            "primes below 30"
        );
    }
}
