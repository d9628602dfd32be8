//! End-to-end: Gateway `spec.addresses` on the real agent in a network
//! namespace. Two Gateways on one port, each on its own address of the
//! node (127.0.0.20 and 127.0.0.21: loopback, local in every namespace),
//! each with its own route: connections to each address reach that
//! Gateway's backends, exactly as its weights say, on the kernel path
//! (TCP, `sk_lookup`) and the L7 proxy's (HTTP); a connection to another
//! local address on that port is taken by neither. A third Gateway that
//! would share an address and port is refused naming both, and the rules
//! in force keep serving. The conformance case `GatewayStaticAddresses`
//! as it can run on one node.

use serde_json::Value;
use traffic_shift_tests::{Scenario, rule};

const TCP_ECHO: &str = "tcp-echo-gateway-api";
const BOOKINFO: &str = "bookinfo-gateway-api";

/// Gateway `NAME` on `ADDRESSES` (a YAML list) with listener `LISTENER`
/// (protocol and port), and a route of `KIND` on it to `BACKENDS`.
const GATEWAY_AND_ROUTE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: NAME}
spec:
  gatewayClassName: istio
  addresses: ADDRESSES
  listeners: [LISTENER]
---
apiVersion: gateway.networking.k8s.io/ROUTE_VERSION
kind: KIND
metadata: {name: NAME}
spec:
  parentRefs: [{name: NAME}]
  rules:
  - backendRefs: BACKENDS
";

/// A Gateway with its route, as [`GATEWAY_AND_ROUTE`]; `addresses` `None`:
/// no `spec.addresses` (every local address).
fn gateway(name: &str, addresses: Option<&str>, listener: &str, backends: &str) -> String {
    let (kind, version) = if listener.contains("protocol: HTTP") {
        ("HTTPRoute", "v1")
    } else {
        ("TCPRoute", "v1alpha2")
    };
    let text = GATEWAY_AND_ROUTE
        .replace("NAME", name)
        .replace("LISTENER", listener)
        .replace("KIND", kind)
        .replace("ROUTE_VERSION", version)
        .replace("BACKENDS", backends);
    match addresses {
        Some(addresses) => text.replace("ADDRESSES", addresses),
        None => text.replace("  addresses: ADDRESSES\n", ""),
    }
}

const TCP_LISTENER: &str = "{name: tcp-31400, port: 31400, protocol: TCP}";

/// The shipped Gateway of `dir`, on `address` alone.
fn shipped_gateway_on(dir: &str, address: &str) -> String {
    let shipped = rule(dir, "gateway.yaml");
    let on = shipped.replacen(
        "  gatewayClassName: istio\n",
        &format!(
            "  gatewayClassName: istio\n  addresses: [{{type: IPAddress, value: {address}}}]\n"
        ),
        1,
    );
    assert_ne!(on, shipped, "{dir}/gateway.yaml names the class");
    on
}

/// Writes `text` as rules file `file`, which the agent must refuse: its
/// error.
fn refused(s: &mut Scenario, file: &str, text: &str) -> String {
    let event = s.agent.write_rules(file, text);
    assert_eq!(event["result"], "refused", "{event}");
    let error = event["error"].as_str().unwrap_or_default().to_owned();
    println!("{file} refused: {error}");
    error
}

/// `(one, two, errors)` of `n` connections to `target`.
fn burst(s: &mut Scenario, target: &str, n: usize) -> (u64, u64, usize) {
    let (one, two, errors) = s.client.burst_with_errors(target, n);
    if !errors.is_empty() {
        println!(
            "{target}: {} errors, the first: {}",
            errors.len(),
            errors[0]
        );
    }
    (one, two, errors.len())
}

#[test]
fn two_tcp_gateways_on_one_port_each_take_their_own_address() {
    // The shipped Gateway tcp-echo-gateway on 127.0.0.20, its TCPRoute
    // 80/20; tcp-echo-b on 127.0.0.21 and ::1, all to v2.
    let gateways = [
        shipped_gateway_on(TCP_ECHO, "127.0.0.20"),
        gateway(
            "tcp-echo-b",
            Some("[{value: 127.0.0.21}, {value: '::1'}]"),
            TCP_LISTENER,
            "[{name: tcp-echo-v2, port: 9000}]",
        ),
    ]
    .join("---\n");
    let mut s = Scenario::tcp_echo_dir(
        "gwaddr-tcp",
        TCP_ECHO,
        &[
            ("gateway.yaml", &gateways),
            (
                "tcp-route.yaml",
                &rule(TCP_ECHO, "examples/tcp-route-20-v2.yaml"),
            ),
        ],
    );
    let served = |s: &mut Scenario| {
        for (target, n, expected, what) in [
            (
                "127.0.0.20:31400",
                1000,
                (800, 200, 0),
                "Gateway tcp-echo-gateway's 80/20, exactly, on its address",
            ),
            (
                "127.0.0.21:31400",
                100,
                (0, 100, 0),
                "Gateway tcp-echo-b's all-v2 on its address",
            ),
            (
                "[::1]:31400",
                100,
                (0, 100, 0),
                "and on its other address, an IPv6 one",
            ),
            (
                "127.0.0.1:31400",
                20,
                (0, 0, 20),
                "another local address on the port is taken by neither Gateway: nothing listens",
            ),
        ] {
            assert_eq!(burst(s, target, n), expected, "{what}");
        }
    };
    served(&mut s);

    // A Gateway on every local address, on the same port: it would take
    // both Gateways' connections. Refused, naming both; nothing changes.
    let error = refused(
        &mut s,
        "zz-gateway.yaml",
        &gateway(
            "tcp-echo-c",
            None,
            TCP_LISTENER,
            "[{name: tcp-echo-v1, port: 9000}]",
        ),
    );
    assert!(
        error.contains(
            "zz-gateway.yaml: document 1 (Gateway.gateway.networking.k8s.io default/tcp-echo-c): \
             spec.listeners[0].port: listener tcp-31400 (port 31400, on every local address) \
             would take the connections of listener tcp-31400 of \
             Gateway.gateway.networking.k8s.io \
             default/tcp-echo-gateway ("
        ) && error.contains(
            "(port 31400, on 127.0.0.20): they share port 31400 on 127.0.0.20, and two Gateways \
             may not listen on one address and port (in Kubernetes each Gateway has its own \
             address); give the Gateways different addresses of this node (spec.addresses), or \
             different ports"
        ),
        "the refusal names both Gateways and listeners, the address and port: {error}"
    );
    served(&mut s);

    // status.addresses, as `get` shows it.
    let gateway = s.agent.get_json("gtw", "default", "tcp-echo-b");
    assert_eq!(
        gateway["status"]["addresses"],
        serde_json::json!([
            {"type": "IPAddress", "value": "127.0.0.21"},
            {"type": "IPAddress", "value": "::1"},
        ]),
        "{gateway}"
    );
}

const HTTP_LISTENER: &str = "{name: http, port: 8080, protocol: HTTP}";

/// `n` requests to `target`'s `/reviews/1`: `(answers, failed)`.
fn requests(s: &mut Scenario, target: &str, n: usize) -> (Value, u64) {
    let reply = s
        .client
        .call(&format!("http {target} /reviews/1 {n} 2 keepalive "));
    (
        reply["answers"].clone(),
        reply["failed"].as_u64().unwrap_or(0),
    )
}

#[test]
fn two_http_gateways_on_one_port_each_take_their_own_address() {
    // The shipped Gateway bookinfo-gateway on 127.0.0.20 (its HTTPRoute:
    // /reviews to the reviews Service, each version in turn); bookinfo-b
    // on 127.0.0.21 and ::1, to reviews-v2.
    let gateways = [
        shipped_gateway_on(BOOKINFO, "127.0.0.20"),
        gateway(
            "bookinfo-b",
            Some("[{value: 127.0.0.21}, {value: '::1'}]"),
            HTTP_LISTENER,
            "[{name: reviews-v2, port: 9080}]",
        ),
    ]
    .join("---\n");
    let mut s = Scenario::bookinfo_dir("gwaddr-http", BOOKINFO, &[("gateway.yaml", &gateways)]);
    let served = |s: &mut Scenario| {
        for (target, n, expected, what) in [
            (
                "127.0.0.20:8080",
                300,
                (serde_json::json!({"v1": 100, "v2": 100, "v3": 100}), 0),
                "bookinfo-gateway's route on its address: each version in turn, exactly",
            ),
            (
                "127.0.0.21:8080",
                100,
                (serde_json::json!({"v2": 100}), 0),
                "bookinfo-b's on its address",
            ),
            (
                "[::1]:8080",
                100,
                (serde_json::json!({"v2": 100}), 0),
                "and on its other address, an IPv6 one",
            ),
            (
                "127.0.0.1:8080",
                10,
                (serde_json::json!({}), 10),
                "another local address on the port: nothing listens there",
            ),
        ] {
            assert_eq!(requests(s, target, n), expected, "{what}");
        }
    };
    served(&mut s);

    // On the same address as bookinfo-b: refused, naming both.
    let error = refused(
        &mut s,
        "zz-gateway.yaml",
        &gateway(
            "bookinfo-c",
            Some("[{value: 127.0.0.22}, {value: 127.0.0.21}]"),
            HTTP_LISTENER,
            "[{name: reviews-v1, port: 9080}]",
        ),
    );
    assert!(
        error.contains(
            "spec.listeners[0].port: listener http (port 8080, on 127.0.0.22, 127.0.0.21) would \
             take the connections of listener http of Gateway.gateway.networking.k8s.io \
             default/bookinfo-b ("
        ) && error.contains("they share port 8080 on 127.0.0.21"),
        "{error}"
    );
    served(&mut s);
}

/// `GatewayStaticAddresses` on one node: the suite's Gateway has an
/// address of a type the implementation does not support, an address it
/// cannot use and one it can; each is taken out in turn. The spec reports
/// the first two in status (`Accepted` `False` `UnsupportedAddress`, then
/// `Programmed` `False` `AddressNotUsable`); here an apply is all or
/// nothing, so each is refused with an error naming the address, and the
/// rules in force keep serving. With the usable address alone, the
/// Gateway is accepted and programmed, `status.addresses` lists it, and
/// its listener `http` has no route attached.
#[test]
fn conformance_gateway_static_addresses() {
    let mut s = Scenario::bookinfo_dir("gwaddr-static", BOOKINFO, &[]);
    let manifest = |addresses: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: \
             gateway-static-addresses, namespace: gateway-conformance-infra}}\nspec:\n  \
             gatewayClassName: istio\n  addresses: [{addresses}]\n  listeners:\n  - {{name: \
             http, port: 8099, protocol: HTTP}}\n"
        )
    };
    // The suite's usable, unusable (TEST-NET-2: no address of this node)
    // and invalid (a Hostname) addresses.
    let usable = "{type: IPAddress, value: 127.0.0.30}";
    let unusable = "{type: IPAddress, value: 198.51.100.1}";
    let invalid = "{type: Hostname, value: gateway.example.com}";

    let error = refused(
        &mut s,
        "static.yaml",
        &manifest(&[invalid, unusable, usable].join(", ")),
    );
    assert!(
        error.contains(
            "spec.addresses[0].type: address type Hostname is not supported: the agent accepts \
             on IP addresses of this node and does not resolve names"
        ),
        "{error}"
    );

    let error = refused(
        &mut s,
        "static.yaml",
        &manifest(&[unusable, usable].join(", ")),
    );
    assert!(
        error.contains(
            "gateway gateway-conformance-infra/gateway-static-addresses port 8099: cannot listen \
             on 198.51.100.1:8099"
        ) && error.contains("bind the Gateway server (of a Gateway API Gateway: its spec.addresses) to another address, one of this node"),
        "{error}"
    );
    // Nothing of it in force: the shipped Gateway still serves, and the
    // usable address has no listener.
    let (answers, failed) = requests(&mut s, "127.0.0.1:8080", 30);
    assert_eq!(
        (answers, failed),
        (serde_json::json!({"v1": 10, "v2": 10, "v3": 10}), 0)
    );
    let (_, failed) = requests(&mut s, "127.0.0.30:8099", 4);
    assert_eq!(failed, 4, "nothing listens on the usable address yet");

    let event = s.agent.write_rules("static.yaml", manifest(usable));
    assert_eq!(event["result"], "applied", "{event}");
    let gateway = s.agent.get_json(
        "gtw",
        "gateway-conformance-infra",
        "gateway-static-addresses",
    );
    let status = &gateway["status"];
    println!("status: {status}");
    assert_eq!(
        status["addresses"],
        serde_json::json!([{"type": "IPAddress", "value": "127.0.0.30"}])
    );
    for (i, condition) in ["Accepted", "Programmed"].into_iter().enumerate() {
        assert_eq!(status["conditions"][i]["type"], condition);
        assert_eq!(status["conditions"][i]["status"], "True", "{condition}");
        assert_eq!(status["conditions"][i]["reason"], condition);
    }
    let listener = &status["listeners"][0];
    assert_eq!(listener["name"], "http");
    assert_eq!(listener["attachedRoutes"], 0);
    // An HTTP listener without allowedRoutes.kinds takes both, as Istio's.
    assert_eq!(
        listener["supportedKinds"],
        serde_json::json!([
            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
            {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}
        ])
    );
    let conditions: Vec<(&str, &str)> = listener["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or(""),
                c["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        conditions.contains(&("Accepted", "True"))
            && conditions.contains(&("ResolvedRefs", "True")),
        "{conditions:?}"
    );
    // Its listener is open on the address, with no route: 404.
    let reply = s
        .client
        .call("http 127.0.0.30:8099 /reviews/1 4 1 keepalive ");
    assert_eq!(reply["status"]["404"], 4, "{reply}");
}
