//! The one error type of `config`, and the field paths it points at.

use std::{
    fmt::{self, Display, Write as _},
    path::{Path, PathBuf},
};

/// One step of a [`FieldPath`]: a mapping key or a sequence index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// Where a value sits in a document, in kubectl style:
/// `spec.tcp[0].route[1].weight`. The empty path is the document itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    /// The document itself.
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses the kubectl form (`spec.tcp[0].route`). Keys that contain `.`
    /// or `[` cannot be written this way; add them with [`FieldPath::key`].
    pub fn parse(text: &str) -> Self {
        let mut segments = Vec::new();
        for part in text.split('.').filter(|part| !part.is_empty()) {
            let (key, mut rest) = part
                .split_once('[')
                .map_or((part, ""), |(key, rest)| (key, rest));
            if !key.is_empty() {
                segments.push(Segment::Key(key.to_owned()));
            }
            while let Some((index, tail)) = rest.split_once(']') {
                match index.parse() {
                    Ok(index) => segments.push(Segment::Index(index)),
                    Err(_) => segments.push(Segment::Key(index.to_owned())),
                }
                rest = tail.strip_prefix('[').unwrap_or(tail);
            }
        }
        Self(segments)
    }

    /// This path with a mapping key appended.
    #[must_use]
    pub fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        Self(segments)
    }

    /// This path with a sequence index appended.
    #[must_use]
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        Self(segments)
    }

    /// The enclosing path, `None` for the root.
    #[must_use]
    pub fn parent(&self) -> Option<Self> {
        let (_, parent) = self.0.split_last()?;
        Some(Self(parent.to_vec()))
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

impl From<&serde_path_to_error::Path> for FieldPath {
    fn from(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment as S;
        Self(
            path.iter()
                .filter_map(|segment| match segment {
                    S::Seq { index } => Some(Segment::Index(*index)),
                    S::Map { key } => Some(Segment::Key(key.clone())),
                    S::Enum { variant } => Some(Segment::Key(variant.clone())),
                    S::Unknown => None,
                })
                .collect(),
        )
    }
}

/// Which resource an error is about: `VirtualService default/tcp-echo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceId {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A rules file that cannot be used, and where and why.
///
/// Displays as one line:
/// `<file>: document <n> (<Kind> <namespace>/<name>): <field.path>: <message> (line <L>)`,
/// leaving out the parts that are not known (the resource of a document
/// that does not parse, the line of a value the parser did not place, the
/// document of a file that cannot be read).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(&self.file, self.document, self.resource.as_deref(), &self.field, self.line, &self.message))]
pub struct ConfigError {
    /// The rules file, as given to `parse_file` / found by `load_dir`.
    pub file: PathBuf,
    /// 1-based index of the YAML document in the file (empty documents count).
    pub document: Option<usize>,
    /// The resource, when its kind and name could be read (boxed to keep
    /// `Result<_, ConfigError>` small).
    pub resource: Option<Box<ResourceId>>,
    /// The field at fault; the root path when the whole document is.
    pub field: FieldPath,
    /// 1-based line of `field` in `file`.
    pub line: Option<usize>,
    /// What is wrong and what to do about it (one line).
    pub message: String,
}

impl ConfigError {
    /// An error about the file as a whole (cannot be read).
    pub fn file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            document: None,
            resource: None,
            field: FieldPath::root(),
            line: None,
            message: one_line(message.into()),
        }
    }
}

/// Something legal that is probably not what was meant (Istio's warnings:
/// weights that do not add up to 100, a subset that selects no endpoint, a
/// rule that is never reached). The rules are applied all the same.
///
/// Displays like [`ConfigError`]:
/// `<file>: document <n> (<Kind> <namespace>/<name>): <field.path>: <message> (line <L>)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    pub document: Option<usize>,
    pub resource: Option<Box<ResourceId>>,
    pub field: FieldPath,
    pub line: Option<usize>,
    pub message: String,
}

impl Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render(
            &self.file,
            self.document,
            self.resource.as_deref(),
            &self.field,
            self.line,
            &self.message,
        ))
    }
}

/// `<file>: document <n> (<resource>): <field>: <message> (line <L>)`, the
/// unknown parts left out.
fn render(
    file: &Path,
    document: Option<usize>,
    resource: Option<&ResourceId>,
    field: &FieldPath,
    line: Option<usize>,
    message: &str,
) -> String {
    let mut out = format!("{}: ", file.display());
    if let Some(document) = document {
        match resource {
            Some(resource) => {
                let _ = write!(out, "document {document} ({resource}): ");
            }
            None => {
                let _ = write!(out, "document {document}: ");
            }
        }
    }
    if !field.is_root() {
        let _ = write!(out, "{field}: ");
    }
    out.push_str(message);
    if let Some(line) = line {
        let _ = write!(out, " (line {line})");
    }
    out
}

/// Messages from other libraries may span lines; an error is one line.
pub(super) fn one_line(message: String) -> String {
    if message.contains('\n') {
        message.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        message
    }
}

/// A path in kubectl form, with `format!` arguments: `fp!("spec.tcp[{i}]")`.
macro_rules! fp {
    ($($arg:tt)*) => {
        $crate::error::FieldPath::parse(&format!($($arg)*))
    };
}
pub(crate) use fp;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_path_round_trips_through_its_text() {
        for text in [
            "spec",
            "spec.tcp[0].route[1].weight",
            "spec.subsets[2]",
            "metadata.name",
        ] {
            assert_eq!(
                FieldPath::parse(text).to_string(),
                text,
                "parsing then printing {text:?} should give it back"
            );
        }
        assert!(
            FieldPath::parse("").is_root(),
            "the empty text is the root path"
        );
    }

    #[test]
    fn display_leaves_out_unknown_parts() {
        let full = ConfigError {
            file: "rules/a.yaml".into(),
            document: Some(3),
            resource: Some(Box::new(ResourceId {
                kind: "VirtualService",
                namespace: "default".into(),
                name: "tcp-echo".into(),
            })),
            field: FieldPath::parse("spec.tcp[0].route[1].weight"),
            line: Some(27),
            message: "weight -5 < 0".into(),
        };
        let cases = [
            (
                full.clone(),
                "rules/a.yaml: document 3 (VirtualService default/tcp-echo): \
                 spec.tcp[0].route[1].weight: weight -5 < 0 (line 27)",
            ),
            (
                ConfigError {
                    resource: None,
                    field: FieldPath::root(),
                    ..full.clone()
                },
                "rules/a.yaml: document 3: weight -5 < 0 (line 27)",
            ),
            (
                ConfigError {
                    line: None,
                    ..full.clone()
                },
                "rules/a.yaml: document 3 (VirtualService default/tcp-echo): \
                 spec.tcp[0].route[1].weight: weight -5 < 0",
            ),
            (
                ConfigError::file("rules/a.yaml", "cannot read the file:\n denied"),
                "rules/a.yaml: cannot read the file: denied",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected, "rendering {error:?}");
        }
    }
}
