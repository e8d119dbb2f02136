//! SMTP envelope addresses: parsing, validation and normalisation.
//!
//! Purpose: turn the text of an envelope address (`MAIL FROM`/`RCPT TO`) into an
//! [`Address`] that keeps the original spelling for the envelope and carries a
//! normalised matching key for the routing tables.
//!
//! Inputs: a mailbox `local@domain` ([`Address::parse`]), an SMTP path `<local@domain>`
//! ([`parse_path`]) or a bare domain name ([`normalize_domain`]), as arbitrary UTF-8.
//! The grammar is RFC 5321 section 4.1.2 (Mailbox, Local-part as Dot-string or
//! Quoted-string, Domain as host name or address literal) extended by RFC 6531
//! (SMTPUTF8: non-ASCII UTF-8 in local-part atoms and quoted strings, U-labels in the
//! domain). The size limits of RFC 5321 section 4.5.3.1 apply: local part at most
//! [`MAX_LOCAL_PART`] octets, domain at most [`MAX_DOMAIN`] octets (counted on the
//! A-label form), path at most [`MAX_PATH`] octets including the angle brackets (so a
//! mailbox may be at most 254 octets, both as given and in its [`Address::to_smtp`] form).
//!
//! Outputs: an [`Address`] with the original text, the decoded local part (quotes and
//! quoted-pair backslashes removed), the domain in lower-case ASCII (IDNA A-labels,
//! trailing dot removed; IPv4/IPv6 address literals in canonical form), and the matching
//! key `casefolded-local@domain`; [`Address::extension`] splits `user+ext`.
//!
//! Failure modes: every malformed input yields an [`AddressError`] saying what is wrong
//! and where (byte offset into the string that was passed in, or the offending label).
//! Nothing here panics on any input, whatever its size or content: lengths are checked
//! before the expensive IDNA step, and control characters (NUL, CR, LF, ...) are refused
//! everywhere. An empty quoted local part (`""@example.com`) is refused as an empty
//! local part: it cannot name a mailbox that a routing table could hold.

use std::borrow::Cow;
use std::fmt;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest local part, in octets (RFC 5321 section 4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// Longest domain, in octets of its A-label form (RFC 5321 section 4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Longest path, in octets including the angle brackets (RFC 5321 section 4.5.3.1.3).
pub const MAX_PATH: usize = 256;

/// Why an address, path or domain was refused.
///
/// Offsets are byte offsets into the string handed to the function that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The input was empty.
    #[error("empty address")]
    Empty,
    /// No `@` separates a local part from a domain.
    #[error("missing '@' between local part and domain")]
    MissingAt,
    /// Nothing (or an empty quoted string) before the `@`.
    #[error("empty local part")]
    EmptyLocalPart,
    /// Nothing after the `@` (or only a dot).
    #[error("empty domain")]
    EmptyDomain,
    /// The local part is longer than [`MAX_LOCAL_PART`].
    #[error("local part is {len} octets, the limit is 64")]
    LocalPartTooLong {
        /// Length of the local part as given, in octets.
        len: usize,
    },
    /// The domain (A-label form) is longer than [`MAX_DOMAIN`].
    #[error("domain is {len} octets, the limit is 255")]
    DomainTooLong {
        /// Length of the domain, in octets.
        len: usize,
    },
    /// The path is longer than [`MAX_PATH`].
    #[error("path is {len} octets including the angle brackets, the limit is 256")]
    PathTooLong {
        /// Length of the path including `<` and `>`, in octets.
        len: usize,
    },
    /// The local part starts with a dot.
    #[error("local part starts with '.' at offset {offset}")]
    LeadingDot {
        /// Offset of the dot.
        offset: usize,
    },
    /// The local part ends with a dot.
    #[error("local part ends with '.' at offset {offset}")]
    TrailingDot {
        /// Offset of the dot.
        offset: usize,
    },
    /// Two dots in a row in the local part.
    #[error("consecutive dots at offset {offset} in local part")]
    ConsecutiveDots {
        /// Offset of the second dot.
        offset: usize,
    },
    /// A character that may not appear in an unquoted local part.
    #[error("invalid character {ch:?} at offset {offset} in local part")]
    InvalidLocalChar {
        /// The character.
        ch: char,
        /// Its offset.
        offset: usize,
    },
    /// A control character (NUL, CR, LF, TAB, DEL, C1 controls, ...), refused everywhere.
    #[error("control character {ch:?} at offset {offset}")]
    ControlChar {
        /// The character.
        ch: char,
        /// Its offset.
        offset: usize,
    },
    /// A quoted local part without its closing quote.
    #[error("unterminated quoted string starting at offset {offset}")]
    UnterminatedQuote {
        /// Offset of the opening quote.
        offset: usize,
    },
    /// A backslash in a quoted string followed by something other than printable ASCII.
    #[error(
        "invalid character {ch:?} after backslash at offset {offset} in quoted string (only printable ASCII may be escaped)"
    )]
    InvalidQuotedPair {
        /// The character after the backslash.
        ch: char,
        /// Its offset.
        offset: usize,
    },
    /// Text between the closing quote of the local part and the `@`.
    #[error(
        "unexpected character {ch:?} at offset {offset} after the closing quote of the local part"
    )]
    TextAfterQuote {
        /// The character.
        ch: char,
        /// Its offset.
        offset: usize,
    },
    /// A character that may not appear in a host name.
    #[error("invalid character {ch:?} at offset {offset} in domain")]
    InvalidDomainChar {
        /// The character.
        ch: char,
        /// Its offset.
        offset: usize,
    },
    /// An empty label in a host name (`a..b`, `.a`).
    #[error("empty domain label at offset {offset}")]
    EmptyLabel {
        /// Offset where the empty label starts.
        offset: usize,
    },
    /// A host name label longer than 63 octets.
    #[error("domain label '{label}' is {len} octets, the limit is 63")]
    LabelTooLong {
        /// The label.
        label: String,
        /// Its length in octets.
        len: usize,
    },
    /// A label that is not letters, digits and inner hyphens (LDH).
    #[error("domain label '{label}' is not a valid host name label: {reason}")]
    InvalidLabel {
        /// The label (A-label form for internationalised names).
        label: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The IDNA (UTS #46) conversion to A-labels failed.
    #[error("invalid IDN domain '{domain}': {reason}")]
    Idna {
        /// The domain as given.
        domain: String,
        /// What went wrong.
        reason: &'static str,
    },
    /// A domain literal without its closing `]`.
    #[error("domain literal starting at offset {offset} has no closing ']'")]
    UnterminatedDomainLiteral {
        /// Offset of the `[`.
        offset: usize,
    },
    /// A domain literal whose address does not parse.
    #[error("invalid domain literal '{literal}': {reason}")]
    InvalidDomainLiteral {
        /// The literal, brackets included.
        literal: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A General-address-literal (`[tag:...]`) other than IPv6.
    #[error(
        "unsupported address literal tag '{tag}': only IPv4 and IPv6 address literals are accepted"
    )]
    UnsupportedAddressLiteral {
        /// The tag before the colon.
        tag: String,
    },
    /// A domain literal where only a host name is accepted ([`normalize_domain`], source routes).
    #[error("a domain literal is not allowed here, a host name is required")]
    DomainLiteralNotAllowed,
    /// A path that does not start with `<`.
    #[error("path must start with '<'")]
    MissingOpenBracket,
    /// A path that does not end with `>`.
    #[error("path must end with '>'")]
    MissingCloseBracket,
    /// Characters after the closing `>` of a path.
    #[error("unexpected characters after '>' at offset {offset}")]
    TrailingCharacters {
        /// Offset of the first character after the `>`.
        offset: usize,
    },
    /// A malformed source route (`<@a,@b:local@domain>`).
    #[error("invalid source route at offset {offset}: {reason}")]
    InvalidSourceRoute {
        /// Where the problem is.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A parsed, validated SMTP envelope mailbox.
///
/// Equality and hashing compare the original spelling; compare [`Address::key`] to match
/// addresses the way the routing tables do.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// One allocation: original, then the decoded local part when it was quoted, then the key.
    buf: std::sync::Arc<str>,
    /// `buf[..orig_len]` is the original text.
    orig_len: u16,
    /// Offset of the separating `@` in the original.
    orig_at: u16,
    /// `buf[local_start..local_end]` is the decoded local part.
    local_start: u16,
    local_end: u16,
    /// `buf[key_start..]` is the key.
    key_start: u16,
    /// Offset of the separating `@` in the key (relative to `key_start`).
    key_at: u16,
    flags: u8,
}

const FLAG_LITERAL: u8 = 1;
const FLAG_UTF8: u8 = 2;

impl Address {
    /// Parse a mailbox `local@domain` (no angle brackets).
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        parse_mailbox(s, 0)
    }

    /// The address as it was given (original spelling, what goes on the envelope).
    pub fn original(&self) -> &str {
        self.slice(0, usize::from(self.orig_len))
    }

    /// The local part, decoded: surrounding quotes and quoted-pair backslashes removed, original case.
    pub fn local_part(&self) -> &str {
        self.slice(usize::from(self.local_start), usize::from(self.local_end))
    }

    /// The domain in ASCII (IDNA A-labels), lower case. A domain literal keeps its brackets:
    /// "[192.0.2.1]", "[ipv6:2001:db8::1]" (the address in canonical RFC 5952 form).
    pub fn domain(&self) -> &str {
        self.key().get(usize::from(self.key_at) + 1..).unwrap_or("")
    }

    /// The matching key: case-folded decoded local part, '@', domain(). Two addresses that
    /// differ only in case, in unnecessary quoting (`"alice"@x` == `alice@x`) or in U-label
    /// vs A-label spelling of the domain have the same key.
    pub fn key(&self) -> &str {
        self.buf.get(usize::from(self.key_start)..).unwrap_or("")
    }

    /// The case-folded local part (the part of key() before the last '@').
    pub fn local_key(&self) -> &str {
        self.key().get(..usize::from(self.key_at)).unwrap_or("")
    }

    /// True when the local part has non-ASCII characters (the message needs SMTPUTF8).
    pub fn needs_smtputf8(&self) -> bool {
        self.flags & FLAG_UTF8 != 0
    }

    /// True for a domain literal ("[192.0.2.1]").
    pub fn is_domain_literal(&self) -> bool {
        self.flags & FLAG_LITERAL != 0
    }

    /// Split off an address extension: `user+ext` with delimiters "+" (several allowed,
    /// e.g. "+-", like Postfix recipient_delimiter; the leftmost occurrence of any of them
    /// splits). None when there is no delimiter, or when the user part would be empty
    /// ("+foo@x"), or delimiters is empty. The extension itself may be empty ("user+@x").
    pub fn extension(&self, delimiters: &str) -> Option<Extension<'_>> {
        let local = self.local_part();
        let (pos, delimiter) = local
            .char_indices()
            .find(|&(_, c)| delimiters.contains(c))?;
        if pos == 0 {
            return None;
        }
        Some(Extension {
            user: local.get(..pos)?,
            delimiter,
            extension: local.get(pos + delimiter.len_utf8()..)?,
        })
    }

    /// key() with the extension removed ("user@domain" case-folded), None when there is no extension.
    pub fn base_key(&self, delimiters: &str) -> Option<String> {
        let ext = self.extension(delimiters)?;
        let domain = self.domain();
        let mut out = String::with_capacity(ext.user.len() + 1 + domain.len());
        push_folded(&mut out, ext.user);
        out.push('@');
        out.push_str(domain);
        Some(out)
    }

    /// The address in SMTP form: local part quoted again when it needs quoting (per RFC 5321
    /// Dot-string rules), '@', domain(). Used when relaying.
    pub fn to_smtp(&self) -> String {
        let local = self.local_part();
        let domain = self.domain();
        let mut out = String::with_capacity(smtp_local_len(local) + 1 + domain.len());
        push_smtp_local(&mut out, local);
        out.push('@');
        out.push_str(domain);
        out
    }

    /// A new address with a different local part (decoded form) on the same domain (as
    /// originally spelled); validated like parse(). Error offsets refer to the local part
    /// for control characters, to the rebuilt `local@domain` text otherwise.
    pub fn with_local_part(&self, local: &str) -> Result<Address, AddressError> {
        if local.is_empty() {
            return Err(AddressError::EmptyLocalPart);
        }
        if let Some((offset, ch)) = local.char_indices().find(|(_, c)| c.is_control()) {
            return Err(AddressError::ControlChar { ch, offset });
        }
        let smtp_len = smtp_local_len(local);
        if smtp_len > MAX_LOCAL_PART {
            return Err(AddressError::LocalPartTooLong { len: smtp_len });
        }
        let domain = self
            .original()
            .get(usize::from(self.orig_at) + 1..)
            .unwrap_or("");
        let mut s = String::with_capacity(smtp_len + 1 + domain.len());
        push_smtp_local(&mut s, local);
        s.push('@');
        s.push_str(domain);
        parse_mailbox(&s, 0)
    }

    fn slice(&self, start: usize, end: usize) -> &str {
        self.buf.get(start..end).unwrap_or("")
    }
}

/// An address extension found by [`Address::extension`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension<'a> {
    /// The decoded local part before the delimiter, original case.
    pub user: &'a str,
    /// The delimiter that split it.
    pub delimiter: char,
    /// Everything after the delimiter (may be empty), original case.
    pub extension: &'a str,
}

/// Normalise a domain name (table keys, config): IDNA to A-labels, lower case, trailing dot
/// removed; validates label syntax (LDH, each label 1..=63 octets, total <= 255). Domain
/// literals are accepted only by Address::parse, not here.
pub fn normalize_domain(s: &str) -> Result<String, AddressError> {
    normalize_domain_at(s, 0)
}

/// Parse an SMTP path as in MAIL FROM/RCPT TO: "<local@domain>", optionally with an
/// obsolete source route "<@a,@b:local@domain>" (the route is checked, then dropped).
/// "<>" gives Ok(None) (null path). Missing brackets are an error (strict): the string
/// must be exactly the path, without surrounding spaces or ESMTP parameters.
pub fn parse_path(s: &str) -> Result<Option<Address>, AddressError> {
    if s.is_empty() {
        return Err(AddressError::Empty);
    }
    if !s.starts_with('<') {
        return Err(AddressError::MissingOpenBracket);
    }
    if !s.ends_with('>') {
        return Err(match s.rfind('>') {
            Some(pos) if pos > 0 => AddressError::TrailingCharacters { offset: pos + 1 },
            _ => AddressError::MissingCloseBracket,
        });
    }
    if s.len() > MAX_PATH {
        return Err(AddressError::PathTooLong { len: s.len() });
    }
    let inner = s.get(1..s.len() - 1).unwrap_or("");
    if inner.is_empty() {
        return Ok(None);
    }
    let mut base = 1;
    let mut mailbox = inner;
    if inner.starts_with('@') {
        let colon = inner.find(':').ok_or(AddressError::InvalidSourceRoute {
            offset: 1,
            reason: "missing ':' after the source route",
        })?;
        let route = inner.get(..colon).unwrap_or("");
        let mut pos = 0;
        for hop in route.split(',') {
            let Some(domain) = hop.strip_prefix('@') else {
                return Err(AddressError::InvalidSourceRoute {
                    offset: base + pos,
                    reason: "each hop must be '@' followed by a domain",
                });
            };
            if domain.is_empty() {
                return Err(AddressError::InvalidSourceRoute {
                    offset: base + pos + 1,
                    reason: "empty domain in source route",
                });
            }
            normalize_domain_at(domain, base + pos + 1)?;
            pos += hop.len() + 1;
        }
        base += colon + 1;
        mailbox = inner.get(colon + 1..).unwrap_or("");
        if mailbox.is_empty() {
            return Err(AddressError::InvalidSourceRoute {
                offset: base,
                reason: "no mailbox after the source route",
            });
        }
    }
    parse_mailbox(mailbox, base).map(Some)
}

impl std::str::FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.original())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Address")
            .field("original", &self.original())
            .field("key", &self.key())
            .finish()
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.original())
    }
}

// ---------------------------------------------------------------------------------------
// Implementation.

/// Parse a mailbox; `base` is added to every error offset (its position in a larger path).
fn parse_mailbox(s: &str, base: usize) -> Result<Address, AddressError> {
    if s.is_empty() {
        return Err(AddressError::Empty);
    }
    let at = split_at(s, base)?;
    let local = s.get(..at).unwrap_or("");
    let domain = s.get(at + 1..).unwrap_or("");
    if local.is_empty() {
        return Err(AddressError::EmptyLocalPart);
    }
    let quoted = local.starts_with('"');
    let decoded: Cow<'_, str> = if quoted {
        Cow::Owned(decode_quoted(local, base)?)
    } else {
        check_dot_string(local, base)?;
        Cow::Borrowed(local)
    };
    if local.len() > MAX_LOCAL_PART {
        return Err(AddressError::LocalPartTooLong { len: local.len() });
    }
    if decoded.is_empty() {
        return Err(AddressError::EmptyLocalPart);
    }
    if s.len() + 2 > MAX_PATH {
        return Err(AddressError::PathTooLong { len: s.len() + 2 });
    }
    if domain.is_empty() {
        return Err(AddressError::EmptyDomain);
    }

    let extra = if quoted { decoded.len() } else { 0 };
    let mut buf = String::with_capacity(s.len() + extra + decoded.len() + 1 + domain.len());
    buf.push_str(s);
    let (local_start, local_end) = if quoted {
        let start = buf.len();
        buf.push_str(&decoded);
        (start, buf.len())
    } else {
        (0, at)
    };
    let key_start = buf.len();
    push_folded(&mut buf, &decoded);
    let key_at = buf.len() - key_start;
    buf.push('@');
    let domain_start = buf.len();
    let literal = if domain.starts_with('[') {
        push_literal(&mut buf, domain, base + at + 1)?;
        true
    } else {
        push_host(&mut buf, domain, base + at + 1)?;
        false
    };
    let domain_len = buf.len() - domain_start;
    if domain_len > MAX_DOMAIN {
        return Err(AddressError::DomainTooLong { len: domain_len });
    }
    let smtp_local = if quoted {
        smtp_local_len(&decoded)
    } else {
        local.len()
    };
    let smtp_path = smtp_local + 1 + domain_len + 2;
    if smtp_path > MAX_PATH {
        return Err(AddressError::PathTooLong { len: smtp_path });
    }

    let mut flags = 0;
    if literal {
        flags |= FLAG_LITERAL;
    }
    if !decoded.is_ascii() {
        flags |= FLAG_UTF8;
    }
    Ok(Address {
        orig_len: small(s.len())?,
        orig_at: small(at)?,
        local_start: small(local_start)?,
        local_end: small(local_end)?,
        key_start: small(key_start)?,
        key_at: small(key_at)?,
        flags,
        buf: std::sync::Arc::from(buf),
    })
}

/// Offsets are bounded by the length limits; this only guards the conversion.
fn small(n: usize) -> Result<u16, AddressError> {
    u16::try_from(n).map_err(|_| AddressError::PathTooLong { len: n })
}

/// Find the `@` that separates local part and domain: the last one outside the quoted
/// string that a local part may start with.
fn split_at(s: &str, base: usize) -> Result<usize, AddressError> {
    let bytes = s.as_bytes();
    let search_from = if bytes.first() == Some(&b'"') {
        let mut escaped = false;
        let mut close = None;
        for (i, &b) in bytes.iter().enumerate().skip(1) {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                close = Some(i);
                break;
            }
        }
        close.ok_or(AddressError::UnterminatedQuote { offset: base })? + 1
    } else {
        0
    };
    bytes
        .get(search_from..)
        .and_then(|rest| rest.iter().rposition(|&b| b == b'@'))
        .map(|p| p + search_from)
        .ok_or(AddressError::MissingAt)
}

/// RFC 5321 atext, extended by RFC 6531 with any non-ASCII, non-control character.
fn is_atext(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                '!' | '#'
                    | '$'
                    | '%'
                    | '&'
                    | '\''
                    | '*'
                    | '+'
                    | '-'
                    | '/'
                    | '='
                    | '?'
                    | '^'
                    | '_'
                    | '`'
                    | '{'
                    | '|'
                    | '}'
                    | '~'
            )
    } else {
        !c.is_control()
    }
}

/// Validate an unquoted local part (Dot-string).
fn check_dot_string(local: &str, base: usize) -> Result<(), AddressError> {
    let mut prev_dot = true;
    for (i, c) in local.char_indices() {
        if c == '.' {
            if i == 0 {
                return Err(AddressError::LeadingDot { offset: base });
            }
            if prev_dot {
                return Err(AddressError::ConsecutiveDots { offset: base + i });
            }
            prev_dot = true;
        } else if is_atext(c) {
            prev_dot = false;
        } else if c.is_control() {
            return Err(AddressError::ControlChar {
                ch: c,
                offset: base + i,
            });
        } else {
            return Err(AddressError::InvalidLocalChar {
                ch: c,
                offset: base + i,
            });
        }
    }
    if prev_dot {
        return Err(AddressError::TrailingDot {
            offset: base + local.len().saturating_sub(1),
        });
    }
    Ok(())
}

/// Validate a quoted local part (it starts with `"`) and return its decoded content.
fn decode_quoted(local: &str, base: usize) -> Result<String, AddressError> {
    let mut out = String::with_capacity(local.len());
    let mut escaped = false;
    let mut chars = local.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        if c.is_control() {
            return Err(AddressError::ControlChar {
                ch: c,
                offset: base + i,
            });
        }
        if escaped {
            if !c.is_ascii() {
                return Err(AddressError::InvalidQuotedPair {
                    ch: c,
                    offset: base + i,
                });
            }
            out.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => {
                return match chars.next() {
                    Some((j, d)) => Err(AddressError::TextAfterQuote {
                        ch: d,
                        offset: base + j,
                    }),
                    None => Ok(out),
                };
            }
            _ => out.push(c),
        }
    }
    Err(AddressError::UnterminatedQuote { offset: base })
}

/// True when `local` can be written bare (RFC 5321 Dot-string, RFC 6531 atext).
fn is_dot_string(local: &str) -> bool {
    !local.is_empty()
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

/// Length of the SMTP spelling of a decoded local part (see [`push_smtp_local`]).
fn smtp_local_len(local: &str) -> usize {
    if is_dot_string(local) {
        local.len()
    } else {
        local.len() + 2 + local.bytes().filter(|&b| b == b'"' || b == b'\\').count()
    }
}

/// Write a decoded local part in SMTP form: bare when it is a Dot-string, quoted otherwise.
fn push_smtp_local(out: &mut String, local: &str) {
    if is_dot_string(local) {
        out.push_str(local);
        return;
    }
    out.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Append the case-folded form of `s`.
fn push_folded(out: &mut String, s: &str) {
    if s.is_ascii() {
        let start = out.len();
        out.push_str(s);
        if let Some(tail) = out.get_mut(start..) {
            tail.make_ascii_lowercase();
        }
    } else {
        out.push_str(&s.to_lowercase());
    }
}

/// The characters UTS #46 maps to a label separator.
fn is_dot(c: char) -> bool {
    matches!(c, '.' | '\u{3002}' | '\u{FF0E}' | '\u{FF61}')
}

/// `normalize_domain` with error offsets shifted by `base`.
fn normalize_domain_at(s: &str, base: usize) -> Result<String, AddressError> {
    if s.is_empty() {
        return Err(AddressError::EmptyDomain);
    }
    if s.starts_with('[') {
        return Err(AddressError::DomainLiteralNotAllowed);
    }
    let mut out = String::with_capacity(s.len());
    push_host(&mut out, s, base)?;
    Ok(out)
}

/// Validate a host name and append its normalised form (A-labels, lower case, no trailing dot).
fn push_host(out: &mut String, domain: &str, base: usize) -> Result<(), AddressError> {
    let trimmed = match domain.chars().next_back() {
        Some(c) if is_dot(c) => domain.get(..domain.len() - c.len_utf8()).unwrap_or(""),
        _ => domain,
    };
    if trimmed.is_empty() {
        return Err(AddressError::EmptyDomain);
    }
    let mut ascii = true;
    for (i, c) in trimmed.char_indices() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
            continue;
        }
        if c.is_control() {
            return Err(AddressError::ControlChar {
                ch: c,
                offset: base + i,
            });
        }
        if c.is_ascii() {
            return Err(AddressError::InvalidDomainChar {
                ch: c,
                offset: base + i,
            });
        }
        ascii = false;
    }
    let start = out.len();
    if ascii {
        if trimmed.len() > MAX_DOMAIN {
            return Err(AddressError::DomainTooLong { len: trimmed.len() });
        }
        let has_a_label = check_labels(trimmed, Some(base), trimmed)?;
        out.push_str(trimmed);
        if let Some(tail) = out.get_mut(start..) {
            tail.make_ascii_lowercase();
        }
        if has_a_label {
            // Validate the A-labels (Punycode and the IDNA rules) and use the canonical form.
            let given = out.get(start..).unwrap_or("");
            let ace = idna::domain_to_ascii(given).map_err(|_| AddressError::Idna {
                domain: trimmed.to_owned(),
                reason: "an 'xn--' label is not a valid A-label",
            })?;
            if ace != given {
                check_labels(&ace, None, trimmed)?;
                out.truncate(start);
                out.push_str(&ace);
            }
        }
        return Ok(());
    }
    // Non-ASCII: bound the work (UTS #46 may drop characters, so the input can be longer
    // than its A-label form, but not without limit), report empty labels with offsets,
    // then convert.
    if trimmed.len() > 4 * MAX_DOMAIN {
        return Err(AddressError::DomainTooLong { len: trimmed.len() });
    }
    let mut label_start = 0;
    for (i, c) in trimmed.char_indices() {
        if is_dot(c) {
            if i == label_start {
                return Err(AddressError::EmptyLabel {
                    offset: base + label_start,
                });
            }
            label_start = i + c.len_utf8();
        }
    }
    if label_start == trimmed.len() {
        return Err(AddressError::EmptyLabel {
            offset: base + label_start,
        });
    }
    let ace = idna::domain_to_ascii(trimmed).map_err(|_| AddressError::Idna {
        domain: trimmed.to_owned(),
        reason: "UTS #46 processing failed (disallowed character or invalid label)",
    })?;
    let ace = ace.strip_suffix('.').unwrap_or(&ace);
    if ace.is_empty() {
        return Err(AddressError::EmptyDomain);
    }
    if ace.len() > MAX_DOMAIN {
        return Err(AddressError::DomainTooLong { len: ace.len() });
    }
    check_labels(ace, None, trimmed)?;
    out.push_str(ace);
    Ok(())
}

/// Check LDH label syntax of an ASCII host name (no trailing dot). `base` is the offset of
/// `d` in the input when `d` is the input itself, None when `d` is an IDNA result (then
/// `given` is named in errors that have no label to show). Returns whether any label is an
/// A-label (`xn--`).
fn check_labels(d: &str, base: Option<usize>, given: &str) -> Result<bool, AddressError> {
    let mut pos = 0;
    let mut a_label = false;
    for label in d.split('.') {
        if label.is_empty() {
            return Err(match base {
                Some(b) => AddressError::EmptyLabel { offset: b + pos },
                None => AddressError::Idna {
                    domain: given.to_owned(),
                    reason: "empty label after IDNA mapping",
                },
            });
        }
        if label.len() > 63 {
            return Err(AddressError::LabelTooLong {
                label: label.to_owned(),
                len: label.len(),
            });
        }
        let bytes = label.as_bytes();
        let invalid = |reason| {
            Err(AddressError::InvalidLabel {
                label: label.to_owned(),
                reason,
            })
        };
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'_' {
                return invalid("underscore is not allowed in a host name");
            }
            if !(b.is_ascii_alphanumeric() || b == b'-') {
                return match (base, char::from(b)) {
                    (Some(b0), ch) if b.is_ascii() => Err(AddressError::InvalidDomainChar {
                        ch,
                        offset: b0 + pos + i,
                    }),
                    _ => invalid("only letters, digits and hyphens are allowed"),
                };
            }
        }
        if bytes.first() == Some(&b'-') {
            return invalid("it starts with a hyphen");
        }
        if bytes.last() == Some(&b'-') {
            return invalid("it ends with a hyphen");
        }
        if bytes.len() >= 4
            && bytes
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"xn--"))
        {
            a_label = true;
        }
        pos += label.len() + 1;
    }
    Ok(a_label)
}

/// Validate an address literal `[...]` and append its canonical lower-case form.
fn push_literal(out: &mut String, domain: &str, base: usize) -> Result<(), AddressError> {
    let inner = domain
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or(AddressError::UnterminatedDomainLiteral { offset: base })?;
    if let Some((i, ch)) = inner.char_indices().find(|(_, c)| c.is_control()) {
        return Err(AddressError::ControlChar {
            ch,
            offset: base + 1 + i,
        });
    }
    let invalid = |reason| AddressError::InvalidDomainLiteral {
        literal: domain.to_owned(),
        reason,
    };
    if inner
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("ipv6:"))
    {
        let ip: Ipv6Addr = inner
            .get(5..)
            .unwrap_or("")
            .parse()
            .map_err(|_| invalid("not a valid IPv6 address"))?;
        let _ = write!(out, "[ipv6:{ip}]");
    } else if let Some(colon) = inner.find(':') {
        return Err(AddressError::UnsupportedAddressLiteral {
            tag: inner.get(..colon).unwrap_or("").to_owned(),
        });
    } else {
        let ip: Ipv4Addr = inner
            .parse()
            .map_err(|_| invalid("not a valid IPv4 address"))?;
        let _ = write!(out, "[{ip}]");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Address {
        match Address::parse(s) {
            Ok(a) => a,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn err(s: &str) -> AddressError {
        match Address::parse(s) {
            Ok(a) => panic!("{s:?} should fail, got {a:?}"),
            Err(e) => e,
        }
    }

    fn ok_path(s: &str) -> Option<Address> {
        match parse_path(s) {
            Ok(a) => a,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn path_err(s: &str) -> AddressError {
        match parse_path(s) {
            Ok(a) => panic!("{s:?} should fail, got {a:?}"),
            Err(e) => e,
        }
    }

    // --- plain addresses -----------------------------------------------------------------

    #[test]
    fn plain() {
        let a = p("alice@example.com");
        assert_eq!(a.original(), "alice@example.com");
        assert_eq!(a.local_part(), "alice");
        assert_eq!(a.domain(), "example.com");
        assert_eq!(a.key(), "alice@example.com");
        assert_eq!(a.local_key(), "alice");
        assert!(!a.needs_smtputf8());
        assert!(!a.is_domain_literal());
        assert_eq!(a.to_smtp(), "alice@example.com");
        assert_eq!(a.to_string(), "alice@example.com");
    }

    #[test]
    fn mixed_case_keeps_original() {
        let a = p("Alice.Smith+Tag@Example.COM");
        assert_eq!(a.original(), "Alice.Smith+Tag@Example.COM");
        assert_eq!(a.local_part(), "Alice.Smith+Tag");
        assert_eq!(a.domain(), "example.com");
        assert_eq!(a.key(), "alice.smith+tag@example.com");
        assert_eq!(a.local_key(), "alice.smith+tag");
        assert_eq!(a.to_smtp(), "Alice.Smith+Tag@example.com");
    }

    #[test]
    fn all_atext_specials() {
        let a = p("!#$%&'*+-/=?^_`{|}~.x@example.com");
        assert_eq!(a.local_part(), "!#$%&'*+-/=?^_`{|}~.x");
        assert_eq!(a.to_smtp(), "!#$%&'*+-/=?^_`{|}~.x@example.com");
    }

    #[test]
    fn single_label_and_numeric_domains() {
        assert_eq!(p("root@localhost").domain(), "localhost");
        assert_eq!(p("a@3com.com").domain(), "3com.com");
        assert_eq!(p("a@a-b.c0").domain(), "a-b.c0");
    }

    #[test]
    fn trailing_dot_removed() {
        let a = p("bob@Example.COM.");
        assert_eq!(a.original(), "bob@Example.COM.");
        assert_eq!(a.domain(), "example.com");
        assert_eq!(a.key(), "bob@example.com");
    }

    #[test]
    fn from_str_and_display() {
        let a: Address = "X@Y.Z".parse().unwrap();
        assert_eq!(format!("{a}"), "X@Y.Z");
        assert_eq!(
            "bad".parse::<Address>().unwrap_err(),
            AddressError::MissingAt
        );
        assert_eq!(
            format!("{a:?}"),
            "Address { original: \"X@Y.Z\", key: \"x@y.z\" }"
        );
    }

    // serde_json is available to the tests only with the `cli` feature.
    #[cfg(feature = "cli")]
    #[test]
    fn serializes_as_original() {
        let a = p("\"John Doe\"@Example.com");
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#""\"John Doe\"@Example.com""#
        );
    }

    #[test]
    fn equality_is_on_original_spelling() {
        assert_eq!(p("a@b.c"), p("a@b.c"));
        assert_ne!(p("a@b.c"), p("A@b.c"));
        assert_eq!(p("a@b.c").key(), p("A@b.c").key());
    }

    #[test]
    fn address_is_compact() {
        assert!(std::mem::size_of::<Address>() <= 32);
    }

    // --- quoted local parts -----------------------------------------------------------

    #[test]
    fn quoted_with_space() {
        let a = p("\"john doe\"@example.com");
        assert_eq!(a.original(), "\"john doe\"@example.com");
        assert_eq!(a.local_part(), "john doe");
        assert_eq!(a.local_key(), "john doe");
        assert_eq!(a.key(), "john doe@example.com");
        assert_eq!(a.to_smtp(), "\"john doe\"@example.com");
    }

    #[test]
    fn quoted_pair() {
        let a = p(r#""a\"b"@x"#);
        assert_eq!(a.local_part(), "a\"b");
        assert_eq!(a.to_smtp(), r#""a\"b"@x"#);
        let b = p(r#""a\\b"@x"#);
        assert_eq!(b.local_part(), "a\\b");
        assert_eq!(b.to_smtp(), r#""a\\b"@x"#);
        // Unnecessary escapes are decoded and not written back.
        let c = p(r#""\a\l\i\c\e"@x"#);
        assert_eq!(c.local_part(), "alice");
        assert_eq!(c.to_smtp(), "alice@x");
    }

    #[test]
    fn unnecessary_quoting_same_key() {
        let q = p("\"alice\"@x");
        let u = p("alice@x");
        assert_eq!(q.key(), u.key());
        assert_eq!(q.local_part(), "alice");
        assert_eq!(q.original(), "\"alice\"@x");
        assert_eq!(q.to_smtp(), "alice@x");
        assert_eq!(p("\"Alice\"@X").key(), "alice@x");
    }

    #[test]
    fn quoted_with_at_inside() {
        let a = p("\"a@b\"@example.com");
        assert_eq!(a.local_part(), "a@b");
        assert_eq!(a.domain(), "example.com");
        assert_eq!(a.key(), "a@b@example.com");
        assert_eq!(a.local_key(), "a@b");
        assert_eq!(a.to_smtp(), "\"a@b\"@example.com");
    }

    #[test]
    fn quoted_dots_need_quotes() {
        for (input, local) in [
            ("\".a\"@x", ".a"),
            ("\"a.\"@x", "a."),
            ("\"a..b\"@x", "a..b"),
            ("\"a,b\"@x", "a,b"),
        ] {
            let a = p(input);
            assert_eq!(a.local_part(), local);
            assert_eq!(a.to_smtp(), input);
        }
        assert_eq!(p("\"a.b\"@x").to_smtp(), "a.b@x");
    }

    #[test]
    fn quoted_utf8() {
        let a = p("\"Jöran Öst\"@example.com");
        assert_eq!(a.local_part(), "Jöran Öst");
        assert_eq!(a.local_key(), "jöran öst");
        assert!(a.needs_smtputf8());
    }

    #[test]
    fn empty_quoted_local_part_refused() {
        assert_eq!(err("\"\"@x"), AddressError::EmptyLocalPart);
    }

    #[test]
    fn quoted_errors() {
        assert_eq!(
            err("\"abc@x"),
            AddressError::UnterminatedQuote { offset: 0 }
        );
        assert_eq!(
            err(r#""a\"@x"#),
            AddressError::UnterminatedQuote { offset: 0 }
        );
        assert_eq!(
            err("\"a\"b@x"),
            AddressError::TextAfterQuote { ch: 'b', offset: 3 }
        );
        assert_eq!(
            err("\"a\"@b@x"),
            AddressError::TextAfterQuote { ch: '@', offset: 3 }
        );
        assert_eq!(
            err("\"a\tb\"@x"),
            AddressError::ControlChar {
                ch: '\t',
                offset: 2
            }
        );
        assert_eq!(
            err("\"a\\\nb\"@x"),
            AddressError::ControlChar {
                ch: '\n',
                offset: 3
            }
        );
        assert_eq!(
            err("\"a\\äb\"@x"),
            AddressError::InvalidQuotedPair {
                ch: 'ä', offset: 3
            }
        );
        assert_eq!(err("\"abc\""), AddressError::MissingAt);
    }

    // --- SMTPUTF8 ----------------------------------------------------------------------

    #[test]
    fn utf8_local_part() {
        let a = p("jöran@example.com");
        assert_eq!(a.local_part(), "jöran");
        assert_eq!(a.key(), "jöran@example.com");
        assert!(a.needs_smtputf8());
        assert_eq!(a.to_smtp(), "jöran@example.com");
    }

    #[test]
    fn utf8_local_part_case_folded() {
        let a = p("ÜNI@example.com");
        assert_eq!(a.local_part(), "ÜNI");
        assert_eq!(a.local_key(), "üni");
        assert_eq!(a.key(), "üni@example.com");
        assert_eq!(p("üni@EXAMPLE.com").key(), a.key());
        assert_eq!(p("用户@例子.广告").local_key(), "用户");
    }

    #[test]
    fn c1_control_refused_in_local_part() {
        assert_eq!(
            err("a\u{85}b@x"),
            AddressError::ControlChar {
                ch: '\u{85}',
                offset: 1
            }
        );
    }

    // --- IDN domains -------------------------------------------------------------------

    #[test]
    fn idn_domain() {
        let a = p("user@bücher.example");
        assert_eq!(a.domain(), "xn--bcher-kva.example");
        assert_eq!(a.key(), "user@xn--bcher-kva.example");
        assert_eq!(a.original(), "user@bücher.example");
        assert!(!a.needs_smtputf8());
        assert_eq!(a.to_smtp(), "user@xn--bcher-kva.example");
    }

    #[test]
    fn idn_domain_case_and_a_label_same_key() {
        let k = p("user@bücher.example").key().to_owned();
        assert_eq!(p("user@BÜCHER.example").key(), k);
        assert_eq!(p("USER@xn--bcher-kva.example").key(), k);
        assert_eq!(p("user@XN--BCHER-KVA.EXAMPLE").key(), k);
        assert_eq!(p("user@bücher.example。").key(), k);
        assert_eq!(p("user@bücher。example").key(), k);
    }

    #[test]
    fn idn_errors() {
        assert!(matches!(
            err("user@xn--zz-.example"),
            AddressError::InvalidLabel { .. }
        ));
        assert!(matches!(
            err("user@xn--a.example"),
            AddressError::Idna { .. }
        ));
        assert_eq!(
            err("user@bücher..example"),
            AddressError::EmptyLabel { offset: 13 }
        );
        assert!(matches!(
            err("user@b\u{FFFD}cher.example"),
            AddressError::Idna { .. }
        ));
        // Fullwidth low line maps to '_' under UTS #46.
        assert!(matches!(
            err("user@ü\u{FF3F}x.example"),
            AddressError::InvalidLabel { .. }
        ));
    }

    #[test]
    fn normalize_domain_values() {
        assert_eq!(normalize_domain("Example.COM").unwrap(), "example.com");
        assert_eq!(normalize_domain("example.com.").unwrap(), "example.com");
        assert_eq!(
            normalize_domain("BÜCHER.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalize_domain("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(normalize_domain(""), Err(AddressError::EmptyDomain));
        assert_eq!(normalize_domain("."), Err(AddressError::EmptyDomain));
        assert_eq!(
            normalize_domain("[192.0.2.1]"),
            Err(AddressError::DomainLiteralNotAllowed)
        );
        assert_eq!(
            normalize_domain("a_b.example"),
            Err(AddressError::InvalidLabel {
                label: "a_b".into(),
                reason: "underscore is not allowed in a host name"
            })
        );
        assert_eq!(
            normalize_domain("ex ample.com"),
            Err(AddressError::InvalidDomainChar { ch: ' ', offset: 2 })
        );
        assert_eq!(
            normalize_domain("a..b"),
            Err(AddressError::EmptyLabel { offset: 2 })
        );
        assert_eq!(
            normalize_domain(".a"),
            Err(AddressError::EmptyLabel { offset: 0 })
        );
        assert_eq!(
            normalize_domain("a.."),
            Err(AddressError::EmptyLabel { offset: 2 })
        );
    }

    #[test]
    fn normalize_domain_length_limits() {
        let label = "a".repeat(63);
        assert_eq!(normalize_domain(&label).unwrap(), label);
        let long = "a".repeat(64);
        assert_eq!(
            normalize_domain(&long),
            Err(AddressError::LabelTooLong {
                label: long.clone(),
                len: 64
            })
        );
        // 63+1+63+1+63+1+63 = 255 octets: at the limit.
        let d255 = [label.as_str(); 4].join(".");
        assert_eq!(d255.len(), 255);
        assert_eq!(normalize_domain(&d255).unwrap(), d255);
        assert_eq!(normalize_domain(&format!("{d255}.")).unwrap(), d255);
        let d256 = format!("b{d255}");
        assert!(matches!(
            normalize_domain(&d256),
            Err(AddressError::DomainTooLong { len: 256 })
        ));
        // A huge input is refused quickly and without panicking.
        assert!(matches!(
            normalize_domain(&"ü".repeat(100_000)),
            Err(AddressError::DomainTooLong { .. })
        ));
    }

    // --- domain literals ----------------------------------------------------------------

    #[test]
    fn ipv4_literal() {
        let a = p("postmaster@[192.0.2.1]");
        assert!(a.is_domain_literal());
        assert_eq!(a.domain(), "[192.0.2.1]");
        assert_eq!(a.key(), "postmaster@[192.0.2.1]");
        assert_eq!(a.to_smtp(), "postmaster@[192.0.2.1]");
    }

    #[test]
    fn ipv6_literal() {
        let a = p("Bob@[IPv6:2001:DB8::1]");
        assert!(a.is_domain_literal());
        assert_eq!(a.domain(), "[ipv6:2001:db8::1]");
        assert_eq!(a.key(), "bob@[ipv6:2001:db8::1]");
        assert_eq!(a.original(), "Bob@[IPv6:2001:DB8::1]");
        // Equivalent spellings share the key.
        assert_eq!(p("bob@[ipv6:2001:0db8:0:0:0:0:0:1]").key(), a.key());
        assert_eq!(
            p("x@[IPv6:::ffff:192.0.2.1]").domain(),
            "[ipv6:::ffff:192.0.2.1]"
        );
    }

    #[test]
    fn literal_errors() {
        assert_eq!(
            err("a@[192.0.2.1"),
            AddressError::UnterminatedDomainLiteral { offset: 2 }
        );
        assert_eq!(
            err("a@[300.0.2.1]"),
            AddressError::InvalidDomainLiteral {
                literal: "[300.0.2.1]".into(),
                reason: "not a valid IPv4 address"
            }
        );
        assert_eq!(
            err("a@[]"),
            AddressError::InvalidDomainLiteral {
                literal: "[]".into(),
                reason: "not a valid IPv4 address"
            }
        );
        assert_eq!(
            err("a@[IPv6:2001:db8::g]"),
            AddressError::InvalidDomainLiteral {
                literal: "[IPv6:2001:db8::g]".into(),
                reason: "not a valid IPv6 address"
            }
        );
        assert_eq!(
            err("a@[x400:foo]"),
            AddressError::UnsupportedAddressLiteral { tag: "x400".into() }
        );
        assert_eq!(
            err("a@[2001:db8::1]"),
            AddressError::UnsupportedAddressLiteral { tag: "2001".into() }
        );
        assert_eq!(
            err("a@[1.2.3.4\0]"),
            AddressError::ControlChar {
                ch: '\0',
                offset: 10
            }
        );
        assert_eq!(
            err("a@[1.2.3.4]x"),
            AddressError::UnterminatedDomainLiteral { offset: 2 }
        );
    }

    // --- extensions ---------------------------------------------------------------------

    #[test]
    fn extension_plus() {
        let a = p("User+Tag@example.com");
        assert_eq!(
            a.extension("+"),
            Some(Extension {
                user: "User",
                delimiter: '+',
                extension: "Tag"
            })
        );
        assert_eq!(a.base_key("+").as_deref(), Some("user@example.com"));
    }

    #[test]
    fn extension_several_delimiters_leftmost_wins() {
        let a = p("a-b+c@x");
        assert_eq!(
            a.extension("+-"),
            Some(Extension {
                user: "a",
                delimiter: '-',
                extension: "b+c"
            })
        );
        assert_eq!(a.base_key("+-").as_deref(), Some("a@x"));
        assert_eq!(
            a.extension("+"),
            Some(Extension {
                user: "a-b",
                delimiter: '+',
                extension: "c"
            })
        );
        let b = p("a+b-c@x");
        assert_eq!(b.extension("+-").map(|e| e.user), Some("a"));
        assert_eq!(b.extension("+-").map(|e| e.extension), Some("b-c"));
    }

    #[test]
    fn extension_absent() {
        let a = p("+foo@x");
        assert_eq!(a.extension("+"), None);
        assert_eq!(a.base_key("+"), None);
        let b = p("plain@x");
        assert_eq!(b.extension("+-"), None);
        assert_eq!(b.base_key("+-"), None);
        let c = p("a+b@x");
        assert_eq!(c.extension(""), None);
        assert_eq!(c.base_key(""), None);
    }

    #[test]
    fn extension_empty_and_decoded() {
        let a = p("user+@x");
        assert_eq!(
            a.extension("+"),
            Some(Extension {
                user: "user",
                delimiter: '+',
                extension: ""
            })
        );
        let q = p("\"John Doe+x y\"@X");
        assert_eq!(
            q.extension("+"),
            Some(Extension {
                user: "John Doe",
                delimiter: '+',
                extension: "x y"
            })
        );
        assert_eq!(q.base_key("+").as_deref(), Some("john doe@x"));
        let u = p("ÜNI+Bar@x");
        assert_eq!(u.base_key("+").as_deref(), Some("üni@x"));
    }

    // --- with_local_part --------------------------------------------------------------

    #[test]
    fn with_local_part() {
        let a = p("alice+tag@Bücher.example");
        let b = a.with_local_part("bob").unwrap();
        assert_eq!(b.original(), "bob@Bücher.example");
        assert_eq!(b.key(), "bob@xn--bcher-kva.example");
        let c = a.with_local_part("john doe").unwrap();
        assert_eq!(c.original(), "\"john doe\"@Bücher.example");
        assert_eq!(c.local_part(), "john doe");
        let d = a.with_local_part("a\"b").unwrap();
        assert_eq!(d.local_part(), "a\"b");
        assert_eq!(d.to_smtp(), r#""a\"b"@xn--bcher-kva.example"#);
        assert_eq!(a.with_local_part(""), Err(AddressError::EmptyLocalPart));
        assert_eq!(
            a.with_local_part("a\nb"),
            Err(AddressError::ControlChar {
                ch: '\n',
                offset: 1
            })
        );
        assert_eq!(
            a.with_local_part(&"x".repeat(65)),
            Err(AddressError::LocalPartTooLong { len: 65 })
        );
        assert_eq!(
            a.with_local_part(&" ".repeat(63)),
            Err(AddressError::LocalPartTooLong { len: 65 })
        );
        let lit = p("x@[192.0.2.1]").with_local_part("y").unwrap();
        assert_eq!(lit.key(), "y@[192.0.2.1]");
        assert!(lit.is_domain_literal());
    }

    // --- length limits -----------------------------------------------------------------

    #[test]
    fn local_part_limit() {
        let at = format!("{}@x", "a".repeat(64));
        assert_eq!(p(&at).local_part().len(), 64);
        assert_eq!(
            err(&format!("{}@x", "a".repeat(65))),
            AddressError::LocalPartTooLong { len: 65 }
        );
        assert_eq!(
            err(&format!("{}@x", "a".repeat(70))),
            AddressError::LocalPartTooLong { len: 70 }
        );
        // The quotes count: 62 characters plus 2 quotes is 64.
        assert!(Address::parse(&format!("\"{}\"@x", " ".repeat(62))).is_ok());
        assert_eq!(
            err(&format!("\"{}\"@x", " ".repeat(63))),
            AddressError::LocalPartTooLong { len: 65 }
        );
        // Octets, not characters: 32 two-octet characters are 64 octets.
        assert!(Address::parse(&format!("{}@x", "é".repeat(32))).is_ok());
        assert_eq!(
            err(&format!("{}a@x", "é".repeat(32))),
            AddressError::LocalPartTooLong { len: 65 }
        );
    }

    #[test]
    fn path_limit() {
        // local 64 + '@' + domain 189 = 254 octets, 256 with the brackets.
        let label = "d".repeat(63);
        let domain = format!("{label}.{label}.{}", "d".repeat(61));
        assert_eq!(domain.len(), 189);
        let at_limit = format!("{}@{domain}", "l".repeat(64));
        assert_eq!(at_limit.len(), 254);
        assert_eq!(p(&at_limit).original().len(), 254);
        assert!(parse_path(&format!("<{at_limit}>")).unwrap().is_some());
        let over = format!("{}@{domain}x", "l".repeat(64));
        assert_eq!(err(&over), AddressError::PathTooLong { len: 257 });
        assert_eq!(
            path_err(&format!("<{over}>")),
            AddressError::PathTooLong { len: 257 }
        );
    }

    #[test]
    fn domain_limit_counted_on_a_labels() {
        // "ü." is 3 octets given but "xn--tda." is 8 in A-label form.
        // In a mailbox the path limit binds first: "x@" + 252 + brackets is 256.
        let given = format!("x@{}abcd", "ü.".repeat(31));
        assert_eq!(given.len(), 2 + 31 * 3 + 4);
        assert_eq!(p(&given).domain().len(), 252);
        let given = format!("x@{}abcde", "ü.".repeat(31));
        assert_eq!(err(&given), AddressError::PathTooLong { len: 257 });
        let given = format!("x@{}abcdefgh", "ü.".repeat(31));
        assert_eq!(err(&given), AddressError::DomainTooLong { len: 256 });
    }

    #[test]
    fn smtp_form_path_limit() {
        // The given (U-label) form fits, the A-label form would exceed the path limit.
        let s = format!("{}@{}a", "l".repeat(64), "ü.".repeat(30));
        assert_eq!(s.len(), 64 + 1 + 91);
        assert_eq!(
            err(&s),
            AddressError::PathTooLong {
                len: 64 + 1 + 241 + 2
            }
        );
    }

    #[test]
    fn label_limit() {
        let ok = format!("x@{}.com", "a".repeat(63));
        assert!(Address::parse(&ok).is_ok());
        let long = "a".repeat(64);
        assert_eq!(
            err(&format!("x@{long}.com")),
            AddressError::LabelTooLong {
                label: long,
                len: 64
            }
        );
    }

    #[test]
    fn huge_inputs_do_not_panic() {
        let big = "a".repeat(1 << 20);
        assert_eq!(
            err(&format!("{big}@x")),
            AddressError::LocalPartTooLong { len: 1 << 20 }
        );
        assert_eq!(
            err(&format!("a@{big}")),
            AddressError::PathTooLong { len: (1 << 20) + 4 }
        );
        assert_eq!(err(&big), AddressError::MissingAt);
        assert_eq!(
            err(&format!("\"{big}")),
            AddressError::UnterminatedQuote { offset: 0 }
        );
        assert!(parse_path(&format!("<{big}>")).is_err());
        assert!(normalize_domain(&big).is_err());
        let soft = format!("a@x{}y.com", "\u{AD}".repeat(100_000));
        assert!(Address::parse(&soft).is_err());
    }

    // --- malformed ---------------------------------------------------------------------

    #[test]
    fn malformed_structure() {
        assert_eq!(err(""), AddressError::Empty);
        assert_eq!(err("alice"), AddressError::MissingAt);
        assert_eq!(err("@example.com"), AddressError::EmptyLocalPart);
        assert_eq!(err("@"), AddressError::EmptyLocalPart);
        assert_eq!(err("alice@"), AddressError::EmptyDomain);
        assert_eq!(err("alice@."), AddressError::EmptyDomain);
        assert_eq!(
            err("<alice@x>"),
            AddressError::InvalidLocalChar { ch: '<', offset: 0 }
        );
    }

    #[test]
    fn malformed_dots() {
        assert_eq!(err("a..b@x"), AddressError::ConsecutiveDots { offset: 2 });
        assert_eq!(err(".ab@x"), AddressError::LeadingDot { offset: 0 });
        assert_eq!(err("ab.@x"), AddressError::TrailingDot { offset: 2 });
        assert_eq!(err(".@x"), AddressError::LeadingDot { offset: 0 });
    }

    #[test]
    fn malformed_characters() {
        assert_eq!(
            err("alice,b@x"),
            AddressError::InvalidLocalChar { ch: ',', offset: 5 }
        );
        assert_eq!(
            err("a b@x"),
            AddressError::InvalidLocalChar { ch: ' ', offset: 1 }
        );
        assert_eq!(
            err("a\"b@x"),
            AddressError::InvalidLocalChar { ch: '"', offset: 1 }
        );
        assert_eq!(
            err("a\\b@x"),
            AddressError::InvalidLocalChar {
                ch: '\\',
                offset: 1
            }
        );
        // The last '@' splits, so an earlier one is a local-part character.
        assert_eq!(
            err("a@b@x"),
            AddressError::InvalidLocalChar { ch: '@', offset: 1 }
        );
        assert_eq!(
            err("a@ex!ample.com"),
            AddressError::InvalidDomainChar { ch: '!', offset: 4 }
        );
        assert_eq!(
            err("a@example.com "),
            AddressError::InvalidDomainChar {
                ch: ' ',
                offset: 13
            }
        );
        assert_eq!(
            err("a@exa\"mple"),
            AddressError::InvalidDomainChar { ch: '"', offset: 5 }
        );
        assert_eq!(
            err("a@b]"),
            AddressError::InvalidDomainChar { ch: ']', offset: 3 }
        );
    }

    #[test]
    fn malformed_control_characters() {
        assert_eq!(
            err("a\0b@x"),
            AddressError::ControlChar {
                ch: '\0',
                offset: 1
            }
        );
        assert_eq!(
            err("ab@x\0"),
            AddressError::ControlChar {
                ch: '\0',
                offset: 4
            }
        );
        assert_eq!(
            err("ab@x\r\n"),
            AddressError::ControlChar {
                ch: '\r',
                offset: 4
            }
        );
        assert_eq!(
            err("a\nb@x"),
            AddressError::ControlChar {
                ch: '\n',
                offset: 1
            }
        );
        assert_eq!(
            err("ab\x7f@x"),
            AddressError::ControlChar {
                ch: '\x7f',
                offset: 2
            }
        );
        assert_eq!(
            err("ab@bü\u{9b}cher.de"),
            AddressError::ControlChar {
                ch: '\u{9b}',
                offset: 6
            }
        );
    }

    #[test]
    fn malformed_domain_labels() {
        assert_eq!(err("a@a..b"), AddressError::EmptyLabel { offset: 4 });
        assert_eq!(err("a@.b"), AddressError::EmptyLabel { offset: 2 });
        assert_eq!(
            err("a@-ab.com"),
            AddressError::InvalidLabel {
                label: "-ab".into(),
                reason: "it starts with a hyphen"
            }
        );
        assert_eq!(
            err("a@ab-.com"),
            AddressError::InvalidLabel {
                label: "ab-".into(),
                reason: "it ends with a hyphen"
            }
        );
        assert_eq!(
            err("a@a_b.com"),
            AddressError::InvalidLabel {
                label: "a_b".into(),
                reason: "underscore is not allowed in a host name"
            }
        );
    }

    #[test]
    fn error_messages() {
        assert_eq!(err("").to_string(), "empty address");
        assert_eq!(
            err("alice").to_string(),
            "missing '@' between local part and domain"
        );
        assert_eq!(
            err(&format!("{}@x", "a".repeat(70))).to_string(),
            "local part is 70 octets, the limit is 64"
        );
        assert_eq!(
            err("alice,b@x").to_string(),
            "invalid character ',' at offset 5 in local part"
        );
        assert_eq!(
            err("\"abc@x").to_string(),
            "unterminated quoted string starting at offset 0"
        );
        assert_eq!(
            err("a@a_b.com").to_string(),
            "domain label 'a_b' is not a valid host name label: underscore is not allowed in a host name"
        );
        assert_eq!(
            err("a\0@x").to_string(),
            "control character '\\0' at offset 1"
        );
        assert!(
            err("user@xn--a.example")
                .to_string()
                .starts_with("invalid IDN domain 'xn--a.example': ")
        );
    }

    // --- parse_path ---------------------------------------------------------------------

    #[test]
    fn path_null() {
        assert_eq!(parse_path("<>"), Ok(None));
    }

    #[test]
    fn path_plain() {
        let a = ok_path("<Alice@Example.com>").unwrap();
        assert_eq!(a.original(), "Alice@Example.com");
        assert_eq!(a.key(), "alice@example.com");
        let q = ok_path("<\"a>b\"@x>").unwrap();
        assert_eq!(q.local_part(), "a>b");
    }

    #[test]
    fn path_source_route() {
        let a = ok_path("<@a.example,@b.example:user@c.example>").unwrap();
        assert_eq!(a.original(), "user@c.example");
        assert_eq!(a.key(), "user@c.example");
        let b = ok_path("<@relay:\"x:y\"@z>").unwrap();
        assert_eq!(b.local_part(), "x:y");
        assert_eq!(
            path_err("<@a.example user@c>"),
            AddressError::InvalidSourceRoute {
                offset: 1,
                reason: "missing ':' after the source route"
            }
        );
        assert_eq!(
            path_err("<@a,b:user@c>"),
            AddressError::InvalidSourceRoute {
                offset: 4,
                reason: "each hop must be '@' followed by a domain"
            }
        );
        assert_eq!(
            path_err("<@:user@c>"),
            AddressError::InvalidSourceRoute {
                offset: 2,
                reason: "empty domain in source route"
            }
        );
        assert_eq!(
            path_err("<@a_b:user@c>"),
            AddressError::InvalidLabel {
                label: "a_b".into(),
                reason: "underscore is not allowed in a host name"
            }
        );
        assert_eq!(
            path_err("<@a:>"),
            AddressError::InvalidSourceRoute {
                offset: 4,
                reason: "no mailbox after the source route"
            }
        );
        // Offsets in the mailbox are offsets in the path.
        assert_eq!(
            path_err("<@a,@b:us,er@c>"),
            AddressError::InvalidLocalChar { ch: ',', offset: 9 }
        );
    }

    #[test]
    fn path_brackets() {
        assert_eq!(path_err(""), AddressError::Empty);
        assert_eq!(path_err("a@b"), AddressError::MissingOpenBracket);
        assert_eq!(path_err("a@b>"), AddressError::MissingOpenBracket);
        assert_eq!(path_err("<a@b"), AddressError::MissingCloseBracket);
        assert_eq!(path_err("<"), AddressError::MissingCloseBracket);
        assert_eq!(
            path_err("<a@b> SIZE=100"),
            AddressError::TrailingCharacters { offset: 5 }
        );
        assert_eq!(
            path_err("<a@b> "),
            AddressError::TrailingCharacters { offset: 5 }
        );
        assert_eq!(path_err(" <a@b>"), AddressError::MissingOpenBracket);
        assert_eq!(
            path_err("<a@b>>"),
            AddressError::InvalidDomainChar { ch: '>', offset: 4 }
        );
        assert_eq!(
            path_err("< a@b>"),
            AddressError::InvalidLocalChar { ch: ' ', offset: 1 }
        );
        assert_eq!(path_err("<a>"), AddressError::MissingAt);
    }

    // --- round trips ----------------------------------------------------------------------

    const TRICKY: &[&str] = &[
        "alice@example.com",
        "Alice.Smith+Tag@Example.COM",
        "\"alice\"@x",
        "\"john doe\"@example.com",
        r#""a\"b"@x"#,
        r#""a\\b"@x"#,
        r#""\a\b\c"@x"#,
        "\"a@b\"@example.com",
        "\".a\"@x",
        "\"a.\"@x",
        "\"a..b\"@x",
        "\"a.b\"@x",
        "\" \"@x",
        "\"(comment)\"@x",
        "jöran@example.com",
        "ÜNI@example.com",
        "\"Jöran Öst\"@Bücher.Example.",
        "ΟΔΟΣ@example.com",
        "İstanbul@example.com",
        "user@bücher.example",
        "user@BÜCHER.example",
        "user@XN--BCHER-KVA.example",
        "x@例子.广告",
        "x@bücher。example。",
        "postmaster@[192.0.2.1]",
        "Bob@[IPv6:2001:DB8::1]",
        "x@[IPv6:::ffff:192.0.2.1]",
        "!#$%&'*+-/=?^_`{|}~@x",
        "a-b+c@x",
        "+foo@x",
    ];

    #[test]
    fn to_smtp_round_trips() {
        for input in TRICKY {
            let a = p(input);
            let smtp = a.to_smtp();
            let b = p(&smtp);
            assert_eq!(b.key(), a.key(), "{input:?} -> {smtp:?}");
            assert_eq!(b.local_part(), a.local_part(), "{input:?}");
            assert_eq!(b.to_smtp(), smtp, "{input:?}");
            assert_eq!(
                format!("{}@{}", a.local_key(), a.domain()),
                a.key(),
                "{input:?}"
            );
            let c = a.with_local_part(a.local_part()).unwrap();
            assert_eq!(c.key(), a.key(), "{input:?}");
            let path = ok_path(&format!("<{input}>")).unwrap();
            assert_eq!(path, a);
        }
    }

    /// A small deterministic fuzz: random strings over an alphabet rich in the characters
    /// that matter must never panic, and whatever parses must round-trip through to_smtp.
    #[test]
    fn pseudo_random_inputs() {
        const ALPHABET: &[&str] = &[
            "a", "B", "0", "-", "_", ".", "@", "\"", "\\", " ", "+", "[", "]", ":", "<", ">", ",",
            "\0", "\n", "ü", "Ü", "。", "xn--", "ipv6:", "1", "ß", "\u{AD}", "Σ", "é", "\u{200D}",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let mut s = String::new();
            for _ in 0..len {
                s.push_str(ALPHABET[(next() % ALPHABET.len() as u64) as usize]);
            }
            if let Ok(a) = Address::parse(&s) {
                let smtp = a.to_smtp();
                let b = Address::parse(&smtp)
                    .unwrap_or_else(|e| panic!("{s:?} -> {smtp:?} does not reparse: {e}"));
                assert_eq!(b.key(), a.key(), "{s:?}");
                let _ = a.extension("+-");
                let _ = a.base_key("+-");
            }
            let _ = parse_path(&s);
            if let Ok(d) = normalize_domain(&s) {
                assert_eq!(normalize_domain(&d).as_deref(), Ok(d.as_str()), "{s:?}");
            }
        }
    }
}
