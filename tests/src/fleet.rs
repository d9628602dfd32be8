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
        Self::start_with(test, etcd, &vec![&[][..]; n], false)
    }

    /// One agent per entry of `extra` on `etcd`, node-`i` with `extra[i]`
    /// added to its `traffic-shift run` (e.g. `--node-labels zone=a`), as
    /// [`Fleet::start_on`].
    pub fn start_nodes(test: &str, etcd: EtcdCluster, extra: &[&[&str]]) -> Self {
        Self::start_with(test, etcd, extra, false)
    }

    /// [`Fleet::start`], each agent reaching etcd through a [`Forwarder`]
    /// of its own.
    pub fn start_forwarded(test: &str, n: usize) -> Self {
        crate::require_root();
        Self::start_with(test, EtcdCluster::start(test, 3), &vec![&[][..]; n], true)
    }

    fn start_with(test: &str, etcd: EtcdCluster, extra: &[&[&str]], forwarded: bool) -> Self {
        crate::require_root();
        let ports: Vec<u16> = etcd.members.iter().map(|m| m.client_port).collect();
        let forwarders: Vec<Forwarder> = if forwarded {
            assert!(etcd.tls.is_none(), "the forwarders are for a plain etcd");
            extra.iter().map(|_| Forwarder::start(&ports)).collect()
        } else {
            Vec::new()
        };
        let mut fleet = Self {
            nodes: Vec::new(),
            forwarders,
            etcd,
            prefix: format!("/{}", crate::unique_name(test)),
        };
        fleet.nodes = extra
            .iter()
            .enumerate()
            .map(|(i, extra)| {
                let mut args = fleet.agent_args(i);
                args.extend(extra.iter().map(|a| (*a).to_owned()));
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Scenario::tcp_echo_backends(&format!("{test}-{i}"), &args)
            })
            .collect();
        fleet.wait_nodes(extra.len());
        fleet
    }

    /// The store arguments of node `i`'s agent (`--store`, `--store-prefix`,
    /// `--node node-I`, and the TLS files of a TLS etcd).
    pub fn agent_args(&self, i: usize) -> Vec<String> {
        let url = self
            .forwarders
            .get(i)
            .map_or_else(|| self.etcd.url(), Forwarder::url);
        let mut args: Vec<String> = [
            "--store",
            &url,
            "--store-prefix",
            &self.prefix,
            "--node",
            &format!("node-{i}"),
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(self.etcd.tls.iter().flat_map(Tls::client_args));
        args
    }

    /// Stops node `i`'s agent and starts it again with the same arguments.
    pub fn restart_node(&mut self, i: usize) {
        let args = self.agent_args(i);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.nodes[i].agent.restart(&args);
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
