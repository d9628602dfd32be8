//! The bodies of the fuzz targets (`fuzz/fuzz_targets/`, run by
//! `cargo xtask fuzz` under libFuzzer). They live here so that the unit
//! tests run them over the seed corpora (`fuzz/seeds/<target>/`) on every
//! `cargo xtask test`; a fuzz target is then one call.
//!
//! Each takes any bytes and panics only on a bug: a crash, or a broken
//! promise of the code under test (checked with `assert!`).

use std::path::Path;

use traffic_shift_config::{self as config, MAX_ERRORS};

/// A rules file as the agent takes one from its rules directory: the bytes
/// checked as `read_rules_file` does (size, UTF-8), every document parsed
/// and validated, then resolved (`resolve_all`, as the agent does with the
/// rest of its rules). Promises: at most [`MAX_ERRORS`] errors (and one
/// line saying there are more), each one line naming the file.
pub fn rules_file(data: &[u8]) {
    let path = Path::new("fuzz.yaml");
    let Ok(text) = config::rules_text(path, data.to_vec(), config::MAX_FILE_BYTES) else {
        return;
    };
    let errors = match config::parse_file_all(path, &text) {
        Ok(file) => match config::resolve_all(&[file]).0 {
            Ok(_) => return,
            Err(errors) => errors,
        },
        Err(errors) => errors,
    };
    assert!(
        !errors.is_empty() && errors.len() <= MAX_ERRORS + 1,
        "{} errors",
        errors.len()
    );
    for error in errors {
        let line = error.to_string();
        assert!(
            line.starts_with("fuzz.yaml") && !line.contains('\n'),
            "an error is one line naming the file: {line:?}"
        );
    }
}

/// The rules the `http-route` target matches requests against: Bookinfo's
/// reviews with one rule per kind of match (and rewrites), resolved as the
/// agent resolves them.
const HTTP_ROUTE_RULES: &str = include_str!("../../fuzz/http-route-rules.yaml");

/// An HTTP request head (`METHOD URI` line, then `name: value` lines) as
/// the proxy routes it over [`HTTP_ROUTE_RULES`]: listener, virtual host,
/// first admitting route, rewrite. Promises: no panic, whatever the bytes
/// (regexes, query strings, authorities, case folding, prefix rewrites),
/// and the same answer twice.
pub fn http_route(data: &[u8]) {
    use std::sync::OnceLock;
    static LISTENERS: OnceLock<Vec<traffic_shift_config::model::HttpListener>> = OnceLock::new();
    let listeners = LISTENERS.get_or_init(|| {
        let file = config::parse_file(Path::new("http-route-rules.yaml"), HTTP_ROUTE_RULES)
            .expect("the target's rules parse");
        config::resolve(&[file])
            .expect("the target's rules resolve")
            .http
    });
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let Some((method, uri)) = lines.next().and_then(|l| l.split_once(' ')) else {
        return;
    };
    let mut builder = hyper::Request::builder().method(method).uri(uri.trim());
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            builder = builder.header(name.trim(), value.trim());
        }
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    for listener in listeners {
        let first = traffic_shift_proxy::route_for(listeners, &listener.key, &request)
            .expect("the target's regexes compile");
        let again = traffic_shift_proxy::route_for(listeners, &listener.key, &request)
            .expect("the target's regexes compile");
        assert_eq!(first, again, "routing is a function of the request");
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Every file under `dir`, recursively.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                found.extend(files(&path));
            } else {
                found.push(path);
            }
        }
        found
    }

    /// The seeds of `cargo xtask fuzz`'s `rules-file` target: its own
    /// (`fuzz/seeds/rules-file`, the hostile corpus) and the shipped rules.
    #[test]
    fn the_rules_file_target_passes_its_seeds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let seeds: Vec<PathBuf> = files(&root.join("fuzz/seeds/rules-file"))
            .into_iter()
            .chain(files(&root.join("rules")))
            .collect();
        assert!(seeds.len() >= 20, "seeds missing: {seeds:?}");
        for seed in seeds {
            let data = std::fs::read(&seed).expect("read seed");
            super::rules_file(&data);
        }
    }

    /// The seeds of the `http-route` target, and what they route to.
    #[test]
    fn the_http_route_target_passes_its_seeds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let seeds = files(&root.join("fuzz/seeds/http-route"));
        assert!(seeds.len() >= 5, "seeds missing: {seeds:?}");
        for seed in seeds {
            let data = std::fs::read(&seed).expect("read seed");
            super::http_route(&data);
        }
    }
}
