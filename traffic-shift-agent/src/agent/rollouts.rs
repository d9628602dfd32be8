//! The agent's side of rollouts ([`crate::rollout`]): the controller
//! follows every model resolved from the rules ([`Agent::install`]), its
//! weights are laid over the model put in force, and the loop wakes it
//! when a pause or an analysis interval ends, when a Prometheus query
//! answers, and for the operator's commands on the admin socket.
//!
//! Order, so that an agent killed at any point resumes at the same step:
//! the controller's states are saved before the weights they say are
//! written to the kernel; if the kernel refuses them, the states before
//! are put back (and saved).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use traffic_shift_config::{
    model::RoutingModel,
    rollout::{Rollout, RolloutProtocol},
};

use super::{Agent, error::InstallError, kernel::Kernel, l7::L7};
use crate::{
    admin::Response,
    cli::now_ms,
    metrics::RolloutGauges,
    rollout::{Command, Controller, Effects, Observation, RolloutStatus, analysis::QueryValue},
};

/// A query's answer, for the loop: `(id, value)`.
pub type Answer = (u64, QueryValue);

/// The controller and where its queries answer.
pub struct Rollouts {
    pub controller: Controller,
    answers: mpsc::Sender<Answer>,
}

impl Rollouts {
    /// The controller with the states saved in `state_dir`.
    pub fn open(
        state_dir: &std::path::Path,
    ) -> Result<(Self, mpsc::Receiver<Answer>), crate::rollout::state::StateFileError> {
        let states = crate::rollout::state::States::open(state_dir)?;
        let (answers, receiver) = mpsc::channel(64);
        Ok((
            Self {
                controller: Controller::new(states),
                answers,
            },
            receiver,
        ))
    }

    /// The controller of an agent: its states in `state_dir` on one node,
    /// in the store in a fleet.
    pub fn for_agent(
        state_dir: &std::path::Path,
        fleet: bool,
    ) -> Result<(Self, mpsc::Receiver<Answer>), crate::rollout::state::StateFileError> {
        if fleet {
            Ok(Self::in_memory())
        } else {
            Self::open(state_dir)
        }
    }

    /// The controller without a state file: in a fleet, the store keeps
    /// the states.
    pub fn in_memory() -> (Self, mpsc::Receiver<Answer>) {
        let (answers, receiver) = mpsc::channel(64);
        (
            Self {
                controller: Controller::default(),
                answers,
            },
            receiver,
        )
    }
}

/// The canary's counters now, on this node: the kernel's per-endpoint
/// counters (TCP routes) or the L7 proxy's per-destination counts (HTTP
/// routes) of the canary subset on every route of the target rule.
fn observe(kernel: &Kernel, l7: &L7, model: &RoutingModel, rollout: &Rollout) -> Observation {
    let mut seen = Observation::default();
    match rollout.protocol {
        RolloutProtocol::Tcp => {
            let counters = kernel.datapath.counters();
            for route in model.routes.iter().filter(|r| rollout.targets_tcp(&r.key)) {
                for dest in route.destinations.iter().filter(|d| rollout.is_canary(d)) {
                    for ep in &dest.endpoints {
                        if let Some(stats) = kernel
                            .slot(route, dest, ep)
                            .and_then(|id| counters.stats(id).ok())
                        {
                            seen.established += stats.established;
                            seen.failed += stats.failed();
                        }
                    }
                }
            }
        }
        RolloutProtocol::Http => {
            for ((_, route), series) in l7.proxy().route_stats() {
                if !rollout.targets_http(&route) {
                    continue;
                }
                for ((dest, _), counts) in &series {
                    if dest.as_ref().is_some_and(|(host, subset)| {
                        *host == rollout.host && subset.as_deref() == Some(rollout.canary.as_str())
                    }) {
                        seen.requests.add(counts);
                    }
                }
            }
        }
    }
    seen
}

impl Agent {
    /// Puts `model` (resolved from the rules, weights as written) in force
    /// with the rollouts' weights over it: the controller follows it first
    /// (rollouts started, gone, edited by hand) and runs what is due.
    pub(super) fn install(
        &mut self,
        mut model: RoutingModel,
        what: &str,
    ) -> Result<(), InstallError> {
        if self.fleet_rollouts.is_some() {
            return self.install_in_fleet(model, what);
        }
        let before = self.rollouts.controller.snapshot();
        let now = now_ms();
        let mut effects = self.rollouts.controller.sync(&model, now);
        let (kernel, l7, in_force) = (&self.kernel, &self.l7, &self.model);
        effects.merge(
            self.rollouts
                .controller
                .tick(&model, now, &mut |r| observe(kernel, l7, in_force, r)),
        );
        self.save_rollouts(&effects);
        self.rollouts.controller.overlay(&mut model);
        match self.put_in_force(model, what) {
            Ok(()) => {
                self.rollout_effects(effects);
                Ok(())
            }
            Err(err) => {
                if effects.changed {
                    self.rollouts.controller.restore(before);
                    self.save_rollouts(&Effects {
                        changed: true,
                        ..Effects::default()
                    });
                }
                Err(err)
            }
        }
    }

    /// When the controller wants to run next.
    pub(super) fn rollout_wake(&self) -> Option<Instant> {
        if !self.drives() {
            return None;
        }
        let at = self.rollouts.controller.next_wake(&self.model)?;
        Some(Instant::now() + Duration::from_millis(at.saturating_sub(now_ms())))
    }

    /// Runs what is due.
    pub(super) fn rollout_tick(&mut self) {
        if self.fleet_rollouts.is_some() {
            self.expire_waiting_commands();
            if self.drives() {
                let model = &self.model;
                let fleet = self.fleet_rollouts.as_mut().expect("checked");
                let effects = self
                    .rollouts
                    .controller
                    .tick(model, now_ms(), &mut |r| fleet.observe(r));
                self.rollout_changed(effects, "rollout step");
            }
            return;
        }
        let (kernel, l7, model) = (&self.kernel, &self.l7, &self.model);
        let effects = self
            .rollouts
            .controller
            .tick(model, now_ms(), &mut |r| observe(kernel, l7, model, r));
        self.rollout_changed(effects, "rollout step");
    }

    /// A Prometheus query answered.
    pub(super) fn rollout_answer(&mut self, (id, value): Answer) {
        if let Some(fleet) = &mut self.fleet_rollouts {
            if fleet.epoch.is_none() {
                return;
            }
            let model = &self.model;
            let effects = self
                .rollouts
                .controller
                .deliver(model, id, value, now_ms(), &mut |r| fleet.observe(r));
            self.rollout_changed(effects, "rollout analysis");
            return;
        }
        let (kernel, l7, model) = (&self.kernel, &self.l7, &self.model);
        let effects = self
            .rollouts
            .controller
            .deliver(model, id, value, now_ms(), &mut |r| {
                observe(kernel, l7, model, r)
            });
        self.rollout_changed(effects, "rollout analysis");
    }

    /// `rollout status` / `get rollouts`: one rollout (by `ns/name`, or a
    /// name only one namespace has) or all.
    pub(super) fn rollout_statuses(&self, name: Option<&str>) -> Response {
        let now = now_ms();
        let mut statuses = Vec::new();
        for rollout in &self.model.rollouts {
            if let Some(state) = self.rollout_states().get(&rollout.name) {
                let mut status = RolloutStatus::of(rollout, state, now);
                if let Some(fleet) = &self.fleet_rollouts {
                    status.fleet = true;
                    status.driver.clone_from(&fleet.leader);
                }
                statuses.push(status);
            }
        }
        match name {
            None => Response::Rollouts { rollouts: statuses },
            Some(name) => match self.find_rollout(name) {
                Ok(full) => Response::Rollouts {
                    rollouts: statuses.into_iter().filter(|s| s.name == full).collect(),
                },
                Err(error) => Response::Refused {
                    errors: vec![error],
                },
            },
        }
    }

    /// `rollout promote|pause|resume|abort|retry NAME`.
    pub(super) fn rollout_command(&mut self, name: &str, command: Command) -> Response {
        let full = match self.find_rollout(name) {
            Ok(full) => full,
            Err(error) => {
                return Response::Refused {
                    errors: vec![error],
                };
            }
        };
        let before = self.rollouts.controller.snapshot();
        let (kernel, l7, model) = (&self.kernel, &self.l7, &self.model);
        let result = self
            .rollouts
            .controller
            .command(model, &full, command, now_ms(), &mut |r| {
                observe(kernel, l7, model, r)
            });
        match result {
            Ok(effects) => {
                tracing::info!(rollout = %full, command = command.as_str(), "rollout command");
                if self.rollout_changed(effects, &format!("rollout {}", command.as_str())) {
                    self.rollout_statuses(Some(&full))
                } else {
                    self.rollouts.controller.restore(before);
                    self.save_rollouts(&Effects {
                        changed: true,
                        ..Effects::default()
                    });
                    Response::Refused {
                        errors: vec![format!(
                            "rollout {full}: its weights could not be put in force (see the agent's log); nothing changed"
                        )],
                    }
                }
            }
            Err(error) => Response::Refused {
                errors: vec![error],
            },
        }
    }

    /// The full name of the rollout `name` names.
    pub(super) fn find_rollout(&self, name: &str) -> Result<String, String> {
        let names: Vec<&str> = self
            .model
            .rollouts
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        if names.contains(&name) {
            return Ok(name.to_owned());
        }
        let matching: Vec<&str> = names
            .iter()
            .copied()
            .filter(|full| !name.contains('/') && full.rsplit('/').next() == Some(name))
            .collect();
        match matching.as_slice() {
            [one] => Ok((*one).to_owned()),
            [] => Err(format!(
                "no rollout {name} in force{}",
                if names.is_empty() {
                    String::new()
                } else {
                    format!(" (there are: {})", names.join(", "))
                }
            )),
            many => Err(format!(
                "rollout {name} is in several namespaces ({}); name it as NAMESPACE/NAME",
                many.join(", ")
            )),
        }
    }

    /// Acts on what the controller did outside an install: saves, puts the
    /// new weights in force. Whether that went through.
    pub(super) fn rollout_changed(&mut self, effects: Effects, what: &str) -> bool {
        // Every second's tick: nothing to save, write or publish.
        if effects.is_empty() {
            return true;
        }
        if let Some(fleet) = &mut self.fleet_rollouts {
            // The weights go in force when the store has the states (on
            // every node, this one too).
            if effects.changed {
                fleet.send_writes(self.rollouts.controller.states(), None);
            }
            self.rollout_effects(effects);
            return true;
        }
        self.save_rollouts(&effects);
        if effects.weights_changed {
            let mut model = (*self.model).clone();
            self.rollouts.controller.overlay(&mut model);
            if let Err(err) = self.put_in_force(model, what) {
                tracing::error!(%err, "cannot put the rollout's weights in force; the weights before stay");
                return false;
            }
        }
        self.rollout_effects(effects);
        true
    }

    fn save_rollouts(&self, effects: &Effects) {
        if effects.changed
            && let Err(err) = self.rollouts.controller.save()
        {
            tracing::error!(%err, "cannot save the rollouts' state; an agent restarted now would resume them from the last state saved");
        }
    }

    /// Sends the queries, counts the verdicts, tells the exporter.
    pub(super) fn rollout_effects(&mut self, effects: Effects) {
        for query in effects.queries {
            let answers = self.rollouts.answers.clone();
            tokio::spawn(async move {
                let value = crate::rollout::prometheus::query(&query.address, &query.query).await;
                let _ = answers.send((query.id, value)).await;
            });
        }
        let mut shared = self.observer.shared();
        for (rollout, metric, outcome) in effects.runs {
            *shared
                .analysis_runs
                .entry((rollout, metric, outcome.as_str()))
                .or_default() += 1;
        }
        shared.rollouts = self
            .rollout_states()
            .values()
            .map(|s| RolloutGauges {
                name: s.name.clone(),
                phase: s.phase,
                step: s.step,
                canary_weight: s.canary_weight,
            })
            .collect();
    }
}
