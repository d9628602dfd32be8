//! What aya does not offer for keeping a datapath across agent restarts:
//! opening pinned links, asking what a link is attached to, and swapping
//! the program behind a link in one step (`BPF_LINK_UPDATE`, kernel 5.7 for
//! cgroup links, 5.9 for netns links), as raw `bpf(2)` calls.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
/// `enum bpf_attach_type`: BPF_XDP.
const BPF_XDP: u64 = 37;
/// XDP attach modes (`if_link.h`).
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `bpf(cmd, attr, size)` over an attribute block of plain words.
fn bpf(cmd: libc::c_long, attr: &mut [u64]) -> io::Result<libc::c_long> {
    let size = std::mem::size_of_val(attr);
    // SAFETY: `attr` is a zero-padded buffer at least as large as the
    // attribute struct of `cmd`; the kernel reads/writes within `size`.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), size) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens a pinned object (a link here) by its bpffs path.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // union bpf_attr for BPF_OBJ_GET: { u64 pathname; u32 bpf_fd; u32 file_flags; }
    let mut attr = [0u64; 4];
    attr[0] = c_path.as_ptr() as u64;
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    let fd = i32::try_from(fd).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    // SAFETY: the kernel returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Replaces the program behind `link` with `program`, atomically: every
/// hook run sees the old program or the new one.
pub fn link_update(link: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    // { u32 link_fd; u32 new_prog_fd; u32 flags; u32 old_prog_fd; }
    let mut attr = [0u64; 4];
    attr[0] = u64::from(fd_u32(link)?) | (u64::from(fd_u32(program)?) << 32);
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

/// Attaches the XDP `program` to interface `ifindex` (of the calling
/// thread's network namespace) with a link, in `mode` (one of the
/// `XDP_FLAGS_*_MODE`); the link detaches when its last reference (this fd,
/// a pin) goes.
pub fn xdp_link_create(program: BorrowedFd<'_>, ifindex: u32, mode: u32) -> io::Result<OwnedFd> {
    // link_create: { u32 prog_fd; u32 target_ifindex; u32 attach_type; u32 flags; }
    let mut attr = [0u64; 8];
    attr[0] = u64::from(fd_u32(program)?) | (u64::from(ifindex) << 32);
    attr[1] = BPF_XDP | (u64::from(mode) << 32);
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    let fd = i32::try_from(fd).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    // SAFETY: the kernel returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// How many entries the hash map `map` holds (keys of `key_size` bytes,
/// values of `value_size`), counted with `BPF_MAP_LOOKUP_BATCH` (kernel
/// 5.6): a syscall per `BATCH` entries, where walking the keys takes one
/// per entry (65 536 a second for a full `TS_GATEWAY_FLOWS`, 1% of a core).
pub fn count_hash_entries(
    map: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
) -> io::Result<usize> {
    const BATCH: usize = 4096;
    let mut keys = vec![0u8; key_size * BATCH];
    let mut values = vec![0u8; value_size * BATCH];
    // The position in the map: a bucket index the kernel hands back.
    let (mut in_batch, mut out_batch) = (0u64, 0u64);
    let mut total = 0;
    let mut first = true;
    loop {
        // batch: { u64 in_batch; u64 out_batch; u64 keys; u64 values;
        // u32 count; u32 map_fd; u64 elem_flags; u64 flags; }
        let mut attr = [0u64; 6];
        attr[0] = if first {
            0
        } else {
            (&raw const in_batch) as u64
        };
        attr[1] = (&raw mut out_batch) as u64;
        attr[2] = keys.as_mut_ptr() as u64;
        attr[3] = values.as_mut_ptr() as u64;
        attr[4] = BATCH as u64 | (u64::from(fd_u32(map)?) << 32);
        let done = match bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
            Ok(_) => false,
            // The last batch: what it holds is counted as well.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) => return Err(e),
        };
        total += usize::try_from(attr[4] & 0xffff_ffff).unwrap_or(0);
        if done {
            return Ok(total);
        }
        in_batch = out_batch;
        first = false;
    }
}

/// What one `BPF_PROG_TEST_RUN` of an XDP program gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's verdict (`XDP_PASS` 2, `XDP_TX` 3, `XDP_REDIRECT` 4, ...).
    pub retval: u32,
    /// The packet as the program left it.
    pub packet: Vec<u8>,
    /// The kernel's time per run, in nanoseconds: its clock around the
    /// `repeat` runs, divided by `repeat`.
    pub duration_ns: u32,
}

/// Runs the XDP `program` on `packet` as if it arrived on interface
/// `ingress` (of the calling thread's network namespace; 0 for none),
/// `repeat` times on the same buffer (kernel 5.x `BPF_PROG_TEST_RUN` with an
/// `xdp_md` context). The map updates are real; nothing is transmitted.
pub fn xdp_test_run(
    program: BorrowedFd<'_>,
    packet: &[u8],
    ingress: u32,
    repeat: u32,
) -> io::Result<TestRun> {
    let mut out = vec![0u8; packet.len() + 256];
    let len =
        |n: usize| u32::try_from(n).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
    // struct xdp_md { u32 data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }
    let mut ctx = [0u32; 6];
    ctx[1] = len(packet.len())?;
    ctx[3] = ingress;
    // test: { u32 prog_fd, retval, data_size_in, data_size_out; u64 data_in,
    // data_out; u32 repeat, duration, ctx_size_in, ctx_size_out; u64 ctx_in,
    // ctx_out; u32 flags, cpu, batch_size }
    let mut attr = [0u64; 10];
    attr[0] = u64::from(fd_u32(program)?);
    attr[1] = u64::from(len(packet.len())?) | (u64::from(len(out.len())?) << 32);
    attr[2] = packet.as_ptr() as u64;
    attr[3] = out.as_mut_ptr() as u64;
    attr[4] = u64::from(repeat);
    attr[5] = u64::from(len(std::mem::size_of_val(&ctx))?);
    attr[6] = ctx.as_ptr() as u64;
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    out.truncate((attr[1] >> 32) as usize);
    Ok(TestRun {
        retval: (attr[0] >> 32) as u32,
        packet: out,
        duration_ns: (attr[4] >> 32) as u32,
    })
}

/// Opens the loaded program with kernel id `id` (what `link_target` reports).
pub fn prog_get_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    // { u32 prog_id; u32 next_id; u32 open_flags; }
    let mut attr = [0u64; 2];
    attr[0] = u64::from(id);
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    let fd = i32::try_from(fd).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    // SAFETY: the kernel returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Pins the object `fd` (a link here) at `path` in a bpffs mount.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // { u64 pathname; u32 bpf_fd; u32 file_flags; }
    let mut attr = [0u64; 4];
    attr[0] = c_path.as_ptr() as u64;
    attr[1] = u64::from(fd_u32(fd)?);
    bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

fn fd_u32(fd: BorrowedFd<'_>) -> io::Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// What a link is attached to, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkTarget {
    /// `BPF_LINK_TYPE_*`: 3 cgroup, 5 netns, 6 xdp.
    pub link_type: u32,
    pub program_id: u32,
    /// The cgroup id (cgroup links), the netns inode (netns links) or the
    /// interface index (xdp links).
    pub target: u64,
}

pub const LINK_TYPE_CGROUP: u32 = 3;
pub const LINK_TYPE_NETNS: u32 = 5;
pub const LINK_TYPE_XDP: u32 = 6;

/// `BPF_OBJ_GET_INFO_BY_FD` on a link.
pub fn link_target(link: BorrowedFd<'_>) -> io::Result<LinkTarget> {
    // struct bpf_link_info { u32 type; u32 id; u32 prog_id; union (8-aligned,
    // at 16) { cgroup: { u64 cgroup_id; u32 attach_type; } netns: { u32
    // netns_ino; u32 attach_type; } ... } }
    let mut info = [0u64; 16];
    // { u32 bpf_fd; u32 info_len; u64 info; }
    let mut attr = [0u64; 2];
    attr[0] = u64::from(fd_u32(link)?) | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let link_type = (info[0] & 0xffff_ffff) as u32;
    let program_id = (info[1] & 0xffff_ffff) as u32;
    let target = match link_type {
        LINK_TYPE_NETNS | LINK_TYPE_XDP => info[2] & 0xffff_ffff,
        _ => info[2],
    };
    Ok(LinkTarget {
        link_type,
        program_id,
        target,
    })
}

/// The id the kernel gives a cgroup v2 directory (its inode number) or a
/// network namespace file (the namespace's inode): what `link_target`
/// reports for links attached there.
pub fn target_id(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata(path)?.ino())
}
