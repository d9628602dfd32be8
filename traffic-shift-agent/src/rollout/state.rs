//! A rollout's state, as persisted in the state directory
//! (`rollouts.json`, written whole and atomically on every change): an
//! agent killed mid-rollout resumes at the step it was at, with the weight
//! it had put in force, without repeating or skipping a step.

use std::{
    collections::{BTreeMap, VecDeque},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::analysis::{MetricResult, Outcome};

/// The file, in `--state-dir`.
pub const STATE_FILE: &str = "rollouts.json";

/// Intervals kept in a rollout's history.
pub const HISTORY: usize = 20;

/// Argo Rollouts' phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Steps are running.
    Progressing,
    /// Waiting: at a `pause: {}` step (for `promote`), paused by hand
    /// (`rollout pause`), or because the target route's weights were
    /// edited by hand (the edit is in force).
    Paused,
    /// Every step done: the canary holds the last step's weight.
    Healthy,
    /// Rolled back (an analysis failed, or `rollout abort`): all traffic
    /// on the stable subset.
    Degraded,
}

impl Phase {
    pub const ALL: [Self; 4] = [
        Self::Progressing,
        Self::Paused,
        Self::Healthy,
        Self::Degraded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Progressing => "Progressing",
            Self::Paused => "Paused",
            Self::Healthy => "Healthy",
            Self::Degraded => "Degraded",
        }
    }
}

/// Why a rollout is paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PauseCause {
    /// A `pause: {}` step: `rollout promote` goes on.
    PauseStep,
    /// `rollout pause`: `rollout resume` goes on.
    Command,
    /// The target route's weights were edited by hand: the edit is in
    /// force; `rollout resume` takes the route back at the current step.
    HandEdit,
}

/// Intervals of one analysis by verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub successful: u32,
    pub failed: u32,
    pub inconclusive: u32,
}

impl Tally {
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Successful => self.successful += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Inconclusive => self.inconclusive += 1,
        }
    }
}

/// One analysis interval, as the history shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntervalRecord {
    /// When the interval ended (Unix ms).
    pub at_ms: u64,
    /// `step 3` or `background`.
    pub analysis: String,
    /// The canary weight in force over the interval.
    pub canary_weight: u32,
    pub outcome: Outcome,
    pub metrics: Vec<MetricResult>,
}

/// A weight the controller put in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightChange {
    /// The step that set it (`None`: a rollback or an abort).
    pub step: Option<usize>,
    pub canary_weight: u32,
    pub at_ms: u64,
}

/// One rollout's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    pub name: String,
    /// The spec this state runs ([`traffic_shift_config::rollout::Rollout::spec_digest`]):
    /// another digest starts the rollout over.
    pub spec_digest: String,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_cause: Option<PauseCause>,
    /// Why the phase is what it is (`rolled back: ...`, `completed`, ...).
    pub message: String,
    /// The current step (index into `steps`; its length once completed).
    pub step: usize,
    /// The canary's weight the controller puts in force (percent).
    pub canary_weight: u32,
    /// When the current step started (Unix ms): a pause's clock, moved on
    /// by the time spent paused by hand.
    pub step_started_ms: u64,
    /// Since when the rollout is paused by hand or by a hand edit (the
    /// step's clock stands still).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_ms: Option<u64>,
    /// The canary's share as the target route's weights are written in the
    /// rules, when the controller last took the route: the rules saying
    /// something else later is a hand edit.
    pub written_canary: Option<u32>,
    /// The current step's analysis.
    pub step_tally: Tally,
    /// The background analysis (`spec.analysis`), over the whole rollout.
    pub background_tally: Tally,
    /// The last [`HISTORY`] intervals, oldest first.
    pub history: VecDeque<IntervalRecord>,
    /// Every weight the controller put in force, in order.
    pub weights: Vec<WeightChange>,
    pub started_ms: u64,
    pub updated_ms: u64,
}

impl RolloutState {
    pub fn record(&mut self, record: IntervalRecord) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(record);
    }
}

/// The states of every rollout, by name, and where they are persisted.
#[derive(Debug, Default)]
pub struct States {
    pub path: Option<PathBuf>,
    pub states: BTreeMap<String, RolloutState>,
}

/// Why the persisted states cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error(
        "cannot read the rollouts' state {path}: {source}; fix or remove it (the rollouts then start over from their first step)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the rollouts' state {path} is not valid: {source}; fix or remove it (the rollouts then start over from their first step)"
    )]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl States {
    /// The states saved in `dir` (none if the file is not there).
    pub fn open(dir: &Path) -> Result<Self, StateFileError> {
        let path = dir.join(STATE_FILE);
        let states = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let list: Vec<RolloutState> =
                    serde_json::from_str(&text).map_err(|source| StateFileError::Parse {
                        path: path.clone(),
                        source,
                    })?;
                list.into_iter().map(|s| (s.name.clone(), s)).collect()
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(StateFileError::Read {
                    path: path.clone(),
                    source,
                });
            }
        };
        Ok(Self {
            path: Some(path),
            states,
        })
    }

    /// Writes every state (atomically), if they are persisted.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let list: Vec<&RolloutState> = self.states.values().collect();
        let text = serde_json::to_string_pretty(&list).expect("rollout states serialize");
        crate::applied::write_atomic(path, &text)
    }
}
