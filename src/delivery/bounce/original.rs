//! The third part of a DSN: the original message or its header section (RFC 3462/6522),
//! with a media type that is valid for the bytes it carries.
//!
//! - Headers (delay notices, `RET=HDRS`, no `RET`, or an original over [`MAX_FULL`]):
//!   `text/rfc822-headers`, 7bit when ASCII. 8-bit headers are `message/global-headers`
//!   (RFC 6533) in an internationalised report (one with UTF-8 addresses) when they are
//!   valid UTF-8, and `text/rfc822-headers` declared `8bit` otherwise. At most [`MAX_HEADERS`] octets, cut between two fields.
//! - Full (`RET=FULL`): `message/rfc822`, declared `8bit` when any byte is; `message/global`
//!   when an internationalised report returns UTF-8 headers.
//!
//! The spool keeps a message as the client sent it, which may have bare LF or CR line
//! ends; the returned copy has every line end made CRLF, so the DSN is well-formed.
//! Nothing else is changed (long lines and NUL bytes stay).

use std::borrow::Cow;

/// Largest original returned in full (`RET=FULL`); a larger one is returned as headers.
pub const MAX_FULL: usize = 10 << 20;
/// Largest header section returned.
pub const MAX_HEADERS: usize = 256 << 10;

/// What goes into the third part.
#[derive(Debug)]
pub(super) struct Attachment<'a> {
    /// `text/rfc822-headers`, `message/rfc822`, ...
    pub(super) content_type: &'static str,
    /// Human description of the part.
    pub(super) description: &'static str,
    /// Whether it must be declared `Content-Transfer-Encoding: 8bit`.
    pub(super) eight_bit: bool,
    /// Whether the whole message is returned.
    pub(super) full: bool,
    /// The full message was asked for and is larger than [`MAX_FULL`].
    pub(super) too_big: bool,
    /// The bytes, CRLF line ends, ending in CRLF unless empty.
    pub(super) bytes: Cow<'a, [u8]>,
}

/// Choose and prepare the third part of a DSN for `original`.
pub(super) fn attachment(original: &[u8], want_full: bool, global: bool) -> Attachment<'_> {
    let too_big = want_full && original.len() > MAX_FULL;
    if want_full && !too_big {
        let bytes = normalize_crlf(original);
        let headers = header_section(&bytes);
        let utf8_headers = !headers.is_ascii() && std::str::from_utf8(headers).is_ok();
        let content_type = if global && utf8_headers {
            "message/global"
        } else {
            "message/rfc822"
        };
        let eight_bit = !bytes.is_ascii();
        return Attachment {
            content_type,
            description: "Undelivered message",
            eight_bit,
            full: true,
            too_big,
            bytes,
        };
    }
    let head = header_section(original);
    // Normalizing only the header section keeps a large body out of memory.
    let head = normalize_crlf(head);
    let head = cap_headers(head);
    let eight_bit = !head.is_ascii();
    let content_type = if eight_bit && global && std::str::from_utf8(&head).is_ok() {
        "message/global-headers"
    } else {
        "text/rfc822-headers"
    };
    Attachment {
        content_type,
        description: "Undelivered message headers",
        eight_bit,
        full: false,
        too_big,
        bytes: head,
    }
}

/// The header section: everything before the first empty line (its line ends included),
/// or the whole message when it has none. Bare LF counts as a line end.
pub(super) fn header_section(msg: &[u8]) -> &[u8] {
    let mut line_start = 0;
    for (i, &b) in msg.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        let line = msg.get(line_start..i).unwrap_or(&[]);
        if line.is_empty() || line == b"\r" {
            return msg.get(..line_start).unwrap_or(msg);
        }
        line_start = i + 1;
    }
    msg
}

/// Every line end as CRLF (bare LF and bare CR included), and a final CRLF on a
/// non-empty text that lacks one.
pub(super) fn normalize_crlf(bytes: &[u8]) -> Cow<'_, [u8]> {
    let mut clean = true;
    let mut prev = 0u8;
    for (i, &b) in bytes.iter().enumerate() {
        let next = bytes.get(i + 1).copied();
        if (b == b'\n' && prev != b'\r') || (b == b'\r' && next != Some(b'\n')) {
            clean = false;
            break;
        }
        prev = b;
    }
    if clean && (bytes.is_empty() || bytes.ends_with(b"\r\n")) {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32 + 2);
    let mut iter = bytes.iter().copied().peekable();
    while let Some(b) = iter.next() {
        match b {
            b'\r' => {
                if iter.peek() == Some(&b'\n') {
                    iter.next();
                }
                out.extend_from_slice(b"\r\n");
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    Cow::Owned(out)
}

/// At most [`MAX_HEADERS`] octets, cut before a field (a line not starting with space or
/// tab), so no field is returned half.
fn cap_headers(head: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    if head.len() <= MAX_HEADERS {
        return head;
    }
    let mut cut = 0;
    let mut i = 0;
    while let Some(pos) = head
        .get(i..MAX_HEADERS)
        .and_then(|w| w.windows(2).position(|p| p == b"\r\n"))
    {
        let end = i + pos + 2;
        if end > MAX_HEADERS {
            break;
        }
        if !matches!(head.get(end), Some(b' ' | b'\t')) {
            cut = end;
        }
        i = end;
    }
    match head {
        Cow::Borrowed(b) => Cow::Borrowed(b.get(..cut).unwrap_or(&[])),
        Cow::Owned(mut v) => {
            v.truncate(cut);
            Cow::Owned(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_sections() {
        assert_eq!(
            header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_section(b"A: 1\nB: 2\n\nbody\n"), b"A: 1\nB: 2\n");
        assert_eq!(header_section(b"\r\nbody\r\n"), b"");
        assert_eq!(header_section(b"A: 1\r\n"), b"A: 1\r\n");
        assert_eq!(header_section(b""), b"");
    }

    #[test]
    fn line_ends_become_crlf() {
        assert!(matches!(normalize_crlf(b"a\r\nb\r\n"), Cow::Borrowed(_)));
        assert_eq!(
            &normalize_crlf(b"a\nb\rc\r\n\n")[..],
            b"a\r\nb\r\nc\r\n\r\n"
        );
        assert_eq!(&normalize_crlf(b"a")[..], b"a\r\n");
        assert_eq!(&normalize_crlf(b"a\r")[..], b"a\r\n");
        assert_eq!(&normalize_crlf(b"")[..], b"");
    }

    #[test]
    fn media_types() {
        let ascii = b"Subject: hi\r\n\r\nbody\r\n";
        let a = attachment(ascii, false, false);
        assert_eq!(
            (a.content_type, a.eight_bit, a.full),
            ("text/rfc822-headers", false, false)
        );
        assert_eq!(&a.bytes[..], b"Subject: hi\r\n");
        let a = attachment(ascii, true, false);
        assert_eq!(
            (a.content_type, a.eight_bit, a.full),
            ("message/rfc822", false, true)
        );
        assert_eq!(&a.bytes[..], ascii);

        let body8 = "Subject: hi\r\n\r\nb\u{f6}dy\r\n".as_bytes();
        let a = attachment(body8, true, false);
        assert_eq!((a.content_type, a.eight_bit), ("message/rfc822", true));
        let a = attachment(body8, false, false);
        assert_eq!(
            (a.content_type, a.eight_bit),
            ("text/rfc822-headers", false)
        );

        let head8 = "Subject: gr\u{fc}\u{df}e\r\n\r\nbody\r\n".as_bytes();
        assert_eq!(
            attachment(head8, false, true).content_type,
            "message/global-headers"
        );
        assert_eq!(
            attachment(head8, false, false).content_type,
            "text/rfc822-headers"
        );
        assert!(attachment(head8, false, false).eight_bit);
        assert_eq!(attachment(head8, true, true).content_type, "message/global");
        assert_eq!(
            attachment(head8, true, false).content_type,
            "message/rfc822"
        );
        let latin1 = b"Subject: gr\xfc\xdfe\r\n\r\nbody\r\n";
        assert_eq!(
            attachment(latin1, false, true).content_type,
            "text/rfc822-headers"
        );
    }

    #[test]
    fn large_originals_return_headers() {
        let mut big = b"Subject: big\r\n\r\n".to_vec();
        big.resize(MAX_FULL + 1, b'x');
        let a = attachment(&big, true, false);
        assert!(!a.full && a.too_big);
        assert_eq!(&a.bytes[..], b"Subject: big\r\n");
    }

    #[test]
    fn huge_header_sections_are_cut_between_fields() {
        let mut msg = Vec::new();
        let mut n = 0;
        while msg.len() < MAX_HEADERS + 1000 {
            msg.extend_from_slice(
                format!("X-{n}: {}\r\n\tcontinued\r\n", "v".repeat(50)).as_bytes(),
            );
            n += 1;
        }
        msg.extend_from_slice(b"\r\nbody\r\n");
        let a = attachment(&msg, false, false);
        assert!(a.bytes.len() <= MAX_HEADERS && a.bytes.len() > MAX_HEADERS - 200);
        assert!(a.bytes.ends_with(b"\tcontinued\r\n"));
        assert!(msg.starts_with(&a.bytes));
    }
}
