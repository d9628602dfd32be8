//! End-to-end: a rules change is all or nothing, kernel and proxy together.
//! The agent is started with a failpoint (the test build has the
//! `failpoints` feature): the L7 proxy's step of every change after the
//! first fails. The refused change must leave the kernel's tables exactly as
//! they were (the same bytes in `TS_ROUTES` and `TS_SERVICES`, and new
//! connections still split by the old weights), and a refused `apply`
//! leaves the state file as it was. Run as root (`cargo xtask test`).

use std::path::Path;

use traffic_shift_common::map_names;
use traffic_shift_tests::{SERVICE_V4, Scenario, tcp_echo_rule};

/// The first L7 step (the initial rules) passes; every later one fails.
const FAIL_AFTER_FIRST: &str = "l7-prepare=1*off->return(proxy step failed on purpose)";

/// `bpftool -j map dump pinned DIR/NAME`: the map's whole content.
fn dump(bpffs: &Path, map: &str) -> serde_json::Value {
    let path = bpffs.join(map);
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(&path)
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "bpftool map dump {}: {out:?}",
        path.display()
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool: {out:?}: {e}"))
}

/// `TS_ROUTES` and `TS_SERVICES` as bpftool prints them.
fn kernel_tables(bpffs: &Path) -> String {
    format!(
        "{}\n{}",
        dump(bpffs, map_names::ROUTES),
        dump(bpffs, map_names::SERVICES)
    )
}

/// Asserts the kernel holds `before`; on a difference, shows where it starts
/// (the dumps are hundreds of kilobytes).
fn assert_tables_unchanged(bpffs: &Path, before: &str, what: &str) {
    let after = kernel_tables(bpffs);
    if after != before {
        let at = before
            .bytes()
            .zip(after.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(before.len().min(after.len()));
        let context = |s: &str| {
            s.get(at.saturating_sub(120)..(at + 120).min(s.len()))
                .unwrap_or("")
                .to_owned()
        };
        panic!(
            "{what}: the kernel's TS_ROUTES / TS_SERVICES changed ({} -> {} bytes of dump), first difference at byte {at}:\nbefore: ...{}...\nafter:  ...{}...",
            before.len(),
            after.len(),
            context(before),
            context(&after)
        );
    }
}

#[test]
fn a_rules_file_refused_by_the_proxy_step_leaves_the_kernel_tables_unchanged() {
    let mut s = Scenario::tcp_echo_opts(
        "aon-dir",
        &[(
            "virtual-service.yaml",
            &tcp_echo_rule("examples/vs-all-v1.yaml"),
        )],
        &["--health-interval", "0", "--failpoint", FAIL_AFTER_FIRST],
    );
    assert_eq!(s.client.burst(SERVICE_V4, 10), (10, 0), "all-v1 in force");
    let before = kernel_tables(&s.agent.bpffs);
    let generation = s.agent.status_json()["generation"].clone();

    let event = s.agent.write_rules(
        "virtual-service.yaml",
        tcp_echo_rule("examples/vs-20-v2.yaml"),
    );
    assert_eq!(event["result"], "refused", "{event}");
    let error = event["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the L7 proxy refused the http rules: proxy step failed on purpose"),
        "the refusal names the step that failed: {error}"
    );

    assert_tables_unchanged(&s.agent.bpffs, &before, "after the refused rules file");
    assert_eq!(
        s.agent.status_json()["generation"],
        generation,
        "no new generation"
    );
    // 20 new connections under 80/20 would give v2 exactly 4.
    assert_eq!(
        s.client.burst(SERVICE_V4, 20),
        (20, 0),
        "new connections still follow the rules in force before (all v1)"
    );
}

#[test]
fn an_apply_refused_by_the_proxy_step_changes_neither_kernel_nor_state_file() {
    let mut s = Scenario::tcp_echo_backends(
        "aon-apply",
        &["--health-interval", "0", "--failpoint", FAIL_AFTER_FIRST],
    );
    let dir = s.rules_dir.parent().expect("temp dir").join(format!(
        "{}-apply",
        s.rules_dir.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&dir).expect("apply dir");
    for (file, text) in [
        ("service-entry.yaml", tcp_echo_rule("service-entry.yaml")),
        (
            "destination-rule.yaml",
            tcp_echo_rule("destination-rule.yaml"),
        ),
        ("gateway.yaml", tcp_echo_rule("gateway.yaml")),
        (
            "virtual-service.yaml",
            tcp_echo_rule("examples/vs-all-v1.yaml"),
        ),
    ] {
        std::fs::write(dir.join(file), text).expect("write");
    }
    let dir_arg = dir.to_string_lossy().into_owned();
    let first = s.agent.ctl(&["apply", "-f", &dir_arg]);
    assert!(first.status.success(), "the first apply goes in: {first:?}");
    assert_eq!(s.client.burst(SERVICE_V4, 10), (10, 0), "all-v1 in force");
    let before = kernel_tables(&s.agent.bpffs);
    let state = s.agent.applied_dir.join("applied.yaml");
    let state_before = std::fs::read(&state).expect("state file after the first apply");

    let change = dir.join("vs-20-v2.yaml");
    std::fs::write(&change, tcp_echo_rule("examples/vs-20-v2.yaml")).expect("write");
    let refused = s.agent.ctl(&["apply", "-f", &change.to_string_lossy()]);
    assert_eq!(refused.status.code(), Some(1), "refused: {refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("the L7 proxy refused the http rules: proxy step failed on purpose"),
        "the refusal names the step that failed: {stderr}"
    );

    assert_tables_unchanged(&s.agent.bpffs, &before, "after the refused apply");
    assert_eq!(
        std::fs::read(&state).expect("state file"),
        state_before,
        "the state file holds what is in force"
    );
    assert_eq!(
        s.client.burst(SERVICE_V4, 20),
        (20, 0),
        "new connections still follow the rules in force before (all v1)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
