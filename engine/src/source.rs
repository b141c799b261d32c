//! Source files and positions inside them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A runbook's text and the name it is shown under in diagnostics.
#[derive(Debug, Clone)]
pub struct Source {
    /// The path as the user gave it (relative paths stay relative), used in messages.
    pub path: PathBuf,
    /// The whole text of the file.
    pub text: Arc<str>,
}

impl Source {
    /// Wraps text that did not come from disk (tests, stdin, generated runbooks).
    pub fn new(path: impl Into<PathBuf>, text: impl Into<Arc<str>>) -> Self {
        Source {
            path: path.into(),
            text: text.into(),
        }
    }

    /// Reads a file from disk.
    pub fn read(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Ok(Source::new(path, text))
    }

    /// The display name of the file.
    pub fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// The 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A region of a source file: byte offset and length, plus 1-based line and column of its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Span {
    /// Byte offset of the first byte.
    pub offset: usize,
    /// Length in bytes (0 for a point).
    pub len: usize,
    /// 1-based line of the start.
    pub line: usize,
    /// 1-based column (in characters) of the start.
    pub column: usize,
}

impl Span {
    /// A span that starts `delta` bytes into this one, on the same line (for positions inside a
    /// single-line scalar), `len` bytes long.
    pub fn sub(&self, source: &Source, delta: usize, len: usize) -> Span {
        let offset = (self.offset + delta).min(source.text.len());
        let (line, column) = source.line_col(offset);
        Span {
            offset,
            len,
            line,
            column,
        }
    }
}
