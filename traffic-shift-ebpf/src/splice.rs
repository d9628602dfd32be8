//! TLS passthrough connections spliced in the kernel (`sk_skb` stream
//! verdict, kernel >= 4.18 for `SOCKHASH`): a separate object
//! (`traffic-shift-splice`), loaded by the agent without pins, since its
//! sockets live only as long as the agent. User space picks the route by
//! SNI, connects to the endpoint, then puts the client's and the upstream's
//! sockets in `TS_SPLICE_SOCKS`, each keyed by its own socket cookie, and
//! each cookie's peer in `TS_SPLICE_PEERS`. Every segment that arrives on
//! one of them is redirected to the other's egress, without a copy to user
//! space.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::sk_action,
    helpers::bpf_get_socket_cookie,
    macros::{map, stream_verdict},
    maps::{HashMap, SockHash},
    programs::SkBuffContext,
};

/// The spliced sockets. Key: the socket's cookie (host order). Value: the
/// socket.
#[map]
static TS_SPLICE_SOCKS: SockHash<u64> = SockHash::with_max_entries(65_536, 0);

/// Key: a spliced socket's cookie. Value: its peer's cookie (the key of the
/// peer in `TS_SPLICE_SOCKS`).
#[map]
static TS_SPLICE_PEERS: HashMap<u64, u64> = HashMap::with_max_entries(65_536, 0);

/// Redirects the data of a spliced socket to its peer; a socket without a
/// peer (being set up or torn down) keeps its data (`SK_PASS`).
#[stream_verdict]
fn ts_splice_verdict(ctx: SkBuffContext) -> u32 {
    // SAFETY: the helper reads the socket of the skb the program was given.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    // SAFETY: a plain lookup; the value is copied out at once.
    match unsafe { TS_SPLICE_PEERS.get(&cookie) } {
        Some(peer) => {
            let mut key = *peer;
            // SK_PASS when redirected, SK_DROP when the peer is gone.
            TS_SPLICE_SOCKS.redirect_skb(&ctx, &mut key, 0) as u32
        }
        None => sk_action::SK_PASS,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
