//! `TestValidateGateway`, `TestValidateServer`, `TestValidateServerPort`
//! and `TestValidateTlsOptions` (Istio's `ValidateGateway`,
//! `validateServer`, `validateServerPort`, `validateTLSOptions`). The
//! server, port and TLS cases are written inside a Gateway of one server
//! (Istio's tests call the inner functions on their own).

use super::{
    Case,
    Verdict::{Refused, Valid, Warns},
    case, document, run,
};

fn gw(servers: &str) -> String {
    document("Gateway", &format!("  servers:\n{servers}"))
}

/// `TestValidateGateway`; its case "invalid message" (a `Server` given
/// where a `Gateway` is expected, a Go type error) has no YAML form.
#[test]
fn istio_validate_gateway() {
    let t = |name: &'static str, servers: &str, verdict| case(name, gw(servers), verdict);
    let cases = [
        case(
            "TestValidateGateway/empty",
            document("Gateway", "  {}\n"),
            Refused("gateway must have at least one server"),
        ),
        t(
            "TestValidateGateway/happy domain",
            "  - {hosts: [foo.bar.com], port: {name: name1, number: 7, protocol: http}}\n",
            Valid,
        ),
        t(
            "TestValidateGateway/happy multiple servers",
            "  - {hosts: [foo.bar.com], port: {name: name1, number: 7, protocol: http}}\n",
            Valid,
        ),
        t(
            "TestValidateGateway/happy k8s gateway-api server with no attached routes",
            "  - {hosts: [\"~/foo.bar.com\"], port: {name: name1, number: 7, protocol: http}}\n",
            Refused("invalid namespace value"),
        ),
        t(
            "TestValidateGateway/invalid port",
            "  - {hosts: [foo.bar.com], port: {name: name1, number: 66000, protocol: http}}\n",
            Refused("port number 66000 must be in the range 1..65535"),
        ),
        t(
            "TestValidateGateway/duplicate port names",
            "  - {hosts: [foo.bar.com], port: {name: foo, number: 80, protocol: http}}\n  - {hosts: [scooby.doo.com], port: {name: foo, number: 8080, protocol: http}}\n",
            Refused("port names in servers must be unique: duplicate name foo"),
        ),
        t(
            "TestValidateGateway/invalid domain",
            "  - {hosts: [foo.*.bar.com], port: {number: 7, protocol: http}}\n",
            Refused("domain name \"foo.*.bar.com\" invalid (label \"*\" invalid)"),
        ),
        t(
            "TestValidateGateway/valid httpsRedirect",
            "  - {hosts: [bar.com], port: {name: http, number: 80, protocol: http}, tls: {httpsRedirect: true}}\n",
            Valid,
        ),
        t(
            "TestValidateGateway/invalid https httpsRedirect",
            "  - {hosts: [bar.com], port: {name: https, number: 80, protocol: https}, tls: {httpsRedirect: true}}\n",
            Warns("tls.httpsRedirect should only be used with http servers"),
        ),
        t(
            "TestValidateGateway/invalid partial wildcard",
            "  - {hosts: [\"*bar.com\"], port: {name: tls, number: 443, protocol: tls}, tls: {mode: ISTIO_MUTUAL}}\n",
            Refused("partial wildcard \"*bar.com\" not allowed"),
        ),
    ];
    assert_eq!(cases.len(), 10, "TestValidateGateway's cases but one");
    run(&cases);
}

/// `TestValidateServer`: each server alone in a Gateway.
#[test]
fn istio_validate_server() {
    let t = |name: &'static str, server: &str, verdict| {
        case(name, gw(&format!("  - {server}\n")), verdict)
    };
    let http7 = "port: {number: 7, name: http, protocol: http}";
    let cases = [
        t(
            "TestValidateServer/empty (host)",
            "{}",
            Refused("server config must contain at least one host"),
        ),
        t(
            "TestValidateServer/empty (port)",
            "{}",
            Refused("port is required"),
        ),
        t(
            "TestValidateServer/happy",
            &format!("{{hosts: [foo.bar.com], {http7}}}"),
            Valid,
        ),
        t(
            "TestValidateServer/happy ip",
            &format!("{{hosts: [1.1.1.1], {http7}}}"),
            Valid,
        ),
        t(
            "TestValidateServer/happy ns/name",
            &format!("{{hosts: [ns1/foo.bar.com], {http7}}}"),
            Valid,
        ),
        t(
            "TestValidateServer/happy */name",
            &format!("{{hosts: [\"*/foo.bar.com\"], {http7}}}"),
            Valid,
        ),
        t(
            "TestValidateServer/happy ./name",
            &format!("{{hosts: [./foo.bar.com], {http7}}}"),
            Valid,
        ),
        t(
            "TestValidateServer/invalid ~/name",
            &format!("{{hosts: [\"~/foo.bar.com\"], {http7}}}"),
            Refused("namespace"),
        ),
        t(
            "TestValidateServer/invalid domain ns/name format",
            &format!("{{hosts: [\"ns1/foo.*.bar.com\"], {http7}}}"),
            Refused("domain name \"foo.*.bar.com\" invalid"),
        ),
        t(
            "TestValidateServer/invalid domain",
            &format!("{{hosts: [\"foo.*.bar.com\"], {http7}}}"),
            Refused("domain name \"foo.*.bar.com\" invalid"),
        ),
        t(
            "TestValidateServer/invalid short name host",
            &format!("{{hosts: [foo], {http7}}}"),
            Refused("short names (non FQDN) are not allowed"),
        ),
        t(
            "TestValidateServer/invalid port",
            "{hosts: [foo.bar.com], port: {number: 66000, name: http, protocol: http}}",
            Refused("port number 66000 must be in the range 1..65535"),
        ),
        t(
            "TestValidateServer/invalid tls options",
            "{hosts: [foo.bar.com], port: {number: 1, name: http, protocol: http}, tls: {mode: SIMPLE}}",
            Refused("TLS"),
        ),
        t(
            "TestValidateServer/no tls on HTTPS",
            "{hosts: [foo.bar.com], port: {number: 10000, name: https, protocol: https}}",
            Refused("server must have TLS settings for HTTPS/TLS protocols"),
        ),
        t(
            "TestValidateServer/tls on HTTP",
            "{hosts: [foo.bar.com], port: {number: 10000, name: http, protocol: http}, tls: {mode: SIMPLE}}",
            Refused("server cannot have TLS settings for plain text HTTP ports"),
        ),
        t(
            "TestValidateServer/tls redirect on HTTP",
            "{hosts: [foo.bar.com], port: {number: 10000, name: http, protocol: http}, tls: {httpsRedirect: true}}",
            Valid,
        ),
        t(
            "TestValidateServer/bind ip",
            &format!("{{hosts: [foo.bar.com], {http7}, bind: 127.0.0.1}}"),
            Valid,
        ),
        t(
            "TestValidateServer/bind unix path with invalid port",
            &format!("{{hosts: [foo.bar.com], {http7}, bind: \"unix://@foobar\"}}"),
            Refused("port number must be 0 for unix domain socket"),
        ),
        t(
            "TestValidateServer/bind unix path",
            "{hosts: [foo.bar.com], port: {number: 0, name: http, protocol: http}, bind: \"unix://@foobar\"}",
            Valid,
        ),
        t(
            "TestValidateServer/bind bad ip",
            "{hosts: [foo.bar.com], port: {number: 0, name: http, protocol: http}, bind: foo.bar}",
            Refused("foo.bar is not a valid IP"),
        ),
    ];
    assert_eq!(cases.len(), 20, "every case of TestValidateServer");
    run(&cases);
}

/// `TestValidateServerPort`: each port on a server of host `foo.bar.com`.
#[test]
fn istio_validate_server_port() {
    let t = |name: &'static str, port: &str, bind: &str, verdict| {
        case(
            name,
            gw(&format!(
                "  - {{hosts: [foo.bar.com], port: {port}{bind}}}\n"
            )),
            verdict,
        )
    };
    let cases = [
        t(
            "TestValidateServerPort/empty (protocol)",
            "{}",
            "",
            Refused("invalid protocol"),
        ),
        t(
            "TestValidateServerPort/empty (name)",
            "{}",
            "",
            Refused("port name must be set"),
        ),
        t(
            "TestValidateServerPort/happy",
            "{protocol: http, number: 1, name: Henry}",
            "",
            Valid,
        ),
        t(
            "TestValidateServerPort/invalid protocol",
            "{protocol: kafka, number: 1, name: Henry}",
            "",
            Refused("invalid protocol \"kafka\""),
        ),
        t(
            "TestValidateServerPort/invalid number",
            "{protocol: http, number: 1073741824, name: http}",
            "",
            Refused("port number 1073741824 must be in the range 1..65535"),
        ),
        t(
            "TestValidateServerPort/name, no number",
            "{protocol: http, number: 0, name: Henry}",
            "",
            Refused("port number 0 must be in the range 1..65535"),
        ),
        t(
            "TestValidateServerPort/name, no number, uds",
            "{protocol: http, number: 0, name: Henry}",
            ", bind: \"uds:///tmp\"",
            Refused("port number 0 must be in the range 1..65535"),
        ),
    ];
    assert_eq!(cases.len(), 7, "every case of TestValidateServerPort");
    run(&cases);
}

/// `TestValidateTlsOptions`: each `tls` on an HTTPS server (where TLS
/// settings belong).
#[test]
fn istio_validate_tls_options() {
    let t = |name: &'static str, tls: &str, verdict| -> Case {
        case(
            name,
            gw(&format!(
                "  - hosts: [foo.bar.com]\n    port: {{number: 443, name: https, protocol: HTTPS}}\n    tls: {tls}\n"
            )),
            verdict,
        )
    };
    let (cert, key, ca) = (
        "serverCertificate: Captain Jean-Luc Picard",
        "privateKey: Khan Noonien Singh",
        "caCertificates: Commander William T. Riker",
    );
    let three = "tlsCertificates: [{serverCertificate: Captain Jean-Luc Picard, privateKey: Khan Noonien Singh}, {serverCertificate: Commander William T. Riker, privateKey: Commander William T. Riker}, {serverCertificate: Lieutenant Commander Data, privateKey: Lieutenant Commander Data}]";
    let two = "tlsCertificates: [{serverCertificate: Captain Jean-Luc Picard, privateKey: Khan Noonien Singh}, {serverCertificate: Lieutenant Commander Data, privateKey: Lieutenant Commander Data}]";
    let no_cert = "tlsCertificates: [{privateKey: Commander William T. Riker}, {serverCertificate: Commander William T. Riker, privateKey: Commander William T. Riker}]";
    let no_key = "tlsCertificates: [{serverCertificate: Captain Jean-Luc Picard}, {serverCertificate: Commander William T. Riker, privateKey: Commander William T. Riker}]";
    let cases = [
        t("TestValidateTlsOptions/empty", "{}", Valid),
        t(
            "TestValidateTlsOptions/simple",
            &format!("{{mode: SIMPLE, {cert}, {key}}}"),
            Valid,
        ),
        t(
            "TestValidateTlsOptions/simple with client bundle",
            &format!("{{mode: SIMPLE, {cert}, {key}, {ca}}}"),
            Valid,
        ),
        t(
            "TestValidateTlsOptions/simple sds with client bundle",
            "{mode: SIMPLE, credentialName: sds-name}",
            Valid,
        ),
        t(
            "TestValidateTlsOptions/simple sds with client bundle but with server cert",
            &format!("{{mode: SIMPLE, {cert}, {key}, credentialName: sds-name}}"),
            Refused(
                "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified",
            ),
        ),
        t(
            "TestValidateTlsOptions/simple no server cert",
            &format!("{{mode: SIMPLE, serverCertificate: \"\", {key}}}"),
            Refused("SIMPLE TLS requires a server certificate"),
        ),
        t(
            "TestValidateTlsOptions/simple no private key",
            &format!("{{mode: SIMPLE, {cert}, privateKey: \"\"}}"),
            Refused("SIMPLE TLS requires a private key"),
        ),
        t(
            "TestValidateTlsOptions/simple more than 2 certs",
            &format!("{{mode: SIMPLE, {three}}}"),
            Warns("SIMPLE TLS can support up to 2 server certificates"),
        ),
        t(
            "TestValidateTlsOptions/simple with both server cert and tls certs",
            &format!("{{mode: SIMPLE, {cert}, {key}, {two}}}"),
            Refused("only one of credential_name, credential_names"),
        ),
        t(
            "TestValidateTlsOptions/simple 2 certs with missing certificate",
            &format!("{{mode: SIMPLE, {no_cert}}}"),
            Refused("SIMPLE TLS requires a server certificate"),
        ),
        t(
            "TestValidateTlsOptions/simple 2 certs with missing private key",
            &format!("{{mode: SIMPLE, {no_key}}}"),
            Refused("SIMPLE TLS requires a private key"),
        ),
        t(
            "TestValidateTlsOptions/simple sds no server cert",
            &format!("{{mode: SIMPLE, serverCertificate: \"\", {key}, credentialName: sds-name}}"),
            Valid,
        ),
        t(
            "TestValidateTlsOptions/simple sds no private key",
            &format!("{{mode: SIMPLE, {cert}, privateKey: \"\", credentialName: sds-name}}"),
            Valid,
        ),
        t(
            "TestValidateTlsOptions/mutual",
            &format!("{{mode: MUTUAL, {cert}, {key}, {ca}}}"),
            Valid,
        ),
        t(
            "TestValidateTlsOptions/mutual sds",
            &format!("{{mode: MUTUAL, {ca}, credentialName: sds-name}}"),
            Valid,
        ),
        t(
            "TestValidateTlsOptions/mutual sds with credential name and server cert",
            &format!("{{mode: MUTUAL, {cert}, {key}, {ca}, credentialName: sds-name}}"),
            Refused("only one of credential_name, credential_names"),
        ),
        t(
            "TestValidateTlsOptions/mutual sds with credential name and tls certs",
            &format!(
                "{{mode: MUTUAL, {ca}, tlsCertificates: [{{{cert}, {key}}}], credentialName: sds-name}}"
            ),
            Refused("only one of credential_name, credential_names"),
        ),
        t(
            "TestValidateTlsOptions/mutual no server cert",
            &format!("{{mode: MUTUAL, serverCertificate: \"\", {key}, {ca}}}"),
            Refused("MUTUAL TLS requires a server certificate"),
        ),
        t(
            "TestValidateTlsOptions/credential names and certificates",
            "{mode: MUTUAL, serverCertificate: /etc/istio/certs/server/cert, privateKey: /etc/istio/certs/server/key, credentialNames: [server-certs]}",
            Refused("only one of credential_name, credential_names"),
        ),
        t(
            "TestValidateTlsOptions/credential names and tls certificates",
            "{mode: MUTUAL, tlsCertificates: [{serverCertificate: /etc/istio/certs/server/cert, privateKey: /etc/istio/certs/server/key, caCertificates: /etc/istio/certs/server/cacert2}], credentialNames: [server-certs]}",
            Refused("only one of credential_name, credential_names"),
        ),
        t(
            "TestValidateTlsOptions/only tls certificates",
            "{mode: MUTUAL, tlsCertificates: [{serverCertificate: /etc/istio/certs/server/cert, privateKey: /etc/istio/certs/server/key}], caCertificates: /etc/istio/certs/server/cacert2}",
            Valid,
        ),
        t(
            "TestValidateTlsOptions/mutual sds no server cert",
            &format!(
                "{{mode: MUTUAL, serverCertificate: \"\", {key}, {ca}, credentialName: sds-name}}"
            ),
            Valid,
        ),
        t(
            "TestValidateTlsOptions/mutual no client CA bundle",
            &format!("{{mode: MUTUAL, {cert}, {key}, caCertificates: \"\"}}"),
            Refused("MUTUAL TLS requires a client CA bundle"),
        ),
        t(
            "TestValidateTlsOptions/mutual no certs (server certificate)",
            "{mode: MUTUAL, serverCertificate: \"\", privateKey: \"\", caCertificates: \"\"}",
            Refused("MUTUAL TLS requires a server certificate"),
        ),
        t(
            "TestValidateTlsOptions/mutual no certs (private key)",
            "{mode: MUTUAL, serverCertificate: \"\", privateKey: \"\", caCertificates: \"\"}",
            Refused("MUTUAL TLS requires a private key"),
        ),
        t(
            "TestValidateTlsOptions/mutual no certs (client CA bundle)",
            "{mode: MUTUAL, serverCertificate: \"\", privateKey: \"\", caCertificates: \"\"}",
            Refused("MUTUAL TLS requires a client CA bundle"),
        ),
        t(
            "TestValidateTlsOptions/mutual more than 2 certs",
            &format!("{{mode: MUTUAL, {ca}, {three}}}"),
            Warns("MUTUAL TLS can support up to 2 server certificates"),
        ),
        t(
            "TestValidateTlsOptions/mutual with both server cert and tls certs",
            &format!("{{mode: MUTUAL, {cert}, {key}, {ca}, {two}}}"),
            Refused("only one of credential_name, credential_names"),
        ),
        t(
            "TestValidateTlsOptions/mutual 2 certs with missing certificate",
            &format!("{{mode: MUTUAL, caCertificates: Lieutenant Commander Data, {no_cert}}}"),
            Refused("MUTUAL TLS requires a server certificate"),
        ),
        t(
            "TestValidateTlsOptions/mutual 2 certs with missing private key",
            &format!("{{mode: MUTUAL, caCertificates: Lieutenant Commander Data, {no_key}}}"),
            Refused("MUTUAL TLS requires a private key"),
        ),
        t(
            "TestValidateTlsOptions/mutual 2 certs with missing CA certificate",
            &format!("{{mode: MUTUAL, {two}}}"),
            Refused("MUTUAL TLS requires a client CA bundle"),
        ),
        t(
            "TestValidateTlsOptions/optional mutual no certs (server certificate)",
            "{mode: OPTIONAL_MUTUAL, serverCertificate: \"\", privateKey: \"\", caCertificates: \"\"}",
            Refused("MUTUAL TLS requires a server certificate"),
        ),
        t(
            "TestValidateTlsOptions/optional mutual no certs (private key)",
            "{mode: OPTIONAL_MUTUAL, serverCertificate: \"\", privateKey: \"\", caCertificates: \"\"}",
            Refused("MUTUAL TLS requires a private key"),
        ),
        t(
            "TestValidateTlsOptions/optional mutual no certs (client CA bundle)",
            "{mode: OPTIONAL_MUTUAL, serverCertificate: \"\", privateKey: \"\", caCertificates: \"\"}",
            Refused("MUTUAL TLS requires a client CA bundle"),
        ),
        t(
            "TestValidateTlsOptions/pass through sds no certs",
            "{mode: PASSTHROUGH, serverCertificate: \"\", caCertificates: \"\", credentialName: sds-name}",
            Warns("PASSTHROUGH mode does not use certificates"),
        ),
        t(
            "TestValidateTlsOptions/pass through sds crl",
            "{mode: PASSTHROUGH, serverCertificate: \"\", caCertificates: \"\", caCrl: scrl}",
            Warns("PASSTHROUGH mode does not use certificates"),
        ),
        t(
            "TestValidateTlsOptions/istio_mutual no certs",
            "{mode: ISTIO_MUTUAL, serverCertificate: \"\", privateKey: \"\", caCertificates: \"\"}",
            Valid,
        ),
        t(
            "TestValidateTlsOptions/istio_mutual with server cert",
            &format!("{{mode: ISTIO_MUTUAL, {cert}}}"),
            Refused("ISTIO_MUTUAL TLS cannot have associated server cert"),
        ),
        t(
            "TestValidateTlsOptions/istio_mutual with client bundle",
            &format!("{{mode: ISTIO_MUTUAL, {cert}, {key}, {ca}}}"),
            Refused("ISTIO_MUTUAL TLS cannot have associated"),
        ),
        t(
            "TestValidateTlsOptions/istio_mutual with private key",
            &format!("{{mode: ISTIO_MUTUAL, {key}}}"),
            Refused("ISTIO_MUTUAL TLS cannot have associated private key"),
        ),
        t(
            "TestValidateTlsOptions/istio_mutual with credential name",
            "{mode: ISTIO_MUTUAL, credentialName: some-cred}",
            Refused("ISTIO_MUTUAL TLS cannot have associated credentialName"),
        ),
        t(
            "TestValidateTlsOptions/invalid cipher suites",
            "{mode: SIMPLE, credentialName: sds-name, cipherSuites: [not-a-cipher-suite]}",
            Warns("ignoring invalid cipher suites: [not-a-cipher-suite]"),
        ),
        t(
            "TestValidateTlsOptions/valid cipher suites",
            "{mode: SIMPLE, credentialName: sds-name, cipherSuites: [ECDHE-ECDSA-AES128-SHA]}",
            Valid,
        ),
        t(
            "TestValidateTlsOptions/cipher suites operations",
            "{mode: SIMPLE, credentialName: sds-name, cipherSuites: [-ECDHE-ECDSA-AES128-SHA]}",
            Valid,
        ),
        t(
            "TestValidateTlsOptions/duplicate cipher suites",
            "{mode: SIMPLE, credentialName: sds-name, cipherSuites: [ECDHE-ECDSA-AES128-SHA, ECDHE-ECDSA-AES128-SHA]}",
            Warns("ignoring duplicate cipher suites: [ECDHE-ECDSA-AES128-SHA]"),
        ),
        t(
            "TestValidateTlsOptions/invalid cipher suites with invalid config",
            "{mode: SIMPLE, cipherSuites: [not-a-cipher-suite]}",
            Refused("SIMPLE TLS requires a private key"),
        ),
        t(
            "TestValidateTlsOptions/crl specified for SIMPLE TLS",
            "{mode: SIMPLE, caCrl: crl}",
            Refused("CRL is not supported with SIMPLE TLS"),
        ),
        t(
            "TestValidateTlsOptions/crl specified for CredentialName",
            "{mode: SIMPLE, caCrl: crl, credentialName: credential}",
            Valid,
        ),
        t(
            "TestValidateTlsOptions/mutual no server cert (2)",
            &format!("{{mode: MUTUAL, serverCertificate: \"\", {key}, {ca}}}"),
            Refused("MUTUAL TLS requires a server certificate"),
        ),
        t(
            "TestValidateTlsOptions/mutual no private key",
            "{mode: MUTUAL, serverCertificate: Khan Noonien Singh, privateKey: \"\", caCertificates: Commander William T. Riker}",
            Refused("MUTUAL TLS requires a private key"),
        ),
        t(
            "TestValidateTlsOptions/with CredentialNames",
            "{mode: MUTUAL, credentialNames: [credential1, credential2]}",
            Valid,
        ),
    ];
    assert_eq!(cases.len(), 51, "every case of TestValidateTlsOptions");
    run(&cases);
}
