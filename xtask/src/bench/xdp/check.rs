//! The check of the `xdp` row: that its connections went through the XDP program and
//! were split 80/20 by it, as scenario 3's `check:` lines check every HTTP contender's
//! split. It reads the program's own counters, `traffic_shift_xdp_flows_total` per
//! endpoint on the agent's `/metrics` (the per-CPU `TS_XDP_STATS` slots, summed, read
//! at each scrape), before and after the connection cell, and the client's count of
//! answers by backend (`one`/`two` of ts-bench's line).

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use super::super::{client::json_number, http::SHARE_TOLERANCE, scale};

/// The route of 31400 splits 80/20 (bench/rules/xdp/service.yaml): v2's share.
const V2_SHARE: f64 = 0.2;
/// The tcp-echo backends behind 31400, by version (31401's sink is on 19100).
const ENDPOINTS: [(&str, &str); 2] = [("v1", "198.19.1.2:19001"), ("v2", "198.19.2.2:19001")];
const FAMILY: &str = "traffic_shift_xdp_flows_total";

/// The XDP program's flows (SYNs it gave an endpoint) to the tcp-echo backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flows {
    pub v1: u64,
    pub v2: u64,
}

impl Flows {
    /// Read from the agent's `/metrics` at `addr`. A series the program never used is
    /// absent from the page: `must_exist` (after the cell) makes that an error instead
    /// of 0, so a renamed family or label cannot pass as "no flows".
    pub fn scrape(addr: &str, must_exist: bool) -> Result<Self> {
        let (_, page) = scale::get_metrics(addr)?;
        Self::parse(&String::from_utf8_lossy(&page), must_exist)
    }

    fn parse(page: &str, must_exist: bool) -> Result<Self> {
        let mut found = [None::<u64>; 2];
        for line in page.lines() {
            let Some(rest) = line.strip_prefix(FAMILY).and_then(|r| r.strip_prefix('{')) else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            for (i, (version, endpoint)) in ENDPOINTS.iter().enumerate() {
                if labels.contains(&format!("destination_version=\"{version}\""))
                    && labels.contains(&format!("endpoint=\"{endpoint}\""))
                {
                    let n: u64 = value
                        .trim()
                        .parse()
                        .with_context(|| format!("a counter value in: {line}"))?;
                    *found[i].get_or_insert(0) += n;
                }
            }
        }
        if must_exist {
            for ((version, endpoint), n) in ENDPOINTS.iter().zip(found) {
                if n.is_none() {
                    bail!(
                        "the agent's /metrics has no {FAMILY} series for {version} ({endpoint}): \
                         the XDP program counted no flow to it"
                    );
                }
            }
        }
        let [v1, v2] = found.map(Option::unwrap_or_default);
        Ok(Self { v1, v2 })
    }
}

/// The client's side of the cell: ts-bench's connection line.
#[derive(Debug)]
pub struct Client {
    pub connections: u64,
    pub conn_per_sec: f64,
    pub errors: u64,
    /// Answers of v1 (`one ...`) and v2 (`two ...`).
    pub one: u64,
    pub two: u64,
}

impl Client {
    pub fn parse(line: &str) -> Result<Self> {
        let field = |key: &str| {
            json_number(line, key).with_context(|| format!("no {key} in ts-bench output {line}"))
        };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(Self {
            connections: field("connections")? as u64,
            conn_per_sec: field("conn_per_sec")?,
            errors: field("errors")? as u64,
            one: field("one")? as u64,
            two: field("two")? as u64,
        })
    }
}

/// Runs `cell`, the xdp row's connection cell (ts-bench's line first), between two
/// readings of the XDP program's counters on the agent's `/metrics` (its address from
/// the agent's `status` file), and checks it ([`check`]): its result and the `check:`
/// lines, or the error that fails the row.
pub fn checked<T: AsRef<str>, U>(
    status: &Path,
    warmup: f64,
    concurrency: u32,
    cell: impl FnOnce() -> Result<(T, U)>,
) -> Result<((T, U), String)> {
    let metrics = metrics_addr(status)?;
    let before = Flows::scrape(&metrics, false)?;
    let result = cell()?;
    let after = Flows::scrape(&metrics, true)?;
    let client = Client::parse(result.0.as_ref())?;
    let lines = check(before, after, &client, warmup, concurrency)?;
    Ok((result, lines))
}

/// The agent's `/metrics` address, from its status file (written within a second of
/// its start).
pub fn metrics_addr(status: &Path) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = fs::read_to_string(status).unwrap_or_default();
        let addr = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("metrics")?.as_str().map(str::to_owned));
        if let Some(addr) = addr {
            return Ok(addr);
        }
        ensure!(
            Instant::now() < deadline,
            "no metrics address in the agent's status file {} after 5 s: {text}",
            status.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `check:` lines of the xdp row's connection cell (`warmup` seconds of
/// connections before the measured ones, `concurrency` clients), or an error naming
/// what is wrong:
/// - the program's flows grew by the connections made: at least the measured ones
///   (each is a new flow: ts-bench closes with a reset, which ends the flow), at most
///   those plus the errors, twice the warmup's at the measured rate and one in flight
///   per client;
/// - both the program's flows and the client's answers split 80/20 within
///   [`SHARE_TOLERANCE`], and every answer came from v1 or v2.
pub fn check(
    before: Flows,
    after: Flows,
    client: &Client,
    warmup: f64,
    concurrency: u32,
) -> Result<String> {
    let (v1, v2) = (
        after.v1.saturating_sub(before.v1),
        after.v2.saturating_sub(before.v2),
    );
    let flows = v1 + v2;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let most = client.connections
        + client.errors
        + (2.0 * client.conn_per_sec * warmup).ceil() as u64
        + u64::from(concurrency);
    let mut lines = String::new();
    let through = (client.connections..=most).contains(&flows) && client.connections > 0;
    let _ = writeln!(
        lines,
        "check: xdp went through XDP: XDP flows +{flows} for {} connections measured \
         (+{} errors, {warmup} s warmup): expected {}..={most}: {}",
        client.connections,
        client.errors,
        client.connections,
        if through { "yes" } else { "NO" }
    );
    #[allow(clippy::cast_precision_loss)]
    let share = |v2: u64, total: u64| {
        if total == 0 {
            f64::NAN
        } else {
            v2 as f64 / total as f64
        }
    };
    let (xdp_share, client_share) = (share(v2, flows), share(client.two, client.one + client.two));
    let neither = client.connections.saturating_sub(client.one + client.two);
    let split = (xdp_share - V2_SHARE).abs() <= SHARE_TOLERANCE
        && (client_share - V2_SHARE).abs() <= SHARE_TOLERANCE
        && neither == 0;
    let _ = writeln!(
        lines,
        "check: xdp splits 80/20 (within {SHARE_TOLERANCE}): XDP flows v1 +{v1} v2 +{v2}, v2 share {xdp_share:.3}; \
         client answers v1 {} v2 {}, v2 share {client_share:.3}, {neither} by neither: {}",
        client.one,
        client.two,
        if split { "yes" } else { "NO" }
    );
    if !through || !split {
        bail!(
            "scenario 7: the xdp row's connection cell did not go through the XDP program as an 80/20 split:\n{lines}\
             (a bench or datapath bug: the row's figures would not be the XDP gateway's)"
        );
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::{Client, Flows, check};

    const PAGE: &str = "\
# TYPE traffic_shift_xdp_flows counter
traffic_shift_xdp_flows_total{route=\"tcp-echo-remote/0\",destination_service=\"tcp-echo.remote\",destination_version=\"v1\",endpoint=\"198.19.1.2:19001\"} 800
traffic_shift_xdp_flows_total{route=\"tcp-echo-remote/0\",destination_service=\"tcp-echo.remote\",destination_version=\"v2\",endpoint=\"198.19.2.2:19001\"} 200
traffic_shift_xdp_flows_total{route=\"tcp-echo-remote/1\",destination_service=\"tcp-echo.remote\",destination_version=\"v1\",endpoint=\"198.19.1.2:19100\"} 1
traffic_shift_xdp_packets_total{route=\"tcp-echo-remote/0\",destination_service=\"tcp-echo.remote\",destination_version=\"v1\",endpoint=\"198.19.1.2:19001\",direction=\"request\"} 4000
";

    fn client(connections: u64, one: u64, two: u64) -> Client {
        Client {
            connections,
            conn_per_sec: 1000.0,
            errors: 0,
            one,
            two,
        }
    }

    #[test]
    fn flows_are_read_per_version_and_a_missing_series_fails_where_it_must_exist() {
        let flows = Flows::parse(PAGE, true).unwrap();
        assert_eq!(flows, Flows { v1: 800, v2: 200 });
        let no_v2: String = PAGE
            .lines()
            .filter(|l| !l.contains("v2"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            Flows::parse(&no_v2, false).unwrap(),
            Flows { v1: 800, v2: 0 }
        );
        let err = Flows::parse(&no_v2, true).unwrap_err().to_string();
        assert!(
            err.contains("no traffic_shift_xdp_flows_total series for v2"),
            "{err}"
        );
    }

    #[test]
    fn the_row_passes_when_its_flows_are_its_connections_split_80_20() {
        let before = Flows { v1: 8, v2: 2 };
        let after = Flows {
            v1: 8 + 880,
            v2: 2 + 220,
        };
        let lines = check(before, after, &client(1000, 800, 200), 0.1, 16).unwrap();
        assert!(
            lines.contains("XDP flows +1100 for 1000 connections"),
            "{lines}"
        );
        assert!(
            lines.contains("v2 share 0.200") && lines.ends_with("yes\n"),
            "{lines}"
        );
    }

    #[test]
    fn the_row_fails_when_connections_bypassed_xdp_or_the_split_is_off() {
        let zero = Flows::default();
        // Fewer flows than measured connections: some did not go through XDP.
        let err = check(
            zero,
            Flows { v1: 400, v2: 100 },
            &client(1000, 800, 200),
            0.1,
            16,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("went through XDP") && err.contains(": NO"),
            "{err}"
        );
        // Far more flows than connections made: counting something else.
        assert!(
            check(
                zero,
                Flows { v1: 8000, v2: 2000 },
                &client(1000, 800, 200),
                0.1,
                16
            )
            .is_err()
        );
        // 50/50 in the program's counters, or in the client's answers.
        assert!(
            check(
                zero,
                Flows { v1: 500, v2: 500 },
                &client(1000, 800, 200),
                0.1,
                16
            )
            .is_err()
        );
        assert!(
            check(
                zero,
                Flows { v1: 800, v2: 200 },
                &client(1000, 500, 500),
                0.1,
                16
            )
            .is_err()
        );
        // An answer from neither backend.
        assert!(
            check(
                zero,
                Flows { v1: 800, v2: 200 },
                &client(1000, 799, 200),
                0.1,
                16
            )
            .is_err()
        );
    }
}
