//! Reading the agent's `/metrics` page (Prometheus text).

/// The sum of every sample of metric `name` (the full sample name, e.g.
/// `istio_tcp_connections_opened_total`) whose labels include all of
/// `labels`, in a Prometheus text page. Counters and gauges here are whole
/// numbers.
pub fn metric(page: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    page.lines()
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
        .sum()
}
