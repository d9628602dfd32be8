//! `sock_ops` (same cgroup as connect): counts, per endpoint, the
//! connections traffic-shift routed: opened, established, failed (refused,
//! timed out, other), closed, and their bytes.
//!
//! Only routed connections are followed: connect4/6 leave a `ConnState` on
//! the client's socket, and `sk_lookup` leaves the gateway flow's pick in
//! `TS_GATEWAY_FLOWS`, moved onto the accepted socket here. The state and
//! RTO callbacks are switched on for those sockets alone, so other sockets
//! pay one program run per connection event. Nothing runs per packet or
//! per ACK: the bytes are added here at close; while a connection is open,
//! the agent reads them with sock_diag when it reads the counters.

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_RTO_CB, BPF_SOCK_OPS_RTO_CB_FLAG, BPF_SOCK_OPS_STATE_CB,
        BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_TCP_CLOSE, BPF_TCP_CLOSE_WAIT,
        BPF_TCP_CLOSING, BPF_TCP_FIN_WAIT1, BPF_TCP_FIN_WAIT2, BPF_TCP_LAST_ACK, BPF_TCP_SYN_SENT,
        bpf_sock_ops,
    },
    macros::sock_ops,
    programs::SockOpsContext,
};
use aya_log_ebpf::debug;
use traffic_shift_common::{
    ConnState, EndpointStats, Event, FAMILY_V4, FAMILY_V6, FlowKey, ServiceKey, addr_from_words,
    conn_flags,
};

use crate::maps::{TS_GATEWAY_FLOWS, TS_PROXY_FLOWS, TS_STATS, add, conn_state, count, touch};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
/// `::ffff:0:0/96`, the IPv4-mapped prefix, word 2 in network order.
const V4_MAPPED_WORD2: u32 = 0x0000_ffff_u32.to_be();

#[sock_ops]
pub fn ts_sock_ops(ctx: SockOpsContext) -> u32 {
    if let Some(event) = try_sock_ops(&ctx) {
        count(event);
    }
    // The return value only matters for the callbacks that ask for a reply.
    1
}

#[inline(always)]
fn try_sock_ops(ctx: &SockOpsContext) -> Option<Event> {
    let ops = ctx.ops;
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            let state = conn_state(sk(ops), None);
            if state.is_null() {
                return None;
            }
            if unsafe { (*state).flags } & conn_flags::PROXIED != 0 {
                return proxy_handoff(ctx, state);
            }
            // Failures are seen at the state change, timeouts at the RTO;
            // set here once for the connection's whole life (the handshake
            // does not set them again).
            let _ =
                ctx.set_cb_flags((BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG) as i32);
            let stats = stats(state)?;
            add(unsafe { &raw mut (*stats).opened }, 1);
            Some(Event::ConnTracked)
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => {
            let state = routed(ops)?;
            established(ctx, state);
            None
        }
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            let flow = flow_key(ctx)?;
            // SAFETY: values are plain data written whole by sk_lookup.
            let stat_id = *unsafe { TS_GATEWAY_FLOWS.get(&flow) }?;
            let _ = TS_GATEWAY_FLOWS.remove(&flow);
            let init = ConnState {
                reported_request: 0,
                reported_response: 0,
                reserved: 0,
                addr: [0; 16],
                port: 0,
                family: 0,
                flags: conn_flags::GATEWAY,
                stat_id,
                route_id: 0,
                pad: 0,
            };
            let state = conn_state(sk(ops), Some(&init));
            if state.is_null() {
                return Some(Event::SockOpsNoStorage);
            }
            let Some(stats) = stats(state) else {
                return Some(Event::BadStatId);
            };
            add(unsafe { &raw mut (*stats).opened }, 1);
            established(ctx, state);
            // The close (and the bytes then) is seen at the state change.
            let _ =
                ctx.set_cb_flags((BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTO_CB_FLAG) as i32);
            Some(Event::ConnTracked)
        }
        BPF_SOCK_OPS_RTO_CB => {
            // args: retransmits, rto, and whether the retries ran out.
            if ctx.arg(2) != 0 {
                let state = routed(ops)?;
                unsafe { (*state).flags |= conn_flags::TIMED_OUT };
            }
            None
        }
        BPF_SOCK_OPS_STATE_CB => {
            // args: old state, new state. Every socket ends in CLOSE (a
            // TIME_WAIT one on its way there), exactly once.
            let (old, new) = (ctx.arg(0), ctx.arg(1));
            let mut seen = 0;
            if new == BPF_TCP_CLOSE_WAIT
                || new == BPF_TCP_CLOSING
                // FIN_WAIT1/2 end in CLOSE through TIME_WAIT when the peer's
                // FIN arrives (or, rarely, on a reset or the FIN_WAIT2 timeout).
                || (new == BPF_TCP_CLOSE && (old == BPF_TCP_FIN_WAIT1 || old == BPF_TCP_FIN_WAIT2))
            {
                seen |= conn_flags::PEER_FIN;
            }
            if new == BPF_TCP_FIN_WAIT1 || new == BPF_TCP_LAST_ACK || new == BPF_TCP_CLOSING {
                seen |= conn_flags::OUR_FIN;
            }
            // Any other change short of the close (to ESTABLISHED, to
            // FIN_WAIT2) tells nothing: done before the socket's state is
            // even looked up.
            if seen == 0 && new != BPF_TCP_CLOSE {
                return None;
            }
            let state = routed(ops)?;
            let flags = unsafe { (*state).flags } | seen;
            unsafe { (*state).flags = flags };
            if new != BPF_TCP_CLOSE || flags & conn_flags::CLOSED != 0 {
                return None;
            }
            unsafe { (*state).flags = flags | conn_flags::CLOSED };
            let stats = stats(state)?;
            if ctx.arg(0) == BPF_TCP_SYN_SENT {
                // A reset is a segment received; a timeout ran the RTO out;
                // anything else (an ICMP error, the client gave up) is other.
                let segs_in = unsafe { (*ops).segs_in };
                let (reason, name) = if flags & conn_flags::TIMED_OUT != 0 {
                    (unsafe { &raw mut (*stats).failed_timeout }, "timeout")
                } else if segs_in > 0 {
                    (unsafe { &raw mut (*stats).failed_refused }, "refused")
                } else {
                    (unsafe { &raw mut (*stats).failed_other }, "other")
                };
                add(reason, 1);
                debug!(
                    ctx,
                    "sock_ops: connect failed ({}), stat {}",
                    name,
                    unsafe { (*state).stat_id }
                );
            } else {
                report_bytes(ops, stats, state);
            }
            add(unsafe { &raw mut (*stats).closed }, 1);
            None
        }
        _ => None,
    }
}

/// The socket of a full-socket callback.
#[inline(always)]
fn sk(ops: *mut bpf_sock_ops) -> *mut aya_ebpf::bindings::bpf_sock {
    // SAFETY: the context pointer is valid for the program run.
    unsafe { (*ops).__bindgen_anon_2.sk }
}

/// The connection state of a routed socket; `None` for any other socket,
/// and for one sent to the L7 proxy (the proxy counts requests).
#[inline(always)]
fn routed(ops: *mut bpf_sock_ops) -> Option<*mut ConnState> {
    let state = conn_state(sk(ops), None);
    // SAFETY: non-null storage is valid for the program run.
    (!state.is_null() && unsafe { (*state).flags } & conn_flags::PROXIED == 0).then_some(state)
}

/// A connect to the L7 proxy is starting (its source port is bound): the
/// proxy will look the service address up by this 4-tuple when it accepts.
#[inline(always)]
fn proxy_handoff(ctx: &SockOpsContext, state: *mut ConnState) -> Option<Event> {
    let flow = flow_key(ctx)?;
    // SAFETY: non-null storage is valid for the program run.
    let service = unsafe {
        ServiceKey {
            addr: (*state).addr,
            port: (*state).port,
            family: (*state).family,
            pad: 0,
        }
    };
    let _ = TS_PROXY_FLOWS.insert(&flow, &service, 0);
    Some(Event::ProxyHandoff)
}

/// This CPU's counters of the connection's endpoint.
#[inline(always)]
fn stats(state: *mut ConnState) -> Option<*mut EndpointStats> {
    // SAFETY: non-null storage is valid for the program run.
    let id = unsafe { (*state).stat_id };
    // The map's size is set at load time (--max-counters): it bounds the id.
    let stats = TS_STATS.get_ptr_mut(id);
    touch(id);
    if stats.is_none() {
        count(Event::BadStatId);
    }
    stats
}

/// Counts the handshake; the bytes are counted from the byte counters as
/// they are now: the SYNs they include are not data. The baseline is
/// written before the flag the agent's reading of open connections wants.
#[inline(always)]
fn established(ctx: &SockOpsContext, state: *mut ConnState) {
    let (request, response) = moved(ctx.ops, state);
    unsafe {
        (*state).reported_request = request;
        (*state).reported_response = response;
        (*state).flags |= conn_flags::ESTABLISHED;
    }
    if let Some(stats) = stats(state) {
        add(unsafe { &raw mut (*stats).established }, 1);
    }
}

/// (request, response) sequence space moved so far: the client's bytes
/// acked are the request and its bytes received the response; on the
/// server side of a gateway connection it is the other way round. The
/// kernel's counters include the FINs (one each): taken out once seen.
#[inline(always)]
fn moved(ops: *mut bpf_sock_ops, state: *mut ConnState) -> (u64, u64) {
    // SAFETY: full-socket callback; the context and storage are valid.
    let (mut acked, mut received, flags, una, nxt) = unsafe {
        (
            (*ops).bytes_acked,
            (*ops).bytes_received,
            (*state).flags,
            (*ops).snd_una,
            (*ops).snd_nxt,
        )
    };
    // Our FIN is in bytes_acked once everything we sent is acknowledged.
    if flags & conn_flags::OUR_FIN != 0 && una == nxt {
        acked = acked.saturating_sub(1);
    }
    if flags & conn_flags::PEER_FIN != 0 {
        received = received.saturating_sub(1);
    }
    if flags & conn_flags::GATEWAY != 0 {
        (received, acked)
    } else {
        (acked, received)
    }
}

/// Adds the bytes moved since the handshake, at close.
#[inline(always)]
fn report_bytes(ops: *mut bpf_sock_ops, stats: *mut EndpointStats, state: *mut ConnState) {
    let (request, response) = moved(ops, state);
    unsafe {
        add(
            &raw mut (*stats).request_bytes,
            request.saturating_sub((*state).reported_request),
        );
        add(
            &raw mut (*stats).response_bytes,
            response.saturating_sub((*state).reported_response),
        );
    }
}

/// The socket's 4-tuple, local and remote as this socket sees them (for an
/// accepted socket, as `sk_lookup` keyed it): IPv4 (also when a dual-stack
/// socket uses it IPv4-mapped) in word 0, network order.
#[inline(always)]
fn flow_key(ctx: &SockOpsContext) -> Option<FlowKey> {
    // local_port is in host order; remote_port holds the network-order port
    // in its upper 16 bits (see KERNEL-NOTES).
    let local_port = (ctx.local_port() as u16).to_be();
    let remote_port = (u32::from_be(ctx.remote_port()) as u16).to_be();
    let (local, remote, family) = match ctx.family() {
        AF_INET => (
            [ctx.local_ip4(), 0, 0, 0],
            [ctx.remote_ip4(), 0, 0, 0],
            FAMILY_V4,
        ),
        AF_INET6 => {
            let local = ctx.local_ip6();
            let remote = ctx.remote_ip6();
            if local[0] == 0 && local[1] == 0 && local[2] == V4_MAPPED_WORD2 {
                ([local[3], 0, 0, 0], [remote[3], 0, 0, 0], FAMILY_V4)
            } else {
                (local, remote, FAMILY_V6)
            }
        }
        _ => return None,
    };
    Some(FlowKey {
        local: addr_from_words(local),
        remote: addr_from_words(remote),
        local_port,
        remote_port,
        family,
        pad: [0; 3],
    })
}
