//! One delivery transaction and its per-recipient results: the common language of the
//! queue manager and the delivery agents.

use std::fmt;

/// One copy of a message for the recipients that share a next hop.
#[derive(Debug, Clone, Copy)]
pub struct Transaction<'a> {
    /// The reverse path without `<>`; empty for the null sender.
    pub sender: &'a str,
    /// MAIL FROM parameters as spooled (`BODY=8BITMIME`, `SMTPUTF8`, `RET`, `ENVID`); a
    /// parameter without a value has an empty value.
    pub mail_params: &'a [(String, String)],
    /// The recipients, in the order their results are returned.
    pub recipients: &'a [TxRecipient<'a>],
    /// The message exactly as spooled: CRLF line ends, not dot-stuffed, any bytes.
    pub body: &'a [u8],
}

/// Where a delivery agent gets the transaction it may send ahead of a message's final
/// reply: the same session's next transaction.
///
/// An agent asks at the last moment it can use the answer (the SMTP client: when the
/// message's final dot is about to go out), so that a job that arrived while the
/// message was on its way still rides behind it. Once `send` has been called, the
/// session is committed to that transaction: the next delivery on it must be the one
/// offered.
///
/// ```
/// use splitmx::delivery::{NextTransaction, Transaction};
///
/// let next = Transaction { sender: "a@example.com", mail_params: &[], recipients: &[], body: b"" };
/// let mut source = Some(&next);
/// let mut offered = 0;
/// source.take_with(&mut |t| offered += t.body.len() + 1);
/// source.take_with(&mut |_| offered += 10); // offered once only
/// assert_eq!(offered, 1);
/// ```
pub trait NextTransaction: Send {
    /// Calls `send` with the next transaction, if there is one to send ahead now.
    fn take_with(&mut self, send: &mut dyn FnMut(&Transaction<'_>));
}

/// A transaction known in advance is offered once.
impl NextTransaction for Option<&Transaction<'_>> {
    fn take_with(&mut self, send: &mut dyn FnMut(&Transaction<'_>)) {
        if let Some(next) = self.take() {
            send(next);
        }
    }
}

/// One recipient of a [`Transaction`].
#[derive(Debug, Clone, Copy)]
pub struct TxRecipient<'a> {
    /// The address to deliver to (after any rewrite), without `<>`.
    pub address: &'a str,
    /// RCPT TO parameters as spooled (`NOTIFY`, `ORCPT`).
    pub params: &'a [(String, String)],
}

/// What became of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultKind {
    /// Accepted by the next hop (or written to its mailbox): done.
    Delivered,
    /// Failed temporarily: retry later.
    Deferred,
    /// Failed permanently: bounce.
    Bounced,
}

impl ResultKind {
    /// The lower-case name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultKind::Delivered => "delivered",
            ResultKind::Deferred => "deferred",
            ResultKind::Bounced => "bounced",
        }
    }
}

impl fmt::Display for ResultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of delivering to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptResult {
    /// Delivered, deferred or bounced.
    pub kind: ResultKind,
    /// The enhanced status code (RFC 3463), e.g. `2.0.0`, `4.4.1`, `5.1.1`.
    pub status: String,
    /// One line for logs, the queue listing and the DSN: the remote reply (`550 5.1.1
    /// <bob@example.com>: user unknown`) or what went wrong locally (`connect to
    /// mx1.example.com[192.0.2.1]:25: connection refused`). No CR or LF.
    pub detail: String,
    /// The host that answered, e.g. `mx1.example.com[192.0.2.1]:25`; `None` when no
    /// remote host replied (connection failures, local delivery).
    pub remote: Option<String>,
    /// Whether `detail` is a reply from `remote` (a DSN then writes `Diagnostic-Code:
    /// smtp; ...`) rather than a local error.
    pub remote_reply: bool,
}

impl RcptResult {
    /// A local result: no remote reply behind it.
    pub fn local(kind: ResultKind, status: &str, detail: impl Into<String>) -> RcptResult {
        RcptResult {
            kind,
            status: status.to_string(),
            detail: one_line(detail.into()),
            remote: None,
            remote_reply: false,
        }
    }

    /// A result carrying `remote`'s reply.
    pub fn reply(
        kind: ResultKind,
        status: &str,
        detail: impl Into<String>,
        remote: impl Into<String>,
    ) -> RcptResult {
        RcptResult {
            kind,
            status: status.to_string(),
            detail: one_line(detail.into()),
            remote: Some(remote.into()),
            remote_reply: true,
        }
    }
}

/// Replaces CR, LF and other control characters so a detail stays one printable line.
fn one_line(s: String) -> String {
    if !s.chars().any(char::is_control) {
        return s;
    }
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_stay_on_one_line() {
        let r = RcptResult::local(ResultKind::Deferred, "4.4.1", "a\r\nb\tc");
        assert_eq!(r.detail, "a  b c");
    }
}
