//! `cargo xtask fuzz`: bounded fuzzing of every target in `fuzz/fuzz_targets/`
//! with cargo-fuzz (libFuzzer, nightly, address sanitizer), each for a fixed
//! time. A crash (panic, sanitizer report, out-of-memory, an input slower than
//! the timeout) fails the command naming the input libFuzzer saved.
//!
//! Corpora: libFuzzer keeps what it finds in `fuzz/corpus/<target>/` (not in
//! git) and starts from it and the seeds: `fuzz/seeds/<target>/` and, for
//! `rules-file`, the shipped `rules/`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail, ensure};

use crate::cmd;

/// cargo-fuzz's version when `cargo xtask fuzz` installs it.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Per input: slower than this is reported as a hang.
const TIMEOUT_SECS: u32 = 10;
/// Per process: more than this is reported as out-of-memory (libFuzzer's
/// default; a parse bounded by the config limits needs far less).
const RSS_LIMIT_MB: u32 = 2048;

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 30)]
    time: u32,
    /// Targets to run (names of `fuzz/fuzz_targets/*.rs`); all if none.
    targets: Vec<String>,
}

/// Runs each target for `args.time` seconds.
pub fn fuzz(root: &Path, args: &FuzzArgs) -> Result<()> {
    cargo_fuzz(root)?;
    let dir = root.join("fuzz");
    let all = targets(&dir)?;
    let chosen: Vec<String> = if args.targets.is_empty() {
        all
    } else {
        for target in &args.targets {
            ensure!(
                all.contains(target),
                "no fuzz target {target}: the targets are {}",
                all.join(", ")
            );
        }
        args.targets.clone()
    };
    for target in &chosen {
        run_target(root, &dir, target, args.time)?;
    }
    println!(
        "xtask fuzz: {} target(s), {} s each, no crash",
        chosen.len(),
        args.time
    );
    Ok(())
}

/// Installs cargo-fuzz from crates.io when `cargo fuzz` is missing.
fn cargo_fuzz(root: &Path) -> Result<()> {
    let found = cmd::probe(crate::cargo(root).args(["fuzz", "--version"]));
    if found.is_none() {
        println!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION} (`cargo fuzz` not found)");
        cmd::run(crate::cargo(root).args([
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
        ]))?;
    }
    Ok(())
}

/// The names of `fuzz/fuzz_targets/*.rs`, sorted.
fn targets(dir: &Path) -> Result<Vec<String>> {
    let targets_dir = dir.join("fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&targets_dir)
        .with_context(|| format!("listing {}", targets_dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    ensure!(
        !names.is_empty(),
        "no fuzz targets in {}",
        targets_dir.display()
    );
    Ok(names)
}

/// The files of `dir` (libFuzzer's saved crashes).
fn listing(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default()
}

fn run_target(root: &Path, dir: &Path, target: &str, secs: u32) -> Result<()> {
    let corpus = dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("mkdir {}", corpus.display()))?;
    let mut seeds = vec![dir.join("seeds").join(target)];
    if target == "rules-file" {
        seeds.push(root.join("rules"));
    }
    let artifacts = dir.join("artifacts").join(target);
    let before = listing(&artifacts);
    // `cargo +nightly`: rustup picks the toolchain; libFuzzer and the
    // sanitizer need nightly.
    let mut command = Command::new("cargo");
    command
        .current_dir(root)
        .args(["+nightly", "fuzz", "run", target])
        .arg(&corpus)
        .args(seeds.iter().filter(|s| s.is_dir()))
        .arg("--")
        .arg(format!("-max_total_time={secs}"))
        .arg(format!("-timeout={TIMEOUT_SECS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg("-print_final_stats=1")
        .stderr(Stdio::piped());
    println!("+ {}", cmd::show(&command));
    let started = Instant::now();
    let out = command
        .spawn()
        .context("cannot start `cargo +nightly fuzz`")?
        .wait_with_output()
        .context("waiting for `cargo fuzz`")?;
    let log = String::from_utf8_lossy(&out.stderr);
    let stat = |name: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .map_or("?", str::trim)
    };
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        eprintln!("{}", tail.join("\n"));
        let new: Vec<String> = listing(&artifacts)
            .into_iter()
            .filter(|a| !before.contains(a))
            .map(|a| a.display().to_string())
            .collect();
        if new.is_empty() {
            bail!(
                "fuzz target {target} failed ({}); see its output above",
                out.status
            );
        }
        bail!(
            "fuzz target {target} crashed: the input is {} (replay: `cargo +nightly fuzz run {target} <input>`; \
             once fixed, copy it to fuzz/seeds/{target}/ so the unit tests keep it)",
            new.join(", ")
        );
    }
    println!(
        "xtask fuzz: {target}: {} executions in {:.0} s ({} exec/s), corpus {} inputs, peak RSS {} MB, no crash",
        stat("number_of_executed_units"),
        started.elapsed().as_secs_f64(),
        stat("average_exec_per_sec"),
        listing(&corpus).len(),
        stat("peak_rss_mb"),
    );
    Ok(())
}
