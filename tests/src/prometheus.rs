//! A real Prometheus server for the tests: `/usr/bin/prometheus` (Debian's package,
//! installed by `cargo xtask setup`) with a temporary config and data directory on a
//! free loopback port, scraping the given targets every second. Killed and removed
//! on drop, panics included; a failed test keeps its directory and shows the log tail.
//!
//! Timing (measured here): ready ~0.3 s after start; the first scrape comes ~5-6 s
//! after start (Prometheus 2.42 applies discovered targets on a fixed 5 s tick, no
//! flag changes it), so [`Prometheus::wait_for_scrape`] returns ~7 s after start.
//! Start the server before a scenario's slow setup to overlap the two.
//!
//! HTTP is plain HTTP/1.0 over `std::net::TcpStream`: the server is always on
//! loopback, needs no TLS, keep-alive, redirects or chunked bodies (an HTTP/1.0
//! response ends when the server closes), and the JSON is parsed with `serde_json`
//! the crate already has. A client crate would add a dependency tree for nothing.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs::File,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::Process;

/// Where the server binary is; `PROMETHEUS_BIN` overrides it.
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
/// How long the server may take to become ready (it replays an empty WAL and
/// loads the config; seconds, but the machine may be busy compiling).
const READY_TIMEOUT: Duration = Duration::from_mins(1);
/// Per request: connect, write, read to the end.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(200);

/// One element of an instant vector (or the scalar of a scalar result, with no labels).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Every label, `__name__` included when the result keeps it.
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, or "" when the sample has no such label.
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// A query the API did not answer with data: parse errors are `status` 400
/// (`error_type` "bad_data"), evaluation errors 422 ("execution").
#[derive(Clone, Debug)]
pub struct QueryError {
    pub query: String,
    pub status: u16,
    pub error_type: String,
    pub error: String,
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HTTP {} {}: {} (query: {})",
            self.status, self.error_type, self.error, self.query
        )
    }
}

/// A running Prometheus server. Create it, call its methods and drop it in the
/// same thread: the server gets SIGKILL when the thread that started it exits
/// (`PR_SET_PDEATHSIG`, so a killed test run leaves no server behind).
pub struct Prometheus {
    process: Process,
    addr: SocketAddr,
    dir: PathBuf,
}

static INSTANCES: AtomicUsize = AtomicUsize::new(0);

impl Prometheus {
    /// Starts a server scraping `targets` (host:port, path `/metrics`, every 1 s,
    /// job `traffic-shift`) and waits until it is ready. No targets is fine: the
    /// server then only answers queries.
    pub fn start(targets: &[SocketAddr]) -> Self {
        let bin =
            std::env::var_os("PROMETHEUS_BIN").map_or_else(|| PROMETHEUS_BIN.into(), PathBuf::from);
        assert!(
            bin.exists(),
            "{} not found: the metrics tests run a real Prometheus server; run `cargo xtask setup` \
             (it installs Debian's prometheus package) or set PROMETHEUS_BIN",
            bin.display()
        );
        let dir = std::env::temp_dir().join(format!(
            "ts-prometheus-{}-{}",
            std::process::id(),
            INSTANCES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data"))
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, config_text(targets))
            .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        // The port is free when we ask; another process may take it before the
        // server binds it. Then the server exits at once and we try another.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let addr = free_loopback_addr();
            let log = dir.join("prometheus.log");
            let mut cmd = Command::new(&bin);
            cmd.arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).expect("prometheus log file"));
            // SAFETY: prctl is async-signal-safe and touches only this process.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let mut prometheus = Self {
                process: Process {
                    child,
                    what: "prometheus".into(),
                },
                addr,
                dir: dir.clone(),
            };
            match prometheus.wait_ready() {
                Ok(()) => return prometheus,
                Err(log) if attempt < 3 && log.contains("address already in use") => {
                    eprintln!("prometheus: {addr} was taken meanwhile, trying another port");
                }
                Err(log) => panic!(
                    "prometheus did not become ready on {addr} within {READY_TIMEOUT:?}; log tail:\n{log}"
                ),
            }
        }
    }

    /// Waits until `/-/ready` answers 200; on failure returns the log tail.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok((200, _)) = self.http("GET", "/-/ready", None) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.process.child.try_wait() {
                return Err(format!("(exited: {status})\n{}", self.log_tail(40)));
            }
            if Instant::now() > deadline {
                return Err(self.log_tail(40));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's address, e.g. for a browser: `http://{addr}/graph`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory holding `prometheus.yml`, `prometheus.log` and `data/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Evaluates `promql` now (`/api/v1/query`); panics on any API error.
    pub fn query(&self, promql: &str) -> Vec<Sample> {
        self.try_query(promql).unwrap_or_else(|e| {
            panic!(
                "Prometheus query failed: {e}\nprometheus log tail:\n{}",
                self.log_tail(20)
            )
        })
    }

    /// Evaluates `promql` now; an API error (parse: 400, evaluation: 422) is returned.
    /// Panics when the server cannot be reached or answers something that is not the
    /// API's JSON, or when the result is a range vector or a string (not samples).
    pub fn try_query(&self, promql: &str) -> Result<Vec<Sample>, QueryError> {
        let body = format!(
            "query={}",
            traffic_shift_agent::rollout::prometheus::encode(promql)
        );
        let (status, text) = self
            .http("POST", "/api/v1/query", Some(&body))
            .unwrap_or_else(|e| panic!("prometheus at {} unreachable: {e}", self.addr));
        let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("prometheus answered HTTP {status} with non-JSON ({e}): {text}")
        });
        if status != 200 || json["status"] != "success" {
            return Err(QueryError {
                query: promql.to_owned(),
                status,
                error_type: json["errorType"].as_str().unwrap_or("?").to_owned(),
                error: json["error"].as_str().unwrap_or(&text).to_owned(),
            });
        }
        let data = &json["data"];
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"]
                .as_array()
                .expect("vector result is an array")
                .iter()
                .map(|s| Sample {
                    labels: serde_json::from_value(s["metric"].clone())
                        .unwrap_or_else(|e| panic!("labels of {s}: {e}")),
                    value: parse_value(&s["value"]),
                })
                .collect()),
            Some("scalar") => Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: parse_value(&data["result"]),
            }]),
            other => panic!(
                "query `{promql}` gave a {} result, not an instant vector or scalar: {data}",
                other.unwrap_or("missing")
            ),
        }
    }

    /// Polls `promql` every 200 ms until `pred` accepts its samples and returns
    /// them; panics after `timeout` naming `what`, with the last result, the
    /// scrape targets' state and the log tail.
    pub fn wait_until(
        &self,
        promql: &str,
        what: &str,
        pred: impl Fn(&[Sample]) -> bool,
        timeout: Duration,
    ) -> Vec<Sample> {
        let deadline = Instant::now() + timeout;
        loop {
            let samples = self.query(promql);
            if pred(&samples) {
                return samples;
            }
            assert!(
                Instant::now() <= deadline,
                "waited {timeout:?} for {what}: last result of `{promql}`:\n{}\nscrape targets:\n{}\nprometheus log tail:\n{}",
                show(&samples),
                self.targets(),
                self.log_tail(20)
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits (up to 30 s) until `target` was scraped at least twice and its last
    /// scrape succeeded (`up == 1`): from then on `rate()` of its counters has data.
    pub fn wait_for_scrape(&self, target: SocketAddr) {
        let up = format!(r#"up{{instance="{target}"}}"#);
        self.wait_until(
            &format!("{up} == 1 and count_over_time({up}[1m]) >= 2"),
            &format!("two scrapes of {target}, the last one successful"),
            |s| !s.is_empty(),
            Duration::from_secs(30),
        );
    }

    /// Waits (up to 10 s) for a scrape of `target` later than the last one
    /// made before the call: what it scrapes was on `/metrics` after the call.
    pub fn wait_for_next_scrape(&self, target: SocketAddr) {
        let last = format!(r#"timestamp(up{{instance="{target}"}})"#);
        let before = self
            .query(&last)
            .first()
            .map_or_else(|| panic!("{target} was never scraped"), |s| s.value);
        self.wait_until(
            &last,
            &format!("a scrape of {target} after {before}"),
            |s| s.first().is_some_and(|s| s.value > before),
            Duration::from_secs(10),
        );
    }

    /// The scrape targets' state (`/api/v1/targets`), one line each: for messages.
    pub fn targets(&self) -> String {
        let Ok((200, text)) = self.http("GET", "/api/v1/targets", None) else {
            return "(targets unavailable)".into();
        };
        let json: Value = serde_json::from_str(&text).unwrap_or_default();
        let mut out = String::new();
        for t in json["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let _ = writeln!(
                out,
                "  {} health={} lastScrape={} lastError={:?}",
                t["scrapeUrl"].as_str().unwrap_or("?"),
                t["health"].as_str().unwrap_or("?"),
                t["lastScrape"].as_str().unwrap_or("?"),
                t["lastError"].as_str().unwrap_or("")
            );
        }
        if out.is_empty() {
            out.push_str("  (none)\n");
        }
        out
    }

    /// One HTTP/1.0 request; returns the status code and the body.
    fn http(&self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.addr, HTTP_TIMEOUT)?;
        stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
        stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
        let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {}\r\n", self.addr);
        if let Some(body) = body {
            let _ = write!(
                request,
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        request.push_str("\r\n");
        request.push_str(body.unwrap_or_default());
        stream.write_all(request.as_bytes())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let response = String::from_utf8_lossy(&response);
        let bad = || std::io::Error::other(format!("malformed HTTP response: {response:?}"));
        let (head, body) = response.split_once("\r\n\r\n").ok_or_else(bad)?;
        // "HTTP/1.0 200 OK"
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        Ok((status, body.to_owned()))
    }
}

impl Drop for Prometheus {
    /// Kills the server (its data is thrown away, no clean shutdown needed) and
    /// removes its directory, or keeps it and prints the log tail if the test failed.
    fn drop(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "prometheus on {} (config, log and data kept in {}); log tail:\n{}",
                self.addr,
                self.dir.display(),
                self.log_tail(20)
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The config: one job scraping `targets` every second. An empty target list is
/// valid (the job then has no targets).
fn config_text(targets: &[SocketAddr]) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    format!(
        "# Written by the traffic-shift tests (tests/src/prometheus.rs).
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: traffic-shift
    metrics_path: /metrics
    static_configs:
      - targets: [{}]
",
        targets.join(", ")
    )
}

/// A loopback address whose port nobody listens on right now: for the server, and
/// for an agent's `--metrics-addr` chosen before the agent starts.
pub fn free_loopback_addr() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
}

/// `[<unix time>, "<value>"]`; the value may be "NaN", "+Inf" or "-Inf".
fn parse_value(v: &Value) -> f64 {
    v[1].as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("sample value {v} is not [time, \"number\"]"))
}

fn show(samples: &[Sample]) -> String {
    if samples.is_empty() {
        return "  (no samples)".into();
    }
    samples
        .iter()
        .map(|s| format!("  {:?} {}", s.labels, s.value))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_escapes_all_but_unreserved() {
        assert_eq!(
            traffic_shift_agent::rollout::prometheus::encode(r#"sum(rate(x{a=~".*"}[1m])) / 2"#),
            "sum%28rate%28x%7Ba%3D~%22.%2A%22%7D%5B1m%5D%29%29%20%2F%202"
        );
    }

    #[test]
    fn config_lists_targets_ipv6_in_brackets() {
        let text = config_text(&[
            "127.0.0.1:15090".parse().unwrap(),
            "[::1]:15090".parse().unwrap(),
        ]);
        assert!(
            text.contains("targets: ['127.0.0.1:15090', '[::1]:15090']"),
            "{text}"
        );
        assert!(config_text(&[]).contains("targets: []"));
    }
}
