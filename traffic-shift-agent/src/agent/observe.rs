//! What the agent tells operators: the per-second samples of the kernel's
//! counters and of the L7 proxy's request counts (for the last-minute
//! figures), what the metrics exporter needs to label them, and the status
//! file `traffic-shift status` reads.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use traffic_shift_common::EndpointStats;
use traffic_shift_config::{
    labels,
    model::{HttpListener, HttpMatch, HttpRoute, StringMatch},
};
use traffic_shift_proxy::{Counts, CountsKey, RouteStats};

use super::{Agent, health::is_failing};
use crate::{
    metrics::{Shared, SlotInfo},
    status::{
        DestinationStatus, EndpointStatus, HttpDestinationStatus, HttpEndpointStatus,
        HttpRouteStatus, RouteStatus, Status,
    },
};

/// The longest the counters' tick lets the status file wait (a large rule
/// set's status is costly to build): half of what readers call stale.
const STATUS_MAX_WAIT: Duration = Duration::from_millis(crate::status::STALE_AFTER_MS / 2);

pub struct Observer {
    /// Per-second samples of every slot's counters, the last minute of them.
    pub history: VecDeque<(Instant, BTreeMap<u32, EndpointStats>)>,
    /// Per-second samples of the L7 proxy's request counts, the last minute
    /// of them.
    pub http_history: VecDeque<(Instant, RouteStats)>,
    /// What the metrics exporter needs from the agent.
    metrics: Arc<Mutex<Shared>>,
    metrics_addr: SocketAddr,
    pub status_file: PathBuf,
    /// The status last written, to write only changes.
    last_status: String,
    /// When the status was last built, and what building it cost.
    status_built: Option<(Instant, Duration)>,
}

impl Observer {
    pub fn new(
        metrics: Arc<Mutex<Shared>>,
        metrics_addr: SocketAddr,
        status_file: PathBuf,
    ) -> Self {
        Self {
            history: VecDeque::new(),
            http_history: VecDeque::new(),
            metrics,
            metrics_addr,
            status_file,
            last_status: String::new(),
            status_built: None,
        }
    }

    pub fn shared(&self) -> MutexGuard<'_, Shared> {
        self.metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot's counters now, and how much they grew over the last minute
    /// (since the oldest sample kept).
    pub fn observed(&self, id: Option<u32>) -> (EndpointStats, EndpointStats) {
        let Some(id) = id else {
            return Default::default();
        };
        let get = |sample: Option<&(Instant, BTreeMap<u32, EndpointStats>)>| {
            sample
                .and_then(|(_, s)| s.get(&id).copied())
                .unwrap_or_default()
        };
        let now = get(self.history.back());
        let then = get(self.history.front());
        let delta = EndpointStats {
            opened: now.opened.saturating_sub(then.opened),
            established: now.established.saturating_sub(then.established),
            failed_refused: now.failed_refused.saturating_sub(then.failed_refused),
            failed_timeout: now.failed_timeout.saturating_sub(then.failed_timeout),
            failed_other: now.failed_other.saturating_sub(then.failed_other),
            ..EndpointStats::default()
        };
        (now, delta)
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
    /// Tells the metrics exporter about the rules just applied: the labels
    /// of every counter slot, the configured weights.
    pub(super) fn publish(&mut self) {
        let live: BTreeSet<u32> = self.kernel.stat_ids.iter().map(|(_, id)| id).collect();
        let mut slots = std::mem::take(&mut self.observer.shared().slots);
        // Slots reused for another endpoint lose their old labels.
        slots.retain(|id, _| live.contains(id));
        let mut weights = BTreeMap::new();
        for route in &self.model.routes {
            for dest in &route.destinations {
                let mut version = None;
                for ep in &dest.endpoints {
                    let labels = labels::istio_labels(route, dest, ep);
                    version = Some(labels.get("destination_version").to_owned());
                    if let Some(id) = self.kernel.slot(route, dest, ep) {
                        slots.insert(
                            id,
                            SlotInfo {
                                labels,
                                endpoint: ep.addr,
                                route: route.key.clone(),
                            },
                        );
                    }
                }
                let version = version
                    .or_else(|| dest.subset.clone())
                    .unwrap_or_else(|| "unknown".to_owned());
                *weights
                    .entry((route.key.clone(), dest.host.clone(), version))
                    .or_default() += dest.weight;
            }
        }
        let generation = self.generation;
        let mut shared = self.observer.shared();
        shared.slots = slots;
        shared.weights = weights;
        shared.generation = generation;
        shared.rules_applied += 1;
    }

    /// Every second: takes a sample of the counters (for the last-minute
    /// figures of `status`) and tells the exporter how full the maps are
    /// and which gateway sockets are held.
    pub(super) fn sample(&mut self) {
        let now = Instant::now();
        let counters = self.kernel.datapath.counters();
        let sample: BTreeMap<u32, EndpointStats> = self
            .kernel
            .stat_ids
            .iter()
            .filter_map(|(_, id)| counters.stats(id).ok().map(|s| (id, s)))
            .collect();
        self.observer.history.push_back((now, sample));
        let requests = self.l7.proxy().route_stats();
        self.observer.http_history.push_back((now, requests));
        self.detect_outliers(now);
        self.drain.run(now, &self.kernel);
        let old = |t: &Instant| now.duration_since(*t) > Duration::from_mins(1);
        while self.observer.history.front().is_some_and(|(t, _)| old(t)) {
            self.observer.history.pop_front();
        }
        while self
            .observer
            .http_history
            .front()
            .is_some_and(|(t, _)| old(t))
        {
            self.observer.http_history.pop_front();
        }
        let fill = self.kernel.datapath.fill();
        let mut healthy = BTreeMap::new();
        for route in &self.model.routes {
            for dest in &route.destinations {
                for ep in &dest.endpoints {
                    let version = labels::destination_version(ep);
                    let up =
                        !is_failing(&self.observer.observed(self.kernel.slot(route, dest, ep)).1)
                            && !self.health.excluded(ep.addr);
                    *healthy
                        .entry((dest.host.clone(), version, ep.addr.to_string()))
                        .or_insert(true) &= up;
                }
            }
        }
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
                        (
                            dest.host.clone(),
                            labels::destination_version(ep),
                            ep.addr.to_string(),
                        ),
                        self.kernel.has_socket(ep.addr),
                    );
                }
            }
        }
        let mut shared = self.observer.shared();
        shared.map_fill = fill;
        shared.registered = registered;
        shared.healthy = healthy;
    }

    /// The status as of now (see [`crate::status`]).
    fn status(&self) -> Status {
        let gateway_endpoints = self.kernel.gateway_status();
        let events = match self.kernel.datapath.counters().events() {
            Ok(events) => events
                .into_iter()
                .map(|(e, n)| (e.name().to_owned(), n))
                .collect(),
            Err(err) => {
                tracing::warn!(%err, "cannot read the kernel event counters");
                BTreeMap::new()
            }
        };
        let routes = self
            .model
            .routes
            .iter()
            .map(|route| RouteStatus {
                route: route.key.clone(),
                kind: route
                    .gateway
                    .as_ref()
                    .map_or_else(|| "mesh".to_owned(), |g| format!("gateway {g}")),
                service: format!("{}:{}", route.service_host, route.service_port),
                destinations: route
                    .destinations
                    .iter()
                    .map(|dest| self.destination_status(route, dest))
                    .collect(),
            })
            .collect();
        let kernel_routes = self
            .kernel
            .datapath
            .route_ids()
            .map(|(id, key)| (id, key.to_owned()))
            .collect();
        let stat_ids = &self.kernel.stat_ids;
        let counter_slots = stat_ids
            .iter()
            .filter(|(_, id)| !stat_ids.is_retired(*id))
            .map(|(key, id)| {
                let destination = match &key.subset {
                    Some(subset) => format!("{}/{subset}", key.host),
                    None => key.host.clone(),
                };
                let slot = crate::status::CounterSlot {
                    route: key.route.clone(),
                    destination,
                    endpoint: key.endpoint.to_string(),
                };
                (id, slot)
            })
            .collect();
        Status {
            generation: self.generation,
            rules: self.rules_description(),
            taken_at_ms: 0,
            routes,
            gateway_endpoints,
            events,
            metrics: Some(self.observer.metrics_addr.to_string()),
            kernel_routes,
            counter_slots,
            http_routes: self.http_status(),
            gateways_not_served: self.not_served.iter().map(ToString::to_string).collect(),
        }
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
    fn destination_status(
        &self,
        route: &traffic_shift_config::model::TcpRoute,
        dest: &traffic_shift_config::model::Destination,
    ) -> DestinationStatus {
        let endpoints: Vec<EndpointStatus> = dest
            .endpoints
            .iter()
            .map(|ep| {
                let (total, minute) = self.observer.observed(self.kernel.slot(route, dest, ep));
                let state = if let Some(state) = self.health.state(ep.addr) {
                    state
                } else if route.gateway.is_some() {
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

    /// Writes the status file if anything in it changed, or every
    /// [`HEARTBEAT_MS`](crate::status::HEARTBEAT_MS) anyway, so `status`
    /// can tell a running agent from a file left behind (atomically: a
    /// reader sees the old or the new file, never half of one).
    ///
    /// After an `event` (rules, health, sockets, an admin request) at once;
    /// else (the counters' tick) when due: building it takes ~0.1 ms per
    /// route (0.7 s at 10 000 routes, which took a whole CPU every second),
    /// so it waits 20 times what it cost, at most `STATUS_MAX_WAIT`
    /// (under the readers' stale mark).
    pub(super) fn write_status(&mut self, event: bool) {
        let now = Instant::now();
        if let Some((built, cost)) = self.observer.status_built
            && !event
            && now.duration_since(built) < (cost * 20).min(STATUS_MAX_WAIT)
        {
            return;
        }
        let mut status = self.status();
        self.publish_node_counters(&status);
        // Compared without the time, so an idle agent only rewrites it for the heartbeat.
        let text = serde_json::to_string(&status).expect("status serializes");
        self.observer.status_built = Some((now, now.elapsed()));
        let heartbeat = Duration::from_millis(crate::status::HEARTBEAT_MS);
        let fresh = std::fs::metadata(&self.observer.status_file)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < heartbeat);
        if text == self.observer.last_status && fresh {
            return;
        }
        status.taken_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let stamped = serde_json::to_string(&status).expect("status serializes");
        self.observer.shared().status = Arc::from(stamped.as_str());
        let tmp = self.observer.status_file.with_extension("tmp");
        let result = self
            .observer
            .status_file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, &stamped))
            .and_then(|()| std::fs::rename(&tmp, &self.observer.status_file));
        match result {
            Ok(()) => self.observer.last_status = text,
            Err(err) => {
                tracing::warn!(file = %self.observer.status_file.display(), %err, "cannot write the status file");
            }
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
