//! A Gateway's `spec.addresses`: the IP addresses of this node its
//! listeners accept on (none: every local address), checked; two Gateways
//! with listeners on one address and port refused, naming both (in
//! Kubernetes each Gateway gets its own address; on one node they share
//! the node's); and the `status.addresses` the spec reports.
//!
//! Each address becomes the `bind` of the Istio Gateway server of each
//! listener, so the paths that serve a server on its `bind` serve it there
//! alone: the `sk_lookup` gateway (the exact address before "any local
//! address"), the L7 proxy's and the TLS passthrough's sockets (bound to
//! that address). An address that is not the node's is refused when the
//! agent binds a socket to it (HTTP and TLS listeners), as an Istio
//! server's `bind` is; a TCP listener's is taken as written, as a `bind`
//! is: the kernel serves it if connections to it reach this node.

use std::net::IpAddr;

use serde_json::{Value as Json, json};

use super::{Gateway, dto};
use crate::{
    check::Check,
    error::{ConfigError, ResourceId, fp},
};

/// The spec's `MaxItems` of `spec.addresses`.
const MAX_ADDRESSES: usize = 16;

/// The addresses of `spec.addresses`, checked: `type: IPAddress` (the
/// default) with an IPv4 or IPv6 `value`, each once.
pub(super) fn addresses(cx: &mut Check, written: Option<Vec<dto::GatewayAddress>>) -> Vec<IpAddr> {
    let written = written.unwrap_or_default();
    if written.len() > MAX_ADDRESSES {
        cx.error(
            fp!("spec.addresses"),
            format!(
                "{} addresses: a Gateway has at most {MAX_ADDRESSES}",
                written.len()
            ),
        );
    }
    let mut addresses = Vec::new();
    for (i, address) in written.into_iter().enumerate() {
        let path = fp!("spec.addresses[{i}]");
        match address.type_.as_deref() {
            None | Some("IPAddress") => {}
            Some("Hostname") => {
                cx.error(
                    path.key("type"),
                    "address type Hostname is not supported: the agent accepts on IP \
                     addresses of this node and does not resolve names; give an IP address \
                     of the node (type: IPAddress)",
                );
                continue;
            }
            Some(other) => {
                cx.error(
                    path.key("type"),
                    format!(
                        "address type {other:?} is not supported: only IPAddress is (an IPv4 or \
                         IPv6 address of this node); use it, or remove the address to accept \
                         on every local address"
                    ),
                );
                continue;
            }
        }
        let value = address.value.unwrap_or_default();
        if value.is_empty() {
            cx.error(
                path.key("value"),
                "value is required: the agent does not assign addresses (the spec: \
                 AddressNotAssigned); give an IP address of this node, or remove the entry to \
                 accept on every local address",
            );
            continue;
        }
        let Ok(ip) = value.parse::<IpAddr>() else {
            cx.error(
                path.key("value"),
                format!(
                    "{value:?} is not an IP address: type IPAddress takes an IPv4 or IPv6 \
                     address (198.18.0.10, fd00::10)"
                ),
            );
            continue;
        };
        if ip.is_unspecified() || ip.is_multicast() {
            cx.error(
                path.key("value"),
                format!(
                    "{ip} is not an address of a node: remove spec.addresses to accept on \
                     every local address, or give one address of this node"
                ),
            );
        } else if addresses.contains(&ip) {
            cx.error(
                path.key("value"),
                format!("address {ip} is listed twice: IPAddress values must be unique"),
            );
        } else {
            addresses.push(ip);
        }
    }
    addresses
}

/// The `bind` of each server of a listener of `gateway`: one per address,
/// or `None` (every local address) when it has none.
pub(super) fn binds(gateway: &Gateway) -> Vec<Option<IpAddr>> {
    if gateway.addresses.is_empty() {
        vec![None]
    } else {
        gateway.addresses.iter().copied().map(Some).collect()
    }
}

/// Where `gateway` accepts, for messages: its addresses, or every local
/// address.
fn place(gateway: &Gateway) -> String {
    if gateway.addresses.is_empty() {
        "every local address".to_owned()
    } else {
        list(&gateway.addresses)
    }
}

fn list(addresses: &[IpAddr]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The addresses both `a` and `b` accept on (none: every local address,
/// for both), or `None` when they share none.
fn shared(a: &Gateway, b: &Gateway) -> Option<Vec<IpAddr>> {
    match (a.addresses.is_empty(), b.addresses.is_empty()) {
        (true, true) => Some(Vec::new()),
        (true, false) => Some(b.addresses.clone()),
        (false, true) => Some(a.addresses.clone()),
        (false, false) => {
            let both: Vec<IpAddr> = a
                .addresses
                .iter()
                .filter(|ip| b.addresses.contains(ip))
                .copied()
                .collect();
            (!both.is_empty()).then_some(both)
        }
    }
}

/// Two served Gateways with a listener on one port and an address in
/// common: the later one (in the order of the rules) is refused, its
/// error naming both Gateways and listeners, the address and the port.
/// Returns the refused Gateways.
pub(super) fn overlapping(gateways: &[&Gateway], errors: &mut Vec<ConfigError>) -> Vec<ResourceId> {
    let mut refused = Vec::new();
    for (k, gateway) in gateways.iter().enumerate() {
        'listeners: for (j, listener) in gateway.listeners.iter().enumerate() {
            for earlier in &gateways[..k] {
                let Some(both) = shared(earlier, gateway) else {
                    continue;
                };
                let Some(other) = earlier.listeners.iter().find(|l| l.port == listener.port) else {
                    continue;
                };
                let at = if both.is_empty() {
                    "every local address".to_owned()
                } else {
                    list(&both)
                };
                errors.push(gateway.source.error(
                    fp!("spec.listeners[{j}].port"),
                    format!(
                        "listener {} (port {}, on {}) would take the connections of listener \
                         {} of {} (port {}, on {}): they share port {} on {at}, and two \
                         Gateways may not listen on one address and port (in Kubernetes each \
                         Gateway has its own address); give the Gateways different addresses \
                         of this node (spec.addresses), or different ports",
                        listener.name,
                        listener.port,
                        place(gateway),
                        other.name,
                        earlier.source.describe(),
                        other.port,
                        place(earlier),
                        listener.port,
                    ),
                ));
                if !refused.contains(&gateway.source.id()) {
                    refused.push(gateway.source.id());
                }
                continue 'listeners;
            }
        }
    }
    refused
}

/// The spec's `status.addresses`: the addresses the Gateway's listeners
/// accept on. A Gateway without `spec.addresses` accepts on every local
/// address, which the rules do not know: it has none listed.
pub(super) fn status_addresses(gateway: &Gateway) -> Option<Json> {
    (!gateway.addresses.is_empty()).then(|| {
        gateway
            .addresses
            .iter()
            .map(|ip| json!({"type": "IPAddress", "value": ip.to_string()}))
            .collect()
    })
}

/// The `Programmed` condition's message.
pub(super) fn programmed_message(gateway: &Gateway) -> String {
    format!("its listeners accept on {}", place(gateway))
}
