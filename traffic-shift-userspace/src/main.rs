//! `traffic-shift`: the node agent and its CLI.

use std::{path::PathBuf, process::ExitCode, time::Duration};

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
    Run(Box<agent::AgentOptions>),
    /// Show what the running agent has in force: per route, each
    /// destination's weight, its connections in the last minute and in
    /// total, its observed share and its endpoints' state; then the gateway
    /// endpoints (registered or missing) and the kernel's counters.
    Status {
        /// The agent's status file (its --status-file).
        #[arg(long, value_name = "FILE", default_value = agent::DEFAULT_STATUS_FILE)]
        status_file: PathBuf,
        /// Redraw it live, like `top`, until Ctrl-C; a missing file is
        /// shown as an error and read again.
        #[arg(short, long)]
        watch: bool,
        /// Seconds between redraws with --watch, fractions allowed.
        /// Example: `--interval 0.5`.
        #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_interval, requires = "watch")]
        interval: Duration,
        /// Columns to fit, at least 20. Default: the terminal's width, else
        /// $COLUMNS, else 80. Example: `--width 100`.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(20..))]
        width: Option<u16>,
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
            runtime.block_on(agent::run(*options))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            status_file,
            watch,
            interval,
            width,
        } => {
            let width = width.map(usize::from);
            let mut stdout = std::io::stdout().lock();
            let result = if watch {
                let in_place = std::io::IsTerminal::is_terminal(&stdout);
                let mut terminal = cli::Terminal::new(width)?;
                cli::watch(&status_file, interval, in_place, &mut terminal, &mut stdout)
                    .map_err(cli::StatusError::Write)
            } else {
                let columns = std::env::var("COLUMNS").ok();
                let width = cli::resolve_width(width, cli::terminal_size().0, columns.as_deref());
                cli::status(&status_file, width, cli::now_ms(), &mut stdout)
            };
            match result {
                // `traffic-shift status | head`: the reader left; not an error.
                Err(cli::StatusError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    Ok(ExitCode::SUCCESS)
                }
                // Its message already names the cause: not `{:#}`, which repeats it.
                Err(err) => {
                    eprintln!("error: {err}");
                    Ok(ExitCode::FAILURE)
                }
                Ok(()) => Ok(ExitCode::SUCCESS),
            }
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

/// `--interval`: seconds, 0.1 to 3600.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds, e.g. 1 or 0.5"))?;
    if !(0.1..=3600.0).contains(&secs) {
        return Err(format!("{secs} s is out of range: 0.1 to 3600"));
    }
    Ok(Duration::from_secs_f64(secs))
}
