//! Each kind's checks on its own document: the shapes the Gateway API's
//! CRD validation (and Kubernetes' for `Service`) enforces, and what is
//! not supported yet, refused by name.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use super::{
    BackendActions, BackendRef, FromNamespaces, GROUP, Gateway, GatewayClass, GrantFrom, GrantTo,
    HttpRoute, HttpRouteRule, LabelSelector, Listener, MirrorRef, Namespace, Operator, ParentKind,
    ParentRef, Precedence, ReferenceGrant, Requirement, RouteMatch, Service, ServicePort,
    TargetPort, TcpRoute, dto,
};
use crate::{
    check::{Check, Checked},
    common::{Labels, Protocol},
    error::{FieldPath, fp},
    http::{
        CorsPolicy, DerivePort, HeaderOperations, Headers, HttpMatch, HttpRedirect, RedirectPort,
        Rewrite, StringMatch,
    },
    names::{is_dns1123_label, is_dns1123_subdomain, validate_domain},
    source::Source,
    values,
};

/// Gateway API weights: 0..=1,000,000.
const MAX_WEIGHT: i64 = 1_000_000;

/// A `Service`.
pub(super) fn service(source: Source, spec: dto::ServiceSpec) -> Checked<Service> {
    let mut cx = Check::new(&source);
    if let Some(kind) = &spec.type_
        && kind != "ClusterIP"
    {
        cx.error(
            fp!("spec.type"),
            format!(
                "Service type {kind} is not supported yet: only ClusterIP Services are read \
                 (their clusterIP is the service address on this node); use type: ClusterIP"
            ),
        );
    }
    for (field, set) in [
        ("externalIPs", spec.external_ips.is_some()),
        ("externalName", spec.external_name.is_some()),
    ] {
        if set {
            cx.error(
                fp!("spec.{field}"),
                format!("{field} is not supported yet: remove it"),
            );
        }
    }
    if let Some(affinity) = &spec.session_affinity
        && affinity != "None"
    {
        cx.error(
            fp!("spec.sessionAffinity"),
            format!(
                "sessionAffinity {affinity} is not supported yet: a DestinationRule with \
                 consistentHash useSourceIp for the Service's host keeps a client on one \
                 endpoint"
            ),
        );
    }
    let (addresses, headless) = cluster_ips(
        &mut cx,
        spec.cluster_ip.as_deref(),
        spec.cluster_ips.as_deref(),
    );
    let written_ports = spec.ports.unwrap_or_default();
    if written_ports.is_empty() {
        cx.error(
            fp!("spec.ports"),
            "a Service needs at least one port: add spec.ports",
        );
    }
    let several = written_ports.len() > 1;
    let mut ports: Vec<ServicePort> = Vec::new();
    for (i, port) in written_ports.into_iter().enumerate() {
        if let Some(port) = service_port(&mut cx, i, port, several, &ports) {
            ports.push(port);
        }
    }
    // Without a selector, the endpoints are those of its EndpointSlices.
    let selector = spec.selector.unwrap_or_default();
    cx.labels(&fp!("spec.selector"), &selector);
    let warnings = cx.finish()?;
    Ok((
        Service {
            source,
            addresses,
            headless,
            ports,
            selector,
            slice_endpoints: None,
        },
        warnings,
    ))
}

/// `clusterIP` and `clusterIPs`, each address once, and whether the
/// Service is headless (`None`).
fn cluster_ips(
    cx: &mut Check,
    cluster_ip: Option<&str>,
    cluster_ips: Option<&[String]>,
) -> (Vec<IpAddr>, bool) {
    let mut addresses: Vec<IpAddr> = Vec::new();
    let mut headless = None;
    let written = cluster_ip
        .into_iter()
        .map(|ip| (fp!("spec.clusterIP"), ip))
        .chain(
            cluster_ips
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, ip)| (fp!("spec.clusterIPs[{i}]"), ip.as_str())),
        );
    let mut last = fp!("spec.clusterIP");
    for (path, ip) in written {
        if ip.is_empty() {
            continue;
        }
        last = path.clone();
        if ip == "None" {
            headless.get_or_insert(path);
            continue;
        }
        match ip.parse::<IpAddr>() {
            Ok(address) if !addresses.contains(&address) => addresses.push(address),
            Ok(_) => {}
            Err(_) => cx.error(
                path,
                format!("clusterIP {ip:?} is not an IP address: write one, as 10.96.0.10"),
            ),
        }
    }
    if headless.is_some() && !addresses.is_empty() {
        cx.error(
            last,
            "a headless Service (clusterIP: None) has no address: write None alone, or \
             the Service's addresses without None",
        );
    }
    (addresses, headless.is_some())
}

/// `spec.ports[i]` of a Service (`several`: it has more than one;
/// `earlier`: the ports before it).
fn service_port(
    cx: &mut Check,
    i: usize,
    port: dto::ServicePort,
    several: bool,
    earlier: &[ServicePort],
) -> Option<ServicePort> {
    let base = fp!("spec.ports[{i}]");
    let name = port.name.unwrap_or_default();
    if name.is_empty() && several {
        cx.error(
            base.key("name"),
            "a port name is required when a Service has several ports: name each port",
        );
    } else if !name.is_empty() && !is_dns1123_label(&name) {
        cx.error(
            base.key("name"),
            format!(
                "port name {name:?} is not a valid name: use at most 63 lower-case letters, \
                 digits and '-'"
            ),
        );
    }
    let Some(number) = port.port else {
        cx.error(
            base.key("port"),
            "port is required: the Service port number",
        );
        return None;
    };
    let number = cx.port(base.key("port"), number)?;
    tcp_only(cx, base.key("protocol"), port.protocol.as_deref());
    let protocol = app_protocol(cx, base.key("appProtocol"), port.app_protocol.as_deref());
    let target_port = match port.target_port {
        None => TargetPort::Number(number),
        Some(dto::IntOrString::Int(target)) => match cx.port(base.key("targetPort"), target) {
            Some(target) => TargetPort::Number(target),
            None => return None,
        },
        Some(dto::IntOrString::String(target)) => {
            if !is_dns1123_label(&target) || target.len() > 15 {
                cx.error(
                    base.key("targetPort"),
                    format!(
                        "targetPort {target:?} is neither a port number nor a port name (at \
                         most 15 lower-case letters, digits and '-')"
                    ),
                );
            }
            TargetPort::Name(target)
        }
    };
    if let Some(j) = earlier.iter().position(|p| p.port == number) {
        cx.error(
            base.key("port"),
            format!("port {number} is also spec.ports[{j}]: each port once"),
        );
    }
    if !name.is_empty() && earlier.iter().any(|p| p.name == name) {
        cx.error(
            base.key("name"),
            format!("port name {name} is used twice: names are unique"),
        );
    }
    Some(ServicePort {
        name,
        port: number,
        target_port,
        protocol,
    })
}

/// A port's `protocol` (of a Service or an EndpointSlice): `TCP`, or
/// absent.
pub(super) fn tcp_only(cx: &mut Check, path: FieldPath, protocol: Option<&str>) {
    match protocol {
        None | Some("TCP") => {}
        Some(other) => cx.error(
            path,
            format!(
                "protocol {other} is not supported: the kernel path routes TCP \
                 connections; use TCP"
            ),
        ),
    }
}

/// A port's `appProtocol` (of a Service or an EndpointSlice): `HTTP` for
/// `http` and `kubernetes.io/ws` (WebSocket over cleartext: HTTP/1.1 with
/// an upgrade, which the proxy splices), `HTTP2` for `kubernetes.io/h2c`
/// (the L7 path for all, as an Istio port named `http-...`), `TCP` for
/// `tcp` or absent.
pub(super) fn app_protocol(cx: &mut Check, path: FieldPath, written: Option<&str>) -> Protocol {
    match written {
        None => Protocol::Tcp,
        Some(p) if p.eq_ignore_ascii_case("http") => Protocol::Http,
        Some("kubernetes.io/ws") => Protocol::Http,
        Some("kubernetes.io/h2c") => Protocol::Http2,
        Some(p) if p.eq_ignore_ascii_case("tcp") => Protocol::Tcp,
        Some(other) => {
            cx.error(
                path,
                format!(
                    "appProtocol {other:?} is not supported yet: use http, kubernetes.io/h2c \
                     or kubernetes.io/ws (the L7 proxy), or leave it out (TCP, the kernel \
                     path)"
                ),
            );
            Protocol::Tcp
        }
    }
}

/// A `GatewayClass`.
pub(super) fn gateway_class(source: Source, spec: dto::GatewayClassSpec) -> Checked<GatewayClass> {
    let mut cx = Check::new(&source);
    let controller_name = spec.controller_name.unwrap_or_default();
    if controller_name.is_empty() {
        cx.error(
            fp!("spec.controllerName"),
            "controllerName is required (Istio's is istio.io/gateway-controller)",
        );
    }
    let warnings = cx.finish()?;
    Ok((
        GatewayClass {
            source,
            controller_name,
        },
        warnings,
    ))
}

/// A core `v1` `Namespace` (`labels`: its `metadata.labels`).
pub(super) fn namespace(
    source: Source,
    _spec: dto::NamespaceSpec,
    mut labels: Labels,
) -> Checked<Namespace> {
    let mut cx = Check::new(&source);
    cx.labels(&fp!("metadata.labels"), &labels);
    labels.insert(
        "kubernetes.io/metadata.name".to_owned(),
        source.name.clone(),
    );
    let warnings = cx.finish()?;
    Ok((Namespace { source, labels }, warnings))
}

/// A `ReferenceGrant`: the CRD's rules (`from` and `to` required, one to
/// 16 entries each; `from` names a kind and a namespace).
pub(super) fn reference_grant(
    source: Source,
    spec: dto::ReferenceGrantSpec,
) -> Checked<ReferenceGrant> {
    let mut cx = Check::new(&source);
    let mut from = Vec::new();
    let written = spec.from.unwrap_or_default();
    if written.is_empty() {
        cx.error(
            fp!("spec.from"),
            "from is required: the kind and namespace of the resources that may refer here \
             (group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: ...)",
        );
    }
    for (i, f) in written.into_iter().enumerate() {
        let path = fp!("spec.from[{i}]");
        let kind = f.kind.unwrap_or_default();
        let namespace = f.namespace.unwrap_or_default();
        if kind.is_empty() {
            cx.error(
                path.key("kind"),
                "kind is required: the kind that may refer (HTTPRoute)",
            );
        }
        if namespace.is_empty() {
            cx.error(
                path.key("namespace"),
                "namespace is required: where the referring resources are",
            );
        } else if !crate::names::is_dns1123_label(&namespace) {
            cx.error(
                path.key("namespace"),
                format!(
                    "namespace {namespace:?} is not a valid namespace name: use at most 63 \
                     lower-case letters, digits and '-'"
                ),
            );
        }
        let Some(group) = f.group else {
            cx.error(
                path.key("group"),
                "group is required: gateway.networking.k8s.io for routes",
            );
            continue;
        };
        from.push(GrantFrom {
            group,
            kind,
            namespace,
        });
    }
    let mut to = Vec::new();
    let written = spec.to.unwrap_or_default();
    if written.is_empty() {
        cx.error(
            fp!("spec.to"),
            "to is required: the kinds of this namespace that may be referred to (group: \"\", \
             kind: Service)",
        );
    }
    for (i, t) in written.into_iter().enumerate() {
        let path = fp!("spec.to[{i}]");
        let kind = t.kind.unwrap_or_default();
        if kind.is_empty() {
            cx.error(
                path.key("kind"),
                "kind is required: the kind that may be referred to (Service)",
            );
        }
        let Some(group) = t.group else {
            cx.error(path.key("group"), "group is required: \"\" for a Service");
            continue;
        };
        let group = if group == "core" {
            String::new()
        } else {
            group
        };
        to.push(GrantTo {
            group,
            kind,
            name: t.name.filter(|n| !n.is_empty()),
        });
    }
    for (field, n) in [("from", from.len()), ("to", to.len())] {
        if n > 16 {
            cx.error(
                fp!("spec.{field}"),
                format!("{field} has {n} entries: at most 16"),
            );
        }
    }
    let warnings = cx.finish()?;
    Ok((ReferenceGrant { source, from, to }, warnings))
}

/// A Gateway API `Gateway`.
pub(super) fn gateway(source: Source, spec: dto::GatewaySpec, generation: i64) -> Checked<Gateway> {
    let mut cx = Check::new(&source);
    let class_name = spec.gateway_class_name.unwrap_or_default();
    if class_name.is_empty() {
        cx.error(
            fp!("spec.gatewayClassName"),
            format!(
                "gatewayClassName is required: the class this agent serves is {}",
                super::gateway_class()
            ),
        );
    }
    let addresses = super::addresses::addresses(&mut cx, spec.addresses);
    for (field, set, why) in [
        (
            "backendTLS",
            spec.backend_tls.is_some(),
            "the proxy does not originate TLS; remove it",
        ),
        (
            "allowedListeners",
            spec.allowed_listeners.is_some(),
            "ListenerSets are not read; remove it",
        ),
    ] {
        if set {
            cx.error(
                fp!("spec.{field}"),
                format!("{field} is not supported yet: {why}"),
            );
        }
    }
    let written = spec.listeners.unwrap_or_default();
    if written.is_empty() {
        cx.error(
            fp!("spec.listeners"),
            "a Gateway needs at least one listener: add spec.listeners",
        );
    }
    let mut listeners: Vec<Listener> = Vec::new();
    for (i, listener) in written.into_iter().enumerate() {
        let namespace = source.namespace.clone();
        if let Some(listener) = self::listener(&mut cx, i, listener, &listeners, &namespace) {
            listeners.push(listener);
        }
    }
    let warnings = cx.finish()?;
    Ok((
        Gateway {
            source,
            generation,
            class_name,
            listeners,
            addresses,
        },
        warnings,
    ))
}

fn listener(
    cx: &mut Check,
    i: usize,
    listener: dto::Listener,
    earlier: &[Listener],
    namespace: &str,
) -> Option<Listener> {
    let base = fp!("spec.listeners[{i}]");
    let name = listener.name.unwrap_or_default();
    if name.is_empty() {
        cx.error(base.key("name"), "listener name is required");
    } else if !is_dns1123_subdomain(&name) {
        cx.error(
            base.key("name"),
            format!("listener name {name:?} is not a valid name: use lower-case letters, digits, '-' and '.'"),
        );
    } else if earlier.iter().any(|l| l.name == name) {
        cx.error(
            base.key("name"),
            format!("listener name {name} is used twice: names are unique in a Gateway"),
        );
    }
    let certificate_refs = super::https::listener_tls(
        cx,
        &base,
        listener.protocol.as_deref(),
        namespace,
        listener.tls,
    );
    let hostname = listener.hostname.map(|h| h.to_ascii_lowercase());
    if let Some(hostname) = &hostname
        && let Err(message) = validate_domain(hostname)
    {
        cx.error(base.key("hostname"), message);
    }
    let Some(port) = listener.port else {
        cx.error(base.key("port"), "port is required");
        return None;
    };
    let port = cx.port(base.key("port"), port)?;
    let protocol = listener_protocol(cx, &base, listener.protocol.as_deref())?;
    if protocol == Protocol::Tcp && hostname.is_some() {
        cx.error(
            base.key("hostname"),
            "a TCP listener has no hostname (a TCP connection carries none): remove it",
        );
    }
    if let Some(j) = earlier
        .iter()
        .position(|l| l.port == port && (l.protocol != protocol || protocol == Protocol::Tcp))
    {
        cx.error(
            base.key("port"),
            format!(
                "port {port} is also spec.listeners[{j}]: a port takes one TCP listener, or \
                 HTTP listeners only; use another port"
            ),
        );
    }
    let default_kind = match protocol {
        Protocol::Tcp => "TCPRoute",
        Protocol::Tls => "TLSRoute",
        _ => "HTTPRoute",
    };
    let (mut kinds, invalid_kinds, namespaces) =
        allowed_routes(cx, &base, listener.allowed_routes, protocol, default_kind);
    if kinds.is_empty() && invalid_kinds.is_empty() {
        kinds.push(default_kind);
        // An HTTP listener takes GRPCRoutes too (h2c, prior knowledge), as
        // Istio's supportedKinds say; an HTTPS one too (h2 by ALPN).
        if matches!(protocol, Protocol::Http | Protocol::Https) {
            kinds.push("GRPCRoute");
        }
    }
    Some(Listener {
        name,
        hostname,
        port,
        protocol,
        kinds,
        invalid_kinds,
        namespaces,
        certificate_refs,
    })
}

/// A listener's `protocol`: TCP, HTTP, HTTPS or TLS.
fn listener_protocol(cx: &mut Check, base: &FieldPath, protocol: Option<&str>) -> Option<Protocol> {
    Some(match protocol {
        Some("TCP") => Protocol::Tcp,
        Some("HTTP") => Protocol::Http,
        Some("TLS") => Protocol::Tls,
        Some("HTTPS") => Protocol::Https,
        Some(other @ "UDP") => {
            cx.error(
                base.key("protocol"),
                format!(
                    "listener protocol {other} is not supported yet: use TCP (TCPRoute, the \
                     kernel path), TLS with tls.mode Passthrough (TLSRoute, by SNI), HTTP or \
                     HTTPS (HTTPRoute, the L7 proxy)"
                ),
            );
            return None;
        }
        Some(other) => {
            cx.error(
                base.key("protocol"),
                format!("listener protocol {other:?} is not known: use TCP, TLS, HTTP or HTTPS"),
            );
            return None;
        }
        None => {
            cx.error(
                base.key("protocol"),
                "protocol is required: TCP, TLS, HTTP or HTTPS",
            );
            return None;
        }
    })
}

/// A listener's `allowedRoutes`: the route kinds it takes (none written:
/// empty), the kinds written that are no route kind (`group/kind`: the
/// spec's `InvalidRouteKinds`, reported in status) and the namespaces it
/// takes routes from.
fn allowed_routes(
    cx: &mut Check,
    base: &FieldPath,
    allowed: Option<dto::AllowedRoutes>,
    protocol: Protocol,
    default_kind: &str,
) -> (Vec<&'static str>, Vec<String>, FromNamespaces) {
    let mut kinds = Vec::new();
    let mut invalid = Vec::new();
    let mut from = FromNamespaces::Same;
    let Some(allowed) = allowed else {
        return (kinds, invalid, from);
    };
    if let Some(namespaces) = allowed.namespaces {
        let path = base.key("allowedRoutes").key("namespaces");
        match (namespaces.from.as_deref(), namespaces.selector) {
            (None | Some("Same"), None) => {}
            (Some("All"), None) => from = FromNamespaces::All,
            (Some("Selector"), Some(selector)) => {
                from =
                    FromNamespaces::Selector(label_selector(cx, &path.key("selector"), selector));
            }
            // The CRD's rule: a selector with from: Selector only.
            (Some("Selector"), None) => cx.error(
                path.key("selector"),
                "selector is required with from: Selector (matchLabels and/or \
                 matchExpressions on the labels of Namespace documents)",
            ),
            (None | Some("Same" | "All"), Some(_)) => cx.error(
                path.key("selector"),
                "selector is only read with from: Selector: set from: Selector, or remove \
                 the selector",
            ),
            (Some(other), _) => cx.error(
                path.key("from"),
                format!("from {other:?} is not known: use Same, All or Selector"),
            ),
        }
    }
    for (k, kind) in allowed.kinds.unwrap_or_default().into_iter().enumerate() {
        let path = base.key("allowedRoutes").key("kinds").index(k);
        let group = kind.group.unwrap_or_else(|| GROUP.to_owned());
        let name = kind.kind.unwrap_or_default();
        match (group.as_str(), name.as_str()) {
            (GROUP, "TCPRoute") if protocol == Protocol::Tcp => kinds.push("TCPRoute"),
            (GROUP, "HTTPRoute") if matches!(protocol, Protocol::Http | Protocol::Https) => {
                kinds.push("HTTPRoute");
            }
            (GROUP, "GRPCRoute") if matches!(protocol, Protocol::Http | Protocol::Https) => {
                kinds.push("GRPCRoute");
            }
            (GROUP, "TLSRoute") if protocol == Protocol::Tls => kinds.push("TLSRoute"),
            (GROUP, "TCPRoute" | "HTTPRoute" | "GRPCRoute" | "TLSRoute") => cx.error(
                path.key("kind"),
                format!(
                    "a {} listener does not take {name}: allow {default_kind}",
                    protocol.name()
                ),
            ),
            // Not a kind this listener's protocol could take: the spec
            // reports it (InvalidRouteKinds), and the listener takes the
            // valid kinds written, or none.
            _ => invalid.push(format!("{group}/{name}")),
        }
    }
    (kinds, invalid, from)
}

/// A Kubernetes `LabelSelector`, as the API server validates it.
fn label_selector(cx: &mut Check, base: &FieldPath, written: dto::LabelSelector) -> LabelSelector {
    let match_labels = written.match_labels.unwrap_or_default();
    cx.labels(&base.key("matchLabels"), &match_labels);
    let mut match_expressions = Vec::new();
    for (e, expression) in written
        .match_expressions
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let path = base.key("matchExpressions").index(e);
        let key = expression.key.unwrap_or_default();
        if key.is_empty() {
            cx.error(path.key("key"), "key is required: the label name");
            continue;
        }
        let values = expression.values.unwrap_or_default();
        let operator = match expression.operator.as_deref() {
            Some("In") => Operator::In,
            Some("NotIn") => Operator::NotIn,
            Some("Exists") => Operator::Exists,
            Some("DoesNotExist") => Operator::DoesNotExist,
            other => {
                cx.error(
                    path.key("operator"),
                    format!(
                        "operator {:?} is not known: use In, NotIn, Exists or DoesNotExist",
                        other.unwrap_or_default()
                    ),
                );
                continue;
            }
        };
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => cx.error(
                path.key("values"),
                "values is required with In and NotIn: list at least one",
            ),
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => cx.error(
                path.key("values"),
                "values must be empty with Exists and DoesNotExist: remove them",
            ),
            _ => match_expressions.push(Requirement {
                key,
                operator,
                values,
            }),
        }
    }
    LabelSelector {
        match_labels,
        match_expressions,
    }
}

/// A route's `parentRefs`.
pub(super) fn parent_refs(
    cx: &mut Check,
    written: Option<Vec<dto::ParentRef>>,
    namespace: &str,
    mesh: bool,
) -> Vec<ParentRef> {
    let written = written.unwrap_or_default();
    if written.is_empty() {
        cx.error(
            fp!("spec.parentRefs"),
            "parentRefs is required: the Gateway (and listener, by sectionName) or the Service \
             the route attaches to",
        );
    }
    let mut parents: Vec<ParentRef> = Vec::new();
    for (i, parent) in written.into_iter().enumerate() {
        let base = fp!("spec.parentRefs[{i}]");
        let group = parent.group.unwrap_or_else(|| GROUP.to_owned());
        let kind_name = parent.kind.unwrap_or_else(|| "Gateway".to_owned());
        let kind = match (group.as_str(), kind_name.as_str()) {
            (GROUP, "Gateway") => ParentKind::Gateway,
            ("" | "core", "Service") if mesh => ParentKind::Service,
            ("" | "core", "Service") => {
                cx.error(
                    base.key("kind"),
                    format!(
                        "a {} bound to a Service (GAMMA) is not supported yet: bind it to a \
                         Gateway listener",
                        cx.source().kind
                    ),
                );
                continue;
            }
            _ => {
                cx.error(
                    base.key("kind"),
                    format!(
                        "parentRef {group}/{kind_name} is not supported: use a Gateway \
                         (group {GROUP}) or a Service (group \"\")"
                    ),
                );
                continue;
            }
        };
        let name = parent.name.unwrap_or_default();
        if name.is_empty() {
            cx.error(base.key("name"), "name is required");
            continue;
        }
        let port = match parent.port {
            Some(port) => match cx.port(base.key("port"), port) {
                Some(port) => Some(port),
                None => continue,
            },
            None => None,
        };
        if kind == ParentKind::Service && parent.section_name.is_some() {
            cx.error(
                base.key("sectionName"),
                "sectionName of a Service parent is not supported yet: name the Service port \
                 with port",
            );
        }
        let parent = ParentRef {
            index: i,
            kind,
            namespace: parent.namespace.unwrap_or_else(|| namespace.to_owned()),
            name,
            section_name: parent.section_name,
            port,
        };
        if parents.iter().any(|p| {
            p.kind == parent.kind
                && p.namespace == parent.namespace
                && p.name == parent.name
                && p.section_name == parent.section_name
                && p.port == parent.port
        }) {
            cx.error(base, "this parentRef is listed twice: list it once");
            continue;
        }
        parents.push(parent);
    }
    parents
}

/// A rule's `backendRefs` (`prefix`: as [`filters`] takes it).
pub(super) fn backend_refs(
    cx: &mut Check,
    base: &FieldPath,
    written: Option<Vec<dto::BackendRef>>,
    prefix: Option<&str>,
    namespace: &str,
) -> Vec<BackendRef> {
    written
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(j, backend)| {
            backend_ref(
                cx,
                base.key("backendRefs").index(j),
                backend,
                prefix,
                namespace,
            )
        })
        .collect()
}

/// One backendRef written at `path` (or a `RequestMirror`'s, without
/// weight and filters).
fn backend_ref(
    cx: &mut Check,
    path: FieldPath,
    backend: dto::BackendRef,
    prefix: Option<&str>,
    namespace: &str,
) -> Option<BackendRef> {
    let group = backend.group.unwrap_or_default();
    let group = if group == "core" {
        String::new()
    } else {
        group
    };
    let kind = backend.kind.unwrap_or_else(|| "Service".to_owned());
    let service = group.is_empty() && kind == "Service";
    let name = backend.name.unwrap_or_default();
    if name.is_empty() {
        cx.error(path.key("name"), "name is required: the backend Service");
        return None;
    }
    let backend_namespace = backend.namespace.unwrap_or_else(|| namespace.to_owned());
    // The CRD's rule: a Service backendRef has a port.
    let port = match backend.port {
        None if service => {
            cx.error(
                path.key("port"),
                "port is required when the backend is a Service: the Service port",
            );
            return None;
        }
        None => None,
        Some(port) => Some(cx.port(path.key("port"), port)?),
    };
    let weight = backend.weight.unwrap_or(1);
    if !(0..=MAX_WEIGHT).contains(&weight) {
        cx.error(
            path.key("weight"),
            format!("weight {weight} is out of range: 0..{MAX_WEIGHT}"),
        );
        return None;
    }
    let written_filters = backend.filters.unwrap_or_default();
    super::cors::refused_in_backend_ref(cx, &path, &written_filters);
    let filters = filters(cx, &path, written_filters, prefix, namespace);
    let actions =
        (filters.redirect.is_some() || filters.rewrite.is_some() || !filters.mirrors.is_empty())
            .then(|| {
                Box::new(BackendActions {
                    redirect: filters.redirect,
                    rewrite: filters.rewrite,
                    mirrors: filters.mirrors,
                })
            });
    Some(BackendRef {
        path,
        group,
        kind,
        namespace: backend_namespace,
        name,
        port,
        weight: u32::try_from(weight).unwrap_or_default(),
        headers: filters.headers,
        actions,
    })
}

/// What a rule's (or a backendRef's) `filters` stand for.
#[derive(Default)]
pub(super) struct Filters {
    pub headers: Headers,
    pub redirect: Option<HttpRedirect>,
    pub rewrite: Option<Rewrite>,
    pub mirrors: Vec<MirrorRef>,
    /// Its `CORS` filter (`cors.rs`).
    pub cors: Option<CorsPolicy>,
}

/// The filter types a rule (or a backendRef) has at most once (the CRD's
/// CEL rules).
const ONCE_PER_RULE: [&str; 5] = [
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestRedirect",
    "URLRewrite",
    "CORS",
];

/// `filters` (of a rule or a backendRef), with the CRD's CEL rules: each
/// type's field set and no other, `RequestRedirect` and `URLRewrite` once
/// each and not together, `CORS` once. `ExtensionRef` and `ExternalAuth`
/// are refused as not supported yet (`CORS` in a backendRef is refused by
/// [`backend_ref`]). `prefix`: the value of the rule's one `PathPrefix`
/// match, for `ReplacePrefixMatch` (a backendRef's filters replace the same
/// prefix as its rule's would).
pub(super) fn filters(
    cx: &mut Check,
    base: &FieldPath,
    written: Vec<dto::HttpFilter>,
    prefix: Option<&str>,
    namespace: &str,
) -> Filters {
    let mut out = Filters::default();
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (f, filter) in written.into_iter().enumerate() {
        let path = base.key("filters").index(f);
        let kind = filter.type_.clone().unwrap_or_default();
        misplaced_fields(cx, &path, &kind, &filter);
        if ONCE_PER_RULE.contains(&kind.as_str()) {
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == kind) {
                cx.error(
                    path.key("type"),
                    format!(
                        "{kind} filter cannot be repeated: it is also {}; merge the two",
                        base.key("filters").index(*first)
                    ),
                );
                continue;
            }
            seen.push((kind.clone(), f));
        }
        match kind.as_str() {
            "RequestHeaderModifier" => match filter.request_header_modifier {
                Some(modifier) => header_modifier(
                    cx,
                    &path.key("requestHeaderModifier"),
                    modifier,
                    &mut out.headers.request,
                ),
                None => cx.error(
                    path.key("requestHeaderModifier"),
                    "requestHeaderModifier is required with type RequestHeaderModifier",
                ),
            },
            "ResponseHeaderModifier" => match filter.response_header_modifier {
                Some(modifier) => header_modifier(
                    cx,
                    &path.key("responseHeaderModifier"),
                    modifier,
                    &mut out.headers.response,
                ),
                None => cx.error(
                    path.key("responseHeaderModifier"),
                    "responseHeaderModifier is required with type ResponseHeaderModifier",
                ),
            },
            "RequestRedirect" | "URLRewrite" => path_filter(cx, &path, filter, prefix, &mut out),
            "RequestMirror" => match filter.request_mirror {
                Some(mirror) => {
                    if let Some(mirror) =
                        request_mirror(cx, &path.key("requestMirror"), mirror, namespace)
                    {
                        out.mirrors.push(mirror);
                    }
                }
                None => cx.error(
                    path.key("requestMirror"),
                    "requestMirror is required with type RequestMirror",
                ),
            },
            "CORS" => out.cors = super::cors::filter(cx, &path, filter.cors),
            "ExtensionRef" | "ExternalAuth" => cx.error(
                path.key("type"),
                format!(
                    "filter {kind} is not supported yet: RequestHeaderModifier, \
                     ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror and CORS \
                     are; remove it"
                ),
            ),
            other => cx.error(
                path.key("type"),
                format!(
                    "filter type {other:?} is not known: use RequestHeaderModifier, \
                     ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror or CORS"
                ),
            ),
        }
    }
    both_redirect_and_rewrite(cx, base, &seen);
    out
}

/// The CEL rule: a rule may specify either `RequestRedirect` or
/// `URLRewrite`, not both (`seen`: the filter types and where).
fn both_redirect_and_rewrite(cx: &mut Check, base: &FieldPath, seen: &[(String, usize)]) {
    let redirect = seen.iter().find(|(k, _)| k == "RequestRedirect");
    let rewrite = seen.iter().find(|(k, _)| k == "URLRewrite");
    if let (Some((_, r)), Some((_, w))) = (redirect, rewrite) {
        cx.error(
            base.key("filters").index(*r.max(w)).key("type"),
            format!(
                "a rule may specify either RequestRedirect or URLRewrite, but not both (also \
                 {}): a redirect answers the client, so nothing is rewritten; remove one",
                base.key("filters").index(*r.min(w))
            ),
        );
    }
}

/// The CEL rules: `filter.<field>` must be nil if the filter's `type` is
/// not its type.
fn misplaced_fields(cx: &mut Check, path: &FieldPath, kind: &str, filter: &dto::HttpFilter) {
    for (field, of, set) in [
        (
            "requestHeaderModifier",
            "RequestHeaderModifier",
            filter.request_header_modifier.is_some(),
        ),
        (
            "responseHeaderModifier",
            "ResponseHeaderModifier",
            filter.response_header_modifier.is_some(),
        ),
        (
            "requestRedirect",
            "RequestRedirect",
            filter.request_redirect.is_some(),
        ),
        ("urlRewrite", "URLRewrite", filter.url_rewrite.is_some()),
        (
            "requestMirror",
            "RequestMirror",
            filter.request_mirror.is_some(),
        ),
        ("cors", "CORS", filter.cors.is_some()),
    ] {
        if set && kind != of {
            cx.error(
                path.key(field),
                format!(
                    "{field} is set with type {kind:?}: a filter's {field} must be nil if \
                     the filter.type is not {of}; remove it or set type: {of}"
                ),
            );
        }
    }
}

/// A `RequestRedirect` or `URLRewrite` filter of a rule, into `out`.
fn path_filter(
    cx: &mut Check,
    path: &FieldPath,
    filter: dto::HttpFilter,
    prefix: Option<&str>,
    out: &mut Filters,
) {
    match (filter.request_redirect, filter.url_rewrite) {
        (Some(redirect), _) if filter.type_.as_deref() == Some("RequestRedirect") => {
            out.redirect = request_redirect(cx, &path.key("requestRedirect"), redirect, prefix);
        }
        (_, Some(rewrite)) if filter.type_.as_deref() == Some("URLRewrite") => {
            out.rewrite = url_rewrite(cx, &path.key("urlRewrite"), rewrite, prefix);
        }
        _ if filter.type_.as_deref() == Some("RequestRedirect") => cx.error(
            path.key("requestRedirect"),
            "requestRedirect is required with type RequestRedirect",
        ),
        _ => cx.error(
            path.key("urlRewrite"),
            "urlRewrite is required with type URLRewrite",
        ),
    }
}

/// The value of a rule's one `PathPrefix` match, with the CRD's defaults
/// (no matches: one match; no path: `PathPrefix /`); `None` when it has
/// several matches, or one of another type. `ReplacePrefixMatch` needs it.
fn single_prefix(matches: &[dto::HttpRouteMatch]) -> Option<String> {
    match matches {
        [] => Some("/".to_owned()),
        [m] => match &m.path {
            None => Some("/".to_owned()),
            Some(path) if path.type_.as_deref().is_none_or(|t| t == "PathPrefix") => {
                Some(path.value.clone().unwrap_or_else(|| "/".to_owned()))
            }
            Some(_) => None,
        },
        _ => None,
    }
}

/// An `HTTPPathModifier` (`filter`: `RequestRedirect` or `URLRewrite`, in
/// messages): the RE2 regex and rewrite of the new path (errors
/// recorded). `ReplaceFullPath` replaces the whole path;
/// `ReplacePrefixMatch` the rule's `PathPrefix` match (`prefix`), whole
/// path segments, as the spec's table: `/foo` to `/xyz` makes `/foo/bar`
/// `/xyz/bar` and `/foo` `/xyz`; to `/` (or empty) makes them `/bar` and
/// `/`. The query string stays.
fn path_modifier(
    cx: &mut Check,
    base: &FieldPath,
    modifier: dto::PathModifier,
    prefix: Option<&str>,
    filter: &str,
) -> Option<(String, String)> {
    let kind = modifier.type_.unwrap_or_default();
    for (field, of, set) in [
        (
            "replaceFullPath",
            "ReplaceFullPath",
            modifier.replace_full_path.is_some(),
        ),
        (
            "replacePrefixMatch",
            "ReplacePrefixMatch",
            modifier.replace_prefix_match.is_some(),
        ),
    ] {
        if set && kind != of {
            cx.error(
                base.key(field),
                format!("type must be '{of}' when {field} is set; set type: {of}"),
            );
            return None;
        }
    }
    let (field, value) = match kind.as_str() {
        "ReplaceFullPath" => ("replaceFullPath", modifier.replace_full_path),
        "ReplacePrefixMatch" => ("replacePrefixMatch", modifier.replace_prefix_match),
        "" => {
            cx.error(
                base.key("type"),
                "type is required: ReplaceFullPath or ReplacePrefixMatch",
            );
            return None;
        }
        other => {
            cx.error(
                base.key("type"),
                format!(
                    "path type {other:?} is not known: use ReplaceFullPath or ReplacePrefixMatch"
                ),
            );
            return None;
        }
    };
    let Some(value) = value else {
        cx.error(
            base.key(field),
            format!("{field} must be specified when type is set to '{kind}'"),
        );
        return None;
    };
    if value.len() > 1024
        || value
            .chars()
            .any(|c| c.is_ascii_control() || c == ' ' || c == '?' || c == '#')
    {
        cx.error(
            base.key(field),
            format!(
                "{field} {value:?} is not a path: at most 1024 characters, without spaces, \
                 control characters, '?' or '#'"
            ),
        );
        return None;
    }
    let literal = value.replace('\\', "\\\\");
    if kind == "ReplaceFullPath" {
        let with = if literal.is_empty() {
            "/".to_owned()
        } else {
            literal
        };
        return Some(("^/.*".to_owned(), with));
    }
    let Some(prefix) = prefix else {
        cx.error(
            base.key("type"),
            format!(
                "ReplacePrefixMatch needs exactly one match, of type PathPrefix (the spec: when \
                 using {filter} filter with path.type ReplacePrefixMatch, exactly one PathPrefix \
                 match must be specified); give the rule one PathPrefix match, or use \
                 ReplaceFullPath"
            ),
        );
        return None;
    };
    let prefix = regex::escape(prefix.trim_end_matches('/'));
    let with = literal.trim_end_matches('/');
    Some(if with.is_empty() {
        (format!("^{prefix}/?"), "/".to_owned())
    } else if prefix.is_empty() {
        // `PathPrefix /`: `/` becomes the replacement, `/a` gets it in front.
        ("^(?:/$|(/.+))".to_owned(), format!("{with}\\1"))
    } else {
        (format!("^{prefix}"), with.to_owned())
    })
}

/// A `RequestRedirect` filter (`prefix`: see [`path_modifier`]). The port,
/// as the spec derives it when absent: the scheme's well-known port when a
/// scheme is given, else the port the request came to (the listener's, or
/// the Service port for a mesh route); a well-known port is left out of
/// `Location`.
fn request_redirect(
    cx: &mut Check,
    base: &FieldPath,
    redirect: dto::RequestRedirect,
    prefix: Option<&str>,
) -> Option<HttpRedirect> {
    let errors = cx.errors.len();
    if let Some(scheme) = &redirect.scheme
        && scheme != "http"
        && scheme != "https"
    {
        cx.error(
            base.key("scheme"),
            format!("scheme {scheme:?} is not supported: use http or https"),
        );
    }
    let authority = redirect.hostname.map(|h| h.to_ascii_lowercase());
    if let Some(hostname) = &authority {
        if hostname.contains('*') {
            cx.error(
                base.key("hostname"),
                format!("hostname {hostname:?} is not a precise hostname: remove the wildcard"),
            );
        } else if let Err(message) = validate_domain(hostname) {
            cx.error(base.key("hostname"), message);
        }
    }
    let port = match redirect.port {
        Some(port) => cx.port(base.key("port"), port).map(RedirectPort::Number),
        None if redirect.scheme.is_some() => {
            Some(RedirectPort::Derive(DerivePort::FromProtocolDefault))
        }
        None => Some(RedirectPort::Derive(DerivePort::FromRequestPort)),
    };
    let redirect_code = match redirect.status_code {
        None => 302,
        // The CRD's enum: 301 and 302 (core), 303, 307 and 308 (extended).
        Some(code @ (301 | 302 | 303 | 307 | 308)) => u16::try_from(code).unwrap_or(302),
        Some(code) => {
            cx.error(
                base.key("statusCode"),
                format!(
                    "statusCode {code} is not a redirect the spec allows: use 301, 302 (the \
                     default), 303, 307 or 308"
                ),
            );
            302
        }
    };
    let uri_regex = match redirect.path {
        Some(modifier) => path_modifier(cx, &base.key("path"), modifier, prefix, "RequestRedirect"),
        None => None,
    };
    (cx.errors.len() == errors).then_some(HttpRedirect {
        uri: None,
        prefix_rewrite: None,
        uri_regex,
        authority,
        port,
        scheme: redirect.scheme,
        redirect_code,
    })
}

/// A `URLRewrite` filter (`prefix`: see [`path_modifier`]).
fn url_rewrite(
    cx: &mut Check,
    base: &FieldPath,
    rewrite: dto::UrlRewrite,
    prefix: Option<&str>,
) -> Option<Rewrite> {
    let errors = cx.errors.len();
    let authority = rewrite.hostname.map(|h| h.to_ascii_lowercase());
    if let Some(hostname) = &authority {
        if hostname.contains('*') {
            cx.error(
                base.key("hostname"),
                format!("hostname {hostname:?} is not a precise hostname: remove the wildcard"),
            );
        } else if let Err(message) = validate_domain(hostname) {
            cx.error(base.key("hostname"), message);
        }
    }
    let uri_regex = match rewrite.path {
        Some(modifier) => path_modifier(cx, &base.key("path"), modifier, prefix, "URLRewrite"),
        None => None,
    };
    (cx.errors.len() == errors).then_some(Rewrite {
        uri: None,
        authority,
        uri_regex,
    })
}

/// A `RequestMirror` filter: its `backendRef` (a Service needs a port)
/// and `percent` or `fraction` (not both).
fn request_mirror(
    cx: &mut Check,
    base: &FieldPath,
    mirror: dto::RequestMirror,
    namespace: &str,
) -> Option<MirrorRef> {
    let errors = cx.errors.len();
    let percentage = match (mirror.percent, mirror.fraction) {
        (Some(_), Some(_)) => {
            cx.error(
                base.key("fraction"),
                "only one of percent or fraction may be specified in HTTPRequestMirrorFilter: \
                 remove one",
            );
            None
        }
        (Some(percent), None) if !(0..=100).contains(&percent) => {
            cx.error(
                base.key("percent"),
                format!("percent {percent} is out of range: 0..100"),
            );
            None
        }
        #[allow(clippy::cast_precision_loss)]
        (Some(percent), None) => Some(percent as f64),
        (None, Some(fraction)) => {
            let numerator = fraction.numerator.unwrap_or(-1);
            let denominator = fraction.denominator.unwrap_or(100);
            if numerator < 0 {
                cx.error(
                    base.key("fraction").key("numerator"),
                    "numerator is required: 0 or more",
                );
                None
            } else if denominator < 1 {
                cx.error(
                    base.key("fraction").key("denominator"),
                    format!("denominator {denominator} is out of range: 1 or more"),
                );
                None
            } else if numerator > denominator {
                cx.error(
                    base.key("fraction"),
                    format!(
                        "numerator {numerator} is greater than denominator {denominator}: \
                         numerator must be less than or equal to denominator"
                    ),
                );
                None
            } else {
                #[allow(clippy::cast_precision_loss)]
                Some(numerator as f64 * 100.0 / denominator as f64)
            }
        }
        (None, None) => None,
    };
    let Some(written) = mirror.backend_ref else {
        cx.error(
            base.key("backendRef"),
            "backendRef is required: the Service the requests are copied to",
        );
        return None;
    };
    let written = dto::BackendRef {
        group: written.group,
        kind: written.kind,
        namespace: written.namespace,
        name: written.name,
        port: written.port,
        weight: None,
        filters: None,
    };
    let path = base.key("backendRef");
    let backend = backend_ref(cx, path, written, None, namespace)?;
    (cx.errors.len() == errors).then_some(MirrorRef {
        backend,
        percentage,
    })
}

/// `timeouts`: `request` and `backendRequest`, Gateway API durations
/// (`0s`: none), `backendRequest` no longer than a `request` that is not
/// `0s` (the CRD's CEL rule).
fn timeouts(
    cx: &mut Check,
    base: &FieldPath,
    timeouts: dto::Timeouts,
) -> (Option<Duration>, Option<Duration>) {
    let mut parse = |field: &str, value: Option<String>| {
        let value = value?;
        let parsed = duration(&value);
        if parsed.is_none() {
            cx.error(
                base.key(field),
                format!(
                    "{field} {value:?} is not a Gateway API duration: one to four numbers of \
                     at most 5 digits, each with a unit h, m, s or ms (1s, 500ms, 1m30s)"
                ),
            );
        }
        parsed
    };
    let request = parse("request", timeouts.request);
    let backend = parse("backendRequest", timeouts.backend_request);
    if let (Some(request), Some(backend)) = (request, backend)
        && !request.is_zero()
        && backend > request
    {
        cx.error(
            base.key("backendRequest"),
            format!(
                "backendRequest timeout cannot be longer than request timeout ({} > {}): \
                 shorten it, or set request to 0s (none)",
                humantime(backend),
                humantime(request)
            ),
        );
    }
    (
        request.filter(|d| !d.is_zero()),
        backend.filter(|d| !d.is_zero()),
    )
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A Gateway API `Duration` (GEP-2257): `^([0-9]{1,5}(h|m|s|ms)){1,4}$`.
pub(super) fn duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=5).contains(&digits) {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_hours(1), 1)
        } else if rest.starts_with('m') {
            (Duration::from_mins(1), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += unit * u32::try_from(number).ok()?;
        parts += 1;
    }
    (1..=4).contains(&parts).then_some(total)
}

fn header_modifier(
    cx: &mut Check,
    base: &FieldPath,
    modifier: dto::HeaderModifier,
    into: &mut HeaderOperations,
) {
    for (field, list) in [("set", modifier.set), ("add", modifier.add)] {
        for (k, header) in list.unwrap_or_default().into_iter().enumerate() {
            let path = base.key(field).index(k);
            let name = header.name.unwrap_or_default().to_ascii_lowercase();
            let value = header.value.unwrap_or_default();
            if let Err(error) = values::header_operation(&name) {
                cx.error(path.key("name"), error);
                continue;
            }
            if let Err(error) = values::header_value(&value) {
                cx.error(path.key("value"), error);
                continue;
            }
            let map = if field == "set" {
                &mut into.set
            } else {
                &mut into.add
            };
            if map.insert(name.clone(), value).is_some() {
                cx.error(
                    path.key("name"),
                    format!("header {name} is listed twice in {field}: list it once"),
                );
            }
        }
    }
    for (k, name) in modifier.remove.unwrap_or_default().into_iter().enumerate() {
        let name = name.to_ascii_lowercase();
        if let Err(error) = values::header_operation(&name) {
            cx.error(base.key("remove").index(k), error);
            continue;
        }
        into.remove.push(name);
    }
}

/// A `TCPRoute`.
pub(super) fn tcp_route(
    source: Source,
    spec: dto::TcpRouteSpec,
    generation: i64,
) -> Checked<TcpRoute> {
    let mut cx = Check::new(&source);
    let parents = parent_refs(&mut cx, spec.parent_refs, &source.namespace, false);
    let rules = spec.rules.unwrap_or_default();
    if rules.is_empty() {
        cx.error(
            fp!("spec.rules"),
            "rules is required: one rule with backendRefs",
        );
    }
    if rules.len() > 1 {
        cx.error(
            fp!("spec.rules[1]"),
            "a TCPRoute with several rules is not supported: a TCP connection has nothing to \
             choose a rule by; put every backendRef in one rule",
        );
    }
    let mut backends = Vec::new();
    if let Some(rule) = rules.into_iter().next() {
        let base = fp!("spec.rules[0]");
        backends = backend_refs(&mut cx, &base, rule.backend_refs, None, &source.namespace);
        if backends.is_empty() && cx.errors.is_empty() {
            cx.error(
                base.key("backendRefs"),
                "backendRefs is required: the Services that take the connections",
            );
        }
    }
    let warnings = cx.finish()?;
    Ok((
        TcpRoute {
            source,
            generation,
            parents,
            backends,
        },
        warnings,
    ))
}

/// An `HTTPRoute`.
pub(super) fn http_route(
    source: Source,
    spec: dto::HttpRouteSpec,
    generation: i64,
) -> Checked<HttpRoute> {
    let mut cx = Check::new(&source);
    let parents = parent_refs(&mut cx, spec.parent_refs, &source.namespace, true);
    let hostnames = route_hostnames(&mut cx, spec.hostnames);
    let mut rules = Vec::new();
    let written = spec.rules.unwrap_or_default();
    for (i, rule) in written.into_iter().enumerate() {
        let base = fp!("spec.rules[{i}]");
        if rule.session_persistence.is_some() {
            cx.error(
                base.key("sessionPersistence"),
                "sessionPersistence is not supported yet: remove it (a DestinationRule's \
                 consistentHash keeps a client on one endpoint)",
            );
        }
        let retry = rule
            .retry
            .and_then(|written| super::retry::retry(&mut cx, &base.key("retry"), written));
        let (timeout, backend_timeout) = match rule.timeouts {
            Some(written) => timeouts(&mut cx, &base.key("timeouts"), written),
            None => (None, None),
        };
        let written_matches = rule.matches.unwrap_or_default();
        let prefix = single_prefix(&written_matches);
        let mut matches = Vec::new();
        for (k, m) in written_matches.into_iter().enumerate() {
            if let Some(m) = route_match(&mut cx, &base.key("matches").index(k), m) {
                matches.push(m);
            }
        }
        let filters = filters(
            &mut cx,
            &base,
            rule.filters.unwrap_or_default(),
            prefix.as_deref(),
            &source.namespace,
        );
        let backends = backend_refs(
            &mut cx,
            &base,
            rule.backend_refs,
            prefix.as_deref(),
            &source.namespace,
        );
        rules.push(HttpRouteRule {
            matches,
            backends,
            headers: filters.headers,
            redirect: filters.redirect,
            rewrite: filters.rewrite,
            mirrors: filters.mirrors,
            cors: filters.cors,
            timeout,
            backend_timeout,
            retry,
        });
    }
    if rules.is_empty() {
        // The spec's default: one rule, every request, no backend (500).
        rules.push(HttpRouteRule {
            matches: Vec::new(),
            backends: Vec::new(),
            headers: Headers::default(),
            redirect: None,
            rewrite: None,
            mirrors: Vec::new(),
            cors: None,
            timeout: None,
            backend_timeout: None,
            retry: None,
        });
    }
    let warnings = cx.finish()?;
    Ok((
        HttpRoute {
            source,
            generation,
            parents,
            hostnames,
            rules,
        },
        warnings,
    ))
}

/// An HTTPRoute's or a GRPCRoute's `hostnames`, lowercase.
pub(super) fn route_hostnames(cx: &mut Check, written: Option<Vec<String>>) -> Vec<String> {
    let mut hostnames = Vec::new();
    for (h, hostname) in written.unwrap_or_default().into_iter().enumerate() {
        let hostname = hostname.to_ascii_lowercase();
        if hostname == "*" {
            cx.error(
                fp!("spec.hostnames[{h}]"),
                "hostname * is not valid: leave hostnames out to match every host",
            );
        } else if let Err(message) = validate_domain(&hostname) {
            cx.error(fp!("spec.hostnames[{h}]"), message);
        } else {
            hostnames.push(hostname);
        }
    }
    hostnames
}

/// A match's `headers` (names lowercase, each once).
pub(super) fn header_matches(
    cx: &mut Check,
    base: &FieldPath,
    written: Option<Vec<dto::ValueMatch>>,
) -> BTreeMap<String, StringMatch> {
    let mut headers = BTreeMap::new();
    for (h, header) in written.unwrap_or_default().into_iter().enumerate() {
        let path = base.key("headers").index(h);
        if let Some((name, value)) = value_match(cx, &path, header, "header") {
            let name = name.to_ascii_lowercase();
            if let Err(error) = values::header_match_name(&name) {
                cx.error(path.key("name"), error);
            } else if headers.insert(name.clone(), value).is_some() {
                cx.error(
                    path.key("name"),
                    format!("header {name} is matched twice: match it once"),
                );
            }
        }
    }
    headers
}

/// One `matches[]` entry.
fn route_match(cx: &mut Check, base: &FieldPath, m: dto::HttpRouteMatch) -> Option<RouteMatch> {
    let errors = cx.errors.len();
    let mut common = HttpMatch::default();
    let headers = header_matches(cx, base, m.headers);
    let mut query_params = BTreeMap::new();
    for (q, param) in m.query_params.unwrap_or_default().into_iter().enumerate() {
        let path = base.key("queryParams").index(q);
        if let Some((name, value)) = value_match(cx, &path, param, "query parameter")
            && query_params.insert(name.clone(), value).is_some()
        {
            cx.error(
                path.key("name"),
                format!("query parameter {name} is matched twice: match it once"),
            );
        }
    }
    common.headers = headers;
    common.query_params = query_params;
    if let Some(method) = m.method {
        const METHODS: [&str; 9] = [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ];
        if METHODS.contains(&method.as_str()) {
            common.method = Some(StringMatch::Exact(method));
        } else {
            cx.error(
                base.key("method"),
                format!("method {method:?} is not one of {}", METHODS.join(", ")),
            );
        }
    }
    let (kind, value, uris) = path_match(cx, base, m.path);
    if cx.errors.len() > errors {
        return None;
    }
    let rank = match kind.as_str() {
        "Exact" => 3,
        "RegularExpression" => 2,
        _ => 1,
    };
    let precedence = Precedence {
        path_rank: std::cmp::Reverse(rank),
        path_length: std::cmp::Reverse(value.len()),
        grpc_method: std::cmp::Reverse(0),
        method: std::cmp::Reverse(common.method.is_some()),
        headers: std::cmp::Reverse(common.headers.len()),
        query_params: std::cmp::Reverse(common.query_params.len()),
    };
    let matches = uris
        .into_iter()
        .map(|uri| HttpMatch {
            uri,
            ..common.clone()
        })
        .collect();
    Some(RouteMatch {
        matches,
        precedence,
    })
}

/// A match's `path`: its type and value (absent: `PathPrefix /`), and the
/// `uri` matches it stands for (errors recorded).
fn path_match(
    cx: &mut Check,
    base: &FieldPath,
    path: Option<dto::PathMatch>,
) -> (String, String, Vec<Option<StringMatch>>) {
    let (kind, value) = match path {
        Some(path) => (
            path.type_.unwrap_or_else(|| "PathPrefix".to_owned()),
            path.value.unwrap_or_else(|| "/".to_owned()),
        ),
        None => ("PathPrefix".to_owned(), "/".to_owned()),
    };
    let path = base.key("path");
    let uris: Vec<Option<StringMatch>> = match kind.as_str() {
        "Exact" | "PathPrefix" if !value.starts_with('/') => {
            cx.error(
                path.key("value"),
                format!("path {value:?} must start with /"),
            );
            Vec::new()
        }
        "Exact" => vec![Some(StringMatch::Exact(value.clone()))],
        "PathPrefix" => {
            // Whole path segments: `/a` matches `/a`, `/a/` and `/a/b`, not
            // `/ab`; a trailing `/` is ignored.
            let trimmed = value.trim_end_matches('/');
            if trimmed.is_empty() {
                vec![None]
            } else {
                vec![
                    Some(StringMatch::Exact(trimmed.to_owned())),
                    Some(StringMatch::Prefix(format!("{trimmed}/"))),
                ]
            }
        }
        "RegularExpression" => {
            if let Err(error) = values::regex(&value, "path") {
                cx.error(path.key("value"), error);
            }
            vec![Some(StringMatch::Regex(value.clone()))]
        }
        other => {
            cx.error(
                path.key("type"),
                format!(
                    "path type {other:?} is not known: use Exact, PathPrefix or RegularExpression"
                ),
            );
            Vec::new()
        }
    };
    (kind, value, uris)
}

/// The precedence of a rule without `matches`: `PathPrefix /`, nothing
/// else.
pub(super) fn default_precedence() -> Precedence {
    Precedence {
        path_rank: std::cmp::Reverse(1),
        path_length: std::cmp::Reverse(1),
        grpc_method: std::cmp::Reverse(0),
        method: std::cmp::Reverse(false),
        headers: std::cmp::Reverse(0),
        query_params: std::cmp::Reverse(0),
    }
}

/// A header or query parameter match: its name and how its value matches.
fn value_match(
    cx: &mut Check,
    path: &FieldPath,
    m: dto::ValueMatch,
    what: &str,
) -> Option<(String, StringMatch)> {
    let name = m.name.unwrap_or_default();
    if name.is_empty() {
        cx.error(path.key("name"), format!("the {what} name is required"));
        return None;
    }
    let Some(value) = m.value else {
        cx.error(path.key("value"), "value is required");
        return None;
    };
    match m.type_.as_deref() {
        None | Some("Exact") => Some((name, StringMatch::Exact(value))),
        Some("RegularExpression") => match values::regex(&value, what) {
            Ok(()) => Some((name, StringMatch::Regex(value))),
            Err(error) => {
                cx.error(path.key("value"), error);
                None
            }
        },
        Some(other) => {
            cx.error(
                path.key("type"),
                format!("match type {other:?} is not known: use Exact or RegularExpression"),
            );
            None
        }
    }
}
