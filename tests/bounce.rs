//! Delivery status notifications as the sender receives them: built from a spooled
//! message and recipient results, then read back field by field.

#![cfg(feature = "server")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use splitmx::delivery::bounce::{
    self, BounceInput, Dsn, MAX_FULL, NoticeKind, ParsedDsn, ReportedRecipient,
};
use splitmx::delivery::{RcptResult, ResultKind};
use splitmx::spool::{NewMessage, SpooledRecipient};

const HOST: &str = "mx.test.example";
/// 2026-01-01 00:00:00 UTC.
const T0: u64 = 1_767_225_600;

const ORIGINAL: &str = "Received: from client.example ([192.0.2.9])\r\n\
    \tby mx.test.example with ESMTP id 0K8ZQ3XG4A7MB2NR;\r\n\
    \tThu, 1 Jan 2026 00:00:00 +0000\r\n\
    From: Sender <sender@example.org>\r\n\
    To: bob@example.com, carol@example.com\r\n\
    Subject: quarterly figures\r\n\
    Message-ID: <figures@example.org>\r\n\
    \r\n\
    The secret body text.\r\n\
    .\r\n";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0 + secs)
}

fn rcpt(original: &str, deliver_to: &str, params: &[(&str, &str)]) -> SpooledRecipient {
    SpooledRecipient {
        original: original.to_string(),
        deliver_to: deliver_to.to_string(),
        route: "m365".to_string(),
        route_kind: "smtp:[192.0.2.1]:25".to_string(),
        provenance: "example.com.yaml:3".to_string(),
        tls: String::new(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn message(
    sender: &str,
    params: &[(&str, &str)],
    recipients: Vec<SpooledRecipient>,
    body: &[u8],
) -> NewMessage {
    NewMessage {
        id: "0K8ZQ3XG4A7MB2NR".parse().unwrap(),
        received_at: at(0),
        client: "[192.0.2.9]:52100 (client.example)".to_string(),
        sender: sender.to_string(),
        recipients,
        table_version: "0123456789abcdef".to_string(),
        body: body.to_vec(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn unknown_user() -> RcptResult {
    RcptResult::reply(
        ResultKind::Bounced,
        "5.1.1",
        "550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown",
        "mx1.example.net[192.0.2.1]:25",
    )
}

fn refused() -> RcptResult {
    RcptResult::local(
        ResultKind::Deferred,
        "4.4.1",
        "connect to mx1.example.net[192.0.2.1]:25: Connection refused",
    )
}

fn build(original: &NewMessage, kind: NoticeKind, results: &[(usize, &RcptResult)]) -> Option<Dsn> {
    bounce::build(&BounceInput {
        reporting_mta: HOST,
        original,
        recipients: results
            .iter()
            .map(|&(index, result)| ReportedRecipient {
                index,
                result,
                last_attempt: Some(at(3600)),
            })
            .collect(),
        kind,
        now: at(7200),
        retry_until: (kind == NoticeKind::Delay).then(|| at(5 * 86_400)),
    })
}

/// Parse the notice back and check what holds for every notice, independently of the
/// library's own parser where it is cheap to: CRLF line ends, short lines, the boundary
/// only on delimiter lines.
fn read(dsn: &Dsn) -> ParsedDsn<'_> {
    let parsed = bounce::parse(&dsn.message)
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&dsn.message)));
    let text = &dsn.message;
    assert!(text.ends_with(b"\r\n"));
    let head_end = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    // The header section is folded under 78 columns.
    for line in text[..head_end].split(|b| *b == b'\n') {
        assert!(line.len() <= 79, "{:?}", String::from_utf8_lossy(line));
    }
    let mut delimiters = 0;
    for line in text[head_end + 4..].split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(!line.contains(&b'\r'), "bare CR in {line:?}");
        assert!(line.len() <= 998, "line of {} octets", line.len());
        let b = parsed.boundary.as_bytes();
        if line.windows(b.len()).any(|w| w == b) {
            let dashed = [b"--", b].concat();
            assert!(
                line == dashed.as_slice() || line == [dashed.as_slice(), b"--"].concat().as_slice(),
                "boundary inside a line: {:?}",
                String::from_utf8_lossy(line)
            );
            delimiters += 1;
        }
    }
    assert_eq!(delimiters, parsed.parts.len() + 1);
    assert_eq!(parsed.header("Auto-Submitted"), Some("auto-replied"));
    assert_eq!(parsed.header("MIME-Version"), Some("1.0"));
    assert!(parsed.header("Date").is_some());
    let id = parsed.header("Message-ID").unwrap();
    assert!(
        id.starts_with('<') && id.ends_with(&format!("@{HOST}>")),
        "{id}"
    );
    assert_eq!(
        parsed.header("From"),
        Some("Mail Delivery System <MAILER-DAEMON@mx.test.example>")
    );
    assert_eq!(parsed.parts.len(), 3);
    assert_eq!(parsed.parts[0].content_type(), "text/plain");
    parsed
}

fn text(part: &bounce::ParsedPart) -> String {
    String::from_utf8(part.body.to_vec()).unwrap()
}

#[test]
fn failure_with_two_recipients_one_with_orcpt() {
    let original = message(
        "sender@example.org",
        &[("BODY", "8BITMIME")],
        vec![
            rcpt(
                "Bob@example.com",
                "bob@example-com.mail.protection.outlook.com",
                &[
                    ("NOTIFY", "FAILURE"),
                    ("ORCPT", "rfc822;Bob+2Bold@example.com"),
                ],
            ),
            rcpt("carol@example.com", "carol@example.com", &[]),
        ],
        ORIGINAL.as_bytes(),
    );
    let (r0, r1) = (unknown_user(), refused());
    let dsn = build(&original, NoticeKind::Failure, &[(0, &r0), (1, &r1)]).unwrap();
    assert_eq!(dsn.recipient, "sender@example.org");
    assert_eq!(dsn.reported, 2);
    assert!(!dsn.eight_bit && !dsn.smtputf8);
    assert!(dsn.mail_params().is_empty());

    let d = read(&dsn);
    assert_eq!(d.header("To"), Some("<sender@example.org>"));
    assert_eq!(
        d.header("Subject"),
        Some("Undelivered Mail Returned to Sender")
    );
    assert_eq!(d.header("Date"), Some("Thu, 1 Jan 2026 02:00:00 +0000"));
    assert_eq!(d.parts[1].content_type(), "message/delivery-status");
    assert_eq!(
        text(&d.parts[1]),
        "Reporting-MTA: dns; mx.test.example\r\n\
         Arrival-Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n\
         X-Splitmx-Queue-ID: 0K8ZQ3XG4A7MB2NR\r\n\
         X-Splitmx-Sender: rfc822; sender@example.org\r\n\
         \r\n\
         Original-Recipient: rfc822; Bob+old@example.com\r\n\
         Final-Recipient: rfc822; bob@example-com.mail.protection.outlook.com\r\n\
         Action: failed\r\n\
         Status: 5.1.1\r\n\
         Remote-MTA: dns; mx1.example.net\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 <bob@example.com>: Recipient address\r\n \
         rejected: User unknown\r\n\
         Last-Attempt-Date: Thu, 1 Jan 2026 01:00:00 +0000\r\n\
         \r\n\
         Final-Recipient: rfc822; carol@example.com\r\n\
         Action: failed\r\n\
         Status: 4.4.1\r\n\
         Diagnostic-Code: X-Splitmx; connect to mx1.example.net[192.0.2.1]:25:\r\n \
         Connection refused\r\n\
         Last-Attempt-Date: Thu, 1 Jan 2026 01:00:00 +0000\r\n"
    );
    assert_eq!(d.recipients.len(), 2);
    assert_eq!(
        d.recipient_field(0, "Diagnostic-Code"),
        Some("smtp; 550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown")
    );

    let human = text(&d.parts[0]);
    assert!(
        human.contains("This is the mail system at mx.test.example."),
        "{human}"
    );
    assert!(
        human.contains(
            "\r\n\r\n<bob@example-com.mail.protection.outlook.com> (sent to <Bob@example.com>):\r\n    \
             host mx1.example.net[192.0.2.1]:25 said: 550 5.1.1 <bob@example.com>:\r\n    \
             Recipient address rejected: User unknown\r\n\r\n"
        ),
        "{human}"
    );
    assert!(
        human.contains("<carol@example.com>:\r\n    connect to mx1.example.net[192.0.2.1]:25:"),
        "{human}"
    );
    assert!(
        human.contains("The headers of your message are attached."),
        "{human}"
    );

    // No RET: the header section only, never the body.
    assert_eq!(d.parts[2].content_type(), "text/rfc822-headers");
    let (headers, _) = ORIGINAL.split_once("\r\n\r\n").unwrap();
    assert_eq!(text(&d.parts[2]), format!("{headers}\r\n"));
    assert!(!String::from_utf8_lossy(&dsn.message).contains("secret body"));
}

#[test]
fn delay_notice() {
    let original = message(
        "sender@example.org",
        &[("RET", "FULL")],
        vec![
            rcpt(
                "carol@example.com",
                "carol@example.com",
                &[("NOTIFY", "DELAY,FAILURE")],
            ),
            rcpt("dave@example.com", "dave@example.com", &[]),
        ],
        ORIGINAL.as_bytes(),
    );
    let r = refused();
    let dsn = build(&original, NoticeKind::Delay, &[(0, &r), (1, &r)]).unwrap();
    let d = read(&dsn);
    assert_eq!(
        d.header("Subject"),
        Some("Delayed Mail (still being retried)")
    );
    for i in 0..2 {
        assert_eq!(d.recipient_field(i, "Action"), Some("delayed"));
        assert_eq!(d.recipient_field(i, "Status"), Some("4.4.1"));
        assert_eq!(
            d.recipient_field(i, "Will-Retry-Until"),
            Some("Tue, 6 Jan 2026 00:00:00 +0000")
        );
        assert_eq!(
            d.recipient_field(i, "Last-Attempt-Date"),
            Some("Thu, 1 Jan 2026 01:00:00 +0000")
        );
        assert_eq!(d.recipient_field(i, "Remote-MTA"), None);
    }
    let human = text(&d.parts[0]);
    assert!(human.contains("THIS IS A WARNING ONLY"), "{human}");
    let unwrapped = human.replace("\r\n", " ");
    assert!(
        unwrapped.contains(
            "received Thu, 1 Jan 2026 00:00:00 +0000, could not be delivered yet to the \
             recipients below. The mail system keeps trying until Tue, 6 Jan 2026 00:00:00 +0000."
        ),
        "{human}"
    );
    // A delay notice returns headers only, whatever RET says.
    assert_eq!(d.parts[2].content_type(), "text/rfc822-headers");
    assert!(!text(&d.parts[2]).contains("secret body"));
}

#[test]
fn ret_full_returns_the_whole_message() {
    let recipients = || vec![rcpt("bob@example.com", "bob@example.com", &[])];
    let r = unknown_user();

    let full = message(
        "s@example.org",
        &[("RET", "FULL")],
        recipients(),
        ORIGINAL.as_bytes(),
    );
    let dsn = build(&full, NoticeKind::Failure, &[(0, &r)]).unwrap();
    let d = read(&dsn);
    assert_eq!(d.parts[2].content_type(), "message/rfc822");
    assert_eq!(d.parts[2].body, ORIGINAL.as_bytes());
    assert!(text(&d.parts[0]).contains("Your message is attached."));

    let hdrs = message(
        "s@example.org",
        &[("RET", "HDRS")],
        recipients(),
        ORIGINAL.as_bytes(),
    );
    let dsn = build(&hdrs, NoticeKind::Failure, &[(0, &r)]).unwrap();
    let d = read(&dsn);
    assert_eq!(d.parts[2].content_type(), "text/rfc822-headers");
    assert!(!text(&d.parts[2]).contains("secret body"));

    // Bare LF in the spooled original: the returned copy is made CRLF throughout.
    let lf = ORIGINAL.replace("\r\n", "\n");
    let bare = message(
        "s@example.org",
        &[("RET", "FULL")],
        recipients(),
        lf.as_bytes(),
    );
    let dsn = build(&bare, NoticeKind::Failure, &[(0, &r)]).unwrap();
    assert_eq!(read(&dsn).parts[2].body, ORIGINAL.as_bytes());
}

#[test]
fn ret_full_over_the_limit_returns_headers() {
    let mut body = ORIGINAL.as_bytes().to_vec();
    while body.len() <= MAX_FULL {
        body.extend_from_slice(&[b'x'; 998]);
        body.extend_from_slice(b"\r\n");
    }
    let original = message(
        "s@example.org",
        &[("RET", "FULL")],
        vec![rcpt("bob@example.com", "bob@example.com", &[])],
        &body,
    );
    let r = unknown_user();
    let dsn = build(&original, NoticeKind::Failure, &[(0, &r)]).unwrap();
    assert!(dsn.message.len() < 64 * 1024);
    let d = read(&dsn);
    assert_eq!(d.parts[2].content_type(), "text/rfc822-headers");
    assert!(text(&d.parts[0]).contains("larger than 10 MiB; only its headers are attached"));
}

#[test]
fn envid_is_reported_first() {
    let original = message(
        "s@example.org",
        &[("ENVID", "QQ314159 x")],
        vec![rcpt("bob@example.com", "bob@example.com", &[])],
        ORIGINAL.as_bytes(),
    );
    let r = unknown_user();
    let dsn = build(&original, NoticeKind::Failure, &[(0, &r)]).unwrap();
    let d = read(&dsn);
    assert_eq!(
        d.per_message[0],
        ("Original-Envelope-Id".to_string(), "QQ314159 x".to_string())
    );

    let without = message(
        "s@example.org",
        &[],
        vec![rcpt("bob@example.com", "bob@example.com", &[])],
        ORIGINAL.as_bytes(),
    );
    let dsn = build(&without, NoticeKind::Failure, &[(0, &r)]).unwrap();
    assert_eq!(
        bounce::field(&read(&dsn).per_message, "Original-Envelope-Id"),
        None
    );
}

#[test]
fn notify_decides_who_is_reported() {
    let original = message(
        "s@example.org",
        &[],
        vec![
            rcpt(
                "never@example.com",
                "never@example.com",
                &[("NOTIFY", "NEVER")],
            ),
            rcpt(
                "success@example.com",
                "success@example.com",
                &[("NOTIFY", "SUCCESS")],
            ),
            rcpt(
                "delay@example.com",
                "delay@example.com",
                &[("NOTIFY", "DELAY")],
            ),
            rcpt(
                "failure@example.com",
                "failure@example.com",
                &[("NOTIFY", "FAILURE")],
            ),
            rcpt("plain@example.com", "plain@example.com", &[]),
        ],
        ORIGINAL.as_bytes(),
    );
    let all = 0..5;
    assert_eq!(
        bounce::notice_recipients(&original, all.clone(), NoticeKind::Failure),
        [3, 4]
    );
    assert_eq!(
        bounce::notice_recipients(&original, all.clone(), NoticeKind::Delay),
        [2, 4]
    );
    assert_eq!(
        bounce::notice_recipients(&original, [0, 1, 9], NoticeKind::Failure),
        [0usize; 0]
    );

    let r = unknown_user();
    let every: Vec<(usize, &RcptResult)> = (0..5).map(|i| (i, &r)).collect();
    let dsn = build(&original, NoticeKind::Failure, &every).unwrap();
    assert_eq!(dsn.reported, 2);
    let d = read(&dsn);
    let finals: Vec<&str> = (0..d.recipients.len())
        .map(|i| d.recipient_field(i, "Final-Recipient").unwrap())
        .collect();
    assert_eq!(
        finals,
        ["rfc822; failure@example.com", "rfc822; plain@example.com"]
    );
    let human = text(&d.parts[0]);
    assert!(!human.contains("never@") && !human.contains("success@") && !human.contains("delay@"));

    let dsn = build(&original, NoticeKind::Delay, &every).unwrap();
    let d = read(&dsn);
    assert_eq!(
        d.recipient_field(0, "Final-Recipient"),
        Some("rfc822; delay@example.com")
    );
    assert_eq!(
        d.recipient_field(1, "Final-Recipient"),
        Some("rfc822; plain@example.com")
    );

    // Only recipients that want nothing: no notice at all.
    assert_eq!(
        build(&original, NoticeKind::Failure, &[(0, &r), (1, &r), (2, &r)]),
        None
    );
    assert_eq!(
        build(&original, NoticeKind::Delay, &[(0, &r), (3, &r)]),
        None
    );
}

#[test]
fn never_a_notice_to_the_null_sender() {
    let original = message(
        "",
        &[],
        vec![rcpt("bob@example.com", "bob@example.com", &[])],
        ORIGINAL.as_bytes(),
    );
    assert!(!bounce::may_bounce(&original));
    let r = unknown_user();
    assert_eq!(build(&original, NoticeKind::Failure, &[(0, &r)]), None);
    assert_eq!(build(&original, NoticeKind::Delay, &[(0, &r)]), None);
    assert!(bounce::notice_recipients(&original, [0], NoticeKind::Failure).is_empty());
    assert!(bounce::may_bounce(&message(
        "a@b.example",
        &[],
        vec![],
        b""
    )));
}

#[test]
fn utf8_sender_and_recipient_make_an_international_report() {
    let body = "From: J\u{f6}rg <j\u{f6}rg@b\u{fc}ro.example>\r\n\
                Subject: Gr\u{fc}\u{df}e\r\n\r\nHall\u{f6}\r\n";
    let original = message(
        "j\u{f6}rg@b\u{fc}ro.example",
        &[("SMTPUTF8", ""), ("BODY", "8BITMIME")],
        vec![
            rcpt(
                "\u{7528}\u{6237}+x@example.com",
                "\u{7528}\u{6237}+x@example.com",
                &[("ORCPT", "\u{7528}\u{6237}+x@example.com")],
            ),
            rcpt("bob@example.com", "bob@example.com", &[]),
        ],
        body.as_bytes(),
    );
    let r = RcptResult::reply(
        ResultKind::Bounced,
        "5.2.2",
        "552 5.2.2 Postfach voll (\u{fc}ber Quote)",
        "mx1.example.net[192.0.2.1]:25",
    );
    let dsn = build(&original, NoticeKind::Failure, &[(0, &r), (1, &r)]).unwrap();
    assert!(dsn.smtputf8 && dsn.eight_bit);
    assert_eq!(
        dsn.mail_params(),
        [
            ("BODY".to_string(), "8BITMIME".to_string()),
            ("SMTPUTF8".to_string(), String::new())
        ]
    );
    let d = read(&dsn);
    assert_eq!(d.header("To"), Some("<j\u{f6}rg@b\u{fc}ro.example>"));
    assert_eq!(d.header("Content-Transfer-Encoding"), Some("8bit"));
    assert_eq!(d.parts[1].content_type(), "message/global-delivery-status");
    assert_eq!(
        d.recipient_field(0, "Final-Recipient"),
        Some("utf-8; \u{7528}\u{6237}\\x{2B}x@example.com")
    );
    assert_eq!(
        d.recipient_field(0, "Original-Recipient"),
        Some("utf-8; \u{7528}\u{6237}\\x{2B}x@example.com")
    );
    assert_eq!(
        d.recipient_field(1, "Final-Recipient"),
        Some("rfc822; bob@example.com")
    );
    assert_eq!(
        d.recipient_field(0, "Diagnostic-Code"),
        Some("smtp; 552 5.2.2 Postfach voll (\u{fc}ber Quote)")
    );
    assert_eq!(
        bounce::field(&d.per_message, "X-Splitmx-Sender"),
        Some("utf-8; j\u{f6}rg@b\u{fc}ro.example")
    );
    assert_eq!(d.parts[2].content_type(), "message/global-headers");
    assert!(text(&d.parts[0]).contains("<\u{7528}\u{6237}+x@example.com>:\r\n"));
    let part0 = &d.parts[0];
    assert_eq!(
        bounce::field(&part0.headers, "Content-Type"),
        Some("text/plain; charset=utf-8")
    );
}

#[test]
fn eight_bit_original_without_smtputf8_keeps_the_report_ascii() {
    let body = b"Subject: caf\xe9\r\n\r\nbody \xff\r\n";
    let original = message(
        "s@example.org",
        &[("RET", "FULL")],
        vec![rcpt("bob@example.com", "bob@example.com", &[])],
        body,
    );
    let r = RcptResult::reply(
        ResultKind::Bounced,
        "5.1.1",
        "550 5.1.1 unbekannter Empf\u{e4}nger",
        "mx1.example.net[192.0.2.1]:25",
    );
    let dsn = build(&original, NoticeKind::Failure, &[(0, &r)]).unwrap();
    assert!(dsn.eight_bit && !dsn.smtputf8);
    let d = read(&dsn);
    assert_eq!(d.parts[1].content_type(), "message/delivery-status");
    assert!(d.parts[0].body.is_ascii() && d.parts[1].body.is_ascii());
    assert_eq!(
        d.recipient_field(0, "Diagnostic-Code"),
        Some("smtp; 550 5.1.1 unbekannter Empf?nger")
    );
    assert_eq!(d.parts[2].content_type(), "message/rfc822");
    assert_eq!(
        bounce::field(&d.parts[2].headers, "Content-Transfer-Encoding"),
        Some("8bit")
    );
    assert_eq!(d.parts[2].body, body);
}

#[test]
fn hostile_details_stay_inside_their_fields() {
    let original = message(
        "s@example.org",
        &[],
        vec![rcpt("bob@example.com", "bob@example.com", &[])],
        ORIGINAL.as_bytes(),
    );
    let injected = RcptResult {
        kind: ResultKind::Bounced,
        status: "5.1.1\r\nX-Evil: 1".to_string(),
        detail: format!("550 no\r\nX-Evil: 2\r\n\r\n--x {}", "y".repeat(5000)),
        remote: Some("mx\r\nX-Evil: 3".to_string()),
        remote_reply: true,
    };
    let dsn = build(&original, NoticeKind::Failure, &[(0, &injected)]).unwrap();
    let d = read(&dsn);
    let all = String::from_utf8_lossy(&dsn.message);
    assert!(!all.contains("\r\nX-Evil"), "{all}");
    assert_eq!(d.recipient_field(0, "Status"), Some("5.0.0"));
    assert_eq!(d.recipients.len(), 1);
    let diag = d.recipient_field(0, "Diagnostic-Code").unwrap();
    assert!(
        diag.starts_with("smtp; 550 no X-Evil: 2 --x yyy") && diag.ends_with("..."),
        "{diag}"
    );
}

#[test]
fn statuses_match_the_action() {
    let original = message(
        "s@example.org",
        &[],
        vec![rcpt("bob@example.com", "bob@example.com", &[])],
        ORIGINAL.as_bytes(),
    );
    let expired = RcptResult::local(ResultKind::Deferred, "4.4.7", "message expired");
    let d = build(&original, NoticeKind::Failure, &[(0, &expired)]).unwrap();
    assert_eq!(read(&d).recipient_field(0, "Status"), Some("4.4.7"));
    let odd = RcptResult::local(ResultKind::Bounced, "5.1.1", "x");
    let d = build(&original, NoticeKind::Delay, &[(0, &odd)]).unwrap();
    assert_eq!(read(&d).recipient_field(0, "Status"), Some("4.0.0"));
}

#[test]
fn smtputf8_original_with_ascii_addresses_gets_an_ascii_report() {
    let original = message(
        "s@example.org",
        &[("SMTPUTF8", ""), ("BODY", "8BITMIME")],
        vec![rcpt("bob@example.com", "bob@example.com", &[])],
        "Subject: Gr\u{fc}\u{df}e\r\n\r\nbody\r\n".as_bytes(),
    );
    let r = unknown_user();
    let dsn = build(&original, NoticeKind::Failure, &[(0, &r)]).unwrap();
    assert!(!dsn.smtputf8 && dsn.eight_bit);
    assert_eq!(
        dsn.mail_params(),
        [("BODY".to_string(), "8BITMIME".to_string())]
    );
    let d = read(&dsn);
    assert_eq!(d.parts[1].content_type(), "message/delivery-status");
    assert_eq!(d.parts[2].content_type(), "text/rfc822-headers");
    assert_eq!(text(&d.parts[2]), "Subject: Gr\u{fc}\u{df}e\r\n");
}
