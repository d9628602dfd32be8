//! The XDP gateway (endpoints on other hosts): attached to each
//! `--xdp-iface` interface, or its pinned link adopted; the source ports its
//! flows get (`--xdp-snat-ports`).

use std::{collections::BTreeSet, os::fd::AsFd as _, path::Path};

use aya::{Ebpf, EbpfLoader, programs::Xdp};
use traffic_shift_common::{
    XDP_SNAT_COUNT_GLOBAL, XDP_SNAT_MIN_GLOBAL, XDP_SNAT_PORT_MAX, XDP_SNAT_PORT_MIN,
};

use crate::{
    DatapathError,
    attach::{LinkReport, link_pin, program},
};

#[cfg(test)]
mod root_tests;

/// The source ports the XDP gateway gives its flows toward an endpoint
/// (`--xdp-snat-ports LOW-HIGH`, both included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnatPorts {
    pub low: u16,
    pub high: u16,
}

impl Default for SnatPorts {
    fn default() -> Self {
        Self {
            low: XDP_SNAT_PORT_MIN,
            high: XDP_SNAT_PORT_MAX,
        }
    }
}

impl std::fmt::Display for SnatPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnatPortsError {
    #[error("`{text}` is not LOW-HIGH: write two port numbers joined by a dash, e.g. 61000-65535")]
    Syntax { text: String },
    #[error("`{text}`: LOW is above HIGH; write the range low to high, e.g. 61000-65535")]
    Reversed { text: String },
    #[error(
        "`{text}`: the range starts below 1024, among the ports of the node's own services; use ports from 1024 up, above the node's ephemeral range (net.ipv4.ip_local_port_range), e.g. 61000-65535"
    )]
    Privileged { text: String },
}

impl std::str::FromStr for SnatPorts {
    type Err = SnatPortsError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || SnatPortsError::Syntax {
            text: text.to_owned(),
        };
        let (low, high) = text.split_once('-').ok_or_else(syntax)?;
        let port = |p: &str| p.trim().parse::<u16>().map_err(|_| syntax());
        let ports = Self {
            low: port(low)?,
            high: port(high)?,
        };
        if ports.low > ports.high {
            return Err(SnatPortsError::Reversed {
                text: text.to_owned(),
            });
        }
        if ports.low < 1024 {
            return Err(SnatPortsError::Privileged {
                text: text.to_owned(),
            });
        }
        Ok(ports)
    }
}

/// The XDP program's source port range as its globals hold it.
pub(crate) struct SnatGlobals {
    first: u16,
    count: u32,
}

impl SnatPorts {
    pub(crate) fn globals(self) -> SnatGlobals {
        SnatGlobals {
            first: self.low,
            count: u32::from(self.high) - u32::from(self.low) + 1,
        }
    }
}

/// Sets the XDP program's source port range (load-time constants).
pub(crate) fn set_snat_ports<'a>(loader: &mut EbpfLoader<'a>, globals: &'a SnatGlobals) {
    loader.override_global(XDP_SNAT_MIN_GLOBAL, &globals.first, true);
    loader.override_global(XDP_SNAT_COUNT_GLOBAL, &globals.count, true);
}

/// Prefix of the pinned XDP links' names (`link_ts_xdp_<iface>`).
const XDP_LINK_PREFIX: &str = "ts_xdp_";

/// The XDP gateway on each of `ifaces` (interfaces of `netns`): the pinned
/// link a previous agent left there (our program swapped in), else a new
/// one, native mode where the driver has it, generic otherwise, pinned.
/// Pinned XDP links of interfaces no longer listed are removed (detached).
/// The program is loaded only when there is an interface to serve.
pub(crate) fn attach_xdp(
    ebpf: &mut Ebpf,
    pin_dir: &Path,
    netns: &Path,
    ifaces: &[String],
    links: &mut LinkReport,
) -> Result<(), DatapathError> {
    let wanted: BTreeSet<String> = ifaces.iter().map(|i| xdp_link_name(i)).collect();
    if let Ok(entries) = std::fs::read_dir(pin_dir) {
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_prefix("link_") else {
                continue;
            };
            if name.starts_with(XDP_LINK_PREFIX) && !wanted.contains(name) {
                tracing::info!(link = %file, "XDP gateway detached from an interface no longer listed in --xdp-iface");
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    if ifaces.is_empty() {
        return Ok(());
    }
    let name = "ts_xdp";
    let err = |source| DatapathError::Program { name, source };
    let xdp: &mut Xdp = program(ebpf, name)?;
    xdp.load().map_err(err)?;
    let prog_fd = xdp.fd().map_err(err)?.as_fd();
    for iface in ifaces {
        let iface_err = |source| DatapathError::XdpIface {
            iface: iface.clone(),
            source,
        };
        let (ifindex, forwarding, forwarding6) = crate::netns::run_in(netns, || {
            let index = crate::netns::ifindex(iface)?;
            let forwarding =
                std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"))?;
            // Absent when IPv6 is disabled on the interface.
            let forwarding6 =
                std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{iface}/forwarding"))
                    .unwrap_or_default();
            Ok((index, forwarding.trim() == "1", forwarding6.trim() == "1"))
        })
        .map_err(iface_err)?;
        if !forwarding {
            return Err(DatapathError::XdpForwardingOff {
                iface: iface.clone(),
            });
        }
        if !forwarding6 {
            // Not an error: a node may serve IPv4 gateways only.
            tracing::warn!(
                %iface,
                "XDP gateway: IPv6 forwarding is off there, so IPv6 gateway traffic is dropped (xdp_no_route; bpf_fib_lookup refuses); to serve IPv6 gateways turn it on in the --netns namespace: sysctl -w net.ipv6.conf.all.forwarding=1"
            );
        }
        let link_name = xdp_link_name(iface);
        if links.adopt(pin_dir, &link_name, prog_fd, u64::from(ifindex))? {
            tracing::info!(%iface, "XDP gateway: adopted the pinned link");
            continue;
        }
        let attach_err = |source| DatapathError::XdpAttach {
            iface: iface.clone(),
            source,
        };
        let (link, mode) = crate::netns::run_in(netns, || {
            crate::pins::xdp_link_create(prog_fd, ifindex, crate::pins::XDP_FLAGS_DRV_MODE)
                .map(|link| (link, "native"))
                .or_else(|_| {
                    crate::pins::xdp_link_create(prog_fd, ifindex, crate::pins::XDP_FLAGS_SKB_MODE)
                        .map(|link| (link, "generic"))
                })
        })
        .map_err(attach_err)?;
        let path = link_pin(pin_dir, &link_name);
        crate::pins::obj_pin(link.as_fd(), &path).map_err(|source| DatapathError::Link {
            name: link_name.clone(),
            path: path.clone(),
            source,
        })?;
        tracing::info!(%iface, mode, "XDP gateway attached");
    }
    Ok(())
}

/// The pinned link name of the XDP gateway on `iface` (bpffs names hold no dot).
fn xdp_link_name(iface: &str) -> String {
    format!("{XDP_LINK_PREFIX}{}", iface.replace('.', "_"))
}

#[cfg(test)]
mod tests {
    use super::{SnatPorts, SnatPortsError};

    #[test]
    fn snat_ports_parse_and_refuse_with_a_clear_error() {
        assert_eq!(
            "61000-65535".parse::<SnatPorts>().unwrap(),
            SnatPorts::default()
        );
        assert_eq!(
            "1024-1024".parse::<SnatPorts>().unwrap(),
            SnatPorts {
                low: 1024,
                high: 1024
            }
        );
        for (text, want) in [
            ("61000", "is not LOW-HIGH"),
            ("61000-70000", "is not LOW-HIGH"),
            ("a-b", "is not LOW-HIGH"),
            ("65535-61000", "LOW is above HIGH"),
            ("80-90", "starts below 1024"),
        ] {
            let err: SnatPortsError = text.parse::<SnatPorts>().unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains(text) && message.contains(want),
                "{text}: {message}"
            );
        }
    }
}
