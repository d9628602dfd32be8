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
    borrow::Cow,
    io::Read,
    path::{Path, PathBuf},
};

use serde::{
    Deserialize,
    de::{DeserializeOwned, IgnoredAny},
};
use serde_json::value::RawValue;

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

/// The status file as [`read_routes`] reads it: each route's names, its
/// destinations left as text; the kernel names skipped; the rest whole.
#[derive(Deserialize)]
struct StatusRoutes<'a> {
    #[serde(borrow)]
    routes: Vec<RouteRef<'a>>,
    #[serde(default)]
    #[expect(dead_code, reason = "read past, not kept")]
    kernel_routes: IgnoredAny,
    #[serde(default)]
    #[expect(dead_code, reason = "read past, not kept")]
    counter_slots: IgnoredAny,
    /// Without routes and kernel names: small.
    #[serde(flatten)]
    head: Status,
}

/// The delta file as [`read_routes`] reads it.
#[derive(Deserialize)]
struct RoutesDelta<'a> {
    base: u64,
    head: Status,
    #[serde(borrow)]
    routes: Vec<(usize, RouteRef<'a>)>,
}

/// A route of the status file, its destinations not parsed: reading one
/// allocates nothing (its strings are borrowed from the file's text).
#[derive(Deserialize)]
struct RouteRef<'a> {
    #[serde(borrow)]
    route: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    service: Cow<'a, str>,
    #[serde(borrow)]
    destinations: &'a RawValue,
}

impl RouteRef<'_> {
    fn parse(self) -> serde_json::Result<RouteStatus> {
        Ok(RouteStatus {
            route: self.route.into_owned(),
            kind: self.kind.into_owned(),
            service: self.service.into_owned(),
            destinations: serde_json::from_str(self.destinations.get())?,
        })
    }
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

/// The status file `path` with its delta applied, as [`read_status`] reads
/// it, but only the TCP routes `wanted` takes (by route key and service)
/// and without the kernel names: what `status ROUTE` shows. The other
/// routes are scanned, not built: at 100 000 routes that is most of the
/// time and memory of reading them all.
pub fn read_routes(path: &Path, wanted: impl Fn(&str, &str) -> bool) -> Result<Status, ReadError> {
    let delta_path = delta_path(path);
    let (mut status, touched_ms) = read_texts(path, path, |text, delta_text| {
        let file: StatusRoutes = parse(path, text)?;
        let (mut routes, mut head) = (file.routes, file.head);
        // A status file of an earlier agent (no id) has no delta.
        let with_delta = match delta_text.filter(|_| head.file_id != 0) {
            Some(delta_text) => {
                let delta: RoutesDelta = parse(&delta_path, delta_text)?;
                if delta.base != head.file_id {
                    return Ok(Taken::Torn);
                }
                for (i, route) in delta.routes {
                    if let Some(slot) = routes.get_mut(i) {
                        *slot = route;
                    }
                }
                head = delta.head;
                true
            }
            None => false,
        };
        let routes = routes
            .into_iter()
            .filter(|r| wanted(&r.route, &r.service))
            .map(RouteRef::parse)
            .collect::<Result<_, _>>()
            .map_err(|source| parse_error(path, source))?;
        Ok(Taken::of(Status { routes, ..head }, with_delta))
    })?;
    status.hold_until(touched_ms);
    Ok(status)
}

/// The summary file as [`read_busiest`] reads it: each line as text.
#[derive(Deserialize)]
struct SummaryLines<'a> {
    head: Status,
    #[serde(borrow)]
    routes: Vec<&'a RawValue>,
}

/// A summary line read for its connections in the last minute alone.
#[derive(Deserialize)]
struct LineMinute {
    destinations: MinuteSum,
}

/// The sum of the per-minute counts of a line's destinations (`[NAME,
/// WEIGHT,MINUTE,TOTAL]` each), read without building them.
struct MinuteSum(u64);

impl<'de> Deserialize<'de> for MinuteSum {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Sum;
        impl<'de> serde::de::Visitor<'de> for Sum {
            type Value = MinuteSum;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of [name, weight, minute, total]")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<MinuteSum, A::Error> {
                let mut sum = 0u64;
                while let Some((IgnoredAny, IgnoredAny, minute, IgnoredAny)) =
                    seq.next_element::<(IgnoredAny, IgnoredAny, u64, IgnoredAny)>()?
                {
                    sum = sum.saturating_add(minute);
                }
                Ok(MinuteSum(sum))
            }
        }
        deserializer.deserialize_seq(Sum)
    }
}

/// The summary of the status file `path` as [`read_summary`] reads it,
/// but of its lines only the `k` busiest in the last minute (the first in
/// the rules' order among equals), in the rules' order; and how many lines
/// it has. What `status --watch` shows of 100 000 routes is a screen's
/// worth: the others are scanned for their count, not built.
pub fn read_busiest(path: &Path, k: usize) -> Result<(Summary, usize), ReadError> {
    let file = summary_path(path);
    let delta_path = delta_path(path);
    let ((mut summary, n), touched_ms) = read_texts(path, &file, |text, delta_text| {
        let summary: SummaryLines = parse(&file, text)?;
        let (lines, mut head) = (summary.routes, summary.head);
        let mut changed = std::collections::HashMap::new();
        // A status file of an earlier agent (no id) has no delta.
        let with_delta = match delta_text.filter(|_| head.file_id != 0) {
            Some(delta_text) => {
                let delta: SummaryDelta = parse(&delta_path, delta_text)?;
                if delta.base != head.file_id {
                    return Ok(Taken::Torn);
                }
                changed.extend(delta.lines.into_iter().filter(|(i, _)| *i < lines.len()));
                head = delta.head;
                true
            }
            None => false,
        };
        let n = lines.len();
        let mut minutes = Vec::with_capacity(n);
        for (i, line) in lines.iter().enumerate() {
            minutes.push(match changed.get(&i) {
                Some(line) => line.destinations.iter().map(|d| d.2).sum(),
                None => parse::<LineMinute>(&file, line.get())?.destinations.0,
            });
        }
        let kept = super::view::busiest_of(n, k, |i| minutes[i]);
        let routes = kept
            .into_iter()
            .map(|i| match changed.remove(&i) {
                Some(line) => Ok(line),
                None => parse(&file, lines[i].get()),
            })
            .collect::<Result<_, _>>()?;
        Ok(Taken::of((Summary { head, routes }, n), with_delta))
    })?;
    summary.head.hold_until(touched_ms);
    Ok((summary, n))
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
    read_texts(status, file, |text, delta_text| {
        let delta: Option<D> = delta_text
            .map(|delta_text| parse(&delta_path, delta_text))
            .transpose()?;
        let mut value: T = parse(file, text)?;
        Ok(match delta {
            // A status file of an earlier agent (no id) has no delta.
            Some(delta) if id(&value) != 0 => match apply(&mut value, delta) {
                Some(()) => Taken::WithDelta(value),
                None => Taken::Torn,
            },
            _ => Taken::Alone(value),
        })
    })
}

/// What a reader made of a file and its delta.
enum Taken<T> {
    /// The file alone (no delta, or one it does not take).
    Alone(T),
    /// The file with its delta applied.
    WithDelta(T),
    /// The delta names another writing of the file: both are read again.
    Torn,
}

impl<T> Taken<T> {
    fn of(value: T, with_delta: bool) -> Self {
        if with_delta {
            Self::WithDelta(value)
        } else {
            Self::Alone(value)
        }
    }
}

/// Reads the delta of status file `status` (if there is one), then
/// `file`, and gives their texts to `take` until it takes them together;
/// with the time of what it took (the newest of the files' times).
fn read_texts<T>(
    status: &Path,
    file: &Path,
    mut take: impl FnMut(&str, Option<&str>) -> Result<Taken<T>, ReadError>,
) -> Result<(T, u64), ReadError> {
    let delta_path = delta_path(status);
    for _ in 0..TRIES {
        let delta = absent_is_none(read_text(&delta_path))?;
        let (text, touched_ms) = read_text(file)?;
        match take(&text, delta.as_ref().map(|(text, _)| text.as_str()))? {
            Taken::Alone(value) => return Ok((value, touched_ms)),
            Taken::WithDelta(value) => {
                let delta_ms = delta.map_or(0, |(_, ms)| ms);
                return Ok((value, touched_ms.max(delta_ms)));
            }
            Taken::Torn => {}
        }
    }
    Err(ReadError::Torn {
        path: file.to_owned(),
        delta: delta_path,
    })
}

/// `text`, the JSON of the file at `path`, parsed.
fn parse<'a, T: Deserialize<'a>>(path: &Path, text: &'a str) -> Result<T, ReadError> {
    serde_json::from_str(text).map_err(|source| parse_error(path, source))
}

fn parse_error(path: &Path, source: serde_json::Error) -> ReadError {
    ReadError::Parse {
        path: path.to_owned(),
        source,
    }
}

/// What a read of a file that may not be there (the delta) gave: `None`
/// when there is no such file.
fn absent_is_none<T>(read: Result<T, ReadError>) -> Result<Option<T>, ReadError> {
    match read {
        Ok(value) => Ok(Some(value)),
        Err(ReadError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// A file's text, and its time (Unix, milliseconds).
fn read_text(path: &Path) -> Result<(String, u64), ReadError> {
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
    Ok((text, touched_ms))
}
