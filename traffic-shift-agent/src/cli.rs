//! CLI commands that do not need the agent. Output goes to an injected
//! writer so they are tested in-process.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use traffic_shift_datapath::{compile, inspect};

use traffic_shift_config as config;

use traffic_shift_config::model::RoutingModel;

use crate::status::{Status, View};

/// `validate -f PATH...`: parses, resolves and compiles the files together,
/// as the agent would; prints each warning as a `warning: ` line, then the
/// routes, or every refusal as a `refused: ` line (all errors of every
/// document of every file, and those across files). The files that parse
/// are resolved even when others do not, as the agent would apply them.
/// Returns whether everything was valid (warnings do not count).
pub fn validate(
    paths: &[PathBuf],
    namespace: Option<&str>,
    out: &mut impl Write,
) -> std::io::Result<bool> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.is_dir() {
            let (ok, bad) = config::load_dir(path);
            files.extend(ok);
            errors.extend(bad.iter().map(ToString::to_string));
        } else {
            match config::read_rules_file(path)
                .map_err(|error| vec![error])
                .and_then(|text| config::parse_file_all(path, &text))
            {
                Ok(file) => files.push(file),
                Err(bad) => errors.extend(bad.iter().map(ToString::to_string)),
            }
        }
    }
    let (model, warnings) = config::resolve_all_in(&files, namespace);
    for warning in files.iter().flat_map(|file| &file.warnings) {
        writeln!(out, "warning: {warning}")?;
    }
    for warning in &warnings {
        writeln!(out, "warning: {warning}")?;
    }
    let model = match model {
        Ok(model) => model,
        Err(bad) => {
            errors.extend(bad.iter().map(ToString::to_string));
            RoutingModel::default()
        }
    };
    if errors.is_empty() {
        match traffic_shift_datapath::netns::is_local_in(std::path::Path::new("/proc/self/ns/net"))
            .map_err(|e| format!("cannot list this node's addresses: {e}"))
            .and_then(|is_local| {
                // Offline: as an agent run with --xdp-iface would take them.
                compile::compile(
                    &model,
                    &is_local,
                    true,
                    &traffic_shift_datapath::stats::StatIds::default(),
                    &traffic_shift_datapath::limits::Limits::default(),
                    &compile::ProxyAddrs::default(),
                )
                .map_err(|e| e.to_string())
            }) {
            Ok(_) => {
                for route in &model.routes {
                    let listeners: Vec<String> = route
                        .listeners
                        .iter()
                        .map(ToString::to_string)
                        .chain(route.prefixes.iter().map(ToString::to_string))
                        .collect();
                    writeln!(
                        out,
                        "route {} ({}): {} -> {:?}",
                        route.key,
                        route.source.display(),
                        listeners.join(" "),
                        route.selection
                    )?;
                    for dest in &route.destinations {
                        write_destination(out, "  ", dest)?;
                    }
                }
                for listener in &model.http {
                    write_http_listener(out, listener)?;
                }
                writeln!(
                    out,
                    "valid: {} files, {} routes, {} http listeners",
                    files.len(),
                    model.routes.len(),
                    model.http.len()
                )?;
                return Ok(true);
            }
            Err(err) => errors.push(err),
        }
    }
    for err in &errors {
        writeln!(out, "refused: {err}")?;
    }
    Ok(false)
}

/// `  host subset v1 weight 80: 127.0.0.1:19001 ...`
fn write_destination(
    out: &mut impl std::io::Write,
    indent: &str,
    dest: &traffic_shift_config::model::Destination,
) -> std::io::Result<()> {
    let endpoints: Vec<String> = dest.endpoints.iter().map(|e| e.addr.to_string()).collect();
    writeln!(
        out,
        "{indent}{} subset {} weight {}: {}",
        dest.host,
        dest.subset.as_deref().unwrap_or("-"),
        dest.weight,
        if endpoints.is_empty() {
            "no endpoints (refused)".to_owned()
        } else {
            endpoints.join(" ")
        }
    )
}

/// An HTTP listener, its virtual hosts and their routes, for `validate`.
fn write_http_listener(
    out: &mut impl std::io::Write,
    listener: &traffic_shift_config::model::HttpListener,
) -> std::io::Result<()> {
    let listeners: Vec<String> = listener
        .listeners
        .iter()
        .map(ToString::to_string)
        .chain(listener.prefixes.iter().map(ToString::to_string))
        .collect();
    writeln!(
        out,
        "http {}: {} -> L7 proxy",
        listener.key,
        listeners.join(" ")
    )?;
    for vhost in &listener.virtual_hosts {
        writeln!(
            out,
            "  virtual host {} ({}, {})",
            vhost.domains.join(" "),
            vhost.virtual_service,
            vhost.source.display()
        )?;
        for route in &vhost.routes {
            writeln!(
                out,
                "    {} ({} match{}) -> {:?}",
                route.key,
                route.matches.len(),
                if route.matches.len() == 1 { "" } else { "es" },
                route.selection
            )?;
            for dest in &route.destinations {
                write_destination(out, "      ", &dest.destination)?;
            }
            for mirror in route.all_mirrors() {
                write_destination(
                    out,
                    &format!("      mirror {}% ", mirror.percentage),
                    &mirror.destination,
                )?;
            }
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    File(#[from] crate::status::files::ReadError),
    #[error(transparent)]
    NoSuchRoute(#[from] crate::status::view::NoSuchRoute),
    #[error(transparent)]
    Write(#[from] std::io::Error),
}

impl From<crate::status::ViewError> for StatusError {
    fn from(err: crate::status::ViewError) -> Self {
        match err {
            crate::status::ViewError::NoSuchRoute(e) => Self::NoSuchRoute(e),
            crate::status::ViewError::Write(e) => Self::Write(e),
        }
    }
}

/// Reads and parses the agent's status file.
/// `maps [NAME]`: the maps pinned under `bpffs` (or the one named),
/// decoded ([`traffic_shift_datapath::inspect`]), route ids and counter
/// slots named from the agent's status file. Without the file (no agent
/// running) the ids are printed alone; the returned note says why. The
/// routed connections (`TS_CONNS`) are those of the namespace at `netns`.
pub fn maps(
    bpffs: &Path,
    name: Option<&str>,
    status_file: &Path,
    netns: &Path,
    out: &mut impl Write,
) -> Result<Option<String>, MapsError> {
    let (names, note) = match read_status(status_file) {
        Ok(status) => (names(&status), None),
        Err(err) => (
            inspect::Names::default(),
            Some(format!("ids are not named: {err}")),
        ),
    };
    let text = inspect::render(bpffs, name, &names, netns)?;
    out.write_all(text.as_bytes())?;
    Ok(note)
}

/// The names of kernel ids the agent reports in its status.
pub fn names(status: &Status) -> inspect::Names {
    inspect::Names {
        routes: status.kernel_routes.clone(),
        slots: status
            .counter_slots
            .iter()
            .map(|(&id, slot)| {
                let name = inspect::SlotName {
                    route: slot.route.clone(),
                    destination: slot.destination.clone(),
                    endpoint: slot.endpoint.clone(),
                };
                (id, name)
            })
            .collect(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error(transparent)]
    Inspect(#[from] inspect::InspectError),
    #[error(transparent)]
    Write(#[from] std::io::Error),
}

/// The status file with its delta (see [`crate::status::files`]): what it
/// says holds as of the files' time (an idle agent touches them instead
/// of writing the same status again).
pub fn read_status(path: &Path) -> Result<Status, StatusError> {
    Ok(crate::status::files::read_status(path)?)
}

/// `status`: the agent's routes, gateway endpoints and kernel counters, as
/// tables no wider than `width`, as seen at `now_ms` (see
/// [`crate::status::render`]), as `view` shows them: a line per route from
/// the status' summary when there are many (a tenth of the reading); one
/// route with only it parsed of the status file.
pub fn status(
    path: &Path,
    view: &View,
    width: usize,
    now_ms: u64,
    out: &mut impl Write,
) -> Result<(), StatusError> {
    if view.route.is_some() {
        let status =
            crate::status::files::read_routes(path, |key, service| view.shows(key, service))?;
        view.render(status, width, now_ms, out)?;
        return Ok(());
    }
    if !view.full
        // No summary: an agent of an earlier version.
        && let Ok((summary, tcp_routes)) = match view.busiest {
            // A screen's worth (`--watch`): only those lines built.
            Some(k) => crate::status::files::read_busiest(path, k),
            None => crate::status::files::read_summary(path).map(|s| {
                let n = s.routes.len();
                (s, n)
            }),
        }
        && view.summarizes(tcp_routes + summary.head.http_routes.len())
    {
        view.render_summary(&summary, tcp_routes, width, now_ms, out)?;
        return Ok(());
    }
    view.render(read_status(path)?, width, now_ms, out)?;
    Ok(())
}

/// What `status --watch` draws for and waits on: the terminal
/// ([`Terminal`]), or a test.
pub trait Screen {
    /// Columns to fit, and rows when known (a frame is cut to them).
    fn size(&mut self) -> (usize, Option<usize>);
    /// Unix time, milliseconds.
    fn now_ms(&mut self) -> u64;
    /// Waits until the next frame is due (at most `interval`); `false`: stop.
    fn wait(&mut self, interval: Duration) -> bool;
}

/// Switch to the alternate screen and hide the cursor (as `top` does), and back.
const ENTER_SCREEN: &str = "\x1b[?1049h\x1b[?25l";
const LEAVE_SCREEN: &str = "\x1b[?25h\x1b[?1049l";

/// Puts the terminal back however `watch` ends, a panic included.
struct AlternateScreen<'a, W: Write> {
    out: &'a mut W,
    active: bool,
}

impl<W: Write> Drop for AlternateScreen<'_, W> {
    fn drop(&mut self) {
        if self.active {
            let _ = self.out.write_all(LEAVE_SCREEN.as_bytes());
            let _ = self.out.flush();
        }
    }
}

/// `status --watch`: draws the status file every `interval` until
/// `screen.wait` says stop. On a terminal (`in_place`) each frame replaces
/// the last on the alternate screen; otherwise frames follow each other,
/// a blank line apart. A missing or unreadable file is shown as its error
/// and read again at the next frame.
pub fn watch(
    path: &Path,
    view: &View,
    interval: Duration,
    in_place: bool,
    screen: &mut impl Screen,
    out: &mut impl Write,
) -> std::io::Result<()> {
    watch_frames(
        interval,
        in_place,
        screen,
        out,
        |width, height, now_ms, frame| {
            // A screen's worth of the busiest routes (the rest would be cut).
            let view = View {
                busiest: height.map(|h| h.saturating_sub(6).max(1)),
                ..view.clone()
            };
            match status(path, &view, width, now_ms, frame) {
                Ok(()) => Ok(()),
                Err(StatusError::Write(err)) => Err(err),
                Err(err) => crate::status::render_message(
                    &format!("{err}\nreading it again every {} s", interval.as_secs_f64()),
                    width,
                    frame,
                ),
            }
        },
    )
}

/// Draws what `draw` writes (for a width and the time) every `interval`
/// until `screen.wait` says stop, as [`watch`] describes: in place on a
/// terminal, else frames a blank line apart. `status --watch` draws the
/// status file with it, `status --fleet --watch` the store's nodes.
pub fn watch_frames(
    interval: Duration,
    in_place: bool,
    screen: &mut impl Screen,
    out: &mut impl Write,
    mut draw: impl FnMut(usize, Option<usize>, u64, &mut Vec<u8>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let screen_guard = AlternateScreen {
        out,
        active: in_place,
    };
    if in_place {
        screen_guard.out.write_all(ENTER_SCREEN.as_bytes())?;
    }
    let out = &mut *screen_guard.out;
    let mut first = true;
    loop {
        let (width, height) = screen.size();
        let mut frame = Vec::new();
        draw(
            width,
            height.filter(|_| in_place),
            screen.now_ms(),
            &mut frame,
        )?;
        let frame = String::from_utf8(frame).expect("the renderer writes UTF-8");
        if in_place {
            let mut lines: Vec<&str> = frame.lines().collect();
            let more;
            if let Some(height) = height.filter(|&h| h > 0 && lines.len() > h) {
                let hidden = lines.len() - (height - 1);
                more = format!("… {hidden} more lines")
                    .chars()
                    .take(width)
                    .collect::<String>();
                lines.truncate(height - 1);
                lines.push(&more);
            }
            // Home, each line over the old one, then clear what is left:
            // no flicker of a whole-screen clear.
            write!(out, "\x1b[H{}\x1b[K\x1b[J", lines.join("\x1b[K\n"))?;
        } else {
            if !first {
                writeln!(out)?;
            }
            out.write_all(frame.as_bytes())?;
        }
        out.flush()?;
        first = false;
        if !screen.wait(interval) {
            return Ok(());
        }
    }
}

/// The width `status` fits: `--width`, else the terminal's, else
/// `$COLUMNS`, else 80.
pub fn resolve_width(flag: Option<usize>, terminal: Option<usize>, columns: Option<&str>) -> usize {
    flag.or(terminal)
        .or_else(|| columns.and_then(|c| c.trim().parse().ok()))
        .filter(|&w| w > 0)
        .unwrap_or(80)
}

/// Columns and rows of the terminal on stdout, if it is one.
pub fn terminal_size() -> (Option<usize>, Option<usize>) {
    match rustix::termios::tcgetwinsize(std::io::stdout()) {
        Ok(size) => (
            Some(usize::from(size.ws_col)).filter(|&c| c > 0),
            Some(usize::from(size.ws_row)).filter(|&r| r > 0),
        ),
        Err(_) => (None, None),
    }
}

/// Unix time now, milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The real terminal: its size now (unless `--width`), and waits that end
/// early on a resize (redraw) or Ctrl-C / SIGTERM / SIGHUP (stop).
pub struct Terminal {
    width: Option<usize>,
    runtime: tokio::runtime::Runtime,
    stop: [tokio::signal::unix::Signal; 3],
    resize: tokio::signal::unix::Signal,
}

impl Terminal {
    pub fn new(width: Option<usize>) -> std::io::Result<Terminal> {
        use tokio::signal::unix::{SignalKind, signal};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let _context = runtime.enter();
        Ok(Terminal {
            width,
            stop: [
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::hangup())?,
            ],
            resize: signal(SignalKind::window_change())?,
            runtime,
        })
    }
}

impl Screen for Terminal {
    fn size(&mut self) -> (usize, Option<usize>) {
        let (columns, rows) = terminal_size();
        let env = std::env::var("COLUMNS").ok();
        (resolve_width(self.width, columns, env.as_deref()), rows)
    }

    fn now_ms(&mut self) -> u64 {
        now_ms()
    }

    fn wait(&mut self, interval: Duration) -> bool {
        let [interrupt, terminate, hangup] = &mut self.stop;
        let resize = &mut self.resize;
        self.runtime.block_on(async {
            tokio::select! {
                _ = interrupt.recv() => false,
                _ = terminate.recv() => false,
                _ = hangup.recv() => false,
                _ = resize.recv() => true,
                () = tokio::time::sleep(interval) => true,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn rules(dir: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../rules")
            .join(dir)
    }

    fn run(paths: &[PathBuf]) -> (bool, String) {
        run_in(paths, None)
    }

    fn run_in(paths: &[PathBuf], namespace: Option<&str>) -> (bool, String) {
        let mut out = Vec::new();
        let ok = validate(paths, namespace, &mut out).expect("writing to a Vec");
        (ok, String::from_utf8(out).expect("UTF-8 output"))
    }

    /// `validate --namespace`: the rules as the agent with `--namespace`
    /// takes them. Two VirtualServices of one service, each private to its
    /// namespace, conflict when every rule applies, not in either namespace.
    #[test]
    fn validate_in_a_namespace_applies_export_to() {
        let dir = std::env::temp_dir().join(format!("ts-validate-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let shipped = |file: &str| {
            std::fs::read_to_string(rules("tcp-echo").join(file)).expect("the shipped rules")
        };
        let private = |namespace: &str, subset: &str| {
            shipped("examples/vs-all-v1.yaml")
                .replace(
                    "  name: tcp-echo\n",
                    &format!("  name: tcp-echo\n  namespace: {namespace}\n"),
                )
                .replace("spec:\n", "spec:\n  exportTo: [\".\"]\n")
                .replace("subset: v1", &format!("subset: {subset}"))
                .replace("  - tcp-echo-gateway", "  - default/tcp-echo-gateway")
                .replace("[tcp-echo-gateway]", "[default/tcp-echo-gateway]")
        };
        let files = [
            ("service-entry.yaml", shipped("service-entry.yaml")),
            ("destination-rule.yaml", shipped("destination-rule.yaml")),
            ("gateway.yaml", shipped("gateway.yaml")),
            ("vs-a.yaml", private("a", "v1")),
            ("vs-b.yaml", private("b", "v2")),
        ];
        for (name, text) in &files {
            std::fs::write(dir.join(name), text).expect("write");
        }
        let (ok, out) = run_in(std::slice::from_ref(&dir), None);
        assert!(
            !ok,
            "every rule applies: the two VirtualServices conflict:\n{out}"
        );
        for namespace in ["a", "b"] {
            let (ok, out) = run_in(std::slice::from_ref(&dir), Some(namespace));
            assert!(ok, "in {namespace}, its own VirtualService only:\n{out}");
            assert!(out.contains(&format!("{namespace}/tcp-echo/")), "{out}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_shipped_tcp_echo_rules_are_valid() {
        let (ok, out) = run(&[rules("tcp-echo")]);
        assert!(ok, "rules/tcp-echo must validate:\n{out}");
        assert!(
            out.contains("route default/tcp-echo/tcp[0]/port 9000"),
            "{out}"
        );
        assert!(out.contains("127.100.0.1:9000"), "{out}");
        assert!(
            out.contains("subset v1 weight 1: 127.0.0.1:19001 [::1]:19001"),
            "{out}"
        );
        assert!(
            out.contains(
                "route default/tcp-echo/tcp[0]/gateway default/tcp-echo-gateway port 31400"
            ),
            "{out}"
        );
        assert!(out.contains("0.0.0.0:31400 [::]:31400"), "{out}");
        assert!(
            out.ends_with("valid: 4 files, 2 routes, 0 http listeners\n"),
            "{out}"
        );
    }

    #[test]
    fn the_example_rollouts_validate_with_their_rules_and_their_canary_at_weight_0() {
        for (dir, canary) in [
            (
                "tcp-echo",
                "subset v2 weight 0: 127.0.0.1:19002 [::1]:19002",
            ),
            ("bookinfo", "subset v3 weight 0: 127.0.0.1:19083"),
        ] {
            let (ok, out) = run(&[rules(dir), rules(dir).join("examples/rollout.yaml")]);
            assert!(ok, "rules/{dir} with examples/rollout.yaml:\n{out}");
            assert!(out.contains(canary), "{out}");
        }
    }

    #[test]
    fn each_example_virtual_service_is_valid_with_the_service_and_rule() {
        for example in ["vs-all-v1.yaml", "vs-20-v2.yaml", "vs-all-v2.yaml"] {
            let (ok, out) = run(&[
                rules("tcp-echo/service-entry.yaml"),
                rules("tcp-echo/destination-rule.yaml"),
                rules("tcp-echo/gateway.yaml"),
                rules("tcp-echo/examples").join(example),
            ]);
            assert!(ok, "{example}:\n{out}");
        }
    }

    #[test]
    fn validate_lists_every_error_of_every_file_and_the_warnings() {
        let dir = std::env::temp_dir().join(format!("ts-validate-all-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let vs =
            std::fs::read_to_string(rules("tcp-echo/examples/vs-20-v2.yaml")).expect("example");
        // Two errors in one document, and a weight total that only warns.
        let two_errors = dir.join("vs.yaml");
        std::fs::write(
            &two_errors,
            vs.replace("weight: 20", "weight: -20")
                .replace("subset: v1", "subset: V_1"),
        )
        .expect("write");
        let bad_gateway = dir.join("gateway.yaml");
        let gateway = std::fs::read_to_string(rules("tcp-echo/gateway.yaml")).expect("gateway");
        std::fs::write(&bad_gateway, gateway.replace("number: 31400", "number: 0")).expect("write");
        let warns = dir.join("vs-warn.yaml");
        std::fs::write(&warns, vs.replace("weight: 20", "weight: 70")).expect("write");

        let (ok, out) = run(&[
            rules("tcp-echo/service-entry.yaml"),
            rules("tcp-echo/destination-rule.yaml"),
            bad_gateway,
            two_errors,
        ]);
        assert!(!ok, "refused:\n{out}");
        let refused: Vec<&str> = out.lines().filter(|l| l.starts_with("refused: ")).collect();
        assert_eq!(refused.len(), 3, "three errors in two files:\n{out}");
        for part in [
            "gateway.yaml: document 1 (Gateway default/tcp-echo-gateway): spec.servers[0].port.number: port number 0 must be in the range 1..65535 (line ",
            "vs.yaml: document 1 (VirtualService default/tcp-echo): spec.tcp[0].route[0].destination.subset: subset name is invalid: V_1 (line ",
            "vs.yaml: document 1 (VirtualService default/tcp-echo): spec.tcp[0].route[1].weight: weight -20 < 0 (line ",
        ] {
            assert!(out.contains(part), "names {part:?}:\n{out}");
        }

        let (ok, out) = run(&[
            rules("tcp-echo/service-entry.yaml"),
            rules("tcp-echo/destination-rule.yaml"),
            rules("tcp-echo/gateway.yaml"),
            warns,
        ]);
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert!(ok, "a warning does not refuse:\n{out}");
        let first = out.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("warning: ")
                && first.contains("spec.tcp[0].route: total destination weight is 150, not 100: weights are relative, so the destinations get 80/150, 70/150 of the connections"),
            "the warning line first:\n{out}"
        );
        assert!(
            out.contains("subset v2 weight 70"),
            "applied as written:\n{out}"
        );
    }

    #[test]
    fn a_bad_file_is_one_refused_line_with_file_path_and_line() {
        let dir = std::env::temp_dir().join(format!("ts-validate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let vs =
            std::fs::read_to_string(rules("tcp-echo/examples/vs-20-v2.yaml")).expect("example");
        let bad = dir.join("vs.yaml");
        std::fs::write(&bad, vs.replace("weight: 20", "weight: -20")).expect("write");
        let (ok, out) = run(&[
            rules("tcp-echo/service-entry.yaml"),
            rules("tcp-echo/destination-rule.yaml"),
            bad,
        ]);
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert!(!ok, "a negative weight is refused:\n{out}");
        assert_eq!(out.lines().count(), 1, "one line: {out}");
        for part in [
            "refused: ",
            "vs.yaml",
            "document 1",
            "spec.tcp[0].route[1].weight",
            "line ",
            "weight -20 < 0",
        ] {
            assert!(out.contains(part), "names {part:?}: {out}");
        }
    }

    /// A status file in a fresh directory, removed on drop.
    struct StatusFile {
        dir: PathBuf,
        path: PathBuf,
    }

    impl StatusFile {
        fn new(name: &str) -> StatusFile {
            let dir = std::env::temp_dir().join(format!("ts-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let path = dir.join("status.json");
            StatusFile { dir, path }
        }

        /// Written as the agent writes it: at the time it took the status.
        fn write(&self, status: &Status) {
            let text = serde_json::to_string(status).expect("status serializes");
            std::fs::write(&self.path, text).expect("write the status file");
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(status.taken_at_ms);
            std::fs::File::options()
                .write(true)
                .open(&self.path)
                .and_then(|f| f.set_modified(at))
                .expect("set the status file's time");
        }
    }

    impl Drop for StatusFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    const NOW_MS: u64 = 1_795_000_000_000;

    fn status_at(generation: u64) -> Status {
        Status {
            generation,
            rules: "/srv/rules".to_owned(),
            taken_at_ms: NOW_MS - 1_000,
            events: [("rewritten".to_owned(), 5)].into(),
            ..Status::default()
        }
    }

    #[test]
    fn status_renders_the_file_once() {
        let file = StatusFile::new("status-once");
        file.write(&status_at(3));
        let mut out = Vec::new();
        status(&file.path, &View::default(), 80, NOW_MS, &mut out).expect("status");
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            "rules /srv/rules, generation 3, as of 1 s ago\n\nKERNEL EVENTS\nrewritten 5\n"
        );
    }

    #[test]
    fn a_status_file_touched_by_an_idle_agent_holds_as_of_the_touch() {
        let file = StatusFile::new("status-touched");
        let mut old = status_at(3);
        old.taken_at_ms = NOW_MS - 60_000;
        file.write(&old);
        let touched = std::time::UNIX_EPOCH + std::time::Duration::from_millis(NOW_MS - 2_000);
        std::fs::File::options()
            .write(true)
            .open(&file.path)
            .and_then(|f| f.set_modified(touched))
            .expect("touch");
        assert_eq!(
            read_status(&file.path).expect("read").taken_at_ms,
            NOW_MS - 2_000
        );
        let mut out = Vec::new();
        status(&file.path, &View::default(), 80, NOW_MS, &mut out).expect("status");
        let out = String::from_utf8(out).expect("UTF-8");
        assert!(
            out.starts_with("rules /srv/rules, generation 3, as of 2 s ago\n"),
            "{out}"
        );
    }

    #[test]
    fn many_routes_are_read_from_the_summary() {
        let file = StatusFile::new("status-summary");
        file.write(&status_at(4));
        let summary = crate::status::Summary {
            head: status_at(4),
            routes: (0..31)
                .map(|i| crate::status::RouteLine {
                    route: format!("default/svc-{i:02}/tcp[0]/port 9000"),
                    destinations: vec![("v1".to_owned(), 100, 3, 9)],
                })
                .collect(),
        };
        std::fs::write(
            crate::status::summary_path(&file.path),
            serde_json::to_string(&summary).expect("serializes"),
        )
        .expect("write the summary");
        let at = std::time::UNIX_EPOCH + Duration::from_millis(summary.head.taken_at_ms);
        std::fs::File::options()
            .write(true)
            .open(crate::status::summary_path(&file.path))
            .and_then(|f| f.set_modified(at))
            .expect("set the summary's time");
        let mut out = Vec::new();
        status(&file.path, &View::default(), 80, NOW_MS, &mut out).expect("status");
        let out = String::from_utf8(out).expect("UTF-8");
        assert!(
            out.starts_with(
                "rules /srv/rules, generation 4, as of 1 s ago\n\n31 routes: a line each"
            ),
            "{out}"
        );
        assert!(
            out.contains("\ndefault/svc-30/tcp[0]/port 9000  v1 100%        3  v1 100%       9\n"),
            "{out}"
        );
        // One route: from the status file, which has none of them.
        let one = View {
            route: Some("default/svc-30".to_owned()),
            ..View::default()
        };
        let err =
            status(&file.path, &one, 80, NOW_MS, &mut Vec::new()).expect_err("not in the file");
        assert!(
            err.to_string().starts_with("no route default/svc-30"),
            "{err}"
        );
    }

    #[test]
    fn a_watch_builds_only_the_busiest_lines_and_shows_what_the_whole_summary_would() {
        let file = StatusFile::new("status-busiest");
        let head = Status {
            file_id: 9,
            ..status_at(4)
        };
        file.write(&head);
        let line = |i: u64, minute: u64| crate::status::RouteLine {
            route: format!("default/svc-{i:02}/tcp[0]/port 9000"),
            destinations: vec![("v1".to_owned(), 100, minute, minute * 10)],
        };
        let summary = crate::status::Summary {
            head: head.clone(),
            routes: (0..40).map(|i| line(i, i % 4)).collect(),
        };
        std::fs::write(
            crate::status::summary_path(&file.path),
            serde_json::to_string(&summary).expect("serializes"),
        )
        .expect("write the summary");
        // The delta: line 20 the busiest.
        let delta = serde_json::json!({
            "base": 9,
            "head": Status { generation: 5, ..head.clone() },
            "routes": [],
            "lines": [[20, line(20, 50)]],
        });
        std::fs::write(
            crate::status::files::delta_path(&file.path),
            delta.to_string(),
        )
        .expect("write the delta");
        let busiest = View {
            busiest: Some(3),
            ..View::default()
        };
        let mut out = Vec::new();
        status(&file.path, &busiest, 80, NOW_MS, &mut out).expect("status");
        let out = String::from_utf8(out).expect("UTF-8");
        let whole = crate::status::files::read_summary(&file.path).expect("the whole summary");
        let mut expected = Vec::new();
        busiest
            .render_summary(&whole, whole.routes.len(), 80, NOW_MS, &mut expected)
            .expect("renders");
        assert_eq!(out, String::from_utf8(expected).expect("UTF-8"));
        assert!(out.contains("generation 5"), "the delta's head: {out}");
        assert!(out.contains("40 routes: the 3 busiest"), "{out}");
        let keys: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("default/svc-"))
            .map(|l| &l[..2])
            .collect();
        assert_eq!(keys, ["03", "07", "20"], "{out}");
    }

    #[test]
    fn status_without_a_file_asks_whether_the_agent_runs() {
        let file = StatusFile::new("status-missing");
        let err =
            status(&file.path, &View::default(), 80, NOW_MS, &mut Vec::new()).expect_err("no file");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("cannot read {}: ", file.path.display()))
                && message.contains("is the agent running"),
            "{message}"
        );
        std::fs::write(&file.path, "{").expect("write");
        let err = status(&file.path, &View::default(), 80, NOW_MS, &mut Vec::new())
            .expect_err("not JSON");
        assert!(
            err.to_string().contains("is not an agent status file"),
            "{err}"
        );
    }

    /// Plays the terminal: a fixed size, a clock, and between frames the
    /// changes `steps` makes to the status file; stops after the last.
    struct Script<'a> {
        size: (usize, Option<usize>),
        steps: Vec<Box<dyn FnMut() + 'a>>,
        waits: Vec<Duration>,
    }

    impl Screen for Script<'_> {
        fn size(&mut self) -> (usize, Option<usize>) {
            self.size
        }

        fn now_ms(&mut self) -> u64 {
            NOW_MS
        }

        fn wait(&mut self, interval: Duration) -> bool {
            self.waits.push(interval);
            if self.steps.is_empty() {
                return false;
            }
            self.steps.remove(0)();
            true
        }
    }

    fn watched(file: &StatusFile, in_place: bool, size: (usize, Option<usize>)) -> String {
        let mut script = Script {
            size,
            steps: vec![
                Box::new(|| file.write(&status_at(1))),
                Box::new(|| file.write(&status_at(2))),
            ],
            waits: Vec::new(),
        };
        let mut out = Vec::new();
        watch(
            &file.path,
            &View::default(),
            Duration::from_millis(500),
            in_place,
            &mut script,
            &mut out,
        )
        .expect("watch");
        assert_eq!(script.waits, [Duration::from_millis(500); 3]);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn watch_redraws_in_place_and_waits_out_a_missing_file() {
        let file = StatusFile::new("watch-tty");
        let out = watched(&file, true, (50, Some(10)));
        let frames: Vec<&str> = out
            .strip_prefix(ENTER_SCREEN)
            .and_then(|o| o.strip_suffix(LEAVE_SCREEN))
            .unwrap_or_else(|| panic!("alternate screen entered and left: {out:?}"))
            .split("\x1b[H")
            .skip(1)
            .collect();
        let missing = format!("cannot read {}: ", file.path.display());
        assert_eq!(frames.len(), 3, "{out:?}");
        assert!(frames[0].starts_with(&missing[..20]), "{:?}", frames[0]);
        assert!(
            frames[0].contains("reading it again every 0.5 s"),
            "{:?}",
            frames[0]
        );
        assert_eq!(
            frames[1],
            "rules /srv/rules, generation 1, as of 1 s ago\x1b[K\n\
             \x1b[K\n\
             KERNEL EVENTS\x1b[K\n\
             rewritten 5\x1b[K\x1b[J",
            "each line overwrites the last frame's, the rest of the screen is cleared"
        );
        assert!(
            frames[2].starts_with("rules /srv/rules, generation 2"),
            "{:?}",
            frames[2]
        );
    }

    #[test]
    fn watch_cuts_a_frame_to_the_terminal_height() {
        let file = StatusFile::new("watch-short");
        let out = watched(&file, true, (80, Some(3)));
        let last = out.rsplit("\x1b[H").next().expect("a frame");
        assert_eq!(
            last,
            format!(
                "rules /srv/rules, generation 2, as of 1 s ago\x1b[K\n\x1b[K\n… 2 more lines\x1b[K\x1b[J{LEAVE_SCREEN}"
            )
        );
    }

    #[test]
    fn watch_into_a_pipe_writes_plain_frames() {
        let file = StatusFile::new("watch-pipe");
        let out = watched(&file, false, (80, None));
        assert!(!out.contains('\x1b'), "no escapes into a pipe: {out:?}");
        let frames: Vec<&str> = out.split("\n\nrules ").collect();
        assert_eq!(frames.len(), 3, "{out}");
        assert!(frames[0].starts_with("cannot read "), "{out}");
        assert!(frames[2].starts_with("/srv/rules, generation 2"), "{out}");
    }

    #[test]
    fn width_is_the_flag_else_the_terminal_else_columns_else_80() {
        assert_eq!(resolve_width(Some(50), Some(120), Some("100")), 50);
        assert_eq!(resolve_width(None, Some(120), Some("100")), 120);
        assert_eq!(resolve_width(None, None, Some("100")), 100);
        assert_eq!(resolve_width(None, None, Some("wide")), 80);
        assert_eq!(resolve_width(None, None, Some("0")), 80);
        assert_eq!(resolve_width(None, None, None), 80);
    }
}
