//! Scenario 4, split accuracy: N new connections, or N HTTP requests (10, 100, 1000)
//! through each contender that splits 80/20, at concurrency 1 and 8; each reply says
//! which backend answered (tcp-echo v1 `one ...`, v2 `two ...`; http-echo's `version`).
//! Reported: how far the v2 count is from exact (`|v2 - 0.2 * answered|`), median and
//! worst over the repetitions, and the worst per 100. The TCP half's splitters are
//! here, the HTTP half's in `http.rs`; the measuring and the report are shared.

use std::fmt::Write as _;

use anyhow::{Context as _, Result};

use super::{
    client::{Clients, json_number, ts_bench, wait_answers},
    proxies::{ENVOY_ADDR, HAPROXY_ADDR, HAPROXY_RANDOM_ADDR, NGINX_ADDR},
    report::{Skipped, median},
    tcp::{self, Contender},
};

pub const SCENARIO: &str = "split accuracy, TCP connections";
pub const REQUESTS_SCENARIO: &str = "split accuracy, HTTP requests";
pub const COUNTS: [u64; 3] = [10, 100, 1000];
pub const CONCURRENCY: [u32; 2] = [1, 8];
/// Every contender splits 80/20: v2's exact share.
const V2_SHARE: f64 = 0.2;
/// The goal for traffic-shift's default selection: within 1 connection per 100.
const GOAL_PER_100: f64 = 1.0;

/// One way of splitting: a contender of scenario 1 and the selection it uses.
pub struct Splitter {
    pub name: &'static str,
    pub target: &'static str,
    pub in_cgroup: bool,
    /// traffic-shift's default selection: the one the goal is about.
    pub goal: bool,
}

/// The splitters behind the contenders that answered in scenario 1.
pub fn splitters(ready: &[&Contender]) -> Vec<Splitter> {
    let mut out = Vec::new();
    for c in ready {
        let mut add = |name, target, in_cgroup, goal| {
            out.push(Splitter {
                name,
                target,
                in_cgroup,
                goal,
            });
        };
        match c.name {
            "connect-time" => {
                add("traffic-shift connect-time (default)", c.target, true, true);
                // bench/rules/tcp-echo-random.yaml: the same backends, RANDOM.
                add(
                    "traffic-shift connect-time RANDOM",
                    "127.100.0.3:9000",
                    true,
                    false,
                );
            }
            "gateway" => add("traffic-shift gateway (default)", c.target, false, true),
            "haproxy" => {
                add("haproxy roundrobin", HAPROXY_ADDR, false, false);
                add("haproxy random", HAPROXY_RANDOM_ADDR, false, false);
            }
            "nginx" => add("nginx (weighted round robin)", NGINX_ADDR, false, false),
            "envoy" => add("envoy (weighted_clusters)", ENVOY_ADDR, false, false),
            _ => {}
        }
    }
    out
}

/// Of `candidates`, those that answer 10 of 10 (waiting for them as scenario 1 does);
/// the others are added to `skipped` for `scenario` with the reason.
pub fn ready(
    candidates: Vec<Splitter>,
    scenario: &'static str,
    count_run: &mut impl FnMut(&Splitter, u64, u32) -> Result<Sample>,
    skipped: &mut Vec<Skipped>,
) -> Vec<Splitter> {
    let mut out = Vec::new();
    for s in candidates {
        let check = || {
            count_run(&s, 10, 1).map(|r| {
                (r.answered < 10 || r.errors > 0)
                    .then(|| format!("{} of 10 answered, {} errors", r.answered, r.errors))
            })
        };
        match wait_answers(check, || false) {
            None => out.push(s),
            Some(why) => skipped.push(Skipped {
                scenario,
                name: s.name,
                why: format!("{} does not answer ({why})", s.target),
            }),
        }
    }
    out
}

/// `cells[i][j][k]`: `COUNTS[i]`, `CONCURRENCY[j]`, splitter k.
pub type Cells = Vec<Vec<Vec<Cell>>>;

/// Scenario 4's TCP half: of the splitters behind the contenders `answered` in
/// scenario 1, those that answer (the proxies left out of scenario 1 are left out
/// here too), and their cells.
pub fn tcp_half(
    clients: Clients<'_>,
    answered: &[&Contender],
    quick: bool,
    skipped: &mut Vec<Skipped>,
    check_interrupted: &impl Fn() -> Result<()>,
) -> Result<(Vec<Splitter>, Cells)> {
    let mut count_run = |s: &Splitter, n: u64, c: u32| {
        let line = ts_bench(
            clients.bin,
            clients.netns,
            clients.cgroup,
            s.in_cgroup,
            &[
                "--target",
                s.target,
                "--count",
                &n.to_string(),
                "--concurrency",
                &c.to_string(),
            ],
        )?;
        Sample::parse(&line)
    };
    let proxies_out: Vec<Skipped> = skipped
        .iter()
        .filter(|s| s.scenario == tcp::SCENARIO)
        .map(|s| Skipped {
            scenario: SCENARIO,
            name: s.name,
            why: s.why.clone(),
        })
        .collect();
    skipped.extend(proxies_out);
    let splitters = ready(splitters(answered), SCENARIO, &mut count_run, skipped);
    let split_reps = if quick { 1 } else { 5 };
    let split_cells = measure(
        &splitters,
        split_reps,
        "connections",
        &mut count_run,
        check_interrupted,
    )?;
    Ok((splitters, split_cells))
}

/// Every (count, concurrency, splitter) once per repetition, interleaved; `cells[i][j][k]`:
/// `COUNTS[i]`, `CONCURRENCY[j]`, `splitters[k]`. `what` names the unit in the log.
pub fn measure(
    splitters: &[Splitter],
    reps: u32,
    what: &str,
    count_run: &mut impl FnMut(&Splitter, u64, u32) -> Result<Sample>,
    check_interrupted: &impl Fn() -> Result<()>,
) -> Result<Cells> {
    let mut cells: Vec<Vec<Vec<Cell>>> = COUNTS
        .iter()
        .map(|_| {
            CONCURRENCY
                .iter()
                .map(|_| splitters.iter().map(|_| Cell::default()).collect())
                .collect()
        })
        .collect();
    for rep in 1..=reps {
        for (i, &n) in COUNTS.iter().enumerate() {
            for (j, &c) in CONCURRENCY.iter().enumerate() {
                for (k, s) in splitters.iter().enumerate() {
                    check_interrupted()?;
                    let r = count_run(s, n, c)?;
                    eprintln!(
                        "bench: rep {rep}/{reps} split {what} n={n:<4} c={c} {:<38} v2 {:>4} of {:>4} off by {:.1} errors {}",
                        s.name,
                        r.two,
                        r.answered,
                        r.off_by(),
                        r.errors
                    );
                    cells[i][j][k].samples.push(r);
                }
            }
        }
    }
    Ok(cells)
}

/// One `ts-bench --count` run: answered connections (or requests), of them by v2, errors.
pub struct Sample {
    pub answered: u64,
    pub two: u64,
    pub errors: u64,
}

impl Sample {
    pub fn parse(line: &str) -> Result<Self> {
        let field = |key: &str| {
            json_number(line, key).with_context(|| format!("no {key} in ts-bench output {line}"))
        };
        // `requests` in ts-bench's HTTP modes.
        let answered = field("connections").or_else(|_| field("requests"))?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(Self {
            answered: answered as u64,
            two: field("two")? as u64,
            errors: field("errors")? as u64,
        })
    }

    /// `|v2 - 0.2 * answered|`, in connections.
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    pub fn off_by(&self) -> f64 {
        (self.two as f64 - V2_SHARE * self.answered as f64).abs()
    }

    #[allow(clippy::cast_precision_loss)]
    fn off_per_100(&self) -> f64 {
        if self.answered == 0 {
            f64::NAN
        } else {
            self.off_by() * 100.0 / self.answered as f64
        }
    }
}

/// The samples of one (count, concurrency, splitter), one per repetition.
#[derive(Default)]
pub struct Cell {
    pub samples: Vec<Sample>,
}

/// The markdown table, JSON rows and goal lines of `scenario` ([`SCENARIO`] or
/// [`REQUESTS_SCENARIO`]). `cells[i][j][k]`: `COUNTS[i]`, `CONCURRENCY[j]`, `splitters[k]`.
pub fn report(
    scenario: &'static str,
    splitters: &[Splitter],
    cells: &[Vec<Vec<Cell>>],
    skipped: &[Skipped],
    md: &mut String,
    json_rows: &mut Vec<String>,
    goals: &mut String,
) {
    let unit = if scenario == SCENARIO {
        "connections"
    } else {
        "requests"
    };
    let _ = write!(
        md,
        "\n| scenario | {unit} | concurrency | contender | v2, median | off by, median | off by, worst | worst per 100 | errors |\n\
         |---|---:|---:|---|---:|---:|---:|---:|---:|\n"
    );
    for (i, n) in COUNTS.iter().enumerate() {
        for (j, c) in CONCURRENCY.iter().enumerate() {
            for (k, s) in splitters.iter().enumerate() {
                let samples = &cells[i][j][k].samples;
                #[allow(clippy::cast_precision_loss)]
                let twos: Vec<f64> = samples.iter().map(|x| x.two as f64).collect();
                let offs: Vec<f64> = samples.iter().map(Sample::off_by).collect();
                let worst = offs.iter().copied().fold(f64::NAN, f64::max);
                let worst_per_100 = samples
                    .iter()
                    .map(Sample::off_per_100)
                    .fold(f64::NAN, f64::max);
                let errors: u64 = samples.iter().map(|x| x.errors).sum();
                let (v2, off) = (median(&twos), median(&offs));
                let _ = writeln!(
                    md,
                    "| {scenario} | {n} | {c} | {} | {v2:.0} | {off:.1} | {worst:.1} | {worst_per_100:.2} | {errors} |",
                    s.name
                );
                json_rows.push(format!(
                    "    {{\"scenario\": \"{scenario}\", \"{unit}\": {n}, \"concurrency\": {c}, \
                     \"contender\": \"{}\", \"target\": \"{}\", \"v2_median\": {v2}, \"off_by_median\": {off}, \
                     \"off_by_worst\": {worst}, \"worst_per_100\": {worst_per_100:.3}, \"errors\": {errors}, \
                     \"v2_reps\": {:?}, \"answered_reps\": {:?}}}",
                    s.name,
                    s.target,
                    samples.iter().map(|x| x.two).collect::<Vec<_>>(),
                    samples.iter().map(|x| x.answered).collect::<Vec<_>>(),
                ));
                if s.goal {
                    let met = if worst_per_100 <= GOAL_PER_100 && errors == 0 {
                        "met"
                    } else {
                        "not met"
                    };
                    let _ = writeln!(
                        goals,
                        "goal: split within {GOAL_PER_100} per 100 of exact: {:<36} {n:>4} {unit}, concurrency {c}: worst {worst:.1} off ({worst_per_100:.2} per 100) {met}",
                        s.name
                    );
                }
            }
        }
    }
    super::report::unavailable(
        md,
        json_rows,
        skipped,
        scenario,
        "all | all | ",
        "- | - | - | - | - |",
    );
}

#[cfg(test)]
mod tests {
    use super::Sample;

    #[test]
    fn distance_from_exact_is_in_connections_and_per_100() {
        let s = Sample::parse(
            r#"{"target":"x","concurrency":1,"connections":100,"seconds":0.1,"conn_per_sec":1000,"p50_us":1,"p99_us":2,"errors":0,"one":77,"two":23}"#,
        )
        .unwrap();
        assert!((s.off_by() - 3.0).abs() < 1e-9);
        assert!((s.off_per_100() - 3.0).abs() < 1e-9);
        let exact = Sample {
            answered: 10,
            two: 2,
            errors: 0,
        };
        assert!(exact.off_by().abs() < 1e-9);
        let one_off = Sample {
            answered: 1000,
            two: 201,
            errors: 0,
        };
        assert!((one_off.off_per_100() - 0.1).abs() < 1e-9);
    }
}
