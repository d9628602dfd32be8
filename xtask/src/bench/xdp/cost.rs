//! Scenario 7's second table: the XDP program's kernel time per packet, from
//! `BPF_PROG_TEST_RUN` on the program the bench's agent attached, with its
//! maps (`ts-xdp-cost`, in the node's namespace), beside Katran's published
//! rate. Every run's verdict is checked by `ts-xdp-cost`: a packet that did
//! not go where its row says fails the bench.

use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::{Context as _, Result, ensure};

use super::super::guards::Netns;
use crate::cmd;

/// Katran's published single-core rate (README, "5.16 Mpps per core"), as ns per packet.
const KATRAN_NS: f64 = 1e9 / 5.16e6;
/// Issue 21's goal for a packet of an established flow.
const GOAL_NS: u32 = 200;

/// One row of `ts-xdp-cost`'s answer.
pub struct Row {
    pub packet: String,
    pub verdict: String,
    pub median_ns: u32,
    pub mean_ns: f64,
    pub how: String,
}

/// Runs `ts-xdp-cost` on `node` against the agent pinned at `bpffs`. It
/// enters the namespace itself: under `ip netns exec` bpffs is not mounted.
pub fn measure(bin: &Path, node: &Netns, bpffs: &Path, quick: bool) -> Result<Vec<Row>> {
    let mut c = Command::new(bin.join("ts-xdp-cost"));
    c.arg("--netns")
        .arg(format!("/var/run/netns/{}", node.name))
        .arg("--bpffs")
        .arg(bpffs)
        .args(["--iface", "ts-node"])
        .args(["--endpoint-iface", "198.19.1.2=xb1"])
        .args(["--endpoint-iface", "198.19.2.2=xb2"])
        .args(["--client", "198.18.0.2", "--gateway", "198.18.0.1:31400"])
        // Nothing listens there and no gateway takes it.
        .args(["--other-port", "31499"])
        .args(["--samples", if quick { "2000" } else { "20000" }]);
    let shown = cmd::show(&c);
    eprintln!("+ {shown}");
    let out = c
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    ensure!(
        out.status.success(),
        "`{shown}` failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("`{shown}` printed no JSON line"))?;
    let rows = answer["rows"]
        .as_array()
        .with_context(|| format!("no rows in {answer}"))?;
    rows.iter()
        .map(|r| {
            let text = |key: &str| {
                r[key]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("no {key} in {r}"))
            };
            Ok(Row {
                packet: text("packet")?,
                verdict: text("verdict")?,
                median_ns: r["median_ns"]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .with_context(|| format!("no median_ns in {r}"))?,
                mean_ns: r["mean_ns"]
                    .as_f64()
                    .with_context(|| format!("no mean_ns in {r}"))?,
                how: text("how")?,
            })
        })
        .collect()
}

/// The table, in Markdown.
pub fn table(rows: &[Row]) -> String {
    let mut md = String::from(
        "XDP program time per packet (`BPF_PROG_TEST_RUN` on the agent's attached program and \
         maps, `ts-xdp-cost`). A run rewrites its packet, so a real flow's packets are one run \
         per call, and include the kernel's clock reads, which the two `passed` rows bound; \
         the established rows are measured again with `repeat`, on a flow whose entry rewrites \
         a packet into itself (the goal's row)\n\n\
         | packet | verdict | median ns | mean ns | measured as |\n|---|---|---:|---:|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {} |",
            r.packet, r.verdict, r.median_ns, r.mean_ns, r.how
        );
    }
    let established = rows
        .iter()
        .find(|r| r.packet.starts_with("client -> endpoint") && r.how.contains("runs per call"))
        .map(|r| r.median_ns);
    let _ = writeln!(
        md,
        "\nKatran, published: 5.16 Mpps per core, {KATRAN_NS:.0} ns a packet. Goal (issue 21): at most \
         {GOAL_NS} ns for an established flow's packet: {}.",
        match established {
            Some(ns) if ns <= GOAL_NS => format!("met ({ns} ns)"),
            Some(ns) => format!("not met ({ns} ns)"),
            None => "not measured".into(),
        }
    );
    md
}
