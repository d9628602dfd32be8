//! `TestValidateVirtualService` (Istio's `ValidateVirtualService`).

use super::{
    Verdict::{Refused, Valid, Warns},
    case, document, run,
};

fn vs(spec: &str) -> String {
    document("VirtualService", spec)
}

#[test]
fn istio_validate_virtual_service() {
    let t = |name: &'static str, spec: String, verdict| case(name, vs(&spec), verdict);
    let http = "  http:\n  - route: [{destination: {host: foo.baz}}]\n";
    let cases = [
        t("TestValidateVirtualService/simple", format!("  hosts: [foo.bar]\n{http}"), Valid),
        t(
            "TestValidateVirtualService/allow sni based domains",
            "  hosts: [outbound_.15010_._.istiod.istio-system.svc.cluster.local]\n  gateways: [ns1/gateway]\n  tls:\n  - match: [{sniHosts: [outbound_.15010_._.istiod.istio-system.svc.cluster.local]}]\n    route: [{destination: {host: istio.istio-system.svc.cluster.local}}]\n".into(),
            Valid,
        ),
        t(
            "TestValidateVirtualService/duplicate hosts",
            format!("  hosts: [\"*.foo.bar\", \"*.bar\"]\n{http}"),
            Refused("duplicate hosts in virtual service: *.foo.bar & *.bar"),
        ),
        t(
            "TestValidateVirtualService/with no destination",
            "  hosts: [\"*.foo.bar\", \"*.bar\"]\n  http:\n  - route: [{}]\n".into(),
            Refused("destination is required"),
        ),
        t(
            "TestValidateVirtualService/destination with out hosts",
            "  hosts: [\"*.foo.bar\", \"*.bar\"]\n  http:\n  - route: [{destination: {}}]\n".into(),
            Refused("empty domain name not allowed"),
        ),
        t("TestValidateVirtualService/delegate with no hosts", http.into(), Valid),
        t(
            "TestValidateVirtualService/bad host",
            format!("  hosts: [foo.ba!r]\n{http}"),
            Refused("domain name \"foo.ba!r\" invalid (label \"ba!r\" invalid)"),
        ),
        t(
            "TestValidateVirtualService/no tcp or http routing",
            "  hosts: [foo.bar]\n".into(),
            Refused("http, tcp or tls must be provided in virtual service"),
        ),
        t(
            "TestValidateVirtualService/bad gateway",
            format!("  hosts: [foo.bar]\n  gateways: [b@dgateway]\n{http}"),
            Refused("domain name \"b@dgateway\" invalid (label \"b@dgateway\" invalid)"),
        ),
        t(
            "TestValidateVirtualService/FQDN for gateway",
            format!("  hosts: [foo.bar]\n  gateways: [gateway.example.com]\n{http}"),
            Warns("using legacy gatewayName format"),
        ),
        t(
            "TestValidateVirtualService/namespace/name for gateway",
            format!("  hosts: [foo.bar]\n  gateways: [ns1/gateway]\n{http}"),
            Valid,
        ),
        t(
            "TestValidateVirtualService/namespace/* for gateway",
            format!("  hosts: [foo.bar]\n  gateways: [\"ns1/*\"]\n{http}"),
            Refused("invalid value for gateway name: \"*\""),
        ),
        t(
            "TestValidateVirtualService/*/name for gateway",
            format!("  hosts: [foo.bar]\n  gateways: [\"*/gateway\"]\n{http}"),
            Refused("invalid value for namespace: \"*\""),
        ),
        t(
            "TestValidateVirtualService/wildcard for mesh gateway",
            format!("  hosts: [\"*\"]\n{http}"),
            Refused("wildcard host * is not allowed for virtual services bound to the mesh gateway"),
        ),
        t(
            "TestValidateVirtualService/wildcard for non-mesh gateway",
            format!("  hosts: [\"*\"]\n  gateways: [somegateway]\n{http}"),
            Valid,
        ),
        t(
            "TestValidateVirtualService/missing tcp route",
            "  hosts: [foo.bar]\n  tcp:\n  - match: [{port: 999}]\n".into(),
            Refused("TCP route is required"),
        ),
        t(
            "TestValidateVirtualService/missing tls route",
            "  hosts: [foo.bar]\n  tls:\n  - match: [{port: 999, sniHosts: [foo.bar]}]\n".into(),
            Refused("TLS route is required"),
        ),
        t(
            "TestValidateVirtualService/deprecated mirror",
            "  hosts: [foo.bar]\n  gateways: [ns1/gateway]\n  http:\n  - mirrorPercent: 5\n    route: [{destination: {host: foo.baz}}]\n".into(),
            Warns("using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead"),
        ),
        t(
            "TestValidateVirtualService/set authority",
            "  hosts: [foo.bar]\n  http:\n  - headers: {request: {set: {\":authority\": foo}}}\n    route: [{destination: {host: foo.baz}}]\n".into(),
            Valid,
        ),
        t(
            "TestValidateVirtualService/set authority in destination",
            "  hosts: [foo.bar]\n  http:\n  - route: [{destination: {host: foo.baz}, headers: {request: {set: {\":authority\": foo}}}}]\n".into(),
            Valid,
        ),
        t(
            "TestValidateVirtualService/set authority in rewrite and header",
            "  hosts: [foo.bar]\n  http:\n  - headers: {request: {set: {\":authority\": foo}}}\n    rewrite: {authority: bar}\n    route: [{destination: {host: foo.baz}}]\n".into(),
            Refused("authority header cannot be set multiple times"),
        ),
        t(
            "TestValidateVirtualService/non-method-get",
            "  hosts: [foo.bar]\n  http:\n  - route: [{destination: {host: foo.baz}}]\n    match:\n    - uri: {prefix: /api/v1/product}\n    - uri: {prefix: /api/v1/products}\n      method: {exact: GET}\n".into(),
            Warns(
                "match #1 of prefix /api/v1/products is not used (duplicate/overlapping match in rule \
                 #0 of prefix /api/v1/product on #0)",
            ),
        ),
        t(
            "TestValidateVirtualService/uri-with-prefix-exact",
            "  hosts: [foo.bar]\n  http:\n  - route: [{destination: {host: foo.baz}}]\n    match:\n    - uri: {prefix: /}\n    - uri: {exact: /}\n      method: {exact: GET}\n".into(),
            Valid,
        ),
        t(
            "TestValidateVirtualService/jwt claim route without gateway",
            "  hosts: [foo.bar]\n  gateways: [mesh]\n  http:\n  - route: [{destination: {host: foo.baz}}]\n    match:\n    - uri: {prefix: /}\n      headers: {\"@request.auth.claims.foo\": {exact: bar}}\n".into(),
            Refused("JWT claim based routing (key: @request.auth.claims.foo) is only supported for gateway"),
        ),
        t(
            "TestValidateVirtualService/ip address as sni host",
            "  hosts: [foo.bar]\n  tls:\n  - route: [{destination: {host: foo.baz}}]\n    match: [{port: 999, sniHosts: [1.1.1.1]}]\n".into(),
            Warns("using an IP address (\"1.1.1.1\") goes against SNI spec and most clients do not support this"),
        ),
        t(
            "TestValidateVirtualService/invalid wildcard as sni host",
            "  hosts: [foo.bar]\n  tls:\n  - route: [{destination: {host: foo.baz}}]\n    match: [{port: 999, sniHosts: [foo.*.com]}]\n".into(),
            Refused("domain name \"foo.*.com\" invalid (label \"*\" invalid)"),
        ),
    ];
    assert_eq!(cases.len(), 26, "every case of TestValidateVirtualService");
    run(&cases);
}
