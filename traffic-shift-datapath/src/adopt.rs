//! Adopting what a previous agent left pinned: whether its maps have the
//! layout this build expects, what they hold, and which of its route
//! tables are ours as they are.

use std::{collections::BTreeMap, path::Path};

use aya::maps::{HashMap, MapData};
use traffic_shift_common::{RouteTable, ServiceKey, ServiceValue, map_names};

use crate::{Datapath, DatapathError, EBPF_OBJECT, apply::LoadedRoute};

/// Whether the maps pinned in `pin_dir` can be adopted: `Ok(true)` when
/// every one is there with the layout this build expects, `Ok(false)` when
/// none is, `Err(why)` otherwise.
pub(crate) fn pinned_maps_compatible(
    pin_dir: &Path,
    limits: &crate::limits::Limits,
) -> Result<bool, String> {
    let names = map_names::ALL;
    let present = names.iter().filter(|n| pin_dir.join(n).exists()).count();
    if present == 0 {
        return Ok(false);
    }
    let object = aya_obj::Object::parse(EBPF_OBJECT)
        .map_err(|e| format!("cannot parse our own object: {e}"))?;
    for name in names {
        let path = pin_dir.join(name);
        let want = object
            .maps
            .get(name)
            .ok_or_else(|| format!("our object has no map {name}"))?;
        let have = aya::maps::MapInfo::from_pin(&path).map_err(|e| format!("{name}: {e}"))?;
        let max_entries = limits.size_of(name).unwrap_or_else(|| want.max_entries());
        let (w, h) = (
            (
                want.key_size(),
                want.value_size(),
                max_entries,
                want.map_flags(),
            ),
            (
                have.key_size(),
                have.value_size(),
                have.max_entries(),
                have.map_flags(),
            ),
        );
        if w != h {
            return Err(format!(
                "{name}: key/value size, max entries, flags {h:?}, this build wants {w:?}"
            ));
        }
    }
    Ok(true)
}

pub(crate) fn remove_map_pins(pin_dir: &Path) {
    for name in map_names::ALL {
        let _ = std::fs::remove_file(pin_dir.join(name));
    }
}

/// What the maps hold already (adopted from a previous agent), so the first
/// apply writes only what differs: service keys, gateway keys, and route
/// tables by id (their used bytes).
#[expect(
    clippy::type_complexity,
    reason = "three plain maps, named at the call"
)]
pub(crate) fn read_back(
    services: &HashMap<MapData, ServiceKey, ServiceValue>,
    gateways: &HashMap<MapData, ServiceKey, ServiceValue>,
    routes: &HashMap<MapData, u32, RouteTable>,
) -> Result<
    (
        BTreeMap<ServiceKey, ServiceValue>,
        BTreeMap<ServiceKey, ServiceValue>,
        BTreeMap<u32, Vec<u8>>,
    ),
    DatapathError,
> {
    let loaded_services = read_keys(services, map_names::SERVICES)?;
    let loaded_gateways = read_keys(gateways, map_names::GATEWAYS)?;
    let adopted_routes = routes
        .iter()
        .map(|entry| entry.map(|(id, table): (u32, RouteTable)| (id, table.used_bytes().to_vec())))
        .collect::<Result<BTreeMap<_, _>, _>>()
        .map_err(|source| DatapathError::Map {
            name: map_names::ROUTES,
            source,
        })?;
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
        else {
            return;
        };
        if self.adopted_routes.get(&id).map(Vec::as_slice) == Some(route.table.as_bytes()) {
            let table = self.adopted_routes.remove(&id).unwrap_or_default();
            self.loaded_routes
                .insert(key.to_owned(), LoadedRoute { id, table });
        }
    }
}
