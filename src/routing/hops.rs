//! Mail-loop rules that need no network: counting hops in a message header.
//!
//! At the end of DATA the gateway counts the `Received:` header fields of the message
//! and the ones it stamped itself, and refuses the message if it has travelled too far
//! or is circling through this gateway.
//!
//! # Inputs
//!
//! * The message bytes after dot-unstuffing, fed to a [`HopCounter`] in chunks of any
//!   size, split anywhere (or all at once with [`count_hops`]). Lines may end in CRLF or
//!   bare LF; non-UTF-8 bytes and NUL are tolerated. Only the header is examined: it
//!   ends at the first empty line, and at most `max_header_bytes` bytes are looked at
//!   ([`DEFAULT_MAX_HEADER_BYTES`] by default).
//! * The gateway's host name, used to recognise its own stamps. The gateway writes them
//!   as `Received: from ... by HOSTNAME (splitmx) with ESMTP id QUEUEID; DATE`; the
//!   by-clause is [`own_stamp_token`]. Recognition is ASCII case-insensitive and runs on
//!   whitespace-collapsed text, so folds (CRLF + WSP) and runs of spaces or tabs between
//!   `by`, the host name and `(splitmx)` still match, as does `(splitmx 0.1.0)`. The
//!   token must be preceded by whitespace (or start the field body), so `standby HOST`
//!   does not match; a `from HOSTNAME` clause never matches.
//! * A [`LoopPolicy`] with the limits.
//!
//! # Outputs
//!
//! A [`HopCount`] (Received fields, own stamps, header bytes examined, whether the header
//! end was seen), and from [`LoopPolicy::check`] either `Ok(())` or a [`LoopError`] whose
//! [`LoopError::reply`] is the SMTP rejection (`554 5.4.6`).
//!
//! # Failure modes and limits
//!
//! Nothing here panics or fails on any input; malformed header lines are simply not
//! counted. Memory is bounded: the counter keeps a fixed window of at most
//! [`STAMP_WINDOW_BYTES`] bytes (more only when the host name itself is longer) of the
//! current `Received:` field body, whitespace-collapsed and ASCII-lowercased. A
//! `Received:` field longer than that is recognised as an own stamp only if the token
//! lies within that first window. A header longer than the byte limit is counted up to
//! the limit only, and [`HopCount::header_complete`] stays `false`.

use std::fmt::Write as _;

/// Default limit of Received fields (RFC 5321 §6.3 suggests at least 100 is too many; Postfix uses 50).
pub const DEFAULT_MAX_HOPS: usize = 50;
/// Default number of own stamps tolerated.
pub const DEFAULT_MAX_SELF_PASSES: usize = 2;
/// Default bound on how many header bytes are examined.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 1024 * 1024;
/// Size of the window of each `Received:` field body (whitespace-collapsed) that is
/// searched for the gateway's own stamp token.
pub const STAMP_WINDOW_BYTES: usize = 1024;

/// Host name used in [`LoopError::SelfLoop`] by [`LoopPolicy::check`], which does not
/// know the gateway's name.
const UNNAMED_HOST: &str = "this gateway";

/// Limits applied to a [`HopCount`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopPolicy {
    /// More Received fields than this are rejected.
    pub max_hops: usize,
    /// This many own stamps or more are rejected; `0` disables the check.
    pub max_self_passes: usize,
}

impl Default for LoopPolicy {
    fn default() -> Self {
        Self {
            max_hops: DEFAULT_MAX_HOPS,
            max_self_passes: DEFAULT_MAX_SELF_PASSES,
        }
    }
}

impl LoopPolicy {
    /// Applies the policy to `count`.
    ///
    /// The self-loop check comes first (it is the more specific diagnosis):
    /// `self_passes >= max_self_passes` (with `max_self_passes > 0`) gives
    /// [`LoopError::SelfLoop`]; then `received > max_hops` gives
    /// [`LoopError::TooManyHops`]. The host name in `SelfLoop` is the generic
    /// `"this gateway"`; use [`LoopPolicy::check_with_hostname`] to name the host.
    pub fn check(&self, count: &HopCount) -> Result<(), LoopError> {
        self.check_with_hostname(count, UNNAMED_HOST)
    }

    /// Same as [`LoopPolicy::check`], naming `hostname` in [`LoopError::SelfLoop`].
    pub fn check_with_hostname(&self, count: &HopCount, hostname: &str) -> Result<(), LoopError> {
        if self.max_self_passes > 0 && count.self_passes >= self.max_self_passes {
            return Err(LoopError::SelfLoop {
                hostname: hostname.to_owned(),
                passes: count.self_passes,
                max: self.max_self_passes,
            });
        }
        if count.received > self.max_hops {
            return Err(LoopError::TooManyHops {
                count: count.received,
                max: self.max_hops,
            });
        }
        Ok(())
    }
}

/// Why a message is refused as looping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoopError {
    /// More `Received:` fields than [`LoopPolicy::max_hops`].
    #[error("too many hops: {count} Received fields, the limit is {max}")]
    TooManyHops {
        /// Received fields found.
        count: usize,
        /// The configured limit.
        max: usize,
    },
    /// The message carries [`LoopPolicy::max_self_passes`] or more of our own stamps.
    #[error("mail loop: message already passed through {hostname} {passes} times (limit {max})")]
    SelfLoop {
        /// The gateway's host name.
        hostname: String,
        /// Own stamps found.
        passes: usize,
        /// The configured limit.
        max: usize,
    },
}

impl LoopError {
    /// SMTP reply for the client: always `(554, "5.4.6", text)` with a short text.
    ///
    /// Control characters and non-ASCII in the host name are replaced by `?`, so the
    /// text is always safe to put on an SMTP reply line.
    pub fn reply(&self) -> (u16, &'static str, String) {
        let text = match self {
            Self::TooManyHops { .. } => "Too many hops".to_owned(),
            Self::SelfLoop {
                hostname, passes, ..
            } => {
                let mut text = String::from("Mail loop detected: message already passed through ");
                text.extend(hostname.chars().map(|c| {
                    if c.is_ascii_graphic() || c == ' ' {
                        c
                    } else {
                        '?'
                    }
                }));
                // Writing to a String cannot fail.
                let _ = write!(text, " {passes} times");
                text
            }
        };
        (554, "5.4.6", text)
    }
}

/// Totals found by a [`HopCounter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HopCount {
    /// `Received:` header fields.
    pub received: usize,
    /// `Received:` fields stamped by this gateway (containing [`own_stamp_token`]).
    pub self_passes: usize,
    /// Header bytes examined, including the empty line that ends the header.
    pub header_bytes: usize,
    /// Whether the end of the header (the first empty line) was seen within the limit.
    pub header_complete: bool,
}

/// Streaming counter fed with the message bytes (after dot-unstuffing) in chunks of any size, split anywhere (even inside "Received:" or a CRLF).
///
/// Allocates only in the constructor; memory stays bounded whatever is fed and work is
/// linear in the input.
#[derive(Debug, Clone)]
pub struct HopCounter {
    /// Whitespace-collapsed, lowercased `" by HOSTNAME (splitmx"`.
    pattern: Vec<u8>,
    /// Start of the current Received field body, collapsed and lowercased; begins with
    /// a space so that the leading space of `pattern` matches at the very start.
    window: Vec<u8>,
    /// Maximum length of `window`.
    window_cap: usize,
    /// Bytes of the current Received field were dropped because the window was full.
    truncated: bool,
    /// The open field is a Received field whose colon has been seen.
    in_received: bool,
    state: State,
    max_header_bytes: usize,
    received: usize,
    self_passes: usize,
    header_bytes: usize,
}

/// Position of the parser in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// After a CR at the start of a line (maybe the empty line ending the header).
    LineStartCr,
    /// In a field name; the number of bytes of `received` matched so far.
    Name(usize),
    /// After `received` and some WSP, waiting for the colon.
    NameWsp,
    /// In the body of a Received field.
    Value,
    /// In a line that is not examined, until its LF.
    Skip,
    /// The header ended (empty line seen).
    Done,
    /// The byte limit was reached before the header ended.
    Overflow,
}

const RECEIVED: &[u8] = b"received";

impl HopCounter {
    /// A counter for the gateway `hostname`, examining at most [`DEFAULT_MAX_HEADER_BYTES`].
    pub fn new(hostname: &str) -> Self {
        Self::with_limit(hostname, DEFAULT_MAX_HEADER_BYTES)
    }

    /// A counter for the gateway `hostname`, examining at most `max_header_bytes` bytes.
    pub fn with_limit(hostname: &str, max_header_bytes: usize) -> Self {
        let raw = format!(" {} ", own_stamp_token(hostname));
        let mut pattern = Vec::with_capacity(raw.len());
        for &b in raw.as_bytes() {
            push_collapsed(&mut pattern, b);
        }
        // Drop the `)` and the trailing space: `(splitmx 0.1.0)` must match too.
        pattern.truncate(pattern.len().saturating_sub(2));
        let window_cap = STAMP_WINDOW_BYTES.max(pattern.len() + 1);
        Self {
            pattern,
            window: Vec::with_capacity(window_cap),
            window_cap,
            truncated: false,
            in_received: false,
            state: if max_header_bytes == 0 {
                State::Overflow
            } else {
                State::LineStart
            },
            max_header_bytes,
            received: 0,
            self_passes: 0,
            header_bytes: 0,
        }
    }

    /// Feed the next chunk; returns true while still inside the header (the caller may stop feeding once it returns false). Bytes after the header end (the first empty line, CRLF CRLF or bare LF LF) are ignored; bytes beyond max_header_bytes are ignored and header_complete stays false.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        if !self.in_header() {
            return false;
        }
        let room = self.max_header_bytes.saturating_sub(self.header_bytes);
        let data = chunk.get(..room).unwrap_or(chunk);
        let mut i = 0;
        while i < data.len() {
            if self.state == State::Skip {
                // Fast path: jump to the end of the line.
                match data[i..].iter().position(|&b| b == b'\n') {
                    Some(pos) => {
                        i += pos + 1;
                        self.state = State::LineStart;
                        continue;
                    }
                    None => break,
                }
            }
            self.step(data[i]);
            i += 1;
            if self.state == State::Done {
                self.header_bytes += i;
                return false;
            }
        }
        self.header_bytes += data.len();
        if self.header_bytes >= self.max_header_bytes {
            self.finish_field();
            self.state = State::Overflow;
        }
        self.in_header()
    }

    /// Current totals. Works at any time: a Received field still open (e.g. at the end
    /// of input) is counted, and its own-stamp status judged on what was seen so far.
    pub fn count(&self) -> HopCount {
        let open_own = self.in_received && self.window_matches();
        HopCount {
            received: self.received,
            self_passes: self.self_passes + usize::from(open_own),
            header_bytes: self.header_bytes,
            header_complete: self.state == State::Done,
        }
    }

    fn in_header(&self) -> bool {
        !matches!(self.state, State::Done | State::Overflow)
    }

    /// Processes one header byte.
    fn step(&mut self, b: u8) {
        self.state = match self.state {
            State::LineStart => match b {
                b'\n' => self.end_header(),
                b'\r' => State::LineStartCr,
                b' ' | b'\t' => {
                    // Continuation line of the previous field (if any).
                    if self.in_received {
                        self.push(b);
                        State::Value
                    } else {
                        State::Skip
                    }
                }
                _ => {
                    self.finish_field();
                    name_step(0, b)
                }
            },
            State::LineStartCr => {
                if b == b'\n' {
                    self.end_header()
                } else {
                    // A line starting with CR: not a valid field, never a continuation.
                    self.finish_field();
                    State::Skip
                }
            }
            State::Name(pos) => {
                let next = name_step(pos, b);
                if next == State::Value {
                    self.open_received();
                }
                next
            }
            State::NameWsp => match b {
                b' ' | b'\t' => State::NameWsp,
                b':' => {
                    self.open_received();
                    State::Value
                }
                b'\n' => State::LineStart,
                _ => State::Skip,
            },
            State::Value => {
                self.push(b);
                if b == b'\n' {
                    State::LineStart
                } else {
                    State::Value
                }
            }
            State::Skip => {
                if b == b'\n' {
                    State::LineStart
                } else {
                    State::Skip
                }
            }
            State::Done => State::Done,
            State::Overflow => State::Overflow,
        };
    }

    fn open_received(&mut self) {
        self.received += 1;
        self.in_received = true;
        self.truncated = false;
        self.window.clear();
        self.window.push(b' ');
    }

    fn end_header(&mut self) -> State {
        self.finish_field();
        State::Done
    }

    /// Closes the current field, counting it as ours if it carries the token.
    fn finish_field(&mut self) {
        if self.in_received {
            if self.window_matches() {
                self.self_passes += 1;
            }
            self.in_received = false;
        }
    }

    fn push(&mut self, b: u8) {
        if self.truncated {
            return;
        }
        if self.window.len() >= self.window_cap {
            // Would a collapsed space be dropped? Then nothing is lost yet.
            if is_wsp(b) && self.window.last() == Some(&b' ') {
                return;
            }
            self.truncated = true;
            return;
        }
        push_collapsed(&mut self.window, b);
    }

    /// Whether the window holds the token followed by `)`, a space, or the end of the
    /// field.
    fn window_matches(&self) -> bool {
        let p = self.pattern.as_slice();
        let w = self.window.as_slice();
        if p.is_empty() || w.len() < p.len() {
            return false;
        }
        (0..=w.len() - p.len()).any(|start| {
            let end = start + p.len();
            w.get(start..end) == Some(p)
                && match w.get(end) {
                    Some(&next) => next == b')' || next == b' ',
                    None => !self.truncated,
                }
        })
    }
}

/// Next state after byte `b` of a field name of which `pos` bytes matched `received`.
fn name_step(pos: usize, b: u8) -> State {
    if pos < RECEIVED.len() {
        if RECEIVED.get(pos) == Some(&b.to_ascii_lowercase()) {
            State::Name(pos + 1)
        } else if b == b'\n' {
            State::LineStart
        } else {
            State::Skip
        }
    } else {
        match b {
            b':' => State::Value,
            b' ' | b'\t' => State::NameWsp,
            b'\n' => State::LineStart,
            _ => State::Skip,
        }
    }
}

fn is_wsp(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Appends `b` lowercased, turning SP/HTAB/CR/LF into one space per run.
fn push_collapsed(buf: &mut Vec<u8>, b: u8) {
    if is_wsp(b) {
        if buf.last() != Some(&b' ') {
            buf.push(b' ');
        }
    } else {
        buf.push(b.to_ascii_lowercase());
    }
}

/// Convenience: count a whole message or header block at once.
pub fn count_hops(message: &[u8], hostname: &str) -> HopCount {
    let mut counter = HopCounter::new(hostname);
    counter.feed(message);
    counter.count()
}

/// The by-clause the gateway writes into its own Received fields, exactly what HopCounter recognises: format!("by {hostname} (splitmx)").
pub fn own_stamp_token(hostname: &str) -> String {
    format!("by {hostname} (splitmx)")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "mx1.example.net";

    fn own(n: usize) -> String {
        format!(
            "Received: from client.example.org (client.example.org [192.0.2.{n}])\r\n\t{} with ESMTP id Q{n}; Mon, 1 Jan 2024 00:00:00 +0000\r\n",
            own_stamp_token(HOST)
        )
    }

    fn other(n: usize) -> String {
        format!(
            "Received: from a{n}.example.org by b{n}.example.org (Postfix) with ESMTP id X{n};\r\n Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        )
    }

    fn message(fields: &[String]) -> Vec<u8> {
        let mut m = fields.concat();
        m.push_str("Subject: hi\r\nFrom: a@example.org\r\n\r\nbody\r\nReceived: by mx1.example.net (splitmx)\r\n");
        m.into_bytes()
    }

    fn others(n: usize) -> Vec<String> {
        (0..n).map(other).collect()
    }

    fn hops(received: usize, self_passes: usize) -> HopCount {
        HopCount {
            received,
            self_passes,
            header_bytes: 0,
            header_complete: true,
        }
    }

    /// Asserts all feeding patterns agree with `count_hops`, and returns the count.
    fn consistent(msg: &[u8]) -> HopCount {
        let whole = count_hops(msg, HOST);
        let mut c = HopCounter::new(HOST);
        for &b in msg {
            c.feed(&[b]);
        }
        assert_eq!(c.count(), whole, "byte by byte");
        for split in 0..=msg.len() {
            let mut c = HopCounter::new(HOST);
            c.feed(&msg[..split]);
            c.feed(&msg[split..]);
            assert_eq!(c.count(), whole, "split at {split}");
        }
        whole
    }

    #[test]
    fn constants_and_default_policy() {
        assert_eq!(
            LoopPolicy::default(),
            LoopPolicy {
                max_hops: 50,
                max_self_passes: 2
            }
        );
        assert_eq!(DEFAULT_MAX_HEADER_BYTES, 1_048_576);
        assert_eq!(
            own_stamp_token("mx.Example.com"),
            "by mx.Example.com (splitmx)"
        );
    }

    #[test]
    fn zero_received() {
        let msg = message(&[]);
        let c = count_hops(&msg, HOST);
        assert_eq!(c.received, 0);
        assert_eq!(c.self_passes, 0);
        assert!(c.header_complete);
        assert_eq!(
            c.header_bytes,
            msg.len() - "body\r\nReceived: by mx1.example.net (splitmx)\r\n".len()
        );
        assert_eq!(LoopPolicy::default().check(&c), Ok(()));
    }

    #[test]
    fn one_received() {
        let c = count_hops(&message(&others(1)), HOST);
        assert_eq!((c.received, c.self_passes), (1, 0));
        assert_eq!(LoopPolicy::default().check(&c), Ok(()));
    }

    #[test]
    fn fifty_received_is_allowed() {
        let c = count_hops(&message(&others(50)), HOST);
        assert_eq!((c.received, c.self_passes), (50, 0));
        assert!(c.header_complete);
        assert_eq!(LoopPolicy::default().check(&c), Ok(()));
    }

    #[test]
    fn fifty_one_received_is_rejected() {
        let c = count_hops(&message(&others(51)), HOST);
        assert_eq!((c.received, c.self_passes), (51, 0));
        assert_eq!(
            LoopPolicy::default().check(&c),
            Err(LoopError::TooManyHops { count: 51, max: 50 })
        );
    }

    #[test]
    fn policy_boundaries() {
        let p = LoopPolicy::default();
        assert_eq!(p.check(&hops(50, 1)), Ok(()));
        assert!(matches!(
            p.check(&hops(51, 0)),
            Err(LoopError::TooManyHops { .. })
        ));
        assert!(matches!(
            p.check(&hops(3, 2)),
            Err(LoopError::SelfLoop {
                passes: 2,
                max: 2,
                ..
            })
        ));
        // Self loop is the more specific diagnosis.
        assert!(matches!(
            p.check(&hops(99, 5)),
            Err(LoopError::SelfLoop { passes: 5, .. })
        ));
        let no_self = LoopPolicy {
            max_hops: 50,
            max_self_passes: 0,
        };
        assert_eq!(no_self.check(&hops(10, 10)), Ok(()));
        assert!(matches!(
            no_self.check(&hops(51, 10)),
            Err(LoopError::TooManyHops { .. })
        ));
        let zero_hops = LoopPolicy {
            max_hops: 0,
            max_self_passes: 2,
        };
        assert_eq!(zero_hops.check(&hops(0, 0)), Ok(()));
        assert!(zero_hops.check(&hops(1, 0)).is_err());
    }

    #[test]
    fn one_own_stamp_is_allowed() {
        let mut fields = vec![own(1)];
        fields.extend(others(3));
        let c = count_hops(&message(&fields), HOST);
        assert_eq!((c.received, c.self_passes), (4, 1));
        assert_eq!(LoopPolicy::default().check(&c), Ok(()));
    }

    #[test]
    fn two_own_stamps_are_a_loop() {
        let fields = vec![own(1), other(1), own(2), other(2)];
        let c = count_hops(&message(&fields), HOST);
        assert_eq!((c.received, c.self_passes), (4, 2));
        let err = LoopPolicy::default().check(&c).unwrap_err();
        assert_eq!(
            err,
            LoopError::SelfLoop {
                hostname: "this gateway".into(),
                passes: 2,
                max: 2
            }
        );
        let named = LoopPolicy::default()
            .check_with_hostname(&c, HOST)
            .unwrap_err();
        assert_eq!(
            named.to_string(),
            "mail loop: message already passed through mx1.example.net 2 times (limit 2)"
        );
        assert_eq!(
            named.reply(),
            (
                554,
                "5.4.6",
                "Mail loop detected: message already passed through mx1.example.net 2 times".into()
            )
        );
    }

    #[test]
    fn folded_own_stamp() {
        let msg = b"Received: from x.example.org by\r\n mx1.example.net\r\n\t (splitmx) with ESMTP id A;\r\n Mon, 1 Jan 2024\r\nReceived: from y by   MX1.EXAMPLE.NET\t\t(SplitMX 0.1.0) id B\r\n\r\n";
        let c = consistent(msg);
        assert_eq!((c.received, c.self_passes), (2, 2));
        assert!(c.header_complete);
    }

    #[test]
    fn own_stamp_fold_lf_only() {
        let msg = b"Received: from x by\n mx1.example.net\n (splitmx)\n\n";
        assert_eq!(consistent(msg).self_passes, 1);
    }

    #[test]
    fn own_stamp_at_end_of_field_and_at_eof() {
        // Token ends the field (no closing parenthesis): accepted as the end of the field.
        let c = consistent(b"Received: by mx1.example.net (splitmx\r\nX: y\r\n\r\n");
        assert_eq!((c.received, c.self_passes), (1, 1));
        // Open field at end of input still counts.
        let c = consistent(b"Received: by mx1.example.net (splitmx)");
        assert_eq!(
            (c.received, c.self_passes, c.header_complete),
            (1, 1, false)
        );
        // The token must be a prefix of the comment word: `(splitmxx)` is not ours.
        let c = consistent(b"Received: by mx1.example.net (splitmxx)\r\n\r\n");
        assert_eq!((c.received, c.self_passes), (1, 0));
    }

    #[test]
    fn upper_case_and_obsolete_space_before_colon() {
        let msg = b"RECEIVED: from a by b\r\nReceived : from a by b\r\nreceived\t \t: x\r\nrEcEiVeD:\r\n\r\n";
        let c = consistent(msg);
        assert_eq!((c.received, c.self_passes), (4, 0));
    }

    #[test]
    fn not_received_fields() {
        let msg = b"Received-SPF: pass\r\nX-Received: by mx1.example.net (splitmx)\r\nReceivedx: y\r\nReceived\r\nReceiv: y\r\nReceived x: y\r\n: y\r\n\r\n";
        let c = consistent(msg);
        assert_eq!((c.received, c.self_passes), (0, 0));
    }

    #[test]
    fn split_consistency_on_mixed_message() {
        let mut fields = vec![own(1)];
        fields.extend(others(2));
        fields.push(own(2));
        let msg = message(&fields);
        let c = consistent(&msg);
        assert_eq!((c.received, c.self_passes), (4, 2));
    }

    #[test]
    fn split_consistency_on_edge_messages() {
        for msg in [
            &b""[..],
            b"\r\n",
            b"\n",
            b"\r",
            b"\r\r\n",
            b"Received:",
            b"Received: by mx1.example.net (splitmx) x\r\n\r",
            b" Received: x\r\nReceived: y\n\n",
            b"Received: \0\xff\xfe by mx1.example.net (splitmx)\n\n",
        ] {
            consistent(msg);
        }
    }

    #[test]
    fn received_in_body_is_not_counted() {
        let msg = b"Subject: x\r\n\r\nReceived: from a by b\r\nReceived: by mx1.example.net (splitmx)\r\n";
        let c = consistent(msg);
        assert_eq!((c.received, c.self_passes, c.header_bytes), (0, 0, 14));
        assert!(c.header_complete);
    }

    #[test]
    fn empty_first_line_means_no_header() {
        let c = consistent(b"\r\nReceived: a\r\nReceived: b\r\n");
        assert_eq!(
            (c.received, c.header_bytes, c.header_complete),
            (0, 2, true)
        );
        let c = consistent(b"\nReceived: a\n");
        assert_eq!(
            (c.received, c.header_bytes, c.header_complete),
            (0, 1, true)
        );
    }

    #[test]
    fn feed_return_value() {
        let mut c = HopCounter::new(HOST);
        assert!(c.feed(b"Received: a\r\n"));
        assert!(c.feed(b""));
        assert!(c.feed(b"\r"));
        assert!(!c.feed(b"\nbody\r\n"));
        assert!(!c.feed(b"Received: b\r\n"));
        let n = c.count();
        assert_eq!(
            (n.received, n.header_bytes, n.header_complete),
            (1, 15, true)
        );
    }

    #[test]
    fn lf_only_line_endings() {
        let msg = b"Received: from a by mx1.example.net (splitmx) id 1\nReceived: from b by c\n id 2\nSubject: x\n\nReceived: body\n";
        let c = consistent(msg);
        assert_eq!((c.received, c.self_passes), (2, 1));
        assert!(c.header_complete);
    }

    #[test]
    fn other_hosts_and_from_clause_are_not_own() {
        let msg = b"Received: from mx1.example.net (mx1.example.net [192.0.2.1]) by mx2.example.net (splitmx) id 1\r\n\
Received: from mx1.example.net (splitmx) by relay.example.org (Postfix)\r\n\
Received: by xmx1.example.net (splitmx)\r\n\
Received: standby mx1.example.net (splitmx)\r\n\
Received: by mx1.example.net.evil (splitmx)\r\n\
Received: by mx1.example.net (postfix) (splitmx)\r\n\r\n";
        let c = consistent(msg);
        assert_eq!((c.received, c.self_passes), (6, 0));
    }

    #[test]
    fn continuation_that_looks_like_received_is_not_a_field() {
        let msg = b"Subject: hello\r\n Received: from a by b\r\n\tReceived: x\r\nReceived: y\r\n  Received: by mx1.example.net (splitmx)\r\n\r\n";
        let c = consistent(msg);
        // The last continuation belongs to the real Received field, whose text contains the token.
        assert_eq!((c.received, c.self_passes), (1, 1));
        // A continuation at the very start of the message belongs to nothing.
        let c = consistent(b" Received: by mx1.example.net (splitmx)\r\n\r\n");
        assert_eq!((c.received, c.self_passes), (0, 0));
    }

    #[test]
    fn two_tokens_in_one_field_count_once() {
        let c = consistent(
            b"Received: by mx1.example.net (splitmx) by mx1.example.net (splitmx)\r\n\r\n",
        );
        assert_eq!((c.received, c.self_passes), (1, 1));
    }

    #[test]
    fn non_utf8_and_nul_do_not_break_counting() {
        let msg = b"X-Bin: \0\xff\xc3\x28\r\nReceived: \xff\0 by mx1.example.net (splitmx)\r\nReceived: \x80\x81\r\n\r\n";
        let c = consistent(msg);
        assert_eq!((c.received, c.self_passes), (2, 1));
    }

    #[test]
    fn header_beyond_limit_is_incomplete_and_bounded() {
        let mut c = HopCounter::with_limit(HOST, 1000);
        let line = b"Received: from a by b\r\n"; // 23 bytes
        let mut fed = 0;
        while c.feed(line) {
            fed += 1;
            assert!(
                fed < 100,
                "feed must return false once the limit is reached"
            );
        }
        for _ in 0..10 {
            assert!(!c.feed(line));
        }
        let n = c.count();
        assert!(!n.header_complete);
        assert_eq!(n.header_bytes, 1000);
        // 43 full lines (989 bytes) plus the start of the 44th, which has its colon.
        assert_eq!(n.received, 44);
    }

    #[test]
    fn limit_exactly_at_header_end() {
        let msg = b"Received: a\r\n\r\n"; // 15 bytes
        let mut c = HopCounter::with_limit(HOST, 15);
        assert!(!c.feed(msg));
        assert!(c.count().header_complete);
        let mut c = HopCounter::with_limit(HOST, 14);
        assert!(!c.feed(msg));
        let n = c.count();
        assert_eq!(
            (n.received, n.header_bytes, n.header_complete),
            (1, 14, false)
        );
        let mut c = HopCounter::with_limit(HOST, 0);
        assert!(!c.feed(msg));
        assert_eq!(c.count(), HopCount::default());
    }

    #[test]
    fn default_limit_bounds_a_huge_header() {
        let mut c = HopCounter::new(HOST);
        let chunk = [b'a'; 64 * 1024];
        let mut rounds = 0;
        while c.feed(&chunk) {
            rounds += 1;
        }
        assert_eq!(rounds, 15);
        let n = c.count();
        assert_eq!(n.header_bytes, DEFAULT_MAX_HEADER_BYTES);
        assert!(!n.header_complete);
    }

    #[test]
    fn long_received_field_only_first_window_is_searched() {
        let token = own_stamp_token(HOST);
        let early = format!("Received: {token} {}\r\n\r\n", "x".repeat(5000));
        assert_eq!(count_hops(early.as_bytes(), HOST).self_passes, 1);
        let late = format!("Received: {} {token}\r\n\r\n", "x".repeat(5000));
        let c = count_hops(late.as_bytes(), HOST);
        assert_eq!((c.received, c.self_passes), (1, 0));
        // Whitespace runs do not fill the window.
        let spaced = format!("Received:{}{token}\r\n\r\n", " \r\n\t".repeat(5000));
        assert_eq!(count_hops(spaced.as_bytes(), HOST).self_passes, 1);
    }

    #[test]
    fn token_ending_exactly_at_full_window_is_not_trusted() {
        let token = own_stamp_token(HOST);
        let stem = &token[..token.len() - 1]; // without ')'
        // Window holds ' ' + filler + ' ' + stem; fill it exactly.
        let filler = "x".repeat(STAMP_WINDOW_BYTES - 2 - stem.len());
        let exact = format!("Received: {filler} {stem}x)\r\n\r\n");
        assert_eq!(count_hops(exact.as_bytes(), HOST).self_passes, 0);
        let fits = format!("Received: {filler} {stem})\r\n\r\n");
        // `)` is dropped (window full) and the field was truncated: not recognised.
        assert_eq!(count_hops(fits.as_bytes(), HOST).self_passes, 0);
        let shorter = format!("Received: {} {token}\r\n\r\n", &filler[1..]);
        assert_eq!(count_hops(shorter.as_bytes(), HOST).self_passes, 1);
    }

    #[test]
    fn hostname_case_and_odd_hostnames() {
        let msg = b"Received: by MX1.Example.NET (splitmx)\r\n\r\n";
        assert_eq!(count_hops(msg, "mx1.EXAMPLE.net").self_passes, 1);
        // Empty host name: the token is `by  (splitmx)`, collapsed to `by (splitmx)`.
        assert_eq!(count_hops(b"Received: by (splitmx)\n\n", "").self_passes, 1);
        let long = "h".repeat(3000);
        let msg = format!("Received: by {long} (splitmx)\r\n\r\n");
        assert_eq!(count_hops(msg.as_bytes(), &long).self_passes, 1);
    }

    #[test]
    fn reply_is_554_546() {
        let (code, status, text) = LoopError::TooManyHops { count: 51, max: 50 }.reply();
        assert_eq!(
            (code, status, text.as_str()),
            (554, "5.4.6", "Too many hops")
        );
        let e = LoopError::TooManyHops { count: 51, max: 50 };
        assert_eq!(
            e.to_string(),
            "too many hops: 51 Received fields, the limit is 50"
        );
        let e = LoopError::SelfLoop {
            hostname: "evil\r\nhost\u{e9}".into(),
            passes: 3,
            max: 2,
        };
        let (code, status, text) = e.reply();
        assert_eq!((code, status), (554, "5.4.6"));
        assert_eq!(
            text,
            "Mail loop detected: message already passed through evil??host? 3 times"
        );
    }
}
