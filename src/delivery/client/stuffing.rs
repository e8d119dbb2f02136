//! Dot-stuffing (RFC 5321 §4.5.2) without copying the message.
//!
//! The spool keeps a message exactly as received: CRLF line ends, possibly bare LF
//! lines, not dot-stuffed. Sending it means adding a '.' before every '.' that starts a
//! line, then the end-of-data marker.
//!
//! A line starts at offset 0 and after every '\n', bare or not: that is how the SMTP
//! front end (like Postfix and Dovecot) reads lines, so those peers store exactly the
//! spooled bytes, and no `<LF>.<CR><LF>` in a message can end the data early at such a
//! lenient peer (SMTP smuggling). A peer that ends lines only at CRLF (smtp-sink) keeps
//! the extra dot on a dot-started line after a bare LF; bare LF is not valid SMTP, and
//! that is the cheaper mistake. [`DotStuffer`] gives the output as a sequence of slices of the
//! input plus the extra dots, so the writer copies each byte once, into its socket buffer.

use memchr::memmem;

/// The dot inserted before a line that starts with a dot.
const DOT: &[u8] = b".";

/// Dot-stuffs a message given in one or more chunks; remembers across chunks whether a
/// line has just started and how the message ended.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    at_line_start: bool,
    /// The last two bytes seen (`tail[1]` is the last); valid as far as `seen` says.
    tail: [u8; 2],
    seen: u8,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer::new()
    }
}

impl DotStuffer {
    /// At the start of a message.
    pub fn new() -> DotStuffer {
        DotStuffer {
            at_line_start: true,
            tail: [0; 2],
            seen: 0,
        }
    }

    /// The stuffed form of the next chunk, as slices to write in order.
    pub fn pieces<'a>(&mut self, chunk: &'a [u8]) -> Pieces<'a> {
        let dot_first = self.at_line_start && chunk.first() == Some(&b'.');
        match chunk {
            [] => {}
            [only] => {
                self.tail = [self.tail[1], *only];
                self.seen = (self.seen + 1).min(2);
            }
            [.., a, b] => {
                self.tail = [*a, *b];
                self.seen = 2;
            }
        }
        if let Some(&last) = chunk.last() {
            self.at_line_start = last == b'\n';
        }
        Pieces {
            rest: chunk,
            dot_next: dot_first,
            finder: memmem::find_iter(chunk, b"\n."),
            offset: 0,
        }
    }

    /// The end-of-data marker for the bytes seen so far: `.\r\n` when the message is
    /// empty or ends with CRLF, else `\r\n.\r\n` (the receiver then stores a final CRLF
    /// the spool did not have; there is no other way to end such a message).
    pub fn terminator(&self) -> &'static [u8] {
        if self.seen == 0 || (self.seen == 2 && self.tail == *b"\r\n") {
            b".\r\n"
        } else {
            b"\r\n.\r\n"
        }
    }
}

/// The slices of one stuffed chunk (see [`DotStuffer::pieces`]).
#[derive(Debug)]
pub struct Pieces<'a> {
    /// The part of the chunk not yet returned.
    rest: &'a [u8],
    /// Return an extra dot before `rest`.
    dot_next: bool,
    /// Positions of "\n." in the whole chunk.
    finder: memmem::FindIter<'a, 'static>,
    /// Offset of `rest` in the chunk.
    offset: usize,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.dot_next {
            self.dot_next = false;
            return Some(DOT);
        }
        if self.rest.is_empty() {
            return None;
        }
        let Some(at) = self.finder.next() else {
            return Some(std::mem::take(&mut self.rest));
        };
        // Up to and including the '\n'; the line's own dot starts the next piece.
        let len = (at + 1).saturating_sub(self.offset).min(self.rest.len());
        let (piece, rest) = self.rest.split_at(len);
        self.rest = rest;
        self.offset += len;
        self.dot_next = true;
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious byte-by-byte stuffing, to compare with.
    fn reference(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = true;
        for &b in body {
            if start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            start = b == b'\n';
        }
        if !body.is_empty() && !body.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    fn stuffed(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        for chunk in chunks {
            for piece in s.pieces(chunk) {
                out.extend_from_slice(piece);
            }
        }
        out.extend_from_slice(s.terminator());
        out
    }

    /// What a receiver that ends lines at LF (Postfix, Dovecot) stores: data up to the
    /// first line that is only a dot, leading dots removed.
    fn receive(wire: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = wire;
        loop {
            let end = rest.iter().position(|&b| b == b'\n').unwrap() + 1;
            let (line, tail) = rest.split_at(end);
            rest = tail;
            if line == b".\r\n" || line == b".\n" {
                assert!(rest.is_empty(), "data after the end marker");
                return out;
            }
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
    }

    const NASTY: &[&[u8]] = &[
        b"",
        b".",
        b"..",
        b".\r\n",
        b"\r\n.\r\n",
        b"a\r\n.\r\nb\r\n",
        b".x\r\n..y\r\n\r\n.\r\n",
        b"bare\n.lf\n.\n",
        b"no end",
        b"ends with lf\n",
        b"ends with cr\r",
        b"\0\xff\xfe.\r\n\n\n...",
        b"\r\n",
        b"\n",
        b"\n.",
    ];

    #[test]
    fn matches_the_reference_at_every_split() {
        for body in NASTY {
            let want = reference(body);
            assert_eq!(
                stuffed(&[body]),
                want,
                "{:?}",
                String::from_utf8_lossy(body)
            );
            for i in 0..=body.len() {
                let (a, b) = body.split_at(i);
                assert_eq!(stuffed(&[a, b]), want, "split at {i}");
                for j in i..=body.len() {
                    let (b1, b2) = b.split_at(j - i);
                    assert_eq!(stuffed(&[a, b1, b2]), want, "split at {i},{j}");
                }
            }
        }
    }

    #[test]
    fn receiver_gets_the_spooled_bytes_back() {
        for body in NASTY {
            let got = receive(&stuffed(&[body]));
            if body.is_empty() || body.ends_with(b"\r\n") {
                assert_eq!(got, *body);
            } else {
                assert_eq!(got, [*body, b"\r\n"].concat());
            }
        }
    }

    #[test]
    fn plain_message_is_one_piece() {
        let mut s = DotStuffer::new();
        let body = b"Subject: x\r\n\r\nhello\r\n";
        assert_eq!(s.pieces(body).collect::<Vec<_>>(), [&body[..]]);
        assert_eq!(s.terminator(), b".\r\n");
    }
}
