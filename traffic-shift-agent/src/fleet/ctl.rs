//! `apply`, `delete` and `get` with `--store`: the store read and written
//! directly, no agent needed. A change is checked exactly as an agent's
//! `apply` checks it (the same planning, the same resolution, the same
//! messages), then committed in one transaction guarded by the revision it
//! was checked against; when another writer committed first, the change is
//! checked again against the new set (so a change that is no longer valid
//! together with the other is refused, naming the conflict).
//!
//! Exit codes as [`crate::ctl`]'s; 3 when the store cannot be reached.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use traffic_shift_config as config;
use traffic_shift_store::{NodeStatus, Store, StoreError, StoreUrl, TlsFiles};

use crate::{
    admin::{Change, FileText, Item, Response},
    applied::{self, Plan},
    ctl::{self, EXIT_NO_AGENT, EXIT_OK, EXIT_REFUSED, Output, Selector},
};

/// How many times a change is checked again after losing a race.
const ATTEMPTS: usize = 5;
/// How long a read that no member answered (a member killed, a leader
/// being elected) is tried again on the members left: reads change
/// nothing, so trying again is safe. Commits are tried again by
/// [`Store::commit`] itself, which first checks whether the lost one went in.
const RETRY_FOR: Duration = Duration::from_secs(10);

/// `read` until a member answers, for up to [`RETRY_FOR`]: once at once
/// (the client may pick a live member next), then with pauses from 100 ms
/// to 1 s. The first failure of the command is said once.
async fn retrying<T, F>(mut read: impl FnMut() -> F) -> Result<T, StoreError>
where
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let deadline = Instant::now() + RETRY_FOR;
    let mut pause = Duration::ZERO;
    loop {
        match read().await {
            Err(err) if err.is_unreachable() && Instant::now() + pause < deadline => {
                if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::info!(%err, "no etcd member answered; trying the members again for up to {RETRY_FOR:?}");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).clamp(Duration::from_millis(100), Duration::from_secs(1));
            }
            done => return done,
        }
    }
}

/// Where the store is.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: StoreUrl,
    pub prefix: String,
    pub tls: TlsFiles,
}

/// What `--store` changes.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Apply {
        dry_run: bool,
    },
    Delete {
        ignore_not_found: bool,
        dry_run: bool,
    },
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Self::Apply { .. } => "apply",
            Self::Delete { .. } => "delete",
        }
    }

    fn dry_run(self) -> bool {
        match self {
            Self::Apply { dry_run } | Self::Delete { dry_run, .. } => dry_run,
        }
    }
}

async fn connect(target: &Target, stderr: &mut dyn Write) -> std::io::Result<Option<Store>> {
    match Store::connect(&target.url, &target.prefix, &target.tls).await {
        Ok(store) => Ok(Some(store)),
        Err(err) => {
            writeln!(stderr, "error: {err}")?;
            Ok(None)
        }
    }
}

fn store_error(err: &StoreError, stderr: &mut dyn Write) -> std::io::Result<u8> {
    writeln!(stderr, "error: {err}")?;
    Ok(match err {
        StoreError::Unreachable { .. }
        | StoreError::Timeout(_)
        | StoreError::Tls { .. }
        | StoreError::CommitUnknown { .. } => EXIT_NO_AGENT,
        _ => EXIT_REFUSED,
    })
}

/// `apply -f ... --store` / `delete -f ... --store`; with `wait`, returns
/// once every live node has the new revision in force.
#[allow(clippy::too_many_arguments)]
pub async fn change(
    target: &Target,
    op: Op,
    paths: &[PathBuf],
    wait: Option<Duration>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> std::io::Result<u8> {
    let files = match ctl::read_inputs(paths, stdin) {
        Ok(files) => files,
        Err(errors) => {
            for error in errors {
                writeln!(stderr, "error: {error}")?;
            }
            return Ok(EXIT_REFUSED);
        }
    };
    let Some(store) = connect(target, stderr).await? else {
        return Ok(EXIT_NO_AGENT);
    };
    match commit(&store, target, op, &files, stdout, stderr).await? {
        Committed::At(revision) => match wait {
            Some(timeout) => wait_for(&store, revision, timeout, stderr).await,
            None => Ok(EXIT_OK),
        },
        Committed::Nothing => Ok(EXIT_OK),
        Committed::Failed(code) => Ok(code),
    }
}

/// What [`commit`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Committed {
    /// The change is in the store at this revision.
    At(i64),
    /// A dry run, or a change that changes nothing: nothing written.
    Nothing,
    /// Refused or failed (said on stderr), with the exit code.
    Failed(u8),
}

/// The change of `files` checked against the store's set and committed
/// (checked again when another writer committed first); what it changed
/// on stdout, the revision on stderr.
pub async fn commit(
    store: &Store,
    target: &Target,
    op: Op,
    files: &[FileText],
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> std::io::Result<Committed> {
    let failed = |code: std::io::Result<u8>| code.map(Committed::Failed);
    for _ in 0..ATTEMPTS {
        let listing = match retrying(|| store.list()).await {
            Ok(listing) => listing,
            Err(err) => return failed(store_error(&err, stderr)),
        };
        let current = match super::entries(&target.prefix, &listing.resources) {
            Ok(entries) => entries,
            Err(errors) => {
                for error in &errors {
                    writeln!(stderr, "error: {error}")?;
                }
                writeln!(
                    stderr,
                    "error: the store holds resources that cannot be read; fix or delete them (etcdctl) first"
                )?;
                return Ok(Committed::Failed(EXIT_REFUSED));
            }
        };
        let plan = match op {
            Op::Apply { .. } => {
                applied::plan_apply(&current, files, |_| None, crate::cli::now_ms())
            }
            Op::Delete {
                ignore_not_found, ..
            } => applied::plan_delete(&current, files, |_| None, ignore_not_found),
        };
        let (plan, warnings) = match check(&target.prefix, plan, files) {
            Ok(checked) => checked,
            Err(errors) => {
                return failed(ctl::refused(
                    Response::Refused { errors },
                    op.name(),
                    stderr,
                ));
            }
        };
        for warning in &warnings {
            writeln!(stderr, "warning: {warning}")?;
        }
        if op.dry_run() || !plan.changes_anything() {
            print_changes(&plan.changes, op.dry_run(), stdout)?;
            return Ok(Committed::Nothing);
        }
        let writes = super::writes(&current, &plan.entries);
        match store.commit(listing.revision, &writes, &author()).await {
            Ok(revision) => {
                print_changes(&plan.changes, false, stdout)?;
                writeln!(stderr, "committed to {} at revision {revision}", target.url)?;
                return Ok(Committed::At(revision));
            }
            Err(StoreError::Conflict { checked, now }) => {
                writeln!(
                    stderr,
                    "the store changed while this {} was checked (revision {checked} -> {now}); checking it again against the new set",
                    op.name()
                )?;
            }
            Err(err) => return failed(store_error(&err, stderr)),
        }
    }
    writeln!(
        stderr,
        "error: the store kept changing while this {} was checked ({ATTEMPTS} attempts); nothing was written, run it again",
        op.name()
    )?;
    Ok(Committed::Failed(EXIT_REFUSED))
}

/// The whole resulting set resolved, as the agent's `apply` resolves it;
/// the warnings about the given files.
fn check(
    prefix: &str,
    plan: Result<Plan, Vec<String>>,
    files: &[FileText],
) -> Result<(Plan, Vec<String>), Vec<String>> {
    let plan = plan?;
    let (model, across) = config::resolve_all(&[super::rules_file(prefix, &plan.entries)]);
    model.map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let mut warnings = plan.warnings.clone();
    warnings.extend(
        across
            .iter()
            .filter(|w| files.iter().any(|f| Path::new(&f.path) == w.file))
            .map(ToString::to_string),
    );
    Ok((plan, warnings))
}

fn print_changes(changes: &[Change], dry_run: bool, stdout: &mut dyn Write) -> std::io::Result<()> {
    for change in changes {
        writeln!(
            stdout,
            "{} {}{}",
            applied::display_name(&change.kind, &change.name),
            change.action.as_str(),
            if dry_run { " (dry run)" } else { "" }
        )?;
    }
    Ok(())
}

/// Who commits, in the guard key: `user@host`.
fn author() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    format!("{user}@{}", crate::agent::host_name())
}

/// Where the live nodes are with a revision.
#[derive(Debug, Default)]
pub struct Progress<'a> {
    /// Nodes that refused it (or a later one).
    pub refused: Vec<&'a NodeStatus>,
    /// Nodes with an earlier revision in force.
    pub lagging: Vec<&'a NodeStatus>,
    /// Nodes with it (or a later one) in force.
    pub in_force: usize,
}

/// Where `nodes` are with `revision`: in force there when a node reports
/// it or a later one.
pub fn progress<'a>(
    nodes: impl IntoIterator<Item = &'a NodeStatus>,
    revision: i64,
) -> Progress<'a> {
    let mut progress = Progress::default();
    for node in nodes {
        if node.refused_revision.is_some_and(|r| r >= revision) {
            progress.refused.push(node);
        } else if node.revision < revision {
            progress.lagging.push(node);
        } else {
            progress.in_force += 1;
        }
    }
    progress
}

/// `apply --wait`: until every live node has `revision` (or a later one)
/// in force, followed with a watch on the nodes' statuses; refused, or
/// still lagging at the timeout, names the nodes.
async fn wait_for(
    store: &Store,
    revision: i64,
    timeout: Duration,
    stderr: &mut dyn Write,
) -> std::io::Result<u8> {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut nodes = match retrying(|| store.watch_nodes()).await {
        Ok(nodes) => nodes,
        Err(err) => return store_error(&err, stderr),
    };
    loop {
        let now = progress(nodes.nodes.values(), revision);
        if !now.refused.is_empty() {
            for node in &now.refused {
                writeln!(
                    stderr,
                    "error: node {} refused revision {}: {}",
                    node.node,
                    node.refused_revision.unwrap_or(revision),
                    node.error.as_deref().unwrap_or("no reason given")
                )?;
            }
            return Ok(EXIT_REFUSED);
        }
        if now.lagging.is_empty() {
            writeln!(
                stderr,
                "revision {revision} in force on {} node{} after {} ms",
                now.in_force,
                if now.in_force == 1 { "" } else { "s" },
                start.elapsed().as_millis()
            )?;
            return Ok(EXIT_OK);
        }
        let lagging: Vec<String> = now
            .lagging
            .iter()
            .map(|n| format!("{} (at {})", n.node, n.revision))
            .collect();
        tokio::select! {
            next = nodes.next() => match next {
                Ok(_) => {}
                // A member went away (a leader killed): read and watch
                // again through the members left.
                Err(err) if err.is_unreachable() || matches!(err, StoreError::WatchEnded { .. }) => {
                    nodes = match retrying(|| store.watch_nodes()).await {
                        Ok(nodes) => nodes,
                        Err(err) => return store_error(&err, stderr),
                    };
                }
                Err(err) => return store_error(&err, stderr),
            },
            () = tokio::time::sleep_until(deadline) => {
                writeln!(
                    stderr,
                    "error: after {} s, revision {revision} is not in force on: {}",
                    timeout.as_secs_f64(),
                    lagging.join(", ")
                )?;
                return Ok(EXIT_REFUSED);
            }
        }
    }
}

/// `get KIND [NAME] --store`.
pub async fn get(
    target: &Target,
    selector: &Selector,
    output: Output,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> std::io::Result<u8> {
    let kind = match applied::parse_kind(&selector.kind) {
        Ok(kind) => kind,
        Err(err) => {
            writeln!(stderr, "error: {err}")?;
            return Ok(EXIT_REFUSED);
        }
    };
    let Some(store) = connect(target, stderr).await? else {
        return Ok(EXIT_NO_AGENT);
    };
    let listing = match retrying(|| store.list()).await {
        Ok(listing) => listing,
        Err(err) => return store_error(&err, stderr),
    };
    let entries = match super::entries(&target.prefix, &listing.resources) {
        Ok(entries) => entries,
        Err(errors) => {
            for error in &errors {
                writeln!(stderr, "error: {error}")?;
            }
            return Ok(EXIT_REFUSED);
        }
    };
    let items = entries
        .iter()
        .map(|(key, entry)| {
            Item::new(
                (key.kind, &key.namespace, &key.name),
                target.url.to_string(),
                Some(entry.created_ms),
                entry
                    .document
                    .to_json()
                    .expect("the store's documents are held in memory"),
            )
        })
        .collect();
    ctl::show(
        kind,
        selector,
        items,
        output,
        crate::cli::now_ms(),
        stdout,
        stderr,
    )
}

/// `get nodes --store`: NAME, REVISION, STATE, LAST SEEN, ROUTES; `wide`
/// adds LABELS.
pub async fn nodes(
    target: &Target,
    wide: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> std::io::Result<u8> {
    let Some(store) = connect(target, stderr).await? else {
        return Ok(EXIT_NO_AGENT);
    };
    let nodes = match retrying(|| store.nodes()).await {
        Ok(nodes) => nodes,
        Err(err) => return store_error(&err, stderr),
    };
    if nodes.is_empty() {
        writeln!(
            stderr,
            "No nodes found: no agent reports to {} under {}",
            target.url, target.prefix
        )?;
        return Ok(EXIT_OK);
    }
    stdout.write_all(nodes_table(&nodes, wide, crate::cli::now_ms()).as_bytes())?;
    Ok(EXIT_OK)
}

/// `status --fleet`: the split per route, summed over the live nodes and
/// per node ([`super::status::render`]).
pub async fn status(
    target: &Target,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> std::io::Result<u8> {
    let Some(store) = connect(target, stderr).await? else {
        return Ok(EXIT_NO_AGENT);
    };
    match status_text(&store, target).await {
        Ok(text) => {
            stdout.write_all(text.as_bytes())?;
            Ok(EXIT_OK)
        }
        Err(Ok(none)) => {
            writeln!(stderr, "{none}")?;
            Ok(EXIT_OK)
        }
        Err(Err(err)) => store_error(&err, stderr),
    }
}

/// What `status --fleet` shows; `Err(Ok(why))` when no node reports,
/// `Err(Err(_))` when the store cannot be read.
async fn status_text(store: &Store, target: &Target) -> Result<String, Result<String, StoreError>> {
    let nodes = retrying(|| store.nodes()).await.map_err(Err)?;
    if nodes.is_empty() {
        return Err(Ok(format!(
            "No nodes found: no agent reports to {} under {}",
            target.url, target.prefix
        )));
    }
    Ok(super::status::render(
        &target.url.to_string(),
        &target.prefix,
        &nodes,
    ))
}

/// `status --fleet --watch`: the store's nodes read and drawn every
/// `interval` ([`crate::cli::watch_frames`]); a store that cannot be read
/// is shown as its error and read again at the next frame.
pub fn watch(
    target: &Target,
    interval: Duration,
    in_place: bool,
    screen: &mut impl crate::cli::Screen,
    out: &mut impl Write,
) -> std::io::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = match runtime.block_on(Store::connect(&target.url, &target.prefix, &target.tls)) {
        Ok(store) => store,
        Err(err) => return store_error(&err, &mut std::io::stderr()),
    };
    crate::cli::watch_frames(interval, in_place, screen, out, |width, _, _, frame| {
        let text = match runtime.block_on(status_text(&store, target)) {
            Ok(text) => return frame.write_all(text.as_bytes()),
            Err(Ok(none)) => none,
            Err(Err(err)) => err.to_string(),
        };
        crate::status::render_message(
            &format!(
                "{text}\nreading it again every {} s",
                interval.as_secs_f64()
            ),
            width,
            frame,
        )
    })?;
    Ok(EXIT_OK)
}

/// The table of `get nodes`; a refused revision shows in STATE with why.
/// `wide` adds LABELS, the node's `--node-labels` (`<none>`: none;
/// `<not set>`: not given, so the node serves every Gateway).
pub fn nodes_table(nodes: &[NodeStatus], wide: bool, now_ms: u64) -> String {
    let mut header = ["NAME", "REVISION", "STATE", "LAST SEEN", "ROUTES"]
        .map(str::to_owned)
        .to_vec();
    if wide {
        header.push("LABELS".to_owned());
    }
    let mut rows = vec![header];
    for node in nodes {
        let state = match (&node.refused_revision, &node.error) {
            (Some(refused), Some(error)) => format!("refused {refused}: {error}"),
            _ => node.state.clone(),
        };
        rows.push(vec![
            node.node.clone(),
            node.revision.to_string(),
            state,
            format!(
                "{} ago",
                ctl::human_duration(i128::from(now_ms) - i128::from(node.updated_ms))
            ),
            node.routes.to_string(),
        ]);
        if wide {
            let labels = node
                .labels
                .as_ref()
                .map_or_else(|| "<not set>".to_owned(), traffic_shift_config::labels_text);
            rows.last_mut().expect("pushed above").push(labels);
        }
    }
    ctl::aligned(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_table_says_what_each_node_has_in_force() {
        let node = |name: &str, revision, refused: Option<(i64, &str)>| NodeStatus {
            node: name.into(),
            revision,
            state: if refused.is_some() {
                "refused"
            } else {
                "accepted"
            }
            .into(),
            refused_revision: refused.map(|r| r.0),
            error: refused.map(|r| r.1.to_owned()),
            version: "0.1.0".into(),
            routes: 2,
            updated_ms: 9_000,
            ..NodeStatus::default()
        };
        let table = nodes_table(
            &[
                node("node-a", 7, None),
                node("node-b", 5, Some((7, "port 31400 is taken"))),
            ],
            false,
            10_000,
        );
        assert_eq!(
            table,
            "NAME     REVISION   STATE                            LAST SEEN   ROUTES\n\
             node-a   7          accepted                         1s ago      2\n\
             node-b   5          refused 7: port 31400 is taken   1s ago      2\n"
        );
    }

    #[test]
    fn get_nodes_wide_shows_each_nodes_labels() {
        let node = |name: &str, labels: Option<&[(&str, &str)]>| NodeStatus {
            node: name.into(),
            revision: 7,
            state: "accepted".into(),
            routes: 2,
            updated_ms: 9_000,
            labels: labels.map(|l| {
                l.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            }),
            ..NodeStatus::default()
        };
        let nodes = [
            node(
                "node-a",
                Some(&[("zone", "a"), ("istio", "ingressgateway")]),
            ),
            node("node-b", Some(&[])),
            node("node-c", None),
        ];
        assert_eq!(
            nodes_table(&nodes, true, 10_000),
            "NAME     REVISION   STATE      LAST SEEN   ROUTES   LABELS\n\
             node-a   7          accepted   1s ago      2        istio=ingressgateway,zone=a\n\
             node-b   7          accepted   1s ago      2        <none>\n\
             node-c   7          accepted   1s ago      2        <not set>\n"
        );
        assert!(!nodes_table(&nodes, false, 10_000).contains("LABELS"));
    }
}
