//! End-to-end: `Rollout`s driven by the real agent, on real connections
//! (tcp-echo, through the connect-time path) and real requests (Bookinfo's
//! reviews, through the L7 proxy), with the kernel's and the proxy's
//! counters, and a real Prometheus for the `prometheus` metric. Run as
//! root (`cargo xtask test`).
//!
//! Time: every wait polls the rollout's state (the admin socket, as
//! `rollout status` does) for the event it waits for; the rollouts' own
//! intervals and pauses are the only clocks.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::json;
use traffic_shift_agent::rollout::{Phase, state::PauseCause};
use traffic_shift_tests::{
    SERVICE_V4, Scenario, bookinfo_rule,
    dashboard::{ALL, load, raw_queries, repo_dashboard, substitute, variables},
    echo_backend, metric,
    prometheus::Prometheus,
    rollout::{tcp_echo_rollout, weights},
    tcp_echo_rule,
};

const NAME: &str = "default/tcp-echo";
const REVIEWS: &str = "127.101.0.1:9080";
/// Long enough for any step of these tests on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[expect(
    clippy::cast_precision_loss,
    reason = "connection counts, far below 2^52"
)]
fn float(n: impl TryInto<u64>) -> f64 {
    n.try_into().unwrap_or(u64::MAX) as f64
}

/// `burst` of `n` connections, with the wall-clock times around it.
fn timed_burst(s: &mut Scenario, n: usize) -> (u64, u64, u64, u64) {
    let started = now_ms();
    let (one, two) = s.client.burst(SERVICE_V4, n);
    (one, two, started, now_ms())
}

#[test]
fn a_healthy_canary_is_promoted_step_by_step_and_each_step_splits_exactly() {
    let mut s = Scenario::tcp_echo("rollout-healthy", &tcp_echo_rule("examples/vs-all-v1.yaml"));
    let held = s.client.call(&format!("hold {SERVICE_V4} 10"));
    assert_eq!(held["answers"], json!(vec!["one"; 10]), "{held}");
    // Each analysis needs one interval with 5 canary connections, all
    // established; the test's 100 connections a step give it 10 or more.
    let analysis = "      interval: 3s
      inconclusiveLimit: 5
      minSamples: 5
      metrics:
      - connectionSuccessRate: {min: 99}";
    let mut steps = String::new();
    for w in [10, 20, 50] {
        let _ = writeln!(steps, "  - setWeight: {w}\n  - analysis:\n{analysis}");
    }
    steps.push_str("  - setWeight: 100\n");
    s.agent
        .write_rules("rollout.yaml", tcp_echo_rollout(&steps));
    for weight in [10u64, 20, 50] {
        s.agent
            .wait_canary(NAME, u32::try_from(weight).unwrap(), WAIT);
        let (one, two, started, ended) = timed_burst(&mut s, 100);
        // The step's weight was in force over the whole burst: it was set
        // before, and the next one came after (an analysis interval is 3 s,
        // a burst of 100 connections far less).
        let status = s.agent.rollout(NAME).expect("rollout");
        let set = status
            .weights
            .iter()
            .rev()
            .find(|w| u64::from(w.canary_weight) == weight)
            .expect("the step's weight");
        assert!(
            set.at_ms <= started,
            "set after the burst began: {status:#?}"
        );
        assert!(
            status
                .weights
                .iter()
                .all(|w| w.at_ms <= set.at_ms || w.at_ms >= ended),
            "the weight changed during the burst: {status:#?}"
        );
        println!("step {weight}%: {two} of 100 connections to v2 (one {one})");
        assert!(
            two.abs_diff(weight) <= 1,
            "step {weight}%: {two} of 100 to v2"
        );
    }
    let done = s
        .agent
        .wait_rollout(NAME, "completed", WAIT, |r| r.phase == Phase::Healthy);
    assert_eq!(done.canary_in_force, Some(100));
    assert_eq!(
        weights(&done),
        [(Some(0), 10), (Some(2), 20), (Some(4), 50), (Some(6), 100)],
        "every step once, in order"
    );
    for pair in done.weights.windows(2) {
        println!(
            "{}% -> {}%: {} ms",
            pair[0].canary_weight,
            pair[1].canary_weight,
            pair[1].at_ms - pair[0].at_ms
        );
    }
    assert!(
        done.history
            .iter()
            .all(|r| r.outcome != traffic_shift_agent::rollout::Outcome::Failed),
        "{done:#?}"
    );
    let (one, two) = s.client.burst(SERVICE_V4, 100);
    assert_eq!((one, two), (0, 100), "all to v2 once completed");
    let held = s.client.call("held");
    assert_eq!(
        held["answers"],
        json!(vec!["one"; 10]),
        "open connections keep their backend: {held}"
    );
    let metrics = s.agent.metrics();
    assert_eq!(
        metric(
            &metrics,
            "traffic_shift_rollout_canary_weight",
            &[("rollout", NAME)]
        ),
        100
    );
    assert_eq!(
        metric(
            &metrics,
            "traffic_shift_rollout_phase",
            &[("rollout", NAME), ("phase", "Healthy")]
        ),
        1
    );
    assert_eq!(
        metric(&metrics, "traffic_shift_rollout_step", &[("rollout", NAME)]),
        7
    );
}

/// tcp-echo with a canary of ten endpoints, three of which refuse every
/// connection (nothing listens there): 30% of the canary's connections
/// fail. v1 is 127.0.0.1:19001 as usual.
const REFUSING_CANARY: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: tcp-echo
spec:
  hosts:
  - tcp-echo.local
  addresses:
  - 127.100.0.1
  ports:
  - number: 9000
    name: tcp
    protocol: TCP
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {tcp: 19001}, labels: {app: tcp-echo, version: v1}}
  - {address: 127.0.0.2, ports: {tcp: 19002}, labels: {app: tcp-echo, version: v2}}
  - {address: 127.0.0.3, ports: {tcp: 19002}, labels: {app: tcp-echo, version: v2}}
  - {address: 127.0.0.4, ports: {tcp: 19002}, labels: {app: tcp-echo, version: v2}}
  - {address: 127.0.0.5, ports: {tcp: 19002}, labels: {app: tcp-echo, version: v2}}
  - {address: 127.0.0.6, ports: {tcp: 19002}, labels: {app: tcp-echo, version: v2}}
  - {address: 127.0.0.7, ports: {tcp: 19002}, labels: {app: tcp-echo, version: v2}}
  - {address: 127.0.0.8, ports: {tcp: 19002}, labels: {app: tcp-echo, version: v2}}
  - {address: 127.0.0.9, ports: {tcp: 19002}, labels: {app: tcp-echo, version: v2}}
  - {address: 127.0.0.10, ports: {tcp: 19002}, labels: {app: tcp-echo, version: v2}}
  - {address: 127.0.0.11, ports: {tcp: 19002}, labels: {app: tcp-echo, version: v2}}
";

#[test]
fn a_canary_refusing_30_percent_is_rolled_back_within_two_intervals() {
    // Active health checks would take the refusing endpoints out of the
    // selection (their job); this test is about the rollout's analysis.
    let mut s = Scenario::tcp_echo_opts(
        "rollout-refused",
        &[
            ("service-entry.yaml", REFUSING_CANARY),
            (
                "virtual-service.yaml",
                &tcp_echo_rule("examples/vs-all-v1.yaml"),
            ),
        ],
        &["--health-interval", "0"],
    );
    let listening: Vec<String> = (2..=8).map(|i| format!("127.0.0.{i}:19002")).collect();
    let listening: Vec<&str> = listening.iter().map(String::as_str).collect();
    let _canary = echo_backend(&s.netns, Some(&s.cgroup), "two", &listening);
    // About 200 connections a second, 40 of them to the canary at 20%.
    s.client.stream_start_paced(SERVICE_V4, 5);
    let clocks = (traffic_shift_tests::monotonic_ns(), now_ms());
    let interval = 2_000;
    s.agent.write_rules(
        "rollout.yaml",
        tcp_echo_rollout(
            "  - setWeight: 20
  - analysis:
      interval: 2s
      count: 3
      minSamples: 10
      metrics:
      - connectionSuccessRate: {min: 95}
  - setWeight: 50
  - setWeight: 100
",
        ),
    );
    let rolled = s
        .agent
        .wait_rollout(NAME, "rolled back", WAIT, |r| r.phase == Phase::Degraded);
    let after_rollback = s.agent.rollout(NAME).expect("rollout");
    let connections = s.client.stream_stop();
    assert_eq!(weights(&rolled), [(Some(0), 20), (None, 0)], "{rolled:#?}");
    let (set, back) = (rolled.weights[0].at_ms, rolled.weights[1].at_ms);
    println!(
        "rolled back {} ms after the canary got 20% ({}): {}",
        back - set,
        rolled.message,
        rolled.history.len()
    );
    assert!(
        back - set <= 2 * interval,
        "rolled back {} ms after the step began, more than two intervals",
        back - set
    );
    // The canary's endpoint table is smooth over ten endpoints, three of
    // which refuse: any n connections in a row have 30% of n refused to
    // within 3 (one for each refusing endpoint), so 70% to within 300/n.
    let failed_interval = rolled.history.last().expect("the failed interval");
    let rate = &failed_interval.metrics[0];
    let samples = float(rate.samples.expect("samples"));
    assert!(
        (rate.value.expect("a value") - 70.0).abs() <= 300.0 / samples + 0.01,
        "{rate:?}"
    );
    assert!(
        rolled.message.contains("connectionSuccessRate = 7")
            && rolled.message.contains("(outside >= 95)"),
        "{}",
        rolled.message
    );
    assert_eq!(after_rollback.canary_in_force, Some(0));
    // Every failed connection was one of the canary's, while it had 20%:
    // at most 20% x 30% of the connections made in that time, and none
    // after the rollback.
    let wall = |mono_ns: u64| clocks.1 + (mono_ns.saturating_sub(clocks.0)) / 1_000_000;
    let during: Vec<_> = connections
        .iter()
        .filter(|c| wall(c.start_ns) + 1 >= set && wall(c.connected_ns) <= back + 1)
        .collect();
    let failed_during = during.iter().filter(|c| c.answer.is_err()).count();
    let failed_after = connections
        .iter()
        .filter(|c| wall(c.start_ns) > back + 50 && c.answer.is_err())
        .count();
    let failed = connections.iter().filter(|c| c.answer.is_err()).count();
    println!(
        "{} connections in all, {} while the canary had 20%, {failed_during} of them failed, {failed} failed in all, {failed_after} after the rollback",
        connections.len(),
        during.len()
    );
    assert_eq!(failed_after, 0, "no failure once all traffic is on v1");
    assert!(
        float(failed) <= float(during.len()) * 0.2 * 0.3 + 3.0,
        "{failed} failed connections, more than the canary's 20% x 30% of {}",
        during.len()
    );
    assert!(
        failed > 0,
        "the canary refused some: the analysis had a reason"
    );
    let (one, two) = s.client.burst(SERVICE_V4, 100);
    assert_eq!((one, two), (100, 0), "all to stable after the rollback");
}

#[test]
fn an_interval_without_traffic_is_inconclusive_and_never_promotes() {
    let mut s = Scenario::tcp_echo("rollout-idle", &tcp_echo_rule("examples/vs-all-v1.yaml"));
    s.agent.write_rules(
        "rollout.yaml",
        tcp_echo_rollout(
            "  - setWeight: 10
  - analysis:
      interval: 1s
      inconclusiveLimit: 1
      metrics:
      - connectionSuccessRate: {min: 99}
  - setWeight: 100
",
        ),
    );
    let first = s
        .agent
        .wait_rollout(NAME, "ended an interval", WAIT, |r| !r.history.is_empty());
    assert_eq!(first.step, 1, "still at the analysis: {first:#?}");
    assert_eq!(first.canary_in_force, Some(10));
    let note = &first.history[0].metrics[0];
    assert_eq!(note.note, "0 connections, fewer than minSamples 1");
    let rolled = s
        .agent
        .wait_rollout(NAME, "rolled back", WAIT, |r| r.phase == Phase::Degraded);
    assert_eq!(
        weights(&rolled),
        [(Some(0), 10), (None, 0)],
        "never promoted: {rolled:#?}"
    );
    assert!(
        rolled
            .history
            .iter()
            .all(|r| r.outcome == traffic_shift_agent::rollout::Outcome::Inconclusive),
        "{rolled:#?}"
    );
    assert!(
        rolled
            .message
            .contains("2 inconclusive interval(s), more than inconclusiveLimit 1"),
        "{}",
        rolled.message
    );
    let metrics = s.agent.metrics();
    assert_eq!(
        metric(
            &metrics,
            "traffic_shift_rollout_analysis_runs_total",
            &[
                ("rollout", NAME),
                ("metric", "connectionSuccessRate"),
                ("result", "inconclusive")
            ]
        ),
        2
    );
}

/// `traffic-shift ARGS` against the scenario's agent: its exit code, and
/// its stdout and stderr together.
fn ctl(s: &Scenario, args: &[&str]) -> (Option<i32>, String) {
    let out = s.agent.ctl(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The steps of the command tests: 20%, wait for `promote`, 50%, an hour,
/// 100%.
const WAITING_STEPS: &str = "  - setWeight: 20
  - pause: {}
  - setWeight: 50
  - pause: {duration: 1h}
  - setWeight: 100
";

#[test]
fn abort_pause_resume_promote_and_retry_are_honoured() {
    let mut s = Scenario::tcp_echo(
        "rollout-commands",
        &tcp_echo_rule("examples/vs-all-v1.yaml"),
    );
    s.agent
        .write_rules("rollout.yaml", tcp_echo_rollout(WAITING_STEPS));
    let paused = s
        .agent
        .wait_rollout(NAME, "paused at the pause step", WAIT, |r| {
            r.phase == Phase::Paused && r.pause_cause == Some(PauseCause::PauseStep)
        });
    assert_eq!((paused.step, paused.canary_in_force), (1, Some(20)));
    assert_eq!(s.client.burst(SERVICE_V4, 100), (80, 20));
    // `resume` is not how a pause step goes on; it says what is.
    let (code, text) = ctl(&s, &["rollout", "resume", "tcp-echo"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(
            "waits at a `pause: {}` step: `traffic-shift rollout promote default/tcp-echo` goes on"
        ),
        "{text}"
    );
    let (code, text) = ctl(&s, &["rollout", "promote", "tcp-echo"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        text.trim(),
        "rollout default/tcp-echo promoted: Progressing at step 3/5, canary 50%"
    );
    assert_eq!(s.client.burst(SERVICE_V4, 100), (50, 50));
    let (code, text) = ctl(&s, &["rollout", "pause", "tcp-echo"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(s.agent.rollout(NAME).unwrap().phase, Phase::Paused);
    let (code, text) = ctl(&s, &["rollout", "resume", "tcp-echo"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(s.agent.rollout(NAME).unwrap().phase, Phase::Progressing);

    // Abort: all to stable at once; open connections keep their backend.
    let held = s.client.call(&format!("hold {SERVICE_V4} 10"));
    let held_answers = held["answers"].clone();
    assert_eq!(
        held_answers
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| *a == "two")
            .count(),
        5,
        "{held}"
    );
    let (code, text) = ctl(&s, &["rollout", "abort", "tcp-echo"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        text.trim(),
        "rollout default/tcp-echo aborted: Degraded at step 3/5, canary 0%"
    );
    assert_eq!(
        s.client.burst(SERVICE_V4, 100),
        (100, 0),
        "100% stable at once"
    );
    assert_eq!(
        s.client.call("held")["answers"],
        held_answers,
        "open connections kept"
    );
    let listed = ctl(&s, &["get", "rollouts"]).1;
    let row: Vec<&str> = listed.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..4],
        ["default/tcp-echo", "Degraded", "3/5", "0"],
        "{listed}"
    );

    // Retry starts over.
    let (code, text) = ctl(&s, &["rollout", "retry", "tcp-echo"]);
    assert_eq!(code, Some(0), "{text}");
    s.agent.wait_canary(NAME, 20, WAIT);
    assert_eq!(s.client.burst(SERVICE_V4, 100), (80, 20));
}

#[test]
fn a_hand_edit_pauses_the_rollout_and_stays_in_force_until_resume() {
    let mut s = Scenario::tcp_echo(
        "rollout-hand-edit",
        &tcp_echo_rule("examples/vs-all-v1.yaml"),
    );
    s.agent
        .write_rules("rollout.yaml", tcp_echo_rollout(WAITING_STEPS));
    s.agent.wait_canary(NAME, 20, WAIT);
    let edit = tcp_echo_rule("examples/vs-20-v2.yaml")
        .replace("weight: 80", "weight: 70")
        .replace("weight: 20", "weight: 30");
    s.agent.write_rules("virtual-service.yaml", edit);
    let edited = s
        .agent
        .wait_rollout(NAME, "paused by the hand edit", WAIT, |r| {
            r.pause_cause == Some(PauseCause::HandEdit)
        });
    assert_eq!(edited.phase, Phase::Paused);
    assert_eq!(edited.canary_in_force, Some(30), "the edit is in force");
    assert!(
        edited
            .message
            .contains("were edited by hand (canary 30% as written, was 0%)"),
        "{}",
        edited.message
    );
    assert!(
        s.agent.log_text().contains("were edited by hand"),
        "the pause is logged"
    );
    assert_eq!(
        s.client.burst(SERVICE_V4, 100),
        (70, 30),
        "the human's weights"
    );
    let status = ctl(&s, &["rollout", "status", "tcp-echo"]).1;
    assert!(status.contains("Phase:      Paused"), "{status}");
    assert!(
        status.contains("(as edited by hand; the rollout's is 20%)"),
        "{status}"
    );
    let (code, text) = ctl(&s, &["rollout", "resume", "tcp-echo"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        s.client.burst(SERVICE_V4, 100),
        (80, 20),
        "taken back at its step"
    );
}

#[test]
fn an_agent_killed_mid_rollout_resumes_at_the_same_step() {
    let mut s = Scenario::tcp_echo("rollout-kill", &tcp_echo_rule("examples/vs-all-v1.yaml"));
    s.agent.write_rules(
        "rollout.yaml",
        tcp_echo_rollout(
            "  - setWeight: 10
  - pause: {duration: 6s}
  - setWeight: 30
  - pause: {}
  - setWeight: 100
",
        ),
    );
    let before = s.agent.wait_canary(NAME, 10, WAIT);
    assert_eq!(before.step, 1);
    s.agent.process.signal_and_wait(libc::SIGKILL);
    // The pinned tables keep steering new connections while no agent runs.
    assert_eq!(s.client.burst(SERVICE_V4, 100), (90, 10));
    s.agent.restart(&[]);
    let resumed = s
        .agent
        .rollout(NAME)
        .expect("the rollout after the restart");
    assert_eq!(resumed.step, 1, "the same step: {resumed:#?}");
    assert_eq!(resumed.canary_in_force, Some(10));
    assert_eq!(weights(&resumed), [(Some(0), 10)], "not applied again");
    assert_eq!(s.client.burst(SERVICE_V4, 100), (90, 10));
    let next = s
        .agent
        .wait_rollout(NAME, "ended the pause", WAIT, |r| r.step == 3);
    assert_eq!(
        weights(&next),
        [(Some(0), 10), (Some(2), 30)],
        "each step once"
    );
    // The pause kept its clock across the restart: 6 s from its start.
    let pause = next.weights[1].at_ms - next.weights[0].at_ms;
    println!("pause of 6 s across a kill -9 and a restart: {pause} ms");
    assert!(pause >= 6_000, "{pause} ms");
    assert_eq!(s.client.burst(SERVICE_V4, 100), (70, 30));
}

#[test]
fn an_http_canary_answering_503_to_30_percent_is_rolled_back() {
    // Retries off: Istio's default (two attempts on 503) would answer most
    // of the canary's 503s from a retry, and count the retry's answer (as
    // `istio_requests_total` does).
    let vs = bookinfo_rule("virtual-service.yaml")
        .replace("  - route:", "  - retries: {attempts: 0}\n    route:");
    let mut s = Scenario::bookinfo(
        "rollout-http",
        &[("virtual-service.yaml", &vs)],
        &["--health-interval", "0"],
    );
    // v3 answers 503 to 30 of every 100 requests from now on.
    let set = s.client.call("http 127.0.0.1:19083 /failrate/30 1 1 close");
    assert_eq!(set["status"]["200"], 1, "{set}");
    let started = s
        .client
        .call(&format!("http_stream_start {REVIEWS} /reviews/1 4"));
    assert!(started["started"].is_u64(), "{started}");
    s.agent.write_rules(
        "rollout.yaml",
        "apiVersion: rollouts.traffic-shift.io/v1alpha1
kind: Rollout
metadata:
  name: reviews
spec:
  target:
    virtualService: reviews
    stable: v1
    canary: v3
  steps:
  - setWeight: 50
  - analysis:
      interval: 2s
      count: 3
      minSamples: 20
      metrics:
      - requestSuccessRate: {min: 95}
      - requestDurationP99: {max: 1000}
  - setWeight: 100
",
    );
    let rolled = s
        .agent
        .wait_rollout("default/reviews", "rolled back", WAIT, |r| {
            r.phase == Phase::Degraded
        });
    let totals = s.client.call("http_stream_stop");
    println!(
        "{} ms after the canary got 50%: {}; requests while it ran: {}, answers {}, status {}",
        rolled.weights[1].at_ms - rolled.weights[0].at_ms,
        rolled.message,
        totals["requests"],
        totals["answers"],
        totals["status"]
    );
    // 30 of every 100 requests in a row fail at v3: over n of them, 70%
    // to within 100/n (and one in flight at each end of the interval).
    let rate = &rolled.history.last().expect("the failed interval").metrics[0];
    assert_eq!(rate.name, "requestSuccessRate");
    let samples = float(rate.samples.expect("samples"));
    assert!(
        (rate.value.expect("a value") - 70.0).abs() <= 300.0 / samples + 0.01,
        "{rate:?}"
    );
    assert!(
        rolled.message.contains("(outside >= 95)"),
        "{}",
        rolled.message
    );
    assert!(
        rolled.weights[1].at_ms - rolled.weights[0].at_ms <= 2 * 2_000,
        "rolled back within two intervals: {rolled:#?}"
    );
    assert_eq!(weights(&rolled), [(Some(0), 50), (None, 0)]);
    let after = s
        .client
        .call(&format!("http {REVIEWS} /reviews/1 100 2 keepalive"));
    assert_eq!(after["answers"]["v1"], 100, "all to stable: {after}");
}

#[test]
fn a_prometheus_query_decides_a_step() {
    let mut s = Scenario::tcp_echo("rollout-prom", &tcp_echo_rule("examples/vs-all-v1.yaml"));
    let prometheus = Prometheus::start(&[s.agent.metrics_addr()]);
    prometheus.wait_for_scrape(s.agent.metrics_addr());
    // `> 0` filters a zero out: before the first connection to v2 the query
    // has no value, which is inconclusive, not a failure.
    let query = "sum(istio_tcp_connections_opened_total{destination_version=\"v2\"}) > 0";
    s.agent.write_rules(
        "rollout.yaml",
        tcp_echo_rollout(&format!(
            "  - setWeight: 10
  - analysis:
      interval: 1s
      inconclusiveLimit: 30
      metrics:
      - name: canary-opened
        prometheus:
          address: http://{}
          query: '{query}'
          min: 10
  - setWeight: 100
",
            prometheus.addr()
        )),
    );
    // Before any connection to v2 the query has no series: inconclusive.
    let first = s
        .agent
        .wait_rollout(NAME, "ended an interval", WAIT, |r| !r.history.is_empty());
    let note = &first.history[0].metrics[0];
    assert_eq!(first.step, 1);
    assert_eq!(note.value, None, "{first:#?}");
    assert_eq!(note.note, "the query returned no series");
    let (one, two) = s.client.burst(SERVICE_V4, 100);
    assert_eq!((one, two), (90, 10));
    let done = s
        .agent
        .wait_rollout(NAME, "completed", WAIT, |r| r.phase == Phase::Healthy);
    let passed = done
        .history
        .iter()
        .find(|r| r.outcome == traffic_shift_agent::rollout::Outcome::Successful)
        .expect("a successful interval");
    println!("decided by Prometheus: {passed:?}");
    assert_eq!(passed.metrics[0].name, "canary-opened");
    assert!(passed.metrics[0].value.unwrap() >= 10.0, "{passed:?}");
    assert_eq!(weights(&done), [(Some(0), 10), (Some(2), 100)]);

    // The dashboard's rollout panels have data once Prometheus scraped the
    // rollout's end.
    prometheus.wait_for_next_scrape(s.agent.metrics_addr());
    let dashboard = load(&repo_dashboard());
    let vars = variables(&dashboard);
    let values: BTreeMap<&str, &str> = vars.iter().map(|v| (v.as_str(), ALL)).collect();
    let rollout_queries: Vec<_> = raw_queries(&dashboard)
        .into_iter()
        .filter(|q| q.panel.starts_with("Rollouts:"))
        .collect();
    assert_eq!(rollout_queries.len(), 4, "{rollout_queries:?}");
    for q in &rollout_queries {
        let expr = substitute(&q.expr, &values, "1m");
        assert!(
            !prometheus.query(&expr).is_empty(),
            "{}: no data for {expr}",
            q.panel
        );
    }
}
