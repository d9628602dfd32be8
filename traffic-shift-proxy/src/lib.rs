//! The userspace L7 proxy: serves VirtualService `http` rules on hyper
//! and tokio, HTTP/1.1 (keep-alive) and HTTP/2 cleartext (prior knowledge)
//! from clients, pooled HTTP/1.1 or h2c connections to endpoints.
//!
//! A request: the listener (a Gateway server's, by key; or a mesh
//! service's, by the address the client connected to) -> the virtual host
//! by authority -> the first route whose matches admit it ([`routes`]) ->
//! fault injection -> `redirect` / `direct_response`, or a destination and
//! an endpoint picked as the kernel path does ([`select`]) -> header
//! operations and rewrite ([`rewrite`]) -> the upstream request with
//! timeout and retries, mirrors sent aside -> the response, with its header
//! operations. Errors are Envoy's: 404 no route (`NR`), 503 no healthy
//! upstream (`UH`), 503 on connect failure (`UF`) or reset (`UC`), 504 on
//! timeout (`UT`), each with a short body naming the cause.
//!
//! [`Proxy::update`] swaps the whole configuration at once: a request runs
//! to its end on the snapshot it started with; route cursors (by route key)
//! and the upstream connection pool (by endpoint) outlive updates.
//!
//! The modules, in the order a request meets them:
//!
//! | module | what |
//! |---|---|
//! | `server` | listeners, accept, hyper connection serving (HTTP/1.1 or h2c), [`Options`] |
//! | `terminate` | TLS termination on HTTPS gateway listeners: the certificate by SNI, ALPN |
//! | `request` | one request: listener, virtual host, route; then a local answer or a destination, the body, metrics |
//! | `routes` | the configuration snapshot: listeners, virtual hosts, routes and their matches |
//! | `select` | the destination and endpoint picks (smooth, random, consistent hash) |
//! | `local` | local replies: fault injection (delay, abort), redirect, direct response, errors with Envoy's flags |
//! | `grpc` | gRPC calls: h2c upstream, local replies as trailers-only gRPC answers (Envoy's HTTP to gRPC status table) |
//! | `rewrite` | header operations, uri and authority rewrite, redirect locations |
//! | `body` | request bodies streamed upstream, the replay buffer of retries and mirrors |
//! | `forward` | the upstream request, the HTTP/1.1 and h2c client pools, timeout and retries |
//! | `mirror` | copies of a request to mirror destinations |
//! | `stats` | request metrics (Istio's), upstream outcomes per endpoint |
//! | [`splice`] | TCP routes of Gateway servers on unix sockets: the same picks, per connection, bytes copied both ways |
//! | [`echo`] | the `http-echo` backend of the demo, tests and bench |

mod body;
mod cors;
pub mod echo;
mod forward;
mod grpc;
mod local;
mod mirror;
pub mod passthrough;
mod request;
mod rewrite;
mod routes;
mod select;
mod server;
pub mod sni;
pub mod splice;
mod stats;
mod terminate;

#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use http_body_util::combinators::BoxBody;
use hyper::body::Bytes;
use tokio::sync::{Semaphore, watch};
use traffic_shift_config::model::HttpListener;

use self::{
    forward::Upstream,
    routes::Config,
    select::RouteState,
    stats::{AllRouteCounts, Outcomes, RouteCounts},
};
pub use self::{
    passthrough::Passthrough,
    request::route_for,
    routes::RegexError,
    server::{Options, OriginalDst},
    splice::{EndpointCounts, KernelSplicer, Splice},
    stats::{
        BUCKETS, Counts, CountsKey, DURATION_BUCKETS, DestinationId, EndpointOutcomes,
        HTTP_RETRY_BUFFER_OVERFLOW, REQUEST_DURATION_MILLISECONDS, REQUESTS, RequestMetrics,
        RouteStats,
    },
};

/// A configuration built by [`Proxy::prepare`], served by [`Proxy::install`].
#[derive(Debug)]
pub struct Prepared {
    config: Config,
    /// Selection cursors of the routes in it, by route key.
    states: HashMap<String, Arc<RouteState>>,
    /// Every endpoint it can send to.
    endpoints: HashSet<SocketAddr>,
    /// The request counts of the routes in it, by listener and route key.
    counts: HashMap<(String, String), Arc<RouteCounts>>,
    /// The TLS acceptors of its HTTPS listeners.
    acceptors: terminate::Acceptors,
}

/// The body of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// The L7 proxy. Cheap to share (`Arc`); every serve task holds one.
pub struct Proxy {
    options: Options,
    config: watch::Sender<Arc<Config>>,
    /// Route selection cursors by route key, kept across updates.
    states: Mutex<HashMap<String, Arc<RouteState>>>,
    /// The upstream connection pools (by endpoint), kept across updates.
    upstream: Upstream,
    metrics: Arc<RequestMetrics>,
    outcomes: Outcomes,
    /// Requests per route, destination and endpoint, for `status`.
    counts: AllRouteCounts,
    connections: Arc<Semaphore>,
    /// The TLS acceptors of the HTTPS listeners in force, by key.
    acceptors: std::sync::RwLock<terminate::Acceptors>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy with no listeners yet (every request gets 404 until
    /// [`Proxy::update`]).
    pub fn new(options: Options) -> Arc<Self> {
        Arc::new(Self {
            upstream: Upstream::new(options.connect_timeout),
            config: watch::Sender::new(Arc::new(Config::default())),
            states: Mutex::new(HashMap::new()),
            metrics: Arc::new(RequestMetrics::default()),
            outcomes: Outcomes::default(),
            counts: AllRouteCounts::default(),
            connections: Arc::new(Semaphore::new(options.max_connections)),
            acceptors: std::sync::RwLock::default(),
            options,
        })
    }

    /// Replaces the whole configuration at once: [`Proxy::prepare`] then
    /// [`Proxy::install`]. Requests in flight finish on the one they
    /// started with. On error the previous one stays.
    pub fn update(&self, listeners: Vec<HttpListener>) -> Result<(), RegexError> {
        let prepared = self.prepare(listeners)?;
        self.install(prepared);
        Ok(())
    }

    /// Builds the configuration for `listeners` without serving it yet: the
    /// step that can fail, taken before anything else of a rules change
    /// (the kernel tables) is touched. Routes that stay keep their
    /// selection cursors.
    pub fn prepare(&self, listeners: Vec<HttpListener>) -> Result<Prepared, RegexError> {
        let endpoints: HashSet<SocketAddr> = listeners
            .iter()
            .flat_map(|l| &l.virtual_hosts)
            .flat_map(|h| &h.routes)
            .flat_map(|r| {
                r.destinations
                    .iter()
                    .map(|d| &d.destination)
                    .chain(r.all_mirrors().map(|m| &m.destination))
            })
            .flat_map(|d| d.endpoints.iter().map(|e| e.addr))
            .collect();
        let acceptors = terminate::acceptors(&listeners);
        let states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut kept = HashMap::new();
        let mut counts = HashMap::new();
        let config = Config::build(listeners, |listener, route| {
            let state = states.get(&route.key).cloned().unwrap_or_default();
            kept.insert(route.key.clone(), Arc::clone(&state));
            let route_counts = self.counts.route(listener, &route.key);
            counts.insert(
                (listener.to_owned(), route.key.clone()),
                Arc::clone(&route_counts),
            );
            (state, route_counts)
        })?;
        Ok(Prepared {
            config,
            states: kept,
            endpoints,
            counts,
            acceptors,
        })
    }

    /// Serves a configuration [`Proxy::prepare`] built; cannot fail.
    pub fn install(&self, prepared: Prepared) {
        let Prepared {
            config,
            states,
            endpoints,
            counts,
            acceptors,
        } = prepared;
        *self
            .acceptors
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = acceptors;
        *self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = states;
        self.outcomes.retain(&endpoints);
        self.counts.replace(counts);
        tracing::info!(
            listeners = config.listeners.len(),
            "L7 proxy configuration updated"
        );
        self.config.send_replace(Arc::new(config));
    }

    /// The request metrics, for the agent's metrics exporter.
    pub fn metrics(&self) -> Arc<RequestMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Upstream outcomes per endpoint since it entered the rules, for
    /// outlier detection: poll it (each interval) and eject an endpoint
    /// whose `consecutive_5xx` / `consecutive_gateway_errors` reached the
    /// DestinationRule's threshold. Counts of endpoints that left the rules
    /// are dropped at the next update.
    pub fn endpoint_outcomes(&self) -> std::collections::BTreeMap<SocketAddr, EndpointOutcomes> {
        self.outcomes.snapshot()
    }

    /// Requests served per listener and route, then per destination and
    /// endpoint: cumulative counts, 5xx, 4xx and latency buckets since the
    /// route entered the rules (kept across rules changes while it stays),
    /// for `traffic-shift status`. Only what had requests is in it.
    pub fn route_stats(&self) -> RouteStats {
        self.counts.snapshot()
    }
}
