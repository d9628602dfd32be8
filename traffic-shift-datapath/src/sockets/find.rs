//! Which LISTEN socket serves an address, and whose it is.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    net::{IpAddr, SocketAddr},
    os::fd::AsFd as _,
    path::Path,
};

use rustix::thread::LinkNameSpaceType;

use super::{
    Families, Listener, Listening, Netns, SocketError, diag,
    procfs::{find_owners, read_tables},
};

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

/// Rank from which an IPv6 socket serves an IPv4 address (it must not be
/// IPV6_V6ONLY).
pub(super) const RANK_DUAL_STACK: u8 = 2;

/// How well a socket bound to `local` serves connections to `want`: lower is
/// better, None if it does not. The IPv6 scope id is not compared: the tables
/// do not show it.
pub(super) fn rank(want: SocketAddr, local: SocketAddr) -> Option<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
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
}
