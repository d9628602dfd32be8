//! Resources applied with `traffic-shift apply`: kind names as the CLI
//! takes them, what `apply` / `delete` would change ([`plan_apply`],
//! [`plan_delete`]: pure, so they are tested without an agent), and the
//! [`Store`] that persists the applied set under `--state-dir`.
//!
//! A resource is identified by (kind, namespace, name), as in Kubernetes.
//! The agent's rules in force are the rules directory's files and the
//! applied set together, resolved as one; each resource has one owner:
//! `apply` and `delete` refuse a resource the rules directory defines, and
//! a rules file that defines an applied resource is refused like any file
//! that does not resolve (the resource stays as applied).
//!
//! Persistence: the applied set is one multi-document YAML file,
//! `<state-dir>/applied.yaml`, itself a valid rules file (`traffic-shift
//! validate -f` reads it), each document as `get -o yaml` shows it
//! (`metadata.creationTimestamp` set). It is replaced whole on every
//! change: written to a temporary file, fsynced, renamed over the old one,
//! and the directory fsynced; a crash leaves the old set or the new one.
//! At start the agent reads it before its first apply; if it cannot be
//! read or parsed the agent refuses to start (see [`StateError::Corrupt`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    fs::File,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

use traffic_shift_config::{self as config, FieldPath, Resource, RulesFile};

use crate::admin::{Action, Change, FileText};

pub mod first_seen;
mod named;
pub mod transitions;

use named::Named;

/// The names of a kind on the command line: `get vs`, `get virtualservices`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindNames {
    /// The kind, as in `kind:` (an Istio kind, or `Rollout`).
    pub kind: &'static str,
    /// kubectl's resource name, also how `apply` names a resource
    /// (`virtualservice/tcp-echo`).
    pub singular: &'static str,
    pub plural: &'static str,
    /// Istio's short name (Argo Rollouts' for `Rollout`).
    pub short: &'static str,
}

/// Every kind, in the order `unknown kind` lists them.
pub const KIND_NAMES: [KindNames; 12] = [
    KindNames {
        kind: "VirtualService",
        singular: "virtualservice",
        plural: "virtualservices",
        short: "vs",
    },
    KindNames {
        kind: "DestinationRule",
        singular: "destinationrule",
        plural: "destinationrules",
        short: "dr",
    },
    KindNames {
        kind: "Gateway",
        singular: "gateway",
        plural: "gateways",
        short: "gw",
    },
    KindNames {
        kind: "ServiceEntry",
        singular: "serviceentry",
        plural: "serviceentries",
        short: "se",
    },
    KindNames {
        kind: "WorkloadEntry",
        singular: "workloadentry",
        plural: "workloadentries",
        short: "we",
    },
    KindNames {
        kind: "Rollout",
        singular: "rollout",
        plural: "rollouts",
        short: "ro",
    },
    // The Gateway API kinds with a status (their CRDs' names; `gateway`
    // alone is Istio's).
    KindNames {
        kind: "HTTPRoute",
        singular: "httproute",
        plural: "httproutes",
        short: "httproute",
    },
    KindNames {
        kind: "GRPCRoute",
        singular: "grpcroute",
        plural: "grpcroutes",
        short: "grpcroute",
    },
    KindNames {
        kind: "TCPRoute",
        singular: "tcproute",
        plural: "tcproutes",
        short: "tcproute",
    },
    KindNames {
        kind: "TLSRoute",
        singular: "tlsroute",
        plural: "tlsroutes",
        short: "tlsroute",
    },
    KindNames {
        kind: config::GATEWAY_KIND,
        singular: "gateway.gateway.networking.k8s.io",
        plural: "gateways.gateway.networking.k8s.io",
        short: "gtw",
    },
    // A gateway's certificate: `get` shows its data keys, never a value.
    KindNames {
        kind: "Secret",
        singular: "secret",
        plural: "secrets",
        short: "secret",
    },
];

/// A resource type the CLI does not know.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown resource type {0:?}: use one of {list}", list = kind_list())]
pub struct UnknownKind(pub String);

fn kind_list() -> String {
    KIND_NAMES
        .iter()
        .map(|k| {
            if k.short == k.singular {
                k.singular.to_owned()
            } else {
                format!("{} ({})", k.singular, k.short)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A kind as written on the command line, in any case: the kind,
/// kubectl's singular or plural, the short name, or any of these with its
/// API group (`.networking.istio.io`, `.rollouts.traffic-shift.io` for a
/// `Rollout`).
pub fn parse_kind(text: &str) -> Result<KindNames, UnknownKind> {
    let lower = text.to_ascii_lowercase();
    let (name, rollouts_group) = match lower.strip_suffix(".networking.istio.io") {
        Some(name) => (name, Some(false)),
        None => match lower.strip_suffix(".rollouts.traffic-shift.io") {
            Some(name) => (name, Some(true)),
            None => (lower.as_str(), None),
        },
    };
    KIND_NAMES
        .into_iter()
        .find(|k| [k.singular, k.plural, k.short].contains(&name))
        .filter(|k| rollouts_group.is_none_or(|rollouts| rollouts == (k.kind == "Rollout")))
        .ok_or_else(|| UnknownKind(text.to_owned()))
}

/// The names of a kind (one of [`config::KINDS`]).
pub fn names_of(kind: &str) -> Option<KindNames> {
    KIND_NAMES.into_iter().find(|k| k.kind == kind)
}

/// kubectl's name of a resource, as `apply` prints it: `virtualservice/tcp-echo`.
pub fn display_name(kind: &str, name: &str) -> String {
    let singular = names_of(kind).map_or_else(|| kind.to_ascii_lowercase(), |k| k.singular.into());
    format!("{singular}/{name}")
}

/// What identifies a resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn of(resource: &Resource) -> Self {
        Self {
            kind: resource.kind(),
            namespace: resource.namespace().to_owned(),
            name: resource.name().to_owned(),
        }
    }
}

impl fmt::Display for Key {
    /// `VirtualService default/tcp-echo`, as errors name resources.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The YAML documents of a text, by position: `documents(text)[n - 1]` is
/// document `n` as `config` numbers them (`None`: empty). Stops at a
/// syntax error (`config` has refused such a text already).
pub fn documents(text: &str) -> Vec<Option<Yaml>> {
    use serde::Deserialize as _;
    let mut documents = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        match Yaml::deserialize(document) {
            Ok(Yaml::Null) => documents.push(None),
            Ok(value) => documents.push(Some(value)),
            Err(_) => break,
        }
    }
    documents
}

/// The `metadata` fields Kubernetes sets: not part of what is applied, so
/// `kubectl get -o yaml` output applies as `unchanged`.
const SERVER_FIELDS: [&str; 7] = [
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
];

/// A document that cannot be stored.
#[derive(Debug, thiserror::Error)]
pub enum NormalizeError {
    #[error("invalid YAML merge: {0}")]
    Merge(#[source] serde_yaml_ng::Error),
    #[error("the document cannot be stored as JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("a document must be a mapping")]
    NotAMapping,
}

/// A document as it is stored and shown: merge keys (`<<`) expanded, as
/// JSON (keys sorted, as kubectl prints them), `metadata.namespace` written
/// out, and without what Kubernetes sets (`status`, [`SERVER_FIELDS`]).
pub fn normalize(mut document: Yaml, namespace: &str) -> Result<Json, NormalizeError> {
    expand_merges(&mut document)?;
    let mut json = serde_json::to_value(&document).map_err(NormalizeError::Json)?;
    let Some(object) = json.as_object_mut() else {
        return Err(NormalizeError::NotAMapping);
    };
    object.remove("status");
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| Json::Object(serde_json::Map::new()));
    if let Some(metadata) = metadata.as_object_mut() {
        for field in SERVER_FIELDS {
            metadata.remove(field);
        }
        metadata.insert("namespace".into(), Json::String(namespace.into()));
    }
    Ok(json)
}

/// [`normalize`] of a resource applied for the first time, stamped with
/// its creation time, straight to the text it is stored as: the text of
/// `Document::new(&with_timestamp(normalize(..)?, created_ms))` without the
/// JSON tree in between (building and dropping that tree was a tenth of an
/// `apply` of 10 000 services). A document that is not a plain mapping, or
/// has a key that is not a string (JSON makes one of it), goes that way.
fn normalize_new(
    mut document: Yaml,
    namespace: &str,
    created_ms: u64,
) -> Result<Document, NormalizeError> {
    expand_merges(&mut document)?;
    if !string_keys(&document) {
        return Ok(Document::new(&with_timestamp(
            normalize(document, namespace)?,
            created_ms,
        )));
    }
    let Yaml::Mapping(object) = &mut document else {
        return Err(NormalizeError::NotAMapping);
    };
    object.remove("status");
    let metadata = object
        .entry("metadata".into())
        .or_insert_with(|| Yaml::Mapping(serde_yaml_ng::Mapping::new()));
    if let Yaml::Mapping(metadata) = metadata {
        for field in SERVER_FIELDS {
            metadata.remove(field);
        }
        metadata.insert("namespace".into(), Yaml::String(namespace.into()));
        metadata.insert(
            "creationTimestamp".into(),
            Yaml::String(format_timestamp(created_ms)),
        );
    }
    let text = serde_json::to_string(&SortedKeys(&document)).map_err(NormalizeError::Json)?;
    Ok(Document(Text::Held(text.into())))
}

/// Merge keys (`<<`) expanded. Most documents have none: they are walked,
/// not looked up mapping by mapping (a hash of `<<` at each mapping).
fn expand_merges(document: &mut Yaml) -> Result<(), NormalizeError> {
    fn has_merge_keys(value: &Yaml) -> bool {
        match value {
            Yaml::Mapping(map) => map
                .iter()
                .any(|(k, v)| k.as_str() == Some("<<") || has_merge_keys(v)),
            Yaml::Sequence(items) => items.iter().any(has_merge_keys),
            Yaml::Tagged(tagged) => has_merge_keys(&tagged.value),
            _ => false,
        }
    }
    if has_merge_keys(document) {
        document.apply_merge().map_err(NormalizeError::Merge)?;
    }
    Ok(())
}

/// Whether every key of every mapping in `value` is a string (a tag is
/// not), and `value` itself a mapping.
fn string_keys(value: &Yaml) -> bool {
    fn walk(value: &Yaml) -> bool {
        match value {
            Yaml::Sequence(items) => items.iter().all(walk),
            Yaml::Mapping(map) => map.iter().all(|(k, v)| k.is_string() && walk(v)),
            Yaml::Tagged(tagged) => walk(&tagged.value),
            _ => true,
        }
    }
    matches!(value, Yaml::Mapping(_)) && walk(value)
}

/// A YAML value written as its `serde_json::Value` is: mappings (of string
/// keys only, see [`string_keys`]) with their keys sorted, a tagged value as
/// a mapping of its tag.
struct SortedKeys<'a>(&'a Yaml);

impl serde::Serialize for SortedKeys<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        match self.0 {
            Yaml::Sequence(items) => serializer.collect_seq(items.iter().map(SortedKeys)),
            Yaml::Mapping(map) => {
                let mut entries: Vec<(&str, &Yaml)> = map
                    .iter()
                    .map(|(k, v)| (k.as_str().unwrap_or_default(), v))
                    .collect();
                entries.sort_unstable_by_key(|(k, _)| *k);
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    out.serialize_entry(k, &SortedKeys(v))?;
                }
                out.end()
            }
            Yaml::Tagged(tagged) => {
                let mut out = serializer.serialize_map(Some(1))?;
                out.serialize_entry(&tagged.tag.to_string(), &SortedKeys(&tagged.value))?;
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// A stored document: compact JSON text (a few hundred bytes where the
/// parsed tree took ~5 KB; 10 000 applied services held 100 MB of trees),
/// parsed again only to be shown or compared.
///
/// Once the state file holds it, the text is not kept in memory: the
/// document is where it is in the file (7 MB at 10 000 services, 70 MB at
/// 100 000, held for the few commands that show or compare documents).
#[derive(Clone, Debug)]
pub struct Document(Text);

#[derive(Clone, Debug)]
enum Text {
    /// Not in a state file yet (or never: the fleet's documents).
    Held(Box<str>),
    /// Bytes `offset..offset + len` of a state file the agent wrote.
    InFile {
        file: std::sync::Arc<StateFile>,
        offset: u64,
        len: u32,
    },
}

/// A state file the agent wrote (or read at start), open: its documents
/// are read from this file even once another replaced it, as long as an
/// applied set points at them (the one in force, or the one before it,
/// put back when the kernel refuses a change).
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    file: File,
    /// Its size and modification time when its documents were placed: a
    /// file changed in place since is not read (its bytes moved).
    size: u64,
    modified: Option<std::time::SystemTime>,
}

impl StateFile {
    fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let metadata = file.metadata()?;
        Ok(Self {
            path: path.to_owned(),
            file,
            size: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }

    /// Whether the file is as it was when opened.
    fn unchanged(&self) -> std::io::Result<bool> {
        let metadata = self.file.metadata()?;
        Ok(metadata.len() == self.size && metadata.modified().ok() == self.modified)
    }

    /// Its text whole (to write the next state file from).
    fn read_all(&self) -> Result<String, ReadBackError> {
        self.read(0, self.size)
    }

    fn read(&self, offset: u64, len: u64) -> Result<String, ReadBackError> {
        use std::os::unix::fs::FileExt as _;
        let error = |reason: String| ReadBackError {
            path: self.path.clone(),
            offset,
            reason,
        };
        if !self.unchanged().map_err(|e| error(e.to_string()))? {
            return Err(error(
                "the file was changed in place while the agent ran".to_owned(),
            ));
        }
        let len = usize::try_from(len).map_err(|e| error(e.to_string()))?;
        let mut bytes = vec![0; len];
        self.file
            .read_exact_at(&mut bytes, offset)
            .map_err(|e| error(e.to_string()))?;
        String::from_utf8(bytes).map_err(|e| error(e.to_string()))
    }
}

/// A document that cannot be read back from the state file.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot read an applied resource back from the state file {path} (at byte {offset}): {reason}; restart the agent to read the file again (do not edit it while the agent runs)"
)]
pub struct ReadBackError {
    pub path: PathBuf,
    pub offset: u64,
    pub reason: String,
}

impl Document {
    pub fn new(json: &Json) -> Self {
        Self(Text::Held(json.to_string().into()))
    }

    /// Its text, read from the state file if it is there.
    pub fn text(&self) -> Result<std::borrow::Cow<'_, str>, ReadBackError> {
        match &self.0 {
            Text::Held(text) => Ok(std::borrow::Cow::Borrowed(text)),
            Text::InFile { file, offset, len } => file
                .read(*offset, u64::from(*len))
                .map(std::borrow::Cow::Owned),
        }
    }

    pub fn to_json(&self) -> Result<Json, ReadBackError> {
        let text = self.text()?;
        serde_json::from_str(&text).map_err(|err| {
            let Text::InFile { file, offset, .. } = &self.0 else {
                unreachable!("the text of a JSON value parses")
            };
            ReadBackError {
                path: file.path.clone(),
                offset: *offset,
                reason: format!("not the document written there: {err}"),
            }
        })
    }

    /// The length of its text.
    fn len(&self) -> usize {
        match &self.0 {
            Text::Held(text) => text.len(),
            Text::InFile { len, .. } => *len as usize,
        }
    }
}

/// The same text (read from the state file if need be: a document that
/// cannot be read equals none).
impl PartialEq for Document {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Text::Held(a), Text::Held(b)) => a == b,
            _ => matches!((self.text(), other.text()), (Ok(a), Ok(b)) if a == b),
        }
    }
}

/// One applied resource.
#[derive(Clone, Debug)]
pub struct Entry {
    /// As [`normalize`] makes it, with `metadata.creationTimestamp`.
    pub document: Document,
    /// Boxed: the map's nodes hold 11 entries each, inline (a resource is ~600
    /// bytes; half-full nodes of them were a third of what 10 000 services took).
    pub resource: Box<Resource>,
    /// When it was first applied, Unix milliseconds.
    pub created_ms: u64,
}

/// The applied set.
pub type Entries = BTreeMap<Key, Entry>;

/// What an `apply` or `delete` would make of the applied set.
#[derive(Debug)]
pub struct Plan {
    /// The applied set afterwards.
    pub entries: Entries,
    /// Each resource named, in the order the files name them.
    pub changes: Vec<Change>,
    /// The warnings of the files' documents (each on its own; those across
    /// resources come when the whole set is resolved).
    pub warnings: Vec<String>,
}

impl Plan {
    /// Whether anything is created, configured or deleted.
    pub fn changes_anything(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::Unchanged)
    }
}

fn change(key: &Key, action: Action) -> Change {
    Change {
        kind: key.kind.to_owned(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        action,
    }
}

/// `apply`: every document of every file parsed and checked on its own
/// (every error of every file is reported), then each resource created,
/// configured (its document differs) or left unchanged. Refused: a resource
/// given twice, or one the rules directory defines (`owner` names the
/// file). The result still has to be resolved with the rest of the rules.
pub fn plan_apply(
    current: &Entries,
    files: &[FileText],
    owner: impl Fn(&Key) -> Option<String>,
    now_ms: u64,
) -> Result<Plan, Vec<String>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut entries = current.clone();
    let mut changes = Vec::new();
    let mut seen: BTreeMap<Key, config::Source> = BTreeMap::new();
    // The files are parsed (and their documents made JSON) on every CPU;
    // what they change is then worked out in order.
    for parsed in parallel(files, |file| parse_for_apply(file, current, now_ms)) {
        let (resources, found) = match parsed {
            Ok(parsed) => parsed,
            Err(found) => {
                errors.extend(found);
                continue;
            }
        };
        warnings.extend(found);
        for (mut resource, document) in resources {
            let source = resource.source();
            let key = Key::of(&resource);
            if let Some(first) = seen.get(&key) {
                errors.push(
                    source
                        .error(
                            FieldPath::parse("metadata.name"),
                            format!(
                                "{key} is given twice, also in {} document {}: apply one of them",
                                first.file.display(),
                                first.document
                            ),
                        )
                        .to_string(),
                );
                continue;
            }
            seen.insert(key.clone(), source.clone());
            if let Some(file) = owner(&key) {
                errors.push(
                    source
                        .error(
                            FieldPath::root(),
                            format!(
                                "{key} is defined in the rules directory ({file}): change it there, or remove it from there to manage it with apply"
                            ),
                        )
                        .to_string(),
                );
                continue;
            }
            let document = match document {
                Ok(document) => document,
                Err(message) => {
                    errors.push(source.error(FieldPath::root(), message).to_string());
                    continue;
                }
            };
            let (action, created_ms, document) = match (current.get(&key), document) {
                (None, Prepared::New(document)) => (Action::Created, now_ms, document),
                // Not applied when the file was parsed, so it is not now.
                (None, Prepared::Existing(_)) | (Some(_), Prepared::New(_)) => {
                    unreachable!("parse_for_apply looked at the same applied set")
                }
                (Some(old), Prepared::Existing(document)) => match configured(old, document) {
                    Ok(Some((generation, document))) => {
                        resource.set_generation(generation);
                        (Action::Configured, old.created_ms, document)
                    }
                    Ok(None) => {
                        changes.push(change(&key, Action::Unchanged));
                        continue;
                    }
                    Err(err) => {
                        errors.push(err.to_string());
                        continue;
                    }
                },
            };
            changes.push(change(&key, action));
            entries.insert(
                key,
                Entry {
                    document,
                    resource: Box::new(resource),
                    created_ms,
                },
            );
        }
    }
    if errors.is_empty() && changes.is_empty() {
        errors.push("no objects passed to apply: the files hold no Istio resource".to_owned());
    }
    if errors.is_empty() {
        Ok(Plan {
            entries,
            changes,
            warnings,
        })
    } else {
        Err(errors)
    }
}

/// An applied resource given again: its new generation and document if it
/// changed (`None`: unchanged), compared with the stored one (read back
/// from the state file).
fn configured(old: &Entry, document: Json) -> Result<Option<(i64, Document)>, ReadBackError> {
    let stored = old.document.to_json()?;
    // A change bumps the generation, as the API server does.
    let generation = generation_of(&stored) + 1;
    if same_document(stored, &document) {
        return Ok(None);
    }
    Ok(Some((
        generation,
        Document::new(&with_generation(
            with_timestamp(document, old.created_ms),
            generation,
        )),
    )))
}

/// One file of an `apply`, parsed: each resource with its document as
/// stored ([`normalize`]d) or why it cannot be; and the file's warnings. Or
/// every error of the file.
type ParsedForApply = Result<(Vec<(Resource, Result<Prepared, String>)>, Vec<String>), Vec<String>>;

/// A document of an `apply`, made ready where the files are parsed.
#[derive(Debug)]
enum Prepared {
    /// Not applied yet: stored as it will be (created now).
    New(Document),
    /// Applied before: to compare with what is (its creation time stays).
    Existing(Json),
}

fn parse_for_apply(file: &FileText, current: &Entries, now_ms: u64) -> ParsedForApply {
    let path = Path::new(&file.path);
    // Parsed once: the documents as written come with the resources.
    let (parsed, mut documents) =
        config::parse_file_documents(path, &file.text, config::MAX_FILE_BYTES)
            .map_err(|found| found.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let warnings = parsed.warnings.iter().map(ToString::to_string).collect();
    let resources = parsed
        .resources
        .into_iter()
        .map(|resource| {
            let document = documents
                .get_mut(resource.source().document - 1)
                .and_then(Option::take)
                .ok_or_else(|| "the document cannot be read again".to_owned())
                .and_then(|document| {
                    if current.contains_key(&Key::of(&resource)) {
                        normalize(document, resource.namespace()).map(Prepared::Existing)
                    } else {
                        normalize_new(document, resource.namespace(), now_ms).map(Prepared::New)
                    }
                    .map_err(|err| err.to_string())
                });
            (resource, document)
        })
        .collect();
    Ok((resources, warnings))
}

/// `f` of each of `items`, in order, the work spread over the CPUs (one
/// thread each, taking the next item as they finish one).
pub fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return done;
                        };
                        done.push((i, f(item)));
                    }
                })
            })
            .collect();
        for worker in workers {
            let done = worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            for (i, result) in done {
                results[i] = Some(result);
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every item is done"))
        .collect()
}

/// The resources one file of a `delete` names, in order: each key with
/// where it is named (`FILE: document N:`), or an error.
fn names_for_delete(file: &FileText) -> Vec<Result<(Key, String), String>> {
    use serde::Deserialize as _;
    let at = |document: usize| format!("{}: document {document}:", file.path);
    // Size, depth and alias expansion, as for apply.
    if let Err(error) = config::check_limits(Path::new(&file.path), &file.text) {
        return vec![Err(error.to_string())];
    }
    let mut named = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(&file.text).enumerate() {
        let number = i + 1;
        // Only the names are read: the rest of the document is not built.
        let (kind, api_version, name, namespace) = match Named::deserialize(document) {
            Ok(Named::Empty) => continue,
            Ok(Named::Fields {
                kind,
                api_version,
                name,
                namespace,
            }) => (kind, api_version, name, namespace),
            Err(err) => {
                named.push(Err(format!("{} invalid YAML: {err}", at(number))));
                break;
            }
        };
        let kind = kind
            .as_deref()
            .and_then(|k| config::kind_of(api_version.as_deref().unwrap_or_default(), k));
        let (Some(kind), Some(name)) = (kind, name) else {
            named.push(Err(format!(
                "{} kind (one of {}) and metadata.name are needed to delete a resource",
                at(number),
                config::KINDS.join(", ")
            )));
            continue;
        };
        let key = Key {
            kind,
            namespace: namespace.unwrap_or_else(|| "default".to_owned()),
            name,
        };
        named.push(Ok((key, at(number))));
    }
    named
}

/// `delete`: the resources the files name (by kind, `metadata.name` and
/// `metadata.namespace`; the specs are not checked, as kubectl does not),
/// removed from the applied set. Refused: a resource the rules directory
/// defines, or one not applied (unless `ignore_not_found`).
pub fn plan_delete(
    current: &Entries,
    files: &[FileText],
    owner: impl Fn(&Key) -> Option<String>,
    ignore_not_found: bool,
) -> Result<Plan, Vec<String>> {
    let mut errors = Vec::new();
    let mut changes = Vec::new();
    // Keys deleted, so a key named twice is deleted once; the entries left
    // are copied at the end (not all of them, then the deleted ones removed).
    let mut deleted = BTreeSet::new();
    for named in parallel(files, names_for_delete) {
        for named in named {
            let (key, at) = match named {
                Ok(named) => named,
                Err(error) => {
                    errors.push(error);
                    continue;
                }
            };
            let at = |message: String| format!("{at} ({key}): {message}");
            if let Some(owner) = owner(&key) {
                errors.push(at(format!(
                    "it is defined in the rules directory ({owner}), not applied: remove it there"
                )));
            } else if deleted.contains(&key) {
                // Named twice: deleted once.
            } else if current.contains_key(&key) {
                changes.push(change(&key, Action::Deleted));
                deleted.insert(key);
            } else if !ignore_not_found {
                errors.push(at(format!(
                    "not found: it is not applied (`traffic-shift get {} -n {}` lists what is)",
                    names_of(key.kind).map_or(key.kind, |k| k.short),
                    key.namespace
                )));
            }
        }
    }
    if errors.is_empty() && changes.is_empty() && !ignore_not_found {
        errors.push("no objects passed to delete: the files hold no Istio resource".to_owned());
    }
    if errors.is_empty() {
        let entries = current
            .iter()
            .filter(|(key, _)| !deleted.contains(*key))
            .map(|(key, entry)| (key.clone(), entry.clone()))
            .collect();
        Ok(Plan {
            entries,
            changes,
            warnings: Vec::new(),
        })
    } else {
        Err(errors)
    }
}

/// Whether two stored documents say the same, their creation time and
/// generation aside.
fn same_document(mut stored: Json, new: &Json) -> bool {
    if let Some(metadata) = stored.get_mut("metadata").and_then(Json::as_object_mut) {
        metadata.remove("creationTimestamp");
        metadata.remove("generation");
    }
    stored == *new
}

/// A stored document's `metadata.generation`: 1 when absent (a resource
/// applied once and never changed).
fn generation_of(document: &Json) -> i64 {
    document
        .get("metadata")
        .and_then(|m| m.get("generation"))
        .and_then(Json::as_i64)
        .unwrap_or(1)
}

/// `document` with `metadata.generation` (left out while it is 1, so a
/// resource never changed is stored as before).
fn with_generation(mut document: Json, generation: i64) -> Json {
    if generation > 1
        && let Some(metadata) = document.get_mut("metadata").and_then(Json::as_object_mut)
    {
        metadata.insert("generation".into(), Json::from(generation));
    }
    document
}

fn with_timestamp(mut document: Json, created_ms: u64) -> Json {
    if let Some(metadata) = document.get_mut("metadata").and_then(Json::as_object_mut) {
        metadata.insert(
            "creationTimestamp".into(),
            Json::String(format_timestamp(created_ms)),
        );
    }
    document
}

/// The applied set as one rules file for `config::resolve_all`.
pub fn rules_file(path: &Path, entries: &Entries) -> RulesFile {
    RulesFile {
        path: path.to_owned(),
        resources: entries.values().map(|e| (*e.resource).clone()).collect(),
        warnings: Vec::new(),
    }
}

/// The state file's first lines.
const HEADER: &str = "# Istio resources applied with `traffic-shift apply`, in force together with the\n\
# rules directory. Written by the agent (write, fsync, rename) on every apply and\n\
# delete and read when it starts; do not edit it while the agent runs.\n";

/// The applied set as the state file's text: [`HEADER`], then each
/// document, sorted by kind, namespace and name, as the compact JSON it is
/// kept as (JSON is YAML: the file reads as any rules file). Writing it is a
/// copy: YAML was slow to write (100 000 services took seconds). The
/// documents already in a state file are copied from its text, read whole
/// once.
pub fn render(entries: &Entries) -> Result<String, ReadBackError> {
    let mut text = String::with_capacity(rendered_len(entries));
    text.push_str(HEADER);
    // The files read, by address: one, but for a set put back.
    let mut files: Vec<(&std::sync::Arc<StateFile>, String)> = Vec::new();
    for entry in entries.values() {
        text.push_str(SEPARATOR);
        match &entry.document.0 {
            Text::Held(document) => text.push_str(document),
            Text::InFile { file, offset, len } => {
                let read = files
                    .iter()
                    .position(|(f, _)| std::sync::Arc::ptr_eq(f, file));
                let i = if let Some(i) = read {
                    i
                } else {
                    files.push((file, file.read_all()?));
                    files.len() - 1
                };
                let whole = &files[i].1;
                let range = usize::try_from(*offset).unwrap_or(usize::MAX)..;
                let document = whole
                    .get(range)
                    .and_then(|rest| rest.get(..*len as usize))
                    .ok_or_else(|| ReadBackError {
                        path: file.path.clone(),
                        offset: *offset,
                        reason: "the file is shorter than when it was written".to_owned(),
                    })?;
                text.push_str(document);
            }
        }
        text.push('\n');
    }
    Ok(text)
}

/// What [`render`] writes before each document (and a newline after it).
const SEPARATOR: &str = "---\n";

/// The size of the text [`render`] makes of `entries`.
fn rendered_len(entries: &Entries) -> usize {
    HEADER.len()
        + entries
            .values()
            .map(|e| SEPARATOR.len() + e.document.len() + 1)
            .sum::<usize>()
}

/// Whether `text` is what [`render`] makes of `entries` (held in memory,
/// as [`parse_state`] makes them), compared in place.
fn is_rendered(text: &str, entries: &Entries) -> bool {
    let Some(mut rest) = text.strip_prefix(HEADER) else {
        return false;
    };
    for entry in entries.values() {
        let Text::Held(document) = &entry.document.0 else {
            return false;
        };
        let Some(after) = rest
            .strip_prefix(SEPARATOR)
            .and_then(|r| r.strip_prefix(&**document))
            .and_then(|r| r.strip_prefix('\n'))
        else {
            return false;
        };
        rest = after;
    }
    rest.is_empty()
}

/// Points each document of `entries` at its place in the state file at
/// `path`, whose text [`render`] made of them, if the file is that text
/// (its size says so; else they stay as they are, in memory or in the file
/// before).
fn place_in_file(path: &Path, entries: &mut Entries) {
    let size = rendered_len(entries);
    let file = match StateFile::open(path) {
        Ok(file) if usize::try_from(file.size).is_ok_and(|s| s == size) => {
            std::sync::Arc::new(file)
        }
        Ok(file) => {
            tracing::warn!(file = %path.display(), size = file.size, expected = size, "the state file is not the text just written: the applied documents stay in memory");
            return;
        }
        Err(err) => {
            tracing::warn!(file = %path.display(), %err, "cannot open the state file again: the applied documents stay in memory");
            return;
        }
    };
    let mut offset = HEADER.len() + SEPARATOR.len();
    for entry in entries.values_mut() {
        let len = entry.document.len();
        if let Ok(len32) = u32::try_from(len) {
            entry.document.0 = Text::InFile {
                file: std::sync::Arc::clone(&file),
                offset: offset as u64,
                len: len32,
            };
        }
        offset += len + 1 + SEPARATOR.len();
    }
}

/// The applied set from the state file's text (`path` for messages), or
/// every error.
pub fn parse_state(path: &Path, text: &str, mtime_ms: u64) -> Result<Entries, Vec<String>> {
    let (file, mut documents) =
        config::parse_file_documents(path, text, config::MAX_STATE_BYTES)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    // Its lines are read from the file again if a message needs one: the
    // text is not kept.
    let lines = config::FileLines::on_disk(path);
    let mut entries = Entries::new();
    let mut errors = Vec::new();
    for mut resource in file.resources {
        let source = resource.source().clone();
        let key = Key::of(&resource);
        let Some(raw) = documents
            .get_mut(source.document - 1)
            .and_then(Option::take)
        else {
            errors.push(
                source
                    .error(FieldPath::root(), "the document cannot be read again")
                    .to_string(),
            );
            continue;
        };
        let created_ms = raw
            .get("metadata")
            .and_then(|m| m.get("creationTimestamp"))
            .and_then(Yaml::as_str)
            .and_then(parse_timestamp)
            .unwrap_or(mtime_ms);
        // Kept as stored (the resource has read it too).
        let generation = raw
            .get("metadata")
            .and_then(|m| m.get("generation"))
            .and_then(Yaml::as_i64)
            .unwrap_or(1);
        resource
            .source_mut()
            .relocate(&source.file, source.document, &lines);
        let document = match normalize(raw, &key.namespace) {
            Ok(document) => Document::new(&with_generation(
                with_timestamp(document, created_ms),
                generation,
            )),
            Err(err) => {
                errors.push(source.error(FieldPath::root(), err.to_string()).to_string());
                continue;
            }
        };
        if entries.contains_key(&key) {
            errors.push(
                source
                    .error(
                        FieldPath::parse("metadata.name"),
                        format!("{key} is in the file twice"),
                    )
                    .to_string(),
            );
            continue;
        }
        entries.insert(
            key,
            Entry {
                document,
                resource: Box::new(resource),
                created_ms,
            },
        );
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

/// Why the applied set cannot be read or kept.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot use the state directory {dir}: {source}")]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another agent uses the state directory {dir}; stop it, or give this one another --state-dir"
    )]
    Locked { dir: PathBuf },
    /// The agent refuses to start rather than start without the applied
    /// resources: that would remove routes that were in force, silently.
    #[error(
        "the state file {path} cannot be used, so the agent does not start (it would drop the resources applied with `traffic-shift apply`): {errors}; repair it (`traffic-shift validate -f {path}` lists what is wrong) or move it away to start without those resources",
        errors = errors.join("; ")
    )]
    Corrupt { path: PathBuf, errors: Vec<String> },
    /// As for the applied set: starting without it would change which of
    /// several HTTPRoutes on one host wins, silently.
    #[error(
        "the state file {path} cannot be used, so the agent does not start (it keeps when each HTTPRoute and TLSRoute without a creationTimestamp was first seen, which decides between routes on one host or SNI name): {error}; repair it, or move it away to have every such route seen anew"
    )]
    FirstSeen { path: PathBuf, error: String },
    #[error("cannot write the state file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The applied set and its file, locked for one agent.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    entries: Entries,
    /// When the rules directory's HTTPRoutes and TLSRoutes were first seen.
    first_seen: first_seen::FirstSeen,
    /// When the Gateway API status conditions last changed.
    transitions: transitions::Transitions,
    /// Holds the directory's lock (flock) while the agent runs.
    _lock: File,
}

impl Store {
    /// The state file's name in the state directory.
    pub const FILE: &str = "applied.yaml";

    /// Opens `dir` (created, root-only, if missing), locks it for this
    /// agent, and reads the applied set (none if there is no state file).
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let dir_error = |source| StateError::Dir {
            dir: dir.to_owned(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(dir_error)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(".lock"))
            .map_err(dir_error)?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(StateError::Locked {
                    dir: dir.to_owned(),
                });
            }
            Err(err) => return Err(dir_error(err.into())),
        }
        let path = dir.join(Self::FILE);
        let corrupt = |errors| StateError::Corrupt {
            path: path.clone(),
            errors,
        };
        let entries = match config::read_file_up_to(&path, config::MAX_STATE_BYTES) {
            Ok(text) => {
                let mtime_ms = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .map_or(0, system_ms);
                let mut entries = parse_state(&path, &text, mtime_ms).map_err(corrupt)?;
                // As the agent wrote it (else kept in memory until the next write).
                if is_rendered(&text, &entries) {
                    place_in_file(&path, &mut entries);
                }
                entries
            }
            Err(_) if !path.exists() => Entries::new(),
            Err(err) => return Err(corrupt(vec![err.to_string()])),
        };
        Ok(Self {
            path,
            entries,
            first_seen: first_seen::FirstSeen::open(dir)?,
            transitions: transitions::Transitions::open(dir),
            _lock: lock,
        })
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> &Entries {
        &self.entries
    }

    /// When the rules directory's HTTPRoutes and TLSRoutes were first seen.
    pub fn first_seen(&mut self) -> &mut first_seen::FirstSeen {
        &mut self.first_seen
    }

    /// When the Gateway API status conditions last changed.
    pub fn transitions(&self) -> &transitions::Transitions {
        &self.transitions
    }

    pub fn transitions_mut(&mut self) -> &mut transitions::Transitions {
        &mut self.transitions
    }

    /// The applied set as one rules file, for resolving with the rules directory.
    pub fn rules_file(&self) -> RulesFile {
        rules_file(&self.path, &self.entries)
    }

    /// Persists `entries` (atomically: write, fsync, rename, fsync the
    /// directory), then makes them the applied set, as read back from the
    /// file's text (messages about them then name the state file and its
    /// lines, as after a restart).
    /// Returns the applied set before (to put back if the kernel refuses
    /// the change).
    pub fn replace(&mut self, entries: Entries) -> Result<Entries, StateError> {
        self.write_in_background(&entries).wait()?;
        Ok(self.adopt(entries))
    }

    /// Starts persisting `entries` as [`Self::replace`] does: the text is
    /// made here, written and fsynced by another thread (72 MB and half a
    /// second at 100 000 services), so the caller compiles the change
    /// meanwhile; it [`waits`](PendingWrite::wait) for the file before it
    /// writes the kernel, then [`adopts`](Self::adopt) the entries. The
    /// applied set stays as it is until then.
    pub fn write_in_background(&self, entries: &Entries) -> PendingWrite {
        // Shared, not copied, with the fallback below.
        let path = self.path.clone();
        let text = match render(entries) {
            Ok(text) => std::sync::Arc::new(text),
            Err(err) => {
                return PendingWrite {
                    path,
                    written: Written::Done(Err(std::io::Error::other(err))),
                };
            }
        };
        let write = {
            let path = path.clone();
            move || write_atomic(&path, &text)
        };
        let written = match std::thread::Builder::new()
            .name("state-write".into())
            .spawn(write.clone())
        {
            Ok(thread) => Written::Thread(thread),
            // No thread to be had: written here.
            Err(_) => Written::Done(write()),
        };
        PendingWrite { path, written }
    }

    /// Makes `entries`, whose file [`Self::write_in_background`] wrote, the
    /// applied set, as read back from the file's text (messages about them
    /// then name the state file and its lines, as after a restart).
    /// Returns the applied set before.
    pub fn adopt(&mut self, mut entries: Entries) -> Entries {
        // As if read back (not parsed again: 10 000 services took seconds):
        // document n + 1 of the file is entry n (the header is a comment),
        // with its creation time; lines are read from the file if needed.
        let lines = config::FileLines::on_disk(&self.path);
        let file: std::sync::Arc<Path> = self.path.as_path().into();
        for (n, entry) in entries.values_mut().enumerate() {
            let source = entry.resource.source_mut();
            source.relocate(&file, n + 1, &lines);
            source.creation_timestamp = Some(format_timestamp(entry.created_ms));
        }
        place_in_file(&self.path, &mut entries);
        std::mem::replace(&mut self.entries, entries)
    }

    /// Writes the applied set in force to the state file again: a change
    /// written by [`Self::write_in_background`] and then refused is undone.
    pub fn rewrite(&self) -> Result<(), StateError> {
        self.write_in_background(&self.entries).wait()
    }
}

/// The state file being written by [`Store::write_in_background`].
#[derive(Debug)]
pub struct PendingWrite {
    path: PathBuf,
    written: Written,
}

#[derive(Debug)]
enum Written {
    Thread(std::thread::JoinHandle<std::io::Result<()>>),
    Done(std::io::Result<()>),
}

impl PendingWrite {
    /// Once the file is on disk (written, fsynced, renamed), or why not.
    pub fn wait(self) -> Result<(), StateError> {
        let result = match self.written {
            Written::Thread(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Written::Done(result) => result,
        };
        result.map_err(|source| StateError::Write {
            path: self.path,
            source,
        })
    }
}

/// Replaces `path` with `text` so that a crash at any point leaves the old
/// file or the new one, whole.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    // The rename is durable once the directory is.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

fn system_ms(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub use config::{format_timestamp, parse_timestamp};

/// At most this many resources are named one by one in the log of a
/// change (10 000 services made log lines of 500 KB).
pub const LOGGED: usize = 100;

/// The keys named by a set of changes, for logs: the first [`LOGGED`], then
/// how many more.
pub fn names(changes: &[Change]) -> String {
    // Sorted once, not inserted one by one into a tree (200 000 names).
    let mut set: Vec<String> = changes
        .iter()
        .map(|c| display_name(&c.kind, &c.name))
        .collect();
    set.sort_unstable();
    set.dedup();
    let more = set.len().saturating_sub(LOGGED);
    set.truncate(LOGGED);
    let text = set.join(" ");
    if more > 0 {
        format!("{text} and {more} more")
    } else {
        text
    }
}

#[cfg(test)]
mod tests;
