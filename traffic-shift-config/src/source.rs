//! Where a resource came from ([`Source`]): its kind, name and namespace,
//! its file and document, to report errors and warnings at a field's line.

use std::{fmt, path::Path, sync::Arc};

use crate::{
    error::{ConfigError, FieldPath, ResourceId, Warning, one_line},
    lines::FileLines,
};

/// Where a resource came from, to report errors at a field's line.
#[derive(Clone)]
pub struct Source {
    pub kind: &'static str,
    pub name: String,
    pub namespace: String,
    /// `metadata.creationTimestamp` as written (RFC 3339, as Kubernetes
    /// writes it: `2026-01-02T03:04:05Z`), when given.
    pub creation_timestamp: Option<String>,
    /// One for all the resources of a file.
    pub file: Arc<Path>,
    /// 1-based, empty documents included.
    pub document: usize,
    /// The file's (one for all its resources).
    pub(crate) lines: Arc<FileLines>,
}

impl Source {
    pub fn id(&self) -> ResourceId {
        ResourceId {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// The 1-based line of `path` in the file (or of its nearest enclosing
    /// field that is written there).
    pub fn line(&self, path: &FieldPath) -> Option<usize> {
        self.lines.line(self.document.saturating_sub(1), path)
    }

    /// The same resource, now document `document` (1-based) of `file`,
    /// whose lines are `lines` (the agent's state file, where it keeps what
    /// was applied: messages then name the file it is in, not the one it
    /// came from).
    pub fn relocate(&mut self, file: &Arc<Path>, document: usize, lines: &Arc<FileLines>) {
        self.file = Arc::clone(file);
        self.document = document;
        self.lines = Arc::clone(lines);
    }

    /// An error about `path` of this resource.
    pub fn error(&self, path: FieldPath, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            document: Some(self.document),
            resource: Some(Box::new(self.id())),
            line: self.line(&path),
            field: path,
            message: one_line(message.into()),
        }
    }

    /// A warning about `path` of this resource.
    pub fn warning(&self, path: FieldPath, message: impl Into<String>) -> Warning {
        Warning {
            file: self.file.to_path_buf(),
            document: Some(self.document),
            resource: Some(Box::new(self.id())),
            line: self.line(&path),
            field: path,
            message: one_line(message.into()),
        }
    }

    /// For messages that name another resource:
    /// `VirtualService default/a (rules/a.yaml document 3)`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({} document {})",
            self.id(),
            self.file.display(),
            self.document
        )
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("file", &self.file)
            .field("document", &self.document)
            .finish_non_exhaustive()
    }
}
