//! Scenario 5, first half: how soon a rule change reaches new connections. A
//! `ts-client` in the agent's cgroup opens connections back to back to
//! `rule-change.local` (127.100.0.4:9000, bench/rules/rule-change/), whose
//! VirtualService sends everything to one subset; `traffic-shift apply` switches it to
//! the other. Measured, on one clock (`CLOCK_MONOTONIC`, read by this process around
//! the `apply` command and by ts-client around each `connect`): from the moment the
//! `apply` command returned to the moment the `connect` of the first connection
//! answered by the new subset returned. Negative: the change was in force before
//! `apply` returned (as the agent answers only once it is). The resolution is one
//! connection of the client's loop (connect, ask, read the answer, close), reported.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use super::{
    client::{Clients, client_command},
    report::median,
};
use crate::cmd;

pub const SCENARIO: &str = "rule change";
pub const TARGET: &str = "127.100.0.4:9000";
/// The goal: a rule change in force for new connections within 10 ms.
const GOAL_MS: f64 = 10.0;

/// `CLOCK_MONOTONIC` in nanoseconds, ts-client's clock.
pub fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// `traffic-shift apply|delete --admin-socket ADMIN -f FILE...`: its wall time, or
/// the error with the command's output.
pub fn admin(bin: &Path, admin_socket: &Path, verb: &str, files: &[&Path]) -> Result<Duration> {
    let mut c = Command::new(bin.join("traffic-shift"));
    c.arg(verb).arg("--admin-socket").arg(admin_socket);
    for f in files {
        c.arg("-f").arg(f);
    }
    let shown = cmd::show(&c);
    let start = Instant::now();
    let out = c
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let took = start.elapsed();
    ensure!(
        out.status.success(),
        "`{shown}` failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(took)
}

/// A ts-client kept running for the scenario: one command per line, one JSON answer.
pub struct TsClient {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl TsClient {
    pub fn start(mut c: Command) -> Result<Self> {
        let shown = cmd::show(&c);
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        let stdin = child.stdin.take().context("ts-client stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("ts-client stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    pub fn ask(&mut self, command: &str) -> Result<Value> {
        writeln!(self.stdin, "{command}").context("ts-client exited")?;
        self.stdin.flush()?;
        let mut line = String::new();
        ensure!(
            self.stdout.read_line(&mut line)? > 0,
            "ts-client exited on `{command}`"
        );
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("ts-client answered `{command}` with {line}"))?;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            bail!("ts-client: {command}: {e}");
        }
        Ok(v)
    }
}

impl Drop for TsClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One switch, measured.
pub struct Change {
    /// The `apply` command's wall time.
    pub apply_ms: f64,
    /// From `apply` returning to the first connection answered by the new subset
    /// (its `connect` returning); `None` if none was.
    pub first_new_ms: Option<f64>,
    /// Connections started after `apply` returned but answered by the old subset.
    pub stale: u64,
    /// The median time between two connections of the client: the resolution.
    pub period_us: f64,
    pub errors: u64,
}

/// Switches `rule-change.local` to `to` (`v1`/`v2`) while `client` connects back to back.
pub fn switch(
    client: &mut TsClient,
    bin: &Path,
    admin_socket: &Path,
    rules: &Path,
    to: &str,
) -> Result<Change> {
    let new = if to == "v2" { "two" } else { "one" };
    client.ask(&format!("stream_start {TARGET}"))?;
    // Some connections under the old rule first.
    std::thread::sleep(Duration::from_millis(30));
    let took = admin(
        bin,
        admin_socket,
        "apply",
        &[&rules.join(format!("vs-{to}.yaml"))],
    );
    let returned = monotonic_ns();
    std::thread::sleep(Duration::from_millis(50));
    let stopped = client.ask("stream_stop")?;
    let took = took?;
    let conns = stopped["connections"]
        .as_array()
        .context("stream_stop: no connections")?;
    let mut first_new = None;
    let mut stale = 0;
    let mut errors = 0;
    let mut starts = Vec::with_capacity(conns.len());
    for c in conns {
        let start = c["start_ns"].as_u64().context("start_ns")?;
        let connected = c["connected_ns"].as_u64().context("connected_ns")?;
        starts.push(start);
        match c["answer"].as_str() {
            Some(a) if a == new => {
                #[allow(clippy::cast_precision_loss)]
                let ms = (connected as f64 - returned as f64) / 1e6;
                first_new.get_or_insert(ms);
            }
            Some(_) if start >= returned => stale += 1,
            Some(_) => {}
            None => errors += 1,
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let gaps: Vec<f64> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1e3)
        .collect();
    Ok(Change {
        apply_ms: took.as_secs_f64() * 1e3,
        first_new_ms: first_new,
        stale,
        period_us: median(&gaps),
        errors,
    })
}

/// Puts scenario 5's service in force with `apply` (all to v1).
pub fn put_in_force(bin: &Path, admin_socket: &Path, change_rules: &Path) -> Result<()> {
    admin(
        bin,
        admin_socket,
        "apply",
        &[
            &change_rules.join("service.yaml"),
            &change_rules.join("vs-v1.yaml"),
        ],
    )?;
    Ok(())
}

/// Scenario 5's switches (10; 2 with `--quick`), alternately to v2 and to v1, by
/// `traffic-shift apply` of `change_rules`' VirtualServices, seen by a ts-client in
/// the agent's cgroup connecting back to back.
pub fn run(
    clients: Clients<'_>,
    admin_socket: &Path,
    change_rules: &Path,
    quick: bool,
    check_interrupted: &impl Fn() -> Result<()>,
) -> Result<Vec<Change>> {
    let mut ts_client = TsClient::start(client_command(
        clients.bin,
        "ts-client",
        clients.netns,
        clients.cgroup,
        true,
    ))?;
    let switches = if quick { 2 } else { 10 };
    let mut changes = Vec::new();
    for k in 0..switches {
        check_interrupted()?;
        let to = if k % 2 == 0 { "v2" } else { "v1" };
        let ch = switch(&mut ts_client, clients.bin, admin_socket, change_rules, to)?;
        eprintln!(
            "bench: rule change {}/{switches} to {to}: apply {:.1} ms, first {to} connection {} ms after it returned, {} old-rule after, one connection every {:.0} µs",
            k + 1,
            ch.apply_ms,
            ch.first_new_ms
                .map_or_else(|| "never".into(), |ms| format!("{ms:.2}")),
            ch.stale,
            ch.period_us
        );
        changes.push(ch);
    }
    drop(ts_client);
    Ok(changes)
}

pub fn report(
    changes: &[Change],
    md: &mut String,
    json_rows: &mut Vec<String>,
    goals: &mut String,
) {
    let firsts: Vec<f64> = changes
        .iter()
        .map(|c| c.first_new_ms.unwrap_or(f64::NAN))
        .collect();
    let worst = firsts.iter().copied().fold(f64::NAN, f64::max);
    let never = changes.iter().filter(|c| c.first_new_ms.is_none()).count();
    let applies: Vec<f64> = changes.iter().map(|c| c.apply_ms).collect();
    let periods: Vec<f64> = changes.iter().map(|c| c.period_us).collect();
    let stale: u64 = changes.iter().map(|c| c.stale).sum();
    let errors: u64 = changes.iter().map(|c| c.errors).sum();
    let (first, apply, period) = (median(&firsts), median(&applies), median(&periods));
    let apply_worst = applies.iter().copied().fold(f64::NAN, f64::max);
    let _ = write!(
        md,
        "\n| scenario | switches | first new-rule connection after `apply` returned, ms: median | worst | `apply` command, ms: median | worst | old-rule connections started after it returned | resolution (one connection), µs | errors |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | {SCENARIO} (connect-time, `traffic-shift apply` of one VirtualService) | {} | {first:.2} | {worst:.2} | {apply:.1} | {apply_worst:.1} | {stale} | {period:.0} | {errors} |\n",
        changes.len()
    );
    json_rows.push(format!(
        "    {{\"scenario\": \"{SCENARIO}\", \"switches\": {}, \"first_new_ms_median\": {first:.3}, \
         \"first_new_ms_worst\": {worst:.3}, \"first_new_ms_reps\": {firsts:?}, \"apply_ms_median\": {apply:.2}, \
         \"apply_ms_reps\": {applies:?}, \"stale_after_return\": {stale}, \"resolution_us\": {period:.1}, \
         \"never_switched\": {never}, \"errors\": {errors}}}",
        changes.len()
    ));
    let met = if worst < GOAL_MS && stale == 0 && never == 0 {
        "met"
    } else {
        "not met"
    };
    let _ = writeln!(
        goals,
        "goal: rule change effective in under {GOAL_MS} ms: worst {worst:.2} ms after `apply` returned (negative: before), {stale} old-rule connections after it, resolution {period:.0} µs {met}"
    );
}
