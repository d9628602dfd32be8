//! `--drain-timeout`: closing the connections traffic-shift routed to an
//! endpoint that left the rules, once their grace period is over.
//!
//! The routed connections are found with a `NETLINK_SOCK_DIAG` dump that
//! asks for each socket's `TS_CONNS` storage (`INET_DIAG_REQ_SK_BPF_STORAGES`,
//! kernel 5.2): the storage names the counter slot, i.e. the (route,
//! destination, endpoint) the connection was routed to, so connections that
//! reached the same backend some other way are never touched. They are
//! closed with `SOCK_DESTROY` (as `ss -K`; `CONFIG_INET_DIAG_DESTROY`): the
//! local side sees `ECONNABORTED`, the peer a reset. Layouts from the UAPI
//! headers `linux/netlink.h`, `linux/inet_diag.h`, `linux/sock_diag.h`.

use std::{
    collections::BTreeSet,
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd as _, BorrowedFd},
    path::Path,
};

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink};
use traffic_shift_common::ConnState;

use crate::sockets::diag::{
    NLA_TYPE_MASK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN,
    SOCK_DIAG_BY_FAMILY, align4, u16_at, u32_at,
};

const NLM_F_ACK: u16 = 0x4;
const SOCK_DESTROY: u16 = 21;
const IPPROTO_TCP: u8 = 6;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const NLA_F_NESTED: u16 = 0x8000;
/// Request attribute: the sk storage maps whose values to report.
const INET_DIAG_REQ_SK_BPF_STORAGES: u16 = 2;
const SK_DIAG_BPF_STORAGE_REQ_MAP_FD: u16 = 1;
/// `idiag_ext` bit of `INET_DIAG_INFO` (`struct tcp_info`, read under the
/// socket's lock), and the reply attribute.
const INET_DIAG_INFO: u16 = 2;
const EXT_INFO: u8 = 1 << (INET_DIAG_INFO - 1);
/// `struct tcp_info`: `tcpi_bytes_acked` and `tcpi_bytes_received` (u64).
const TCPI_BYTES_ACKED: usize = 120;
const TCPI_BYTES_RECEIVED: usize = 128;
/// Reply attributes.
const INET_DIAG_SK_BPF_STORAGES: u16 = 20;
const SK_DIAG_BPF_STORAGE: u16 = 1;
const SK_DIAG_BPF_STORAGE_MAP_VALUE: u16 = 3;
/// `inet_diag_req_v2` without attributes.
const REQ_LEN: usize = 56;
/// `inet_diag_msg` without attributes; its `inet_diag_sockid` is at 4..52.
const MSG_LEN: usize = 72;
/// TCP states of open connections (not LISTEN, not TIME_WAIT: those have
/// no storage), as the bit mask `idiag_states`.
const OPEN_STATES: u32 =
    (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 11);

/// A connection traffic-shift routed: its socket's identity for
/// `SOCK_DESTROY` and its counter slot.
#[derive(Clone, Debug)]
pub struct Routed {
    family: u8,
    /// `struct inet_diag_sockid`, as the dump gave it (cookie included).
    id: [u8; 48],
    pub stat_id: u32,
    /// The socket's `TS_CONNS` value, read after `bytes` (the kernel puts
    /// it last in the reply).
    pub state: ConnState,
    /// The socket's byte counters (`tcpi_bytes_acked`,
    /// `tcpi_bytes_received`: sequence space, so a SYN and a FIN count one).
    pub bytes: Option<(u64, u64)>,
}

impl Routed {
    /// The (request, response) bytes this connection moved since its
    /// handshake, as far as is certain; `None` before the handshake, once
    /// its close was counted (then `TS_STATS` has them), for a connection
    /// sent to the L7 proxy (it counts requests), or without counters.
    ///
    /// A FIN takes one byte of the counters. sock_ops notes ours and the
    /// peer's under the socket's lock, in the same hold in which the kernel
    /// counts them, and the kernel reads the counters under that lock
    /// before it copies the flags: a FIN counted is always seen flagged.
    /// A flagged one may not be counted yet: a byte is left out then, one
    /// too few until the close adds them exactly, never one too many.
    pub fn moved(&self) -> Option<(u64, u64)> {
        use traffic_shift_common::conn_flags as f;
        let flags = self.state.flags;
        if flags & (f::ESTABLISHED | f::CLOSED | f::PROXIED) != f::ESTABLISHED {
            return None;
        }
        let (acked, received) = self.bytes?;
        let acked = acked.saturating_sub(u64::from(flags & f::OUR_FIN != 0));
        let received = received.saturating_sub(u64::from(flags & f::PEER_FIN != 0));
        // sock_ops' `moved`: the server side of a gateway connection
        // receives the request.
        let (request, response) = if flags & f::GATEWAY != 0 {
            (received, acked)
        } else {
            (acked, received)
        };
        Some((
            request.saturating_sub(self.state.reported_request),
            response.saturating_sub(self.state.reported_response),
        ))
    }

    /// The socket's local address (`inet_diag_sockid`: ports in network
    /// order at 0 and 2, addresses at 4 and 20, IPv4 in the first 4 bytes).
    pub fn local(&self) -> SocketAddr {
        self.end(0, 4)
    }

    /// Its peer's address.
    pub fn remote(&self) -> SocketAddr {
        self.end(2, 20)
    }

    fn end(&self, port_at: usize, addr_at: usize) -> SocketAddr {
        let port = u16::from_be_bytes([self.id[port_at], self.id[port_at + 1]]);
        let addr: [u8; 16] = self.id[addr_at..addr_at + 16].try_into().unwrap_or([0; 16]);
        let ip = if self.family == AF_INET {
            IpAddr::from([addr[0], addr[1], addr[2], addr[3]])
        } else {
            traffic_shift_common::tables::canonical(IpAddr::from(addr))
        };
        SocketAddr::new(ip, port)
    }
}

/// Every open TCP connection in the network namespace at `netns` that has
/// a value in `conns` (the `TS_CONNS` map): what `traffic-shift maps`
/// lists, the map itself having no keys to walk.
pub fn routed(netns: &Path, conns: BorrowedFd<'_>) -> io::Result<Vec<Routed>> {
    with_diag_socket(netns, conns, |sock, map_fd| {
        let mut all = dump(sock, AF_INET, 1, map_fd, true)?;
        all.extend(dump(sock, AF_INET6, 2, map_fd, true)?);
        Ok(all)
    })
}

/// Runs `f` with a sock_diag socket made in the network namespace at
/// `netns` (netlink sockets report on the namespace they were made in) and
/// the `TS_CONNS` map's fd as sock_diag takes it.
fn with_diag_socket<T: Send>(
    netns: &Path,
    conns: BorrowedFd<'_>,
    f: impl FnOnce(&rustix::fd::OwnedFd, u32) -> io::Result<T> + Send,
) -> io::Result<T> {
    let map_fd = u32::try_from(conns.as_raw_fd()).map_err(io::Error::other)?;
    crate::netns::run_in(netns, || {
        let sock = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            Some(netlink::SOCK_DIAG),
        )?;
        f(&sock, map_fd)
    })
}

/// Closes, in the network namespace at `netns`, every routed connection
/// counted in one of `stat_ids`; `conns` is the `TS_CONNS` map. Returns how
/// many were closed.
pub fn close_routed(
    netns: &Path,
    conns: BorrowedFd<'_>,
    stat_ids: &BTreeSet<u32>,
) -> io::Result<usize> {
    with_diag_socket(netns, conns, |sock, map_fd| {
        let mut closed = 0;
        for (family, seq) in [(AF_INET, 1), (AF_INET6, 2)] {
            for routed in dump(sock, family, seq, map_fd, false)? {
                if stat_ids.contains(&routed.stat_id) && destroy(sock, &routed, seq + 10)? {
                    closed += 1;
                }
            }
        }
        Ok(closed)
    })
}

fn header(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32) {
    buf.extend_from_slice(&[0; 4]); // length, set at the end
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0_u32.to_ne_bytes());
}

fn finish(mut buf: Vec<u8>) -> Vec<u8> {
    let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    buf[0..4].copy_from_slice(&len.to_ne_bytes());
    buf
}

/// The open TCP sockets of `family` that have `TS_CONNS` storage; with
/// `bytes`, their byte counters too (`tcp_info`, read under each socket's
/// lock: only for who reads them).
fn dump(
    sock: &impl rustix::fd::AsFd,
    family: u8,
    seq: u32,
    map_fd: u32,
    bytes: bool,
) -> io::Result<Vec<Routed>> {
    let mut req = Vec::with_capacity(NLMSG_HDRLEN + REQ_LEN + 12);
    header(
        &mut req,
        SOCK_DIAG_BY_FAMILY,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
    );
    let mut body = [0_u8; REQ_LEN];
    body[0] = family;
    body[1] = IPPROTO_TCP;
    if bytes {
        body[2] = EXT_INFO;
    }
    body[4..8].copy_from_slice(&OPEN_STATES.to_ne_bytes());
    req.extend_from_slice(&body);
    // INET_DIAG_REQ_SK_BPF_STORAGES { SK_DIAG_BPF_STORAGE_REQ_MAP_FD: fd }
    req.extend_from_slice(&12_u16.to_ne_bytes());
    req.extend_from_slice(&(INET_DIAG_REQ_SK_BPF_STORAGES | NLA_F_NESTED).to_ne_bytes());
    req.extend_from_slice(&8_u16.to_ne_bytes());
    req.extend_from_slice(&SK_DIAG_BPF_STORAGE_REQ_MAP_FD.to_ne_bytes());
    req.extend_from_slice(&map_fd.to_ne_bytes());
    rustix::net::send(sock, &finish(req), SendFlags::empty())?;
    let mut buf = vec![0_u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        let len = rustix::net::recv(sock, &mut buf, RecvFlags::TRUNC)?;
        let mut data = buf
            .get(..len)
            .ok_or_else(|| io::Error::other("sock_diag reply truncated"))?;
        while data.len() >= NLMSG_HDRLEN {
            let msg_len = usize::try_from(u32_at(data, 0)).unwrap_or(usize::MAX);
            if msg_len < NLMSG_HDRLEN || msg_len > data.len() {
                return Err(io::Error::other("malformed sock_diag reply"));
            }
            let payload = &data[NLMSG_HDRLEN..msg_len];
            if u32_at(data, 8) == seq {
                match u16_at(data, 4) {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        return Err(errno(payload)
                            .unwrap_or_else(|| io::Error::other("sock_diag dump failed")));
                    }
                    SOCK_DIAG_BY_FAMILY => out.extend(parse(payload)),
                    _ => {}
                }
            }
            data = &data[align4(msg_len).min(data.len())..];
        }
    }
}

/// One `inet_diag_msg` with a `TS_CONNS` value among its attributes.
fn parse(msg: &[u8]) -> Option<Routed> {
    if msg.len() < MSG_LEN {
        return None;
    }
    let id: [u8; 48] = msg[4..52].try_into().ok()?;
    let attrs = &msg[MSG_LEN..];
    let storages = attribute(attrs, INET_DIAG_SK_BPF_STORAGES)?;
    let storage = attribute(storages, SK_DIAG_BPF_STORAGE)?;
    let value = attribute(storage, SK_DIAG_BPF_STORAGE_MAP_VALUE)?;
    let state: ConnState =
        bytemuck::try_pod_read_unaligned(value.get(..size_of::<ConnState>())?).ok()?;
    let u64_at = |info: &[u8], at: usize| -> Option<u64> {
        Some(u64::from_ne_bytes(info.get(at..at + 8)?.try_into().ok()?))
    };
    let bytes = attribute(attrs, INET_DIAG_INFO).and_then(|info| {
        Some((
            u64_at(info, TCPI_BYTES_ACKED)?,
            u64_at(info, TCPI_BYTES_RECEIVED)?,
        ))
    });
    Some(Routed {
        family: msg[0],
        id,
        stat_id: state.stat_id,
        state,
        bytes,
    })
}

/// The payload of the first attribute of type `kind` in `attrs`.
fn attribute(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0));
        if len < 4 || len > attrs.len() {
            return None;
        }
        if u16_at(attrs, 2) & NLA_TYPE_MASK == kind {
            return Some(&attrs[4..len]);
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    None
}

/// `SOCK_DESTROY` of one socket; false when it was gone already.
fn destroy(sock: &impl rustix::fd::AsFd, routed: &Routed, seq: u32) -> io::Result<bool> {
    let mut req = Vec::with_capacity(NLMSG_HDRLEN + REQ_LEN);
    header(&mut req, SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, seq);
    let mut body = [0_u8; REQ_LEN];
    body[0] = routed.family;
    body[1] = IPPROTO_TCP;
    body[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    body[8..56].copy_from_slice(&routed.id);
    req.extend_from_slice(&body);
    rustix::net::send(sock, &finish(req), SendFlags::empty())?;
    let mut buf = [0_u8; 4096];
    loop {
        let len = rustix::net::recv(sock, &mut buf, RecvFlags::empty())?;
        let data = &buf[..len.min(buf.len())];
        if data.len() >= NLMSG_HDRLEN + 4
            && u32_at(data, 8) == seq
            && u16_at(data, 4) == NLMSG_ERROR
        {
            return match errno(&data[NLMSG_HDRLEN..]) {
                None => Ok(true),
                Some(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
                Some(e) => Err(e),
            };
        }
    }
}

/// The error of an `NLMSG_ERROR` payload; `None` for an acknowledgement.
fn errno(payload: &[u8]) -> Option<io::Error> {
    let code = i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?);
    (code < 0).then(|| io::Error::from_raw_os_error(-code))
}

#[cfg(test)]
mod tests {
    use traffic_shift_common::conn_flags as f;

    use super::*;

    /// A client's connection whose handshake left counters (1, 1) (the
    /// SYNs), now at `bytes`, with `flags`.
    fn routed(flags: u8, bytes: Option<(u64, u64)>) -> Routed {
        let mut state: ConnState = bytemuck::Zeroable::zeroed();
        state.flags = flags;
        state.reported_request = 1;
        state.reported_response = 1;
        Routed {
            family: AF_INET,
            id: [0; 48],
            stat_id: 7,
            state,
            bytes,
        }
    }

    #[test]
    fn an_open_connection_moved_its_counters_less_the_handshake() {
        let conn = routed(f::ESTABLISHED, Some((1 + 600, 1 + 1000)));
        assert_eq!(conn.moved(), Some((600, 1000)));
    }

    #[test]
    fn a_gateway_connection_received_the_request() {
        let conn = routed(f::ESTABLISHED | f::GATEWAY, Some((1 + 1000, 1 + 600)));
        assert_eq!(conn.moved(), Some((600, 1000)));
    }

    /// A flagged FIN may be in the counters: a byte is left out, so the
    /// figure is never over (the close adds the exact rest).
    #[test]
    fn a_flagged_fin_leaves_a_byte_out_each_way() {
        let ours = routed(f::ESTABLISHED | f::OUR_FIN, Some((1 + 600 + 1, 1 + 1000)));
        assert_eq!(ours.moved(), Some((600, 1000)));
        let peer = routed(f::ESTABLISHED | f::PEER_FIN, Some((1 + 600, 1 + 1000 + 1)));
        assert_eq!(peer.moved(), Some((600, 1000)));
    }

    #[test]
    fn connections_counted_elsewhere_or_not_yet_open_have_no_bytes_here() {
        for flags in [0, f::ESTABLISHED | f::CLOSED, f::ESTABLISHED | f::PROXIED] {
            assert_eq!(routed(flags, Some((50, 50))).moved(), None, "flags {flags}");
        }
        assert_eq!(routed(f::ESTABLISHED, None).moved(), None);
    }
}
