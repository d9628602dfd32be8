//! End-to-end: `exportTo` of VirtualServices applied. The agent runs with
//! `--namespace a`, as the proxy of workloads in namespace `a`: a
//! VirtualService private to another namespace does not route its clients,
//! one private to `a` does, and one exported from `a` to `b` only does not.

use traffic_shift_tests::{SERVICE_V4, Scenario, tcp_echo_rule};

const ALL_V1: &str = "examples/vs-all-v1.yaml";

/// A mesh VirtualService of tcp-echo in `namespace`, with `export_to`,
/// sending everything to `subset`.
fn mesh_route(namespace: &str, export_to: &str, subset: &str) -> String {
    format!(
        "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp-echo, namespace: {namespace}}}
spec:
  hosts: [tcp-echo.local]
  exportTo: {export_to}
  tcp:
  - route:
    - destination: {{host: tcp-echo.local, port: {{number: 9000}}, subset: {subset}}}
"
    )
}

#[test]
fn a_proxy_in_a_namespace_applies_the_virtual_services_exported_to_it() {
    // The shipped all-v1 rule, private to its namespace (default).
    let default_private = tcp_echo_rule(ALL_V1).replace("spec:\n", "spec:\n  exportTo: [\".\"]\n");
    let mut s = Scenario::tcp_echo_opts(
        "export-to",
        &[
            ("virtual-service.yaml", &default_private),
            ("vs-a.yaml", &mesh_route("a", "[\".\"]", "v2")),
        ],
        &["--namespace", "a"],
    );
    assert_eq!(
        s.client.burst(SERVICE_V4, 20),
        (0, 20),
        "a's own rule (all v2) applies; default's private one (all v1) does not"
    );

    // Exported from a to b only: no longer a's (Istio does not imply its
    // own namespace), and default's stays private: no route at all.
    let event = s
        .agent
        .write_rules("vs-a.yaml", mesh_route("a", "[b]", "v2"));
    assert_eq!(event["result"], "applied", "{event}");
    let reply = s.client.call(&format!("burst {SERVICE_V4} 1"));
    assert_eq!(
        reply["errors"].as_array().map(Vec::len),
        Some(1),
        "no route in a: the service address has no listener: {reply}"
    );

    // default's rule exported to a: it applies.
    let event = s.agent.write_rules(
        "virtual-service.yaml",
        tcp_echo_rule(ALL_V1).replace("spec:\n", "spec:\n  exportTo: [\".\", a]\n"),
    );
    assert_eq!(event["result"], "applied", "{event}");
    assert_eq!(
        s.client.burst(SERVICE_V4, 20),
        (20, 0),
        "default's rule, exported to a"
    );
}
