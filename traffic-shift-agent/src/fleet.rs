//! The store's resources as the rest of the agent knows them: each stored
//! document (JSON, as [`applied::normalize`] makes it) read back into an
//! applied [`Entry`] with its parsed [`Resource`], so the CLI's `apply
//! --store` and every agent check a set with the same code
//! ([`applied::plan_apply`], `config::resolve_all`) and the same messages.
//!
//! A stored resource is named in messages as
//! `etcd:PREFIX/resources/<Kind>/<namespace>/<name>`, its lines those of
//! the document as `get -o yaml` prints it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde_json::Value as Json;
use traffic_shift_config::{self as config, RulesFile};
use traffic_shift_store::{ResourceKey, Write};

use crate::applied::{self, Document, Entries, Entry, Key};

pub mod converge;
pub mod ctl;
pub mod status;

/// How messages name a stored resource.
pub fn source_path(prefix: &str, key: &ResourceKey) -> PathBuf {
    PathBuf::from(format!(
        "etcd:{prefix}/resources/{}/{}/{}",
        key.kind, key.namespace, key.name
    ))
}

/// How messages name the store's set as a whole.
pub fn set_path(prefix: &str) -> PathBuf {
    PathBuf::from(format!("etcd:{prefix}/resources"))
}

/// The store's key of an applied resource.
pub fn store_key(key: &Key) -> ResourceKey {
    ResourceKey {
        kind: key.kind.to_owned(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    }
}

/// One stored document back to an entry; every error, each naming the key.
pub fn entry(prefix: &str, key: &ResourceKey, text: &str) -> Result<(Key, Entry), Vec<String>> {
    let path = source_path(prefix, key);
    let at = |message: String| vec![format!("{}: {message}", path.display())];
    let json: Json =
        serde_json::from_str(text).map_err(|err| at(format!("not a JSON document: {err}")))?;
    let yaml = serde_yaml_ng::to_string(&json).map_err(|err| at(err.to_string()))?;
    let file = config::parse_file_all(&path, &yaml)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let [resource] = <[_; 1]>::try_from(file.resources).map_err(|resources: Vec<_>| {
        at(format!(
            "holds {} resources; a key holds one",
            resources.len()
        ))
    })?;
    let found = Key::of(&resource);
    if store_key(&found) != *key {
        return Err(at(format!(
            "the document is {found}, not what its key names: move it to its own key"
        )));
    }
    let created_ms = json
        .get("metadata")
        .and_then(|m| m.get("creationTimestamp"))
        .and_then(Json::as_str)
        .and_then(applied::parse_timestamp)
        .unwrap_or(0);
    Ok((
        found,
        Entry {
            document: Document::new(&json),
            resource: Box::new(resource),
            created_ms,
        },
    ))
}

/// The store's resources (a `Listing`'s) as an applied set, or every error.
pub fn entries(
    prefix: &str,
    resources: &BTreeMap<ResourceKey, String>,
) -> Result<Entries, Vec<String>> {
    entries_since(prefix, resources, (&BTreeMap::new(), &Entries::new()))
}

/// [`entries`], taking from `before` (the texts of a set read earlier and
/// its entries) each entry whose text did not change: a revision parses
/// only the documents it changed.
pub fn entries_since(
    prefix: &str,
    resources: &BTreeMap<ResourceKey, String>,
    (texts, read): (&BTreeMap<ResourceKey, String>, &Entries),
) -> Result<Entries, Vec<String>> {
    let read: BTreeMap<ResourceKey, (&Key, &Entry)> =
        read.iter().map(|(k, e)| (store_key(k), (k, e))).collect();
    let mut entries = Entries::new();
    let mut errors = Vec::new();
    for (key, text) in resources {
        if let (Some(before), Some((k, e))) = (texts.get(key), read.get(key))
            && before == text
        {
            entries.insert((*k).clone(), (*e).clone());
            continue;
        }
        match entry(prefix, key, text) {
            Ok((key, entry)) => {
                entries.insert(key, entry);
            }
            Err(found) => errors.extend(found),
        }
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

/// The store's set as one rules file, to resolve with the other sources.
pub fn rules_file(prefix: &str, entries: &Entries) -> RulesFile {
    applied::rules_file(&set_path(prefix), entries)
}

/// What turns `current` into `next`: documents put (created or changed)
/// and keys deleted.
pub fn writes(current: &Entries, next: &Entries) -> Vec<Write> {
    let mut writes = Vec::new();
    for (key, entry) in next {
        if current
            .get(key)
            .is_none_or(|old| old.document != entry.document)
        {
            writes.push(Write::Put(
                store_key(key),
                entry
                    .document
                    .to_json()
                    .expect("the store's documents are held in memory")
                    .to_string(),
            ));
        }
    }
    for key in current.keys().filter(|key| !next.contains_key(key)) {
        writes.push(Write::Delete(store_key(key)));
    }
    writes
}

/// Whether `path` names a stored resource (as [`source_path`] does).
pub fn is_store_path(path: &Path) -> bool {
    path.to_string_lossy().starts_with("etcd:")
}

#[cfg(test)]
mod tests {
    use traffic_shift_store::Listing;

    use super::*;
    use crate::admin::FileText;

    const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: tcp-echo\nspec:\n  hosts: [tcp-echo.local]\n  tcp:\n  - route:\n    - destination: {host: tcp-echo.local, subset: v1}\n";

    #[test]
    fn a_planned_set_round_trips_through_the_store_layout() {
        let files = [FileText {
            path: "vs.yaml".into(),
            text: VS.into(),
        }];
        let plan = applied::plan_apply(&Entries::new(), &files, |_| None, 1_000).unwrap();
        let writes = writes(&Entries::new(), &plan.entries);
        let mut listing = Listing::default();
        for write in &writes {
            let Write::Put(key, text) = write else {
                panic!("only puts: {write:?}")
            };
            assert_eq!(key.to_string(), "VirtualService default/tcp-echo");
            listing.resources.insert(key.clone(), text.clone());
        }
        let back = entries("/ts", &listing.resources).unwrap();
        assert_eq!(back.len(), 1);
        let (key, entry) = back.iter().next().unwrap();
        assert_eq!(entry.created_ms, 1_000);
        assert_eq!(entry.document, plan.entries[key].document);
        assert!(
            super::writes(&back, &plan.entries).is_empty(),
            "the same set writes nothing"
        );
        assert_eq!(
            super::writes(&back, &Entries::new()),
            [Write::Delete(store_key(key))]
        );
    }

    #[test]
    fn a_document_under_another_key_is_refused_naming_both() {
        let mut listing = Listing::default();
        let key = ResourceKey {
            kind: "VirtualService".into(),
            namespace: "default".into(),
            name: "other".into(),
        };
        let json = serde_json::to_string(
            &serde_yaml_ng::from_str::<Json>(VS).expect("the VirtualService parses"),
        )
        .unwrap();
        listing.resources.insert(key, json);
        let errors = entries("/ts", &listing.resources).unwrap_err();
        assert_eq!(
            errors,
            [
                "etcd:/ts/resources/VirtualService/default/other: the document is VirtualService default/tcp-echo, not what its key names: move it to its own key"
            ]
        );
    }
}
