//! SMTP/LMTP replies (RFC 5321 §4.2) read from a byte stream, with limits.
//!
//! Input: whatever bytes the peer sends, in chunks of any size. Output: complete replies
//! (code, lines, enhanced status code), one at a time, in order. A line longer than
//! [`MAX_LINE`], a reply of more than [`MAX_LINES`] lines, or a line that is not
//! `DDD[ -]text` is an error: the peer is not speaking SMTP, and the caller gives up on
//! the connection. Nothing here panics or grows past its limits, whatever the input.

use std::fmt;

/// Longest reply line accepted, CRLF included (RFC 5321 allows 512; servers exceed it).
pub const MAX_LINE: usize = 4096;
/// Most lines in one reply (EHLO replies list one extension per line).
pub const MAX_LINES: usize = 100;
/// Longest [`Reply::detail`] kept, so a DSN never quotes a huge reply.
const MAX_DETAIL: usize = 2048;

/// One complete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    /// Every line as received, without the line end, code included.
    lines: Vec<String>,
}

impl Reply {
    /// The three-digit reply code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The first digit: 2 positive, 3 intermediate, 4 transient, 5 permanent.
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    /// Whether the reply is 2xx.
    pub fn is_positive(&self) -> bool {
        self.class() == 2
    }

    /// The text of each line, after the code and separator.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(|l| l.get(4..).unwrap_or(""))
    }

    /// The enhanced status code (RFC 3463) from the first line when it has one of the
    /// reply's class, else derived from the class (`2.0.0`, `4.0.0`, `5.0.0`; anything
    /// unexpected, such as a 3xx where a final reply was due, is `4.5.0`).
    pub fn status(&self) -> String {
        if let Some(s) = self.texts().next().and_then(|t| enhanced(t, self.class())) {
            return s.to_string();
        }
        match self.class() {
            2 => "2.0.0",
            5 => "5.0.0",
            4 => "4.0.0",
            _ => "4.5.0",
        }
        .to_string()
    }

    /// The whole reply on one line, lines joined by a space (as Postfix quotes a
    /// multi-line reply in a DSN), at most about 2 KiB.
    pub fn detail(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(line);
            if out.len() > MAX_DETAIL {
                let mut end = MAX_DETAIL;
                while !out.is_char_boundary(end) {
                    end -= 1;
                }
                out.truncate(end);
                out.push_str("...");
                break;
            }
        }
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail())
    }
}

/// `X.Y.Z` at the start of `text` (followed by a space or the end), X the reply's class.
fn enhanced(text: &str, class: u16) -> Option<&str> {
    let end = text.find(' ').unwrap_or(text.len());
    let candidate = text.get(..end)?;
    let mut parts = candidate.split('.');
    let (first, second, third) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |p: &str, max: usize| {
        !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit())
    };
    let class_ok = matches!(first, "2" | "4" | "5") && first.parse::<u16>().ok() == Some(class);
    (parts.next().is_none() && class_ok && digits(second, 3) && digits(third, 3))
        .then_some(candidate)
}

/// Why the peer's bytes are not a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// A line longer than [`MAX_LINE`].
    #[error("reply line longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// More than [`MAX_LINES`] lines in one reply.
    #[error("reply of more than {MAX_LINES} lines")]
    TooManyLines,
    /// A line that does not start with a reply code, or a continuation line whose code
    /// differs from the first line's.
    #[error("malformed reply line {0:?}")]
    Malformed(String),
}

/// Turns the peer's bytes into replies. Bytes go in through [`ReplyDecoder::buffer`]
/// (reads append to it) or [`ReplyDecoder::feed`]; replies come out of
/// [`ReplyDecoder::next_reply`].
#[derive(Debug, Default)]
pub struct ReplyDecoder {
    buf: Vec<u8>,
    /// Start of the bytes not yet parsed.
    start: usize,
    /// Lines of the reply being read.
    lines: Vec<String>,
    code: u16,
}

impl ReplyDecoder {
    /// An empty decoder.
    pub fn new() -> ReplyDecoder {
        ReplyDecoder {
            buf: Vec::with_capacity(8192),
            ..ReplyDecoder::default()
        }
    }

    /// Append bytes received from the peer.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read more bytes into (append only), with room for at least one
    /// full line. Parsed bytes are dropped first, so it stays within about two lines.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        self.compact();
        if self.buf.capacity() - self.buf.len() < MAX_LINE {
            self.buf.reserve(MAX_LINE);
        }
        &mut self.buf
    }

    /// Whether bytes were received that are not part of a returned reply.
    pub fn has_pending(&self) -> bool {
        self.start < self.buf.len() || !self.lines.is_empty()
    }

    /// The next complete reply, `Ok(None)` when more bytes are needed. After an error
    /// the decoder's state is unspecified: the connection should be dropped.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        loop {
            let pending = self.buf.get(self.start..).unwrap_or_default();
            let Some(nl) = memchr::memchr(b'\n', pending) else {
                if pending.len() >= MAX_LINE {
                    return Err(ReplyError::LineTooLong);
                }
                return Ok(None);
            };
            if nl + 1 > MAX_LINE {
                return Err(ReplyError::LineTooLong);
            }
            let raw = pending.get(..nl).unwrap_or_default();
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            let parsed = parse_line(line);
            self.start += nl + 1;
            let (code, last) = parsed?;
            if !self.lines.is_empty() && code != self.code {
                return Err(ReplyError::Malformed(clipped(line)));
            }
            if self.lines.len() >= MAX_LINES {
                return Err(ReplyError::TooManyLines);
            }
            self.code = code;
            self.lines.push(lossy(line));
            if last {
                let lines = std::mem::take(&mut self.lines);
                return Ok(Some(Reply { code, lines }));
            }
        }
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start.min(self.buf.len()));
            self.start = 0;
        }
    }
}

/// `DDD`, `DDD text` (last line) or `DDD-text` (more follow): the code and whether the
/// line is the last. The first digit must be 2 to 5 (RFC 5321 §4.2.1).
fn parse_line(line: &[u8]) -> Result<(u16, bool), ReplyError> {
    let malformed = || ReplyError::Malformed(clipped(line));
    let (digits, rest) = line.split_at_checked(3).ok_or_else(malformed)?;
    let [a, b, c] = digits else {
        return Err(malformed());
    };
    if !(b'2'..=b'5').contains(a) || !b.is_ascii_digit() || !c.is_ascii_digit() {
        return Err(malformed());
    }
    let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    match rest.first() {
        None | Some(b' ') => Ok((code, true)),
        Some(b'-') => Ok((code, false)),
        Some(_) => Err(malformed()),
    }
}

fn lossy(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

/// The start of a bad line, for an error message.
fn clipped(line: &[u8]) -> String {
    lossy(line.get(..80).unwrap_or(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Result<Vec<Reply>, ReplyError> {
        let mut d = ReplyDecoder::new();
        d.feed(bytes);
        let mut out = Vec::new();
        while let Some(r) = d.next_reply()? {
            out.push(r);
        }
        Ok(out)
    }

    #[test]
    fn single_and_multi_line() {
        let r = all(b"250-mx.example.com\r\n250-PIPELINING\r\n250 SIZE 1000\r\n221 2.0.0 Bye\r\n")
            .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].code(), 250);
        assert_eq!(
            r[0].texts().collect::<Vec<_>>(),
            ["mx.example.com", "PIPELINING", "SIZE 1000"]
        );
        assert_eq!(
            r[0].detail(),
            "250-mx.example.com 250-PIPELINING 250 SIZE 1000"
        );
        assert_eq!(r[1].status(), "2.0.0");
    }

    #[test]
    fn enhanced_status_only_of_the_same_class() {
        let r =
            all(b"550 5.1.1 <bob@example.com>: user unknown\r\n450 5.1.1 odd\r\n554\r\n").unwrap();
        assert_eq!(r[0].status(), "5.1.1");
        assert_eq!(r[1].status(), "4.0.0");
        assert_eq!(r[2].status(), "5.0.0");
        assert_eq!(r[2].detail(), "554");
    }

    #[test]
    fn bare_lf_and_empty_text_are_accepted() {
        let r = all(b"250-smtp-sink\n250 \n").unwrap();
        assert_eq!(r[0].texts().collect::<Vec<_>>(), ["smtp-sink", ""]);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            &b"hello\r\n"[..],
            b"25\r\n",
            b"250x\r\n",
            b"650 no\r\n",
            b"2a0 no\r\n",
            b"250-a\r\n251 b\r\n",
        ] {
            assert!(
                matches!(all(bad), Err(ReplyError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn limits() {
        let long = [b'2'; MAX_LINE + 1];
        assert_eq!(all(&long), Err(ReplyError::LineTooLong));
        let mut line = b"250 ".to_vec();
        line.resize(MAX_LINE + 10, b'x');
        line.extend_from_slice(b"\r\n");
        assert_eq!(all(&line), Err(ReplyError::LineTooLong));
        let many = b"250-x\r\n".repeat(MAX_LINES + 1);
        assert_eq!(all(&many), Err(ReplyError::TooManyLines));
        let ok = [b"250-x\r\n".repeat(MAX_LINES - 1), b"250 y\r\n".to_vec()].concat();
        assert_eq!(all(&ok).unwrap()[0].texts().count(), MAX_LINES);
    }

    #[test]
    fn same_replies_however_the_bytes_are_split() {
        let input: &[u8] =
            b"220-hi\r\n220 there\r\n250 2.1.0 Ok\r\n550-5.1.1 a\n550 5.1.1 b\r\n354 go\r\n";
        let whole = all(input).unwrap();
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            let mut d = ReplyDecoder::new();
            let mut got = Vec::new();
            for part in [a, b] {
                d.buffer().extend_from_slice(part);
                while let Some(r) = d.next_reply().unwrap() {
                    got.push(r);
                }
            }
            assert_eq!(got, whole, "split at {split}");
            assert!(!d.has_pending());
        }
    }

    #[test]
    fn detail_is_bounded() {
        let line = format!("550-{}\r\n", "x".repeat(1000));
        let input = [line.repeat(10).into_bytes(), b"550 end\r\n".to_vec()].concat();
        let d = all(&input).unwrap()[0].detail();
        assert!(d.len() <= MAX_DETAIL + 3, "{}", d.len());
        assert!(d.ends_with("..."));
    }
}
