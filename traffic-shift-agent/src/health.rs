//! Endpoint health: active probes (a TCP connect; for the endpoints of HTTP
//! routes an HTTP GET, healthy on 200-399 as a Kubernetes `httpGet`
//! probe), and outlier ejection from the failed connects the kernel counts.
//!
//! An endpoint that is unhealthy or ejected leaves the selection tables
//! (its destination's share goes to the endpoints left); a destination
//! with none left refuses new connections at once, as Envoy's "no healthy
//! upstream". Probes run from the gateway's network namespace (`--netns`),
//! on a thread of their own that joined it.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    os::fd::AsRawFd as _,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

/// `traffic-shift run`'s health-check options.
#[derive(Clone, Debug, clap::Args)]
pub struct HealthOptions {
    /// How often every endpoint gets a probe (a TCP connect; an HTTP GET
    /// for endpoints of HTTP routes); 0 turns active checks off (outlier
    /// detection from DestinationRules still applies).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub health_interval: Duration,
    /// How long a probe may take (connect, and for HTTP the answer's status line).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub health_timeout: Duration,
    /// Consecutive failed probes that make an endpoint unhealthy.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub health_unhealthy_threshold: u32,
    /// Consecutive good probes that make it healthy again.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub health_healthy_threshold: u32,
    /// The path HTTP probes ask for (`GET PATH`, `Host` the service's host);
    /// a status of 200-399 is healthy.
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub health_http_path: String,
}

/// How an endpoint is probed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Probe {
    /// A TCP connect that completes.
    Tcp,
    /// `GET <--health-http-path>` with this `Host`, answered 200-399.
    Http { authority: String },
}

/// A duration flag that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    #[error("{text:?} is not a duration like 500ms, 2s or 1m")]
    NotANumber { text: String },
    #[error("{text:?}: unit must be ms, s or m")]
    Unit { text: String },
    #[error("{text:?}: {source}")]
    OutOfRange {
        text: String,
        #[source]
        source: std::time::TryFromFloatSecsError,
    },
}

/// `500ms`, `2s`, `1m`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number.parse().map_err(|_| DurationError::NotANumber {
        text: text.to_owned(),
    })?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => {
            return Err(DurationError::Unit {
                text: text.to_owned(),
            });
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|source| DurationError::OutOfRange {
        text: text.to_owned(),
        source,
    })
}

/// A change of an endpoint's probe verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub endpoint: SocketAddr,
    pub healthy: bool,
}

/// The probing thread's handle: set what to probe, receive verdict changes.
pub struct Prober {
    targets: Arc<Mutex<BTreeMap<SocketAddr, Probe>>>,
    pub verdicts: mpsc::UnboundedReceiver<Verdict>,
}

impl Prober {
    /// Starts probing from network namespace `netns` (a file).
    pub fn start(netns: PathBuf, options: HealthOptions) -> std::io::Result<Self> {
        let targets = Arc::new(Mutex::new(BTreeMap::new()));
        let (tx, verdicts) = mpsc::unbounded_channel();
        let ns = std::fs::File::open(&netns)?;
        let shared = Arc::clone(&targets);
        std::thread::Builder::new()
            .name("health-probes".into())
            .spawn(move || {
                // SAFETY: setns on this thread only, with a namespace fd we own;
                // sockets made on this thread are in that namespace.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    tracing::error!(netns = %netns.display(), err = %std::io::Error::last_os_error(), "health probes cannot join the namespace; active checks are off");
                    return;
                }
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        tracing::error!(%err, "health probes cannot start; active checks are off");
                        return;
                    }
                };
                runtime.block_on(probe_loop(&shared, &tx, &options));
            })?;
        Ok(Self { targets, verdicts })
    }

    /// The endpoints to probe from now on, and how.
    pub fn set_targets(&self, endpoints: BTreeMap<SocketAddr, Probe>) {
        *self
            .targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = endpoints;
    }
}

async fn probe_loop(
    targets: &Mutex<BTreeMap<SocketAddr, Probe>>,
    tx: &mpsc::UnboundedSender<Verdict>,
    options: &HealthOptions,
) {
    // Consecutive results per endpoint: (failures, successes, healthy).
    let mut state: BTreeMap<SocketAddr, (u32, u32, bool)> = BTreeMap::new();
    let mut tick = tokio::time::interval(options.health_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let endpoints = targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        state.retain(|e, _| endpoints.contains_key(e));
        let timeout = options.health_timeout;
        // Every probe at once; verdicts are per endpoint, so order is moot.
        let mut probes = tokio::task::JoinSet::new();
        for (endpoint, probe) in endpoints {
            let path = options.health_http_path.clone();
            probes.spawn(async move {
                let ok = tokio::time::timeout(timeout, check(endpoint, &probe, &path))
                    .await
                    .unwrap_or(false);
                (endpoint, ok)
            });
        }
        while let Some(Ok((endpoint, ok))) = probes.join_next().await {
            let (fails, oks, healthy) = state.entry(endpoint).or_insert((0, 0, true));
            if ok {
                *fails = 0;
                *oks += 1;
            } else {
                *oks = 0;
                *fails += 1;
            }
            let verdict = if *healthy {
                *fails < options.health_unhealthy_threshold
            } else {
                *oks >= options.health_healthy_threshold
            };
            if verdict != *healthy {
                *healthy = verdict;
                if tx
                    .send(Verdict {
                        endpoint,
                        healthy: verdict,
                    })
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// One probe of `endpoint`: whether it passed.
async fn check(endpoint: SocketAddr, probe: &Probe, path: &str) -> bool {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = tokio::net::TcpStream::connect(endpoint).await else {
        return false;
    };
    let Probe::Http { authority } = probe else {
        return true;
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {authority}\r\nuser-agent: traffic-shift-health\r\nconnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut status_line = String::new();
    let mut reader = tokio::io::BufReader::new(stream);
    if reader.read_line(&mut status_line).await.is_err() {
        return false;
    }
    // `HTTP/1.1 200 OK`
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .is_some_and(|code| (200..400).contains(&code))
}

/// Outlier ejection: endpoints whose connects keep failing, per the
/// DestinationRule's `outlierDetection`.
#[derive(Debug, Default)]
pub struct Outliers {
    /// Failed connects since the last completed one, per endpoint.
    streak: BTreeMap<SocketAddr, u64>,
    /// Ejected until, and how many times ejected.
    ejected: BTreeMap<SocketAddr, (Instant, u32)>,
    times: BTreeMap<SocketAddr, u32>,
}

impl Outliers {
    /// Feeds one period's counters of an endpoint (connects completed,
    /// connects failed). Returns true when it gets ejected now.
    pub fn observe(
        &mut self,
        endpoint: SocketAddr,
        established: u64,
        failed: u64,
        policy: &traffic_shift_config::model::Outlier,
        may_eject: bool,
        now: Instant,
    ) -> bool {
        let streak = self.streak.entry(endpoint).or_default();
        if established > 0 {
            *streak = 0;
        }
        *streak += failed;
        if policy.consecutive_failures == 0
            || *streak < u64::from(policy.consecutive_failures)
            || self.ejected.contains_key(&endpoint)
            || !may_eject
        {
            return false;
        }
        let times = self.times.entry(endpoint).or_default();
        *times += 1;
        let until = now + policy.base_ejection_time * *times;
        self.ejected.insert(endpoint, (until, *times));
        *streak = 0;
        true
    }

    /// Ends the ejections that are over; returns the endpoints back.
    pub fn expire(&mut self, now: Instant) -> Vec<SocketAddr> {
        let back: Vec<SocketAddr> = self
            .ejected
            .iter()
            .filter(|(_, (until, _))| *until <= now)
            .map(|(e, _)| *e)
            .collect();
        for e in &back {
            self.ejected.remove(e);
        }
        back
    }

    pub fn is_ejected(&self, endpoint: &SocketAddr) -> bool {
        self.ejected.contains_key(endpoint)
    }

    pub fn any_ejected(&self) -> bool {
        !self.ejected.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use traffic_shift_config::model::Outlier;

    /// A server on loopback answering every connection with `status_line`
    /// (after reading the request head); `None`: closing at once.
    async fn server(status_line: Option<&'static str>) -> SocketAddr {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut head = [0u8; 1024];
                let _ = conn.read(&mut head).await;
                if let Some(line) = status_line {
                    let _ = conn
                        .write_all(format!("{line}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                        .await;
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_probes_pass_on_200_to_399_like_kubernetes() {
        let http = |authority: &str| Probe::Http {
            authority: authority.to_owned(),
        };
        for (line, healthy) in [
            (Some("HTTP/1.1 200 OK"), true),
            (Some("HTTP/1.1 302 Found"), true),
            (Some("HTTP/1.1 404 Not Found"), false),
            (Some("HTTP/1.1 503 Service Unavailable"), false),
            (None, false),
        ] {
            let addr = server(line).await;
            assert_eq!(
                check(addr, &http("reviews"), "/").await,
                healthy,
                "{line:?}"
            );
            // A TCP probe only needs the connect.
            assert!(check(addr, &Probe::Tcp, "/").await);
        }
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        assert!(!check(closed, &Probe::Tcp, "/").await);
    }

    #[test]
    fn durations_parse_like_istio_writes_them() {
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("2s").ok(), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m").ok(), Some(Duration::from_mins(1)));
        assert_eq!(parse_duration("3").ok(), Some(Duration::from_secs(3)));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn consecutive_failures_eject_for_base_time_times_ejections() {
        let policy = Outlier {
            consecutive_failures: 3,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(10),
            max_ejection_percent: 100,
        };
        let e: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let t0 = Instant::now();
        let mut o = Outliers::default();
        assert!(!o.observe(e, 0, 2, &policy, true, t0));
        assert!(
            !o.observe(e, 1, 2, &policy, true, t0),
            "a completed connect resets the streak"
        );
        assert!(o.observe(e, 0, 1, &policy, true, t0), "3 in a row");
        assert!(o.is_ejected(&e));
        assert!(o.expire(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(o.expire(t0 + Duration::from_secs(10)), vec![e]);
        assert!(o.observe(e, 0, 3, &policy, true, t0));
        assert!(
            o.expire(t0 + Duration::from_secs(19)).is_empty(),
            "second ejection lasts 20 s"
        );
        let other: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert!(
            !o.observe(other, 0, 3, &policy, false, t0),
            "not over maxEjectionPercent"
        );
        assert!(!o.is_ejected(&other));
    }
}
