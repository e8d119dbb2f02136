//! A fast path for large `recipients:` blocks.
//!
//! A table of a million recipients is a million lines of `  alice@example.com: m365`.
//! The YAML parser spends seconds on them; this scanner reads such a block directly,
//! with exact line and column numbers, and hands the rest of the file (the block's lines
//! blanked, so every other position is unchanged) to the YAML parser.
//!
//! It is deliberately narrow: the block is taken only when every entry line is a plain
//! `ADDRESS: ROUTE` whose key contains `@` and whose value is a plain route name, with
//! nothing YAML could read differently (quotes, flow or block indicators, anchors, tags,
//! comments after a value, tabs, keywords like `null` or `yes`, numbers). Anything else,
//! anywhere in the block, returns `None` and the whole file goes through the YAML parser,
//! so the two paths cannot disagree.

use hashbrown::HashMap;

/// One recipient line.
pub(crate) struct Line {
    pub(crate) key: Box<str>,
    pub(crate) key_at: (u32, u32),
    pub(crate) value: u32,
    pub(crate) value_at: (u32, u32),
}

/// A recipients block read by the scanner.
pub(crate) struct Block {
    /// The file with the block's entry lines blanked.
    pub(crate) rest: String,
    /// The entries, in file order.
    pub(crate) lines: Vec<Line>,
    /// The distinct route names, indexed by `Line::value`.
    pub(crate) values: Vec<String>,
}

/// Blocks smaller than this are left to the YAML parser (which gives the same result).
const MIN_ENTRIES: usize = 64;

/// Read the `recipients:` block of `text` if it is plain enough; `None` otherwise.
pub(crate) fn scan(text: &str) -> Option<Block> {
    if text.contains('\t') {
        return None;
    }
    let start = find_block_start(text)?;
    let mut lines = Vec::new();
    let mut values: Vec<String> = Vec::new();
    let mut names: HashMap<&str, u32> = HashMap::new();
    let mut indent: Option<usize> = None;
    let mut end = text.len();
    let mut offset = start.after;
    let mut line_no = start.line;
    while offset < text.len() {
        let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
        let raw = &text[offset..line_end];
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        line_no += 1;
        let trimmed = line.trim_start_matches(' ');
        let this_indent = line.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            if this_indent == 0 && trimmed.starts_with('#') {
                // A top-level comment may end the block; stop here, stay exact.
                end = offset;
                break;
            }
        } else if this_indent == 0 {
            end = offset;
            break;
        } else {
            let want = *indent.get_or_insert(this_indent);
            if this_indent != want {
                return None;
            }
            let (key, value, value_col) = entry(trimmed)?;
            let index = match names.get(value) {
                Some(&i) => i,
                None => {
                    let i = values.len() as u32;
                    values.push(value.to_string());
                    names.insert(value, i);
                    i
                }
            };
            lines.push(Line {
                key: key.into(),
                key_at: (line_no, this_indent as u32 + 1),
                value: index,
                value_at: (line_no, (this_indent + value_col) as u32 + 1),
            });
        }
        offset = line_end + 1;
    }
    if lines.len() < MIN_ENTRIES {
        return None;
    }
    // Blank the block (keep the line breaks so every other position is unchanged).
    let end = end.min(text.len());
    let mut rest = String::with_capacity(text.len() - (end - start.after));
    rest.push_str(&text[..start.after]);
    rest.extend(
        text[start.after..end]
            .bytes()
            .filter(|&b| b == b'\n')
            .map(|_| '\n'),
    );
    rest.push_str(&text[end..]);
    Some(Block {
        rest,
        lines,
        values,
    })
}

struct Start {
    /// Byte offset just after the `recipients:` line.
    after: usize,
    /// 1-based line number of the `recipients:` line.
    line: u32,
}

/// The top-level `recipients:` line, alone on its line.
fn find_block_start(text: &str) -> Option<Start> {
    let mut offset = 0;
    let mut line = 0u32;
    while offset <= text.len() {
        line += 1;
        let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
        let l = text[offset..end].trim_end_matches(['\r', ' ']);
        if l == "recipients:" {
            return Some(Start {
                after: (end + 1).min(text.len()),
                line,
            });
        }
        if end == text.len() {
            return None;
        }
        offset = end + 1;
    }
    None
}

/// `KEY: VALUE` with a plain address key and a plain route name; the value's column
/// offset within `s`.
fn entry(s: &str) -> Option<(&str, &str, usize)> {
    let (key, rest) = s.split_once(": ")?;
    let value = rest.trim_start_matches(' ');
    let value_col = key.len() + 2 + (rest.len() - value.len());
    let value = value.trim_end_matches(' ');
    plain_key(key).then_some(())?;
    plain_value(value).then_some(())?;
    Some((key, value, value_col))
}

fn plain_key(k: &str) -> bool {
    let Some(first) = k.bytes().next() else {
        return false;
    };
    k.contains('@')
        && !b"-?:,[]{}#&*!|>'\"%@`".contains(&first)
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-=/!$%&'*?^`{|}~@".contains(&b) || b >= 0x80)
        && !k.contains(['{', '}', '|'])
}

fn plain_value(v: &str) -> bool {
    const KEYWORDS: [&str; 10] = [
        "null", "true", "false", "yes", "no", "on", "off", "y", "n", "~",
    ];
    !v.is_empty()
        && v.len() <= 64
        && v.bytes().any(|b| b.is_ascii_alphabetic())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !v.starts_with(|c: char| c == '-' || c == '.' || c.is_ascii_digit())
        && !KEYWORDS.iter().any(|k| v.eq_ignore_ascii_case(k))
        && v.parse::<f64>().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &str) -> String {
        let mut t = String::from("domains: [example.com]\nrecipients:\n");
        for i in 0..MIN_ENTRIES {
            t.push_str(&format!("  u{i}@example.com: m365\n"));
        }
        t.push_str(entries);
        t.push_str("default: local\n");
        t
    }

    #[test]
    fn plain_block_is_scanned_with_exact_positions() {
        let t = table("  alice@example.com:   legacy\n\n  # note\n");
        let b = scan(&t).unwrap();
        assert_eq!(b.lines.len(), MIN_ENTRIES + 1);
        let last = b.lines.last().unwrap();
        assert_eq!(&*last.key, "alice@example.com");
        assert_eq!(last.key_at, (MIN_ENTRIES as u32 + 3, 3));
        assert_eq!(last.value_at, (MIN_ENTRIES as u32 + 3, 24));
        assert_eq!(b.values, vec!["m365", "legacy"]);
        assert_eq!(b.rest.lines().count(), t.lines().count());
        assert!(b.rest.ends_with("default: local\n"));
        assert!(!b.rest.contains("u1@"));
    }

    #[test]
    fn anything_unusual_goes_to_the_yaml_parser() {
        for odd in [
            "  carol@example.com:\n    route: m365\n",
            "  \"q\"@example.com: m365\n",
            "  a@example.com: m365 # comment\n",
            "  a@example.com: null\n",
            "  a@example.com: \"m365\"\n",
            "  a@example.com: *alias\n",
            "  a@example.com: smtp:[h]:25\n",
            "  bob: m365\n",
            "  a@example.com: 123\n",
            "   a@example.com: m365\n",
            "  &x a@example.com: m365\n",
        ] {
            assert!(scan(&table(odd)).is_none(), "{odd:?}");
        }
        assert!(scan(&table("").replace("  u0@example.com", "\tu0@example.com")).is_none());
    }

    #[test]
    fn small_blocks_are_left_to_yaml() {
        assert!(scan("recipients:\n  a@example.com: m365\n").is_none());
    }
}
