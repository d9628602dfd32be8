//! `traffic-shift maps`: every map the agent pins, read from its pin and
//! decoded for people, as `cilium bpf lb list` does for Cilium's: addresses
//! dotted, ports in host order, route and counter-slot ids with their names,
//! per-CPU counters summed, only what is in use.
//!
//! It reads the pins, not the agent: it works while an agent runs, after
//! one stopped (the datapath stays pinned), and on maps of a build with the
//! same layout. The decoders are pure functions from a map's key and value
//! bytes to lines ([`service`], [`route`], [`stats`], ...), so they are
//! tested without a kernel; [`render`] does the reading.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, SockHash};
use bytemuck::Pod;
use traffic_shift_common::{
    Addr, ConnState, EndpointStats, Event, FAMILY_V4, FAMILY_V6, FlowKey, MAX_SLOTS, NatEntry,
    NatKey, PrefixData, RouteCursor, RouteTable, ServiceKey, ServiceValue, SlotTable, SlotsKey,
    XdpStats, backend_flags, conn_flags, map_names, nat_flags, select, tables::ip_addr,
};

/// What each map holds, one line, in the order the agent pins them.
pub const MAPS: [(&str, &str); 16] = [
    (map_names::SERVICES, "service address:port -> mesh route"),
    (
        map_names::SERVICE_PREFIXES,
        "service address range:port -> mesh route (longest prefix, when no exact address is in TS_SERVICES)",
    ),
    (
        map_names::ROUTES,
        "route id -> selection table: destinations, their share of the slots, endpoints",
    ),
    (
        map_names::SLOTS,
        "route id, version -> the slots of a route of more than 256 (the route names its version)",
    ),
    (
        map_names::CURSORS,
        "route id -> smooth-selection cursors (routes that picked at least once)",
    ),
    (map_names::EVENTS, "what the programs did, summed over CPUs"),
    (
        map_names::GATEWAYS,
        "gateway address:port -> route (sk_lookup; 0.0.0.0 / :: is any local address)",
    ),
    (
        map_names::SOCKETS,
        "endpoint address:port whose listening socket the gateway holds",
    ),
    (
        map_names::STATS,
        "counter slot -> connections and bytes, summed over CPUs (slots in use)",
    ),
    (
        map_names::TOUCHED,
        "counter slots whose counters moved since the agent last read them",
    ),
    (
        map_names::GATEWAY_FLOWS,
        "gateway connections between SYN and accept: client -> gateway, counter slot",
    ),
    (
        map_names::CONNS,
        "routed connections open in the network namespace (--netns), from their socket-local storage",
    ),
    (
        map_names::PROXY_FLOWS,
        "connections handed to the L7 proxy, not yet accepted: client -> proxy, service",
    ),
    (
        map_names::XDP_GATEWAYS,
        "XDP gateway address:port -> route (0.0.0.0 / :: is any address)",
    ),
    (
        map_names::XDP_FLOWS,
        "XDP conntrack: packet direction as it arrives -> what it is rewritten to",
    ),
    (
        map_names::XDP_STATS,
        "counter slot -> XDP packets and bytes, summed over CPUs (slots in use)",
    ),
];

/// Names of the ids the kernel holds, from the running agent (its status
/// file); an id without a name is printed alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    /// Route id (`TS_ROUTES` key) -> the kernel route's key, e.g.
    /// `default/tcp-echo/tcp[0]/port 9000 ipv4`.
    pub routes: BTreeMap<u32, String>,
    /// Counter slot (`TS_STATS` index) -> what it counts.
    pub slots: BTreeMap<u32, SlotName>,
}

/// What a counter slot counts: an endpoint of a route's destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotName {
    /// `TcpRoute::key`, e.g. `default/tcp-echo/tcp[0]/port 9000`.
    pub route: String,
    /// `host/subset` (or the host), e.g. `tcp-echo.local/v1`.
    pub destination: String,
    /// `ip:port`.
    pub endpoint: String,
}

impl Names {
    fn route(&self, id: u32) -> String {
        match self.routes.get(&id) {
            Some(name) => format!("route {id} ({name})"),
            None => format!("route {id}"),
        }
    }

    /// `slot 4 (tcp-echo.local/v1 127.0.0.1:9001)`.
    fn slot(&self, id: u32) -> String {
        match self.slots.get(&id) {
            Some(n) => format!("slot {id} ({} {})", n.destination, n.endpoint),
            None => format!("slot {id}"),
        }
    }

    /// The slot with its route too, for the counters.
    fn slot_in_route(&self, id: u32) -> String {
        match self.slots.get(&id) {
            Some(n) => format!("slot {id} ({} {}, {})", n.destination, n.endpoint, n.route),
            None => format!("slot {id}"),
        }
    }
}

/// `1 endpoint`, `2 endpoints`.
fn count(n: impl Into<u64>, what: &str) -> String {
    match n.into() {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("no map named {name}; the maps are: {}", known())]
    UnknownMap { name: String },
    #[error(
        "{}: {source}; is the agent's pin directory right (--bpffs)? `traffic-shift unload` or a never-started agent leaves none",
        path.display()
    )]
    Open { path: PathBuf, source: MapError },
    #[error("{name}: {source}")]
    Read {
        name: &'static str,
        source: MapError,
    },
    #[error(
        "TS_CONNS: cannot list the sockets of the network namespace {}: {source}",
        netns.display()
    )]
    SocketDump {
        netns: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

fn known() -> String {
    map_names::ALL.join(", ")
}

/// Bytes of another layout than this build's (a map of another version).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} is {have} bytes, this build reads {want}: a map of another version")]
pub struct LayoutError {
    pub what: &'static str,
    pub have: usize,
    pub want: usize,
}

fn pod<T: Pod>(bytes: &[u8], what: &'static str) -> Result<T, LayoutError> {
    bytemuck::try_pod_read_unaligned(bytes).map_err(|_| LayoutError {
        what,
        have: bytes.len(),
        want: size_of::<T>(),
    })
}

/// `ip:port` (`[ip]:port` for IPv6) of key bytes: address in network order,
/// port in network order (printed in host order).
pub fn endpoint(addr: &Addr, port_be: u16, family: u8) -> String {
    match family {
        FAMILY_V4 | FAMILY_V6 => {
            SocketAddr::new(ip_addr(addr, family), u16::from_be(port_be)).to_string()
        }
        other => format!("family {other}?"),
    }
}

fn key_endpoint(key: &ServiceKey) -> String {
    endpoint(&key.addr, key.port, key.family)
}

/// A `TS_SERVICES`, `TS_GATEWAYS` or `TS_XDP_GATEWAYS` entry:
/// `127.100.0.1:9000 -> route 0 (default/tcp-echo/tcp[0]/port 9000 ipv4), service 0`.
pub fn service(key: &[u8], value: &[u8], names: &Names) -> Result<String, LayoutError> {
    let key: ServiceKey = pod(key, "a service key")?;
    let value: ServiceValue = pod(value, "a service value")?;
    Ok(format!(
        "{} -> {}, service {}",
        key_endpoint(&key),
        names.route(value.route_id),
        value.service_id
    ))
}

/// A `TS_SVC_PREFIXES` entry (its key: prefix length in bits, then the
/// data): `198.18.7.0/24:9000 -> route 0 (...), service 0`.
pub fn service_prefix(
    prefix_len: u32,
    data: &[u8],
    value: &[u8],
    names: &Names,
) -> Result<String, LayoutError> {
    let data: PrefixData = pod(data, "a service prefix key")?;
    let value: ServiceValue = pod(value, "a service value")?;
    let shown = match data.family {
        FAMILY_V4 | FAMILY_V6 => crate::compile::show_prefix(&(prefix_len, data)),
        other => format!("family {other}?"),
    };
    Ok(format!(
        "{shown} -> {}, service {}",
        names.route(value.route_id),
        value.service_id
    ))
}

/// A `TS_SOCKETS` key: the endpoint whose listening socket is held.
pub fn socket(key: &[u8]) -> Result<String, LayoutError> {
    let key: ServiceKey = pod(key, "a socket key")?;
    Ok(key_endpoint(&key))
}

fn select_name(mode: u32) -> String {
    match mode {
        select::SMOOTH => "smooth".to_owned(),
        select::RANDOM => "random".to_owned(),
        select::SOURCE_HASH => "source hash".to_owned(),
        other => format!("mode {other}?"),
    }
}

/// A `TS_ROUTES` entry: the route's line, then per destination its share of
/// the slots in use (its weight as the kernel applies it), then its
/// endpoints with their counter slots.
/// `apart` looks a slot table of `TS_SLOTS` up by its key.
pub fn route(
    id: &[u8],
    value: &[u8],
    apart: &dyn Fn(SlotsKey) -> Option<SlotTable>,
    names: &Names,
) -> Result<Vec<String>, LayoutError> {
    let id: u32 = pod(id, "a route id")?;
    let table: RouteTable = pod(value, "a route table")?;
    let key = SlotsKey {
        route_id: id,
        version: table.slots_version,
    };
    let (slots, from): (Vec<u8>, String) = if table.slots_apart() {
        match apart(key) {
            Some(t) => (
                t.slots[..(table.n_slots as usize).min(MAX_SLOTS)].to_vec(),
                format!(" (in TS_SLOTS, version {})", key.version),
            ),
            None => (
                Vec::new(),
                format!(" (TS_SLOTS has no version {}!)", key.version),
            ),
        }
    } else {
        (table.inline_slots().to_vec(), String::new())
    };
    let n_slots = slots.len();
    let mut lines = vec![format!(
        "{}: {}, {}{from}, {}, {}",
        names.route(id),
        select_name(table.mode),
        count(table.n_slots, "slot"),
        count(table.n_dests, "destination"),
        count(table.n_backends, "endpoint")
    )];
    let mut counts = [0usize; traffic_shift_common::MAX_DESTS];
    for &slot in &slots {
        if let Some(c) = counts.get_mut(usize::from(slot)) {
            *c += 1;
        }
    }
    let n_dests = (table.n_dests as usize).min(table.dests.len());
    for (i, dest) in table.dests[..n_dests].iter().enumerate() {
        #[expect(
            clippy::cast_precision_loss,
            reason = "at most 4096 slots: exact in f64"
        )]
        let share = if n_slots == 0 {
            0.0
        } else {
            100.0 * counts[i] as f64 / n_slots as f64
        };
        let first = usize::from(dest.first_backend);
        let last = (first + usize::from(dest.n_backends)).min(table.backends.len());
        let backends = table.backends.get(first..last).unwrap_or_default();
        // The destination's name, from its endpoints' counter slots.
        let name = backends
            .iter()
            .find_map(|b| names.slots.get(&b.stat_id))
            .map(|n| format!(" ({})", n.destination))
            .unwrap_or_default();
        lines.push(format!(
            "  dest {i}{name}: {} of {n_slots} slots ({share:.1}%), {}, {}",
            counts[i],
            count(dest.n_backends, "endpoint"),
            select_name(dest.endpoint_select)
        ));
        for backend in backends {
            let proxy = if backend.flags & backend_flags::PROXY != 0 {
                " (L7 proxy)"
            } else {
                ""
            };
            lines.push(format!(
                "    {}{proxy} slot {}",
                endpoint(&backend.addr, backend.port, backend.family),
                backend.stat_id
            ));
        }
    }
    Ok(lines)
}

/// A `TS_CURSORS` entry, `None` for a route that never picked.
/// A `TS_SLOTS` entry: whose slot table it is (the route's line in
/// `TS_ROUTES` gives the shares of the slots it uses).
pub fn slot_table(key: &[u8], value: &[u8], names: &Names) -> Result<String, LayoutError> {
    let key: SlotsKey = pod(key, "a slots key")?;
    let _: SlotTable = pod(value, "a slot table")?;
    Ok(format!(
        "{}, version {}: {MAX_SLOTS} slots",
        names.route(key.route_id),
        key.version
    ))
}

pub fn cursor(id: u32, value: &[u8], names: &Names) -> Result<Option<String>, LayoutError> {
    let cursor: RouteCursor = pod(value, "a route cursor")?;
    if cursor.next_slot == 0 && cursor.next_backend.iter().all(|&n| n == 0) {
        return Ok(None);
    }
    let used = cursor
        .next_backend
        .iter()
        .rposition(|&n| n != 0)
        .map_or(0, |i| i + 1);
    Ok(Some(format!(
        "{}: next slot {}, next endpoint per destination {:?}",
        names.route(id),
        cursor.next_slot,
        &cursor.next_backend[..used]
    )))
}

/// Sums per-CPU values of `T` field by field (`T` is all `u64`).
fn sum_per_cpu<T: Pod>(per_cpu: &[&[u8]], what: &'static str) -> Result<T, LayoutError> {
    let mut sum: T = bytemuck::Zeroable::zeroed();
    {
        let total: &mut [u64] = bytemuck::cast_slice_mut(std::slice::from_mut(&mut sum));
        for value in per_cpu {
            let v: T = pod(value, what)?;
            for (t, x) in total.iter_mut().zip(bytemuck::cast_slice::<T, u64>(&[v])) {
                *t = t.wrapping_add(*x);
            }
        }
    }
    Ok(sum)
}

/// The `TS_EVENTS` counters (per-CPU values of each event, in event
/// order), summed: one line per event that happened.
pub fn events(per_event: &[Vec<&[u8]>]) -> Result<Vec<String>, LayoutError> {
    let mut lines = Vec::new();
    for (event, per_cpu) in Event::ALL.iter().zip(per_event) {
        let n: u64 = sum_per_cpu(per_cpu, "an event counter")?;
        if n != 0 {
            lines.push(format!("{:<12} {:<20} {n}", event.program(), event.name()));
        }
    }
    Ok(lines)
}

/// A `TS_STATS` slot (its per-CPU values), summed; `None` when all zero.
pub fn stats(id: u32, per_cpu: &[&[u8]], names: &Names) -> Result<Option<String>, LayoutError> {
    let s: EndpointStats = sum_per_cpu(per_cpu, "endpoint stats")?;
    if s == EndpointStats::default() {
        return Ok(None);
    }
    Ok(Some(format!(
        "{}: opened {}, established {}, closed {}, failed {} (refused {}, timeout {}, other {}), bytes request {} response {}",
        names.slot_in_route(id),
        s.opened,
        s.established,
        s.closed,
        s.failed(),
        s.failed_refused,
        s.failed_timeout,
        s.failed_other,
        s.request_bytes,
        s.response_bytes
    )))
}

/// A `TS_XDP_STATS` slot, summed; `None` when all zero.
pub fn xdp_stats(id: u32, per_cpu: &[&[u8]], names: &Names) -> Result<Option<String>, LayoutError> {
    let s: XdpStats = sum_per_cpu(per_cpu, "XDP stats")?;
    if s == XdpStats::default() {
        return Ok(None);
    }
    Ok(Some(format!(
        "{}: flows {}, request {} packets {} bytes, response {} packets {} bytes",
        names.slot_in_route(id),
        s.flows,
        s.request_packets,
        s.request_bytes,
        s.response_packets,
        s.response_bytes
    )))
}

fn flow(key: &FlowKey) -> (String, String) {
    (
        endpoint(&key.local, key.local_port, key.family),
        endpoint(&key.remote, key.remote_port, key.family),
    )
}

/// A `TS_GATEWAY_FLOWS` entry (keyed as the server side sees it):
/// `client 10.0.0.2:40000 -> gateway 10.0.0.1:31400: slot 3 (...)`.
pub fn gateway_flow(key: &[u8], value: &[u8], names: &Names) -> Result<String, LayoutError> {
    let key: FlowKey = pod(key, "a flow key")?;
    let slot: u32 = pod(value, "a counter slot")?;
    let (local, remote) = flow(&key);
    Ok(format!(
        "client {remote} -> gateway {local}: {}",
        names.slot(slot)
    ))
}

/// A `TS_PROXY_FLOWS` entry (keyed as the client sees it): `client
/// 127.0.0.1:40000 -> proxy 127.0.0.1:15001: service 127.100.0.1:9080`.
pub fn proxy_flow(key: &[u8], value: &[u8]) -> Result<String, LayoutError> {
    let key: FlowKey = pod(key, "a flow key")?;
    let service: ServiceKey = pod(value, "a service key")?;
    let (local, remote) = flow(&key);
    Ok(format!(
        "client {local} -> proxy {remote}: service {}",
        key_endpoint(&service)
    ))
}

/// A `TS_XDP_FLOWS` entry: one direction of a flow as its packets arrive,
/// what they become, and the flow's state.
pub fn xdp_flow(key: &[u8], value: &[u8], names: &Names) -> Result<String, LayoutError> {
    let key: NatKey = pod(key, "a conntrack key")?;
    let nat: NatEntry = pod(value, "a conntrack entry")?;
    let mut flags = Vec::new();
    for (bit, name) in [
        (nat_flags::REPLY, "reply"),
        (nat_flags::FIN, "fin"),
        (nat_flags::ESTABLISHED, "established"),
        (nat_flags::CLOSED, "closed"),
        (nat_flags::PASSIVE_CLOSE, "closed-second"),
    ] {
        if nat.flags & bit != 0 {
            flags.push(name);
        }
    }
    let direction = if flags.first() == Some(&"reply") {
        ""
    } else {
        "forward "
    };
    Ok(format!(
        "{direction}{} -> {} becomes {} -> {}: {}, last seen at {} ns{}{}",
        endpoint(&key.src, key.sport, key.family),
        endpoint(&key.dst, key.dport, key.family),
        endpoint(&nat.src, nat.sport, nat.family),
        endpoint(&nat.dst, nat.dport, nat.family),
        names.slot(nat.stat_id),
        nat.last_seen_ns,
        if flags.is_empty() { "" } else { ", " },
        flags.join(" ")
    ))
}

/// One routed connection: its socket's two ends (from a socket dump) and
/// its `TS_CONNS` value: what `getpeername` returns, where it is counted.
/// A client's socket reads `client -> endpoint`; the server side of a
/// gateway connection `endpoint <- client`.
pub fn conn(
    local: SocketAddr,
    remote: SocketAddr,
    value: &[u8],
    names: &Names,
) -> Result<String, LayoutError> {
    let c: ConnState = pod(value, "a connection state")?;
    let mut flags = Vec::new();
    for (bit, name) in [
        (conn_flags::ESTABLISHED, "established"),
        (conn_flags::TIMED_OUT, "timed out"),
        (conn_flags::OUR_FIN, "fin sent"),
        (conn_flags::PEER_FIN, "fin received"),
        (conn_flags::CLOSED, "closed"),
        (conn_flags::PROXIED, "to the L7 proxy"),
    ] {
        if c.flags & bit != 0 {
            flags.push(name);
        }
    }
    let flags = if flags.is_empty() {
        String::new()
    } else {
        format!(", {}", flags.join(", "))
    };
    Ok(if c.flags & conn_flags::GATEWAY != 0 {
        format!(
            "{local} <- {remote}: gateway, {}{flags}",
            names.slot(c.stat_id)
        )
    } else {
        format!(
            "{local} -> {remote}: service {}, {}, {}{flags}",
            endpoint(&c.addr, c.port, c.family),
            names.route(c.route_id),
            names.slot(c.stat_id)
        )
    })
}

/// Every map (or just `only`) under `pin_dir`, decoded: a heading per map
/// (its name, what it holds, how many entries in use), then one line per
/// entry, indented.
/// `netns` is where `TS_CONNS`' connections are looked for (socket-local
/// storage has no keys: its values are reached through the sockets).
pub fn render(
    pin_dir: &Path,
    only: Option<&str>,
    names: &Names,
    netns: &Path,
) -> Result<String, InspectError> {
    let selected: Vec<(&'static str, &'static str)> = match only {
        None => MAPS.to_vec(),
        Some(name) => {
            let upper = name.to_ascii_uppercase();
            let want = if upper.starts_with("TS_") {
                upper
            } else {
                format!("TS_{upper}")
            };
            vec![*MAPS.iter().find(|(n, _)| *n == want).ok_or_else(|| {
                InspectError::UnknownMap {
                    name: name.to_owned(),
                }
            })?]
        }
    };
    let mut out = String::new();
    for (i, (name, about)) in selected.into_iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let entries = if name == map_names::CONNS {
            conns(pin_dir, names, netns)?
        } else {
            read(pin_dir, name, names)?
        };
        let n = entries.len();
        let _ = writeln!(
            out,
            "{name}: {about}: {n} {}",
            if n == 1 { "entry" } else { "entries" }
        );
        for line in entries.iter().flatten() {
            let _ = writeln!(out, "  {line}");
        }
    }
    Ok(out)
}

fn open(pin_dir: &Path, name: &'static str) -> Result<Map, InspectError> {
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path).map_err(|source| InspectError::Open {
        path: path.clone(),
        source,
    })?;
    Map::from_map_data(data).map_err(|source| InspectError::Open { path, source })
}

const SERVICE_KEY: usize = size_of::<ServiceKey>();
const SERVICE_VALUE: usize = size_of::<ServiceValue>();
const PREFIX_DATA: usize = size_of::<PrefixData>();
const FLOW_KEY: usize = size_of::<FlowKey>();
const NAT_KEY: usize = size_of::<NatKey>();
const NAT_ENTRY: usize = size_of::<NatEntry>();
const ROUTE_TABLE: usize = size_of::<RouteTable>();
const SLOTS_KEY: usize = size_of::<SlotsKey>();
const SLOT_TABLE: usize = size_of::<SlotTable>();
const ROUTE_CURSOR: usize = size_of::<RouteCursor>();
const ENDPOINT_STATS: usize = size_of::<EndpointStats>();
const XDP_STATS: usize = size_of::<XdpStats>();

/// A map entry as bytes: key, value.
type Entry<const K: usize, const V: usize> = ([u8; K], [u8; V]);

/// The entries of a (LRU) hash map as bytes, sorted by key bytes.
fn hash_entries<const K: usize, const V: usize>(
    map: Map,
    name: &'static str,
) -> Result<Vec<Entry<K, V>>, InspectError> {
    let read = |source| InspectError::Read { name, source };
    let map: HashMap<MapData, [u8; K], [u8; V]> = HashMap::try_from(map).map_err(read)?;
    let mut entries = map.iter().collect::<Result<Vec<_>, _>>().map_err(read)?;
    entries.sort_unstable();
    Ok(entries)
}

/// The per-CPU values of every index of a per-CPU array.
fn per_cpu_entries<const V: usize>(
    map: Map,
    name: &'static str,
) -> Result<Vec<Vec<[u8; V]>>, InspectError> {
    let read = |source| InspectError::Read { name, source };
    let map: PerCpuArray<MapData, [u8; V]> = PerCpuArray::try_from(map).map_err(read)?;
    map.iter()
        .map(|values| values.map(|v| v.to_vec()).map_err(read))
        .collect()
}

/// The connections with a `TS_CONNS` value among the sockets of `netns`.
fn conns(pin_dir: &Path, names: &Names, netns: &Path) -> Result<Vec<Vec<String>>, InspectError> {
    let name = map_names::CONNS;
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path).map_err(|source| InspectError::Open {
        path: path.clone(),
        source,
    })?;
    let fd = std::os::fd::AsFd::as_fd(data.fd());
    let mut routed =
        crate::drain::routed(netns, fd).map_err(|source| InspectError::SocketDump {
            netns: netns.to_owned(),
            source,
        })?;
    routed.sort_by_key(|r| (r.local(), r.remote()));
    routed
        .iter()
        .map(|r| {
            let line = conn(r.local(), r.remote(), bytemuck::bytes_of(&r.state), names)?;
            Ok(vec![line])
        })
        .collect()
}

/// One entry's lines per entry that shows (`None`: not in use).
fn entries_of(
    entries: impl IntoIterator<Item = Result<Option<String>, LayoutError>>,
) -> Result<Vec<Vec<String>>, InspectError> {
    let mut out = Vec::new();
    for line in entries {
        out.extend(line?.map(|l| vec![l]));
    }
    Ok(out)
}

fn slices<const V: usize>(values: &[[u8; V]]) -> Vec<&[u8]> {
    values.iter().map(<[u8; V]>::as_slice).collect()
}

fn index(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// The decoded entries of `TS_ROUTES` (`map`), with the slot tables of
/// `TS_SLOTS` of the routes whose slots are apart.
fn routes(pin_dir: &Path, map: Map, names: &Names) -> Result<Vec<Vec<String>>, InspectError> {
    // Looked up for the routes whose slots are apart, not read whole.
    let slots: HashMap<MapData, [u8; SLOTS_KEY], [u8; SLOT_TABLE]> =
        HashMap::try_from(open(pin_dir, map_names::SLOTS)?).map_err(|source| {
            InspectError::Read {
                name: map_names::SLOTS,
                source,
            }
        })?;
    let apart = |key: SlotsKey| {
        let key: [u8; SLOTS_KEY] = bytemuck::cast(key);
        slots
            .get(&key, 0)
            .ok()
            .and_then(|v| pod(&v, "a slot table").ok())
    };
    hash_entries::<4, ROUTE_TABLE>(map, map_names::ROUTES)?
        .iter()
        .map(|(k, v)| route(k, v, &apart, names).map_err(InspectError::from))
        .collect()
}

/// The decoded entries of `TS_SLOTS` (`map`).
fn slot_tables(map: Map, names: &Names) -> Result<Vec<Vec<String>>, InspectError> {
    entries_of(
        hash_entries::<SLOTS_KEY, SLOT_TABLE>(map, map_names::SLOTS)?
            .iter()
            .map(|(k, v)| slot_table(k, v, names).map(Some)),
    )
}

/// The decoded entries of map `name` (the lines of each), those in use.
fn read(
    pin_dir: &Path,
    name: &'static str,
    names: &Names,
) -> Result<Vec<Vec<String>>, InspectError> {
    let map = open(pin_dir, name)?;
    match name {
        map_names::SERVICES | map_names::GATEWAYS | map_names::XDP_GATEWAYS => entries_of(
            hash_entries::<SERVICE_KEY, SERVICE_VALUE>(map, name)?
                .iter()
                .map(|(k, v)| service(k, v, names).map(Some)),
        ),
        map_names::SERVICE_PREFIXES => {
            let read = |source| InspectError::Read { name, source };
            let map: LpmTrie<MapData, [u8; PREFIX_DATA], [u8; SERVICE_VALUE]> =
                LpmTrie::try_from(map).map_err(read)?;
            let mut entries = map
                .iter()
                .map(|entry| entry.map(|(key, value)| ((key.data(), key.prefix_len()), value)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(read)?;
            entries.sort_unstable();
            entries_of(
                entries
                    .iter()
                    .map(|((data, len), v)| service_prefix(*len, data, v, names).map(Some)),
            )
        }
        map_names::ROUTES => routes(pin_dir, map, names),
        map_names::SLOTS => slot_tables(map, names),
        map_names::CURSORS => {
            let read = |source| InspectError::Read { name, source };
            let map: Array<MapData, [u8; ROUTE_CURSOR]> = Array::try_from(map).map_err(read)?;
            let values = map.iter().collect::<Result<Vec<_>, _>>().map_err(read)?;
            entries_of(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| cursor(index(i), v, names)),
            )
        }
        map_names::EVENTS => {
            let values = per_cpu_entries::<8>(map, name)?;
            let per_event: Vec<Vec<&[u8]>> = values.iter().map(|v| slices(v)).collect();
            Ok(events(&per_event)?.into_iter().map(|l| vec![l]).collect())
        }
        map_names::STATS => {
            let values = per_cpu_entries::<ENDPOINT_STATS>(map, name)?;
            entries_of(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| stats(index(i), &slices(v), names)),
            )
        }
        map_names::XDP_STATS => {
            let values = per_cpu_entries::<XDP_STATS>(map, name)?;
            entries_of(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| xdp_stats(index(i), &slices(v), names)),
            )
        }
        map_names::TOUCHED => {
            let read = |source| InspectError::Read { name, source };
            let map: Array<MapData, u64> = Array::try_from(map).map_err(read)?;
            let values = map.iter().collect::<Result<Vec<_>, _>>().map_err(read)?;
            Ok(values
                .iter()
                .enumerate()
                .filter(|(_, mark)| **mark != 0)
                .map(|(i, _)| vec![format!("slot {i} touched")])
                .collect())
        }
        map_names::SOCKETS => {
            let read = |source| InspectError::Read { name, source };
            let map: SockHash<MapData, [u8; SERVICE_KEY]> =
                SockHash::try_from(map).map_err(read)?;
            let mut keys = map.keys().collect::<Result<Vec<_>, _>>().map_err(read)?;
            keys.sort_unstable();
            entries_of(keys.iter().map(|k| socket(k).map(Some)))
        }
        map_names::GATEWAY_FLOWS => entries_of(
            hash_entries::<FLOW_KEY, 4>(map, name)?
                .iter()
                .map(|(k, v)| gateway_flow(k, v, names).map(Some)),
        ),
        map_names::PROXY_FLOWS => entries_of(
            hash_entries::<FLOW_KEY, SERVICE_KEY>(map, name)?
                .iter()
                .map(|(k, v)| proxy_flow(k, v).map(Some)),
        ),
        map_names::XDP_FLOWS => entries_of(
            hash_entries::<NAT_KEY, NAT_ENTRY>(map, name)?
                .iter()
                .map(|(k, v)| xdp_flow(k, v, names).map(Some)),
        ),
        _ => Err(InspectError::UnknownMap {
            name: name.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests;
