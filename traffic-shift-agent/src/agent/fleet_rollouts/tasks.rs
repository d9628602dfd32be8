//! The two tasks that talk to the store for the fleet's rollouts, so the
//! agent loop never waits on etcd: [`follow`] (every node: the states
//! and commands under `PREFIX/rollouts/`) and [`drive`] (the campaign for
//! the leader key, and while elected, the driver's writes).

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use tokio::sync::{mpsc, watch};
use traffic_shift_store::{
    Campaign, LEADER_TTL, Lease, NodesWatch, RolloutsView, StateWrite, Store, StoreError,
};

use super::{
    BACKOFF_MAX, BACKOFF_MIN, DriverRequest, LEASE_MARGIN, Nodes, REQUEST_TIMEOUT, RolloutsEvent,
};

/// Lists `PREFIX/rollouts/`, then follows its changes, sending the whole
/// view after each; on an error, says so and, with backoff, resumes the
/// watch where it stopped (or reads again if etcd compacted past it).
pub(super) async fn follow(store: Store, events: mpsc::Sender<RolloutsEvent>) {
    let mut backoff = BACKOFF_MIN;
    let mut seen: Option<RolloutsView> = None;
    loop {
        let started = match seen.take() {
            Some(view) => match store.watch_rollouts(view.revision + 1).await {
                Ok(watch) => Ok((view, watch)),
                Err(err) => {
                    seen = Some(view);
                    Err(err)
                }
            },
            None => match store.read_rollouts().await {
                Ok(view) => store
                    .watch_rollouts(view.revision + 1)
                    .await
                    .map(|watch| (view, watch)),
                Err(err) => Err(err),
            },
        };
        let error = match started {
            Ok((mut view, mut watch)) => {
                backoff = BACKOFF_MIN;
                if events
                    .send(RolloutsEvent::View(view.clone()))
                    .await
                    .is_err()
                {
                    return;
                }
                loop {
                    match watch.next(&mut view).await {
                        Ok(()) => {
                            if events
                                .send(RolloutsEvent::View(view.clone()))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Err(err) => {
                            if !matches!(err, StoreError::Compacted { .. }) {
                                seen = Some(view);
                            }
                            break err;
                        }
                    }
                }
            }
            Err(err) => err,
        };
        if matches!(error, StoreError::Compacted { .. }) {
            continue;
        }
        if events
            .send(RolloutsEvent::Disconnected(error.to_string()))
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Campaigns (once `ready`), drives while elected, and campaigns again
/// when deposed: see the module doc.
/// Who campaigns: the store, the node's name, and where the lease it
/// drives under is kept for [`FleetRollouts::resign`].
pub(super) struct Driver {
    pub(super) store: Store,
    pub(super) node: String,
    pub(super) held: Arc<std::sync::Mutex<Option<i64>>>,
}

impl Driver {
    fn hold(&self, lease: Option<i64>) {
        *self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = lease;
    }
}

pub(super) async fn drive(
    driver: Driver,
    mut ready: watch::Receiver<bool>,
    mut requests: mpsc::UnboundedReceiver<DriverRequest>,
    events: mpsc::Sender<RolloutsEvent>,
    nodes: watch::Sender<Nodes>,
) {
    if ready.wait_for(|r| *r).await.is_err() {
        return;
    }
    let (store, node) = (&driver.store, &driver.node);
    let mut epoch = 0;
    let mut backoff = BACKOFF_MIN;
    loop {
        // Requests of an epoch gone are dropped.
        while requests.try_recv().is_ok() {}
        let lease = match store.grant_lease(LEADER_TTL).await {
            Ok(lease) => lease,
            Err(err) => {
                tracing::debug!(%err, "cannot campaign for the rollouts' leader key");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        match store.campaign(node, lease.id).await {
            Ok(Campaign::Won { revision }) => {
                driver.hold(Some(lease.id));
                tracing::info!(
                    revision,
                    lease = lease.id,
                    "won the rollouts' leader key: this node drives the rollouts"
                );
            }
            Ok(Campaign::Lost { leader, revision }) => {
                store.revoke_lease(lease.id).await;
                tracing::debug!(%leader, "another node drives the rollouts; watching its leader key");
                if let Err(err) = store.wait_leader_gone(revision, LEADER_TTL * 2).await {
                    tracing::debug!(%err, "cannot watch the rollouts' leader key");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                continue;
            }
            Err(err) => {
                store.revoke_lease(lease.id).await;
                tracing::debug!(%err, "cannot campaign for the rollouts' leader key");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        }
        backoff = BACKOFF_MIN;
        let reason = lead(
            store,
            node,
            lease,
            &mut epoch,
            &mut requests,
            &events,
            &nodes,
        )
        .await;
        driver.hold(None);
        let Some(reason) = reason else { return };
        tracing::warn!(%reason, "this node no longer drives the rollouts; the weights in force stay");
        if events
            .send(RolloutsEvent::Deposed { epoch, reason })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Drives while the lease holds: returns why it stopped (`None`: the agent
/// is gone).
async fn lead(
    store: &Store,
    node: &str,
    mut lease: Lease,
    epoch: &mut u64,
    requests: &mut mpsc::UnboundedReceiver<DriverRequest>,
    events: &mpsc::Sender<RolloutsEvent>,
    nodes: &watch::Sender<Nodes>,
) -> Option<String> {
    let mut renewed = Instant::now();
    // Mod revisions of the states as this driver read or wrote them.
    let mut revisions: BTreeMap<String, i64> = BTreeMap::new();
    // Writes not yet through (etcd unreachable), the latest per rollout.
    let mut pending: BTreeMap<String, DriverRequest> = BTreeMap::new();
    let mut elect = true;
    let mut nodes_watch: Option<NodesWatch> = None;
    let mut tick = tokio::time::interval(LEADER_TTL / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if elect {
            // What the last driver wrote: read after the campaign, so that
            // none of its writes (guarded by its leader key) can follow.
            let view = match tokio::time::timeout(REQUEST_TIMEOUT, store.read_rollouts()).await {
                Ok(Ok(view)) => view,
                Ok(Err(err)) => return Some(format!("cannot read the rollouts' states: {err}")),
                Err(_) => {
                    return Some("cannot read the rollouts' states: etcd did not answer".into());
                }
            };
            *epoch += 1;
            revisions = view
                .states
                .iter()
                .map(|(n, (_, r))| (n.clone(), *r))
                .collect();
            pending.clear();
            while requests.try_recv().is_ok() {}
            events
                .send(RolloutsEvent::Elected {
                    epoch: *epoch,
                    view,
                })
                .await
                .ok()?;
            elect = false;
        }
        if nodes_watch.is_none()
            && let Ok(Ok(watch)) = tokio::time::timeout(REQUEST_TIMEOUT, store.watch_nodes()).await
        {
            nodes.send_replace(Arc::new(watch.nodes.clone()));
            nodes_watch = Some(watch);
        }
        let due = tokio::select! {
            _ = tick.tick() => {
                let sent = Instant::now();
                match tokio::time::timeout(REQUEST_TIMEOUT, lease.renew()).await {
                    Ok(Ok(true)) => renewed = sent,
                    Ok(Ok(false)) => return Some("its lease expired".into()),
                    Ok(Err(err)) => tracing::warn!(%err, "cannot renew the rollouts' leader lease"),
                    Err(_) => tracing::warn!("cannot renew the rollouts' leader lease: etcd did not answer"),
                }
                if renewed.elapsed() + LEASE_MARGIN >= LEADER_TTL {
                    return Some(format!(
                        "its lease was not renewed for {} ms (TTL {} s)",
                        renewed.elapsed().as_millis(),
                        LEADER_TTL.as_secs()
                    ));
                }
                !pending.is_empty()
            }
            request = requests.recv() => {
                queue(&mut pending, request?, *epoch);
                while let Ok(request) = requests.try_recv() {
                    queue(&mut pending, request, *epoch);
                }
                !pending.is_empty()
            }
            changed = next_nodes(&mut nodes_watch) => {
                match changed {
                    Ok(()) => {
                        if let Some(watch) = &nodes_watch {
                            nodes.send_replace(Arc::new(watch.nodes.clone()));
                        }
                    }
                    Err(err) => {
                        tracing::debug!(%err, "the nodes' watch ended; watching again");
                        nodes_watch = None;
                    }
                }
                false
            }
        };
        if !due {
            continue;
        }
        match flush(store, node, &mut pending, &mut revisions).await {
            Flushed::Done => {}
            Flushed::Stale => elect = true,
            Flushed::NotDriver(reason) => return Some(reason),
        }
    }
}

/// Queues a write of this epoch, replacing one of the same rollout (whose
/// command to consume it keeps).
fn queue(pending: &mut BTreeMap<String, DriverRequest>, mut request: DriverRequest, epoch: u64) {
    if request.epoch != epoch {
        return;
    }
    if let Some(before) = pending.remove(&request.name) {
        request.consume = request.consume.or(before.consume);
    }
    pending.insert(request.name.clone(), request);
}

/// What [`flush`] came to.
enum Flushed {
    /// Written, or left for later (etcd did not answer).
    Done,
    /// A state or command changed under the driver: read them again.
    Stale,
    /// This node no longer holds the leader key.
    NotDriver(String),
}

/// Writes the pending states, each guarded (see the module doc).
async fn flush(
    store: &Store,
    node: &str,
    pending: &mut BTreeMap<String, DriverRequest>,
    revisions: &mut BTreeMap<String, i64>,
) -> Flushed {
    let names: Vec<String> = pending.keys().cloned().collect();
    for name in names {
        let request = &pending[&name];
        let seen = revisions.get(&name).copied().unwrap_or(0);
        let written = tokio::time::timeout(
            REQUEST_TIMEOUT,
            store.put_rollout_state(node, &name, request.state.as_deref(), seen, request.consume),
        )
        .await
        .unwrap_or(Err(StoreError::Timeout(REQUEST_TIMEOUT)));
        match written {
            Ok(StateWrite::Written(revision)) => {
                let deleted = request.state.is_none();
                pending.remove(&name);
                if deleted {
                    revisions.remove(&name);
                } else {
                    revisions.insert(name, revision);
                }
            }
            Ok(StateWrite::NotDriver { leader }) => {
                return Flushed::NotDriver(format!(
                    "the leader key is {}",
                    leader.map_or_else(|| "gone".to_owned(), |l| format!("held by {l}"))
                ));
            }
            Ok(StateWrite::Stale) => {
                tracing::warn!(rollout = %name, "a rollout's state or command changed under the driver; reading them again");
                return Flushed::Stale;
            }
            Err(err) => {
                tracing::warn!(rollout = %name, %err, "cannot write the rollout's state; trying again");
                return Flushed::Done;
            }
        }
    }
    Flushed::Done
}

/// The next change of the nodes' watch; never, without one.
async fn next_nodes(watch: &mut Option<NodesWatch>) -> Result<(), StoreError> {
    match watch {
        Some(watch) => watch.next().await.map(|_| ()),
        None => std::future::pending().await,
    }
}
