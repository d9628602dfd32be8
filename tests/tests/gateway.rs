//! End-to-end: the ingress gateway (sk_lookup) as in Istio's TCP Traffic
//! Shifting task: a Gateway with a TCP server on port 31400 and the
//! tcp-echo VirtualService bound to it. A client in its own network
//! namespace reaches the node over a veth pair; the agent hands each new
//! connection straight to the listening socket of a local tcp-echo backend,
//! found in the backend's process and duplicated with pidfd_getfd.

use std::time::{Duration, Instant};

use traffic_shift_tests::{
    NODE_ADDR, REMOTE_CLIENT_ADDR, RemoteClient, Scenario, echo_backend, tcp_echo_rule,
};

const ALL_V1: &str = "examples/vs-all-v1.yaml";
const V2_20: &str = "examples/vs-20-v2.yaml";
const ALL_V2: &str = "examples/vs-all-v2.yaml";

fn gateway() -> String {
    format!("{NODE_ADDR}:31400")
}

#[test]
fn the_seed_loop_through_the_gateway() {
    let mut s = Scenario::tcp_echo("gw-seed", &tcp_echo_rule(ALL_V1));
    let mut remote = RemoteClient::start(&s.netns);
    // Istio's task: `for i in {1..20}; do ... nc $INGRESS_HOST $TCP_INGRESS_PORT; done`
    let (one, two, errors) = remote.client.burst_with_errors(&gateway(), 20);
    assert_eq!(
        (one, two, errors.len()),
        (20, 0, 0),
        "all-v1 through the gateway: {errors:?}"
    );

    let event = s
        .agent
        .write_rules("virtual-service.yaml", tcp_echo_rule(V2_20));
    assert_eq!(event["result"], "applied", "{event}");
    let (one, two, errors) = remote.client.burst_with_errors(&gateway(), 1000);
    println!("gateway smooth 80/20 over 1000 connections: one={one} two={two}");
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        (199..=201).contains(&two),
        "gateway 80/20: v2 got {two} of 1000, want 200 +- 1"
    );
}

#[test]
fn the_backend_sees_the_client_address() {
    let s = Scenario::tcp_echo("gw-peer", &tcp_echo_rule(ALL_V1));
    let mut remote = RemoteClient::start(&s.netns);
    let peer = remote.client.call(&format!("peer {}", gateway()));
    let whoami = peer["whoami"]
        .as_str()
        .unwrap_or_else(|| panic!("no answer: {peer}"));
    assert!(whoami.starts_with("one "), "v1 answered: {whoami}");
    assert!(
        whoami.contains(&format!("peer={REMOTE_CLIENT_ADDR}:")),
        "no NAT: the backend sees the client's own address: {whoami}"
    );
    assert_eq!(
        peer["peername"],
        gateway(),
        "the client sees the gateway address: {peer}"
    );
}

#[test]
fn held_gateway_connections_keep_their_backend_across_a_shift() {
    let mut s = Scenario::tcp_echo("gw-held", &tcp_echo_rule(ALL_V1));
    let mut remote = RemoteClient::start(&s.netns);
    let held = remote.client.call(&format!("hold {} 10", gateway()));
    assert_eq!(
        held["answers"],
        serde_json::json!(vec!["one"; 10]),
        "{held}"
    );
    let event = s
        .agent
        .write_rules("virtual-service.yaml", tcp_echo_rule(ALL_V2));
    assert_eq!(event["result"], "applied", "{event}");
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
        "held connections stay on v1: {again}"
    );
}

#[test]
fn a_port_without_a_rule_reaches_whatever_listens_there() {
    let s = Scenario::tcp_echo("gw-pass", &tcp_echo_rule(ALL_V1));
    let _other = echo_backend(&s.netns, None, "three", &["0.0.0.0:31401"]);
    let mut remote = RemoteClient::start(&s.netns);
    let peer = remote.client.call(&format!("peer {NODE_ADDR}:31401"));
    assert!(
        peer["whoami"]
            .as_str()
            .is_some_and(|w| w.starts_with("three ")),
        "port 31401 has no gateway rule: its own listener answers: {peer}"
    );
}

#[test]
fn a_restarted_backend_is_registered_again_and_the_gap_is_refused_not_hung() {
    let mut s = Scenario::tcp_echo("gw-restart", &tcp_echo_rule(V2_20));
    let mut remote = RemoteClient::start(&s.netns);
    let (_, two, errors) = remote.client.burst_with_errors(&gateway(), 100);
    assert_eq!(
        (two, errors.len()),
        (20, 0),
        "80/20 before the restart: {errors:?}"
    );

    let status = s.agent.wait_status("v2 registered", |t| {
        endpoint_state(t, "127.0.0.1:19002") == Some("registered")
    });
    assert_eq!(
        endpoint_state(&status, "127.0.0.1:19001"),
        Some("registered"),
        "{status}"
    );

    // v2 goes away: its listening socket closes and leaves the kernel map.
    let v2 = s.backends.remove(1);
    drop(v2);
    let started = Instant::now();
    let (one, two, errors) = remote.client.burst_with_errors(&gateway(), 100);
    let gap = started.elapsed();
    println!(
        "gateway with v2 down: one={one} two={two} refused={} in {gap:?}",
        errors.len()
    );
    assert_eq!(
        (one, two),
        (80, 0),
        "v1's share is served, v2 has no socket: {errors:?}"
    );
    assert_eq!(errors.len(), 20, "v2's share is refused");
    for e in &errors {
        assert!(
            e.contains("refused"),
            "refused at once (reset), never left hanging: {e}"
        );
    }

    s.agent.wait_status("v2 missing", |t| {
        endpoint_state(t, "127.0.0.1:19002") == Some("missing")
    });

    // v2 comes back with a new socket: the agent registers it.
    let restarted = Instant::now();
    s.backends.push(echo_backend(
        &s.netns,
        Some(&s.cgroup),
        "two",
        &["127.0.0.1:19002", "[::1]:19002"],
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, two, errors) = remote.client.burst_with_errors(&gateway(), 5);
        if two > 0 && errors.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "v2 not reachable 5 s after its restart:\n{}",
            s.agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "v2 reachable again {:?} after its restart",
        restarted.elapsed()
    );
    let (_, two, errors) = remote.client.burst_with_errors(&gateway(), 100);
    assert!(
        errors.is_empty() && (19..=21).contains(&two),
        "80/20 again: two={two} {errors:?}"
    );
    let status = s.agent.wait_status("v2 registered again", |t| {
        endpoint_state(t, "127.0.0.1:19002") == Some("registered")
    });
    let refused = counter(&status, "gateway_no_socket");
    assert!(
        refused >= 20,
        "the 20 refusals are counted by reason (gateway_no_socket = {refused}):\n{status}"
    );
}

/// The lines of one section of `status` (`GATEWAY ENDPOINT`, `KERNEL
/// EVENTS`): from its header line to the next blank line.
fn section<'a>(status: &'a str, header: &str) -> impl Iterator<Item = &'a str> {
    status
        .lines()
        .skip_while(move |l| !l.starts_with(header))
        .skip(1)
        .take_while(|l| !l.is_empty())
}

/// The SOCKET column of `status` for a gateway endpoint (the routes above
/// list the same address with its state per route: `ok` on a mesh route).
fn endpoint_state<'a>(status: &'a str, endpoint: &str) -> Option<&'a str> {
    section(status, "GATEWAY ENDPOINT").find_map(|l| {
        let mut cols = l.split_whitespace();
        (cols.next() == Some(endpoint))
            .then(|| cols.next())
            .flatten()
    })
}

#[test]
fn an_endpoint_without_a_socket_falls_back_to_another_of_its_subset() {
    // v1 has two endpoints; nothing listens on the second (127.0.0.1:19003).
    let service_entry = tcp_echo_rule("service-entry.yaml").replace(
        "  - address: 127.0.0.1\n    ports: {tcp: 19002}",
        "  - address: 127.0.0.1\n    ports: {tcp: 19003}\n    labels: {app: tcp-echo, version: v1}\n  - address: 127.0.0.1\n    ports: {tcp: 19002}",
    );
    assert!(
        service_entry.contains("19003"),
        "the shipped ServiceEntry changed shape:\n{service_entry}"
    );
    let s = Scenario::tcp_echo_opts(
        "gw-fallback",
        &[
            ("service-entry.yaml", &service_entry),
            ("virtual-service.yaml", &tcp_echo_rule(ALL_V1)),
        ],
        // A dead endpoint on purpose: no probes taking it out first.
        &["--health-interval", "0"],
    );
    let mut remote = RemoteClient::start(&s.netns);
    let (one, two, errors) = remote.client.burst_with_errors(&gateway(), 40);
    assert_eq!(
        (one, two, errors.len()),
        (40, 0, 0),
        "v1's live endpoint takes all of v1's connections: {errors:?}"
    );
    // The status file follows the kernel counters every 250 ms.
    let status = s
        .agent
        .wait_status("the fallbacks", |t| counter(t, "gateway_fallback") >= 20);
    assert_eq!(
        endpoint_state(&status, "127.0.0.1:19003"),
        Some("missing"),
        "{status}"
    );
    let fallbacks = counter(&status, "gateway_fallback");
    // Round robin over the two endpoints: every second connection picks 19003.
    assert_eq!(
        fallbacks, 20,
        "half the connections fell back, counted by reason:\n{status}"
    );
}

/// A kernel counter of `status`: its name, then its count (several to a
/// line on a wide terminal).
fn counter(status: &str, name: &str) -> u64 {
    section(status, "KERNEL EVENTS")
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words
                .chunks(2)
                .find(|pair| pair[0] == name)
                .and_then(|pair| pair.get(1)?.parse().ok())
        })
        .unwrap_or_else(|| panic!("no {name} counter in status:\n{status}"))
}
