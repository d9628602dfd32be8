//! The L7 proxy's view of `TS_PROXY_FLOWS`: which service address a
//! connection it accepted was for.

use std::net::SocketAddr;

use aya::maps::{HashMap, MapData};
use traffic_shift_common::{FlowKey, ServiceKey, map_names};

use crate::{Datapath, DatapathError};

/// `TS_PROXY_FLOWS`: connections sent to the L7 proxy -> the service
/// address:port their client connected to.
pub struct ProxyFlows(std::sync::Mutex<HashMap<MapData, FlowKey, ServiceKey>>);

impl ProxyFlows {
    /// The service address the client at `peer` connected to, for the
    /// connection the proxy accepted on `local`; the entry is removed (each
    /// connection is accepted once). `None`: not a connection the hook sent
    /// (or its entry was evicted).
    pub fn take(&self, peer: SocketAddr, local: SocketAddr) -> Option<SocketAddr> {
        // As the client sees its socket: local is the client, remote the proxy.
        let client = crate::compile::service_key(peer);
        let proxy = crate::compile::service_key(local);
        let key = FlowKey {
            local: client.addr,
            remote: proxy.addr,
            local_port: client.port,
            remote_port: proxy.port,
            family: client.family,
            pad: [0; 3],
        };
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let service = map.get(&key, 0).ok()?;
        let _ = map.remove(&key);
        Some(crate::compile::socket_addr(&service))
    }
}

impl Datapath {
    /// Where the L7 proxy finds the service address of a connection the
    /// connect-time hook sent it (the pinned `TS_PROXY_FLOWS` opened again,
    /// for the proxy's tasks).
    pub fn proxy_flows(&self) -> Result<ProxyFlows, DatapathError> {
        let name = map_names::PROXY_FLOWS;
        let data = MapData::from_pin(self.pin_dir.join(name))
            .map_err(|source| DatapathError::Map { name, source })?;
        let map = HashMap::try_from(aya::maps::Map::LruHashMap(data))
            .map_err(|source| DatapathError::Map { name, source })?;
        Ok(ProxyFlows(std::sync::Mutex::new(map)))
    }
}
