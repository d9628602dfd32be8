//! Scenario 3, HTTP requests: requests per second and p50/p99 latency over kept-alive
//! connections and with `Connection: close` (a new connection per request), straight
//! to one `http-echo` backend and through every contender splitting 50/50 between two
//! (v1 and v2, the same two processes for all): traffic-shift's L7 proxy on the mesh
//! path (a client in the agent's cgroup connects to the service address
//! `127.100.0.5:8000`, connect4 hands the connection to the proxy; the goal is about
//! this path) and on a Gateway port (`127.0.0.1:18080`, the proxy's own listener), Envoy (HTTP
//! connection manager, a route with `weighted_clusters` as Istio configures it),
//! haproxy in HTTP mode and nginx's http upstream, each with 2 worker threads (the L7
//! proxy's runtime has 2). The load client is `ts-bench --mode http|http-close`, which
//! also counts the answers by version: each contender's run must split 50/50.
//! In the full run `wrk` (when installed) measures the direct backend too, as a check
//! that ts-bench is not the bottleneck. Every row also shows the CPU time per request
//! of the proxy (its process and children: the agent for the L7 proxy) and of the
//! backends, from `/proc` over the run (`cpu.rs`): the machine's cores are shared by
//! the client, the backends and the proxy, so requests per second measure the set;
//! CPU per request measures each. `--only l7` runs scenario 3 alone, on http-echo
//! and again on fast backends (`l7.rs`).
//!
//! And the HTTP half of scenario 4 (split accuracy, 80/20, per request): the L7 proxy
//! by default (smooth) selection and RANDOM, Envoy, haproxy roundrobin and random,
//! nginx, measured and reported by `split.rs`.

use std::{fmt::Write as _, path::Path, process::Command, time::Instant};

use anyhow::{Context as _, Result};

use super::{
    client::{json_number, ts_bench, wait_answers},
    cpu,
    proxies::{PROXY_THREADS, envoy_cluster},
    report::{Skipped, median, unavailable},
    split,
};
use crate::cmd;

pub const SCENARIO: &str = "HTTP requests";
/// http-echo v1 and v2 (bench/rules/http-echo.yaml).
pub const V1: u16 = 19301;
pub const V2: u16 = 19302;
const DIRECT: &str = "127.0.0.1:19301";
/// Client connections (ts-bench threads) of scenario 3.
const CONCURRENCY: u32 = 16;
/// The goal: the L7 proxy's requests per second at least this times the best of
/// Envoy, haproxy and nginx, with a p99 no worse than that one's.
const GOAL_VS_BEST: f64 = 1.2;
/// A contender's v2 share over a scenario 3 run must be 50 % within this (thousands
/// of requests; Envoy's weighted clusters pick at random: one standard deviation is
/// 0.5 % at 10 000 requests).
pub const SHARE_TOLERANCE: f64 = 0.05;

/// An HTTP service the proxies split between v1 and v2, with its weights.
struct Service {
    /// Proxy config names.
    name: &'static str,
    /// The ServiceEntry host (Envoy's cluster names, as Istio makes them).
    host: &'static str,
    weights: [u32; 2],
}

/// Scenario 3's service: 50/50.
const EVEN: Service = Service {
    name: "http_echo",
    host: "http-echo.local",
    weights: [50, 50],
};
/// Scenario 4's service: 80/20.
const SPLIT: Service = Service {
    name: "http_echo_split",
    host: "http-echo-split.local",
    weights: [80, 20],
};
/// The ServiceEntries' port.
const PORT: u16 = 8000;

const MESH_EVEN: &str = "127.100.0.5:8000";
const MESH_SPLIT: &str = "127.100.0.6:8000";
const MESH_RANDOM: &str = "127.100.0.7:8000";
/// The Gateway port bound to http-echo.local's 50/50 split (the L7 proxy listens there).
const GATEWAY_EVEN: &str = "127.0.0.1:18080";
const HAPROXY_EVEN: &str = "127.0.0.1:19120";
const HAPROXY_SPLIT: &str = "127.0.0.1:19121";
const HAPROXY_RANDOM: &str = "127.0.0.1:19122";
const NGINX_EVEN: &str = "127.0.0.1:19130";
const NGINX_SPLIT: &str = "127.0.0.1:19131";
const ENVOY_EVEN: &str = "127.0.0.1:19140";
const ENVOY_SPLIT: &str = "127.0.0.1:19141";

/// The two ways of sending requests.
const MODES: [Mode; 2] = [
    Mode {
        name: "keep-alive",
        flag: "http",
    },
    Mode {
        name: "Connection: close",
        flag: "http-close",
    },
];

struct Mode {
    name: &'static str,
    /// ts-bench's `--mode`.
    flag: &'static str,
}

/// What the runs need of the bench's setup.
pub struct Env<'a> {
    pub bin: &'a Path,
    pub netns: &'a str,
    pub cgroup: &'a Path,
    pub quick: bool,
    pub envoy_log: &'a Path,
    /// The processes whose CPU time per request is shown.
    pub pids: Pids,
    /// What answers on the backends' ports (`http-echo`, or the fast ones).
    pub backends: &'static str,
}

/// The processes whose CPU time per request the report shows.
pub struct Pids {
    /// Each contender's process (with its children), by contender name.
    pub proxies: Vec<(&'static str, u32)>,
    /// The processes answering on the backends' ports.
    pub backends: Vec<u32>,
}

impl Pids {
    /// The contenders' and http-echo's processes among those the bench started.
    pub fn of(procs: &super::guards::Processes) -> Self {
        let proxies = [
            ("traffic-shift L7 mesh", "agent"),
            ("traffic-shift L7 gateway", "agent"),
            ("envoy", "envoy"),
            ("haproxy", "haproxy"),
            ("nginx", "nginx"),
        ]
        .into_iter()
        .filter_map(|(name, what)| Some((name, procs.pid(what)?)))
        .collect();
        let backends = ["http-echo v1", "http-echo v2"]
            .into_iter()
            .filter_map(|what| procs.pid(what))
            .collect();
        Self { proxies, backends }
    }
}

impl Env<'_> {
    fn ts_bench(&self, in_cgroup: bool, args: &[&str]) -> Result<String> {
        ts_bench(self.bin, self.netns, self.cgroup, in_cgroup, args)
    }
}

/// One thing a client sends requests to.
struct Contender {
    name: &'static str,
    target: &'static str,
    in_cgroup: bool,
}

/// One ts-bench HTTP run.
struct Sample {
    requests: u64,
    req_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
    one: u64,
    two: u64,
    /// The client's CPU time over the run's wall time, in % of one CPU.
    client_cpu: f64,
    /// The proxy's CPU time per request served over the run (warmup included), µs;
    /// NaN for direct.
    proxy_cpu_us: f64,
    /// The backends' likewise.
    backend_cpu_us: f64,
}

/// The runs of one (mode, contender), one per repetition.
#[derive(Default)]
struct Row {
    samples: Vec<Sample>,
}

/// The direct backend measured by wrk (keep-alive), one per repetition.
struct WrkSample {
    req_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

/// Everything measured, for the report.
pub struct Results {
    /// What answered on the backends' ports.
    backends: &'static str,
    contenders: Vec<Contender>,
    /// `rows[m][k]`: `MODES[m]`, `contenders[k]`.
    rows: Vec<Vec<Row>>,
    wrk: Vec<WrkSample>,
    /// Scenario 4's HTTP half (the full run's).
    split: Option<(Vec<split::Splitter>, split::Cells)>,
}

/// Runs scenario 3 and the HTTP half of scenario 4 through direct, the L7 proxy and
/// the `proxies` that were started (haproxy, nginx, envoy); a contender that does not
/// answer is added to `skipped` with the reason.
pub fn run(
    env: &Env,
    proxies: &[&str],
    skipped: &mut Vec<Skipped>,
    check_interrupted: &impl Fn() -> Result<()>,
) -> Result<Results> {
    // `--quick` stays under a minute with the other scenarios: short runs, no wrk.
    let timing = if env.quick {
        (1, 0.3, 0.1)
    } else {
        (3, 3.0, 0.5)
    };
    let mut results = speed(env, proxies, skipped, timing, check_interrupted)?;
    let (splitters, split_cells) = split_half(env, proxies, skipped, check_interrupted)?;
    results.split = Some((splitters, split_cells));
    Ok(results)
}

/// Scenario 3 alone: `reps` runs of `duration` s (after `warmup` s) per mode and
/// contender, interleaved; wrk on the direct backend once per repetition, unless
/// `--quick`.
pub fn speed(
    env: &Env,
    proxies: &[&str],
    skipped: &mut Vec<Skipped>,
    (reps, duration, warmup): (u32, f64, f64),
    check_interrupted: &impl Fn() -> Result<()>,
) -> Result<Results> {
    let began = Instant::now();
    let contenders = ready(env, proxies, skipped)?;
    let wrk = if env.quick {
        None
    } else {
        let wrk = cmd::find_program("wrk");
        if wrk.is_none() {
            println!("bench: wrk not installed: the direct backend is measured by ts-bench only");
        }
        wrk
    };

    let mut rows: Vec<Vec<Row>> = MODES
        .iter()
        .map(|_| contenders.iter().map(|_| Row::default()).collect())
        .collect();
    let mut wrk_samples = Vec::new();
    // Interleaved, as scenario 1.
    for rep in 1..=reps {
        for (m, mode) in MODES.iter().enumerate() {
            for (k, c) in contenders.iter().enumerate() {
                check_interrupted()?;
                let s = http_run(env, c, mode.flag, CONCURRENCY, duration, warmup)?;
                eprintln!(
                    "bench: rep {rep}/{reps} http {:<17} {:<24} {:>7.0} req/s p50 {:>5} µs p99 {:>6} µs errors {} v1 {} v2 {} client CPU {:.0}% proxy {:.1} µs/req backends {:.1} µs/req",
                    mode.name,
                    c.name,
                    s.req_per_sec,
                    s.p50_us,
                    s.p99_us,
                    s.errors,
                    s.one,
                    s.two,
                    s.client_cpu,
                    s.proxy_cpu_us,
                    s.backend_cpu_us
                );
                rows[m][k].samples.push(s);
            }
        }
        if let Some(wrk) = &wrk {
            check_interrupted()?;
            let s = wrk_run(env, wrk, DIRECT, duration + warmup)?;
            eprintln!(
                "bench: rep {rep}/{reps} http keep-alive       direct (wrk)             {:>7.0} req/s p50 {:>5.0} µs p99 {:>6.0} µs errors {}",
                s.req_per_sec, s.p50_us, s.p99_us, s.errors
            );
            wrk_samples.push(s);
        }
    }

    eprintln!(
        "bench: the HTTP requests ({}) took {:.1} s",
        env.backends,
        began.elapsed().as_secs_f64()
    );
    Ok(Results {
        backends: env.backends,
        contenders,
        rows,
        wrk: wrk_samples,
        split: None,
    })
}

/// Direct, the L7 proxy and the started `proxies` that answer (waiting for them as
/// scenario 1 does); the others are added to `skipped` with the reason.
fn ready(env: &Env, proxies: &[&str], skipped: &mut Vec<Skipped>) -> Result<Vec<Contender>> {
    let mut candidates = vec![
        Contender {
            name: "direct",
            target: DIRECT,
            in_cgroup: false,
        },
        Contender {
            name: "traffic-shift L7 mesh",
            target: MESH_EVEN,
            in_cgroup: true,
        },
        Contender {
            name: "traffic-shift L7 gateway",
            target: GATEWAY_EVEN,
            in_cgroup: false,
        },
    ];
    for (name, target) in [
        ("envoy", ENVOY_EVEN),
        ("haproxy", HAPROXY_EVEN),
        ("nginx", NGINX_EVEN),
    ] {
        if proxies.contains(&name) {
            candidates.push(Contender {
                name,
                target,
                in_cgroup: false,
            });
        }
    }
    let mut ready = Vec::new();
    for c in candidates {
        let check = || {
            let s = http_run(env, &c, MODES[0].flag, 1, 0.1, 0.0)?;
            Ok((s.requests == 0 || s.errors > 0)
                .then(|| format!("{} requests answered, {} errors", s.requests, s.errors)))
        };
        let Some(r) = wait_answers(check, || false) else {
            ready.push(c);
            continue;
        };
        anyhow::ensure!(
            c.name != "direct",
            "{SCENARIO}: the direct backend {} does not answer: {r}",
            c.target
        );
        let mut why = format!("{} does not answer ({r})", c.target);
        if c.name == "envoy" {
            let log = std::fs::read_to_string(env.envoy_log).unwrap_or_default();
            if let Some(last) = log.lines().rev().find(|l| !l.trim().is_empty()) {
                let _ = write!(why, "; its log ends: {}", last.trim());
            }
        }
        println!("bench: contender left out of {SCENARIO}: {}: {why}", c.name);
        skipped.push(Skipped {
            scenario: SCENARIO,
            name: c.name,
            why,
        });
    }
    Ok(ready)
}

/// Scenario 4's HTTP half: every 80/20 splitter that answers, measured by `split.rs`.
fn split_half(
    env: &Env,
    proxies: &[&str],
    skipped: &mut Vec<Skipped>,
    check_interrupted: &impl Fn() -> Result<()>,
) -> Result<(Vec<split::Splitter>, split::Cells)> {
    let mut candidates = vec![
        splitter("traffic-shift L7 (default)", MESH_SPLIT, true, true),
        splitter("traffic-shift L7 RANDOM", MESH_RANDOM, true, false),
    ];
    for (proxy, name, target) in [
        ("envoy", "envoy (weighted_clusters)", ENVOY_SPLIT),
        ("haproxy", "haproxy roundrobin", HAPROXY_SPLIT),
        ("haproxy", "haproxy random", HAPROXY_RANDOM),
        ("nginx", "nginx (weighted round robin)", NGINX_SPLIT),
    ] {
        if proxies.contains(&proxy) {
            candidates.push(splitter(name, target, false, false));
        }
    }
    let mut count_run = |s: &split::Splitter, n: u64, c: u32| {
        let line = env.ts_bench(
            s.in_cgroup,
            &[
                "--mode",
                "http",
                "--target",
                s.target,
                "--count",
                &n.to_string(),
                "--concurrency",
                &c.to_string(),
            ],
        )?;
        split::Sample::parse(&line)
    };
    let splitters = split::ready(
        candidates,
        split::REQUESTS_SCENARIO,
        &mut count_run,
        skipped,
    );
    let cells = split::measure(
        &splitters,
        if env.quick { 1 } else { 5 },
        "requests",
        &mut count_run,
        check_interrupted,
    )?;
    Ok((splitters, cells))
}

fn splitter(
    name: &'static str,
    target: &'static str,
    in_cgroup: bool,
    goal: bool,
) -> split::Splitter {
    split::Splitter {
        name,
        target,
        in_cgroup,
        goal,
    }
}

/// One ts-bench run of `mode` against `c`.
fn http_run(
    env: &Env,
    c: &Contender,
    mode: &str,
    concurrency: u32,
    secs: f64,
    warmup: f64,
) -> Result<Sample> {
    let proxy_pid = env
        .pids
        .proxies
        .iter()
        .find(|(name, _)| *name == c.name)
        .map(|(_, pid)| *pid);
    let proxy_cpu = || proxy_pid.and_then(|pid| cpu::seconds(&[pid]));
    let backend_cpu = || cpu::seconds(&env.pids.backends);
    let cpu_before = (proxy_cpu(), backend_cpu());
    let start = Instant::now();
    let line = env.ts_bench(
        c.in_cgroup,
        &[
            "--mode",
            mode,
            "--target",
            c.target,
            "--concurrency",
            &concurrency.to_string(),
            "--duration",
            &secs.to_string(),
            "--warmup",
            &warmup.to_string(),
        ],
    )?;
    let wall = start.elapsed().as_secs_f64();
    let cpu_after = (proxy_cpu(), backend_cpu());
    let field = |key: &str| {
        json_number(&line, key).with_context(|| format!("no {key} in ts-bench output {line}"))
    };
    let all_requests = field("all_requests")?;
    let per_request = |before: Option<f64>, after: Option<f64>| match (before, after) {
        (Some(before), Some(after)) if all_requests > 0.0 => (after - before) / all_requests * 1e6,
        _ => f64::NAN,
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(Sample {
        requests: field("requests")? as u64,
        req_per_sec: field("req_per_sec")?,
        p50_us: field("p50_us")?,
        p99_us: field("p99_us")?,
        errors: field("errors")? as u64,
        one: field("one")? as u64,
        two: field("two")? as u64,
        client_cpu: field("client_cpu_s")? / wall * 100.0,
        proxy_cpu_us: per_request(cpu_before.0, cpu_after.0),
        backend_cpu_us: per_request(cpu_before.1, cpu_after.1),
    })
}

/// wrk against the direct backend over kept-alive connections: as many connections as
/// ts-bench, 2 threads. Its `--latency` distribution gives p50 and p99.
fn wrk_run(env: &Env, wrk: &Path, target: &str, secs: f64) -> Result<WrkSample> {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", env.netns])
        .arg(wrk)
        .args(["--threads", "2", "--connections"])
        .arg(CONCURRENCY.to_string())
        .arg("--duration")
        .arg(format!("{}s", secs.ceil()))
        .arg("--latency")
        .arg(format!("http://{target}/"));
    let shown = cmd::show(&c);
    let out = c
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    anyhow::ensure!(
        out.status.success(),
        "`{shown}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("`{shown}`: unexpected output"))
}

/// The figures of wrk's report: `Requests/sec:`, the `50%` and `99%` lines of the
/// latency distribution (`812.00us`, `1.23ms`, `2.00s`), and its error lines.
fn parse_wrk(out: &str) -> Result<WrkSample> {
    let value = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::trim))
            .with_context(|| format!("no line `{prefix}` in:\n{out}"))
    };
    let micros = |v: &str| -> Result<f64> {
        let (number, scale) = if let Some(n) = v.strip_suffix("us") {
            (n, 1.0)
        } else if let Some(n) = v.strip_suffix("ms") {
            (n, 1e3)
        } else if let Some(n) = v.strip_suffix('s') {
            (n, 1e6)
        } else {
            anyhow::bail!("latency {v:?}: a unit us, ms or s expected")
        };
        Ok(number.parse::<f64>().context("latency number")? * scale)
    };
    let req_per_sec = value("Requests/sec:")?
        .parse()
        .context("Requests/sec number")?;
    // `Socket errors: connect 0, read 0, write 0, timeout 0` and
    // `Non-2xx or 3xx responses: N` appear only when there were some.
    let mut errors = 0;
    if let Ok(line) = value("Socket errors:") {
        errors += line
            .split(',')
            .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    if let Ok(n) = value("Non-2xx or 3xx responses:") {
        errors += n.parse::<u64>().unwrap_or(0);
    }
    Ok(WrkSample {
        req_per_sec,
        p50_us: micros(value("50%")?)?,
        p99_us: micros(value("99%")?)?,
        errors,
    })
}

impl Results {
    /// The markdown tables, JSON rows and goal lines of scenario 3 and 4's HTTP half.
    pub fn report(
        &self,
        skipped: &[Skipped],
        md: &mut String,
        json_rows: &mut Vec<String>,
        goals: &mut String,
    ) {
        let backends = self.backends;
        let _ = write!(
            md,
            "\n| scenario | requests | backends | contender | req/s | vs direct | p50 µs | p99 µs | v2 share | client CPU | proxy CPU µs/req | backends CPU µs/req | errors |\n\
             |---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        );
        for (m, mode) in MODES.iter().enumerate() {
            let rows = &self.rows[m];
            let figures: Vec<Figures> = rows.iter().map(Figures::of).collect();
            let direct = figures.first().map_or(f64::NAN, |f| f.rate);
            for ((c, f), row) in self.contenders.iter().zip(&figures).zip(rows) {
                let ratio = f.rate / direct;
                let share = if c.name == "direct" {
                    "-".to_owned()
                } else {
                    format!("{:.3}", f.share)
                };
                let _ = writeln!(
                    md,
                    "| {SCENARIO} | {} | {backends} | {} | {:.0} | {ratio:.3} | {:.0} | {:.0} | {share} | {:.0}% | {} | {} | {} |",
                    mode.name,
                    c.name,
                    f.rate,
                    f.p50,
                    f.p99,
                    f.client_cpu,
                    cpu_cell(f.proxy_cpu),
                    cpu_cell(f.backend_cpu),
                    f.errors
                );
                json_rows.push(format!(
                    "    {{\"scenario\": \"{SCENARIO}\", \"requests\": \"{}\", \"backends\": \"{backends}\", \"concurrency\": {CONCURRENCY}, \
                     \"contender\": \"{}\", \"target\": \"{}\", \"req_per_sec\": {:.0}, \"ratio_to_direct\": {ratio:.4}, \
                     \"p50_us\": {:.0}, \"p99_us\": {:.0}, \"v2_share\": {:.4}, \"client_cpu_percent\": {:.0}, \
                     \"proxy_cpu_us_per_request\": {}, \"backends_cpu_us_per_request\": {}, \
                     \"errors\": {}, \"req_per_sec_reps\": {:?}}}",
                    mode.name,
                    c.name,
                    c.target,
                    f.rate,
                    f.p50,
                    f.p99,
                    f.share,
                    f.client_cpu,
                    cpu_json(f.proxy_cpu),
                    cpu_json(f.backend_cpu),
                    f.errors,
                    row.samples.iter().map(|s| s.req_per_sec).collect::<Vec<_>>()
                ));
                if c.name != "direct" {
                    let ok = (f.share - 0.5).abs() <= SHARE_TOLERANCE && f.other == 0;
                    let _ = writeln!(
                        goals,
                        "check: {:<24} splits 50/50 ({}, {backends}): v2 share {:.3} of {} answers, {} by neither: {}",
                        c.name,
                        mode.name,
                        f.share,
                        f.answers,
                        f.other,
                        if ok {
                            "yes"
                        } else {
                            "NO (a bench bug: look at its config)"
                        }
                    );
                }
            }
            self.goal(mode, &figures, goals);
        }
        self.wrk_row(md, json_rows);
        unavailable(
            md,
            json_rows,
            skipped,
            SCENARIO,
            &format!("both | {backends} | "),
            "- | - | - | - | - | - | - | - | - |",
        );
        if let Some((splitters, cells)) = &self.split {
            split::report(
                split::REQUESTS_SCENARIO,
                splitters,
                cells,
                skipped,
                md,
                json_rows,
                goals,
            );
        }
    }

    /// The row of the direct backend measured by wrk, when it was.
    fn wrk_row(&self, md: &mut String, json_rows: &mut Vec<String>) {
        let backends = self.backends;
        if self.wrk.is_empty() {
            return;
        }
        let rate = median(&self.wrk.iter().map(|s| s.req_per_sec).collect::<Vec<_>>());
        let p50 = median(&self.wrk.iter().map(|s| s.p50_us).collect::<Vec<_>>());
        let p99 = median(&self.wrk.iter().map(|s| s.p99_us).collect::<Vec<_>>());
        let errors: u64 = self.wrk.iter().map(|s| s.errors).sum();
        let direct = Figures::of(&self.rows[0][0]).rate;
        let _ = writeln!(
            md,
            "| {SCENARIO} | keep-alive | {backends} | direct, measured by wrk | {rate:.0} | {:.3} | {p50:.0} | {p99:.0} | - | - | - | - | {errors} |",
            rate / direct
        );
        json_rows.push(format!(
            "    {{\"scenario\": \"{SCENARIO}\", \"requests\": \"keep-alive\", \"backends\": \"{backends}\", \"concurrency\": {CONCURRENCY}, \
             \"contender\": \"direct, measured by wrk\", \"req_per_sec\": {rate:.0}, \"ratio_to_direct\": {:.4}, \
             \"p50_us\": {p50:.0}, \"p99_us\": {p99:.0}, \"errors\": {errors}}}",
            rate / direct
        ));
    }

    /// The goal line of one mode: the L7 proxy against the best of the proxies.
    fn goal(&self, mode: &Mode, figures: &[Figures], goals: &mut String) {
        let at = |name: &str| {
            self.contenders
                .iter()
                .position(|c| c.name == name)
                .map(|k| &figures[k])
        };
        let Some(ours) = at("traffic-shift L7 mesh") else {
            let _ = writeln!(
                goals,
                "goal: L7 req/s >= {GOAL_VS_BEST}x the best proxy ({}, {}): not met (the L7 path did not answer)",
                mode.name, self.backends
            );
            return;
        };
        let best = ["envoy", "haproxy", "nginx"]
            .into_iter()
            .filter_map(|n| Some((n, at(n)?)))
            .max_by(|a, b| a.1.rate.total_cmp(&b.1.rate));
        let Some((best_name, best)) = best else {
            let _ = writeln!(
                goals,
                "goal: L7 req/s >= {GOAL_VS_BEST}x the best proxy ({}, {}): no proxy to compare with",
                mode.name, self.backends
            );
            return;
        };
        let ratio = ours.rate / best.rate;
        let met = ratio >= GOAL_VS_BEST && ours.p99 <= best.p99 && ours.errors == 0;
        let _ = writeln!(
            goals,
            "goal: L7 req/s >= {GOAL_VS_BEST}x the best proxy, p99 no worse ({}, {}): {:.0} vs {best_name} {:.0} req/s = {ratio:.2}x, p99 {:.0} vs {:.0} µs: {}",
            mode.name,
            self.backends,
            ours.rate,
            best.rate,
            ours.p99,
            best.p99,
            if met { "met" } else { "not met" }
        );
        let _ = writeln!(
            goals,
            "comparison: proxy CPU per request ({}, {}): traffic-shift L7 mesh {} µs, {best_name} {} µs",
            mode.name,
            self.backends,
            cpu_cell(ours.proxy_cpu),
            cpu_cell(best.proxy_cpu),
        );
    }
}

/// The medians of a row's repetitions, and its totals.
struct Figures {
    rate: f64,
    p50: f64,
    p99: f64,
    client_cpu: f64,
    /// CPU µs per request of the proxy and of the backends; NaN when not measured.
    proxy_cpu: f64,
    backend_cpu: f64,
    errors: u64,
    /// Answers counted (by v1, v2, or neither) over every repetition.
    answers: u64,
    other: u64,
    share: f64,
}

impl Figures {
    fn of(row: &Row) -> Self {
        let m = |f: fn(&Sample) -> f64| median(&row.samples.iter().map(f).collect::<Vec<_>>());
        let sum = |f: fn(&Sample) -> u64| row.samples.iter().map(f).sum::<u64>();
        let (one, two, answers) = (sum(|s| s.one), sum(|s| s.two), sum(|s| s.requests));
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let share = two as f64 / (one + two) as f64;
        Self {
            rate: m(|s| s.req_per_sec),
            p50: m(|s| s.p50_us),
            p99: m(|s| s.p99_us),
            client_cpu: m(|s| s.client_cpu),
            proxy_cpu: m(|s| s.proxy_cpu_us),
            backend_cpu: m(|s| s.backend_cpu_us),
            errors: sum(|s| s.errors),
            answers,
            other: answers - one - two,
            share,
        }
    }
}

/// A CPU time per request in a table cell: `-` when not measured.
fn cpu_cell(us: f64) -> String {
    if us.is_nan() {
        "-".to_owned()
    } else {
        format!("{us:.1}")
    }
}

/// The same in JSON: `null` when not measured.
fn cpu_json(us: f64) -> String {
    if us.is_nan() {
        "null".to_owned()
    } else {
        format!("{us:.2}")
    }
}

/// haproxy in HTTP mode: a frontend and a backend per split (roundrobin by weight),
/// and the 80/20 split again with `balance random`.
pub fn haproxy_config() -> String {
    let mut cfg = String::new();
    for (service, listen, balance) in [
        (&EVEN, HAPROXY_EVEN, "roundrobin"),
        (&SPLIT, HAPROXY_SPLIT, "roundrobin"),
        (&SPLIT, HAPROXY_RANDOM, "random"),
    ] {
        let name = format!("{}_{balance}", service.name);
        let [w1, w2] = service.weights;
        let _ = write!(
            cfg,
            "frontend {name}\n    mode http\n    bind {listen}\n    default_backend {name}\n\
             backend {name}\n    mode http\n    balance {balance}\n    \
             server v1 127.0.0.1:{V1} weight {w1}\n    server v2 127.0.0.1:{V2} weight {w2}\n"
        );
    }
    cfg
}

/// nginx's `http` block: an upstream per split (weighted round robin), kept-alive
/// connections to the backends (HTTP/1.1 upstream, as the other proxies do), no access
/// log (none of the others logs requests), its temp files in the bench's dir.
pub fn nginx_config(dir: &Path) -> String {
    let dir = dir.display();
    let mut cfg = format!(
        "http {{\n    access_log off;\n    keepalive_requests 1000000;\n    \
         client_body_temp_path {dir}/nginx-body;\n    proxy_temp_path {dir}/nginx-proxy;\n    \
         fastcgi_temp_path {dir}/nginx-fastcgi;\n    uwsgi_temp_path {dir}/nginx-uwsgi;\n    \
         scgi_temp_path {dir}/nginx-scgi;\n"
    );
    for (service, listen) in [(&EVEN, NGINX_EVEN), (&SPLIT, NGINX_SPLIT)] {
        let name = service.name;
        let [w1, w2] = service.weights;
        let _ = write!(
            cfg,
            "    upstream {name} {{\n        server 127.0.0.1:{V1} weight={w1};\n        \
             server 127.0.0.1:{V2} weight={w2};\n        keepalive 64;\n        \
             keepalive_requests 1000000;\n    }}\n    \
             server {{\n        listen {listen};\n        location / {{\n            \
             proxy_pass http://{name};\n            proxy_http_version 1.1;\n            \
             proxy_set_header Connection \"\";\n        }}\n    }}\n"
        );
    }
    cfg.push_str("}\n");
    cfg
}

/// Envoy as Istio programs an outbound HTTP route split by weight: a listener whose
/// HTTP connection manager routes `/` by `weighted_clusters` over
/// `outbound|8000|<subset>|<host>` clusters, with Istio's default retry policy and no
/// route timeout. The listeners and the clusters, to go into `envoy_config`.
pub fn envoy_config() -> (String, String) {
    let (mut listeners, mut clusters) = (String::new(), String::new());
    for (service, listen) in [(&EVEN, ENVOY_EVEN), (&SPLIT, ENVOY_SPLIT)] {
        let Service {
            name,
            host,
            weights: [w1, w2],
        } = service;
        let (address, listen_port) = listen.split_once(':').expect("host:port");
        let _ = write!(
            listeners,
            "  - name: {name}\n    address:\n      socket_address: \
             {{address: {address}, port_value: {listen_port}}}\n    filter_chains:\n    - filters:\n      \
             - name: envoy.filters.network.http_connection_manager\n        typed_config:\n          \
             \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n          \
             stat_prefix: \"outbound_0.0.0.0_{PORT}\"\n          route_config:\n            name: \"{PORT}\"\n            \
             virtual_hosts:\n            - name: \"{host}:{PORT}\"\n              domains: [\"*\"]\n              routes:\n              \
             - match: {{prefix: \"/\"}}\n                route:\n                  timeout: 0s\n                  \
             retry_policy:\n                    retry_on: \"connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes\"\n                    \
             num_retries: 2\n                  weighted_clusters:\n                    clusters:\n                    \
             - {{name: \"outbound|{PORT}|v1|{host}\", weight: {w1}}}\n                    \
             - {{name: \"outbound|{PORT}|v2|{host}\", weight: {w2}}}\n          \
             http_filters:\n          - name: envoy.filters.http.router\n            typed_config:\n              \
             \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n"
        );
        for (subset, endpoint) in [("v1", V1), ("v2", V2)] {
            clusters.push_str(&envoy_cluster(
                &format!("outbound|{PORT}|{subset}|{host}"),
                endpoint,
            ));
        }
    }
    (listeners, clusters)
}

// Every proxy above gets `PROXY_THREADS` workers (haproxy `nbthread`, nginx
// `worker_processes`, Envoy `--concurrency`, set with the TCP scenarios' config), as
// many as the L7 proxy's runtime has (agent/l7.rs).
const _: () = assert!(PROXY_THREADS == 2);

#[cfg(test)]
mod tests {
    use super::{envoy_config, haproxy_config, nginx_config, parse_wrk};

    #[test]
    fn every_proxy_splits_each_http_service_by_its_weights() {
        let (listeners, clusters) = envoy_config();
        for (host, w1, w2) in [
            ("http-echo.local", 50, 50),
            ("http-echo-split.local", 80, 20),
        ] {
            for (subset, w) in [("v1", w1), ("v2", w2)] {
                let name = format!("outbound|8000|{subset}|{host}");
                assert!(
                    listeners.contains(&format!("{{name: \"{name}\", weight: {w}}}")),
                    "{name} weight {w} expected in:\n{listeners}"
                );
                assert!(clusters.contains(&format!("  - name: \"{name}\"\n")));
            }
        }
        let haproxy = haproxy_config();
        assert_eq!(haproxy.matches("mode http").count(), 6, "{haproxy}");
        assert!(haproxy.contains("balance random\n    server v1 127.0.0.1:19301 weight 80\n    server v2 127.0.0.1:19302 weight 20\n"), "{haproxy}");
        let nginx = nginx_config(std::path::Path::new("/tmp/b"));
        assert!(
            nginx.contains(
                "server 127.0.0.1:19301 weight=50;\n        server 127.0.0.1:19302 weight=50;"
            ),
            "{nginx}"
        );
    }

    #[test]
    fn wrk_report_is_read() {
        let out = "Running 1s test @ http://127.0.0.1:19301/\n  2 threads and 16 connections\n\
                   \x20 Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
                   \x20   Latency   812.00us  1.00ms  20.00ms   90.00%\n\
                   \x20 Latency Distribution\n     50%  700.00us\n     75%    1.00ms\n     90%    1.50ms\n     99%    3.21ms\n\
                   \x20 20000 requests in 1.00s, 9.00MB read\n\
                   \x20 Socket errors: connect 0, read 2, write 0, timeout 1\n\
                   Requests/sec:  19990.12\nTransfer/sec:      9.00MB\n";
        let s = parse_wrk(out).unwrap();
        assert!((s.req_per_sec - 19990.12).abs() < 1e-6);
        assert!((s.p50_us - 700.0).abs() < 1e-6);
        assert!((s.p99_us - 3210.0).abs() < 1e-6);
        assert_eq!(s.errors, 3);
    }
}
