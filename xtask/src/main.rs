//! `cargo xtask <cmd>`: orchestration for traffic-shift (setup, build, run, test).
//!
//! It never compiles eBPF itself: `traffic-shift-datapath/build.rs` does that
//! with aya-build. Every command that changes something is printed as
//! `+ cmd args` before it runs.
#![forbid(unsafe_code)]

mod bench;
mod clean;
mod cmd;
mod demo;
mod fuzz;
mod setup;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, ensure};
use clap::{Parser, Subcommand};

use crate::setup::Need;

#[derive(Debug, Parser)]
#[command(about = "Build, run and test traffic-shift")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what is missing (nightly rust-src, bpf-linker 0.10.4, bpftool, ip, and
    /// Debian's prometheus for the metrics tests), mount bpffs and find the cgroup v2
    /// root. Idempotent.
    Setup,
    /// Setup, then build the agent, tcp-echo and the test helpers.
    Build {
        /// Build with the release profile (`target/release`).
        #[arg(long)]
        release: bool,
    },
    /// Build, start the demo backends (tcp-echo, http-echo) and run the agent in the foreground.
    /// Example: `cargo xtask run --release --rules rules/tcp-echo`.
    Run(demo::RunArgs),
    /// Setup, lint gates (fmt, clippy), build, then every test (needs root).
    /// Example: `cargo xtask test -- connect -- --nocapture`.
    Test {
        /// Passed to `cargo test` after `--workspace --exclude traffic-shift-ebpf`:
        /// a test name filter, then `-- <args>` for the test binaries.
        #[arg(last = true)]
        cargo_test_args: Vec<OsString>,
    },
    /// Benchmark new-connection rate and latency, and one long stream's throughput (needs
    /// root): the backend directly vs. the connect-time rewrite, the sk_lookup gateway,
    /// haproxy, nginx and Envoy, in a netns of its own. Results go to
    /// `bench/results/latest.{md,json}`.
    Bench {
        /// One repetition of 1 s per cell instead of three of 3 s (under a minute once
        /// built and installed).
        #[arg(long)]
        quick: bool,
        /// Scenario 7 only: the XDP gateway (endpoints on other hosts) against Linux
        /// forwarding with iptables DNAT, in a topology of four namespaces; results in
        /// `bench/results/xdp-latest.md`.
        #[arg(long)]
        xdp: bool,
        /// One scenario alone, printed and written to `bench/results/SCENARIO-latest.md`
        /// (and `.json`), `latest.md` left to full runs: `convergence` (scenario 8: a
        /// change through etcd to 3 real agents, then 100 and 1 000 simulated nodes) or
        /// `scale` (scenario 6: the agent with 1 000 to 100 000 more services), `tcp`
        /// (scenarios 1 and 2 on traffic-shift's paths) or `bpf-cost` (the kernel's
        /// time per connection of each program, the median of 5 runs per path).
        #[arg(long, value_name = "SCENARIO", conflicts_with = "xdp")]
        only: Option<bench::Only>,
    },
    /// Fuzz the config parsing (and every other target in `fuzz/fuzz_targets/`)
    /// with cargo-fuzz and libFuzzer on nightly, a bounded time per target;
    /// installs cargo-fuzz if missing. A crash fails, naming the saved input.
    /// Example: `cargo xtask fuzz --time 60 rules-file`.
    Fuzz(fuzz::FuzzArgs),
    /// Remove leftovers of killed test runs: netns, cgroups and bpffs dirs named `ts-test-*`.
    CleanTestState,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}`: the context chain on one line, no backtrace even with RUST_BACKTRACE.
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let root = workspace_root();
    match cli.cmd {
        Cmd::Setup => setup::setup(Need::Test).map(drop),
        Cmd::Build { release } => {
            setup::setup(Need::Build)?;
            build(&root, release)
        }
        Cmd::Run(args) => {
            let rules = demo::rules_dir(&root, &args)?;
            setup::setup(Need::Runtime)?;
            build(&root, args.release)?;
            demo::run(&root, &args, &rules)
        }
        Cmd::Test { cargo_test_args } => test(&root, &cargo_test_args),
        Cmd::Bench { quick, xdp, only } => bench::bench(&root, quick, xdp, only),
        Cmd::Fuzz(args) => {
            setup::setup(Need::Build)?;
            fuzz::fuzz(&root, &args)
        }
        Cmd::CleanTestState => clean::clean_test_state(),
    }
}

/// The workspace root: the parent of this crate's manifest dir.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// `target/<profile>`, honouring `CARGO_TARGET_DIR`.
fn profile_dir(root: &Path, release: bool) -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |d| root.join(d));
    target.join(if release { "release" } else { "debug" })
}

/// `cargo` in the workspace root: the one that runs us (same toolchain) if known.
fn cargo(root: &Path) -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root);
    c
}

/// Builds both agent binaries and the test crate's helper binaries, if it has any
/// (`--bins` on a crate without binaries is a no-op).
fn build(root: &Path, release: bool) -> Result<()> {
    build_with(root, release, &[])
}

/// `build`, the agent with `features` (the tests' agent has `failpoints`).
fn build_with(root: &Path, release: bool, features: &[&str]) -> Result<()> {
    let profile: &[&str] = if release { &["--release"] } else { &[] };
    let mut agent = cargo(root);
    agent
        .args(["build", "-p", "traffic-shift-agent"])
        .args(profile);
    if !features.is_empty() {
        agent.args(["--features", &features.join(",")]);
    }
    cmd::run(&mut agent)?;
    cmd::run(
        cargo(root)
            .args(["build", "-p", "traffic-shift-tests", "--bins"])
            .args(profile),
    )
}

/// Build B of the upgrade test (`tests/tests/restart.rs`): the agent built
/// again with the `ebpf-build-b` feature (other kernel bytecode, the same
/// maps), copied to `target/debug/build-b/traffic-shift`. The feature gives
/// its crate and build script their own artifacts, so A and B stay compiled
/// side by side: B costs one more compile of the agent crate when it changed
/// and, once per target dir, one more eBPF build (about 3 min on 2 cores).
fn upgrade_build_b(root: &Path) -> Result<PathBuf> {
    cmd::run(cargo(root).args([
        "build",
        "-p",
        "traffic-shift-agent",
        "--bin",
        "traffic-shift",
        "--features",
        "ebpf-build-b",
    ]))?;
    let dir = profile_dir(root, false);
    let b = dir.join("build-b");
    std::fs::create_dir_all(&b).with_context(|| format!("mkdir {}", b.display()))?;
    let b = b.join("traffic-shift");
    std::fs::copy(dir.join("traffic-shift"), &b)
        .with_context(|| format!("copy build B to {}", b.display()))?;
    Ok(b)
}

fn test(root: &Path, cargo_test_args: &[OsString]) -> Result<()> {
    ensure!(
        setup::is_root(),
        "xtask test must run as root: the tests attach eBPF programs (cgroup connect4/6) and create \
         cgroups and network namespaces. Run e.g. `sudo -E env PATH=\"$PATH\" cargo xtask test`."
    );
    setup::setup(Need::Test)?;
    step("lint gate rustfmt", "run `cargo fmt --all`", || {
        cmd::run(cargo(root).args(["fmt", "--all", "--", "--check"]))
    })?;
    // `--workspace` would also build the eBPF crate for the host, which cannot work
    // (it is `no_std` for bpfel; aya-build builds it). Default members leave it out too.
    step("lint gate clippy", "fix the warnings above", || {
        cmd::run(
            cargo(root)
                .args(["clippy", "--workspace", "--exclude", "traffic-shift-ebpf"])
                .args(["--all-targets", "--", "-D", "warnings"]),
        )
    })?;
    let mut build_b = PathBuf::new();
    step("build", "see the compiler errors above", || {
        // B first: building A after it puts A back at target/debug/traffic-shift.
        // A has the failpoints (`run --failpoint`) the all-or-nothing tests use.
        build_b = upgrade_build_b(root)?;
        build_with(root, false, &["failpoints"])
    })?;
    let bin = profile_dir(root, false);
    ensure!(
        std::fs::read(bin.join("traffic-shift"))? != std::fs::read(&build_b)?,
        "build B of the upgrade test ({}) is the same binary as build A",
        build_b.display()
    );
    step("tests", "see the failing tests above", || {
        cmd::run(
            cargo(root)
                .args(["test", "--workspace", "--exclude", "traffic-shift-ebpf"])
                .args(cargo_test_args)
                .env("TRAFFIC_SHIFT_BIN", bin.join("traffic-shift"))
                .env("TRAFFIC_SHIFT_BIN_B", &build_b)
                .env("TCP_ECHO_BIN", bin.join("tcp-echo"))
                .env("HTTP_ECHO_BIN", bin.join("http-echo")),
        )
    })?;
    println!("xtask test: all steps passed");
    Ok(())
}

/// Runs one named step of `xtask test`, saying which one failed.
fn step(name: &str, fix: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("xtask test: {name}");
    f().with_context(|| format!("xtask test: {name} failed ({fix})"))
}
