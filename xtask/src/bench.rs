//! `cargo xtask bench [--quick]`: new-TCP-connection rate and latency (scenario 1)
//! and the throughput of one long TCP stream (scenario 2) through traffic-shift's
//! two paths (connect-time rewrite, sk_lookup gateway) side by side with the
//! backend reached directly and, when installable, haproxy, nginx and Envoy
//! (configured as Istio configures it) as user-space proxies. The other scenarios are
//! in the submodules: HTTP requests through the L7 proxy (3, `http.rs`), split accuracy
//! (4, `split.rs`), rule change (5), scale (6) and the XDP gateway (7). Everything runs in
//! a network namespace and a child cgroup of our own; timings are reported, never asserted.

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

mod http;
mod rule_change;
mod scale;
mod split;
mod xdp;

const SCENARIO: &str = "new TCP connections";
const STREAM_SCENARIO: &str = "one long TCP stream";
const CONCURRENCY: [u32; 3] = [1, 16, 64];
/// Scenario 6 measures the connect-time rate at this concurrency.
const SCALE_CONCURRENCY: u32 = 16;
/// For both scenarios: once connected, neither traffic-shift path touches the packets,
/// so a stream should go as fast as to the backend directly.
const GOAL: f64 = 0.97;
const HAPROXY_ADDR: &str = "127.0.0.1:19100";
const NGINX_ADDR: &str = "127.0.0.1:19101";
const ENVOY_ADDR: &str = "127.0.0.1:19102";
/// haproxy's `balance random` split of tcp-echo (scenario 4).
const HAPROXY_RANDOM_ADDR: &str = "127.0.0.1:19103";
const HAPROXY_STREAM_ADDR: &str = "127.0.0.1:19110";
const NGINX_STREAM_ADDR: &str = "127.0.0.1:19111";
const ENVOY_STREAM_ADDR: &str = "127.0.0.1:19112";

/// A service the rules and every proxy split 80/20 between a v1 and a v2 port of 127.0.0.1.
struct Split {
    /// Proxy config names (haproxy frontend/backend, nginx upstream, Envoy listener).
    name: &'static str,
    /// The ServiceEntry host and port (Envoy's cluster names, as Istio makes them).
    host: &'static str,
    port: u16,
    v1: u16,
    v2: u16,
}

/// Scenario 1's backends: the two tcp-echo servers (rules/tcp-echo).
const ECHO: Split = Split {
    name: "tcp_echo",
    host: "tcp-echo.local",
    port: 9000,
    v1: 19001,
    v2: 19002,
};
/// Scenario 2's backends: two `ts-bench --sink` receivers (bench/rules/bulk-sink.yaml).
const SINK: Split = Split {
    name: "bulk_sink",
    host: "bulk-sink.local",
    port: 9100,
    v1: 19201,
    v2: 19202,
};
/// Worker threads (processes for nginx) of every user-space proxy.
const PROXY_THREADS: u32 = 2;

/// One thing a client connects to.
struct Contender {
    name: &'static str,
    /// Scenario 1's address (tcp-echo behind it).
    target: &'static str,
    /// Scenario 2's address (the sinks behind it).
    stream_target: &'static str,
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

/// Scenario 2's median over repetitions of one contender.
#[derive(Default)]
struct StreamRow {
    gbit_per_sec: Vec<f64>,
    errors: u64,
}

/// A contender left out of a scenario, with the reason.
struct Skipped {
    scenario: &'static str,
    name: &'static str,
    why: String,
}

pub fn bench(root: &Path, quick: bool, xdp: bool) -> Result<()> {
    ensure!(
        setup::is_root(),
        "xtask bench must run as root: it attaches eBPF programs and creates a network namespace \
         and a cgroup. Run e.g. `sudo -E env PATH=\"$PATH\" cargo xtask bench --quick`."
    );
    let cgroup_root = setup::setup(setup::Need::Runtime)?.context("no cgroup v2 root")?;
    crate::build(root, true)?;
    let bin = crate::profile_dir(root, true);
    if xdp {
        return xdp::run(root, &bin, &cgroup_root, quick);
    }
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
/// when one is not available: that contender is skipped, the bench goes on. Also wrk,
/// scenario 3's check of the load client (without it, that row is left out).
fn install_proxies() -> Proxies {
    if cmd::find_program("wrk").is_none() {
        println!("bench: installing wrk (to check the HTTP load client against)");
        if let Err(e) = cmd::run(
            Command::new("apt-get")
                .args(["install", "-y", "wrk"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        ) {
            eprintln!("bench: {e:#}");
        }
    }
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
    // Scenario 2's service, bulk-sink.local, next to tcp-echo.local.
    fs::copy(
        root.join("bench/rules/bulk-sink.yaml"),
        rules.join("bulk-sink.yaml"),
    )?;
    // Scenario 4's tcp-echo split by RANDOM.
    fs::copy(
        root.join("bench/rules/tcp-echo-random.yaml"),
        rules.join("tcp-echo-random.yaml"),
    )?;
    // Scenarios 3 and 4's HTTP services, served by the agent's L7 proxy.
    fs::copy(
        root.join("bench/rules/http-echo.yaml"),
        rules.join("http-echo.yaml"),
    )?;
    let mut rule_files = 3;
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
            .args(["--prefix", prefix]);
        procs.spawn_listening(&format!("tcp-echo {prefix}"), &mut c)?;
    }
    for port in [SINK.v1, SINK.v2] {
        let mut c = netns.exec(bin.join("ts-bench"));
        c.args(["--sink", &format!("127.0.0.1:{port}")]);
        procs.spawn_listening(&format!("ts-bench --sink 127.0.0.1:{port}"), &mut c)?;
    }
    for (version, port) in [("v1", http::V1), ("v2", http::V2)] {
        let mut c = netns.exec(bin.join("http-echo"));
        c.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--version", version, "--name", "http-echo"])
            .env("RUST_LOG", "warn,http_echo=info");
        procs.spawn_listening(&format!("http-echo {version}"), &mut c)?;
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
        // Its own of everything a node-wide agent also uses, so the bench
        // runs beside one (`cargo xtask run`) without touching it.
        .args(["--metrics-addr", "127.0.0.1:0"])
        .arg("--admin-socket")
        .arg(tmp.0.join("admin.sock"))
        .arg("--state-dir")
        .arg(tmp.0.join("state"))
        .arg("--unload-on-exit")
        // Room for scenario 6's 10 000 services (each a route, a service
        // address and two counter slots) beside the bench's own.
        .args(["--max-services", "16384", "--max-routes", "16384"])
        .args(["--max-counters", "32768"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&agent_log)?);
    procs.spawn("agent", &mut agent)?;
    wait_applied(&events, rule_files, &agent_log, &mut procs)?;
    let agent_pid = procs.pid("agent").context("the agent's pid")?;
    let admin_socket = tmp.0.join("admin.sock");
    // Scenario 5's service, put in force with `apply` (all to v1).
    let change_rules = root.join("bench/rules/rule-change");
    rule_change::admin(
        bin,
        &admin_socket,
        "apply",
        &[
            &change_rules.join("service.yaml"),
            &change_rules.join("vs-v1.yaml"),
        ],
    )?;
    let scale_files = scale::generate(&tmp.0.join("scale"), scale::LEVELS[2])?;

    let mut contenders = vec![
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
            stream_target: HAPROXY_STREAM_ADDR,
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
            stream_target: NGINX_STREAM_ADDR,
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
            stream_target: ENVOY_STREAM_ADDR,
            in_cgroup: false,
        });
    }

    let proxy_names: Vec<&str> = contenders
        .iter()
        .map(|c| c.name)
        .filter(|n| ["haproxy", "nginx", "envoy"].contains(n))
        .collect();
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
    let stream = |contender: &Contender, secs: f64, warm: f64| {
        stream_run(bin, &netns.name, &cgroup.0, contender, secs, warm)
    };
    // Smoke check per scenario (this also waits for the proxies to listen): a contender
    // that does not answer is left out of that scenario with the reason, the bench goes on.
    let mut skipped: Vec<Skipped> = proxies
        .skipped
        .into_iter()
        .flat_map(|(name, why)| {
            [
                SCENARIO,
                STREAM_SCENARIO,
                http::SCENARIO,
                split::REQUESTS_SCENARIO,
            ]
            .map(|scenario| Skipped {
                scenario,
                name,
                why: why.clone(),
            })
        })
        .collect();
    let (mut ready, mut stream_ready) = (Vec::new(), Vec::new());
    for contender in &contenders {
        let conn_check = || {
            client(contender, 1, 0.1, 0.0).map(|r| {
                (r.connections == 0 || r.errors > 0)
                    .then(|| format!("{} connections, {} errors", r.connections, r.errors))
            })
        };
        let stream_check = || {
            stream(contender, 0.1, 0.0).map(|r| {
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
                let log = fs::read_to_string(&envoy_log).unwrap_or_default();
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

    let header = machine_header(&netns.name, quick, reps, duration);
    eprintln!("bench: {header}");
    let mut rows: Vec<Vec<Row>> = CONCURRENCY
        .iter()
        .map(|_| ready.iter().map(|_| Row::default()).collect())
        .collect();
    let mut stream_rows: Vec<StreamRow> =
        stream_ready.iter().map(|_| StreamRow::default()).collect();
    let check_interrupted = || {
        ensure!(
            !interrupted.load(Ordering::SeqCst),
            "interrupted; cleaned up"
        );
        Ok(())
    };
    // Interleaved: every cell once per repetition, so a slow phase of the machine
    // spreads over all contenders instead of hitting one.
    for rep in 1..=reps {
        for (ci, &concurrency) in CONCURRENCY.iter().enumerate() {
            for (ki, contender) in ready.iter().enumerate() {
                check_interrupted()?;
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
        for (ki, contender) in stream_ready.iter().enumerate() {
            check_interrupted()?;
            let r = stream(contender, duration, warmup)?;
            eprintln!(
                "bench: rep {rep}/{reps} stream {:<12} {:>7.2} Gbit/s errors {}",
                contender.name, r.gbit_per_sec, r.errors
            );
            stream_rows[ki].gbit_per_sec.push(r.gbit_per_sec);
            stream_rows[ki].errors += r.errors;
        }
    }

    // Scenario 4: split accuracy, through every contender that splits 80/20.
    let mut count_run = |s: &split::Splitter, n: u64, c: u32| {
        let line = ts_bench(
            bin,
            &netns.name,
            &cgroup.0,
            s.in_cgroup,
            &[
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
    let proxies_out: Vec<Skipped> = skipped
        .iter()
        .filter(|s| s.scenario == SCENARIO)
        .map(|s| Skipped {
            scenario: split::SCENARIO,
            name: s.name,
            why: s.why.clone(),
        })
        .collect();
    skipped.extend(proxies_out);
    let splitters = split::ready(
        split::splitters(&ready),
        split::SCENARIO,
        &mut count_run,
        &mut skipped,
    );
    let split_reps = if quick { 1 } else { 5 };
    let split_cells = split::measure(
        &splitters,
        split_reps,
        "connections",
        &mut count_run,
        &check_interrupted,
    )?;

    // Scenario 3 and the HTTP half of 4.
    let http_results = http::run(
        &http::Env {
            bin,
            netns: &netns.name,
            cgroup: &cgroup.0,
            quick,
            envoy_log: &envoy_log,
        },
        &proxy_names,
        &mut skipped,
        &check_interrupted,
    )?;

    // Scenario 5: a rule change, seen by a client connecting back to back.
    let mut ts_client = rule_change::TsClient::start(client_command(
        bin,
        "ts-client",
        &netns.name,
        &cgroup.0,
        true,
    ))?;
    let switches = if quick { 2 } else { 10 };
    let mut changes = Vec::new();
    for k in 0..switches {
        check_interrupted()?;
        let to = if k % 2 == 0 { "v2" } else { "v1" };
        let ch = rule_change::switch(&mut ts_client, bin, &admin_socket, &change_rules, to)?;
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

    // Scenario 6 (and 5's apply of 10 000 services): the maps filled in steps.
    let connect_time = ready
        .iter()
        .find(|c| c.name == "connect-time")
        .context("the connect-time path did not answer")?;
    let status_text = fs::read_to_string(tmp.0.join("status.json")).unwrap_or_default();
    let metrics_addr = serde_json::from_str::<serde_json::Value>(&status_text)
        .ok()
        .and_then(|v| v.get("metrics")?.as_str().map(str::to_owned));
    let base_services = cmd::probe(
        Command::new(bin.join("traffic-shift"))
            .args(["get", "serviceentry", "-A", "-o", "name", "--admin-socket"])
            .arg(&admin_socket),
    )
    .map_or(0, |out| out.lines().count());
    let extra: &[usize] = if quick {
        &scale::QUICK_LEVELS
    } else {
        &scale::LEVELS
    };
    let mut levels: Vec<scale::Level> = extra.iter().map(|_| scale::Level::default()).collect();
    let mut applies = scale::Applies::default();
    let measure = |level: &mut scale::Level| -> Result<()> {
        check_interrupted()?;
        let (cpu0, t0) = (scale::cpu_time(agent_pid), Instant::now());
        let r = client(connect_time, SCALE_CONCURRENCY, duration, warmup)?;
        let (cpu1, wall) = (scale::cpu_time(agent_pid), t0.elapsed());
        level.conn_per_sec.push(r.conn_per_sec);
        level.errors += r.errors;
        if let (Some(a), Some(b)) = (cpu0, cpu1) {
            level
                .agent_cpu
                .push(b.saturating_sub(a).as_secs_f64() / wall.as_secs_f64() * 100.0);
        }
        level.rss_mib.extend(scale::rss_mib(agent_pid));
        if let Some(addr) = &metrics_addr {
            let (took, bytes) = scale::scrape(addr)?;
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
    let services_in_force = || {
        cmd::probe(
            Command::new(bin.join("traffic-shift"))
                .args(["get", "serviceentry", "-A", "-o", "name", "--admin-socket"])
                .arg(&admin_socket),
        )
        .map(|out| out.lines().count())
    };
    for rep in 1..=scale_reps {
        for (level, &n) in levels.iter_mut().zip(extra) {
            // The generated files hold 1 000 services each.
            let files: Vec<&Path> = scale_files[..n / 1000]
                .iter()
                .map(PathBuf::as_path)
                .collect();
            let last = n == extra[extra.len() - 1];
            if n > 0 {
                let start = Instant::now();
                let took = match rule_change::admin(bin, &admin_socket, "apply", &files) {
                    Ok(took) => took,
                    // `traffic-shift apply` waits 60 s for the answer; the agent goes on.
                    // Then the time is until `get` lists them all (it answers once
                    // the apply is done: requests are served one at a time).
                    Err(e) if format!("{e:#}").contains("did not answer") => {
                        eprintln!("bench: {e:#}; waiting for the agent to finish");
                        while services_in_force() != Some(base_services + n) {
                            ensure!(
                                start.elapsed() < Duration::from_mins(5),
                                "the apply of {n} services is not in force after 300 s"
                            );
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        start.elapsed()
                    }
                    Err(e) => return Err(e),
                };
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
                let start = Instant::now();
                let took = match rule_change::admin(bin, &admin_socket, "delete", &files) {
                    Ok(took) => took,
                    Err(e) if format!("{e:#}").contains("did not answer") => {
                        eprintln!("bench: {e:#}; waiting for the agent to finish");
                        while services_in_force() != Some(base_services) {
                            ensure!(
                                start.elapsed() < Duration::from_mins(5),
                                "the delete of {n} services is not done after 300 s"
                            );
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        start.elapsed()
                    }
                    Err(e) => return Err(e),
                };
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

    // Everything measured: stop the proxies, the agent and the backends now.
    drop(procs);

    let (table, json, goals) = report(
        &header,
        (&ready, &rows),
        (&stream_ready, &stream_rows),
        &skipped,
        |md, json_rows, goals| {
            split::report(
                split::SCENARIO,
                &splitters,
                &split_cells,
                &skipped,
                md,
                json_rows,
                goals,
            );
            http_results.report(&skipped, md, json_rows, goals);
            rule_change::report(&changes, md, json_rows, goals);
            scale::report(
                base_services,
                SCALE_CONCURRENCY,
                extra,
                &levels,
                &applies,
                md,
                json_rows,
                goals,
            );
        },
    );
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

/// Retries `check` every 100 ms for up to 10 s (Envoy takes a few seconds to start on a
/// busy 2-CPU machine) until it gives `Ok(None)`; else the last reason it failed. Gives
/// up at once when `exited` says the contender's process is gone.
fn wait_answers(
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
struct Sample {
    connections: u64,
    conn_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

/// Runs ts-bench in the namespace (and in the cgroup when the contender needs it) and
/// returns its one line of output.
/// `ip netns exec` remounts /sys, so the cgroup is joined before: the shell writes
/// its own pid to cgroup.procs, then execs `ip netns exec`; membership survives exec.
fn ts_bench(
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
fn client_command(
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

/// Scenario 1: `concurrency` clients opening connections to `contender.target`.
fn client_run(
    bin: &Path,
    netns: &str,
    cgroup: &Path,
    contender: &Contender,
    concurrency: u32,
    secs: f64,
    warmup: f64,
) -> Result<Sample> {
    let line = ts_bench(
        bin,
        netns,
        cgroup,
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

/// One scenario 2 result.
struct StreamSample {
    bytes: u64,
    gbit_per_sec: f64,
    errors: u64,
}

/// Scenario 2: one connection to `contender.stream_target`, written to for the duration.
fn stream_run(
    bin: &Path,
    netns: &str,
    cgroup: &Path,
    contender: &Contender,
    secs: f64,
    warmup: f64,
) -> Result<StreamSample> {
    let line = ts_bench(
        bin,
        netns,
        cgroup,
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

/// The markdown tables (with the header), the JSON document and the goal lines.
fn report(
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
    let mut goal = |what: &str, name: &str, cell: &str, ratio: f64| {
        if name == "connect-time" || name == "gateway" {
            let met = if ratio >= GOAL { "met" } else { "not met" };
            let _ = writeln!(
                goals,
                "goal: {what} >= {GOAL} of direct: {name:<12} {cell}: {ratio:.3} {met}"
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
        "\n| scenario | contender | Gbit/s | vs direct | errors |\n|---|---|---:|---:|---:|\n"
    );
    let direct = stream_rows
        .first()
        .map_or(f64::NAN, |r| median(&r.gbit_per_sec));
    for (contender, row) in stream_contenders.iter().zip(stream_rows) {
        let gbit = median(&row.gbit_per_sec);
        let ratio = gbit / direct;
        let _ = writeln!(
            md,
            "| {STREAM_SCENARIO} | {} | {gbit:.2} | {ratio:.3} | {} |",
            contender.name, row.errors
        );
        json_rows.push(format!(
            "    {{\"scenario\": \"{STREAM_SCENARIO}\", \"contender\": \"{}\", \"target\": \"{}\", \
             \"gbit_per_sec\": {gbit:.3}, \"ratio_to_direct\": {ratio:.4}, \"errors\": {}, \
             \"gbit_per_sec_reps\": {:?}}}",
            contender.name, contender.stream_target, row.errors, row.gbit_per_sec
        ));
        goal("stream throughput", contender.name, "one stream    ", ratio);
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
        "{{\n  \"header\": \"{}\",\n  \"goal_ratio_to_direct\": {GOAL},\n  \"results\": [\n{}\n  ]\n}}\n",
        json_escape(header),
        json_rows.join(",\n")
    );
    (md, json, goals)
}

/// A contender that could not run still gets its row, with the reason and no number.
fn unavailable(
    md: &mut String,
    json_rows: &mut Vec<String>,
    skipped: &[Skipped],
    scenario: &str,
    columns_before: &str,
    dashes: &str,
) {
    for s in skipped.iter().filter(|s| s.scenario == scenario) {
        let _ = writeln!(
            md,
            "| {scenario} | {columns_before}{}: unavailable ({}) | {dashes}",
            s.name,
            s.why.replace('|', "\\|")
        );
        json_rows.push(format!(
            "    {{\"scenario\": \"{scenario}\", \"contender\": \"{}\", \"unavailable\": \"{}\"}}",
            s.name,
            json_escape(&s.why)
        ));
    }
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
    let mut cfg = format!(
        "global\n    nbthread {PROXY_THREADS}\n    maxconn 4096\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n"
    );
    for (split, listen) in [(ECHO, HAPROXY_ADDR), (SINK, HAPROXY_STREAM_ADDR)] {
        let Split { name, v1, v2, .. } = split;
        let _ = write!(
            cfg,
            "frontend {name}\n    bind {listen}\n    default_backend {name}\n\
             backend {name}\n    balance roundrobin\n    \
             server v1 127.0.0.1:{v1} weight 80\n    server v2 127.0.0.1:{v2} weight 20\n"
        );
    }
    let Split { v1, v2, .. } = ECHO;
    let _ = write!(
        cfg,
        "frontend tcp_echo_random\n    bind {HAPROXY_RANDOM_ADDR}\n    default_backend tcp_echo_random\n\
         backend tcp_echo_random\n    balance random\n    \
         server v1 127.0.0.1:{v1} weight 80\n    server v2 127.0.0.1:{v2} weight 20\n"
    );
    cfg.push_str(&http::haproxy_config());
    cfg
}

fn nginx_config(path: &Path) -> String {
    let dir = path.display();
    let mut cfg = format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
         worker_processes {PROXY_THREADS};\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log warn;\n\
         events {{ worker_connections 4096; }}\nstream {{\n"
    );
    for (split, listen) in [(ECHO, NGINX_ADDR), (SINK, NGINX_STREAM_ADDR)] {
        let Split { name, v1, v2, .. } = split;
        let _ = write!(
            cfg,
            "    upstream {name} {{\n        server 127.0.0.1:{v1} weight=80;\n        \
             server 127.0.0.1:{v2} weight=20;\n    }}\n    \
             server {{\n        listen {listen};\n        proxy_pass {name};\n    }}\n"
        );
    }
    cfg.push_str("}\n");
    cfg.push_str(&http::nginx_config(path));
    cfg
}

/// Envoy as Istio programs it for a TCP route with an 80/20 split: a listener whose
/// `tcp_proxy` filter picks one of two clusters per connection by `weighted_clusters`,
/// clusters named `outbound|<port>|<subset>|<host>`, each with its one static endpoint,
/// and circuit-breaker limits raised to Istio's (Envoy's default is 1024 connections).
fn envoy_config() -> String {
    let mut listeners = String::new();
    let mut clusters = String::new();
    for (split, listen) in [(ECHO, ENVOY_ADDR), (SINK, ENVOY_STREAM_ADDR)] {
        let Split {
            name,
            host,
            port,
            v1,
            v2,
        } = split;
        let (address, listen_port) = listen.split_once(':').expect("host:port");
        let _ = write!(
            listeners,
            "  - name: {name}\n    address:\n      socket_address: \
             {{address: {address}, port_value: {listen_port}}}\n    filter_chains:\n    - filters:\n      \
             - name: envoy.filters.network.tcp_proxy\n        typed_config:\n          \
             \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          \
             stat_prefix: \"outbound|{port}||{host}\"\n          weighted_clusters:\n            clusters:\n            \
             - {{name: \"outbound|{port}|v1|{host}\", weight: 80}}\n            \
             - {{name: \"outbound|{port}|v2|{host}\", weight: 20}}\n"
        );
        for (subset, endpoint) in [("v1", v1), ("v2", v2)] {
            clusters.push_str(&envoy_cluster(
                &format!("outbound|{port}|{subset}|{host}"),
                endpoint,
            ));
        }
    }
    let (http_listeners, http_clusters) = http::envoy_config();
    listeners.push_str(&http_listeners);
    clusters.push_str(&http_clusters);
    format!("static_resources:\n  listeners:\n{listeners}  clusters:\n{clusters}")
}

/// One cluster as Istio makes it for a subset: static, its one endpoint on 127.0.0.1,
/// circuit-breaker limits raised to Istio's (Envoy's default is 1024 connections).
fn envoy_cluster(name: &str, endpoint: u16) -> String {
    format!(
        "  - name: \"{name}\"\n    type: STATIC\n    connect_timeout: 10s\n    \
         circuit_breakers:\n      thresholds:\n      - max_connections: 4294967295\n        \
         max_pending_requests: 4294967295\n        max_requests: 4294967295\n        max_retries: 4294967295\n    \
         load_assignment:\n      cluster_name: \"{name}\"\n      endpoints:\n      \
         - lb_endpoints:\n        - endpoint:\n            address:\n              socket_address: \
         {{address: 127.0.0.1, port_value: {endpoint}}}\n"
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
    /// Starts a backend that logs one line on stderr once it listens, and waits for it.
    fn spawn_listening(&mut self, what: &str, c: &mut Command) -> Result<()> {
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        let child = self.spawn(what, c)?;
        let mut line = String::new();
        if let Some(stderr) = child.stderr.take() {
            BufReader::new(stderr).read_line(&mut line)?;
        }
        ensure!(line.contains("listening"), "{what} did not start: {line}");
        Ok(())
    }

    /// The pid of the process started as `what`.
    fn pid(&self, what: &str) -> Option<u32> {
        self.0.iter().find(|(w, _)| w == what).map(|(_, c)| c.id())
    }

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

#[cfg(test)]
mod tests {
    use super::{SCENARIO, STREAM_SCENARIO, Skipped, envoy_config, json_escape, unavailable};

    #[test]
    fn envoy_splits_each_service_80_20_over_istio_named_clusters() {
        let cfg = envoy_config();
        for host in ["tcp-echo.local", "bulk-sink.local"] {
            for (subset, weight) in [("v1", 80), ("v2", 20)] {
                let name = format!(
                    "outbound|{}|{subset}|{host}",
                    if host == "tcp-echo.local" { 9000 } else { 9100 }
                );
                assert!(
                    cfg.contains(&format!("{{name: \"{name}\", weight: {weight}}}")),
                    "a weighted_clusters entry {name} weight {weight} expected in:\n{cfg}"
                );
                assert!(
                    cfg.contains(&format!("  - name: \"{name}\"\n    type: STATIC")),
                    "a cluster {name} expected in:\n{cfg}"
                );
            }
        }
    }

    #[test]
    fn an_unavailable_contender_gets_a_row_without_numbers() {
        let skipped = [Skipped {
            scenario: STREAM_SCENARIO,
            name: "envoy",
            why: "`pip install` failed: \"no | network\"".into(),
        }];
        let (mut md, mut json) = (String::new(), Vec::new());
        unavailable(&mut md, &mut json, &skipped, SCENARIO, "all | ", "- |");
        assert!(md.is_empty() && json.is_empty(), "other scenario: no row");
        unavailable(
            &mut md,
            &mut json,
            &skipped,
            STREAM_SCENARIO,
            "",
            "- | - | - |",
        );
        assert_eq!(
            md,
            "| one long TCP stream | envoy: unavailable (`pip install` failed: \"no \\| network\") | - | - | - |\n"
        );
        assert_eq!(
            json,
            [
                "    {\"scenario\": \"one long TCP stream\", \"contender\": \"envoy\", \"unavailable\": \"`pip install` failed: \\\"no | network\\\"\"}"
            ]
        );
        assert_eq!(json_escape("a\\b\nc"), "a\\\\b\\u000ac");
    }
}
