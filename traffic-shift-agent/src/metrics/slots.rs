//! The per-slot families (Istio's TCP metrics and the failed connects),
//! written as OpenMetrics text straight from each slot's label text, built
//! once per label set ([`SlotInfo::text`]): at 10 000 services with traffic they
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

use std::{borrow::Cow, fmt::Write as _, net::SocketAddr, sync::Arc};

use traffic_shift_common::EndpointStats;
use traffic_shift_datapath::KernelCounters;
use traffic_shift_proxy::EndpointCounts;

use traffic_shift_config::labels::{ISTIO_LABEL_NAMES, IstioLabels};

use super::{
    CONNECTIONS_FAILED, Family, SlotInfo, TCP_CONNECTIONS_CLOSED, TCP_CONNECTIONS_OPENED,
    TCP_RECEIVED_BYTES, TCP_SENT_BYTES,
};

/// Istio's label set as its values alone, escaped, one per line, in
/// [`ISTIO_LABEL_NAMES`] order: ~150 bytes where the label text is ~750,
/// kept per series (100 000 of them at 100 000 services with traffic on
/// every one). [`line`] writes the names back in.
pub fn istio_values(labels: &IstioLabels) -> String {
    debug_assert!(labels.0.iter().map(|(k, _)| k).eq(ISTIO_LABEL_NAMES.iter()));
    let mut out = String::new();
    for (i, (_, value)) in labels.0.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        escape_into(&mut out, value);
    }
    out
}

/// The value of label `name` (of [`ISTIO_LABEL_NAMES`]) in `values`
/// ([`istio_values`]), escaped.
pub fn istio_value<'a>(values: &'a str, name: &str) -> &'a str {
    ISTIO_LABEL_NAMES
        .iter()
        .zip(values.split('\n'))
        .find_map(|(n, value)| (*n == name).then_some(value))
        .unwrap_or_default()
}

/// A label value as it was before [`escape_into`].
pub fn unescape(value: &str) -> Cow<'_, str> {
    if !value.contains('\\') {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(c) => out.push(c),
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
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

/// The labels of the failed connects: service, version (escaped),
/// endpoint.
type FailedKey = (Box<str>, Box<str>, SocketAddr);

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

/// Istio's TCP metrics and the failed connects of some slots, summed per
/// label set when taken and written a piece at a time: at 100 000 services
/// with traffic the page is ~370 MB, which a scrape never holds whole.
pub struct TcpPage {
    /// Per Istio label set (its values, [`istio_values`]), in that order.
    sums: Vec<(Arc<str>, TcpSums)>,
    /// Per (service, version, endpoint), in that order.
    failed: Vec<(FailedKey, FailedBy)>,
    /// Where the next row is: part (a family, or the failed connects of the
    /// closed family), row.
    at: (usize, usize),
}

/// The page's parts, in order: the family each begins with (none: it goes
/// on with the family before it).
const PARTS: [Option<&Family>; 6] = [
    Some(&TCP_CONNECTIONS_OPENED),
    Some(&TCP_CONNECTIONS_CLOSED),
    // The closed family's failed connects: Envoy's flag for them is UF.
    None,
    Some(&TCP_SENT_BYTES),
    Some(&TCP_RECEIVED_BYTES),
    Some(&CONNECTIONS_FAILED),
];

impl TcpPage {
    /// The sums of `slots` as the kernel counts them now, with the counts
    /// of the routes on unix sockets (`unix`: label values and counts per
    /// endpoint, which the kernel does not see).
    pub fn new(
        slots: &[(u32, Arc<SlotInfo>)],
        kernel: &KernelCounters,
        unix: Vec<(String, EndpointCounts)>,
    ) -> Self {
        let mut sums: Vec<(Arc<str>, TcpSums)> = Vec::with_capacity(slots.len() + unix.len());
        for (labels, c) in unix.into_iter().filter(|(_, c)| c.opened > 0) {
            sums.push((
                labels.into(),
                TcpSums {
                    opened: c.opened,
                    closed: c.closed.saturating_sub(c.failed),
                    failed: c.failed,
                    sent: c.sent,
                    received: c.received,
                },
            ));
        }
        let mut failed = Vec::with_capacity(slots.len());
        for (id, slot) in slots {
            let Ok(s) = kernel.stats(*id) else { continue };
            if s == EndpointStats::default() {
                continue;
            }
            sums.push((
                Arc::clone(&slot.values),
                TcpSums {
                    opened: s.opened,
                    closed: s.closed.saturating_sub(s.failed()),
                    failed: s.failed(),
                    sent: s.response_bytes,
                    received: s.request_bytes,
                },
            ));
            failed.push((
                (slot.service().into(), slot.version().into(), slot.endpoint),
                FailedBy([s.failed_refused, s.failed_timeout, s.failed_other]),
            ));
        }
        Self::of(sums, failed)
    }

    /// The page of these rows, each summed per key.
    fn of(sums: Vec<(Arc<str>, TcpSums)>, failed: Vec<(FailedKey, FailedBy)>) -> Self {
        Self {
            sums: summed(sums),
            failed: summed(failed),
            at: (0, 0),
        }
    }

    /// Writes rows to `out` until it holds `budget` bytes or the page ends;
    /// whether rows are left.
    pub fn write_some(&mut self, out: &mut String, budget: usize) -> bool {
        while out.len() < budget {
            let (part, row) = self.at;
            let Some(begins) = PARTS.get(part) else {
                return false;
            };
            let rows = if part + 1 == PARTS.len() {
                self.failed.len()
            } else {
                self.sums.len()
            };
            if row >= rows {
                self.at = (part + 1, 0);
                continue;
            }
            if row == 0
                && let Some(family) = begins
            {
                descriptor(out, family);
            }
            self.write_row(out, part, row);
            self.at.1 += 1;
        }
        true
    }

    fn write_row(&self, out: &mut String, part: usize, row: usize) {
        if let Some(((service, version, endpoint), FailedBy(n))) =
            self.failed.get(row).filter(|_| part + 1 == PARTS.len())
        {
            // (The values escaped already.)
            for (reason, n) in ["refused", "timeout", "other"].into_iter().zip(n) {
                let _ = writeln!(
                    out,
                    "{}_total{{destination_service=\"{service}\",destination_version=\"{version}\",\
                     endpoint=\"{endpoint}\",reason=\"{reason}\"}} {n}",
                    CONNECTIONS_FAILED.name
                );
            }
            return;
        }
        let (labels, s) = &self.sums[row];
        match part {
            0 => line(out, &TCP_CONNECTIONS_OPENED, labels, "-", s.opened),
            1 => line(out, &TCP_CONNECTIONS_CLOSED, labels, "-", s.closed),
            2 if s.failed > 0 => line(out, &TCP_CONNECTIONS_CLOSED, labels, "UF", s.failed),
            3 => line(out, &TCP_SENT_BYTES, labels, "-", s.sent),
            4 => line(out, &TCP_RECEIVED_BYTES, labels, "-", s.received),
            _ => {}
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

/// A sample of an Istio counter family: its label set's values
/// ([`istio_values`]), `response_flags`, value.
fn line(out: &mut String, family: &Family, values: &str, flags: &str, value: u64) {
    out.push_str(family.name);
    out.push_str("_total{");
    for (name, value) in ISTIO_LABEL_NAMES.iter().zip(values.split('\n')) {
        out.push_str(name);
        out.push_str("=\"");
        out.push_str(value);
        out.push_str("\",");
    }
    out.push_str("response_flags=\"");
    out.push_str(flags);
    out.push_str("\"} ");
    out.push_str(itoa::Buffer::new().format(value));
    out.push('\n');
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

    /// Istio's labels for `host`, its endpoint's version `version`.
    fn istio(host: &str, version: &str) -> IstioLabels {
        let reporter = traffic_shift_config::labels::Reporter {
            route_key: "default/r",
            gateway: None,
            protocol: "tcp",
        };
        let endpoint =
            std::collections::BTreeMap::from([("version".to_owned(), version.to_owned())]);
        reporter.labels(Some(host), &endpoint)
    }

    #[test]
    fn a_family_is_written_as_prometheus_client_writes_it() {
        let series = [
            (istio("a.b.local", "v\"1\"\n\\"), 3),
            (istio("c.local", "v2"), 0),
        ];
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Reference(
            series
                .iter()
                .map(|(labels, n)| (labels.with("response_flags", "-"), *n))
                .collect(),
        )));
        let mut want = String::new();
        prometheus_client::encoding::text::encode(&mut want, &registry).expect("encodes");
        let mut got = String::new();
        descriptor(&mut got, &TCP_CONNECTIONS_OPENED);
        for (labels, value) in &series {
            line(
                &mut got,
                &TCP_CONNECTIONS_OPENED,
                &istio_values(labels),
                "-",
                *value,
            );
        }
        got.push_str("# EOF\n");
        assert_eq!(got, want);
        assert!(got.contains(r#"destination_version="v\"1\"\n\\""#), "{got}");
    }

    /// A page of `n` label sets, every other one with failed connects.
    fn page(n: usize) -> TcpPage {
        let mut sums = Vec::new();
        let mut failed = Vec::new();
        for i in 0..n {
            let service = format!("s{i}.local");
            let text = istio_values(&istio(&service, "v1"));
            let i = i as u64;
            sums.push((
                text.into(),
                TcpSums {
                    opened: i + 1,
                    closed: i,
                    failed: i % 2,
                    sent: 10 * i,
                    received: 20 * i,
                },
            ));
            let endpoint = SocketAddr::from(([127, 0, 0, 1], 9000));
            failed.push((
                (service.into(), "v1".into(), endpoint),
                FailedBy([i % 2, 0, 0]),
            ));
        }
        TcpPage::of(sums, failed)
    }

    /// The whole page, written in pieces of at least `budget` bytes, and
    /// the pieces' sizes.
    fn pieces(mut page: TcpPage, budget: usize) -> (String, Vec<usize>) {
        let (mut whole, mut sizes) = (String::new(), Vec::new());
        loop {
            let mut piece = String::new();
            let more = page.write_some(&mut piece, budget);
            whole.push_str(&piece);
            sizes.push(piece.len());
            if !more {
                return (whole, sizes);
            }
        }
    }

    #[test]
    fn a_page_written_in_pieces_is_the_page_written_whole() {
        let (whole, sizes) = pieces(page(50), usize::MAX);
        assert_eq!(sizes, [whole.len()]);
        for family in PARTS.iter().flatten() {
            let help = format!("# HELP {} ", family.name);
            assert_eq!(whole.matches(&help).count(), 1, "{help} once:\n{whole}");
        }
        // 50 opened, closed, sent, received; 25 UF; 3 failed reasons each.
        let rows = 4 * 50 + 25 + 50;
        assert_eq!(
            whole.lines().filter(|l| !l.starts_with('#')).count(),
            rows + 2 * 50
        );
        for budget in [1, 100, 4096] {
            let (got, sizes) = pieces(page(50), budget);
            assert_eq!(got, whole, "in pieces of {budget} bytes");
            // Each piece is rows up to the budget, at most one more (a row
            // is under 1 KiB here, with its family's descriptor).
            let (last, full) = sizes.split_last().expect("a piece");
            assert!(*last < budget + 1024, "{sizes:?}");
            assert!(
                full.iter().all(|n| (budget..budget + 1024).contains(n)),
                "{sizes:?}"
            );
            if budget == 1 {
                assert_eq!(sizes.len(), rows + 1, "a row a piece, then none");
            }
        }
        assert_eq!(pieces(page(0), 1), (String::new(), vec![0]));
    }

    #[test]
    fn rows_with_one_key_are_summed_in_key_order() {
        let rows = vec![("b", 1), ("a", 2), ("b", 3), ("c", 4), ("a", 5)];
        assert_eq!(summed(rows), vec![("a", 7), ("b", 4), ("c", 4)]);
        assert_eq!(summed(Vec::<(&str, u64)>::new()), vec![]);
    }

    #[test]
    fn label_values_are_escaped_as_openmetrics_quotes_them_and_read_back() {
        let written = "q\"\\\nz";
        let values = istio_values(&istio("a.local", written));
        assert_eq!(values.lines().count(), ISTIO_LABEL_NAMES.len(), "{values}");
        assert_eq!(istio_value(&values, "destination_service"), "a.local");
        let escaped = istio_value(&values, "destination_version");
        assert_eq!(escaped, "q\\\"\\\\\\nz");
        assert_eq!(unescape(escaped), written);
        assert_eq!(unescape("plain"), "plain");
        assert_eq!(istio_value(&values, "no_such_label"), "");
    }
}
