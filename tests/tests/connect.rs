//! End-to-end: the connect-time path (cgroup connect4/6 + getpeername4/6)
//! with the real agent, real backends and real sockets, each test in its own
//! network namespace and child cgroup. Run as root (`cargo xtask test`).

use serde_json::Value;
use traffic_shift_tests::{SERVICE_V4, SERVICE_V6, Scenario, metric, tcp_echo_rule, traffic_shift};

const ALL_V1: &str = "examples/vs-all-v1.yaml";
const V2_20: &str = "examples/vs-20-v2.yaml";
const ALL_V2: &str = "examples/vs-all-v2.yaml";

/// The 80/20 VirtualService with a DestinationRule load balancer policy.
fn destination_rule(policy: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: tcp-echo-destination
spec:
  host: tcp-echo.local
  trafficPolicy:
    loadBalancer:
{policy}
  subsets:
  - name: v1
    labels: {{version: v1}}
  - name: v2
    labels: {{version: v2}}
"
    )
}

fn virtual_service(v1: i64, v2: i64) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: tcp-echo
spec:
  hosts:
  - tcp-echo.local
  tcp:
  - match:
    - port: 9000
    route:
    - destination:
        host: tcp-echo.local
        port:
          number: 9000
        subset: v1
      weight: {v1}
    - destination:
        host: tcp-echo.local
        port:
          number: 9000
        subset: v2
      weight: {v2}
"
    )
}

#[test]
fn all_v1_answers_one_100_of_100() {
    let mut s = Scenario::tcp_echo("all-v1", &tcp_echo_rule(ALL_V1));
    let (one, two) = s.client.burst(SERVICE_V4, 100);
    assert_eq!(
        (one, two),
        (100, 0),
        "all-v1: every new connection answers `one`"
    );
}

#[test]
fn split_80_20_is_exact_in_the_default_mode() {
    let mut s = Scenario::tcp_echo("split-smooth", &tcp_echo_rule(V2_20));
    // Any 100 consecutive connections: 20 +- 1 to v2.
    let (_, two) = s.client.burst(SERVICE_V4, 100);
    assert!(
        (19..=21).contains(&two),
        "100 connections at 80/20: v2 got {two}, want 20 +- 1"
    );
    let (one, two) = s.client.burst(SERVICE_V4, 1000);
    println!("smooth 80/20 over 1000 connections: one={one} two={two}");
    assert!(
        (199..=201).contains(&two),
        "1000 connections at 80/20: v2 got {two}, want 200 +- 1"
    );
}

#[test]
fn split_80_20_random_follows_the_weights() {
    let mut s = Scenario::tcp_echo_with(
        "split-random",
        &[
            (
                "destination-rule.yaml",
                &destination_rule("      simple: RANDOM"),
            ),
            ("virtual-service.yaml", &tcp_echo_rule(V2_20)),
        ],
    );
    let (one, two) = s.client.burst(SERVICE_V4, 1000);
    println!("RANDOM 80/20 over 1000 connections: one={one} two={two}");
    // Binomial(1000, 0.2): mean 200, sd 12.6; +-5 sd (false failure ~ 6e-7).
    assert!(
        (137..=263).contains(&two),
        "RANDOM 80/20: v2 got {two} of 1000, want 200 +- 63 (5 sd)"
    );
    // And it is not the smooth sequence in disguise: some v2 answers come in a row.
    let reply = s.client.call(&format!("burst {SERVICE_V4} 200"));
    let sequence = reply["sequence"].as_str().expect("sequence");
    assert!(
        sequence.contains("tt") || sequence.contains("ttt"),
        "RANDOM should produce adjacent v2 picks: {sequence}"
    );
}

/// Per source address: the set of answers it got.
fn answers_by_source(reply: &Value) -> Vec<(String, Vec<String>)> {
    reply["per_source"]
        .as_object()
        .expect("per_source")
        .iter()
        .map(|(src, answers)| {
            let answers = answers
                .as_array()
                .expect("answers")
                .iter()
                .map(|a| {
                    a.as_str()
                        .unwrap_or_else(|| panic!("{src}: connection failed: {a}"))
                        .to_owned()
                })
                .collect();
            (src.clone(), answers)
        })
        .collect()
}

#[test]
fn consistent_hash_is_sticky_and_grows_without_moving_v2_clients() {
    const SOURCES: usize = 1000;
    let mut s = Scenario::tcp_echo_with(
        "hash",
        &[
            (
                "destination-rule.yaml",
                &destination_rule("      consistentHash:\n        useSourceIp: true"),
            ),
            ("virtual-service.yaml", &virtual_service(80, 20)),
        ],
    );
    let before = answers_by_source(
        &s.client
            .call(&format!("sources {SERVICE_V4} 127.1.0.1 {SOURCES} 2")),
    );
    for (src, answers) in &before {
        assert!(
            answers.iter().all(|a| a == &answers[0]),
            "source {src} got different answers: {answers:?}"
        );
    }
    let on_v2 = |by: &[(String, Vec<String>)]| by.iter().filter(|(_, a)| a[0] == "two").count();
    let v2_before = on_v2(&before);
    // A source-hash table is 4096 slots: apart from the route, in TS_SLOTS.
    let slot_tables = check_slot_tables(&s, 0);
    // The shares follow the weights: Binomial(1000, 0.2), mean 200, sd 12.6; +-5 sd.
    assert!(
        (137..=263).contains(&v2_before),
        "hash 80/20: {v2_before} of {SOURCES} sources on v2, want 200 +- 63"
    );

    let event = s
        .agent
        .write_rules("virtual-service.yaml", virtual_service(50, 50));
    assert_eq!(event["result"], "applied", "50/50: {event}");
    let after = answers_by_source(
        &s.client
            .call(&format!("sources {SERVICE_V4} 127.1.0.1 {SOURCES} 2")),
    );
    for ((src, a), (_, b)) in before.iter().zip(&after) {
        assert!(
            b.iter().all(|x| x == &b[0]),
            "source {src} not sticky at 50/50: {b:?}"
        );
        assert!(
            !(a[0] == "two" && b[0] != "two"),
            "source {src} was on v2 at 20% and left it at 50%"
        );
    }
    // Each changed route names a new version; the one it replaced is gone.
    assert_eq!(check_slot_tables(&s, 1), slot_tables);
    let v2_after = on_v2(&after);
    let moved = v2_after - v2_before;
    println!("hash: v2 sources {v2_before} -> {v2_after} of {SOURCES}; moved {moved}");
    // About 30% of clients move: Binomial(1000, 0.3), mean 300, sd 14.5; +-5 sd.
    assert!(
        (228..=372).contains(&moved),
        "raising v2 20 -> 50 moved {moved} of {SOURCES} sources, want 300 +- 72"
    );
    // Binomial(1000, 0.5): mean 500, sd 15.8; +-5 sd.
    assert!(
        (421..=579).contains(&v2_after),
        "hash 50/50: {v2_after} of {SOURCES} sources on v2, want 500 +- 79"
    );

    // Back to the default mode: 50/50 is 2 slots, in the route; the slot
    // tables go.
    let event = s.agent.write_rules(
        "destination-rule.yaml",
        destination_rule("      simple: ROUND_ROBIN"),
    );
    assert_eq!(event["result"], "applied", "smooth again: {event}");
    let slots = maps(&s, "slots");
    assert!(
        slots.starts_with("TS_SLOTS: ") && slots.contains(": 0 entries"),
        "{slots}"
    );
    assert!(
        !maps(&s, "routes").contains("TS_SLOTS"),
        "{}",
        maps(&s, "routes")
    );
}

/// `traffic-shift maps NAME` of the scenario's agent.
fn maps(s: &Scenario, name: &str) -> String {
    let bpffs = s.agent.bpffs.display().to_string();
    let out = traffic_shift(&["maps", "--bpffs", &bpffs, name]);
    assert!(out.status.success(), "maps {name}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks that every route's slot table is in `TS_SLOTS` under `version`
/// (and no other), that each route names it, and returns how many there are.
fn check_slot_tables(s: &Scenario, version: u32) -> usize {
    let slots = maps(s, "slots");
    let tables: Vec<&str> = slots.lines().skip(1).collect();
    assert!(
        !tables.is_empty(),
        "source-hash tables are in TS_SLOTS:\n{slots}"
    );
    for table in &tables {
        assert!(
            table.ends_with(&format!(", version {version}: 4096 slots")),
            "only version {version}:\n{slots}"
        );
    }
    let routes = maps(s, "routes");
    let apart = format!("source hash, 4096 slots (in TS_SLOTS, version {version})");
    assert_eq!(
        routes.matches(&apart).count(),
        tables.len(),
        "every route names its table:\n{routes}\n{slots}"
    );
    tables.len()
}

#[test]
fn shift_keeps_held_connections_on_their_backend() {
    let mut s = Scenario::tcp_echo("held", &tcp_echo_rule(ALL_V1));
    let held = s.client.call(&format!("hold {SERVICE_V4} 10"));
    assert_eq!(
        held["answers"],
        serde_json::json!(vec!["one"; 10]),
        "held connections start on v1: {held}"
    );

    let event = s
        .agent
        .write_rules("virtual-service.yaml", tcp_echo_rule(ALL_V2));
    assert_eq!(event["result"], "applied", "all-v2: {event}");
    let (one, two) = s.client.burst(SERVICE_V4, 20);
    assert_eq!(
        (one, two),
        (0, 20),
        "after the shift every new connection answers `two`"
    );
    let again = s.client.call("held");
    assert_eq!(
        again["answers"],
        serde_json::json!(vec!["one"; 10]),
        "held connections stay on v1 and open: {again}"
    );
}

/// v2 leaves the rules in the order that keeps every step valid: the
/// route, the subset, then its endpoints.
fn remove_v2(s: &mut Scenario) {
    let steps = [
        ("virtual-service.yaml", tcp_echo_rule(ALL_V1)),
        (
            "destination-rule.yaml",
            tcp_echo_rule("destination-rule.yaml")
                .replace("  - name: v2\n    labels:\n      version: v2\n", ""),
        ),
        (
            "service-entry.yaml",
            tcp_echo_rule("service-entry.yaml")
                .replace("  - address: 127.0.0.1\n    ports: {tcp: 19002}\n    labels: {app: tcp-echo, version: v2}\n", "")
                .replace("  - address: ::1\n    ports: {tcp: 19002}\n    labels: {app: tcp-echo, version: v2}\n", ""),
        ),
    ];
    for (file, text) in steps {
        assert!(
            !text.contains("version: v2") || file == "virtual-service.yaml",
            "{file} still names v2:\n{text}"
        );
        let event = s.agent.write_rules(file, text);
        assert_eq!(event["result"], "applied", "{file}: {event}");
    }
}

/// Holds 10 connections at 80/20; returns their answers (2 `two`).
fn hold_ten(s: &mut Scenario) -> serde_json::Value {
    let held = s.client.call(&format!("hold {SERVICE_V4} 10"));
    let answers = held["answers"].clone();
    let twos = answers
        .as_array()
        .map_or(0, |a| a.iter().filter(|x| *x == "two").count());
    assert_eq!(twos, 2, "80/20: two of ten held on v2: {held}");
    answers
}

#[test]
fn removing_a_subset_and_its_endpoints_leaves_their_open_connections_alone() {
    let mut s = Scenario::tcp_echo("removed", &tcp_echo_rule(V2_20));
    let expected = hold_ten(&mut s);
    remove_v2(&mut s);
    assert_eq!(s.client.burst(SERVICE_V4, 20), (20, 0));
    let again = s.client.call("held");
    assert_eq!(
        again["answers"], expected,
        "open connections to the removed subset keep working: {again}"
    );
}

#[test]
fn drain_timeout_closes_the_connections_of_removed_endpoints_only() {
    let mut s = Scenario::tcp_echo_opts(
        "drain",
        &[("virtual-service.yaml", &tcp_echo_rule(V2_20))],
        &["--drain-timeout", "1s"],
    );
    let expected = hold_ten(&mut s);
    remove_v2(&mut s);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !s.agent.log_text().contains("drain timeout: closed") {
        assert!(
            std::time::Instant::now() < deadline,
            "no drain within 5 s:\n{}",
            s.agent.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let log = s.agent.log_text();
    assert!(log.contains("closed=2"), "the two v2 connections:\n{log}");
    let again = s.client.call("held");
    for (before, now) in expected
        .as_array()
        .expect("answers")
        .iter()
        .zip(again["answers"].as_array().expect("answers"))
    {
        if before == "two" {
            assert!(
                now.get("error").is_some(),
                "a connection to the removed v2 is closed: {again}"
            );
        } else {
            assert_eq!(now, before, "v1's connections are untouched: {again}");
        }
    }
}

#[test]
fn getpeername_shows_the_service_and_other_addresses_are_untouched() {
    let mut s = Scenario::tcp_echo("peer", &tcp_echo_rule(ALL_V1));
    let peer = s.client.call(&format!("peer {SERVICE_V4}"));
    assert_eq!(
        peer["peername"], SERVICE_V4,
        "getpeername returns the service address: {peer}"
    );
    let whoami = peer["whoami"].as_str().expect("whoami");
    assert!(
        whoami.starts_with("one ") && whoami.contains("local=127.0.0.1:19001"),
        "the backend is v1's endpoint: {whoami}"
    );

    // A direct connection to v2's endpoint is not a service address: untouched.
    let direct = s.client.call("peer 127.0.0.1:19002");
    assert_eq!(direct["peername"], "127.0.0.1:19002", "{direct}");
    assert!(
        direct["whoami"]
            .as_str()
            .is_some_and(|w| w.starts_with("two ")),
        "{direct}"
    );
    // The service address on another port is not covered: refused by the kernel, not rewritten.
    let other_port = s.client.call("burst 127.100.0.1:9001 1");
    assert_eq!(
        other_port["errors"].as_array().map(Vec::len),
        Some(1),
        "nothing listens on :9001: {other_port}"
    );
}

#[test]
fn ipv6_service_address_is_rewritten_too() {
    let mut s = Scenario::tcp_echo("ipv6", &tcp_echo_rule(V2_20));
    let (_, two) = s.client.burst(SERVICE_V6, 100);
    assert!((19..=21).contains(&two), "IPv6 80/20: v2 got {two} of 100");
    let peer = s.client.call(&format!("peer {SERVICE_V6}"));
    assert_eq!(
        peer["peername"], SERVICE_V6,
        "getpeername6 returns the service address: {peer}"
    );
    assert!(
        peer["whoami"]
            .as_str()
            .is_some_and(|w| w.contains("local=[::1]:1900")),
        "an IPv6 endpoint answered: {peer}"
    );
}

#[test]
fn a_bad_file_leaves_the_previous_rules_in_force() {
    let mut s = Scenario::tcp_echo("bad-file", &tcp_echo_rule(V2_20));

    let negative = virtual_service(120, -20);
    let event = s.agent.write_rules("virtual-service.yaml", &negative);
    assert_eq!(
        event["result"], "refused",
        "negative weight must be refused: {event}"
    );
    let error = event["error"].as_str().expect("error text");
    let weight_line = negative
        .lines()
        .position(|l| l.contains("weight: -20"))
        .expect("line")
        + 1;
    for part in [
        "virtual-service.yaml",
        "document 1",
        "spec.tcp[0].route[1].weight",
        &format!("line {weight_line}"),
        "-20",
    ] {
        assert!(error.contains(part), "the error names {part:?}: {error}");
    }
    let (_, two) = s.client.burst(SERVICE_V4, 100);
    assert!(
        (19..=21).contains(&two),
        "80/20 still in force after the refused file: v2 got {two} of 100"
    );

    let missing_subset = tcp_echo_rule(ALL_V2).replace("subset: v2", "subset: v3");
    let event = s.agent.write_rules("virtual-service.yaml", &missing_subset);
    assert_eq!(
        event["result"], "refused",
        "unknown subset must be refused: {event}"
    );
    assert!(
        event["error"].as_str().is_some_and(|e| e.contains("v3")),
        "the error names the subset: {event}"
    );

    let broken = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x\n";
    let event = s.agent.write_rules("virtual-service.yaml", broken);
    assert_eq!(
        event["result"], "refused",
        "YAML syntax error must be refused: {event}"
    );

    let (_, two) = s.client.burst(SERVICE_V4, 100);
    assert!(
        (19..=21).contains(&two),
        "80/20 still in force: v2 got {two} of 100"
    );
    let page = s.agent.metrics();
    assert_eq!(
        metric(&page, "traffic_shift_apply_errors_total", &[]),
        3,
        "three refusals counted:\n{page}"
    );
    assert_eq!(
        metric(&page, "traffic_shift_rules_applied_total", &[]),
        1,
        "nothing applied since the first rules:\n{page}"
    );

    // A good file after bad ones goes in.
    let event = s
        .agent
        .write_rules("virtual-service.yaml", tcp_echo_rule(ALL_V2));
    assert_eq!(event["result"], "applied", "{event}");
    assert_eq!(s.client.burst(SERVICE_V4, 20), (0, 20));
}

#[test]
fn removing_the_virtual_service_stops_rewriting() {
    let mut s = Scenario::tcp_echo("remove", &tcp_echo_rule(ALL_V1));
    assert_eq!(s.client.burst(SERVICE_V4, 5), (5, 0));
    std::fs::remove_file(s.agent.rules.join("virtual-service.yaml")).expect("remove");
    let event = s.agent.wait_events(1).remove(0);
    assert_eq!(event["result"], "removed", "{event}");
    let reply = s.client.call(&format!("burst {SERVICE_V4} 1"));
    assert_eq!(
        reply["errors"].as_array().map(Vec::len),
        Some(1),
        "no route: the service address itself has no listener: {reply}"
    );
}

#[test]
fn a_subset_without_endpoints_refuses_at_once() {
    let rule = destination_rule("      simple: ROUND_ROBIN").replace(
        "  - name: v2\n",
        "  - name: v3\n    labels: {version: v3}\n  - name: v2\n",
    );
    let vs = tcp_echo_rule(ALL_V2).replace("subset: v2", "subset: v3");
    let mut s = Scenario::tcp_echo_with(
        "no-endpoint",
        &[
            ("destination-rule.yaml", &rule),
            ("virtual-service.yaml", &vs),
        ],
    );
    let reply = s.client.call(&format!("burst {SERVICE_V4} 3"));
    let errors = reply["errors"].as_array().expect("errors");
    assert_eq!(
        errors.len(),
        3,
        "every connection to an empty subset fails: {reply}"
    );
    for e in errors {
        assert!(
            e.as_str().is_some_and(|e| e.contains("refused")),
            "refused (ECONNREFUSED), not left hanging: {e}"
        );
    }
}

#[test]
fn unload_removes_what_a_killed_agent_left_and_waits_for_a_running_one() {
    let mut s = Scenario::tcp_echo("unload", &tcp_echo_rule(ALL_V1));
    let bpffs = s.agent.bpffs.to_str().expect("UTF-8 path").to_owned();
    let busy = traffic_shift(&["unload", "--bpffs", &bpffs]);
    assert!(
        !busy.status.success(),
        "unload must refuse while the agent runs"
    );
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert!(
        stderr.contains("another traffic-shift agent holds"),
        "says why: {stderr}"
    );
    assert_eq!(
        s.client.burst(SERVICE_V4, 5),
        (5, 0),
        "the refused unload changed nothing"
    );

    let status = s.agent.process.signal_and_wait(libc::SIGKILL);
    assert!(!status.success(), "killed: {status}");
    assert!(
        s.agent.bpffs.join("TS_ROUTES").exists(),
        "a killed agent leaves its pins"
    );
    let out = traffic_shift(&["unload", "--bpffs", &bpffs]);
    assert!(
        out.status.success(),
        "unload after kill -9: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("TS_ROUTES") && stdout.contains(&format!("removed {bpffs}")),
        "lists what it removed: {stdout}"
    );
    assert!(!s.agent.bpffs.exists(), "nothing left under {bpffs}");
    let again = traffic_shift(&["unload", "--bpffs", &bpffs]);
    assert!(again.status.success(), "unload is idempotent");
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing pinned"),
        "{again:?}"
    );
}

/// The tcp-echo ServiceEntry with CIDR addresses: 198.18.7.0/24 and
/// fd00:7473::/64 on port 9000 (addresses that exist nowhere: the connect
/// hook rewrites before the kernel routes).
fn range_service_entry() -> String {
    let text = tcp_echo_rule("service-entry.yaml").replace(
        "  - 127.100.0.1\n  - fd00:7473::1\n",
        "  - 198.18.7.0/24\n  - fd00:7473::/64\n",
    );
    assert!(text.contains("198.18.7.0/24"), "{text}");
    text
}

/// A ServiceEntry `name` (host `<name>.local`) with `addresses` on port
/// 9000, whose one endpoint is the backend `one` (127.0.0.1:19001) or `two`
/// (:19002), and a VirtualService sending all of it there.
fn pinned_service(name: &str, addresses: &str, backend_port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
spec:
  hosts: [{name}.local]
  addresses: [{addresses}]
  ports: [{{number: 9000, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{tcp: {backend_port}}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
spec:
  hosts: [{name}.local]
  tcp:
  - route:
    - destination: {{host: {name}.local}}
"
    )
}

/// `traffic-shift maps` and bpftool show the four ranges of
/// [`service_address_ranges_split_exactly_and_the_most_specific_wins`].
fn check_prefix_maps(s: &Scenario) {
    let bpffs = s.agent.bpffs.display().to_string();
    let maps = traffic_shift(&["maps", "--bpffs", &bpffs, "svc_prefixes"]);
    let maps = String::from_utf8_lossy(&maps.stdout);
    assert!(
        maps.starts_with("TS_SVC_PREFIXES: ") && maps.contains(": 4 entries"),
        "{maps}"
    );
    for range in [
        "198.18.7.0/24:9000 -> route ",
        "[fd00:7473::/64]:9000 -> route ",
        "198.18.7.240/28:9000 -> route ",
        "198.18.0.0/16:9000 -> route ",
    ] {
        assert!(
            maps.contains(range),
            "TS_SVC_PREFIXES shows {range}:\n{maps}"
        );
    }
    // bpftool reads it with field names (a BTF map): the prefix length
    // counts the 32 bits of port, family and pad, then the address's.
    let dump = std::process::Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(s.agent.bpffs.join("TS_SVC_PREFIXES"))
        .arg("-j")
        .output()
        .expect("run bpftool (cargo xtask setup installs it)");
    let dump: Value = serde_json::from_slice(&dump.stdout)
        .unwrap_or_else(|e| panic!("bpftool -j: {e}: {}", String::from_utf8_lossy(&dump.stdout)));
    let keys: Vec<&Value> = dump
        .as_array()
        .expect("a list of entries")
        .iter()
        .filter_map(|e| e.pointer("/formatted/key"))
        .collect();
    let slash_24 = keys
        .iter()
        .find(|k| k["prefix_len"] == 32 + 24)
        .unwrap_or_else(|| panic!("a /24 in bpftool's dump: {dump:#}"));
    assert_eq!(
        slash_24["data"]["addr"],
        serde_json::json!([198, 18, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        "{dump:#}"
    );
    assert_eq!(slash_24["data"]["family"], 4, "{dump:#}");
}

/// ServiceEntry `addresses` given as CIDR ranges, on the connect-time path:
/// the route of the longest prefix that holds the address, an exact address
/// first, and getpeername shows the address the client connected to.
#[test]
fn service_address_ranges_split_exactly_and_the_most_specific_wins() {
    let mut s = Scenario::tcp_echo_with(
        "ranges",
        &[
            ("service-entry.yaml", &range_service_entry()),
            ("virtual-service.yaml", &tcp_echo_rule(V2_20)),
            // Inside the /24: one exact address and a longer prefix, both
            // to another backend than most of the /24's connections; around
            // it, a shorter prefix.
            ("exact.yaml", &pinned_service("exact", "198.18.7.77", 19002)),
            (
                "tail.yaml",
                &pinned_service("tail", "198.18.7.240/28", 19001),
            ),
            ("wide.yaml", &pinned_service("wide", "198.18.0.0/16", 19002)),
        ],
    );
    check_prefix_maps(&s);

    // 1000 connections over the 160 addresses 198.18.7.78 ..= .237 (between
    // the exact address and the /28): the /24's smooth 80/20, exact.
    let reply = s.client.call("spread 198.18.7.78:9000 160 1000");
    let count = |k: &str| reply["answers"][k].as_u64().unwrap_or(0);
    println!(
        "/24 at 80/20 over 1000 connections to {} addresses: one={} two={}",
        reply["addresses"],
        count("one"),
        count("two")
    );
    assert_eq!(reply["errors"], serde_json::json!([]), "{reply}");
    assert_eq!(
        reply["peer_mismatches"],
        serde_json::json!([]),
        "getpeername is the address connected to: {reply}"
    );
    assert_eq!(reply["addresses"], 160, "{reply}");
    assert_eq!(
        (count("one"), count("two")),
        (800, 200),
        "1000 connections over the /24 at 80/20 (smooth: exact): {reply}"
    );

    // The exact address inside the /24 takes its own route (all `two`),
    // the /28 inside it its own (all `one`), the /16 around it the rest.
    for (target, answer, what) in [
        ("198.18.7.77:9000", "two", "the exact address"),
        ("198.18.7.240:9000", "one", "the /28's first address"),
        ("198.18.7.255:9000", "one", "the /28's last address"),
        ("198.18.9.5:9000", "two", "the /16 outside the /24"),
    ] {
        let reply = s.client.call(&format!("spread {target} 1 100"));
        assert_eq!(
            (
                reply["answers"][answer].as_u64(),
                &reply["errors"],
                &reply["peer_mismatches"]
            ),
            (Some(100), &serde_json::json!([]), &serde_json::json!([])),
            "{what} ({target}): 100 connections answer {answer}: {reply}"
        );
    }

    // IPv6: an address of the /64, its getpeername that address.
    let target = "[fd00:7473::abcd:1]:9000";
    let peer = s.client.call(&format!("peer {target}"));
    assert_eq!(peer["peername"], target, "getpeername6: {peer}");
    assert!(
        peer["whoami"]
            .as_str()
            .is_some_and(|w| w.contains("local=[::1]:1900")),
        "an IPv6 endpoint answered: {peer}"
    );
    // Another port of a range is not covered: left alone (nothing routes
    // 198.18.0.0/16 in the test's namespace).
    let other_port = s.client.call("burst 198.18.7.100:9001 1");
    assert_eq!(
        other_port["errors"].as_array().map(Vec::len),
        Some(1),
        "198.18.7.100:9001 is not rewritten: {other_port}"
    );
}
