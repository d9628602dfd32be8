//! The health stage: which endpoints are out of the selection, because
//! their probes failed (active checks) or outlier detection ejected them
//! (passive: the kernel's per-endpoint connect counters and the L7
//! proxy's request outcomes). The tables are compiled from the rules
//! without them ([`Health::usable`]); open connections are never cut.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use traffic_shift_common::EndpointStats;
use traffic_shift_config::model::RoutingModel;

use super::{Agent, AgentError, AgentOptions};
use crate::health::{Outliers, Probe, Prober, Verdict};

#[derive(Default)]
pub struct Health {
    /// Active probes (`None` with --health-interval 0).
    pub prober: Option<Prober>,
    /// Endpoints whose probes failed: out of the selection tables.
    unhealthy: BTreeSet<SocketAddr>,
    /// Endpoints ejected by outlier detection.
    outliers: Outliers,
    /// The proxy's per-endpoint request outcomes at the last sample.
    http_outcomes: BTreeMap<SocketAddr, traffic_shift_proxy::EndpointOutcomes>,
}

impl Health {
    /// Active health checks, unless --health-interval is 0.
    pub fn start(options: &AgentOptions) -> Result<Self, AgentError> {
        let prober = if options.health.health_interval.is_zero() {
            None
        } else {
            let prober =
                Prober::start(options.netns.clone(), options.health.clone()).map_err(|source| {
                    AgentError::Netns {
                        path: options.netns.clone(),
                        source,
                    }
                })?;
            Some(prober)
        };
        Ok(Self {
            prober,
            ..Self::default()
        })
    }

    /// `model` without the endpoints that are unhealthy or ejected: what
    /// the selection tables may pick (`model` itself when health takes
    /// none out: a copy of it was ~60 MB at 100 000 services).
    pub fn usable<'a>(&self, model: &'a RoutingModel) -> Cow<'a, RoutingModel> {
        if !self.any_excluded() {
            return Cow::Borrowed(model);
        }
        let mut usable = model.clone();
        for dest in usable.destinations_mut() {
            dest.endpoints.retain(|e| !self.excluded(e.addr));
        }
        Cow::Owned(usable)
    }

    /// Whether health takes any endpoint out.
    pub fn any_excluded(&self) -> bool {
        !self.unhealthy.is_empty() || self.outliers.any_ejected()
    }

    pub fn excluded(&self, endpoint: SocketAddr) -> bool {
        self.unhealthy.contains(&endpoint) || self.outliers.is_ejected(&endpoint)
    }

    /// The endpoint's state if health took it out: `unhealthy` or `ejected`.
    pub fn state(&self, endpoint: SocketAddr) -> Option<&'static str> {
        if self.unhealthy.contains(&endpoint) {
            Some("unhealthy")
        } else if self.outliers.is_ejected(&endpoint) {
            Some("ejected")
        } else {
            None
        }
    }

    /// The rules in force changed: the probes follow their endpoints.
    pub fn follow(&self, model: &RoutingModel) {
        if let Some(prober) = &self.prober {
            prober.set_targets(probe_targets(model));
        }
    }

    /// The next probe verdict, or never when active checks are off.
    pub async fn next_verdict(&mut self) -> Option<Verdict> {
        match &mut self.prober {
            Some(prober) => prober.verdicts.recv().await,
            None => std::future::pending().await,
        }
    }
}

/// Every endpoint of `model`, and how to probe it: endpoints of HTTP
/// routes with an HTTP/1.1 GET; those spoken to over h2c only (gRPC
/// servers: `appProtocol: kubernetes.io/h2c`, Istio's `HTTP2` and `GRPC`)
/// answer no HTTP/1.1, so a TCP connect, as kubelet's `tcpSocket` probe.
fn probe_targets(model: &RoutingModel) -> BTreeMap<SocketAddr, Probe> {
    let mut endpoints: BTreeMap<SocketAddr, Probe> = model
        .destinations()
        .flat_map(|d| &d.endpoints)
        .map(|e| (e.addr, Probe::Tcp))
        .collect();
    let http1 = model
        .http_destinations_h2()
        .filter(|(_, http2)| !http2)
        .map(|(dest, _)| dest);
    for dest in http1 {
        for endpoint in &dest.endpoints {
            endpoints.insert(
                endpoint.addr,
                Probe::Http {
                    authority: dest.host.clone(),
                },
            );
        }
    }
    endpoints
}

/// Whether an endpoint's connects over a period all failed (some did, none
/// completed its handshake).
pub fn is_failing(period: &EndpointStats) -> bool {
    period.failed() > 0 && period.established == 0
}

impl Agent {
    /// A probe verdict changed: the tables follow.
    /// The log line comes after the tables changed: what it says is in
    /// force when it is read (the tests wait for it).
    pub(super) fn health_changed(&mut self, verdict: Verdict) {
        if verdict.healthy {
            self.health.unhealthy.remove(&verdict.endpoint);
        } else {
            self.health.unhealthy.insert(verdict.endpoint);
        }
        self.reapply();
        if verdict.healthy {
            tracing::info!(endpoint = %verdict.endpoint, "endpoint healthy again: back in the selection");
        } else {
            tracing::warn!(endpoint = %verdict.endpoint, "endpoint unhealthy (probes failed): out of the selection; its share goes to the others of its subset");
        }
    }

    /// Outlier detection over the last second's counters: endpoints whose
    /// connects keep failing are ejected (within `maxEjectionPercent`),
    /// and come back when their ejection is over.
    pub(super) fn detect_outliers(&mut self, now: std::time::Instant) {
        // (destination's endpoints, its policy, per endpoint: established, failed)
        let mut observed = Vec::new();
        for &(r, d) in &self.observer.outlier_dests {
            let Some(route) = self.model.routes.get(r) else {
                continue;
            };
            let Some(dest) = route.destinations.get(d) else {
                continue;
            };
            let Some(policy) = dest.outlier else { continue };
            let deltas: Vec<(SocketAddr, u64, u64)> = dest
                .endpoints
                .iter()
                .map(|ep| {
                    let moved = self
                        .kernel
                        .slot(route, dest, ep)
                        .map(|id| self.observer.sampler.last_tick(id))
                        .unwrap_or_default();
                    (ep.addr, moved.established, moved.failed())
                })
                .collect();
            observed.push((policy, deltas));
        }
        // Requests the L7 proxy sent: a 5xx (or a failed connect, a reset,
        // a timeout) is a failure, any other answer a success.
        let outcomes = self.l7.proxy().endpoint_outcomes();
        for dest in self.model.http_destinations() {
            let Some(policy) = dest.outlier else { continue };
            let deltas = dest
                .endpoints
                .iter()
                .map(|ep| {
                    let now = outcomes.get(&ep.addr).copied().unwrap_or_default();
                    let then = self
                        .health
                        .http_outcomes
                        .get(&ep.addr)
                        .copied()
                        .unwrap_or_default();
                    let (requests, errors) = (
                        now.requests.saturating_sub(then.requests),
                        now.errors_5xx.saturating_sub(then.errors_5xx),
                    );
                    // A success in the period breaks the streak; the failures
                    // after it are the proxy's consecutive count.
                    if requests > errors {
                        (ep.addr, 1, u64::from(now.consecutive_5xx))
                    } else {
                        (ep.addr, 0, errors)
                    }
                })
                .collect();
            observed.push((policy, deltas));
        }
        self.health.http_outcomes = outcomes;
        // Logged once the tables follow, so a line read means it is in force.
        let mut ejections = Vec::new();
        let mut returns = Vec::new();
        for (policy, deltas) in observed {
            let max = (deltas.len() * policy.max_ejection_percent as usize / 100).max(1);
            let mut ejected = deltas
                .iter()
                .filter(|(e, _, _)| self.health.outliers.is_ejected(e))
                .count();
            for (endpoint, established, failed) in deltas {
                if self.health.outliers.observe(
                    endpoint,
                    established,
                    failed,
                    &policy,
                    ejected < max,
                    now,
                ) {
                    ejected += 1;
                    ejections.push((endpoint, policy.consecutive_failures));
                }
            }
        }
        returns.extend(self.health.outliers.expire(now));
        if ejections.is_empty() && returns.is_empty() {
            return;
        }
        self.reapply();
        for (endpoint, consecutive_failures) in ejections {
            tracing::warn!(%endpoint, consecutive_failures, "outlier: endpoint ejected; its share goes to the others of its subset");
        }
        for endpoint in returns {
            tracing::info!(%endpoint, "outlier ejection over: back in the selection");
        }
    }
}
