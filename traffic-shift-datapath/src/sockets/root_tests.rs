//! Finding and taking the listening sockets of real processes (python
//! backends), in this network namespace and in test namespaces.
//!
//! Needs root: the tests read other processes' fds, take their sockets with
//! `pidfd_getfd` and create network namespaces. Each starts with
//! [`require_root`] and fails without root; none skips.

use std::{
    collections::HashMap,
    fs::{self, File},
    io::{self, BufRead as _, BufReader, Read as _},
    net::{Ipv6Addr, SocketAddr, TcpStream},
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use rustix::{
    event::{PollFd, PollFlags},
    net::{SocketAddrAny, sockopt},
    thread::LinkNameSpaceType,
};

use super::{
    Families, Listener, Listening, Netns, SocketError, diag, duplicate, find_listener,
    find_listeners, find_listeners_known, procfs::read_tables,
};

/// How often [`take_listener`] scans again when the socket changed
/// between the scan and the duplication.
const TAKE_ATTEMPTS: usize = 3;

/// The socket cookie (SO_COOKIE) of a socket: the key that identifies a
/// socket to BPF and in bpftool. Every descriptor of one socket has the same
/// cookie.
fn cookie(fd: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(sockopt::get_socket_cookie(fd)?)
}

/// Convenience: find + duplicate; None if nobody listens. Scans again (up to
/// three times in all) when the socket changed between scan and duplication.
fn take_listener(
    addr: SocketAddr,
    netns: Netns<'_>,
) -> Result<Option<(Listener, OwnedFd)>, SocketError> {
    let mut attempt = 1;
    loop {
        let Some(listener) = find_listener(addr, netns)? else {
            return Ok(None);
        };
        match duplicate(&listener, addr) {
            Ok(fd) => return Ok(Some((listener, fd))),
            // Only with the /proc fallback: only IPv6 sockets were
            // candidates (they rank last) and the best takes no IPv4.
            Err(SocketError::NotDualStack { .. }) => return Ok(None),
            Err(e) if e.is_race() && attempt < TAKE_ATTEMPTS => {
                tracing::debug!(%addr, error = %e, "listener changed during the scan, scanning again");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Panics unless root: the tests read other processes' fds, take their
/// sockets and create network namespaces. They never skip.
fn require_root() {
    crate::test_root::require_root(
        "the sockets tests take other processes' sockets and create network namespaces",
    );
}

/// A listening python process. `opts` (comma separated): `reuseport`,
/// `dualstack` (IPv6 without IPV6_V6ONLY; IPv6 sockets are IPv6-only
/// otherwise), `established` (also hold a connection to itself and print
/// the client's local port), `netns=PATH` (create the socket in that
/// namespace, then go back).
const BACKEND: &str = r#"
import ctypes, os, socket, sys, time
family = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
host, port, opts = sys.argv[2], int(sys.argv[3]), sys.argv[4].split(",")
netns = [o[6:] for o in opts if o.startswith("netns=")]
if netns:
    libc = ctypes.CDLL(None, use_errno=True)
    back = os.open("/proc/self/ns/net", os.O_RDONLY)
    assert libc.setns(os.open(netns[0], os.O_RDONLY), 0x40000000) == 0, "setns"
s = socket.socket(family, socket.SOCK_STREAM)
if "reuseport" in opts:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
if family == socket.AF_INET6:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if "dualstack" in opts else 1)
s.bind((host, port))
s.listen(16)
extra = ""
if "established" in opts:
    c = socket.create_connection((host, s.getsockname()[1]))
    a, _ = s.accept()
    extra = " %d" % c.getsockname()[1]
if netns:
    assert libc.setns(back, 0x40000000) == 0, "setns back"
print("ready %d%s" % (s.getsockname()[1], extra), flush=True)
time.sleep(3600)
"#;

/// The real python binary: a pyenv shim would add processes and time.
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 must be installed");
        assert!(out.status.success(), "python3 -c failed: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
}

/// A python listener, killed on drop.
struct Backend {
    child: Child,
    port: u16,
    /// Local port of the client socket with `established`.
    client_port: Option<u16>,
}

impl Backend {
    /// Listens on `host:port` (port 0: any); `prefix` runs it, e.g. `ip netns exec NS`.
    fn spawn(prefix: &[&str], family: &str, host: &str, port: u16, opts: &str) -> Self {
        let mut argv: Vec<&str> = prefix.to_vec();
        let port = port.to_string();
        argv.extend([python(), "-c", BACKEND, family, host, &port, opts]);
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut words = line.split_whitespace();
        if words.next() != Some("ready") {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("backend {host} {opts} did not start: {err}");
        }
        let port = words.next().unwrap().parse().unwrap();
        let client_port = words.next().map(|p| p.parse().unwrap());
        Self {
            child,
            port,
            client_port,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A network namespace `ts-test-sockets-<pid>-<n>` with lo up, deleted on
/// drop (`cargo xtask clean-test-state` removes leftovers).
struct TestNetns {
    name: String,
}

impl TestNetns {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ts-test-sockets-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let netns = Self { name };
        ip(&["-n", &netns.name, "link", "set", "lo", "up"]);
        netns
    }

    fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip must be installed");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn find(addr: SocketAddr) -> Option<Listener> {
    find_listener(addr, Netns::Current).unwrap()
}

/// The listener `find` returned is what /proc says the process holds.
fn assert_holds(listener: &Listener, backend: &Backend) {
    assert_eq!(listener.pid, backend.pid(), "expected the backend's pid");
    let link = fs::read_link(format!("/proc/{}/fd/{}", listener.pid, listener.fd)).unwrap();
    assert_eq!(
        link.to_str().unwrap(),
        format!("socket:[{}]", listener.inode)
    );
}

fn local_addr(fd: BorrowedFd<'_>) -> SocketAddr {
    match rustix::net::getsockname(fd).unwrap() {
        SocketAddrAny::V4(a) => SocketAddr::V4(a),
        SocketAddrAny::V6(a) => SocketAddr::V6(a),
        other => panic!("expected an inet socket, got {other:?}"),
    }
}

#[test]
fn finds_ipv4_exact() {
    require_root();
    let backend = Backend::spawn(&[], "4", "127.0.0.1", 0, "");
    let found = find(SocketAddr::from(([127, 0, 0, 1], backend.port)))
        .expect("expected the backend listening on 127.0.0.1");
    assert_holds(&found, &backend);
}

#[test]
fn a_known_listener_with_the_same_inode_is_reused_without_the_walk() {
    require_root();
    let backend = Backend::spawn(&[], "4", "127.0.0.1", 0, "");
    let addr = SocketAddr::from(([127, 0, 0, 1], backend.port));
    let real = find(addr).expect("the backend listens");
    // A known entry with the real inode but a pid/fd no walk could
    // produce: returned as is, so no walk happened for it.
    let marker = Listener {
        pid: 0,
        fd: -1,
        inode: real.inode,
    };
    let known = HashMap::from([(addr, marker.clone())]);
    let found = find_listeners_known(&[addr], Netns::Current, &known).expect("lookup");
    assert_eq!(
        found.get(&addr),
        Some(&marker),
        "same inode: the known listener is kept"
    );
    // A stale inode (the backend restarted) means a real lookup.
    let stale = HashMap::from([(
        addr,
        Listener {
            pid: 0,
            fd: -1,
            inode: real.inode + 1,
        },
    )]);
    let found = find_listeners_known(&[addr], Netns::Current, &stale).expect("lookup");
    assert_eq!(
        found.get(&addr),
        Some(&real),
        "another inode: the owner is looked up again"
    );
}

#[test]
fn finds_ipv6_exact() {
    require_root();
    let backend = Backend::spawn(&[], "6", "::1", 0, "");
    let found = find(SocketAddr::from((Ipv6Addr::LOCALHOST, backend.port)))
        .expect("expected the backend listening on [::1]");
    assert_holds(&found, &backend);
    // An IPv6-only socket on ::1 does not serve 127.0.0.1.
    assert_eq!(find(SocketAddr::from(([127, 0, 0, 1], backend.port))), None);
}

#[test]
fn wildcard_serves_ipv4_address() {
    require_root();
    let backend = Backend::spawn(&[], "4", "0.0.0.0", 0, "");
    let found = find(SocketAddr::from(([127, 0, 0, 1], backend.port)))
        .expect("expected the 0.0.0.0 listener to serve 127.0.0.1");
    assert_holds(&found, &backend);
    // ... but not an IPv6 address.
    assert_eq!(
        find(SocketAddr::from((Ipv6Addr::LOCALHOST, backend.port))),
        None
    );
}

#[test]
fn exact_bind_preferred_over_wildcard() {
    require_root();
    // The wildcard one starts first, so it has the lower pid.
    let wildcard = Backend::spawn(&[], "4", "0.0.0.0", 0, "reuseport");
    let exact = Backend::spawn(&[], "4", "127.0.0.1", wildcard.port, "reuseport");
    assert!(
        wildcard.pid() < exact.pid(),
        "pids wrapped around, run again"
    );
    let found =
        find(SocketAddr::from(([127, 0, 0, 1], exact.port))).expect("expected the exact listener");
    assert_holds(&found, &exact);
    // Another address of the port still goes to the wildcard socket.
    let other = find(SocketAddr::from(([127, 0, 0, 2], exact.port)))
        .expect("expected the wildcard listener for 127.0.0.2");
    assert_holds(&other, &wildcard);

    let wildcard6 = Backend::spawn(&[], "6", "::", 0, "reuseport");
    let exact6 = Backend::spawn(&[], "6", "::1", wildcard6.port, "reuseport");
    let found6 = find(SocketAddr::from((Ipv6Addr::LOCALHOST, exact6.port)))
        .expect("expected the exact IPv6 listener");
    assert_holds(&found6, &exact6);
}

#[test]
fn several_addresses_in_one_call() {
    require_root();
    let v4 = Backend::spawn(&[], "4", "127.0.0.1", 0, "");
    let v6 = Backend::spawn(&[], "6", "::1", 0, "");
    let a4 = SocketAddr::from(([127, 0, 0, 1], v4.port));
    let a6 = SocketAddr::from((Ipv6Addr::LOCALHOST, v6.port));
    let nobody = SocketAddr::from(([127, 0, 0, 1], v6.port));
    let found = find_listeners(&[a4, a6, nobody], Netns::Current).unwrap();
    assert_eq!(found.len(), 2, "expected {a4} and {a6} only: {found:?}");
    assert_holds(&found[&a4], &v4);
    assert_holds(&found[&a6], &v6);
}

#[test]
fn nobody_listening_is_none() {
    require_root();
    // A port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert_eq!(find(SocketAddr::from(([127, 0, 0, 1], port))), None);
    // A port with only an ESTABLISHED socket on it (held by the backend).
    let backend = Backend::spawn(&[], "4", "127.0.0.1", 0, "established");
    let client = SocketAddr::from(([127, 0, 0, 1], backend.client_port.unwrap()));
    assert_eq!(find(client), None, "an established socket is no listener");
    assert!(find(SocketAddr::from(([127, 0, 0, 1], backend.port))).is_some());
    // The empty list needs no scan.
    assert!(find_listeners(&[], Netns::Current).unwrap().is_empty());
}

#[test]
fn own_sockets_are_skipped() {
    require_root();
    let own = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        find(own.local_addr().unwrap()),
        None,
        "the agent's own socket must not be found"
    );
}

#[test]
fn dual_stack_socket_serves_ipv4_unless_ipv6_only() {
    require_root();
    let dual = Backend::spawn(&[], "6", "::", 0, "dualstack");
    let a4 = SocketAddr::from(([127, 0, 0, 1], dual.port));
    let (listener, fd) = take_listener(a4, Netns::Current)
        .unwrap()
        .expect("expected the dual-stack [::] listener to serve 127.0.0.1");
    assert_holds(&listener, &dual);
    assert_eq!(
        local_addr(fd.as_fd()),
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, dual.port))
    );

    let v6only = Backend::spawn(&[], "6", "::", 0, "");
    let a4 = SocketAddr::from(([127, 0, 0, 1], v6only.port));
    // sock_diag reports IPV6_V6ONLY: not found for IPv4.
    assert_eq!(
        find(a4),
        None,
        "an IPv6-only [::] socket cannot serve 127.0.0.1"
    );
    assert!(take_listener(a4, Netns::Current).unwrap().is_none());
    // With the /proc fallback find cannot tell; duplicate refuses it.
    let found = find(SocketAddr::from((Ipv6Addr::LOCALHOST, v6only.port)))
        .expect("expected the [::] listener for [::1]");
    let err = duplicate(&found, a4).unwrap_err();
    assert!(matches!(err, SocketError::NotDualStack { .. }), "got {err}");
}

#[test]
fn sock_diag_agrees_with_proc_tables() {
    require_root();
    let netns = TestNetns::new();
    for (addr, dev) in [("10.1.2.3/32", "lo"), ("2001:db8::1234:5678/128", "lo")] {
        ip(&["-n", &netns.name, "addr", "add", addr, "dev", dev, "nodad"]);
    }
    let exec = ["ip", "netns", "exec", netns.name.as_str()];
    let backends = [
        Backend::spawn(&exec, "4", "10.1.2.3", 0, "established"),
        Backend::spawn(&exec, "4", "0.0.0.0", 0, ""),
        Backend::spawn(&exec, "6", "2001:db8::1234:5678", 0, ""),
        Backend::spawn(&exec, "6", "::ffff:10.1.2.3", 0, "dualstack"),
        Backend::spawn(&exec, "6", "::", 0, "dualstack"),
        Backend::spawn(&exec, "6", "::", 0, ""),
    ];
    let ns = File::open(netns.path()).unwrap();
    let both = Families { v4: true, v6: true };
    let (from_diag, from_proc) = std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
            .unwrap();
        (
            diag::dump_listening(both).expect("expected sock_diag to work on this kernel"),
            read_tables(Path::new("/proc/thread-self/net"), both).unwrap(),
        )
    })
    .join()
    .unwrap();
    let key = |l: &Listening| (l.local, l.inode);
    let mut diag_keys: Vec<_> = from_diag.iter().map(key).collect();
    let mut proc_keys: Vec<_> = from_proc.iter().map(key).collect();
    diag_keys.sort_unstable();
    proc_keys.sort_unstable();
    assert_eq!(diag_keys, proc_keys, "sock_diag and /proc disagree");
    assert_eq!(
        diag_keys.len(),
        backends.len(),
        "one listener per backend: {diag_keys:?}"
    );

    let v6only = |port: u16| {
        from_diag
            .iter()
            .find(|l| l.local.port() == port)
            .unwrap_or_else(|| panic!("expected a listener on port {port}"))
            .v6only
    };
    assert_eq!(v6only(backends[0].port), None, "IPv4 has no IPV6_V6ONLY");
    assert_eq!(v6only(backends[2].port), Some(true));
    assert_eq!(v6only(backends[3].port), Some(false));
    assert_eq!(v6only(backends[4].port), Some(false));
    assert_eq!(v6only(backends[5].port), Some(true));
}

#[test]
fn other_network_namespace() {
    require_root();
    let netns = TestNetns::new();
    let path = netns.path();
    // A distinctive address shows the IPv6 word order with a real socket.
    ip(&[
        "-n",
        &netns.name,
        "addr",
        "add",
        "2001:db8::1234:5678/128",
        "dev",
        "lo",
        "nodad",
    ]);
    let exec = ["ip", "netns", "exec", netns.name.as_str()];
    let v4 = Backend::spawn(&exec, "4", "127.0.0.1", 0, "");
    let v6 = Backend::spawn(&exec, "6", "2001:db8::1234:5678", 0, "");
    let a4 = SocketAddr::from(([127, 0, 0, 1], v4.port));
    let a6: SocketAddr = format!("[2001:db8::1234:5678]:{}", v6.port)
        .parse()
        .unwrap();

    let found = find_listeners(&[a4, a6], Netns::Path(&path)).unwrap();
    assert_holds(
        found
            .get(&a4)
            .expect("expected the IPv4 listener in the netns"),
        &v4,
    );
    assert_holds(
        found
            .get(&a6)
            .expect("expected the IPv6 listener in the netns"),
        &v6,
    );
    assert!(
        find_listeners(&[a4, a6], Netns::Current)
            .unwrap()
            .is_empty(),
        "the netns listeners must not show in the current namespace"
    );

    let (_, fd) = take_listener(a6, Netns::Path(&path))
        .unwrap()
        .expect("expected to take it");
    assert_eq!(local_addr(fd.as_fd()), a6);

    // Netns::Current is the calling thread's namespace.
    let ns = File::open(&path).unwrap();
    std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
            .unwrap();
        find_listener(a4, Netns::Current).unwrap()
    })
    .join()
    .unwrap()
    .expect("expected Netns::Current in a thread inside the netns to find the listener");

    let missing = Path::new("/var/run/netns/ts-test-sockets-does-not-exist");
    assert!(matches!(
        find_listener(a4, Netns::Path(missing)),
        Err(SocketError::OpenNetns { .. })
    ));
    assert!(matches!(
        find_listener(a4, Netns::Path(Path::new("/proc/self/ns/uts"))),
        Err(SocketError::EnterNetns { .. })
    ));
}

#[test]
fn namespace_with_no_process_in_it() {
    require_root();
    let netns = TestNetns::new();
    let path = netns.path();
    // Creates the socket in the netns and goes back: no process is left
    // in the netns, only the socket.
    let opts = format!("netns={}", path.display());
    let backend = Backend::spawn(&[], "4", "127.0.0.1", 0, &opts);
    let a4 = SocketAddr::from(([127, 0, 0, 1], backend.port));
    let found = find_listener(a4, Netns::Path(&path))
        .unwrap()
        .expect("expected the socket created in the netns");
    assert_holds(&found, &backend);
    assert_eq!(find(a4), None);
}

#[test]
fn duplicate_is_the_listening_socket() {
    require_root();
    let backend = Backend::spawn(&[], "4", "127.0.0.1", 0, "");
    let a4 = SocketAddr::from(([127, 0, 0, 1], backend.port));
    let (listener, fd) = take_listener(a4, Netns::Current)
        .unwrap()
        .expect("expected the backend listener");
    assert_holds(&listener, &backend);
    assert_eq!(local_addr(fd.as_fd()), a4);
    assert!(
        sockopt::get_socket_acceptconn(&fd).unwrap(),
        "expected SO_ACCEPTCONN 1"
    );
    assert_eq!(rustix::fs::fstat(&fd).unwrap().st_ino, listener.inode);

    // One socket, one cookie, whichever descriptor asks.
    let again = duplicate(&listener, a4).unwrap();
    assert_ne!(fd.as_raw_fd(), again.as_raw_fd());
    assert_eq!(cookie(fd.as_fd()).unwrap(), cookie(again.as_fd()).unwrap());
    let own = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert_ne!(cookie(fd.as_fd()).unwrap(), cookie(own.as_fd()).unwrap());

    // A connection to the address waits on the duplicate (the backend
    // never accepts). Poll instead of setting O_NONBLOCK: the flag is
    // shared with the backend's descriptor.
    let client = TcpStream::connect(a4).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut polled = [PollFd::new(&fd, PollFlags::IN)];
    while rustix::event::poll(&mut polled, 100).unwrap() == 0 {
        assert!(
            Instant::now() < deadline,
            "expected a pending connection on the duplicate within 5 s"
        );
    }
    let accepted = rustix::net::accept(&fd).unwrap();
    let peer = match rustix::net::getpeername(&accepted).unwrap() {
        Some(SocketAddrAny::V4(a)) => SocketAddr::V4(a),
        other => panic!("expected an IPv4 peer, got {other:?}"),
    };
    assert_eq!(peer, client.local_addr().unwrap());
}

#[test]
fn duplicate_refuses_what_changed() {
    require_root();
    let backend = Backend::spawn(&[], "4", "127.0.0.1", 0, "");
    let a4 = SocketAddr::from(([127, 0, 0, 1], backend.port));
    let listener = find(a4).expect("expected the backend listener");

    let wrong_inode = Listener {
        inode: listener.inode + 1,
        ..listener.clone()
    };
    let err = duplicate(&wrong_inode, a4).unwrap_err();
    assert!(matches!(err, SocketError::Changed { .. }), "got {err}");
    assert!(err.is_race());

    let wrong_addr = SocketAddr::from(([127, 0, 0, 2], backend.port));
    let err = duplicate(&listener, wrong_addr).unwrap_err();
    assert!(matches!(err, SocketError::Changed { .. }), "got {err}");

    let closed_fd = Listener {
        fd: 999,
        ..listener.clone()
    };
    let err = duplicate(&closed_fd, a4).unwrap_err();
    assert!(matches!(err, SocketError::Gone { .. }), "got {err}");

    let pid = backend.pid();
    drop(backend);
    let err = duplicate(&listener, a4).unwrap_err();
    assert!(
        matches!(err, SocketError::Gone { pid: p, .. } if p == pid),
        "got {err}"
    );
}
