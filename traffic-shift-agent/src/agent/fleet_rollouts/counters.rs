//! The canary's counters over the fleet: what the driver's analyses
//! measure, from the counters every node reports in its status.

use std::collections::BTreeMap;

use traffic_shift_config::rollout::{Rollout, RolloutProtocol};
use traffic_shift_store::NodeStatus;

use crate::rollout::Observation;

/// The canary's counters over the fleet, kept cumulative although nodes
/// come and go: each node's growth since it was last looked at is added
/// (a node seen for the first time counts from then; one whose counters
/// went down, its route made anew or its agent restarted, counts from
/// zero; one gone keeps what it counted).
#[derive(Debug, Default)]
pub struct FleetCounters {
    last: BTreeMap<(String, String), Observation>,
    total: BTreeMap<String, Observation>,
}

impl FleetCounters {
    pub fn observe(
        &mut self,
        rollout: &Rollout,
        nodes: &BTreeMap<String, NodeStatus>,
    ) -> Observation {
        let total = self.total.entry(rollout.name.clone()).or_default();
        self.last
            .retain(|(r, node), _| r != &rollout.name || nodes.contains_key(node));
        for (node, status) in nodes {
            let now = node_observation(rollout, status);
            let key = (rollout.name.clone(), node.clone());
            if let Some(then) = self.last.get(&key) {
                total.add(&now.since(then));
            }
            self.last.insert(key, now);
        }
        *total
    }
}

/// The canary's counters on one node, from its reported route counters:
/// TCP routes' connections (established = opened - failed: a connect still
/// in its handshake counts as established until it fails), HTTP routes'
/// requests, 5xx answers and latency buckets.
fn node_observation(rollout: &Rollout, status: &NodeStatus) -> Observation {
    let mut seen = Observation::default();
    let canary = format!("{}/{}", rollout.host, rollout.canary);
    for route in &status.counters {
        let targeted = match rollout.protocol {
            RolloutProtocol::Tcp => {
                route.unit == "connections" && rollout.targets_tcp(&route.route)
            }
            RolloutProtocol::Http => route.unit == "requests" && rollout.targets_http(&route.route),
        };
        if !targeted {
            continue;
        }
        for dest in route
            .destinations
            .iter()
            .filter(|d| d.destination == canary)
        {
            match rollout.protocol {
                RolloutProtocol::Tcp => {
                    seen.established += dest.total.saturating_sub(dest.failed);
                    seen.failed += dest.failed;
                }
                RolloutProtocol::Http => {
                    seen.requests.requests += dest.total;
                    seen.requests.errors_5xx += dest.failed;
                    for (sum, n) in seen.requests.buckets.iter_mut().zip(&dest.duration_buckets) {
                        *sum += n;
                    }
                }
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use traffic_shift_config::rollout::Step;
    use traffic_shift_store::{DestinationCounters, RouteCounters};

    use super::*;

    fn rollout() -> Rollout {
        crate::rollout::tests::rollout(vec![Step::SetWeight(50)])
    }

    /// A node whose canary saw `opened` connects, `failed` of them failed
    /// (and whose stable and other routes saw more).
    fn node(name: &str, opened: u64, failed: u64) -> (String, NodeStatus) {
        let dest = |destination: &str, total, failed| DestinationCounters {
            destination: destination.into(),
            weight: 50,
            total,
            last_minute: 0,
            failed,
            duration_buckets: Vec::new(),
        };
        let route = |route: &str| RouteCounters {
            route: route.into(),
            kind: "mesh".into(),
            service: "127.100.0.1:9000".into(),
            unit: "connections".into(),
            destinations: vec![
                dest("tcp-echo.local/v1", 1000, 7),
                dest("tcp-echo.local/v2", opened, failed),
            ],
        };
        (
            name.to_owned(),
            NodeStatus {
                node: name.to_owned(),
                counters: vec![
                    route("default/tcp-echo/tcp[0]/9000"),
                    route("default/other/tcp[0]"),
                ],
                ..NodeStatus::default()
            },
        )
    }

    #[test]
    fn the_fleets_counters_add_each_nodes_growth() {
        let r = rollout();
        let mut c = FleetCounters::default();
        let seen = |c: &mut FleetCounters, nodes: &[(String, NodeStatus)]| {
            let o = c.observe(&r, &nodes.iter().cloned().collect());
            (o.established, o.failed)
        };
        // First sight: nothing counted yet (what a node saw before is not
        // this interval's).
        assert_eq!(seen(&mut c, &[node("a", 10, 0)]), (0, 0));
        // a grew by 20 (2 failed); b counts from its first sight.
        assert_eq!(seen(&mut c, &[node("a", 30, 2), node("b", 5, 0)]), (18, 2));
        // a gone: what it counted stays; b grew by 10.
        assert_eq!(seen(&mut c, &[node("b", 15, 0)]), (28, 2));
        // b restarted (its counters went down): counted from zero.
        assert_eq!(seen(&mut c, &[node("b", 4, 1)]), (31, 3));
    }

    #[test]
    fn an_http_canarys_requests_and_latency_buckets_are_summed_over_nodes() {
        let mut r = rollout();
        r.protocol = RolloutProtocol::Http;
        r.route = "default/reviews/http[0]".into();
        r.host = "reviews.default.svc.cluster.local".into();
        r.canary = "v3".into();
        // 99 requests in the first bucket, one in the fourth, per node.
        let mut buckets = vec![0; traffic_shift_proxy::BUCKETS];
        buckets[0] = 99;
        buckets[3] = 1;
        let status = NodeStatus {
            counters: vec![RouteCounters {
                route: "default/reviews/http[0]".into(),
                kind: "mesh".into(),
                service: "127.101.0.1:9080".into(),
                unit: "requests".into(),
                destinations: vec![DestinationCounters {
                    destination: "reviews.default.svc.cluster.local/v3".into(),
                    weight: 50,
                    total: 100,
                    last_minute: 100,
                    failed: 30,
                    duration_buckets: buckets.clone(),
                }],
            }],
            ..NodeStatus::default()
        };
        let mut sum = node_observation(&r, &status);
        sum.add(&node_observation(&r, &status));
        assert_eq!(sum.requests.requests, 200);
        assert_eq!(sum.requests.errors_5xx, 60);
        assert_eq!(sum.requests.buckets[0], 198);
        assert_eq!(sum.requests.buckets[3], 2);
        // The 99th percentile of the 200: in the first bucket.
        let p99 = sum.requests.quantile(0.99).unwrap();
        assert!(p99 <= traffic_shift_proxy::DURATION_BUCKETS[0], "{p99}");
    }
}
