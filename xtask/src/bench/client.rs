//! The load clients: `ts-bench` (and `ts-client`) run in the bench's namespace, and
//! in its cgroup when the path under test is the connect-time rewrite; their one
//! JSON line read back.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};

use super::tcp::Contender;
use crate::cmd;

/// Where the clients run: the binaries, the bench's namespace and cgroup.
#[derive(Clone, Copy)]
pub struct Clients<'a> {
    pub bin: &'a Path,
    pub netns: &'a str,
    pub cgroup: &'a Path,
}

impl Clients<'_> {
    /// Scenario 1: `concurrency` clients opening connections to `contender.target`.
    pub fn conn(
        &self,
        contender: &Contender,
        concurrency: u32,
        secs: f64,
        warmup: f64,
    ) -> Result<Sample> {
        let line = ts_bench(
            self.bin,
            self.netns,
            self.cgroup,
            contender.in_cgroup,
            &[
                "--target",
                contender.target,
                "--concurrency",
                &concurrency.to_string(),
                "--duration",
                &secs.to_string(),
                "--warmup",
                &warmup.to_string(),
            ],
        )?;
        let field = |key: &str| {
            json_number(&line, key).with_context(|| format!("no {key} in ts-bench output {line}"))
        };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(Sample {
            connections: field("connections")? as u64,
            conn_per_sec: field("conn_per_sec")?,
            p50_us: field("p50_us")?,
            p99_us: field("p99_us")?,
            errors: field("errors")? as u64,
        })
    }

    /// Scenario 2: one connection to `contender.stream_target`, written to for the duration.
    pub fn stream(&self, contender: &Contender, secs: f64, warmup: f64) -> Result<StreamSample> {
        let line = ts_bench(
            self.bin,
            self.netns,
            self.cgroup,
            contender.in_cgroup,
            &[
                "--mode",
                "stream",
                "--target",
                contender.stream_target,
                "--duration",
                &secs.to_string(),
                "--warmup",
                &warmup.to_string(),
            ],
        )?;
        let field = |key: &str| {
            json_number(&line, key).with_context(|| format!("no {key} in ts-bench output {line}"))
        };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(StreamSample {
            bytes: field("bytes")? as u64,
            gbit_per_sec: field("gbit_per_sec")?,
            errors: field("errors")? as u64,
        })
    }
}

/// Retries `check` every 100 ms for up to 10 s (Envoy takes a few seconds to start on a
/// busy 2-CPU machine) until it gives `Ok(None)`; else the last reason it failed. Gives
/// up at once when `exited` says the contender's process is gone.
pub fn wait_answers(
    mut check: impl FnMut() -> Result<Option<String>>,
    mut exited: impl FnMut() -> bool,
) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let why = match check() {
            Ok(None) => return None,
            Ok(Some(why)) => why,
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline || exited() {
            return Some(why);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One ts-bench result.
pub struct Sample {
    pub connections: u64,
    pub conn_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
}

/// Runs ts-bench in the namespace (and in the cgroup when the contender needs it) and
/// returns its one line of output.
/// `ip netns exec` remounts /sys, so the cgroup is joined before: the shell writes
/// its own pid to cgroup.procs, then execs `ip netns exec`; membership survives exec.
pub fn ts_bench(
    bin: &Path,
    netns: &str,
    cgroup: &Path,
    in_cgroup: bool,
    args: &[&str],
) -> Result<String> {
    let mut c = client_command(bin, "ts-bench", netns, cgroup, in_cgroup);
    c.args(args);
    let shown = cmd::show(&c);
    let out = c
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    ensure!(
        out.status.success(),
        "`{shown}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The command running `program` (of `bin`) in the namespace, and in the cgroup if
/// `in_cgroup` (see [`ts_bench`]).
pub fn client_command(
    bin: &Path,
    program: &str,
    netns: &str,
    cgroup: &Path,
    in_cgroup: bool,
) -> Command {
    let mut c = if in_cgroup {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(r#"echo $$ > "$0" && exec ip netns exec "$@""#)
            .arg(cgroup.join("cgroup.procs"));
        c
    } else {
        let mut c = Command::new("ip");
        c.args(["netns", "exec"]);
        c
    };
    c.arg(netns).arg(bin.join(program));
    c
}

/// One scenario 2 result.
pub struct StreamSample {
    pub bytes: u64,
    pub gbit_per_sec: f64,
    pub errors: u64,
}

/// A number field of a flat JSON object (ts-bench's one line); xtask has no JSON parser.
pub fn json_number(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}
