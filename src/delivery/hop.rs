//! Next-hop keys: which recipients of which messages can share a connection and a
//! transaction. Made from what the spool recorded at RCPT time, so a message is
//! delivered the way it was routed when accepted, whatever the tables say now.

use std::fmt;

use crate::routing::route::{LMTP_PORT, NextHop, Route, RouteKind, SMTP_PORT, TlsPolicy};
use crate::spool::SpooledRecipient;

/// Where a group of recipients goes: transport, next hop and TLS policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HopKey {
    /// Relay over SMTP. A route to "the recipient's domain" is keyed by that domain.
    Smtp {
        /// Where to connect (never [`NextHop::RecipientDomain`]).
        next_hop: NextHop,
        /// STARTTLS policy.
        tls: TlsPolicy,
    },
    /// Deliver over LMTP.
    Lmtp {
        /// Where to connect.
        next_hop: NextHop,
        /// STARTTLS policy.
        tls: TlsPolicy,
    },
    /// Write into Maildir folders; the template is expanded per recipient.
    Maildir {
        /// The route's path template.
        template: String,
    },
}

/// A spooled recipient whose route cannot be delivered (a table change cannot cause this;
/// a damaged or hand-edited spool can).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recipient {recipient}: route {route_kind:?} cannot be delivered: {reason}")]
pub struct HopError {
    /// The recipient.
    pub recipient: String,
    /// The spooled route kind.
    pub route_kind: String,
    /// Why.
    pub reason: String,
}

impl HopKey {
    /// The next hop of a spooled recipient.
    ///
    /// ```
    /// use splitmx::delivery::HopKey;
    /// use splitmx::spool::SpooledRecipient;
    ///
    /// let r = SpooledRecipient {
    ///     deliver_to: "bob@example.net".into(),
    ///     route_kind: "smtp:(recipient domain):25".into(),
    ///     ..Default::default()
    /// };
    /// assert_eq!(HopKey::of(&r).unwrap().to_string(), "smtp:example.net");
    /// ```
    pub fn of(r: &SpooledRecipient) -> Result<HopKey, HopError> {
        let err = |reason: String| HopError {
            recipient: r.deliver_to.clone(),
            route_kind: r.route_kind.clone(),
            reason,
        };
        let tls = if r.tls.is_empty() {
            TlsPolicy::default()
        } else {
            r.tls.parse::<TlsPolicy>().map_err(err)?
        };
        let (transport, rest) = r.route_kind.split_once(':').unwrap_or((&r.route_kind, ""));
        // `NextHop`'s display of "the recipient's domain" is for people; map it back.
        if let Some(port) = rest.strip_prefix("(recipient domain):") {
            let port: u16 = port
                .parse()
                .map_err(|_| err(format!("bad port {port:?}")))?;
            let domain = r
                .deliver_to
                .rsplit_once('@')
                .map(|(_, d)| d.trim_end_matches('>').to_ascii_lowercase())
                .filter(|d| !d.is_empty())
                .ok_or_else(|| err("recipient has no domain".into()))?;
            let next_hop = NextHop::Mx { domain, port };
            return match transport {
                "smtp" => Ok(HopKey::Smtp { next_hop, tls }),
                "lmtp" => Ok(HopKey::Lmtp { next_hop, tls }),
                other => Err(err(format!("transport {other:?} has no next hop"))),
            };
        }
        let route = Route::parse_transport(r.route.as_str(), &r.route_kind)
            .map_err(|e| err(e.to_string()))?;
        match route.kind() {
            RouteKind::Smtp { next_hop, .. } => Ok(HopKey::Smtp {
                next_hop: next_hop.clone(),
                tls,
            }),
            RouteKind::Lmtp { next_hop, .. } => Ok(HopKey::Lmtp {
                next_hop: next_hop.clone(),
                tls,
            }),
            RouteKind::Maildir { path } => Ok(HopKey::Maildir {
                template: path.clone(),
            }),
            RouteKind::Reject(_) | RouteKind::Defer(_) => {
                Err(err("reject and defer routes never queue mail".into()))
            }
        }
    }

    /// The route kind as a metric label: `smtp`, `lmtp` or `maildir`.
    pub fn transport(&self) -> &'static str {
        match self {
            HopKey::Smtp { .. } => "smtp",
            HopKey::Lmtp { .. } => "lmtp",
            HopKey::Maildir { .. } => "maildir",
        }
    }
}

impl fmt::Display for HopKey {
    /// `smtp:[192.0.2.1]:25`, `smtp:example.net`, `lmtp:unix:/run/dovecot/lmtp`,
    /// `maildir:mail/{domain}/{user}`; a non-default TLS policy is appended.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (transport, hop, tls, default_port) = match self {
            HopKey::Smtp { next_hop, tls } => ("smtp", next_hop, tls, SMTP_PORT),
            HopKey::Lmtp { next_hop, tls } => ("lmtp", next_hop, tls, LMTP_PORT),
            HopKey::Maildir { template } => return write!(f, "maildir:{template}"),
        };
        match hop {
            NextHop::Mx { domain, port } if *port == default_port => {
                write!(f, "{transport}:{domain}")?
            }
            other => write!(f, "{transport}:{other}")?,
        }
        if *tls != TlsPolicy::default() {
            write!(f, " tls={tls}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rcpt(kind: &str, tls: &str) -> SpooledRecipient {
        SpooledRecipient {
            deliver_to: "Bob@Example.NET".into(),
            route: "r".into(),
            route_kind: kind.into(),
            tls: tls.into(),
            ..Default::default()
        }
    }

    #[test]
    fn spooled_route_kinds_map_back_to_hops() {
        let cases = [
            ("smtp:[192.0.2.1]:2525", "", "smtp:[192.0.2.1]:2525"),
            (
                "smtp:mx.example.org",
                "verify",
                "smtp:mx.example.org tls=verify",
            ),
            ("smtp:(recipient domain):25", "", "smtp:example.net"),
            (
                "lmtp:unix:/run/dovecot/lmtp",
                "",
                "lmtp:unix:/run/dovecot/lmtp",
            ),
            (
                "lmtp:[127.0.0.1]:24",
                "required",
                "lmtp:[127.0.0.1]:24 tls=required",
            ),
            (
                "maildir:mail/{domain}/{user}",
                "",
                "maildir:mail/{domain}/{user}",
            ),
        ];
        for (kind, tls, want) in cases {
            let hop = HopKey::of(&rcpt(kind, tls)).unwrap();
            assert_eq!(hop.to_string(), want, "{kind}");
        }
    }

    #[test]
    fn undeliverable_kinds_are_errors() {
        for kind in [
            "reject:550 5.1.1 gone",
            "defer:450 4.2.1 later",
            "nonsense",
            "",
        ] {
            assert!(HopKey::of(&rcpt(kind, "")).is_err(), "{kind}");
        }
        assert!(HopKey::of(&rcpt("smtp:[h]:25", "bogus")).is_err());
    }
}
