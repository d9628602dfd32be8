//! What the proxy reports: Istio's request metrics (for `/metrics`) and
//! per-endpoint upstream outcomes (for outlier detection).

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

use traffic_shift_config::labels::{self, FamilyType, IstioLabels};

/// Istio's `istio_requests_total`, as the proxy registers it.
pub const REQUESTS: labels::Family = labels::Family {
    name: "istio_requests",
    kind: FamilyType::Counter,
    help: "Requests served by the L7 proxy (Istio standard metric)",
};
/// Istio's `istio_request_duration_milliseconds`, as the proxy registers it.
pub const REQUEST_DURATION_MILLISECONDS: labels::Family = labels::Family {
    name: "istio_request_duration_milliseconds",
    kind: FamilyType::Histogram,
    help: "Request duration, until the response body was sent, in milliseconds (Istio standard metric)",
};

/// Requests whose body outgrew the replay buffer on a route that retries
/// or mirrors: streamed on, but neither retried nor mirrored (Envoy's
/// `retry_or_shadow_abandoned`), by route.
pub const HTTP_RETRY_BUFFER_OVERFLOW: labels::Family = labels::Family {
    name: "traffic_shift_http_retry_buffer_overflow",
    kind: FamilyType::Counter,
    help: "Requests whose body outgrew the L7 proxy's replay buffer on a route that retries or mirrors: not retried, not mirrored",
};

type Labels = Vec<(&'static str, String)>;

/// Istio's `istio_request_duration_milliseconds` buckets (upper bounds,
/// milliseconds; a last one, `+Inf`, is implied).
pub const DURATION_BUCKETS: [f64; 19] = [
    0.5,
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10_000.0,
    30_000.0,
    60_000.0,
    300_000.0,
    600_000.0,
    1_800_000.0,
    3_600_000.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// `istio_requests_total` and `istio_request_duration_milliseconds`, by
/// Istio's labels plus `response_code` and `response_flags`. Live metrics:
/// the agent's metrics exporter registers them in each scrape's registry.
#[derive(Debug)]
pub struct RequestMetrics {
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// [`HTTP_RETRY_BUFFER_OVERFLOW`], by `route`.
    overflow: Family<Labels, Counter>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            overflow: Family::default(),
        }
    }
}

impl RequestMetrics {
    /// Adds both families to a scrape's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(REQUESTS.name, REQUESTS.help, self.requests.clone());
        registry.register(
            REQUEST_DURATION_MILLISECONDS.name,
            REQUEST_DURATION_MILLISECONDS.help,
            self.duration.clone(),
        );
        registry.register(
            HTTP_RETRY_BUFFER_OVERFLOW.name,
            HTTP_RETRY_BUFFER_OVERFLOW.help,
            self.overflow.clone(),
        );
    }

    /// The replay buffer overflow counter of route `route` (made at zero
    /// the first time: once per route of a configuration, not per request).
    pub fn buffer_overflow(&self, route: &str) -> Counter {
        self.overflow
            .get_or_create(&vec![("route", route.to_owned())])
            .clone()
    }

    pub fn record(&self, labels: &IstioLabels, code: u16, flags: &str, elapsed: Duration) {
        self.handles(labels, code, flags, None).record(elapsed);
    }

    /// [`Self::handles`] of a gRPC call, with Istio's
    /// `grpc_response_status` (its `grpc-status`).
    pub fn grpc_handles(
        &self,
        labels: &IstioLabels,
        code: u16,
        flags: &str,
        counts: Option<Arc<SeriesCounts>>,
        status: u32,
    ) -> Handles {
        let mut labels = labels.clone();
        labels.0.push(("grpc_response_status", status.to_string()));
        self.handles(&labels, code, flags, counts)
    }

    /// The series of `labels` with `response_code` and `response_flags`
    /// (created at zero if new), also counted in `counts` (for `status`)
    /// when given.
    pub fn handles(
        &self,
        labels: &IstioLabels,
        code: u16,
        flags: &str,
        counts: Option<Arc<SeriesCounts>>,
    ) -> Handles {
        let mut labels = labels.0.clone();
        labels.push(("response_code", code.to_string()));
        labels.push(("response_flags", flags.to_owned()));
        Handles {
            requests: self.requests.get_or_create(&labels).clone(),
            duration: self.duration.get_or_create(&labels).clone(),
            counts: counts.map(|c| (c, Class::of(code))),
        }
    }
}

/// One series of both families (clones share the values), and the
/// counts `status` reads for its route, destination and endpoint.
#[derive(Clone, Debug)]
pub struct Handles {
    requests: Counter,
    duration: Histogram,
    counts: Option<(Arc<SeriesCounts>, Class)>,
}

impl Handles {
    /// Counts one request: a few atomic adds, no lock, no allocation.
    pub fn record(&self, elapsed: Duration) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        self.duration.observe(ms);
        self.requests.inc();
        if let Some((counts, class)) = &self.counts {
            counts.record(ms, *class);
        }
    }
}

/// A response code's class, as `status` counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Ok,
    Client,
    Server,
}

impl Class {
    fn of(code: u16) -> Self {
        match code {
            400..=499 => Self::Client,
            500..=599 => Self::Server,
            _ => Self::Ok,
        }
    }
}

/// The number of latency buckets: [`DURATION_BUCKETS`] and `+Inf`.
pub const BUCKETS: usize = DURATION_BUCKETS.len() + 1;

/// Requests of one route's destination and endpoint, cumulative, as atomics
/// (prometheus-client's `Histogram` does not show its buckets): what
/// `traffic-shift status` shows of HTTP routes.
#[derive(Debug, Default)]
pub struct SeriesCounts {
    requests: AtomicU64,
    errors_5xx: AtomicU64,
    errors_4xx: AtomicU64,
    /// Per bucket of [`DURATION_BUCKETS`] (not cumulative), the last `+Inf`.
    buckets: [AtomicU64; BUCKETS],
}

impl SeriesCounts {
    fn record(&self, ms: f64, class: Class) {
        let bucket = DURATION_BUCKETS.partition_point(|&le| le < ms);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        match class {
            Class::Ok => {}
            Class::Client => {
                self.errors_4xx.fetch_add(1, Ordering::Relaxed);
            }
            Class::Server => {
                self.errors_5xx.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn load(&self) -> Counts {
        Counts {
            requests: self.requests.load(Ordering::Relaxed),
            errors_5xx: self.errors_5xx.load(Ordering::Relaxed),
            errors_4xx: self.errors_4xx.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
        }
    }
}

/// A snapshot of [`SeriesCounts`], or a sum or difference of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub errors_5xx: u64,
    pub errors_4xx: u64,
    /// Requests per latency bucket (not cumulative): the bucket `i` holds
    /// durations up to [`DURATION_BUCKETS`]`[i]` ms and over the one
    /// before; the last is over every bound.
    pub buckets: [u64; BUCKETS],
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.errors_5xx += other.errors_5xx;
        self.errors_4xx += other.errors_4xx;
        for (b, o) in self.buckets.iter_mut().zip(&other.buckets) {
            *b += o;
        }
    }

    /// What grew from `then` to `self`; a counter that went down (its
    /// series was dropped and made anew) counts from zero.
    #[must_use]
    pub fn since(&self, then: &Counts) -> Counts {
        let d = |now: u64, then: u64| if now >= then { now - then } else { now };
        Counts {
            requests: d(self.requests, then.requests),
            errors_5xx: d(self.errors_5xx, then.errors_5xx),
            errors_4xx: d(self.errors_4xx, then.errors_4xx),
            buckets: std::array::from_fn(|i| d(self.buckets[i], then.buckets[i])),
        }
    }

    /// The `q` quantile (0..=1) of the latencies, in milliseconds, as
    /// Prometheus' `histogram_quantile` estimates it: linear within the
    /// bucket the rank falls in (from 0 in the first), the last finite
    /// bound when it falls in `+Inf`. `None` without requests.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &count) in self.buckets.iter().enumerate() {
            #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
            let reached = (below + count) as f64 >= rank;
            if count > 0 && reached {
                let Some(&upper) = DURATION_BUCKETS.get(i) else {
                    return Some(DURATION_BUCKETS[DURATION_BUCKETS.len() - 1]);
                };
                let lower = if i == 0 { 0.0 } else { DURATION_BUCKETS[i - 1] };
                #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
                let within = (rank - below as f64) / count as f64;
                return Some(lower + (upper - lower) * within);
            }
            below += count;
        }
        Some(DURATION_BUCKETS[DURATION_BUCKETS.len() - 1])
    }
}

/// Which destination of a route a request went to, by what it names
/// (kept across rules changes, which may reorder or reweigh them):
/// `(host, subset)`. Two destinations of one route that name the same
/// are counted together, as Istio's metrics count them.
pub type DestinationId = (String, Option<String>);

/// Where a request counts for `status`: the destination (`None`: the route
/// answered itself, e.g. a fault or a redirect) and the endpoint reached
/// (`None`: none was, e.g. no healthy upstream).
pub type CountsKey = (Option<DestinationId>, Option<SocketAddr>);

/// The [`SeriesCounts`] of one route of one listener, kept by the proxy
/// across rules changes while the route stays.
#[derive(Debug, Default)]
pub struct RouteCounts(Mutex<HashMap<CountsKey, Arc<SeriesCounts>>>);

impl RouteCounts {
    /// The counts of `key`, made at zero the first time (once per series of
    /// a configuration, not per request).
    pub fn series(&self, key: CountsKey) -> Arc<SeriesCounts> {
        let mut all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(all.entry(key).or_default())
    }

    fn snapshot(&self) -> BTreeMap<CountsKey, Counts> {
        let all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.iter().map(|(k, v)| (k.clone(), v.load())).collect()
    }
}

/// The counts of every route, by `(listener key, route key)`.
#[derive(Debug, Default)]
pub struct AllRouteCounts(Mutex<HashMap<(String, String), Arc<RouteCounts>>>);

impl AllRouteCounts {
    /// The counts of `route` on `listener` (kept if it had some).
    pub fn route(&self, listener: &str, route: &str) -> Arc<RouteCounts> {
        let all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.get(&(listener.to_owned(), route.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Serves `kept` from now on: routes that left the rules are dropped.
    pub fn replace(&self, kept: HashMap<(String, String), Arc<RouteCounts>>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = kept;
    }

    /// Every route's cumulative counts.
    pub fn snapshot(&self) -> RouteStats {
        let all: Vec<((String, String), Arc<RouteCounts>)> = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        all.into_iter()
            .map(|(key, counts)| (key, counts.snapshot()))
            .collect()
    }
}

/// Cumulative request counts by `(listener key, route key)`, then by
/// destination and endpoint ([`CountsKey`]): since the route entered the
/// rules. Only series that had requests are in it.
pub type RouteStats = BTreeMap<(String, String), BTreeMap<CountsKey, Counts>>;

/// Which series of a route a request counts in: the destination index
/// (`None`: the route's own answer, e.g. a fault or a redirect), the
/// endpoint reached, the response code and flags.
pub type SeriesKey = (Option<usize>, Option<SocketAddr>, u16, &'static str);

/// A route's series handles, so a request costs a small hash lookup, not
/// Istio's ~20 labels built, cloned and hashed twice (9% of the proxy's CPU
/// under load). Bounded by the route's destinations x endpoints x codes.
#[derive(Debug, Default)]
pub struct SeriesCache(Mutex<HashMap<SeriesKey, Handles>>);

impl SeriesCache {
    /// The handles of `key`, made by `make()` the first time.
    pub fn get(&self, key: SeriesKey, make: impl FnOnce() -> Handles) -> Handles {
        let mut cache = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.entry(key).or_insert_with(make).clone()
    }
}

/// What one endpoint's upstream requests gave, for outlier detection
/// (Envoy's `consecutive_5xx` and `consecutive_gateway_failure`, local
/// origin errors counted as 5xx: a failed connect or a reset as 503, a
/// timeout as 504).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointOutcomes {
    /// Upstream attempts (retries each count).
    pub requests: u64,
    /// Attempts that ended in a 5xx or a local error.
    pub errors_5xx: u64,
    /// 5xx in a row since the last non-5xx answer.
    pub consecutive_5xx: u32,
    /// 502, 503, 504 (or a local error) in a row.
    pub consecutive_gateway_errors: u32,
}

/// The outcomes of every endpoint the proxy sent requests to.
#[derive(Debug, Default)]
pub struct Outcomes(Mutex<HashMap<SocketAddr, EndpointOutcomes>>);

impl Outcomes {
    pub fn record(&self, endpoint: SocketAddr, status: u16) {
        let mut all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let o = all.entry(endpoint).or_default();
        o.requests += 1;
        if status >= 500 {
            o.errors_5xx += 1;
            o.consecutive_5xx = o.consecutive_5xx.saturating_add(1);
        } else {
            o.consecutive_5xx = 0;
        }
        if (502..=504).contains(&status) {
            o.consecutive_gateway_errors = o.consecutive_gateway_errors.saturating_add(1);
        } else {
            o.consecutive_gateway_errors = 0;
        }
    }

    pub fn snapshot(&self) -> BTreeMap<SocketAddr, EndpointOutcomes> {
        let all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Forgets endpoints not in `keep` (after an update), so the map stays
    /// bounded by the endpoints in the rules.
    pub fn retain(&self, keep: &std::collections::HashSet<SocketAddr>) {
        let mut all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.retain(|k, _| keep.contains(k));
    }
}
