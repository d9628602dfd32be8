//! The per-slot families (Istio's TCP metrics and the failed connects),
//! written as OpenMetrics text straight from each slot's label text, built
//! once per slot ([`SlotInfo::text`]): at 10 000 services with traffic they
//! are 36 MB of series, and encoding each label pair at every scrape was
//! most of a scrape.
//!
//! The format is prometheus-client's (the rest of the page): `# HELP`,
//! `# TYPE`, then `name_total{labels} value` per series; label values
//! escaped as it escapes them.
//!
//! Slots with one label set (the endpoints of one subset) are summed by
//! sorting them by their text and adding up neighbours: hashing every
//! slot's ~800 bytes of label text (and growing the table as it filled)
//! was a third of a scrape at 10 000 services.

use std::{fmt::Write as _, net::SocketAddr, sync::Arc};

use traffic_shift_common::EndpointStats;
use traffic_shift_datapath::KernelCounters;
use traffic_shift_proxy::EndpointCounts;

use super::{
    CONNECTIONS_FAILED, Family, SlotInfo, TCP_CONNECTIONS_CLOSED, TCP_CONNECTIONS_OPENED,
    TCP_RECEIVED_BYTES, TCP_SENT_BYTES,
};

/// `name="value"` pairs, comma-separated, values escaped: a label set as
/// the text between `{` and `}`.
pub fn label_text<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (i, (name, value)) in labels.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_into(&mut out, value);
        out.push('"');
    }
    out
}

/// A label value as OpenMetrics quotes it: `\`, `"` and newlines escaped.
fn escape_into(out: &mut String, value: &str) {
    // Most values need no escape: copied whole.
    if !value.contains(['\\', '"', '\n']) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Per Istio label set: what its slots counted.
#[derive(Clone, Copy, Default)]
struct TcpSums {
    opened: u64,
    closed: u64,
    failed: u64,
    sent: u64,
    received: u64,
}

impl std::ops::AddAssign for TcpSums {
    fn add_assign(&mut self, other: Self) {
        self.opened += other.opened;
        self.closed += other.closed;
        self.failed += other.failed;
        self.sent += other.sent;
        self.received += other.received;
    }
}

/// `rows` sorted by key, each key once with the sum of its values.
fn summed<K: Ord, V: std::ops::AddAssign>(mut rows: Vec<(K, V)>) -> Vec<(K, V)> {
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(K, V)> = Vec::with_capacity(rows.len());
    for (key, value) in rows {
        match out.last_mut() {
            Some((last, sum)) if *last == key => *sum += value,
            _ => out.push((key, value)),
        }
    }
    out
}

/// The three reasons of a failed connect, in `reason` label order.
#[derive(Clone, Copy, Default)]
struct FailedBy([u64; 3]);

impl std::ops::AddAssign for FailedBy {
    fn add_assign(&mut self, other: Self) {
        for (n, add) in self.0.iter_mut().zip(other.0) {
            *n += add;
        }
    }
}

/// Writes Istio's TCP metrics and the failed connects of `slots` to `out`,
/// with the counts of the routes on unix sockets (`unix`: label text and
/// counts per endpoint, which the kernel does not see).
pub fn encode_tcp(
    out: &mut String,
    slots: &[(u32, Arc<SlotInfo>)],
    kernel: &KernelCounters,
    unix: &[(String, EndpointCounts)],
) {
    let mut sums: Vec<(&str, TcpSums)> = Vec::with_capacity(slots.len() + unix.len());
    for (labels, c) in unix.iter().filter(|(_, c)| c.opened > 0) {
        sums.push((
            labels,
            TcpSums {
                opened: c.opened,
                closed: c.closed.saturating_sub(c.failed),
                failed: c.failed,
                sent: c.sent,
                received: c.received,
            },
        ));
    }
    let mut failed: Vec<((&str, &str, SocketAddr), FailedBy)> = Vec::with_capacity(slots.len());
    for (id, slot) in slots {
        let Ok(s) = kernel.stats(*id) else { continue };
        if s == EndpointStats::default() {
            continue;
        }
        sums.push((
            &slot.text,
            TcpSums {
                opened: s.opened,
                closed: s.closed.saturating_sub(s.failed()),
                failed: s.failed(),
                sent: s.response_bytes,
                received: s.request_bytes,
            },
        ));
        failed.push((
            (&slot.service, &slot.version, slot.endpoint),
            FailedBy([s.failed_refused, s.failed_timeout, s.failed_other]),
        ));
    }
    let sums = summed(sums);
    let each = |f: fn(&TcpSums) -> u64| sums.iter().map(move |(l, s)| (*l, "-", f(s)));
    family(out, &TCP_CONNECTIONS_OPENED, each(|s| s.opened));
    // Envoy's flag for a failed upstream connect: UF.
    let failed_connects = sums
        .iter()
        .filter(|(_, s)| s.failed > 0)
        .map(|(l, s)| (*l, "UF", s.failed));
    family(
        out,
        &TCP_CONNECTIONS_CLOSED,
        each(|s| s.closed).chain(failed_connects),
    );
    family(out, &TCP_SENT_BYTES, each(|s| s.sent));
    family(out, &TCP_RECEIVED_BYTES, each(|s| s.received));

    let failed = summed(failed);
    if failed.is_empty() {
        return;
    }
    descriptor(out, &CONNECTIONS_FAILED);
    for ((service, version, endpoint), FailedBy(n)) in failed {
        let endpoint = endpoint.to_string();
        let labels = label_text([
            ("destination_service", service),
            ("destination_version", version),
            ("endpoint", &endpoint),
        ]);
        for (reason, n) in ["refused", "timeout", "other"].into_iter().zip(n) {
            let _ = writeln!(
                out,
                "{}_total{{{labels},reason=\"{reason}\"}} {n}",
                CONNECTIONS_FAILED.name
            );
        }
    }
}

/// A counter family's descriptor lines.
fn descriptor(out: &mut String, family: &Family) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n",
        name = family.name,
        help = family.help
    );
}

/// A counter family: a sample per (label text, `response_flags`, value);
/// none, the family is left out.
fn family<'a>(
    out: &mut String,
    exported: &Family,
    values: impl Iterator<Item = (&'a str, &'a str, u64)>,
) {
    let mut values = values.peekable();
    if values.peek().is_none() {
        return;
    }
    descriptor(out, exported);
    for (labels, flags, value) in values {
        out.push_str(exported.name);
        out.push_str("_total{");
        out.push_str(labels);
        out.push_str(",response_flags=\"");
        out.push_str(flags);
        out.push_str("\"} ");
        out.push_str(itoa::Buffer::new().format(value));
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{
        collector::Collector,
        encoding::{DescriptorEncoder, EncodeMetric as _},
        metrics::{MetricType, counter::ConstCounter},
        registry::Registry,
    };

    use super::*;

    /// The family as prometheus-client writes it (the rest of the page).
    #[derive(Debug)]
    struct Reference(Vec<(Vec<(&'static str, String)>, u64)>);

    impl Collector for Reference {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let f = &TCP_CONNECTIONS_OPENED;
            let mut family =
                encoder.encode_descriptor(f.name, f.help, None, MetricType::Counter)?;
            for (labels, value) in &self.0 {
                ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
            }
            Ok(())
        }
    }

    #[test]
    fn a_family_is_written_as_prometheus_client_writes_it() {
        let series = vec![
            (
                vec![
                    ("destination_service", "a.b.local".to_owned()),
                    ("destination_version", "v\"1\"".to_owned()),
                    ("response_flags", "-".to_owned()),
                ],
                3,
            ),
            (
                vec![
                    ("destination_service", "c.local".to_owned()),
                    ("destination_version", "v2".to_owned()),
                    ("response_flags", "-".to_owned()),
                ],
                0,
            ),
        ];
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Reference(series.clone())));
        let mut want = String::new();
        prometheus_client::encoding::text::encode(&mut want, &registry).expect("encodes");
        let texts: Vec<String> = series
            .iter()
            .map(|(labels, _)| {
                label_text(
                    labels
                        .iter()
                        .filter(|(k, _)| *k != "response_flags")
                        .map(|(k, v)| (*k, v.as_str())),
                )
            })
            .collect();
        let mut got = String::new();
        family(
            &mut got,
            &TCP_CONNECTIONS_OPENED,
            texts
                .iter()
                .zip(&series)
                .map(|(t, (_, v))| (t.as_str(), "-", *v)),
        );
        got.push_str("# EOF\n");
        assert_eq!(got, want);
    }

    #[test]
    fn rows_with_one_key_are_summed_in_key_order() {
        let rows = vec![("b", 1), ("a", 2), ("b", 3), ("c", 4), ("a", 5)];
        assert_eq!(summed(rows), vec![("a", 7), ("b", 4), ("c", 4)]);
        assert_eq!(summed(Vec::<(&str, u64)>::new()), vec![]);
    }

    #[test]
    fn label_values_are_escaped_as_openmetrics_quotes_them() {
        assert_eq!(
            label_text([("a", "x"), ("b", "q\"\\\nz")]),
            "a=\"x\",b=\"q\\\"\\\\\\nz\""
        );
    }
}
