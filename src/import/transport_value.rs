//! Postfix transport(5) values (`transport:nexthop`) as splitmx routes.
//!
//! The meaning follows trivial-rewrite(8) (`transport.c`, `update_entry`): the value
//! splits at its first `:` into transport and next hop; a transport with an empty next
//! hop means the recipient's domain (`error` says "Address is undeliverable"); an empty
//! transport with a next hop keeps the address class's default transport; `:` alone
//! keeps main.cf's defaults. `error` always bounces and `retry` always defers whatever
//! status the text gives (error(8)); the LMTP client never looks up MX records.
//! Transports splitmx has no equivalent for (`local`, `virtual`, pipes) are not carried
//! over, with the reason; what is carried over with a change says so.

use hashbrown::HashMap;

use super::report::Severity;
use crate::routing::route::{LMTP_PORT, NextHop, Reply, RouteKind, SMTP_PORT, TlsPolicy};

/// What an entry makes of the recipients it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Carried over as this route.
    Route(RouteKind),
    /// Not carried over, and why.
    NotCarried(String),
}

/// The master.cf service types an imported transport name can stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Smtp,
    Lmtp,
    Error,
    Retry,
}

impl Service {
    /// A type named on the command line (`--service NAME=TYPE`).
    pub(crate) fn parse(s: &str) -> Option<Service> {
        match s {
            "smtp" | "relay" => Some(Service::Smtp),
            "lmtp" => Some(Service::Lmtp),
            "error" => Some(Service::Error),
            "retry" => Some(Service::Retry),
            _ => None,
        }
    }
}

/// How values are read: the master.cf services known, and main.cf's default route.
#[derive(Debug, Clone, Default)]
pub(crate) struct ValueRules {
    /// Extra master.cf services (`--service`), by name.
    pub(crate) services: HashMap<String, Service>,
    /// Where Postfix sends what no entry decides (`--fallback`), already converted.
    pub(crate) fallback: Option<RouteKind>,
}

/// A value converted, with what the administrator should know about it.
#[derive(Clone)]
pub(crate) struct Converted {
    pub(crate) action: Action,
    pub(crate) notes: Vec<(Severity, String)>,
}

impl ValueRules {
    /// Convert a transport(5) value (`transport:nexthop`).
    pub(crate) fn convert(&self, value: &str) -> Converted {
        let mut notes = Vec::new();
        let (transport, nexthop) = value.split_once(':').unwrap_or((value, ""));
        let nexthop = nexthop.trim();
        let service = if transport.is_empty() {
            if nexthop.is_empty() {
                return match &self.fallback {
                    Some(kind) => Converted {
                        action: Action::Route(kind.clone()),
                        notes: vec![(
                            Severity::Changed,
                            "':' keeps main.cf's default transport and next hop; carried over as the --fallback route".to_string(),
                        )],
                    },
                    None => not_carried(
                        "':' keeps main.cf's default transport and next hop (relay_transport, relayhost), which this import cannot see; give --fallback TRANSPORT",
                    ),
                };
            }
            let service = match &self.fallback {
                Some(RouteKind::Lmtp { .. }) => Service::Lmtp,
                _ => Service::Smtp,
            };
            notes.push((
                Severity::Changed,
                format!(
                    "an empty transport keeps the address class's default transport (for a relay domain relay_transport, by default relay:, Postfix's SMTP client); carried over as {}",
                    if service == Service::Lmtp { "lmtp (the --fallback's transport)" } else { "smtp" }
                ),
            ));
            service
        } else if let Some(s) = self.services.get(transport) {
            *s
        } else {
            match transport {
                "smtp" | "relay" => Service::Smtp,
                "lmtp" => Service::Lmtp,
                "error" => Service::Error,
                "retry" => Service::Retry,
                "local" => {
                    return not_carried(
                        "Postfix's local(8) agent (aliases, .forward, mailbox files) has no splitmx equivalent; route these recipients to their mailbox server (lmtp:...) or to maildir:PATH",
                    );
                }
                "virtual" => {
                    return not_carried(
                        "Postfix's virtual(8) agent has no splitmx equivalent; route these recipients to their mailbox server (lmtp:...) or to maildir:PATH",
                    );
                }
                "discard" => {
                    return not_carried(
                        "discard drops mail; splitmx never drops mail silently (use a reject or defer route)",
                    );
                }
                other => {
                    return not_carried(&format!(
                        "'{other}' is a master.cf service this import cannot see (often pipe(8) to a program); if it runs smtp(8) or lmtp(8), give --service {other}=smtp or --service {other}=lmtp"
                    ));
                }
            }
        };
        let action = match service {
            Service::Smtp => smtp(nexthop, &mut notes),
            Service::Lmtp => lmtp(nexthop, &mut notes),
            Service::Error => error_reply(nexthop, &mut notes),
            Service::Retry => retry_reply(nexthop, &mut notes),
        };
        Converted { action, notes }
    }
}

fn not_carried(why: &str) -> Converted {
    Converted {
        action: Action::NotCarried(why.to_string()),
        notes: Vec::new(),
    }
}

/// The first of a list of next hops (Postfix 3.5 tries them in order).
fn first_hop<'a>(nexthop: &'a str, notes: &mut Vec<(Severity, String)>) -> &'a str {
    let mut hops = nexthop
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|h| !h.is_empty());
    let first = hops.next().unwrap_or("");
    let rest: Vec<&str> = hops.collect();
    if !rest.is_empty() {
        notes.push((
            Severity::Changed,
            format!(
                "Postfix tries {first}, then {}; a splitmx route has one next hop, so only {first} is used",
                rest.join(", ")
            ),
        ));
    }
    first
}

fn smtp(nexthop: &str, notes: &mut Vec<(Severity, String)>) -> Action {
    let hop = first_hop(nexthop, notes);
    if hop.is_empty() {
        notes.push((
            Severity::Warning,
            "no next hop: delivers to the MX of the recipient's own domain, which is this gateway once it is that domain's MX (a mail loop, deferred with 4.4.6)".to_string(),
        ));
    }
    let hop = match numeric_port(hop) {
        Ok(h) => h,
        Err(why) => return Action::NotCarried(why),
    };
    match NextHop::parse(&hop, SMTP_PORT, false) {
        Ok(next_hop) => Action::Route(RouteKind::Smtp {
            next_hop,
            tls: TlsPolicy::default(),
        }),
        Err(e) => Action::NotCarried(e.to_string()),
    }
}

fn lmtp(nexthop: &str, notes: &mut Vec<(Severity, String)>) -> Action {
    let hop = first_hop(nexthop, notes);
    if hop.is_empty() {
        return Action::NotCarried(
            "lmtp: without a destination connects to a host named like the recipient's domain; name the LMTP server (lmtp:unix:/path or lmtp:inet:host:port)".to_string(),
        );
    }
    // The LMTP client never looks up MX records: a host is always "[host]".
    let hop = if hop.starts_with("unix:") {
        hop.to_string()
    } else {
        let inet = hop.strip_prefix("inet:").unwrap_or(hop);
        if inet.starts_with('[') {
            inet.to_string()
        } else {
            match inet.rsplit_once(':') {
                Some((host, port)) => format!("[{host}]:{port}"),
                None => format!("[{inet}]"),
            }
        }
    };
    let hop = match numeric_port(&hop) {
        Ok(h) => h,
        Err(why) => return Action::NotCarried(why),
    };
    match NextHop::parse(&hop, LMTP_PORT, true) {
        Ok(next_hop) => Action::Route(RouteKind::Lmtp {
            next_hop,
            tls: TlsPolicy::default(),
        }),
        Err(e) => Action::NotCarried(e.to_string()),
    }
}

/// A next hop with a service name for a port (`host:smtp`) given the number instead.
fn numeric_port(hop: &str) -> Result<String, String> {
    let split = if hop.starts_with('[') {
        hop.find("]:").map(|i| i + 1)
    } else if hop.starts_with("unix:") {
        None
    } else {
        hop.rfind(':')
    };
    let Some(colon) = split else {
        return Ok(hop.to_string());
    };
    let (host, port) = (&hop[..colon], &hop[colon + 1..]);
    if port.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(hop.to_string());
    }
    let number = match port {
        "smtp" => 25,
        "lmtp" => 24,
        "submission" => 587,
        "smtps" | "submissions" => 465,
        other => {
            return Err(format!(
                "port '{other}' is a service name this import does not know; write the port number"
            ));
        }
    };
    Ok(format!("{host}:{number}"))
}

/// Split an RFC 3463 status off the front of error(8) text, as Postfix's `dsn_split`.
fn dsn_split(text: &str) -> (Option<&str>, &str) {
    let text = text.trim_start();
    let end = text
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(text.len());
    let word = &text[..end];
    let mut parts = word.split('.');
    let valid = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(c), None) => {
            matches!(a, "2" | "4" | "5")
                && (1..=3).contains(&b.len())
                && (1..=3).contains(&c.len())
                && b.bytes().chain(c.bytes()).all(|x| x.is_ascii_digit())
        }
        _ => false,
    };
    if valid {
        (Some(word), text[end..].trim_start())
    } else {
        (None, text)
    }
}

fn error_reply(text: &str, notes: &mut Vec<(Severity, String)>) -> Action {
    let (status, rest) = dsn_split(text);
    let status = match status {
        Some(s) if s.starts_with('5') => s,
        Some(s) => {
            notes.push((
                Severity::Changed,
                format!("error(8) always bounces: Postfix replaces status {s} with 5.0.0, and so does this import (for a temporary refusal write retry:)"),
            ));
            "5.0.0"
        }
        None => "5.0.0",
    };
    let rest = if rest.is_empty() {
        "Address is undeliverable"
    } else {
        rest
    };
    reply(
        Reply::parse_reject(&format!("550 {status} {rest}")),
        RouteKind::Reject,
    )
}

fn retry_reply(text: &str, notes: &mut Vec<(Severity, String)>) -> Action {
    let (status, rest) = dsn_split(text);
    let status = match status {
        Some(s) if s.starts_with('4') => s,
        Some(s) => {
            notes.push((
                Severity::Changed,
                format!("retry always defers: Postfix replaces status {s} with 4.0.0, and so does this import"),
            ));
            "4.0.0"
        }
        None => "4.0.0",
    };
    let rest = if rest.is_empty() {
        "Try again later"
    } else {
        rest
    };
    reply(
        Reply::parse_defer(&format!("450 {status} {rest}")),
        RouteKind::Defer,
    )
}

fn reply(
    parsed: Result<Reply, crate::routing::route::RouteError>,
    kind: fn(Reply) -> RouteKind,
) -> Action {
    match parsed {
        Ok(r) => Action::Route(kind(r)),
        Err(e) => Action::NotCarried(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(value: &str) -> (Action, Vec<(Severity, String)>) {
        let c = ValueRules::default().convert(value);
        (c.action, c.notes)
    }

    fn route(value: &str) -> RouteKind {
        match convert(value).0 {
            Action::Route(k) => k,
            other => panic!("{value}: {other:?}"),
        }
    }

    #[test]
    fn smtp_next_hops() {
        assert_eq!(
            route("smtp:[mx.example.com]:2525").to_string(),
            "smtp:[mx.example.com]:2525"
        );
        assert_eq!(route("relay:example.net").to_string(), "smtp:example.net");
        assert_eq!(
            route("smtp:[192.0.2.1]:smtp").to_string(),
            "smtp:[192.0.2.1]:25"
        );
        assert_eq!(
            route("smtp:mx.example.com:submission").to_string(),
            "smtp:mx.example.com:587"
        );
        assert_eq!(route("smtp").to_string(), "smtp:(recipient domain):25");
        let (_, notes) = convert("smtp:bar.example, foo.example");
        assert!(notes[0].1.contains("only bar.example is used"), "{notes:?}");
        let (_, notes) = convert(":[gw.example.com]");
        assert_eq!(notes[0].0, Severity::Changed);
        assert!(matches!(convert("smtp:192.0.2.1").0, Action::NotCarried(_)));
        assert!(matches!(
            convert("smtp:host:nosuchservice").0,
            Action::NotCarried(_)
        ));
    }

    #[test]
    fn lmtp_never_uses_mx() {
        assert_eq!(
            route("lmtp:unix:/var/run/dovecot/lmtp").to_string(),
            "lmtp:unix:/var/run/dovecot/lmtp"
        );
        assert_eq!(
            route("lmtp:inet:127.0.0.1:24").to_string(),
            "lmtp:[127.0.0.1]:24"
        );
        assert_eq!(
            route("lmtp:inet:dovecot.example").to_string(),
            "lmtp:[dovecot.example]:24"
        );
        assert_eq!(route("lmtp:[::1]:2424").to_string(), "lmtp:[::1]:2424");
        assert_eq!(
            route("lmtp:mail.example:lmtp").to_string(),
            "lmtp:[mail.example]:24"
        );
        assert!(matches!(convert("lmtp:").0, Action::NotCarried(_)));
    }

    #[test]
    fn error_and_retry_follow_error8() {
        assert_eq!(
            route("error:5.1.1 gone away").to_string(),
            "reject:550 5.1.1 gone away"
        );
        assert_eq!(
            route("error:").to_string(),
            "reject:550 5.0.0 Address is undeliverable"
        );
        assert_eq!(
            route("error:no such user").to_string(),
            "reject:550 5.0.0 no such user"
        );
        let (action, notes) = convert("error:4.2.1 moving");
        assert_eq!(
            action,
            Action::Route(RouteKind::Reject(Reply::new(550, "5.0.0", "moving")))
        );
        assert_eq!(notes[0].0, Severity::Changed);
        assert_eq!(
            route("retry:4.3.2 later").to_string(),
            "defer:450 4.3.2 later"
        );
        assert_eq!(route("retry:5.1.1 x").to_string(), "defer:450 4.0.0 x");
    }

    #[test]
    fn unsupported_transports_say_why() {
        for (value, word) in [
            ("local:", "local(8)"),
            ("virtual:", "virtual(8)"),
            ("discard:", "never drops"),
            ("dovecot:", "--service dovecot=smtp"),
            (":", "--fallback"),
            ("SMTP:[x]", "--service SMTP=smtp"),
        ] {
            match convert(value).0 {
                Action::NotCarried(why) => assert!(why.contains(word), "{value}: {why}"),
                other => panic!("{value}: {other:?}"),
            }
        }
    }

    #[test]
    fn services_and_fallback_change_the_reading() {
        let mut rules = ValueRules::default();
        rules.services.insert("slow".into(), Service::Smtp);
        rules.fallback = Some(route("lmtp:unix:/run/lmtp"));
        assert_eq!(
            match rules.convert("slow:[mx.example.com]").action {
                Action::Route(k) => k.to_string(),
                other => format!("{other:?}"),
            },
            "smtp:[mx.example.com]:25"
        );
        assert!(matches!(
            rules.convert(":").action,
            Action::Route(RouteKind::Lmtp { .. })
        ));
        assert!(matches!(
            rules.convert(":[10.0.0.1]:24").action,
            Action::Route(RouteKind::Lmtp { .. })
        ));
    }
}
