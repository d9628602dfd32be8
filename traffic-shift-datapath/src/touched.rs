//! `TS_TOUCHED` mapped into the agent: which counter slots the kernel
//! programs touched since the agent last looked. The programs store a mark
//! (a plain store of 1); the agent swaps marks back to 0 and reads only
//! the slots it found marked, so a second of an idle agent costs a scan of
//! the marks (8 bytes a slot, no syscall), not a map lookup per slot.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::{Array, IterableMap as _, MapData};
use traffic_shift_common::map_names;

use crate::DatapathError;

pub struct Touched {
    /// Kept open for as long as the mapping lives.
    _map: Array<MapData, u64>,
    marks: NonNull<AtomicU64>,
    /// Slots (marks) in the map.
    slots: usize,
    /// Bytes mapped.
    mapped: usize,
}

// SAFETY: the mapping is shared memory accessed only through atomics.
unsafe impl Send for Touched {}
// SAFETY: as above.
unsafe impl Sync for Touched {}

impl Touched {
    /// Maps the marks of `map` (`TS_TOUCHED`, `BPF_F_MMAPABLE`).
    pub(crate) fn new(map: Array<MapData, u64>) -> Result<Self, DatapathError> {
        let name = map_names::TOUCHED;
        let info = map
            .map()
            .info()
            .map_err(|source| DatapathError::Map { name, source })?;
        let slots = info.max_entries() as usize;
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let mapped = (slots * size_of::<u64>()).div_ceil(page).max(1) * page;
        let fd = map.map().fd().as_fd().as_raw_fd();
        // SAFETY: a shared mapping of an mmapable array map's values, which
        // the kernel lays out from offset 0, 8 bytes a slot; unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(DatapathError::Mmap {
                name,
                source: std::io::Error::last_os_error(),
            });
        }
        let marks = NonNull::new(ptr.cast::<AtomicU64>()).ok_or(DatapathError::Mmap {
            name,
            source: std::io::Error::other("mmap returned null"),
        })?;
        Ok(Self {
            _map: map,
            marks,
            slots,
            mapped,
        })
    }

    fn marks(&self) -> &[AtomicU64] {
        // SAFETY: `slots` marks were mapped at `marks` for our lifetime.
        unsafe { std::slice::from_raw_parts(self.marks.as_ptr(), self.slots) }
    }

    /// The slots marked since the last `take`, their marks cleared (a swap:
    /// a mark the kernel stores meanwhile is seen now or by the next take).
    pub fn take(&self) -> Vec<u32> {
        self.scan(|mark| mark.swap(0, Ordering::AcqRel) != 0)
    }

    /// The slots marked now, marks left (for a second reader).
    pub fn peek(&self) -> Vec<u32> {
        self.scan(|mark| mark.load(Ordering::Acquire) != 0)
    }

    fn scan(&self, marked: impl Fn(&AtomicU64) -> bool) -> Vec<u32> {
        self.marks()
            .iter()
            .enumerate()
            .filter(|(_, mark)| mark.load(Ordering::Relaxed) != 0 && marked(mark))
            .map(|(i, _)| u32::try_from(i).unwrap_or(u32::MAX))
            .collect()
    }
}

impl Drop for Touched {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe {
            libc::munmap(self.marks.as_ptr().cast(), self.mapped);
        }
    }
}
