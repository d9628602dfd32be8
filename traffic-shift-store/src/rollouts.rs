//! Rollouts in a fleet: which agent drives them, their states, and the
//! operators' commands, under `PREFIX/rollouts/`:
//!
//! ```text
//! PREFIX/rollouts/leader                  the driving node's name, under that node's lease
//!                                         (TTL LEADER_TTL): whoever holds it drives every rollout
//! PREFIX/rollouts/state/<ns>/<name>       a rollout's state (JSON), written only by the driver,
//!                                         guarded by the leader key's value and the state's own
//!                                         mod revision
//! PREFIX/rollouts/commands/<ns>/<name>    an operator's command (JSON), written by any node's
//!                                         agent, consumed (deleted) by the driver in the
//!                                         transaction that writes the state it results in
//! ```
//!
//! A node campaigns with a transaction that puts the leader key only if
//! it does not exist ([`Store::campaign`]); the key goes with the lease, so
//! a driver that dies (or is cut off from etcd) loses it within the TTL and
//! another node's campaign then wins. Every state the driver writes is
//! guarded by `value(leader) == driver` and by the state key's mod revision
//! as the driver last read or wrote it ([`Store::put_rollout_state`]): a
//! driver that lost its lease, or that has not read what another driver
//! wrote, writes nothing.
//!
//! What a state or a command means is the agent's; this module knows keys,
//! revisions and bytes.

use std::{collections::BTreeMap, time::Duration};

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp, TxnOpResponse, WatchOptions,
};

use crate::{Store, StoreError, watch_response};

/// The driver's lease: a driver that stops renewing it (dead, or cut off
/// from etcd) loses the leader key this long after its last renewal.
pub const LEADER_TTL: Duration = Duration::from_secs(5);

/// What is under `PREFIX/rollouts/`, as of one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolloutsView {
    /// The store's revision it was read at (or of the last change seen).
    pub revision: i64,
    /// The driving node, if any.
    pub leader: Option<String>,
    /// By rollout (`<ns>/<name>`): its state's JSON and mod revision.
    pub states: BTreeMap<String, (String, i64)>,
    /// By rollout: the command waiting for the driver, and its mod revision.
    pub commands: BTreeMap<String, (String, i64)>,
}

/// One key of `PREFIX/rollouts/`.
enum RolloutKey {
    Leader,
    State(String),
    Command(String),
}

/// Why a driver's write did not go in.
#[derive(Debug, PartialEq, Eq)]
pub enum StateWrite {
    /// Written at this revision (the state key's new mod revision).
    Written(i64),
    /// This node does not hold the leader key (`leader`: who does).
    NotDriver { leader: Option<String> },
    /// The state (or the command consumed) is not as this driver last saw
    /// it: read them again.
    Stale,
}

/// The outcome of a campaign.
#[derive(Debug, PartialEq, Eq)]
pub enum Campaign {
    /// This node holds the leader key from this revision on.
    Won { revision: i64 },
    /// Another node holds it (read at `revision`): watch the key from
    /// `revision + 1` for its deletion.
    Lost { leader: String, revision: i64 },
}

/// A lease and its keep-alive stream.
pub struct Lease {
    pub id: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

impl Lease {
    /// Renews the lease once; `Ok(false)`: etcd no longer has it (expired).
    pub async fn renew(&mut self) -> Result<bool, etcd_client::Error> {
        self.keeper.keep_alive().await?;
        Ok(self
            .stream
            .message()
            .await?
            .is_some_and(|response| response.ttl() > 0))
    }
}

impl Store {
    fn rollouts_prefix(&self) -> String {
        format!("{}/rollouts/", self.prefix)
    }

    fn leader_key(&self) -> String {
        format!("{}/rollouts/leader", self.prefix)
    }

    fn rollout_state_key(&self, name: &str) -> String {
        format!("{}/rollouts/state/{name}", self.prefix)
    }

    fn rollout_command_key(&self, name: &str) -> String {
        format!("{}/rollouts/commands/{name}", self.prefix)
    }

    fn parse_rollout_key(&self, key: &str) -> Option<RolloutKey> {
        let rest = key.strip_prefix(&self.rollouts_prefix())?;
        if rest == "leader" {
            return Some(RolloutKey::Leader);
        }
        if let Some(name) = rest.strip_prefix("state/") {
            return Some(RolloutKey::State(name.to_owned()));
        }
        rest.strip_prefix("commands/")
            .map(|name| RolloutKey::Command(name.to_owned()))
    }

    /// Everything under `PREFIX/rollouts/` now (one consistent read).
    pub async fn read_rollouts(&self) -> Result<RolloutsView, StoreError> {
        let mut client = self.client.clone();
        let response = client
            .get(
                self.rollouts_prefix(),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(StoreError::unreachable(&self.endpoints, self.tls))?;
        let mut view = RolloutsView {
            revision: response
                .header()
                .map_or(0, etcd_client::ResponseHeader::revision),
            ..RolloutsView::default()
        };
        for kv in response.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            let value = String::from_utf8_lossy(kv.value()).into_owned();
            view.apply(self.parse_rollout_key(&key), Some(value), kv.mod_revision());
        }
        Ok(view)
    }

    /// Watches `PREFIX/rollouts/` from revision `from` (a view's
    /// `revision + 1`).
    pub async fn watch_rollouts(&self, from: i64) -> Result<RolloutsWatch, StoreError> {
        let prefix = self.rollouts_prefix();
        let options = WatchOptions::new().with_prefix().with_progress_notify();
        let stream = self.open_watch(&prefix, options, from).await?;
        Ok(RolloutsWatch {
            store: self.clone(),
            prefix,
            stream,
            from,
        })
    }

    /// A lease of `ttl`, with its keep-alive stream.
    pub async fn grant_lease(&self, ttl: Duration) -> Result<Lease, StoreError> {
        let unreachable = StoreError::unreachable(&self.endpoints, self.tls);
        let mut client = self.client.clone();
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(5).max(2);
        let granted = client.lease_grant(ttl, None).await.map_err(&unreachable)?;
        let (keeper, stream) = client
            .lease_keep_alive(granted.id())
            .await
            .map_err(&unreachable)?;
        Ok(Lease {
            id: granted.id(),
            keeper,
            stream,
        })
    }

    /// Revokes a lease (and the keys under it), best effort.
    pub async fn revoke_lease(&self, lease: i64) {
        let _ = self.client.clone().lease_revoke(lease).await;
    }

    /// Campaigns for the leader key: `If(create_revision(leader) == 0)
    /// Then put(leader, node, lease) Else get(leader)`.
    pub async fn campaign(&self, node: &str, lease: i64) -> Result<Campaign, StoreError> {
        let mut client = self.client.clone();
        let key = self.leader_key();
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                node,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let response = client
            .txn(txn)
            .await
            .map_err(StoreError::unreachable(&self.endpoints, self.tls))?;
        let revision = response
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        if response.succeeded() {
            return Ok(Campaign::Won { revision });
        }
        let leader = first_value(response.op_responses()).unwrap_or_default();
        Ok(Campaign::Lost { leader, revision })
    }

    /// Waits until the leader key is deleted (its lease expired or was
    /// revoked) after `revision`, or `limit` passed; `Ok(true)`: deleted.
    pub async fn wait_leader_gone(
        &self,
        revision: i64,
        limit: Duration,
    ) -> Result<bool, StoreError> {
        let key = self.leader_key();
        let mut stream = self
            .open_watch(&key, WatchOptions::new(), revision + 1)
            .await?;
        let wait = async {
            loop {
                let response = watch_response(&mut stream, self, &key, revision + 1).await?;
                if response
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    return Ok::<_, StoreError>(true);
                }
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(result) => result,
            Err(_) => Ok(false),
        }
    }

    /// The driver `node` writes `state` (JSON) for rollout `name`, if it
    /// still holds the leader key and the state is still at `seen` (its mod
    /// revision as the driver last read or wrote it; 0: no state), and, with
    /// `consume` (a command's mod revision), deletes that command if it is
    /// still the one read. `None` deletes the state.
    pub async fn put_rollout_state(
        &self,
        node: &str,
        name: &str,
        state: Option<&str>,
        seen: i64,
        consume: Option<i64>,
    ) -> Result<StateWrite, StoreError> {
        let mut client = self.client.clone();
        let leader = self.leader_key();
        let key = self.rollout_state_key(name);
        let command = self.rollout_command_key(name);
        let mut when = vec![
            Compare::value(leader.as_str(), CompareOp::Equal, node),
            Compare::mod_revision(key.as_str(), CompareOp::Equal, seen),
        ];
        let mut ops = vec![match state {
            Some(state) => TxnOp::put(key.as_str(), state, None),
            None => TxnOp::delete(key.as_str(), None),
        }];
        if let Some(consume) = consume {
            when.push(Compare::mod_revision(
                command.as_str(),
                CompareOp::Equal,
                consume,
            ));
            ops.push(TxnOp::delete(command.as_str(), None));
        }
        let txn = Txn::new()
            .when(when)
            .and_then(ops)
            .or_else([TxnOp::get(leader.as_str(), None)]);
        let response = client
            .txn(txn)
            .await
            .map_err(StoreError::unreachable(&self.endpoints, self.tls))?;
        if response.succeeded() {
            return Ok(StateWrite::Written(
                response
                    .header()
                    .map_or(0, etcd_client::ResponseHeader::revision),
            ));
        }
        let holder = first_value(response.op_responses());
        if holder.as_deref() == Some(node) {
            Ok(StateWrite::Stale)
        } else {
            Ok(StateWrite::NotDriver { leader: holder })
        }
    }

    /// An operator's command (JSON) for rollout `name`, for the driver;
    /// replaces one not consumed yet. Returns its revision.
    pub async fn put_rollout_command(&self, name: &str, command: &str) -> Result<i64, StoreError> {
        let response = self
            .client
            .clone()
            .put(self.rollout_command_key(name), command, None)
            .await
            .map_err(StoreError::unreachable(&self.endpoints, self.tls))?;
        Ok(response
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision))
    }
}

/// The value of the first key a transaction's `get` found.
fn first_value(responses: Vec<TxnOpResponse>) -> Option<String> {
    responses.into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        _ => None,
    })
}

impl RolloutsView {
    fn apply(&mut self, key: Option<RolloutKey>, value: Option<String>, mod_revision: i64) {
        match (key, value) {
            (Some(RolloutKey::Leader), value) => self.leader = value,
            (Some(RolloutKey::State(name)), Some(value)) => {
                self.states.insert(name, (value, mod_revision));
            }
            (Some(RolloutKey::State(name)), None) => {
                self.states.remove(&name);
            }
            (Some(RolloutKey::Command(name)), Some(value)) => {
                self.commands.insert(name, (value, mod_revision));
            }
            (Some(RolloutKey::Command(name)), None) => {
                self.commands.remove(&name);
            }
            (None, _) => {}
        }
    }
}

/// The changes under `PREFIX/rollouts/`, in revision order.
pub struct RolloutsWatch {
    store: Store,
    prefix: String,
    stream: etcd_client::WatchStream,
    /// The first revision not yet seen.
    from: i64,
}

impl RolloutsWatch {
    /// Waits for the next changes and lays them over `view`. An error ends
    /// the watch: resume from `view.revision + 1`, or read again after
    /// [`StoreError::Compacted`].
    pub async fn next(&mut self, view: &mut RolloutsView) -> Result<(), StoreError> {
        loop {
            let response =
                watch_response(&mut self.stream, &self.store, &self.prefix, self.from).await?;
            if response.events().is_empty() {
                continue;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key());
                let value = match event.event_type() {
                    EventType::Put => Some(String::from_utf8_lossy(kv.value()).into_owned()),
                    EventType::Delete => None,
                };
                view.apply(self.store.parse_rollout_key(&key), value, kv.mod_revision());
                view.revision = view.revision.max(kv.mod_revision());
            }
            self.from = view.revision + 1;
            return Ok(());
        }
    }
}
