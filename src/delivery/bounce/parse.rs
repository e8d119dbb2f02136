//! Reading a DSN back: a strict checker of the structure [`build`](super::build) makes,
//! usable on any delivery report (tests, and anyone who wants the per-recipient fields of
//! a `multipart/report`).
//!
//! [`parse`] refuses, with the offset of the problem, a message that has a bare CR or
//! LF, a header or field line over 998 octets, a malformed header, a top-level type
//! other than `multipart/report; report-type=delivery-status`, a boundary that occurs
//! inside a part, no closing delimiter, fewer than two parts, or a second part that is
//! not a `message/delivery-status` (or `message/global-delivery-status`) with a
//! `Reporting-MTA` and, per recipient, `Final-Recipient`, `Action` and `Status`.
//!
//! Limits: at most [`MAX_INPUT`] octets, 1000 fields per header block, 100 parts and
//! 10,000 recipient blocks. Any input gives a result or an error, never a panic.

/// Largest message [`parse`] reads.
pub const MAX_INPUT: usize = 64 << 20;
const MAX_LINE: usize = 998;
const MAX_FIELDS: usize = 1000;
const MAX_PARTS: usize = 100;
const MAX_RECIPIENTS: usize = 10_000;

/// A header field: name as written, value unfolded and trimmed.
pub type Field = (String, String);

/// A delivery status notification, split up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedDsn<'a> {
    /// The top-level header fields.
    pub headers: Vec<Field>,
    /// The multipart boundary.
    pub boundary: String,
    /// The parts, in order (at least two).
    pub parts: Vec<ParsedPart<'a>>,
    /// The per-message fields of the report (`Reporting-MTA`, `Arrival-Date`, ...).
    pub per_message: Vec<Field>,
    /// The per-recipient field blocks of the report, in order.
    pub recipients: Vec<Vec<Field>>,
}

/// One MIME part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPart<'a> {
    /// Its header fields.
    pub headers: Vec<Field>,
    /// Its content: the bytes between its header and the CRLF before the next delimiter.
    pub body: &'a [u8],
}

/// What is wrong with a message read as a DSN. Offsets are into the whole message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DsnParseError {
    /// Larger than [`MAX_INPUT`].
    #[error("message is {0} octets, over the limit")]
    TooLarge(usize),
    /// A CR not followed by LF, or an LF without CR before it.
    #[error("bare CR or LF at offset {0}")]
    BareLineEnd(usize),
    /// A header or field line over 998 octets.
    #[error("line at offset {offset} is {len} octets, over 998")]
    LineTooLong {
        /// Where the line starts.
        offset: usize,
        /// Its length without CRLF.
        len: usize,
    },
    /// A header line that is neither `Name: value` nor a continuation.
    #[error("malformed header line at offset {0}")]
    BadHeader(usize),
    /// Too many fields, parts or recipient blocks.
    #[error("too many {0}")]
    TooMany(&'static str),
    /// The message is not a delivery-status report.
    #[error("not a multipart/report; report-type=delivery-status: {0}")]
    NotAReport(String),
    /// The boundary occurs inside a part.
    #[error("the boundary occurs inside part {0}")]
    BoundaryInContent(usize),
    /// The multipart structure is broken.
    #[error("{0}")]
    Structure(&'static str),
    /// A required field is missing from the report.
    #[error("report block {block} has no {field} field")]
    MissingField {
        /// 0 for the per-message block, then 1, 2, ... per recipient.
        block: usize,
        /// The field.
        field: &'static str,
    },
}

impl ParsedDsn<'_> {
    /// The first top-level header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        field(&self.headers, name)
    }

    /// Field `name` of recipient block `i`.
    pub fn recipient_field(&self, i: usize, name: &str) -> Option<&str> {
        self.recipients.get(i).and_then(|f| field(f, name))
    }
}

impl ParsedPart<'_> {
    /// The part's media type, lower case, without parameters (`text/plain` when absent).
    pub fn content_type(&self) -> String {
        field(&self.headers, "Content-Type")
            .map(|v| content_type(v).0)
            .unwrap_or_else(|| "text/plain".to_string())
    }
}

/// The value of the first field named `name` (case-insensitive).
pub fn field<'f>(fields: &'f [Field], name: &str) -> Option<&'f str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Parse and check a DSN (see the module documentation for what is checked).
pub fn parse(msg: &[u8]) -> Result<ParsedDsn<'_>, DsnParseError> {
    if msg.len() > MAX_INPUT {
        return Err(DsnParseError::TooLarge(msg.len()));
    }
    check_line_ends(msg)?;
    let (headers, body_start) = header_block(msg, 0)?;
    let ct = field(&headers, "Content-Type")
        .ok_or_else(|| DsnParseError::NotAReport("no Content-Type".to_string()))?;
    let (mime, params) = content_type(ct);
    let report_type = field(&params, "report-type").unwrap_or("");
    if mime != "multipart/report" || !report_type.eq_ignore_ascii_case("delivery-status") {
        return Err(DsnParseError::NotAReport(ct.to_string()));
    }
    let boundary = field(&params, "boundary")
        .filter(|b| (1..=70).contains(&b.len()))
        .ok_or(DsnParseError::Structure("no usable boundary parameter"))?
        .to_string();
    let mut parts = Vec::new();
    let mut offsets = Vec::new();
    for (start, end) in split_multipart(msg, body_start, &boundary)? {
        let body = msg.get(start..end).unwrap_or(&[]);
        if contains(body, boundary.as_bytes()) {
            return Err(DsnParseError::BoundaryInContent(parts.len() + 1));
        }
        let (headers, content) = if body.starts_with(b"\r\n") {
            (Vec::new(), start + 2)
        } else {
            header_block(msg.get(..end).unwrap_or(&[]), start)?
        };
        offsets.push(content.min(end));
        parts.push(ParsedPart {
            headers,
            body: msg.get(content.min(end)..end).unwrap_or(&[]),
        });
    }
    if parts.len() < 2 {
        return Err(DsnParseError::Structure(
            "a report needs at least two parts",
        ));
    }
    let status = parts
        .get(1)
        .ok_or(DsnParseError::Structure("no second part"))?;
    let status_type = status.content_type();
    if status_type != "message/delivery-status" && status_type != "message/global-delivery-status" {
        return Err(DsnParseError::NotAReport(format!(
            "second part is {status_type}"
        )));
    }
    let offset = offsets.get(1).copied().unwrap_or(0);
    let mut blocks = report_blocks(status.body, offset)?.into_iter();
    let per_message = blocks.next().unwrap_or_default();
    if field(&per_message, "Reporting-MTA").is_none() {
        return Err(DsnParseError::MissingField {
            block: 0,
            field: "Reporting-MTA",
        });
    }
    let recipients: Vec<Vec<Field>> = blocks.collect();
    if recipients.is_empty() {
        return Err(DsnParseError::Structure(
            "the report has no recipient block",
        ));
    }
    for (i, r) in recipients.iter().enumerate() {
        for name in ["Final-Recipient", "Action", "Status"] {
            if field(r, name).is_none() {
                return Err(DsnParseError::MissingField {
                    block: i + 1,
                    field: name,
                });
            }
        }
    }
    Ok(ParsedDsn {
        headers,
        boundary,
        parts,
        per_message,
        recipients,
    })
}

fn check_line_ends(msg: &[u8]) -> Result<(), DsnParseError> {
    for (i, &b) in msg.iter().enumerate() {
        let ok = match b {
            b'\r' => msg.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && msg.get(i - 1) == Some(&b'\r'),
            _ => true,
        };
        if !ok {
            return Err(DsnParseError::BareLineEnd(i));
        }
    }
    Ok(())
}

/// Lines of `msg[from..]` as (start, end without CRLF, start of the next line).
fn lines(msg: &[u8], from: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let mut pos = from;
    std::iter::from_fn(move || {
        let rest = msg.get(pos..).filter(|r| !r.is_empty())?;
        let start = pos;
        let (end, next) = match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => (start + i, start + i + 2),
            None => (msg.len(), msg.len()),
        };
        pos = next;
        Some((start, end, next))
    })
}

/// Header fields from `from` to the first empty line; returns them and where the body
/// starts (after the empty line, or the end).
fn header_block(msg: &[u8], from: usize) -> Result<(Vec<Field>, usize), DsnParseError> {
    let mut fields: Vec<Field> = Vec::new();
    for (start, end, next) in lines(msg, from) {
        let line = msg.get(start..end).unwrap_or(&[]);
        if line.len() > MAX_LINE {
            return Err(DsnParseError::LineTooLong {
                offset: start,
                len: line.len(),
            });
        }
        if line.is_empty() {
            return Ok((fields, next));
        }
        push_line(&mut fields, line, start)?;
    }
    Ok((fields, msg.len()))
}

/// Add one header line: a new field, or the continuation of the last one.
fn push_line(fields: &mut Vec<Field>, line: &[u8], offset: usize) -> Result<(), DsnParseError> {
    let text = String::from_utf8_lossy(line);
    if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
        let (_, value) = fields.last_mut().ok_or(DsnParseError::BadHeader(offset))?;
        if !value.is_empty() {
            value.push(' ');
        }
        value.push_str(text.trim());
        return Ok(());
    }
    let (name, value) = text
        .split_once(':')
        .ok_or(DsnParseError::BadHeader(offset))?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DsnParseError::BadHeader(offset));
    }
    if fields.len() >= MAX_FIELDS {
        return Err(DsnParseError::TooMany("header fields"));
    }
    fields.push((name.to_string(), value.trim().to_string()));
    Ok(())
}

/// The (start, end) of every part's bytes between the delimiters.
fn split_multipart(
    msg: &[u8],
    body_start: usize,
    boundary: &str,
) -> Result<Vec<(usize, usize)>, DsnParseError> {
    let dash = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut part_start = None;
    for (start, end, next) in lines(msg, body_start) {
        let line = msg.get(start..end).unwrap_or(&[]);
        let Some(rest) = line.strip_prefix(dash.as_bytes()) else {
            continue;
        };
        let close = rest.starts_with(b"--");
        let tail = if close {
            rest.get(2..).unwrap_or(&[])
        } else {
            rest
        };
        if !tail.iter().all(|b| *b == b' ' || *b == b'\t') {
            continue;
        }
        if let Some(ps) = part_start {
            // The CRLF before a delimiter belongs to the delimiter.
            parts.push((ps, start.saturating_sub(2).max(ps)));
            if parts.len() > MAX_PARTS {
                return Err(DsnParseError::TooMany("parts"));
            }
        }
        if close {
            return Ok(parts);
        }
        part_start = Some(next);
    }
    Err(DsnParseError::Structure("no closing boundary delimiter"))
}

/// The blocks of a delivery-status body, separated by empty lines.
fn report_blocks(body: &[u8], offset: usize) -> Result<Vec<Vec<Field>>, DsnParseError> {
    let mut blocks: Vec<Vec<Field>> = Vec::new();
    let mut current: Vec<Field> = Vec::new();
    for (start, end, _) in lines(body, 0) {
        let line = body.get(start..end).unwrap_or(&[]);
        if line.len() > MAX_LINE {
            return Err(DsnParseError::LineTooLong {
                offset: offset + start,
                len: line.len(),
            });
        }
        if line.is_empty() {
            if !current.is_empty() {
                blocks.push(std::mem::take(&mut current));
                if blocks.len() > MAX_RECIPIENTS {
                    return Err(DsnParseError::TooMany("recipient blocks"));
                }
            }
            continue;
        }
        push_line(&mut current, line, offset + start)?;
    }
    if !current.is_empty() {
        blocks.push(current);
    }
    Ok(blocks)
}

/// A Content-Type value as (lower-case type, parameters with lower-case names).
fn content_type(value: &str) -> (String, Vec<Field>) {
    let (mime, mut rest) = value.split_once(';').unwrap_or((value, ""));
    let mut params = Vec::new();
    while params.len() < 100 {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let after = after.trim_start();
        let (val, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            unquote(quoted)
        } else {
            let end = after.find([';', ' ', '\t']).unwrap_or(after.len());
            (
                after.get(..end).unwrap_or("").to_string(),
                after.get(end..).unwrap_or(""),
            )
        };
        params.push((name.trim().to_ascii_lowercase(), val));
        rest = remaining;
    }
    (mime.trim().to_ascii_lowercase(), params)
}

/// The text of a quoted string (after its opening quote) and what follows it.
fn unquote(s: &str) -> (String, &str) {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, s.get(i + 1..).unwrap_or("")),
            '\\' => {
                if let Some((_, n)) = chars.next() {
                    out.push(n);
                }
            }
            _ => out.push(c),
        }
    }
    (out, "")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "From: x\r\n\
        Content-Type: multipart/report; report-type=delivery-status;\r\n\
        \tboundary=\"b=1\"\r\n\
        \r\n\
        preamble\r\n\
        --b=1\r\n\
        \r\n\
        text\r\n\
        --b=1\r\n\
        Content-Type: message/delivery-status\r\n\
        \r\n\
        Reporting-MTA: dns; mx\r\n\
        \r\n\
        Final-Recipient: rfc822; a@x\r\n\
        Action: failed\r\n\
        Status: 5.1.1\r\n\
        Diagnostic-Code: smtp; 550 no\r\n\
        \x20such user\r\n\
        \r\n\
        --b=1--\r\n";

    #[test]
    fn parses_a_report() {
        let d = parse(GOOD.as_bytes()).unwrap();
        assert_eq!(d.boundary, "b=1");
        assert_eq!(d.parts.len(), 2);
        assert_eq!(d.parts[0].body, b"text");
        assert_eq!(d.parts[0].content_type(), "text/plain");
        assert_eq!(d.recipients.len(), 1);
        assert_eq!(
            d.recipient_field(0, "diagnostic-code"),
            Some("smtp; 550 no such user")
        );
        assert_eq!(field(&d.per_message, "Reporting-MTA"), Some("dns; mx"));
    }

    #[test]
    fn refuses_broken_reports() {
        let bad = |s: &str| parse(s.as_bytes()).unwrap_err();
        assert!(matches!(
            bad(&GOOD.replace("text\r\n", "te\nxt\r\n")),
            DsnParseError::BareLineEnd(_)
        ));
        assert!(matches!(
            bad(&GOOD.replace("--b=1--", "--b=2--")),
            DsnParseError::Structure(_)
        ));
        assert!(matches!(
            bad(&GOOD.replace("text\r\n", "text b=1\r\n")),
            DsnParseError::BoundaryInContent(1)
        ));
        assert!(matches!(
            bad(&GOOD.replace("Status: 5.1.1\r\n", "")),
            DsnParseError::MissingField {
                block: 1,
                field: "Status"
            }
        ));
        assert!(matches!(
            bad(&GOOD.replace("report-type=delivery-status", "report-type=x")),
            DsnParseError::NotAReport(_)
        ));
        let long = GOOD.replace("From: x", &format!("From: {}", "x".repeat(999)));
        assert!(matches!(
            bad(&long),
            DsnParseError::LineTooLong { offset: 0, .. }
        ));
        assert!(matches!(
            bad(&GOOD.replace("From: x", "From x")),
            DsnParseError::BadHeader(0)
        ));
    }

    #[test]
    fn content_type_parameters() {
        let (t, p) =
            content_type("Multipart/Report; boundary=\"a \\\"b\\\"\"; report-type=delivery-status");
        assert_eq!(t, "multipart/report");
        assert_eq!(field(&p, "boundary"), Some("a \"b\""));
        assert_eq!(field(&p, "report-type"), Some("delivery-status"));
    }

    #[test]
    fn never_panics_on_prefixes() {
        for end in 0..GOOD.len() {
            let _ = parse(&GOOD.as_bytes()[..end]);
        }
        let _ = parse(b"\n");
        let _ = parse(b"\r");
        let _ = parse(b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\n--x--");
    }
}
