//! CLI commands that do not need the agent. Output goes to an injected
//! writer so they are tested in-process.

use std::{io::Write, path::PathBuf};

use crate::{compile, config};

/// `validate -f PATH...`: parses, resolves and compiles the files together;
/// prints every refusal as one line, or the routes they make. Returns
/// whether everything was valid.
pub fn validate(paths: &[PathBuf], out: &mut impl Write) -> std::io::Result<bool> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.is_dir() {
            let (ok, bad) = config::load_dir(path);
            files.extend(ok);
            errors.extend(bad.into_iter().map(|e| e.to_string()));
        } else {
            match std::fs::read_to_string(path) {
                Ok(text) => match config::parse_file(path, &text) {
                    Ok(file) => files.push(file),
                    Err(err) => errors.push(err.to_string()),
                },
                Err(err) => errors.push(format!("{}: {err}", path.display())),
            }
        }
    }
    if errors.is_empty() {
        match config::resolve(&files)
            .map_err(|e| e.to_string())
            .and_then(|model| {
                compile::compile(&model)
                    .map(|c| (model, c))
                    .map_err(|e| e.to_string())
            }) {
            Ok((model, _)) => {
                for route in &model.routes {
                    let listeners: Vec<String> =
                        route.listeners.iter().map(ToString::to_string).collect();
                    writeln!(
                        out,
                        "route {} ({}): {} -> {:?}",
                        route.key,
                        route.source,
                        listeners.join(" "),
                        route.selection
                    )?;
                    for dest in &route.destinations {
                        let endpoints: Vec<String> =
                            dest.endpoints.iter().map(|e| e.addr.to_string()).collect();
                        writeln!(
                            out,
                            "  {} subset {} weight {}: {}",
                            dest.host,
                            dest.subset.as_deref().unwrap_or("-"),
                            dest.weight,
                            if endpoints.is_empty() {
                                "no endpoints (connections refused)".to_owned()
                            } else {
                                endpoints.join(" ")
                            }
                        )?;
                    }
                }
                writeln!(
                    out,
                    "valid: {} files, {} routes",
                    files.len(),
                    model.routes.len()
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
