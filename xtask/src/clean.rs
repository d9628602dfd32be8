//! `cargo xtask clean-test-state`: remove what killed test runs leave behind,
//! everything named `ts-test-*`: network namespaces, cgroups, bpffs dirs.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, ensure};

use crate::{cmd, setup};

const PREFIX: &str = "ts-test-";

pub fn clean_test_state() -> Result<()> {
    ensure!(
        setup::is_root(),
        "clean-test-state removes network namespaces, cgroups and bpffs pins: run it as root"
    );
    let mut failed = 0;
    let mut removed = 0;

    // Network namespaces: `ip netns add` creates /run/netns/<name>.
    for ns in matching(Path::new("/run/netns"))? {
        let name = ns
            .file_name()
            .expect("entries have names")
            .to_string_lossy()
            .into_owned();
        match cmd::run(Command::new("ip").args(["netns", "del", &name])) {
            Ok(()) => removed += 1,
            Err(e) => {
                eprintln!("clean-test-state: {e:#}");
                failed += 1;
            }
        }
    }

    // Cgroups: should be empty once their tests died; children go first.
    match setup::cgroup2_root() {
        Ok(root) => {
            for cg in matching(&root)? {
                for dir in subtree_children_first(&cg) {
                    match fs::remove_dir(&dir) {
                        Ok(()) => {
                            println!("clean-test-state: removed cgroup {}", dir.display());
                            removed += 1;
                        }
                        Err(e) => {
                            eprintln!(
                                "clean-test-state: cannot remove cgroup {}: {e} (processes left? see {}/cgroup.procs)",
                                dir.display(),
                                dir.display()
                            );
                            failed += 1;
                        }
                    }
                }
            }
        }
        Err(e) => eprintln!("clean-test-state: cgroups not cleaned: {e:#}"),
    }

    // Pinned maps, programs and links.
    for pin in matching(Path::new("/sys/fs/bpf"))? {
        let mut c = Command::new("rm");
        cmd::run(c.arg("-rf").arg(&pin))?;
        removed += 1;
    }

    ensure!(
        failed == 0,
        "clean-test-state: {failed} leftovers could not be removed"
    );
    if removed == 0 {
        println!("clean-test-state: nothing to clean");
    }
    Ok(())
}

/// Entries of `dir` whose name starts with [`PREFIX`]; none if `dir` does not exist.
fn matching(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if entry.file_name().to_string_lossy().starts_with(PREFIX) {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// `dir` and every directory below it, deepest first (the order `rmdir` needs).
fn subtree_children_first(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(subtree_children_first(&entry.path()));
            }
        }
    }
    out.push(dir.to_path_buf());
    out
}
