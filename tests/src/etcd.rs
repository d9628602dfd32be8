//! A real etcd cluster for the fleet tests: Debian's `etcd` (3.4; `cargo
//! xtask setup` installs it), N members on loopback, each on free ports
//! with a temporary data directory, all stopped and removed on drop.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::Process;

/// Where Debian puts etcd.
const ETCD: &str = "/usr/bin/etcd";
/// And etcdctl (Debian's etcd-client), for what the tests do to etcd itself.
const ETCDCTL: &str = "/usr/bin/etcdctl";

/// One member.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub process: Option<Process>,
}

/// The cluster; members stop on drop, their directories go.
pub struct EtcdCluster {
    pub members: Vec<Member>,
    pub dir: PathBuf,
    /// With TLS: the members serve https on their client URLs and require
    /// a client certificate signed by the CA.
    pub tls: Option<Tls>,
}

/// PEM files for a TLS etcd ([`Tls::generate`]).
#[derive(Clone, Debug)]
pub struct Tls {
    /// The CA of the server and of `client`.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate signed by `ca`.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate signed by another CA.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Tls {
    /// With `openssl` in `dir`: a CA, a server certificate for 127.0.0.1,
    /// a client certificate from the CA, and one from another CA.
    pub fn generate(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("tls dir");
        let ca = |name: &str| {
            openssl(
                dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    &format!("/CN={name}"),
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        };
        let signed = |name: &str, ca: &str, ext: &str| {
            openssl(
                dir,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    &format!("/CN={name}"),
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext file");
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    &format!("{ca}.pem"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-days",
                    "1",
                    "-out",
                    &format!("{name}.pem"),
                    "-extfile",
                    &format!("{name}.ext"),
                ],
            );
        };
        ca("ca");
        ca("other-ca");
        signed(
            "server",
            "ca",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        signed("client", "ca", "extendedKeyUsage=clientAuth\n");
        signed("stranger", "other-ca", "extendedKeyUsage=clientAuth\n");
        Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            stranger_cert: dir.join("stranger.pem"),
            stranger_key: dir.join("stranger.key"),
        }
    }

    /// `--store-ca CA --store-cert CLIENT --store-key KEY`.
    pub fn client_args(&self) -> Vec<String> {
        [
            ("--store-ca", &self.ca),
            ("--store-cert", &self.client_cert),
            ("--store-key", &self.client_key),
        ]
        .iter()
        .flat_map(|(flag, path)| [(*flag).to_owned(), path.display().to_string()])
        .collect()
    }
}

/// A port that was free a moment ago (the kernel picked it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl EtcdCluster {
    /// Starts `n` members named after `test` and waits until the cluster
    /// answers (a leader is elected).
    pub fn start(test: &str, n: usize) -> Self {
        Self::start_with(test, n, None)
    }

    /// [`EtcdCluster::start`], with TLS and client certificates required
    /// on the client URLs when `tls` is given.
    pub fn start_with(test: &str, n: usize, tls: Option<Tls>) -> Self {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} missing: the fleet tests run a real etcd; install it with `cargo xtask setup` (Debian's etcd-server)"
        );
        let dir = std::env::temp_dir().join(format!("{}-etcd", crate::unique_name(test)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("etcd dir");
        let token = crate::unique_name(test);
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: dir.join(format!("m{i}.data")),
                log: dir.join(format!("m{i}.log")),
                process: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self { members, dir, tls };
        for i in 0..n {
            cluster.spawn(i, &initial, &token);
        }
        cluster.wait_ready();
        cluster
    }

    fn spawn(&mut self, i: usize, initial: &str, token: &str) {
        let member = &mut self.members[i];
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .expect("etcd log");
        let mut command = Command::new(ETCD);
        if let Some(tls) = &self.tls {
            command
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key);
        }
        let child = command
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", token])
            // Loopback: elections in a few hundred ms, not seconds.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {ETCD}: {e}"));
        member.process = Some(Process {
            child,
            what: format!("etcd {}", member.name),
        });
    }

    /// Stops every member (SIGTERM); their data stays.
    pub fn stop_all(&mut self) {
        for member in &mut self.members {
            if let Some(mut process) = member.process.take() {
                process.stop();
            }
        }
    }

    /// Starts every stopped member again on its data, and waits until the
    /// cluster answers.
    pub fn restart_all(&mut self) {
        let initial = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        for i in 0..self.members.len() {
            if self.members[i].process.is_none() {
                // The token and cluster state are read from the data dir now.
                self.spawn(i, &initial, "restarted");
            }
        }
        self.wait_ready();
    }

    /// `etcdctl ARGS` on every running member (plain etcd only): its
    /// standard output; panics if it fails.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        assert!(self.tls.is_none(), "etcdctl here is for a plain etcd");
        let endpoints = self
            .members
            .iter()
            .filter(|m| m.process.is_some())
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",");
        let out = Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(&endpoints)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {ETCDCTL}: {e}"));
        assert!(
            out.status.success(),
            "etcdctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `etcdctl endpoint status` of the running members: (member index,
    /// is leader, store revision) each.
    fn statuses(&self) -> Vec<(usize, bool, i64)> {
        let json: serde_json::Value =
            serde_json::from_str(&self.etcdctl(&["endpoint", "status", "-w", "json"]))
                .expect("endpoint status JSON");
        json.as_array()
            .expect("an array of statuses")
            .iter()
            .map(|entry| {
                let endpoint = entry["Endpoint"].as_str().expect("Endpoint");
                let port: u16 = endpoint
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("a port");
                let index = self
                    .members
                    .iter()
                    .position(|m| m.client_port == port)
                    .expect("a member of ours");
                let status = &entry["Status"];
                let id = status["header"]["member_id"].as_u64().expect("member_id");
                let leader = status["leader"].as_u64().expect("leader");
                let revision = status["header"]["revision"].as_i64().expect("revision");
                (index, id == leader, revision)
            })
            .collect()
    }

    /// The index of the leader, as the members say (waits up to 30 s for
    /// one).
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((index, _, _)) = self.statuses().into_iter().find(|s| s.1) {
                return index;
            }
            assert!(Instant::now() < deadline, "no etcd leader after 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The store's revision now.
    pub fn revision(&self) -> i64 {
        self.statuses()
            .iter()
            .map(|s| s.2)
            .max()
            .expect("a running member")
    }

    /// Kills member `i` with SIGKILL (no goodbye to its peers or clients);
    /// its data stays.
    pub fn kill(&mut self, i: usize) {
        let mut process = self.members[i].process.take().expect("member running");
        let _ = process.child.kill();
        let _ = process.child.wait();
    }

    /// `etcdctl compact REVISION`: the history before it is gone; a watch
    /// from before it cannot resume.
    pub fn compact(&self, revision: i64) {
        self.etcdctl(&["compact", &revision.to_string(), "--physical"]);
    }

    /// `etcd://127.0.0.1:P0,127.0.0.1:P1,...` (`etcds://` with TLS)
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls.is_some() { "etcds" } else { "etcd" },
            self.members
                .iter()
                .map(|m| format!("127.0.0.1:{}", m.client_port))
                .collect::<Vec<_>>()
                .join(",")
        )
    }

    /// Every member's log, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "--- {} ---\n{}",
                    m.name,
                    std::fs::read_to_string(&m.log).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .concat()
    }

    /// Waits (up to 30 s) until `traffic-shift get nodes` reaches the
    /// cluster: a leader is elected and the members serve.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = self.url();
        let mut args = vec![
            "get".to_owned(),
            "nodes".into(),
            "--store".into(),
            url.clone(),
        ];
        args.extend(self.tls.iter().flat_map(Tls::client_args));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        loop {
            let out = crate::traffic_shift(&args);
            if out.status.success() {
                return;
            }
            let exited = self.members.iter_mut().find_map(|member| {
                let status = member.process.as_mut()?.child.try_wait().ok()??;
                Some(format!("etcd {} exited ({status})", member.name))
            });
            if let Some(exited) = exited {
                panic!("{exited}:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "etcd at {url} not ready after 30 s: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            drop(member.process.take());
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
