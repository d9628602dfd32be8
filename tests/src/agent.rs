//! [`Agent`]: the `traffic-shift run` under test, with its rules directory,
//! events file, status file, admin socket and `/metrics`, and the waits on
//! them (events, status, metrics).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    binary, cgroup::Cgroup, client::http_get, monotonic_ns, netns::Netns, process::Process,
    traffic_shift_bin,
};

/// The agent under test, with its rules directory and events file.
pub struct Agent {
    pub process: Process,
    pub rules: PathBuf,
    pub events: PathBuf,
    /// Its `--bpffs` pin directory.
    pub bpffs: PathBuf,
    pub status_file: PathBuf,
    pub log: PathBuf,
    /// Its `--admin-socket`.
    pub admin_socket: PathBuf,
    /// Its `--state-dir` (the applied resources).
    pub applied_dir: PathBuf,
    /// How long `wait_events` waits: 20 s unless a test that feeds big
    /// files to the debug build says otherwise. An upper bound on a wait for
    /// an event, never a measure: a debug agent applying 4 000 services on a
    /// loaded 2-core machine took 5.7 s.
    pub event_timeout: Duration,
    seen_events: usize,
    cgroup: PathBuf,
    netns: String,
    expect_files: usize,
}

impl Agent {
    /// Starts `traffic-shift run` on `rules` (a directory the test owns) for
    /// `cgroup`, and waits until every initial file was applied or refused.
    pub fn start(
        name: &str,
        rules: &Path,
        cgroup: &Cgroup,
        netns: &Netns,
        expect_files: usize,
        extra_args: &[&str],
    ) -> Self {
        let state = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).expect("state dir");
        let mut agent = Self {
            process: Process {
                child: Command::new("true").spawn().expect("spawn true"),
                what: "agent".into(),
            },
            rules: rules.to_owned(),
            events: state.join("events.jsonl"),
            bpffs: PathBuf::from(format!("/sys/fs/bpf/{name}")),
            status_file: state.join("status.json"),
            log: state.join("agent.log"),
            admin_socket: state.join("admin.sock"),
            applied_dir: state.join("applied"),
            event_timeout: Duration::from_secs(20),
            seen_events: 0,
            cgroup: cgroup.path.clone(),
            netns: netns.name.clone(),
            expect_files,
        };
        agent.spawn(extra_args);
        agent
    }

    /// Starts the agent again on the same rules, pins and files (after the
    /// test stopped or killed it), and waits for its first apply.
    pub fn restart(&mut self, extra_args: &[&str]) {
        self.restart_binary(&traffic_shift_bin(), extra_args);
    }

    /// `restart`, running the agent binary `bin` (another build).
    pub fn restart_binary(&mut self, bin: &Path, extra_args: &[&str]) {
        self.process.stop();
        self.spawn_binary(bin, extra_args);
    }

    fn spawn(&mut self, extra_args: &[&str]) {
        self.spawn_binary(&traffic_shift_bin(), extra_args);
    }

    fn spawn_binary(&mut self, bin: &Path, extra_args: &[&str]) {
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--rules"])
            .arg(&self.rules)
            .arg("--cgroup")
            .arg(&self.cgroup)
            .arg("--bpffs")
            .arg(&self.bpffs)
            .arg("--netns")
            .arg(format!("/var/run/netns/{}", self.netns))
            .arg("--events")
            .arg(&self.events)
            .arg("--status-file")
            .arg(&self.status_file)
            .arg("--admin-socket")
            .arg(&self.admin_socket)
            .arg("--state-dir")
            .arg(&self.applied_dir)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(if extra_args.contains(&"--bpf-log-level") {
                &[][..]
            } else {
                &["--bpf-log-level", "debug"][..]
            })
            .args(extra_args)
            .env("TRAFFIC_SHIFT_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .expect("log file"),
            );
        self.process.child = cmd.spawn().unwrap_or_else(|e| panic!("spawn agent: {e}"));
        let initial = self.wait_events(self.expect_files);
        assert!(
            initial.iter().all(|e| e["result"] == "applied"),
            "initial rules not all applied: {initial:?}\nagent log:\n{}",
            self.log_text()
        );
        self.wait_admin();
    }

    /// Waits (up to 5 s) until the agent answers on its admin socket (its
    /// loop runs, the applied resources are restored).
    fn wait_admin(&mut self) {
        use traffic_shift_agent::admin;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match admin::call(&self.admin_socket, &admin::Request::Version) {
                Ok(admin::Response::Version { .. }) => return,
                Ok(other) => panic!("the agent answered version with {other:?}"),
                Err(err) => {
                    if let Ok(Some(status)) = self.process.child.try_wait() {
                        panic!("agent exited ({status}) at start:\n{}", self.log_text());
                    }
                    assert!(
                        Instant::now() < deadline,
                        "no answer on {} after 5 s ({err}):\n{}",
                        self.admin_socket.display(),
                        self.log_text()
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Runs `traffic-shift ARGS --admin-socket <this agent's>`, with
    /// `stdin` as its standard input.
    pub fn ctl_with_input(&self, args: &[&str], stdin: &[u8]) -> std::process::Output {
        let mut child = Command::new(traffic_shift_bin())
            .args(args)
            .arg("--admin-socket")
            .arg(&self.admin_socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run traffic-shift");
        let mut input = child.stdin.take().expect("piped");
        input.write_all(stdin).expect("write stdin");
        drop(input);
        child.wait_with_output().expect("traffic-shift output")
    }

    /// Runs `traffic-shift ARGS --admin-socket <this agent's>`.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        self.ctl_with_input(args, b"")
    }

    /// `traffic-shift get KIND NAME -n NAMESPACE -o json`, parsed; it must
    /// succeed.
    pub fn get_json(&self, kind: &str, namespace: &str, name: &str) -> Value {
        let out = self.ctl(&["get", kind, name, "-n", namespace, "-o", "json"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "get {kind} {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("get -o json prints JSON")
    }

    /// Where the agent serves `/metrics` (it picked a free port; the status
    /// file says which).
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        let status = self.status_json();
        status["metrics"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no metrics address in the status file: {status}"))
    }

    /// The agent's status file, parsed.
    pub fn status_json(&self) -> Value {
        let text = std::fs::read_to_string(&self.status_file).expect("status file");
        serde_json::from_str(&text).expect("status JSON")
    }

    /// The agent's `/metrics` page.
    pub fn metrics(&self) -> String {
        let (code, body) = http_get(self.metrics_addr(), "/metrics");
        assert_eq!(code, 200, "GET /metrics: {body}");
        body
    }

    /// Polls `/metrics` (up to 5 s) until `ready`; returns the page.
    pub fn wait_metrics(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let page = self.metrics();
            if ready(&page) {
                return page;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} in /metrics:\n{page}\nagent log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `traffic-shift status` for this agent: its whole output.
    pub fn status(&self) -> String {
        self.status_with(&[])
    }

    /// `traffic-shift status ARGS...` for this agent: its whole output.
    pub fn status_with(&self, args: &[&str]) -> String {
        let out = Command::new(binary("TRAFFIC_SHIFT_BIN", "traffic-shift"))
            .arg("status")
            .args(args)
            .arg("--width")
            .arg("200")
            .arg("--status-file")
            .arg(&self.status_file)
            .output()
            .expect("run traffic-shift status");
        assert!(
            out.status.success(),
            "traffic-shift status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 status")
    }

    /// Waits (up to 5 s) until `status` output satisfies `ready`; returns it.
    pub fn wait_status(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let status = self.status();
            if ready(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "status never showed {what}:\n{status}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The directory holding the agent's log and events file.
    pub fn state_dir(&self) -> &Path {
        self.log.parent().expect("log is inside the state dir")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to `event_timeout`) for `n` new events and returns them.
    pub fn wait_events(&mut self, n: usize) -> Vec<Value> {
        self.wait_events_polling(n, Duration::from_millis(10))
    }

    /// `wait_events`, reading the events file every `poll`.
    pub fn wait_events_polling(&mut self, n: usize, poll: Duration) -> Vec<Value> {
        let deadline = Instant::now() + self.event_timeout;
        loop {
            let text = std::fs::read_to_string(&self.events).unwrap_or_default();
            // Only whole lines: the agent may be writing the next one.
            let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            let lines: Vec<Value> = complete
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("event {l}: {e}")))
                .collect();
            if lines.len() >= self.seen_events + n {
                let new = lines[self.seen_events..self.seen_events + n].to_vec();
                self.seen_events += n;
                return new;
            }
            if let Ok(Some(status)) = self.process.child.try_wait() {
                panic!(
                    "agent exited ({status}) while waiting for events:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "waited {:?} for {n} agent event(s), have {:?}\nagent log:\n{}",
                self.event_timeout,
                &lines[self.seen_events..],
                self.log_text()
            );
            std::thread::sleep(poll);
        }
    }

    /// Writes a rules file (atomically, as an operator's tooling would) and
    /// waits for the agent to apply or refuse it; returns the event.
    pub fn write_rules(&mut self, file: &str, text: impl AsRef<[u8]>) -> Value {
        let tmp = self.rules.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).expect("write rules");
        let written = Instant::now();
        std::fs::rename(&tmp, self.rules.join(file)).expect("rename rules");
        let event = self.wait_events(1).remove(0);
        // Reported, not asserted: the agent applies within a second (inotify,
        // with a one-second rescan as the safety net); wait_events allows 5 s.
        println!(
            "{file}: {} {} ms after the write",
            event["result"],
            written.elapsed().as_millis()
        );
        assert_eq!(event["file"], file, "event for another file: {event}");
        event
    }

    /// Like `write_rules`, and says when (see [`monotonic_ns`]): the new
    /// rules cannot be in force before `renamed_ns`, taken just before the
    /// file is renamed into place, and are in force by `seen_ns`, when the
    /// event was read (the agent writes it after the map update). The events
    /// file is read every millisecond, so `seen_ns` is late by at most that.
    pub fn write_rules_timed(&mut self, file: &str, text: impl AsRef<[u8]>) -> TimedWrite {
        let tmp = self.rules.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).expect("write rules");
        let renamed_ns = monotonic_ns();
        std::fs::rename(&tmp, self.rules.join(file)).expect("rename rules");
        let event = self
            .wait_events_polling(1, Duration::from_millis(1))
            .remove(0);
        let seen_ns = monotonic_ns();
        assert_eq!(event["file"], file, "event for another file: {event}");
        TimedWrite {
            event,
            renamed_ns,
            seen_ns,
        }
    }
}

/// A rules file written, its event, and when (`Agent::write_rules_timed`).
pub struct TimedWrite {
    pub event: Value,
    /// Just before the rename: the old rules were in force until at least here.
    pub renamed_ns: u64,
    /// When the event was read: the new rules were in force from here on.
    pub seen_ns: u64,
}

impl Drop for Agent {
    /// Stops the agent; removes its pins if it could not (it crashed or was
    /// killed), so a failed test leaves nothing in bpffs; keeps the log and
    /// events of a failed test for reading and removes them otherwise.
    fn drop(&mut self) {
        self.process.stop();
        let _ = std::fs::remove_dir_all(&self.bpffs);
        if std::thread::panicking() {
            eprintln!(
                "agent log and events kept in {}",
                self.state_dir().display()
            );
        } else {
            let _ = std::fs::remove_dir_all(self.state_dir());
        }
    }
}
