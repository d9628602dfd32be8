//! Scenario 6, scale, and the second half of scenario 5: the maps filled with the
//! bench's own few services, then 1 000 and 10 000 more (generated ServiceEntry +
//! VirtualService pairs, put in force with `traffic-shift apply` and removed with
//! `traffic-shift delete`); at each level the connect-time connection rate to
//! tcp-echo, the agent's RSS (`VmRSS`) and CPU use meanwhile, and the time of one
//! `/metrics` scrape. The time of `apply` of the 10 000 and of their `delete` is
//! reported too.

use std::{
    fmt::Write as _,
    fs,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};

use super::{agent::Agent, client::Clients, report::median, rule_change, tcp::Contender};
use crate::cmd;

pub const SCENARIO: &str = "scale";
/// Generated services per file (a rules file may have 4 MiB; 1 000 take ~0.5 MB).
const PER_FILE: usize = 1000;
/// The levels: generated services on top of the bench's own. The last is the one
/// whose `apply` and `delete` are timed.
pub const LEVELS: [usize; 3] = [0, 1000, 10_000];
/// `--quick` stops at 1 000: the `apply` of 10 000 alone takes half a minute.
pub const QUICK_LEVELS: [usize; 2] = [0, 1000];
/// The goal: the connection rate at 10 000 services within 5% of the rate without.
const GOAL: f64 = 0.95;

/// Scenario 6 measures the connect-time rate at this concurrency.
pub const CONCURRENCY: u32 = 16;

/// What scenario 6 needs of the bench's setup.
pub struct Env<'a> {
    pub clients: Clients<'a>,
    /// The connect-time path to tcp-echo, measured at each level.
    pub connect_time: &'a Contender,
    pub agent: &'a Agent,
    /// The generated services ([`generate`]), 1 000 per file.
    pub files: &'a [PathBuf],
    pub quick: bool,
    pub duration: f64,
    pub warmup: f64,
}

impl Env<'_> {
    /// How many ServiceEntries the agent has (`traffic-shift get`), if it answers.
    fn services(&self) -> Option<usize> {
        cmd::probe(
            Command::new(self.clients.bin.join("traffic-shift"))
                .args(["get", "serviceentry", "-A", "-o", "name", "--admin-socket"])
                .arg(&self.agent.admin_socket),
        )
        .map(|out| out.lines().count())
    }

    /// `traffic-shift apply|delete` of `files`: its time. `traffic-shift apply`
    /// waits 60 s for the answer; the agent goes on. Then the time is until `get`
    /// lists `expect` services (it answers once the apply is done: requests are
    /// served one at a time), or `not_done` fails after 5 minutes.
    fn admin(
        &self,
        verb: &str,
        files: &[&Path],
        expect: usize,
        not_done: &str,
    ) -> Result<Duration> {
        let start = Instant::now();
        match rule_change::admin(self.clients.bin, &self.agent.admin_socket, verb, files) {
            Ok(took) => Ok(took),
            Err(e) if format!("{e:#}").contains("did not answer") => {
                eprintln!("bench: {e:#}; waiting for the agent to finish");
                while self.services() != Some(expect) {
                    ensure!(start.elapsed() < Duration::from_mins(5), "{not_done}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(start.elapsed())
            }
            Err(e) => Err(e),
        }
    }
}

/// What scenario 6 measured, for its report.
pub struct Results {
    pub base_services: usize,
    pub extra: &'static [usize],
    pub levels: Vec<Level>,
    pub applies: Applies,
}

impl Results {
    /// The table, JSON rows and goal line of scenario 6 (and 5's apply of 10 000).
    pub fn report(&self, md: &mut String, json_rows: &mut Vec<String>, goals: &mut String) {
        report(
            self.base_services,
            CONCURRENCY,
            self.extra,
            &self.levels,
            &self.applies,
            md,
            json_rows,
            goals,
        );
    }
}

/// Scenario 6 (and 5's apply of 10 000 services): the maps filled in steps, the
/// connect-time rate and the agent's footprint measured at each.
pub fn run(env: &Env<'_>, check_interrupted: &impl Fn() -> Result<()>) -> Result<Results> {
    let status_text = fs::read_to_string(&env.agent.status).unwrap_or_default();
    let metrics_addr = serde_json::from_str::<serde_json::Value>(&status_text)
        .ok()
        .and_then(|v| v.get("metrics")?.as_str().map(str::to_owned));
    let base_services = env.services().unwrap_or(0);
    let extra: &'static [usize] = if env.quick { &QUICK_LEVELS } else { &LEVELS };
    let mut levels: Vec<Level> = extra.iter().map(|_| Level::default()).collect();
    let mut applies = Applies::default();
    let measure = |level: &mut Level| -> Result<()> {
        check_interrupted()?;
        let (cpu0, t0) = (cpu_time(env.agent.pid), Instant::now());
        let r = env
            .clients
            .conn(env.connect_time, CONCURRENCY, env.duration, env.warmup)?;
        let (cpu1, wall) = (cpu_time(env.agent.pid), t0.elapsed());
        level.conn_per_sec.push(r.conn_per_sec);
        level.errors += r.errors;
        if let (Some(a), Some(b)) = (cpu0, cpu1) {
            level
                .agent_cpu
                .push(b.saturating_sub(a).as_secs_f64() / wall.as_secs_f64() * 100.0);
        }
        level.rss_mib.extend(rss_mib(env.agent.pid));
        if let Some(addr) = &metrics_addr {
            let (took, bytes) = scrape(addr)?;
            level.scrape_ms.push(took.as_secs_f64() * 1e3);
            level.scrape_bytes = bytes;
        }
        eprintln!(
            "bench: scale {:>6} conn/s, agent RSS {:.0} MiB, CPU {:.1}%, scrape {:.1} ms",
            r.conn_per_sec,
            level.rss_mib.last().unwrap_or(&f64::NAN),
            level.agent_cpu.last().unwrap_or(&f64::NAN),
            level.scrape_ms.last().unwrap_or(&f64::NAN),
        );
        Ok(())
    };
    // One pass: the apply of 10 000 services takes most of a minute on a busy 2-CPU
    // machine, and the whole run must stay under 15 minutes.
    let scale_reps = 1;
    for rep in 1..=scale_reps {
        for (level, &n) in levels.iter_mut().zip(extra) {
            // The generated files hold 1 000 services each.
            let files: Vec<&Path> = env.files[..n / 1000].iter().map(PathBuf::as_path).collect();
            let last = n == extra[extra.len() - 1];
            if n > 0 {
                let took = env.admin(
                    "apply",
                    &files,
                    base_services + n,
                    &format!("the apply of {n} services is not in force after 300 s"),
                )?;
                if last {
                    applies.apply_s.push(took.as_secs_f64());
                }
                eprintln!(
                    "bench: rep {rep}/{scale_reps} scale: apply of {n} services took {:.2} s",
                    took.as_secs_f64()
                );
            }
            eprintln!(
                "bench: rep {rep}/{scale_reps} scale: {} services",
                base_services + n
            );
            measure(level)?;
            if n > 0 {
                let took = env.admin(
                    "delete",
                    &files,
                    base_services,
                    &format!("the delete of {n} services is not done after 300 s"),
                )?;
                if last {
                    applies.delete_s.push(took.as_secs_f64());
                }
                eprintln!(
                    "bench: rep {rep}/{scale_reps} scale: delete of {n} services took {:.2} s",
                    took.as_secs_f64()
                );
            }
        }
    }
    Ok(Results {
        base_services,
        extra,
        levels,
        applies,
    })
}

/// Writes `n` services in files of `PER_FILE` under `dir`: `svc-NNNNN.bench.local`
/// at 127.101.x.y:9000, each with the two tcp-echo endpoints (health probes go to
/// each distinct endpoint once, so 10 000 services add no probes) and a
/// VirtualService with one destination. Returns the files.
pub fn generate(dir: &Path, n: usize) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    for f in 0..n.div_ceil(PER_FILE) {
        let mut text = String::new();
        for i in f * PER_FILE..n.min((f + 1) * PER_FILE) {
            let host = format!("svc-{i:05}.bench.local");
            let address = format!("127.101.{}.{}", i / 250, i % 250 + 1);
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
        let path = dir.join(format!("services-{f:02}.yaml"));
        fs::write(&path, text)?;
        files.push(path);
    }
    Ok(files)
}

/// `VmRSS` of a process, in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
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
/// headers and the page).
pub fn get_metrics(addr: &str) -> Result<(Duration, Vec<u8>)> {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    let took = start.elapsed();
    anyhow::ensure!(
        body.starts_with(b"HTTP/1.1 200") || body.starts_with(b"HTTP/1.0 200"),
        "GET /metrics at {addr}: {}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    );
    Ok((took, body))
}

/// The measurements of one level, one per repetition.
#[derive(Default)]
pub struct Level {
    pub conn_per_sec: Vec<f64>,
    pub errors: u64,
    pub rss_mib: Vec<f64>,
    pub agent_cpu: Vec<f64>,
    pub scrape_ms: Vec<f64>,
    pub scrape_bytes: usize,
}

/// Times of the `apply` of the 10 000 and of their `delete`, seconds.
#[derive(Default)]
pub struct Applies {
    pub apply_s: Vec<f64>,
    pub delete_s: Vec<f64>,
}

#[allow(clippy::too_many_arguments)]
pub fn report(
    base_services: usize,
    concurrency: u32,
    extra: &[usize],
    levels: &[Level],
    applies: &Applies,
    md: &mut String,
    json_rows: &mut Vec<String>,
    goals: &mut String,
) {
    let _ = write!(
        md,
        "\n| scenario | services in the maps | connect-time conn/s (concurrency {concurrency}) | vs fewest | agent RSS MiB, first | last | agent CPU % while measured | `/metrics` scrape ms | its bytes | errors |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    let base = levels.first().map_or(f64::NAN, |l| median(&l.conn_per_sec));
    let n = extra.last().copied().unwrap_or(0);
    for (extra, level) in extra.iter().zip(levels) {
        let services = base_services + extra;
        let rate = median(&level.conn_per_sec);
        let ratio = rate / base;
        let first = level.rss_mib.first().copied().unwrap_or(f64::NAN);
        let last = level.rss_mib.last().copied().unwrap_or(f64::NAN);
        let cpu = median(&level.agent_cpu);
        let scrape = median(&level.scrape_ms);
        let _ = writeln!(
            md,
            "| {SCENARIO} | {services} | {rate:.0} | {ratio:.3} | {first:.0} | {last:.0} | {cpu:.1} | {scrape:.1} | {} | {} |",
            level.scrape_bytes, level.errors
        );
        json_rows.push(format!(
            "    {{\"scenario\": \"{SCENARIO}\", \"services\": {services}, \"concurrency\": {concurrency}, \
             \"conn_per_sec\": {rate:.0}, \"ratio_to_fewest\": {ratio:.4}, \"rss_mib_reps\": {:?}, \
             \"agent_cpu_percent_reps\": {:?}, \"scrape_ms_reps\": {:?}, \"scrape_bytes\": {}, \"errors\": {}, \
             \"conn_per_sec_reps\": {:?}}}",
            level.rss_mib, level.agent_cpu, level.scrape_ms, level.scrape_bytes, level.errors, level.conn_per_sec
        ));
        if *extra == n {
            let met = if n < 10_000 {
                "not measured (10 000 services only in a full run)"
            } else if ratio >= GOAL {
                "met"
            } else {
                "not met"
            };
            let _ = writeln!(
                goals,
                "goal: connection rate with {services} services >= {GOAL} of with {base_services}: {ratio:.3} {met}"
            );
        }
    }
    let (apply, delete) = (median(&applies.apply_s), median(&applies.delete_s));
    let apply_worst = applies.apply_s.iter().copied().fold(f64::NAN, f64::max);
    let delete_worst = applies.delete_s.iter().copied().fold(f64::NAN, f64::max);
    let _ = write!(
        md,
        "\n| scenario | what | seconds, median | worst | repetitions |\n|---|---|---:|---:|---:|\n\
         | rule change | `traffic-shift apply` of {n} services (ServiceEntry + VirtualService each, {} files) | {apply:.2} | {apply_worst:.2} | {} |\n\
         | rule change | `traffic-shift delete` of the same | {delete:.2} | {delete_worst:.2} | {} |\n",
        n.div_ceil(PER_FILE),
        applies.apply_s.len(),
        applies.delete_s.len()
    );
    json_rows.push(format!(
        "    {{\"scenario\": \"rule change\", \"what\": \"apply {n} services\", \"seconds_reps\": {:?}}},\n    \
         {{\"scenario\": \"rule change\", \"what\": \"delete {n} services\", \"seconds_reps\": {:?}}}",
        applies.apply_s, applies.delete_s
    ));
}

#[cfg(test)]
mod tests {
    use super::{cpu_time, generate, rss_mib};

    #[test]
    fn generated_services_are_valid_rules_with_distinct_addresses() {
        let dir = std::env::temp_dir().join(format!("xtask-scale-{}", std::process::id()));
        let files = generate(&dir, 1001).unwrap();
        assert_eq!(files.len(), 2);
        let text: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        assert_eq!(text.matches("kind: ServiceEntry").count(), 1001);
        assert_eq!(text.matches("kind: VirtualService").count(), 1001);
        assert!(text.contains("addresses: [127.101.4.1]"), "service 1000");
        assert!(text.contains("addresses: [127.101.0.250]"), "service 249");
        std::fs::remove_dir_all(&dir).unwrap();
        let me = std::process::id();
        assert!(rss_mib(me).unwrap() > 0.0);
        assert!(cpu_time(me).is_some());
    }
}
