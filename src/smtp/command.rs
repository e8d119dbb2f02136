//! Parsing one command line into a [`Command`].
//!
//! `smtp-proto` parses the verb and the ESMTP parameters. The address of `MAIL FROM` and
//! `RCPT TO` is taken by the routing core's RFC 5321 path parser instead, because
//! smtp-proto removes the quotes of a quoted local part (`"a b"@x` would become the
//! invalid `a b@x`). Non-UTF-8 bytes in a command are a syntax error, never a panic.

use std::borrow::Cow;

use smtp_proto::{Error as ProtoError, Request};

use crate::routing::address::{Address, parse_path};

/// A parsed SMTP command.
#[derive(Debug)]
pub enum Command {
    /// EHLO (extended) or HELO.
    Hello {
        /// The client's name for itself.
        host: String,
        /// EHLO rather than HELO.
        extended: bool,
    },
    /// MAIL FROM.
    Mail(MailCommand),
    /// RCPT TO.
    Rcpt(RcptCommand),
    /// DATA.
    Data,
    /// BDAT (not offered: answered 502).
    Bdat,
    /// RSET.
    Rset,
    /// NOOP.
    Noop,
    /// QUIT.
    Quit,
    /// VRFY.
    Vrfy,
    /// EXPN.
    Expn,
    /// HELP.
    Help,
    /// STARTTLS.
    StartTls,
    /// AUTH, ETRN, ATRN, BURL, LHLO: known, not offered here.
    NotImplemented(&'static str),
}

/// MAIL FROM with the parameters splitmx uses.
#[derive(Debug)]
pub struct MailCommand {
    /// The reverse path; `None` is the null sender `<>`.
    pub sender: Option<Address>,
    /// SIZE=, 0 when not declared.
    pub size: usize,
    /// BODY=8BITMIME.
    pub eight_bit: bool,
    /// SMTPUTF8.
    pub smtputf8: bool,
    /// Parameters kept for the spool (BODY, SMTPUTF8, RET, ENVID).
    pub params: Vec<(String, String)>,
}

/// RCPT TO with its parameters.
#[derive(Debug)]
pub struct RcptCommand {
    /// The forward path.
    pub recipient: Recipient,
    /// Parameters kept for the spool (NOTIFY, ORCPT).
    pub params: Vec<(String, String)>,
}

/// The forward path of RCPT TO.
#[derive(Debug)]
pub enum Recipient {
    /// A mailbox.
    Address(Address),
    /// `<Postmaster>` without a domain, which RFC 5321 4.5.1 requires a server to accept.
    Postmaster,
}

/// A command the session answers with a 5xx reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// Unknown verb.
    Unknown,
    /// Wrong syntax, with the expected form.
    Syntax(&'static str),
    /// A bad address, with the reason.
    Address(String),
    /// A parameter that is malformed or not supported.
    Parameter(String),
}

/// Parse one line (without CRLF).
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let Ok(text) = std::str::from_utf8(line) else {
        return Err(CommandError::Syntax("command lines must be UTF-8"));
    };
    let verb = text
        .split([' ', ':'])
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    match verb.as_str() {
        "MAIL" => return parse_mail(text),
        "RCPT" => return parse_rcpt(text),
        _ => {}
    }
    let mut framed = Vec::with_capacity(line.len() + 2);
    framed.extend_from_slice(line);
    framed.extend_from_slice(b"\r\n");
    match Request::parse(&mut framed.iter()) {
        Ok(request) => Ok(match request {
            Request::Ehlo { host } => Command::Hello {
                host: host.into_owned(),
                extended: true,
            },
            Request::Helo { host } => Command::Hello {
                host: host.into_owned(),
                extended: false,
            },
            Request::Data => Command::Data,
            Request::Bdat { .. } => Command::Bdat,
            Request::Rset => Command::Rset,
            Request::Noop { .. } => Command::Noop,
            Request::Quit => Command::Quit,
            Request::Vrfy { .. } => Command::Vrfy,
            Request::Expn { .. } => Command::Expn,
            Request::Help { .. } => Command::Help,
            Request::StartTls => Command::StartTls,
            Request::Lhlo { .. } => Command::NotImplemented("LHLO"),
            Request::Auth { .. } => Command::NotImplemented("AUTH"),
            Request::Etrn { .. } => Command::NotImplemented("ETRN"),
            Request::Atrn { .. } => Command::NotImplemented("ATRN"),
            Request::Burl { .. } => Command::NotImplemented("BURL"),
            Request::Mail { .. } | Request::Rcpt { .. } => return Err(CommandError::Unknown),
        }),
        Err(e) => Err(proto_error(e)),
    }
}

fn proto_error(e: ProtoError) -> CommandError {
    match e {
        ProtoError::UnknownCommand => CommandError::Unknown,
        ProtoError::SyntaxError { syntax } => CommandError::Syntax(syntax),
        ProtoError::InvalidParameter { param } => {
            CommandError::Parameter(format!("invalid parameter {param}"))
        }
        ProtoError::UnsupportedParameter { param } => {
            CommandError::Parameter(format!("unsupported parameter {}", clip(&param)))
        }
        ProtoError::InvalidSenderAddress | ProtoError::InvalidRecipientAddress => {
            CommandError::Address("invalid address".to_string())
        }
        _ => CommandError::Syntax("a command line"),
    }
}

/// Split `MAIL FROM:<path> params` into the path (with brackets) and the parameters.
fn split_path<'a>(text: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let rest = text.get(..keyword.len())?;
    if !rest.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = text.get(keyword.len()..)?.trim_start();
    if !rest.starts_with('<') {
        return None;
    }
    // The path ends at the first '>' outside a quoted string.
    let mut in_quote = false;
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            '>' if !in_quote => return Some((&rest[..=i], &rest[i + 1..])),
            _ => {}
        }
    }
    None
}

/// Run smtp-proto's parameter parser on `PREFIX:<x@x> params`.
fn params_request(prefix: &str, params: &str) -> Result<Request<Cow<'static, str>>, CommandError> {
    let line = format!("{prefix}:<x@example.invalid>{params}\r\n").into_bytes();
    let parsed = Request::parse(&mut line.iter()).map(|r| match r {
        Request::Mail { from } => Request::Mail {
            from: from.into_owned_cow(),
        },
        Request::Rcpt { to } => Request::Rcpt {
            to: to.into_owned_cow(),
        },
        _ => Request::Quit,
    });
    parsed.map_err(proto_error)
}

trait IntoOwnedCow {
    type Owned;
    fn into_owned_cow(self) -> Self::Owned;
}

impl IntoOwnedCow for smtp_proto::MailFrom<Cow<'_, str>> {
    type Owned = smtp_proto::MailFrom<Cow<'static, str>>;
    fn into_owned_cow(self) -> Self::Owned {
        let o = self.into_owned();
        smtp_proto::MailFrom {
            address: Cow::Owned(o.address),
            flags: o.flags,
            size: o.size,
            trans_id: o.trans_id.map(Cow::Owned),
            by: o.by,
            env_id: o.env_id.map(Cow::Owned),
            solicit: o.solicit.map(Cow::Owned),
            mtrk: None,
            auth: o.auth.map(Cow::Owned),
            hold_for: o.hold_for,
            hold_until: o.hold_until,
            mt_priority: o.mt_priority,
        }
    }
}

impl IntoOwnedCow for smtp_proto::RcptTo<Cow<'_, str>> {
    type Owned = smtp_proto::RcptTo<Cow<'static, str>>;
    fn into_owned_cow(self) -> Self::Owned {
        let o = self.into_owned();
        smtp_proto::RcptTo {
            address: Cow::Owned(o.address),
            orcpt: o.orcpt.map(Cow::Owned),
            rrvs: o.rrvs,
            flags: o.flags,
        }
    }
}

fn parse_mail(text: &str) -> Result<Command, CommandError> {
    let syntax = CommandError::Syntax("MAIL FROM:<address> [parameters]");
    let (path, params) = split_path(text, "MAIL FROM:").ok_or(syntax)?;
    let sender = parse_path(path).map_err(|e| CommandError::Address(e.to_string()))?;
    let Request::Mail { from } = params_request("MAIL FROM", params)? else {
        return Err(CommandError::Syntax("MAIL FROM:<address> [parameters]"));
    };
    let eight_bit = from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0;
    let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
    let mut kept = Vec::new();
    if eight_bit {
        kept.push(("BODY".to_string(), "8BITMIME".to_string()));
    }
    if smtputf8 {
        kept.push(("SMTPUTF8".to_string(), String::new()));
    }
    if from.flags & smtp_proto::MAIL_RET_FULL != 0 {
        kept.push(("RET".to_string(), "FULL".to_string()));
    } else if from.flags & smtp_proto::MAIL_RET_HDRS != 0 {
        kept.push(("RET".to_string(), "HDRS".to_string()));
    }
    if let Some(envid) = &from.env_id {
        kept.push(("ENVID".to_string(), envid.to_string()));
    }
    Ok(Command::Mail(MailCommand {
        sender,
        size: from.size,
        eight_bit,
        smtputf8,
        params: kept,
    }))
}

fn parse_rcpt(text: &str) -> Result<Command, CommandError> {
    let syntax = CommandError::Syntax("RCPT TO:<address> [parameters]");
    let (path, params) = split_path(text, "RCPT TO:").ok_or(syntax)?;
    let recipient = match parse_path(path) {
        _ if path.eq_ignore_ascii_case("<postmaster>") => Recipient::Postmaster,
        Ok(Some(a)) => Recipient::Address(a),
        Ok(None) => return Err(CommandError::Address("null recipient <>".to_string())),
        Err(e) => return Err(CommandError::Address(e.to_string())),
    };
    let Request::Rcpt { to } = params_request("RCPT TO", params)? else {
        return Err(CommandError::Syntax("RCPT TO:<address> [parameters]"));
    };
    let mut kept = Vec::new();
    let notify: Vec<&str> = [
        (smtp_proto::RCPT_NOTIFY_SUCCESS, "SUCCESS"),
        (smtp_proto::RCPT_NOTIFY_FAILURE, "FAILURE"),
        (smtp_proto::RCPT_NOTIFY_DELAY, "DELAY"),
        (smtp_proto::RCPT_NOTIFY_NEVER, "NEVER"),
    ]
    .iter()
    .filter(|(flag, _)| to.flags & flag != 0)
    .map(|(_, name)| *name)
    .collect();
    if !notify.is_empty() {
        kept.push(("NOTIFY".to_string(), notify.join(",")));
    }
    if let Some(orcpt) = &to.orcpt {
        kept.push(("ORCPT".to_string(), orcpt.to_string()));
    }
    Ok(Command::Rcpt(RcptCommand {
        recipient,
        params: kept,
    }))
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_and_rcpt_keep_quoted_local_parts() {
        let Ok(Command::Rcpt(r)) = parse(br#"RCPT TO:<"a b@c"@Example.com> NOTIFY=FAILURE,DELAY"#)
        else {
            panic!()
        };
        let Recipient::Address(a) = &r.recipient else {
            panic!()
        };
        assert_eq!(a.local_part(), "a b@c");
        assert!(matches!(
            parse(b"RCPT TO:<Postmaster>"),
            Ok(Command::Rcpt(RcptCommand {
                recipient: Recipient::Postmaster,
                ..
            }))
        ));
        assert_eq!(r.params, vec![("NOTIFY".into(), "FAILURE,DELAY".into())]);
        let Ok(Command::Mail(m)) = parse(b"mail from:<> SIZE=1000 BODY=8BITMIME SMTPUTF8") else {
            panic!()
        };
        assert!(m.sender.is_none());
        assert_eq!((m.size, m.eight_bit, m.smtputf8), (1000, true, true));
    }

    #[test]
    fn malformed_commands_are_errors_not_panics() {
        for line in [
            &b"RCPT TO:alice@example.com"[..],
            b"RCPT TO:<alice@@example.com>",
            b"MAIL FROM:<a@b> SIZE=x",
            b"MAIL FROM:<a@b",
            b"\xff\xfe",
            b"FOO",
            b"",
            b"RCPT TO:<>",
        ] {
            assert!(parse(line).is_err(), "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn verbs() {
        assert!(matches!(
            parse(b"EHLO client.example"),
            Ok(Command::Hello { extended: true, .. })
        ));
        assert!(matches!(
            parse(b"helo x"),
            Ok(Command::Hello {
                extended: false,
                ..
            })
        ));
        assert!(matches!(parse(b"DATA"), Ok(Command::Data)));
        assert!(matches!(parse(b"STARTTLS"), Ok(Command::StartTls)));
        assert!(matches!(parse(b"VRFY bob"), Ok(Command::Vrfy)));
        assert!(matches!(parse(b"quit"), Ok(Command::Quit)));
    }
}
