//! `lastTransitionTime` of the Gateway API status conditions: when each
//! condition last changed its `status` (`True`, `False`), as the spec's
//! `metav1.Condition` says. The rules resolve to the conditions alone
//! (`gateway_api::status`); the agent watches them change as the rules in
//! force change, and keeps the time of each change in
//! `<state-dir>/conditions.json`, so that a restart does not make every
//! condition new (in Kubernetes the status outlives the controller).
//!
//! A condition is named by its resource, where it sits (the resource's own
//! `conditions`, a parent's by its `parentRef`, a listener's by its name)
//! and its `type`. One that leaves the status is forgotten: if it comes
//! back, it is a new condition. A file that cannot be read is logged and
//! the times start again (they say when, not what, so nothing routes
//! differently); one that cannot be written is logged, and the times hold
//! until the agent stops.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde_json::Value as Json;
use traffic_shift_config::{self as config, model::StatusKey};

use super::write_atomic;

/// A condition's last `status` and when it took it (Unix milliseconds).
type Seen = (String, u64);

/// The transition times, and their file.
#[derive(Debug)]
pub struct Transitions {
    path: PathBuf,
    /// `<kind> <namespace>/<name> <where> <type>` to the condition's status
    /// and the time it took it.
    times: BTreeMap<String, Seen>,
}

impl Transitions {
    /// The file's name in the state directory.
    pub const FILE: &str = "conditions.json";

    /// Reads `<dir>/conditions.json` (none, or unreadable: no times yet).
    pub fn open(dir: &Path) -> Self {
        let path = dir.join(Self::FILE);
        let times = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text).unwrap_or_else(|error| {
                tracing::warn!(path = %path.display(), %error, "status conditions' transition times not read: they start again now");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        Self { path, times }
    }

    /// Takes the conditions of `statuses` (the rules in force) at `now_ms`:
    /// a condition not seen before, or whose status changed, transitioned
    /// now; one no longer there is forgotten. Saves the file if anything
    /// changed.
    pub fn observe(&mut self, statuses: &BTreeMap<StatusKey, Json>, now_ms: u64) {
        let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
        for (key, status) in statuses {
            for (at, _, condition) in conditions(status) {
                let name = condition_name(key, &at, condition);
                let status = condition["status"].as_str().unwrap_or_default().to_owned();
                let since = match self.times.get(&name) {
                    Some((was, since)) if *was == status => *since,
                    _ => now_ms,
                };
                seen.insert(name, (status, since));
            }
        }
        if seen != self.times {
            self.times = seen;
            self.save();
        }
    }

    /// Writes `lastTransitionTime` into each condition of `status`, the
    /// status of `key` in force.
    pub fn stamp(&self, key: &StatusKey, status: &mut Json) {
        let stamps: Vec<(String, u64)> = conditions(status)
            .into_iter()
            .filter_map(|(at, pointer, condition)| {
                let (_, ms) = self.times.get(&condition_name(key, &at, condition))?;
                Some((pointer, *ms))
            })
            .collect();
        for (pointer, ms) in stamps {
            if let Some(condition) = status.pointer_mut(&pointer).and_then(Json::as_object_mut) {
                condition.insert(
                    "lastTransitionTime".to_owned(),
                    Json::String(config::format_timestamp(ms)),
                );
            }
        }
    }

    fn save(&self) {
        let written: BTreeMap<&String, Json> = self
            .times
            .iter()
            .map(|(name, (status, ms))| {
                let time = config::format_timestamp_millis(*ms);
                (name, serde_json::json!({"status": status, "since": time}))
            })
            .collect();
        let text = serde_json::to_string_pretty(&written).unwrap_or_default() + "\n";
        if let Err(err) = write_atomic(&self.path, &text) {
            tracing::warn!(
                path = %self.path.display(),
                %err,
                "cannot keep the status conditions' transition times: after a restart they start again"
            );
        }
    }
}

fn parse(text: &str) -> Result<BTreeMap<String, Seen>, String> {
    let written: BTreeMap<String, Json> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    written
        .into_iter()
        .map(|(name, seen)| {
            let status = seen["status"].as_str();
            let since = seen["since"].as_str().and_then(config::parse_timestamp);
            match (status, since) {
                (Some(status), Some(ms)) => Ok((name, (status.to_owned(), ms))),
                _ => Err(format!("{name}: {seen} is not {{\"status\", \"since\"}}")),
            }
        })
        .collect()
}

/// `<kind> <namespace>/<name> <where> <type>`.
fn condition_name(key: &StatusKey, at: &str, condition: &Json) -> String {
    let type_ = condition["type"].as_str().unwrap_or_default();
    format!("{} {}/{} {at} {type_}", key.kind, key.namespace, key.name)
}

/// Where each condition of `status` sits (`-`: the resource's own,
/// `parent <parentRef>`, `listener <name>`), with the condition's JSON
/// pointer, for [`Transitions::stamp`] to reach it without a second walk.
fn conditions(status: &Json) -> Vec<(String, String, &Json)> {
    fn of<'s>(
        found: &mut Vec<(String, String, &'s Json)>,
        at: &str,
        pointer: &str,
        holder: &'s Json,
    ) {
        let list = holder.get("conditions").and_then(Json::as_array);
        for (i, condition) in list.into_iter().flatten().enumerate() {
            found.push((
                at.to_owned(),
                format!("{pointer}/conditions/{i}"),
                condition,
            ));
        }
    }
    let mut found = Vec::new();
    of(&mut found, "-", "", status);
    for (list, name) in [("parents", "parentRef"), ("listeners", "name")] {
        let items = status.get(list).and_then(Json::as_array);
        for (k, item) in items.into_iter().flatten().enumerate() {
            let at = format!("{} {}", &list[..list.len() - 1], item[name]);
            of(&mut found, &at, &format!("/{list}/{k}"), item);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::applied::tests::StateDir;

    fn key() -> StatusKey {
        StatusKey {
            kind: "HTTPRoute".into(),
            namespace: "default".into(),
            name: "web".into(),
        }
    }

    fn route(accepted: &str, resolved: &str) -> BTreeMap<StatusKey, Json> {
        let status = json!({"parents": [{
            "parentRef": {"name": "gw"},
            "conditions": [
                {"type": "Accepted", "status": accepted},
                {"type": "ResolvedRefs", "status": resolved},
            ],
        }]});
        BTreeMap::from([(key(), status)])
    }

    fn times(t: &Transitions, statuses: &BTreeMap<StatusKey, Json>) -> Vec<String> {
        let mut status = statuses[&key()].clone();
        t.stamp(&key(), &mut status);
        status["parents"][0]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                c["lastTransitionTime"]
                    .as_str()
                    .unwrap_or("none")
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn a_condition_keeps_its_time_until_its_status_changes_and_across_a_reopen() {
        let dir = StateDir::new("transitions-keeps");
        std::fs::create_dir_all(&dir.0).unwrap();
        let mut t = Transitions::open(&dir.0);
        let first = route("True", "True");
        t.observe(&first, 1_700_000_000_000);
        assert_eq!(
            times(&t, &first),
            ["2023-11-14T22:13:20Z", "2023-11-14T22:13:20Z"]
        );
        // The same status a minute later: the times stay.
        t.observe(&first, 1_700_000_060_000);
        assert_eq!(
            times(&t, &first),
            ["2023-11-14T22:13:20Z", "2023-11-14T22:13:20Z"]
        );
        // ResolvedRefs turns False: its time moves, Accepted's does not.
        let second = route("True", "False");
        t.observe(&second, 1_700_000_120_000);
        assert_eq!(
            times(&t, &second),
            ["2023-11-14T22:13:20Z", "2023-11-14T22:15:20Z"]
        );
        // A restart reads them back.
        let reopened = Transitions::open(&dir.0);
        assert_eq!(times(&reopened, &second), times(&t, &second));
        // Gone from the status, then back: a new condition.
        t.observe(&BTreeMap::new(), 1_700_000_180_000);
        t.observe(&second, 1_700_000_240_000);
        assert_eq!(
            times(&t, &second),
            ["2023-11-14T22:17:20Z", "2023-11-14T22:17:20Z"]
        );
    }

    #[test]
    fn an_unreadable_file_starts_the_times_again() {
        let dir = StateDir::new("transitions-unreadable");
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(dir.0.join(Transitions::FILE), "not json").unwrap();
        let mut t = Transitions::open(&dir.0);
        let statuses = route("True", "True");
        t.observe(&statuses, 1_700_000_000_000);
        assert_eq!(
            times(&t, &statuses),
            ["2023-11-14T22:13:20Z", "2023-11-14T22:13:20Z"]
        );
    }

    #[test]
    fn listeners_and_the_resources_own_conditions_are_stamped_too() {
        let dir = StateDir::new("transitions-listeners");
        std::fs::create_dir_all(&dir.0).unwrap();
        let mut t = Transitions::open(&dir.0);
        let gw = StatusKey {
            kind: "Gateway".into(),
            namespace: "default".into(),
            name: "gw".into(),
        };
        let status = json!({
            "conditions": [{"type": "Accepted", "status": "True"}],
            "listeners": [{"name": "http", "conditions": [{"type": "Programmed", "status": "True"}]}],
        });
        t.observe(
            &BTreeMap::from([(gw.clone(), status.clone())]),
            1_700_000_000_000,
        );
        let mut stamped = status;
        t.stamp(&gw, &mut stamped);
        assert_eq!(
            stamped["conditions"][0]["lastTransitionTime"],
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            stamped["listeners"][0]["conditions"][0]["lastTransitionTime"],
            "2023-11-14T22:13:20Z"
        );
    }
}
