//! `traffic-shift`: the node agent and its CLI.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use traffic_shift_agent::{admin, agent, cli, ctl, fleet, status};

#[derive(Parser)]
#[command(
    name = "traffic-shift",
    version,
    about = "Istio traffic shifting in the kernel: weighted TCP routes picked at connect() time"
)]
struct Cli {
    /// Log filter, as RUST_LOG: `info`, `debug`, `traffic_shift_datapath=debug`.
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
        /// One route in full: its key (`default/tcp-echo/tcp[0]/port 9000
        /// ipv4`), a VirtualService (`default/tcp-echo`: every rule of it)
        /// or a service (`tcp-echo.local`, `tcp-echo.local:9000`).
        #[arg(value_name = "ROUTE")]
        route: Option<String>,
        /// Every route in full: without it, over 30 routes show a line each.
        #[arg(long, conflicts_with = "route")]
        full: bool,
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
        /// The whole fleet instead of this node: per route, the split each
        /// node observed and its sum, from the store (--store or
        /// TRAFFIC_SHIFT_STORE).
        #[arg(long)]
        fleet: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove everything the agent pinned (maps left by an agent that was
    /// killed). Refused while an agent runs on that directory.
    Unload {
        /// The agent's pin directory (its --bpffs).
        #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/traffic-shift")]
        bpffs: PathBuf,
    },
    /// Print the pinned BPF maps decoded, as `cilium bpf lb list` does:
    /// addresses dotted, ports in host order, route ids and counter slots
    /// with their names (from the agent's status file, when it is there),
    /// per-CPU counters summed. Reads the pins: works with or without a
    /// running agent. Example: `traffic-shift maps services`.
    Maps {
        /// Only this map: TS_SERVICES, TS_SVC_PREFIXES, TS_ROUTES, TS_CURSORS, TS_EVENTS,
        /// TS_GATEWAYS, TS_SOCKETS, TS_STATS, TS_GATEWAY_FLOWS, TS_CONNS,
        /// TS_PROXY_FLOWS, TS_XDP_GATEWAYS, TS_XDP_FLOWS, TS_XDP_STATS (any
        /// case, `TS_` optional). Default: all of them.
        #[arg(value_name = "NAME")]
        name: Option<String>,
        /// The agent's pin directory (its --bpffs).
        #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/traffic-shift")]
        bpffs: PathBuf,
        /// The agent's status file (its --status-file), for the names of ids.
        #[arg(long, value_name = "FILE", default_value = agent::DEFAULT_STATUS_FILE)]
        status_file: PathBuf,
        /// The network namespace whose routed connections TS_CONNS lists
        /// (found through their sockets). Example: `--netns /var/run/netns/blue`.
        #[arg(long, value_name = "FILE", default_value = "/proc/self/ns/net")]
        netns: PathBuf,
    },
    /// Check rule files offline, exactly as the agent would, and print the
    /// routes they make. Exit code 1 if any file is refused.
    Validate {
        /// Files or directories (their *.yaml files) to check together. Example: `-f rules/tcp-echo`.
        #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
        /// The Gateway API `gatewayClassName` served, as `run
        /// --gateway-class`: Gateways of other classes are ignored.
        #[arg(long, value_name = "NAME", default_value = traffic_shift_config::SERVED_GATEWAY_CLASS)]
        gateway_class: String,
        /// Check the rules as the agent with `--namespace NAMESPACE` takes
        /// them: the VirtualServices and DestinationRules a proxy in that
        /// namespace sees (their `exportTo`). Example: `--namespace bookinfo`.
        #[arg(long, value_name = "NAMESPACE")]
        namespace: Option<String>,
    },
    #[command(flatten)]
    Agent(AgentCommand),
    /// The convergence bench's tools (`cargo xtask bench`, scenario 8).
    #[command(subcommand, hide = true)]
    Fleet(FleetCommand),
}

/// `fleet simulate` and `fleet converge`: the convergence bench's two sides.
#[derive(Subcommand)]
enum FleetCommand {
    /// Run N simulated nodes in this process, each the agent's own store
    /// follower, compile step (no datapath) and status reporter, until
    /// SIGTERM. Example: `fleet simulate --store etcd://127.0.0.1:2379
    /// --nodes 250 --name-prefix sim-0-`.
    Simulate {
        /// How many nodes.
        #[arg(long, value_name = "N")]
        nodes: usize,
        /// Node `i` is named PREFIXi.
        #[arg(long, value_name = "PREFIX", default_value = "sim-")]
        name_prefix: String,
        /// One etcd client per node (as real agents have) instead of one
        /// shared by the process's nodes.
        #[arg(long)]
        client_per_node: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Once N nodes report, commit the changes of the -f files in turn,
    /// each timed from the commit's return until every node reports it in
    /// force; prints JSON. Example: `fleet converge --store URL --nodes
    /// 1000 --changes 20 -f vs-a.yaml -f vs-b.yaml`.
    Converge {
        /// The changes, applied in turn (change k applies the k-th modulo their number).
        #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
        /// How many changes.
        #[arg(long, value_name = "K", default_value = "20")]
        changes: usize,
        /// How many nodes must have a change in force.
        #[arg(long, value_name = "N")]
        nodes: usize,
        /// How long one change (and the nodes' first report) may take. Example: `--timeout 60s`.
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = traffic_shift_agent::health::parse_duration)]
        timeout: Duration,
        /// The idle window before the changes, when status writes are counted. Example: `--idle 5s`.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = traffic_shift_agent::health::parse_duration)]
        idle: Duration,
        /// The pause between two changes. Example: `--pause 200ms`.
        #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = traffic_shift_agent::health::parse_duration)]
        pause: Duration,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// The commands that talk to the running agent over its admin socket.
#[derive(Subcommand)]
enum AgentCommand {
    /// Create or update the resources of rule files in the running agent,
    /// all or nothing: the agent checks the whole resulting rule set and
    /// puts it in force in one update, or refuses it with every error.
    /// Prints `virtualservice/tcp-echo created|configured|unchanged`. Exit
    /// code 1 if refused, 3 if the agent is not running.
    Apply {
        /// Files, directories (their *.yaml files) or `-` (standard input).
        /// Example: `-f rules/tcp-echo/examples/vs-20-v2.yaml`.
        #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
        /// Check with the agent (everything but the kernel update) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --store: return once every live node has the new revision
        /// in force; exit code 1 naming the nodes that refused it or lag.
        #[arg(long, requires = "store")]
        wait: bool,
        /// How long --wait waits. Example: `--timeout 30s`.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = traffic_shift_agent::health::parse_duration, requires = "wait")]
        timeout: Duration,
        #[command(flatten)]
        socket: AdminSocket,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove resources applied with `apply`, all or nothing, named by the
    /// kind, metadata.name and metadata.namespace of the files' documents.
    /// Refused if the rest of the rules need one of them.
    Delete {
        /// Files, directories (their *.yaml files) or `-`. Example: `-f vs.yaml`.
        #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
        paths: Vec<PathBuf>,
        /// Skip resources that are not applied instead of refusing.
        #[arg(long)]
        ignore_not_found: bool,
        /// Check with the agent and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        socket: AdminSocket,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the resources in force (applied, and from the rules directory),
    /// or with --store those of the store, or its nodes (`get nodes`).
    /// Example: `get vs`, `get virtualservice tcp-echo -o yaml`, `get dr -A -o wide`.
    Get {
        /// virtualservice (vs), destinationrule (dr), gateway (gw),
        /// serviceentry (se), workloadentry (we), rollout (ro), or the
        /// Gateway API's httproute, tcproute and
        /// gateway.gateway.networking.k8s.io (gtw), with their status;
        /// plurals too; with --store also `nodes`.
        #[arg(value_name = "KIND")]
        kind: String,
        /// Only this resource (exit code 1 if there is none).
        #[arg(value_name = "NAME")]
        name: Option<String>,
        /// Output format: a table (default), `wide` (with each resource's
        /// source: `apply` or its rules file; for `get nodes`, each node's
        /// labels), `yaml` (takes `apply -f -`), `json`, `name`.
        #[arg(short, long, value_name = "FORMAT")]
        output: Option<ctl::Output>,
        /// The namespace to list.
        #[arg(short, long, value_name = "NAMESPACE", default_value = "default")]
        namespace: String,
        /// List every namespace.
        #[arg(short = 'A', long, conflicts_with = "namespace")]
        all_namespaces: bool,
        #[command(flatten)]
        socket: AdminSocket,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Follow and drive a Rollout of the running agent: `rollout status
    /// NAME [--watch]`, `rollout promote|pause|resume|abort|retry NAME`.
    /// NAME is `NAMESPACE/NAME`, or a name one namespace has.
    #[command(subcommand)]
    Rollout(RolloutAction),
    /// Print the client's version and the running agent's (exit code 3 if
    /// it is not running).
    Version {
        /// Only the client's.
        #[arg(long)]
        client: bool,
        #[command(flatten)]
        socket: AdminSocket,
    },
}

/// `traffic-shift rollout ...`.
#[derive(Subcommand)]
enum RolloutAction {
    /// The rollout's phase, steps, weight, pause, each metric's last value
    /// against its threshold and the analysis history.
    Status {
        #[command(flatten)]
        target: RolloutTarget,
        /// Redraw it live until Ctrl-C.
        #[arg(short, long)]
        watch: bool,
        /// Seconds between redraws with --watch. Example: `--interval 0.5`.
        #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_interval, requires = "watch")]
        interval: Duration,
    },
    /// Go past the current step: a `pause: {}` step, a timed pause or an
    /// analysis.
    Promote(RolloutTarget),
    /// Stop where it is (the step's clock stands still) until `resume`.
    Pause(RolloutTarget),
    /// Go on after `pause`; after a hand edit of the route's weights, take
    /// the route back at the current step.
    Resume(RolloutTarget),
    /// All traffic to the stable subset at once (phase Degraded).
    Abort(RolloutTarget),
    /// After a rollback or an abort: start over from the first step.
    Retry(RolloutTarget),
}

#[derive(clap::Args)]
struct RolloutTarget {
    /// The rollout: `NAMESPACE/NAME`, or a name one namespace has.
    #[arg(value_name = "NAME")]
    name: String,
    #[command(flatten)]
    socket: AdminSocket,
}

/// `traffic-shift rollout ...` against the agent.
fn rollout_command(action: RolloutAction) -> anyhow::Result<ExitCode> {
    use traffic_shift_agent::rollout::{Command as Do, ctl as rollout};
    let (stdout, stderr) = (&mut std::io::stdout().lock(), &mut std::io::stderr().lock());
    let (target, action) = match action {
        RolloutAction::Status {
            target,
            watch,
            interval,
        } => {
            let code = if watch {
                let in_place = std::io::IsTerminal::is_terminal(&std::io::stdout());
                let mut terminal = cli::Terminal::new(None)?;
                rollout::status(
                    &target.socket.admin_socket,
                    &target.name,
                    Some((interval, in_place, &mut terminal)),
                    stdout,
                    stderr,
                )
            } else {
                rollout::status(
                    &target.socket.admin_socket,
                    &target.name,
                    None,
                    stdout,
                    stderr,
                )
            };
            return match code {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
                code => Ok(ExitCode::from(code?)),
            };
        }
        RolloutAction::Promote(target) => (target, Do::Promote),
        RolloutAction::Pause(target) => (target, Do::Pause),
        RolloutAction::Resume(target) => (target, Do::Resume),
        RolloutAction::Abort(target) => (target, Do::Abort),
        RolloutAction::Retry(target) => (target, Do::Retry),
    };
    let code = rollout::command(
        &target.socket.admin_socket,
        &target.name,
        action,
        stdout,
        stderr,
    )?;
    Ok(ExitCode::from(code))
}

/// Where the agent's admin socket is.
#[derive(clap::Args)]
struct AdminSocket {
    /// The agent's admin socket (its --admin-socket).
    #[arg(long, value_name = "PATH", env = "TRAFFIC_SHIFT_ADMIN_SOCKET", default_value = admin::DEFAULT_SOCKET)]
    admin_socket: PathBuf,
}

/// The fleet's store, for `apply`, `delete` and `get` without an agent.
#[derive(clap::Args)]
struct StoreArgs {
    /// Read and write the fleet's etcd directly instead of an agent's
    /// admin socket. Example: `etcd://10.0.0.1:2379,10.0.0.2:2379`.
    #[arg(
        long,
        value_name = "etcd://HOST:PORT[,...]",
        env = "TRAFFIC_SHIFT_STORE"
    )]
    store: Option<traffic_shift_store::StoreUrl>,
    /// The prefix of the fleet's keys in etcd.
    #[arg(long, value_name = "PREFIX", default_value = traffic_shift_store::DEFAULT_PREFIX)]
    store_prefix: String,
    #[command(flatten)]
    store_tls: agent::StoreTlsArgs,
}

impl AgentCommand {
    /// `--store`'s target, if given.
    fn store_target(&self) -> Option<fleet::ctl::Target> {
        match self {
            Self::Apply { store, .. } | Self::Delete { store, .. } | Self::Get { store, .. } => {
                store.target()
            }
            Self::Version { .. } | Self::Rollout(_) => None,
        }
    }
}

impl StoreArgs {
    fn target(&self) -> Option<fleet::ctl::Target> {
        self.store.clone().map(|url| fleet::ctl::Target {
            url,
            prefix: self.store_prefix.clone(),
            tls: self.store_tls.files(),
        })
    }
}

/// `status --fleet [--watch]`: the store's nodes, once or redrawn every
/// `watch` interval.
fn fleet_status(
    store: &StoreArgs,
    watch: Option<Duration>,
    width: Option<u16>,
) -> anyhow::Result<ExitCode> {
    let Some(target) = store.target() else {
        anyhow::bail!(
            "status --fleet reads the fleet's store: give --store etcd://HOST:PORT (or set TRAFFIC_SHIFT_STORE)"
        );
    };
    if let Some(interval) = watch {
        let mut stdout = std::io::stdout().lock();
        let in_place = std::io::IsTerminal::is_terminal(&stdout);
        let mut terminal = cli::Terminal::new(width.map(usize::from))?;
        return match fleet::ctl::watch(&target, interval, in_place, &mut terminal, &mut stdout) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
            result => Ok(ExitCode::from(result?)),
        };
    }
    block_on(async {
        fleet::ctl::status(
            &target,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )
        .await
    })
}

/// Runs a store command on a small runtime of its own.
fn block_on<F: std::future::Future<Output = std::io::Result<u8>>>(
    future: F,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(ExitCode::from(runtime.block_on(future)?))
}

/// The agent's allocator: jemalloc. An `apply` of 100 000 services is
/// allocation-bound: with glibc's malloc, a third of the agent's time was
/// in it (`_int_malloc`, `malloc_consolidate`, `unlink_chunk`), and
/// jemalloc took a quarter less CPU for the same apply, measured by hand
/// side by side. What the agent frees goes back to the kernel within a
/// second (`dirty_decay_ms`, by jemalloc's background thread: without it
/// pages are returned only when the agent next allocates, and an idle
/// agent kept a scrape's freed pages), at once after an event
/// (`agent::release_freed_memory`), and there are four arenas (jemalloc's
/// default is four per CPU; the agent's busy threads are few).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (`MALLOC_CONF` in the
/// environment still overrides them).
#[unsafe(export_name = "_rjem_malloc_conf")]
#[used]
static MALLOC_CONF: &[u8; 70] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:4\0";

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
            traffic_shift_config::set_gateway_class(&options.gateway_class);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(agent::run(*options))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            fleet: true,
            store,
            watch,
            interval,
            width,
            ..
        } => fleet_status(&store, watch.then_some(interval), width),
        Command::Status {
            route,
            full,
            status_file,
            watch,
            interval,
            width,
            ..
        } => node_status(
            &status_file,
            &status::View {
                route,
                full,
                busiest: None,
            },
            watch.then_some(interval),
            width,
        ),
        Command::Unload { bpffs } => {
            let removed = traffic_shift_datapath::unload(&bpffs)?;
            if removed.is_empty() {
                println!("nothing pinned under {}", bpffs.display());
            }
            for path in removed {
                println!("removed {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Maps {
            name,
            bpffs,
            status_file,
            netns,
        } => {
            let mut stdout = std::io::stdout().lock();
            match cli::maps(&bpffs, name.as_deref(), &status_file, &netns, &mut stdout) {
                Ok(note) => {
                    if let Some(note) = note {
                        eprintln!("note: {note}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(cli::MapsError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Validate {
            paths,
            gateway_class,
            namespace,
        } => {
            traffic_shift_config::set_gateway_class(&gateway_class);
            let mut stdout = std::io::stdout().lock();
            Ok(
                if cli::validate(&paths, namespace.as_deref(), &mut stdout)? {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                },
            )
        }
        Command::Agent(command) => agent_command(command),
        Command::Fleet(command) => fleet_command(command),
    }
}

/// `fleet simulate` and `fleet converge`.
fn fleet_command(command: FleetCommand) -> anyhow::Result<ExitCode> {
    let (FleetCommand::Simulate { store, .. } | FleetCommand::Converge { store, .. }) = &command;
    let target = store
        .target()
        .ok_or_else(|| anyhow::anyhow!("give the store with --store etcd://HOST:PORT[,...]"))?;
    match command {
        FleetCommand::Simulate {
            nodes,
            name_prefix,
            client_per_node,
            ..
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(agent::simulate::simulate(agent::simulate::Simulation {
                url: target.url,
                prefix: target.prefix,
                tls: target.tls,
                nodes,
                name_prefix,
                client_per_node,
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        FleetCommand::Converge {
            paths,
            changes,
            nodes,
            timeout,
            idle,
            pause,
            ..
        } => block_on(async move {
            fleet::converge::converge(
                &fleet::converge::Convergence {
                    target,
                    files: paths,
                    changes,
                    nodes,
                    timeout,
                    idle,
                    pause,
                },
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            )
            .await
        }),
    }
}

/// The commands that talk to the agent over its admin socket (or, given
/// `--store`, to the store).
fn agent_command(command: AgentCommand) -> anyhow::Result<ExitCode> {
    if let Some(target) = command.store_target() {
        return store_command(command, target);
    }
    match command {
        AgentCommand::Apply {
            paths,
            dry_run,
            socket,
            ..
        } => {
            let request = |files| admin::Request::Apply { files, dry_run };
            change(&socket.admin_socket, request, &paths)
        }
        AgentCommand::Delete {
            paths,
            ignore_not_found,
            dry_run,
            socket,
            ..
        } => {
            let request = |files| admin::Request::Delete {
                files,
                ignore_not_found,
                dry_run,
            };
            change(&socket.admin_socket, request, &paths)
        }
        AgentCommand::Get {
            kind,
            name,
            output,
            namespace,
            all_namespaces,
            socket,
            ..
        } => {
            let selector = ctl::Selector {
                kind,
                name,
                namespace: (!all_namespaces).then_some(namespace),
            };
            let code = ctl::get(
                &socket.admin_socket,
                &selector,
                output.unwrap_or_default(),
                cli::now_ms(),
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            )?;
            Ok(ExitCode::from(code))
        }
        AgentCommand::Rollout(action) => rollout_command(action),
        AgentCommand::Version { client, socket } => {
            let code = ctl::version(
                &socket.admin_socket,
                client,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            )?;
            Ok(ExitCode::from(code))
        }
    }
}

/// `apply`, `delete` and `get` with `--store`: on the store, no agent.
fn store_command(command: AgentCommand, target: fleet::ctl::Target) -> anyhow::Result<ExitCode> {
    match command {
        AgentCommand::Apply {
            paths,
            dry_run,
            wait,
            timeout,
            ..
        } => block_on(async move {
            // Boxed: the check, the commit and the wait make a large future.
            Box::pin(fleet::ctl::change(
                &target,
                fleet::ctl::Op::Apply { dry_run },
                &paths,
                wait.then_some(timeout),
                &mut std::io::stdin().lock(),
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            ))
            .await
        }),
        AgentCommand::Delete {
            paths,
            ignore_not_found,
            dry_run,
            ..
        } => block_on(async move {
            Box::pin(fleet::ctl::change(
                &target,
                fleet::ctl::Op::Delete {
                    ignore_not_found,
                    dry_run,
                },
                &paths,
                None,
                &mut std::io::stdin().lock(),
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            ))
            .await
        }),
        AgentCommand::Get {
            kind,
            name,
            output,
            namespace,
            all_namespaces,
            ..
        } => block_on(async move {
            if matches!(kind.to_ascii_lowercase().as_str(), "node" | "nodes") {
                return fleet::ctl::nodes(
                    &target,
                    output == Some(ctl::Output::Wide),
                    &mut std::io::stdout().lock(),
                    &mut std::io::stderr().lock(),
                )
                .await;
            }
            let selector = ctl::Selector {
                kind,
                name,
                namespace: (!all_namespaces).then_some(namespace),
            };
            fleet::ctl::get(
                &target,
                &selector,
                output.unwrap_or_default(),
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            )
            .await
        }),
        AgentCommand::Version { .. } | AgentCommand::Rollout(_) => {
            unreachable!("version and rollout take no --store")
        }
    }
}

/// `apply` / `delete`.
fn change(
    socket: &std::path::Path,
    request: impl FnOnce(Vec<admin::FileText>) -> admin::Request,
    paths: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let code = ctl::change(
        socket,
        request,
        paths,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )?;
    Ok(ExitCode::from(code))
}

/// A `--interval` that does not parse.
#[derive(Debug, thiserror::Error)]
enum IntervalError {
    #[error("{0:?} is not a number of seconds, e.g. 1 or 0.5")]
    NotANumber(String),
    #[error("{0} s is out of range: 0.1 to 3600")]
    OutOfRange(f64),
}

/// `--interval`: seconds, 0.1 to 3600.
fn parse_interval(text: &str) -> Result<Duration, IntervalError> {
    let secs: f64 = text
        .parse()
        .map_err(|_| IntervalError::NotANumber(text.to_owned()))?;
    if !(0.1..=3600.0).contains(&secs) {
        return Err(IntervalError::OutOfRange(secs));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `status` of this node: its status file, once or `watch`ed.
fn node_status(
    status_file: &std::path::Path,
    view: &status::View,
    watch: Option<Duration>,
    width: Option<u16>,
) -> anyhow::Result<ExitCode> {
    let width = width.map(usize::from);
    let mut stdout = std::io::stdout().lock();
    let result = if let Some(interval) = watch {
        let in_place = std::io::IsTerminal::is_terminal(&stdout);
        let mut terminal = cli::Terminal::new(width)?;
        cli::watch(
            status_file,
            view,
            interval,
            in_place,
            &mut terminal,
            &mut stdout,
        )
        .map_err(cli::StatusError::Write)
    } else {
        let columns = std::env::var("COLUMNS").ok();
        let width = cli::resolve_width(width, cli::terminal_size().0, columns.as_deref());
        // One write for many lines (100 000 routes: a line each).
        let mut out = std::io::BufWriter::new(&mut stdout);
        cli::status(status_file, view, width, cli::now_ms(), &mut out)
            .and_then(|()| std::io::Write::flush(&mut out).map_err(cli::StatusError::Write))
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
