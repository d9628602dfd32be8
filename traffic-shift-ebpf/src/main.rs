//! traffic-shift kernel programs.
//!
//! | file | hook | minimum kernel |
//! |---|---|---|
//! | `connect.rs` | cgroup `connect4`/`connect6`, `getpeername4`/`getpeername6` | 5.8 (getpeername hooks; `bpf_set_retval` 5.18) |
//! | `sk_lookup.rs` | `sk_lookup`, per network namespace | 5.9 |
//! | `sock_ops.rs` | `sock_ops` on the connect cgroup: per-endpoint connection and byte counters | 5.10 (`bpf_sk_storage_get` from sock_addr) |
//! | `xdp.rs` | XDP on `--xdp-iface`: the gateway for endpoints on other hosts (conntrack, NAT, `bpf_fib_lookup`) | 6.7 (`BPF_FIB_LOOKUP_SRC`) |
//! | `select.rs` | backend selection shared by both | 5.12 (atomic fetch-add) |
//! | `splice.rs` (its own object, `traffic-shift-splice`) | `sk_skb` stream verdict on a `SOCKHASH`: TLS passthrough connections spliced | 4.18 |
//!
//! Every entry point is thin: it calls a `try_*` function that returns
//! `Result<Event, Event>`, counts the event in `TS_EVENTS` and returns an
//! explicit verdict.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod connect;
mod maps;
mod select;
mod sk_lookup;
mod sock_ops;
mod xdp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
