//! cgroup `connect4`/`connect6`: rewrite a connection to a service
//! address:port into one endpoint of the subset the route picks; and
//! `getpeername4`/`getpeername6`: show the client the service address again.
//!
//! Anything that is not TCP to a known service address is left alone. A
//! connection whose chosen subset has no endpoint is refused at once
//! (`ECONNREFUSED`), never sent to the service address.

use aya_ebpf::{
    EbpfContext as _,
    bindings::bpf_sock_addr,
    btf_maps::lpm_trie::Key,
    helpers::generated::{bpf_get_netns_cookie, bpf_set_retval},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use aya_log_ebpf::{debug, warn};
use traffic_shift_common::{
    ConnState, Event, FAMILY_V4, FAMILY_V6, PREFIX_HEADER_BITS, PrefixData, ServiceKey,
    ServiceValue, addr_from_ip4, addr_from_words, addr_words, backend_flags, conn_flags,
};

use crate::{
    maps::{TS_SERVICES, TS_SVC_PREFIXES, conn_state, count},
    select::route_and_pick,
};

const IPPROTO_TCP: u32 = 6;
const ECONNREFUSED: i32 = 111;
/// `::ffff:0:0/96`, the IPv4-mapped prefix, word 2 in network order.
const V4_MAPPED_WORD2: u32 = 0x0000_ffff_u32.to_be();

const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn ts_connect4(ctx: SockAddrContext) -> i32 {
    verdict(try_connect(&ctx, Family::V4))
}

#[cgroup_sock_addr(connect6)]
pub fn ts_connect6(ctx: SockAddrContext) -> i32 {
    verdict(try_connect(&ctx, Family::V6))
}

#[cgroup_sock_addr(getpeername4)]
pub fn ts_getpeername4(ctx: SockAddrContext) -> i32 {
    count(try_getpeername(&ctx, Family::V4));
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn ts_getpeername6(ctx: SockAddrContext) -> i32 {
    count(try_getpeername(&ctx, Family::V6));
    ALLOW
}

/// Counts what happened and turns it into the hook's return value: errors
/// refuse the connection with `ECONNREFUSED`, everything else lets it go.
#[inline(always)]
fn verdict(result: Result<Event, Event>) -> i32 {
    match result {
        Ok(event) => {
            count(event);
            ALLOW
        }
        Err(event) => {
            count(event);
            // SAFETY: helper available to cgroup sock_addr programs (5.18+).
            unsafe { bpf_set_retval(-ECONNREFUSED) };
            DENY
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// The destination as the socket sees it, in `ServiceKey` form, and whether
/// it came through an IPv4-mapped IPv6 address (then the rewrite must write
/// a mapped address back).
#[inline(always)]
unsafe fn destination(sa: *const bpf_sock_addr, family: Family) -> (ServiceKey, bool) {
    let port = unsafe { (*sa).user_port } as u16;
    match family {
        Family::V4 => (
            ServiceKey {
                addr: addr_from_ip4(unsafe { (*sa).user_ip4 }),
                port,
                family: FAMILY_V4,
                pad: 0,
            },
            false,
        ),
        Family::V6 => {
            let w = unsafe {
                [
                    (*sa).user_ip6[0],
                    (*sa).user_ip6[1],
                    (*sa).user_ip6[2],
                    (*sa).user_ip6[3],
                ]
            };
            if w[0] == 0 && w[1] == 0 && w[2] == V4_MAPPED_WORD2 {
                (
                    ServiceKey {
                        addr: addr_from_ip4(w[3]),
                        port,
                        family: FAMILY_V4,
                        pad: 0,
                    },
                    true,
                )
            } else {
                (
                    ServiceKey {
                        addr: addr_from_words(w),
                        port,
                        family: FAMILY_V6,
                        pad: 0,
                    },
                    false,
                )
            }
        }
    }
}

#[inline(always)]
fn try_connect(ctx: &SockAddrContext, family: Family) -> Result<Event, Event> {
    let sa = ctx.sock_addr;
    // SAFETY: the context pointer is valid for the whole program run.
    if unsafe { (*sa).protocol } != IPPROTO_TCP {
        return Ok(Event::NotTcp);
    }
    let (key, mapped) = unsafe { destination(sa, family) };
    let Some(route_id) = service_route(&key) else {
        return Ok(Event::NotService);
    };
    let client = client_identity(ctx, family);
    let backend = match route_and_pick(route_id, client) {
        Ok((_, picked)) => picked.backend,
        Err(None) => return Ok(Event::NoRoute),
        Err(Some(event)) => {
            debug!(
                ctx,
                "connect: route {} refused, event {}", route_id, event as u32
            );
            return Err(event);
        }
    };
    if backend.family != key.family {
        warn!(
            ctx,
            "connect: route {} endpoint family differs from the socket's", route_id
        );
        return Err(Event::FamilyMismatch);
    }
    debug!(
        ctx,
        "connect: route {} -> stat {}", route_id, backend.stat_id
    );

    // Remembered on the socket itself, for getpeername and for sock_ops
    // (which counts the connection against the endpoint's stat id).
    let state = ConnState {
        reported_request: 0,
        reported_response: 0,
        reserved: 0,
        addr: key.addr,
        port: key.port,
        family: key.family,
        flags: if backend.flags & backend_flags::PROXY != 0 {
            conn_flags::PROXIED
        } else {
            0
        },
        stat_id: backend.stat_id,
        route_id,
        pad: 0,
    };
    // SAFETY: `sk` is always set for sock_addr programs.
    let sk = unsafe { (*sa).__bindgen_anon_1.sk };
    let slot = conn_state(sk, Some(&state));
    let stored = !slot.is_null();
    if stored {
        // A socket that connects again (after a failed attempt) starts over.
        // SAFETY: a non-null storage pointer is valid for the program run.
        unsafe { *slot = state };
    }

    // SAFETY: user_ip4/user_ip6/user_port are writable in connect hooks;
    // 4-byte stores as the verifier requires.
    let words = addr_words(backend.addr);
    unsafe {
        match (family, mapped) {
            (Family::V4, _) => (*sa).user_ip4 = words[0],
            (Family::V6, true) => (*sa).user_ip6[3] = words[0],
            (Family::V6, false) => {
                (*sa).user_ip6[0] = words[0];
                (*sa).user_ip6[1] = words[1];
                (*sa).user_ip6[2] = words[2];
                (*sa).user_ip6[3] = words[3];
            }
        }
        (*sa).user_port = u32::from(backend.port);
    }
    Ok(if stored {
        Event::Rewritten
    } else {
        Event::ConnStateFull
    })
}

/// The route of a service address:port: its exact entry in `TS_SERVICES`,
/// else the longest prefix of `TS_SVC_PREFIXES` that holds it (an exact
/// address always wins over a prefix that contains it).
#[inline(always)]
fn service_route(key: &ServiceKey) -> Option<u32> {
    // SAFETY: entries are replaced, not written in place, by user space.
    if let Some(service) = unsafe { TS_SERVICES.get(key) } {
        return Some(service.route_id);
    }
    let width = if key.family == FAMILY_V4 { 32 } else { 128 };
    let prefix = Key::new(
        PREFIX_HEADER_BITS + width,
        PrefixData {
            port: key.port,
            family: key.family,
            pad: 0,
            addr: key.addr,
        },
    );
    TS_SVC_PREFIXES
        .get(&prefix)
        .map(|service: &ServiceValue| service.route_id)
}

/// Who the client is, for `select::SOURCE_HASH`: its bound source address
/// when it has one, else its network namespace (one pod, one identity, as
/// Cilium's socket-LB session affinity does).
#[inline(always)]
fn client_identity(ctx: &SockAddrContext, family: Family) -> [u32; 4] {
    // SAFETY: `sk` is always set for sock_addr programs.
    let sk = unsafe { (*ctx.sock_addr).__bindgen_anon_1.sk };
    if !sk.is_null() {
        let words = unsafe {
            match family {
                Family::V4 => [(*sk).src_ip4, 0, 0, 0],
                Family::V6 => [
                    (*sk).src_ip6[0],
                    (*sk).src_ip6[1],
                    (*sk).src_ip6[2],
                    (*sk).src_ip6[3],
                ],
            }
        };
        if words != [0; 4] {
            // An IPv4-mapped source hashes like the IPv4 one.
            if words[0] == 0 && words[1] == 0 && words[2] == V4_MAPPED_WORD2 {
                return [words[3], 0, 0, 0];
            }
            return words;
        }
    }
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    [netns as u32, (netns >> 32) as u32, 0, 1]
}

#[inline(always)]
fn try_getpeername(ctx: &SockAddrContext, family: Family) -> Event {
    let sa = ctx.sock_addr;
    // SAFETY: `sk` is always set for sock_addr programs.
    let state = conn_state(unsafe { (*sa).__bindgen_anon_1.sk }, None);
    if state.is_null() {
        return Event::PeerUntouched;
    }
    // SAFETY: non-null storage is valid for the program run; copied out
    // because sock_ops on another CPU may update the byte counters.
    let orig = unsafe { *state };
    let words = addr_words(orig.addr);
    unsafe {
        match family {
            Family::V4 => {
                if orig.family != FAMILY_V4 {
                    return Event::PeerUntouched;
                }
                (*sa).user_ip4 = words[0];
            }
            Family::V6 => {
                if orig.family == FAMILY_V4 {
                    (*sa).user_ip6[0] = 0;
                    (*sa).user_ip6[1] = 0;
                    (*sa).user_ip6[2] = V4_MAPPED_WORD2;
                    (*sa).user_ip6[3] = words[0];
                } else if orig.family == FAMILY_V6 {
                    (*sa).user_ip6[0] = words[0];
                    (*sa).user_ip6[1] = words[1];
                    (*sa).user_ip6[2] = words[2];
                    (*sa).user_ip6[3] = words[3];
                } else {
                    return Event::PeerUntouched;
                }
            }
        }
        (*sa).user_port = u32::from(orig.port);
    }
    Event::PeerRestored
}
