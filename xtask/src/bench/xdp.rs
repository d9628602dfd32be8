//! `cargo xtask bench --xdp`: scenario 7, the XDP gateway (endpoints on other
//! hosts) against Linux's own forwarding with iptables DNAT + MASQUERADE, in the
//! same topology, in one run:
//!
//! ```text
//!  client 198.18.0.2 ──veth── 198.18.0.1 node ──veth── 198.19.1.2 v1 (tcp-echo, sink)
//!                                             ──veth── 198.19.2.2 v2 (tcp-echo, sink)
//! ```
//!
//! Both contenders do the same thing: new connections to 198.18.0.1:31400 go 80/20 to
//! v1/v2 port 19001, connections to :31401 to v1's sink on 19100, destination NAT to the
//! backend and source NAT to the node's address toward it. Measured from the client:
//! new connections per second (`ts-bench`, concurrency 16), one long stream's
//! throughput, and the packet rate the node forwarded during that stream (packets
//! received on its three interfaces per second); and the client's SYN retransmissions
//! during the connection test (a dropped SYN costs its connection a second).
//!
//! A third row separates the cost of XDP on veth from the gateway's own work:
//! iptables DNAT again (on ports 31500/31501, which no route takes) while the agent's
//! program stays attached to the same interfaces and passes every packet to the stack.
//!
//! The `xdp` row is checked (`check.rs`): its connections must be the XDP program's
//! own flows, split 80/20, or the bench fails.

use std::{fmt::Write as _, fs, path::Path, process::Command};

use anyhow::{Context, Result};

use super::{
    agent::wait_applied,
    client::{json_number, ts_bench},
    guards::{BpffsDir, CgroupDir, Netns, Processes, TempDir},
};
use crate::cmd;

pub(super) mod check;
mod cost;

/// Clients of the connection cell.
const CONCURRENCY: u32 = 16;

/// One contender's numbers.
struct Row {
    contender: &'static str,
    conn_per_sec: f64,
    p99_us: f64,
    conn_errors: f64,
    gbit_per_sec: f64,
    packets_per_sec: f64,
    /// The client's SYN retransmissions during the connection test.
    syn_retrans: u64,
}

/// The client's count of retransmitted SYNs (`TcpExtTCPSynRetrans`).
pub(super) fn syn_retransmits(client: &Netns) -> Result<u64> {
    let out = client
        .exec("nstat")
        .args(["-asz", "TcpExtTCPSynRetrans"])
        .output()
        .context("nstat (iproute2)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("TcpExtTCPSynRetrans"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no TcpExtTCPSynRetrans in nstat output: {text}"))
}

fn ip(args: &[&str]) -> Result<()> {
    cmd::run(Command::new("ip").args(args))
}

/// `sh -c SCRIPT` inside `netns` (sysctl, ethtool, iptables).
pub(super) fn sh_in(netns: &Netns, script: &str) -> Result<()> {
    cmd::run(netns.exec("sh").args(["-c", script]))
}

/// Installs the Debian packages `programs` come from, if a program is missing.
pub(super) fn install(programs: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = programs
        .iter()
        .filter(|(program, _)| cmd::find_program(program).is_none())
        .map(|(_, package)| *package)
        .collect();
    if !missing.is_empty() {
        cmd::run(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing),
        )?;
    }
    Ok(())
}

/// Packets received on the node's three interfaces so far.
fn node_rx_packets(node: &Netns) -> Result<u64> {
    let mut total = 0;
    for iface in ["ts-node", "xb1", "xb2"] {
        let out = node
            .exec("cat")
            .arg(format!("/sys/class/net/{iface}/statistics/rx_packets"))
            .output()?;
        total += String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .with_context(|| format!("rx_packets of {iface}"))?;
    }
    Ok(total)
}

/// Scenario 7's hosts, linked (`link_hosts`), with the agent's temp dir,
/// cgroup and bpffs dir. Taken apart into locals by its users; they drop
/// in the reverse of the order written here, as locals would.
pub(super) struct Topology {
    pub tmp: TempDir,
    pub node: Netns,
    pub client: Netns,
    pub b1: Netns,
    pub b2: Netns,
    pub cgroup: CgroupDir,
    pub bpffs: BpffsDir,
}

impl Topology {
    /// The namespaces `name`, `name-c`, `name-b1`, `name-b2`, and the rest
    /// named `name`.
    pub(super) fn new(name: &str, cgroup_root: &Path) -> Result<Self> {
        let tmp = TempDir::new(std::env::temp_dir().join(name))?;
        let node = Netns::new(name)?;
        let client = Netns::new(&format!("{name}-c"))?;
        let b1 = Netns::new(&format!("{name}-b1"))?;
        let b2 = Netns::new(&format!("{name}-b2"))?;
        let cgroup = CgroupDir::new(cgroup_root.join(name))?;
        let bpffs = BpffsDir(std::path::PathBuf::from(format!("/sys/fs/bpf/{name}")));
        link_hosts(&node, [&client, &b1, &b2])?;
        Ok(Self {
            tmp,
            node,
            client,
            b1,
            b2,
            cgroup,
            bpffs,
        })
    }
}

pub fn run(root: &Path, bin: &Path, cgroup_root: &Path, quick: bool) -> Result<()> {
    install(&[("iptables", "iptables"), ("ethtool", "ethtool")])?;
    let (duration, warmup) = if quick { (1.0, 0.2) } else { (5.0, 0.5) };
    let Topology {
        tmp,
        node,
        client,
        b1,
        b2,
        cgroup,
        bpffs,
    } = Topology::new(&format!("ts-bxdp-{}", std::process::id()), cgroup_root)?;
    let mut procs = Processes(Vec::new());

    start_backends(bin, [&b1, &b2], &mut procs)?;
    std::thread::sleep(std::time::Duration::from_millis(300));

    // The connection cell: ts-bench's line and the client's SYN retransmissions.
    let conn_cell = |port: u16| -> Result<(String, u64)> {
        let syn_before = syn_retransmits(&client)?;
        let conn = ts_bench(
            bin,
            &client.name,
            &cgroup.0,
            false,
            &[
                "--target",
                &format!("198.18.0.1:{port}"),
                "--concurrency",
                &CONCURRENCY.to_string(),
                "--duration",
                &duration.to_string(),
                "--warmup",
                &warmup.to_string(),
            ],
        )?;
        Ok((conn, syn_retransmits(&client)? - syn_before))
    };
    // A row: its connection cell's results, then the stream cell to `stream_port`.
    let measure = |contender: &'static str, conn: (String, u64), stream_port: u16| -> Result<Row> {
        let (conn, syn_retrans) = conn;
        let stream_target = format!("198.18.0.1:{stream_port}");
        let before = node_rx_packets(&node)?;
        let started = std::time::Instant::now();
        let stream = ts_bench(
            bin,
            &client.name,
            &cgroup.0,
            false,
            &[
                "--mode",
                "stream",
                "--target",
                &stream_target,
                "--duration",
                &duration.to_string(),
                "--warmup",
                "0",
            ],
        )?;
        let elapsed = started.elapsed().as_secs_f64();
        #[expect(clippy::cast_precision_loss, reason = "packet counts fit in f64")]
        let packets_per_sec = (node_rx_packets(&node)? - before) as f64 / elapsed;
        let field = |line: &str, key: &str| {
            json_number(line, key).with_context(|| format!("no {key} in ts-bench output {line}"))
        };
        Ok(Row {
            contender,
            conn_per_sec: field(&conn, "conn_per_sec")?,
            p99_us: field(&conn, "p99_us")?,
            conn_errors: field(&conn, "errors")?,
            gbit_per_sec: field(&stream, "gbit_per_sec")?,
            packets_per_sec,
            syn_retrans,
        })
    };

    // Contender 1: the XDP gateway.
    let log = start_agent(root, bin, &tmp, &cgroup, &bpffs, &node, &mut procs)?;
    // The health probes resolve the backends' MAC addresses.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let mode = attach_mode(&log);
    // The xdp row's connections must be the XDP program's flows, split 80/20.
    let (conn, checks) = check::checked(&tmp.0.join("status.json"), warmup, CONCURRENCY, || {
        conn_cell(31400)
    })?;
    print!("{checks}");
    let xdp = measure("xdp", conn, 31401)?;

    // Contender 2: Linux forwarding with iptables DNAT (80/20 by nth) and MASQUERADE,
    // on ports no route takes; run once with the XDP program attached and passing
    // these packets (3), once without (2).
    iptables_dnat(&node)?;
    let linux_xdp_pass = measure(
        "iptables DNAT, XDP attached (passes)",
        conn_cell(31500)?,
        31501,
    )?;
    let cost = cost::measure(bin, &node, &bpffs.0, quick)?;
    stop_agent(&mut procs)?;

    let linux = measure("iptables DNAT", conn_cell(31500)?, 31501)?;

    report(
        root,
        duration,
        &mode,
        &[&xdp, &linux, &linux_xdp_pass],
        &checks,
        &cost::table(&cost),
        quick,
    )?;
    drop(procs);
    Ok(())
}

/// The XDP mode the agent's log says it attached in (`?` if it does not say).
fn attach_mode(log: &Path) -> String {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .find(|l| l.contains("XDP gateway attached"))
        .map_or_else(
            || "?".into(),
            |l| l.rsplit("mode=").next().unwrap_or("?").trim().to_owned(),
        )
}

/// Stops the agent, the last process started. It unloads on SIGTERM
/// (--unload-on-exit): XDP detached.
pub(super) fn stop_agent(procs: &mut Processes) -> Result<()> {
    let (_, mut agent) = procs.0.pop().expect("the agent");
    if let Some(pid) = rustix::process::Pid::from_raw(i32::try_from(agent.id()).unwrap_or(0)) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::Term);
    }
    agent.wait()?;
    Ok(())
}

/// Linux forwarding: iptables DNAT of 31500 (80/20 by nth) and 31501, and MASQUERADE.
pub(super) fn iptables_dnat(node: &Netns) -> Result<()> {
    sh_in(
        node,
        "iptables -t nat -A PREROUTING -p tcp -d 198.18.0.1 --dport 31500 \
           -m statistic --mode nth --every 5 --packet 0 -j DNAT --to-destination 198.19.2.2:19001 && \
         iptables -t nat -A PREROUTING -p tcp -d 198.18.0.1 --dport 31500 \
           -j DNAT --to-destination 198.19.1.2:19001 && \
         iptables -t nat -A PREROUTING -p tcp -d 198.18.0.1 --dport 31501 \
           -j DNAT --to-destination 198.19.1.2:19100 && \
         iptables -t nat -A POSTROUTING -o xb+ -j MASQUERADE",
    )
}

/// Joins the client and the two backend hosts to the node, each by a veth pair.
fn link_hosts(node: &Netns, hosts: [&Netns; 3]) -> Result<()> {
    // Links and addresses; on the hosts' ends transmit checksum offload off (XDP
    // cannot update a partial checksum) and GRO on (NAPI, which XDP_REDIRECT into a
    // veth needs).
    let [client, b1, b2] = hosts;
    for (host, node_if, host_if, node_addr, host_addr) in [
        (
            client,
            "ts-node",
            "ts-client",
            "198.18.0.1/24",
            "198.18.0.2/24",
        ),
        (b1, "xb1", "eth0", "198.19.1.1/24", "198.19.1.2/24"),
        (b2, "xb2", "eth0", "198.19.2.1/24", "198.19.2.2/24"),
    ] {
        ip(&[
            "-n", &node.name, "link", "add", node_if, "type", "veth", "peer", "name", host_if,
            "netns", &host.name,
        ])?;
        ip(&["-n", &node.name, "addr", "add", node_addr, "dev", node_if])?;
        ip(&["-n", &node.name, "link", "set", node_if, "up"])?;
        ip(&["-n", &host.name, "addr", "add", host_addr, "dev", host_if])?;
        ip(&["-n", &host.name, "link", "set", host_if, "up"])?;
        sh_in(
            host,
            &format!("ethtool -K {host_if} tx off gro on >/dev/null"),
        )?;
    }
    sh_in(node, "echo 1 > /proc/sys/net/ipv4/conf/all/forwarding")
}

/// Prints the table and writes it to `bench/results/xdp-latest.md`.
fn report(
    root: &Path,
    duration: f64,
    mode: &str,
    rows: &[&Row],
    checks: &str,
    cost: &str,
    quick: bool,
) -> Result<()> {
    let mut md = format!(
        "{}\n\nScenario 7: XDP gateway vs Linux forwarding (iptables DNAT + MASQUERADE), one run, \
         {duration} s per cell; XDP {mode} mode on veth; kernel {}\n\n\
         | contender | conn/s (c=16) | p99 µs | conn errors | SYN retransmits | stream Gbit/s | forwarded packets/s (stream) |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        super::report::alone_header("scenario 7 alone (--xdp)", quick),
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.0} | {} | {:.2} | {:.0} |",
            r.contender,
            r.conn_per_sec,
            r.p99_us,
            r.conn_errors,
            r.syn_retrans,
            r.gbit_per_sec,
            r.packets_per_sec
        );
    }
    md.push('\n');
    md.push_str(checks);
    md.push('\n');
    md.push_str(cost);
    println!("{md}");
    let out = root.join("bench/results/xdp-latest.md");
    fs::write(&out, &md).with_context(|| format!("write {}", out.display()))?;
    Ok(())
}

/// Starts the agent with the XDP gateway on the node's three interfaces, on a copy of
/// `bench/rules/xdp/`, and waits until it applied the rules; returns its log file.
pub(super) fn start_agent(
    root: &Path,
    bin: &Path,
    tmp: &TempDir,
    cgroup: &CgroupDir,
    bpffs: &BpffsDir,
    node: &Netns,
    procs: &mut Processes,
) -> Result<std::path::PathBuf> {
    let rules = tmp.0.join("rules");
    fs::create_dir(&rules)?;
    fs::copy(
        root.join("bench/rules/xdp/service.yaml"),
        rules.join("service.yaml"),
    )?;
    let events = tmp.0.join("events.jsonl");
    let log = tmp.0.join("agent.log");
    let mut c = Command::new(bin.join("traffic-shift"));
    c.args(["run", "--rules"])
        .arg(&rules)
        .arg("--cgroup")
        .arg(&cgroup.0)
        .arg("--bpffs")
        .arg(&bpffs.0)
        .args(["--netns", &format!("/var/run/netns/{}", node.name)])
        .args(["--xdp-iface", "ts-node,xb1,xb2"])
        .arg("--events")
        .arg(&events)
        .arg("--status-file")
        .arg(tmp.0.join("status.json"))
        .arg("--admin-socket")
        .arg(tmp.0.join("admin.sock"))
        .arg("--state-dir")
        .arg(tmp.0.join("state"))
        .args(["--metrics-addr", "127.0.0.1:0", "--unload-on-exit"])
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&log)?);
    procs.spawn("agent", &mut c)?;
    wait_applied(&events, 1, &log, procs)?;
    Ok(log)
}

/// tcp-echo (19001) and a byte sink (19100) on each backend host.
pub(super) fn start_backends(bin: &Path, hosts: [&Netns; 2], procs: &mut Processes) -> Result<()> {
    let [b1, b2] = hosts;
    for (host, prefix, addr) in [(b1, "one", "198.19.1.2"), (b2, "two", "198.19.2.2")] {
        let mut c = host.exec(bin.join("tcp-echo"));
        c.args(["--listen", &format!("{addr}:19001"), "--prefix", prefix])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        procs.spawn(&format!("tcp-echo {prefix}"), &mut c)?;
        let mut c = host.exec(bin.join("ts-bench"));
        c.args(["--sink", &format!("{addr}:19100")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        procs.spawn(&format!("sink {prefix}"), &mut c)?;
    }
    Ok(())
}
