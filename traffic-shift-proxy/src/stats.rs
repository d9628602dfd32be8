//! What the proxy reports: Istio's request metrics (for `/metrics`) and
//! per-endpoint upstream outcomes (for outlier detection).

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::Mutex,
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

type Labels = Vec<(&'static str, String)>;

/// Istio's `istio_request_duration_milliseconds` buckets.
const DURATION_BUCKETS: [f64; 19] = [
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
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
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
    }

    pub fn record(&self, labels: &IstioLabels, code: u16, flags: &str, elapsed: Duration) {
        self.handles(labels, code, flags).record(elapsed);
    }

    /// The series of `labels` with `response_code` and `response_flags`
    /// (created at zero if new).
    pub fn handles(&self, labels: &IstioLabels, code: u16, flags: &str) -> Handles {
        let mut labels = labels.0.clone();
        labels.push(("response_code", code.to_string()));
        labels.push(("response_flags", flags.to_owned()));
        Handles {
            requests: self.requests.get_or_create(&labels).clone(),
            duration: self.duration.get_or_create(&labels).clone(),
        }
    }
}

/// One series of both families (clones share the values).
#[derive(Clone, Debug)]
pub struct Handles {
    requests: Counter,
    duration: Histogram,
}

impl Handles {
    pub fn record(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64() * 1000.0);
        self.requests.inc();
    }
}

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
    /// The handles of `key`, made from `labels()` the first time.
    pub fn get(
        &self,
        key: SeriesKey,
        metrics: &RequestMetrics,
        labels: impl FnOnce() -> IstioLabels,
    ) -> Handles {
        let mut cache = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .entry(key)
            .or_insert_with(|| metrics.handles(&labels(), key.2, key.3))
            .clone()
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
