//! The live page (`/ui` on the metrics listener, issue 19) in a real
//! browser: headless Chromium loads it during the seed shift (tcp-echo at
//! 80/20, with traffic), the test reads the numbers the page rendered for
//! each version's edge and compares them with `/metrics` and the weights;
//! a phone-sized screenshot is written for the docs.
//!
//! Needs `chromium` (Debian's package; `$CHROMIUM` names another binary).
//! `$UI_SCREENSHOT` names where the screenshot goes (default: the temp dir).

use std::{path::PathBuf, process::Command};

use traffic_shift_tests::{SERVICE_V4, Scenario, metric, tcp_echo_rule};

const ROUTE: &str = "default/tcp-echo/tcp[0]/port 9000";
const OPENED: &str = "istio_tcp_connections_opened_total";

fn chromium() -> Command {
    let bin = std::env::var_os("CHROMIUM").unwrap_or_else(|| "chromium".into());
    let profile = std::env::temp_dir().join(format!("ts-ui-chromium-{}", std::process::id()));
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        // Nothing but the page: no update checks, sync or QUIC probes on a
        // machine without a way out.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--hide-scrollbars",
        // Runs the page's scripts (its first fetch of the status) before
        // dumping or drawing it.
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

fn run(mut cmd: Command) -> String {
    let out = cmd.output().unwrap_or_else(|err| {
        panic!(
            "cannot run chromium ({err}): install it (`apt-get install chromium`) or set $CHROMIUM"
        )
    });
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the `<tspan class="{class}">` of version `dest`'s edge, in
/// the card of `route`, in the DOM Chromium rendered.
fn edge_text<'a>(dom: &'a str, route: &str, dest: &str, class: &str) -> &'a str {
    let at = dom
        .find(&format!("data-route=\"{route}\""))
        .unwrap_or_else(|| panic!("no card for {route} in the page:\n{dom}"));
    let card = &dom[at..];
    let card = &card[..card.find("</section>").unwrap_or(card.len())];
    let at = card
        .find(&format!("data-dest=\"{dest}\""))
        .unwrap_or_else(|| panic!("no edge to {dest} in {route}:\n{card}"));
    let edge = &card[at..];
    let start = edge
        .find(&format!("class=\"{class}\">"))
        .unwrap_or_else(|| panic!("no {class} on the edge to {dest}:\n{edge}"))
        + format!("class=\"{class}\">").len();
    let text = &edge[start..];
    &text[..text.find('<').expect("the tspan ends")]
}

#[test]
fn the_live_page_shows_the_80_20_shift_as_metrics_count_it() {
    let mut s = Scenario::tcp_echo("ui", &tcp_echo_rule("examples/vs-20-v2.yaml"));
    let (one, two) = s.client.burst(SERVICE_V4, 100);
    assert_eq!((one, two), (80, 20), "the smooth split itself");
    let page = s.agent.wait_metrics("100 connections opened", |p| {
        metric(p, OPENED, &[("destination_service", "tcp-echo.local")]) >= 100
    });
    // The page's numbers come from the agent's status: wait until it has
    // the connections too.
    s.agent.wait_status("100 conn/min", |text| {
        text.contains("mesh, service tcp-echo.local:9000, 100 conn/min")
    });
    let url = format!("http://{}/ui", s.agent.metrics_addr());

    let mut dump = chromium();
    dump.arg("--dump-dom").arg(&url);
    let dom = run(dump);
    let mut read = Vec::new();
    for (version, weight) in [("v1", "80%"), ("v2", "20%")] {
        let opened = metric(
            &page,
            OPENED,
            &[
                ("destination_service", "tcp-echo.local"),
                ("destination_version", version),
            ],
        );
        let count = edge_text(&dom, ROUTE, version, "count");
        let share = edge_text(&dom, ROUTE, version, "share");
        let errors = edge_text(&dom, ROUTE, version, "errors");
        let shown_weight = edge_text(&dom, ROUTE, version, "weight");
        eprintln!(
            "page: {ROUTE} -> {version}: {shown_weight}, {share}, {count}, {errors}; /metrics {OPENED}: {opened}"
        );
        assert_eq!(count, format!("{opened}/min"), "{version}");
        assert_eq!(shown_weight, format!("weight {weight}"), "{version}");
        // 80 of 100 observed: the share is the weight.
        assert_eq!(share, format!("seen {weight}"), "{version}");
        assert_eq!(errors, "0 failed", "{version}");
        read.push((version, count.to_owned()));
    }
    assert_eq!(
        read,
        [("v1", "80/min".to_owned()), ("v2", "20/min".to_owned())]
    );
    // Its header says how fresh the status it read is.
    let age = &dom[dom.find("id=\"age\"").expect("the age line")..];
    let age = &age[age.find('>').expect("a tag") + 1..];
    assert!(
        age.starts_with("as of "),
        "the page read its data: {age:.80}"
    );

    let shot = std::env::var_os("UI_SCREENSHOT").map_or_else(
        || std::env::temp_dir().join("traffic-shift-ui.png"),
        PathBuf::from,
    );
    let _ = std::fs::remove_file(&shot);
    let mut screenshot = chromium();
    screenshot
        .arg("--window-size=420,900")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url);
    run(screenshot);
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG at {}", shot.display());
    eprintln!("screenshot: {}", shot.display());
}
