//! The rollout state machine.
//!
//! The agent calls it at four moments, always from its loop:
//! - [`Controller::sync`] with every model resolved from the rules (before
//!   the overlay): rollouts new to the rules (or whose spec changed) start
//!   at their first step, those gone are forgotten, and a target route
//!   whose written weights changed since the controller took it is a hand
//!   edit: the rollout pauses and the edit is in force;
//! - [`Controller::tick`] when a pause or an analysis interval is due (and
//!   every second): steps that are due run, back to back;
//! - [`Controller::deliver`] with the answer of a Prometheus query;
//! - [`Controller::command`] for `rollout promote|pause|resume|abort|retry`.
//!
//! Each returns [`Effects`]: whether the weights to put in force changed
//! (the agent then puts the model in force again with
//! [`Controller::overlay`]), the queries to run, the analysis verdicts.
//! The weights the controller sets are all it changes: it never edits the
//! rules.

use std::collections::BTreeMap;

use traffic_shift_config::{
    model::RoutingModel,
    rollout::{Analysis, MetricSource, Rollout, Step},
};

use super::{
    analysis::{self, MetricResult, Observation, Outcome, QueryValue},
    state::{IntervalRecord, PauseCause, Phase, RolloutState, States, Tally, WeightChange},
};

/// An operator's command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Past the current step (a `pause: {}` step waits for this).
    Promote,
    /// Stop where it is; the step's clock stands still.
    Pause,
    /// Go on after `pause`, or take the route back after a hand edit.
    Resume,
    /// All traffic to stable at once (phase `Degraded`).
    Abort,
    /// After a rollback or an abort: start over from the first step.
    Retry,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promote => "promote",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Abort => "abort",
            Self::Retry => "retry",
        }
    }
}

/// A Prometheus query to run for an interval that ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub id: u64,
    pub address: String,
    pub query: String,
}

/// What a call changed.
#[derive(Debug, Default)]
pub struct Effects {
    /// The weights to put in force changed.
    pub weights_changed: bool,
    /// A state changed: persist them.
    pub changed: bool,
    pub queries: Vec<Query>,
    /// `(rollout, metric, outcome)` of every metric of every interval that
    /// ended.
    pub runs: Vec<(String, String, Outcome)>,
}

impl Effects {
    /// Nothing changed and nothing is to be done (most ticks).
    pub fn is_empty(&self) -> bool {
        !self.weights_changed && !self.changed && self.queries.is_empty() && self.runs.is_empty()
    }

    pub fn merge(&mut self, other: Effects) {
        self.weights_changed |= other.weights_changed;
        self.changed |= other.changed;
        self.queries.extend(other.queries);
        self.runs.extend(other.runs);
    }
}

/// Which analysis of a rollout an interval belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Which {
    /// The analysis of this step.
    Step(usize),
    /// `spec.analysis`.
    Background,
}

impl Which {
    fn label(self) -> String {
        match self {
            Self::Step(i) => format!("step {}", i + 1),
            Self::Background => "background".to_owned(),
        }
    }
}

/// An interval in progress: since when, and the counters then.
#[derive(Clone, Copy, Debug)]
struct Clock {
    started_ms: u64,
    baseline: Observation,
}

/// An interval that ended and waits for its queries' answers.
#[derive(Debug)]
struct Pending {
    rollout: String,
    spec_digest: String,
    which: Which,
    at_ms: u64,
    canary_weight: u32,
    delta: Observation,
    /// Query id -> index of its metric.
    waiting: BTreeMap<u64, usize>,
    answers: BTreeMap<usize, QueryValue>,
}

/// Every rollout's state, the intervals in progress, the queries out.
#[derive(Debug, Default)]
pub struct Controller {
    states: States,
    clocks: BTreeMap<(String, Which), Clock>,
    pending: Vec<Pending>,
    next_query: u64,
    /// In a fleet: every live node, with the canary weight each rollout
    /// has in force there ([`Self::set_nodes_in_force`]); `None` on one
    /// node (no gate).
    nodes: Option<Vec<(String, BTreeMap<String, u32>)>>,
}

/// Puts each rollout's canary weight of `states` on its route in `model`
/// (the rules as resolved), except where a hand edit is in force.
pub fn overlay_states(states: &BTreeMap<String, RolloutState>, model: &mut RoutingModel) {
    let rollouts = std::mem::take(&mut model.rollouts);
    for rollout in &rollouts {
        if let Some(state) = states.get(&rollout.name)
            && state.spec_digest == rollout.spec_digest
            && state.pause_cause != Some(PauseCause::HandEdit)
        {
            model.set_canary_weight(rollout, state.canary_weight);
        }
    }
    model.rollouts = rollouts;
}

impl Controller {
    pub fn new(states: States) -> Self {
        Self {
            states,
            ..Self::default()
        }
    }

    pub fn states(&self) -> &BTreeMap<String, RolloutState> {
        &self.states.states
    }

    /// The states, to put back with [`Self::restore`] if what they say
    /// cannot be put in force.
    pub fn snapshot(&self) -> BTreeMap<String, RolloutState> {
        self.states.states.clone()
    }

    pub fn restore(&mut self, states: BTreeMap<String, RolloutState>) {
        self.states.states = states;
    }

    /// Persists the states.
    pub fn save(&self) -> std::io::Result<()> {
        self.states.save()
    }

    /// In a fleet, every live node and the canary weight each rollout has
    /// in force there: a step's clock (a timed pause, an analysis) starts
    /// only once every one of them has the step's weight. `None`: one
    /// node, no gate.
    pub fn set_nodes_in_force(&mut self, nodes: Option<Vec<(String, BTreeMap<String, u32>)>>) {
        self.nodes = nodes;
    }

    /// Records the operator's command the driver took from the store (in
    /// the state, so that the node that wrote it answers).
    pub fn record_command(&mut self, name: &str, command: super::state::AppliedCommand) -> bool {
        match self.states.states.get_mut(name) {
            Some(state) => {
                state.last_command = Some(command);
                true
            }
            None => false,
        }
    }

    /// The live nodes that do not have `weight` in force for `rollout`.
    pub fn missing(&self, rollout: &str, weight: u32) -> Vec<&str> {
        missing_in(self.nodes.as_ref(), rollout, weight)
    }

    /// Follows the rules as resolved (`model`, weights as written): see the
    /// module doc.
    pub fn sync(&mut self, model: &RoutingModel, now_ms: u64) -> Effects {
        let mut effects = Effects::default();
        let names: Vec<&str> = model.rollouts.iter().map(|r| r.name.as_str()).collect();
        let gone: Vec<String> = self
            .states
            .states
            .keys()
            .filter(|n| !names.contains(&n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            tracing::info!(rollout = %name, "rollout removed from the rules: the route's weights as written are in force");
            self.states.states.remove(&name);
            self.forget(&name);
            effects.changed = true;
        }
        for rollout in &model.rollouts {
            let written = model.written_canary_weight(rollout);
            let state = self.states.states.get_mut(&rollout.name);
            match state {
                Some(state) if state.spec_digest == rollout.spec_digest => {
                    if state.written_canary == written {
                        continue;
                    }
                    effects.changed = true;
                    if written == Some(state.canary_weight)
                        && state.pause_cause != Some(PauseCause::HandEdit)
                    {
                        tracing::info!(rollout = %rollout.name, canary_weight = state.canary_weight, "the rules now give the route the weights the rollout put in force");
                        state.written_canary = written;
                        continue;
                    }
                    let before = state.written_canary;
                    state.written_canary = written;
                    if state.pause_cause == Some(PauseCause::HandEdit) {
                        // Edited again: the new edit is in force.
                        state.message = hand_edit_message(rollout, state, before);
                        effects.weights_changed = true;
                        continue;
                    }
                    state.message = hand_edit_message(rollout, state, before);
                    state.phase = Phase::Paused;
                    state.pause_cause = Some(PauseCause::HandEdit);
                    state.paused_ms.get_or_insert(now_ms);
                    state.updated_ms = now_ms;
                    effects.weights_changed = true;
                    tracing::warn!(rollout = %rollout.name, "{}", state.message);
                }
                _ => {
                    let restarted = state.is_some();
                    self.forget(&rollout.name);
                    let state = RolloutState {
                        name: rollout.name.clone(),
                        spec_digest: rollout.spec_digest.clone(),
                        phase: Phase::Progressing,
                        pause_cause: None,
                        message: "started".to_owned(),
                        step: 0,
                        canary_weight: written.unwrap_or(0),
                        step_started_ms: now_ms,
                        clock_started: true,
                        paused_ms: None,
                        written_canary: written,
                        step_tally: Tally::default(),
                        background_tally: Tally::default(),
                        history: std::collections::VecDeque::new(),
                        weights: Vec::new(),
                        started_ms: now_ms,
                        updated_ms: now_ms,
                        last_command: None,
                    };
                    tracing::info!(
                        rollout = %rollout.name,
                        virtual_service = %rollout.virtual_service,
                        route = %rollout.route,
                        stable = %rollout.stable,
                        canary = %rollout.canary,
                        steps = rollout.steps.len(),
                        "{}",
                        if restarted { "rollout spec changed: starting over from the first step" } else { "rollout started" }
                    );
                    self.states.states.insert(rollout.name.clone(), state);
                    effects.changed = true;
                }
            }
        }
        effects
    }

    /// Puts each rollout's canary weight on its route in `model` (the rules
    /// as resolved), except where a hand edit is in force.
    pub fn overlay(&self, model: &mut RoutingModel) {
        overlay_states(&self.states.states, model);
    }

    /// Runs what is due at `now_ms`; `observe` gives a rollout's canary
    /// counters now.
    pub fn tick(
        &mut self,
        model: &RoutingModel,
        now_ms: u64,
        observe: &mut dyn FnMut(&Rollout) -> Observation,
    ) -> Effects {
        let mut effects = Effects::default();
        for rollout in &model.rollouts {
            effects.merge(self.advance(rollout, now_ms, observe));
        }
        effects
    }

    /// When the next pause ends or interval is due (Unix ms), if any.
    pub fn next_wake(&self, model: &RoutingModel) -> Option<u64> {
        let mut wake: Option<u64> = None;
        let mut at = |t: u64| wake = Some(wake.map_or(t, |w| w.min(t)));
        for rollout in &model.rollouts {
            let Some(state) = self.states.states.get(&rollout.name) else {
                continue;
            };
            if state.phase == Phase::Progressing
                && state.clock_started
                && let Some(Step::Pause(Some(d))) = rollout.steps.get(state.step)
            {
                at(state.step_started_ms + duration_ms(*d));
            }
            for (which, analysis) in analyses(rollout, state) {
                if let Some(clock) = self.clocks.get(&(rollout.name.clone(), which)) {
                    at(clock.started_ms + duration_ms(analysis.interval));
                }
            }
        }
        wake
    }

    /// The answer of query `id`.
    pub fn deliver(
        &mut self,
        model: &RoutingModel,
        id: u64,
        value: QueryValue,
        now_ms: u64,
        observe: &mut dyn FnMut(&Rollout) -> Observation,
    ) -> Effects {
        let mut effects = Effects::default();
        let Some(i) = self
            .pending
            .iter()
            .position(|p| p.waiting.contains_key(&id))
        else {
            return effects;
        };
        let pending = &mut self.pending[i];
        let metric = pending.waiting.remove(&id).expect("found by id");
        pending.answers.insert(metric, value);
        if !pending.waiting.is_empty() {
            return effects;
        }
        let pending = self.pending.remove(i);
        let Some(rollout) = model
            .rollout(&pending.rollout)
            .filter(|r| r.spec_digest == pending.spec_digest)
        else {
            return effects;
        };
        let Some(analysis) = analysis_of(rollout, pending.which) else {
            return effects;
        };
        let results: Vec<MetricResult> = analysis
            .metrics
            .iter()
            .enumerate()
            .map(|(m, metric)| {
                analysis::evaluate(metric, analysis, &pending.delta, pending.answers.get(&m))
            })
            .collect();
        effects.merge(self.conclude(
            rollout,
            pending.which,
            pending.at_ms,
            pending.canary_weight,
            results,
        ));
        effects.merge(self.advance(rollout, now_ms, observe));
        effects
    }

    /// An operator's command; `Err` says why it does not apply now.
    pub fn command(
        &mut self,
        model: &RoutingModel,
        name: &str,
        command: Command,
        now_ms: u64,
        observe: &mut dyn FnMut(&Rollout) -> Observation,
    ) -> Result<Effects, String> {
        let rollout = model.rollout(name).ok_or_else(|| {
            format!("no rollout {name} in the rules; `traffic-shift get rollouts` lists them")
        })?;
        let state = self
            .states
            .states
            .get_mut(name)
            .ok_or_else(|| format!("rollout {name} has not started yet"))?;
        let mut effects = Effects {
            changed: true,
            ..Effects::default()
        };
        let step = rollout.steps.get(state.step);
        let mut forget = false;
        match (command, state.phase, state.pause_cause) {
            (Command::Promote, Phase::Paused, Some(PauseCause::PauseStep))
            | (Command::Promote, Phase::Progressing, _) => {
                if matches!(step, Some(Step::SetWeight(_)) | None) {
                    return Err(format!(
                        "rollout {name} is not waiting at a pause or an analysis step"
                    ));
                }
                tracing::info!(rollout = %name, step = state.step + 1, "promoted by hand past its step");
                state.phase = Phase::Progressing;
                state.pause_cause = None;
                state.message = format!("step {} promoted by hand", state.step + 1);
                next_step(state, now_ms);
                self.clocks
                    .remove(&(name.to_owned(), Which::Step(state.step - 1)));
            }
            (Command::Pause, Phase::Progressing, _) => {
                state.phase = Phase::Paused;
                state.pause_cause = Some(PauseCause::Command);
                state.paused_ms = Some(now_ms);
                "paused by hand: `traffic-shift rollout resume` goes on"
                    .clone_into(&mut state.message);
                tracing::info!(rollout = %name, step = state.step + 1, "paused by hand");
            }
            (Command::Pause, Phase::Paused, _) => return Ok(Effects::default()),
            (
                Command::Resume,
                Phase::Paused,
                Some(cause @ (PauseCause::Command | PauseCause::HandEdit)),
            ) => {
                if let Some(paused) = state.paused_ms.take() {
                    state.step_started_ms += now_ms.saturating_sub(paused);
                }
                if cause == PauseCause::HandEdit {
                    state.written_canary = model.written_canary_weight(rollout);
                    effects.weights_changed = true;
                }
                state.phase = Phase::Progressing;
                state.pause_cause = None;
                state.message = format!("resumed by hand at step {}", state.step + 1);
                tracing::info!(rollout = %name, step = state.step + 1, canary_weight = state.canary_weight, "resumed by hand");
                // Intervals measured while paused say nothing of the steps.
                forget = true;
            }
            (Command::Resume, Phase::Paused, _) => {
                return Err(format!(
                    "rollout {name} waits at a `pause: {{}}` step: `traffic-shift rollout promote {name}` goes on"
                ));
            }
            (Command::Abort, phase, cause) if phase != Phase::Degraded => {
                // After a hand edit the model in force is the rules' own
                // (no overlay): the edit is what the rollout takes over.
                if cause == Some(PauseCause::HandEdit) {
                    state.written_canary = model.written_canary_weight(rollout);
                }
                rollback(state, "aborted by hand", now_ms);
                effects.weights_changed = true;
                forget = true;
            }
            (Command::Retry, Phase::Degraded, _) => {
                state.phase = Phase::Progressing;
                state.pause_cause = None;
                state.step = 0;
                state.clock_started = false;
                state.step_started_ms = now_ms;
                state.step_tally = Tally::default();
                state.background_tally = Tally::default();
                "retried by hand: starting over from the first step".clone_into(&mut state.message);
                tracing::info!(rollout = %name, "retried by hand: starting over from the first step");
                forget = true;
            }
            (command, _, _) => return Err(not_applicable(name, command, state)),
        }
        state.updated_ms = now_ms;
        if forget {
            self.forget(name);
        }
        effects.merge(self.advance(rollout, now_ms, observe));
        Ok(effects)
    }

    /// Runs one rollout's steps that are due, back to back, and its
    /// analyses' intervals that ended.
    fn advance(
        &mut self,
        rollout: &Rollout,
        now_ms: u64,
        observe: &mut dyn FnMut(&Rollout) -> Observation,
    ) -> Effects {
        let mut effects = Effects::default();
        // Each pass stops, starts a step's clock or moves a step on: at
        // most two passes per step, and one more.
        for _ in 0..=2 * rollout.steps.len() + 1 {
            let Some(state) = self.states.states.get_mut(&rollout.name) else {
                return effects;
            };
            if state.spec_digest != rollout.spec_digest || state.phase != Phase::Progressing {
                break;
            }
            let Some(step) = rollout.steps.get(state.step) else {
                state.phase = Phase::Healthy;
                state.message = format!("completed: the canary holds {}%", state.canary_weight);
                state.updated_ms = now_ms;
                effects.changed = true;
                tracing::info!(rollout = %rollout.name, canary_weight = state.canary_weight, "rollout completed");
                break;
            };
            if matches!(step, Step::Pause(Some(_)) | Step::Analysis(_)) && !state.clock_started {
                if start_clock(state, self.nodes.as_ref(), &rollout.name, now_ms) {
                    effects.changed = true;
                    continue;
                }
                // Waiting: changed only if the message did.
                effects.changed |= state.updated_ms == now_ms;
                break;
            }
            match step {
                Step::SetWeight(weight) => {
                    state.canary_weight = *weight;
                    state.weights.push(WeightChange {
                        step: Some(state.step),
                        canary_weight: *weight,
                        at_ms: now_ms,
                    });
                    state.message = format!("step {}: canary at {weight}%", state.step + 1);
                    tracing::info!(rollout = %rollout.name, step = state.step + 1, canary_weight = weight, "step: set weight");
                    next_step(state, now_ms);
                    effects.weights_changed = true;
                    effects.changed = true;
                }
                Step::Pause(None) => {
                    state.phase = Phase::Paused;
                    state.pause_cause = Some(PauseCause::PauseStep);
                    state.message = format!(
                        "step {}: paused until `traffic-shift rollout promote {}`",
                        state.step + 1,
                        rollout.name
                    );
                    state.updated_ms = now_ms;
                    effects.changed = true;
                    tracing::info!(rollout = %rollout.name, step = state.step + 1, "step: paused until promoted");
                    break;
                }
                Step::Pause(Some(duration)) => {
                    if now_ms < state.step_started_ms + duration_ms(*duration) {
                        break;
                    }
                    tracing::info!(rollout = %rollout.name, step = state.step + 1, "step: pause over");
                    next_step(state, now_ms);
                    effects.changed = true;
                }
                Step::Analysis(analysis) => {
                    let which = Which::Step(state.step);
                    effects.merge(self.measure(rollout, which, analysis, now_ms, observe));
                    let Some(state) = self.states.states.get(&rollout.name) else {
                        break;
                    };
                    if state.phase != Phase::Progressing || which != Which::Step(state.step) {
                        continue;
                    }
                    break;
                }
            }
        }
        if let Some(analysis) = &rollout.analysis
            && let Some(state) = self.states.states.get(&rollout.name)
            && runs_background(state)
        {
            effects.merge(self.measure(rollout, Which::Background, analysis, now_ms, observe));
        } else {
            self.clocks
                .remove(&(rollout.name.clone(), Which::Background));
        }
        effects
    }

    /// Ends the interval of `which` if it is due (starting the first one if
    /// none runs): its metrics evaluated, or its queries sent.
    fn measure(
        &mut self,
        rollout: &Rollout,
        which: Which,
        analysis: &Analysis,
        now_ms: u64,
        observe: &mut dyn FnMut(&Rollout) -> Observation,
    ) -> Effects {
        let key = (rollout.name.clone(), which);
        let Some(clock) = self.clocks.get(&key).copied() else {
            self.clocks.insert(
                key,
                Clock {
                    started_ms: now_ms,
                    baseline: observe(rollout),
                },
            );
            return Effects::default();
        };
        if now_ms < clock.started_ms + duration_ms(analysis.interval) {
            return Effects::default();
        }
        let now = observe(rollout);
        self.clocks.insert(
            key,
            Clock {
                started_ms: now_ms,
                baseline: now,
            },
        );
        let delta = now.since(&clock.baseline);
        let canary_weight = self.states.states[&rollout.name].canary_weight;
        let queries: Vec<(usize, &str, &str)> = analysis
            .metrics
            .iter()
            .enumerate()
            .filter_map(|(i, m)| match &m.source {
                MetricSource::Prometheus { address, query } => {
                    Some((i, address.as_str(), query.as_str()))
                }
                _ => None,
            })
            .collect();
        if queries.is_empty() {
            let results = analysis
                .metrics
                .iter()
                .map(|m| analysis::evaluate(m, analysis, &delta, None))
                .collect();
            return self.conclude(rollout, which, now_ms, canary_weight, results);
        }
        let mut effects = Effects::default();
        let mut waiting = BTreeMap::new();
        for (metric, address, query) in queries {
            self.next_query += 1;
            waiting.insert(self.next_query, metric);
            effects.queries.push(Query {
                id: self.next_query,
                address: address.to_owned(),
                query: query.to_owned(),
            });
        }
        self.pending.push(Pending {
            rollout: rollout.name.clone(),
            spec_digest: rollout.spec_digest.clone(),
            which,
            at_ms: now_ms,
            canary_weight,
            delta,
            waiting,
            answers: BTreeMap::new(),
        });
        effects
    }

    /// An interval's verdict: recorded, counted, and acted on (the step
    /// passes, or the rollout rolls back).
    fn conclude(
        &mut self,
        rollout: &Rollout,
        which: Which,
        at_ms: u64,
        canary_weight: u32,
        results: Vec<MetricResult>,
    ) -> Effects {
        let mut effects = Effects {
            changed: true,
            ..Effects::default()
        };
        let Some(state) = self.states.states.get_mut(&rollout.name) else {
            return effects;
        };
        let Some(analysis) = analysis_of(rollout, which) else {
            return effects;
        };
        let outcome = analysis::verdict(&results);
        effects.runs.extend(
            results
                .iter()
                .map(|r| (rollout.name.clone(), r.name.clone(), r.outcome)),
        );
        let notes: Vec<String> = results
            .iter()
            .filter(|r| r.outcome != Outcome::Successful)
            .map(|r| match r.value {
                Some(v) => format!("{} = {} ({})", r.name, analysis::rounded(v), r.note),
                None => format!("{}: {}", r.name, r.note),
            })
            .collect();
        state.record(IntervalRecord {
            at_ms,
            analysis: which.label(),
            canary_weight,
            outcome,
            metrics: results,
        });
        // A step's interval counts only while the rollout is at that step.
        let current = match which {
            Which::Step(i) => state.phase == Phase::Progressing && state.step == i,
            Which::Background => runs_background(state),
        };
        if !current {
            return effects;
        }
        let tally = match which {
            Which::Step(_) => &mut state.step_tally,
            Which::Background => &mut state.background_tally,
        };
        tally.add(outcome);
        let tally = *tally;
        tracing::info!(
            rollout = %rollout.name,
            analysis = %which.label(),
            outcome = outcome.as_str(),
            successful = tally.successful,
            failed = tally.failed,
            inconclusive = tally.inconclusive,
            "analysis interval: {}",
            if notes.is_empty() { "every metric within its threshold".to_owned() } else { notes.join("; ") }
        );
        let reason = if tally.failed > analysis.failure_limit {
            Some(format!(
                "{} analysis: {} failed interval(s), more than failureLimit {}: {}",
                which.label(),
                tally.failed,
                analysis.failure_limit,
                notes.join("; ")
            ))
        } else if tally.inconclusive > analysis.inconclusive_limit {
            Some(format!(
                "{} analysis: {} inconclusive interval(s), more than inconclusiveLimit {}: {}",
                which.label(),
                tally.inconclusive,
                analysis.inconclusive_limit,
                notes.join("; ")
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            rollback(state, &reason, at_ms);
            effects.weights_changed = true;
            self.forget(&rollout.name);
            return effects;
        }
        if let Which::Step(_) = which
            && tally.successful >= analysis.count.unwrap_or(1)
        {
            tracing::info!(rollout = %rollout.name, step = state.step + 1, "step: analysis passed");
            state.message = format!("step {}: analysis passed", state.step + 1);
            next_step(state, at_ms);
            self.clocks.remove(&(rollout.name.clone(), which));
        }
        effects
    }

    /// Forgets a rollout's intervals in progress and queries out.
    fn forget(&mut self, name: &str) {
        self.clocks.retain(|(n, _), _| n != name);
        self.pending.retain(|p| p.rollout != name);
    }
}

/// Why `command` does not apply to the rollout as it stands.
fn not_applicable(name: &str, command: Command, state: &RolloutState) -> String {
    format!(
        "rollout {name} is {}{}: `{}` does not apply{}",
        state.phase.as_str(),
        match state.pause_cause {
            Some(PauseCause::HandEdit) => " (its route was edited by hand)",
            Some(PauseCause::Command) => " (by hand)",
            Some(PauseCause::PauseStep) => " (at a pause step)",
            None => "",
        },
        command.as_str(),
        match (command, state.phase) {
            (Command::Retry, _) => "; only a rolled back or aborted rollout is retried",
            (Command::Resume, _) => "; it is not paused",
            (_, Phase::Degraded) => "; `retry` starts it over",
            (_, Phase::Healthy) => "; it completed",
            (_, Phase::Paused) => "; `resume` first",
            _ => "",
        }
    )
}

/// Whether the background analysis runs: the canary has traffic by the
/// rollout's doing, and the rollout goes on or waits at a step.
fn runs_background(state: &RolloutState) -> bool {
    state.canary_weight > 0
        && match state.phase {
            Phase::Progressing => true,
            Phase::Paused => state.pause_cause == Some(PauseCause::PauseStep),
            Phase::Healthy | Phase::Degraded => false,
        }
}

/// The analyses of a rollout that may have an interval running.
fn analyses<'a>(rollout: &'a Rollout, state: &RolloutState) -> Vec<(Which, &'a Analysis)> {
    let mut all = Vec::new();
    if let Some(Step::Analysis(a)) = rollout.steps.get(state.step) {
        all.push((Which::Step(state.step), a));
    }
    if let Some(a) = &rollout.analysis {
        all.push((Which::Background, a));
    }
    all
}

fn analysis_of(rollout: &Rollout, which: Which) -> Option<&Analysis> {
    match which {
        Which::Step(i) => match rollout.steps.get(i) {
            Some(Step::Analysis(a)) => Some(a),
            _ => None,
        },
        Which::Background => rollout.analysis.as_ref(),
    }
}

/// Starts the step's clock if every live node has its weight in force
/// (returns whether it did); else says which nodes it waits for.
fn start_clock(
    state: &mut RolloutState,
    nodes: Option<&Vec<(String, BTreeMap<String, u32>)>>,
    name: &str,
    now_ms: u64,
) -> bool {
    let missing: Vec<String> = missing_in(nodes, name, state.canary_weight)
        .into_iter()
        .map(str::to_owned)
        .collect();
    if let Some(message) = waiting_message(state, &missing) {
        if state.message != message {
            tracing::info!(rollout = %name, step = state.step + 1, "{message}");
            state.message = message;
            state.updated_ms = now_ms;
        }
        return false;
    }
    if state.message.contains("waiting for") {
        state.message = format!(
            "step {}: {}% in force on every node",
            state.step + 1,
            state.canary_weight
        );
        tracing::info!(rollout = %name, step = state.step + 1, canary_weight = state.canary_weight, "every live node has the step's weight in force: its clock starts");
    }
    state.clock_started = true;
    state.step_started_ms = now_ms;
    state.updated_ms = now_ms;
    true
}

/// The nodes of `nodes` that do not have `weight` in force for `rollout`.
fn missing_in<'a>(
    nodes: Option<&'a Vec<(String, BTreeMap<String, u32>)>>,
    rollout: &str,
    weight: u32,
) -> Vec<&'a str> {
    nodes
        .into_iter()
        .flatten()
        .filter(|(_, rollouts)| rollouts.get(rollout) != Some(&weight))
        .map(|(node, _)| node.as_str())
        .collect()
}

/// While live nodes do not have the step's weight in force: what the
/// rollout says (`None`: every one has it).
fn waiting_message(state: &RolloutState, missing: &[String]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "step {}: waiting for {} node{} to put {}% in force ({})",
        state.step + 1,
        missing.len(),
        if missing.len() == 1 { "" } else { "s" },
        state.canary_weight,
        missing.join(", ")
    ))
}

fn next_step(state: &mut RolloutState, now_ms: u64) {
    state.step += 1;
    state.clock_started = false;
    state.step_started_ms = now_ms;
    state.step_tally = Tally::default();
    state.updated_ms = now_ms;
}

/// All traffic back to stable, at once.
fn rollback(state: &mut RolloutState, reason: &str, now_ms: u64) {
    state.canary_weight = 0;
    state.phase = Phase::Degraded;
    state.pause_cause = None;
    state.paused_ms = None;
    state.message = format!("rolled back: {reason}");
    state.weights.push(WeightChange {
        step: None,
        canary_weight: 0,
        at_ms: now_ms,
    });
    state.updated_ms = now_ms;
    tracing::warn!(rollout = %state.name, step = state.step + 1, "rolled back, all traffic to stable: {reason}");
}

fn hand_edit_message(rollout: &Rollout, state: &RolloutState, before: Option<u32>) -> String {
    let share = |w: Option<u32>| w.map_or_else(|| "none".to_owned(), |w| format!("{w}%"));
    format!(
        "paused: the weights of VirtualService {} {} were edited by hand (canary {} as written, was {}); the edit is in force. `traffic-shift rollout resume {}` takes the route back at step {} (canary {}%), `abort` sends all to stable",
        rollout.virtual_service,
        rollout.route.rsplit('/').next().unwrap_or(&rollout.route),
        share(state.written_canary),
        share(before),
        rollout.name,
        (state.step + 1).min(rollout.steps.len()),
        state.canary_weight,
    )
}

pub fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
