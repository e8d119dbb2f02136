//! The DATA receiver: finds the end of the message (`CRLF . CRLF`), undoes dot-stuffing,
//! and enforces the size and line limits, in bounded memory whatever the client sends.
//!
//! Input: the bytes after the `354` reply, in chunks of any size, split anywhere.
//! Output: the message bytes exactly as sent (8-bit, NUL and bare CR kept), minus the
//! stuffing dots and the end marker. Bytes beyond the size limit are counted and dropped,
//! so a client sending 64 MB without a line feed costs no more memory than the limit.
//! A bare LF ends a line as CRLF does (as Postfix accepts); the bytes are kept as sent.

use crate::routing::hops::HopCounter;

/// Why a received message cannot be accepted (reported after the end marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataError {
    /// More than the size limit.
    TooBig,
    /// A line longer than the text line limit.
    LineTooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// A line that started with '.'.
    Dot,
    /// A line that is ".\r" so far.
    DotCr,
    /// Inside a line.
    InLine,
}

/// Streaming DATA parser.
#[derive(Debug)]
pub struct DataReceiver {
    state: State,
    body: Vec<u8>,
    max_size: usize,
    max_line: usize,
    line_len: usize,
    received: u64,
    error: Option<DataError>,
    hops: HopCounter,
    in_header: bool,
}

impl DataReceiver {
    /// A receiver for one message. `max_line` 0 means no line limit.
    pub fn new(max_size: usize, max_line: usize, hostname: &str) -> Self {
        DataReceiver {
            state: State::LineStart,
            body: Vec::with_capacity(max_size.min(64 * 1024)),
            max_size,
            max_line,
            line_len: 0,
            received: 0,
            error: None,
            hops: HopCounter::new(hostname),
            in_header: true,
        }
    }

    /// Consume bytes; returns how many were used and whether the end marker was seen.
    /// Bytes after the end marker are not consumed (they are pipelined commands).
    pub fn ingest(&mut self, input: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::LineStart => {
                    if input[i] == b'.' {
                        self.state = State::Dot;
                        self.line_len = 1;
                        i += 1;
                    } else {
                        self.state = State::InLine;
                        self.line_len = 0;
                    }
                }
                State::Dot => match input[i] {
                    b'\n' => return (i + 1, true),
                    b'\r' => {
                        self.state = State::DotCr;
                        i += 1;
                    }
                    // A stuffed dot: drop it, keep the rest of the line. The dot does not
                    // count toward the line limit (RFC 5321 4.5.3.1.6).
                    _ => {
                        self.line_len = 0;
                        self.state = State::InLine;
                    }
                },
                State::DotCr => {
                    if input[i] == b'\n' {
                        return (i + 1, true);
                    }
                    // ".\rX": not the end; the line is "\rX" after unstuffing.
                    self.push(b"\r");
                    // The stuffing dot does not count toward the line limit.
                    self.line_len = 1;
                    self.state = State::InLine;
                }
                State::InLine => {
                    // Whole lines go in one push, up to a line that starts with a dot
                    // (stuffing or the end marker) or the end of the input.
                    let rest = &input[i..];
                    let (mut start, mut end) = (0, 0);
                    let mut done_line = false;
                    for n in memchr::memchr_iter(b'\n', rest) {
                        self.line_len += n + 1 - end;
                        if self.long_line(&rest[start..end]) {
                            start = end;
                        }
                        self.line_len = 0;
                        end = n + 1;
                        if end < rest.len() && rest[end] != b'.' {
                            continue;
                        }
                        done_line = true;
                        break;
                    }
                    if !done_line {
                        self.line_len += rest.len() - end;
                        if self.long_line(&rest[start..end]) {
                            start = end;
                        }
                        end = rest.len();
                    }
                    self.push(&rest[start..end]);
                    if done_line {
                        self.state = State::LineStart;
                    }
                    i += end;
                }
            }
        }
        (input.len(), false)
    }

    /// Whether the current line is over the limit (and the first error). If so, the
    /// bytes `before` it are pushed first, so that the first error in the message is
    /// the one reported, and then the line's error is recorded.
    fn long_line(&mut self, before: &[u8]) -> bool {
        if self.max_line == 0 || self.line_len <= self.max_line || self.error.is_some() {
            return false;
        }
        self.push(before);
        self.error.get_or_insert(DataError::LineTooLong);
        true
    }

    fn push(&mut self, bytes: &[u8]) {
        self.received += bytes.len() as u64;
        if self.in_header {
            self.in_header = self.hops.feed(bytes);
        }
        if self.error.is_some() {
            return;
        }
        if self.body.len() + bytes.len() > self.max_size {
            self.error = Some(DataError::TooBig);
            self.body = Vec::new();
            return;
        }
        self.body.extend_from_slice(bytes);
    }

    /// Bytes of message received so far (after unstuffing), including dropped ones.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The message, or why it cannot be accepted; and the hop count of its header.
    pub fn finish(self) -> (Result<Vec<u8>, DataError>, crate::routing::hops::HopCount) {
        let count = self.hops.count();
        match self.error {
            Some(e) => (Err(e), count),
            None => (Ok(self.body), count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (Result<Vec<u8>, DataError>, usize) {
        let mut r = DataReceiver::new(1 << 20, 1000, "mx.example.com");
        for (n, c) in chunks.iter().enumerate() {
            let (used, done) = r.ingest(c);
            if done {
                return (r.finish().0, c.len() - used + chunks[n + 1..].len());
            }
        }
        panic!("no end marker");
    }

    #[test]
    fn unstuffs_and_stops_at_the_end_marker() {
        let (body, rest) = run(&[b"a\r\n..b\r\n.\r\nQUIT\r\n"]);
        assert_eq!(body.unwrap(), b"a\r\n.b\r\n");
        assert_eq!(rest, 6);
    }

    #[test]
    fn any_split_gives_the_same_message() {
        let msg: &[u8] = b"Subject: x\r\n\r\n..\r\n.x\r\n\0\xff\r\n.\r.\r\n.\r\nNOOP\r\n";
        let (whole, _) = run(&[msg]);
        for split in 1..msg.len() {
            let (a, b) = msg.split_at(split);
            let (body, _) = run(&[a, b, b""]);
            assert_eq!(body, whole, "split at {split}");
        }
        assert_eq!(
            whole.unwrap(),
            b"Subject: x\r\n\r\n.\r\nx\r\n\0\xff\r\n\r.\r\n"
        );
    }

    /// The receiver's contract, one whole line at a time: `None` without an end marker.
    fn reference(
        wire: &[u8],
        max_size: usize,
        max_line: usize,
    ) -> Option<(
        Result<Vec<u8>, DataError>,
        usize,
        crate::routing::hops::HopCount,
    )> {
        let mut body = Vec::new();
        let mut error = None;
        let mut hops = HopCounter::new("mx.example.com");
        let mut pos = 0;
        while let Some(n) = wire[pos..].iter().position(|&b| b == b'\n') {
            let line = &wire[pos..pos + n + 1];
            pos += n + 1;
            if line == b".\r\n" || line == b".\n" {
                return Some((error.map_or(Ok(body), Err), pos, hops.count()));
            }
            let line = line.strip_prefix(b".").unwrap_or(line);
            hops.feed(line);
            if max_line > 0 && line.len() > max_line {
                error.get_or_insert(DataError::LineTooLong);
            }
            if error.is_none() && body.len() + line.len() > max_size {
                error = Some(DataError::TooBig);
            }
            if error.is_none() {
                body.extend_from_slice(line);
            }
        }
        None
    }

    #[test]
    fn random_messages_in_random_chunks_match_the_line_by_line_reference() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let alphabet: &[u8] = b"..\r\n\nxyR: ";
        for round in 0..3000 {
            let len = next(300) as usize;
            let mut wire: Vec<u8> = (0..len)
                .map(|_| alphabet[next(alphabet.len() as u64) as usize])
                .collect();
            wire.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
            let (max_size, max_line) = (next(400) as usize, next(40) as usize);
            let Some((want, used, hops)) = reference(&wire, max_size, max_line) else {
                continue;
            };
            let mut r = DataReceiver::new(max_size, max_line, "mx.example.com");
            let mut at = 0;
            let done = loop {
                let take = (1 + next(64) as usize).min(wire.len() - at);
                let (n, done) = r.ingest(&wire[at..at + take]);
                at += n;
                if done || at == wire.len() {
                    break done;
                }
            };
            assert!(done, "round {round}: no end marker in {wire:?}");
            assert_eq!(at, used, "round {round}: consumed, {wire:?}");
            let (got, got_hops) = r.finish();
            assert_eq!(got_hops, hops, "round {round}: hops, {wire:?}");
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "round {round}: body, {wire:?}"),
                // Which of two errors comes first may depend on where a line is split.
                (Err(_), Err(_)) => {}
                _ => panic!("round {round}: {got:?} against {want:?} for {wire:?}"),
            }
        }
    }

    #[test]
    fn bare_lf_lines_end_too() {
        let (body, _) = run(&[b"a\n.\n"]);
        assert_eq!(body.unwrap(), b"a\n");
    }

    #[test]
    fn too_big_and_too_long_are_reported_after_the_end() {
        let mut r = DataReceiver::new(10, 0, "h");
        let (_, done) = r.ingest(b"0123456789abc\r\n.\r\n");
        assert!(done);
        assert_eq!(r.finish().0, Err(DataError::TooBig));
        let mut r = DataReceiver::new(100_000, 1000, "h");
        let long = vec![b'x'; 1001];
        r.ingest(&long);
        let (_, done) = r.ingest(b"\r\n.\r\n");
        assert!(done);
        assert_eq!(r.finish().0, Err(DataError::LineTooLong));
    }

    #[test]
    fn a_stuffed_dot_does_not_count_toward_the_line_limit() {
        let mut line = vec![b'.'];
        line.extend(vec![b'x'; 997]);
        let mut wire = vec![b'.'];
        wire.extend_from_slice(&line);
        wire.extend_from_slice(b"\r\n.\r\n");
        let mut r = DataReceiver::new(100_000, 1000, "h");
        assert!(r.ingest(&wire).1);
        let mut want = line.clone();
        want.extend_from_slice(b"\r\n");
        assert_eq!(r.finish().0, Ok(want));
    }

    #[test]
    fn counts_hops_in_the_header() {
        let mut r = DataReceiver::new(1000, 1000, "mx.example.com");
        r.ingest(b"Received: by mx.example.com (splitmx) id 1\r\nReceived: x\r\n\r\nReceived: body\r\n.\r\n");
        let (_, hops) = r.finish();
        assert_eq!((hops.received, hops.self_passes), (2, 1));
    }
}
