//! Delivery status notifications: the bounce and the delay warning a sender gets (RFC 3464
//! report, RFC 3461 DSN parameters, RFC 6522 `multipart/report`, RFC 6533 for UTF-8).
//!
//! Input: the spooled original (envelope, parameters, bytes) and the outcomes of the
//! recipients to report. Output: the bytes of a complete message (CRLF line ends) to send
//! from the null sender `<>` to the original sender, plus what its transmission needs
//! (`BODY=8BITMIME`, `SMTPUTF8`). Nothing here does I/O or reads the clock.
//!
//! Who gets a notice: never the null sender ([`may_bounce`]); per recipient, its `NOTIFY`
//! parameter decides ([`wants_notice`]): `NEVER` none, a list only what it names, none
//! given failures and delays. [`build`] applies both and returns `None` when nobody is
//! left to report.
//!
//! The message:
//!
//! ```text
//! From: Mail Delivery System <MAILER-DAEMON@HOST>
//! To: <sender>
//! Subject: Undelivered Mail Returned to Sender | Delayed Mail (still being retried)
//! Auto-Submitted: auto-replied                       (RFC 3834: no auto-reply to it)
//! Content-Type: multipart/report; report-type=delivery-status; boundary="..."
//!
//! 1. text/plain              what happened, one paragraph per recipient
//! 2. message/delivery-status Reporting-MTA, Arrival-Date, Original-Envelope-Id; per
//!                            recipient Original-Recipient (from ORCPT), Final-Recipient,
//!                            Action (failed | delayed), Status, Remote-MTA,
//!                            Diagnostic-Code, Last-Attempt-Date, Will-Retry-Until
//! 3. text/rfc822-headers     the original's header section, or with RET=FULL the whole
//!    or message/rfc822       original (up to 10 MiB, see `original.rs`)
//! ```
//!
//! `Diagnostic-Code` is `smtp; REPLY` when a remote server answered, and
//! `X-Splitmx; TEXT` for a local error (connection refused, bad mailbox name), in the
//! manner of Postfix's `X-Postfix;`.
//!
//! Internationalised reports: when the sender or a reported recipient address (final or
//! ORCPT) is not ASCII, the report is `message/global-delivery-status` with UTF-8
//! addresses as `utf-8; ...` (RFC 6533 unitext), and [`Dsn::smtputf8`] says the notice
//! must be sent with SMTPUTF8 (the sender's side already used it to reach us). Otherwise
//! every field and the text part are ASCII (other characters of a remote reply become
//! `?`), even when the original used SMTPUTF8, so the notice can cross a relay without
//! it; only a returned 8-bit original then makes the notice 8-bit (`BODY=8BITMIME`).
//! The boundary is random and checked against every part.

mod fields;
mod original;
mod parse;

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::delivery::RcptResult;
use crate::smtp::received::rfc5322_date;
use crate::spool::{NewMessage, QueueId, SpooledRecipient};

use fields::{
    MAX_DETAIL, address_field, clip, is_status, needs_utf8, one_line, orcpt, param, push_field,
    push_wrapped, remote_host, wants_full,
};

pub use original::{MAX_FULL, MAX_HEADERS};

/// Longest address shown in the text part and the `To:` field (a spooled address has at
/// most 256 octets; this only guards the line limit against a damaged spool).
const MAX_ADDRESS: usize = 320;
pub use parse::{
    DsnParseError, Field, MAX_INPUT as MAX_PARSE_INPUT, ParsedDsn, ParsedPart, field, parse,
};

/// Which notice to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoticeKind {
    /// The recipients failed for good (`Action: failed`): a bounce.
    Failure,
    /// The recipients are still being retried (`Action: delayed`): a warning.
    Delay,
}

/// What a notice is built from.
#[derive(Debug, Clone)]
pub struct BounceInput<'a> {
    /// The gateway's host name (`Reporting-MTA`, `From:`, `Message-ID`).
    pub reporting_mta: &'a str,
    /// The original message as spooled.
    pub original: &'a NewMessage,
    /// The recipients to report, in the order to report them.
    pub recipients: Vec<ReportedRecipient<'a>>,
    /// Bounce or delay warning.
    pub kind: NoticeKind,
    /// The notice's `Date:`.
    pub now: SystemTime,
    /// Until when the recipients are retried (`Will-Retry-Until`, delay notices only).
    pub retry_until: Option<SystemTime>,
}

/// One recipient to report.
#[derive(Debug, Clone, Copy)]
pub struct ReportedRecipient<'a> {
    /// Index into `original.recipients`.
    pub index: usize,
    /// Its latest result.
    pub result: &'a RcptResult,
    /// When delivery to it was last tried.
    pub last_attempt: Option<SystemTime>,
}

/// A notice ready to send from `<>` to [`Dsn::recipient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// The whole message, CRLF line ends.
    pub message: Vec<u8>,
    /// Where it goes: the original's sender.
    pub recipient: String,
    /// Some byte is 8-bit: send with `BODY=8BITMIME`.
    pub eight_bit: bool,
    /// An internationalised notice (UTF-8 addresses or headers): send with `SMTPUTF8`.
    pub smtputf8: bool,
    /// How many recipients it reports.
    pub reported: usize,
}

impl Dsn {
    /// The MAIL FROM parameters for sending it, in the spool's form.
    pub fn mail_params(&self) -> Vec<(String, String)> {
        let mut params = Vec::new();
        if self.eight_bit {
            params.push(("BODY".to_string(), "8BITMIME".to_string()));
        }
        if self.smtputf8 {
            params.push(("SMTPUTF8".to_string(), String::new()));
        }
        params
    }
}

/// False for a message from the null sender: a notice is never sent to `<>` (RFC 5321
/// §4.5.5), which is what keeps two mail systems from bouncing at each other forever.
pub fn may_bounce(original: &NewMessage) -> bool {
    !original.sender.trim().is_empty()
}

/// Whether `recipient` asked for notices of `kind` (its `NOTIFY` parameter).
pub fn wants_notice(recipient: &SpooledRecipient, kind: NoticeKind) -> bool {
    fields::notify_allows(&recipient.params, kind)
}

/// The indexes among `candidates` of the recipients of `original` that get a notice of
/// `kind`: none for a null-sender original, otherwise those [`wants_notice`] allows.
pub fn notice_recipients(
    original: &NewMessage,
    candidates: impl IntoIterator<Item = usize>,
    kind: NoticeKind,
) -> Vec<usize> {
    if !may_bounce(original) {
        return Vec::new();
    }
    candidates
        .into_iter()
        .filter(|&i| {
            original
                .recipients
                .get(i)
                .is_some_and(|r| wants_notice(r, kind))
        })
        .collect()
}

/// A recipient ready to be written: resolved, allowed, with its field values.
struct Reported<'a> {
    rcpt: &'a SpooledRecipient,
    result: &'a RcptResult,
    last_attempt: Option<SystemTime>,
    orcpt: Option<(String, String)>,
}

/// Build the notice, or `None` when there is nobody to send it to (null sender) or no
/// reported recipient wants it.
pub fn build(input: &BounceInput) -> Option<Dsn> {
    let original = input.original;
    if !may_bounce(original) {
        return None;
    }
    let recipients: Vec<Reported> = input
        .recipients
        .iter()
        .filter_map(|r| {
            let rcpt = original.recipients.get(r.index)?;
            wants_notice(rcpt, input.kind).then(|| Reported {
                rcpt,
                result: r.result,
                last_attempt: r.last_attempt,
                orcpt: param(&rcpt.params, "ORCPT").map(|v| {
                    let (kind, address) = orcpt(v);
                    (kind.into_owned(), address.into_owned())
                }),
            })
        })
        .collect();
    if recipients.is_empty() {
        return None;
    }
    let host = host_name(input.reporting_mta);
    // Internationalised only when an address needs it: an ASCII notice about a message
    // that merely used SMTPUTF8 can still go through a relay without SMTPUTF8.
    let global = needs_utf8(&original.sender)
        || recipients.iter().any(|r| {
            needs_utf8(&r.rcpt.deliver_to) || r.orcpt.as_ref().is_some_and(|(_, a)| needs_utf8(a))
        });
    let want_full = input.kind == NoticeKind::Failure && wants_full(&original.params);
    let attachment = original::attachment(&original.body, want_full, global);

    let text = text_part(input, &host, &recipients, &attachment, global);
    let status = status_part(input, &host, &recipients, global);
    let parts: [(String, &[u8]); 3] = [
        (
            format!(
                "Content-Description: Notification\r\nContent-Type: text/plain; charset={}\r\n{}",
                if text.is_ascii() { "us-ascii" } else { "utf-8" },
                cte(!text.is_ascii()),
            ),
            text.as_bytes(),
        ),
        (
            format!(
                "Content-Description: Delivery report\r\nContent-Type: {}\r\n{}",
                if global {
                    "message/global-delivery-status"
                } else {
                    "message/delivery-status"
                },
                cte(!status.is_ascii()),
            ),
            status.as_bytes(),
        ),
        (
            format!(
                "Content-Description: {}\r\nContent-Type: {}\r\n{}",
                attachment.description,
                attachment.content_type,
                cte(attachment.eight_bit),
            ),
            &attachment.bytes,
        ),
    ];
    let eight_bit_body = parts.iter().any(|(_, body)| !body.is_ascii());
    let boundary = boundary(parts.iter().map(|(_, body)| *body));

    let subject = match input.kind {
        NoticeKind::Failure => "Undelivered Mail Returned to Sender",
        NoticeKind::Delay => "Delayed Mail (still being retried)",
    };
    let sender = clip(&one_line(&original.sender, true), MAX_ADDRESS).into_owned();
    let mut head = String::with_capacity(1024);
    push_field(
        &mut head,
        "From",
        &format!("Mail Delivery System <MAILER-DAEMON@{host}>"),
    );
    push_field(&mut head, "To", &format!("<{sender}>"));
    push_field(&mut head, "Subject", subject);
    push_field(&mut head, "Date", &rfc5322_date(input.now));
    push_field(
        &mut head,
        "Message-ID",
        &format!("<{}.dsn@{host}>", QueueId::new()),
    );
    push_field(&mut head, "Auto-Submitted", "auto-replied");
    push_field(&mut head, "MIME-Version", "1.0");
    push_field(
        &mut head,
        "Content-Type",
        &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
    );
    if eight_bit_body {
        push_field(&mut head, "Content-Transfer-Encoding", "8bit");
    }
    head.push_str("\r\nThis is a MIME-encapsulated delivery status notification.\r\n");

    let size = head.len()
        + parts
            .iter()
            .map(|(h, b)| h.len() + b.len() + 100)
            .sum::<usize>();
    let mut message = Vec::with_capacity(size);
    message.extend_from_slice(head.as_bytes());
    for (part_head, body) in &parts {
        message.extend_from_slice(format!("\r\n--{boundary}\r\n{part_head}\r\n").as_bytes());
        message.extend_from_slice(body);
    }
    message.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

    Some(Dsn {
        message,
        recipient: original.sender.clone(),
        eight_bit: eight_bit_body || !head.is_ascii(),
        smtputf8: global,
        reported: recipients.len(),
    })
}

/// `Content-Transfer-Encoding: 8bit` line when needed.
fn cte(eight_bit: bool) -> &'static str {
    if eight_bit {
        "Content-Transfer-Encoding: 8bit\r\n"
    } else {
        ""
    }
}

/// Our host name, as it may appear in addresses and fields.
fn host_name(h: &str) -> String {
    let h: String = h
        .chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '@' | '"' | '\\' | '(' | ')'))
        .take(255)
        .collect();
    if h.is_empty() {
        "localhost".to_string()
    } else {
        h
    }
}

/// A boundary that occurs in none of `bodies`: `=_` cannot appear in quoted-printable
/// text, and the queue-id part is random.
fn boundary<'b>(bodies: impl Iterator<Item = &'b [u8]> + Clone) -> String {
    let mut attempt = 0u32;
    loop {
        let candidate = format!("=_splitmx_{}_{attempt}", QueueId::new());
        let found = bodies.clone().any(|b| {
            b.windows(candidate.len())
                .any(|w| w == candidate.as_bytes())
        });
        if !found {
            return candidate;
        }
        attempt += 1;
    }
}

/// The human-readable part.
fn text_part(
    input: &BounceInput,
    host: &str,
    recipients: &[Reported],
    attachment: &original::Attachment,
    utf8: bool,
) -> String {
    let mut t = String::with_capacity(1024);
    let _ = write!(t, "This is the mail system at {host}.\r\n\r\n");
    match input.kind {
        NoticeKind::Failure => {
            t.push_str("Your message could not be delivered to the recipients below,\r\n");
            t.push_str("and the mail system has given up trying.\r\n");
        }
        NoticeKind::Delay => {
            t.push_str("THIS IS A WARNING ONLY. YOU DO NOT NEED TO RESEND YOUR MESSAGE.\r\n\r\n");
            let until = match input.retry_until {
                Some(until) => format!(" until {}", rfc5322_date(until)),
                None => String::new(),
            };
            let paragraph = format!(
                "Your message, received {}, could not be delivered yet to the \
                 recipients below. The mail system keeps trying{until}.",
                rfc5322_date(input.original.received_at),
            );
            push_wrapped(&mut t, "", 0, &paragraph);
        }
    }
    t.push_str("\r\n");
    for r in recipients {
        let address = |a: &str| clip(&one_line(a, utf8), MAX_ADDRESS).into_owned();
        let mut who = format!("<{}>", address(&r.rcpt.deliver_to));
        if !r.rcpt.original.is_empty() && r.rcpt.original != r.rcpt.deliver_to {
            let _ = write!(who, " (sent to <{}>)", address(&r.rcpt.original));
        }
        who.push(':');
        let detail = one_line(&r.result.detail, utf8);
        let detail = clip(&detail, MAX_DETAIL);
        let what = match (&r.result.remote, r.result.remote_reply) {
            (Some(remote), true) => format!(
                "host {} said: {detail}",
                clip(&one_line(remote, utf8), MAX_ADDRESS)
            ),
            _ => detail.into_owned(),
        };
        t.push_str(&who);
        t.push_str("\r\n");
        push_wrapped(&mut t, "    ", 4, &what);
        t.push_str("\r\n");
    }
    if attachment.too_big {
        let _ = write!(
            t,
            "The message was larger than {} MiB; only its headers are attached.\r\n",
            MAX_FULL >> 20
        );
    } else if attachment.full {
        t.push_str("Your message is attached.\r\n");
    } else {
        t.push_str("The headers of your message are attached.\r\n");
    }
    t
}

/// The machine-readable part: per-message fields, then one block per recipient.
fn status_part(input: &BounceInput, host: &str, recipients: &[Reported], utf8: bool) -> String {
    let original = input.original;
    let mut s = String::with_capacity(256 + 400 * recipients.len());
    if let Some(envid) = param(&original.params, "ENVID") {
        let envid = one_line(envid, utf8);
        push_field(&mut s, "Original-Envelope-Id", &clip(&envid, MAX_DETAIL));
    }
    push_field(&mut s, "Reporting-MTA", &format!("dns; {host}"));
    push_field(&mut s, "Arrival-Date", &rfc5322_date(original.received_at));
    push_field(&mut s, "X-Splitmx-Queue-ID", original.id.as_str());
    push_field(
        &mut s,
        "X-Splitmx-Sender",
        &clip(&address_field("rfc822", &original.sender), MAX_DETAIL),
    );
    for r in recipients {
        s.push_str("\r\n");
        if let Some((kind, address)) = &r.orcpt {
            push_field(
                &mut s,
                "Original-Recipient",
                &clip(&address_field(kind, address), MAX_DETAIL),
            );
        }
        push_field(
            &mut s,
            "Final-Recipient",
            &clip(&address_field("rfc822", &r.rcpt.deliver_to), MAX_DETAIL),
        );
        let (action, fallback, class) = match input.kind {
            NoticeKind::Failure => ("failed", "5.0.0", ['4', '5']),
            NoticeKind::Delay => ("delayed", "4.0.0", ['4', '4']),
        };
        push_field(&mut s, "Action", action);
        let status = r.result.status.trim();
        let status = if is_status(status) && status.starts_with(class) {
            status
        } else {
            fallback
        };
        push_field(&mut s, "Status", status);
        if let Some(remote) = &r.result.remote {
            let remote = one_line(remote_host(remote), utf8);
            push_field(
                &mut s,
                "Remote-MTA",
                &format!("dns; {}", clip(&remote, MAX_DETAIL)),
            );
        }
        let detail = one_line(&r.result.detail, utf8);
        if !detail.is_empty() {
            let kind = if r.result.remote_reply {
                "smtp"
            } else {
                "X-Splitmx"
            };
            push_field(
                &mut s,
                "Diagnostic-Code",
                &format!("{kind}; {}", clip(&detail, MAX_DETAIL)),
            );
        }
        if let Some(t) = r.last_attempt {
            push_field(&mut s, "Last-Attempt-Date", &rfc5322_date(t));
        }
        if input.kind == NoticeKind::Delay
            && let Some(t) = input.retry_until
        {
            push_field(&mut s, "Will-Retry-Until", &rfc5322_date(t));
        }
    }
    s
}
