//! Model -> kernel map entries.
//!
//! `compile` turns the resolved [`RoutingModel`] into the exact values the
//! kernel maps will hold: one [`RouteTable`] per (route, address family) and
//! the service keys that point at it. It is pure, so it is unit-tested here
//! and the datapath only has to diff and write.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
};

use traffic_shift_common::{
    Backend, Dest, FAMILY_V4, FAMILY_V6, INLINE_SLOTS, MAX_BACKENDS, MAX_DESTS, PrefixData,
    RouteTable, ServiceKey, backend_flags, select,
};

use traffic_shift_common::tables::canonical;
pub use traffic_shift_common::tables::{
    prefix_key, prefix_of, rendezvous_table, service_key, smooth_sequence, socket_addr,
};

use traffic_shift_config::model::{HttpListener, RoutingModel, Selection, TcpRoute};

use crate::{
    limits::Limits,
    stats::{StatIds, StatKey, StatsFull},
};

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Stats(#[from] StatsFull),
    #[error(
        "{route} (from {source_file}): {what} is {count}, the kernel table holds at most {max}; split the route or reduce it"
    )]
    TooMany {
        route: String,
        source_file: String,
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error(
        "{count} {what} in all rules, the kernel holds at most {max}; raise {flag} (traffic-shift run) or remove rules"
    )]
    MapFull {
        what: &'static str,
        count: usize,
        max: usize,
        flag: &'static str,
    },
    #[error(
        "service address {listener} is covered by both {first} and {second}; keep one route per service address and port"
    )]
    Conflict {
        listener: SocketAddr,
        first: String,
        second: String,
    },
    #[error(
        "service address range {prefix} is covered by both {first} and {second}; keep one route per service address range and port"
    )]
    PrefixConflict {
        /// `198.18.7.0/24:9000`.
        prefix: String,
        first: String,
        second: String,
    },
    #[error(
        "{route} (from {source_file}): endpoint {endpoint} is not on this node; the sk_lookup gateway hands connections only to local listening sockets: pass --xdp-iface (traffic-shift run) to serve endpoints on other hosts with the XDP gateway, bind the route to mesh, or use a local endpoint"
    )]
    RemoteEndpoint {
        route: String,
        source_file: String,
        endpoint: SocketAddr,
    },
    #[error(
        "{route} (from {source_file}): endpoint {local} is on this node and {remote} is not; a gateway route goes either to local listening sockets (sk_lookup) or to other hosts (XDP), not both: split the subsets into two routes"
    )]
    MixedEndpoints {
        route: String,
        source_file: String,
        local: SocketAddr,
        remote: SocketAddr,
    },
}

/// A `TS_SVC_PREFIXES` key: the prefix length in bits (of [`PrefixData`]:
/// `PREFIX_HEADER_BITS` + the address prefix), then the data.
pub type PrefixKey = (u32, PrefixData);

/// What one kernel route holds.
#[derive(Clone)]
pub struct KernelRoute {
    /// `TcpRoute::key` plus the family, e.g. `default/tcp-echo/tcp[0]/port 9000 ipv4`.
    pub key: String,
    /// Keys (address:port) that point at this route: service addresses in
    /// `TS_SERVICES` for a mesh route, gateway addresses in `TS_GATEWAYS`
    /// (zero address: any) for a gateway route.
    pub listeners: Vec<ServiceKey>,
    /// Service address ranges:port (`TS_SVC_PREFIXES` keys: prefix length
    /// in bits, data) that point at this route; mesh routes only.
    pub prefixes: Vec<PrefixKey>,
    /// A gateway route (the `sk_lookup` or XDP path) rather than a mesh one.
    pub gateway: bool,
    /// A gateway route to endpoints on other hosts: its listeners go to
    /// `TS_XDP_GATEWAYS` (the XDP gateway), not `TS_GATEWAYS`.
    pub xdp: bool,
    pub service_id: u32,
    pub table: TableBytes,
    /// For logs and status: `subset weight` per destination, in table order.
    pub summary: String,
}

impl fmt::Debug for KernelRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelRoute")
            .field("key", &self.key)
            .field("listeners", &self.listeners.len())
            .field("prefixes", &self.prefixes.len())
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// A route's table as user space keeps it: its head ([`RouteTable::HEAD`]
/// bytes: mode, counts, destinations, endpoints) without its trailing
/// zeros (the entries of destinations and endpoints it does not have) and
/// its slots in use, not the whole value the kernel's map holds: ~100
/// bytes for a route of two endpoints, where the head is ~1.7 KB (a
/// compile of 100 000 routes held 175 MB of them). Two routes with the same
/// table bytes act the same, wherever the kernel keeps their slots.
#[derive(Clone, PartialEq, Eq)]
pub struct TableBytes {
    /// The head's bytes up to its last nonzero one, then the slots.
    bytes: Box<[u8]>,
    /// Where the slots begin.
    head: u16,
}

impl TableBytes {
    /// `table`'s head, with `slots` (`table.n_slots` of them, or fewer for
    /// a table read back without its slot table) as its slots.
    pub fn new(table: &RouteTable, slots: &[u8]) -> Self {
        let head = table.head();
        let used = head
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |last| last + 1);
        Self {
            bytes: [&head[..used], slots].concat().into(),
            head: u16::try_from(used).expect("a route table's head is under 64 KiB"),
        }
    }

    /// What tells two tables apart, for the applied set's bookkeeping.
    pub fn digest(&self) -> crate::apply::Digest {
        crate::apply::Digest::of(&(self.head, &*self.bytes))
    }

    /// Its slots in use.
    pub fn slots(&self) -> &[u8] {
        &self.bytes[usize::from(self.head)..]
    }

    /// Its bytes kept: the head without its trailing zeros, the slots.
    #[cfg(test)]
    pub fn kept(&self) -> usize {
        self.bytes.len()
    }

    /// Fills `table` (a scratch value, reused across routes) with this
    /// one. Slots that fit ([`INLINE_SLOTS`]) go in the table; more are
    /// returned, for `TS_SLOTS` under `version`, which the table names.
    pub fn write_to<'a>(&'a self, table: &mut RouteTable, version: u32) -> Option<&'a [u8]> {
        let head = &self.bytes[..usize::from(self.head)];
        let bytes = bytemuck::bytes_of_mut(table);
        bytes[..head.len()].copy_from_slice(head);
        bytes[head.len()..].fill(0);
        let slots = self.slots();
        if slots.len() > INLINE_SLOTS {
            table.slots_version = version;
            Some(slots)
        } else {
            table.slots[..slots.len()].copy_from_slice(slots);
            None
        }
    }

    /// The route's value as the kernel's map holds it, and its slot table
    /// when apart (tests look into them).
    #[cfg(test)]
    pub fn to_table(&self) -> Box<RouteTable> {
        let mut table: Box<RouteTable> = bytemuck::zeroed_box();
        self.write_to(&mut table, 0);
        table
    }
}

/// Everything the kernel should hold, by route key.
#[derive(Debug, Default)]
pub struct Compiled {
    pub routes: BTreeMap<String, KernelRoute>,
    /// The counter slots, with the ones to zero before the tables go in.
    pub stat_ids: StatIds,
}

/// Where the L7 proxy takes the connections the connect-time hook sends it
/// (mesh HTTP services), per address family of the service address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyAddrs {
    pub v4: SocketAddr,
    pub v6: SocketAddr,
}

impl ProxyAddrs {
    /// The default port, Istio's outbound capture port.
    pub const DEFAULT_PORT: u16 = 15001;

    /// Loopback addresses on `port`.
    pub fn loopback(port: u16) -> Self {
        Self {
            v4: SocketAddr::from(([127, 0, 0, 1], port)),
            v6: SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        }
    }
}

impl Default for ProxyAddrs {
    fn default() -> Self {
        Self::loopback(Self::DEFAULT_PORT)
    }
}

/// Compiles the model. Fails as a whole: nothing partial reaches the kernel.
/// `is_local` says whether an address belongs to this node (the gateway's
/// network namespace): a gateway route to local endpoints goes to the
/// `sk_lookup` gateway; one to endpoints on other hosts to the XDP gateway
/// when `xdp` (`--xdp-iface` given), else it is refused.
/// `stat_ids` are the counter slots in force; the result carries them
/// updated for this model (keep them if it is applied). Connections to
/// the service addresses of mesh HTTP listeners go to `proxy`.
pub fn compile(
    model: &RoutingModel,
    is_local: &dyn Fn(IpAddr) -> bool,
    xdp: bool,
    stat_ids: &StatIds,
    limits: &Limits,
    proxy: &ProxyAddrs,
) -> Result<Compiled, CompileError> {
    let mut stat_ids = stat_ids.clone();
    let endpoint_ids = stat_ids.assign(&stat_keys(model))?;
    let mut service_ids: BTreeMap<(&str, u16), u32> = BTreeMap::new();
    // Mesh and gateway listeners live in different maps: they never conflict.
    let mut owner: BTreeMap<(bool, SocketAddr), &str> = BTreeMap::new();
    let mut prefix_owner: BTreeMap<PrefixKey, &str> = BTreeMap::new();
    let mut compiled = Compiled {
        routes: BTreeMap::new(),
        stat_ids,
    };
    let mut n_services = 0;
    let mut n_prefixes = 0;
    let mut socket_endpoints = std::collections::BTreeSet::new();
    // Routes on unix sockets are served in user space (the agent's `unix`).
    for route in model.routes.iter().filter(|r| !r.is_user_space()) {
        let next = u32::try_from(service_ids.len()).unwrap_or(u32::MAX);
        let service_id = *service_ids
            .entry((&route.service_host, route.service_port))
            .or_insert(next);
        let remote = gateway_placement(route, is_local, xdp)?;
        if route.gateway.is_some() && !remote {
            // The sk_lookup gateway holds these endpoints' sockets.
            socket_endpoints.extend(
                route
                    .destinations
                    .iter()
                    .flat_map(|d| &d.endpoints)
                    .map(|e| e.addr),
            );
        }
        claim(
            &mut owner,
            route.gateway.is_some(),
            &route.listeners,
            &route.key,
        )?;
        for family in [FAMILY_V4, FAMILY_V6] {
            let listeners: Vec<ServiceKey> = route
                .listeners
                .iter()
                .filter(|l| family_of(l.ip()) == family)
                .map(|l| service_key(*l))
                .collect();
            let prefixes: Vec<PrefixKey> = route
                .prefixes
                .iter()
                .map(|p| prefix_key(p.network, p.len, p.port))
                .filter(|(_, data)| data.family == family)
                .collect();
            if listeners.is_empty() && prefixes.is_empty() {
                continue;
            }
            claim_prefixes(&mut prefix_owner, &prefixes, &route.key)?;
            n_services += listeners.len();
            n_prefixes += prefixes.len();
            let mut kernel = kernel_route(route, family, listeners, service_id, &endpoint_ids)?;
            kernel.prefixes = prefixes;
            kernel.xdp = remote;
            compiled.routes.insert(kernel.key.clone(), kernel);
        }
    }
    for listener in model.http.iter().filter(|l| l.gateway.is_none()) {
        claim(&mut owner, false, &listener.listeners, &listener.key)?;
        let prefixes: Vec<PrefixKey> = listener
            .prefixes
            .iter()
            .map(|p| prefix_key(p.network, p.len, p.port))
            .collect();
        claim_prefixes(&mut prefix_owner, &prefixes, &listener.key)?;
        let next = u32::try_from(service_ids.len()).unwrap_or(u32::MAX);
        let service_id = *service_ids
            .entry((&listener.key, listener.port))
            .or_insert(next);
        for (family, to) in [(FAMILY_V4, proxy.v4), (FAMILY_V6, proxy.v6)] {
            let kernel = proxy_route(listener, family, to, service_id);
            if !kernel.listeners.is_empty() || !kernel.prefixes.is_empty() {
                n_services += kernel.listeners.len();
                n_prefixes += kernel.prefixes.len();
                compiled.routes.insert(kernel.key.clone(), kernel);
            }
        }
    }
    check_limits(&compiled, n_services, n_prefixes, &socket_endpoints, limits)?;
    Ok(compiled)
}

/// Whether a gateway route goes to the XDP gateway (its endpoints are on
/// other hosts) rather than to `sk_lookup` (all local); false for a mesh route.
fn gateway_placement(
    route: &TcpRoute,
    is_local: &dyn Fn(IpAddr) -> bool,
    xdp: bool,
) -> Result<bool, CompileError> {
    if route.gateway.is_none() {
        return Ok(false);
    }
    let endpoints = || route.destinations.iter().flat_map(|d| &d.endpoints);
    let Some(remote) = endpoints().find(|e| !is_local(e.addr.ip())) else {
        return Ok(false);
    };
    if !xdp {
        return Err(CompileError::RemoteEndpoint {
            route: route.key.clone(),
            source_file: route.source.display().to_string(),
            endpoint: remote.addr,
        });
    }
    if let Some(local) = endpoints().find(|e| is_local(e.addr.ip())) {
        return Err(CompileError::MixedEndpoints {
            route: route.key.clone(),
            source_file: route.source.display().to_string(),
            local: local.addr,
            remote: remote.addr,
        });
    }
    Ok(true)
}

/// Records that route `key` takes `listeners` (in the gateway maps or the
/// mesh's): one route per address and port of a map.
fn claim<'m>(
    owner: &mut BTreeMap<(bool, SocketAddr), &'m str>,
    gateway: bool,
    listeners: &[SocketAddr],
    key: &'m str,
) -> Result<(), CompileError> {
    for listener in listeners {
        if let Some(first) = owner.insert((gateway, *listener), key) {
            return Err(CompileError::Conflict {
                listener: *listener,
                first: first.to_owned(),
                second: key.to_owned(),
            });
        }
    }
    Ok(())
}

/// Records that route `key` takes the address ranges `prefixes`: one route
/// per range and port (ranges of different lengths may overlap).
fn claim_prefixes<'m>(
    owner: &mut BTreeMap<PrefixKey, &'m str>,
    prefixes: &[PrefixKey],
    key: &'m str,
) -> Result<(), CompileError> {
    for prefix in prefixes {
        if let Some(first) = owner.insert(*prefix, key)
            && first != key
        {
            return Err(CompileError::PrefixConflict {
                prefix: show_prefix(prefix),
                first: first.to_owned(),
                second: key.to_owned(),
            });
        }
    }
    Ok(())
}

/// `198.18.7.0/24:9000`, `[fd00:7473::/64]:9000`.
pub fn show_prefix((prefix_len, data): &PrefixKey) -> String {
    match prefix_of(*prefix_len, data) {
        (ip @ IpAddr::V4(_), len, port) => format!("{ip}/{len}:{port}"),
        (ip @ IpAddr::V6(_), len, port) => format!("[{ip}/{len}]:{port}"),
    }
}

/// Whether what the rules need fits the kernel maps' sizes.
fn check_limits(
    compiled: &Compiled,
    n_services: usize,
    n_prefixes: usize,
    gateway_endpoints: &std::collections::BTreeSet<SocketAddr>,
    limits: &Limits,
) -> Result<(), CompileError> {
    let n_gateways: usize = compiled
        .routes
        .values()
        .filter(|r| r.gateway)
        .map(|r| r.listeners.len())
        .sum();
    for (what, count, max, flag) in [
        (
            "routes (per address family)",
            compiled.routes.len(),
            limits.max_routes,
            "--max-routes",
        ),
        (
            "service addresses",
            n_services - n_gateways,
            limits.max_services,
            "--max-services",
        ),
        (
            "service address ranges",
            n_prefixes,
            limits.max_service_prefixes,
            "--max-service-prefixes",
        ),
        (
            "gateway addresses",
            n_gateways,
            limits.max_gateways,
            "--max-gateways",
        ),
        (
            "gateway endpoints",
            gateway_endpoints.len(),
            limits.max_gateway_endpoints,
            "--max-gateway-endpoints",
        ),
    ] {
        if count > max as usize {
            return Err(CompileError::MapFull {
                what,
                count,
                max: max as usize,
                flag,
            });
        }
    }
    Ok(())
}

fn kernel_route(
    route: &TcpRoute,
    family: u8,
    listeners: Vec<ServiceKey>,
    service_id: u32,
    endpoint_ids: &BTreeMap<StatKey, u32>,
) -> Result<KernelRoute, CompileError> {
    let too_many = |what, count, max| CompileError::TooMany {
        route: route.key.clone(),
        source_file: route.source.display().to_string(),
        what,
        count,
        max,
    };
    if route.destinations.len() > MAX_DESTS {
        return Err(too_many(
            "destinations",
            route.destinations.len(),
            MAX_DESTS,
        ));
    }
    let mut table: Box<RouteTable> = bytemuck::zeroed_box();
    let mut summary = Vec::new();
    let mut n_backends = 0usize;
    for (i, dest) in route.destinations.iter().enumerate() {
        let endpoints: Vec<_> = dest
            .endpoints
            .iter()
            .filter(|e| family_of(e.addr.ip()) == family)
            .collect();
        if n_backends + endpoints.len() > MAX_BACKENDS {
            return Err(too_many(
                "endpoints",
                n_backends + endpoints.len(),
                MAX_BACKENDS,
            ));
        }
        table.dests[i] = Dest {
            first_backend: u16::try_from(n_backends).expect("bounded by MAX_BACKENDS"),
            n_backends: u16::try_from(endpoints.len()).expect("bounded by MAX_BACKENDS"),
            endpoint_select: selection_code(dest.endpoint_selection),
        };
        for ep in endpoints {
            let key = service_key(ep.addr);
            table.backends[n_backends] = Backend {
                addr: key.addr,
                port: key.port,
                family,
                flags: 0,
                stat_id: endpoint_ids[&stat_key(route, dest, ep.addr)],
            };
            n_backends += 1;
        }
        summary.push(format!(
            "{} {}",
            dest.subset.as_deref().unwrap_or(&dest.host),
            dest.weight
        ));
    }
    table.mode = selection_code(route.selection);
    table.n_dests = u32::try_from(route.destinations.len()).expect("bounded by MAX_DESTS");
    table.n_backends = u32::try_from(n_backends).expect("bounded by MAX_BACKENDS");
    let weights: Vec<u32> = route.destinations.iter().map(|d| d.weight).collect();
    let slots = match route.selection {
        Selection::Smooth | Selection::Random => smooth_sequence(&weights),
        Selection::SourceHash => {
            let ids: Vec<u64> = route.destinations.iter().map(destination_id).collect();
            rendezvous_table(&weights, &ids)
        }
    };
    table.n_slots = u32::try_from(slots.len()).expect("bounded by MAX_SLOTS");
    Ok(KernelRoute {
        gateway: route.gateway.is_some(),
        xdp: false,
        key: format!(
            "{} {}",
            route.key,
            if family == FAMILY_V4 { "ipv4" } else { "ipv6" }
        ),
        listeners,
        prefixes: Vec::new(),
        service_id,
        table: {
            debug_assert_eq!(slots.len(), table.n_slots as usize);
            TableBytes::new(&table, &slots)
        },
        summary: summary.join(", "),
    })
}

/// The kernel route of a mesh HTTP listener, for one family: its service
/// addresses and address ranges of that family all go to the proxy at `to`.
fn proxy_route(
    listener: &HttpListener,
    family: u8,
    to: SocketAddr,
    service_id: u32,
) -> KernelRoute {
    let listeners: Vec<ServiceKey> = listener
        .listeners
        .iter()
        .filter(|l| family_of(l.ip()) == family)
        .map(|l| service_key(*l))
        .collect();
    let mut table: Box<RouteTable> = bytemuck::zeroed_box();
    let to = service_key(to);
    table.mode = select::SMOOTH;
    table.n_dests = 1;
    table.n_backends = 1;
    table.n_slots = 1;
    table.dests[0] = Dest {
        first_backend: 0,
        n_backends: 1,
        endpoint_select: select::SMOOTH,
    };
    table.backends[0] = Backend {
        addr: to.addr,
        port: to.port,
        family,
        flags: backend_flags::PROXY,
        // Never read: sock_ops leaves proxied connections to the proxy.
        stat_id: u32::MAX,
    };
    KernelRoute {
        key: format!(
            "{} {}",
            listener.key,
            if family == FAMILY_V4 { "ipv4" } else { "ipv6" }
        ),
        listeners,
        prefixes: listener
            .prefixes
            .iter()
            .map(|p| prefix_key(p.network, p.len, p.port))
            .filter(|(_, data)| data.family == family)
            .collect(),
        gateway: false,
        xdp: false,
        service_id,
        table: TableBytes::new(&table, &[0]),
        summary: "L7 proxy".to_owned(),
    }
}

/// The counter slot of one endpoint of one destination of a route.
pub fn stat_key(
    route: &TcpRoute,
    dest: &traffic_shift_config::model::Destination,
    endpoint: SocketAddr,
) -> StatKey {
    StatKey {
        route: route.key.clone(),
        host: dest.host.clone(),
        subset: dest.subset.clone(),
        endpoint,
    }
}

/// Every counter slot the model needs.
pub fn stat_keys(model: &RoutingModel) -> std::collections::BTreeSet<StatKey> {
    model
        .routes
        .iter()
        .filter(|r| !r.is_user_space())
        .flat_map(|r| {
            r.destinations
                .iter()
                .flat_map(move |d| d.endpoints.iter().map(move |e| stat_key(r, d, e.addr)))
        })
        .collect()
}

fn selection_code(selection: Selection) -> u32 {
    match selection {
        Selection::Smooth => select::SMOOTH,
        Selection::Random => select::RANDOM,
        Selection::SourceHash => select::SOURCE_HASH,
    }
}

/// IPv4-mapped IPv6 addresses are IPv4 to the kernel programs.
fn family_of(ip: IpAddr) -> u8 {
    if canonical(ip).is_ipv4() {
        FAMILY_V4
    } else {
        FAMILY_V6
    }
}

/// A destination's identity in [`rendezvous_table`]: the same on the TCP
/// path and in the L7 proxy.
pub fn destination_id(dest: &traffic_shift_config::model::Destination) -> u64 {
    traffic_shift_common::tables::destination_id(&dest.host, dest.subset.as_deref())
}

#[cfg(test)]
#[expect(
    clippy::cast_precision_loss,
    clippy::naive_bytecount,
    reason = "test arithmetic on small counts"
)]
mod tests {
    use super::*;

    fn window_counts(seq: &[u8], start: usize, len: usize, dest: u8) -> usize {
        (start..start + len)
            .filter(|&k| seq[k % seq.len()] == dest)
            .count()
    }

    #[test]
    fn smooth_80_20_every_window_is_exact() {
        let seq = smooth_sequence(&[80, 20]);
        assert_eq!(seq.len(), 5, "80/20 reduces to a cycle of 5");
        for start in 0..seq.len() {
            assert_eq!(
                window_counts(&seq, start, 100, 1),
                20,
                "window of 100 from {start}"
            );
            assert_eq!(
                window_counts(&seq, start, 1000, 1),
                200,
                "window of 1000 from {start}"
            );
        }
    }

    #[test]
    fn smooth_windows_within_one_for_many_splits() {
        for weights in [
            vec![1, 1],
            vec![33, 67],
            vec![10, 20, 70],
            vec![1, 999],
            vec![5, 5, 5, 85],
            vec![700, 300],
        ] {
            let seq = smooth_sequence(&weights);
            let total: u32 = weights.iter().sum();
            for (d, &w) in weights.iter().enumerate() {
                let d = u8::try_from(d).unwrap();
                for len in [10usize, 100, 1000] {
                    let ideal = len as f64 * f64::from(w) / f64::from(total);
                    for start in 0..seq.len() {
                        let got = window_counts(&seq, start, len, d) as f64;
                        assert!(
                            (got - ideal).abs() < 2.0,
                            "{weights:?} dest {d} window {len}@{start}: {got} vs {ideal}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn huge_totals_are_apportioned_and_keep_small_weights() {
        let seq = smooth_sequence(&[1_000_000, 1, 999_999]);
        assert!(seq.len() <= traffic_shift_common::MAX_SLOTS);
        assert!(
            seq.contains(&1),
            "a non-zero weight keeps at least one slot"
        );
        let share = seq.iter().filter(|&&d| d == 0).count() as f64 / seq.len() as f64;
        assert!((share - 0.5).abs() < 0.001, "share of the first {share}");
    }

    #[test]
    fn zero_weight_gets_nothing() {
        let seq = smooth_sequence(&[0, 3]);
        assert!(seq.iter().all(|&d| d == 1));
    }

    /// A rollout's start: the canary added to the route with weight 0
    /// (config `resolve::rollout`). It compiles with its backends (their
    /// counters exist before the first shift), and no slot or hash bucket
    /// ever picks it, whichever way the route selects.
    #[test]
    fn a_weight_0_destination_compiles_with_its_backends_and_no_slot() {
        use std::collections::BTreeMap;

        use traffic_shift_config::model::{Destination, Endpoint};

        let destination = |subset: &str, weight: u32, port: u16| Destination {
            host: "tcp-echo.local".into(),
            subset: Some(subset.into()),
            weight,
            endpoint_selection: Selection::Smooth,
            outlier: None,
            endpoints: vec![Endpoint {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                labels: BTreeMap::new(),
            }],
        };
        for selection in [Selection::Smooth, Selection::Random, Selection::SourceHash] {
            for (weights, picked) in [([100, 0], 0u8), ([0, 100], 1)] {
                let model = RoutingModel {
                    routes: vec![TcpRoute {
                        unix: Vec::new(),
                        sni: Vec::new(),
                        key: "default/tcp-echo/tcp[0]/port 9000".into(),
                        source: std::path::Path::new("vs.yaml").into(),
                        gateway: None,
                        service_host: "tcp-echo.local".into(),
                        service_port: 9000,
                        listeners: vec!["127.100.0.1:9000".parse().unwrap()],
                        prefixes: Vec::new(),
                        selection,
                        destinations: vec![
                            destination("v1", weights[0], 19001),
                            destination("v2", weights[1], 19002),
                        ],
                    }],
                    ..RoutingModel::default()
                };
                let compiled = compile(
                    &model,
                    &|ip| ip.is_loopback(),
                    false,
                    &StatIds::default(),
                    &Limits::default(),
                    &ProxyAddrs::default(),
                )
                .unwrap_or_else(|e| panic!("{selection:?} {weights:?}: {e}"));
                let route = compiled.routes.values().next().expect("one route");
                let table = route.table.to_table();
                assert_eq!((table.n_dests, table.n_backends), (2, 2), "{selection:?}");
                let slots = route.table.slots();
                assert!(
                    !slots.is_empty() && slots.iter().all(|&d| d == picked),
                    "{selection:?} {weights:?}: every slot to destination {picked}: {slots:?}"
                );
                assert_eq!(
                    route.summary,
                    format!("v1 {}, v2 {}", weights[0], weights[1])
                );
            }
        }
    }

    #[test]
    fn rendezvous_follows_weights_and_only_moves_to_the_grown_destination() {
        let ids = [
            traffic_shift_common::tables::destination_id("tcp-echo", Some("v1")),
            traffic_shift_common::tables::destination_id("tcp-echo", Some("v2")),
        ];
        let before = rendezvous_table(&[80, 20], &ids);
        let after = rendezvous_table(&[50, 50], &ids);
        let share = |t: &[u8]| t.iter().filter(|&&d| d == 1).count() as f64 / t.len() as f64;
        // 4096 buckets: the standard deviation of the share is about 0.6%
        // (at 20%) and 0.8% (at 50%); 2% is 3 of those.
        assert!(
            (share(&before) - 0.2).abs() < 0.02,
            "v2 share at 20: {}",
            share(&before)
        );
        assert!(
            (share(&after) - 0.5).abs() < 0.02,
            "v2 share at 50: {}",
            share(&after)
        );
        let left_v2 = before
            .iter()
            .zip(&after)
            .filter(|&(&b, &a)| b == 1 && a != 1)
            .count();
        assert_eq!(left_v2, 0, "no bucket on v2 leaves it when v2 grows");
        let moved = before.iter().zip(&after).filter(|&(&b, &a)| b != a).count() as f64
            / before.len() as f64;
        assert!((moved - 0.3).abs() < 0.02, "about 30% move, got {moved}");
    }

    #[test]
    fn service_key_is_network_order() {
        let k = service_key("127.100.0.1:9000".parse().unwrap());
        assert_eq!(k.addr, [127, 100, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(k.port.to_ne_bytes(), [0x23, 0x28]);
        assert_eq!(k.family, FAMILY_V4);
        let k6 = service_key("[fd00:7473::1]:9000".parse().unwrap());
        assert_eq!(
            k6.addr,
            [0xfd, 0, 0x74, 0x73, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(k6.family, FAMILY_V6);
        // The same bytes as the kernel's network-order words.
        assert_eq!(
            traffic_shift_common::addr_words(k.addr)[0],
            u32::from_ne_bytes([127, 100, 0, 1])
        );
        let mapped = service_key("[::ffff:127.100.0.1]:9000".parse().unwrap());
        assert_eq!(mapped, k, "IPv4-mapped IPv6 is the IPv4 key");
        assert_eq!(socket_addr(&k6), "[fd00:7473::1]:9000".parse().unwrap());
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn socket_addr_undoes_service_key() {
        for addr in ["127.100.0.1:9000", "[fd00:7473::1]:9000", "[::1]:15001"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(socket_addr(&service_key(addr)), addr);
        }
    }
}

#[cfg(test)]
mod gateway_tests;
#[cfg(test)]
mod prefix_tests;
