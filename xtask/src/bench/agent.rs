//! The bench's agent and what it routes to: its rules (rules/tcp-echo with the 80/20
//! VirtualService in force, and bench/rules' services of the other scenarios), the
//! backends behind them in the bench's namespace, and the agent itself.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use super::{
    guards::{Netns, Processes},
    http,
    proxies::SINK,
};

/// The agent's `--max-services` and `--max-routes`, and half its `--max-counters`:
/// scenario 6's largest level and the bench's own services fit.
pub const MAX_SERVICES: u32 = 1 << 17;

/// The running agent, as the scenarios reach it.
pub struct Agent {
    pub pid: u32,
    pub admin_socket: PathBuf,
    /// Its status file (it names the `/metrics` address).
    pub status: PathBuf,
    /// Where it pins its maps and links (scenario 6 sums their kernel memory).
    pub bpffs: PathBuf,
}

/// The rules (in `tmp`), the backends and the agent, started in this order; the agent
/// in the namespace and cgroup, pinning in `bpffs`.
pub fn setup(
    root: &Path,
    bin: &Path,
    tmp: &Path,
    (netns, cgroup, bpffs): (&Netns, &Path, &Path),
    procs: &mut Processes,
) -> Result<Agent> {
    // The rules, with the 80/20 VirtualService in force.
    let rules = tmp.join("rules");
    let rule_files = write_rules(root, &rules)?;
    start_backends(bin, netns, procs)?;
    start(bin, tmp, &rules, rule_files, (netns, cgroup, bpffs), procs)?;
    Ok(Agent {
        pid: procs.pid("agent").context("the agent's pid")?,
        admin_socket: tmp.join("admin.sock"),
        status: tmp.join("status.json"),
        bpffs: bpffs.to_owned(),
    })
}

/// Writes the agent's rules into `rules`: scenario 2's bulk-sink, scenario 4's
/// RANDOM tcp-echo, scenarios 3 and 4's HTTP services, and rules/tcp-echo with the
/// 80/20 VirtualService in force. Returns how many rules files there are.
fn write_rules(root: &Path, rules: &Path) -> Result<usize> {
    fs::create_dir(rules)?;
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
    Ok(rule_files)
}

/// Starts the backends in the namespace, each waited for until it listens: tcp-echo
/// v1 and v2, the two sinks, http-echo v1 and v2.
fn start_backends(bin: &Path, netns: &Netns, procs: &mut Processes) -> Result<()> {
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
    Ok(())
}

/// The agent the bench runs: `bin`'s, or the one `TS_BENCH_AGENT` names (an
/// earlier build kept aside, to measure two builds run after run: A/B).
pub fn agent_binary(bin: &Path) -> std::path::PathBuf {
    std::env::var_os("TS_BENCH_AGENT").map_or_else(|| bin.join("traffic-shift"), Into::into)
}

/// Starts the agent on `rules` (its files in `tmp`) and waits until it applied the
/// `rule_files`.
fn start(
    bin: &Path,
    tmp: &Path,
    rules: &Path,
    rule_files: usize,
    (netns, cgroup, bpffs): (&Netns, &Path, &Path),
    procs: &mut Processes,
) -> Result<()> {
    let events = tmp.join("events.jsonl");
    let agent_log = tmp.join("agent.log");
    let mut agent = Command::new(agent_binary(bin));
    agent
        .arg("run")
        .arg("--rules")
        .arg(rules)
        .arg("--cgroup")
        .arg(cgroup)
        .arg("--netns")
        .arg(format!("/var/run/netns/{}", netns.name))
        .arg("--bpffs")
        .arg(bpffs)
        .arg("--status-file")
        .arg(tmp.join("status.json"))
        .arg("--events")
        .arg(&events)
        // Its own of everything a node-wide agent also uses, so the bench
        // runs beside one (`cargo xtask run`) without touching it.
        .args(["--metrics-addr", "127.0.0.1:0"])
        .arg("--admin-socket")
        .arg(tmp.join("admin.sock"))
        .arg("--state-dir")
        .arg(tmp.join("state"))
        .arg("--unload-on-exit")
        // Room for scenario 6's 100 000 services (each a route, a service
        // address and two counter slots) beside the bench's own
        // (docs/sizing.md).
        .args(["--max-services", &MAX_SERVICES.to_string()])
        .args(["--max-routes", &MAX_SERVICES.to_string()])
        .args(["--max-counters", &(2 * MAX_SERVICES).to_string()])
        .stdout(Stdio::null())
        .stderr(fs::File::create(&agent_log)?);
    procs.spawn("agent", &mut agent)?;
    wait_applied(&events, rule_files, &agent_log, procs)
}

/// Waits (up to 10 s) until the agent reported one `applied` event per rules file.
pub fn wait_applied(events: &Path, files: usize, log: &Path, procs: &mut Processes) -> Result<()> {
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
