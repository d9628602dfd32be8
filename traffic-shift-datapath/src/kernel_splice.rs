//! TLS passthrough connections spliced in the kernel: the
//! `traffic-shift-splice` object (`traffic-shift-ebpf/src/splice.rs`), an
//! `sk_skb` stream verdict program on a `SOCKHASH` that redirects each
//! socket's data to its peer's egress. Loaded without pins: its sockets are
//! the agent's own, and go with it.
//!
//! [`KernelSplice::pair`] puts two connected sockets in the map, each the
//! other's peer; from then on the data one receives is sent by the other,
//! and user space sees neither. What the kernel does not do is left to the
//! caller: bytes already queued when a socket enters the map stay there
//! (read them first), and a FIN is not carried (the socket reads its end:
//! shut the peer down). A socket leaves the map when it is closed;
//! [`KernelSplice::unpair`] forgets the peers.

use std::{
    os::fd::{AsFd, AsRawFd as _},
    sync::Mutex,
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData, SockHash},
    programs::SkSkb,
};

/// The object, built by build.rs.
static SPLICE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/traffic-shift-splice"));

/// Why the kernel splice is not available (the agent then copies in user
/// space).
#[derive(Debug, thiserror::Error)]
pub enum KernelSpliceError {
    #[error("cannot load the sk_skb splice program: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the splice object has no {0}")]
    Missing(&'static str),
    #[error("sk_skb splice program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("splice map: {0}")]
    Map(#[from] aya::maps::MapError),
}

/// The loaded program and its maps.
pub struct KernelSplice {
    socks: Mutex<SockHash<MapData, u64>>,
    peers: Mutex<HashMap<MapData, u64, u64>>,
    /// Keeps the program attached.
    _ebpf: Ebpf,
}

impl std::fmt::Debug for KernelSplice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KernelSplice")
    }
}

/// A socket's cookie (`SO_COOKIE`): its key in the maps.
pub fn socket_cookie(socket: &impl AsFd) -> std::io::Result<u64> {
    Ok(rustix::net::sockopt::get_socket_cookie(socket.as_fd())?)
}

impl KernelSplice {
    /// Loads the program and attaches it to its socket map.
    pub fn load() -> Result<Self, KernelSpliceError> {
        let mut ebpf = Ebpf::load(SPLICE_OBJECT)?;
        let socks: SockHash<MapData, u64> = SockHash::try_from(
            ebpf.take_map("TS_SPLICE_SOCKS")
                .ok_or(KernelSpliceError::Missing("TS_SPLICE_SOCKS"))?,
        )?;
        let peers: HashMap<MapData, u64, u64> = HashMap::try_from(
            ebpf.take_map("TS_SPLICE_PEERS")
                .ok_or(KernelSpliceError::Missing("TS_SPLICE_PEERS"))?,
        )?;
        let program: &mut SkSkb = ebpf
            .program_mut("ts_splice_verdict")
            .ok_or(KernelSpliceError::Missing("ts_splice_verdict"))?
            .try_into()?;
        program.load()?;
        program.attach(socks.fd())?;
        Ok(Self {
            socks: Mutex::new(socks),
            peers: Mutex::new(peers),
            _ebpf: ebpf,
        })
    }

    /// Splices `a` and `b` (both connected TCP sockets): each one's data
    /// goes to the other from now on. Returns their cookies, for
    /// [`Self::unpair`].
    pub fn pair(&self, a: &impl AsFd, b: &impl AsFd) -> Result<(u64, u64), std::io::Error> {
        let (ka, kb) = (socket_cookie(a)?, socket_cookie(b)?);
        let io = |e: aya::maps::MapError| std::io::Error::other(e.to_string());
        {
            let mut peers = self
                .peers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            peers.insert(ka, kb, 0).map_err(io)?;
            peers.insert(kb, ka, 0).map_err(io)?;
        }
        let mut socks = self
            .socks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let inserted = socks
            .insert(ka, a.as_fd().as_raw_fd(), 0)
            .and_then(|()| socks.insert(kb, b.as_fd().as_raw_fd(), 0));
        if let Err(err) = inserted {
            drop(socks);
            self.unpair((ka, kb));
            return Err(io(err));
        }
        Ok((ka, kb))
    }

    /// Forgets a pair (its sockets leave the socket map when closed).
    pub fn unpair(&self, (ka, kb): (u64, u64)) {
        let mut socks = self
            .socks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = socks.remove(&ka);
        let _ = socks.remove(&kb);
        drop(socks);
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = peers.remove(&ka);
        let _ = peers.remove(&kb);
    }
}

/// Needs root (loading a program); none skips.
#[cfg(test)]
mod root_tests {
    use std::{
        io::{Read as _, Write as _},
        net::{TcpListener, TcpStream},
        time::Duration,
    };

    use super::*;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (b, _) = listener.accept().expect("accept");
        (a, b)
    }

    /// A client `a` to the agent's `b`, the agent's `c` to a server `d`:
    /// `b` and `c` spliced, the bytes go `a` -> `d` and back without user
    /// space; the FIN does not (the socket in the map reads its end).
    #[test]
    fn spliced_sockets_move_bytes_both_ways_and_read_their_end() {
        crate::test_root::require_root("loading the sk_skb splice program needs CAP_BPF");
        let splice = KernelSplice::load().expect("this kernel loads the sk_skb program");
        let (mut a, mut b) = pair();
        let (c, mut d) = pair();
        let keys = splice.pair(&b, &c).expect("both in the socket map");
        a.write_all(b"hello").expect("write");
        let mut buf = [0u8; 5];
        d.read_exact(&mut buf).expect("read at the server");
        assert_eq!(&buf, b"hello");
        let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let back = {
            let mut d2 = d.try_clone().expect("clone");
            let sent = data.clone();
            std::thread::spawn(move || d2.write_all(&sent).expect("write 4 MiB"))
        };
        let mut got = vec![0u8; data.len()];
        a.read_exact(&mut got).expect("read 4 MiB at the client");
        back.join().expect("writer");
        assert!(got == data, "4 MiB back unchanged");

        drop(a);
        b.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut one = [0u8; 1];
        assert_eq!(
            b.read(&mut one).expect("the end"),
            0,
            "b reads the client's end"
        );
        d.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        assert!(
            d.read(&mut one).is_err(),
            "the kernel does not carry the FIN: the caller shuts the peer down"
        );
        splice.unpair(keys);
    }
}
