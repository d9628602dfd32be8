//! The XDP gateway program run on packets with `BPF_PROG_TEST_RUN`,
//! table-driven in the style of Katran's fixtures: each case is a packet in,
//! the verdict and the packet out (bytes compared with a rewrite computed
//! here independently: headers parsed and checksums recomputed in full by
//! etherparse, never incrementally as the kernel does).
//!
//! The program runs in a network namespace of its own with two veth pairs,
//! addresses, static neighbours and forwarding on, so `bpf_fib_lookup`
//! answers as it would on a node.
//!
//! Needs root: the tests load the eBPF object and create a network
//! namespace. Each loads the program through `with_program_ports`, which
//! calls [`require_root`](crate::test_root::require_root) first and fails
//! without root; none skips.

use crate::compile::ProxyAddrs;
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsFd as _,
    process::Command,
};

use aya::{
    EbpfLoader,
    maps::{HashMap, PerCpuArray},
    programs::Xdp,
};
use etherparse::{Ethernet2Header, IpNumber, Ipv4Header, Ipv6Header, PacketBuilder, TcpHeader};
use traffic_shift_common::{
    EndpointStats, NatEntry, NatKey, RouteTable, ServiceKey, ServiceValue, XDP_SNAT_PORT_MIN,
    map_names,
};

use super::SnatPorts;
use crate::EBPF_OBJECT;
use traffic_shift_config::model::{Destination, Endpoint, RoutingModel, Selection, TcpRoute};

use crate::{compile, limits::Limits, stats::StatIds};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];
const CLIENT2_MAC: [u8; 6] = [2, 0, 0, 0, 1, 3];
const NODE_C_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const NODE_B_MAC: [u8; 6] = [2, 0, 0, 0, 2, 1];
const V1_MAC: [u8; 6] = [2, 0, 0, 0, 2, 2];
const V2_MAC: [u8; 6] = [2, 0, 0, 0, 2, 3];

const GW_PORT: u16 = 31400;
const EP_PORT: u16 = 9000;

/// The test namespace's addresses of one family.
#[derive(Clone, Copy)]
struct Family {
    client: IpAddr,
    client2: IpAddr,
    /// The gateway address (on `c0`).
    gateway: IpAddr,
    /// The node's address on `b0`, toward the endpoints.
    node_b: IpAddr,
    v1: IpAddr,
    v2: IpAddr,
    /// An address of the node that is no gateway.
    other: IpAddr,
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

const fn v6(net: u16, host: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, net, 0, 0, 0, 0, 0, host))
}

const V4: Family = Family {
    client: v4(10, 0, 1, 2),
    client2: v4(10, 0, 1, 3),
    gateway: v4(10, 0, 1, 1),
    node_b: v4(10, 0, 2, 1),
    v1: v4(10, 0, 2, 2),
    v2: v4(10, 0, 2, 3),
    other: v4(10, 0, 2, 1),
};

/// Unique local addresses (fd00::/8) that exist only in the test namespace.
const V6: Family = Family {
    client: v6(1, 2),
    client2: v6(1, 3),
    gateway: v6(1, 1),
    node_b: v6(2, 1),
    v1: v6(2, 2),
    v2: v6(2, 3),
    other: v6(2, 1),
};

/// The namespace: `c0` (client side, 10.0.1.1 and fd00:1::1) and `b0`
/// (endpoint side, 10.0.2.1 and fd00:2::1), each a veth whose peer stays in
/// the namespace.
struct Topology {
    name: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Topology {
    fn new(test: &str) -> Self {
        let name = format!("ts-xdp-{test}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let n = name.as_str();
        for (dev, peer, mac, addr, addr6) in [
            (
                "c0",
                "c1",
                "02:00:00:00:01:01",
                "10.0.1.1/24",
                "fd00:1::1/64",
            ),
            (
                "b0",
                "b1",
                "02:00:00:00:02:01",
                "10.0.2.1/24",
                "fd00:2::1/64",
            ),
        ] {
            ip(&[
                "-n", n, "link", "add", dev, "address", mac, "type", "veth", "peer", "name", peer,
            ]);
            ip(&["-n", n, "addr", "add", addr, "dev", dev]);
            // No duplicate address detection: usable (as a source) at once.
            ip(&["-n", n, "addr", "add", addr6, "dev", dev, "nodad"]);
            ip(&["-n", n, "link", "set", dev, "up"]);
            ip(&["-n", n, "link", "set", peer, "up"]);
        }
        for (addr, mac, dev) in [
            ("10.0.1.2", "02:00:00:00:01:02", "c0"),
            ("10.0.1.3", "02:00:00:00:01:03", "c0"),
            ("10.0.2.2", "02:00:00:00:02:02", "b0"),
            ("10.0.2.3", "02:00:00:00:02:03", "b0"),
            ("fd00:1::2", "02:00:00:00:01:02", "c0"),
            ("fd00:1::3", "02:00:00:00:01:03", "c0"),
            ("fd00:2::2", "02:00:00:00:02:02", "b0"),
            ("fd00:2::3", "02:00:00:00:02:03", "b0"),
        ] {
            ip(&[
                "-n",
                n,
                "neigh",
                "add",
                addr,
                "lladdr",
                mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        }
        Self { name }
    }

    fn path(&self) -> std::path::PathBuf {
        format!("/var/run/netns/{}", self.name).into()
    }

    fn ifindex(&self, dev: &str) -> u32 {
        crate::netns::run_in(&self.path(), || crate::netns::ifindex(dev)).expect("ifindex")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// One gateway route of `family` 80/20 over v1 (10.0.2.2 or fd00:2::2) and
/// v2 (10.0.2.3 or fd00:2::3).
fn model(family: &Family, weights: [u32; 2]) -> RoutingModel {
    let dest = |subset: &str, weight, addr: IpAddr| Destination {
        host: "tcp-echo.remote".into(),
        subset: Some(subset.into()),
        weight,
        endpoint_selection: Selection::Smooth,
        outlier: None,
        endpoints: vec![Endpoint {
            addr: (addr, EP_PORT).into(),
            labels: std::collections::BTreeMap::new(),
        }],
    };
    RoutingModel {
        routes: vec![TcpRoute {
            unix: Vec::new(),
            sni: Vec::new(),
            key: "default/tcp-echo/tcp[0]/gateway default/gw port 31400".into(),
            source: std::path::Path::new("xdp_tests").into(),
            gateway: Some("default/gw".into()),
            service_host: "tcp-echo.remote".into(),
            service_port: GW_PORT,
            listeners: vec![(family.gateway, GW_PORT).into()],
            prefixes: Vec::new(),
            selection: Selection::Smooth,
            destinations: vec![
                dest("v1", weights[0], family.v1),
                dest("v2", weights[1], family.v2),
            ],
        }],
        http: Vec::new(),
        gateways: Vec::new(),
        rollouts: Vec::new(),
        gateway_api_status: std::collections::BTreeMap::new(),
    }
}

/// The loaded program and its maps (fresh, unpinned).
struct Loaded {
    ebpf: aya::Ebpf,
    client_side: u32,
    backend_side: u32,
}

impl Loaded {
    fn set_route(&mut self, family: &Family, weights: [u32; 2]) -> compile::Compiled {
        self.set_model(&model(family, weights))
    }

    fn set_model(&mut self, model: &RoutingModel) -> compile::Compiled {
        let compiled = compile::compile(
            model,
            &|_| false,
            true,
            &StatIds::default(),
            &Limits::default(),
            &ProxyAddrs::default(),
        )
        .expect("compiles");
        let route = compiled.routes.values().next().expect("one route");
        assert!(route.xdp, "a route to other hosts goes to XDP");
        let mut routes: HashMap<_, u32, RouteTable> =
            HashMap::try_from(self.ebpf.map_mut(map_names::ROUTES).expect("routes")).unwrap();
        routes
            .insert(0, route.table.to_table().as_ref(), 0)
            .expect("route");
        let mut gateways: HashMap<_, ServiceKey, ServiceValue> = HashMap::try_from(
            self.ebpf
                .map_mut(map_names::XDP_GATEWAYS)
                .expect("gateways"),
        )
        .unwrap();
        for key in &route.listeners {
            gateways
                .insert(
                    key,
                    ServiceValue {
                        route_id: 0,
                        service_id: 0,
                    },
                    0,
                )
                .expect("gateway");
        }
        compiled
    }

    fn flows(&self) -> Vec<(NatKey, NatEntry)> {
        let flows: HashMap<_, NatKey, NatEntry> =
            HashMap::try_from(self.ebpf.map(map_names::XDP_FLOWS).expect("flows")).unwrap();
        flows.iter().map(Result::unwrap).collect()
    }

    fn stats(&self, id: u32) -> EndpointStats {
        let stats: PerCpuArray<_, EndpointStats> =
            PerCpuArray::try_from(self.ebpf.map(map_names::STATS).expect("stats")).unwrap();
        stats
            .get(&id, 0)
            .unwrap()
            .iter()
            .fold(EndpointStats::default(), |a, c| EndpointStats {
                opened: a.opened + c.opened,
                established: a.established + c.established,
                closed: a.closed + c.closed,
                request_bytes: a.request_bytes + c.request_bytes,
                response_bytes: a.response_bytes + c.response_bytes,
                ..a
            })
    }

    /// BPF_PROG_TEST_RUN: the verdict and the packet as the program left it.
    fn run(&mut self, packet: &[u8], ingress: u32) -> (u32, Vec<u8>) {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut("ts_xdp")
            .expect("program")
            .try_into()
            .unwrap();
        let run = crate::pins::xdp_test_run(prog.fd().expect("fd").as_fd(), packet, ingress, 1)
            .expect("BPF_PROG_TEST_RUN");
        (run.retval, run.packet)
    }
}

fn self_map(loaded: &mut Loaded) -> &mut aya::maps::Map {
    loaded.ebpf.map_mut(map_names::XDP_FLOWS).expect("flows")
}

/// Runs `f` with the program loaded inside the test's namespace.
fn with_program(test: &str, f: impl FnOnce(&mut Loaded) + Send) {
    with_program_ports(test, SnatPorts::default(), f);
}

/// `with_program`, the program giving flows source ports from `ports`.
fn with_program_ports(test: &str, ports: SnatPorts, f: impl FnOnce(&mut Loaded) + Send) {
    crate::test_root::require_root(
        "the XDP tests load eBPF programs and create a network namespace",
    );
    let topo = Topology::new(test);
    let client_side = topo.ifindex("c0");
    let backend_side = topo.ifindex("b0");
    crate::netns::run_in(&topo.path(), || {
        std::fs::write("/proc/sys/net/ipv4/conf/all/forwarding", "1")?;
        std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
        let globals = ports.globals();
        let mut object = EbpfLoader::new();
        super::set_snat_ports(&mut object, &globals);
        let ebpf = object.load(EBPF_OBJECT).expect("load the object");
        let mut loaded = Loaded {
            ebpf,
            client_side,
            backend_side,
        };
        let prog: &mut Xdp = loaded
            .ebpf
            .program_mut("ts_xdp")
            .expect("program")
            .try_into()
            .unwrap();
        prog.load().expect("the verifier accepts ts_xdp");
        f(&mut loaded);
        Ok(())
    })
    .expect("netns");
}

/// A TCP segment (`src` and `dst` of one family).
struct Seg {
    smac: [u8; 6],
    dmac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags: &'static str,
    payload: &'static [u8],
}

fn build(s: &Seg) -> Vec<u8> {
    build_seq(s, 1000, 1001)
}

/// `build` with the segment's own sequence and acknowledgment numbers.
fn build_seq(s: &Seg, seq: u32, ack: u32) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(s.smac, s.dmac);
    let b = match (s.src, s.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => eth.ipv4(src.octets(), dst.octets(), 64),
        (IpAddr::V6(src), IpAddr::V6(dst)) => eth.ipv6(src.octets(), dst.octets(), 64),
        other => panic!("addresses of two families: {other:?}"),
    };
    let b = b.tcp(s.sport, s.dport, seq, 64240);
    let b = match s.flags {
        "S" => b.syn(),
        "SA" => b.syn().ack(ack),
        "A" => b.ack(ack),
        "R" => b.rst(),
        "FA" => b.fin().ack(ack),
        other => panic!("flags {other}"),
    };
    let mut out = Vec::new();
    b.write(&mut out, s.payload).expect("build");
    out
}

/// What the gateway must make of `input`: new MACs, addresses and ports,
/// TTL (hop limit) one less, checksums computed from scratch.
fn rewritten(input: &[u8], want: &Seg) -> Vec<u8> {
    let (mut eth, rest) = Ethernet2Header::from_slice(input).expect("eth");
    eth.source = want.smac;
    eth.destination = want.dmac;
    let mut out = eth.to_bytes().to_vec();
    let (tcp, payload) = match (want.src, want.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let (mut ipv4, rest) = Ipv4Header::from_slice(rest).expect("ipv4");
            ipv4.source = src.octets();
            ipv4.destination = dst.octets();
            ipv4.time_to_live -= 1;
            ipv4.header_checksum = ipv4.calc_header_checksum();
            out.extend_from_slice(&ipv4.to_bytes());
            let (mut tcp, payload) = TcpHeader::from_slice(rest).expect("tcp");
            tcp.source_port = want.sport;
            tcp.destination_port = want.dport;
            tcp.checksum = tcp.calc_checksum_ipv4(&ipv4, payload).expect("checksum");
            (tcp, payload)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let (mut ipv6, rest) = Ipv6Header::from_slice(rest).expect("ipv6");
            ipv6.source = src.octets();
            ipv6.destination = dst.octets();
            ipv6.hop_limit -= 1;
            out.extend_from_slice(&ipv6.to_bytes());
            let (mut tcp, payload) = TcpHeader::from_slice(rest).expect("tcp");
            tcp.source_port = want.sport;
            tcp.destination_port = want.dport;
            tcp.checksum = tcp.calc_checksum_ipv6(&ipv6, payload).expect("checksum");
            (tcp, payload)
        }
        other => panic!("addresses of two families: {other:?}"),
    };
    out.extend_from_slice(&tcp.to_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks the checksums of a packet as a receiver would.
fn assert_checksums_valid(what: &str, packet: &[u8]) {
    let (eth, rest) = Ethernet2Header::from_slice(packet).expect("eth");
    if eth.ether_type == etherparse::EtherType::IPV4 {
        let (ipv4, rest) = Ipv4Header::from_slice(rest).expect("ipv4");
        assert_eq!(ipv4.protocol, IpNumber::TCP);
        let (tcp, payload) = TcpHeader::from_slice(rest).expect("tcp");
        assert_eq!(
            ipv4.header_checksum,
            ipv4.calc_header_checksum(),
            "{what}: IPv4 header checksum"
        );
        assert_eq!(
            tcp.checksum,
            tcp.calc_checksum_ipv4(&ipv4, payload).unwrap(),
            "{what}: TCP checksum"
        );
    } else {
        let (ipv6, rest) = Ipv6Header::from_slice(rest).expect("ipv6");
        assert_eq!(ipv6.next_header, IpNumber::TCP);
        let (tcp, payload) = TcpHeader::from_slice(rest).expect("tcp");
        assert_eq!(
            tcp.checksum,
            tcp.calc_checksum_ipv6(&ipv6, payload).unwrap(),
            "{what}: TCP checksum (IPv6 pseudo-header)"
        );
    }
}

/// The offset of the TCP header in a frame built by `build`.
fn l4_offset(packet: &[u8]) -> usize {
    if packet[12..14] == [0x86, 0xdd] {
        14 + 40
    } else {
        14 + 20
    }
}

fn tcp_ports(packet: &[u8]) -> (u16, u16) {
    let l4 = &packet[l4_offset(packet)..];
    (
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    )
}

fn client_seg(
    family: &Family,
    second_client: bool,
    sport: u16,
    flags: &'static str,
    payload: &'static [u8],
) -> Seg {
    let (src, smac) = if second_client {
        (family.client2, CLIENT2_MAC)
    } else {
        (family.client, CLIENT_MAC)
    };
    Seg {
        smac,
        dmac: NODE_C_MAC,
        src,
        dst: family.gateway,
        sport,
        dport: GW_PORT,
        flags,
        payload,
    }
}

/// Forwards client -> gateway `seg` and checks it went to `backend` with
/// every byte as expected; returns the node's source port toward it.
fn expect_forwarded(
    loaded: &mut Loaded,
    family: &Family,
    what: &str,
    seg: &Seg,
    backend: (IpAddr, [u8; 6]),
) -> u16 {
    let input = build(seg);
    let (verdict, out) = loaded.run(&input, loaded.client_side);
    assert_eq!(
        verdict, XDP_REDIRECT,
        "{what}: redirected to the endpoint side"
    );
    let (snat_port, dport) = tcp_ports(&out);
    assert_eq!(dport, EP_PORT, "{what}: endpoint port");
    assert!(
        snat_port >= XDP_SNAT_PORT_MIN,
        "{what}: source port {snat_port} in the SNAT range"
    );
    let want = Seg {
        smac: NODE_B_MAC,
        dmac: backend.1,
        src: family.node_b,
        dst: backend.0,
        sport: snat_port,
        dport: EP_PORT,
        flags: seg.flags,
        payload: seg.payload,
    };
    assert_eq!(out, rewritten(&input, &want), "{what}: rewritten bytes");
    assert_checksums_valid(what, &out);
    snat_port
}

/// The counter slot of the (one) route's first endpoint.
fn first_stat_id(compiled: &crate::compile::Compiled) -> u32 {
    let route = compiled.routes.values().next().expect("a route");
    route.table.to_table().backends[0].stat_id
}

/// An address as the maps hold it (`NatKey::src`).
fn map_addr(ip: IpAddr) -> traffic_shift_common::Addr {
    compile::service_key((ip, 0).into()).addr
}

#[test]
fn xdp_gateway_flows_ipv4() {
    with_program("flows4", |loaded| flows(loaded, &V4));
}

#[test]
fn xdp_gateway_flows_ipv6() {
    with_program("flows6", |loaded| flows(loaded, &V6));
}

/// A flow's life through the gateway, for the addresses of `f`.
fn flows(loaded: &mut Loaded, f: &Family) {
    let compiled = loaded.set_route(f, [80, 20]);
    let stat_v1 = first_stat_id(&compiled);

    // A SYN to the gateway: v1 (the smooth table's first slot).
    let syn = client_seg(f, false, 40000, "S", b"");
    let port1 = expect_forwarded(loaded, f, "SYN to the gateway", &syn, (f.v1, V1_MAC));
    assert_eq!(loaded.flows().len(), 2, "one entry per direction");
    assert_eq!(loaded.stats(stat_v1).opened, 1, "v1 counts the flow");

    // A retransmitted SYN keeps its endpoint and port.
    let again = expect_forwarded(loaded, f, "SYN retransmitted", &syn, (f.v1, V1_MAC));
    assert_eq!(again, port1);

    // The endpoint's SYN-ACK gets the reverse translation, out of c0.
    let reply = Seg {
        smac: V1_MAC,
        dmac: NODE_B_MAC,
        src: f.v1,
        dst: f.node_b,
        sport: EP_PORT,
        dport: port1,
        flags: "SA",
        payload: b"",
    };
    let input = build(&reply);
    let (verdict, out) = loaded.run(&input, loaded.backend_side);
    assert_eq!(verdict, XDP_REDIRECT, "reply redirected to the client side");
    let want = Seg {
        smac: NODE_C_MAC,
        dmac: CLIENT_MAC,
        src: f.gateway,
        dst: f.client,
        sport: GW_PORT,
        dport: 40000,
        flags: "SA",
        payload: b"",
    };
    assert_eq!(out, rewritten(&input, &want), "reply rewritten bytes");
    assert_checksums_valid("reply", &out);
    assert_eq!(loaded.stats(stat_v1).established, 1);

    // All weight to v2: the open flow stays on v1, new ones go to v2.
    loaded.set_route(f, [0, 100]);
    let data = client_seg(f, false, 40000, "A", b"hello, gateway");
    let kept = expect_forwarded(
        loaded,
        f,
        "data after a weight change",
        &data,
        (f.v1, V1_MAC),
    );
    assert_eq!(kept, port1, "the flow keeps its source port");
    assert_eq!(
        loaded.stats(stat_v1).request_bytes,
        14,
        "payload bytes counted"
    );

    // Two clients with the same source port to the same endpoint get
    // different source ports toward it.
    let a = expect_forwarded(
        loaded,
        f,
        "SYN of client 1 after the change",
        &client_seg(f, false, 40001, "S", b""),
        (f.v2, V2_MAC),
    );
    let b = expect_forwarded(
        loaded,
        f,
        "SYN of client 2, same source port",
        &client_seg(f, true, 40001, "S", b""),
        (f.v2, V2_MAC),
    );
    assert_ne!(a, b, "two flows to one endpoint never share a source port");

    flows_end(loaded, f, stat_v1);
}

/// The end of `flows`: a reset, and an idle timeout.
fn flows_end(loaded: &mut Loaded, f: &Family, stat_v1: u32) {
    let syn = client_seg(f, false, 40000, "S", b"");
    // A reset ends the flow: counted closed, and a new SYN on the same
    // 4-tuple is a new connection (on v2 now).
    expect_forwarded(
        loaded,
        f,
        "RST from the client",
        &client_seg(f, false, 40000, "R", b""),
        (f.v1, V1_MAC),
    );
    assert_eq!(loaded.stats(stat_v1).closed, 1, "the reset closes the flow");
    assert!(
        !loaded
            .flows()
            .iter()
            .any(|(k, _)| k.src == map_addr(f.client) && k.sport == 40000u16.to_be()),
        "the reset removed the flow's entries"
    );
    expect_forwarded(
        loaded,
        f,
        "SYN on the 4-tuple of a reset flow",
        &syn,
        (f.v2, V2_MAC),
    );

    // An idle flow ends: its next packet is unknown, passed as is, and
    // its entries go.
    let idle_client = client_seg(f, true, 40001, "A", b"late");
    {
        let mut flows: HashMap<_, NatKey, NatEntry> = HashMap::try_from(self_map(loaded)).unwrap();
        let entries: Vec<(NatKey, NatEntry)> = flows.iter().map(Result::unwrap).collect();
        for (k, mut v) in entries {
            v.last_seen_ns = 0;
            flows.insert(k, v, 0).unwrap();
        }
    }
    let late = build(&idle_client);
    let before = loaded.flows().len();
    assert_eq!(
        loaded.run(&late, loaded.client_side),
        (XDP_PASS, late.clone()),
        "a packet of an idle-expired flow passes untouched"
    );
    assert_eq!(
        loaded.flows().len(),
        before - 2,
        "both of its entries are gone"
    );
}

#[test]
fn xdp_gateway_passes_what_it_does_not_serve_ipv4() {
    with_program("passes4", |loaded| {
        let f = &V4;
        loaded.set_route(f, [80, 20]);
        let mut passes = passes_of_both_families(f);
        let syn2 = build(&client_seg(f, false, 40004, "S", b"abcdefgh"));
        let mut udp = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, NODE_C_MAC)
            .ipv4(octets4(f.client), octets4(f.gateway), 64)
            .udp(40000, GW_PORT)
            .write(&mut udp, b"udp")
            .unwrap();
        passes.push(("UDP to the gateway port", udp));
        let mut fragment = syn2.clone();
        fragment[20] = 0x20; // More fragments.
        passes.push(("an IPv4 first fragment", fragment));
        let mut later = syn2.clone();
        later[21] = 0x10; // Offset 16 bytes.
        passes.push(("an IPv4 later fragment", later));
        let mut options = syn2.clone();
        options[14] = 0x46; // IHL 6: options.
        passes.push(("IPv4 with options", options));
        let mut short_ihl = syn2.clone();
        short_ihl[14] = 0x44; // IHL 4: malformed.
        passes.push(("IPv4 with IHL 4", short_ihl));
        let mut long_total = syn2.clone();
        long_total[16] = 0x40; // Total length past the frame.
        passes.push(("IPv4 total length past the frame", long_total));
        let mut ttl_1 = syn2.clone();
        ttl_1[22] = 1; // The stack answers with ICMP time exceeded.
        fix_ipv4_checksum(&mut ttl_1);
        passes.push(("a SYN with TTL 1", ttl_1));
        passes.push(("truncated IPv4 header", syn2[..24].to_vec()));
        for (what, packet) in passes {
            passes_untouched(loaded, what, &packet);
        }
        passes_with_no_endpoint(loaded, f);
    });
}

#[test]
fn xdp_gateway_passes_what_it_does_not_serve_ipv6() {
    with_program("passes6", |loaded| {
        let f = &V6;
        loaded.set_route(f, [80, 20]);
        let mut passes = passes_of_both_families(f);
        let syn2 = build(&client_seg(f, false, 40004, "S", b"abcdefgh"));
        let mut udp = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, NODE_C_MAC)
            .ipv6(octets6(f.client), octets6(f.gateway), 64)
            .udp(40000, GW_PORT)
            .write(&mut udp, b"udp")
            .unwrap();
        passes.push(("UDP to the gateway port", udp));
        let mut icmp = Vec::new();
        PacketBuilder::ethernet2(CLIENT_MAC, NODE_C_MAC)
            .ipv6(octets6(f.client), octets6(f.gateway), 64)
            .icmpv6_echo_request(1, 1)
            .write(&mut icmp, b"ping")
            .unwrap();
        passes.push(("ICMPv6 echo to the gateway", icmp));
        // Extension headers before TCP: the program does not walk them.
        // Fragment header (an atomic fragment: offset 0, no more).
        passes.push((
            "an IPv6 fragment header",
            with_extension(&syn2, 44, [6, 0, 0, 0, 0, 0, 0, 1]),
        ));
        // A later fragment (offset 8 bytes, more fragments).
        passes.push((
            "an IPv6 later fragment",
            with_extension(&syn2, 44, [6, 0, 0, 9, 0, 0, 0, 2]),
        ));
        // Destination options and hop-by-hop options, each a PadN.
        passes.push((
            "IPv6 destination options",
            with_extension(&syn2, 60, [6, 0, 1, 4, 0, 0, 0, 0]),
        ));
        passes.push((
            "IPv6 hop-by-hop options",
            with_extension(&syn2, 0, [6, 0, 1, 4, 0, 0, 0, 0]),
        ));
        passes.push((
            "IPv6 routing header",
            with_extension(&syn2, 43, [6, 0, 0, 0, 0, 0, 0, 0]),
        ));
        let mut long_payload = syn2.clone();
        long_payload[18] = 0x04; // Payload length past the frame.
        passes.push(("IPv6 payload length past the frame", long_payload));
        let mut short_payload = syn2.clone();
        short_payload[18..20].copy_from_slice(&19u16.to_be_bytes());
        passes.push(("IPv6 payload length under a TCP header", short_payload));
        let mut hop_1 = syn2.clone();
        hop_1[21] = 1; // The stack answers with ICMPv6 time exceeded.
        passes.push(("a SYN with hop limit 1", hop_1));
        let mut version4 = syn2.clone();
        version4[14] = 0x40 | (version4[14] & 0x0f); // Version 4 under the IPv6 ethertype.
        passes_untouched(loaded, "IPv6 ethertype, version 4 header", &version4);
        passes.push(("truncated IPv6 header", syn2[..14 + 39].to_vec()));
        for (what, packet) in passes {
            passes_untouched(loaded, what, &packet);
        }
        passes_with_no_endpoint(loaded, f);
    });
}

fn octets4(ip: IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(ip) => ip.octets(),
        IpAddr::V6(_) => panic!("{ip} is not IPv4"),
    }
}

fn octets6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V6(ip) => ip.octets(),
        IpAddr::V4(_) => panic!("{ip} is not IPv6"),
    }
}

fn fix_ipv4_checksum(packet: &mut [u8]) {
    let (mut ipv4, _) = Ipv4Header::from_slice(&packet[14..]).expect("ipv4");
    ipv4.header_checksum = ipv4.calc_header_checksum();
    packet[14..34].copy_from_slice(&ipv4.to_bytes());
}

/// `packet` (IPv6, TCP) with an 8-byte extension header of type `kind`
/// (whose first byte, its next header, says TCP) before the TCP header.
fn with_extension(packet: &[u8], kind: u8, header: [u8; 8]) -> Vec<u8> {
    let mut out = packet[..54].to_vec();
    out[20] = kind;
    let payload = u16::from_be_bytes([out[18], out[19]]) + 8;
    out[18..20].copy_from_slice(&payload.to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&packet[54..]);
    out
}

/// Packets of `f`'s family that pass untouched, made alike in both.
fn passes_of_both_families(f: &Family) -> Vec<(&'static str, Vec<u8>)> {
    let mut passes = Vec::new();
    let mut other_port = client_seg(f, false, 40002, "S", b"");
    other_port.dport = 22;
    passes.push((
        "TCP to another port of the gateway address",
        build(&other_port),
    ));
    let mut other_addr = client_seg(f, false, 40002, "S", b"");
    other_addr.dst = f.other;
    passes.push((
        "a SYN to the gateway port of another address of the node",
        build(&other_addr),
    ));
    passes.push((
        "an ACK to the gateway without a flow",
        build(&client_seg(f, false, 40003, "A", b"x")),
    ));
    let syn2 = build(&client_seg(f, false, 40004, "S", b"abcdefgh"));
    let l4 = l4_offset(&syn2);
    let mut bad_offset = syn2.clone();
    bad_offset[l4 + 12] = 0xf0; // TCP data offset 60 bytes, past the segment.
    passes.push(("TCP data offset past the segment", bad_offset));
    let mut short_offset = syn2.clone();
    short_offset[l4 + 12] = 0x40; // TCP data offset 16 bytes, under a header.
    passes.push(("TCP data offset under 20 bytes", short_offset));
    passes.push(("truncated TCP header", syn2[..l4 + 19].to_vec()));
    passes.push(("Ethernet header only", syn2[..14].to_vec()));
    let mut arp = syn2[..42].to_vec();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    passes.push(("ARP", arp));
    passes
}

/// A SYN whose subset has no endpoint left goes to the node's stack
/// (which resets it), untouched.
fn passes_with_no_endpoint(loaded: &mut Loaded, f: &Family) {
    let mut empty = model(f, [0, 100]);
    empty.routes[0].destinations[1].endpoints.clear();
    loaded.set_model(&empty);
    let syn = build(&client_seg(f, false, 40005, "S", b""));
    passes_untouched(loaded, "a SYN to a subset with no endpoint", &syn);
}

/// `packet` from the client side passes untouched and makes no flow.
fn passes_untouched(loaded: &mut Loaded, what: &str, packet: &[u8]) {
    let before = loaded.flows().len();
    let (verdict, out) = loaded.run(packet, loaded.client_side);
    assert_eq!(verdict, XDP_PASS, "{what}: passed");
    assert_eq!(out, packet, "{what}: untouched");
    assert_eq!(loaded.flows().len(), before, "{what}: no flow made");
}

/// `--xdp-snat-ports 40000-40003`: flows get those four ports, each its
/// own; a fifth flow to the same endpoint finds none and is dropped
/// (`xdp_no_port`; the client retries later), making no flow.
#[test]
fn xdp_gateway_snat_port_range() {
    let ports: SnatPorts = "40000-40003".parse().expect("a range");
    with_program_ports("snatports", ports, |loaded| {
        let f = &V4;
        loaded.set_route(f, [100, 0]);
        let mut seen = std::collections::BTreeSet::new();
        for sport in 41000..41004 {
            let syn = client_seg(f, false, sport, "S", b"");
            let input = build(&syn);
            let (verdict, out) = loaded.run(&input, loaded.client_side);
            assert_eq!(verdict, XDP_REDIRECT, "SYN from port {sport}");
            let (snat, _) = tcp_ports(&out);
            assert!(
                (40000..=40003).contains(&snat),
                "source port {snat} in --xdp-snat-ports 40000-40003"
            );
            seen.insert(snat);
        }
        assert_eq!(seen.len(), 4, "four flows, four ports: {seen:?}");
        let before = loaded.flows().len();
        let fifth = build(&client_seg(f, false, 41004, "S", b""));
        let (verdict, _) = loaded.run(&fifth, loaded.client_side);
        assert_eq!(verdict, XDP_DROP, "no port left: the SYN is dropped");
        assert_eq!(loaded.flows().len(), before, "and makes no flow");
    });
}

#[test]
fn xdp_gateway_keeps_each_flows_next_hop_ipv4() {
    with_program("hop4", |loaded| next_hop_kept(loaded, &V4));
}

#[test]
fn xdp_gateway_keeps_each_flows_next_hop_ipv6() {
    with_program("hop6", |loaded| next_hop_kept(loaded, &V6));
}

/// The entry of the flow direction whose key has source `src`.
fn entry_from(loaded: &Loaded, src: IpAddr) -> (NatKey, NatEntry) {
    loaded
        .flows()
        .into_iter()
        .find(|(k, _)| k.src == map_addr(src))
        .expect("an entry for the flow")
}

/// Each direction of a flow keeps the next hop it was sent to: a packet
/// of an established flow makes no `bpf_fib_lookup`, so a neighbour's new
/// MAC address is not seen until the kept hop is `XDP_HOP_REFRESH_NS` old
/// (aged here in the map, not waited for); then it is looked up, used and
/// kept. The reply direction looks its hop up with its first packet.
fn next_hop_kept(loaded: &mut Loaded, f: &Family) {
    use traffic_shift_common::{XDP_HOP_REFRESH_NS, hop_time};
    const MOVED_MAC: [u8; 6] = [2, 0, 0, 0, 2, 0x99];
    loaded.set_route(f, [100, 0]);
    let port = expect_forwarded(
        loaded,
        f,
        "SYN",
        &client_seg(f, false, 40010, "S", b""),
        (f.v1, V1_MAC),
    );
    let (_, forward) = entry_from(loaded, f.client);
    assert_eq!(
        (forward.hop_ifindex, forward.hop_dmac, forward.hop_smac),
        (loaded.backend_side, V1_MAC, NODE_B_MAC),
        "the SYN's lookup is kept in the forward entry"
    );
    let (reply_key, reply) = entry_from(loaded, f.v1);
    assert_eq!(reply.hop_ifindex, 0, "no reply packet yet: no hop");

    // v1's MAC address changes (this thread is in the test's namespace).
    ip(&[
        "neigh",
        "replace",
        &f.v1.to_string(),
        "lladdr",
        "02:00:00:00:02:99",
        "dev",
        "b0",
        "nud",
        "permanent",
    ]);
    let data = client_seg(f, false, 40010, "A", b"kept");
    expect_forwarded(loaded, f, "data: the kept hop", &data, (f.v1, V1_MAC));

    // The kept hop made older than the refresh time: looked up again.
    {
        let (key, mut entry) = entry_from(loaded, f.client);
        let mut flows: HashMap<_, NatKey, NatEntry> = HashMap::try_from(self_map(loaded)).unwrap();
        entry.hop_checked = entry
            .hop_checked
            .wrapping_sub(hop_time(XDP_HOP_REFRESH_NS) + 1);
        flows.insert(key, entry, 0).unwrap();
    }
    expect_forwarded(
        loaded,
        f,
        "data after the refresh time",
        &data,
        (f.v1, MOVED_MAC),
    );
    let (_, forward) = entry_from(loaded, f.client);
    assert_eq!(forward.hop_dmac, MOVED_MAC, "the new hop is kept");

    // The reply's first packet looks its hop up and keeps it.
    let answer = Seg {
        smac: V1_MAC,
        dmac: NODE_B_MAC,
        src: f.v1,
        dst: f.node_b,
        sport: EP_PORT,
        dport: port,
        flags: "SA",
        payload: b"",
    };
    let (verdict, _) = loaded.run(&build(&answer), loaded.backend_side);
    assert_eq!(verdict, XDP_REDIRECT, "the reply goes to the client side");
    let reply = loaded
        .flows()
        .into_iter()
        .find(|(k, _)| *k == reply_key)
        .expect("the reply entry")
        .1;
    assert_eq!(
        (reply.hop_ifindex, reply.hop_dmac, reply.hop_smac),
        (loaded.client_side, CLIENT_MAC, NODE_C_MAC)
    );
}

#[test]
fn xdp_gateway_frees_a_port_when_the_endpoint_closed_second_ipv4() {
    let ports: SnatPorts = "61000-61000".parse().expect("a range");
    with_program_ports("close4", ports, |loaded| close_and_port(loaded, &V4));
}

#[test]
fn xdp_gateway_frees_a_port_when_the_endpoint_closed_second_ipv6() {
    let ports: SnatPorts = "61000-61000".parse().expect("a range");
    with_program_ports("close6", ports, |loaded| close_and_port(loaded, &V6));
}

/// One packet of a flow through the gateway: `seg` with its sequence
/// and acknowledgment numbers, from the client side (a client's segment)
/// or the endpoint side (an endpoint's, `seg.src` is the endpoint).
fn pass_seg(loaded: &mut Loaded, what: &str, seg: &Seg, seq: u32, ack: u32) {
    let side = if seg.dport == GW_PORT {
        loaded.client_side
    } else {
        loaded.backend_side
    };
    let (verdict, _) = loaded.run(&build_seq(seg, seq, ack), side);
    assert_eq!(verdict, XDP_REDIRECT, "{what}: forwarded");
}

/// The endpoint's segment of the flow it knows as `port`.
fn endpoint_seg(f: &Family, port: u16, flags: &'static str, payload: &'static [u8]) -> Seg {
    Seg {
        smac: V1_MAC,
        dmac: NODE_B_MAC,
        src: f.v1,
        dst: f.node_b,
        sport: EP_PORT,
        dport: port,
        flags,
        payload,
    }
}

/// Ages every entry by `by` nanoseconds (no waiting).
fn age_flows(loaded: &mut Loaded, by: u64) {
    let mut flows: HashMap<_, NatKey, NatEntry> = HashMap::try_from(self_map(loaded)).unwrap();
    let entries: Vec<(NatKey, NatEntry)> = flows.iter().map(Result::unwrap).collect();
    for (k, mut v) in entries {
        v.last_seen_ns = v.last_seen_ns.wrapping_sub(by);
        flows.insert(k, v, 0).unwrap();
    }
}

/// With one source port (`--xdp-snat-ports 61000-61000`): a flow the
/// client closes first frees the port at its last ACK, so the next flow
/// to the same endpoint gets it at once; a flow the endpoint closes first
/// keeps it for the endpoint's TIME_WAIT (`XDP_TIME_WAIT_NS`), past the
/// half-close timeout, and then lets it go.
fn close_and_port(loaded: &mut Loaded, f: &Family) {
    use traffic_shift_common::{XDP_CLOSING_TIMEOUT_NS, XDP_TIME_WAIT_NS};
    let stat_v1 = first_stat_id(&loaded.set_route(f, [100, 0]));

    // The client closes first, with its last bytes on the FIN.
    let c = |flags, payload| client_seg(f, false, 42000, flags, payload);
    let port = expect_forwarded(loaded, f, "SYN", &c("S", b""), (f.v1, V1_MAC));
    assert_eq!(port, 61000, "the one port");
    pass_seg(
        loaded,
        "SYN-ACK",
        &endpoint_seg(f, port, "SA", b""),
        5000,
        1001,
    );
    pass_seg(loaded, "ACK", &c("A", b""), 1001, 5001);
    pass_seg(loaded, "client FIN", &c("FA", b"bye"), 1001, 5001);
    pass_seg(loaded, "an ACK of old data", &c("A", b""), 1005, 5001);
    assert_eq!(loaded.flows().len(), 2, "half-closed: the flow stays");
    // The endpoint's FIN acknowledges the client's (1001 + 3 + 1).
    pass_seg(
        loaded,
        "endpoint FIN",
        &endpoint_seg(f, port, "FA", b""),
        5001,
        1005,
    );
    assert_eq!(loaded.stats(stat_v1).closed, 1, "closed both ways");
    let (_, reply) = entry_from(loaded, f.v1);
    assert!(
        reply.flags & traffic_shift_common::nat_flags::PASSIVE_CLOSE != 0,
        "the endpoint closed second"
    );
    pass_seg(loaded, "an ACK short of the FIN", &c("A", b""), 1005, 5001);
    assert_eq!(
        loaded.flows().len(),
        2,
        "the endpoint still waits for the last ACK"
    );
    pass_seg(loaded, "the last ACK", &c("A", b""), 1005, 5002);
    assert!(loaded.flows().is_empty(), "the last ACK ends the flow");

    // The port serves the next flow at once; its endpoint closes first.
    let d = |flags| client_seg(f, true, 42001, flags, b"");
    let again = expect_forwarded(loaded, f, "SYN of the next flow", &d("S"), (f.v1, V1_MAC));
    assert_eq!(again, 61000, "the freed port");
    pass_seg(
        loaded,
        "SYN-ACK",
        &endpoint_seg(f, again, "SA", b""),
        7000,
        1001,
    );
    pass_seg(loaded, "ACK", &d("A"), 1001, 7001);
    pass_seg(
        loaded,
        "endpoint FIN",
        &endpoint_seg(f, again, "FA", b""),
        7001,
        1001,
    );
    pass_seg(loaded, "client FIN", &d("FA"), 1001, 7002);
    pass_seg(
        loaded,
        "endpoint's last ACK",
        &endpoint_seg(f, again, "A", b""),
        7002,
        1002,
    );
    assert_eq!(loaded.stats(stat_v1).closed, 2);
    assert_eq!(
        loaded.flows().len(),
        2,
        "the endpoint holds TIME_WAIT: the flow keeps its port"
    );
    let third = build(&client_seg(f, false, 42002, "S", b""));
    age_flows(loaded, XDP_CLOSING_TIMEOUT_NS + 1_000_000_000);
    let (verdict, _) = loaded.run(&third, loaded.client_side);
    assert_eq!(
        verdict, XDP_DROP,
        "past the half-close timeout, still no port (xdp_no_port)"
    );
    age_flows(loaded, XDP_TIME_WAIT_NS);
    let (verdict, out) = loaded.run(&third, loaded.client_side);
    assert_eq!(verdict, XDP_REDIRECT, "after the endpoint's TIME_WAIT");
    assert_eq!(tcp_ports(&out).0, 61000, "the port again");
}
