//! The service prefix map in the kernel: the keys `compile` makes, written
//! by `sync_prefixes` into a real `BPF_MAP_TYPE_LPM_TRIE`, looked up as
//! `connect4`/`connect6` look them up (the full length). The kernel's
//! longest-prefix match is what decides, so it is asked, not modelled.
//!
//! Needs root (creating BPF maps): each test calls
//! [`require_root`](crate::test_root::require_root) first; none skips.

use std::{collections::BTreeMap, net::SocketAddr};

use aya::{
    EbpfLoader,
    maps::{LpmTrie, MapData, lpm_trie::Key},
};
use traffic_shift_common::{FAMILY_V4, PREFIX_HEADER_BITS, PrefixData, ServiceValue, map_names};

use super::sync_prefixes;
use crate::{
    EBPF_OBJECT,
    compile::{PrefixKey, prefix_key, service_key},
    test_root::require_root,
};

/// The route id the trie answers for a connection to `addr`, as the
/// connect hooks ask (prefix length: the header and the whole address).
fn lookup(trie: &LpmTrie<MapData, PrefixData, ServiceValue>, addr: &str) -> Option<u32> {
    let key = service_key(addr.parse::<SocketAddr>().unwrap());
    let width = if key.family == FAMILY_V4 { 32 } else { 128 };
    let data = PrefixData {
        port: key.port,
        family: key.family,
        pad: 0,
        addr: key.addr,
    };
    trie.get(&Key::new(PREFIX_HEADER_BITS + width, data), 0)
        .ok()
        .map(|v| v.route_id)
}

fn entry(range: &str, port: u16, route_id: u32) -> (PrefixKey, ServiceValue) {
    let (ip, len) = range.split_once('/').unwrap();
    (
        prefix_key(ip.parse().unwrap(), len.parse().unwrap(), port),
        ServiceValue {
            route_id,
            service_id: route_id,
        },
    )
}

#[test]
fn the_kernel_trie_answers_the_longest_range_of_the_same_port_and_family() {
    require_root("the prefix map tests create BPF maps");
    let mut ebpf = EbpfLoader::new()
        .load(EBPF_OBJECT)
        .expect("load the eBPF object's maps");
    let mut trie: LpmTrie<MapData, PrefixData, ServiceValue> = LpmTrie::try_from(
        ebpf.take_map(map_names::SERVICE_PREFIXES)
            .expect("TS_SVC_PREFIXES"),
    )
    .expect("an LPM trie of PrefixData -> ServiceValue");
    let desired: BTreeMap<PrefixKey, ServiceValue> = [
        entry("198.18.0.0/16", 9000, 1),
        entry("198.18.7.0/24", 9000, 2),
        entry("198.18.7.240/28", 9000, 3),
        entry("198.18.7.0/24", 9001, 4),
        entry("fd00:7473::/64", 9000, 5),
        entry("0.0.0.0/0", 443, 6),
    ]
    .into_iter()
    .collect();
    let mut loaded = BTreeMap::new();
    assert_eq!(
        sync_prefixes(&mut trie, &mut loaded, &desired).expect("write"),
        (6, 0)
    );
    for (addr, want, why) in [
        ("198.18.7.5:9000", Some(2), "the /24 over the /16"),
        ("198.18.7.0:9000", Some(2), "the /24's first address"),
        ("198.18.7.239:9000", Some(2), "just below the /28"),
        ("198.18.7.240:9000", Some(3), "the /28 over the /24"),
        ("198.18.7.255:9000", Some(3), "the /28's last address"),
        ("198.18.9.1:9000", Some(1), "the /16 outside the /24"),
        ("198.19.0.1:9000", None, "outside every range"),
        ("198.18.7.5:9001", Some(4), "the port is matched exactly"),
        ("198.18.9.1:9001", None, "no /16 on 9001"),
        ("198.18.7.5:9002", None, "no range on 9002"),
        ("[fd00:7473::abcd:1]:9000", Some(5), "an IPv6 range"),
        ("[fd00:7474::1]:9000", None, "outside the IPv6 range"),
        // The same leading bytes in the other family do not match.
        ("[c612:700::1]:9000", None, "198.18.7 as IPv6 bits"),
        ("203.0.113.9:443", Some(6), "a /0 takes every IPv4 address"),
        ("[2001:db8::1]:443", None, "but no IPv6 one"),
    ] {
        assert_eq!(lookup(&trie, addr), want, "{addr}: {why}");
    }
    // Reconciled: the ranges no longer wanted leave, the others stay.
    let fewer: BTreeMap<PrefixKey, ServiceValue> = [entry("198.18.0.0/16", 9000, 1)].into();
    assert_eq!(
        sync_prefixes(&mut trie, &mut loaded, &fewer).expect("remove"),
        (0, 5)
    );
    assert_eq!(lookup(&trie, "198.18.7.240:9000"), Some(1));
    assert_eq!(trie.keys().count(), 1, "one range left in the kernel");
}

/// `TS_GATEWAY_FLOWS` is counted in batches (a syscall per 4 096 entries,
/// not one per entry): the count is what walking its keys finds, over
/// several batches, and nothing when it is empty.
#[test]
fn the_pending_gateway_connections_are_counted_in_batches() {
    use std::os::fd::AsFd as _;

    use aya::maps::{HashMap, IterableMap as _};
    use traffic_shift_common::FlowKey;

    require_root("the map tests create BPF maps");
    let mut ebpf = EbpfLoader::new()
        .load(EBPF_OBJECT)
        .expect("load the eBPF object's maps");
    let mut flows: HashMap<MapData, FlowKey, u32> = HashMap::try_from(
        ebpf.take_map(map_names::GATEWAY_FLOWS)
            .expect("TS_GATEWAY_FLOWS"),
    )
    .expect("a hash map");
    let count = |flows: &HashMap<MapData, FlowKey, u32>| {
        crate::pins::count_hash_entries(
            flows.map().fd().as_fd(),
            size_of::<FlowKey>(),
            size_of::<u32>(),
        )
        .expect("BPF_MAP_LOOKUP_BATCH")
    };
    assert_eq!(count(&flows), 0);
    for i in 0..10_000_u32 {
        let mut key: FlowKey = bytemuck::Zeroable::zeroed();
        key.local[..4].copy_from_slice(&i.to_be_bytes());
        key.family = FAMILY_V4;
        flows.insert(key, i, 0).expect("insert");
    }
    // An LRU map may evict before it is full: the walk is the reference.
    let walked = flows.keys().count();
    assert!(
        walked > 2 * 4096,
        "{walked} entries kept: not several batches"
    );
    assert_eq!(count(&flows), walked);
}
