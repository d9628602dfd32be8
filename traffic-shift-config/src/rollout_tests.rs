//! `Rollout`: parsed and checked (each error with its exact message and
//! field path), resolved against the rules (the target rule, the subsets,
//! the weight-0 destination added), the shipped examples, the digest.

#![expect(
    clippy::too_many_lines,
    reason = "tables of cases: one document and its exact message each"
)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    ConfigError, Resource, RolloutResource, RulesFile, TargetRoute, load_dir, parse_file_all,
    resolve_all,
};
use crate::{
    model::{Destination, RoutingModel},
    rollout::{Analysis, Metric, MetricSource, Rollout, RolloutProtocol, Step},
};

const FILE: &str = "rules/rollout.yaml";

/// A TCP service with two TCP ports and an HTTP one, subsets v1, v2, v3;
/// VirtualService `multi` has tcp[0] (port 9000, v1 only), tcp[1] (port
/// 9001, v1 and v2) and http[0] (`first`, v1 80 / v2 20) and http[1]
/// (`rest`, v1).
const SERVICE: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: multi}
spec:
  hosts: [multi.local]
  addresses: [127.100.0.9]
  ports:
  - {number: 9000, name: tcp-a, protocol: TCP}
  - {number: 9001, name: tcp-b, protocol: TCP}
  - {number: 8080, name: http, protocol: HTTP}
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {tcp-a: 19001, tcp-b: 19011, http: 19081}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {tcp-a: 19002, tcp-b: 19012, http: 19082}, labels: {version: v2}}
  - {address: 127.0.0.1, ports: {tcp-a: 19003, tcp-b: 19013, http: 19083}, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: multi}
spec:
  host: multi.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
";

const MULTI_VS: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: multi}
spec:
  hosts: [multi.local]
  tcp:
  - match: [{port: 9000}]
    route:
    - destination: {host: multi.local, port: {number: 9000}, subset: v1}
  - match: [{port: 9001}]
    route:
    - destination: {host: multi.local, port: {number: 9001}, subset: v1}
      weight: 90
    - destination: {host: multi.local, port: {number: 9001}, subset: v2}
      weight: 10
  http:
  - name: first
    match: [{uri: {prefix: /a}}]
    route:
    - destination: {host: multi.local, port: {number: 8080}, subset: v1}
      weight: 80
    - destination: {host: multi.local, port: {number: 8080}, subset: v2}
      weight: 20
  - name: rest
    route:
    - destination: {host: multi.local, port: {number: 8080}, subset: v1}
";

/// A VirtualService `tcp-only` with one tcp rule (port 9000: v1) and
/// `http-only` with one http rule (v1).
const ONE_RULE_VS: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-only}
spec:
  hosts: [multi.local]
  tcp:
  - route:
    - destination: {host: multi.local, port: {number: 9000}, subset: v1}
";

/// A Rollout `name` of `target` (the lines under `target:`), with one
/// step and no analysis unless `rest` (lines under `spec:`) adds them.
fn rollout(name: &str, target: &str, rest: &str) -> String {
    format!(
        "apiVersion: rollouts.traffic-shift.io/v1alpha1\nkind: Rollout\nmetadata: {{name: \
         {name}}}\nspec:\n  target:\n{target}{rest}"
    )
}

/// `target:` lines for virtualService `vs`, `route` (none when empty),
/// stable v1 and canary v2.
fn target(vs: &str, route: &str) -> String {
    let route = if route.is_empty() {
        String::new()
    } else {
        format!("    route: {route}\n")
    };
    format!("    virtualService: {vs}\n{route}    stable: v1\n    canary: v2\n")
}

const STEPS: &str = "  steps:\n  - setWeight: 100\n";

fn errors_of(text: &str) -> Vec<ConfigError> {
    crate::rules_tests::errors_in(FILE, text)
}

fn accepted(text: &str) -> RulesFile {
    crate::rules_tests::accepted_in(FILE, text)
}

fn checked(text: &str) -> RolloutResource {
    match accepted(text).resources.as_slice() {
        [Resource::Rollout(rollout)] => (**rollout).clone(),
        other => panic!("expected one Rollout, got {other:?}"),
    }
}

fn messages(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each `(text, field, message)`: refused, with (among others) exactly
/// this error at `field`.
fn refused(cases: &[(String, &str, &str)]) {
    for (text, field, message) in cases {
        let errors = errors_of(text);
        assert!(
            errors
                .iter()
                .any(|error| error.field.to_string() == *field && error.message == *message),
            "expected {field}: {message}\ngot:\n{}\nin:\n{text}",
            messages(&errors)
        );
    }
}

/// Parses each text as its own file (`rules/0.yaml`, ...) and resolves
/// them: the model, or every error.
fn resolve_texts(texts: &[&str]) -> (Result<RoutingModel, Vec<ConfigError>>, Vec<String>) {
    let files: Vec<RulesFile> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            parse_file_all(&PathBuf::from(format!("rules/{i}.yaml")), text).unwrap_or_else(
                |errors| panic!("expected file {i} to parse, got:\n{}", messages(&errors)),
            )
        })
        .collect();
    let (model, warnings) = resolve_all(&files);
    (model, warnings.iter().map(ToString::to_string).collect())
}

fn resolved(texts: &[&str]) -> RoutingModel {
    match resolve_texts(texts).0 {
        Ok(model) => model,
        Err(errors) => panic!("expected the rules to resolve, got:\n{}", messages(&errors)),
    }
}

fn resolve_errors(texts: &[&str]) -> Vec<ConfigError> {
    match resolve_texts(texts).0 {
        Ok(model) => panic!("expected errors, got {:#?}", model.rollouts),
        Err(errors) => errors,
    }
}

/// Resolving `texts` gives (among others) exactly this error at `field`.
fn resolve_refused(texts: &[&str], field: &str, message: &str) {
    let errors = resolve_errors(texts);
    assert!(
        errors
            .iter()
            .any(|error| error.field.to_string() == field && error.message == message),
        "expected {field}: {message}\ngot:\n{}",
        messages(&errors)
    );
}

fn only_rollout(model: &RoutingModel) -> &Rollout {
    match model.rollouts.as_slice() {
        [rollout] => rollout,
        other => panic!("expected one rollout, got {other:#?}"),
    }
}

/// `(subset, weight, endpoint addresses)` of each destination.
fn summary(destinations: &[&Destination]) -> Vec<(String, u32, Vec<SocketAddr>)> {
    destinations
        .iter()
        .map(|d| {
            (
                d.subset.clone().unwrap_or_default(),
                d.weight,
                d.endpoints.iter().map(|e| e.addr).collect(),
            )
        })
        .collect()
}

fn tcp_route<'m>(model: &'m RoutingModel, key: &str) -> Vec<&'m Destination> {
    model
        .routes
        .iter()
        .find(|r| r.key == key)
        .unwrap_or_else(|| panic!("no route {key} in {:#?}", model.routes))
        .destinations
        .iter()
        .collect()
}

fn http_route<'m>(model: &'m RoutingModel, key: &str) -> Vec<&'m Destination> {
    model
        .http
        .iter()
        .flat_map(|l| &l.virtual_hosts)
        .flat_map(|v| &v.routes)
        .find(|r| r.key == key)
        .unwrap_or_else(|| panic!("no http route {key}"))
        .destinations
        .iter()
        .map(|d| &d.destination)
        .collect()
}

fn addrs(ports: &[u16]) -> Vec<SocketAddr> {
    ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect()
}

fn repo_rules(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rules")
        .join(path)
}

/// The files directly in `rules/<dir>` and `rules/<dir>/<extra>...`.
fn shipped(dir: &str, extra: &[&str]) -> Vec<RulesFile> {
    let (mut files, errors) = load_dir(&repo_rules(dir));
    assert!(errors.is_empty(), "rules/{dir}:\n{}", messages(&errors));
    for file in extra {
        let path = repo_rules(dir).join(file);
        let text = std::fs::read_to_string(&path).expect("a shipped file");
        files.push(
            parse_file_all(&path, &text)
                .unwrap_or_else(|errors| panic!("{file}:\n{}", messages(&errors))),
        );
    }
    files
}

/// The example of the reference (docs/rollouts.md), every field written.
const FULL: &str = "\
apiVersion: rollouts.traffic-shift.io/v1alpha1
kind: Rollout
metadata:
  name: tcp-echo
  namespace: shop
spec:
  target:
    virtualService: tcp-echo
    route: tcp[0]
    stable: v1
    canary: v2
  analysis:
    interval: 10s
    failureLimit: 1
    inconclusiveLimit: 2
    minSamples: 20
    metrics:
    - name: canary-connects
      connectionSuccessRate: {min: 99}
    - prometheus:
        address: http://127.0.0.1:9090
        query: 'sum(rate(traffic_shift_connections_failed_total{destination_version=\"v2\"}[1m]))'
        max: 0.5
  steps:
  - setWeight: 10
  - pause: {duration: 30s}
  - pause: {duration: 45}
  - pause: {}
  - analysis: {interval: 5s, count: 3, minSamples: 20, metrics: [{connectionSuccessRate: {min: 99.5, max: 100}}]}
  - setWeight: 100
";

#[test]
fn every_field_is_read_with_its_meaning() {
    let rollout = checked(FULL);
    assert_eq!(rollout.source.namespace, "shop");
    assert_eq!(rollout.target.virtual_service, "tcp-echo");
    assert_eq!(rollout.target.route, TargetRoute::Tcp(0));
    assert_eq!(
        (
            rollout.target.stable.as_str(),
            rollout.target.canary.as_str()
        ),
        ("v1", "v2")
    );
    let query = "sum(rate(traffic_shift_connections_failed_total{destination_version=\"v2\"}[1m]))";
    assert_eq!(
        rollout.analysis,
        Some(Analysis {
            interval: Duration::from_secs(10),
            count: None,
            failure_limit: 1,
            inconclusive_limit: 2,
            min_samples: 20,
            metrics: vec![
                Metric {
                    name: "canary-connects".into(),
                    source: MetricSource::ConnectionSuccessRate,
                    min: Some(99.0),
                    max: None,
                },
                Metric {
                    name: "prometheus".into(),
                    source: MetricSource::Prometheus {
                        address: "http://127.0.0.1:9090".into(),
                        query: query.into(),
                    },
                    min: None,
                    max: Some(0.5),
                },
            ],
        }),
        "the background analysis: count None, a metric without a name is named after its source"
    );
    assert_eq!(
        rollout.steps,
        [
            Step::SetWeight(10),
            Step::Pause(Some(Duration::from_secs(30))),
            Step::Pause(Some(Duration::from_secs(45))),
            Step::Pause(None),
            Step::Analysis(Analysis {
                interval: Duration::from_secs(5),
                count: Some(3),
                failure_limit: 0,
                inconclusive_limit: 0,
                min_samples: 20,
                metrics: vec![Metric {
                    name: "connectionSuccessRate".into(),
                    source: MetricSource::ConnectionSuccessRate,
                    min: Some(99.5),
                    max: Some(100.0),
                }],
            }),
            Step::SetWeight(100),
        ]
    );
    assert_eq!(rollout.spec_digest.len(), 32, "128 bits in hex");
}

#[test]
fn analysis_defaults() {
    let text = rollout(
        "r",
        &target("vs", ""),
        "  steps:\n  - analysis: {metrics: [{requestDurationP99: {max: 500}}]}\n  - setWeight: 100\n",
    );
    let rollout = checked(&text);
    assert_eq!(rollout.target.route, TargetRoute::Only, "route left out");
    assert_eq!(rollout.source.namespace, "default", "namespace defaults");
    assert_eq!(
        rollout.steps[0],
        Step::Analysis(Analysis {
            interval: Duration::from_secs(30),
            count: Some(1),
            failure_limit: 0,
            inconclusive_limit: 0,
            min_samples: 1,
            metrics: vec![Metric {
                name: "requestDurationP99".into(),
                source: MetricSource::RequestDurationP99,
                min: None,
                max: Some(500.0),
            }],
        }),
        "interval 30s, count 1, limits 0, minSamples 1"
    );
}

#[test]
fn route_forms_as_written() {
    for (written, expected) in [
        ("tcp[0]", TargetRoute::Tcp(0)),
        ("tcp[12]", TargetRoute::Tcp(12)),
        ("http[1]", TargetRoute::Http(1)),
        ("3", TargetRoute::Index(3)),
        ("'3'", TargetRoute::Index(3)),
        ("canary-route", TargetRoute::Name("canary-route".into())),
    ] {
        let text = rollout("r", &target("vs", written), STEPS);
        assert_eq!(checked(&text).target.route, expected, "route: {written}");
    }
}

#[test]
fn each_check_refuses_with_its_message() {
    let t = target("vs", "");
    let with_steps = |steps: &str| rollout("r", &t, &format!("  steps:\n{steps}"));
    let with_analysis =
        |analysis: &str| rollout("r", &t, &format!("  analysis:\n{analysis}{STEPS}"));
    let metric = |metric: &str| with_analysis(&format!("    metrics:\n    - {metric}\n"));
    refused(&[
        // The envelope.
        (
            rollout("R_1", &t, STEPS),
            "metadata.name",
            "metadata.name \"R_1\" is not a valid name: use lower-case letters, digits, '-' \
             and '.', starting and ending with a letter or digit",
        ),
        (
            rollout("r", &t, STEPS).replace("spec:", "spec:\n  strategy: canary"),
            "spec.strategy",
            "unknown field `strategy`, expected one of `target`, `analysis`, `steps`: fix the \
             spelling or remove the field",
        ),
        (
            rollout("r", &t, STEPS).replace("canary: v2", "canary: v2\n    weight: 10"),
            "spec.target.weight",
            "unknown field `weight`, expected one of `virtualService`, `namespace`, `route`, \
             `stable`, `canary`: fix the spelling or remove the field",
        ),
        // The target.
        (
            format!(
                "apiVersion: rollouts.traffic-shift.io/v1alpha1\nkind: Rollout\nmetadata: \
                 {{name: r}}\nspec:\n{STEPS}"
            ),
            "spec.target",
            "spec.target is required: name the VirtualService (virtualService), and its stable \
             and canary subsets",
        ),
        (
            rollout("r", "    stable: v1\n    canary: v2\n", STEPS),
            "spec.target.virtualService",
            "virtualService is required: the name of the VirtualService whose route the Rollout \
             shifts (in spec.target.namespace, else the Rollout's namespace)",
        ),
        (
            rollout("r", &target("other/vs", ""), STEPS),
            "spec.target.virtualService",
            "virtualService \"other/vs\" names a namespace (other): write the name alone here \
             and the namespace in spec.target.namespace",
        ),
        (
            rollout("r", &target("Vs_1", ""), STEPS),
            "spec.target.virtualService",
            "virtualService \"Vs_1\" is not a valid name: use lower-case letters, digits, '-' \
             and '.', starting and ending with a letter or digit",
        ),
        (
            rollout("r", "    virtualService: vs\n    canary: v2\n", STEPS),
            "spec.target.stable",
            "stable is required: the stable (current) subset's name, as the DestinationRule of \
             the route's host defines it",
        ),
        (
            rollout("r", "    virtualService: vs\n    stable: v1\n", STEPS),
            "spec.target.canary",
            "canary is required: the canary (new) subset's name, as the DestinationRule of the \
             route's host defines it",
        ),
        (
            rollout("r", &t.replace("canary: v2", "canary: v_2"), STEPS),
            "spec.target.canary",
            "subset name is invalid: v_2",
        ),
        (
            rollout("r", &t.replace("canary: v2", "canary: v1"), STEPS),
            "spec.target.canary",
            "stable and canary are both v1: the Rollout shifts traffic from one subset to \
             another; name two different subsets",
        ),
        (
            rollout("r", &target("vs", "tls[0]"), STEPS),
            "spec.target.route",
            "route tls[0]: a tls rule cannot be a Rollout's target (tls rules are not supported \
             yet); target a tcp or http rule",
        ),
        (
            rollout("r", &target("vs", "tcp[x]"), STEPS),
            "spec.target.route",
            "route \"tcp[x]\" is not a rule: write tcp[N] or http[N] (N counts from 0 in the \
             VirtualService's tcp or http rules), an http rule's name, or N alone when the \
             VirtualService has rules of one kind only",
        ),
        (
            rollout("r", &target("vs", "-1"), STEPS),
            "spec.target.route",
            "route -1 is not a rule index: write tcp[N] or http[N] (N counts from 0 in the \
             VirtualService's tcp or http rules), an http rule's name, or N alone when the \
             VirtualService has rules of one kind only",
        ),
        (
            rollout("r", &target("vs", "[0]"), STEPS),
            "spec.target.route",
            "route must be a string or an integer: write tcp[N] or http[N] (N counts from 0 in \
             the VirtualService's tcp or http rules), an http rule's name, or N alone when the \
             VirtualService has rules of one kind only",
        ),
        // Steps.
        (
            rollout("r", &t, ""),
            "spec.steps",
            "spec.steps is required: list at least one step (setWeight, pause or analysis)",
        ),
        (
            with_steps("  - {}\n"),
            "spec.steps[0]",
            "a step needs one of setWeight, pause or analysis (pause: {} waits for `rollout \
             promote`)",
        ),
        (
            with_steps("  - setWeight: 10\n  - setWeight: 20\n    pause: {}\n"),
            "spec.steps[1]",
            "a step does one thing, and this one has setWeight and pause: write them as 2 \
             steps, in the order they should happen",
        ),
        (
            with_steps("  - setWeight: 101\n"),
            "spec.steps[0].setWeight",
            "setWeight 101 is not in range 0..100: it is the canary's share of the traffic, in \
             percent",
        ),
        (
            with_steps("  - setWeight: -1\n"),
            "spec.steps[0].setWeight",
            "setWeight -1 is not in range 0..100: it is the canary's share of the traffic, in \
             percent",
        ),
        (
            with_steps("  - setWeight: 10\n  - stepWeight: 20\n"),
            "spec.steps[1].stepWeight",
            "unknown field `stepWeight`, expected one of `setWeight`, `pause`, `analysis`: fix \
             the spelling or remove the field",
        ),
        (
            with_steps("  - pause: {duration: 1.5}\n"),
            "spec.steps[0].pause.duration",
            "pause duration 1.5 is not whole seconds: write seconds (30) or a duration (30s, \
             1m30s), or leave duration out to pause until `rollout promote`",
        ),
        (
            with_steps("  - pause: {duration: -3}\n"),
            "spec.steps[0].pause.duration",
            "pause duration -3 is not whole seconds: write seconds (30) or a duration (30s, \
             1m30s), or leave duration out to pause until `rollout promote`",
        ),
        (
            with_steps("  - pause: {duration: 30 seconds}\n"),
            "spec.steps[0].pause.duration",
            "invalid duration \"30 seconds\": write a number and a unit, as 10s, 1.5s, 250ms or \
             1m30s (units ns, us, ms, s, m, h)",
        ),
        (
            with_steps("  - pause: {duration: [30s]}\n"),
            "spec.steps[0].pause.duration",
            "pause duration must be a number of seconds or a duration: write seconds (30) or a \
             duration (30s, 1m30s), or leave duration out to pause until `rollout promote`",
        ),
        (
            with_steps("  - pause: {until: promote}\n"),
            "spec.steps[0].pause.until",
            "unknown field `until`, expected `duration`: fix the spelling or remove the field",
        ),
        // Analyses.
        (
            with_analysis(
                "    interval: 500ms\n    metrics: [{connectionSuccessRate: {min: 99}}]\n",
            ),
            "spec.analysis.interval",
            "interval 500ms is too short: an analysis interval is at least 1s (default 30s)",
        ),
        (
            with_analysis("    interval: 10\n    metrics: [{connectionSuccessRate: {min: 99}}]\n"),
            "spec.analysis.interval",
            "invalid type: integer `10`, expected a string",
        ),
        (
            with_analysis("    count: 3\n    metrics: [{connectionSuccessRate: {min: 99}}]\n"),
            "spec.analysis.count",
            "count applies to step analyses only: the background analysis (spec.analysis) runs \
             from the first step to the last; remove count, or make this analysis a step",
        ),
        (
            with_steps("  - analysis: {count: 0, metrics: [{connectionSuccessRate: {min: 99}}]}\n"),
            "spec.steps[0].analysis.count",
            "count 0 is not in range 1..4294967295: the number of successful intervals the step \
             needs to pass",
        ),
        (
            with_analysis(
                "    failureLimit: -1\n    metrics: [{connectionSuccessRate: {min: 99}}]\n",
            ),
            "spec.analysis.failureLimit",
            "failureLimit -1 is not in range 0..4294967295: the number of failed intervals \
             tolerated",
        ),
        (
            with_analysis(
                "    inconclusiveLimit: -2\n    metrics: [{connectionSuccessRate: {min: 99}}]\n",
            ),
            "spec.analysis.inconclusiveLimit",
            "inconclusiveLimit -2 is not in range 0..4294967295: the number of inconclusive \
             intervals tolerated",
        ),
        (
            with_analysis("    minSamples: 0\n    metrics: [{connectionSuccessRate: {min: 99}}]\n"),
            "spec.analysis.minSamples",
            "minSamples 0 is not at least 1: an interval with no connection or request is never \
             a pass",
        ),
        (
            with_analysis("    interval: 10s\n"),
            "spec.analysis.metrics",
            "metrics is required: list at least one metric (connectionSuccessRate, \
             requestSuccessRate, requestDurationP99 or prometheus)",
        ),
        // Metrics.
        (
            metric("name: x"),
            "spec.analysis.metrics[0]",
            "a metric needs a source: one of connectionSuccessRate, requestSuccessRate, \
             requestDurationP99 or prometheus",
        ),
        (
            metric("{connectionSuccessRate: {min: 99}, requestSuccessRate: {min: 99}}"),
            "spec.analysis.metrics[0]",
            "a metric has one source, and this one has connectionSuccessRate and \
             requestSuccessRate: write one metric per source",
        ),
        (
            metric("connectionSuccessRate: {}"),
            "spec.analysis.metrics[0].connectionSuccessRate",
            "a threshold needs min, max or both: for example {min: 99}: at least 99% succeed",
        ),
        (
            metric("requestDurationP99: {}"),
            "spec.analysis.metrics[0].requestDurationP99",
            "a threshold needs min, max or both: for example {max: 500}: at most 500 ms",
        ),
        (
            metric("connectionSuccessRate: {min: 101}"),
            "spec.analysis.metrics[0].connectionSuccessRate.min",
            "min 101 is not in range 0..100: a success rate is in percent",
        ),
        (
            metric("requestSuccessRate: {max: -1}"),
            "spec.analysis.metrics[0].requestSuccessRate.max",
            "max -1 is not in range 0..100: a success rate is in percent",
        ),
        (
            metric("requestDurationP99: {max: -5}"),
            "spec.analysis.metrics[0].requestDurationP99.max",
            "max -5 < 0: a request duration is in milliseconds",
        ),
        (
            metric("connectionSuccessRate: {min: .nan}"),
            "spec.analysis.metrics[0].connectionSuccessRate.min",
            "min must be a finite number",
        ),
        (
            metric("requestSuccessRate: {min: 99, max: 90}"),
            "spec.analysis.metrics[0].requestSuccessRate.min",
            "min 99 > max 90: no value can pass; swap them",
        ),
        (
            metric("connectionSuccessRate: {min: 99, median: 1}"),
            "spec.analysis.metrics[0].connectionSuccessRate.median",
            "unknown field `median`, expected `min` or `max`: fix the spelling or remove the field",
        ),
        (
            metric("{name: Bad_Name, connectionSuccessRate: {min: 99}}"),
            "spec.analysis.metrics[0].name",
            "metric name \"Bad_Name\" is not valid: use at most 63 letters, digits and '-', \
             starting and ending with a letter or digit",
        ),
        (
            with_analysis(
                "    metrics:\n    - connectionSuccessRate: {min: 99}\n    - \
                 connectionSuccessRate: {min: 50}\n",
            ),
            "spec.analysis.metrics[1].name",
            "metric name connectionSuccessRate is also metrics[0]'s: names are unique within an \
             analysis (a metric without a name is named after its source); give each a name",
        ),
        (
            metric("prometheus: {address: https://prom:9090, query: up, min: 1}"),
            "spec.analysis.metrics[0].prometheus.address",
            "address \"https://prom:9090\": https is not supported yet; use an http:// address, \
             as http://127.0.0.1:9090",
        ),
        (
            metric("prometheus: {address: 'prom:9090', query: up, min: 1}"),
            "spec.analysis.metrics[0].prometheus.address",
            "address \"prom:9090\" is not an http:// URL: write http://<host>:<port>, as \
             http://127.0.0.1:9090",
        ),
        (
            metric("prometheus: {query: up, min: 1}"),
            "spec.analysis.metrics[0].prometheus.address",
            "address is required: the Prometheus server's URL, as http://127.0.0.1:9090",
        ),
        (
            metric("prometheus: {address: 'http://prom:9090', min: 1}"),
            "spec.analysis.metrics[0].prometheus.query",
            "query is required: a PromQL instant query whose value (a scalar, or a vector of one \
             sample) is compared with min and max",
        ),
        (
            metric("prometheus: {address: 'http://prom:9090', query: up}"),
            "spec.analysis.metrics[0].prometheus",
            "a threshold needs min, max or both: for example max: 0.5: the query's value is at \
             most 0.5",
        ),
        // Step analyses point at their step.
        (
            with_steps(
                "  - setWeight: 10\n  - analysis: {metrics: [{requestSuccessRate: {min: 100.5}}]}\n",
            ),
            "spec.steps[1].analysis.metrics[0].requestSuccessRate.min",
            "min 100.5 is not in range 0..100: a success rate is in percent",
        ),
    ]);
}

#[test]
fn errors_name_the_file_document_rollout_field_and_line() {
    let text = format!(
        "{}---\n{}",
        rollout("ok", &target("vs", ""), STEPS),
        rollout(
            "bad",
            &target("vs", ""),
            "  steps:\n  - setWeight: 10\n  - setWeight: 120\n"
        )
    );
    let errors = errors_of(&text);
    assert_eq!(
        messages(&errors),
        "rules/rollout.yaml: document 2 (Rollout default/bad): spec.steps[1].setWeight: \
         setWeight 120 is not in range 0..100: it is the canary's share of the traffic, in \
         percent (line 22)"
    );
}

#[test]
fn api_versions_are_per_kind() {
    let text = rollout("r", &target("vs", ""), STEPS);
    let errors = errors_of(&text.replace(
        "rollouts.traffic-shift.io/v1alpha1",
        "networking.istio.io/v1",
    ));
    assert_eq!(
        messages(&errors),
        "rules/rollout.yaml: document 1 (Rollout default/r): apiVersion: unsupported \
         apiVersion \"networking.istio.io/v1\" for a Rollout: use \
         rollouts.traffic-shift.io/v1alpha1 (line 1)"
    );
    let errors = errors_of(&ONE_RULE_VS.replace(
        "networking.istio.io/v1",
        "rollouts.traffic-shift.io/v1alpha1",
    ));
    assert_eq!(
        messages(&errors),
        "rules/rollout.yaml: document 1 (VirtualService default/tcp-only): apiVersion: \
         unsupported apiVersion \"rollouts.traffic-shift.io/v1alpha1\" for a VirtualService: \
         it is the Rollout's; use networking.istio.io/v1 (v1beta1 and v1alpha3 are accepted \
         too)"
            .to_owned()
            + " (line 1)"
    );
    let errors = errors_of(&text.replace("kind: Rollout", "kind: AnalysisTemplate"));
    assert!(
        messages(&errors).contains(
            "unsupported kind \"AnalysisTemplate\": expected one of ServiceEntry, \
             DestinationRule, VirtualService, Gateway, WorkloadEntry, Rollout"
        ),
        "{}",
        messages(&errors)
    );
}

#[test]
fn a_rollout_that_never_reaches_100_warns() {
    let warnings = |steps: &str| -> Vec<String> {
        accepted(&rollout("r", &target("vs", ""), steps))
            .warnings
            .iter()
            .map(|w| format!("{}: {}", w.field, w.message))
            .collect()
    };
    assert_eq!(
        warnings(
            "  steps:\n  - setWeight: 10\n  - setWeight: 100\n  - setWeight: 50\n  - pause: {}\n"
        ),
        [
            "spec.steps: no setWeight step brings the canary to 100 after the last one: the \
          rollout ends with 50% on the canary and the rest on the stable subset (legal: the \
          canary is not fully promoted); end with - setWeight: 100 to promote it"
        ]
    );
    assert_eq!(
        warnings("  steps:\n  - pause: {duration: 10s}\n"),
        [
            "spec.steps: no step sets a weight: the rollout runs its pauses and analyses and \
          changes no traffic; add setWeight steps to shift it"
        ]
    );
    assert!(
        warnings("  steps:\n  - setWeight: 100\n  - pause: {}\n  - setWeight: 100\n").is_empty(),
        "ending at 100 does not warn, and steps that change nothing are fine"
    );
}

#[test]
fn shipped_tcp_echo_rollout_starts_from_all_v1_with_v2_added_at_weight_0() {
    let files = shipped("tcp-echo", &["examples/rollout.yaml"]);
    let (model, warnings) = resolve_all(&files);
    let model = model.unwrap_or_else(|errors| panic!("{}", messages(&errors)));
    assert!(warnings.is_empty(), "{warnings:?}");
    let rollout = only_rollout(&model);
    assert_eq!(rollout.name, "default/tcp-echo");
    assert_eq!(rollout.virtual_service, "default/tcp-echo");
    assert_eq!(rollout.route, "default/tcp-echo/tcp[0]");
    assert_eq!(rollout.protocol, RolloutProtocol::Tcp);
    assert_eq!(rollout.host, "tcp-echo.local");
    assert!(
        rollout
            .source
            .ends_with("rules/tcp-echo/examples/rollout.yaml")
    );
    let weights: Vec<u32> = rollout
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::SetWeight(w) => Some(*w),
            _ => None,
        })
        .collect();
    assert_eq!(weights, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    // The mesh route and the gateway route of tcp[0] both get v2 at 0,
    // with v2's endpoints (IPv4 and IPv6), as any destination's.
    let (v1, v2) = (
        ["127.0.0.1:19001", "[::1]:19001"]
            .map(|a| a.parse().unwrap())
            .to_vec(),
        ["127.0.0.1:19002", "[::1]:19002"]
            .map(|a| a.parse().unwrap())
            .to_vec(),
    );
    let expected = vec![("v1".to_owned(), 100, v1), ("v2".to_owned(), 0, v2)];
    let keys: Vec<&str> = model.routes.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in keys {
        assert!(rollout.targets_tcp(key), "{key}");
        assert_eq!(summary(&tcp_route(&model, key)), expected, "{key}");
    }
    assert_eq!(model.written_canary_weight(rollout), Some(0));

    // The controller's weights, on every route of the rule.
    let mut shifted = model.clone();
    assert!(shifted.set_canary_weight(rollout, 30));
    for route in &shifted.routes {
        let weights: Vec<u32> = route.destinations.iter().map(|d| d.weight).collect();
        assert_eq!(weights, [70, 30], "{}", route.key);
    }
    assert_eq!(shifted.written_canary_weight(rollout), Some(30));
}

#[test]
fn a_route_with_both_subsets_is_kept_as_written() {
    for (example, weights) in [("vs-20-v2.yaml", [80, 20]), ("vs-all-v2.yaml", [0, 100])] {
        let mut files = shipped("tcp-echo", &["examples/rollout.yaml"]);
        let path = repo_rules("tcp-echo/examples").join(example);
        let text = std::fs::read_to_string(&path).expect("example");
        let vs = parse_file_all(&path, &text).expect("example parses");
        let at = files
            .iter()
            .position(|f| f.path.ends_with("virtual-service.yaml"))
            .expect("virtual-service.yaml");
        files[at] = vs;
        let (model, _) = resolve_all(&files);
        let model = model.unwrap_or_else(|errors| panic!("{}", messages(&errors)));
        let rollout = only_rollout(&model);
        for route in &model.routes {
            // v1 then v2: all-v2's lone v2 gets 100, v1 is added with 0.
            let mut got: Vec<(String, u32)> = route
                .destinations
                .iter()
                .map(|d| (d.subset.clone().unwrap_or_default(), d.weight))
                .collect();
            got.sort();
            assert_eq!(
                got,
                [("v1".to_owned(), weights[0]), ("v2".to_owned(), weights[1])],
                "{example}: {}",
                route.key
            );
        }
        assert_eq!(
            model.written_canary_weight(rollout),
            Some(weights[1]),
            "{example}"
        );
    }
}

#[test]
fn shipped_bookinfo_rollout_targets_the_reviews_http_rule() {
    let files = shipped("bookinfo", &["examples/rollout.yaml"]);
    let (model, warnings) = resolve_all(&files);
    let model = model.unwrap_or_else(|errors| panic!("{}", messages(&errors)));
    assert!(warnings.is_empty(), "{warnings:?}");
    let rollout = only_rollout(&model);
    assert_eq!(rollout.name, "default/reviews");
    assert_eq!(rollout.route, "default/reviews/http[0]");
    assert_eq!(rollout.protocol, RolloutProtocol::Http);
    assert_eq!(rollout.host, "reviews.default.svc.cluster.local");
    assert_eq!(
        (rollout.stable.as_str(), rollout.canary.as_str()),
        ("v1", "v3")
    );
    let weights: Vec<u32> = rollout
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::SetWeight(w) => Some(*w),
            _ => None,
        })
        .collect();
    assert_eq!(weights, [50, 100]);
    let kinds: Vec<&str> = rollout
        .analysis
        .as_ref()
        .expect("a background analysis")
        .metrics
        .iter()
        .map(|m| m.source.kind())
        .collect();
    assert_eq!(kinds, ["requestSuccessRate", "requestDurationP99"]);
    assert_eq!(
        summary(&http_route(&model, "default/reviews/http[0]")),
        [
            ("v1".to_owned(), 100, addrs(&[19081])),
            ("v3".to_owned(), 0, addrs(&[19083])),
        ]
    );
    // The bookinfo VirtualService (the gateway's) is not the target.
    let bookinfo = http_route(&model, "default/bookinfo/http[0]");
    assert_eq!(bookinfo.len(), 1);
}

#[test]
fn every_rules_directory_resolves_with_its_rollout() {
    for dir in ["tcp-echo", "bookinfo"] {
        let files = shipped(dir, &["examples/rollout.yaml"]);
        let (model, _) = resolve_all(&files);
        let model = model.unwrap_or_else(|errors| panic!("rules/{dir}: {}", messages(&errors)));
        assert_eq!(model.rollouts.len(), 1, "rules/{dir}");
        // Without the rollout, the directory is as it was: no rollout, and
        // the route as written (one destination).
        let (model, _) = resolve_all(&shipped(dir, &[]));
        let model = model.unwrap_or_else(|errors| panic!("rules/{dir}: {}", messages(&errors)));
        assert!(model.rollouts.is_empty());
        assert!(
            model
                .destinations()
                .all(|d| d.subset.as_deref() != Some("v2") || dir != "tcp-echo")
        );
    }
}

#[test]
fn the_target_rule_by_tcp_http_name_or_index() {
    let cases = [
        ("tcp[0]", "default/multi/tcp[0]", RolloutProtocol::Tcp),
        ("tcp[1]", "default/multi/tcp[1]", RolloutProtocol::Tcp),
        ("http[0]", "default/multi/http[0]", RolloutProtocol::Http),
        ("rest", "default/multi/http[1]", RolloutProtocol::Http),
        ("first", "default/multi/http[0]", RolloutProtocol::Http),
    ];
    for (route, key, protocol) in cases {
        let text = rollout("r", &target("multi", route), STEPS);
        let model = resolved(&[SERVICE, MULTI_VS, &text]);
        let rollout = only_rollout(&model);
        assert_eq!(rollout.route, key, "route: {route}");
        assert_eq!(rollout.protocol, protocol, "route: {route}");
        assert_eq!(rollout.host, "multi.local");
    }
    // A bare index: the rule of the only kind.
    let tcp_only = ONE_RULE_VS;
    let http_only = ONE_RULE_VS
        .replace("tcp-only", "http-only")
        .replace("  tcp:\n", "  http:\n")
        .replace("number: 9000", "number: 8080");
    for (vs, name, route, key) in [
        (tcp_only, "tcp-only", "0", "default/tcp-only/tcp[0]"),
        (&http_only, "http-only", "0", "default/http-only/http[0]"),
        (tcp_only, "tcp-only", "", "default/tcp-only/tcp[0]"),
        (&http_only, "http-only", "", "default/http-only/http[0]"),
    ] {
        let text = rollout("r", &target(name, route), STEPS);
        let model = resolved(&[SERVICE, vs, &text]);
        assert_eq!(only_rollout(&model).route, key, "{name} route {route:?}");
    }
}

#[test]
fn the_weight_0_destination_is_added_where_the_rule_lacks_a_subset() {
    // tcp[0] of multi routes v1 only: v2 is added with weight 0 and its
    // endpoint for port 9000; tcp[1] and the http rules are as written.
    let text = rollout("r", &target("multi", "tcp[0]"), STEPS);
    let model = resolved(&[SERVICE, MULTI_VS, &text]);
    assert_eq!(
        summary(&tcp_route(&model, "default/multi/tcp[0]/port 9000")),
        [
            ("v1".to_owned(), 100, addrs(&[19001])),
            ("v2".to_owned(), 0, addrs(&[19002])),
        ]
    );
    assert_eq!(
        summary(&tcp_route(&model, "default/multi/tcp[1]/port 9001")),
        [
            ("v1".to_owned(), 90, addrs(&[19011])),
            ("v2".to_owned(), 10, addrs(&[19012])),
        ]
    );
    // http[1] (`rest`): v2 added at 0, with its endpoint of port 8080.
    let text = rollout("r", &target("multi", "rest"), STEPS);
    let model = resolved(&[SERVICE, MULTI_VS, &text]);
    assert_eq!(
        summary(&http_route(&model, "default/multi/http[1]")),
        [
            ("v1".to_owned(), 100, addrs(&[19081])),
            ("v2".to_owned(), 0, addrs(&[19082])),
        ]
    );
    assert_eq!(
        summary(&http_route(&model, "default/multi/http[0]")).len(),
        2
    );
    // Two rollouts on two rules of one VirtualService: both added.
    let a = rollout("a", &target("multi", "tcp[0]"), STEPS);
    let b = rollout("b", &target("multi", "rest"), STEPS);
    let model = resolved(&[SERVICE, MULTI_VS, &b, &a]);
    let names: Vec<&str> = model.rollouts.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["default/a", "default/b"], "sorted by name");
    assert_eq!(
        summary(&tcp_route(&model, "default/multi/tcp[0]/port 9000")).len(),
        2
    );
    assert_eq!(
        summary(&http_route(&model, "default/multi/http[1]")).len(),
        2
    );
}

#[test]
fn targets_that_do_not_resolve_are_refused() {
    let r = |target_lines: &str| rollout("r", target_lines, STEPS);
    resolve_refused(
        &[SERVICE, MULTI_VS, &r(&target("nothing", ""))],
        "spec.target.virtualService",
        "VirtualService default/nothing not found: define it, or fix spec.target.virtualService",
    );
    let elsewhere = rollout("r", &target("multi", "tcp[0]"), STEPS).replace(
        "metadata: {name: r}",
        "metadata: {name: r, namespace: shop}",
    );
    resolve_refused(
        &[SERVICE, MULTI_VS, &elsewhere],
        "spec.target.virtualService",
        "VirtualService shop/multi not found (there is default/multi: name its namespace in \
         spec.target.namespace): define it, or fix spec.target.virtualService",
    );
    // Named with its namespace, it resolves: the Rollout is shop's, the
    // rule default's.
    let across = elsewhere.replace(
        "    virtualService: multi",
        "    virtualService: multi\n    namespace: default",
    );
    let model = resolved(&[SERVICE, MULTI_VS, &across]);
    assert_eq!(model.rollouts[0].name, "shop/r");
    assert_eq!(model.rollouts[0].virtual_service, "default/multi");
    assert_eq!(model.rollouts[0].route, "default/multi/tcp[0]");
    resolve_refused(
        &[SERVICE, MULTI_VS, &r(&target("multi", ""))],
        "spec.target",
        "VirtualService default/multi has 4 rules (2 tcp, 2 http, 0 tls): name the target with \
         spec.target.route (tcp[N], http[N] or an http rule's name)",
    );
    resolve_refused(
        &[SERVICE, MULTI_VS, &r(&target("multi", "1"))],
        "spec.target.route",
        "route 1 is ambiguous: VirtualService default/multi has both http and tcp rules; write \
         http[1] or tcp[1]",
    );
    resolve_refused(
        &[SERVICE, MULTI_VS, &r(&target("multi", "tcp[2]"))],
        "spec.target.route",
        "VirtualService default/multi has no rule tcp[2] (its tcp rules: tcp[0] to tcp[1])",
    );
    resolve_refused(
        &[SERVICE, ONE_RULE_VS, &r(&target("tcp-only", "http[0]"))],
        "spec.target.route",
        "VirtualService default/tcp-only has no rule http[0] (it has no http rules)",
    );
    resolve_refused(
        &[SERVICE, ONE_RULE_VS, &r(&target("tcp-only", "3"))],
        "spec.target.route",
        "VirtualService default/tcp-only has no rule tcp[3] (its tcp rules: tcp[0])",
    );
    resolve_refused(
        &[SERVICE, MULTI_VS, &r(&target("multi", "last"))],
        "spec.target.route",
        "VirtualService default/multi has no http rule named \"last\" (named: first, rest): \
         write an http rule's name, tcp[N] or http[N]",
    );
    // A tls rule: the VirtualService itself is refused too.
    let tls_vs = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tls}
spec:
  hosts: [multi.local]
  tls:
  - match: [{port: 9000, sniHosts: [multi.local]}]
    route:
    - destination: {host: multi.local, port: {number: 9000}, subset: v1}
";
    resolve_refused(
        &[SERVICE, tls_vs, &r(&target("tls", ""))],
        "spec.target",
        "the target rule of VirtualService default/tls is a tls rule: tls rules are not \
         supported yet, and a Rollout targets a tcp or http rule",
    );
    // Destinations: a third subset, another host, no subset, twice.
    let third = MULTI_VS.replace(
        "      weight: 10\n",
        "      weight: 5\n    - destination: {host: multi.local, port: {number: 9001}, subset: \
         v3}\n      weight: 5\n",
    );
    resolve_refused(
        &[SERVICE, &third, &r(&target("multi", "tcp[1]"))],
        "spec.target.route",
        "VirtualService default/multi spec.tcp[1].route[2] goes to subset v3: the target \
         rule's destinations may only be the stable (v1) and canary (v2) subsets of \
         multi.local; remove it, or make it one of them",
    );
    let other_host = format!(
        "{}---\n{}",
        SERVICE
            .replace("multi", "other")
            .replace("127.100.0.9", "127.100.0.10"),
        MULTI_VS.replace(
            "{host: multi.local, port: {number: 9001}, subset: v2}",
            "{host: other.local, port: {number: 9001}, subset: v2}"
        )
    );
    resolve_refused(
        &[SERVICE, &other_host, &r(&target("multi", "tcp[1]"))],
        "spec.target.route",
        "VirtualService default/multi spec.tcp[1].route[1] goes to host other.local, and \
         route[0] to multi.local: a Rollout shifts traffic between two subsets of one host",
    );
    let no_subset = MULTI_VS.replace(
        "{host: multi.local, port: {number: 9000}, subset: v1}",
        "{host: multi.local, port: {number: 9000}}",
    );
    resolve_refused(
        &[SERVICE, &no_subset, &r(&target("multi", "tcp[0]"))],
        "spec.target.route",
        "VirtualService default/multi spec.tcp[0].route[0] goes to multi.local without a \
         subset: the target rule's destinations must be the stable (v1) and canary (v2) \
         subsets; add subset: v1",
    );
    let twice = MULTI_VS.replace(
        "{host: multi.local, port: {number: 9001}, subset: v2}",
        "{host: multi.local, port: {number: 9001}, subset: v1}",
    );
    resolve_refused(
        &[SERVICE, &twice, &r(&target("multi", "tcp[1]"))],
        "spec.target.route",
        "VirtualService default/multi spec.tcp[1].route[1] goes to subset v1 again: each of the \
         stable and canary subsets may be written once; merge the two",
    );
    let redirect = MULTI_VS.replace(
        "  - name: rest\n    route:\n    - destination: {host: multi.local, port: {number: \
         8080}, subset: v1}\n",
        "  - name: rest\n    redirect: {uri: /a}\n",
    );
    resolve_refused(
        &[SERVICE, &redirect, &r(&target("multi", "rest"))],
        "spec.target.route",
        "VirtualService default/multi spec.http[1] has no route destinations (it redirects or \
         answers directly): a Rollout shifts the weights of a rule's destinations",
    );
}

#[test]
fn both_subsets_must_be_in_the_hosts_destination_rule() {
    let t = target("multi", "tcp[0]").replace("canary: v2", "canary: v4");
    let errors = resolve_errors(&[SERVICE, MULTI_VS, &rollout("r", &t, STEPS)]);
    assert_eq!(
        messages(&errors),
        "rules/2.yaml: document 1 (Rollout default/r): spec.target.canary: subset \"v4\" not \
         found in DestinationRule default/multi (rules/0.yaml document 2) for host multi.local \
         (subsets: v1, v2, v3): add the subset there or fix the name (line 9)"
    );
    let without_rule = SERVICE.split("---\n").next().expect("the ServiceEntry");
    resolve_refused(
        &[
            without_rule,
            ONE_RULE_VS,
            &rollout("r", &target("tcp-only", ""), STEPS),
        ],
        "spec.target.stable",
        "subset \"v1\" not found: there is no DestinationRule for host multi.local; define one \
         with host: multi.local and subsets: [{name: v1, labels: {...}}]",
    );
}

#[test]
fn two_rollouts_of_one_rule_are_refused_naming_both() {
    let a = rollout("a", &target("multi", "tcp[1]"), STEPS);
    let b = rollout("b", &target("multi", "tcp[1]"), STEPS);
    let errors = resolve_errors(&[SERVICE, MULTI_VS, &a, &b]);
    assert_eq!(
        messages(&errors),
        "rules/3.yaml: document 1 (Rollout default/b): spec.target: VirtualService \
         default/multi tcp[1] is already the target of Rollout default/a (rules/2.yaml \
         document 1): one Rollout per rule; remove one of them, or target another rule (line 5)"
    );
    // The same rule by name and by index.
    let c = rollout("c", &target("multi", "http[1]"), STEPS);
    let d = rollout("d", &target("multi", "rest"), STEPS);
    let errors = resolve_errors(&[SERVICE, MULTI_VS, &c, &d]);
    assert_eq!(errors.len(), 1, "{}", messages(&errors));
    assert!(
        errors[0]
            .message
            .contains("http[1] is already the target of Rollout default/c")
    );
}

#[test]
fn metrics_must_fit_the_target_rules_protocol() {
    let tcp = rollout(
        "r",
        &target("multi", "tcp[0]"),
        "  analysis:\n    metrics: [{requestSuccessRate: {min: 99}}]\n  steps:\n  - analysis: \
         {metrics: [{connectionSuccessRate: {min: 99}}, {requestDurationP99: {max: 9}}]}\n",
    );
    let errors = resolve_errors(&[SERVICE, MULTI_VS, &tcp]);
    let got: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    assert_eq!(
        got,
        [
            "spec.analysis.metrics[0].requestSuccessRate: requestSuccessRate measures HTTP \
             requests through the L7 proxy, and the target rule tcp[0] of VirtualService \
             default/multi is a tcp rule (connections in the kernel): use connectionSuccessRate",
            "spec.steps[0].analysis.metrics[1].requestDurationP99: requestDurationP99 measures \
             HTTP requests through the L7 proxy, and the target rule tcp[0] of VirtualService \
             default/multi is a tcp rule (connections in the kernel): use connectionSuccessRate",
        ]
    );
    let http = rollout(
        "r",
        &target("multi", "rest"),
        "  analysis:\n    metrics: [{connectionSuccessRate: {min: 99}}, {prometheus: {address: \
         'http://127.0.0.1:9090', query: up, min: 1}}]\n  steps:\n  - setWeight: 100\n",
    );
    resolve_refused(
        &[SERVICE, MULTI_VS, &http],
        "spec.analysis.metrics[0].connectionSuccessRate",
        "connectionSuccessRate counts TCP connections in the kernel, and the target rule \
         http[1] of VirtualService default/multi is an http rule (requests through the L7 \
         proxy): use requestSuccessRate or requestDurationP99",
    );
    // prometheus fits both.
    let both = http.replace("{connectionSuccessRate: {min: 99}}, ", "");
    resolved(&[SERVICE, MULTI_VS, &both]);
}

#[test]
fn a_target_rule_that_makes_no_route_warns() {
    // tcp[1] of `shadowed` routes port 9000 again: tcp[0] has it.
    let shadowed = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shadowed}
spec:
  hosts: [multi.local]
  tcp:
  - match: [{port: 9000}]
    route:
    - destination: {host: multi.local, port: {number: 9000}, subset: v1}
  - match: [{port: 9000}]
    route:
    - destination: {host: multi.local, port: {number: 9000}, subset: v1}
";
    let text = rollout("r", &target("shadowed", "tcp[1]"), STEPS);
    let (model, warnings) = resolve_texts(&[SERVICE, shadowed, &text]);
    assert!(model.is_ok());
    assert!(
        warnings.iter().any(|w| w
            == "rules/2.yaml: document 1 (Rollout default/r): spec.target: the target rule \
                tcp[1] of VirtualService default/shadowed makes no route (no listener takes \
                it): the rollout changes no traffic (line 5)"),
        "{warnings:#?}"
    );
}

#[test]
fn the_digest_covers_the_spec_as_written_only() {
    let digest = |text: &str| checked(text).spec_digest;
    let base = digest(FULL);
    assert_eq!(base, digest(FULL), "the same text, the same digest");
    // Metadata, comments, quoting, flow or block style, key order: the same.
    let same = [
        FULL.replace(
            "name: tcp-echo\n  namespace: shop",
            "name: other\n  labels: {a: b}",
        ),
        FULL.replace("  steps:\n", "  # the steps\n  steps:\n"),
        FULL.replace("{duration: 30s}", "{duration: \"30s\"}"),
        FULL.replace("- pause: {}", "- pause:\n      {}"),
        FULL.replace(
            "    stable: v1\n    canary: v2\n",
            "    canary: v2\n    stable: v1\n",
        ),
        FULL.replace(
            "  target:\n    virtualService: tcp-echo\n    route: tcp[0]\n    stable: v1\n    \
             canary: v2\n",
            "",
        )
        .replace(
            "  steps:\n",
            "  target: {canary: v2, stable: v1, route: 'tcp[0]', virtualService: tcp-echo}\n  \
             steps:\n",
        ),
    ];
    for (i, text) in same.iter().enumerate() {
        assert_eq!(digest(text), base, "variant {i}:\n{text}");
    }
    // Any change of the spec: another digest.
    let different = [
        FULL.replace("- setWeight: 10\n", "- setWeight: 20\n"),
        FULL.replace("  - pause: {}\n", ""),
        FULL.replace("canary: v2", "canary: v3"),
        FULL.replace("minSamples: 20\n    metrics", "minSamples: 21\n    metrics"),
        FULL.replace("{duration: 45}", "{duration: 45s}"),
        FULL.replace("max: 0.5", "max: 0.25"),
    ];
    for (i, text) in different.iter().enumerate() {
        assert_ne!(digest(text), base, "variant {i}:\n{text}");
    }
}

#[test]
fn the_model_carries_the_digest_and_the_steps() {
    let text = rollout("r", &target("multi", "tcp[0]"), STEPS);
    let checked = checked(&text);
    let model = resolved(&[SERVICE, MULTI_VS, &text]);
    let rollout = only_rollout(&model);
    assert_eq!(rollout.spec_digest, checked.spec_digest);
    assert_eq!(rollout.steps, [Step::SetWeight(100)]);
    assert_eq!(rollout.analysis, None);
    assert_eq!(rollout.source, "rules/2.yaml");
    assert_eq!(
        (rollout.stable.as_str(), rollout.canary.as_str()),
        ("v1", "v2")
    );
}
