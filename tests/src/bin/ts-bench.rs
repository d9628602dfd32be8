//! Load client for `cargo xtask bench`, in one of four modes:
//!
//! - connections (default): C threads, each in a loop: connect, write `hello\n`, read
//!   the reply line, close. Counts completed connections, records each one's latency
//!   (connect to reply) and prints one JSON line:
//!   `{"target","concurrency","connections","seconds","conn_per_sec","p50_us","p99_us","errors",
//!   "one","two"}`, where `one` and `two` count the replies by their first word (tcp-echo's
//!   v1 answers `one ...`, v2 `two ...`).
//!   `ts-bench --target ADDR --concurrency C --duration SECS [--warmup SECS]`, or
//!   `--count N` instead of a duration: exactly N connections (the threads share them),
//!   no warmup; for the split accuracy of a proxy or rule. `--targets FILE` instead of
//!   `--target`: one connection to each address of FILE (one `ADDR:PORT` a line), the
//!   threads sharing them; to put traffic on every service of a big rule set.
//!   A storm (scenario 9) adds three flags: `--rate N` paces the connections at N new
//!   ones a second (open loop: the k-th is due at k/N s, taken by whichever thread is
//!   free; a late one goes at once, and none starts after the duration), each
//!   connect then giving up after 5 s;
//!   `--close fin` closes each connection with a FIN (shutdown, then the server's FIN
//!   awaited) instead of a reset, so it ends in TIME_WAIT as a real client's does; and
//!   `--sources FIRST-LAST` binds each connection to the next address of that IPv4
//!   range and, per address, the next port of 20000-60999 (or of `--source-ports LO-HI`),
//!   so no 4-tuple comes back before (LAST-FIRST+1) x the ports' count connections
//!   (the node's conntrack entries in TIME_WAIT are never reused). The line then also
//!   has `attempted` (connections plus errors), `syn_retried` (connections that succeeded but whose connect took 1 s or
//!   more: the first SYN retransmission is at 1 s), `target_rate`, `close` and
//!   `client_cpu_s`.
//! - stream: one connection, written to in 128 KiB chunks for the whole run; prints
//!   `{"target","mode","bytes","seconds","gbit_per_sec","errors"}` (bytes accepted by the
//!   kernel after the warmup: at most the socket buffers, a few MB, more than delivered).
//!   `ts-bench --mode stream --target ADDR --duration SECS [--warmup SECS]`
//! - http, http-close: C threads, each sending `GET / HTTP/1.1` requests one after the
//!   other, over one kept-alive connection per thread (http; a new connection when the
//!   server closes one) or a new connection per request with `Connection: close`
//!   (http-close). A request counts when a 200 answer with its whole `Content-Length`
//!   body arrived; its latency is from the write of the request (from the connect in
//!   http-close) to the body's last byte. Prints
//!   `{"target","mode","concurrency","requests","all_requests","seconds","req_per_sec",
//!   "p50_us","p99_us","errors","one","two","client_cpu_s"}`, where `one` and `two` count
//!   the answers whose JSON `version` is `v1` and `v2` (http-echo's), `all_requests`
//!   counts the warmup's too (what the target served over the whole run, for its CPU
//!   time per request), and `client_cpu_s` is this process's CPU time (to show whether
//!   the client is the bottleneck).
//!   `ts-bench --mode http --target ADDR [--concurrency C] (--duration SECS [--warmup SECS] | --count N)`
//! - sink: the receiving end of a stream. Accepts on ADDR, reads and discards each
//!   connection's bytes until it closes, until killed. `ts-bench --sink ADDR`
//!
//! Lean on purpose, so that it is not the bottleneck: std threads, blocking
//! sockets, a fixed stack buffer and a fixed-size histogram per thread; nothing
//! is allocated per connection.
#![forbid(unsafe_code)]

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The byte stream's write size (iperf3's default for TCP) and the sink's read size.
const CHUNK: usize = 128 * 1024;

#[derive(Clone, Copy, PartialEq)]
enum ClientMode {
    Connections,
    Stream,
    /// `close`: `Connection: close`, one connection per request.
    Http {
        close: bool,
    },
}

struct Args {
    mode: ClientMode,
    target: SocketAddr,
    /// `--targets FILE`: one connection to each of these (`target` is the first).
    targets: Option<Vec<SocketAddr>>,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
    /// `--count N`: N connections in all, rather than for `duration`.
    count: Option<u64>,
    storm: StormFlags,
}

/// A storm's flags (scenario 9), for the connections mode with one target.
#[derive(Default)]
struct StormFlags {
    /// `--rate N`: new connections a second, paced (open loop).
    rate: Option<f64>,
    /// `--close fin`: close with a FIN, not a reset.
    close_fin: bool,
    /// `--sources FIRST-LAST`: the client's source addresses (the first, how many).
    sources: Option<(Ipv4Addr, u32)>,
    /// `--source-ports LO-HI`: each source address's ports.
    ports: Option<std::ops::Range<u16>>,
}

impl StormFlags {
    /// Takes `flag` if it is one of the storm's: whether it was.
    fn take(&mut self, flag: &str, value: &str) -> Result<bool, String> {
        match flag {
            "--rate" => {
                self.rate = Some(
                    value
                        .parse::<f64>()
                        .ok()
                        .filter(|r| r.is_finite() && *r > 0.0)
                        .ok_or_else(|| format!("bad --rate {value}: connections a second > 0"))?,
                );
            }
            "--close" => {
                self.close_fin = match value {
                    "fin" => true,
                    "reset" => false,
                    _ => return Err(format!("bad --close {value}: fin or reset")),
                };
            }
            "--sources" => self.sources = Some(parse_sources(value)?),
            "--source-ports" => {
                let bad =
                    || format!("bad --source-ports {value}: LO-HI expected, e.g. 20000-60999");
                let (lo, hi) = value.split_once('-').ok_or_else(bad)?;
                let (lo, hi): (u16, u16) = (
                    lo.trim().parse().map_err(|_| bad())?,
                    hi.trim().parse().map_err(|_| bad())?,
                );
                if lo == 0 || hi < lo || hi == u16::MAX {
                    return Err(bad());
                }
                self.ports = Some(lo..hi + 1);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Refuses the flags where they do not apply.
    fn check(&self, single_connections: bool, target: SocketAddr) -> Result<(), String> {
        if (self.rate.is_some() || self.close_fin || self.sources.is_some()) && !single_connections
        {
            return Err(
                "--rate, --close and --sources go with the connections mode, one --target, a duration"
                    .into(),
            );
        }
        if self.ports.is_some() && self.sources.is_none() {
            return Err("--source-ports goes with --sources".into());
        }
        if self.sources.is_some() && !target.is_ipv4() {
            return Err("--sources are IPv4 addresses: the --target must be IPv4 too".into());
        }
        Ok(())
    }
}

enum Mode {
    Client(Args),
    Sink(SocketAddr),
}

fn parse_args() -> Result<Mode, String> {
    let mut target = None;
    let mut targets = None;
    let mut mode = ClientMode::Connections;
    let mut concurrency = 1;
    let mut duration = Duration::from_secs(3);
    let mut warmup = Duration::ZERO;
    let mut count = None;
    let mut storm = StormFlags::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let secs = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("bad {flag} {v}: seconds expected"))
        };
        match flag.as_str() {
            "--target" => {
                target = Some(
                    value
                        .parse()
                        .map_err(|e| format!("bad --target {value}: {e}"))?,
                );
            }
            "--targets" => targets = Some(read_targets(&value)?),
            "--concurrency" => {
                concurrency = value
                    .parse()
                    .ok()
                    .filter(|c| *c > 0)
                    .ok_or_else(|| format!("bad --concurrency {value}"))?;
            }
            "--duration" => duration = secs(&value)?,
            "--warmup" => warmup = secs(&value)?,
            "--count" => {
                count = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("bad --count {value}: a number > 0"))?,
                );
            }
            "--mode" => {
                mode = match value.as_str() {
                    "connections" => ClientMode::Connections,
                    "stream" => ClientMode::Stream,
                    "http" => ClientMode::Http { close: false },
                    "http-close" => ClientMode::Http { close: true },
                    _ => {
                        return Err(format!(
                            "bad --mode {value}: connections, stream, http or http-close"
                        ));
                    }
                };
            }
            "--sink" => {
                return value
                    .parse()
                    .map(Mode::Sink)
                    .map_err(|e| format!("bad --sink {value}: {e}"));
            }
            _ if storm.take(&flag, &value)? => {}
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if targets.is_some() && (mode != ClientMode::Connections || count.is_some()) {
        return Err("--targets goes with the connections mode, without --count".into());
    }
    let target = match (&targets, target) {
        (Some(list), None) => list[0],
        (None, Some(target)) => target,
        (Some(_), Some(_)) => return Err("--target or --targets, not both".into()),
        (None, None) => return Err("--target ADDR (or --targets FILE) is required".into()),
    };
    storm.check(
        mode == ClientMode::Connections && count.is_none() && targets.is_none(),
        target,
    )?;
    Ok(Mode::Client(Args {
        mode,
        target,
        storm,
        // Each address once: the threads share their count.
        count: targets.as_ref().map(|l| l.len() as u64).or(count),
        targets,
        concurrency,
        duration,
        warmup,
    }))
}

/// `--targets FILE`: one `ADDR:PORT` a line.
fn read_targets(value: &str) -> Result<Vec<SocketAddr>, String> {
    let text = std::fs::read_to_string(value)
        .map_err(|e| format!("cannot read --targets {value}: {e}"))?;
    let list = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse()
                .map_err(|e| format!("bad address {l} in {value}: {e}"))
        })
        .collect::<Result<Vec<SocketAddr>, _>>()?;
    if list.is_empty() {
        return Err(format!("--targets {value} lists no address"));
    }
    Ok(list)
}

/// `FIRST-LAST`, an IPv4 range: its first address and how many it has.
fn parse_sources(value: &str) -> Result<(Ipv4Addr, u32), String> {
    let bad = |why: &str| format!("bad --sources {value}: {why}, e.g. 198.18.0.16-198.18.0.239");
    let (first, last) = value
        .split_once('-')
        .ok_or_else(|| bad("FIRST-LAST expected"))?;
    let first: Ipv4Addr = first
        .trim()
        .parse()
        .map_err(|_| bad("FIRST is no IPv4 address"))?;
    let last: Ipv4Addr = last
        .trim()
        .parse()
        .map_err(|_| bad("LAST is no IPv4 address"))?;
    let count = u32::from(last)
        .checked_sub(u32::from(first))
        .ok_or_else(|| bad("LAST comes before FIRST"))?;
    Ok((first, count + 1))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "ts-bench: {e}\nusage: ts-bench [--mode connections|stream|http|http-close] --target ADDR \
                 [--concurrency C] (--duration SECS [--warmup SECS] | --count N)\n       \
                 ts-bench --target ADDR [--concurrency C] --duration SECS [--rate N] [--close fin|reset] \
                 [--sources FIRST-LAST [--source-ports LO-HI]]\n       \
                 ts-bench --targets FILE [--concurrency C]\n       \
                 ts-bench --sink ADDR"
            );
            return ExitCode::from(2);
        }
    };
    let args = match args {
        Mode::Sink(addr) => return sink(addr),
        Mode::Client(args) if args.mode == ClientMode::Stream => return stream(&args),
        Mode::Client(args) => args,
    };
    let http = match args.mode {
        ClientMode::Http { close } => Some(close),
        _ => None,
    };
    let start = Instant::now();
    let (measure_from, budget) = Budget::of(&args, start);
    let threads = spawn_workers(&args, http, measure_from, &budget);
    let mut total = Stats::new();
    for t in threads {
        total.merge(&t.join().expect("worker thread panicked"));
    }
    // The last connection of a thread may end a little after `until`.
    let least = if args.count.is_some() {
        Duration::ZERO
    } else {
        args.duration
    };
    let seconds = total.last_end.map_or(least, |end| {
        end.saturating_duration_since(measure_from).max(least)
    });
    let secs = seconds.as_secs_f64();
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    let rate = total.connections as f64 / secs;
    if let Some(close) = http {
        println!(
            "{}",
            json!({
                "target": args.target.to_string(),
                "mode": if close { "http-close" } else { "http" },
                "concurrency": args.concurrency,
                "requests": total.connections,
                "all_requests": total.connections + total.warmup,
                "seconds": (secs * 1000.0).round() / 1000.0,
                "req_per_sec": rate.round(),
                "p50_us": total.hist.percentile(0.50),
                "p99_us": total.hist.percentile(0.99),
                "errors": total.errors,
                "one": total.one,
                "two": total.two,
                "client_cpu_s": cpu_seconds(),
            })
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "{}",
        json!({
            "target": args.target.to_string(),
            "concurrency": args.concurrency,
            "connections": total.connections,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "conn_per_sec": rate.round(),
            "p50_us": total.hist.percentile(0.50),
            "p99_us": total.hist.percentile(0.99),
            "errors": total.errors,
            "one": total.one,
            "two": total.two,
            "attempted": total.connections + total.errors,
            "syn_retried": total.syn_retried,
            "target_rate": args.storm.rate,
            "close": if args.storm.close_fin { "fin" } else { "reset" },
            "client_cpu_s": cpu_seconds(),
        })
    );
    ExitCode::SUCCESS
}

/// The workers: HTTP clients (`http`: whether with `Connection: close`) or connection
/// loops, shaped by the storm's flags.
fn spawn_workers(
    args: &Args,
    http: Option<bool>,
    measure_from: Instant,
    budget: &Budget,
) -> Vec<std::thread::JoinHandle<Stats>> {
    let target = SockAddr::from(args.target);
    let targets = Targets::new(args);
    let shape = Shape {
        close_fin: args.storm.close_fin,
        // Paced: a connect whose SYNs are dropped must not hold its thread for the
        // two minutes of the kernel's SYN retries.
        connect_timeout: args.storm.rate.map(|_| Duration::from_secs(5)),
        sources: args.storm.sources.map(|(first, count)| Sources {
            first,
            count,
            ports: args.storm.ports.clone().unwrap_or(Sources::PORTS),
            next: Arc::new(AtomicU64::new(0)),
        }),
    };
    (0..args.concurrency)
        .map(|_| {
            let target = target.clone();
            let budget = budget.clone();
            let targets = targets.clone();
            let shape = shape.clone();
            std::thread::spawn(move || {
                if let Some(close) = http {
                    let mut conn = HttpConn::new(target, close);
                    return worker(measure_from, &budget, |_| conn.request());
                }
                let mut syn_retried = 0;
                let mut stats = worker(measure_from, &budget, |buf| {
                    let connect_took =
                        shape.one_connection(targets.next().unwrap_or(&target), buf)?;
                    syn_retried += u64::from(connect_took >= Duration::from_secs(1));
                    Ok(Answer::from_first_word(buf))
                });
                stats.syn_retried = syn_retried;
                stats
            })
        })
        .collect()
}

/// With `--targets`, the addresses, shared by the threads, and the index of the
/// next one to connect to.
#[derive(Clone)]
struct Targets {
    list: Arc<Vec<SockAddr>>,
    next: Arc<AtomicU64>,
}

impl Targets {
    fn new(args: &Args) -> Self {
        Self {
            list: Arc::new(
                args.targets
                    .iter()
                    .flatten()
                    .map(|a| SockAddr::from(*a))
                    .collect(),
            ),
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The next address (none without `--targets`). The budget counts the
    /// addresses, so each is taken once.
    fn next(&self) -> Option<&SockAddr> {
        if self.list.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.list.get(usize::try_from(i).ok()?)
    }
}

/// How long the workers go on: until a time, or until they made N connections
/// together, or paced at a rate until a time.
#[derive(Clone)]
enum Budget {
    Until(Instant),
    Count(Arc<AtomicU64>),
    /// The k-th connection (`next` hands out k) is due at `start` + k / `rate`.
    Paced {
        start: Instant,
        rate: f64,
        until: Instant,
        next: Arc<AtomicU64>,
    },
}

impl Budget {
    /// The budget of `args`'s run starting at `start`, and when its measuring starts.
    fn of(args: &Args, start: Instant) -> (Instant, Self) {
        let until = start + args.warmup + args.duration;
        match (args.count, args.storm.rate) {
            (Some(n), _) => (start, Self::Count(Arc::new(AtomicU64::new(n)))),
            (None, Some(rate)) => (
                start + args.warmup,
                Self::Paced {
                    start,
                    rate,
                    until,
                    next: Arc::new(AtomicU64::new(0)),
                },
            ),
            (None, None) => (start + args.warmup, Self::Until(until)),
        }
    }

    /// Whether one more connection is to be made (and, for a count, takes it; paced,
    /// waits until it is due).
    fn one_more(&self) -> bool {
        match self {
            Self::Until(until) => Instant::now() < *until,
            Self::Count(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
            Self::Paced {
                start,
                rate,
                until,
                next,
            } => {
                #[allow(clippy::cast_precision_loss)] // counts far below 2^52
                let due = *start
                    + Duration::from_secs_f64(next.fetch_add(1, Ordering::Relaxed) as f64 / rate);
                let now = Instant::now();
                // A slot due after the end is not taken, nor one still waiting at the
                // end (the clients were all busy): `attempted` below the target shows it.
                if due >= *until || now >= *until {
                    return false;
                }
                if due > now {
                    std::thread::sleep(due - now);
                }
                true
            }
        }
    }
}

/// How a short connection is made and closed (`--close`, `--sources`, and the connect
/// timeout of a paced run).
#[derive(Clone)]
struct Shape {
    close_fin: bool,
    connect_timeout: Option<Duration>,
    sources: Option<Sources>,
}

/// `--sources`: the n-th connection (`next` hands out n) comes from address n mod
/// `count` after `first`, port `ports`'s (n / `count`) mod its length.
#[derive(Clone)]
struct Sources {
    first: Ipv4Addr,
    count: u32,
    ports: std::ops::Range<u16>,
    next: Arc<AtomicU64>,
}

impl Sources {
    /// The source ports by default: below Linux's default ephemeral range's end, above
    /// the well-known ports and the bench's own listeners (19001-19202). Runs one after
    /// the other from one namespace give each its own part (`--source-ports`): a port
    /// of the last run's is still held by its socket in TIME_WAIT for 60 s.
    const PORTS: std::ops::Range<u16> = 20000..61000;

    /// The next source address and port.
    fn next(&self) -> SocketAddr {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let count = u64::from(self.count);
        let span = u64::from(self.ports.end - self.ports.start);
        let addr = u32::from(self.first) + u32::try_from(n % count).expect("below count");
        let port = self.ports.start + u16::try_from((n / count) % span).expect("below span");
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(addr), port))
    }
}

/// Receives streams until killed: one thread per connection, reading and discarding.
fn sink(addr: SocketAddr) -> ExitCode {
    let listener = match std::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ts-bench: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The bench waits for this line before it starts the agent.
    eprintln!("ts-bench sink listening on {addr}");
    for conn in listener.incoming() {
        match conn {
            Ok(mut conn) => {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; CHUNK];
                    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
            Err(e) => {
                // The bench stops reading our stderr after the first line: never panic on it.
                let _ = writeln!(std::io::stderr(), "ts-bench: sink accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    ExitCode::SUCCESS
}

/// One connection, written to for the warmup and then the measured duration.
fn stream(args: &Args) -> ExitCode {
    let chunk = vec![0x5a_u8; CHUNK];
    let mut bytes = 0_u64;
    let mut errors = 0_u64;
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let until = measure_from + args.duration;
    let mut measured_at = None;
    match TcpStream::connect_timeout(&args.target, Duration::from_secs(5)) {
        Ok(mut conn) => {
            let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
            loop {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                if now >= measure_from && measured_at.is_none() {
                    measured_at = Some(now);
                }
                match conn.write(&chunk) {
                    Ok(n) if n > 0 => {
                        if measured_at.is_some() {
                            bytes += n as u64;
                        }
                    }
                    _ => {
                        errors += 1;
                        break;
                    }
                }
            }
        }
        Err(_) => errors += 1,
    }
    let secs = measured_at.map_or(args.duration.as_secs_f64(), |from| {
        from.elapsed().as_secs_f64()
    });
    #[allow(clippy::cast_precision_loss)] // byte counts far below 2^52
    let gbit = bytes as f64 * 8.0 / secs / 1e9;
    println!(
        "{}",
        json!({
            "target": args.target.to_string(),
            "mode": "stream",
            "bytes": bytes,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "gbit_per_sec": (gbit * 1000.0).round() / 1000.0,
            "errors": errors,
        })
    );
    ExitCode::SUCCESS
}

struct Stats {
    connections: u64,
    /// Connections (requests) completed during the warmup, not measured: with
    /// `connections`, every one the target served (whose CPU per request the
    /// bench works out from the target's CPU time over the whole run).
    warmup: u64,
    errors: u64,
    /// Connections whose connect took 1 s or more (a SYN retransmitted).
    syn_retried: u64,
    /// Replies whose first word is `one` (tcp-echo v1) and `two` (v2).
    one: u64,
    two: u64,
    last_end: Option<Instant>,
    hist: Histogram,
}

impl Stats {
    fn new() -> Self {
        Self {
            connections: 0,
            warmup: 0,
            errors: 0,
            syn_retried: 0,
            one: 0,
            two: 0,
            last_end: None,
            hist: Histogram::new(),
        }
    }

    fn merge(&mut self, other: &Self) {
        self.connections += other.connections;
        self.warmup += other.warmup;
        self.errors += other.errors;
        self.syn_retried += other.syn_retried;
        self.one += other.one;
        self.two += other.two;
        self.last_end = self.last_end.max(other.last_end);
        self.hist.merge(&other.hist);
    }
}

/// Which backend answered.
enum Answer {
    One,
    Two,
    Other,
}

impl Answer {
    /// tcp-echo's reply: `one ...` (v1) or `two ...` (v2).
    fn from_first_word(reply: &[u8]) -> Self {
        if reply.starts_with(b"one ") {
            Self::One
        } else if reply.starts_with(b"two ") {
            Self::Two
        } else {
            Self::Other
        }
    }

    /// http-echo's JSON answer: its top-level `"version"` (the last one: the echoed
    /// request headers come before it, keys sorted) is `v1` or `v2`.
    fn from_version(body: &[u8]) -> Self {
        const KEY: &[u8] = b"\"version\":\"";
        let Some(at) = body.windows(KEY.len()).rposition(|w| w == KEY) else {
            return Self::Other;
        };
        match body.get(at + KEY.len()..at + KEY.len() + 3) {
            Some(b"v1\"") => Self::One,
            Some(b"v2\"") => Self::Two,
            _ => Self::Other,
        }
    }
}

/// Runs `one` (a connection, or a request) until the budget is spent; `one` gets a
/// buffer for the reply and says who answered.
fn worker(
    measure_from: Instant,
    budget: &Budget,
    mut one: impl FnMut(&mut [u8]) -> std::io::Result<Answer>,
) -> Stats {
    let mut stats = Stats::new();
    let mut buf = [0u8; 256];
    while budget.one_more() {
        let begin = Instant::now();
        let answer = one(&mut buf);
        let end = Instant::now();
        if begin < measure_from {
            stats.warmup += u64::from(answer.is_ok());
            continue;
        }
        if let Ok(answer) = answer {
            stats.connections += 1;
            match answer {
                Answer::One => stats.one += 1,
                Answer::Two => stats.two += 1,
                Answer::Other => {}
            }
            stats.hist.record(end.duration_since(begin));
        } else {
            stats.errors += 1;
            // A refused or reset target: do not spin at full speed on errors.
            std::thread::sleep(Duration::from_millis(1));
        }
        stats.last_end = Some(end);
    }
    stats
}

/// A connected socket for a short-lived client connection.
fn connect(target: &SockAddr) -> std::io::Result<TcpStream> {
    let domain = if target.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    // SO_LINGER {on, 0}: close() sends RST and leaves no TIME_WAIT socket behind.
    // With tens of thousands of short connections per second on loopback, TIME_WAIT
    // sockets would otherwise use up the ephemeral ports (net.ipv4.ip_local_port_range,
    // ~28k by default) within seconds and connect() would fail with EADDRNOTAVAIL.
    socket.set_linger(Some(Duration::ZERO))?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    socket.set_tcp_nodelay(true)?;
    socket.connect(target)?;
    Ok(TcpStream::from(socket))
}

impl Shape {
    /// One connection: connect, write `hello\n`, read the reply line, close. Returns
    /// how long the connect took.
    fn one_connection(&self, target: &SockAddr, buf: &mut [u8]) -> std::io::Result<Duration> {
        let begin = Instant::now();
        let mut stream =
            if self.close_fin || self.connect_timeout.is_some() || self.sources.is_some() {
                self.connect(target)?
            } else {
                connect(target)?
            };
        let connect_took = begin.elapsed();
        stream.write_all(b"hello\n")?;
        let mut filled = 0;
        loop {
            let n = stream.read(&mut buf[filled..])?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            filled += n;
            if buf[..filled].contains(&b'\n') {
                break;
            }
            if filled == buf.len() {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
        }
        if self.close_fin {
            // Our FIN, then the server's: the close completed both ways (this
            // socket is left in TIME_WAIT, the node's conntrack entry too).
            stream.shutdown(Shutdown::Write)?;
            let mut rest = [0u8; 64];
            while stream.read(&mut rest)? > 0 {}
        }
        Ok(connect_took)
    }

    /// A connected socket shaped by `--close`, `--sources` and the connect timeout.
    fn connect(&self, target: &SockAddr) -> std::io::Result<TcpStream> {
        let domain = if target.is_ipv6() {
            Domain::IPV6
        } else {
            Domain::IPV4
        };
        let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        if !self.close_fin {
            socket.set_linger(Some(Duration::ZERO))?;
        }
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        socket.set_tcp_nodelay(true)?;
        if let Some(sources) = &self.sources {
            // A listener on the wildcard address holds its port on every source
            // address: that port is skipped, not counted as a failed connection.
            let mut tries = 0;
            loop {
                match socket.bind(&sources.next().into()) {
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 16 => {
                        tries += 1;
                    }
                    result => break result?,
                }
            }
        }
        match self.connect_timeout {
            Some(timeout) => socket.connect_timeout(target, timeout)?,
            None => socket.connect(target)?,
        }
        Ok(TcpStream::from(socket))
    }
}

/// One thread's HTTP/1.1 client: its kept-alive connection (none in http-close mode),
/// the request bytes and a fixed buffer for the answer.
struct HttpConn {
    target: SockAddr,
    close: bool,
    stream: Option<TcpStream>,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl HttpConn {
    /// The largest answer read: http-echo's JSON echo of a short request is ~400 bytes.
    const MAX_ANSWER: usize = 16 * 1024;

    fn new(target: SockAddr, close: bool) -> Self {
        let host = target
            .as_socket()
            .map_or_else(String::new, |a| a.to_string());
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ts-bench\r\n{}\r\n",
            if close { "Connection: close\r\n" } else { "" }
        )
        .into_bytes();
        Self {
            target,
            close,
            stream: None,
            request,
            buf: vec![0; Self::MAX_ANSWER],
        }
    }

    /// One request and its whole answer. On any error the connection is dropped (the
    /// next request opens a new one).
    fn request(&mut self) -> std::io::Result<Answer> {
        let result = self.exchange();
        if result.is_err() || self.close {
            self.stream = None;
        }
        result
    }

    fn exchange(&mut self) -> std::io::Result<Answer> {
        use std::io::{Error, ErrorKind};
        let stream = match &mut self.stream {
            Some(s) => s,
            None => self.stream.insert(connect(&self.target)?),
        };
        stream.write_all(&self.request)?;
        let mut filled = 0;
        let (head_len, body_len, server_closes) = loop {
            let n = stream.read(&mut self.buf[filled..])?;
            if n == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            filled += n;
            if let Some(head) = parse_head(&self.buf[..filled])? {
                break head;
            }
            if filled == self.buf.len() {
                return Err(Error::new(ErrorKind::InvalidData, "answer head too long"));
            }
        };
        let end = head_len + body_len;
        if end > self.buf.len() {
            return Err(Error::new(ErrorKind::InvalidData, "answer too long"));
        }
        while filled < end {
            let n = stream.read(&mut self.buf[filled..end])?;
            if n == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            filled += n;
        }
        if server_closes {
            self.stream = None;
        }
        Ok(Answer::from_version(&self.buf[head_len..end]))
    }
}

/// An answer's head, once whole: its length, the body's `Content-Length`, and whether
/// the server closes the connection after it. Anything but `200` is an error.
fn parse_head(buf: &[u8]) -> std::io::Result<Option<(usize, usize, bool)>> {
    use std::io::{Error, ErrorKind};
    let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..at])
        .map_err(|_| Error::new(ErrorKind::InvalidData, "answer head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.get(8..).unwrap_or_default().trim_start();
    if !(status.starts_with("HTTP/1.") && code.starts_with("200")) {
        return Err(Error::other(format!("answer {status:?}")));
    }
    let (mut length, mut closes) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            closes = value.eq_ignore_ascii_case("close");
        }
    }
    let length = length
        .ok_or_else(|| Error::new(ErrorKind::InvalidData, "answer without Content-Length"))?;
    Ok(Some((at + 4, length, closes)))
}

/// This process's CPU time (user + system, all threads), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    // Fields 14 and 15 (utime, stime), in clock ticks of 1/100 s (USER_HZ on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    #[allow(clippy::cast_precision_loss)] // ticks far below 2^52
    let secs = ticks as f64 / 100.0;
    secs
}

/// Log-linear latency histogram in microseconds: exact below 128 µs, then 64
/// sub-buckets per power of two (under 1.6 % error). Fixed size, no allocation
/// per value (one vector per thread).
struct Histogram {
    counts: Vec<u64>,
}

impl Histogram {
    const SUB: u32 = 6;
    const LINEAR: u64 = 1 << (Self::SUB + 1);
    // Powers of two 2^7 ..= 2^63.
    const BUCKETS: usize = (1 << (Self::SUB + 1)) + (64 - 7) * (1 << Self::SUB);

    fn new() -> Self {
        Self {
            counts: vec![0; Self::BUCKETS],
        }
    }

    fn index(us: u64) -> usize {
        if us < Self::LINEAR {
            return usize::try_from(us).expect("small");
        }
        let exp = us.ilog2(); // >= 7
        let mantissa = (us >> (exp - Self::SUB)) & ((1 << Self::SUB) - 1);
        let i = Self::LINEAR + u64::from(exp - 7) * (1 << Self::SUB) + mantissa;
        usize::try_from(i).expect("small")
    }

    /// The lowest value that falls into bucket `i`.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < Self::LINEAR {
            return i;
        }
        let j = i - Self::LINEAR;
        let exp = j / (1 << Self::SUB) + 7;
        let mantissa = j % (1 << Self::SUB);
        ((1 << Self::SUB) + mantissa) << (exp - u64::from(Self::SUB))
    }

    fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[Self::index(us)] += 1;
    }

    fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
    }

    /// The value at quantile `q` (0..=1), or 0 without values.
    fn percentile(&self, q: f64) -> u64 {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return 0;
        }
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let rank = ((total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i);
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, atomic::AtomicU64};

    use super::{Answer, Histogram, Sources, parse_head, parse_sources};

    #[test]
    fn sources_go_round_the_addresses_then_the_ports() {
        let (first, count) = parse_sources("198.18.0.16-198.18.0.18").unwrap();
        assert_eq!((first.to_string().as_str(), count), ("198.18.0.16", 3));
        assert!(parse_sources("198.18.0.18-198.18.0.16").is_err());
        assert!(parse_sources("198.18.0.16").is_err());
        let sources = Sources {
            first,
            count,
            ports: Sources::PORTS,
            next: Arc::new(AtomicU64::new(0)),
        };
        let seen: Vec<String> = (0..4).map(|_| sources.next().to_string()).collect();
        assert_eq!(
            seen,
            [
                "198.18.0.16:20000",
                "198.18.0.17:20000",
                "198.18.0.18:20000",
                "198.18.0.16:20001"
            ]
        );
        // The ports wrap after the last one: no 4-tuple before count x 41 000.
        let span = u64::from(Sources::PORTS.end - Sources::PORTS.start);
        sources
            .next
            .store(3 * span, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(sources.next().to_string(), "198.18.0.16:20000");
    }

    #[test]
    fn http_answers_are_parsed_and_counted_by_version() {
        let head =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 42\r\n\r\n{";
        assert_eq!(parse_head(&head[..20]).unwrap(), None, "head not whole yet");
        assert_eq!(parse_head(head).unwrap(), Some((head.len() - 1, 42, false)));
        let closing = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(parse_head(closing).unwrap(), Some((closing.len(), 0, true)));
        assert!(
            parse_head(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").is_err()
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        let body = br#"{"headers":{"x":"\"version\":\"v2\""},"service":"s","version":"v1"}"#;
        assert!(matches!(Answer::from_version(body), Answer::One));
        assert!(matches!(
            Answer::from_version(br#"{"version":"v2"}"#),
            Answer::Two
        ));
        assert!(matches!(
            Answer::from_version(br#"{"version":"v3"}"#),
            Answer::Other
        ));
    }

    #[test]
    fn histogram_buckets_round_trip() {
        for us in [0, 1, 127, 128, 129, 1000, 12_345, 1_000_000, u64::MAX] {
            let v = Histogram::value(Histogram::index(us));
            assert!(v <= us && us - v <= us / 64, "{us} -> {v}");
        }
    }
}
