//! `TLSRoute` and TLS passthrough listeners: the translation onto the
//! model (routes chosen by SNI, served in user space), each refusal with
//! its message, and the status the spec reports instead of refusing.

use std::{net::SocketAddr, path::Path};

use crate::{model::RoutingModel, parse_file_all, resolve_all};

const FILE: &str = "rules/r.yaml";

/// Two Services on `tls-echo` backends, a Gateway with a TLS passthrough
/// listener for `*.example.com` on 8443, and a TLSRoute 80/20 for
/// `tls.example.com`.
const BASE: &str = r"apiVersion: v1
kind: Service
metadata: {name: tls-v1}
spec:
  ports: [{name: tls, port: 443}]
  selector: {app: tls, version: v1}
---
apiVersion: v1
kind: Service
metadata: {name: tls-v2}
spec:
  ports: [{name: tls, port: 443}]
  selector: {app: tls, version: v2}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: tls-v1}
spec: {address: 127.0.0.1, ports: {tls: 19441}, labels: {app: tls, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: tls-v2}
spec: {address: 127.0.0.1, ports: {tls: 19442}, labels: {app: tls, version: v2}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tls-gateway}
spec:
  gatewayClassName: istio
  listeners:
  - name: tls
    port: 8443
    protocol: TLS
    hostname: '*.example.com'
    tls: {mode: Passthrough}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: tls-echo}
spec:
  parentRefs: [{name: tls-gateway, sectionName: tls}]
  hostnames: [tls.example.com]
  rules:
  - backendRefs:
    - {name: tls-v1, port: 443, weight: 80}
    - {name: tls-v2, port: 443, weight: 20}
";

const KEY: &str = "default/tls-echo/rules[0]/gateway default/tls-gateway port 8443";

fn changed(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} is in BASE");
    BASE.replacen(from, to, 1)
}

/// The model of `text` (one file, `rules/r.yaml`), or its errors as
/// printed. Shared with `addresses_tests` and `grpc_route_tests`.
pub(super) fn resolved(text: &str) -> Result<RoutingModel, Vec<String>> {
    let file = parse_file_all(Path::new(FILE), text)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    resolve_all(&[file])
        .0
        .map_err(|errors| errors.iter().map(ToString::to_string).collect())
}

pub(super) fn model_of(text: &str) -> RoutingModel {
    resolved(text).unwrap_or_else(|e| panic!("{e:#?}"))
}

/// `(type, status, reason)` of the conditions of each parent of the
/// TLSRoute `tls-echo`.
fn conditions(model: &RoutingModel) -> Vec<Conditions> {
    let key = crate::model::StatusKey {
        kind: "TLSRoute".into(),
        namespace: "default".into(),
        name: "tls-echo".into(),
    };
    let status = &model.gateway_api_status[&key];
    status["parents"]
        .as_array()
        .expect("parents")
        .iter()
        .map(|p| {
            p["conditions"]
                .as_array()
                .expect("conditions")
                .iter()
                .map(|c| {
                    let text = |f: &str| c[f].as_str().unwrap_or_default().to_owned();
                    (text("type"), text("status"), text("reason"))
                })
                .collect()
        })
        .collect()
}

/// `(type, status, reason)` of each condition of a parent.
type Conditions = Vec<(String, String, String)>;

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

#[test]
fn a_tls_route_is_a_route_by_sni_served_in_user_space() {
    for version in ["v1", "v1alpha2"] {
        let text = BASE.replace(
            "gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute",
            &format!("gateway.networking.k8s.io/{version}\nkind: TLSRoute"),
        );
        let model = model_of(&text);
        let route = model
            .routes
            .iter()
            .find(|r| r.key == KEY)
            .unwrap_or_else(|| panic!("{KEY} in {:?}", model.routes));
        assert!(route.is_tls() && route.is_user_space(), "{version}");
        assert_eq!(route.sni, ["tls.example.com"]);
        let any: Vec<SocketAddr> = vec![
            "0.0.0.0:8443".parse().expect("addr"),
            "[::]:8443".parse().expect("addr"),
        ];
        assert_eq!(route.listeners, any, "every local address");
        assert_eq!(route.gateway.as_deref(), Some("default/tls-gateway"));
        let split: Vec<(&str, u32, Vec<SocketAddr>)> = route
            .destinations
            .iter()
            .map(|d| {
                (
                    d.host.as_str(),
                    d.weight,
                    d.endpoints.iter().map(|e| e.addr).collect(),
                )
            })
            .collect();
        assert_eq!(
            split,
            [
                (
                    "tls-v1.default.svc.cluster.local",
                    80,
                    vec!["127.0.0.1:19441".parse().expect("addr")]
                ),
                (
                    "tls-v2.default.svc.cluster.local",
                    20,
                    vec!["127.0.0.1:19442".parse().expect("addr")]
                ),
            ]
        );
        assert_eq!(conditions(&model), [cond("Accepted", "ResolvedRefs")]);
        let gateway = &model.gateway_api_status[&crate::model::StatusKey {
            kind: super::GATEWAY_KIND.into(),
            namespace: "default".into(),
            name: "tls-gateway".into(),
        }];
        assert_eq!(gateway["listeners"][0]["attachedRoutes"], 1);
        assert_eq!(
            gateway["listeners"][0]["supportedKinds"][0]["kind"],
            "TLSRoute"
        );
    }
}

#[test]
fn sni_names_are_the_listener_and_route_hostnames_intersected() {
    let sni = |text: &str| -> Vec<String> {
        let model = model_of(text);
        model
            .routes
            .iter()
            .find(|r| r.key == KEY)
            .map(|r| r.sni.clone())
            .unwrap_or_default()
    };
    // No hostnames: the listener's.
    assert_eq!(
        sni(&changed("  hostnames: [tls.example.com]\n", "")),
        ["*.example.com"]
    );
    // Neither: every name.
    let any = changed("  hostnames: [tls.example.com]\n", "")
        .replace("    hostname: '*.example.com'\n", "");
    assert_eq!(sni(&any), ["*"]);
    // Only the route's names the listener takes.
    assert_eq!(
        sni(&changed(
            "[tls.example.com]",
            "[a.example.com, other.org, '*.b.example.com']"
        )),
        ["a.example.com", "*.b.example.com"]
    );
}

#[test]
fn status_reports_what_the_spec_does_not_refuse() {
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: tls, namespace: other}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: TLSRoute, namespace: default}]\n  to: [{group: \"\", kind: Service}]\n";
    let other = "---\napiVersion: v1\nkind: Service\nmetadata: {name: tls-v2, namespace: other}\nspec:\n  ports: [{name: tls, port: 443}]\n  selector: {app: tls, version: v2}\n";
    let cross = changed(
        "{name: tls-v2, port: 443, weight: 20}",
        "{name: tls-v2, namespace: other, port: 443, weight: 20}",
    );
    let tcp_grant = grant.replace("kind: TLSRoute", "kind: TCPRoute");
    let cases: Vec<(&str, String, Vec<Conditions>, bool)> = vec![
        (
            "a backend that does not exist",
            changed("{name: tls-v2, port: 443", "{name: nope, port: 443"),
            vec![cond("Accepted", "BackendNotFound")],
            true,
        ),
        (
            "another namespace without a grant",
            format!("{cross}{other}"),
            vec![cond("Accepted", "RefNotPermitted")],
            true,
        ),
        (
            "a grant for TCPRoutes only",
            format!("{cross}{other}{tcp_grant}"),
            vec![cond("Accepted", "RefNotPermitted")],
            true,
        ),
        (
            "another namespace with a grant",
            format!("{cross}{other}{grant}"),
            vec![cond("Accepted", "ResolvedRefs")],
            true,
        ),
        (
            "no listener of that name",
            changed("sectionName: tls}", "sectionName: nope}"),
            vec![cond("NoMatchingParent", "ResolvedRefs")],
            false,
        ),
        (
            "no listener for the hostnames",
            changed("[tls.example.com]", "[tls.example.org]"),
            vec![cond("NoMatchingListenerHostname", "ResolvedRefs")],
            false,
        ),
        (
            "a listener that takes TCPRoutes only",
            changed(
                "name: tls\n    port: 8443\n    protocol: TLS\n    hostname: '*.example.com'\n    tls: {mode: Passthrough}",
                "name: tls\n    port: 8443\n    protocol: TCP",
            ),
            vec![cond("NotAllowedByListeners", "ResolvedRefs")],
            false,
        ),
    ];
    for (what, text, expected, routed) in cases {
        let model = resolved(&text).unwrap_or_else(|e| panic!("{what}: {e:#?}"));
        assert_eq!(conditions(&model), expected, "{what}");
        assert_eq!(
            model.routes.iter().any(|r| r.key == KEY),
            routed,
            "{what}: routed"
        );
    }
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "a table of cases: the change to the base set and its message each"
)]
fn each_refusal_says_what_to_do() {
    let passthrough = "    tls: {mode: Passthrough}\n";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "Terminate",
            changed(
                "{mode: Passthrough}",
                "{mode: Terminate, certificateRefs: [{name: cert}]}",
            ),
            "spec.listeners[0].tls.mode: tls.mode Terminate is not supported: only Passthrough is served",
        ),
        (
            "the spec's default mode, Terminate",
            changed(passthrough, "    tls: {certificateRefs: [{name: cert}]}\n"),
            "spec.listeners[0].tls.mode: tls.mode Terminate is not supported: only Passthrough is served",
        ),
        (
            "a TLS listener without tls",
            changed(passthrough, ""),
            "spec.listeners[0].tls: a TLS listener needs tls.mode: Passthrough",
        ),
        (
            "certificates in Passthrough",
            changed(
                "{mode: Passthrough}",
                "{mode: Passthrough, certificateRefs: [{name: cert}]}",
            ),
            "spec.listeners[0].tls.certificateRefs: certificateRefs is not read in Passthrough mode",
        ),
        (
            "tls on a TCP listener",
            changed(
                "protocol: TLS\n    hostname: '*.example.com'\n",
                "protocol: TCP\n",
            ),
            "spec.listeners[0].tls: listener tls is only read on a TLS listener",
        ),
        (
            "HTTPS",
            changed("protocol: TLS", "protocol: HTTPS"),
            "spec.listeners[0].tls.mode: tls mode must be Terminate for protocol HTTPS",
        ),
        (
            "TLSRoute at v1beta1",
            changed(
                "gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute",
                "gateway.networking.k8s.io/v1beta1\nkind: TLSRoute",
            ),
            "apiVersion: TLSRoute is not read at apiVersion gateway.networking.k8s.io/v1beta1: use gateway.networking.k8s.io/v1 or gateway.networking.k8s.io/v1alpha2",
        ),
        (
            "hostname *",
            changed("[tls.example.com]", "['*']"),
            "spec.hostnames[0]: hostname * is not valid: leave hostnames out to match every SNI name",
        ),
        (
            "an IP hostname",
            changed("[tls.example.com]", "[10.0.0.1]"),
            "spec.hostnames[0]: hostname 10.0.0.1 is an IP address: SNI carries names only",
        ),
        (
            "several rules",
            changed(
                "  rules:\n  - backendRefs:\n",
                "  rules:\n  - backendRefs: [{name: tls-v1, port: 443}]\n  - backendRefs:\n",
            ),
            "spec.rules[1]: a TLSRoute with several rules is not supported",
        ),
        (
            "filters",
            changed(
                "{name: tls-v2, port: 443, weight: 20}",
                "{name: tls-v2, port: 443, weight: 20, filters: []}",
            ),
            "spec.rules[0].backendRefs[1].filters: a TLSRoute backendRef has no filters: remove them",
        ),
        (
            "a Service parent",
            changed(
                "{name: tls-gateway, sectionName: tls}",
                "{group: \"\", kind: Service, name: tls-v1}",
            ),
            "spec.parentRefs[0].kind: a TLSRoute bound to a Service (GAMMA) is not supported yet",
        ),
        (
            "a TLS port that a TCP route takes too",
            format!(
                "{}---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {{name: tcp}}\nspec:\n  parentRefs: [{{name: tls-gateway, sectionName: tcp}}]\n  rules: [{{backendRefs: [{{name: tls-v1, port: 443}}]}}]\n",
                changed(
                    "    tls: {mode: Passthrough}\n",
                    "    tls: {mode: Passthrough}\n  - {name: tcp, port: 8443, protocol: TCP}\n"
                )
            ),
            "port 8443 is also spec.listeners[0]",
        ),
    ];
    for (what, text, expected) in cases {
        let errors = resolved(&text)
            .err()
            .unwrap_or_else(|| panic!("{what}: resolved"));
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{what}: expected {expected:?} in {errors:#?}"
        );
    }
}

#[test]
fn an_istio_tls_rule_on_a_passthrough_server_is_routed_by_sni() {
    let istio = r"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tls-backend}
spec:
  hosts: [tls.backend.local]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tls: 19441}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 8443, name: tls, protocol: TLS}
    hosts: ['*.example.com']
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tls}
spec:
  hosts: ['*.example.com']
  gateways: [gw]
  tls:
  - match: [{port: 8443, sniHosts: [a.example.com]}]
    route: [{destination: {host: tls.backend.local, port: {number: 443}}}]
";
    let model = model_of(istio);
    let route = model
        .routes
        .iter()
        .find(|r| r.key == "default/tls/tls[0]/gateway default/gw port 8443")
        .unwrap_or_else(|| panic!("{:?}", model.routes));
    assert_eq!(route.sni, ["a.example.com"]);
    assert_eq!(route.destinations[0].endpoints.len(), 1);
    let mesh = istio.replace("  gateways: [gw]\n", "");
    let errors = resolved(&mesh).expect_err("a mesh tls rule");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.tls[0]: tls rules bound to the mesh are not supported yet")),
        "{errors:#?}"
    );
}

/// BASE with a second TLSRoute `tls-echo-2`, all to `tls-v2`, for
/// `hostnames`; each route with its `creationTimestamp` when given.
fn two_routes(first: Option<&str>, second: Option<&str>, hostnames: &str) -> String {
    let stamp = |time: Option<&str>| {
        time.map(|t| format!(", creationTimestamp: '{t}'"))
            .unwrap_or_default()
    };
    let route = &BASE[BASE
        .find("apiVersion: gateway.networking.k8s.io/v1alpha2")
        .expect("the route")..];
    let second = route
        .replace(
            "metadata: {name: tls-echo}",
            &format!("metadata: {{name: tls-echo-2{}}}", stamp(second)),
        )
        .replace("hostnames: [tls.example.com]", &format!("hostnames: {hostnames}"))
        .replace(
            "    - {name: tls-v1, port: 443, weight: 80}\n    - {name: tls-v2, port: 443, weight: 20}\n",
            "    - {name: tls-v2, port: 443}\n",
        );
    let base = BASE.replace(
        "metadata: {name: tls-echo}",
        &format!("metadata: {{name: tls-echo{}}}", stamp(first)),
    );
    format!("{base}---\n{second}")
}

/// Each TLS route of `model`: its key's route name, SNI names and
/// destination hosts.
fn tls_routes(model: &RoutingModel) -> Vec<(String, Vec<String>, Vec<String>)> {
    model
        .routes
        .iter()
        .filter(|r| !r.sni.is_empty())
        .map(|r| {
            (
                r.key.split('/').nth(1).unwrap_or_default().to_owned(),
                r.sni.clone(),
                r.destinations.iter().map(|d| d.host.clone()).collect(),
            )
        })
        .collect()
}

/// The `Accepted` condition of TLSRoute `name`'s one parent: `(status,
/// reason, message)`.
fn accepted_of(model: &RoutingModel, name: &str) -> (String, String, String) {
    let key = crate::model::StatusKey {
        kind: "TLSRoute".into(),
        namespace: "default".into(),
        name: name.into(),
    };
    let condition = &model.gateway_api_status[&key]["parents"][0]["conditions"][0];
    let text = |f: &str| condition[f].as_str().unwrap_or_default().to_owned();
    assert_eq!(text("type"), "Accepted");
    (text("status"), text("reason"), text("message"))
}

/// Two TLSRoutes with one SNI name on one listener: the spec's tie-break,
/// the older (`creationTimestamp`, then `namespace/name`) takes the name;
/// the other is `Accepted` `False`, `Conflicted`, naming the winner, or
/// keeps the names nobody older takes.
#[test]
fn the_oldest_tls_route_takes_an_sni_name() {
    let v1 = "tls-v1.default.svc.cluster.local".to_owned();
    let v2 = "tls-v2.default.svc.cluster.local".to_owned();
    let sni = vec!["tls.example.com".to_owned()];

    // tls-echo-2 is older: it takes tls.example.com, tls-echo routes nothing.
    let model = model_of(&two_routes(
        Some("2026-06-01T00:00:00Z"),
        Some("2026-01-01T00:00:00Z"),
        "[tls.example.com]",
    ));
    assert_eq!(
        tls_routes(&model),
        [("tls-echo-2".to_owned(), sni.clone(), vec![v2.clone()])]
    );
    let (status, reason, message) = accepted_of(&model, "tls-echo");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Conflicted"));
    assert!(
        message.starts_with(
            "SNI tls.example.com on Gateway default/tls-gateway port 8443 is taken by the older \
             TLSRoute default/tls-echo-2 (rules/r.yaml document 7): of TLSRoutes with one SNI \
             name on a listener, the oldest takes it"
        ),
        "{message}"
    );
    assert_eq!(accepted_of(&model, "tls-echo-2").0, "True");
    let gateway = crate::model::StatusKey {
        kind: super::GATEWAY_KIND.into(),
        namespace: "default".into(),
        name: "tls-gateway".into(),
    };
    assert_eq!(
        model.gateway_api_status[&gateway]["listeners"][0]["attachedRoutes"], 1,
        "the route that took no name is not attached"
    );

    // Younger by a millisecond: the other way round.
    let model = model_of(&two_routes(
        Some("2026-01-01T00:00:00.001Z"),
        Some("2026-01-01T00:00:00.002Z"),
        "[tls.example.com]",
    ));
    assert_eq!(
        tls_routes(&model),
        [(
            "tls-echo".to_owned(),
            sni.clone(),
            vec![v1.clone(), v2.clone()]
        )]
    );
    assert_eq!(accepted_of(&model, "tls-echo-2").1, "Conflicted");

    // No creation time: the name decides (tls-echo before tls-echo-2); a
    // route with a time is older than one without.
    let model = model_of(&two_routes(None, None, "[tls.example.com]"));
    assert_eq!(tls_routes(&model)[0].0, "tls-echo");
    let model = model_of(&two_routes(
        None,
        Some("2026-01-01T00:00:00Z"),
        "[tls.example.com]",
    ));
    assert_eq!(tls_routes(&model)[0].0, "tls-echo-2");

    // The younger route keeps the names nobody older takes, and is accepted.
    let model = model_of(&two_routes(
        Some("2026-01-01T00:00:00Z"),
        Some("2026-06-01T00:00:00Z"),
        "[tls.example.com, b.example.com]",
    ));
    let mut routes = tls_routes(&model);
    routes.sort();
    assert_eq!(
        routes,
        [
            ("tls-echo".to_owned(), sni, vec![v1, v2.clone()]),
            (
                "tls-echo-2".to_owned(),
                vec!["b.example.com".to_owned()],
                vec![v2]
            ),
        ]
    );
    assert_eq!(accepted_of(&model, "tls-echo-2").0, "True");
}
