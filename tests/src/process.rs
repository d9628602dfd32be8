//! Processes of a test: [`Process`], killed on drop, and the demo backends
//! (`tcp-echo`, `http-echo`) started in the test's namespace and cgroup.

use std::{
    ffi::CString,
    io::{BufRead as _, BufReader},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{binary, cgroup::Cgroup, netns::Netns};

/// Spawns `cmd` inside `netns` and, if given, `cgroup`.
pub(crate) fn spawn_in(cmd: &mut Command, netns: &Netns, cgroup: Option<&Cgroup>) -> Child {
    let ns_fd = netns.file.as_raw_fd();
    let procs = cgroup.map(|c| {
        CString::new(c.path.join("cgroup.procs").to_str().expect("utf-8 path")).expect("no NUL")
    });
    // SAFETY: only async-signal-safe libc calls between fork and exec; the
    // C string was built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(procs) = &procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// A process killed on drop.
pub struct Process {
    pub child: Child,
    pub what: String,
}

impl Process {
    /// Sends SIGTERM and waits up to 5 s, then SIGKILL.
    pub fn stop(&mut self) {
        // Already reaped: its pid may belong to another process by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Sends `signal` and waits up to 5 s for a clean exit; panics otherwise.
    pub fn signal_and_wait(&mut self, signal: libc::c_int) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, signal) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within 5 s of signal {signal}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A demo backend (`tcp-echo`) answering `<prefix> <line>`, in `netns`, and
/// in `cgroup` when given (then the agent's sock_ops sees its accepted
/// connections: the gateway's counters).
pub fn echo_backend(
    netns: &Netns,
    cgroup: Option<&Cgroup>,
    prefix: &str,
    listen: &[&str],
) -> Process {
    demo_backend(
        binary("TCP_ECHO_BIN", "tcp-echo"),
        &["--prefix", prefix],
        listen,
        netns,
        cgroup,
        format!("tcp-echo {prefix}"),
    )
}

/// A demo HTTP backend (`http-echo`) in `netns` (and `cgroup`): it answers
/// every request with a JSON body naming `name` and `version`.
pub fn http_backend(
    netns: &Netns,
    cgroup: Option<&Cgroup>,
    name: &str,
    version: &str,
    listen: &[&str],
) -> Process {
    demo_backend(
        binary("HTTP_ECHO_BIN", "http-echo"),
        &["--name", name, "--version", version],
        listen,
        netns,
        cgroup,
        format!("http-echo {name} {version}"),
    )
}

/// Starts a demo backend (`program args --listen ADDR...`) and waits for the
/// line it logs once every listener is bound.
/// A `grpc-echo` backend named `name` (its answers say it), h2c on each
/// address of `listen`.
pub fn grpc_backend(
    netns: &Netns,
    cgroup: Option<&Cgroup>,
    name: &str,
    listen: &[&str],
) -> Process {
    demo_backend(
        binary("GRPC_ECHO_BIN", "grpc-echo"),
        &["--name", name],
        listen,
        netns,
        cgroup,
        format!("grpc-echo {name}"),
    )
}

fn demo_backend(
    program: PathBuf,
    args: &[&str],
    listen: &[&str],
    netns: &Netns,
    cgroup: Option<&Cgroup>,
    what: String,
) -> Process {
    let mut cmd = Command::new(program);
    for addr in listen {
        cmd.args(["--listen", addr]);
    }
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = spawn_in(&mut cmd, netns, cgroup);
    let stderr = child.stderr.take().expect("piped");
    let mut line = String::new();
    BufReader::new(stderr)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{what} stderr: {e}"));
    assert!(line.contains("listening"), "{what} did not start: {line}");
    Process { child, what }
}
