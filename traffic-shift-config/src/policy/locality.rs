//! `loadBalancer.localityLbSetting`, checked as Istio's
//! `ValidateLocalityLbSetting` and `validateLocalities` check it (the same
//! order, the same words). Not applied: every endpoint of a node is in the
//! node's locality.

use std::collections::{BTreeMap, BTreeSet};

use crate::{check::Check, dto, error::FieldPath};

/// Istio's topology labels (`label.LabelTopologyRegion`, `...Zone`,
/// `...Subzone`): `failoverPriority` may not name them with `failover`.
const TOPOLOGY_LABELS: [&str; 3] = [
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

/// Checks `setting` (at `base`); `outlier`: the same traffic policy sets
/// `outlierDetection` (failover needs it: a warning otherwise).
pub(super) fn check(
    cx: &mut Check,
    base: &FieldPath,
    setting: &dto::LocalityLbSetting,
    outlier: bool,
) {
    let distribute = setting.distribute.as_deref().unwrap_or_default();
    let failover = setting.failover.as_deref().unwrap_or_default();
    let priority = setting.failover_priority.as_deref().unwrap_or_default();
    if !distribute.is_empty() && !failover.is_empty() {
        cx.error(
            base.clone(),
            "can not simultaneously specify 'distribute' and 'failover': keep one",
        );
        return;
    }
    if !failover.is_empty()
        && let Some((i, label)) = priority
            .iter()
            .enumerate()
            .find(|(_, label)| TOPOLOGY_LABELS.contains(&label.as_str()))
    {
        cx.error(
            base.key("failoverPriority").index(i),
            format!(
                "can not simultaneously set 'failover' and topology label '{label}' in \
                 'failover_priority'"
            ),
        );
        return;
    }

    let mut sources = Vec::with_capacity(distribute.len());
    for (i, rule) in distribute.iter().enumerate() {
        let path = base.key("distribute").index(i);
        sources.push(rule.from.as_deref().unwrap_or_default());
        let to = rule.to.clone().unwrap_or_default();
        let mut total = 0;
        for (locality, weight) in &to {
            if !(1..=100).contains(weight) {
                cx.error(
                    path.key("to").key(locality),
                    format!("locality weight must be in range [1, 100], not {weight}"),
                );
                return;
            }
            total += weight;
        }
        if total != 100 {
            cx.error(
                path.key("to"),
                format!("total locality weight {total} != 100"),
            );
            return;
        }
        let targets: Vec<&str> = to.keys().map(String::as_str).collect();
        if let Err(message) = localities(&targets) {
            cx.error(path.key("to"), message);
        }
    }
    if let Err(message) = localities(&sources) {
        cx.error(base.key("distribute"), message);
    }

    if (!failover.is_empty() || !priority.is_empty()) && !outlier {
        cx.warn(
            base.clone(),
            "outlier detection policy must be provided for failover: add outlierDetection to \
             this traffic policy",
        );
    }
    for (i, rule) in failover.iter().enumerate() {
        let path = base.key("failover").index(i);
        let from = rule.from.as_deref().unwrap_or_default();
        let to = rule.to.as_deref().unwrap_or_default();
        if from == to {
            cx.error(
                path.clone(),
                "locality lb failover settings must specify different regions",
            );
        }
        if from.contains('/') || to.contains('/') {
            cx.error(path.clone(), "locality lb failover only specify region");
        }
        if from.contains('*') || to.contains('*') {
            cx.error(
                path,
                "locality lb failover region should not contain '*' wildcard",
            );
        }
    }
}

/// What one region (or zone) of [`localities`] covers so far: all of it,
/// or these parts.
#[derive(Default)]
struct Covered<T> {
    all: bool,
    parts: T,
}

type Zones<'a> = BTreeMap<&'a str, Covered<BTreeSet<&'a str>>>;

/// Istio's `validateLocalities`: `region`, `region/zone` or
/// `region/zone/subzone`, a `*` only as the last character, none empty,
/// and no locality inside one listed before it (or listed twice).
fn localities(localities: &[&str]) -> Result<(), String> {
    let mut regions: BTreeMap<&str, Covered<Zones>> = BTreeMap::new();
    for &locality in localities {
        let overlap = || format!("locality {locality} overlap with previous specified ones");
        let stars = locality.matches('*').count();
        if stars > 1 || (stars == 1 && !locality.ends_with('*')) {
            return Err(format!(
                "locality {locality} wildcard '*' number can not exceed 1 and must be in the end"
            ));
        }
        if regions.contains_key("*") {
            return Err(overlap());
        }
        let items: Vec<&str> = locality.splitn(3, '/').collect();
        if items.iter().any(|item| item.is_empty()) {
            return Err(format!(
                "locality {locality} must not contain empty region/zone/subzone info"
            ));
        }
        let region = regions.entry(items[0]);
        match items[1..] {
            [] => {
                if matches!(region, std::collections::btree_map::Entry::Occupied(_)) {
                    return Err(overlap());
                }
                region.or_default().all = true;
            }
            [zone] => {
                let region = region.or_default();
                if region.all || region.parts.contains_key("*") || region.parts.contains_key(zone) {
                    return Err(overlap());
                }
                region.parts.entry(zone).or_default().all = true;
            }
            [zone, subzone] => {
                let region = region.or_default();
                if region.all || region.parts.contains_key("*") {
                    return Err(overlap());
                }
                let zone = region.parts.entry(zone).or_default();
                if zone.all || zone.parts.contains("*") || !zone.parts.insert(subzone) {
                    return Err(overlap());
                }
            }
            _ => unreachable!("splitn(3) gives at most 3 items"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::localities;

    /// Istio's `TestValidateLocalities`, every case.
    #[test]
    fn istio_validate_localities() {
        let cases: [(&str, &[&str], bool); 9] = [
            ("multi wildcard locality", &["*/zone/*"], false),
            ("wildcard not in suffix", &["*/zone"], false),
            ("explicit wildcard region overlap", &["*", "a/b/c"], false),
            ("implicit wildcard region overlap", &["a", "a/b/c"], false),
            ("explicit wildcard zone overlap", &["a/*", "a/b/c"], false),
            ("implicit wildcard zone overlap", &["a/b", "a/b/c"], false),
            (
                "explicit wildcard subzone overlap",
                &["a/b/*", "a/b/c"],
                false,
            ),
            (
                "implicit wildcard subzone overlap",
                &["a/b", "a/b/c"],
                false,
            ),
            (
                "valid localities",
                &["a1/*", "a2/*", "a3/b3/c3", "a4/b4", "a5/b5/*"],
                true,
            ),
        ];
        for (name, list, valid) in cases {
            assert_eq!(
                localities(list).is_ok(),
                valid,
                "TestValidateLocalities/{name}: {:?}",
                localities(list)
            );
        }
        assert_eq!(
            localities(&["a/b", "a/b/c"]).unwrap_err(),
            "locality a/b/c overlap with previous specified ones"
        );
        assert_eq!(
            localities(&["*/zone"]).unwrap_err(),
            "locality */zone wildcard '*' number can not exceed 1 and must be in the end"
        );
        assert_eq!(
            localities(&["a//c"]).unwrap_err(),
            "locality a//c must not contain empty region/zone/subzone info"
        );
    }
}
