//! What the agent tells operators: the per-second samples of the kernel's
//! counters and of the L7 proxy's request counts (for the last-minute
//! figures), what the metrics exporter needs to label them, and the status
//! file `traffic-shift status` reads.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use traffic_shift_common::EndpointStats;
use traffic_shift_config::{
    labels,
    model::{Destination, Endpoint, HttpListener, HttpMatch, HttpRoute, StringMatch, TcpRoute},
};
use traffic_shift_proxy::{Counts, CountsKey, RouteStats};

use super::{Agent, health::is_failing, sampler::Sampler, status_file::StatusFile};
use crate::{
    metrics::{Shared, SlotInfo, SlotRef},
    status::{
        CounterSlot, DestinationStatus, EndpointStatus, HttpDestinationStatus, HttpEndpointStatus,
        HttpRouteStatus, RouteStatus, Status,
    },
};

/// Connections opened per route key and endpoint (routes on unix sockets).
pub type UnixConnections = BTreeMap<String, BTreeMap<SocketAddr, u64>>;

pub struct Observer {
    /// The kernel's counters as last read, and their last minute.
    pub sampler: Sampler,
    /// Per-second samples of the L7 proxy's request counts, the last minute
    /// of them.
    pub http_history: VecDeque<(Instant, RouteStats)>,
    /// Per-second samples of the connections the routes on unix sockets
    /// opened (per route key and endpoint), the last minute of them.
    pub unix_history: VecDeque<(Instant, UnixConnections)>,
    /// What the metrics exporter needs from the agent.
    metrics: Arc<Mutex<Shared>>,
    metrics_addr: SocketAddr,
    /// The status file, written from parts kept between writes.
    pub status: StatusFile,
    /// Whether the endpoints' health gauges are to be computed again: the
    /// rules, the counters' last minute or health changed.
    pub endpoints_stale: bool,
    /// Whether the gateway endpoints' socket gauges are: the rules or the
    /// sockets changed.
    pub sockets_stale: bool,
    /// The kernel's event counters as last read (the status shows them).
    pub events: Vec<(traffic_shift_common::Event, u64)>,
    /// Of the model in force, by index: the routes served in user space
    /// (their connections counted there) and the TCP destinations with
    /// outlier detection. Found once per rules change, so a second's tick
    /// looks at these, not at every route (100 000 routes walked twice a
    /// second were most of an idle agent's CPU).
    pub user_space: Vec<usize>,
    pub outlier_dests: Vec<(usize, usize)>,
}

impl Observer {
    pub fn new(
        metrics: Arc<Mutex<Shared>>,
        metrics_addr: SocketAddr,
        status_file: PathBuf,
    ) -> Self {
        Self {
            sampler: Sampler::default(),
            http_history: VecDeque::new(),
            unix_history: VecDeque::new(),
            metrics,
            metrics_addr,
            status: StatusFile::new(status_file),
            endpoints_stale: true,
            sockets_stale: true,
            events: Vec::new(),
            user_space: Vec::new(),
            outlier_dests: Vec::new(),
        }
    }

    /// The gateway endpoints' sockets came or went.
    pub fn sockets_changed(&mut self) {
        self.sockets_stale = true;
        self.status.all_routes_stale();
    }

    pub fn shared(&self) -> MutexGuard<'_, Shared> {
        self.metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot's counters now, and how much they grew over the last minute.
    pub fn observed(&self, id: Option<u32>) -> (EndpointStats, EndpointStats) {
        self.sampler.observed(id)
    }

    /// The requests of `route` on `listener` whose [`CountsKey`] `want`
    /// admits, summed: since the route entered the rules, and over the last
    /// minute (since the oldest sample kept).
    pub fn http_observed(
        &self,
        listener: &str,
        route: &str,
        want: impl Fn(&CountsKey) -> bool,
    ) -> (Counts, Counts) {
        let key = (listener.to_owned(), route.to_owned());
        let sum = |sample: Option<&(Instant, RouteStats)>| {
            let mut sum = Counts::default();
            for (_, counts) in sample
                .and_then(|(_, s)| s.get(&key))
                .into_iter()
                .flatten()
                .filter(|(k, _)| want(k))
            {
                sum.add(counts);
            }
            sum
        };
        let now = sum(self.http_history.back());
        let then = sum(self.http_history.front());
        (now, now.since(&then))
    }
}

impl Agent {
    /// Tells the metrics exporter about the rules just applied: where each
    /// counter slot's endpoint is in the model (labels are built when a
    /// slot is first exported), the weights of the routes that split.
    pub(super) fn publish(&mut self) {
        let model = Arc::clone(&self.model);
        let mut slots = HashMap::new();
        let mut weights = BTreeMap::new();
        for (r, route) in model.routes.iter().enumerate() {
            for (d, dest) in route.destinations.iter().enumerate() {
                for (e, ep) in dest.endpoints.iter().enumerate() {
                    if let Some(id) = self.kernel.slot(route, dest, ep) {
                        let index = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
                        let at = SlotRef {
                            route: index(r),
                            dest: index(d),
                            endpoint: index(e),
                        };
                        slots.insert(id, at);
                    }
                }
                // A route that does not split has nothing to show.
                if route.destinations.len() < 2 {
                    continue;
                }
                let version = dest
                    .endpoints
                    .first()
                    .map(labels::destination_version)
                    .or_else(|| dest.subset.clone())
                    .unwrap_or_else(|| "unknown".to_owned());
                *weights
                    .entry((route.key.clone(), dest.host.clone(), version))
                    .or_default() += dest.weight;
            }
        }
        self.observer.user_space = (model.routes.iter().enumerate())
            .filter(|(_, r)| r.is_user_space())
            .map(|(i, _)| i)
            .collect();
        self.observer.outlier_dests = (model.routes.iter().enumerate())
            .flat_map(|(r, route)| {
                (route.destinations.iter().enumerate())
                    .filter(|(_, dest)| dest.outlier.is_some())
                    .map(move |(d, _)| (r, d))
            })
            .collect();
        let recycled: HashSet<u32> = self.kernel.stat_ids.recycled().iter().copied().collect();
        self.observer.sampler.forget(&recycled);
        self.observer.status.moved = true;
        self.observer.status.rules_changed();
        self.observer.endpoints_stale = true;
        self.observer.sockets_stale = true;
        let generation = self.generation;
        let mut shared = self.observer.shared();
        let shared = &mut *shared;
        // Endpoints that left the rules keep the labels of the slots that
        // counted (their closing connections still count) until reused.
        let old_model = std::mem::replace(&mut shared.model, model);
        let mut texts = crate::metrics::Texts::default();
        for (id, at) in std::mem::replace(&mut shared.slots, slots) {
            if !shared.slots.contains_key(&id)
                && shared.counted.contains(&id)
                && let Some(info) = SlotInfo::of(&old_model, at, &mut texts)
            {
                shared.retired.insert(id, Arc::new(info));
            }
        }
        shared
            .retired
            .retain(|id, _| !recycled.contains(id) && !shared.slots.contains_key(id));
        shared.counted.retain(|id| !recycled.contains(id));
        shared.weights = weights;
        shared.generation = generation;
        shared.rules_applied += 1;
    }

    /// Every second: reads the counters the kernel touched (for the
    /// last-minute figures of `status`), and tells the exporter how full
    /// the maps are and, when it changed, the endpoints' health.
    pub(super) fn sample(&mut self) {
        let now = Instant::now();
        let tick = self.observer.sampler.tick(
            now,
            self.kernel.datapath.counters(),
            self.kernel.stat_ids.iter().map(|(_, slot)| slot.id),
        );
        let requests = self.l7.proxy().route_stats();
        let requests_moved = self
            .observer
            .http_history
            .back()
            .is_none_or(|(_, last)| *last != requests);
        self.observer.http_history.push_back((now, requests));
        self.detect_outliers(now);
        self.drain.run(now, &self.kernel);
        let old = |t: &Instant| now.duration_since(*t) > Duration::from_mins(1);
        while self
            .observer
            .http_history
            .front()
            .is_some_and(|(t, _)| old(t))
        {
            self.observer.http_history.pop_front();
        }
        self.sample_unix(now);
        self.read_events();
        self.observer.status.moved |= !tick.is_empty() || requests_moved;
        if !tick.changed.is_empty() {
            let routes = self.observer.shared().routes_of(&tick.changed);
            self.observer.status.stale_routes(routes.into_iter());
        }
        self.observer.endpoints_stale |= !tick.is_empty();
        let fill = self.kernel.datapath.fill();
        let mut shared = self.observer.shared();
        shared.map_fill = fill;
        shared.counted.extend(tick.new);
        drop(shared);
        if self.observer.endpoints_stale {
            self.publish_health();
        }
        if self.observer.sockets_stale {
            self.publish_sockets();
        }
    }

    /// The kernel's event counters, read: whether they moved is noted.
    fn read_events(&mut self) {
        match self.kernel.datapath.counters().events() {
            Ok(events) => {
                self.observer.status.events_moved |= events != self.observer.events;
                self.observer.events = events;
            }
            Err(err) => tracing::warn!(%err, "cannot read the kernel event counters"),
        }
    }

    /// The endpoints' health gauges, as observed: endpoints with
    /// connections in the last minute, and those health took out.
    fn publish_health(&mut self) {
        self.observer.endpoints_stale = false;
        let mut healthy = BTreeMap::new();
        let mut set = |dest: &Destination, ep: &Endpoint, up: bool| {
            let version = labels::destination_version(ep);
            *healthy
                .entry((dest.host.clone(), version, ep.addr))
                .or_insert(true) &= up;
        };
        let shared = self.observer.shared();
        for id in self.observer.sampler.moving() {
            let Some((_, dest, ep)) = shared.slots.get(&id).and_then(|at| at.resolve(&self.model))
            else {
                continue;
            };
            let up =
                !is_failing(&self.observer.observed(Some(id)).1) && !self.health.excluded(ep.addr);
            set(dest, ep, up);
        }
        drop(shared);
        if self.health.any_excluded() {
            for route in &self.model.routes {
                for dest in &route.destinations {
                    for ep in dest
                        .endpoints
                        .iter()
                        .filter(|ep| self.health.excluded(ep.addr))
                    {
                        set(dest, ep, false);
                    }
                }
            }
        }
        self.observer.shared().healthy = healthy;
    }

    /// The gateway endpoints' socket gauges.
    fn publish_sockets(&mut self) {
        self.observer.sockets_stale = false;
        let mut registered = BTreeMap::new();
        for route in self.model.routes.iter().filter(|r| r.gateway.is_some()) {
            for dest in &route.destinations {
                // Only the sk_lookup gateway's endpoints have sockets.
                for ep in dest
                    .endpoints
                    .iter()
                    .filter(|ep| self.kernel.is_gateway_endpoint(ep.addr))
                {
                    registered.insert(
                        (dest.host.clone(), labels::destination_version(ep), ep.addr),
                        self.kernel.has_socket(ep.addr),
                    );
                }
            }
        }
        self.observer.shared().registered = registered;
    }

    /// The status as of now (see [`crate::status`]) but its TCP routes
    /// and the kernel's names (see [`StatusFile`]).
    pub(super) fn status_head(&mut self) -> Status {
        let gateway_endpoints = self.kernel.gateway_status();
        // Read now: what happened since the last tick is in (a few syscalls).
        self.read_events();
        let events = self
            .observer
            .events
            .iter()
            .map(|(e, n)| (e.name().to_owned(), *n))
            .collect();
        Status {
            generation: self.generation,
            rules: self.rules_description(),
            taken_at_ms: 0,
            // Stamped as the file is written.
            file_id: 0,
            routes: Vec::new(),
            gateway_endpoints,
            events,
            metrics: Some(self.observer.metrics_addr.to_string()),
            kernel_routes: BTreeMap::new(),
            counter_slots: BTreeMap::new(),
            http_routes: self.http_status(),
            gateways_not_served: self.not_served.iter().map(ToString::to_string).collect(),
        }
    }

    /// One TCP route of the model in force, with what was observed.
    /// The connections of the routes on unix sockets, counted in user
    /// space: a route whose counts moved is shown again.
    fn sample_unix(&mut self, now: Instant) {
        let counts = self.l7.unix_connections();
        let last = self.observer.unix_history.back().map(|(_, c)| c);
        let moved: Vec<usize> = (self.observer.user_space.iter().copied())
            .filter(|&i| {
                self.model
                    .routes
                    .get(i)
                    .is_some_and(|r| last.and_then(|l| l.get(&r.key)) != counts.get(&r.key))
            })
            .collect();
        if !moved.is_empty() {
            self.observer.status.moved = true;
            self.observer.status.stale_routes(moved.into_iter());
        }
        self.observer.unix_history.push_back((now, counts));
        while self
            .observer
            .unix_history
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_mins(1))
        {
            self.observer.unix_history.pop_front();
        }
    }

    /// A unix-socket route's connections to `addr`: since the route came
    /// in, and in the last minute.
    fn unix_opened(&self, route: &str, addr: SocketAddr) -> (u64, u64) {
        let at = |counts: &UnixConnections| {
            counts
                .get(route)
                .and_then(|c| c.get(&addr))
                .copied()
                .unwrap_or(0)
        };
        let history = &self.observer.unix_history;
        let total = history.back().map_or(0, |(_, c)| at(c));
        let before = history.front().map_or(0, |(_, c)| at(c));
        (total, total.saturating_sub(before))
    }

    pub(super) fn route_status(&self, route: &TcpRoute) -> RouteStatus {
        RouteStatus {
            route: route.key.clone(),
            kind: route
                .gateway
                .as_ref()
                .map_or_else(|| "mesh".to_owned(), |g| format!("gateway {g}")),
            service: if route.is_tls() {
                // Served in user space by SNI, counted there (`unix_opened`).
                let port = route.listeners.first().map_or(0, SocketAddr::port);
                format!(
                    "{} on port {port} by SNI {}",
                    route.service_host,
                    route.sni.join(",")
                )
            } else if route.is_unix() {
                // Served in user space, counted there (`unix_opened`).
                let sockets: Vec<String> =
                    route.unix.iter().map(|p| format!("unix://{p}")).collect();
                format!("{} on {}", route.service_host, sockets.join(","))
            } else {
                format!("{}:{}", route.service_host, route.service_port)
            },
            destinations: route
                .destinations
                .iter()
                .map(|dest| self.destination_status(route, dest))
                .collect(),
        }
    }

    /// The kernel's names for `traffic-shift maps`: route ids and counter
    /// slots in use (the status file's `kernel_routes`, `counter_slots`).
    pub(super) fn kernel_names(&self) -> (BTreeMap<u32, String>, BTreeMap<u32, CounterSlot>) {
        let kernel_routes = self
            .kernel
            .datapath
            .route_ids()
            .map(|(id, key)| (id, key.to_owned()))
            .collect();
        // The slots in force are those of the rules in force: named from
        // their keys (the slots keep only a digest of them).
        let stat_ids = &self.kernel.stat_ids;
        let counter_slots = traffic_shift_datapath::compile::stat_keys(&self.model)
            .into_iter()
            .filter_map(|key| {
                let id = stat_ids.get(&key).filter(|id| !stat_ids.is_retired(*id))?;
                let destination = match &key.subset {
                    Some(subset) => format!("{}/{subset}", key.host),
                    None => key.host.clone(),
                };
                let slot = CounterSlot {
                    route: key.route,
                    destination,
                    endpoint: key.endpoint.to_string(),
                };
                Some((id, slot))
            })
            .collect();
        (kernel_routes, counter_slots)
    }

    /// Every HTTP route of the rules in force (endpoints health took out
    /// included), with the requests the L7 proxy counted.
    fn http_status(&self) -> Vec<HttpRouteStatus> {
        let mut out = Vec::new();
        for listener in &self.model.http {
            for host in &listener.virtual_hosts {
                let service = match listener.gateway {
                    None => listener
                        .key
                        .strip_prefix("mesh ")
                        .unwrap_or(&listener.key)
                        .to_owned(),
                    Some(_) => format!("{}:{}", host.domains.join(","), listener.port),
                };
                for route in &host.routes {
                    out.push(self.http_route_status(listener, &service, route));
                }
            }
        }
        out
    }

    fn http_route_status(
        &self,
        listener: &HttpListener,
        service: &str,
        route: &HttpRoute,
    ) -> HttpRouteStatus {
        let observed = |want: &dyn Fn(&CountsKey) -> bool| {
            self.observer.http_observed(&listener.key, &route.key, want)
        };
        let (local_total, local_minute) = observed(&|(dest, _)| dest.is_none());
        let destinations = route
            .destinations
            .iter()
            .map(|d| {
                let dest = &d.destination;
                let id = Some((dest.host.clone(), dest.subset.clone()));
                let (total, minute) = observed(&|(d, _)| *d == id);
                let endpoints = dest
                    .endpoints
                    .iter()
                    .map(|ep| {
                        let (total, minute) = observed(&|(d, e)| *d == id && *e == Some(ep.addr));
                        let failing = minute.requests > 0 && minute.errors_5xx == minute.requests;
                        let state = self.health.state(ep.addr).unwrap_or(if failing {
                            "failing"
                        } else {
                            "ok"
                        });
                        HttpEndpointStatus {
                            address: ep.addr.to_string(),
                            state: state.to_owned(),
                            requests_last_minute: minute.requests,
                            requests_total: total.requests,
                            errors_5xx_last_minute: minute.errors_5xx,
                        }
                    })
                    .collect();
                HttpDestinationStatus {
                    host: dest.host.clone(),
                    subset: dest.subset.clone(),
                    weight: dest.weight,
                    requests_last_minute: minute.requests,
                    requests_total: total.requests,
                    errors_5xx_last_minute: minute.errors_5xx,
                    errors_4xx_last_minute: minute.errors_4xx,
                    errors_5xx_total: total.errors_5xx,
                    p50_ms: minute.quantile(0.5),
                    p99_ms: minute.quantile(0.99),
                    duration_buckets: if total.requests == 0 {
                        Vec::new()
                    } else {
                        total.buckets.to_vec()
                    },
                    endpoints,
                }
            })
            .collect();
        HttpRouteStatus {
            listener: listener.key.clone(),
            kind: listener
                .gateway
                .as_ref()
                .map_or_else(|| "mesh".to_owned(), |g| format!("gateway {g}")),
            service: service.to_owned(),
            route: route.key.clone(),
            name: route.name.clone(),
            matches: route.matches.iter().map(match_words).collect(),
            local_last_minute: local_minute.requests,
            local_total: local_total.requests,
            destinations,
        }
    }

    /// One destination of a route, with what was observed for it.
    fn destination_status(&self, route: &TcpRoute, dest: &Destination) -> DestinationStatus {
        let endpoints: Vec<EndpointStatus> = dest
            .endpoints
            .iter()
            .map(|ep| {
                let (mut total, mut minute) =
                    self.observer.observed(self.kernel.slot(route, dest, ep));
                if route.is_user_space() {
                    // Counted by the agent, which makes the connections.
                    (total.opened, minute.opened) = self.unix_opened(&route.key, ep.addr);
                }
                let state = if let Some(state) = self.health.state(ep.addr) {
                    state
                } else if route.gateway.is_some() && !route.is_user_space() {
                    // The sk_lookup gateway hands connections to sockets;
                    // a unix socket's route connects in user space.
                    if self.kernel.has_socket(ep.addr) {
                        "registered"
                    } else {
                        "missing"
                    }
                } else if is_failing(&minute) {
                    "failing"
                } else {
                    "ok"
                };
                EndpointStatus {
                    address: ep.addr.to_string(),
                    state: state.to_owned(),
                    connections_last_minute: minute.opened,
                    connections_total: total.opened,
                    failed_total: total.failed(),
                    failed_last_minute: minute.failed(),
                }
            })
            .collect();
        DestinationStatus {
            host: dest.host.clone(),
            subset: dest.subset.clone(),
            weight: dest.weight,
            connections_last_minute: endpoints.iter().map(|e| e.connections_last_minute).sum(),
            connections_total: endpoints.iter().map(|e| e.connections_total).sum(),
            failed_last_minute: endpoints.iter().map(|e| e.failed_last_minute).sum(),
            endpoints,
        }
    }
}

impl Agent {
    /// Where the rules come from, for the status: the directory, the store
    /// (its revision in force, whether it is reachable), or both.
    pub(super) fn rules_description(&self) -> String {
        let mut parts = Vec::new();
        if let Some(rules) = &self.sources.rules {
            parts.push(rules.display().to_string());
        }
        if let Some(fleet) = &self.sources.fleet {
            parts.push(format!(
                "{} revision {}{}",
                fleet.url,
                fleet.revision,
                if fleet.connected {
                    ""
                } else {
                    " (disconnected)"
                }
            ));
        }
        parts.join(" + ")
    }
}

/// One `match[]` entry in words, its conditions joined by `and`:
/// `header end-user = jason`, `uri prefix /api`, `query debug ~ 1|2`,
/// `without header x-skip`.
pub fn match_words(m: &HttpMatch) -> String {
    fn test(what: &str, value: &StringMatch) -> String {
        match value {
            StringMatch::Exact(v) => format!("{what} = {v}"),
            StringMatch::Prefix(v) => format!("{what} prefix {v}"),
            StringMatch::Regex(v) => format!("{what} ~ {v}"),
            StringMatch::Any => what.to_owned(),
        }
    }
    let mut words = Vec::new();
    if let Some(uri) = &m.uri {
        let mut uri = test("uri", uri);
        if m.ignore_uri_case {
            uri.push_str(" (any case)");
        }
        words.push(uri);
    }
    for (what, value) in [
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(value) = value {
            words.push(test(what, value));
        }
    }
    for (name, value) in &m.headers {
        words.push(test(&format!("header {name}"), value));
    }
    for (name, value) in &m.query_params {
        words.push(test(&format!("query {name}"), value));
    }
    for (name, value) in &m.without_headers {
        words.push(test(&format!("without header {name}"), value));
    }
    if let Some(port) = m.port {
        words.push(format!("port {port}"));
    }
    if words.is_empty() {
        return "every request".to_owned();
    }
    words.join(" and ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn matches_in_words() {
        let jason = HttpMatch {
            headers: BTreeMap::from([("end-user".to_owned(), StringMatch::Exact("jason".into()))]),
            ..HttpMatch::default()
        };
        assert_eq!(match_words(&jason), "header end-user = jason");
        let many = HttpMatch {
            uri: Some(StringMatch::Prefix("/api".into())),
            ignore_uri_case: true,
            method: Some(StringMatch::Regex("GET|HEAD".into())),
            query_params: BTreeMap::from([("debug".to_owned(), StringMatch::Exact("1".into()))]),
            without_headers: BTreeMap::from([("x-skip".to_owned(), StringMatch::Any)]),
            port: Some(8080),
            ..HttpMatch::default()
        };
        assert_eq!(
            match_words(&many),
            "uri prefix /api (any case) and method ~ GET|HEAD and query debug = 1 \
             and without header x-skip and port 8080"
        );
        assert_eq!(match_words(&HttpMatch::default()), "every request");
    }
}
