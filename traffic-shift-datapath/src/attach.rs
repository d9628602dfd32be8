//! The cgroup programs (connect4/6, getpeername4/6, sock_ops) and the
//! `sk_lookup` gateway given a link: the pinned one a previous agent left,
//! our program swapped in, or a new one, pinned.

use std::{
    fs::File,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSockAddr, ProgramError, SkLookup, SockOps},
};

use crate::DatapathError;

/// Program names in the object and the hooks they attach to.
const PROGRAMS: [&str; 4] = [
    "ts_connect4",
    "ts_connect6",
    "ts_getpeername4",
    "ts_getpeername6",
];

/// Gives every program a link: the pinned one a previous agent left
/// (our program swapped in), or a new one, pinned.
pub(crate) fn attach(
    ebpf: &mut Ebpf,
    pin_dir: &Path,
    cgroup: &Path,
    netns: &Path,
) -> Result<LinkReport, DatapathError> {
    let cgroup_file = File::open(cgroup).map_err(|source| DatapathError::Cgroup {
        path: cgroup.to_owned(),
        source,
    })?;
    let netns_file = File::open(netns).map_err(|source| DatapathError::Netns {
        path: netns.to_owned(),
        source,
    })?;
    let cgroup_id = crate::pins::target_id(cgroup).map_err(|source| DatapathError::Cgroup {
        path: cgroup.to_owned(),
        source,
    })?;
    let netns_id = crate::pins::target_id(netns).map_err(|source| DatapathError::Netns {
        path: netns.to_owned(),
        source,
    })?;
    let mut links = LinkReport::default();
    let err = |name| move |source| DatapathError::Program { name, source };
    // Load program `name` of type `$ty`; adopt its pinned link if there is
    // one on `$target`, else attach it with `$attach` and pin the link.
    macro_rules! link {
        ($ty:ty, $name:expr, $target:expr, |$p:ident| $attach:expr) => {{
            let name = $name;
            let $p: &mut $ty = program(ebpf, name)?;
            $p.load().map_err(err(name))?;
            let prog_fd = $p.fd().map_err(err(name))?.as_fd();
            if !links.adopt(pin_dir, name, prog_fd, $target)? {
                let id = $attach.map_err(err(name))?;
                let link = $p.take_link(id).map_err(err(name))?;
                pin_link(pin_dir, name, link)?;
            }
        }};
    }
    for name in PROGRAMS {
        link!(CgroupSockAddr, name, cgroup_id, |p| p
            .attach(&cgroup_file, CgroupAttachMode::Single));
    }
    link!(SockOps, "ts_sock_ops", cgroup_id, |p| p
        .attach(&cgroup_file, CgroupAttachMode::Single));
    link!(SkLookup, "ts_sk_lookup", netns_id, |p| p
        .attach(&netns_file));
    Ok(links)
}

/// What `Datapath::load` did with the links it found pinned.
#[derive(Default)]
pub(crate) struct LinkReport {
    /// Pinned links (ours, on the same cgroup/netns) given our program.
    pub(crate) updated: usize,
    /// Pinned links attached elsewhere (another --cgroup/--netns): removed.
    pub(crate) replaced: usize,
}

impl LinkReport {
    /// If `pin_dir` holds a link for program `name` attached to `target`
    /// (a cgroup id or netns inode), swaps `program` in (one atomic link
    /// update) and returns true. A link attached elsewhere is unpinned
    /// (which detaches it) and false returned: attach a new one.
    pub(crate) fn adopt(
        &mut self,
        pin_dir: &Path,
        name: &str,
        program: std::os::fd::BorrowedFd<'_>,
        target: u64,
    ) -> Result<bool, DatapathError> {
        let path = link_pin(pin_dir, name);
        if !path.exists() {
            return Ok(false);
        }
        let link_err = |source| DatapathError::Link {
            name: name.to_owned(),
            path: path.clone(),
            source,
        };
        let link = crate::pins::obj_get(&path).map_err(link_err)?;
        let info = crate::pins::link_target(link.as_fd()).map_err(link_err)?;
        if info.target != target {
            std::fs::remove_file(&path).map_err(link_err)?;
            self.replaced += 1;
            return Ok(false);
        }
        crate::pins::link_update(link.as_fd(), program).map_err(link_err)?;
        self.updated += 1;
        Ok(true)
    }
}

/// Where program `name`'s link is pinned.
pub(crate) fn link_pin(pin_dir: &Path, name: &str) -> PathBuf {
    pin_dir.join(format!("link_{name}"))
}

/// Pins a freshly attached link, so it outlives this process.
fn pin_link<L>(pin_dir: &Path, name: &'static str, link: L) -> Result<(), DatapathError>
where
    L: TryInto<aya::programs::links::FdLink>,
    L::Error: std::error::Error + Send + Sync + 'static,
{
    let path = link_pin(pin_dir, name);
    let fd_link: aya::programs::links::FdLink =
        link.try_into().map_err(|source| DatapathError::Link {
            name: name.to_owned(),
            path: path.clone(),
            source: std::io::Error::other(source),
        })?;
    fd_link
        .pin(&path)
        .map_err(|source| DatapathError::Pin { name, path, source })?;
    Ok(())
}

/// The program `name` of the object, as its type `P`.
pub(crate) fn program<'a, P>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut P, DatapathError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(DatapathError::Program {
            name,
            source: ProgramError::UnexpectedProgramType,
        })?
        .try_into()
        .map_err(|source| DatapathError::Program { name, source })
}
