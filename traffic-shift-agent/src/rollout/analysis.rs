//! One analysis interval: each metric over the interval against its
//! threshold, and the interval's verdict.
//!
//! The kernel's and the proxy's metrics are computed from the growth of
//! the canary's cumulative counters over the interval
//! ([`Observation::since`]). An interval with fewer than `minSamples`
//! connections or requests, or a query that has no value, is
//! inconclusive: never a pass (flagger#1581).

use serde::{Deserialize, Serialize};
use traffic_shift_config::rollout::{Analysis, Metric, MetricSource};
use traffic_shift_proxy::Counts;

/// The canary's cumulative counters at one moment, summed over its
/// endpoints (and, in a fleet, its nodes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Connects to the canary's endpoints that completed their handshake.
    pub established: u64,
    /// Connects to them that failed (refused, timed out, other).
    pub failed: u64,
    /// Requests the L7 proxy sent to the canary.
    pub requests: Counts,
}

impl Observation {
    /// Adds `other`'s counters (another node's, in a fleet).
    pub fn add(&mut self, other: &Self) {
        self.established += other.established;
        self.failed += other.failed;
        self.requests.add(&other.requests);
    }

    /// What grew from `then` to `self` (a counter that went down counts
    /// from zero: its slot was made anew).
    #[must_use]
    pub fn since(&self, then: &Self) -> Self {
        let d = |now: u64, then: u64| if now >= then { now - then } else { now };
        Self {
            established: d(self.established, then.established),
            failed: d(self.failed, then.failed),
            requests: self.requests.since(&then.requests),
        }
    }
}

/// A metric's or an interval's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Successful,
    Inconclusive,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Successful => "successful",
            Self::Inconclusive => "inconclusive",
            Self::Failed => "failed",
        }
    }
}

/// One metric's value over an interval, and its verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    pub name: String,
    /// `None`: no value (no samples, or the query had none).
    pub value: Option<f64>,
    /// Connections or requests the value is computed from (`None` for a
    /// query).
    pub samples: Option<u64>,
    pub outcome: Outcome,
    /// Why, when not successful: `3 connections, fewer than minSamples 20`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// The value of a query (`prometheus`): a number, or why there is none.
pub type QueryValue = Result<f64, String>;

/// Judges `metric` over `delta` (the interval's growth); `query` is the
/// answer of its Prometheus query, for a `prometheus` metric.
pub fn evaluate(
    metric: &Metric,
    analysis: &Analysis,
    delta: &Observation,
    query: Option<&QueryValue>,
) -> MetricResult {
    let min_samples = analysis.min_samples;
    let result = |value: Option<f64>, samples: Option<u64>, note: String| {
        let outcome = match value {
            None => Outcome::Inconclusive,
            Some(v) if within(metric, v) => Outcome::Successful,
            Some(_) => Outcome::Failed,
        };
        let note = match (outcome, note.is_empty()) {
            (Outcome::Failed, _) => format!("outside {}", threshold(metric)),
            (_, _) => note,
        };
        MetricResult {
            name: metric.name.clone(),
            value,
            samples,
            outcome,
            note,
        }
    };
    let counted = |samples: u64, what: &str, value: f64| {
        if samples < min_samples {
            result(
                None,
                Some(samples),
                format!("{samples} {what}, fewer than minSamples {min_samples}"),
            )
        } else {
            result(Some(value), Some(samples), String::new())
        }
    };
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    match &metric.source {
        MetricSource::ConnectionSuccessRate => {
            let attempts = delta.established + delta.failed;
            let rate = if attempts == 0 {
                0.0
            } else {
                delta.established as f64 * 100.0 / attempts as f64
            };
            counted(attempts, "connections", rate)
        }
        MetricSource::RequestSuccessRate => {
            let requests = delta.requests.requests;
            let rate = if requests == 0 {
                0.0
            } else {
                (requests - delta.requests.errors_5xx.min(requests)) as f64 * 100.0
                    / requests as f64
            };
            counted(requests, "requests", rate)
        }
        MetricSource::RequestDurationP99 => {
            let requests = delta.requests.requests;
            if requests >= min_samples && delta.requests.buckets.iter().sum::<u64>() == 0 {
                // A node of an older version reports no latency histogram.
                return result(
                    None,
                    Some(requests),
                    "no latency histogram for these requests (a node that reports none)".to_owned(),
                );
            }
            let p99 = delta.requests.quantile(0.99).unwrap_or(0.0);
            counted(requests, "requests", p99)
        }
        MetricSource::Prometheus { .. } => match query {
            Some(Ok(value)) if value.is_finite() => result(Some(*value), None, String::new()),
            Some(Ok(value)) => result(None, None, format!("the query's value is {value}")),
            Some(Err(why)) => result(None, None, why.clone()),
            None => result(None, None, "the query was not answered".to_owned()),
        },
    }
}

fn within(metric: &Metric, value: f64) -> bool {
    metric.min.is_none_or(|min| value >= min) && metric.max.is_none_or(|max| value <= max)
}

/// A metric's value as messages and `rollout status` show it: to two
/// decimals.
pub fn rounded(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// `min 99` / `max 500` / `99..100`, as the status shows a threshold.
pub fn threshold(metric: &Metric) -> String {
    match (metric.min, metric.max) {
        (Some(min), Some(max)) => format!("{min}..{max}"),
        (Some(min), None) => format!(">= {min}"),
        (None, Some(max)) => format!("<= {max}"),
        (None, None) => "any".to_owned(),
    }
}

/// An interval's verdict: failed if a metric failed, else inconclusive if
/// one was, else successful.
pub fn verdict(results: &[MetricResult]) -> Outcome {
    results
        .iter()
        .map(|r| r.outcome)
        .max()
        .unwrap_or(Outcome::Inconclusive)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn analysis(min_samples: u64) -> Analysis {
        Analysis {
            interval: Duration::from_secs(1),
            count: Some(1),
            failure_limit: 0,
            inconclusive_limit: 0,
            min_samples,
            metrics: Vec::new(),
        }
    }

    fn metric(source: MetricSource, min: Option<f64>, max: Option<f64>) -> Metric {
        Metric {
            name: source.kind().to_owned(),
            source,
            min,
            max,
        }
    }

    #[test]
    fn connection_success_rate_is_established_over_attempts() {
        let m = metric(MetricSource::ConnectionSuccessRate, Some(99.0), None);
        let delta = Observation {
            established: 70,
            failed: 30,
            ..Observation::default()
        };
        let r = evaluate(&m, &analysis(10), &delta, None);
        assert_eq!(r.value, Some(70.0));
        assert_eq!(r.samples, Some(100));
        assert_eq!(r.outcome, Outcome::Failed);
        assert_eq!(r.note, "outside >= 99");
        let healthy = Observation {
            established: 100,
            ..Observation::default()
        };
        assert_eq!(
            evaluate(&m, &analysis(10), &healthy, None).outcome,
            Outcome::Successful
        );
    }

    #[test]
    fn too_few_samples_is_inconclusive_never_a_pass() {
        let m = metric(MetricSource::ConnectionSuccessRate, Some(99.0), None);
        let none = evaluate(&m, &analysis(1), &Observation::default(), None);
        assert_eq!(none.outcome, Outcome::Inconclusive);
        assert_eq!(none.value, None);
        assert_eq!(none.note, "0 connections, fewer than minSamples 1");
        let few = Observation {
            established: 5,
            ..Observation::default()
        };
        assert_eq!(
            evaluate(&m, &analysis(20), &few, None).outcome,
            Outcome::Inconclusive
        );
        let q = metric(
            MetricSource::Prometheus {
                address: "http://127.0.0.1:9090".into(),
                query: "up".into(),
            },
            Some(1.0),
            None,
        );
        let empty = evaluate(
            &q,
            &analysis(1),
            &Observation::default(),
            Some(&Err("the query returned no series".into())),
        );
        assert_eq!(empty.outcome, Outcome::Inconclusive);
        let nan = evaluate(
            &q,
            &analysis(1),
            &Observation::default(),
            Some(&Ok(f64::NAN)),
        );
        assert_eq!(nan.outcome, Outcome::Inconclusive);
        let one = evaluate(&q, &analysis(1), &Observation::default(), Some(&Ok(1.0)));
        assert_eq!(one.outcome, Outcome::Successful);
    }

    #[test]
    fn request_metrics_count_5xx_and_the_p99() {
        let mut requests = Counts {
            requests: 100,
            errors_5xx: 30,
            ..Counts::default()
        };
        requests.buckets[0] = 100;
        let delta = Observation {
            requests,
            ..Observation::default()
        };
        let rate = metric(MetricSource::RequestSuccessRate, Some(95.0), None);
        let r = evaluate(&rate, &analysis(10), &delta, None);
        assert_eq!((r.value, r.outcome), (Some(70.0), Outcome::Failed));
        let p99 = metric(MetricSource::RequestDurationP99, None, Some(500.0));
        let r = evaluate(&p99, &analysis(10), &delta, None);
        assert_eq!(r.outcome, Outcome::Successful);
    }

    #[test]
    fn an_interval_fails_on_any_failure_and_passes_only_when_all_pass() {
        use Outcome::*;
        let r = |outcome| MetricResult {
            name: String::new(),
            value: None,
            samples: None,
            outcome,
            note: String::new(),
        };
        assert_eq!(
            verdict(&[r(Successful), r(Failed), r(Inconclusive)]),
            Failed
        );
        assert_eq!(verdict(&[r(Successful), r(Inconclusive)]), Inconclusive);
        assert_eq!(verdict(&[r(Successful), r(Successful)]), Successful);
        assert_eq!(verdict(&[]), Inconclusive);
    }

    #[test]
    fn counters_that_went_down_count_from_zero() {
        let then = Observation {
            established: 50,
            failed: 2,
            ..Observation::default()
        };
        let now = Observation {
            established: 10,
            failed: 3,
            ..Observation::default()
        };
        let d = now.since(&then);
        assert_eq!((d.established, d.failed), (10, 1));
    }
}
