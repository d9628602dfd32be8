//! What can go wrong loading, attaching and writing the datapath.

use std::path::PathBuf;

use aya::{maps::MapError, programs::ProgramError};

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "{path} is not a bpffs mount; run `mount -t bpf bpf /sys/fs/bpf` (cargo xtask setup does it)"
    )]
    NoBpffs { path: PathBuf },
    #[error("cannot use pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another traffic-shift agent holds {path}; stop it, or give this one its own --bpffs directory"
    )]
    Busy { path: PathBuf },
    #[error(
        "cannot open network namespace {path}: {source}; pass a netns file with --netns (e.g. /var/run/netns/NAME)"
    )]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open cgroup {path}: {source}; pass a cgroup v2 directory with --cgroup")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "loading the kernel programs failed (are you root, on a kernel >= 5.18 with BTF?): {0}"
    )]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("reading the open connections' bytes (sock_diag on the --netns namespace): {source}")]
    OpenBytes {
        #[source]
        source: std::io::Error,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("map {name}: cannot map it into memory: {source}")]
    Mmap {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("pinned link of {name} at {path}: {source}")]
    Link {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pinning {name} at {path}: {source}")]
    Pin {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("cannot count the possible CPUs ({what}): {source}")]
    Cpus {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no free route id: {loaded} routes loaded")]
    NoRouteId { loaded: usize },
    #[error(
        "--xdp-iface {iface}: {source}; name an interface of the --netns namespace (`ip link` there lists them)"
    )]
    XdpIface {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--xdp-iface {iface}: IPv4 forwarding is off there, and the XDP gateway forwards packets (bpf_fib_lookup refuses otherwise); turn it on in the --netns namespace: sysctl -w net.ipv4.conf.all.forwarding=1"
    )]
    XdpForwardingOff { iface: String },
    #[error("attaching the XDP gateway to {iface}: {source}")]
    XdpAttach {
        iface: String,
        #[source]
        source: std::io::Error,
    },
}
