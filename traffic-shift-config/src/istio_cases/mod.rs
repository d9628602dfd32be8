//! Istio's own validation table tests (istio/istio
//! `pkg/config/validation/validation_test.go` and the CRD fixtures of
//! `pkg/config/validation/testdata/crds/`), ported case by case: each case
//! is named after its Istio test and case, its input written as YAML, and
//! Istio's verdict the bar: valid (with or without a warning), or refused
//! with (a substring of) Istio's error text in one of our messages.
//!
//! Istio's tests give no error text; the words expected here are those of
//! the Istio code the case exercises (`validation.go`), or, for the CRD
//! fixtures, of the webhook check behind the fixture's CEL message.

#![expect(
    clippy::too_many_lines,
    reason = "tables of cases: Istio's test cases, one entry each"
)]

mod delegate;
mod destination_rule;
mod gateway;
mod http_fault;
mod http_headers;
mod http_options;
mod http_route;
mod port_and_header_names;
mod route_destination;
mod service_entry;
mod traffic_policy;
mod virtual_service;
mod workload_entry;

use std::path::Path;

use crate::{RulesFile, parse_file_all};

/// Istio's verdict on a case.
#[derive(Clone, Copy, Debug)]
pub(super) enum Verdict {
    /// Valid, no warning (Istio: `valid: true`, `warning: false`).
    Valid,
    /// Valid, with a warning carrying these words (`valid: true, warning: true`).
    Warns(&'static str),
    /// Valid; warnings not part of Istio's test (the CRD fixtures).
    Accepted,
    /// Refused, one of the errors carrying these words (`valid: false`).
    Refused(&'static str),
}

/// One ported case: `name` is Istio's test function and case name, `text`
/// the YAML document(s).
pub(super) struct Case {
    pub name: &'static str,
    pub text: String,
    pub verdict: Verdict,
}

pub(super) fn case(name: &'static str, text: String, verdict: Verdict) -> Case {
    Case {
        name,
        text,
        verdict,
    }
}

/// A document of `kind` named `r` in `default` with this `spec` (indented
/// by two).
pub(super) fn document(kind: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata: {{name: r, namespace: default}}\nspec:\n{spec}"
    )
}

/// A `VirtualService` for `foo.bar` whose only `http` rule is
/// `{<fields>}`: where Istio's HTTP route tests put the field under test.
pub(super) fn http_rule_case(name: &'static str, fields: &str, verdict: Verdict) -> Case {
    case(
        name,
        document(
            "VirtualService",
            &format!("  hosts: [foo.bar]\n  http:\n  - {{{fields}}}\n"),
        ),
        verdict,
    )
}

fn render(file: &Result<RulesFile, Vec<crate::ConfigError>>) -> String {
    match file {
        Ok(file) => {
            let warnings: Vec<String> = file.warnings.iter().map(ToString::to_string).collect();
            format!("accepted, warnings: {warnings:#?}")
        }
        Err(errors) => {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            format!("refused: {errors:#?}")
        }
    }
}

/// Runs every case; panics listing each case whose verdict differs from
/// Istio's.
pub(super) fn run(cases: &[Case]) {
    let mut faults = Vec::new();
    for case in cases {
        let got = parse_file_all(Path::new("rules/istio.yaml"), &case.text);
        let matches = match (&got, case.verdict) {
            (Ok(file), Verdict::Valid) => file.warnings.is_empty(),
            (Ok(file), Verdict::Warns(words)) => file
                .warnings
                .iter()
                .any(|warning| warning.message.contains(words)),
            (Ok(_), Verdict::Accepted) => true,
            (Err(errors), Verdict::Refused(words)) => {
                errors.iter().any(|error| error.message.contains(words))
            }
            _ => false,
        };
        if !matches {
            faults.push(format!(
                "{}: Istio: {:?}; we: {}\n{}",
                case.name,
                case.verdict,
                render(&got),
                case.text
            ));
        }
    }
    assert!(
        faults.is_empty(),
        "{} of {} Istio cases differ:\n\n{}",
        faults.len(),
        cases.len(),
        faults.join("\n\n")
    );
}
