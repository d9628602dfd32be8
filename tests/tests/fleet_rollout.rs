//! Rollouts in a fleet (issue 16, test 8): three agents on a real etcd
//! (three members), one drives the rollout under its lease, every node
//! steers by the states the driver writes to the store; the driver killed
//! with -9 mid-rollout, another takes over at the same step; the analysis
//! sums every node's counters; a driver cut off from etcd stops driving,
//! every node keeping the weights it has in force. Real connections through
//! each node's connect-time path; every wait polls the state it waits for.

use std::time::{Duration, Instant};

use traffic_shift_agent::rollout::{Outcome, Phase};
use traffic_shift_tests::{
    SERVICE_V4,
    fleet::Fleet,
    repo_rules,
    rollout::{tcp_echo_rollout, weights},
};

const NAME: &str = "default/tcp-echo";
/// Long enough for any step on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(30);
/// The driver's lease (`traffic_shift_store::LEADER_TTL`).
const LEADER_TTL: Duration = Duration::from_secs(5);
/// Stated slack over the lease for a takeover: the survivors see the key
/// deleted (a watch event), one campaigns (a transaction), reads the states
/// and writes the next step; plus the 20 ms poll of this test.
const TAKEOVER_SLACK: Duration = Duration::from_secs(3);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `apply -f FILES --wait` on the store.
fn apply(fleet: &Fleet, paths: &[String]) {
    let mut args = vec!["apply"];
    for path in paths {
        args.extend(["-f", path.as_str()]);
    }
    args.extend(["--wait", "--timeout", "30s"]);
    let out = fleet.ctl(&args);
    assert!(
        out.status.success(),
        "apply {paths:?}: {}\n{}",
        text(&out.stderr),
        fleet.logs()
    );
}

fn tcp_echo(files: &[&str]) -> Vec<String> {
    let dir = repo_rules().join("tcp-echo");
    files
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect()
}

/// A Rollout of tcp-echo's `tcp[0]`, v1 to v2, written to a file to apply.
fn rollout_file(test: &str, steps: &str) -> String {
    let path = std::env::temp_dir().join(format!("{test}-rollout.yaml"));
    std::fs::write(&path, tcp_echo_rollout(steps)).expect("write the rollout");
    path.display().to_string()
}

/// The node index of `node-I`.
fn index(node: &str) -> usize {
    node.strip_prefix("node-")
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("not a node name: {node}"))
}

/// The tcp-echo rules and a rollout (20%, a 6 s pause, 50%, a pause until
/// promoted, 100%) applied to the store; once every node has 20% in force:
/// the driver as every node names it, its index, and how long after it set
/// 20% the pause's clock started (every node had 20% in force).
fn start_at_20(fleet: &Fleet) -> (Vec<String>, usize, u64) {
    apply(
        fleet,
        &tcp_echo(&[
            "service-entry.yaml",
            "destination-rule.yaml",
            "gateway.yaml",
            "examples/vs-all-v1.yaml",
        ]),
    );
    let rollout = rollout_file(
        "fleetro-takeover",
        "  - setWeight: 20
  - pause: {duration: 6s}
  - setWeight: 50
  - pause: {}
  - setWeight: 100
",
    );
    apply(fleet, &[rollout]);
    // Every node steers 20% to the canary, and says who drives; the pause's
    // clock runs (every node reported 20% in force).
    let mut drivers = Vec::new();
    for (i, node) in fleet.nodes.iter().enumerate() {
        let status = node
            .agent
            .wait_rollout(NAME, "at 20% in its pause", WAIT, |s| {
                s.canary_in_force == Some(20)
                    && s.step == 1
                    && s.driver.is_some()
                    && s.message.contains("in force on every node")
            });
        println!("node-{i}: driver {:?}, {}", status.driver, status.message);
        drivers.push(status.driver.clone().expect("a driver"));
    }
    drivers.dedup();
    assert_eq!(
        drivers.len(),
        1,
        "one driver, as every node sees it: {drivers:?}"
    );
    let driver = index(&drivers[0]);
    let won: Vec<usize> = (0..3)
        .filter(|&i| {
            fleet.nodes[i]
                .agent
                .log_text()
                .contains("won the rollouts' leader key")
        })
        .collect();
    assert_eq!(won, [driver], "exactly one node won the election");
    let log = fleet.nodes[driver].agent.log_text();
    let set = log_time(&log, "step: set weight");
    let started = log_time(&log, "its clock starts");
    println!(
        "the pause's clock started {} ms after the driver set 20% (every node had it in force)",
        started - set
    );
    assert!(started >= set, "{log}");
    (drivers, driver, started - set)
}

/// The time of day (ms) of the first line of `log` that has `what`.
fn log_time(log: &str, what: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no {what:?} in the log:\n{log}"));
    // 2026-12-07T01:33:47.412354Z ...
    let time = line
        .split_once('T')
        .and_then(|(_, rest)| rest.get(..12))
        .unwrap_or_else(|| panic!("no time in {line:?}"));
    let field = |range: std::ops::Range<usize>| -> u64 { time[range].parse().expect("a time") };
    ((field(0..2) * 60 + field(3..5)) * 60 + field(6..8)) * 1000 + field(9..12)
}

/// Node `i`'s client opens 100 connections to the service: `canary` of
/// them reach v2, exactly (the kernel's smooth selection).
fn exact_split(fleet: &mut Fleet, i: usize, canary: u64) {
    let (one, two, errors) = fleet.nodes[i].client.burst_with_errors(SERVICE_V4, 100);
    assert!(errors.is_empty(), "node-{i}: {errors:?}");
    println!("node-{i} at {canary}%: {one} v1, {two} v2 of 100 connections");
    assert_eq!(
        (one, two),
        (100 - canary, canary),
        "node-{i}: the {canary}% step's split of 100"
    );
}

#[test]
fn the_driver_killed_mid_rollout_another_takes_over_at_the_same_step() {
    let mut fleet = Fleet::start("fleetro-takeover", 3);
    let (drivers, driver, gate) = start_at_20(&fleet);
    for i in 0..3 {
        exact_split(&mut fleet, i, 20);
    }
    // Killed in the 6 s pause (its clock started once all three nodes had
    // 20% in force).
    let before = fleet.nodes[(driver + 1) % 3]
        .agent
        .rollout(NAME)
        .expect("the rollout");
    assert_eq!(
        (before.step, before.phase),
        (1, Phase::Progressing),
        "{before:#?}"
    );
    fleet.nodes[driver]
        .agent
        .process
        .signal_and_wait(libc::SIGKILL);
    let killed = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != driver).collect();
    // Another node takes over within the lease (plus the stated slack).
    let follower = &fleet.nodes[survivors[0]].agent;
    let taken = follower.wait_rollout(NAME, "driven by a survivor", WAIT, |s| {
        s.driver.as_deref().is_some_and(|d| d != drivers[0])
    });
    let takeover = killed.elapsed();
    let new_driver = index(taken.driver.as_deref().expect("a driver"));
    println!(
        "takeover: node-{new_driver} drives {} ms after node-{driver} was killed (lease {} s)",
        takeover.as_millis(),
        LEADER_TTL.as_secs()
    );
    assert!(
        takeover <= LEADER_TTL + TAKEOVER_SLACK,
        "took over after {takeover:?}\n{}",
        fleet.logs()
    );
    // The same step, then 50% exactly once.
    let at_50 = follower.wait_rollout(NAME, "at the pause until promoted", WAIT, |s| {
        s.step == 3 && s.phase == Phase::Paused && s.canary_in_force == Some(50)
    });
    assert_eq!(
        weights(&at_50),
        [(Some(0), 20), (Some(2), 50)],
        "each step once across the takeover: {at_50:#?}"
    );
    let pause = at_50.weights[1].at_ms - at_50.weights[0].at_ms;
    println!("20% -> 50%: {pause} ms (a 6 s pause, across the takeover)");
    // Its 6 s ran from the gate (log times are to the ms, as at_ms).
    assert!(
        pause + 1 >= 6_000 + gate,
        "the pause kept its clock from the gate ({gate} ms): {pause} ms"
    );
    for &i in &survivors {
        let status = fleet.nodes[i].agent.wait_canary(NAME, 50, WAIT);
        assert_eq!(status.step, 3);
        exact_split(&mut fleet, i, 50);
    }
    // `rollout promote` on a node that does not drive.
    let other = *survivors
        .iter()
        .find(|&&i| i != new_driver)
        .expect("a follower");
    let out = fleet.nodes[other]
        .agent
        .ctl(&["rollout", "promote", "tcp-echo"]);
    assert!(
        out.status.success(),
        "promote on node-{other}: {}\n{}",
        text(&out.stderr),
        fleet.logs()
    );
    println!("promote on node-{other}: {}", text(&out.stdout).trim());
    let done = fleet.nodes[other]
        .agent
        .wait_rollout(NAME, "completed", WAIT, |s| s.phase == Phase::Healthy);
    assert_eq!(
        weights(&done),
        [(Some(0), 20), (Some(2), 50), (Some(4), 100)],
        "every step once"
    );
    for &i in &survivors {
        fleet.nodes[i].agent.wait_canary(NAME, 100, WAIT);
        exact_split(&mut fleet, i, 100);
    }
    // `get rollouts` names the driver.
    let out = fleet.nodes[other].agent.ctl(&["get", "rollouts"]);
    let table = text(&out.stdout);
    assert!(
        table.contains("DRIVER") && table.contains(&format!("node-{new_driver}")),
        "{table}"
    );
}

#[test]
fn a_driver_stopped_cleanly_hands_over_at_once() {
    let mut fleet = Fleet::start("fleetro-handover", 3);
    let (drivers, driver, _) = start_at_20(&fleet);
    // SIGTERM: the agent gives its leader key up as it stops, so a
    // survivor campaigns at once instead of waiting out the lease.
    fleet.nodes[driver]
        .agent
        .process
        .signal_and_wait(libc::SIGTERM);
    let stopped = Instant::now();
    let survivor = (driver + 1) % 3;
    let taken = fleet.nodes[survivor]
        .agent
        .wait_rollout(NAME, "driven by a survivor", WAIT, |s| {
            s.driver.as_deref().is_some_and(|d| d != drivers[0])
        });
    let handover = stopped.elapsed();
    println!(
        "handover: {:?} drives {} ms after node-{driver} stopped (lease {} s)",
        taken.driver,
        handover.as_millis(),
        LEADER_TTL.as_secs()
    );
    assert!(
        handover < LEADER_TTL / 2,
        "{} ms: the stopped driver's lease was not given up",
        handover.as_millis()
    );
    assert!(
        fleet.nodes[driver]
            .agent
            .log_text()
            .contains("gave the rollouts' leader key up"),
        "the stop is logged"
    );
    assert_eq!(taken.step, 1, "the same step: {taken:#?}");
    assert_eq!(weights(&taken), [(Some(0), 20)], "not applied again");
}

#[test]
fn the_analysis_counts_the_canary_on_every_node() {
    let mut fleet = Fleet::start("fleetro-sum", 2);
    apply(
        &fleet,
        &tcp_echo(&[
            "service-entry.yaml",
            "destination-rule.yaml",
            "gateway.yaml",
            "examples/vs-all-v1.yaml",
        ]),
    );
    // 50%: each node's burst of 40 sends 20 to the canary, fewer than
    // minSamples 30; the two together, 40, are enough.
    let rollout = rollout_file(
        "fleetro-sum",
        "  - setWeight: 50
  - analysis:
      interval: 5s
      minSamples: 30
      inconclusiveLimit: 20
      metrics:
      - connectionSuccessRate: {min: 99}
  - setWeight: 100
",
    );
    apply(&fleet, &[rollout]);
    for node in &fleet.nodes {
        node.agent
            .wait_rollout(NAME, "at 50% with its analysis running", WAIT, |s| {
                s.canary_in_force == Some(50) && s.step == 1 && !s.message.contains("waiting for")
            });
    }
    let deadline = Instant::now() + Duration::from_mins(1);
    let mut rounds = 0;
    let passed = loop {
        rounds += 1;
        let seen = fleet.nodes[0]
            .agent
            .rollout(NAME)
            .expect("rollout")
            .history
            .len();
        for (i, node) in fleet.nodes.iter_mut().enumerate() {
            let (one, two, errors) = node.client.burst_with_errors(SERVICE_V4, 40);
            assert!(errors.is_empty(), "node-{i}: {errors:?}");
            assert_eq!((one, two), (20, 20), "node-{i}: 50% of 40");
        }
        let status = fleet.nodes[0]
            .agent
            .wait_rollout(NAME, "ended an interval", WAIT, |s| {
                s.history.len() > seen || s.phase == Phase::Healthy
            });
        if let Some(record) = status
            .history
            .iter()
            .find(|r| r.outcome == Outcome::Successful)
        {
            break record.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no successful interval after {rounds} rounds: {status:#?}\n{}",
            fleet.logs()
        );
    };
    let samples = passed.metrics[0].samples.expect("samples");
    println!(
        "the step passed after {rounds} round(s) of 2 x 40 connections: {samples} canary connections counted over the fleet"
    );
    assert!(
        samples >= 30 && samples % 20 == 0,
        "an interval passes only on both nodes' counters (20 each): {passed:#?}"
    );
    let done = fleet.nodes[1]
        .agent
        .wait_rollout(NAME, "completed", WAIT, |s| s.phase == Phase::Healthy);
    assert_eq!(weights(&done), [(Some(0), 50), (Some(2), 100)]);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The store's side alone, on a real etcd: one campaign wins the leader
/// key; only its holder writes a state, and only against the mod revision
/// it last saw; a command is consumed only if it is the one the driver
/// read; the key goes with its lease, and then another node's campaign wins
/// and the old driver's writes are refused.
#[test]
fn the_rollouts_keys_are_guarded_in_the_store() {
    use traffic_shift_store::{Campaign, LEADER_TTL, StateWrite, Store, TlsFiles};

    let fleet = Fleet::store_only("fleetro-guard");
    runtime().block_on(async {
        let url = fleet.etcd.url().parse().unwrap();
        let store = Store::connect(&url, &fleet.prefix, &TlsFiles::default())
            .await
            .unwrap();
        let name = "default/tcp-echo";
        let a = store.grant_lease(LEADER_TTL).await.unwrap();
        let b = store.grant_lease(LEADER_TTL).await.unwrap();
        assert!(matches!(
            store.campaign("node-a", a.id).await.unwrap(),
            Campaign::Won { .. }
        ));
        let Campaign::Lost { leader, .. } = store.campaign("node-b", b.id).await.unwrap() else {
            panic!("two campaigns won the leader key");
        };
        assert_eq!(leader, "node-a");
        // Only the driver writes.
        assert_eq!(
            store
                .put_rollout_state("node-b", name, Some("b"), 0, None)
                .await
                .unwrap(),
            StateWrite::NotDriver {
                leader: Some("node-a".into())
            }
        );
        let StateWrite::Written(first) = store
            .put_rollout_state("node-a", name, Some("step 1"), 0, None)
            .await
            .unwrap()
        else {
            panic!("the driver's first write refused");
        };
        // Against a mod revision it has not seen: stale, nothing written.
        assert_eq!(
            store
                .put_rollout_state("node-a", name, Some("step 1 again"), 0, None)
                .await
                .unwrap(),
            StateWrite::Stale
        );
        // A command replaced after the driver read it is not consumed.
        let read = store.put_rollout_command(name, "promote 1").await.unwrap();
        let newer = store.put_rollout_command(name, "promote 2").await.unwrap();
        assert_eq!(
            store
                .put_rollout_state("node-a", name, Some("step 2"), first, Some(read))
                .await
                .unwrap(),
            StateWrite::Stale
        );
        let StateWrite::Written(second) = store
            .put_rollout_state("node-a", name, Some("step 2"), first, Some(newer))
            .await
            .unwrap()
        else {
            panic!("the driver's write consuming the command refused");
        };
        let view = store.read_rollouts().await.unwrap();
        assert_eq!(view.leader.as_deref(), Some("node-a"));
        assert_eq!(view.states[name], ("step 2".to_owned(), second));
        assert!(view.commands.is_empty(), "consumed: {view:?}");
        // The driver dies (its lease revoked): the key goes, node-b wins,
        // node-a's writes are refused.
        store.revoke_lease(a.id).await;
        assert!(
            store
                .wait_leader_gone(view.revision, LEADER_TTL)
                .await
                .unwrap()
        );
        let b = store.grant_lease(LEADER_TTL).await.unwrap();
        let Campaign::Won { revision } = store.campaign("node-b", b.id).await.unwrap() else {
            panic!("node-b lost to nobody");
        };
        assert_eq!(
            store
                .put_rollout_state("node-a", name, Some("step 3"), second, None)
                .await
                .unwrap(),
            StateWrite::NotDriver {
                leader: Some("node-b".into())
            }
        );
        // node-b stops renewing: etcd deletes the key within the TTL.
        let stopped = std::time::Instant::now();
        assert!(
            store
                .wait_leader_gone(revision, LEADER_TTL * 2)
                .await
                .unwrap(),
            "the leader key outlived its lease"
        );
        let gone = stopped.elapsed();
        println!(
            "the leader key went {} ms after its holder stopped renewing (TTL {} s)",
            gone.as_millis(),
            LEADER_TTL.as_secs()
        );
        assert!(gone <= LEADER_TTL + Duration::from_secs(1), "{gone:?}");
    });
}

#[test]
fn a_driver_cut_off_from_etcd_stops_driving_and_every_node_keeps_its_weights() {
    let mut fleet = Fleet::start_forwarded("fleetro-cut", 3);
    apply(
        &fleet,
        &tcp_echo(&[
            "service-entry.yaml",
            "destination-rule.yaml",
            "gateway.yaml",
            "examples/vs-all-v1.yaml",
        ]),
    );
    let rollout = rollout_file(
        "fleetro-cut",
        "  - setWeight: 20
  - pause: {}
  - setWeight: 50
  - pause: {}
  - setWeight: 100
",
    );
    apply(&fleet, &[rollout]);
    let mut driver = None;
    for node in &fleet.nodes {
        let status = node.agent.wait_rollout(NAME, "paused at 20%", WAIT, |s| {
            s.step == 1
                && s.phase == Phase::Paused
                && s.canary_in_force == Some(20)
                && s.driver.is_some()
        });
        driver = status.driver.as_deref().map(index);
    }
    let cut = driver.expect("a driver");
    let survivors: Vec<usize> = (0..3).filter(|&i| i != cut).collect();
    fleet.forwarders[cut].cut();
    let cut_at = Instant::now();
    let taken =
        fleet.nodes[survivors[0]]
            .agent
            .wait_rollout(NAME, "driven by another node", WAIT, |s| {
                s.driver.as_deref().is_some_and(|d| index(d) != cut)
            });
    let takeover = cut_at.elapsed();
    let new_driver = index(taken.driver.as_deref().expect("a driver"));
    println!(
        "node-{cut} cut off from etcd; node-{new_driver} drives {} ms later",
        takeover.as_millis()
    );
    assert!(
        takeover <= LEADER_TTL + TAKEOVER_SLACK,
        "{takeover:?}\n{}",
        fleet.logs()
    );
    // The node cut off stopped driving on its own (its lease not renewed
    // for the TTL less a second) before etcd let another node win.
    assert!(
        fleet.nodes[cut]
            .agent
            .log_text()
            .contains("no longer driving the rollouts"),
        "node-{cut} still drives\n{}",
        fleet.logs()
    );
    exact_split(&mut fleet, cut, 20);
    // The survivors go on; the node cut off keeps what it has in force.
    let out = fleet.nodes[new_driver]
        .agent
        .ctl(&["rollout", "promote", "tcp-echo"]);
    assert!(
        out.status.success(),
        "promote: {}\n{}",
        text(&out.stderr),
        fleet.logs()
    );
    for &i in &survivors {
        fleet.nodes[i].agent.wait_canary(NAME, 50, WAIT);
        exact_split(&mut fleet, i, 50);
    }
    exact_split(&mut fleet, cut, 20);
    // Back: it follows the store again, and does not drive.
    fleet.forwarders[cut].heal();
    let healed = Instant::now();
    let back = fleet.nodes[cut]
        .agent
        .wait_rollout(NAME, "following the store again", WAIT, |s| {
            s.canary_in_force == Some(50) && s.step == 3
        });
    println!(
        "node-{cut} has 50% in force {} ms after etcd is reachable again",
        healed.elapsed().as_millis()
    );
    assert_eq!(back.driver.as_deref().map(index), Some(new_driver));
    assert_eq!(
        weights(&back),
        [(Some(0), 20), (Some(2), 50)],
        "each step once"
    );
    exact_split(&mut fleet, cut, 50);
}

/// The canary refuses every connection on the node that does not drive
/// (its v2 backend stopped there) and answers on the driver: the driver's
/// own counters are clean, the fleet's are not, and the rollout rolls back.
#[test]
fn a_canary_failing_on_another_node_fails_the_fleets_analysis() {
    let mut fleet = Fleet::start("fleetro-fail", 2);
    apply(
        &fleet,
        &tcp_echo(&[
            "service-entry.yaml",
            "destination-rule.yaml",
            "gateway.yaml",
            "examples/vs-all-v1.yaml",
        ]),
    );
    let rollout = rollout_file(
        "fleetro-fail",
        "  - setWeight: 50
  - analysis:
      interval: 5s
      minSamples: 10
      inconclusiveLimit: 20
      metrics:
      - connectionSuccessRate: {min: 99}
  - setWeight: 100
",
    );
    apply(&fleet, &[rollout]);
    let mut driver = None;
    for node in &fleet.nodes {
        let status = node
            .agent
            .wait_rollout(NAME, "at 50% with its analysis running", WAIT, |s| {
                s.canary_in_force == Some(50) && s.step == 1 && s.driver.is_some()
            });
        driver = status.driver.as_deref().map(index);
    }
    let driver = driver.expect("a driver");
    let other = 1 - driver;
    fleet.nodes[other].backends[1].stop();
    let (one, two, errors) = fleet.nodes[driver].client.burst_with_errors(SERVICE_V4, 40);
    assert_eq!(
        (one, two, errors.len()),
        (20, 20, 0),
        "node-{driver}: {errors:?}"
    );
    let (one, two, errors) = fleet.nodes[other].client.burst_with_errors(SERVICE_V4, 40);
    println!(
        "node-{other}: {one} v1, {two} v2, {} refused of 40",
        errors.len()
    );
    assert_eq!(
        (one, two, errors.len()),
        (20, 0, 20),
        "node-{other}: {errors:?}"
    );
    let done = fleet.nodes[driver]
        .agent
        .wait_rollout(NAME, "rolled back", WAIT, |s| s.phase == Phase::Degraded);
    let failed = done
        .history
        .iter()
        .find(|r| r.outcome == Outcome::Failed)
        .expect("a failed interval");
    let metric = &failed.metrics[0];
    println!(
        "rolled back by the driver node-{driver}: connectionSuccessRate {:?} over {:?} canary connections counted over the fleet ({})",
        metric.value, metric.samples, done.message
    );
    assert!(
        metric.value.is_some_and(|v| v < 99.0) && metric.samples.is_some_and(|s| s >= 20),
        "{done:#?}"
    );
    assert_eq!(
        weights(&done),
        [(Some(0), 50), (None, 0)],
        "all back to stable"
    );
    for i in [driver, other] {
        fleet.nodes[i]
            .agent
            .wait_rollout(NAME, "all on stable", WAIT, |s| {
                s.phase == Phase::Degraded && s.canary_in_force == Some(0)
            });
        exact_split(&mut fleet, i, 0);
    }
}
