//! The limits a rules file must keep before it is parsed for real, so that
//! no file (a mistake or an attack) costs the agent more than a bounded
//! amount of memory and time: size, nesting depth, and the number of YAML
//! nodes once aliases are expanded (a 5 kB file of `*alias` references to a
//! big anchor expands to millions of nodes: "billion laughs").
//!
//! A file of small documents (the usual one: a resource each) is counted
//! as it is parsed ([`Counter`]): each document is built by a seed that
//! takes its nodes from the file's budget and refuses at the first excess,
//! so the text is parsed once. A small document bounds what the parser
//! holds before the seed sees it (`serde_yaml_ng` loads a document's events
//! first), and the budget bounds what aliases expand to.
//!
//! A file with a bigger document is checked before it is parsed: one
//! streaming pass over the YAML events (`yaml-rust2`, nothing kept but the
//! size of each anchor) refuses at the first excess. Where that parser
//! stops on a syntax error the real one (`serde_yaml_ng`, libyaml) might
//! read on, so then the real one counts the nodes too, into nothing.

use std::{cell::Cell, fmt, path::Path};

use serde::de::{self, DeserializeSeed, Visitor};
use serde_yaml_ng::{
    Mapping, Value,
    mapping::Entry,
    value::{Tag, TaggedValue},
};

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
    let max_nodes = check_text(path, text, max_bytes)?;
    match stream_events(path, text, max_nodes)? {
        Streamed::Whole => Ok(()),
        Streamed::SyntaxError => count_with_serde(path, text, max_nodes),
    }
}

/// The limits of a file about to be parsed: its size and flow nesting
/// checked here; then either its depth and nodes counted as it is parsed
/// (`Some`: a file of small documents, see [`Counter`]), or checked here
/// before (`None`, as [`check_limits_up_to`]).
pub(crate) fn check_before_parse(
    path: &Path,
    text: &str,
    max_bytes: usize,
) -> Result<Option<Counter>, ConfigError> {
    let max_nodes = check_text(path, text, max_bytes)?;
    if documents_small(text) {
        return Ok(Some(Counter::new(max_nodes)));
    }
    match stream_events(path, text, max_nodes)? {
        Streamed::Whole => Ok(None),
        Streamed::SyntaxError => count_with_serde(path, text, max_nodes).map(|()| None),
    }
}

/// Size and flow nesting, on the text: the node limit of a file of up to
/// `max_bytes`.
fn check_text(path: &Path, text: &str, max_bytes: usize) -> Result<usize, ConfigError> {
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
    Ok(max_nodes)
}

/// A document of a file counted as it is parsed has at most this many
/// bytes: its events (~130 bytes each, at most one per byte or two) are
/// held at once before the first is counted.
pub const MAX_COUNTED_DOCUMENT_BYTES: usize = 64 << 10;

/// Whether every document of `text` has at most
/// [`MAX_COUNTED_DOCUMENT_BYTES`]: the bytes between two document markers
/// (`---` or `...` at the start of a line, then a blank or the end), which
/// YAML reads as markers wherever they are (in a quoted or block scalar
/// they are an error or its end).
fn documents_small(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut line = 0;
    loop {
        if line - start > MAX_COUNTED_DOCUMENT_BYTES {
            return false;
        }
        let rest = &bytes[line..];
        if (rest.starts_with(b"---") || rest.starts_with(b"..."))
            && rest
                .get(3)
                .is_none_or(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            start = line;
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(end) => line += end + 1,
            None => return bytes.len() - start <= MAX_COUNTED_DOCUMENT_BYTES,
        }
    }
}

/// The depth and node limits of one file, counted while its documents are
/// built (see the module's doc): [`Counter::document`] builds each, and
/// [`Counter::refused`] tells a parse error that is a limit.
pub(crate) struct Counter {
    left: Cell<usize>,
    max_nodes: usize,
    exceeded: Cell<Option<Exceeded>>,
}

#[derive(Clone, Copy)]
enum Exceeded {
    Nodes,
    Depth,
}

impl Counter {
    fn new(max_nodes: usize) -> Self {
        Self {
            left: Cell::new(max_nodes),
            max_nodes,
            exceeded: Cell::new(None),
        }
    }

    /// A counter for the same file parsed again from its start.
    pub(crate) fn again(&self) -> Self {
        Self::new(self.max_nodes)
    }

    /// The next document of the file, built as `Value::deserialize` builds
    /// it (the document itself a node, as [`count_with_serde`] counts).
    pub(crate) fn document<'de, D: de::Deserializer<'de>>(
        &self,
        document: D,
    ) -> Result<Value, D::Error> {
        self.take::<D::Error>()?;
        Build {
            counter: self,
            depth: 0,
        }
        .deserialize(document)
    }

    /// The limit a parse `error` of `text` is, as the error to report;
    /// `None` for any other error. `serde_yaml_ng` has limits of its own
    /// (on alias expansion, on depth) that may stop it first: on an error
    /// not ours the whole text is checked as it is before a parse, so a
    /// file is refused for the same reason either way.
    pub(crate) fn refused(
        &self,
        path: &Path,
        text: &str,
        error: &serde_yaml_ng::Error,
    ) -> Option<ConfigError> {
        let line = error.location().map(|location| location.line());
        match self.exceeded.get() {
            Some(Exceeded::Nodes) => Some(too_many_nodes(path, line, self.max_nodes)),
            Some(Exceeded::Depth) => Some(too_deep(path, line)),
            None => match stream_events(path, text, self.max_nodes) {
                Err(refused) => Some(refused),
                Ok(Streamed::Whole) => None,
                Ok(Streamed::SyntaxError) => count_with_serde(path, text, self.max_nodes).err(),
            },
        }
    }

    fn take<E: de::Error>(&self) -> Result<(), E> {
        match self.left.get() {
            0 => {
                self.exceeded.set(Some(Exceeded::Nodes));
                Err(E::custom("node limit"))
            }
            left => {
                self.left.set(left - 1);
                Ok(())
            }
        }
    }
}

/// A node built, counted; mappings and sequences one level deeper.
#[derive(Clone, Copy)]
struct Build<'c> {
    counter: &'c Counter,
    depth: usize,
}

impl Build<'_> {
    fn deeper<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            self.counter.exceeded.set(Some(Exceeded::Depth));
            return Err(E::custom("depth limit"));
        }
        Ok(Self {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> DeserializeSeed<'de> for Build<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// `serde_yaml_ng`'s own `Value` visitor, each node counted.
impl<'de> Visitor<'de> for Build<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        self.counter.take()?;
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        self.counter.take()?;
        Ok(Value::Number(i.into()))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        self.counter.take()?;
        Ok(Value::Number(u.into()))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        self.counter.take()?;
        Ok(Value::Number(f.into()))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.counter.take()?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        self.counter.take()?;
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.counter.take()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.counter.take()?;
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.counter.take()?;
        let inner = self.deeper()?;
        let mut sequence = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(value) = seq.next_element_seed(inner)? {
            sequence.push(value);
        }
        Ok(Value::Sequence(sequence))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.counter.take()?;
        let inner = self.deeper()?;
        let mut mapping = Mapping::new();
        while let Some(key) = map.next_key_seed(inner)? {
            match mapping.entry(key) {
                Entry::Occupied(entry) => {
                    return Err(de::Error::custom(DuplicateKey(entry.key())));
                }
                Entry::Vacant(entry) => {
                    entry.insert(map.next_value_seed(inner)?);
                }
            }
        }
        Ok(Value::Mapping(mapping))
    }

    /// A tagged value (`!tag value`).
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        use serde::de::VariantAccess as _;
        self.counter.take()?;
        let (tag, value) = data.variant::<String>()?;
        if tag.is_empty() {
            return Err(de::Error::custom("empty YAML tag is not allowed"));
        }
        let value = value.newtype_variant_seed(self)?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

/// `serde_yaml_ng`'s message for a key given twice in a mapping.
pub struct DuplicateKey<'a>(pub &'a Value);

impl fmt::Display for DuplicateKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("duplicate entry ")?;
        match self.0 {
            Value::Null => f.write_str("with null key"),
            Value::Bool(boolean) => write!(f, "with key `{boolean}`"),
            Value::Number(number) => write!(f, "with key {number}"),
            Value::String(string) => write!(f, "with key {string:?}"),
            Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => f.write_str("in YAML map"),
        }
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

fn too_deep(path: &Path, line: Option<usize>) -> ConfigError {
    ConfigError {
        line,
        ..ConfigError::file(
            path,
            format!(
                "mappings and lists nest deeper than {MAX_DEPTH} levels; no Istio resource does: this is not a rules file"
            ),
        )
    }
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
                    return Err(too_deep(path, Some(mark.line())));
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

    use serde::Deserialize as _;

    use super::{
        Counter, MAX_COUNTED_DOCUMENT_BYTES, MAX_ERRORS, MAX_NODES, check_limits, count_with_serde,
        documents_small,
    };
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

    #[test]
    fn a_counted_document_is_the_value_serde_builds() {
        for text in [
            "kind: VirtualService\nmetadata: {name: a}\nspec: {hosts: [a, 'b', \"c\"], n: 1, f: 1.5, t: true, z: ~}\n",
            "a: &x {b: [1, 2]}\nc: *x\nd: {<<: *x, e: 3}\n",
            "a: !tag {b: !other [x]}\nc: !!str 5\nd: !!int '7'\n",
            "? [a, b]\n: 1\n? {c: d}\n: 2\n1: one\ntrue: yes\n~: null\n",
            "a: 99999999999999999999999\n",
            "a: -99999999999999999999999\n",
            "a: 1\na: 2\n",
            "a: {[x]: 1, [x]: 2}\n",
            "a: {1: x, 1: y}\n",
            "a: {true: x, true: y}\n",
            "a: {~: x, ~: y}\n",
            "a: {!t b: x, !t b: y}\n",
            "- [a, [b, [c]]]\n- {}\n- []\n- ''\n",
            "a: [\n",
            "",
            "~\n",
        ] {
            let limits = Counter::new(MAX_NODES);
            // A syntax error repeats: the first ten are enough.
            let through_limits: Vec<_> = serde_yaml_ng::Deserializer::from_str(text)
                .map(|document| limits.document(document).map_err(|e| e.to_string()))
                .take(10)
                .collect();
            let as_serde: Vec<_> = serde_yaml_ng::Deserializer::from_str(text)
                .map(|document| {
                    serde_yaml_ng::Value::deserialize(document).map_err(|e| e.to_string())
                })
                .take(10)
                .collect();
            assert_eq!(through_limits, as_serde, "{text}");
        }
    }

    #[test]
    fn small_documents_are_counted_as_a_whole_file_is_checked() {
        // The same excess, in a file of small documents (counted as it is
        // parsed) and in one whose big document is checked first.
        let small = |text: String| {
            assert!(documents_small(&text));
            text
        };
        let big = |text: String| {
            let padded = format!("# {}\n{text}", "x".repeat(MAX_COUNTED_DOCUMENT_BYTES));
            assert!(!documents_small(&padded));
            (padded, 1)
        };
        let deep: String = (0..70).map(|i| " ".repeat(i) + "a:\n").collect();
        let laughs = format!(
            "a: &x [{}]\nb: [{}]\n",
            "a,".repeat(1000),
            "*x,".repeat(1000)
        );
        for (text, message, line) in [
            (
                deep,
                "mappings and lists nest deeper than 64 levels",
                Some(65),
            ),
            (laughs, "more than 262144 YAML nodes", None),
        ] {
            let counted = refused_one(&small(text.clone()));
            assert!(counted.message.starts_with(message), "{counted}");
            let (padded, padding) = big(text);
            let checked = refused_one(&padded);
            assert_eq!(counted.message, checked.message);
            if let Some(line) = line {
                assert_eq!(counted.line, Some(line), "{counted}");
                assert_eq!(checked.line, Some(line + padding), "{checked}");
            }
            assert_eq!(
                check_limits(Path::new("bomb.yaml"), &padded)
                    .expect_err("refused")
                    .message,
                counted.message
            );
        }
    }

    #[test]
    fn an_excess_after_many_errors_is_still_refused() {
        // More than MAX_ERRORS bad documents, then a bomb: the bomb is the
        // one error, as it is in a file checked before it is parsed.
        let bad = "---\na: 1\n".repeat(MAX_ERRORS * 2);
        let laughs = format!(
            "---\na: &x [{}]\nb: [{}]\n",
            "a,".repeat(1000),
            "*x,".repeat(1000)
        );
        let errors = refused(&format!("{bad}{laughs}"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("YAML nodes"), "{errors:?}");
    }

    #[test]
    fn documents_are_small_between_their_markers() {
        let part = "a: b\n".repeat(MAX_COUNTED_DOCUMENT_BYTES / 5 - 1);
        assert!(documents_small(&format!("{part}---\n{part}...\n{part}")));
        assert!(documents_small(&format!(
            "{part}--- \n{part}---\r\n{part}---"
        )));
        // Not markers: indented, or more than three, or text after them.
        for not_a_marker in [" ---\n", "----\n", "---x\n", "a ---\n"] {
            assert!(
                !documents_small(&format!("{part}{not_a_marker}{part}")),
                "{not_a_marker:?}"
            );
        }
    }

    fn refused_one(text: &str) -> crate::ConfigError {
        let mut errors = parse_file_all(Path::new("bomb.yaml"), text).expect_err("refused");
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors.remove(0)
    }
}
