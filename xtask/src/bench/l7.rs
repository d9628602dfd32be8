//! `--only l7`: scenario 3 (HTTP requests, keep-alive and `Connection: close`)
//! alone, through direct, traffic-shift's L7 proxy (mesh and gateway), Envoy,
//! haproxy and nginx, twice: on the bench's `http-echo` backends, then on fast
//! ones, nginx answering from memory on the same two ports (so every contender's
//! configuration stands), to show the proxies' rates where the backends cost
//! little. wrk measures the direct backend in each pass, and every row shows the
//! backends' CPU per request beside the proxy's: how the report says whether the
//! backends are the bottleneck. Written to `bench/results/l7-latest.md` and `.json`.

use std::{fmt::Write as _, fs, path::Path, process::Stdio, sync::atomic::AtomicBool};

use anyhow::{Context as _, Result};

use super::{
    Setup, agent, check_interrupted,
    guards::{Netns, Processes},
    http, proxies,
    proxies::Proxies,
    report::{self, Skipped},
};

/// What the fast pass's rows say answered on the backends' ports.
const FAST: &str = "nginx from memory";
/// The process name of the fast backends.
const FAST_PROCESS: &str = "nginx backends";

pub fn run(
    root: &Path,
    bin: &Path,
    cgroup_root: &Path,
    quick: bool,
    proxies: Proxies,
    interrupted: &AtomicBool,
) -> Result<()> {
    let name = format!("ts-bench-{}", std::process::id());
    let timing = super::timing(quick);
    let (reps, duration, warmup) = timing;
    let mut setup = Setup::new(root, bin, cgroup_root, &name, quick, false)?;
    let (contenders, envoy_log) = super::start_contenders(&mut setup, &proxies)?;
    let proxy_names = proxies::names(&contenders);
    let mut skipped = Skipped::of_every(proxies.skipped, [http::SCENARIO]);
    let header = report::alone_header(
        &format!(
            "scenario 3 alone (--only l7), {reps} runs of {duration} s (after {warmup} s of warmup) \
             per cell, interleaved, median shown; on http-echo, then on {FAST}; agent {}",
            agent::agent_binary(bin).display()
        ),
        quick,
    );
    eprintln!("bench: {header}");
    let check = || check_interrupted(interrupted);
    let env = |backends, pids| http::Env {
        bin,
        netns: &setup.netns.name,
        cgroup: &setup.cgroup.0,
        quick,
        envoy_log: &envoy_log,
        pids,
        backends,
    };
    let echo = http::speed(
        &env("http-echo", http::Pids::of(&setup.procs)),
        &proxy_names,
        &mut skipped,
        timing,
        &check,
    )?;
    let fast = match &proxies.nginx {
        Some(nginx) => {
            // The same ports, nginx answering: the contenders' configurations stand.
            for version in ["v1", "v2"] {
                setup.procs.stop(&format!("http-echo {version}"));
            }
            start_fast_backends(nginx, &setup.tmp.0, &setup.netns, &mut setup.procs)?;
            let mut pids = http::Pids::of(&setup.procs);
            pids.backends = setup.procs.pid(FAST_PROCESS).into_iter().collect();
            Some(http::speed(
                &env(FAST, pids),
                &proxy_names,
                &mut skipped,
                timing,
                &check,
            )?)
        }
        None => None,
    };
    drop(setup);
    let (mut md, mut json_rows, mut goals) = (String::new(), Vec::new(), String::new());
    echo.report(&skipped, &mut md, &mut json_rows, &mut goals);
    match &fast {
        Some(fast) => fast.report(&[], &mut md, &mut json_rows, &mut goals),
        None => {
            let _ = writeln!(
                md,
                "\nNo pass on fast backends: nginx, which serves them, is not installed."
            );
        }
    }
    let _ = writeln!(
        md,
        "\nThe backends are the bottleneck of a row when their CPU per request (column \
         `backends CPU µs/req`) is near the proxy's, or when wrk's direct rate is near the \
         proxies' rates. The {FAST} pass takes them out of the way: nginx returns a \
         constant JSON `{{\"version\":\"v1\"}}` (or v2) from memory, with 2 worker processes."
    );
    let _ = writeln!(goals, "load average at the end: {}", report::load_average());
    report::write_alone(root, "l7", &header, &md, &json_rows, &goals)
}

/// nginx answering `{"version":"v1"}` on http-echo v1's port and `v2` on v2's, from
/// memory (what ts-bench counts answers by), with 2 worker processes; waited for by
/// the first check of the direct contender.
fn start_fast_backends(
    nginx: &Path,
    tmp: &Path,
    netns: &Netns,
    procs: &mut Processes,
) -> Result<()> {
    let cfg = tmp.join("nginx-backends.conf");
    fs::write(&cfg, fast_backends_config(tmp))
        .with_context(|| format!("cannot write {}", cfg.display()))?;
    let mut c = netns.exec(nginx);
    c.arg("-p")
        .arg(tmp)
        .arg("-e")
        .arg(tmp.join("nginx-backends-error.log"))
        .arg("-c")
        .arg(&cfg)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null());
    procs.spawn(FAST_PROCESS, &mut c)?;
    Ok(())
}

fn fast_backends_config(dir: &Path) -> String {
    let dir = dir.display();
    let mut cfg = format!(
        "worker_processes 2;\npid {dir}/nginx-backends.pid;\n\
         error_log {dir}/nginx-backends-error.log warn;\n\
         events {{ worker_connections 4096; }}\nhttp {{\n    access_log off;\n    \
         keepalive_requests 1000000;\n    client_body_temp_path {dir}/nginx-backends-body;\n    \
         proxy_temp_path {dir}/nginx-backends-proxy;\n    fastcgi_temp_path {dir}/nginx-backends-fastcgi;\n    \
         uwsgi_temp_path {dir}/nginx-backends-uwsgi;\n    scgi_temp_path {dir}/nginx-backends-scgi;\n"
    );
    for (version, port) in [("v1", http::V1), ("v2", http::V2)] {
        let _ = write!(
            cfg,
            "    server {{\n        listen 127.0.0.1:{port};\n        location / {{\n            \
             default_type application/json;\n            \
             return 200 '{{\"name\":\"nginx\",\"version\":\"{version}\"}}\\n';\n        }}\n    }}\n"
        );
    }
    cfg.push_str("}\n");
    cfg
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::fast_backends_config;

    #[test]
    fn fast_backends_answer_by_version_on_http_echo_ports() {
        let cfg = fast_backends_config(Path::new("/tmp/b"));
        for (version, port) in [("v1", 19301), ("v2", 19302)] {
            let server = format!(
                "listen 127.0.0.1:{port};\n        location / {{\n            default_type application/json;\n            \
                 return 200 '{{\"name\":\"nginx\",\"version\":\"{version}\"}}\\n';"
            );
            assert!(cfg.contains(&server), "{server} expected in:\n{cfg}");
        }
    }
}
