//! `GRPCRoute`: the translation of its matches onto the model (paths as
//! Istio writes them, the spec's precedence), its listeners and status,
//! and each refusal with its message.

use super::tls_route_tests::{model_of, resolved};
use crate::{
    http::StringMatch,
    model::{HttpListener, RoutingModel, StatusKey},
};

/// Two gRPC Services (h2c), a Gateway with an HTTP listener on 8080, and
/// a GRPCRoute 80/20 on it; a mesh GRPCRoute on the `echo` Service.
const BASE: &str = r"apiVersion: v1
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
metadata: {name: echo}
spec:
  clusterIP: 127.102.0.1
  ports: [{name: grpc, port: 9090, appProtocol: kubernetes.io/h2c}]
  selector: {app: grpc, version: v1}
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
metadata: {name: gw}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 8080, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: split}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs:
    - {name: grpc-v1, port: 8080, weight: 80}
    - {name: grpc-v2, port: 8080, weight: 20}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo}
spec:
  parentRefs: [{group: '', kind: Service, name: echo, port: 9090}]
  rules:
  - backendRefs: [{name: grpc-v1, port: 8080}]
";

fn changed(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} is in BASE");
    BASE.replacen(from, to, 1)
}

fn listener<'m>(model: &'m RoutingModel, key: &str) -> &'m HttpListener {
    model.http.iter().find(|l| l.key == key).unwrap_or_else(|| {
        let keys: Vec<&str> = model.http.iter().map(|l| l.key.as_str()).collect();
        panic!("no listener {key}: {keys:?}")
    })
}

/// A route of the model: its key, path match, header names, destination
/// hosts.
type Routed = (String, Option<StringMatch>, Vec<String>, Vec<String>);

/// The `split` route's rules replaced by `rules`: `(key, path match,
/// header names, destination hosts)` of each route of the gateway's
/// virtual host, in order.
fn gateway_routes(rules: &str) -> Vec<Routed> {
    let text = changed(
        "  rules:\n  - backendRefs:\n    - {name: grpc-v1, port: 8080, weight: 80}\n    - {name: grpc-v2, port: 8080, weight: 20}\n",
        rules,
    );
    let model = model_of(&text);
    listener(&model, "gateway default/gw port 8080").virtual_hosts[0]
        .routes
        .iter()
        .map(|r| {
            let m = r.matches.first().cloned().unwrap_or_default();
            (
                r.key.clone(),
                m.uri,
                m.headers.keys().cloned().collect(),
                r.destinations
                    .iter()
                    .map(|d| d.destination.host.clone())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn a_grpc_route_is_an_http2_route_on_the_listener_and_the_service() {
    let model = model_of(BASE);
    let gateway = listener(&model, "gateway default/gw port 8080");
    let route = &gateway.virtual_hosts[0].routes[0];
    assert_eq!(route.key, "default/split/rules[0]");
    let split: Vec<(&str, u32, bool)> = route
        .destinations
        .iter()
        .map(|d| (d.destination.host.as_str(), d.destination.weight, d.http2))
        .collect();
    assert_eq!(
        split,
        [
            ("grpc-v1.default.svc.cluster.local", 80, true),
            ("grpc-v2.default.svc.cluster.local", 20, true)
        ],
        "80/20, upstream over h2c (appProtocol kubernetes.io/h2c)"
    );
    let mesh = listener(&model, "mesh echo.default.svc.cluster.local:9090");
    assert_eq!(mesh.virtual_hosts[0].routes[0].key, "default/echo/rules[0]");
    let status = &model.gateway_api_status[&StatusKey {
        kind: "GRPCRoute".into(),
        namespace: "default".into(),
        name: "split".into(),
    }];
    let conditions: Vec<(&str, &str)> = status["parents"][0]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert_eq!(conditions, [("Accepted", "True"), ("ResolvedRefs", "True")]);
    let gw = &model.gateway_api_status[&StatusKey {
        kind: crate::gateway_api::GATEWAY_KIND.into(),
        namespace: "default".into(),
        name: "gw".into(),
    }];
    assert_eq!(
        gw["listeners"][0]["supportedKinds"],
        serde_json::json!([
            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
            {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}
        ]),
        "an HTTP listener takes both, as Istio's"
    );
    assert_eq!(gw["listeners"][0]["attachedRoutes"], 1);
}

#[test]
fn method_matches_are_paths_in_the_specs_precedence() {
    let routes = gateway_routes(
        "  rules:
  - matches: [{headers: [{name: Version, value: two}]}]
    backendRefs: [{name: grpc-v2, port: 8080}]
  - matches: [{method: {service: pkg.Echo}}]
    backendRefs: [{name: grpc-v1, port: 8080}]
  - matches: [{method: {method: Echo}}]
    backendRefs: [{name: grpc-v1, port: 8080}]
  - matches: [{method: {service: pkg.Echo, method: EchoTwo}}]
    backendRefs: [{name: grpc-v2, port: 8080}]
  - matches: [{method: {type: RegularExpression, service: 'pkg\\.E.*', method: 'Echo.*'}}]
    backendRefs: [{name: grpc-v2, port: 8080}]
  - matches: [{method: {type: RegularExpression, service: pkg.Echo}}]
    backendRefs: [{name: grpc-v2, port: 8080}]
  - backendRefs: [{name: grpc-v1, port: 8080}]
",
    );
    let got: Vec<(&str, Option<&StringMatch>, usize)> = routes
        .iter()
        .map(|(key, uri, headers, _)| (key.as_str(), uri.as_ref(), headers.len()))
        .collect();
    let exact = StringMatch::Exact("/pkg.Echo/EchoTwo".into());
    let both = StringMatch::Regex("/pkg\\.E.*/Echo.*".into());
    let prefix = StringMatch::Prefix("/pkg.Echo/".into());
    let service = StringMatch::Regex("/pkg.Echo/.+".into());
    let method = StringMatch::Regex("/[^/]+/Echo".into());
    assert_eq!(
        got,
        [
            // The longer service first, then the longer method.
            ("default/split/rules[3]", Some(&exact), 0),
            ("default/split/rules[4]", Some(&both), 0),
            ("default/split/rules[1]", Some(&prefix), 0),
            ("default/split/rules[5]", Some(&service), 0),
            ("default/split/rules[2]", Some(&method), 0),
            // Headers only: no service, no method, one header.
            ("default/split/rules[0]", None, 1),
            // No match: every call, last.
            ("default/split/rules[6]", None, 0),
        ],
        "the spec's order: characters of the service, of the method, header matches; \
         equals as written"
    );
    assert_eq!(routes[5].2, ["version"], "header names are lower case");
}

#[test]
fn filters_and_unusable_backends_are_an_http_routes() {
    let routes = gateway_routes(
        "  rules:
  - matches: [{method: {service: pkg.Echo, method: Echo}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-set, value: one}]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: x-added, value: two}]}
    - type: RequestMirror
      requestMirror: {backendRef: {name: grpc-v2, port: 8080}}
    backendRefs:
    - {name: grpc-v1, port: 8080, weight: 3}
    - {name: missing, port: 8080, weight: 1}
  - matches: [{method: {service: pkg.Echo, method: Zero}}]
    backendRefs: [{name: grpc-v1, port: 8080, weight: 0}]
",
    );
    assert_eq!(
        routes[0].3,
        [
            "grpc-v1.default.svc.cluster.local",
            crate::model::UNUSABLE_BACKEND
        ],
        "the share of a Service that does not exist is the unusable destination"
    );
    let text = changed(
        "  rules:\n  - backendRefs:\n    - {name: grpc-v1, port: 8080, weight: 80}\n    - {name: grpc-v2, port: 8080, weight: 20}\n",
        "  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-set, value: one}]}
    - type: RequestMirror
      requestMirror: {backendRef: {name: grpc-v2, port: 8080}}
    backendRefs: [{name: grpc-v1, port: 8080, weight: 0}]
",
    );
    let model = model_of(&text);
    let route = &listener(&model, "gateway default/gw port 8080").virtual_hosts[0].routes[0];
    assert_eq!(
        route.headers.request.set.get("x-set").map(String::as_str),
        Some("one")
    );
    assert_eq!(route.mirrors.len(), 1, "the mirror");
    assert_eq!(
        route.direct_response.as_ref().map(|d| d.status),
        Some(503),
        "every weight 0: UNAVAILABLE, as the spec says (503, which the proxy answers a gRPC \
         call as grpc-status 14)"
    );
}

#[test]
fn grpc_route_refusals_say_what_to_do() {
    let rules = "  rules:\n  - backendRefs:\n    - {name: grpc-v1, port: 8080, weight: 80}\n    - {name: grpc-v2, port: 8080, weight: 20}\n";
    let cases = [
        (
            "  rules:\n  - matches: [{method: {type: Exact}}]\n",
            "spec.rules[0].matches[0].method: one or both of 'service' or 'method' must be \
             specified: give the gRPC service (package.Service), its method, or both",
        ),
        (
            "  rules:\n  - matches: [{method: {service: 'pkg/Echo'}}]\n",
            "spec.rules[0].matches[0].method.service: service \"pkg/Echo\" must only contain \
             valid characters (matching ^(?i)\\.?[a-z_][a-z_0-9]*(\\.[a-z_][a-z_0-9]*)*$): \
             write the fully-qualified service name, package.Service",
        ),
        (
            "  rules:\n  - matches: [{method: {service: pkg.Echo, method: 'Echo.*'}}]\n",
            "spec.rules[0].matches[0].method.method: method \"Echo.*\" must only contain valid \
             characters (matching ^[A-Za-z_][A-Za-z_0-9]*$): write the method's name alone",
        ),
        (
            "  rules:\n  - matches: [{method: {type: Prefix, service: pkg.Echo}}]\n",
            "spec.rules[0].matches[0].method.type: method match type \"Prefix\" is not known: \
             use Exact or RegularExpression",
        ),
        (
            "  rules:\n  - filters: [{type: URLRewrite, urlRewrite: {hostname: a.example}}]\n",
            "spec.rules[0].filters[0].type: filter type \"URLRewrite\" is not a GRPCRoute \
             filter: use RequestHeaderModifier, ResponseHeaderModifier or RequestMirror (a gRPC \
             call is not redirected or rewritten)",
        ),
        (
            "  rules:\n  - filters:\n    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: a, value: b}]}}\n    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: c, value: d}]}}\n",
            "spec.rules[0].filters[1].type: RequestHeaderModifier filter cannot be repeated: it \
             is also spec.rules[0].filters[0]; merge the two",
        ),
        (
            "  rules:\n  - matches: [{headers: [{name: version, value: one}, {name: Version, value: two}]}]\n",
            "spec.rules[0].matches[0].headers[1].name: header version is matched twice: match it \
             once",
        ),
        (
            "  rules:\n  - sessionPersistence: {sessionName: a}\n",
            "spec.rules[0].sessionPersistence: sessionPersistence is not supported yet: remove it",
        ),
        (
            "  rules:\n  - backendRefs: [{name: grpc-v1, port: 8080, filters: [{type: RequestRedirect, requestRedirect: {hostname: a.example}}]}]\n",
            "spec.rules[0].backendRefs[0].filters[0].type: filter type \"RequestRedirect\" is \
             not a GRPCRoute filter: use RequestHeaderModifier, ResponseHeaderModifier or \
             RequestMirror (a gRPC call is not redirected or rewritten)",
        ),
    ];
    for (replacement, want) in cases {
        let errors = resolved(&changed(rules, replacement)).expect_err(replacement);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{replacement}: want {want:?} in {errors:#?}"
        );
        assert!(
            errors
                .iter()
                .all(|e| e.contains("(GRPCRoute default/split)")),
            "{replacement}: every error names the route: {errors:#?}"
        );
    }
}

#[test]
fn listener_kinds_and_grants_name_grpc_route() {
    // A listener that allows HTTPRoute only does not take it.
    let text = changed(
        "  - {name: http, port: 8080, protocol: HTTP}\n",
        "  - {name: http, port: 8080, protocol: HTTP, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}\n",
    );
    let model = model_of(&text);
    let status = &model.gateway_api_status[&StatusKey {
        kind: "GRPCRoute".into(),
        namespace: "default".into(),
        name: "split".into(),
    }];
    let accepted = &status["parents"][0]["conditions"][0];
    assert_eq!(
        (accepted["status"].as_str(), accepted["reason"].as_str()),
        (Some("False"), Some("NotAllowedByListeners"))
    );
    assert!(
        accepted["message"]
            .as_str()
            .is_some_and(|m| m.contains("not GRPCRoute")),
        "{accepted}"
    );
    // allowedRoutes naming GRPCRoute: taken.
    let text = changed(
        "  - {name: http, port: 8080, protocol: HTTP}\n",
        "  - {name: http, port: 8080, protocol: HTTP, allowedRoutes: {kinds: [{kind: GRPCRoute}]}}\n",
    );
    model_of(&text);
    // A GRPCRoute on a TCP listener is refused by the listener's check.
    let errors = resolved(&changed(
        "  - {name: http, port: 8080, protocol: HTTP}\n",
        "  - {name: http, port: 8080, protocol: TCP, allowedRoutes: {kinds: [{kind: GRPCRoute}]}}\n",
    ))
    .expect_err("a TCP listener takes no GRPCRoute");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("a TCP listener does not take GRPCRoute: allow TCPRoute")),
        "{errors:#?}"
    );
}

/// `(status, reason)` of the `Accepted` condition of `kind` `name`'s
/// first parent.
fn accepted(model: &RoutingModel, kind: &str, name: &str) -> (String, String) {
    let status = &model.gateway_api_status[&StatusKey {
        kind: kind.into(),
        namespace: "default".into(),
        name: name.into(),
    }];
    let condition = &status["parents"][0]["conditions"][0];
    (
        condition["status"].as_str().unwrap_or_default().to_owned(),
        condition["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The spec: an HTTPRoute and a GRPCRoute with intersecting hostnames on
/// one listener, the older is accepted there, the other not (Accepted
/// False); with hostnames that do not intersect, both are.
#[test]
fn an_http_route_and_a_grpc_route_on_one_host_the_older_wins() {
    let http_route = |created: &str, hostname: &str| {
        format!(
            "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, creationTimestamp: '{created}'}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [{hostname}]
  rules:
  - backendRefs: [{{name: grpc-v2, port: 8080}}]
"
        )
    };
    let grpc = changed(
        "metadata: {name: split}\nspec:\n  parentRefs: [{name: gw}]\n",
        "metadata: {name: split, creationTimestamp: '2026-01-02T00:00:00Z'}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: ['*.example.com']\n",
    );
    let keys = |model: &RoutingModel| -> Vec<String> {
        listener(model, "gateway default/gw port 8080")
            .virtual_hosts
            .iter()
            .flat_map(|v| v.routes.iter().map(|r| r.key.clone()))
            .collect()
    };
    // (the HTTPRoute's creation time, then who is accepted, and what serves).
    for (created, web, split, served) in [
        (
            "2026-01-01T00:00:00Z",
            "Accepted",
            "Conflicted",
            "default/web/rules[0]",
        ),
        (
            "2026-01-03T00:00:00Z",
            "Conflicted",
            "Accepted",
            "default/split/rules[0]",
        ),
    ] {
        let model = model_of(&format!("{grpc}{}", http_route(created, "a.example.com")));
        assert_eq!(
            (
                accepted(&model, "HTTPRoute", "web").1,
                accepted(&model, "GRPCRoute", "split").1
            ),
            (web.to_owned(), split.to_owned()),
            "HTTPRoute created {created}, the GRPCRoute 2026-01-02: the older is accepted"
        );
        assert_eq!(keys(&model), [served], "only the older serves the host");
    }
    let apart = model_of(&format!(
        "{grpc}{}",
        http_route("2026-01-01T00:00:00Z", "a.example.org")
    ));
    assert_eq!(
        (
            accepted(&apart, "HTTPRoute", "web").1,
            accepted(&apart, "GRPCRoute", "split").1
        ),
        ("Accepted".into(), "Accepted".into()),
        "hostnames that do not intersect: both"
    );
}

/// The same on one Service port (GAMMA): the older of an HTTPRoute and a
/// GRPCRoute on the `echo` Service's port is attached, the other not.
#[test]
fn an_http_route_and_a_grpc_route_on_one_service_port_the_older_wins() {
    let grpc = changed(
        "kind: GRPCRoute\nmetadata: {name: echo}\n",
        "kind: GRPCRoute\nmetadata: {name: echo, creationTimestamp: '2026-01-02T00:00:00Z'}\n",
    );
    for (created, web, echo, served) in [
        (
            "2026-01-01T00:00:00Z",
            "Accepted",
            "Conflicted",
            "default/web/rules[0]",
        ),
        (
            "2026-01-03T00:00:00Z",
            "Conflicted",
            "Accepted",
            "default/echo/rules[0]",
        ),
    ] {
        let text = format!(
            "{grpc}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, creationTimestamp: '{created}'}}
spec:
  parentRefs: [{{group: '', kind: Service, name: echo, port: 9090}}]
  rules:
  - backendRefs: [{{name: grpc-v2, port: 8080}}]
"
        );
        let model = model_of(&text);
        assert_eq!(
            (
                accepted(&model, "HTTPRoute", "web").1,
                accepted(&model, "GRPCRoute", "echo").1
            ),
            (web.to_owned(), echo.to_owned()),
            "HTTPRoute created {created}, the GRPCRoute 2026-01-02"
        );
        let routes: Vec<&str> = listener(&model, "mesh echo.default.svc.cluster.local:9090")
            .virtual_hosts
            .iter()
            .flat_map(|v| v.routes.iter().map(|r| r.key.as_str()))
            .collect();
        assert_eq!(routes, [served], "only the older serves the Service port");
    }
}

/// A GRPCRoute backendRef's own `RequestMirror` (the spec's
/// `GRPCBackendRef` filters): its destination's, for the calls sent to it.
#[test]
fn a_backend_ref_mirror_is_its_destinations_own() {
    let text = changed(
        "    - {name: grpc-v2, port: 8080, weight: 20}\n",
        "    - name: grpc-v2\n      port: 8080\n      weight: 20\n      filters:\n      - type: RequestMirror\n        requestMirror: {backendRef: {name: grpc-v1, port: 8080}, percent: 10}\n",
    );
    let model = model_of(&text);
    let route = &listener(&model, "gateway default/gw port 8080").virtual_hosts[0].routes[0];
    let mirrors: Vec<Option<Vec<(String, f64)>>> = route
        .destinations
        .iter()
        .map(|d| {
            d.actions.as_deref().map(|a| {
                a.mirrors
                    .iter()
                    .map(|m| (m.destination.host.clone(), m.percentage))
                    .collect()
            })
        })
        .collect();
    assert_eq!(
        mirrors,
        [
            None,
            Some(vec![("grpc-v1.default.svc.cluster.local".to_owned(), 10.0)])
        ]
    );
    assert!(route.mirrors.is_empty(), "the rule itself mirrors nothing");
}
