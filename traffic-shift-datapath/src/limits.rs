//! Kernel map sizes, set at load time (`traffic-shift run --max-*`). Rules
//! that do not fit are refused whole, with a message naming the limit and
//! the flag that raises it.

use traffic_shift_common::{
    MAX_GATEWAY_FLOWS, MAX_GATEWAYS, MAX_ROUTES, MAX_SERVICE_PREFIXES, MAX_SERVICES, MAX_SOCKETS,
    MAX_STATS, MAX_XDP_FLOWS, map_names,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::Args)]
pub struct Limits {
    /// Routes the kernel holds, counted per address family (TS_ROUTES, TS_CURSORS, TS_SLOTS).
    #[arg(long, value_name = "N", default_value_t = MAX_ROUTES, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_routes: u32,
    /// Service address:port entries of mesh routes (TS_SERVICES).
    #[arg(long, value_name = "N", default_value_t = MAX_SERVICES, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_services: u32,
    /// Service address ranges (ServiceEntry `addresses` CIDRs) x port of mesh routes (TS_SVC_PREFIXES).
    #[arg(long, value_name = "N", default_value_t = MAX_SERVICE_PREFIXES, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_service_prefixes: u32,
    /// Gateway address:port entries (TS_GATEWAYS).
    #[arg(long, value_name = "N", default_value_t = MAX_GATEWAYS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_gateways: u32,
    /// Endpoints of gateway routes whose listening sockets are held (TS_SOCKETS).
    #[arg(long, value_name = "N", default_value_t = MAX_SOCKETS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_gateway_endpoints: u32,
    /// Counter slots, one per (route, destination, endpoint) (TS_STATS).
    #[arg(long, value_name = "N", default_value_t = MAX_STATS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_counters: u32,
    /// Gateway connections between SYN and accept (TS_GATEWAY_FLOWS, LRU).
    #[arg(long, value_name = "N", default_value_t = MAX_GATEWAY_FLOWS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending_gateway_connections: u32,
    /// Conntrack entries of the XDP gateway, two per flow (TS_XDP_FLOWS, LRU).
    #[arg(long, value_name = "N", default_value_t = MAX_XDP_FLOWS, value_parser = clap::value_parser!(u32).range(2..))]
    pub max_xdp_flows: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_routes: MAX_ROUTES,
            max_services: MAX_SERVICES,
            max_service_prefixes: MAX_SERVICE_PREFIXES,
            max_gateways: MAX_GATEWAYS,
            max_gateway_endpoints: MAX_SOCKETS,
            max_counters: MAX_STATS,
            max_pending_gateway_connections: MAX_GATEWAY_FLOWS,
            max_xdp_flows: MAX_XDP_FLOWS,
        }
    }
}

impl Limits {
    /// Each sized map and its size.
    pub fn map_sizes(&self) -> [(&'static str, u32); 13] {
        [
            (map_names::ROUTES, self.max_routes),
            // A route's slot table in force and the one replacing it.
            (map_names::SLOTS, self.max_routes.saturating_mul(2)),
            (map_names::CURSORS, self.max_routes),
            (map_names::SERVICES, self.max_services),
            (map_names::SERVICE_PREFIXES, self.max_service_prefixes),
            (map_names::GATEWAYS, self.max_gateways),
            (map_names::SOCKETS, self.max_gateway_endpoints),
            (map_names::STATS, self.max_counters),
            (map_names::TOUCHED, self.max_counters),
            (
                map_names::GATEWAY_FLOWS,
                self.max_pending_gateway_connections,
            ),
            (map_names::XDP_GATEWAYS, self.max_gateways),
            (map_names::XDP_FLOWS, self.max_xdp_flows),
            (map_names::XDP_STATS, self.max_counters),
        ]
    }

    /// The size of map `name`, if it is one of the sized ones.
    pub fn size_of(&self, name: &str) -> Option<u32> {
        self.map_sizes()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, size)| size)
    }
}
