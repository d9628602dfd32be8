//! The limits a rules file must keep before it is parsed for real, so that
//! no file (a mistake or an attack) costs the agent more than a bounded
//! amount of memory and time: size, nesting depth, and the number of YAML
//! nodes once aliases are expanded (a 5 kB file of `*alias` references to a
//! big anchor expands to millions of nodes: "billion laughs").
//!
//! One streaming pass over the YAML events (`yaml-rust2`, nothing kept but
//! the size of each anchor) refuses at the first excess. Where that parser
//! stops on a syntax error the real one (`serde_yaml_ng`, libyaml) might
//! read on, so then the real one counts the nodes too, into nothing.

use std::{cell::Cell, fmt, path::Path};

use serde::de::{self, DeserializeSeed, Visitor};

use crate::error::ConfigError;

/// The largest rules file accepted. Istio resources are small; a bigger file
/// is a mistake (or an attack), refused before it costs memory and time.
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// The largest state file (the applied set) the agent reads back: it holds
/// what many requests applied (in files up to `MAX_FILE_BYTES`), so 10 000
/// services take it past `MAX_FILE_BYTES` (7 MB), and 100 000 past 64 MiB
/// (72 MB). Its node limit grows with it (`MAX_NODES` per `MAX_FILE_BYTES`).
pub const MAX_STATE_BYTES: usize = 256 << 20;
/// The deepest nesting of mappings and sequences accepted. Istio resources
/// nest about ten levels; past this, parsers recurse and paths grow without
/// bound.
pub const MAX_DEPTH: usize = 64;
/// The most YAML nodes (scalars, mappings, sequences, documents; an alias
/// counts as the nodes it stands for) a rules file may have. A parsed node
/// costs up to ~400 bytes (its value, its event, its line index entry), so
/// this bounds a parse to ~100 MiB. An ordinary resource has 20 to 100
/// nodes: this is thousands of resources.
pub const MAX_NODES: usize = 1 << 18;
/// The most errors reported for one file; the rest of it is not checked.
pub const MAX_ERRORS: usize = 100;

/// Refuses a file over one of the limits above, before any recursive
/// parse. Syntax errors are not reported here but by the real parse.
pub fn check_limits(path: &Path, text: &str) -> Result<(), ConfigError> {
    check_limits_up_to(path, text, MAX_FILE_BYTES)
}

/// [`check_limits`] for a file that may have up to `max_bytes` (the agent's
/// own state file), and as many more nodes.
pub fn check_limits_up_to(path: &Path, text: &str, max_bytes: usize) -> Result<(), ConfigError> {
    let max_nodes = MAX_NODES * (max_bytes / MAX_FILE_BYTES).max(1);
    if text.len() > max_bytes {
        return Err(ConfigError::file(
            path,
            format!(
                "the file is {} bytes, more than the {max_bytes} bytes a rules file may have; split it into several files",
                text.len()
            ),
        ));
    }
    // Flow collections (`[[[[...`) first, on the raw text: YAML scanners
    // slow down quadratically on them long before they emit an event.
    if let Some(line) = flow_too_deep(text) {
        return Err(ConfigError {
            line: Some(line),
            ..ConfigError::file(
                path,
                format!(
                    "[ ] and {{ }} nest deeper than {MAX_DEPTH} levels; no Istio resource does: this is not a rules file"
                ),
            )
        });
    }
    match stream_events(path, text, max_nodes)? {
        Streamed::Whole => Ok(()),
        Streamed::SyntaxError => count_with_serde(path, text, max_nodes),
    }
}

/// `errors`, the first [`MAX_ERRORS`] of them and a line saying how many
/// more there are.
pub(super) fn capped(mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    if errors.len() > MAX_ERRORS {
        let more = errors.len() - MAX_ERRORS;
        let next = errors.swap_remove(MAX_ERRORS);
        errors.truncate(MAX_ERRORS);
        errors.push(ConfigError::file(
            next.file,
            format!("and {more} more errors, not listed; fix these first"),
        ));
    }
    errors
}

fn too_many_nodes(path: &Path, line: Option<usize>, max_nodes: usize) -> ConfigError {
    ConfigError {
        line,
        ..ConfigError::file(
            path,
            format!(
                "more than {max_nodes} YAML nodes (values, with each *alias counted as what it \
                 stands for); no set of Istio resources needs that many in one file: split it \
                 into several files, or do not repeat big anchors"
            ),
        )
    }
}

enum Streamed {
    /// Every event was seen, within the limits.
    Whole,
    /// `yaml-rust2` stopped on a syntax error: the rest was not counted.
    SyntaxError,
}

/// The streaming pass: depth and node count, aliases expanded by size.
fn stream_events(path: &Path, text: &str, max_nodes: usize) -> Result<Streamed, ConfigError> {
    use yaml_rust2::parser::Event;

    let mut parser = yaml_rust2::parser::Parser::new_from_str(text);
    // Open collections: the node count at their start and their anchor.
    let mut open: Vec<(usize, usize)> = Vec::new();
    // Anchor id -> the nodes its value stands for.
    let mut anchors: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    let mut nodes = 0usize;
    loop {
        let Ok((event, mark)) = parser.next_token() else {
            return Ok(Streamed::SyntaxError);
        };
        let before = nodes;
        match event {
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                nodes += 1;
                open.push((before, anchor));
                if open.len() > MAX_DEPTH {
                    return Err(ConfigError {
                        line: Some(mark.line()),
                        ..ConfigError::file(
                            path,
                            format!(
                                "mappings and lists nest deeper than {MAX_DEPTH} levels; no Istio resource does: this is not a rules file"
                            ),
                        )
                    });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some((start, anchor)) = open.pop()
                    && anchor != 0
                {
                    anchors.insert(anchor, nodes - start);
                }
            }
            Event::Scalar(_, _, anchor, _) => {
                nodes += 1;
                if anchor != 0 {
                    anchors.insert(anchor, 1);
                }
            }
            Event::Alias(anchor) => {
                nodes = nodes.saturating_add(anchors.get(&anchor).copied().unwrap_or(1));
            }
            Event::DocumentStart => nodes += 1,
            Event::StreamEnd => return Ok(Streamed::Whole),
            _ => {}
        }
        if nodes > max_nodes {
            return Err(too_many_nodes(path, Some(mark.line()), max_nodes));
        }
    }
}

/// The node count as `serde_yaml_ng` expands it, for the files the
/// streaming pass could not read to the end. Builds nothing; stops at the
/// limit or at the first syntax error (the real parse reports it).
fn count_with_serde(path: &Path, text: &str, max_nodes: usize) -> Result<(), ConfigError> {
    let budget = Cell::new(max_nodes);
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        if Budget(&budget).take::<serde_yaml_ng::Error>().is_err()
            || Budget(&budget).deserialize(document).is_err()
        {
            return if budget.get() == 0 {
                Err(too_many_nodes(path, None, max_nodes))
            } else {
                Ok(())
            };
        }
    }
    Ok(())
}

/// Counts the nodes it is given against what is left of a budget.
#[derive(Clone, Copy)]
struct Budget<'a>(&'a Cell<usize>);

impl Budget<'_> {
    fn take<E: de::Error>(self) -> Result<(), E> {
        match self.0.get() {
            0 => Err(E::custom("node limit")),
            left => {
                self.0.set(left - 1);
                Ok(())
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Budget<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budget<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.take()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.take()
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.take()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.take()
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.take()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.take()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.take()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.take()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.take()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        self.take()?;
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.take()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.take()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }

    /// A tagged value (`!tag value`).
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        use serde::de::VariantAccess as _;
        self.take()?;
        let (de::IgnoredAny, value) = data.variant()?;
        value.newtype_variant_seed(self)
    }
}

/// The line where `[`/`{` nesting first exceeds `MAX_DEPTH`, outside quoted
/// strings and comments. Conservative: brackets inside plain scalars count
/// too, which no real rule nests 64 deep.
fn flow_too_deep(text: &str) -> Option<usize> {
    let (mut depth, mut line) = (0usize, 1usize);
    let mut chars = text.chars().peekable();
    let mut previous = '\n';
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '#' if previous.is_whitespace() => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '"' | '\'' => {
                while let Some(q) = chars.next() {
                    match q {
                        '\n' => line += 1,
                        '\\' if c == '"' => {
                            chars.next();
                        }
                        q if q == c => break,
                        _ => {}
                    }
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(line);
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = c;
    }
    None
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{MAX_ERRORS, MAX_NODES, count_with_serde};
    use crate::parse_file_all;

    /// The file's errors, as one line each.
    fn refused(text: &str) -> Vec<String> {
        parse_file_all(Path::new("bomb.yaml"), text)
            .expect_err("refused")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn refused_for_nodes(text: &str) {
        let errors = refused(text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!("bomb.yaml: more than {MAX_NODES} YAML nodes")),
            "{errors:?}"
        );
    }

    #[test]
    fn aliases_are_counted_as_what_they_stand_for() {
        // 5 kB, a million nodes once expanded.
        refused_for_nodes(&format!(
            "a: &x [{}]\nb: [{}]\n",
            "a,".repeat(1000),
            "*x,".repeat(1000)
        ));
        // Billion laughs: ten times more per level, 430 bytes.
        let laughs: String = std::iter::once("l0: &l0 [x,x,x,x,x,x,x,x,x,x]\n".to_owned())
            .chain((1..9).map(|i| {
                let refs = vec![format!("*l{}", i - 1); 10].join(",");
                format!("l{i}: &l{i} [{refs}]\n")
            }))
            .collect();
        refused_for_nodes(&laughs);
    }

    #[test]
    fn the_real_parser_counts_the_same_way() {
        // Used where the streaming parser stops on a syntax error (the
        // parsers disagree on a few YAML corners) but libyaml may read on.
        let path = Path::new("bomb.yaml");
        let bomb = format!(
            "a: &x [{}]\nb: [{}]\n",
            "a,".repeat(1000),
            "*x,".repeat(1000)
        );
        let error = count_with_serde(path, &bomb, MAX_NODES).expect_err("refused");
        assert!(error.message.starts_with("more than"), "{error}");
        count_with_serde(
            path,
            &"---\na: [b, c]\n".repeat(MAX_NODES / 6 - 1),
            MAX_NODES,
        )
        .expect(
            "just under the limit: six nodes a document (itself, the mapping, a, the list, b, c)",
        );
        count_with_serde(
            path,
            &"---\na: [b, c]\n".repeat(MAX_NODES / 6 + 1),
            MAX_NODES,
        )
        .expect_err("just over");
        count_with_serde(path, "a: [\n", MAX_NODES)
            .expect("syntax errors are for the real parse to report");
    }

    #[test]
    fn many_documents_are_refused_before_they_are_parsed() {
        refused_for_nodes(&"---\n".repeat(MAX_NODES + 1));
        refused_for_nodes(&format!("a: [{}]\n", "a,".repeat(MAX_NODES)));
    }

    #[test]
    fn at_most_max_errors_are_collected() {
        let errors = refused(&"---\na: 1\n".repeat(MAX_ERRORS * 10));
        assert_eq!(errors.len(), MAX_ERRORS + 1, "{:?}", errors.last());
        assert!(
            errors[MAX_ERRORS].contains(&format!(
                "document {}: more than {MAX_ERRORS} errors",
                MAX_ERRORS + 1
            )),
            "{:?}",
            errors.last()
        );
    }
}
