//! Writing the planned tables as YAML text a mail administrator can review.
//!
//! One file per domain (`DOMAIN.yaml`) and one for the routes ([`ROUTES_FILE`]), each
//! with a header saying where it came from. Recipient lines are kept plain
//! (`  alice@example.com: route`, no trailing comments) so a large table loads through
//! the fast line scanner; scalars YAML could read as something else are double-quoted.

use std::fmt::Write as _;

use super::plan::{DomainTable, Slot};
use super::routes::{NOT_IMPORTED_REPLY, Routes};
use crate::routing::route::{NextHop, RouteKind, SMTP_PORT};

/// The file that holds the imported routes.
pub const ROUTES_FILE: &str = "postfix-routes.yaml";

/// Where the files came from, for their header.
pub(crate) struct Header<'a> {
    pub(crate) sources: &'a [String],
    pub(crate) date: Option<&'a str>,
}

impl Header<'_> {
    fn write(&self, out: &mut String, what: &str) {
        let sources = self
            .sources
            .iter()
            .map(|s| one_line(s))
            .collect::<Vec<_>>()
            .join(" and ");
        let _ = writeln!(out, "# {what}, imported from {sources}");
        match self.date {
            Some(date) => {
                let _ = writeln!(out, "# by `splitmx import postfix-transport` on {date}.");
            }
            None => out.push_str("# by `splitmx import postfix-transport`.\n"),
        }
    }
}

/// The routes file.
pub(crate) fn routes_file(routes: &Routes, header: &Header<'_>, transport_file: &str) -> String {
    let mut out = String::new();
    header.write(&mut out, "Routes");
    out.push_str("routes:\n");
    // The not-imported route last: it is the one whose comment needs reading.
    let (real, placeholder): (Vec<_>, Vec<_>) = routes.list.iter().partition(|r| r.kind.is_some());
    for r in real.into_iter().chain(placeholder) {
        let from = r
            .first_line
            .map(|l| format!("  # first used at {}:{l}", one_line(transport_file)))
            .unwrap_or_default();
        match &r.kind {
            None => {
                out.push_str(
                    "  # Entries the import could not carry over: decide where they go, then\n",
                );
                out.push_str(
                    "  # point them at a real route. Until then their recipients are deferred.\n",
                );
                let _ = writeln!(
                    out,
                    "  {}:\n    defer: {}",
                    r.name,
                    quoted(NOT_IMPORTED_REPLY)
                );
            }
            Some(RouteKind::Reject(reply)) => {
                let _ = writeln!(
                    out,
                    "  {}:{from}\n    reject: {}",
                    r.name,
                    quoted(&reply.to_string())
                );
            }
            Some(RouteKind::Defer(reply)) => {
                let _ = writeln!(
                    out,
                    "  {}:{from}\n    defer: {}",
                    r.name,
                    quoted(&reply.to_string())
                );
            }
            Some(kind) => {
                let _ = writeln!(out, "  {}: {}{from}", r.name, quoted(&transport_text(kind)));
            }
        }
    }
    out
}

/// A delivering route in transport(5) syntax, as `Route::parse_transport` reads it back.
fn transport_text(kind: &RouteKind) -> String {
    let (transport, hop) = match kind {
        RouteKind::Smtp { next_hop, .. } => ("smtp", next_hop),
        RouteKind::Lmtp { next_hop, .. } => ("lmtp", next_hop),
        RouteKind::Maildir { path } => return format!("maildir:{path}"),
        RouteKind::Reject(r) => return format!("reject:{r}"),
        RouteKind::Defer(r) => return format!("defer:{r}"),
    };
    let hop = match hop {
        NextHop::Direct { host, port } => format!("[{host}]:{port}"),
        NextHop::Mx { domain, port } if *port == SMTP_PORT => domain.clone(),
        NextHop::Mx { domain, port } => format!("{domain}:{port}"),
        NextHop::RecipientDomain { .. } => String::new(),
        NextHop::Unix { path } => format!("unix:{path}"),
    };
    format!("{transport}:{hop}")
}

/// One domain's table file.
pub(crate) fn domain_file(table: &DomainTable, routes: &Routes, header: &Header<'_>) -> String {
    let mut out = String::new();
    header.write(&mut out, &table.domain);
    let _ = writeln!(out, "# Routes are defined in {ROUTES_FILE}.");
    let _ = writeln!(out, "domains: [{}]", scalar(&table.domain));
    if let Some(from) = &table.subdomains {
        let _ = writeln!(out, "subdomains: true  # {}", one_line(from));
    }
    match &table.default {
        Some(slot) => write_slot(&mut out, "default: ", slot, routes),
        None if table.restricted => out.push_str(
            "# No default: only the recipients below exist (relay_recipients); others get 550 5.1.1.\n",
        ),
        None => {}
    }
    if !table.recipients.is_empty() {
        out.push_str("recipients:\n");
        for r in &table.recipients {
            if let Some(why) = r.slot.comment.as_deref() {
                let _ = writeln!(out, "  # {}", one_line(why));
            }
            let _ = writeln!(
                out,
                "  {}: {}",
                scalar(&r.address),
                routes.name(r.slot.route)
            );
        }
    }
    out
}

fn write_slot(out: &mut String, field: &str, slot: &Slot, routes: &Routes) {
    let _ = write!(out, "{field}{}", routes.name(slot.route));
    if let Some(c) = &slot.comment {
        let _ = write!(out, "  # {}", one_line(c));
    }
    out.push('\n');
}

/// A scalar as YAML plain text when nothing could read it differently, else quoted.
pub(crate) fn scalar(s: &str) -> String {
    let plain_chars = s.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(c, '.' | '_' | '+' | '-' | '=' | '@')
            || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
    });
    let starts_ok = s.chars().next().is_some_and(|c| c.is_alphanumeric());
    let keyword = matches!(
        s.to_ascii_lowercase().as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null" | "~"
    );
    // Anything that starts with a digit is quoted: YAML 1.1 also reads `0b0`, `0x1f`,
    // `0o7` and `1_000` as numbers (found by the `postfix_map` fuzz target).
    let number = s.starts_with(|c: char| c.is_ascii_digit()) || s.parse::<f64>().is_ok();
    if plain_chars && starts_ok && !keyword && !number {
        s.to_string()
    } else {
        quoted(s)
    }
}

/// A YAML double-quoted scalar.
pub(crate) fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text for a comment: one line, no control characters.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::route::Route;

    #[test]
    fn scalars_are_quoted_only_when_needed() {
        assert_eq!(scalar("alice@example.com"), "alice@example.com");
        assert_eq!(scalar("jöran@example.com"), "jöran@example.com");
        assert_eq!(scalar("yes"), "\"yes\"");
        assert_eq!(scalar("1.5"), "\"1.5\"");
        for n in ["0b0", "0x1f", "0o7", "1_000", "0", "inf", "NaN"] {
            assert_eq!(scalar(n), format!("\"{n}\""), "{n}");
        }
        assert_eq!(scalar("1user@example.com"), "\"1user@example.com\"");
        assert_eq!(scalar("o'brien@example.com"), "\"o'brien@example.com\"");
        assert_eq!(scalar("\"a b\"@example.com"), "\"\\\"a b\\\"@example.com\"");
        assert_eq!(scalar("#x@example.com"), "\"#x@example.com\"");
    }

    #[test]
    fn transport_text_reads_back_as_the_same_route() {
        for spec in [
            "smtp:[mx.example.com]:2525",
            "smtp:example.net",
            "smtp:",
            "smtp:[2001:db8::1]:25",
            "lmtp:unix:/run/dovecot/lmtp",
            "lmtp:[127.0.0.1]:24",
        ] {
            let kind = Route::parse_transport("x", spec).unwrap().kind().clone();
            let again = Route::parse_transport("x", &transport_text(&kind)).unwrap();
            assert_eq!(again.kind(), &kind, "{spec}");
        }
    }
}
