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

use serde::{Deserialize, de::DeserializeOwned};
use serde_yaml_ng::Value;

use super::{
    dto,
    error::{ConfigError, FieldPath, ResourceId, one_line},
    lines::LineIndex,
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
        $crate::config::error::FieldPath::parse(&format!($($arg)*))
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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    #[default]
    MeshExternal,
    MeshInternal,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Connections go to the address the client dialed.
    #[default]
    None,
    Static,
    Dns,
    DnsRoundRobin,
    DynamicDns,
}

impl Resolution {
    fn name(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Static => "STATIC",
            Self::Dns => "DNS",
            Self::DnsRoundRobin => "DNS_ROUND_ROBIN",
            Self::DynamicDns => "DYNAMIC_DNS",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    Unspecified,
    Random,
    Passthrough,
    RoundRobin,
    LeastRequest,
    LeastConn,
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub number: u16,
    pub name: String,
    pub protocol: Protocol,
    pub target_port: Option<u16>,
}

/// A `ServiceEntry` endpoint or a `WorkloadEntry` spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadEndpoint {
    pub address: IpAddr,
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
    pub host: String,
    /// `spec.trafficPolicy.loadBalancer`.
    pub load_balancer: Option<LoadBalancer>,
    pub subsets: Vec<Subset>,
}

#[derive(Clone, Debug)]
pub struct Subset {
    pub name: String,
    pub labels: Labels,
    /// The subset's `trafficPolicy.loadBalancer`, which overrides the rule's.
    pub load_balancer: Option<LoadBalancer>,
}

/// A `loadBalancer` setting and where it is written, since whether it can
/// be used depends on the route that uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadBalancer {
    pub policy: LbPolicy,
    /// The field that chose the policy (`...loadBalancer.simple`,
    /// `...loadBalancer.consistentHash.useSourceIp`).
    pub path: FieldPath,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LbPolicy {
    Simple(SimpleLb),
    ConsistentHash(HashKey),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    SourceIp,
    HttpHeaderName(String),
    HttpCookie,
    HttpQueryParameterName(String),
}

#[derive(Clone, Debug)]
pub struct VirtualService {
    pub source: Source,
    /// Empty for a delegate.
    pub hosts: Vec<String>,
    /// Empty means `mesh`.
    pub gateways: Vec<String>,
    pub tcp: Vec<TcpRule>,
    /// `http` / `tls` rules are accepted and not implemented yet.
    pub has_http: bool,
    pub has_tls: bool,
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteDestination {
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayPort {
    pub number: u16,
    pub name: String,
    pub protocol: Protocol,
    pub target_port: Option<u16>,
}

/// Parses one non-empty YAML document into a validated resource.
pub(super) fn parse_document(
    file: &Path,
    document: usize,
    mut value: Value,
    lines: &Arc<LineIndex>,
) -> Result<Resource, ConfigError> {
    let mut place = Place {
        file,
        document,
        resource: None,
        lines,
    };
    if !value.is_mapping() {
        return Err(place.error(
            FieldPath::root(),
            "a document must be a mapping: one Istio resource with apiVersion, kind, metadata \
             and spec",
        ));
    }
    value
        .apply_merge()
        .map_err(|error| place.error(FieldPath::root(), format!("invalid YAML merge: {error}")))?;

    let api_version = required_str(&place, &value, "apiVersion")?;
    if !API_VERSIONS.contains(&api_version) {
        return Err(place.error(
            fp!("apiVersion"),
            format!(
                "unsupported apiVersion {api_version:?}: use networking.istio.io/v1 \
                 (v1beta1 and v1alpha3 are accepted too)"
            ),
        ));
    }
    let kind = required_str(&place, &value, "kind")?;
    let Some(kind) = KINDS.into_iter().find(|known| *known == kind) else {
        return Err(place.error(
            fp!("kind"),
            format!(
                "unsupported kind {kind:?}: expected one of {}",
                KINDS.join(", ")
            ),
        ));
    };
    // For the messages of what follows, if the name can be read at all.
    let metadata = value.get("metadata");
    if let Some(name) = metadata.and_then(|m| m.get("name")).and_then(Value::as_str) {
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

    match kind {
        "ServiceEntry" => {
            let (source, spec) = typed(&place, kind, value, lines)?;
            service_entry(source, spec).map(Resource::ServiceEntry)
        }
        "DestinationRule" => {
            let (source, spec) = typed(&place, kind, value, lines)?;
            destination_rule(source, spec).map(Resource::DestinationRule)
        }
        "VirtualService" => {
            let (source, spec) = typed(&place, kind, value, lines)?;
            virtual_service(source, spec).map(Resource::VirtualService)
        }
        "Gateway" => {
            let (source, spec) = typed(&place, kind, value, lines)?;
            gateway(source, spec).map(Resource::Gateway)
        }
        _ => {
            let (source, spec) = typed(&place, kind, value, lines)?;
            workload_entry(source, spec).map(Resource::WorkloadEntry)
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
) -> Result<(Source, S), ConfigError> {
    let document: dto::Document<S> = serde_path_to_error::deserialize(value).map_err(|error| {
        let path = FieldPath::from(error.path());
        place.error(path, serde_message(&error.into_inner()))
    })?;
    let metadata = document.metadata;
    let name = match metadata.name {
        Some(name) if !name.is_empty() => name,
        _ => {
            return Err(place.error(
                fp!("metadata.name"),
                "metadata.name is required: name the resource",
            ));
        }
    };
    if !is_dns1123_subdomain(&name) {
        return Err(place.error(
            fp!("metadata.name"),
            format!(
                "metadata.name {name:?} is not a valid name: use lower-case letters, digits, '-' \
                 and '.', starting and ending with a letter or digit"
            ),
        ));
    }
    let namespace = metadata.namespace.unwrap_or_else(|| "default".to_owned());
    if !is_dns1123_label(&namespace) {
        return Err(place.error(
            fp!("metadata.namespace"),
            format!(
                "metadata.namespace {namespace:?} is not a valid namespace: use at most 63 \
                 lower-case letters, digits and '-', starting and ending with a letter or digit"
            ),
        ));
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

fn service_entry(source: Source, spec: dto::ServiceEntrySpec) -> Result<ServiceEntry, ConfigError> {
    let resolution = spec.resolution.unwrap_or_default();
    let hosts = spec.hosts.unwrap_or_default();
    if hosts.is_empty() {
        return Err(source.error(
            fp!("spec.hosts"),
            "service entry must have at least one host: add spec.hosts",
        ));
    }
    for (i, host) in hosts.iter().enumerate() {
        if host == "*" {
            return Err(source.error(
                fp!("spec.hosts[{i}]"),
                "invalid host *: a ServiceEntry names its hosts",
            ));
        }
        validate_domain(host).map_err(|message| source.error(fp!("spec.hosts[{i}]"), message))?;
    }

    let addresses = spec
        .addresses
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, address)| {
            service_address(address, resolution)
                .map_err(|message| source.error(fp!("spec.addresses[{i}]"), message))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let ports = service_ports(&source, spec.ports.unwrap_or_default())?;

    let endpoints = spec.endpoints.unwrap_or_default();
    if spec.workload_selector.is_some() && !endpoints.is_empty() {
        return Err(source.error(
            fp!("spec.workloadSelector"),
            "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
        ));
    }
    if resolution == Resolution::None && !endpoints.is_empty() {
        return Err(source.error(
            fp!("spec.endpoints"),
            "no endpoints should be provided for resolution type none: use resolution: STATIC",
        ));
    }
    let port_names: Vec<&str> = ports.iter().map(|port| port.name.as_str()).collect();
    let endpoints = endpoints
        .into_iter()
        .enumerate()
        .map(|(i, endpoint)| {
            workload_endpoint(
                &source,
                &fp!("spec.endpoints[{i}]"),
                endpoint,
                Some((resolution, &port_names)),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;

    // Istio: plain TCP cannot tell the hosts apart.
    if resolution != Resolution::None
        && hosts.len() > 1
        && ports.iter().any(|port| !port.protocol.is_http_or_tls())
    {
        return Err(source.error(
            fp!("spec.hosts"),
            "multiple hosts provided with non-HTTP, non-TLS ports: use one ServiceEntry per host",
        ));
    }

    Ok(ServiceEntry {
        source,
        hosts,
        addresses,
        ports,
        location: spec.location.unwrap_or_default(),
        resolution,
        endpoints,
        workload_selector: spec
            .workload_selector
            .map(|selector| selector.labels.unwrap_or_default()),
    })
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

fn parse_cidr(ip: &str, prefix: &str) -> Option<(IpAddr, u8)> {
    let ip: IpAddr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let full = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= full).then_some((ip, prefix))
}

/// An IP or CIDR, as `destinationSubnets` takes (Istio's `ValidateIPSubnet`).
fn validate_subnet(subnet: &str) -> Result<(), String> {
    match subnet.split_once('/') {
        Some((ip, prefix)) => parse_cidr(ip, prefix)
            .map(|_| ())
            .ok_or_else(|| format!("{subnet} is not a valid CIDR block")),
        None => subnet
            .parse::<IpAddr>()
            .map(|_| ())
            .map_err(|_| format!("{subnet} is not a valid IP")),
    }
}

fn service_ports(
    source: &Source,
    ports: Vec<dto::ServicePort>,
) -> Result<Vec<ServicePort>, ConfigError> {
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    let mut valid = Vec::with_capacity(ports.len());
    for (i, port) in ports.into_iter().enumerate() {
        let number = port_number(
            source,
            fp!("spec.ports[{i}].number"),
            port.number.unwrap_or(0),
        )?;
        let name = port.name.unwrap_or_default();
        if !is_dns1123_label(&name) {
            return Err(source.error(
                fp!("spec.ports[{i}].name"),
                format!(
                    "invalid port name: {name}: name the port with lower-case letters, digits \
                     and '-' (endpoints map port names to their ports)"
                ),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(source.error(
                fp!("spec.ports[{i}].name"),
                format!("service entry port name {name:?} already defined"),
            ));
        }
        if !numbers.insert(number) {
            return Err(source.error(
                fp!("spec.ports[{i}].number"),
                format!("service entry port {number} already defined"),
            ));
        }
        let protocol_name = port.protocol.unwrap_or_default();
        let Some(protocol) = Protocol::parse(&protocol_name) else {
            return Err(source.error(
                fp!("spec.ports[{i}].protocol"),
                format!(
                    "unsupported protocol: {protocol_name}: use one of {}",
                    Protocol::NAMES.map(|(name, _)| name).join(", ")
                ),
            ));
        };
        let target_port = match port.target_port {
            None | Some(0) => None,
            Some(target) => Some(port_number(
                source,
                fp!("spec.ports[{i}].targetPort"),
                target,
            )?),
        };
        valid.push(ServicePort {
            number,
            name,
            protocol,
            target_port,
        });
    }
    Ok(valid)
}

/// A `ServiceEntry` endpoint (`service` = its resolution and port names)
/// or a `WorkloadEntry` spec (`service` = `None`).
fn workload_endpoint(
    source: &Source,
    base: &FieldPath,
    endpoint: dto::WorkloadEntrySpec,
    service: Option<(Resolution, &[&str])>,
) -> Result<WorkloadEndpoint, ConfigError> {
    let address = endpoint.address.unwrap_or_default();
    let address = endpoint_address(&address, service.map(|(resolution, _)| resolution))
        .map_err(|message| source.error(base.key("address"), message))?;

    let mut ports = BTreeMap::new();
    for (name, number) in endpoint.ports.unwrap_or_default() {
        let path = base.key("ports").key(&name);
        if let Some((_, names)) = service
            && !names.contains(&name.as_str())
        {
            return Err(source.error(
                path,
                format!(
                    "endpoint port name {name:?} is not defined by the service entry: use one \
                     of its port names ({})",
                    names.join(", ")
                ),
            ));
        }
        let number = port_number(source, path, number)?;
        ports.insert(name, number);
    }

    let weight = endpoint
        .weight
        .map(|weight| {
            u32::try_from(weight)
                .map_err(|_| source.error(base.key("weight"), weight_message(weight)))
        })
        .transpose()?;

    Ok(WorkloadEndpoint {
        address,
        ports,
        labels: endpoint.labels.unwrap_or_default(),
        network: endpoint.network,
        locality: endpoint.locality,
        weight,
        service_account: endpoint.service_account,
    })
}

/// An endpoint address must be an IP here: the kernel path does not resolve
/// names. `resolution` is the `ServiceEntry`'s, `None` for a `WorkloadEntry`.
fn endpoint_address(address: &str, resolution: Option<Resolution>) -> Result<IpAddr, String> {
    if address.is_empty() {
        return Err("address is required: set the endpoint's IP address".to_owned());
    }
    if let Ok(ip) = address.parse() {
        return Ok(ip);
    }
    if address.starts_with("unix://") {
        return Err(format!(
            "{address}: unix domain socket endpoints are not supported by the kernel path; use \
             an IP address"
        ));
    }
    match resolution {
        Some(Resolution::Static) => Err(format!(
            "{address} is not a valid IP: with resolution STATIC endpoints are IP addresses"
        )),
        Some(resolution) => Err(format!(
            "endpoint address {address:?} is a host name and the kernel path does not resolve \
             names (resolution {}): list its IP addresses as endpoints, with resolution: STATIC",
            resolution.name()
        )),
        None => Err(format!(
            "address {address:?} is a host name and the kernel path does not resolve names: use \
             the workload's IP address"
        )),
    }
}

fn workload_entry(
    source: Source,
    spec: dto::WorkloadEntrySpec,
) -> Result<WorkloadEntry, ConfigError> {
    let endpoint = workload_endpoint(&source, &fp!("spec"), spec, None)?;
    Ok(WorkloadEntry { source, endpoint })
}

fn destination_rule(
    source: Source,
    spec: dto::DestinationRuleSpec,
) -> Result<DestinationRule, ConfigError> {
    let host = spec.host.unwrap_or_default();
    if host.is_empty() {
        return Err(source.error(
            fp!("spec.host"),
            "empty domain name not allowed: set spec.host to the ServiceEntry host this rule is for",
        ));
    }
    validate_domain(&host).map_err(|message| source.error(fp!("spec.host"), message))?;
    let load_balancer =
        parse_load_balancer(&source, &fp!("spec.trafficPolicy"), spec.traffic_policy)?;

    let mut names = BTreeSet::new();
    let mut subsets = Vec::new();
    for (i, subset) in spec.subsets.unwrap_or_default().into_iter().enumerate() {
        let name = subset.name.unwrap_or_default();
        let name_path = fp!("spec.subsets[{i}].name");
        if name.is_empty() {
            return Err(source.error(name_path, "subset name cannot be empty"));
        }
        if !is_dns1123_label(&name) {
            return Err(source.error(
                name_path,
                format!(
                    "subset name is invalid: {name}: use lower-case letters, digits and '-', \
                     starting and ending with a letter or digit"
                ),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(source.error(name_path, format!("duplicate subset names: {name}")));
        }
        let load_balancer = parse_load_balancer(
            &source,
            &fp!("spec.subsets[{i}].trafficPolicy"),
            subset.traffic_policy,
        )?;
        subsets.push(Subset {
            name,
            labels: subset.labels.unwrap_or_default(),
            load_balancer,
        });
    }
    Ok(DestinationRule {
        source,
        host,
        load_balancer,
        subsets,
    })
}

/// `<policy>.loadBalancer`; whether a TCP route can use it is `resolve`'s call.
fn parse_load_balancer(
    source: &Source,
    policy: &FieldPath,
    traffic_policy: Option<dto::TrafficPolicy>,
) -> Result<Option<LoadBalancer>, ConfigError> {
    let Some(lb) = traffic_policy.and_then(|policy| policy.load_balancer) else {
        return Ok(None);
    };
    let base = policy.key("loadBalancer");
    match (lb.simple, lb.consistent_hash) {
        (Some(_), Some(_)) => Err(source.error(
            base,
            "set either simple or consistentHash in loadBalancer, not both",
        )),
        (Some(simple), None) => Ok(Some(LoadBalancer {
            policy: LbPolicy::Simple(simple),
            path: base.key("simple"),
        })),
        (None, Some(hash)) => consistent_hash(source, &base.key("consistentHash"), hash).map(Some),
        // Only settings we ignore (localityLbSetting, warmup).
        (None, None) => Ok(None),
    }
}

fn consistent_hash(
    source: &Source,
    base: &FieldPath,
    hash: dto::ConsistentHash,
) -> Result<LoadBalancer, ConfigError> {
    let mut keys = Vec::new();
    if hash.use_source_ip == Some(true) {
        keys.push(("useSourceIp", HashKey::SourceIp));
    }
    if let Some(name) = hash.http_header_name {
        keys.push(("httpHeaderName", HashKey::HttpHeaderName(name)));
    }
    if hash.http_cookie.is_some() {
        keys.push(("httpCookie", HashKey::HttpCookie));
    }
    if let Some(name) = hash.http_query_parameter_name {
        keys.push((
            "httpQueryParameterName",
            HashKey::HttpQueryParameterName(name),
        ));
    }
    if hash.ring_hash.is_some() && hash.maglev.is_some() {
        return Err(source.error(base.clone(), "set either ringHash or maglev, not both"));
    }
    if let Some(size) = hash.maglev.and_then(|maglev| maglev.table_size)
        && !(size > 1 && size < 5_000_011 && is_prime(size))
    {
        return Err(source.error(
            base.key("maglev").key("tableSize"),
            format!("maglev tableSize {size} must be a prime number less than 5000011"),
        ));
    }
    let ring_sizes = [
        (
            base.key("ringHash").key("minimumRingSize"),
            hash.ring_hash.and_then(|ring| ring.minimum_ring_size),
        ),
        (base.key("minimumRingSize"), hash.minimum_ring_size),
    ];
    for (path, size) in ring_sizes {
        if let Some(size) = size
            && size < 0
        {
            return Err(source.error(path, format!("minimumRingSize {size} < 0")));
        }
    }
    match keys.len() {
        0 => Err(source.error(
            base.clone(),
            "consistentHash needs a hash key: set useSourceIp: true (the one a TCP route can \
             use), httpHeaderName, httpCookie or httpQueryParameterName",
        )),
        1 => {
            let (field, key) = keys.remove(0);
            Ok(LoadBalancer {
                policy: LbPolicy::ConsistentHash(key),
                path: base.key(field),
            })
        }
        _ => Err(source.error(
            base.key(keys[1].0),
            format!(
                "consistentHash takes one hash key, and {} and {} are both set: keep one",
                keys[0].0, keys[1].0
            ),
        )),
    }
}

fn is_prime(n: i64) -> bool {
    n >= 2 && (2..=n.isqrt()).all(|d| n % d != 0)
}

fn virtual_service(
    source: Source,
    spec: dto::VirtualServiceSpec,
) -> Result<VirtualService, ConfigError> {
    let hosts = spec.hosts.unwrap_or_default();
    let gateways = spec.gateways.unwrap_or_default();
    let tcp = spec.tcp.unwrap_or_default();
    let (has_http, has_tls) = (spec.http.is_some(), spec.tls.is_some());

    if hosts.is_empty() && (!gateways.is_empty() || !tcp.is_empty() || has_tls) {
        return Err(source.error(
            fp!("spec.hosts"),
            "delegate virtual service must have no gateways/tls route/tcp route specified: a \
             VirtualService without hosts is a delegate; add spec.hosts",
        ));
    }
    if !has_http && tcp.is_empty() && !has_tls {
        return Err(source.error(
            fp!("spec"),
            "http, tcp or tls must be provided in virtual service",
        ));
    }
    let mesh = binds_mesh(&gateways);
    for (i, host) in hosts.iter().enumerate() {
        if host == "*" {
            if mesh {
                return Err(source.error(
                    fp!("spec.hosts[{i}]"),
                    "wildcard host * is not allowed for virtual services bound to the mesh \
                     gateway: name the service hosts, or bind the rules to gateways only",
                ));
            }
        } else if host.parse::<IpAddr>().is_err() {
            validate_domain(host)
                .map_err(|message| source.error(fp!("spec.hosts[{i}]"), message))?;
        }
        if let Some(earlier) = hosts[..i]
            .iter()
            .find(|earlier| host_matches(earlier, host) || host_matches(host, earlier))
        {
            return Err(source.error(
                fp!("spec.hosts[{i}]"),
                format!("duplicate hosts in virtual service: {earlier} & {host}"),
            ));
        }
    }
    for (i, gateway) in gateways.iter().enumerate() {
        if gateway.is_empty() {
            return Err(source.error(
                fp!("spec.gateways[{i}]"),
                "gateway name must not be empty: name a Gateway, or mesh",
            ));
        }
    }
    let tcp = tcp
        .into_iter()
        .enumerate()
        .map(|(i, rule)| tcp_rule(&source, i, rule))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VirtualService {
        source,
        hosts,
        gateways,
        tcp,
        has_http,
        has_tls,
    })
}

fn tcp_rule(source: &Source, i: usize, rule: dto::TcpRoute) -> Result<TcpRule, ConfigError> {
    let mut matches = Vec::new();
    for (k, m) in rule.matches.unwrap_or_default().into_iter().enumerate() {
        let base = fp!("spec.tcp[{i}].match[{k}]");
        let port = m
            .port
            .map(|port| port_number(source, base.key("port"), port))
            .transpose()?;
        let destination_subnets = m.destination_subnets.unwrap_or_default();
        for (s, subnet) in destination_subnets.iter().enumerate() {
            validate_subnet(subnet).map_err(|message| {
                source.error(base.key("destinationSubnets").index(s), message)
            })?;
        }
        if let Some(subnet) = &m.source_subnet {
            validate_subnet(subnet)
                .map_err(|message| source.error(base.key("sourceSubnet"), message))?;
        }
        matches.push(L4Match {
            port,
            destination_subnets,
            source_subnet: m.source_subnet,
            source_labels: m.source_labels.unwrap_or_default(),
            gateways: m.gateways.unwrap_or_default(),
            source_namespace: m.source_namespace,
        });
    }

    let routes = rule.route.unwrap_or_default();
    if routes.is_empty() {
        return Err(source.error(
            fp!("spec.tcp[{i}].route"),
            "TCP route is required: list at least one destination",
        ));
    }
    let route = routes
        .into_iter()
        .enumerate()
        .map(|(j, destination)| {
            route_destination(source, &fp!("spec.tcp[{i}].route[{j}]"), destination)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let total: u64 = route
        .iter()
        .map(|destination| u64::from(destination.weight.unwrap_or(0)))
        .sum();
    if route.len() > 1 && total == 0 {
        return Err(source.error(
            fp!("spec.tcp[{i}].route"),
            "total destination weight = 0: give at least one destination a weight above 0",
        ));
    }
    if total > u64::from(u32::MAX) {
        return Err(source.error(
            fp!("spec.tcp[{i}].route"),
            format!("total destination weight {total} is too large: weights are relative, scale them down"),
        ));
    }
    Ok(TcpRule { matches, route })
}

fn route_destination(
    source: &Source,
    base: &FieldPath,
    route: dto::RouteDestination,
) -> Result<RouteDestination, ConfigError> {
    let Some(destination) = route.destination else {
        return Err(source.error(base.clone(), "destination is required"));
    };
    let host_path = base.key("destination").key("host");
    let host = destination.host.unwrap_or_default();
    if host.is_empty() {
        return Err(source.error(
            host_path,
            "empty domain name not allowed: set destination.host to a ServiceEntry host",
        ));
    }
    if host == "*" {
        return Err(source.error(
            host_path,
            "invalid destination host *: name the ServiceEntry host to route to",
        ));
    }
    validate_domain(&host).map_err(|message| source.error(host_path, message))?;
    let subset = destination.subset.filter(|subset| !subset.is_empty());
    if let Some(subset) = &subset
        && !is_dns1123_label(subset)
    {
        return Err(source.error(
            base.key("destination").key("subset"),
            format!("subset name is invalid: {subset}"),
        ));
    }
    let port = destination
        .port
        .and_then(|port| port.number)
        .map(|number| {
            port_number(
                source,
                base.key("destination").key("port").key("number"),
                number,
            )
        })
        .transpose()?;
    let weight = route
        .weight
        .map(|weight| {
            u32::try_from(weight)
                .ok()
                .filter(|weight| i32::try_from(*weight).is_ok())
                .ok_or_else(|| source.error(base.key("weight"), weight_message(weight)))
        })
        .transpose()?;
    Ok(RouteDestination {
        host,
        subset,
        port,
        weight,
    })
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

fn gateway(source: Source, spec: dto::GatewaySpec) -> Result<Gateway, ConfigError> {
    if !is_dns1123_label(&source.name) {
        return Err(source.error(
            fp!("metadata.name"),
            format!(
                "invalid gateway name: {:?}: a Gateway name has no dots",
                source.name
            ),
        ));
    }
    let servers = spec.servers.unwrap_or_default();
    if servers.is_empty() {
        return Err(source.error(fp!("spec.servers"), "gateway must have at least one server"));
    }
    let mut port_names = BTreeSet::new();
    let mut valid = Vec::with_capacity(servers.len());
    for (i, server) in servers.into_iter().enumerate() {
        let hosts = server.hosts.unwrap_or_default();
        if hosts.is_empty() {
            return Err(source.error(
                fp!("spec.servers[{i}].hosts"),
                "server config must contain at least one host",
            ));
        }
        for (h, host) in hosts.iter().enumerate() {
            validate_server_host(host)
                .map_err(|message| source.error(fp!("spec.servers[{i}].hosts[{h}]"), message))?;
        }
        let bind = server
            .bind
            .filter(|bind| !bind.is_empty())
            .map(|bind| {
                bind.parse::<IpAddr>().map_err(|_| {
                    source.error(
                        fp!("spec.servers[{i}].bind"),
                        format!(
                            "bind {bind:?} is not an IP address: the kernel path accepts on an \
                             IPv4 or IPv6 address (unix domain sockets are not supported); \
                             remove bind to accept on every local address"
                        ),
                    )
                })
            })
            .transpose()?;
        let Some(port) = server.port else {
            return Err(source.error(fp!("spec.servers[{i}].port"), "port is required"));
        };
        let protocol_name = port.protocol.unwrap_or_default();
        let protocol = Protocol::parse(&protocol_name)
            .filter(|protocol| *protocol != Protocol::Unspecified)
            .ok_or_else(|| {
                source.error(
                    fp!("spec.servers[{i}].port.protocol"),
                    format!(
                        "invalid protocol {protocol_name:?}, supported protocols are HTTP, \
                         HTTPS, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP, TLS"
                    ),
                )
            })?;
        let number = port_number(
            &source,
            fp!("spec.servers[{i}].port.number"),
            port.number.unwrap_or(0),
        )?;
        let name = port.name.unwrap_or_default();
        if name.is_empty() {
            return Err(source.error(fp!("spec.servers[{i}].port.name"), "port name must be set"));
        }
        if !port_names.insert(name.clone()) {
            return Err(source.error(
                fp!("spec.servers[{i}].port.name"),
                format!("port names in servers must be unique: duplicate name {name}"),
            ));
        }
        let target_port = match port.target_port {
            None | Some(0) => None,
            Some(target) => Some(port_number(
                &source,
                fp!("spec.servers[{i}].port.targetPort"),
                target,
            )?),
        };
        valid.push(Server {
            port: GatewayPort {
                number,
                name,
                protocol,
                target_port,
            },
            hosts,
            bind,
            default_endpoint: server.default_endpoint,
            name: server.name,
        });
    }
    Ok(Gateway {
        source,
        selector: spec.selector.unwrap_or_default(),
        servers: valid,
    })
}

fn port_number(source: &Source, path: FieldPath, number: i64) -> Result<u16, ConfigError> {
    u16::try_from(number)
        .ok()
        .filter(|number| *number != 0)
        .ok_or_else(|| {
            source.error(
                path,
                format!("port number {number} must be in the range 1..65535"),
            )
        })
}

/// A Gateway server host: `[namespace/]dnsName` (Istio's
/// `validateNamespaceSlashWildcardHostname`).
fn validate_server_host(host: &str) -> Result<(), String> {
    let name = match host.split_once('/') {
        Some((namespace, name)) => {
            if !(namespace == "*" || namespace == "." || is_dns1123_label(namespace)) {
                return Err(format!(
                    "invalid namespace value {namespace:?} in host {host:?}: use *, . or a \
                     namespace name before the /"
                ));
            }
            name
        }
        None => host,
    };
    if name.contains('/') {
        return Err(format!(
            "host {host:?} must be of the form namespace/dnsName"
        ));
    }
    validate_domain(name)
}

/// Whether `pattern` (a host, `*`, or `*.suffix`) covers `host`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == host || pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => false,
    }
}

/// Istio's `ValidateWildcardDomain`: a DNS name, `*` allowed as (part of)
/// the first label.
fn validate_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("empty domain name not allowed".to_owned());
    }
    if domain.len() > 255 {
        return Err(format!("domain name {domain:?} too long (max 255)"));
    }
    let (first, rest) = domain
        .split_once('.')
        .map_or((domain, None), |(first, rest)| (first, Some(rest)));
    let first_ok = first == "*" || is_dns1123_label(first.strip_prefix('*').unwrap_or(first));
    if !first_ok {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    let Some(rest) = rest else {
        return Ok(());
    };
    let labels: Vec<&str> = rest.split('.').collect();
    let top = labels.last().copied().unwrap_or_default();
    if !top.is_empty() && top.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {top:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in labels.iter().enumerate() {
        // A trailing dot (`istio.io.`) is allowed.
        if i + 1 == labels.len() && label.is_empty() {
            break;
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// RFC 1123 label, as Kubernetes checks it: 1-63 of `[a-z0-9-]`, starting
/// and ending with a letter or digit.
pub fn is_dns1123_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// RFC 1123 subdomain: labels joined by `.`, at most 253 bytes.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        let cases = [
            ("tcp-echo.local", true),
            ("tcp-echo", true),
            ("*.local", true),
            ("*", true),
            ("istio.io.", true),
            ("", false),
            ("Tcp-Echo.local", false),
            ("a..b", false),
            ("1.2.3.4", false),
            ("a.*.b", false),
        ];
        for (domain, valid) in cases {
            assert_eq!(
                validate_domain(domain).is_ok(),
                valid,
                "{domain:?} should be {}",
                if valid { "valid" } else { "refused" }
            );
        }
    }

    #[test]
    fn host_patterns() {
        let cases = [
            ("a.local", "a.local", true),
            ("*.local", "a.local", true),
            ("*", "a.local", true),
            ("*.local", "local", false),
            ("a.local", "b.local", false),
            ("*.local", "a.remote", false),
        ];
        for (pattern, host, expected) in cases {
            assert_eq!(
                host_matches(pattern, host),
                expected,
                "does {pattern:?} cover {host:?}"
            );
        }
    }

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
        let primes: Vec<i64> = (0..30).filter(|n| is_prime(*n)).collect();
        assert_eq!(
            primes,
            [2, 3, 5, 7, 11, 13, 17, 19, 23, 29],
            "primes below 30"
        );
    }
}
