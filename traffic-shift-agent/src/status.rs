//! What the running agent reports about itself: the routes in force, each
//! destination's configured weight and the connections (TCP) or requests
//! (HTTP) observed for it, the gateway endpoints' sockets and the kernel's
//! event counters.
//!
//! The agent writes it as JSON (`--status-file`, with a summary and, for a
//! large rule set, a delta of what changed since: [`files`]); `traffic-shift
//! status` reads it and renders it ([`render`]). The types are the contract
//! between the two.

pub mod files;
mod render;
pub mod view;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use self::{
    render::{STALE_AFTER_MS, render, render_message},
    view::{RouteLine, SUMMARY_OVER, Summary, View, ViewError, summary_path},
};

/// The agent rewrites the status file at least this often, changed or not,
/// so a reader can tell a live agent from a file left behind.
pub const HEARTBEAT_MS: u64 = 2_000;

/// The agent's status at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// How many rule sets the agent applied since it started.
    pub generation: u64,
    /// The rules directory.
    pub rules: String,
    /// When the agent took this status (Unix time, milliseconds).
    pub taken_at_ms: u64,
    /// Which writing of the status file this is: its delta file names it
    /// ([`files`]). Not 0 in a file the agent wrote.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub file_id: u64,
    /// In route-key order. (Default: `status ROUTE` reads the rest of the
    /// status without them, [`files::read_routes`].)
    #[serde(default)]
    pub routes: Vec<RouteStatus>,
    /// Endpoints of gateway routes and their listening sockets.
    pub gateway_endpoints: Vec<GatewayEndpoint>,
    /// Kernel event counters (`traffic_shift_common::Event` names), summed
    /// over CPUs, since the programs were loaded.
    pub events: BTreeMap<String, u64>,
    /// Where the agent serves `/metrics` (`ip:port`).
    #[serde(default)]
    pub metrics: Option<String>,
    /// Kernel route ids (`TS_ROUTES` keys) -> the kernel route, e.g.
    /// `default/tcp-echo/tcp[0]/port 9000 ipv4`: names for `traffic-shift maps`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kernel_routes: BTreeMap<u32, String>,
    /// Counter slots (`TS_STATS` indexes) in use -> what each counts:
    /// names for `traffic-shift maps`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counter_slots: BTreeMap<u32, CounterSlot>,
    /// The HTTP routes the L7 proxy serves, by listener in key order, then
    /// in the order the rules are tried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_routes: Vec<HttpRouteStatus>,
    /// The Gateways of the rules this node does not serve (`--node-labels`
    /// not matching their selector), one line each: `gateway
    /// default/gw: not served here (selector istio=ingressgateway does
    /// not match node labels zone=b)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways_not_served: Vec<String>,
}

impl Status {
    /// The agent touched its file at `touched_ms` (Unix, milliseconds)
    /// without changing it: the status holds as of then.
    pub fn hold_until(&mut self, touched_ms: u64) {
        if self.taken_at_ms != 0 {
            self.taken_at_ms = self.taken_at_ms.max(touched_ms);
        }
    }
}

/// One `http[]` rule of one L7 proxy listener, with the requests observed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpRouteStatus {
    /// `HttpListener::key`: `mesh reviews.default.svc.cluster.local:9080`,
    /// `gateway default/bookinfo-gateway port 8080`.
    pub listener: String,
    /// `mesh`, or `gateway <namespace>/<name>`.
    pub kind: String,
    /// Mesh: the service `host:port`; gateway: the VirtualService's hosts
    /// and the server port, `bookinfo.example.com:8080`.
    pub service: String,
    /// `HttpRoute::key`, e.g. `default/reviews/http[0]`.
    pub route: String,
    /// The rule's `name`, if it has one.
    #[serde(default)]
    pub name: Option<String>,
    /// Its `match[]` in words, one per entry (any of them selects the
    /// rule), e.g. `header end-user = jason`; empty: every request.
    #[serde(default)]
    pub matches: Vec<String>,
    /// Requests the rule answered itself (fault abort, redirect, direct
    /// response), over the last 60 seconds and in total.
    #[serde(default)]
    pub local_last_minute: u64,
    #[serde(default)]
    pub local_total: u64,
    /// In the order the rule writes them; empty for a redirect or a direct
    /// response.
    pub destinations: Vec<HttpDestinationStatus>,
}

/// One weighted destination of an HTTP route, with the requests observed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpDestinationStatus {
    pub host: String,
    /// `None`: every endpoint of the host.
    pub subset: Option<String>,
    /// The weight as written (relative: its share is weight / sum).
    pub weight: u32,
    /// Requests sent to it over the last 60 seconds (retries count once).
    pub requests_last_minute: u64,
    /// Requests sent to it since its route entered the rules.
    pub requests_total: u64,
    /// Of `requests_last_minute`, answered 5xx (the endpoint's or the
    /// proxy's own: no healthy upstream, connect failure, timeout) and 4xx.
    pub errors_5xx_last_minute: u64,
    pub errors_4xx_last_minute: u64,
    /// Answered 5xx since its route entered the rules.
    #[serde(default)]
    pub errors_5xx_total: u64,
    /// Latency percentiles of the last minute's requests in milliseconds,
    /// interpolated in Istio's buckets as Prometheus' `histogram_quantile`
    /// does; `None` without requests.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Requests since its route entered the rules per latency bucket (not
    /// cumulative; the proxy's buckets, the last one `+Inf`): what a
    /// fleet's rollout sums for `requestDurationP99`. Empty without
    /// requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duration_buckets: Vec<u64>,
    pub endpoints: Vec<HttpEndpointStatus>,
}

/// One endpoint of an HTTP destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpEndpointStatus {
    /// `ip:port` (`[ip]:port` for IPv6).
    pub address: String,
    /// `ok`, `failing` (every request of the last minute got a 5xx),
    /// `unhealthy` (failed probes) or `ejected` (outlier detection).
    pub state: String,
    pub requests_last_minute: u64,
    pub requests_total: u64,
    pub errors_5xx_last_minute: u64,
}

/// What a counter slot counts: one endpoint of one route's destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSlot {
    /// `TcpRoute::key`, as `RouteStatus::route`.
    pub route: String,
    /// `host/subset`, or the host when the destination names no subset.
    pub destination: String,
    /// `ip:port` (`[ip]:port` for IPv6).
    pub endpoint: String,
}

/// A counter left out of the file while zero (at 100 000 routes most are).
#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One route of the model (both address families together).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    /// `TcpRoute::key`, e.g. `default/tcp-echo/tcp[0]/port 9000`.
    pub route: String,
    /// `mesh`, or `gateway <namespace>/<name>`.
    pub kind: String,
    /// The service the route is for: `host:port`.
    pub service: String,
    /// In the order the VirtualService writes them.
    pub destinations: Vec<DestinationStatus>,
}

/// One weighted destination of a route, with what was observed for it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationStatus {
    pub host: String,
    /// `None`: every endpoint of the host.
    pub subset: Option<String>,
    /// Istio's weight as written (relative: its share is weight / sum).
    pub weight: u32,
    /// Connections opened to its endpoints over the last 60 seconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub connections_last_minute: u64,
    /// Connections opened to its endpoints since the agent started.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub connections_total: u64,
    /// Connections to its endpoints that failed to connect (refused, timed
    /// out), over the last 60 seconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_last_minute: u64,
    pub endpoints: Vec<EndpointStatus>,
}

/// One endpoint of a destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStatus {
    /// `ip:port` (`[ip]:port` for IPv6).
    pub address: String,
    /// `ok`, `failing` (its recent connections failed), and for gateway
    /// routes `registered` / `missing` (whether its listening socket is held).
    pub state: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub connections_last_minute: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub connections_total: u64,
    /// Failed connects since the agent started.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_total: u64,
    /// Failed connects over the last 60 seconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_last_minute: u64,
}

/// A gateway endpoint and the listening socket the gateway hands
/// connections to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayEndpoint {
    /// `ip:port`.
    pub endpoint: String,
    /// `registered` or `missing`.
    pub state: String,
    /// The backend process that owns the socket, when registered.
    pub pid: Option<u32>,
    pub inode: Option<u64>,
}
