//! A document's envelope before its kind's checks: a mapping, with a known
//! `apiVersion` and `kind`; then the serde pass into the kind's spec, and
//! `metadata` (name, namespace).

use std::{borrow::Cow, path::Path, sync::Arc};

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use crate::{
    common::{KINDS, ROLLOUT_API_VERSION, api_versions_of},
    dto,
    error::{ConfigError, FieldPath, ResourceId, fp, one_line},
    lines::LineIndex,
    names::{is_dns1123_label, is_dns1123_subdomain},
    source::Source,
};

/// The envelope of one non-empty YAML document: a mapping with a known
/// `apiVersion` and `kind`. Its place (for messages), its kind, the
/// document with its merges applied.
pub(super) fn envelope<'a, 'v>(
    file: &'a Path,
    document: usize,
    mut value: Cow<'v, Value>,
    lines: &'a LineIndex,
) -> Result<(Place<'a>, &'static str, Cow<'v, Value>), Vec<ConfigError>> {
    let mut place = Place {
        file,
        document,
        resource: None,
        lines,
    };
    if !value.is_mapping() {
        return Err(vec![place.error(
            FieldPath::root(),
            "a document must be a mapping: one resource (an Istio kind or a Rollout) with \
             apiVersion, kind, metadata and spec",
        )]);
    }
    // A borrowed document is copied only when it has merge keys to apply.
    if matches!(value, Cow::Owned(_)) || has_merge_keys(&value) {
        value.to_mut().apply_merge().map_err(|error| {
            vec![place.error(FieldPath::root(), format!("invalid YAML merge: {error}"))]
        })?;
    }

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
    let versions = api_versions_of(known_kind.unwrap_or_default());
    if !versions.contains(&api_version) {
        let message = match known_kind {
            Some(kind @ "Rollout") => format!(
                "unsupported apiVersion {api_version:?} for a {kind}: use {}",
                versions[0]
            ),
            Some(kind) if api_version == ROLLOUT_API_VERSION => format!(
                "unsupported apiVersion {api_version:?} for a {kind}: it is the Rollout's; \
                 use networking.istio.io/v1 (v1beta1 and v1alpha3 are accepted too)"
            ),
            _ => format!(
                "unsupported apiVersion {api_version:?}: use networking.istio.io/v1 (v1beta1 \
                 and v1alpha3 are accepted too)"
            ),
        };
        errors.push(place.error(fp!("apiVersion"), message));
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

    Ok((place, kind, value))
}

/// Where a document is, before it is known to be a valid resource.
pub(crate) struct Place<'a> {
    file: &'a Path,
    document: usize,
    resource: Option<Box<ResourceId>>,
    lines: &'a LineIndex,
}

impl<'a> Place<'a> {
    /// A document of a kind this module does not read (`gateway_api`).
    pub(crate) fn new(
        file: &'a Path,
        document: usize,
        resource: Option<ResourceId>,
        lines: &'a LineIndex,
    ) -> Self {
        Self {
            file,
            document,
            resource: resource.map(Box::new),
            lines,
        }
    }

    pub(crate) fn error(&self, path: FieldPath, message: impl Into<String>) -> ConfigError {
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

/// Whether `value` has a YAML merge key (`<<`) anywhere: only then does
/// `apply_merge` change it.
fn has_merge_keys(value: &Value) -> bool {
    match value {
        Value::Mapping(map) => map
            .iter()
            .any(|(k, v)| k.as_str() == Some("<<") || has_merge_keys(v)),
        Value::Sequence(items) => items.iter().any(has_merge_keys),
        Value::Tagged(tagged) => has_merge_keys(&tagged.value),
        _ => false,
    }
}

/// The serde pass over the document, then `metadata`. A borrowed document
/// is read in place (no copy of it is made).
pub(crate) fn typed<S: DeserializeOwned>(
    place: &Place,
    kind: &'static str,
    value: Cow<'_, Value>,
    lines: &Arc<LineIndex>,
) -> Result<(Source, S), Vec<ConfigError>> {
    let parsed: Result<dto::Document<S>, _> = match value {
        Cow::Owned(value) => serde_path_to_error::deserialize(value),
        Cow::Borrowed(value) => serde_path_to_error::deserialize(value),
    };
    let document = parsed.map_err(|error| {
        let path = FieldPath::from(error.path());
        vec![place.error(path, serde_message(&error.into_inner()))]
    })?;
    let source = source_of(place, kind, document.metadata, lines)?;
    Ok((source, document.spec))
}

/// The [`Source`] of a document from its `metadata`, checked: the name
/// and namespace Kubernetes would accept (for the kinds without `spec`,
/// an `EndpointSlice`, which are read with their own document type).
pub(crate) fn source_of(
    place: &Place,
    kind: &'static str,
    metadata: dto::Metadata,
    lines: &Arc<LineIndex>,
) -> Result<Source, Vec<ConfigError>> {
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
    let creation_timestamp = match metadata.creation_timestamp {
        Some(serde_yaml_ng::Value::String(text)) => Some(text),
        _ => None,
    };
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
        creation_timestamp,
        file: Arc::clone(lines.path()),
        document: place.document,
        lines: Arc::clone(lines.file()),
    };
    Ok(source)
}

/// serde's message, with a hint where serde gives none.
pub(crate) fn serde_message(error: &serde_yaml_ng::Error) -> String {
    let message = error.to_string();
    if message.starts_with("unknown field") {
        format!("{message}: fix the spelling or remove the field")
    } else if message.starts_with("unknown variant") {
        format!("{message}: use one of these values")
    } else {
        message
    }
}

/// Whether `metadata.labels` has Istio's `istio.io/use-waypoint` set to a
/// waypoint (not empty, not `none`): Istio's `usesWaypoint`.
pub(super) fn uses_waypoint(value: &Value) -> bool {
    value
        .get("metadata")
        .and_then(|metadata| metadata.get("labels"))
        .and_then(|labels| labels.get("istio.io/use-waypoint"))
        .and_then(Value::as_str)
        .is_some_and(|waypoint| !waypoint.is_empty() && !waypoint.eq_ignore_ascii_case("none"))
}
