//! CLI commands that do not need the agent. Output goes to an injected
//! writer so they are tested in-process.

use std::{io::Write, path::PathBuf};

use crate::{compile, config, model::RoutingModel};

/// `validate -f PATH...`: parses, resolves and compiles the files together,
/// as the agent would; prints each warning as a `warning: ` line, then the
/// routes, or every refusal as a `refused: ` line (all errors of every
/// document of every file, and those across files). The files that parse
/// are resolved even when others do not, as the agent would apply them.
/// Returns whether everything was valid (warnings do not count).
pub fn validate(paths: &[PathBuf], out: &mut impl Write) -> std::io::Result<bool> {
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
    let (model, warnings) = config::resolve_all(&files);
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
        match crate::netns::is_local_in(std::path::Path::new("/proc/self/ns/net"))
            .map_err(|e| format!("cannot list this node's addresses: {e}"))
            .and_then(|is_local| compile::compile(&model, &is_local).map_err(|e| e.to_string()))
        {
            Ok(_) => {
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

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(
        "cannot read {path}: {source}; is the agent running (`traffic-shift run`), with this --status-file?"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an agent status file: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Write(#[from] std::io::Error),
}

/// `status`: the agent's routes, gateway endpoints and kernel counters, as
/// tables that stay readable at 80 columns.
pub fn status(path: &std::path::Path, out: &mut impl Write) -> Result<(), StatusError> {
    let text = std::fs::read_to_string(path).map_err(|source| StatusError::Read {
        path: path.to_owned(),
        source,
    })?;
    let status: crate::status::Status =
        serde_json::from_str(&text).map_err(|source| StatusError::Parse {
            path: path.to_owned(),
            source,
        })?;
    writeln!(
        out,
        "rules {} (generation {})",
        status.rules, status.generation
    )?;
    // A route key can be long: key on one line, its split below, so the
    // table stays readable at 80 columns.
    writeln!(out, "\nROUTE\n    SPLIT (destination weight, ...)")?;
    for route in &status.routes {
        let split: Vec<String> = route
            .destinations
            .iter()
            .map(|d| format!("{} {}", d.subset.as_deref().unwrap_or(&d.host), d.weight))
            .collect();
        writeln!(out, "{}\n    {}", route.route, split.join(", "))?;
    }
    if !status.gateway_endpoints.is_empty() {
        writeln!(out, "\n{:<40} {:<11} PID", "GATEWAY ENDPOINT", "SOCKET")?;
        for e in &status.gateway_endpoints {
            let pid = e.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
            writeln!(out, "{:<40} {:<11} {pid}", e.endpoint, e.state)?;
        }
    }
    writeln!(out, "\n{:<24} COUNT", "KERNEL EVENT")?;
    for (name, count) in &status.events {
        writeln!(out, "{name:<24} {count}")?;
    }
    Ok(())
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
        let mut out = Vec::new();
        let ok = validate(paths, &mut out).expect("writing to a Vec");
        (ok, String::from_utf8(out).expect("UTF-8 output"))
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
        assert!(out.ends_with("valid: 4 files, 2 routes\n"), "{out}");
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
}
