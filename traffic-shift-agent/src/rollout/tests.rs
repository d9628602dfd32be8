//! The controller on the tcp-echo rules (`rules/tcp-echo`, the 80/20
//! example, so the route has both subsets), with a Rollout made here and
//! counters given by each test: steps, pauses, analyses, hand edits,
//! commands and the persisted state.

use std::{path::PathBuf, time::Duration};

use traffic_shift_config::{
    model::RoutingModel,
    parse_file, resolve,
    rollout::{Analysis, Metric, MetricSource, Rollout, RolloutProtocol, Step},
};

use super::{
    Command, Controller, Observation, Phase,
    state::{PauseCause, States},
};

const S: u64 = 1000;

fn rules(vs: &str) -> RoutingModel {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules/tcp-echo");
    let files: Vec<_> = [
        "service-entry.yaml",
        "destination-rule.yaml",
        "gateway.yaml",
        vs,
    ]
    .iter()
    .map(|f| {
        let path = dir.join(f);
        parse_file(&path, &std::fs::read_to_string(&path).unwrap()).unwrap()
    })
    .collect();
    resolve(&files).unwrap()
}

fn analysis(count: Option<u32>, failure_limit: u32, inconclusive_limit: u32) -> Analysis {
    Analysis {
        interval: Duration::from_secs(10),
        count,
        failure_limit,
        inconclusive_limit,
        min_samples: 10,
        metrics: vec![Metric {
            name: "connects".into(),
            source: MetricSource::ConnectionSuccessRate,
            min: Some(99.0),
            max: None,
        }],
    }
}

/// tcp-echo's `tcp[0]`, v1 to v2, with `steps` (also the fleet's tests').
pub(crate) fn rollout(steps: Vec<Step>) -> Rollout {
    Rollout {
        name: "default/tcp-echo".into(),
        source: "rollout.yaml".into(),
        virtual_service: "default/tcp-echo".into(),
        route: "default/tcp-echo/tcp[0]".into(),
        protocol: RolloutProtocol::Tcp,
        host: "tcp-echo.local".into(),
        stable: "v1".into(),
        canary: "v2".into(),
        steps,
        analysis: None,
        spec_digest: "d1".into(),
    }
}

fn model(vs: &str, rollout: Rollout) -> RoutingModel {
    let mut model = rules(vs);
    model.rollouts = vec![rollout];
    model
}

/// The canary's share of every route of the rule, as the overlay puts it.
fn in_force(controller: &Controller, model: &RoutingModel) -> Vec<u32> {
    let mut m = model.clone();
    controller.overlay(&mut m);
    let r = &m.rollouts[0];
    let mut shares: Vec<u32> = m
        .routes
        .iter()
        .filter(|route| r.targets_tcp(&route.key))
        .map(|route| {
            let total: u32 = route.destinations.iter().map(|d| d.weight).sum();
            let canary: u32 = route
                .destinations
                .iter()
                .filter(|d| r.is_canary(d))
                .map(|d| d.weight)
                .sum();
            canary * 100 / total
        })
        .collect();
    shares.dedup();
    shares
}

/// A canary whose counters grow by `(established, failed)` per call.
fn canary(per_call: (u64, u64)) -> impl FnMut(&Rollout) -> Observation {
    let mut seen = Observation::default();
    move |_| {
        seen.established += per_call.0;
        seen.failed += per_call.1;
        seen
    }
}

/// The rollout of `steps` on the 80/20 rules, synced and ticked once at
/// its start (the model, the controller, the start).
fn started(steps: Vec<Step>) -> (RoutingModel, Controller, u64) {
    let m = model("examples/vs-20-v2.yaml", rollout(steps));
    let mut c = Controller::default();
    let t0 = 1_000 * S;
    c.sync(&m, t0);
    c.tick(&m, t0, &mut canary((0, 0)));
    (m, c, t0)
}

/// An operator's command on the rollout, with no traffic.
fn command(
    c: &mut Controller,
    m: &RoutingModel,
    command: Command,
    at_ms: u64,
) -> Result<super::Effects, String> {
    c.command(m, "default/tcp-echo", command, at_ms, &mut canary((0, 0)))
}

fn phase(c: &Controller) -> (Phase, usize, u32) {
    let s = &c.states()["default/tcp-echo"];
    (s.phase, s.step, s.canary_weight)
}

#[test]
fn steps_and_timed_pauses_run_in_order_to_completion() {
    let m = model(
        "examples/vs-20-v2.yaml",
        rollout(vec![
            Step::SetWeight(10),
            Step::Pause(Some(Duration::from_secs(30))),
            Step::SetWeight(50),
            Step::Pause(Some(Duration::from_secs(30))),
            Step::SetWeight(100),
        ]),
    );
    let mut c = Controller::default();
    let t0 = 1_000 * S;
    assert!(c.sync(&m, t0).changed);
    let e = c.tick(&m, t0, &mut canary((0, 0)));
    assert!(e.weights_changed);
    assert_eq!(phase(&c), (Phase::Progressing, 1, 10));
    assert_eq!(in_force(&c, &m), [10]);
    assert_eq!(c.next_wake(&m), Some(t0 + 30 * S));
    assert!(!c.tick(&m, t0 + 29 * S, &mut canary((0, 0))).weights_changed);
    assert!(c.tick(&m, t0 + 30 * S, &mut canary((0, 0))).weights_changed);
    assert_eq!(phase(&c), (Phase::Progressing, 3, 50));
    c.tick(&m, t0 + 60 * S, &mut canary((0, 0)));
    assert_eq!(phase(&c), (Phase::Healthy, 5, 100));
    assert_eq!(in_force(&c, &m), [100]);
    let weights: Vec<(Option<usize>, u32)> = c.states()["default/tcp-echo"]
        .weights
        .iter()
        .map(|w| (w.step, w.canary_weight))
        .collect();
    assert_eq!(weights, [(Some(0), 10), (Some(2), 50), (Some(4), 100)]);
}

#[test]
fn a_failing_canary_is_rolled_back_at_once() {
    let m = model(
        "examples/vs-20-v2.yaml",
        rollout(vec![
            Step::SetWeight(20),
            Step::Analysis(analysis(Some(2), 0, 0)),
            Step::SetWeight(100),
        ]),
    );
    let mut c = Controller::default();
    let t0 = 1_000 * S;
    c.sync(&m, t0);
    // 70 of 100 connects complete each interval: 70%, under 99.
    let mut observe = canary((70, 30));
    c.tick(&m, t0, &mut observe);
    assert_eq!(phase(&c), (Phase::Progressing, 1, 20));
    let e = c.tick(&m, t0 + 10 * S, &mut observe);
    assert!(e.weights_changed);
    assert_eq!(phase(&c), (Phase::Degraded, 1, 0));
    assert_eq!(in_force(&c, &m), [0]);
    let s = &c.states()["default/tcp-echo"];
    assert!(
        s.message
            .starts_with("rolled back: step 2 analysis: 1 failed interval(s), more than failureLimit 0: connects = 70 (outside >= 99)"),
        "{}",
        s.message
    );
    assert_eq!(
        e.runs,
        [(
            "default/tcp-echo".into(),
            "connects".into(),
            super::Outcome::Failed
        )]
    );
}

#[test]
fn no_traffic_is_inconclusive_and_never_promotes() {
    let m = model(
        "examples/vs-20-v2.yaml",
        rollout(vec![
            Step::SetWeight(20),
            Step::Analysis(analysis(Some(1), 0, 1)),
            Step::SetWeight(100),
        ]),
    );
    let mut c = Controller::default();
    let t0 = 1_000 * S;
    c.sync(&m, t0);
    let mut idle = canary((0, 0));
    c.tick(&m, t0, &mut idle);
    c.tick(&m, t0 + 10 * S, &mut idle);
    // One inconclusive interval is tolerated: still at the analysis, at 20%.
    assert_eq!(phase(&c), (Phase::Progressing, 1, 20));
    assert_eq!(c.states()["default/tcp-echo"].step_tally.inconclusive, 1);
    c.tick(&m, t0 + 20 * S, &mut idle);
    assert_eq!(phase(&c), (Phase::Degraded, 1, 0));
    // Healthy traffic passes it.
    let mut c = Controller::default();
    c.sync(&m, t0);
    let mut healthy = canary((50, 0));
    c.tick(&m, t0, &mut healthy);
    c.tick(&m, t0 + 10 * S, &mut healthy);
    assert_eq!(phase(&c), (Phase::Healthy, 3, 100));
}

#[test]
fn a_hand_edit_pauses_and_its_weights_stay_until_resume() {
    let steps = vec![Step::SetWeight(10), Step::Pause(None), Step::SetWeight(100)];
    let m = model("examples/vs-20-v2.yaml", rollout(steps.clone()));
    let mut c = Controller::default();
    let t0 = 1_000 * S;
    c.sync(&m, t0);
    c.tick(&m, t0, &mut canary((0, 0)));
    assert_eq!(phase(&c), (Phase::Paused, 1, 10));
    assert_eq!(in_force(&c, &m), [10]);
    // Someone edits the route to 50/50 by hand.
    let mut edited = model("examples/vs-20-v2.yaml", rollout(steps));
    for route in &mut edited.routes {
        for dest in &mut route.destinations {
            dest.weight = 50;
        }
    }
    let e = c.sync(&edited, t0 + S);
    assert!(e.weights_changed);
    let s = &c.states()["default/tcp-echo"];
    assert_eq!(s.pause_cause, Some(PauseCause::HandEdit));
    assert!(
        s.message
            .contains("edited by hand (canary 50% as written, was 20%)"),
        "{}",
        s.message
    );
    assert_eq!(in_force(&c, &edited), [50], "the edit is in force");
    // promote does not apply while the edit stands; resume takes it back.
    let err = command(&mut c, &edited, Command::Promote, t0 + 2 * S).unwrap_err();
    assert!(err.contains("edited by hand"), "{err}");
    command(&mut c, &edited, Command::Resume, t0 + 3 * S).unwrap();
    assert_eq!(in_force(&c, &edited), [10]);
    // Back at the pause step, waiting for promote.
    assert_eq!(phase(&c), (Phase::Paused, 1, 10));
    command(&mut c, &edited, Command::Promote, t0 + 4 * S).unwrap();
    assert_eq!(phase(&c), (Phase::Healthy, 3, 100));
}

#[test]
fn abort_sends_all_to_stable_and_retry_starts_over() {
    let (m, mut c, t0) = started(vec![
        Step::SetWeight(50),
        Step::Pause(Some(Duration::from_mins(1))),
        Step::SetWeight(100),
    ]);
    assert_eq!(phase(&c), (Phase::Progressing, 1, 50));
    let e = command(&mut c, &m, Command::Abort, t0 + S).unwrap();
    assert!(e.weights_changed);
    assert_eq!(phase(&c), (Phase::Degraded, 1, 0));
    let err = command(&mut c, &m, Command::Promote, t0 + S).unwrap_err();
    assert_eq!(
        err,
        "rollout default/tcp-echo is Degraded: `promote` does not apply; `retry` starts it over"
    );
    command(&mut c, &m, Command::Retry, t0 + 2 * S).unwrap();
    assert_eq!(phase(&c), (Phase::Progressing, 1, 50));
}

#[test]
fn pause_stops_the_clock_and_resume_keeps_the_time_left() {
    let (m, mut c, t0) = started(vec![
        Step::SetWeight(50),
        Step::Pause(Some(Duration::from_mins(1))),
        Step::SetWeight(100),
    ]);
    command(&mut c, &m, Command::Pause, t0 + 20 * S).unwrap();
    c.tick(&m, t0 + 100 * S, &mut canary((0, 0)));
    assert_eq!(phase(&c), (Phase::Paused, 1, 50));
    command(&mut c, &m, Command::Resume, t0 + 100 * S).unwrap();
    // 40 s of the pause were left when it was paused.
    assert_eq!(c.next_wake(&m), Some(t0 + 140 * S));
    c.tick(&m, t0 + 139 * S, &mut canary((0, 0)));
    assert_eq!(phase(&c), (Phase::Progressing, 1, 50));
    c.tick(&m, t0 + 140 * S, &mut canary((0, 0)));
    assert_eq!(phase(&c), (Phase::Healthy, 3, 100));
}

#[test]
fn the_state_is_saved_and_a_restart_resumes_at_the_same_step() {
    let dir = std::env::temp_dir().join(format!("ts-rollout-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let m = model(
        "examples/vs-20-v2.yaml",
        rollout(vec![
            Step::SetWeight(10),
            Step::Pause(Some(Duration::from_mins(1))),
            Step::SetWeight(20),
        ]),
    );
    let t0 = 1_000 * S;
    let mut c = Controller::new(States::open(&dir).unwrap());
    c.sync(&m, t0);
    c.tick(&m, t0, &mut canary((0, 0)));
    c.save().unwrap();
    drop(c);
    let mut again = Controller::new(States::open(&dir).unwrap());
    // Same rules: nothing starts over.
    assert!(!again.sync(&m, t0 + 30 * S).changed);
    assert_eq!(phase(&again), (Phase::Progressing, 1, 10));
    assert_eq!(in_force(&again, &m), [10]);
    // The pause kept its clock across the restart.
    assert_eq!(again.next_wake(&m), Some(t0 + 60 * S));
    again.tick(&m, t0 + 60 * S, &mut canary((0, 0)));
    assert_eq!(phase(&again), (Phase::Healthy, 3, 20));
    assert_eq!(
        again.states()["default/tcp-echo"].weights.len(),
        2,
        "10 once, 20 once"
    );
    // Another spec starts over.
    let mut changed = m.clone();
    changed.rollouts[0].spec_digest = "d2".into();
    again.sync(&changed, t0 + 70 * S);
    assert_eq!(
        phase(&again),
        (Phase::Progressing, 0, 20),
        "from the weights as written"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_background_analysis_rolls_back_during_a_pause() {
    let mut watched = rollout(vec![
        Step::SetWeight(10),
        Step::Pause(Some(Duration::from_hours(1))),
        Step::SetWeight(100),
    ]);
    watched.analysis = Some(analysis(None, 1, 0));
    let m = model("examples/vs-20-v2.yaml", watched);
    let mut c = Controller::default();
    let t0 = 1_000 * S;
    c.sync(&m, t0);
    let mut failing = canary((50, 50));
    c.tick(&m, t0, &mut failing);
    assert_eq!(phase(&c), (Phase::Progressing, 1, 10));
    // One failed interval is tolerated (failureLimit 1), the second is not.
    c.tick(&m, t0 + 10 * S, &mut failing);
    assert_eq!(phase(&c), (Phase::Progressing, 1, 10));
    assert_eq!(c.states()["default/tcp-echo"].background_tally.failed, 1);
    let e = c.tick(&m, t0 + 20 * S, &mut failing);
    assert!(e.weights_changed);
    assert_eq!(phase(&c), (Phase::Degraded, 1, 0));
    let s = &c.states()["default/tcp-echo"];
    assert!(
        s.message.starts_with(
            "rolled back: background analysis: 2 failed interval(s), more than failureLimit 1"
        ),
        "{}",
        s.message
    );
    // Nothing runs once rolled back.
    assert_eq!(c.next_wake(&m), None);
}

/// Every node with the canary weight `w` in force for the rollout (`None`:
/// it has not got the rollout).
fn nodes(
    weights: &[(&str, Option<u32>)],
) -> Vec<(String, std::collections::BTreeMap<String, u32>)> {
    weights
        .iter()
        .map(|(node, w)| {
            let map = w
                .map(|w| std::collections::BTreeMap::from([("default/tcp-echo".to_owned(), w)]))
                .unwrap_or_default();
            ((*node).to_owned(), map)
        })
        .collect()
}

#[test]
fn in_a_fleet_a_pause_starts_once_every_node_has_the_steps_weight() {
    let m = model(
        "examples/vs-20-v2.yaml",
        rollout(vec![
            Step::SetWeight(10),
            Step::Pause(Some(Duration::from_secs(30))),
            Step::SetWeight(50),
        ]),
    );
    let mut c = Controller::default();
    c.set_nodes_in_force(Some(nodes(&[("node-0", Some(20)), ("node-1", None)])));
    let t0 = 1_000 * S;
    c.sync(&m, t0);
    assert!(c.tick(&m, t0, &mut canary((0, 0))).weights_changed);
    assert_eq!(phase(&c), (Phase::Progressing, 1, 10));
    let s = &c.states()["default/tcp-echo"];
    assert!(!s.clock_started);
    assert_eq!(
        s.message,
        "step 2: waiting for 2 nodes to put 10% in force (node-0, node-1)"
    );
    assert_eq!(c.next_wake(&m), None, "no clock runs");
    // Long after the pause would have ended: one node has it.
    c.set_nodes_in_force(Some(nodes(&[("node-0", Some(10)), ("node-1", Some(20))])));
    c.tick(&m, t0 + 40 * S, &mut canary((0, 0)));
    assert_eq!(phase(&c), (Phase::Progressing, 1, 10));
    assert_eq!(
        c.states()["default/tcp-echo"].message,
        "step 2: waiting for 1 node to put 10% in force (node-1)"
    );
    // Both: the 30 s start now.
    c.set_nodes_in_force(Some(nodes(&[("node-0", Some(10)), ("node-1", Some(10))])));
    assert!(c.tick(&m, t0 + 50 * S, &mut canary((0, 0))).changed);
    let s = &c.states()["default/tcp-echo"];
    assert!(s.clock_started);
    assert_eq!(s.step_started_ms, t0 + 50 * S);
    assert_eq!(s.message, "step 2: 10% in force on every node");
    assert_eq!(c.next_wake(&m), Some(t0 + 80 * S));
    c.tick(&m, t0 + 79 * S, &mut canary((0, 0)));
    assert_eq!(phase(&c), (Phase::Progressing, 1, 10));
    assert!(c.tick(&m, t0 + 80 * S, &mut canary((0, 0))).weights_changed);
    assert_eq!(phase(&c), (Phase::Healthy, 3, 50));
    let steps: Vec<_> = c.states()["default/tcp-echo"]
        .weights
        .iter()
        .map(|w| (w.step, w.canary_weight))
        .collect();
    assert_eq!(steps, [(Some(0), 10), (Some(2), 50)]);
}

#[test]
fn in_a_fleet_an_analysis_interval_starts_once_every_node_has_the_steps_weight() {
    let m = model(
        "examples/vs-20-v2.yaml",
        rollout(vec![
            Step::SetWeight(10),
            Step::Analysis(analysis(Some(1), 0, 0)),
            Step::SetWeight(50),
        ]),
    );
    let mut c = Controller::default();
    c.set_nodes_in_force(Some(nodes(&[("node-0", Some(20))])));
    let t0 = 1_000 * S;
    c.sync(&m, t0);
    // Counters that grow at every look: an interval would pass at once.
    let mut counters = canary((20, 0));
    c.tick(&m, t0, &mut counters);
    c.tick(&m, t0 + 20 * S, &mut counters);
    assert_eq!(phase(&c), (Phase::Progressing, 1, 10));
    assert!(
        c.states()["default/tcp-echo"].history.is_empty(),
        "no interval ran"
    );
    assert_eq!(c.next_wake(&m), None);
    c.set_nodes_in_force(Some(nodes(&[("node-0", Some(10))])));
    c.tick(&m, t0 + 25 * S, &mut counters);
    assert_eq!(
        c.next_wake(&m),
        Some(t0 + 35 * S),
        "the interval starts now"
    );
    c.tick(&m, t0 + 35 * S, &mut counters);
    assert_eq!(phase(&c), (Phase::Healthy, 3, 50));
}

#[test]
fn on_one_node_the_clock_starts_with_the_step() {
    let m = model(
        "examples/vs-20-v2.yaml",
        rollout(vec![
            Step::SetWeight(10),
            Step::Pause(Some(Duration::from_secs(30))),
        ]),
    );
    let mut c = Controller::default();
    let t0 = 1_000 * S;
    c.sync(&m, t0);
    c.tick(&m, t0, &mut canary((0, 0)));
    let s = &c.states()["default/tcp-echo"];
    assert!(s.clock_started);
    assert_eq!(s.message, "step 1: canary at 10%");
    assert_eq!(c.next_wake(&m), Some(t0 + 30 * S));
}
