//! `traffic-shift status` as text: a pure function of a [`Status`], the
//! width to fit and the time now, so its output is checked in full by
//! golden tests (`golden/*.txt`).
//!
//! Per route: the route key, its kind and service, then one row per
//! destination (configured weight, connections in the last minute, their
//! observed share, failures in the last minute, total connections, and a
//! bar of the observed share with `|` at the configured share), each
//! destination's endpoints below it; then the gateway endpoints' sockets and
//! the kernel event counters.
//!
//! HTTP routes (the L7 proxy's, per listener and `http[]` rule, a rule
//! selected by `match` with its match in words) follow the TCP routes in
//! the same form, with requests in place of connections: per destination
//! the weight, requests in the last minute, their share, 5xx and 4xx
//! answers in the last minute, p50 and p99 latency over it (`-` without
//! requests), the total, and the bar; endpoints with their state. Their
//! table drops the raw weight, the long headers and the total column (the
//! endpoint lines keep the totals) before the bar.
//!
//! Width: no line is longer than `width` characters. When the table does
//! not fit, long names are shortened in the middle (`tcp-ec…local`) to 20
//! characters; then the bar goes (names may shorten to 10); then the raw
//! weight; then the headers shorten (`CONN/MIN` to `CONN`, with a legend);
//! then the least useful numbers go: the total, the failures, the
//! connection count, in that order. Free text (route keys, paths, endpoint
//! lines) wraps with a hanging indent.
//!
//! Under the header, one line per Gateway this node does not serve (its
//! selector does not match `--node-labels`).
//!
//! The gateway endpoint lines start with the endpoint's address and its
//! socket state, and each kernel counter is its name followed by its count,
//! so scripts (and the end-to-end tests) can read both.

use std::io::{self, Write};

use super::{
    EndpointStatus, GatewayEndpoint, HttpDestinationStatus, HttpEndpointStatus, HttpRouteStatus,
    RouteStatus, Status,
};

/// A status older than this was not refreshed by a running agent (it
/// rewrites the file at least every [`super::HEARTBEAT_MS`]).
pub const STALE_AFTER_MS: u64 = 10_000;

/// Narrowest bar worth drawing.
const BAR_MIN: usize = 10;
/// Over a bar wide enough; else the legend goes below the routes.
const BAR_HEADER: &str = "OBSERVED, | WEIGHT";
const BAR_LEGEND: &str = "OBSERVED: # the share of the last minute's connections, | the weight";
const SHORT_LEGEND: &str = "CONN, FAIL: in the last minute";
const HTTP_BAR_LEGEND: &str = "OBSERVED: # the share of the last minute's requests, | the weight";
const HTTP_SHORT_LEGEND: &str = "REQ, 5XX, 4XX: in the last minute";
/// With a bar, names keep at least this many characters (or their own
/// length): the bar is dropped before names shorten further.
const NAME_WITH_BAR: usize = 20;
/// Without a bar, names shorten to this before numbers are dropped.
const NAME_MIN: usize = 10;
/// Destination rows are indented under their route, endpoints further.
const TABLE_INDENT: usize = 2;
const ENDPOINT_INDENT: usize = 4;
/// Continuation lines of wrapped text, relative to their first line.
const HANGING_INDENT: usize = 4;
/// Between kernel counters on one line.
const EVENT_GAP: usize = 3;

/// Writes `status` as text no wider than `width` (at least 1), as seen at
/// `now_ms` (Unix time, milliseconds).
pub fn render(status: &Status, width: usize, now_ms: u64, out: &mut impl Write) -> io::Result<()> {
    let (lines, _clipped) = render_lines(status, width, now_ms);
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `message` (an error, in place of a status) wrapped to `width`.
pub fn render_message(message: &str, width: usize, out: &mut impl Write) -> io::Result<()> {
    let mut lines = Vec::new();
    for paragraph in message.lines() {
        wrap(paragraph, width.max(1), 0, &mut lines);
    }
    for line in lines {
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// The lines, and how many of them had to be cut at `width` because the
/// layout could not make them fit (zero for any width from 30 up).
fn render_lines(status: &Status, width: usize, now_ms: u64) -> (Vec<String>, usize) {
    let width = width.max(1);
    let mut lines = Vec::new();
    header(status, width, now_ms, &mut lines);
    for gateway in &status.gateways_not_served {
        wrap(gateway, width, 0, &mut lines);
    }
    routes(&status.routes, width, &mut lines);
    http::http_routes(&status.http_routes, width, &mut lines);
    gateway_endpoints(&status.gateway_endpoints, width, &mut lines);
    events(status, width, &mut lines);
    let mut clipped = 0;
    let lines = lines
        .into_iter()
        .map(|line| {
            let line = line.trim_end();
            if columns(line) > width {
                clipped += 1;
                let mut cut: String = line.chars().take(width - 1).collect();
                cut.push('…');
                cut
            } else {
                line.to_owned()
            }
        })
        .collect();
    (lines, clipped)
}

fn header(status: &Status, width: usize, now_ms: u64, lines: &mut Vec<String>) {
    let age = if status.taken_at_ms == 0 {
        "at an unknown time".to_owned()
    } else {
        format!(
            "as of {} ago",
            duration(now_ms.saturating_sub(status.taken_at_ms))
        )
    };
    wrap(
        &format!(
            "rules {}, {}, {}",
            status.rules,
            unbreakable(&format!("generation {}", status.generation)),
            unbreakable(&age)
        ),
        width,
        0,
        lines,
    );
    if status.taken_at_ms != 0 && now_ms.saturating_sub(status.taken_at_ms) > STALE_AFTER_MS {
        wrap(
            &format!(
                "STALE: not updated for over {}; the agent may not be running",
                unbreakable(&duration(STALE_AFTER_MS))
            ),
            width,
            0,
            lines,
        );
    }
}

/// `2 s`, `5 min`, `3 h`, `2 d` (rounded down).
fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

// ---------------------------------------------------------------------------
// Routes

/// A column of the destination table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Col {
    /// Subset, or host when the destination has none.
    Name,
    /// Configured share and raw weight: ` 80% (80)`.
    Weight,
    /// Configured share only (the narrow form of `Weight`).
    WeightShare,
    /// Connections in the last minute.
    Conn,
    /// Observed share: `Conn` / the route's `Conn`.
    Share,
    /// Failed connections in the last minute.
    Fail,
    /// Connections (requests) since the agent (the route) started.
    Total,
    /// Requests in the last minute.
    Req,
    /// 5xx answers in the last minute.
    Err5,
    /// 4xx answers in the last minute.
    Err4,
    /// Latency percentiles over the last minute.
    P50,
    P99,
}

impl Col {
    /// Its header; `short` for narrow layouts, which add [`SHORT_LEGEND`].
    fn header(self, short: bool) -> &'static str {
        match self {
            Col::Name => "DESTINATION",
            Col::Weight | Col::WeightShare => "WEIGHT",
            Col::Conn if short => "CONN",
            Col::Conn => "CONN/MIN",
            Col::Share => "SHARE",
            Col::Fail if short => "FAIL",
            Col::Fail => "FAIL/MIN",
            Col::Total => "TOTAL",
            Col::Req if short => "REQ",
            Col::Req => "REQ/MIN",
            Col::Err5 if short => "5XX",
            Col::Err5 => "5XX/MIN",
            Col::Err4 if short => "4XX",
            Col::Err4 => "4XX/MIN",
            Col::P50 => "P50",
            Col::P99 => "P99",
        }
    }

    fn left_aligned(self) -> bool {
        matches!(self, Col::Name | Col::Weight)
    }
}

/// A candidate shape of the destination table.
struct Shape {
    cols: &'static [Col],
    bar: bool,
    short_headers: bool,
}

impl Shape {
    const fn new(cols: &'static [Col], bar: bool, short_headers: bool) -> Shape {
        Shape {
            cols,
            bar,
            short_headers,
        }
    }
}

/// The shapes tried in turn, richest first: the bar goes first, then the
/// raw weight, then the long headers, then the total, the failures and the
/// connection count.
const SHAPES: &[Shape] = {
    use Col::{Conn, Fail, Name, Share, Total, Weight, WeightShare};
    const ALL: &[Col] = &[Name, Weight, Conn, Share, Fail, Total];
    const COMPACT: &[Col] = &[Name, WeightShare, Conn, Share, Fail, Total];
    &[
        Shape::new(ALL, true, false),
        Shape::new(ALL, false, false),
        Shape::new(COMPACT, false, false),
        Shape::new(COMPACT, false, true),
        Shape::new(&[Name, WeightShare, Conn, Share, Fail], false, true),
        Shape::new(&[Name, WeightShare, Conn, Share], false, true),
        Shape::new(&[Name, WeightShare, Share], false, true),
    ]
};

/// One destination row, its cells as text.
struct Row<'a> {
    name: &'a str,
    weight: u32,
    weight_share: String,
    /// The other columns' cells.
    cells: Vec<(Col, String)>,
    /// Configured and observed shares as fractions, for the bar.
    configured: Option<(u64, u64)>,
    observed: Option<(u64, u64)>,
}

impl Row<'_> {
    fn cell(&self, col: Col, raw_weight_width: usize) -> String {
        match col {
            Col::Name => self.name.to_owned(),
            Col::Weight => format!(
                "{:>4} {:<w$}",
                self.weight_share,
                format!("({})", self.weight),
                w = raw_weight_width + 2
            ),
            Col::WeightShare => self.weight_share.clone(),
            _ => self
                .cells
                .iter()
                .find(|(c, _)| *c == col)
                .map(|(_, cell)| cell.clone())
                .unwrap_or_default(),
        }
    }
}

fn rows(route: &RouteStatus) -> Vec<Row<'_>> {
    let weights: u64 = route.destinations.iter().map(|d| u64::from(d.weight)).sum();
    let conns: u64 = route
        .destinations
        .iter()
        .map(|d| d.connections_last_minute)
        .sum();
    route
        .destinations
        .iter()
        .map(|dest| Row {
            name: dest.subset.as_deref().unwrap_or(&dest.host),
            weight: dest.weight,
            weight_share: percent(u64::from(dest.weight), weights),
            cells: vec![
                (Col::Conn, dest.connections_last_minute.to_string()),
                (Col::Share, percent(dest.connections_last_minute, conns)),
                (Col::Fail, dest.failed_last_minute.to_string()),
                (Col::Total, dest.connections_total.to_string()),
            ],
            configured: (weights > 0).then_some((u64::from(dest.weight), weights)),
            observed: (conns > 0).then_some((dest.connections_last_minute, conns)),
        })
        .collect()
}

/// `part` of `whole` as a whole percentage; `<1%` and `>99%` rather than
/// rounding a little to nothing or a little short to all; `-` of nothing.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_owned();
    }
    let p = rounded_div(u128::from(part) * 100, u128::from(whole));
    if part > 0 && p == 0 {
        "<1%".to_owned()
    } else if part < whole && p == 100 {
        ">99%".to_owned()
    } else {
        format!("{p}%")
    }
}

fn rounded_div(n: u128, d: u128) -> u128 {
    (2 * n + d) / (2 * d)
}

/// The chosen shape of the destination table, and its widths.
struct Layout {
    shape: &'static Shape,
    /// The legends of the short headers and of a narrow bar.
    legends: (&'static str, &'static str),
    /// Spaces between columns.
    sep: usize,
    /// Width of each column of the shape.
    widths: Vec<usize>,
    /// Width of the bar, after `sep`, if there is one.
    bar: Option<usize>,
}

impl Layout {
    /// The first shape that fits `avail` columns, with two spaces between
    /// columns or else one (not with a bar), and names no shorter than the
    /// shape allows.
    fn choose(
        shapes: &'static [Shape],
        legends: (&'static str, &'static str),
        rows: &[&Row],
        raw_weight_width: usize,
        avail: usize,
    ) -> Layout {
        let longest_name = rows.iter().map(|r| columns(r.name)).max().unwrap_or(0);
        for (i, shape) in shapes.iter().enumerate() {
            let last = i + 1 == shapes.len();
            let widths: Vec<usize> = shape
                .cols
                .iter()
                .map(|&col| {
                    rows.iter()
                        .map(|r| columns(&r.cell(col, raw_weight_width)))
                        .chain([columns(col.header(shape.short_headers))])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let limit = if shape.bar { NAME_WITH_BAR } else { NAME_MIN };
            let shortest = longest_name.min(limit).max(4).min(widths[0]);
            // A bar is not worth crowding the numbers for.
            let seps: &[usize] = if shape.bar { &[2] } else { &[2, 1] };
            for &sep in seps {
                let fixed = widths[1..].iter().map(|w| w + sep).sum::<usize>()
                    + if shape.bar { sep + BAR_MIN } else { 0 };
                let name = widths[0].min(avail.saturating_sub(fixed));
                if name >= shortest || (last && sep == 1) {
                    let mut widths = widths;
                    widths[0] = name.max(1);
                    return Layout {
                        shape,
                        legends,
                        sep,
                        bar: shape.bar.then(|| avail - fixed + BAR_MIN - name),
                        widths,
                    };
                }
            }
        }
        unreachable!("the last shape is always taken")
    }

    fn header(&self) -> String {
        let cells = self.shape.cols.iter().map(|&col| {
            let header = col.header(self.shape.short_headers);
            if col == Col::Name && self.widths[0] < header.len() {
                "DEST".to_owned()
            } else {
                header.to_owned()
            }
        });
        let bar = self.bar.map(|w| {
            if w >= BAR_HEADER.len() {
                BAR_HEADER
            } else {
                "OBSERVED"
            }
            .to_owned()
        });
        self.line(cells, bar)
    }

    fn row(&self, row: &Row, raw_weight_width: usize) -> String {
        self.line(
            self.shape
                .cols
                .iter()
                .map(|&c| row.cell(c, raw_weight_width)),
            self.bar.map(|w| bar(row.observed, row.configured, w)),
        )
    }

    fn line(&self, cells: impl Iterator<Item = String>, bar: Option<String>) -> String {
        let mut line = " ".repeat(TABLE_INDENT);
        for (i, ((cell, &col), &w)) in cells.zip(self.shape.cols).zip(&self.widths).enumerate() {
            if i > 0 {
                line.push_str(&" ".repeat(self.sep));
            }
            let cell = ellipsize(&cell, w);
            let pad = " ".repeat(w - columns(&cell));
            if col.left_aligned() {
                line.push_str(&cell);
                line.push_str(&pad);
            } else {
                line.push_str(&pad);
                line.push_str(&cell);
            }
        }
        if let Some(bar) = bar {
            line.push_str(&" ".repeat(self.sep));
            line.push_str(&bar);
        }
        line
    }

    /// What the headers do not say.
    fn legends(&self) -> impl Iterator<Item = &'static str> {
        let bar = self.bar.is_some_and(|w| w < BAR_HEADER.len());
        [
            self.shape.short_headers.then_some(self.legends.0),
            bar.then_some(self.legends.1),
        ]
        .into_iter()
        .flatten()
    }
}

fn routes(routes: &[RouteStatus], width: usize, lines: &mut Vec<String>) {
    let tables = Tables::new(
        SHAPES,
        (SHORT_LEGEND, BAR_LEGEND),
        routes.iter().map(rows).collect(),
        routes
            .iter()
            .map(|r| {
                r.destinations
                    .iter()
                    .map(|d| d.endpoints.iter().map(EndpointLine::tcp).collect())
                    .collect()
            })
            .collect(),
        width,
    );
    for (i, route) in routes.iter().enumerate() {
        lines.push(String::new());
        wrap(&format!("ROUTE {}", route.route), width, 0, lines);
        let conns: u64 = route
            .destinations
            .iter()
            .map(|d| d.connections_last_minute)
            .sum();
        wrap(
            &format!(
                "{}, {}, {}",
                route.kind,
                unbreakable(&format!("service {}", route.service)),
                unbreakable(&format!("{conns} conn/min"))
            ),
            width,
            TABLE_INDENT,
            lines,
        );
        tables.draw(i, width, lines);
    }
    tables.legends(width, lines);
}

/// `observed` as `#` over `width` cells, `.` for the rest, and `|` where
/// the configured share ends. At least one `#` for any connection, and
/// not all `#` unless the destination took them all.
fn bar(observed: Option<(u64, u64)>, configured: Option<(u64, u64)>, width: usize) -> String {
    let cells = |(part, whole): (u64, u64)| {
        let n = rounded_div(u128::from(part) * width as u128, u128::from(whole));
        usize::try_from(n).unwrap_or(width)
    };
    let filled = observed.map_or(0, |(part, whole)| {
        let n = cells((part, whole));
        if part > 0 && n == 0 {
            1
        } else if part < whole && n == width {
            width - 1
        } else {
            n
        }
    });
    let mut bar: Vec<char> = (0..width)
        .map(|i| if i < filled { '#' } else { '.' })
        .collect();
    if let Some(configured) = configured {
        bar[cells(configured).min(width - 1)] = '|';
    }
    bar.into_iter().collect()
}

// ---------------------------------------------------------------------------
// Gateway endpoints and kernel counters

fn gateway_endpoints(endpoints: &[GatewayEndpoint], width: usize, lines: &mut Vec<String>) {
    if endpoints.is_empty() {
        return;
    }
    let pids: Vec<String> = endpoints
        .iter()
        .map(|e| e.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()))
        .collect();
    let header = ("GATEWAY ENDPOINT", "SOCKET", "PID");
    let state_w = endpoints
        .iter()
        .map(|e| columns(&e.state))
        .chain([header.1.len()])
        .max()
        .unwrap_or(0);
    let pid_w = pids
        .iter()
        .map(String::len)
        .chain([header.2.len()])
        .max()
        .unwrap_or(0);
    let natural = endpoints
        .iter()
        .map(|e| columns(&e.endpoint))
        .chain([header.0.len()])
        .max()
        .unwrap_or(0);
    // The PID goes before the address is shortened.
    let with_pid = natural + 2 + state_w + 2 + pid_w <= width;
    let rest = 2 + state_w + if with_pid { 2 + pid_w } else { 0 };
    let address_w = natural.min(width.saturating_sub(rest)).max(1);
    let line = |address: &str, state: &str, pid: &str| {
        let mut line = format!(
            "{:<address_w$}  {:<state_w$}",
            ellipsize(address, address_w),
            state
        );
        if with_pid {
            line.push_str("  ");
            line.push_str(pid);
        }
        line
    };
    lines.push(String::new());
    lines.push(line(header.0, header.1, header.2));
    for (e, pid) in endpoints.iter().zip(&pids) {
        lines.push(line(&e.endpoint, &e.state, pid));
    }
}

/// `name count` cells, in as many columns as fit, read down.
fn events(status: &Status, width: usize, lines: &mut Vec<String>) {
    lines.push(String::new());
    lines.push("KERNEL EVENTS".to_owned());
    if status.events.is_empty() {
        wrap(
            "none read (the agent could not read its counters)",
            width,
            0,
            lines,
        );
        return;
    }
    let name_w = status.events.keys().map(|k| columns(k)).max().unwrap_or(0);
    let count_w = status
        .events
        .values()
        .map(|v| v.to_string().len())
        .max()
        .unwrap_or(0);
    let cell_w = name_w + 1 + count_w;
    let per_line = ((width + EVENT_GAP) / (cell_w + EVENT_GAP)).max(1);
    let cells: Vec<String> = status
        .events
        .iter()
        .map(|(name, count)| format!("{name:<name_w$} {count:>count_w$}"))
        .collect();
    let rows = cells.len().div_ceil(per_line);
    for r in 0..rows {
        let line: Vec<&str> = cells
            .iter()
            .skip(r)
            .step_by(rows)
            .map(String::as_str)
            .collect();
        lines.push(line.join(&" ".repeat(EVENT_GAP)));
    }
}

// ---------------------------------------------------------------------------
// Text

/// Display width of `s`: every character this module prints is one column.
fn columns(s: &str) -> usize {
    s.chars().count()
}

/// `s` shortened to `width` by replacing its middle with `…`, so both the
/// start and the end of a host or address stay readable.
fn ellipsize(s: &str, width: usize) -> String {
    let n = columns(s);
    if n <= width {
        return s.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let keep = width - 1;
    let head = keep.div_ceil(2);
    let tail = keep - head;
    s.chars()
        .take(head)
        .chain(['…'])
        .chain(s.chars().skip(n - tail))
        .collect()
}

/// `text` with no-break spaces: [`wrap`] keeps it on one line.
fn unbreakable(text: &str) -> String {
    text.replace(' ', "\u{a0}")
}

/// Words of `text` in lines of `width`, the first indented by `indent`,
/// the rest by [`HANGING_INDENT`] more; a word longer than a line is split.
/// Spaces that end a field are kept (they align the next one) but never
/// make it wrap.
fn wrap(text: &str, width: usize, indent: usize, lines: &mut Vec<String>) {
    let words: Vec<String> = text.split(' ').map(|w| w.replace('\u{a0}', " ")).collect();
    wrap_fields(&words, 1, width, indent, lines);
}

/// [`wrap`] for fields separated by `sep` spaces.
fn wrap_fields(
    fields: &[String],
    sep: usize,
    width: usize,
    indent: usize,
    lines: &mut Vec<String>,
) {
    let cont = (indent + HANGING_INDENT).min(width / 2);
    let mut line = " ".repeat(indent.min(width / 2));
    let mut empty = true;
    for field in fields {
        let n = columns(field.trim_end());
        if !empty && columns(&line) + sep + n > width {
            lines.push(std::mem::replace(&mut line, " ".repeat(cont)));
            empty = true;
        }
        if !empty {
            line.push_str(&" ".repeat(sep));
        }
        if columns(&line) + n <= width {
            line.push_str(field);
            empty = false;
            continue;
        }
        // Too long even alone on its line: split it.
        let mut rest: Vec<char> = field.trim_end().chars().collect();
        loop {
            let room = width.saturating_sub(columns(&line)).max(1);
            if rest.len() <= room {
                line.extend(rest);
                break;
            }
            line.extend(rest.drain(..room));
            lines.push(std::mem::replace(&mut line, " ".repeat(cont)));
        }
        empty = false;
    }
    lines.push(line);
}

mod http;
mod tables;

use self::tables::{EndpointLine, Tables};

#[cfg(test)]
mod tests;
