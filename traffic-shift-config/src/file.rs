//! One rules file: read (at most so many bytes, UTF-8), every document
//! parsed (limits, line index, then `resource`), and a directory of them.

use std::{
    borrow::Cow,
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Deserialize;

#[cfg(doc)]
use crate::limits::{MAX_STATE_BYTES, check_limits};
use crate::{
    error::{ConfigError, Warning},
    limits::{Counter, MAX_ERRORS, MAX_FILE_BYTES, check_before_parse},
    lines,
    resource::{self, Resource},
};

/// One parsed rules file: its resources in document order.
#[derive(Clone, Debug)]
pub struct RulesFile {
    pub path: PathBuf,
    pub resources: Vec<Resource>,
    /// What Istio would warn about in these documents (deprecated fields,
    /// weights that do not add up to 100, rules never reached, ...): the
    /// file is valid all the same. For the agent to log.
    pub warnings: Vec<Warning>,
}

/// Parses every document of one rules file (`path` is for messages): the
/// file, or its first error. See [`parse_file_all`].
pub fn parse_file(path: &Path, text: &str) -> Result<RulesFile, ConfigError> {
    parse_file_all(path, text).map_err(|mut errors| errors.swap_remove(0))
}

/// Parses every document of one rules file (`path` is for messages): the
/// file, or every error of every document, in file order (never an empty
/// list). Empty documents are skipped. A YAML syntax error ends the parse
/// (the documents after it cannot be told apart); every other error is
/// one document's, and the next documents are checked all the same, up to
/// [`MAX_ERRORS`]. The file is refused first if over a limit (see
/// [`check_limits`]).
pub fn parse_file_all(path: &Path, text: &str) -> Result<RulesFile, Vec<ConfigError>> {
    parse_file_all_up_to(path, text, MAX_FILE_BYTES)
}

/// [`parse_file_all`] for a file that may have up to `max_bytes` (the
/// agent's own state file, [`MAX_STATE_BYTES`]).
pub fn parse_file_all_up_to(
    path: &Path,
    text: &str,
    max_bytes: usize,
) -> Result<RulesFile, Vec<ConfigError>> {
    parse_checked(path, text, max_bytes, false).map(|(file, _)| file)
}

/// A YAML document of a file as parsed, by position: `documents[n - 1]` is
/// document `n` as [`crate::Source::document`] numbers them (`None`: empty).
pub type Documents = Vec<Option<serde_yaml_ng::Value>>;

/// [`parse_file_all_up_to`], and each document's YAML value (up to a
/// syntax error), for a caller that keeps the documents too: the text is
/// parsed once.
pub fn parse_file_documents(
    path: &Path,
    text: &str,
    max_bytes: usize,
) -> Result<(RulesFile, Documents), Vec<ConfigError>> {
    parse_checked(path, text, max_bytes, true)
}

/// The parse of a file of up to `max_bytes` within the limits (see
/// [`crate::limits`]): those of the whole text checked first, those of
/// each document counted as it is built.
fn parse_checked(
    path: &Path,
    text: &str,
    max_bytes: usize,
    keep: bool,
) -> Result<(RulesFile, Documents), Vec<ConfigError>> {
    let counted = check_before_parse(path, text, max_bytes).map_err(|error| vec![error])?;
    let quotes = (FLOW_COLON_QUOTE_BYTES / text.len().max(1)).min(MAX_FLOW_COLON_QUOTES);
    parse_text(path, text, quotes, keep, counted.as_ref())
}

/// At most this many plain scalars of a file are quoted by
/// [`quote_flow_colon_scalar`], each costing a parse of the file again:
/// and at most this many bytes parsed again in all (a hostile file of
/// such scalars costs a bounded time; a big one gets no second parse).
const MAX_FLOW_COLON_QUOTES: usize = 16;
const FLOW_COLON_QUOTE_BYTES: usize = 1 << 20;

/// The parse of [`parse_file_all_up_to`], the limits checked (or, with a
/// `counter`, counted as the documents are built). With `keep`, each
/// document's value too.
fn parse_text(
    path: &Path,
    text: &str,
    quotes_left: usize,
    keep: bool,
    counter: Option<&Counter>,
) -> Result<(RulesFile, Documents), Vec<ConfigError>> {
    let lines = lines::FileLines::text(text);
    let file: Arc<Path> = path.into();
    let mut documents = Documents::new();
    let mut resources = Vec::new();
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    let mut documents_left = serde_yaml_ng::Deserializer::from_str(text).enumerate();
    for (i, document) in documents_left.by_ref() {
        let number = i + 1;
        if errors.len() >= MAX_ERRORS {
            // Not checked, but counted: a file over a limit is refused
            // for that alone, wherever the excess is.
            if let Some(counter) = counter {
                let limit = std::iter::once(document)
                    .chain(documents_left.by_ref().map(|(_, document)| document))
                    .find_map(|document| counter.document(document).err())
                    .and_then(|error| counter.refused(path, text, &error));
                if let Some(refused) = limit {
                    return Err(vec![refused]);
                }
            }
            errors.truncate(MAX_ERRORS);
            errors.push(ConfigError {
                document: Some(number),
                ..ConfigError::file(
                    path,
                    format!(
                        "more than {MAX_ERRORS} errors: the rest of the file (from this document on) is not checked; fix these first"
                    ),
                )
            });
            break;
        }
        let built = match counter {
            Some(counter) => counter.document(document),
            None => serde_yaml_ng::Value::deserialize(document),
        };
        let value = match built {
            Ok(value) => value,
            Err(error) => {
                // A limit refuses the file alone, as it would have before
                // the parse.
                if let Some(refused) = counter.and_then(|c| c.refused(path, text, &error)) {
                    return Err(vec![refused]);
                }
                if quotes_left > 0
                    && let Some(quoted) = quote_flow_colon_scalar(text, &error.to_string())
                {
                    // The same text but two quotes: counted afresh.
                    let counter = counter.map(Counter::again);
                    return parse_text(path, &quoted, quotes_left - 1, keep, counter.as_ref());
                }
                // The iterator keeps yielding the same error: stop at the first.
                errors.push(ConfigError {
                    document: Some(number),
                    line: error.location().map(|location| location.line()),
                    ..ConfigError::file(path, format!("invalid YAML: {error}"))
                });
                break;
            }
        };
        if value.is_null() {
            if keep {
                documents.push(None);
            }
            continue;
        }
        let index = Arc::new(lines::LineIndex::of(&file, &lines, i));
        // Kept, the document is read in place: no copy of it is made.
        let parsed = if keep {
            let parsed = resource::parse_document(path, number, Cow::Borrowed(&value), &index);
            documents.push(Some(value));
            parsed
        } else {
            resource::parse_document(path, number, Cow::Owned(value), &index)
        };
        match parsed {
            Ok((resource, found)) => {
                resources.push(resource);
                warnings.extend(found);
            }
            Err(found) => errors.extend(found),
        }
    }
    if errors.is_empty() {
        Ok((
            RulesFile {
                path: path.to_owned(),
                resources,
                warnings,
            },
            documents,
        ))
    } else {
        Err(errors)
    }
}

/// Go's YAML (which Istio reads with) takes a plain scalar of a flow
/// collection with a `:` before its end (`[1.2.3.4, 001:db8::]`, in one of
/// Istio's own fixtures) as a string; libyaml refuses it ("found unexpected
/// ':'"). Given that error, `text` with the scalar double-quoted (same
/// lines), or `None` when the error is another or the scalar spans lines.
fn quote_flow_colon_scalar(text: &str, message: &str) -> Option<String> {
    const CONTEXT: &str = "while scanning a plain scalar at line ";
    if !message.starts_with("found unexpected ':'") {
        return None;
    }
    let at = &message[message.find(CONTEXT)? + CONTEXT.len()..];
    let (line, rest) = at.split_once(" column ")?;
    let line: usize = line.parse().ok()?;
    let column: usize = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    // The byte offset of the scalar: line and column are 1-based, the
    // column in characters.
    let line_start = if line == 1 {
        0
    } else {
        text.match_indices('\n').nth(line - 2)?.0 + 1
    };
    let line_text = &text[line_start..];
    let start = line_start
        + line_text
            .char_indices()
            .nth(column.checked_sub(1)?)
            .map(|(offset, _)| offset)?;
    // Go ends it at a flow indicator, `: `, ` #` or the line's end; a
    // scalar that goes on to the next line is left alone.
    let bytes = text.as_bytes();
    let mut end = start;
    while end < bytes.len() {
        match bytes[end] {
            b',' | b'[' | b']' | b'{' | b'}' => break,
            b'\n' | b'\r' => return None,
            b':' if matches!(bytes.get(end + 1), Some(b' ' | b'\t')) => break,
            b'#' if end > start && matches!(bytes[end - 1], b' ' | b'\t') => break,
            _ => end += 1,
        }
    }
    let scalar = text[start..end].trim_end();
    if scalar.is_empty() {
        return None;
    }
    let escaped = scalar.replace('\\', "\\\\").replace('"', "\\\"");
    Some(format!(
        "{}\"{escaped}\"{}",
        &text[..start],
        &text[start + scalar.len()..]
    ))
}

/// Reads a rules file, at most `MAX_FILE_BYTES` (+1, to tell it is over)
/// of it, so a huge file costs no more memory than that. Not UTF-8: an
/// error saying so.
pub fn read_rules_file(path: &Path) -> Result<String, ConfigError> {
    read_file_up_to(path, MAX_FILE_BYTES)
}

/// [`read_rules_file`] for a file that may have up to `max_bytes`.
pub fn read_file_up_to(path: &Path, max_bytes: usize) -> Result<String, ConfigError> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|file| file.take(max_bytes as u64 + 1).read_to_end(&mut bytes))
        .map_err(|error| ConfigError::file(path, format!("cannot read the file: {error}")))?;
    rules_text(path, bytes, max_bytes)
}

/// A rules file's bytes as text, as [`read_rules_file`] takes them: not
/// more than `max_bytes`, UTF-8.
pub fn rules_text(path: &Path, bytes: Vec<u8>, max_bytes: usize) -> Result<String, ConfigError> {
    if bytes.len() > max_bytes {
        return Err(ConfigError::file(
            path,
            format!(
                "the file is more than the {max_bytes} bytes a rules file may have; split it into several files"
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|error| {
        ConfigError::file(
            path,
            format!(
                "the file is not UTF-8 text (invalid byte at offset {}); save it as UTF-8",
                error.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Reads and parses every `*.yaml` / `*.yml` file directly in `dir` (sorted
/// by name; not recursive; hidden files skipped). Returns all files that
/// parsed, and the errors of those that did not (all errors of each bad
/// file, as [`parse_file_all`]).
pub fn load_dir(dir: &Path) -> (Vec<RulesFile>, Vec<ConfigError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            errors.push(ConfigError::file(
                dir,
                format!("cannot read the rules directory: {error}"),
            ));
            return (files, errors);
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => paths.push(entry.path()),
            Err(error) => errors.push(ConfigError::file(
                dir,
                format!("cannot list the rules directory: {error}"),
            )),
        }
    }
    paths.retain(|path| is_rules_file(path));
    paths.sort();
    for path in paths {
        let parsed = read_rules_file(&path)
            .map_err(|error| vec![error])
            .and_then(|text| parse_file_all(&path, &text));
        match parsed {
            Ok(file) => files.push(file),
            Err(found) => errors.extend(found),
        }
    }
    (files, errors)
}

/// A visible `*.yaml` / `*.yml` file (or a link to one: Kubernetes mounts
/// `ConfigMap`s as links).
pub fn is_rules_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return false;
    };
    let yaml = path
        .extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml"));
    !name.starts_with('.') && yaml && path.is_file()
}
