//! [`Scenario`]: everything one test needs (namespace, cgroup, backends,
//! rules directory, agent, client), built from the shipped examples in
//! `rules/`.

use std::path::{Path, PathBuf};

use crate::{
    agent::Agent,
    cgroup::Cgroup,
    client::Client,
    netns::Netns,
    process::{Process, echo_backend, grpc_backend, http_backend},
    require_root, unique_name,
};

/// Everything one test needs: namespace, cgroup, v1/v2 backends, rules
/// directory, agent and client. Drop order (fields in declaration order)
/// stops the client and agent before removing the cgroup and namespace.
pub struct Scenario {
    pub client: Client,
    pub agent: Agent,
    pub backends: Vec<Process>,
    pub cgroup: Cgroup,
    pub netns: Netns,
    pub rules_dir: PathBuf,
}

/// The repository's `rules/` directory.
pub fn repo_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules")
}

/// A file of the shipped tcp-echo example, e.g. `examples/vs-20-v2.yaml`.
pub fn tcp_echo_rule(file: &str) -> String {
    let path = repo_rules().join("tcp-echo").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A file of the shipped bookinfo example, e.g. `examples/vs-reviews-50-v3.yaml`.
pub fn bookinfo_rule(file: &str) -> String {
    let path = repo_rules().join("bookinfo").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A file of a shipped rules directory, e.g.
/// `rule("tcp-echo-gateway-api", "examples/tcp-route-20-v2.yaml")`.
pub fn rule(dir: &str, file: &str) -> String {
    let path = repo_rules().join(dir).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every rules file directly in the shipped `dir` (as the agent reads
/// them), with `files` added or replacing them.
fn shipped_with(dir: &str, files: &[(&str, &str)]) -> Vec<(String, String)> {
    let path = repo_rules().join(dir);
    let mut names: Vec<String> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|entry| entry.expect("rules entry").path())
        .filter(|path| traffic_shift_config::is_rules_file(path))
        .map(|path| {
            path.file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    let mut all: Vec<(String, String)> = names
        .into_iter()
        .map(|name| {
            let text = rule(dir, &name);
            (name, text)
        })
        .collect();
    for (file, text) in files {
        all.retain(|(f, _)| f != file);
        all.push(((*file).to_owned(), (*text).to_owned()));
    }
    all
}

impl Scenario {
    /// The tcp-echo backends (as [`Scenario::tcp_echo`]) and the shipped
    /// rules directory `dir` (`tcp-echo-gateway-api`), with `files` added
    /// or replacing its files.
    pub fn tcp_echo_dir(test: &str, dir: &str, files: &[(&str, &str)]) -> Self {
        let all = shipped_with(dir, files);
        let all: Vec<(&str, String)> = all.iter().map(|(f, t)| (f.as_str(), t.clone())).collect();
        Self::build(test, &all, &[])
    }

    /// The reviews backends (as [`Scenario::bookinfo`]) and the shipped
    /// rules directory `dir` (`bookinfo-gateway-api`), with `files` added
    /// or replacing its files.
    pub fn bookinfo_dir(test: &str, dir: &str, files: &[(&str, &str)]) -> Self {
        let all = shipped_with(dir, files);
        let all: Vec<(&str, String)> = all.iter().map(|(f, t)| (f.as_str(), t.clone())).collect();
        Self::build_with(test, &all, &[], reviews_backends)
    }

    /// tcp-echo v1 on 127.0.0.1:19001 and [::1]:19001, v2 on :19002, the
    /// shipped ServiceEntry and DestinationRule, and `virtual_service` as
    /// `virtual-service.yaml`.
    pub fn tcp_echo(test: &str, virtual_service: &str) -> Self {
        Self::tcp_echo_with(test, &[("virtual-service.yaml", virtual_service)])
    }

    /// Like `tcp_echo`, with the DestinationRule and VirtualService files given.
    pub fn tcp_echo_with(test: &str, files: &[(&str, &str)]) -> Self {
        Self::tcp_echo_opts(test, files, &[])
    }

    /// Like `tcp_echo_with`, with extra `traffic-shift run` arguments.
    pub fn tcp_echo_opts(test: &str, files: &[(&str, &str)], agent_args: &[&str]) -> Self {
        let mut all: Vec<(&str, String)> = vec![
            ("service-entry.yaml", tcp_echo_rule("service-entry.yaml")),
            (
                "destination-rule.yaml",
                tcp_echo_rule("destination-rule.yaml"),
            ),
            ("gateway.yaml", tcp_echo_rule("gateway.yaml")),
        ];
        for (file, text) in files {
            all.retain(|(f, _)| f != file);
            all.push((file, (*text).to_owned()));
        }
        Self::build(test, &all, agent_args)
    }

    /// The tcp-echo backends and an agent (with `agent_args`) on an empty
    /// rules directory: the rules come with `traffic-shift apply`.
    pub fn tcp_echo_backends(test: &str, agent_args: &[&str]) -> Self {
        Self::build(test, &[], agent_args)
    }

    fn build(test: &str, files: &[(&str, String)], agent_args: &[&str]) -> Self {
        Self::build_with(test, files, agent_args, |netns, cgroup| {
            vec![
                echo_backend(
                    netns,
                    Some(cgroup),
                    "one",
                    &["127.0.0.1:19001", "[::1]:19001"],
                ),
                echo_backend(
                    netns,
                    Some(cgroup),
                    "two",
                    &["127.0.0.1:19002", "[::1]:19002"],
                ),
            ]
        })
    }

    /// Bookinfo's reviews: `http-echo` v1, v2 and v3 on 127.0.0.1:19081,
    /// :19082 and :19083, the shipped ServiceEntry, DestinationRule and
    /// gateway files, with `files` added or replacing them (e.g.
    /// `virtual-service.yaml`), and an agent with `agent_args`.
    pub fn bookinfo(test: &str, files: &[(&str, &str)], agent_args: &[&str]) -> Self {
        let mut all: Vec<(&str, String)> = [
            "service-entry.yaml",
            "destination-rule.yaml",
            "gateway.yaml",
        ]
        .into_iter()
        .map(|file| (file, bookinfo_rule(file)))
        .collect();
        for (file, text) in files {
            all.retain(|(f, _)| f != file);
            all.push((file, (*text).to_owned()));
        }
        Self::build_with(test, &all, agent_args, reviews_backends)
    }

    fn build_with(
        test: &str,
        files: &[(&str, String)],
        agent_args: &[&str],
        backends: impl FnOnce(&Netns, &Cgroup) -> Vec<Process>,
    ) -> Self {
        require_root();
        let name = unique_name(test);
        let netns = Netns::new(&name);
        let cgroup = Cgroup::new(&name);
        let backends = backends(&netns, &cgroup);
        let rules_dir = std::env::temp_dir().join(format!("{name}-rules"));
        let _ = std::fs::remove_dir_all(&rules_dir);
        std::fs::create_dir_all(&rules_dir).expect("rules dir");
        for (file, text) in files {
            std::fs::write(rules_dir.join(file), text).expect("write rules");
        }
        let agent = Agent::start(&name, &rules_dir, &cgroup, &netns, files.len(), agent_args);
        let client = Client::start(&netns, Some(&cgroup));
        Self {
            client,
            agent,
            backends,
            cgroup,
            netns,
            rules_dir,
        }
    }
}

impl Scenario {
    /// `grpc-echo` backends (each `(name, address)`) and the rules
    /// `files`.
    pub fn grpc(test: &str, files: &[(&str, &str)], backends: &[(&str, &str)]) -> Self {
        let all: Vec<(&str, String)> = files.iter().map(|(f, t)| (*f, (*t).to_owned())).collect();
        Self::build_with(test, &all, &[], |netns, cgroup| {
            backends
                .iter()
                .map(|(name, addr)| grpc_backend(netns, Some(cgroup), name, &[addr]))
                .collect()
        })
    }
}

/// Bookinfo's reviews: `http-echo` v1, v2 and v3 on 127.0.0.1:19081,
/// :19082 and :19083.
fn reviews_backends(netns: &Netns, cgroup: &Cgroup) -> Vec<Process> {
    ["v1", "v2", "v3"]
        .into_iter()
        .zip(["127.0.0.1:19081", "127.0.0.1:19082", "127.0.0.1:19083"])
        .map(|(version, addr)| http_backend(netns, Some(cgroup), "reviews", version, &[addr]))
        .collect()
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.rules_dir);
    }
}

/// The IPv4 and IPv6 service addresses of the shipped tcp-echo example.
pub const SERVICE_V4: &str = "127.100.0.1:9000";
pub const SERVICE_V6: &str = "[fd00:7473::1]:9000";
