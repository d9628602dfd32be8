//! Scenario 8, convergence: how long a weight change committed to the fleet's etcd
//! takes to be in force on every node. A 3-member etcd cluster on loopback (Debian's
//! etcd, data directories in the temp dir: see the report's disk line, as fsync
//! dominates a commit), then one row per fleet, each under its own prefix:
//!
//! - 3 real agents (`traffic-shift run --store`, each in its own network namespace,
//!   cgroup, bpffs directory, state directory, admin socket and metrics port), which
//!   report a revision once its install is done;
//! - 100 and 1 000 simulated nodes (`traffic-shift fleet simulate`: the agent's own
//!   store follower, compile step without a datapath, and status reporter; 1 000 as
//!   4 processes of 250).
//!
//! The measuring side is `traffic-shift fleet converge`: it commits the weights of
//! bench/rules/convergence/ in turn (80/20, 20/80) through `apply --store`'s code,
//! and from the commit's return follows the nodes' statuses with an etcd watch until
//! every node reports that revision (or a later one) in force: per change, the time
//! to the median node and to the last. The etcd members' CPU (and the nodes'), read
//! from /proc, is reported with nothing changing (the reporters' writes alone) and
//! during the changes.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use super::{
    guards::{BpffsDir, CgroupDir, Netns, Processes, TempDir},
    report::{json_escape, median},
};
use crate::cmd;

pub const SCENARIO: &str = "convergence";
/// Where Debian puts etcd (`cargo xtask setup` installs it).
const ETCD: &str = "/usr/bin/etcd";
/// The goal: p99 under 500 ms at 1 000 nodes.
const GOAL_MS: f64 = 500.0;
const GOAL_NODES: usize = 1000;
/// The fleets: (real agents, simulated nodes, simulator processes).
const FLEETS: [(usize, usize, usize); 3] = [(3, 0, 0), (0, 100, 1), (0, 1000, 4)];

/// What scenario 8 needs of the bench's setup.
pub struct Env<'a> {
    pub root: &'a Path,
    pub bin: &'a Path,
    pub cgroup_root: &'a Path,
    /// The run's name, for the namespaces, cgroups and bpffs directories.
    pub name: &'a str,
    pub quick: bool,
}

/// One fleet, measured.
pub struct Row {
    pub agents: usize,
    pub simulated: usize,
    pub processes: usize,
    /// Per change: until the last node, until the median node, the commit itself (ms).
    pub last_ms: Vec<f64>,
    pub median_ms: Vec<f64>,
    pub commit_ms: Vec<f64>,
    /// Until the last node stamped the status it then wrote (the rest of `last_ms`
    /// is that write and the watch's delivery).
    pub stamp_ms: Vec<f64>,
    /// Node status writes per second with nothing changing, as the watch saw them.
    pub idle_writes_per_s: f64,
    /// CPU, in % of one CPU: the 3 etcd members together, then the node processes
    /// together; with nothing changing, then during the changes.
    pub etcd_cpu: (f64, f64),
    pub nodes_cpu: (f64, f64),
}

impl Row {
    fn nodes(&self) -> usize {
        self.agents + self.simulated
    }

    fn name(&self) -> String {
        if self.agents > 0 {
            format!("{} real agents", self.agents)
        } else {
            format!(
                "{} simulated nodes, {} process{}",
                self.simulated,
                self.processes,
                if self.processes == 1 { "" } else { "es" }
            )
        }
    }
}

/// What scenario 8 measured, for its report.
pub struct Results {
    pub rows: Vec<Row>,
    /// etcd's version and where its data directories are (file system, device).
    pub etcd: String,
    pub disk: String,
}

/// The `p`-th percentile (nearest rank): with 30 changes, p99 is the worst.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank among a few dozen"
    )]
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// A port that was free a moment ago.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// user + system CPU time of `pid`, in clock ticks (0 if it is gone).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's `(name)`: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

/// CPU of `pids` between two readings, in % of one CPU.
struct CpuClock {
    pids: Vec<u32>,
    ticks: u64,
    at: Instant,
}

impl CpuClock {
    fn start(pids: Vec<u32>) -> Self {
        let ticks = pids.iter().map(|&p| cpu_ticks(p)).sum();
        Self {
            pids,
            ticks,
            at: Instant::now(),
        }
    }

    /// Since the last reading; starts the next.
    #[expect(clippy::cast_precision_loss, reason = "CPU ticks")]
    fn lap(&mut self) -> f64 {
        let ticks: u64 = self.pids.iter().map(|&p| cpu_ticks(p)).sum();
        let secs = self.at.elapsed().as_secs_f64();
        let hz = rustix::param::clock_ticks_per_second() as f64;
        let used = (ticks.saturating_sub(self.ticks)) as f64 / hz;
        self.ticks = ticks;
        self.at = Instant::now();
        100.0 * used / secs
    }
}

/// The 3-member etcd cluster on loopback.
struct Etcd {
    url: String,
    pids: Vec<u32>,
}

fn start_etcd(bin: &Path, dir: &Path, procs: &mut Processes) -> Result<Etcd> {
    ensure!(
        Path::new(ETCD).exists(),
        "{ETCD} missing: scenario 8 runs a real etcd; install it with `cargo xtask setup` (Debian's etcd-server)"
    );
    let members: Vec<(String, u16, u16)> = (0..3)
        .map(|i| Ok((format!("m{i}"), free_port()?, free_port()?)))
        .collect::<Result<_>>()?;
    let initial = members
        .iter()
        .map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut pids = Vec::new();
    for (name, client, peer) in &members {
        let client = format!("http://127.0.0.1:{client}");
        let peer = format!("http://127.0.0.1:{peer}");
        let mut c = Command::new(ETCD);
        // The flags of the fleet tests' cluster (tests/src/etcd.rs).
        c.args(["--name", name])
            .arg("--data-dir")
            .arg(dir.join(format!("{name}.data")))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "ts-bench"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join(format!("{name}.log")))?);
        pids.push(procs.spawn(&format!("etcd {name}"), &mut c)?.id());
    }
    let url = format!(
        "etcd://{}",
        members
            .iter()
            .map(|(_, client, _)| format!("127.0.0.1:{client}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = Command::new(bin.join("traffic-shift"));
        c.args(["get", "nodes", "--store", &url]);
        if cmd::probe(&mut c).is_some() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "etcd at {url} not ready after 30 s; its logs are in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Etcd { url, pids })
}

/// `traffic-shift ARGS --store URL --store-prefix PREFIX`.
fn ts(bin: &Path, url: &str, prefix: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin.join("traffic-shift"));
    c.args(args)
        .args(["--store", url, "--store-prefix", prefix]);
    c
}

/// The nodes of one row, started; their guards are dropped (agents first) with it.
struct Nodes {
    procs: Processes,
    /// Their logs.
    dir: PathBuf,
    /// Each real agent's namespace, cgroup and bpffs directory.
    guards: Vec<(Netns, CgroupDir, BpffsDir)>,
    _tmp: TempDir,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        // The processes first: they use the rest.
        drop(std::mem::replace(&mut self.procs, Processes(Vec::new())));
    }
}

fn start_nodes(
    env: &Env<'_>,
    etcd: &Etcd,
    prefix: &str,
    (agents, simulated, processes): (usize, usize, usize),
) -> Result<Nodes> {
    let n = agents + simulated;
    let tmp = TempDir::new(std::env::temp_dir().join(format!("{}-nodes-{n}", env.name)))?;
    let mut nodes = Nodes {
        procs: Processes(Vec::new()),
        dir: tmp.0.clone(),
        guards: Vec::new(),
        _tmp: tmp,
    };
    let dir = nodes.dir.clone();
    for i in 0..agents {
        let name = format!("{}-c{i}", env.name);
        let netns = Netns::new(&name)?;
        let cgroup = CgroupDir::new(env.cgroup_root.join(&name))?;
        let bpffs = BpffsDir(PathBuf::from(format!("/sys/fs/bpf/{name}")));
        let own = dir.join(format!("agent-{i}"));
        fs::create_dir_all(&own)?;
        let mut c = ts(env.bin, &etcd.url, prefix, &["run"]);
        c.args(["--node", &format!("agent-{i}")])
            .arg("--cgroup")
            .arg(&cgroup.0)
            .arg("--netns")
            .arg(format!("/var/run/netns/{name}"))
            .arg("--bpffs")
            .arg(&bpffs.0)
            .arg("--status-file")
            .arg(own.join("status.json"))
            .args(["--metrics-addr", "127.0.0.1:0"])
            .arg("--admin-socket")
            .arg(own.join("admin.sock"))
            .arg("--state-dir")
            .arg(own.join("state"))
            .arg("--unload-on-exit")
            .stdout(Stdio::null())
            .stderr(fs::File::create(own.join("agent.log"))?);
        nodes.guards.push((netns, cgroup, bpffs));
        nodes.procs.spawn(&format!("agent {i}"), &mut c)?;
    }
    for p in 0..processes {
        let mut c = ts(
            env.bin,
            &etcd.url,
            prefix,
            &[
                "fleet",
                "simulate",
                "--nodes",
                &(simulated / processes).to_string(),
                "--name-prefix",
                &format!("sim-{p}-"),
                "--log",
                "warn",
            ],
        );
        c.stdout(Stdio::null())
            .stderr(fs::File::create(dir.join(format!("simulate-{p}.log")))?);
        nodes.procs.spawn(&format!("simulate {p}"), &mut c)?;
    }
    Ok(nodes)
}

/// One row: the service and the first weights committed, the nodes started, then
/// `fleet converge` run while the CPU clocks are read at its steps.
fn measure(
    env: &Env<'_>,
    etcd: &Etcd,
    fleet: (usize, usize, usize),
    changes: usize,
) -> Result<Row> {
    let (agents, simulated, processes) = fleet;
    let n = agents + simulated;
    let prefix = format!("/bench-convergence-{n}");
    let rules = env.root.join("bench/rules/convergence");
    let mut apply = ts(env.bin, &etcd.url, &prefix, &["apply"]);
    apply
        .arg("-f")
        .arg(rules.join("service.yaml"))
        .arg("-f")
        .arg(rules.join("vs-80-20.yaml"));
    cmd::run(&mut apply)?;
    let nodes = start_nodes(env, etcd, &prefix, fleet)?;
    let node_pids: Vec<u32> = nodes.procs.0.iter().map(|(_, c)| c.id()).collect();
    // Longer than the reporters' rewrite of an unchanged status (5 s).
    let idle = if env.quick { "3s" } else { "12s" };
    let mut converge = ts(
        env.bin,
        &etcd.url,
        &prefix,
        &[
            "fleet",
            "converge",
            "--nodes",
            &n.to_string(),
            "--changes",
            &changes.to_string(),
            "--idle",
            idle,
            "--timeout",
            "120s",
        ],
    );
    converge
        .arg("-f")
        .arg(rules.join("vs-20-80.yaml"))
        .arg("-f")
        .arg(rules.join("vs-80-20.yaml"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = cmd::show(&converge);
    eprintln!("+ {shown}");
    let mut child = converge
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let stderr = BufReader::new(child.stderr.take().context("converge's stderr")?);
    let (mut etcd_cpu, mut nodes_cpu) = (
        CpuClock::start(etcd.pids.clone()),
        CpuClock::start(node_pids.clone()),
    );
    let (mut idle_cpu, mut said) = ((f64::NAN, f64::NAN), String::new());
    for line in stderr.lines() {
        let line = line?;
        eprintln!("bench: convergence {n}: {line}");
        if line.contains("nodes ready") {
            // The idle window starts.
            etcd_cpu.lap();
            nodes_cpu.lap();
        } else if line.starts_with("idle:") {
            idle_cpu = (etcd_cpu.lap(), nodes_cpu.lap());
        }
        said.push_str(&line);
        said.push('\n');
    }
    let changes_cpu = (etcd_cpu.lap(), nodes_cpu.lap());
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let logs: String = nodes
            .procs
            .0
            .iter()
            .map(|(what, _)| what.clone())
            .collect::<Vec<_>>()
            .join(", ");
        bail!(
            "`{shown}` failed ({}): {said}(the logs of {logs} are in {})",
            out.status,
            nodes.dir.display()
        );
    }
    let report: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("`{shown}` printed {}", String::from_utf8_lossy(&out.stdout)))?;
    let column = |key: &str| -> Vec<f64> {
        report["changes"]
            .as_array()
            .map(|changes| changes.iter().filter_map(|c| c[key].as_f64()).collect())
            .unwrap_or_default()
    };
    drop(nodes);
    Ok(Row {
        agents,
        simulated,
        processes,
        last_ms: column("last_node_ms"),
        median_ms: column("median_node_ms"),
        commit_ms: column("commit_ms"),
        stamp_ms: column("last_stamp_ms"),
        idle_writes_per_s: report["idle_writes_per_s"].as_f64().unwrap_or(f64::NAN),
        etcd_cpu: (idle_cpu.0, changes_cpu.0),
        nodes_cpu: (idle_cpu.1, changes_cpu.1),
    })
}

/// Scenario 8: the etcd cluster, then each fleet in turn (30 changes each; 5 with
/// `--quick`).
pub fn run(env: &Env<'_>, check_interrupted: &impl Fn() -> Result<()>) -> Result<Results> {
    let dir = TempDir::new(std::env::temp_dir().join(format!("{}-etcd", env.name)))?;
    let mut procs = Processes(Vec::new());
    let etcd = start_etcd(env.bin, &dir.0, &mut procs)?;
    let version = cmd::probe(Command::new(ETCD).arg("--version"))
        .and_then(|v| v.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "etcd ?".into());
    let disk = cmd::probe(
        Command::new("findmnt")
            .args(["-n", "-o", "FSTYPE,SOURCE,TARGET", "-T"])
            .arg(&dir.0),
    )
    .map_or_else(
        || "?".into(),
        |d| d.split_whitespace().collect::<Vec<_>>().join(" "),
    );
    let changes = if env.quick { 5 } else { 30 };
    let mut rows = Vec::new();
    for fleet in FLEETS {
        check_interrupted()?;
        let row = measure(env, &etcd, fleet, changes)?;
        eprintln!(
            "bench: convergence, {}: last node p50 {:.1} ms, p99 {:.1} ms; etcd CPU {:.0}% idle, {:.0}% during the changes",
            row.name(),
            percentile(&row.last_ms, 50.0),
            percentile(&row.last_ms, 99.0),
            row.etcd_cpu.0,
            row.etcd_cpu.1
        );
        rows.push(row);
    }
    drop(procs);
    Ok(Results {
        rows,
        etcd: format!("{version}, 3 members on loopback"),
        disk: format!("data directories on {disk} ({})", dir.0.display()),
    })
}

impl Results {
    /// The table, JSON rows and goal line of scenario 8.
    pub fn report(&self, md: &mut String, json_rows: &mut Vec<String>, goals: &mut String) {
        let _ = write!(
            md,
            "\n{SCENARIO}: {}; {}\n\n\
             | scenario | nodes | changes | last node in force after the commit returned, ms: p50 | p99 | median node, ms: p50 | p99 | last node's status stamped, ms: p50 | p99 | commit, ms: p50 | status writes/s, idle | etcd CPU (3 members), % of one CPU: idle | during changes | nodes' CPU, %: idle | during changes |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            self.etcd, self.disk
        );
        for row in &self.rows {
            let p = |v: &[f64], q| percentile(v, q);
            // Each figure: its JSON name, its value, the decimals of its table cell.
            let figures = [
                ("last_node_ms_p50", p(&row.last_ms, 50.0), 1),
                ("last_node_ms_p99", p(&row.last_ms, 99.0), 1),
                ("median_node_ms_p50", p(&row.median_ms, 50.0), 1),
                ("median_node_ms_p99", p(&row.median_ms, 99.0), 1),
                ("last_stamp_ms_p50", p(&row.stamp_ms, 50.0), 0),
                ("last_stamp_ms_p99", p(&row.stamp_ms, 99.0), 0),
                ("commit_ms_median", median(&row.commit_ms), 1),
                ("idle_status_writes_per_s", row.idle_writes_per_s, 0),
                ("etcd_cpu_pct_idle", row.etcd_cpu.0, 0),
                ("etcd_cpu_pct_changes", row.etcd_cpu.1, 0),
                ("nodes_cpu_pct_idle", row.nodes_cpu.0, 0),
                ("nodes_cpu_pct_changes", row.nodes_cpu.1, 0),
            ];
            let _ = write!(
                md,
                "| {SCENARIO} | {} | {} |",
                row.name(),
                row.last_ms.len()
            );
            for (_, value, decimals) in figures {
                let _ = write!(md, " {value:.decimals$} |");
            }
            md.push('\n');
            let mut json = format!(
                "    {{\"scenario\": \"{SCENARIO}\", \"fleet\": \"{}\", \"nodes\": {}, \"real_agents\": {}, \
                 \"simulated\": {}, \"processes\": {}, \"changes\": {}, \"last_node_ms_reps\": {:?}",
                json_escape(&row.name()),
                row.nodes(),
                row.agents,
                row.simulated,
                row.processes,
                row.last_ms.len(),
                row.last_ms,
            );
            for (name, value, _) in figures {
                let _ = write!(json, ", \"{name}\": {value:.3}");
            }
            let _ = write!(
                json,
                ", \"etcd\": \"{}\", \"disk\": \"{}\"}}",
                json_escape(&self.etcd),
                json_escape(&self.disk)
            );
            json_rows.push(json);
        }
        match self.rows.iter().find(|r| r.nodes() == GOAL_NODES) {
            Some(row) => {
                let p99 = percentile(&row.last_ms, 99.0);
                let _ = writeln!(
                    goals,
                    "goal: a change in force on all {GOAL_NODES} nodes within {GOAL_MS} ms (p99): p99 {p99:.1} ms {}",
                    if p99 < GOAL_MS { "met" } else { "not met" }
                );
            }
            None => {
                let _ = writeln!(
                    goals,
                    "goal: convergence at {GOAL_NODES} nodes: not measured"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Results, Row, percentile};

    #[test]
    fn a_row_is_one_table_line_and_one_json_object() {
        let results = Results {
            rows: vec![Row {
                agents: 3,
                simulated: 0,
                processes: 0,
                last_ms: vec![2.0, 4.0],
                median_ms: vec![1.0, 3.0],
                commit_ms: vec![5.0, 7.0],
                stamp_ms: vec![1.0, 2.0],
                idle_writes_per_s: 0.5,
                etcd_cpu: (4.0, 9.0),
                nodes_cpu: (1.0, 3.0),
            }],
            etcd: "etcd 3.4".into(),
            disk: "ext4 \"vda\"".into(),
        };
        let (mut md, mut json, mut goals) = (String::new(), Vec::new(), String::new());
        results.report(&mut md, &mut json, &mut goals);
        assert!(
            md.ends_with(
                "| convergence | 3 real agents | 2 | 2.0 | 4.0 | 1.0 | 3.0 | 1 | 2 | 6.0 | 0 | 4 | 9 | 1 | 3 |\n"
            ),
            "{md}"
        );
        let row: serde_json::Value = serde_json::from_str(&json[0]).expect(&json[0]);
        assert_eq!(row["last_node_ms_p99"], 4.0);
        assert_eq!(row["disk"], "ext4 \"vda\"");
        assert_eq!(goals, "goal: convergence at 1000 nodes: not measured\n");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=30).map(f64::from).collect();
        assert!((percentile(&v, 50.0) - 15.0).abs() < f64::EPSILON);
        assert!((percentile(&v, 99.0) - 30.0).abs() < f64::EPSILON);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
