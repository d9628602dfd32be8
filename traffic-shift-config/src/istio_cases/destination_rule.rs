//! `TestValidateDestinationRule` (Istio's `ValidateDestinationRule`).

use super::{
    Verdict::{Refused, Valid, Warns},
    case, document, run,
};

fn dr(spec: &str) -> String {
    document("DestinationRule", spec)
}

#[test]
fn istio_validate_destination_rule() {
    let t = |name: &'static str, spec: String, verdict| case(name, dr(&spec), verdict);
    let subsets = "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n";
    let policy = |min_health: u32| {
        format!(
            "{{loadBalancer: {{simple: ROUND_ROBIN}}, connectionPool: {{tcp: {{maxConnections: 7}}, http: {{http2MaxRequests: 11}}}}, outlierDetection: {{minHealthPercent: {min_health}}}}}"
        )
    };
    let empty_pool = "{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {}, outlierDetection: {minHealthPercent: 20}}";
    let tls = |fields: &str| format!("  host: reviews\n  trafficPolicy:\n    tls: {{{fields}}}\n");
    let san = "subjectAltNames: [reviews.default.svc]";
    let cases = [
        t("TestValidateDestinationRule/simple destination rule", format!("  host: reviews\n{subsets}"), Valid),
        t(
            "TestValidateDestinationRule/simple destination rule with empty selector labels",
            format!("  host: reviews\n{subsets}  workloadSelector: {{}}\n"),
            Warns("workload selector specified without labels"),
        ),
        t(
            "TestValidateDestinationRule/missing destination name",
            format!("  host: \"\"\n{subsets}"),
            Refused("empty domain name not allowed"),
        ),
        t(
            "TestValidateDestinationRule/missing subset name",
            "  host: reviews\n  subsets:\n  - {name: \"\", labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n".into(),
            Refused("subset name cannot be empty"),
        ),
        t(
            "TestValidateDestinationRule/duplicate subset names",
            "  host: reviews\n  subsets:\n  - {name: foo, labels: {version: v1}}\n  - {name: foo, labels: {version: v2}}\n".into(),
            Refused("duplicate subset names: foo"),
        ),
        t(
            "TestValidateDestinationRule/valid traffic policy, top level",
            format!("  host: reviews\n  trafficPolicy: {}\n{subsets}", policy(20)),
            Valid,
        ),
        t(
            "TestValidateDestinationRule/invalid traffic policy, top level",
            format!("  host: reviews\n  trafficPolicy: {empty_pool}\n{subsets}"),
            Refused("connection pool must have at least one field"),
        ),
        t(
            "TestValidateDestinationRule/valid traffic policy, subset level",
            format!("  host: reviews\n  subsets:\n  - {{name: v1, labels: {{version: v1}}, trafficPolicy: {}}}\n  - {{name: v2, labels: {{version: v2}}}}\n", policy(20)),
            Valid,
        ),
        t(
            "TestValidateDestinationRule/invalid traffic policy, subset level",
            format!("  host: reviews\n  subsets:\n  - {{name: v1, labels: {{version: v1}}, trafficPolicy: {empty_pool}}}\n  - {{name: v2, labels: {{version: v2}}}}\n"),
            Refused("connection pool must have at least one field"),
        ),
        t(
            "TestValidateDestinationRule/valid traffic policy, both levels",
            format!("  host: reviews\n  trafficPolicy: {}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}, trafficPolicy: {}}}\n  - {{name: v2, labels: {{version: v2}}}}\n", policy(20), policy(30)),
            Valid,
        ),
        t(
            "TestValidateDestinationRule/InsecureSkipVerify is not specified with tls mode simple, and the ca cert is specified by CaCertificates",
            tls(&format!("mode: SIMPLE, caCertificates: test, {san}")),
            Valid,
        ),
        t(
            "TestValidateDestinationRule/InsecureSkipVerify is not specified with tls mode simple, and the ca cert is specified by CredentialName",
            tls(&format!("mode: SIMPLE, credentialName: test, {san}")),
            Valid,
        ),
        t(
            "TestValidateDestinationRule/InsecureSkipVerify is set false with tls mode simple, and the ca cert is specified by CaCertificates",
            tls(&format!("mode: SIMPLE, caCertificates: test, {san}, insecureSkipVerify: false")),
            Valid,
        ),
        t(
            "TestValidateDestinationRule/InsecureSkipVerify is set false with tls mode simple, and the ca cert is specified by CredentialName",
            tls(&format!("mode: SIMPLE, credentialName: test, {san}, insecureSkipVerify: false")),
            Valid,
        ),
        t(
            "TestValidateDestinationRule/InsecureSkipVerify is set true with tls mode simple, and the ca cert is specified by CaCertificates",
            tls("mode: SIMPLE, credentialName: test, insecureSkipVerify: true"),
            Refused("cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true"),
        ),
        t(
            "TestValidateDestinationRule/InsecureSkipVerify is set true with tls mode simple, and the ca cert is specified by CredentialName",
            tls("mode: SIMPLE, caCertificates: test, insecureSkipVerify: true"),
            Refused("cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true"),
        ),
        t(
            "TestValidateDestinationRule/InsecureSkipVerify is set true with tls mode simple, and the san is specified",
            tls(&format!("mode: SIMPLE, {san}, insecureSkipVerify: true")),
            Refused("cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true"),
        ),
        t(
            "TestValidateDestinationRule/InsecureSkipVerify is not specified with tls mode mutual, and the ca cert is specified by CaCertificates",
            tls(&format!("mode: MUTUAL, caCertificates: test, privateKey: key, clientCertificate: cert, {san}")),
            Valid,
        ),
        t(
            "TestValidateDestinationRule/InsecureSkipVerify is not specified with tls mode mutual, and the ca cert is specified by CredentialName",
            tls(&format!("mode: MUTUAL, credentialName: test, {san}")),
            Valid,
        ),
        t(
            "TestValidateDestinationRule/InsecureSkipVerify is set false with tls mode mutual, and the ca cert is specified by CaCertificates",
            tls(&format!("mode: MUTUAL, caCertificates: test, privateKey: key, clientCertificate: cert, {san}, insecureSkipVerify: false")),
            Valid,
        ),
        t(
            "TestValidateDestinationRule/InsecureSkipVerify is set false with tls mode mutual, and the ca cert is specified by CredentialName",
            tls(&format!("mode: MUTUAL, credentialName: test, {san}, insecureSkipVerify: false")),
            Valid,
        ),
        t(
            "TestValidateDestinationRule/InsecureSkipVerify is set true with tls mode mutual, and the ca cert is specified by CaCertificates",
            tls("mode: MUTUAL, caCertificates: test, privateKey: key, clientCertificate: cert, insecureSkipVerify: true"),
            Refused("cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true"),
        ),
        // Istio's second case of this name: the CA by credentialName.
        t(
            "TestValidateDestinationRule/InsecureSkipVerify is set true with tls mode mutual, and the ca cert is specified by CaCertificates (2)",
            tls("mode: MUTUAL, credentialName: test, insecureSkipVerify: true"),
            Valid,
        ),
        t(
            "TestValidateDestinationRule/InsecureSkipVerify is set true with tls mode mutual, and the ca cert is not specified",
            tls("mode: MUTUAL, privateKey: key, clientCertificate: cert, insecureSkipVerify: true"),
            Valid,
        ),
        t(
            "TestValidateDestinationRule/InsecureSkipVerify is set true with tls mode mutual, and the san is specified",
            tls(&format!("mode: MUTUAL, privateKey: key, clientCertificate: cert, {san}, insecureSkipVerify: true")),
            Refused("cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true"),
        ),
    ];
    assert_eq!(cases.len(), 25, "every case of TestValidateDestinationRule");
    run(&cases);
}
