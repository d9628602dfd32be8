//! End-to-end: a corpus of broken and hostile rules files, through the
//! rules directory and through `traffic-shift apply`. Each is refused with
//! one clear line naming the file, the agent stays up, the 80/20 split in
//! force before stays in force after every one, and feeding the corpus
//! again and again does not grow the agent's memory. As root, in a netns
//! and cgroup of its own.
//!
//! The small files of the corpus are `fuzz/seeds/rules-file/hostile-*`
//! (also the fuzz targets' seeds); the big ones are made here.

use std::path::Path;

use traffic_shift_agent::admin;
use traffic_shift_tests::{SERVICE_V4, Scenario, tcp_echo_rule};

const V2_20: &str = "examples/vs-20-v2.yaml";

/// The corpus: file name and content.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/rules-file");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&seeds)
        .unwrap_or_else(|e| panic!("{}: {e}", seeds.display()))
        .map(|entry| entry.expect("seed").path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("hostile-"))
        })
        .map(|path| {
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read seed"))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 13, "the seed corpus is missing: {files:?}");
    let deep_block: String = (0..3000)
        .map(|i| " ".repeat(i % 200 + i / 200) + "a:\n")
        .collect();
    // Valid-looking resources, a thousand VirtualServices that all claim
    // the service's address: refused when resolved.
    let conflicting: String = (0..1000)
        .map(|i| {
            tcp_echo_rule("virtual-service.yaml")
                .replace("name: tcp-echo\n", &format!("name: tcp-echo-{i}\n"))
                + "---\n"
        })
        .collect();
    files.extend(
        [
            (
                "big.yaml".to_owned(),
                format!("# {}\n", "x".repeat(10 << 20)),
            ),
            (
                "deep-flow.yaml".to_owned(),
                format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
            ),
            ("deep-block.yaml".to_owned(), deep_block),
            (
                "many-documents.yaml".to_owned(),
                "---\n".repeat(traffic_shift_config::MAX_NODES + 1),
            ),
            ("many-valid-looking-documents.yaml".to_owned(), conflicting),
            // Just under 4 MiB, refused once parsed: the agent keeps such a
            // text (to not parse it again) while the file is there.
            (
                "almost-4-mib.yaml".to_owned(),
                format!("# {}\nkind: [\n", "x".repeat((4 << 20) - 20)),
            ),
        ]
        .map(|(name, text)| (name, text.into_bytes())),
    );
    files
}

/// v2's share of 100 connections: 20 while 80/20 is in force (smooth
/// selection: any 100 consecutive connections get the weight to within one).
fn assert_80_20(s: &mut Scenario, after: &str) {
    let (one, two) = s.client.burst(SERVICE_V4, 100);
    assert!(
        one + two == 100 && (19..=21).contains(&two),
        "after {after}: the agent is up and 80/20 is still in force: v2 got {two} of 100"
    );
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One round: every file of the corpus written into the rules directory
/// (refused, one line naming it) and applied (refused, nothing changed),
/// the split checked after each; then removed.
fn feed(s: &mut Scenario, corpus: &[(String, Vec<u8>)], round: usize, apply: bool) {
    let dir = s.agent.state_dir().join("to-apply");
    std::fs::create_dir_all(&dir).expect("dir");
    for (name, text) in corpus {
        // New names each round: the agent reports each file once.
        let name = &format!("r{round}-{name}");

        let event = s.agent.write_rules(name, text);
        assert_eq!(
            event["result"], "refused",
            "{name} must be refused: {event}"
        );
        let error = event["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(name.as_str()) && error.lines().count() == 1,
            "{name}: one line naming the file: {error}"
        );
        assert_80_20(s, &format!("{name} in the rules directory"));

        if !apply {
            continue;
        }
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        let path = path.display().to_string();
        let out = s.agent.ctl(&["apply", "-f", &path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name}: apply refused: {stderr}"
        );
        assert!(
            stderr.contains(&path) && stderr.lines().all(|l| l.len() < 1000),
            "{name}: errors that name the file, one short line each:\n{stderr:.2000}"
        );
        assert!(
            stderr.lines().count() <= traffic_shift_config::MAX_ERRORS + 2,
            "{name}: a bounded list of errors, not one per document:\n{stderr:.2000}"
        );
        assert_80_20(s, &format!("apply -f {name}"));
    }
    // Gone from the rules directory: the agent forgets them.
    for (name, _) in corpus {
        std::fs::remove_file(s.agent.rules.join(format!("r{round}-{name}"))).expect("remove");
    }
    // The CLI refuses files over 4 MiB itself; the agent does too.
    let response = admin::call(
        &s.agent.admin_socket,
        &admin::Request::Apply {
            files: vec![admin::FileText {
                path: "big.yaml".into(),
                text: format!("# {}\n", "x".repeat(5 << 20)),
            }],
            dry_run: false,
        },
    )
    .expect("the agent answers");
    let admin::Response::Refused { errors } = response else {
        panic!("a 5 MiB file must be refused by the agent: {response:?}");
    };
    assert!(
        errors.len() == 1 && errors[0].contains("big.yaml") && errors[0].contains("split it"),
        "{errors:?}"
    );
}

/// Rounds after the first.
const ROUNDS: usize = 3;

#[test]
fn hostile_files_are_refused_the_split_stays_and_memory_stays_bounded() {
    let mut s = Scenario::tcp_echo("hostile", &tcp_echo_rule(V2_20));
    // The debug build takes seconds to parse and resolve the thousand
    // documents and the 4 MiB file.
    s.agent.event_timeout = std::time::Duration::from_mins(1);
    let corpus = corpus();
    let pid = s.agent.process.child.id();
    let start = memory_kib(pid);
    feed(&mut s, &corpus, 0, true);
    let first = memory_kib(pid);
    // Again through the rules directory, where the agent keeps state per
    // file (apply keeps nothing of a refused request).
    let mut rounds = Vec::new();
    for round in 1..=ROUNDS {
        feed(&mut s, &corpus, round, false);
        rounds.push(memory_kib(pid));
    }
    let last = memory_kib(pid);
    eprintln!(
        "agent memory (VmRSS, VmHWM) in KiB: at start {start:?}, after one round of {} files both ways {first:?}, after each of {ROUNDS} more rounds {rounds:?}",
        corpus.len()
    );
    // The first round reaches the peak: the biggest parse allowed (the
    // node limit, the 4 MiB files) and the texts the agent keeps of refused
    // files while they are there (so as not to parse them again). Later
    // rounds parse the same sizes under new names and the files are
    // removed after each: the memory is reused, not added to. Kept texts of
    // removed files would add ~6 MiB a round (the 4 MiB, the 1.2 MB and the
    // 0.7 MB files; measured: +26 to +31 MiB over three rounds): 22 MiB
    // catches that and leaves the allocator its slack (measured: +5.5 MiB
    // quiet, +15.7 MiB at load 24).
    let (rss_growth, hwm_growth) = (last.0.saturating_sub(first.0), last.1 - first.1);
    assert!(
        hwm_growth < 22 << 10 && rss_growth < 22 << 10,
        "memory grew over {ROUNDS} rounds of the same corpus: VmRSS +{rss_growth} KiB, VmHWM +{hwm_growth} KiB ({first:?} -> {last:?})"
    );
    // The peak itself: the agent at start plus one parse bounded by
    // MAX_NODES (~100 MiB at ~400 bytes a node) and the kept texts.
    assert!(
        last.1 < start.1 + (256 << 10),
        "VmHWM {} KiB: more than 256 MiB over the {} KiB at start",
        last.1,
        start.1
    );
    assert!(
        s.agent.process.child.try_wait().expect("wait").is_none(),
        "the agent is still running"
    );
}
