//! The `Received:` field the gateway prepends (RFC 5321 §4.4), with the by-clause the
//! loop check recognises as our own stamp, the TLS details, the queue id and the table
//! version; and an RFC 5322 date without a calendar crate.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::routing::hops::own_stamp_token;

/// What goes into one `Received:` field.
pub struct Stamp<'a> {
    /// The name the client gave in EHLO/HELO.
    pub helo: &'a str,
    /// The client's address.
    pub client_ip: std::net::IpAddr,
    /// Our host name.
    pub hostname: &'a str,
    /// ESMTP (EHLO) rather than SMTP (HELO).
    pub esmtp: bool,
    /// TLS protocol and cipher, when the session is encrypted.
    pub tls: Option<&'a str>,
    /// SMTPUTF8 was used.
    pub smtputf8: bool,
    /// The queue id.
    pub id: &'a str,
    /// The single recipient, when there is exactly one.
    pub for_rcpt: Option<&'a str>,
    /// The routing table version that routed the message.
    pub table_version: &'a str,
    /// When the message was received.
    pub at: SystemTime,
}

impl Stamp<'_> {
    /// The whole field, folded, ending in CRLF.
    pub fn render(&self) -> String {
        let protocol = match (self.smtputf8, self.esmtp, self.tls.is_some()) {
            (true, _, true) => "UTF8SMTPS",
            (true, _, false) => "UTF8SMTP",
            (false, true, true) => "ESMTPS",
            (false, true, false) => "ESMTP",
            (false, false, _) => "SMTP",
        };
        // One string, written in place: this runs for every message.
        let mut out = String::with_capacity(256);
        out.push_str("Received: from ");
        push_sanitized(&mut out, self.helo);
        let _ = match self.client_ip {
            std::net::IpAddr::V4(ip) => write!(out, " ([{ip}])"),
            std::net::IpAddr::V6(ip) => write!(out, " ([IPv6:{ip}])"),
        };
        out.push_str("\r\n\t");
        out.push_str(&own_stamp_token(self.hostname));
        out.push_str(" with ");
        out.push_str(protocol);
        out.push_str(" id ");
        out.push_str(self.id);
        if let Some(tls) = self.tls {
            push_clause(&mut out, "\r\n\t(using ", tls, ')');
        }
        push_clause(&mut out, "\r\n\t(routing tables ", self.table_version, ')');
        if let Some(rcpt) = self.for_rcpt {
            push_clause(&mut out, "\r\n\tfor <", rcpt, '>');
        }
        out.push_str(";\r\n\t");
        push_date(&mut out, self.at);
        out.push_str("\r\n");
        out
    }
}

/// Appends a folded clause: `open`, the sanitized `value`, `close`.
fn push_clause(out: &mut String, open: &str, value: &str, close: char) {
    out.push_str(open);
    push_sanitized(out, value);
    out.push(close);
}

/// Appends `s` kept printable and on one line.
fn push_sanitized(out: &mut String, s: &str) {
    out.extend(s.chars().take(200).map(|c| {
        if c.is_control() || c == '(' || c == ')' {
            '?'
        } else {
            c
        }
    }));
}

/// `Mon, 23 Nov 2026 16:00:00 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    let mut out = String::with_capacity(32);
    push_date(&mut out, t);
    out
}

/// Appends the RFC 5322 date of `t` (UTC).
fn push_date(out: &mut String, t: SystemTime) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let weekday = WEEKDAYS[days.rem_euclid(7) as usize];
    let month = MONTHS[(m as usize).saturating_sub(1).min(11)];
    let _ = write!(
        out,
        "{weekday}, {d} {month} {y} {:02}:{:02}:{:02} +0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 1 Jan 1970 00:00:00 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_392_000 + 3_723);
        assert_eq!(rfc5322_date(t), "Mon, 23 Nov 2026 01:02:03 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    /// An ESMTPS stamp for one recipient, with a HELO that tries to break the header.
    fn tls_stamp() -> Stamp<'static> {
        Stamp {
            helo: "client(evil)\r\nX",
            client_ip: "192.0.2.1".parse().unwrap(),
            hostname: "mx.example.com",
            esmtp: true,
            tls: Some("TLSv1_3 with cipher X"),
            smtputf8: false,
            id: "ABC123",
            for_rcpt: Some("alice@example.com"),
            table_version: "0123456789abcdef",
            at: UNIX_EPOCH + Duration::from_secs(1_795_392_000 + 3_723),
        }
    }

    #[test]
    fn whole_fields_with_and_without_tls() {
        let tls = tls_stamp();
        assert_eq!(
            tls.render(),
            "Received: from client?evil???X ([192.0.2.1])\r\n\tby mx.example.com (splitmx) with ESMTPS id ABC123\r\n\t(using TLSv1_3 with cipher X)\r\n\t(routing tables 0123456789abcdef)\r\n\tfor <alice@example.com>;\r\n\tMon, 23 Nov 2026 01:02:03 +0000\r\n"
        );
        let plain = Stamp {
            helo: "h",
            client_ip: "2001:db8::1".parse().unwrap(),
            esmtp: false,
            tls: None,
            smtputf8: true,
            id: "Z",
            for_rcpt: None,
            table_version: "v",
            at: UNIX_EPOCH,
            ..tls
        };
        assert_eq!(
            plain.render(),
            "Received: from h ([IPv6:2001:db8::1])\r\n\tby mx.example.com (splitmx) with UTF8SMTP id Z\r\n\t(routing tables v);\r\n\tThu, 1 Jan 1970 00:00:00 +0000\r\n"
        );
    }

    #[test]
    fn stamp_is_recognised_by_the_loop_check() {
        let s = Stamp {
            helo: "client(evil)\r\nX-Injected: 1",
            tls: Some("TLSv1_3 with cipher TLS13_AES_128_GCM_SHA256"),
            ..tls_stamp()
        }
        .render();
        assert!(!s.contains("\r\nX-Injected"), "{s}");
        assert!(
            s.contains("by mx.example.com (splitmx) with ESMTPS id ABC123"),
            "{s}"
        );
        let count =
            crate::routing::hops::count_hops(format!("{s}\r\n").as_bytes(), "mx.example.com");
        assert_eq!((count.received, count.self_passes), (1, 1));
    }
}
