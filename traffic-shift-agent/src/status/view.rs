//! Which part of the status `traffic-shift status` shows: every route in
//! full while there are few; a line per route when there are many (over
//! [`SUMMARY_OVER`]); one route (or every rule of a service) in full when
//! named.
//!
//! The summary line of a route: its key, its split as configured
//! (`v1 80% v2 20%`), its connections (requests) in the last minute with
//! the observed split, and its total; a route with no traffic in the last
//! minute shows `-`.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use super::{HttpRouteStatus, RouteStatus, Status, render};

/// The status file's companion (`summary_path`): the status but its TCP
/// routes, and a line per TCP route; what `status` reads when there are
/// many (a tenth of the status file's size).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The status, its `routes` empty.
    pub head: Status,
    pub routes: Vec<RouteLine>,
}

/// A TCP route in a line: its key and per destination its name, weight,
/// connections in the last minute and in total.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteLine {
    pub route: String,
    pub destinations: Vec<(String, u32, u64, u64)>,
}

impl RouteLine {
    pub fn of(route: &RouteStatus) -> Self {
        Self {
            route: route.route.clone(),
            destinations: route
                .destinations
                .iter()
                .map(|d| {
                    (
                        name(&d.host, d.subset.as_deref()).to_owned(),
                        d.weight,
                        d.connections_last_minute,
                        d.connections_total,
                    )
                })
                .collect(),
        }
    }
}

/// Where the summary of the status file `status` is: `status.json` ->
/// `status.summary.json`.
pub fn summary_path(status: &std::path::Path) -> std::path::PathBuf {
    status.with_extension("summary.json")
}

/// Routes (TCP and HTTP) over which `status` shows a line per route.
pub const SUMMARY_OVER: usize = 30;

/// What to show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// One route: a route key (`default/reviews/http[0]`), a prefix of one
    /// ending at a `/` (`default/reviews`: every rule of the
    /// VirtualService), or a service (`reviews.default.svc.cluster.local`
    /// or with its `:port`).
    pub route: Option<String>,
    /// Every route in full however many there are.
    pub full: bool,
    /// With a line per route, only this many, the busiest in the last
    /// minute (`--watch` fits its screen: a live view of the busiest, as
    /// `top`).
    pub busiest: Option<usize>,
}

/// `route` not in the status.
#[derive(Debug, thiserror::Error)]
#[error(
    "no route {0} in force: name a route key (default/tcp-echo/tcp[0]/port 9000 ipv4), a \
     VirtualService (default/tcp-echo) or a service (tcp-echo.local); `traffic-shift status` lists them"
)]
pub struct NoSuchRoute(pub String);

impl View {
    /// Writes `status` as this view shows it.
    pub fn render(
        &self,
        mut status: Status,
        width: usize,
        now_ms: u64,
        out: &mut impl Write,
    ) -> Result<(), ViewError> {
        if let Some(route) = &self.route {
            status.routes.retain(|r| self.shows(&r.route, &r.service));
            status
                .http_routes
                .retain(|r| self.shows(&r.route, &r.service));
            if status.routes.is_empty() && status.http_routes.is_empty() {
                return Err(ViewError::NoSuchRoute(NoSuchRoute(route.clone())));
            }
            status.gateway_endpoints.clear();
            status.events.clear();
        } else if self.summarizes(status.routes.len() + status.http_routes.len()) {
            let lines: Vec<RouteLine> = status.routes.iter().map(RouteLine::of).collect();
            status.routes.clear();
            return Ok(summary(
                &status,
                &lines,
                lines.len(),
                self.busiest,
                width,
                now_ms,
                out,
            )?);
        }
        Ok(render(&status, width, now_ms, out)?)
    }

    /// Whether this view shows the route `key` of `service` (`host:port`):
    /// every route, or the one named.
    pub fn shows(&self, key: &str, service: &str) -> bool {
        self.route
            .as_deref()
            .is_none_or(|query| names(query, key, service))
    }

    /// Whether this view of `routes` routes is a line per route.
    pub fn summarizes(&self, routes: usize) -> bool {
        self.route.is_none() && !self.full && routes > SUMMARY_OVER
    }

    /// Writes `summary` (its lines: `summarizes` said so), whose file has
    /// `tcp_routes` lines: all of them, or at least the [`View::busiest`]
    /// ([`super::files::read_busiest`]).
    pub fn render_summary(
        &self,
        summary: &Summary,
        tcp_routes: usize,
        width: usize,
        now_ms: u64,
        out: &mut impl Write,
    ) -> io::Result<()> {
        self::summary(
            &summary.head,
            &summary.routes,
            tcp_routes,
            self.busiest,
            width,
            now_ms,
            out,
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    NoSuchRoute(#[from] NoSuchRoute),
    #[error(transparent)]
    Write(#[from] io::Error),
}

/// Whether `query` names the route `key` of `service` (`host:port`).
fn names(query: &str, key: &str, service: &str) -> bool {
    let prefix = |whole: &str, sep: char| {
        whole
            .strip_prefix(query)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(sep))
    };
    prefix(key, '/') || prefix(service, ':')
}

/// A route in the table: its key, per destination (name, weight, per
/// minute), its total.
struct Item<'a> {
    key: &'a str,
    split: Vec<(&'a str, u32, u64)>,
    total: u64,
}

/// A line per route under the status' header: `status` (its
/// `tcp_routes` TCP routes are `lines`, or the busiest of them in their
/// order); only the `busiest` when given.
fn summary<'a>(
    status: &'a Status,
    lines: &'a [RouteLine],
    tcp_routes: usize,
    busiest: Option<usize>,
    width: usize,
    now_ms: u64,
    out: &mut impl Write,
) -> io::Result<()> {
    let head = Status {
        http_routes: Vec::new(),
        ..status.clone()
    };
    let mut header = Vec::new();
    render(&head, width, now_ms, &mut header)?;
    let header = String::from_utf8_lossy(&header);
    // The header's first lines (rules, staleness), then the table, then
    // the rest (gateway sockets, kernel counters).
    let (top, rest) = header.split_once("\n\n").unwrap_or((&header, ""));
    writeln!(out, "{top}")?;
    writeln!(out)?;
    let tcp = |line: &'a RouteLine| Item {
        key: &line.route,
        split: line
            .destinations
            .iter()
            .map(|(name, weight, minute, _)| (name.as_str(), *weight, *minute))
            .collect(),
        total: line.destinations.iter().map(|d| d.3).sum(),
    };
    let http = |r: &'a HttpRouteStatus| Item {
        key: &r.route,
        split: r
            .destinations
            .iter()
            .map(|d| {
                (
                    name(&d.host, d.subset.as_deref()),
                    d.weight,
                    d.requests_last_minute,
                )
            })
            .collect(),
        total: r.destinations.iter().map(|d| d.requests_total).sum(),
    };
    let n = tcp_routes + status.http_routes.len();
    // The routes at hand: the busiest of the TCP ones are among their
    // busiest (HTTP routes come after them in the order).
    let at_hand = lines.len() + status.http_routes.len();
    let (items, note): (Vec<Item>, String) = match busiest {
        Some(k) if k < n => {
            // The k busiest, in the rules' order; only they are built (at
            // 100 000 routes a screen's worth is a two-thousandth).
            let minute = |i: usize| match lines.get(i) {
                Some(line) => line.destinations.iter().map(|d| d.2).sum(),
                None => status.http_routes[i - lines.len()]
                    .destinations
                    .iter()
                    .map(|d| d.requests_last_minute)
                    .sum::<u64>(),
            };
            let items = busiest_of(at_hand, k, minute)
                .into_iter()
                .map(|i| match lines.get(i) {
                    Some(line) => tcp(line),
                    None => http(&status.http_routes[i - lines.len()]),
                })
                .collect();
            (
                items,
                format!(
                    "{n} routes: the {k} busiest in the last minute (`traffic-shift status` lists every one)"
                ),
            )
        }
        _ => (
            lines
                .iter()
                .map(tcp)
                .chain(status.http_routes.iter().map(http))
                .collect(),
            format!(
                "{n} routes: a line each (`traffic-shift status ROUTE` shows one in full, --full every one)"
            ),
        ),
    };
    writeln!(out, "{}", cut(&note, width))?;
    write_table(&items, width, out)?;
    if !rest.is_empty() {
        writeln!(out)?;
        write!(out, "{rest}")?;
    }
    Ok(())
}

/// The summary's table: a header, then a line per item, its columns
/// aligned, each line cut to `width`.
fn write_table(items: &[Item], width: usize, out: &mut impl Write) -> io::Result<()> {
    let mut rows = vec![[
        "ROUTE".to_owned(),
        "SPLIT".to_owned(),
        "PER MIN".to_owned(),
        "OBSERVED".to_owned(),
        "TOTAL".to_owned(),
    ]];
    rows.extend(items.iter().map(|it| row(it.key, &it.split, it.total)));
    let widths: [usize; 5] =
        std::array::from_fn(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0));
    let mut line = String::new();
    for r in &rows {
        line.clear();
        for (c, cell) in r.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let pad = widths[c].saturating_sub(cell.chars().count());
            let right = matches!(c, 2 | 4);
            if right {
                line.extend(std::iter::repeat_n(' ', pad));
            }
            line.push_str(cell);
            if !right {
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(out, "{}", cut(line.trim_end(), width))?;
    }
    Ok(())
}

/// The indexes of the `k` busiest of `n` (by `minute`; the first among
/// equals), in order: a partial selection, not a sort of all `n`.
pub(crate) fn busiest_of(n: usize, k: usize, minute: impl Fn(usize) -> u64) -> Vec<usize> {
    let mut order: Vec<(std::cmp::Reverse<u64>, usize)> =
        (0..n).map(|i| (std::cmp::Reverse(minute(i)), i)).collect();
    if k > 0 && k < n {
        order.select_nth_unstable(k - 1);
    }
    let mut kept: Vec<usize> = order[..k.min(n)].iter().map(|&(_, i)| i).collect();
    kept.sort_unstable();
    kept
}

/// A destination's name in a split: its subset, else its host's first label.
fn name<'a>(host: &'a str, subset: Option<&'a str>) -> &'a str {
    subset.unwrap_or_else(|| host.split('.').next().unwrap_or(host))
}

/// The cells of a route: key, configured split, per minute, observed split, total.
fn row(key: &str, split: &[(&str, u32, u64)], total: u64) -> [String; 5] {
    let weights: u64 = split.iter().map(|(_, w, _)| u64::from(*w)).sum();
    let minute: u64 = split.iter().map(|(_, _, n)| n).sum();
    let shares = |part: fn(&(&str, u32, u64)) -> u64, whole: u64| {
        if whole == 0 {
            return "-".to_owned();
        }
        split
            .iter()
            .map(|d| format!("{} {}%", d.0, (part(d) * 100 + whole / 2) / whole))
            .collect::<Vec<_>>()
            .join(" ")
    };
    [
        key.to_owned(),
        shares(|d| u64::from(d.1), weights),
        minute.to_string(),
        shares(|d| d.2, minute),
        total.to_string(),
    ]
}

/// `line` cut to `width` characters, `…` last when cut.
fn cut(line: &str, width: usize) -> std::borrow::Cow<'_, str> {
    if line.len() <= width || line.chars().count() <= width {
        return line.into();
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::DestinationStatus;

    fn route(i: usize, conns: [u64; 2]) -> RouteStatus {
        RouteStatus {
            route: format!("default/svc-{i:03}/tcp[0]/port 9000 ipv4"),
            kind: "mesh".to_owned(),
            service: format!("svc-{i:03}.local:9000"),
            destinations: [("v1", 80, conns[0]), ("v2", 20, conns[1])]
                .into_iter()
                .map(|(subset, weight, n)| DestinationStatus {
                    host: format!("svc-{i:03}.local"),
                    subset: Some(subset.to_owned()),
                    weight,
                    connections_last_minute: n,
                    connections_total: n * 10,
                    ..DestinationStatus::default()
                })
                .collect(),
        }
    }

    fn status(n: usize) -> Status {
        Status {
            generation: 2,
            rules: "/srv/rules".to_owned(),
            taken_at_ms: 1_000,
            routes: (0..n).map(|i| route(i, [8, 2])).collect(),
            events: [("rewritten".to_owned(), 10)].into(),
            ..Status::default()
        }
    }

    fn shown(view: &View, status: Status) -> String {
        let mut out = Vec::new();
        view.render(status, 100, 2_000, &mut out).expect("renders");
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn many_routes_show_a_line_each() {
        let mut many = status(SUMMARY_OVER + 1);
        many.routes[1] = route(1, [0, 0]);
        let out = shown(&View::default(), many);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "rules /srv/rules, generation 2, as of 1 s ago");
        assert_eq!(
            lines[2],
            "31 routes: a line each (`traffic-shift status ROUTE` shows one in full, --full every one)"
        );
        assert_eq!(
            lines[3],
            "ROUTE                                  SPLIT          PER MIN  OBSERVED       TOTAL"
        );
        assert_eq!(
            lines[4],
            "default/svc-000/tcp[0]/port 9000 ipv4  v1 80% v2 20%       10  v1 80% v2 20%    100"
        );
        assert!(
            lines[5]
                .starts_with("default/svc-001/tcp[0]/port 9000 ipv4  v1 80% v2 20%        0  -"),
            "{}",
            lines[5]
        );
        assert_eq!(lines.len(), 4 + 31 + 3, "{out}");
        assert!(out.ends_with("KERNEL EVENTS\nrewritten 10\n"), "{out}");
    }

    #[test]
    fn a_watch_shows_the_busiest_routes_in_the_rules_order() {
        let mut many = status(SUMMARY_OVER + 10);
        for (i, r) in many.routes.iter_mut().enumerate() {
            *r = route(i, [0, 0]);
        }
        many.routes[20] = route(20, [50, 0]);
        many.routes[3] = route(3, [5, 5]);
        many.routes[33] = route(33, [70, 30]);
        let busiest = View {
            busiest: Some(3),
            ..View::default()
        };
        let out = shown(&busiest, many);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[2],
            "40 routes: the 3 busiest in the last minute (`traffic-shift status` lists every one)"
        );
        let keys: Vec<&str> = lines[4..7]
            .iter()
            .map(|l| l.split_whitespace().next().unwrap_or(""))
            .collect();
        assert_eq!(
            keys,
            [
                "default/svc-003/tcp[0]/port",
                "default/svc-020/tcp[0]/port",
                "default/svc-033/tcp[0]/port"
            ]
        );
        assert_eq!(lines[7], "");
    }

    #[test]
    fn few_routes_or_full_show_every_route_whole() {
        let few = shown(&View::default(), status(2));
        assert!(few.contains("DESTINATION"), "{few}");
        let full = View {
            full: true,
            ..View::default()
        };
        let all = shown(&full, status(SUMMARY_OVER + 1));
        assert_eq!(all.matches("DESTINATION").count(), SUMMARY_OVER + 1);
    }

    #[test]
    fn a_route_is_named_by_key_virtual_service_or_service() {
        for query in [
            "default/svc-007/tcp[0]/port 9000 ipv4",
            "default/svc-007",
            "svc-007.local",
            "svc-007.local:9000",
        ] {
            let view = View {
                route: Some(query.to_owned()),
                ..View::default()
            };
            let out = shown(&view, status(100));
            assert!(out.contains("svc-007"), "{query}: {out}");
            assert_eq!(out.matches("DESTINATION").count(), 1, "{query}: {out}");
        }
        let view = View {
            route: Some("default/svc-00".to_owned()),
            ..View::default()
        };
        let mut out = Vec::new();
        let err = view
            .render(status(3), 100, 2_000, &mut out)
            .expect_err("a prefix that does not end at a / names nothing");
        assert!(
            err.to_string()
                .starts_with("no route default/svc-00 in force"),
            "{err}"
        );
    }
}
