//! Diagnostics that point into a pipeline file: file, line, column, the offending
//! text with a caret underneath, what was expected, and what to do.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One located error in a user's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// Byte range in the file; `None` when the error concerns the file as a whole.
    pub span: Option<Range<usize>>,
    pub message: String,
    pub help: Option<String>,
    /// Rendered location and snippet, filled from the source text at construction.
    location: Option<Location>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    line: usize,
    column: usize,
    line_text: String,
    underline: usize,
}

impl Diagnostic {
    pub fn new(
        file: &Path,
        source: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        let location = span.clone().map(|s| locate(source, s));
        Diagnostic {
            file: file.to_path_buf(),
            span,
            message: message.into(),
            help: None,
            location,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// 1-based line and column (in characters), when the error has a span.
    pub fn line_column(&self) -> Option<(usize, usize)> {
        self.location.as_ref().map(|l| (l.line, l.column))
    }
}

/// Turns a byte range into a 1-based line/column and the text of that line.
fn locate(source: &str, span: Range<usize>) -> Location {
    let start = floor_char_boundary(source, span.start.min(source.len()));
    let end = floor_char_boundary(source, span.end.min(source.len())).max(start);
    let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[start..]
        .find('\n')
        .map_or(source.len(), |i| start + i);
    let line = source[..start].matches('\n').count() + 1;
    let column = source[line_start..start].chars().count() + 1;
    let line_text = source[line_start..line_end]
        .trim_end_matches('\r')
        .to_string();
    let underline = source[start..end.min(line_end)].chars().count().max(1);
    Location {
        line,
        column,
        line_text,
        underline,
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        match &self.location {
            Some(loc) => {
                let gutter = loc.line.to_string().len();
                writeln!(
                    f,
                    "{:gutter$}--> {}:{}:{}",
                    "",
                    self.file.display(),
                    loc.line,
                    loc.column
                )?;
                writeln!(f, "{:gutter$} |", "")?;
                writeln!(f, "{} | {}", loc.line, loc.line_text)?;
                write!(
                    f,
                    "{:gutter$} | {}{}",
                    "",
                    " ".repeat(loc.column - 1),
                    "^".repeat(loc.underline)
                )?;
            }
            None => write!(f, "  --> {}", self.file.display())?,
        }
        if let Some(help) = &self.help {
            write!(f, "\n  = help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Closest candidate by edit distance, for "did you mean" hints.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_line_and_column() {
        let src = "a = 1\nbb = \"x\"\n";
        let d = Diagnostic::new(Path::new("p.toml"), src, Some(6..8), "bad");
        assert_eq!(d.line_column(), Some((2, 1)));
        let text = d.to_string();
        assert!(text.contains("p.toml:2:1"), "{text}");
        assert!(text.contains("2 | bb = \"x\""), "{text}");
        assert!(text.contains("^^"), "{text}");
    }

    #[test]
    fn suggests_near_names() {
        assert_eq!(did_you_mean("gama", ["gamma", "ws"]), Some("gamma"));
        assert_eq!(did_you_mean("zzzzzz", ["gamma", "ws"]), None);
    }
}
