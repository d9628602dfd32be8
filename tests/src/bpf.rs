//! The kernel's view of an agent's programs, through bpftool (which
//! `cargo xtask setup` installs): its JSON output, and the kernel's own
//! count of a program's runs.

use std::path::Path;

use serde_json::Value;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `bpftool -j ARGS [PATH]`, parsed.
pub fn bpftool(args: &[&str], path: Option<&Path>) -> Value {
    let mut cmd = std::process::Command::new("bpftool");
    cmd.arg("-j").args(args);
    if let Some(path) = path {
        cmd.arg(path);
    }
    let out = cmd
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool {args:?}: {out:?}: {e}"))
}

/// `kernel.bpf_stats_enabled` on while it lives (the kernel counts program
/// runs and their time only then), as it was after.
pub struct BpfStats {
    was: String,
}

impl BpfStats {
    pub fn on() -> Self {
        let was = std::fs::read_to_string(STATS_SYSCTL).expect(STATS_SYSCTL);
        std::fs::write(STATS_SYSCTL, "1").expect(STATS_SYSCTL);
        Self {
            was: was.trim().to_owned(),
        }
    }

    /// How many times the program behind the agent's pinned link `link`
    /// (e.g. `link_ts_sock_ops` in its bpffs directory) has run while the
    /// statistics were on.
    pub fn runs(&self, bpffs: &Path, link: &str) -> u64 {
        let link = bpffs.join(link);
        let show = bpftool(&["link", "show", "pinned"], Some(&link));
        let id = show["prog_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no prog_id for {}: {show}", link.display()));
        let prog = bpftool(&["prog", "show", "id", &id.to_string()], None);
        assert_eq!(prog["id"], id, "{prog}");
        // bpftool leaves run_cnt out while the program's run time is 0:
        // it has not run since the statistics were first turned on.
        prog.get("run_cnt").map_or(0, |n| {
            n.as_u64()
                .unwrap_or_else(|| panic!("run_cnt is not a count: {prog}"))
        })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(STATS_SYSCTL, &self.was);
    }
}
