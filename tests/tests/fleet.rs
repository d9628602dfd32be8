//! The fleet (issue 20): a real three-member etcd cluster on loopback and
//! agents that take their rules from it, each in its own network
//! namespace, cgroup, bpffs directory, state directory, admin socket and
//! metrics port. Needs root and Debian's etcd (`cargo xtask setup`).
//!
//! Every wait is for an event (a node's status in the store, a process
//! exit), never a sleep.

use std::{process::Stdio, time::Instant};

use traffic_shift_tests::{fleet::Fleet, repo_rules, tcp_echo_rule};

const SERVICE_V4: &str = "127.100.0.1:9000";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `committed to etcd://... at revision N` in `apply`'s standard error.
fn committed_revision(stderr: &str) -> i64 {
    stderr
        .lines()
        .find_map(|l| l.split(" at revision ").nth(1))
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("no committed revision in: {stderr}"))
}

/// `revision N in force on 3 nodes after M ms` in `apply --wait`'s standard error.
fn converged_ms(stderr: &str) -> u64 {
    stderr
        .lines()
        .find(|l| l.contains(" in force on "))
        .and_then(|l| l.split(" after ").nth(1))
        .and_then(|ms| ms.trim_end_matches(" ms").parse().ok())
        .unwrap_or_else(|| panic!("no convergence line in: {stderr}"))
}

/// Test 1 of the issue: the seed shift (all-v1, 80/20, all-v2) applied
/// once to the store; `apply --wait` returns when all three nodes have it
/// in force, and then every node splits 1000 connections exactly.
#[test]
fn seed_shift_through_the_store_splits_exactly_on_every_node() {
    let mut fleet = Fleet::start("fleet-shift", 3);
    let dir = repo_rules().join("tcp-echo");
    let path = |file: &str| dir.join(file).display().to_string();
    let steps = [
        ("examples/vs-all-v1.yaml", 1000, 0),
        ("examples/vs-20-v2.yaml", 800, 200),
        ("examples/vs-all-v2.yaml", 0, 1000),
    ];
    let mut revision = 0;
    for (i, (vs, one, two)) in steps.into_iter().enumerate() {
        let mut files = vec![path(vs)];
        if i == 0 {
            files.extend(
                [
                    "service-entry.yaml",
                    "destination-rule.yaml",
                    "gateway.yaml",
                ]
                .map(path),
            );
        }
        let mut args = vec!["apply"];
        for file in &files {
            args.extend(["-f", file.as_str()]);
        }
        args.extend(["--wait", "--timeout", "30s"]);
        let start = Instant::now();
        let out = fleet.ctl(&args);
        let elapsed = start.elapsed();
        let stderr = text(&out.stderr);
        assert!(
            out.status.success(),
            "apply {vs}: {stderr}{}\n{}",
            text(&out.stdout),
            fleet.logs()
        );
        revision = committed_revision(&stderr);
        let converged = converged_ms(&stderr);
        let mut attempted = 0;
        for (n, node) in fleet.nodes.iter_mut().enumerate() {
            let (got_one, got_two, errors) = node.client.burst_with_errors(SERVICE_V4, 1000);
            attempted += 1000;
            assert!(errors.is_empty(), "node-{n} after {vs}: errors {errors:?}");
            assert_eq!(
                (got_one, got_two),
                (one, two),
                "node-{n} after {vs}: split of 1000 connections"
            );
            eprintln!("node-{n} {vs}: one {got_one} two {got_two} of 1000, 0 failed");
        }
        eprintln!(
            "{vs}: revision {revision}, in force on 3 nodes {converged} ms after the commit (apply --wait returned after {} ms); {attempted} connections, 0 failed",
            elapsed.as_millis()
        );
    }
    // Each agent lists what it has from the store, with the key as the source.
    let wide = fleet.nodes[0].agent.ctl(&["get", "vs", "-o", "wide"]);
    let wide = text(&wide.stdout);
    assert!(
        wide.contains(&format!(
            "etcd:{}/resources/VirtualService/default/tcp-echo",
            fleet.prefix
        )),
        "get vs -o wide on node-0:\n{wide}"
    );
    let rows = fleet.nodes_table();
    assert_eq!(rows.len(), 3, "get nodes: {rows:?}");
    for row in &rows {
        assert_eq!(
            (row.revision, row.state.as_str()),
            (revision, "accepted"),
            "get nodes: {rows:?}"
        );
    }
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["node-0", "node-1", "node-2"]);
}

/// A VirtualService named `name` sending port 9000 of tcp-echo.local to `subset`.
fn virtual_service(name: &str, subset: &str) -> String {
    tcp_echo_rule("examples/vs-all-v1.yaml")
        .replace("name: tcp-echo\n", &format!("name: {name}\n"))
        .replace("subset: v1", &format!("subset: {subset}"))
}

/// Test 5 of the issue: two `apply` runs at once whose union is invalid
/// (two VirtualServices for one port): one commits, the other is refused
/// naming the conflict, and nothing of it is written. Several rounds, so
/// both orders (one checks after the other committed; both check the same
/// revision and the guard decides) are likely to happen.
#[test]
fn concurrent_applies_whose_union_is_invalid_one_commits_the_other_is_refused() {
    let fleet = Fleet::store_only("fleet-race");
    let dir = repo_rules().join("tcp-echo");
    let path = |file: &str| dir.join(file).display().to_string();
    let base = fleet.ctl(&[
        "apply",
        "-f",
        &path("service-entry.yaml"),
        "-f",
        &path("destination-rule.yaml"),
        "-f",
        &path("gateway.yaml"),
    ]);
    assert!(base.status.success(), "{}", text(&base.stderr));
    let tmp = std::env::temp_dir().join(traffic_shift_tests::unique_name("fleet-race-files"));
    std::fs::create_dir_all(&tmp).unwrap();
    let a = tmp.join("vs-a.yaml");
    let b = tmp.join("vs-b.yaml");
    std::fs::write(&a, virtual_service("tcp-echo-a", "v1")).unwrap();
    std::fs::write(&b, virtual_service("tcp-echo-b", "v2")).unwrap();
    let (a, b) = (a.display().to_string(), b.display().to_string());
    let rounds = 5;
    let mut guarded = 0;
    for round in 0..rounds {
        let spawn = |file: &str| {
            fleet
                .command(&["apply", "-f", file])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn apply")
        };
        let (first, second) = (spawn(&a), spawn(&b));
        let outs = [
            (
                "tcp-echo-a",
                "tcp-echo-b",
                first.wait_with_output().unwrap(),
            ),
            (
                "tcp-echo-b",
                "tcp-echo-a",
                second.wait_with_output().unwrap(),
            ),
        ];
        let winners: Vec<_> = outs.iter().filter(|o| o.2.status.success()).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one apply commits: {:?}",
            outs.iter()
                .map(|o| (o.0, o.2.status, text(&o.2.stderr)))
                .collect::<Vec<_>>()
        );
        let (winner, _, _) = winners[0];
        let (loser, _, out) = outs.iter().find(|o| !o.2.status.success()).unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{loser}: {stderr}");
        assert!(
            stderr.contains("is already routed by") && stderr.contains(winner),
            "round {round}: {loser} is refused naming the conflict with {winner}:\n{stderr}"
        );
        assert!(
            stderr.contains("apply refused, nothing changed"),
            "{stderr}"
        );
        if stderr.contains("the store changed while this apply was checked") {
            guarded += 1;
        }
        // The store holds the winner's only.
        let names = fleet.ctl(&["get", "vs", "-o", "name"]);
        assert_eq!(
            text(&names.stdout),
            format!("virtualservice/{winner}\n"),
            "round {round}"
        );
        let winner_file = if *winner == "tcp-echo-a" { &a } else { &b };
        let delete = fleet.ctl(&["delete", "-f", winner_file]);
        assert!(delete.status.success(), "{}", text(&delete.stderr));
    }
    eprintln!(
        "{rounds} rounds of two concurrent applies: {rounds} committed, {rounds} refused naming the conflict; {guarded} of the refusals came after losing the guarded commit (the rest checked after the other had committed)"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The guard itself, through the store's client: a commit checked
/// against a revision that is no longer the resources' last writes
/// nothing and says so; a watch from before sees the winner's commit as
/// one batch at its revision.
#[test]
fn a_commit_checked_against_an_old_revision_writes_nothing() {
    use traffic_shift_store::{ResourceKey, Store, StoreError, Write};

    let fleet = Fleet::store_only("fleet-guard");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = fleet.etcd.url().parse().unwrap();
        let store = Store::connect(
            &url,
            &fleet.prefix,
            &traffic_shift_store::TlsFiles::default(),
        )
        .await
        .unwrap();
        let key = |name: &str| ResourceKey {
            kind: "VirtualService".into(),
            namespace: "default".into(),
            name: name.into(),
        };
        let listing = store.list().await.unwrap();
        assert_eq!(listing.revision, 0, "a new prefix was never written");
        let mut watch = store.watch(listing.read_at + 1).await.unwrap();
        let first = store
            .commit(
                listing.revision,
                &[Write::Put(key("a"), "{}".into())],
                "test",
            )
            .await
            .unwrap();
        let err = store
            .commit(
                listing.revision,
                &[Write::Put(key("b"), "{}".into())],
                "test",
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { checked: 0, now } if now == first),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("another writer committed first; nothing was written"),
            "{err}"
        );
        let after = store.list().await.unwrap();
        assert_eq!(after.revision, first);
        assert_eq!(
            after.resources.keys().cloned().collect::<Vec<_>>(),
            [key("a")]
        );
        let batch = watch.next().await.unwrap();
        assert_eq!(batch.revision, first);
        assert_eq!(batch.changes, [(key("a"), Some("{}".to_owned()))]);
    });
}

/// `apply -f FILE...` (with `--wait --timeout 60s` when `wait`) through
/// the store; asserts it succeeded; its standard error.
fn apply(fleet: &Fleet, files: &[String], wait: bool) -> String {
    let mut args = vec!["apply"];
    for file in files {
        args.extend(["-f", file.as_str()]);
    }
    if wait {
        args.extend(["--wait", "--timeout", "60s"]);
    }
    let out = fleet.ctl(&args);
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "apply {files:?}: {stderr}{}\n{}",
        text(&out.stdout),
        fleet.logs()
    );
    stderr
}

/// A shipped tcp-echo file's path.
fn tcp_echo_path(file: &str) -> String {
    repo_rules()
        .join("tcp-echo")
        .join(file)
        .display()
        .to_string()
}

/// The shipped ServiceEntry, DestinationRule and Gateway, and `vs`.
fn base_files(vs: &str) -> Vec<String> {
    [
        "service-entry.yaml",
        "destination-rule.yaml",
        "gateway.yaml",
        vs,
    ]
    .map(tcp_echo_path)
    .to_vec()
}

/// Connections opened on every node, one every 2 ms (a steady load that
/// leaves the two CPUs to etcd and the agents), until [`Load::stop`].
struct Load {
    started: Instant,
}

/// What one node's connections did.
#[derive(Debug)]
struct Made {
    /// How long the load ran.
    seconds: f64,
    attempted: usize,
    failed: usize,
    /// Connections that started inside [from, to) (see [`Made::within`]).
    one: usize,
    two: usize,
    /// The first few errors, for the failure message.
    errors: Vec<String>,
    connections: Vec<traffic_shift_tests::Streamed>,
}

impl Made {
    /// How many connections started in `[from_ns, to_ns)` and were answered
    /// by `word` (`one`, `two`), or by either with `None`.
    fn within(&self, from_ns: u64, to_ns: u64, word: Option<&str>) -> usize {
        self.connections
            .iter()
            .filter(|c| c.start_ns >= from_ns && c.start_ns < to_ns)
            .filter(|c| match word {
                Some(word) => c.answer.as_deref() == Ok(word),
                None => c.answer.is_ok(),
            })
            .count()
    }
}

impl Load {
    fn start(fleet: &mut Fleet) -> Self {
        for node in &mut fleet.nodes {
            node.client.stream_start_paced(SERVICE_V4, 2);
        }
        Self {
            started: Instant::now(),
        }
    }

    /// Every node's connections, in node order.
    fn stop(self, fleet: &mut Fleet) -> Vec<Made> {
        let seconds = self.started.elapsed().as_secs_f64();
        fleet
            .nodes
            .iter_mut()
            .map(|node| {
                let connections = node.client.stream_stop();
                let answered = |word: &str| {
                    connections
                        .iter()
                        .filter(|c| c.answer.as_deref() == Ok(word))
                        .count()
                };
                let errors: Vec<String> = connections
                    .iter()
                    .filter_map(|c| c.answer.as_ref().err().cloned())
                    .collect();
                Made {
                    seconds,
                    attempted: connections.len(),
                    failed: errors.len(),
                    one: answered("one"),
                    two: answered("two"),
                    errors: errors.into_iter().take(5).collect(),
                    connections,
                }
            })
            .collect()
    }
}

/// Waits (up to `secs`) until every node's status over its admin socket
/// says whether the store is disconnected as `disconnected` says; how long
/// it took.
fn wait_disconnected(fleet: &Fleet, nodes: &[usize], disconnected: bool, secs: u64) -> u128 {
    let start = Instant::now();
    let deadline = start + std::time::Duration::from_secs(secs);
    for &n in nodes {
        loop {
            let status = fleet.nodes[n].agent.status_json();
            let says = status["rules"]
                .as_str()
                .is_some_and(|r| r.contains("(disconnected)"));
            if says == disconnected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node-{n}'s status never said disconnected={disconnected} in {secs} s: {status}\n{}",
                fleet.logs()
            );
            // Polling the status, as wait_nodes polls the store.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    start.elapsed().as_millis()
}

/// Waits (up to 60 s) until every node in `get nodes` has `revision` in
/// force (and `n` nodes report); how long it took.
fn wait_revision(fleet: &Fleet, n: usize, revision: i64) -> u128 {
    let start = Instant::now();
    let deadline = start + std::time::Duration::from_mins(1);
    loop {
        let rows = fleet.nodes_table();
        if rows.len() == n
            && rows
                .iter()
                .all(|r| r.revision == revision && r.state == "accepted")
        {
            return start.elapsed().as_millis();
        }
        assert!(
            Instant::now() < deadline,
            "not every node reached revision {revision} in 60 s: {rows:?}\n{}",
            fleet.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Test 3 of the issue: every etcd member stopped for 20 s with the rules
/// unchanged, under connections opened continuously on all three nodes:
/// none fails, every node's status says disconnected; a change made right
/// after etcd returns reaches every node (each agent resumes its watch
/// once its backoff lets it) and splits exactly.
#[test]
fn with_etcd_down_the_nodes_keep_their_rules_and_converge_when_etcd_returns() {
    /// How long etcd stays down: the outage itself, the test's parameter.
    const OUTAGE: std::time::Duration = std::time::Duration::from_secs(20);
    let mut fleet = Fleet::start("fleet-outage", 3);
    apply(&fleet, &base_files("examples/vs-all-v1.yaml"), true);
    let load = Load::start(&mut fleet);
    let stopped_ns = traffic_shift_tests::monotonic_ns();
    let stopped = Instant::now();
    fleet.etcd.stop_all();
    wait_disconnected(&fleet, &[0, 1, 2], true, 30);
    let said = stopped.elapsed().as_millis();
    // The outage lasts OUTAGE: nothing to wait for but the time itself.
    if let Some(rest) = OUTAGE.checked_sub(stopped.elapsed()) {
        std::thread::sleep(rest);
    }
    for (n, node) in fleet.nodes.iter().enumerate() {
        let status = node.agent.status_json();
        assert!(
            status["rules"]
                .as_str()
                .is_some_and(|r| r.contains("(disconnected)")),
            "node-{n} still says disconnected at the end of the outage: {status}"
        );
    }
    fleet.etcd.restart_all();
    let returned_ns = traffic_shift_tests::monotonic_ns();
    let outage = stopped.elapsed();
    let stderr = apply(&fleet, &[tcp_echo_path("examples/vs-20-v2.yaml")], true);
    let revision = committed_revision(&stderr);
    let converged = converged_ms(&stderr);
    // The follower's backoff is at most 5 s, and the reporter's first
    // write that goes through cuts it short; 15 s leaves room for a loaded
    // two-core machine.
    assert!(
        converged <= 15_000,
        "the change took {converged} ms to reach every node after etcd returned"
    );
    let reconnected = wait_disconnected(&fleet, &[0, 1, 2], false, 30);
    let made = load.stop(&mut fleet);
    for (n, m) in made.iter().enumerate() {
        let during = m.within(stopped_ns, returned_ns, None);
        println!(
            "node-{n}: {} connections attempted in {:.1} s, {} failed ({} while etcd was down); one {} two {}",
            m.attempted, m.seconds, m.failed, during, m.one, m.two
        );
        assert_eq!(m.failed, 0, "node-{n}: failed connections: {:?}", m.errors);
        // The load ran through the outage: at least one connection a
        // second (one every 2 ms is asked for).
        assert!(
            during as u128 >= outage.as_millis() / 1000,
            "node-{n}: only {during} connections during the {outage:?} outage"
        );
        assert_eq!(
            m.within(0, returned_ns, Some("two")),
            0,
            "node-{n}: all on v1 until the change"
        );
    }
    for (n, node) in fleet.nodes.iter_mut().enumerate() {
        let (one, two, errors) = node.client.burst_with_errors(SERVICE_V4, 1000);
        assert!(
            errors.is_empty(),
            "node-{n} after etcd returned: {errors:?}"
        );
        assert_eq!(
            (one, two),
            (800, 200),
            "node-{n}: the change made after etcd returned"
        );
    }
    let attempted: usize = made.iter().map(|m| m.attempted).sum();
    println!(
        "etcd down {:.1} s (all 3 members); every node said disconnected within {said} ms of the stop (stopping 3 members included); {attempted} connections on 3 nodes, 0 failed; revision {revision} (80/20) committed right after etcd returned, in force on 3 nodes {converged} ms after the commit; statuses connected again {reconnected} ms after; 3 x 1000 connections split 800/200, 0 failed",
        outage.as_secs_f64()
    );
}

/// A VirtualService `tcp-echo` sending `100 - two` percent to v1 and `two`
/// percent to v2.
fn weighted(two: u32) -> String {
    tcp_echo_rule("examples/vs-20-v2.yaml")
        .replace("weight: 80", &format!("weight: {}", 100 - two))
        .replace("weight: 20", &format!("weight: {two}"))
}

/// Test 2 of the issue: twenty weight changes, each applied through the
/// store and waited for, under connections opened continuously on all
/// three nodes, with etcd's leader killed (SIGKILL) after the tenth: no
/// connection fails, every apply goes in (the CLI tries the members left),
/// and every node ends at the final revision with the final weights in
/// force (1000 connections split exactly).
#[test]
fn twenty_weight_changes_while_the_etcd_leader_is_killed() {
    let mut fleet = Fleet::start("fleet-leader", 3);
    apply(&fleet, &base_files("examples/vs-all-v1.yaml"), true);
    let tmp = std::env::temp_dir().join(traffic_shift_tests::unique_name("fleet-leader-files"));
    std::fs::create_dir_all(&tmp).unwrap();
    // v2 gets 5%, 10%, ... 95%, then 35% last: 65/35, 13 of 20 slots,
    // so 1000 connections split 650/350 wherever the sequence stands.
    let weights: Vec<u32> = (1..=19).map(|i| i * 5).chain([35]).collect();
    let load = Load::start(&mut fleet);
    let mut killed = None;
    let mut revision = 0;
    let mut times = Vec::new();
    for (i, two) in weights.iter().enumerate() {
        if i == 10 {
            let leader = fleet.etcd.leader();
            fleet.etcd.kill(leader);
            killed = Some((leader, Instant::now()));
        }
        let file = tmp.join(format!("vs-{i}.yaml"));
        std::fs::write(&file, weighted(*two)).unwrap();
        let start = Instant::now();
        let stderr = apply(&fleet, &[file.display().to_string()], true);
        if i == 10 {
            println!("apply 11, right after the kill:\n{}", stderr.trim_end());
        }
        let next = committed_revision(&stderr);
        assert!(next > revision, "revisions go up: {revision} then {next}");
        revision = next;
        times.push((start.elapsed().as_millis(), converged_ms(&stderr)));
    }
    let (leader, killed_at) = killed.expect("the leader was killed");
    let final_ms = wait_revision(&fleet, 3, revision);
    let after_kill = killed_at.elapsed();
    let made = load.stop(&mut fleet);
    for (n, m) in made.iter().enumerate() {
        println!(
            "node-{n}: {} connections attempted in {:.1} s, {} failed; one {} two {}",
            m.attempted, m.seconds, m.failed, m.one, m.two
        );
        assert_eq!(m.failed, 0, "node-{n}: failed connections: {:?}", m.errors);
        assert!(m.one > 0 && m.two > 0, "node-{n}: both versions answered");
    }
    for (n, node) in fleet.nodes.iter_mut().enumerate() {
        let (one, two, errors) = node.client.burst_with_errors(SERVICE_V4, 1000);
        assert!(errors.is_empty(), "node-{n}: errors {errors:?}");
        assert_eq!((one, two), (650, 350), "node-{n}: the final weights, 65/35");
    }
    let attempted: usize = made.iter().map(|m| m.attempted).sum();
    println!(
        "20 applies (ms until apply --wait returned, ms from commit to in force on 3 nodes): {times:?}; member m{leader} (the leader) killed before apply 11; final revision {revision} on every node ({final_ms} ms after the last apply returned; {:.1} s after the kill); {attempted} connections on 3 nodes, 0 failed; 3 x 1000 connections split 650/350",
        after_kill.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Test 4 of the issue: node-0 is cut off from etcd (its own forwarder
/// closes every connection) while the VirtualService, the Gateway and the
/// DestinationRule are deleted and etcd compacts its history past them;
/// the cut lasts until node-0's lease expired. Healed, node-0 reports
/// again under a new lease, finds its watch compacted and lists again,
/// and has none of the deleted routes: connections to the service address
/// are no longer steered (nothing listens there: refused).
#[test]
fn a_node_cut_off_while_routes_are_deleted_and_etcd_compacted_converges() {
    let mut fleet = Fleet::start_forwarded("fleet-cut", 2);
    apply(&fleet, &base_files("examples/vs-all-v1.yaml"), true);
    let (one, two, errors) = fleet.nodes[0].client.burst_with_errors(SERVICE_V4, 100);
    assert_eq!((one, two, errors.len()), (100, 0, 0), "{errors:?}");

    fleet.forwarders[0].cut();
    let cut = Instant::now();
    wait_disconnected(&fleet, &[0], true, 30);
    let said = cut.elapsed().as_millis();
    let delete = fleet.ctl(&[
        "delete",
        "-f",
        &tcp_echo_path("examples/vs-all-v1.yaml"),
        "-f",
        &tcp_echo_path("gateway.yaml"),
        "-f",
        &tcp_echo_path("destination-rule.yaml"),
    ]);
    let stderr = text(&delete.stderr);
    assert!(delete.status.success(), "delete: {stderr}");
    let deleted = committed_revision(&stderr);
    // node-1 is not cut: it has the deletion.
    let deadline = Instant::now() + std::time::Duration::from_mins(1);
    while !fleet
        .nodes_table()
        .iter()
        .any(|r| r.name == "node-1" && r.revision == deleted)
    {
        assert!(
            Instant::now() < deadline,
            "node-1 never had revision {deleted}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let compacted = fleet.etcd.revision();
    fleet.etcd.compact(compacted);
    // Cut off, node-0 keeps steering with what it had.
    let (one, two, errors) = fleet.nodes[0].client.burst_with_errors(SERVICE_V4, 100);
    assert_eq!(
        (one, two, errors.len()),
        (100, 0, 0),
        "node-0 keeps its rules while cut off: {errors:?}"
    );
    // Until its lease expired: node-0 drops out of `get nodes`.
    let deadline = Instant::now() + std::time::Duration::from_mins(1);
    while fleet.nodes_table().iter().any(|r| r.name == "node-0") {
        assert!(
            Instant::now() < deadline,
            "node-0 never dropped out of get nodes: {:?}",
            fleet.nodes_table()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let lease_gone = cut.elapsed();
    let log_before = fleet.nodes[0].agent.log_text().len();
    fleet.forwarders[0].heal();
    let healed = Instant::now();
    let refused = fleet.forwarders[0].refused();
    // node-0 reports again (a new lease) at the deletion's revision.
    let back_ms = wait_revision(&fleet, 2, deleted);
    let reconnected = wait_disconnected(&fleet, &[0], false, 30);
    let log = fleet.nodes[0].agent.log_text();
    let after = &log[log_before..];
    assert!(
        after.contains("compacted its history past revision") && after.contains("listed the store"),
        "node-0 lists again after finding its watch compacted:\n{after}"
    );
    let get = |kind: &str| {
        text(
            &fleet.nodes[0]
                .agent
                .ctl(&["get", kind, "-o", "name"])
                .stdout,
        )
    };
    assert_eq!(get("virtualservices"), "", "no VirtualService on node-0");
    assert_eq!(get("gateways"), "", "no Gateway on node-0");
    assert_eq!(get("destinationrules"), "", "no DestinationRule on node-0");
    assert_eq!(
        get("serviceentries"),
        "serviceentry/tcp-echo\n",
        "the ServiceEntry stays"
    );
    let status = fleet.nodes[0].agent.status_json();
    let (one, two, errors) = fleet.nodes[0].client.burst_with_errors(SERVICE_V4, 100);
    assert_eq!(
        (one, two, errors.len()),
        (0, 0, 100),
        "with no route, connections to {SERVICE_V4} are not steered: {errors:?}\n{status}"
    );
    assert!(
        errors.iter().all(|e| e.contains("refused")),
        "nothing listens at {SERVICE_V4}: {errors:?}"
    );
    println!(
        "node-0 cut off: said disconnected after {said} ms; VirtualService, Gateway, DestinationRule deleted at revision {deleted}, etcd compacted at {compacted}; node-0's lease gone {:.1} s after the cut ({refused} connections to etcd closed meanwhile); healed after {:.1} s: node-0 at revision {deleted} {back_ms} ms later, status connected {reconnected} ms after that, no deleted route, 100 connections to {SERVICE_V4} refused",
        lease_gone.as_secs_f64(),
        healed.duration_since(cut).as_secs_f64()
    );
}

/// `traffic-shift get nodes --store URL ARGS`: its exit code and standard error.
fn get_nodes(url: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(traffic_shift_tests::traffic_shift_bin())
        .args(["get", "nodes", "--store", url])
        .args(args)
        .output()
        .expect("run traffic-shift");
    (out.status.code(), text(&out.stderr))
}

/// Test 6 of the issue: an etcd that requires client certificates. An
/// agent with the CA, certificate and key connects and puts a rule in
/// force; without a client certificate, or with one from another CA, etcd
/// refuses and the CLI says so in one line naming the flags to fix.
#[test]
fn tls_etcd_requires_a_client_certificate() {
    use traffic_shift_tests::etcd::{EtcdCluster, Tls};

    traffic_shift_tests::require_root();
    let dir = std::env::temp_dir().join(traffic_shift_tests::unique_name("fleet-tls-certs"));
    let tls = Tls::generate(&dir);
    let etcd = EtcdCluster::start_with("fleet-tls", 1, Some(tls.clone()));
    let url = etcd.url();
    assert!(url.starts_with("etcds://"), "{url}");
    let mut fleet = Fleet::start_on("fleet-tls", 1, etcd);

    let dir_rules = repo_rules().join("tcp-echo");
    let files: Vec<String> = [
        "service-entry.yaml",
        "destination-rule.yaml",
        "gateway.yaml",
        "examples/vs-20-v2.yaml",
    ]
    .iter()
    .map(|f| dir_rules.join(f).display().to_string())
    .collect();
    let mut args = vec!["apply"];
    for file in &files {
        args.extend(["-f", file.as_str()]);
    }
    args.extend(["--wait", "--timeout", "30s"]);
    let out = fleet.ctl(&args);
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "apply over TLS: {stderr}\n{}",
        fleet.logs()
    );
    let revision = committed_revision(&stderr);
    let (one, two, errors) = fleet.nodes[0].client.burst_with_errors(SERVICE_V4, 1000);
    assert!(errors.is_empty(), "errors {errors:?}");
    assert_eq!((one, two), (800, 200), "split of 1000 connections over TLS");
    eprintln!(
        "over TLS: revision {revision} in force on node-0; one {one} two {two} of 1000, 0 failed"
    );

    let ca = tls.ca.display().to_string();
    let stranger_cert = tls.stranger_cert.display().to_string();
    let stranger_key = tls.stranger_key.display().to_string();
    let refused: [(&str, Vec<&str>); 2] = [
        ("no client certificate", vec!["--store-ca", &ca]),
        (
            "a client certificate from another CA",
            vec![
                "--store-ca",
                &ca,
                "--store-cert",
                &stranger_cert,
                "--store-key",
                &stranger_key,
            ],
        ),
    ];
    for (what, args) in refused {
        let (code, stderr) = get_nodes(&url, &args);
        eprintln!(
            "get nodes with {what}: exit {code:?}: {}",
            stderr.trim_end()
        );
        assert_eq!(code, Some(3), "get nodes with {what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line with {what}: {stderr}");
        assert!(
            stderr.starts_with("error: TLS with etcd at ")
                && stderr.contains("certificate")
                && stderr.contains("--store-cert and --store-key"),
            "get nodes with {what}: {stderr}"
        );
    }
    // A file that cannot be read is named with its flag.
    let (code, stderr) = get_nodes(
        &url,
        &[
            "--store-ca",
            &ca,
            "--store-cert",
            "/nonexistent/client.pem",
            "--store-key",
            &ca,
        ],
    );
    eprintln!(
        "get nodes with a missing file: exit {code:?}: {}",
        stderr.trim_end()
    );
    assert_ne!(code, Some(0));
    assert_eq!(
        stderr.trim_end(),
        "error: cannot read --store-cert file /nonexistent/client.pem: No such file or directory (os error 2)"
    );
    agent_without_a_client_certificate_says_why(&url, &fleet.prefix, &ca);
    // The node still reports the revision, over TLS.
    let rows = fleet.nodes_table();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].revision, rows[0].state.as_str()),
        (revision, "accepted")
    );
    drop(fleet);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An agent with the CA but no client certificate: etcd refuses it, and
/// it says so once, in one line naming the flags to fix.
fn agent_without_a_client_certificate_says_why(url: &str, prefix: &str, ca: &str) {
    let stranger = traffic_shift_tests::Scenario::tcp_echo_backends(
        "fleet-tls-stranger",
        &[
            "--store",
            url,
            "--store-prefix",
            prefix,
            "--node",
            "stranger",
            "--store-ca",
            ca,
        ],
    );
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    let line = loop {
        let log = stranger.agent.log_text();
        if let Some(line) = log.lines().find(|l| l.contains("cannot use the store")) {
            break line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the agent without a client certificate never said why:\n{log}"
        );
        // Polling the agent's log for the line, as wait_nodes polls etcd.
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    eprintln!("agent without a client certificate: {line}");
    assert!(
        line.contains("TLS with etcd at ") && line.contains("--store-cert and --store-key"),
        "{line}"
    );
    drop(stranger);
}

/// `ss -Hltn` in `netns`: the listening TCP sockets on `port`, one line each.
fn listening_on(netns: &str, port: u16) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", netns, "ss", "-Hltn"])
        .output()
        .expect("run ss");
    assert!(out.status.success(), "ss: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(3)
                .is_some_and(|local| local.ends_with(&format!(":{port}")))
        })
        .map(str::to_owned)
        .collect()
}

/// `node` does not serve the seed's Gateway: its status says so, its kernel
/// has the mesh route only, nothing listens on 31400 and 200 connections
/// to `gateway` are all refused.
fn assert_not_served(node: &traffic_shift_tests::Scenario, gateway: &str) {
    // The status file follows the node's report to the store at once.
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let status = loop {
        let status = node.agent.status_json();
        if status.get("gateways_not_served").is_some() || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(
        status["gateways_not_served"],
        serde_json::json!([
            "gateway default/tcp-echo-gateway: not served here (selector istio=ingressgateway does not match node labels zone=b)"
        ]),
        "{status}"
    );
    let kernel_routes = status["kernel_routes"].to_string();
    assert!(
        !kernel_routes.contains("gateway") && kernel_routes.contains("port 9000"),
        "the kernel routes: the mesh route only: {kernel_routes}"
    );
    assert_eq!(
        listening_on(&node.netns.name, 31400),
        Vec::<String>::new(),
        "nothing listens on 31400"
    );
    let mut remote = traffic_shift_tests::RemoteClient::start(&node.netns);
    let (one, two, errors) = remote.client.burst_with_errors(gateway, 200);
    assert_eq!((one, two, errors.len()), (0, 0, 200), "{errors:?}");
    assert!(
        errors.iter().all(|e| e.to_lowercase().contains("refused")),
        "31400 is refused at once: {errors:?}"
    );
    eprintln!("node-1 31400: 200 of 200 refused (not served there)");
}

/// Test 7 of the issue: which node serves what. Two nodes with different
/// labels; the seed's Gateway (port 31400, `selector: {istio:
/// ingressgateway}`) selects node-0 only. Connections to 31400 are served
/// on node-0 and refused on node-1, where no socket is bound and no gateway
/// route is in the kernel; the mesh route (the connect-time path) works on
/// both.
#[test]
fn a_gateway_is_served_only_on_the_nodes_its_selector_picks() {
    let etcd = traffic_shift_tests::etcd::EtcdCluster::start("fleet-labels", 3);
    let mut fleet = Fleet::start_nodes(
        "fleet-labels",
        etcd,
        &[
            &["--node-labels", "istio=ingressgateway,zone=a"],
            &["--node-labels", "zone=b"],
        ],
    );
    let dir = repo_rules().join("tcp-echo");
    let path = |file: &str| dir.join(file).display().to_string();
    let files = [
        "service-entry.yaml",
        "destination-rule.yaml",
        "gateway.yaml",
        "examples/vs-all-v1.yaml",
    ]
    .map(path);
    let mut args = vec!["apply"];
    for file in &files {
        args.extend(["-f", file.as_str()]);
    }
    args.extend(["--wait", "--timeout", "30s"]);
    let out = fleet.ctl(&args);
    assert!(
        out.status.success(),
        "apply: {}{}\n{}",
        text(&out.stderr),
        text(&out.stdout),
        fleet.logs()
    );
    let gateway = format!("{}:31400", traffic_shift_tests::NODE_ADDR);

    // node-0: the selector matches; every connection is served by v1.
    let mut remote = traffic_shift_tests::RemoteClient::start(&fleet.nodes[0].netns);
    let (one, two, errors) = remote.client.burst_with_errors(&gateway, 200);
    assert_eq!(
        (one, two, errors.len()),
        (200, 0, 0),
        "node-0 serves 31400: {errors:?}\n{}",
        fleet.logs()
    );
    eprintln!("node-0 31400: one {one} two {two} of 200, 0 failed");
    drop(remote);

    // node-1: not selected.
    assert_not_served(&fleet.nodes[1], &gateway);
    // node-0 has the gateway route in the kernel (sk_lookup hands the
    // connections to the backend's socket: no socket on 31400 there either).
    let status = fleet.nodes[0].agent.status_json();
    assert!(
        status["kernel_routes"]
            .to_string()
            .contains("gateway default/tcp-echo-gateway port 31400"),
        "{status}"
    );
    assert!(status.get("gateways_not_served").is_none(), "{status}");

    // Mesh routes apply on every node.
    for (n, node) in fleet.nodes.iter_mut().enumerate() {
        let (one, two, errors) = node.client.burst_with_errors(SERVICE_V4, 200);
        assert_eq!(
            (one, two, errors.len()),
            (200, 0, 0),
            "node-{n} mesh: {errors:?}"
        );
        eprintln!("node-{n} mesh {SERVICE_V4}: one {one} of 200, 0 failed");
    }

    // Each node reports its labels: `get nodes -o wide`.
    let out = fleet.ctl(&["get", "nodes", "-o", "wide"]);
    let table = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let labels: Vec<&str> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(
        labels,
        ["istio=ingressgateway,zone=a", "zone=b"],
        "get nodes -o wide:\n{table}"
    );
}

/// The convergence bench's two sides (`fleet simulate`, `fleet converge`,
/// hidden commands): three simulated nodes in one process follow the store
/// and report each revision in force (the agent's own follower, compile
/// step and reporter, without a datapath); `apply --wait` (its watch on
/// the nodes) returns once all three have a change; `fleet converge`
/// measures two more.
#[test]
fn simulated_nodes_report_the_store_revision_in_force() {
    use traffic_shift_tests::Process;

    let fleet = Fleet::store_only("fleet-simulate");
    let dir = repo_rules().join("tcp-echo");
    let path = |file: &str| dir.join(file).display().to_string();
    let apply = |files: &[&str]| {
        let mut args = vec!["apply".to_owned()];
        for file in files {
            args.extend(["-f".to_owned(), path(file)]);
        }
        args.extend(["--wait", "--timeout", "30s"].map(str::to_owned));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = fleet.ctl(&args);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "apply {files:?}: {stderr}");
        stderr
    };
    let first = committed_revision(&apply(&[
        "service-entry.yaml",
        "destination-rule.yaml",
        "gateway.yaml",
        "examples/vs-all-v1.yaml",
    ]));
    let mut simulate =
        fleet.command(&["fleet", "simulate", "--nodes", "3", "--name-prefix", "sim-"]);
    let _simulator = Process {
        child: simulate
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn fleet simulate"),
        what: "fleet simulate".into(),
    };
    let rows = fleet.wait_nodes(3);
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["sim-0", "sim-1", "sim-2"]);
    assert!(rows.iter().all(|r| r.revision == first), "{rows:?}");

    let stderr = apply(&["examples/vs-20-v2.yaml"]);
    let second = committed_revision(&stderr);
    assert!(
        stderr.contains(&format!("revision {second} in force on 3 nodes")),
        "apply --wait: {stderr}"
    );
    let rows = fleet.nodes_table();
    assert!(
        rows.iter()
            .all(|r| r.revision == second && r.state == "accepted"),
        "get nodes after the change: {rows:?}"
    );

    let out = fleet.ctl(&[
        "fleet",
        "converge",
        "--nodes",
        "3",
        "--changes",
        "2",
        "--idle",
        "1s",
        "-f",
        &path("examples/vs-all-v2.yaml"),
        "-f",
        &path("examples/vs-20-v2.yaml"),
    ]);
    assert!(
        out.status.success(),
        "fleet converge: {}",
        text(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("converge's JSON");
    let changes = report["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 2, "{report}");
    for change in changes {
        assert!(change["revision"].as_i64() > Some(second), "{report}");
        let (median, last) = (
            change["median_node_ms"].as_f64().unwrap(),
            change["last_node_ms"].as_f64().unwrap(),
        );
        assert!(0.0 <= median && median <= last, "{report}");
    }
    eprintln!("fleet converge, 3 simulated nodes: {report}");
}
