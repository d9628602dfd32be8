//! Reading the agent's `/metrics` page (Prometheus text).
//!
//! [`metric`] is for series that must exist: a missing one is an error, so
//! a renamed metric or label fails the test instead of reading as 0. Every
//! check of the tests reads series that exist (the agent exports each series
//! of the rules in force from the moment they are applied, at 0, and every
//! kernel event); the XDP families, which leave out slots the XDP gateway
//! never used, are read only after the flows. [`try_metric`] says whether a
//! series exists, for a wait on one that appears later.

/// The samples of metric `name` (the full sample name, e.g.
/// `istio_tcp_connections_opened_total`) whose labels include all of
/// `labels`, in a Prometheus text page, and their sum; `None` when no sample
/// matches. Counters and gauges here are whole numbers.
pub fn try_metric(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    let values: Vec<u64> = page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (sample, label_text) = series.split_once('{').unwrap_or((series, "}"));
            if sample != name {
                return None;
            }
            labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
                .then(|| {
                    value
                        .parse::<u64>()
                        .unwrap_or_else(|e| panic!("{name}: value {value} is not a count: {e}"))
                })
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The sum of every sample of metric `name` whose labels include all of
/// `labels` (see [`try_metric`]). Panics when there is no such sample: the
/// series must exist (the agent exports every series of the rules in force
/// from the moment they are applied, at 0).
pub fn metric(page: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    try_metric(page, name, labels).unwrap_or_else(|| {
        panic!("no sample of {name} with the labels {labels:?} in the page:\n{page}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# TYPE a counter\n\
        a_total{x=\"1\",y=\"2\"} 3\n\
        a_total{x=\"1\",y=\"3\"} 4\n\
        b 0\n";

    #[test]
    fn sums_matching_samples() {
        assert_eq!(metric(PAGE, "a_total", &[("x", "1")]), 7);
        assert_eq!(metric(PAGE, "a_total", &[("y", "3")]), 4);
        assert_eq!(metric(PAGE, "b", &[]), 0);
    }

    #[test]
    #[should_panic(expected = "no sample of a_total")]
    fn a_missing_series_is_an_error() {
        // A renamed label must not read as 0.
        metric(PAGE, "a_total", &[("x", "2")]);
    }

    #[test]
    fn try_metric_says_whether_the_series_exists() {
        assert_eq!(try_metric(PAGE, "a_total", &[("x", "2")]), None);
        assert_eq!(try_metric(PAGE, "c_total", &[]), None);
        assert_eq!(try_metric(PAGE, "b", &[]), Some(0));
    }
}
