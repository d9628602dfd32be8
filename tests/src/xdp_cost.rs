//! The XDP gateway's cost per packet, measured with `BPF_PROG_TEST_RUN` on
//! the program a running agent attached (`cargo xtask bench --xdp` runs it
//! through `ts-xdp-cost`, in the node's network namespace).
//!
//! The program's maps are the agent's own, so the packets take the paths
//! real traffic takes: a SYN to the gateway makes a flow (a pick, a source
//! port, two conntrack entries), a later packet of the client follows its
//! entry, an endpoint's answer follows the reverse entry, and a packet for
//! the node that no gateway takes is passed. Every run's verdict is checked:
//! a packet that did not go where its row says fails the measurement.
//!
//! A run rewrites its packet in place, so repeating one buffer
//! (`repeat` > 1) would measure the rewritten packet, not the one sent. The
//! stateful rows are therefore one run per call, with a fresh copy of the
//! packet each time, and the median of the kernel's time per call is
//! shown. That time includes the kernel's own clock reads around the run:
//! the passed packet is measured both ways (one run per call, and a million
//! runs of one call), and the difference is that floor.
//!
//! The established rows are also measured with `repeat`, as Katran's and the
//! issue's figures are, free of that floor: on a flow of the agent's map whose
//! entry rewrites a packet into itself (the same addresses and ports; the
//! next hop, counters and flags of a real flow of the run), so each run of a
//! call is an established flow's packet taking the same path as any other.
//! The TTL, which each run lowers, starts at 255 for [`LOOP_REPEAT`] runs.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsFd as _, OwnedFd},
    path::Path,
};

use aya::maps::{HashMap, Map, MapData};
use etherparse::PacketBuilder;
use traffic_shift_common::{Addr, FAMILY_V4, NatEntry, NatKey, addr_from_ip4, map_names};
use traffic_shift_datapath::{netns, pins};

/// XDP verdicts (`enum xdp_action`).
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// TCP payload of the data packets (a small request or answer).
const PAYLOAD: [u8; 64] = [b'x'; 64];
/// Runs of the passed packet in its one-call measurement.
const REPEAT: u32 = 1_000_000;
/// Runs per call of an established flow's packet that rewrites into itself:
/// each lowers the TTL, which must stay above 1.
const LOOP_REPEAT: u32 = 250;
/// The client port of the self-rewriting flows (the measured flows' ports are
/// from 20 000 up).
const LOOP_PORT: u16 = 19_999;

/// What to measure, and where.
pub struct Setup<'a> {
    /// The node's network namespace (`/var/run/netns/NAME`): the runs are
    /// made from a thread inside it, where the interfaces are.
    pub netns: &'a Path,
    /// The agent's bpffs pin directory.
    pub pin_dir: &'a Path,
    /// The interface clients arrive on (its pinned XDP link names the program).
    pub client_iface: &'a str,
    /// The endpoints' interfaces, by endpoint address.
    pub endpoint_ifaces: &'a [(Ipv4Addr, String)],
    /// The client's address; its flows use source ports from 20 000 up.
    pub client: Ipv4Addr,
    /// The gateway's address and port.
    pub gateway: SocketAddrV4,
    /// A port of the gateway address that no gateway takes.
    pub other_port: u16,
    /// New flows made (each SYN is one sample).
    pub flows: u16,
    /// Samples of each data row (the flows' packets, in turn).
    pub samples: usize,
}

/// One row: a kind of packet, the median and mean kernel time per run.
#[derive(Debug)]
pub struct Row {
    pub packet: &'static str,
    pub verdict: &'static str,
    pub median_ns: u32,
    pub mean_ns: f64,
    /// How it was measured.
    pub how: String,
}

/// Measures the rows, then ends the flows it made (a reset each).
pub fn measure(setup: &Setup<'_>) -> Result<Vec<Row>, String> {
    // Opened here: `ip netns exec` would hide bpffs under its own /sys.
    let link_path = setup.pin_dir.join(format!(
        "link_ts_xdp_{}",
        setup.client_iface.replace('.', "_")
    ));
    let link = pins::obj_get(&link_path)
        .map_err(|e| format!("open the XDP link {}: {e}", link_path.display()))?;
    let target = pins::link_target(link.as_fd()).map_err(|e| format!("link info: {e}"))?;
    let program = pins::prog_get_fd_by_id(target.program_id)
        .map_err(|e| format!("open program {}: {e}", target.program_id))?;
    let flows_pin = setup.pin_dir.join(map_names::XDP_FLOWS);
    let flows_map =
        MapData::from_pin(&flows_pin).map_err(|e| format!("open {}: {e}", flows_pin.display()))?;
    let mut flows: HashMap<MapData, NatKey, NatEntry> =
        HashMap::try_from(Map::LruHashMap(flows_map))
            .map_err(|e| format!("{}: {e}", map_names::XDP_FLOWS))?;
    netns::run_in(setup.netns, || {
        measure_in(setup, &program, &mut flows).map_err(std::io::Error::other)
    })
    .map_err(|e| e.to_string())
}

/// [`measure`] in the node's namespace.
fn measure_in(
    setup: &Setup<'_>,
    program: &OwnedFd,
    flows: &mut HashMap<MapData, NatKey, NatEntry>,
) -> Result<Vec<Row>, String> {
    let ingress = ifindex(setup.client_iface)?;
    let run = Runner { program };
    let client = |sport: u16, flags: Flags, payload: &[u8]| {
        tcp(
            setup.client,
            sport,
            *setup.gateway.ip(),
            setup.gateway.port(),
            flags,
            payload,
            64,
        )
    };
    let ports: Vec<u16> = (0..setup.flows).map(|i| 20_000 + i).collect();

    let mut rows = Vec::new();
    // A client's segment to a port of the gateway address that no gateway takes.
    let passed = tcp(
        setup.client,
        ports[0],
        *setup.gateway.ip(),
        setup.other_port,
        Flags::Ack,
        &PAYLOAD,
        64,
    );
    let what = "a packet no gateway takes";
    let repeated = run.run(&passed, ingress, REPEAT, what, &[XDP_PASS])?;
    rows.push(Row {
        packet: "for the node, no gateway's (passed)",
        verdict: "XDP_PASS",
        median_ns: repeated,
        mean_ns: f64::from(repeated),
        how: format!("one call of {REPEAT} runs"),
    });
    let samples = (0..setup.samples)
        .map(|_| run.once(&passed, ingress, what, &[XDP_PASS]))
        .collect::<Result<Vec<_>, _>>()?;
    rows.push(row(
        "for the node, no gateway's (passed)",
        "XDP_PASS",
        &samples,
        "one run per call: the kernel's clock reads included",
    ));

    let forwarded = [XDP_TX, XDP_REDIRECT];
    let samples = ports
        .iter()
        .map(|&p| {
            run.once(
                &client(p, Flags::Syn, &[]),
                ingress,
                "a new SYN",
                &forwarded,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    rows.push(row(
        "a SYN to the gateway (a new flow)",
        "XDP_REDIRECT",
        &samples,
        "one run per call, each a new flow",
    ));

    let data: Vec<Vec<u8>> = ports
        .iter()
        .map(|&p| client(p, Flags::Ack, &PAYLOAD))
        .collect();
    let samples = (0..setup.samples)
        .map(|i| {
            run.once(
                &data[i % data.len()],
                ingress,
                "a client's packet of a flow",
                &forwarded,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    rows.push(row(
        "client -> endpoint, established flow",
        "XDP_REDIRECT",
        &samples,
        "one run per call",
    ));

    let replies = replies(setup, flows, &ports)?;
    let samples = (0..setup.samples)
        .map(|i| {
            let (packet, iface) = &replies[i % replies.len()];
            run.once(packet, *iface, "an endpoint's answer", &forwarded)
        })
        .collect::<Result<Vec<_>, _>>()?;
    rows.push(row(
        "endpoint -> client, established flow",
        "XDP_REDIRECT",
        &samples,
        "one run per call",
    ));

    let first = (data[0].as_slice(), ingress, &replies[0]);
    rows.extend(self_rewriting(setup, &run, flows, ports[0], first)?);

    for &p in &ports {
        run.once(&client(p, Flags::Rst, &[]), ingress, "a reset", &forwarded)?;
    }
    Ok(rows)
}

/// The established rows again, with `repeat` (see the module's doc): for the
/// client's and the endpoint's entry of the flow from `port`, whose first
/// packets `first` holds (the client's, its interface, the endpoint's and its
/// interface).
fn self_rewriting(
    setup: &Setup<'_>,
    run: &Runner<'_>,
    flows: &mut HashMap<MapData, NatKey, NatEntry>,
    port: u16,
    first: (&[u8], u32, &(Vec<u8>, u32)),
) -> Result<Vec<Row>, String> {
    let forwarded = [XDP_TX, XDP_REDIRECT];
    let (data, ingress, (reply, reply_iface)) = first;
    let calls = (setup.samples / 100).max(10);
    let loop_key = flow_key(setup, LOOP_PORT);
    let reply_of_first = reply_key(flows, setup, port)?;
    let mut rows = Vec::new();
    for (packet, key, (fresh, fresh_iface), whose) in [
        (
            "client -> endpoint, established flow",
            flow_key(setup, port),
            (data, ingress),
            "client's",
        ),
        (
            "endpoint -> client, established flow",
            reply_of_first,
            (reply, *reply_iface),
            "endpoint's",
        ),
    ] {
        // A packet of the real flow first: its entry's next hop is fresh, as
        // the flow's own packets keep it.
        run.once(fresh, fresh_iface, "a packet of the flow", &forwarded)?;
        let mut entry = flows
            .get(&key, 0)
            .map_err(|e| format!("the {whose} entry of the flow from port {port}: {e}"))?;
        entry.src = loop_key.src;
        entry.dst = loop_key.dst;
        entry.sport = loop_key.sport;
        entry.dport = loop_key.dport;
        flows
            .insert(loop_key, entry, 0)
            .map_err(|e| format!("insert the self-rewriting flow: {e}"))?;
        let looped = tcp(
            setup.client,
            LOOP_PORT,
            *setup.gateway.ip(),
            setup.gateway.port(),
            Flags::Ack,
            &PAYLOAD,
            255,
        );
        let samples = (0..calls)
            .map(|_| {
                run.run(
                    &looped,
                    fresh_iface,
                    LOOP_REPEAT,
                    "a self-rewriting flow's packet",
                    &forwarded,
                )
            })
            .collect::<Result<Vec<_>, _>>();
        let _ = flows.remove(&loop_key);
        rows.push(row(
            packet,
            "XDP_REDIRECT",
            &samples?,
            &format!(
                "{LOOP_REPEAT} runs per call, no clock reads between them: a flow whose entry \
                 rewrites a packet into itself, with the {whose} entry's next hop, counters and flags"
            ),
        ));
    }

    Ok(rows)
}

/// The key of the client's entry of its flow from `port`.
fn flow_key(setup: &Setup<'_>, port: u16) -> NatKey {
    NatKey {
        src: addr_from_ip4(u32::from_ne_bytes(setup.client.octets())),
        dst: addr_from_ip4(u32::from_ne_bytes(setup.gateway.ip().octets())),
        sport: port.to_be(),
        dport: setup.gateway.port().to_be(),
        family: FAMILY_V4,
        pad: [0; 3],
    }
}

/// The key of the endpoint's entry of the client's flow from `port`.
fn reply_key(
    flows: &HashMap<MapData, NatKey, NatEntry>,
    setup: &Setup<'_>,
    port: u16,
) -> Result<NatKey, String> {
    flows
        .get(&flow_key(setup, port), 0)
        .map(|entry| entry.reverse_key())
        .map_err(|e| format!("the flow from port {port} is not in TS_XDP_FLOWS: {e}"))
}

/// The endpoints' answers to the flows from `ports`: each to the node's
/// source port of its flow, from the interface of its endpoint.
fn replies(
    setup: &Setup<'_>,
    flows: &HashMap<MapData, NatKey, NatEntry>,
    ports: &[u16],
) -> Result<Vec<(Vec<u8>, u32)>, String> {
    let mut replies = Vec::new();
    for &p in ports {
        let key = flow_key(setup, p);
        let entry = flows
            .get(&key, 0)
            .map_err(|e| format!("the flow from port {p} is not in TS_XDP_FLOWS: {e}"))?;
        let v4 = |a: Addr| Ipv4Addr::new(a[0], a[1], a[2], a[3]);
        let (node, endpoint) = (v4(entry.src), v4(entry.dst));
        let iface = setup
            .endpoint_ifaces
            .iter()
            .find(|(addr, _)| *addr == endpoint)
            .ok_or_else(|| format!("no --endpoint-iface for endpoint {endpoint}"))?;
        let reply = tcp(
            endpoint,
            u16::from_be(entry.dport),
            node,
            u16::from_be(entry.sport),
            Flags::Ack,
            &PAYLOAD,
            64,
        );
        replies.push((reply, ifindex(&iface.1)?));
    }
    Ok(replies)
}

struct Runner<'a> {
    program: &'a OwnedFd,
}

impl Runner<'_> {
    /// `repeat` runs of `packet` in one call; the kernel's time per run,
    /// when the verdict is one of `want`.
    fn run(
        &self,
        packet: &[u8],
        ingress: u32,
        repeat: u32,
        what: &str,
        want: &[u32],
    ) -> Result<u32, String> {
        let run = pins::xdp_test_run(self.program.as_fd(), packet, ingress, repeat)
            .map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))?;
        if !want.contains(&run.retval) {
            return Err(format!(
                "{what}: verdict {} where {want:?} was expected (2 pass, 3 tx, 4 redirect)",
                run.retval
            ));
        }
        Ok(run.duration_ns)
    }

    /// One run of a fresh copy of `packet` (see [`Self::run`]).
    fn once(&self, packet: &[u8], ingress: u32, what: &str, want: &[u32]) -> Result<u32, String> {
        self.run(packet, ingress, 1, what, want)
    }
}

fn row(packet: &'static str, verdict: &'static str, samples: &[u32], how: &str) -> Row {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let sum: u64 = sorted.iter().map(|&n| u64::from(n)).sum();
    #[expect(clippy::cast_precision_loss, reason = "sums of nanoseconds fit in f64")]
    let mean_ns = sum as f64 / sorted.len().max(1) as f64;
    Row {
        packet,
        verdict,
        median_ns: sorted.get(sorted.len() / 2).copied().unwrap_or(0),
        mean_ns,
        how: format!("{how}, {} samples", sorted.len()),
    }
}

#[derive(Clone, Copy)]
enum Flags {
    Syn,
    Ack,
    Rst,
}

/// An Ethernet + IPv4 + TCP frame with valid checksums.
fn tcp(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: Flags,
    payload: &[u8],
    ttl: u8,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), dst.octets(), ttl)
        .tcp(sport, dport, 1000, 64240);
    let b = match flags {
        Flags::Syn => b.syn(),
        Flags::Ack => b.ack(1),
        Flags::Rst => b.rst().ack(1),
    };
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload)
        .expect("a frame of fixed size is written to a Vec");
    out
}

/// An interface's index in this thread's network namespace.
fn ifindex(name: &str) -> Result<u32, String> {
    netns::ifindex(name).map_err(|e| format!("interface {name}: {e}"))
}
