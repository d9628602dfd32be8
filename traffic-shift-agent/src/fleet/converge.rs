//! `traffic-shift fleet converge` (hidden; the convergence bench, scenario
//! 8): how long a change takes to be in force on every node. Once the
//! expected nodes all report, it commits the change of each `-f` in turn
//! (through [`ctl::commit`], `apply --store`'s code), takes t0 when the
//! commit returns, and follows the nodes' statuses with a watch (the one
//! `apply --wait` uses, [`Store::watch_nodes`]) until every node reports
//! that revision or a later one in force: per change, the time to the
//! median node and to the last one. Before the changes it counts the
//! status writes the watch sees in an idle window (what the reporters
//! cost etcd with nothing changing). Prints one JSON document on stdout.

use std::{
    io::Write,
    path::PathBuf,
    time::{Duration, Instant},
};

use serde::Serialize;
use traffic_shift_store::{NodeStatus, NodesWatch, Store, StoreError};

use super::ctl::{self, Committed, Op, Target, progress};
use crate::{
    admin::FileText,
    ctl::{EXIT_NO_AGENT, EXIT_OK, EXIT_REFUSED},
};

/// What `fleet converge` measures.
#[derive(Clone, Debug)]
pub struct Convergence {
    pub target: Target,
    /// Change `k` applies `files[k % len]`.
    pub files: Vec<PathBuf>,
    pub changes: usize,
    /// How many nodes must report a revision for it to count as converged.
    pub nodes: usize,
    /// How long one change (and the nodes' first report) may take.
    pub timeout: Duration,
    /// The idle window before the changes, and the pause between two.
    pub idle: Duration,
    pub pause: Duration,
}

/// One change, measured from the commit's return.
#[derive(Debug, Serialize)]
pub struct Change {
    pub revision: i64,
    /// The commit itself (list, check, transaction).
    pub commit_ms: f64,
    /// Until half the nodes (rounded up) reported it in force.
    pub median_node_ms: f64,
    /// Until the last node did.
    pub last_node_ms: f64,
    /// Until the last node stamped the status it then wrote (its
    /// `updated_ms`, the same clock on one machine): the rest of
    /// `last_node_ms` is the write and the watch's delivery.
    pub last_stamp_ms: f64,
}

/// What `fleet converge` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub nodes: usize,
    /// Until every node first reported, from the watch's start.
    pub ready_ms: f64,
    /// Node status writes per second in the idle window.
    pub idle_writes_per_s: f64,
    pub idle_s: f64,
    pub changes: Vec<Change>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the measurement; the JSON report on `stdout`, progress on `stderr`.
pub async fn converge(
    c: &Convergence,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> std::io::Result<u8> {
    let mut changes = Vec::new();
    for path in &c.files {
        match crate::ctl::read_inputs(std::slice::from_ref(path), &mut std::io::empty()) {
            Ok(files) => changes.push(files),
            Err(errors) => {
                for error in errors {
                    writeln!(stderr, "error: {error}")?;
                }
                return Ok(EXIT_REFUSED);
            }
        }
    }
    if changes.is_empty() {
        writeln!(stderr, "error: give the changes to apply in turn with -f")?;
        return Ok(EXIT_REFUSED);
    }
    let fail = |err: StoreError, stderr: &mut dyn Write| {
        writeln!(stderr, "error: {err}").map(|()| EXIT_NO_AGENT)
    };
    let store = match Store::connect(&c.target.url, &c.target.prefix, &c.target.tls).await {
        Ok(store) => store,
        Err(err) => return fail(err, stderr),
    };
    let start = Instant::now();
    let mut watch = match store.watch_nodes().await {
        Ok(watch) => watch,
        Err(err) => return fail(err, stderr),
    };
    match ready(&mut watch, c).await {
        Ok(true) => {}
        Ok(false) => {
            let now = progress(watch.nodes.values(), 1);
            writeln!(
                stderr,
                "error: {} of {} nodes reported within {:?}",
                now.in_force, c.nodes, c.timeout
            )?;
            return Ok(EXIT_REFUSED);
        }
        Err(err) => return fail(err, stderr),
    }
    let ready_ms = ms(start.elapsed());
    writeln!(stderr, "{} nodes ready after {ready_ms:.0} ms", c.nodes)?;
    let (idle_writes_per_s, idle_s) = match idle(&mut watch, c.idle).await {
        Ok(idle) => idle,
        Err(err) => return fail(err, stderr),
    };
    writeln!(
        stderr,
        "idle: {idle_writes_per_s:.0} node status writes/s over {idle_s:.1} s"
    )?;
    let mut measured = Vec::new();
    for k in 0..c.changes {
        let change =
            match one_change(&store, &mut watch, c, &changes[k % changes.len()], stderr).await? {
                Ok(change) => change,
                Err(code) => return Ok(code),
            };
        writeln!(
            stderr,
            "change {}/{}: revision {}, commit {:.1} ms, median node {:.1} ms, last node {:.1} ms (its status stamped at {:.0} ms)",
            k + 1,
            c.changes,
            change.revision,
            change.commit_ms,
            change.median_node_ms,
            change.last_node_ms,
            change.last_stamp_ms
        )?;
        measured.push(change);
        tokio::time::sleep(c.pause).await;
    }
    let report = Report {
        nodes: c.nodes,
        ready_ms,
        idle_writes_per_s,
        idle_s,
        changes: measured,
    };
    serde_json::to_writer(&mut *stdout, &report)?;
    writeln!(stdout)?;
    Ok(EXIT_OK)
}

/// Until `c.nodes` nodes report a revision in force (false at the timeout).
async fn ready(watch: &mut NodesWatch, c: &Convergence) -> Result<bool, StoreError> {
    let ready = async {
        while progress(watch.nodes.values(), 1).in_force < c.nodes {
            watch.next().await?;
        }
        Ok(())
    };
    tokio::time::timeout(c.timeout, ready)
        .await
        .map_or(Ok(false), |ready| ready.map(|()| true))
}

/// The node status writes the watch sees during `window`: per second, and
/// the seconds.
async fn idle(watch: &mut NodesWatch, window: Duration) -> Result<(f64, f64), StoreError> {
    let mut writes = 0;
    let start = Instant::now();
    while let Ok(next) =
        tokio::time::timeout(window.saturating_sub(start.elapsed()), watch.next()).await
    {
        writes += next?;
    }
    let secs = start.elapsed().as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "a count of writes")]
    Ok((writes as f64 / secs, secs))
}

/// One change committed and followed to the last node; the exit code when
/// it could not be (said on `stderr`).
async fn one_change(
    store: &Store,
    watch: &mut NodesWatch,
    c: &Convergence,
    files: &[FileText],
    stderr: &mut dyn Write,
) -> std::io::Result<Result<Change, u8>> {
    let committing = Instant::now();
    let revision = match ctl::commit(
        store,
        &c.target,
        Op::Apply { dry_run: false },
        files,
        &mut std::io::sink(),
        &mut std::io::sink(),
    )
    .await?
    {
        Committed::At(revision) => revision,
        Committed::Nothing => {
            writeln!(
                stderr,
                "error: a change changes nothing: give -f files that differ"
            )?;
            return Ok(Err(EXIT_REFUSED));
        }
        Committed::Failed(code) => {
            writeln!(stderr, "error: a change was not committed")?;
            return Ok(Err(code));
        }
    };
    let (t0, t0_ms) = (Instant::now(), traffic_shift_store::now_ms());
    match follow(watch, c, revision, t0).await {
        Ok(Some(median_node)) => Ok(Ok(Change {
            revision,
            commit_ms: ms(t0 - committing),
            median_node_ms: ms(median_node),
            last_node_ms: ms(t0.elapsed()),
            #[expect(clippy::cast_precision_loss, reason = "milliseconds")]
            last_stamp_ms: watch
                .nodes
                .values()
                .map(|n| n.updated_ms.saturating_sub(t0_ms))
                .max()
                .unwrap_or(0) as f64,
        })),
        Ok(None) => {
            let now = progress(watch.nodes.values(), revision);
            let names = |nodes: &[&NodeStatus]| {
                nodes
                    .iter()
                    .map(|n| n.node.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            writeln!(
                stderr,
                "error: revision {revision}: in force on {} of {} nodes after {:?}; refused on [{}]; lagging: [{}]",
                now.in_force,
                c.nodes,
                c.timeout,
                names(&now.refused),
                names(&now.lagging)
            )?;
            Ok(Err(EXIT_REFUSED))
        }
        Err(err) => {
            writeln!(stderr, "error: {err}")?;
            Ok(Err(EXIT_NO_AGENT))
        }
    }
}

/// Follows the nodes until `c.nodes` of them have `revision` in force:
/// the time from `t0` to the median one, or `None` at the timeout or when
/// a node refused it.
async fn follow(
    watch: &mut NodesWatch,
    c: &Convergence,
    revision: i64,
    t0: Instant,
) -> Result<Option<Duration>, StoreError> {
    let half = c.nodes.div_ceil(2);
    let mut median = None;
    loop {
        let now = progress(watch.nodes.values(), revision);
        if now.in_force >= half && median.is_none() {
            median = Some(t0.elapsed());
        }
        if now.in_force >= c.nodes {
            return Ok(median);
        }
        if !now.refused.is_empty() {
            return Ok(None);
        }
        let left = c.timeout.saturating_sub(t0.elapsed());
        match tokio::time::timeout(left, watch.next()).await {
            Ok(next) => {
                next?;
            }
            Err(_) => return Ok(None),
        }
    }
}
