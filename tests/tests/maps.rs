//! End-to-end: `traffic-shift maps` decodes the pinned maps of a running
//! agent, and bpftool prints the same keys in their natural byte order. As
//! root (`cargo xtask test`), in the test's own netns, cgroup and bpffs dir.

use std::process::Output;

use serde_json::Value;
use traffic_shift_tests::{SERVICE_V4, Scenario, tcp_echo_rule, traffic_shift};

const V2_20: &str = "examples/vs-20-v2.yaml";

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `bpftool map dump pinned PATH -j`, parsed.
fn bpftool_dump(path: &std::path::Path) -> Value {
    let out = std::process::Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(path)
        .arg("-j")
        .output()
        .expect("run bpftool (cargo xtask setup installs it)");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "bpftool: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bpftool -j: {e}: {stdout}"))
}

#[test]
fn maps_prints_the_service_dotted_and_bpftool_prints_its_bytes_in_order() {
    let mut s = Scenario::tcp_echo("maps", &tcp_echo_rule(V2_20));
    assert_eq!(s.client.burst(SERVICE_V4, 100), (80, 20));
    let bpffs = s.agent.bpffs.display().to_string();
    let status_file = s.agent.status_file.display().to_string();
    // The status file names the ids once the agent has written it.
    s.agent
        .wait_status("the routes", |t| t.contains("tcp-echo"));

    let out = traffic_shift(&["maps", "--bpffs", &bpffs, "--status-file", &status_file]);
    let (all, stderr) = text(&out);
    assert!(out.status.success(), "maps: {stderr}");
    assert!(!stderr.contains("not named"), "the ids are named: {stderr}");
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
        .filter(|l| l.contains("opened "))
        .filter_map(|l| {
            l.split("opened ")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
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

    // One map, by its short name.
    let out = traffic_shift(&[
        "maps",
        "services",
        "--bpffs",
        &bpffs,
        "--status-file",
        &status_file,
    ]);
    let (one, stderr) = text(&out);
    assert!(out.status.success(), "maps services: {stderr}");
    assert!(one.starts_with("TS_SERVICES: "), "{one}");
    assert!(one.contains("127.100.0.1:9000 -> route "), "{one}");
    assert!(!one.contains("TS_ROUTES"), "{one}");

    // An unknown name: an error that lists the known ones.
    let out = traffic_shift(&["maps", "TS_NOPE", "--bpffs", &bpffs]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("no map named TS_NOPE; the maps are: TS_SERVICES, TS_ROUTES"),
        "{stderr}"
    );

    // Without the status file the ids are printed alone, and it says why.
    let out = traffic_shift(&[
        "maps",
        "services",
        "--bpffs",
        &bpffs,
        "--status-file",
        "/nonexistent",
    ]);
    let (bare, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("note: ids are not named"), "{stderr}");
    assert!(bare.contains("127.100.0.1:9000 -> route "), "{bare}");
    assert!(!bare.contains("(default/tcp-echo"), "{bare}");

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
