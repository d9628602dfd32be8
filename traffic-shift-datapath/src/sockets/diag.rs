//! The LISTEN sockets of a namespace from a NETLINK_SOCK_DIAG dump
//! (`ss -tln` does the same). Layouts from the kernel UAPI headers
//! `linux/netlink.h`, `linux/sock_diag.h` and `linux/inet_diag.h`; netlink
//! headers are in host byte order, ports and addresses in network order.

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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
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
        assert!(!parse_replies(&data, 1, &mut out).unwrap(), "not done yet");
        data = nlmsg(3, 1, &0_i32.to_le_bytes());
        assert!(
            parse_replies(&data, 1, &mut out).unwrap(),
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
        error.extend(&request(2, 1)[..16]);
        let err = parse_replies(&nlmsg(2, 1, &error), 1, &mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // Truncated data is an error, not a panic.
        assert!(parse_replies(&nlmsg(20, 1, &v4)[..40], 1, &mut out).is_err());
        assert!(parse_replies(&nlmsg(20, 1, &v4[..50]), 1, &mut out).is_err());
    }
}
