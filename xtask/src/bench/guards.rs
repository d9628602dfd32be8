//! What the bench creates on the node, each removed on drop (Ctrl-C included): its
//! temp dir, network namespaces, child cgroup, bpffs pin directory and long-running
//! child processes.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use rustix::process::{Pid, Signal, kill_process};

use crate::cmd;

/// The bench's temp dir (rules, agent log and events, proxy configs). Removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(path: PathBuf) -> Result<Self> {
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A network namespace with loopback up. Deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Result<Self> {
        cmd::run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Self {
            name: name.to_owned(),
        };
        cmd::run(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// `ip netns exec <ns> <program>`: it execs the program, so the child's pid is its pid.
    pub fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = cmd::run(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

/// A child cgroup. Removed on drop (it is empty once the clients exited).
pub struct CgroupDir(pub PathBuf);

impl CgroupDir {
    pub fn new(path: PathBuf) -> Result<Self> {
        fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for CgroupDir {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = fs::remove_dir(&self.0) {
            if Instant::now() >= deadline {
                eprintln!("bench: cannot remove cgroup {}: {e}", self.0.display());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The agent's bpffs pin directory: removed on drop if the agent left it.
pub struct BpffsDir(pub PathBuf);

impl Drop for BpffsDir {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Long-running children (backends, agent, proxies): SIGTERM in reverse start order,
/// up to 5 s each, then SIGKILL.
pub struct Processes(pub Vec<(String, Child)>);

impl Processes {
    pub fn spawn(&mut self, what: &str, c: &mut Command) -> Result<&mut Child> {
        eprintln!("+ {} &", cmd::show(c));
        let child = c
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {what}: `{}`", cmd::show(c)))?;
        self.0.push((what.to_owned(), child));
        Ok(&mut self.0.last_mut().expect("just pushed").1)
    }
}

impl Processes {
    /// Starts a backend that logs one line on stderr once it listens, and waits for it.
    pub fn spawn_listening(&mut self, what: &str, c: &mut Command) -> Result<()> {
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        let child = self.spawn(what, c)?;
        let mut line = String::new();
        if let Some(stderr) = child.stderr.take() {
            BufReader::new(stderr).read_line(&mut line)?;
        }
        ensure!(line.contains("listening"), "{what} did not start: {line}");
        Ok(())
    }

    /// The pid of the process started as `what`.
    pub fn pid(&self, what: &str) -> Option<u32> {
        self.0.iter().find(|(w, _)| w == what).map(|(_, c)| c.id())
    }

    /// The exit status of the process started as `what`, if it has exited.
    pub fn exited(&mut self, what: &str) -> Option<std::process::ExitStatus> {
        let (_, child) = self.0.iter_mut().find(|(w, _)| w == what)?;
        child.try_wait().ok().flatten()
    }
}

impl Processes {
    /// Stops the process started as `what` now (as on drop), if there is one.
    pub fn stop(&mut self, what: &str) {
        if let Some(at) = self.0.iter().position(|(w, _)| w == what) {
            let (what, child) = self.0.remove(at);
            terminate(&what, child);
        }
    }
}

/// SIGTERM, up to 5 s, then SIGKILL; reaped.
fn terminate(what: &str, mut child: Child) {
    if let Some(pid) = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)) {
        let _ = kill_process(pid, Signal::Term);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if matches!(child.try_wait(), Ok(None)) {
        eprintln!("bench: {what} ignored SIGTERM for 5 s; killing it");
        let _ = child.kill();
    }
    let _ = child.wait();
}

impl Drop for Processes {
    fn drop(&mut self) {
        while let Some((what, child)) = self.0.pop() {
            terminate(&what, child);
        }
    }
}
