//! What `traffic-shift rollout status` and `get rollouts` show: a
//! rollout's spec and state as of now ([`RolloutStatus`], which the admin
//! socket carries), and their rendering, like
//! `kubectl argo rollouts get rollout`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use traffic_shift_config::rollout::{Analysis, Rollout, Step};

use super::{
    analysis::{MetricResult, threshold},
    controller::duration_ms,
    state::{IntervalRecord, PauseCause, Phase, RolloutState, Tally, WeightChange},
};

/// One metric of an analysis, with its last value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricLine {
    /// `step 3` or `background`.
    pub analysis: String,
    pub name: String,
    /// `connectionSuccessRate`, ...
    pub kind: String,
    /// `>= 99`.
    pub threshold: String,
    /// Its value in the last interval of that analysis, if one ended.
    pub last: Option<MetricResult>,
}

/// A rollout as `rollout status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub name: String,
    pub virtual_service: String,
    /// `tcp[0]`, `http[1]`.
    pub route: String,
    pub stable: String,
    pub canary: String,
    pub phase: Phase,
    pub pause_cause: Option<PauseCause>,
    pub message: String,
    /// The current step (0-based; `steps.len()` once completed).
    pub step: usize,
    /// Each step in words: `setWeight 20`, `pause 30s`, ...
    pub steps: Vec<String>,
    /// The canary's share the rollout puts in force.
    pub canary_weight: u32,
    /// The canary's share in force (the rules' after a hand edit).
    pub canary_in_force: Option<u32>,
    /// Time left in a timed pause.
    pub pause_left_ms: Option<u64>,
    pub metrics: Vec<MetricLine>,
    pub step_tally: Tally,
    pub background_tally: Tally,
    pub history: Vec<IntervalRecord>,
    pub weights: Vec<WeightChange>,
    pub started_ms: u64,
    pub updated_ms: u64,
    /// In a fleet: the node that drives the rollouts (`None`: one node, or
    /// no driver elected right now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// In a fleet: whether this status comes from the store as the driver
    /// wrote it.
    #[serde(default)]
    pub fleet: bool,
}

impl RolloutStatus {
    pub fn of(rollout: &Rollout, state: &RolloutState, now_ms: u64) -> Self {
        let pause_left_ms = match (state.phase, rollout.steps.get(state.step)) {
            (Phase::Progressing | Phase::Paused, Some(Step::Pause(Some(d))))
                if !state.clock_started =>
            {
                Some(duration_ms(*d))
            }
            (Phase::Progressing | Phase::Paused, Some(Step::Pause(Some(d)))) => {
                let now = state.paused_ms.unwrap_or(now_ms);
                Some((state.step_started_ms + duration_ms(*d)).saturating_sub(now))
            }
            _ => None,
        };
        let mut metrics = Vec::new();
        let mut lines = |label: String, analysis: &Analysis| {
            for metric in &analysis.metrics {
                let last = state
                    .history
                    .iter()
                    .rev()
                    .filter(|r| r.analysis == label)
                    .find_map(|r| r.metrics.iter().find(|m| m.name == metric.name))
                    .cloned();
                metrics.push(MetricLine {
                    analysis: label.clone(),
                    name: metric.name.clone(),
                    kind: metric.source.kind().to_owned(),
                    threshold: threshold(metric),
                    last,
                });
            }
        };
        if let Some(Step::Analysis(a)) = rollout.steps.get(state.step) {
            lines(format!("step {}", state.step + 1), a);
        }
        if let Some(a) = &rollout.analysis {
            lines("background".to_owned(), a);
        }
        let canary_in_force = if state.pause_cause == Some(PauseCause::HandEdit) {
            state.written_canary
        } else {
            Some(state.canary_weight)
        };
        Self {
            name: rollout.name.clone(),
            virtual_service: rollout.virtual_service.clone(),
            route: rollout
                .route
                .rsplit('/')
                .next()
                .unwrap_or(&rollout.route)
                .to_owned(),
            stable: rollout.stable.clone(),
            canary: rollout.canary.clone(),
            phase: state.phase,
            pause_cause: state.pause_cause,
            message: state.message.clone(),
            step: state.step,
            steps: rollout.steps.iter().map(step_words).collect(),
            canary_weight: state.canary_weight,
            canary_in_force,
            pause_left_ms,
            metrics,
            step_tally: state.step_tally,
            background_tally: state.background_tally,
            history: state.history.iter().cloned().collect(),
            weights: state.weights.clone(),
            started_ms: state.started_ms,
            updated_ms: state.updated_ms,
            driver: None,
            fleet: false,
        }
    }
}

/// A step in words.
pub fn step_words(step: &Step) -> String {
    match step {
        Step::SetWeight(w) => format!("setWeight {w}"),
        Step::Pause(Some(d)) => format!("pause {}", seconds(duration_ms(*d))),
        Step::Pause(None) => "pause (until promoted)".to_owned(),
        Step::Analysis(a) => format!(
            "analysis: {} successful interval{} of {}",
            a.count.unwrap_or(1),
            if a.count.unwrap_or(1) == 1 { "" } else { "s" },
            seconds(duration_ms(a.interval))
        ),
    }
}

fn seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}.{}s", ms / 1000, ms % 1000 / 100)
    }
}

fn value_text(result: &MetricResult) -> String {
    match result.value {
        Some(v) => format!("{}", super::analysis::rounded(v)),
        None => "-".to_owned(),
    }
}

/// `rollout status NAME`: the rollout in full.
pub fn render(status: &RolloutStatus, now_ms: u64) -> String {
    let mut out = String::new();
    let total = status.steps.len();
    let done = status.step.min(total);
    let _ = writeln!(out, "Name:       {}", status.name);
    let _ = writeln!(
        out,
        "Target:     VirtualService {} {}: {} (stable) -> {} (canary)",
        status.virtual_service, status.route, status.stable, status.canary
    );
    if status.fleet {
        let _ = writeln!(
            out,
            "Driver:     {}",
            status
                .driver
                .as_deref()
                .unwrap_or("none elected (the weights in force stay)")
        );
    }
    let _ = writeln!(out, "Phase:      {}", status.phase.as_str());
    let _ = writeln!(out, "Message:    {}", status.message);
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    let _ = writeln!(
        out,
        "Step:       {done}/{total}  [{}{}]",
        "#".repeat(filled),
        "-".repeat(width - filled)
    );
    match status.canary_in_force {
        Some(w) => {
            let _ = writeln!(
                out,
                "Weight:     canary {w}%, stable {}%{}",
                100 - w.min(100),
                if status.canary_in_force == Some(status.canary_weight) {
                    String::new()
                } else {
                    format!(
                        " (as edited by hand; the rollout's is {}%)",
                        status.canary_weight
                    )
                }
            );
        }
        None => {
            let _ = writeln!(out, "Weight:     as written in the rules");
        }
    }
    if let Some(left) = status.pause_left_ms {
        let _ = writeln!(
            out,
            "Pause:      {} left",
            seconds(left.div_ceil(1000) * 1000)
        );
    }
    let _ = writeln!(
        out,
        "Age:        {}",
        crate::ctl::human_duration(i128::from(now_ms) - i128::from(status.started_ms))
    );
    out.push_str(&steps_table(status));
    out.push_str(&analysis_table(status));
    out.push_str(&history_table(status, now_ms));
    out
}

/// Each step, the ones done and the current one marked.
fn steps_table(status: &RolloutStatus) -> String {
    let done = status.step.min(status.steps.len());
    let mut out = String::from("\nSTEPS\n");
    let mut rows = vec![vec![String::new(), "#".into(), "STEP".into()]];
    for (i, step) in status.steps.iter().enumerate() {
        let mark = if i < done {
            "done"
        } else if i == status.step && matches!(status.phase, Phase::Progressing | Phase::Paused) {
            "=>"
        } else {
            ""
        };
        rows.push(vec![mark.into(), (i + 1).to_string(), step.clone()]);
    }
    out.push_str(&crate::ctl::aligned(&rows));
    out
}

/// Each metric's last value against its threshold, and the tallies.
fn analysis_table(status: &RolloutStatus) -> String {
    let mut out = String::new();
    if !status.metrics.is_empty() {
        out.push_str("\nANALYSIS\n");
        let mut rows = vec![vec![
            "ANALYSIS".into(),
            "METRIC".into(),
            "THRESHOLD".into(),
            "LAST".into(),
            "SAMPLES".into(),
            "RESULT".into(),
        ]];
        for line in &status.metrics {
            let (value, samples, result) = match &line.last {
                Some(r) => (
                    value_text(r),
                    r.samples.map_or_else(|| "-".into(), |s| s.to_string()),
                    if r.note.is_empty() {
                        r.outcome.as_str().to_owned()
                    } else {
                        format!("{}: {}", r.outcome.as_str(), r.note)
                    },
                ),
                None => ("-".into(), "-".into(), "no interval ended yet".into()),
            };
            rows.push(vec![
                line.analysis.clone(),
                format!("{} ({})", line.name, line.kind),
                line.threshold.clone(),
                value,
                samples,
                result,
            ]);
        }
        out.push_str(&crate::ctl::aligned(&rows));
        let tally = |t: &Tally| {
            format!(
                "{} successful, {} failed, {} inconclusive",
                t.successful, t.failed, t.inconclusive
            )
        };
        let _ = writeln!(out, "this step:  {}", tally(&status.step_tally));
        let _ = writeln!(out, "background: {}", tally(&status.background_tally));
    }
    out
}

/// The last intervals, newest first.
fn history_table(status: &RolloutStatus, now_ms: u64) -> String {
    let mut out = String::new();
    if !status.history.is_empty() {
        out.push_str("\nHISTORY\n");
        let mut rows = vec![vec![
            "AGO".into(),
            "ANALYSIS".into(),
            "CANARY".into(),
            "RESULT".into(),
            "VALUES".into(),
        ]];
        for record in status.history.iter().rev() {
            let values: Vec<String> = record
                .metrics
                .iter()
                .map(|m| format!("{}={}", m.name, value_text(m)))
                .collect();
            rows.push(vec![
                crate::ctl::human_duration(i128::from(now_ms) - i128::from(record.at_ms)),
                record.analysis.clone(),
                format!("{}%", record.canary_weight),
                record.outcome.as_str().to_owned(),
                values.join(" "),
            ]);
        }
        out.push_str(&crate::ctl::aligned(&rows));
    }
    out
}

/// `get rollouts`: NAME, PHASE, STEP, WEIGHT, AGE (and DRIVER in a fleet).
pub fn table(statuses: &[RolloutStatus], now_ms: u64) -> String {
    let fleet = statuses.iter().any(|s| s.fleet);
    let mut header: Vec<String> = vec![
        "NAME".into(),
        "PHASE".into(),
        "STEP".into(),
        "WEIGHT".into(),
        "AGE".into(),
    ];
    if fleet {
        header.push("DRIVER".into());
    }
    let mut rows = vec![header];
    for s in statuses {
        let mut row: Vec<String> = vec![
            s.name.clone(),
            s.phase.as_str().to_owned(),
            format!("{}/{}", s.step.min(s.steps.len()), s.steps.len()),
            s.canary_in_force
                .map_or_else(|| "-".to_owned(), |w| w.to_string()),
            crate::ctl::human_duration(i128::from(now_ms) - i128::from(s.started_ms)),
        ];
        if fleet {
            row.push(s.driver.clone().unwrap_or_else(|| "-".into()));
        }
        rows.push(row);
    }
    crate::ctl::aligned(&rows)
}
