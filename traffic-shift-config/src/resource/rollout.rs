//! `Rollout` (our own kind, [`crate::rollout::API_VERSION`]): the target,
//! the steps and the analyses, checked on their own. The target is
//! resolved against the VirtualService and DestinationRule in
//! `resolve::rollout`; the reference is `docs/rollouts.md`.

use std::time::Duration;

use serde_yaml_ng::Value;

use crate::{
    check::{Check, Checked},
    dto,
    error::{FieldPath, fp},
    names::{is_dns1123_label, is_dns1123_label_any_case, is_dns1123_subdomain},
    rollout::{Analysis, Metric, MetricSource, Step},
    source::Source,
    values,
};

/// The analysis interval when none is written.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// The shortest analysis interval.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// A `Rollout` as written, checked; its target is resolved with the rules
/// into a [`crate::rollout::Rollout`].
#[derive(Clone, Debug)]
pub struct RolloutResource {
    pub source: Source,
    pub target: RolloutTarget,
    pub steps: Vec<Step>,
    /// `spec.analysis`: the background analysis (`count` is `None`).
    pub analysis: Option<Analysis>,
    /// A digest of the spec as written (FNV-1a 128 of its canonical JSON,
    /// hex): see `spec_digest` and docs/rollouts.md.
    pub spec_digest: String,
}

/// `spec.target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutTarget {
    /// The VirtualService's name.
    pub virtual_service: String,
    /// Its namespace (`spec.target.namespace`); `None`: the Rollout's.
    pub namespace: Option<String>,
    pub route: TargetRoute,
    pub stable: String,
    pub canary: String,
}

/// `spec.target.route`: which rule of the VirtualService.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetRoute {
    /// Not written: the VirtualService's only rule.
    Only,
    /// `tcp[N]`.
    Tcp(usize),
    /// `http[N]`.
    Http(usize),
    /// `N`: the N-th rule of the VirtualService's only rule kind.
    Index(usize),
    /// The `name` of an http rule.
    Name(String),
}

impl TargetRoute {
    /// Whether `spec.target.route` is written.
    pub fn is_written(&self) -> bool {
        *self != Self::Only
    }
}

/// What the metric sources are written as, in the order messages list them.
const SOURCES: &str = "connectionSuccessRate, requestSuccessRate, requestDurationP99 or prometheus";

pub(super) fn validate(source: Source, spec: dto::RolloutSpec) -> Checked<RolloutResource> {
    let spec_digest = spec_digest(&spec);
    let mut cx = Check::new(&source);
    let target = spec.target.ok_or(
        "spec.target is required: name the VirtualService (virtualService), and its stable \
         and canary subsets",
    );
    let target = cx
        .ok(fp!("spec.target"), target)
        .and_then(|target| check_target(&mut cx, target));
    let analysis = spec
        .analysis
        .and_then(|analysis| check_analysis(&mut cx, &fp!("spec.analysis"), analysis, false));
    let written = spec.steps.unwrap_or_default();
    if written.is_empty() {
        cx.error(
            fp!("spec.steps"),
            "spec.steps is required: list at least one step (setWeight, pause or analysis)",
        );
    }
    let steps: Vec<Step> = written
        .into_iter()
        .enumerate()
        .filter_map(|(i, step)| check_step(&mut cx, i, step))
        .collect();
    if cx.errors.is_empty() {
        warn_not_promoted(&mut cx, &steps);
    }
    let warnings = cx.finish()?;
    let target = target.expect("no error: the target was checked");
    Ok((
        RolloutResource {
            source,
            target,
            steps,
            analysis,
            spec_digest,
        },
        warnings,
    ))
}

/// A digest of the spec as written: FNV-1a (128 bits, hex) of its
/// canonical JSON, the DTO serialized by serde (fields in the DTO's order,
/// whatever the order written; absent fields left out; YAML anchors and
/// merges applied, comments and formatting ignored). `metadata` is not in
/// it. Values are kept as written: `pause: {duration: 30}` and `{duration:
/// 30s}` differ, as do `min: 99` and an absent `min`.
pub(crate) fn spec_digest(spec: &dto::RolloutSpec) -> String {
    // Serializing a struct of strings, numbers and YAML scalars cannot fail.
    let json = serde_json::to_vec(spec).unwrap_or_default();
    format!("{:032x}", fnv1a_128(&json))
}

/// FNV-1a, 128 bits: fixed by its definition, the same on every build.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME))
}

fn check_target(cx: &mut Check, target: dto::RolloutTarget) -> Option<RolloutTarget> {
    let errors_before = cx.errors.len();
    let base = fp!("spec.target");
    let virtual_service = target.virtual_service.unwrap_or_default();
    let path = base.key("virtualService");
    if virtual_service.is_empty() {
        cx.error(
            path,
            "virtualService is required: the name of the VirtualService whose route the \
             Rollout shifts (in spec.target.namespace, else the Rollout's namespace)",
        );
    } else if let Some((namespace, _)) = virtual_service.split_once('/') {
        cx.error(
            path,
            format!(
                "virtualService {virtual_service:?} names a namespace ({namespace}): write \
                 the name alone here and the namespace in spec.target.namespace"
            ),
        );
    } else if !is_dns1123_subdomain(&virtual_service) {
        cx.error(
            path,
            format!(
                "virtualService {virtual_service:?} is not a valid name: use lower-case \
                 letters, digits, '-' and '.', starting and ending with a letter or digit"
            ),
        );
    }
    if let Some(namespace) = &target.namespace
        && !is_dns1123_label(namespace)
    {
        cx.error(
            base.key("namespace"),
            format!(
                "namespace {namespace:?} is not a valid namespace: use lower-case letters, \
                 digits and '-', at most 63, starting and ending with a letter or digit"
            ),
        );
    }
    let route = match target.route {
        None => Some(TargetRoute::Only),
        Some(route) => target_route(cx, &base.key("route"), &route),
    };
    let mut subset = |field: &str, written: Option<String>| {
        let path = base.key(field);
        let name = written.unwrap_or_default();
        if name.is_empty() {
            cx.error(
                path,
                format!(
                    "{field} is required: the {} subset's name, as the DestinationRule of the \
                     route's host defines it",
                    if field == "stable" {
                        "stable (current)"
                    } else {
                        "canary (new)"
                    }
                ),
            );
        } else if !is_dns1123_label_any_case(&name) {
            cx.error(path, format!("subset name is invalid: {name}"));
        }
        name
    };
    let stable = subset("stable", target.stable);
    let canary = subset("canary", target.canary);
    if !stable.is_empty() && stable == canary {
        cx.error(
            base.key("canary"),
            format!(
                "stable and canary are both {stable}: the Rollout shifts traffic from one subset \
                 to another; name two different subsets"
            ),
        );
    }
    let route = route?;
    (cx.errors.len() == errors_before).then_some(RolloutTarget {
        virtual_service,
        namespace: target.namespace,
        route,
        stable,
        canary,
    })
}

/// `route`: `tcp[N]`, `http[N]`, `N` (an integer, or a string of digits),
/// or an http rule's name.
fn target_route(cx: &mut Check, path: &FieldPath, route: &Value) -> Option<TargetRoute> {
    const WHAT: &str = "write tcp[N] or http[N] (N counts from 0 in the VirtualService's tcp or \
                        http rules), an http rule's name, or N alone when the VirtualService has \
                        rules of one kind only";
    let text = match route {
        Value::Number(number) => {
            let index = number.as_u64().and_then(|n| usize::try_from(n).ok());
            let index = index.ok_or_else(|| format!("route {number} is not a rule index: {WHAT}"));
            return cx.ok(path.clone(), index).map(TargetRoute::Index);
        }
        Value::String(text) => text,
        _ => {
            cx.error(
                path.clone(),
                format!("route must be a string or an integer: {WHAT}"),
            );
            return None;
        }
    };
    if text.is_empty() {
        cx.error(
            path.clone(),
            format!(
                "route is empty: {WHAT}, or leave route out when the VirtualService has one rule"
            ),
        );
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let index = text
            .parse()
            .map_err(|_| format!("route {text} is not a rule index: {WHAT}"));
        return cx.ok(path.clone(), index).map(TargetRoute::Index);
    }
    for kind in ["tcp", "http", "tls"] {
        let Some(rest) = text.strip_prefix(kind).filter(|rest| rest.starts_with('[')) else {
            continue;
        };
        let index = rest
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<usize>().ok());
        let Some(index) = index else {
            cx.error(
                path.clone(),
                format!("route {text:?} is not a rule: {WHAT}"),
            );
            return None;
        };
        return match kind {
            "tcp" => Some(TargetRoute::Tcp(index)),
            "http" => Some(TargetRoute::Http(index)),
            _ => {
                cx.error(
                    path.clone(),
                    format!(
                        "route {text}: a tls rule cannot be a Rollout's target (tls rules are not \
                         supported yet); target a tcp or http rule"
                    ),
                );
                None
            }
        };
    }
    Some(TargetRoute::Name(text.clone()))
}

fn check_step(cx: &mut Check, i: usize, step: dto::RolloutStep) -> Option<Step> {
    let base = fp!("spec.steps[{i}]");
    let set: Vec<&str> = [
        ("setWeight", step.set_weight.is_some()),
        ("pause", step.pause.is_some()),
        ("analysis", step.analysis.is_some()),
    ]
    .into_iter()
    .filter_map(|(field, set)| set.then_some(field))
    .collect();
    if set.len() != 1 {
        let message = if set.is_empty() {
            "a step needs one of setWeight, pause or analysis (pause: {} waits for `rollout \
             promote`)"
                .to_owned()
        } else {
            format!(
                "a step does one thing, and this one has {}: write them as {} steps, in the \
                 order they should happen",
                set.join(" and "),
                set.len()
            )
        };
        cx.error(base, message);
        return None;
    }
    if let Some(weight) = step.set_weight {
        let valid = u32::try_from(weight).ok().filter(|w| *w <= 100);
        let valid = valid.ok_or_else(|| {
            format!(
                "setWeight {weight} is not in range 0..100: it is the canary's share of the \
                 traffic, in percent"
            )
        });
        return cx.ok(base.key("setWeight"), valid).map(Step::SetWeight);
    }
    if let Some(pause) = step.pause {
        return pause_duration(cx, &base.key("pause").key("duration"), pause.duration)
            .map(Step::Pause);
    }
    let analysis = step.analysis?;
    check_analysis(cx, &base.key("analysis"), analysis, true).map(Step::Analysis)
}

/// A pause's `duration`: absent (until `rollout promote`: `Some(None)`),
/// seconds (an integer), or a duration (`30s`, `1m`); `None` when invalid.
#[expect(
    clippy::option_option,
    reason = "None: invalid (recorded); Some(None): a pause until promote"
)]
fn pause_duration(
    cx: &mut Check,
    path: &FieldPath,
    duration: Option<Value>,
) -> Option<Option<Duration>> {
    const WHAT: &str = "write seconds (30) or a duration (30s, 1m30s), or leave duration out to \
                        pause until `rollout promote`";
    let duration = match duration {
        None | Some(Value::Null) => return Some(None),
        Some(duration) => duration,
    };
    match &duration {
        Value::Number(number) => {
            let seconds = number
                .as_u64()
                .ok_or_else(|| format!("pause duration {number} is not whole seconds: {WHAT}"));
            cx.ok(path.clone(), seconds)
                .map(|seconds| Some(Duration::from_secs(seconds)))
        }
        Value::String(text) => match values::duration_or_zero(text) {
            Ok(duration) => Some(Some(duration)),
            Err(error) => {
                cx.error(path.clone(), error);
                None
            }
        },
        _ => {
            cx.error(
                path.clone(),
                format!("pause duration must be a number of seconds or a duration: {WHAT}"),
            );
            None
        }
    }
}

/// `spec.analysis` (`step` false) or a step's `analysis` (`step` true).
fn check_analysis(
    cx: &mut Check,
    base: &FieldPath,
    analysis: dto::RolloutAnalysis,
    step: bool,
) -> Option<Analysis> {
    let errors_before = cx.errors.len();
    let interval = analysis.interval.map_or(DEFAULT_INTERVAL, |text| {
        interval(cx, &base.key("interval"), &text)
    });
    let count = match (analysis.count, step) {
        (None, true) => Some(1),
        (None, false) => None,
        (Some(_), false) => {
            cx.error(
                base.key("count"),
                "count applies to step analyses only: the background analysis (spec.analysis) \
                 runs from the first step to the last; remove count, or make this analysis a \
                 step",
            );
            None
        }
        (Some(count), true) => {
            let valid = u32::try_from(count).ok().filter(|c| *c >= 1);
            if valid.is_none() {
                cx.error(
                    base.key("count"),
                    format!(
                        "count {count} is not in range 1..{}: the number of successful intervals \
                         the step needs to pass",
                        u32::MAX
                    ),
                );
            }
            valid
        }
    };
    let mut limit = |field: &str, value: Option<i64>| match value {
        None => 0,
        Some(value) => u32::try_from(value).unwrap_or_else(|_| {
            cx.error(
                base.key(field),
                format!(
                    "{field} {value} is not in range 0..{}: the number of {} intervals \
                     tolerated",
                    u32::MAX,
                    if field == "failureLimit" {
                        "failed"
                    } else {
                        "inconclusive"
                    }
                ),
            );
            0
        }),
    };
    let failure_limit = limit("failureLimit", analysis.failure_limit);
    let inconclusive_limit = limit("inconclusiveLimit", analysis.inconclusive_limit);
    let min_samples = match analysis.min_samples {
        None => 1,
        Some(n) => u64::try_from(n)
            .ok()
            .filter(|n| *n >= 1)
            .unwrap_or_else(|| {
                cx.error(
                base.key("minSamples"),
                format!(
                    "minSamples {n} is not at least 1: an interval with no connection or request \
                     is never a pass"
                ),
            );
                1
            }),
    };
    let metrics = check_metrics(cx, base, analysis.metrics.unwrap_or_default());
    (cx.errors.len() == errors_before).then_some(Analysis {
        interval,
        count,
        failure_limit,
        inconclusive_limit,
        min_samples,
        metrics,
    })
}

/// An analysis `interval`: a duration of 1s at least (else the default,
/// and the error recorded).
fn interval(cx: &mut Check, path: &FieldPath, text: &str) -> Duration {
    let interval = values::duration(text).map_err(|error| error.to_string());
    let interval = interval.and_then(|interval| {
        if interval < MIN_INTERVAL {
            Err(format!(
                "interval {text} is too short: an analysis interval is at least 1s (default 30s)"
            ))
        } else {
            Ok(interval)
        }
    });
    cx.ok(path.clone(), interval).unwrap_or(DEFAULT_INTERVAL)
}

/// An analysis's `metrics` (`base` is the analysis): at least one, names
/// unique.
fn check_metrics(
    cx: &mut Check,
    base: &FieldPath,
    written: Vec<dto::RolloutMetric>,
) -> Vec<Metric> {
    if written.is_empty() {
        cx.error(
            base.key("metrics"),
            format!("metrics is required: list at least one metric ({SOURCES})"),
        );
    }
    let mut metrics: Vec<(usize, Metric)> = Vec::new();
    for (k, metric) in written.into_iter().enumerate() {
        let path = base.key("metrics").index(k);
        let Some(metric) = check_metric(cx, &path, metric) else {
            continue;
        };
        if let Some((other, _)) = metrics.iter().find(|(_, m)| m.name == metric.name) {
            cx.error(
                path.key("name"),
                format!(
                    "metric name {} is also metrics[{other}]'s: names are unique within an \
                     analysis (a metric without a name is named after its source); give each \
                     a name",
                    metric.name
                ),
            );
            continue;
        }
        metrics.push((k, metric));
    }
    metrics.into_iter().map(|(_, m)| m).collect()
}

fn check_metric(cx: &mut Check, base: &FieldPath, metric: dto::RolloutMetric) -> Option<Metric> {
    let errors_before = cx.errors.len();
    let mut sources: Vec<(&str, MetricSource, Option<f64>, Option<f64>)> = Vec::new();
    let rates = [
        (
            "connectionSuccessRate",
            MetricSource::ConnectionSuccessRate,
            metric.connection_success_rate,
        ),
        (
            "requestSuccessRate",
            MetricSource::RequestSuccessRate,
            metric.request_success_rate,
        ),
        (
            "requestDurationP99",
            MetricSource::RequestDurationP99,
            metric.request_duration_p99,
        ),
    ];
    for (field, source, threshold) in rates {
        if let Some(threshold) = threshold {
            sources.push((field, source, threshold.min, threshold.max));
        }
    }
    if let Some(prometheus) = metric.prometheus {
        let path = base.key("prometheus");
        let address = prometheus.address.unwrap_or_default();
        if let Err(message) = prometheus_address(&address) {
            cx.error(path.key("address"), message);
        }
        let query = prometheus.query.unwrap_or_default();
        if query.trim().is_empty() {
            cx.error(
                path.key("query"),
                "query is required: a PromQL instant query whose value (a scalar, or a vector \
                 of one sample) is compared with min and max",
            );
        }
        sources.push((
            "prometheus",
            MetricSource::Prometheus { address, query },
            prometheus.min,
            prometheus.max,
        ));
    }
    let (field, source, min, max) = match sources.len() {
        1 => sources.pop().expect("one source"),
        0 => {
            cx.error(
                base.clone(),
                format!("a metric needs a source: one of {SOURCES}"),
            );
            return None;
        }
        _ => {
            let names: Vec<&str> = sources.iter().map(|(field, ..)| *field).collect();
            cx.error(
                base.clone(),
                format!(
                    "a metric has one source, and this one has {}: write one metric per source",
                    names.join(" and ")
                ),
            );
            return None;
        }
    };
    check_threshold(cx, &base.key(field), &source, min, max);
    let name = match metric.name {
        None => field.to_owned(),
        Some(name) => {
            if !is_dns1123_label_any_case(&name) {
                cx.error(
                    base.key("name"),
                    format!(
                        "metric name {name:?} is not valid: use at most 63 letters, digits and \
                         '-', starting and ending with a letter or digit"
                    ),
                );
            }
            name
        }
    };
    (cx.errors.len() == errors_before).then_some(Metric {
        name,
        source,
        min,
        max,
    })
}

/// `min` and `max` of a metric (`path` is its source's field): one at
/// least, finite, in order, rates in percent.
fn check_threshold(
    cx: &mut Check,
    path: &FieldPath,
    source: &MetricSource,
    min: Option<f64>,
    max: Option<f64>,
) {
    if min.is_none() && max.is_none() {
        let example = match source {
            MetricSource::ConnectionSuccessRate | MetricSource::RequestSuccessRate => {
                "{min: 99}: at least 99% succeed"
            }
            MetricSource::RequestDurationP99 => "{max: 500}: at most 500 ms",
            MetricSource::Prometheus { .. } => "max: 0.5: the query's value is at most 0.5",
        };
        cx.error(
            path.clone(),
            format!("a threshold needs min, max or both: for example {example}"),
        );
        return;
    }
    let mut valid = true;
    for (field, value) in [("min", min), ("max", max)] {
        let Some(value) = value else { continue };
        let problem = match source {
            _ if !value.is_finite() => Some(format!("{field} must be a finite number")),
            MetricSource::ConnectionSuccessRate | MetricSource::RequestSuccessRate
                if !(0.0..=100.0).contains(&value) =>
            {
                Some(format!(
                    "{field} {value} is not in range 0..100: a success rate is in percent"
                ))
            }
            MetricSource::RequestDurationP99 if value < 0.0 => Some(format!(
                "{field} {value} < 0: a request duration is in milliseconds"
            )),
            _ => None,
        };
        if let Some(problem) = problem {
            cx.error(path.key(field), problem);
            valid = false;
        }
    }
    if valid
        && let (Some(min), Some(max)) = (min, max)
        && min > max
    {
        cx.error(
            path.key("min"),
            format!("min {min} > max {max}: no value can pass; swap them"),
        );
    }
}

/// A Prometheus `address`: `http://host[:port][/path]`.
fn prometheus_address(address: &str) -> Result<(), String> {
    const EXAMPLE: &str = "http://127.0.0.1:9090";
    if address.is_empty() {
        return Err(format!(
            "address is required: the Prometheus server's URL, as {EXAMPLE}"
        ));
    }
    if address
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    {
        return Err(format!(
            "address {address:?}: https is not supported yet; use an http:// address, as \
             {EXAMPLE}"
        ));
    }
    let rest = address
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
        .map(|_| &address[7..]);
    let Some(rest) = rest else {
        return Err(format!(
            "address {address:?} is not an http:// URL: write http://<host>:<port>, as {EXAMPLE}"
        ));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 address: `[::1]` or `[::1]:9090`.
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, tail)) => (host, Some(tail.strip_prefix(':').unwrap_or(tail))),
            None => ("", None),
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() || host.contains(['@', ' ', '\t']) {
        return Err(format!(
            "address {address:?} has no valid host: write http://<host>:<port>, as {EXAMPLE}"
        ));
    }
    if let Some(port) = port
        && port.parse::<u16>().ok().is_none_or(|p| p == 0)
    {
        return Err(format!(
            "address {address:?}: port {port:?} is not a port number (1..65535)"
        ));
    }
    Ok(())
}

/// The rollout ends with the canary short of 100%: legal (a canary kept
/// at 10% for good), but said.
fn warn_not_promoted(cx: &mut Check, steps: &[Step]) {
    let last = steps.iter().rev().find_map(|step| match step {
        Step::SetWeight(weight) => Some(*weight),
        _ => None,
    });
    let message = match last {
        Some(100) => return,
        Some(weight) => format!(
            "no setWeight step brings the canary to 100 after the last one: the rollout ends \
             with {weight}% on the canary and the rest on the stable subset (legal: the \
             canary is not fully promoted); end with - setWeight: 100 to promote it"
        ),
        None => "no step sets a weight: the rollout runs its pauses and analyses and changes no \
                 traffic; add setWeight steps to shift it"
            .to_owned(),
    };
    cx.warn(fp!("spec.steps"), message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_addresses() {
        for good in [
            "http://127.0.0.1:9090",
            "http://prometheus:9090/",
            "http://localhost",
            "http://[::1]:9090/prom",
            "HTTP://a.example",
        ] {
            assert_eq!(prometheus_address(good), Ok(()), "{good} is valid");
        }
        for (bad, says) in [
            ("", "address is required"),
            ("https://a:9090", "https is not supported yet"),
            ("127.0.0.1:9090", "is not an http:// URL"),
            ("http://", "has no valid host"),
            ("http://:9090", "has no valid host"),
            ("http://a:0", "is not a port number"),
            ("http://a:99999", "is not a port number"),
            ("http://u@a:1", "has no valid host"),
        ] {
            let error = prometheus_address(bad).expect_err(bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn fnv1a_128_is_the_published_function() {
        // FNV-1a 128 of "" is the offset basis; of "a", the published value.
        assert_eq!(
            format!("{:032x}", fnv1a_128(b"")),
            "6c62272e07bb014262b821756295c58d"
        );
        assert_eq!(
            format!("{:032x}", fnv1a_128(b"a")),
            "d228cb696f1a8caf78912b704e4a8964"
        );
    }
}
