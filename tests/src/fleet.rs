//! A fleet for the tests: a real etcd cluster ([`crate::etcd`]) and agents
//! that take their rules from it, each a whole [`Scenario`] of its own
//! (network namespace, cgroup, bpffs directory, state directory, admin
//! socket, metrics port, tcp-echo backends and client).

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use crate::{
    Scenario,
    etcd::{EtcdCluster, Tls},
    forwarder::Forwarder,
    traffic_shift_bin,
};

/// One line of `traffic-shift get nodes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    pub name: String,
    pub revision: i64,
    pub state: String,
}

pub struct Fleet {
    /// Dropped first: the agents stop before etcd does.
    pub nodes: Vec<Scenario>,
    /// With [`Fleet::start_forwarded`]: node `i` reaches etcd through
    /// `forwarders[i]` only, so a test can cut it off alone.
    pub forwarders: Vec<Forwarder>,
    pub etcd: EtcdCluster,
    pub prefix: String,
}

impl Fleet {
    /// A 3-member etcd cluster and `n` agents named `node-0`.. on it (tcp-echo
    /// backends, empty rules directories), once every node has reported.
    pub fn start(test: &str, n: usize) -> Self {
        crate::require_root();
        Self::start_on(test, n, EtcdCluster::start(test, 3))
    }

    /// `n` agents on `etcd`; with a TLS etcd, they and [`Fleet::ctl`] use
    /// the CA and the client certificate.
    pub fn start_on(test: &str, n: usize, etcd: EtcdCluster) -> Self {
        Self::start_with(test, n, etcd, false)
    }

    /// [`Fleet::start`], each agent reaching etcd through a [`Forwarder`]
    /// of its own.
    pub fn start_forwarded(test: &str, n: usize) -> Self {
        crate::require_root();
        Self::start_with(test, n, EtcdCluster::start(test, 3), true)
    }

    fn start_with(test: &str, n: usize, etcd: EtcdCluster, forwarded: bool) -> Self {
        crate::require_root();
        let prefix = format!("/{}", crate::unique_name(test));
        let ports: Vec<u16> = etcd.members.iter().map(|m| m.client_port).collect();
        let forwarders: Vec<Forwarder> = if forwarded {
            assert!(etcd.tls.is_none(), "the forwarders are for a plain etcd");
            (0..n).map(|_| Forwarder::start(&ports)).collect()
        } else {
            Vec::new()
        };
        let tls: Vec<String> = etcd.tls.iter().flat_map(Tls::client_args).collect();
        let nodes = (0..n)
            .map(|i| {
                let node = format!("node-{i}");
                let url = forwarders.get(i).map_or_else(|| etcd.url(), Forwarder::url);
                let mut args = vec!["--store", &url, "--store-prefix", &prefix, "--node", &node];
                args.extend(tls.iter().map(String::as_str));
                Scenario::tcp_echo_backends(&format!("{test}-{i}"), &args)
            })
            .collect();
        let fleet = Self {
            nodes,
            forwarders,
            etcd,
            prefix,
        };
        fleet.wait_nodes(n);
        fleet
    }

    /// An etcd cluster alone (no agent): for what the CLI does with the store.
    pub fn store_only(test: &str) -> Self {
        crate::require_root();
        let etcd = EtcdCluster::start(test, 3);
        Self {
            nodes: Vec::new(),
            forwarders: Vec::new(),
            etcd,
            prefix: format!("/{}", crate::unique_name(test)),
        }
    }

    /// `traffic-shift ARGS --store URL --store-prefix PREFIX`, not waited for.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(traffic_shift_bin());
        cmd.args(args)
            .args(["--store", &self.etcd.url(), "--store-prefix", &self.prefix])
            .args(self.etcd.tls.iter().flat_map(Tls::client_args));
        cmd
    }

    /// `traffic-shift ARGS --store URL --store-prefix PREFIX`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run traffic-shift")
    }

    /// `get nodes`, parsed.
    pub fn nodes_table(&self) -> Vec<NodeRow> {
        let out = self.ctl(&["get", "nodes"]);
        assert!(
            out.status.success(),
            "get nodes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .map(|line| {
                let cells: Vec<&str> = line.split_whitespace().collect();
                NodeRow {
                    name: cells[0].to_owned(),
                    revision: cells[1].parse().expect("REVISION is a number"),
                    state: cells[2].to_owned(),
                }
            })
            .collect()
    }

    /// Waits (up to 30 s) until `n` nodes report to the store.
    pub fn wait_nodes(&self, n: usize) -> Vec<NodeRow> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rows = self.nodes_table();
            if rows.len() == n && rows.iter().all(|r| r.state == "accepted") {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "{n} nodes never all reported accepted: {rows:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every agent's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, s)| format!("--- agent node-{i} ---\n{}", s.agent.log_text()))
            .collect::<Vec<_>>()
            .concat()
    }
}
