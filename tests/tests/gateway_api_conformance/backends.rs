//! The suite's cases about backends and route kinds:
//! HTTPRouteNoBackendRefs, HTTPRouteNamedRule, HTTPRouteServiceTypes,
//! HTTPRouteBackendProtocolH2C, HTTPRouteBackendProtocolWebSocket,
//! HTTPRouteDisallowedKind and GatewayInvalidRouteKind. The suite's
//! backends listen on 3000 (HTTP/1.1) and 3001 (h2c); here one `http-echo`
//! per version serves both, so the EndpointSlices and `targetPort`s of
//! HTTPRouteServiceTypes name its port, 19081.

use std::{
    io::{BufReader, Read, Write},
    net::SocketAddr,
};

use serde_json::Value;
use traffic_shift_tests::{Scenario, http_client};

use super::{
    SAME_NAMESPACE, accepted_and_resolved, base, cond, conditions, matching::check, resource, start,
};

/// HTTPRouteNoBackendRefs, HTTPRouteNamedRule and
/// HTTPRouteServiceTypes, one route each on same-namespace.
const ROUTES: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: omitted-backendrefs, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches: [{path: {type: Exact, value: /omitted-no-forward}}]
  - matches: [{path: {type: Exact, value: /empty-no-forward}}]
    backendRefs: []
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-named-rules, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - name: named-rule
    matches: [{path: {type: PathPrefix, value: /named}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /unnamed}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: service-types, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches: [{path: {type: Exact, value: /manual-endpointslices}}]
    backendRefs: [{name: manual-endpointslices, port: 8080}]
  - matches: [{path: {type: Exact, value: /headless}}]
    backendRefs: [{name: headless, port: 8080}]
  - matches: [{path: {type: Exact, value: /headless-manual-endpointslices}}]
    backendRefs: [{name: headless-manual-endpointslices, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: manual-endpointslices, namespace: gateway-conformance-infra}
spec:
  ports: [{name: first-port, protocol: TCP, port: 8080, targetPort: 19081}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: manual-endpointslices-ip4
  namespace: gateway-conformance-infra
  labels: {kubernetes.io/service-name: manual-endpointslices}
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
  conditions: {ready: true, serving: true, terminating: false}
ports: [{name: first-port, port: 19081, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: manual-endpointslices-ip6
  namespace: gateway-conformance-infra
  labels: {kubernetes.io/service-name: manual-endpointslices}
addressType: IPv6
ports: [{name: first-port, port: 19081, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: gateway-conformance-infra}
spec:
  clusterIP: None
  selector: {app: infra-backend-v1}
  ports: [{name: first-port, protocol: TCP, port: 8080, targetPort: 19081}]
---
apiVersion: v1
kind: Service
metadata: {name: headless-manual-endpointslices, namespace: gateway-conformance-infra}
spec:
  clusterIP: None
  ports: [{name: first-port, protocol: TCP, port: 8080, targetPort: 19081}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: headless-manual-endpointslices-ip4
  namespace: gateway-conformance-infra
  labels: {kubernetes.io/service-name: headless-manual-endpointslices}
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
  conditions: {ready: true, serving: true, terminating: false}
ports: [{name: first-port, port: 19081, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: headless-manual-endpointslices-ip6
  namespace: gateway-conformance-infra
  labels: {kubernetes.io/service-name: headless-manual-endpointslices}
addressType: IPv6
ports: [{name: first-port, port: 19081, protocol: TCP}]
";

/// HTTPRouteNoBackendRefs (a rule without backendRefs, or with none,
/// answers 500), HTTPRouteNamedRule (a rule's `name` is read) and
/// HTTPRouteServiceTypes (a selector-less Service with EndpointSlices, a
/// headless one with a selector, a headless one with EndpointSlices: each
/// reaches infra-backend-v1); every route Accepted with its references
/// resolved.
#[test]
fn httproute_omitted_backend_refs_named_rules_and_service_types() {
    let mut s = start("gwc-backends", ROUTES);
    let e = "example.com";
    check(
        &mut s,
        "HTTPRouteNamedRule",
        SAME_NAMESPACE,
        &[
            (e, "/named", "", Some("v1")),
            (e, "/unnamed", "", Some("v2")),
        ],
    );
    check(
        &mut s,
        "HTTPRouteServiceTypes",
        SAME_NAMESPACE,
        &[
            (e, "/manual-endpointslices", "", Some("v1")),
            (e, "/headless", "", Some("v1")),
            (e, "/headless-manual-endpointslices", "", Some("v1")),
        ],
    );
    check(
        &mut s,
        "HTTPRouteNoBackendRefs",
        SAME_NAMESPACE,
        &[(e, "/forward", "", Some("v1"))],
    );
    for path in ["/omitted-no-forward", "/empty-no-forward"] {
        let reply = s.client.call(&format!(
            "http {SAME_NAMESPACE} {path} 4 1 keepalive host:{e}"
        ));
        assert_eq!(
            super::count(&reply, "status", "500"),
            4,
            "HTTPRouteNoBackendRefs {path}: {reply}"
        );
    }
    for name in ["omitted-backendrefs", "http-named-rules", "service-types"] {
        accepted_and_resolved(&s, name);
    }
}

/// One h2c request (HTTP/2 with prior knowledge) to the Gateway
/// same-namespace: its status and `http-echo`'s JSON.
fn h2c_get(s: &Scenario, path: &str) -> (u16, Value) {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let addr: SocketAddr = SAME_NAMESPACE.parse().expect("address");
    s.netns.run_in(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .expect("h2c handshake");
            tokio::spawn(connection);
            let request = hyper::Request::get(format!("http://example.com{path}"))
                .body(Empty::<Bytes>::new())
                .expect("request");
            let response = sender.send_request(request).await.expect("h2c request");
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
        })
    })
}

/// An upgrade to `websocket` on the Gateway same-namespace, then `frame`
/// sent and what comes back. `http-echo` answers 101 and sends every byte
/// back: a WebSocket frame comes back as sent (it is not a WebSocket
/// server; the proxy's part, the upgrade and the splice, is the same).
fn websocket_echo(s: &Scenario, path: &str, frame: &[u8]) -> (u16, Vec<u8>) {
    let addr: SocketAddr = SAME_NAMESPACE.parse().expect("address");
    s.netns.run_in(|| {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        let head = format!(
            "GET {path} HTTP/1.1\r\nhost: example.com\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
             sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).expect("request head");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let response = http_client::read_response(&mut reader, true).expect("response head");
        if response.status != 101 {
            return (response.status, Vec::new());
        }
        stream.write_all(frame).expect("frame");
        let mut back = vec![0; frame.len()];
        reader.read_exact(&mut back).expect("frame back");
        (response.status, back)
    })
}

/// HTTPRouteBackendProtocolH2C and HTTPRouteBackendProtocolWebSocket: a
/// route to port 8081 (`appProtocol: kubernetes.io/h2c`) takes an h2c
/// request, which reaches infra-backend-v1 over HTTP/2; a route to port
/// 8082 (`kubernetes.io/ws`) takes a WebSocket upgrade, spliced both ways.
#[test]
fn httproute_backend_protocols_h2c_and_websocket() {
    let route = |name: &str, port: u16| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: gateway-conformance-infra}}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - backendRefs: [{{name: infra-backend-v1, port: {port}}}]
"
        )
    };
    let mut s = start("gwc-protocols", &route("backend-protocol-h2c", 8081));
    let (status, body) = h2c_get(&s, "/");
    assert_eq!(status, 200, "HTTPRouteBackendProtocolH2C: {body}");
    assert_eq!(body["version"], "v1", "{body}");
    assert_eq!(
        body["protocol"], "HTTP/2.0",
        "h2c to the backend too: {body}"
    );

    let event = s.agent.write_rules(
        "conformance.yaml",
        format!("{}---\n{}", base(), route("backend-protocol-ws", 8082)),
    );
    assert_eq!(event["result"], "applied", "{event}");
    // "Websocket Support!" as a masked text frame, then a masked binary
    // frame of 1..=7, as the suite sends them.
    let mut frames = vec![0x81, 0x80 | 0x12, 1, 2, 3, 4];
    frames.extend(
        b"Websocket Support!"
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]),
    );
    frames.extend([0x82, 0x80 | 0x07, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7]);
    let (status, back) = websocket_echo(&s, "/ws", &frames);
    assert_eq!(status, 101, "HTTPRouteBackendProtocolWebSocket");
    assert_eq!(back, frames, "every byte back through the splice");
}

/// The Gateways and route of HTTPRouteDisallowedKind and
/// GatewayInvalidRouteKind.
const KINDS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tlsroutes-only, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: istio
  listeners:
  - name: tls
    port: 8445
    protocol: TLS
    tls: {mode: Passthrough}
    allowedRoutes:
      namespaces: {from: Same}
      kinds: [{kind: TLSRoute}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: disallowed-kind, namespace: gateway-conformance-infra}
spec:
  parentRefs:
  - {name: tlsroutes-only, namespace: gateway-conformance-infra}
  rules:
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-only-invalid-route-kind, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: 8096
    protocol: HTTP
    allowedRoutes:
      namespaces: {from: All}
      kinds: [{kind: InvalidRoute}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-supported-and-invalid-route-kind, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: 8097
    protocol: HTTP
    allowedRoutes:
      namespaces: {from: All}
      kinds: [{kind: InvalidRoute}, {kind: HTTPRoute}]
";

/// HTTPRouteDisallowedKind (the suite's TLS listener on 443 is 8445 here):
/// an HTTPRoute on a listener that takes TLSRoutes only is not accepted
/// (NotAllowedByListeners), its references still resolved, and the
/// listener counts no route. GatewayInvalidRouteKind (the suite's port 80
/// is 8096 and 8097 here): a listener whose `allowedRoutes.kinds` names a
/// kind that is no route kind reports it (`ResolvedRefs` False,
/// `InvalidRouteKinds`) and supports only the valid kinds written.
#[test]
fn httproute_disallowed_kind_and_gateway_invalid_route_kind() {
    let s = start("gwc-kinds", KINDS);
    let route = resource(
        &s,
        "httproute",
        "gateway-conformance-infra",
        "disallowed-kind",
    );
    assert_eq!(
        conditions(&route, 0),
        [
            cond("Accepted", "False", "NotAllowedByListeners"),
            cond("ResolvedRefs", "True", "ResolvedRefs")
        ],
        "HTTPRouteDisallowedKind"
    );
    let gateway = resource(&s, "gtw", "gateway-conformance-infra", "tlsroutes-only");
    assert_eq!(
        gateway["status"]["listeners"][0]["attachedRoutes"], 0,
        "{gateway}"
    );

    for (name, supported) in [
        ("gateway-only-invalid-route-kind", vec![]),
        (
            "gateway-supported-and-invalid-route-kind",
            vec!["HTTPRoute"],
        ),
    ] {
        let gateway = resource(&s, "gtw", "gateway-conformance-infra", name);
        let listener = &gateway["status"]["listeners"][0];
        let kinds: Vec<&str> = listener["supportedKinds"]
            .as_array()
            .expect("supportedKinds")
            .iter()
            .map(|k| {
                assert_eq!(k["group"], "gateway.networking.k8s.io", "{k}");
                k["kind"].as_str().expect("kind")
            })
            .collect();
        assert_eq!(kinds, supported, "GatewayInvalidRouteKind {name}");
        let resolved = listener["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|c| c["type"] == "ResolvedRefs")
            .unwrap_or_else(|| panic!("no ResolvedRefs: {gateway}"));
        assert_eq!(
            (&resolved["status"], &resolved["reason"]),
            (&"False".into(), &"InvalidRouteKinds".into()),
            "GatewayInvalidRouteKind {name}: {resolved}"
        );
        assert_eq!(listener["attachedRoutes"], 0, "{gateway}");
    }
}

/// HTTPRouteObservedGenerationBump, the route applied with `traffic-shift
/// apply` (the API server's part: `apply` bumps `metadata.generation` when
/// a resource changes): generation 1 at first, then the backendRef changed
/// to infra-backend-v2, generation 2 and every condition observes it;
/// applied unchanged, it stays 2.
#[test]
fn httproute_observed_generation_bump() {
    let mut s = start("gwc-generation", "");
    let file = std::env::temp_dir().join(format!("gwc-generation-{}.yaml", std::process::id()));
    let apply = |s: &Scenario, version: u8, expected: &str| {
        std::fs::write(
            &file,
            format!(
                "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: observed-generation-bump, namespace: gateway-conformance-infra}}
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - backendRefs: [{{name: infra-backend-v{version}, port: 8080}}]
"
            ),
        )
        .expect("write the route");
        let out = s.agent.ctl(&["apply", "-f", &file.display().to_string()]);
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).as_ref()
            ),
            (Some(0), expected),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let generations = |s: &Scenario| -> (i64, Vec<i64>) {
        let route = resource(
            s,
            "httproute",
            "gateway-conformance-infra",
            "observed-generation-bump",
        );
        let observed = route["status"]["parents"][0]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .map(|c| {
                c["observedGeneration"]
                    .as_i64()
                    .expect("observedGeneration")
            })
            .collect();
        (
            route["metadata"]["generation"].as_i64().unwrap_or(1),
            observed,
        )
    };
    let e = "example.com";
    apply(&s, 1, "httproute/observed-generation-bump created\n");
    assert_eq!(generations(&s), (1, vec![1, 1]));
    check(
        &mut s,
        "before",
        SAME_NAMESPACE,
        &[(e, "/", "", Some("v1"))],
    );

    apply(&s, 2, "httproute/observed-generation-bump configured\n");
    assert_eq!(
        generations(&s),
        (2, vec![2, 2]),
        "HTTPRouteObservedGenerationBump"
    );
    accepted_and_resolved(&s, "observed-generation-bump");
    check(&mut s, "after", SAME_NAMESPACE, &[(e, "/", "", Some("v2"))]);

    apply(&s, 2, "httproute/observed-generation-bump unchanged\n");
    assert_eq!(generations(&s), (2, vec![2, 2]), "unchanged: no bump");
    let _ = std::fs::remove_file(&file);
}
