//! `resolve` reports what it finds at the field paths of the Istio
//! resources a Gateway API document stands for (`spec.tcp[0].route[1]`);
//! here they are moved to the fields as written (`spec.rules[0]
//! .backendRefs[1]`), with their lines.

use super::{GATEWAY_KIND, Origin};
use crate::{
    error::{ConfigError, FieldPath, ResourceId, Segment, Warning, fp},
    resource::Resource,
    source::Source,
};

/// Moves the errors and warnings about `translated` resources to the
/// fields of the documents they came from.
pub(crate) fn place(translated: &[Resource], errors: &mut [ConfigError], warnings: &mut [Warning]) {
    // The source of a document, and the origin of its `VirtualService`
    // (a Service stands for a ServiceEntry and a VirtualService).
    let find = |resource: Option<&ResourceId>| -> Option<(&Source, Option<&Origin>)> {
        let id = resource?;
        let mut found = None;
        for r in translated {
            let (source, origin) = match r {
                Resource::VirtualService(vs) => (&vs.source, vs.origin.as_deref()),
                Resource::ServiceEntry(entry) => (&entry.source, None),
                Resource::Gateway(gateway) => (&gateway.source, None),
                _ => continue,
            };
            if source.id() != *id {
                continue;
            }
            if origin.is_some() {
                return Some((source, origin));
            }
            found = Some((source, None));
        }
        found
    };
    for error in errors.iter_mut() {
        if let Some((source, origin)) = find(error.resource.as_deref()) {
            let source = owner(source, origin, &error.field);
            error.field = written(source.kind, origin, &error.field);
            error.line = source.line(&error.field);
            (error.file, error.document, error.resource) = at(source);
        }
    }
    for warning in warnings.iter_mut() {
        if let Some((source, origin)) = find(warning.resource.as_deref()) {
            let source = owner(source, origin, &warning.field);
            warning.field = written(source.kind, origin, &warning.field);
            warning.line = source.line(&warning.field);
            (warning.file, warning.document, warning.resource) = at(source);
        }
    }
}

/// The document a message about `path` of a translated resource belongs
/// in: for a rule of HTTPRoutes merged on one host, the route it was
/// written in; else `source`.
fn owner<'a>(source: &'a Source, origin: Option<&'a Origin>, path: &FieldPath) -> &'a Source {
    let rule = match (path.segments().get(1), path.segments().get(2)) {
        (Some(Segment::Key(list)), Some(Segment::Index(i))) if list == "http" => Some(*i),
        _ => None,
    };
    rule.and_then(|i| origin?.owner_source("http", i))
        .unwrap_or(source)
}

/// Where a message about `source` is: its file, document and id.
fn at(source: &Source) -> (std::path::PathBuf, Option<usize>, Option<Box<ResourceId>>) {
    (
        source.file.to_path_buf(),
        Some(source.document),
        Some(Box::new(source.id())),
    )
}

/// The field as written of `path`, a path of the Istio resource a document
/// of `kind` stands for (`origin`: of its `VirtualService`).
fn written(kind: &str, origin: Option<&Origin>, path: &FieldPath) -> FieldPath {
    let key = |k: usize| match path.segments().get(k) {
        Some(Segment::Key(key)) => Some(key.as_str()),
        _ => None,
    };
    let index = |k: usize| match path.segments().get(k) {
        Some(Segment::Index(i)) => Some(*i),
        _ => None,
    };
    if key(0) != Some("spec") {
        return path.clone();
    }
    let service = kind == "Service";
    match (key(1), index(2)) {
        (Some(list @ ("tcp" | "http" | "tls")), Some(i)) => {
            let Some(origin) = origin else {
                return fp!("spec");
            };
            if key(3) == Some("route")
                && let Some(j) = index(4)
                && let Some(backend) = origin.backend(list, i, j)
            {
                let rest = match (key(5), key(6)) {
                    (Some("destination"), Some("host")) if !service => Some("name"),
                    (Some("destination"), Some("port")) if !service => Some("port"),
                    (Some("weight"), _) if !service => Some("weight"),
                    _ => None,
                };
                return rest.map_or_else(|| backend.clone(), |rest| backend.key(rest));
            }
            origin.path(list, i).unwrap_or_else(|| fp!("spec"))
        }
        (Some("tcp" | "http"), None) if service => fp!("spec.ports"),
        (Some("tcp" | "http" | "tls"), None) => fp!("spec.rules"),
        (Some("hosts" | "gateways"), _) if !service && kind != GATEWAY_KIND => {
            fp!("spec.parentRefs")
        }
        (Some("hosts"), _) => fp!("metadata.name"),
        (Some("addresses"), _) if service => fp!("spec.clusterIP"),
        (Some("ports"), Some(i)) if service => fp!("spec.ports[{i}]"),
        (Some("servers"), Some(i)) if kind == GATEWAY_KIND => {
            let listener = fp!("spec.listeners[{i}]");
            if key(3) == Some("port") {
                listener.key("port")
            } else {
                listener
            }
        }
        (Some("resolution" | "location" | "endpoints" | "workloadSelector" | "exportTo"), _) => {
            fp!("spec")
        }
        (Some("selector"), _) if kind == GATEWAY_KIND => fp!("spec"),
        // Already a field as written (`spec.rules[0]`, `spec.ports[0]`).
        _ => path.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_the_istio_form_are_moved_to_the_fields_as_written() {
        let origin = Origin {
            tcp: vec![("rules[0]".into(), fp!("spec.rules[0]"))],
            http: vec![("rules[1]".into(), fp!("spec.rules[1]"))],
            tcp_backends: vec![vec![
                fp!("spec.rules[0].backendRefs[0]"),
                fp!("spec.rules[0].backendRefs[1]"),
            ]],
            http_backends: vec![vec![fp!("spec.rules[1].backendRefs[0]")]],
            ..Origin::default()
        };
        let cases = [
            (
                "TCPRoute",
                "spec.tcp[0].route[1].destination.host",
                "spec.rules[0].backendRefs[1].name",
            ),
            (
                "TCPRoute",
                "spec.tcp[0].route[0].weight",
                "spec.rules[0].backendRefs[0].weight",
            ),
            ("TCPRoute", "spec.tcp[0]", "spec.rules[0]"),
            ("TCPRoute", "spec.tcp[0].match[0].port", "spec.rules[0]"),
            (
                "HTTPRoute",
                "spec.http[0].route[0].destination",
                "spec.rules[1].backendRefs[0]",
            ),
            ("HTTPRoute", "spec.hosts[0]", "spec.parentRefs"),
            ("HTTPRoute", "spec.gateways[0]", "spec.parentRefs"),
            ("Service", "spec.addresses", "spec.clusterIP"),
            ("Service", "spec.ports[1].name", "spec.ports[1]"),
            ("Service", "spec.hosts[0]", "metadata.name"),
            (
                GATEWAY_KIND,
                "spec.servers[2].port",
                "spec.listeners[2].port",
            ),
            (GATEWAY_KIND, "spec.servers[2]", "spec.listeners[2]"),
            ("HTTPRoute", "metadata.name", "metadata.name"),
            ("TCPRoute", "spec.rules[0]", "spec.rules[0]"),
            ("Service", "spec.resolution", "spec"),
        ];
        for (kind, path, want) in cases {
            assert_eq!(
                written(kind, Some(&origin), &fp!("{path}")),
                fp!("{want}"),
                "{kind} {path}"
            );
        }
    }
}
