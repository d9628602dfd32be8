//! End-to-end: a shift under load, the reliability bar. A client opens new
//! connections back to back (several hundred a second) while the weights go
//! 100/0 to 0/100 in steps of 10 every 100 ms: no connection fails, held
//! connections are never reset, and the share of v2 in each step is within
//! a stated tolerance of its weight. Run as root (`cargo xtask test`).
//!
//! When each step was in force is known without looking at the answers (that
//! would be circular). The test takes two times per step on the clock the
//! client stamps its connections with (`CLOCK_MONOTONIC`, see
//! `Agent::write_rules_timed`): the step's weights cannot be in force before
//! its file is renamed into place, and are in force once its `applied` event
//! has been read (the agent writes it after the map update). A connection
//! whose `connect` (the hook runs inside it) lies wholly between the event of
//! step k and the rename of step k+1 was routed by step k's weights, surely.
//! One that overlaps a rename-to-event interval may have had either: it is
//! not counted in a step's share, and those of each interval are checked
//! against one switch from the old weights to the new instead.

use std::time::Duration;

use serde_json::{Value, json};
use traffic_shift_datapath::compile::smooth_sequence;
use traffic_shift_tests::{Client, SERVICE_V4, Scenario, Streamed, monotonic_ns, tcp_echo_rule};

/// Connections opened before the shift and kept open through it.
const HELD: usize = 20;
/// The shift: v2's weight in each step, one step every `STEP`.
const V2_WEIGHTS: [u64; 11] = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
const STEP: Duration = Duration::from_millis(100);
/// Connections each step must have surely under its weights (between its
/// event and the next rename), or its share check says little. A step lasts
/// longer than `STEP` only until it has them: when the agent was slow to
/// apply it or the client was not scheduled (a loaded machine). The output
/// shows how long each step lasted.
const MIN_PER_STEP: u64 = 20;
/// How long a step may wait for those connections before the test gives up.
const MAX_STEP: Duration = Duration::from_secs(3);
/// The tolerance, in connections: a sure window is one run of consecutive
/// picks from one table (this client is the route's only user, so the
/// route's cursor advances once per connection), and in the smooth sequence
/// of two destinations every run of N picks gives v2 N * weight / 100 to
/// within one (`smooth_windows_are_within_the_tolerance` checks the tables of
/// these steps).
const TOLERANCE: u64 = 1;
/// "Several hundred per second", the bar's client.
const MIN_RATE: f64 = 300.0;

#[test]
fn shift_under_load_loses_nothing_and_follows_every_step() {
    let mut s = Scenario::tcp_echo("shift-load", &tcp_echo_rule("examples/vs-all-v1.yaml"));
    let held = s.client.call(&format!("hold {SERVICE_V4} {HELD}"));
    assert_eq!(
        held["answers"],
        json!(vec!["one"; HELD]),
        "held connections start on v1: {held}"
    );

    let shift = run_shift(&mut s);
    let connections = &shift.connections;

    let failed: Vec<&Streamed> = connections.iter().filter(|c| c.answer.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} connections failed during the shift (ms since the first write, error): {:?}",
        failed.len(),
        connections.len(),
        failed
            .iter()
            .take(10)
            .map(|c| (
                ms(c.start_ns.saturating_sub(shift.steps[0].renamed_ns)),
                &c.answer
            ))
            .collect::<Vec<_>>()
    );
    assert!(
        connections
            .iter()
            .all(|c| matches!(c.answer.as_deref(), Ok("one" | "two"))),
        "every answer is `one` or `two`"
    );
    assert!(
        connections
            .windows(2)
            .all(|w| w[0].start_ns <= w[0].connected_ns && w[0].connected_ns <= w[1].start_ns),
        "the stream is sequential and its times monotonic"
    );
    for (when, reply) in [
        ("halfway through the shift", &shift.held_halfway),
        ("after the shift", &shift.held_after),
    ] {
        assert_eq!(
            reply["answers"],
            json!(vec!["one"; HELD]),
            "held connections stay open on v1 {when}: {reply}"
        );
    }

    let rate = shift.report_rate();
    let problems = check_steps(&shift.steps, connections);
    assert!(
        problems.is_empty(),
        "the shift under load missed the bar:\n{}",
        problems.join("\n")
    );
    assert!(
        rate >= MIN_RATE,
        "the client made {rate:.0} connections/s, want >= {MIN_RATE} (the bar: several hundred per second)"
    );
}

/// The tolerance holds for the tables the shift goes through: in the kernel's
/// smooth sequence for each step's weights, every run of N consecutive picks
/// (from any position, wrapping around, as the cursor does) gives v2
/// N * weight / 100 to within `TOLERANCE`.
#[test]
fn smooth_windows_are_within_the_tolerance() {
    for v2 in V2_WEIGHTS {
        let weights = [
            u32::try_from(100 - v2).expect("fits"),
            u32::try_from(v2).expect("fits"),
        ];
        let sequence = smooth_sequence(&weights);
        for start in 0..sequence.len() {
            let mut two = 0;
            for n in 1..=400u64 {
                let slot = (start + usize::try_from(n).expect("fits") - 1) % sequence.len();
                two += u64::from(sequence[slot] == 1);
                assert!(
                    within(two, n, v2, TOLERANCE),
                    "{weights:?}: {two} of the {n} picks from slot {start} are v2"
                );
            }
        }
    }
}

/// One step of the shift as the test timed it.
struct Step {
    v2: u64,
    /// Just before its file was renamed into place.
    renamed_ns: u64,
    /// When its `applied` event was read.
    seen_ns: u64,
}

/// What happened during the shift.
struct Shift {
    steps: Vec<Step>,
    connections: Vec<Streamed>,
    /// `held` halfway (at 50/50) and after the last step.
    held_halfway: Value,
    held_after: Value,
    /// CPU time ts-client used during the stream.
    client_cpu_ms: u64,
}

/// Starts the stream, gives all-v1 one step, writes the 11 steps, lets the
/// last one run its step too, stops the stream.
fn run_shift(s: &mut Scenario) -> Shift {
    let cpu_before = cpu_ms(s.client.pid());
    s.client.stream_start(SERVICE_V4);
    let started_ns = monotonic_ns();
    finish_step(
        &mut s.client,
        &Step {
            v2: 0,
            renamed_ns: started_ns,
            seen_ns: started_ns,
        },
    );
    let mut steps: Vec<Step> = Vec::new();
    let mut held_halfway = Value::Null;
    for v2 in V2_WEIGHTS {
        if let Some(step) = steps.last() {
            finish_step(&mut s.client, step);
        }
        let write = s
            .agent
            .write_rules_timed("virtual-service.yaml", step_rule(v2));
        assert_eq!(
            write.event["result"], "applied",
            "step v2={v2}: {}",
            write.event
        );
        if v2 == 50 {
            // While connections keep coming: the held ones still answer.
            held_halfway = s.client.call("held");
        }
        steps.push(Step {
            v2,
            renamed_ns: write.renamed_ns,
            seen_ns: write.seen_ns,
        });
    }
    finish_step(&mut s.client, steps.last().expect("steps"));
    let connections = s.client.stream_stop();
    let client_cpu_ms = cpu_ms(s.client.pid()) - cpu_before;
    let held_after = s.client.call("held");
    Shift {
        steps,
        connections,
        held_halfway,
        held_after,
        client_cpu_ms,
    }
}

/// Ends a step: sleeps until `STEP` after its rename, then until the stream
/// has `MIN_PER_STEP` connections started since its event (up to `MAX_STEP`).
fn finish_step(client: &mut Client, step: &Step) {
    let end_ns = step.renamed_ns + nanos(STEP);
    let now = monotonic_ns();
    if end_ns > now {
        std::thread::sleep(Duration::from_nanos(end_ns - now));
    }
    while client.stream_count(step.seen_ns) < MIN_PER_STEP
        && monotonic_ns() < step.renamed_ns + nanos(MAX_STEP)
    {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The VirtualService of one step: the shipped 80/20 example with the
/// weights of the step.
fn step_rule(v2: u64) -> String {
    let example = tcp_echo_rule("examples/vs-20-v2.yaml");
    assert!(
        example.matches("weight: 80").count() == 1 && example.matches("weight: 20").count() == 1,
        "vs-20-v2.yaml has one weight 80 and one weight 20:\n{example}"
    );
    let body = example
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    format!("# shift under load: v1 {}, v2 {v2}\n{body}\n", 100 - v2)
        .replace("weight: 80", "weight: V1_WEIGHT")
        .replace("weight: 20", "weight: V2_WEIGHT")
        .replace("V1_WEIGHT", &(100 - v2).to_string())
        .replace("V2_WEIGHT", &v2.to_string())
}

impl Shift {
    /// Prints the stream's rate and the client's CPU use; returns the rate.
    fn report_rate(&self) -> f64 {
        let first = self
            .connections
            .first()
            .expect("the stream made connections");
        let last = self
            .connections
            .last()
            .expect("the stream made connections");
        assert!(
            first.connected_ns < self.steps[0].renamed_ns
                && last.start_ns > self.steps.last().expect("steps").seen_ns,
            "the stream covers the whole shift"
        );
        let stream_ms = ms(last.connected_ns - first.start_ns);
        let rate = float(self.connections.len() as u64) / stream_ms * 1000.0;
        println!(
            "stream: {} connections in {stream_ms:.0} ms, {rate:.0}/s, one at a time; {HELD} held",
            self.connections.len(),
        );
        // A sequential client waits for each answer: its CPU share says how
        // much of each round trip is its own work (user and system time, the
        // kernel's TCP work on its behalf included).
        println!(
            "ts-client used {} ms of CPU in those {stream_ms:.0} ms ({:.0}% of one CPU)",
            self.client_cpu_ms,
            float(self.client_cpu_ms) / stream_ms * 100.0
        );
        rate
    }
}

/// Prints one line per step and returns what missed the bar: each step's
/// sure window has `MIN_PER_STEP` connections and v2's share within
/// `TOLERANCE` of its weight; each rename-to-event interval fits one switch.
fn check_steps(steps: &[Step], connections: &[Streamed]) -> Vec<String> {
    let mut problems = Vec::new();
    println!(
        "step    v1/v2  lasted  applied  | sure: conns  two  expected | unsure: conns  two  fits"
    );
    // Before the first write: the initial all-v1 rules.
    let before: Vec<&Streamed> = connections
        .iter()
        .filter(|c| c.connected_ns < steps[0].renamed_ns)
        .collect();
    let two_before = count_two(&before);
    println!(
        "before  100/-       -        -  |       {:>5}  {two_before:>3}       0.0 |",
        before.len()
    );
    if two_before != 0 {
        problems.push(format!(
            "before the shift (all v1): {two_before} of {} connections answered two",
            before.len()
        ));
    }
    let mut sure_total = before.len();
    let mut unsure_total = 0;
    let last_ns = connections.last().map_or(0, |c| c.connected_ns);
    for (k, step) in steps.iter().enumerate() {
        let end_ns = steps.get(k + 1).map_or(u64::MAX, |next| next.renamed_ns);
        let sure: Vec<&Streamed> = connections
            .iter()
            .filter(|c| c.start_ns >= step.seen_ns && c.connected_ns < end_ns)
            .collect();
        let unsure: Vec<&Streamed> = connections
            .iter()
            .filter(|c| c.connected_ns >= step.renamed_ns && c.start_ns < step.seen_ns)
            .collect();
        sure_total += sure.len();
        unsure_total += unsure.len();
        let old = if k == 0 { 0 } else { steps[k - 1].v2 };
        let fits = one_switch_fits(&unsure, old, step.v2);
        let n = sure.len() as u64;
        let two = count_two(&sure);
        println!(
            "{k:>4}  {:>3}/{:<3}  {:>4.0}ms  {:>5.1}ms  |       {n:>5}  {two:>3}  {:>8.1} |         {:>5}  {:>3}  {}",
            100 - step.v2,
            step.v2,
            ms(end_ns.min(last_ns) - step.renamed_ns),
            ms(step.seen_ns - step.renamed_ns),
            expected(n, step.v2),
            unsure.len(),
            count_two(&unsure),
            if fits { "yes" } else { "NO" },
        );
        if n < MIN_PER_STEP {
            problems.push(format!(
                "step {k} (v2 {}%): only {n} connections surely under its weights, want >= {MIN_PER_STEP}",
                step.v2
            ));
        }
        if !within(two, n, step.v2, TOLERANCE) {
            problems.push(format!(
                "step {k} (v2 {}%): {two} of {n} connections on v2, want {:.1} +- {TOLERANCE}",
                step.v2,
                expected(n, step.v2)
            ));
        }
        if !fits {
            problems.push(format!(
                "step {k}: the {} connections between its rename and its event fit no single switch from v2 {old}% to {}%",
                unsure.len(),
                step.v2
            ));
        }
    }
    println!(
        "{sure_total} connections surely under one step's weights (counted above), {unsure_total} in rename-to-event intervals (checked for one switch only)"
    );
    problems
}

fn count_two(connections: &[&Streamed]) -> u64 {
    connections
        .iter()
        .map(|c| u64::from(c.answer.as_deref() == Ok("two")))
        .sum()
}

/// |100 * two - n * v2| <= 100 * tolerance: `two` of `n` connections is
/// within `tolerance` connections of the share `v2` percent.
fn within(two: u64, n: u64, v2: u64, tolerance: u64) -> bool {
    (100 * two).abs_diff(n * v2) <= 100 * tolerance
}

/// Whether the connections of a rename-to-event interval fit one switch from
/// weight `old` to weight `new`: some split where the ones before are within
/// the tolerance of `old` and the ones after within it of `new`.
fn one_switch_fits(unsure: &[&Streamed], old: u64, new: u64) -> bool {
    let total = count_two(unsure);
    let n = unsure.len() as u64;
    (0..=unsure.len()).any(|j| {
        let before = count_two(&unsure[..j]);
        let j = j as u64;
        within(before, j, old, TOLERANCE) && within(total - before, n - j, new, TOLERANCE)
    })
}

/// v2's ideal count among `n` connections at weight `v2` percent.
fn expected(n: u64, v2: u64) -> f64 {
    float(n * v2) / 100.0
}

#[expect(
    clippy::cast_precision_loss,
    reason = "counts and nanosecond spans of a few seconds, far below 2^52"
)]
fn float(x: u64) -> f64 {
    x as f64
}

fn ms(ns: u64) -> f64 {
    float(ns) / 1e6
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).expect("fits in u64")
}

/// CPU time (user + system) process `pid` has used so far, in ms: fields 14
/// and 15 of `/proc/PID/stat`, in clock ticks of 10 ms (`USER_HZ` is 100).
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The command name (field 2) is in parentheses; fields 3.. follow it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat has a command name")
        .1
        .split_whitespace()
        .collect();
    let ticks = |field: usize| -> u64 { fields[field - 3].parse().expect("clock ticks") };
    (ticks(14) + ticks(15)) * 10
}
