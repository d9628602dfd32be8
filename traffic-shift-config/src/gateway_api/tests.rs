//! The Gateway API kinds: the seeds' shifts translated into the model (the
//! same kernel paths as their Istio form), each error with its message,
//! the spec's precedence, and every shipped rules directory resolving.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use crate::{
    ConfigError, RulesFile, load_dir,
    model::{HttpListener, HttpRoute, RoutingModel, TcpRoute},
    parse_file, parse_file_all, resolve, resolve_all,
};

fn repo_rules() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules")
}

/// A shipped rules directory, with `replace` (an `examples/` file) in
/// place of the file that defines the same resource.
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
        assert_eq!(
            files.len(),
            before - 1,
            "{} replaces one file",
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
    let services = texts("bookinfo-gateway-api", &["services.yaml"]);
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

#[test]
fn smoke() {
    let _ = errors_of("");
    let _: Option<ConfigError> = None;
}
