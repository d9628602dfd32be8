//! `sk_lookup` (kernel 5.9): the ingress gateway. A connection arriving in
//! this network namespace on a Gateway address:port is handed straight to
//! the listening socket of the endpoint its route picks: no proxy, no NAT,
//! the backend sees the client's own address.
//!
//! If the picked endpoint has no registered socket (its backend is
//! restarting), another endpoint of the same subset takes the connection; if
//! none has one, the SYN is answered with a reset (refused at once, never
//! left hanging). Anything else passes to the normal socket lookup.

use aya_ebpf::{
    bindings::{BPF_SK_LOOKUP_F_NO_REUSEPORT, sk_action},
    macros::sk_lookup,
    programs::SkLookupContext,
};
use traffic_shift_common::{
    Backend, Event, FAMILY_V4, FAMILY_V6, FlowKey, MAX_BACKENDS, ServiceKey, addr_from_ip4,
    addr_from_words,
};

use crate::{
    maps::{TS_GATEWAY_FLOWS, TS_GATEWAYS, TS_SOCKETS, count},
    select::{bound, route_and_pick},
};

const IPPROTO_TCP: u32 = 6;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

#[sk_lookup]
pub fn ts_sk_lookup(ctx: SkLookupContext) -> u32 {
    match try_sk_lookup(&ctx) {
        Ok(event) => {
            count(event);
            sk_action::SK_PASS
        }
        // SK_DROP makes the lookup fail with ECONNREFUSED: the SYN gets a reset.
        Err(event) => {
            count(event);
            sk_action::SK_DROP
        }
    }
}

#[inline(always)]
fn try_sk_lookup(ctx: &SkLookupContext) -> Result<Event, Event> {
    let l = ctx.lookup;
    // SAFETY: the context pointer is valid for the whole program run.
    if unsafe { (*l).protocol } != IPPROTO_TCP {
        return Ok(Event::GatewayPass);
    }
    // Each field read once, as its own load from the context pointer: the
    // verifier refuses a load through a derived pointer ("dereference of
    // modified ctx ptr R2 off=16 disallowed"), which LLVM produces when it
    // shares an address between the IPv4 and IPv6 branches.
    let field = |f: *const u32| unsafe { core::ptr::read_volatile(f) };
    // local_port is in host byte order here (unlike sock_addr's user_port).
    let port = (field(unsafe { &raw const (*l).local_port }) as u16).to_be();
    // remote_port is a network-order 16-bit field.
    // SAFETY: as above.
    let remote_port = unsafe { core::ptr::read_volatile(&raw const (*l).remote_port) };
    let (key, client) = match field(unsafe { &raw const (*l).family }) {
        AF_INET => (
            ServiceKey {
                addr: addr_from_ip4(field(unsafe { &raw const (*l).local_ip4 })),
                port,
                family: FAMILY_V4,
                pad: 0,
            },
            [field(unsafe { &raw const (*l).remote_ip4 }), 0, 0, 0],
        ),
        AF_INET6 => {
            let local = unsafe {
                [
                    field(&raw const (*l).local_ip6[0]),
                    field(&raw const (*l).local_ip6[1]),
                    field(&raw const (*l).local_ip6[2]),
                    field(&raw const (*l).local_ip6[3]),
                ]
            };
            let remote = unsafe {
                [
                    field(&raw const (*l).remote_ip6[0]),
                    field(&raw const (*l).remote_ip6[1]),
                    field(&raw const (*l).remote_ip6[2]),
                    field(&raw const (*l).remote_ip6[3]),
                ]
            };
            (
                ServiceKey {
                    addr: addr_from_words(local),
                    port,
                    family: FAMILY_V6,
                    pad: 0,
                },
                remote,
            )
        }
        _ => return Ok(Event::GatewayPass),
    };
    // The exact address first, then "any local address" of the family.
    let any = ServiceKey {
        addr: [0; 16],
        ..key
    };
    // SAFETY: entries are replaced, not written in place, by user space.
    let Some(gateway) = (unsafe { TS_GATEWAYS.get(&key).or_else(|| TS_GATEWAYS.get(&any)) }) else {
        return Ok(Event::GatewayPass);
    };
    let route_id = gateway.route_id;
    // sock_ops counts the accepted connection against the endpoint it got.
    let flow = FlowKey {
        local: key.addr,
        remote: addr_from_words(client),
        local_port: port,
        remote_port,
        family: key.family,
        pad: [0; 3],
    };
    let (route, picked) = match route_and_pick(route_id, client) {
        Ok(found) => found,
        Err(None) => return Ok(Event::GatewayNoRoute),
        Err(Some(_)) => return Err(Event::GatewayNoSocket),
    };
    if assign(ctx, picked.backend) {
        return Ok(remember(&flow, picked.backend, Event::GatewayAssigned));
    }
    // The picked endpoint has no socket: any registered one of the subset.
    let first = u64::from(picked.dest.first_backend);
    let n = u64::from(picked.dest.n_backends);
    for i in 0..MAX_BACKENDS as u64 {
        if i >= n {
            break;
        }
        let backend = &route.backends[bound(first + i, MAX_BACKENDS as u64 - 1)];
        if assign(ctx, backend) {
            return Ok(remember(&flow, backend, Event::GatewayFallback));
        }
    }
    Err(Event::GatewayNoSocket)
}

/// Remembers which endpoint the flow went to, for sock_ops; `event` unless
/// that fails.
#[inline(always)]
fn remember(flow: &FlowKey, backend: &Backend, event: Event) -> Event {
    match TS_GATEWAY_FLOWS.insert(flow, backend.stat_id, 0) {
        Ok(()) => event,
        Err(_) => Event::GatewayFlowFull,
    }
}

/// Hands the connection to `backend`'s listening socket, if registered.
/// `NO_REUSEPORT`: exactly this socket, not whatever its reuseport group picks.
#[inline(always)]
fn assign(ctx: &SkLookupContext, backend: &Backend) -> bool {
    let key = ServiceKey {
        addr: backend.addr,
        port: backend.port,
        family: backend.family,
        pad: 0,
    };
    TS_SOCKETS
        .redirect_sk_lookup(ctx, key, u64::from(BPF_SK_LOOKUP_F_NO_REUSEPORT))
        .is_ok()
}
