//! `cargo xtask bench [--quick]`: new-TCP-connection rate and latency through
//! traffic-shift's two paths (connect-time rewrite, sk_lookup gateway) side by
//! side with the backend reached directly and, when installable, haproxy, nginx
//! and Envoy (configured as Istio configures it) as user-space proxies. Everything runs in a network namespace and a
//! child cgroup of our own; timings are reported, never asserted.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use rustix::process::{Pid, Signal, kill_process};
use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};

use crate::{cmd, setup};

const SCENARIO: &str = "new TCP connections";
const CONCURRENCY: [u32; 3] = [1, 16, 64];
const GOAL: f64 = 0.97;
const HAPROXY_ADDR: &str = "127.0.0.1:19100";
const NGINX_ADDR: &str = "127.0.0.1:19101";
const ENVOY_ADDR: &str = "127.0.0.1:19102";
/// Worker threads (processes for nginx) of every user-space proxy.
const PROXY_THREADS: u32 = 2;

/// One thing a client connects to.
struct Contender {
    name: &'static str,
    target: &'static str,
    /// The client must be in the agent's cgroup (connect-time rewrite).
    in_cgroup: bool,
}

/// The median over repetitions of one (concurrency, contender).
#[derive(Default)]
struct Row {
    conn_per_sec: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
    errors: u64,
}

pub fn bench(root: &Path, quick: bool) -> Result<()> {
    ensure!(
        setup::is_root(),
        "xtask bench must run as root: it attaches eBPF programs and creates a network namespace \
         and a cgroup. Run e.g. `sudo -E env PATH=\"$PATH\" cargo xtask bench --quick`."
    );
    let cgroup_root = setup::setup(setup::Need::Runtime)?.context("no cgroup v2 root")?;
    crate::build(root, true)?;
    let bin = crate::profile_dir(root, true);
    let mut proxies = install_proxies();
    match setup::envoy(bin.parent().expect("target/release has a parent")) {
        Ok(envoy) => {
            let version = setup::envoy_version(&envoy).unwrap_or_else(|| "?".into());
            println!("bench: envoy {version}: {}", envoy.display());
            proxies.envoy = Some(envoy);
        }
        Err(why) => {
            println!("bench: contender left out: envoy: {why}");
            proxies.skipped.push(("envoy", why));
        }
    }

    let interrupted = Arc::new(AtomicBool::new(false));
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).context("cannot handle signals")?;
    let signal_handle = signals.handle();
    std::thread::spawn({
        let interrupted = Arc::clone(&interrupted);
        move || {
            for _ in signals.forever() {
                interrupted.store(true, Ordering::SeqCst);
            }
        }
    });
    let result = run(root, &bin, &cgroup_root, quick, proxies, &interrupted);
    signal_handle.close();
    result
}

/// The user-space proxies found, and those left out with the reason.
#[derive(Default)]
struct Proxies {
    haproxy: Option<PathBuf>,
    nginx: Option<PathBuf>,
    envoy: Option<PathBuf>,
    skipped: Vec<(&'static str, String)>,
}

/// Installs haproxy and nginx (stream module) if missing; `None` with the reason printed
/// when one is not available: that contender is skipped, the bench goes on.
fn install_proxies() -> Proxies {
    let find = || (cmd::find_program("haproxy"), cmd::find_program("nginx"));
    let (h, n) = find();
    if h.is_some() && n.is_some() {
        return Proxies {
            haproxy: h,
            nginx: n,
            ..Proxies::default()
        };
    }
    println!("bench: installing haproxy and nginx-full (the user-space proxies compared against)");
    if let Err(e) = cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "haproxy", "nginx-full"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    ) {
        eprintln!("bench: {e:#}");
    }
    let (h, n) = find();
    let mut skipped = Vec::new();
    for (name, found) in [("haproxy", h.is_some()), ("nginx", n.is_some())] {
        if !found {
            let why = "not installed and `apt-get install` failed".to_owned();
            println!("bench: contender left out: {name}: {why}");
            skipped.push((name, why));
        }
    }
    Proxies {
        haproxy: h,
        nginx: n,
        envoy: None,
        skipped,
    }
}

#[allow(clippy::too_many_lines)]
fn run(
    root: &Path,
    bin: &Path,
    cgroup_root: &Path,
    quick: bool,
    proxies: Proxies,
    interrupted: &AtomicBool,
) -> Result<()> {
    let name = format!("ts-bench-{}", std::process::id());
    let (reps, duration, warmup) = if quick { (1, 1.0, 0.2) } else { (3, 3.0, 0.5) };

    // Guards, dropped in reverse order: processes first, then bpffs, cgroup, netns, temp dir.
    let tmp = TempDir::new(std::env::temp_dir().join(&name))?;
    let netns = Netns::new(&name)?;
    let cgroup = CgroupDir::new(cgroup_root.join(&name))?;
    let bpffs = BpffsDir(PathBuf::from(format!("/sys/fs/bpf/{name}")));
    let mut procs = Processes(Vec::new());

    // The rules, with the 80/20 VirtualService in force.
    let rules = tmp.0.join("rules");
    fs::create_dir(&rules)?;
    let mut rule_files = 0;
    for entry in fs::read_dir(root.join("rules/tcp-echo"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            fs::copy(&path, rules.join(path.file_name().expect("a file")))?;
            rule_files += 1;
        }
    }
    fs::copy(
        root.join("rules/tcp-echo/examples/vs-20-v2.yaml"),
        rules.join("virtual-service.yaml"),
    )?;

    for (prefix, port) in [("one", 19001), ("two", 19002)] {
        let mut c = netns.exec(bin.join("tcp-echo"));
        c.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--listen", &format!("[::1]:{port}")])
            .args(["--prefix", prefix])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = procs.spawn(&format!("tcp-echo {prefix}"), &mut c)?;
        // It logs one line once every listener is bound.
        let mut line = String::new();
        if let Some(stderr) = child.stderr.take() {
            BufReader::new(stderr).read_line(&mut line)?;
        }
        ensure!(
            line.contains("listening"),
            "tcp-echo {prefix} did not start: {line}"
        );
    }

    let events = tmp.0.join("events.jsonl");
    let agent_log = tmp.0.join("agent.log");
    let mut agent = Command::new(bin.join("traffic-shift"));
    agent
        .arg("run")
        .arg("--rules")
        .arg(&rules)
        .arg("--cgroup")
        .arg(&cgroup.0)
        .arg("--netns")
        .arg(format!("/var/run/netns/{name}"))
        .arg("--bpffs")
        .arg(&bpffs.0)
        .arg("--status-file")
        .arg(tmp.0.join("status.json"))
        .arg("--events")
        .arg(&events)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&agent_log)?);
    procs.spawn("agent", &mut agent)?;
    wait_applied(&events, rule_files, &agent_log, &mut procs)?;

    let mut contenders = vec![
        Contender {
            name: "direct",
            target: "127.0.0.1:19001",
            in_cgroup: false,
        },
        Contender {
            name: "connect-time",
            target: "127.100.0.1:9000",
            in_cgroup: true,
        },
        Contender {
            name: "gateway",
            target: "127.0.0.1:31400",
            in_cgroup: false,
        },
    ];
    if let Some(haproxy) = proxies.haproxy {
        let cfg = tmp.0.join("haproxy.cfg");
        fs::write(&cfg, haproxy_config())?;
        let mut c = netns.exec(haproxy);
        c.arg("-db").arg("-f").arg(&cfg).stdout(Stdio::null());
        procs.spawn("haproxy", &mut c)?;
        contenders.push(Contender {
            name: "haproxy",
            target: HAPROXY_ADDR,
            in_cgroup: false,
        });
    }
    if let Some(nginx) = proxies.nginx {
        let cfg = tmp.0.join("nginx.conf");
        fs::write(&cfg, nginx_config(&tmp.0))?;
        let mut c = netns.exec(nginx);
        c.arg("-p")
            .arg(&tmp.0)
            .arg("-e")
            .arg(tmp.0.join("nginx-error.log"))
            .arg("-c")
            .arg(&cfg)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null());
        procs.spawn("nginx", &mut c)?;
        contenders.push(Contender {
            name: "nginx",
            target: NGINX_ADDR,
            in_cgroup: false,
        });
    }
    let envoy_log = tmp.0.join("envoy.log");
    if let Some(envoy) = proxies.envoy {
        let cfg = tmp.0.join("envoy.yaml");
        fs::write(&cfg, envoy_config())?;
        let mut c = netns.exec(envoy);
        c.arg("--config-path")
            .arg(&cfg)
            .args(["--concurrency", &PROXY_THREADS.to_string()])
            .args(["--disable-hot-restart", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&envoy_log)?);
        procs.spawn("envoy", &mut c)?;
        contenders.push(Contender {
            name: "envoy",
            target: ENVOY_ADDR,
            in_cgroup: false,
        });
    }

    let client = |contender: &Contender, concurrency: u32, secs: f64, warm: f64| {
        client_run(
            bin,
            &netns.name,
            &cgroup.0,
            contender,
            concurrency,
            secs,
            warm,
        )
    };
    // Smoke check (this also waits for the proxies to listen): a contender that does not
    // answer is dropped with the reason, the bench goes on.
    let mut ready = Vec::new();
    let mut skipped = proxies.skipped;
    for contender in contenders {
        // Envoy takes a few seconds to start on a busy 2-CPU machine.
        let deadline = Instant::now() + Duration::from_secs(10);
        let reason = loop {
            match client(&contender, 1, 0.1, 0.0) {
                Ok(r) if r.connections > 0 && r.errors == 0 => break None,
                Ok(r) if Instant::now() >= deadline => {
                    break Some(format!(
                        "{} connections, {} errors",
                        r.connections, r.errors
                    ));
                }
                Err(e) if Instant::now() >= deadline => break Some(format!("{e:#}")),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        match reason {
            None => ready.push(contender),
            Some(r) if contender.name == "direct" => {
                bail!("the direct backend does not answer: {r}")
            }
            Some(r) => {
                let mut why = format!("{} does not answer ({r})", contender.target);
                if let Some(status) = procs.exited(contender.name) {
                    let _ = write!(why, "; it exited ({status})");
                }
                if contender.name == "envoy" {
                    let log = fs::read_to_string(&envoy_log).unwrap_or_default();
                    if let Some(last) = log.lines().rev().find(|l| !l.trim().is_empty()) {
                        let _ = write!(why, "; its log ends: {}", last.trim());
                    }
                }
                println!("bench: contender left out: {}: {why}", contender.name);
                skipped.push((contender.name, why));
            }
        }
    }
    let contenders = ready;

    let header = machine_header(&netns.name, quick, reps, duration);
    eprintln!("bench: {header}");
    let mut rows: Vec<Vec<Row>> = CONCURRENCY
        .iter()
        .map(|_| contenders.iter().map(|_| Row::default()).collect())
        .collect();
    for rep in 1..=reps {
        for (ci, &concurrency) in CONCURRENCY.iter().enumerate() {
            for (ki, contender) in contenders.iter().enumerate() {
                ensure!(
                    !interrupted.load(Ordering::SeqCst),
                    "interrupted; cleaned up"
                );
                let r = client(contender, concurrency, duration, warmup)?;
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
    }
    // Everything measured: stop the proxies, the agent and the backends now.
    drop(procs);

    let (table, json, goals) = report(&header, &contenders, &rows, &skipped);
    println!("\n{table}\n{goals}");
    let out = root.join("bench/results");
    fs::create_dir_all(&out)?;
    fs::write(out.join("latest.md"), format!("{table}\n{goals}"))?;
    fs::write(out.join("latest.json"), json)?;
    println!(
        "bench: wrote {} and latest.json",
        out.join("latest.md").display()
    );
    Ok(())
}

/// Waits (up to 10 s) until the agent reported one `applied` event per rules file.
fn wait_applied(events: &Path, files: usize, log: &Path, procs: &mut Processes) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read_to_string(events).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| l.ends_with('}')).collect();
        if lines.len() >= files {
            ensure!(
                lines.iter().all(|l| l.contains("\"applied\"")),
                "the agent did not apply every rules file: {}",
                lines.join("\n")
            );
            return Ok(());
        }
        let exited = procs.0.last_mut().map(|(_, c)| c.try_wait()).transpose()?;
        if let Some(Some(status)) = exited {
            bail!(
                "the agent exited ({status}) before applying the rules; its log:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "the agent applied {} of {files} rules files within 10 s; its log:\n{}",
            lines.len(),
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One ts-bench result.
struct Sample {
    connections: u64,
    conn_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

/// Runs ts-bench in the namespace (and in the cgroup when the contender needs it).
/// `ip netns exec` remounts /sys, so the cgroup is joined before: the shell writes
/// its own pid to cgroup.procs, then execs `ip netns exec`; membership survives exec.
fn client_run(
    bin: &Path,
    netns: &str,
    cgroup: &Path,
    contender: &Contender,
    concurrency: u32,
    secs: f64,
    warmup: f64,
) -> Result<Sample> {
    let mut c = if contender.in_cgroup {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(r#"echo $$ > "$0" && exec ip netns exec "$@""#)
            .arg(cgroup.join("cgroup.procs"));
        c
    } else {
        Command::new("ip")
    };
    if !contender.in_cgroup {
        c.args(["netns", "exec"]);
    }
    c.arg(netns)
        .arg(bin.join("ts-bench"))
        .args(["--target", contender.target])
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--duration", &secs.to_string()])
        .args(["--warmup", &warmup.to_string()]);
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
    let line = String::from_utf8_lossy(&out.stdout);
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

/// A number field of a flat JSON object (ts-bench's one line); xtask has no JSON parser.
fn json_number(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

/// The markdown table (with the header), the JSON document and the goal lines.
fn report(
    header: &str,
    contenders: &[Contender],
    rows: &[Vec<Row>],
    skipped: &[(&str, String)],
) -> (String, String, String) {
    let mut md = format!(
        "{header}\n\n| scenario | concurrency | contender | conn/s | vs direct | p50 µs | p99 µs | errors |\n\
         |---|---:|---|---:|---:|---:|---:|---:|\n"
    );
    let mut json_rows = Vec::new();
    let mut goals = String::new();
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
            if contender.name == "connect-time" || contender.name == "gateway" {
                let met = if ratio >= GOAL { "met" } else { "not met" };
                let _ = writeln!(
                    goals,
                    "goal: connection rate >= {GOAL} of direct: {:<12} concurrency {concurrency:<2}: {ratio:.3} {met}",
                    contender.name
                );
            }
        }
    }
    // A contender that could not run still gets its row, with the reason and no number.
    for (name, why) in skipped {
        let _ = writeln!(
            md,
            "| {SCENARIO} | all | {name}: unavailable ({}) | - | - | - | - | - |",
            why.replace('|', "\\|")
        );
        json_rows.push(format!(
            "    {{\"scenario\": \"{SCENARIO}\", \"contender\": \"{name}\", \"unavailable\": \"{}\"}}",
            json_escape(why)
        ));
    }
    let json = format!(
        "{{\n  \"header\": \"{}\",\n  \"goal_ratio_to_direct\": {GOAL},\n  \"results\": [\n{}\n  ]\n}}\n",
        json_escape(header),
        json_rows.join(",\n")
    );
    (md, json, goals)
}

/// `s` as the inside of a JSON string.
fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// One line naming the machine, the date and the run's settings.
fn machine_header(netns: &str, quick: bool, reps: u32, duration: f64) -> String {
    let probe = |c: &mut Command| cmd::probe(c).map_or_else(|| "?".into(), |s| s.trim().to_owned());
    let kernel = probe(Command::new("uname").arg("-r"));
    let date = probe(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]));
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let ports = probe(Command::new("ip").args([
        "netns",
        "exec",
        netns,
        "cat",
        "/proc/sys/net/ipv4/ip_local_port_range",
    ]))
    .replace('\t', "-");
    format!(
        "traffic-shift bench, {date}: kernel {kernel}, {cpus} CPUs ({model}); {} run: {reps} repetition(s) of \
         {duration} s per cell, median shown; client ephemeral ports {ports} (SO_LINGER 0, no TIME_WAIT)",
        if quick { "--quick" } else { "full" }
    )
}

fn haproxy_config() -> String {
    format!(
        "global\n    nbthread {PROXY_THREADS}\n    maxconn 4096\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend tcp_echo\n    bind {HAPROXY_ADDR}\n    default_backend tcp_echo\n\
         backend tcp_echo\n    balance roundrobin\n    \
         server one 127.0.0.1:19001 weight 80\n    server two 127.0.0.1:19002 weight 20\n"
    )
}

fn nginx_config(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
         worker_processes {PROXY_THREADS};\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         stream {{\n    upstream tcp_echo {{\n        server 127.0.0.1:19001 weight=80;\n        \
         server 127.0.0.1:19002 weight=20;\n    }}\n    \
         server {{\n        listen {NGINX_ADDR};\n        proxy_pass tcp_echo;\n    }}\n}}\n"
    )
}

/// Envoy as Istio programs it for a TCP route with an 80/20 split: a listener whose
/// `tcp_proxy` filter picks one of two clusters per connection by `weighted_clusters`,
/// clusters named `outbound|<port>|<subset>|<host>`, each with its one static endpoint,
/// and circuit-breaker limits raised to Istio's (Envoy's default is 1024 connections).
fn envoy_config() -> String {
    let cluster = |subset: &str, port: u16| {
        format!(
            "  - name: \"outbound|9000|{subset}|tcp-echo.local\"\n    type: STATIC\n    connect_timeout: 10s\n    \
             circuit_breakers:\n      thresholds:\n      - max_connections: 4294967295\n        \
             max_pending_requests: 4294967295\n        max_requests: 4294967295\n        max_retries: 4294967295\n    \
             load_assignment:\n      cluster_name: \"outbound|9000|{subset}|tcp-echo.local\"\n      endpoints:\n      \
             - lb_endpoints:\n        - endpoint:\n            address:\n              socket_address: \
             {{address: 127.0.0.1, port_value: {port}}}\n"
        )
    };
    let (host, port) = ENVOY_ADDR.split_once(':').expect("host:port");
    format!(
        "static_resources:\n  listeners:\n  - name: tcp_echo\n    address:\n      socket_address: \
         {{address: {host}, port_value: {port}}}\n    filter_chains:\n    - filters:\n      \
         - name: envoy.filters.network.tcp_proxy\n        typed_config:\n          \
         \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          \
         stat_prefix: \"outbound|9000||tcp-echo.local\"\n          weighted_clusters:\n            clusters:\n            \
         - {{name: \"outbound|9000|v1|tcp-echo.local\", weight: 80}}\n            \
         - {{name: \"outbound|9000|v2|tcp-echo.local\", weight: 20}}\n  clusters:\n{}{}",
        cluster("v1", 19001),
        cluster("v2", 19002)
    )
}

/// The bench's temp dir (rules, agent log and events, proxy configs). Removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(path: PathBuf) -> Result<Self> {
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A network namespace with loopback up. Deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(name: &str) -> Result<Self> {
        cmd::run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Self {
            name: name.to_owned(),
        };
        cmd::run(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// `ip netns exec <ns> <program>`: it execs the program, so the child's pid is its pid.
    fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = cmd::run(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

/// A child cgroup. Removed on drop (it is empty once the clients exited).
struct CgroupDir(PathBuf);

impl CgroupDir {
    fn new(path: PathBuf) -> Result<Self> {
        fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for CgroupDir {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = fs::remove_dir(&self.0) {
            if Instant::now() >= deadline {
                eprintln!("bench: cannot remove cgroup {}: {e}", self.0.display());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The agent's bpffs pin directory: removed on drop if the agent left it.
struct BpffsDir(PathBuf);

impl Drop for BpffsDir {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Long-running children (backends, agent, proxies): SIGTERM in reverse start order,
/// up to 5 s each, then SIGKILL.
struct Processes(Vec<(String, Child)>);

impl Processes {
    fn spawn(&mut self, what: &str, c: &mut Command) -> Result<&mut Child> {
        eprintln!("+ {} &", cmd::show(c));
        let child = c
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {what}: `{}`", cmd::show(c)))?;
        self.0.push((what.to_owned(), child));
        Ok(&mut self.0.last_mut().expect("just pushed").1)
    }
}

impl Processes {
    /// The exit status of the process started as `what`, if it has exited.
    fn exited(&mut self, what: &str) -> Option<std::process::ExitStatus> {
        let (_, child) = self.0.iter_mut().find(|(w, _)| w == what)?;
        child.try_wait().ok().flatten()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        while let Some((what, mut child)) = self.0.pop() {
            if let Some(pid) = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)) {
                let _ = kill_process(pid, Signal::Term);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("bench: {what} ignored SIGTERM for 5 s; killing it");
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}
