//! Harness for the end-to-end tests: every test gets its own network
//! namespace, child cgroup, bpffs pin directory, demo backends and agent,
//! all behind guards that clean up on drop, panics included.
//!
//! The binaries under test come from `TRAFFIC_SHIFT_BIN` and `TCP_ECHO_BIN`
//! (`cargo xtask test` sets them), else from the target directory next to
//! this test executable.
//!
//! - [`netns`]: network namespaces, and a remote client joined by a veth pair;
//! - [`cgroup`]: the child cgroup the agent attaches to;
//! - [`process`]: processes killed on drop, and the demo backends;
//! - [`agent`]: the agent under test and the waits on its events, status and metrics;
//! - [`client`]: the test client `ts-client`, and a plain HTTP GET;
//! - [`grpc`]: the `grpc-echo` backend and the gRPC client of `ts-client`;
//! - [`scenario`]: all of the above for one test, from the shipped examples;
//! - [`exposition`]: reading samples from a `/metrics` page;
//! - [`etcd`]: a real etcd cluster on loopback; [`fleet`]: etcd and several agents;
//!   [`forwarder`]: a TCP forwarder that cuts one agent off from etcd;
//! - [`prometheus`] runs a real Prometheus server for the metrics tests;
//!   [`dashboard`] turns the Grafana dashboard into the queries it sends;
//! - [`rollout`]: an agent's rollouts, and the wait on them;
//! - [`tls`]: certificates made by openssl, rustls clients and servers on them;
//! - [`bpf`]: bpftool's view of the agent's programs and maps, the kernel's run counts;
//! - [`xdp_cost`]: the XDP gateway's time per packet (`ts-xdp-cost`, for the bench).

pub mod agent;
pub mod bpf;
pub mod cgroup;
pub mod client;
pub mod dashboard;
pub mod etcd;
pub mod exposition;
pub mod fleet;
pub mod forwarder;
pub mod grpc;
pub mod http_client;
pub mod netns;
pub mod process;
pub mod prometheus;
pub mod rollout;
pub mod scenario;
pub mod tls;
pub mod xdp_cost;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

pub use agent::{Agent, TimedWrite};
pub use bpf::{BpfStats, bpftool};
pub use cgroup::Cgroup;
pub use client::{Client, GrpcCalls, Streamed, http_get};
pub use exposition::{metric, try_metric};
pub use netns::{NODE_ADDR, Netns, REMOTE_CLIENT_ADDR, RemoteClient};
pub use process::{Process, echo_backend, grpc_backend, http_backend};
pub use scenario::{
    SERVICE_V4, SERVICE_V6, Scenario, bookinfo_rule, repo_rules, rule, tcp_echo_rule,
};

/// Panics with a clear message unless running as root: these tests attach
/// eBPF programs and create namespaces; they never skip.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the end-to-end tests attach eBPF programs and create network namespaces: run them as root (`sudo cargo xtask test`)"
    );
}

/// A unique name for this test's resources: `ts-test-<test>-<pid>`.
pub fn unique_name(test: &str) -> String {
    format!("ts-test-{test}-{}", std::process::id())
}

pub(crate) fn binary(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>/<name>
    let exe = std::env::current_exe().expect("current exe");
    let candidate = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name));
    match candidate {
        Some(path) if path.exists() => path,
        _ => panic!(
            "{name} not found: set {var} or run the tests with `cargo xtask test`, which builds it"
        ),
    }
}

/// Runs the `traffic-shift` binary under test with `args`.
pub fn traffic_shift(args: &[&str]) -> std::process::Output {
    Command::new(traffic_shift_bin())
        .args(args)
        .output()
        .expect("run traffic-shift")
}

/// The `traffic-shift` binary under test.
pub fn traffic_shift_bin() -> PathBuf {
    binary("TRAFFIC_SHIFT_BIN", "traffic-shift")
}

/// Build B of the agent for the upgrade test: other kernel bytecode, the
/// same maps (`cargo xtask test` builds it, see its `upgrade_build_b`).
pub fn traffic_shift_bin_b() -> PathBuf {
    binary("TRAFFIC_SHIFT_BIN_B", "build-b/traffic-shift")
}

pub(crate) fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `CLOCK_MONOTONIC` in nanoseconds, the clock of `ts-client`'s `stream`:
/// one clock for every process on the host.
pub fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(now.tv_sec).expect("monotonic time is positive");
    let nanos = u64::try_from(now.tv_nsec).expect("nanoseconds are positive");
    secs * 1_000_000_000 + nanos
}
