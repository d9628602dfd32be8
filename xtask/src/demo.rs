//! `cargo xtask run`: the demo backends (tcp-echo v1 "one" and v2 "two", as
//! Istio's TCP Traffic Shifting task; Bookinfo's reviews v1, v2, v3 as
//! `http-echo`) and the agent in the foreground, on `rules/tcp-echo` or
//! `--rules rules/bookinfo` (or their Gateway API forms,
//! `rules/tcp-echo-gateway-api` and `rules/bookinfo-gateway-api`: the same
//! backends, another how-to).

use std::{
    ffi::OsString,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use rustix::process::{Pid, Signal, kill_process};
use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};

use crate::cmd;

/// A demo backend: what it is, its program, its arguments, its port, and
/// whether it listens on IPv6 loopback too.
struct Backend {
    what: &'static str,
    program: &'static str,
    args: &'static [&'static str],
    port: u16,
    ipv6: bool,
}

/// tcp-echo v1 answers `one ...`, v2 `two ...`; the reviews answer JSON
/// naming their version.
const BACKENDS: [Backend; 5] = [
    Backend {
        what: "tcp-echo one",
        program: "tcp-echo",
        args: &["--prefix", "one"],
        port: 19001,
        ipv6: true,
    },
    Backend {
        what: "tcp-echo two",
        program: "tcp-echo",
        args: &["--prefix", "two"],
        port: 19002,
        ipv6: true,
    },
    Backend {
        what: "reviews v1",
        program: "http-echo",
        args: &["--name", "reviews", "--version", "v1"],
        port: 19081,
        ipv6: false,
    },
    Backend {
        what: "reviews v2",
        program: "http-echo",
        args: &["--name", "reviews", "--version", "v2"],
        port: 19082,
        ipv6: false,
    },
    Backend {
        what: "reviews v3",
        program: "http-echo",
        args: &["--name", "reviews", "--version", "v3"],
        port: 19083,
        ipv6: false,
    },
];

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Build and run with the release profile (`target/release`).
    #[arg(long)]
    pub release: bool,
    /// Rules directory the agent reads (`*.yaml` directly in it). Default: `rules/tcp-echo`
    /// in the workspace; a relative path is taken from the current directory.
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Extra arguments for `traffic-shift run`, after `--`. Example: `-- --help`.
    #[arg(last = true)]
    pub agent_args: Vec<OsString>,
}

/// The absolute rules directory; checked before anything is built.
pub fn rules_dir(root: &Path, args: &RunArgs) -> Result<PathBuf> {
    let rules = match &args.rules {
        Some(dir) => {
            std::path::absolute(dir).with_context(|| format!("bad --rules {}", dir.display()))?
        }
        None => root.join("rules/tcp-echo"),
    };
    ensure!(
        rules.is_dir(),
        "rules directory {} does not exist",
        rules.display()
    );
    Ok(rules)
}

pub fn run(root: &Path, args: &RunArgs, rules: &Path) -> Result<()> {
    let bin = crate::profile_dir(root, args.release);
    let ipv6 = TcpListener::bind("[::1]:0").is_ok();
    if !ipv6 {
        eprintln!("run: no IPv6 loopback here; the backends listen on 127.0.0.1 only");
    }

    let mut backends = Backends(Vec::new());
    for b in &BACKENDS {
        let mut c = Command::new(bin.join(b.program));
        c.args(["--listen", &format!("127.0.0.1:{}", b.port)]);
        if ipv6 && b.ipv6 {
            c.args(["--listen", &format!("[::1]:{}", b.port)]);
        }
        c.args(b.args);
        eprintln!("+ {} &", cmd::show(&c));
        let child = c
            .spawn()
            .with_context(|| format!("cannot start {}", bin.join(b.program).display()))?;
        backends.0.push(child);
    }
    backends.wait_ready(ipv6)?;
    print_howto(root, &bin, rules);

    let mut agent = Command::new(bin.join("traffic-shift"));
    agent
        .arg("run")
        .arg("--rules")
        .arg(rules)
        // The demo's backends stop with it: leave nothing steering to them.
        .arg("--unload-on-exit")
        .args(&args.agent_args)
        .current_dir(root);
    let shown = cmd::show(&agent);
    // Outlive Ctrl-C: the terminal sends SIGINT to the agent too (same process group),
    // so we wait for it to finish, then stop the backends. SIGTERM/SIGHUP sent to us
    // alone are forwarded to the agent as SIGTERM.
    let interrupted = Arc::new(AtomicBool::new(false));
    let agent_pid = Arc::new(AtomicI32::new(0));
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).context("cannot handle signals")?;
    let signal_handle = signals.handle();
    std::thread::spawn({
        let (interrupted, agent_pid) = (Arc::clone(&interrupted), Arc::clone(&agent_pid));
        move || {
            for sig in signals.forever() {
                interrupted.store(true, Ordering::SeqCst);
                if sig != SIGINT
                    && let Some(pid) = Pid::from_raw(agent_pid.load(Ordering::SeqCst))
                {
                    let _ = kill_process(pid, Signal::Term);
                }
            }
        }
    });
    eprintln!("+ {shown}");
    let mut child = agent
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    agent_pid.store(
        Pid::from_child(&child).as_raw_nonzero().get(),
        Ordering::SeqCst,
    );
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{shown}`"))?;
    signal_handle.close();
    drop(backends);
    if status.success() || interrupted.load(Ordering::SeqCst) {
        eprintln!("run: agent stopped ({status}); backends stopped");
        Ok(())
    } else {
        bail!("`{shown}` failed ({status}); backends stopped")
    }
}

/// The backend processes; stopped (SIGTERM, then SIGKILL) on every exit path.
struct Backends(Vec<Child>);

impl Backends {
    /// Waits until every backend accepts connections, or fails if one exits.
    fn wait_ready(&mut self, ipv6: bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        for b in &BACKENDS {
            let mut addrs = vec![SocketAddr::from(([127, 0, 0, 1], b.port))];
            if ipv6 && b.ipv6 {
                addrs.push(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, b.port)));
            }
            for addr in addrs {
                while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                    // self.0[i] was started for BACKENDS[i].
                    for (child, other) in self.0.iter_mut().zip(&BACKENDS) {
                        if let Some(status) = child.try_wait()? {
                            bail!(
                                "{} exited ({status}) before listening; is port {port} taken (a \
                                 backend of an earlier run)? `ss -ltnp 'sport = :{port}'`",
                                other.what,
                                port = other.port,
                            );
                        }
                    }
                    ensure!(
                        Instant::now() < deadline,
                        "{} not listening on {addr} after 10 s",
                        b.what
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        Ok(())
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        for child in &self.0 {
            if let Some(pid) = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)) {
                let _ = kill_process(pid, Signal::Term);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for child in &mut self.0 {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn print_howto(root: &Path, bin: &Path, rules: &Path) {
    if rules.ends_with("bookinfo") {
        print_bookinfo_howto(root, bin, rules, &BOOKINFO_ISTIO);
        return;
    }
    if rules.ends_with("bookinfo-gateway-api") {
        print_bookinfo_howto(root, bin, rules, &BOOKINFO_GATEWAY_API);
        return;
    }
    if rules.ends_with("tcp-echo-gateway-api") {
        print_tcp_echo_gateway_api_howto(root, bin, rules);
        return;
    }
    let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let (bin, rules) = (rel(bin), rel(rules));
    let one = "exec 3<>/dev/tcp/127.100.0.1/9000; echo hello >&3; head -1 <&3; exec 3<&-";
    println!(
        r#"
== traffic-shift demo ==========================================================
service  tcp-echo.local = 127.100.0.1:9000 and [fd00:7473::1]:9000 ({rules}/*.yaml)
v1       {bin}/tcp-echo --prefix one on 127.0.0.1:19001, [::1]:19001
v2       {bin}/tcp-echo --prefix two on 127.0.0.1:19002, [::1]:19002

In another shell, in {root}:
  # one connection; all traffic goes to v1 at first, so it answers "one hello"
  {one}
  # the same over IPv6
  python3 -c 'import socket; s = socket.create_connection(("fd00:7473::1", 9000)); s.sendall(b"hello\n"); print(s.recv(100).decode(), end="")'
  # through the ingress gateway (port 31400, any local address; sk_lookup hands it to v1's socket)
  exec 3<>/dev/tcp/127.0.0.1/31400; echo hello >&3; head -1 <&3; exec 3<&-
  # what the agent has in force: routes, gateway endpoint sockets, kernel counters
  {bin}/traffic-shift status
  # count the answers of 100 connections
  for i in $(seq 100); do exec 3<>/dev/tcp/127.100.0.1/9000; echo hi >&3; head -1 <&3; exec 3<&-; done | sort | uniq -c
  # shift 20% to v2, then all of it, then back (the agent reloads {rules}/*.yaml)
  cp {rules}/examples/vs-20-v2.yaml {rules}/virtual-service.yaml
  cp {rules}/examples/vs-all-v2.yaml {rules}/virtual-service.yaml
  cp {rules}/examples/vs-all-v1.yaml {rules}/virtual-service.yaml
  # or let a Rollout shift it, 10% at a time, judged on v2's connections (docs/rollouts.md);
  # keep traffic flowing: with fewer than 20 connections to v2 in 10 s it rolls back to v1
  while :; do exec 3<>/dev/tcp/127.100.0.1/9000; echo hi >&3; head -1 <&3 >/dev/null; exec 3<&-; done &
  {bin}/traffic-shift apply -f {rules}/examples/rollout.yaml
  {bin}/traffic-shift rollout status tcp-echo --watch
Ctrl-C stops the agent, then the backends.
================================================================================
"#,
        root = root.display()
    );
}

/// The tcp-echo how-to for `rules/tcp-echo-gateway-api`: the TCPRoute
/// shifts the gateway port; the Service's clusterIP balances its endpoints.
fn print_tcp_echo_gateway_api_howto(root: &Path, bin: &Path, rules: &Path) {
    let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let (bin, rules) = (rel(bin), rel(rules));
    let one = "exec 3<>/dev/tcp/127.0.0.1/31400; echo hello >&3; head -1 <&3; exec 3<&-";
    println!(
        r#"
== traffic-shift demo: tcp-echo, Gateway API ===================================
gateway  Gateway tcp-echo-gateway, listener tcp-31400: TCP port 31400 on any local address,
         routed by the TCPRoute tcp-echo ({rules}/tcp-route.yaml; sk_lookup, no proxy)
service  Service tcp-echo = 127.100.0.1:9000 and [fd00:7473::1]:9000: each new connection to
         one of its endpoints, v1 and v2 in turn (as kube-proxy balances a Service)
v1       {bin}/tcp-echo --prefix one on 127.0.0.1:19001, [::1]:19001 (Service tcp-echo-v1)
v2       {bin}/tcp-echo --prefix two on 127.0.0.1:19002, [::1]:19002 (Service tcp-echo-v2)

In another shell, in {root}:
  # one connection through the gateway; all to v1 at first: "one hello"
  {one}
  # count the answers of 100 connections through the gateway
  for i in $(seq 100); do exec 3<>/dev/tcp/127.0.0.1/31400; echo hi >&3; head -1 <&3; exec 3<&-; done | sort | uniq -c
  # shift 20% to v2, then all of it, then back (the agent reloads {rules}/*.yaml)
  cp {rules}/examples/tcp-route-20-v2.yaml {rules}/tcp-route.yaml
  cp {rules}/examples/tcp-route-all-v2.yaml {rules}/tcp-route.yaml
  cp {rules}/examples/tcp-route-all-v1.yaml {rules}/tcp-route.yaml
  # what the agent has in force: routes, gateway endpoint sockets, kernel counters
  {bin}/traffic-shift status
Ctrl-C stops the agent, then the backends.
================================================================================
"#,
        root = root.display()
    );
}

/// What differs between the Istio and Gateway API forms of Bookinfo.
struct BookinfoForm {
    title: &'static str,
    /// What routes the requests.
    rules: &'static str,
    /// The active route file, and the examples: 50/50, all v3, jason.
    active: &'static str,
    examples: [&'static str; 3],
}

const BOOKINFO_ISTIO: BookinfoForm = BookinfoForm {
    title: "Bookinfo reviews (HTTP) ==============",
    rules: "the VirtualService's http rules",
    active: "virtual-service.yaml",
    examples: [
        "vs-reviews-50-v3.yaml",
        "vs-reviews-v3.yaml",
        "vs-reviews-jason-v2.yaml",
    ],
};

const BOOKINFO_GATEWAY_API: BookinfoForm = BookinfoForm {
    title: "Bookinfo reviews (HTTP), Gateway API =",
    rules: "the HTTPRoute bound to the Service",
    active: "http-route.yaml",
    examples: [
        "route-reviews-50-v3.yaml",
        "route-reviews-v3.yaml",
        "route-reviews-jason-v2.yaml",
    ],
};

fn print_bookinfo_howto(root: &Path, bin: &Path, rules: &Path, form: &BookinfoForm) {
    let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let (bin, rules) = (rel(bin), rel(rules));
    let BookinfoForm {
        title,
        rules: routed_by,
        active,
        examples: [half, v3, jason],
    } = form;
    println!(
        r#"
== traffic-shift demo: {title}==================
service  reviews.default.svc.cluster.local = http://127.101.0.1:9080 ({rules}/*.yaml)
         the kernel sends each connection to the agent's L7 proxy (127.0.0.1:15001),
         which routes every request by {routed_by}
v1/v2/v3 {bin}/http-echo --name reviews --version vN on 127.0.0.1:19081/19082/19083
gateway  http://127.0.0.1:8080/reviews/... (Gateway bookinfo-gateway, any local address)

In another shell, in {root}:
  curl -s http://127.101.0.1:9080/reviews/1; echo      # {{"version":"v1",...}}: all to v1 at first
  # count the versions of 100 requests
  for i in $(seq 100); do curl -s http://127.101.0.1:9080/reviews/1 | grep -o '"version":"v[0-9]"'; done | sort | uniq -c
  # 50% to v3, then all of it (Istio's HTTP Traffic Shifting task)
  cp {rules}/examples/{half} {rules}/{active}
  cp {rules}/examples/{v3} {rules}/{active}
  # request routing: the user jason gets v2, everyone else v1
  cp {rules}/examples/{jason} {rules}/{active}
  curl -s -H 'end-user: jason' http://127.101.0.1:9080/reviews/1; echo
  # through the gateway port
  curl -s http://127.0.0.1:8080/reviews/1; echo
  # requests per version, as Istio names them
  curl -s http://127.0.0.1:15090/metrics | grep '^istio_requests_total'
Ctrl-C stops the agent, then the backends.
================================================================================
"#,
        root = root.display()
    );
}
