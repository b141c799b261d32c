//! Source files and positions inside them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// A runbook's text and the name it is shown under in diagnostics.
#[derive(Debug, Clone)]
pub struct Source {
    /// The path as the user gave it (relative paths stay relative), used in messages.
    pub path: PathBuf,
    /// The whole text of the file.
    pub text: Arc<str>,
    /// Byte offsets where lines start, built on first use.
    line_starts: Arc<OnceLock<Vec<usize>>>,
}

impl Source {
    /// Wraps text that did not come from disk (tests, stdin, generated runbooks).
    pub fn new(path: impl Into<PathBuf>, text: impl Into<Arc<str>>) -> Self {
        Source {
            path: path.into(),
            text: text.into(),
            line_starts: Arc::default(),
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
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let line = starts.partition_point(|&s| s <= offset).max(1);
        let line_start = starts[line - 1];
        let col = self.text[line_start..offset].chars().count() + 1;
        (line, col)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_of_offsets() {
        let s = Source::new("t", "ab\nçd\n\nx");
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(2), (1, 3));
        assert_eq!(s.line_col(3), (2, 1));
        assert_eq!(s.line_col(5), (2, 2)); // after the two-byte ç
        assert_eq!(s.line_col(4), (2, 1)); // inside ç: floored to its start
        assert_eq!(s.line_col(7), (3, 1));
        assert_eq!(s.line_col(8), (4, 1));
        assert_eq!(s.line_col(99), (4, 2));
    }
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
