//! `traffic-shift`: the node agent and its CLI.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use traffic_shift_userspace::{agent, cli, datapath};

const DEFAULT_STATUS_FILE: &str = "/run/traffic-shift/status.json";

#[derive(Parser)]
#[command(
    name = "traffic-shift",
    version,
    about = "Istio traffic shifting in the kernel: weighted TCP routes picked at connect() time"
)]
struct Cli {
    /// Log filter, as RUST_LOG: `info`, `debug`, `traffic_shift_userspace=debug`.
    #[arg(long, global = true, env = "TRAFFIC_SHIFT_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: attach the kernel programs, apply every YAML file in
    /// --rules and follow its changes until Ctrl-C.
    Run {
        /// Directory of Istio YAML files (*.yaml, *.yml; not recursive). Example: `rules/tcp-echo`.
        #[arg(long, value_name = "DIR")]
        rules: PathBuf,
        /// cgroup v2 directory whose processes get the routing (and all its
        /// descendants). Default: the cgroup v2 root, i.e. every process on the node.
        /// Example: `/sys/fs/cgroup/unified/my-app`.
        #[arg(long, value_name = "PATH")]
        cgroup: Option<PathBuf>,
        /// Where the maps are pinned (inside a bpffs mount); one agent per directory.
        #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/traffic-shift")]
        bpffs: PathBuf,
        /// The network namespace whose incoming connections the gateway
        /// (sk_lookup) routes, as a file. Default: the agent's own.
        /// Example: `/var/run/netns/node`.
        #[arg(long, value_name = "PATH", default_value = "/proc/self/ns/net")]
        netns: PathBuf,
        /// Where the agent keeps its status for `traffic-shift status`.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_STATUS_FILE)]
        status_file: PathBuf,
        /// Append one JSON line per file applied or refused. Example: `/run/traffic-shift/events.jsonl`.
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
    },
    /// Show what the running agent has in force: routes and their splits,
    /// gateway endpoints (registered or missing) and the kernel's counters.
    Status {
        /// The agent's status file (its --status-file).
        #[arg(long, value_name = "FILE", default_value = DEFAULT_STATUS_FILE)]
        status_file: PathBuf,
    },
    /// Check rule files offline, exactly as the agent would, and print the
    /// routes they make. Exit code 1 if any file is refused.
    Validate {
        /// Files or directories (their *.yaml files) to check together. Example: `-f rules/tcp-echo`.
        #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            rules,
            cgroup,
            bpffs,
            netns,
            status_file,
            events,
        } => {
            let cgroup = match cgroup {
                Some(cgroup) => cgroup,
                None => datapath::default_cgroup()
                    .context("no cgroup v2 mount found; mount one or pass --cgroup")?,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(agent::run(agent::AgentOptions {
                rules,
                cgroup,
                bpffs,
                netns,
                status_file,
                events,
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { status_file } => {
            let mut stdout = std::io::stdout().lock();
            match cli::status(&status_file, &mut stdout) {
                // `traffic-shift status | head`: the reader left; not an error.
                Err(cli::StatusError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                result => result?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { paths } => {
            let mut stdout = std::io::stdout().lock();
            Ok(if cli::validate(&paths, &mut stdout)? {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
