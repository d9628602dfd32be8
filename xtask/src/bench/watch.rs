//! `traffic-shift status --watch` as a user sees it (issue 17: a redraw in under
//! 100 ms at 100 000 services): the bench opens a pseudo-terminal of a set size,
//! runs the command on it and reads the terminal's side, timing each frame as it
//! arrives. A frame drawn in place starts with `ESC [ H` (home) and ends with
//! `ESC [ J` (clear the rest of the screen); the command draws one, flushes it, then
//! waits its `--interval`.
//!
//! The redraw time of a frame is what the command spent on it: from the end of the
//! frame before plus the interval it then waited, to the end of this frame's last
//! write. It holds reading the status files, picking the busiest routes, rendering
//! and writing, and also the timer's own lateness. Both ends are when the bench's
//! reader saw them: on a busy machine a frame seen late makes its redraw longer and
//! the next one's shorter (even below 0), so the median is the steady figure and the
//! largest an upper bound. Beside it, the CPU time the command spent per redraw, from
//! its `schedstat`, which the machine's load does not move. The first frame is left
//! out (it holds the process's start).

use std::{
    io::Read as _,
    ops::Range,
    os::fd::OwnedFd,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use rustix::{
    process::{Pid, Signal, kill_process},
    pty::{OpenptFlags, grantpt, ioctl_tiocgptpeer, openpt, unlockpt},
    termios::{Winsize, tcsetwinsize},
};

use crate::cmd;

/// The terminal's size: a screen's worth of the busiest routes is what `--watch` draws.
pub const ROWS: u16 = 50;
pub const COLUMNS: u16 = 120;
/// `--interval`: the least the command takes.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// Redraws timed per run (the frames after the first).
pub const REDRAWS: usize = 30;
/// The longest a run may take.
const TIMEOUT: Duration = Duration::from_mins(2);

/// A frame drawn in place: its bytes in what the terminal's side read (`ESC [ H` to
/// the end of `ESC [ J`), and when the reads that brought its first and last byte
/// returned, from the command's start.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub bytes: Range<usize>,
    pub start: Duration,
    pub end: Duration,
}

const HOME: &[u8] = b"\x1b[H";
const CLEAR_REST: &[u8] = b"\x1b[J";

/// The whole frames in `stream`, what the terminal's side read so far; `reads` has,
/// per read, the offset in `stream` where it ended and when it returned (offsets
/// increasing). A frame not yet ended is left out.
pub fn frames(stream: &[u8], reads: &[(usize, Duration)]) -> Vec<Frame> {
    // When the byte at `offset` was read: the first read ending past it.
    let when = |offset: usize| {
        let i = reads.partition_point(|&(end, _)| end <= offset);
        reads.get(i).map(|&(_, t)| t)
    };
    let find = |from: usize, needle: &[u8]| {
        stream
            .get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| from + p)
    };
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(start) = find(at, HOME) {
        let Some(clear) = find(start + HOME.len(), CLEAR_REST) else {
            break;
        };
        let end = clear + CLEAR_REST.len();
        let (Some(t0), Some(t1)) = (when(start), when(end - 1)) else {
            break;
        };
        out.push(Frame {
            bytes: start..end,
            start: t0,
            end: t1,
        });
        at = end;
    }
    out
}

/// The redraw time of each frame after the first (see the module's doc), ms: the
/// time from the end of the frame before to the end of this one, less `interval`;
/// below 0 when the frame before was seen late.
pub fn redraws(frames: &[Frame], interval: Duration) -> Vec<f64> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    frames
        .windows(2)
        .map(|pair| ms(pair[1].end) - ms(pair[0].end) - ms(interval))
        .collect()
}

/// What a run measured.
pub struct Watch {
    /// The redraw times, ms, in frame order.
    pub redraws: Vec<f64>,
    /// The command's CPU time per redraw, ms: its run time from when the first
    /// frame's end was seen to when the last's was, over the redraws.
    pub cpu_ms: f64,
    /// The last frame's bytes (escapes and the terminal's `\r` included) and lines.
    pub frame_bytes: usize,
    pub frame_lines: usize,
}

impl Watch {
    /// The median and the largest redraw time, ms.
    pub fn median_max_ms(&self) -> (f64, f64) {
        let mut ms = self.redraws.clone();
        ms.sort_by(f64::total_cmp);
        (ms[ms.len() / 2], ms[ms.len() - 1])
    }
}

/// Runs `command` (a `traffic-shift status --watch --interval` [`INTERVAL`]) on a
/// new pseudo-terminal of [`ROWS`] x [`COLUMNS`] until it drew [`REDRAWS`] + 1
/// frames, then stops it with SIGTERM, as Ctrl-C would; each frame must show the
/// status (`, generation `), not an error. Its redraw times, or why not.
pub fn run(mut command: Command) -> Result<Watch, String> {
    let shown = cmd::show(&command);
    let (master, slave) = pty().map_err(|e| format!("cannot open a pseudo-terminal: {e}"))?;
    let slave_out = slave
        .try_clone()
        .map_err(|e| format!("cannot dup the pseudo-terminal: {e}"))?;
    let t0 = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave_out))
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{shown}`: {e}"))?;
    // Ours closed: the terminal's side reads EIO once the command is gone.
    drop(command);
    drop(slave);
    let (tx, rx) = mpsc::channel::<(Duration, Vec<u8>)>();
    let reader = std::thread::spawn(move || {
        // Ahead of the machine's other work (this thread only): a frame is timed
        // when it is read.
        let _ = rustix::process::setpriority_process(None, -10);
        let mut master = std::fs::File::from(master);
        let mut buf = vec![0; 1 << 16];
        // EIO: the command closed the terminal (it exited).
        while let Ok(n @ 1..) = master.read(&mut buf) {
            if tx.send((t0.elapsed(), buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    let (mut stream, mut reads) = (Vec::new(), Vec::new());
    let mut stopped = false;
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    let (mut cpu_first, mut cpu_last) = (None, None);
    let result = loop {
        let left = TIMEOUT.saturating_sub(t0.elapsed());
        match rx.recv_timeout(left) {
            Ok((at, bytes)) => {
                stream.extend_from_slice(&bytes);
                reads.push((stream.len(), at));
                let seen = frames(&stream, &reads).len();
                if seen >= 1 && cpu_first.is_none() {
                    cpu_first = Some(run_time(child.id()));
                }
                if !stopped && seen > REDRAWS {
                    cpu_last = Some(run_time(child.id()));
                    if let Some(pid) = pid {
                        let _ = kill_process(pid, Signal::Term);
                    }
                    stopped = true;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                break Err(format!(
                    "`{shown}` drew {} of {} frames in {} s",
                    frames(&stream, &reads).len(),
                    REDRAWS + 1,
                    TIMEOUT.as_secs()
                ));
            }
        }
    };
    if result.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| format!("`{shown}`: {e}"));
    let _ = reader.join();
    result?;
    let status = status?;
    if !stopped || !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        return Err(format!(
            "`{shown}` ended ({status}) after {} frames: {}",
            frames(&stream, &reads).len(),
            err.trim()
        ));
    }
    let frames = frames(&stream, &reads);
    let frames = &frames[..=REDRAWS];
    all_status(&stream, frames).map_err(|e| format!("{e} of `{shown}`"))?;
    let last = &stream[frames[REDRAWS].bytes.clone()];
    let cpu = match (cpu_first, cpu_last) {
        (Some(Ok(first)), Some(Ok(last))) => last.saturating_sub(first),
        (Some(Err(e)), _) | (_, Some(Err(e))) => return Err(e),
        _ => return Err(format!("`{shown}`: its CPU time was not read")),
    };
    #[allow(clippy::cast_precision_loss)] // 30
    Ok(Watch {
        redraws: redraws(frames, INTERVAL),
        cpu_ms: cpu.as_secs_f64() * 1e3 / REDRAWS as f64,
        frame_bytes: last.len(),
        frame_lines: last.split(|&b| b == b'\n').count(),
    })
}

/// Whether each frame shows the status (`, generation `), not an error.
fn all_status(stream: &[u8], frames: &[Frame]) -> Result<(), String> {
    for (i, frame) in frames.iter().enumerate() {
        let text = String::from_utf8_lossy(&stream[frame.bytes.clone()]);
        if !text.contains(", generation ") {
            return Err(format!(
                "frame {} is not the status: {:?}",
                i + 1,
                text.chars().take(300).collect::<String>()
            ));
        }
    }
    Ok(())
}

/// The time process `pid`'s main thread ran on a CPU so far (`schedstat`, ns;
/// `status --watch` does its work on its main thread).
fn run_time(pid: u32) -> Result<Duration, String> {
    let path = format!("/proc/{pid}/schedstat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    text.split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .map(Duration::from_nanos)
        .ok_or_else(|| format!("{path}: no run time in {text:?}"))
}

/// A new pseudo-terminal of [`ROWS`] x [`COLUMNS`]: its master side and its slave.
fn pty() -> rustix::io::Result<(OwnedFd, OwnedFd)> {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let slave = ioctl_tiocgptpeer(
        &master,
        OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
    )?;
    tcsetwinsize(
        &slave,
        Winsize {
            ws_row: ROWS,
            ws_col: COLUMNS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )?;
    Ok((master, slave))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn frames_are_timed_by_the_reads_of_their_first_and_last_bytes() {
        // The screen entered, a frame in two reads, a frame in one, a frame begun.
        let parts: [&[u8]; 5] = [
            b"\x1b[?1049h\x1b[?25l",
            b"\x1b[Hrules a, generation 1\x1b[K\r\n",
            b"x\x1b[K\x1b[J",
            b"\x1b[Hrules b\x1b[K\x1b[J",
            b"\x1b[Hrules c",
        ];
        let stream = parts.concat();
        let ends: Vec<usize> = parts
            .iter()
            .scan(0, |at, p| {
                *at += p.len();
                Some(*at)
            })
            .collect();
        let reads: Vec<(usize, Duration)> = ends
            .iter()
            .copied()
            .zip([5, 40, 47, 190, 300].map(ms))
            .collect();
        let got = frames(&stream, &reads);
        assert_eq!(
            got,
            [
                Frame {
                    bytes: ends[0]..ends[2],
                    start: ms(40),
                    end: ms(47)
                },
                Frame {
                    bytes: ends[2]..ends[3],
                    start: ms(190),
                    end: ms(190)
                },
            ]
        );
        assert_eq!(&stream[got[1].bytes.clone()], parts[3]);
        assert_eq!(redraws(&got, ms(100)), [43.0]);
    }

    #[test]
    fn an_escape_split_between_reads_is_found() {
        let stream = b"\x1b[Hab\x1b[J\x1b[Hcd\x1b[J";
        let reads = [
            (1, ms(1)),
            (7, ms(2)),
            (9, ms(150)),
            (stream.len(), ms(160)),
        ];
        let got = frames(stream, &reads);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!((got[0].start, got[0].end), (ms(1), ms(150)));
        assert_eq!((got[1].start, got[1].end), (ms(150), ms(160)));
    }

    #[test]
    fn a_frame_seen_late_lengthens_its_redraw_and_shortens_the_next() {
        let frame = |end| Frame {
            bytes: 0..1,
            start: ms(end),
            end: ms(end),
        };
        assert_eq!(
            redraws(&[frame(0), frame(130), frame(300)], ms(100)),
            [30.0, 70.0]
        );
        assert_eq!(
            redraws(&[frame(0), frame(160), frame(230)], ms(100)),
            [60.0, -30.0]
        );
    }

    #[test]
    fn a_watch_reports_its_median_and_largest_redraw() {
        let watch = Watch {
            redraws: vec![9.0, 3.0, 5.0, 40.0, -4.0],
            cpu_ms: 0.0,
            frame_bytes: 0,
            frame_lines: 0,
        };
        assert_eq!(watch.median_max_ms(), (5.0, 40.0));
        assert!(run_time(std::process::id()).expect("our own") > Duration::ZERO);
    }
}
