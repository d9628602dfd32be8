//! End-to-end: the seeds' shifts in their Kubernetes Gateway API form
//! (rules/tcp-echo-gateway-api, rules/bookinfo-gateway-api), on the real
//! agent and backends in a network namespace: the same kernel paths and
//! exact splits as their Istio form (tests/gateway.rs, tests/http.rs).

use serde_json::Value;
use traffic_shift_tests::{
    NODE_ADDR, RemoteClient, SERVICE_V4, Scenario, metric, rule, tcp_echo_rule,
};

const TCP_ECHO: &str = "tcp-echo-gateway-api";
const BOOKINFO: &str = "bookinfo-gateway-api";
/// The reviews Service's clusterIP and port.
const REVIEWS: &str = "127.101.0.1:9080";
/// The bookinfo Gateway's HTTP listener, on the node's loopback.
const GATEWAY: &str = "127.0.0.1:8080";

fn gateway() -> String {
    format!("{NODE_ADDR}:31400")
}

fn set_tcp_route(s: &mut Scenario, example: &str) {
    let event = s
        .agent
        .write_rules("tcp-route.yaml", rule(TCP_ECHO, example));
    assert_eq!(event["result"], "applied", "{example}: {event}");
}

/// Istio's TCP Traffic Shifting task with a Gateway and a TCPRoute: all to
/// v1, then 80/20 (exactly 200 of 1000 connections through the 31400
/// listener: the split is smooth), then all to v2; connections held open
/// across the shifts stay on v1.
#[test]
fn tcp_route_shifts_through_the_31400_gateway_and_held_connections_stay() {
    let mut s = Scenario::tcp_echo_dir("gwapi-tcp", TCP_ECHO, &[]);
    let mut remote = RemoteClient::start(&s.netns);
    let (one, two, errors) = remote.client.burst_with_errors(&gateway(), 20);
    assert_eq!(
        (one, two, errors.len()),
        (20, 0, 0),
        "all-v1 through the gateway: {errors:?}"
    );
    let held = remote.client.call(&format!("hold {} 10", gateway()));
    assert_eq!(
        held["answers"],
        serde_json::json!(vec!["one"; 10]),
        "{held}"
    );

    set_tcp_route(&mut s, "examples/tcp-route-20-v2.yaml");
    let (one, two, errors) = remote.client.burst_with_errors(&gateway(), 1000);
    println!("TCPRoute 80/20 through the gateway, 1000 connections: one={one} two={two}");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!((one, two), (800, 200), "80/20 over 1000 connections");

    set_tcp_route(&mut s, "examples/tcp-route-all-v2.yaml");
    let (one, two, errors) = remote.client.burst_with_errors(&gateway(), 20);
    assert_eq!(
        (one, two, errors.len()),
        (0, 20, 0),
        "new connections follow the shift: {errors:?}"
    );
    let again = remote.client.call("held");
    assert_eq!(
        again["answers"],
        serde_json::json!(vec!["one"; 10]),
        "held connections stay on v1 across both shifts: {again}"
    );

    // Clients on the node reach the tcp-echo Service's clusterIP, whose
    // endpoints are both versions: each new connection to the next one,
    // as kube-proxy balances a Service.
    let (one, two) = s.client.burst(SERVICE_V4, 100);
    println!("Service tcp-echo clusterIP, 100 connections: one={one} two={two}");
    assert_eq!((one, two), (50, 50), "the Service balances its endpoints");
}

/// Two TCPRoutes on the 31400 listener: the older takes it (the Gateway
/// API's tie-break), not the first by name; the other is not accepted
/// there (`Conflicted`) and routes nothing. Neither has a
/// creationTimestamp: their age is when the agent first saw each, kept
/// across a restart.
#[test]
fn the_tcp_route_seen_first_takes_the_listener_and_still_does_after_a_restart() {
    let mut s = Scenario::tcp_echo_dir("gwapi-tcp-age", TCP_ECHO, &[]);
    let mut remote = RemoteClient::start(&s.netns);
    let second = "apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: a-second}
spec:
  parentRefs: [{name: tcp-echo-gateway, sectionName: tcp-31400}]
  rules:
  - backendRefs: [{name: tcp-echo-v2, port: 9000}]
";
    let event = s.agent.write_rules("a-second.yaml", second);
    assert_eq!(event["result"], "applied", "{event}");
    let (one, two, errors) = remote.client.burst_with_errors(&gateway(), 100);
    assert_eq!(
        (one, two, errors.len()),
        (100, 0, 0),
        "tcp-echo was seen first: it keeps the listener (a-second would by name): {errors:?}"
    );
    let route = s.agent.get_json("tcproute", "default", "a-second");
    let accepted = &route["status"]["parents"][0]["conditions"][0];
    assert_eq!(
        (&accepted["type"], &accepted["status"], &accepted["reason"]),
        (&"Accepted".into(), &"False".into(), &"Conflicted".into()),
        "{route}"
    );
    s.agent.restart(&[]);
    let (one, two, errors) = remote.client.burst_with_errors(&gateway(), 100);
    assert_eq!(
        (one, two, errors.len()),
        (100, 0, 0),
        "after a restart tcp-echo is still the older: {errors:?}"
    );
}

fn requests(s: &mut Scenario, n: usize, conns: usize) -> Value {
    requests_with(s, n, conns, "")
}

/// `n` requests over `conns` keep-alive connections, with `headers`
/// (`name:value`), to the reviews Service; none may fail.
fn requests_with(s: &mut Scenario, n: usize, conns: usize, headers: &str) -> Value {
    let reply = s.client.call(&format!(
        "http {REVIEWS} /reviews/1 {n} {conns} keepalive {headers}"
    ));
    assert_eq!(reply["failed"], 0, "{reply}");
    reply
}

fn count(reply: &Value, answer: &str) -> u64 {
    reply["answers"][answer].as_u64().unwrap_or(0)
}

/// Istio's HTTP Traffic Shifting task with an HTTPRoute bound to the
/// reviews Service (GAMMA): all to v1, 50/50 v1/v3 (exactly 500 of 1000
/// requests, and as many on /metrics), then all to v3; then its Request
/// Routing task (`end-user: jason` to v2).
#[test]
fn http_route_on_the_reviews_service_shifts_v1_to_v3() {
    let mut s = Scenario::bookinfo_dir("gwapi-http", BOOKINFO, &[]);
    let reply = requests(&mut s, 100, 4);
    assert_eq!(count(&reply, "v1"), 100, "all v1: {reply}");

    let event = s.agent.write_rules(
        "http-route.yaml",
        rule(BOOKINFO, "examples/route-reviews-50-v3.yaml"),
    );
    assert_eq!(event["result"], "applied", "{event}");
    let reply = requests(&mut s, 1000, 8);
    let (v1, v3) = (count(&reply, "v1"), count(&reply, "v3"));
    println!("HTTPRoute 50/50 over 1000 requests: v1={v1} v3={v3}");
    assert_eq!((v1, v3), (500, 500), "50/50 over 1000 requests: {reply}");
    let page = s.agent.metrics();
    let v3_labels = [
        (
            "destination_service",
            "reviews-v3.default.svc.cluster.local",
        ),
        ("destination_version", "v3"),
        ("response_code", "200"),
        ("request_protocol", "http"),
    ];
    assert_eq!(
        metric(&page, "istio_requests_total", &v3_labels),
        500,
        "the split on /metrics, as Istio names it: {page}"
    );

    let event = s.agent.write_rules(
        "http-route.yaml",
        rule(BOOKINFO, "examples/route-reviews-v3.yaml"),
    );
    assert_eq!(event["result"], "applied", "{event}");
    let reply = requests(&mut s, 100, 2);
    assert_eq!(count(&reply, "v3"), 100, "all v3: {reply}");

    // The Gateway's HTTP listener: PathPrefix /reviews (whole segments) to
    // the reviews Service, every version in turn; /reviewsx matches nothing.
    let reply = s
        .client
        .call(&format!("http {GATEWAY} /reviews/1 300 3 keepalive "));
    assert_eq!(reply["failed"], 0, "{reply}");
    println!(
        "gateway 8080 /reviews/1, 300 requests: {}",
        reply["answers"]
    );
    assert_eq!(
        ["v1", "v2", "v3"].map(|v| count(&reply, v)),
        [100, 100, 100],
        "{reply}"
    );
    let other = s
        .client
        .call(&format!("http {GATEWAY} /reviewsx 10 1 keepalive "));
    assert_eq!(other["status"]["404"], 10, "no route: 404: {other}");

    // Request routing: a header match before the catch-all rule.
    let event = s.agent.write_rules(
        "http-route.yaml",
        rule(BOOKINFO, "examples/route-reviews-jason-v2.yaml"),
    );
    assert_eq!(event["result"], "applied", "{event}");
    let jason = requests_with(&mut s, 100, 2, "end-user:jason");
    assert_eq!(count(&jason, "v2"), 100, "jason: {jason}");
    let others = requests_with(&mut s, 100, 2, "end-user:someone-else");
    assert_eq!(count(&others, "v1"), 100, "others: {others}");
}

/// The Istio form of tcp-echo is in force; its Gateway API form on the same
/// addresses and gateway port is refused, naming the Istio rule, and the
/// Istio rules stay in force.
#[test]
fn the_gateway_api_form_of_a_service_the_istio_form_routes_is_refused() {
    let mut s = Scenario::tcp_echo("gwapi-both", &tcp_echo_rule("examples/vs-all-v1.yaml"));
    // Every file of the Gateway API form, its Gateway renamed (a Gateway
    // API Gateway may not take the Istio Gateway's name: refused too).
    let text = [
        "gateway.yaml",
        "services.yaml",
        "workload-entries.yaml",
        "tcp-route.yaml",
    ]
    .map(|file| rule(TCP_ECHO, file))
    .join("---\n")
    .replace("name: tcp-echo-gateway\n", "name: tcp-echo-k8s-gateway\n");
    let event = s.agent.write_rules("zz-gateway-api.yaml", text);
    assert_eq!(event["result"], "refused", "{event}");
    let error = event["error"].as_str().unwrap_or_default();
    println!("refused: {error}");
    // The agent reports the first error; the Service's clusterIP is
    // refused the same way (traffic-shift-config's gateway_api tests).
    assert!(
        error.contains(
            "zz-gateway-api.yaml: document 9 (TCPRoute default/tcp-echo): spec.rules[0]: gateway \
             default/tcp-echo-k8s-gateway listener 0.0.0.0:31400 is already routed by \
             VirtualService default/tcp-echo ("
        ),
        "the gateway port is refused, naming the Istio rule: {error}"
    );

    let (one, two) = s.client.burst(SERVICE_V4, 20);
    assert_eq!((one, two), (20, 0), "the Istio rules stay in force");
    let mut remote = RemoteClient::start(&s.netns);
    let (one, two, errors) = remote.client.burst_with_errors(&gateway(), 20);
    assert_eq!((one, two, errors.len()), (20, 0, 0), "{errors:?}");
}

/// The Gateway API form through the admin socket, as with kubectl:
/// `traffic-shift apply -f rules/tcp-echo-gateway-api`, then a shift.
#[test]
fn apply_of_the_gateway_api_form() {
    let s = Scenario::tcp_echo_backends("gwapi-apply", &[]);
    let dir = traffic_shift_tests::repo_rules().join(TCP_ECHO);
    let out = s.agent.ctl(&["apply", "-f", &dir.display().to_string()]);
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (
            Some(0),
            "gateway.gateway.networking.k8s.io/tcp-echo-gateway created\n\
             service/tcp-echo created\n\
             service/tcp-echo-v1 created\n\
             service/tcp-echo-v2 created\n\
             tcproute/tcp-echo created\n\
             workloadentry/tcp-echo-v1 created\n\
             workloadentry/tcp-echo-v1-ipv6 created\n\
             workloadentry/tcp-echo-v2 created\n\
             workloadentry/tcp-echo-v2-ipv6 created\n"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut remote = RemoteClient::start(&s.netns);
    let (one, two, errors) = remote.client.burst_with_errors(&gateway(), 20);
    assert_eq!((one, two, errors.len()), (20, 0, 0), "{errors:?}");
    let example = dir.join("examples/tcp-route-20-v2.yaml");
    let out = s
        .agent
        .ctl(&["apply", "-f", &example.display().to_string()]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tcproute/tcp-echo configured\n"
    );
    let (one, two, errors) = remote.client.burst_with_errors(&gateway(), 100);
    assert_eq!((one, two, errors.len()), (80, 20, 0), "{errors:?}");

    // `delete -f` names the resources by their Gateway API kind: the
    // TCPRoute goes, the Istio kinds of the same names are not touched.
    let out = s
        .agent
        .ctl(&["delete", "-f", &example.display().to_string()]);
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (Some(0), "tcproute/tcp-echo deleted\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gateway_doc = dir.join("gateway.yaml");
    let out = s
        .agent
        .ctl(&["delete", "-f", &gateway_doc.display().to_string()]);
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (
            Some(0),
            "gateway.gateway.networking.k8s.io/tcp-echo-gateway deleted\n"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An HTTPRoute `name` on the bookinfo Gateway for `merge.example`, every
/// request to `reviews-<version>`, with no creationTimestamp.
fn merge_route(name: &str, version: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}}}
spec:
  parentRefs: [{{name: bookinfo-gateway}}]
  hostnames: [merge.example]
  rules:
  - backendRefs: [{{name: reviews-{version}, port: 9080}}]
"
    )
}

/// Two HTTPRoutes with the same match on one host: the older wins (the
/// Gateway API's tie-break), not the first by name. Neither has a
/// creationTimestamp, so their age is when the agent first saw each, kept
/// in its state directory: after a restart, which reads both files at
/// once, the same route wins.
#[test]
fn the_route_seen_first_wins_a_tie_and_still_does_after_a_restart() {
    let mut s = Scenario::bookinfo_dir(
        "gwapi-age",
        BOOKINFO,
        &[("z-first.yaml", &merge_route("z-first", "v1"))],
    );
    let ask = |s: &mut Scenario| {
        let reply = s.client.call(&format!(
            "http {GATEWAY} /reviews/1 20 1 keepalive host:merge.example"
        ));
        assert_eq!(reply["status"]["200"], 20, "{reply}");
        reply
    };
    let reply = ask(&mut s);
    assert_eq!(count(&reply, "v1"), 20, "z-first alone: {reply}");
    let event = s
        .agent
        .write_rules("a-second.yaml", merge_route("a-second", "v2"));
    assert_eq!(event["result"], "applied", "{event}");
    let reply = ask(&mut s);
    assert_eq!(
        count(&reply, "v1"),
        20,
        "z-first was seen first, so it is older and wins (a-second would by name): {reply}"
    );
    let seen = std::fs::read_to_string(s.agent.state_dir().join("applied/first-seen.json"))
        .expect("the agent keeps first-seen times in its state directory");
    println!("first-seen.json: {seen}");
    s.agent.restart(&[]);
    let reply = ask(&mut s);
    assert_eq!(
        count(&reply, "v1"),
        20,
        "after a restart z-first is still the older: {reply}"
    );
}

/// An HTTPRoute `name` on the reviews Service (GAMMA), `created` at that
/// time, with `rule` (its `matches`, if any, and its backend).
fn mesh_route(name: &str, created: &str, rule: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, creationTimestamp: \"{created}\"}}
spec:
  parentRefs: [{{group: \"\", kind: Service, name: reviews, port: 9080}}]
  rules:
  - {rule}
"
    )
}

/// Several HTTPRoutes on the reviews Service are merged, as on a Gateway:
/// a header match of one route comes before the catch-all of another, and
/// of two catch-alls the older route's wins; each route is accepted.
#[test]
fn http_routes_on_one_service_are_merged() {
    let jason = mesh_route(
        "reviews-jason",
        "2030-01-01T00:00:00Z",
        "matches: [{headers: [{name: end-user, value: jason}]}]\n    backendRefs: [{name: reviews-v2, port: 9080}]",
    );
    let mut s = Scenario::bookinfo_dir("gwapi-mesh-merge", BOOKINFO, &[("jason.yaml", &jason)]);
    let reply = requests(&mut s, 20, 1);
    assert_eq!(count(&reply, "v1"), 20, "reviews (its catch-all): {reply}");
    let reply = requests_with(&mut s, 20, 1, "end-user:jason");
    assert_eq!(
        count(&reply, "v2"),
        20,
        "reviews-jason's header match, though the newer route: {reply}"
    );
    // A catch-all older than reviews' (which the agent first saw now).
    let older = mesh_route(
        "reviews-v3-older",
        "2020-01-01T00:00:00Z",
        "backendRefs: [{name: reviews-v3, port: 9080}]",
    );
    let event = s.agent.write_rules("older.yaml", older);
    assert_eq!(event["result"], "applied", "{event}");
    let reply = requests(&mut s, 20, 1);
    assert_eq!(count(&reply, "v3"), 20, "the older catch-all wins: {reply}");
    let reply = requests_with(&mut s, 20, 1, "end-user:jason");
    assert_eq!(
        count(&reply, "v2"),
        20,
        "the header match still first: {reply}"
    );
    for name in ["reviews", "reviews-jason", "reviews-v3-older"] {
        let out = s.agent.ctl(&["get", "httproute", name, "-o", "json"]);
        let route: Value = serde_json::from_slice(&out.stdout).expect("get -o json");
        assert_eq!(
            route["status"]["parents"][0]["conditions"][0]["status"], "True",
            "{name} is accepted: {route}"
        );
    }
}
