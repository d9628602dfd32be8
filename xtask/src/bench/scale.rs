//! Scenario 6, scale, and the second half of scenario 5: the maps filled with the
//! bench's own few services, then 1 000, 10 000 and 100 000 more (generated
//! ServiceEntry + VirtualService pairs, put in force with `traffic-shift apply` and
//! removed with `traffic-shift delete`). At each level: the connect-time connection
//! rate to tcp-echo and the agent's CPU meanwhile, its CPU with nothing to do, its RSS,
//! the kernel memory of its maps, one `/metrics` scrape before and after a connection
//! to every generated service, one `traffic-shift status`, one `traffic-shift status
//! ROUTE` and the redraws of a `traffic-shift status --watch` on a pseudo-terminal
//! ([`watch`]). The `apply` and the `delete` of 10 000 and of 100 000 are timed end
//! to end.
//!
//! A figure that could not be measured is never printed: its cell says `n/m` and a
//! note under the table says why; a goal that depends on it is not met.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::{Value, json};

use super::{
    agent::Agent,
    bpf_cost,
    client::{Clients, client_command, json_number},
    rule_change,
    tcp::{self, Contender},
    watch::{self, Watch},
};
use crate::cmd;

pub const SCENARIO: &str = "scale";
/// Generated services per file (a rules file may have 4 MiB; 1 000 take ~0.5 MB).
const PER_FILE: usize = 1000;
/// The files of one `apply` or `delete` command hold at most this many bytes: the
/// agent reads requests of up to 128 MiB (`admin::MAX_REQUEST_BYTES`), JSON
/// escaping included. 100 000 services go in one command.
const REQUEST_BYTES: u64 = 96 << 20;
/// The levels: generated services on top of the bench's own.
pub const LEVELS: [usize; 4] = [0, 1000, 10_000, 100_000];
/// `--quick` stops at 1 000.
pub const QUICK_LEVELS: [usize; 2] = [0, 1000];
/// The levels whose `apply` and `delete` are timed, and the goal for each, seconds.
const TIMED: [(usize, f64); 2] = [(10_000, 1.0), (100_000, 10.0)];
/// The connection rate at the largest level at least this share of the rate without.
const RATE_GOAL: f64 = 0.95;
/// The idle agent's CPU at the largest level under this, % of one CPU.
const IDLE_CPU_GOAL: f64 = 1.0;
/// The agent's RSS at these levels at most this, MiB.
const RSS_GOALS: [(usize, f64); 2] = [(10_000, 30.0), (100_000, 250.0)];
/// One `/metrics` scrape after traffic on every service at this level under this, ms.
const SCRAPE_GOAL: (usize, f64) = (10_000, 200.0);
/// The slowest `status --watch` redraw at the goals' largest level under this, ms.
const WATCH_GOAL: f64 = 100.0;
/// The goals' largest level (that of the rate and idle CPU goals).
const GOAL_LEVEL: usize = 100_000;
/// How long the agent's idle CPU is measured: no rule change, no traffic.
const IDLE: Duration = Duration::from_secs(10);
/// After the traffic on every service, before the scrape: the agent samples the
/// kernel's counters every second.
const SAMPLED: Duration = Duration::from_secs(2);
/// The longest an `apply` or a `delete` may take, end to end.
const CHANGE_TIMEOUT: Duration = Duration::from_mins(10);
/// The longest `traffic-shift status` and the traffic on every service may take.
const COMMAND_TIMEOUT: Duration = Duration::from_mins(3);
/// Clients of the traffic on every service.
const TRAFFIC_CONCURRENCY: u32 = 8;

/// Scenario 6 measures the connect-time rate at this concurrency...
pub const CONCURRENCY: u32 = 16;
/// ... this many times per level, and reports the median and the spread: one
/// 3-second run moved by ±10% from run to run on this machine.
const RATE_RUNS: usize = 5;

/// The levels of a run.
pub fn levels(quick: bool) -> &'static [usize] {
    if quick { &QUICK_LEVELS } else { &LEVELS }
}

/// What scenario 6 needs of the bench's setup.
pub struct Env<'a> {
    pub clients: Clients<'a>,
    /// The connect-time path to tcp-echo, measured at each level.
    pub connect_time: &'a Contender,
    pub agent: &'a Agent,
    /// The generated services ([`generate`]), 1 000 per file.
    pub files: &'a [PathBuf],
    /// Where the scenario writes its lists of addresses and the commands' output.
    pub work: &'a Path,
    pub quick: bool,
    pub duration: f64,
    pub warmup: f64,
}

/// A figure, or why it was not measured.
type Measured<T> = Result<T, String>;

impl Env<'_> {
    fn traffic_shift(&self) -> Command {
        Command::new(self.clients.bin.join("traffic-shift"))
    }

    /// How many ServiceEntries the agent has (`traffic-shift get`), if it answers.
    fn services(&self) -> Option<usize> {
        cmd::probe(
            self.traffic_shift()
                .args(["get", "serviceentry", "-A", "-o", "name", "--admin-socket"])
                .arg(&self.agent.admin_socket),
        )
        .map(|out| out.lines().count())
    }

    /// `traffic-shift apply|delete` of the first `n` generated services, end to end:
    /// from the first command's start to the last service in force (or removed).
    /// The files go in as few commands as the agent's request size allows, one
    /// after the other. The agent answers a command once its change is in the
    /// kernel; when the command gives up waiting (60 s), the agent goes on, and the
    /// end is when `traffic-shift version` answers: the agent serves admin requests
    /// one at a time, in order. Then (not timed) `get` must list `expect`
    /// ServiceEntries.
    fn change(&self, verb: &str, n: usize, expect: usize) -> Measured<Change> {
        let files: Vec<&Path> = self.files[..n / PER_FILE]
            .iter()
            .map(PathBuf::as_path)
            .collect();
        let batches = batches(&files).map_err(|e| format!("{e:#}"))?;
        let start = Instant::now();
        let late = || {
            format!(
                "`{verb}` of {n} services not done after {} s",
                CHANGE_TIMEOUT.as_secs()
            )
        };
        for batch in &batches {
            match rule_change::admin(self.clients.bin, &self.agent.admin_socket, verb, batch) {
                Ok(_) => {}
                Err(e) if format!("{e:#}").contains("did not answer") => {
                    eprintln!(
                        "bench: scale: `{verb}` gave up waiting after {:.0} s; waiting for the agent",
                        start.elapsed().as_secs_f64()
                    );
                    loop {
                        if start.elapsed() > CHANGE_TIMEOUT {
                            return Err(late());
                        }
                        let answered = cmd::probe(
                            self.traffic_shift()
                                .args(["version", "--admin-socket"])
                                .arg(&self.agent.admin_socket),
                        );
                        if answered.is_some() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                Err(e) => return Err(format!("{e:#}")),
            }
            if start.elapsed() > CHANGE_TIMEOUT {
                return Err(late());
            }
        }
        let took = start.elapsed();
        match self.services() {
            Some(listed) if listed == expect => Ok(Change {
                secs: took.as_secs_f64(),
                commands: batches.len(),
            }),
            Some(listed) => Err(format!(
                "after `{verb}` of {n} services the agent lists {listed} ServiceEntries, not {expect}"
            )),
            None => Err(format!(
                "after `{verb}` of {n} services `traffic-shift get` failed"
            )),
        }
    }

    /// One `traffic-shift status` of the agent's status file, 120 columns: the
    /// default view, or with `route` that route alone (its output must name it).
    /// Its time and the bytes it printed.
    fn status(&self, route: Option<&str>) -> Measured<(Duration, u64)> {
        let out = self.work.join("status.out");
        let mut c = self.traffic_shift();
        c.arg("status").args(route);
        c.arg("--status-file")
            .arg(&self.agent.status)
            .args(["--width", "120"]);
        let took = run_bounded(&mut c, &out, COMMAND_TIMEOUT)?;
        let text = fs::read_to_string(&out).map_err(|e| format!("read {}: {e}", out.display()))?;
        if let Some(route) = route
            && !text.contains(route)
        {
            return Err(format!(
                "`traffic-shift status {route}` does not show it: {:?}",
                text.chars().take(300).collect::<String>()
            ));
        }
        Ok((took, text.len() as u64))
    }

    /// The redraws of `traffic-shift status --watch` on a pseudo-terminal ([`watch`]).
    fn watch(&self) -> Measured<Watch> {
        let mut c = self.traffic_shift();
        c.arg("status")
            .arg("--status-file")
            .arg(&self.agent.status)
            .arg("--watch")
            .args(["--interval", &watch::INTERVAL.as_secs_f64().to_string()]);
        watch::run(c)
    }

    /// One connection (a line written, the echo read) to each of the first `n`
    /// generated services, through the connect-time path: `ts-bench --targets`.
    fn traffic(&self, n: usize) -> Measured<Traffic> {
        let list = self.work.join(format!("targets-{n}.txt"));
        let text = (0..n).fold(String::new(), |mut text, i| {
            let _ = writeln!(text, "{}:9000", address(i));
            text
        });
        fs::write(&list, text).map_err(|e| format!("write {}: {e}", list.display()))?;
        let out = self.work.join("traffic.out");
        let mut c = client_command(
            self.clients.bin,
            "ts-bench",
            self.clients.netns,
            self.clients.cgroup,
            true,
        );
        c.arg("--targets")
            .arg(&list)
            .args(["--concurrency", &TRAFFIC_CONCURRENCY.to_string()]);
        let took = run_bounded(&mut c, &out, COMMAND_TIMEOUT)?;
        let line = fs::read_to_string(&out).unwrap_or_default();
        let field = |key: &str| {
            json_number(&line, key).ok_or_else(|| format!("no {key} in ts-bench output {line}"))
        };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(Traffic {
            connections: field("connections")? as u64,
            errors: field("errors")? as u64,
            secs: took.as_secs_f64(),
        })
    }
}

/// `files` in groups, each of at most [`REQUEST_BYTES`] (a file bigger alone).
fn batches<'f>(files: &[&'f Path]) -> Result<Vec<Vec<&'f Path>>> {
    let mut batches: Vec<Vec<&Path>> = Vec::new();
    let mut bytes = 0;
    for &file in files {
        let size = fs::metadata(file)
            .with_context(|| format!("stat {}", file.display()))?
            .len();
        match batches.last_mut() {
            Some(batch) if bytes + size <= REQUEST_BYTES => {
                batch.push(file);
                bytes += size;
            }
            _ => {
                batches.push(vec![file]);
                bytes = size;
            }
        }
    }
    Ok(batches)
}

/// Runs `c` with its output to `out`, waiting at most `timeout` (then kills it):
/// its wall time, or why it failed.
fn run_bounded(c: &mut Command, out: &Path, timeout: Duration) -> Measured<Duration> {
    let shown = cmd::show(c);
    let file = fs::File::create(out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let start = Instant::now();
    let mut child = c
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{shown}`: {e}"))?;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let took = start.elapsed();
                if status.success() {
                    return Ok(took);
                }
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("`{shown}` failed ({status}): {}", err.trim()));
            }
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{shown}` did not finish within {} s",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("`{shown}`: {e}")),
        }
    }
}

/// An `apply` or `delete`, end to end.
pub struct Change {
    pub secs: f64,
    /// The commands it took (each request at most [`REQUEST_BYTES`]).
    pub commands: usize,
}

/// The connections to every generated service.
pub struct Traffic {
    pub connections: u64,
    pub errors: u64,
    pub secs: f64,
}

/// The measurements of one level.
pub struct Level {
    /// Generated services on top of the bench's own.
    pub extra: usize,
    /// Why the level was not measured at all (its `apply` failed or took too long).
    pub not_reached: Option<String>,
    pub apply: Option<Measured<Change>>,
    pub delete: Option<Measured<Change>>,
    /// The connect-time rate to tcp-echo (the median of [`RATE_RUNS`]) and
    /// the errors of all runs; the slowest and the fastest run.
    pub rate: Measured<(f64, u64)>,
    pub rate_spread: Option<(f64, f64)>,
    /// The kernel's time per connection in each program, one more run with
    /// `kernel.bpf_stats_enabled` on.
    pub bpf: Measured<bpf_cost::Cost>,
    /// The agent's CPU while the rate was measured, and with nothing to do, %.
    pub cpu_measured: Measured<f64>,
    pub cpu_idle: Measured<f64>,
    /// `VmRSS` once idle, after the traffic on every service; `VmHWM` at the end. MiB.
    pub rss_idle: Measured<f64>,
    pub rss_traffic: Measured<f64>,
    pub rss_peak: Measured<f64>,
    /// The agent's maps, as bpftool shows them.
    pub kernel: Measured<Vec<MapInfo>>,
    /// One `/metrics` scrape, ms and bytes: before and after the traffic on every service.
    pub scrape: Measured<(f64, usize)>,
    pub traffic: Measured<Traffic>,
    pub scrape_traffic: Measured<(f64, usize)>,
    /// One `traffic-shift status`, ms and bytes printed.
    pub status: Measured<(f64, u64)>,
    /// One `traffic-shift status ROUTE` of [`Level::route`], ms and bytes printed.
    pub status_route: Measured<(f64, u64)>,
    /// The redraws of a `traffic-shift status --watch`.
    pub watch: Measured<Watch>,
}

impl Level {
    fn new(extra: usize) -> Self {
        fn none<T>() -> Measured<T> {
            Err("not measured".to_owned())
        }
        Self {
            extra,
            not_reached: None,
            apply: None,
            delete: None,
            rate: none(),
            rate_spread: None,
            bpf: none(),
            cpu_measured: none(),
            cpu_idle: none(),
            rss_idle: none(),
            rss_traffic: none(),
            rss_peak: none(),
            kernel: none(),
            scrape: none(),
            traffic: none(),
            scrape_traffic: none(),
            status: none(),
            status_route: none(),
            watch: none(),
        }
    }

    /// The route `status ROUTE` shows at this level: the VirtualService of the middle
    /// generated service, or with none the bench's own tcp-echo.
    pub fn route(&self) -> String {
        if self.extra == 0 {
            "default/tcp-echo".to_owned()
        } else {
            format!("default/svc-{:05}", self.extra / 2)
        }
    }
}

/// What scenario 6 measured, for its report.
pub struct Results {
    pub base_services: usize,
    pub levels: Vec<Level>,
}

/// Scenario 6 (and 5's apply of 10 000 and 100 000 services): the maps filled in
/// steps, the agent measured at each. A level whose `apply` fails or takes more than
/// [`CHANGE_TIMEOUT`] is reported as not measured, and so are the levels after it.
pub fn run(env: &Env<'_>, check_interrupted: &impl Fn() -> Result<()>) -> Result<Results> {
    let status_text = fs::read_to_string(&env.agent.status).unwrap_or_default();
    let metrics_addr = serde_json::from_str::<Value>(&status_text)
        .ok()
        .and_then(|v| v.get("metrics")?.as_str().map(str::to_owned));
    let base_services = env.services().context("`traffic-shift get` failed")?;
    let mut levels: Vec<Level> = levels(env.quick).iter().map(|&n| Level::new(n)).collect();
    let mut gone: Option<String> = None;
    for level in &mut levels {
        check_interrupted()?;
        let n = level.extra;
        let services = base_services + n;
        if let Some(why) = &gone {
            level.not_reached = Some(why.clone());
            continue;
        }
        if n > 0 {
            let apply = env.change("apply", n, services);
            match &apply {
                Ok(c) => eprintln!(
                    "bench: scale: apply of {n} services took {:.2} s ({} commands)",
                    c.secs, c.commands
                ),
                Err(why) => {
                    eprintln!("bench: scale: apply of {n} services: {why}");
                    let why = format!("`apply` of {n} services: {why}");
                    level.not_reached = Some(why.clone());
                    gone = Some(format!("not reached: {why}"));
                }
            }
            level.apply = Some(apply);
            if gone.is_some() {
                continue;
            }
        }
        eprintln!("bench: scale: {services} services");
        measure(env, level, metrics_addr.as_deref(), check_interrupted)?;
        if n > 0 {
            let delete = env.change("delete", n, base_services);
            match &delete {
                Ok(c) => eprintln!(
                    "bench: scale: delete of {n} services took {:.2} s ({} commands)",
                    c.secs, c.commands
                ),
                Err(why) => {
                    eprintln!("bench: scale: delete of {n} services: {why}");
                    gone = Some(format!("not reached: `delete` of {n} services: {why}"));
                }
            }
            level.delete = Some(delete);
        }
    }
    Ok(Results {
        base_services,
        levels,
    })
}

/// Waits until the agent's status file holds the rules generation in force (its
/// `/metrics` says which), then until the agent touches the file again: its next
/// turn of the loop, so the work of the last change (the write, and the memory it
/// gives back after) is done. At most 5 minutes.
fn settled(status: &Path, metrics_addr: &str) -> Result<()> {
    written_in_force(status, metrics_addr)?;
    let mtime = |path: &Path| fs::metadata(path).and_then(|m| m.modified()).ok();
    let written = mtime(status);
    let start = Instant::now();
    while mtime(status) == written {
        ensure!(
            start.elapsed() < Duration::from_mins(1),
            "the agent did not touch its status file within a minute of writing it"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Waits until the agent's status file holds the rules generation in force.
fn written_in_force(status: &Path, metrics_addr: &str) -> Result<()> {
    let start = Instant::now();
    loop {
        let (_, page) = get_metrics(metrics_addr)?;
        let page = String::from_utf8_lossy(&page);
        // `traffic_shift_rules_generation 2`, or with `{}`.
        let in_force = page
            .lines()
            .find(|l| {
                l.strip_prefix("traffic_shift_rules_generation")
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse::<u64>().ok());
        // `{"generation":N,...`: the file's first field.
        let mut head = [0u8; 64];
        let written = fs::File::open(status)
            .and_then(|mut f| f.read(&mut head))
            .ok()
            .and_then(|n| {
                let head = std::str::from_utf8(&head[..n]).ok()?;
                let rest = head.strip_prefix("{\"generation\":")?;
                rest.split(',').next()?.parse::<u64>().ok()
            });
        if in_force.is_some() && written == in_force {
            return Ok(());
        }
        ensure!(
            start.elapsed() < Duration::from_mins(5),
            "the status file never showed the rules generation in force ({in_force:?}, written {written:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The measurements of one level, in this order: the agent idle, its maps' kernel
/// memory, the connect-time rate, a scrape, `status`, traffic on every generated
/// service, a scrape again.
fn measure(
    env: &Env<'_>,
    level: &mut Level,
    metrics_addr: Option<&str>,
    check_interrupted: &impl Fn() -> Result<()>,
) -> Result<()> {
    let pid = env.agent.pid;
    let gone = || format!("the agent (pid {pid}) is gone");
    // Idle: no rule change, no traffic; the change's own work (its status
    // file, built again whole) done first.
    if let Some(addr) = metrics_addr {
        settled(&env.agent.status, addr)?;
    }
    level.cpu_idle = cpu_percent(pid, || {
        std::thread::sleep(IDLE);
        Ok(())
    })
    .map(|(p, ())| p);
    level.rss_idle = rss_mib(pid).ok_or_else(gone);
    level.kernel = map_memory(&env.agent.bpffs);
    check_interrupted()?;

    let sample = cpu_percent(pid, || {
        let mut rates = Vec::with_capacity(RATE_RUNS);
        let mut errors = 0;
        for _ in 0..RATE_RUNS {
            let run = env
                .clients
                .conn(env.connect_time, CONCURRENCY, env.duration, env.warmup)
                .map_err(|e| format!("{e:#}"))?;
            rates.push(run.conn_per_sec);
            errors += run.errors;
        }
        rates.sort_by(f64::total_cmp);
        Ok((rates[RATE_RUNS / 2], errors, rates[0], rates[RATE_RUNS - 1]))
    });
    level.cpu_measured = sample.as_ref().map(|(p, _)| *p).map_err(Clone::clone);
    level.rate_spread = sample.as_ref().ok().map(|(_, r)| (r.2, r.3));
    level.rate = sample.map(|(_, r)| (r.0, r.1));
    // Apart from the rate: the statistics cost the programs time.
    level.bpf = bpf_cost::Programs::of(&env.agent.bpffs)
        .and_then(|programs| {
            programs.measure(|| {
                let run = env
                    .clients
                    .conn(env.connect_time, CONCURRENCY, env.duration, 0.0)?;
                Ok(run.connections)
            })
        })
        .map_err(|e| format!("{e:#}"));

    let scrape_once = || -> Measured<(f64, usize)> {
        let addr = metrics_addr.ok_or("the status file names no /metrics address")?;
        let (took, bytes) = scrape(addr).map_err(|e| format!("{e:#}"))?;
        Ok((took.as_secs_f64() * 1e3, bytes))
    };
    level.scrape = scrape_once();
    level.status = env
        .status(None)
        .map(|(took, bytes)| (took.as_secs_f64() * 1e3, bytes));
    level.status_route = env
        .status(Some(&level.route()))
        .map(|(took, bytes)| (took.as_secs_f64() * 1e3, bytes));
    check_interrupted()?;
    level.watch = env.watch();
    match &level.watch {
        Ok(w) => {
            let (median, max) = w.median_max_ms();
            eprintln!(
                "bench: scale: status --watch redraw {median:.1} ms median, {max:.1} ms max of {}, {:.1} ms CPU each",
                w.redraws.len(),
                w.cpu_ms
            );
        }
        Err(why) => eprintln!("bench: scale: status --watch: {why}"),
    }
    check_interrupted()?;

    if level.extra == 0 {
        let why = "no generated services at this level".to_owned();
        level.traffic = Err(why.clone());
        level.scrape_traffic = Err(why.clone());
        level.rss_traffic = Err(why);
    } else {
        level.traffic = env.traffic(level.extra);
        std::thread::sleep(SAMPLED);
        level.scrape_traffic = scrape_once();
        level.rss_traffic = rss_mib(pid).ok_or_else(gone);
    }
    level.rss_peak = peak_rss_mib(pid).ok_or_else(gone);
    let show = |m: &Measured<(f64, usize)>| {
        m.as_ref()
            .map_or_else(Clone::clone, |(ms, b)| format!("{ms:.1} ms, {b} bytes"))
    };
    eprintln!(
        "bench: scale: {} conn/s, agent CPU {} measured, {} idle; RSS {} MiB; scrape {}, after traffic {}",
        level.rate.as_ref().map_or(f64::NAN, |r| r.0),
        pct(&level.cpu_measured),
        pct(&level.cpu_idle),
        level.rss_idle.as_ref().map_or(f64::NAN, |r| *r),
        show(&level.scrape),
        show(&level.scrape_traffic),
    );
    Ok(())
}

fn pct(m: &Measured<f64>) -> String {
    m.as_ref()
        .map_or_else(|e| format!("n/m ({e})"), |p| format!("{p:.1}%"))
}

/// The CPU the process `pid` used while `f` ran, in % of one CPU, and what `f` gave.
fn cpu_percent<T>(pid: u32, f: impl FnOnce() -> Measured<T>) -> Measured<(f64, T)> {
    let gone = || format!("the agent (pid {pid}) is gone");
    let (cpu0, t0) = (cpu_time(pid).ok_or_else(gone)?, Instant::now());
    let out = f()?;
    let (cpu1, wall) = (cpu_time(pid).ok_or_else(gone)?, t0.elapsed());
    Ok((
        cpu1.saturating_sub(cpu0).as_secs_f64() / wall.as_secs_f64() * 100.0,
        out,
    ))
}

/// One of the agent's maps, as `bpftool map show` gives it.
pub struct MapInfo {
    pub name: String,
    pub kind: String,
    pub max_entries: u64,
    pub key: u64,
    pub value: u64,
    /// `bytes_memlock`: the kernel memory the map uses (kernel 6.4 on: as filled for
    /// maps not preallocated).
    pub memlock: u64,
}

/// The kernel memory of the agent's maps (`bytes_memlock`), bytes.
fn kernel_bytes(maps: &[MapInfo]) -> u64 {
    maps.iter().map(|m| m.memlock).sum()
}

/// The agent's maps: those pinned under `bpffs` and those of the programs whose
/// links are pinned there, as bpftool shows them.
fn map_memory(bpffs: &Path) -> Measured<Vec<MapInfo>> {
    let bpftool = cmd::find_program("bpftool").ok_or("bpftool is not installed")?;
    let list = |what: &str| -> Measured<Vec<Value>> {
        let out = Command::new(&bpftool)
            .args(["-j", "-f", what, "show"])
            .output()
            .map_err(|e| format!("bpftool {what} show: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "bpftool {what} show failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        match serde_json::from_slice(&out.stdout) {
            Ok(Value::Array(items)) => Ok(items),
            _ => Err(format!("bpftool {what} show: not a JSON list")),
        }
    };
    let ours = |item: &Value| {
        item.get("pinned")
            .and_then(Value::as_array)
            .is_some_and(|paths| {
                paths
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|p| Path::new(p).starts_with(bpffs))
            })
    };
    let ids = |item: &Value, key: &str| -> Vec<u64> {
        match item.get(key) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).collect(),
            Some(v) => v.as_u64().into_iter().collect(),
            None => Vec::new(),
        }
    };
    let progs: BTreeSet<u64> = list("link")?
        .iter()
        .filter(|l| ours(l))
        .flat_map(|l| ids(l, "prog_id"))
        .collect();
    let mut maps: BTreeSet<u64> = list("prog")?
        .iter()
        .filter(|p| ours(p) || ids(p, "id").iter().any(|id| progs.contains(id)))
        .flat_map(|p| ids(p, "map_ids"))
        .collect();
    let all = list("map")?;
    maps.extend(all.iter().filter(|m| ours(m)).flat_map(|m| ids(m, "id")));
    if maps.is_empty() {
        return Err(format!(
            "bpftool shows no map pinned under {} nor used by a program linked there",
            bpffs.display()
        ));
    }
    let field = |m: &Value, key: &str| m.get(key).and_then(Value::as_u64).unwrap_or(0);
    let text = |m: &Value, key: &str| m.get(key).and_then(Value::as_str).unwrap_or("?").to_owned();
    Ok(all
        .iter()
        .filter(|m| ids(m, "id").iter().any(|id| maps.contains(id)))
        .map(|m| MapInfo {
            // The pinned file has the whole name; bpftool's `name` is cut at 15 bytes.
            name: pinned_name(m, bpffs).unwrap_or_else(|| text(m, "name")),
            kind: text(m, "type"),
            max_entries: field(m, "max_entries"),
            key: field(m, "bytes_key"),
            value: field(m, "bytes_value"),
            memlock: field(m, "bytes_memlock"),
        })
        .collect())
}

/// The file name of `item` pinned under `bpffs`, if it is.
fn pinned_name(item: &Value, bpffs: &Path) -> Option<String> {
    item.get("pinned")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .map(Path::new)
        .find(|p| p.starts_with(bpffs))?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

/// The address of generated service `i`: 127.101.0.1 on, 250 to a /24 (x.y.z.1 to
/// x.y.z.250), 127.101.0.0/16 then 127.102.0.0/16 and on: distinct for the first
/// 38 400 000, all inside 127.0.0.0/8.
pub fn address(i: usize) -> Ipv4Addr {
    let net = i / 250;
    let second = 101 + net / 256;
    assert!(second <= 255, "service {i} is past 127.255.255.250");
    #[allow(clippy::cast_possible_truncation)]
    Ipv4Addr::new(127, second as u8, (net % 256) as u8, (i % 250 + 1) as u8)
}

/// Writes `n` services in files of `PER_FILE` under `dir`: `svc-NNNNN.bench.local`
/// at [`address`]`(i)`:9000, each with the two tcp-echo endpoints (health probes go
/// to each distinct endpoint once, so 100 000 services add no probes) and a
/// VirtualService with one destination. Returns the files.
pub fn generate(dir: &Path, n: usize) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    for f in 0..n.div_ceil(PER_FILE) {
        let mut text = String::new();
        for i in f * PER_FILE..n.min((f + 1) * PER_FILE) {
            let host = format!("svc-{i:05}.bench.local");
            let address = address(i);
            let _ = write!(
                text,
                "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc-{i:05}}}\n\
                 spec: {{hosts: [{host}], addresses: [{address}], ports: [{{number: 9000, name: tcp, protocol: TCP}}], \
                 resolution: STATIC, endpoints: [{{address: 127.0.0.1, ports: {{tcp: 19001}}}}, \
                 {{address: 127.0.0.1, ports: {{tcp: 19002}}}}]}}\n\
                 ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc-{i:05}}}\n\
                 spec: {{hosts: [{host}], tcp: [{{route: [{{destination: {{host: {host}, port: {{number: 9000}}}}}}]}}]}}\n"
            );
        }
        let path = dir.join(format!("services-{f:03}.yaml"));
        fs::write(&path, text)?;
        files.push(path);
    }
    Ok(files)
}

/// A `kB` field of `/proc/PID/status`, in MiB.
fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// A command's two cells, by `cell`: its time (ms) and its output's bytes.
fn took<'a>(
    cell: &mut impl FnMut(usize, &str, Result<String, &'a String>) -> String,
    services: usize,
    what: &str,
    m: Result<(f64, String), &'a String>,
) -> [String; 2] {
    [
        cell(services, what, m.clone().map(|(ms, _)| format!("{ms:.1}"))),
        cell(services, what, m.map(|(_, bytes)| bytes)),
    ]
}

/// A command's time (ms) and its output's bytes, as [`took`] takes them.
fn with_bytes<B: ToString>(m: &Measured<(f64, B)>) -> Result<(f64, String), &String> {
    m.as_ref().map(|(ms, bytes)| (*ms, bytes.to_string()))
}

/// `VmRSS` of a process, in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmRSS:")
}

/// `VmHWM` of a process (its largest RSS so far), in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmHWM:")
}

/// User + system CPU time of a process so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

/// One GET of `/metrics` at `addr`: its time and size.
pub fn scrape(addr: &str) -> Result<(Duration, usize)> {
    let (took, body) = get_metrics(addr)?;
    Ok((took, body.len()))
}

/// One GET of `/metrics` at `addr`: its time and the whole answer (status line,
/// headers and the page). Gives up after 5 minutes.
pub fn get_metrics(addr: &str) -> Result<(Duration, Vec<u8>)> {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = Vec::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
        if start.elapsed() > Duration::from_mins(5) {
            bail!("GET /metrics at {addr}: not done after 5 minutes");
        }
    }
    let took = start.elapsed();
    ensure!(
        body.starts_with(b"HTTP/1.1 200") || body.starts_with(b"HTTP/1.0 200"),
        "GET /metrics at {addr}: {}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    );
    Ok((took, body))
}

impl Results {
    /// The tables, JSON rows, notes and goal lines of scenario 6 (and 5's apply of
    /// 10 000 and 100 000).
    #[expect(clippy::too_many_lines, reason = "one table, a cell per column")]
    pub fn report(&self, md: &mut String, json_rows: &mut Vec<String>, goals: &mut String) {
        let base = self.base_services;
        let mut notes: Vec<Note> = Vec::new();
        // A cell: the figure, or `n/m` with the reason in a note.
        let mut cell = |services: usize, what: &str, m: Result<String, &String>| {
            m.unwrap_or_else(|why| {
                notes.push((format!("{services} services"), what.to_owned(), why.clone()));
                "n/m".to_owned()
            })
        };
        let rate_base = self
            .levels
            .first()
            .and_then(|l| l.rate.as_ref().ok())
            .map(|r| r.0);
        let _ = write!(
            md,
            "\n| scenario | services in the maps | connect-time conn/s (concurrency {CONCURRENCY}), median of {RATE_RUNS} runs (slowest–fastest) | vs fewest | errors \
             | agent CPU % while measured | agent CPU % idle ({} s) | agent RSS MiB idle | after traffic | peak (VmHWM) \
             | kernel map memory MiB (bytes_memlock, not in RSS) | `/metrics` scrape ms | its bytes \
             | connections to every generated service (errors) | then `/metrics` scrape ms | its bytes \
             | `traffic-shift status` ms | its bytes | `status ROUTE` ms | its bytes \
             | `status --watch` redraw ms, median (max) of {redraws}: {rows}x{columns} terminal, `--interval {interval}`, \
             from a frame's end to the next's, less the interval | its CPU ms per redraw | its frame's bytes |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            IDLE.as_secs(),
            redraws = watch::REDRAWS,
            rows = watch::ROWS,
            columns = watch::COLUMNS,
            interval = watch::INTERVAL.as_secs_f64(),
        );
        for level in &self.levels {
            let services = base + level.extra;
            if let Some(why) = &level.not_reached {
                let _ = writeln!(
                    md,
                    "| {SCENARIO} | {services} | not measured: {} |{}",
                    why.replace('|', "\\|"),
                    " |".repeat(21)
                );
                json_rows.push(format!(
                    "    {}",
                    json!({"scenario": SCENARIO, "services": services, "not_measured": why})
                ));
                continue;
            }
            let ratio = level
                .rate
                .as_ref()
                .map(|r| (r.0, r.0 / rate_base.unwrap_or(f64::NAN)));
            let mut cells = vec![
                cell(
                    services,
                    "rate",
                    level.rate.as_ref().map(|r| match level.rate_spread {
                        Some((lo, hi)) => format!("{:.0} ({lo:.0}–{hi:.0})", r.0),
                        None => format!("{:.0}", r.0),
                    }),
                ),
                cell(
                    services,
                    "rate vs fewest",
                    ratio
                        .as_ref()
                        .map(|r| format!("{:.3}", r.1))
                        .map_err(|e| *e),
                ),
                cell(
                    services,
                    "errors",
                    level.rate.as_ref().map(|r| r.1.to_string()),
                ),
                cell(services, "CPU while measured", f1(&level.cpu_measured)),
                cell(services, "idle CPU", f1(&level.cpu_idle)),
                cell(services, "RSS idle", f0(&level.rss_idle)),
                cell(services, "RSS after traffic", f0(&level.rss_traffic)),
                cell(services, "peak RSS", f0(&level.rss_peak)),
                cell(
                    services,
                    "kernel map memory",
                    level
                        .kernel
                        .as_ref()
                        .map(|maps| format!("{:.1}", mib(kernel_bytes(maps)))),
                ),
            ];
            cells.extend(took(
                &mut cell,
                services,
                "scrape",
                with_bytes(&level.scrape),
            ));
            cells.push(cell(
                services,
                "traffic on every service",
                level
                    .traffic
                    .as_ref()
                    .map(|t| format!("{} ({}) in {:.1} s", t.connections, t.errors, t.secs)),
            ));
            let scrape_traffic = with_bytes(&level.scrape_traffic);
            cells.extend(took(
                &mut cell,
                services,
                "scrape after traffic",
                scrape_traffic,
            ));
            for (what, m) in [
                ("status", &level.status),
                ("status ROUTE", &level.status_route),
            ] {
                cells.extend(took(&mut cell, services, what, with_bytes(m)));
            }
            cells.extend([
                cell(
                    services,
                    "status --watch",
                    level.watch.as_ref().map(|w| {
                        let (median, max) = w.median_max_ms();
                        format!("{median:.1} ({max:.1})")
                    }),
                ),
                cell(
                    services,
                    "status --watch",
                    level.watch.as_ref().map(|w| format!("{:.1}", w.cpu_ms)),
                ),
                cell(
                    services,
                    "status --watch",
                    level.watch.as_ref().map(|w| w.frame_bytes.to_string()),
                ),
            ]);
            let _ = writeln!(md, "| {SCENARIO} | {services} | {} |", cells.join(" | "));
            json_rows.push(format!(
                "    {}",
                json!({
                    "scenario": SCENARIO,
                    "services": services,
                    "concurrency": CONCURRENCY,
                    "conn_per_sec": num(level.rate.as_ref().map(|r| r.0)),
                    "conn_per_sec_runs": RATE_RUNS,
                    "conn_per_sec_slowest": level.rate_spread.map(|r| r.0),
                    "conn_per_sec_fastest": level.rate_spread.map(|r| r.1),
                    "ratio_to_fewest": num(ratio.as_ref().map(|r| r.1).map_err(|e| *e)),
                    "errors": num(level.rate.as_ref().map(|r| r.1)),
                    "agent_cpu_percent": num(level.cpu_measured.as_ref().copied()),
                    "agent_idle_cpu_percent": num(level.cpu_idle.as_ref().copied()),
                    "idle_seconds": IDLE.as_secs(),
                    "rss_mib_idle": num(level.rss_idle.as_ref().copied()),
                    "rss_mib_after_traffic": num(level.rss_traffic.as_ref().copied()),
                    "rss_mib_peak": num(level.rss_peak.as_ref().copied()),
                    "kernel_map_bytes_memlock": num(level.kernel.as_ref().map(|k| kernel_bytes(k))),
                    "kernel_maps": level.kernel.as_ref().ok().map(|maps| maps.iter().map(|m| json!({
                        "name": m.name, "type": m.kind, "max_entries": m.max_entries,
                        "bytes_key": m.key, "bytes_value": m.value, "bytes_memlock": m.memlock,
                    })).collect::<Vec<_>>()),
                    "scrape_ms": num(level.scrape.as_ref().map(|s| s.0)),
                    "scrape_bytes": num(level.scrape.as_ref().map(|s| s.1)),
                    "traffic_connections": num(level.traffic.as_ref().map(|t| t.connections)),
                    "traffic_errors": num(level.traffic.as_ref().map(|t| t.errors)),
                    "scrape_after_traffic_ms": num(level.scrape_traffic.as_ref().map(|s| s.0)),
                    "scrape_after_traffic_bytes": num(level.scrape_traffic.as_ref().map(|s| s.1)),
                    "status_ms": num(level.status.as_ref().map(|s| s.0)),
                    "status_bytes": num(level.status.as_ref().map(|s| s.1)),
                    "status_route": level.route(),
                    "status_route_ms": num(level.status_route.as_ref().map(|s| s.0)),
                    "status_route_bytes": num(level.status_route.as_ref().map(|s| s.1)),
                    "watch_terminal_rows": watch::ROWS,
                    "watch_terminal_columns": watch::COLUMNS,
                    "watch_interval_ms": watch::INTERVAL.as_secs_f64() * 1e3,
                    "watch_redraw_ms": level.watch.as_ref().ok().map(|w| w.redraws.clone()),
                    "watch_cpu_ms_per_redraw": num(level.watch.as_ref().map(|w| w.cpu_ms)),
                    "watch_redraw_ms_median": num(level.watch.as_ref().map(|w| w.median_max_ms().0)),
                    "watch_redraw_ms_max": num(level.watch.as_ref().map(|w| w.median_max_ms().1)),
                    "watch_frame_bytes": num(level.watch.as_ref().map(|w| w.frame_bytes)),
                    "watch_frame_lines": num(level.watch.as_ref().map(|w| w.frame_lines)),
                })
            ));
        }
        self.report_bpf(md, json_rows, &mut notes);
        self.report_maps(md);
        self.report_changes(md, json_rows, &mut notes);
        write_notes(md, &notes);
        self.goals(goals);
    }

    /// The kernel's time per connection in each program at each level
    /// (issue 21: at most 500 ns in all; issue 17: flat as services grow).
    fn report_bpf(&self, md: &mut String, json_rows: &mut Vec<String>, notes: &mut Vec<Note>) {
        md.push_str(&bpf_cost::table_header(
            "services in the maps",
            "---:",
            CONCURRENCY,
        ));
        for level in &self.levels {
            let services = self.base_services + level.extra;
            match &level.bpf {
                Ok(cost) => {
                    let _ = writeln!(md, "| {SCENARIO} BPF cost | {services} | {}", cost.cells());
                    let mut row = cost.json();
                    row.insert("scenario".into(), json!(format!("{SCENARIO} BPF cost")));
                    row.insert("services".into(), json!(services));
                    json_rows.push(format!("    {}", Value::Object(row)));
                }
                Err(why) => {
                    notes.push((
                        format!("{services} services"),
                        "BPF cost".to_owned(),
                        why.clone(),
                    ));
                    let _ = writeln!(
                        md,
                        "| {SCENARIO} BPF cost | {services} |{}",
                        bpf_cost::not_measured()
                    );
                }
            }
        }
    }

    /// The agent's maps, one row each: what bpftool says of them, and their
    /// `bytes_memlock` at each level (the sizing guide, docs/sizing.md, reads it).
    fn report_maps(&self, md: &mut String) {
        let measured: Vec<(usize, &[MapInfo])> = self
            .levels
            .iter()
            .filter_map(|l| {
                Some((
                    self.base_services + l.extra,
                    l.kernel.as_ref().ok()?.as_slice(),
                ))
            })
            .collect();
        let Some((_, first)) = measured.first() else {
            return;
        };
        let _ = write!(
            md,
            "\n| the agent's maps | type | max_entries | key bytes | value bytes | {} |\n|---|---|---:|---:|---:|{}\n",
            measured
                .iter()
                .map(|(services, _)| format!("bytes_memlock with {services} services"))
                .collect::<Vec<_>>()
                .join(" | "),
            "---:|".repeat(measured.len())
        );
        let mut rows: Vec<&MapInfo> = first.iter().collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        for map in rows {
            let memlock: Vec<String> = measured
                .iter()
                .map(|(_, maps)| {
                    maps.iter()
                        .find(|m| m.name == map.name && m.kind == map.kind)
                        .map_or_else(|| "-".into(), |m| m.memlock.to_string())
                })
                .collect();
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} | {} | {} |",
                map.name,
                map.kind,
                map.max_entries,
                map.key,
                map.value,
                memlock.join(" | ")
            );
        }
    }

    /// The table of the timed `apply` and `delete`.
    fn report_changes(&self, md: &mut String, json_rows: &mut Vec<String>, notes: &mut Vec<Note>) {
        if !self
            .levels
            .iter()
            .any(|l| TIMED.iter().any(|(t, _)| *t == l.extra))
        {
            return;
        }
        let _ = write!(
            md,
            "\n| scenario | what | seconds, end to end (command start to the last route in force) | commands |\n|---|---|---:|---:|\n"
        );
        for level in &self.levels {
            let n = level.extra;
            if !TIMED.iter().any(|(t, _)| *t == n) {
                continue;
            }
            for (verb, change) in [("apply", &level.apply), ("delete", &level.delete)] {
                let what = format!(
                    "`traffic-shift {verb}` of {n} services (ServiceEntry + VirtualService each, {} files)",
                    n.div_ceil(PER_FILE)
                );
                let (secs, commands, why) = match change {
                    Some(Ok(c)) => (format!("{:.2}", c.secs), c.commands.to_string(), None),
                    Some(Err(why)) => ("n/m".into(), "n/m".into(), Some(why.clone())),
                    None => (
                        "n/m".into(),
                        "n/m".into(),
                        Some(
                            level
                                .not_reached
                                .clone()
                                .unwrap_or_else(|| "not reached".into()),
                        ),
                    ),
                };
                if let Some(why) = &why {
                    notes.push((format!("`{verb}` of {n}"), String::new(), why.clone()));
                }
                let _ = writeln!(md, "| rule change | {what} | {secs} | {commands} |");
                json_rows.push(format!(
                    "    {}",
                    json!({
                        "scenario": "rule change",
                        "what": format!("{verb} {n} services"),
                        "seconds": change.as_ref().and_then(|c| c.as_ref().ok()).map(|c| c.secs),
                        "commands": change.as_ref().and_then(|c| c.as_ref().ok()).map(|c| c.commands),
                        "not_measured": why,
                    })
                ));
            }
        }
    }

    /// The level with `n` generated services, if the run has it.
    fn at(&self, n: usize) -> Option<&Level> {
        self.levels.iter().find(|l| l.extra == n)
    }

    /// What a goal line says of a figure of level `n`: the figure and met or not
    /// met, or why it was not measured (and so not met).
    fn judge(
        &self,
        n: usize,
        m: Option<Result<f64, String>>,
        show: &dyn Fn(f64) -> String,
        ok: &dyn Fn(f64) -> bool,
    ) -> String {
        match m {
            None => format!("{}, not met", full_only(self.base_services + n)),
            Some(Err(why)) => format!("not measured ({why}), not met"),
            Some(Ok(v)) => format!("{} {}", show(v), verdict(ok(v))),
        }
    }

    /// The goal lines of issue 17: met, not met, or not measured (so not met).
    fn goals(&self, goals: &mut String) {
        let base = self.base_services;
        for verb in ["apply", "delete"] {
            for (n, limit) in TIMED {
                let m = self.at(n).map(|l| {
                    let change = if verb == "apply" { &l.apply } else { &l.delete };
                    match change {
                        Some(c) => c.as_ref().map(|c| c.secs).map_err(Clone::clone),
                        None => Err(l
                            .not_reached
                            .clone()
                            .unwrap_or_else(|| "not reached".into())),
                    }
                });
                let _ = writeln!(
                    goals,
                    "goal: {verb} of {n} services < {limit} s: {}",
                    self.judge(n, m, &|s| format!("{s:.2} s"), &|s| s < limit)
                );
            }
        }
        let rate_base = self
            .levels
            .first()
            .and_then(|l| l.rate.as_ref().ok())
            .map(|r| r.0);
        let ratio = self.at(GOAL_LEVEL).map(|l| {
            reached(l, &l.rate.as_ref().map(|r| r.0).map_err(Clone::clone)).and_then(|r| {
                rate_base
                    .map(|b| r / b)
                    .ok_or_else(|| format!("no rate with {base} services"))
            })
        });
        let _ = writeln!(
            goals,
            "goal: connection rate at {} services >= {RATE_GOAL} of {base}: {}",
            base + GOAL_LEVEL,
            self.judge(GOAL_LEVEL, ratio, &|r| format!("{r:.3}"), &|r| r
                >= RATE_GOAL)
        );
        let idle = self.at(GOAL_LEVEL).map(|l| reached(l, &l.cpu_idle));
        let _ = writeln!(
            goals,
            "goal: idle agent CPU < {IDLE_CPU_GOAL}% at {} services: {}",
            base + GOAL_LEVEL,
            self.judge(GOAL_LEVEL, idle, &|p| format!("{p:.2}%"), &|p| p
                < IDLE_CPU_GOAL)
        );
        self.rss_goal(goals);
        let (n, limit) = SCRAPE_GOAL;
        let scrape = self.at(n).map(|l| {
            reached(
                l,
                &l.scrape_traffic.as_ref().map(|s| s.0).map_err(Clone::clone),
            )
        });
        let _ = writeln!(
            goals,
            "goal: `/metrics` scrape after traffic on all {} services < {limit} ms: {}",
            base + n,
            self.judge(n, scrape, &|ms| format!("{ms:.1} ms"), &|ms| ms < limit)
        );
        self.watch_goal(goals);
        // Issue 21's: the kernel's time per connect-time connection, all programs.
        let bpf = self.levels.first().map(|l| {
            l.bpf
                .as_ref()
                .map(bpf_cost::Cost::total)
                .map_err(Clone::clone)
        });
        let _ = writeln!(
            goals,
            "goal: BPF time per connect-time connection <= {} ns at {base} services: {}",
            tcp::BPF_GOAL_NS,
            self.judge(0, bpf, &|ns| format!("{ns:.0} ns"), &|ns| ns
                <= tcp::BPF_GOAL_NS)
        );
    }

    /// The `status --watch` goal: every redraw at the largest level, the slowest included.
    fn watch_goal(&self, goals: &mut String) {
        let base = self.base_services;
        let median = self
            .at(GOAL_LEVEL)
            .and_then(|l| l.watch.as_ref().ok())
            .map(|w| w.median_max_ms().0);
        let redraw = self.at(GOAL_LEVEL).map(|l| {
            reached(
                l,
                &l.watch
                    .as_ref()
                    .map(|w| w.median_max_ms().1)
                    .map_err(Clone::clone),
            )
        });
        let _ = writeln!(
            goals,
            "goal: status --watch redraw at {} services < {WATCH_GOAL} ms: {}",
            base + GOAL_LEVEL,
            self.judge(
                GOAL_LEVEL,
                redraw,
                &|ms| format!(
                    "the slowest of {} {ms:.1} ms (median {})",
                    watch::REDRAWS,
                    median.map_or_else(String::new, |m| format!("{m:.1} ms"))
                ),
                &|ms| ms < WATCH_GOAL
            )
        );
    }

    /// The RSS goal: at each of its levels, the larger of the RSS idle and after traffic.
    fn rss_goal(&self, goals: &mut String) {
        let base = self.base_services;
        let parts: Vec<(String, bool)> = RSS_GOALS
            .iter()
            .map(|&(n, limit)| {
                let m = self.at(n).map(|l| {
                    reached(l, &l.rss_idle)
                        .map(|idle| l.rss_traffic.as_ref().map_or(idle, |t| t.max(idle)))
                });
                let ok = matches!(&m, Some(Ok(v)) if *v <= limit);
                let text = match m {
                    None => full_only(base + n),
                    Some(Err(why)) => format!("not measured at {} ({why})", base + n),
                    Some(Ok(v)) => format!("{v:.0} MiB at {}", base + n),
                };
                (text, ok)
            })
            .collect();
        let _ = writeln!(
            goals,
            "goal: agent RSS <= {} MiB at {} and <= {} MiB at {} services: {}; {}",
            RSS_GOALS[0].1,
            base + RSS_GOALS[0].0,
            RSS_GOALS[1].1,
            base + RSS_GOALS[1].0,
            parts
                .iter()
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            verdict(parts.iter().all(|(_, ok)| *ok))
        );
    }
}

/// A figure not measured: the level (or the command), the figure, why.
type Note = (String, String, String);

/// The notes under the tables, one line per level and reason.
fn write_notes(md: &mut String, notes: &[Note]) {
    if notes.is_empty() {
        return;
    }
    let _ = writeln!(md, "\nnot measured (n/m):");
    let mut done = vec![false; notes.len()];
    for (i, (subject, _, why)) in notes.iter().enumerate() {
        if done[i] {
            continue;
        }
        let mut whats: Vec<&str> = Vec::new();
        for (j, (s, what, w)) in notes.iter().enumerate().skip(i) {
            if s == subject && w == why {
                done[j] = true;
                if !what.is_empty() && !whats.contains(&what.as_str()) {
                    whats.push(what);
                }
            }
        }
        let whats = if whats.is_empty() {
            String::new()
        } else {
            format!(", {}", whats.join(", "))
        };
        let _ = writeln!(md, "- {subject}{whats}: {}", why.replace('|', "\\|"));
    }
}

/// A level's figure, or why not: the level not reached comes first.
fn reached(l: &Level, m: &Result<f64, String>) -> Result<f64, String> {
    match (&l.not_reached, m) {
        (Some(r), _) => Err(r.clone()),
        (None, m) => m.clone(),
    }
}

fn full_only(services: usize) -> String {
    format!("not measured ({services} services only in a full run)")
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "not met" }
}

/// A figure for the JSON rows: `null` when not measured.
fn num<T: Into<Value>>(m: Result<T, &String>) -> Value {
    m.map_or(Value::Null, Into::into)
}

/// A figure with one decimal, and with none.
fn f1(m: &Measured<f64>) -> Result<String, &String> {
    m.as_ref().map(|v| format!("{v:.1}"))
}

fn f0(m: &Measured<f64>) -> Result<String, &String> {
    m.as_ref().map(|v| format!("{v:.0}"))
}

#[allow(clippy::cast_precision_loss)] // memory sizes far below 2^52
fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::{address, cpu_time, generate, peak_rss_mib, rss_mib};

    #[test]
    fn generated_services_are_valid_rules_with_distinct_addresses() {
        let dir = std::env::temp_dir().join(format!("xtask-scale-{}", std::process::id()));
        let files = generate(&dir, 100_000).unwrap();
        assert_eq!(files.len(), 100);
        let text: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        assert_eq!(text.matches("kind: ServiceEntry").count(), 100_000);
        assert_eq!(text.matches("kind: VirtualService").count(), 100_000);
        assert!(text.contains("addresses: [127.101.4.1]"), "service 1000");
        assert!(text.contains("addresses: [127.101.0.250]"), "service 249");
        assert!(text.contains("addresses: [127.102.0.1]"), "service 64000");
        let addresses: std::collections::BTreeSet<_> = text
            .lines()
            .filter_map(|l| l.split("addresses: [").nth(1)?.split(']').next())
            .map(|a| a.parse::<std::net::Ipv4Addr>().unwrap())
            .collect();
        assert_eq!(addresses.len(), 100_000, "distinct");
        assert!(
            addresses
                .iter()
                .all(|a| a.octets()[0] == 127 && a.octets()[3] != 0)
        );
        assert_eq!(
            address(99_999),
            "127.102.143.250".parse::<std::net::Ipv4Addr>().unwrap()
        );
        assert!(
            files
                .iter()
                .all(|f| std::fs::metadata(f).unwrap().len() < 4 << 20),
            "a rules file may have 4 MiB"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let me = std::process::id();
        assert!(rss_mib(me).unwrap() > 0.0);
        assert!(peak_rss_mib(me).unwrap() >= rss_mib(me).unwrap() - 1.0);
        assert!(cpu_time(me).is_some());
    }
}
