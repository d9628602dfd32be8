//! The status on disk: the status file (`--status-file`), its summary
//! ([`summary_path`]) and, for a large rule set, a delta file
//! ([`delta_path`]) with what changed since the two were written.
//!
//! Writing 100 000 routes' status costs a tenth of a second; most of it
//! does not change from one second to the next. So once the status file is
//! large, the agent writes only the routes whose status changed, with the
//! small rest (generation, HTTP routes, events...), to the delta file, and
//! writes the status file and its summary again whole only when the delta
//! grows to a share of them. Each file is written to a temporary file
//! renamed over it: a reader sees a whole old or a whole new one.
//!
//! The delta names the status file it applies to (`base`, the status'
//! [`Status::file_id`]); a reader reads the delta, then the status file,
//! and reads again when they do not go together (the agent wrote the
//! status file whole in between, then removed the delta). Without a delta
//! the status file is the status.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use serde::{Deserialize, de::DeserializeOwned};

use super::{RouteLine, RouteStatus, Status, Summary, summary_path};

/// Where the delta of the status file `status` is: `status.json` ->
/// `status.delta.json`.
pub fn delta_path(status: &Path) -> PathBuf {
    status.with_extension("delta.json")
}

/// The delta file as the status reader reads it: `{"base":ID,"head":
/// STATUS,"routes":[[INDEX,ROUTE],...],"lines":[[INDEX,LINE],...]}`, the
/// head without routes and kernel names, the routes by their index in
/// the status file's `routes`, the lines by theirs in the summary's.
#[derive(Deserialize)]
struct StatusDelta {
    base: u64,
    head: Status,
    routes: Vec<(usize, RouteStatus)>,
}

/// The delta file as the summary reader reads it.
#[derive(Deserialize)]
struct SummaryDelta {
    base: u64,
    head: Status,
    lines: Vec<(usize, RouteLine)>,
}

/// A reader that tried this often and always found the agent between a
/// delta and the status file it names gives up.
const TRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(
        "cannot read {path}: {source}; is the agent running (`traffic-shift run`), with this --status-file?"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an agent status file: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path} and its delta {delta} never went together in {TRIES} reads: is another agent writing them?"
    )]
    Torn { path: PathBuf, delta: PathBuf },
}

/// The status file `path` with its delta applied, as of the newest of the
/// files' times (an idle agent touches them instead of writing the same
/// status again).
pub fn read_status(path: &Path) -> Result<Status, ReadError> {
    read_with_delta(
        path,
        path,
        |s: &Status| s.file_id,
        |status, delta: StatusDelta| {
            (delta.base == status.file_id).then(|| {
                let mut routes = std::mem::take(&mut status.routes);
                for (i, route) in delta.routes {
                    if let Some(slot) = routes.get_mut(i) {
                        *slot = route;
                    }
                }
                let names = (
                    std::mem::take(&mut status.kernel_routes),
                    std::mem::take(&mut status.counter_slots),
                );
                *status = Status {
                    routes,
                    kernel_routes: names.0,
                    counter_slots: names.1,
                    ..delta.head
                };
            })
        },
    )
    .map(|(mut status, touched_ms)| {
        status.hold_until(touched_ms);
        status
    })
}

/// The summary of the status file `path`, with the delta applied, as of
/// the newest of the files' times.
pub fn read_summary(path: &Path) -> Result<Summary, ReadError> {
    read_with_delta(
        path,
        &summary_path(path),
        |s: &Summary| s.head.file_id,
        |summary, delta: SummaryDelta| {
            (delta.base == summary.head.file_id).then(|| {
                for (i, line) in delta.lines {
                    if let Some(slot) = summary.routes.get_mut(i) {
                        *slot = line;
                    }
                }
                summary.head = delta.head;
            })
        },
    )
    .map(|(mut summary, touched_ms)| {
        summary.head.hold_until(touched_ms);
        summary
    })
}

/// `file` (the status file or its summary) and the delta of the status
/// file `status`, applied with `apply` if it names `file` (`apply` says
/// whether it did), and the newest time of the two.
fn read_with_delta<T: DeserializeOwned, D: DeserializeOwned>(
    status: &Path,
    file: &Path,
    id: impl Fn(&T) -> u64,
    apply: impl Fn(&mut T, D) -> Option<()>,
) -> Result<(T, u64), ReadError> {
    let delta_path = delta_path(status);
    for _ in 0..TRIES {
        let delta = match read_json::<D>(&delta_path) {
            Ok(delta) => Some(delta),
            Err(ReadError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                None
            }
            Err(err) => return Err(err),
        };
        let (mut value, touched_ms) = read_json::<T>(file)?;
        let Some((delta, delta_ms)) = delta else {
            return Ok((value, touched_ms));
        };
        // A status file of an earlier agent (no id) has no delta.
        if id(&value) == 0 {
            return Ok((value, touched_ms));
        }
        if apply(&mut value, delta).is_some() {
            return Ok((value, touched_ms.max(delta_ms)));
        }
    }
    Err(ReadError::Torn {
        path: file.to_owned(),
        delta: delta_path,
    })
}

/// A JSON file, and its time (Unix, milliseconds).
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<(T, u64), ReadError> {
    let read = |source| ReadError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read)?;
    let touched_ms = file
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(read)?;
    let value = serde_json::from_str(&text).map_err(|source| ReadError::Parse {
        path: path.to_owned(),
        source,
    })?;
    Ok((value, touched_ms))
}
