//! Two TCPRoutes on one listener: the oldest takes it (the spec's
//! tie-break: `creationTimestamp`, then `namespace/name`), the other is
//! `Accepted` `False`, reason `Conflicted`, and routes nothing there.

use super::*;

/// `BASE` with a second TCPRoute `db-2` on the same listener, to `web-v1`'s
/// endpoints (another backend, to tell the two apart), and creation times.
fn two_tcp_routes(db: Option<&str>, db_2: Option<&str>) -> String {
    let created =
        |c: Option<&str>| c.map_or(String::new(), |c| format!(", creationTimestamp: \"{c}\""));
    let route = "metadata: {name: db}\nspec:\n  parentRefs:";
    assert!(BASE.contains(route), "BASE has the TCPRoute db");
    let base = BASE.replacen(
        route,
        &format!(
            "metadata: {{name: db{}}}\nspec:\n  parentRefs:",
            created(db)
        ),
        1,
    );
    format!(
        "{base}---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\n\
         metadata: {{name: db-2{}}}\nspec:\n  parentRefs:\n  - {{name: gw, sectionName: tcp}}\n  \
         rules:\n  - backendRefs:\n    - {{name: web-v1, port: 80}}\n",
        created(db_2)
    )
}

/// The destination hosts of the route on the listener 0.0.0.0:5432.
fn hosts_on_the_listener(model: &RoutingModel) -> Vec<String> {
    let routes: Vec<&TcpRoute> = model
        .routes
        .iter()
        .filter(|r| {
            r.listeners
                .contains(&"0.0.0.0:5432".parse().expect("address"))
        })
        .collect();
    assert_eq!(routes.len(), 1, "one route takes the listener: {routes:?}");
    routes[0]
        .destinations
        .iter()
        .map(|d| d.host.clone())
        .collect()
}

fn accepted_message(model: &RoutingModel, name: &str) -> String {
    let key = crate::model::StatusKey {
        kind: "TCPRoute".into(),
        namespace: "default".into(),
        name: name.into(),
    };
    let condition = &model.gateway_api_status[&key]["parents"][0]["conditions"][0];
    assert_eq!(condition["type"], "Accepted");
    condition["message"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn the_oldest_tcp_route_takes_a_listener() {
    let db = "db.default.svc.cluster.local";
    let web = "web-v1.default.svc.cluster.local";

    // db-2 is older: it takes the listener, db is Conflicted.
    let model = model_of(&two_tcp_routes(
        Some("2026-06-01T00:00:00Z"),
        Some("2026-01-01T00:00:00Z"),
    ));
    assert_eq!(hosts_on_the_listener(&model), [web]);
    assert_eq!(
        conditions(&model, "TCPRoute", "db"),
        [vec![
            ("Accepted".into(), "False".into(), "Conflicted".into()),
            ("ResolvedRefs".into(), "True".into(), "ResolvedRefs".into()),
        ]]
    );
    assert!(
        accepted_message(&model, "db").starts_with(
            "Gateway default/gw port 5432 is taken by the older TCPRoute default/db-2 \
             (rules/r.yaml document 9): of TCPRoutes on a listener"
        ),
        "{}",
        accepted_message(&model, "db")
    );
    assert_eq!(
        conditions(&model, "TCPRoute", "db-2"),
        [cond("Accepted", "ResolvedRefs")]
    );
    let gateway = crate::model::StatusKey {
        kind: super::super::GATEWAY_KIND.into(),
        namespace: "default".into(),
        name: "gw".into(),
    };
    assert_eq!(
        model.gateway_api_status[&gateway]["listeners"][0]["attachedRoutes"], 1,
        "the route that took nothing is not attached"
    );

    // The other way round.
    let model = model_of(&two_tcp_routes(
        Some("2026-01-01T00:00:00Z"),
        Some("2026-06-01T00:00:00Z"),
    ));
    assert_eq!(hosts_on_the_listener(&model), [db]);
    assert_eq!(conditions(&model, "TCPRoute", "db-2")[0][0].2, "Conflicted");

    // No times: the name decides (db before db-2); a route with a time is
    // older than one without.
    let model = model_of(&two_tcp_routes(None, None));
    assert_eq!(hosts_on_the_listener(&model), [db]);
    let model = model_of(&two_tcp_routes(None, Some("2026-01-01T00:00:00Z")));
    assert_eq!(hosts_on_the_listener(&model), [web]);
}
