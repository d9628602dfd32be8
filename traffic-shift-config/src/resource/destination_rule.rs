//! `DestinationRule`: its host, subsets and traffic policies (Istio's
//! `ValidateDestinationRule`; the policies are checked in `policy`).

use std::collections::BTreeSet;

use crate::{
    check::{Check, Checked},
    common::Labels,
    dto,
    error::fp,
    names::{is_dns1123_label_any_case, validate_domain},
    policy::{self, TrafficPolicy},
    source::Source,
};

#[derive(Clone, Debug)]
pub struct DestinationRule {
    pub source: Source,
    /// As written; `resolve` qualifies a short name with the namespace.
    pub host: String,
    /// `spec.trafficPolicy`.
    pub traffic_policy: TrafficPolicy,
    pub subsets: Vec<Subset>,
    /// `exportTo`, checked; applied by `resolve_in` (`crate::visibility`).
    pub export_to: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Subset {
    pub name: String,
    /// Empty: every endpoint of the host (Istio requires no labels).
    pub labels: Labels,
    /// The subset's `trafficPolicy`, which overrides the rule's.
    pub traffic_policy: TrafficPolicy,
}

/// Istio's `ValidateDestinationRule`.
pub(super) fn validate(source: Source, spec: dto::DestinationRuleSpec) -> Checked<DestinationRule> {
    let mut cx = Check::new(&source);
    let host = spec.host.unwrap_or_default();
    if host.is_empty() {
        cx.error(
            fp!("spec.host"),
            "empty domain name not allowed: set spec.host to the ServiceEntry host this rule is for",
        );
    } else if let Err(message) = validate_domain(&host) {
        cx.error(fp!("spec.host"), message);
    }
    let traffic_policy =
        policy::traffic_policy(&mut cx, &fp!("spec.trafficPolicy"), spec.traffic_policy);

    let mut names = BTreeSet::new();
    let mut subsets = Vec::new();
    for (i, subset) in spec.subsets.unwrap_or_default().into_iter().enumerate() {
        let name = subset.name.unwrap_or_default();
        let name_path = fp!("spec.subsets[{i}].name");
        if !names.insert(name.clone()) {
            cx.error(name_path, format!("duplicate subset names: {name}"));
        } else if name.is_empty() {
            cx.error(name_path, "subset name cannot be empty");
        } else if !is_dns1123_label_any_case(&name) {
            cx.error(
                name_path,
                format!(
                    "subset name is invalid: {name}: use letters, digits and '-', starting and \
                     ending with a letter or digit"
                ),
            );
        }
        let labels = subset.labels.unwrap_or_default();
        cx.labels(&fp!("spec.subsets[{i}].labels"), &labels);
        let traffic_policy = policy::traffic_policy(
            &mut cx,
            &fp!("spec.subsets[{i}].trafficPolicy"),
            subset.traffic_policy,
        );
        subsets.push(Subset {
            name,
            labels,
            traffic_policy,
        });
    }
    let export_to = spec.export_to.unwrap_or_default();
    cx.export_to(&export_to, false);
    // Checked as Istio's `validateWorkloadSelector`; not applied (the rule
    // applies to every client here).
    if let Some(selector) = spec.workload_selector {
        let labels = selector.match_labels.unwrap_or_default();
        for (key, value) in &labels {
            let path = fp!("spec.workloadSelector.matchLabels").key(key);
            if key.is_empty() {
                cx.error(
                    path.clone(),
                    format!("empty key is not supported in selector: \"{key}={value}\""),
                );
            }
            if key.contains('*') || value.contains('*') {
                cx.error(
                    path,
                    format!("wildcard is not supported in selector: \"{key}={value}\""),
                );
            }
        }
        if labels.is_empty() {
            cx.warn(
                fp!("spec.workloadSelector"),
                "workload selector specified without labels",
            );
        }
    }
    let warnings = cx.finish()?;
    Ok((
        DestinationRule {
            source,
            host,
            traffic_policy,
            subsets,
            export_to,
        },
        warnings,
    ))
}
