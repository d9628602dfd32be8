//! CLI commands that talk to the running agent over its admin socket
//! ([`crate::admin`]): `apply`, `delete`, `get`, `version`. They print to
//! injected writers and return the exit code, so they run in-process in
//! tests.
//!
//! Exit codes: [`EXIT_OK`] 0; [`EXIT_REFUSED`] 1: the agent refused (invalid
//! rules, not found, not root) or the input cannot be read; 2: usage
//! (clap's); [`EXIT_NO_AGENT`] 3: the agent is not running.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
};

use serde_json::Value as Json;

use traffic_shift_config as config;

use crate::{
    admin::{self, ClientError, FileText, Item, Request, Response},
    applied::{self, KindNames},
};

pub const EXIT_OK: u8 = 0;
pub const EXIT_REFUSED: u8 = 1;
pub const EXIT_NO_AGENT: u8 = 3;

/// `-o` of `get`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table (the default).
    #[default]
    #[value(skip)]
    Table,
    /// The table with each resource's source (`apply` or its rules file).
    Wide,
    /// The resources as Istio YAML (documents `apply -f -` takes back).
    Yaml,
    /// The resources as JSON (several: a kubectl `List`).
    Json,
    /// `kind/name` per line.
    Name,
}

/// The rules files named by `-f`: files, the `*.yaml` / `*.yml` files
/// directly in directories (sorted), `-` for standard input. Every file that
/// cannot be read is reported.
pub fn read_inputs(paths: &[PathBuf], stdin: &mut dyn Read) -> Result<Vec<FileText>, Vec<String>> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            match stdin
                .take(config::MAX_FILE_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
            {
                Err(err) => errors.push(format!("<stdin>: cannot read: {err}")),
                Ok(_) if bytes.len() > config::MAX_FILE_BYTES => errors.push(format!(
                    "<stdin>: more than the {} bytes a rules file may have",
                    config::MAX_FILE_BYTES
                )),
                Ok(_) => match String::from_utf8(bytes) {
                    Ok(text) => files.push(FileText {
                        path: "<stdin>".into(),
                        text,
                    }),
                    Err(_) => errors.push("<stdin>: not UTF-8 text".into()),
                },
            }
            continue;
        }
        let listed = if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| config::is_rules_file(p))
                        .collect();
                    found.sort();
                    if found.is_empty() {
                        errors.push(format!(
                            "{}: no *.yaml or *.yml files in this directory",
                            path.display()
                        ));
                    }
                    found
                }
                Err(err) => {
                    errors.push(format!(
                        "{}: cannot read the directory: {err}",
                        path.display()
                    ));
                    continue;
                }
            }
        } else {
            vec![path.clone()]
        };
        for file in listed {
            match config::read_rules_file(&file) {
                Ok(text) => files.push(FileText {
                    path: file.display().to_string(),
                    text,
                }),
                Err(err) => errors.push(err.to_string()),
            }
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

/// Prints a failure to reach the agent; its exit code.
pub(crate) fn unreachable(err: &ClientError, stderr: &mut dyn Write) -> std::io::Result<u8> {
    writeln!(stderr, "error: {err}")?;
    Ok(if err.is_not_running() {
        EXIT_NO_AGENT
    } else {
        EXIT_REFUSED
    })
}

/// Prints an answer that is not the one expected (a refusal, an error).
pub(crate) fn refused(
    response: Response,
    what: &str,
    stderr: &mut dyn Write,
) -> std::io::Result<u8> {
    match response {
        Response::Refused { errors } => {
            for error in &errors {
                writeln!(stderr, "error: {error}")?;
            }
            writeln!(
                stderr,
                "{what} refused, nothing changed: {} error{}",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            )?;
        }
        Response::Error { message } => writeln!(stderr, "error: {message}")?,
        other => writeln!(
            stderr,
            "error: unexpected answer from the agent to {what}: {other:?}; is it the same version as this client?"
        )?,
    }
    Ok(EXIT_REFUSED)
}

/// `apply -f` / `delete -f`: reads the files, sends them, prints a line per
/// resource (`virtualservice/tcp-echo configured`) and the warnings, or every
/// error.
pub fn change(
    socket: &Path,
    request: impl FnOnce(Vec<FileText>) -> Request,
    paths: &[PathBuf],
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> std::io::Result<u8> {
    let files = match read_inputs(paths, stdin) {
        Ok(files) => files,
        Err(errors) => {
            for error in errors {
                writeln!(stderr, "error: {error}")?;
            }
            return Ok(EXIT_REFUSED);
        }
    };
    let request = request(files);
    let what = request.name();
    match admin::call(socket, &request) {
        Err(err) => unreachable(&err, stderr),
        Ok(Response::Changed {
            changes,
            warnings,
            dry_run,
        }) => {
            for warning in &warnings {
                writeln!(stderr, "warning: {warning}")?;
            }
            for change in &changes {
                writeln!(
                    stdout,
                    "{} {}{}",
                    applied::display_name(&change.kind, &change.name),
                    change.action.as_str(),
                    if dry_run { " (dry run)" } else { "" }
                )?;
            }
            Ok(EXIT_OK)
        }
        Ok(other) => refused(other, what, stderr),
    }
}

/// Which resources `get` shows.
#[derive(Clone, Debug)]
pub struct Selector {
    pub kind: String,
    pub name: Option<String>,
    /// `None`: every namespace (`-A`).
    pub namespace: Option<String>,
}

/// `get KIND [NAME]`: asks the agent for what is in force and prints it.
pub fn get(
    socket: &Path,
    selector: &Selector,
    output: Output,
    now_ms: u64,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> std::io::Result<u8> {
    let kind = match applied::parse_kind(&selector.kind) {
        Ok(kind) => kind,
        Err(err) => {
            writeln!(stderr, "error: {err}")?;
            return Ok(EXIT_REFUSED);
        }
    };
    // Rollouts as a table are their state (NAME PHASE STEP WEIGHT AGE),
    // not their documents: every name of the kind comes here.
    if kind.kind == "Rollout" && matches!(output, Output::Table) {
        let name = selector.name.as_deref();
        return crate::rollout::ctl::list(socket, name, now_ms, stdout, stderr);
    }
    let request = Request::Get {
        kind: Some(kind.kind.to_owned()),
    };
    let items = match admin::call(socket, &request) {
        Err(err) => return unreachable(&err, stderr),
        Ok(Response::Resources { items }) => items,
        Ok(other) => return refused(other, "get", stderr),
    };
    show(kind, selector, items, output, now_ms, stdout, stderr)
}

/// Prints the resources of `items` that `selector` picks, as `get` does.
pub fn show(
    kind: KindNames,
    selector: &Selector,
    items: Vec<Item>,
    output: Output,
    now_ms: u64,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> std::io::Result<u8> {
    let items: Vec<Item> = items
        .into_iter()
        .filter(|i| i.kind == kind.kind)
        .filter(|i| {
            selector
                .namespace
                .as_ref()
                .is_none_or(|n| *n == i.namespace)
        })
        .filter(|i| selector.name.as_ref().is_none_or(|n| *n == i.name))
        .collect();
    if items.is_empty() {
        let place = selector
            .namespace
            .as_ref()
            .map(|n| format!(" in namespace {n:?}"))
            .unwrap_or_default();
        if let Some(name) = &selector.name {
            writeln!(stderr, "error: {} {name:?} not found{place}", kind.singular)?;
            return Ok(EXIT_REFUSED);
        }
        // As kubectl: nothing is not an error.
        match &selector.namespace {
            Some(namespace) => writeln!(stderr, "No resources found in {namespace} namespace.")?,
            None => writeln!(stderr, "No resources found")?,
        }
        return Ok(EXIT_OK);
    }
    let single = selector.name.is_some();
    match output {
        Output::Table | Output::Wide => stdout.write_all(
            table(
                kind,
                &items,
                output == Output::Wide,
                selector.namespace.is_none(),
                now_ms,
            )
            .as_bytes(),
        )?,
        Output::Yaml => stdout.write_all(yaml(&items, single).as_bytes())?,
        Output::Json => stdout.write_all(json(&items, single).as_bytes())?,
        Output::Name => {
            for item in &items {
                writeln!(stdout, "{}", applied::display_name(&item.kind, &item.name))?;
            }
        }
    }
    Ok(EXIT_OK)
}

/// The columns of a kind's table, as Istio's CRDs define them for kubectl
/// (`additionalPrinterColumns`), AGE where Istio puts it.
fn columns(kind: KindNames) -> (Vec<(&'static str, &'static str)>, usize) {
    // (header, field path under spec), then AGE's position among them.
    match kind.kind {
        "VirtualService" => (vec![("GATEWAYS", "gateways"), ("HOSTS", "hosts")], 2),
        "DestinationRule" => (vec![("HOST", "host")], 1),
        "ServiceEntry" => (
            vec![
                ("HOSTS", "hosts"),
                ("LOCATION", "location"),
                ("RESOLUTION", "resolution"),
            ],
            3,
        ),
        "WorkloadEntry" => (vec![("ADDRESS", "address")], 0),
        _ => (vec![], 0),
    }
}

/// A field of the spec as kubectl prints it in a column: strings as they
/// are, lists as JSON (`["mesh","tcp-echo-gateway"]`), missing as nothing.
fn cell(document: &Json, field: &str) -> String {
    match document.get("spec").and_then(|s| s.get(field)) {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// `get`'s table: NAMESPACE (with `-A`), NAME, the kind's columns and AGE,
/// SOURCE (`-o wide`); columns three spaces apart, as kubectl.
pub fn table(kind: KindNames, items: &[Item], wide: bool, namespaces: bool, now_ms: u64) -> String {
    let (fields, age_at) = columns(kind);
    let mut header: Vec<&str> = Vec::new();
    if namespaces {
        header.push("NAMESPACE");
    }
    header.push("NAME");
    let mut field_headers: Vec<&str> = fields.iter().map(|(h, _)| *h).collect();
    field_headers.insert(age_at, "AGE");
    header.extend(field_headers);
    if wide {
        header.push("SOURCE");
    }
    let mut rows = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    for item in items {
        let mut row = Vec::new();
        if namespaces {
            row.push(item.namespace.clone());
        }
        row.push(item.name.clone());
        let mut cells: Vec<String> = fields
            .iter()
            .map(|(_, f)| cell(&item.document, f))
            .collect();
        cells.insert(
            age_at,
            item.created_ms.map_or_else(
                || "<unknown>".to_owned(),
                |created| human_duration(i128::from(now_ms) - i128::from(created)),
            ),
        );
        row.extend(cells);
        if wide {
            row.push(item.source.clone());
        }
        rows.push(row);
    }
    aligned(&rows)
}

/// Rows as kubectl prints a table: each column as wide as its widest
/// cell, three spaces apart, no trailing spaces. Rows may be shorter than
/// the first.
pub fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, text) in row.iter().enumerate() {
            line.push_str(text);
            if c + 1 < row.len() {
                line.push_str(&" ".repeat(widths[c] - text.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `-o yaml`: one resource as its document; several as documents each
/// after a `---` (`apply -f -` takes either back).
pub fn yaml(items: &[Item], single: bool) -> String {
    let mut out = String::new();
    for item in items {
        if !single {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml_ng::to_string(&item.document).expect("JSON serializes as YAML"));
    }
    out
}

/// `-o json`: one resource as its object; several as a kubectl `List`.
pub fn json(items: &[Item], single: bool) -> String {
    let value = if let (true, [item]) = (single, items) {
        item.document.clone()
    } else {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": items.iter().map(|i| i.document.clone()).collect::<Vec<_>>(),
        })
    };
    let mut text = serde_json::to_string_pretty(&value).expect("JSON serializes");
    text.push('\n');
    text
}

/// An age as kubectl prints it (apimachinery's `HumanDuration`): `45s`,
/// `3m20s`, `17m`, `5h10m`, `3d4h`, `400d`, `2y30d`.
pub fn human_duration(ms: i128) -> String {
    // Truncated toward zero, as Go's int(d.Seconds()).
    let seconds = ms / 1000;
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    let with = |big: i128, unit: &str, small: i128, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    if minutes < 10 {
        return with(minutes, "m", seconds % 60, "s");
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return with(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return with(hours / 24, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return with(hours / 24 / 365, "y", (hours / 24) % 365, "d");
    }
    format!("{}y", hours / 24 / 365)
}

/// `version`: the client's, then the agent's (unless `client_only`).
pub fn version(
    socket: &Path,
    client_only: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> std::io::Result<u8> {
    writeln!(
        stdout,
        "client: traffic-shift {}",
        env!("CARGO_PKG_VERSION")
    )?;
    if client_only {
        return Ok(EXIT_OK);
    }
    match admin::call(socket, &Request::Version) {
        Ok(Response::Version { version }) => {
            writeln!(stdout, "agent:  traffic-shift {version}")?;
            Ok(EXIT_OK)
        }
        Ok(other) => refused(other, "version", stderr),
        Err(err) => unreachable(&err, stderr),
    }
}

#[cfg(test)]
mod tests;
