//! The validated routing model: what the rules say, with every name resolved.
//! Produced by `config`, consumed by `compile`. Strings stay here; the
//! kernel only ever sees the ids `compile` derives from them.

use std::{collections::BTreeMap, net::SocketAddr};

/// How one choice (a destination of a route, or an endpoint of a
/// destination) is made for a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Selection {
    /// Default (`loadBalancer` absent, `UNSPECIFIED`, `ROUND_ROBIN`,
    /// `LEAST_REQUEST`): deterministic and smooth.
    #[default]
    Smooth,
    /// `loadBalancer.simple: RANDOM`.
    Random,
    /// `loadBalancer.consistentHash.useSourceIp: true`.
    SourceHash,
}

/// Everything the kernel needs, resolved from all rule files together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingModel {
    /// In a stable order (sorted by `key`).
    pub routes: Vec<TcpRoute>,
}

/// One VirtualService `tcp[]` rule, for one service port. A rule that covers
/// several ports of a service becomes one `TcpRoute` per port (each port's
/// endpoints can listen on a different target port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpRoute {
    /// Stable identity across reloads, e.g. `default/tcp-echo/tcp[0]/port 9000`.
    /// A weight change keeps the key, so it is one atomic update of the same route.
    pub key: String,
    /// Where it came from, for messages: `rules/tcp-echo/vs-20-v2.yaml`.
    pub source: String,
    /// `None`: a mesh route (clients on the node connecting to a service
    /// address; the connect-time path). `Some("<ns>/<gateway>")`: a gateway
    /// route (connections arriving on the node at a Gateway server port; the
    /// `sk_lookup` path). For a gateway route `listeners` holds the
    /// addresses the server accepts on: its `bind` address, or the
    /// unspecified addresses `0.0.0.0:<port>` and `[::]:<port>` for "any
    /// local address".
    pub gateway: Option<String>,
    /// The service host the connection was meant for (`tcp-echo.local`).
    pub service_host: String,
    /// The service port number this route is for.
    pub service_port: u16,
    /// Every service address:port this route covers (ServiceEntry
    /// `addresses` x this port). All of one family or mixed; the compiler
    /// pairs each with endpoints of the same family.
    pub listeners: Vec<SocketAddr>,
    /// How the destination (subset) is chosen: from the DestinationRule of
    /// the first destination's host, top-level `trafficPolicy.loadBalancer`.
    pub selection: Selection,
    /// Weighted destinations, in the order written. Weights are relative;
    /// a single destination with no weight gets weight 1 (all traffic).
    pub destinations: Vec<Destination>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    pub host: String,
    /// `None`: every endpoint of the host.
    pub subset: Option<String>,
    pub weight: u32,
    /// How an endpoint of this destination is chosen: the subset's
    /// `trafficPolicy.loadBalancer`, else the rule's, else Smooth.
    pub endpoint_selection: Selection,
    /// DestinationRule `outlierDetection` (the subset's, else the rule's):
    /// endpoints whose connects keep failing are ejected for a while.
    pub outlier: Option<Outlier>,
    /// The endpoints the subset's labels select, with the port resolved for
    /// this route's service port. Empty is legal (Istio warns, IST0173):
    /// connections that pick it are refused at once.
    pub endpoints: Vec<Endpoint>,
}

/// Outlier detection as it applies to TCP: Envoy counts a failed connect
/// as a gateway error (local origin errors are not split by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outlier {
    /// Consecutive failed connects that eject an endpoint
    /// (`consecutiveGatewayErrors`, else `consecutive5xxErrors`; 0: never).
    pub consecutive_failures: u32,
    /// How often ejections are evaluated (`interval`).
    pub interval: std::time::Duration,
    /// An ejection lasts this times the number of times the endpoint was
    /// ejected (`baseEjectionTime`).
    pub base_ejection_time: std::time::Duration,
    /// At most this share of a destination's endpoints is ejected at once;
    /// at least one may always be, as in Envoy (`maxEjectionPercent`).
    pub max_ejection_percent: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub labels: BTreeMap<String, String>,
}
