//! `--drain-timeout`: the connections still open to endpoints that left
//! the rules are closed this long after they left (a health exclusion does
//! not count: those connections are not cut).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use traffic_shift_config::model::RoutingModel;
use traffic_shift_datapath::{
    compile,
    stats::{StatIds, StatKey},
};

use super::kernel::Kernel;

pub struct Drain {
    timeout: Option<Duration>,
    /// Counter slots of endpoints that left the rules, and since when.
    draining: BTreeMap<u32, Instant>,
}

impl Drain {
    pub fn new(timeout: Option<Duration>) -> Self {
        Self {
            timeout,
            draining: BTreeMap::new(),
        }
    }

    /// Notes the counter slots whose endpoints left the rules of `model`.
    pub fn track_removed(&mut self, model: &RoutingModel, stat_ids: &StatIds) {
        if self.timeout.is_none() {
            return;
        }
        let live: BTreeSet<_> = compile::stat_keys(model)
            .iter()
            .map(StatKey::digest)
            .collect();
        let now = Instant::now();
        for (key, slot) in stat_ids.iter() {
            if live.contains(key) {
                self.draining.remove(&slot.id);
            } else {
                self.draining.entry(slot.id).or_insert(now);
            }
        }
    }

    /// Closes the routed connections of endpoints that left the rules more
    /// than --drain-timeout ago.
    pub fn run(&mut self, now: Instant, kernel: &Kernel) {
        let Some(timeout) = self.timeout else {
            return;
        };
        let due: BTreeSet<u32> = self
            .draining
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= timeout)
            .map(|(id, _)| *id)
            .collect();
        if due.is_empty() {
            return;
        }
        let endpoints: Vec<String> = kernel
            .stat_ids
            .iter()
            .filter(|(_, slot)| due.contains(&slot.id))
            .map(|(_, slot)| slot.endpoint.to_string())
            .collect();
        match traffic_shift_datapath::drain::close_routed(
            &kernel.netns,
            kernel.datapath.conns_fd(),
            &due,
        ) {
            Ok(closed) => tracing::info!(
                closed,
                endpoints = %endpoints.join(" "),
                timeout = ?timeout,
                "drain timeout: closed the connections still open to endpoints removed from the rules"
            ),
            Err(err) => {
                tracing::warn!(%err, endpoints = %endpoints.join(" "), "drain timeout: cannot close the connections of removed endpoints");
            }
        }
        for id in due {
            self.draining.remove(&id);
        }
    }
}
