//! Istio networking YAML -> the validated [`RoutingModel`].
//!
//! Three steps, each with errors that name the file, the document, the
//! resource, the field (`spec.tcp[0].route[1].weight`) and its line:
//!
//! 1. [`parse_file`]: each YAML document through serde into the DTOs of
//!    `dto` (strict: a misspelt field is an error), then checked on its own
//!    into a [`Resource`] (Istio's validation, Istio's messages).
//! 2. [`load_dir`]: every rules file of a directory.
//! 3. [`resolve`]: the checks across resources (hosts, subsets, ports, one
//!    route per service address), and the [`RoutingModel`].
//!
//! Lines: serde does not place valid values, so `lines` indexes each
//! document's field paths by line with a second, event-level parse.

mod dto;
mod error;
mod lines;
mod resolve;
mod resource;
#[cfg(test)]
mod tests;

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Deserialize;
use tracing::debug;

pub use self::{
    error::{ConfigError, FieldPath, ResourceId, Segment},
    resolve::resolve,
    resource::{
        API_VERSIONS, DestinationRule, Gateway, GatewayPort, HashKey, KINDS, L4Match, Labels,
        LbPolicy, LoadBalancer, Location, Protocol, Resolution, Resource, RouteDestination, Server,
        ServiceEntry, ServicePort, SimpleLb, Source, Subset, TcpRule, VirtualService,
        WorkloadEndpoint, WorkloadEntry,
    },
};
#[cfg(doc)]
use crate::model::RoutingModel;

/// One parsed rules file: its resources in document order.
#[derive(Clone, Debug)]
pub struct RulesFile {
    pub path: PathBuf,
    pub resources: Vec<Resource>,
}

/// Parses every document of one rules file (`path` is for messages).
/// Empty documents are skipped; the first error ends the parse.
pub fn parse_file(path: &Path, text: &str) -> Result<RulesFile, ConfigError> {
    let lines = lines::index_documents(text);
    let mut resources = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let number = i + 1;
        // The iterator keeps yielding the same error: stop at the first.
        let value = serde_yaml_ng::Value::deserialize(document).map_err(|error| ConfigError {
            document: Some(number),
            line: error.location().map(|location| location.line()),
            ..ConfigError::file(path, format!("invalid YAML: {error}"))
        })?;
        if value.is_null() {
            continue;
        }
        let index = Arc::new(lines.get(i).cloned().unwrap_or_default());
        let resource = resource::parse_document(path, number, value, &index)?;
        if let Resource::VirtualService(vs) = &resource
            && (vs.has_http || vs.has_tls)
        {
            debug!(
                virtual_service = %vs.source.id(),
                "http and tls rules are not implemented yet: ignored"
            );
        }
        resources.push(resource);
    }
    Ok(RulesFile {
        path: path.to_owned(),
        resources,
    })
}

/// Reads and parses every `*.yaml` / `*.yml` file directly in `dir` (sorted
/// by name; not recursive; hidden files skipped). Returns all files that
/// parsed, and the errors of those that did not (one error per bad file).
pub fn load_dir(dir: &Path) -> (Vec<RulesFile>, Vec<ConfigError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            errors.push(ConfigError::file(
                dir,
                format!("cannot read the rules directory: {error}"),
            ));
            return (files, errors);
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => paths.push(entry.path()),
            Err(error) => errors.push(ConfigError::file(
                dir,
                format!("cannot list the rules directory: {error}"),
            )),
        }
    }
    paths.retain(|path| is_rules_file(path));
    paths.sort();
    for path in paths {
        let parsed = fs::read_to_string(&path)
            .map_err(|error| ConfigError::file(&path, format!("cannot read the file: {error}")))
            .and_then(|text| parse_file(&path, &text));
        match parsed {
            Ok(file) => files.push(file),
            Err(error) => errors.push(error),
        }
    }
    (files, errors)
}

/// A visible `*.yaml` / `*.yml` file (or a link to one: Kubernetes mounts
/// `ConfigMap`s as links).
pub fn is_rules_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return false;
    };
    let yaml = path
        .extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml"));
    !name.starts_with('.') && yaml && path.is_file()
}
