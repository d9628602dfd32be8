//! End-to-end: Services without a selector, and headless ones, whose
//! endpoints are `discovery.k8s.io/v1` `EndpointSlice`s, on the real agent
//! and backends in a network namespace: the same kernel and L7 paths, and
//! exact splits, as the Services that select WorkloadEntries
//! (tests/gateway_api.rs).

use serde_json::Value;
use traffic_shift_tests::{NODE_ADDR, RemoteClient, Scenario, rule};

/// Two headless Services without a selector, for the tcp-echo backends.
/// `echo-a`'s endpoints are v1's, `127.0.0.1` (in two slices, once) and
/// `::1`; `echo-b`'s are v2's. The first slice of each has an endpoint
/// that is not ready (`echo-a`) or not serving (`echo-b`) on the other
/// version's port: were it an endpoint, that address would take the first
/// slice's port, and the other version would answer. The Service's
/// `targetPort` is not read: the slice port is.
const TCP_SLICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: echo-a}
spec:
  clusterIP: None
  ports: [{name: tcp, port: 9000, targetPort: 9999}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-b}
spec:
  clusterIP: None
  ports: [{name: tcp, port: 9000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-a-draining
  labels: {kubernetes.io/service-name: echo-a}
addressType: IPv6
endpoints:
- addresses: ['::1']
  conditions: {ready: false}
ports: [{name: tcp, port: 19002}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-a-ipv4
  labels: {kubernetes.io/service-name: echo-a}
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
  conditions: {ready: true}
ports: [{name: tcp, port: 19001, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-a-ipv6
  labels: {kubernetes.io/service-name: echo-a}
addressType: IPv6
endpoints: [{addresses: ['::1']}]
ports: [{name: tcp, port: 19001}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-a-again
  labels: {kubernetes.io/service-name: echo-a}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1]}]
ports: [{name: tcp, port: 19001}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-b-terminating
  labels: {kubernetes.io/service-name: echo-b}
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
  conditions: {serving: false, terminating: true}
ports: [{name: tcp, port: 19001}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-b-1
  labels: {kubernetes.io/service-name: echo-b}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1]}]
ports: [{name: tcp, port: 19002}]
";

/// The shipped TCPRoute's listener, to `echo-a` and `echo-b`.
fn tcp_route(a: u32, b: u32) -> String {
    format!(
        "\
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: tcp-echo}}
spec:
  parentRefs: [{{name: tcp-echo-gateway, sectionName: tcp-31400}}]
  rules:
  - backendRefs:
    - {{name: echo-a, port: 9000, weight: {a}}}
    - {{name: echo-b, port: 9000, weight: {b}}}
"
    )
}

/// A TCPRoute through the 31400 listener to two selector-less, headless
/// Services: 80/20 is exactly 800/200 of 1000 connections, none refused
/// (the endpoints not ready or not serving are left out), then all to
/// `echo-b`, then all to `echo-a`.
#[test]
fn a_tcp_route_splits_exactly_between_services_of_endpoint_slices() {
    let route = tcp_route(80, 20);
    let mut s = Scenario::tcp_echo_dir(
        "slices-tcp",
        "tcp-echo-gateway-api",
        &[
            ("endpoint-slices.yaml", TCP_SLICES),
            ("tcp-route.yaml", route.as_str()),
        ],
    );
    let mut remote = RemoteClient::start(&s.netns);
    let gateway = format!("{NODE_ADDR}:31400");
    let (one, two, errors) = remote.client.burst_with_errors(&gateway, 1000);
    println!("TCPRoute 80/20 to EndpointSlice Services, 1000 connections: one={one} two={two}");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!((one, two), (800, 200), "80/20 over 1000 connections");

    let event = s.agent.write_rules("tcp-route.yaml", tcp_route(0, 1));
    assert_eq!(event["result"], "applied", "{event}");
    let (one, two, errors) = remote.client.burst_with_errors(&gateway, 20);
    assert_eq!((one, two, errors.len()), (0, 20, 0), "{errors:?}");
    let event = s.agent.write_rules("tcp-route.yaml", tcp_route(1, 0));
    assert_eq!(event["result"], "applied", "{event}");
    let (one, two, errors) = remote.client.burst_with_errors(&gateway, 20);
    assert_eq!((one, two, errors.len()), (20, 0, 0), "{errors:?}");
}

/// `apply -f` of the Gateway, the slices and the TCPRoute 80/20 (an agent
/// started without rules): exactly 80/20 of 100 connections; `delete -f`
/// of `echo-b`'s slices leaves it without endpoints, so its 20 of 100
/// connections are refused.
#[test]
fn endpoint_slices_are_applied_and_deleted() {
    let s = Scenario::tcp_echo_backends("slices-apply", &[]);
    let all = format!(
        "{}\n---\n{TCP_SLICES}---\n{}",
        rule("tcp-echo-gateway-api", "gateway.yaml"),
        tcp_route(80, 20)
    );
    let out = s
        .agent
        .ctl_with_input(&["apply", "-f", "-"], all.as_bytes());
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (
            Some(0),
            "gateway.gateway.networking.k8s.io/tcp-echo-gateway created\n\
             service/echo-a created\n\
             service/echo-b created\n\
             endpointslice/echo-a-draining created\n\
             endpointslice/echo-a-ipv4 created\n\
             endpointslice/echo-a-ipv6 created\n\
             endpointslice/echo-a-again created\n\
             endpointslice/echo-b-terminating created\n\
             endpointslice/echo-b-1 created\n\
             tcproute/tcp-echo created\n"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut remote = RemoteClient::start(&s.netns);
    let gateway = format!("{NODE_ADDR}:31400");
    let (one, two, errors) = remote.client.burst_with_errors(&gateway, 100);
    assert_eq!((one, two, errors.len()), (80, 20, 0), "{errors:?}");

    let slices_of_b = "\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-b-1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-b-terminating}
";
    let out = s
        .agent
        .ctl_with_input(&["delete", "-f", "-"], slices_of_b.as_bytes());
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (
            Some(0),
            "endpointslice/echo-b-1 deleted\nendpointslice/echo-b-terminating deleted\n"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (one, two, errors) = remote.client.burst_with_errors(&gateway, 100);
    assert_eq!(
        (one, two, errors.len()),
        (80, 0, 20),
        "echo-b without endpoints: its share refused: {errors:?}"
    );
}

/// `ratings`, a Service without a selector with a clusterIP: its slice
/// port's `appProtocol: http` makes its port HTTP, so an HTTPRoute binds to
/// it (the L7 proxy), 80/20 to `ratings-v1` (no clusterIP) and the headless
/// `ratings-v3`, each of one slice on a reviews backend.
const HTTP_SLICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: ratings}
spec:
  clusterIP: 127.101.0.9
  ports: [{name: web, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings-v1}
spec:
  ports: [{name: web, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings-v3}
spec:
  clusterIP: None
  ports: [{name: web, port: 9080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ratings-1
  labels: {kubernetes.io/service-name: ratings}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1]}]
ports: [{name: web, port: 19082, appProtocol: http}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ratings-v1-1
  labels: {kubernetes.io/service-name: ratings-v1}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1]}]
ports: [{name: web, port: 19081, appProtocol: http}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ratings-v3-1
  labels: {kubernetes.io/service-name: ratings-v3}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1]}]
ports: [{name: web, port: 19083}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ratings}
spec:
  parentRefs: [{group: '', kind: Service, name: ratings, port: 9080}]
  rules:
  - backendRefs:
    - {name: ratings-v1, port: 9080, weight: 80}
    - {name: ratings-v3, port: 9080, weight: 20}
";

fn count(reply: &Value, answer: &str) -> u64 {
    reply["answers"][answer].as_u64().unwrap_or(0)
}

/// The HTTPRoute on `ratings` (HTTP by its slice's `appProtocol`): exactly
/// 800 of 1000 requests to v1 and 200 to v3, none failed; v2, the
/// endpoint of `ratings` itself, takes none (the route replaces the
/// Service's default route).
#[test]
fn an_http_route_on_a_service_of_endpoint_slices_splits_exactly() {
    let mut s = Scenario::bookinfo_dir(
        "slices-http",
        "bookinfo-gateway-api",
        &[("endpoint-slices.yaml", HTTP_SLICES)],
    );
    let reply = s
        .client
        .call("http 127.101.0.9:9080 /ratings/1 1000 8 keepalive");
    assert_eq!(reply["failed"], 0, "{reply}");
    let (v1, v2, v3) = (
        count(&reply, "v1"),
        count(&reply, "v2"),
        count(&reply, "v3"),
    );
    println!("HTTPRoute 80/20 on an EndpointSlice Service, 1000 requests: v1={v1} v3={v3}");
    assert_eq!(
        (v1, v2, v3),
        (800, 0, 200),
        "80/20 over 1000 requests: {reply}"
    );
}
