//! Network namespaces: [`Netns`], one per test, with loopback up, and
//! [`RemoteClient`], a second namespace joined to it by a veth pair (a
//! client on another host, as the gateway sees it).

use std::{fs::File, os::fd::AsRawFd as _, process::Command};

use crate::{client::Client, run};

/// A network namespace with loopback up. Deleted on drop.
pub struct Netns {
    pub name: String,
    pub(crate) file: File,
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
