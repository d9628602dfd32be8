//! Test client, run by the end-to-end tests inside a test's network
//! namespace and cgroup (so the connect hooks apply to it). It reads one
//! command per line on stdin and answers one JSON line on stdout:
//!
//! - `burst TARGET N [SRC]`: N sequential connections; each sends `hello`
//!   and reads the answer's first word (`one`, `two`). Optional source IP.
//! - `spread FIRST_TARGET N_ADDRESSES N`: N sequential connections (as in
//!   `burst`) to N_ADDRESSES consecutive IPv4 addresses from FIRST_TARGET's,
//!   on its port, in turn; each also checks that getpeername is the address
//!   it connected to (`peer_mismatches` lists those that are not).
//! - `sources TARGET FIRST_SRC N_SOURCES REPEAT`: REPEAT connections from each
//!   of N_SOURCES consecutive IPv4 source addresses starting at FIRST_SRC.
//! - `hold TARGET N`: opens N connections, asks each once, keeps them open.
//! - `held`: asks every held connection again.
//! - `peer TARGET`: one connection: its getpeername and the backend's
//!   `whoami` answer.
//! - `stream_start TARGET [PAUSE_MS]`: starts opening connections back to
//!   back (or PAUSE_MS apart) on a thread of its own (each as in `burst`)
//!   until `stream_stop`; the other commands keep working meanwhile.
//!   Answers at once.
//! - `stream_count SINCE_NS`: how many connections of the stream that
//!   started at or after SINCE_NS (`CLOCK_MONOTONIC`) are done so far.
//! - `http TARGET PATH N CONNS keepalive|close [NAME:VALUE ...] [@METHOD]`:
//!   N GET (or METHOD: `@POST`) requests over CONNS connections in
//!   parallel (keep-alive: each
//!   connection reused; close: one per request); which backend answered
//!   (`Response::answer`), status codes, errors.
//! - `http_stream_start TARGET PATH CONNS`: CONNS keep-alive clients asking
//!   back to back until `http_stream_stop`, which answers their totals.
//! - `grpc TARGET AUTHORITY METHOD N [NAME:VALUE ...]`: one h2c connection,
//!   N unary gRPC calls of METHOD (`Echo`, or a path `/svc/Method`) with
//!   `:authority` AUTHORITY, one after the other: the backends that
//!   answered, the gRPC status codes, errors, and the last reply
//!   (`traffic_shift_tests::grpc`).
//! - `grpc_open TARGET AUTHORITY`: opens an h2c connection and keeps it;
//!   `grpc_held METHOD N [NAME:VALUE ...]`: N calls on it (as `grpc`).
//! - `stream_stop`: stops the stream and answers every connection it made,
//!   in order: `start_ns` just before `connect` and `connected_ns` just
//!   after it returned (`CLOCK_MONOTONIC`, the clock of
//!   `traffic_shift_tests::monotonic_ns`: the connect hook ran between the
//!   two), and its `answer` or `error` (then `connected_ns` is when it failed).
#![forbid(unsafe_code)]

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use serde_json::{Value, json};
use socket2::{Domain, Protocol, Socket, Type};

fn main() {
    let mut grpc = Grpc::default();
    let mut held: Vec<BufReader<TcpStream>> = Vec::new();
    let mut stream: Option<Stream> = None;
    let mut http_stream: Option<HttpStream> = None;
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.expect("stdin");
        let args: Vec<&str> = line.split_whitespace().collect();
        let reply = match args.as_slice() {
            ["burst", target, n, rest @ ..] => burst(
                parse(target),
                n.parse().expect("N"),
                rest.first().map(|s| parse_ip(s)),
            ),
            ["spread", first, n_addresses, n] => spread(
                parse(first),
                n_addresses.parse().expect("N_ADDRESSES"),
                n.parse().expect("N"),
            ),
            ["sources", target, first, n, repeat] => sources(
                parse(target),
                parse_ip(first),
                n.parse().expect("N"),
                repeat.parse().expect("REPEAT"),
            ),
            ["hold", target, n] => {
                let mut answers = Vec::new();
                for _ in 0..n.parse::<usize>().expect("N") {
                    match connect(parse(target), None)
                        .and_then(|mut c| ask(&mut c, "hello").map(|a| (c, a)))
                    {
                        Ok((c, a)) => {
                            answers.push(Value::from(a));
                            held.push(c);
                        }
                        Err(e) => answers.push(json!({ "error": e.to_string() })),
                    }
                }
                json!({ "answers": answers })
            }
            ["held"] => {
                let answers: Vec<Value> = held
                    .iter_mut()
                    .map(|c| match ask(c, "again") {
                        Ok(a) => Value::from(a),
                        Err(e) => json!({ "error": e.to_string() }),
                    })
                    .collect();
                json!({ "answers": answers })
            }
            ["peer", target] => peer(parse(target)),
            ["stream_start", target, pause @ ..] if pause.len() <= 1 => {
                if stream.is_some() {
                    json!({ "error": "a stream is already running" })
                } else {
                    let pause = pause.first().map_or(Duration::ZERO, |ms| {
                        Duration::from_millis(ms.parse().expect("PAUSE_MS"))
                    });
                    stream = Some(Stream::start(parse(target), pause));
                    json!({ "started": monotonic_ns() })
                }
            }
            ["stream_count", since] => match &stream {
                Some(s) => json!({ "count": s.count_since(since.parse().expect("SINCE_NS")) }),
                None => json!({ "error": "no stream is running" }),
            },
            ["http", target, path, n, conns, mode, headers @ ..] => http(
                parse(target),
                path,
                n.parse().expect("N"),
                conns.parse().expect("CONNS"),
                *mode == "keepalive",
                headers,
            ),
            [command, ..] if command.starts_with("grpc") => grpc.command(&args),
            ["http_stream_start", target, path, conns] => start_http_stream(
                &mut http_stream,
                parse(target),
                path,
                conns.parse().expect("CONNS"),
            ),
            ["http_stream_stop"] => match http_stream.take() {
                Some(s) => s.stop(),
                None => json!({ "error": "no http stream is running" }),
            },
            ["stream_stop"] => match stream.take() {
                Some(s) => s.stop(),
                None => json!({ "error": "no stream is running" }),
            },
            _ => json!({ "error": format!("unknown command: {line}") }),
        };
        writeln!(stdout, "{reply}").expect("stdout");
        stdout.flush().expect("stdout");
    }
}

fn parse(target: &str) -> SocketAddr {
    target
        .parse()
        .unwrap_or_else(|e| panic!("target {target}: {e}"))
}

fn parse_ip(ip: &str) -> IpAddr {
    ip.parse().unwrap_or_else(|e| panic!("ip {ip}: {e}"))
}

fn connect(target: SocketAddr, source: Option<IpAddr>) -> std::io::Result<BufReader<TcpStream>> {
    let stream = match source {
        None => TcpStream::connect_timeout(&target, Duration::from_secs(5))?,
        Some(src) => {
            let socket = Socket::new(
                Domain::for_address(target),
                Type::STREAM,
                Some(Protocol::TCP),
            )?;
            socket.bind(&SocketAddr::new(src, 0).into())?;
            socket.connect_timeout(&target.into(), Duration::from_secs(5))?;
            socket.into()
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(BufReader::new(stream))
}

fn ask_line(conn: &mut BufReader<TcpStream>, what: &str) -> std::io::Result<String> {
    conn.get_mut().write_all(format!("{what}\n").as_bytes())?;
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed by peer",
        ));
    }
    Ok(line.trim_end().to_owned())
}

/// The first word of the backend's answer: its version prefix.
fn ask(conn: &mut BufReader<TcpStream>, what: &str) -> std::io::Result<String> {
    let line = ask_line(conn, what)?;
    Ok(line.split_whitespace().next().unwrap_or("").to_owned())
}

fn once(target: SocketAddr, source: Option<IpAddr>) -> Result<String, String> {
    connect(target, source)
        .and_then(|mut c| ask(&mut c, "hello"))
        .map_err(|e| e.to_string())
}

fn burst(target: SocketAddr, n: usize, source: Option<IpAddr>) -> Value {
    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    let mut sequence = String::new();
    let mut errors = Vec::new();
    for _ in 0..n {
        match once(target, source) {
            Ok(a) => {
                sequence.push(a.chars().next().unwrap_or('?'));
                *answers.entry(a).or_default() += 1;
            }
            Err(e) => errors.push(e),
        }
    }
    json!({ "answers": answers, "sequence": sequence, "errors": errors })
}

/// One connection: its getpeername and the backend's `whoami` answer.
fn peer(target: SocketAddr) -> Value {
    match connect(target, None) {
        Ok(mut c) => {
            let peer = c
                .get_ref()
                .peer_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string());
            let whoami = ask_line(&mut c, "whoami").unwrap_or_else(|e| e.to_string());
            json!({ "peername": peer, "whoami": whoami })
        }
        Err(e) => json!({ "error": e.to_string() }),
    }
}

fn spread(first: SocketAddr, n_addresses: u32, n: usize) -> Value {
    let IpAddr::V4(first_ip) = first.ip() else {
        panic!("spread takes an IPv4 first target")
    };
    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut peer_mismatches = Vec::new();
    let mut addresses = std::collections::BTreeSet::new();
    for i in 0..n {
        let offset = u32::try_from(i).expect("N fits u32") % n_addresses;
        let target = SocketAddr::new(
            Ipv4Addr::from(u32::from(first_ip) + offset).into(),
            first.port(),
        );
        addresses.insert(target);
        let result = connect(target, None).and_then(|mut c| {
            let peer = c.get_ref().peer_addr()?;
            ask(&mut c, "hello").map(|a| (peer, a))
        });
        match result {
            Ok((peer, a)) => {
                if peer != target {
                    peer_mismatches.push(format!("connected to {target}, getpeername {peer}"));
                }
                *answers.entry(a).or_default() += 1;
            }
            Err(e) => errors.push(format!("{target}: {e}")),
        }
    }
    json!({
        "answers": answers,
        "errors": errors,
        "peer_mismatches": peer_mismatches,
        "addresses": addresses.len(),
    })
}

fn sources(target: SocketAddr, first: IpAddr, n: u32, repeat: usize) -> Value {
    let IpAddr::V4(first) = first else {
        panic!("sources takes an IPv4 first source")
    };
    let mut per_source = serde_json::Map::new();
    for i in 0..n {
        let src = Ipv4Addr::from(u32::from(first) + i);
        let answers: Vec<Value> = (0..repeat)
            .map(|_| match once(target, Some(IpAddr::V4(src))) {
                Ok(a) => Value::from(a),
                Err(e) => json!({ "error": e }),
            })
            .collect();
        per_source.insert(src.to_string(), Value::from(answers));
    }
    json!({ "per_source": per_source })
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the
/// host, so the test can place these times among its own.
fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(now.tv_sec).expect("monotonic time is positive");
    let nanos = u64::try_from(now.tv_nsec).expect("nanoseconds are positive");
    secs * 1_000_000_000 + nanos
}

/// Connections opened back to back until stopped (`stream_start`).
struct Stream {
    stop: Arc<AtomicBool>,
    /// Every connection made so far, in order.
    made: Arc<Mutex<Vec<Streamed>>>,
    thread: JoinHandle<()>,
}

/// One connection of a stream.
struct Streamed {
    /// Just before `connect`.
    start_ns: u64,
    /// Just after `connect` returned.
    connected_ns: u64,
    answer: Result<String, String>,
}

impl Stream {
    fn start(target: SocketAddr, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let made = Arc::new(Mutex::new(Vec::new()));
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            let made = Arc::clone(&made);
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let start_ns = monotonic_ns();
                    let connected = connect(target, None);
                    let connected_ns = monotonic_ns();
                    let answer = connected
                        .and_then(|mut c| ask(&mut c, "hello"))
                        .map_err(|e| e.to_string());
                    made.lock().expect("stream lock").push(Streamed {
                        start_ns,
                        connected_ns,
                        answer,
                    });
                    if !pause.is_zero() {
                        std::thread::sleep(pause);
                    }
                }
            }
        });
        Self { stop, made, thread }
    }

    /// How many connections started at or after `since_ns` are done.
    fn count_since(&self, since_ns: u64) -> usize {
        let made = self.made.lock().expect("stream lock");
        made.iter()
            .rev()
            .take_while(|c| c.start_ns >= since_ns)
            .count()
    }

    fn stop(self) -> Value {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("stream thread");
        let made = std::mem::take(&mut *self.made.lock().expect("stream lock"));
        let connections: Vec<Value> = made
            .into_iter()
            .map(|c| {
                let (key, value) = match c.answer {
                    Ok(a) => ("answer", a),
                    Err(e) => ("error", e),
                };
                json!({
                    "start_ns": c.start_ns,
                    "connected_ns": c.connected_ns,
                    key: value,
                })
            })
            .collect();
        json!({ "stopped": monotonic_ns(), "connections": connections })
    }
}

/// What many requests got: per backend, per status, the errors.
#[derive(Default)]
struct Tally {
    answers: BTreeMap<String, u64>,
    status: BTreeMap<u16, u64>,
    errors: Vec<String>,
    connections: u64,
    requests: u64,
    /// The body of the last response (JSON, or a string).
    last: Value,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        for (k, v) in other.answers {
            *self.answers.entry(k).or_default() += v;
        }
        for (k, v) in other.status {
            *self.status.entry(k).or_default() += v;
        }
        self.errors.extend(other.errors);
        self.connections += other.connections;
        self.requests += other.requests;
        if !other.last.is_null() {
            self.last = other.last;
        }
    }

    fn json(&self) -> Value {
        let status: BTreeMap<String, u64> = self
            .status
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        json!({
            "answers": self.answers,
            "status": status,
            "errors": self.errors.iter().take(20).collect::<Vec<_>>(),
            "failed": self.errors.len(),
            "connections": self.connections,
            "requests": self.requests,
            "last": self.last,
        })
    }
}

/// `n` requests on one client's connection(s), counted into a tally.
fn http_client(
    target: SocketAddr,
    path: &str,
    n: usize,
    keep_alive: bool,
    headers: &[(String, String)],
    stop: Option<&AtomicBool>,
) -> Tally {
    use traffic_shift_tests::http_client::Conn;
    let method = headers
        .iter()
        .find(|(k, _)| k == ":method")
        .map_or("GET", |(_, v)| v.as_str());
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| k != ":method")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut tally = Tally::default();
    let mut conn: Option<Conn> = None;
    let mut i = 0;
    while i < n && !stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
        i += 1;
        tally.requests += 1;
        if conn.as_ref().is_none_or(|c| !c.reusable()) {
            match Conn::connect(target) {
                Ok(c) => {
                    tally.connections += 1;
                    conn = Some(c);
                }
                Err(e) => {
                    tally.errors.push(format!("connect: {e}"));
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        match c.request(method, path, &headers, b"", keep_alive) {
            Ok(response) => {
                *tally.status.entry(response.status).or_default() += 1;
                *tally.answers.entry(response.answer()).or_default() += 1;
                tally.last = response.json().unwrap_or_else(|| response.text().into());
                if response.status >= 500 {
                    tally
                        .errors
                        .push(format!("{} {}", response.status, response.text().trim()));
                }
            }
            Err(e) => {
                tally.errors.push(format!("request: {e}"));
                conn = None;
            }
        }
    }
    tally
}

fn http(
    target: SocketAddr,
    path: &str,
    n: usize,
    conns: usize,
    keep_alive: bool,
    headers: &[&str],
) -> Value {
    // `@POST`: the method, carried as the pseudo-header `:method`.
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|h| {
            if let Some(method) = h.strip_prefix('@') {
                return (":method".to_owned(), method.to_owned());
            }
            let (k, v) = h.split_once(':').expect("headers are NAME:VALUE");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let conns = conns.max(1);
    let mut total = Tally::default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..conns)
            .map(|k| {
                let share = n / conns + usize::from(k < n % conns);
                let headers = &headers;
                scope.spawn(move || http_client(target, path, share, keep_alive, headers, None))
            })
            .collect();
        for handle in handles {
            total.add(handle.join().expect("http client thread"));
        }
    });
    total.json()
}

/// Keep-alive clients asking back to back until stopped.
struct HttpStream {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Tally>>,
}

impl HttpStream {
    fn start(target: SocketAddr, path: &str, conns: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..conns)
            .map(|_| {
                let stop = Arc::clone(&stop);
                let path = path.to_owned();
                std::thread::spawn(move || {
                    http_client(target, &path, usize::MAX, true, &[], Some(&stop))
                })
            })
            .collect();
        Self { stop, threads }
    }

    fn stop(self) -> Value {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        for thread in self.threads {
            total.add(thread.join().expect("http stream thread"));
        }
        total.json()
    }
}

fn start_http_stream(
    slot: &mut Option<HttpStream>,
    target: SocketAddr,
    path: &str,
    conns: usize,
) -> Value {
    if slot.is_some() {
        return json!({ "error": "an http stream is already running" });
    }
    *slot = Some(HttpStream::start(target, path, conns));
    json!({ "started": monotonic_ns() })
}

/// The gRPC calls: a runtime for the client, and the held connection.
#[derive(Default)]
struct Grpc {
    runtime: Option<tokio::runtime::Runtime>,
    held: Option<traffic_shift_tests::grpc::Connection>,
}

impl Grpc {
    /// `grpc ...`, `grpc_open ...`, `grpc_held ...`.
    fn command(&mut self, args: &[&str]) -> Value {
        match args {
            ["grpc", target, authority, method, n, headers @ ..] => self.calls(
                Some((parse(target), authority)),
                method,
                n.parse().expect("N"),
                headers,
            ),
            ["grpc_open", target, authority] => self.open(parse(target), authority),
            ["grpc_held", method, n, headers @ ..] => {
                self.calls(None, method, n.parse().expect("N"), headers)
            }
            _ => json!({ "error": format!("unknown command {args:?}") }),
        }
    }

    fn runtime(&mut self) -> &tokio::runtime::Runtime {
        self.runtime.get_or_insert_with(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("tokio runtime")
        })
    }

    fn open(&mut self, target: SocketAddr, authority: &str) -> Value {
        let opened = self
            .runtime()
            .block_on(traffic_shift_tests::grpc::Connection::open(
                target, authority,
            ));
        match opened {
            Ok(connection) => {
                self.held = Some(connection);
                json!({ "opened": true })
            }
            Err(e) => json!({ "error": e }),
        }
    }

    /// N calls on a new connection to `to`, or on the held one.
    fn calls(
        &mut self,
        to: Option<(SocketAddr, &str)>,
        method: &str,
        n: usize,
        headers: &[&str],
    ) -> Value {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|h| {
                let (k, v) = h.split_once(':').expect("headers are NAME:VALUE");
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let mut held = self.held.take();
        let runtime = self.runtime();
        let result = runtime.block_on(async {
            let mut fresh = match to {
                Some((target, authority)) => {
                    Some(traffic_shift_tests::grpc::Connection::open(target, authority).await?)
                }
                None => None,
            };
            let ((Some(connection), _) | (None, Some(connection))) = (&mut fresh, &mut held) else {
                return Err("no held connection: grpc_open first".to_owned());
            };
            let mut backends: BTreeMap<String, u64> = BTreeMap::new();
            let mut codes: BTreeMap<String, u64> = BTreeMap::new();
            let mut errors: Vec<String> = Vec::new();
            let mut last = Value::Null;
            for _ in 0..n {
                match connection.call(method, &headers).await {
                    Ok(reply) => {
                        *codes.entry(reply.code.to_string()).or_default() += 1;
                        if let Some(response) = &reply.response {
                            *backends.entry(response.backend.clone()).or_default() += 1;
                        }
                        last = json!({
                            "code": reply.code,
                            "http_status": reply.http_status,
                            "grpc_message": reply.grpc_message,
                            "backend": reply.response.as_ref().map(|r| r.backend.clone()),
                            "calls": reply.response.as_ref().map(|r| r.calls),
                            "request_headers": reply.response.as_ref().map(|r| r.headers.clone()),
                            "response_headers": reply.headers,
                        });
                    }
                    Err(e) => errors.push(e),
                }
            }
            Ok(json!({ "backends": backends, "codes": codes, "errors": errors, "last": last }))
        });
        self.held = held;
        result.unwrap_or_else(|e: String| json!({ "error": e }))
    }
}
