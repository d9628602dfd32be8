//! `traffic-shift rollout status|promote|pause|resume|abort|retry NAME`
//! and `get rollouts`: the rollouts as the running agent has them, over
//! its admin socket.

use std::{io::Write, path::Path, time::Duration};

use super::{Command, RolloutStatus, view};
use crate::{
    admin::{self, Request, Response},
    cli,
    ctl::{EXIT_OK, EXIT_REFUSED, refused, unreachable},
};

/// Asks the agent; the rollouts, or the exit code of the failure printed.
fn ask(
    socket: &Path,
    request: &Request,
    what: &str,
    stderr: &mut dyn Write,
) -> std::io::Result<Result<Vec<RolloutStatus>, u8>> {
    Ok(match admin::call(socket, request) {
        Err(err) => Err(unreachable(&err, stderr)?),
        Ok(Response::Rollouts { rollouts }) => Ok(rollouts),
        Ok(other) => Err(refused(other, what, stderr)?),
    })
}

/// `get rollouts [NAME]`: NAME, PHASE, STEP, WEIGHT, AGE.
pub fn list(
    socket: &Path,
    name: Option<&str>,
    now_ms: u64,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> std::io::Result<u8> {
    let request = Request::Rollouts {
        name: name.map(str::to_owned),
    };
    match ask(socket, &request, "get rollouts", stderr)? {
        Err(code) => Ok(code),
        Ok(rollouts) if rollouts.is_empty() => {
            writeln!(stderr, "No rollouts found.")?;
            Ok(EXIT_OK)
        }
        Ok(rollouts) => {
            stdout.write_all(view::table(&rollouts, now_ms).as_bytes())?;
            Ok(EXIT_OK)
        }
    }
}

/// `rollout status NAME`: once, or with `watch` redrawn every interval
/// (like `kubectl argo rollouts get rollout -w`).
pub fn status(
    socket: &Path,
    name: &str,
    watch: Option<(Duration, bool, &mut cli::Terminal)>,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> std::io::Result<u8> {
    let request = Request::Rollouts {
        name: Some(name.to_owned()),
    };
    let Some((interval, in_place, terminal)) = watch else {
        return match ask(socket, &request, "rollout status", stderr)? {
            Err(code) => Ok(code),
            Ok(rollouts) => {
                for status in &rollouts {
                    stdout.write_all(view::render(status, cli::now_ms()).as_bytes())?;
                }
                Ok(EXIT_OK)
            }
        };
    };
    let mut out = Vec::new();
    let mut stdout = stdout;
    cli::watch_frames(
        interval,
        in_place,
        terminal,
        &mut stdout,
        |_, _, now_ms, frame| {
            out.clear();
            if let Ok(rollouts) = ask(socket, &request, "rollout status", &mut out)? {
                for status in &rollouts {
                    frame.write_all(view::render(status, now_ms).as_bytes())?;
                }
            } else {
                frame.write_all(&out)?;
                writeln!(frame, "asking again every {} s", interval.as_secs_f64())?;
            }
            Ok(())
        },
    )?;
    Ok(EXIT_OK)
}

/// `rollout promote|pause|resume|abort|retry NAME`: the command, then the
/// rollout's phase, step and weight as they stand after it.
pub fn command(
    socket: &Path,
    name: &str,
    action: Command,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> std::io::Result<u8> {
    let request = Request::Rollout {
        name: name.to_owned(),
        action,
    };
    match ask(
        socket,
        &request,
        &format!("rollout {}", action.as_str()),
        stderr,
    )? {
        Err(code) => Ok(code),
        Ok(rollouts) => {
            for s in &rollouts {
                writeln!(
                    stdout,
                    "rollout {} {}: {} at step {}/{}, canary {}",
                    s.name,
                    past(action),
                    s.phase.as_str(),
                    s.step.min(s.steps.len()),
                    s.steps.len(),
                    s.canary_in_force
                        .map_or_else(|| "as written".to_owned(), |w| format!("{w}%"))
                )?;
            }
            Ok(if rollouts.is_empty() {
                EXIT_REFUSED
            } else {
                EXIT_OK
            })
        }
    }
}

fn past(action: Command) -> &'static str {
    match action {
        Command::Promote => "promoted",
        Command::Pause => "paused",
        Command::Resume => "resumed",
        Command::Abort => "aborted",
        Command::Retry => "retried",
    }
}
