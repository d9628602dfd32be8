//! End-to-end: `traffic-shift maps` decodes the pinned maps of a running
//! agent, and bpftool prints the same keys in their natural byte order. As
//! root (`cargo xtask test`), in the test's own netns, cgroup and bpffs dir.

use std::{path::Path, process::Output};

use serde_json::Value;
use traffic_shift_tests::{SERVICE_V4, Scenario, tcp_echo_rule, traffic_shift};

const V2_20: &str = "examples/vs-20-v2.yaml";

/// `traffic-shift maps ARGS --bpffs <the agent's> ...`: exit code, stdout, stderr.
fn maps(s: &Scenario, args: &[&str]) -> (Option<i32>, String, String) {
    let bpffs = s.agent.bpffs.display().to_string();
    let mut all = vec!["maps", "--bpffs", &bpffs];
    all.extend(args);
    let out: Output = traffic_shift(&all);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `bpftool map dump pinned PATH -j`, parsed.
fn bpftool_dump(path: &Path) -> Value {
    let out = std::process::Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(path)
        .arg("-j")
        .output()
        .expect("run bpftool (cargo xtask setup installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bpftool -j: {e}: {stdout}"))
}

#[test]
fn maps_prints_the_service_dotted_and_bpftool_prints_its_bytes_in_order() {
    let mut s = Scenario::tcp_echo("maps", &tcp_echo_rule(V2_20));
    assert_eq!(s.client.burst(SERVICE_V4, 100), (80, 20));
    // The status file names the ids once the agent has written it.
    s.agent
        .wait_status("the routes", |t| t.contains("tcp-echo"));
    let status_file = s.agent.status_file.display().to_string();

    let (code, all, stderr) = maps(&s, &["--status-file", &status_file]);
    assert_eq!(code, Some(0), "maps: {stderr}");
    assert!(!stderr.contains("not named"), "the ids are named: {stderr}");
    check_everything(&all);

    // One map, by its short name.
    let (code, one, stderr) = maps(&s, &["services", "--status-file", &status_file]);
    assert_eq!(code, Some(0), "maps services: {stderr}");
    assert!(one.starts_with("TS_SERVICES: "), "{one}");
    assert!(one.contains("127.100.0.1:9000 -> route "), "{one}");
    assert!(!one.contains("TS_ROUTES"), "{one}");

    // An unknown name: an error that lists the known ones.
    let (code, _, stderr) = maps(&s, &["TS_NOPE"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(
            "no map named TS_NOPE; the maps are: TS_SERVICES, TS_SVC_PREFIXES, TS_ROUTES"
        ),
        "{stderr}"
    );

    // Without the status file the ids are printed alone, and it says why.
    let (code, bare, stderr) = maps(&s, &["services", "--status-file", "/nonexistent"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("note: ids are not named"), "{stderr}");
    assert!(bare.contains("127.100.0.1:9000 -> route "), "{bare}");
    assert!(!bare.contains("(default/tcp-echo"), "{bare}");

    check_conns(&mut s, &status_file);

    // bpftool: the same key, the address as bytes in their natural order.
    let dump = bpftool_dump(&s.agent.bpffs.join("TS_SERVICES"));
    let entries = dump.as_array().expect("a list of entries");
    let addrs: Vec<&Value> = entries
        .iter()
        .filter_map(|e| e.pointer("/formatted/key/addr"))
        .collect();
    let v4: Value = serde_json::json!([127, 100, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert!(
        addrs.contains(&&v4),
        "127.100.0.1 as [127,100,0,1,0,...] in bpftool's dump: {dump:#}"
    );
    let v6: Value = serde_json::json!([0xfd, 0, 0x74, 0x73, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert!(addrs.contains(&&v6), "fd00:7473::1 in order: {dump:#}");
}

/// Every map's output after 100 connections at 80/20.
fn check_everything(all: &str) {
    // The service, dotted with its port in host order, and its route by name.
    let service = all
        .lines()
        .find(|l| l.trim_start().starts_with("127.100.0.1:9000 -> route "))
        .unwrap_or_else(|| panic!("the IPv4 service in:\n{all}"));
    assert!(
        service.contains("(default/tcp-echo/tcp[0]/port 9000 ipv4)"),
        "{service}"
    );
    assert!(all.contains("[fd00:7473::1]:9000 -> route "), "{all}");
    // The route table as weights: 80/20 is 4 of 5 slots and 1 of 5.
    assert!(
        all.contains("dest 0 (tcp-echo.local/v1): 4 of 5 slots (80.0%)"),
        "{all}"
    );
    assert!(
        all.contains("dest 1 (tcp-echo.local/v2): 1 of 5 slots (20.0%)"),
        "{all}"
    );
    // Per-CPU counters summed: 100 connections opened in all.
    let opened: u64 = all
        .lines()
        .filter_map(|l| l.split("opened ").nth(1)?.split(',').next())
        .map(|n| n.parse::<u64>().expect("a count"))
        .sum();
    assert_eq!(opened, 100, "{all}");
    assert!(
        all.contains("connect      rewritten            100"),
        "{all}"
    );
    // Every pinned map has its heading.
    for (name, _) in traffic_shift_datapath::inspect::MAPS {
        assert!(all.contains(&format!("{name}: ")), "{name} in:\n{all}");
    }
}

/// TS_CONNS: the open routed connections, found through their sockets in
/// the test's network namespace: 4 held to the service, 1 to the gateway
/// port (the endpoint's accepted socket carries that one).
fn check_conns(s: &mut Scenario, status_file: &str) {
    let held = s.client.call(&format!("hold {SERVICE_V4} 4"));
    assert!(!held.to_string().contains("error"), "{held}");
    let held = s.client.call("hold 127.0.0.1:31400 1");
    assert!(!held.to_string().contains("error"), "{held}");
    let netns = format!("/var/run/netns/{}", s.netns.name);
    let (code, conns, stderr) = maps(
        s,
        &["conns", "--status-file", status_file, "--netns", &netns],
    );
    assert_eq!(code, Some(0), "maps conns: {stderr}");
    let to_service = conns
        .lines()
        .filter(|l| l.contains(": service 127.100.0.1:9000, route ") && l.contains("established"))
        .count();
    assert_eq!(to_service, 4, "{conns}");
    assert!(
        conns
            .lines()
            .any(|l| l.contains(" <- 127.0.0.1:") && l.contains(": gateway, slot ")),
        "the gateway connection's server side: {conns}"
    );
}
