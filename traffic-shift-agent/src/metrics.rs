//! `/metrics`: Prometheus text (OpenMetrics) with Istio's standard TCP
//! metrics (and the L7 proxy's request metrics), so dashboards and alerts built on Istio keep working, plus the
//! agent's own.
//!
//! Kernel counters are read at scrape time from the maps (per-CPU values
//! summed), so a scrape is never older than the kernel. What only the agent
//! knows (labels of each counter slot, rules applied, socket registration)
//! it publishes into [`Shared`] as it changes.
//!
//! [`FAMILIES`] is the one list of the families served (name, type, help):
//! the exporter names each family from its constant, and the dashboard test
//! reads the list.

mod slots;

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
};

use http_body_util::{Either, Full};
use hyper::{Request, Response, StatusCode, body::Bytes, service::service_fn};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use traffic_shift_common::{Event, XdpStats};

use traffic_shift_datapath::KernelCounters;

use traffic_shift_config::{
    labels,
    model::{Destination, Endpoint, RoutingModel, TcpRoute},
};

use traffic_shift_proxy::{EndpointCounts, RequestMetrics, Splice};

pub use traffic_shift_config::labels::{Family, FamilyType};
/// Registered by the L7 proxy, which names them from these constants.
pub use traffic_shift_proxy::{
    HTTP_RETRY_BUFFER_OVERFLOW, REQUEST_DURATION_MILLISECONDS, REQUESTS,
};

pub const TCP_CONNECTIONS_OPENED: Family = Family {
    name: "istio_tcp_connections_opened",
    kind: FamilyType::Counter,
    help: "Connections opened to a destination (Istio standard metric)",
};
pub const TCP_CONNECTIONS_CLOSED: Family = Family {
    name: "istio_tcp_connections_closed",
    kind: FamilyType::Counter,
    help: "Connections closed, failed connects included with response_flags UF (Istio standard metric)",
};
pub const TCP_SENT_BYTES: Family = Family {
    name: "istio_tcp_sent_bytes",
    kind: FamilyType::Counter,
    help: "Bytes sent by the destination to the client (response) (Istio standard metric)",
};
pub const TCP_RECEIVED_BYTES: Family = Family {
    name: "istio_tcp_received_bytes",
    kind: FamilyType::Counter,
    help: "Bytes received by the destination from the client (request) (Istio standard metric)",
};
pub const CONNECTIONS_FAILED: Family = Family {
    name: "traffic_shift_connections_failed",
    kind: FamilyType::Counter,
    help: "Connects to an endpoint that failed, by reason (refused: reset; timeout: SYN retries ran out; other)",
};
pub const KERNEL_EVENTS: Family = Family {
    name: "traffic_shift_kernel_events",
    kind: FamilyType::Counter,
    help: "What the kernel programs did with connections, by program and event (drops and fallbacks by reason)",
};
pub const XDP_PACKETS: Family = Family {
    name: "traffic_shift_xdp_packets",
    kind: FamilyType::Counter,
    help: "Packets the XDP gateway forwarded, per route and endpoint, by direction (request: client to endpoint)",
};
pub const XDP_BYTES: Family = Family {
    name: "traffic_shift_xdp_bytes",
    kind: FamilyType::Counter,
    help: "Bytes (whole frames) the XDP gateway forwarded, per route and endpoint, by direction",
};
pub const XDP_FLOWS: Family = Family {
    name: "traffic_shift_xdp_flows",
    kind: FamilyType::Counter,
    help: "Flows (SYNs given an endpoint) the XDP gateway started, per route and endpoint",
};
pub const RULES_APPLIED: Family = Family {
    name: "traffic_shift_rules_applied",
    kind: FamilyType::Counter,
    help: "Rule sets applied",
};
pub const APPLY_ERRORS: Family = Family {
    name: "traffic_shift_apply_errors",
    kind: FamilyType::Counter,
    help: "Rule files and apply/delete requests refused (the previous rules stayed in force)",
};
pub const RULES_GENERATION: Family = Family {
    name: "traffic_shift_rules_generation",
    kind: FamilyType::Gauge,
    help: "Generation of the rules in force",
};
pub const MAP_ENTRIES: Family = Family {
    name: "traffic_shift_map_entries",
    kind: FamilyType::Gauge,
    help: "Entries in a kernel map",
};
pub const MAP_MAX_ENTRIES: Family = Family {
    name: "traffic_shift_map_max_entries",
    kind: FamilyType::Gauge,
    help: "Capacity of a kernel map",
};
pub const ENDPOINT_HEALTHY: Family = Family {
    name: "traffic_shift_endpoint_healthy",
    kind: FamilyType::Gauge,
    help: "0 when every connect to the endpoint in the last minute failed, else 1 (observed, not probed)",
};
pub const ENDPOINT_REGISTERED: Family = Family {
    name: "traffic_shift_endpoint_registered",
    kind: FamilyType::Gauge,
    help: "Whether the gateway holds the endpoint's listening socket (1) or not (0)",
};
pub const ROUTE_WEIGHT: Family = Family {
    name: "traffic_shift_route_weight",
    kind: FamilyType::Gauge,
    help: "Configured weight of a route's destination (relative: its share is weight / sum)",
};

pub const ROLLOUT_PHASE: Family = Family {
    name: "traffic_shift_rollout_phase",
    kind: FamilyType::Gauge,
    help: "A rollout's phase: 1 for the one it is in (Progressing, Paused, Healthy, Degraded), 0 for the others",
};
pub const ROLLOUT_STEP: Family = Family {
    name: "traffic_shift_rollout_step",
    kind: FamilyType::Gauge,
    help: "A rollout's current step (0-based; the number of steps once completed)",
};
pub const ROLLOUT_CANARY_WEIGHT: Family = Family {
    name: "traffic_shift_rollout_canary_weight",
    kind: FamilyType::Gauge,
    help: "The canary's weight (percent) a rollout puts in force",
};
pub const ROLLOUT_ANALYSIS_RUNS: Family = Family {
    name: "traffic_shift_rollout_analysis_runs",
    kind: FamilyType::Counter,
    help: "Analysis intervals of a rollout, per metric, by result (successful, failed, inconclusive)",
};

pub const STORE_CONNECTED: Family = Family {
    name: "traffic_shift_store_connected",
    kind: FamilyType::Gauge,
    help: "With --store: 1 while the agent follows the store, 0 while it cannot reach it (the rules in force stay)",
};
pub const STORE_REVISION: Family = Family {
    name: "traffic_shift_store_revision",
    kind: FamilyType::Gauge,
    help: "With --store: the store revision in force on this node",
};
pub const STORE_RECONNECTS: Family = Family {
    name: "traffic_shift_store_reconnects",
    kind: FamilyType::Counter,
    help: "With --store: times the store answered again after it was lost",
};

/// Every family the agent exports, in the order of the exposition: the one
/// list that the exporter names its families from and that the dashboard
/// test checks the dashboard against.
pub const FAMILIES: &[Family] = &[
    TCP_CONNECTIONS_OPENED,
    TCP_CONNECTIONS_CLOSED,
    TCP_SENT_BYTES,
    TCP_RECEIVED_BYTES,
    CONNECTIONS_FAILED,
    KERNEL_EVENTS,
    XDP_PACKETS,
    XDP_BYTES,
    XDP_FLOWS,
    RULES_APPLIED,
    APPLY_ERRORS,
    RULES_GENERATION,
    MAP_ENTRIES,
    MAP_MAX_ENTRIES,
    ENDPOINT_HEALTHY,
    ENDPOINT_REGISTERED,
    ROUTE_WEIGHT,
    STORE_CONNECTED,
    STORE_REVISION,
    STORE_RECONNECTS,
    ROLLOUT_PHASE,
    ROLLOUT_STEP,
    ROLLOUT_CANARY_WEIGHT,
    ROLLOUT_ANALYSIS_RUNS,
    REQUESTS,
    REQUEST_DURATION_MILLISECONDS,
    HTTP_RETRY_BUFFER_OVERFLOW,
];

/// One counter slot as the metrics see it: its Istio labels' values as one
/// text, its endpoint, its route if a gateway's. The labels themselves are
/// not kept: 22 strings of their own per slot were half of what the
/// metrics held at 10 000 services with traffic (~9 MB), and each its own
/// small allocation, made during a scrape among the scrape's own; nor their
/// names, the same in every set (~600 of a set's ~750 bytes). The values
/// are shared ([`Texts`]): the endpoints of one subset have one label set.
#[derive(Clone, Debug)]
pub struct SlotInfo {
    /// Istio's labels as their values ([`slots::istio_values`]), built once.
    pub values: Arc<str>,
    pub endpoint: SocketAddr,
    /// `TcpRoute::key` of the route the slot belongs to, if a gateway's
    /// (only those can count XDP packets).
    pub gateway_route: Option<Box<str>>,
}

impl SlotInfo {
    /// The labels of the endpoint at `at` in `model`, their values shared
    /// through `texts`.
    pub fn of(model: &RoutingModel, at: SlotRef, texts: &mut Texts) -> Option<Self> {
        let (route, dest, ep) = at.resolve(model)?;
        let labels = labels::istio_labels(route, dest, ep);
        Some(Self {
            values: texts.get(&slots::istio_values(&labels)),
            endpoint: ep.addr,
            gateway_route: route.gateway.is_some().then(|| route.key.as_str().into()),
        })
    }

    /// Its `destination_service` label, escaped as OpenMetrics writes it.
    pub fn service(&self) -> &str {
        slots::istio_value(&self.values, "destination_service")
    }

    /// Its `destination_version` label, escaped as OpenMetrics writes it.
    pub fn version(&self) -> &str {
        slots::istio_value(&self.values, "destination_version")
    }
}

/// Texts held once however many slots name them.
#[derive(Debug, Default)]
pub struct Texts(HashSet<Arc<str>>);

impl Texts {
    /// The one copy of `text`.
    pub fn get(&mut self, text: &str) -> Arc<str> {
        if let Some(held) = self.0.get(text) {
            return Arc::clone(held);
        }
        let held: Arc<str> = text.into();
        self.0.insert(Arc::clone(&held));
        held
    }
}

/// Where a counter slot's endpoint is in the model in force: indexes of
/// its route, destination and endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotRef {
    pub route: u32,
    pub dest: u32,
    pub endpoint: u32,
}

impl SlotRef {
    /// The route, destination and endpoint it points at in `model`.
    pub fn resolve(self, model: &RoutingModel) -> Option<(&TcpRoute, &Destination, &Endpoint)> {
        let route = model.routes.get(self.route as usize)?;
        let dest = route.destinations.get(self.dest as usize)?;
        let ep = dest.endpoints.get(self.endpoint as usize)?;
        Some((route, dest, ep))
    }
}

/// An endpoint as its gauges name it: service, version, address.
pub type EndpointKey = (String, String, SocketAddr);

/// What the agent publishes for the exporter.
#[derive(Debug, Default)]
pub struct Shared {
    /// The rules in force: what labels the counter slots.
    pub model: Arc<RoutingModel>,
    /// Stat id -> its endpoint in `model`.
    pub slots: HashMap<u32, SlotRef>,
    /// Slots of endpoints that left the rules and had counted: their
    /// labels, kept (their closing connections still count) until the slot
    /// is reused.
    pub retired: HashMap<u32, Arc<SlotInfo>>,
    /// Slots that counted anything: the only ones with series, as Istio's
    /// proxies export only what saw traffic.
    pub counted: HashSet<u32>,
    pub rules_applied: u64,
    pub apply_errors: u64,
    pub generation: u64,
    /// (map, entries, max entries).
    pub map_fill: Vec<(&'static str, usize, u32)>,
    /// Gateway endpoints: (service, version, endpoint) -> socket registered.
    pub registered: BTreeMap<EndpointKey, bool>,
    /// (route, service, version) -> configured weight, for routes that
    /// split (more than one destination).
    pub weights: BTreeMap<(String, String, String), u32>,
    /// (service, version, endpoint) -> healthy: not every connect of the
    /// last minute failed (passive: observed connections, no probes).
    /// Endpoints with connections in the last minute, and those health
    /// took out.
    pub healthy: BTreeMap<EndpointKey, bool>,
    /// With `--store`: the store as this node sees it.
    pub store: Option<StoreGauges>,
    /// Every rollout's phase, step and canary weight.
    pub rollouts: Vec<RolloutGauges>,
    /// (rollout, metric, result) -> analysis intervals.
    pub analysis_runs: BTreeMap<(String, String, &'static str), u64>,
    /// The agent's status file, for the live page's `/ui/status.json`.
    pub status_file: std::path::PathBuf,
    /// Whether the agent wrote it (else it may be another agent's, left).
    pub status_written: bool,
}

impl Shared {
    /// The indexes (in `model.routes`) of the routes of slots `ids`.
    pub fn routes_of<'a>(&self, ids: impl IntoIterator<Item = &'a u32>) -> Vec<usize> {
        ids.into_iter()
            .filter_map(|id| self.slots.get(id).map(|at| at.route as usize))
            .collect()
    }

    /// The labels of slot `id`: of the rules in force, or kept since its
    /// endpoint left them.
    fn slot_info(&self, id: u32, texts: &mut Texts) -> Option<Arc<SlotInfo>> {
        match self.slots.get(&id) {
            Some(at) => SlotInfo::of(&self.model, *at, texts).map(Arc::new),
            None => self.retired.get(&id).cloned(),
        }
    }
}

/// The store as a node sees it (`--store`).
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreGauges {
    pub connected: bool,
    /// The revision in force.
    pub revision: i64,
    pub reconnects: u64,
}

/// A rollout as the metrics show it.
#[derive(Clone, Debug)]
pub struct RolloutGauges {
    pub name: String,
    pub phase: crate::rollout::Phase,
    pub step: usize,
    pub canary_weight: u32,
}

/// The live page served on `/ui`: self-contained (no external assets).
const UI_PAGE: &str = include_str!("ui/index.html");

/// The Prometheus collector: kernel counters at scrape time, labelled from
/// [`Shared`].
pub struct Exporter {
    pub shared: Arc<Mutex<Shared>>,
    kernel: Mutex<KernelCounters>,
    /// Label sets built once per slot (cleared when the rules change).
    labels: Mutex<LabelCache>,
    /// The L7 proxy's request metrics, once [`Exporter::add_requests`] gave them.
    requests: Mutex<Option<Arc<RequestMetrics>>>,
    /// The routes on unix sockets, counted in user space, once
    /// [`Exporter::add_unix`] gave them.
    unix: Mutex<Option<Arc<Splice>>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Exporter {
    pub fn new(kernel: KernelCounters, shared: Arc<Mutex<Shared>>) -> Self {
        Self {
            shared,
            kernel: Mutex::new(kernel),
            labels: Mutex::new(LabelCache::default()),
            requests: Mutex::new(None),
            unix: Mutex::new(None),
        }
    }

    /// Counts the connections of the routes on unix sockets in Istio's TCP
    /// families too.
    pub fn add_unix(&self, splice: Arc<Splice>) {
        *self
            .unix
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(splice);
    }

    /// The counts of the routes on unix sockets, with the label values of
    /// their endpoints in the model in force.
    fn unix_counts(&self, shared: &Shared) -> Vec<(String, EndpointCounts)> {
        let Some(splice) = self
            .unix
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, endpoints) in splice.counts() {
            let Some(route) = shared.model.routes.iter().find(|r| r.key == key) else {
                continue;
            };
            for (addr, counts) in endpoints {
                let found = route.destinations.iter().find_map(|dest| {
                    let ep = dest.endpoints.iter().find(|ep| ep.addr == addr)?;
                    Some((dest, ep))
                });
                if let Some((dest, ep)) = found {
                    let labels = labels::istio_labels(route, dest, ep);
                    out.push((slots::istio_values(&labels), counts));
                }
            }
        }
        out
    }

    /// Serves the L7 proxy's request metrics on `/metrics` too.
    pub fn add_requests(&self, metrics: Arc<RequestMetrics>) {
        *self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(metrics);
    }

    /// The shared state and the kernel's counters, locked in this order.
    fn locked(&self) -> (MutexGuard<'_, Shared>, MutexGuard<'_, KernelCounters>) {
        let shared = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let kernel = self
            .kernel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (shared, kernel)
    }

    /// The exposition, as served on `/metrics`: taken now (the kernel's
    /// counters read, the other families written), the per-slot families
    /// written as it is sent.
    pub fn page(self: &Arc<Self>) -> Page {
        let (tcp, slots) = {
            let (shared, kernel) = self.locked();
            let marked = kernel.touched().peek();
            kernel.refresh_open_bytes(&marked);
            let slots = self.exported(&shared, &kernel, marked);
            let unix = self.unix_counts(&shared);
            (slots::TcpPage::new(&slots, &kernel, unix), slots)
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Rest {
            exporter: Arc::clone(self),
            slots,
        }));
        if let Some(requests) = &*self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            requests.register(&mut registry);
        }
        let mut rest = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut rest, &registry);
        Page {
            tcp: Some(tcp),
            rest: Some(rest),
        }
    }
}

/// `/metrics` as it is sent: the per-slot families a piece at a time, then
/// the rest of the page.
pub struct Page {
    tcp: Option<slots::TcpPage>,
    rest: Option<String>,
}

impl Page {
    /// Bytes written per piece of the per-slot families.
    const PIECE: usize = 256 * 1024;

    fn next_piece(&mut self) -> Option<String> {
        if let Some(tcp) = &mut self.tcp {
            let mut piece = String::with_capacity(Self::PIECE + 4096);
            if !tcp.write_some(&mut piece, Self::PIECE) {
                self.tcp = None;
            }
            if !piece.is_empty() {
                return Some(piece);
            }
        }
        self.rest.take()
    }
}

impl hyper::body::Body for Page {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(
            self.next_piece()
                .map(|piece| Ok(hyper::body::Frame::data(Bytes::from(piece)))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.tcp.is_none() && self.rest.is_none()
    }
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: `name` with a sample per label set, written as the
/// samples come (none: the family is left out).
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    exported: &Family,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error> {
    let mut samples = samples.into_iter().peekable();
    let Some(kind) = samples.peek().map(|(_, m)| m.metric_type()) else {
        return Ok(());
    };
    let mut family = encoder.encode_descriptor(exported.name, exported.help, None, kind)?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counters(
    encoder: &mut DescriptorEncoder,
    exported: &Family,
    values: &BTreeMap<Labels, u64>,
) -> Result<(), std::fmt::Error> {
    debug_assert_eq!(exported.kind, FamilyType::Counter, "{}", exported.name);
    family(
        encoder,
        exported,
        values
            .iter()
            .map(|(l, v)| (l.as_slice(), ConstCounter::new(*v))),
    )
}

fn gauges(
    encoder: &mut DescriptorEncoder,
    exported: &Family,
    values: &BTreeMap<Labels, i64>,
) -> Result<(), std::fmt::Error> {
    debug_assert_eq!(exported.kind, FamilyType::Gauge, "{}", exported.name);
    family(
        encoder,
        exported,
        values
            .iter()
            .map(|(l, v)| (l.as_slice(), ConstGauge::new(*v))),
    )
}

/// The page's families but Istio's TCP metrics (which [`Exporter::page`]
/// writes from the slots' label values): of the slots the page shows.
#[derive(Debug)]
struct Rest {
    exporter: Arc<Exporter>,
    slots: Vec<(u32, Arc<SlotInfo>)>,
}

impl Collector for Rest {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (shared, kernel) = self.exporter.locked();
        encode_events(&mut encoder, &kernel)?;
        encode_xdp(&mut encoder, &self.slots, &kernel)?;
        drop(kernel);
        encode_agent(&mut encoder, &shared)
    }
}

/// Slot labels, built once per slot while the rules stay.
#[derive(Debug, Default)]
struct LabelCache {
    generation: u64,
    slots: HashMap<u32, Option<Arc<SlotInfo>>>,
    texts: Texts,
}

impl Exporter {
    /// The slots with series, with their labels: those that counted, and
    /// those the kernel marked since the agent last looked (a scrape is
    /// never older than the kernel).
    /// `marked`: the kernel's marks, as the caller read them.
    fn exported(
        &self,
        shared: &Shared,
        kernel: &KernelCounters,
        marked: Vec<u32>,
    ) -> Vec<(u32, Arc<SlotInfo>)> {
        let mut cache = self
            .labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.generation != shared.generation {
            cache.slots.clear();
            cache.texts = Texts::default();
            cache.generation = shared.generation;
        }
        let mut ids: Vec<u32> = shared.counted.iter().copied().collect();
        ids.extend(marked);
        ids.extend(kernel.open_slots());
        ids.sort_unstable();
        ids.dedup();
        let LabelCache { slots, texts, .. } = &mut *cache;
        ids.into_iter()
            .filter_map(|id| {
                let info = slots
                    .entry(id)
                    .or_insert_with(|| shared.slot_info(id, texts))
                    .clone()?;
                Some((id, info))
            })
            .collect()
    }
}

/// One counter family, a sample per label set (none: the family is left out).
fn series<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    exported: &Family,
    values: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    debug_assert_eq!(exported.kind, FamilyType::Counter, "{}", exported.name);
    family(
        encoder,
        exported,
        values.into_iter().map(|(l, v)| (l, ConstCounter::new(v))),
    )
}

/// The labels of the XDP families: route, service, version, endpoint.
type XdpKey<'a> = (&'a str, Cow<'a, str>, Cow<'a, str>, SocketAddr);

/// The XDP gateway's packets, bytes (whole frames) and flows per route and
/// endpoint, by direction. Slots the XDP gateway never used are left out.
/// Its drops are `traffic_shift_kernel_events_total{program="xdp"}`.
fn encode_xdp(
    encoder: &mut DescriptorEncoder,
    slots: &[(u32, Arc<SlotInfo>)],
    kernel: &KernelCounters,
) -> Result<(), std::fmt::Error> {
    let mut sums: BTreeMap<XdpKey<'_>, XdpStats> = BTreeMap::new();
    for (id, slot) in slots {
        let Some(route) = &slot.gateway_route else {
            continue;
        };
        let Ok(x) = kernel.xdp_stats(*id) else {
            continue;
        };
        if x == XdpStats::default() {
            continue;
        }
        let sum = sums
            .entry((
                route,
                slots::unescape(slot.service()),
                slots::unescape(slot.version()),
                slot.endpoint,
            ))
            .or_default();
        sum.request_packets += x.request_packets;
        sum.request_bytes += x.request_bytes;
        sum.response_packets += x.response_packets;
        sum.response_bytes += x.response_bytes;
        sum.flows += x.flows;
    }
    let labels =
        |(route, service, version, endpoint): &(&str, Cow<'_, str>, Cow<'_, str>, SocketAddr)| {
            vec![
                ("route", (*route).to_owned()),
                ("destination_service", service.to_string()),
                ("destination_version", version.to_string()),
                ("endpoint", endpoint.to_string()),
            ]
        };
    let directed = |f: fn(&XdpStats) -> [u64; 2]| {
        sums.iter().flat_map(move |(key, x)| {
            ["request", "response"]
                .into_iter()
                .zip(f(x))
                .map(move |(direction, n)| {
                    let mut labels = labels(key);
                    labels.push(("direction", direction.to_owned()));
                    (labels, n)
                })
        })
    };
    series(
        encoder,
        &XDP_PACKETS,
        directed(|x| [x.request_packets, x.response_packets]),
    )?;
    series(
        encoder,
        &XDP_BYTES,
        directed(|x| [x.request_bytes, x.response_bytes]),
    )?;
    series(
        encoder,
        &XDP_FLOWS,
        sums.iter().map(|(key, x)| (labels(key), x.flows)),
    )
}

/// The kernel programs' event counters (drops and fallbacks by reason).
fn encode_events(
    encoder: &mut DescriptorEncoder,
    kernel: &KernelCounters,
) -> Result<(), std::fmt::Error> {
    let events: BTreeMap<Labels, u64> = kernel
        .events()
        .unwrap_or_default()
        .into_iter()
        .map(|(event, n): (Event, u64)| {
            (
                vec![
                    ("program", event.program().to_owned()),
                    ("event", event.name().to_owned()),
                ],
                n,
            )
        })
        .collect();
    counters(encoder, &KERNEL_EVENTS, &events)
}

/// What only the agent knows: rules, map fill, sockets, weights.
fn encode_agent(encoder: &mut DescriptorEncoder, shared: &Shared) -> Result<(), std::fmt::Error> {
    let one = |v: u64| BTreeMap::from([(Labels::new(), v)]);
    counters(encoder, &RULES_APPLIED, &one(shared.rules_applied))?;
    counters(encoder, &APPLY_ERRORS, &one(shared.apply_errors))?;
    let gauge = |v: u64| BTreeMap::from([(Labels::new(), i64::try_from(v).unwrap_or(i64::MAX))]);
    gauges(encoder, &RULES_GENERATION, &gauge(shared.generation))?;
    let entries = shared
        .map_fill
        .iter()
        .map(|(map, n, _)| {
            (
                vec![("map", (*map).to_owned())],
                i64::try_from(*n).unwrap_or(i64::MAX),
            )
        })
        .collect();
    gauges(encoder, &MAP_ENTRIES, &entries)?;
    let max = shared
        .map_fill
        .iter()
        .map(|(map, _, max)| (vec![("map", (*map).to_owned())], i64::from(*max)))
        .collect();
    gauges(encoder, &MAP_MAX_ENTRIES, &max)?;
    encode_endpoints(encoder, shared)?;
    let weights = shared
        .weights
        .iter()
        .map(|((route, service, version), w)| {
            (
                vec![
                    ("route", route.clone()),
                    ("destination_service", service.clone()),
                    ("destination_version", version.clone()),
                ],
                i64::from(*w),
            )
        })
        .collect();
    gauges(encoder, &ROUTE_WEIGHT, &weights)?;
    if let Some(store) = shared.store {
        gauges(
            encoder,
            &STORE_CONNECTED,
            &gauge(u64::from(store.connected)),
        )?;
        gauges(
            encoder,
            &STORE_REVISION,
            &BTreeMap::from([(Labels::new(), store.revision)]),
        )?;
        counters(encoder, &STORE_RECONNECTS, &one(store.reconnects))?;
    }
    encode_rollouts(encoder, shared)
}

/// Per rollout: its phase, step and canary weight; its analysis intervals.
fn encode_rollouts(
    encoder: &mut DescriptorEncoder,
    shared: &Shared,
) -> Result<(), std::fmt::Error> {
    if shared.rollouts.is_empty() && shared.analysis_runs.is_empty() {
        return Ok(());
    }
    let rollout = |r: &RolloutGauges| vec![("rollout", r.name.clone())];
    let mut phases = BTreeMap::new();
    let mut steps = BTreeMap::new();
    let mut weights = BTreeMap::new();
    for r in &shared.rollouts {
        for phase in crate::rollout::Phase::ALL {
            let mut labels = rollout(r);
            labels.push(("phase", phase.as_str().to_owned()));
            phases.insert(labels, i64::from(r.phase == phase));
        }
        steps.insert(rollout(r), i64::try_from(r.step).unwrap_or(i64::MAX));
        weights.insert(rollout(r), i64::from(r.canary_weight));
    }
    gauges(encoder, &ROLLOUT_PHASE, &phases)?;
    gauges(encoder, &ROLLOUT_STEP, &steps)?;
    gauges(encoder, &ROLLOUT_CANARY_WEIGHT, &weights)?;
    let runs = shared
        .analysis_runs
        .iter()
        .map(|((rollout, metric, result), n)| {
            (
                vec![
                    ("rollout", rollout.clone()),
                    ("metric", metric.clone()),
                    ("result", (*result).to_owned()),
                ],
                *n,
            )
        })
        .collect();
    counters(encoder, &ROLLOUT_ANALYSIS_RUNS, &runs)
}

/// The samples of a family per endpoint, their labels made as each is
/// written: at 100 000 services with traffic, all of them at once were
/// ~50 MB for a scrape's while.
fn by_endpoint(
    values: &BTreeMap<EndpointKey, bool>,
) -> impl Iterator<Item = ([(&'static str, Cow<'_, str>); 3], ConstGauge)> {
    values.iter().map(|((service, version, endpoint), up)| {
        (
            [
                ("destination_service", Cow::Borrowed(service.as_str())),
                ("destination_version", Cow::Borrowed(version.as_str())),
                ("endpoint", Cow::Owned(endpoint.to_string())),
            ],
            ConstGauge::new(i64::from(*up)),
        )
    })
}

/// Per gateway/route endpoint: health as observed, socket registration.
fn encode_endpoints(
    encoder: &mut DescriptorEncoder,
    shared: &Shared,
) -> Result<(), std::fmt::Error> {
    debug_assert_eq!(ENDPOINT_HEALTHY.kind, FamilyType::Gauge);
    family(encoder, &ENDPOINT_HEALTHY, by_endpoint(&shared.healthy))?;
    debug_assert_eq!(ENDPOINT_REGISTERED.kind, FamilyType::Gauge);
    family(
        encoder,
        &ENDPOINT_REGISTERED,
        by_endpoint(&shared.registered),
    )
}

/// Serves `/metrics` (and `/stats/prometheus`, Envoy's path) on `listener`
/// until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, exporter: Arc<Exporter>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(%err, "metrics: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let exporter = Arc::clone(&exporter);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let exporter = Arc::clone(&exporter);
                async move { Ok::<_, std::convert::Infallible>(respond(&request, &exporter)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(io, service);
            if let Err(err) = conn.await {
                tracing::debug!(%err, "metrics: connection ended with an error");
            }
        });
    }
}

fn respond(
    request: &Request<hyper::body::Incoming>,
    exporter: &Arc<Exporter>,
) -> Response<Either<Page, Full<Bytes>>> {
    let text = |s: String| Either::Right(Full::new(Bytes::from(s)));
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&hyper::Method::GET, "/metrics" | "/stats/prometheus") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Either::Left(exporter.page()),
        ),
        (&hyper::Method::GET, "/ui" | "/ui/") => (
            StatusCode::OK,
            "text/html; charset=utf-8",
            text(UI_PAGE.to_owned()),
        ),
        (&hyper::Method::GET, "/ui/status.json") => {
            let (path, written) = {
                let shared = exporter
                    .shared
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                (shared.status_file.clone(), shared.status_written)
            };
            // The file, as `traffic-shift status` reads it (with its time).
            match crate::cli::read_status(&path) {
                Ok(status) if written => (
                    StatusCode::OK,
                    "application/json",
                    text(serde_json::to_string(&status).expect("status serializes")),
                ),
                _ => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    text("no status yet\n".to_owned()),
                ),
            }
        }
        (&hyper::Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            text("not found: the metrics are at /metrics, the live page at /ui\n".to_owned()),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            text("only GET\n".to_owned()),
        ),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `# TYPE` and `# HELP` lines of an exposition: name -> (type, help).
    fn descriptors(text: &str) -> BTreeMap<String, (String, String)> {
        let mut out: BTreeMap<String, (String, String)> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                out.entry(name.to_owned()).or_default().0 = kind.to_owned();
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("# HELP name help");
                // `Registry::register` ends the help with a period.
                out.entry(name.to_owned()).or_default().1 = help.trim_end_matches('.').to_owned();
            }
        }
        out
    }

    fn type_name(kind: FamilyType) -> &'static str {
        match kind {
            FamilyType::Counter => "counter",
            FamilyType::Gauge => "gauge",
            FamilyType::Histogram => "histogram",
        }
    }

    /// The L7 proxy names its families itself: they must be the list's.
    #[test]
    fn the_proxy_registers_the_listed_request_families() {
        let mut registry = Registry::default();
        let requests = RequestMetrics::default();
        // A family shows once it has a series.
        let labels = traffic_shift_config::labels::IstioLabels(vec![(
            "destination_version",
            "v1".to_owned(),
        )]);
        requests.record(&labels, 200, "-", std::time::Duration::from_millis(1));
        requests.buffer_overflow("default/reviews/http[0]").inc();
        requests.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        let want: BTreeMap<String, (String, String)> = [
            REQUESTS,
            REQUEST_DURATION_MILLISECONDS,
            HTTP_RETRY_BUFFER_OVERFLOW,
        ]
        .iter()
        .map(|f| {
            (
                f.name.to_owned(),
                (type_name(f.kind).to_owned(), f.help.to_owned()),
            )
        })
        .collect();
        assert_eq!(descriptors(&text), want, "{text}");
    }

    #[test]
    fn families_are_listed_once() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len(), "a family listed twice");
        assert_eq!(
            REQUEST_DURATION_MILLISECONDS.sample_names(),
            [
                "istio_request_duration_milliseconds_bucket",
                "istio_request_duration_milliseconds_sum",
                "istio_request_duration_milliseconds_count"
            ]
        );
        assert_eq!(REQUESTS.sample_names(), ["istio_requests_total"]);
    }
}
