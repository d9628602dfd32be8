//! `TestValidateTrafficPolicy`, `TestValidateConnectionPool`,
//! `TestValidateLoadBalancer`, `TestValidateOutlierDetection`,
//! `TestValidateLocalityLbSetting` (Istio's `validateTrafficPolicy` and the
//! functions it calls): each input as the `trafficPolicy` of a
//! DestinationRule for host `reviews`.

use super::{
    Case,
    Verdict::{Refused, Valid, Warns},
    case, document, run,
};

/// A DestinationRule whose `trafficPolicy` is `policy` (a flow mapping).
fn policy_case(name: &'static str, policy: &str, verdict: super::Verdict) -> Case {
    case(
        name,
        document(
            "DestinationRule",
            &format!("  host: reviews\n  trafficPolicy: {policy}\n"),
        ),
        verdict,
    )
}

#[test]
fn istio_validate_traffic_policy() {
    let t = policy_case;
    let full = "loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {tcp: {maxConnections: 7}, http: {http2MaxRequests: 11}}";
    let cases = [
        t(
            "TestValidateTrafficPolicy/valid traffic policy",
            &format!("{{{full}, outlierDetection: {{minHealthPercent: 20}}}}"),
            Valid,
        ),
        t(
            "TestValidateTrafficPolicy/invalid traffic policy, nil entries",
            "{}",
            Refused("traffic policy must have at least one field"),
        ),
        t(
            "TestValidateTrafficPolicy/invalid traffic policy, missing port in port level settings",
            &format!(
                "{{portLevelSettings: [{{{full}, outlierDetection: {{minHealthPercent: 20}}}}]}}"
            ),
            Refused("portTrafficPolicy must have valid port"),
        ),
        t(
            "TestValidateTrafficPolicy/invalid traffic policy, bad connection pool",
            "{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {}, outlierDetection: {minHealthPercent: 20}}",
            Refused("connection pool must have at least one field"),
        ),
        // durationpb{Nanos: 500}, written as Go's protojson writes it.
        t(
            "TestValidateTrafficPolicy/invalid traffic policy, bad max connection duration",
            "{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {tcp: {maxConnectionDuration: 0.000000500s}}}",
            Refused("duration must be greater than 1ms"),
        ),
        t(
            "TestValidateTrafficPolicy/invalid traffic policy, panic threshold too low",
            &format!("{{{full}, outlierDetection: {{minHealthPercent: -1}}}}"),
            Refused("percentage -1 is not in range 0..100"),
        ),
        t(
            "TestValidateTrafficPolicy/invalid traffic policy, both upgrade and use client protocol set",
            "{connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}",
            Refused("use client protocol must not be true when H2UpgradePolicy is UPGRADE"),
        ),
    ];
    assert_eq!(cases.len(), 7, "every case of TestValidateTrafficPolicy");
    run(&cases);
}

#[test]
fn istio_validate_connection_pool() {
    let t = |name: &'static str, pool: &str, verdict| {
        policy_case(name, &format!("{{connectionPool: {pool}}}"), verdict)
    };
    let http = "http1MaxPendingRequests: 2, http2MaxRequests: 11, maxRequestsPerConnection: 5, maxRetries: 4";
    let cases = [
        t(
            "TestValidateConnectionPool/valid connection pool, tcp and http",
            &format!(
                "{{tcp: {{maxConnections: 7, connectTimeout: 2s}}, http: {{{http}, idleTimeout: 30s, maxConcurrentStreams: 5}}}}"
            ),
            Valid,
        ),
        t(
            "TestValidateConnectionPool/valid connection pool, tcp only",
            "{tcp: {maxConnections: 7, connectTimeout: 2s}}",
            Valid,
        ),
        t(
            "TestValidateConnectionPool/valid connection pool, http only",
            &format!("{{http: {{{http}, idleTimeout: 30s, maxConcurrentStreams: 5}}}}"),
            Valid,
        ),
        t(
            "TestValidateConnectionPool/valid connection pool, http only with empty idle timeout",
            &format!("{{http: {{{http}, maxConcurrentStreams: 5}}}}"),
            Valid,
        ),
        t(
            "TestValidateConnectionPool/valid connection pool, http2 keepalive",
            "{http: {http2KeepAlive: {interval: 15s, timeout: 5s}}}",
            Valid,
        ),
        t(
            "TestValidateConnectionPool/invalid connection pool, empty",
            "{}",
            Refused("connection pool must have at least one field"),
        ),
        t(
            "TestValidateConnectionPool/invalid connection pool, bad max connections",
            "{tcp: {maxConnections: -1}}",
            Refused("max connections must be non-negative"),
        ),
        t(
            "TestValidateConnectionPool/invalid connection pool, bad connect timeout",
            "{tcp: {connectTimeout: 2.000000005s}}",
            Refused("only durations to ms precision are supported"),
        ),
        t(
            "TestValidateConnectionPool/invalid connection pool, bad max pending requests",
            "{http: {http1MaxPendingRequests: -1}}",
            Refused("http1 max pending requests must be non-negative"),
        ),
        t(
            "TestValidateConnectionPool/invalid connection pool, bad max requests",
            "{http: {http2MaxRequests: -1}}",
            Refused("http2 max requests must be non-negative"),
        ),
        t(
            "TestValidateConnectionPool/invalid connection pool, bad max requests per connection",
            "{http: {maxRequestsPerConnection: -1}}",
            Refused("max requests per connection must be non-negative"),
        ),
        t(
            "TestValidateConnectionPool/invalid connection pool, bad max retries",
            "{http: {maxRetries: -1}}",
            Refused("max retries must be non-negative"),
        ),
        t(
            "TestValidateConnectionPool/invalid connection pool, bad idle timeout",
            "{http: {idleTimeout: 30.000000005s}}",
            Refused("only durations to ms precision are supported"),
        ),
        t(
            "TestValidateConnectionPool/valid connection pool, tcp timeout disabled",
            "{tcp: {idleTimeout: 0s}}",
            Valid,
        ),
        t(
            "TestValidateConnectionPool/invalid connection pool, bad max concurrent streams",
            "{http: {maxConcurrentStreams: -1}}",
            Refused("max concurrent streams must be non-negative"),
        ),
        t(
            "TestValidateConnectionPool/invalid connection pool, http2 keepalive without interval",
            "{http: {http2KeepAlive: {timeout: 5s}}}",
            Refused("http2 keepalive interval is required"),
        ),
        t(
            "TestValidateConnectionPool/invalid connection pool, http2 keepalive without timeout",
            "{http: {http2KeepAlive: {interval: 15s}}}",
            Refused("http2 keepalive timeout is required"),
        ),
        t(
            "TestValidateConnectionPool/invalid connection pool, bad http2 keepalive interval",
            "{http: {http2KeepAlive: {interval: 15.000000005s, timeout: 5s}}}",
            Refused("only durations to ms precision are supported"),
        ),
    ];
    assert_eq!(cases.len(), 18, "every case of TestValidateConnectionPool");
    run(&cases);
}

#[test]
fn istio_validate_load_balancer() {
    let t = |name: &'static str, lb: &str, verdict| {
        policy_case(name, &format!("{{loadBalancer: {lb}}}"), verdict)
    };
    let cookie = |attributes: &str| {
        format!(
            "{{consistentHash: {{httpCookie: {{name: test-cookie, ttl: 3600s, attributes: [{attributes}]}}}}}}"
        )
    };
    let cases = [
        t(
            "TestValidateLoadBalancer/valid load balancer with simple load balancing",
            "{simple: ROUND_ROBIN}",
            Valid,
        ),
        // MinimumRingSize is deprecated: a warning, which Istio's test
        // does not look at.
        t(
            "TestValidateLoadBalancer/valid load balancer with consistentHash load balancing",
            "{consistentHash: {minimumRingSize: 1024, httpCookie: {name: test, ttl: 3600s}}}",
            Warns("consistent hash MinimumRingSize is deprecated"),
        ),
        t(
            "TestValidateLoadBalancer/invalid load balancer with consistentHash load balancing, missing name",
            "{consistentHash: {minimumRingSize: 1024, httpCookie: {ttl: 3600s}}}",
            Refused("name required for HttpCookie"),
        ),
        t(
            "TestValidateLoadBalancer/invalid load balancer with consistentHash load balancing, maglev not prime",
            "{consistentHash: {maglev: {tableSize: 1000}}}",
            Refused("tableSize must be a prime number for maglev"),
        ),
        t(
            "TestValidateLoadBalancer/valid load balancer with consistentHash load balancing and unique cookie attributes",
            &cookie(
                "{name: SameSite, value: Strict}, {name: Secure, value: \"true\"}, {name: HttpOnly, value: \"true\"}",
            ),
            Valid,
        ),
        t(
            "TestValidateLoadBalancer/invalid load balancer with consistentHash load balancing and duplicate cookie attribute names",
            &cookie(
                "{name: SameSite, value: Strict}, {name: SameSite, value: Lax}, {name: Secure, value: \"true\"}",
            ),
            Refused("duplicate cookie attribute name: SameSite"),
        ),
        t(
            "TestValidateLoadBalancer/invalid load balancer with consistentHash load balancing and empty cookie attribute name",
            &cookie(
                "{name: SameSite, value: Strict}, {name: \"\", value: some-value}, {name: Secure, value: \"true\"}",
            ),
            Refused("cookie attribute name cannot be empty"),
        ),
        t(
            "TestValidateLoadBalancer/invalid: localityLbSetting and zoneAwareLbSetting both set",
            "{localityLbSetting: {}, zoneAwareLbSetting: {}}",
            Refused("only one of localityLbSetting and zoneAwareLbSetting can be set"),
        ),
        t(
            "TestValidateLoadBalancer/valid: zoneAwareLbSetting only",
            "{zoneAwareLbSetting: {failover: [{from: us-east, to: eu-west}]}}",
            Valid,
        ),
    ];
    assert_eq!(cases.len(), 9, "every case of TestValidateLoadBalancer");
    run(&cases);
}

#[test]
fn istio_validate_outlier_detection() {
    let t = |name: &'static str, outlier: &str, verdict| {
        policy_case(name, &format!("{{outlierDetection: {outlier}}}"), verdict)
    };
    let cases = [
        t(
            "TestValidateOutlierDetection/valid outlier detection",
            "{interval: 2s, baseEjectionTime: 2s, maxEjectionPercent: 50}",
            Valid,
        ),
        t(
            "TestValidateOutlierDetection/invalid outlier detection, bad interval",
            "{interval: 2.000000005s}",
            Refused("only durations to ms precision are supported"),
        ),
        t(
            "TestValidateOutlierDetection/invalid outlier detection, bad base ejection time",
            "{baseEjectionTime: 2.000000005s}",
            Refused("only durations to ms precision are supported"),
        ),
        t(
            "TestValidateOutlierDetection/invalid outlier detection, bad max ejection percent",
            "{maxEjectionPercent: 105}",
            Refused("percentage 105 is not in range 0..100"),
        ),
        t(
            "TestValidateOutlierDetection/invalid outlier detection, panic threshold too low",
            "{minHealthPercent: -1}",
            Refused("percentage -1 is not in range 0..100"),
        ),
        t(
            "TestValidateOutlierDetection/invalid outlier detection, panic threshold too high",
            "{minHealthPercent: 101}",
            Refused("percentage 101 is not in range 0..100"),
        ),
        t(
            "TestValidateOutlierDetection/deprecated outlier detection, ConsecutiveErrors",
            "{consecutiveErrors: 101}",
            Warns(
                "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
            ),
        ),
        t(
            "TestValidateOutlierDetection/consecutive local origin errors is set but split local origin errors is not set",
            "{consecutiveLocalOriginFailures: 10}",
            Refused(
                "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
            ),
        ),
    ];
    assert_eq!(cases.len(), 8, "every case of TestValidateOutlierDetection");
    run(&cases);
}

/// `TestValidateLocalityLbSetting` (Istio's `pkg/config/validation/agent`):
/// each case's setting as the `loadBalancer.localityLbSetting` of a
/// traffic policy, with `outlierDetection: {}` where the case passes an
/// outlier policy.
#[test]
fn istio_validate_locality_lb_setting() {
    let t = |name: &'static str, setting: &str, outlier: bool, verdict| {
        let outlier = if outlier {
            ", outlierDetection: {}"
        } else {
            ""
        };
        policy_case(
            name,
            &format!("{{loadBalancer: {{localityLbSetting: {setting}}}{outlier}}}"),
            verdict,
        )
    };
    let cases = [
        policy_case(
            "TestValidateLocalityLbSetting/valid mesh config without LocalityLoadBalancerSetting",
            "{loadBalancer: {simple: ROUND_ROBIN}}",
            Valid,
        ),
        t(
            "TestValidateLocalityLbSetting/invalid LocalityLoadBalancerSetting_Distribute total weight > 100",
            "{distribute: [{from: a/b/c, to: {a/b/c: 80, a/b1: 25}}]}",
            true,
            Refused("total locality weight 105 != 100"),
        ),
        t(
            "TestValidateLocalityLbSetting/invalid LocalityLoadBalancerSetting_Distribute total weight < 100",
            "{distribute: [{from: a/b/c, to: {a/b/c: 80, a/b1: 15}}]}",
            true,
            Refused("total locality weight 95 != 100"),
        ),
        t(
            "TestValidateLocalityLbSetting/invalid LocalityLoadBalancerSetting_Distribute weight = 0",
            "{distribute: [{from: a/b/c, to: {a/b/c: 0, a/b1: 100}}]}",
            true,
            Refused("locality weight must be in range [1, 100]"),
        ),
        t(
            "TestValidateLocalityLbSetting/invalid LocalityLoadBalancerSetting specify both distribute and failover",
            "{distribute: [{from: a/b/c, to: {a/b/c: 80, a/b1: 20}}], failover: [{from: region1, to: region2}]}",
            true,
            Refused("can not simultaneously specify 'distribute' and 'failover'"),
        ),
        t(
            "TestValidateLocalityLbSetting/invalid failover src and dst have same region",
            "{failover: [{from: region1, to: region1}]}",
            true,
            Refused("locality lb failover settings must specify different regions"),
        ),
        t(
            "TestValidateLocalityLbSetting/invalid failover src contain '*' wildcard",
            "{failover: [{from: \"*\", to: region2}]}",
            true,
            Refused("locality lb failover region should not contain '*' wildcard"),
        ),
        t(
            "TestValidateLocalityLbSetting/invalid failover dst contain '*' wildcard",
            "{failover: [{from: region1, to: \"*\"}]}",
            true,
            Refused("locality lb failover region should not contain '*' wildcard"),
        ),
        t(
            "TestValidateLocalityLbSetting/invalid failover src contain '/' separator",
            "{failover: [{from: region1/zone1, to: region2}]}",
            true,
            Refused("locality lb failover only specify region"),
        ),
        t(
            "TestValidateLocalityLbSetting/invalid failover dst contain '/' separator",
            "{failover: [{from: region1, to: region2/zone1}]}",
            true,
            Refused("locality lb failover only specify region"),
        ),
        t(
            "TestValidateLocalityLbSetting/failover priority provided without outlier detection policy",
            "{failoverPriority: [topology.istio.io/network, topology.kubernetes.io/region, topology.kubernetes.io/zone, topology.istio.io/subzone]}",
            false,
            Warns("outlier detection policy must be provided for failover"),
        ),
        t(
            "TestValidateLocalityLbSetting/failover provided without outlier detection policy",
            "{failover: [{from: us-east, to: eu-west}, {from: us-west, to: eu-east}]}",
            false,
            Warns("outlier detection policy must be provided for failover"),
        ),
        t(
            "TestValidateLocalityLbSetting/invalid LocalityLoadBalancerSetting specify both failoverPriority and region in failover",
            "{failover: [{from: region1, to: region2}], failoverPriority: [topology.kubernetes.io/region]}",
            true,
            Refused(
                "can not simultaneously set 'failover' and topology label 'topology.kubernetes.io/region' in 'failover_priority'",
            ),
        ),
        // TestValidateLocalities, as the `from` of distribute rules (each
        // to one locality at 100): the sources are checked in order.
        t(
            "TestValidateLocalities/explicit wildcard region overlap",
            "{distribute: [{from: \"*\", to: {x: 100}}, {from: a/b/c, to: {x: 100}}]}",
            true,
            Refused("locality a/b/c overlap with previous specified ones"),
        ),
        t(
            "TestValidateLocalities/wildcard not in suffix",
            "{distribute: [{from: a/b/c, to: {\"*/zone\": 100}}]}",
            true,
            Refused("locality */zone wildcard '*' number can not exceed 1 and must be in the end"),
        ),
        t(
            "TestValidateLocalities/valid localities",
            "{distribute: [{from: a1/*, to: {a1/*: 50, a2/*: 50}}, {from: a3/b3/c3, to: {a3/b3/c3: 100}}, {from: a4/b4, to: {a4/b4: 100}}, {from: a5/b5/*, to: {a5/b5/*: 100}}]}",
            true,
            Valid,
        ),
    ];
    assert_eq!(
        cases.len(),
        13 + 3,
        "every case of TestValidateLocalityLbSetting, three of TestValidateLocalities"
    );
    run(&cases);
}
