//! Counter slots: which `TS_STATS` slot counts which endpoint of which
//! route destination.
//!
//! A slot keeps its id while its (route, destination, endpoint) stays in the
//! rules, so a weight change never resets or mixes counters. When one
//! leaves the rules its slot is retired, not freed: its open connections
//! still close and count there, and if it comes back it gets the same slot.
//! Retired slots are reused, oldest first, only when no fresh one is left;
//! the reused slot is zeroed before any table points at it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use traffic_shift_common::MAX_STATS;

pub use crate::apply::Digest;

/// What one slot counts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StatKey {
    /// `TcpRoute::key` (both address families share the slot of an endpoint).
    pub route: String,
    pub host: String,
    pub subset: Option<String>,
    pub endpoint: SocketAddr,
}

/// No slot left: every one counts an endpoint in force.
#[derive(Debug, thiserror::Error)]
#[error(
    "{wanted} route endpoints in all rules, the kernel counts at most {max}; raise --max-counters (traffic-shift run) or remove rules"
)]
pub struct StatsFull {
    pub wanted: usize,
    pub max: usize,
}

impl StatKey {
    /// What [`StatIds`] keeps of the key.
    pub fn digest(&self) -> Digest {
        Digest::of(self)
    }
}

/// A key's slot, and its endpoint (for the log of connections drained).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub id: u32,
    pub endpoint: SocketAddr,
}

#[derive(Clone, Debug)]
pub struct StatIds {
    /// By the key's digest: the keys themselves (a route key, a host, a
    /// subset) took 5 MB at 10 000 services, for nothing but telling them
    /// apart.
    ids: BTreeMap<Digest, Slot>,
    /// Retired id -> when it was retired (a sequence number), for reuse
    /// oldest first.
    retired: BTreeMap<u32, u64>,
    /// Ids never handed out start here.
    next_fresh: u32,
    /// Ids taken from retired keys by the last `assign`: zero them first.
    recycled: Vec<u32>,
    sequence: u64,
    capacity: u32,
}

impl Default for StatIds {
    fn default() -> Self {
        Self::with_capacity(MAX_STATS)
    }
}

impl StatIds {
    pub fn with_capacity(capacity: u32) -> Self {
        Self {
            ids: BTreeMap::new(),
            retired: BTreeMap::new(),
            next_fresh: 0,
            recycled: Vec::new(),
            sequence: 0,
            capacity,
        }
    }

    /// Gives every key of `live` its slot: the one it had, a fresh one, or
    /// the oldest retired one. Keys not in `live` are retired. All or
    /// nothing: on error `self` is unchanged.
    pub fn assign(
        &mut self,
        live: &BTreeSet<StatKey>,
    ) -> Result<BTreeMap<StatKey, u32>, StatsFull> {
        let mut next = self.clone();
        next.recycled.clear();
        next.sequence += 1;
        // Each key hashed once: the set tells who retires, the list who stays.
        let digests: Vec<Digest> = live.iter().map(StatKey::digest).collect();
        let live_digests: BTreeSet<Digest> = digests.iter().copied().collect();
        let retiring: Vec<u32> = next
            .ids
            .iter()
            .filter(|(k, slot)| !live_digests.contains(*k) && !next.retired.contains_key(&slot.id))
            .map(|(_, slot)| slot.id)
            .collect();
        for id in retiring {
            next.retired.insert(id, next.sequence);
        }
        let mut out = BTreeMap::new();
        for (key, &digest) in live.iter().zip(&digests) {
            let id = if let Some(slot) = next.ids.get(&digest) {
                next.retired.remove(&slot.id);
                slot.id
            } else {
                let id = next.take_id().ok_or(StatsFull {
                    wanted: live.len(),
                    max: self.capacity as usize,
                })?;
                let endpoint = key.endpoint;
                next.ids.insert(digest, Slot { id, endpoint });
                id
            };
            out.insert(key.clone(), id);
        }
        *self = next;
        Ok(out)
    }

    fn take_id(&mut self) -> Option<u32> {
        if self.next_fresh < self.capacity {
            self.next_fresh += 1;
            return Some(self.next_fresh - 1);
        }
        let (&oldest, _) = self.retired.iter().min_by_key(|(id, seq)| (**seq, **id))?;
        self.retired.remove(&oldest);
        self.ids.retain(|_, slot| slot.id != oldest);
        self.recycled.push(oldest);
        Some(oldest)
    }

    /// Slots the last `assign` took over from retired keys: their counters
    /// belong to someone else and must be zeroed before use.
    pub fn recycled(&self) -> &[u32] {
        &self.recycled
    }

    /// The slot of `key`, if it has one (in force or retired).
    pub fn get(&self, key: &StatKey) -> Option<u32> {
        self.ids.get(&key.digest()).map(|slot| slot.id)
    }

    /// Every key with a slot (by its digest), in force or retired.
    pub fn iter(&self) -> impl Iterator<Item = (&Digest, &Slot)> {
        self.ids.iter()
    }

    pub fn is_retired(&self, id: u32) -> bool {
        self.retired.contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(route: &str, port: u16) -> StatKey {
        StatKey {
            route: route.into(),
            host: "tcp-echo.local".into(),
            subset: Some("v1".into()),
            endpoint: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn set(keys: &[StatKey]) -> BTreeSet<StatKey> {
        keys.iter().cloned().collect()
    }

    #[test]
    fn a_key_keeps_its_slot_across_applies_and_when_it_comes_back() {
        let mut ids = StatIds::with_capacity(8);
        let first = ids.assign(&set(&[key("a", 1), key("a", 2)])).unwrap();
        let second = ids.assign(&set(&[key("a", 2), key("b", 3)])).unwrap();
        assert_eq!(first[&key("a", 2)], second[&key("a", 2)]);
        assert_ne!(
            second[&key("b", 3)],
            first[&key("a", 1)],
            "a retired slot is not reused while fresh ones remain"
        );
        assert!(ids.is_retired(first[&key("a", 1)]));
        let third = ids.assign(&set(&[key("a", 1)])).unwrap();
        assert_eq!(
            third[&key("a", 1)],
            first[&key("a", 1)],
            "it comes back to its own counters"
        );
        assert!(ids.recycled().is_empty());
    }

    #[test]
    fn when_full_the_oldest_retired_slot_is_reused_and_reported_for_zeroing() {
        let mut ids = StatIds::with_capacity(2);
        let first = ids.assign(&set(&[key("a", 1), key("a", 2)])).unwrap();
        ids.assign(&set(&[key("a", 2)])).unwrap();
        let third = ids.assign(&set(&[key("a", 2), key("b", 3)])).unwrap();
        assert_eq!(third[&key("b", 3)], first[&key("a", 1)]);
        assert_eq!(ids.recycled(), &[first[&key("a", 1)]]);
        assert!(
            ids.iter().all(|(k, _)| *k != key("a", 1).digest()),
            "the old key lost its slot"
        );
        assert_eq!(ids.get(&key("a", 1)), None);
        assert_eq!(ids.get(&key("b", 3)), Some(first[&key("a", 1)]));
    }

    #[test]
    fn more_live_keys_than_slots_is_refused_and_changes_nothing() {
        let mut ids = StatIds::with_capacity(2);
        let before = ids.assign(&set(&[key("a", 1)])).unwrap();
        let err = ids
            .assign(&set(&[key("a", 1), key("a", 2), key("a", 3)]))
            .unwrap_err();
        assert_eq!((err.wanted, err.max), (3, 2));
        assert_eq!(ids.assign(&set(&[key("a", 1)])).unwrap(), before);
        assert_eq!(ids.iter().count(), 1);
    }
}
