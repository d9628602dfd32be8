#!/usr/bin/env python3
"""Folds `perf script` output (call graphs) and prints a per-stage cost table.

usage: perf script -i DATA --no-inline -F comm,tid,ip,sym,dso \
         | stages.py FOLDED_OUT TITLE [L7_LATEST_JSON MODE] > table.md

(bench/profile/l7-perf.sh records DATA while `cargo xtask bench --only l7` runs.)

Each sample is charged to one stage: a kernel or allocator stage by its own
(leaf) function, another kernel function by the nearest kernel stage below it;
else the user-space stage of the innermost frame that names one (a sample in
hyper's parser called from the proxy's handler is hyper's).
"""
import re
import sys
from collections import Counter

folded_out, title = sys.argv[1], sys.argv[2]
# Optional: the run's l7-latest.json and the mode (`keep-alive` or
# `Connection: close`): the mesh row's CPU µs per request on http-echo
# (`proxy_cpu_us_per_request`) gives each stage's share in µs.
per_request = None
if len(sys.argv) > 4:
    import json
    for row in json.load(open(sys.argv[3]))["rows"]:
        if (row.get("contender") == "traffic-shift L7 mesh"
                and row.get("backends") == "http-echo"
                and row.get("requests") == sys.argv[4]):
            per_request = row["proxy_cpu_us_per_request"]

stacks = Counter()
frames = []
comm = None
for line in sys.stdin:
    line = line.rstrip("\n")
    if not line.strip():
        if frames:
            stacks[(comm, tuple(reversed(frames)))] += 1
        frames = []
        comm = None
        continue
    if not line.startswith((" ", "\t")):
        comm = line.split()[0]
        continue
    parts = line.strip().split(None, 1)
    if len(parts) < 2:
        continue
    sym = parts[1]
    sym = re.sub(r"\s*\(([^()]*)\)$", lambda m: "" , sym)  # drop the dso
    sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
    sym = re.sub(r"::h[0-9a-f]{16}$", "", sym)
    frames.append(sym or "[unknown]")
if frames:
    stacks[(comm, tuple(reversed(frames)))] += 1

with open(folded_out, "w") as f:
    for (c, st), n in stacks.items():
        f.write(";".join([c or "?"] + [s.replace(";", ":") for s in st]) + f" {n}\n")

total = sum(stacks.values())

# (stage, where, pattern): where "leaf" = the sample's own frame (self time),
# "any" = any frame of the stack (inclusive, user-space stages).
LEAF_RULES = [
    ("kernel: waking a peer (sock_def_readable, try_to_wake_up, ep_poll_callback)",
     r"^(try_to_wake_up|__wake_up|sock_def_readable|ep_poll_callback|__wake_up_common|_raw_spin_unlock_irqrestore)"),
    ("kernel: scheduler, context switches",
     r"^(__schedule|schedule|finish_task_switch|pick_next|__switch_to|switch_mm|update_curr|dequeue_|enqueue_|psi_|__update_load|update_load|set_next_entity|put_prev)"),
    ("kernel: TCP and loopback (send, receive, ACK)",
     r"^(tcp_|__tcp|ip_|__ip|ipv4_|inet_|loopback_|__netif|netif_|__dev_queue|dev_hard|sk_|__sk|skb_|__skb|kfree_skb|__kfree_skb|__alloc_skb|net_rx|process_backlog|__napi|napi_|validate_xmit|nf_|release_sock|lock_sock|__release_sock|sock_|__sock|copy_user|_copy_|copyin|copyout|rep_movs|__check_object|check_heap|memcg|mod_memcg|__mod_|refill_stock|consume_stock|page_counter)"),
    ("kernel: epoll", r"^(ep_|do_epoll|__x64_sys_epoll)"),
    ("kernel: futex", r"^(futex|__futex)"),
    ("kernel: BPF programs", r"^(bpf_|__bpf|htab_|sock_map)"),
    ("kernel: syscall entry and exit",
     r"^(entry_SYSCALL|do_syscall|syscall_exit|syscall_return|__x64_sys|exit_to_user|__rseq|rseq_|fpregs|switch_fpu|restore_fpregs|srso_|retbleed|__pfx|x64_sys_call|syscall_enter)"),
    ("allocator (malloc, free)", r"^(malloc|free|cfree|_int_malloc|_int_free|realloc|__libc_malloc|__libc_free|_int_realloc|tcache|malloc_consolidate|__memalign|aligned_alloc|unlink_chunk|__rust_alloc|__rust_dealloc|__rdl_)"),
    ("memcpy, memmove, memset", r"^(__memmove|__memcpy|memcpy|memmove|__memset|memset)"),
]
ANY_RULES = [
    ("user: upstream client (hyper-util legacy Client or http1 pool)",
     r"(hyper_util::client::legacy|traffic_shift_proxy::http1|hyper::client::)"),
    ("user: hyper HTTP/1.1 parse and encode", r"hyper::proto::h1::(role|io|decode|encode)"),
    ("user: hyper HTTP/1.1 connection state (dispatch)", r"hyper::proto::h1::(dispatch|conn)"),
    ("user: tokio runtime (scheduling, wakers, timers)", r"^tokio::(runtime|sync|time|task)"),
    ("user: the proxy's own code (route, selection, headers, metrics, forward)",
     r"traffic_shift_proxy::"),
    ("user: http crate (header maps, URIs)", r"^http::"),
]

kernel_syms = re.compile(r"^[a-z_0-9.]+$")
rows = Counter()
for (c, st), n in stacks.items():
    leaf = st[-1] if st else "[unknown]"
    stage = None
    for name, pat in LEAF_RULES:
        if re.search(pat, leaf):
            stage = name
            break
    if stage is None and kernel_syms.match(leaf) and not leaf.startswith(("malloc", "free")):
        # Another kernel function: charged to the nearest kernel stage below it.
        for frame in reversed(st):
            for name, pat in LEAF_RULES[:7]:
                if re.search(pat, frame):
                    stage = name
                    break
            if stage:
                break
        stage = stage or "kernel: other"
    if stage is None:
        # The innermost frame that names a stage: a sample in hyper's parser
        # called from our request handler is hyper's.
        for frame in reversed(st):
            for name, pat in ANY_RULES:
                if re.search(pat, frame):
                    stage = name
                    break
            if stage:
                break
    rows[stage or "user: other"] += n

print(f"### {title}\n")
print(f"{total} samples of the agent's threads (perf -F 999, 3 s).\n")
if per_request is None:
    print("| stage | samples | share |")
    print("|---|---:|---:|")
else:
    print(f"| stage | samples | share | µs per request (of {per_request:.1f}) |")
    print("|---|---:|---:|---:|")
for name, n in rows.most_common():
    us = "" if per_request is None else f" {per_request * n / total:.1f} |"
    print(f"| {name} | {n} | {100.0 * n / total:.1f}% |{us}")
print()
# The heaviest leaf functions, for what the stages hide.
leaves = Counter()
for (c, st), n in stacks.items():
    leaves[st[-1] if st else "[unknown]"] += n
print("Heaviest functions (self time):\n")
print("| function | share |")
print("|---|---:|")
for name, n in leaves.most_common(25):
    print(f"| `{name[:110]}` | {100.0 * n / total:.1f}% |")
print()

callers = Counter()
for (c, st), n in stacks.items():
    if st and st[-1].startswith("_raw_spin_unlock_irq"):
        parent = next((f for f in reversed(st[:-1]) if not f.startswith("_raw_spin")), "?")
        callers[parent] += n
if callers:
    print("`_raw_spin_unlock_irqrestore` (where a VM's guest takes the interrupts held while a lock was held) by caller:\n")
    print("| caller | share of all samples |")
    print("|---|---:|")
    for name, n in callers.most_common(8):
        print(f"| `{name[:100]}` | {100.0 * n / total:.1f}% |")
    print()
