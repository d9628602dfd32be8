//! The rules' sources: the files of the rules directory (each accepted or
//! refused whole, as it changes) and the resources applied over the admin
//! socket, in force together.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use notify::Watcher as _;
use tokio::sync::mpsc;
use traffic_shift_config::{self as config, RulesFile};

use super::{Agent, AgentError, error::ApplyError};
use crate::applied;

/// The rules files on disk: each one's text, or why it cannot be read.
type Snapshot = BTreeMap<PathBuf, Result<String, String>>;

pub struct Sources {
    /// The rules directory (canonical), if any.
    pub rules: Option<PathBuf>,
    /// Files in force, with the text they were accepted from.
    pub accepted: Accepted,
    /// Last refused version of a file (`None`: its removal was refused), so a
    /// refusal is reported once, not on every rescan.
    pub refused: BTreeMap<PathBuf, Option<String>>,
    /// `--events`: one JSON line per file applied or refused.
    pub events: Option<std::fs::File>,
    /// Resources applied over the admin socket, in force with the files.
    pub applied: applied::Store,
    /// The fleet's store (`--store`), its set in force with the others.
    pub fleet: Option<super::store::Fleet>,
    /// The rules directory's files (inode, size, times) as of the last
    /// rescan that read them: while they stay so, a rescan reads nothing.
    /// `None` when the next must read (refused files to try again).
    pub seen: Option<BTreeMap<PathBuf, Fingerprint>>,
}

/// What tells a file changed without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    inode: u64,
    size: u64,
    modified_ns: i64,
    changed_ns: i64,
}

impl Sources {
    pub fn new(
        rules: Option<PathBuf>,
        events: Option<std::fs::File>,
        applied: applied::Store,
        fleet: Option<super::store::Fleet>,
    ) -> Self {
        Self {
            rules,
            accepted: BTreeMap::new(),
            refused: BTreeMap::new(),
            events,
            applied,
            fleet,
            seen: None,
        }
    }

    /// Refused files are to be tried again (something they may need came).
    pub fn retry_refused(&mut self) {
        self.refused.clear();
        self.seen = None;
    }
}

/// The rules files of `dir` and their fingerprints (one `stat` each).
fn fingerprints(dir: &Path) -> std::io::Result<BTreeMap<PathBuf, Fingerprint>> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !config::is_rules_file(&path) {
            continue;
        }
        // Gone between read_dir and stat: gone.
        let Ok(m) = std::fs::metadata(&path) else {
            continue;
        };
        let ns = |s: i64, ns: i64| s.saturating_mul(1_000_000_000).saturating_add(ns);
        out.insert(
            path,
            Fingerprint {
                inode: m.ino(),
                size: m.size(),
                modified_ns: ns(m.mtime(), m.mtime_nsec()),
                changed_ns: ns(m.ctime(), m.ctime_nsec()),
            },
        );
    }
    Ok(out)
}

/// The rules directory's files in force, with the text each was accepted from.
pub type Accepted = BTreeMap<PathBuf, (String, RulesFile)>;

impl Sources {
    /// The whole rule set in the order it is resolved in: the applied set,
    /// the store's, then the directory's files (a file that repeats a
    /// resource of the ones before it is the one refused). Each part is the
    /// one in force unless the change being checked gives another.
    pub fn rule_set(
        &self,
        applied: Option<RulesFile>,
        store: Option<RulesFile>,
        directory: Option<&Accepted>,
    ) -> Vec<RulesFile> {
        let mut files = vec![applied.unwrap_or_else(|| self.applied.rules_file())];
        if let Some(store) = store.or_else(|| self.fleet.as_ref().map(|f| f.file.clone())) {
            files.push(store);
        }
        files.extend(
            directory
                .unwrap_or(&self.accepted)
                .values()
                .map(|(_, f)| f.clone()),
        );
        files
    }
}

impl Sources {
    /// [`Self::rule_set`] with `applied` for the applied set, as references
    /// (nothing copied).
    pub fn resources_with<'a>(
        &'a self,
        applied: impl Iterator<Item = &'a traffic_shift_config::Resource>,
    ) -> Vec<&'a traffic_shift_config::Resource> {
        let mut resources: Vec<&traffic_shift_config::Resource> = applied.collect();
        if let Some(fleet) = &self.fleet {
            resources.extend(&fleet.file.resources);
        }
        resources.extend(self.accepted.values().flat_map(|(_, f)| &f.resources));
        resources
    }
}

impl Agent {
    /// Reads the directory and brings in every change it can. When something
    /// went in, files refused earlier get another chance (a VirtualService
    /// may have waited for its ServiceEntry).
    pub(super) fn rescan(&mut self) {
        let refused_before: Vec<PathBuf> = self.sources.refused.keys().cloned().collect();
        if self.rescan_once() && !refused_before.is_empty() {
            for path in refused_before {
                self.sources.refused.remove(&path);
            }
            self.sources.seen = None;
            self.rescan_once();
        }
    }

    /// One pass; returns whether anything was applied.
    fn rescan_once(&mut self) -> bool {
        let Some(rules) = &self.sources.rules else {
            return false;
        };
        // An idle agent stats its files, it does not read them.
        let seen = fingerprints(rules).ok();
        if seen.is_some() && seen == self.sources.seen {
            return false;
        }
        // Taken before the read: a file changed after it is read again.
        self.sources.seen = seen;
        let disk = match read_rules_dir(rules) {
            Ok(disk) => disk,
            Err(err) => {
                tracing::error!(rules = %rules.display(), %err, "cannot read rules directory; keeping the rules in force");
                return false;
            }
        };
        // A refused file that is gone is forgotten (with its text, up to
        // 4 MiB): files come and go under new names, memory must not grow.
        // A refused removal stays until the removal goes through.
        let accepted = &self.sources.accepted;
        self.sources.refused.retain(|path, text| {
            disk.contains_key(path) || (text.is_none() && accepted.contains_key(path))
        });
        let mut pending: Vec<(PathBuf, Option<String>)> = Vec::new();
        for (path, text) in &disk {
            // An unreadable file is tracked by its error, so it is reported
            // once, not on every rescan.
            let text = match text {
                Ok(text) => text,
                Err(error) => {
                    let marker = format!("\0unreadable: {error}");
                    if self
                        .sources
                        .refused
                        .get(path)
                        .is_none_or(|t| t.as_ref() != Some(&marker))
                    {
                        self.refuse(path, Some(marker), error);
                    }
                    continue;
                }
            };
            let unchanged = self
                .sources
                .accepted
                .get(path)
                .is_some_and(|(t, _)| t == text);
            let known_bad = self
                .sources
                .refused
                .get(path)
                .is_some_and(|t| t.as_ref() == Some(text));
            if !unchanged && !known_bad {
                pending.push((path.clone(), Some(text.clone())));
            }
        }
        for path in self.sources.accepted.keys() {
            if !disk.contains_key(path) && self.sources.refused.get(path) != Some(&None) {
                pending.push((path.clone(), None));
            }
        }
        if pending.is_empty() {
            return false;
        }
        // Parse errors are final for this version of the file.
        let mut candidates = Vec::new();
        for (path, text) in pending {
            match text {
                None => candidates.push((path, None)),
                Some(text) => match config::parse_file(&path, &text) {
                    Ok(mut file) => {
                        self.sources.applied.first_seen().stamp_now(&mut file);
                        for warning in &file.warnings {
                            tracing::warn!(file = %file_name(&path), "{warning}");
                        }
                        candidates.push((path, Some((text, file))));
                    }
                    Err(err) => self.refuse(&path, Some(text), &err.to_string()),
                },
            }
        }
        // All changes together first (files that depend on each other arrive
        // together); if that fails, one at a time until nothing more goes in.
        if candidates.len() > 1 && self.try_apply(&candidates).is_ok() {
            return true;
        }
        let mut applied = false;
        loop {
            let mut progress = false;
            let mut left = Vec::new();
            for candidate in candidates {
                match self.try_apply(std::slice::from_ref(&candidate)) {
                    Ok(()) => {
                        progress = true;
                        applied = true;
                    }
                    Err(err) => left.push((candidate, err)),
                }
            }
            if !progress || left.is_empty() {
                for ((path, change), err) in left {
                    self.refuse(&path, change.map(|(text, _)| text), &err.to_string());
                }
                return applied;
            }
            candidates = left.into_iter().map(|(c, _)| c).collect();
        }
    }

    /// Applies the changes if the whole resulting rule set is valid and fits.
    fn try_apply(
        &mut self,
        changes: &[(PathBuf, Option<(String, RulesFile)>)],
    ) -> Result<(), ApplyError> {
        let mut next = self.sources.accepted.clone();
        for (path, change) in changes {
            match change {
                Some((text, file)) => next.insert(path.clone(), (text.clone(), file.clone())),
                None => next.remove(path),
            };
        }
        let model = config::resolve_in(
            &self.sources.rule_set(None, None, Some(&next)),
            self.namespace.as_deref(),
        )?;
        let names: Vec<String> = changes.iter().map(|(path, _)| file_name(path)).collect();
        self.install(model, &names.join(" "))?;
        self.sources.applied.first_seen().forget_removed(
            self.sources
                .accepted
                .values()
                .flat_map(|(_, f)| &f.resources),
            next.values().flat_map(|(_, f)| &f.resources),
        );
        self.sources.accepted = next;
        for (path, change) in changes {
            self.sources.refused.remove(path);
            self.event(
                path,
                if change.is_some() {
                    "applied"
                } else {
                    "removed"
                },
                None,
            );
        }
        Ok(())
    }

    fn refuse(&mut self, path: &Path, text: Option<String>, err: &str) {
        let what = if text.is_some() {
            "refused"
        } else {
            "removal refused"
        };
        tracing::error!(file = %file_name(path), "{what}: {err}; the previous rules stay in force");
        self.observer.shared().apply_errors += 1;
        self.event(path, what, Some(err));
        self.sources.refused.insert(path.to_owned(), text);
    }

    fn event(&mut self, path: &Path, result: &str, error: Option<&str>) {
        if let Some(file) = &mut self.sources.events {
            let line = serde_json::json!({
                "generation": self.generation,
                "file": file_name(path),
                "result": result,
                "error": error,
            });
            // One write per line, so a reader never sees half a line.
            let _ = file.write_all(format!("{line}\n").as_bytes());
        }
    }
}

/// Opens the `--events` file for appending.
pub(super) fn open_events(path: &Path) -> Result<std::fs::File, AgentError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AgentError::Events {
            path: path.to_owned(),
            source,
        })
}

/// Watches the rules directory: a message on the channel per change (the
/// watcher stops when dropped). No directory: a channel nobody sends on.
pub(super) fn watch_rules(
    rules: Option<&Path>,
) -> Result<(Option<notify::RecommendedWatcher>, mpsc::Receiver<()>), AgentError> {
    let (tx, rx) = mpsc::channel::<()>(16);
    let Some(rules) = rules else {
        return Ok((None, rx));
    };
    let err = |source| AgentError::Watch {
        path: rules.to_owned(),
        source,
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        use notify::event::{AccessKind, AccessMode, EventKind};
        // inotify reports opens and reads too, the agent's own among them:
        // each rescan woke the next one (and rewrote the status), forever.
        // A file closed after writing is a change; other accesses are not.
        if let Ok(event) = &event
            && let EventKind::Access(kind) = event.kind
            && kind != AccessKind::Close(AccessMode::Write)
        {
            return;
        }
        let _ = tx.try_send(());
    })
    .map_err(err)?;
    watcher
        .watch(rules, notify::RecursiveMode::NonRecursive)
        .map_err(err)?;
    Ok((Some(watcher), rx))
}

pub(super) fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Every rules file directly in `dir` (as `config::load_dir` sees them), with its text.
fn read_rules_dir(dir: &Path) -> std::io::Result<Snapshot> {
    let mut files = Snapshot::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !config::is_rules_file(&path) {
            continue;
        }
        match config::read_rules_file(&path) {
            Ok(text) => {
                files.insert(path, Ok(text));
            }
            // Removed between read_dir and read: it is gone.
            Err(_) if !path.exists() => {}
            // Too big, not UTF-8, unreadable: refused like a file that does
            // not parse, and the others still go in.
            Err(err) => {
                files.insert(path, Err(err.to_string()));
            }
        }
    }
    Ok(files)
}
