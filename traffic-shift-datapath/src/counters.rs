//! The kernel's per-CPU counters read (summed over CPUs) and counter
//! slots zeroed.

use std::{path::Path, sync::Arc};

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, PerCpuValues},
};
use traffic_shift_common::{EndpointStats, Event, XdpStats, map_names};

use crate::{Datapath, DatapathError, load::take_map, open_bytes::OpenBytes, touched::Touched};

/// The kernel's per-CPU counters: events by kind, connections and bytes by
/// counter slot.
pub struct KernelCounters {
    events: PerCpuArray<MapData, u64>,
    stats: PerCpuArray<MapData, EndpointStats>,
    xdp_stats: PerCpuArray<MapData, XdpStats>,
    /// Which slots moved since the agent last looked (shared by readers).
    touched: Arc<Touched>,
    /// Adds the bytes of open connections (shared by readers).
    open_bytes: Arc<OpenBytes>,
}

impl KernelCounters {
    /// The counter maps of a freshly loaded object.
    pub(crate) fn take(ebpf: &mut Ebpf, open_bytes: OpenBytes) -> Result<Self, DatapathError> {
        Ok(Self {
            open_bytes: Arc::new(open_bytes),
            events: take_map(ebpf, map_names::EVENTS)?,
            stats: take_map(ebpf, map_names::STATS)?,
            xdp_stats: take_map(ebpf, map_names::XDP_STATS)?,
            touched: Arc::new(Touched::new(take_map(ebpf, map_names::TOUCHED)?)?),
        })
    }

    /// Reads the bytes of the routed connections still open, which
    /// [`stats`](Self::stats) adds from then on: call before reading
    /// bytes, with the slots the caller read marked in [`touched`](Self::touched)
    /// (where new connections are). Without it, only closed connections'
    /// bytes are in; a failure says so in the log, once.
    pub fn refresh_open_bytes(&self, marked: &[u32]) {
        self.open_bytes.refresh(marked.iter().copied(), |id| {
            self.closed_stats(id)
                .ok()
                .map(|s| (s.request_bytes, s.response_bytes))
        });
    }

    /// Slots with routed connections open at the last refresh: their bytes
    /// grow without the kernel marking them touched.
    pub fn open_slots(&self) -> Vec<u32> {
        self.open_bytes.open_slots()
    }

    /// The marks of the slots the kernel touched.
    pub fn touched(&self) -> &Touched {
        &self.touched
    }

    /// Event counters summed over CPUs, in `Event::ALL` order.
    pub fn events(&self) -> Result<Vec<(Event, u64)>, DatapathError> {
        Event::ALL
            .iter()
            .map(|&event| {
                let per_cpu =
                    self.events
                        .get(&(event as u32), 0)
                        .map_err(|source| DatapathError::Map {
                            name: map_names::EVENTS,
                            source,
                        })?;
                Ok((event, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// The XDP gateway's counters of slot `id`, summed over CPUs.
    pub fn xdp_stats(&self, id: u32) -> Result<XdpStats, DatapathError> {
        let per_cpu = self
            .xdp_stats
            .get(&id, 0)
            .map_err(|source| DatapathError::Map {
                name: map_names::XDP_STATS,
                source,
            })?;
        Ok(per_cpu.iter().fold(XdpStats::default(), |a, c| XdpStats {
            request_packets: a.request_packets + c.request_packets,
            request_bytes: a.request_bytes + c.request_bytes,
            response_packets: a.response_packets + c.response_packets,
            response_bytes: a.response_bytes + c.response_bytes,
            flows: a.flows + c.flows,
        }))
    }

    /// The counters of slot `id`, summed over CPUs, with the bytes of its
    /// open connections as of the last [`refresh_open_bytes`](Self::refresh_open_bytes).
    pub fn stats(&self, id: u32) -> Result<EndpointStats, DatapathError> {
        Ok(self.open_bytes.merge(id, self.closed_stats(id)?))
    }

    /// Slot `id` as `TS_STATS` has it: the bytes of closed connections.
    fn closed_stats(&self, id: u32) -> Result<EndpointStats, DatapathError> {
        let per_cpu = self
            .stats
            .get(&id, 0)
            .map_err(|source| DatapathError::Map {
                name: map_names::STATS,
                source,
            })?;
        Ok(per_cpu
            .iter()
            .fold(EndpointStats::default(), |a, c| EndpointStats {
                opened: a.opened + c.opened,
                established: a.established + c.established,
                closed: a.closed + c.closed,
                failed_refused: a.failed_refused + c.failed_refused,
                failed_timeout: a.failed_timeout + c.failed_timeout,
                failed_other: a.failed_other + c.failed_other,
                request_bytes: a.request_bytes + c.request_bytes,
                response_bytes: a.response_bytes + c.response_bytes,
            }))
    }
}

impl Datapath {
    /// Zeroes counter slot `id` (connections, bytes, XDP packets).
    pub(crate) fn zero_slot(&mut self, id: u32) -> Result<(), DatapathError> {
        let map_err = |name| move |source| DatapathError::Map { name, source };
        let cpus_err = |source| DatapathError::Cpus {
            what: "per-CPU value",
            source,
        };
        let zero = PerCpuValues::try_from(vec![EndpointStats::default(); self.n_cpus])
            .map_err(cpus_err)?;
        self.counters
            .stats
            .set(id, zero, 0)
            .map_err(map_err(map_names::STATS))?;
        let zero =
            PerCpuValues::try_from(vec![XdpStats::default(); self.n_cpus]).map_err(cpus_err)?;
        self.counters
            .xdp_stats
            .set(id, zero, 0)
            .map_err(map_err(map_names::XDP_STATS))?;
        self.counters.open_bytes.forget(id);
        Ok(())
    }

    /// The kernel's counters.
    pub fn counters(&self) -> &KernelCounters {
        &self.counters
    }

    /// A second reader of the kernel's counters (the pinned maps opened
    /// again), for the metrics server's thread.
    pub fn counters_reader(&self) -> Result<KernelCounters, DatapathError> {
        fn open<V: aya::Pod>(
            pin_dir: &Path,
            name: &'static str,
        ) -> Result<PerCpuArray<MapData, V>, DatapathError> {
            let data = MapData::from_pin(pin_dir.join(name))
                .map_err(|source| DatapathError::Map { name, source })?;
            PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))
                .map_err(|source| DatapathError::Map { name, source })
        }
        Ok(KernelCounters {
            events: open(&self.pin_dir, map_names::EVENTS)?,
            stats: open(&self.pin_dir, map_names::STATS)?,
            xdp_stats: open(&self.pin_dir, map_names::XDP_STATS)?,
            touched: Arc::clone(&self.counters.touched),
            open_bytes: Arc::clone(&self.counters.open_bytes),
        })
    }
}
