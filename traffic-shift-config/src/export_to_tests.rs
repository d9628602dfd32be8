//! `exportTo` of `VirtualServices` and `DestinationRules` applied: the
//! rules as a proxy in one namespace sees them ([`crate::visibility`],
//! `resolve_all_in`), issue 18.

use std::{net::SocketAddr, path::PathBuf};

use crate::{
    error::ConfigError,
    file::{RulesFile, parse_file},
    model::RoutingModel,
    resolve::resolve_all_in,
};

const SERVICE: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.example.com]
  addresses: [10.0.0.1]
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints:
  - {address: 10.1.0.1, labels: {version: v1}}
  - {address: 10.1.0.2, labels: {version: v2}}
";

/// A `DestinationRule` for the service in `namespace`, with `export_to`.
fn rule(namespace: &str, export_to: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {{name: db, namespace: {namespace}}}\nspec:\n  host: db.example.com\n\
         {export_to}  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  \
         - {{name: v2, labels: {{version: v2}}}}\n"
    )
}

/// A mesh `VirtualService` in `namespace` (with `export_to`) sending all
/// of the service to `subset`.
fn route(namespace: &str, export_to: &str, subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {{name: db, namespace: {namespace}}}\nspec:\n  hosts: [db.example.com]\n\
         {export_to}  tcp:\n  - route:\n    - destination: {{host: db.example.com, subset: {subset}}}\n"
    )
}

fn resolve(docs: &[String], namespace: Option<&str>) -> Result<RoutingModel, Vec<ConfigError>> {
    let text = docs.join("---\n");
    let file: RulesFile = parse_file(&PathBuf::from("rules/db.yaml"), &text)
        .unwrap_or_else(|error| panic!("expected the file to parse: {error}\n{text}"));
    resolve_all_in(&[file], namespace).0
}

/// The endpoints the routes of `model` go to.
fn endpoints(model: &RoutingModel) -> Vec<SocketAddr> {
    model
        .routes
        .iter()
        .flat_map(|r| &r.destinations)
        .flat_map(|d| d.endpoints.iter().map(|e| e.addr))
        .collect()
}

const PRIVATE: &str = "  exportTo: [\".\"]\n";

#[test]
fn each_namespace_sees_its_own_private_virtual_service_and_destination_rule() {
    let docs = vec![
        SERVICE.to_owned(),
        rule("a", PRIVATE),
        rule("b", PRIVATE),
        route("a", PRIVATE, "v1"),
        route("b", PRIVATE, "v2"),
    ];
    let v1: SocketAddr = "10.1.0.1:9000".parse().expect("addr");
    let v2: SocketAddr = "10.1.0.2:9000".parse().expect("addr");
    for (namespace, want) in [("a", vec![v1]), ("b", vec![v2]), ("c", vec![])] {
        let model = resolve(&docs, Some(namespace))
            .unwrap_or_else(|errors| panic!("a proxy in {namespace}: {errors:#?}"));
        assert_eq!(endpoints(&model), want, "a proxy in {namespace}");
    }
    // Seen all together (no --namespace), they conflict, as before.
    let errors = resolve(&docs, None).expect_err("two rules for one host, seen together");
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("already has DestinationRule a/db")),
        "{errors:#?}"
    );
}

#[test]
fn export_to_another_namespace_does_not_imply_its_own() {
    let docs = vec![
        SERVICE.to_owned(),
        rule("a", ""),
        route("a", "  exportTo: [b]\n", "v2"),
    ];
    let in_a = resolve(&docs, Some("a")).expect("resolves in a");
    assert!(in_a.routes.is_empty(), "not visible in its own namespace");
    // In b, the rule of a is not b's, nor the service's namespace's
    // (default), nor the root's: the subset is not found, as Istio finds
    // no subset there.
    let errors = resolve(&docs, Some("b")).expect_err("no DestinationRule for b");
    assert!(
        errors.iter().any(|e| e.to_string().contains("v2")),
        "{errors:#?}"
    );
}

#[test]
fn a_rule_of_the_service_namespace_exported_to_all_applies_elsewhere() {
    let docs = vec![
        SERVICE.to_owned(),
        rule("default", ""),
        rule("a", PRIVATE),
        route("c", "", "v2"),
    ];
    let model = resolve(&docs, Some("c")).expect("resolves in c");
    assert_eq!(
        endpoints(&model),
        ["10.1.0.2:9000".parse::<SocketAddr>().expect("addr")],
        "the DestinationRule of the service's namespace (default) applies in c"
    );
}

/// The services a rule routes to are those the proxy's namespace sees, as
/// Istio's sidecar there sees them: a ServiceEntry private to `a` serves
/// a public VirtualService of `default` on a proxy in `a`, not elsewhere.
#[test]
fn services_are_those_the_proxy_namespace_sees() {
    let private_service = SERVICE
        .replace("namespace: default", "namespace: a")
        .replace("spec:\n", "spec:\n  exportTo: [\".\"]\n");
    let docs = vec![private_service, rule("a", ""), route("default", "", "v1")];
    let model = resolve(&docs, Some("a")).expect("a proxy in a sees the service");
    assert_eq!(
        endpoints(&model),
        ["10.1.0.1:9000".parse::<SocketAddr>().expect("addr")]
    );
    for namespace in [None, Some("b")] {
        let errors = resolve(&docs, namespace).expect_err("not exported there");
        let seen_from = namespace.unwrap_or("default");
        assert!(
            errors.iter().any(|e| e
                .to_string()
                .contains(&format!("does not export it to namespace {seen_from}"))),
            "{namespace:?}: {errors:#?}"
        );
    }
}

/// A DestinationRule of a host a wildcard ServiceEntry covers applies (the
/// service's namespace is the wildcard entry's).
#[test]
fn a_rule_of_a_host_a_wildcard_entry_covers_applies() {
    let wildcard = SERVICE
        .replace("hosts: [db.example.com]", "hosts: [\"*.example.com\"]")
        .replace("spec:\n", "spec:\n  exportTo: [\"*\"]\n");
    let docs = vec![wildcard, rule("default", ""), route("c", "", "v2")];
    let model = resolve(&docs, Some("c")).unwrap_or_else(|e| panic!("resolves in c: {e:#?}"));
    assert_eq!(
        endpoints(&model),
        ["10.1.0.2:9000".parse::<SocketAddr>().expect("addr")]
    );
}
