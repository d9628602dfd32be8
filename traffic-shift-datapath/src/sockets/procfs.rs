//! What `/proc` tells: the TCP socket tables (`/proc/net/tcp{,6}`, the
//! fallback when sock_diag fails) and which process holds a socket
//! (`/proc/<pid>/fd`).

use std::{
    collections::{HashMap, HashSet},
    ffi::OsStr,
    fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::unix::ffi::OsStrExt as _,
    path::Path,
};

use super::{Families, Listening, SocketError, TCP_LISTEN};

/// One line of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TableEntry {
    local: SocketAddr,
    /// `TCP_LISTEN` (0x0A), `TCP_ESTABLISHED` (0x01), ...
    state: u8,
    /// 0 for sockets no file refers to (TIME_WAIT, request sockets).
    inode: u64,
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
pub(super) fn read_tables(dir: &Path, families: Families) -> Result<Vec<Listening>, SocketError> {
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

/// For each wanted socket inode, the (pid, fd) holding it: lowest pid, then
/// lowest fd. Skips this process (it holds the duplicates it took) and
/// processes that exit during the walk.
pub(super) fn find_owners(wanted: &HashSet<u64>) -> Result<HashMap<u64, (u32, i32)>, SocketError> {
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
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
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
}
