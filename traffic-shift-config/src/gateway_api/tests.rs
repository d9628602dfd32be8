//! The Gateway API kinds: the seeds' shifts translated into the model (the
//! same kernel paths as their Istio form), each error with its message,
//! the spec's precedence, and every shipped rules directory resolving.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

mod claims;
mod merge;

use crate::{
    RulesFile, load_dir,
    model::{HttpListener, HttpRoute, RoutingModel, TcpRoute},
    parse_file, parse_file_all, resolve, resolve_all,
};

fn repo_rules() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules")
}

/// A shipped rules directory, with `replace` (an `examples/` file) in
/// place of the file that defines the same resource, or added to them
/// when none does (`rollout.yaml`).
fn shipped(dir: &str, replace: Option<&str>) -> Vec<RulesFile> {
    let dir = repo_rules().join(dir);
    let (mut files, errors) = load_dir(&dir);
    assert!(errors.is_empty(), "{}: {errors:?}", dir.display());
    if let Some(example) = replace {
        let path = dir.join(example);
        let text = std::fs::read_to_string(&path).expect("read the example");
        let example = parse_file(&path, &text).unwrap_or_else(|e| panic!("{e}"));
        let id = example.resources[0].source().id();
        let before = files.len();
        files.retain(|f| !f.resources.iter().any(|r| r.source().id() == id));
        assert!(
            files.len() + 1 >= before,
            "{} replaces one file at most",
            path.display()
        );
        files.push(example);
    }
    files
}

fn model(dir: &str, replace: Option<&str>) -> RoutingModel {
    resolve(&shipped(dir, replace)).unwrap_or_else(|e| panic!("{dir} {replace:?}: {e}"))
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|a| a.parse().expect("address")).collect()
}

fn route<'m>(model: &'m RoutingModel, key: &str) -> &'m TcpRoute {
    model
        .routes
        .iter()
        .find(|r| r.key == key)
        .unwrap_or_else(|| {
            let keys: Vec<&str> = model.routes.iter().map(|r| r.key.as_str()).collect();
            panic!("no route {key}: {keys:?}")
        })
}

/// `(host, weight, endpoints)` of each destination.
fn split(destinations: &[crate::model::Destination]) -> Vec<(String, u32, Vec<SocketAddr>)> {
    destinations
        .iter()
        .map(|d| {
            (
                d.host.clone(),
                d.weight,
                d.endpoints.iter().map(|e| e.addr).collect(),
            )
        })
        .collect()
}

#[test]
fn tcp_echo_through_the_gateway_is_the_istio_forms_kernel_route() {
    let model = model(
        "tcp-echo-gateway-api",
        Some("examples/tcp-route-20-v2.yaml"),
    );
    let keys: Vec<&str> = model.routes.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "default/tcp-echo/ports[0]/port 9000",
            "default/tcp-echo/rules[0]/gateway default/tcp-echo-gateway port 31400",
        ],
        "one gateway route per listener, the Service's own mesh route"
    );
    let gateway = route(
        &model,
        "default/tcp-echo/rules[0]/gateway default/tcp-echo-gateway port 31400",
    );
    assert_eq!(gateway.gateway.as_deref(), Some("default/tcp-echo-gateway"));
    assert_eq!(gateway.listeners, addrs(&["0.0.0.0:31400", "[::]:31400"]));
    let v1 = addrs(&["127.0.0.1:19001", "[::1]:19001"]);
    let v2 = addrs(&["127.0.0.1:19002", "[::1]:19002"]);
    assert_eq!(
        split(&gateway.destinations),
        [
            (
                "tcp-echo-v1.default.svc.cluster.local".into(),
                80,
                v1.clone()
            ),
            (
                "tcp-echo-v2.default.svc.cluster.local".into(),
                20,
                v2.clone()
            ),
        ]
    );
    assert_eq!(
        model.gateways,
        [crate::model::GatewaySelector {
            gateway: "default/tcp-echo-gateway".into(),
            selector: crate::Labels::new(),
        }],
        "a Gateway API Gateway is served on every node"
    );

    // The Istio form of the same step: the same listeners, endpoints and
    // weights, so the same kernel tables.
    let istio = model_istio_tcp_echo();
    let istio_gateway = istio
        .routes
        .iter()
        .find(|r| r.gateway.is_some())
        .expect("the Istio form's gateway route");
    assert_eq!(gateway.listeners, istio_gateway.listeners);
    let weights_and_endpoints = |r: &TcpRoute| -> Vec<(u32, Vec<SocketAddr>)> {
        r.destinations
            .iter()
            .map(|d| (d.weight, d.endpoints.iter().map(|e| e.addr).collect()))
            .collect()
    };
    assert_eq!(
        weights_and_endpoints(gateway),
        weights_and_endpoints(istio_gateway)
    );
    assert_eq!(gateway.selection, istio_gateway.selection);

    // Clients on the node: the Service's clusterIPs, every endpoint.
    let mesh = route(&model, "default/tcp-echo/ports[0]/port 9000");
    assert_eq!(mesh.gateway, None);
    assert_eq!(
        mesh.listeners,
        addrs(&["127.100.0.1:9000", "[fd00:7473::1]:9000"])
    );
    assert_eq!(mesh.service_host, "tcp-echo.default.svc.cluster.local");
    let mut all: Vec<SocketAddr> = mesh.destinations[0]
        .endpoints
        .iter()
        .map(|e| e.addr)
        .collect();
    all.sort();
    let mut want = [v1, v2].concat();
    want.sort();
    assert_eq!(all, want);
}

fn model_istio_tcp_echo() -> RoutingModel {
    let dir = repo_rules().join("tcp-echo");
    let files: Vec<RulesFile> = [
        "service-entry.yaml",
        "destination-rule.yaml",
        "gateway.yaml",
        "examples/vs-20-v2.yaml",
    ]
    .iter()
    .map(|f| {
        let path = dir.join(f);
        parse_file(&path, &std::fs::read_to_string(&path).expect("read")).expect("parses")
    })
    .collect();
    resolve(&files).expect("the Istio form resolves")
}

fn listener<'m>(model: &'m RoutingModel, key: &str) -> &'m HttpListener {
    model.http.iter().find(|l| l.key == key).unwrap_or_else(|| {
        let keys: Vec<&str> = model.http.iter().map(|l| l.key.as_str()).collect();
        panic!("no listener {key}: {keys:?}")
    })
}

fn http_split(route: &HttpRoute) -> Vec<(String, u32, Vec<SocketAddr>)> {
    let destinations: Vec<_> = route
        .destinations
        .iter()
        .map(|d| d.destination.clone())
        .collect();
    split(&destinations)
}

#[test]
fn bookinfo_reviews_bound_to_its_service_is_a_mesh_listener_of_the_proxy() {
    let model = model(
        "bookinfo-gateway-api",
        Some("examples/route-reviews-50-v3.yaml"),
    );
    let mesh = listener(&model, "mesh reviews.default.svc.cluster.local:9080");
    assert_eq!(mesh.gateway, None);
    assert_eq!(mesh.port, 9080);
    assert_eq!(
        mesh.listeners,
        addrs(&["127.101.0.1:9080", "[fd00:7473::2]:9080"])
    );
    assert_eq!(mesh.virtual_hosts.len(), 1);
    let routes = &mesh.virtual_hosts[0].routes;
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0].key, "default/reviews/rules[0]");
    assert_eq!(
        http_split(&routes[0]),
        [
            (
                "reviews-v1.default.svc.cluster.local".into(),
                50,
                addrs(&["127.0.0.1:19081"])
            ),
            (
                "reviews-v3.default.svc.cluster.local".into(),
                50,
                addrs(&["127.0.0.1:19083"])
            ),
        ]
    );
    assert!(
        routes[0].matches.iter().all(|m| m.port == Some(9080)),
        "bound to port 9080: {:?}",
        routes[0].matches
    );

    // The gateway: /reviews as whole path segments, to every version.
    let gateway = listener(&model, "gateway default/bookinfo-gateway port 8080");
    assert_eq!(gateway.listeners, addrs(&["0.0.0.0:8080", "[::]:8080"]));
    let route = &gateway.virtual_hosts[0].routes[0];
    assert_eq!(route.key, "default/bookinfo/rules[0]");
    let uris: Vec<_> = route.matches.iter().map(|m| m.uri.clone()).collect();
    assert_eq!(
        uris,
        [
            Some(crate::StringMatch::Exact("/reviews".into())),
            Some(crate::StringMatch::Prefix("/reviews/".into())),
        ]
    );
    assert_eq!(http_split(route)[0].2.len(), 3, "reviews: every version");

    // All to v3, and jason to v2 (a header match before the catch-all).
    let model = self::model(
        "bookinfo-gateway-api",
        Some("examples/route-reviews-v3.yaml"),
    );
    let routes =
        &listener(&model, "mesh reviews.default.svc.cluster.local:9080").virtual_hosts[0].routes;
    assert_eq!(http_split(&routes[0])[0].1, 1);
    assert_eq!(
        http_split(&routes[0])[0].0,
        "reviews-v3.default.svc.cluster.local"
    );
    let model = self::model(
        "bookinfo-gateway-api",
        Some("examples/route-reviews-jason-v2.yaml"),
    );
    let routes =
        &listener(&model, "mesh reviews.default.svc.cluster.local:9080").virtual_hosts[0].routes;
    let keys: Vec<&str> = routes.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        ["default/reviews/rules[0]", "default/reviews/rules[1]"]
    );
    assert_eq!(
        routes[0].matches[0].headers.get("end-user"),
        Some(&crate::StringMatch::Exact("jason".into()))
    );
}

/// Every directory of `rules/` resolves as shipped, and with each of its
/// `examples/` in place of the file it replaces.
#[test]
fn every_rules_directory_resolves_with_each_example() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo_rules())
        .expect("rules/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 4, "{dirs:?}");
    for dir in dirs {
        let name = dir.file_name().and_then(|n| n.to_str()).expect("name");
        model(name, None);
        let Ok(examples) = std::fs::read_dir(dir.join("examples")) else {
            continue;
        };
        for example in examples {
            let path = example.expect("entry").path();
            let file = path.file_name().and_then(|n| n.to_str()).expect("name");
            model(name, Some(&format!("examples/{file}")));
        }
    }
}

const FILE: &str = "rules/r.yaml";

/// The errors of one file (parse, then resolve).
fn errors_of(text: &str) -> Vec<String> {
    let file = match parse_file_all(Path::new(FILE), text) {
        Ok(file) => file,
        Err(errors) => return errors.iter().map(ToString::to_string).collect(),
    };
    match resolve_all(&[file]).0 {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// Each file of a shipped directory, as `(path, text)`.
fn texts(dir: &str, files: &[&str]) -> Vec<(PathBuf, String)> {
    files
        .iter()
        .map(|f| {
            let path = repo_rules().join(dir).join(f);
            let text = std::fs::read_to_string(&path).expect("read");
            (PathBuf::from(format!("rules/{dir}/{f}")), text)
        })
        .collect()
}

fn resolve_errors(texts: &[(PathBuf, String)]) -> Vec<String> {
    let files: Vec<RulesFile> = texts
        .iter()
        .map(|(path, text)| parse_file(path, text).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    match resolve_all(&files).0 {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_istio_and_gateway_api_forms_of_one_service_are_refused_naming_the_istio_one() {
    let istio = texts(
        "tcp-echo",
        &[
            "service-entry.yaml",
            "destination-rule.yaml",
            "gateway.yaml",
            "virtual-service.yaml",
        ],
    );
    let mut gateway_api = texts(
        "tcp-echo-gateway-api",
        &[
            "gateway.yaml",
            "services.yaml",
            "workload-entries.yaml",
            "tcp-route.yaml",
        ],
    );
    for (_, text) in &mut gateway_api {
        *text = text.replace("name: tcp-echo-gateway\n", "name: tcp-echo-k8s-gateway\n");
    }
    // Whatever the order of the files, the Gateway API one is refused.
    for texts in [
        [istio.clone(), gateway_api.clone()].concat(),
        [gateway_api.clone(), istio.clone()].concat(),
    ] {
        assert_eq!(
            resolve_errors(&texts),
            [
                "rules/tcp-echo-gateway-api/tcp-route.yaml: document 1 (TCPRoute \
                 default/tcp-echo): spec.rules[0]: gateway default/tcp-echo-k8s-gateway listener \
                 0.0.0.0:31400 is already routed by VirtualService default/tcp-echo \
                 (rules/tcp-echo/virtual-service.yaml document 1) tcp[0] (gateway \
                 default/tcp-echo-gateway): an address and port where gateways accept takes one \
                 TCP route; merge the two rules, remove one, or bind the servers to different \
                 addresses (line 12)",
                "rules/tcp-echo-gateway-api/services.yaml: document 1 (Service default/tcp-echo): \
                 spec.ports[0]: service address 127.100.0.1:9000 is already routed by \
                 VirtualService default/tcp-echo (rules/tcp-echo/virtual-service.yaml document 1) \
                 tcp[0]: a service address and port takes one TCP route; merge the two rules or \
                 remove one (line 14)",
            ]
        );
    }

    // The same Gateway name in both kinds.
    let same_name = texts("tcp-echo-gateway-api", &["gateway.yaml"]);
    assert_eq!(
        resolve_errors(&[istio.clone(), same_name].concat()),
        ["rules/tcp-echo-gateway-api/gateway.yaml: document 1 \
          (Gateway.gateway.networking.k8s.io default/tcp-echo-gateway): metadata.name: \
          Gateway.gateway.networking.k8s.io default/tcp-echo-gateway has the name of the Istio \
          Gateway default/tcp-echo-gateway (rules/tcp-echo/gateway.yaml document 1): routes and \
          metrics name a gateway by namespace/name, so the two kinds may not share one here; \
          rename one (line 9)"]
    );

    // The same host: a Service reviews and Istio's ServiceEntry
    // reviews.default.svc.cluster.local.
    let bookinfo = texts("bookinfo", &["service-entry.yaml"]);
    // The whole Gateway API form: the routes that name the refused Service
    // are left out, without errors of their own.
    let services = texts(
        "bookinfo-gateway-api",
        &[
            "services.yaml",
            "workload-entries.yaml",
            "gateway.yaml",
            "http-route.yaml",
        ],
    );
    assert_eq!(
        resolve_errors(&[services, bookinfo].concat()),
        [
            "rules/bookinfo-gateway-api/services.yaml: document 1 (Service default/reviews): \
          metadata.name: host reviews.default.svc.cluster.local is already defined by \
          ServiceEntry default/reviews (rules/bookinfo/service-entry.yaml document 1): the \
          Istio and Gateway API forms of one service cannot both be in force; remove one (line \
          10)"
        ]
    );
}

/// A valid set to change one thing of: a Gateway with a TCP and an HTTP
/// listener, backend Services, a TCPRoute and an HTTPRoute.
const BASE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.0.0.1
  ports:
  - {name: http, port: 80, appProtocol: http}
  selector: {app: web}
---
apiVersion: v1
kind: Service
metadata: {name: web-v1}
spec:
  ports:
  - {name: http, port: 80, appProtocol: http}
  selector: {app: web, version: v1}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  ports:
  - {name: tcp, port: 5432}
  selector: {app: db}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web-v1}
spec: {address: 127.0.0.1, labels: {app: web, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db}
spec: {address: 127.0.0.1, labels: {app: db}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: istio
  listeners:
  - {name: tcp, port: 5432, protocol: TCP}
  - {name: http, port: 8080, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db}
spec:
  parentRefs:
  - {name: gw, sectionName: tcp}
  rules:
  - backendRefs:
    - {name: db, port: 5432}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs:
  - {group: \"\", kind: Service, name: web, port: 80}
  rules:
  - backendRefs:
    - {name: web-v1, port: 80}
";

/// `BASE` with `from` replaced by `to` (which must be there).
fn changed(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} is in BASE");
    BASE.replacen(from, to, 1)
}

#[test]
fn the_base_set_resolves() {
    assert_eq!(errors_of(BASE), Vec::<String>::new());
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "a table of cases: the change to the base set and its exact message each"
)]
fn each_error_says_what_to_do() {
    let cases: Vec<(&str, String, &[&str])> = vec![
        // Envelope.
        (
            "kind at the wrong version",
            changed(
                "gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute",
                "gateway.networking.k8s.io/v1\nkind: TCPRoute",
            ),
            &[
                "rules/r.yaml: document 7 (TCPRoute default/db): apiVersion: TCPRoute is not read at apiVersion gateway.networking.k8s.io/v1: use gateway.networking.k8s.io/v1alpha2 (line 45)",
            ],
        ),
        (
            "unknown kind",
            changed(
                "apiVersion: v1\nkind: Service\nmetadata: {name: db}",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: db}",
            ),
            &[
                "rules/r.yaml: document 3: kind: unsupported kind \"Pod\" at apiVersion v1: expected one of Service, Namespace, Secret (line 19)",
            ],
        ),
        (
            "a kind not read yet",
            changed(
                "gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute",
                "gateway.networking.k8s.io/v1\nkind: ListenerSet",
            ),
            &[
                "rules/r.yaml: document 7: kind: unsupported kind \"ListenerSet\" at apiVersion gateway.networking.k8s.io/v1: expected one of ReferenceGrant, GatewayClass, Gateway, HTTPRoute, GRPCRoute, TLSRoute (line 46)",
            ],
        ),
        (
            "strict fields",
            changed("clusterIP: 10.0.0.1", "clusterIp: 10.0.0.1"),
            &[
                "rules/r.yaml: document 1 (Service default/web): spec.clusterIp: unknown field `clusterIp`, expected one of `type`, `clusterIP`, `clusterIPs`, `ports`, `selector`, `externalIPs`, `externalName`, `sessionAffinity`, `sessionAffinityConfig`, `ipFamilies`, `ipFamilyPolicy`, `internalTrafficPolicy`, `externalTrafficPolicy`, `publishNotReadyAddresses`, `trafficDistribution`, `allocateLoadBalancerNodePorts`, `loadBalancerClass`, `loadBalancerIP`, `loadBalancerSourceRanges`, `healthCheckNodePort`: fix the spelling or remove the field (line 5)",
            ],
        ),
        // Service.
        (
            "service type",
            changed(
                "clusterIP: 10.0.0.1",
                "type: NodePort\n  clusterIP: 10.0.0.1",
            ),
            &[
                "rules/r.yaml: document 1 (Service default/web): spec.type: Service type NodePort is not supported yet: only ClusterIP Services are read (their clusterIP is the service address on this node); use type: ClusterIP (line 5)",
            ],
        ),
        (
            "a mesh route on a headless Service",
            changed("clusterIP: 10.0.0.1", "clusterIP: None"),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.parentRefs[0].name: Service default/web is headless (clusterIP: None): it has no service address for the mesh to route, so a route cannot be bound to it; bind the route to a Gateway listener (the Service can be its backendRef), or give the Service a clusterIP (line 60)",
            ],
        ),
        (
            "headless and an address",
            changed(
                "clusterIP: 10.0.0.1",
                "clusterIP: None\n  clusterIPs: [10.0.0.1]",
            ),
            &[
                "rules/r.yaml: document 1 (Service default/web): spec.clusterIPs[0]: a headless Service (clusterIP: None) has no address: write None alone, or the Service's addresses without None (line 6)",
            ],
        ),
        (
            "bad clusterIP",
            changed("clusterIP: 10.0.0.1", "clusterIP: ten"),
            &[
                "rules/r.yaml: document 1 (Service default/web): spec.clusterIP: clusterIP \"ten\" is not an IP address: write one, as 10.96.0.10 (line 5)",
            ],
        ),
        (
            "udp",
            changed(
                "{name: tcp, port: 5432}",
                "{name: tcp, port: 5432, protocol: UDP}",
            ),
            &[
                "rules/r.yaml: document 3 (Service default/db): spec.ports[0].protocol: protocol UDP is not supported: the kernel path routes TCP connections; use TCP (line 23)",
            ],
        ),
        (
            "appProtocol",
            changed(
                "{name: tcp, port: 5432}",
                "{name: tcp, port: 5432, appProtocol: grpc}",
            ),
            &[
                "rules/r.yaml: document 3 (Service default/db): spec.ports[0].appProtocol: appProtocol \"grpc\" is not supported yet: use http, kubernetes.io/h2c or kubernetes.io/ws (the L7 proxy), or leave it out (TCP, the kernel path) (line 23)",
            ],
        ),
        (
            "unnamed ports",
            changed(
                "  - {name: tcp, port: 5432}",
                "  - {port: 5432}\n  - {port: 5433}",
            ),
            &[
                "rules/r.yaml: document 3 (Service default/db): spec.ports[0].name: a port name is required when a Service has several ports: name each port (line 23)",
                "rules/r.yaml: document 3 (Service default/db): spec.ports[1].name: a port name is required when a Service has several ports: name each port (line 24)",
            ],
        ),
        (
            "targetPort",
            changed(
                "{name: tcp, port: 5432}",
                "{name: tcp, port: 5432, targetPort: 70000}",
            ),
            &[
                "rules/r.yaml: document 3 (Service default/db): spec.ports[0].targetPort: port number 70000 must be in the range 1..65535 (line 23)",
            ],
        ),
        // Gateway.
        (
            "https without tls",
            changed(
                "{name: http, port: 8080, protocol: HTTP}",
                "{name: http, port: 8080, protocol: HTTPS}",
            ),
            &[
                "rules/r.yaml: document 6 (Gateway.gateway.networking.k8s.io default/gw): spec.listeners[1].tls: an HTTPS listener needs tls: {certificateRefs: [{name: <Secret>}]} (the spec's rule: tls must be specified for protocols HTTPS and TLS) (line 43)",
            ],
        ),
        (
            "udp",
            changed(
                "{name: http, port: 8080, protocol: HTTP}",
                "{name: http, port: 8080, protocol: UDP}",
            ),
            &[
                "rules/r.yaml: document 6 (Gateway.gateway.networking.k8s.io default/gw): spec.listeners[1].protocol: listener protocol UDP is not supported yet: use TCP (TCPRoute, the kernel path), TLS with tls.mode Passthrough (TLSRoute, by SNI), HTTP or HTTPS (HTTPRoute, the L7 proxy) (line 43)",
            ],
        ),
        (
            "listener tls",
            changed(
                "{name: http, port: 8080, protocol: HTTP}",
                "{name: http, port: 8080, protocol: HTTP, tls: {mode: Terminate}}",
            ),
            &[
                "rules/r.yaml: document 6 (Gateway.gateway.networking.k8s.io default/gw): spec.listeners[1].tls: listener tls is only read on a TLS listener (tls.mode: Passthrough) or an HTTPS listener (tls.mode: Terminate): remove it (line 43)",
            ],
        ),
        (
            "an address of type Hostname",
            changed(
                "gatewayClassName: istio",
                "gatewayClassName: istio\n  addresses: [{type: Hostname, value: gw.example.com}]",
            ),
            &[
                "rules/r.yaml: document 6 (Gateway.gateway.networking.k8s.io default/gw): spec.addresses[0].type: address type Hostname is not supported: the agent accepts on IP addresses of this node and does not resolve names; give an IP address of the node (type: IPAddress) (line 41)",
            ],
        ),
        (
            "selector namespaces",
            changed(
                "{name: tcp, port: 5432, protocol: TCP}",
                "{name: tcp, port: 5432, protocol: TCP, allowedRoutes: {namespaces: {from: Selector}}}",
            ),
            &[
                "rules/r.yaml: document 6 (Gateway.gateway.networking.k8s.io default/gw): spec.listeners[0].allowedRoutes.namespaces.selector: selector is required with from: Selector (matchLabels and/or matchExpressions on the labels of Namespace documents) (line 42)",
            ],
        ),
        (
            "a selector with from: Same",
            changed(
                "{name: tcp, port: 5432, protocol: TCP}",
                "{name: tcp, port: 5432, protocol: TCP, allowedRoutes: {namespaces: {from: Same, selector: {matchLabels: {a: b}}}}}",
            ),
            &[
                "rules/r.yaml: document 6 (Gateway.gateway.networking.k8s.io default/gw): spec.listeners[0].allowedRoutes.namespaces.selector: selector is only read with from: Selector: set from: Selector, or remove the selector (line 42)",
            ],
        ),
        (
            "selector operator",
            changed(
                "{name: tcp, port: 5432, protocol: TCP}",
                "{name: tcp, port: 5432, protocol: TCP, allowedRoutes: {namespaces: {from: Selector, selector: {matchExpressions: [{key: a, operator: Equals, values: [b]}]}}}}",
            ),
            &[
                "rules/r.yaml: document 6 (Gateway.gateway.networking.k8s.io default/gw): spec.listeners[0].allowedRoutes.namespaces.selector.matchExpressions[0].operator: operator \"Equals\" is not known: use In, NotIn, Exists or DoesNotExist (line 42)",
            ],
        ),
        (
            "selector values",
            changed(
                "{name: tcp, port: 5432, protocol: TCP}",
                "{name: tcp, port: 5432, protocol: TCP, allowedRoutes: {namespaces: {from: Selector, selector: {matchExpressions: [{key: a, operator: In}, {key: b, operator: Exists, values: [c]}]}}}}",
            ),
            &[
                "rules/r.yaml: document 6 (Gateway.gateway.networking.k8s.io default/gw): spec.listeners[0].allowedRoutes.namespaces.selector.matchExpressions[0].values: values is required with In and NotIn: list at least one (line 42)",
                "rules/r.yaml: document 6 (Gateway.gateway.networking.k8s.io default/gw): spec.listeners[0].allowedRoutes.namespaces.selector.matchExpressions[1].values: values must be empty with Exists and DoesNotExist: remove them (line 42)",
            ],
        ),
        (
            "ReferenceGrant without from and to",
            format!(
                "{BASE}---\napiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {{name: g}}\nspec: {{}}\n"
            ),
            &[
                "rules/r.yaml: document 9 (ReferenceGrant default/g): spec.from: from is required: the kind and namespace of the resources that may refer here (group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: ...) (line 68)",
                "rules/r.yaml: document 9 (ReferenceGrant default/g): spec.to: to is required: the kinds of this namespace that may be referred to (group: \"\", kind: Service) (line 68)",
            ],
        ),
        (
            "ReferenceGrant strict fields",
            format!(
                "{BASE}---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: g}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: other}}]\n  to: [{{group: \"\", kind: Service, names: x}}]\n"
            ),
            &[
                "rules/r.yaml: document 9 (ReferenceGrant default/g): spec.to[0].names: unknown field `names`, expected one of `group`, `kind`, `name`: fix the spelling or remove the field (line 70)",
            ],
        ),
        (
            "ReferenceGrant fields",
            format!(
                "{BASE}---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: g}}\nspec:\n  from: [{{kind: HTTPRoute, namespace: Other}}]\n  to: [{{group: \"\"}}]\n"
            ),
            &[
                "rules/r.yaml: document 9 (ReferenceGrant default/g): spec.from[0].namespace: namespace \"Other\" is not a valid namespace name: use at most 63 lower-case letters, digits and '-' (line 69)",
                "rules/r.yaml: document 9 (ReferenceGrant default/g): spec.from[0].group: group is required: gateway.networking.k8s.io for routes (line 69)",
                "rules/r.yaml: document 9 (ReferenceGrant default/g): spec.to[0].kind: kind is required: the kind that may be referred to (Service) (line 70)",
            ],
        ),
        (
            "Namespace labels",
            format!(
                "{BASE}---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: other\n  labels: {{\"bad label\": x}}\n"
            ),
            &[
                "rules/r.yaml: document 9 (Namespace default/other): metadata.labels.bad label: invalid tag key: \"bad label\" (line 69)",
            ],
        ),
        (
            "kinds",
            changed(
                "{name: tcp, port: 5432, protocol: TCP}",
                "{name: tcp, port: 5432, protocol: TCP, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}",
            ),
            &[
                "rules/r.yaml: document 6 (Gateway.gateway.networking.k8s.io default/gw): spec.listeners[0].allowedRoutes.kinds[0].kind: a TCP listener does not take HTTPRoute: allow TCPRoute (line 42)",
            ],
        ),
        (
            "listener names",
            changed("{name: http, port: 8080", "{name: tcp, port: 8080"),
            &[
                "rules/r.yaml: document 6 (Gateway.gateway.networking.k8s.io default/gw): spec.listeners[1].name: listener name tcp is used twice: names are unique in a Gateway (line 43)",
            ],
        ),
        (
            "one port, two protocols",
            changed("{name: http, port: 8080", "{name: http, port: 5432"),
            &[
                "rules/r.yaml: document 6 (Gateway.gateway.networking.k8s.io default/gw): spec.listeners[1].port: port 5432 is also spec.listeners[0]: a port takes one TCP listener, or HTTP listeners only; use another port (line 43)",
            ],
        ),
        // TCPRoute.
        (
            "tcp mesh",
            changed(
                "  - {name: gw, sectionName: tcp}",
                "  - {group: \"\", kind: Service, name: db}",
            ),
            &[
                "rules/r.yaml: document 7 (TCPRoute default/db): spec.parentRefs[0].kind: a TCPRoute bound to a Service (GAMMA) is not supported yet: bind it to a Gateway listener (line 50)",
            ],
        ),
        (
            "two tcp rules",
            changed(
                "    - {name: db, port: 5432}\n",
                "    - {name: db, port: 5432}\n  - backendRefs:\n    - {name: db, port: 5432}\n",
            ),
            &[
                "rules/r.yaml: document 7 (TCPRoute default/db): spec.rules[1]: a TCPRoute with several rules is not supported: a TCP connection has nothing to choose a rule by; put every backendRef in one rule (line 54)",
            ],
        ),
        (
            "weight range",
            changed(
                "{name: db, port: 5432}",
                "{name: db, port: 5432, weight: 1000001}",
            ),
            &[
                "rules/r.yaml: document 7 (TCPRoute default/db): spec.rules[0].backendRefs[0].weight: weight 1000001 is out of range: 0..1000000 (line 53)",
            ],
        ),
        (
            "backend port missing",
            changed("{name: db, port: 5432}", "{name: db}"),
            &[
                "rules/r.yaml: document 7 (TCPRoute default/db): spec.rules[0].backendRefs[0].port: port is required when the backend is a Service: the Service port (line 53)",
            ],
        ),
        // HTTPRoute.
        (
            "extension ref",
            changed(
                "  - backendRefs:\n    - {name: web-v1, port: 80}",
                "  - filters:\n    - {type: ExtensionRef, extensionRef: {group: x, kind: Y, name: z}}\n    backendRefs:\n    - {name: web-v1, port: 80}",
            ),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].filters[0].type: filter ExtensionRef is not supported yet: RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror and CORS are; remove it (line 63)",
            ],
        ),
        (
            "retry",
            changed(
                "  - backendRefs:\n    - {name: web-v1, port: 80}",
                "  - retry: {codes: [500, 302], backoff: 1 s}\n    backendRefs:\n    - {name: web-v1, port: 80}",
            ),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].retry.codes[1]: code 302 is not an error status the spec retries: use 400 to 599 (line 62)",
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].retry.backoff: backoff \"1 s\" is not a Gateway API duration: one to four numbers of at most 5 digits, each with a unit h, m, s or ms (100ms, 1s) (line 62)",
            ],
        ),
        (
            "parent service not found",
            changed(
                "kind: Service, name: web, port: 80}",
                "kind: Service, name: webx, port: 80}",
            ),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.parentRefs[0].name: parent Service default/webx not found: define it or fix the name (line 60)",
            ],
        ),
        (
            "parent without clusterIP",
            changed(
                "kind: Service, name: web, port: 80}",
                "kind: Service, name: web-v1, port: 80}",
            ),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.parentRefs[0].name: Service default/web-v1 has no clusterIP: clients reach the L7 proxy by connecting to the service address; give the Service a clusterIP (line 60)",
            ],
        ),
        (
            "parent port not HTTP",
            changed(
                "{name: http, port: 80, appProtocol: http}",
                "{name: http, port: 80}",
            ),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.parentRefs[0].port: port 80 of Service default/web is not HTTP, so an HTTPRoute cannot route it: set appProtocol: http (or kubernetes.io/h2c) on it (line 60)",
            ],
        ),
        (
            "path type",
            changed(
                "  - backendRefs:\n    - {name: web-v1, port: 80}",
                "  - matches: [{path: {type: Glob, value: /a}}]\n    backendRefs:\n    - {name: web-v1, port: 80}",
            ),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].matches[0].path.type: path type \"Glob\" is not known: use Exact, PathPrefix or RegularExpression (line 62)",
            ],
        ),
        (
            "regex",
            changed(
                "  - backendRefs:\n    - {name: web-v1, port: 80}",
                "  - matches: [{path: {type: RegularExpression, value: \"/a(\"}}]\n    backendRefs:\n    - {name: web-v1, port: 80}",
            ),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].matches[0].path.value: \"path\": regex parse error: /a( ^ error: unclosed group; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax) (line 62)",
            ],
        ),
        (
            "method",
            changed(
                "  - backendRefs:\n    - {name: web-v1, port: 80}",
                "  - matches: [{method: FETCH}]\n    backendRefs:\n    - {name: web-v1, port: 80}",
            ),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].matches[0].method: method \"FETCH\" is not one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH (line 62)",
            ],
        ),
    ];
    for (what, text, expected) in &cases {
        assert_eq!(errors_of(text), *expected, "{what}");
    }
}

/// The Gateway API's precedence across the rules of an `HTTPRoute`
/// (Exact, then RegularExpression, then the longest PathPrefix; then a
/// method, more headers, more query parameters; the order written among
/// equals), what no backend or only weight 0 answers (500), and the
/// `RequestHeaderModifier` filter.
#[test]
fn http_rules_follow_the_specs_precedence_and_zero_weights_answer_500() {
    let route = "  rules:
  - backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /a}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Set, value: s}]
        add: [{name: x-add, value: a}]
        remove: [X-Gone]
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {type: Exact, value: /a/b}}]
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {value: /a}, method: GET}]
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {value: /a/b}}]
    backendRefs: [{name: web-v1, port: 80}]
  - matches:
    - path: {type: RegularExpression, value: /r.*}
    - headers: [{name: X, value: y}]
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {value: /a}, headers: [{name: x, value: y}]}]
    backendRefs: [{name: web-v1, port: 80, weight: 0}]
  - matches: [{path: {value: /z}}]
";
    let text = changed(
        "  rules:\n  - backendRefs:\n    - {name: web-v1, port: 80}\n",
        route,
    );
    let file = parse_file(Path::new(FILE), &text).unwrap_or_else(|e| panic!("{e}"));
    let model = resolve(&[file]).unwrap_or_else(|e| panic!("{e}"));
    let routes = &listener(&model, "mesh web.default.svc.cluster.local:80").virtual_hosts[0].routes;
    let keys: Vec<&str> = routes.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "default/web/rules[2]",
            "default/web/rules[5].matches[0]",
            "default/web/rules[4]",
            "default/web/rules[3]",
            "default/web/rules[6]",
            "default/web/rules[1]",
            "default/web/rules[7]",
            "default/web/rules[5].matches[1]",
            "default/web/rules[0]",
        ]
    );
    let by_key = |key: &str| routes.iter().find(|r| r.key == key).expect("route");
    for key in ["default/web/rules[6]", "default/web/rules[7]"] {
        let route = by_key(key);
        assert_eq!(
            (
                route.destinations.len(),
                route.direct_response.as_ref().map(|r| r.status)
            ),
            (0, Some(500)),
            "{key}: no backend, or only weight 0: 500"
        );
    }
    let prefix = by_key("default/web/rules[1]");
    let uris: Vec<_> = prefix.matches.iter().map(|m| m.uri.clone()).collect();
    assert_eq!(
        uris,
        [
            Some(crate::StringMatch::Exact("/a".into())),
            Some(crate::StringMatch::Prefix("/a/".into())),
        ],
        "PathPrefix /a: whole segments (/a, /a/...), not /ab"
    );
    let request = &prefix.headers.request;
    assert_eq!(
        (
            request.set.get("x-set").map(String::as_str),
            request.add.get("x-add").map(String::as_str),
            request.remove.as_slice()
        ),
        (Some("s"), Some("a"), ["x-gone".to_owned()].as_slice())
    );
    let header = by_key("default/web/rules[5].matches[1]");
    assert_eq!(
        header.matches[0].headers.get("x"),
        Some(&crate::StringMatch::Exact("y".into())),
        "header names are lower case"
    );
}

/// Istio's own Bookinfo: Kubernetes Services, routed by an Istio
/// VirtualService with DestinationRule subsets. The VirtualService takes
/// the Service's clusterIPs; the Service has no default route of its own.
#[test]
fn an_istio_virtual_service_routes_a_kubernetes_service() {
    let files = [
        texts(
            "bookinfo-gateway-api",
            &["services.yaml", "workload-entries.yaml"],
        ),
        texts(
            "bookinfo",
            &["destination-rule.yaml", "examples/vs-reviews-50-v3.yaml"],
        ),
    ]
    .concat();
    let files: Vec<RulesFile> = files
        .iter()
        .map(|(path, text)| parse_file(path, text).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let model = resolve(&files).unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<&str> = model.http.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(keys, ["mesh reviews.default.svc.cluster.local:9080"]);
    let mesh = &model.http[0];
    assert_eq!(
        mesh.listeners,
        addrs(&["127.101.0.1:9080", "[fd00:7473::2]:9080"])
    );
    let route = &mesh.virtual_hosts[0].routes[0];
    assert_eq!(route.key, "default/reviews/http[0]");
    let subsets: Vec<(Option<&str>, u32, Vec<SocketAddr>)> = route
        .destinations
        .iter()
        .map(|d| {
            (
                d.destination.subset.as_deref(),
                d.destination.weight,
                d.destination.endpoints.iter().map(|e| e.addr).collect(),
            )
        })
        .collect();
    assert_eq!(
        subsets,
        [
            (Some("v1"), 50, addrs(&["127.0.0.1:19081"])),
            (Some("v3"), 50, addrs(&["127.0.0.1:19083"])),
        ]
    );
}

/// What `resolve` finds about the Istio resources a document stands for
/// is reported at the field as written, with its line.
#[test]
fn warnings_name_the_fields_as_written() {
    let files: Vec<RulesFile> = texts(
        "tcp-echo-gateway-api",
        &["gateway.yaml", "services.yaml", "tcp-route.yaml"],
    )
    .iter()
    .map(|(path, text)| parse_file(path, text).unwrap_or_else(|e| panic!("{e}")))
    .collect();
    let (model, warnings) = resolve_all(&files);
    assert!(model.is_ok(), "no endpoint is a warning, not an error");
    let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "rules/tcp-echo-gateway-api/tcp-route.yaml: document 1 (TCPRoute default/tcp-echo): \
             spec.rules[0].backendRefs[0].name: service tcp-echo-v1.default.svc.cluster.local \
             selects no endpoint (IST0173): its connections will be refused; check the subset's \
             labels against the endpoints' (line 13)",
            "rules/tcp-echo-gateway-api/services.yaml: document 1 (Service default/tcp-echo): \
             spec.ports[0]: service tcp-echo.default.svc.cluster.local selects no endpoint \
             (IST0173): its connections will be refused; check the subset's labels against the \
             endpoints' (line 14)",
        ]
    );
}

/// `targetPort` as a number is the endpoints' port unless a WorkloadEntry
/// maps the Service port's name; as a name, it is the WorkloadEntry port of
/// that name; absent, the Service port.
#[test]
fn target_ports_pick_the_endpoint_port() {
    let text = "\
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: 10.0.0.1
  ports:
  - {name: numbered, port: 5432, targetPort: 6432}
  - {name: named, port: 5433, targetPort: pg}
  - {name: same, port: 5434}
  - {name: mapped, port: 5435, targetPort: 6435}
  selector: {app: db}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db}
spec: {address: 127.0.0.1, labels: {app: db}, ports: {pg: 7432, mapped: 7435}}
";
    let file = parse_file(Path::new(FILE), text).unwrap_or_else(|e| panic!("{e}"));
    let model = resolve(&[file]).unwrap_or_else(|e| panic!("{e}"));
    let endpoints: Vec<(u16, Vec<SocketAddr>)> = model
        .routes
        .iter()
        .map(|r| {
            (
                r.service_port,
                r.destinations[0].endpoints.iter().map(|e| e.addr).collect(),
            )
        })
        .collect();
    assert_eq!(
        endpoints,
        [
            (5432, addrs(&["127.0.0.1:6432"])),
            (5433, addrs(&["127.0.0.1:7432"])),
            (5434, addrs(&["127.0.0.1:5434"])),
            (5435, addrs(&["127.0.0.1:7435"])),
        ]
    );
}

/// What `apply` and `delete` key a document by: a Gateway API `Gateway` is
/// not the Istio Gateway of the same name.
#[test]
fn kinds_are_known_by_api_version_and_kind() {
    let cases = [
        (
            "gateway.networking.k8s.io/v1",
            "Gateway",
            Some(super::GATEWAY_KIND),
        ),
        ("networking.istio.io/v1", "Gateway", Some("Gateway")),
        (
            "gateway.networking.k8s.io/v1alpha2",
            "TCPRoute",
            Some("TCPRoute"),
        ),
        ("gateway.networking.k8s.io/v1", "TCPRoute", None),
        (
            "gateway.networking.k8s.io/v1beta1",
            "HTTPRoute",
            Some("HTTPRoute"),
        ),
        ("v1", "Service", Some("Service")),
        ("v1", "Pod", None),
        (
            "networking.istio.io/v1",
            "VirtualService",
            Some("VirtualService"),
        ),
    ];
    for (api_version, kind, want) in cases {
        assert_eq!(
            crate::kind_of(api_version, kind),
            want,
            "{api_version} {kind}"
        );
    }
}

/// `(type, status, reason)` of each condition of a parent.
type Conditions = Vec<(String, String, String)>;

/// `(host, weight)` of each destination of a route.
type Split<'a> = Vec<(&'a str, u32)>;

/// The model of one file that must resolve.
pub(super) fn model_of(text: &str) -> RoutingModel {
    let file = parse_file_all(Path::new(FILE), text).unwrap_or_else(|e| panic!("{e:?}"));
    resolve_all(&[file])
        .0
        .unwrap_or_else(|e| panic!("{}", e[0]))
}

/// `(type, status, reason)` of each condition of each parent of a route's
/// status.
fn conditions(model: &RoutingModel, kind: &str, name: &str) -> Vec<Conditions> {
    let key = crate::model::StatusKey {
        kind: kind.to_owned(),
        namespace: name
            .split_once('/')
            .map_or("default", |(n, _)| n)
            .to_owned(),
        name: name.rsplit('/').next().unwrap_or(name).to_owned(),
    };
    let status = model.gateway_api_status.get(&key).unwrap_or_else(|| {
        panic!(
            "no status of {key:?}: {:?}",
            model.gateway_api_status.keys()
        )
    });
    status["parents"]
        .as_array()
        .expect("parents")
        .iter()
        .map(|p| {
            assert_eq!(p["controllerName"], "istio.io/gateway-controller");
            p["conditions"]
                .as_array()
                .expect("conditions")
                .iter()
                .map(|c| {
                    assert_eq!(c["observedGeneration"], 1, "{c}");
                    (
                        c["type"].as_str().unwrap_or_default().to_owned(),
                        c["status"].as_str().unwrap_or_default().to_owned(),
                        c["reason"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .collect()
}

fn cond(accepted: &str, resolved: &str) -> Conditions {
    let status = |reason: &str, ok: &str| if reason == ok { "True" } else { "False" };
    vec![
        (
            "Accepted".into(),
            status(accepted, "Accepted").into(),
            accepted.into(),
        ),
        (
            "ResolvedRefs".into(),
            status(resolved, "ResolvedRefs").into(),
            resolved.into(),
        ),
    ]
}

const OTHER_DB: &str = "---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: other}\nspec:\n  ports: [{name: tcp, port: 5432}]\n  selector: {app: db}\n";

const GRANT: &str = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: db, namespace: other}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: default}]\n  to: [{group: \"\", kind: Service}]\n";

/// What the spec reports in status rather than refuses: a backendRef that
/// cannot be used (its share of the traffic fails: refused connections on
/// the kernel path, 500 on the proxy), a parent that does not take the
/// route (not attached). Each case: the change to the base set, the
/// TCPRoute's conditions, and its destinations.
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "a table of cases: the change to the base set, its conditions and its split each"
)]
fn status_reports_what_the_spec_does_not_refuse() {
    let unusable = crate::model::UNUSABLE_BACKEND;
    let db = "db.default.svc.cluster.local";
    let cases: Vec<(&str, String, Vec<Conditions>, Split)> = vec![
        (
            "the base set",
            BASE.to_owned(),
            vec![cond("Accepted", "ResolvedRefs")],
            vec![(db, 1)],
        ),
        (
            "backend not found",
            changed("{name: db, port: 5432}", "{name: dbx, port: 5432}"),
            vec![cond("Accepted", "BackendNotFound")],
            vec![(unusable, 1)],
        ),
        (
            "backend port not found",
            changed("{name: db, port: 5432}", "{name: db, port: 5433}"),
            vec![cond("Accepted", "BackendNotFound")],
            vec![(unusable, 1)],
        ),
        (
            "backend kind",
            changed(
                "{name: db, port: 5432}",
                "{group: networking.istio.io, kind: ServiceEntry, name: db, port: 5432}",
            ),
            vec![cond("Accepted", "InvalidKind")],
            vec![(unusable, 1)],
        ),
        (
            "another namespace without a ReferenceGrant",
            changed(
                "{name: db, port: 5432}",
                "{name: db, namespace: other, port: 5432}",
            ) + OTHER_DB,
            vec![cond("Accepted", "RefNotPermitted")],
            vec![(unusable, 1)],
        ),
        (
            "another namespace with a ReferenceGrant",
            changed(
                "{name: db, port: 5432}",
                "{name: db, namespace: other, port: 5432}",
            ) + OTHER_DB
                + GRANT,
            vec![cond("Accepted", "ResolvedRefs")],
            vec![("db.other.svc.cluster.local", 1)],
        ),
        (
            "a ReferenceGrant for another kind",
            changed(
                "{name: db, port: 5432}",
                "{name: db, namespace: other, port: 5432}",
            ) + OTHER_DB
                + &GRANT.replace("kind: TCPRoute", "kind: HTTPRoute"),
            vec![cond("Accepted", "RefNotPermitted")],
            vec![(unusable, 1)],
        ),
        (
            "a ReferenceGrant for another Service name",
            changed(
                "{name: db, port: 5432}",
                "{name: db, namespace: other, port: 5432}",
            ) + OTHER_DB
                + &GRANT.replace("kind: Service}", "kind: Service, name: dbx}"),
            vec![cond("Accepted", "RefNotPermitted")],
            vec![(unusable, 1)],
        ),
        (
            "a share that cannot be used",
            changed(
                "{name: db, port: 5432}",
                "{name: db, port: 5432, weight: 80}\n    - {name: dbx, port: 5432, weight: 15}\n    - {name: dby, port: 5432, weight: 5}",
            ),
            vec![cond("Accepted", "BackendNotFound")],
            vec![(db, 80), (unusable, 20)],
        ),
        (
            "every weight 0: every connection refused",
            changed(
                "{name: db, port: 5432}",
                "{name: db, port: 5432, weight: 0}",
            ),
            vec![cond("Accepted", "ResolvedRefs")],
            vec![(unusable, 1)],
        ),
        (
            "parent not found",
            changed(
                "{name: gw, sectionName: tcp}",
                "{name: gwx, sectionName: tcp}",
            ),
            vec![cond("NoMatchingParent", "ResolvedRefs")],
            vec![],
        ),
        (
            "section not found",
            changed(
                "{name: gw, sectionName: tcp}",
                "{name: gw, sectionName: tcpx}",
            ),
            vec![cond("NoMatchingParent", "ResolvedRefs")],
            vec![],
        ),
        (
            "listener of another kind",
            changed(
                "{name: gw, sectionName: tcp}",
                "{name: gw, sectionName: http}",
            ),
            vec![cond("NotAllowedByListeners", "ResolvedRefs")],
            vec![],
        ),
        (
            "a Gateway of another class: ignored, no status for it",
            changed("gatewayClassName: istio", "gatewayClassName: nginx"),
            vec![],
            vec![],
        ),
    ];
    for (what, text, expected, destinations) in cases {
        let model = model_of(&text);
        assert_eq!(conditions(&model, "TCPRoute", "db"), expected, "{what}");
        let got: Vec<(&str, u32)> = model
            .routes
            .iter()
            .filter(|r| r.key.starts_with("default/db/rules[0]"))
            .flat_map(|r| &r.destinations)
            .map(|d| (d.host.as_str(), d.weight))
            .collect();
        assert_eq!(got, destinations, "{what}");
        assert!(
            model
                .routes
                .iter()
                .flat_map(|r| &r.destinations)
                .filter(|d| d.is_unusable())
                .all(|d| d.endpoints.is_empty()),
            "{what}: an unusable share has no endpoint"
        );
    }
}

/// `allowedRoutes.namespaces.from: Selector` selects on the labels of
/// `Namespace` documents (and Kubernetes' `kubernetes.io/metadata.name`),
/// by `matchLabels` and `matchExpressions`; a route of a namespace it does
/// not select is not attached (`NotAllowedByListeners`), and the
/// Gateway's listener counts the routes attached.
#[test]
fn listener_selectors_select_namespaces_by_their_labels() {
    let base = changed(
        "kind: TCPRoute\nmetadata: {name: db}",
        "kind: TCPRoute\nmetadata: {name: db, namespace: other}",
    )
    .replace(
        "{name: gw, sectionName: tcp}",
        "{name: gw, namespace: default, sectionName: tcp}",
    )
    .replace(
        "  - backendRefs:\n    - {name: db, port: 5432}",
        "  - backendRefs:\n    - {name: db, namespace: default, port: 5432}",
    ) + "---\napiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {name: db}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: other}]\n  to: [{group: \"\", kind: Service}]\n";
    let namespace = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: other\n  labels: {team: a, tier: web}\n";
    let selector = |s: &str| {
        base.replace(
            "{name: tcp, port: 5432, protocol: TCP}",
            &format!(
                "{{name: tcp, port: 5432, protocol: TCP, allowedRoutes: {{namespaces: {{from: Selector, selector: {s}}}}}}}"
            ),
        )
    };
    let cases: Vec<(&str, String, &str)> =
        vec![
        ("from: Same", base.clone(), "NotAllowedByListeners"),
        (
            "from: All",
            base.replace(
                "{name: tcp, port: 5432, protocol: TCP}",
                "{name: tcp, port: 5432, protocol: TCP, allowedRoutes: {namespaces: {from: All}}}",
            ),
            "Accepted",
        ),
        ("matchLabels", selector("{matchLabels: {team: a}}") + namespace, "Accepted"),
        (
            "matchLabels, another value",
            selector("{matchLabels: {team: b}}") + namespace,
            "NotAllowedByListeners",
        ),
        (
            "matchLabels without the Namespace document",
            selector("{matchLabels: {team: a}}"),
            "NotAllowedByListeners",
        ),
        (
            "Kubernetes' own name label",
            selector("{matchLabels: {kubernetes.io/metadata.name: other}}"),
            "Accepted",
        ),
        (
            "In",
            selector("{matchExpressions: [{key: tier, operator: In, values: [api, web]}]}")
                + namespace,
            "Accepted",
        ),
        (
            "NotIn",
            selector("{matchExpressions: [{key: tier, operator: NotIn, values: [web]}]}")
                + namespace,
            "NotAllowedByListeners",
        ),
        (
            "Exists and matchLabels",
            selector("{matchLabels: {team: a}, matchExpressions: [{key: tier, operator: Exists}]}")
                + namespace,
            "Accepted",
        ),
        (
            "DoesNotExist",
            selector("{matchExpressions: [{key: tier, operator: DoesNotExist}]}") + namespace,
            "NotAllowedByListeners",
        ),
    ];
    for (what, text, reason) in cases {
        let model = model_of(&text);
        assert_eq!(
            conditions(&model, "TCPRoute", "other/db"),
            vec![cond(reason, "ResolvedRefs")],
            "{what}"
        );
        let gateway = &model.gateway_api_status[&crate::model::StatusKey {
            kind: super::GATEWAY_KIND.to_owned(),
            namespace: "default".to_owned(),
            name: "gw".to_owned(),
        }];
        assert_eq!(
            gateway["listeners"][0]["attachedRoutes"],
            u32::from(reason == "Accepted"),
            "{what}: {gateway}"
        );
        assert_eq!(
            model.routes.iter().any(|r| r.key.starts_with("other/db/")),
            reason == "Accepted",
            "{what}"
        );
    }
}

/// An HTTPRoute's share of a backend that cannot be used is a destination
/// of the proxy's route with no endpoint (answered 500), weighted as
/// written; every share unusable: a 500 direct response.
#[test]
fn http_shares_that_cannot_be_used_are_unusable_destinations() {
    let unusable = crate::model::UNUSABLE_BACKEND;
    let cases: Vec<(&str, String, Split, bool, &str)> = vec![
        (
            "one share of four",
            changed(
                "    - {name: web-v1, port: 80}\n",
                "    - {name: web-v1, port: 80, weight: 3}\n    - {name: nope, port: 80, weight: 1}\n",
            ),
            vec![("web-v1.default.svc.cluster.local", 3), (unusable, 1)],
            false,
            "BackendNotFound",
        ),
        (
            "every share",
            changed(
                "    - {name: web-v1, port: 80}\n",
                "    - {name: nope, port: 80}\n",
            ),
            vec![],
            true,
            "BackendNotFound",
        ),
    ];
    for (what, text, want, direct, reason) in cases {
        let model = model_of(&text);
        let route = model
            .http
            .iter()
            .flat_map(|l| &l.virtual_hosts)
            .flat_map(|v| &v.routes)
            .find(|r| r.key.starts_with("default/web/"))
            .unwrap_or_else(|| panic!("{what}: no route of default/web"));
        let got: Vec<(&str, u32)> = route
            .destinations
            .iter()
            .map(|d| (d.destination.host.as_str(), d.destination.weight))
            .collect();
        assert_eq!(got, want, "{what}");
        assert_eq!(
            route.direct_response.as_ref().map(|d| d.status),
            direct.then_some(500),
            "{what}"
        );
        assert_eq!(
            conditions(&model, "HTTPRoute", "web"),
            vec![cond("Accepted", reason)],
            "{what}"
        );
    }
}

/// `observedGeneration` is the resource's `metadata.generation` as written
/// (Kubernetes counts spec changes), on the route's conditions and the
/// Gateway's; a route's parentRef is echoed as the spec writes it
/// (group, kind, namespace defaulted).
#[test]
fn status_carries_the_generation_and_the_parent_ref() {
    let text = changed(
        "kind: TCPRoute\nmetadata: {name: db}",
        "kind: TCPRoute\nmetadata: {name: db, generation: 3}",
    )
    .replace(
        "kind: Gateway\nmetadata: {name: gw}",
        "kind: Gateway\nmetadata: {name: gw, generation: 7}",
    );
    let model = model_of(&text);
    let key = |kind: &str, name: &str| crate::model::StatusKey {
        kind: kind.to_owned(),
        namespace: "default".to_owned(),
        name: name.to_owned(),
    };
    let route = &model.gateway_api_status[&key("TCPRoute", "db")];
    assert_eq!(
        route["parents"][0]["parentRef"],
        serde_json::json!({
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "namespace": "default",
            "name": "gw",
            "sectionName": "tcp",
        })
    );
    for condition in route["parents"][0]["conditions"]
        .as_array()
        .expect("conditions")
    {
        assert_eq!(condition["observedGeneration"], 3, "{condition}");
    }
    let gateway = &model.gateway_api_status[&key(super::GATEWAY_KIND, "gw")];
    assert_eq!(
        gateway["conditions"][0]["observedGeneration"], 7,
        "{gateway}"
    );
    assert_eq!(gateway["listeners"][0]["attachedRoutes"], 1, "{gateway}");
    assert_eq!(gateway["listeners"][1]["attachedRoutes"], 0, "{gateway}");
    // The Gateway's HTTP listener has no route: it listens all the same,
    // with no virtual host (404 to every request).
    let listener = model
        .http
        .iter()
        .find(|l| l.key == "gateway default/gw port 8080")
        .expect("the HTTP listener without route listens");
    assert!(listener.virtual_hosts.is_empty());
    // The mesh HTTPRoute: its Service parent.
    let web = &model.gateway_api_status[&key("HTTPRoute", "web")];
    assert_eq!(
        web["parents"][0]["parentRef"],
        serde_json::json!({
            "group": "",
            "kind": "Service",
            "namespace": "default",
            "name": "web",
            "port": 80,
        })
    );
}

/// `BASE` with the mesh HTTPRoute's rules replaced by `rules`, resolved:
/// the routes of the `web` Service's mesh listener.
pub(super) fn mesh_routes(rules: &str) -> Vec<HttpRoute> {
    let text = changed(
        "  rules:\n  - backendRefs:\n    - {name: web-v1, port: 80}\n",
        rules,
    );
    let file = parse_file(Path::new(FILE), &text).unwrap_or_else(|e| panic!("{e}"));
    let model = resolve(&[file]).unwrap_or_else(|e| panic!("{e}"));
    listener(&model, "mesh web.default.svc.cluster.local:80").virtual_hosts[0]
        .routes
        .clone()
}

/// The filters `RequestRedirect`, `URLRewrite`, `RequestMirror` and
/// `timeouts`, as the model (and so the proxy) has them.
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one route per filter form, each with its exact model"
)]
fn filters_and_timeouts_translate_onto_the_model() {
    use crate::http::{DerivePort, HttpRedirect, RedirectPort, Rewrite};
    let routes = mesh_routes(
        "  rules:
  - matches: [{path: {value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, statusCode: 301}
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {value: /scheme}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: Example.org}
  - matches: [{path: {value: /port}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {port: 8443, path: {type: ReplaceFullPath, replaceFullPath: /full}}
  - matches: [{path: {value: /rewrite}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: internal.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    backendRefs: [{name: web-v1, port: 80}]
  - matches: [{path: {value: /mirror}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: web-v1, port: 80}, fraction: {numerator: 1, denominator: 4}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: web, port: 80}}
    backendRefs: [{name: web-v1, port: 80}]
    timeouts: {request: 1m30s, backendRequest: 500ms}
  - matches: [{path: {value: /none}}]
    timeouts: {request: 0s}
    backendRefs: [{name: web-v1, port: 80}]
",
    );
    let by_key = |key: &str| {
        routes
            .iter()
            .find(|r| r.key == format!("default/web/{key}"))
            .unwrap_or_else(|| panic!("no route {key}"))
    };
    let old = by_key("rules[0]");
    assert_eq!(
        old.redirect,
        Some(HttpRedirect {
            uri: None,
            prefix_rewrite: None,
            uri_regex: Some(("^/old".into(), "/new".into())),
            authority: None,
            port: Some(RedirectPort::Derive(DerivePort::FromRequestPort)),
            scheme: None,
            redirect_code: 301,
        }),
        "no port, no scheme: the port the request came to (here the Service port)"
    );
    assert_eq!(
        (old.destinations.len(), old.direct_response.as_ref()),
        (0, None),
        "the redirect answers; the backendRefs take nothing"
    );
    assert_eq!(
        by_key("rules[1]").redirect,
        Some(HttpRedirect {
            uri: None,
            prefix_rewrite: None,
            uri_regex: None,
            authority: Some("example.org".into()),
            port: Some(RedirectPort::Derive(DerivePort::FromProtocolDefault)),
            scheme: Some("https".into()),
            redirect_code: 302,
        }),
        "a scheme without port: the scheme's well-known port; 302 by default"
    );
    assert_eq!(
        by_key("rules[1]").direct_response,
        None,
        "a redirect without backendRefs answers the redirect, not 500"
    );
    let port = by_key("rules[2]").redirect.clone().expect("redirect");
    assert_eq!(
        (port.port, port.uri_regex),
        (
            Some(RedirectPort::Number(8443)),
            Some(("^/.*".into(), "/full".into()))
        )
    );
    let rewrite = by_key("rules[3]");
    assert_eq!(
        rewrite.rewrite,
        Some(Rewrite {
            uri: None,
            authority: Some("internal.example".into()),
            uri_regex: Some(("^/rewrite/?".into(), "/".into())),
        })
    );
    assert_eq!(rewrite.destinations.len(), 1);
    let mirror = by_key("rules[4]");
    let mirrors: Vec<(&str, f64)> = mirror
        .mirrors
        .iter()
        .map(|m| (m.destination.host.as_str(), m.percentage))
        .collect();
    assert_eq!(
        mirrors,
        [
            ("web-v1.default.svc.cluster.local", 25.0),
            ("web.default.svc.cluster.local", 100.0)
        ],
        "fraction 1/4 is 25%; no percent: every request"
    );
    assert_eq!(
        (
            mirror.timeout,
            mirror.retries.per_try_timeout,
            mirror.retries.attempts
        ),
        (
            Some(Duration::from_secs(90)),
            Some(Duration::from_millis(500)),
            2
        ),
        "request: the route's timeout; backendRequest: each attempt's, with Istio's retries"
    );
    let none = by_key("rules[5]");
    assert_eq!(
        (none.timeout, none.retries.per_try_timeout),
        (None, None),
        "0s: no timeout"
    );
}

/// A backendRef's own `RequestRedirect`, `URLRewrite` and `RequestMirror`
/// are its destination's in the model, beside its headers; its
/// `ReplacePrefixMatch` replaces the rule's `PathPrefix` match, as the
/// rule's own would; the rule's filters stay the rule's.
#[test]
fn backend_ref_filters_are_their_destinations_own() {
    use crate::http::{DerivePort, HttpRedirect, RedirectPort, Rewrite};
    let routes = mesh_routes(
        "  rules:
  - matches: [{path: {value: /split}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /rule}}
    backendRefs:
    - name: web-v1
      port: 80
      filters:
      - type: RequestRedirect
        requestRedirect: {scheme: https, hostname: moved.example, statusCode: 301}
    - name: web-v1
      port: 80
      filters:
      - type: URLRewrite
        urlRewrite: {hostname: internal.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: x-backend, value: two}]}
      - type: RequestMirror
        requestMirror: {backendRef: {name: web, port: 80}, percent: 50}
    - {name: web-v1, port: 80}
",
    );
    let route = &routes[0];
    assert_eq!(
        route.rewrite.as_ref().and_then(|r| r.uri_regex.clone()),
        Some(("^/.*".into(), "/rule".into())),
        "the rule's rewrite stays the rule's"
    );
    let actions: Vec<_> = route
        .destinations
        .iter()
        .map(|d| d.actions.as_deref())
        .collect();
    let [Some(first), Some(second), None] = actions[..] else {
        panic!("one destination per backendRef, the third without actions: {actions:?}");
    };
    assert_eq!(
        (
            first.redirect.clone(),
            first.rewrite.clone(),
            first.mirrors.len()
        ),
        (
            Some(HttpRedirect {
                uri: None,
                prefix_rewrite: None,
                uri_regex: None,
                authority: Some("moved.example".into()),
                port: Some(RedirectPort::Derive(DerivePort::FromProtocolDefault)),
                scheme: Some("https".into()),
                redirect_code: 301,
            }),
            None,
            0
        )
    );
    assert_eq!(
        second.rewrite,
        Some(Rewrite {
            uri: None,
            authority: Some("internal.example".into()),
            uri_regex: Some(("^/split".into(), "/v2".into())),
        }),
        "ReplacePrefixMatch of the rule's PathPrefix /split"
    );
    let mirrors: Vec<(&str, f64)> = second
        .mirrors
        .iter()
        .map(|m| (m.destination.host.as_str(), m.percentage))
        .collect();
    assert_eq!(mirrors, [("web.default.svc.cluster.local", 50.0)]);
    assert_eq!(
        route.destinations[1].headers.request.set.get("x-backend"),
        Some(&"two".to_owned())
    );
    assert!(route.mirrors.is_empty(), "the rule itself mirrors nothing");
}

/// `ReplacePrefixMatch`, in `URLRewrite` and `RequestRedirect` alike: the
/// spec's table (`HTTPPathModifier`), whole path segments, applied as the
/// proxy applies the model's regex.
#[test]
fn replace_prefix_match_follows_the_specs_table() {
    // (request path, prefix match, replacePrefixMatch, modified path)
    let table = [
        ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo/", "/foo", "/xyz", "/xyz/"),
        ("/foo/bar", "/foo", "", "/bar"),
        ("/foo/", "/foo", "", "/"),
        ("/foo", "/foo", "", "/"),
        ("/foo/", "/foo", "/", "/"),
        ("/foo", "/foo", "/", "/"),
        ("/a.b/c", "/a.b", "/x", "/x/c"),
        ("/", "/", "/xyz", "/xyz"),
        ("/a/b", "/", "/xyz", "/xyz/a/b"),
        ("/a/b", "/", "/", "/a/b"),
    ];
    for (path, prefix, replacement, want) in table {
        let routes = mesh_routes(&format!(
            "  rules:
  - matches: [{{path: {{type: PathPrefix, value: \"{prefix}\"}}}}]
    filters:
    - type: URLRewrite
      urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: \"{replacement}\"}}}}
    backendRefs: [{{name: web-v1, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: \"{prefix}\"}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: \"{replacement}\"}}}}
"
        ));
        let rewrite = routes[0].rewrite.as_ref().and_then(|r| r.uri_regex.clone());
        let redirect = routes[1]
            .redirect
            .as_ref()
            .and_then(|r| r.uri_regex.clone());
        assert_eq!(rewrite, redirect, "one rewrite for both filters");
        let (pattern, with) = rewrite.expect("a regex rewrite");
        // RE2's `\1` in the regex crate's syntax, as the proxy converts it.
        let with = with.replace("\\1", "${1}");
        let got = regex::Regex::new(&pattern)
            .expect("regex")
            .replace_all(path, with.as_str())
            .into_owned();
        assert_eq!(got, want, "{path} with prefix {prefix} to {replacement:?}");
    }
}

/// What the CRDs' CEL rules refuse in filters and timeouts, and what the
/// model cannot express (redirect, rewrite, mirror per backendRef).
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "a table of cases: the rule and its exact message each"
)]
fn filter_and_timeout_refusals_say_what_to_do() {
    let rule = |body: &str| {
        changed(
            "  rules:\n  - backendRefs:\n    - {name: web-v1, port: 80}\n",
            &format!("  rules:\n  - {body}\n    backendRefs:\n    - {{name: web-v1, port: 80}}\n"),
        )
    };
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "redirect and rewrite",
            rule(
                "filters:\n    - {type: RequestRedirect, requestRedirect: {hostname: a.example}}\n    - {type: URLRewrite, urlRewrite: {hostname: b.example}}",
            ),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].filters[1].type: a rule may specify either RequestRedirect or URLRewrite, but not both (also spec.rules[0].filters[0]): a redirect answers the client, so nothing is rewritten; remove one (line 64)",
            ],
        ),
        (
            "prefix rewrite of an Exact match",
            rule(
                "matches: [{path: {type: Exact, value: /a}}]\n    filters:\n    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}",
            ),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].filters[0].urlRewrite.path.type: ReplacePrefixMatch needs exactly one match, of type PathPrefix (the spec: when using URLRewrite filter with path.type ReplacePrefixMatch, exactly one PathPrefix match must be specified); give the rule one PathPrefix match, or use ReplaceFullPath (line 64)",
            ],
        ),
        (
            "prefix redirect with two matches",
            rule(
                "matches: [{path: {value: /a}}, {path: {value: /b}}]\n    filters:\n    - {type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /c}}}",
            ),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].filters[0].requestRedirect.path.type: ReplacePrefixMatch needs exactly one match, of type PathPrefix (the spec: when using RequestRedirect filter with path.type ReplacePrefixMatch, exactly one PathPrefix match must be specified); give the rule one PathPrefix match, or use ReplaceFullPath (line 64)",
            ],
        ),
        (
            "type without its field",
            rule("filters:\n    - {type: RequestRedirect}"),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].filters[0].requestRedirect: requestRedirect is required with type RequestRedirect (line 63)",
            ],
        ),
        (
            "field of another type",
            rule(
                "filters:\n    - {type: URLRewrite, urlRewrite: {hostname: a.example}, requestRedirect: {hostname: b.example}}",
            ),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].filters[0].requestRedirect: requestRedirect is set with type \"URLRewrite\": a filter's requestRedirect must be nil if the filter.type is not RequestRedirect; remove it or set type: RequestRedirect (line 63)",
            ],
        ),
        (
            "path field and type disagree",
            rule(
                "filters:\n    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replaceFullPath: /x}}}",
            ),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].filters[0].urlRewrite.path.replaceFullPath: type must be 'ReplaceFullPath' when replaceFullPath is set; set type: ReplaceFullPath (line 63)",
            ],
        ),
        (
            "path value missing",
            rule("filters:\n    - {type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath}}}"),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].filters[0].urlRewrite.path.replaceFullPath: replaceFullPath must be specified when type is set to 'ReplaceFullPath' (line 63)",
            ],
        ),
        (
            "status code",
            rule("filters:\n    - {type: RequestRedirect, requestRedirect: {statusCode: 304}}"),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].filters[0].requestRedirect.statusCode: statusCode 304 is not a redirect the spec allows: use 301, 302 (the default), 303, 307 or 308 (line 63)",
            ],
        ),
        (
            "wildcard hostname",
            rule(
                "filters:\n    - {type: RequestRedirect, requestRedirect: {hostname: \"*.example\"}}",
            ),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].filters[0].requestRedirect.hostname: hostname \"*.example\" is not a precise hostname: remove the wildcard (line 63)",
            ],
        ),
        (
            "repeated redirect",
            rule(
                "filters:\n    - {type: RequestRedirect, requestRedirect: {statusCode: 301}}\n    - {type: RequestRedirect, requestRedirect: {statusCode: 302}}",
            ),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].filters[1].type: RequestRedirect filter cannot be repeated: it is also spec.rules[0].filters[0]; merge the two (line 64)",
            ],
        ),
        (
            "percent and fraction",
            rule(
                "filters:\n    - {type: RequestMirror, requestMirror: {backendRef: {name: web, port: 80}, percent: 10, fraction: {numerator: 1}}}",
            ),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].filters[0].requestMirror.fraction: only one of percent or fraction may be specified in HTTPRequestMirrorFilter: remove one (line 63)",
            ],
        ),
        (
            "fraction above 1",
            rule(
                "filters:\n    - {type: RequestMirror, requestMirror: {backendRef: {name: web, port: 80}, fraction: {numerator: 5, denominator: 4}}}",
            ),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].filters[0].requestMirror.fraction: numerator 5 is greater than denominator 4: numerator must be less than or equal to denominator (line 63)",
            ],
        ),
        (
            "mirror without port",
            rule("filters:\n    - {type: RequestMirror, requestMirror: {backendRef: {name: web}}}"),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].filters[0].requestMirror.backendRef.port: port is required when the backend is a Service: the Service port (line 63)",
            ],
        ),
        (
            "redirect and rewrite in one backendRef",
            changed(
                "    - {name: web-v1, port: 80}\n",
                "    - name: web-v1\n      port: 80\n      filters:\n      - {type: RequestRedirect, requestRedirect: {statusCode: 301}}\n      - {type: URLRewrite, urlRewrite: {hostname: a.example}}\n",
            ),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].backendRefs[0].filters[1].type: a rule may specify either RequestRedirect or URLRewrite, but not both (also spec.rules[0].backendRefs[0].filters[0]): a redirect answers the client, so nothing is rewritten; remove one (line 67)",
            ],
        ),
        (
            "backendRequest above request",
            rule("timeouts: {request: 1s, backendRequest: 2s}"),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].timeouts.backendRequest: backendRequest timeout cannot be longer than request timeout (2s > 1s): shorten it, or set request to 0s (none) (line 62)",
            ],
        ),
        (
            "duration format",
            rule("timeouts: {request: 1.5s}"),
            &[
                "rules/r.yaml: document 8 (HTTPRoute default/web): spec.rules[0].timeouts.request: request \"1.5s\" is not a Gateway API duration: one to four numbers of at most 5 digits, each with a unit h, m, s or ms (1s, 500ms, 1m30s) (line 62)",
            ],
        ),
    ];
    for (what, text, expected) in &cases {
        assert_eq!(errors_of(text), *expected, "{what}");
    }
}

/// A `RequestMirror` backendRef is resolved as a backendRef: one that
/// cannot be used (here another namespace's Service without a
/// `ReferenceGrant`, then a Service that does not exist) is left out, the
/// route keeps serving, and `ResolvedRefs` says why; with the grant, the
/// mirror is there.
#[test]
fn mirrors_that_cannot_be_used_are_reported_and_left_out() {
    let other_web = "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: other}\nspec:\n  ports: [{name: http, port: 80, appProtocol: http}]\n  selector: {app: web}\n";
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {name: web, namespace: other}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]\n  to: [{group: \"\", kind: Service, name: web}]\n";
    let route = |service: &str| {
        changed(
            "  rules:\n  - backendRefs:\n    - {name: web-v1, port: 80}\n",
            &format!(
                "  rules:\n  - filters:\n    - type: RequestMirror\n      requestMirror: {{backendRef: {{name: {service}, namespace: other, port: 80}}}}\n    backendRefs:\n    - {{name: web-v1, port: 80}}\n"
            ),
        )
    };
    let mirrors = |model: &RoutingModel| -> Vec<String> {
        let routes =
            &listener(model, "mesh web.default.svc.cluster.local:80").virtual_hosts[0].routes;
        assert_eq!(routes[0].destinations.len(), 1, "the route still serves");
        routes[0]
            .mirrors
            .iter()
            .map(|m| m.destination.host.clone())
            .collect()
    };
    let model = model_of(&format!("{}{other_web}", route("web")));
    assert_eq!(mirrors(&model), Vec::<String>::new());
    assert_eq!(
        conditions(&model, "HTTPRoute", "web"),
        [cond("Accepted", "RefNotPermitted")]
    );
    let model = model_of(&format!("{}{other_web}", route("nothing")));
    assert_eq!(
        conditions(&model, "HTTPRoute", "web"),
        [cond("Accepted", "RefNotPermitted")],
        "no grant names it either"
    );
    let model = model_of(&format!("{}{other_web}{grant}", route("web")));
    assert_eq!(mirrors(&model), ["web.other.svc.cluster.local"]);
    assert_eq!(
        conditions(&model, "HTTPRoute", "web"),
        [cond("Accepted", "ResolvedRefs")]
    );
    let model = model_of(&format!(
        "{}{other_web}{}",
        route("nothing"),
        grant.replace("name: web}]", "}]")
    ));
    assert_eq!(mirrors(&model), Vec::<String>::new());
    assert_eq!(
        conditions(&model, "HTTPRoute", "web"),
        [cond("Accepted", "BackendNotFound")]
    );
}
