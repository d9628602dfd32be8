//! The XDP gateway's kernel time per packet, for `cargo xtask bench --xdp`
//! ([`traffic_shift_tests::xdp_cost`]). Run as root while the agent serves
//! the gateway (not under `ip netns exec`, which hides bpffs):
//!
//! `ts-xdp-cost --netns /var/run/netns/NODE --bpffs DIR --iface IF --endpoint-iface ADDR=IF... --client ADDR
//!  --gateway ADDR:PORT --other-port PORT [--flows N] [--samples N]`
//!
//! Prints one JSON line: `{"rows":[{"packet","verdict","median_ns","mean_ns","how"}...]}`.
#![forbid(unsafe_code)]

use std::{net::Ipv4Addr, path::PathBuf, process::ExitCode};

use serde_json::json;
use traffic_shift_tests::xdp_cost::{Setup, measure};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ts-xdp-cost: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut netns = None;
    let (mut bpffs, mut iface, mut client, mut gateway, mut other_port) =
        (None, None, None, None, None);
    let mut endpoint_ifaces = Vec::new();
    let (mut flows, mut samples) = (1000u16, 20_000usize);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let parse_err = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--netns" => netns = Some(PathBuf::from(value()?)),
            "--bpffs" => bpffs = Some(PathBuf::from(value()?)),
            "--iface" => iface = Some(value()?),
            "--endpoint-iface" => {
                let v = value()?;
                let (addr, name) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--endpoint-iface {v}: expected ADDR=IFACE"))?;
                let addr: Ipv4Addr = addr.parse().map_err(|e| parse_err(&e))?;
                endpoint_ifaces.push((addr, name.to_owned()));
            }
            "--client" => client = Some(value()?.parse().map_err(|e| parse_err(&e))?),
            "--gateway" => gateway = Some(value()?.parse().map_err(|e| parse_err(&e))?),
            "--other-port" => other_port = Some(value()?.parse().map_err(|e| parse_err(&e))?),
            "--flows" => flows = value()?.parse().map_err(|e| parse_err(&e))?,
            "--samples" => samples = value()?.parse().map_err(|e| parse_err(&e))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let missing = |what: &str| format!("{what} is required");
    let pin_dir = bpffs.ok_or_else(|| missing("--bpffs"))?;
    let client_iface = iface.ok_or_else(|| missing("--iface"))?;
    let netns = netns.ok_or_else(|| missing("--netns"))?;
    let rows = measure(&Setup {
        netns: &netns,
        pin_dir: &pin_dir,
        client_iface: &client_iface,
        endpoint_ifaces: &endpoint_ifaces,
        client: client.ok_or_else(|| missing("--client"))?,
        gateway: gateway.ok_or_else(|| missing("--gateway"))?,
        other_port: other_port.ok_or_else(|| missing("--other-port"))?,
        flows,
        samples,
    })?;
    let rows: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "packet": r.packet,
                "verdict": r.verdict,
                "median_ns": r.median_ns,
                "mean_ns": r.mean_ns,
                "how": r.how,
            })
        })
        .collect();
    println!("{}", json!({ "rows": rows }));
    Ok(())
}
