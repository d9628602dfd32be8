//! `traffic-shift`: the node agent and its CLI.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use traffic_shift_userspace::{agent, cli};

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
    Run(agent::AgentOptions),
    /// Show what the running agent has in force: routes and their splits,
    /// gateway endpoints (registered or missing) and the kernel's counters.
    Status {
        /// The agent's status file (its --status-file).
        #[arg(long, value_name = "FILE", default_value = agent::DEFAULT_STATUS_FILE)]
        status_file: PathBuf,
    },
    /// Remove everything the agent pinned (maps left by an agent that was
    /// killed). Refused while an agent runs on that directory.
    Unload {
        /// The agent's pin directory (its --bpffs).
        #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/traffic-shift")]
        bpffs: PathBuf,
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
        Command::Run(options) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(agent::run(options))?;
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
        Command::Unload { bpffs } => {
            let removed = traffic_shift_userspace::datapath::unload(&bpffs)?;
            if removed.is_empty() {
                println!("nothing pinned under {}", bpffs.display());
            }
            for path in removed {
                println!("removed {}", path.display());
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
