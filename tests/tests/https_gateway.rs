//! End-to-end: TLS terminated at the gateway. An HTTPS listener (Gateway
//! API `protocol: HTTPS`, `certificateRefs`) or an Istio Gateway server
//! (`protocol: HTTPS`, `tls.mode: SIMPLE`, `credentialName`) takes real
//! TLS (a rustls client that trusts the test's CA alone, with SNI), the
//! agent's L7 proxy terminates it with the Secret's certificate chosen by
//! SNI, and serves the HTTP routes as on a plain HTTP listener: the
//! weighted picks are exact, and counted on /metrics.

use std::collections::BTreeMap;

use traffic_shift_tests::{
    Scenario,
    http_client::Response,
    metric,
    tls::{Certs, HttpsConn},
    try_metric,
};

const BOOKINFO: &str = "bookinfo-gateway-api";

/// A `kubernetes.io/tls` Secret of the leaf `leaf` of `certs`: the chain
/// in `data` (base64, as Kubernetes stores it), the key in `stringData`.
fn secret(certs: &Certs, name: &str, leaf: &str) -> String {
    let out = std::process::Command::new("base64")
        .args(["-w0"])
        .arg(certs.file(&format!("{leaf}.pem")))
        .output()
        .expect("run base64");
    assert!(out.status.success(), "base64");
    let chain = String::from_utf8(out.stdout).expect("base64 is text");
    let key = certs
        .text(&format!("{leaf}.key"))
        .lines()
        .map(|line| format!("    {line}\n"))
        .collect::<Vec<_>>()
        .concat();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\n\
         data:\n  tls.crt: {chain}\nstringData:\n  tls.key: |\n{key}"
    )
}

/// `n` GET `/reviews/1` over `connections` TLS connections (keep-alive) to
/// `addr` with SNI (and Host) `sni`, from the test's namespace: the
/// answers by version (`status N` for another status than 200), and the
/// DER of the certificate the gateway presented.
fn https_requests(
    s: &Scenario,
    certs: &Certs,
    addr: &str,
    sni: &str,
    n: usize,
    connections: usize,
) -> (BTreeMap<String, u64>, Vec<u8>) {
    let config = certs.client_config();
    let addr = addr.parse().expect("an address");
    s.netns.run_in(|| {
        let mut answers = BTreeMap::new();
        let mut presented = Vec::new();
        for c in 0..connections {
            let mut conn = HttpsConn::connect(&config, addr, sni)
                .unwrap_or_else(|e| panic!("TLS handshake with {addr} for {sni}: {e}"));
            presented = conn.peer_certificate();
            for i in 0..n / connections + usize::from(c < n % connections) {
                let response = conn
                    .get(sni, "/reviews/1")
                    .unwrap_or_else(|e| panic!("request {i}: {e}"));
                *answers.entry(answer(&response)).or_default() += 1;
            }
        }
        (answers, presented)
    })
}

/// The version of the backend that answered 200, else `status N`.
fn answer(response: &Response) -> String {
    if response.status == 200 {
        response.answer()
    } else {
        format!("status {}", response.status)
    }
}

/// GET `path` over TLS to `addr`, with SNI `sni` and `Host: host`.
fn get_over_tls(
    s: &Scenario,
    certs: &Certs,
    addr: &str,
    sni: &str,
    host: &str,
    path: &str,
) -> Response {
    let config = certs.client_config();
    let addr = addr.parse().expect("an address");
    s.netns.run_in(|| {
        HttpsConn::connect(&config, addr, sni)
            .and_then(|mut conn| conn.get(host, path))
            .unwrap_or_else(|e| panic!("GET {path} for {host}: {e}"))
    })
}

/// 1000 requests for `a.example.com` over 4 connections to `addr`:
/// exactly 800 to v1 and 200 to v2. The certificate presented.
fn split_80_20(s: &Scenario, certs: &Certs, addr: &str, what: &str) -> Vec<u8> {
    let (answers, presented) = https_requests(s, certs, addr, "a.example.com", 1000, 4);
    println!("{what}: 80/20 over 1000 requests: {answers:?}");
    assert_eq!(
        answers,
        counts(&[("v1", 800), ("v2", 200)]),
        "{what}: 80/20 over 1000 requests, exactly"
    );
    presented
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// A Gateway API Gateway `https-gateway` with `listeners` on 8443, the
/// Secrets `a` (leaf `a`: `a.example.com`) and `b` (leaf `b`:
/// `b.example.net`), and `routes`.
fn gateway_api(certs: &Certs, listeners: &str, routes: &str) -> String {
    format!(
        "{}---\n{}---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: https-gateway}}\nspec:\n  gatewayClassName: istio\n  listeners:\n\
         {listeners}{routes}",
        secret(certs, "a", "a"),
        secret(certs, "b", "b"),
    )
}

fn leaves(test: &str) -> Certs {
    let certs = Certs::new(test);
    certs.leaf("a", "a.example.com", &["a.example.com"]);
    certs.leaf("b", "b.example.net", &["b.example.net", "*.b.example.net"]);
    certs
}

/// An HTTPRoute 80/20 through an HTTPS listener: exactly 800/200 of 1000
/// requests over real TLS, and as many on /metrics; then two listeners of
/// one port with their own hostnames and Secrets: each SNI gets its own
/// certificate and its own route.
#[test]
fn an_https_listener_terminates_tls_and_splits_exactly() {
    let certs = leaves("https-gwapi");
    let listener = "  - name: https\n    port: 8443\n    protocol: HTTPS\n    \
                    tls: {certificateRefs: [{kind: Secret, group: '', name: a}]}\n";
    let route = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
                 metadata: {name: reviews-https}\nspec:\n  parentRefs: [{name: https-gateway}]\n  \
                 rules:\n  - backendRefs:\n    - {name: reviews-v1, port: 9080, weight: 80}\n    \
                 - {name: reviews-v2, port: 9080, weight: 20}\n";
    let mut s = Scenario::bookinfo_dir(
        "https-gwapi",
        BOOKINFO,
        &[("https.yaml", &gateway_api(&certs, listener, route))],
    );
    let presented = split_80_20(&s, &certs, "127.0.0.1:8443", "HTTPS listener");
    assert_eq!(presented, certs.der("a"), "the Secret's certificate");

    let version = |v: &'static str| {
        [
            (
                "destination_service",
                if v == "v1" {
                    "reviews-v1.default.svc.cluster.local"
                } else {
                    "reviews-v2.default.svc.cluster.local"
                },
            ),
            ("destination_version", v),
            ("response_code", "200"),
        ]
    };
    let page = s.agent.wait_metrics("the 1000 HTTPS requests", |page| {
        try_metric(page, "istio_requests_total", &version("v1")) == Some(800)
    });
    assert_eq!(
        metric(&page, "istio_requests_total", &version("v2")),
        200,
        "{page}"
    );

    // Status: the listener's certificate resolved.
    let gateway = s.agent.get_json("gtw", "default", "https-gateway");
    let conditions = &gateway["status"]["listeners"][0]["conditions"];
    for condition in conditions.as_array().expect("conditions") {
        assert_eq!(condition["status"], "True", "{gateway}");
    }
    assert_eq!(
        gateway["status"]["listeners"][0]["attachedRoutes"], 1,
        "{gateway}"
    );

    // Two listeners on 8443, each with its hostname, Secret and route.
    let listeners = "  - name: https-a\n    port: 8443\n    protocol: HTTPS\n    hostname: a.example.com\n    \
                     tls: {certificateRefs: [{name: a}]}\n  - name: https-b\n    port: 8443\n    \
                     protocol: HTTPS\n    hostname: '*.b.example.net'\n    tls: {certificateRefs: [{name: b}]}\n";
    let routes = ["a", "b"]
        .iter()
        .map(|l| {
            let backend = if *l == "a" { "reviews-v1" } else { "reviews-v2" };
            format!(
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
                 metadata: {{name: route-{l}}}\nspec:\n  parentRefs: [{{name: https-gateway, sectionName: https-{l}}}]\n  \
                 rules:\n  - backendRefs: [{{name: {backend}, port: 9080}}]\n"
            )
        })
        .collect::<Vec<_>>()
        .concat();
    let event = s
        .agent
        .write_rules("https.yaml", gateway_api(&certs, listeners, &routes));
    assert_eq!(event["result"], "applied", "{event}");
    for (sni, leaf, version) in [("a.example.com", "a", "v1"), ("x.b.example.net", "b", "v2")] {
        let (answers, presented) = https_requests(&s, &certs, "127.0.0.1:8443", sni, 20, 2);
        assert_eq!(
            answers,
            counts(&[(version, 20)]),
            "{sni}: its listener's route"
        );
        assert_eq!(
            presented,
            certs.der(leaf),
            "{sni}: the certificate of Secret {leaf}"
        );
    }
}

/// Istio's form: a Gateway with two HTTPS servers (`SIMPLE`,
/// `credentialName`) on one port, and a VirtualService 80/20 bound to it.
#[test]
fn an_istio_simple_server_terminates_tls_by_sni() {
    let certs = leaves("https-istio");
    let rules = format!(
        "{}---\n{}---\n\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: https-istio}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 9443, name: https-a, protocol: HTTPS}}
    hosts: [a.example.com]
    tls: {{mode: SIMPLE, credentialName: a}}
  - port: {{number: 9443, name: https-b, protocol: HTTPS}}
    hosts: ['*.b.example.net']
    tls: {{mode: SIMPLE, credentialName: b}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews-https}}
spec:
  hosts: [a.example.com, '*.b.example.net']
  gateways: [https-istio]
  http:
  - route:
    - {{destination: {{host: reviews, subset: v1}}, weight: 80}}
    - {{destination: {{host: reviews, subset: v2}}, weight: 20}}
",
        secret(&certs, "a", "a"),
        secret(&certs, "b", "b"),
    );
    let mut s = Scenario::bookinfo("https-istio", &[("https.yaml", &rules)], &[]);
    let presented = split_80_20(&s, &certs, "127.0.0.1:9443", "Istio SIMPLE server");
    assert_eq!(
        presented,
        certs.der("a"),
        "the certificate of credentialName a"
    );
    let (answers, presented) =
        https_requests(&s, &certs, "127.0.0.1:9443", "x.b.example.net", 10, 1);
    assert_eq!(answers.values().sum::<u64>(), 10, "{answers:?}");
    assert_eq!(
        presented,
        certs.der("b"),
        "the certificate of credentialName b"
    );

    // A credentialName that names no Secret is refused, naming the field.
    let event = s.agent.write_rules(
        "https.yaml",
        rules.replace("credentialName: b", "credentialName: c"),
    );
    assert_eq!(event["result"], "refused", "{event}");
    assert!(
        event
            .to_string()
            .contains("spec.servers[1].tls.credentialName: Secret default/c is not defined"),
        "{event}"
    );
    let _ = &mut s;
}

/// The HTTPS listener's rows of `HTTPRouteRedirectPortAndScheme`: path,
/// `requestRedirect`, `Location` without the path.
const REDIRECT_ROWS: [(&str, &str, &str); 6] = [
    (
        "/scheme-nil-and-port-nil",
        "{hostname: example.org}",
        "https://example.org:8445",
    ),
    (
        "/scheme-nil-and-port-443",
        "{port: 443, hostname: example.org}",
        "https://example.org",
    ),
    (
        "/scheme-nil-and-port-8443",
        "{port: 8443, hostname: example.org}",
        "https://example.org:8443",
    ),
    (
        "/scheme-http-and-port-nil",
        "{scheme: http, hostname: example.org}",
        "http://example.org",
    ),
    (
        "/scheme-http-and-port-80",
        "{scheme: http, port: 80, hostname: example.org}",
        "http://example.org",
    ),
    (
        "/scheme-http-and-port-8080",
        "{scheme: http, port: 8080, hostname: example.org}",
        "http://example.org:8080",
    ),
];

/// The suite's Gateway `same-namespace-with-https-listener` with the
/// routes of `HTTPRouteHTTPSListener` and `REDIRECT_ROWS`, and its Secret.
fn conformance_manifest(certs: &Certs) -> String {
    let rules: String = REDIRECT_ROWS
        .iter()
        .map(|(path, filter, _)| {
            format!(
                "  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    \
                 filters: [{{type: RequestRedirect, requestRedirect: {filter}}}]\n"
            )
        })
        .collect::<Vec<_>>()
        .concat();
    let route = |name: &str, parent: &str, hostnames: &str, rules: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\n\
             spec:\n  parentRefs: [{parent}]\n{hostnames}  rules:\n{rules}"
        )
    };
    let to_v1 = "  - backendRefs: [{name: reviews-v1, port: 9080}]\n";
    [
        secret(certs, "tls-validity-checks-certificate", "org"),
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {name: same-namespace-with-https-listener}\nspec:\n  gatewayClassName: istio\n  \
         listeners:\n  - {name: https, port: 8445, protocol: HTTPS, \
         tls: {certificateRefs: [{name: tls-validity-checks-certificate}]}}\n  \
         - {name: https-with-hostname, port: 8445, protocol: HTTPS, hostname: second-example.org, \
         tls: {certificateRefs: [{name: tls-validity-checks-certificate}]}}\n"
            .to_owned(),
        route(
            "httproute-https-test",
            "{name: same-namespace-with-https-listener}",
            "  hostnames: [example.org]\n",
            to_v1,
        ),
        route(
            "httproute-https-test-no-hostname",
            "{name: same-namespace-with-https-listener, sectionName: https-with-hostname}",
            "",
            to_v1,
        ),
        route(
            "http-route-for-listener-on-port-443",
            "{name: same-namespace-with-https-listener}",
            "  hostnames: [example.org]\n",
            &rules,
        ),
    ]
    .concat()
}

/// `HTTPRouteHTTPSListener` and the HTTPS rows of
/// `HTTPRouteRedirectPortAndScheme`, on the suite's Gateway
/// `same-namespace-with-https-listener` (its listeners on 443 are on 8445
/// here; `infra-backend-v1` is reviews-v1). The client sends the row's
/// host as SNI (`example.org` for the redirects) and trusts the CA of
/// `tls-validity-checks-certificate`, as the suite's does. A redirect without a scheme keeps the request's,
/// `https`, and without a port the listener's; a scheme's well-known port
/// is left out of `Location`.
#[test]
fn conformance_httproute_https_listener_and_redirect_port_and_scheme() {
    let certs = Certs::new("https-conformance");
    certs.leaf(
        "org",
        "example.org",
        &["example.org", "second-example.org", "unknown-example.org"],
    );
    let text = conformance_manifest(&certs);
    let s = Scenario::bookinfo_dir("https-conformance", BOOKINFO, &[("https.yaml", &text)]);
    let get = |host: &str, path: &str| get_over_tls(&s, &certs, "127.0.0.1:8445", host, host, path);
    // HTTPRouteHTTPSListener.
    for (host, expected) in [
        ("example.org", "v1"),
        ("unknown-example.org", "status 404"),
        ("second-example.org", "v1"),
    ] {
        assert_eq!(answer(&get(host, "/")), expected, "{host}");
    }
    for route in ["httproute-https-test", "httproute-https-test-no-hostname"] {
        let status = s.agent.get_json("httproute", "default", route);
        let conditions = &status["status"]["parents"][0]["conditions"];
        assert_eq!(
            conditions[0]["status"], "True",
            "{route} Accepted: {status}"
        );
        assert_eq!(
            conditions[1]["status"], "True",
            "{route} ResolvedRefs: {status}"
        );
    }
    // HTTPRouteRedirectPortAndScheme, its HTTPS listener's rows.
    for (path, _, location) in REDIRECT_ROWS {
        let response = get("example.org", path);
        assert_eq!(
            (response.status, response.header("location")),
            (302, Some(format!("{location}{path}").as_str())),
            "{path}"
        );
    }
}

/// `GatewaySecretReferenceGrant` end to end, with
/// `GatewaySecretInvalidReferenceGrant` and its `-all-in-namespace` form
/// in turn: the listener's Secret is in `gateway-conformance-web-backend`;
/// with a grant for it the listener serves its certificate; with a grant
/// for another Secret it is `RefNotPermitted`, not programmed, and its port
/// is closed; with a grant for every Secret of the namespace it serves
/// again.
#[test]
fn conformance_gateway_secret_reference_grant() {
    const NS: &str = "gateway-conformance-web-backend";
    let certs = leaves("https-grant");
    let grant = |to: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
             metadata: {{name: reference-grant, namespace: {NS}}}\nspec:\n  \
             from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}}]\n  \
             to: [{{group: '', kind: Secret{to}}}]\n"
        )
    };
    let secret_there = secret(&certs, "certificate", "a").replace(
        "metadata: {name: certificate}",
        &format!("metadata: {{name: certificate, namespace: {NS}}}"),
    );
    let listener = format!(
        "  - name: https\n    port: 8446\n    protocol: HTTPS\n    \
         tls: {{certificateRefs: [{{name: certificate, namespace: {NS}}}]}}\n"
    );
    let route = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
                 metadata: {name: reviews-https}\nspec:\n  parentRefs: [{name: https-gateway}]\n  \
                 rules: [{backendRefs: [{name: reviews-v1, port: 9080}]}]\n";
    let gateway = format!(
        "{secret_there}---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: https-gateway}}\nspec:\n  gatewayClassName: istio\n  listeners:\n\
         {listener}{route}"
    );
    let mut s = Scenario::bookinfo_dir(
        "https-grant",
        BOOKINFO,
        &[
            ("https.yaml", &gateway),
            ("grant.yaml", &grant(", name: certificate")),
        ],
    );
    let listener_status = |s: &Scenario| {
        let gateway = s.agent.get_json("gtw", "default", "https-gateway");
        let conditions = gateway["status"]["listeners"][0]["conditions"].clone();
        conditions
            .as_array()
            .expect("conditions")
            .iter()
            .map(|c| format!("{} {} {}", c["type"], c["status"], c["reason"]).replace('"', ""))
            .collect::<Vec<_>>()
    };
    let served = |s: &Scenario| {
        let (answers, presented) =
            https_requests(s, &certs, "127.0.0.1:8446", "a.example.com", 10, 1);
        assert_eq!(answers, counts(&[("v1", 10)]), "served through the grant");
        assert_eq!(
            presented,
            certs.der("a"),
            "the Secret of the other namespace"
        );
        assert_eq!(
            listener_status(s),
            [
                "Accepted True Accepted",
                "Programmed True Programmed",
                "ResolvedRefs True ResolvedRefs"
            ]
        );
    };
    served(&s);

    let event = s
        .agent
        .write_rules("grant.yaml", grant(", name: not-the-certificate"));
    assert_eq!(event["result"], "applied", "{event}");
    assert_eq!(
        listener_status(&s),
        [
            "Accepted True Accepted",
            "Programmed False Invalid",
            "ResolvedRefs False RefNotPermitted"
        ]
    );
    let refused = s
        .netns
        .run_in(|| std::net::TcpStream::connect("127.0.0.1:8446"));
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused),
        "the listener without its certificate is not served: {refused:?}"
    );

    let event = s.agent.write_rules("grant.yaml", grant(""));
    assert_eq!(event["result"], "applied", "{event}");
    served(&s);
}

/// HTTPRouteHTTPSListenerDetectMisdirectedRequests's rows: SNI, `Host`,
/// answer (the backend's version, or the status).
const MISDIRECTED_ROWS: [(&str, &str, &str); 15] = [
    ("example.org", "example.org", "v1"),
    ("example.org", "second-example.org", "status 421"),
    ("example.org", "unknown-example.org", "status 404"),
    ("second-example.org", "second-example.org", "v2"),
    ("second-example.org", "example.org", "status 421"),
    ("second-example.org", "unknown-example.org", "status 421"),
    (
        "third-example.wildcard.org",
        "third-example.wildcard.org",
        "v3",
    ),
    (
        "third-example.wildcard.org",
        "fith-example.wildcard.org",
        "v3",
    ),
    (
        "third-example.wildcard.org",
        "fourth-example.wildcard.org",
        "status 421",
    ),
    (
        "third-example.wildcard.org",
        "second-example.org",
        "status 421",
    ),
    (
        "third-example.wildcard.org",
        "unknown-example.org",
        "status 421",
    ),
    (
        "fourth-example.wildcard.org",
        "fourth-example.wildcard.org",
        "v1",
    ),
    (
        "fourth-example.wildcard.org",
        "fith-example.wildcard.org",
        "status 421",
    ),
    ("unknown-example.org", "example.org", "v1"),
    ("unknown-example.org", "unknown-example.org", "status 404"),
];

/// The suite's Gateway `same-namespace-with-https-listener` as
/// HTTPRouteHTTPSListenerDetectMisdirectedRequests has it: four HTTPS
/// listeners of one port (443, here 8445), without hostname,
/// `second-example.org`, `*.wildcard.org` and
/// `fourth-example.wildcard.org`, and one route on each (the suite's
/// infra-backend-v1, v2, v3, v1: reviews-v1, v2, v3, v1 here).
fn misdirected_manifest(certs: &Certs) -> String {
    let listener = |name: &str, hostname: &str| {
        format!(
            "  - {{name: {name}, port: 8445, protocol: HTTPS,{hostname} \
             tls: {{certificateRefs: [{{name: tls-validity-checks-certificate}}]}}}}\n"
        )
    };
    let route = |n: usize, section: &str, hostnames: &str, version: usize| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: https-listener-detect-misdirected-requests-test-{n}}}\nspec:\n  \
             parentRefs: [{{name: same-namespace-with-https-listener, sectionName: {section}}}]\n\
             {hostnames}  rules:\n  - matches: [{{path: {{type: PathPrefix, value: \
             /detect-misdirected-requests}}}}]\n    \
             backendRefs: [{{name: reviews-v{version}, port: 9080}}]\n"
        )
    };
    [
        secret(certs, "tls-validity-checks-certificate", "org"),
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {name: same-namespace-with-https-listener}\nspec:\n  gatewayClassName: istio\n  \
         listeners:\n"
            .to_owned(),
        listener("https", ""),
        listener("https-with-hostname", " hostname: second-example.org,"),
        listener(
            "https-with-wildcard-hostname",
            " hostname: '*.wildcard.org',",
        ),
        listener(
            "https-with-hostname-matching-wildcard",
            " hostname: fourth-example.wildcard.org,",
        ),
        route(1, "https", "  hostnames: [example.org]\n", 1),
        route(2, "https-with-hostname", "", 2),
        route(3, "https-with-wildcard-hostname", "", 3),
        route(4, "https-with-hostname-matching-wildcard", "", 1),
    ]
    .concat()
}

/// HTTPRouteHTTPSListenerDetectMisdirectedRequests: every row of the
/// suite, over real TLS: each on a connection of its own over HTTP/1.1,
/// then over HTTP/2 as the suite sends them, every row of one SNI on one
/// connection. A request whose `Host` picks another
/// listener than the connection's SNI did gets 421; one whose `Host` picks
/// the same listener is routed by it (200 from its backend, or 404 when
/// none of the listener's routes has the host).
#[test]
fn conformance_httproute_https_listener_detect_misdirected_requests() {
    let certs = Certs::new("https-misdirected");
    certs.leaf(
        "org",
        "example.org",
        &[
            "example.org",
            "second-example.org",
            "unknown-example.org",
            "*.wildcard.org",
        ],
    );
    let text = misdirected_manifest(&certs);
    let s = Scenario::bookinfo_dir("https-misdirected", BOOKINFO, &[("https.yaml", &text)]);
    for n in 1..=4 {
        let name = format!("https-listener-detect-misdirected-requests-test-{n}");
        let status = s.agent.get_json("httproute", "default", &name);
        let conditions = &status["status"]["parents"][0]["conditions"];
        assert_eq!(conditions[0]["status"], "True", "{name} Accepted: {status}");
        assert_eq!(
            conditions[1]["status"], "True",
            "{name} ResolvedRefs: {status}"
        );
    }
    for (sni, host, expected) in MISDIRECTED_ROWS {
        let response = get_over_tls(
            &s,
            &certs,
            "127.0.0.1:8445",
            sni,
            host,
            "/detect-misdirected-requests",
        );
        assert_eq!(answer(&response), expected, "SNI {sni}, Host {host}");
    }
    // The port with the Host: still the listener's name.
    let response = get_over_tls(
        &s,
        &certs,
        "127.0.0.1:8445",
        "second-example.org",
        "second-example.org:8445",
        "/detect-misdirected-requests",
    );
    assert_eq!(answer(&response), "v2", "a Host with its port");
    misdirected_over_h2(&s, &certs);
}

/// The rows of [`MISDIRECTED_ROWS`] as the suite sends them, over HTTP/2,
/// and here all on one connection per SNI (what a browser does for every
/// name the certificate covers).
fn misdirected_over_h2(s: &Scenario, certs: &Certs) {
    let rt = traffic_shift_tests::tls::runtime_in(&s.netns);
    let config = certs.client_config();
    let addr = "127.0.0.1:8445".parse().expect("an address");
    for sni in MISDIRECTED_ROWS
        .iter()
        .map(|(sni, ..)| *sni)
        .collect::<std::collections::BTreeSet<_>>()
    {
        let asked: Vec<(&str, &str)> = MISDIRECTED_ROWS
            .iter()
            .filter(|(name, ..)| *name == sni)
            .map(|(_, host, _)| (*host, "/detect-misdirected-requests"))
            .collect();
        let answers = traffic_shift_tests::tls::h2_gets(&rt, &config, addr, sni, &asked)
            .unwrap_or_else(|e| panic!("HTTP/2 over TLS for {sni}: {e}"));
        assert_eq!(answers.len(), asked.len(), "an answer to each request");
        for ((host, _), (status, body)) in asked.iter().zip(&answers) {
            let response = Response {
                status: *status,
                headers: Vec::new(),
                body: body.clone(),
            };
            let expected = MISDIRECTED_ROWS
                .iter()
                .find(|(name, h, _)| *name == sni && h == host)
                .map(|(.., e)| *e);
            assert_eq!(
                Some(answer(&response).as_str()),
                expected,
                "HTTP/2: SNI {sni}, :authority {host}"
            );
        }
    }
}
