//! A Gateway's `spec.addresses`: the listeners on those addresses alone
//! (TCP, TLS and HTTP), `status.addresses`, each refusal of an address,
//! and two Gateways on one address and port refused, naming both.

use std::net::SocketAddr;

use super::tls_route_tests::{model_of, resolved};
use crate::model::{RoutingModel, StatusKey};

/// Two Services on the tcp-echo and reviews backends; Gateway `a` on
/// 127.0.0.20 and fd00::20 (TCP 31400, HTTP 8080, HTTP 8081 without a
/// route, TLS passthrough 8443); a TCPRoute, an HTTPRoute and a TLSRoute
/// on it.
const BASE: &str = r"apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  ports: [{name: tcp, port: 9000}]
  selector: {app: echo}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: 80, appProtocol: http}]
  selector: {app: web}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: echo}
spec: {address: 127.0.0.1, ports: {tcp: 19001}, labels: {app: echo}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web}
spec: {address: 127.0.0.1, ports: {http: 19081}, labels: {app: web}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: a}
spec:
  gatewayClassName: istio
  addresses: [{type: IPAddress, value: 127.0.0.20}, {value: 'fd00::20'}]
  listeners:
  - {name: tcp, port: 31400, protocol: TCP}
  - {name: http, port: 8080, protocol: HTTP}
  - {name: idle, port: 8081, protocol: HTTP}
  - {name: tls, port: 8443, protocol: TLS, tls: {mode: Passthrough}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: echo-a}
spec:
  parentRefs: [{name: a, sectionName: tcp}]
  rules: [{backendRefs: [{name: echo, port: 9000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-a}
spec:
  parentRefs: [{name: a, sectionName: http}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: tls-a}
spec:
  parentRefs: [{name: a, sectionName: tls}]
  rules: [{backendRefs: [{name: echo, port: 9000}]}]
";

/// Gateway `b` with `addresses` (a YAML list, or none) and a TCP listener
/// on `port`, with its TCPRoute.
fn gateway_b(addresses: Option<&str>, port: u16) -> String {
    let addresses = addresses
        .map(|list| format!("  addresses: {list}\n"))
        .unwrap_or_default();
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: b}}\n\
         spec:\n  gatewayClassName: istio\n{addresses}  listeners:\n  - {{name: tcp-b, port: \
         {port}, protocol: TCP}}\n---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: \
         TCPRoute\nmetadata: {{name: echo-b}}\nspec:\n  parentRefs: [{{name: b}}]\n  rules: \
         [{{backendRefs: [{{name: echo, port: 9000}}]}}]\n"
    )
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter()
        .map(|a| a.parse().expect("a socket address"))
        .collect()
}

/// Each gateway route's key and listeners.
fn tcp_listeners(model: &RoutingModel) -> Vec<(String, Vec<SocketAddr>)> {
    model
        .routes
        .iter()
        .filter(|r| r.gateway.is_some())
        .map(|r| (r.key.clone(), r.listeners.clone()))
        .collect()
}

fn gateway_status(model: &RoutingModel, name: &str) -> serde_json::Value {
    model.gateway_api_status[&StatusKey {
        kind: super::GATEWAY_KIND.into(),
        namespace: "default".into(),
        name: name.into(),
    }]
        .clone()
}

/// Each listener of a Gateway with addresses accepts on those addresses
/// alone, on every path: the `sk_lookup` keys of its TCP routes, the
/// agent's TLS passthrough sockets, the L7 proxy's sockets of its HTTP
/// listeners (with and without a route); `status.addresses` lists them.
#[test]
fn a_gateway_with_addresses_listens_on_them_alone() {
    let model = model_of(BASE);
    assert_eq!(
        tcp_listeners(&model),
        [
            (
                "default/echo-a/rules[0]/gateway default/a port 31400".to_owned(),
                addrs(&["127.0.0.20:31400", "[fd00::20]:31400"])
            ),
            (
                "default/tls-a/rules[0]/gateway default/a port 8443".to_owned(),
                addrs(&["127.0.0.20:8443", "[fd00::20]:8443"])
            ),
        ]
    );
    let http: Vec<(String, Vec<SocketAddr>)> = model
        .http
        .iter()
        .filter(|l| l.gateway.is_some())
        .map(|l| (l.key.clone(), l.listeners.clone()))
        .collect();
    assert_eq!(
        http,
        [
            (
                "gateway default/a port 8080".to_owned(),
                addrs(&["127.0.0.20:8080", "[fd00::20]:8080"])
            ),
            (
                "gateway default/a port 8081".to_owned(),
                addrs(&["127.0.0.20:8081", "[fd00::20]:8081"])
            ),
        ],
        "a listener without a route too"
    );
    let status = gateway_status(&model, "a");
    assert_eq!(
        status["addresses"],
        serde_json::json!([
            {"type": "IPAddress", "value": "127.0.0.20"},
            {"type": "IPAddress", "value": "fd00::20"},
        ])
    );
    assert_eq!(
        status["conditions"][1]["message"],
        "its listeners accept on 127.0.0.20, fd00::20"
    );
    let without = model_of(&BASE.replace(
        "  addresses: [{type: IPAddress, value: 127.0.0.20}, {value: 'fd00::20'}]\n",
        "",
    ));
    assert_eq!(
        tcp_listeners(&without)[0].1,
        addrs(&["0.0.0.0:31400", "[::]:31400"])
    );
    let status = gateway_status(&without, "a");
    assert!(status.get("addresses").is_none(), "{status}");
    assert_eq!(
        status["conditions"][1]["message"],
        "its listeners accept on every local address"
    );
}

/// Two Gateways on one port: with different addresses each takes its
/// own; an address in common (no addresses: every local address, which
/// has every address in common) is refused on the later Gateway, naming
/// both Gateways and listeners, the port and the address, and what to do.
#[test]
fn two_gateways_on_one_address_and_port_are_refused_naming_both() {
    let model = model_of(&format!(
        "{BASE}{}",
        gateway_b(Some("[{value: 127.0.0.21}]"), 31400)
    ));
    assert_eq!(
        tcp_listeners(&model),
        [
            (
                "default/echo-a/rules[0]/gateway default/a port 31400".to_owned(),
                addrs(&["127.0.0.20:31400", "[fd00::20]:31400"])
            ),
            (
                "default/echo-b/rules[0]/gateway default/b port 31400".to_owned(),
                addrs(&["127.0.0.21:31400"])
            ),
            (
                "default/tls-a/rules[0]/gateway default/a port 8443".to_owned(),
                addrs(&["127.0.0.20:8443", "[fd00::20]:8443"])
            ),
        ]
    );
    let model = model_of(&format!("{BASE}{}", gateway_b(None, 31401)));
    assert_eq!(tcp_listeners(&model).len(), 3, "another port: no overlap");

    let without_a = BASE.replace(
        "  addresses: [{type: IPAddress, value: 127.0.0.20}, {value: 'fd00::20'}]\n",
        "",
    );
    let cases = [
        (
            "b on every local address",
            format!("{BASE}{}", gateway_b(None, 31400)),
            "on every local address) would take the connections of listener tcp of \
             Gateway.gateway.networking.k8s.io default/a (rules/r.yaml document 5) (port 31400, \
             on 127.0.0.20, fd00::20): they share port 31400 on 127.0.0.20, fd00::20",
        ),
        (
            "an address in common",
            format!(
                "{BASE}{}",
                gateway_b(Some("[{value: 127.0.0.21}, {value: 'fd00::20'}]"), 31400)
            ),
            "(port 31400, on 127.0.0.21, fd00::20) would take the connections of listener tcp \
             of Gateway.gateway.networking.k8s.io default/a (rules/r.yaml document 5) (port \
             31400, on 127.0.0.20, fd00::20): they share port 31400 on fd00::20",
        ),
        (
            "a on every local address",
            format!(
                "{without_a}{}",
                gateway_b(Some("[{value: 127.0.0.21}]"), 31400)
            ),
            "they share port 31400 on 127.0.0.21",
        ),
        (
            "neither with addresses",
            format!("{without_a}{}", gateway_b(None, 31400)),
            "they share port 31400 on every local address",
        ),
    ];
    for (what, text, expected) in cases {
        let errors = resolved(&text).expect_err(what);
        assert_eq!(errors.len(), 1, "{what}: one error: {errors:#?}");
        let error = &errors[0];
        assert!(
            error.starts_with(
                "rules/r.yaml: document 9 (Gateway.gateway.networking.k8s.io default/b): \
                 spec.listeners[0].port: listener tcp-b (port 31400, on "
            ),
            "{what}: {error}"
        );
        assert!(error.contains(expected), "{what}: {expected:?} in {error}");
        assert!(
            error.contains(
                ", and two Gateways may not listen on one address and port (in Kubernetes each \
                 Gateway has its own address); give the Gateways different addresses of this \
                 node (spec.addresses), or different ports (line "
            ),
            "{what}: {error}"
        );
    }
}

/// Each address the agent cannot accept on is refused, naming the entry.
#[test]
fn each_address_refusal_says_what_to_do() {
    let with = |addresses: &str| {
        BASE.replace(
            "  addresses: [{type: IPAddress, value: 127.0.0.20}, {value: 'fd00::20'}]\n",
            &format!("  addresses: {addresses}\n"),
        )
    };
    let many = (1..=17)
        .map(|i| format!("{{value: 127.0.1.{i}}}"))
        .collect::<Vec<_>>()
        .join(", ");
    let cases = [
        (
            "[{type: Hostname, value: gw.example.com}]",
            "spec.addresses[0].type: address type Hostname is not supported: the agent accepts \
             on IP addresses of this node and does not resolve names",
        ),
        (
            "[{value: 127.0.0.20}, {type: example.com/vip, value: x}]",
            "spec.addresses[1].type: address type \"example.com/vip\" is not supported: only \
             IPAddress is",
        ),
        (
            "[{type: IPAddress}]",
            "spec.addresses[0].value: value is required: the agent does not assign addresses \
             (the spec: AddressNotAssigned)",
        ),
        (
            "[{value: gw.example.com}]",
            "spec.addresses[0].value: \"gw.example.com\" is not an IP address: type IPAddress \
             takes an IPv4 or IPv6 address",
        ),
        (
            "[{value: 0.0.0.0}]",
            "spec.addresses[0].value: 0.0.0.0 is not an address of a node: remove \
             spec.addresses to accept on every local address",
        ),
        (
            "[{value: 127.0.0.20}, {value: 127.0.0.20}]",
            "spec.addresses[1].value: address 127.0.0.20 is listed twice: IPAddress values \
             must be unique",
        ),
        (
            "[{value: 127.0.0.20, port: 80}]",
            "spec.addresses[0].port: unknown field `port`, expected `type` or `value`",
        ),
    ];
    for (addresses, expected) in cases {
        let errors = resolved(&with(addresses)).expect_err(addresses);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{addresses}: {expected:?} in {errors:#?}"
        );
    }
    let errors = resolved(&with(&format!("[{many}]"))).expect_err("17 addresses");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.addresses: 17 addresses: a Gateway has at most 16")),
        "{errors:#?}"
    );
}
