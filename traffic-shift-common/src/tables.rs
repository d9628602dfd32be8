//! The selection tables, shared by the kernel path (the agent writes them
//! into `TS_ROUTES`) and the L7 proxy (which walks them per request), so both
//! split the same way: the smooth sequence, the weighted rendezvous table,
//! and the kernel's key for a socket address.

use std::{
    net::{IpAddr, SocketAddr},
    vec,
    vec::Vec,
};

use crate::{Addr, FAMILY_V4, FAMILY_V6, MAX_SLOTS, PREFIX_HEADER_BITS, PrefixData, ServiceKey};

/// An IPv4-mapped IPv6 address as the IPv4 address it maps.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The kernel's key for a socket address: network byte order throughout,
/// IPv4 (and IPv4-mapped IPv6) in the first 4 bytes of the address.
pub fn service_key(addr: SocketAddr) -> ServiceKey {
    let mut bytes = [0u8; 16];
    let family = match canonical(addr.ip()) {
        IpAddr::V4(v4) => {
            bytes[..4].copy_from_slice(&v4.octets());
            FAMILY_V4
        }
        IpAddr::V6(v6) => {
            bytes = v6.octets();
            FAMILY_V6
        }
    };
    ServiceKey {
        addr: bytes,
        port: addr.port().to_be(),
        family,
        pad: 0,
    }
}

/// The `TS_SVC_PREFIXES` key (prefix length in bits, data) of the service
/// addresses `ip/len` on `port`: the address's bits past `len` cleared, an
/// IPv4-mapped IPv6 prefix of at least 96 bits read as the IPv4 one (as
/// [`service_key`] reads a mapped address). `len` beyond the family's
/// width is cut to it.
pub fn prefix_key(ip: IpAddr, len: u8, port: u16) -> (u32, PrefixData) {
    let (ip, len) = match ip {
        IpAddr::V6(v6) if len >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), len - 96),
            None => (ip, len),
        },
        _ => (ip, len),
    };
    let key = service_key(SocketAddr::new(ip, port));
    let width: u8 = if key.family == FAMILY_V4 { 32 } else { 128 };
    let len = len.min(width);
    let mut addr = key.addr;
    for (i, byte) in addr.iter_mut().enumerate() {
        let first_bit = u8::try_from(i * 8).unwrap_or(u8::MAX);
        let keep = len.saturating_sub(first_bit).min(8);
        *byte &= !(0xff_u8.checked_shr(u32::from(keep)).unwrap_or(0));
    }
    (
        PREFIX_HEADER_BITS + u32::from(len),
        PrefixData {
            port: key.port,
            family: key.family,
            pad: 0,
            addr,
        },
    )
}

/// The address prefix of a `TS_SVC_PREFIXES` key: (`ip`, its length in
/// bits, port) ([`prefix_key`] undone).
pub fn prefix_of(prefix_len: u32, data: &PrefixData) -> (IpAddr, u8, u16) {
    let len = prefix_len.saturating_sub(PREFIX_HEADER_BITS);
    (
        ip_addr(&data.addr, data.family),
        u8::try_from(len).unwrap_or(u8::MAX),
        u16::from_be(data.port),
    )
}

/// The address of key bytes `addr` in `family` (`FAMILY_V4`: the first 4
/// bytes; anything else is read as IPv6).
pub fn ip_addr(addr: &Addr, family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::from([addr[0], addr[1], addr[2], addr[3]])
    } else {
        IpAddr::from(*addr)
    }
}

/// The socket address of a kernel key ([`service_key`] undone).
pub fn socket_addr(key: &ServiceKey) -> SocketAddr {
    SocketAddr::new(ip_addr(&key.addr, key.family), u16::from_be(key.port))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Reduces weights to at most `MAX_SLOTS` slots in total: exact when the
/// reduced total fits (any realistic split: 80/20 is 5 slots, 33/67 is 100),
/// else apportioned by largest remainder with at least one slot for every
/// non-zero weight.
fn slot_counts(weights: &[u32]) -> Vec<u64> {
    let g = weights.iter().fold(0u64, |g, &w| gcd(g, u64::from(w)));
    if g == 0 {
        return vec![0; weights.len()];
    }
    let reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
    let total: u64 = reduced.iter().sum();
    let max = MAX_SLOTS as u64;
    if total <= max {
        return reduced;
    }
    let nonzero = reduced.iter().filter(|&&w| w > 0).count() as u64;
    let budget = max - nonzero;
    let mut counts: Vec<u64> = reduced
        .iter()
        .map(|&w| u64::from(w > 0) + w * budget / total)
        .collect();
    let mut rest: Vec<(u64, usize)> = reduced
        .iter()
        .enumerate()
        .map(|(i, &w)| (w * budget % total, i))
        .collect();
    rest.sort_unstable_by(|a, b| b.cmp(a));
    let used: u64 = counts.iter().sum();
    for &(_, i) in rest.iter().take(usize::try_from(max - used).unwrap_or(0)) {
        counts[i] += 1;
    }
    counts
}

/// The smooth sequence: destination `i` appears `counts[i]` times in a cycle,
/// each slot going to the destination furthest behind its share (nginx's
/// smooth weighted round robin). Every prefix is within one connection of
/// each share, so every window is within one too (for windows whose ideal
/// share is whole).
pub fn smooth_sequence(weights: &[u32]) -> Vec<u8> {
    let counts = slot_counts(weights);
    let total: u64 = counts.iter().sum();
    if total == 0 {
        // All weights zero cannot pass validation; keep the kernel safe anyway.
        return vec![0];
    }
    let total = i64::try_from(total).expect("bounded by MAX_SLOTS");
    let counts: Vec<i64> = counts
        .iter()
        .map(|&c| i64::try_from(c).expect("bounded"))
        .collect();
    let mut current = vec![0i64; counts.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for i in 0..counts.len() {
            current[i] += counts[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(u8::try_from(best).expect("bounded by MAX_DESTS"));
    }
    out
}

/// Weighted rendezvous (highest random weight) table over `MAX_SLOTS` hash
/// buckets: bucket `b` goes to the destination with the highest
/// `-w / ln(u(b, dest))`. Raising one weight raises only that destination's
/// scores, so buckets only ever move TO it: clients on a growing canary stay
/// there, and only the share that changed moves.
pub fn rendezvous_table(weights: &[u32], dest_ids: &[u64]) -> Vec<u8> {
    (0..MAX_SLOTS as u64)
        .map(|bucket| {
            let mut best = (f64::NEG_INFINITY, 0u8);
            for (i, (&w, &id)) in weights.iter().zip(dest_ids).enumerate() {
                if w == 0 {
                    continue;
                }
                let h = splitmix64(id ^ splitmix64(bucket));
                // Uniform in (0, 1), never 0 or 1.
                #[expect(clippy::cast_precision_loss, reason = "53 bits of hash are plenty")]
                let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                let score = -f64::from(w) / u.ln();
                if score > best.0 {
                    best = (score, u8::try_from(i).expect("bounded by MAX_DESTS"));
                }
            }
            best.1
        })
        .collect()
}

/// A destination's identity in [`rendezvous_table`] (the same on the TCP
/// path and in the L7 proxy, so a client hashes to the same subset): a
/// stable hash of `host/subset`.
pub fn destination_id(host: &str, subset: Option<&str>) -> u64 {
    let mut h = stable_id(host.as_bytes(), 0xcbf2_9ce4_8422_2325);
    h = stable_id(b"/", h);
    stable_id(subset.unwrap_or("").as_bytes(), h)
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a of `bytes` continued from `h`: the same across runs and builds.
fn stable_id(bytes: &[u8], h: u64) -> u64 {
    bytes
        .iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
