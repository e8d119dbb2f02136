//! Reading the source text of a Postfix lookup table, the input of `postmap(1)`.
//!
//! Input: the bytes of a file such as `/etc/postfix/transport`. Output: its entries
//! (`key value`, with the line where each logical line starts) and the lines Postfix
//! would skip, each with its line number. The rules are postmap's, checked against
//! Postfix 3.7:
//!
//! - a logical line starts with non-whitespace text; a line that starts with whitespace
//!   continues it, appended as it is (its leading whitespace included);
//! - empty lines, whitespace-only lines and lines whose first non-whitespace character is
//!   `#` are ignored, and do not end a logical line;
//! - the key runs to the first whitespace, the value is the rest without surrounding
//!   whitespace; a line with a key and no value is ignored ("expected format: key
//!   whitespace value").
//!
//! One deviation: a `\r` before a line break is dropped (Postfix would keep it inside a
//! continued value), so files with CRLF line ends read as their author meant.
//!
//! Bounded: a logical line longer than [`MAX_LINE_BYTES`] is reported and skipped; the
//! caller bounds the file size ([`super::MAX_MAP_BYTES`]). Nothing here panics.

use serde::Serialize;

/// Longest logical line read (bytes, continuation lines included). Postfix has no such
/// limit, but no real transport or relay_recipients entry comes near it.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// One `key value` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// 1-based line where the logical line starts.
    pub line: u32,
    /// The key, as written.
    pub key: String,
    /// The value, without surrounding whitespace.
    pub value: String,
}

/// A line postmap would skip, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineProblem {
    /// 1-based line where the logical line starts.
    pub line: u32,
    /// What is wrong with it.
    pub kind: LineProblemKind,
}

/// Why a line is skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(into = "String")]
#[non_exhaustive]
pub enum LineProblemKind {
    /// The line is not UTF-8 text.
    #[error("not valid UTF-8 text")]
    NotUtf8,
    /// The logical line is longer than [`MAX_LINE_BYTES`].
    #[error("line is {len} bytes long, the limit is {MAX_LINE_BYTES}")]
    TooLong {
        /// Its length (at least; reading stops counting past the limit).
        len: usize,
    },
    /// A key without a value; postmap ignores such a line.
    #[error(
        "'{key}' has no value (postmap ignores the line: expected format: key whitespace value)"
    )]
    NoValue {
        /// The key.
        key: String,
    },
    /// A continuation line before any logical line.
    #[error("a continuation line (starting with whitespace) with nothing to continue")]
    StrayContinuation,
}

impl From<LineProblemKind> for String {
    fn from(k: LineProblemKind) -> String {
        k.to_string()
    }
}

/// The entries of a map and the lines skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedMap {
    /// Entries in file order (duplicates included; the caller decides).
    pub entries: Vec<MapEntry>,
    /// Lines skipped, in file order.
    pub problems: Vec<LineProblem>,
}

/// Split map source text into entries, as postmap reads it.
///
/// ```
/// use splitmx::import::postfix_map::parse_map;
///
/// let map = parse_map(b"# comment\nexample.com\n  smtp:[mx.example.com]\n.example.com error:5.1.1 gone\n");
/// assert_eq!(map.entries[0].key, "example.com");
/// assert_eq!(map.entries[0].value, "smtp:[mx.example.com]");
/// assert_eq!(map.entries[1].line, 4);
/// ```
pub fn parse_map(bytes: &[u8]) -> ParsedMap {
    let mut out = ParsedMap::default();
    let mut current: Option<Logical> = None;
    for (n, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = u32::try_from(n).unwrap_or(u32::MAX).saturating_add(1);
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = trim_start(line);
        if text.is_empty() || text.first() == Some(&b'#') {
            continue;
        }
        if text.len() < line.len() {
            match current.as_mut() {
                Some(logical) => logical.push(line),
                None => out.problems.push(LineProblem {
                    line: line_no,
                    kind: LineProblemKind::StrayContinuation,
                }),
            }
            continue;
        }
        if let Some(done) = current.take() {
            done.finish(&mut out);
        }
        let mut logical = Logical {
            line: line_no,
            bytes: Vec::new(),
            len: 0,
        };
        logical.push(line);
        current = Some(logical);
    }
    if let Some(done) = current {
        done.finish(&mut out);
    }
    out
}

/// A logical line being read.
struct Logical {
    line: u32,
    bytes: Vec<u8>,
    /// Total length seen, also past the limit.
    len: usize,
}

impl Logical {
    fn push(&mut self, piece: &[u8]) {
        self.len = self.len.saturating_add(piece.len());
        if self.len <= MAX_LINE_BYTES {
            self.bytes.extend_from_slice(piece);
        }
    }

    fn finish(self, out: &mut ParsedMap) {
        let problem = |kind| LineProblem {
            line: self.line,
            kind,
        };
        if self.len > MAX_LINE_BYTES {
            out.problems
                .push(problem(LineProblemKind::TooLong { len: self.len }));
            return;
        }
        let Ok(text) = std::str::from_utf8(&self.bytes) else {
            out.problems.push(problem(LineProblemKind::NotUtf8));
            return;
        };
        let text = text.trim_end_matches(is_space);
        let (key, value) = match text.find(is_space) {
            Some(i) => (&text[..i], text[i..].trim_start_matches(is_space)),
            None => (text, ""),
        };
        if value.is_empty() {
            out.problems.push(problem(LineProblemKind::NoValue {
                key: key.to_string(),
            }));
            return;
        }
        out.entries.push(MapEntry {
            line: self.line,
            key: key.to_string(),
            value: value.to_string(),
        });
    }
}

/// Whitespace as Postfix's `ISSPACE` sees it in the ASCII range.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

fn trim_start(line: &[u8]) -> &[u8] {
    let start = line
        .iter()
        .position(|&b| !is_space(char::from(b)))
        .unwrap_or(line.len());
    line.get(start..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<(u32, String, String)> {
        parse_map(text.as_bytes())
            .entries
            .into_iter()
            .map(|e| (e.line, e.key, e.value))
            .collect()
    }

    #[test]
    fn continuation_lines_are_appended_as_postmap_does() {
        // What `postmap -q` printed for this text (Postfix 3.7).
        let text = "a.example error:5.1.1 gone\n   away   there\n# comment\n  more\n\n  after blank\nb.example\tsmtp:[b]\t\nc.example x:y # not a comment\n  #indented comment\n  cont\n";
        assert_eq!(
            entries(text),
            vec![
                (
                    1,
                    "a.example".into(),
                    "error:5.1.1 gone   away   there  more  after blank".into()
                ),
                (7, "b.example".into(), "smtp:[b]".into()),
                (8, "c.example".into(), "x:y # not a comment  cont".into()),
            ]
        );
    }

    #[test]
    fn skipped_lines_are_reported_with_their_line() {
        let mut text = b"  stray\nkeyonly\nok value\nbad \xff value\n".to_vec();
        text.extend_from_slice(b"long ");
        text.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES));
        text.extend_from_slice(b"\n  more\nlast value\r\n");
        let map = parse_map(&text);
        let problems: Vec<(u32, String)> = map
            .problems
            .iter()
            .map(|p| (p.line, p.kind.to_string()))
            .collect();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert_eq!(problems[0].0, 1);
        assert!(problems[0].1.contains("continuation"));
        assert_eq!(problems[1].0, 2);
        assert!(problems[1].1.contains("'keyonly' has no value"));
        assert_eq!(
            (problems[2].0, problems[2].1.as_str()),
            (4, "not valid UTF-8 text")
        );
        assert_eq!(problems[3].0, 5);
        assert!(problems[3].1.contains("the limit is"));
        let kept: Vec<(u32, &str)> = map
            .entries
            .iter()
            .map(|e| (e.line, e.value.as_str()))
            .collect();
        assert_eq!(kept, vec![(3, "value"), (7, "value")]);
    }

    #[test]
    fn empty_and_odd_input_gives_no_entries() {
        for text in ["", "\n\n", "#", "   \n\t\n", "\r\n"] {
            let map = parse_map(text.as_bytes());
            assert!(
                map.entries.is_empty() && map.problems.is_empty(),
                "{text:?}"
            );
        }
    }
}
