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

/// `testdata/crds/destinationrule-{valid,invalid}.yaml`; `_err` is the
/// CRD's message, ours carry the field and the bound (noted per case).
#[test]
fn istio_destination_rule_crd_fixtures() {
    let ratings = |policy: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: bookinfo-ratings\nspec:\n  host: ratings.prod.svc.cluster.local\n  trafficPolicy:\n{policy}"
        )
    };
    let warmup = |fields: &str| ratings(&format!("    loadBalancer:\n      warmup:\n{fields}"));
    let cases = [
        case(
            "destinationrule-valid.yaml/warmup duration",
            warmup("        duration: 300s\n"),
            Valid,
        ),
        case(
            "destinationrule-valid.yaml/warmup minimumPercent",
            warmup("        duration: 300s\n        minimumPercent: 5.0\n"),
            Valid,
        ),
        case(
            "destinationrule-valid.yaml/warmup aggression",
            warmup(
                "        duration: 300s\n        minimumPercent: 5.0\n        aggression: 5.0\n",
            ),
            Valid,
        ),
        case(
            "destinationrule-valid.yaml/bookinfo-ratings-http2-ping",
            ratings(
                "    connectionPool:\n      http:\n        http2KeepAlive:\n          interval: 15s\n          timeout: 5s\n",
            ),
            Valid,
        ),
        // CRD: "spec.trafficPolicy.loadBalancer.warmup.minimumPercent: Invalid value".
        case(
            "destinationrule-invalid.yaml/warmup minimumPercent 150",
            warmup("        duration: 300s\n        minimumPercent: 150.0\n"),
            Refused("minimumPercent value should be less than or equal to 100"),
        ),
        // CRD: "spec.trafficPolicy.loadBalancer.warmup.duration: Required value".
        case(
            "destinationrule-invalid.yaml/warmup without duration",
            warmup("        minimumPercent: 5.0\n"),
            Refused("duration is required"),
        ),
        // CRD: "spec.trafficPolicy.loadBalancer.warmup.aggression: Invalid value".
        case(
            "destinationrule-invalid.yaml/warmup aggression -0.1",
            warmup("        duration: 300s\n        aggression: -0.1\n"),
            Refused("aggression should be greater than 0"),
        ),
    ];
    run(&cases);
}
