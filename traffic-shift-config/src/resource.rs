//! Validated resources: what one YAML document says, checked on its own.
//! The checks that need other resources (hosts, subsets, listeners) are in
//! `resolve`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

pub use super::dto::{Location, Resolution, ServerTlsMode, SimpleLb};
use super::{
    dto,
    error::{ConfigError, FieldPath, ResourceId, Warning, one_line},
    http::{self, HttpRule, TlsRule},
    lines::LineIndex,
    names::{
        host_matches, is_dns1123_label, is_dns1123_label_any_case, is_dns1123_subdomain,
        is_partial_wildcard, parse_cidr, port_number, validate_domain, validate_fqdn,
        validate_subnet,
    },
    policy::{self, TrafficPolicy},
    values,
};

/// The `apiVersion`s accepted, newest first.
pub const API_VERSIONS: [&str; 3] = [
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];

/// The kinds accepted.
pub const KINDS: [&str; 5] = [
    "ServiceEntry",
    "DestinationRule",
    "VirtualService",
    "Gateway",
    "WorkloadEntry",
];

/// A path in kubectl form, with `format!` arguments: `fp!("spec.tcp[{i}]")`.
macro_rules! fp {
    ($($arg:tt)*) => {
        $crate::error::FieldPath::parse(&format!($($arg)*))
    };
}
pub(super) use fp;

/// Where a resource came from, to report errors at a field's line.
#[derive(Clone)]
pub struct Source {
    pub kind: &'static str,
    pub name: String,
    pub namespace: String,
    pub file: PathBuf,
    /// 1-based, empty documents included.
    pub document: usize,
    lines: Arc<LineIndex>,
}

impl Source {
    pub fn id(&self) -> ResourceId {
        ResourceId {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// The 1-based line of `path` in the file (or of its nearest enclosing
    /// field that is written there).
    pub fn line(&self, path: &FieldPath) -> Option<usize> {
        self.lines.line(path)
    }

    /// An error about `path` of this resource.
    pub fn error(&self, path: FieldPath, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            document: Some(self.document),
            resource: Some(Box::new(self.id())),
            line: self.line(&path),
            field: path,
            message: one_line(message.into()),
        }
    }

    /// A warning about `path` of this resource.
    pub fn warning(&self, path: FieldPath, message: impl Into<String>) -> Warning {
        Warning {
            file: self.file.clone(),
            document: Some(self.document),
            resource: Some(Box::new(self.id())),
            line: self.line(&path),
            field: path,
            message: one_line(message.into()),
        }
    }

    /// For messages that name another resource:
    /// `VirtualService default/a (rules/a.yaml document 3)`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({} document {})",
            self.id(),
            self.file.display(),
            self.document
        )
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("file", &self.file)
            .field("document", &self.document)
            .finish_non_exhaustive()
    }
}

/// One validated Istio resource.
#[derive(Clone, Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "a few resources per file, kept in a Vec: boxing would only add indirection"
)]
pub enum Resource {
    ServiceEntry(ServiceEntry),
    DestinationRule(DestinationRule),
    VirtualService(VirtualService),
    Gateway(Gateway),
    WorkloadEntry(WorkloadEntry),
}

impl Resource {
    pub fn source(&self) -> &Source {
        match self {
            Self::ServiceEntry(r) => &r.source,
            Self::DestinationRule(r) => &r.source,
            Self::VirtualService(r) => &r.source,
            Self::Gateway(r) => &r.source,
            Self::WorkloadEntry(r) => &r.source,
        }
    }

    pub fn kind(&self) -> &'static str {
        self.source().kind
    }

    pub fn name(&self) -> &str {
        &self.source().name
    }

    /// `metadata.namespace`, `default` when absent.
    pub fn namespace(&self) -> &str {
        &self.source().namespace
    }
}

/// A port protocol, as Istio spells them (case-insensitive in the YAML).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Https,
    Grpc,
    GrpcWeb,
    Http2,
    HttpProxy,
    Mongo,
    Mysql,
    Redis,
    Tcp,
    Tls,
    Udp,
    /// Not given: Istio sniffs it; here it is plain TCP.
    Unspecified,
}

impl Protocol {
    const NAMES: [(&'static str, Self); 12] = [
        ("HTTP", Self::Http),
        ("HTTPS", Self::Https),
        ("GRPC", Self::Grpc),
        ("GRPC-WEB", Self::GrpcWeb),
        ("HTTP2", Self::Http2),
        ("HTTP_PROXY", Self::HttpProxy),
        ("MONGO", Self::Mongo),
        ("MYSQL", Self::Mysql),
        ("REDIS", Self::Redis),
        ("TCP", Self::Tcp),
        ("TLS", Self::Tls),
        ("UDP", Self::Udp),
    ];

    /// `""` is [`Protocol::Unspecified`]; `None` for a name Istio does not know.
    pub fn parse(name: &str) -> Option<Self> {
        if name.is_empty() {
            return Some(Self::Unspecified);
        }
        Self::NAMES
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|(_, protocol)| *protocol)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, protocol)| *protocol == self)
            .map_or("", |(name, _)| name)
    }

    /// Istio's `IsHTTP() || IsTLS()`: ports where Istio can tell hosts apart.
    pub fn is_http_or_tls(self) -> bool {
        matches!(
            self,
            Self::Http
                | Self::Https
                | Self::Grpc
                | Self::GrpcWeb
                | Self::Http2
                | Self::HttpProxy
                | Self::Tls
        )
    }

    /// Istio's `IsHTTP`.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Self::Http | Self::Http2 | Self::HttpProxy | Self::Grpc | Self::GrpcWeb
        )
    }

    /// Istio's `IsTCP`.
    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Self::Tcp | Self::Https | Self::Tls | Self::Mongo | Self::Redis | Self::Mysql
        )
    }

    /// Whether `VirtualService` `tcp` rules apply to a port of this protocol:
    /// not to HTTP-family or TLS ports (`http`/`tls` rules), nor UDP ones.
    pub fn takes_tcp_routes(self) -> bool {
        !self.is_http_or_tls() && self != Self::Udp
    }

    /// Whether `tcp` rules apply to a Gateway server of this protocol: TCP,
    /// TLS, MONGO (and REDIS, MYSQL: Istio builds a TCP filter chain for every
    /// server that is not HTTP); not the HTTP family (HTTP, HTTPS, HTTP2,
    /// GRPC, GRPC-WEB: `http` rules), nor UDP.
    pub fn takes_gateway_tcp_routes(self) -> bool {
        !matches!(
            self,
            Self::Http
                | Self::Https
                | Self::Grpc
                | Self::GrpcWeb
                | Self::Http2
                | Self::HttpProxy
                | Self::Udp
        )
    }
}

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Debug)]
pub struct ServiceEntry {
    pub source: Source,
    /// As written: Istio does not qualify ServiceEntry hosts.
    pub hosts: Vec<String>,
    /// `/32` and `/128` CIDRs are read as their address.
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    pub location: Location,
    pub resolution: Resolution,
    pub endpoints: Vec<WorkloadEndpoint>,
    /// `workloadSelector.labels`: `WorkloadEntries` of the same namespace
    /// whose labels include these are endpoints too.
    pub workload_selector: Option<Labels>,
    /// `exportTo`, checked; not applied (every resource is visible to all).
    pub export_to: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub number: u16,
    pub name: String,
    pub protocol: Protocol,
    pub target_port: Option<u16>,
}

impl ServicePort {
    /// The protocol as Istio reads it: `protocol` when given, else the
    /// port name's prefix (`http`, `http-web`, `grpc-api`: Istio's port
    /// naming convention), else unspecified (plain TCP here).
    pub fn effective_protocol(&self) -> Protocol {
        if self.protocol != Protocol::Unspecified {
            return self.protocol;
        }
        let prefix = self.name.split('-').next().unwrap_or_default();
        Protocol::parse(prefix).unwrap_or(Protocol::Unspecified)
    }
}

/// Where an endpoint is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointAddress {
    Ip(IpAddr),
    /// A DNS name (resolution `DNS`, or a `WorkloadEntry`): legal Istio,
    /// refused by `resolve` when a route would need it (the kernel path
    /// does not resolve names).
    Name(String),
    /// `unix://<path>`: legal Istio, refused by `resolve` likewise.
    Unix(String),
    /// No address, with a `network`: reached through that network's
    /// gateway in Istio; refused by `resolve` likewise.
    Unset,
}

impl EndpointAddress {
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::Ip(ip) => Some(*ip),
            Self::Name(_) | Self::Unix(_) | Self::Unset => None,
        }
    }
}

impl fmt::Display for EndpointAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::Name(name) => f.write_str(name),
            Self::Unix(path) => write!(f, "unix://{path}"),
            Self::Unset => f.write_str("(no address)"),
        }
    }
}

/// A `ServiceEntry` endpoint or a `WorkloadEntry` spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadEndpoint {
    pub address: EndpointAddress,
    /// Service port name -> this endpoint's port.
    pub ports: BTreeMap<String, u16>,
    pub labels: Labels,
    pub network: Option<String>,
    pub locality: Option<String>,
    /// Parsed, not used yet.
    pub weight: Option<u32>,
    pub service_account: Option<String>,
}

#[derive(Clone, Debug)]
pub struct WorkloadEntry {
    pub source: Source,
    pub endpoint: WorkloadEndpoint,
}

#[derive(Clone, Debug)]
pub struct DestinationRule {
    pub source: Source,
    /// As written; `resolve` qualifies a short name with the namespace.
    pub host: String,
    /// `spec.trafficPolicy`.
    pub traffic_policy: TrafficPolicy,
    pub subsets: Vec<Subset>,
    /// `exportTo`, checked; not applied (every resource is visible to all).
    pub export_to: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Subset {
    pub name: String,
    /// Empty: every endpoint of the host (Istio requires no labels).
    pub labels: Labels,
    /// The subset's `trafficPolicy`, which overrides the rule's.
    pub traffic_policy: TrafficPolicy,
}

#[derive(Clone, Debug)]
pub struct VirtualService {
    pub source: Source,
    /// As written; `resolve` qualifies short names with the namespace.
    /// Empty for a delegate.
    pub hosts: Vec<String>,
    /// Empty means `mesh`.
    pub gateways: Vec<String>,
    pub tcp: Vec<TcpRule>,
    /// Modelled and checked; not applied yet (no L7 proxy).
    pub http: Vec<HttpRule>,
    /// Modelled and checked; refused by `resolve` (not supported yet).
    pub tls: Vec<TlsRule>,
    /// `exportTo`, checked; not applied (every resource is visible to all).
    pub export_to: Vec<String>,
}

impl VirtualService {
    /// Whether the rules apply to clients on this node (`gateways` absent
    /// or listing `mesh`).
    pub fn binds_mesh(&self) -> bool {
        binds_mesh(&self.gateways)
    }
}

fn binds_mesh(gateways: &[String]) -> bool {
    gateways.is_empty() || gateways.iter().any(|gateway| gateway == "mesh")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpRule {
    pub matches: Vec<L4Match>,
    pub route: Vec<RouteDestination>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct L4Match {
    pub port: Option<u16>,
    pub destination_subnets: Vec<String>,
    pub source_subnet: Option<String>,
    pub source_labels: Labels,
    /// Overrides the `VirtualService`'s `gateways` for this match.
    pub gateways: Vec<String>,
    pub source_namespace: Option<String>,
}

/// A destination of a route (or a mirror, without weight).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteDestination {
    /// As written; `resolve` qualifies a short name with the namespace.
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<u16>,
    /// As written (absent is not 0: see `resolve`).
    pub weight: Option<u32>,
}

#[derive(Clone, Debug)]
pub struct Gateway {
    pub source: Source,
    pub selector: Labels,
    pub servers: Vec<Server>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub port: GatewayPort,
    /// `[namespace/]dnsName`, as written (`namespace` is `*`, `.` or a
    /// namespace name).
    pub hosts: Vec<String>,
    /// The address the server accepts on; `None`: any local address.
    pub bind: Option<IpAddr>,
    pub default_endpoint: Option<String>,
    pub name: Option<String>,
    /// `tls.mode`, when `tls` is set.
    pub tls_mode: Option<ServerTlsMode>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayPort {
    pub number: u16,
    pub name: String,
    pub protocol: Protocol,
}

/// The checks of one document (or of one `resolve`): errors do not stop
/// them, so that every error is reported at once. Istio's validation works
/// the same way (`AppendValidation`).
pub(super) struct Check<'s> {
    source: &'s Source,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<Warning>,
}

impl<'s> Check<'s> {
    pub fn new(source: &'s Source) -> Self {
        Self {
            source,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub fn error(&mut self, path: FieldPath, message: impl Into<String>) {
        self.errors.push(self.source.error(path, message));
    }

    pub fn warn(&mut self, path: FieldPath, message: impl Into<String>) {
        self.warnings.push(self.source.warning(path, message));
    }

    /// The value, or `None` with the message recorded at `path`.
    pub fn ok<T>(&mut self, path: FieldPath, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.error(path, message)).ok()
    }

    /// Istio's `ValidatePort`.
    pub fn port(&mut self, path: FieldPath, number: i64) -> Option<u16> {
        self.ok(path, port_number(number))
    }

    /// Every label of a `labels` / `sourceLabels` / selector map.
    pub fn labels(&mut self, path: &FieldPath, labels: &Labels) {
        for (key, value) in labels {
            if let Err(message) = values::label(key, value) {
                self.error(path.key(key), message);
            }
        }
    }

    /// Istio's `validateGatewayNames`: `name`, `namespace/name`, or the
    /// legacy `name.namespace[.svc.cluster.local]` (a warning).
    pub fn gateway_names(&mut self, path: &FieldPath, names: &[String]) {
        for (g, name) in names.iter().enumerate() {
            let path = path.index(g);
            match name.split_once('/') {
                None => {
                    if let Some((gateway, rest)) = name.split_once('.') {
                        let namespace = rest.split('.').next().unwrap_or(rest);
                        self.warn(
                            path.clone(),
                            format!(
                                "using legacy gatewayName format {name:?}; prefer the \
                                 <namespace>/<name> format: \"{namespace}/{gateway}\""
                            ),
                        );
                    }
                    if let Err(message) = validate_fqdn(name) {
                        self.error(path, message);
                    }
                }
                Some((namespace, gateway)) => {
                    if namespace.is_empty() || gateway.is_empty() {
                        self.error(
                            path.clone(),
                            "config namespace and gateway name cannot be empty",
                        );
                    }
                    if !is_dns1123_label_any_case(namespace) {
                        self.error(
                            path.clone(),
                            format!(
                                "invalid value for namespace: {namespace:?}: write \
                                 <namespace>/<name>, or the name alone for a Gateway in this \
                                 namespace"
                            ),
                        );
                    }
                    if !is_dns1123_label_any_case(gateway) {
                        self.error(path, format!("invalid value for gateway name: {gateway:?}"));
                    }
                }
            }
        }
    }

    /// A route's `destination` (`path` is the `destination` field), Istio's
    /// `validateDestination`; `weight` is left `None`.
    pub fn destination(
        &mut self,
        path: &FieldPath,
        destination: dto::Destination,
    ) -> Option<RouteDestination> {
        let errors_before = self.errors.len();
        let host = destination.host.unwrap_or_default();
        if host == "*" {
            self.error(
                path.key("host"),
                "invalid destination host *: name the ServiceEntry host to route to",
            );
        } else if host.is_empty() {
            self.error(
                path.key("host"),
                "empty domain name not allowed: set destination.host to a ServiceEntry host",
            );
        } else if let Err(message) = validate_domain(&host) {
            self.error(path.key("host"), message);
        }
        let subset = destination.subset.filter(|subset| !subset.is_empty());
        if let Some(subset) = &subset
            && !is_dns1123_label_any_case(subset)
        {
            self.error(
                path.key("subset"),
                format!("subset name is invalid: {subset}"),
            );
        }
        let port = destination.port.and_then(|port| {
            self.port(
                path.key("port").key("number"),
                port.number.unwrap_or_default(),
            )
        });
        (self.errors.len() == errors_before).then_some(RouteDestination {
            host,
            subset,
            port,
            weight: None,
        })
    }

    /// A route entry's `weight` (`path` is the entry): `Ok(None)` when
    /// absent; `Err(())` when invalid, and recorded.
    pub fn weight(&mut self, path: &FieldPath, weight: Option<i64>) -> Result<Option<u32>, ()> {
        let Some(weight) = weight else {
            return Ok(None);
        };
        match u32::try_from(weight) {
            Ok(weight) if i32::try_from(weight).is_ok() => Ok(Some(weight)),
            _ => {
                self.error(path.key("weight"), weight_message(weight));
                Err(())
            }
        }
    }

    /// Istio's weight total rule, and our warnings about it: several
    /// destinations may not all weigh 0; weights are relative (since Istio
    /// 1.15), so a total other than 100 is applied and reported.
    /// `weights[j]` is `weight()` of `route[j]`, for every entry.
    pub fn total_weight(&mut self, path: &FieldPath, weights: &[Result<Option<u32>, ()>]) {
        // An invalid weight is reported already; a total without it would
        // be wrong.
        let Ok(weights) = weights.iter().copied().collect::<Result<Vec<_>, ()>>() else {
            return;
        };
        let total: u64 = weights.iter().map(|w| u64::from(w.unwrap_or(0))).sum();
        match weights.as_slice() {
            [Some(weight)] if *weight != 100 => self.warn(
                path.index(0).key("weight"),
                format!(
                    "weight {weight} of the only destination is ignored: one destination gets \
                     all the traffic"
                ),
            ),
            [] | [_] => {}
            _ if total == 0 => self.error(
                path.clone(),
                "total destination weight = 0: give at least one destination a weight above 0",
            ),
            _ if total > u64::from(u32::MAX) => self.error(
                path.clone(),
                format!(
                    "total destination weight {total} is too large: weights are relative, scale \
                     them down"
                ),
            ),
            _ if total != 100 => {
                let shares: Vec<String> = weights
                    .iter()
                    .map(|w| format!("{}/{total}", w.unwrap_or(0)))
                    .collect();
                self.warn(
                    path.clone(),
                    format!(
                        "total destination weight is {total}, not 100: weights are relative, so \
                         the destinations get {} of the connections",
                        shares.join(", ")
                    ),
                );
            }
            _ => {}
        }
    }

    /// The `route` of a `tcp` or `tls` rule (`path` is the `route` field).
    pub fn route_destinations(
        &mut self,
        path: &FieldPath,
        routes: Vec<dto::RouteDestination>,
    ) -> Vec<RouteDestination> {
        let mut weights = Vec::with_capacity(routes.len());
        let mut valid = Vec::with_capacity(routes.len());
        for (j, route) in routes.into_iter().enumerate() {
            let entry = path.index(j);
            let weight = self.weight(&entry, route.weight);
            weights.push(weight);
            let Some(destination) = route.destination else {
                self.error(entry, "destination is required");
                continue;
            };
            if let Some(mut destination) = self.destination(&entry.key("destination"), destination)
            {
                destination.weight = weight.ok().flatten();
                valid.push(destination);
            }
        }
        self.total_weight(path, &weights);
        valid
    }

    /// Records `exportTo`'s problems (Istio's `validateExportTo`).
    fn export_to(&mut self, export_to: &[String], is_service_entry: bool) {
        let namespace = self.source.namespace.clone();
        for (i, message) in values::export_to(&namespace, export_to, is_service_entry) {
            self.error(fp!("spec.exportTo[{i}]"), message);
        }
    }

    /// The errors, or the warnings when there is none.
    fn finish(self) -> Result<Vec<Warning>, Vec<ConfigError>> {
        if self.errors.is_empty() {
            Ok(self.warnings)
        } else {
            Err(self.errors)
        }
    }
}

/// What one document gave: its resource and its warnings, or its errors
/// (all of them).
pub(super) type Parsed = Result<(Resource, Vec<Warning>), Vec<ConfigError>>;

/// Parses one non-empty YAML document into a validated resource.
pub(super) fn parse_document(
    file: &Path,
    document: usize,
    mut value: Value,
    lines: &Arc<LineIndex>,
) -> Parsed {
    let mut place = Place {
        file,
        document,
        resource: None,
        lines,
    };
    if !value.is_mapping() {
        return Err(vec![place.error(
            FieldPath::root(),
            "a document must be a mapping: one Istio resource with apiVersion, kind, metadata \
             and spec",
        )]);
    }
    value.apply_merge().map_err(|error| {
        vec![place.error(FieldPath::root(), format!("invalid YAML merge: {error}"))]
    })?;

    let api_version = required_str(&place, &value, "apiVersion").map_err(|error| vec![error])?;
    let kind = required_str(&place, &value, "kind").map_err(|error| vec![error])?;
    let known_kind = KINDS.into_iter().find(|known| *known == kind);
    // For the messages of what follows, if the name can be read at all.
    let metadata = value.get("metadata");
    if let Some(kind) = known_kind
        && let Some(name) = metadata.and_then(|m| m.get("name")).and_then(Value::as_str)
    {
        let namespace = metadata
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        place.resource = Some(Box::new(ResourceId {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }));
    }
    let mut errors = Vec::new();
    if !API_VERSIONS.contains(&api_version) {
        errors.push(place.error(
            fp!("apiVersion"),
            format!(
                "unsupported apiVersion {api_version:?}: use networking.istio.io/v1 \
                 (v1beta1 and v1alpha3 are accepted too)"
            ),
        ));
    }
    let Some(kind) = known_kind else {
        errors.push(place.error(
            fp!("kind"),
            format!(
                "unsupported kind {kind:?}: expected one of {}",
                KINDS.join(", ")
            ),
        ));
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }

    match kind {
        "ServiceEntry" => {
            let (source, spec) = typed(&place, kind, value, lines)?;
            service_entry(source, spec)
        }
        "DestinationRule" => {
            let (source, spec) = typed(&place, kind, value, lines)?;
            destination_rule(source, spec)
        }
        "VirtualService" => {
            let (source, spec) = typed(&place, kind, value, lines)?;
            virtual_service(source, spec)
        }
        "Gateway" => {
            let (source, spec) = typed(&place, kind, value, lines)?;
            gateway(source, spec)
        }
        _ => {
            let (source, spec) = typed(&place, kind, value, lines)?;
            workload_entry(source, spec)
        }
    }
}

/// Where a document is, before it is known to be a valid resource.
struct Place<'a> {
    file: &'a Path,
    document: usize,
    resource: Option<Box<ResourceId>>,
    lines: &'a LineIndex,
}

impl Place<'_> {
    fn error(&self, path: FieldPath, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            document: Some(self.document),
            resource: self.resource.clone(),
            line: self.lines.line(&path),
            field: path,
            message: one_line(message.into()),
        }
    }
}

fn required_str<'v>(place: &Place, value: &'v Value, key: &str) -> Result<&'v str, ConfigError> {
    match value.get(key) {
        None | Some(Value::Null) => Err(place.error(
            FieldPath::root(),
            format!("{key} is required: every document needs apiVersion, kind, metadata and spec"),
        )),
        Some(field) => field
            .as_str()
            .ok_or_else(|| place.error(fp!("{key}"), format!("{key} must be a string"))),
    }
}

/// The serde pass over the document, then `metadata`.
fn typed<S: DeserializeOwned>(
    place: &Place,
    kind: &'static str,
    value: Value,
    lines: &Arc<LineIndex>,
) -> Result<(Source, S), Vec<ConfigError>> {
    let document: dto::Document<S> = serde_path_to_error::deserialize(value).map_err(|error| {
        let path = FieldPath::from(error.path());
        vec![place.error(path, serde_message(&error.into_inner()))]
    })?;
    let metadata = document.metadata;
    let mut errors = Vec::new();
    let name = metadata.name.unwrap_or_default();
    if name.is_empty() {
        errors.push(place.error(
            fp!("metadata.name"),
            "metadata.name is required: name the resource",
        ));
    } else if !is_dns1123_subdomain(&name) {
        errors.push(place.error(
            fp!("metadata.name"),
            format!(
                "metadata.name {name:?} is not a valid name: use lower-case letters, digits, '-' \
                 and '.', starting and ending with a letter or digit"
            ),
        ));
    }
    let namespace = metadata.namespace.unwrap_or_else(|| "default".to_owned());
    if !is_dns1123_label(&namespace) {
        errors.push(place.error(
            fp!("metadata.namespace"),
            format!(
                "metadata.namespace {namespace:?} is not a valid namespace: use at most 63 \
                 lower-case letters, digits and '-', starting and ending with a letter or digit"
            ),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let source = Source {
        kind,
        name,
        namespace,
        file: place.file.to_owned(),
        document: place.document,
        lines: Arc::clone(lines),
    };
    Ok((source, document.spec))
}

/// serde's message, with a hint where serde gives none.
fn serde_message(error: &serde_yaml_ng::Error) -> String {
    let message = error.to_string();
    if message.starts_with("unknown field") {
        format!("{message}: fix the spelling or remove the field")
    } else if message.starts_with("unknown variant") {
        format!("{message}: use one of these values")
    } else {
        message
    }
}

/// Istio's `ValidateServiceEntry`.
fn service_entry(source: Source, spec: dto::ServiceEntrySpec) -> Parsed {
    let mut cx = Check::new(&source);
    let resolution = spec.resolution.unwrap_or_default();
    let location = spec.location.unwrap_or_default();

    let workload_selector = spec.workload_selector.map(|selector| {
        let labels = selector.labels.unwrap_or_default();
        for (key, value) in &labels {
            let path = fp!("spec.workloadSelector.labels").key(key);
            if key.is_empty() {
                cx.error(
                    path,
                    format!("empty key is not supported in selector: \"{key}={value}\""),
                );
            } else if key.contains('*') || value.contains('*') {
                cx.error(
                    path,
                    format!("wildcard is not supported in selector: \"{key}={value}\""),
                );
            }
        }
        if labels.is_empty() {
            cx.warn(
                fp!("spec.workloadSelector"),
                "service entry: workload selector specified without labels, will be applied to \
                 all services in namespace",
            );
        }
        labels
    });
    if workload_selector.is_some() && spec.endpoints.is_some() {
        cx.error(
            fp!("spec.workloadSelector"),
            "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
        );
    }

    let hosts = spec.hosts.unwrap_or_default();
    if hosts.is_empty() {
        cx.error(
            fp!("spec.hosts"),
            "service entry must have at least one host: add spec.hosts",
        );
    }
    for (i, host) in hosts.iter().enumerate() {
        let path = fp!("spec.hosts[{i}]");
        if host == "*" {
            cx.error(path, "invalid host *: a ServiceEntry names its hosts");
            continue;
        }
        if let Err(message) = validate_domain(host) {
            cx.error(path, message);
        } else if resolution != Resolution::DynamicDns && is_partial_wildcard(host) {
            cx.warn(path, format!("partial wildcard {host:?} not allowed"));
        }
    }

    let written_addresses = spec.addresses.unwrap_or_default();
    let mut addresses = Vec::new();
    for (i, address) in written_addresses.iter().enumerate() {
        addresses.extend(cx.ok(
            fp!("spec.addresses[{i}]"),
            service_address(address, resolution),
        ));
    }

    let ports = service_ports(&mut cx, spec.ports.unwrap_or_default());

    let endpoints = resolution_rules(
        &mut cx,
        resolution,
        &hosts,
        &written_addresses,
        &ports,
        spec.endpoints.unwrap_or_default(),
        workload_selector.is_some(),
    );

    // Istio: plain TCP cannot tell the hosts apart.
    if resolution != Resolution::None
        && hosts.len() > 1
        && ports.iter().any(|port| !port.protocol.is_http_or_tls())
    {
        cx.error(
            fp!("spec.hosts"),
            "multiple hosts provided with non-HTTP, non-TLS ports: use one ServiceEntry per host",
        );
    }
    let export_to = spec.export_to.unwrap_or_default();
    cx.export_to(&export_to, true);

    let warnings = cx.finish()?;
    Ok((
        Resource::ServiceEntry(ServiceEntry {
            source,
            hosts,
            addresses,
            ports,
            location,
            resolution,
            endpoints,
            workload_selector,
            export_to,
        }),
        warnings,
    ))
}

/// The rules that depend on `resolution` (Istio's switch on it), and the
/// endpoints.
fn resolution_rules(
    cx: &mut Check,
    resolution: Resolution,
    hosts: &[String],
    written_addresses: &[String],
    ports: &[ServicePort],
    written_endpoints: Vec<dto::WorkloadEntrySpec>,
    has_selector: bool,
) -> Vec<WorkloadEndpoint> {
    let port_names: Vec<&str> = ports.iter().map(|port| port.name.as_str()).collect();
    let mut endpoints = Vec::new();
    match resolution {
        Resolution::None => {
            if !written_endpoints.is_empty() {
                cx.error(
                    fp!("spec.endpoints"),
                    "no endpoints should be provided for resolution type none: use resolution: \
                     STATIC",
                );
            }
            if has_selector {
                cx.warn(
                    fp!("spec.workloadSelector"),
                    "workloadSelector should not be set when resolution mode is NONE",
                );
            }
        }
        Resolution::Static | Resolution::Dns | Resolution::DnsRoundRobin => {
            if resolution != Resolution::Static && written_endpoints.is_empty() {
                for (i, host) in hosts.iter().enumerate() {
                    if let Err(message) = validate_fqdn(host) {
                        cx.error(
                            fp!("spec.hosts[{i}]"),
                            format!(
                                "hosts must be FQDN or contain only prefix wildcards if no \
                                 endpoints are provided for resolution mode {}, {message}",
                                resolution.name()
                            ),
                        );
                        break;
                    }
                }
            }
            if resolution == Resolution::DnsRoundRobin && written_endpoints.len() > 1 {
                cx.error(
                    fp!("spec.endpoints"),
                    "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN",
                );
            }
            for (i, endpoint) in written_endpoints.into_iter().enumerate() {
                endpoints.extend(workload_endpoint(
                    cx,
                    &fp!("spec.endpoints[{i}]"),
                    endpoint,
                    Some((resolution, &port_names)),
                ));
            }
            if resolution != Resolution::Static
                && !written_addresses.is_empty()
                && hosts.len() > 1
                && ports.iter().any(|port| port.protocol.is_tcp())
            {
                cx.warn(
                    fp!("spec.hosts"),
                    "service entry can not have more than one host specified simultaneously \
                     with address and tcp port",
                );
            }
        }
        Resolution::DynamicDns => {
            for (i, host) in hosts.iter().enumerate() {
                if !host.starts_with('*') {
                    cx.error(
                        fp!("spec.hosts[{i}]"),
                        "host must be wildcarded for resolution mode DYNAMIC_DNS",
                    );
                }
            }
            if !written_addresses.is_empty() {
                cx.error(
                    fp!("spec.addresses"),
                    "addresses cannot be set for resolution type DYNAMIC_DNS. HTTP route \
                     domains will only be generated from the hosts field values",
                );
            }
            if !written_endpoints.is_empty() {
                cx.error(
                    fp!("spec.endpoints"),
                    "endpoints cannot be set for resolution type DYNAMIC_DNS. Destination IP \
                     address determined from hosts field values",
                );
            }
            for (i, port) in ports.iter().enumerate() {
                if !matches!(
                    port.protocol,
                    Protocol::Http | Protocol::Tls | Protocol::Grpc | Protocol::Http2
                ) {
                    cx.error(
                        fp!("spec.ports[{i}].protocol"),
                        "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution \
                         type DYNAMIC_DNS",
                    );
                }
            }
        }
    }

    endpoints
}

/// A `ServiceEntry` address: an IP, or a CIDR that is one address.
fn service_address(address: &str, resolution: Resolution) -> Result<IpAddr, String> {
    let Some((ip, prefix)) = address.split_once('/') else {
        return address
            .parse()
            .map_err(|_| format!("{address} is not a valid IP: use an IPv4 or IPv6 address"));
    };
    let (ip, prefix) =
        parse_cidr(ip, prefix).ok_or_else(|| format!("{address} is not a valid CIDR block"))?;
    if !matches!(resolution, Resolution::None | Resolution::Static) {
        return Err(format!(
            "CIDR addresses are allowed only for NONE/STATIC resolution types: write {ip} \
             without /{prefix}"
        ));
    }
    let full = if ip.is_ipv4() { 32 } else { 128 };
    if prefix == full {
        Ok(ip)
    } else {
        Err(format!(
            "CIDR {address} covers more than one address, which the kernel path does not \
             support yet: list the service addresses one by one (a /{full} is one address)"
        ))
    }
}

fn service_ports(cx: &mut Check, ports: Vec<dto::ServicePort>) -> Vec<ServicePort> {
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    let mut valid = Vec::with_capacity(ports.len());
    for (i, port) in ports.into_iter().enumerate() {
        let number = cx.port(fp!("spec.ports[{i}].number"), port.number.unwrap_or(0));
        let name = port.name.unwrap_or_default();
        if !names.insert(name.clone()) {
            cx.error(
                fp!("spec.ports[{i}].name"),
                format!("service entry port name {name:?} already defined"),
            );
        } else if !is_dns1123_label_any_case(&name) {
            cx.error(
                fp!("spec.ports[{i}].name"),
                format!(
                    "invalid port name: {name}: name the port with letters, digits and '-' \
                     (endpoints map port names to their ports)"
                ),
            );
        }
        if let Some(number) = number
            && !numbers.insert(number)
        {
            cx.error(
                fp!("spec.ports[{i}].number"),
                format!("service entry port {number} already defined"),
            );
        }
        let protocol_name = port.protocol.unwrap_or_default();
        let protocol = Protocol::parse(&protocol_name);
        if protocol.is_none() {
            cx.error(
                fp!("spec.ports[{i}].protocol"),
                format!(
                    "unsupported protocol: {protocol_name}: use one of {}",
                    Protocol::NAMES.map(|(name, _)| name).join(", ")
                ),
            );
        }
        let target_port = match port.target_port {
            None | Some(0) => None,
            Some(target) => cx.port(fp!("spec.ports[{i}].targetPort"), target),
        };
        if let (Some(number), Some(protocol)) = (number, protocol) {
            valid.push(ServicePort {
                number,
                name,
                protocol,
                target_port,
            });
        }
    }
    valid
}

/// A `ServiceEntry` endpoint (`service` = its resolution and port names)
/// or a `WorkloadEntry` spec (`service` = `None`): Istio's
/// `validateWorkloadEntry`.
fn workload_endpoint(
    cx: &mut Check,
    base: &FieldPath,
    endpoint: dto::WorkloadEntrySpec,
    service: Option<(Resolution, &[&str])>,
) -> Option<WorkloadEndpoint> {
    let errors_before = cx.errors.len();
    let address = endpoint_address(cx, base, &endpoint, service);

    let mut ports = BTreeMap::new();
    for (name, number) in endpoint.ports.unwrap_or_default() {
        let path = base.key("ports").key(&name);
        if let Some((_, names)) = service
            && !names.contains(&name.as_str())
        {
            cx.error(
                path.clone(),
                format!(
                    "endpoint port {number} is not defined by the service entry: port name \
                     {name:?} is none of its port names ({})",
                    names.join(", ")
                ),
            );
        }
        if !is_dns1123_label_any_case(&name) {
            cx.error(path.clone(), format!("invalid port name: {name}"));
        }
        if let Some(number) = cx.port(path, number) {
            ports.insert(name, number);
        }
    }
    let labels = endpoint.labels.unwrap_or_default();
    cx.labels(&base.key("labels"), &labels);

    let weight = endpoint.weight.and_then(|weight| {
        u32::try_from(weight)
            .map_err(|_| cx.error(base.key("weight"), weight_message(weight)))
            .ok()
    });

    let address = address.filter(|_| cx.errors.len() == errors_before)?;
    Some(WorkloadEndpoint {
        address,
        ports,
        labels,
        network: endpoint.network,
        locality: endpoint.locality,
        weight,
        service_account: endpoint.service_account,
    })
}

/// An endpoint's `address`: an IP, a DNS name (not with STATIC), a unix
/// socket, or none (with a `network`).
fn endpoint_address(
    cx: &mut Check,
    base: &FieldPath,
    endpoint: &dto::WorkloadEntrySpec,
    service: Option<(Resolution, &[&str])>,
) -> Option<EndpointAddress> {
    let written = endpoint.address.clone().unwrap_or_default();
    if written.is_empty() {
        match &endpoint.network {
            Some(network) if !network.is_empty() => {
                cx.warn(
                    base.key("address"),
                    format!("address is unset with network {network:?}"),
                );
                Some(EndpointAddress::Unset)
            }
            _ => {
                cx.error(
                    base.key("address"),
                    "address is required: set the endpoint's IP address",
                );
                None
            }
        }
    } else if let Some(path) = written.strip_prefix("unix://") {
        if let Err(message) = unix_address(path) {
            cx.error(base.key("address"), message);
        }
        if endpoint
            .ports
            .as_ref()
            .is_some_and(|ports| !ports.is_empty())
        {
            cx.error(
                base.key("ports"),
                format!("unix endpoint {written} must not include ports"),
            );
        }
        if let Some((_, names)) = service
            && names.len() != 1
        {
            cx.error(
                base.key("address"),
                "exactly 1 service port required for unix endpoints",
            );
        }
        Some(EndpointAddress::Unix(path.to_owned()))
    } else if let Ok(ip) = written.parse() {
        Some(EndpointAddress::Ip(ip))
    } else if matches!(service, Some((Resolution::Static, _))) {
        cx.error(
            base.key("address"),
            format!(
                "endpoint address {written:?} is not a valid IP address: with resolution STATIC \
                 endpoints are IP addresses"
            ),
        );
        None
    } else if validate_fqdn(&written).is_err() {
        cx.error(
            base.key("address"),
            format!("endpoint address {written:?} is not a valid FQDN or an IP address"),
        );
        None
    } else {
        Some(EndpointAddress::Name(written))
    }
}

/// Istio's `ValidateUnixAddress` (the part after `unix://`).
fn unix_address(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("unix address must not be empty".to_owned());
    }
    if path.starts_with('@') || (path.starts_with('/') && !path.ends_with('/')) {
        Ok(())
    } else {
        Err(format!("{path} is not an absolute path to a file"))
    }
}

fn workload_entry(source: Source, spec: dto::WorkloadEntrySpec) -> Parsed {
    let mut cx = Check::new(&source);
    let endpoint = workload_endpoint(&mut cx, &fp!("spec"), spec, None);
    let warnings = cx.finish()?;
    // `workload_endpoint` records an error whenever it gives `None`.
    let endpoint = endpoint
        .ok_or_else(|| vec![source.error(fp!("spec"), "invalid WorkloadEntry: fix its address")])?;
    Ok((
        Resource::WorkloadEntry(WorkloadEntry { source, endpoint }),
        warnings,
    ))
}

/// Istio's `ValidateDestinationRule`.
fn destination_rule(source: Source, spec: dto::DestinationRuleSpec) -> Parsed {
    let mut cx = Check::new(&source);
    let host = spec.host.unwrap_or_default();
    if host.is_empty() {
        cx.error(
            fp!("spec.host"),
            "empty domain name not allowed: set spec.host to the ServiceEntry host this rule is for",
        );
    } else if let Err(message) = validate_domain(&host) {
        cx.error(fp!("spec.host"), message);
    }
    let traffic_policy =
        policy::traffic_policy(&mut cx, &fp!("spec.trafficPolicy"), spec.traffic_policy);

    let mut names = BTreeSet::new();
    let mut subsets = Vec::new();
    for (i, subset) in spec.subsets.unwrap_or_default().into_iter().enumerate() {
        let name = subset.name.unwrap_or_default();
        let name_path = fp!("spec.subsets[{i}].name");
        if !names.insert(name.clone()) {
            cx.error(name_path, format!("duplicate subset names: {name}"));
        } else if name.is_empty() {
            cx.error(name_path, "subset name cannot be empty");
        } else if !is_dns1123_label_any_case(&name) {
            cx.error(
                name_path,
                format!(
                    "subset name is invalid: {name}: use letters, digits and '-', starting and \
                     ending with a letter or digit"
                ),
            );
        }
        let labels = subset.labels.unwrap_or_default();
        cx.labels(&fp!("spec.subsets[{i}].labels"), &labels);
        let traffic_policy = policy::traffic_policy(
            &mut cx,
            &fp!("spec.subsets[{i}].trafficPolicy"),
            subset.traffic_policy,
        );
        subsets.push(Subset {
            name,
            labels,
            traffic_policy,
        });
    }
    let export_to = spec.export_to.unwrap_or_default();
    cx.export_to(&export_to, false);
    let warnings = cx.finish()?;
    Ok((
        Resource::DestinationRule(DestinationRule {
            source,
            host,
            traffic_policy,
            subsets,
            export_to,
        }),
        warnings,
    ))
}

/// Istio's `ValidateVirtualService`.
fn virtual_service(source: Source, spec: dto::VirtualServiceSpec) -> Parsed {
    let mut cx = Check::new(&source);
    let hosts = spec.hosts.unwrap_or_default();
    let gateways = spec.gateways.unwrap_or_default();
    let tcp = spec.tcp.unwrap_or_default();
    let http = spec.http.unwrap_or_default();
    let tls = spec.tls.unwrap_or_default();

    if hosts.is_empty() {
        // A delegate.
        let delegate_rules = [
            (!gateways.is_empty(), "gateways", "gateways"),
            (!tls.is_empty(), "tls", "tls route"),
            (!tcp.is_empty(), "tcp", "tcp route"),
        ];
        for (set, field, what) in delegate_rules {
            if set {
                cx.error(
                    fp!("spec.{field}"),
                    format!(
                        "delegate virtual service must have no {what} specified: a \
                         VirtualService without hosts is a delegate; add spec.hosts"
                    ),
                );
            }
        }
    }
    cx.gateway_names(&fp!("spec.gateways"), &gateways);
    let mesh = binds_mesh(&gateways);
    let sni = tls.iter().any(|rule| {
        rule.matches
            .iter()
            .flatten()
            .any(|m| m.sni_hosts.as_ref().is_some_and(|hosts| !hosts.is_empty()))
    });

    virtual_service_hosts(&mut cx, &hosts, mesh, sni);
    if http.is_empty() && tcp.is_empty() && tls.is_empty() {
        cx.error(
            fp!("spec"),
            "http, tcp or tls must be provided in virtual service",
        );
    }

    let context = http::Context {
        hosts: &hosts,
        gateway_only: !mesh,
        delegate: hosts.is_empty(),
    };
    let http: Vec<HttpRule> = http
        .into_iter()
        .enumerate()
        .filter_map(|(i, rule)| http::http_rule(&mut cx, &context, i, rule))
        .collect();
    let tls: Vec<TlsRule> = tls
        .into_iter()
        .enumerate()
        .filter_map(|(i, rule)| http::tls_rule(&mut cx, &context, i, rule))
        .collect();
    let tcp: Vec<TcpRule> = tcp
        .into_iter()
        .enumerate()
        .filter_map(|(i, rule)| tcp_rule(&mut cx, i, rule))
        .collect();
    http::unreachable_http_rules(&mut cx, &http);
    let export_to = spec.export_to.unwrap_or_default();
    cx.export_to(&export_to, false);

    let warnings = cx.finish()?;
    Ok((
        Resource::VirtualService(VirtualService {
            source,
            hosts,
            gateways,
            tcp,
            http,
            tls,
            export_to,
        }),
        warnings,
    ))
}

/// The `hosts` of a `VirtualService`: valid (an IP too), `*` only for
/// gateways, no two overlapping.
fn virtual_service_hosts(cx: &mut Check, hosts: &[String], mesh: bool, sni: bool) {
    let mut all_hosts_valid = true;
    for (i, host) in hosts.iter().enumerate() {
        let path = fp!("spec.hosts[{i}]");
        let valid = if !mesh && sni && host.starts_with("outbound_") {
            // AUTO_PASSTHROUGH's generated names: outbound_.<port>_._.<host>.
            Ok(())
        } else {
            validate_domain(host)
        };
        match valid {
            Err(message) if host.parse::<IpAddr>().is_err() => {
                cx.error(path, message);
                all_hosts_valid = false;
            }
            Ok(()) if mesh && host == "*" => {
                cx.error(
                    path,
                    "wildcard host * is not allowed for virtual services bound to the mesh \
                     gateway: name the service hosts, or bind the rules to gateways only",
                );
                all_hosts_valid = false;
            }
            Ok(()) | Err(_) => {}
        }
    }
    if all_hosts_valid {
        for (j, host) in hosts.iter().enumerate() {
            if let Some(earlier) = hosts[..j]
                .iter()
                .find(|earlier| host_matches(earlier, host) || host_matches(host, earlier))
            {
                cx.error(
                    fp!("spec.hosts[{j}]"),
                    format!("duplicate hosts in virtual service: {earlier} & {host}"),
                );
            }
        }
    }
}

/// Istio's `validateTCPRoute`.
fn tcp_rule(cx: &mut Check, i: usize, rule: dto::TcpRoute) -> Option<TcpRule> {
    let errors_before = cx.errors.len();
    let mut matches = Vec::new();
    for (k, m) in rule.matches.unwrap_or_default().into_iter().enumerate() {
        let base = fp!("spec.tcp[{i}].match[{k}]");
        let port = m
            .port
            .filter(|port| *port != 0)
            .and_then(|port| cx.port(base.key("port"), port));
        let destination_subnets = m.destination_subnets.unwrap_or_default();
        for (s, subnet) in destination_subnets.iter().enumerate() {
            let _ = cx.ok(
                base.key("destinationSubnets").index(s),
                validate_subnet(subnet),
            );
        }
        let source_subnet = m.source_subnet.filter(|subnet| !subnet.is_empty());
        if let Some(subnet) = &source_subnet {
            let _ = cx.ok(base.key("sourceSubnet"), validate_subnet(subnet));
        }
        let source_labels = m.source_labels.unwrap_or_default();
        cx.labels(&base.key("sourceLabels"), &source_labels);
        let gateways = m.gateways.unwrap_or_default();
        cx.gateway_names(&base.key("gateways"), &gateways);
        matches.push(L4Match {
            port,
            destination_subnets,
            source_subnet,
            source_labels,
            gateways,
            source_namespace: m.source_namespace.filter(|namespace| !namespace.is_empty()),
        });
    }

    let routes = rule.route.unwrap_or_default();
    if routes.is_empty() {
        cx.error(
            fp!("spec.tcp[{i}].route"),
            "TCP route is required: list at least one destination",
        );
    }
    let route = cx.route_destinations(&fp!("spec.tcp[{i}].route"), routes);
    (cx.errors.len() == errors_before).then_some(TcpRule { matches, route })
}

fn weight_message(weight: i64) -> String {
    if weight < 0 {
        format!("weight {weight} < 0")
    } else {
        format!(
            "weight {weight} is too large (at most {}): weights are relative, scale them down",
            i32::MAX
        )
    }
}

/// Istio's `ValidateGateway`.
#[expect(
    clippy::too_many_lines,
    reason = "one server's checks, in Istio's order, with what each check needs"
)]
fn gateway(source: Source, spec: dto::GatewaySpec) -> Parsed {
    let mut cx = Check::new(&source);
    if !is_dns1123_label(&source.name) {
        cx.error(
            fp!("metadata.name"),
            format!(
                "invalid gateway name: {:?}: a Gateway name has no dots",
                source.name
            ),
        );
    }
    let selector = spec.selector.unwrap_or_default();
    cx.labels(&fp!("spec.selector"), &selector);
    let servers = spec.servers.unwrap_or_default();
    if servers.is_empty() {
        cx.error(fp!("spec.servers"), "gateway must have at least one server");
    }
    let mut port_names = BTreeSet::new();
    let mut valid = Vec::with_capacity(servers.len());
    for (i, server) in servers.into_iter().enumerate() {
        let errors_before = cx.errors.len();
        let hosts = server.hosts.unwrap_or_default();
        if hosts.is_empty() {
            cx.error(
                fp!("spec.servers[{i}].hosts"),
                "server config must contain at least one host",
            );
        }
        for (h, host) in hosts.iter().enumerate() {
            if let Err(message) = validate_server_host(host) {
                cx.error(fp!("spec.servers[{i}].hosts[{h}]"), message);
            }
        }
        let bind = server
            .bind
            .filter(|bind| !bind.is_empty())
            .and_then(|bind| {
                cx.ok(
                    fp!("spec.servers[{i}].bind"),
                    bind.parse::<IpAddr>().map_err(|_| {
                        format!(
                            "bind {bind:?} is not an IP address: the kernel path accepts on an \
                             IPv4 or IPv6 address (unix domain sockets are not supported); \
                             remove bind to accept on every local address"
                        )
                    }),
                )
            });
        let Some(port) = server.port else {
            cx.error(fp!("spec.servers[{i}].port"), "port is required");
            continue;
        };
        let protocol_name = port.protocol.unwrap_or_default();
        let protocol =
            Protocol::parse(&protocol_name).filter(|protocol| *protocol != Protocol::Unspecified);
        if protocol.is_none() {
            cx.error(
                fp!("spec.servers[{i}].port.protocol"),
                format!(
                    "invalid protocol {protocol_name:?}, supported protocols are HTTP, HTTPS, \
                     HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP, TLS"
                ),
            );
        }
        let number = cx.port(
            fp!("spec.servers[{i}].port.number"),
            port.number.unwrap_or(0),
        );
        if port.target_port.is_some_and(|target| target > 0) {
            cx.error(
                fp!("spec.servers[{i}].port.targetPort"),
                "targetPort has no impact on Gateways: remove it",
            );
        }
        let name = port.name.unwrap_or_default();
        if name.is_empty() {
            cx.error(fp!("spec.servers[{i}].port.name"), "port name must be set");
        } else if !port_names.insert(name.clone()) {
            cx.error(
                fp!("spec.servers[{i}].port.name"),
                format!("port names in servers must be unique: duplicate name {name}"),
            );
        }
        let tls_mode = server_tls(&mut cx, i, protocol, server.tls);
        if let (Some(number), Some(protocol)) = (number, protocol)
            && cx.errors.len() == errors_before
        {
            valid.push(Server {
                port: GatewayPort {
                    number,
                    name,
                    protocol,
                },
                hosts,
                bind,
                default_endpoint: server.default_endpoint,
                name: server.name,
                tls_mode,
            });
        }
    }
    let warnings = cx.finish()?;
    Ok((
        Resource::Gateway(Gateway {
            source,
            selector,
            servers: valid,
        }),
        warnings,
    ))
}

/// A server's `tls` against its protocol (Istio's `validateServer` and the
/// main rules of `validateTLSOptions`); its mode.
fn server_tls(
    cx: &mut Check,
    i: usize,
    protocol: Option<Protocol>,
    tls: Option<dto::ServerTls>,
) -> Option<ServerTlsMode> {
    let path = fp!("spec.servers[{i}].tls");
    let is_tls = matches!(protocol, Some(Protocol::Https | Protocol::Tls));
    let is_http = protocol.is_some_and(Protocol::is_http);
    let Some(tls) = tls else {
        if is_tls {
            cx.error(
                path,
                "server must have TLS settings for HTTPS/TLS protocols: add tls: {mode: ...}",
            );
        }
        return None;
    };
    let mode = tls.mode.unwrap_or_default();
    let set = |value: &Option<String>| value.as_deref().is_some_and(|value| !value.is_empty());
    let has_certificates = set(&tls.server_certificate)
        || set(&tls.private_key)
        || set(&tls.ca_certificates)
        || set(&tls.credential_name);
    if protocol.is_some() && !is_tls {
        let passthrough = matches!(
            mode,
            ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
        );
        if !is_http {
            cx.error(
                path.clone(),
                "server cannot have TLS settings for non HTTPS/TLS ports",
            );
        } else if !passthrough || has_certificates {
            cx.error(
                path.clone(),
                "server cannot have TLS settings for plain text HTTP ports",
            );
        }
    }
    if tls.https_redirect == Some(true) && !is_http {
        cx.warn(
            path.key("httpsRedirect"),
            "tls.httpsRedirect should only be used with http servers",
        );
    }
    let credential = set(&tls.credential_name)
        || tls
            .credential_names
            .as_ref()
            .is_some_and(|names| !names.is_empty());
    let certificates_listed = tls
        .tls_certificates
        .as_ref()
        .is_some_and(|certificates| !certificates.is_empty());
    match mode {
        ServerTlsMode::IstioMutual => {
            for (field, value) in [
                ("serverCertificate", &tls.server_certificate),
                ("privateKey", &tls.private_key),
                ("caCertificates", &tls.ca_certificates),
                ("credentialName", &tls.credential_name),
            ] {
                if set(value) {
                    cx.error(
                        path.key(field),
                        format!("ISTIO_MUTUAL TLS cannot have associated {field}"),
                    );
                }
            }
        }
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
            if !credential && !certificates_listed =>
        {
            let prefix = if mode == ServerTlsMode::Simple {
                "SIMPLE TLS"
            } else {
                "MUTUAL TLS"
            };
            if !set(&tls.server_certificate) {
                cx.error(
                    path.clone(),
                    format!("{prefix} requires a server certificate"),
                );
            }
            if !set(&tls.private_key) {
                cx.error(path.clone(), format!("{prefix} requires a private key"));
            }
            if mode != ServerTlsMode::Simple && !set(&tls.ca_certificates) {
                cx.error(path, format!("{prefix} requires a client CA bundle"));
            }
        }
        _ => {}
    }
    Some(mode)
}

/// A Gateway server host: `[namespace/]dnsName` (Istio's
/// `ValidateNamespaceSlashWildcardHostname` for gateways).
fn validate_server_host(host: &str) -> Result<(), String> {
    let name = match host.split_once('/') {
        Some((namespace, name)) => {
            if namespace.is_empty() || name.is_empty() {
                return Err("config namespace and dnsName in host entry cannot be empty".to_owned());
            }
            if !(namespace == "*" || namespace == "." || is_dns1123_label_any_case(namespace)) {
                return Err(format!(
                    "invalid namespace value {namespace:?} in gateway: use *, . or a namespace \
                     name before the /"
                ));
            }
            name
        }
        None => host,
    };
    if name != "*" && !name.contains('.') {
        return Err(format!(
            "short names (non FQDN) are not allowed: {name:?}; write the full host name, as \
             {name}.<namespace>.svc.cluster.local"
        ));
    }
    if validate_domain(name).is_err() && name.parse::<IpAddr>().is_err() {
        return validate_domain(name);
    }
    if is_partial_wildcard(name) {
        return Err(format!("partial wildcard {name:?} not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_case_insensitive_and_tcp_rules_skip_http_and_tls() {
        let cases = [
            ("TCP", Some(true)),
            ("tcp", Some(true)),
            ("", Some(true)),
            ("MONGO", Some(true)),
            ("HTTP", Some(false)),
            ("grpc-web", Some(false)),
            ("TLS", Some(false)),
            ("UDP", Some(false)),
            ("SCTP", None),
        ];
        for (name, takes_tcp) in cases {
            assert_eq!(
                Protocol::parse(name).map(Protocol::takes_tcp_routes),
                takes_tcp,
                "protocol {name:?}: known, and do tcp rules apply to it"
            );
        }
    }

    #[test]
    fn primes() {
        let primes: Vec<i64> = (0..30).filter(|n| policy::is_prime(*n)).collect();
        assert_eq!(
            primes,
            [2, 3, 5, 7, 11, 13, 17, 19, 23, 29],
            "primes below 30"
        );
    }
}
