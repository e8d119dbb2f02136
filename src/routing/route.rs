//! Routes: where a recipient's mail goes.
//!
//! A route is one of a local mailbox backend (`lmtp`, `maildir`), an external suite
//! (`smtp`), or an answer given at RCPT time (`reject` with a 5xx reply, `defer` with a
//! 4xx reply). A route may rewrite the envelope recipient and, for `smtp` and `lmtp`,
//! carries an outbound TLS policy.
//!
//! Inputs are the strings of a routing table: a next hop (`[host]:port`, `host`,
//! `unix:/path`), a reply (`550 5.1.1 text`), or a whole route in Postfix transport(5)
//! syntax (`smtp:[host]:port`, `lmtp:unix:/path`, `error:5.1.1 text`). Outputs are typed
//! values; malformed input is a [`RouteError`] saying what is wrong. Nothing here does
//! I/O: a bare host name is only marked for MX lookup, which the delivery side does.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use super::address::{Address, normalize_domain};

/// Default SMTP port for `smtp` routes.
pub const SMTP_PORT: u16 = 25;
/// Default port for `lmtp` routes over TCP (RFC 2033 names none; Dovecot's default is 24).
pub const LMTP_PORT: u16 = 24;

/// A named route with its behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    name: String,
    kind: RouteKind,
    rewrite: Option<Rewrite>,
}

/// What a route does with a recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum RouteKind {
    /// Deliver to a local mailbox server over LMTP (Dovecot and the like).
    Lmtp {
        /// Where the LMTP server listens.
        next_hop: NextHop,
        /// Outbound TLS policy.
        tls: TlsPolicy,
    },
    /// Deliver into Maildir folders; the path is a template (see [`Rewrite`] placeholders).
    Maildir {
        /// Path template of the Maildir, e.g. `mail/{domain}/{user}`.
        path: String,
    },
    /// Relay over SMTP, typically to an external suite.
    Smtp {
        /// The host to relay to.
        next_hop: NextHop,
        /// Outbound TLS policy.
        tls: TlsPolicy,
    },
    /// Refuse the recipient at RCPT time with a permanent (5xx) reply.
    Reject(Reply),
    /// Refuse the recipient at RCPT time with a temporary (4xx) reply.
    Defer(Reply),
}

/// Where to connect for delivery.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum NextHop {
    /// `[host]:port`: connect to exactly this host, no MX lookup.
    Direct {
        /// Host name (lower case, A-labels) or IP address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// `host` or `host:port`: look up the MX records of `domain` and connect to those.
    Mx {
        /// Domain whose MX records are used.
        domain: String,
        /// TCP port.
        port: u16,
    },
    /// `smtp:` with no host: look up the MX records of the recipient's own domain.
    RecipientDomain {
        /// TCP port.
        port: u16,
    },
    /// A unix-domain socket (LMTP only), e.g. `unix:/run/dovecot/lmtp`.
    Unix {
        /// Socket path.
        path: String,
    },
}

/// Outbound TLS policy of a route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsPolicy {
    /// Use STARTTLS when offered, without checking the certificate; plain text otherwise.
    #[default]
    Opportunistic,
    /// Require STARTTLS; do not check the certificate.
    Required,
    /// Require STARTTLS and a certificate valid for the next hop's host name.
    Verify,
}

/// An SMTP reply given at RCPT time by `reject` and `defer` routes, and by the router itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Reply {
    /// Three-digit reply code.
    pub code: u16,
    /// Enhanced status code (RFC 3463), e.g. `5.1.1`.
    pub status: String,
    /// Human-readable text.
    pub text: String,
}

/// A recipient rewrite: a template with placeholders `{local}` (the whole local part),
/// `{user}` (the local part without its extension), `{extension}` and `{domain}`, or a
/// fixed address.
///
/// ```
/// use splitmx::routing::route::Rewrite;
/// use splitmx::Address;
///
/// let rewrite = Rewrite::parse("{user}@tenant.onmicrosoft.com").unwrap();
/// let rcpt = Address::parse("Alice+news@example.com").unwrap();
/// let out = rewrite.apply(&rcpt, "+").unwrap();
/// assert_eq!(out.original(), "Alice@tenant.onmicrosoft.com");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Rewrite {
    template: String,
}

/// What is wrong with a route, next hop, reply or rewrite.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The next hop is not `[host]:port`, `host[:port]` or `unix:/path`.
    #[error("bad next hop '{value}': {reason}")]
    NextHop {
        /// The text given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The reply is not `CODE [X.Y.Z] text`.
    #[error("bad reply '{value}': {reason}")]
    Reply {
        /// The text given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A `reject` with a 4xx code or a `defer` with a 5xx code.
    #[error(
        "{kind} needs a {expected}xx reply code and {expected}.x.x status, got '{value}'{hint}"
    )]
    ReplyClass {
        /// `reject` or `defer`.
        kind: &'static str,
        /// The class expected: 5 or 4.
        expected: char,
        /// The text given.
        value: String,
        /// A hint at the other route type.
        hint: &'static str,
    },
    /// A transport(5) entry this gateway cannot carry over.
    #[error("transport '{transport}' is not supported: {hint}")]
    Unsupported {
        /// The transport name.
        transport: String,
        /// What to use instead.
        hint: &'static str,
    },
    /// A rewrite template that does not produce an address.
    #[error("bad rewrite '{value}': {reason}")]
    Rewrite {
        /// The template given.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

impl Route {
    /// A route with a name, a kind and an optional rewrite.
    pub fn new(name: impl Into<String>, kind: RouteKind, rewrite: Option<Rewrite>) -> Self {
        Route {
            name: name.into(),
            kind,
            rewrite,
        }
    }

    /// Parse a route in Postfix transport(5) syntax: `smtp:[host]:port`, `smtp:host`,
    /// `relay:…`, `lmtp:host:port`, `lmtp:unix:/path`, `error:5.1.1 text`,
    /// `retry:4.2.1 text`, and splitmx's own `maildir:PATH`, `reject:550 5.1.1 text`,
    /// `defer:450 4.2.1 text`.
    ///
    /// ```
    /// use splitmx::{NextHop, Route, RouteKind};
    ///
    /// let route = Route::parse_transport("legacy", "smtp:[192.0.2.10]:2525").unwrap();
    /// assert!(matches!(route.kind(), RouteKind::Smtp {
    ///     next_hop: NextHop::Direct { port: 2525, .. }, ..
    /// }));
    /// ```
    pub fn parse_transport(name: impl Into<String>, spec: &str) -> Result<Route, RouteError> {
        let (transport, rest) = spec.split_once(':').unwrap_or((spec, ""));
        let transport = transport.trim().to_ascii_lowercase();
        let rest = rest.trim();
        let kind = match transport.as_str() {
            "smtp" | "relay" => RouteKind::Smtp {
                next_hop: NextHop::parse(rest, SMTP_PORT, false)?,
                tls: TlsPolicy::default(),
            },
            "lmtp" => RouteKind::Lmtp {
                next_hop: NextHop::parse(rest, LMTP_PORT, true)?,
                tls: TlsPolicy::default(),
            },
            "maildir" => RouteKind::Maildir {
                path: parse_maildir(rest)?,
            },
            "reject" => RouteKind::Reject(Reply::parse_reject(rest)?),
            "defer" | "retry" => RouteKind::Defer(Reply::parse_defer(rest)?),
            // Postfix's error(8): the class of the status code decides hard or soft.
            "error" => {
                if rest.starts_with('4') {
                    RouteKind::Defer(Reply::parse_defer(rest)?)
                } else {
                    RouteKind::Reject(Reply::parse_reject(rest)?)
                }
            }
            "local" | "virtual" | "pipe" => {
                return Err(RouteError::Unsupported {
                    transport,
                    hint: "splitmx has no Postfix local/virtual/pipe agent; use maildir:PATH or lmtp:HOST:PORT",
                });
            }
            "discard" => {
                return Err(RouteError::Unsupported {
                    transport,
                    hint: "splitmx never drops mail silently; use reject: or defer:",
                });
            }
            _ => {
                return Err(RouteError::Unsupported {
                    transport,
                    hint: "known transports are smtp, relay, lmtp, maildir, reject, defer, error, retry",
                });
            }
        };
        Ok(Route::new(name, kind, None))
    }

    /// The route's name, as the tables call it (an inline transport(5) route is named by
    /// its own text).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the route does.
    pub fn kind(&self) -> &RouteKind {
        &self.kind
    }

    /// The recipient rewrite, if any.
    pub fn rewrite(&self) -> Option<&Rewrite> {
        self.rewrite.as_ref()
    }

    /// The next hop of an `smtp` or `lmtp` route.
    pub fn next_hop(&self) -> Option<&NextHop> {
        match &self.kind {
            RouteKind::Smtp { next_hop, .. } | RouteKind::Lmtp { next_hop, .. } => Some(next_hop),
            _ => None,
        }
    }

    /// True when the route accepts mail (not `reject` or `defer`).
    pub fn delivers(&self) -> bool {
        !matches!(self.kind, RouteKind::Reject(_) | RouteKind::Defer(_))
    }

    pub(crate) fn set_tls(&mut self, policy: TlsPolicy) -> bool {
        match &mut self.kind {
            RouteKind::Smtp { tls, .. } | RouteKind::Lmtp { tls, .. } => {
                *tls = policy;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn set_rewrite(&mut self, rewrite: Option<Rewrite>) {
        self.rewrite = rewrite;
    }
}

impl fmt::Display for RouteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteKind::Lmtp { next_hop, .. } => write!(f, "lmtp:{next_hop}"),
            RouteKind::Smtp { next_hop, .. } => write!(f, "smtp:{next_hop}"),
            RouteKind::Maildir { path } => write!(f, "maildir:{path}"),
            RouteKind::Reject(reply) => write!(f, "reject:{reply}"),
            RouteKind::Defer(reply) => write!(f, "defer:{reply}"),
        }
    }
}

impl NextHop {
    /// Parse a next hop: `[host]:port` or `[host]` (no MX lookup), `host` or `host:port`
    /// (MX lookup), `unix:/path` (only when `allow_unix`), `inet:host:port` (Postfix
    /// spelling of TCP), or empty (the recipient's domain).
    pub fn parse(value: &str, default_port: u16, allow_unix: bool) -> Result<NextHop, RouteError> {
        let bad = |reason: &str| RouteError::NextHop {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let v = value.trim();
        if let Some(path) = v.strip_prefix("unix:") {
            if !allow_unix {
                return Err(bad("unix sockets are for lmtp routes only"));
            }
            if path.is_empty() || path.chars().any(char::is_control) {
                return Err(bad("expected unix:/path/to/socket"));
            }
            return Ok(NextHop::Unix {
                path: path.to_string(),
            });
        }
        let v = v.strip_prefix("inet:").unwrap_or(v);
        if v.is_empty() {
            return Ok(NextHop::RecipientDomain { port: default_port });
        }
        if let Some(inner) = v.strip_prefix('[') {
            let Some((host, after)) = inner.split_once(']') else {
                return Err(bad("missing ']'"));
            };
            let port = match after {
                "" => default_port,
                p => parse_port(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected ':PORT' after ']'"))?,
                )
                .map_err(|r| bad(&r))?,
            };
            let host = host
                .strip_prefix("ipv6:")
                .or_else(|| host.strip_prefix("IPv6:"))
                .unwrap_or(host);
            let host = normalize_host(host).map_err(|r| bad(&r))?;
            return Ok(NextHop::Direct { host, port });
        }
        let (host, port) = match v.rsplit_once(':') {
            Some((h, p)) => (h, parse_port(p).map_err(|r| bad(&r))?),
            None => (v, default_port),
        };
        if host.parse::<IpAddr>().is_ok() {
            return Err(bad(
                "an IP address cannot have MX records; write it as [address]:port",
            ));
        }
        let domain = normalize_domain(host).map_err(|e| bad(&e.to_string()))?;
        Ok(NextHop::Mx { domain, port })
    }

    /// The host name or domain this next hop names, if any (not for `unix:` and the
    /// recipient-domain form).
    pub fn host(&self) -> Option<&str> {
        match self {
            NextHop::Direct { host, .. } => Some(host),
            NextHop::Mx { domain, .. } => Some(domain),
            NextHop::RecipientDomain { .. } | NextHop::Unix { .. } => None,
        }
    }

    /// The TCP port, if any.
    pub fn port(&self) -> Option<u16> {
        match self {
            NextHop::Direct { port, .. }
            | NextHop::Mx { port, .. }
            | NextHop::RecipientDomain { port } => Some(*port),
            NextHop::Unix { .. } => None,
        }
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHop::Direct { host, port } => write!(f, "[{host}]:{port}"),
            NextHop::Mx { domain, port } if *port == SMTP_PORT => write!(f, "{domain}"),
            NextHop::Mx { domain, port } => write!(f, "{domain}:{port}"),
            NextHop::RecipientDomain { port } => write!(f, "(recipient domain):{port}"),
            NextHop::Unix { path } => write!(f, "unix:{path}"),
        }
    }
}

impl TlsPolicy {
    /// The policy's name as tables write it: `opportunistic`, `required` or `verify`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsPolicy::Opportunistic => "opportunistic",
            TlsPolicy::Required => "required",
            TlsPolicy::Verify => "verify",
        }
    }
}

impl fmt::Display for TlsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TlsPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "opportunistic" | "may" => Ok(TlsPolicy::Opportunistic),
            "required" | "encrypt" => Ok(TlsPolicy::Required),
            "verify" | "secure" => Ok(TlsPolicy::Verify),
            other => Err(format!(
                "unknown tls policy '{other}': expected opportunistic, required or verify"
            )),
        }
    }
}

impl Reply {
    /// A reply from its parts.
    pub fn new(code: u16, status: &str, text: &str) -> Reply {
        Reply {
            code,
            status: status.to_string(),
            text: text.to_string(),
        }
    }

    /// Parse the text of a `reject` route: `[5XX] [5.X.Y] text`, defaults `550 5.0.0`.
    pub fn parse_reject(value: &str) -> Result<Reply, RouteError> {
        Reply::parse_class(value, '5', "reject", 550, "5.0.0", "Recipient rejected")
    }

    /// Parse the text of a `defer` route: `[4XX] [4.X.Y] text`, defaults `450 4.2.1`.
    pub fn parse_defer(value: &str) -> Result<Reply, RouteError> {
        Reply::parse_class(
            value,
            '4',
            "defer",
            450,
            "4.2.1",
            "Mailbox is being moved, try again later",
        )
    }

    fn parse_class(
        value: &str,
        class: char,
        kind: &'static str,
        default_code: u16,
        default_status: &str,
        default_text: &str,
    ) -> Result<Reply, RouteError> {
        let bad = |reason: &str| RouteError::Reply {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        if value.len() > 512 || value.chars().any(char::is_control) {
            return Err(bad("reply text must be one line of at most 512 octets"));
        }
        let mut rest = value.trim();
        let mut code = None;
        let mut status = None;
        if let Some((word, tail)) = split_word(rest)
            && word.len() == 3
            && word.bytes().all(|b| b.is_ascii_digit())
        {
            let n: u16 = word.parse().map_err(|_| bad("bad reply code"))?;
            if !(400..600).contains(&n) {
                return Err(bad("reply code must be 4xx or 5xx"));
            }
            code = Some((n, word.chars().next().unwrap_or('0')));
            rest = tail;
        }
        if let Some((word, tail)) = split_word(rest)
            && is_enhanced_status(word)
        {
            status = Some(word.to_string());
            rest = tail;
        }
        let class_of_status = status.as_deref().and_then(|s| s.chars().next());
        let wrong =
            code.is_some_and(|(_, c)| c != class) || class_of_status.is_some_and(|c| c != class);
        if wrong {
            return Err(RouteError::ReplyClass {
                kind,
                expected: class,
                value: value.to_string(),
                hint: if class == '5' {
                    " (a temporary refusal is a defer route)"
                } else {
                    " (a permanent refusal is a reject route)"
                },
            });
        }
        let code = code.map(|(n, _)| n).unwrap_or(default_code);
        let status = status.unwrap_or_else(|| default_status.to_string());
        let text = if rest.is_empty() { default_text } else { rest };
        Ok(Reply::new(code, &status, text))
    }

    /// 250 2.1.5, the reply for a routed recipient.
    pub fn ok() -> Reply {
        Reply::new(250, "2.1.5", "Recipient ok")
    }

    /// True for a 2xx reply.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// True for a 4xx reply.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.status, self.text)
    }
}

impl Rewrite {
    /// Check and keep a rewrite template or fixed address.
    pub fn parse(template: &str) -> Result<Rewrite, RouteError> {
        let rewrite = Rewrite {
            template: template.trim().to_string(),
        };
        let sample = Address::parse("user+ext@example.com").map_err(|e| RouteError::Rewrite {
            value: template.to_string(),
            reason: e.to_string(),
        })?;
        rewrite.apply(&sample, "+")?;
        Ok(rewrite)
    }

    /// The template text.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// Rewrite a recipient. `delimiters` are the address-extension delimiters.
    pub fn apply(&self, rcpt: &Address, delimiters: &str) -> Result<Address, RouteError> {
        let bad = |reason: String| RouteError::Rewrite {
            value: self.template.clone(),
            reason,
        };
        let ext = rcpt.extension(delimiters);
        let user = ext.map(|e| e.user).unwrap_or_else(|| rcpt.local_part());
        let extension = ext.map(|e| e.extension).unwrap_or("");
        let (local_t, domain_t) = self
            .template
            .rsplit_once('@')
            .ok_or_else(|| bad("expected LOCAL@DOMAIN".to_string()))?;
        let fill = |t: &str| {
            t.replace("{local}", rcpt.local_part())
                .replace("{user}", user)
                .replace("{extension}", extension)
                .replace("{domain}", rcpt.domain())
        };
        let local = fill(local_t);
        let domain = fill(domain_t);
        if local.contains(['{', '}']) || domain.contains(['{', '}']) {
            return Err(bad(
                "unknown placeholder: use {local}, {user}, {extension} or {domain}".to_string(),
            ));
        }
        // The local part may need quoting once filled in; Address::with_local_part handles it.
        let on_domain = Address::parse(&format!("x@{domain}")).map_err(|e| bad(e.to_string()))?;
        on_domain
            .with_local_part(&local)
            .map_err(|e| bad(e.to_string()))
    }
}

fn parse_maildir(path: &str) -> Result<String, RouteError> {
    if path.is_empty() || path.chars().any(char::is_control) {
        return Err(RouteError::NextHop {
            value: path.to_string(),
            reason: "maildir needs a path, e.g. mail/{domain}/{user}".to_string(),
        });
    }
    Ok(path.to_string())
}

/// Check a maildir path template as a route's `maildir:` value.
pub(crate) fn check_maildir(path: &str) -> Result<String, RouteError> {
    parse_maildir(path.trim())
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("'{p}' is not a port number (1-65535)")),
        Ok(n) => Ok(n),
    }
}

fn normalize_host(host: &str) -> Result<String, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    normalize_domain(host).map_err(|e| e.to_string())
}

fn split_word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    match s.find(char::is_whitespace) {
        Some(i) => Some((&s[..i], s[i..].trim_start())),
        None => Some((s, "")),
    }
}

fn is_enhanced_status(word: &str) -> bool {
    let mut parts = word.split('.');
    let (Some(a), Some(b), Some(c), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    matches!(a, "2" | "4" | "5")
        && (1..=3).contains(&b.len())
        && (1..=3).contains(&c.len())
        && b.bytes().chain(c.bytes()).all(|x| x.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(s: &str) -> NextHop {
        NextHop::parse(s, 25, true).unwrap()
    }

    #[test]
    fn next_hop_forms() {
        assert_eq!(
            hop("[mx.Example.com]:2525"),
            NextHop::Direct {
                host: "mx.example.com".into(),
                port: 2525
            }
        );
        assert_eq!(
            hop("[192.0.2.1]"),
            NextHop::Direct {
                host: "192.0.2.1".into(),
                port: 25
            }
        );
        assert_eq!(
            hop("[ipv6:2001:DB8::1]:26"),
            NextHop::Direct {
                host: "2001:db8::1".into(),
                port: 26
            }
        );
        assert_eq!(
            hop("[::1]:24"),
            NextHop::Direct {
                host: "::1".into(),
                port: 24
            }
        );
        assert_eq!(
            hop("mail.example.com"),
            NextHop::Mx {
                domain: "mail.example.com".into(),
                port: 25
            }
        );
        assert_eq!(
            hop("mail.example.com:587"),
            NextHop::Mx {
                domain: "mail.example.com".into(),
                port: 587
            }
        );
        assert_eq!(
            hop("inet:mail.example.com:24"),
            NextHop::Mx {
                domain: "mail.example.com".into(),
                port: 24
            }
        );
        assert_eq!(hop(""), NextHop::RecipientDomain { port: 25 });
        assert_eq!(
            hop("unix:/run/dovecot/lmtp"),
            NextHop::Unix {
                path: "/run/dovecot/lmtp".into()
            }
        );
    }

    #[test]
    fn next_hop_errors() {
        for bad in [
            "[host",
            "[host]x",
            "[host]:0",
            "[host]:99999",
            "host:abc",
            "192.0.2.1",
            "bad_host",
            "[a b]",
        ] {
            assert!(NextHop::parse(bad, 25, true).is_err(), "{bad} should fail");
        }
        assert!(NextHop::parse("unix:/x", 25, false).is_err());
    }

    #[test]
    fn transport_syntax() {
        let r = Route::parse_transport("x", "smtp:[10.0.0.5]:25").unwrap();
        assert_eq!(
            r.next_hop(),
            Some(&NextHop::Direct {
                host: "10.0.0.5".into(),
                port: 25
            })
        );
        let r = Route::parse_transport("x", "lmtp:unix:/var/run/lmtp").unwrap();
        assert!(matches!(
            r.kind(),
            RouteKind::Lmtp {
                next_hop: NextHop::Unix { .. },
                ..
            }
        ));
        let r = Route::parse_transport("x", "lmtp:127.0.0.1:24");
        assert!(r.is_err(), "bare IP with port must be bracketed");
        let r = Route::parse_transport("x", "lmtp:[127.0.0.1]:24").unwrap();
        assert_eq!(r.next_hop().and_then(NextHop::port), Some(24));
        let r = Route::parse_transport("x", "error:5.1.1 User gone").unwrap();
        assert_eq!(
            r.kind(),
            &RouteKind::Reject(Reply::new(550, "5.1.1", "User gone"))
        );
        let r = Route::parse_transport("x", "error:4.2.1 Moving").unwrap();
        assert_eq!(
            r.kind(),
            &RouteKind::Defer(Reply::new(450, "4.2.1", "Moving"))
        );
        let r = Route::parse_transport("x", "retry:").unwrap();
        assert!(matches!(r.kind(), RouteKind::Defer(_)));
        assert!(matches!(
            Route::parse_transport("x", "local:"),
            Err(RouteError::Unsupported { .. })
        ));
        assert!(matches!(
            Route::parse_transport("x", "discard:"),
            Err(RouteError::Unsupported { .. })
        ));
        assert!(matches!(
            Route::parse_transport("x", "uucp:x"),
            Err(RouteError::Unsupported { .. })
        ));
    }

    #[test]
    fn reply_classes() {
        assert_eq!(
            Reply::parse_reject("").unwrap(),
            Reply::new(550, "5.0.0", "Recipient rejected")
        );
        assert_eq!(
            Reply::parse_reject("554 5.7.1 No").unwrap(),
            Reply::new(554, "5.7.1", "No")
        );
        assert_eq!(
            Reply::parse_reject("5.1.1 Gone").unwrap(),
            Reply::new(550, "5.1.1", "Gone")
        );
        assert!(matches!(
            Reply::parse_reject("450 4.2.1 x"),
            Err(RouteError::ReplyClass { .. })
        ));
        assert!(matches!(
            Reply::parse_reject("550 4.2.1 x"),
            Err(RouteError::ReplyClass { .. })
        ));
        assert!(matches!(
            Reply::parse_defer("550 5.1.1 x"),
            Err(RouteError::ReplyClass { .. })
        ));
        assert_eq!(
            Reply::parse_defer("451 try later").unwrap(),
            Reply::new(451, "4.2.1", "try later")
        );
        assert!(Reply::parse_reject("999 x").is_err());
        assert!(Reply::parse_reject("550 a\r\nb").is_err());
    }

    #[test]
    fn rewrite_templates() {
        let rcpt = Address::parse("Bob+tag@Example.com").unwrap();
        let r = Rewrite::parse("{user}@tenant.onmicrosoft.com").unwrap();
        assert_eq!(
            r.apply(&rcpt, "+").unwrap().original(),
            "Bob@tenant.onmicrosoft.com"
        );
        let r = Rewrite::parse("{local}@{domain}.test").unwrap();
        assert_eq!(
            r.apply(&rcpt, "+").unwrap().key(),
            "bob+tag@example.com.test"
        );
        let r = Rewrite::parse("fixed@example.org").unwrap();
        assert_eq!(r.apply(&rcpt, "+").unwrap().original(), "fixed@example.org");
        assert!(Rewrite::parse("{nope}@x.com").is_err());
        assert!(Rewrite::parse("no-at-sign").is_err());
    }
}
