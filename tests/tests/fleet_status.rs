//! What a fleet's nodes say about themselves (issue 20): the per-route
//! counters each writes to the store and `status --fleet` sums, the
//! store's state on `/metrics`, and the store revision kept in the state
//! directory, which an agent restarted while etcd is down serves.
//! Real etcd (three members), real agents, real connections; every wait is
//! for an event with a deadline, never a sleep.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use traffic_shift_tests::{
    SERVICE_V4,
    exposition::{metric, try_metric},
    fleet::Fleet,
    repo_rules,
};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `apply -f FILES --wait` on the store; the revision committed.
fn apply(fleet: &Fleet, files: &[&str]) -> i64 {
    let dir = repo_rules().join("tcp-echo");
    let paths: Vec<String> = files
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect();
    let mut args = vec!["apply"];
    for path in &paths {
        args.extend(["-f", path.as_str()]);
    }
    args.extend(["--wait", "--timeout", "30s"]);
    let out = fleet.ctl(&args);
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "apply {files:?}: {stderr}\n{}",
        fleet.logs()
    );
    stderr
        .lines()
        .find_map(|l| l.split(" at revision ").nth(1))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("no committed revision in: {stderr}"))
}

const BASE: [&str; 3] = [
    "service-entry.yaml",
    "destination-rule.yaml",
    "gateway.yaml",
];

/// Polls `check` every 50 ms until it gives a value, for at most `limit`;
/// `what` and `context()` name the failure.
fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `status --fleet`'s rows of the tcp-echo route: (node or `all`,
/// subset) -> TOTAL.
fn fleet_totals(out: &str) -> BTreeMap<(String, String), u64> {
    let mut totals = BTreeMap::new();
    let mut node = String::new();
    for line in out.lines().filter(|l| l.starts_with("   ")) {
        let mut cells: Vec<&str> = line.split_whitespace().collect();
        if cells.first() == Some(&"NODE") {
            continue;
        }
        if !cells.first().is_some_and(|c| c.contains('/')) {
            cells.remove(0).clone_into(&mut node);
        }
        let [destination, _weight, total, ..] = cells[..] else {
            panic!("not a row of status --fleet: {line:?}\n{out}");
        };
        let subset = destination.rsplit('/').next().unwrap_or_default();
        totals.insert(
            (node.clone(), subset.to_owned()),
            total.parse().expect("TOTAL is a number"),
        );
    }
    totals
}

/// Two nodes split their own connections 80/20; `status --fleet` shows
/// each node's split and their sum, from the counters each node writes to
/// the store; `/metrics` says the store is connected, at which revision.
#[test]
fn status_fleet_sums_the_split_each_node_observed() {
    let mut fleet = Fleet::start("fleet-sum", 2);
    apply(&fleet, &BASE);
    let revision = apply(&fleet, &["examples/vs-20-v2.yaml"]);
    let mut expected = BTreeMap::new();
    for (n, connections) in [(0, 1000), (1, 500)] {
        let (one, two, errors) = fleet.nodes[n]
            .client
            .burst_with_errors(SERVICE_V4, connections);
        assert!(errors.is_empty(), "node-{n}: {errors:?}");
        assert_eq!(
            (one, two),
            (connections as u64 * 4 / 5, connections as u64 / 5),
            "node-{n}: the 80/20 split of {connections} connections"
        );
        expected.insert((format!("node-{n}"), "v1".to_owned()), one);
        expected.insert((format!("node-{n}"), "v2".to_owned()), two);
    }
    expected.insert(("all".into(), "v1".into()), 1200);
    expected.insert(("all".into(), "v2".into()), 300);
    let last = std::cell::RefCell::new(String::new());
    let started = Instant::now();
    wait_for(
        "status --fleet showing every node's connections",
        Duration::from_secs(15),
        || {
            let out = fleet.ctl(&["status", "--fleet"]);
            assert!(
                out.status.success(),
                "status --fleet: {}",
                text(&out.stderr)
            );
            let shown = text(&out.stdout);
            let done = fleet_totals(&shown) == expected;
            *last.borrow_mut() = shown;
            done.then_some(())
        },
        || format!("expected {expected:?}; last output:\n{}", last.borrow()),
    );
    eprintln!(
        "status --fleet showed 1200/300 (node-0 800/200, node-1 400/100) {} ms after the last connection",
        started.elapsed().as_millis()
    );
    let out = text(&fleet.ctl(&["status", "--fleet"]).stdout);
    assert!(
        out.contains(&format!("2 nodes, 2 at revision {revision}, 0 refused")),
        "{out}"
    );
    assert!(out.contains("80.0%") && out.contains("20.0%"), "{out}");
    watch_redraws(&fleet, revision);
    let page = fleet.nodes[0].agent.metrics();
    assert_eq!(metric(&page, "traffic_shift_store_connected", &[]), 1);
    assert_eq!(
        metric(&page, "traffic_shift_store_revision", &[]),
        u64::try_from(revision).expect("a revision is positive")
    );
    assert_eq!(
        metric(&page, "traffic_shift_store_reconnects_total", &[]),
        0
    );
}

/// `status --fleet --watch` into a pipe: frame after frame (a blank line
/// apart), each the whole view read from the store again; two frames with
/// the summed split are waited for (15 s at most), then it is stopped.
fn watch_redraws(fleet: &Fleet, revision: i64) {
    use std::io::BufRead as _;
    let mut child = fleet
        .command(&["status", "--fleet", "--watch", "--interval", "0.2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run status --fleet --watch");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if line.map(|l| tx.send(l)).is_err() {
                return;
            }
        }
    });
    let header = format!("2 nodes, 2 at revision {revision}, 0 refused");
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut frames, mut sums, mut seen) = (0, 0, Vec::new());
    while frames < 2 || sums < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            panic!(
                "status --fleet --watch drew {frames} frames in 15 s:\n{}",
                seen.join("\n")
            );
        };
        frames += usize::from(line.contains(&header));
        sums += usize::from(line.trim_start().starts_with("all ") && line.contains(" 1200 "));
        seen.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("status --fleet --watch: {frames} frames, each with the sum 1200/300");
}

/// `status --fleet` without a store says how to give one.
#[test]
fn status_fleet_needs_a_store() {
    let out = std::process::Command::new(traffic_shift_tests::traffic_shift_bin())
        .args(["status", "--fleet"])
        .env_remove("TRAFFIC_SHIFT_STORE")
        .output()
        .expect("run traffic-shift");
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        "error: status --fleet reads the fleet's store: give --store etcd://HOST:PORT (or set TRAFFIC_SHIFT_STORE)\n"
    );
}

/// etcd goes away and comes back: `/metrics` says so (connected 0, then 1
/// and one reconnect). Then, with etcd down again, the agent is restarted:
/// it serves the last store revision it had, from its state directory
/// (1000 connections split 80/20, none failed), says it is disconnected,
/// and follows the store again once etcd returns.
#[test]
fn an_agent_restarted_while_etcd_is_down_serves_the_last_store_revision() {
    let mut fleet = Fleet::start("fleet-saved", 1);
    apply(&fleet, &BASE);
    let revision = apply(&fleet, &["examples/vs-20-v2.yaml"]);
    let store_gauge =
        |fleet: &Fleet, name: &str| try_metric(&fleet.nodes[0].agent.metrics(), name, &[]);
    let logs = |fleet: &Fleet| fleet.logs();

    fleet.etcd.stop_all();
    wait_for(
        "traffic_shift_store_connected 0 with etcd stopped",
        Duration::from_secs(20),
        || (store_gauge(&fleet, "traffic_shift_store_connected") == Some(0)).then_some(()),
        || logs(&fleet),
    );
    fleet.etcd.restart_all();
    wait_for(
        "traffic_shift_store_connected 1 and one reconnect once etcd is back",
        Duration::from_secs(30),
        || {
            (store_gauge(&fleet, "traffic_shift_store_connected") == Some(1)
                && store_gauge(&fleet, "traffic_shift_store_reconnects_total") == Some(1))
            .then_some(())
        },
        || logs(&fleet),
    );

    fleet.etcd.stop_all();
    fleet.restart_node(0);
    let node = &mut fleet.nodes[0];
    let status = node.agent.status_json();
    let rules = status["rules"].as_str().unwrap_or_default().to_owned();
    assert!(
        rules.ends_with(&format!("revision {revision} (disconnected)")),
        "the restarted agent's status: {rules}\n{}",
        node.agent.log_text()
    );
    let routes = status["routes"].as_array().map_or(0, Vec::len);
    assert_eq!(
        routes, 2,
        "the saved revision's routes (mesh and gateway) are in the agent's model, not only in the pinned maps: {status}"
    );
    let (one, two, errors) = node.client.burst_with_errors(SERVICE_V4, 1000);
    assert!(
        errors.is_empty(),
        "after the restart with etcd down: {errors:?}"
    );
    assert_eq!(
        (one, two),
        (800, 200),
        "the saved revision's 80/20 split, served with etcd down"
    );
    let page = node.agent.metrics();
    assert_eq!(metric(&page, "traffic_shift_store_connected", &[]), 0);
    assert_eq!(
        metric(&page, "traffic_shift_store_revision", &[]),
        u64::try_from(revision).expect("a revision is positive")
    );
    assert!(
        node.agent
            .log_text()
            .contains("serving the last store revision saved, until the store answers"),
        "{}",
        node.agent.log_text()
    );

    fleet.etcd.restart_all();
    let next = apply(&fleet, &["examples/vs-all-v2.yaml"]);
    let (one, two, errors) = fleet.nodes[0].client.burst_with_errors(SERVICE_V4, 1000);
    assert!(errors.is_empty(), "after etcd returned: {errors:?}");
    assert_eq!((one, two), (0, 1000), "revision {next}, all to v2");
    eprintln!(
        "restarted with etcd down: revision {revision} served from the state directory (1000 connections split 800/200); after etcd returned, revision {next} split {one}/{two}; 2000 connections, 0 failed"
    );
}
