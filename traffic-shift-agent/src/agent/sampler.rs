//! The kernel's per-slot counters as the agent knows them: read only where
//! the kernel marked a slot touched (`TS_TOUCHED`), so a tick costs what
//! moved, not what exists. Slots that never moved take no memory.
//!
//! The last-minute figures are a running sum: each tick adds what moved
//! and takes out what moved a minute ago.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use traffic_shift_common::EndpointStats;
use traffic_shift_datapath::KernelCounters;

/// How far back the last-minute figures look.
const WINDOW: Duration = Duration::from_mins(1);

#[derive(Default)]
pub struct Sampler {
    /// Slot -> its counters as last read (slots seen nonzero only).
    now: HashMap<u32, EndpointStats>,
    /// Slot -> what moved over the last minute (nonzero only).
    minute: HashMap<u32, EndpointStats>,
    /// Per tick, what moved (by slot, in slot order): the last minute of
    /// ticks that moved anything.
    moves: VecDeque<(Instant, Vec<(u32, EndpointStats)>)>,
    /// Whether the last tick moved anything (the newest of `moves` is
    /// what it moved).
    last_moved: bool,
    /// Slots marked in the last tick, read once more in this one: a
    /// program marks a slot before its counter moves.
    again: Vec<u32>,
    /// Whether the first tick (every slot in use read) was taken.
    started: bool,
}

/// What a tick saw.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Slots whose counters moved (or whose last-minute figures changed).
    pub changed: Vec<u32>,
    /// Slots seen nonzero for the first time.
    pub new: Vec<u32>,
}

impl Tick {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
    }
}

impl Sampler {
    /// Reads the slots marked since the last tick and those with open
    /// connections, whose bytes grow unmarked (every slot of `in_use` at
    /// the first tick: counts from before this agent started).
    pub fn tick(
        &mut self,
        at: Instant,
        counters: &KernelCounters,
        in_use: impl Iterator<Item = u32>,
    ) -> Tick {
        let marked = counters.touched().take();
        counters.refresh_open_bytes(&marked);
        let baseline = !self.started;
        let mut read: Vec<u32> = if baseline {
            self.started = true;
            in_use.collect()
        } else {
            Vec::new()
        };
        read.extend(marked.iter().copied());
        read.extend(counters.open_slots());
        read.append(&mut std::mem::replace(&mut self.again, marked));
        read.sort_unstable();
        read.dedup();
        let values = read
            .into_iter()
            .filter_map(|id| counters.stats(id).ok().map(|s| (id, s)));
        if baseline {
            return self.baseline(values);
        }
        self.record(at, values)
    }

    /// The counters at start: what they counted before is not the last
    /// minute's.
    fn baseline(&mut self, values: impl Iterator<Item = (u32, EndpointStats)>) -> Tick {
        self.now = values
            .filter(|(_, value)| *value != EndpointStats::default())
            .collect();
        Tick {
            changed: Vec::new(),
            new: self.now.keys().copied().collect(),
        }
    }

    /// Takes `values` (slot, counters now) as read at `at`.
    fn record(&mut self, at: Instant, values: impl Iterator<Item = (u32, EndpointStats)>) -> Tick {
        let mut tick = Tick::default();
        let mut moved = Vec::new();
        for (id, value) in values {
            let before = self.now.get(&id).copied();
            if before == Some(value) || (before.is_none() && value == EndpointStats::default()) {
                continue;
            }
            // A slot zeroed for reuse reads less than before: all of it is new.
            let delta = match before {
                Some(before) if grew(&before, &value) => diff(&value, &before),
                _ => value,
            };
            if before.is_none() {
                tick.new.push(id);
            }
            self.now.insert(id, value);
            add(self.minute.entry(id).or_default(), &delta);
            moved.push((id, delta));
            tick.changed.push(id);
        }
        // (In slot order already when read by `tick`.)
        moved.sort_unstable_by_key(|(id, _)| *id);
        self.last_moved = !moved.is_empty();
        if self.last_moved {
            self.moves.push_back((at, moved));
        }
        while let Some((when, _)) = self.moves.front()
            && at.duration_since(*when) > WINDOW
        {
            let Some((_, old)) = self.moves.pop_front() else {
                break;
            };
            for (id, delta) in old {
                if let Some(sum) = self.minute.get_mut(&id) {
                    *sum = diff(sum, &delta);
                    if *sum == EndpointStats::default() {
                        self.minute.remove(&id);
                    }
                }
                tick.changed.push(id);
            }
        }
        tick.changed.sort_unstable();
        tick.changed.dedup();
        tick
    }

    /// A slot's counters now, and how much they grew over the last minute.
    pub fn observed(&self, id: Option<u32>) -> (EndpointStats, EndpointStats) {
        let Some(id) = id else {
            return Default::default();
        };
        let get = |m: &HashMap<u32, EndpointStats>| m.get(&id).copied().unwrap_or_default();
        (get(&self.now), get(&self.minute))
    }

    /// How much a slot's counters grew in the last tick.
    pub fn last_tick(&self, id: u32) -> EndpointStats {
        let Some((_, moved)) = self.moves.back().filter(|_| self.last_moved) else {
            return EndpointStats::default();
        };
        moved
            .binary_search_by_key(&id, |(id, _)| *id)
            .map_or_else(|_| EndpointStats::default(), |i| moved[i].1)
    }

    /// Slots that moved in the last minute.
    pub fn moving(&self) -> impl Iterator<Item = u32> + '_ {
        self.minute.keys().copied()
    }

    /// Slots zeroed for reuse by another endpoint: what they counted is gone.
    pub fn forget(&mut self, ids: &HashSet<u32>) {
        if ids.is_empty() {
            return;
        }
        self.now.retain(|id, _| !ids.contains(id));
        self.minute.retain(|id, _| !ids.contains(id));
        for (_, moved) in &mut self.moves {
            moved.retain(|(id, _)| !ids.contains(id));
        }
    }
}

/// Whether every counter of `now` is at least the one of `before`.
fn grew(before: &EndpointStats, now: &EndpointStats) -> bool {
    fields(now)
        .iter()
        .zip(fields(before))
        .all(|(now, before)| *now >= before)
}

/// The counters of `s`, in their order (it is eight `u64`s, `Pod`).
fn fields(s: &EndpointStats) -> [u64; 8] {
    bytemuck::cast(*s)
}

fn from_fields(f: [u64; 8]) -> EndpointStats {
    bytemuck::cast(f)
}

/// `a - b`, each counter (never below zero).
fn diff(a: &EndpointStats, b: &EndpointStats) -> EndpointStats {
    let (a, b) = (fields(a), fields(b));
    from_fields(std::array::from_fn(|i| a[i].saturating_sub(b[i])))
}

/// `*sum += d`, each counter.
fn add(sum: &mut EndpointStats, d: &EndpointStats) {
    let (s, d) = (fields(sum), fields(d));
    *sum = from_fields(std::array::from_fn(|i| s[i].saturating_add(d[i])));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(opened: u64, failed_refused: u64) -> EndpointStats {
        EndpointStats {
            opened,
            failed_refused,
            ..EndpointStats::default()
        }
    }

    #[test]
    fn the_minute_is_a_running_sum_of_what_moved() {
        let mut s = Sampler::default();
        let t0 = Instant::now();
        let tick = s.record(t0, [(3, stats(0, 0)), (7, stats(5, 0))].into_iter());
        assert_eq!(tick.changed, [7], "a slot still at zero is not kept");
        assert_eq!(tick.new, [7]);
        let tick = s.record(t0 + Duration::from_secs(1), [(7, stats(8, 1))].into_iter());
        assert_eq!(tick.new, Vec::<u32>::new());
        assert_eq!(s.observed(Some(7)), (stats(8, 1), stats(8, 1)));
        assert_eq!(s.last_tick(7), stats(3, 1));
        // Nothing read for a while: the first tick's 5 leave the minute
        // 61 s after they were taken, the second tick's 3 + 1 a second later.
        let tick = s.record(t0 + Duration::from_secs(61), std::iter::empty());
        assert_eq!(tick.changed, [7], "the last-minute figure changed");
        assert_eq!(s.observed(Some(7)), (stats(8, 1), stats(3, 1)));
        assert_eq!(s.last_tick(7), EndpointStats::default());
        s.record(t0 + Duration::from_secs(62), std::iter::empty());
        assert_eq!(s.observed(Some(7)), (stats(8, 1), EndpointStats::default()));
        assert_eq!(s.moving().count(), 0, "nothing moving takes no entry");
        assert_eq!(s.now.keys().collect::<Vec<_>>(), [&7]);
    }

    #[test]
    fn what_was_counted_before_the_start_is_not_the_last_minute() {
        let mut s = Sampler::default();
        s.baseline([(4, stats(9, 9)), (5, stats(0, 0))].into_iter());
        assert_eq!(s.observed(Some(4)), (stats(9, 9), EndpointStats::default()));
        assert_eq!(s.now.keys().collect::<Vec<_>>(), [&4]);
        let tick = s.record(Instant::now(), [(4, stats(10, 9))].into_iter());
        assert_eq!(tick.changed, [4]);
        assert_eq!(s.last_tick(4), stats(1, 0));
    }

    #[test]
    fn a_slot_zeroed_for_reuse_counts_from_zero() {
        let mut s = Sampler::default();
        let t0 = Instant::now();
        s.record(t0, [(1, stats(10, 0))].into_iter());
        s.forget(&HashSet::from([1]));
        assert_eq!(s.observed(Some(1)), Default::default());
        s.record(t0 + Duration::from_secs(1), [(1, stats(2, 0))].into_iter());
        assert_eq!(s.observed(Some(1)), (stats(2, 0), stats(2, 0)));
        // Zeroed and counting again before the agent forgot it: still
        // counted from zero, not as a huge negative move.
        s.record(t0 + Duration::from_secs(2), [(1, stats(1, 0))].into_iter());
        assert_eq!(s.observed(Some(1)), (stats(1, 0), stats(3, 0)));
    }
}
