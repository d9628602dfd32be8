//! What stops the agent, and what refuses a rules change.

use std::{net::SocketAddr, path::PathBuf};

use traffic_shift_config::ConfigError;
use traffic_shift_datapath::{DatapathError, compile::CompileError};

use crate::{admin, applied};

/// What stops the agent from starting (or running).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("cannot watch rules directory {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("{0}")]
    Store(#[source] traffic_shift_store::StoreError),
    #[error("rules directory {path}: {source}")]
    RulesDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no cgroup v2 mount found; mount one (mount -t cgroup2 none /sys/fs/cgroup) or pass --cgroup"
    )]
    NoCgroup2,
    #[error("cannot handle signals: {0}")]
    Signal(#[source] std::io::Error),
    #[error("cannot use network namespace {path} for health probes: {source}")]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}: {source}; pick another --metrics-addr")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the L7 proxy cannot listen on port {port} of 127.0.0.1 in {netns}: {source}; pick another --proxy-port"
    )]
    Proxy {
        port: u16,
        netns: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write events file {path}: {source}")]
    Events {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] applied::StateError),
    #[error(transparent)]
    RolloutState(#[from] crate::rollout::state::StateFileError),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    /// `--failpoint` (builds with the `failpoints` feature only).
    #[cfg(feature = "failpoints")]
    #[error("--failpoint: {0}")]
    Failpoint(String),
}

/// Why a rules change was refused. Nothing of it is in force: the checks
/// and everything that can fail run before the kernel is written, and the
/// proxy's new configuration is served only after the kernel took its part.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The rule set does not resolve (a host, subset or gateway missing, ...).
    #[error(transparent)]
    Resolve(#[from] ConfigError),
    #[error(transparent)]
    Install(#[from] InstallError),
}

/// Why a resolved model cannot be put in force on this node.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot list the addresses of {}: {source}", netns.display())]
    LocalAddresses {
        netns: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The model does not fit the kernel tables.
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    L7(#[from] L7Error),
    /// The kernel refused a write part-way (e.g. out of memory); the
    /// datapath's record of what it holds stays exact.
    #[error("kernel update failed: {0}")]
    Kernel(#[from] DatapathError),
    /// The applied set's state file could not be written: nothing changed.
    #[error("{0}; nothing was applied")]
    State(#[from] crate::applied::StateError),
}

/// Why the L7 proxy cannot take a rules change.
#[derive(Debug, thiserror::Error)]
pub enum L7Error {
    #[error(
        "{listener}: cannot listen on {addr}: {source}; free the port, or bind the Gateway server (of a Gateway API Gateway: its spec.addresses) to another address, one of this node"
    )]
    Bind {
        listener: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{listener}: cannot listen on unix socket {path}: {source}; the Gateway server's bind is unix://{path}"
    )]
    Unix {
        listener: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{first} and {second} both listen on unix socket {path}: one server per socket; bind one of the Gateway servers to another path"
    )]
    UnixConflict {
        path: String,
        first: String,
        second: String,
    },
    #[error("the L7 proxy refused the http rules: {0}")]
    Config(#[from] traffic_shift_proxy::RegexError),
    /// Injected by the `l7-prepare` failpoint (builds with `failpoints` only).
    #[cfg(feature = "failpoints")]
    #[error("the L7 proxy refused the http rules: {0} (failpoint l7-prepare)")]
    Injected(String),
}
