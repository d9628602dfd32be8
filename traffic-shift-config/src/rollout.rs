//! Rollouts: a `Rollout` (our own kind, [`API_VERSION`]) drives the
//! weights of one VirtualService route from its `stable` subset to its
//! `canary` subset in steps (Argo Rollouts' canary syntax: `setWeight`,
//! `pause`, `analysis`), gated on metrics.
//!
//! The resolved [`Rollout`] is part of the [`RoutingModel`]: resolve checks
//! the target (the VirtualService, its route, both subsets in the host's
//! DestinationRule) and makes sure the route has exactly two destinations,
//! the stable and the canary subsets of one host (a subset the route does
//! not name is added with weight 0, so a rollout can start from "all to
//! v1"). The weights as written stay in the model; the agent's rollout
//! controller puts its own in force with [`RoutingModel::set_canary_weight`]
//! and compares the written ones ([`RoutingModel::written_canary_weight`])
//! with those it started from, to notice a hand edit.

use std::time::Duration;

use crate::model::{Destination, RoutingModel};

/// The `apiVersion` of a `Rollout`.
pub const API_VERSION: &str = crate::common::ROLLOUT_API_VERSION;

/// One `Rollout`, resolved against the rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollout {
    /// `<namespace>/<name>` of the Rollout.
    pub name: String,
    /// The file it came from, for messages.
    pub source: String,
    /// `<namespace>/<name>` of the target VirtualService.
    pub virtual_service: String,
    /// The target rule as a key prefix of the model: `<ns>/<vs>/tcp[<i>]`
    /// (every [`crate::model::TcpRoute`] whose key is this or starts with
    /// it and `/`: one per port) or `<ns>/<vs>/http[<i>]` (every
    /// [`crate::model::HttpRoute`] with this key, one per listener).
    pub route: String,
    /// Whether the target is an `http` rule (requests through the L7
    /// proxy) or a `tcp` rule (connections in the kernel).
    pub protocol: RolloutProtocol,
    /// The destination host of both subsets, as the model names it.
    pub host: String,
    pub stable: String,
    pub canary: String,
    pub steps: Vec<Step>,
    /// `spec.analysis`: in the background, from the first step to the
    /// last; a failure rolls back whatever the step.
    pub analysis: Option<Analysis>,
    /// A digest of the spec as written (`spec` only, not `metadata`): a
    /// different digest is a new rollout, started over from its first
    /// step.
    pub spec_digest: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutProtocol {
    Tcp,
    Http,
}

/// One of `spec.steps`.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// `setWeight: N`: the canary's share, 0..=100 percent.
    SetWeight(u32),
    /// `pause: {duration: D}` (`Some`), or `pause: {}` (`None`: until
    /// `rollout promote`).
    Pause(Option<Duration>),
    /// `analysis: {...}`: the step passes after `count` successful
    /// intervals.
    Analysis(Analysis),
}

/// How the canary is judged: every `interval`, each metric over that
/// interval against its threshold. An interval is successful when every
/// metric is within its threshold, failed when one is outside it,
/// inconclusive otherwise (a metric with fewer than `min_samples`
/// connections or requests, or a query without a value): never a pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    pub interval: Duration,
    /// Successful intervals a step analysis needs (`count`, default 1);
    /// `None` for the background analysis, which runs to the end.
    pub count: Option<u32>,
    /// Failed intervals tolerated; one more rolls back (Argo Rollouts'
    /// `failureLimit`, default 0).
    pub failure_limit: u32,
    /// Inconclusive intervals tolerated; one more rolls back (default 0).
    pub inconclusive_limit: u32,
    /// Connections or requests an interval needs for the kernel's and the
    /// proxy's metrics to be judged (default 1).
    pub min_samples: u64,
    pub metrics: Vec<Metric>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// `name`, else the source's own name (`connectionSuccessRate`, ...).
    pub name: String,
    pub source: MetricSource,
    /// The value must be at least this (inclusive).
    pub min: Option<f64>,
    /// The value must be at most this (inclusive).
    pub max: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum MetricSource {
    /// TCP routes: connections to the canary's endpoints that completed
    /// their handshake, in percent of those attempted (the kernel's
    /// per-endpoint counters).
    ConnectionSuccessRate,
    /// HTTP routes: requests to the canary not answered 5xx, in percent.
    RequestSuccessRate,
    /// HTTP routes: the 99th percentile of the canary's request duration,
    /// in milliseconds.
    RequestDurationP99,
    /// A PromQL instant query; its value (a scalar, or a vector of exactly
    /// one sample) is compared.
    Prometheus { address: String, query: String },
}

impl MetricSource {
    /// The field name the source is written with.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ConnectionSuccessRate => "connectionSuccessRate",
            Self::RequestSuccessRate => "requestSuccessRate",
            Self::RequestDurationP99 => "requestDurationP99",
            Self::Prometheus { .. } => "prometheus",
        }
    }
}

impl Rollout {
    /// Whether a TCP route key of the model belongs to the target rule.
    pub fn targets_tcp(&self, key: &str) -> bool {
        self.protocol == RolloutProtocol::Tcp
            && key
                .strip_prefix(&self.route)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Whether an HTTP route key of the model is the target rule.
    pub fn targets_http(&self, key: &str) -> bool {
        self.protocol == RolloutProtocol::Http && key == self.route
    }

    pub fn is_canary(&self, dest: &Destination) -> bool {
        dest.host == self.host && dest.subset.as_deref() == Some(self.canary.as_str())
    }

    pub fn is_stable(&self, dest: &Destination) -> bool {
        dest.host == self.host && dest.subset.as_deref() == Some(self.stable.as_str())
    }
}

impl RoutingModel {
    /// The rollout of this name, if the model has it.
    pub fn rollout(&self, name: &str) -> Option<&Rollout> {
        self.rollouts.iter().find(|r| r.name == name)
    }

    /// Every destination of the rollout's target route (on every port and
    /// listener), to change their weights.
    fn target_destinations_mut<'a>(
        &'a mut self,
        rollout: &'a Rollout,
    ) -> impl Iterator<Item = &'a mut Destination> + 'a {
        let tcp = self
            .routes
            .iter_mut()
            .filter(|r| rollout.targets_tcp(&r.key))
            .flat_map(|r| &mut r.destinations);
        let http = self
            .http
            .iter_mut()
            .flat_map(|l| &mut l.virtual_hosts)
            .flat_map(|v| &mut v.routes)
            .filter(|r| rollout.targets_http(&r.key))
            .flat_map(|r| r.destinations.iter_mut().map(|d| &mut d.destination));
        tcp.chain(http)
    }

    /// Puts `canary` percent (0..=100) on the rollout's canary subset and
    /// the rest on its stable subset, on every route of its target rule.
    /// Returns whether the model has the rollout's route.
    pub fn set_canary_weight(&mut self, rollout: &Rollout, canary: u32) -> bool {
        let canary = canary.min(100);
        let mut found = false;
        for dest in self.target_destinations_mut(rollout) {
            if rollout.is_canary(dest) {
                dest.weight = canary;
                found = true;
            } else if rollout.is_stable(dest) {
                dest.weight = 100 - canary;
                found = true;
            }
        }
        found
    }

    /// The canary's share of the target rule as its weights stand in this
    /// model, in percent (rounded down), from its first route; `None` when
    /// the model has no route of the rule or its weights are all 0.
    pub fn written_canary_weight(&self, rollout: &Rollout) -> Option<u32> {
        let dests: Vec<&Destination> =
            if let Some(route) = self.routes.iter().find(|r| rollout.targets_tcp(&r.key)) {
                route.destinations.iter().collect()
            } else {
                self.http
                    .iter()
                    .flat_map(|l| &l.virtual_hosts)
                    .flat_map(|v| &v.routes)
                    .find(|r| rollout.targets_http(&r.key))?
                    .destinations
                    .iter()
                    .map(|d| &d.destination)
                    .collect()
            };
        let total: u64 = dests.iter().map(|d| u64::from(d.weight)).sum();
        if total == 0 {
            return None;
        }
        let canary: u64 = dests
            .iter()
            .filter(|d| rollout.is_canary(d))
            .map(|d| u64::from(d.weight))
            .sum();
        u32::try_from(canary * 100 / total).ok()
    }
}
