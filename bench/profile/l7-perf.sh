#!/bin/bash
# Profiles the bench's agent (the L7 proxy) while `cargo xtask bench --only l7` runs:
# perf with DWARF call graphs, 3 s during the third repetition's mesh row of
# keep-alive, then of `Connection: close` (on http-echo, the first pass).
#
#   cargo xtask bench --only l7 2> bench.err &
#   bench/profile/l7-perf.sh bench.err OUT_DIR
#   perf script -i OUT_DIR/keepalive.data --no-inline -F comm,tid,ip,sym,dso \
#     | bench/profile/stages.py OUT_DIR/keepalive.folded "keep-alive" > keepalive.md
#
# The folded stacks render as a flame graph with inferno (`cargo install inferno`,
# `inferno-flamegraph < OUT_DIR/keepalive.folded > keepalive.svg`).
set -eu
log=$1
out=$2
mkdir -p "$out"
wait_line() { while ! grep -q "$1" "$log"; do sleep 0.2; done; }
wait_line "rep 3/3 http keep-alive *direct "
# The agent of this bench run: its namespace is named after the bench's pid.
ns=$(grep -o "ts-bench-[0-9]*" "$log" | head -1)
pid=$(pgrep -n -f "traffic-shift run .*--netns /var/run/netns/$ns ")
perf record -F 999 --call-graph dwarf,32768 -p "$pid" -o "$out/keepalive.data" -- sleep 3
wait_line "rep 3/3 http Connection: close *direct "
perf record -F 999 --call-graph dwarf,32768 -p "$pid" -o "$out/close.data" -- sleep 3
