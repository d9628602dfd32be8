//! An HTTP request head routed by the L7 proxy's rules (match, virtual host, rewrite).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| traffic_shift_agent::fuzzing::http_route(data));
