//! Taking a listener's descriptor into this process (`pidfd_open` +
//! `pidfd_getfd`), checked to be still the socket the scan saw.

use std::{io, net::SocketAddr, os::fd::OwnedFd};

use rustix::{
    io::Errno,
    net::{SocketAddrAny, sockopt},
    process::{Pid, PidfdFlags, PidfdGetfdFlags},
};

use super::{
    Listener, SocketError,
    find::{RANK_DUAL_STACK, rank},
};

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
