//! The status file (`--status-file`), written from parts kept between
//! writes, so its cost follows what changed, not the size of the rules:
//! - each TCP route's JSON, built again only when its counters moved (or
//!   the rules, health or sockets changed), and kept only until the file
//!   is next written whole: a whole write builds the other routes' again
//!   (kept, they were ~5 MB at 10 000 routes, all the time);
//! - the kernel's names (route ids, counter slots), built for each write
//!   of the whole file (not kept: 2.9 MB of text at 10 000 routes that
//!   only a whole write, already proportional to the rules, needs);
//! - the rest (generation, HTTP routes, gateway sockets, events), small,
//!   built at each write.
//!
//! A large file is not written whole for a few routes' sake: the routes
//! whose JSON changed since it was, with the rest, go to its delta file
//! ([`crate::status::files`]) until the delta grows to a quarter of the
//! file, or the deltas written since it to its size.
//!
//! An idle agent writes nothing: it touches the files every
//! [`HEARTBEAT_MS`](crate::status::HEARTBEAT_MS) (their time is the status'
//! age for readers, see [`crate::status::files::read_status`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::Agent;
use crate::status::{RouteLine, Status, files::delta_path, summary_path};

/// The longest moved counters let the file wait (a large rule set's status
/// is costly to build): half of what readers call stale.
const MAX_WAIT: Duration = Duration::from_millis(crate::status::STALE_AFTER_MS / 2);

/// The most often the kernel's event counters alone rewrite the file (any
/// SYN in the namespace moves them, a health probe's too)...
const EVENTS_EVERY: Duration = Duration::from_secs(10);
/// ... and a large file less often: they take at most a thousandth of the
/// time (at 100 000 routes writing it costs ~0.1 s: every ~100 s).
const EVENTS_SHARE: u32 = 1000;

/// A status file (with its summary) under this size is always written
/// whole: its delta would save little.
const WHOLE_UNDER: usize = 1 << 20;

pub struct StatusFile {
    path: PathBuf,
    /// Whether anything it shows moved since it was last built (counters,
    /// requests, rules, health) but the kernel's event counters.
    pub moved: bool,
    /// Whether the kernel's event counters moved since then (every SYN in
    /// the namespace moves them: they alone refresh the file seldom).
    pub events_moved: bool,
    /// Per route of the model in force (by index), whether its part is to
    /// build again (shorter than the routes: the rest are).
    stale: Vec<bool>,
    /// The parts built since the file was last written whole (what its
    /// delta holds), by route index: its JSON and its line's (`RouteLine`).
    parts: BTreeMap<usize, (String, String)>,
    /// Whether a route's JSON changed since the last write.
    routes_changed: bool,
    /// The rest as last written, without its time.
    head: String,
    /// When the file was last built, and what building it cost.
    built: Option<(Instant, Duration)>,
    /// The id of the status file as last written whole (0: to write
    /// whole), and its size with its summary's.
    file_id: u64,
    file_bytes: usize,
    /// The bytes of the deltas written since.
    delta_written: usize,
}

impl StatusFile {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            moved: false,
            events_moved: false,
            stale: Vec::new(),
            parts: BTreeMap::new(),
            routes_changed: true,
            head: String::new(),
            built: None,
            file_id: 0,
            file_bytes: 0,
            delta_written: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rules changed: every part is built again.
    pub fn rules_changed(&mut self) {
        self.stale.clear();
        self.parts.clear();
        self.routes_changed = true;
        self.file_id = 0;
    }

    /// Every route's part is built again (health, sockets changed).
    pub fn all_routes_stale(&mut self) {
        self.stale.iter_mut().for_each(|r| *r = true);
    }

    /// These routes' counters moved.
    pub fn stale_routes(&mut self, routes: impl Iterator<Item = usize>) {
        for route in routes {
            if let Some(stale) = self.stale.get_mut(route) {
                *stale = true;
            }
        }
    }
}

impl Agent {
    /// Writes the status file if anything in it changed (atomically: a
    /// reader sees the old or the new file, never half of one); else, every
    /// [`HEARTBEAT_MS`](crate::status::HEARTBEAT_MS), only touches it.
    ///
    /// After an `event` (rules, health, sockets, the store) at once; else
    /// (the counters' tick) if the counters or requests moved, when due: it
    /// waits 20 times what the last write cost, at most `MAX_WAIT`; the
    /// kernel's event counters alone, `EVENTS_SHARE` times, at least
    /// `EVENTS_EVERY`.
    ///
    /// Returns whether it wrote a status whose routes changed: the rules
    /// changed since the last write (the event that changed them may have
    /// come before, its write deferred).
    pub(super) fn write_status(&mut self, event: bool) -> bool {
        let now = Instant::now();
        self.observer.status.moved |= event;
        let since = |(built, _): (Instant, Duration)| now.duration_since(built);
        let due = self
            .observer
            .status
            .built
            .is_none_or(|b| event || since(b) >= (b.1 * 20).min(MAX_WAIT))
            && self.observer.status.moved;
        let events_due = self.observer.status.events_moved
            && self
                .observer
                .status
                .built
                .is_none_or(|b| since(b) >= (b.1 * EVENTS_SHARE).max(EVENTS_EVERY));
        if !(due || events_due) {
            self.status_heartbeat();
            return false;
        }
        let head = self.status_head();
        self.observer.status.moved = false;
        self.observer.status.events_moved = false;
        self.refresh_parts();
        if self.sources.fleet.is_some() {
            self.publish_node_counters(&self.status_of_traffic(&head));
        }
        let file = &mut self.observer.status;
        // Compared without the time, so an idle agent only touches it.
        let text = serde_json::to_string(&head).expect("status serializes");
        if text == file.head && !file.routes_changed {
            file.built = Some((now, now.elapsed()));
            self.status_heartbeat();
            return false;
        }
        let routes_changed = file.routes_changed;
        let result = if file.whole_due(text.len()) {
            let names = self.kernel_names_json();
            let taken_at_ms = crate::cli::now_ms();
            let file = &self.observer.status;
            let id = file.next_id(taken_at_ms);
            let (stamped, summary) = file.assemble(&text, &names, taken_at_ms, id, |i| {
                self.model
                    .routes
                    .get(i)
                    .map(|route| route_part(&self.route_status(route)))
            });
            self.observer.status.write_whole(&stamped, &summary, id)
        } else {
            file.write_delta(&text, crate::cli::now_ms())
        };
        let file = &mut self.observer.status;
        // What it cost, written: what sets how often it is written.
        file.built = Some((now, now.elapsed()));
        match result {
            Ok(()) => {
                file.head = text;
                file.routes_changed = false;
            }
            Err(err) => {
                tracing::warn!(file = %file.path.display(), %err, "cannot write the status file");
            }
        }
        self.observer.shared().status_written = true;
        routes_changed
    }

    /// Builds the parts that are stale.
    fn refresh_parts(&mut self) {
        let n = self.model.routes.len();
        let mut stale = std::mem::take(&mut self.observer.status.stale);
        stale.resize(n, true);
        let mut changed = false;
        for (i, route) in self.model.routes.iter().enumerate() {
            if std::mem::take(&mut stale[i]) {
                let part = route_part(&self.route_status(route));
                self.observer.status.parts.insert(i, part);
                changed = true;
            }
        }
        let file = &mut self.observer.status;
        file.stale = stale;
        file.routes_changed |= changed;
    }

    /// `,"kernel_routes":{..},"counter_slots":{..}`, as the whole file has
    /// them (each left out when empty).
    fn kernel_names_json(&self) -> String {
        let (kernel_routes, counter_slots) = self.kernel_names();
        let mut names = String::new();
        if !kernel_routes.is_empty() {
            names.push_str(",\"kernel_routes\":");
            names.push_str(&serde_json::to_string(&kernel_routes).expect("serializes"));
        }
        if !counter_slots.is_empty() {
            names.push_str(",\"counter_slots\":");
            names.push_str(&serde_json::to_string(&counter_slots).expect("serializes"));
        }
        names
    }

    /// `head` with the TCP routes that saw traffic, for the node's counters
    /// in the store.
    fn status_of_traffic(&self, head: &Status) -> Status {
        let routes: BTreeSet<usize> = {
            let shared = self.observer.shared();
            shared.routes_of(&shared.counted).into_iter().collect()
        };
        Status {
            routes: routes
                .into_iter()
                .filter_map(|i| self.model.routes.get(i))
                .map(|route| self.route_status(route))
                .collect(),
            ..head.clone()
        }
    }

    /// Sets the status file's time (and its summary's) to now if it is
    /// older than the heartbeat.
    fn status_heartbeat(&self) {
        let heartbeat = Duration::from_millis(crate::status::HEARTBEAT_MS);
        let path = self.observer.status.path();
        let delta = delta_path(path);
        let fresh = [path, &delta]
            .into_iter()
            .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .filter_map(|t| t.elapsed().ok())
            .any(|age| age < heartbeat);
        if fresh {
            return;
        }
        let now = std::time::SystemTime::now();
        for path in [summary_path(path), path.to_owned(), delta] {
            let touched = std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(now));
            // No delta: the file is whole.
            let no_delta = |err: &std::io::Error| {
                err.kind() == std::io::ErrorKind::NotFound && path != self.observer.status.path
            };
            if let Err(err) = touched
                && !no_delta(&err)
            {
                tracing::warn!(file = %path.display(), %err, "cannot touch the status file");
            }
        }
    }
}

/// A route's part: its JSON and its line's, kept without the room grown
/// while writing them (up to as much again).
fn route_part(status: &crate::status::RouteStatus) -> (String, String) {
    let mut json = serde_json::to_string(status).expect("status serializes");
    let mut line = serde_json::to_string(&RouteLine::of(status)).expect("serializes");
    json.shrink_to_fit();
    line.shrink_to_fit();
    (json, line)
}

impl StatusFile {
    /// The id of the file written whole at `taken_at_ms`: ids grow, also
    /// across restarts (a reader holding a delta of the agent before must
    /// not take it for this file's).
    fn next_id(&self, taken_at_ms: u64) -> u64 {
        taken_at_ms.max(self.file_id + 1)
    }

    /// The whole file, `head` (JSON, taken at 0) stamped with the time and
    /// with the routes and the kernel's `names` (see `kernel_names_json`)
    /// put in; and its summary ([`crate::status::Summary`]). The routes'
    /// parts: those built since the last whole write, `build` the others
    /// (by index, until it gives none).
    fn assemble(
        &self,
        head: &str,
        names: &str,
        taken_at_ms: u64,
        file_id: u64,
        mut build: impl FnMut(usize) -> Option<(String, String)>,
    ) -> (String, String) {
        let head = stamp(head, taken_at_ms, file_id);
        let mut summary = String::with_capacity(self.file_bytes / 4 + head.len());
        summary.push_str("{\"head\":");
        summary.push_str(&head);
        summary.push_str(",\"routes\":[");
        let mut out = String::with_capacity(self.file_bytes + names.len());
        // `routes` is the first field that can be empty, after the rules'
        // description, a JSON string (its quotes escaped): the first
        // `"routes":[]` is the field.
        let (before, after) = head
            .split_once("\"routes\":[]")
            .expect("the status has its routes field");
        out.push_str(before);
        out.push_str("\"routes\":[");
        for i in 0.. {
            let now;
            let (json, line) = match self.parts.get(&i) {
                Some(part) => part,
                None => match build(i) {
                    Some(part) => {
                        now = part;
                        &now
                    }
                    None => break,
                },
            };
            if i > 0 {
                out.push(',');
                summary.push(',');
            }
            out.push_str(json);
            summary.push_str(line);
        }
        out.push(']');
        summary.push_str("]}");
        let after = after.strip_suffix('}').expect("the status is an object");
        out.push_str(after);
        out.push_str(names);
        out.push('}');
        (out, summary)
    }
}

impl StatusFile {
    /// Whether the next write is whole: none yet, a small file, or a
    /// delta (with a head of `head` bytes) grown to a quarter of it, or
    /// the deltas since it to its size.
    fn whole_due(&self, head: usize) -> bool {
        if self.file_id == 0 || self.file_bytes < WHOLE_UNDER {
            return true;
        }
        let delta = head
            + self
                .parts
                .values()
                .map(|(json, line)| json.len() + line.len() + 24)
                .sum::<usize>();
        delta * 4 >= self.file_bytes || self.delta_written + delta >= self.file_bytes
    }

    /// Writes the status file and its summary whole (as [`Self::assemble`]
    /// made them, as file `id`), then removes the delta.
    fn write_whole(&mut self, stamped: &str, summary: &str, id: u64) -> std::io::Result<()> {
        // Written again whole next time, unless all of this lands.
        self.file_id = 0;
        // The summary first: a reader of both never sees a summary older
        // than the status.
        self.path.parent().map_or(Ok(()), std::fs::create_dir_all)?;
        write_atomically(&summary_path(&self.path), summary)?;
        write_atomically(&self.path, stamped)?;
        match std::fs::remove_file(delta_path(&self.path)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        self.file_id = id;
        self.file_bytes = stamped.len() + summary.len();
        self.parts.clear();
        self.delta_written = 0;
        Ok(())
    }

    /// Writes the delta: `head` and the routes changed since the status
    /// file was written whole.
    fn write_delta(&mut self, head: &str, taken_at_ms: u64) -> std::io::Result<()> {
        let head = stamp(head, taken_at_ms, 0);
        let parts: Vec<(&usize, &(String, String))> = self.parts.iter().collect();
        let mut out = String::with_capacity(
            head.len()
                + parts
                    .iter()
                    .map(|(_, p)| p.0.len() + p.1.len() + 24)
                    .sum::<usize>(),
        );
        let _ = write!(out, "{{\"base\":{},\"head\":{head}", self.file_id);
        for (field, line) in [("routes", false), ("lines", true)] {
            let _ = write!(out, ",\"{field}\":[");
            for (n, (i, (json, summary))) in parts.iter().enumerate() {
                let part = if line { summary } else { json };
                let comma = if n > 0 { "," } else { "" };
                let _ = write!(out, "{comma}[{i},{part}]");
            }
            out.push(']');
        }
        out.push('}');
        write_atomically(&delta_path(&self.path), &out)?;
        self.delta_written += out.len();
        Ok(())
    }
}

/// `head` (a status JSON, taken at 0) taken at `taken_at_ms`, with
/// `file_id` (unless 0).
fn stamp(head: &str, taken_at_ms: u64, file_id: u64) -> String {
    // `taken_at_ms` follows the generation and the rules' description (a
    // JSON string, its quotes escaped): its first `"taken_at_ms":0` is
    // the field.
    let id = if file_id == 0 {
        String::new()
    } else {
        format!("\"file_id\":{file_id},")
    };
    head.replacen(
        "\"taken_at_ms\":0,",
        &format!("\"taken_at_ms\":{taken_at_ms},{id}"),
        1,
    )
}

/// `text` to `path` through a temporary file renamed over it.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Summary;

    #[test]
    fn the_file_is_the_head_stamped_with_its_parts_put_in() {
        let mut file = StatusFile::new(PathBuf::from("/nonexistent/status.json"));
        let head = Status {
            generation: 3,
            // A description that holds the field's text is not the field.
            rules: "\"taken_at_ms\":0,\"routes\":[]".to_owned(),
            ..Status::default()
        };
        let route = crate::status::RouteStatus {
            route: "default/a/tcp[0]/port 9000".to_owned(),
            ..Default::default()
        };
        // Route 1's part was built since the last whole write: it is the
        // one written, not built again.
        let built = crate::status::RouteStatus {
            route: "default/b/tcp[0]/port 9000".to_owned(),
            ..Default::default()
        };
        file.parts.insert(1, route_part(&built));
        let names = ",\"kernel_routes\":{\"7\":\"default/a/tcp[0]/port 9000 ipv4\"}";
        let text = serde_json::to_string(&head).expect("serializes");
        let (status, summary) = file.assemble(&text, names, 1234, 5, |i| {
            (i < 3).then(|| route_part(&route))
        });
        let status: Status = serde_json::from_str(&status).expect("the status parses");
        assert_eq!(status.rules, head.rules);
        assert_eq!(status.taken_at_ms, 1234);
        assert_eq!(status.routes, [route.clone(), built.clone(), route.clone()]);
        assert_eq!(status.kernel_routes[&7], "default/a/tcp[0]/port 9000 ipv4");
        let summary: Summary = serde_json::from_str(&summary).expect("the summary parses");
        assert_eq!(summary.head.taken_at_ms, 1234);
        assert_eq!(
            summary.routes,
            [
                RouteLine::of(&route),
                RouteLine::of(&built),
                RouteLine::of(&route)
            ]
        );
    }

    /// A large file is written whole once, then only the routes that
    /// changed, to its delta; readers see the status with the delta
    /// applied; once the delta has grown to a quarter of the file, the
    /// file is written whole again and the delta removed.
    #[test]
    fn a_large_file_gets_a_delta_of_the_routes_that_changed() {
        let dir = std::env::temp_dir().join(format!("ts-status-delta-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("status.json");
        let mut file = StatusFile::new(path.clone());
        // 4 000 routes of ~300 bytes: over `WHOLE_UNDER`.
        let route = |i: usize, total: u64| crate::status::RouteStatus {
            route: format!("default/svc-{i:05}/tcp[0]/port 9000"),
            kind: "mesh".to_owned(),
            service: format!("svc-{i:05}.bench.local:9000"),
            destinations: vec![crate::status::DestinationStatus {
                host: format!("svc-{i:05}.bench.local"),
                weight: 100,
                connections_total: total,
                endpoints: vec![crate::status::EndpointStatus {
                    address: "127.0.0.1:19001".to_owned(),
                    state: "ok".to_owned(),
                    connections_total: total,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut routes: Vec<_> = (0..4000).map(|i| route(i, 0)).collect();
        let head = |generation| {
            serde_json::to_string(&Status {
                generation,
                ..Status::default()
            })
            .expect("serializes")
        };
        // As the agent writes it whole: the parts built since, the rest
        // built now.
        let write_whole = |file: &mut StatusFile, generation, at, routes: &[_]| {
            let id = file.next_id(at);
            let (stamped, summary) = file.assemble(&head(generation), "", at, id, |i| {
                routes.get(i).map(route_part)
            });
            file.write_whole(&stamped, &summary, id)
        };
        assert!(file.whole_due(100), "the first write is whole");
        write_whole(&mut file, 1, 1000, &routes).expect("write whole");
        assert!(file.file_bytes > WHOLE_UNDER);
        let whole = std::fs::metadata(&path).expect("status file").len();

        // Two routes moved: the delta holds them, the file is not written.
        for i in [7, 3999] {
            routes[i] = route(i, 5);
            file.parts.insert(i, route_part(&routes[i]));
        }
        assert!(!file.whole_due(100));
        file.write_delta(&head(2), 2000).expect("write the delta");
        let delta = std::fs::metadata(delta_path(&path)).expect("delta").len();
        assert!(delta * 100 < whole, "delta {delta} bytes, file {whole}");
        let status = crate::status::files::read_status(&path).expect("read");
        // (As of the files' time: just written.)
        assert_eq!(status.generation, 2);
        assert_eq!(status.routes, routes);
        let summary = crate::status::files::read_summary(&path).expect("read the summary");
        assert_eq!(summary.head.generation, 2);
        let lines: Vec<RouteLine> = routes.iter().map(RouteLine::of).collect();
        assert_eq!(summary.routes, lines);
        // `status ROUTE`: the routes asked for, from the delta or the file.
        let some = crate::status::files::read_routes(&path, |key, service| {
            key.starts_with("default/svc-03999/") || service == "svc-00100.bench.local:9000"
        })
        .expect("read some routes");
        assert_eq!(some.generation, 2);
        assert_eq!(some.routes, [routes[100].clone(), routes[3999].clone()]);

        // A delta naming another writing of the file is not applied to it:
        // the reader tries again, then says so.
        let text = std::fs::read_to_string(delta_path(&path)).expect("delta");
        let other = text.replacen(&format!("\"base\":{}", file.file_id), "\"base\":1", 1);
        std::fs::write(delta_path(&path), other).expect("write");
        assert!(matches!(
            crate::status::files::read_status(&path),
            Err(crate::status::files::ReadError::Torn { .. })
        ));
        assert!(matches!(
            crate::status::files::read_routes(&path, |_, _| true),
            Err(crate::status::files::ReadError::Torn { .. })
        ));
        std::fs::write(delta_path(&path), text).expect("write");

        // A quarter of the routes moved: written whole, the delta removed.
        for (i, r) in routes.iter_mut().enumerate().take(1000) {
            *r = route(i, 9);
            file.parts.insert(i, route_part(r));
        }
        assert!(file.whole_due(100));
        // (The routes as they were built before, but for those parts.)
        let before: Vec<_> = (0..4000)
            .map(|i| {
                if i < 1000 {
                    route(i, 0)
                } else {
                    routes[i].clone()
                }
            })
            .collect();
        write_whole(&mut file, 3, 3000, &before).expect("write whole");
        assert!(!delta_path(&path).exists());
        let status = crate::status::files::read_status(&path).expect("read");
        assert_eq!((status.generation, status.routes.len()), (3, 4000));
        assert_eq!(status.routes, routes);
        assert!(file.parts.is_empty(), "no part kept after a whole write");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
