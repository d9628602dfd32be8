//! The HTTP routes of `traffic-shift status`: the L7 proxy's rules, drawn
//! as [`super::routes`] draws the TCP routes, with requests in place of
//! connections.

use super::{
    Col, EndpointLine, HTTP_BAR_LEGEND, HTTP_SHORT_LEGEND, HttpDestinationStatus, HttpRouteStatus,
    Row, Shape, TABLE_INDENT, Tables, percent, unbreakable, wrap,
};

/// The HTTP table's shapes, richest first: the raw weight, the long
/// headers and the total go before the bar, then the bar, then the 4xx,
/// the p50, the p99, the 5xx and the request count.
const HTTP_SHAPES: &[Shape] = {
    use Col::{Err4, Err5, Name, P50, P99, Req, Share, Total, Weight, WeightShare};
    const ALL: &[Col] = &[Name, Weight, Req, Share, Err5, Err4, P50, P99, Total];
    const COMPACT: &[Col] = &[Name, WeightShare, Req, Share, Err5, Err4, P50, P99, Total];
    &[
        Shape::new(ALL, true, false),
        Shape::new(COMPACT, true, false),
        Shape::new(COMPACT, true, true),
        // The endpoint lines still show each total.
        Shape::new(
            &[Name, WeightShare, Req, Share, Err5, Err4, P50, P99],
            true,
            true,
        ),
        Shape::new(COMPACT, false, true),
        Shape::new(
            &[Name, WeightShare, Req, Share, Err5, Err4, P50, P99],
            false,
            true,
        ),
        Shape::new(
            &[Name, WeightShare, Req, Share, Err5, P50, P99],
            false,
            true,
        ),
        Shape::new(&[Name, WeightShare, Req, Share, Err5, P99], false, true),
        Shape::new(&[Name, WeightShare, Req, Share, Err5], false, true),
        Shape::new(&[Name, WeightShare, Req, Share], false, true),
        Shape::new(&[Name, WeightShare, Share], false, true),
    ]
};

fn http_rows(route: &HttpRouteStatus) -> Vec<Row<'_>> {
    let weights: u64 = route.destinations.iter().map(|d| u64::from(d.weight)).sum();
    let requests: u64 = route
        .destinations
        .iter()
        .map(|d| d.requests_last_minute)
        .sum();
    route
        .destinations
        .iter()
        .map(|dest: &HttpDestinationStatus| Row {
            name: dest.subset.as_deref().unwrap_or(&dest.host),
            weight: dest.weight,
            weight_share: percent(u64::from(dest.weight), weights),
            cells: vec![
                (Col::Req, dest.requests_last_minute.to_string()),
                (Col::Share, percent(dest.requests_last_minute, requests)),
                (Col::Err5, dest.errors_5xx_last_minute.to_string()),
                (Col::Err4, dest.errors_4xx_last_minute.to_string()),
                (Col::P50, latency(dest.p50_ms)),
                (Col::P99, latency(dest.p99_ms)),
                (Col::Total, dest.requests_total.to_string()),
            ],
            configured: (weights > 0).then_some((u64::from(dest.weight), weights)),
            observed: (requests > 0).then_some((dest.requests_last_minute, requests)),
        })
        .collect()
}

/// A latency in milliseconds, short: `0.42ms`, `3.1ms`, `250ms`, `1.5s`;
/// `-` without requests (never 0).
pub(super) fn latency(ms: Option<f64>) -> String {
    match ms {
        None => "-".to_owned(),
        Some(ms) if ms < 0.01 => "<0.01ms".to_owned(),
        Some(ms) if ms < 1.0 => format!("{ms:.2}ms"),
        Some(ms) if ms < 10.0 => format!("{ms:.1}ms"),
        Some(ms) if ms < 1000.0 => format!("{ms:.0}ms"),
        Some(ms) => format!("{:.1}s", ms / 1000.0),
    }
}

/// The HTTP routes, as [`super::routes`] draws the TCP ones: per route its key
/// (and name), its matches in words, its listener, then the table.
pub(super) fn http_routes(routes: &[HttpRouteStatus], width: usize, lines: &mut Vec<String>) {
    let tables = Tables::new(
        HTTP_SHAPES,
        (HTTP_SHORT_LEGEND, HTTP_BAR_LEGEND),
        routes.iter().map(http_rows).collect(),
        routes
            .iter()
            .map(|r| {
                r.destinations
                    .iter()
                    .map(|d| d.endpoints.iter().map(EndpointLine::http).collect())
                    .collect()
            })
            .collect(),
        width,
    );
    for (i, route) in routes.iter().enumerate() {
        lines.push(String::new());
        let title = match &route.name {
            Some(name) => format!("HTTP ROUTE {} ({name})", route.route),
            None => format!("HTTP ROUTE {}", route.route),
        };
        wrap(&title, width, 0, lines);
        for (i, m) in route.matches.iter().enumerate() {
            let word = if i == 0 { "match" } else { "or" };
            wrap(&format!("{word} {m}"), width, TABLE_INDENT, lines);
        }
        let requests: u64 = route
            .destinations
            .iter()
            .map(|d| d.requests_last_minute)
            .sum();
        let mut info = format!(
            "{}, {}, {}",
            route.kind,
            unbreakable(&format!("service {}", route.service)),
            unbreakable(&format!("{requests} req/min"))
        );
        if route.local_total > 0 {
            info.push_str(", ");
            info.push_str(&unbreakable(&format!(
                "{} answered by the proxy/min",
                route.local_last_minute
            )));
        }
        wrap(&info, width, TABLE_INDENT, lines);
        tables.draw(i, width, lines);
    }
    tables.legends(width, lines);
}
