//! The validated routing model: what the rules say, with every name resolved.
//! Produced by `resolve`, consumed by the datapath's `compile` and by the L7
//! proxy. Strings stay here; the kernel only ever sees the ids `compile`
//! derives from them.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Arc,
    time::Duration,
};

pub use crate::http::{
    CorsPolicy, DirectResponse, Fault, Headers, HttpMatch, HttpRedirect, Retries, Rewrite,
    StringMatch, UnmatchedPreflights,
};

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
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoutingModel {
    /// In a stable order (sorted by `key`).
    pub routes: Vec<TcpRoute>,
    /// What the L7 proxy serves (VirtualService `http` rules), sorted by
    /// `key`.
    pub http: Vec<HttpListener>,
    /// Every Gateway of the rules with its `selector`, sorted by name:
    /// [`RoutingModel::for_node`] keeps the routes of those a node serves.
    pub gateways: Vec<GatewaySelector>,
    /// The `Rollout`s of the rules, sorted by name: the controller's
    /// targets ([`crate::rollout`]).
    pub rollouts: Vec<crate::rollout::Rollout>,
    /// The `status` of the Gateway API resources the served class owns
    /// (Gateways of the served class, the routes with a parent of it, and
    /// mesh routes), as the spec defines it (`parents[].conditions` of a
    /// route, `conditions` and `listeners[]` of a Gateway), keyed by
    /// [`StatusKey`]. What `get -o yaml` shows.
    pub gateway_api_status: BTreeMap<StatusKey, serde_json::Value>,
}

/// Which resource a status is of: its kind (as `Source::kind`:
/// `HTTPRoute`, `TCPRoute`, `Gateway.gateway.networking.k8s.io`),
/// namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StatusKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// The host of the destination that stands for the backendRefs of a
/// Gateway API rule that cannot be used (a Service that does not exist,
/// a kind that is not a Service, a reference to another namespace that no
/// `ReferenceGrant` permits), weighted by their weights, as Istio keeps
/// such a backend as a destination no cluster serves: it has no endpoints,
/// so the kernel path refuses the connections that pick it, and the L7
/// proxy answers them 500 (Envoy's `cluster_not_found` with Istio's
/// `INTERNAL_SERVER_ERROR`, flag `NC`), as the spec says. `.invalid` is
/// reserved (RFC 2606): no Service can have this host.
pub const UNUSABLE_BACKEND: &str = "unusable-backend.gateway-api.invalid";

impl RoutingModel {
    /// Every destination: of the TCP routes, then of the HTTP routes and
    /// their mirrors.
    pub fn destinations(&self) -> impl Iterator<Item = &Destination> {
        self.routes
            .iter()
            .flat_map(|r| &r.destinations)
            .chain(self.http_destinations())
    }

    /// The destinations of the HTTP routes and their mirrors.
    pub fn http_destinations(&self) -> impl Iterator<Item = &Destination> {
        self.http_destinations_h2().map(|(d, _)| d)
    }

    /// [`RoutingModel::http_destinations`], each with whether it is spoken
    /// to over h2c ([`HttpDestination::http2`]).
    pub fn http_destinations_h2(&self) -> impl Iterator<Item = (&Destination, bool)> {
        self.http
            .iter()
            .flat_map(|l| &l.virtual_hosts)
            .flat_map(|v| &v.routes)
            .flat_map(|r| {
                r.destinations
                    .iter()
                    .map(|d| (&d.destination, d.http2))
                    .chain(r.all_mirrors().map(|m| (&m.destination, m.http2)))
            })
    }

    /// [`RoutingModel::destinations`], to change them.
    pub fn destinations_mut(&mut self) -> impl Iterator<Item = &mut Destination> {
        let http = self
            .http
            .iter_mut()
            .flat_map(|l| &mut l.virtual_hosts)
            .flat_map(|v| &mut v.routes)
            .flat_map(|r| {
                r.destinations
                    .iter_mut()
                    .flat_map(|d| {
                        let mirrors = d.actions.iter_mut().flat_map(|a| &mut a.mirrors);
                        std::iter::once(&mut d.destination)
                            .chain(mirrors.map(|m| &mut m.destination))
                    })
                    .chain(r.mirrors.iter_mut().map(|m| &mut m.destination))
            });
        self.routes
            .iter_mut()
            .flat_map(|r| &mut r.destinations)
            .chain(http)
    }
}

/// A Gateway of the rules and its `selector` (which nodes serve it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewaySelector {
    /// `<namespace>/<name>`, as [`TcpRoute::gateway`] names it.
    pub gateway: String,
    pub selector: BTreeMap<String, String>,
}

/// One VirtualService `tcp[]` rule, for one service port. A rule that covers
/// several ports of a service becomes one `TcpRoute` per port (each port's
/// endpoints can listen on a different target port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpRoute {
    /// Stable identity across reloads, e.g. `default/tcp-echo/tcp[0]/port 9000`.
    /// A weight change keeps the key, so it is one atomic update of the same route.
    pub key: String,
    /// Where it came from, for messages: `rules/tcp-echo/vs-20-v2.yaml`
    /// (one for all the routes of a file).
    pub source: Arc<Path>,
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
    /// Gateway routes only: the unix sockets of the Gateway's servers bound
    /// to one (`bind: unix://<path>`, port 0), as written after `unix://`
    /// (an absolute path, or `@name` in the abstract namespace). The kernel
    /// does not see such a route (its `listeners` are empty): the agent
    /// accepts on the socket and connects to the endpoint this route's
    /// weights pick, in user space.
    pub unix: Vec<String>,
    /// Gateway TLS passthrough routes only (a `VirtualService` `tls` rule,
    /// or a `TLSRoute`, on a `TLS` server in `PASSTHROUGH` mode): the SNI
    /// names this route takes, lowercase, each a name or `*.suffix`
    /// (`*` alone: every name). Not empty: the kernel does not see the
    /// route (the choice needs the ClientHello, which comes after the
    /// connect); the agent accepts on `listeners` in user space, reads the
    /// SNI without terminating TLS, and splices the connection to the
    /// endpoint this route's weights pick ([`TcpRoute::is_tls`]).
    pub sni: Vec<String>,
    /// Every service address range:port this route covers (ServiceEntry
    /// `addresses` CIDRs of more than one address x this port): a
    /// connection to an address of a range that no `listeners` entry (of
    /// any route) names exactly takes the route of the longest range that
    /// holds it. Mesh routes only.
    pub prefixes: Vec<ServicePrefix>,
    /// How the destination (subset) is chosen: from the DestinationRule of
    /// the first destination's host, top-level `trafficPolicy.loadBalancer`.
    pub selection: Selection,
    /// Weighted destinations, in the order written. Weights are relative;
    /// a single destination with no weight gets weight 1 (all traffic).
    pub destinations: Vec<Destination>,
}

impl TcpRoute {
    /// A gateway route served on unix sockets by the agent in user space
    /// ([`TcpRoute::unix`]), not by the kernel.
    pub fn is_unix(&self) -> bool {
        !self.unix.is_empty()
    }

    /// A gateway TLS passthrough route, chosen by SNI ([`TcpRoute::sni`]):
    /// served by the agent in user space on `listeners`, not by the kernel.
    pub fn is_tls(&self) -> bool {
        !self.sni.is_empty()
    }

    /// Served by the agent in user space (on a unix socket, or by SNI),
    /// not by a kernel program.
    pub fn is_user_space(&self) -> bool {
        self.is_unix() || self.is_tls()
    }
}

/// A range of service addresses (a ServiceEntry `addresses` CIDR of more
/// than one address) on one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePrefix {
    /// The range's first address: the bits past `len` are zero.
    pub network: IpAddr,
    /// Prefix length in bits, less than the family's width (a `/32` or
    /// `/128` is one address, in [`TcpRoute::listeners`]).
    pub len: u8,
    pub port: u16,
}

impl fmt::Display for ServicePrefix {
    /// `198.18.7.0/24:9000`, `[fd00:7473::/64]:9000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.network {
            IpAddr::V4(ip) => write!(f, "{ip}/{}:{}", self.len, self.port),
            IpAddr::V6(ip) => write!(f, "[{ip}/{}]:{}", self.len, self.port),
        }
    }
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

impl Destination {
    /// Whether it stands for backendRefs that cannot be used
    /// ([`UNUSABLE_BACKEND`]).
    pub fn is_unusable(&self) -> bool {
        self.host == UNUSABLE_BACKEND
    }
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

/// Where the L7 proxy takes HTTP requests: one service port of the mesh, or
/// one Gateway server port.
///
/// Mesh (`gateway: None`): clients on the node connecting to one of
/// `listeners` (the ServiceEntry `addresses` x an HTTP port) are sent to the
/// proxy by the connect-time hook, and the proxy serves them with this
/// listener's `virtual_hosts`. Gateway (`Some("<ns>/<gateway>")`): the proxy
/// listens on `listeners` itself (the server's `bind` address, or
/// `0.0.0.0:<port>` and `[::]:<port>`), in the agent's `--netns`.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpListener {
    /// Stable identity across reloads: `mesh reviews.default.svc.cluster.local:9080`,
    /// `gateway default/bookinfo-gateway port 8080`.
    pub key: String,
    pub gateway: Option<String>,
    /// The port the client connected to (the service port, or the gateway
    /// server port): what `match[].port` compares.
    pub port: u16,
    pub listeners: Vec<SocketAddr>,
    /// Gateway only: the unix sockets the proxy accepts on (servers with
    /// `bind: unix://<path>`, port 0), as [`TcpRoute::unix`].
    pub unix: Vec<String>,
    /// Mesh only: the service address ranges (ServiceEntry `addresses`
    /// CIDRs) x the port. A connection to an address of a range that no
    /// listener names exactly is this listener's when the range is the
    /// longest that holds it, as on the TCP path ([`TcpRoute::prefixes`]).
    pub prefixes: Vec<ServicePrefix>,
    /// Chosen by the request's authority (`Host` or `:authority`, port
    /// removed, case-insensitive) as Envoy does: a domain equal to it, else
    /// the longest `*.suffix` it ends with, else `*`; none: 404. A mesh
    /// listener has exactly one, which takes every request whatever its
    /// authority (the client chose the service by its address).
    pub virtual_hosts: Vec<VirtualHost>,
    /// Gateway only: the certificates of its HTTPS servers (`tls.mode:
    /// SIMPLE`): the proxy terminates TLS on `listeners`, then serves the
    /// requests as on a plain HTTP listener. `None`: plain HTTP.
    pub tls: Option<ListenerTls>,
}

/// The certificates a gateway listener terminates TLS with, chosen by the
/// ClientHello's SNI among the servers' hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerTls {
    /// In the order of the servers: an SNI takes the certificate of the
    /// server with a host equal to it, else the longest `*.suffix` it ends
    /// with, else `*`; a ClientHello without SNI takes the first.
    pub certificates: Vec<ServerCertificate>,
    /// A Gateway API Gateway's listener: a request whose authority picks
    /// another server than its connection's SNI did (by the same rule) is
    /// misdirected, answered 421, as the spec requires of HTTPS listeners
    /// (HTTP/2 clients reuse a connection for every name its certificate
    /// covers). An Istio Gateway's servers route by authority alone.
    pub misdirected: bool,
}

/// One HTTPS server's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerCertificate {
    /// The server's hosts, lowercase, without their namespace part (`*`,
    /// `*.suffix` or a name).
    pub hosts: Vec<String>,
    /// `<namespace>/<name>` of the Secret.
    pub secret: String,
    pub certificate: crate::gateway_api::TlsCertificate,
}

/// The `http` rules of one VirtualService, for one listener.
#[derive(Clone, Debug, PartialEq)]
pub struct VirtualHost {
    /// `<namespace>/<name>` of the VirtualService.
    pub virtual_service: String,
    /// The file it came from, for messages (one for all its hosts).
    pub source: Arc<Path>,
    /// The VirtualService `hosts` as authorities match them (lowercase;
    /// `*`, `*.suffix` or a name).
    pub domains: Vec<String>,
    /// In the order written: the first whose `matches` admit the request
    /// serves it; none: 404 (`NR`).
    pub routes: Vec<HttpRoute>,
}

/// One `http[]` rule, every host and subset resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpRoute {
    /// `default/reviews/http[1]`: identity in metrics and messages.
    pub key: String,
    pub name: Option<String>,
    /// OR'ed, each AND'ed within; empty: every request. Regexes are valid
    /// RE2 (checked) and must match the whole value, as Envoy's do.
    /// `match[].port` is kept (compare with [`HttpListener::port`]);
    /// `gateways` and `sourceLabels`/`sourceNamespace` were applied or
    /// refused by `resolve`.
    pub matches: Vec<HttpMatch>,
    /// Weighted destinations (relative weights, a single destination gets
    /// weight 1). Empty only with `redirect` or `direct_response`.
    pub destinations: Vec<HttpDestination>,
    /// How a request picks one of `destinations`: the DestinationRule
    /// `loadBalancer` of the first destination's host.
    pub selection: HttpSelection,
    pub redirect: Option<HttpRedirect>,
    pub direct_response: Option<DirectResponse>,
    pub rewrite: Option<Rewrite>,
    /// Whole-request timeout; `None`: none (Istio's default for HTTP routes).
    pub timeout: Option<Duration>,
    /// As written, or Istio's default when absent (2 attempts on
    /// `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`
    /// (503)); `attempts: 0`: none.
    pub retries: Retries,
    pub fault: Option<Fault>,
    /// `mirror` (with `mirrorPercentage`) or `mirrors`.
    pub mirrors: Vec<HttpMirror>,
    /// Applied to every request/response of the rule, after the
    /// destination's own.
    pub headers: Headers,
    /// `corsPolicy`: checked before the rule's fault, redirect or
    /// destination, as Envoy's CORS filter runs before its router.
    pub cors: Option<CorsPolicy>,
}

impl HttpRoute {
    /// Its mirrors and those of its destinations.
    pub fn all_mirrors(&self) -> impl Iterator<Item = &HttpMirror> {
        self.mirrors.iter().chain(
            self.destinations
                .iter()
                .flat_map(|d| d.actions.iter().flat_map(|a| &a.mirrors)),
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpDestination {
    pub destination: Destination,
    /// The ServiceEntry port's protocol is `HTTP2` or `GRPC`: upstream
    /// connections speak HTTP/2 cleartext (prior knowledge); else HTTP/1.1.
    pub http2: bool,
    /// How a request picks an endpoint of the destination (the subset's
    /// `loadBalancer`, else the rule's); `destination.endpoint_selection`
    /// is its TCP reading, without the HTTP hash keys.
    pub endpoint_selection: HttpSelection,
    /// Header changes for this destination only.
    pub headers: Headers,
    /// Its own redirect, rewrite and mirrors (a Gateway API backendRef's
    /// filters); `None` for nearly every destination.
    pub actions: Option<Box<HttpDestinationActions>>,
}

/// What a destination does to the requests sent to it besides
/// [`HttpDestination::headers`]: its redirect and rewrite take the place of
/// the route's, its mirrors come beside the route's (each with its own
/// exact share of this destination's requests).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HttpDestinationActions {
    pub redirect: Option<HttpRedirect>,
    pub rewrite: Option<Rewrite>,
    pub mirrors: Vec<HttpMirror>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpMirror {
    pub destination: Destination,
    /// As [`HttpDestination::http2`].
    pub http2: bool,
    /// Of the requests, 0.0..=100.0 (absent in the rules: 100).
    pub percentage: f64,
}

/// How a request picks its destination (and, for hashing, keeps picking
/// the same one while the weights stay).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum HttpSelection {
    /// Deterministic and smooth, per route, as the kernel path.
    #[default]
    Smooth,
    Random,
    /// `consistentHash.useSourceIp`: the client's address.
    SourceIp,
    /// `consistentHash.httpHeaderName`.
    Header(String),
    /// `consistentHash.httpCookie.name`.
    Cookie(String),
    /// `consistentHash.httpQueryParameterName`.
    QueryParameter(String),
}
