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
//! (the rules in force stay). [`report`] writes the status the loop
//! publishes when it changes, and at least every [`REWRITE_AFTER`].

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use tokio::sync::{mpsc, watch};
use traffic_shift_config::RulesFile;
use traffic_shift_store::{Batch, Listing, NodeStatus, ResourceKey, Store, StoreError};

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
    /// The changes after the last list or batch. An error ends them: list again.
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
}

/// With `--store`: connects (lazily) and starts the two tasks; the events
/// come on the receiver.
pub async fn open(
    options: &super::AgentOptions,
) -> Result<(Option<Fleet>, Option<mpsc::Receiver<StoreEvent>>), StoreError> {
    let Some(url) = &options.store else {
        return Ok((None, None));
    };
    let node = options.node.clone().unwrap_or_else(super::host_name);
    let (fleet, events) = start(
        url,
        &options.store_prefix,
        &options.store_tls.files(),
        &node,
    )
    .await?;
    Ok((Some(fleet), Some(events)))
}

/// Connects (lazily) and starts the two tasks; the events come on the receiver.
pub async fn start(
    url: &traffic_shift_store::StoreUrl,
    prefix: &str,
    tls: &traffic_shift_store::TlsFiles,
    node: &str,
) -> Result<(Fleet, mpsc::Receiver<StoreEvent>), StoreError> {
    let store = Store::connect(url, prefix, tls).await?;
    tracing::info!(store = %url, %prefix, %node, "following the store");
    Ok(start_on(store, &url.to_string(), node))
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
    tokio::spawn(report(store.node_reporter(node, LEASE_TTL), status_rx));
    tokio::spawn(follow(Etcd { store, watch: None }, events));
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
                } else if self.revision == 0 && self.first_error.as_ref() != Some(&error) {
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
        }
        self.connected = true;
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
    /// rules in force stay); returns whether it went in.
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
/// an error, says so and starts over with backoff.
pub async fn follow(mut source: impl RulesSource, events: mpsc::Sender<StoreEvent>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let error = match source.list().await {
            Ok(listing) => {
                backoff = BACKOFF_MIN;
                let mut resources = listing.resources;
                let snapshot = |revision, resources: &BTreeMap<_, _>| StoreEvent::Snapshot {
                    revision,
                    resources: Arc::new(resources.clone()),
                };
                if events
                    .send(snapshot(listing.revision, &resources))
                    .await
                    .is_err()
                {
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
                            if events
                                .send(snapshot(batch.revision, &resources))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Err(err) => break err,
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
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Writes the status when it changes, and an unchanged one again after
/// [`REWRITE_AFTER`] (a thousand nodes rewriting theirs every second are
/// a thousand etcd writes a second), under the node's lease.
pub async fn report(mut sink: impl StatusSink, mut status: watch::Receiver<NodeStatus>) {
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
        let Some((revision, resources)) = fleet.event(event) else {
            return;
        };
        let result = fleet.read(&resources).and_then(|(entries, file)| {
            let files = self.sources.rule_set(None, Some(file.clone()), None);
            let model = traffic_shift_config::resolve(&files).map_err(|e| e.to_string())?;
            self.install(model, &format!("store revision {revision}"))
                .map_err(|e| e.to_string())?;
            Ok((entries, file))
        });
        let fleet = self.sources.fleet.as_mut().expect("checked above");
        if fleet.settle(revision, &resources, result) {
            // Rules files refused before may go in now.
            self.sources.refused.clear();
            self.rescan();
        } else {
            self.observer.shared().apply_errors += 1;
        }
        self.publish_node_status();
    }

    /// The node's status, for the reporter task.
    pub(super) fn publish_node_status(&self) {
        if let Some(fleet) = &self.sources.fleet {
            fleet.publish(self.model.routes.len() + self.model.http.len());
        }
    }
}

#[cfg(test)]
mod tests;
