//! `EndpointSlice`s: checked on their own (each refusal with its message),
//! merged per Service (an address once), their ready conditions, ports
//! matched to the Service's by name, `appProtocol` choosing the L7 path,
//! and headless and selector-less Services.

use std::{net::SocketAddr, path::Path};

use crate::{
    model::{HttpListener, RoutingModel},
    parse_file_all, resolve_all,
};

const FILE: &str = "rules/r.yaml";

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|a| a.parse().expect("address")).collect()
}

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

fn model_of(text: &str) -> RoutingModel {
    let file = parse_file_all(Path::new(FILE), text).unwrap_or_else(|e| panic!("{e:?}"));
    resolve_all(&[file])
        .0
        .unwrap_or_else(|e| panic!("{}", e[0]))
}

/// `(service port, endpoints)` of each mesh TCP route.
fn tcp_endpoints(model: &RoutingModel) -> Vec<(u16, Vec<SocketAddr>)> {
    model
        .routes
        .iter()
        .map(|r| {
            (
                r.service_port,
                r.destinations[0].endpoints.iter().map(|e| e.addr).collect(),
            )
        })
        .collect()
}

fn listener<'m>(model: &'m RoutingModel, key: &str) -> &'m HttpListener {
    model.http.iter().find(|l| l.key == key).unwrap_or_else(|| {
        let keys: Vec<&str> = model.http.iter().map(|l| l.key.as_str()).collect();
        panic!("no listener {key}: {keys:?}")
    })
}

/// A Service without a selector, two ports (one a named `targetPort`,
/// which slices do not read), and two slices of it: `127.0.0.2` is in
/// both; not ready, not serving: not endpoints; `ready` absent: ready.
const SELECTORLESS: &str = "\
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: 10.0.0.1
  ports:
  - {name: pg, port: 5432, targetPort: postgres}
  - {name: admin, port: 5433}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-abc
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
  conditions: {ready: true}
- addresses: [127.0.0.2, 127.0.0.9]
- addresses: [127.0.0.3]
  conditions: {ready: false}
- addresses: [127.0.0.4]
  conditions: {ready: true, serving: false, terminating: true}
ports:
- {name: pg, port: 6432, protocol: TCP}
- {name: admin, port: 6433}
- {name: other, port: 6434}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-def
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
endpoints:
- addresses: [127.0.0.2]
- addresses: [127.0.0.5]
ports:
- {name: admin, port: 7433}
- {name: pg, port: 7432}
";

#[test]
fn slices_of_a_service_without_selector_are_its_endpoints_merged() {
    let model = model_of(SELECTORLESS);
    assert_eq!(
        tcp_endpoints(&model),
        [
            (
                5432,
                addrs(&["127.0.0.1:6432", "127.0.0.2:6432", "127.0.0.5:7432"])
            ),
            (
                5433,
                addrs(&["127.0.0.1:6433", "127.0.0.2:6433", "127.0.0.5:7433"])
            ),
        ],
        "each ready endpoint once (its first address), on the port of the slice port of the \
         Service port's name"
    );
}

#[test]
fn slices_win_over_the_selector_and_an_unnamed_port_matches_the_unnamed_one() {
    let text = "\
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: 10.0.0.1
  ports: [{port: 5432, targetPort: 5000}]
  selector: {app: db}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db}
spec: {address: 127.0.0.7, labels: {app: db}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-abc
  labels: {kubernetes.io/service-name: db}
addressType: IPv6
endpoints:
- addresses: ['::1']
ports: [{port: 6432}]
";
    assert_eq!(
        tcp_endpoints(&model_of(text)),
        [(5432, addrs(&["[::1]:6432"]))],
        "the slice's endpoint, not the WorkloadEntry the selector matches"
    );
    // Without the slice, the selector's WorkloadEntry, on the targetPort.
    let without = &text[..text.find("---\napiVersion: discovery").expect("slice")];
    assert_eq!(
        tcp_endpoints(&model_of(without)),
        [(5432, addrs(&["127.0.0.7:5000"]))]
    );
}

#[test]
fn a_service_without_selector_nor_slices_has_no_endpoints() {
    let text = "\
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: 10.0.0.1
  ports: [{name: pg, port: 5432}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other}
spec: {address: 127.0.0.7, labels: {app: other}}
";
    assert_eq!(
        tcp_endpoints(&model_of(text)),
        [(5432, Vec::new())],
        "no selector selects no WorkloadEntry"
    );
}

#[test]
fn app_protocol_of_a_slice_port_makes_the_service_port_http() {
    let text = "\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.0.0.1
  ports: [{name: web, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1]}]
ports: [{name: web, port: 8080, appProtocol: kubernetes.io/h2c}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web, port: 80}]
  rules:
  - backendRefs: [{name: web, port: 80}]
";
    let model = model_of(text);
    assert!(
        model.routes.is_empty(),
        "not a TCP route: {:?}",
        model.routes
    );
    let mesh = listener(&model, "mesh web.default.svc.cluster.local:80");
    let route = &mesh.virtual_hosts[0].routes[0];
    assert_eq!(route.key, "default/web/rules[0]");
    let endpoints: Vec<SocketAddr> = route.destinations[0]
        .destination
        .endpoints
        .iter()
        .map(|e| e.addr)
        .collect();
    assert_eq!(endpoints, addrs(&["127.0.0.1:8080"]));

    // On the Service port, appProtocol http gives the same listener.
    let on_service = text
        .replace(
            "ports: [{name: web, port: 80}]",
            "ports: [{name: web, port: 80, appProtocol: http}]",
        )
        .replace(", appProtocol: kubernetes.io/h2c", "");
    listener(
        &model_of(&on_service),
        "mesh web.default.svc.cluster.local:80",
    );
}

#[test]
fn a_headless_service_is_a_backend_of_a_gateway_route() {
    let text = "\
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-abc
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
endpoints: [{addresses: [127.0.0.1]}, {addresses: [127.0.0.2]}]
ports: [{name: pg, port: 6432}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: istio
  listeners: [{name: tcp, port: 5432, protocol: TCP}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db}
spec:
  parentRefs: [{name: gw, sectionName: tcp}]
  rules:
  - backendRefs: [{name: db, port: 5432}]
";
    let model = model_of(text);
    let keys: Vec<&str> = model.routes.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        ["default/db/rules[0]/gateway default/gw port 5432"],
        "no mesh route: a headless Service has no address to route"
    );
    assert_eq!(
        tcp_endpoints(&model),
        [(5432, addrs(&["127.0.0.1:6432", "127.0.0.2:6432"]))]
    );
}

/// A valid Service and slice to change one thing of.
const BASE: &str = "\
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: 10.0.0.1
  ports: [{name: pg, port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-abc
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
ports:
- {name: pg, port: 6432}
";

fn changed(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} is in BASE");
    BASE.replacen(from, to, 1)
}

const AT: &str = "rules/r.yaml: document 2 (EndpointSlice default/db-abc): ";

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "a table of cases: the change to the base set and its exact message each"
)]
fn each_slice_error_says_what_to_do() {
    assert_eq!(errors_of(BASE), Vec::<String>::new());
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "FQDN",
            changed("addressType: IPv4", "addressType: FQDN"),
            "addressType: addressType FQDN is not supported: the kernel path connects to IP \
             addresses and does not resolve names; list the endpoints' IP addresses in a slice \
             of addressType IPv4 or IPv6 (line 13)",
        ),
        (
            "unknown address type",
            changed("addressType: IPv4", "addressType: IPv5"),
            "addressType: addressType \"IPv5\" is not known: use IPv4 or IPv6 (line 13)",
        ),
        (
            "no address type",
            changed("addressType: IPv4\n", ""),
            "addressType: addressType is required: IPv4 or IPv6, the family of every address \
             of the slice (line 8)",
        ),
        (
            "address of the other family",
            changed("[127.0.0.1]", "['::1']"),
            "endpoints[0].addresses[0]: address \"::1\" is not an IPv4 address, as \
             addressType IPv4 says: write one, or put it in a slice of its own family \
             (line 15)",
        ),
        (
            "not an address",
            changed("[127.0.0.1]", "[db-0.local]"),
            "endpoints[0].addresses[0]: address \"db-0.local\" is not an IPv4 address, as \
             addressType IPv4 says: write one, or put it in a slice of its own family \
             (line 15)",
        ),
        (
            "no addresses",
            changed("- addresses: [127.0.0.1]", "- addresses: []"),
            "endpoints[0].addresses: an endpoint needs at least one address: list its IP \
             address (line 15)",
        ),
        (
            "no service label",
            changed("  labels: {kubernetes.io/service-name: db}\n", ""),
            "metadata.labels.kubernetes.io/service-name: label kubernetes.io/service-name is \
             required: it names the Service of the slice's namespace whose endpoints these \
             are; add it (line 10)",
        ),
        (
            "a Service that is not defined",
            changed("service-name: db}", "service-name: dbx}"),
            "metadata.labels.kubernetes.io/service-name: Service default/dbx is not defined: \
             a slice gives the endpoints of a Service of its namespace; define the Service, \
             or fix the label (line 12)",
        ),
        (
            "a port of every port",
            changed("{name: pg, port: 6432}", "{name: pg}"),
            "ports[0].port: port is required: a slice port without a number stands for every \
             port, which the kernel path cannot connect to; give the port the endpoints \
             listen on (line 17)",
        ),
        (
            "udp",
            changed(
                "{name: pg, port: 6432}",
                "{name: pg, port: 6432, protocol: UDP}",
            ),
            "ports[0].protocol: protocol UDP is not supported: the kernel path routes TCP \
             connections; use TCP (line 17)",
        ),
        (
            "appProtocol",
            changed(
                "{name: pg, port: 6432}",
                "{name: pg, port: 6432, appProtocol: grpc}",
            ),
            "ports[0].appProtocol: appProtocol \"grpc\" is not supported yet: use http, \
             kubernetes.io/h2c or kubernetes.io/ws (the L7 proxy), or leave it out (TCP, the kernel path) \
             (line 17)",
        ),
        (
            "a port name twice",
            changed(
                "{name: pg, port: 6432}",
                "{name: pg, port: 6432}\n- {name: pg, port: 6433}",
            ),
            "ports[1].name: port name \"pg\" is used twice: a slice names each port once \
             (line 18)",
        ),
        (
            "a port of the Service missing",
            changed("{name: pg, port: 6432}", "{name: postgres, port: 6432}"),
            "ports: the slice has no port \"pg\" of Service default/db (its ports are \
             \"postgres\" 6432): the endpoints of a slice serve the Service ports it names, \
             and a slice for some ports of a Service is not supported yet; add the port, \
             named as the Service names it (line 16)",
        ),
        (
            "strict fields",
            changed("addressType: IPv4", "adressType: IPv4"),
            "adressType: unknown field `adressType`, expected one of `apiVersion`, `kind`, \
             `metadata`, `addressType`, `endpoints`, `ports`: fix the spelling or remove the \
             field (line 13)",
        ),
        (
            "conditions strict",
            changed(
                "- addresses: [127.0.0.1]",
                "- addresses: [127.0.0.1]\n  conditions: {redy: true}",
            ),
            "endpoints[0].conditions.redy: unknown field `redy`, expected one of `ready`, \
             `serving`, `terminating`: fix the spelling or remove the field (line 16)",
        ),
    ];
    for (what, text, expected) in &cases {
        assert_eq!(errors_of(text), [format!("{AT}{expected}")], "{what}");
    }

    // Two slices giving one Service port different appProtocols.
    let second = "---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-def
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
endpoints: [{addresses: [127.0.0.2]}]
ports: [{name: pg, port: 6432, appProtocol: kubernetes.io/h2c}]
";
    let text = changed(
        "{name: pg, port: 6432}",
        "{name: pg, port: 6432, appProtocol: http}",
    ) + second;
    assert_eq!(
        errors_of(&text),
        [
            "rules/r.yaml: document 3 (EndpointSlice default/db-def): ports[0].appProtocol: \
             appProtocol HTTP2 differs from that of EndpointSlice default/db-abc \
             (rules/r.yaml document 2) ports[0] for port \"pg\" of Service default/db: one \
             protocol per Service port; write the same in each slice, or set it on the \
             Service port (line 26)"
        ]
    );
}

#[test]
fn endpoint_slice_is_known_by_its_api_version() {
    assert_eq!(
        crate::kind_of("discovery.k8s.io/v1", "EndpointSlice"),
        Some("EndpointSlice")
    );
    assert_eq!(
        crate::kind_of("discovery.k8s.io/v1beta1", "EndpointSlice"),
        None
    );
    let text = BASE.replace("discovery.k8s.io/v1", "discovery.k8s.io/v1beta1");
    assert_eq!(
        errors_of(&text),
        [
            "rules/r.yaml: document 2 (EndpointSlice default/db-abc): apiVersion: \
             EndpointSlice is not read at apiVersion discovery.k8s.io/v1beta1: use \
             discovery.k8s.io/v1 (line 8)"
        ]
    );
}

/// Kubernetes' fallback: when no slice of a Service has a ready endpoint,
/// its endpoints are those terminating and still serving (a Pod shutting
/// down, rather than none); one that is not serving is never used. With a
/// ready endpoint anywhere, the terminating ones are not used.
#[test]
fn terminating_serving_endpoints_are_used_only_when_none_is_ready() {
    let slices = |other: &str| {
        format!(
            "\
apiVersion: v1
kind: Service
metadata: {{name: db}}
spec:
  clusterIP: 10.0.0.1
  ports:
  - {{name: pg, port: 5432}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-abc
  labels: {{kubernetes.io/service-name: db}}
addressType: IPv4
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: false, serving: true, terminating: true}}
- addresses: [127.0.0.2]
  conditions: {{ready: false, serving: false, terminating: true}}
- addresses: [127.0.0.3]
  conditions: {{ready: false}}
ports:
- {{name: pg, port: 6432}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-def
  labels: {{kubernetes.io/service-name: db}}
addressType: IPv4
endpoints:
- addresses: [127.0.0.4]
  conditions: {other}
ports:
- {{name: pg, port: 6432}}
"
        )
    };
    let model = model_of(&slices("{ready: false, serving: true, terminating: true}"));
    assert_eq!(
        tcp_endpoints(&model),
        [(5432, addrs(&["127.0.0.1:6432", "127.0.0.4:6432"]))],
        "none ready: the terminating endpoints that still serve, of every slice"
    );
    let model = model_of(&slices("{ready: true}"));
    assert_eq!(
        tcp_endpoints(&model),
        [(5432, addrs(&["127.0.0.4:6432"]))],
        "one ready (in another slice): it alone"
    );
}
