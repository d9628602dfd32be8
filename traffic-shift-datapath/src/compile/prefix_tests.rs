//! Service address ranges compiled: their `TS_SVC_PREFIXES` keys (prefix
//! length, port and family first), conflicts, the map's size. Pure: no
//! root needed.

use std::collections::BTreeMap;

use super::*;
use traffic_shift_common::{PREFIX_HEADER_BITS, PrefixData};
use traffic_shift_config::model::{Destination, Endpoint, ServicePrefix};

fn prefix(text: &str, port: u16) -> ServicePrefix {
    let (ip, len) = text.split_once('/').expect("ip/len");
    ServicePrefix {
        network: ip.parse().unwrap(),
        len: len.parse().unwrap(),
        port,
    }
}

/// A mesh route `name` over `prefixes` (and `listeners`), to one endpoint.
fn mesh_route(name: &str, listeners: &[&str], prefixes: &[ServicePrefix]) -> TcpRoute {
    TcpRoute {
        unix: Vec::new(),
        sni: Vec::new(),
        key: format!("default/{name}/tcp[0]/port 9000"),
        source: std::path::PathBuf::from(format!("{name}.yaml")).into(),
        gateway: None,
        service_host: format!("{name}.local"),
        service_port: 9000,
        listeners: listeners.iter().map(|l| l.parse().unwrap()).collect(),
        prefixes: prefixes.to_vec(),
        selection: Selection::Smooth,
        destinations: vec![Destination {
            outlier: None,
            host: format!("{name}.local"),
            subset: None,
            weight: 1,
            endpoint_selection: Selection::Smooth,
            endpoints: vec![
                Endpoint {
                    addr: "127.0.0.1:19001".parse().unwrap(),
                    labels: BTreeMap::new(),
                },
                Endpoint {
                    addr: "[::1]:19001".parse().unwrap(),
                    labels: BTreeMap::new(),
                },
            ],
        }],
    }
}

fn model(routes: Vec<TcpRoute>) -> RoutingModel {
    RoutingModel {
        routes,
        http: Vec::new(),
        gateways: Vec::new(),
        rollouts: Vec::new(),
        gateway_api_status: std::collections::BTreeMap::new(),
    }
}

fn compile_with(model: &RoutingModel, limits: &Limits) -> Result<Compiled, CompileError> {
    compile(
        model,
        &|_| true,
        false,
        &StatIds::default(),
        limits,
        &ProxyAddrs::default(),
    )
}

#[test]
fn prefix_keys_match_port_and_family_whole_and_the_address_by_its_prefix() {
    // 198.18.7.0/24 on 9000: 32 header bits + 24, the port in network order.
    let (len, data) = prefix_key("198.18.7.0".parse().unwrap(), 24, 9000);
    assert_eq!(len, PREFIX_HEADER_BITS + 24);
    assert_eq!(
        data,
        PrefixData {
            port: 9000_u16.to_be(),
            family: FAMILY_V4,
            pad: 0,
            addr: [198, 18, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        }
    );
    assert_eq!(
        &bytemuck::bytes_of(&data)[..4],
        &[0x23, 0x28, 4, 0],
        "port (network order) and family lead the key data"
    );
    // Host bits are cleared; a mapped IPv6 prefix is the IPv4 one.
    assert_eq!(
        prefix_key("198.18.7.99".parse().unwrap(), 20, 9000),
        (
            PREFIX_HEADER_BITS + 20,
            PrefixData {
                addr: [198, 18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                ..data
            }
        )
    );
    assert_eq!(
        prefix_key("::ffff:198.18.7.0".parse().unwrap(), 96 + 24, 9000),
        (len, data)
    );
    let (len6, data6) = prefix_key("fd00:7473::ff".parse().unwrap(), 64, 443);
    assert_eq!(len6, PREFIX_HEADER_BITS + 64);
    assert_eq!(data6.family, FAMILY_V6);
    assert_eq!(
        data6.addr,
        [0xfd, 0, 0x74, 0x73, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(show_prefix(&(len, data)), "198.18.7.0/24:9000");
    assert_eq!(show_prefix(&(len6, data6)), "[fd00:7473::/64]:443");
}

#[test]
fn a_route_over_ranges_puts_each_family_s_ranges_on_its_kernel_route() {
    let ranges = [
        prefix("198.18.7.0/24", 9000),
        prefix("fd00:7473::/64", 9000),
    ];
    let compiled = compile_with(
        &model(vec![mesh_route("ranges", &[], &ranges)]),
        &Limits::default(),
    )
    .expect("compiles");
    let v4 = &compiled.routes["default/ranges/tcp[0]/port 9000 ipv4"];
    let v6 = &compiled.routes["default/ranges/tcp[0]/port 9000 ipv6"];
    assert!(v4.listeners.is_empty() && v6.listeners.is_empty());
    assert_eq!(
        v4.prefixes,
        [prefix_key("198.18.7.0".parse().unwrap(), 24, 9000)]
    );
    assert_eq!(
        v6.prefixes,
        [prefix_key("fd00:7473::".parse().unwrap(), 64, 9000)]
    );
    assert!(!v4.gateway && !v4.xdp, "a mesh route");
    assert_eq!(v4.table.to_table().backends[0].family, FAMILY_V4);
    assert_eq!(v6.table.to_table().backends[0].family, FAMILY_V6);
}

#[test]
fn overlapping_ranges_compile_and_the_same_range_twice_is_a_conflict() {
    let wide = mesh_route("wide", &[], &[prefix("198.18.0.0/16", 9000)]);
    let narrow = mesh_route(
        "narrow",
        &["198.18.7.77:9000"],
        &[prefix("198.18.7.0/24", 9000)],
    );
    let compiled = compile_with(&model(vec![wide.clone(), narrow]), &Limits::default())
        .expect("overlapping ranges of different lengths are legal");
    let prefixes: usize = compiled.routes.values().map(|r| r.prefixes.len()).sum();
    assert_eq!(prefixes, 2);
    // The same range on another port is another key.
    let other_port = mesh_route("other", &[], &[prefix("198.18.0.0/16", 9001)]);
    compile_with(&model(vec![wide.clone(), other_port]), &Limits::default()).expect("another port");
    // The same range and port, twice (also written as a mapped IPv6 range).
    let twice = mesh_route("twice", &[], &[prefix("::ffff:198.18.0.0/112", 9000)]);
    let err = compile_with(&model(vec![wide, twice]), &Limits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service address range 198.18.0.0/16:9000 is covered by both \
         default/wide/tcp[0]/port 9000 and default/twice/tcp[0]/port 9000; keep one route per \
         service address range and port"
    );
}

#[test]
fn ranges_over_the_map_size_are_refused_naming_the_flag() {
    let ranges: Vec<ServicePrefix> = (0..3)
        .map(|i| prefix(&format!("10.{i}.0.0/16"), 9000))
        .collect();
    let m = model(vec![mesh_route("ranges", &[], &ranges)]);
    let limits = Limits {
        max_service_prefixes: 2,
        ..Limits::default()
    };
    let err = compile_with(&m, &limits).unwrap_err();
    assert_eq!(
        err.to_string(),
        "3 service address ranges in all rules, the kernel holds at most 2; raise \
         --max-service-prefixes (traffic-shift run) or remove rules"
    );
    let limits = Limits {
        max_service_prefixes: 3,
        ..Limits::default()
    };
    compile_with(&m, &limits).expect("3 fit in 3");
}

#[test]
fn an_http_mesh_listener_s_ranges_go_to_the_proxy_and_conflict_with_a_tcp_route_s() {
    use traffic_shift_config::model::HttpListener;
    let listener = HttpListener {
        tls: None,
        unix: Vec::new(),
        key: "mesh reviews.local:9000".into(),
        gateway: None,
        port: 9000,
        listeners: Vec::new(),
        prefixes: vec![prefix("198.18.9.0/24", 9000)],
        virtual_hosts: Vec::new(),
    };
    let mut m = model(Vec::new());
    m.http = vec![listener];
    let compiled = compile_with(&m, &Limits::default()).expect("compiles");
    let route = &compiled.routes["mesh reviews.local:9000 ipv4"];
    assert_eq!(
        route.prefixes,
        [prefix_key("198.18.9.0".parse().unwrap(), 24, 9000)]
    );
    let table = route.table.to_table();
    assert_eq!(
        table.backends[0].flags,
        traffic_shift_common::backend_flags::PROXY,
        "to the L7 proxy"
    );
    assert_eq!(table.backends[0].addr[..4], [127, 0, 0, 1]);
    assert!(
        !compiled.routes.contains_key("mesh reviews.local:9000 ipv6"),
        "no IPv6 range, no IPv6 route"
    );
    // A TCP route over the same range and port: refused.
    m.routes = vec![mesh_route("tcp", &[], &[prefix("198.18.9.0/24", 9000)])];
    let err = compile_with(&m, &Limits::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("service address range 198.18.9.0/24:9000 is covered by both"),
        "{err}"
    );
}
