//! Parse, validate and resolve, end to end, on YAML as users write it.

use std::{
    collections::BTreeMap,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use super::{ConfigError, Resource, RulesFile, load_dir, parse_file, resolve};
use crate::model::{Endpoint, RoutingModel, Selection, TcpRoute};

/// The example the project ships in `rules/tcp-echo/`.
const TCP_ECHO: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo}
spec:
  hosts: [tcp-echo.local]
  addresses: [127.100.0.1]
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {tcp: 19001}, labels: {app: tcp-echo, version: v1}}
  - {address: 127.0.0.1, ports: {tcp: 19002}, labels: {app: tcp-echo, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo-destination}
spec:
  host: tcp-echo.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo}
spec:
  hosts: [tcp-echo.local]
  tcp:
  - match: [{port: 9000}]
    route:
    - destination: {host: tcp-echo.local, port: {number: 9000}, subset: v1}
      weight: 80
    - destination: {host: tcp-echo.local, port: {number: 9000}, subset: v2}
      weight: 20
";

/// The `ServiceEntry` and `DestinationRule` of [`TCP_ECHO`], without its
/// `VirtualService`, for tests that bring their own.
fn tcp_echo_service() -> &'static str {
    let end = TCP_ECHO
        .match_indices("---\n")
        .nth(1)
        .map(|(at, _)| at)
        .expect("TCP_ECHO has three documents");
    &TCP_ECHO[..end]
}

const FILE: &str = "rules/tcp-echo/tcp-echo.yaml";

/// Istio's TCP Traffic Shifting task, as written: its Gateway, and its
/// `VirtualService` routing to the service of [`tcp_echo_service`].
const TCP_ECHO_GATEWAY: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp-echo-gateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: [\"*\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo}
spec:
  hosts: [\"*\"]
  gateways: [tcp-echo-gateway]
  tcp:
  - match: [{port: 31400}]
    route:
    - destination: {host: tcp-echo.local, port: {number: 9000}, subset: v1}
      weight: 80
    - destination: {host: tcp-echo.local, port: {number: 9000}, subset: v2}
      weight: 20
";

/// A Gateway `name` (`name` or `namespace/name`) with these `servers`
/// (YAML list items, indented by two).
fn gateway_doc(name: &str, servers: &str) -> String {
    let metadata = match name.split_once('/') {
        Some((namespace, name)) => format!("{{name: {name}, namespace: {namespace}}}"),
        None => format!("{{name: {name}}}"),
    };
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {metadata}\nspec:\n  \
         selector: {{istio: ingressgateway}}\n  servers:\n{servers}"
    )
}

/// A `VirtualService` `name` with `hosts` and `gateways` (flow lists) and
/// `tcp` (YAML list items, indented by two).
fn virtual_service_doc(name: &str, hosts: &str, gateways: &str, tcp: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\n\
         spec:\n  hosts: {hosts}\n  gateways: {gateways}\n  tcp:\n{tcp}"
    )
}

/// `(key, gateway, listeners)` of each route, in model order.
fn route_summary(model: &RoutingModel) -> Vec<(&str, Option<&str>, Vec<SocketAddr>)> {
    model
        .routes
        .iter()
        .map(|route| {
            (
                route.key.as_str(),
                route.gateway.as_deref(),
                route.listeners.clone(),
            )
        })
        .collect()
}

fn parse(text: &str) -> RulesFile {
    parse_file(Path::new(FILE), text)
        .unwrap_or_else(|error| panic!("expected the rules to parse, got: {error}"))
}

fn parse_error(text: &str) -> ConfigError {
    match parse_file(Path::new(FILE), text) {
        Ok(file) => panic!(
            "expected a parse error, got {} resources",
            file.resources.len()
        ),
        Err(error) => error,
    }
}

/// Parses each text as its own file (`rules/0.yaml`, ...) and resolves them.
fn resolve_texts(texts: &[&str]) -> Result<RoutingModel, ConfigError> {
    let files: Vec<RulesFile> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            parse_file(&PathBuf::from(format!("rules/{i}.yaml")), text).unwrap_or_else(|error| {
                panic!("expected file {i} to parse, got: {error}");
            })
        })
        .collect();
    resolve(&files)
}

fn resolve_ok(texts: &[&str]) -> RoutingModel {
    resolve_texts(texts).unwrap_or_else(|error| panic!("expected the rules to resolve: {error}"))
}

fn resolve_error(texts: &[&str]) -> ConfigError {
    match resolve_texts(texts) {
        Ok(model) => panic!("expected a resolve error, got {model:?}"),
        Err(error) => error,
    }
}

/// The 1-based line of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} is not in the text"))
        + 1
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("a socket address literal")
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

fn only_route(model: &RoutingModel) -> &TcpRoute {
    assert_eq!(
        model.routes.len(),
        1,
        "expected exactly one route, got {:#?}",
        model.routes
    );
    &model.routes[0]
}

fn assert_error(
    error: &ConfigError,
    document: usize,
    field: &str,
    line: Option<usize>,
    message: &str,
) {
    assert_eq!(error.document, Some(document), "document of: {error}");
    assert_eq!(error.field.to_string(), field, "field path of: {error}");
    assert_eq!(error.line, line, "line of: {error}");
    assert!(
        error.message.contains(message),
        "expected the message to contain {message:?}, got: {error}"
    );
}

#[test]
fn tcp_echo_example_resolves_to_one_weighted_route() {
    let model = resolve(&[parse(TCP_ECHO)]).expect("the shipped example resolves");
    let route = only_route(&model);
    let endpoint = |port: u16, version: &str| Endpoint {
        addr: SocketAddr::new([127, 0, 0, 1].into(), port),
        labels: labels(&[("app", "tcp-echo"), ("version", version)]),
    };
    assert_eq!(route.key, "default/tcp-echo/tcp[0]/port 9000", "route key");
    assert_eq!(
        *route.source,
        *std::path::Path::new(FILE),
        "route source is the file"
    );
    assert_eq!(route.service_host, "tcp-echo.local", "service host");
    assert_eq!(route.service_port, 9000, "service port");
    assert_eq!(route.listeners, [addr("127.100.0.1:9000")], "listeners");
    assert_eq!(
        route.selection,
        Selection::Smooth,
        "no loadBalancer: Smooth"
    );
    let summary: Vec<_> = route
        .destinations
        .iter()
        .map(|d| {
            (
                d.host.as_str(),
                d.subset.as_deref(),
                d.weight,
                d.endpoint_selection,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("tcp-echo.local", Some("v1"), 80, Selection::Smooth),
            ("tcp-echo.local", Some("v2"), 20, Selection::Smooth),
        ],
        "destinations in the order written, with their weights"
    );
    assert_eq!(
        route.destinations[0].endpoints,
        [endpoint(19001, "v1")],
        "subset v1: the version=v1 endpoint, at its port named tcp"
    );
    assert_eq!(
        route.destinations[1].endpoints,
        [endpoint(19002, "v2")],
        "subset v2: the version=v2 endpoint, at its port named tcp"
    );
}

#[test]
fn all_three_api_versions_are_accepted_and_others_refused() {
    let expected = resolve(&[parse(TCP_ECHO)]).expect("the shipped example resolves");
    for version in ["v1", "v1beta1", "v1alpha3"] {
        let text = TCP_ECHO.replace(
            "networking.istio.io/v1\n",
            &format!("networking.istio.io/{version}\n"),
        );
        let model = resolve(&[parse(&text)])
            .unwrap_or_else(|error| panic!("apiVersion {version} should resolve: {error}"));
        assert_eq!(
            model, expected,
            "apiVersion {version} gives the same model as v1"
        );
    }
    let text = TCP_ECHO.replacen("networking.istio.io/v1\n", "networking.istio.io/v2\n", 1);
    let error = parse_error(&text);
    assert_error(
        &error,
        1,
        "apiVersion",
        Some(1),
        "\"networking.istio.io/v2\"",
    );
}

#[test]
fn unsupported_kind_is_named() {
    let text = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: a}\nspec: {}\n";
    let error = parse_error(text);
    assert_error(&error, 1, "kind", Some(2), "unsupported kind \"Sidecar\"");
    assert!(
        error.resource.is_none(),
        "an unknown kind names no resource: {error}"
    );
}

#[test]
fn multi_document_files_keep_order_and_count_empty_documents() {
    let text = format!("# leading comment\n---\n---\n{TCP_ECHO}---\n");
    let file = parse(&text);
    let found: Vec<(&str, &str, usize)> = file
        .resources
        .iter()
        .map(|r| (r.kind(), r.name(), r.source().document))
        .collect();
    assert_eq!(
        found,
        [
            ("ServiceEntry", "tcp-echo", 2),
            ("DestinationRule", "tcp-echo-destination", 3),
            ("VirtualService", "tcp-echo", 4),
        ],
        "resources in document order; the empty first document counts, the trailing one too"
    );
    assert!(
        file.resources.iter().all(|r| r.namespace() == "default"),
        "namespace defaults to default"
    );
    let error = parse_error(&text.replace("weight: 20", "weight: -5"));
    assert_eq!(
        error.line,
        Some(line_of(&text, "weight: 20")),
        "lines count from the top of the file, not the document: {error}"
    );
}

#[test]
fn negative_weight_names_file_document_path_and_line() {
    let text = TCP_ECHO.replace("weight: 20", "weight: -5");
    let error = parse_error(&text);
    let line = line_of(&text, "weight: -5");
    assert_error(
        &error,
        3,
        "spec.tcp[0].route[1].weight",
        Some(line),
        "weight -5 < 0",
    );
    assert_eq!(
        error.to_string(),
        format!(
            "{FILE}: document 3 (VirtualService default/tcp-echo): spec.tcp[0].route[1].weight: \
             weight -5 < 0 (line {line})"
        ),
        "the whole one-line message"
    );
}

#[test]
fn unknown_field_typo_names_path_and_line() {
    let text = TCP_ECHO.replace("      weight: 20", "      weigth: 20");
    let error = parse_error(&text);
    assert_error(
        &error,
        3,
        "spec.tcp[0].route[1].weigth",
        Some(line_of(&text, "weigth")),
        "unknown field `weigth`",
    );
    let text = TCP_ECHO.replace(
        "metadata: {name: tcp-echo-destination}",
        "metadata: {name: a, namspace: b}",
    );
    let error = parse_error(&text);
    assert_error(
        &error,
        2,
        "metadata.namspace",
        Some(line_of(&text, "namspace")),
        "unknown field `namspace`",
    );
}

#[test]
fn ignored_istio_fields_are_accepted() {
    let text = TCP_ECHO
        .replace(
            "  hosts: [tcp-echo.local]\n  tcp:",
            "  hosts: [tcp-echo.local]\n  exportTo: [\".\"]\n  http:\n  - route: [{destination: {host: tcp-echo.local}}]\n  tcp:",
        )
        .replace(
            "  host: tcp-echo.local\n",
            "  host: tcp-echo.local\n  trafficPolicy:\n    connectionPool: {tcp: {maxConnections: 1}}\n    outlierDetection: {consecutive5xxErrors: 5}\n",
        );
    resolve(&[parse(&text)]).unwrap_or_else(|error| panic!("ignored fields should pass: {error}"));
}

#[test]
fn yaml_syntax_error_gives_the_parser_line() {
    let text = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: a\n    namespace: b\n";
    let error = parse_error(text);
    assert_eq!(error.document, Some(1), "document of: {error}");
    assert_eq!(error.line, Some(5), "the line libyaml reports: {error}");
    assert!(
        error.resource.is_none(),
        "no resource for a syntax error: {error}"
    );
    assert!(
        error.message.starts_with("invalid YAML"),
        "message: {error}"
    );
    let text = format!("{TCP_ECHO}---\nkind: [unclosed\n");
    let error = parse_error(&text);
    assert_eq!(
        error.document,
        Some(4),
        "the fourth document is broken: {error}"
    );
}

#[test]
fn missing_destination_host_is_refused() {
    let vs = TCP_ECHO.replace(
        "{host: tcp-echo.local, port: {number: 9000}, subset: v2}",
        "{host: tcp-echo.remote, port: {number: 9000}, subset: v2}",
    );
    let error = resolve_error(&[&vs]);
    assert_error(
        &error,
        3,
        "spec.tcp[0].route[1].destination.host",
        Some(line_of(&vs, "tcp-echo.remote")),
        "referenced host not found: \"tcp-echo.remote\"; define a ServiceEntry with hosts: \
         [tcp-echo.remote] or fix the host",
    );
    let vs = TCP_ECHO.replace(
        "  hosts: [tcp-echo.local]\n  tcp:",
        "  hosts: [other.local]\n  tcp:",
    );
    let error = resolve_error(&[&vs]);
    assert_error(
        &error,
        3,
        "spec.hosts[0]",
        Some(line_of(&vs, "other.local")),
        "referenced host not found: \"other.local\"",
    );
}

#[test]
fn missing_subset_is_refused() {
    let text = TCP_ECHO.replace("subset: v2}", "subset: v3}");
    let error = resolve_error(&[&text]);
    assert_error(
        &error,
        3,
        "spec.tcp[0].route[1].destination.subset",
        Some(line_of(&text, "subset: v3")),
        "subset \"v3\" not found in DestinationRule default/tcp-echo-destination",
    );
    // No DestinationRule at all for the host.
    let without_rule: String = TCP_ECHO
        .split("---\n")
        .filter(|document| !document.contains("kind: DestinationRule"))
        .collect::<Vec<_>>()
        .join("---\n");
    let error = resolve_error(&[&without_rule]);
    assert!(
        error.message.contains(
            "subset \"v1\" not found: there is no DestinationRule for host tcp-echo.local"
        ),
        "expected a missing DestinationRule message, got: {error}"
    );
}

#[test]
fn short_names_match_in_their_namespace() {
    let fqdn_service = tcp_echo_service()
        .replace(
            "hosts: [tcp-echo.local]",
            "hosts: [tcp-echo.shop.svc.cluster.local]",
        )
        .replace(
            "metadata: {name: tcp-echo}",
            "metadata: {name: tcp-echo, namespace: shop}",
        )
        .replace("host: tcp-echo.local", "host: tcp-echo")
        .replace(
            "metadata: {name: tcp-echo-destination}",
            "metadata: {name: tcp-echo-destination, namespace: shop}",
        );
    let vs = |namespace: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp-echo, namespace: {namespace}}}
spec:
  hosts: [tcp-echo]
  tcp:
  - route:
    - destination: {{host: tcp-echo, subset: v1}}
"
        )
    };
    let model = resolve_ok(&[&fqdn_service, &vs("shop")]);
    let route = only_route(&model);
    assert_eq!(route.key, "shop/tcp-echo/tcp[0]/port 9000", "route key");
    assert_eq!(
        route.service_host, "tcp-echo.shop.svc.cluster.local",
        "the service host as its ServiceEntry writes it"
    );
    assert_eq!(
        route.destinations[0].endpoints.len(),
        1,
        "the short-named DestinationRule's subset v1 selects one endpoint"
    );
    assert_eq!(
        route.destinations[0].host, "tcp-echo.shop.svc.cluster.local",
        "a destination names its host as the ServiceEntry writes it"
    );
    // In another namespace the short name means another host.
    let error = resolve_error(&[&fqdn_service, &vs("web")]);
    assert!(
        error
            .message
            .contains("referenced host not found: \"tcp-echo\""),
        "a short name does not reach another namespace: {error}"
    );
    // ServiceEntry hosts are taken as written (Istio does not qualify
    // them): a short ServiceEntry host is not what a short
    // VirtualService host means.
    let short_service = fqdn_service.replace(
        "hosts: [tcp-echo.shop.svc.cluster.local]",
        "hosts: [tcp-echo]",
    );
    let error = resolve_error(&[&short_service, &vs("shop")]);
    assert_error(
        &error,
        1,
        "spec.hosts[0]",
        Some(5),
        "referenced host not found: \"tcp-echo\"; define a ServiceEntry with hosts: \
         [tcp-echo.shop.svc.cluster.local] or fix the host",
    );
}

#[test]
fn load_balancer_maps_to_selection() {
    let with_policy = |top: &str, subset: &str| {
        TCP_ECHO
            .replace(
                "  host: tcp-echo.local\n",
                &format!("  host: tcp-echo.local\n  trafficPolicy:\n    loadBalancer: {top}\n"),
            )
            .replace(
                "  - {name: v1, labels: {version: v1}}\n",
                &format!("  - name: v1\n    labels: {{version: v1}}\n{subset}"),
            )
    };
    let subset_random = "    trafficPolicy: {loadBalancer: {simple: RANDOM}}\n";
    let cases = [
        (
            "{simple: RANDOM}",
            "",
            Selection::Random,
            Selection::Random,
            Selection::Random,
        ),
        (
            "{simple: ROUND_ROBIN}",
            "",
            Selection::Smooth,
            Selection::Smooth,
            Selection::Smooth,
        ),
        (
            "{simple: LEAST_REQUEST}",
            "",
            Selection::Smooth,
            Selection::Smooth,
            Selection::Smooth,
        ),
        (
            "{consistentHash: {useSourceIp: true}}",
            "",
            Selection::SourceHash,
            Selection::SourceHash,
            Selection::SourceHash,
        ),
        (
            "{consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}",
            subset_random,
            Selection::SourceHash,
            Selection::Random,
            Selection::SourceHash,
        ),
    ];
    for (top, subset, selection, v1, v2) in cases {
        let text = with_policy(top, subset);
        let model = resolve(&[parse(&text)])
            .unwrap_or_else(|error| panic!("loadBalancer {top} should resolve: {error}"));
        let route = only_route(&model);
        assert_eq!(route.selection, selection, "route selection for {top}");
        assert_eq!(
            (
                route.destinations[0].endpoint_selection,
                route.destinations[1].endpoint_selection
            ),
            (v1, v2),
            "endpoint selection of v1 (subset policy {subset:?}) and v2 for {top}"
        );
    }
}

#[test]
fn http_only_load_balancers_are_refused_for_tcp_routes() {
    let cases = [
        (
            "{simple: PASSTHROUGH}",
            "spec.trafficPolicy.loadBalancer.simple",
            "PASSTHROUGH is not supported for TCP routes",
        ),
        (
            "{consistentHash: {httpHeaderName: x-user}}",
            "spec.trafficPolicy.loadBalancer.consistentHash.httpHeaderName",
            "consistentHash.httpHeaderName hashes an HTTP request property",
        ),
        (
            "{consistentHash: {httpCookie: {name: user, ttl: 0s}}}",
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie",
            "useSourceIp: true",
        ),
    ];
    for (policy, field, message) in cases {
        let text = TCP_ECHO.replace(
            "  host: tcp-echo.local\n",
            &format!("  host: tcp-echo.local\n  trafficPolicy:\n    loadBalancer: {policy}\n"),
        );
        let error = resolve_error(&[&text]);
        assert_error(
            &error,
            2,
            field,
            Some(line_of(&text, "loadBalancer")),
            message,
        );
    }
}

#[test]
fn weights_default_by_destination_count() {
    let vs = |route: &str| {
        format!(
            "{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp-echo}}
spec:
  hosts: [tcp-echo.local]
  tcp:
  - route:
{route}",
            tcp_echo_service()
        )
    };
    let cases = [
        (
            "one destination, no weight",
            "    - destination: {host: tcp-echo.local}\n",
            vec![1],
        ),
        (
            "one destination, weight 0",
            "    - destination: {host: tcp-echo.local}\n      weight: 0\n",
            vec![1],
        ),
        (
            "one destination, weight 7",
            "    - destination: {host: tcp-echo.local}\n      weight: 7\n",
            vec![7],
        ),
        (
            "several, one omitted",
            "    - destination: {host: tcp-echo.local, subset: v1}\n      weight: 1000\n    - destination: {host: tcp-echo.local, subset: v2}\n",
            vec![1000, 0],
        ),
    ];
    for (case, route, weights) in cases {
        let model = resolve(&[parse(&vs(route))])
            .unwrap_or_else(|error| panic!("{case}: should resolve: {error}"));
        let got: Vec<u32> = only_route(&model)
            .destinations
            .iter()
            .map(|d| d.weight)
            .collect();
        assert_eq!(got, weights, "{case}: weights in the model");
    }
    let all_zero = vs(
        "    - destination: {host: tcp-echo.local, subset: v1}\n    - destination: {host: tcp-echo.local, subset: v2}\n      weight: 0\n",
    );
    let error = parse_error(&all_zero);
    assert_error(
        &error,
        3,
        "spec.tcp[0].route",
        Some(line_of(&all_zero, "  - route:")),
        "total destination weight = 0",
    );
    let error = parse_error(&vs("    - weight: 5\n"));
    assert_error(
        &error,
        3,
        "spec.tcp[0].route[0]",
        Some(line_of(&vs("    - weight: 5\n"), "weight: 5")),
        "destination is required",
    );
}

/// A route's listeners and prefixes, as `(address or range:port)` text.
fn route_addresses(route: &TcpRoute) -> (Vec<String>, Vec<String>) {
    (
        route.listeners.iter().map(ToString::to_string).collect(),
        route.prefixes.iter().map(ToString::to_string).collect(),
    )
}

#[test]
fn service_address_cidrs_become_listeners_or_prefixes() {
    /// The listeners and prefixes of the route, or the error.
    type Expected = Result<(&'static [&'static str], &'static [&'static str]), &'static str>;
    let cases: [(&str, Expected); 8] = [
        ("127.100.0.1/32", Ok((&["127.100.0.1:9000"], &[]))),
        ("fd00::1/128", Ok((&["[fd00::1]:9000"], &[]))),
        ("10.0.0.0/24", Ok((&[], &["10.0.0.0/24:9000"]))),
        // Host bits are cleared, as Go's net.ParseCIDR and Envoy read it.
        ("10.1.2.3/8", Ok((&[], &["10.0.0.0/8:9000"]))),
        ("fd00:7473::5/64", Ok((&[], &["[fd00:7473::/64]:9000"]))),
        (
            "198.18.7.0/24\", \"198.18.7.9\", \"198.18.0.0/16",
            Ok((
                &["198.18.7.9:9000"],
                &["198.18.7.0/24:9000", "198.18.0.0/16:9000"],
            )),
        ),
        ("10.0.0.0/33", Err("10.0.0.0/33 is not a valid CIDR block")),
        ("not-an-ip", Err("not-an-ip is not a valid IP")),
    ];
    for (address, expected) in cases {
        let text = TCP_ECHO.replace(
            "addresses: [127.100.0.1]",
            &format!("addresses: [\"{address}\"]"),
        );
        match (parse_file(Path::new(FILE), &text), expected) {
            (Ok(file), Ok((listeners, prefixes))) => {
                let model = resolve(&[file]).unwrap_or_else(|error| panic!("{address}: {error}"));
                assert_eq!(
                    route_addresses(only_route(&model)),
                    (
                        listeners.iter().map(ToString::to_string).collect(),
                        prefixes.iter().map(ToString::to_string).collect()
                    ),
                    "listeners and prefixes of {address}"
                );
            }
            (Err(error), Err(message)) => {
                assert_error(
                    &error,
                    1,
                    "spec.addresses[0]",
                    Some(line_of(&text, "addresses:")),
                    message,
                );
            }
            (got, expected) => panic!("{address}: expected {expected:?}, got {got:?}"),
        }
    }
    let text = TCP_ECHO
        .replace("addresses: [127.100.0.1]", "addresses: [10.0.0.0/24]")
        .replace("resolution: STATIC", "resolution: DNS");
    let error = parse_error(&text);
    assert!(
        error
            .message
            .contains("CIDR addresses are allowed only for NONE/STATIC resolution types"),
        "CIDR with DNS resolution: {error}"
    );
}

/// A second ServiceEntry (host `other.local`, `addresses`) and its
/// VirtualService (all to `other.local`), beside [`TCP_ECHO`].
fn other_service(addresses: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: other}}
spec:
  hosts: [other.local]
  addresses: [{addresses}]
  ports: [{{number: 9000, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{tcp: 19003}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: other}}
spec:
  hosts: [other.local]
  tcp:
  - route:
    - destination: {{host: other.local}}
"
    )
}

#[test]
fn overlapping_service_ranges_resolve_and_the_same_range_twice_is_refused() {
    let echo = TCP_ECHO.replace("addresses: [127.100.0.1]", "addresses: [198.18.7.0/24]");
    // An address inside the range, a longer range, a shorter one: all legal
    // (the exact address, then the longest prefix, wins in the kernel).
    for addresses in ["198.18.7.9", "198.18.7.128/25", "198.18.0.0/16"] {
        let model = resolve_ok(&[&echo, &other_service(addresses)]);
        assert_eq!(model.routes.len(), 2, "{addresses}: {model:?}");
    }
    // The same range and port, routed twice.
    let other = other_service("198.18.7.0/24");
    let error = resolve_error(&[&echo, &other]);
    assert_error(
        &error,
        2,
        "spec.tcp[0]",
        Some(line_of(&other, "  - route:")),
        "service address range 198.18.7.0/24:9000 is already routed by",
    );
    assert!(
        error
            .message
            .contains("tcp[0]: a service address range and port takes one TCP route"),
        "{error}"
    );
}

#[test]
fn http_routes_cover_service_ranges() {
    let text = TCP_ECHO
        .replace(
            "addresses: [127.100.0.1]",
            "addresses: [127.100.0.1, 10.0.0.0/24]",
        )
        .replace("protocol: TCP", "protocol: HTTP")
        .replace(
            "  tcp:\n  - match: [{port: 9000}]\n",
            "  http:\n  - match: [{port: 9000}]\n",
        );
    let model = resolve_ok(&[&text]);
    assert_eq!(model.http.len(), 1, "{model:?}");
    let listener = &model.http[0];
    assert_eq!(listener.listeners, [addr("127.100.0.1:9000")]);
    let prefixes: Vec<String> = listener.prefixes.iter().map(ToString::to_string).collect();
    assert_eq!(prefixes, ["10.0.0.0/24:9000"]);
}

#[test]
fn duplicate_and_invalid_subset_names_are_refused() {
    let cases = [
        (
            "{name: v1, labels: {version: v2}}",
            "spec.subsets[1].name",
            "duplicate subset names: v1",
        ),
        (
            "{name: \"\", labels: {version: v2}}",
            "spec.subsets[1].name",
            "subset name cannot be empty",
        ),
        (
            "{labels: {version: v2}}",
            "spec.subsets[1].name",
            "subset name cannot be empty",
        ),
        (
            "{name: v_2, labels: {version: v2}}",
            "spec.subsets[1].name",
            "subset name is invalid: v_2",
        ),
    ];
    for (subset, field, message) in cases {
        let text = TCP_ECHO.replace("{name: v2, labels: {version: v2}}", subset);
        let error = parse_error(&text);
        assert_error(&error, 2, field, Some(line_of(&text, subset)), message);
    }
}

#[test]
fn wildcard_host_is_refused_for_mesh_and_allowed_for_gateways() {
    let mesh = TCP_ECHO.replace(
        "  hosts: [tcp-echo.local]\n  tcp:",
        "  hosts: [\"*\"]\n  tcp:",
    );
    let error = parse_error(&mesh);
    assert_error(
        &error,
        3,
        "spec.hosts[0]",
        Some(line_of(&mesh, "\"*\"")),
        "wildcard host * is not allowed for virtual services bound to the mesh gateway",
    );
    let explicit_mesh = mesh.replace("  tcp:", "  gateways: [mesh, tcp-echo-gateway]\n  tcp:");
    assert!(
        parse_file(Path::new(FILE), &explicit_mesh).is_err(),
        "gateways listing mesh is mesh-bound"
    );
    let gateway = mesh.replace("  tcp:", "  gateways: [tcp-echo-gateway]\n  tcp:");
    let server = "  - port: {number: 9000, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n";
    let model = resolve_ok(&[&gateway, &gateway_doc("tcp-echo-gateway", server)]);
    assert_eq!(
        route_summary(&model),
        [(
            "default/tcp-echo/tcp[0]/gateway default/tcp-echo-gateway port 9000",
            Some("default/tcp-echo-gateway"),
            vec![addr("0.0.0.0:9000"), addr("[::]:9000")],
        )],
        "a gateway-bound * makes a gateway route, and no mesh route"
    );
}

#[test]
fn tcp_traffic_shifting_gateway_resolves_to_one_gateway_route() {
    let model = resolve_ok(&[tcp_echo_service(), TCP_ECHO_GATEWAY]);
    let route = only_route(&model);
    let endpoint = |port: u16, version: &str| Endpoint {
        addr: SocketAddr::new([127, 0, 0, 1].into(), port),
        labels: labels(&[("app", "tcp-echo"), ("version", version)]),
    };
    assert_eq!(
        route.key, "default/tcp-echo/tcp[0]/gateway default/tcp-echo-gateway port 31400",
        "route key"
    );
    assert_eq!(
        &*route.source,
        std::path::Path::new("rules/1.yaml"),
        "route source is the VirtualService's file"
    );
    assert_eq!(
        route.gateway.as_deref(),
        Some("default/tcp-echo-gateway"),
        "a gateway route names its gateway"
    );
    assert_eq!(
        route.service_host, "tcp-echo.local",
        "the first destination's host"
    );
    assert_eq!(route.service_port, 31400, "the gateway server port");
    assert_eq!(
        route.listeners,
        [addr("0.0.0.0:31400"), addr("[::]:31400")],
        "no bind: any local address, both families"
    );
    assert_eq!(
        route.selection,
        Selection::Smooth,
        "no loadBalancer: Smooth"
    );
    let summary: Vec<_> = route
        .destinations
        .iter()
        .map(|d| {
            (
                d.host.as_str(),
                d.subset.as_deref(),
                d.weight,
                d.endpoints.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "tcp-echo.local",
                Some("v1"),
                80,
                vec![endpoint(19001, "v1")]
            ),
            (
                "tcp-echo.local",
                Some("v2"),
                20,
                vec![endpoint(19002, "v2")]
            ),
        ],
        "destinations in the order written, endpoints at the port of service port 9000"
    );
    // One file, as the Istio task applies it, gives the same route.
    let together = format!("{}---\n{TCP_ECHO_GATEWAY}", tcp_echo_service());
    let model = resolve(&[parse(&together)]).expect("the task's YAML in one file resolves");
    assert_eq!(
        route_summary(&model),
        [(
            "default/tcp-echo/tcp[0]/gateway default/tcp-echo-gateway port 31400",
            Some("default/tcp-echo-gateway"),
            vec![addr("0.0.0.0:31400"), addr("[::]:31400")],
        )],
        "one file"
    );
    // No port on the destination: the service's only port.
    let portless = TCP_ECHO_GATEWAY.replace("port: {number: 9000}, ", "");
    let model = resolve_ok(&[tcp_echo_service(), &portless]);
    let ports: Vec<u16> = only_route(&model).destinations[1]
        .endpoints
        .iter()
        .map(|e| e.addr.port())
        .collect();
    assert_eq!(
        ports,
        [19002],
        "the only port of tcp-echo.local, 9000, named tcp"
    );
}

#[test]
fn mesh_and_gateway_binding_gives_a_mesh_and_a_gateway_route() {
    let vs = TCP_ECHO.replace(
        "  tcp:\n  - match: [{port: 9000}]\n    route:",
        "  gateways: [mesh, tcp-echo-gateway]\n  tcp:\n  - route:",
    );
    let gateway = TCP_ECHO_GATEWAY
        .split("---\n")
        .next()
        .expect("TCP_ECHO_GATEWAY starts with its Gateway");
    let model = resolve_ok(&[&vs, gateway]);
    assert_eq!(
        route_summary(&model),
        [
            (
                "default/tcp-echo/tcp[0]/gateway default/tcp-echo-gateway port 31400",
                Some("default/tcp-echo-gateway"),
                vec![addr("0.0.0.0:31400"), addr("[::]:31400")],
            ),
            (
                "default/tcp-echo/tcp[0]/port 9000",
                None,
                vec![addr("127.100.0.1:9000")],
            ),
        ],
        "both routes, sorted by key"
    );
    assert_eq!(
        model.routes[0].destinations, model.routes[1].destinations,
        "the same destinations and endpoints on both paths"
    );
    // The match port of TCP_ECHO (9000) is no server port of the gateway.
    let vs = TCP_ECHO.replace("  tcp:", "  gateways: [mesh, tcp-echo-gateway]\n  tcp:");
    let error = resolve_error(&[&vs, gateway]);
    assert_error(
        &error,
        3,
        "spec.tcp[0].match[0].port",
        Some(line_of(&vs, "{port: 9000}")),
        "Gateway default/tcp-echo-gateway has no server on port 9000 (servers: 31400 TCP)",
    );
}

#[test]
fn gateway_server_bind_is_the_only_listener() {
    let bound = |address: &str| {
        TCP_ECHO_GATEWAY.replace(
            "    hosts: [\"*\"]\n---",
            &format!("    hosts: [\"*\"]\n    bind: {address}\n---"),
        )
    };
    for (address, listener) in [
        ("127.0.0.10", "127.0.0.10:31400"),
        ("\"fd00::10\"", "[fd00::10]:31400"),
    ] {
        let model = resolve_ok(&[tcp_echo_service(), &bound(address)]);
        assert_eq!(
            only_route(&model).listeners,
            [addr(listener)],
            "bind {address}: that address only"
        );
    }
    // A unix socket: valid Istio with port 0 (served by the agent in user
    // space: the route has no IP listener, only the socket), refused with
    // another port, as Istio does.
    let unix = bound("unix:///var/run/gw.sock");
    let error = parse_error(&unix);
    assert_error(
        &error,
        1,
        "spec.servers[0].port.number",
        Some(line_of(&unix, "- port:")),
        "port number must be 0 for unix domain socket",
    );
    let unix = unix
        .replace("number: 31400", "number: 0")
        .replace("  - match: [{port: 31400}]\n    route:", "  - route:");
    let file = parse(&unix);
    assert!(file.warnings.is_empty(), "no warning: {:?}", file.warnings);
    let model = resolve_ok(&[tcp_echo_service(), &unix]);
    let route = only_route(&model);
    assert!(route.listeners.is_empty(), "no IP listener: {route:?}");
    assert_eq!(route.unix, ["/var/run/gw.sock"]);
    assert_eq!(route.service_port, 0);
    assert!(route.is_unix());

    // Another gateway on the same port, bound to an address: a different
    // listener, so legal (the kernel tries the exact address first).
    let other = format!(
        "{}---\n{}",
        gateway_doc(
            "bound-gateway",
            "  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n    bind: 127.0.0.10\n",
        ),
        virtual_service_doc(
            "tcp-echo-bound",
            "[\"*\"]",
            "[bound-gateway]",
            "  - route: [{destination: {host: tcp-echo.local, subset: v2}}]\n",
        )
    );
    let model = resolve_ok(&[tcp_echo_service(), TCP_ECHO_GATEWAY, &other]);
    assert_eq!(
        route_summary(&model),
        [
            (
                "default/tcp-echo-bound/tcp[0]/gateway default/bound-gateway port 31400",
                Some("default/bound-gateway"),
                vec![addr("127.0.0.10:31400")],
            ),
            (
                "default/tcp-echo/tcp[0]/gateway default/tcp-echo-gateway port 31400",
                Some("default/tcp-echo-gateway"),
                vec![addr("0.0.0.0:31400"), addr("[::]:31400")],
            ),
        ],
        "a bound and an unbound server on one port"
    );

    // A gateway listener on a service address and port: a gateway route
    // and a mesh route never conflict (different kernel maps).
    let on_service_address = format!(
        "{}---\n{}",
        gateway_doc(
            "service-address",
            "  - port: {number: 9000, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n    bind: 127.100.0.1\n",
        ),
        virtual_service_doc(
            "tcp-echo",
            "[tcp-echo.local]",
            "[mesh, service-address]",
            "  - route: [{destination: {host: tcp-echo.local, subset: v1}}]\n",
        )
    );
    let model = resolve_ok(&[tcp_echo_service(), &on_service_address]);
    let listeners: Vec<_> = route_summary(&model)
        .into_iter()
        .map(|(_, gateway, listeners)| (gateway, listeners))
        .collect();
    assert_eq!(
        listeners,
        [
            (
                Some("default/service-address"),
                vec![addr("127.100.0.1:9000")]
            ),
            (None, vec![addr("127.100.0.1:9000")]),
        ],
        "one address and port, on both paths"
    );
}

#[test]
fn missing_gateway_is_refused() {
    let gateway_only = |gateways: &str| TCP_ECHO_GATEWAY.replace("[tcp-echo-gateway]", gateways);
    let cases = [
        (
            "[tcp-echo-gatway]",
            "spec.gateways[0]",
            "tcp-echo-gatway",
            "default/tcp-echo-gatway",
        ),
        (
            "[tcp-echo-gateway, istio-system/tcp-echo-gateway]",
            "spec.gateways[1]",
            "istio-system/tcp-echo-gateway",
            "istio-system/tcp-echo-gateway",
        ),
    ];
    for (gateways, field, written, resolved) in cases {
        let text = gateway_only(gateways);
        let error = resolve_error(&[tcp_echo_service(), &text]);
        assert_error(
            &error,
            2,
            field,
            Some(line_of(&text, "  gateways:")),
            &format!("referenced gateway not found: {written:?}; define a Gateway {resolved}"),
        );
    }
    let text = TCP_ECHO_GATEWAY.replace("[{port: 31400}]", "[{port: 31400, gateways: [other]}]");
    let error = resolve_error(&[tcp_echo_service(), &text]);
    assert_error(
        &error,
        2,
        "spec.tcp[0].match[0].gateways[0]",
        Some(line_of(&text, "gateways: [other]")),
        "referenced gateway not found: \"other\"",
    );

    // The other ways to name it: `./name`, `namespace/name`, the legacy FQDN.
    let in_namespace = TCP_ECHO_GATEWAY.replacen(
        "metadata: {name: tcp-echo-gateway}",
        "metadata: {name: tcp-echo-gateway, namespace: istio-system}",
        1,
    );
    for gateways in [
        "[istio-system/tcp-echo-gateway]",
        "[tcp-echo-gateway.istio-system.svc.cluster.local]",
    ] {
        let model = resolve_ok(&[
            tcp_echo_service(),
            &in_namespace.replace("[tcp-echo-gateway]", gateways),
        ]);
        assert_eq!(
            only_route(&model).gateway.as_deref(),
            Some("istio-system/tcp-echo-gateway"),
            "gateways: {gateways}"
        );
    }
    // Istio's validateGatewayNames refuses `./name` in a VirtualService
    // (the namespace must be a DNS label); so do we.
    let text = gateway_only("[./tcp-echo-gateway]");
    let error = parse_error(&text);
    assert_error(
        &error,
        2,
        "spec.gateways[0]",
        Some(line_of(&text, "  gateways:")),
        "invalid value for namespace: \".\"",
    );
}

#[test]
fn gateway_match_ports_are_checked() {
    let with_servers = |servers: &str| {
        let start = TCP_ECHO_GATEWAY.find("  - port:").expect("a server");
        let end = TCP_ECHO_GATEWAY.find("---\n").expect("two documents");
        format!(
            "{}{servers}{}",
            &TCP_ECHO_GATEWAY[..start],
            &TCP_ECHO_GATEWAY[end..]
        )
    };
    let cases = [
        (
            TCP_ECHO_GATEWAY.replace("[{port: 31400}]", "[{port: 31401}]"),
            "Gateway default/tcp-echo-gateway has no server on port 31401 (servers: 31400 TCP): \
             use one of its ports, or add a server for port 31401 to the Gateway",
        ),
        (
            with_servers(
                "  - port: {number: 31400, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n",
            ),
            "port 31400 of Gateway default/tcp-echo-gateway is HTTP: tcp rules apply to TCP, TLS \
             and MONGO servers",
        ),
    ];
    for (text, message) in cases {
        let error = resolve_error(&[tcp_echo_service(), &text]);
        assert_error(
            &error,
            2,
            "spec.tcp[0].match[0].port",
            Some(line_of(&text, "{port: 314")),
            message,
        );
    }
    // An earlier rule routing the port is a warning (IST0130): see
    // rules_tests::shadowed_tcp_matches_warn_as_in_istio.
    // And the match fields the kernel path cannot honour.
    let text = TCP_ECHO_GATEWAY.replace(
        "[{port: 31400}]",
        "[{port: 31400, sourceSubnet: 10.0.0.0/8}]",
    );
    let error = resolve_error(&[tcp_echo_service(), &text]);
    assert_eq!(
        error.field.to_string(),
        "spec.tcp[0].match[0].sourceSubnet",
        "field of: {error}"
    );
}

#[test]
fn match_level_gateways_override_the_top_level_list() {
    let gateway = TCP_ECHO_GATEWAY
        .split("---\n")
        .next()
        .expect("TCP_ECHO_GATEWAY starts with its Gateway");
    let vs = virtual_service_doc(
        "tcp-echo",
        "[tcp-echo.local]",
        "[mesh, tcp-echo-gateway]",
        "  - match: [{port: 9000, gateways: [mesh]}]
    route: [{destination: {host: tcp-echo.local, subset: v1}}]
  - match: [{gateways: [tcp-echo-gateway]}]
    route: [{destination: {host: tcp-echo.local, subset: v2}}]
",
    );
    let model = resolve_ok(&[tcp_echo_service(), gateway, &vs]);
    let subsets: Vec<_> = model
        .routes
        .iter()
        .map(|route| (route.key.as_str(), route.destinations[0].subset.as_deref()))
        .collect();
    assert_eq!(
        subsets,
        [
            ("default/tcp-echo/tcp[0]/port 9000", Some("v1")),
            (
                "default/tcp-echo/tcp[1]/gateway default/tcp-echo-gateway port 31400",
                Some("v2")
            ),
        ],
        "tcp[0] for the mesh only (its port 9000 is no gateway port), tcp[1] for the gateway only"
    );
    // A match may name a gateway the top-level list (here: mesh, by
    // default) does not.
    let vs = vs.replace("  gateways: [mesh, tcp-echo-gateway]\n", "");
    let model = resolve_ok(&[tcp_echo_service(), gateway, &vs]);
    assert_eq!(
        model
            .routes
            .iter()
            .map(|r| r.key.as_str())
            .collect::<Vec<_>>(),
        [
            "default/tcp-echo/tcp[0]/port 9000",
            "default/tcp-echo/tcp[1]/gateway default/tcp-echo-gateway port 31400",
        ],
        "the same routes without a top-level gateways list"
    );
    // A match that lists only mesh applies to no gateway.
    let vs = TCP_ECHO_GATEWAY.replace("[{port: 31400}]", "[{port: 31400, gateways: [mesh]}]");
    let model = resolve_ok(&[tcp_echo_service(), &vs]);
    assert!(
        model.routes.iter().all(|route| route.gateway.is_none()),
        "a match bound to mesh only makes no gateway route: {model:?}"
    );
}

#[test]
fn http_gateway_servers_get_no_tcp_route() {
    let servers = "  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [\"*\"]
    tls: {mode: SIMPLE, credentialName: https-cert}
  - port: {number: 8443, name: grpc, protocol: GRPC}
    hosts: [\"*\"]
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: [\"*\"]
  - port: {number: 27017, name: mongo, protocol: MONGO}
    hosts: [\"*\"]
  - port: {number: 15443, name: tls, protocol: TLS}
    hosts: [\"*\"]
    tls: {mode: PASSTHROUGH}
";
    let vs = virtual_service_doc(
        "tcp-echo",
        "[\"*\"]",
        "[tcp-echo-gateway]",
        "  - route: [{destination: {host: tcp-echo.local, subset: v1}}]\n",
    );
    let model = resolve_ok(&[
        tcp_echo_service(),
        &gateway_doc("tcp-echo-gateway", servers),
        &vs,
    ]);
    let ports: Vec<u16> = model.routes.iter().map(|r| r.service_port).collect();
    assert_eq!(
        ports,
        [15443, 27017, 31400],
        "TCP, MONGO and TLS servers; not HTTP, HTTPS, GRPC"
    );
    let http_only = "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n";
    let model = resolve_ok(&[
        tcp_echo_service(),
        &gateway_doc("tcp-echo-gateway", http_only),
        &vs,
    ]);
    assert!(
        model.routes.is_empty(),
        "an HTTP-only gateway: no TCP route, and no error: {model:?}"
    );
}

#[test]
fn gateway_server_hosts_select_virtual_services() {
    let cases = [
        ("[\"*\"]", true),
        ("[\"*.example.com\"]", true),
        ("[tcp-echo.example.com]", true),
        ("[\"*/tcp-echo.example.com\"]", true),
        ("[\"./tcp-echo.example.com\"]", true),
        ("[\"default/*\"]", true),
        ("[\"web/*\"]", false),
        ("[other.example.com]", false),
        ("[\"*.example.org\"]", false),
    ];
    let vs = virtual_service_doc(
        "tcp-echo",
        "[tcp-echo.example.com]",
        "[tcp-echo-gateway]",
        "  - route: [{destination: {host: tcp-echo.local, subset: v1}}]\n",
    );
    for (hosts, routed) in cases {
        let servers =
            format!("  - port: {{number: 31400, name: tcp, protocol: TCP}}\n    hosts: {hosts}\n");
        let model = resolve_ok(&[
            tcp_echo_service(),
            &gateway_doc("tcp-echo-gateway", &servers),
            &vs,
        ]);
        assert_eq!(
            model.routes.len(),
            usize::from(routed),
            "server hosts {hosts} and VirtualService host tcp-echo.example.com"
        );
    }
    let servers = "  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: [\"a/b/c\"]\n";
    let error = parse_error(&gateway_doc("tcp-echo-gateway", servers));
    assert_eq!(
        error.field.to_string(),
        "spec.servers[0].hosts[0]",
        "field of: {error}"
    );
}

#[test]
fn two_gateway_routes_on_one_port_are_refused() {
    let canary = virtual_service_doc(
        "tcp-echo-canary",
        "[tcp-echo.example.com]",
        "[tcp-echo-gateway]",
        "  - route: [{destination: {host: tcp-echo.local, subset: v2}}]\n",
    );
    let error = resolve_error(&[tcp_echo_service(), TCP_ECHO_GATEWAY, &canary]);
    assert_eq!(
        error.file,
        Path::new("rules/2.yaml"),
        "the later file is at fault: {error}"
    );
    assert_error(
        &error,
        1,
        "spec.tcp[0]",
        Some(line_of(&canary, "  - route:")),
        "gateway default/tcp-echo-gateway listener 0.0.0.0:31400 is already routed by \
         VirtualService default/tcp-echo (rules/1.yaml document 2) tcp[0] (gateway \
         default/tcp-echo-gateway)",
    );
    // Two gateways with a server on one port, each bound by a VirtualService
    // (hosts that differ as written: not Istio's IST0145).
    let other_gateway = |hosts: &str| {
        format!(
            "{}---\n{}",
            gateway_doc(
                "other-gateway",
                &format!(
                    "  - port: {{number: 31400, name: tcp, protocol: TCP}}\n    hosts: {hosts}\n"
                ),
            ),
            canary.replace("[tcp-echo-gateway]", "[other-gateway]")
        )
    };
    let other = other_gateway("[tcp-echo.example.com]");
    let error = resolve_error(&[tcp_echo_service(), TCP_ECHO_GATEWAY, &other]);
    assert!(
        error
            .message
            .contains("gateway default/other-gateway listener 0.0.0.0:31400 is already routed by"),
        "another gateway on the same port: {error}"
    );
    // The same host too, on the same selector: Istio's IST0145, an error.
    let other = other_gateway("[\"*\"]");
    let error = resolve_error(&[tcp_echo_service(), TCP_ECHO_GATEWAY, &other]);
    assert_error(
        &error,
        1,
        "spec.servers[0]",
        Some(line_of(&other, "  - port:")),
        "IST0145: Conflict with gateways default/tcp-echo-gateway (workload selector \
         istio=ingressgateway, port 31400, hosts *)",
    );
}

/// Two Gateways of one selector on one unix socket and host: Istio's
/// IST0145, as for a port; on two sockets, two routes, each on its own.
#[test]
fn gateway_servers_on_one_unix_socket_conflict() {
    let unix_gateway = |name: &str, path: &str| {
        gateway_doc(
            name,
            &format!(
                "  - port: {{number: 0, name: tcp, protocol: TCP}}\n    hosts: [\"*\"]\n    \
                 bind: unix://{path}\n"
            ),
        )
    };
    let vs = |name: &str, gateway: &str| {
        virtual_service_doc(
            name,
            "[\"*\"]",
            &format!("[{gateway}]"),
            "  - route: [{destination: {host: tcp-echo.local, subset: v2}}]\n",
        )
    };
    let one = format!(
        "{}---\n{}",
        unix_gateway("gw-a", "/run/a.sock"),
        vs("vs-a", "gw-a")
    );
    let same = format!(
        "{}---\n{}",
        unix_gateway("gw-b", "/run/a.sock"),
        vs("vs-b", "gw-b")
    );
    let error = resolve_error(&[tcp_echo_service(), &one, &same]);
    assert_error(
        &error,
        1,
        "spec.servers[0]",
        Some(line_of(&same, "  - port:")),
        "IST0145: Conflict with gateways default/gw-a (workload selector \
         istio=ingressgateway, port 0, hosts *)",
    );
    let other = same.replace("/run/a.sock", "/run/b.sock");
    let model = resolve_ok(&[tcp_echo_service(), &one, &other]);
    let sockets: Vec<(&str, &[String])> = model
        .routes
        .iter()
        .map(|r| (r.key.as_str(), r.unix.as_slice()))
        .collect();
    assert_eq!(
        sockets,
        [
            (
                "default/vs-a/tcp[0]/gateway default/gw-a port 0",
                &["/run/a.sock".to_owned()][..]
            ),
            (
                "default/vs-b/tcp[0]/gateway default/gw-b port 0",
                &["/run/b.sock".to_owned()][..]
            ),
        ]
    );
}

#[test]
fn per_resource_validation_messages() {
    let cases = [
        (
            "duplicate VS hosts",
            TCP_ECHO.replace(
                "  hosts: [tcp-echo.local]\n  tcp:",
                "  hosts: [tcp-echo.local, tcp-echo.local]\n  tcp:",
            ),
            "spec.hosts[1]",
            "duplicate hosts in virtual service: tcp-echo.local & tcp-echo.local",
        ),
        (
            "match port too big (0 is unset, as in Istio)",
            TCP_ECHO.replace("{port: 9000}", "{port: 65536}"),
            "spec.tcp[0].match[0].port",
            "port number 65536 must be in the range 1..65535",
        ),
        (
            "destination port too big",
            TCP_ECHO.replace(
                "port: {number: 9000}, subset: v2",
                "port: {number: 70000}, subset: v2",
            ),
            "spec.tcp[0].route[1].destination.port.number",
            "port number 70000 must be in the range 1..65535",
        ),
        (
            "no route",
            TCP_ECHO.replace(
                "  - match: [{port: 9000}]\n    route:",
                "  - match: [{port: 9000}]\n    route: []\n    x-route:",
            ),
            "spec.tcp[0].x-route",
            "unknown field `x-route`",
        ),
        (
            "hostname endpoint with STATIC",
            TCP_ECHO.replace(
                "{address: 127.0.0.1, ports: {tcp: 19002}",
                "{address: echo.example.com, ports: {tcp: 19002}",
            ),
            "spec.endpoints[1].address",
            "endpoint address \"echo.example.com\" is not a valid IP address: with resolution \
             STATIC endpoints are IP addresses",
        ),
        (
            "endpoint port name unknown",
            TCP_ECHO.replace("ports: {tcp: 19002}", "ports: {tpc: 19002}"),
            "spec.endpoints[1].ports.tpc",
            "endpoint port 19002 is not defined by the service entry: port name \"tpc\"",
        ),
        (
            "bad resolution",
            TCP_ECHO.replace("resolution: STATIC", "resolution: STATICK"),
            "spec.resolution",
            "unknown variant `STATICK`",
        ),
        (
            "weight not a number",
            TCP_ECHO.replace("weight: 20", "weight: twenty"),
            "spec.tcp[0].route[1].weight",
            "invalid type: string \"twenty\"",
        ),
    ];
    for (case, text, field, message) in cases {
        let error = parse_error(&text);
        assert_eq!(error.field.to_string(), field, "{case}: field of {error}");
        assert!(
            error.message.contains(message),
            "{case}: expected {message:?} in: {error}"
        );
        assert!(
            error.line.is_some(),
            "{case}: every field here is written, so has a line: {error}"
        );
    }
}

#[test]
fn gateways_are_validated() {
    let gateway = |servers: &str| {
        format!(
            "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}"
        )
    };
    let valid = "  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n";
    let file = parse(&gateway(valid));
    let Resource::Gateway(parsed) = &file.resources[0] else {
        panic!("expected a Gateway, got {:?}", file.resources[0]);
    };
    assert_eq!(parsed.servers[0].port.number, 31400, "server port");
    let cases = [
        (
            "    []\n",
            "spec.servers",
            "gateway must have at least one server",
        ),
        (
            "  - port: {number: 31400, name: tcp, protocol: TCP}\n    hosts: []\n",
            "spec.servers[0].hosts",
            "server config must contain at least one host",
        ),
        (
            "  - port: {number: 31400, protocol: TCP}\n    hosts: [a.example.com]\n",
            "spec.servers[0].port.name",
            "port name must be set",
        ),
        (
            "  - port: {number: 31400, name: tcp, protocol: SCTP}\n    hosts: [a.example.com]\n",
            "spec.servers[0].port.protocol",
            "invalid protocol \"SCTP\"",
        ),
        (
            "  - port: {number: 1, name: tcp, protocol: TCP}\n    hosts: [a.example.com]\n  - port: {number: 2, name: tcp, protocol: TCP}\n    hosts: [b.example.com]\n",
            "spec.servers[1].port.name",
            "port names in servers must be unique: duplicate name tcp",
        ),
    ];
    for (servers, field, message) in cases {
        let error = parse_error(&gateway(servers));
        assert_error(&error, 1, field, error.line, message);
        assert!(error.line.is_some(), "{field}: a line: {error}");
    }
}

#[test]
fn two_routes_for_one_service_address_are_refused() {
    let other = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo-canary}
spec:
  hosts: [tcp-echo.local]
  tcp:
  - route:
    - destination: {host: tcp-echo.local, subset: v2}
";
    let error = resolve_error(&[TCP_ECHO, other]);
    assert_eq!(
        error.file,
        Path::new("rules/1.yaml"),
        "the later file is at fault: {error}"
    );
    assert_error(
        &error,
        1,
        "spec.tcp[0]",
        Some(7),
        "service address 127.100.0.1:9000 is already routed by VirtualService default/tcp-echo \
         (rules/0.yaml document 3) tcp[0]",
    );
}

#[test]
fn endpoint_ports_target_ports_and_workload_entries() {
    let text = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.local]
  addresses: [\"fd00::10\", 127.100.0.2]
  ports:
  - {number: 5432, name: pg, protocol: TCP, targetPort: 15432}
  - {number: 8080, name: http, protocol: HTTP}
  resolution: STATIC
  workloadSelector:
    labels: {app: db}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db-1}
spec: {address: 10.0.0.1, labels: {app: db, role: primary}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db-2}
spec: {address: 10.0.0.2, labels: {app: db}, ports: {pg: 6432}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db-elsewhere, namespace: other}
spec: {address: 10.0.0.3, labels: {app: db}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db.local]
  tcp:
  - route:
    - destination: {host: db.local, port: {number: 5432}}
";
    let model = resolve(&[parse(text)]).unwrap_or_else(|error| panic!("should resolve: {error}"));
    let route = only_route(&model);
    assert_eq!(
        route.key, "default/db/tcp[0]/port 5432",
        "the HTTP port gets no tcp route"
    );
    assert_eq!(
        route.listeners,
        [addr("[fd00::10]:5432"), addr("127.100.0.2:5432")],
        "every address x the port, in the order written"
    );
    let endpoints: Vec<SocketAddr> = route.destinations[0]
        .endpoints
        .iter()
        .map(|e| e.addr)
        .collect();
    assert_eq!(
        endpoints,
        [addr("10.0.0.1:15432"), addr("10.0.0.2:6432")],
        "WorkloadEntries of the namespace: targetPort, unless the entry names its own port"
    );
}

#[test]
fn port_matches_and_destination_ports_are_checked() {
    let without_endpoints = |resolution: &str| {
        let start = TCP_ECHO
            .find("  endpoints:\n")
            .expect("TCP_ECHO has endpoints");
        let end = TCP_ECHO.find("---\n").expect("TCP_ECHO has documents");
        format!("{}{}", &TCP_ECHO[..start], &TCP_ECHO[end..])
            .replace("resolution: STATIC", &format!("resolution: {resolution}"))
    };
    let cases = [
        (
            without_endpoints("NONE"),
            "spec.tcp[0].route[0].destination.host",
            "has resolution NONE, which forwards connections to the address the client dialed",
        ),
        (
            without_endpoints("DNS"),
            "spec.tcp[0].route[0].destination.host",
            "resolves its hosts by DNS, which the kernel path does not do",
        ),
        (
            TCP_ECHO.replace("[{port: 9000}]", "[{port: 9001}]"),
            "spec.tcp[0].match[0].port",
            "port 9001 is not a port of tcp-echo.local (ports: 9000)",
        ),
        (
            TCP_ECHO.replace(
                "port: {number: 9000}, subset: v2",
                "port: {number: 9001}, subset: v2",
            ),
            "spec.tcp[0].route[1].destination.port.number",
            "port 9001 is not a port of tcp-echo.local (ports: 9000)",
        ),
        (
            TCP_ECHO.replace("[{port: 9000}]", "[{port: 9000, sourceLabels: {app: web}}]"),
            "spec.tcp[0].match[0].sourceLabels",
            "match sourceLabels is not supported by the kernel path yet",
        ),
        (
            TCP_ECHO.replace("name: tcp, protocol: TCP", "name: tcp, protocol: HTTP"),
            "spec.tcp[0].match[0].port",
            "port 9000 of tcp-echo.local is HTTP: tcp rules apply to TCP ports",
        ),
        (
            TCP_ECHO
                .replace("name: tcp, protocol: TCP", "name: tcp, protocol: HTTP")
                .replace("  - match: [{port: 9000}]\n    route:", "  - route:"),
            "spec.tcp[0]",
            "this tcp rule covers no port: tcp-echo.local has no TCP port (ports: 9000 HTTP)",
        ),
        (
            TCP_ECHO.replace("  addresses: [127.100.0.1]\n", ""),
            "spec.addresses",
            "service tcp-echo.local has no addresses: the kernel path rewrites connections to a \
             service address; add spec.addresses",
        ),
    ];
    for (text, field, message) in cases {
        let error = resolve_error(&[&text]);
        assert_eq!(error.field.to_string(), field, "field of: {error}");
        assert!(
            error.message.contains(message),
            "expected {message:?} in: {error}"
        );
    }
}

#[test]
fn http_only_virtual_services_make_no_route() {
    let text = TCP_ECHO.replace(
        "  tcp:\n  - match: [{port: 9000}]\n    route:\n",
        "  http:\n  - route:\n",
    );
    let model = resolve(&[parse(&text)]).unwrap_or_else(|error| panic!("should resolve: {error}"));
    assert!(
        model.routes.is_empty(),
        "http rules are not implemented: no route, got {model:?}"
    );
}

#[test]
fn duplicate_resource_names_are_refused() {
    let error = resolve_error(&[TCP_ECHO, TCP_ECHO]);
    assert_eq!(
        error.file,
        Path::new("rules/1.yaml"),
        "the later file: {error}"
    );
    assert_error(
        &error,
        1,
        "metadata.name",
        Some(3),
        "ServiceEntry default/tcp-echo is defined twice, also in rules/0.yaml document 1",
    );
}

#[test]
fn load_dir_reads_yaml_files_sorted_and_reports_bad_ones() {
    let dir = std::env::temp_dir().join(format!("traffic-shift-config-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("create a temp dir");
    let write =
        |name: &str, text: &str| fs::write(dir.join(name), text).expect("write a rules file");
    write("b.yml", tcp_echo_service());
    write("a.yaml", "# nothing yet\n");
    write("c.yaml", "kind: [\n");
    write(".hidden.yaml", "kind: [\n");
    write("notes.txt", "kind: [\n");
    fs::create_dir_all(dir.join("sub.yaml")).expect("create a directory named like a file");

    let (files, errors) = load_dir(&dir);
    let names: Vec<_> = files
        .iter()
        .map(|file| {
            file.path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(names, ["a.yaml", "b.yml"], "parsed files, sorted by name");
    assert_eq!(files[1].resources.len(), 2, "b.yml holds two resources");
    assert_eq!(errors.len(), 1, "one error, for c.yaml: {errors:?}");
    assert_eq!(
        errors[0].file,
        dir.join("c.yaml"),
        "the error names the file"
    );
    assert_eq!(errors[0].line, Some(2), "and the line: {}", errors[0]);

    let (files, errors) = load_dir(&dir.join("missing"));
    assert!(
        files.is_empty() && errors.len() == 1,
        "a missing directory is one error: {errors:?}"
    );
    fs::remove_dir_all(&dir).expect("remove the temp dir");
}

/// Hostile input is refused with a clear error before it can cost the agent
/// its stack, its memory or its time.
#[test]
fn oversized_and_too_deep_files_are_refused_before_parsing() {
    let path = Path::new("hostile.yaml");
    let cases: Vec<(&str, String, &str, Option<usize>)> = vec![
        (
            "a 5 MB file",
            format!("# {}\n{TCP_ECHO}", "x".repeat(5 << 20)),
            "bytes, more than the 4194304",
            None,
        ),
        (
            "100000 nested flow lists",
            format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
            "nest deeper than 64",
            Some(1),
        ),
        (
            "500 nested block mappings",
            (0..500).map(|i| " ".repeat(i) + "a:\n").collect(),
            "nest deeper than 64",
            Some(65),
        ),
        (
            "500 nested block lists",
            (0..500).map(|i| " ".repeat(i) + "- \n").collect(),
            "nest deeper than 64",
            Some(65),
        ),
    ];
    for (what, text, message, line) in cases {
        let err = parse_file(path, &text).expect_err(what);
        assert!(err.to_string().contains(message), "{what}: {err}");
        assert_eq!(err.line, line, "{what}: {err}");
    }
    // Brackets inside quoted strings and comments do not count as nesting.
    let quoted = format!("# {}\n{TCP_ECHO}", "[".repeat(100));
    let quoted = quoted.replace(
        "name: tcp-echo}",
        &format!(
            "name: tcp-echo, annotations: {{x: \"{}\"}}}}",
            "[".repeat(100)
        ),
    );
    parse_file(path, &quoted).expect("brackets in comments and quoted strings are not nesting");
}

// --- http rules -> the L7 proxy's listeners ---

const BOOKINFO_SE: &str = include_str!("../../rules/bookinfo/service-entry.yaml");
const BOOKINFO_DR: &str = include_str!("../../rules/bookinfo/destination-rule.yaml");
const BOOKINFO_GW: &str = include_str!("../../rules/bookinfo/gateway.yaml");
const BOOKINFO_50_V3: &str = include_str!("../../rules/bookinfo/examples/vs-reviews-50-v3.yaml");
const BOOKINFO_JASON: &str = include_str!("../../rules/bookinfo/examples/vs-reviews-jason-v2.yaml");

fn http_listener<'m>(model: &'m RoutingModel, key: &str) -> &'m crate::model::HttpListener {
    model
        .http
        .iter()
        .find(|l| l.key == key)
        .unwrap_or_else(|| panic!("no http listener {key}: {:#?}", model.http))
}

#[test]
fn bookinfo_reviews_resolves_to_a_mesh_listener_and_a_gateway_one() {
    let model = resolve_ok(&[BOOKINFO_SE, BOOKINFO_DR, BOOKINFO_GW, BOOKINFO_50_V3]);
    assert!(model.routes.is_empty(), "no TCP route: {:#?}", model.routes);
    let mesh = http_listener(&model, "mesh reviews.default.svc.cluster.local:9080");
    assert_eq!(mesh.gateway, None);
    assert_eq!(mesh.port, 9080);
    assert_eq!(
        mesh.listeners,
        vec![addr("127.101.0.1:9080"), addr("[fd00:7473::2]:9080")]
    );
    let [vhost] = mesh.virtual_hosts.as_slice() else {
        panic!("one virtual host: {:#?}", mesh.virtual_hosts)
    };
    assert_eq!(vhost.virtual_service, "default/reviews");
    let [route] = vhost.routes.as_slice() else {
        panic!("one route: {:#?}", vhost.routes)
    };
    assert_eq!(route.key, "default/reviews/http[0]");
    let split: Vec<(Option<&str>, u32, Vec<SocketAddr>)> = route
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
        split,
        vec![
            (Some("v1"), 50, vec![addr("127.0.0.1:19081")]),
            (Some("v3"), 50, vec![addr("127.0.0.1:19083")]),
        ]
    );
    // Istio's default retry policy applies when the rule has none.
    assert_eq!(route.retries.attempts, 2);
    assert!(
        route
            .retries
            .retry_on
            .iter()
            .any(|r| r == "connect-failure")
    );

    let gateway = http_listener(&model, "gateway default/bookinfo-gateway port 8080");
    assert_eq!(gateway.gateway.as_deref(), Some("default/bookinfo-gateway"));
    assert_eq!(
        gateway.listeners,
        vec![addr("0.0.0.0:8080"), addr("[::]:8080")]
    );
    assert_eq!(gateway.virtual_hosts[0].domains, vec!["*".to_owned()]);
    assert_eq!(gateway.virtual_hosts[0].routes[0].matches.len(), 1);
}

#[test]
fn request_routing_keeps_the_rules_in_order() {
    let model = resolve_ok(&[BOOKINFO_SE, BOOKINFO_DR, BOOKINFO_GW, BOOKINFO_JASON]);
    let mesh = http_listener(&model, "mesh reviews.default.svc.cluster.local:9080");
    let routes = &mesh.virtual_hosts[0].routes;
    assert_eq!(routes.len(), 2);
    assert_eq!(
        routes[0].matches[0].headers.get("end-user"),
        Some(&crate::model::StringMatch::Exact("jason".into()))
    );
    assert_eq!(
        routes[0].destinations[0].destination.subset.as_deref(),
        Some("v2")
    );
    assert!(routes[1].matches.is_empty());
    assert_eq!(
        routes[1].destinations[0].destination.subset.as_deref(),
        Some("v1")
    );
}

#[test]
fn a_port_named_http_without_protocol_is_http_as_in_istio() {
    let se = BOOKINFO_SE.replace("    protocol: HTTP\n", "");
    let model = resolve_ok(&[&se, BOOKINFO_DR, BOOKINFO_50_V3]);
    http_listener(&model, "mesh reviews.default.svc.cluster.local:9080");
    // And so tcp rules do not apply to it.
    let tcp = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  tcp:\n  - match: [{port: 9080}]\n    route: [{destination: {host: reviews, subset: v1}}]\n";
    let error = resolve_error(&[&se, BOOKINFO_DR, tcp]);
    assert!(
        error
            .to_string()
            .contains("port 9080 of reviews.default.svc.cluster.local is HTTP"),
        "{error}"
    );
}

#[test]
fn http_matches_the_node_cannot_honour_are_refused() {
    let vs = BOOKINFO_JASON.replace(
        "    - headers:\n",
        "    - sourceLabels: {app: productpage}\n      headers:\n",
    );
    let error = resolve_error(&[BOOKINFO_SE, BOOKINFO_DR, &vs]);
    let text = error.to_string();
    assert!(
        text.contains("spec.http[0].match[0].sourceLabels") && text.contains("not supported"),
        "{text}"
    );
}

#[test]
fn two_virtual_services_for_one_http_service_port_are_refused() {
    let other = BOOKINFO_50_V3.replace("name: reviews\nspec", "name: reviews-2\nspec");
    let error = resolve_error(&[BOOKINFO_SE, BOOKINFO_DR, BOOKINFO_50_V3, &other]);
    let text = error.to_string();
    assert!(
        text.contains("already routed by VirtualService default/reviews"),
        "{text}"
    );
}

/// The agent's `apply` keeps each document and has it read in place (no
/// copy); the rules directory moves it into the parse. Both readings give
/// the same resources and the same errors, merge keys included.
#[test]
fn a_kept_document_parses_as_a_moved_one() {
    let merge = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
                 metadata: {name: merged, labels: &l {app: x}}\nspec:\n  \
                 <<: {hosts: [b.local], resolution: STATIC}\n  addresses: [127.100.0.10]\n  \
                 ports: [{number: 9000, name: tcp, protocol: TCP}]\n  \
                 endpoints: [{address: 127.0.0.1, labels: *l}]\n";
    let wrong_type = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x}\n\
                      spec: {hosts: [a.local], ports: [{number: many, name: tcp, protocol: TCP}]}\n";
    let unknown_field = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\n\
                         spec: {hosts: [a.local], tcpp: []}\n";
    for text in [tcp_echo_service(), merge, wrong_type, unknown_field] {
        let path = Path::new("rules/r.yaml");
        let moved = crate::parse_file_all(path, text);
        let kept = crate::parse_file_documents(path, text, crate::MAX_FILE_BYTES).map(|(f, _)| f);
        let show = |r: &Result<RulesFile, Vec<ConfigError>>| match r {
            Ok(file) => format!("{:?}", file.resources),
            Err(errors) => errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        };
        assert_eq!(show(&kept), show(&moved), "{text}");
    }
    // The merge took effect: its hosts and resolution are the entry's.
    let file = parse(merge);
    let Resource::ServiceEntry(entry) = &file.resources[0] else {
        panic!("a ServiceEntry: {:?}", file.resources)
    };
    assert!(format!("{entry:?}").contains("b.local"), "{entry:?}");
}
