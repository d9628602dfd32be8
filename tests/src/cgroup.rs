//! [`Cgroup`]: the child cgroup v2 a test's agent attaches to.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

/// A child cgroup of the cgroup v2 root. Removed on drop (after the
/// processes in it were killed by their own guards).
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    pub fn new(name: &str) -> Self {
        let root = traffic_shift_datapath::default_cgroup().expect("a cgroup v2 mount");
        let path = root.join(name);
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.path).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
