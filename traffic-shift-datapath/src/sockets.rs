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
//!
//! The modules: `find` (which socket serves an address, and the listing of
//! a namespace's LISTEN sockets), `diag` (the sock_diag netlink dump),
//! `procfs` (the `/proc/net/tcp{,6}` fallback and the walk of
//! `/proc/<pid>/fd`), `pidfd` (the duplication).

#![forbid(unsafe_code)]

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
};

pub(crate) mod diag;
mod find;
mod pidfd;
mod procfs;
#[cfg(test)]
mod root_tests;

pub use find::{find_listener, find_listeners, find_listeners_known};
pub use pidfd::duplicate;

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
/// (e.g. `/var/run/netns/x` or `/proc/<pid>/ns/net`).
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

/// A LISTEN socket of a network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Listening {
    local: SocketAddr,
    inode: u64,
    /// IPV6_V6ONLY of an IPv6 socket; None for IPv4 and when unknown (the
    /// `/proc` tables do not show it).
    v6only: Option<bool>,
}

#[derive(Debug, Clone, Copy)]
struct Families {
    v4: bool,
    v6: bool,
}
