//! The day file: one tab-separated line per (recipient, route) of one UTC day.
//!
//! ```text
//! # splitmx journal 1 2024-05-01
//! # recipient→route→kind→messages→first_seen→last_seen
//! alice@example.com→m365→smtp:example-com.mail.protection.outlook.com→12→2024-05-01T07:02:11Z→2024-05-01T16:40:09Z
//! ```
//!
//! (`→` stands for one tab character.)
//!
//! Lines starting with `#` and empty lines are comments. A field never holds a raw tab,
//! line break or backslash: they are written `\t`, `\n`, `\r` and `\\` (and a recipient
//! that starts with `#` is written `\#`). Times are UTC, to
//! the second. Reading is bounded (file size and line length) and a malformed line is
//! skipped and counted, never a panic; writing goes to a temporary file that is fsynced
//! and renamed over the old one, so a crash leaves the previous complete file.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::day::{Day, format_timestamp, parse_timestamp};

/// The format version written in the header.
pub const FORMAT_VERSION: u32 = 1;
/// The file name suffix of a day file.
pub const SUFFIX: &str = ".tsv";
/// Longest line read, in bytes; longer lines are skipped.
pub const MAX_LINE: usize = 4096;
/// Largest day file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// One (recipient, route) line of a day file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The recipient's matching key (case-folded `local@domain`).
    pub recipient: String,
    /// The route name from the tables.
    pub route: String,
    /// What the route does, in transport(5) form (`smtp:[host]:25`, `maildir:…`).
    pub kind: String,
    /// Messages accepted for the recipient on this route that day.
    pub messages: u64,
    /// First message of the day, Unix seconds.
    pub first_seen: u64,
    /// Last message of the day, Unix seconds.
    pub last_seen: u64,
}

/// A row to write, borrowing its strings.
#[derive(Debug, Clone, Copy)]
pub struct RowRef<'a> {
    /// See [`Row::recipient`].
    pub recipient: &'a str,
    /// See [`Row::route`].
    pub route: &'a str,
    /// See [`Row::kind`].
    pub kind: &'a str,
    /// See [`Row::messages`].
    pub messages: u64,
    /// See [`Row::first_seen`].
    pub first_seen: u64,
    /// See [`Row::last_seen`].
    pub last_seen: u64,
}

/// A day file as read.
#[derive(Debug, Clone, Default)]
pub struct DayFile {
    /// The rows, in file order.
    pub rows: Vec<Row>,
    /// Lines that were not rows (malformed or too long).
    pub skipped: usize,
    /// The first of them: line number and what is wrong.
    pub first_error: Option<(usize, String)>,
}

/// A journal file or directory that cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// A read, write, fsync or rename failed.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: String,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// A day file larger than [`MAX_FILE_BYTES`].
    #[error("{path}: {size} bytes, larger than the {max} bytes a day file may have")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
}

impl JournalError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> JournalError {
        JournalError::Io {
            path: path.display().to_string(),
            error,
        }
    }
}

/// The path of the file for `day` in `dir`.
pub fn day_path(dir: &Path, day: Day) -> PathBuf {
    dir.join(format!("{day}{SUFFIX}"))
}

/// The day a file name stands for (`2024-05-01.tsv`), if it is a day file.
pub fn day_of_file_name(name: &str) -> Option<Day> {
    Day::parse(name.strip_suffix(SUFFIX)?)
}

/// Read the day file at `path`; a missing file is an empty day.
pub fn read_day(path: &Path) -> Result<DayFile, JournalError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DayFile::default()),
        Err(e) => return Err(JournalError::io(path, e)),
    };
    let size = file
        .metadata()
        .map_err(|e| JournalError::io(path, e))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(JournalError::TooLarge {
            path: path.display().to_string(),
            size,
            max: MAX_FILE_BYTES,
        });
    }
    let mut reader = BufReader::new(file.take(MAX_FILE_BYTES));
    let mut out = DayFile::default();
    let mut buf = Vec::with_capacity(256);
    let mut number = 0;
    loop {
        number += 1;
        let line = match read_bounded_line(&mut reader, &mut buf) {
            Ok(None) => break,
            Ok(Some(true)) => std::str::from_utf8(&buf)
                .map_err(|_| "not UTF-8".to_string())
                .and_then(parse_line),
            Ok(Some(false)) => Err(format!("longer than {MAX_LINE} bytes")),
            Err(e) => return Err(JournalError::io(path, e)),
        };
        match line {
            Ok(Some(row)) => out.rows.push(row),
            Ok(None) => {}
            Err(why) => {
                out.skipped += 1;
                out.first_error.get_or_insert((number, why));
            }
        }
    }
    Ok(out)
}

/// Read one line into `buf` (without its line break). `None` at end of file,
/// `Some(false)` when the line was longer than [`MAX_LINE`] (the rest is discarded).
fn read_bounded_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let limit = MAX_LINE as u64 + 1;
    let n = reader.by_ref().take(limit).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(Some(buf.len() <= MAX_LINE));
    }
    if buf.len() <= MAX_LINE {
        // The last line of the file, without a line break.
        return Ok(Some(true));
    }
    // Too long: skip to the end of the line without keeping it.
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                break;
            }
            None => {
                let len = chunk.len();
                reader.consume(len);
            }
        }
    }
    Ok(Some(false))
}

/// Parse one line: `Ok(None)` for a comment or an empty line.
pub fn parse_line(line: &str) -> Result<Option<Row>, String> {
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut fields = line.split('\t');
    let mut next = |name: &str| {
        fields
            .next()
            .ok_or_else(|| format!("missing field {name} (expected 6 tab-separated fields)"))
    };
    let recipient = unescape(next("recipient")?)?;
    let route = unescape(next("route")?)?;
    let kind = unescape(next("kind")?)?;
    let messages = next("messages")?;
    let messages: u64 = messages
        .parse()
        .map_err(|_| format!("messages '{messages}' is not a number"))?;
    let first = next("first_seen")?;
    let first_seen = parse_timestamp(first)
        .ok_or_else(|| format!("first_seen '{first}' is not YYYY-MM-DDTHH:MM:SSZ"))?;
    let last = next("last_seen")?;
    let last_seen = parse_timestamp(last)
        .ok_or_else(|| format!("last_seen '{last}' is not YYYY-MM-DDTHH:MM:SSZ"))?;
    if fields.next().is_some() {
        return Err("more than 6 fields".to_string());
    }
    if recipient.is_empty() || route.is_empty() {
        return Err("empty recipient or route".to_string());
    }
    Ok(Some(Row {
        recipient,
        route,
        kind,
        messages,
        first_seen,
        last_seen: last_seen.max(first_seen),
    }))
}

/// Append one row as a line (with its line break) to `out`.
pub fn push_line(out: &mut String, row: &RowRef<'_>) {
    // `#` is a valid first character of a local part, but would start a comment line.
    if row.recipient.starts_with('#') {
        out.push('\\');
    }
    escape_into(out, row.recipient);
    out.push('\t');
    escape_into(out, row.route);
    out.push('\t');
    escape_into(out, row.kind);
    out.push('\t');
    out.push_str(&row.messages.to_string());
    out.push('\t');
    out.push_str(&format_timestamp(row.first_seen));
    out.push('\t');
    out.push_str(&format_timestamp(row.last_seen));
    out.push('\n');
}

/// The header lines of a day file.
pub fn header(day: Day) -> String {
    format!(
        "# splitmx journal {FORMAT_VERSION} {day}\n# recipient\troute\tkind\tmessages\tfirst_seen\tlast_seen\n"
    )
}

/// Write the file for `day` in `dir` with these rows: temporary file, fsync, rename,
/// fsync of the directory.
pub fn write_day<'a>(
    dir: &Path,
    day: Day,
    rows: impl IntoIterator<Item = RowRef<'a>>,
) -> Result<(), JournalError> {
    let path = day_path(dir, day);
    let tmp = dir.join(format!(".{day}{SUFFIX}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = std::io::BufWriter::with_capacity(256 * 1024, File::create(&tmp)?);
        file.write_all(header(day).as_bytes())?;
        let mut line = String::with_capacity(256);
        for row in rows {
            line.clear();
            push_line(&mut line, &row);
            file.write_all(line.as_bytes())?;
        }
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(JournalError::io(&tmp, e));
    }
    std::fs::rename(&tmp, &path).map_err(|e| JournalError::io(&path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io(dir, e))
}

fn escape_into(out: &mut String, s: &str) {
    if !s.contains(['\\', '\t', '\n', '\r']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> Result<String, String> {
    if !s.contains('\\') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('#') => out.push('#'),
            other => return Err(format!("bad escape '\\{}'", other.unwrap_or(' '))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(recipient: &str, route: &str) -> Row {
        Row {
            recipient: recipient.to_string(),
            route: route.to_string(),
            kind: "smtp:[192.0.2.1]:25".to_string(),
            messages: 3,
            first_seen: 1_714_521_600,
            last_seen: 1_714_560_000,
        }
    }

    fn as_ref(r: &Row) -> RowRef<'_> {
        RowRef {
            recipient: &r.recipient,
            route: &r.route,
            kind: &r.kind,
            messages: r.messages,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
        }
    }

    #[test]
    fn a_written_file_reads_back_with_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let day = Day::parse("2024-05-01").unwrap();
        let rows = vec![
            row("#hash@example.com", "m365"),
            row("alice@example.com", "m365"),
            row("bob@example.com", "odd\tname\\x"),
        ];
        write_day(dir.path(), day, rows.iter().map(as_ref)).unwrap();
        let text = std::fs::read_to_string(dir.path().join("2024-05-01.tsv")).unwrap();
        assert_eq!(
            text.lines().nth(3),
            Some(
                "alice@example.com\tm365\tsmtp:[192.0.2.1]:25\t3\t2024-05-01T00:00:00Z\t2024-05-01T10:40:00Z"
            )
        );
        assert!(text.contains("odd\\tname\\\\x"), "{text}");
        assert!(text.contains("\n\\#hash@example.com\t"), "{text}");
        let back = read_day(&day_path(dir.path(), day)).unwrap();
        assert_eq!(back.rows, rows);
        assert_eq!(back.skipped, 0);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn malformed_and_overlong_lines_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2024-05-01.tsv");
        let long = "x".repeat(MAX_LINE + 10);
        let text = format!(
            "# header\n\nalice@example.com\tm365\tsmtp:x\t2\t2024-05-01T00:00:00Z\t2024-05-01T00:00:01Z\n{long}\nbob@example.com\tm365\n\
             carol@example.com\tm365\tk\tmany\t2024-05-01T00:00:00Z\t2024-05-01T00:00:00Z\n\
             dave@example.com\tm365\tk\t1\t2024-05-01T00:00:00Z\t2024-05-01T00:00:00Z"
        );
        std::fs::write(&path, text).unwrap();
        let file = read_day(&path).unwrap();
        let who: Vec<&str> = file.rows.iter().map(|r| r.recipient.as_str()).collect();
        assert_eq!(who, ["alice@example.com", "dave@example.com"]);
        assert_eq!(file.skipped, 3);
        assert_eq!(
            file.first_error,
            Some((4, format!("longer than {MAX_LINE} bytes")))
        );
    }

    #[test]
    fn a_missing_file_is_an_empty_day() {
        let dir = tempfile::tempdir().unwrap();
        let file = read_day(&dir.path().join("2024-05-01.tsv")).unwrap();
        assert!(file.rows.is_empty());
    }
}
