//! The route tables of `traffic-shift status`, TCP and HTTP alike: one
//! layout and one set of endpoint columns for all the routes of a list, so
//! their tables line up.

use super::{
    ENDPOINT_INDENT, EndpointStatus, HANGING_INDENT, HttpEndpointStatus, Layout, Row, Shape,
    TABLE_INDENT, columns, wrap, wrap_fields,
};

/// The tables of a list of routes, drawn alike: they share one layout and
/// one set of endpoint columns, so they line up.
pub(super) struct Tables<'a> {
    layout: Layout,
    raw_weight_width: usize,
    endpoints: EndpointColumns,
    /// Per route, its destinations' rows.
    rows: Vec<Vec<Row<'a>>>,
    /// Per route, per destination, its endpoints' lines.
    lines: Vec<Vec<Vec<EndpointLine<'a>>>>,
}

impl<'a> Tables<'a> {
    pub(super) fn new(
        shapes: &'static [Shape],
        legends: (&'static str, &'static str),
        rows: Vec<Vec<Row<'a>>>,
        lines: Vec<Vec<Vec<EndpointLine<'a>>>>,
        width: usize,
    ) -> Self {
        let all: Vec<&Row> = rows.iter().flatten().collect();
        let raw_weight_width = all
            .iter()
            .map(|r| r.weight.to_string().len())
            .max()
            .unwrap_or(1);
        let layout = Layout::choose(
            shapes,
            legends,
            &all,
            raw_weight_width,
            width.saturating_sub(TABLE_INDENT),
        );
        let every: Vec<&EndpointLine> = lines.iter().flatten().flatten().collect();
        Self {
            layout,
            raw_weight_width,
            endpoints: EndpointColumns::new(&every),
            rows,
            lines,
        }
    }

    /// Route `route`'s table: the header, then each destination's row and
    /// its endpoints; nothing for a route without destinations.
    pub(super) fn draw(&self, route: usize, width: usize, lines: &mut Vec<String>) {
        if self.rows[route].is_empty() {
            return;
        }
        lines.push(self.layout.header());
        for (row, endpoints) in self.rows[route].iter().zip(&self.lines[route]) {
            lines.push(self.layout.row(row, self.raw_weight_width));
            for endpoint in endpoints {
                self.endpoints.line(endpoint, width, lines);
            }
        }
    }

    /// The legends under the last table, if any table was drawn.
    pub(super) fn legends(&self, width: usize, lines: &mut Vec<String>) {
        if self.rows.iter().all(Vec::is_empty) {
            return;
        }
        for legend in self.layout.legends() {
            lines.push(String::new());
            wrap(legend, width, 0, lines);
        }
    }
}

/// One endpoint line's fields: its address, its state, and counts, each a
/// number and what follows it (`/min`, ` total`, ` failed`).
pub(super) struct EndpointLine<'a> {
    address: &'a str,
    state: &'a str,
    counts: [(u64, &'static str); 3],
}

impl<'a> EndpointLine<'a> {
    pub(super) fn tcp(e: &'a EndpointStatus) -> Self {
        EndpointLine {
            address: &e.address,
            state: &e.state,
            counts: [
                (e.connections_last_minute, "/min"),
                (e.connections_total, " total"),
                (e.failed_total, " failed"),
            ],
        }
    }

    pub(super) fn http(e: &'a HttpEndpointStatus) -> Self {
        EndpointLine {
            address: &e.address,
            state: &e.state,
            counts: [
                (e.requests_last_minute, "/min"),
                (e.requests_total, " total"),
                (e.errors_5xx_last_minute, " 5xx/min"),
            ],
        }
    }
}

/// Endpoint lines: `127.0.0.1:19001  ok  80/min  800 total  0 failed`,
/// aligned over the whole table.
struct EndpointColumns {
    address: usize,
    state: usize,
    counts: [usize; 3],
}

impl EndpointColumns {
    fn new(endpoints: &[&EndpointLine]) -> Self {
        let max =
            |f: &dyn Fn(&EndpointLine) -> usize| endpoints.iter().map(|e| f(e)).max().unwrap_or(0);
        EndpointColumns {
            address: max(&|e| columns(e.address)),
            state: max(&|e| columns(e.state)),
            counts: std::array::from_fn(|i| max(&|e| e.counts[i].0.to_string().len())),
        }
    }

    /// One aligned line when it fits; else the address and state, and the
    /// counts aligned on the next line.
    fn line(&self, e: &EndpointLine, width: usize, lines: &mut Vec<String>) {
        let counts: Vec<String> = e
            .counts
            .iter()
            .zip(self.counts)
            .map(|((n, what), w)| format!("{n:>w$}{what}"))
            .collect();
        let one_line = ENDPOINT_INDENT
            + self.address
            + 2
            + self.state
            + counts.iter().map(|c| 2 + columns(c)).sum::<usize>();
        if one_line <= width {
            let mut fields = vec![
                format!("{:<w$}", e.address, w = self.address),
                format!("{:<w$}", e.state, w = self.state),
            ];
            fields.extend(counts);
            wrap_fields(&fields, 2, width, ENDPOINT_INDENT, lines);
        } else {
            wrap_fields(
                &[e.address.to_owned(), e.state.to_owned()],
                2,
                width,
                ENDPOINT_INDENT,
                lines,
            );
            wrap_fields(&counts, 2, width, ENDPOINT_INDENT + HANGING_INDENT, lines);
        }
    }
}
