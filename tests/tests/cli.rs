//! End-to-end: `traffic-shift apply|delete|get|version` against the real
//! agent over its admin socket, the split checked with real connections,
//! each test in its own network namespace and child cgroup. Run as root
//! (`cargo xtask test`).

use std::{
    io::{Read as _, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use traffic_shift_tests::{SERVICE_V4, Scenario, repo_rules, tcp_echo_rule, traffic_shift_bin};

const ALL_V2: &str = "examples/vs-all-v2.yaml";
const V2_20: &str = "examples/vs-20-v2.yaml";

fn rules(file: &str) -> String {
    repo_rules()
        .join("tcp-echo")
        .join(file)
        .display()
        .to_string()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts `out` exited with `code` and printed `expected` on stdout.
#[track_caller]
fn expect(out: &Output, code: i32, expected: &str) {
    assert_eq!(
        (out.status.code(), stdout(out).as_str()),
        (Some(code), expected),
        "stderr: {}",
        stderr(out)
    );
}

/// `apply -f rules/tcp-echo`: the shipped rules (all to v1).
fn apply_tcp_echo(s: &Scenario) {
    expect(
        &s.agent.ctl(&["apply", "-f", &rules("")]),
        0,
        "destinationrule/tcp-echo-destination created\n\
         gateway/tcp-echo-gateway created\n\
         serviceentry/tcp-echo created\n\
         virtualservice/tcp-echo created\n",
    );
}

/// Connections to v2 out of 100: the default selection is smooth, so any
/// 100 consecutive connections get the weight's share to within one.
fn v2_of_100(s: &mut Scenario) -> u64 {
    let (one, two) = s.client.burst(SERVICE_V4, 100);
    assert_eq!(one + two, 100);
    two
}

#[test]
fn apply_shifts_tcp_echo_from_v1_to_v2_in_three_steps() {
    let mut s = Scenario::tcp_echo_backends("cli-shift", &[]);
    expect(
        &s.agent.ctl(&["version"]),
        0,
        &format!(
            "client: traffic-shift {v}\nagent:  traffic-shift {v}\n",
            v = env!("CARGO_PKG_VERSION")
        ),
    );
    expect(
        &s.agent.ctl(&["get", "vs"]),
        0,
        "", // "No resources found in default namespace." on stderr, as kubectl
    );

    apply_tcp_echo(&s);
    assert_eq!(v2_of_100(&mut s), 0, "all to v1");

    expect(
        &s.agent.ctl(&["apply", "-f", &rules(V2_20)]),
        0,
        "virtualservice/tcp-echo configured\n",
    );
    let two = v2_of_100(&mut s);
    assert!((19..=21).contains(&two), "80/20: v2 got {two} of 100");
    expect(
        &s.agent.ctl(&["apply", "-f", &rules(V2_20)]),
        0,
        "virtualservice/tcp-echo unchanged\n",
    );

    expect(
        &s.agent.ctl(&["apply", "-f", &rules(ALL_V2)]),
        0,
        "virtualservice/tcp-echo configured\n",
    );
    assert_eq!(v2_of_100(&mut s), 100, "all to v2");

    let table = s.agent.ctl(&["get", "virtualservices", "-o", "wide"]);
    let lines: Vec<String> = stdout(&table).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cells[0], "tcp-echo");
    assert_eq!(cells[1], "[\"mesh\",\"tcp-echo-gateway\"]");
    assert_eq!(cells[2], "[\"tcp-echo.local\"]");
    assert_eq!(cells.last(), Some(&"apply"), "{lines:?}");
    let names = s.agent.ctl(&["get", "se", "-A", "-o", "name"]);
    expect(&names, 0, "serviceentry/tcp-echo\n");
}

#[test]
fn an_apply_with_one_bad_file_among_good_ones_changes_nothing() {
    let mut s = Scenario::tcp_echo_backends("cli-refused", &[]);
    apply_tcp_echo(&s);
    let state = s.agent.applied_dir.join("applied.yaml");
    let before = std::fs::read_to_string(&state).expect("state file");

    let dir = s.agent.state_dir().join("bad");
    std::fs::create_dir_all(&dir).expect("dir");
    let bad_vs = dir.join("vs.yaml");
    std::fs::write(
        &bad_vs,
        tcp_echo_rule(V2_20)
            .replace("weight: 20", "weight: -20")
            .replace("subset: v1", "subset: V_1"),
    )
    .expect("write");
    let bad_gw = dir.join("gw.yaml");
    std::fs::write(
        &bad_gw,
        tcp_echo_rule("gateway.yaml").replace("number: 31400", "number: 0"),
    )
    .expect("write");
    let (vs, gw) = (bad_vs.display().to_string(), bad_gw.display().to_string());

    // Good files around the bad ones.
    let out = s.agent.ctl(&[
        "apply",
        "-f",
        &rules(V2_20),
        "-f",
        &vs,
        "-f",
        &gw,
        "-f",
        &rules("destination-rule.yaml"),
    ]);
    expect(&out, 1, "");
    let errors = stderr(&out);
    let lines: Vec<&str> = errors.lines().collect();
    assert_eq!(lines.len(), 4, "three errors and the summary:\n{errors}");
    for (line, start) in lines.iter().zip([
        format!("error: {vs}: document 1 (VirtualService default/tcp-echo): spec.tcp[0].route[0].destination.subset: subset name is invalid: V_1 (line "),
        format!("error: {vs}: document 1 (VirtualService default/tcp-echo): spec.tcp[0].route[1].weight: weight -20 < 0 (line "),
        format!("error: {gw}: document 1 (Gateway default/tcp-echo-gateway): spec.servers[0].port.number: port number 0 must be in the range 1..65535 (line "),
        "apply refused, nothing changed: 3 errors".to_owned(),
    ]) {
        assert!(line.starts_with(&start), "want {start:?}..., got {line:?}");
    }
    assert_eq!(v2_of_100(&mut s), 0, "all v1 still");
    assert_eq!(
        std::fs::read_to_string(&state).expect("state file"),
        before,
        "the applied set is not touched"
    );

    // Valid documents whose set does not resolve: refused with the reason.
    let out = s.agent.ctl(&["delete", "-f", &rules("service-entry.yaml")]);
    expect(&out, 1, "");
    assert!(
        stderr(&out).contains(
            "(VirtualService default/tcp-echo): spec.tcp[0].route[0].destination.host: referenced host not found: \"tcp-echo.local\""
        ),
        "the VirtualService still needs the ServiceEntry: {}",
        stderr(&out)
    );
    assert_eq!(v2_of_100(&mut s), 0, "all v1 still");
}

#[test]
fn get_yaml_applies_back_unchanged_and_delete_removes() {
    let mut s = Scenario::tcp_echo_backends("cli-delete", &[]);
    apply_tcp_echo(&s);
    let yaml = s.agent.ctl(&["get", "vs", "tcp-echo", "-o", "yaml"]);
    assert!(yaml.status.success(), "{}", stderr(&yaml));
    assert!(
        stdout(&yaml).starts_with("apiVersion: networking.istio.io/v1\nkind: VirtualService\n"),
        "{}",
        stdout(&yaml)
    );
    expect(
        &s.agent.ctl_with_input(&["apply", "-f", "-"], &yaml.stdout),
        0,
        "virtualservice/tcp-echo unchanged\n",
    );
    let all = s.agent.ctl(&["get", "gw", "-o", "yaml"]);
    expect(
        &s.agent.ctl_with_input(&["apply", "-f", "-"], &all.stdout),
        0,
        "gateway/tcp-echo-gateway unchanged\n",
    );
    let json = s
        .agent
        .ctl(&["get", "dr", "tcp-echo-destination", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(json["spec"]["host"], "tcp-echo.local");

    let vs = rules("virtual-service.yaml");
    expect(
        &s.agent.ctl(&["delete", "-f", &vs, "--dry-run"]),
        0,
        "virtualservice/tcp-echo deleted (dry run)\n",
    );
    assert_eq!(v2_of_100(&mut s), 0, "a dry run changes nothing");
    expect(
        &s.agent.ctl(&["delete", "-f", &vs]),
        0,
        "virtualservice/tcp-echo deleted\n",
    );
    // No route: the service address is an ordinary (closed) loopback port.
    let (one, two, errors) = s.client.burst_with_errors(SERVICE_V4, 10);
    assert_eq!((one, two, errors.len()), (0, 0, 10), "{errors:?}");
    let missing = s.agent.ctl(&["get", "vs", "tcp-echo"]);
    expect(&missing, 1, "");
    assert_eq!(
        stderr(&missing),
        "error: virtualservice \"tcp-echo\" not found in namespace \"default\"\n"
    );
    let again = s.agent.ctl(&["delete", "-f", &vs]);
    expect(&again, 1, "");
    assert!(
        stderr(&again).contains("not found: it is not applied"),
        "{}",
        stderr(&again)
    );
    expect(
        &s.agent.ctl(&["delete", "-f", &vs, "--ignore-not-found"]),
        0,
        "",
    );

    // The same resource from the rules directory: owned there.
    let event = s
        .agent
        .write_rules("virtual-service.yaml", tcp_echo_rule(V2_20));
    assert_eq!(event["result"], "applied", "{event}");
    let two = v2_of_100(&mut s);
    assert!((19..=21).contains(&two), "80/20 from the file: {two}");
    let owned = s.agent.ctl(&["apply", "-f", &rules(ALL_V2)]);
    expect(&owned, 1, "");
    assert!(
        stderr(&owned).contains(&format!(
            "VirtualService default/tcp-echo is defined in the rules directory ({}): change it there",
            s.agent.rules.join("virtual-service.yaml").display()
        )),
        "{}",
        stderr(&owned)
    );
    let wide = stdout(&s.agent.ctl(&["get", "vs", "-o", "wide"]));
    assert!(
        wide.lines()
            .nth(1)
            .is_some_and(|l| l.ends_with("/virtual-service.yaml")),
        "SOURCE is the file: {wide}"
    );
}

#[test]
fn applied_resources_are_restored_when_the_agent_starts_again() {
    // Stopping unloads the datapath: only a restored applied set routes again.
    let mut s = Scenario::tcp_echo_backends("cli-restart", &["--unload-on-exit"]);
    apply_tcp_echo(&s);
    expect(
        &s.agent.ctl(&["apply", "-f", &rules(V2_20)]),
        0,
        "virtualservice/tcp-echo configured\n",
    );
    let before = stdout(&s.agent.ctl(&["get", "vs", "-o", "yaml"]));

    // Stopped: the CLI says so, with its own exit code.
    let status = s.agent.process.signal_and_wait(libc::SIGINT);
    assert!(status.success(), "Ctrl-C is a clean stop: {status}");
    let out = s.agent.ctl(&["get", "vs"]);
    expect(&out, 3, "");
    assert!(
        stderr(&out).starts_with("error: the agent is not running: no admin socket at "),
        "{}",
        stderr(&out)
    );
    let (_, _, errors) = s.client.burst_with_errors(SERVICE_V4, 5);
    assert_eq!(
        errors.len(),
        5,
        "unloaded: the service address is not routed"
    );

    s.agent.restart(&["--unload-on-exit"]);
    assert_eq!(
        stdout(&s.agent.ctl(&["get", "vs", "-o", "yaml"])),
        before,
        "the same resource, creation time included"
    );
    let two = v2_of_100(&mut s);
    assert!(
        (19..=21).contains(&two),
        "80/20 in force after the restart, with no apply: {two}"
    );
    assert!(
        s.agent.log_text().contains("applied resources restored"),
        "{}",
        s.agent.log_text()
    );
}

/// Runs the CLI as `nobody`.
fn as_nobody(args: &[&str], socket: &Path) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(traffic_shift_bin())
        .args(args)
        .arg("--admin-socket")
        .arg(socket)
        .output()
        .expect("run setpriv (util-linux)")
}

#[test]
fn only_root_may_use_the_admin_socket() {
    let s = Scenario::tcp_echo_backends("cli-root", &[]);
    let socket = &s.agent.admin_socket;
    let meta = std::fs::metadata(socket).expect("socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "mode 0600");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        0,
        "owned by root"
    );

    let out = as_nobody(&["get", "vs"], socket);
    expect(&out, 1, "");
    assert_eq!(
        stderr(&out),
        format!(
            "error: permission denied: {} is root-only (it changes the node's routing); run this as root, e.g. with sudo\n",
            socket.display()
        )
    );
    // The mode loosened: the agent still refuses by the peer's credentials.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = as_nobody(&["apply", "-f", &rules("")], socket);
    expect(&out, 1, "");
    assert_eq!(
        stderr(&out),
        "error: permission denied: the agent takes admin requests from root (uid 0) only, and this client runs as uid 65534; run it as root, e.g. with sudo\n"
    );
    expect(&s.agent.ctl(&["get", "gw"]), 0, "");
}

/// Sends raw bytes to the socket and returns the answer, parsed.
fn raw(socket: &PathBuf, bytes: &[u8]) -> serde_json::Value {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    // The agent may answer before it has read everything.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("an answer");
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("answer {answer:?}: {e}"))
}

#[test]
fn malformed_and_oversized_requests_get_an_error_and_the_agent_keeps_serving() {
    let mut s = Scenario::tcp_echo_backends("cli-raw", &[]);
    let socket = s.agent.admin_socket.clone();
    // A client that connects and says nothing does not hold up the others.
    let silent = UnixStream::connect(&socket).expect("connect");

    let answer = raw(&socket, b"{\"command\": \"apply\", \"files\": [}\n");
    assert_eq!(answer["result"], "error", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("malformed request: ")),
        "{answer}"
    );
    let answer = raw(&socket, b"{\"command\": \"reboot\"}\n");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown variant `reboot`")),
        "{answer}"
    );
    let mut huge = b"{\"command\":\"apply\",\"files\":[{\"path\":\"x.yaml\",\"text\":\"".to_vec();
    huge.resize(129 << 20, b'#');
    huge.extend_from_slice(b"\"}]}\n");
    let answer = raw(&socket, &huge);
    assert_eq!(
        answer["message"],
        "the request is more than 134217728 bytes, the most the agent reads; apply fewer files at once",
        "{answer}"
    );
    let answer = raw(&socket, b"{\"command\":\"version\"}\n");
    assert_eq!(answer["result"], "version", "{answer}");

    assert!(
        s.agent.process.child.try_wait().expect("wait").is_none(),
        "the agent is still running"
    );
    apply_tcp_echo(&s);
    assert_eq!(v2_of_100(&mut s), 0, "and applies rules");
    drop(silent);
}
