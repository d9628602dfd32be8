//! `cargo xtask bench --only storm`: scenario 9, a new-connection storm (issue 21,
//! goal 6). Connections that close with a FIN, paced at the rate at which iptables
//! DNAT fills the kernel's conntrack table on this machine, for 60 s (10 s with
//! `--quick`), on four paths:
//!
//! - `iptables DNAT` and `xdp`: scenario 7's topology (client, node, two backend
//!   hosts), DNAT + MASQUERADE on ports 31500, the agent's XDP gateway on 31400;
//! - `connect-time` and `gateway`: the bench's agent and backends (scenario 1's
//!   targets), the client in the agent's cgroup for connect-time.
//!
//! The rate is measured first: a closed-loop client (concurrency 16) as fast as it
//! goes through DNAT for a few seconds. A FIN close leaves each conntrack entry in
//! TIME_WAIT (120 s by default) where a reset leaves it in CLOSE (10 s), so FIN
//! closes are what fill the table. The client binds each connection to its own
//! source address and port (`ts-bench --sources`: 224 addresses, and each run from a
//! namespace its own part of ports 20000-60999), so no 4-tuple comes back within the
//! scenario and neither the client's own TIME_WAIT sockets nor a reused conntrack
//! entry stands in the way.
//!
//! Each row reports what the client saw (connections, failures, connects that took a
//! SYN retransmit, and the client's namespace's `TcpExtTCPSynRetrans`), the conntrack
//! table of the namespace that routes (entries sampled once a second, drops,
//! early drops and failed inserts from `/proc/net/stat/nf_conntrack`), and, on
//! traffic-shift's paths, the agent's own counters of the connections it routed:
//! the XDP program's flows (and its `xdp_no_port` drops), the connect-time
//! path's `istio_tcp_connections_opened_total`, or sk_lookup's `gateway_assigned`. A row whose counters say its connections did
//! not go through its path fails the run.

use std::{
    fmt::Write as _,
    path::Path,
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use super::{
    Setup, check_interrupted,
    client::{Clients, json_number, ts_bench, wait_answers},
    guards::{Netns, Processes},
    report::{alone_header, json_escape, write_alone},
    scale, tcp, xdp,
};

/// The closed-loop measurement of the rate: clients, and seconds (full, quick).
const RATE_CONCURRENCY: u32 = 16;
const RATE_SECS: (f64, f64) = (5.0, 2.0);
/// The storm: seconds (full, quick), and the client's threads (connections in flight
/// at most; a connect whose SYN is dropped holds one for a second or more).
const STORM_SECS: (f64, f64) = (60.0, 10.0);
const STORM_CONCURRENCY: u32 = 128;
/// The goal's "sustained": the achieved rate at least this share of the rate (the
/// open-loop client starts no connection after the duration, so a path slower than
/// the rate shows as fewer attempted).
const SUSTAINED: f64 = 0.99;
/// The client's source addresses (`ts-bench --sources`): 224 of them. On the XDP
/// topology they are in a network of their own, which the node routes via the
/// client's address, as clients behind a router: one neighbour for the node, whose
/// entry neither the XDP program nor the stack ever waits for (224 neighbours would
/// be past `gc_thresh1`, and an entry the kernel collected would drop the XDP
/// gateway's answers as `xdp_no_neighbour`).
const XDP_SOURCES: (&str, &str) = ("198.18.64.16", "198.18.64.239");
const LOCAL_SOURCES: (&str, &str) = ("127.1.0.16", "127.1.0.239");

/// The conntrack table of one namespace, or `None` fields when nf_conntrack is not
/// loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conntrack {
    /// `nf_conntrack_count`: entries now.
    pub count: u64,
    /// Summed over CPUs from `/proc/net/stat/nf_conntrack`.
    pub drop: u64,
    pub early_drop: u64,
    pub insert_failed: u64,
}

impl Conntrack {
    /// Read in `netns`; `None` when the kernel has no conntrack loaded.
    fn read(netns: &Netns) -> Result<Option<Self>> {
        let out = netns
            .exec("sh")
            .args([
                "-c",
                "cat /proc/sys/net/netfilter/nf_conntrack_count /proc/net/stat/nf_conntrack \
                 2>/dev/null || true",
            ])
            .output()
            .context("read the conntrack table's state")?;
        Self::parse(&String::from_utf8_lossy(&out.stdout))
    }

    /// The count's line, then `/proc/net/stat/nf_conntrack`: a header naming the
    /// columns, one line of hexadecimal numbers per CPU.
    fn parse(text: &str) -> Result<Option<Self>> {
        let mut lines = text.lines();
        let Some(count) = lines.next().filter(|l| !l.trim().is_empty()) else {
            return Ok(None);
        };
        let count = count
            .trim()
            .parse()
            .with_context(|| format!("nf_conntrack_count {count}"))?;
        let header: Vec<&str> = lines
            .next()
            .context("no header in /proc/net/stat/nf_conntrack")?
            .split_whitespace()
            .collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .with_context(|| format!("no {name} column in /proc/net/stat/nf_conntrack"))
        };
        let (drop, early_drop, insert_failed) = (
            column("drop")?,
            column("early_drop")?,
            column("insert_failed")?,
        );
        let mut stats = Self {
            count,
            ..Self::default()
        };
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let cells: Vec<&str> = line.split_whitespace().collect();
            let cell = |i: usize| {
                cells
                    .get(i)
                    .and_then(|c| u64::from_str_radix(c, 16).ok())
                    .with_context(|| format!("column {i} of /proc/net/stat/nf_conntrack: {line}"))
            };
            stats.drop += cell(drop)?;
            stats.early_drop += cell(early_drop)?;
            stats.insert_failed += cell(insert_failed)?;
        }
        Ok(Some(stats))
    }
}

/// What the client's line says.
#[derive(Debug, Default)]
struct ClientLine {
    connections: u64,
    errors: u64,
    attempted: u64,
    syn_retried: u64,
    conn_per_sec: f64,
    seconds: f64,
    one: u64,
    two: u64,
    client_cpu_s: f64,
}

impl ClientLine {
    fn parse(line: &str) -> Result<Self> {
        let field = |key: &str| {
            json_number(line, key).with_context(|| format!("no {key} in ts-bench output {line}"))
        };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let count = |key: &str| field(key).map(|v| v as u64);
        Ok(Self {
            connections: count("connections")?,
            errors: count("errors")?,
            attempted: count("attempted")?,
            syn_retried: count("syn_retried")?,
            conn_per_sec: field("conn_per_sec")?,
            seconds: field("seconds")?,
            one: count("one")?,
            two: count("two")?,
            client_cpu_s: field("client_cpu_s")?,
        })
    }
}

/// One row: a path under the storm.
struct Row {
    path: &'static str,
    target_rate: f64,
    client: ClientLine,
    /// The client namespace's `TcpExtTCPSynRetrans` during the storm.
    syn_retrans: u64,
    /// The routing namespace's conntrack table before and after, and its entries
    /// sampled once a second: (seconds into the storm, table).
    conntrack: (Option<Conntrack>, Option<Conntrack>),
    samples: Vec<(f64, Conntrack)>,
    /// What the path's own counters say (`check:` line), and its verdict.
    check: String,
}

impl Row {
    fn failed(&self) -> u64 {
        self.client.errors
    }

    /// Conntrack's drops, early drops and failed inserts during the storm.
    fn ct_delta(&self) -> Option<(u64, u64, u64)> {
        let (Some(a), Some(b)) = self.conntrack else {
            return None;
        };
        Some((
            b.drop.saturating_sub(a.drop),
            b.early_drop.saturating_sub(a.early_drop),
            b.insert_failed.saturating_sub(a.insert_failed),
        ))
    }

    fn peak_entries(&self) -> Option<u64> {
        self.samples.iter().map(|(_, c)| c.count).max()
    }

    /// Seconds into the storm at the first sample with `pick` above its value at the start.
    fn first(&self, pick: impl Fn(&Conntrack) -> u64) -> Option<f64> {
        let start = pick(&self.conntrack.0?);
        self.samples
            .iter()
            .find(|(_, c)| pick(c) > start)
            .map(|(t, _)| *t)
    }
}

/// The storm's client, in `netns` (and the cgroup), to `target`, paced at `rate`,
/// while the conntrack table of `router` is sampled once a second.
struct Storm<'a> {
    bin: &'a Path,
    client: &'a Netns,
    cgroup: &'a Path,
    in_cgroup: bool,
    sources: (&'a str, &'a str),
    router: &'a Netns,
}

impl Storm<'_> {
    /// ts-bench's line (closed loop with `rate` `None`), the client's SYN
    /// retransmissions, the router's conntrack before and after and its samples.
    /// Each run from one namespace has its own source ports (`ports`, `LO-HI`): the last
    /// run's are held by its sockets in TIME_WAIT for 60 s.
    fn run(&self, target: &str, ports: &str, rate: Option<f64>, secs: f64) -> Result<Sampled> {
        let sources = format!("{}-{}", self.sources.0, self.sources.1);
        let (concurrency, rate_arg) = match rate {
            Some(r) => (STORM_CONCURRENCY, format!("{r:.0}")),
            None => (RATE_CONCURRENCY, String::new()),
        };
        let concurrency = concurrency.to_string();
        let secs_arg = secs.to_string();
        let mut args = vec![
            "--target",
            target,
            "--concurrency",
            &concurrency,
            "--duration",
            &secs_arg,
            "--close",
            "fin",
            "--sources",
            &sources,
            "--source-ports",
            ports,
        ];
        if rate.is_some() {
            args.extend(["--rate", &rate_arg]);
        }
        let syn_before = xdp::syn_retransmits(self.client)?;
        let before = Conntrack::read(self.router)?;
        let started = Instant::now();
        let (line, samples) = std::thread::scope(|s| -> Result<_> {
            let client = s.spawn(|| {
                ts_bench(
                    self.bin,
                    &self.client.name,
                    self.cgroup,
                    self.in_cgroup,
                    &args,
                )
            });
            let mut samples = Vec::new();
            while !client.is_finished() {
                std::thread::sleep(Duration::from_secs(1));
                if let Some(c) = Conntrack::read(self.router)? {
                    samples.push((started.elapsed().as_secs_f64(), c));
                }
            }
            let line = client.join().expect("the client thread")?;
            Ok((line, samples))
        })?;
        Ok(Sampled {
            client: ClientLine::parse(&line)?,
            syn_retrans: xdp::syn_retransmits(self.client)? - syn_before,
            conntrack: (before, Conntrack::read(self.router)?),
            samples,
        })
    }
}

/// A storm's measured parts, before its path's check.
struct Sampled {
    client: ClientLine,
    syn_retrans: u64,
    conntrack: (Option<Conntrack>, Option<Conntrack>),
    samples: Vec<(f64, Conntrack)>,
}

impl Sampled {
    /// The row, its `check` line followed by the answers' one: every answer must come
    /// from tcp-echo v1 or v2, or the run fails (the storm reached something else).
    fn row(self, path: &'static str, target_rate: f64, check: &str) -> Result<Row> {
        let c = &self.client;
        let neither = c.connections.saturating_sub(c.one + c.two);
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let share = c.two as f64 / (c.one + c.two).max(1) as f64;
        let answers = format!(
            "check: {path} answered by version: v1 {} v2 {} (v2 share {share:.3}, the route's 0.2), \
             {neither} by neither: {}",
            c.one,
            c.two,
            if neither == 0 { "yes" } else { "NO" }
        );
        ensure!(
            neither == 0,
            "scenario 9: {neither} of the {path} row's answers came from neither tcp-echo v1 nor v2:\n{answers}"
        );
        Ok(Row {
            path,
            target_rate,
            client: self.client,
            syn_retrans: self.syn_retrans,
            conntrack: self.conntrack,
            samples: self.samples,
            check: format!("{check}\n{answers}"),
        })
    }
}

/// The rate measured through DNAT, and the table's settings on the node.
struct Rate {
    client: ClientLine,
    /// The storm's target: the measured rate, rounded.
    target: f64,
    conntrack_max: String,
    time_wait_secs: String,
}

/// The sum of the series of `family` whose labels contain every one of `labels`;
/// `None` when there is none.
fn sum_series(page: &str, family: &str, labels: &[&str]) -> Result<Option<u64>> {
    let mut sum = None;
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(family).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((have, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        if labels.iter().all(|l| have.contains(l)) {
            let n: u64 = value
                .trim()
                .parse()
                .with_context(|| format!("a counter value in: {line}"))?;
            *sum.get_or_insert(0) += n;
        }
    }
    Ok(sum)
}

fn metrics(addr: &str) -> Result<String> {
    let (_, page) = scale::get_metrics(addr)?;
    Ok(String::from_utf8_lossy(&page).into_owned())
}

/// The check of a traffic-shift row: the path's counter of the routed connections
/// grew by at least the connections made and at most those attempted, plus the SYNs
/// the client retransmitted (a kernel path may count a SYN again) and one in flight
/// per client thread.
fn check_routed(
    path: &str,
    what: &str,
    grew: u64,
    client: &ClientLine,
    syn_retrans: u64,
) -> Result<String> {
    let most = client.attempted + syn_retrans + u64::from(STORM_CONCURRENCY);
    let ok = client.connections > 0 && (client.connections..=most).contains(&grew);
    let line = format!(
        "check: {path} went through its path: {what} +{grew} for {} connections made, {} attempted, \
         {syn_retrans} SYNs retransmitted: expected {}..={most}: {}",
        client.connections,
        client.attempted,
        client.connections,
        if ok { "yes" } else { "NO" }
    );
    if !ok {
        bail!(
            "scenario 9: the {path} row's connections did not go through its path:\n{line}\n\
             (a bench or datapath bug: the row's figures would not be the path's)"
        );
    }
    Ok(line)
}

pub fn run(
    root: &Path,
    bin: &Path,
    cgroup_root: &Path,
    quick: bool,
    interrupted: &AtomicBool,
) -> Result<()> {
    let storm_secs = if quick { STORM_SECS.1 } else { STORM_SECS.0 };
    let (rate, mut rows) = xdp_topology(bin, root, cgroup_root, quick, storm_secs, interrupted)?;
    check_interrupted(interrupted)?;
    rows.extend(local_paths(
        root,
        bin,
        cgroup_root,
        quick,
        rate.target,
        storm_secs,
    )?);
    let header = alone_header(
        &format!(
            "scenario 9 alone (--only storm), {storm_secs} s per row at {:.0} new connections/s, FIN closes",
            rate.target
        ),
        quick,
    );
    let (mut md, mut json_rows, mut goals) = (String::new(), Vec::new(), String::new());
    report(&rate, &rows, &mut md, &mut json_rows, &mut goals);
    write_alone(root, "storm", &header, &md, &json_rows, &goals)
}

/// The rate, then the `iptables DNAT` and `xdp` rows, on scenario 7's topology.
fn xdp_topology(
    bin: &Path,
    root: &Path,
    cgroup_root: &Path,
    quick: bool,
    storm_secs: f64,
    interrupted: &AtomicBool,
) -> Result<(Rate, Vec<Row>)> {
    xdp::install(&[
        ("iptables", "iptables"),
        ("ethtool", "ethtool"),
        ("conntrack", "conntrack"),
    ])?;
    let xdp::Topology {
        tmp,
        node,
        client,
        b1,
        b2,
        cgroup,
        bpffs,
    } = xdp::Topology::new(&format!("ts-bstorm-{}", std::process::id()), cgroup_root)?;
    let mut procs = Processes(Vec::new());
    add_sources(&node, &client)?;
    xdp::start_backends(bin, [&b1, &b2], &mut procs)?;
    xdp::iptables_dnat(&node)?;
    let storm = Storm {
        bin,
        client: &client,
        cgroup: &cgroup.0,
        in_cgroup: false,
        sources: XDP_SOURCES,
        router: &node,
    };
    let dnat_target = "198.18.0.1:31500";
    // Backends listening: the same target answers (a refused connect is an error).
    if let Some(why) = wait_answers(
        || {
            let line = ts_bench(
                bin,
                &client.name,
                &cgroup.0,
                false,
                &["--target", dnat_target, "--duration", "0.1"],
            )?;
            let c = ClientLine::parse(&line)?;
            Ok((c.connections == 0 || c.errors > 0)
                .then(|| format!("{} connections, {} errors", c.connections, c.errors)))
        },
        || procs.exited("tcp-echo one").is_some(),
    ) {
        bail!("the backends do not answer through iptables DNAT {dnat_target}: {why}");
    }

    // The rate: as fast as the client goes through DNAT, closed loop.
    let read = |file: &str| -> Result<String> {
        let out = node.exec("cat").arg(file).output()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        ensure!(
            !text.is_empty(),
            "cannot read {file} in the node's namespace"
        );
        Ok(text)
    };
    let conntrack_max = read("/proc/sys/net/netfilter/nf_conntrack_max")?;
    let time_wait_secs = read("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait")?;
    flush(&node)?;
    let rate_secs = if quick { RATE_SECS.1 } else { RATE_SECS.0 };
    let measured = storm.run(dnat_target, "20000-22999", None, rate_secs)?;
    ensure!(
        measured.client.connections > 0,
        "no connection went through iptables DNAT while measuring the rate"
    );
    let storm_rate = measured.client.conn_per_sec.round();
    eprintln!(
        "bench: storm rate {storm_rate} new connections/s (closed loop through DNAT, c={RATE_CONCURRENCY}, \
         {} errors)",
        measured.client.errors
    );
    let rate = Rate {
        client: measured.client,
        target: storm_rate,
        conntrack_max,
        time_wait_secs,
    };

    // Row: iptables DNAT, the agent not started.
    check_interrupted(interrupted)?;
    flush(&node)?;
    let dnat = storm
        .run(dnat_target, "23000-41999", Some(storm_rate), storm_secs)?
        .row(
            "iptables DNAT",
            storm_rate,
            "(Linux's own forwarding: its conntrack columns are the comparison)",
        )?;
    eprintln!(
        "bench: storm iptables DNAT: {} connections, {} failed",
        dnat.client.connections,
        dnat.failed()
    );

    // Row: the XDP gateway.
    check_interrupted(interrupted)?;
    flush(&node)?;
    xdp::start_agent(root, bin, &tmp, &cgroup, &bpffs, &node, &mut procs)?;
    let xdp_row = xdp_row(&storm, &tmp.0.join("status.json"), storm_rate, storm_secs)?;
    xdp::stop_agent(&mut procs)?;
    drop(procs);
    Ok((rate, vec![dnat, xdp_row]))
}

/// The client's source addresses (`XDP_SOURCES`), and the node's route to them via
/// the client.
fn add_sources(node: &Netns, client: &Netns) -> Result<()> {
    let first: std::net::Ipv4Addr = XDP_SOURCES.0.parse()?;
    let last: std::net::Ipv4Addr = XDP_SOURCES.1.parse()?;
    let mut script = String::new();
    for a in u32::from(first)..=u32::from(last) {
        let _ = write!(
            script,
            "ip addr add {}/32 dev ts-client && ",
            std::net::Ipv4Addr::from(a)
        );
    }
    xdp::sh_in(client, &format!("{script}true"))?;
    xdp::sh_in(
        node,
        "ip route add 198.18.64.0/24 via 198.18.0.2 dev ts-node",
    )
}

/// The `xdp` row: the storm to the agent's XDP gateway (31400), checked against the
/// program's flows; the agent's status file names its `/metrics`.
fn xdp_row(storm: &Storm<'_>, status: &Path, storm_rate: f64, storm_secs: f64) -> Result<Row> {
    let metrics_addr = xdp::check::metrics_addr(status)?;
    let no_port = |page: &str| {
        sum_series(
            page,
            "traffic_shift_kernel_events_total",
            &["program=\"xdp\"", "event=\"xdp_no_port\""],
        )
    };
    let flows_before = xdp::check::Flows::scrape(&metrics_addr, false)?;
    // A kernel event's series starts with its first count: absent is none yet.
    let no_port_before = no_port(&metrics(&metrics_addr)?)?.unwrap_or_default();
    let sampled = storm.run(
        "198.18.0.1:31400",
        "42000-60999",
        Some(storm_rate),
        storm_secs,
    )?;
    let flows = xdp::check::Flows::scrape(&metrics_addr, true)?;
    let no_port_after = no_port(&metrics(&metrics_addr)?)?;
    let (v1, v2) = (flows.v1 - flows_before.v1, flows.v2 - flows_before.v2);
    let mut check = check_routed(
        "xdp",
        &format!("XDP flows (v1 +{v1}, v2 +{v2})"),
        v1 + v2,
        &sampled.client,
        sampled.syn_retrans,
    )?;
    let _ = match no_port_after {
        Some(n) => write!(
            check,
            "; SYNs dropped for want of a source port (`xdp_no_port`): +{}",
            n - no_port_before
        ),
        None => write!(
            check,
            "; no `xdp_no_port` series: no SYN dropped for want of a source port"
        ),
    };
    let row = sampled.row("xdp", storm_rate, &check)?;
    eprintln!(
        "bench: storm xdp: {} connections, {} failed",
        row.client.connections,
        row.failed()
    );
    Ok(row)
}

/// Empties the node's conntrack table (`conntrack -F`), so that a row starts with
/// none of the previous one's entries in TIME_WAIT.
fn flush(node: &Netns) -> Result<()> {
    xdp::sh_in(node, "conntrack -F 2>/dev/null")
}

/// The `connect-time` and `gateway` rows, on the bench's agent and backends.
fn local_paths(
    root: &Path,
    bin: &Path,
    cgroup_root: &Path,
    quick: bool,
    storm_rate: f64,
    storm_secs: f64,
) -> Result<Vec<Row>> {
    let name = format!("ts-bench-{}", std::process::id());
    let mut setup = Setup::new(root, bin, cgroup_root, &name, quick, false)?;
    let contenders = tcp::own_contenders();
    let clients = Clients {
        bin,
        netns: &setup.netns.name,
        cgroup: &setup.cgroup.0,
    };
    let metrics_addr = xdp::check::metrics_addr(&setup.agent.status)?;
    let mut rows = Vec::new();
    for (path, ports) in [("connect-time", "20000-40499"), ("gateway", "40500-60999")] {
        let contender = contenders
            .iter()
            .find(|c| c.name == path)
            .with_context(|| format!("no {path} contender"))?;
        let procs = &mut setup.procs;
        if let Some(why) = wait_answers(
            || tcp::conn_check(clients, contender),
            || procs.exited("agent").is_some(),
        ) {
            bail!(
                "the {path} path {} does not answer: {why}",
                contender.target
            );
        }
        let storm = Storm {
            bin,
            client: &setup.netns,
            cgroup: &setup.cgroup.0,
            in_cgroup: contender.in_cgroup,
            sources: LOCAL_SOURCES,
            router: &setup.netns,
        };
        // The path's own count of what it routed: the connect-time path's sock_ops
        // counts each connect it rewrote by version; the gateway's is counted on the
        // backend's socket only if the backend is in the agent's cgroup (the bench's
        // are not), so there sk_lookup's count of SYNs it gave an endpoint's socket.
        let (family, labels, what) = if contender.in_cgroup {
            (
                "istio_tcp_connections_opened_total",
                [
                    "destination_service=\"tcp-echo.local\"",
                    "reporter=\"source\"",
                ],
                "the agent's istio_tcp_connections_opened_total of tcp-echo.local",
            )
        } else {
            (
                "traffic_shift_kernel_events_total",
                ["program=\"sk_lookup\"", "event=\"gateway_assigned\""],
                "sk_lookup's gateway_assigned (SYNs given an endpoint's socket)",
            )
        };
        let count =
            || -> Result<Option<u64>> { sum_series(&metrics(&metrics_addr)?, family, &labels) };
        // The smoke check above made connections: the series is there before too.
        let before = count()?
            .with_context(|| format!("no {family} series {labels:?} on the agent's /metrics"))?;
        let sampled = storm.run(contender.target, ports, Some(storm_rate), storm_secs)?;
        let after = count()?
            .with_context(|| format!("no {family} series {labels:?} on the agent's /metrics"))?;
        let check = check_routed(
            path,
            what,
            after - before,
            &sampled.client,
            sampled.syn_retrans,
        )?;
        let row = sampled.row(path, storm_rate, &check)?;
        eprintln!(
            "bench: storm {path}: {} connections, {} failed",
            row.client.connections,
            row.failed()
        );
        rows.push(row);
    }
    drop(setup);
    Ok(rows)
}

/// The table, its notes and check lines, the JSON rows and the goal lines.
fn report(
    rate: &Rate,
    rows: &[Row],
    md: &mut String,
    json_rows: &mut Vec<String>,
    goals: &mut String,
) {
    let c = &rate.client;
    let _ = writeln!(
        md,
        "Scenario 9: a new-connection storm. The node's conntrack table: nf_conntrack_max {}, \
         TIME_WAIT {} s. The rate: {:.0} new connections/s, what a closed-loop client \
         (concurrency {RATE_CONCURRENCY}, FIN closes, its own source address and port each) made \
         through iptables DNAT in {} s ({} connections, {} errors, client CPU {:.1} s); the storm \
         runs at that rate, open loop, {STORM_CONCURRENCY} client threads, a connect given up \
         after 5 s.\n",
        rate.conntrack_max,
        rate.time_wait_secs,
        rate.target,
        c.seconds,
        c.connections,
        c.errors,
        c.client_cpu_s,
    );
    md.push_str(
        "| path | target conn/s | achieved conn/s | attempted | failed | SYN-retried connects | SYN retransmits | conntrack entries at end (peak) | conntrack full after | conntrack drop / early_drop / insert_failed | first drop after | v1 / v2 answers | client CPU s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let max: Option<u64> = rate.conntrack_max.parse().ok();
    for r in rows {
        row_report(r, max, md, json_rows);
    }
    md.push('\n');
    for r in rows {
        let _ = writeln!(md, "{}: {}", r.path, r.check.replace('\n', "  \n"));
    }
    for r in rows.iter().filter(|r| r.path != "iptables DNAT") {
        let sustained = r.client.conn_per_sec / r.target_rate;
        let _ = writeln!(
            goals,
            "goal: storm sustained (>= {SUSTAINED} of the rate) with 0 failed connections: {} \
             {:.0} of {:.0} conn/s ({sustained:.3}), {} failed of {} attempted: {}",
            r.path,
            r.client.conn_per_sec,
            r.target_rate,
            r.failed(),
            r.client.attempted,
            if r.failed() == 0 && sustained >= SUSTAINED {
                "met"
            } else {
                "not met"
            }
        );
    }
    if let Some(r) = rows.iter().find(|r| r.path == "iptables DNAT") {
        let (d, e, i) = r.ct_delta().unwrap_or_default();
        let _ = writeln!(
            goals,
            "comparison: storm iptables DNAT {} failed of {} attempted, {} SYN retransmits, \
             conntrack drop {d}, early_drop {e}, insert_failed {i}",
            r.failed(),
            r.client.attempted,
            r.syn_retrans
        );
    }
}

/// One row of the table and its JSON; `max` is the node's `nf_conntrack_max`.
fn row_report(r: &Row, max: Option<u64>, md: &mut String, json_rows: &mut Vec<String>) {
    let ct_end = r.conntrack.1.map_or_else(
        || "no conntrack".into(),
        |c| format!("{} ({})", c.count, r.peak_entries().unwrap_or(c.count)),
    );
    let full = match (max, r.conntrack.0) {
        (Some(max), Some(_)) => r
            .samples
            .iter()
            .find(|(_, c)| c.count >= max)
            .map_or_else(|| "never".into(), |(t, _)| format!("{t:.0} s")),
        _ => "-".into(),
    };
    let deltas = r
        .ct_delta()
        .map_or_else(|| "-".into(), |(d, e, i)| format!("{d} / {e} / {i}"));
    let first_drop = if r.conntrack.0.is_some() {
        r.first(|c| c.drop)
            .map_or_else(|| "none".into(), |t| format!("{t:.0} s"))
    } else {
        "-".into()
    };
    let _ = writeln!(
        md,
        "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {ct_end} | {full} | {deltas} | {first_drop} | {} / {} | {:.1} |",
        r.path,
        r.target_rate,
        r.client.conn_per_sec,
        r.client.attempted,
        r.failed(),
        r.client.syn_retried,
        r.syn_retrans,
        r.client.one,
        r.client.two,
        r.client.client_cpu_s,
    );
    let ct = |c: Option<Conntrack>| {
        c.map_or_else(
            || "null".into(),
            |c| {
                format!(
                    "{{\"count\": {}, \"drop\": {}, \"early_drop\": {}, \"insert_failed\": {}}}",
                    c.count, c.drop, c.early_drop, c.insert_failed
                )
            },
        )
    };
    json_rows.push(format!(
        "{{\"scenario\": \"connection storm\", \"path\": \"{}\", \"target_conn_per_sec\": {:.0}, \
         \"conn_per_sec\": {:.0}, \"seconds\": {}, \"attempted\": {}, \"connections\": {}, \"failed\": {}, \
         \"syn_retried\": {}, \"syn_retransmits\": {}, \"conntrack_before\": {}, \"conntrack_after\": {}, \
         \"conntrack_peak\": {}, \"one\": {}, \"two\": {}, \"client_cpu_s\": {}, \"check\": \"{}\"}}",
        r.path,
        r.target_rate,
        r.client.conn_per_sec,
        r.client.seconds,
        r.client.attempted,
        r.client.connections,
        r.failed(),
        r.client.syn_retried,
        r.syn_retrans,
        ct(r.conntrack.0),
        ct(r.conntrack.1),
        r.peak_entries()
            .map_or_else(|| "null".into(), |p| p.to_string()),
        r.client.one,
        r.client.two,
        r.client.client_cpu_s,
        json_escape(&r.check),
    ));
}

#[cfg(test)]
mod tests {
    use super::{Conntrack, sum_series};

    #[test]
    fn conntrack_stats_are_summed_over_cpus_from_hex() {
        let text = "1234\n\
entries  clashres found invalid ignore delete delete_list insert insert_failed drop early_drop error  expect_new expect_create expect_delete search_restart\n\
000004d2  00000000 00000000 00000001 00000000 00000000 00000000 00000000 00000002 0000000a 00000000 00000000  00000000 00000000 00000000 00000000\n\
000004d2  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000010 00000003 00000000  00000000 00000000 00000000 00000000\n";
        assert_eq!(
            Conntrack::parse(text).unwrap(),
            Some(Conntrack {
                count: 1234,
                drop: 26,
                early_drop: 3,
                insert_failed: 3,
            })
        );
        assert_eq!(Conntrack::parse("").unwrap(), None, "no conntrack loaded");
        assert!(
            Conntrack::parse("12\nentries drop\n1 2\n").is_err(),
            "columns missing"
        );
    }

    #[test]
    fn series_are_summed_by_labels_and_absent_ones_are_none() {
        let page = "\
istio_tcp_connections_opened_total{reporter=\"source\",destination_service=\"tcp-echo.local\",destination_version=\"v1\",endpoint=\"127.0.0.1:19001\"} 80\n\
istio_tcp_connections_opened_total{reporter=\"source\",destination_service=\"tcp-echo.local\",destination_version=\"v1\",endpoint=\"[::1]:19001\"} 1\n\
istio_tcp_connections_opened_total{reporter=\"source\",destination_service=\"tcp-echo.local\",destination_version=\"v2\",endpoint=\"127.0.0.1:19002\"} 20\n\
istio_tcp_connections_opened_total{reporter=\"source\",destination_service=\"other\",destination_version=\"v1\"} 7\n";
        let family = "istio_tcp_connections_opened_total";
        let v1 = [
            "destination_service=\"tcp-echo.local\"",
            "destination_version=\"v1\"",
        ];
        assert_eq!(sum_series(page, family, &v1).unwrap(), Some(81));
        assert_eq!(
            sum_series(page, family, &["destination_version=\"v3\""]).unwrap(),
            None
        );
    }
}
