//! Finding and taking the listening sockets of backend processes.
//!
//! The sk_lookup program hands a connection to a socket it finds in a BPF
//! SockHash, so the agent needs its own descriptor of each backend's
//! listening socket (as Cloudflare's tubular does). Two steps:
//!
//! 1. [`find_listeners`] lists the LISTEN sockets of a network namespace
//!    with a sock_diag netlink dump made from a thread inside that namespace,
//!    keeps those that serve the wanted addresses, then walks `/proc/<pid>/fd`
//!    of every process for the one holding such a socket (`socket:[<inode>]`).
//!    If sock_diag is unavailable it reads `/proc/thread-self/net/tcp{,6}`
//!    instead: same answer, but the kernel walks its whole established-socket
//!    hash table for those files (about 9 ms per file on a 23 GiB machine with
//!    an idle table, 262144 buckets), while the dump of listeners only visits
//!    the listening hash.
//! 2. [`duplicate`] copies that descriptor into this process with
//!    `pidfd_open` + `pidfd_getfd` and checks it is still the socket the scan
//!    saw: descriptors can be closed and reused in between.
//!
//! Which socket serves an address, best first: bound to exactly that address;
//! bound to the wildcard address of the same family (`0.0.0.0`, `::`); for an
//! IPv4 address only, an IPv6 socket bound to the IPv4-mapped address or to
//! `::` that is not IPV6_V6ONLY (Go's `net.Listen("tcp", ":80")` makes one).
//! sock_diag reports IPV6_V6ONLY; the `/proc` tables do not, so with them
//! [`find_listeners`] may return an IPv6-only socket for an IPv4 address:
//! [`duplicate`] refuses it with [`SocketError::NotDualStack`], and the
//! caller treats the address as having no listener. Among sockets of the same rank, the
//! one whose holder has the lowest pid wins (the original process, not a
//! forked worker), then the lowest fd.
#![forbid(unsafe_code)]

use std::{
    collections::{HashMap, HashSet},
    ffi::OsStr,
    fs::{self, File},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::{
        fd::{AsFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

use rustix::{
    io::Errno,
    net::{SocketAddrAny, sockopt},
    process::{Pid, PidfdFlags, PidfdGetfdFlags},
    thread::LinkNameSpaceType,
};

/// `st` of a LISTEN socket in `/proc/net/tcp` (`TCP_LISTEN` in the kernel).
const TCP_LISTEN: u8 = 0x0A;

/// A listening TCP socket found in some process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub pid: u32,
    pub fd: i32,
    /// Inode number of the socket: the `N` of `socket:[N]`, also `st_ino` of
    /// any descriptor of it.
    pub inode: u64,
}

/// Which network namespace to search: the agent's own, or the one at a path
/// (e.g. /var/run/netns/x or /proc/<pid>/ns/net).
#[derive(Debug, Clone, Copy)]
pub enum Netns<'a> {
    /// The namespace of the calling thread (network namespaces are per thread).
    Current,
    /// A namespace file: `/var/run/netns/NAME` (`ip netns add`) or `/proc/PID/ns/net`.
    /// Reading its tables enters it from a short-lived thread, which needs
    /// root (CAP_SYS_ADMIN).
    Path(&'a Path),
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "cannot open network namespace file {path}: {source}; pass /var/run/netns/NAME (from `ip netns add NAME`) or /proc/PID/ns/net"
    )]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot enter network namespace {path}: {source}; the path must be a network namespace file (/var/run/netns/NAME or /proc/PID/ns/net) and entering one needs root (CAP_SYS_ADMIN)"
    )]
    EnterNetns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start a thread to read the sockets of network namespace {path}: {source}")]
    Thread {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot read TCP socket table {path}: {source} (the fallback when sock_diag fails); is procfs mounted on /proc?"
    )]
    ReadTable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot list processes in {path}: {source}; is procfs mounted on /proc?")]
    ListProcesses {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pidfd_open(pid {pid}) failed: {source}; it needs Linux 5.3 or later")]
    PidfdOpen {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("process {pid} exited or closed fd {fd} since the scan ({source}); scan again")]
    Gone {
        pid: u32,
        fd: i32,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot take fd {fd} of process {pid} with pidfd_getfd: {source}; it needs root or CAP_SYS_PTRACE, Linux 5.6 or later, and kernel.yama.ptrace_scope below 3"
    )]
    GetFd {
        pid: u32,
        fd: i32,
        #[source]
        source: io::Error,
    },
    #[error("cannot inspect the socket taken from fd {fd} of process {pid}: {source}")]
    Inspect {
        pid: u32,
        fd: i32,
        #[source]
        source: io::Error,
    },
    #[error("fd {fd} of process {pid} is no longer the listener for {addr}: {what}; scan again")]
    Changed {
        pid: u32,
        fd: i32,
        addr: SocketAddr,
        what: String,
    },
    #[error(
        "fd {fd} of process {pid} listens on IPv6 only (IPV6_V6ONLY) and cannot take IPv4 connections for {addr}; make the backend listen on an IPv4 address or clear IPV6_V6ONLY"
    )]
    NotDualStack { pid: u32, fd: i32, addr: SocketAddr },
}

impl SocketError {
    /// The listener changed between the scan and the duplication (process
    /// exited, fd closed or reused): scanning again may succeed.
    pub fn is_race(&self) -> bool {
        matches!(self, Self::Gone { .. } | Self::Changed { .. })
    }
}

/// Finds a process holding a TCP socket in LISTEN state bound to exactly
/// `addr` (a listener on the wildcard address of the same family also
/// matches, an exact bind is preferred; see the module docs for IPv6 sockets
/// serving IPv4) in network namespace `netns`. None if nobody listens there.
pub fn find_listener(addr: SocketAddr, netns: Netns<'_>) -> Result<Option<Listener>, SocketError> {
    Ok(find_listeners(&[addr], netns)?.remove(&addr))
}

/// [`find_listener`] for several addresses with one listing of the sockets
/// and one walk of the processes. Addresses nobody listens on are absent.
pub fn find_listeners(
    addrs: &[SocketAddr],
    netns: Netns<'_>,
) -> Result<HashMap<SocketAddr, Listener>, SocketError> {
    find_listeners_known(addrs, netns, &HashMap::<_, _>::new())
}

/// [`find_listeners`], reusing `known` listeners: an address whose best
/// listening socket is still the known one (same inode) keeps its known
/// [`Listener`] without the walk of every process's fds, so a periodic
/// check costs one socket listing while nothing changes.
pub fn find_listeners_known<S: std::hash::BuildHasher>(
    addrs: &[SocketAddr],
    netns: Netns<'_>,
    known: &HashMap<SocketAddr, Listener, S>,
) -> Result<HashMap<SocketAddr, Listener>, SocketError> {
    if addrs.is_empty() {
        return Ok(HashMap::new());
    }
    // IPv4 addresses can be served by IPv6 sockets too (dual-stack).
    let families = Families {
        v4: addrs.iter().any(SocketAddr::is_ipv4),
        v6: true,
    };
    let sockets = match netns {
        Netns::Current => list_listening(families)?,
        Netns::Path(path) => list_listening_in(path, families)?,
    };

    // Per address: (rank, inode) of every LISTEN socket that could serve it.
    let mut candidates: HashMap<SocketAddr, Vec<(u8, u64)>> = HashMap::new();
    for &addr in addrs {
        let found: Vec<(u8, u64)> = sockets
            .iter()
            .filter_map(|s| {
                let rank = rank(addr, s.local)?;
                let usable = rank < RANK_DUAL_STACK || s.v6only != Some(true);
                usable.then_some((rank, s.inode))
            })
            .collect();
        if !found.is_empty() {
            candidates.insert(addr, found);
        }
    }
    let mut settled = HashMap::new();
    candidates.retain(|addr, found| {
        let best = found.iter().map(|&(rank, _)| rank).min();
        let still_known = known.get(addr).filter(|k| {
            found
                .iter()
                .any(|&(rank, inode)| Some(rank) == best && inode == k.inode)
        });
        match still_known {
            Some(listener) => {
                settled.insert(*addr, listener.clone());
                false
            }
            None => true,
        }
    });
    if candidates.is_empty() {
        return Ok(settled);
    }
    let wanted: HashSet<u64> = candidates.values().flatten().map(|&(_, i)| i).collect();
    let owners = find_owners(&wanted)?;

    Ok(candidates
        .into_iter()
        .filter_map(|(addr, found)| {
            found
                .into_iter()
                .filter_map(|(rank, inode)| {
                    owners.get(&inode).map(|&(pid, fd)| (rank, pid, fd, inode))
                })
                .min()
                .map(|(_, pid, fd, inode)| (addr, Listener { pid, fd, inode }))
        })
        .chain(settled)
        .collect())
}

/// Takes a duplicate of the listener's fd into this process (pidfd_open +
/// pidfd_getfd), checks it is still a listening TCP socket bound to `addr`
/// (fds can be reused between the scan and the dup) and returns it.
///
/// The duplicate shares the open file description with the backend's fd:
/// changing its flags (O_NONBLOCK) changes them for the backend too.
pub fn duplicate(listener: &Listener, addr: SocketAddr) -> Result<OwnedFd, SocketError> {
    let &Listener { pid, fd, inode } = listener;
    let invalid_pid = || SocketError::PidfdOpen {
        pid,
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a valid pid"),
    };
    let raw_pid = i32::try_from(pid).map_err(|_| invalid_pid())?;
    let process = Pid::from_raw(raw_pid).ok_or_else(invalid_pid)?;
    let pidfd = rustix::process::pidfd_open(process, PidfdFlags::empty()).map_err(|e| {
        if e == Errno::SRCH {
            SocketError::Gone {
                pid,
                fd,
                source: e.into(),
            }
        } else {
            SocketError::PidfdOpen {
                pid,
                source: e.into(),
            }
        }
    })?;
    // The new descriptor is close-on-exec (pidfd_getfd always sets it).
    let dup = rustix::process::pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()).map_err(|e| {
        if e == Errno::SRCH || e == Errno::BADF {
            SocketError::Gone {
                pid,
                fd,
                source: e.into(),
            }
        } else {
            SocketError::GetFd {
                pid,
                fd,
                source: e.into(),
            }
        }
    })?;

    let inspect = |source: Errno| SocketError::Inspect {
        pid,
        fd,
        source: source.into(),
    };
    let changed = |what: String| SocketError::Changed {
        pid,
        fd,
        addr,
        what,
    };
    // The same inode means the same socket: fd reuse and pid reuse both show here.
    let now = rustix::fs::fstat(&dup).map_err(inspect)?.st_ino;
    if now != inode {
        return Err(changed(format!(
            "it now refers to inode {now}, the scan saw socket inode {inode}"
        )));
    }
    if !sockopt::get_socket_acceptconn(&dup).map_err(inspect)? {
        return Err(changed("the socket no longer listens".to_owned()));
    }
    let local = match rustix::net::getsockname(&dup).map_err(inspect)? {
        SocketAddrAny::V4(a) => SocketAddr::V4(a),
        SocketAddrAny::V6(a) => SocketAddr::V6(a),
        other => return Err(changed(format!("it is bound to {other:?}"))),
    };
    let Some(rank) = rank(addr, local) else {
        return Err(changed(format!("it is bound to {local}")));
    };
    if rank >= RANK_DUAL_STACK && sockopt::get_ipv6_v6only(&dup).map_err(inspect)? {
        return Err(SocketError::NotDualStack { pid, fd, addr });
    }
    Ok(dup)
}

/// Rank from which an IPv6 socket serves an IPv4 address (it must not be
/// IPV6_V6ONLY).
const RANK_DUAL_STACK: u8 = 2;

/// How well a socket bound to `local` serves connections to `want`: lower is
/// better, None if it does not. The IPv6 scope id is not compared: the tables
/// do not show it.
fn rank(want: SocketAddr, local: SocketAddr) -> Option<u8> {
    if want.port() != local.port() {
        return None;
    }
    match (want.ip(), local.ip()) {
        (IpAddr::V4(w), IpAddr::V4(l)) if w == l => Some(0),
        (IpAddr::V4(_), IpAddr::V4(l)) if l.is_unspecified() => Some(1),
        (IpAddr::V4(w), IpAddr::V6(l)) if l == w.to_ipv6_mapped() => Some(RANK_DUAL_STACK),
        (IpAddr::V4(_), IpAddr::V6(l)) if l.is_unspecified() => Some(RANK_DUAL_STACK + 1),
        (IpAddr::V6(w), IpAddr::V6(l)) if w == l => Some(0),
        (IpAddr::V6(_), IpAddr::V6(l)) if l.is_unspecified() => Some(1),
        _ => None,
    }
}

/// A LISTEN socket of a network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Listening {
    local: SocketAddr,
    inode: u64,
    /// IPV6_V6ONLY of an IPv6 socket; None for IPv4 and when unknown (the
    /// `/proc` tables do not show it).
    v6only: Option<bool>,
}

/// One line of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TableEntry {
    local: SocketAddr,
    /// `TCP_LISTEN` (0x0A), `TCP_ESTABLISHED` (0x01), ...
    state: u8,
    /// 0 for sockets no file refers to (TIME_WAIT, request sockets).
    inode: u64,
}

#[derive(Debug, Clone, Copy)]
struct Families {
    v4: bool,
    v6: bool,
}

/// Parses one line of `/proc/net/tcp{,6}` (`sl local rem st tx:rx tr:when
/// retrnsmt uid timeout inode ...`). None for the header and for lines it does
/// not understand.
fn parse_table_line(line: &str) -> Option<TableEntry> {
    let mut fields = line.split_ascii_whitespace();
    let slot = fields.next()?;
    if !slot.ends_with(':') {
        return None; // the header: "sl  local_address ..."
    }
    let local = parse_hex_socket_addr(fields.next()?)?;
    let _remote = fields.next()?;
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    // tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, timeout
    let inode = fields.nth(5)?.parse().ok()?;
    Some(TableEntry {
        local,
        state,
        inode,
    })
}

/// `0100007F:1F90` -> 127.0.0.1:8080. The kernel prints each 32-bit word of
/// the network-order address as a host-order integer (`%08X`): on x86
/// 127.0.0.1 appears as `0100007F`, and `::1` as four words
/// `00000000000000000000000001000000`. The port is printed in host order.
fn parse_hex_socket_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    if !ip.is_ascii() {
        return None;
    }
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(hex_word(ip)?)),
        32 => {
            let mut bytes = [0_u8; 16];
            for (i, out) in bytes.chunks_exact_mut(4).enumerate() {
                out.copy_from_slice(&hex_word(&ip[i * 8..i * 8 + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The four address bytes of one `%08X` word: the word was read from memory
/// in host order, so its host-order bytes are the address bytes.
fn hex_word(hex: &str) -> Option<[u8; 4]> {
    u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes)
}

/// The LISTEN sockets in `tcp` and `tcp6` under `dir` (a `/proc/.../net`
/// directory).
fn read_tables(dir: &Path, families: Families) -> Result<Vec<Listening>, SocketError> {
    let mut entries = Vec::new();
    for (wanted, name) in [(families.v4, "tcp"), (families.v6, "tcp6")] {
        if !wanted {
            continue;
        }
        let path = dir.join(name);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            // A kernel without IPv6 has no tcp6.
            Err(e) if name == "tcp6" && e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(SocketError::ReadTable { path, source }),
        };
        for line in text.lines().skip(1) {
            if let Some(entry) = parse_table_line(line) {
                if entry.state == TCP_LISTEN {
                    entries.push(Listening {
                        local: entry.local,
                        inode: entry.inode,
                        v6only: None,
                    });
                }
            } else {
                tracing::warn!(path = %path.display(), line, "cannot parse socket table line");
            }
        }
    }
    Ok(entries)
}

/// The LISTEN sockets of the calling thread's network namespace: from
/// sock_diag, else from `/proc/thread-self/net` (the calling thread's
/// namespace; `/proc/self/net` would show the main thread's).
fn list_listening(families: Families) -> Result<Vec<Listening>, SocketError> {
    match diag::dump_listening(families) {
        Ok(sockets) => Ok(sockets),
        Err(error) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(%error, "sock_diag dump failed, reading /proc/net/tcp instead (slower)");
            });
            read_tables(Path::new("/proc/thread-self/net"), families)
        }
    }
}

/// [`list_listening`] in the namespace at `path`, from a thread that enters
/// it. Unlike reading `/proc/<pid>/net` of a process found in the namespace,
/// this also works when no process is in it (sockets outlive their creator's
/// `setns`).
fn list_listening_in(path: &Path, families: Families) -> Result<Vec<Listening>, SocketError> {
    let ns = File::open(path).map_err(|source| SocketError::OpenNetns {
        path: path.to_owned(),
        source,
    })?;
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("netns-sockets".to_owned())
            .spawn_scoped(scope, || {
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(LinkNameSpaceType::Network),
                )
                .map_err(|e| SocketError::EnterNetns {
                    path: path.to_owned(),
                    source: e.into(),
                })?;
                list_listening(families)
            })
            .map_err(|source| SocketError::Thread {
                path: path.to_owned(),
                source,
            })?;
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The LISTEN sockets of a namespace from a NETLINK_SOCK_DIAG dump
/// (`ss -tln` does the same). Layouts from the kernel UAPI headers
/// `linux/netlink.h`, `linux/sock_diag.h` and `linux/inet_diag.h`; netlink
/// headers are in host byte order, ports and addresses in network order.
pub(crate) mod diag {
    use std::{
        io,
        net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    };

    use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink};

    use super::{Families, Listening, TCP_LISTEN};

    pub(crate) const NLMSG_HDRLEN: usize = 16;
    pub(crate) const NLMSG_ERROR: u16 = 2;
    pub(crate) const NLMSG_DONE: u16 = 3;
    pub(crate) const NLM_F_REQUEST: u16 = 0x1;
    /// NLM_F_ROOT | NLM_F_MATCH.
    pub(crate) const NLM_F_DUMP: u16 = 0x300;
    /// `sock_diag.h`: the message type of requests and replies.
    pub(crate) const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const AF_INET: u8 = 2;
    const AF_INET6: u8 = 10;
    const IPPROTO_TCP: u8 = 6;
    /// `struct inet_diag_req_v2`: family, protocol, ext, pad, states (u32),
    /// then a zeroed `struct inet_diag_sockid` (48 bytes): any socket.
    const REQ_LEN: usize = 56;
    /// `struct inet_diag_msg`: family, state, timer, retrans (u8 each);
    /// `inet_diag_sockid` at 4 (sport be16 at 4, dport at 6, src [be32; 4]
    /// at 8, dst at 24, if at 40, cookie [u32; 2] at 44); expires, rqueue,
    /// wqueue, uid, inode (u32 each) at 52..72; then attributes.
    const MSG_LEN: usize = 72;
    /// `enum { INET_DIAG_NONE, ... }` in `inet_diag.h`: a u8 attribute sent
    /// for every IPv6 socket in LISTEN or CLOSE.
    const INET_DIAG_SKV6ONLY: u16 = 11;
    /// `nla_type` flags (NLA_F_NESTED, NLA_F_NET_BYTEORDER) cleared.
    pub(crate) const NLA_TYPE_MASK: u16 = 0x3fff;
    /// The kernel's dump messages are at most 32 KiB (netlink_dump).
    const RECV_BUF: usize = 64 * 1024;

    /// The LISTEN TCP sockets of the calling thread's network namespace
    /// (a netlink socket reports on the namespace it was created in).
    pub(super) fn dump_listening(families: Families) -> io::Result<Vec<Listening>> {
        let sock = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            Some(netlink::SOCK_DIAG),
        )?;
        let mut buf = vec![0_u8; RECV_BUF];
        let mut out = Vec::new();
        let requests = [(families.v4, AF_INET, 1), (families.v6, AF_INET6, 2)];
        for (_, family, seq) in requests.into_iter().filter(|r| r.0) {
            rustix::net::send(&sock, &request(family, seq), SendFlags::empty())?;
            loop {
                let len = rustix::net::recv(&sock, &mut buf, RecvFlags::TRUNC)?;
                let data = buf.get(..len).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "sock_diag reply truncated")
                })?;
                if parse_replies(data, seq, &mut out)? {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// A dump request for the LISTEN TCP sockets of `family`.
    pub(super) fn request(family: u8, seq: u32) -> [u8; NLMSG_HDRLEN + REQ_LEN] {
        let mut req = [0_u8; NLMSG_HDRLEN + REQ_LEN];
        let len = u32::try_from(req.len()).expect("72 fits");
        req[0..4].copy_from_slice(&len.to_ne_bytes());
        req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&seq.to_ne_bytes());
        // nlmsg_pid (12..16) 0: the kernel.
        req[16] = family;
        req[17] = IPPROTO_TCP;
        // idiag_states: a bit mask of TCP states.
        req[20..24].copy_from_slice(&(1_u32 << TCP_LISTEN).to_ne_bytes());
        req
    }

    /// Parses one datagram of replies into `out`; true once the dump is done.
    /// Messages of another sequence number (a stale dump) are skipped.
    pub(super) fn parse_replies(
        mut data: &[u8],
        seq: u32,
        out: &mut Vec<Listening>,
    ) -> io::Result<bool> {
        let malformed = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("malformed sock_diag reply: {what}"),
            )
        };
        while !data.is_empty() {
            if data.len() < NLMSG_HDRLEN {
                return Err(malformed("short header"));
            }
            let len = usize::try_from(u32_at(data, 0)).unwrap_or(usize::MAX);
            if len < NLMSG_HDRLEN || len > data.len() {
                return Err(malformed("bad message length"));
            }
            let kind = u16_at(data, 4);
            let payload = &data[NLMSG_HDRLEN..len];
            if u32_at(data, 8) == seq {
                match kind {
                    NLMSG_DONE | NLMSG_ERROR => {
                        // An int: 0, or a negative errno.
                        let code = payload.get(..4).map_or(0, |b| i32_at(b, 0));
                        if code < 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        return Ok(true);
                    }
                    SOCK_DIAG_BY_FAMILY => {
                        if let Some(socket) = parse_msg(payload) {
                            out.push(socket);
                        } else {
                            return Err(malformed("bad inet_diag_msg"));
                        }
                    }
                    _ => {}
                }
            }
            data = &data[align4(len).min(data.len())..];
        }
        Ok(false)
    }

    /// One `struct inet_diag_msg` and its attributes; None if malformed.
    /// Sockets not in LISTEN (the kernel filtered them) are an error too.
    fn parse_msg(msg: &[u8]) -> Option<Listening> {
        if msg.len() < MSG_LEN || msg[1] != TCP_LISTEN {
            return None;
        }
        let port = u16::from_be_bytes([msg[4], msg[5]]);
        let ip = match msg[0] {
            AF_INET => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&msg[8..12]).ok()?)),
            AF_INET6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&msg[8..24]).ok()?)),
            _ => return None,
        };
        let mut v6only = None;
        let mut attrs = &msg[MSG_LEN..];
        while attrs.len() >= 4 {
            let len = usize::from(u16_at(attrs, 0));
            if len < 4 || len > attrs.len() {
                return None;
            }
            if u16_at(attrs, 2) & NLA_TYPE_MASK == INET_DIAG_SKV6ONLY && len >= 5 {
                v6only = Some(attrs[4] != 0);
            }
            attrs = &attrs[align4(len).min(attrs.len())..];
        }
        Some(Listening {
            local: SocketAddr::new(ip, port),
            inode: u64::from(u32_at(msg, 68)),
            v6only,
        })
    }

    pub(crate) fn align4(len: usize) -> usize {
        (len + 3) & !3
    }

    pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes([b[at], b[at + 1]])
    }

    pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    fn i32_at(b: &[u8], at: usize) -> i32 {
        i32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }
}

/// For each wanted socket inode, the (pid, fd) holding it: lowest pid, then
/// lowest fd. Skips this process (it holds the duplicates it took) and
/// processes that exit during the walk.
fn find_owners(wanted: &HashSet<u64>) -> Result<HashMap<u64, (u32, i32)>, SocketError> {
    let proc = Path::new("/proc");
    let me = std::process::id();
    let mut pids: Vec<u32> = fs::read_dir(proc)
        .map_err(|source| SocketError::ListProcesses {
            path: proc.to_owned(),
            source,
        })?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| pid != me)
        .collect();
    pids.sort_unstable();

    let mut owners: HashMap<u64, (u32, i32)> = HashMap::new();
    let mut denied = 0_usize;
    for pid in pids {
        let fds = match fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(fds) => fds,
            Err(e) => {
                if e.kind() == io::ErrorKind::PermissionDenied {
                    denied += 1;
                }
                // Otherwise the process exited (ENOENT, ESRCH).
                continue;
            }
        };
        for entry in fds {
            // Errors here: the process exited or closed the fd meanwhile.
            let Ok(entry) = entry else { continue };
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(target) = fs::read_link(entry.path()) else {
                continue;
            };
            if let Some(inode) = socket_inode(target.as_os_str())
                && wanted.contains(&inode)
            {
                // Pids come in ascending order, so an existing entry has a
                // lower pid, or the same pid and maybe a higher fd.
                owners
                    .entry(inode)
                    .and_modify(|owner| {
                        if owner.0 == pid && fd < owner.1 {
                            owner.1 = fd;
                        }
                    })
                    .or_insert((pid, fd));
            }
        }
        if owners.len() == wanted.len() {
            break; // higher pids cannot win
        }
    }
    if denied > 0 && owners.len() < wanted.len() {
        tracing::warn!(
            denied,
            "cannot read the fds of some processes; run the agent as root to find their listeners"
        );
    }
    Ok(owners)
}

/// `socket:[12345]` -> 12345.
fn socket_inode(link: &OsStr) -> Option<u64> {
    let inner = link
        .as_bytes()
        .strip_prefix(b"socket:[")?
        .strip_suffix(b"]")?;
    std::str::from_utf8(inner).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader, Read as _},
        net::TcpStream,
        os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
        process::{Child, Command, Stdio},
        sync::{
            OnceLock,
            atomic::{AtomicU32, Ordering},
        },
        time::{Duration, Instant},
    };

    use rustix::event::{PollFd, PollFlags};

    use super::*;

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
        assert!(
            rustix::process::geteuid().is_root(),
            "the sockets tests take other processes' sockets and create network namespaces: run them as root through `cargo xtask test`"
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

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
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
    fn parses_table_lines() {
        // Lines as kernel 6.18 printed them on x86_64 (the established one is
        // edited from a real one): 10.1.2.3:8080, 127.0.0.1:8080 established,
        // [2001:db8::1234:5678]:443, [::ffff:10.1.2.3]:8081, [::1]:80.
        let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
        assert_eq!(parse_table_line(header), None);
        let cases = [
            (
                "   0: 0302010A:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 286434 1 000000006ad12f9e 100 0 0 10 0",
                "10.1.2.3:8080",
                0x0A,
                286_434,
            ),
            (
                "   3: 0100007F:1F90 0100007F:A4F2 01 00000000:00000000 00:00000000 00000000  1000        0 5551212 1 0000000000000000 20 4 30 10 -1",
                "127.0.0.1:8080",
                0x01,
                5_551_212,
            ),
            (
                "   1: B80D0120000000000000000078563412:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 286435 1 000000005f7864b0 100 0 0 10 0",
                "[2001:db8::1234:5678]:443",
                0x0A,
                286_435,
            ),
            (
                "   0: 0000000000000000FFFF00000302010A:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 286436 1 000000007a4899f9 100 0 0 10 0",
                "[::ffff:10.1.2.3]:8081",
                0x0A,
                286_436,
            ),
            (
                "   2: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0",
                "[::1]:80",
                0x0A,
                77,
            ),
        ];
        for (line, local, state, inode) in cases {
            let expected = TableEntry {
                local: addr(local),
                state,
                inode,
            };
            if cfg!(target_endian = "little") {
                assert_eq!(parse_table_line(line), Some(expected), "line {line}");
            }
        }
        assert_eq!(parse_table_line("   0: 0302010A1F90 garbage"), None);
        assert_eq!(socket_inode(OsStr::new("socket:[286434]")), Some(286_434));
        assert_eq!(socket_inode(OsStr::new("pipe:[286434]")), None);
        assert_eq!(socket_inode(OsStr::new("/dev/null")), None);
    }

    #[test]
    fn ranks_exact_then_wildcard_then_dual_stack() {
        let want = addr("10.1.2.3:80");
        assert_eq!(rank(want, addr("10.1.2.3:80")), Some(0));
        assert_eq!(rank(want, addr("0.0.0.0:80")), Some(1));
        assert_eq!(rank(want, addr("[::ffff:10.1.2.3]:80")), Some(2));
        assert_eq!(rank(want, addr("[::]:80")), Some(3));
        assert_eq!(rank(want, addr("10.1.2.4:80")), None);
        assert_eq!(rank(want, addr("10.1.2.3:81")), None);
        let want6 = addr("[2001:db8::1]:80");
        assert_eq!(rank(want6, addr("[2001:db8::1]:80")), Some(0));
        assert_eq!(rank(want6, addr("[::]:80")), Some(1));
        assert_eq!(rank(want6, addr("0.0.0.0:80")), None);
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
        let found = find(SocketAddr::from(([127, 0, 0, 1], exact.port)))
            .expect("expected the exact listener");
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

    /// A reply message: `nlmsghdr` (type, seq) then `payload` (x86: little endian).
    fn nlmsg(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(16 + payload.len()).unwrap();
        let mut msg = Vec::new();
        msg.extend(len.to_le_bytes());
        msg.extend(kind.to_le_bytes());
        msg.extend(2_u16.to_le_bytes()); // NLM_F_MULTI
        msg.extend(seq.to_le_bytes());
        msg.extend(0_u32.to_le_bytes());
        msg.extend(payload);
        msg
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn parses_sock_diag_replies() {
        // struct inet_diag_msg for 10.1.2.3:8080, LISTEN, inode 286434.
        let mut v4 = vec![2, 0x0A, 0, 0, 0x1F, 0x90, 0, 0, 10, 1, 2, 3];
        v4.resize(68, 0);
        v4.extend(286_434_u32.to_le_bytes());
        // [2001:db8::1234:5678]:443, inode 7, then INET_DIAG_SKV6ONLY = 1
        // (len 5, type 11, padded to 8).
        let mut v6 = vec![10, 0x0A, 0, 0, 0x01, 0xBB, 0, 0];
        v6.extend("2001:db8::1234:5678".parse::<Ipv6Addr>().unwrap().octets());
        v6.resize(68, 0);
        v6.extend(7_u32.to_le_bytes());
        v6.extend([5, 0, 11, 0, 1, 0, 0, 0]);

        let mut data = nlmsg(20, 1, &v4);
        data.extend(nlmsg(20, 9, &v4)); // another dump's: skipped
        data.extend(nlmsg(20, 1, &v6));
        let mut out = Vec::new();
        assert!(
            !diag::parse_replies(&data, 1, &mut out).unwrap(),
            "not done yet"
        );
        data = nlmsg(3, 1, &0_i32.to_le_bytes());
        assert!(
            diag::parse_replies(&data, 1, &mut out).unwrap(),
            "NLMSG_DONE ends the dump"
        );
        assert_eq!(
            out,
            [
                Listening {
                    local: addr("10.1.2.3:8080"),
                    inode: 286_434,
                    v6only: None
                },
                Listening {
                    local: addr("[2001:db8::1234:5678]:443"),
                    inode: 7,
                    v6only: Some(true)
                },
            ]
        );

        // NLMSG_ERROR -ENOENT (no tcp_diag): an error the caller falls back on.
        let mut error = (-2_i32).to_le_bytes().to_vec();
        error.extend(&diag::request(2, 1)[..16]);
        let err = diag::parse_replies(&nlmsg(2, 1, &error), 1, &mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // Truncated data is an error, not a panic.
        assert!(diag::parse_replies(&nlmsg(20, 1, &v4)[..40], 1, &mut out).is_err());
        assert!(diag::parse_replies(&nlmsg(20, 1, &v4[..50]), 1, &mut out).is_err());
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
}
