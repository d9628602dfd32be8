//! Nodes: what each reports about itself at `PREFIX/nodes/<node>` (its
//! status, with per-route counters), the writer that keeps it there under
//! a lease, and the watch that follows every node's.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use etcd_client::{EventType, GetOptions, PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};

use crate::{Store, StoreError, watch_response};

/// What a node reports about itself, at `PREFIX/nodes/<node>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    /// The store revision in force on this node (0: none yet).
    pub revision: i64,
    /// `starting`: nothing from the store in force yet; `accepted`:
    /// `revision` is in force; `refused`: a later revision,
    /// `refused_revision`, could not be put in force (see `error`), and
    /// the rules of `revision` stay.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_revision: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The agent's version.
    pub version: String,
    /// The node's labels (`--node-labels`), which Gateway selectors match;
    /// `None`: not given, selectors not applied (every Gateway served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Routes in force (all sources).
    pub routes: usize,
    /// When the agent wrote this, Unix milliseconds.
    pub updated_ms: u64,
    /// What this node observed on the routes in force that saw traffic
    /// (routes without any are left out: a node with 10 000 idle routes
    /// does not write them every second).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counters: Vec<RouteCounters>,
    /// Routes with traffic left out of `counters` to keep the status
    /// small (the ones with the fewest connections or requests).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub counters_left_out: usize,
    /// The canary weight (percent) each rollout (`<ns>/<name>`) has in
    /// force on this node: the driver starts a step's clock once every
    /// live node reports the step's weight.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rollouts: BTreeMap<String, u32>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One route's counters on one node: connections (TCP routes, from the
/// kernel's per-endpoint counters) or requests (HTTP routes, from the L7
/// proxy), per destination, since the route went in on that node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCounters {
    /// The route's key, as `status` names it (e.g. `default/tcp-echo tcp[0]`).
    pub route: String,
    /// `mesh` or `gateway NAMESPACE/NAME`.
    pub kind: String,
    /// The service address or host the route serves.
    pub service: String,
    /// `connections` (TCP) or `requests` (HTTP).
    pub unit: String,
    pub destinations: Vec<DestinationCounters>,
}

/// One destination of a [`RouteCounters`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationCounters {
    /// `host` or `host/subset`.
    pub destination: String,
    /// Its configured weight on this node.
    pub weight: u32,
    /// Connections opened (or requests) since the route went in.
    pub total: u64,
    /// Of the last minute.
    pub last_minute: u64,
    /// Failed connects (or 5xx responses) since the route went in.
    pub failed: u64,
    /// Requests per latency bucket since the route went in (HTTP routes;
    /// the L7 proxy's buckets, not cumulative, the last one `+Inf`): a
    /// fleet's rollout sums them for `requestDurationP99`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duration_buckets: Vec<u64>,
}

impl Store {
    /// `PREFIX/nodes/`.
    fn nodes_prefix(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    /// Every node's status (nodes whose lease expired are gone), and the
    /// revision it was read at.
    async fn read_nodes(&self) -> Result<(i64, BTreeMap<String, NodeStatus>), StoreError> {
        let mut client = self.client.clone();
        let response = client
            .get(self.nodes_prefix(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(StoreError::unreachable(&self.endpoints, self.tls))?;
        let read_at = response
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        let mut nodes = BTreeMap::new();
        for kv in response.kvs() {
            let status = node_status(kv.key(), kv.value())?;
            nodes.insert(status.node.clone(), status);
        }
        Ok((read_at, nodes))
    }

    /// Every node's last status (nodes whose lease expired are gone).
    pub async fn nodes(&self) -> Result<Vec<NodeStatus>, StoreError> {
        Ok(self.read_nodes().await?.1.into_values().collect())
    }

    /// Every node's status now, then every change to them (a watch on
    /// `PREFIX/nodes/` from the revision of that read): for `apply --wait`
    /// and the convergence bench, which follow the nodes without listing
    /// them again and again.
    pub async fn watch_nodes(&self) -> Result<NodesWatch, StoreError> {
        let (read_at, nodes) = self.read_nodes().await?;
        let prefix = self.nodes_prefix();
        let stream = self
            .open_watch(&prefix, WatchOptions::new().with_prefix(), read_at + 1)
            .await?;
        Ok(NodesWatch {
            store: self.clone(),
            prefix,
            stream,
            from: read_at + 1,
            nodes,
        })
    }

    /// A writer of `node`'s status under a lease of `ttl`.
    pub fn node_reporter(&self, node: &str, ttl: Duration) -> NodeReporter {
        NodeReporter {
            store: self.clone(),
            key: self.node_key(node),
            ttl: i64::try_from(ttl.as_secs()).unwrap_or(10).max(2),
            lease: None,
        }
    }
}

/// A node status as stored at `key`.
pub(crate) fn node_status(key: &[u8], value: &[u8]) -> Result<NodeStatus, StoreError> {
    serde_json::from_slice(value).map_err(|err| StoreError::BadKey {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: format!("not a node status: {err}"),
    })
}

/// The nodes' statuses, kept up to date by a watch ([`Store::watch_nodes`]).
pub struct NodesWatch {
    store: Store,
    /// `PREFIX/nodes/`.
    prefix: String,
    stream: etcd_client::WatchStream,
    /// The first revision not yet seen.
    from: i64,
    /// By node name: the live nodes' last statuses.
    pub nodes: BTreeMap<String, NodeStatus>,
}

impl NodesWatch {
    /// Waits for the next changes and puts them in [`Self::nodes`] (a node
    /// whose key went, its lease expired, is removed); returns how many
    /// writes they were. An error ends the watch.
    pub async fn next(&mut self) -> Result<usize, StoreError> {
        loop {
            let response =
                watch_response(&mut self.stream, &self.store, &self.prefix, self.from).await?;
            if response.events().is_empty() {
                continue;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                self.from = self.from.max(kv.mod_revision() + 1);
                match event.event_type() {
                    EventType::Put => {
                        let status = node_status(kv.key(), kv.value())?;
                        self.nodes.insert(status.node.clone(), status);
                    }
                    EventType::Delete => {
                        let key = String::from_utf8_lossy(kv.key());
                        if let Some(node) = key.strip_prefix(self.prefix.as_str()) {
                            self.nodes.remove(node);
                        }
                    }
                }
            }
            return Ok(response.events().len());
        }
    }
}

/// Keeps a node's status key alive under a lease. A lease that etcd no
/// longer knows (expired while etcd was unreachable) is granted anew.
pub struct NodeReporter {
    store: Store,
    key: String,
    ttl: i64,
    /// The lease, its keep-alive stream, and when it was last refreshed.
    lease: Option<(
        i64,
        etcd_client::LeaseKeeper,
        etcd_client::LeaseKeepAliveStream,
        Instant,
    )>,
}

impl NodeReporter {
    /// Writes `status` under the node's lease, refreshing the lease first
    /// unless that was done within half its TTL (a status written on a
    /// change then costs one request, not two).
    pub async fn report(&mut self, status: &NodeStatus) -> Result<(), StoreError> {
        let unreachable = StoreError::unreachable(&self.store.endpoints, self.store.tls);
        let mut client = self.store.client.clone();
        let fresh = Duration::from_secs(self.ttl.unsigned_abs()) / 2;
        // Refresh the lease; one that expired (TTL 0) is replaced.
        let mut alive = false;
        if let Some((_, keeper, stream, refreshed)) = &mut self.lease {
            if refreshed.elapsed() < fresh {
                alive = true;
            } else {
                let renewed = async {
                    keeper.keep_alive().await?;
                    stream.message().await
                }
                .await;
                match renewed {
                    Ok(Some(response)) if response.ttl() > 0 => {
                        alive = true;
                        *refreshed = Instant::now();
                    }
                    Ok(_) => {
                        tracing::info!(key = %self.key, "the node's lease expired; granting a new one");
                    }
                    Err(err) => {
                        self.lease = None;
                        return Err(unreachable(err));
                    }
                }
            }
        }
        if !alive {
            self.lease = None;
            let granted = client
                .lease_grant(self.ttl, None)
                .await
                .map_err(&unreachable)?;
            let (keeper, stream) = client
                .lease_keep_alive(granted.id())
                .await
                .map_err(&unreachable)?;
            self.lease = Some((granted.id(), keeper, stream, Instant::now()));
        }
        let lease = self.lease.as_ref().map_or(0, |(id, ..)| *id);
        let value = serde_json::to_string(status).expect("a node status serializes");
        let put = client
            .put(
                self.key.as_str(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await;
        if let Err(err) = put {
            // The lease may be what is wrong: the next report grants a new one.
            self.lease = None;
            return Err(unreachable(err));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_status_labels_are_optional() {
        let old = r#"{"node":"n","revision":3,"state":"accepted","version":"0.1.0","routes":2,"updated_ms":1}"#;
        let status: NodeStatus = serde_json::from_str(old).unwrap();
        assert_eq!((status.revision, status.labels), (3, None));
        assert!(
            !serde_json::to_string(&NodeStatus::default())
                .unwrap()
                .contains("labels")
        );
        let labelled = NodeStatus {
            labels: Some(BTreeMap::from([("zone".to_owned(), "a".to_owned())])),
            ..NodeStatus::default()
        };
        let json = serde_json::to_string(&labelled).unwrap();
        assert!(json.contains(r#""labels":{"zone":"a"}"#), "{json}");
        assert_eq!(serde_json::from_str::<NodeStatus>(&json).unwrap(), labelled);
    }
}
