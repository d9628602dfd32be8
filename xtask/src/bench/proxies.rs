//! The user-space proxies compared against: haproxy, nginx and Envoy (configured as
//! Istio configures it), installed when missing, configured for the TCP scenarios
//! here and for the HTTP ones by `http.rs`, and started in the bench's namespace.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::Result;

use super::{
    guards::{Netns, Processes},
    http,
    tcp::Contender,
};
use crate::{cmd, setup};

pub const HAPROXY_ADDR: &str = "127.0.0.1:19100";
pub const NGINX_ADDR: &str = "127.0.0.1:19101";
pub const ENVOY_ADDR: &str = "127.0.0.1:19102";
/// haproxy's `balance random` split of tcp-echo (scenario 4).
pub const HAPROXY_RANDOM_ADDR: &str = "127.0.0.1:19103";
pub const HAPROXY_STREAM_ADDR: &str = "127.0.0.1:19110";
pub const NGINX_STREAM_ADDR: &str = "127.0.0.1:19111";
pub const ENVOY_STREAM_ADDR: &str = "127.0.0.1:19112";

/// A service the rules and every proxy split 80/20 between a v1 and a v2 port of 127.0.0.1.
pub struct Split {
    /// Proxy config names (haproxy frontend/backend, nginx upstream, Envoy listener).
    pub name: &'static str,
    /// The ServiceEntry host and port (Envoy's cluster names, as Istio makes them).
    pub host: &'static str,
    pub port: u16,
    pub v1: u16,
    pub v2: u16,
}

/// Scenario 1's backends: the two tcp-echo servers (rules/tcp-echo).
pub const ECHO: Split = Split {
    name: "tcp_echo",
    host: "tcp-echo.local",
    port: 9000,
    v1: 19001,
    v2: 19002,
};

/// Scenario 2's backends: two `ts-bench --sink` receivers (bench/rules/bulk-sink.yaml).
pub const SINK: Split = Split {
    name: "bulk_sink",
    host: "bulk-sink.local",
    port: 9100,
    v1: 19201,
    v2: 19202,
};

/// Worker threads (processes for nginx) of every user-space proxy.
pub const PROXY_THREADS: u32 = 2;

/// The user-space proxies found, and those left out with the reason.
#[derive(Default)]
pub struct Proxies {
    pub haproxy: Option<PathBuf>,
    pub nginx: Option<PathBuf>,
    pub envoy: Option<PathBuf>,
    pub skipped: Vec<(&'static str, String)>,
}

/// Installs haproxy, nginx and wrk when missing ([`install_native`]), and finds or
/// installs Envoy (next to `bin`, the release directory); the proxies found, and
/// those left out with the reason (printed).
pub fn install(bin: &Path) -> Proxies {
    let mut proxies = install_native();
    match setup::envoy(bin.parent().expect("target/release has a parent")) {
        Ok(envoy) => {
            let version = setup::envoy_version(&envoy).unwrap_or_else(|| "?".into());
            println!("bench: envoy {version}: {}", envoy.display());
            proxies.envoy = Some(envoy);
        }
        Err(why) => {
            println!("bench: contender left out: envoy: {why}");
            proxies.skipped.push(("envoy", why));
        }
    }
    proxies
}

/// Installs haproxy and nginx (stream module) if missing; `None` with the reason printed
/// when one is not available: that contender is skipped, the bench goes on. Also wrk,
/// scenario 3's check of the load client (without it, that row is left out).
fn install_native() -> Proxies {
    if cmd::find_program("wrk").is_none() {
        println!("bench: installing wrk (to check the HTTP load client against)");
        if let Err(e) = cmd::run(
            Command::new("apt-get")
                .args(["install", "-y", "wrk"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        ) {
            eprintln!("bench: {e:#}");
        }
    }
    let find = || (cmd::find_program("haproxy"), cmd::find_program("nginx"));
    let (h, n) = find();
    if h.is_some() && n.is_some() {
        return Proxies {
            haproxy: h,
            nginx: n,
            ..Proxies::default()
        };
    }
    println!("bench: installing haproxy and nginx-full (the user-space proxies compared against)");
    if let Err(e) = cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "haproxy", "nginx-full"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    ) {
        eprintln!("bench: {e:#}");
    }
    let (h, n) = find();
    let mut skipped = Vec::new();
    for (name, found) in [("haproxy", h.is_some()), ("nginx", n.is_some())] {
        if !found {
            let why = "not installed and `apt-get install` failed".to_owned();
            println!("bench: contender left out: {name}: {why}");
            skipped.push((name, why));
        }
    }
    Proxies {
        haproxy: h,
        nginx: n,
        envoy: None,
        skipped,
    }
}

/// The names of the proxies among `contenders`.
pub fn names(contenders: &[Contender]) -> Vec<&'static str> {
    contenders
        .iter()
        .map(|c| c.name)
        .filter(|n| ["haproxy", "nginx", "envoy"].contains(n))
        .collect()
}

/// Starts the proxies `found` in the namespace (configs and logs in `tmp`), each one
/// a contender of scenarios 1 and 2.
pub fn start(
    found: &Proxies,
    tmp: &Path,
    netns: &Netns,
    envoy_log: &Path,
    procs: &mut Processes,
    contenders: &mut Vec<Contender>,
) -> Result<()> {
    if let Some(haproxy) = found.haproxy.as_ref() {
        let cfg = tmp.join("haproxy.cfg");
        fs::write(&cfg, haproxy_config())?;
        let mut c = netns.exec(haproxy);
        c.arg("-db").arg("-f").arg(&cfg).stdout(Stdio::null());
        procs.spawn("haproxy", &mut c)?;
        contenders.push(Contender {
            name: "haproxy",
            target: HAPROXY_ADDR,
            stream_target: HAPROXY_STREAM_ADDR,
            in_cgroup: false,
        });
    }
    if let Some(nginx) = found.nginx.as_ref() {
        let cfg = tmp.join("nginx.conf");
        fs::write(&cfg, nginx_config(tmp))?;
        let mut c = netns.exec(nginx);
        c.arg("-p")
            .arg(tmp)
            .arg("-e")
            .arg(tmp.join("nginx-error.log"))
            .arg("-c")
            .arg(&cfg)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null());
        procs.spawn("nginx", &mut c)?;
        contenders.push(Contender {
            name: "nginx",
            target: NGINX_ADDR,
            stream_target: NGINX_STREAM_ADDR,
            in_cgroup: false,
        });
    }
    if let Some(envoy) = found.envoy.as_ref() {
        let cfg = tmp.join("envoy.yaml");
        fs::write(&cfg, envoy_config())?;
        let mut c = netns.exec(envoy);
        c.arg("--config-path")
            .arg(&cfg)
            .args(["--concurrency", &PROXY_THREADS.to_string()])
            .args(["--disable-hot-restart", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(fs::File::create(envoy_log)?);
        procs.spawn("envoy", &mut c)?;
        contenders.push(Contender {
            name: "envoy",
            target: ENVOY_ADDR,
            stream_target: ENVOY_STREAM_ADDR,
            in_cgroup: false,
        });
    }
    Ok(())
}

fn haproxy_config() -> String {
    let mut cfg = format!(
        "global\n    nbthread {PROXY_THREADS}\n    maxconn 4096\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n"
    );
    for (split, listen) in [(ECHO, HAPROXY_ADDR), (SINK, HAPROXY_STREAM_ADDR)] {
        let Split { name, v1, v2, .. } = split;
        let _ = write!(
            cfg,
            "frontend {name}\n    bind {listen}\n    default_backend {name}\n\
             backend {name}\n    balance roundrobin\n    \
             server v1 127.0.0.1:{v1} weight 80\n    server v2 127.0.0.1:{v2} weight 20\n"
        );
    }
    let Split { v1, v2, .. } = ECHO;
    let _ = write!(
        cfg,
        "frontend tcp_echo_random\n    bind {HAPROXY_RANDOM_ADDR}\n    default_backend tcp_echo_random\n\
         backend tcp_echo_random\n    balance random\n    \
         server v1 127.0.0.1:{v1} weight 80\n    server v2 127.0.0.1:{v2} weight 20\n"
    );
    cfg.push_str(&http::haproxy_config());
    cfg
}

fn nginx_config(path: &Path) -> String {
    let dir = path.display();
    let mut cfg = format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
         worker_processes {PROXY_THREADS};\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log warn;\n\
         events {{ worker_connections 4096; }}\nstream {{\n"
    );
    for (split, listen) in [(ECHO, NGINX_ADDR), (SINK, NGINX_STREAM_ADDR)] {
        let Split { name, v1, v2, .. } = split;
        let _ = write!(
            cfg,
            "    upstream {name} {{\n        server 127.0.0.1:{v1} weight=80;\n        \
             server 127.0.0.1:{v2} weight=20;\n    }}\n    \
             server {{\n        listen {listen};\n        proxy_pass {name};\n    }}\n"
        );
    }
    cfg.push_str("}\n");
    cfg.push_str(&http::nginx_config(path));
    cfg
}

/// Envoy as Istio programs it for a TCP route with an 80/20 split: a listener whose
/// `tcp_proxy` filter picks one of two clusters per connection by `weighted_clusters`,
/// clusters named `outbound|<port>|<subset>|<host>`, each with its one static endpoint,
/// and circuit-breaker limits raised to Istio's (Envoy's default is 1024 connections).
fn envoy_config() -> String {
    let mut listeners = String::new();
    let mut clusters = String::new();
    for (split, listen) in [(ECHO, ENVOY_ADDR), (SINK, ENVOY_STREAM_ADDR)] {
        let Split {
            name,
            host,
            port,
            v1,
            v2,
        } = split;
        let (address, listen_port) = listen.split_once(':').expect("host:port");
        let _ = write!(
            listeners,
            "  - name: {name}\n    address:\n      socket_address: \
             {{address: {address}, port_value: {listen_port}}}\n    filter_chains:\n    - filters:\n      \
             - name: envoy.filters.network.tcp_proxy\n        typed_config:\n          \
             \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          \
             stat_prefix: \"outbound|{port}||{host}\"\n          weighted_clusters:\n            clusters:\n            \
             - {{name: \"outbound|{port}|v1|{host}\", weight: 80}}\n            \
             - {{name: \"outbound|{port}|v2|{host}\", weight: 20}}\n"
        );
        for (subset, endpoint) in [("v1", v1), ("v2", v2)] {
            clusters.push_str(&envoy_cluster(
                &format!("outbound|{port}|{subset}|{host}"),
                endpoint,
            ));
        }
    }
    let (http_listeners, http_clusters) = http::envoy_config();
    listeners.push_str(&http_listeners);
    clusters.push_str(&http_clusters);
    format!("static_resources:\n  listeners:\n{listeners}  clusters:\n{clusters}")
}

/// One cluster as Istio makes it for a subset: static, its one endpoint on 127.0.0.1,
/// circuit-breaker limits raised to Istio's (Envoy's default is 1024 connections).
pub fn envoy_cluster(name: &str, endpoint: u16) -> String {
    format!(
        "  - name: \"{name}\"\n    type: STATIC\n    connect_timeout: 10s\n    \
         circuit_breakers:\n      thresholds:\n      - max_connections: 4294967295\n        \
         max_pending_requests: 4294967295\n        max_requests: 4294967295\n        max_retries: 4294967295\n    \
         load_assignment:\n      cluster_name: \"{name}\"\n      endpoints:\n      \
         - lb_endpoints:\n        - endpoint:\n            address:\n              socket_address: \
         {{address: 127.0.0.1, port_value: {endpoint}}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::envoy_config;

    #[test]
    fn envoy_splits_each_service_80_20_over_istio_named_clusters() {
        let cfg = envoy_config();
        for host in ["tcp-echo.local", "bulk-sink.local"] {
            for (subset, weight) in [("v1", 80), ("v2", 20)] {
                let name = format!(
                    "outbound|{}|{subset}|{host}",
                    if host == "tcp-echo.local" { 9000 } else { 9100 }
                );
                assert!(
                    cfg.contains(&format!("{{name: \"{name}\", weight: {weight}}}")),
                    "a weighted_clusters entry {name} weight {weight} expected in:\n{cfg}"
                );
                assert!(
                    cfg.contains(&format!("  - name: \"{name}\"\n    type: STATIC")),
                    "a cluster {name} expected in:\n{cfg}"
                );
            }
        }
    }
}
