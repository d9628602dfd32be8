//! Secrets of `type: kubernetes.io/tls`, HTTPS listeners and Istio
//! `SIMPLE` servers: what is read, refused and reported, without root
//! (the certificate and keys below were made once with openssl:
//! `req -x509 -newkey ec ... -days 36500 -subj /CN=a.example.com`).

use serde_json::Value;

use super::tls_route_tests::{model_of, resolved};
use crate::model::{RoutingModel, StatusKey};

const CERT: &str = "\
-----BEGIN CERTIFICATE-----
MIIBojCCAUegAwIBAgIUfPzO4WBo1coHqIjpSmHpQTWh1zcwCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNYS5leGFtcGxlLmNvbTAgFw0yNjEyMDcxNTI0MzlaGA8yMTI2
MTExMzE1MjQzOVowGDEWMBQGA1UEAwwNYS5leGFtcGxlLmNvbTBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABFw8aQaTlnbGYgrohKL2Cs67ugtUcRM7yL1mv+IpW+wu
Lqlp2gnFSnWwyM2sVRh0WeTOBqdbzVqswzPgpS2D22SjbTBrMB0GA1UdDgQWBBSE
sP+OgX+5IbuFeIACbUjfaUVobTAfBgNVHSMEGDAWgBSEsP+OgX+5IbuFeIACbUjf
aUVobTAPBgNVHRMBAf8EBTADAQH/MBgGA1UdEQQRMA+CDWEuZXhhbXBsZS5jb20w
CgYIKoZIzj0EAwIDSQAwRgIhAK7izTYs6Fgvd5NR8zlpKh1Dlu2F/dHpmiAz655w
HG7HAiEA/PHmGTFXA8zs3rkV0bhTBCl2DFLE+diaswvdR4LBnNM=
-----END CERTIFICATE-----";

const KEY: &str = "\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg7QMPrPp+y/ekhLR/
ev59s/5P4zdOtWA6YVyadHFMJyihRANCAARcPGkGk5Z2xmIK6ISi9grOu7oLVHET
O8i9Zr/iKVvsLi6padoJxUp1sMjNrFUYdFnkzganW81arMMz4KUtg9tk
-----END PRIVATE KEY-----";

/// Another key: it does not match `CERT`.
const OTHER_KEY: &str = "\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgqtlcSk841kz4lWvV
oeinjRYfmEMtC7dNddg5sEjMXv6hRANCAATJrJ4Qv+nSZ4b8WrqFC9Ku5ifvIdYD
QPmxWqw2nonBY01t04onjGJc88axpYLZdMVsFQZwK7BBpyMacsi0ev1S
-----END PRIVATE KEY-----";

/// A Secret `name` in `namespace` with `crt` and `key` in `stringData`.
fn secret(namespace: &str, name: &str, crt: &str, key: &str) -> String {
    let block = |text: &str| {
        text.lines()
            .map(|line| format!("    {line}\n"))
            .collect::<Vec<_>>()
            .concat()
    };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        block(crt),
        block(key)
    )
}

/// The backends and an HTTPRoute on `gateway`'s listener `https`.
const ROUTE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{name: http, port: 80, appProtocol: http}], selector: {app: web}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web}
spec: {address: 127.0.0.1, ports: {http: 18080}, labels: {app: web}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
";

/// A Gateway `gw` in `default` with an HTTPS listener on 8443 whose
/// `certificateRefs` are `refs`.
fn gateway(refs: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\n\
         spec:\n  gatewayClassName: istio\n  listeners:\n  - name: https\n    port: 8443\n    \
         protocol: HTTPS\n    allowedRoutes: {{namespaces: {{from: All}}}}\n    \
         tls: {{certificateRefs: {refs}}}\n"
    )
}

fn grant(namespace: &str, to_name: Option<&str>) -> String {
    let name = to_name.map_or(String::new(), |n| format!(", name: {n}"));
    format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
         metadata: {{name: g, namespace: {namespace}}}\nspec:\n  \
         from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}}]\n  \
         to: [{{group: '', kind: Secret{name}}}]\n"
    )
}

fn join(parts: &[&str]) -> String {
    parts.join("---\n")
}

/// The listener `https`'s `(type, status, reason)` conditions.
fn listener_conditions(model: &RoutingModel) -> Vec<(String, String, String)> {
    let status = &model.gateway_api_status[&StatusKey {
        kind: super::GATEWAY_KIND.to_owned(),
        namespace: "default".to_owned(),
        name: "gw".to_owned(),
    }];
    status["listeners"][0]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (text("type"), text("status"), text("reason"))
        })
        .collect()
}

fn https_listener(model: &RoutingModel) -> Option<&crate::model::HttpListener> {
    model
        .http
        .iter()
        .find(|l| l.key == "gateway default/gw port 8443")
}

fn ok() -> Vec<(String, String, String)> {
    conditions(&[
        ("Accepted", "True", "Accepted"),
        ("Programmed", "True", "Programmed"),
        ("ResolvedRefs", "True", "ResolvedRefs"),
    ])
}

fn unresolved(reason: &str) -> Vec<(String, String, String)> {
    conditions(&[
        ("Accepted", "True", "Accepted"),
        ("Programmed", "False", "Invalid"),
        ("ResolvedRefs", "False", reason),
    ])
}

fn conditions(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
        .collect()
}

#[test]
fn an_https_listener_serves_its_secret_and_the_routes_attached() {
    let model = model_of(&join(&[
        &secret("default", "cert", CERT, KEY),
        &gateway("[{name: cert}]"),
        ROUTE,
    ]));
    let listener = https_listener(&model).expect("the HTTPS listener");
    let tls = listener.tls.as_ref().expect("TLS terminated");
    assert_eq!(tls.certificates.len(), 1);
    assert_eq!(tls.certificates[0].secret, "default/cert");
    assert_eq!(tls.certificates[0].hosts, ["*"]);
    // A Gateway API listener answers misdirected requests 421.
    assert!(tls.misdirected);
    assert_eq!(tls.certificates[0].certificate.chain_pem.trim_end(), CERT);
    assert_eq!(
        listener.virtual_hosts.len(),
        1,
        "the HTTPRoute is served there"
    );
    assert_eq!(listener_conditions(&model), ok());
    assert!(
        !format!("{model:?}").contains("PRIVATE KEY"),
        "the key is not in the model's Debug"
    );
}

/// `GatewaySecretReferenceGrant` (and its `-all-in-namespace` form), then
/// `GatewaySecretMissingReferenceGrant` and
/// `GatewaySecretInvalidReferenceGrant`: a certificate of another
/// namespace is served with a grant from Gateways of the listener's
/// namespace to that Secret (or every Secret), else `RefNotPermitted`.
#[test]
fn a_secret_of_another_namespace_needs_a_reference_grant() {
    let other = "[{name: cert, namespace: web-backend}]";
    let cases = [
        (
            "a grant for that Secret",
            Some(grant("web-backend", Some("cert"))),
            ok(),
        ),
        (
            "a grant for every Secret",
            Some(grant("web-backend", None)),
            ok(),
        ),
        ("no grant", None, unresolved("RefNotPermitted")),
        (
            "a grant for another Secret",
            Some(grant("web-backend", Some("not-cert"))),
            unresolved("RefNotPermitted"),
        ),
        (
            "a grant in the wrong namespace",
            Some(grant("default", Some("cert"))),
            unresolved("RefNotPermitted"),
        ),
    ];
    for (what, grant, expected) in cases {
        let mut parts = vec![secret("web-backend", "cert", CERT, KEY), gateway(other)];
        parts.extend(grant);
        parts.push(ROUTE.to_owned());
        let model = model_of(&parts.join("---\n"));
        assert_eq!(listener_conditions(&model), expected, "{what}");
        assert_eq!(
            https_listener(&model).is_some(),
            expected == ok(),
            "{what}: served only with its certificate"
        );
    }
}

/// `GatewayInvalidTLSConfiguration`: a Secret that does not exist, a
/// reference of another group or kind: `InvalidCertificateRef`, and the
/// listener is not served. (Its malformed Secret is refused when read:
/// `secrets_are_checked_and_each_refusal_names_the_field`.)
#[test]
fn certificate_refs_that_cannot_be_used_are_reported() {
    for (what, refs) in [
        (
            "nonexistent secret",
            "[{group: '', kind: Secret, name: nonexistent-certificate}]",
        ),
        (
            "unsupported group",
            "[{group: wrong.group.company.io, kind: Secret, name: cert}]",
        ),
        (
            "unsupported kind",
            "[{group: '', kind: WrongKind, name: cert}]",
        ),
    ] {
        let model = model_of(&join(&[
            &secret("default", "cert", CERT, KEY),
            &gateway(refs),
            ROUTE,
        ]));
        assert_eq!(
            listener_conditions(&model),
            unresolved("InvalidCertificateRef"),
            "{what}"
        );
        assert!(https_listener(&model).is_none(), "{what}: not served");
    }
    // A plain HTTP listener has no certificate to resolve: its conditions
    // stay true.
    let model = model_of(&join(&[
        &gateway("[{name: cert}]").replace(
            "  listeners:\n",
            "  listeners:\n  - {name: http, port: 8080, protocol: HTTP}\n",
        ),
        &secret("default", "cert", CERT, KEY),
        ROUTE,
    ]));
    let status = &model.gateway_api_status[&StatusKey {
        kind: super::GATEWAY_KIND.to_owned(),
        namespace: "default".to_owned(),
        name: "gw".to_owned(),
    }];
    for listener in status["listeners"].as_array().expect("listeners") {
        for condition in listener["conditions"].as_array().expect("conditions") {
            assert_eq!(condition["status"], "True", "{listener}");
        }
    }
}

#[test]
fn secrets_are_checked_and_each_refusal_names_the_field() {
    let refused = |text: &str| resolved(text).err().unwrap_or_default().join("\n");
    let cases = [
        (
            "a malformed certificate (GatewayInvalidTLSConfiguration's)",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: malformed-certificate}\n\
             type: kubernetes.io/tls\ndata: {tls.crt: SGVsbG8gd29ybGQK, tls.key: SGVsbG8gd29ybGQK}\n"
                .to_owned(),
            "data.tls.crt: tls.crt holds no PEM certificate",
        ),
        (
            "a key that does not match",
            secret("default", "s", CERT, OTHER_KEY),
            "stringData.tls.key: tls.key: the private key does not match the first certificate's public key",
        ),
        (
            "no key",
            secret("default", "s", CERT, "").replace("  tls.key: |\n", ""),
            "data.tls.key: tls.key is required in a kubernetes.io/tls Secret",
        ),
        (
            "not base64",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\n\
             data: {tls.crt: '%%%', tls.key: '%%%'}\n"
                .to_owned(),
            "data.tls.crt: tls.crt is not base64 of PEM text",
        ),
        (
            "another type",
            secret("default", "s", CERT, KEY).replace("kubernetes.io/tls", "Opaque"),
            "type: Secret type \"Opaque\" is not read: only type kubernetes.io/tls",
        ),
        (
            "HTTPS with Passthrough",
            join(&[&gateway("[{name: cert}]").replace("tls: {", "tls: {mode: Passthrough, ")]),
            "spec.listeners[0].tls.mode: tls mode must be Terminate for protocol HTTPS",
        ),
        (
            "HTTPS without certificateRefs",
            gateway("[]"),
            "spec.listeners[0].tls.certificateRefs: certificateRefs is required in Terminate mode",
        ),
    ];
    for (what, text, expected) in cases {
        let errors = refused(&text);
        assert!(
            errors.contains(expected),
            "{what}: expected {expected:?} in {errors}"
        );
        for secret_text in [KEY, OTHER_KEY] {
            let body = secret_text.lines().nth(1).expect("a key line");
            assert!(
                !errors.contains(body),
                "{what}: no key material in the message"
            );
        }
    }
}

#[test]
fn get_shows_a_secrets_keys_redacted() {
    let mut document: Value = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "data": {"tls.crt": "Q0VSVA==", "tls.key": "S0VZ"},
        "stringData": {"tls.key": KEY},
    });
    super::redact(&mut document);
    assert_eq!(
        document["data"],
        serde_json::json!({"tls.crt": "<redacted>", "tls.key": "<redacted>"})
    );
    assert_eq!(
        document["stringData"],
        serde_json::json!({"tls.key": "<redacted>"})
    );
}

/// Istio's form: HTTPS servers in `SIMPLE` mode with a `credentialName`
/// of the Gateway's namespace, their certificates by host on one port; a
/// name that is no Secret is refused, naming the field.
#[test]
fn istio_simple_servers_terminate_with_their_credential() {
    let istio = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 8443, name: https-a, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, credentialName: cert}
  - port: {number: 8443, name: https-b, protocol: HTTPS}
    hosts: ['ns/*.b.example.com']
    tls: {mode: SIMPLE, credentialName: cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [a.example.com]
  gateways: [gw]
  http: [{route: [{destination: {host: web.default.svc.cluster.local, port: {number: 80}}}]}]
";
    let text = join(&[
        &secret("default", "cert", CERT, KEY),
        istio,
        ROUTE
            .split("---\napiVersion: gateway")
            .next()
            .expect("the Service"),
    ]);
    let model = model_of(&text);
    let tls = https_listener(&model)
        .and_then(|l| l.tls.as_ref())
        .expect("the server's TLS");
    let hosts: Vec<&[String]> = tls.certificates.iter().map(|c| &c.hosts[..]).collect();
    assert_eq!(
        hosts,
        [
            &["a.example.com".to_owned()][..],
            &["*.b.example.com".to_owned()][..]
        ]
    );
    let errors =
        resolved(&text.replace("credentialName: cert}\n---", "credentialName: none}\n---"))
            .err()
            .unwrap_or_default()
            .join("\n");
    assert!(
        errors.contains("spec.servers[1].tls.credentialName: Secret default/none is not defined"),
        "{errors}"
    );
}

/// An Istio `SIMPLE` server routes by authority alone (Envoy gives each
/// server its own routes; no 421): only a Gateway API listener checks
/// that the authority is its SNI's listener's.
#[test]
fn an_istio_simple_server_does_not_answer_misdirected_requests() {
    let text = join(&[
        &secret("default", "cert", CERT, KEY),
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.example]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
",
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-gw}
spec:
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: SIMPLE, credentialName: cert}
",
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: ['*']
  gateways: [istio-gw]
  http: [{route: [{destination: {host: web.example}}]}]
",
    ]);
    let model = model_of(&text);
    let listener = model
        .http
        .iter()
        .find(|l| l.tls.is_some())
        .expect("the HTTPS server's listener");
    let tls = listener.tls.as_ref().expect("TLS terminated");
    assert!(!tls.misdirected, "{:?}", listener.key);
}
