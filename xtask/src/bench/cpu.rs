//! The CPU time (user and system) of process trees, from `/proc/<pid>/stat`:
//! what a proxy or a backend spent over a run, for its CPU time per request. On a
//! machine whose cores the client, the backends and the proxy share, requests
//! per second say how the whole set fares; CPU per request says what each one
//! costs.

use std::fs;

/// The CPU seconds spent so far by the processes `roots` and their descendants
/// (nginx's workers are its master's children), every thread included. `None` if
/// a root is gone.
pub fn seconds(roots: &[u32]) -> Option<f64> {
    let processes = all();
    let mut tree: Vec<u32> = roots.to_vec();
    if roots.iter().any(|r| !processes.iter().any(|p| p.pid == *r)) {
        return None;
    }
    // Parents come before their children once added; repeat until no new one.
    loop {
        let before = tree.len();
        for p in &processes {
            if tree.contains(&p.ppid) && !tree.contains(&p.pid) {
                tree.push(p.pid);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    let ticks: u64 = processes
        .iter()
        .filter(|p| tree.contains(&p.pid))
        .map(|p| p.ticks)
        .sum();
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    #[allow(clippy::cast_precision_loss)] // ticks and their rate far below 2^52
    Some(ticks as f64 / per_second as f64)
}

/// One process: its pid, its parent, its user and system time in clock ticks.
struct Process {
    pid: u32,
    ppid: u32,
    ticks: u64,
}

/// Every process that `/proc` lists (those that end while it is read are left out).
fn all() -> Vec<Process> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        parse_stat(pid, &fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    })
    .collect()
}

/// `/proc/<pid>/stat`: after the command in parentheses (which may hold spaces and
/// parentheses itself), field 4 is the parent, 14 and 15 user and system time.
fn parse_stat(pid: u32, stat: &str) -> Option<Process> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (the state).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Process {
        pid,
        ppid: u32::try_from(field(4)?).ok()?,
        ticks: field(14)? + field(15)?,
    })
}

#[cfg(test)]
mod tests {
    use super::{parse_stat, seconds};

    #[test]
    fn stat_is_read_past_a_command_with_parentheses() {
        let stat = "4242 (nginx: (worker) x) S 4241 4241 4241 0 -1 4194624 120 0 0 0 \
                    317 45 0 0 20 0 1 0 100 1000 10 0";
        let p = parse_stat(4242, stat).unwrap();
        assert_eq!((p.pid, p.ppid, p.ticks), (4242, 4241, 362));
    }

    #[test]
    fn own_cpu_time_grows_and_a_missing_process_has_none() {
        let me = std::process::id();
        let before = seconds(&[me]).unwrap();
        // Busy until the time read grows by a tick, for at most 10 s of wall time.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while seconds(&[me]).unwrap() <= before && start.elapsed().as_secs() < 10 {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        assert!(seconds(&[me]).unwrap() > before, "no CPU time counted");
        assert_eq!(seconds(&[u32::MAX]), None);
    }
}
