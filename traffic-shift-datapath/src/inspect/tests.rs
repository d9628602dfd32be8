//! The decoders on hand-made keys and values: no kernel needed.

use super::*;
use crate::compile::service_key;
use traffic_shift_common::{Backend, Dest, INLINE_SLOTS, SlotTable, SlotsKey};

fn names() -> Names {
    Names {
        routes: [(3, "default/tcp-echo/tcp[0]/port 9000 ipv4".to_owned())].into(),
        slots: [(
            7,
            SlotName {
                route: "default/tcp-echo/tcp[0]/port 9000".to_owned(),
                destination: "tcp-echo.local/v1".to_owned(),
                endpoint: "127.0.0.1:9001".to_owned(),
            },
        )]
        .into(),
    }
}

fn key(addr: &str) -> ServiceKey {
    service_key(addr.parse().unwrap())
}

#[test]
fn a_service_key_prints_dotted_with_the_port_in_host_order_and_the_route_by_name() {
    let k = key("127.100.0.1:9000");
    // What bpftool prints: the address bytes in their natural order.
    assert_eq!(&k.addr[..4], &[127, 100, 0, 1]);
    let v = ServiceValue {
        route_id: 3,
        service_id: 1,
    };
    assert_eq!(
        service(bytemuck::bytes_of(&k), bytemuck::bytes_of(&v), &names()).unwrap(),
        "127.100.0.1:9000 -> route 3 (default/tcp-echo/tcp[0]/port 9000 ipv4), service 1"
    );
    let k6 = key("[fd00:7473::1]:9000");
    let v = ServiceValue {
        route_id: 4,
        service_id: 1,
    };
    assert_eq!(
        service(bytemuck::bytes_of(&k6), bytemuck::bytes_of(&v), &names()).unwrap(),
        "[fd00:7473::1]:9000 -> route 4, service 1",
        "an id without a name is printed alone"
    );
}

#[test]
fn a_service_prefix_prints_as_a_range_with_its_port_and_route() {
    let (len, data) = crate::compile::prefix_key("198.18.7.0".parse().unwrap(), 24, 9000);
    let v = ServiceValue {
        route_id: 3,
        service_id: 2,
    };
    assert_eq!(
        service_prefix(
            len,
            bytemuck::bytes_of(&data),
            bytemuck::bytes_of(&v),
            &names()
        )
        .unwrap(),
        "198.18.7.0/24:9000 -> route 3 (default/tcp-echo/tcp[0]/port 9000 ipv4), service 2"
    );
    let (len, data) = crate::compile::prefix_key("fd00:7473::".parse().unwrap(), 64, 9000);
    assert_eq!(
        service_prefix(
            len,
            bytemuck::bytes_of(&data),
            bytemuck::bytes_of(&v),
            &names()
        )
        .unwrap(),
        "[fd00:7473::/64]:9000 -> route 3 (default/tcp-echo/tcp[0]/port 9000 ipv4), service 2"
    );
    assert_eq!(
        service_prefix(len, &[0; 16], bytemuck::bytes_of(&v), &names()).unwrap_err(),
        LayoutError {
            what: "a service prefix key",
            have: 16,
            want: 20
        }
    );
}

#[test]
fn bytes_of_another_layout_are_an_error_not_garbage() {
    let err = service(&[0; 16], &[0; 8], &names()).unwrap_err();
    assert_eq!(
        err,
        LayoutError {
            what: "a service key",
            have: 16,
            want: 20
        }
    );
    assert_eq!(
        err.to_string(),
        "a service key is 16 bytes, this build reads 20: a map of another version"
    );
}

#[test]
fn a_route_table_shows_each_destinations_share_of_the_slots_and_its_endpoints() {
    let mut table: RouteTable = bytemuck::Zeroable::zeroed();
    table.mode = select::SMOOTH;
    table.n_slots = 5;
    table.n_dests = 2;
    table.n_backends = 2;
    table.dests[0] = Dest {
        first_backend: 0,
        n_backends: 1,
        endpoint_select: select::SMOOTH,
    };
    table.dests[1] = Dest {
        first_backend: 1,
        n_backends: 1,
        endpoint_select: select::RANDOM,
    };
    for (i, ep) in ["127.0.0.1:9001", "127.0.0.1:9002"].iter().enumerate() {
        let k = key(ep);
        table.backends[i] = Backend {
            addr: k.addr,
            port: k.port,
            family: k.family,
            flags: 0,
            stat_id: 7 + u32::try_from(i).unwrap(),
        };
    }
    // 80/20 as the smooth sequence lays it out.
    table.slots[..5].copy_from_slice(&[0, 0, 1, 0, 0]);
    table.slots[5..INLINE_SLOTS].fill(1); // unused slots are not counted
    let lines = route(
        &3u32.to_ne_bytes(),
        bytemuck::bytes_of(&table),
        &|_| panic!("its slots are in the route"),
        &names(),
    )
    .unwrap();
    assert_eq!(
        lines,
        [
            "route 3 (default/tcp-echo/tcp[0]/port 9000 ipv4): smooth, 5 slots, 2 destinations, 2 endpoints",
            "  dest 0 (tcp-echo.local/v1): 4 of 5 slots (80.0%), 1 endpoint, smooth",
            "    127.0.0.1:9001 slot 7",
            "  dest 1: 1 of 5 slots (20.0%), 1 endpoint, random",
            "    127.0.0.1:9002 slot 8",
        ]
    );
}

#[test]
fn a_route_with_its_slots_apart_shows_them_from_its_version_in_ts_slots() {
    let mut table: RouteTable = bytemuck::Zeroable::zeroed();
    table.mode = select::SMOOTH;
    table.n_slots = 1000;
    table.n_dests = 2;
    table.n_backends = 2;
    table.slots_version = 4;
    table.dests[1] = Dest {
        first_backend: 1,
        n_backends: 1,
        endpoint_select: select::SMOOTH,
    };
    table.dests[0].n_backends = 1;
    let mut apart: SlotTable = bytemuck::Zeroable::zeroed();
    apart.slots[1..1000].fill(1);
    apart.slots[1000..].fill(1); // past n_slots: not counted
    let want = SlotsKey {
        route_id: 3,
        version: 4,
    };
    let lines = route(
        &3u32.to_ne_bytes(),
        bytemuck::bytes_of(&table),
        &|key| (key == want).then_some(apart),
        &names(),
    )
    .unwrap();
    assert_eq!(
        lines[0],
        "route 3 (default/tcp-echo/tcp[0]/port 9000 ipv4): smooth, 1000 slots (in TS_SLOTS, version 4), 2 destinations, 2 endpoints"
    );
    assert!(
        lines[1].contains(": 1 of 1000 slots (0.1%)"),
        "{}",
        lines[1]
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(": 999 of 1000 slots (99.9%)")),
        "{lines:?}"
    );
    // A version the map does not hold is said, not shown as no slots.
    let lines = route(
        &3u32.to_ne_bytes(),
        bytemuck::bytes_of(&table),
        &|_| None,
        &names(),
    )
    .unwrap();
    assert!(
        lines[0].contains("1000 slots (TS_SLOTS has no version 4!)"),
        "{}",
        lines[0]
    );
}

#[test]
fn per_cpu_counters_are_summed_and_empty_slots_left_out() {
    let cpu = |opened, bytes| EndpointStats {
        opened,
        established: opened,
        closed: opened,
        request_bytes: bytes,
        response_bytes: 2 * bytes,
        ..EndpointStats::default()
    };
    let (a, b) = (cpu(3, 10), cpu(4, 5));
    let per_cpu = [bytemuck::bytes_of(&a), bytemuck::bytes_of(&b)];
    assert_eq!(
        stats(7, &per_cpu, &names()).unwrap().unwrap(),
        "slot 7 (tcp-echo.local/v1 127.0.0.1:9001, default/tcp-echo/tcp[0]/port 9000): opened 7, established 7, closed 7, failed 0 (refused 0, timeout 0, other 0), bytes request 15 response 30"
    );
    let zero = EndpointStats::default();
    assert_eq!(stats(8, &[bytemuck::bytes_of(&zero)], &names()), Ok(None));

    let one = 1u64.to_ne_bytes();
    let two = 2u64.to_ne_bytes();
    let zero = 0u64.to_ne_bytes();
    let mut per_event = vec![vec![zero.as_slice(), zero.as_slice()]; Event::ALL.len()];
    per_event[Event::Rewritten as usize] = vec![one.as_slice(), two.as_slice()];
    per_event[Event::GatewayAssigned as usize] = vec![zero.as_slice(), one.as_slice()];
    assert_eq!(
        events(&per_event).unwrap(),
        [
            "connect      rewritten            3",
            "sk_lookup    gateway_assigned     1"
        ]
    );
}

#[test]
fn flows_print_both_ends() {
    let client = key("10.0.0.2:40000");
    let gateway = key("10.0.0.1:31400");
    let flow = FlowKey {
        local: gateway.addr,
        remote: client.addr,
        local_port: gateway.port,
        remote_port: client.port,
        family: FAMILY_V4,
        pad: [0; 3],
    };
    assert_eq!(
        gateway_flow(bytemuck::bytes_of(&flow), &7u32.to_ne_bytes(), &names()).unwrap(),
        "client 10.0.0.2:40000 -> gateway 10.0.0.1:31400: slot 7 (tcp-echo.local/v1 127.0.0.1:9001)"
    );
    let service = key("127.100.0.1:9080");
    assert_eq!(
        proxy_flow(bytemuck::bytes_of(&flow), bytemuck::bytes_of(&service)).unwrap(),
        "client 10.0.0.1:31400 -> proxy 10.0.0.2:40000: service 127.100.0.1:9080"
    );
    let node = key("192.0.2.1:61000");
    let ep = key("192.0.2.10:9000");
    let nat_key = NatKey {
        src: client.addr,
        dst: gateway.addr,
        sport: client.port,
        dport: gateway.port,
        family: FAMILY_V4,
        pad: [0; 3],
    };
    let nat = NatEntry {
        src: node.addr,
        dst: ep.addr,
        sport: node.port,
        dport: ep.port,
        stat_id: 9,
        last_seen_ns: 1234,
        flags: nat_flags::ESTABLISHED,
        family: FAMILY_V4,
        hop_dmac: [0; 6],
        hop_smac: [0; 6],
        pad: [0; 2],
        hop_ifindex: 0,
        hop_checked: 0,
        fin_end: 0,
        pad_end: 0,
    };
    assert_eq!(
        xdp_flow(
            bytemuck::bytes_of(&nat_key),
            bytemuck::bytes_of(&nat),
            &names()
        )
        .unwrap(),
        "forward 10.0.0.2:40000 -> 10.0.0.1:31400 becomes 192.0.2.1:61000 -> 192.0.2.10:9000: slot 9, last seen at 1234 ns, established"
    );
}

#[test]
fn a_routed_connection_shows_its_service_route_and_slot() {
    let service = key("127.100.0.1:9000");
    let state = ConnState {
        reported_request: 3,
        reported_response: 7,
        reserved: 0,
        addr: service.addr,
        port: service.port,
        family: service.family,
        flags: conn_flags::ESTABLISHED,
        stat_id: 7,
        route_id: 3,
        pad: 0,
    };
    let (client, ep) = (
        "127.0.0.1:40000".parse().unwrap(),
        "127.0.0.1:9001".parse().unwrap(),
    );
    assert_eq!(
        conn(client, ep, bytemuck::bytes_of(&state), &names()).unwrap(),
        "127.0.0.1:40000 -> 127.0.0.1:9001: service 127.100.0.1:9000, route 3 (default/tcp-echo/tcp[0]/port 9000 ipv4), slot 7 (tcp-echo.local/v1 127.0.0.1:9001), established"
    );
    let gateway = ConnState {
        addr: [0; 16],
        port: 0,
        family: 0,
        flags: conn_flags::GATEWAY | conn_flags::ESTABLISHED | conn_flags::PEER_FIN,
        ..state
    };
    assert_eq!(
        conn(ep, client, bytemuck::bytes_of(&gateway), &names()).unwrap(),
        "127.0.0.1:9001 <- 127.0.0.1:40000: gateway, slot 7 (tcp-echo.local/v1 127.0.0.1:9001), established, fin received"
    );
}

#[test]
fn the_zero_gateway_address_and_a_socket_key() {
    let any = key("0.0.0.0:31400");
    assert_eq!(socket(bytemuck::bytes_of(&any)).unwrap(), "0.0.0.0:31400");
    let v6 = key("[::1]:9001");
    assert_eq!(socket(bytemuck::bytes_of(&v6)).unwrap(), "[::1]:9001");
}

#[test]
fn an_unknown_map_names_the_known_ones() {
    let err = render(
        Path::new("/nonexistent"),
        Some("TS_NOPE"),
        &Names::default(),
        Path::new("/proc/self/ns/net"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(
            "no map named TS_NOPE; the maps are: TS_SERVICES, TS_SVC_PREFIXES, TS_ROUTES,"
        ),
        "{err}"
    );
    assert!(err.ends_with("TS_XDP_STATS"), "{err}");
}

#[test]
fn every_pinned_map_has_a_description() {
    let described: Vec<&str> = MAPS.iter().map(|(n, _)| *n).collect();
    assert_eq!(described, map_names::ALL);
}
