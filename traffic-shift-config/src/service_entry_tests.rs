//! Table tests for how `ServiceEntry` hosts are found (wildcard hosts, as
//! Istio's `host.Name.Matches`) and merged (one host in several
//! `ServiceEntries` of a namespace), issue 18.

use std::{net::SocketAddr, path::PathBuf};

use crate::{
    error::{ConfigError, Warning},
    file::{RulesFile, parse_file},
    model::RoutingModel,
    resolve::resolve_all,
};

/// A `ServiceEntry` document: `name`, `hosts`, then the rest of its spec.
fn entry(name: &str, hosts: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\n\
         spec:\n  hosts: [{hosts}]\n{spec}"
    )
}

/// A STATIC, TCP `ServiceEntry` on `address`, port 9000, one endpoint on
/// `endpoint` (port 19000).
fn tcp_entry(name: &str, hosts: &str, address: &str, endpoint: &str) -> String {
    entry(
        name,
        hosts,
        &format!(
            "  addresses: [{address}]\n  ports: [{{number: 9000, name: tcp, protocol: TCP}}]\n  \
             resolution: STATIC\n  endpoints: [{{address: {endpoint}, ports: {{tcp: 19000}}}}]\n"
        ),
    )
}

/// A mesh `VirtualService` of `host` routing every TCP port to `dest`.
fn route_to(host: &str, dest: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs}}\n\
         spec:\n  hosts: [{host}]\n  tcp:\n  - route:\n    - destination: {{host: {dest}}}\n"
    )
}

fn resolve_docs(docs: &[String]) -> (Result<RoutingModel, Vec<ConfigError>>, Vec<Warning>) {
    let text = docs.join("---\n");
    let file: RulesFile = parse_file(&PathBuf::from("rules/se.yaml"), &text)
        .unwrap_or_else(|error| panic!("expected the file to parse: {error}\n{text}"));
    resolve_all(&[file])
}

/// `(service_host, listeners, endpoints of every destination)` of each route.
type Summary = Vec<(String, Vec<SocketAddr>, Vec<SocketAddr>)>;

fn summary(model: &RoutingModel) -> Summary {
    model
        .routes
        .iter()
        .map(|route| {
            (
                route.service_host.clone(),
                route.listeners.clone(),
                route
                    .destinations
                    .iter()
                    .flat_map(|d| d.endpoints.iter().map(|e| e.addr))
                    .collect(),
            )
        })
        .collect()
}

/// A conflict case: name, documents, listener, the warning's document,
/// field and message.
type ConflictCase<'c> = (&'c str, Vec<String>, &'c str, usize, &'c str, String);

fn sa(text: &str) -> SocketAddr {
    text.parse().expect("a socket address")
}

#[test]
fn wildcard_service_entry_hosts_resolve_as_istio_matches_them() {
    let wildcard = tcp_entry("eu", "\"*.eu.bookinfo.com\"", "10.0.0.1", "10.1.0.1");
    let broad = tcp_entry("all", "\"*.bookinfo.com\"", "10.0.0.2", "10.1.0.2");
    let exact = tcp_entry("reviews", "reviews.eu.bookinfo.com", "10.0.0.4", "10.1.0.4");
    let reviews = "reviews.eu.bookinfo.com";
    // (name, documents, the route's service host, listener, endpoint)
    let cases: Vec<(&str, Vec<String>, &str, &str, &str)> = vec![
        (
            "a wildcard covers the host: its addresses, ports and endpoints",
            vec![wildcard.clone(), route_to(reviews, reviews)],
            reviews,
            "10.0.0.1:9000",
            "10.1.0.1:19000",
        ),
        (
            "the most specific wildcard wins",
            vec![broad.clone(), wildcard.clone(), route_to(reviews, reviews)],
            reviews,
            "10.0.0.1:9000",
            "10.1.0.1:19000",
        ),
        (
            "the most specific wildcard wins, whatever the order",
            vec![wildcard.clone(), broad.clone(), route_to(reviews, reviews)],
            reviews,
            "10.0.0.1:9000",
            "10.1.0.1:19000",
        ),
        (
            "an exact host beats a wildcard",
            vec![
                broad.clone(),
                wildcard.clone(),
                exact.clone(),
                route_to(reviews, reviews),
            ],
            reviews,
            "10.0.0.4:9000",
            "10.1.0.4:19000",
        ),
        (
            "a destination covered by a wildcard",
            vec![
                exact.clone(),
                wildcard.clone(),
                route_to(reviews, "ratings.eu.bookinfo.com"),
            ],
            reviews,
            "10.0.0.4:9000",
            "10.1.0.1:19000",
        ),
        (
            "a wildcard VirtualService host selects the wildcard host",
            vec![wildcard.clone(), route_to("\"*.eu.bookinfo.com\"", reviews)],
            "*.eu.bookinfo.com",
            "10.0.0.1:9000",
            "10.1.0.1:19000",
        ),
    ];
    for (name, docs, host, listener, endpoint) in cases {
        let (model, warnings) = resolve_docs(&docs);
        let model =
            model.unwrap_or_else(|errors| panic!("{name}: expected a model, got {errors:?}"));
        assert_eq!(
            summary(&model),
            vec![(host.to_owned(), vec![sa(listener)], vec![sa(endpoint)])],
            "{name} (warnings: {warnings:?})"
        );
    }
}

#[test]
fn hosts_no_service_entry_covers_are_not_found() {
    // (name, documents, field, message)
    let cases: Vec<(&str, Vec<String>, &str, &str)> = vec![
        (
            "a wildcard covers only names under it",
            vec![
                tcp_entry("eu", "\"*.eu.bookinfo.com\"", "10.0.0.1", "10.1.0.1"),
                route_to("reviews.us.bookinfo.com", "reviews.us.bookinfo.com"),
            ],
            "spec.hosts[0]",
            "referenced host not found: \"reviews.us.bookinfo.com\"; define a ServiceEntry with \
             hosts: [reviews.us.bookinfo.com] or fix the host",
        ),
        (
            "a wildcard does not cover its own suffix",
            vec![
                tcp_entry("eu", "\"*.eu.bookinfo.com\"", "10.0.0.1", "10.1.0.1"),
                route_to("eu.bookinfo.com", "eu.bookinfo.com"),
            ],
            "spec.hosts[0]",
            "referenced host not found: \"eu.bookinfo.com\"",
        ),
        (
            "a destination no wildcard covers",
            vec![
                tcp_entry("eu", "\"*.eu.bookinfo.com\"", "10.0.0.1", "10.1.0.1"),
                route_to("reviews.eu.bookinfo.com", "reviews.us.bookinfo.com"),
            ],
            "spec.tcp[0].route[0].destination.host",
            "referenced host not found: \"reviews.us.bookinfo.com\"",
        ),
    ];
    for (name, docs, field, message) in cases {
        let (model, _) = resolve_docs(&docs);
        let errors = model
            .err()
            .unwrap_or_else(|| panic!("{name}: expected errors"));
        let error = &errors[0];
        assert_eq!(error.document, Some(2), "{name}: {error}");
        assert_eq!(error.field.to_string(), field, "{name}: {error}");
        assert!(error.line.is_some(), "{name}: a line: {error}");
        assert!(
            error.to_string().contains(message),
            "{name}: expected {message:?} in: {error}"
        );
    }
}

#[test]
fn service_entries_of_one_host_are_merged_as_istio_merges_them() {
    let host = "db.example.com";
    let base = tcp_entry("a", host, "10.0.0.1", "10.1.0.1");
    let port_9001 = entry(
        "b",
        host,
        "  addresses: [10.0.0.1]\n  ports: [{number: 9001, name: tcp-admin, protocol: TCP}]\n  \
         resolution: STATIC\n  endpoints: [{address: 10.1.0.2, ports: {tcp-admin: 19001}}]\n",
    );
    let more_endpoints = tcp_entry("b", host, "10.0.0.1", "10.1.0.2");
    let route = |port: u16| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs}}\n\
             spec:\n  hosts: [{host}]\n  tcp:\n  - match: [{{port: {port}}}]\n    route:\n    - \
             destination: {{host: {host}, port: {{number: {port}}}}}\n"
        )
    };
    // (name, documents, routes)
    let cases: Vec<(&str, Vec<String>, Summary)> = vec![
        (
            "ports are unioned: the second entry's port is routed, to its endpoints",
            vec![base.clone(), port_9001.clone(), route(9001)],
            vec![(
                host.to_owned(),
                vec![sa("10.0.0.1:9001")],
                vec![sa("10.1.0.2:19001")],
            )],
        ),
        (
            "ports are unioned: the first entry's port stays",
            vec![base.clone(), port_9001.clone(), route(9000)],
            // An endpoint serves the ports of its own entry (Istio makes
            // its instances per port of the entry).
            vec![(
                host.to_owned(),
                vec![sa("10.0.0.1:9000")],
                vec![sa("10.1.0.1:19000")],
            )],
        ),
        (
            "endpoints are appended",
            vec![base.clone(), more_endpoints.clone(), route(9000)],
            vec![(
                host.to_owned(),
                vec![sa("10.0.0.1:9000")],
                vec![sa("10.1.0.1:19000"), sa("10.1.0.2:19000")],
            )],
        ),
    ];
    for (name, docs, routes) in cases {
        let (model, warnings) = resolve_docs(&docs);
        let model =
            model.unwrap_or_else(|errors| panic!("{name}: expected a model, got {errors:?}"));
        assert_eq!(summary(&model), routes, "{name}");
        assert!(warnings.is_empty(), "{name}: no warning, got {warnings:?}");
    }
}

#[test]
fn conflicting_service_entries_of_one_host_keep_the_oldest_with_a_warning() {
    let host = "db.example.com";
    let dns = |name: &str, address: &str| {
        entry(
            name,
            host,
            &format!(
                "  addresses: [{address}]\n  ports: [{{number: 9000, name: tcp, protocol: TCP}}]\n  \
                 resolution: DNS\n  endpoints: [{{address: 10.1.0.9, ports: {{tcp: 19000}}}}]\n"
            ),
        )
    };
    let route = route_to(host, host);
    // (name, documents, listener, warning's document, field, message)
    let cases: Vec<ConflictCase> = vec![
        (
            "another resolution: the first by name wins (a before b)",
            vec![
                tcp_entry("a", host, "10.0.0.1", "10.1.0.1"),
                dns("b", "10.0.0.1"),
                route.clone(),
            ],
            "10.0.0.1:9000",
            2,
            "spec.resolution",
            "host db.example.com is also defined by ServiceEntry default/a (rules/se.yaml \
             document 1), with another resolution: Istio merges the ServiceEntries of a host and \
             keeps the oldest one's resolution (metadata.creationTimestamp, then name): \
             ServiceEntry default/a STATIC applies, not \
             ServiceEntry default/b DNS"
                .to_owned(),
        ),
        (
            "another resolution: the first by name wins, whatever the file order",
            vec![
                dns("b", "10.0.0.1"),
                tcp_entry("a", host, "10.0.0.1", "10.1.0.1"),
                route.clone(),
            ],
            "10.0.0.1:9000",
            2,
            "spec.resolution",
            "host db.example.com is also defined by ServiceEntry default/b (rules/se.yaml \
             document 1), with another resolution: Istio merges the ServiceEntries of a host and \
             keeps the oldest one's resolution (metadata.creationTimestamp, then name): \
             ServiceEntry default/a STATIC applies, not \
             ServiceEntry default/b DNS"
                .to_owned(),
        ),
        (
            "another resolution: the older by creationTimestamp wins over the name",
            vec![
                tcp_entry("a", host, "10.0.0.1", "10.1.0.1").replace(
                    "metadata: {name: a}",
                    "metadata: {name: a, creationTimestamp: \"2026-02-01T00:00:00Z\"}",
                ),
                dns("b", "10.0.0.1").replace(
                    "metadata: {name: b}",
                    "metadata: {name: b, creationTimestamp: \"2026-01-01T00:00:00Z\"}",
                ),
                route.clone(),
            ],
            "10.0.0.1:9000",
            2,
            "spec.resolution",
            "ServiceEntry default/b DNS applies, not ServiceEntry default/a STATIC".to_owned(),
        ),
        (
            "other addresses: the oldest's are the service's",
            vec![
                tcp_entry("a", host, "10.0.0.1", "10.1.0.1"),
                tcp_entry("b", host, "10.0.0.2", "10.1.0.2"),
                route.clone(),
            ],
            "10.0.0.1:9000",
            2,
            "spec.addresses",
            "ServiceEntry default/a [10.0.0.1] applies, not ServiceEntry default/b [10.0.0.2]"
                .to_owned(),
        ),
    ];
    for (name, docs, listener, document, field, message) in cases {
        let (model, warnings) = resolve_docs(&docs);
        let model =
            model.unwrap_or_else(|errors| panic!("{name}: expected a model, got {errors:?}"));
        assert_eq!(model.routes.len(), 1, "{name}: {model:?}");
        assert_eq!(model.routes[0].listeners, vec![sa(listener)], "{name}");
        let warning = warnings
            .iter()
            .find(|w| w.field.to_string() == field)
            .unwrap_or_else(|| panic!("{name}: expected a warning at {field}, got {warnings:?}"));
        assert_eq!(warning.document, Some(document), "{name}: {warning}");
        assert!(warning.line.is_some(), "{name}: a line: {warning}");
        assert!(
            warning.message.contains(&message),
            "{name}: expected {message:?} in: {warning}"
        );
    }
}

/// `ServiceEntries` of one namespace that share only some hosts: Istio
/// merges per namespace and host (`mergeServicesInstancesByNamespaceHost`),
/// so the shared host gets both entries' ports and endpoints (the oldest
/// entry's addresses, with a warning), and each other host is its own
/// entry's alone, whichever entry comes first in the files.
#[test]
fn service_entries_that_share_some_hosts_are_merged_per_host() {
    let a = tcp_entry("a", "db.example.com", "10.0.0.1", "10.1.0.1");
    let b = entry(
        "b",
        "db.example.com, cache.example.com",
        "  addresses: [10.0.0.2]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  \
         resolution: STATIC\n  endpoints: [{address: 10.1.0.2}]\n",
    );
    let vs = |name: &str, host: &str, tcp: bool| {
        let tcp = if tcp {
            format!(
                "  tcp:\n  - route:\n    - destination: {{host: {host}, port: {{number: 9000}}}}\n"
            )
        } else {
            String::new()
        };
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\n\
             spec:\n  hosts: [{host}]\n{tcp}  http:\n  - route:\n    - destination: {{host: {host}, port: {{number: 80}}}}\n"
        )
    };
    let (db, cache) = (
        vs("db", "db.example.com", true),
        vs("cache", "cache.example.com", false),
    );
    for (name, docs) in [
        (
            "a first",
            vec![a.clone(), b.clone(), db.clone(), cache.clone()],
        ),
        (
            "b first",
            vec![b.clone(), a.clone(), db.clone(), cache.clone()],
        ),
    ] {
        let (model, warnings) = resolve_docs(&docs);
        let model = model.unwrap_or_else(|errors| panic!("{name}: expected a model: {errors:#?}"));
        // db: a's TCP port with a's endpoint, on a's address (the older).
        assert_eq!(
            summary(&model),
            vec![(
                "db.example.com".to_owned(),
                vec![sa("10.0.0.1:9000")],
                vec![sa("10.1.0.1:19000")]
            )],
            "{name}"
        );
        // db: b's HTTP port too, with b's endpoint, on a's address; cache:
        // b's alone.
        let http: Vec<(String, Vec<SocketAddr>, Vec<SocketAddr>)> = model
            .http
            .iter()
            .map(|l| {
                (
                    l.key.clone(),
                    l.listeners.clone(),
                    l.virtual_hosts
                        .iter()
                        .flat_map(|h| &h.routes)
                        .flat_map(|r| &r.destinations)
                        .flat_map(|d| d.destination.endpoints.iter().map(|e| e.addr))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            http,
            vec![
                (
                    "mesh cache.example.com:80".to_owned(),
                    vec![sa("10.0.0.2:80")],
                    vec![sa("10.1.0.2:80")]
                ),
                (
                    "mesh db.example.com:80".to_owned(),
                    vec![sa("10.0.0.1:80")],
                    vec![sa("10.1.0.2:80")]
                ),
            ],
            "{name}"
        );
        let addresses: Vec<String> = warnings
            .iter()
            .filter(|w| w.field.to_string() == "spec.addresses")
            .map(|w| w.message.clone())
            .collect();
        assert_eq!(
            addresses.len(),
            1,
            "{name}: one warning for the addresses: {warnings:#?}"
        );
        assert!(
            addresses[0].contains("host db.example.com is also defined by")
                && addresses[0].contains("ServiceEntry default/a [10.0.0.1] applies, not ServiceEntry default/b [10.0.0.2]"),
            "{name}: {}",
            addresses[0]
        );
    }
}

/// The same entries in two namespaces: not merged (Istio merges within a
/// namespace only). A `VirtualService` of `db` gets the oldest visible
/// entry's service alone (a's: its TCP port, not b's HTTP one), one of
/// `cache` b's.
#[test]
fn service_entries_that_share_some_hosts_across_namespaces_are_not_merged() {
    let a = tcp_entry("a", "db.example.com", "10.0.0.1", "10.1.0.1");
    let b = in_namespace(
        &entry(
            "b",
            "db.example.com, cache.example.com",
            "  addresses: [10.0.0.2]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  \
             resolution: STATIC\n  endpoints: [{address: 10.1.0.2}]\n",
        ),
        "other",
        "",
        "",
    );
    let db = route_to("db.example.com", "db.example.com");
    let cache = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: cache}\n\
                 spec:\n  hosts: [cache.example.com]\n  http:\n  - route:\n    - destination: {host: cache.example.com}\n"
        .to_owned();
    let (model, warnings) = resolve_docs(&[a, b, db, cache]);
    let model = model.unwrap_or_else(|errors| panic!("expected a model: {errors:#?}"));
    assert_eq!(
        summary(&model),
        vec![(
            "db.example.com".to_owned(),
            vec![sa("10.0.0.1:9000")],
            vec![sa("10.1.0.1:19000")]
        )]
    );
    let http: Vec<(&str, &[SocketAddr])> = model
        .http
        .iter()
        .map(|l| (l.key.as_str(), l.listeners.as_slice()))
        .collect();
    assert_eq!(
        http,
        [("mesh cache.example.com:80", &[sa("10.0.0.2:80")][..])]
    );
    assert!(
        warnings
            .iter()
            .all(|w| w.field.to_string() != "spec.addresses"),
        "nothing merged, nothing to warn about: {warnings:#?}"
    );
}

/// `doc` (a `ServiceEntry` or `VirtualService` document) in `namespace`,
/// with `extra` metadata (`, creationTimestamp: ...`) and `spec` lines.
fn in_namespace(doc: &str, namespace: &str, extra: &str, spec: &str) -> String {
    let name_end = doc.find("}\nspec:\n").expect("metadata: {name: ...}");
    format!(
        "{}, namespace: {namespace}{extra}}}\nspec:\n{spec}{}",
        &doc[..name_end],
        &doc[name_end + "}\nspec:\n".len()..]
    )
}

/// One host in `ServiceEntries` of two namespaces: each namespace has its
/// own service (not merged, as Istio's `canMergeServices` refuses other
/// namespaces); a `VirtualService` sees those exported to its namespace
/// (Istio's `IsServiceVisible`) and, of several, the oldest
/// (`sortServicesByCreationTime` then `appendSidecarServices`: creation
/// time, then name, then namespace).
#[test]
fn one_host_in_two_namespaces_resolves_per_namespace_by_export_to_then_age() {
    let host = "db.example.com";
    let a = |extra: &str, spec: &str| {
        in_namespace(
            &tcp_entry("a", host, "10.0.0.1", "10.1.0.1"),
            "default",
            extra,
            spec,
        )
    };
    let b = |extra: &str, spec: &str| {
        in_namespace(
            &tcp_entry("b", host, "10.0.0.2", "10.1.0.2"),
            "other",
            extra,
            spec,
        )
    };
    let vs = |namespace: &str| in_namespace(&route_to(host, host), namespace, "", "");
    let older = ", creationTimestamp: \"2026-01-01T00:00:00Z\"";
    let newer = ", creationTimestamp: \"2026-02-01T00:00:00Z\"";
    // (name, documents, the route's listener)
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "both exported everywhere: the first by name (a), the same timestamp",
            vec![a("", ""), b("", ""), vs("default")],
            "10.0.0.1:9000",
        ),
        (
            "both exported everywhere: the older by creationTimestamp (b)",
            vec![a(newer, ""), b(older, ""), vs("default")],
            "10.0.0.2:9000",
        ),
        (
            "the older is private to its namespace: a VirtualService elsewhere gets the other",
            vec![a(older, "  exportTo: [\".\"]\n"), b(newer, ""), vs("other")],
            "10.0.0.2:9000",
        ),
        (
            "the older is private: in its own namespace it is still the one",
            vec![
                a(older, "  exportTo: [\".\"]\n"),
                b(newer, ""),
                vs("default"),
            ],
            "10.0.0.1:9000",
        ),
        (
            "exported to a namespace by name",
            vec![
                a(older, "  exportTo: [third]\n"),
                b(newer, "  exportTo: [\".\"]\n"),
                vs("third"),
            ],
            "10.0.0.1:9000",
        ),
    ];
    for (name, docs, listener) in cases {
        let (model, _) = resolve_docs(&docs);
        let model =
            model.unwrap_or_else(|errors| panic!("{name}: expected a model, got {errors:#?}"));
        let summary = summary(&model);
        assert_eq!(summary.len(), 1, "{name}: {summary:?}");
        assert_eq!(summary[0].1, vec![sa(listener)], "{name}: listener");
        // The endpoints are the chosen entry's own: ports and endpoints are
        // not merged across namespaces.
        let (_, _, endpoints) = &summary[0];
        let want = if listener == "10.0.0.1:9000" {
            "10.1.0.1:19000"
        } else {
            "10.1.0.2:19000"
        };
        assert_eq!(endpoints, &vec![sa(want)], "{name}: endpoints");
    }

    // Exported to neither namespace of the VirtualService: not found, and
    // the error says which entries define it and why they are not seen.
    let (model, _) = resolve_docs(&[
        a("", "  exportTo: [\".\"]\n"),
        b("", "  exportTo: [\"~\"]\n"),
        vs("third"),
    ]);
    let errors = model.expect_err("no visible service");
    assert_eq!(errors[0].document, Some(3), "{}", errors[0]);
    assert!(
        errors[0].message.starts_with(
            "referenced host not found: \"db.example.com\"; define a ServiceEntry with hosts: \
             [db.example.com] or fix the host; ServiceEntry default/a (rules/se.yaml document \
             1) (exportTo: [.]), ServiceEntry other/b (rules/se.yaml document 2) (exportTo: [~]) \
             defines it but does not export it to namespace third"
        ),
        "{}",
        errors[0]
    );
}

/// Istio's `TestIsServiceVisible` (`pilot/pkg/model/push_context_test.go`),
/// the cases of the default mesh config (services public unless they say
/// otherwise): a `ServiceEntry` in `bar`, a `VirtualService` in `foo`. The
/// two global-private cases need a mesh setting we do not have, and the
/// two that combine `~` with other values are refused by validation
/// (`exportTo: ~` must be alone).
#[test]
fn istio_is_service_visible() {
    let host = "db.example.com";
    let cases: [(&str, &str, bool); 5] = [
        (
            "service whose namespace is bar has no exportTo map with global public",
            "",
            true,
        ),
        (
            "service whose namespace is bar has exportTo map with private",
            "  exportTo: [\".\"]\n",
            false,
        ),
        (
            "service whose namespace is bar has exportTo map with public",
            "  exportTo: [\"*\"]\n",
            true,
        ),
        (
            "service whose namespace is bar has exportTo map with specific namespace foo",
            "  exportTo: [foo]\n",
            true,
        ),
        (
            "service whose namespace is bar has exportTo map with specific namespace baz",
            "  exportTo: [baz]\n",
            false,
        ),
    ];
    for (name, export_to, visible) in cases {
        let docs = [
            in_namespace(
                &tcp_entry("svc", host, "10.0.0.1", "10.1.0.1"),
                "bar",
                "",
                export_to,
            ),
            in_namespace(&route_to(host, host), "foo", "", ""),
        ];
        let (model, _) = resolve_docs(&docs);
        assert_eq!(
            model.is_ok(),
            visible,
            "TestIsServiceVisible/{name}: {model:?}"
        );
    }
    // "service visible to none"
    let (model, _) = resolve_docs(&[
        in_namespace(
            &tcp_entry("svc", host, "10.0.0.1", "10.1.0.1"),
            "bar",
            "",
            "  exportTo: [\"~\"]\n",
        ),
        in_namespace(&route_to(host, host), "foo", "", ""),
    ]);
    assert!(
        model.is_err(),
        "TestIsServiceVisible/service visible to none"
    );
}

#[test]
fn hosts_of_one_wildcard_service_entry_share_its_addresses() {
    let wildcard = entry(
        "eu",
        "\"*.eu.bookinfo.com\"",
        "  addresses: [10.0.0.1]\n  ports: [{number: 9080, name: http, protocol: HTTP}]\n  \
         resolution: STATIC\n  endpoints: [{address: 10.1.0.1}]\n",
    );
    let http = |name: &str, host: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\n\
             spec:\n  hosts: [{host}]\n  http:\n  - route:\n    - destination: {{host: {host}}}\n"
        )
    };
    // One VirtualService: one listener on the wildcard's address.
    let (model, _) = resolve_docs(&[wildcard.clone(), http("reviews", "reviews.eu.bookinfo.com")]);
    let model = model.unwrap_or_else(|errors| panic!("expected a model, got {errors:?}"));
    assert_eq!(model.http.len(), 1, "{model:?}");
    assert_eq!(model.http[0].listeners, vec![sa("10.0.0.1:9080")]);
    assert_eq!(
        model.http[0].virtual_hosts[0].domains,
        vec!["reviews.eu.bookinfo.com".to_owned()]
    );
    // Two: the second would take the same address, refused as two
    // VirtualServices of one service port are.
    let (model, _) = resolve_docs(&[
        wildcard,
        http("reviews", "reviews.eu.bookinfo.com"),
        http("ratings", "ratings.eu.bookinfo.com"),
    ]);
    let errors = model.expect_err("two VirtualServices on one address");
    assert_eq!(errors[0].document, Some(3), "{}", errors[0]);
    assert!(
        errors[0].to_string().contains(
            "spec.hosts[0]: service ratings.eu.bookinfo.com port 9080 (the ServiceEntry host \
             *.eu.bookinfo.com, whose addresses it shares) is already routed by VirtualService \
             default/reviews (http)"
        ),
        "{}",
        errors[0]
    );
}
