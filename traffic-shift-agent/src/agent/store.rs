//! The fleet's store as a source of rules (`--store`): the store's
//! resources are put in force together with the rules directory and the
//! applied set, one etcd revision as one snapshot, all or nothing through
//! [`install`](super::install); this node's status goes back to the store
//! under a lease.
//!
//! Where the rules come from is behind [`RulesSource`] (list, then the
//! changes after it) and where the status goes behind [`StatusSink`]:
//! etcd implements both here; a Kubernetes source (Istio's CRDs) would be
//! one more implementation of each.
//!
//! Two tasks talk to the store, so the agent loop never waits on it:
//! [`follow`] lists, then watches, and sends each revision's whole set;
//! when etcd cannot be reached it says so and tries again with backoff
//! (the rules in force stay), resuming the watch where it stopped, or
//! listing again when etcd compacted its history past that point.
//! [`report`] writes the status the loop publishes when it changes, and
//! at least every [`REWRITE_AFTER`].

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use tokio::sync::{Notify, mpsc, watch};
use traffic_shift_config::RulesFile;
use traffic_shift_store::{
    Batch, DestinationCounters, Listing, NodeStatus, ResourceKey, RouteCounters, Store, StoreError,
};

use super::Agent;
use crate::fleet;

/// How long a node's status outlives its agent.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the reporter looks at the status.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// A status that did not change is written again after this long (LAST
/// SEEN; the lease is refreshed with each write).
const REWRITE_AFTER: Duration = Duration::from_secs(5);
/// How long one status report may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// Backoff between attempts to reach an unreachable store.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where a fleet's rules come from.
pub trait RulesSource: Send + 'static {
    /// The whole set now; the next [`Self::next`] follows from there.
    fn list(&mut self) -> impl Future<Output = Result<Listing, StoreError>> + Send;
    /// Follows the changes from revision `from` on (after a disconnection,
    /// from the first revision not yet seen); the next [`Self::next`]
    /// returns them, or [`StoreError::Compacted`] when the store no longer
    /// has them: list again.
    fn resume(&mut self, from: i64) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The changes after the last list, resume or batch. An error ends
    /// them: resume, or list again.
    fn next(&mut self) -> impl Future<Output = Result<Batch, StoreError>> + Send;
}

/// Where a node's status goes.
pub trait StatusSink: Send + 'static {
    fn report(
        &mut self,
        status: &NodeStatus,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// etcd as a [`RulesSource`].
pub struct Etcd {
    store: Store,
    watch: Option<traffic_shift_store::Watch>,
}

impl RulesSource for Etcd {
    async fn list(&mut self) -> Result<Listing, StoreError> {
        self.watch = None;
        let listing = self.store.list().await?;
        self.watch = Some(self.store.watch(listing.read_at + 1).await?);
        Ok(listing)
    }

    async fn resume(&mut self, from: i64) -> Result<(), StoreError> {
        self.watch = None;
        self.watch = Some(self.store.watch(from).await?);
        Ok(())
    }

    async fn next(&mut self) -> Result<Batch, StoreError> {
        match &mut self.watch {
            Some(watch) => watch.next().await,
            None => Err(StoreError::WatchEnded {
                prefix: self.store.prefix().to_owned(),
                reason: "not listed yet".into(),
            }),
        }
    }
}

impl StatusSink for traffic_shift_store::NodeReporter {
    async fn report(&mut self, status: &NodeStatus) -> Result<(), StoreError> {
        traffic_shift_store::NodeReporter::report(self, status).await
    }
}

/// What the follower tells the agent loop.
#[derive(Debug)]
pub enum StoreEvent {
    /// The store's whole set at `revision`.
    Snapshot {
        revision: i64,
        resources: Arc<BTreeMap<ResourceKey, String>>,
    },
    /// The store cannot be reached (or the watch broke); the rules in force stay.
    Disconnected(String),
}

/// The agent's side of the store.
pub struct Fleet {
    pub url: String,
    pub prefix: String,
    /// The store's set in force (for `get`), its documents, as one rules
    /// file, and its revision.
    pub entries: crate::applied::Entries,
    pub texts: Arc<BTreeMap<ResourceKey, String>>,
    pub file: RulesFile,
    pub revision: i64,
    /// The last revision refused, and why.
    pub refused: Option<(i64, String)>,
    /// Whether the follower is connected.
    pub connected: bool,
    /// Before the first connection: the last error said, so that each new
    /// one is said once (e.g. etcd refusing the TLS client certificate).
    pub first_error: Option<String>,
    /// Published to the reporter task.
    pub status: watch::Sender<NodeStatus>,
    /// Times the store came back after it was lost (`/metrics`).
    pub reconnects: u64,
    /// Whether the store answered once since the agent started.
    pub ever_connected: bool,
    /// The last revision in force, with its resources, kept here so that
    /// an agent started while etcd is down serves it ([`SNAPSHOT_FILE`]).
    pub snapshot_file: std::path::PathBuf,
}

/// The file of the state directory that keeps the last store revision in force.
pub const SNAPSHOT_FILE: &str = "store-snapshot.json";

/// What [`SNAPSHOT_FILE`] holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    /// The store's prefix: a snapshot of another fleet is not served.
    prefix: String,
    revision: i64,
    /// `[kind, namespace, name, document]`.
    resources: Vec<[String; 4]>,
}

/// Writes the snapshot atomically (a reader sees the old or the new file).
fn save_snapshot(
    path: &std::path::Path,
    prefix: &str,
    revision: i64,
    resources: &BTreeMap<ResourceKey, String>,
) -> std::io::Result<()> {
    let saved = Saved {
        prefix: prefix.to_owned(),
        revision,
        resources: resources
            .iter()
            .map(|(k, doc)| {
                [
                    k.kind.clone(),
                    k.namespace.clone(),
                    k.name.clone(),
                    doc.clone(),
                ]
            })
            .collect(),
    };
    let text = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::File::create(&tmp)?;
    std::io::Write::write_all(&mut file, &text)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The snapshot saved for `prefix`, if any. One of another prefix, or one
/// that cannot be read, is not served (and said why).
fn load_snapshot(
    path: &std::path::Path,
    prefix: &str,
) -> Option<(i64, BTreeMap<ResourceKey, String>)> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Err(err) => {
            tracing::warn!(file = %path.display(), %err, "cannot read the saved store snapshot; waiting for the store");
            return None;
        }
    };
    let saved: Saved = match serde_json::from_slice(&text) {
        Ok(saved) => saved,
        Err(err) => {
            tracing::warn!(file = %path.display(), %err, "the saved store snapshot is not valid JSON; waiting for the store");
            return None;
        }
    };
    if saved.prefix != prefix {
        tracing::info!(file = %path.display(), saved = %saved.prefix, %prefix, "the saved store snapshot is of another prefix; not served");
        return None;
    }
    let resources = saved
        .resources
        .into_iter()
        .map(|[kind, namespace, name, document]| {
            (
                ResourceKey {
                    kind,
                    namespace,
                    name,
                },
                document,
            )
        })
        .collect();
    Some((saved.revision, resources))
}

/// What [`open`] starts: the fleet's state, the follower's events, and
/// the rollouts' side ([`super::fleet_rollouts`]).
pub type Opened = (
    Option<Fleet>,
    Option<mpsc::Receiver<StoreEvent>>,
    Option<super::fleet_rollouts::FleetRollouts>,
    Option<super::fleet_rollouts::RolloutsIo>,
);

/// With `--store`: connects (lazily) and starts the two tasks, and the
/// rollouts' follower and driver; the events come on the receivers.
pub async fn open(options: &super::AgentOptions) -> Result<Opened, StoreError> {
    let Some(url) = &options.store else {
        return Ok((None, None, None, None));
    };
    let node = options.node.clone().unwrap_or_else(super::host_name);
    let store = Store::connect(url, &options.store_prefix, &options.store_tls.files()).await?;
    tracing::info!(store = %url, prefix = %options.store_prefix, %node, "following the store");
    let (rollouts, io) = super::fleet_rollouts::start(store.clone(), &node);
    let (mut fleet, events) = start_on(store, &url.to_string(), &node);
    fleet.snapshot_file = options.state_dir.join(SNAPSHOT_FILE);
    let labels = options.node_labels.as_ref().map(|l| l.labels().clone());
    fleet.status.send_modify(|status| status.labels = labels);
    Ok((Some(fleet), Some(events), Some(rollouts), Some(io)))
}

/// The two tasks started on `store` (named `url` in messages) for `node`;
/// the events come on the receiver. (`fleet simulate` starts many nodes on
/// one client.)
pub fn start_on(store: Store, url: &str, node: &str) -> (Fleet, mpsc::Receiver<StoreEvent>) {
    let (events, rx) = mpsc::channel(16);
    let initial = NodeStatus {
        node: node.to_owned(),
        state: "starting".into(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..NodeStatus::default()
    };
    let (status, status_rx) = watch::channel(initial);
    let prefix = store.prefix().to_owned();
    let reachable = Arc::new(Notify::new());
    tokio::spawn(report(
        store.node_reporter(node, LEASE_TTL),
        status_rx,
        Arc::clone(&reachable),
    ));
    tokio::spawn(follow(Etcd { store, watch: None }, events, reachable));
    (
        Fleet {
            url: url.to_owned(),
            file: fleet::rules_file(&prefix, &crate::applied::Entries::new()),
            prefix,
            entries: crate::applied::Entries::new(),
            texts: Arc::default(),
            revision: 0,
            refused: None,
            connected: false,
            first_error: None,
            status,
            reconnects: 0,
            ever_connected: false,
            snapshot_file: std::path::PathBuf::new(),
        },
        rx,
    )
}

/// The store's set of one revision, read (as entries) and as one rules file.
pub type Read = (crate::applied::Entries, RulesFile);

impl Fleet {
    /// A store event: the set to put in force, if there is a new one (the
    /// connection's state followed and said here).
    pub fn event(
        &mut self,
        event: StoreEvent,
    ) -> Option<(i64, Arc<BTreeMap<ResourceKey, String>>)> {
        let (revision, resources) = match event {
            StoreEvent::Disconnected(error) => {
                if self.connected {
                    tracing::warn!(%error, "the store is unreachable; the rules in force stay, reconnecting with backoff");
                } else if !self.ever_connected && self.first_error.as_ref() != Some(&error) {
                    tracing::warn!(%error, "cannot use the store; trying again with backoff");
                    self.first_error = Some(error);
                }
                self.connected = false;
                return None;
            }
            StoreEvent::Snapshot {
                revision,
                resources,
            } => (revision, resources),
        };
        if !self.connected {
            tracing::info!(store = %self.url, revision, "store connected");
            if self.ever_connected {
                self.reconnects += 1;
            }
        }
        self.connected = true;
        self.ever_connected = true;
        if revision == self.revision && self.refused.is_none() && revision != 0 {
            return None;
        }
        Some((revision, resources))
    }

    /// The store's set read, or why it cannot be (only the documents
    /// that changed since the set in force are parsed).
    pub fn read(&self, resources: &BTreeMap<ResourceKey, String>) -> Result<Read, String> {
        let entries = fleet::entries_since(&self.prefix, resources, (&self.texts, &self.entries))
            .map_err(|errors| errors.join("; "))?;
        let file = fleet::rules_file(&self.prefix, &entries);
        Ok((entries, file))
    }

    /// `revision` (its `resources`) in force, or refused with why (the
    /// rules in force stay); returns whether it went in. `what` names it
    /// in the log.
    pub fn settle(
        &mut self,
        revision: i64,
        resources: &Arc<BTreeMap<ResourceKey, String>>,
        result: Result<Read, String>,
    ) -> bool {
        match result {
            Ok((entries, file)) => {
                self.texts = Arc::clone(resources);
                let resources = resources.len();
                self.entries = entries;
                self.file = file;
                self.revision = revision;
                self.refused = None;
                tracing::info!(revision, resources, "store revision in force");
                true
            }
            Err(error) => {
                tracing::error!(
                    revision,
                    "store revision refused: {error}; the rules in force stay"
                );
                self.refused = Some((revision, error));
                false
            }
        }
    }

    /// Saves the set in force in the state directory ([`SNAPSHOT_FILE`]).
    pub fn save(&self) {
        if let Err(err) = save_snapshot(
            &self.snapshot_file,
            &self.prefix,
            self.revision,
            &self.texts,
        ) {
            tracing::warn!(file = %self.snapshot_file.display(), %err, "cannot save the store snapshot; a restart while etcd is down would not serve this revision");
        }
    }

    /// The node's status, for the reporter task: `routes` in force.
    pub fn publish(&self, routes: usize) {
        self.status.send_modify(|status| {
            status.revision = self.revision;
            status.refused_revision = self.refused.as_ref().map(|(r, _)| *r);
            status.error = self.refused.as_ref().map(|(_, e)| e.clone());
            status.state = if self.refused.is_some() {
                "refused"
            } else {
                "accepted"
            }
            .into();
            status.routes = routes;
        });
    }
}

/// Lists, then follows the changes, sending the whole set after each; on
/// an error, says so and, with backoff, resumes the watch from the first
/// revision not yet seen (the deletions made meanwhile come as changes).
/// When etcd compacted its history past that revision, the watch cannot
/// resume: it lists again, and the listing replaces the whole set.
/// `reachable` cuts a backoff short: the reporter reached the store again.
pub async fn follow(
    mut source: impl RulesSource,
    events: mpsc::Sender<StoreEvent>,
    reachable: Arc<Notify>,
) {
    let mut backoff = BACKOFF_MIN;
    // The set as of the last revision seen, and the first revision not yet
    // seen: where a watch resumes.
    let mut seen: Option<(BTreeMap<ResourceKey, String>, i64, i64)> = None;
    let snapshot = |revision, resources: &BTreeMap<_, _>| StoreEvent::Snapshot {
        revision,
        resources: Arc::new(resources.clone()),
    };
    loop {
        let started = match seen.take() {
            Some((resources, revision, from)) => match source.resume(from).await {
                Ok(()) => {
                    tracing::info!(from, "watching the store again");
                    Ok((resources, revision, from))
                }
                Err(err) => {
                    seen = Some((resources, revision, from));
                    Err(err)
                }
            },
            None => source.list().await.map(|listing| {
                tracing::info!(
                    revision = listing.revision,
                    resources = listing.resources.len(),
                    "listed the store"
                );
                (listing.resources, listing.revision, listing.read_at + 1)
            }),
        };
        let error = match started {
            Ok((mut resources, mut revision, mut from)) => {
                backoff = BACKOFF_MIN;
                // Tells the agent it is connected (an unchanged revision
                // changes nothing else).
                if events.send(snapshot(revision, &resources)).await.is_err() {
                    return;
                }
                loop {
                    match source.next().await {
                        Ok(batch) => {
                            for (key, document) in batch.changes {
                                match document {
                                    Some(document) => resources.insert(key, document),
                                    None => resources.remove(&key),
                                };
                            }
                            revision = batch.revision;
                            from = batch.revision + 1;
                            if events.send(snapshot(revision, &resources)).await.is_err() {
                                return;
                            }
                        }
                        Err(err) => {
                            // A watch etcd compacted past lists again;
                            // anything else (a lost connection, a member
                            // gone) resumes from where it stopped.
                            if !matches!(err, StoreError::Compacted { .. }) {
                                seen = Some((resources, revision, from));
                            }
                            break err;
                        }
                    }
                }
            }
            Err(err) => err,
        };
        // A compacted watch lists again at once; anything else waits a bit.
        if matches!(error, StoreError::Compacted { .. }) {
            tracing::warn!(%error, "listing the store again");
            continue;
        }
        if events
            .send(StoreEvent::Disconnected(error.to_string()))
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = reachable.notified() => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Writes the status when it changes, and an unchanged one again after
/// [`REWRITE_AFTER`] (a thousand nodes rewriting theirs every second are
/// a thousand etcd writes a second), under the node's lease; once a write
/// goes through after failing, wakes the follower waiting out its backoff
/// (`reachable`): etcd is back.
pub async fn report(
    mut sink: impl StatusSink,
    mut status: watch::Receiver<NodeStatus>,
    reachable: Arc<Notify>,
) {
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    // The last status written, and when.
    let mut written: Option<(NodeStatus, tokio::time::Instant)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = status.changed() => if changed.is_err() { return },
        }
        let mut current = status.borrow_and_update().clone();
        if written
            .as_ref()
            .is_some_and(|(last, at)| *last == current && at.elapsed() < REWRITE_AFTER)
        {
            continue;
        }
        let unstamped = current.clone();
        current.updated_ms = traffic_shift_store::now_ms();
        // A stream to a member that died may hang until the transport's
        // keep-alive notices: a report that takes this long failed.
        let reported = tokio::time::timeout(REPORT_TIMEOUT, sink.report(&current))
            .await
            .unwrap_or(Err(StoreError::Timeout(REPORT_TIMEOUT)));
        written = reported
            .is_ok()
            .then(|| (unstamped, tokio::time::Instant::now()));
        match (reported, failing) {
            (Ok(()), true) => {
                failing = false;
                reachable.notify_one();
                tracing::info!("node status written to the store again");
            }
            (Err(err), false) => {
                failing = true;
                tracing::warn!(%err, "cannot write the node status to the store; trying again every second");
            }
            (Ok(()), false) | (Err(_), true) => {}
        }
    }
}

impl Agent {
    /// A store event: a new set put in force (or refused, the rules in
    /// force staying), or the store gone.
    pub(super) fn store_event(&mut self, event: StoreEvent) {
        let Some(fleet) = &mut self.sources.fleet else {
            return;
        };
        if let Some((revision, resources)) = fleet.event(event) {
            self.put_store_set(revision, &resources, false);
        }
        self.publish_node_status();
    }

    /// At start: the last store revision this node had in force, from the
    /// state directory, so that it serves it while etcd cannot be reached
    /// (the store's own revisions replace it once it answers).
    pub(super) fn restore_store_snapshot(&mut self) {
        let Some(fleet) = &self.sources.fleet else {
            return;
        };
        let Some((revision, resources)) = load_snapshot(&fleet.snapshot_file, &fleet.prefix) else {
            return;
        };
        tracing::info!(
            file = %fleet.snapshot_file.display(),
            revision,
            resources = resources.len(),
            "serving the last store revision saved, until the store answers"
        );
        self.put_store_set(revision, &Arc::new(resources), true);
        self.publish_node_status();
    }

    /// Puts the store's set at `revision` in force with the other sources,
    /// all or nothing; on success saves it (unless it was read from the
    /// saved snapshot), else records why it was refused.
    fn put_store_set(
        &mut self,
        revision: i64,
        resources: &Arc<BTreeMap<ResourceKey, String>>,
        restored: bool,
    ) {
        let Some(fleet) = &self.sources.fleet else {
            return;
        };
        let what = if restored {
            format!("store revision {revision} (saved)")
        } else {
            format!("store revision {revision}")
        };
        let result = fleet.read(resources).and_then(|(entries, file)| {
            let files = self.sources.rule_set(None, Some(file.clone()), None);
            let model = traffic_shift_config::resolve_in(&files, self.namespace.as_deref())
                .map_err(|e| e.to_string())?;
            self.install(model, &what).map_err(|e| e.to_string())?;
            Ok((entries, file))
        });
        let fleet = self.sources.fleet.as_mut().expect("checked above");
        if fleet.settle(revision, resources, result) {
            if !restored {
                fleet.save();
                if let Some(rollouts) = &self.fleet_rollouts {
                    rollouts.ready.send_replace(true);
                }
            }
            // Rules files refused before may go in now.
            self.sources.retry_refused();
            self.rescan();
        } else {
            self.observer.shared().apply_errors += 1;
        }
    }

    /// The node's status, for the reporter task.
    pub(super) fn publish_node_status(&self) {
        let Some(fleet) = &self.sources.fleet else {
            return;
        };
        fleet.publish(self.model.routes.len() + self.model.http.len());
        let in_force = self.rollouts_in_force();
        fleet.status.send_if_modified(|status| {
            let changed = status.rollouts != in_force;
            status.rollouts = in_force;
            changed
        });
        let mut shared = self.observer.shared();
        shared.store = Some(crate::metrics::StoreGauges {
            connected: fleet.connected,
            revision: fleet.revision,
            reconnects: fleet.reconnects,
        });
    }

    /// The node's per-route counters (from the status just built), for
    /// the reporter task: routes that saw traffic, at most
    /// [`MAX_ROUTES_REPORTED`] of them (the busiest).
    pub(super) fn publish_node_counters(&self, status: &crate::status::Status) {
        let Some(fleet) = &self.sources.fleet else {
            return;
        };
        let mut counters = node_counters(status);
        let left_out = counters.len().saturating_sub(MAX_ROUTES_REPORTED);
        if left_out > 0 {
            let traffic = |r: &RouteCounters| r.destinations.iter().map(|d| d.total).sum::<u64>();
            counters.sort_by_key(|r| std::cmp::Reverse(traffic(r)));
            counters.truncate(MAX_ROUTES_REPORTED);
            counters.sort_by(|a, b| a.route.cmp(&b.route));
        }
        fleet.status.send_if_modified(|node| {
            let changed = node.counters != counters || node.counters_left_out != left_out;
            node.counters = counters;
            node.counters_left_out = left_out;
            changed
        });
    }
}

/// The most routes a node status carries counters of: etcd refuses a
/// request over 1.5 MiB, and every node writes its status every second.
const MAX_ROUTES_REPORTED: usize = 500;

/// Every route of `status` that saw traffic, with its counters.
fn node_counters(status: &crate::status::Status) -> Vec<RouteCounters> {
    let name = |host: &str, subset: &Option<String>| match subset {
        Some(subset) => format!("{host}/{subset}"),
        None => host.to_owned(),
    };
    let tcp = status.routes.iter().map(|route| RouteCounters {
        route: route.route.clone(),
        kind: route.kind.clone(),
        service: route.service.clone(),
        unit: "connections".into(),
        destinations: route
            .destinations
            .iter()
            .map(|d| DestinationCounters {
                destination: name(&d.host, &d.subset),
                weight: d.weight,
                total: d.connections_total,
                last_minute: d.connections_last_minute,
                failed: d.endpoints.iter().map(|e| e.failed_total).sum(),
                duration_buckets: Vec::new(),
            })
            .collect(),
    });
    let http = status.http_routes.iter().map(|route| RouteCounters {
        route: route.route.clone(),
        kind: route.kind.clone(),
        service: route.service.clone(),
        unit: "requests".into(),
        destinations: route
            .destinations
            .iter()
            .map(|d| DestinationCounters {
                destination: name(&d.host, &d.subset),
                weight: d.weight,
                total: d.requests_total,
                last_minute: d.requests_last_minute,
                failed: d.errors_5xx_total,
                duration_buckets: d.duration_buckets.clone(),
            })
            .collect(),
    });
    tcp.chain(http)
        .filter(|r| r.destinations.iter().any(|d| d.total > 0))
        .collect()
}

#[cfg(test)]
mod tests;
