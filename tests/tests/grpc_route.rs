//! End-to-end: GRPCRoute on the real agent, with real gRPC backends
//! (`grpc-echo`, h2c) and a real gRPC client (`ts-client grpc`): weighted
//! backendRefs through a Gateway HTTP listener (exact splits, and as many
//! on /metrics), the share of a backend that cannot be used (UNAVAILABLE),
//! a call nothing routes (UNIMPLEMENTED), and a mesh GRPCRoute whose
//! parent is a Service, shifted while an HTTP/2 connection stays open.

use traffic_shift_tests::{Scenario, metric};

/// The gRPC backends: `grpc-v1` and `grpc-v2`.
const BACKENDS: [(&str, &str); 2] = [
    ("grpc-v1", "127.0.0.1:19501"),
    ("grpc-v2", "127.0.0.1:19502"),
];

/// The Gateway's HTTP listener (h2c for GRPCRoutes), on the loopback.
const GATEWAY: &str = "127.0.0.1:8085";
/// The `grpc-echo` Service's clusterIP and port (the mesh route's parent).
const SERVICE: &str = "127.102.0.1:9090";

/// Services, endpoints and the Gateway. The backends' ports are h2c
/// (`appProtocol: kubernetes.io/h2c`): the agent probes them with a TCP
/// connect, since a gRPC server answers no HTTP/1.1 GET.
const SERVICES: &str = r"apiVersion: v1
kind: Service
metadata: {name: grpc-v1}
spec:
  ports: [{name: grpc, port: 8080, appProtocol: kubernetes.io/h2c}]
  selector: {app: grpc, version: v1}
---
apiVersion: v1
kind: Service
metadata: {name: grpc-v2}
spec:
  ports: [{name: grpc, port: 8080, appProtocol: kubernetes.io/h2c}]
  selector: {app: grpc, version: v2}
---
apiVersion: v1
kind: Service
metadata: {name: grpc-echo}
spec:
  clusterIP: 127.102.0.1
  ports: [{name: grpc, port: 9090, appProtocol: kubernetes.io/h2c}]
  selector: {app: grpc}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: grpc-v1}
spec: {address: 127.0.0.1, ports: {grpc: 19501}, labels: {app: grpc, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: grpc-v2}
spec: {address: 127.0.0.1, ports: {grpc: 19502}, labels: {app: grpc, version: v2}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: grpc-gateway}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 8085, protocol: HTTP}
";

/// On the Gateway: `Echo` 80/20; `EchoTwo` 3:1 between grpc-v1 and a
/// Service that does not exist; `EchoThree` routed nowhere.
const GATEWAY_ROUTE: &str = r"apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc-split}
spec:
  parentRefs: [{name: grpc-gateway}]
  hostnames: [grpc.example.com]
  rules:
  - matches:
    - method: {service: gateway_api_conformance.echo_basic.grpcecho.GrpcEcho, method: Echo}
    backendRefs:
    - {name: grpc-v1, port: 8080, weight: 80}
    - {name: grpc-v2, port: 8080, weight: 20}
  - matches:
    - method: {service: gateway_api_conformance.echo_basic.grpcecho.GrpcEcho, method: EchoTwo}
    backendRefs:
    - {name: grpc-v1, port: 8080, weight: 3}
    - {name: grpc-v3, port: 8080, weight: 1}
";

/// The mesh route on the `grpc-echo` Service, `v1` and `v2` weighted.
fn mesh_route(v1: u32, v2: u32) -> String {
    format!(
        r"apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: grpc-mesh}}
spec:
  parentRefs: [{{group: '', kind: Service, name: grpc-echo, port: 9090}}]
  rules:
  - backendRefs:
    - {{name: grpc-v1, port: 8080, weight: {v1}}}
    - {{name: grpc-v2, port: 8080, weight: {v2}}}
"
    )
}

fn scenario(test: &str) -> Scenario {
    let mesh = mesh_route(80, 20);
    Scenario::grpc(
        test,
        &[
            ("services.yaml", SERVICES),
            ("gateway-route.yaml", GATEWAY_ROUTE),
            ("mesh-route.yaml", &mesh),
        ],
        &BACKENDS,
    )
}

/// 1000 unary calls on one HTTP/2 connection through the Gateway's
/// listener: exactly 800 to grpc-v1 and 200 to grpc-v2 (the agent's
/// picks are per call and exact per 1000), as many on /metrics with
/// `request_protocol="grpc"` and `grpc_response_status="0"`; the 3:1 rule with a Service that does not
/// exist: exactly 250 of 1000 calls UNAVAILABLE (the spec's status for the
/// share of an unusable backend); a method no rule routes: UNIMPLEMENTED.
#[test]
fn grpc_route_splits_calls_80_20_through_the_gateway() {
    let mut s = scenario("grpc-gw");
    let calls = s
        .client
        .grpc(GATEWAY, "grpc.example.com", "Echo", 1000, &[]);
    println!(
        "GRPCRoute 80/20, 1000 calls: {:?} {:?}",
        calls.backends, calls.codes
    );
    assert!(calls.errors.is_empty(), "{:?}", calls.errors);
    assert_eq!(
        (
            calls.backend("grpc-v1"),
            calls.backend("grpc-v2"),
            calls.code(0)
        ),
        (800, 200, 1000),
        "80/20 over 1000 calls, every one OK: {calls:?}"
    );
    assert_eq!(
        calls.last["response_headers"]["x-backend"].as_str(),
        calls.last["backend"].as_str(),
        "the backend's header came through: {:?}",
        calls.last
    );

    let page = s.agent.metrics();
    for (backend, want) in [("grpc-v1", 800), ("grpc-v2", 200)] {
        let host = format!("{backend}.default.svc.cluster.local");
        let labels = [
            ("destination_service", host.as_str()),
            ("request_protocol", "grpc"),
            ("response_code", "200"),
            ("grpc_response_status", "0"),
        ];
        assert_eq!(
            metric(&page, "istio_requests_total", &labels),
            want,
            "{backend} on /metrics: {page}"
        );
    }

    let unusable = s
        .client
        .grpc(GATEWAY, "grpc.example.com", "EchoTwo", 1000, &[]);
    println!(
        "3:1 with a missing Service, 1000 calls: {:?}",
        unusable.codes
    );
    assert!(unusable.errors.is_empty(), "{:?}", unusable.errors);
    assert_eq!(
        (
            unusable.backend("grpc-v1"),
            unusable.code(0),
            unusable.code(14)
        ),
        (750, 750, 250),
        "the missing Service's share: UNAVAILABLE, exactly: {unusable:?}"
    );

    let unrouted = s
        .client
        .grpc(GATEWAY, "grpc.example.com", "EchoThree", 3, &[]);
    assert_eq!(unrouted.code(12), 3, "no rule: UNIMPLEMENTED: {unrouted:?}");
    assert_eq!(
        unrouted.last["http_status"], 200,
        "the proxy's own answer is a gRPC one (trailers-only): {:?}",
        unrouted.last
    );
    let other_host = s.client.grpc(GATEWAY, "other.example.com", "Echo", 1, &[]);
    assert_eq!(
        other_host.code(12),
        1,
        "a host the route does not name: no route: {other_host:?}"
    );

    // Istio's grpc_response_status: the backends' 0s (1000 Echo and 750
    // EchoTwo), the unusable share's UNAVAILABLE, the unrouted calls'
    // UNIMPLEMENTED (from the trailers, or from the proxy's own answer).
    let page = s.agent.metrics();
    for (status, want) in [("0", 1750), ("14", 250), ("12", 4)] {
        let labels = [
            ("request_protocol", "grpc"),
            ("grpc_response_status", status),
        ];
        assert_eq!(
            metric(&page, "istio_requests_total", &labels),
            want,
            "grpc_response_status {status} on /metrics: {page}"
        );
    }

    let status = s
        .agent
        .ctl(&["get", "grpcroute", "grpc-split", "-o", "json"]);
    let route: serde_json::Value =
        serde_json::from_slice(&status.stdout).expect("get grpcroute -o json");
    let conditions = &route["status"]["parents"][0]["conditions"];
    assert_eq!(
        (&conditions[0]["status"], &conditions[1]["reason"]),
        (
            &serde_json::json!("True"),
            &serde_json::json!("BackendNotFound")
        ),
        "Accepted, and ResolvedRefs BackendNotFound for grpc-v3: {route}"
    );
}

/// A mesh GRPCRoute whose parent is the `grpc-echo` Service: a client on
/// the node calls the Service's clusterIP, the connect-time hook sends
/// the connection to the proxy, and its calls split 80/20 exactly. Then
/// the route shifts to 0/100 while that HTTP/2 connection stays open: its
/// next calls, on the same connection, all go to grpc-v2 and none fails.
#[test]
fn mesh_grpc_route_shifts_calls_on_an_open_connection() {
    let mut s = scenario("grpc-mesh");
    s.client
        .grpc_open(SERVICE, "grpc-echo.default.svc.cluster.local:9090");
    let before = s.client.grpc_held("Echo", 100);
    println!("mesh 80/20, 100 calls: {:?}", before.backends);
    assert!(before.errors.is_empty(), "{:?}", before.errors);
    assert_eq!(
        (before.backend("grpc-v1"), before.backend("grpc-v2")),
        (80, 20),
        "80/20 over 100 calls on one connection: {before:?}"
    );

    let event = s.agent.write_rules("mesh-route.yaml", mesh_route(0, 100));
    assert_eq!(event["result"], "applied", "{event}");
    let after = s.client.grpc_held("Echo", 100);
    println!("mesh 0/100 on the same connection: {:?}", after.backends);
    assert!(
        after.errors.is_empty(),
        "the open connection keeps working: {:?}",
        after.errors
    );
    assert_eq!(
        (
            after.backend("grpc-v1"),
            after.backend("grpc-v2"),
            after.code(0)
        ),
        (0, 100, 100),
        "every call after the shift to grpc-v2: {after:?}"
    );
    // A new connection follows the shift too.
    let fresh = s.client.grpc(SERVICE, "grpc-echo", "Echo", 10, &[]);
    assert_eq!(fresh.backend("grpc-v2"), 10, "{fresh:?}");
}
