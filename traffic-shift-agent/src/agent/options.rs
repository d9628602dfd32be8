//! `traffic-shift run`'s options.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use traffic_shift_datapath::{BpfLogLevel, compile};

use crate::admin;

/// Where `traffic-shift run` keeps its status and `traffic-shift status`
/// reads it, unless told otherwise.
pub const DEFAULT_STATUS_FILE: &str = "/run/traffic-shift/status.json";

/// `traffic-shift run`'s options.
#[derive(Debug, clap::Args)]
pub struct AgentOptions {
    /// Directory of Istio YAML files (*.yaml, *.yml; not recursive). Example: `rules/tcp-echo`.
    /// Required unless --store is given.
    #[arg(long, value_name = "DIR", required_unless_present = "store")]
    pub rules: Option<PathBuf>,
    /// The Gateway API `gatewayClassName` this agent serves, as a
    /// controller owns a GatewayClass: Gateways of other classes are
    /// ignored (not refused), and so are routes' references to them.
    /// Example: `--gateway-class istio`.
    #[arg(long, value_name = "NAME", default_value = traffic_shift_config::SERVED_GATEWAY_CLASS)]
    pub gateway_class: String,
    /// Take rules from the fleet's etcd too (list, then watch; each etcd
    /// revision put in force whole), and report this node's status there.
    /// Example: `etcd://10.0.0.1:2379,10.0.0.2:2379`.
    #[arg(
        long,
        value_name = "etcd://HOST:PORT[,...]",
        env = "TRAFFIC_SHIFT_STORE"
    )]
    pub store: Option<traffic_shift_store::StoreUrl>,
    /// The prefix of the fleet's keys in etcd.
    #[arg(long, value_name = "PREFIX", default_value = traffic_shift_store::DEFAULT_PREFIX, requires = "store")]
    pub store_prefix: String,
    #[command(flatten)]
    pub store_tls: StoreTlsArgs,
    /// This node's name in the store (`traffic-shift get nodes`). Default: the host name.
    #[arg(long, value_name = "NAME", requires = "store")]
    pub node: Option<String>,
    /// This node's labels, which Gateway `selector`s match (as Istio's pick
    /// gateway pods): a Gateway whose selector is not among them is not
    /// served here (its ports not bound, its routes not loaded); mesh
    /// routes apply on every node. Without it selectors are not applied:
    /// every Gateway is served. Example: `zone=a,istio=ingressgateway`.
    #[arg(
        long,
        value_name = "KEY=VALUE[,...]",
        env = "TRAFFIC_SHIFT_NODE_LABELS"
    )]
    pub node_labels: Option<traffic_shift_config::NodeLabels>,
    /// The namespace of this node's workloads: the agent is their proxy,
    /// and sees the VirtualServices and DestinationRules as Istio's proxy
    /// in that namespace sees them (their `exportTo`: a rule private to
    /// another namespace does not apply here). Without it every rule
    /// applies. Example: `bookinfo`.
    #[arg(long, value_name = "NAMESPACE", env = "TRAFFIC_SHIFT_NAMESPACE")]
    pub namespace: Option<String>,
    /// cgroup v2 directory whose processes get the routing (and all its
    /// descendants). Default: the cgroup v2 root, i.e. every process on the node.
    /// Example: `/sys/fs/cgroup/unified/my-app`.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Where the maps are pinned (inside a bpffs mount); one agent per directory.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/traffic-shift")]
    pub bpffs: PathBuf,
    /// The network namespace whose incoming connections the gateway
    /// (sk_lookup) routes, as a file. Default: the agent's own.
    /// Example: `/var/run/netns/node`.
    #[arg(long, value_name = "PATH", default_value = "/proc/self/ns/net")]
    pub netns: PathBuf,
    /// Interfaces (of the --netns namespace) where the XDP gateway serves
    /// gateway routes whose endpoints are on other hosts: packet-level load
    /// balancing with conntrack and NAT. Repeat or separate with commas.
    /// Without it such routes are refused. Example: `--xdp-iface eth0`.
    #[arg(long, value_name = "IFACE", value_delimiter = ',')]
    pub xdp_iface: Vec<String>,
    /// The source ports the XDP gateway gives its flows toward endpoints
    /// (source NAT to the node's address), LOW-HIGH, both included. Keep
    /// it clear of the node's ephemeral range (net.ipv4.ip_local_port_range,
    /// 32768-60999 by default): a port in both could meet a connection of
    /// the node's own. Example: `--xdp-snat-ports 50000-59999`.
    #[arg(long, value_name = "LOW-HIGH", default_value = "61000-65535")]
    pub xdp_snat_ports: traffic_shift_datapath::SnatPorts,
    /// Where the agent keeps its status for `traffic-shift status` (JSON,
    /// replaced whole on every change).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_STATUS_FILE)]
    pub status_file: PathBuf,
    /// Append one JSON line per file applied or refused (for scripts and
    /// tests). Example: `/run/traffic-shift/events.jsonl`.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Where `/metrics` (Prometheus) is served. Loopback only by default;
    /// port 0 picks a free port (the status file says which).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15090")]
    pub metrics_addr: SocketAddr,
    /// The most verbose kernel log lines (aya-log) passed to the log
    /// output; fixed when the programs load, so disabled levels cost nothing.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub bpf_log_level: BpfLogLevel,
    /// On Ctrl-C/SIGTERM, detach the programs and remove every pin (as
    /// `traffic-shift unload`). Without it the datapath stays pinned and
    /// keeps steering new connections while no agent runs; the next agent
    /// on the same --bpffs adopts it without a gap.
    #[arg(long)]
    pub unload_on_exit: bool,
    #[command(flatten)]
    pub health: crate::health::HealthOptions,
    #[command(flatten)]
    pub limits: traffic_shift_datapath::limits::Limits,
    /// Close the connections routed to an endpoint this long after it left
    /// the rules (found in the --netns namespace; the log says how many).
    /// Default: never, they finish on their own.
    #[arg(long, value_name = "DURATION", value_parser = crate::health::parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// Where `traffic-shift apply|delete|get|version` reach the agent: a
    /// Unix socket the agent creates, mode 0600, root only.
    #[arg(long, value_name = "PATH", default_value = admin::DEFAULT_SOCKET)]
    pub admin_socket: PathBuf,
    /// Where the resources applied with `traffic-shift apply` are kept
    /// (`applied.yaml`), to be restored when the agent starts again. One
    /// agent per directory.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/traffic-shift")]
    pub state_dir: PathBuf,
    /// The port where the L7 proxy takes connections to HTTP service
    /// addresses (the connect-time hook sends them there), on 127.0.0.1
    /// and ::1 in the --netns namespace. Default: Istio's outbound port.
    #[arg(long, value_name = "PORT", default_value_t = compile::ProxyAddrs::DEFAULT_PORT)]
    pub proxy_port: u16,
    /// The L7 proxy's replay buffer per request, in bytes (Envoy's
    /// `per_request_buffer_limit_bytes`): a request whose route retries or
    /// mirrors keeps its body up to this to send it again. A longer body
    /// still streams to its endpoint, but is neither retried nor mirrored,
    /// and `traffic_shift_http_retry_buffer_overflow_total` counts it.
    #[arg(long, value_name = "BYTES", default_value_t = traffic_shift_proxy::Options::default().buffer_limit_bytes)]
    pub http_buffer_limit: usize,
    /// Fault injection for the tests (built with the `failpoints` feature
    /// only): `NAME=ACTIONS` in the `fail` crate's syntax, e.g.
    /// `l7-prepare=1*off->return` (the first L7 step passes, later ones fail).
    #[cfg(feature = "failpoints")]
    #[arg(long, value_name = "NAME=ACTIONS", hide = true)]
    pub failpoint: Vec<String>,
}

/// `--store-ca`, `--store-cert`, `--store-key`: TLS to etcd (`etcds://`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct StoreTlsArgs {
    /// With an `etcds://` store: the CA (PEM) that signed etcd's server certificate.
    #[arg(
        long,
        value_name = "FILE",
        env = "TRAFFIC_SHIFT_STORE_CA",
        requires = "store"
    )]
    pub store_ca: Option<PathBuf>,
    /// With an `etcds://` store: this client's certificate (PEM), for an
    /// etcd started with --client-cert-auth. Goes with --store-key.
    #[arg(
        long,
        value_name = "FILE",
        env = "TRAFFIC_SHIFT_STORE_CERT",
        requires = "store"
    )]
    pub store_cert: Option<PathBuf>,
    /// The private key (PEM) of --store-cert.
    #[arg(
        long,
        value_name = "FILE",
        env = "TRAFFIC_SHIFT_STORE_KEY",
        requires = "store"
    )]
    pub store_key: Option<PathBuf>,
}

impl StoreTlsArgs {
    pub fn files(&self) -> traffic_shift_store::TlsFiles {
        traffic_shift_store::TlsFiles {
            ca: self.store_ca.clone(),
            cert: self.store_cert.clone(),
            key: self.store_key.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser as _;

    use super::AgentOptions;

    #[derive(clap::Parser)]
    struct Run {
        #[command(flatten)]
        options: AgentOptions,
    }

    fn parse(args: &[&str]) -> Result<AgentOptions, clap::Error> {
        Run::try_parse_from(std::iter::once("run").chain(args.iter().copied())).map(|r| r.options)
    }

    /// The shipped tcp-echo rules (the Gateway selects
    /// `istio: ingressgateway`) as a node with these options serves them:
    /// its gateway routes.
    fn gateway_routes(options: &AgentOptions) -> usize {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/tcp-echo");
        let (files, errors) = traffic_shift_config::load_dir(&dir);
        assert!(errors.is_empty(), "{errors:?}");
        let model = traffic_shift_config::resolve(&files).expect("the seeds resolve");
        let (model, _) = model.for_node(options.node_labels.as_ref());
        model.routes.iter().filter(|r| r.gateway.is_some()).count()
    }

    /// Backward compatibility: a node run without `--node-labels` serves
    /// the seeds' Gateway as before, whatever its selector.
    #[test]
    fn without_node_labels_every_gateway_is_served() {
        let options = parse(&["--rules", "rules/tcp-echo"]).unwrap();
        assert_eq!(options.node_labels, None);
        assert_eq!(gateway_routes(&options), 1);
    }

    #[test]
    fn with_node_labels_the_selector_decides() {
        let unselected = parse(&["--rules", "r", "--node-labels", "zone=b"]).unwrap();
        assert_eq!(gateway_routes(&unselected), 0);
        let selected = parse(&[
            "--rules",
            "r",
            "--node-labels",
            "zone=a,istio=ingressgateway",
        ])
        .unwrap();
        assert_eq!(gateway_routes(&selected), 1);
    }

    #[test]
    fn bad_node_labels_are_refused_in_one_line() {
        let error = parse(&["--rules", "r", "--node-labels", "zone"])
            .unwrap_err()
            .to_string();
        let first = error.lines().next().unwrap();
        assert!(
            first.contains("--node-labels")
                && first.contains("node label \"zone\" is not key=value"),
            "{error}"
        );
    }
}
