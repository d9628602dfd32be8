//! Removing every pin: `traffic-shift unload`, and `--unload-on-exit`
//! when the [`Datapath`] is dropped.

use std::path::{Path, PathBuf};

use crate::{Datapath, DatapathError, load::lock_pin_dir};

/// `traffic-shift unload`: removes everything pinned under `pin_dir` (what
/// an agent that was killed left behind) and the directory itself. Refused
/// while an agent holds the directory. Returns the paths removed.
pub fn unload(pin_dir: &Path) -> Result<Vec<PathBuf>, DatapathError> {
    if !pin_dir.exists() {
        return Ok(Vec::new());
    }
    let _lock = lock_pin_dir(pin_dir)?;
    let pin_err = |source| DatapathError::PinDir {
        path: pin_dir.to_owned(),
        source,
    };
    let mut removed = remove_all_pins(pin_dir).map_err(pin_err)?;
    std::fs::remove_dir(pin_dir).map_err(pin_err)?;
    removed.push(pin_dir.to_owned());
    Ok(removed)
}

impl Datapath {
    /// Whether dropping this removes every pin, detaching the programs
    /// (`run --unload-on-exit`), instead of leaving the datapath in place
    /// for the next agent.
    pub fn set_unload_on_drop(&mut self, unload: bool) {
        self.unload_on_drop = unload;
    }
}

impl Drop for Datapath {
    /// By default nothing: the pinned links keep the programs attached and
    /// the pinned maps keep their state, so traffic is steered while no
    /// agent runs and the next one adopts it. With `unload_on_drop`, every
    /// pin goes and the programs detach: nothing is left behind.
    fn drop(&mut self) {
        if self.unload_on_drop {
            if let Err(err) = remove_all_pins(&self.pin_dir) {
                tracing::warn!(pins = %self.pin_dir.display(), %err, "could not remove every pin; `traffic-shift unload` finishes it");
            }
            let _ = std::fs::remove_dir(&self.pin_dir);
        }
    }
}

/// Removes every pin in `pin_dir`: links (detaching their programs) first,
/// then maps. Returns the paths removed.
fn remove_all_pins(pin_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths = std::fs::read_dir(pin_dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<PathBuf>>>()?;
    paths.sort_by_key(|p| {
        !p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("link_"))
    });
    for path in &paths {
        std::fs::remove_file(path)?;
    }
    Ok(paths)
}
