//! What the reports of scenarios 1 to 6 share: the row of a contender left out, JSON
//! strings, the median, and the header naming the machine and the run.

use std::{fmt::Write as _, fs, path::Path, process::Command};

use anyhow::Result;

use crate::cmd;

/// A contender left out of a scenario, with the reason.
pub struct Skipped {
    pub scenario: &'static str,
    pub name: &'static str,
    pub why: String,
}

impl Skipped {
    /// The contenders left out before the run (not installable), each from every one
    /// of `scenarios`.
    pub fn of_every<const N: usize>(
        left_out: Vec<(&'static str, String)>,
        scenarios: [&'static str; N],
    ) -> Vec<Self> {
        left_out
            .into_iter()
            .flat_map(|(name, why)| {
                scenarios.map(|scenario| Skipped {
                    scenario,
                    name,
                    why: why.clone(),
                })
            })
            .collect()
    }
}

/// Prints the tables and goal lines, and writes them to `bench/results/latest.md`,
/// and the JSON document to `latest.json`.
pub fn write(root: &Path, table: &str, json: &str, goals: &str) -> Result<()> {
    println!("\n{table}\n{goals}");
    let out = root.join("bench/results");
    fs::create_dir_all(&out)?;
    fs::write(out.join("latest.md"), format!("{table}\n{goals}"))?;
    fs::write(out.join("latest.json"), json)?;
    println!(
        "bench: wrote {} and latest.json",
        out.join("latest.md").display()
    );
    Ok(())
}

/// A scenario run alone (`--only NAME`): prints its table and goal lines and
/// writes them to `bench/results/NAME-latest.md`, its rows to `NAME-latest.json`;
/// `latest.md` stays the full run's.
pub fn write_alone(
    root: &Path,
    name: &str,
    header: &str,
    table: &str,
    json_rows: &[String],
    goals: &str,
) -> Result<()> {
    let md = format!("{header}\n\n{table}\n{goals}");
    println!("\n{md}");
    let out = root.join("bench/results");
    fs::create_dir_all(&out)?;
    let md_file = out.join(format!("{name}-latest.md"));
    fs::write(&md_file, md)?;
    let json = format!(
        "{{\"header\": \"{}\", \"rows\": [\n  {}\n]}}\n",
        json_escape(header),
        json_rows.join(",\n  ")
    );
    fs::write(out.join(format!("{name}-latest.json")), json)?;
    println!("bench: wrote {} and {name}-latest.json", md_file.display());
    Ok(())
}

/// The header of a scenario run alone: the machine, the date, the mode.
pub fn alone_header(what: &str, quick: bool) -> String {
    let Machine {
        date,
        kernel,
        cpus,
        model,
        load,
    } = Machine::probe();
    format!(
        "traffic-shift bench, {date}: kernel {kernel}, {cpus} CPUs ({model}), load average \
         {load} (1, 5, 15 min); {what}, {} run",
        if quick { "--quick" } else { "full" }
    )
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`): the machine may be
/// shared, and a figure is read beside the load it was measured under.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "?".to_owned(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

/// The machine and the time, for a report's header.
struct Machine {
    date: String,
    kernel: String,
    cpus: usize,
    model: String,
    /// `/proc/loadavg`'s 1, 5 and 15 minute figures when the header is written:
    /// other work on the machine moves rates, and the reader should know.
    load: String,
}

impl Machine {
    fn probe() -> Self {
        let probe =
            |c: &mut Command| cmd::probe(c).map_or_else(|| "?".into(), |s| s.trim().to_owned());
        Self {
            date: probe(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
            kernel: probe(Command::new("uname").arg("-r")),
            cpus: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            model: fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|s| {
                    s.lines().find_map(|l| {
                        l.strip_prefix("model name")
                            .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
                    })
                })
                .unwrap_or_else(|| "unknown CPU".into()),
            load: load_average(),
        }
    }
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

/// A contender that could not run still gets its row, with the reason and no number.
pub fn unavailable(
    md: &mut String,
    json_rows: &mut Vec<String>,
    skipped: &[Skipped],
    scenario: &str,
    columns_before: &str,
    dashes: &str,
) {
    for s in skipped.iter().filter(|s| s.scenario == scenario) {
        let _ = writeln!(
            md,
            "| {scenario} | {columns_before}{}: unavailable ({}) | {dashes}",
            s.name,
            s.why.replace('|', "\\|")
        );
        json_rows.push(format!(
            "    {{\"scenario\": \"{scenario}\", \"contender\": \"{}\", \"unavailable\": \"{}\"}}",
            s.name,
            json_escape(&s.why)
        ));
    }
}

/// `s` as the inside of a JSON string.
pub fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// One line naming the machine, the date and the run's settings.
pub fn machine_header(netns: &str, quick: bool, reps: u32, duration: f64) -> String {
    let Machine {
        date,
        kernel,
        cpus,
        model,
        load,
    } = Machine::probe();
    let probe = |c: &mut Command| cmd::probe(c).map_or_else(|| "?".into(), |s| s.trim().to_owned());
    let ports = probe(Command::new("ip").args([
        "netns",
        "exec",
        netns,
        "cat",
        "/proc/sys/net/ipv4/ip_local_port_range",
    ]))
    .replace('\t', "-");
    format!(
        "traffic-shift bench, {date}: kernel {kernel}, {cpus} CPUs ({model}), load average {load} (1, 5, \
         15 min); {} run: {reps} repetition(s) of \
         {duration} s per cell, median shown; client ephemeral ports {ports} (SO_LINGER 0, no TIME_WAIT)",
        if quick { "--quick" } else { "full" }
    )
}

#[cfg(test)]
mod tests {
    use super::{Skipped, json_escape, unavailable};
    use crate::bench::tcp::{SCENARIO, STREAM_SCENARIO};

    #[test]
    fn an_unavailable_contender_gets_a_row_without_numbers() {
        let skipped = [Skipped {
            scenario: STREAM_SCENARIO,
            name: "envoy",
            why: "`pip install` failed: \"no | network\"".into(),
        }];
        let (mut md, mut json) = (String::new(), Vec::new());
        unavailable(&mut md, &mut json, &skipped, SCENARIO, "all | ", "- |");
        assert!(md.is_empty() && json.is_empty(), "other scenario: no row");
        unavailable(
            &mut md,
            &mut json,
            &skipped,
            STREAM_SCENARIO,
            "",
            "- | - | - |",
        );
        assert_eq!(
            md,
            "| one long TCP stream | envoy: unavailable (`pip install` failed: \"no \\| network\") | - | - | - |\n"
        );
        assert_eq!(
            json,
            [
                "    {\"scenario\": \"one long TCP stream\", \"contender\": \"envoy\", \"unavailable\": \"`pip install` failed: \\\"no | network\\\"\"}"
            ]
        );
        assert_eq!(json_escape("a\\b\nc"), "a\\\\b\\u000ac");
    }
}
