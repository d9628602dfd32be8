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
    helpers::generated::{
        bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_set_retval,
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use traffic_shift_common::{
    Backend, Event, FAMILY_V4, FAMILY_V6, MAX_BACKENDS, MAX_DESTS, MAX_SLOTS, OrigDst, RouteTable,
    ServiceKey, select, source_hash,
};

use crate::maps::{TS_CURSORS, TS_ORIG_DST, TS_ROUTES, TS_SERVICES, count};

/// Atomic fetch-and-add (`BPF_ATOMIC | BPF_FETCH`, kernel 5.12).
///
/// Inline asm because aya-build compiles for `--cpu generic` (v1), where
/// LLVM lowers `atomicrmw add` to the old XADD without a result and refuses
/// to use it: "Invalid usage of the XADD return value". The kernel runs the
/// v3 instruction fine.
#[inline(always)]
unsafe fn fetch_add(counter: *mut u64) -> u64 {
    let mut value: u64 = 1;
    unsafe {
        core::arch::asm!(
            "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
            p = in(reg) counter,
            v = inout(reg) value,
            options(nostack),
        );
    }
    value
}

/// `value & mask`, done in the program whatever LLVM knows about `value`.
///
/// LLVM drops a mask it can prove redundant (e.g. after `x % n` with
/// `n <= MAX_SLOTS`), but the verifier does not track bounds through `%`:
/// "math between map_value pointer and register with unbounded min value is
/// not allowed". An AND with a known constant gives the verifier the bound.
#[inline(always)]
fn bound(value: u64, mask: u64) -> usize {
    let mut value = value;
    // SAFETY: a register-only AND.
    unsafe {
        core::arch::asm!("{v} &= {m}", v = inout(reg) value, m = in(reg) mask, options(pure, nomem, nostack));
    }
    // Again in Rust, so LLVM knows the bound too and drops the index check
    // (a panic path ends the program without an exit: "last insn is not an
    // exit or jmp").
    (value & mask) as usize
}

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
                addr: [unsafe { (*sa).user_ip4 }, 0, 0, 0],
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
                        addr: [w[3], 0, 0, 0],
                        port,
                        family: FAMILY_V4,
                        pad: 0,
                    },
                    true,
                )
            } else {
                (
                    ServiceKey {
                        addr: w,
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
    // SAFETY: entries are replaced, not written in place, by user space.
    let Some(service) = (unsafe { TS_SERVICES.get(&key) }) else {
        return Ok(Event::NotService);
    };
    let route_id = service.route_id;
    // SAFETY: TS_ROUTES is BPF_F_NO_PREALLOC: a replaced value stays intact
    // until this program is done with it.
    let Some(route) = (unsafe { TS_ROUTES.get(&route_id) }) else {
        return Ok(Event::NoRoute);
    };
    let client = client_identity(ctx, family);
    let backend = pick(route, route_id, client)?;
    if backend.family != key.family {
        return Err(Event::FamilyMismatch);
    }

    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let orig = OrigDst {
        addr: key.addr,
        port: key.port,
        family: key.family,
        pad: 0,
        route_id,
        endpoint_id: backend.endpoint_id,
    };
    let stored = TS_ORIG_DST.insert(cookie, orig, 0).is_ok();

    // SAFETY: user_ip4/user_ip6/user_port are writable in connect hooks;
    // 4-byte stores as the verifier requires.
    unsafe {
        match (family, mapped) {
            (Family::V4, _) => (*sa).user_ip4 = backend.addr[0],
            (Family::V6, true) => (*sa).user_ip6[3] = backend.addr[0],
            (Family::V6, false) => {
                (*sa).user_ip6[0] = backend.addr[0];
                (*sa).user_ip6[1] = backend.addr[1];
                (*sa).user_ip6[2] = backend.addr[2];
                (*sa).user_ip6[3] = backend.addr[3];
            }
        }
        (*sa).user_port = u32::from(backend.port);
    }
    Ok(if stored {
        Event::Rewritten
    } else {
        Event::OrigDstFull
    })
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

/// Picks the backend: a destination from the slot table, then an endpoint
/// of that destination.
#[inline(always)]
fn pick(route: &RouteTable, route_id: u32, client: [u32; 4]) -> Result<&Backend, Event> {
    let n_slots = route.n_slots;
    if n_slots == 0 || n_slots as usize > MAX_SLOTS {
        return Err(Event::BadTable);
    }
    let hash = source_hash(client);
    let cursor = TS_CURSORS.get_ptr_mut(route_id);
    let slot = match route.mode {
        select::RANDOM => (unsafe { bpf_get_prandom_u32() }) % n_slots,
        select::SOURCE_HASH => hash % n_slots,
        _ => match cursor {
            // SAFETY: array values live as long as the map; the atomic add
            // (BPF_ATOMIC | BPF_FETCH) makes every connection take its own slot.
            Some(c) => (unsafe { fetch_add(&raw mut (*c).next_slot) } % u64::from(n_slots)) as u32,
            None => return Err(Event::BadTable),
        },
    };
    let dest_index = route.slots[bound(u64::from(slot), MAX_SLOTS as u64 - 1)] as usize;
    if dest_index >= route.n_dests as usize {
        return Err(Event::BadTable);
    }
    let dest_index = bound(dest_index as u64, MAX_DESTS as u64 - 1);
    let dest = &route.dests[dest_index];
    let n = u32::from(dest.n_backends);
    if n == 0 {
        return Err(Event::NoEndpoint);
    }
    let k = match dest.endpoint_select {
        select::RANDOM => (unsafe { bpf_get_prandom_u32() }) % n,
        select::SOURCE_HASH => source_hash([hash, 0x5bd1_e995, 0, 0]) % n,
        _ => match cursor {
            Some(c) => {
                let next = unsafe { fetch_add(&raw mut (*c).next_backend[dest_index]) };
                (next % u64::from(n)) as u32
            }
            None => return Err(Event::BadTable),
        },
    };
    let index = u32::from(dest.first_backend) + k;
    if index >= route.n_backends {
        return Err(Event::BadTable);
    }
    Ok(&route.backends[bound(u64::from(index), MAX_BACKENDS as u64 - 1)])
}

#[inline(always)]
fn try_getpeername(ctx: &SockAddrContext, family: Family) -> Event {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: values are plain data written whole by connect.
    let Some(orig) = (unsafe { TS_ORIG_DST.get(&cookie) }) else {
        return Event::PeerUntouched;
    };
    let sa = ctx.sock_addr;
    unsafe {
        match family {
            Family::V4 => {
                if orig.family != FAMILY_V4 {
                    return Event::PeerUntouched;
                }
                (*sa).user_ip4 = orig.addr[0];
            }
            Family::V6 => {
                if orig.family == FAMILY_V4 {
                    (*sa).user_ip6[0] = 0;
                    (*sa).user_ip6[1] = 0;
                    (*sa).user_ip6[2] = V4_MAPPED_WORD2;
                    (*sa).user_ip6[3] = orig.addr[0];
                } else if orig.family == FAMILY_V6 {
                    (*sa).user_ip6[0] = orig.addr[0];
                    (*sa).user_ip6[1] = orig.addr[1];
                    (*sa).user_ip6[2] = orig.addr[2];
                    (*sa).user_ip6[3] = orig.addr[3];
                } else {
                    return Event::PeerUntouched;
                }
            }
        }
        (*sa).user_port = u32::from(orig.port);
    }
    Event::PeerRestored
}
