//! A rules file as the agent reads, parses, validates and resolves it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| traffic_shift_agent::fuzzing::rules_file(data));
