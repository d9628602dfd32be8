//! The bytes of routed connections still open, read when the agent reads
//! the counters rather than reported by a program per ACK.
//!
//! `sock_ops` adds a connection's bytes to `TS_STATS` at its close. While
//! it is open, [`OpenBytes::refresh`] reads its byte counters with a
//! sock_diag dump of the `--netns` namespace (`INET_DIAG_INFO`, with the
//! socket's `TS_CONNS` value naming its slot: [`crate::drain::routed`]).
//! A slot's bytes are then `TS_STATS` (closed connections) plus those of
//! its open connections, never more than were moved:
//!
//! - `TS_STATS` is read before the dump, so a connection that closes in
//!   between is in neither (counted at the next refresh), never in both;
//! - an open connection's bytes are certain ones (see `Routed::moved`);
//! - a slot answers the most it ever answered, so a counter never goes
//!   back (a connection seen open that closes before the next refresh
//!   read `TS_STATS` is in neither for that moment).
//!
//! Connections of clients in other network namespaces are counted at
//! their close only: sock_diag reports on one namespace.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use traffic_shift_common::EndpointStats;

use crate::DatapathError;

/// Request and response bytes.
type Bytes = (u64, u64);

/// Reads the bytes of open routed connections (shared by the counters'
/// readers).
#[derive(Debug)]
pub struct OpenBytes {
    netns: PathBuf,
    /// `TS_CONNS`, as sock_diag takes it.
    conns: OwnedFd,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// A refresh dumped once (the first one always does: connections may
    /// be open from before this agent).
    started: bool,
    /// Slots with open routed connections at the last refresh.
    open_slots: HashSet<u32>,
    /// Per slot, as of the last refresh: `TS_STATS`' bytes read before the
    /// dump plus the open connections' in the dump.
    view: HashMap<u32, Bytes>,
    /// Per slot whose bytes came from a view: the most answered since.
    answered: HashMap<u32, Bytes>,
    /// A failed dump was logged.
    failed: bool,
}

impl OpenBytes {
    pub(crate) fn new(netns: &Path, conns: BorrowedFd<'_>) -> Result<Self, DatapathError> {
        let conns = conns
            .try_clone_to_owned()
            .map_err(|source| DatapathError::OpenBytes { source })?;
        Ok(Self {
            netns: netns.to_owned(),
            conns,
            state: Mutex::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the open connections' bytes. `marked` are the slots the kernel
    /// touched since the last refresh (where new connections are), and
    /// `closed` reads a slot's bytes in `TS_STATS`. Nothing to do, and no
    /// dump, while no slot has an open connection or moved.
    pub(crate) fn refresh(
        &self,
        marked: impl IntoIterator<Item = u32>,
        closed: impl Fn(u32) -> Option<Bytes>,
    ) {
        let mut state = self.state();
        let candidates: BTreeSet<u32> = state.open_slots.iter().copied().chain(marked).collect();
        if candidates.is_empty() && state.started {
            state.view.clear();
            return;
        }
        state.started = true;
        // Before the dump: see the module's comment.
        let base: Vec<(u32, Bytes)> = candidates
            .into_iter()
            .filter_map(|id| Some((id, closed(id)?)))
            .collect();
        let routed = match crate::drain::routed(&self.netns, self.conns.as_fd()) {
            Ok(routed) => routed,
            Err(source) => {
                if !std::mem::replace(&mut state.failed, true) {
                    let err = DatapathError::OpenBytes { source };
                    tracing::warn!(%err, "the bytes of open connections are counted at their close only until it works");
                }
                state.view.clear();
                return;
            }
        };
        let mut open: HashMap<u32, Bytes> = HashMap::new();
        for conn in &routed {
            if let Some((request, response)) = conn.moved() {
                let sum = open.entry(conn.stat_id).or_default();
                sum.0 += request;
                sum.1 += response;
            }
        }
        // A slot whose `TS_STATS` was not read before the dump (a new
        // connection's mark taken meanwhile) waits for the next refresh.
        state.view = base
            .into_iter()
            .map(|(id, (request, response))| {
                let (open_request, open_response) = open.get(&id).copied().unwrap_or_default();
                (id, (request + open_request, response + open_response))
            })
            .collect();
        state.open_slots = open.into_keys().collect();
    }

    /// Slots with open connections at the last refresh: their bytes grow
    /// without the kernel marking them.
    pub(crate) fn open_slots(&self) -> Vec<u32> {
        self.state().open_slots.iter().copied().collect()
    }

    /// `counters` (slot `id` as `TS_STATS` has it now) with the bytes of its
    /// open connections: the most known, and never less than answered
    /// before.
    pub(crate) fn merge(&self, id: u32, mut counters: EndpointStats) -> EndpointStats {
        let mut state = self.state();
        let state = &mut *state;
        let closed = (counters.request_bytes, counters.response_bytes);
        let best = match (state.view.get(&id), state.answered.get(&id)) {
            (None, None) => return counters,
            (view, answered) => [Some(&closed), view, answered]
                .into_iter()
                .flatten()
                .fold((0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1))),
        };
        if best == closed && !state.view.contains_key(&id) {
            // `TS_STATS` caught up (the connections closed): plain again.
            state.answered.remove(&id);
        } else {
            state.answered.insert(id, best);
        }
        counters.request_bytes = best.0;
        counters.response_bytes = best.1;
        counters
    }

    /// Slot `id` was zeroed for reuse: what it answered is gone with it.
    pub(crate) fn forget(&self, id: u32) {
        let mut state = self.state();
        state.answered.remove(&id);
        state.view.remove(&id);
        state.open_slots.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_bytes() -> OpenBytes {
        let null = std::fs::File::open("/dev/null").expect("/dev/null");
        OpenBytes {
            netns: PathBuf::from("/proc/self/ns/net"),
            conns: null.into(),
            state: Mutex::default(),
        }
    }

    fn stats(request_bytes: u64, response_bytes: u64) -> EndpointStats {
        EndpointStats {
            request_bytes,
            response_bytes,
            ..EndpointStats::default()
        }
    }

    fn bytes(s: EndpointStats) -> Bytes {
        (s.request_bytes, s.response_bytes)
    }

    #[test]
    fn a_slot_without_open_connections_is_as_the_kernel_has_it() {
        let open = open_bytes();
        assert_eq!(bytes(open.merge(3, stats(10, 20))), (10, 20));
        assert!(open.state().answered.is_empty());
    }

    /// Open connections add to the closed ones; once they close (their
    /// bytes now in `TS_STATS`) and before `TS_STATS` is read again, the
    /// slot does not go back; when `TS_STATS` has caught up it is plain.
    #[test]
    fn a_slot_with_open_connections_never_goes_back() {
        let open = open_bytes();
        open.state().view.insert(3, (10 + 6, 20 + 10));
        assert_eq!(bytes(open.merge(3, stats(10, 20))), (16, 30));
        open.state().view.clear();
        assert_eq!(bytes(open.merge(3, stats(10, 20))), (16, 30), "never less");
        assert_eq!(bytes(open.merge(3, stats(16, 30))), (16, 30));
        assert!(open.state().answered.is_empty(), "plain again");
        assert_eq!(bytes(open.merge(3, stats(17, 31))), (17, 31));
    }

    #[test]
    fn a_slot_zeroed_for_reuse_starts_over() {
        let open = open_bytes();
        open.state().view.insert(3, (16, 30));
        open.state().open_slots.insert(3);
        assert_eq!(bytes(open.merge(3, stats(10, 20))), (16, 30));
        open.forget(3);
        assert_eq!(bytes(open.merge(3, stats(0, 0))), (0, 0));
        assert!(open.open_slots().is_empty());
    }
}
