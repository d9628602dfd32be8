//! Harness for the end-to-end tests: every test gets its own network
//! namespace, child cgroup, bpffs pin directory, demo backends and agent,
//! all behind guards that clean up on drop, panics included.
//!
//! The binaries under test come from `TRAFFIC_SHIFT_BIN` and `TCP_ECHO_BIN`
//! (`cargo xtask test` sets them), else from the target directory next to
//! this test executable.
//!
//! [`prometheus`] runs a real Prometheus server for the metrics tests;
//! [`dashboard`] turns the Grafana dashboard into the queries it sends.

pub mod dashboard;
pub mod etcd;
pub mod fleet;
pub mod http_client;
pub mod prometheus;

use std::{
    ffi::CString,
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Panics with a clear message unless running as root: these tests attach
/// eBPF programs and create namespaces; they never skip.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the end-to-end tests attach eBPF programs and create network namespaces: run them as root (`sudo cargo xtask test`)"
    );
}

/// A unique name for this test's resources: `ts-test-<test>-<pid>`.
pub fn unique_name(test: &str) -> String {
    format!("ts-test-{test}-{}", std::process::id())
}

fn binary(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>/<name>
    let exe = std::env::current_exe().expect("current exe");
    let candidate = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name));
    match candidate {
        Some(path) if path.exists() => path,
        _ => panic!(
            "{name} not found: set {var} or run the tests with `cargo xtask test`, which builds it"
        ),
    }
}

/// Runs the `traffic-shift` binary under test with `args`.
pub fn traffic_shift(args: &[&str]) -> std::process::Output {
    Command::new(traffic_shift_bin())
        .args(args)
        .output()
        .expect("run traffic-shift")
}

/// The `traffic-shift` binary under test.
pub fn traffic_shift_bin() -> PathBuf {
    binary("TRAFFIC_SHIFT_BIN", "traffic-shift")
}

/// Build B of the agent for the upgrade test: other kernel bytecode, the
/// same maps (`cargo xtask test` builds it, see its `upgrade_build_b`).
pub fn traffic_shift_bin_b() -> PathBuf {
    binary("TRAFFIC_SHIFT_BIN_B", "build-b/traffic-shift")
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with loopback up. Deleted on drop.
pub struct Netns {
    pub name: String,
    file: File,
}

impl Netns {
    pub fn new(name: &str) -> Self {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run(Command::new("ip").args(["netns", "add", name]));
        run(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]));
        let file = File::open(format!("/var/run/netns/{name}")).expect("open netns file");
        Self {
            name: name.to_owned(),
            file,
        }
    }
}

impl Netns {
    /// Runs `f` on a thread that joined this namespace (a namespace is per
    /// thread; sockets made there stay in it).
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns on this thread only, with a netns fd we own.
                    let rc = unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(
                        rc,
                        0,
                        "setns into {}: {}",
                        self.name,
                        std::io::Error::last_os_error()
                    );
                    f()
                })
                .join()
                .expect("netns thread")
        })
    }

    /// Sets a `net.*` sysctl of this namespace, e.g. `("ipv4/tcp_syn_retries", "1")`.
    pub fn sysctl(&self, key: &str, value: &str) {
        self.run_in(|| {
            let path = format!("/proc/sys/net/{key}");
            std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
        });
    }

    /// A listening socket on `addr` in this namespace that never accepts,
    /// with its accept queue already full: every further SYN is dropped, so
    /// a connect to it times out.
    pub fn black_hole(&self, addr: std::net::SocketAddr) -> (socket2::Socket, socket2::Socket) {
        self.run_in(|| {
            let domain = socket2::Domain::for_address(addr);
            let listener =
                socket2::Socket::new(domain, socket2::Type::STREAM, None).expect("socket");
            listener.bind(&addr.into()).expect("bind");
            // Backlog 0 holds one connection; this one fills it.
            listener.listen(0).expect("listen");
            let filler = socket2::Socket::new(domain, socket2::Type::STREAM, None).expect("socket");
            filler.connect(&addr.into()).expect("fill the accept queue");
            (listener, filler)
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A child cgroup of the cgroup v2 root. Removed on drop (after the
/// processes in it were killed by their own guards).
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    pub fn new(name: &str) -> Self {
        let root = traffic_shift_datapath::default_cgroup().expect("a cgroup v2 mount");
        let path = root.join(name);
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.path).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Spawns `cmd` inside `netns` and, if given, `cgroup`.
fn spawn_in(cmd: &mut Command, netns: &Netns, cgroup: Option<&Cgroup>) -> Child {
    let ns_fd = netns.file.as_raw_fd();
    let procs = cgroup.map(|c| {
        CString::new(c.path.join("cgroup.procs").to_str().expect("utf-8 path")).expect("no NUL")
    });
    // SAFETY: only async-signal-safe libc calls between fork and exec; the
    // C string was built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(procs) = &procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// A process killed on drop.
pub struct Process {
    pub child: Child,
    pub what: String,
}

impl Process {
    /// Sends SIGTERM and waits up to 5 s, then SIGKILL.
    pub fn stop(&mut self) {
        // Already reaped: its pid may belong to another process by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Sends `signal` and waits up to 5 s for a clean exit; panics otherwise.
    pub fn signal_and_wait(&mut self, signal: libc::c_int) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, signal) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within 5 s of signal {signal}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A demo backend (`tcp-echo`) in the test's namespace, answering `<prefix> <line>`.
/// A tcp-echo backend in `netns`, and in `cgroup` when given (then the
/// agent's sock_ops sees its accepted connections: the gateway's counters).
pub fn echo_backend(
    netns: &Netns,
    cgroup: Option<&Cgroup>,
    prefix: &str,
    listen: &[&str],
) -> Process {
    demo_backend(
        binary("TCP_ECHO_BIN", "tcp-echo"),
        &["--prefix", prefix],
        listen,
        netns,
        cgroup,
        format!("tcp-echo {prefix}"),
    )
}

/// A demo HTTP backend (`http-echo`) in `netns` (and `cgroup`): it answers
/// every request with a JSON body naming `name` and `version`.
pub fn http_backend(
    netns: &Netns,
    cgroup: Option<&Cgroup>,
    name: &str,
    version: &str,
    listen: &[&str],
) -> Process {
    demo_backend(
        binary("HTTP_ECHO_BIN", "http-echo"),
        &["--name", name, "--version", version],
        listen,
        netns,
        cgroup,
        format!("http-echo {name} {version}"),
    )
}

/// Starts a demo backend (`program args --listen ADDR...`) and waits for the
/// line it logs once every listener is bound.
fn demo_backend(
    program: PathBuf,
    args: &[&str],
    listen: &[&str],
    netns: &Netns,
    cgroup: Option<&Cgroup>,
    what: String,
) -> Process {
    let mut cmd = Command::new(program);
    for addr in listen {
        cmd.args(["--listen", addr]);
    }
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = spawn_in(&mut cmd, netns, cgroup);
    let stderr = child.stderr.take().expect("piped");
    let mut line = String::new();
    BufReader::new(stderr)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{what} stderr: {e}"));
    assert!(line.contains("listening"), "{what} did not start: {line}");
    Process { child, what }
}

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
    /// How long `wait_events` waits: 5 s unless a test that feeds big
    /// files to the debug build says otherwise.
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
            event_timeout: Duration::from_secs(5),
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
        let out = Command::new(binary("TRAFFIC_SHIFT_BIN", "traffic-shift"))
            .arg("status")
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

/// `CLOCK_MONOTONIC` in nanoseconds, the clock of `ts-client`'s `stream`:
/// one clock for every process on the host.
pub fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(now.tv_sec).expect("monotonic time is positive");
    let nanos = u64::try_from(now.tv_nsec).expect("nanoseconds are positive");
    secs * 1_000_000_000 + nanos
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

/// Everything one test needs: namespace, cgroup, v1/v2 backends, rules
/// directory, agent and client. Drop order (fields in declaration order)
/// stops the client and agent before removing the cgroup and namespace.
pub struct Scenario {
    pub client: Client,
    pub agent: Agent,
    pub backends: Vec<Process>,
    pub cgroup: Cgroup,
    pub netns: Netns,
    pub rules_dir: PathBuf,
}

/// The repository's `rules/` directory.
pub fn repo_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules")
}

/// A file of the shipped tcp-echo example, e.g. `examples/vs-20-v2.yaml`.
pub fn tcp_echo_rule(file: &str) -> String {
    let path = repo_rules().join("tcp-echo").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A file of the shipped bookinfo example, e.g. `examples/vs-reviews-50-v3.yaml`.
pub fn bookinfo_rule(file: &str) -> String {
    let path = repo_rules().join("bookinfo").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl Scenario {
    /// tcp-echo v1 on 127.0.0.1:19001 and [::1]:19001, v2 on :19002, the
    /// shipped ServiceEntry and DestinationRule, and `virtual_service` as
    /// `virtual-service.yaml`.
    pub fn tcp_echo(test: &str, virtual_service: &str) -> Self {
        Self::tcp_echo_with(test, &[("virtual-service.yaml", virtual_service)])
    }

    /// Like `tcp_echo`, with the DestinationRule and VirtualService files given.
    pub fn tcp_echo_with(test: &str, files: &[(&str, &str)]) -> Self {
        Self::tcp_echo_opts(test, files, &[])
    }

    /// Like `tcp_echo_with`, with extra `traffic-shift run` arguments.
    pub fn tcp_echo_opts(test: &str, files: &[(&str, &str)], agent_args: &[&str]) -> Self {
        let mut all: Vec<(&str, String)> = vec![
            ("service-entry.yaml", tcp_echo_rule("service-entry.yaml")),
            (
                "destination-rule.yaml",
                tcp_echo_rule("destination-rule.yaml"),
            ),
            ("gateway.yaml", tcp_echo_rule("gateway.yaml")),
        ];
        for (file, text) in files {
            all.retain(|(f, _)| f != file);
            all.push((file, (*text).to_owned()));
        }
        Self::build(test, &all, agent_args)
    }

    /// The tcp-echo backends and an agent (with `agent_args`) on an empty
    /// rules directory: the rules come with `traffic-shift apply`.
    pub fn tcp_echo_backends(test: &str, agent_args: &[&str]) -> Self {
        Self::build(test, &[], agent_args)
    }

    fn build(test: &str, files: &[(&str, String)], agent_args: &[&str]) -> Self {
        Self::build_with(test, files, agent_args, |netns, cgroup| {
            vec![
                echo_backend(
                    netns,
                    Some(cgroup),
                    "one",
                    &["127.0.0.1:19001", "[::1]:19001"],
                ),
                echo_backend(
                    netns,
                    Some(cgroup),
                    "two",
                    &["127.0.0.1:19002", "[::1]:19002"],
                ),
            ]
        })
    }

    /// Bookinfo's reviews: `http-echo` v1, v2 and v3 on 127.0.0.1:19081,
    /// :19082 and :19083, the shipped ServiceEntry, DestinationRule and
    /// gateway files, with `files` added or replacing them (e.g.
    /// `virtual-service.yaml`), and an agent with `agent_args`.
    pub fn bookinfo(test: &str, files: &[(&str, &str)], agent_args: &[&str]) -> Self {
        let mut all: Vec<(&str, String)> = [
            "service-entry.yaml",
            "destination-rule.yaml",
            "gateway.yaml",
        ]
        .into_iter()
        .map(|file| (file, bookinfo_rule(file)))
        .collect();
        for (file, text) in files {
            all.retain(|(f, _)| f != file);
            all.push((file, (*text).to_owned()));
        }
        Self::build_with(test, &all, agent_args, |netns, cgroup| {
            ["v1", "v2", "v3"]
                .into_iter()
                .zip(["127.0.0.1:19081", "127.0.0.1:19082", "127.0.0.1:19083"])
                .map(|(version, addr)| {
                    http_backend(netns, Some(cgroup), "reviews", version, &[addr])
                })
                .collect()
        })
    }

    fn build_with(
        test: &str,
        files: &[(&str, String)],
        agent_args: &[&str],
        backends: impl FnOnce(&Netns, &Cgroup) -> Vec<Process>,
    ) -> Self {
        require_root();
        let name = unique_name(test);
        let netns = Netns::new(&name);
        let cgroup = Cgroup::new(&name);
        let backends = backends(&netns, &cgroup);
        let rules_dir = std::env::temp_dir().join(format!("{name}-rules"));
        let _ = std::fs::remove_dir_all(&rules_dir);
        std::fs::create_dir_all(&rules_dir).expect("rules dir");
        for (file, text) in files {
            std::fs::write(rules_dir.join(file), text).expect("write rules");
        }
        let agent = Agent::start(&name, &rules_dir, &cgroup, &netns, files.len(), agent_args);
        let client = Client::start(&netns, Some(&cgroup));
        Self {
            client,
            agent,
            backends,
            cgroup,
            netns,
            rules_dir,
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.rules_dir);
    }
}

/// A client network namespace joined to a node namespace by a veth pair:
/// the node is 198.18.0.1/24 (RFC 2544 benchmarking range, only ever inside
/// these namespaces), the client 198.18.0.2/24. Deleted on drop.
pub struct RemoteClient {
    pub client: Client,
    pub netns: Netns,
}

/// The node's address on the veth, as the remote client reaches it.
pub const NODE_ADDR: &str = "198.18.0.1";
pub const REMOTE_CLIENT_ADDR: &str = "198.18.0.2";

impl RemoteClient {
    pub fn start(node: &Netns) -> Self {
        let netns = Netns::new(&format!("{}-c", node.name));
        run(Command::new("ip").args([
            "-n",
            &node.name,
            "link",
            "add",
            "ts-node",
            "type",
            "veth",
            "peer",
            "name",
            "ts-client",
            "netns",
            &netns.name,
        ]));
        run(Command::new("ip").args([
            "-n",
            &node.name,
            "addr",
            "add",
            &format!("{NODE_ADDR}/24"),
            "dev",
            "ts-node",
        ]));
        run(Command::new("ip").args(["-n", &node.name, "link", "set", "ts-node", "up"]));
        run(Command::new("ip").args([
            "-n",
            &netns.name,
            "addr",
            "add",
            &format!("{REMOTE_CLIENT_ADDR}/24"),
            "dev",
            "ts-client",
        ]));
        run(Command::new("ip").args(["-n", &netns.name, "link", "set", "ts-client", "up"]));
        let client = Client::start(&netns, None);
        Self { client, netns }
    }
}

/// The IPv4 and IPv6 service addresses of the shipped tcp-echo example.
pub const SERVICE_V4: &str = "127.100.0.1:9000";
pub const SERVICE_V6: &str = "[fd00:7473::1]:9000";

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

/// The sum of every sample of metric `name` (the full sample name, e.g.
/// `istio_tcp_connections_opened_total`) whose labels include all of
/// `labels`, in a Prometheus text page. Counters and gauges here are whole
/// numbers.
pub fn metric(page: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (sample, label_text) = series.split_once('{').unwrap_or((series, "}"));
            if sample != name {
                return None;
            }
            labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
                .then(|| {
                    value
                        .parse::<u64>()
                        .unwrap_or_else(|e| panic!("{name}: value {value} is not a count: {e}"))
                })
        })
        .sum()
}
