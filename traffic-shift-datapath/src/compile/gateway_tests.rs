//! Gateway routes compiled: which map (mesh, sk_lookup, XDP) their keys go
//! to, local and remote endpoints, map sizes. Pure: no root needed.

use std::collections::BTreeMap;

use super::*;
use traffic_shift_config::model::{Destination, Endpoint};

fn gateway_route(endpoint: &str) -> RoutingModel {
    RoutingModel {
        routes: vec![TcpRoute {
            unix: Vec::new(),
            sni: Vec::new(),
            key: "default/tcp-echo/tcp[0]/gateway default/gw port 31400".into(),
            source: std::path::Path::new("gw.yaml").into(),
            gateway: Some("default/gw".into()),
            service_host: "tcp-echo.local".into(),
            service_port: 31400,
            listeners: vec!["0.0.0.0:31400".parse().unwrap()],
            prefixes: Vec::new(),
            selection: Selection::Smooth,
            destinations: vec![Destination {
                outlier: None,
                host: "tcp-echo.local".into(),
                subset: Some("v1".into()),
                weight: 1,
                endpoint_selection: Selection::Smooth,
                endpoints: vec![Endpoint {
                    addr: endpoint.parse().unwrap(),
                    labels: BTreeMap::new(),
                }],
            }],
        }],
        http: Vec::new(),
        gateways: Vec::new(),
        rollouts: Vec::new(),
        gateway_api_status: std::collections::BTreeMap::new(),
    }
}

#[test]
fn a_gateway_route_to_a_remote_endpoint_is_refused_naming_it() {
    let err = compile(
        &gateway_route("192.0.2.10:9000"),
        &|ip| ip.is_loopback(),
        false,
        &StatIds::default(),
        &Limits::default(),
        &ProxyAddrs::default(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("192.0.2.10:9000")
            && text.contains("not on this node")
            && text.contains("--xdp-iface"),
        "{text}"
    );
}

#[test]
fn with_xdp_a_gateway_route_to_remote_endpoints_goes_to_the_xdp_gateway() {
    let compiled = compile(
        &gateway_route("192.0.2.10:9000"),
        &|ip| ip.is_loopback(),
        true,
        &StatIds::default(),
        &Limits::default(),
        &ProxyAddrs::default(),
    )
    .expect("compiles");
    let route = compiled.routes.values().next().expect("one route");
    assert!(route.gateway && route.xdp);
    let table = route.table.to_table();
    assert_eq!(table.n_backends, 1);
    assert_eq!(
        table.backends[0].addr,
        service_key("192.0.2.10:9000".parse().unwrap()).addr
    );
    // A local route stays on sk_lookup even with --xdp-iface.
    let local = compile(
        &gateway_route("127.0.0.1:19001"),
        &|ip| ip.is_loopback(),
        true,
        &StatIds::default(),
        &Limits::default(),
        &ProxyAddrs::default(),
    )
    .expect("compiles");
    assert!(!local.routes.values().next().unwrap().xdp);
}

/// The table of the gateway route to subsets v1 and v2 weighted `v1`:`v2`.
fn split_table(v1: u32, v2: u32) -> TableBytes {
    let mut model = gateway_route("192.0.2.10:9000");
    let route = &mut model.routes[0];
    let mut second = route.destinations[0].clone();
    second.subset = Some("v2".into());
    route.destinations[0].weight = v1;
    second.weight = v2;
    route.destinations.push(second);
    let compiled = compile(
        &model,
        &|_| false,
        true,
        &StatIds::default(),
        &Limits::default(),
        &ProxyAddrs::default(),
    )
    .expect("compiles");
    compiled
        .routes
        .into_values()
        .next()
        .expect("one route")
        .table
}

#[test]
fn a_table_kept_as_its_used_bytes_writes_back_whole() {
    let kept = &split_table(80, 20);
    // Its head without the destinations and endpoints it does not have.
    assert!(
        kept.kept() < RouteTable::HEAD / 4,
        "an 80/20 table keeps {} bytes",
        kept.kept()
    );
    let whole = kept.to_table();
    assert_eq!((whole.n_slots, whole.n_dests), (5, 2));
    assert_eq!(&whole.slots[..5], &[0, 0, 1, 0, 0]);
    assert_eq!(whole.slots_version, 0, "its slots are in the route");
    // A scratch table that held a longer one before comes out the same.
    let mut scratch: Box<RouteTable> = bytemuck::zeroed_box();
    scratch.slots.fill(7);
    scratch.slots_version = 9;
    assert_eq!(kept.write_to(&mut scratch, 3), None);
    assert!(bytemuck::bytes_of(scratch.as_ref()) == bytemuck::bytes_of(whole.as_ref()));
}

#[test]
fn a_table_of_more_than_256_slots_keeps_them_apart_under_its_version() {
    // 1:999 does not reduce: 1000 slots.
    let kept = &split_table(1, 999);
    assert_eq!(kept.slots().len(), 1000);
    // 999 slots name destination 1, the one left destination 0.
    assert_eq!(kept.slots().iter().map(|&d| u32::from(d)).sum::<u32>(), 999);
    let mut scratch: Box<RouteTable> = bytemuck::zeroed_box();
    scratch.slots.fill(7);
    let apart = kept.write_to(&mut scratch, 3).expect("slots apart");
    assert_eq!(apart, kept.slots());
    assert_eq!((scratch.n_slots, scratch.slots_version), (1000, 3));
    assert!(scratch.slots.iter().all(|&s| s == 0), "none in the route");
}

#[test]
fn a_gateway_route_mixing_local_and_remote_endpoints_is_refused() {
    let mut model = gateway_route("192.0.2.10:9000");
    model.routes[0].destinations[0].endpoints.push(Endpoint {
        addr: "127.0.0.1:19001".parse().unwrap(),
        labels: BTreeMap::new(),
    });
    let err = compile(
        &model,
        &|ip| ip.is_loopback(),
        true,
        &StatIds::default(),
        &Limits::default(),
        &ProxyAddrs::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("127.0.0.1:19001") && err.contains("192.0.2.10:9000"),
        "{err}"
    );
}

#[test]
fn a_gateway_route_to_a_local_endpoint_goes_to_the_gateway_map_with_the_any_address() {
    let compiled = compile(
        &gateway_route("127.0.0.1:19001"),
        &|ip| ip.is_loopback(),
        false,
        &StatIds::default(),
        &Limits::default(),
        &ProxyAddrs::default(),
    )
    .expect("compiles");
    let route = compiled.routes.values().next().expect("one route");
    assert!(route.gateway);
    assert_eq!(
        route.listeners,
        vec![service_key("0.0.0.0:31400".parse().unwrap())]
    );
    assert_eq!(
        route.listeners[0].addr, [0; 16],
        "the zero address stands for any local address"
    );
}

#[test]
fn rules_over_a_map_size_are_refused_naming_the_flag() {
    let model = gateway_route("127.0.0.1:19001");
    let local = |ip: IpAddr| ip.is_loopback();
    for (limits, flag) in [
        (
            Limits {
                max_gateways: 0,
                ..Limits::default()
            },
            "--max-gateways",
        ),
        (
            Limits {
                max_routes: 0,
                ..Limits::default()
            },
            "--max-routes",
        ),
        (
            Limits {
                max_gateway_endpoints: 0,
                ..Limits::default()
            },
            "--max-gateway-endpoints",
        ),
    ] {
        let err = compile(
            &model,
            &local,
            false,
            &StatIds::default(),
            &limits,
            &ProxyAddrs::default(),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("at most 0") && text.contains(flag),
            "{flag}: {text}"
        );
    }
    let err = compile(
        &model,
        &local,
        false,
        &StatIds::with_capacity(0),
        &Limits::default(),
        &ProxyAddrs::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--max-counters"), "{err}");
}
