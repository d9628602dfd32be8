//! [`Forwarder`]: a TCP forwarder on loopback between one agent and the
//! etcd members, so that a test can cut that agent off from etcd while
//! etcd stays up for everyone else. One listener per member, on a free
//! port of 127.0.0.1; every accepted connection is relayed to its member
//! by two threads, one per direction.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
};

/// What the accept and relay threads share.
#[derive(Default)]
struct Shared {
    /// While set: every forwarded connection is closed and new ones are
    /// closed as soon as accepted.
    cut: AtomicBool,
    /// Set on drop: the accept threads return.
    stop: AtomicBool,
    /// Both ends of every forwarded connection, to close them on `cut`.
    open: Mutex<Vec<TcpStream>>,
    /// Connections closed on accept while cut.
    refused: AtomicUsize,
}

/// Listeners on 127.0.0.1, one per etcd member, relaying to the member.
pub struct Forwarder {
    /// Where to connect instead of each member, in the members' order.
    pub addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Forwarder {
    /// One listener for each of `upstreams` (the members' client ports on
    /// 127.0.0.1).
    pub fn start(upstreams: &[u16]) -> Self {
        let shared = Arc::new(Shared::default());
        let mut addrs = Vec::new();
        let mut threads = Vec::new();
        for &port in upstreams {
            let listener = TcpListener::bind("127.0.0.1:0").expect("forwarder listener");
            addrs.push(listener.local_addr().expect("forwarder address"));
            let shared = Arc::clone(&shared);
            threads.push(std::thread::spawn(move || accept(&listener, port, &shared)));
        }
        Self {
            addrs,
            shared,
            threads,
        }
    }

    /// `etcd://` and every listener.
    pub fn url(&self) -> String {
        format!(
            "etcd://{}",
            self.addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    }

    /// Closes every forwarded connection and, until [`Forwarder::heal`],
    /// closes new ones as soon as they are accepted.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        for stream in self.shared.open.lock().expect("forwarder lock").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// How many connections were closed on accept while cut: the agent
    /// tried to reach etcd meanwhile.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

fn accept(listener: &TcpListener, upstream: u16, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if shared.cut.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
            // The member is down: as if it refused.
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        {
            let mut open = shared.open.lock().expect("forwarder lock");
            for stream in [&client, &server] {
                if let Ok(clone) = stream.try_clone() {
                    open.push(clone);
                }
            }
        }
        // Cut between the check and the registration: close it now.
        if shared.cut.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
        for (from, to) in [(&client, &server), (&server, &client)] {
            let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                continue;
            };
            std::thread::spawn(move || relay(from, to));
        }
    }
}

/// Copies `from` to `to` until either ends, then closes both.
fn relay(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        // Wake each accept thread with one last connection.
        for addr in &self.addrs {
            let _ = TcpStream::connect(addr);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
