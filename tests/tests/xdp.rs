//! End-to-end: the XDP gateway (`--xdp-iface`) for endpoints on other
//! hosts. Four network namespaces:
//!
//! ```text
//!  client 198.18.0.2 ──veth── 198.18.0.1 node (XDP on ts-node, xb1, xb2)
//!                                198.19.1.1 ──veth── 198.19.1.2 backend v1 (tcp-echo "one")
//!                                198.19.2.1 ──veth── 198.19.2.2 backend v2 (tcp-echo "two")
//! ```
//!
//! Every link has IPv6 too (unique local addresses that exist only in
//! these namespaces): client fd00:18::2, node fd00:18::1, backends
//! fd00:19:N::2 behind fd00:19:N::1. The gateway listens on both families;
//! each endpoint is in the ServiceEntry with both addresses.
//!
//! Real TCP connections from the client to the node's gateway port are
//! load balanced at packet level to the backends (destination and source
//! NAT: the backends answer the node, which translates back). Forwarding is
//! on in the node (bpf_fib_lookup needs it). On the hosts' veth ends:
//! transmit checksum offload off (a veth hands XDP a locally made packet
//! with a partial checksum, which a NAT cannot update; real NICs receive
//! full ones), and GRO on, which gives a veth the NAPI context that
//! XDP_REDIRECT into it needs (the kernel's alternative is an XDP program
//! on the receiving end).

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    process::Command,
    time::{Duration, Instant},
};

use traffic_shift_tests::{
    Agent, Cgroup, NODE_ADDR, Netns, Process, RemoteClient, echo_backend, metric, require_root,
    unique_name,
};

const BULK_BYTES: usize = 100 * 1024 * 1024;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_SGRO: u32 = 0x2c;

/// `ethtool -K <iface>` for one feature, in `netns` (SIOCETHTOOL).
fn ethtool_set(netns: &Netns, iface: &str, cmd: u32, on: bool) {
    netns.run_in(|| {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("socket");
        // struct ethtool_value { u32 cmd; u32 data; }
        let mut value = [cmd, u32::from(on)];
        // struct ifreq { char ifr_name[16]; void *ifr_data; ... } (40 bytes)
        let mut ifreq = [0u8; 40];
        ifreq[..iface.len()].copy_from_slice(iface.as_bytes());
        ifreq[16..24].copy_from_slice(&(value.as_mut_ptr() as u64).to_ne_bytes());
        // SAFETY: SIOCETHTOOL with a valid ifreq whose data points to `value`.
        let rc = unsafe { libc::ioctl(socket.as_raw_fd(), 0x8946, ifreq.as_mut_ptr()) };
        assert_eq!(
            rc,
            0,
            "ethtool cmd {cmd:#x} on {iface}: {}",
            std::io::Error::last_os_error()
        );
    });
}

/// Adds IPv6 `addr` to `iface` in `netns`, usable at once (no duplicate
/// address detection).
fn add_v6(netns: &Netns, iface: &str, addr: &str) {
    ip(&[
        "-n",
        &netns.name,
        "addr",
        "add",
        addr,
        "dev",
        iface,
        "nodad",
    ]);
}

/// A backend host: its namespace joined to the node by a veth pair
/// (`node_if` in the node), tcp-echo on `addr:19001`.
struct Backend {
    _echo: Process,
    netns: Netns,
}

fn backend(node: &Netns, name: &str, node_if: &str, subnet: u8, prefix: &str) -> Backend {
    let netns = Netns::new(name);
    ip(&[
        "-n",
        &node.name,
        "link",
        "add",
        node_if,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &netns.name,
    ]);
    ip(&[
        "-n",
        &node.name,
        "addr",
        "add",
        &format!("198.19.{subnet}.1/24"),
        "dev",
        node_if,
    ]);
    add_v6(node, node_if, &format!("fd00:19:{subnet}::1/64"));
    ip(&["-n", &node.name, "link", "set", node_if, "up"]);
    ip(&[
        "-n",
        &netns.name,
        "addr",
        "add",
        &format!("198.19.{subnet}.2/24"),
        "dev",
        "eth0",
    ]);
    add_v6(&netns, "eth0", &format!("fd00:19:{subnet}::2/64"));
    ip(&["-n", &netns.name, "link", "set", "eth0", "up"]);
    ethtool_set(&netns, "eth0", ETHTOOL_STXCSUM, false);
    ethtool_set(&netns, "eth0", ETHTOOL_SGRO, true);
    let echo = echo_backend(
        &netns,
        None,
        prefix,
        &[
            &format!("198.19.{subnet}.2:19001"),
            &format!("[fd00:19:{subnet}::2]:19001"),
        ],
    );
    Backend { _echo: echo, netns }
}

const SERVICE_ENTRY: &str = r"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: tcp-echo-remote
spec:
  hosts: [tcp-echo.remote]
  ports:
  - {number: 9000, name: tcp, protocol: TCP}
  - {number: 9100, name: bulk, protocol: TCP}
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: 198.19.1.2
    ports: {tcp: 19001, bulk: 19100}
    labels: {version: v1}
  - address: 198.19.2.2
    ports: {tcp: 19001, bulk: 19100}
    labels: {version: v2}
  - address: fd00:19:1::2
    ports: {tcp: 19001, bulk: 19100}
    labels: {version: v1}
  - address: fd00:19:2::2
    ports: {tcp: 19001, bulk: 19100}
    labels: {version: v2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: tcp-echo-remote
spec:
  host: tcp-echo.remote
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: tcp-echo-gateway
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ['*']
  - port: {number: 31401, name: bulk, protocol: TCP}
    hosts: ['*']
";

/// The VirtualService: port 31400 split `v1`/`v2` by weight, 31401 (bulk) to v1.
fn virtual_service(v1: u32, v2: u32) -> String {
    format!(
        r"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: tcp-echo-remote
spec:
  hosts: [tcp-echo.remote]
  gateways: [tcp-echo-gateway]
  tcp:
  - match: [{{port: 31400}}]
    route:
    - {{destination: {{host: tcp-echo.remote, port: {{number: 9000}}, subset: v1}}, weight: {v1}}}
    - {{destination: {{host: tcp-echo.remote, port: {{number: 9000}}, subset: v2}}, weight: {v2}}}
  - match: [{{port: 31401}}]
    route:
    - destination: {{host: tcp-echo.remote, port: {{number: 9100}}, subset: v1}}
"
    )
}

/// Everything one test needs. Fields drop in order: agent and client
/// first, namespaces last.
struct Topology {
    agent: Agent,
    remote: RemoteClient,
    v1: Backend,
    _v2: Backend,
    _cgroup: Cgroup,
    node: Netns,
    rules_dir: std::path::PathBuf,
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.rules_dir);
    }
}

fn topology(test: &str, weights: (u32, u32)) -> Topology {
    topology_with(test, weights, &[])
}

/// The topology, the agent run with `agent_args` too.
fn topology_with(test: &str, weights: (u32, u32), agent_args: &[&str]) -> Topology {
    require_root();
    let name = unique_name(test);
    let node = Netns::new(&name);
    node.sysctl("ipv4/conf/all/forwarding", "1");
    node.sysctl("ipv6/conf/all/forwarding", "1");
    let remote = RemoteClient::start(&node);
    add_v6(&node, "ts-node", &format!("{NODE_ADDR6}/64"));
    add_v6(&remote.netns, "ts-client", "fd00:18::2/64");
    ethtool_set(&remote.netns, "ts-client", ETHTOOL_STXCSUM, false);
    ethtool_set(&remote.netns, "ts-client", ETHTOOL_SGRO, true);
    let v1 = backend(&node, &format!("{name}-b1"), "xb1", 1, "one");
    let v2 = backend(&node, &format!("{name}-b2"), "xb2", 2, "two");
    let rules_dir = std::env::temp_dir().join(format!("{name}-rules"));
    let _ = std::fs::remove_dir_all(&rules_dir);
    std::fs::create_dir_all(&rules_dir).expect("rules dir");
    std::fs::write(rules_dir.join("service.yaml"), SERVICE_ENTRY).expect("rules");
    std::fs::write(
        rules_dir.join("virtual-service.yaml"),
        virtual_service(weights.0, weights.1),
    )
    .expect("rules");
    let cgroup = Cgroup::new(&name);
    let agent = Agent::start(
        &name,
        &rules_dir,
        &cgroup,
        &node,
        2,
        &[&["--xdp-iface", "ts-node,xb1,xb2"], agent_args].concat(),
    );
    Topology {
        agent,
        remote,
        v1,
        _v2: v2,
        _cgroup: cgroup,
        node,
        rules_dir,
    }
}

/// The node's IPv6 address on the client's link.
const NODE_ADDR6: &str = "fd00:18::1";

fn gateway() -> String {
    format!("{NODE_ADDR}:31400")
}

/// The seed's shift through the XDP gateway at `gateway` (`family` for
/// messages), from all to v1: 10 connections held, 80/20 exact over 1000
/// new ones, then all to v2 while the held ones stay on v1.
fn seed_shift(t: &mut Topology, gateway: &str, family: &str) {
    let (one, two, errors) = t.remote.client.burst_with_errors(gateway, 20);
    assert_eq!(
        (one, two, errors.len()),
        (20, 0, 0),
        "all to v1 over {family} through the XDP gateway: {errors:?}\n{}",
        t.agent.log_text()
    );
    // Connections held open across the shift keep their backend.
    let held = t.remote.client.call(&format!("hold {gateway} 10"));
    assert_eq!(
        held["answers"],
        serde_json::json!(vec!["one"; 10]),
        "{held}"
    );
    let event = t
        .agent
        .write_rules("virtual-service.yaml", virtual_service(80, 20));
    assert_eq!(event["result"], "applied", "{event}");
    let (one, two, errors) = t.remote.client.burst_with_errors(gateway, 1000);
    println!("XDP gateway over {family}, smooth 80/20 over 1000 connections: one={one} two={two}");
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        (199..=201).contains(&two),
        "XDP gateway over {family} 80/20: v2 got {two} of 1000, want 200 +- 1 (smooth selection)"
    );
    let event = t
        .agent
        .write_rules("virtual-service.yaml", virtual_service(0, 100));
    assert_eq!(event["result"], "applied", "{event}");
    let again = t.remote.client.call("held");
    assert_eq!(
        again["answers"],
        serde_json::json!(vec!["one"; 10]),
        "held {family} connections stay on v1 after all weight went to v2: {again}"
    );
    let (one, two) = t.remote.client.burst(gateway, 20);
    assert_eq!(
        (one, two),
        (0, 20),
        "new {family} connections follow the new weights"
    );
}

#[test]
fn xdp_gateway_seed_shift_and_held_connections() {
    let mut t = topology("xdp-seed", (100, 0));
    let log = t.agent.log_text();
    assert!(
        log.contains("XDP gateway attached") && log.contains("mode=\"native\""),
        "the log says where and in which mode XDP runs:\n{log}"
    );
    seed_shift(&mut t, &gateway(), "IPv4");

    // The counters of the XDP path are on /metrics.
    assert_xdp_counters(&t.agent.metrics());

    // A restarted agent adopts the pinned XDP links: held connections and
    // new ones carry on.
    t.agent.restart(&["--xdp-iface", "ts-node,xb1,xb2"]);
    assert!(
        t.agent
            .log_text()
            .contains("XDP gateway: adopted the pinned link"),
        "{}",
        t.agent.log_text()
    );
    let again = t.remote.client.call("held");
    assert_eq!(
        again["answers"],
        serde_json::json!(vec!["one"; 10]),
        "{again}"
    );
    let (one, two) = t.remote.client.burst(&gateway(), 20);
    assert_eq!((one, two), (0, 20), "after the restart");
}

/// A second v1 endpoint on the v1 host, port 19003 (nothing listens there
/// unless a test starts it).
const SECOND_V1: &str = "198.19.1.2:19003";

/// The topology's rules with [`SECOND_V1`] in v1, and `traffic_policy`
/// (YAML under the DestinationRule's `trafficPolicy:`, if any).
fn rules_with_second_v1(traffic_policy: Option<&str>) -> String {
    let v1 = "  - address: 198.19.1.2\n    ports: {tcp: 19001, bulk: 19100}\n    labels: {version: v1}\n";
    let host = "  host: tcp-echo.remote\n";
    assert!(
        SERVICE_ENTRY.contains(v1) && SERVICE_ENTRY.contains(host),
        "the rules as written"
    );
    let two_v1 = format!(
        "{v1}  - address: 198.19.1.2\n    ports: {{tcp: 19003, bulk: 19103}}\n    labels: {{version: v1}}\n"
    );
    let policy = traffic_policy.map_or_else(String::new, |p| format!("  trafficPolicy:\n{p}"));
    SERVICE_ENTRY
        .replace(v1, &two_v1)
        .replace(host, &format!("{host}{policy}"))
}

/// Waits (up to 10 s) for a log line with `what` about `endpoint`; returns
/// how long it took.
fn wait_log(t: &Topology, what: &str, endpoint: &str) -> Duration {
    let start = Instant::now();
    let tail = format!("endpoint={endpoint}");
    while !t
        .agent
        .log_text()
        .lines()
        .any(|l| l.contains(what) && (l.ends_with(&tail) || l.contains(&format!("{tail} "))))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {what:?} for {endpoint}:\n{}",
            t.agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// Health as on the other paths: a second v1 endpoint (its tcp-echo
/// answers `two`, so the client tells the two apart) shares v1's
/// connections by round robin; when its process dies the probes take it
/// out of the XDP route's table and the other endpoint gets every
/// connection, none refused; when it answers again it is back.
#[test]
fn xdp_gateway_follows_endpoint_health() {
    let mut t = topology("xdp-health", (100, 0));
    let second = echo_backend(&t.v1.netns, None, "two", &[SECOND_V1]);
    let event = t
        .agent
        .write_rules("service.yaml", rules_with_second_v1(None));
    assert_eq!(event["result"], "applied", "{event}");
    assert_eq!(
        t.remote.client.burst(&gateway(), 20),
        (10, 10),
        "round robin over v1's two endpoints"
    );

    drop(second);
    let took = wait_log(&t, "endpoint unhealthy", SECOND_V1);
    eprintln!("dead endpoint out of the XDP route after {took:?}");
    let (one, two, errors) = t.remote.client.burst_with_errors(&gateway(), 100);
    assert_eq!(
        (one, two, errors.len()),
        (100, 0, 0),
        "every connection to v1's live endpoint: {errors:?}"
    );

    let second = echo_backend(&t.v1.netns, None, "two", &[SECOND_V1]);
    let took = wait_log(&t, "healthy again", SECOND_V1);
    eprintln!("back in the XDP route after {took:?}");
    assert_eq!(
        t.remote.client.burst(&gateway(), 20),
        (10, 10),
        "round robin again"
    );
    drop(second);
}

/// Outlier detection as on the other paths: with active checks off, the
/// resets the XDP program sees coming back for a new flow's SYN count as
/// failed connects, and 3 in a row eject the endpoint.
#[test]
fn xdp_gateway_ejects_an_endpoint_whose_connects_fail() {
    let mut t = topology_with("xdp-outlier", (100, 0), &["--health-interval", "0"]);
    let policy = "    outlierDetection:\n      consecutiveGatewayErrors: 3\n      interval: 1s\n      baseEjectionTime: 30s\n      maxEjectionPercent: 50\n";
    let event = t
        .agent
        .write_rules("service.yaml", rules_with_second_v1(Some(policy)));
    assert_eq!(event["result"], "applied", "{event}");
    // Nothing listens on the second endpoint: every other connect is refused.
    let (one, _, errors) = t.remote.client.burst_with_errors(&gateway(), 10);
    assert_eq!((one, errors.len()), (5, 5), "{errors:?}");
    let took = wait_log(&t, "outlier: endpoint ejected", SECOND_V1);
    eprintln!("ejected {took:?} after the burst");
    let (one, two, errors) = t.remote.client.burst_with_errors(&gateway(), 100);
    assert_eq!(
        (one, two, errors.len()),
        (100, 0, 0),
        "the ejected endpoint gets nothing: {errors:?}"
    );
}

/// The seed's shift over IPv6: the same route's IPv6 table (the
/// endpoints' IPv6 addresses), its own smooth sequence.
#[test]
fn xdp_gateway_ipv6_shift_and_held_connections() {
    let mut t = topology("xdp-v6", (100, 0));
    let gateway = format!("[{NODE_ADDR6}]:31400");
    seed_shift(&mut t, &gateway, "IPv6");
    let page = t.agent.metrics();
    let v2_flows = metric(
        &page,
        "traffic_shift_xdp_flows_total",
        &[("destination_version", "v2")],
    );
    assert!(
        v2_flows >= 220,
        "the IPv6 flows are XDP flows: {v2_flows} to v2\n{page}"
    );
}

/// The XDP path's counters after the seed test's 1050 connections (220 of
/// them to v2): flows, packets, connections, and no drop.
fn assert_xdp_counters(page: &str) {
    let page = page.to_owned();
    let flows = metric(
        &page,
        "traffic_shift_kernel_events_total",
        &[("event", "xdp_new_flow")],
    );
    assert!(
        flows >= 1050,
        "every connection was a new XDP flow: {flows}\n{page}"
    );
    let opened_v2 = metric(
        &page,
        "istio_tcp_connections_opened_total",
        &[("destination_version", "v2")],
    );
    assert!(
        opened_v2 >= 220,
        "v2's connections through XDP are counted: {opened_v2}"
    );
    let v2_flows = metric(
        &page,
        "traffic_shift_xdp_flows_total",
        &[("destination_version", "v2")],
    );
    assert_eq!(v2_flows, opened_v2, "XDP flows of v2: {page}");
    for direction in ["request", "response"] {
        let packets = metric(
            &page,
            "traffic_shift_xdp_packets_total",
            &[("destination_version", "v2"), ("direction", direction)],
        );
        // SYN, ACK, data, FIN, ACK at least, each way, per connection.
        assert!(
            packets >= 3 * v2_flows,
            "{direction} packets of v2: {packets} for {v2_flows} flows"
        );
    }
    // The XDP drop reasons (`Event::is_drop`): none. Not even
    // `xdp_no_neighbour`: the agent resolves every XDP endpoint's next hop
    // before the tables that name it go in (docs/xdp.md, "Next hops").
    let dropped = |event: &str| {
        metric(
            &page,
            "traffic_shift_kernel_events_total",
            &[("program", "xdp"), ("event", event)],
        )
    };
    for event in [
        "xdp_no_endpoint",
        "xdp_no_port",
        "xdp_flow_full",
        "xdp_no_route",
        "xdp_no_neighbour",
    ] {
        assert_eq!(dropped(event), 0, "{event}: {page}");
    }
}

/// A 64-bit checksum of a byte stream read whole, word by word.
fn checksum(data: &[u8]) -> u64 {
    data.chunks(8).fold(0xcbf2_9ce4_8422_2325, |h, w| {
        let mut word = [0u8; 8];
        word[..w.len()].copy_from_slice(w);
        (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
fn xdp_gateway_bulk_transfer_integrity() {
    let t = topology("xdp-bulk", (100, 0));
    // A sink on v1's host: reads everything, answers its length and checksum.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let sink = std::thread::scope(|scope| {
        let server = scope.spawn(|| {
            t.v1.netns.run_in(|| {
                let listener = TcpListener::bind("198.19.1.2:19100").expect("bind sink");
                ready_tx.send(()).expect("ready");
                // The agent's health probes connect and close without data.
                loop {
                    let (mut conn, peer) = listener.accept().expect("accept");
                    let mut data = Vec::with_capacity(BULK_BYTES);
                    conn.read_to_end(&mut data).expect("read the stream");
                    if data.is_empty() {
                        continue;
                    }
                    let answer = format!("{} {:016x}\n", data.len(), checksum(&data));
                    conn.write_all(answer.as_bytes()).expect("answer");
                    break (peer, answer);
                }
            })
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("sink ready");
        let mut data = vec![0u8; BULK_BYTES];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for word in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let sent = format!("{} {:016x}\n", data.len(), checksum(&data));
        let addr: SocketAddr = format!("{NODE_ADDR}:31401").parse().unwrap();
        let received = t.remote.netns.run_in(|| {
            let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .expect("connect to the bulk gateway port");
            conn.set_read_timeout(Some(Duration::from_mins(2)))
                .expect("timeout");
            let started = std::time::Instant::now();
            conn.write_all(&data).expect("send 100 MB");
            conn.shutdown(Shutdown::Write).expect("shutdown");
            let mut answer = String::new();
            conn.read_to_string(&mut answer).expect("read the answer");
            println!(
                "100 MB through the XDP gateway in {:.2} s",
                started.elapsed().as_secs_f64()
            );
            answer
        });
        let (peer, answer) = server.join().expect("sink");
        assert_eq!(received, answer, "the client got the sink's answer");
        (peer, answer, sent)
    });
    let (peer, answer, sent) = sink;
    assert_eq!(
        answer, sent,
        "the backend received exactly the 100 MB sent (length and checksum)"
    );
    assert_eq!(
        peer.ip().to_string(),
        "198.19.1.1",
        "source NAT: the backend sees the node's address toward it"
    );
    let _ = &t.node;
}
