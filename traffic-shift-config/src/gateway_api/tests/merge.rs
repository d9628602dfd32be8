//! Several HTTPRoutes on one parent and host, merged in the spec's order:
//! precedence of the matches first, then the oldest route
//! (`creationTimestamp`), then `<namespace>/<name>`, then the order
//! within the route; listener isolation; status of every route.

use super::*;

/// An HTTPRoute `name` of namespace `default`, created at `created`
/// (none: not written), on `parent` (a `parentRefs` entry), with
/// `hostnames` and `rules` (YAML lines, each indented by two spaces).
fn http_route(
    name: &str,
    created: Option<&str>,
    parent: &str,
    hostnames: &str,
    rules: &str,
) -> String {
    let created = created.map_or(String::new(), |c| format!(", creationTimestamp: \"{c}\""));
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: {name}{created}}}\nspec:\n  parentRefs: [{parent}]\n  \
         hostnames: [{hostnames}]\n  rules:\n{rules}"
    )
}

const MESH: &str = "{group: \"\", kind: Service, name: web, port: 80}";

/// `PathPrefix value` to web-v1.
fn prefix(value: &str) -> String {
    format!(
        "  - matches: [{{path: {{type: PathPrefix, value: {value}}}}}]\n    backendRefs: [{{name: web-v1, port: 80}}]\n"
    )
}

/// `Exact value` to web-v1.
fn exact(value: &str) -> String {
    format!(
        "  - matches: [{{path: {{type: Exact, value: {value}}}}}]\n    backendRefs: [{{name: web-v1, port: 80}}]\n"
    )
}

const EVERYTHING: &str = "  - backendRefs: [{name: web-v1, port: 80}]\n";

/// The route keys of the virtual host of `domain` (`None`: the only one)
/// of listener `key`.
fn keys(model: &RoutingModel, key: &str, domain: Option<&str>) -> Vec<String> {
    let listener = listener(model, key);
    let host = match domain {
        None => &listener.virtual_hosts[0],
        Some(domain) => listener
            .virtual_hosts
            .iter()
            .find(|h| h.domains.iter().any(|d| d == domain))
            .unwrap_or_else(|| {
                let domains: Vec<&Vec<String>> =
                    listener.virtual_hosts.iter().map(|h| &h.domains).collect();
                panic!("no virtual host {domain} on {key}: {domains:?}")
            }),
    };
    host.routes.iter().map(|r| r.key.clone()).collect()
}

/// BASE's HTTPRoute `web` (on the Service) and another one, `web-b`: their
/// rules in one order on the Service's listener.
#[test]
fn routes_on_one_service_are_merged_by_precedence_then_age_then_name() {
    let mesh_key = "mesh web.default.svc.cluster.local:80";
    let cases = [
        (
            "web-b is older: it wins the tie of PathPrefix /a",
            Some("2026-02-01T00:00:00Z"),
            Some("2026-01-01T00:00:00Z"),
            [
                "default/web-b/rules[0]",
                "default/web-b/rules[1]",
                "default/web/rules[0]",
                "default/web/rules[1]",
            ],
        ),
        (
            "web is older",
            Some("2026-01-01T00:00:00Z"),
            Some("2026-02-01T00:00:00Z"),
            [
                "default/web-b/rules[0]",
                "default/web/rules[0]",
                "default/web-b/rules[1]",
                "default/web/rules[1]",
            ],
        ),
        (
            "fractions of a second count: web-b is older by 1 ms",
            Some("2026-01-01T00:00:00.002Z"),
            Some("2026-01-01T00:00:00.001Z"),
            [
                "default/web-b/rules[0]",
                "default/web-b/rules[1]",
                "default/web/rules[0]",
                "default/web/rules[1]",
            ],
        ),
        (
            "no creation time: by name, default/web before default/web-b",
            None,
            None,
            [
                "default/web-b/rules[0]",
                "default/web/rules[0]",
                "default/web-b/rules[1]",
                "default/web/rules[1]",
            ],
        ),
    ];
    for (what, web, web_b, want) in cases {
        let base = changed(
            "metadata: {name: web}\nspec:\n  parentRefs:",
            &format!(
                "metadata: {{name: web{}}}\nspec:\n  parentRefs:",
                web.map_or(String::new(), |c| format!(", creationTimestamp: \"{c}\""))
            ),
        )
        .replacen(
            "  rules:\n  - backendRefs:\n    - {name: web-v1, port: 80}\n",
            &format!("  rules:\n{}{EVERYTHING}", prefix("/a")),
            1,
        );
        let text = format!(
            "{base}{}",
            http_route("web-b", web_b, MESH, "", &(exact("/a/b") + &prefix("/a")))
        );
        let model = model_of(&text);
        assert_eq!(keys(&model, mesh_key, None), want, "{what}");
        for route in ["web", "web-b"] {
            assert_eq!(
                conditions(&model, "HTTPRoute", route),
                [cond("Accepted", "ResolvedRefs")],
                "{what}: {route}"
            );
        }
    }
}

/// A creation time wins over none: a route the agent has not stamped (or
/// with a time it cannot read) is the newest.
#[test]
fn a_route_with_a_creation_time_is_older_than_one_without() {
    let route = |name: &str, created: Option<&str>| {
        let text = http_route(name, created, MESH, "", EVERYTHING);
        let file = parse_file_all(Path::new(FILE), &format!("{BASE}{text}"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        file.resources
            .into_iter()
            .find_map(|r| match r {
                crate::Resource::GatewayApi(crate::gateway_api::GatewayApiResource::HttpRoute(
                    r,
                )) if r.source.name == name => Some(r),
                _ => None,
            })
            .expect("the route")
    };
    let stamped = route("z", Some("2030-01-01T00:00:00Z"));
    let unstamped = route("a", None);
    let unreadable = route("b", Some("yesterday"));
    assert!(
        crate::gateway_api::merge::age(&stamped.source)
            < crate::gateway_api::merge::age(&unstamped.source)
    );
    assert!(
        crate::gateway_api::merge::age(&unstamped.source)
            < crate::gateway_api::merge::age(&unreadable.source)
    );
}

/// Routes on one Gateway listener: per host, the rules of every route
/// that serves it; `attachedRoutes` counts them all.
#[test]
fn routes_on_one_listener_are_merged_per_host() {
    let gateway = "{name: gw, sectionName: http}";
    let text = format!(
        "{BASE}{}{}",
        http_route(
            "one",
            None,
            gateway,
            "a.example.com",
            &(prefix("/one") + EVERYTHING)
        ),
        http_route(
            "two",
            None,
            gateway,
            "a.example.com, b.example.com",
            &(exact("/two") + &prefix("/one/two"))
        ),
    );
    let model = model_of(&text);
    let key = "gateway default/gw port 8080";
    assert_eq!(
        keys(&model, key, Some("a.example.com")),
        [
            "default/two/rules[0]",
            "default/two/rules[1]",
            "default/one/rules[0]",
            "default/one/rules[1]",
        ]
    );
    assert_eq!(
        keys(&model, key, Some("b.example.com")),
        ["default/two/rules[0]", "default/two/rules[1]"]
    );
    let status = &model.gateway_api_status[&crate::model::StatusKey {
        kind: crate::GATEWAY_KIND.to_owned(),
        namespace: "default".to_owned(),
        name: "gw".to_owned(),
    }];
    let attached: Vec<(&str, i64)> = status["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap_or_default(),
                l["attachedRoutes"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(attached, [("tcp", 1), ("http", 2)]);
    for route in ["one", "two"] {
        assert_eq!(
            conditions(&model, "HTTPRoute", route),
            [cond("Accepted", "ResolvedRefs")],
            "{route}"
        );
    }
}

/// Listener isolation: a request is served only by the routes of the most
/// specific listener that matches its host. A route on `*.example.com`
/// that names `foo.example.com` does not serve it when a listener of the
/// same port is for `foo.example.com`.
#[test]
fn a_host_of_a_more_specific_listener_is_served_by_its_routes_only() {
    let text = changed(
        "  - {name: http, port: 8080, protocol: HTTP}\n",
        "  - {name: http, port: 8080, protocol: HTTP}\n  \
         - {name: wild, port: 8081, protocol: HTTP, hostname: \"*.example.com\"}\n  \
         - {name: foo, port: 8081, protocol: HTTP, hostname: foo.example.com}\n  \
         - {name: baz, port: 8081, protocol: HTTP, hostname: baz.example.com}\n",
    );
    let text = format!(
        "{text}{}{}",
        http_route(
            "wild",
            None,
            "{name: gw, sectionName: wild}",
            "foo.example.com, bar.example.com",
            EVERYTHING
        ),
        http_route(
            "foo",
            None,
            "{name: gw, sectionName: foo}",
            "",
            &prefix("/foo")
        ),
    );
    let model = model_of(&text);
    let key = "gateway default/gw port 8081";
    let mut domains: Vec<String> = listener(&model, key)
        .virtual_hosts
        .iter()
        .flat_map(|h| h.domains.clone())
        .collect();
    domains.sort();
    assert_eq!(
        domains,
        ["bar.example.com", "baz.example.com", "foo.example.com"]
    );
    assert_eq!(
        keys(&model, key, Some("foo.example.com")),
        ["default/foo/rules[0]"],
        "foo.example.com: only the routes of listener foo"
    );
    assert_eq!(
        keys(&model, key, Some("bar.example.com")),
        ["default/wild/rules[0]"],
        "bar.example.com: no listener for it but wild, whose route names it"
    );
    let listener = listener(&model, key);
    let baz = listener
        .virtual_hosts
        .iter()
        .find(|h| h.domains == ["baz.example.com"])
        .expect("baz.example.com");
    assert_eq!(
        baz.routes
            .iter()
            .map(|r| (r.key.as_str(), r.direct_response.as_ref().map(|d| d.status)))
            .collect::<Vec<_>>(),
        [("default/gw/listeners[4]", Some(404))],
        "baz.example.com: its listener has no route, so 404, not wild's routes"
    );
    assert_eq!(
        conditions(&model, "HTTPRoute", "wild"),
        [cond("Accepted", "ResolvedRefs")]
    );
}

/// A message about a rule of merged routes names the route it was written
/// in, its document and line, not the oldest route's: here a backend with
/// no endpoint in the newer route.
#[test]
fn a_warning_about_a_merged_rule_names_its_own_route() {
    let base = changed(
        "metadata: {name: web}\nspec:\n  parentRefs:",
        "metadata: {name: web, creationTimestamp: \"2020-01-01T00:00:00Z\"}\nspec:\n  parentRefs:",
    );
    let text = format!(
        "{base}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web-v2}}\nspec:\n  \
         ports:\n  - {{name: http, port: 80, appProtocol: http}}\n  selector: {{app: web, \
         version: v2}}\n{}",
        http_route(
            "web-b",
            None,
            MESH,
            "",
            "  - matches: [{path: {type: Exact, value: /b}}]\n    backendRefs: [{name: web-v2, port: 80}]\n",
        )
    );
    let file = parse_file_all(Path::new(FILE), &text).unwrap_or_else(|e| panic!("{e:?}"));
    let (model, warnings) = resolve_all(&[file]);
    let model = model.unwrap_or_else(|e| panic!("{}", e[0]));
    assert_eq!(
        keys(&model, "mesh web.default.svc.cluster.local:80", None),
        ["default/web-b/rules[0]", "default/web/rules[0]"]
    );
    let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "rules/r.yaml: document 10 (HTTPRoute default/web-b): spec.rules[0].backendRefs[0].name: \
          service web-v2.default.svc.cluster.local selects no endpoint (IST0173): its \
          connections will be refused; check the subset's labels against the endpoints' \
          (line 81)"
        ]
    );
}

/// On one host, the rules of the route whose own hostname for it is the
/// most specific come first, before matches and age (the spec's hostname
/// precedence; GRPCRouteMultipleRoutesAttachmentSameHostnameIntersection):
/// on a listener for `abc.example.com`, a newer route for
/// `abc.example.com` before an older one for `*.example.com`, which is
/// before an older one for `*.com`.
#[test]
fn the_route_with_the_most_specific_hostname_comes_first_on_a_host() {
    let listener = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
                    metadata: {name: abc}\nspec:\n  gatewayClassName: istio\n  listeners:\n  \
                    - {name: http, port: 8081, protocol: HTTP, hostname: abc.example.com}\n";
    let gateway = "{name: abc}";
    let text = format!(
        "{BASE}{listener}{}{}{}",
        http_route(
            "wild",
            Some("2026-01-01T00:00:00Z"),
            gateway,
            "\"*.example.com\"",
            &exact("/a")
        ),
        http_route(
            "wider",
            Some("2025-01-01T00:00:00Z"),
            gateway,
            "\"*.com\"",
            &exact("/a")
        ),
        http_route(
            "exact",
            Some("2026-06-01T00:00:00Z"),
            gateway,
            "abc.example.com",
            EVERYTHING
        ),
    );
    let model = model_of(&text);
    assert_eq!(
        keys(
            &model,
            "gateway default/abc port 8081",
            Some("abc.example.com")
        ),
        [
            "default/exact/rules[0]",
            "default/wild/rules[0]",
            "default/wider/rules[0]",
        ],
        "the newer catch-all of the exact hostname before the older wildcards' Exact /a"
    );
}
