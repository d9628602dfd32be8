//! `traffic-shift status --fleet`: the split each route observed, summed
//! over the nodes and per node, from the counters every agent writes in
//! its node status (`PREFIX/nodes/NAME`, about once a second).

use std::{collections::BTreeMap, fmt::Write as _};

use traffic_shift_store::{NodeStatus, RouteCounters};

use crate::ctl;

/// One destination's counters, summed over some nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Sum {
    /// The weight configured, if every node summed has the same one.
    weight: Option<u32>,
    /// Whether two nodes had different weights (mid-change).
    mixed: bool,
    total: u64,
    last_minute: u64,
    failed: u64,
}

impl Sum {
    fn add(&mut self, weight: u32, total: u64, last_minute: u64, failed: u64) {
        match self.weight {
            Some(w) if w != weight => self.mixed = true,
            _ => self.weight = Some(weight),
        }
        self.total += total;
        self.last_minute += last_minute;
        self.failed += failed;
    }
}

/// One route over the fleet: its destinations in the order the nodes give
/// them, summed, and each node's own.
struct Route<'a> {
    first: &'a RouteCounters,
    destinations: Vec<String>,
    all: BTreeMap<String, Sum>,
    nodes: Vec<(&'a str, BTreeMap<String, Sum>)>,
}

/// The whole view: a line on the nodes, then per route its table.
pub fn render(url: &str, prefix: &str, nodes: &[NodeStatus]) -> String {
    let latest = nodes.iter().map(|n| n.revision).max().unwrap_or(0);
    let at_latest = nodes.iter().filter(|n| n.revision == latest).count();
    let refused = nodes
        .iter()
        .filter(|n| n.refused_revision.is_some())
        .count();
    let mut out = format!(
        "{url} {prefix}: {} node{}, {at_latest} at revision {latest}, {refused} refused a revision\n",
        nodes.len(),
        if nodes.len() == 1 { "" } else { "s" },
    );
    let routes = gather(nodes);
    if routes.is_empty() {
        out.push_str(
            "\nNo traffic on any route yet (nodes report routes once they carry traffic).\n",
        );
        return out;
    }
    for route in routes.values() {
        let r = route.first;
        let _ = writeln!(
            out,
            "\n{} ({}, {}): {} on {} node{}",
            r.route,
            r.kind,
            r.service,
            r.unit,
            route.nodes.len(),
            if route.nodes.len() == 1 { "" } else { "s" }
        );
        let mut rows = vec![
            [
                "NODE",
                "DESTINATION",
                "WEIGHT",
                "TOTAL",
                "SHARE",
                "LAST MINUTE",
                "FAILED",
            ]
            .map(str::to_owned)
            .to_vec(),
        ];
        rows.extend(rows_of("all", &route.destinations, &route.all));
        for (node, sums) in &route.nodes {
            rows.extend(rows_of(node, &route.destinations, sums));
        }
        let table = ctl::aligned(&rows);
        for line in table.lines() {
            out.push_str("   ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(
        "\nWEIGHT: the destination's share of the route's weights (mixed: nodes differ, a change \
         is on its way). TOTAL: since the route went in on each node. SHARE: of TOTAL.\n",
    );
    out
}

/// Every route that some node reported, by its key.
fn gather(nodes: &[NodeStatus]) -> BTreeMap<&str, Route<'_>> {
    let mut routes: BTreeMap<&str, Route<'_>> = BTreeMap::new();
    for node in nodes {
        for counters in &node.counters {
            let route = routes.entry(&counters.route).or_insert_with(|| Route {
                first: counters,
                destinations: Vec::new(),
                all: BTreeMap::new(),
                nodes: Vec::new(),
            });
            let mut mine = BTreeMap::new();
            for d in &counters.destinations {
                if !route.destinations.contains(&d.destination) {
                    route.destinations.push(d.destination.clone());
                }
                let add = |sum: &mut Sum| sum.add(d.weight, d.total, d.last_minute, d.failed);
                add(route.all.entry(d.destination.clone()).or_default());
                add(mine.entry(d.destination.clone()).or_default());
            }
            route.nodes.push((&node.node, mine));
        }
    }
    routes
}

/// A node's (or `all`) rows: one per destination, the node named on the first.
fn rows_of(node: &str, destinations: &[String], sums: &BTreeMap<String, Sum>) -> Vec<Vec<String>> {
    let weights: u64 = sums.values().filter_map(|s| s.weight).map(u64::from).sum();
    let total: u64 = sums.values().map(|s| s.total).sum();
    let mut rows = Vec::new();
    for destination in destinations {
        let Some(sum) = sums.get(destination) else {
            continue;
        };
        let weight = match (sum.mixed, sum.weight) {
            (true, _) => "mixed".to_owned(),
            (false, Some(w)) => percent(u64::from(w), weights),
            (false, None) => "-".to_owned(),
        };
        rows.push(vec![
            if rows.is_empty() { node } else { "" }.to_owned(),
            destination.clone(),
            weight,
            sum.total.to_string(),
            percent(sum.total, total),
            sum.last_minute.to_string(),
            sum.failed.to_string(),
        ]);
    }
    rows
}

/// `part` of `whole` as a percentage with one decimal (`-` of nothing).
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_owned();
    }
    #[allow(clippy::cast_precision_loss)]
    let share = part as f64 * 100.0 / whole as f64;
    format!("{share:.1}%")
}

#[cfg(test)]
mod tests {
    use traffic_shift_store::DestinationCounters;

    use super::*;

    fn node(name: &str, revision: i64, split: &[(u32, u64)]) -> NodeStatus {
        let destinations = split
            .iter()
            .zip(["v1", "v2"])
            .map(|((weight, total), subset)| DestinationCounters {
                destination: format!("tcp-echo/{subset}"),
                weight: *weight,
                total: *total,
                last_minute: *total,
                failed: 0,
                duration_buckets: Vec::new(),
            })
            .collect();
        NodeStatus {
            node: name.into(),
            revision,
            state: "accepted".into(),
            counters: vec![RouteCounters {
                route: "default/tcp-echo tcp[0]".into(),
                kind: "mesh".into(),
                service: "tcp-echo:9000".into(),
                unit: "connections".into(),
                destinations,
            }],
            ..NodeStatus::default()
        }
    }

    #[test]
    fn the_split_is_summed_over_the_nodes_and_shown_per_node() {
        let nodes = [
            node("node-0", 7, &[(80, 800), (20, 200)]),
            node("node-1", 7, &[(80, 160), (20, 40)]),
        ];
        let text = render("etcd://127.0.0.1:2379", "/ts", &nodes);
        assert_eq!(
            text,
            concat!(
                "etcd://127.0.0.1:2379 /ts: 2 nodes, 2 at revision 7, 0 refused a revision\n",
                "\n",
                "default/tcp-echo tcp[0] (mesh, tcp-echo:9000): connections on 2 nodes\n",
                "   NODE     DESTINATION   WEIGHT   TOTAL   SHARE   LAST MINUTE   FAILED\n",
                "   all      tcp-echo/v1   80.0%    960     80.0%   960           0\n",
                "            tcp-echo/v2   20.0%    240     20.0%   240           0\n",
                "   node-0   tcp-echo/v1   80.0%    800     80.0%   800           0\n",
                "            tcp-echo/v2   20.0%    200     20.0%   200           0\n",
                "   node-1   tcp-echo/v1   80.0%    160     80.0%   160           0\n",
                "            tcp-echo/v2   20.0%    40      20.0%   40            0\n",
                "\n",
                "WEIGHT: the destination's share of the route's weights (mixed: nodes differ, a \
                 change is on its way). TOTAL: since the route went in on each node. SHARE: of TOTAL.\n",
            )
        );
    }

    #[test]
    fn nodes_mid_change_show_mixed_weights() {
        let nodes = [
            node("node-0", 8, &[(0, 10), (100, 90)]),
            node("node-1", 7, &[(80, 80), (20, 20)]),
        ];
        let text = render("etcd://127.0.0.1:2379", "/ts", &nodes);
        assert!(text.starts_with("etcd://127.0.0.1:2379 /ts: 2 nodes, 1 at revision 8, 0 refused"));
        assert!(
            text.contains("all      tcp-echo/v1   mixed    90      45.0%"),
            "{text}"
        );
        assert!(
            text.contains("node-0   tcp-echo/v1   0.0%     10      10.0%"),
            "{text}"
        );
    }

    #[test]
    fn nodes_without_traffic_say_so() {
        let idle = NodeStatus {
            node: "node-0".into(),
            revision: 3,
            ..NodeStatus::default()
        };
        let text = render("etcd://h:1", "/ts", &[idle]);
        assert!(text.contains("No traffic on any route yet"), "{text}");
    }
}
