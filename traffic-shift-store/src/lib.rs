//! The fleet's source of truth on etcd (v3, through the `etcd-client` crate).
//!
//! Key layout under a prefix (default [`DEFAULT_PREFIX`]):
//!
//! ```text
//! PREFIX/resources                              the resources' guard: rewritten by every
//!                                               commit, so its mod revision is the revision
//!                                               of the last change to the resources
//! PREFIX/resources/<Kind>/<namespace>/<name>    one resource: its normalized document (JSON)
//! PREFIX/nodes/<node>                           a node's status (JSON), under the node's lease
//! PREFIX/rollouts/...                           who drives the rollouts, their states and the
//!                                               operators' commands (see [`rollouts`](crate::RolloutsView))
//! ```
//!
//! This crate knows keys, revisions and bytes; what a document means, and
//! whether a set of them is valid, is the caller's (the agent's `applied`
//! and `config`), so the CLI and every agent check a change with the same
//! code.
//!
//! A change is committed in one transaction guarded by the guard key's
//! mod revision as it was when the change was validated ([`Store::commit`]):
//! two writers that validated against the same set cannot both commit.
//!
//! `etcd://` talks plain gRPC; `etcds://` talks TLS and needs the CA
//! ([`TlsFiles`]), with a client certificate when etcd requires one.

use std::{collections::BTreeMap, fmt, time::Duration};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp, WatchOptions,
};

mod address;
mod nodes;
mod rollouts;

pub use address::{StoreUrl, TlsFiles};
pub use nodes::{DestinationCounters, NodeReporter, NodeStatus, NodesWatch, RouteCounters};
pub use rollouts::{Campaign, LEADER_TTL, Lease, RolloutsView, RolloutsWatch, StateWrite};

/// The prefix of every key when `--store-prefix` is not given.
pub const DEFAULT_PREFIX: &str = "/traffic-shift";

/// How long one request may take before it counts as a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to one member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a commit whose answer was lost (a member killed, a leader
/// being elected) is checked and tried again on the members left.
const COMMIT_RETRY_FOR: Duration = Duration::from_secs(20);

impl StoreError {
    /// No member answered (it may answer again: a member lost, a leader
    /// being elected); the request may be tried again.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Timeout(_))
    }
}

/// What can go wrong with the store. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "invalid store address {0:?}: write it as etcd://HOST:PORT[,HOST:PORT...], or etcds:// for TLS (e.g. etcd://127.0.0.1:2379)"
    )]
    Url(String),
    #[error(
        "invalid store prefix {0:?}: it must start with '/' and not end with '/' (e.g. /traffic-shift)"
    )]
    Prefix(String),
    #[error(
        "cannot reach etcd at {endpoints}: {source}; check that etcd runs there and that --store names its client URLs"
    )]
    Unreachable {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    /// A TLS file named by a flag cannot be read.
    #[error("cannot read {flag} file {path}: {source}")]
    TlsFile {
        flag: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The TLS flags do not fit together or with the address.
    #[error("{0}")]
    TlsOptions(String),
    /// The TLS handshake with etcd failed: no client certificate, one etcd
    /// does not trust, or a server certificate the CA does not vouch for.
    #[error(
        "TLS with etcd at {endpoints} failed: {detail}; if etcd requires client certificates (--client-cert-auth), give --store-cert and --store-key with one signed by its --trusted-ca-file (and --store-ca with the CA of its server certificate)"
    )]
    Tls { endpoints: String, detail: String },
    /// The watch cannot resume: etcd compacted its history past the
    /// revision it was at. List again.
    #[error(
        "etcd compacted its history past revision {from} (oldest kept: {compacted}): the watch cannot resume; list again"
    )]
    Compacted { from: i64, compacted: i64 },
    #[error("etcd did not answer within {0:?}; check that its members run and are reachable")]
    Timeout(Duration),
    #[error("the watch on {prefix} ended ({reason}); list again")]
    WatchEnded { prefix: String, reason: String },
    /// Another writer committed between this change's validation and its
    /// commit: nothing of this change was written.
    #[error(
        "the store changed while this change was checked (checked at revision {checked}, now at {now}): another writer committed first; nothing was written, check the change again against the new set"
    )]
    Conflict { checked: i64, now: i64 },
    /// A commit was sent, and etcd stopped answering before saying whether
    /// it went in; it could not be checked afterwards either.
    #[error(
        "cannot reach etcd at {endpoints} to learn whether the commit went in ({source}); `get` shows what the store holds once etcd answers"
    )]
    CommitUnknown {
        endpoints: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("unexpected data in etcd at {key}: {reason}; remove or fix that key (etcdctl)")]
    BadKey { key: String, reason: String },
}

impl StoreError {
    fn unreachable(endpoints: &[String], tls: bool) -> impl Fn(etcd_client::Error) -> Self + '_ {
        move |source| {
            let endpoints = endpoints.join(",");
            match tls.then(|| tls_failure(&source)).flatten() {
                Some(detail) => Self::Tls { endpoints, detail },
                None => Self::Unreachable { endpoints, source },
            }
        }
    }
}

/// Over TLS, the innermost cause of an error that came from the TLS layer,
/// if it did. With TLS 1.3, etcd checks the client's certificate after the
/// client has finished its handshake: a refused one shows as the connection
/// closed (or, when the client was writing its first request, a broken
/// pipe; or, when it was still waiting for the connection to be ready,
/// hyper's "connection was not ready") before any answer, and the alert
/// is lost on the way.
fn tls_failure(err: &etcd_client::Error) -> Option<String> {
    let mut messages = vec![err.to_string()];
    let mut next: Option<&(dyn std::error::Error + 'static)> = match err {
        etcd_client::Error::GRpcStatus(status) => std::error::Error::source(status),
        etcd_client::Error::TransportError(transport) => std::error::Error::source(transport),
        _ => None,
    };
    while let Some(cause) = next {
        messages.push(cause.to_string());
        next = cause.source();
    }
    let tls = messages.iter().any(|message| {
        let message = message.to_ascii_lowercase();
        [
            "certificate",
            "tls",
            "handshake",
            "alert",
            "connection closed",
            "broken pipe",
            "connection was not ready",
        ]
        .iter()
        .any(|word| message.contains(word))
    });
    let innermost = messages.pop().unwrap_or_default();
    tls.then(|| {
        let lower = innermost.to_ascii_lowercase();
        if [
            "connection closed",
            "broken pipe",
            "connection was not ready",
        ]
        .iter()
        .any(|word| lower.contains(word))
        {
            format!("etcd closed the connection after the handshake ({innermost})")
        } else {
            innermost
        }
    })
}

/// What identifies a resource in the store.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The resources with the revision they were read at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The revision of the last change to the resources (0: never changed).
    /// A commit checked against this listing is guarded by it.
    pub revision: i64,
    /// The store's revision when it was read: a watch from `read_at + 1`
    /// misses nothing.
    pub read_at: i64,
    /// Each resource's document (JSON text).
    pub resources: BTreeMap<ResourceKey, String>,
}

/// One change of a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Put(ResourceKey, String),
    Delete(ResourceKey),
}

/// Changes seen by a watch: every change of one or more revisions, whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// The revision of the last change in the batch.
    pub revision: i64,
    /// `None`: deleted.
    pub changes: Vec<(ResourceKey, Option<String>)>,
}

/// A client of the store under one prefix. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    client: Client,
    endpoints: Vec<String>,
    /// `etcds://`: a closed connection may be a refused certificate.
    tls: bool,
    prefix: String,
}

impl Store {
    /// Connects (lazily: a member that does not answer fails the first
    /// request, with [`StoreError::Unreachable`]).
    /// With `etcds://`, `tls` gives the CA and the client certificate
    /// (read here: a file that cannot be read is [`StoreError::TlsFile`]).
    pub async fn connect(url: &StoreUrl, prefix: &str, tls: &TlsFiles) -> Result<Self, StoreError> {
        if !prefix.starts_with('/') || prefix.ends_with('/') {
            return Err(StoreError::Prefix(prefix.to_owned()));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        if let Some(tls) = tls.options(url)? {
            options = options.with_tls(tls);
        }
        let client = Client::connect(url.endpoints(), Some(options))
            .await
            .map_err(StoreError::unreachable(url.endpoints(), url.tls()))?;
        Ok(Self {
            client,
            endpoints: url.endpoints().to_vec(),
            tls: url.tls(),
            prefix: prefix.to_owned(),
        })
    }

    /// The members, for messages.
    pub fn endpoints(&self) -> String {
        self.endpoints.join(",")
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn guard_key(&self) -> String {
        format!("{}/resources", self.prefix)
    }

    fn resources_prefix(&self) -> String {
        format!("{}/resources/", self.prefix)
    }

    fn resource_key(&self, key: &ResourceKey) -> String {
        format!(
            "{}{}/{}/{}",
            self.resources_prefix(),
            key.kind,
            key.namespace,
            key.name
        )
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}/nodes/{node}", self.prefix)
    }

    /// `PREFIX/resources/<Kind>/<namespace>/<name>` back to its key.
    fn parse_resource_key(&self, key: &str) -> Result<ResourceKey, StoreError> {
        let bad = |reason: &str| StoreError::BadKey {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = key
            .strip_prefix(&self.resources_prefix())
            .ok_or_else(|| bad("not under the resources prefix"))?;
        let mut parts = rest.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(kind), Some(namespace), Some(name))
                if !kind.is_empty() && !namespace.is_empty() && !name.is_empty() =>
            {
                Ok(ResourceKey {
                    kind: kind.to_owned(),
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(bad("expected resources/<Kind>/<namespace>/<name>")),
        }
    }

    /// Every resource, and the revisions it was read at (one consistent read).
    pub async fn list(&self) -> Result<Listing, StoreError> {
        let mut client = self.client.clone();
        let txn = Txn::new().and_then([
            TxnOp::get(self.guard_key(), None),
            TxnOp::get(
                self.resources_prefix(),
                Some(GetOptions::new().with_prefix()),
            ),
        ]);
        let response = client
            .txn(txn)
            .await
            .map_err(StoreError::unreachable(&self.endpoints, self.tls))?;
        let read_at = response
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        let mut listing = Listing {
            read_at,
            ..Listing::default()
        };
        for (i, op) in response.op_responses().into_iter().enumerate() {
            let etcd_client::TxnOpResponse::Get(get) = op else {
                continue;
            };
            for kv in get.kvs() {
                if i == 0 {
                    listing.revision = kv.mod_revision();
                    continue;
                }
                let key = String::from_utf8_lossy(kv.key());
                let value = kv.value_str().map_err(|_| StoreError::BadKey {
                    key: key.clone().into_owned(),
                    reason: "the value is not UTF-8".into(),
                })?;
                listing
                    .resources
                    .insert(self.parse_resource_key(&key)?, value.to_owned());
            }
        }
        Ok(listing)
    }

    /// A watch of `key` with `options` (its range, progress notices) from
    /// revision `from`: every watch of this crate opens through here.
    async fn open_watch(
        &self,
        key: &str,
        options: WatchOptions,
        from: i64,
    ) -> Result<etcd_client::WatchStream, StoreError> {
        self.client
            .clone()
            .watch(key, Some(options.with_start_revision(from)))
            .await
            .map_err(StoreError::unreachable(&self.endpoints, self.tls))
    }

    /// Watches the resources from revision `from` (a listing's `read_at + 1`).
    pub async fn watch(&self, from: i64) -> Result<Watch, StoreError> {
        // [PREFIX/resources, PREFIX/resources0): the guard key and every
        // resource ('0' follows '/').
        let guard = self.guard_key();
        let end = format!("{guard}0");
        let options = WatchOptions::new().with_range(end).with_progress_notify();
        let stream = self.open_watch(&guard, options, from).await?;
        Ok(Watch {
            store: self.clone(),
            stream,
            from,
        })
    }

    /// Commits `writes` in one transaction, if the resources' last change
    /// is still `checked` (a [`Listing::revision`]); returns the new
    /// revision. Otherwise nothing is written: [`StoreError::Conflict`].
    ///
    /// When etcd stops answering after the transaction was sent (the
    /// member killed, the leader lost), whether it went in is unknown, and
    /// sending it again blindly could not double-apply it (the guard would
    /// refuse the second) but could report a conflict with itself. So the
    /// guard key is read first, for up to [`COMMIT_RETRY_FOR`], from
    /// whichever member answers (a linearizable read: once it answers, a
    /// transaction of the old leader is either in or never will be): it
    /// holds this commit's stamp (a unique id) if the commit went in; it is
    /// still at `checked` if nothing was written, and the transaction is
    /// sent again, guarded as before; anything else is another writer's
    /// commit, a [`StoreError::Conflict`].
    pub async fn commit(
        &self,
        checked: i64,
        writes: &[Write],
        author: &str,
    ) -> Result<i64, StoreError> {
        let id = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let stamp =
            serde_json::json!({ "author": author, "at_ms": now_ms(), "id": id }).to_string();
        let deadline = tokio::time::Instant::now() + COMMIT_RETRY_FOR;
        let mut pause = Duration::from_millis(100);
        // Whether an attempt was sent and its answer lost.
        let mut unknown = false;
        loop {
            let lost = match self.commit_once(checked, writes, &stamp).await {
                Ok(revision) => return Ok(revision),
                Err(err @ StoreError::Conflict { .. }) if !unknown => return Err(err),
                // A conflict after a lost answer may be with this very
                // commit: the guard says.
                Err(err @ StoreError::Conflict { .. }) => err,
                Err(err) if err.is_unreachable() => {
                    unknown = true;
                    err
                }
                Err(err) => return Err(err),
            };
            // Where the guard is now, read from a member that answers.
            let guard = loop {
                match self.guard().await {
                    Ok(guard) => break guard,
                    Err(err) if err.is_unreachable() && tokio::time::Instant::now() < deadline => {
                        tracing::debug!(%err, "the commit's answer was lost; reading the guard again");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(1));
                    }
                    Err(err) => {
                        return Err(StoreError::CommitUnknown {
                            endpoints: self.endpoints(),
                            source: Box::new(if err.is_unreachable() { lost } else { err }),
                        });
                    }
                }
            };
            match guard {
                (revision, Some(found)) if found == id => {
                    tracing::info!(%lost, revision, "etcd's answer to the commit was lost; the guard shows it went in");
                    return Ok(revision);
                }
                // Nothing was written: the request failed, safe to say so
                // once the time is up.
                (revision, _) if revision == checked && lost.is_unreachable() => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(lost);
                    }
                    tracing::info!(%lost, "the commit did not go in; sending it again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                (now, _) => return Err(StoreError::Conflict { checked, now }),
            }
        }
    }

    /// The guard key: its mod revision (the resources' last change, 0 for
    /// none) and the id of the commit that wrote it.
    async fn guard(&self) -> Result<(i64, Option<String>), StoreError> {
        let mut client = self.client.clone();
        let response = client
            .get(self.guard_key(), None)
            .await
            .map_err(StoreError::unreachable(&self.endpoints, self.tls))?;
        Ok(response.kvs().first().map_or((0, None), |kv| {
            let id = serde_json::from_slice::<serde_json::Value>(kv.value())
                .ok()
                .and_then(|stamp| stamp["id"].as_str().map(str::to_owned));
            (kv.mod_revision(), id)
        }))
    }

    /// One attempt of [`Store::commit`].
    async fn commit_once(
        &self,
        checked: i64,
        writes: &[Write],
        stamp: &str,
    ) -> Result<i64, StoreError> {
        let mut client = self.client.clone();
        let mut ops: Vec<TxnOp> = writes
            .iter()
            .map(|write| match write {
                Write::Put(key, document) => {
                    TxnOp::put(self.resource_key(key), document.as_str(), None)
                }
                Write::Delete(key) => TxnOp::delete(self.resource_key(key), None),
            })
            .collect();
        ops.push(TxnOp::put(self.guard_key(), stamp, None));
        // A missing key compares as mod revision 0, the revision of a
        // listing of an empty store.
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.guard_key(),
                CompareOp::Equal,
                checked,
            )])
            .and_then(ops)
            .or_else([TxnOp::get(self.guard_key(), None)]);
        let response = client
            .txn(txn)
            .await
            .map_err(StoreError::unreachable(&self.endpoints, self.tls))?;
        let revision = response
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        if response.succeeded() {
            return Ok(revision);
        }
        let now = response
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(get) => {
                    get.kvs().first().map(etcd_client::KeyValue::mod_revision)
                }
                _ => None,
            })
            .unwrap_or(0);
        Err(StoreError::Conflict { checked, now })
    }
}

/// The changes to the resources, in revision order.
pub struct Watch {
    store: Store,
    stream: etcd_client::WatchStream,
    /// The first revision not yet seen.
    from: i64,
}

impl Watch {
    /// The next changes (every change of each revision, whole). An error
    /// ends the watch: list again (after [`StoreError::Compacted`]
    /// certainly; after others, once etcd answers).
    pub async fn next(&mut self) -> Result<Batch, StoreError> {
        loop {
            let response =
                watch_response(&mut self.stream, &self.store, &self.store.prefix, self.from)
                    .await?;
            let mut batch = Batch::default();
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                batch.revision = batch.revision.max(kv.mod_revision());
                let key = String::from_utf8_lossy(kv.key());
                if key == self.store.guard_key() {
                    continue;
                }
                let Ok(resource) = self.store.parse_resource_key(&key) else {
                    tracing::warn!(%key, "ignoring a key under the resources prefix that names no resource");
                    continue;
                };
                let document = match event.event_type() {
                    EventType::Delete => None,
                    EventType::Put => Some(String::from_utf8_lossy(kv.value()).into_owned()),
                };
                batch.changes.push((resource, document));
            }
            if batch.revision > 0 {
                self.from = batch.revision + 1;
                return Ok(batch);
            }
            // Created or progress notification: nothing changed.
        }
    }
}

/// The next response of a watch on `prefix` that was at revision `from`;
/// an error when the watch ended (closed, canceled, or compacted past `from`).
async fn watch_response(
    stream: &mut etcd_client::WatchStream,
    store: &Store,
    prefix: &str,
    from: i64,
) -> Result<etcd_client::WatchResponse, StoreError> {
    let response = stream
        .message()
        .await
        .map_err(StoreError::unreachable(&store.endpoints, store.tls))?
        .ok_or_else(|| StoreError::WatchEnded {
            prefix: prefix.to_owned(),
            reason: "etcd closed the stream".into(),
        })?;
    if response.compact_revision() > 0 {
        return Err(StoreError::Compacted {
            from,
            compacted: response.compact_revision(),
        });
    }
    if response.canceled() {
        return Err(StoreError::WatchEnded {
            prefix: prefix.to_owned(),
            reason: format!("canceled: {}", response.cancel_reason()),
        });
    }
    Ok(response)
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
