//! Backend selection shared by every hook: a destination from the route's
//! slot table, then an endpoint of that destination.

use aya_ebpf::helpers::generated::bpf_get_prandom_u32;
use traffic_shift_common::{
    Backend, Dest, Event, INLINE_SLOTS, MAX_BACKENDS, MAX_DESTS, MAX_SLOTS, RouteTable, SlotTable,
    SlotsKey, select, source_hash,
};

use crate::maps::{TS_CURSORS, TS_ROUTES, TS_SLOTS};

/// Atomic fetch-and-add (`BPF_ATOMIC | BPF_FETCH`, kernel 5.12).
///
/// Inline asm because aya-build compiles for `--cpu generic` (v1), where
/// LLVM lowers `atomicrmw add` to the old XADD without a result and refuses
/// to use it: "Invalid usage of the XADD return value". The kernel runs the
/// v3 instruction fine.
#[inline(always)]
unsafe fn fetch_add(counter: *mut u64) -> u64 {
    let mut value: u64 = 1;
    unsafe {
        core::arch::asm!(
            "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
            p = in(reg) counter,
            v = inout(reg) value,
            options(nostack),
        );
    }
    value
}

/// `value & mask`, done in the program whatever LLVM knows about `value`.
///
/// LLVM drops a mask it can prove redundant (e.g. after `x % n` with
/// `n <= MAX_SLOTS`), but the verifier does not track bounds through `%`:
/// "math between map_value pointer and register with unbounded min value is
/// not allowed". An AND with a known constant gives the verifier the bound.
#[inline(always)]
pub fn bound(value: u64, mask: u64) -> usize {
    let mut value = value;
    // SAFETY: a register-only AND.
    unsafe {
        core::arch::asm!("{v} &= {m}", v = inout(reg) value, m = in(reg) mask, options(pure, nomem, nostack));
    }
    // Again in Rust, so LLVM knows the bound too and drops the index check
    // (a panic path ends the program without an exit: "last insn is not an
    // exit or jmp").
    (value & mask) as usize
}

/// The route `route_id` and the backend it picks for `client`: `Err(None)`
/// when the route is not in the map, `Err(Some(event))` when it picks
/// none.
///
/// A route whose slots are in `TS_SLOTS` names their version; user space
/// removes that version only after writing the route that names the next,
/// so a version missing here means the route changed under us: read again.
#[inline(always)]
pub fn route_and_pick(
    route_id: u32,
    client: [u32; 4],
) -> Result<(&'static RouteTable, Picked<'static>), Option<Event>> {
    // SAFETY: TS_ROUTES is BPF_F_NO_PREALLOC: a replaced value stays intact
    // until this program is done with it.
    let mut route = unsafe { TS_ROUTES.get(&route_id) }.ok_or(None)?;
    let mut slots = slot_table(route, route_id);
    if slots.is_none() && route.n_slots as usize > INLINE_SLOTS {
        route = unsafe { TS_ROUTES.get(&route_id) }.ok_or(None)?;
        slots = slot_table(route, route_id);
    }
    let picked = pick(route, slots, route_id, client).map_err(Some)?;
    Ok((route, picked))
}

/// The slot table of `route` in `TS_SLOTS`, when its slots are there.
#[inline(always)]
fn slot_table(route: &RouteTable, route_id: u32) -> Option<&'static SlotTable> {
    if route.n_slots as usize <= INLINE_SLOTS {
        return None;
    }
    let key = SlotsKey {
        route_id,
        version: route.slots_version,
    };
    // SAFETY: TS_SLOTS is BPF_F_NO_PREALLOC, like TS_ROUTES.
    unsafe { TS_SLOTS.get(&key) }
}

/// Picks the backend: a destination from the slot table (the route's own
/// slots, or `apart` when they are in `TS_SLOTS`), then an endpoint of that
/// destination. A route of one destination reads no slot.
#[inline(always)]
fn pick<'a>(
    route: &'a RouteTable,
    apart: Option<&SlotTable>,
    route_id: u32,
    client: [u32; 4],
) -> Result<Picked<'a>, Event> {
    let n_slots = route.n_slots;
    if n_slots == 0 || n_slots as usize > MAX_SLOTS {
        return Err(Event::BadTable);
    }
    let hash = source_hash(client);
    let cursor = TS_CURSORS.get_ptr_mut(route_id);
    let dest_index = if route.n_dests == 1 {
        0
    } else {
        let slot = match route.mode {
            select::RANDOM => (unsafe { bpf_get_prandom_u32() }) % n_slots,
            select::SOURCE_HASH => hash % n_slots,
            _ => match cursor {
                // SAFETY: array values live as long as the map; the atomic add
                // (BPF_ATOMIC | BPF_FETCH) makes every connection take its own slot.
                Some(c) => {
                    (unsafe { fetch_add(&raw mut (*c).next_slot) } % u64::from(n_slots)) as u32
                }
                None => return Err(Event::BadTable),
            },
        };
        let slot = u64::from(slot);
        match apart {
            Some(table) => table.slots[bound(slot, MAX_SLOTS as u64 - 1)] as usize,
            None if n_slots as usize <= INLINE_SLOTS => {
                route.slots[bound(slot, INLINE_SLOTS as u64 - 1)] as usize
            }
            // Its version is gone twice over: changed twice under us.
            None => return Err(Event::BadTable),
        }
    };
    if dest_index >= route.n_dests as usize {
        return Err(Event::BadTable);
    }
    let dest_index = bound(dest_index as u64, MAX_DESTS as u64 - 1);
    let dest = &route.dests[dest_index];
    let n = u32::from(dest.n_backends);
    if n == 0 {
        return Err(Event::NoEndpoint);
    }
    let k = match dest.endpoint_select {
        select::RANDOM => (unsafe { bpf_get_prandom_u32() }) % n,
        select::SOURCE_HASH => source_hash([hash, 0x5bd1_e995, 0, 0]) % n,
        _ => match cursor {
            Some(c) => {
                let next = unsafe { fetch_add(&raw mut (*c).next_backend[dest_index]) };
                (next % u64::from(n)) as u32
            }
            None => return Err(Event::BadTable),
        },
    };
    let index = u32::from(dest.first_backend) + k;
    if index >= route.n_backends {
        return Err(Event::BadTable);
    }
    Ok(Picked {
        dest,
        backend: &route.backends[bound(u64::from(index), MAX_BACKENDS as u64 - 1)],
    })
}

/// The destination a connection was given and the endpoint picked in it.
pub struct Picked<'a> {
    pub dest: &'a Dest,
    pub backend: &'a Backend,
}
