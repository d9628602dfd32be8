//! End-to-end: a Gateway server bound to a unix socket (`bind:
//! unix:///<path>`, port 0, as Istio allows). The agent listens on the
//! socket; each connection picks a tcp-echo version with the weights of the
//! VirtualService bound to the Gateway (exactly, as everywhere else) and is
//! spliced to it. The socket file comes with the rules and goes with them.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::FileTypeExt as _, net::UnixStream},
    path::{Path, PathBuf},
};

use traffic_shift_tests::{
    Scenario, bookinfo_rule, http_client::read_response, metric, tcp_echo_rule, unique_name,
};

const ALL_V1: &str = "examples/vs-all-v1.yaml";

/// A directory for the sockets, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{}-sockets", unique_name(test)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("socket dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The Gateway `unix-gateway` with a TCP server on the unix socket `path`,
/// and the VirtualService `tcp-echo-unix` bound to it, splitting v1/v2.
fn unix_gateway(path: &Path, v1: u32, v2: u32) -> String {
    format!(
        "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: unix-gateway}}
spec:
  selector: {{app: unix-gateway}}
  servers:
  - port: {{number: 0, name: tcp-unix, protocol: TCP}}
    hosts: [\"*\"]
    bind: unix://{}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp-echo-unix}}
spec:
  hosts: [\"*\"]
  gateways: [unix-gateway]
  tcp:
  - route:
    - destination: {{host: tcp-echo.local, port: {{number: 9000}}, subset: v1}}
      weight: {v1}
    - destination: {{host: tcp-echo.local, port: {{number: 9000}}, subset: v2}}
      weight: {v2}
",
        path.display()
    )
}

/// One connection through the socket: who answers `hello`, and the
/// connection, still open.
fn connect(path: &Path) -> (String, BufReader<UnixStream>) {
    let mut stream =
        UnixStream::connect(path).unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
    stream.write_all(b"hello\n").expect("write");
    let mut reader = BufReader::new(stream);
    let who = answer(&mut reader);
    (who, reader)
}

/// The first word of the next line the backend answers.
fn answer(reader: &mut BufReader<UnixStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read an answer");
    line.split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("an empty answer: {line:?}"))
        .to_owned()
}

/// The status section of the route on the unix socket.
fn unix_route_section(status: &str) -> &str {
    status
        .split("\n\n")
        .find(|part| part.starts_with("ROUTE default/tcp-echo-unix/"))
        .unwrap_or_else(|| panic!("a section for the unix route:\n{status}"))
}

/// Each endpoint of the unix route with its total connections, sorted.
fn unix_route_totals(status: &str) -> Vec<(String, u64)> {
    let mut totals: Vec<(String, u64)> = unix_route_section(status)
        .lines()
        .filter(|line| line.starts_with("    "))
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let total = words.iter().position(|w| *w == "total")?;
            Some((words[0].to_owned(), words[total - 1].parse().ok()?))
        })
        .collect();
    totals.sort();
    totals
}

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Istio's TCP metrics count the unix route's connections as the kernel
/// path's: 800/200 opened, all 1000 closed, `hello\n` (6 bytes) received
/// and `one hello\n` or `two hello\n` (10) sent per connection.
fn metrics_show_the_unix_route(s: &Scenario) {
    let gateway = ("source_workload", "unix-gateway");
    let page = s
        .agent
        .wait_metrics("the unix route's 1000 closed connections", |page| {
            traffic_shift_tests::try_metric(page, "istio_tcp_connections_closed_total", &[gateway])
                == Some(1000)
        });
    for (version, n) in [("v1", 800), ("v2", 200)] {
        assert_eq!(
            metric(
                &page,
                "istio_tcp_connections_opened_total",
                &[gateway, ("destination_version", version)]
            ),
            n,
            "{version} opened"
        );
    }
    assert_eq!(
        metric(&page, "istio_tcp_received_bytes_total", &[gateway]),
        6000
    );
    assert_eq!(
        metric(&page, "istio_tcp_sent_bytes_total", &[gateway]),
        10_000
    );
}

/// The agent counts the connections it makes: status shows the 1000 of
/// the 80/20 per endpoint (round robin over each version's two endpoints),
/// names the socket, and the endpoints' health rather than a socket state.
fn status_shows_the_unix_route(s: &Scenario, sock: &Path) {
    let want = [
        ("127.0.0.1:19001".to_owned(), 400),
        ("127.0.0.1:19002".to_owned(), 100),
        ("[::1]:19001".to_owned(), 400),
        ("[::1]:19002".to_owned(), 100),
    ];
    let status = s
        .agent
        .wait_status("the unix route's 1000 connections", |status| {
            unix_route_totals(status) == want
        });
    assert!(
        status.contains(&format!(
            "service tcp-echo.local on unix://{}",
            sock.display()
        )),
        "status names the socket:\n{status}"
    );
    let section = unix_route_section(&status);
    assert!(
        section.contains("127.0.0.1:19001  ok") && !section.contains("missing"),
        "its endpoints are reached in user space, not through sk_lookup sockets:\n{section}"
    );
}

#[test]
fn a_unix_socket_gateway_splits_exactly_keeps_held_connections_and_goes_with_its_rules() {
    let dir = TempDir::new("unix-gw");
    let sock = dir.0.join("gw.sock");
    let mut s = Scenario::tcp_echo("unix-gw", &tcp_echo_rule(ALL_V1));

    let event = s
        .agent
        .write_rules("unix-gateway.yaml", unix_gateway(&sock, 80, 20));
    assert_eq!(event["result"], "applied", "{event}");
    assert!(is_socket(&sock), "the socket file is made on apply");

    let (mut one, mut two) = (0, 0);
    for i in 0..1000 {
        match connect(&sock).0.as_str() {
            "one" => one += 1,
            "two" => two += 1,
            other => panic!("connection {i}: answered by {other:?}"),
        }
    }
    println!("unix gateway 80/20 over 1000 connections: one={one} two={two}");
    status_shows_the_unix_route(&s, &sock);
    metrics_show_the_unix_route(&s);
    assert_eq!(
        (one, two),
        (800, 200),
        "80/20 through the unix socket is exact"
    );

    // Held connections keep their backend across a shift to all-v2.
    let mut held: Vec<(String, BufReader<UnixStream>)> = (0..10).map(|_| connect(&sock)).collect();
    let first: Vec<String> = held.iter().map(|(who, _)| who.clone()).collect();
    assert!(
        first.iter().any(|w| w == "one"),
        "some held on v1: {first:?}"
    );
    let event = s
        .agent
        .write_rules("unix-gateway.yaml", unix_gateway(&sock, 0, 100));
    assert_eq!(event["result"], "applied", "{event}");
    for i in 0..20 {
        assert_eq!(
            connect(&sock).0,
            "two",
            "connection {i} after the shift to all-v2"
        );
    }
    for (i, (who, reader)) in held.iter_mut().enumerate() {
        reader
            .get_mut()
            .write_all(b"again\n")
            .expect("a held connection is open");
        assert_eq!(
            &answer(reader),
            who,
            "held connection {i} keeps its backend"
        );
    }

    // A change whose socket cannot be bound is refused whole, saying where
    // and what to do; the socket in force keeps serving.
    let plain = dir.0.join("plain-file");
    std::fs::write(&plain, "not a socket").expect("write a plain file");
    let bad = unix_gateway(&plain, 50, 50)
        .replace("unix-gateway", "unix-gateway-2")
        .replace("tcp-echo-unix", "tcp-echo-unix-2");
    let event = s.agent.write_rules("bad-gateway.yaml", bad);
    assert_eq!(event["result"], "refused", "{event}");
    let error = event["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("unix socket {}", plain.display()))
            && error.contains("is not a socket")
            && error.contains("gateway default/unix-gateway-2"),
        "the error names the socket, the route and what is wrong: {error}"
    );
    assert_eq!(
        std::fs::read_to_string(&plain).expect("kept"),
        "not a socket",
        "a file that is not a socket is never replaced"
    );
    assert_eq!(connect(&sock).0, "two", "the previous rules stay in force");
    // A refused file that is gone is forgotten, without an event.
    std::fs::remove_file(s.agent.rules.join("bad-gateway.yaml")).expect("remove");

    // Deleting the Gateway (and its VirtualService) removes the socket.
    std::fs::remove_file(s.agent.rules.join("unix-gateway.yaml")).expect("remove");
    let event = s.agent.wait_events(1).remove(0);
    assert_eq!(event["result"], "removed", "{event}");
    assert!(!sock.exists(), "the socket file goes with the Gateway");
    for (i, (_, reader)) in held.iter_mut().enumerate() {
        reader
            .get_mut()
            .write_all(b"still\n")
            .expect("a held connection is open");
        assert_eq!(
            answer(reader),
            first[i],
            "held connection {i} outlives its Gateway"
        );
    }
}

#[test]
fn a_stale_socket_file_is_replaced_and_the_agent_removes_its_socket_when_it_stops() {
    let dir = TempDir::new("unix-gw-stop");
    let sock = dir.0.join("gw.sock");
    // A stale socket (nobody listens) where the Gateway binds: replaced.
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("a stale socket"));
    assert!(is_socket(&sock), "the stale socket file stays");
    let mut s = Scenario::tcp_echo_with(
        "unix-gw-stop",
        &[
            ("virtual-service.yaml", &tcp_echo_rule(ALL_V1)),
            ("unix-gateway.yaml", &unix_gateway(&sock, 80, 20)),
        ],
    );
    let two = (0..100).filter(|_| connect(&sock).0 == "two").count();
    assert_eq!(two, 20, "80/20 over 100 connections");

    s.agent.process.stop();
    assert!(!sock.exists(), "the agent removes its socket when it stops");

    // Started again on the same rules: the socket is back.
    s.agent.restart(&[]);
    assert!(is_socket(&sock), "bound again at start");
    let two = (0..100).filter(|_| connect(&sock).0 == "two").count();
    assert_eq!(two, 20, "80/20 over 100 connections after the restart");

    // Another route takes the socket over (the VirtualService renamed, at
    // 50/50): the socket stays and serves the new route's weights.
    let renamed = unix_gateway(&sock, 50, 50).replace("tcp-echo-unix", "tcp-echo-unix-renamed");
    let event = s.agent.write_rules("unix-gateway.yaml", renamed);
    assert_eq!(event["result"], "applied", "{event}");
    let two = (0..100).filter(|_| connect(&sock).0 == "two").count();
    assert_eq!(two, 50, "the new route's 50/50 over 100 connections");
}

/// Bookinfo's reviews behind a Gateway HTTP server on the unix socket
/// `path`, split 50/50 between v1 and v3.
fn unix_http_gateway(path: &Path) -> String {
    format!(
        "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: unix-http-gateway}}
spec:
  selector: {{app: unix-http-gateway}}
  servers:
  - port: {{number: 0, name: http-unix, protocol: HTTP}}
    hosts: [\"*\"]
    bind: unix://{}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews-unix}}
spec:
  hosts: [\"*\"]
  gateways: [unix-http-gateway]
  http:
  - match: [{{uri: {{prefix: /reviews}}}}]
    route:
    - destination: {{host: reviews, port: {{number: 9080}}, subset: v1}}
      weight: 50
    - destination: {{host: reviews, port: {{number: 9080}}, subset: v3}}
      weight: 50
",
        path.display()
    )
}

#[test]
fn a_unix_socket_http_gateway_is_served_by_the_l7_proxy() {
    let dir = TempDir::new("unix-http");
    let sock = dir.0.join("http.sock");
    let mut s = Scenario::bookinfo(
        "unix-http",
        &[(
            "virtual-service.yaml",
            &bookinfo_rule("virtual-service.yaml"),
        )],
        &[],
    );
    let event = s
        .agent
        .write_rules("unix-gateway.yaml", unix_http_gateway(&sock));
    assert_eq!(event["result"], "applied", "{event}");
    assert!(is_socket(&sock), "the socket file is made on apply");

    // 100 requests on one kept-alive connection: exactly 50/50.
    let stream = UnixStream::connect(&sock).expect("connect");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let (mut v1, mut v3) = (0, 0);
    for i in 0..100 {
        writer
            .write_all(b"GET /reviews/1 HTTP/1.1\r\nHost: bookinfo.example\r\n\r\n")
            .expect("write a request");
        let response = read_response(&mut reader, false).expect("a response");
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
        match response.answer().as_str() {
            "v1" => v1 += 1,
            "v3" => v3 += 1,
            other => panic!("request {i}: answered by {other:?}"),
        }
    }
    assert_eq!((v1, v3), (50, 50), "50/50 through the unix socket is exact");

    // Not a route of the gateway: the proxy's own 404.
    writer
        .write_all(b"GET /ratings/1 HTTP/1.1\r\nHost: bookinfo.example\r\n\r\n")
        .expect("write a request");
    let response = read_response(&mut reader, false).expect("a response");
    assert_eq!(response.status, 404, "{}", response.text());

    std::fs::remove_file(s.agent.rules.join("unix-gateway.yaml")).expect("remove");
    let event = s.agent.wait_events(1).remove(0);
    assert_eq!(event["result"], "removed", "{event}");
    assert!(!sock.exists(), "the socket file goes with the Gateway");
}
