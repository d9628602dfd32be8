//! The kernel's cost per connection of each traffic-shift program: run time
//! over a run of connections, as the kernel counts it with
//! `kernel.bpf_stats_enabled` (bpftool's `run_time_ns` / `run_cnt`), divided
//! by the connections the client made. The programs are the agent's, found
//! through the links it pins in its bpffs directory.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::report::median;

/// The programs a connection can run, by the name of their pinned link
/// (`link_ts_<name>`).
pub const PROGRAMS: [&str; 4] = ["connect4", "sock_ops", "getpeername4", "sk_lookup"];

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Nanoseconds and runs of each of [`PROGRAMS`] per connection, over
/// `connections`.
#[derive(Clone, Debug)]
pub struct Cost {
    pub connections: u64,
    pub ns: [f64; PROGRAMS.len()],
    pub runs: [f64; PROGRAMS.len()],
}

impl Cost {
    pub fn total(&self) -> f64 {
        self.ns.iter().sum()
    }

    /// The median of `costs`, program by program (ns and runs each the median of
    /// its own column, so the total is the sum of medians, not the median
    /// total); the connections are all of theirs. `None` for no cost.
    pub fn median(costs: &[Cost]) -> Option<Cost> {
        if costs.is_empty() {
            return None;
        }
        let column = |f: &dyn Fn(&Cost) -> f64| median(&costs.iter().map(f).collect::<Vec<_>>());
        let mut ns = [0.0; PROGRAMS.len()];
        let mut runs = [0.0; PROGRAMS.len()];
        for i in 0..PROGRAMS.len() {
            ns[i] = column(&|c| c.ns[i]);
            runs[i] = column(&|c| c.runs[i]);
        }
        Some(Cost {
            connections: costs.iter().map(|c| c.connections).sum(),
            ns,
            runs,
        })
    }

    /// A table row's cells after its first ones: the connections, each
    /// program's `ns (runs)`, the total.
    pub fn cells(&self) -> String {
        let each: Vec<String> = self
            .ns
            .iter()
            .zip(self.runs)
            .map(|(n, r)| format!("{n:.0} ({r:.1})"))
            .collect();
        format!(
            "{} | {} | {:.0} |",
            self.connections,
            each.join(" | "),
            self.total()
        )
    }

    /// Its JSON fields: connections, ns and runs per program, the total.
    pub fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        let per = |values: &[f64]| -> serde_json::Value {
            PROGRAMS
                .iter()
                .zip(values)
                .map(|(p, v)| ((*p).to_owned(), serde_json::json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        serde_json::Map::from_iter([
            ("connections".to_owned(), self.connections.into()),
            ("ns_per_connection".to_owned(), per(&self.ns)),
            ("runs_per_connection".to_owned(), per(&self.runs)),
            ("total_ns_per_connection".to_owned(), self.total().into()),
        ])
    }
}

/// The header of a table of costs, one row per `first` (a level, a path).
pub fn table_header(first: &str, align: &str, concurrency: u32) -> String {
    format!(
        "\n| scenario | {first} | connections (concurrency {concurrency}, `kernel.bpf_stats_enabled`) | {} | all programs, ns per connection |\n|---|{align}|---:|{}---:|\n",
        PROGRAMS.map(|p| format!("`{p}` ns (runs)")).join(" | "),
        "---:|".repeat(PROGRAMS.len())
    )
}

/// A row of a cost not measured.
pub fn not_measured() -> String {
    format!(" n/m |{}", " n/m |".repeat(PROGRAMS.len() + 1))
}

/// `kernel.bpf_stats_enabled` on while it lives, as it was after.
struct StatsOn(String);

impl StatsOn {
    fn new() -> Result<Self> {
        let was =
            fs::read_to_string(STATS_SYSCTL).with_context(|| format!("read {STATS_SYSCTL}"))?;
        fs::write(STATS_SYSCTL, "1").with_context(|| format!("write {STATS_SYSCTL}"))?;
        Ok(Self(was.trim().to_owned()))
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        let _ = fs::write(STATS_SYSCTL, &self.0);
    }
}

/// The agent's programs, by their pinned links in `bpffs`.
pub struct Programs(Vec<u64>);

impl Programs {
    pub fn of(bpffs: &Path) -> Result<Self> {
        let ids = PROGRAMS
            .iter()
            .map(|name| {
                let link = bpffs.join(format!("link_ts_{name}"));
                let show = bpftool(&["link", "show", "pinned"], &link)?;
                show["prog_id"]
                    .as_u64()
                    .with_context(|| format!("no prog_id for {}: {show}", link.display()))
            })
            .collect::<Result<_>>()?;
        Ok(Self(ids))
    }

    /// Run time (ns) and runs of each program so far.
    fn stats(&self) -> Result<Vec<(u64, u64)>> {
        self.0
            .iter()
            .map(|id| {
                let show = bpftool(&["prog", "show", "id"], &PathBuf::from(id.to_string()))?;
                // Absent while the stats were never on: none counted.
                let field = |f: &str| show[f].as_u64().unwrap_or(0);
                Ok((field("run_time_ns"), field("run_cnt")))
            })
            .collect()
    }

    /// The cost per connection of the connections `run` makes (it returns
    /// how many it made), the kernel's statistics on meanwhile.
    pub fn measure(&self, run: impl FnOnce() -> Result<u64>) -> Result<Cost> {
        let _on = StatsOn::new()?;
        let before = self.stats()?;
        let connections = run()?;
        let after = self.stats()?;
        if connections == 0 {
            bail!("no connection was made");
        }
        let mut ns = [0.0; PROGRAMS.len()];
        let mut runs = [0.0; PROGRAMS.len()];
        for ((n, r), (b, a)) in ns.iter_mut().zip(&mut runs).zip(before.iter().zip(&after)) {
            #[allow(clippy::cast_precision_loss)]
            let per = |x: u64, y: u64| x.saturating_sub(y) as f64 / connections as f64;
            *n = per(a.0, b.0);
            *r = per(a.1, b.1);
        }
        Ok(Cost {
            connections,
            ns,
            runs,
        })
    }
}

/// `bpftool -j ARGS PATH`, parsed.
fn bpftool(args: &[&str], path: &Path) -> Result<serde_json::Value> {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .arg(path)
        .output()
        .context("run bpftool")?;
    if !out.status.success() {
        bail!(
            "bpftool {} {}: {}",
            args.join(" "),
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("bpftool's JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row has as many cells as the header has columns, and its JSON
    /// names every program.
    #[test]
    fn a_cost_row_fits_its_table() {
        let cost = Cost {
            connections: 1000,
            ns: [600.4, 700.0, 0.0, 175.0],
            runs: [1.0, 7.0, 0.0, 1.0],
        };
        let header = table_header("contender", "---", 16);
        let columns = header
            .lines()
            .nth(1)
            .expect("header line")
            .matches('|')
            .count();
        let row = format!("| scenario | connect-time | {}", cost.cells());
        assert_eq!(row.matches('|').count(), columns, "{header}\n{row}");
        assert!(
            row.contains("| 600 (1.0) | 700 (7.0) | 0 (0.0) | 175 (1.0) | 1475 |"),
            "{row}"
        );
        let missing = format!("| scenario | gateway |{}", not_measured());
        assert_eq!(missing.matches('|').count(), columns, "{missing}");
        let json = serde_json::Value::Object(cost.json());
        assert_eq!(json["runs_per_connection"]["sock_ops"], 7.0);
        assert_eq!(json["connections"], 1000);
    }

    /// The median is taken per program, over the runs; the connections add up.
    #[test]
    #[expect(clippy::float_cmp, reason = "medians of exact values are exact")]
    fn the_median_cost_is_per_program() {
        let cost = |connect4: f64, sock_ops: f64| Cost {
            connections: 10,
            ns: [connect4, sock_ops, 0.0, 100.0],
            runs: [1.0, 7.0, 0.0, 1.0],
        };
        let m = Cost::median(&[cost(300.0, 900.0), cost(100.0, 700.0), cost(200.0, 800.0)])
            .expect("a median");
        assert_eq!(m.ns, [200.0, 800.0, 0.0, 100.0]);
        assert_eq!(m.runs, [1.0, 7.0, 0.0, 1.0]);
        assert_eq!(m.connections, 30);
        assert!(Cost::median(&[]).is_none());
    }
}
