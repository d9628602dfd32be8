//! Scenarios 1 and 2: the new-TCP-connection rate and latency, and one long stream's
//! throughput, through traffic-shift's two paths (connect-time rewrite, sk_lookup
//! gateway) side by side with the backend reached directly and the user-space
//! proxies.

use std::{fmt::Write as _, fs, path::Path};

use anyhow::{Result, ensure};

use super::{
    bpf_cost,
    client::Clients,
    client::wait_answers,
    guards::Processes,
    report::{Skipped, json_escape, median, unavailable},
};

pub const SCENARIO: &str = "new TCP connections";
pub const STREAM_SCENARIO: &str = "one long TCP stream";
pub const CONCURRENCY: [u32; 3] = [1, 16, 64];
/// The concurrency of the run that measures the kernel's cost per connection.
pub const BPF_COST_CONCURRENCY: u32 = 16;
/// Issue 21's goal: the kernel's time per connection, all programs.
pub const BPF_GOAL_NS: f64 = 500.0;

/// Issue 21's goals, as ratios to the backend reached directly: new connections (goal
/// 4)...
pub const CONN_GOAL: f64 = 0.97;
/// ...and one long stream (goal 3): once connected, neither traffic-shift path touches
/// the packets, so a stream should go as fast as to the backend directly.
pub const STREAM_GOAL: f64 = 0.99;

/// One thing a client connects to.
pub struct Contender {
    pub name: &'static str,
    /// Scenario 1's address (tcp-echo behind it).
    pub target: &'static str,
    /// Scenario 2's address (the sinks behind it).
    pub stream_target: &'static str,
    /// The client must be in the agent's cgroup (connect-time rewrite).
    pub in_cgroup: bool,
}

/// The median over repetitions of one (concurrency, contender).
#[derive(Default)]
pub struct Row {
    pub conn_per_sec: Vec<f64>,
    pub p50_us: Vec<f64>,
    pub p99_us: Vec<f64>,
    pub errors: u64,
}

/// Scenario 2's median over repetitions of one contender.
#[derive(Default)]
pub struct StreamRow {
    pub gbit_per_sec: Vec<f64>,
    pub errors: u64,
}

/// The contenders that are always there: the v1 backend directly, and
/// traffic-shift's two paths.
pub fn own_contenders() -> Vec<Contender> {
    vec![
        Contender {
            name: "direct",
            target: "127.0.0.1:19001",
            stream_target: "127.0.0.1:19201",
            in_cgroup: false,
        },
        Contender {
            name: "connect-time",
            target: "127.100.0.1:9000",
            stream_target: "127.100.0.2:9100",
            in_cgroup: true,
        },
        Contender {
            name: "gateway",
            target: "127.0.0.1:31400",
            stream_target: "127.0.0.1:31401",
            in_cgroup: false,
        },
    ]
}

/// Scenario 1's smoke check of `contender`: `None` when it answers, else why not.
pub fn conn_check(clients: Clients<'_>, contender: &Contender) -> Result<Option<String>> {
    clients.conn(contender, 1, 0.1, 0.0).map(|r| {
        (r.connections == 0 || r.errors > 0)
            .then(|| format!("{} connections, {} errors", r.connections, r.errors))
    })
}

/// Smoke check per scenario (this also waits for the proxies to listen): the
/// contenders that answer in scenario 1, and in scenario 2. One that does not answer
/// is left out of that scenario with the reason (in `skipped`), the bench goes on;
/// only the direct backend must answer.
pub fn ready<'c>(
    clients: Clients<'_>,
    contenders: &'c [Contender],
    procs: &mut Processes,
    envoy_log: &Path,
    skipped: &mut Vec<Skipped>,
) -> Result<(Vec<&'c Contender>, Vec<&'c Contender>)> {
    let (mut ready, mut stream_ready) = (Vec::new(), Vec::new());
    for contender in contenders {
        let conn_check = || conn_check(clients, contender);
        let stream_check = || {
            clients.stream(contender, 0.1, 0.0).map(|r| {
                (r.bytes == 0 || r.errors > 0)
                    .then(|| format!("{} bytes sent, {} errors", r.bytes, r.errors))
            })
        };
        for (scenario, target, reason) in [
            (
                SCENARIO,
                contender.target,
                wait_answers(conn_check, || procs.exited(contender.name).is_some()),
            ),
            (
                STREAM_SCENARIO,
                contender.stream_target,
                wait_answers(stream_check, || procs.exited(contender.name).is_some()),
            ),
        ] {
            let Some(r) = reason else {
                if scenario == SCENARIO {
                    ready.push(contender);
                } else {
                    stream_ready.push(contender);
                }
                continue;
            };
            ensure!(
                contender.name != "direct",
                "{scenario}: the direct backend {target} does not answer: {r}"
            );
            let mut why = format!("{target} does not answer ({r})");
            if let Some(status) = procs.exited(contender.name) {
                let _ = write!(why, "; it exited ({status})");
            }
            if contender.name == "envoy" {
                let log = fs::read_to_string(envoy_log).unwrap_or_default();
                if let Some(last) = log.lines().rev().find(|l| !l.trim().is_empty()) {
                    let _ = write!(why, "; its log ends: {}", last.trim());
                }
            }
            println!(
                "bench: contender left out of {scenario}: {}: {why}",
                contender.name
            );
            skipped.push(Skipped {
                scenario,
                name: contender.name,
                why,
            });
        }
    }
    Ok((ready, stream_ready))
}

/// Scenarios 1 and 2's cells, `reps` times each: their rows, per concurrency and
/// contender, and per stream contender.
pub fn measure(
    clients: Clients<'_>,
    (ready, stream_ready): (&[&Contender], &[&Contender]),
    reps: u32,
    (duration, warmup): (f64, f64),
    check_interrupted: &impl Fn() -> Result<()>,
) -> Result<(Vec<Vec<Row>>, Vec<StreamRow>)> {
    let mut rows: Vec<Vec<Row>> = CONCURRENCY
        .iter()
        .map(|_| ready.iter().map(|_| Row::default()).collect())
        .collect();
    let mut stream_rows: Vec<StreamRow> =
        stream_ready.iter().map(|_| StreamRow::default()).collect();
    // Interleaved: every cell once per repetition, so a slow phase of the machine
    // spreads over all contenders instead of hitting one.
    for rep in 1..=reps {
        for (ci, &concurrency) in CONCURRENCY.iter().enumerate() {
            for (ki, contender) in ready.iter().enumerate() {
                check_interrupted()?;
                let r = clients.conn(contender, concurrency, duration, warmup)?;
                eprintln!(
                    "bench: rep {rep}/{reps} c={concurrency:<2} {:<12} {:>8.0} conn/s p50 {:>5} µs p99 {:>6} µs errors {}",
                    contender.name, r.conn_per_sec, r.p50_us, r.p99_us, r.errors
                );
                let row = &mut rows[ci][ki];
                row.conn_per_sec.push(r.conn_per_sec);
                row.p50_us.push(r.p50_us);
                row.p99_us.push(r.p99_us);
                row.errors += r.errors;
            }
        }
        // Direct first in odd repetitions and last in even ones: a machine that
        // speeds up or slows down through a repetition favours no contender
        // (each contender's ratio is to the direct run of its own repetition).
        let order: Vec<usize> = if rep % 2 == 1 {
            (0..stream_ready.len()).collect()
        } else {
            (0..stream_ready.len()).rev().collect()
        };
        for ki in order {
            let contender = stream_ready[ki];
            check_interrupted()?;
            let r = clients.stream(contender, duration, warmup)?;
            eprintln!(
                "bench: rep {rep}/{reps} stream {:<12} {:>7.2} Gbit/s errors {}",
                contender.name, r.gbit_per_sec, r.errors
            );
            stream_rows[ki].gbit_per_sec.push(r.gbit_per_sec);
            stream_rows[ki].errors += r.errors;
        }
    }
    Ok((rows, stream_rows))
}

/// Each run's ratio to the run of `direct` of the same repetition.
fn paired_ratios(runs: &[f64], direct: &[f64]) -> Vec<f64> {
    runs.iter().zip(direct).map(|(run, d)| run / d).collect()
}

/// The lowest and the highest of `values`.
fn spread(values: &[f64]) -> (f64, f64) {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (low, high)
}

/// The markdown tables (with the header), the JSON document and the goal lines.
pub fn report(
    header: &str,
    (contenders, rows): (&[&Contender], &[Vec<Row>]),
    (stream_contenders, stream_rows): (&[&Contender], &[StreamRow]),
    skipped: &[Skipped],
    more: impl FnOnce(&mut String, &mut Vec<String>, &mut String),
) -> (String, String, String) {
    let mut md = format!(
        "{header}\n\n| scenario | concurrency | contender | conn/s | vs direct | p50 µs | p99 µs | errors |\n\
         |---|---:|---|---:|---:|---:|---:|---:|\n"
    );
    let mut json_rows = Vec::new();
    let mut goals = String::new();
    let mut goal = |what: &str, least: f64, name: &str, cell: &str, ratio: f64| {
        if name == "connect-time" || name == "gateway" {
            let met = if ratio >= least { "met" } else { "not met" };
            let _ = writeln!(
                goals,
                "goal: {what} >= {least} of direct: {name:<12} {cell}: {ratio:.3} {met}"
            );
        }
    };
    for (ci, concurrency) in CONCURRENCY.iter().enumerate() {
        let direct = median(&rows[ci][0].conn_per_sec);
        for (ki, contender) in contenders.iter().enumerate() {
            let row = &rows[ci][ki];
            let rate = median(&row.conn_per_sec);
            let ratio = rate / direct;
            let (p50, p99) = (median(&row.p50_us), median(&row.p99_us));
            let _ = writeln!(
                md,
                "| {SCENARIO} | {concurrency} | {} | {rate:.0} | {ratio:.3} | {p50:.0} | {p99:.0} | {} |",
                contender.name, row.errors
            );
            json_rows.push(format!(
                "    {{\"scenario\": \"{SCENARIO}\", \"concurrency\": {concurrency}, \"contender\": \"{}\", \
                 \"target\": \"{}\", \"conn_per_sec\": {rate:.0}, \"ratio_to_direct\": {ratio:.4}, \
                 \"p50_us\": {p50:.0}, \"p99_us\": {p99:.0}, \"errors\": {}, \"conn_per_sec_reps\": {:?}}}",
                contender.name, contender.target, row.errors, row.conn_per_sec
            ));
            goal(
                "connection rate",
                CONN_GOAL,
                contender.name,
                &format!("concurrency {concurrency:<2}"),
                ratio,
            );
        }
    }
    unavailable(
        &mut md,
        &mut json_rows,
        skipped,
        SCENARIO,
        "all | ",
        "- | - | - | - | - |",
    );
    let _ = write!(
        md,
        "\n| scenario | contender | Gbit/s, median (slowest–fastest) | vs direct: median of each run's ratio to the direct run of its repetition (lowest–highest) | errors |\n|---|---|---:|---:|---:|\n"
    );
    let direct: &[f64] = stream_rows.first().map_or(&[], |r| &r.gbit_per_sec);
    for (contender, row) in stream_contenders.iter().zip(stream_rows) {
        let gbit = median(&row.gbit_per_sec);
        let (low, high) = spread(&row.gbit_per_sec);
        let ratios = paired_ratios(&row.gbit_per_sec, direct);
        let ratio = median(&ratios);
        let (ratio_low, ratio_high) = spread(&ratios);
        let _ = writeln!(
            md,
            "| {STREAM_SCENARIO} | {} | {gbit:.2} ({low:.2}–{high:.2}) | {ratio:.3} ({ratio_low:.3}–{ratio_high:.3}) | {} |",
            contender.name, row.errors
        );
        json_rows.push(format!(
            "    {{\"scenario\": \"{STREAM_SCENARIO}\", \"contender\": \"{}\", \"target\": \"{}\", \
             \"gbit_per_sec\": {gbit:.3}, \"ratio_to_direct\": {ratio:.4}, \"ratio_to_direct_reps\": {:?}, \
             \"errors\": {}, \"gbit_per_sec_reps\": {:?}}}",
            contender.name, contender.stream_target, ratios, row.errors, row.gbit_per_sec
        ));
        goal(
            "stream throughput",
            STREAM_GOAL,
            contender.name,
            "one stream    ",
            ratio,
        );
    }
    unavailable(
        &mut md,
        &mut json_rows,
        skipped,
        STREAM_SCENARIO,
        "",
        "- | - | - |",
    );

    more(&mut md, &mut json_rows, &mut goals);
    let json = format!(
        "{{\n  \"header\": \"{}\",\n  \"goal_ratio_to_direct\": {{ \"connections\": {CONN_GOAL}, \"stream\": {STREAM_GOAL} }},\n  \"results\": [\n{}\n  ]\n}}\n",
        json_escape(header),
        json_rows.join(",\n")
    );
    (md, json, goals)
}

/// The kernel's cost per connection of each program on each of traffic-shift's
/// paths (`--only tcp`): a table, its JSON rows and the goal line per path.
pub fn report_bpf(
    costs: &[(&str, Result<bpf_cost::Cost, String>)],
    md: &mut String,
    json_rows: &mut Vec<String>,
    goals: &mut String,
) {
    md.push_str(&bpf_cost::table_header(
        "contender",
        "---",
        BPF_COST_CONCURRENCY,
    ));
    for (name, cost) in costs {
        match cost {
            Ok(cost) => {
                let total = cost.total();
                let _ = writeln!(md, "| {SCENARIO} BPF cost | {name} | {}", cost.cells());
                let mut row = cost.json();
                row.insert("scenario".into(), format!("{SCENARIO} BPF cost").into());
                row.insert("contender".into(), (*name).into());
                json_rows.push(format!("    {}", serde_json::Value::Object(row)));
                let met = if total <= BPF_GOAL_NS {
                    "met"
                } else {
                    "not met"
                };
                let _ = writeln!(
                    goals,
                    "goal: BPF time per connection <= {BPF_GOAL_NS} ns: {name:<12} {total:.0} ns {met}"
                );
            }
            Err(why) => {
                let _ = writeln!(
                    md,
                    "| {SCENARIO} BPF cost | {name} |{}",
                    bpf_cost::not_measured()
                );
                let _ = writeln!(md, "\n{name}: BPF cost not measured: {why}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streams_ratio_is_to_the_direct_run_of_its_own_repetition() {
        // The machine halves its speed in the second repetition: each run is
        // 0.99 of the direct run beside it, whatever the medians say.
        let direct = [20.0, 10.0, 20.0];
        let path = [19.8, 9.9, 19.8];
        let ratios = paired_ratios(&path, &direct);
        assert!(
            ratios.iter().all(|r| (r - 0.99).abs() < 1e-12),
            "{ratios:?}"
        );
        assert_eq!(spread(&[3.0, 1.0, 2.0]), (1.0, 3.0));
    }
}
