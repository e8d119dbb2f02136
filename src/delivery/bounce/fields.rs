//! The envelope parameters a DSN depends on (RFC 3461 `NOTIFY`, `RET`, `ENVID`, `ORCPT`),
//! and the text rules of its fields: one line, folded under 78 columns, never over the
//! 998-octet limit, ASCII unless the report is an internationalised one (RFC 6533).

use std::borrow::Cow;

use super::NoticeKind;

/// The longest diagnostic text kept, in octets; a longer reply is cut (with `...`), so
/// no word of a folded field can pass the line limit.
pub(super) const MAX_DETAIL: usize = 900;

/// Soft width of folded lines.
const WIDTH: usize = 78;

/// The value of an ESMTP parameter, matched case-insensitively.
pub(super) fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether a recipient with these RCPT parameters wants a notice of `kind` (RFC 3461
/// §4.1): `NOTIFY=NEVER` wants none; a `NOTIFY` list wants what it names; no `NOTIFY`
/// wants failures and delays.
pub(super) fn notify_allows(params: &[(String, String)], kind: NoticeKind) -> bool {
    let Some(notify) = param(params, "NOTIFY") else {
        return true;
    };
    let wanted = match kind {
        NoticeKind::Failure => "FAILURE",
        NoticeKind::Delay => "DELAY",
    };
    let mut words = notify.split(',').map(str::trim);
    if words.clone().any(|w| w.eq_ignore_ascii_case("NEVER")) {
        return false;
    }
    words.any(|w| w.eq_ignore_ascii_case(wanted))
}

/// `RET=FULL` on MAIL FROM.
pub(super) fn wants_full(params: &[(String, String)]) -> bool {
    param(params, "RET").is_some_and(|v| v.trim().eq_ignore_ascii_case("FULL"))
}

/// An ORCPT value as (address type, address). The front end stores it xtext-decoded
/// without its type (`Bob@example.com`, which smtp-proto only accepts as `rfc822`); the
/// wire form `rfc822;Bob+2B1@example.com` is accepted too and decoded here.
pub(super) fn orcpt(value: &str) -> (Cow<'_, str>, Cow<'_, str>) {
    if let Some((kind, rest)) = value.split_once(';')
        && !kind.is_empty()
        && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        let kind = kind.to_ascii_lowercase();
        let address = if kind == "rfc822" {
            xtext_decode(rest.trim())
        } else {
            Cow::Borrowed(rest.trim())
        };
        return (Cow::Owned(kind), address);
    }
    (Cow::Borrowed("rfc822"), Cow::Borrowed(value))
}

/// Decode RFC 3461 xtext (`+HH` is the byte HH). Bytes that do not form UTF-8 are shown
/// as U+FFFD; a `+` not followed by two hex digits is kept as it is.
pub(super) fn xtext_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'+', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// An address field value (`Final-Recipient`, `Original-Recipient`): `rfc822; ADDR` for
/// an ASCII address (control characters as xtext `+HH`), `utf-8; ADDR` in RFC 6533
/// utf-8-addr-unitext form otherwise (only in an internationalised report).
pub(super) fn address_field(kind: &str, address: &str) -> String {
    if kind == "rfc822" && address.is_ascii() {
        let mut out = String::from("rfc822; ");
        for c in address.chars() {
            if c.is_ascii_control() {
                out.push_str(&format!("+{:02X}", u32::from(c)));
            } else {
                out.push(c);
            }
        }
        return out;
    }
    if kind == "rfc822" || kind == "utf-8" {
        return format!("utf-8; {}", unitext(address));
    }
    // Another address type: shown as given, on one line.
    format!("{}; {}", kind, one_line(address, true))
}

/// RFC 6533 utf-8-addr-unitext: non-ASCII as UTF-8; controls, space, `\`, `+` and `=`
/// as `\x{HH}`.
fn unitext(address: &str) -> String {
    let mut out = String::with_capacity(address.len());
    for c in address.chars() {
        if c.is_control() || matches!(c, ' ' | '\\' | '+' | '=') {
            out.push_str(&format!("\\x{{{:X}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// True when the address needs an internationalised report.
pub(super) fn needs_utf8(address: &str) -> bool {
    !address.is_ascii()
}

/// One printable line: control characters become spaces, runs of spaces one space, and
/// (unless `utf8`) non-ASCII characters `?`.
pub(super) fn one_line(s: &str, utf8: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if c.is_control() {
            ' '
        } else if !utf8 && !c.is_ascii() {
            '?'
        } else {
            c
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    let kept = out.trim_end().len();
    out.truncate(kept);
    out
}

/// `s` cut to at most `max` octets on a character boundary, with `...` when cut.
pub(super) fn clip(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}...", s.get(..end).unwrap_or("")))
}

/// Append a header field `name: value` folded at spaces (continuation lines start with
/// a space), ending in CRLF. Words are never split: callers keep them under
/// [`MAX_DETAIL`] octets, so every line stays under 998.
pub(super) fn push_field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    let mut col = name.len() + 1;
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        if col + 1 + word.len() > WIDTH && col > name.len() + 1 {
            out.push_str("\r\n");
            col = 0;
        }
        out.push(' ');
        out.push_str(word);
        col += 1 + word.len();
    }
    out.push_str("\r\n");
}

/// Append `text` as body lines wrapped at spaces, the first line after `first`, the rest
/// indented by `indent` spaces; ends in CRLF.
pub(super) fn push_wrapped(out: &mut String, first: &str, indent: usize, text: &str) {
    out.push_str(first);
    let mut col = first.chars().count();
    let mut at_start = true;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let len = word.chars().count();
        if !at_start && col + 1 + len > WIDTH {
            out.push_str("\r\n");
            out.extend(std::iter::repeat_n(' ', indent));
            col = indent;
        } else if !at_start || !first.is_empty() && !first.ends_with(' ') {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += len;
        at_start = false;
    }
    out.push_str("\r\n");
}

/// Whether `s` is an enhanced status code `C.S.D` (RFC 3463) of class 2, 4 or 5.
pub(super) fn is_status(s: &str) -> bool {
    let mut parts = s.split('.');
    let (Some(c), Some(sub), Some(detail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |p: &str, max: usize| {
        !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit())
    };
    matches!(c, "2" | "4" | "5") && digits(sub, 3) && digits(detail, 3)
}

/// The host part of a result's `remote` (`mx1.example.com[192.0.2.1]:25` →
/// `mx1.example.com`); the address when there is no name; the whole text otherwise.
pub(super) fn remote_host(remote: &str) -> &str {
    match remote.split_once('[') {
        Some(("", rest)) => rest.split_once(']').map(|(ip, _)| ip).unwrap_or(rest),
        Some((host, _)) => host,
        None => remote,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn notify_rules() {
        use NoticeKind::{Delay, Failure};
        let none = params(&[]);
        assert!(notify_allows(&none, Failure) && notify_allows(&none, Delay));
        let never = params(&[("NOTIFY", "NEVER")]);
        assert!(!notify_allows(&never, Failure) && !notify_allows(&never, Delay));
        let success = params(&[("notify", "SUCCESS")]);
        assert!(!notify_allows(&success, Failure) && !notify_allows(&success, Delay));
        let failure = params(&[("NOTIFY", "success,failure")]);
        assert!(notify_allows(&failure, Failure) && !notify_allows(&failure, Delay));
        let delay = params(&[("NOTIFY", "DELAY")]);
        assert!(!notify_allows(&delay, Failure) && notify_allows(&delay, Delay));
    }

    #[test]
    fn orcpt_forms() {
        let (k, a) = orcpt("Bob@Example.COM");
        assert_eq!((k.as_ref(), a.as_ref()), ("rfc822", "Bob@Example.COM"));
        let (k, a) = orcpt("RFC822;bob+2Bnews@example.com");
        assert_eq!((k.as_ref(), a.as_ref()), ("rfc822", "bob+news@example.com"));
        let (k, a) = orcpt("x400;/G=Bob/");
        assert_eq!((k.as_ref(), a.as_ref()), ("x400", "/G=Bob/"));
        assert_eq!(xtext_decode("a+2"), "a+2");
        assert_eq!(xtext_decode("+C3+A9t+E9"), "\u{e9}t\u{fffd}");
    }

    #[test]
    fn address_fields() {
        assert_eq!(address_field("rfc822", "bob@x"), "rfc822; bob@x");
        assert_eq!(address_field("rfc822", "b\r\nb@x"), "rfc822; b+0D+0Ab@x");
        assert_eq!(
            address_field("rfc822", "j\u{f6}rg+a=b@x"),
            "utf-8; j\u{f6}rg\\x{2B}a\\x{3D}b@x"
        );
    }

    #[test]
    fn folding_keeps_lines_short() {
        let mut out = String::new();
        let long = "word ".repeat(100);
        push_field(&mut out, "Diagnostic-Code", &format!("smtp; {long}"));
        for line in out.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(line.len() <= WIDTH, "{line:?}");
        }
        assert!(out.lines().skip(1).all(|l| l.starts_with(' ')));
        let mut out = String::new();
        push_field(&mut out, "X", &"a".repeat(MAX_DETAIL));
        assert_eq!(out.len(), 2 + 1 + MAX_DETAIL + 2);
    }

    #[test]
    fn wrapping_body_text() {
        let mut out = String::new();
        push_wrapped(&mut out, "<bob@x>:", 4, &"word ".repeat(30));
        let lines: Vec<&str> = out.trim_end().split("\r\n").collect();
        assert!(lines.len() > 1);
        assert!(lines[0].starts_with("<bob@x>: word"));
        assert!(lines[1..].iter().all(|l| l.starts_with("    word")));
    }

    #[test]
    fn one_line_and_clip() {
        assert_eq!(one_line(" a\r\n b\tc\u{e9} ", false), "a b c?");
        assert_eq!(one_line("c\u{e9}", true), "c\u{e9}");
        assert_eq!(clip("\u{e9}\u{e9}\u{e9}", 4), "...");
        assert_eq!(clip("\u{e9}\u{e9}\u{e9}", 5), "\u{e9}...");
        assert_eq!(clip("abcdef", 5), "ab...");
        assert_eq!(clip("abc", 5), "abc");
    }

    #[test]
    fn statuses_and_hosts() {
        assert!(is_status("5.1.1") && is_status("4.4.100"));
        assert!(!is_status("6.1.1") && !is_status("5.1") && !is_status("5.1.1.1"));
        assert!(!is_status("5.a.1") && !is_status("5..1"));
        assert_eq!(
            remote_host("mx1.example.com[192.0.2.1]:25"),
            "mx1.example.com"
        );
        assert_eq!(remote_host("[192.0.2.1]:25"), "192.0.2.1");
        assert_eq!(remote_host("unix:/run/lmtp"), "unix:/run/lmtp");
    }
}
