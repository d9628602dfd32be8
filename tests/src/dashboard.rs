//! The Grafana dashboard (`dashboards/traffic-shift.json`) as queries the tests can
//! run: every PromQL `expr` of its panels (rows and collapsed rows included) and of
//! its template variables, with the variables substituted, and a small PromQL
//! scanner that lists the metric and label names a query uses.
//!
//! Also the metrics contract: [`exported_samples`], the only metrics the dashboard
//! may use, with their labels: the families from the agent's own list
//! ([`FAMILIES`], which its exporter names them from), the labels from
//! [`FAMILY_LABELS`].

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use serde_json::Value;
use traffic_shift_agent::metrics::{FAMILIES, Family, FamilyType};
use traffic_shift_config::labels::ISTIO_LABEL_NAMES;

/// Istio's standard labels of its TCP metrics, as the agent sets them: its
/// own list, and `response_flags`.
pub const ISTIO_LABELS: &[&str] = &istio_labels_and::<23>(&["response_flags"]);

/// The agent's list of Istio's labels, then `extra`: `M` names in all.
const fn istio_labels_and<const M: usize>(extra: &[&'static str]) -> [&'static str; M] {
    assert!(ISTIO_LABEL_NAMES.len() + extra.len() == M);
    let mut out = [""; M];
    let mut i = 0;
    while i < M {
        out[i] = if i < ISTIO_LABEL_NAMES.len() {
            ISTIO_LABEL_NAMES[i]
        } else {
            extra[i - ISTIO_LABEL_NAMES.len()]
        };
        i += 1;
    }
    out
}

/// The labels of every family the agent exports, by family name (as in
/// [`traffic_shift_agent::metrics::FAMILIES`], the one list of exported
/// families). A family the agent adds without an entry here fails
/// [`exported_samples`], so the dashboard test names it.
pub const FAMILY_LABELS: &[(&str, &[&str])] = &[
    ("istio_tcp_connections_opened", ISTIO_LABELS),
    ("istio_tcp_connections_closed", ISTIO_LABELS),
    ("istio_tcp_sent_bytes", ISTIO_LABELS),
    ("istio_tcp_received_bytes", ISTIO_LABELS),
    ("istio_requests", HTTP_LABELS),
    ("istio_request_duration_milliseconds", HTTP_LABELS),
    (
        "traffic_shift_connections_failed",
        &[
            "destination_service",
            "destination_version",
            "endpoint",
            "reason",
        ],
    ),
    ("traffic_shift_kernel_events", &["program", "event"]),
    ("traffic_shift_xdp_packets", XDP_DIRECTION_LABELS),
    ("traffic_shift_xdp_bytes", XDP_DIRECTION_LABELS),
    (
        "traffic_shift_xdp_flows",
        &[
            "route",
            "destination_service",
            "destination_version",
            "endpoint",
        ],
    ),
    ("traffic_shift_rules_applied", &[]),
    ("traffic_shift_apply_errors", &[]),
    ("traffic_shift_rules_generation", &[]),
    ("traffic_shift_map_entries", &["map"]),
    ("traffic_shift_map_max_entries", &["map"]),
    (
        "traffic_shift_endpoint_registered",
        &["destination_service", "destination_version", "endpoint"],
    ),
    (
        "traffic_shift_endpoint_healthy",
        &["destination_service", "destination_version", "endpoint"],
    ),
    (
        "traffic_shift_route_weight",
        &["route", "destination_service", "destination_version"],
    ),
    ("traffic_shift_store_connected", &[]),
    ("traffic_shift_store_revision", &[]),
    ("traffic_shift_store_reconnects", &[]),
    ("traffic_shift_rollout_phase", &["rollout", "phase"]),
    ("traffic_shift_rollout_step", &["rollout"]),
    ("traffic_shift_rollout_canary_weight", &["rollout"]),
    (
        "traffic_shift_rollout_analysis_runs",
        &["rollout", "metric", "result"],
    ),
    ("traffic_shift_http_retry_buffer_overflow", &["route"]),
];

/// Istio's labels of its HTTP metrics: the TCP ones and the response code
/// (and `grpc_response_status`, on the series of gRPC calls only).
pub const HTTP_LABELS: &[&str] =
    &istio_labels_and::<25>(&["response_flags", "response_code", "grpc_response_status"]);

/// The XDP gateway's packet and byte counters.
pub const XDP_DIRECTION_LABELS: &[&str] = &[
    "route",
    "destination_service",
    "destination_version",
    "endpoint",
    "direction",
];

/// Exported families the dashboard deliberately does not show, with the
/// reason. Every other family must be on it.
pub const NOT_ON_DASHBOARD: &[(&str, &str)] = &[(
    "traffic_shift_http_retry_buffer_overflow",
    "a rare event to alert on (request bodies over the L7 proxy's replay buffer on routes \
     that retry or mirror), not a rate to watch; read on /metrics",
)];

/// One sample name the agent exports, e.g. `istio_tcp_connections_opened_total`.
#[derive(Clone, Debug)]
pub struct ExportedSample {
    /// Its family, from the agent's list.
    pub family: Family,
    /// Its labels (a histogram's `_bucket` adds `le`).
    pub labels: Vec<&'static str>,
}

/// Every sample name the agent exports, from the agent's list of families
/// ([`FAMILIES`]) and the labels of [`FAMILY_LABELS`]. The dashboard uses no
/// other. Panics on a family without labels here, or labels of a family the
/// agent does not export.
pub fn exported_samples() -> BTreeMap<String, ExportedSample> {
    for (name, _) in FAMILY_LABELS {
        assert!(
            FAMILIES.iter().any(|f| f.name == *name),
            "FAMILY_LABELS names `{name}`, which the agent does not export (traffic_shift_agent::metrics::FAMILIES)"
        );
    }
    let mut out = BTreeMap::new();
    for family in FAMILIES {
        let labels = FAMILY_LABELS
            .iter()
            .find(|(name, _)| *name == family.name)
            .map_or_else(
                || {
                    panic!(
                        "the agent exports `{}` ({:?}), which has no labels in tests/src/dashboard.rs FAMILY_LABELS",
                        family.name, family.kind
                    )
                },
                |(_, labels)| *labels,
            );
        for sample in family.sample_names() {
            let mut labels = labels.to_vec();
            if family.kind == FamilyType::Histogram && sample.ends_with("_bucket") {
                labels.push("le");
            }
            out.insert(
                sample,
                ExportedSample {
                    family: *family,
                    labels,
                },
            );
        }
    }
    out
}

/// Labels Prometheus adds to every scraped series.
pub const TARGET_LABELS: &[&str] = &["job", "instance"];

/// What `$__rate_interval`, `$__interval` and `$__range` become: with the tests'
/// 1 s scrape interval a minute holds enough samples for `rate()` within seconds.
pub const TEST_INTERVAL: &str = "1m";
/// What every dashboard variable becomes: the regex that matches everything, as
/// Grafana's "All" (`allValue`) does.
pub const ALL: &str = ".*";

/// The shipped dashboard.
pub fn repo_dashboard() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/traffic-shift.json")
}

/// One PromQL query of the dashboard, as written (variables not substituted).
#[derive(Clone, Debug)]
pub struct DashboardQuery {
    /// The panel title (for a variable: `variable <name>`).
    pub panel: String,
    /// The target's `legendFormat`, "" when none.
    pub legend: String,
    pub expr: String,
}

/// The dashboard's JSON; panics with the file and the error if it does not parse.
pub fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// Every PromQL query of the dashboard with variables substituted: dashboard
/// variables by [`ALL`], `$__rate_interval`, `$__interval` and `$__range` by
/// [`TEST_INTERVAL`]. Ready to send to Prometheus.
pub fn dashboard_queries(path: &Path) -> Vec<String> {
    let dashboard = load(path);
    let vars = variables(&dashboard);
    let values: BTreeMap<&str, &str> = vars.iter().map(|v| (v.as_str(), ALL)).collect();
    raw_queries(&dashboard)
        .iter()
        .map(|q| substitute(&q.expr, &values, TEST_INTERVAL))
        .collect()
}

/// The dashboard's template variable names.
pub fn variables(dashboard: &Value) -> Vec<String> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect()
}

/// Every PromQL query as written: panel targets (nested rows included) and the
/// series selectors of `label_values(...)` / the expressions of `query_result(...)`
/// variable queries.
pub fn raw_queries(dashboard: &Value) -> Vec<DashboardQuery> {
    let mut out = Vec::new();
    for panel in all_panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push(DashboardQuery {
                    panel: title.to_owned(),
                    legend: target["legendFormat"].as_str().unwrap_or("").to_owned(),
                    expr: expr.to_owned(),
                });
            }
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        // Grafana 9+ stores {"query": "...", "refId": ...}; older ones a plain string.
        let query = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .or_else(|| var["definition"].as_str())
            .unwrap_or_default();
        if let Some(expr) = variable_promql(query) {
            out.push(DashboardQuery {
                panel: format!("variable {}", var["name"].as_str().unwrap_or("?")),
                legend: String::new(),
                expr,
            });
        }
    }
    out
}

/// Every panel, rows' nested panels (collapsed rows keep them in `panels`) included.
pub fn all_panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The PromQL inside a Grafana Prometheus variable query: the selector of
/// `label_values(selector, label)`, the expression of `query_result(expr)`.
/// `label_values(label)`, `label_names()` and `metrics(...)` have none.
fn variable_promql(query: &str) -> Option<String> {
    let query = query.trim();
    if let Some(args) = query
        .strip_prefix("label_values(")
        .and_then(|a| a.strip_suffix(')'))
    {
        // The label is the last argument; a selector may contain commas in braces.
        let (selector, _label) = args.rsplit_once(',')?;
        return Some(selector.trim().to_owned());
    }
    query
        .strip_prefix("query_result(")
        .and_then(|a| a.strip_suffix(')'))
        .map(|e| e.trim().to_owned())
}

/// Substitutes Grafana variables in `expr`: `$name`, `${name}`, `${name:format}`
/// and `[[name]]` by `values[name]`; `$__rate_interval`, `$__interval` and
/// `$__range` by `interval`. Panics on an unknown variable, and on a dashboard
/// variable used other than as a regex matcher value (`=~"$var"`, `!~"$var"`):
/// only there do "All" (`.*`) and multi-value selections mean what they say.
pub fn substitute(expr: &str, values: &BTreeMap<&str, &str>, interval: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(i) = rest.find(['$', '[']) {
        let (before, at) = rest.split_at(i);
        out.push_str(before);
        let (name, len) = if let Some(braced) = at.strip_prefix("${") {
            let end = braced
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in `{expr}`"));
            let inner = &braced[..end];
            (inner.split(':').next().unwrap_or(inner), end + 3)
        } else if let Some(bracketed) = at.strip_prefix("[[") {
            let end = bracketed
                .find("]]")
                .unwrap_or_else(|| panic!("unclosed [[ in `{expr}`"));
            (&bracketed[..end], end + 4)
        } else if let Some(plain) = at.strip_prefix('$') {
            let end = plain
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(plain.len());
            (&plain[..end], end + 1)
        } else {
            // A plain `[` (a range): not a variable.
            out.push('[');
            rest = &at[1..];
            continue;
        };
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            // `$1` in a label_replace replacement, or a lone `$`.
            out.push_str(&at[..len]);
        } else if matches!(name, "__rate_interval" | "__interval" | "__range") {
            out.push_str(interval);
        } else if let Some(value) = values.get(name) {
            assert!(
                out.ends_with("=~\"") || out.ends_with("!~\""),
                "variable ${name} in `{expr}` is not the value of a regex matcher (label=~\"${name}\"): \
                 there its \"All\" value `.*` and multi-value selections would not match"
            );
            out.push_str(value);
        } else {
            panic!("unknown variable ${name} in `{expr}`");
        }
        rest = &at[len..];
    }
    out.push_str(rest);
    out
}

/// The names a PromQL expression uses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Names {
    /// Metric names of its selectors.
    pub metrics: BTreeSet<String>,
    /// Label names in matchers (`{label="..."}`) and groupings (`by (...)`, `on (...)`, ...).
    pub labels: BTreeSet<String>,
    /// Functions and aggregations called.
    pub functions: BTreeSet<String>,
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const GROUPINGS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];

/// Scans a PromQL expression for its metric, label and function names. Not a
/// parser (Prometheus checks the syntax): it knows strings, `{...}` matchers,
/// `[...]` ranges, numbers and durations, groupings, keywords and calls.
pub fn promql_names(expr: &str) -> Names {
    let mut names = Names::default();
    let s = expr.as_bytes();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < s.len() && s[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    while i < s.len() {
        let c = s[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'#' {
            while i < s.len() && s[i] != b'\n' {
                i += 1;
            }
        } else if matches!(c, b'"' | b'\'' | b'`') {
            i = skip_string(s, i);
        } else if c == b'{' {
            i = scan_matchers(expr, i + 1, &mut names.labels);
        } else if c == b'[' {
            while i < s.len() && s[i] != b']' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_digit() || (c == b'.' && s.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            // Numbers, durations (5m, 1h30m), 1e-3: letters and dots run on.
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_' || s[i] == b':') {
                i += 1;
            }
            let ident = &expr[start..i];
            let next = skip_ws(i);
            let lower = ident.to_ascii_lowercase();
            if GROUPINGS.contains(&lower.as_str()) {
                if s.get(next) == Some(&b'(') {
                    i = scan_label_list(expr, next + 1, &mut names.labels);
                }
            } else if KEYWORDS.contains(&lower.as_str()) {
            } else if s.get(next) == Some(&b'(')
                || (AGGREGATIONS.contains(&ident) && {
                    let word: String = expr[next..]
                        .chars()
                        .take_while(char::is_ascii_alphabetic)
                        .collect();
                    word == "by" || word == "without"
                })
            {
                names.functions.insert(ident.to_owned());
            } else {
                names.metrics.insert(ident.to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Index just past the string literal starting at `i`.
fn skip_string(s: &[u8], i: usize) -> usize {
    let quote = s[i];
    let mut j = i + 1;
    while j < s.len() && s[j] != quote {
        if s[j] == b'\\' && quote != b'`' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

/// Label names of a `{...}` matcher list starting after the `{`; returns the index after `}`.
fn scan_matchers(expr: &str, mut i: usize, labels: &mut BTreeSet<String>) -> usize {
    let s = expr.as_bytes();
    while i < s.len() && s[i] != b'}' {
        if matches!(s[i], b'"' | b'\'' | b'`') {
            i = skip_string(s, i);
        } else if s[i].is_ascii_alphabetic() || s[i] == b'_' {
            let start = i;
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
                i += 1;
            }
            labels.insert(expr[start..i].to_owned());
        } else {
            i += 1;
        }
    }
    i + 1
}

/// Label names of a `(a, b)` grouping list starting after the `(`; returns the index after `)`.
fn scan_label_list(expr: &str, mut i: usize, labels: &mut BTreeSet<String>) -> usize {
    let s = expr.as_bytes();
    while i < s.len() && s[i] != b')' {
        if s[i].is_ascii_alphabetic() || s[i] == b'_' {
            let start = i;
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
                i += 1;
            }
            labels.insert(expr[start..i].to_owned());
        } else {
            i += 1;
        }
    }
    i + 1
}

/// Legend placeholders `{{label}}` of a `legendFormat`.
pub fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|part| part.split_once("}}").map(|(l, _)| l.trim().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn names_of_a_share_query() {
        let n = promql_names(
            r#"100 * sum by (destination_service, destination_version) (rate(istio_tcp_connections_opened_total{reporter="source", destination_service=~".*"}[1m]))
              / on (destination_service) group_left sum without (instance) (rate(istio_tcp_connections_opened_total[5m] offset 1h30m))"#,
        );
        assert_eq!(n.metrics, set(&["istio_tcp_connections_opened_total"]));
        assert_eq!(
            n.labels,
            set(&[
                "destination_service",
                "destination_version",
                "instance",
                "reporter"
            ])
        );
        assert_eq!(n.functions, set(&["rate", "sum"]));
    }

    #[test]
    fn names_skip_strings_keywords_and_numbers() {
        let n = promql_names(
            r#"sum(label_replace(a_total{x="b_total {not} c"}, "dst", "$1", "src", "(.*)")) by (dst) > bool 1e-3 and on() b unless c or vector(0)"#,
        );
        assert_eq!(n.metrics, set(&["a_total", "b", "c"]));
        assert_eq!(n.labels, set(&["x", "dst"]));
        assert_eq!(n.functions, set(&["label_replace", "sum", "vector"]));
    }

    #[test]
    fn substitution_of_variables_and_intervals() {
        let values = BTreeMap::from([("destination_service", ".*"), ("instance", ".*")]);
        assert_eq!(
            substitute(
                r#"rate(m{destination_service=~"$destination_service", instance!~"${instance:regex}"}[$__rate_interval])"#,
                &values,
                "1m"
            ),
            r#"rate(m{destination_service=~".*", instance!~".*"}[1m])"#
        );
        assert_eq!(
            substitute(
                r#"m{instance=~"[[instance]]"}[$__range:$__interval]"#,
                &values,
                "1m"
            ),
            r#"m{instance=~".*"}[1m:1m]"#
        );
        // Regex group references of label_replace are not variables.
        assert_eq!(
            substitute(r#"label_replace(m, "a", "$1", "b", "(.*)")"#, &values, "1m"),
            r#"label_replace(m, "a", "$1", "b", "(.*)")"#
        );
    }

    #[test]
    #[should_panic(expected = "not the value of a regex matcher")]
    fn variable_outside_a_regex_matcher_is_refused() {
        let values = BTreeMap::from([("destination_service", ".*")]);
        substitute(
            r#"m{destination_service="$destination_service"}"#,
            &values,
            "1m",
        );
    }

    #[test]
    #[should_panic(expected = "unknown variable $nope")]
    fn unknown_variable_is_refused() {
        substitute("rate(m[$nope])", &BTreeMap::new(), "1m");
    }

    #[test]
    fn variable_queries() {
        assert_eq!(
            variable_promql(r#"label_values(m{a=~"x,y"}, destination_service)"#).as_deref(),
            Some(r#"m{a=~"x,y"}"#)
        );
        assert_eq!(
            variable_promql("query_result(topk(3, m))").as_deref(),
            Some("topk(3, m)")
        );
        assert_eq!(variable_promql("label_values(instance)"), None);
        assert_eq!(variable_promql("label_names()"), None);
    }

    #[test]
    fn legend_placeholders() {
        assert_eq!(
            legend_labels("{{destination_service}} {{ destination_version }} weight"),
            ["destination_service", "destination_version"]
        );
    }
}
