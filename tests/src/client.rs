//! [`Client`]: the test client (`ts-client`) in a test's namespace and
//! cgroup, driven line by line; and [`http_get`], a plain GET from the test.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{ChildStdin, ChildStdout, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;

use crate::{
    binary,
    cgroup::Cgroup,
    netns::Netns,
    process::{Process, spawn_in},
};

/// The test client (`ts-client`) in the test's namespace and cgroup.
pub struct Client {
    process: Process,
    stdin: ChildStdin,
    replies: mpsc::Receiver<String>,
    /// An answer taken by `answered` before the test asked for it.
    early: Option<String>,
}

impl Client {
    /// In `netns`, and in `cgroup` when given (the connect-time hooks apply
    /// only there; a remote client of the gateway has none).
    pub fn start(netns: &Netns, cgroup: Option<&Cgroup>) -> Self {
        let mut cmd = Command::new(binary("TS_CLIENT_BIN", "ts-client"));
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = spawn_in(&mut cmd, netns, cgroup);
        let stdin = child.stdin.take().expect("piped");
        let stdout: ChildStdout = child.stdout.take().expect("piped");
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            process: Process {
                child,
                what: "ts-client".into(),
            },
            stdin,
            replies,
            early: None,
        }
    }

    /// Sends one command and returns its JSON answer.
    pub fn call(&mut self, command: &str) -> Value {
        self.send(command);
        self.answer(command)
    }

    /// Sends a command without waiting: the test does something else while
    /// it runs, then takes the answer with `answer`.
    pub fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("ts-client stdin");
    }

    /// The answer to the command sent last (waits up to 2 minutes).
    pub fn answer(&mut self, command: &str) -> Value {
        let line = match self.early.take() {
            Some(line) => line,
            None => self
                .replies
                .recv_timeout(Duration::from_mins(2))
                .unwrap_or_else(|e| panic!("ts-client gave no answer to `{command}`: {e}")),
        };
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("ts-client answer {line}: {e}"))
    }

    /// Whether the answer to the command sent last is already there.
    pub fn answered(&mut self) -> bool {
        if self.early.is_none() {
            self.early = self.replies.try_recv().ok();
        }
        self.early.is_some()
    }

    /// `burst`: returns (count answering `one`, count answering `two`) and
    /// asserts there were no errors and no other answers.
    pub fn burst(&mut self, target: &str, n: usize) -> (u64, u64) {
        let (one, two, errors) = self.burst_with_errors(target, n);
        assert!(errors.is_empty(), "connection errors: {errors:?}");
        (one, two)
    }

    /// `burst`: (answers `one`, answers `two`, connection errors), asserting
    /// there were no other answers.
    pub fn burst_with_errors(&mut self, target: &str, n: usize) -> (u64, u64, Vec<String>) {
        let reply = self.call(&format!("burst {target} {n}"));
        let count = |k: &str| reply["answers"][k].as_u64().unwrap_or(0);
        let errors: Vec<String> = reply["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| e.as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            count("one") + count("two") + errors.len() as u64,
            n as u64,
            "unexpected answers: {reply}"
        );
        (count("one"), count("two"), errors)
    }

    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// `stream_start`: connections to `target` back to back, in the
    /// background, until `stream_stop`.
    pub fn stream_start(&mut self, target: &str) {
        let reply = self.call(&format!("stream_start {target}"));
        assert!(reply["started"].is_u64(), "stream_start: {reply}");
    }

    /// `stream_start TARGET PAUSE_MS`: like [`Client::stream_start`], with
    /// a pause of `pause_ms` between connections (a steady load that leaves
    /// the CPU to etcd and the agents).
    pub fn stream_start_paced(&mut self, target: &str, pause_ms: u64) {
        let reply = self.call(&format!("stream_start {target} {pause_ms}"));
        assert!(reply["started"].is_u64(), "stream_start: {reply}");
    }

    /// `stream_count`: how many connections of the stream that started at or
    /// after `since_ns` (see [`monotonic_ns`]) are done so far.
    pub fn stream_count(&mut self, since_ns: u64) -> u64 {
        let reply = self.call(&format!("stream_count {since_ns}"));
        reply["count"]
            .as_u64()
            .unwrap_or_else(|| panic!("stream_count: {reply}"))
    }

    /// `stream_stop`: every connection of the stream, in the order made.
    pub fn stream_stop(&mut self) -> Vec<Streamed> {
        let reply = self.call("stream_stop");
        reply["connections"]
            .as_array()
            .unwrap_or_else(|| panic!("stream_stop: {reply}"))
            .iter()
            .map(|c| Streamed {
                start_ns: c["start_ns"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no start_ns: {c}")),
                connected_ns: c["connected_ns"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no connected_ns: {c}")),
                answer: match (c["answer"].as_str(), c["error"].as_str()) {
                    (Some(a), None) => Ok(a.to_owned()),
                    (None, Some(e)) => Err(e.to_owned()),
                    _ => panic!("neither answer nor error: {c}"),
                },
            })
            .collect()
    }
}

/// What `grpc` and `grpc_held` answer: per backend and per gRPC status
/// code, how many calls; the connection errors; the last reply.
#[derive(Debug, Clone)]
pub struct GrpcCalls {
    pub backends: std::collections::BTreeMap<String, u64>,
    pub codes: std::collections::BTreeMap<u32, u64>,
    pub errors: Vec<String>,
    pub last: Value,
}

impl GrpcCalls {
    fn of(reply: &Value) -> Self {
        assert!(reply["error"].is_null(), "gRPC calls failed: {reply}");
        let counts = |field: &str| -> Vec<(String, u64)> {
            reply[field]
                .as_object()
                .unwrap_or_else(|| panic!("no {field}: {reply}"))
                .iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        };
        Self {
            backends: counts("backends").into_iter().collect(),
            codes: counts("codes")
                .into_iter()
                .map(|(k, v)| (k.parse().expect("a code"), v))
                .collect(),
            errors: reply["errors"]
                .as_array()
                .expect("errors")
                .iter()
                .map(|e| e.as_str().unwrap_or_default().to_owned())
                .collect(),
            last: reply["last"].clone(),
        }
    }

    /// Calls that backend `name` answered.
    pub fn backend(&self, name: &str) -> u64 {
        self.backends.get(name).copied().unwrap_or(0)
    }

    /// Calls that ended with gRPC status `code`.
    pub fn code(&self, code: u32) -> u64 {
        self.codes.get(&code).copied().unwrap_or(0)
    }
}

impl Client {
    /// `grpc`: `n` unary calls of `method` on one new h2c connection to
    /// `target`, with `:authority` `authority` and `headers`
    /// (`name:value`).
    pub fn grpc(
        &mut self,
        target: &str,
        authority: &str,
        method: &str,
        n: usize,
        headers: &[&str],
    ) -> GrpcCalls {
        let reply = self.call(&format!(
            "grpc {target} {authority} {method} {n} {}",
            headers.join(" ")
        ));
        GrpcCalls::of(&reply)
    }

    /// `grpc_open`: an h2c connection to `target`, kept for `grpc_held`.
    pub fn grpc_open(&mut self, target: &str, authority: &str) {
        let reply = self.call(&format!("grpc_open {target} {authority}"));
        assert_eq!(reply["opened"], true, "grpc_open {target}: {reply}");
    }

    /// `grpc_held`: `n` calls on the connection `grpc_open` opened.
    pub fn grpc_held(&mut self, method: &str, n: usize) -> GrpcCalls {
        let reply = self.call(&format!("grpc_held {method} {n}"));
        GrpcCalls::of(&reply)
    }
}

/// One connection of a `stream`.
#[derive(Debug, Clone)]
pub struct Streamed {
    /// Just before `connect` (see [`monotonic_ns`]).
    pub start_ns: u64,
    /// Just after `connect` returned (or failed): the connect hook chose the
    /// backend between `start_ns` and this.
    pub connected_ns: u64,
    /// The backend's first word (`one`, `two`), or the connection's error.
    pub answer: Result<String, String>,
}

/// A plain HTTP/1.0 GET: (status code, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"));
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    (code, body.to_owned())
}
