//! `cargo xtask bench [--quick]`: new-TCP-connection rate and latency (scenario 1)
//! and the throughput of one long TCP stream (scenario 2) through traffic-shift's
//! two paths (connect-time rewrite, sk_lookup gateway) side by side with the
//! backend reached directly and, when installable, haproxy, nginx and Envoy
//! (configured as Istio configures it) as user-space proxies; HTTP requests through
//! the L7 proxy (3), split accuracy (4), rule change (5), scale (6), convergence of
//! a fleet on etcd (8); and, with `--xdp`, the XDP gateway (7). Everything runs in a network namespace and a child
//! cgroup of our own; timings are reported, never asserted.
//!
//! This file sets the run up and calls the scenarios in order; the modules:
//!
//! | module | what |
//! |---|---|
//! | `guards` | temp dir, network namespaces, cgroup, bpffs dir, child processes: removed on drop |
//! | `agent` | the bench's rules, the backends, the agent |
//! | `proxies` | haproxy, nginx, Envoy: installed, configured (TCP), started |
//! | `client` | the load clients (`ts-bench`, `ts-client`) in the namespace and cgroup |
//! | `tcp` | scenarios 1 and 2: contenders, smoke checks, cells, their table and goals (alone with `--only tcp`, with the BPF cost per path) |
//! | `http` | scenario 3 and the HTTP half of 4 |
//! | `l7` | scenario 3 alone (`--only l7`), on http-echo and on fast backends |
//! | `cpu` | the CPU time of a process tree (`/proc`), for CPU per request |
//! | `split` | scenario 4: split accuracy (the TCP half, the measuring and report) |
//! | `rule_change` | scenario 5 |
//! | `scale` | scenario 6 (and 5's apply of 10 000 and 100 000 services; alone with `--only scale`) |
//! | `bpf_cost` | the kernel's time and runs per connection of each program (`kernel.bpf_stats_enabled`) |
//! | `convergence` | scenario 8 (alone with `--only convergence`) |
//! | `report` | what the reports share: left-out rows, JSON strings, median, header |
//! | `xdp` | scenario 7 (`--xdp`), with the check of its `xdp` row (`xdp/check.rs`) |
//! | `storm` | scenario 9, a new-connection storm (alone with `--only storm`) |
//! | `watch` | `traffic-shift status --watch` on a pseudo-terminal, its redraws timed (scenario 6) |

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::{Context, Result, bail, ensure};
use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};

use self::{
    agent::Agent,
    client::Clients,
    guards::{BpffsDir, CgroupDir, Netns, Processes, TempDir},
    proxies::Proxies,
    report::Skipped,
    tcp::{SCENARIO, STREAM_SCENARIO},
};
use crate::setup;

mod agent;
mod bpf_cost;
mod client;
mod convergence;
mod cpu;
mod guards;
mod http;
mod l7;
mod proxies;
mod report;
mod rule_change;
mod scale;
mod split;
mod storm;
mod tcp;
mod watch;
mod xdp;

/// What `--only` runs alone.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Only {
    /// Scenario 8: printed, and written to `bench/results/convergence-latest.md`
    /// and `.json` (`latest.md` is left to full runs).
    Convergence,
    /// Scenario 6 (scale) on the bench's agent and backends, set up as in a full
    /// run: printed, and written to `bench/results/scale-latest.md` and `.json`.
    Scale,
    /// Scenarios 1 and 2 on traffic-shift's own paths and the backend directly
    /// (no proxies), 5 repetitions a cell, with the kernel's cost per connection
    /// of each program on each path: `bench/results/tcp-latest.md` and `.json`.
    Tcp,
    /// Scenario 9: a new-connection storm at the rate iptables DNAT fills conntrack,
    /// on DNAT, the XDP gateway and the connect-time and gateway paths:
    /// `bench/results/storm-latest.md` and `.json`.
    Storm,
    /// The kernel's cost per connection alone: each program's time and runs per
    /// connection on the connect-time and gateway paths, the median of 5 runs (3
    /// with `--quick`): `bench/results/bpf-cost-latest.md` and `.json`.
    BpfCost,
    /// Scenario 3 alone: HTTP requests (keep-alive and `Connection: close`) through
    /// direct, the L7 proxy's mesh and gateway paths, Envoy, haproxy and nginx, on
    /// http-echo and again on fast backends (nginx answering from memory), with each
    /// proxy's and the backends' CPU per request: `bench/results/l7-latest.md` and `.json`.
    L7,
}

pub fn bench(root: &Path, quick: bool, xdp: bool, only: Option<Only>) -> Result<()> {
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
    if let Some(Only::Convergence) = only {
        let results = convergence::run(
            &convergence::Env {
                root,
                bin: &bin,
                cgroup_root: &cgroup_root,
                name: &format!("ts-bench-{}", std::process::id()),
                quick,
            },
            &|| Ok(()),
        )?;
        let (mut md, mut json_rows, mut goals) = (String::new(), Vec::new(), String::new());
        results.report(&mut md, &mut json_rows, &mut goals);
        return report::write_alone(
            root,
            "convergence",
            &report::alone_header("scenario 8 alone (--only convergence)", quick),
            &md,
            &json_rows,
            &goals,
        );
    }
    // Scenarios 6 alone, 1 and 2 alone, the BPF cost alone, and 9 need no proxies.
    let proxies = match only {
        Some(Only::Scale | Only::Tcp | Only::BpfCost | Only::Storm) => None,
        _ => Some(proxies::install(&bin)),
    };

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
    let result = match (proxies, only) {
        (Some(proxies), Some(Only::L7)) => {
            l7::run(root, &bin, &cgroup_root, quick, proxies, &interrupted)
        }
        (Some(proxies), _) => run(root, &bin, &cgroup_root, quick, proxies, &interrupted),
        (None, Some(Only::Tcp)) => tcp_alone(root, &bin, &cgroup_root, quick, &interrupted),
        (None, Some(Only::Storm)) => storm::run(root, &bin, &cgroup_root, quick, &interrupted),
        (None, Some(Only::BpfCost)) => {
            bpf_cost_alone(root, &bin, &cgroup_root, quick, &interrupted)
        }
        (None, _) => scale_alone(root, &bin, &cgroup_root, quick, &interrupted),
    };
    signal_handle.close();
    result
}

/// Repetitions, seconds per cell and warmup seconds.
fn timing(quick: bool) -> (u32, f64, f64) {
    if quick { (1, 1.0, 0.2) } else { (3, 3.0, 0.5) }
}

/// Fails once a signal came: the guards then clean up as they drop.
fn check_interrupted(interrupted: &AtomicBool) -> Result<()> {
    ensure!(
        !interrupted.load(Ordering::SeqCst),
        "interrupted; cleaned up"
    );
    Ok(())
}

/// What a run on the bench's agent sets up: the guards, and the agent with its
/// backends and scenario 5's service in force (so `--only scale` measures the agent
/// of a full run). The fields drop in the order they are declared: processes first, then
/// bpffs, cgroup, netns, temp dir.
struct Setup {
    procs: Processes,
    _bpffs: BpffsDir,
    cgroup: CgroupDir,
    netns: Netns,
    tmp: TempDir,
    agent: Agent,
    /// Scenario 6's generated services (its largest level), in the temp dir.
    scale_files: Vec<PathBuf>,
}

impl Setup {
    /// With `scale`, scenario 6's services are generated too.
    fn new(
        root: &Path,
        bin: &Path,
        cgroup_root: &Path,
        name: &str,
        quick: bool,
        scale: bool,
    ) -> Result<Self> {
        let tmp = TempDir::new(std::env::temp_dir().join(name))?;
        let netns = Netns::new(name)?;
        let cgroup = CgroupDir::new(cgroup_root.join(name))?;
        let bpffs = BpffsDir(PathBuf::from(format!("/sys/fs/bpf/{name}")));
        let mut procs = Processes(Vec::new());
        let agent = agent::setup(root, bin, &tmp.0, (&netns, &cgroup.0, &bpffs.0), &mut procs)?;
        rule_change::put_in_force(bin, &agent.admin_socket, &change_rules(root))?;
        let scale_files = if scale {
            let largest = scale::levels(quick).iter().copied().max().unwrap_or(0);
            scale::generate(&tmp.0.join("scale"), largest)?
        } else {
            Vec::new()
        };
        Ok(Self {
            procs,
            _bpffs: bpffs,
            cgroup,
            netns,
            tmp,
            agent,
            scale_files,
        })
    }
}

/// Scenario 5's rules.
fn change_rules(root: &Path) -> PathBuf {
    root.join("bench/rules/rule-change")
}

/// Scenario 6's environment on `setup`, the connect-time path being `connect_time`.
fn scale_env<'a>(
    setup: &'a Setup,
    clients: Clients<'a>,
    connect_time: &'a tcp::Contender,
    quick: bool,
) -> scale::Env<'a> {
    let (_, duration, warmup) = timing(quick);
    scale::Env {
        clients,
        connect_time,
        agent: &setup.agent,
        files: &setup.scale_files,
        work: &setup.tmp.0,
        quick,
        duration,
        warmup,
    }
}

/// `--only scale`: the bench's agent and backends as in a full run, then scenario 6
/// alone, its tables written to `bench/results/scale-latest.md` (and `.json`).
fn scale_alone(
    root: &Path,
    bin: &Path,
    cgroup_root: &Path,
    quick: bool,
    interrupted: &AtomicBool,
) -> Result<()> {
    let name = format!("ts-bench-{}", std::process::id());
    let mut setup = Setup::new(root, bin, cgroup_root, &name, quick, true)?;
    let contenders = tcp::own_contenders();
    let connect_time = contenders
        .iter()
        .find(|c| c.name == "connect-time")
        .context("no connect-time contender")?;
    let clients = Clients {
        bin,
        netns: &setup.netns.name,
        cgroup: &setup.cgroup.0,
    };
    let procs = &mut setup.procs;
    if let Some(why) = client::wait_answers(
        || tcp::conn_check(clients, connect_time),
        || procs.exited("agent").is_some(),
    ) {
        bail!(
            "the connect-time path {} does not answer: {why}",
            connect_time.target
        );
    }
    let (_, duration, _) = timing(quick);
    let header = report::alone_header(
        &format!(
            "scenario 6 alone (--only scale), {duration} s per cell, agent `--max-services {}`",
            agent::MAX_SERVICES
        ),
        quick,
    );
    eprintln!("bench: {header}");
    let results = scale::run(&scale_env(&setup, clients, connect_time, quick), &|| {
        check_interrupted(interrupted)
    })?;
    drop(setup);
    let (mut md, mut json_rows, mut goals) = (String::new(), Vec::new(), String::new());
    results.report(&mut md, &mut json_rows, &mut goals);
    report::write_alone(root, "scale", &header, &md, &json_rows, &goals)
}

/// Repetitions of `--only tcp`'s cells: more than a full run's three, for a
/// stream ratio that one slow run does not move.
const TCP_ALONE_REPS: u32 = 5;

/// `--only tcp`: scenarios 1 and 2 on the bench's agent and backends, traffic-shift's
/// paths beside the backend directly, then the kernel's cost per connection of each
/// program on each path; written to `bench/results/tcp-latest.md` (and `.json`).
fn tcp_alone(
    root: &Path,
    bin: &Path,
    cgroup_root: &Path,
    quick: bool,
    interrupted: &AtomicBool,
) -> Result<()> {
    let name = format!("ts-bench-{}", std::process::id());
    let (_, duration, warmup) = timing(quick);
    let reps = if quick { 1 } else { TCP_ALONE_REPS };
    let mut setup = Setup::new(root, bin, cgroup_root, &name, quick, false)?;
    let contenders = tcp::own_contenders();
    let clients = Clients {
        bin,
        netns: &setup.netns.name,
        cgroup: &setup.cgroup.0,
    };
    let mut skipped = Vec::new();
    let no_envoy = setup.tmp.0.join("envoy.log");
    let (ready, stream_ready) = tcp::ready(
        clients,
        &contenders,
        &mut setup.procs,
        &no_envoy,
        &mut skipped,
    )?;
    let header = report::alone_header(
        &format!(
            "scenarios 1 and 2 alone (--only tcp), {reps} runs of {duration} s per cell, median shown"
        ),
        quick,
    );
    eprintln!("bench: {header}");
    let check_interrupted = || check_interrupted(interrupted);
    let (rows, stream_rows) = tcp::measure(
        clients,
        (&ready, &stream_ready),
        reps,
        (duration, warmup),
        &check_interrupted,
    )?;
    let programs = bpf_cost::Programs::of(&setup.agent.bpffs);
    let costs: Vec<(&str, Result<bpf_cost::Cost, String>)> = ready
        .iter()
        .filter(|c| c.name != "direct")
        .map(|contender| {
            let cost = programs
                .as_ref()
                .map_err(|e| format!("{e:#}"))
                .and_then(|programs| {
                    programs
                        .measure(|| {
                            let run = clients.conn(
                                contender,
                                tcp::BPF_COST_CONCURRENCY,
                                duration,
                                0.0,
                            )?;
                            Ok(run.connections)
                        })
                        .map_err(|e| format!("{e:#}"))
                });
            (contender.name, cost)
        })
        .collect();
    drop(setup);
    let (md, json, goals) = tcp::report(
        &header,
        (&ready, &rows),
        (&stream_ready, &stream_rows),
        &skipped,
        |md, json_rows, goals| tcp::report_bpf(&costs, md, json_rows, goals),
    );
    let md = format!("{md}\n{goals}");
    println!("\n{md}");
    let out = root.join("bench/results");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("tcp-latest.md"), md)?;
    std::fs::write(out.join("tcp-latest.json"), json)?;
    eprintln!("bench: wrote {}", out.join("tcp-latest.md").display());
    Ok(())
}

/// Runs per path of `--only bpf-cost` (with `--quick`, and without).
const BPF_COST_REPS: (u32, u32) = (3, 5);

/// `--only bpf-cost`: the bench's agent and backends, then the kernel's cost per
/// connection of each program on traffic-shift's two paths, `reps` runs of
/// `duration` each at concurrency 16, interleaved; the median per program in
/// `bench/results/bpf-cost-latest.md` (every run in the `.json`). A quick,
/// repeatable view of what scenario 6 and `--only tcp` measure once.
fn bpf_cost_alone(
    root: &Path,
    bin: &Path,
    cgroup_root: &Path,
    quick: bool,
    interrupted: &AtomicBool,
) -> Result<()> {
    let name = format!("ts-bench-{}", std::process::id());
    let (_, duration, _) = timing(quick);
    let reps = if quick {
        BPF_COST_REPS.0
    } else {
        BPF_COST_REPS.1
    };
    let mut setup = Setup::new(root, bin, cgroup_root, &name, quick, false)?;
    let contenders: Vec<tcp::Contender> = tcp::own_contenders()
        .into_iter()
        .filter(|c| c.name != "direct")
        .collect();
    let clients = Clients {
        bin,
        netns: &setup.netns.name,
        cgroup: &setup.cgroup.0,
    };
    for contender in &contenders {
        let procs = &mut setup.procs;
        if let Some(why) = client::wait_answers(
            || tcp::conn_check(clients, contender),
            || procs.exited("agent").is_some(),
        ) {
            bail!(
                "{} {} does not answer: {why}",
                contender.name,
                contender.target
            );
        }
    }
    let header = report::alone_header(
        &format!(
            "the kernel's cost per connection alone (--only bpf-cost), {reps} runs of {duration} s \
             per path at concurrency {}, median per program shown",
            tcp::BPF_COST_CONCURRENCY
        ),
        quick,
    );
    eprintln!("bench: {header}");
    let programs = bpf_cost::Programs::of(&setup.agent.bpffs)?;
    let mut costs: Vec<Vec<bpf_cost::Cost>> = contenders.iter().map(|_| Vec::new()).collect();
    for rep in 1..=reps {
        for (contender, costs) in contenders.iter().zip(&mut costs) {
            check_interrupted(interrupted)?;
            let cost = programs.measure(|| {
                let run = clients.conn(contender, tcp::BPF_COST_CONCURRENCY, duration, 0.0)?;
                ensure!(run.errors == 0, "{} errors", run.errors);
                Ok(run.connections)
            })?;
            eprintln!(
                "bench: rep {rep}/{reps} {:<12} | {}",
                contender.name,
                cost.cells()
            );
            costs.push(cost);
        }
    }
    drop(setup);
    let (mut md, mut json_rows, mut goals) = (String::new(), Vec::new(), String::new());
    let medians: Vec<(&str, Result<bpf_cost::Cost, String>)> = contenders
        .iter()
        .zip(&costs)
        .map(|(c, costs)| {
            (
                c.name,
                bpf_cost::Cost::median(costs).ok_or_else(|| "no run".to_owned()),
            )
        })
        .collect();
    tcp::report_bpf(&medians, &mut md, &mut json_rows, &mut goals);
    for (contender, costs) in contenders.iter().zip(&costs) {
        let totals: Vec<String> = costs.iter().map(|c| format!("{:.0}", c.total())).collect();
        let _ = writeln!(
            md,
            "
{}: all programs, ns per connection, run by run: {}",
            contender.name,
            totals.join(", ")
        );
        for cost in costs {
            let mut row = cost.json();
            row.insert("contender".into(), contender.name.into());
            row.insert("run".into(), true.into());
            json_rows.push(serde_json::Value::Object(row).to_string());
        }
    }
    report::write_alone(root, "bpf-cost", &header, &md, &json_rows, &goals)
}

fn run(
    root: &Path,
    bin: &Path,
    cgroup_root: &Path,
    quick: bool,
    proxies: Proxies,
    interrupted: &AtomicBool,
) -> Result<()> {
    let name = format!("ts-bench-{}", std::process::id());
    let (reps, duration, warmup) = timing(quick);

    let mut setup = Setup::new(root, bin, cgroup_root, &name, quick, true)?;
    let change_rules = change_rules(root);

    let (contenders, envoy_log) = start_contenders(&mut setup, &proxies)?;
    let proxy_names = proxies::names(&contenders);
    let clients = Clients {
        bin,
        netns: &setup.netns.name,
        cgroup: &setup.cgroup.0,
    };
    let mut skipped = Skipped::of_every(
        proxies.skipped,
        [
            SCENARIO,
            STREAM_SCENARIO,
            http::SCENARIO,
            split::REQUESTS_SCENARIO,
        ],
    );
    let (ready, stream_ready) = tcp::ready(
        clients,
        &contenders,
        &mut setup.procs,
        &envoy_log,
        &mut skipped,
    )?;

    let header = report::machine_header(&setup.netns.name, quick, reps, duration);
    eprintln!("bench: {header}");
    let check_interrupted = || check_interrupted(interrupted);
    // Scenarios 1 and 2.
    let (rows, stream_rows) = tcp::measure(
        clients,
        (&ready, &stream_ready),
        reps,
        (duration, warmup),
        &check_interrupted,
    )?;

    // Scenario 4: split accuracy, through every contender that splits 80/20.
    let (splitters, split_cells) =
        split::tcp_half(clients, &ready, quick, &mut skipped, &check_interrupted)?;

    // Scenario 3 and the HTTP half of 4.
    let http_results = http::run(
        &http::Env {
            bin,
            netns: &setup.netns.name,
            cgroup: &setup.cgroup.0,
            quick,
            envoy_log: &envoy_log,
            pids: http::Pids::of(&setup.procs),
            backends: "http-echo",
        },
        &proxy_names,
        &mut skipped,
        &check_interrupted,
    )?;

    // Scenario 5: a rule change, seen by a client connecting back to back.
    let changes = rule_change::run(
        clients,
        &setup.agent.admin_socket,
        &change_rules,
        quick,
        &check_interrupted,
    )?;

    // Scenario 6 (and 5's apply of 10 000 and 100 000 services): the maps filled in steps.
    let connect_time = ready
        .iter()
        .find(|c| c.name == "connect-time")
        .context("the connect-time path did not answer")?;
    let scale_results = scale::run(
        &scale_env(&setup, clients, connect_time, quick),
        &check_interrupted,
    )?;

    // Stop the proxies, the agent and the backends now.
    drop(setup.procs);

    // Scenario 8: a fleet on etcd, real agents then simulated nodes.
    check_interrupted()?;
    let convergence = convergence::run(
        &convergence::Env {
            root,
            bin,
            cgroup_root,
            name: &name,
            quick,
        },
        &check_interrupted,
    )?;

    Measured {
        tcp: ((&ready, &rows), (&stream_ready, &stream_rows)),
        split: (&splitters, &split_cells),
        http: &http_results,
        changes: &changes,
        scale: &scale_results,
        convergence: &convergence,
    }
    .report(root, &header, &skipped)
}

/// traffic-shift's own paths and the proxies of `proxies`, started in `setup`'s
/// namespace; with Envoy's log file.
fn start_contenders(
    setup: &mut Setup,
    proxies: &Proxies,
) -> Result<(Vec<tcp::Contender>, std::path::PathBuf)> {
    let mut contenders = tcp::own_contenders();
    let envoy_log = setup.tmp.0.join("envoy.log");
    proxies::start(
        proxies,
        &setup.tmp.0,
        &setup.netns,
        &envoy_log,
        &mut setup.procs,
        &mut contenders,
    )?;
    Ok((contenders, envoy_log))
}

/// The contenders that answered in a scenario and their rows.
type Rows<'a, R> = (&'a [&'a tcp::Contender], &'a [R]);

/// Everything the scenarios measured, for the report.
struct Measured<'a> {
    /// Scenarios 1 and 2: the contenders that answered and their rows.
    tcp: (Rows<'a, Vec<tcp::Row>>, Rows<'a, tcp::StreamRow>),
    split: (&'a [split::Splitter], &'a split::Cells),
    http: &'a http::Results,
    changes: &'a [rule_change::Change],
    scale: &'a scale::Results,
    convergence: &'a convergence::Results,
}

impl Measured<'_> {
    /// Prints the tables and goal lines of scenarios 1 to 6 and 8 and writes them to
    /// `bench/results/` (the contenders left out, `skipped`, each get a row).
    fn report(&self, root: &Path, header: &str, skipped: &[Skipped]) -> Result<()> {
        let (splitters, split_cells) = self.split;
        let (table, json, goals) = tcp::report(
            header,
            self.tcp.0,
            self.tcp.1,
            skipped,
            |md, json_rows, goals| {
                split::report(
                    split::SCENARIO,
                    splitters,
                    split_cells,
                    skipped,
                    md,
                    json_rows,
                    goals,
                );
                self.http.report(skipped, md, json_rows, goals);
                rule_change::report(self.changes, md, json_rows, goals);
                self.scale.report(md, json_rows, goals);
                self.convergence.report(md, json_rows, goals);
            },
        );
        report::write(root, &table, &json, &goals)
    }
}
