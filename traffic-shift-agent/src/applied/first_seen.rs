//! When the agent first saw each `HTTPRoute`, `GRPCRoute`, `TLSRoute` and `TCPRoute` of
//! the rules directory that has no `metadata.creationTimestamp`: its age,
//! which breaks ties of precedence between HTTPRoutes on one host, and
//! decides which TLSRoute takes an SNI name and which TCPRoute a listener
//! (the Gateway API: the oldest route wins). Kubernetes sets the creation time when a route is created;
//! a rules file does not, so the agent keeps the time it first read the
//! route, in `<state-dir>/first-seen.json`, so that a restart does not
//! change which route wins. Resources applied with `traffic-shift apply`
//! have theirs in the applied set already.
//!
//! The file is one JSON object, `{"HTTPRoute default/web":
//! "2026-11-23T15:32:07.123Z", ...}` (to the millisecond: routes seen a
//! moment apart are not the same age), replaced whole (write, fsync, rename)
//! when a route is first seen or leaves the rules. A file that cannot be
//! read stops the agent, as the applied set does: starting without it
//! would change which routes win, silently.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use traffic_shift_config::{self as config, Resource, RulesFile};

use super::{StateError, write_atomic};

/// The kinds whose resources are stamped.
const KINDS: [&str; 4] = ["HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute"];

/// The first-seen times, and their file.
#[derive(Debug)]
pub struct FirstSeen {
    path: PathBuf,
    /// `<kind> <namespace>/<name>` (`HTTPRoute default/web`) to Unix
    /// milliseconds.
    times: BTreeMap<String, u64>,
}

/// How a route is named in the file: `HTTPRoute default/web`.
fn key(resource: &Resource) -> Option<String> {
    let source = resource.source();
    KINDS
        .contains(&source.kind)
        .then(|| format!("{} {}/{}", source.kind, source.namespace, source.name))
}

impl FirstSeen {
    /// The file's name in the state directory.
    pub const FILE: &str = "first-seen.json";

    /// Reads `<dir>/first-seen.json` (none: no route seen yet). The
    /// directory is the applied set's, locked by it.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(Self::FILE);
        let corrupt = |error: String| StateError::FirstSeen {
            path: path.clone(),
            error,
        };
        let times = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let written: BTreeMap<String, String> =
                    serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
                written
                    .into_iter()
                    .map(|(key, time)| match config::parse_timestamp(&time) {
                        Some(ms) => Ok((key, ms)),
                        None => Err(corrupt(format!(
                            "{key}: {time:?} is not a time as Kubernetes writes it \
                             (2026-11-23T15:32:07Z)"
                        ))),
                    })
                    .collect::<Result<_, _>>()?
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(err) => return Err(corrupt(err.to_string())),
        };
        Ok(Self { path, times })
    }

    /// Gives each route of `file` (of [`KINDS`]) without a creation time the time
    /// it was first seen (`now_ms` for one not seen before), and keeps
    /// the new ones in the file. A file that cannot be written is logged:
    /// the times hold until the agent stops.
    pub fn stamp(&mut self, file: &mut RulesFile, now_ms: u64) {
        let mut added = false;
        for resource in &mut file.resources {
            let Some(key) = key(resource) else {
                continue;
            };
            if resource.source().creation_timestamp.is_some() {
                continue;
            }
            let ms = *self.times.entry(key).or_insert_with(|| {
                added = true;
                now_ms
            });
            resource.source_mut().creation_timestamp = Some(config::format_timestamp_millis(ms));
        }
        if added {
            self.save();
        }
    }

    /// [`Self::stamp`] with the time now.
    pub fn stamp_now(&mut self, file: &mut RulesFile) {
        self.stamp(file, super::system_ms(std::time::SystemTime::now()));
    }

    /// Forgets the routes of `before` that `after` no longer has (removed
    /// from the rules: a route written again is a new one, as in
    /// Kubernetes).
    pub fn forget_removed<'a>(
        &mut self,
        before: impl Iterator<Item = &'a Resource>,
        after: impl Iterator<Item = &'a Resource>,
    ) {
        let kept: std::collections::BTreeSet<String> = after.filter_map(key).collect();
        let mut removed = false;
        for key in before.filter_map(key) {
            if !kept.contains(&key) && self.times.remove(&key).is_some() {
                removed = true;
            }
        }
        if removed {
            self.save();
        }
    }

    /// The time `<kind> <namespace>/<name>` was first seen.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<u64> {
        self.times
            .get(&format!("{kind} {namespace}/{name}"))
            .copied()
    }

    fn save(&self) {
        let written: BTreeMap<&String, String> = self
            .times
            .iter()
            .map(|(key, ms)| (key, config::format_timestamp_millis(*ms)))
            .collect();
        let text = serde_json::to_string_pretty(&written).unwrap_or_default() + "\n";
        if let Err(err) = write_atomic(&self.path, &text) {
            tracing::error!(
                path = %self.path.display(),
                %err,
                "cannot keep when routes were first seen: after a restart, routes on one host or SNI name \
                 may be ordered by the time they are seen again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> RulesFile {
        config::parse_file(Path::new("rules/r.yaml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    const ROUTES: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a}
spec: {parentRefs: [{name: gw}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b, creationTimestamp: \"2020-01-01T00:00:00Z\"}
spec: {parentRefs: [{name: gw}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: a}
spec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: tls, port: 443}]}]}
";

    fn times(file: &RulesFile) -> Vec<Option<String>> {
        file.resources
            .iter()
            .map(|r| r.source().creation_timestamp.clone())
            .collect()
    }

    /// A route without a creation time keeps the time it was first seen,
    /// in the file, across a reopen (a restart); one with a creation time
    /// keeps its own; a route removed is forgotten.
    #[test]
    fn first_seen_times_outlive_a_restart() {
        let dir = std::env::temp_dir().join(format!("ts-first-seen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut seen = FirstSeen::open(&dir).expect("no file yet");
        let mut first = file(ROUTES);
        seen.stamp(&mut first, 1_000);
        assert_eq!(
            times(&first),
            [
                Some("1970-01-01T00:00:01.000Z".to_owned()),
                Some("2020-01-01T00:00:00Z".to_owned()),
                Some("1970-01-01T00:00:01.000Z".to_owned()),
            ]
        );
        drop(seen);
        let mut seen = FirstSeen::open(&dir).expect("reopen");
        let mut again = file(ROUTES);
        seen.stamp(&mut again, 9_000_000);
        assert_eq!(
            times(&again),
            times(&first),
            "the same times after a reopen"
        );
        assert_eq!(
            seen.get("HTTPRoute", "default", "b"),
            None,
            "a written time is not kept"
        );
        assert_eq!(
            seen.get("TLSRoute", "default", "a"),
            Some(1_000),
            "TLSRoutes too"
        );
        seen.forget_removed(first.resources.iter(), std::iter::empty());
        let seen = FirstSeen::open(&dir).expect("reopen");
        assert_eq!(
            seen.get("HTTPRoute", "default", "a"),
            None,
            "a removed route is forgotten"
        );
        assert_eq!(seen.get("TLSRoute", "default", "a"), None, "of each kind");
        std::fs::write(
            dir.join(FirstSeen::FILE),
            "{\"HTTPRoute default/a\": \"soon\"}",
        )
        .expect("write");
        let err = FirstSeen::open(&dir).expect_err("a time that cannot be read");
        assert!(err.to_string().contains("\"soon\" is not a time"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
