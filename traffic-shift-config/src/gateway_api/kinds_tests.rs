//! What the conformance cases GatewayInvalidRouteKind,
//! HTTPRouteBackendProtocolWebSocket and HTTPRoute303/307/308Redirect
//! need of the translation: a listener's unknown route kinds reported in
//! status (not refused), `appProtocol: kubernetes.io/ws` on the L7 path,
//! and the extended redirect codes.

use super::tests::model_of;
use crate::model::{RoutingModel, StatusKey};

fn status<'m>(model: &'m RoutingModel, kind: &str, name: &str) -> &'m serde_json::Value {
    &model.gateway_api_status[&StatusKey {
        kind: kind.into(),
        namespace: "default".into(),
        name: name.into(),
    }]
}

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.0.0.1
  ports:
  - {name: http, port: 80, appProtocol: http}
  - {name: ws, port: 81, appProtocol: kubernetes.io/ws}
  selector: {app: web}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web}
spec: {address: 127.0.0.1, labels: {app: web}}
";

#[test]
fn unknown_route_kinds_of_a_listener_are_reported_not_refused() {
    let model = model_of(&format!(
        "{SERVICE}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: only-invalid}}
spec:
  gatewayClassName: istio
  listeners:
  - {{name: http, port: 8080, protocol: HTTP, allowedRoutes: {{kinds: [{{kind: InvalidRoute}}]}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: both}}
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: 8081
    protocol: HTTP
    allowedRoutes: {{kinds: [{{kind: InvalidRoute}}, {{group: example.com, kind: HTTPRoute}}, {{kind: HTTPRoute}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web}}
spec:
  parentRefs: [{{name: only-invalid}}, {{name: both}}]
  rules:
  - backendRefs: [{{name: web, port: 80}}]
"
    ));
    for (gateway, kinds, attached) in [("only-invalid", vec![], 0), ("both", vec!["HTTPRoute"], 1)]
    {
        let listener = &status(&model, super::GATEWAY_KIND, gateway)["listeners"][0];
        let supported: Vec<&str> = listener["supportedKinds"]
            .as_array()
            .expect("supportedKinds")
            .iter()
            .map(|k| k["kind"].as_str().expect("kind"))
            .collect();
        assert_eq!(supported, kinds, "{gateway}: {listener}");
        assert_eq!(
            listener["attachedRoutes"], attached,
            "{gateway}: {listener}"
        );
        let resolved = &listener["conditions"][2];
        assert_eq!(
            (&resolved["type"], &resolved["status"], &resolved["reason"]),
            (
                &"ResolvedRefs".into(),
                &"False".into(),
                &"InvalidRouteKinds".into()
            ),
            "{gateway}: {listener}"
        );
    }
    let message =
        status(&model, super::GATEWAY_KIND, "both")["listeners"][0]["conditions"][2]["message"]
            .as_str()
            .expect("message");
    assert!(
        message.contains("gateway.networking.k8s.io/InvalidRoute, example.com/HTTPRoute"),
        "{message}"
    );
    let route = status(&model, "HTTPRoute", "web");
    assert_eq!(
        route["parents"][0]["conditions"][0]["reason"], "NotAllowedByListeners",
        "{route}"
    );
    assert_eq!(
        route["parents"][1]["conditions"][0]["reason"], "Accepted",
        "{route}"
    );
}

#[test]
fn a_websocket_port_is_served_by_the_l7_proxy() {
    let model = model_of(SERVICE);
    let ports: Vec<u16> = model
        .http
        .iter()
        .filter(|l| l.key.starts_with("mesh web.default.svc.cluster.local"))
        .map(|l| l.port)
        .collect();
    assert_eq!(ports, [80, 81], "both ports HTTP");
}

#[test]
fn the_extended_redirect_codes_are_read() {
    for code in [303, 307, 308] {
        let model = model_of(&format!(
            "{SERVICE}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web}}
spec:
  parentRefs: [{{group: '', kind: Service, name: web, port: 80}}]
  rules:
  - filters: [{{type: RequestRedirect, requestRedirect: {{statusCode: {code}}}}}]
"
        ));
        let listener = model
            .http
            .iter()
            .find(|l| l.port == 80)
            .expect("the mesh listener");
        let redirect = listener.virtual_hosts[0].routes[0]
            .redirect
            .as_ref()
            .expect("a redirect");
        assert_eq!(redirect.redirect_code, code);
    }
}
