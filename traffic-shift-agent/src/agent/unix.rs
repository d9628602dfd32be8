//! Gateway servers bound to unix sockets (`bind: unix://<path>`, port 0):
//! the sockets, and who serves each.
//!
//! Neither kernel path takes a unix socket, so the agent listens on it: a
//! TCP server's route is served by the proxy crate's
//! [`Splice`](traffic_shift_proxy::Splice) (each connection picks an
//! endpoint with the route's weights, exactly as the L7 proxy picks, and
//! bytes are copied both ways), an HTTP server's listener by the L7 proxy.
//!
//! A socket is bound before the rules that need it go in force (a path that
//! cannot be bound refuses the change, the previous rules stay). A stale
//! socket file (nobody listens) is replaced; a live one, or a file that is
//! not a socket, refuses the change. The file is removed when no rule needs
//! it any more, and when the agent stops. `@name` is a socket in the
//! abstract namespace of the agent's `--netns` (no file).

use std::{
    collections::BTreeMap,
    os::unix::{
        fs::FileTypeExt as _,
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::{runtime::Runtime, task::JoinHandle};
use traffic_shift_config::model::{RoutingModel, TcpRoute};
use traffic_shift_datapath::netns::run_in;
use traffic_shift_proxy::{Proxy, Splice};

use super::error::L7Error;

/// What serves a unix socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A TCP route, by key.
    Tcp(String),
    /// An L7 proxy gateway listener, by key.
    Http(String),
}

impl Owner {
    fn key(&self) -> &str {
        match self {
            Self::Tcp(key) | Self::Http(key) => key,
        }
    }
}

/// A socket being served.
struct Open {
    owner: Owner,
    listener: Arc<tokio::net::UnixListener>,
    task: JoinHandle<()>,
}

/// The unix sockets a rules change needs, bound but not served yet.
pub struct UnixPlan {
    /// Sockets bound for rules not yet in force (by path).
    bound: Vec<(String, UnixListener)>,
    /// Every socket the rules need, and what serves it.
    wanted: BTreeMap<String, Owner>,
    /// The TCP routes served on them.
    routes: Vec<TcpRoute>,
}

impl Drop for UnixPlan {
    /// A plan that was not committed (the change was refused after the
    /// sockets were bound) leaves no file behind.
    fn drop(&mut self) {
        for (path, _) in &self.bound {
            remove_socket_file(path);
        }
    }
}

/// The gateway servers on unix sockets.
pub struct UnixSockets {
    splice: Arc<Splice>,
    netns: PathBuf,
    open: BTreeMap<String, Open>,
}

impl UnixSockets {
    pub fn new(netns: &Path, connect_timeout: std::time::Duration) -> Self {
        Self {
            splice: Splice::new(connect_timeout),
            netns: netns.to_owned(),
            open: BTreeMap::new(),
        }
    }

    /// Everything of a rules change that can fail here, serving nothing
    /// yet: the sockets `model` needs that are not open, bound; the TCP
    /// routes of `usable` (the model without the endpoints health took
    /// out) kept for [`Self::commit`].
    pub fn prepare(
        &self,
        model: &RoutingModel,
        usable: &RoutingModel,
    ) -> Result<UnixPlan, L7Error> {
        let wanted = wanted(model)?;
        let mut plan = UnixPlan {
            bound: Vec::new(),
            wanted,
            routes: unix_routes(usable),
        };
        for (path, owner) in &plan.wanted {
            if self.open.contains_key(path) {
                continue;
            }
            let listener = bind(&self.netns, path).map_err(|source| L7Error::Unix {
                listener: owner.key().to_owned(),
                path: path.clone(),
                source,
            })?;
            plan.bound.push((path.clone(), listener));
        }
        Ok(plan)
    }

    /// Endpoint health changed: the TCP routes of `usable` from now on.
    pub fn update(&self, usable: &RoutingModel) {
        self.splice.update(&unix_routes(usable));
    }

    /// The rules in force changed: serves the sockets [`Self::prepare`]
    /// bound, moves those whose owner changed, and closes (and removes) the
    /// ones no longer needed. Cannot fail: it runs after the kernel took
    /// the change.
    pub fn commit(&mut self, mut plan: UnixPlan, runtime: &Runtime, proxy: &Arc<Proxy>) {
        self.splice.update(&plan.routes);
        let wanted = std::mem::take(&mut plan.wanted);
        self.open.retain(|path, open| {
            let keep = wanted.contains_key(path);
            if !keep {
                open.task.abort();
                remove_socket_file(path);
                tracing::info!(path = %path, owner = %open.owner.key(), "unix gateway socket closed");
            }
            keep
        });
        let serve = |owner: &Owner, listener: &Arc<tokio::net::UnixListener>| match owner {
            Owner::Tcp(key) => {
                runtime.spawn(Arc::clone(&self.splice).serve(Arc::clone(listener), key.clone()))
            }
            Owner::Http(key) => runtime
                .spawn(Arc::clone(proxy).serve_gateway_unix(Arc::clone(listener), key.clone())),
        };
        let mut moved = Vec::new();
        for (path, open) in &self.open {
            if wanted.get(path) != Some(&open.owner) {
                moved.push(path.clone());
            }
        }
        for path in moved {
            let open = self.open.get_mut(&path).expect("listed above");
            let owner = wanted[&path].clone();
            open.task.abort();
            open.task = serve(&owner, &open.listener);
            tracing::info!(path = %path, from = %open.owner.key(), to = %owner.key(), "unix gateway socket served by another rule");
            open.owner = owner;
        }
        for (path, listener) in std::mem::take(&mut plan.bound) {
            let listener = {
                let _runtime = runtime.enter();
                tokio::net::UnixListener::from_std(listener)
            };
            match listener {
                Ok(listener) => {
                    let owner = wanted[&path].clone();
                    let listener = Arc::new(listener);
                    let task = serve(&owner, &listener);
                    tracing::info!(path = %path, owner = %owner.key(), "unix gateway socket open");
                    self.open.insert(
                        path,
                        Open {
                            owner,
                            listener,
                            task,
                        },
                    );
                }
                Err(err) => {
                    remove_socket_file(&path);
                    tracing::error!(path = %path, %err, "cannot serve a unix gateway socket");
                }
            }
        }
    }
}

impl UnixSockets {
    /// The TCP routes' splicer (its counts are the metrics').
    pub fn splice(&self) -> Arc<Splice> {
        Arc::clone(&self.splice)
    }

    /// Connections opened per TCP route and endpoint, since each route came
    /// in (kept across changes while it stays).
    pub fn connections(&self) -> BTreeMap<String, BTreeMap<std::net::SocketAddr, u64>> {
        self.splice.connections()
    }
}

impl Drop for UnixSockets {
    /// The agent stops: its socket files go with it.
    fn drop(&mut self) {
        for (path, open) in &self.open {
            open.task.abort();
            remove_socket_file(path);
        }
    }
}

/// The TCP routes of `model` served in user space by the splicer: on unix
/// sockets, and the TLS passthrough routes chosen by SNI
/// ([`tls`](super::tls) accepts their connections).
fn unix_routes(model: &RoutingModel) -> Vec<TcpRoute> {
    model
        .routes
        .iter()
        .filter(|r| r.is_user_space())
        .cloned()
        .collect()
}

/// Every unix socket of `model` and what serves it; one owner per socket.
fn wanted(model: &RoutingModel) -> Result<BTreeMap<String, Owner>, L7Error> {
    let tcp = model
        .routes
        .iter()
        .flat_map(|r| r.unix.iter().map(|p| (p, Owner::Tcp(r.key.clone()))));
    let http = model
        .http
        .iter()
        .flat_map(|l| l.unix.iter().map(|p| (p, Owner::Http(l.key.clone()))));
    let mut wanted = BTreeMap::new();
    for (path, owner) in tcp.chain(http) {
        if let Some(first) = wanted.insert(path.clone(), owner.clone()) {
            return Err(L7Error::UnixConflict {
                path: path.clone(),
                first: first.key().to_owned(),
                second: owner.key().to_owned(),
            });
        }
    }
    Ok(wanted)
}

/// A listening unix socket at `path` (`@name`: in the abstract namespace
/// of `netns`), non-blocking. A stale socket file is replaced; a socket
/// someone listens on, or a file of another kind, is an error.
fn bind(netns: &Path, path: &str) -> std::io::Result<UnixListener> {
    let listener = if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt as _;
        run_in(netns, || {
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            UnixListener::bind_addr(&addr)
        })?
    } else {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        "another process listens on it; stop it, or bind the Gateway server to \
                         another path",
                    ));
                }
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path, "replacing a stale unix socket file");
                    std::fs::remove_file(path)?;
                }
                Err(err) => return Err(err),
            },
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the file exists and is not a socket; remove it, or bind the Gateway server \
                     to another path",
                ));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        UnixListener::bind(path)?
    };
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Removes the socket file at `path` (not an abstract one), if it is still
/// a socket.
fn remove_socket_file(path: &str) {
    if path.starts_with('@') {
        return;
    }
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket && let Err(err) = std::fs::remove_file(path) {
        tracing::warn!(path, %err, "cannot remove a unix gateway socket file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ts-unix-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    const NETNS: &str = "/proc/self/ns/net";

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_or_a_file_refused() {
        let dir = temp("bind");
        let path = dir.join("gw.sock");
        let path_str = path.to_str().expect("utf-8");
        let first = bind(Path::new(NETNS), path_str).expect("a new socket");
        let live = bind(Path::new(NETNS), path_str).expect_err("someone listens on it");
        assert_eq!(live.kind(), std::io::ErrorKind::AddrInUse, "{live}");
        drop(first);
        // The file stays when its listener is gone: stale, replaced.
        assert!(path.exists(), "a closed listener leaves its file");
        let _again = bind(Path::new(NETNS), path_str).expect("a stale socket file is replaced");

        let file = dir.join("not-a-socket");
        std::fs::write(&file, "data").expect("write");
        let err = bind(Path::new(NETNS), file.to_str().expect("utf-8")).expect_err("a plain file");
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&file).expect("kept"),
            "data",
            "never removed"
        );

        let missing = dir.join("no-such-dir/gw.sock");
        let err = bind(Path::new(NETNS), missing.to_str().expect("utf-8")).expect_err("no dir");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_abstract_socket_has_no_file() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("@ts-unix-abstract-{}", std::process::id());
        let listener = bind(Path::new(NETNS), &name).expect("an abstract socket");
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name.as_bytes()[1..])
            .expect("an abstract address");
        UnixStream::connect_addr(&addr).expect("connect to it");
        assert!(!Path::new(&name).exists(), "no file named {name}");
        remove_socket_file(&name);
        drop(listener);
    }

    #[test]
    fn two_owners_of_one_socket_are_refused() {
        use traffic_shift_config::model::{HttpListener, TcpRoute};
        let route = |key: &str, path: &str| TcpRoute {
            key: key.into(),
            source: std::path::Path::new("rules/gw.yaml").into(),
            gateway: Some("default/gw".into()),
            service_host: "tcp-echo.local".into(),
            service_port: 0,
            listeners: Vec::new(),
            unix: vec![path.into()],
            sni: Vec::new(),
            prefixes: Vec::new(),
            selection: traffic_shift_config::model::Selection::Smooth,
            destinations: Vec::new(),
        };
        let listener = |key: &str, path: &str| HttpListener {
            tls: None,
            key: key.into(),
            gateway: Some("default/gw".into()),
            port: 0,
            listeners: Vec::new(),
            unix: vec![path.into()],
            prefixes: Vec::new(),
            virtual_hosts: Vec::new(),
        };
        let model = RoutingModel {
            routes: vec![route("tcp a", "/run/a.sock"), route("tcp b", "/run/b.sock")],
            http: vec![listener("http c", "/run/c.sock")],
            ..RoutingModel::default()
        };
        let owners = wanted(&model).expect("three sockets, three owners");
        assert_eq!(owners["/run/c.sock"], Owner::Http("http c".into()));
        let model = RoutingModel {
            http: vec![listener("http c", "/run/a.sock")],
            ..model
        };
        let err = wanted(&model).expect_err("two owners of /run/a.sock");
        assert_eq!(
            err.to_string(),
            "tcp a and http c both listen on unix socket /run/a.sock: one server per socket; \
             bind one of the Gateway servers to another path"
        );
    }

    #[test]
    fn an_uncommitted_plan_leaves_no_file() {
        let dir = temp("plan");
        let path = dir.join("gw.sock");
        let path_str = path.to_str().expect("utf-8").to_owned();
        let listener = bind(Path::new(NETNS), &path_str).expect("bind");
        let plan = UnixPlan {
            bound: vec![(path_str, listener)],
            wanted: BTreeMap::new(),
            routes: Vec::new(),
        };
        assert!(path.exists());
        drop(plan);
        assert!(
            !path.exists(),
            "the refused change's socket file is removed"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
