//! Adopting what a previous agent left pinned: whether its maps have the
//! layout this build expects, what they hold, and which of its route
//! tables are ours as they are.

use std::{collections::BTreeMap, fmt, path::Path};

use aya::maps::{HashMap, LpmTrie, MapData, MapError};
use traffic_shift_common::{
    MAX_SLOTS, PrefixData, RouteTable, ServiceKey, ServiceValue, SlotTable, SlotsKey, map_names,
};

use crate::{Datapath, DatapathError, EBPF_OBJECT, apply::LoadedRoute, compile::TableBytes};

/// Why the maps a previous agent pinned cannot be adopted (they are
/// started over).
#[derive(Debug, thiserror::Error)]
pub(crate) enum IncompatibleMaps {
    #[error("cannot parse our own object: {source}")]
    Object {
        #[source]
        source: aya_obj::ParseError,
    },
    #[error("our object has no map {name}")]
    NotInObject { name: &'static str },
    #[error("{name}: {source}")]
    Pinned {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("{name}: key/value size, max entries, flags {have}, this build wants {want}")]
    Layout {
        name: &'static str,
        have: MapLayout,
        want: MapLayout,
    },
}

/// What must match for a pinned map to be adopted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MapLayout {
    pub(crate) key_size: u32,
    pub(crate) value_size: u32,
    pub(crate) max_entries: u32,
    pub(crate) flags: u32,
}

impl fmt::Display for MapLayout {
    /// As a tuple: `(4, 8, 1024, 0)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            key_size,
            value_size,
            max_entries,
            flags,
        } = self;
        write!(f, "({key_size}, {value_size}, {max_entries}, {flags})")
    }
}

/// Whether the maps pinned in `pin_dir` can be adopted: `Ok(true)` when
/// every one is there with the layout this build expects, `Ok(false)` when
/// none is, `Err(why)` otherwise.
pub(crate) fn pinned_maps_compatible(
    pin_dir: &Path,
    limits: &crate::limits::Limits,
) -> Result<bool, IncompatibleMaps> {
    let names = map_names::ALL;
    let present = names.iter().filter(|n| pin_dir.join(n).exists()).count();
    if present == 0 {
        return Ok(false);
    }
    let object = aya_obj::Object::parse(EBPF_OBJECT)
        .map_err(|source| IncompatibleMaps::Object { source })?;
    for name in names {
        let path = pin_dir.join(name);
        let want = object
            .maps
            .get(name)
            .ok_or(IncompatibleMaps::NotInObject { name })?;
        let have = aya::maps::MapInfo::from_pin(&path)
            .map_err(|source| IncompatibleMaps::Pinned { name, source })?;
        let max_entries = limits.size_of(name).unwrap_or_else(|| want.max_entries());
        let (want, have) = (
            MapLayout {
                key_size: want.key_size(),
                value_size: want.value_size(),
                max_entries,
                flags: want.map_flags(),
            },
            MapLayout {
                key_size: have.key_size(),
                value_size: have.value_size(),
                max_entries: have.max_entries(),
                flags: have.map_flags(),
            },
        );
        if want != have {
            return Err(IncompatibleMaps::Layout { name, have, want });
        }
    }
    Ok(true)
}

pub(crate) fn remove_map_pins(pin_dir: &Path) {
    for name in map_names::ALL {
        let _ = std::fs::remove_file(pin_dir.join(name));
    }
}

/// A route table a previous agent left: its bytes as [`TableBytes`] keeps
/// them, and the version of its slot table in `TS_SLOTS` when apart.
pub(crate) struct AdoptedRoute {
    pub(crate) bytes: TableBytes,
    pub(crate) slots_apart: Option<u32>,
}

/// What the maps hold already (adopted from a previous agent), so the first
/// apply writes only what differs: service keys, gateway keys, and route
/// tables by id (their bytes, slots apart included). Slot tables no route
/// names (a previous agent stopped between writing one and its route) are
/// removed.
#[expect(
    clippy::type_complexity,
    reason = "three plain maps, named at the call"
)]
pub(crate) fn read_back(
    services: &HashMap<MapData, ServiceKey, ServiceValue>,
    gateways: &HashMap<MapData, ServiceKey, ServiceValue>,
    routes: &HashMap<MapData, u32, RouteTable>,
    slots: &mut HashMap<MapData, SlotsKey, SlotTable>,
) -> Result<
    (
        BTreeMap<ServiceKey, ServiceValue>,
        BTreeMap<ServiceKey, ServiceValue>,
        BTreeMap<u32, AdoptedRoute>,
    ),
    DatapathError,
> {
    let loaded_services = read_keys(services, map_names::SERVICES)?;
    let loaded_gateways = read_keys(gateways, map_names::GATEWAYS)?;
    let slots_err = |source| DatapathError::Map {
        name: map_names::SLOTS,
        source,
    };
    let tables = routes
        .iter()
        .collect::<Result<Vec<(u32, RouteTable)>, _>>()
        .map_err(|source| DatapathError::Map {
            name: map_names::ROUTES,
            source,
        })?;
    let mut adopted_routes = BTreeMap::new();
    for (id, table) in tables {
        let (apart, slots_apart) = if table.slots_apart() {
            let key = SlotsKey {
                route_id: id,
                version: table.slots_version,
            };
            // A missing table leaves the bytes short: never taken over.
            let apart = match slots.get(&key, 0) {
                Ok(apart) => apart.slots[..(table.n_slots as usize).min(MAX_SLOTS)].to_vec(),
                Err(MapError::KeyNotFound) => Vec::new(),
                Err(source) => return Err(slots_err(source)),
            };
            (apart, Some(table.slots_version))
        } else {
            (table.inline_slots().to_vec(), None)
        };
        let bytes = TableBytes::new(&table, &apart);
        adopted_routes.insert(id, AdoptedRoute { bytes, slots_apart });
    }
    let named = |key: &SlotsKey| {
        adopted_routes
            .get(&key.route_id)
            .is_some_and(|r: &AdoptedRoute| r.slots_apart == Some(key.version))
    };
    let orphans: Vec<SlotsKey> = slots
        .keys()
        .collect::<Result<Vec<_>, _>>()
        .map_err(slots_err)?
        .into_iter()
        .filter(|key| !named(key))
        .collect();
    for key in orphans {
        slots.remove(&key).map_err(slots_err)?;
    }
    Ok((loaded_services, loaded_gateways, adopted_routes))
}

/// What a map of service or gateway keys holds.
pub(crate) fn read_keys(
    map: &HashMap<MapData, ServiceKey, ServiceValue>,
    name: &'static str,
) -> Result<BTreeMap<ServiceKey, ServiceValue>, DatapathError> {
    map.iter()
        .collect::<Result<BTreeMap<_, _>, _>>()
        .map_err(|source| DatapathError::Map { name, source })
}

/// What the service prefix map holds, by (prefix length, data).
pub(crate) fn read_prefixes(
    map: &LpmTrie<MapData, PrefixData, ServiceValue>,
) -> Result<BTreeMap<crate::compile::PrefixKey, ServiceValue>, DatapathError> {
    map.iter()
        .map(|entry| entry.map(|(key, value)| ((key.prefix_len(), key.data()), value)))
        .collect::<Result<BTreeMap<_, _>, _>>()
        .map_err(|source| DatapathError::Map {
            name: map_names::SERVICE_PREFIXES,
            source,
        })
}

impl Datapath {
    /// A route a previous agent left in the kernel exactly as we would
    /// write it (its listeners point at a table with the same bytes) is
    /// ours without a write: a restart with unchanged rules changes nothing.
    pub(crate) fn take_over_adopted(&mut self, key: &str, route: &crate::compile::KernelRoute) {
        let loaded = if route.xdp {
            &self.loaded_xdp_gateways
        } else if route.gateway {
            &self.loaded_gateways
        } else {
            &self.loaded_services
        };
        let Some(id) = route
            .listeners
            .iter()
            .find_map(|l| loaded.get(l).map(|v| v.route_id))
            .or_else(|| {
                route
                    .prefixes
                    .iter()
                    .find_map(|p| self.loaded_prefixes.get(p).map(|v| v.route_id))
            })
        else {
            return;
        };
        if self
            .adopted_routes
            .get(&id)
            .is_some_and(|a| a.bytes == route.table)
            && let Some(adopted) = self.adopted_routes.remove(&id)
        {
            let table = route.table.digest();
            self.loaded_routes.insert(
                key.to_owned(),
                LoadedRoute {
                    id,
                    table,
                    slots_apart: adopted.slots_apart,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use aya::maps::MapError;

    use super::{IncompatibleMaps, MapLayout};

    #[test]
    fn incompatible_maps_read_as_the_reasons_did() {
        let layout = |max_entries| MapLayout {
            key_size: 4,
            value_size: 5792,
            max_entries,
            flags: 1,
        };
        assert_eq!(
            layout(1024).to_string(),
            format!("{:?}", (4_u32, 5792_u32, 1024_u32, 1_u32)),
            "a layout prints as the tuple the reason printed before"
        );
        let err = IncompatibleMaps::Layout {
            name: "TS_ROUTES",
            have: layout(1024),
            want: layout(4096),
        };
        assert_eq!(
            err.to_string(),
            "TS_ROUTES: key/value size, max entries, flags (4, 5792, 1024, 1), this build wants (4, 5792, 4096, 1)"
        );
        assert_eq!(
            IncompatibleMaps::NotInObject { name: "TS_ROUTES" }.to_string(),
            "our object has no map TS_ROUTES"
        );
        let source = MapError::InvalidName {
            name: "TS_ROUTES".to_owned(),
        };
        let want = format!("TS_ROUTES: {source}");
        let err = IncompatibleMaps::Pinned {
            name: "TS_ROUTES",
            source,
        };
        assert_eq!(err.to_string(), want);
    }
}
