//! Facts about a network namespace, gathered from a short-lived thread that
//! enters it (namespaces are per thread: never `setns` a tokio worker).

use std::{
    collections::HashSet,
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    path::Path,
};

/// Whether an address belongs to the node as the network namespace at
/// `netns` (e.g. `/proc/self/ns/net`, `/var/run/netns/NAME`) sees it: any
/// loopback address (all of 127.0.0.0/8 is local on Linux) or an address
/// of one of its interfaces, as they are now.
pub fn is_local_in(netns: &Path) -> std::io::Result<impl Fn(IpAddr) -> bool + use<>> {
    let local = local_addresses(netns)?;
    Ok(move |ip: IpAddr| ip.is_loopback() || local.contains(&ip))
}

/// The addresses of every interface in the network namespace at `netns`.
fn local_addresses(netns: &Path) -> std::io::Result<HashSet<IpAddr>> {
    run_in(netns, interface_addresses)
}

/// Runs `f` on a short-lived thread that joined the network namespace at
/// `netns`: sockets it makes (netlink ones included) belong to that
/// namespace.
pub fn run_in<T: Send>(
    netns: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    let netns = File::open(netns)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns on this thread only, with a namespace fd we own.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                f()
            })
            .join()
            .map_err(|_| std::io::Error::other("the netns thread panicked"))?
    })
}

/// The index of interface `name` in the calling thread's network namespace
/// (call it inside [`run_in`] for another namespace's).
pub fn ifindex(name: &str) -> std::io::Result<u32> {
    let c_name = std::ffi::CString::new(name)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a valid NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(index)
}

/// A TCP socket listening on `addr` in the network namespace at `netns`
/// (close-on-exec, non-blocking, `SO_REUSEADDR`; an IPv6 one is IPv6-only,
/// so `0.0.0.0:P` and `[::]:P` can both be bound).
pub fn listen_in(
    netns: &Path,
    addr: std::net::SocketAddr,
) -> std::io::Result<std::net::TcpListener> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
    run_in(netns, || {
        let family = if addr.is_ipv4() {
            AddressFamily::INET
        } else {
            AddressFamily::INET6
        };
        let fd = rustix::net::socket_with(
            family,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        sockopt::set_socket_reuseaddr(&fd, true)?;
        if addr.is_ipv6() {
            sockopt::set_ipv6_v6only(&fd, true)?;
        }
        rustix::net::bind(&fd, &addr)?;
        rustix::net::listen(&fd, 4096)?;
        Ok(std::net::TcpListener::from(fd))
    })
}

fn interface_addresses() -> std::io::Result<HashSet<IpAddr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&raw mut list) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut addresses = HashSet::new();
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: a node of the list getifaddrs returned; its ifa_addr is
        // null or points to a sockaddr of the family it names.
        unsafe {
            let addr = (*cursor).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let v4 = addr.cast::<libc::sockaddr_in>().read_unaligned();
                        addresses
                            .insert(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))));
                    }
                    libc::AF_INET6 => {
                        let v6 = addr.cast::<libc::sockaddr_in6>().read_unaligned();
                        addresses.insert(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            cursor = (*cursor).ifa_next;
        }
    }
    // SAFETY: the list getifaddrs allocated, freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(addresses)
}

/// Makes the stack of the namespace at `netns` resolve the link-layer
/// address of the next hop toward each of `addrs`: one empty UDP datagram
/// to the discard port (9) each, which the kernel holds until the
/// neighbour answers (the endpoint may answer port-unreachable; that is
/// all). Returns once the datagrams are queued, not resolved.
pub fn resolve_neighbours<'a>(
    netns: &Path,
    addrs: impl IntoIterator<Item = &'a IpAddr> + Send,
) -> std::io::Result<()> {
    run_in(netns, || {
        for addr in addrs {
            let any: IpAddr = if addr.is_ipv4() {
                Ipv4Addr::UNSPECIFIED.into()
            } else {
                Ipv6Addr::UNSPECIFIED.into()
            };
            let socket = std::net::UdpSocket::bind((any, 0))?;
            // Unreachable or refused destinations are the probes' business.
            let _ = socket.send_to(&[], (*addr, 9));
        }
        Ok(())
    })
}

/// Needs root: entering a network namespace, even the one the test is in
/// already, takes CAP_SYS_ADMIN (setns). Each test starts with
/// [`require_root`](crate::test_root::require_root) and fails without root;
/// none skips.
#[cfg(test)]
mod root_tests {
    use super::*;

    #[test]
    fn loopback_is_local_here() {
        crate::test_root::require_root(
            "the netns tests enter a network namespace (setns needs CAP_SYS_ADMIN)",
        );
        let is_local = is_local_in(Path::new("/proc/self/ns/net")).expect("own netns");
        assert!(is_local("127.0.0.1".parse().unwrap()));
        assert!(
            is_local("127.100.0.1".parse().unwrap()),
            "all of 127/8 is local"
        );
        assert!(
            !is_local("192.0.2.1".parse().unwrap()),
            "TEST-NET-1 is nobody's address"
        );
    }
}
