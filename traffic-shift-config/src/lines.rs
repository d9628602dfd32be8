//! Field path -> line, per document.
//!
//! serde only places the values it fails on, and `serde_yaml_ng` not even
//! those once a document is a `Value`. So the text is walked a second time
//! with `yaml-rust2`'s event parser, which marks every event with its line,
//! and each mapping key and sequence item is recorded under its path.
//!
//! Lines are only needed for messages, and most documents never get one:
//! the walk is done when a line is first asked for, once per file, for all
//! its documents ([`FileLines`]). Applying 10 000 services walked 20 000
//! documents into maps of paths that were never read.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::Marker,
};

use super::error::FieldPath;

/// One YAML document of a file: the file's path (one for all its
/// documents) and its lines, found when first asked for.
#[derive(Clone, Debug)]
pub struct LineIndex {
    path: Arc<Path>,
    file: Arc<FileLines>,
    /// 0-based, empty documents included.
    document: usize,
}

impl LineIndex {
    /// Document `document` (0-based, empty documents included) of `file`,
    /// the file at `path`.
    pub fn of(path: &Arc<Path>, file: &Arc<FileLines>, document: usize) -> Self {
        Self {
            path: Arc::clone(path),
            file: Arc::clone(file),
            document,
        }
    }

    /// The line of `path`: see [`FileLines::line`].
    pub fn line(&self, path: &FieldPath) -> Option<usize> {
        self.file.line(self.document, path)
    }

    /// The file's path.
    pub fn path(&self) -> &Arc<Path> {
        &self.path
    }

    /// The file's lines.
    pub fn file(&self) -> &Arc<FileLines> {
        &self.file
    }
}

/// The text of a rules file, walked for the lines of its documents the
/// first time one is asked for.
#[derive(Default)]
pub struct FileLines {
    text: Text,
    documents: OnceLock<Vec<DocumentLines>>,
}

#[derive(Default)]
enum Text {
    /// No text: no lines.
    #[default]
    None,
    Held(Arc<str>),
    /// The file as it is on disk when a line is first asked for (the
    /// agent's own state file, which it alone writes): its text is not
    /// kept in memory for the few messages that need it.
    Disk(PathBuf),
}

type DocumentLines = HashMap<FieldPath, usize>;

impl FileLines {
    /// The lines of `text`.
    pub fn text(text: impl Into<Arc<str>>) -> Arc<Self> {
        Arc::new(Self {
            text: Text::Held(text.into()),
            documents: OnceLock::new(),
        })
    }

    /// The lines of the file at `path`, read when first asked for.
    pub fn on_disk(path: impl Into<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            text: Text::Disk(path.into()),
            documents: OnceLock::new(),
        })
    }

    /// The line of `path` in document `document` (0-based, empty documents
    /// included); for a path the walk did not record (an aliased or merged
    /// value, a field the document lacks), the line of the nearest
    /// enclosing path that it did.
    pub fn line(&self, document: usize, path: &FieldPath) -> Option<usize> {
        let lines = self.documents().get(document)?;
        let mut path = path.clone();
        loop {
            if let Some(line) = lines.get(&path) {
                return Some(*line);
            }
            path = path.parent()?;
        }
    }

    fn documents(&self) -> &[DocumentLines] {
        self.documents.get_or_init(|| match &self.text {
            Text::None => Vec::new(),
            Text::Held(text) => walk(text),
            Text::Disk(path) => std::fs::read_to_string(path)
                .map(|text| walk(&text))
                .unwrap_or_default(),
        })
    }
}

impl fmt::Debug for FileLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("FileLines");
        if let Text::Disk(path) = &self.text {
            s.field("path", path);
        }
        s.finish_non_exhaustive()
    }
}

/// One index per document of `text`, in order (documents the YAML parser
/// sees, empty ones included, as `serde_yaml_ng` counts them). On a syntax
/// error, the documents before it: the caller reports the error from
/// `serde_yaml_ng`, and a document without an index just has no lines.
#[cfg(test)]
pub fn index_documents(text: &str) -> Vec<LineIndex> {
    let file = FileLines::text(text);
    let path: Arc<Path> = Path::new("test.yaml").into();
    (0..file.documents().len())
        .map(|document| LineIndex::of(&path, &file, document))
        .collect()
}

fn walk(text: &str) -> Vec<DocumentLines> {
    let mut walker = Walker::default();
    // An error only ends the walk early; see above.
    let _ = Parser::new_from_str(text).load(&mut walker, true);
    walker.documents
}

#[derive(Default)]
struct Walker {
    documents: Vec<DocumentLines>,
    current: DocumentLines,
    stack: Vec<Frame>,
}

struct Frame {
    path: FieldPath,
    kind: FrameKind,
    /// Inside a key that is itself a mapping or sequence: nothing is
    /// recorded (no serde path can point there).
    in_complex_key: bool,
}

enum FrameKind {
    /// `key`: `None` while the next node is a key, else the key whose value
    /// comes next.
    Map {
        key: Option<String>,
    },
    Seq {
        next: usize,
    },
}

impl Walker {
    fn record(&mut self, path: FieldPath, line: usize) {
        self.current.entry(path).or_insert(line);
    }

    /// A node starts (scalar, alias, mapping, sequence): work out its path,
    /// record it, and say whether it is a mapping key (which has no path of
    /// its own) and whether it lies inside a complex key.
    fn node(&mut self, scalar: Option<&str>, line: usize) -> Option<(FieldPath, bool)> {
        let Some(frame) = self.stack.last_mut() else {
            self.record(FieldPath::root(), line);
            return Some((FieldPath::root(), false));
        };
        let in_complex_key = frame.in_complex_key;
        match &mut frame.kind {
            FrameKind::Map { key: key @ None } => {
                // This node is a key.
                if let Some(name) = scalar {
                    *key = Some(name.to_owned());
                    let path = frame.path.key(name);
                    if !in_complex_key {
                        self.record(path, line);
                    }
                    None
                } else {
                    *key = Some("?".to_owned());
                    Some((frame.path.key("?"), true))
                }
            }
            FrameKind::Map { key: key @ Some(_) } => {
                let name = key.take().unwrap_or_default();
                Some((frame.path.key(&name), in_complex_key))
            }
            FrameKind::Seq { next } => {
                let path = frame.path.index(*next);
                *next += 1;
                if !in_complex_key {
                    self.record(path.clone(), line);
                }
                Some((path, in_complex_key))
            }
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let line = mark.line();
        match event {
            Event::DocumentStart => {
                self.current = DocumentLines::default();
                self.stack.clear();
            }
            Event::DocumentEnd => {
                self.documents.push(std::mem::take(&mut self.current));
            }
            Event::Scalar(value, ..) => {
                self.node(Some(&value), line);
            }
            Event::Alias(_) => {
                self.node(None, line);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(event, Event::MappingStart(..));
                if let Some((path, in_complex_key)) = self.node(None, line) {
                    let kind = if is_map {
                        FrameKind::Map { key: None }
                    } else {
                        FrameKind::Seq { next: 0 }
                    };
                    self.stack.push(Frame {
                        path,
                        kind,
                        in_complex_key,
                    });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
a: 1
b:
- weight: 1
  x: {p: 1,
      q: 2}
- - 1
  - 2
? [complex, key]
: 3
c: &anchor
  d: 1
e: *anchor
---
# empty
---
f:
  g: [1, 2]
";

    #[test]
    fn records_keys_and_items_at_their_lines() {
        let documents = index_documents(TEXT);
        assert_eq!(
            documents.len(),
            3,
            "three documents, the empty one included"
        );
        let cases = [
            (0, "a", Some(1)),
            (0, "b", Some(2)),
            (0, "b[0]", Some(3)),
            (0, "b[0].weight", Some(3)),
            (0, "b[0].x.p", Some(4)),
            (0, "b[0].x.q", Some(5)),
            (0, "b[1]", Some(6)),
            (0, "b[1][1]", Some(7)),
            (0, "c.d", Some(11)),
            // An alias has no lines of its own: the key that holds it.
            (0, "e.d", Some(12)),
            // A field the document lacks: its nearest parent.
            (0, "b[0].missing", Some(3)),
            (0, "", Some(1)),
            (2, "f.g[1]", Some(17)),
        ];
        for (document, path, expected) in cases {
            assert_eq!(
                documents[document].line(&FieldPath::parse(path)),
                expected,
                "line of {path:?} in document {document}"
            );
        }
    }
}
