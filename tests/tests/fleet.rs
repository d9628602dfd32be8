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

/// The basic outage of this slice: every etcd member stopped, the node
/// keeps steering with the rules in force and says it is disconnected;
/// once etcd is back, a change made there reaches the node (the agent
/// listed again after its backoff).
#[test]
fn with_etcd_down_the_node_keeps_its_rules_and_converges_when_etcd_returns() {
    let mut fleet = Fleet::start("fleet-outage", 1);
    let dir = repo_rules().join("tcp-echo");
    let path = |file: &str| dir.join(file).display().to_string();
    let apply = |fleet: &Fleet, files: &[String]| {
        let mut args = vec!["apply"];
        for file in files {
            args.extend(["-f", file.as_str()]);
        }
        args.extend(["--wait", "--timeout", "30s"]);
        let out = fleet.ctl(&args);
        assert!(
            out.status.success(),
            "apply: {}\n{}",
            text(&out.stderr),
            fleet.logs()
        );
        converged_ms(&text(&out.stderr))
    };
    apply(
        &fleet,
        &[
            "service-entry.yaml",
            "destination-rule.yaml",
            "gateway.yaml",
            "examples/vs-all-v1.yaml",
        ]
        .map(path),
    );
    fleet.etcd.stop_all();
    let node = &fleet.nodes[0];
    let deadline = Instant::now() + std::time::Duration::from_secs(15);
    while !node.agent.status_json()["rules"]
        .as_str()
        .is_some_and(|r| r.contains("(disconnected)"))
    {
        assert!(
            Instant::now() < deadline,
            "the status never said disconnected: {}\n{}",
            node.agent.status_json(),
            fleet.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (one, two, errors) = fleet.nodes[0].client.burst_with_errors(SERVICE_V4, 1000);
    assert!(errors.is_empty(), "with etcd down: {errors:?}");
    assert_eq!((one, two), (1000, 0), "the rules in force stay");
    fleet.etcd.restart_all();
    let returned = Instant::now();
    let converged = apply(&fleet, &[path("examples/vs-20-v2.yaml")]);
    let (one, two, errors) = fleet.nodes[0].client.burst_with_errors(SERVICE_V4, 1000);
    assert!(errors.is_empty(), "after etcd returned: {errors:?}");
    assert_eq!(
        (one, two),
        (800, 200),
        "the change made after etcd returned"
    );
    eprintln!(
        "etcd down: 1000 connections, 0 failed, all to v1; after it returned: 80/20 in force {} ms after etcd answered ({converged} ms after the commit), 1000 connections split 800/200, 0 failed",
        returned.elapsed().as_millis()
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
