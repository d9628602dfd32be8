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
//! | `tcp` | scenarios 1 and 2: contenders, smoke checks, cells, their table and goals |
//! | `http` | scenario 3 and the HTTP half of 4 |
//! | `split` | scenario 4: split accuracy (the TCP half, the measuring and report) |
//! | `rule_change` | scenario 5 |
//! | `scale` | scenario 6 (and 5's apply of 10 000 and 100 000 services; alone with `--only scale`) |
//! | `convergence` | scenario 8 (alone with `--only convergence`) |
//! | `report` | what the reports share: left-out rows, JSON strings, median, header |
//! | `xdp` | scenario 7 (`--xdp`), with the check of its `xdp` row (`xdp/check.rs`) |

use std::{
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
mod guards;
mod http;
mod proxies;
mod report;
mod rule_change;
mod scale;
mod split;
mod tcp;
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
    // Scenario 6 alone needs no proxies.
    let proxies = match only {
        Some(Only::Scale) => None,
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
    let result = match proxies {
        Some(proxies) => run(root, &bin, &cgroup_root, quick, proxies, &interrupted),
        None => scale_alone(root, &bin, &cgroup_root, quick, &interrupted),
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
    fn new(root: &Path, bin: &Path, cgroup_root: &Path, name: &str, quick: bool) -> Result<Self> {
        let tmp = TempDir::new(std::env::temp_dir().join(name))?;
        let netns = Netns::new(name)?;
        let cgroup = CgroupDir::new(cgroup_root.join(name))?;
        let bpffs = BpffsDir(PathBuf::from(format!("/sys/fs/bpf/{name}")));
        let mut procs = Processes(Vec::new());
        let agent = agent::setup(root, bin, &tmp.0, (&netns, &cgroup.0, &bpffs.0), &mut procs)?;
        rule_change::put_in_force(bin, &agent.admin_socket, &change_rules(root))?;
        let largest = scale::levels(quick).iter().copied().max().unwrap_or(0);
        let scale_files = scale::generate(&tmp.0.join("scale"), largest)?;
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
    let mut setup = Setup::new(root, bin, cgroup_root, &name, quick)?;
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

    let mut setup = Setup::new(root, bin, cgroup_root, &name, quick)?;
    let change_rules = change_rules(root);

    let mut contenders = tcp::own_contenders();
    let envoy_log = setup.tmp.0.join("envoy.log");
    proxies::start(
        &proxies,
        &setup.tmp.0,
        &setup.netns,
        &envoy_log,
        &mut setup.procs,
        &mut contenders,
    )?;
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
