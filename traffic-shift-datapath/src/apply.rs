//! Writing the maps: [`Datapath::apply`] reconciles route tables and
//! service/gateway keys with what `compile` produced; the gateway's socket
//! map; how full the maps are.

use std::collections::{BTreeMap, BTreeSet};

use aya::maps::{HashMap, LpmTrie, MapData, MapError, lpm_trie::Key};
use traffic_shift_common::{
    PrefixData, RouteTable, ServiceKey, ServiceValue, SlotTable, SlotsKey, map_names,
};

use crate::{
    Datapath, DatapathError,
    compile::{Compiled, KernelRoute, PrefixKey},
};

/// Route ids to hand out: those below `max` not in `used`, lowest first.
struct FreeRouteIds {
    used: BTreeSet<u32>,
    next: u32,
    max: u32,
}

impl FreeRouteIds {
    fn take(&mut self) -> Result<u32, DatapathError> {
        while self.next < self.max {
            let id = self.next;
            self.next += 1;
            if self.used.insert(id) {
                return Ok(id);
            }
        }
        Err(DatapathError::NoRouteId {
            loaded: self.used.len(),
        })
    }
}

/// What one route holds in the kernel now: its id and a digest of its
/// table's bytes (enough to tell a change: a copy was 1.7 KB a route,
/// 170 MB of the agent's memory at 100 000 routes).
pub(crate) struct LoadedRoute {
    pub(crate) id: u32,
    pub(crate) table: Digest,
    /// The version of its slot table in `TS_SLOTS`, when its slots are there.
    pub(crate) slots_apart: Option<u32>,
}

/// A route table to write: its id, the route, whether it replaces one we
/// wrote, and the version of the replaced one's slot table when apart.
struct TableWrite<'a> {
    id: u32,
    route: &'a KernelRoute,
    was_loaded: bool,
    old_slots: Option<u32>,
}

/// 128 bits of a value (a table's bytes, a counter slot's key): two
/// SipHash-1-3 with keys drawn at start, so two different values collide
/// with odds of 2^-128, and none can be made to collide with another on
/// purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Digest(u64, u64);

impl Digest {
    pub fn of<T: std::hash::Hash + ?Sized>(value: &T) -> Self {
        use std::hash::BuildHasher as _;
        static KEYS: std::sync::OnceLock<[std::collections::hash_map::RandomState; 2]> =
            std::sync::OnceLock::new();
        let [a, b] = KEYS.get_or_init(Default::default);
        Self(a.hash_one(value), b.hash_one(value))
    }
}

/// What an apply changed, by route key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub routes_added: Vec<String>,
    pub routes_changed: Vec<String>,
    pub routes_removed: Vec<String>,
    /// Service and gateway keys written and removed.
    pub keys_written: usize,
    pub keys_removed: usize,
}

impl Datapath {
    /// Route id (`TS_ROUTES` key) and kernel route key (`KernelRoute::key`)
    /// of every route this agent wrote, for naming ids (`traffic-shift maps`).
    pub fn route_ids(&self) -> impl Iterator<Item = (u32, &str)> {
        self.loaded_routes
            .iter()
            .map(|(key, l)| (l.id, key.as_str()))
    }

    /// Makes the kernel hold exactly `compiled`: new and changed route tables
    /// first (one update each), then service keys, then removals.
    pub fn apply(&mut self, compiled: &Compiled) -> Result<ApplyReport, DatapathError> {
        let mut report = ApplyReport::default();
        let map_err = |name| move |source| DatapathError::Map { name, source };

        // Counter slots taken over from endpoints that left the rules start
        // from zero, before any table points at them.
        for &id in compiled.stat_ids.recycled() {
            self.zero_slot(id)?;
        }
        // Desired keys of TS_SERVICES, TS_GATEWAYS, TS_XDP_GATEWAYS.
        let mut desired: [BTreeMap<ServiceKey, ServiceValue>; 3] = Default::default();
        // Desired keys of TS_SVC_PREFIXES.
        let mut desired_prefixes: BTreeMap<PrefixKey, ServiceValue> = BTreeMap::new();
        let mut free_ids = None;
        // New and changed tables, written together below.
        let mut tables: Vec<TableWrite<'_>> = Vec::new();
        for (key, route) in &compiled.routes {
            if !self.loaded_routes.contains_key(key) {
                self.take_over_adopted(key, route);
            }
            let loaded = self.loaded_routes.get(key);
            let unchanged = loaded.is_some_and(|l| l.table == route.table.digest());
            let id = match loaded {
                Some(l) => l.id,
                None => free_ids
                    .get_or_insert_with(|| self.free_route_ids())
                    .take()?,
            };
            if !unchanged {
                tables.push(TableWrite {
                    id,
                    route,
                    was_loaded: loaded.is_some(),
                    old_slots: loaded.and_then(|l| l.slots_apart),
                });
            }
            // An XDP route is a gateway route: 0 mesh, 1 sk_lookup, 2 XDP.
            let map = usize::from(route.gateway) + usize::from(route.xdp);
            let value = ServiceValue {
                route_id: id,
                service_id: route.service_id,
            };
            for listener in &route.listeners {
                desired[map].insert(*listener, value);
            }
            for prefix in &route.prefixes {
                desired_prefixes.insert(*prefix, value);
            }
        }
        // Each table in one update (a 2 KB allocation and copy in the
        // kernel, ~7 us), on every CPU.
        let results = write_tables(&mut self.routes, &mut self.slots, &tables);
        self.record_written(tables, results, &mut report)?;
        for (map, loaded, desired, name) in [
            (
                &mut self.services,
                &mut self.loaded_services,
                &desired[0],
                map_names::SERVICES,
            ),
            (
                &mut self.gateways,
                &mut self.loaded_gateways,
                &desired[1],
                map_names::GATEWAYS,
            ),
            (
                &mut self.xdp_gateways,
                &mut self.loaded_xdp_gateways,
                &desired[2],
                map_names::XDP_GATEWAYS,
            ),
        ] {
            let (written, removed) = sync_keys(map, loaded, desired).map_err(map_err(name))?;
            report.keys_written += written;
            report.keys_removed += removed;
        }
        let (written, removed) = sync_prefixes(
            &mut self.service_prefixes,
            &mut self.loaded_prefixes,
            &desired_prefixes,
        )
        .map_err(map_err(map_names::SERVICE_PREFIXES))?;
        report.keys_written += written;
        report.keys_removed += removed;
        self.remove_routes(compiled, &mut report)?;
        Ok(report)
    }

    /// Records the tables written in our record of the map and in
    /// `report`; the first failure, after every success is recorded.
    fn record_written(
        &mut self,
        tables: Vec<TableWrite<'_>>,
        results: Vec<Result<Option<u32>, (&'static str, MapError)>>,
        report: &mut ApplyReport,
    ) -> Result<(), DatapathError> {
        let mut failed = None;
        for (write, result) in tables.into_iter().zip(results) {
            let slots_apart = match result {
                Ok(slots_apart) => slots_apart,
                Err(err) => {
                    failed.get_or_insert(err);
                    continue;
                }
            };
            let route = write.route;
            let list = if write.was_loaded {
                &mut report.routes_changed
            } else {
                &mut report.routes_added
            };
            list.push(route.key.clone());
            self.loaded_routes.insert(
                route.key.clone(),
                LoadedRoute {
                    id: write.id,
                    table: route.table.digest(),
                    slots_apart,
                },
            );
        }
        match failed {
            Some((name, source)) => Err(DatapathError::Map { name, source }),
            None => Ok(()),
        }
    }

    /// Removes the route tables `compiled` no longer has, and a previous
    /// agent's that no key points at any more (after the keys are gone).
    fn remove_routes(
        &mut self,
        compiled: &Compiled,
        report: &mut ApplyReport,
    ) -> Result<(), DatapathError> {
        let map_err = |name| move |source| DatapathError::Map { name, source };
        let gone: Vec<String> = self
            .loaded_routes
            .keys()
            .filter(|k| !compiled.routes.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            let loaded = &self.loaded_routes[&key];
            let (id, slots_apart) = (loaded.id, loaded.slots_apart);
            self.routes
                .remove(&id)
                .map_err(map_err(map_names::ROUTES))?;
            self.loaded_routes.remove(&key);
            remove_slots(&mut self.slots, id, slots_apart).map_err(map_err(map_names::SLOTS))?;
            report.routes_removed.push(key.clone());
        }
        // A previous agent's tables no key points at any more.
        while let Some((&id, adopted)) = self.adopted_routes.first_key_value() {
            let slots_apart = adopted.slots_apart;
            self.routes
                .remove(&id)
                .map_err(map_err(map_names::ROUTES))?;
            self.adopted_routes.remove(&id);
            remove_slots(&mut self.slots, id, slots_apart).map_err(map_err(map_names::SLOTS))?;
            report
                .routes_removed
                .push(format!("route id {id} (from the previous agent)"));
        }
        Ok(())
    }

    /// The route ids no route holds now, handed out lowest first: built
    /// once per apply (once per new route made adding 10 000 routes take
    /// minutes).
    fn free_route_ids(&self) -> FreeRouteIds {
        FreeRouteIds {
            used: self
                .loaded_routes
                .values()
                .map(|r| r.id)
                .chain(self.adopted_routes.keys().copied())
                .collect(),
            next: 0,
            max: self.limits.max_routes,
        }
    }

    /// Puts `socket` (a listening socket) into the gateway's socket map for
    /// the endpoint `key`, replacing any socket it had. The map holds its own
    /// reference: the caller may close its fd, and when the backend closes
    /// the socket the kernel removes the entry by itself.
    pub fn register_socket(
        &mut self,
        key: ServiceKey,
        socket: &impl std::os::fd::AsRawFd,
    ) -> Result<(), DatapathError> {
        self.sockets
            .insert(key, socket.as_raw_fd(), 0)
            .map_err(|source| DatapathError::Map {
                name: map_names::SOCKETS,
                source,
            })
    }

    /// Removes the endpoint's socket, if any.
    pub fn unregister_socket(&mut self, key: &ServiceKey) {
        let _ = self.sockets.remove(key);
    }

    /// Endpoints that have a socket in the gateway's map now.
    pub fn registered_sockets(&self) -> BTreeSet<ServiceKey> {
        self.sockets.keys().filter_map(Result::ok).collect()
    }

    /// How full each map is: (name, entries, capacity). Counted from our
    /// own record where we write the map, from the kernel otherwise.
    /// Entries of `TS_GATEWAY_FLOWS`: connections sk_lookup handed to an
    /// endpoint that sock_ops has not seen accepted (yet, or ever: an
    /// endpoint outside the agent's cgroup, a handshake that never ends).
    fn pending_gateway_connections(&self) -> usize {
        use std::os::fd::AsFd as _;

        use aya::maps::IterableMap as _;
        crate::pins::count_hash_entries(
            self.gateway_flows.map().fd().as_fd(),
            size_of::<traffic_shift_common::FlowKey>(),
            size_of::<u32>(),
        )
        .unwrap_or_else(|err| {
            tracing::debug!(%err, "cannot count TS_GATEWAY_FLOWS in batches: walking its keys");
            self.gateway_flows.keys().count()
        })
    }

    pub fn fill(&self) -> Vec<(&'static str, usize, u32)> {
        let l = &self.limits;
        vec![
            (
                map_names::SERVICES,
                self.loaded_services.len(),
                l.max_services,
            ),
            (
                map_names::SERVICE_PREFIXES,
                self.loaded_prefixes.len(),
                l.max_service_prefixes,
            ),
            (
                map_names::GATEWAYS,
                self.loaded_gateways.len(),
                l.max_gateways,
            ),
            (
                map_names::XDP_GATEWAYS,
                self.loaded_xdp_gateways.len(),
                l.max_gateways,
            ),
            (
                map_names::ROUTES,
                self.loaded_routes.len() + self.adopted_routes.len(),
                l.max_routes,
            ),
            (
                map_names::SOCKETS,
                self.sockets.keys().count(),
                l.max_gateway_endpoints,
            ),
            (
                map_names::GATEWAY_FLOWS,
                self.pending_gateway_connections(),
                l.max_pending_gateway_connections,
            ),
        ]
    }
}

/// Makes `map` hold exactly `desired`, writing only what differs from
/// `loaded` (our record of the map, kept exact even when a write fails).
/// Returns (keys written, keys removed).
fn sync_keys(
    map: &mut HashMap<MapData, ServiceKey, ServiceValue>,
    loaded: &mut BTreeMap<ServiceKey, ServiceValue>,
    desired: &BTreeMap<ServiceKey, ServiceValue>,
) -> Result<(usize, usize), MapError> {
    let mut written = 0;
    for (key, value) in desired {
        if loaded.get(key) != Some(value) {
            map.insert(key, value, 0)?;
            loaded.insert(*key, *value);
            written += 1;
        }
    }
    let stale: Vec<ServiceKey> = loaded
        .keys()
        .filter(|k| !desired.contains_key(k))
        .copied()
        .collect();
    for key in &stale {
        map.remove(key)?;
        loaded.remove(key);
    }
    Ok((written, stale.len()))
}

/// [`sync_keys`] for the service prefix map (an LPM trie: a key is its
/// prefix length and data).
fn sync_prefixes(
    map: &mut LpmTrie<MapData, PrefixData, ServiceValue>,
    loaded: &mut BTreeMap<PrefixKey, ServiceValue>,
    desired: &BTreeMap<PrefixKey, ServiceValue>,
) -> Result<(usize, usize), MapError> {
    let mut written = 0;
    for (key, value) in desired {
        if loaded.get(key) != Some(value) {
            map.insert(&Key::new(key.0, key.1), value, 0)?;
            loaded.insert(*key, *value);
            written += 1;
        }
    }
    let stale: Vec<PrefixKey> = loaded
        .keys()
        .filter(|k| !desired.contains_key(k))
        .copied()
        .collect();
    for key in &stale {
        map.remove(&Key::new(key.0, key.1))?;
        loaded.remove(key);
    }
    Ok((written, stale.len()))
}

#[cfg(test)]
mod root_tests;

/// Below this many tables, one thread writes them.
const PARALLEL_TABLES: usize = 256;

/// Removes route `id`'s slot table of version `slots_apart`, if it has one
/// (after the route that named it is gone or names another).
fn remove_slots(
    slots: &mut HashMap<MapData, SlotsKey, SlotTable>,
    id: u32,
    slots_apart: Option<u32>,
) -> Result<(), MapError> {
    let Some(version) = slots_apart else {
        return Ok(());
    };
    match slots.remove(&SlotsKey {
        route_id: id,
        version,
    }) {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Writes one route table: its slot table first when apart (under a
/// version the route in force does not name), then the route, then the
/// replaced slot table is removed. The version of its slots when apart.
fn write_table(
    routes: &mut HashMap<MapData, u32, RouteTable>,
    slots: &mut HashMap<MapData, SlotsKey, SlotTable>,
    scratch: &mut Scratch,
    write: &TableWrite<'_>,
) -> Result<Option<u32>, (&'static str, MapError)> {
    let version = write.old_slots.map_or(0, |v| v.wrapping_add(1));
    let apart = write.route.table.write_to(&mut scratch.route, version);
    if let Some(apart) = apart {
        scratch.slots.slots[..apart.len()].copy_from_slice(apart);
        scratch.slots.slots[apart.len()..].fill(0);
        let key = SlotsKey {
            route_id: write.id,
            version,
        };
        let table: &SlotTable = &scratch.slots;
        slots
            .insert(key, table, 0)
            .map_err(|e| (map_names::SLOTS, e))?;
    }
    let table: &RouteTable = &scratch.route;
    routes
        .insert(write.id, table, 0)
        .map_err(|e| (map_names::ROUTES, e))?;
    // The route in force names the new version now: a replaced table that
    // cannot be removed costs only its memory (the next agent start
    // removes it), so the write stands.
    if let Err(err) = remove_slots(slots, write.id, write.old_slots) {
        tracing::warn!(route_id = write.id, %err, "cannot remove a replaced slot table from TS_SLOTS");
    }
    Ok(apart.map(|_| version))
}

/// A thread's reusable values to write from.
struct Scratch {
    route: Box<RouteTable>,
    slots: Box<SlotTable>,
}

impl Scratch {
    fn new() -> Self {
        Self {
            route: bytemuck::zeroed_box(),
            slots: bytemuck::zeroed_box(),
        }
    }
}

/// A handle of our own on the same map as `map`, for another thread.
fn dup_handle<K: aya::Pod, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
) -> Result<HashMap<MapData, K, V>, MapError> {
    use aya::maps::IterableMap as _;
    use std::os::fd::AsFd as _;
    let fd = map
        .map()
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|io_error| {
            MapError::SyscallError(aya::sys::SyscallError {
                call: "dup",
                io_error,
            })
        })?;
    HashMap::try_from(aya::maps::Map::HashMap(MapData::from_fd(fd)?))
}

/// Writes `tables` ([`write_table`] each): from one thread per CPU when
/// there are many (each thread with its own handles on the maps). The
/// result of each, in order.
fn write_tables(
    routes: &mut HashMap<MapData, u32, RouteTable>,
    slots: &mut HashMap<MapData, SlotsKey, SlotTable>,
    tables: &[TableWrite<'_>],
) -> Vec<Result<Option<u32>, (&'static str, MapError)>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(tables.len() / PARALLEL_TABLES)
        .max(1);
    if threads == 1 {
        let mut scratch = Scratch::new();
        return tables
            .iter()
            .map(|t| write_table(routes, slots, &mut scratch, t))
            .collect();
    }
    let (routes, slots) = (&*routes, &*slots);
    let chunk = tables.len().div_ceil(threads).max(1);
    let mut results = Vec::with_capacity(tables.len());
    std::thread::scope(|scope| {
        let workers: Vec<_> = tables
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut scratch = Scratch::new();
                    let handles = dup_handle(routes)
                        .map_err(|e| (map_names::ROUTES, e))
                        .and_then(|r| {
                            dup_handle(slots)
                                .map(|s| (r, s))
                                .map_err(|e| (map_names::SLOTS, e))
                        });
                    match handles {
                        Ok((mut routes, mut slots)) => part
                            .iter()
                            .map(|t| write_table(&mut routes, &mut slots, &mut scratch, t))
                            .collect::<Vec<_>>(),
                        Err((name, err)) => {
                            let message = err.to_string();
                            part.iter()
                                .map(|_| {
                                    Err((
                                        name,
                                        MapError::SyscallError(aya::sys::SyscallError {
                                            call: "dup",
                                            io_error: std::io::Error::other(message.clone()),
                                        }),
                                    ))
                                })
                                .collect()
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            results.extend(
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
        }
    });
    results
}

#[cfg(test)]
mod tests {
    use super::{Digest, FreeRouteIds};

    #[test]
    fn free_route_ids_are_the_unused_ones_lowest_first_up_to_the_limit() {
        let mut ids = FreeRouteIds {
            used: [0, 1, 3, 6].into_iter().collect(),
            next: 0,
            max: 7,
        };
        let taken: Vec<u32> = std::iter::from_fn(|| ids.take().ok()).collect();
        assert_eq!(taken, [2, 4, 5]);
        assert!(ids.take().is_err(), "all 7 in use");
    }

    #[test]
    fn a_digest_tells_tables_apart() {
        let table = [7u8; 1700];
        let mut changed = table;
        changed[1699] = 8;
        assert_eq!(Digest::of(&table), Digest::of(&table.clone()));
        assert_ne!(Digest::of(&table), Digest::of(&changed));
        assert_ne!(Digest::of(&table), Digest::of(&table[..1699]));
    }
}
