//! Config errors with positions: every error carries a 1-based line and column in the file.
//!
//! Invariants: syntax and type errors come from `toml` with a byte span; semantic errors are
//! raised against a [`Path`] into the document and located by re-reading the document with
//! spans ([`Locator`]), falling back to the nearest existing ancestor, then to `1:1`.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// One config error: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line (0 when the error is not tied to the file, e.g. a CLI override).
    pub line: usize,
    /// 1-based column in characters (0 when not tied to the file).
    pub col: usize,
    /// Human-readable message naming the problem.
    pub message: String,
}

/// All errors found in one config source; `Display` prints one `FILE:LINE:COL: message` per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// File name used as the `FILE` prefix (`<config>` for in-memory text).
    pub file: String,
    /// The errors, in document order where known.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// A single error not tied to a position (I/O failure, CLI override).
    pub fn single(file: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigErrors {
            file: file.into(),
            errors: vec![ConfigError {
                line: 0,
                col: 0,
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{}:{}: {}", self.file, e.line, e.col, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Converts a byte offset into a 1-based (line, column) pair; the column counts characters.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

/// Narrows a `toml` error span to the offending element: `toml` reports errors inside an
/// array or inline table at the container's span, so if the first `` `quoted` `` text of the
/// message occurs inside the span, point at it. Returns a byte offset.
pub fn refine(text: &str, span: Range<usize>, message: &str) -> usize {
    let quoted = message
        .split_once('`')
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(q, _)| q)
        .filter(|q| !q.is_empty());
    let inner = text.get(span.clone()).unwrap_or_default();
    match quoted.and_then(|q| inner.find(q)) {
        Some(off) => span.start + off,
        None => span.start,
    }
}

/// One step of a path into the TOML document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    /// A table key.
    Key(&'a str),
    /// An array index.
    Idx(usize),
}

/// A path into the document, e.g. `rule[2].actions[0].limit.profile`.
pub type Path<'a> = [Seg<'a>];

/// Finds byte spans of values by path, by re-parsing the document with spans.
pub struct Locator<'t> {
    text: &'t str,
    root: Option<DeValue<'t>>,
}

impl<'t> Locator<'t> {
    /// Parses `text` (which has already been deserialized successfully).
    pub fn new(text: &'t str) -> Self {
        let root = DeTable::parse(text)
            .ok()
            .map(|t| DeValue::Table(t.into_inner()));
        Locator { text, root }
    }

    /// Span of the deepest existing value along `path`.
    pub fn span(&self, path: &Path<'_>) -> Option<Range<usize>> {
        let mut cur = self.root.as_ref()?;
        let mut best = None;
        for seg in path {
            let next = match *seg {
                Seg::Key(k) => cur.get(k),
                Seg::Idx(i) => cur.get(i),
            };
            match next {
                Some(v) => {
                    best = Some(v.span());
                    cur = v.get_ref();
                }
                None => break,
            }
        }
        best
    }

    /// Builds an error positioned at `path`.
    pub fn error(&self, path: &Path<'_>, message: impl Into<String>) -> ConfigError {
        let (line, col) = self
            .span(path)
            .map_or((1, 1), |s| line_col(self.text, s.start));
        ConfigError {
            line,
            col,
            message: message.into(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is a failure
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let t = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        // `"x"` starts after "bé = " (5 chars, 6 bytes)
        assert_eq!(line_col(t, 6 + 6), (2, 6));
    }

    #[test]
    fn refine_points_inside_containers() {
        let t = "x = [\"a\", \"bad\"]";
        assert_eq!(refine(t, 4..t.len(), "bad value `bad`"), 11);
        assert_eq!(refine(t, 4..t.len(), "no quote"), 4);
        assert_eq!(refine(t, 4..t.len(), "`zzz` not there"), 4);
    }

    #[test]
    fn locator_finds_nested_values() {
        let t = "[core]\nworkers = 3\n\n[[rule]]\nname = \"a\"\n[[rule]]\nname = \"b\"\n";
        let loc = Locator::new(t);
        let e = loc.error(&[Seg::Key("rule"), Seg::Idx(1), Seg::Key("name")], "x");
        assert_eq!((e.line, e.col), (7, 8));
        let e = loc.error(&[Seg::Key("core"), Seg::Key("workers")], "x");
        assert_eq!((e.line, e.col), (2, 11));
        // missing leaf falls back to the parent
        let e = loc.error(&[Seg::Key("core"), Seg::Key("nope")], "x");
        assert_eq!(e.line, 1);
    }
}
