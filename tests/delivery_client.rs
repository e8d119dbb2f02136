//! The SMTP/LMTP delivery client against real peers on 127.0.0.1: Postfix's smtp-sink
//! (bytes arrive unchanged, parameters as the peer sees them), a scripted server (every
//! reply code path, exact commands, STARTTLS), and Dovecot LMTP over TCP and a unix
//! socket (per-recipient replies, the stored message).
#![cfg(feature = "server")]

mod peers;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use peers::dovecot::{Dovecot, split_added_fields};
use peers::pki::TestPki;
use peers::scripted::{Script, Scripted};
use peers::sink::Sink;
use peers::{as_stored_by_smtp_sink, as_stored_with_lf, free_port};
use splitmx::TlsPolicy;
use splitmx::delivery::client::{ClientSettings, Connection, Protocol};
use splitmx::delivery::{
    DeliveryConfig, Endpoint, Peer, RcptResult, ResultKind, Transaction, TxRecipient,
};

const HELO: &str = "gw.test.example";
const SENDER: &str = "sender@sender.example";
const BODY: &[u8] = b"From: <sender@sender.example>\r\nSubject: test\r\n\r\nHello.\r\n";

fn settings_with(f: impl FnOnce(&mut DeliveryConfig)) -> ClientSettings {
    let mut config = DeliveryConfig {
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(10),
        data_timeout: Duration::from_secs(30),
        ..DeliveryConfig::default()
    };
    f(&mut config);
    ClientSettings::new(&config, HELO).expect("client settings")
}

fn settings() -> ClientSettings {
    settings_with(|_| {})
}

fn peer(addr: SocketAddr) -> Peer {
    Peer {
        endpoint: Endpoint::Tcp(addr),
        host: "mx.test.example".to_string(),
    }
}

fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn rcpts<'a>(addresses: &[&'a str]) -> Vec<TxRecipient<'a>> {
    addresses
        .iter()
        .map(|a| TxRecipient {
            address: a,
            params: &[],
        })
        .collect()
}

fn tx<'a>(recipients: &'a [TxRecipient<'a>], body: &'a [u8]) -> Transaction<'a> {
    Transaction {
        sender: SENDER,
        mail_params: &[],
        recipients,
        body,
    }
}

async fn open(addr: SocketAddr) -> Connection {
    Connection::open(
        &peer(addr),
        Protocol::Smtp,
        TlsPolicy::Opportunistic,
        &settings(),
    )
    .await
    .unwrap_or_else(|e| panic!("open {addr}: {e}"))
}

/// LMTP final replies: carol over quota (452), dave's mailbox full (552).
fn lmtp_finals() -> Script {
    Script::default()
        .lmtp_final(
            "carol@example.com",
            "452 4.2.2 <carol@example.com> Quota exceeded",
        )
        .lmtp_final(
            "dave@example.com",
            "552 5.2.2 <dave@example.com> Mailbox full",
        )
}

async fn open_lmtp(addr: SocketAddr) -> Connection {
    Connection::open(
        &peer(addr),
        Protocol::Lmtp,
        TlsPolicy::Opportunistic,
        &settings(),
    )
    .await
    .unwrap_or_else(|e| panic!("open {addr} (LMTP): {e}"))
}

/// Assert one result's kind and status, and that it carries `detail`.
#[track_caller]
fn assert_result(r: &RcptResult, kind: ResultKind, status: &str, detail: &str) {
    assert_eq!((r.kind, r.status.as_str()), (kind, status), "{r:?}");
    assert!(r.detail.contains(detail), "{r:?} should say {detail:?}");
}

#[track_caller]
fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let show = |b: &[u8]| {
            String::from_utf8_lossy(&b[at.min(b.len())..(at + 60).min(b.len())]).into_owned()
        };
        panic!(
            "{what}: {} bytes received, {} expected; first difference at {at}: got {:?} want {:?}",
            got.len(),
            want.len(),
            show(got),
            show(want)
        );
    }
}

/// Bodies that break naive clients: leading dots, a line that is only a dot, bare LF
/// lines (one starting with a dot), 8-bit bytes and NUL, no final line end, and a big
/// one.
fn nasty_bodies() -> Vec<Vec<u8>> {
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    let mut n = 0u32;
    while big.len() < 5 * 1024 * 1024 {
        let line = if n.is_multiple_of(7) {
            format!(".{n:08} dot-started line of a big message, padded to a normal length\r\n")
        } else {
            format!("{n:08} line of a big message \u{e9}\u{e8} padded to a normal length xx\r\n")
        };
        big.extend_from_slice(line.as_bytes());
        n += 1;
    }
    vec![
        b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nafter a lone dot\r\n".to_vec(),
        b"Subject: bare lf\r\n\r\nline one\nline two\n.dot after bare lf\n.\nend\r\n".to_vec(),
        b"Subject: bytes\r\n\r\n\x00nul \xff\xfe\x80 caf\xc3\xa9\r\n".to_vec(),
        b"Subject: no end\r\n\r\nlast line without a line end".to_vec(),
        b".\r\n".to_vec(),
        big,
    ]
}

#[tokio::test]
async fn smtp_sink_receives_nasty_bodies_unchanged_over_one_connection() {
    nasty_bodies_to_smtp_sink(false).await;
}

/// The same with each transaction's commands sent ahead behind the previous final dot.
#[tokio::test]
async fn smtp_sink_receives_nasty_bodies_unchanged_with_transactions_sent_ahead() {
    nasty_bodies_to_smtp_sink(true).await;
}

async fn nasty_bodies_to_smtp_sink(ahead: bool) {
    let sink = Sink::dumping(&[]);
    let mut conn = open(sink.addr).await;
    assert!(!conn.tls_used());
    let bodies = nasty_bodies();
    let eight_bit = params(&[("BODY", "8BITMIME")]);
    let senders: Vec<String> = (0..bodies.len())
        .map(|i| format!("s{i}@sender.example"))
        .collect();
    let to = rcpts(&["alice@example.com", "bob@example.com"]);
    let txs: Vec<Transaction<'_>> = bodies
        .iter()
        .zip(&senders)
        .map(|(body, sender)| Transaction {
            sender,
            mail_params: &eight_bit,
            recipients: &to,
            body,
        })
        .collect();
    for (i, t) in txs.iter().enumerate() {
        assert!(conn.is_ready_for(t));
        let next = txs.get(i + 1).filter(|_| ahead);
        let results = conn.deliver(t, next).await;
        assert_eq!(results.len(), 2);
        for r in &results {
            assert_result(r, ResultKind::Delivered, "2.0.0", "250 2.0.0 Ok");
            assert_eq!(
                r.remote.as_deref(),
                Some(peer(sink.addr).to_string().as_str())
            );
            assert!(r.remote_reply);
        }
        assert!(conn.is_reusable());
    }
    conn.quit().await;
    let dumps = sink.wait_for(bodies.len(), Duration::from_secs(30));
    for (i, body) in bodies.iter().enumerate() {
        let sender = format!("<s{i}@sender.example>");
        let dump = dumps
            .iter()
            .find(|d| d.mail_args.starts_with(&sender))
            .unwrap_or_else(|| panic!("no dump for message {i}"));
        // smtp-sink offers 8BITMIME, PIPELINING and DSN, not SIZE.
        assert_eq!(dump.mail_args, format!("{sender} BODY=8BITMIME"));
        assert_eq!(dump.rcpt_args, ["<alice@example.com>", "<bob@example.com>"]);
        assert_eq!(dump.helo, HELO);
        assert_same_bytes(
            &dump.data,
            &as_stored_by_smtp_sink(body),
            &format!("message {i}"),
        );
    }
}

#[tokio::test]
async fn smtp_sink_without_pipelining_or_esmtp() {
    for args in [&["-p"][..], &["-e"]] {
        let sink = Sink::dumping(args);
        let mut conn = open(sink.addr).await;
        let to = rcpts(&["alice@example.com"]);
        // Nothing goes ahead without PIPELINING.
        let results = conn.deliver(&tx(&to, BODY), Some(&tx(&to, BODY))).await;
        assert_result(&results[0], ResultKind::Delivered, "2.0.0", "250");
        let results = conn.deliver(&tx(&to, BODY), None).await;
        assert_result(&results[0], ResultKind::Delivered, "2.0.0", "250");
        conn.quit().await;
        let dumps = sink.wait_for(2, Duration::from_secs(10));
        assert_same_bytes(&dumps[0].data, &as_stored_with_lf(BODY), "message");
        assert_same_bytes(&dumps[1].data, &as_stored_with_lf(BODY), "message");
        assert_eq!(dumps[0].mail_args, format!("<{SENDER}>"), "{args:?}");
    }
}

#[tokio::test]
async fn dsn_parameters_only_when_the_peer_offers_dsn() {
    let mail = params(&[("RET", "HDRS"), ("ENVID", "id 1+x"), ("BODY", "8BITMIME")]);
    let rcpt = params(&[
        ("NOTIFY", "SUCCESS,FAILURE"),
        ("ORCPT", "Bob+x@example.com"),
    ]);
    for (args, want_mail, want_rcpt) in [
        (
            &[][..],
            format!("<{SENDER}> BODY=8BITMIME RET=HDRS ENVID=id+201+2Bx"),
            "<bob@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob+2Bx@example.com",
        ),
        (
            &["-N"][..],
            format!("<{SENDER}> BODY=8BITMIME"),
            "<bob@example.com>",
        ),
    ] {
        let sink = Sink::dumping(args);
        let mut conn = open(sink.addr).await;
        let to = [TxRecipient {
            address: "bob@example.com",
            params: &rcpt,
        }];
        let results = conn
            .deliver(
                &Transaction {
                    sender: SENDER,
                    mail_params: &mail,
                    recipients: &to,
                    body: BODY,
                },
                None,
            )
            .await;
        assert_eq!(results[0].kind, ResultKind::Delivered, "{results:?}");
        conn.quit().await;
        let dumps = sink.wait_for(1, Duration::from_secs(10));
        assert_eq!(dumps[0].mail_args, want_mail, "smtp-sink {args:?}");
        assert_eq!(dumps[0].rcpt_args, [want_rcpt], "smtp-sink {args:?}");
    }
}

#[tokio::test]
async fn smtp_sink_lmtp_gives_one_reply_per_recipient() {
    let sink = Sink::dumping(&["-L"]);
    let mut conn = Connection::open(
        &peer(sink.addr),
        Protocol::Lmtp,
        TlsPolicy::Opportunistic,
        &settings(),
    )
    .await
    .expect("open LMTP");
    let to = rcpts(&["a@example.com", "b@example.com", "c@example.com"]);
    let results = conn.deliver(&tx(&to, BODY), None).await;
    assert_eq!(results.len(), 3);
    for r in &results {
        assert_eq!(r.kind, ResultKind::Delivered, "{r:?}");
    }
    assert!(conn.is_reusable());
    conn.quit().await;
    let dumps = sink.wait_for(1, Duration::from_secs(10));
    assert_same_bytes(&dumps[0].data, &as_stored_with_lf(BODY), "message");
}

/// Per-recipient results, pipelined and not, with the exact commands the peer saw.
#[tokio::test]
async fn per_recipient_replies_with_and_without_pipelining() {
    for pipelining in [true, false] {
        let mut script = Script::default()
            .rcpt(
                "bob@example.com",
                "550 5.1.1 <bob@example.com>: Recipient address rejected",
            )
            .rcpt(
                "carol@example.com",
                "450 4.2.1 <carol@example.com>: mailbox busy",
            )
            .rcpt("dave@example.com", "452 too many recipients");
        if !pipelining {
            script = script.without("PIPELINING");
        }
        let server = Scripted::start(script).await;
        let mut conn = open(server.addr).await;
        let to = rcpts(&[
            "alice@example.com",
            "bob@example.com",
            "carol@example.com",
            "dave@example.com",
            "erin@example.com",
        ]);
        let results = conn.deliver(&tx(&to, BODY), None).await;
        assert_eq!(results.len(), 5);
        let queued = "250 2.0.0 Ok: queued as SCRIPTED1";
        assert_result(&results[0], ResultKind::Delivered, "2.0.0", queued);
        assert_eq!(results[0].detail, queued);
        assert_result(
            &results[1],
            ResultKind::Bounced,
            "5.1.1",
            "Recipient address rejected",
        );
        assert_eq!(
            results[1].detail,
            "550 5.1.1 <bob@example.com>: Recipient address rejected"
        );
        assert_result(&results[2], ResultKind::Deferred, "4.2.1", "mailbox busy");
        assert_result(
            &results[3],
            ResultKind::Deferred,
            "4.0.0",
            "452 too many recipients",
        );
        assert_result(&results[4], ResultKind::Delivered, "2.0.0", queued);
        assert!(results.iter().all(|r| r.remote_reply));
        assert!(conn.is_reusable());
        conn.quit().await;

        let record = server.record();
        assert_eq!(
            record.commands,
            [
                "<connect>".to_string(),
                format!("EHLO {HELO}"),
                format!("MAIL FROM:<{SENDER}> SIZE={}", BODY.len()),
                "RCPT TO:<alice@example.com>".to_string(),
                "RCPT TO:<bob@example.com>".to_string(),
                "RCPT TO:<carol@example.com>".to_string(),
                "RCPT TO:<dave@example.com>".to_string(),
                "RCPT TO:<erin@example.com>".to_string(),
                "DATA".to_string(),
                "QUIT".to_string(),
            ]
        );
        assert_eq!(record.messages, [BODY.to_vec()]);
        assert!(
            record.early.is_empty(),
            "commands sent before their turn to a server without PIPELINING: {:?}",
            record.early
        );
    }
}

#[tokio::test]
async fn multi_line_replies_are_quoted_whole() {
    let server = Scripted::start(Script::default().rcpt(
        "bob@example.com",
        "550-5.1.1 The email account that you tried to reach does not exist.\r\n550 5.1.1 Please check the address.",
    ))
    .await;
    let mut conn = open(server.addr).await;
    let to = rcpts(&["bob@example.com"]);
    let results = conn.deliver(&tx(&to, BODY), None).await;
    assert_eq!(
        results[0].detail,
        "550-5.1.1 The email account that you tried to reach does not exist. 550 5.1.1 Please check the address."
    );
    assert_eq!(results[0].status, "5.1.1");
}

#[tokio::test]
async fn all_recipients_refused_sends_no_message_and_resets_before_the_next() {
    for (pipelining, broken_server) in [(true, false), (false, false), (true, true)] {
        let mut script = Script::default()
            .rcpt("bob@example.com", "550 5.1.1 no bob")
            .rcpt("carol@example.com", "450 4.7.1 greylisted");
        script.accept_data_without_recipients = broken_server;
        if !pipelining {
            script = script.without("PIPELINING");
        }
        let server = Scripted::start(script).await;
        let mut conn = open(server.addr).await;
        let to = rcpts(&["bob@example.com", "carol@example.com"]);
        let results = conn.deliver(&tx(&to, BODY), None).await;
        assert_result(&results[0], ResultKind::Bounced, "5.1.1", "no bob");
        assert_result(&results[1], ResultKind::Deferred, "4.7.1", "greylisted");
        assert!(conn.is_reusable());

        let to = rcpts(&["alice@example.com"]);
        let results = conn.deliver(&tx(&to, BODY), None).await;
        assert_result(&results[0], ResultKind::Delivered, "2.0.0", "queued");
        conn.quit().await;

        let record = server.record();
        let messages: Vec<&Vec<u8>> = record.messages.iter().filter(|m| !m.is_empty()).collect();
        assert_eq!(
            messages,
            [&BODY.to_vec()],
            "only the second transaction carries the message"
        );
        let rset = record
            .commands
            .iter()
            .position(|c| c == "RSET")
            .expect("RSET sent");
        let second_mail = record
            .commands
            .iter()
            .rposition(|c| c.starts_with("MAIL FROM"))
            .expect("second MAIL");
        assert_eq!(rset + 1, second_mail, "{:?}", record.commands);
        if !pipelining {
            assert!(
                !record.commands[..rset].contains(&"DATA".to_string()),
                "no DATA without recipients: {:?}",
                record.commands
            );
        }
    }
}

#[tokio::test]
async fn mail_refused_decides_every_recipient() {
    for (reply, kind) in [
        ("451 4.3.0 try later", ResultKind::Deferred),
        ("553 5.7.1 sender rejected", ResultKind::Bounced),
    ] {
        for pipelining in [true, false] {
            let mut script = Script {
                mail_reply: reply.to_string(),
                ..Script::default()
            };
            if !pipelining {
                script = script.without("PIPELINING");
            }
            let server = Scripted::start(script).await;
            let mut conn = open(server.addr).await;
            let to = rcpts(&["alice@example.com", "bob@example.com"]);
            let results = conn.deliver(&tx(&to, BODY), None).await;
            let status = &reply[4..9];
            for r in &results {
                assert_result(r, kind, status, reply);
            }
            assert!(conn.is_reusable());
            let to = rcpts(&["carol@example.com"]);
            assert_eq!(conn.deliver(&tx(&to, BODY), None).await[0].kind, kind);
            conn.quit().await;
            assert!(server.messages().is_empty());
            if !pipelining {
                assert!(!server.commands().iter().any(|c| c.starts_with("RCPT")));
            }
        }
    }
}

#[tokio::test]
async fn final_dot_refusal_decides_the_accepted_recipients() {
    for (reply, kind, status) in [
        (
            "451 4.3.0 queue file write error",
            ResultKind::Deferred,
            "4.3.0",
        ),
        (
            "554 5.6.0 message content rejected",
            ResultKind::Bounced,
            "5.6.0",
        ),
    ] {
        let server = Scripted::start(Script {
            final_reply: reply.to_string(),
            ..Script::default().rcpt("bob@example.com", "550 5.1.1 no bob")
        })
        .await;
        let mut conn = open(server.addr).await;
        let to = rcpts(&["alice@example.com", "bob@example.com", "carol@example.com"]);
        let results = conn.deliver(&tx(&to, BODY), None).await;
        assert_result(&results[0], kind, status, reply);
        assert_result(&results[1], ResultKind::Bounced, "5.1.1", "no bob");
        assert_result(&results[2], kind, status, reply);
        assert!(
            conn.is_reusable(),
            "the transaction ended with the final reply"
        );
        let to = rcpts(&["alice@example.com"]);
        assert_eq!(conn.deliver(&tx(&to, BODY), None).await[0].kind, kind);
        let commands = server.commands();
        assert!(!commands.contains(&"RSET".to_string()), "{commands:?}");
    }
}

#[tokio::test]
async fn data_refused_decides_the_accepted_recipients() {
    let server = Scripted::start(Script {
        data_reply: "554 5.7.1 no data for you".to_string(),
        ..Script::default().rcpt("bob@example.com", "550 5.1.1 no bob")
    })
    .await;
    let mut conn = open(server.addr).await;
    let to = rcpts(&["alice@example.com", "bob@example.com"]);
    let results = conn.deliver(&tx(&to, BODY), None).await;
    assert_result(&results[0], ResultKind::Bounced, "5.7.1", "no data for you");
    assert_result(&results[1], ResultKind::Bounced, "5.1.1", "no bob");
    assert!(conn.is_reusable());
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn greeting_refusals_are_connect_errors() {
    for (greeting, temporary, status) in [
        ("554 5.7.1 go away", false, "5.7.1"),
        ("421 4.3.2 too busy", true, "4.3.2"),
        ("554-no\r\n554 really not", false, "5.0.0"),
    ] {
        let server = Scripted::start(Script {
            greeting: greeting.to_string(),
            ..Script::default()
        })
        .await;
        let e = Connection::open(
            &peer(server.addr),
            Protocol::Smtp,
            TlsPolicy::Opportunistic,
            &settings(),
        )
        .await
        .expect_err("refused");
        assert_eq!(
            (e.temporary, e.status.as_str()),
            (temporary, status),
            "{e:?}"
        );
        assert_eq!(e.detail, greeting.replace("\r\n", " "));
        assert!(e.remote_reply);
        let r = e.result();
        assert_eq!(
            r.kind,
            if temporary {
                ResultKind::Deferred
            } else {
                ResultKind::Bounced
            }
        );
        assert_eq!(r.remote, Some(peer(server.addr).to_string()));
        assert!(r.remote_reply);
    }
}

#[tokio::test]
async fn connection_refused_is_a_temporary_connect_error() {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let e = Connection::open(
        &peer(addr),
        Protocol::Smtp,
        TlsPolicy::Opportunistic,
        &settings(),
    )
    .await
    .expect_err("nothing listens");
    assert!(e.temporary);
    assert_eq!(e.status, "4.4.1");
    assert_eq!(
        e.detail,
        format!(
            "connect to mx.test.example[127.0.0.1]:{}: Connection refused",
            addr.port()
        )
    );
    assert!(!e.remote_reply);
    let r = e.result();
    assert_eq!((r.kind, r.remote.as_deref()), (ResultKind::Deferred, None));
}

#[tokio::test]
async fn ehlo_refused_falls_back_to_helo() {
    let server = Scripted::start(Script {
        ehlo_reply: Some("502 5.5.1 EHLO not implemented".to_string()),
        ..Script::default()
    })
    .await;
    let mut conn = open(server.addr).await;
    let to = rcpts(&["alice@example.com", "bob@example.com"]);
    let results = conn.deliver(&tx(&to, BODY), None).await;
    assert!(
        results.iter().all(|r| r.kind == ResultKind::Delivered),
        "{results:?}"
    );
    conn.quit().await;
    let record = server.record();
    assert_eq!(
        record.commands[1..3],
        [format!("EHLO {HELO}"), format!("HELO {HELO}")]
    );
    // Without EHLO there is no SIZE and no PIPELINING.
    assert_eq!(record.commands[3], format!("MAIL FROM:<{SENDER}>"));
    assert!(record.early.is_empty(), "{:?}", record.early);
}

#[tokio::test]
async fn lost_connection_defers_every_undecided_recipient() {
    for close_after in ["DATA", "RCPT", "."] {
        for pipelining in [true, false] {
            let mut script = Script {
                close_after: Some(close_after.to_string()),
                ..Script::default()
            };
            if !pipelining {
                script = script.without("PIPELINING");
            }
            let server = Scripted::start(script).await;
            let mut conn = open(server.addr).await;
            let to = rcpts(&["alice@example.com", "bob@example.com"]);
            let results = conn.deliver(&tx(&to, BODY), None).await;
            assert_eq!(results.len(), 2);
            for r in &results {
                assert_result(
                    r,
                    ResultKind::Deferred,
                    "4.4.2",
                    "lost connection with mx.test.example",
                );
                assert!(!r.remote_reply);
            }
            assert!(!conn.is_reusable(), "after {close_after}");
            // A broken connection still answers for every recipient.
            let again = conn.deliver(&tx(&to, BODY), None).await;
            assert_eq!(again.len(), 2);
            assert!(again.iter().all(|r| r.kind == ResultKind::Deferred));
            conn.quit().await;
        }
    }
}

#[tokio::test]
async fn a_stalled_peer_times_out() {
    for stall_after in ["DATA", "."] {
        let server = Scripted::start(Script {
            stall_after: Some(stall_after.to_string()),
            ..Script::default().rcpt("bob@example.com", "550 5.1.1 no bob")
        })
        .await;
        let settings = settings_with(|c| {
            c.command_timeout = Duration::from_millis(300);
            c.data_timeout = Duration::from_millis(300);
        });
        let mut conn = Connection::open(
            &peer(server.addr),
            Protocol::Smtp,
            TlsPolicy::Opportunistic,
            &settings,
        )
        .await
        .expect("open");
        let to = rcpts(&["alice@example.com", "bob@example.com"]);
        let results = conn.deliver(&tx(&to, BODY), None).await;
        assert_result(
            &results[0],
            ResultKind::Deferred,
            "4.4.2",
            "timed out while sending",
        );
        assert_result(&results[1], ResultKind::Bounced, "5.1.1", "no bob");
        assert!(!conn.is_reusable());
    }
}

#[tokio::test]
async fn a_malformed_reply_defers_and_ends_the_connection() {
    let server = Scripted::start(
        Script::default()
            .rcpt("bob@example.com", "550 5.1.1 no bob")
            .rcpt("carol@example.com", "hello, I am not SMTP"),
    )
    .await;
    let mut conn = open(server.addr).await;
    let to = rcpts(&["bob@example.com", "carol@example.com", "dave@example.com"]);
    let results = conn.deliver(&tx(&to, BODY), None).await;
    assert_result(&results[0], ResultKind::Bounced, "5.1.1", "no bob");
    for r in &results[1..] {
        assert_result(r, ResultKind::Deferred, "4.5.0", "malformed reply");
    }
    assert!(!conn.is_reusable());
}

#[tokio::test]
async fn a_421_reply_decides_the_rest() {
    let server =
        Scripted::start(Script::default().rcpt("bob@example.com", "421 4.7.0 closing connection"))
            .await;
    let mut conn = open(server.addr).await;
    let to = rcpts(&["alice@example.com", "bob@example.com", "carol@example.com"]);
    let results = conn.deliver(&tx(&to, BODY), None).await;
    for r in &results {
        assert_result(
            r,
            ResultKind::Deferred,
            "4.7.0",
            "421 4.7.0 closing connection",
        );
    }
    assert!(!conn.is_reusable());
}

#[tokio::test]
async fn size_limit_bounces_without_sending() {
    let server = Scripted::start(Script::default().without("SIZE").with("SIZE 40")).await;
    let mut conn = open(server.addr).await;
    let to = rcpts(&["alice@example.com", "bob@example.com"]);
    let results = conn.deliver(&tx(&to, BODY), None).await;
    for r in &results {
        assert_result(r, ResultKind::Bounced, "5.3.4", "exceeds size limit 40");
    }
    assert!(conn.is_reusable());
    let small = b"Subject: s\r\n\r\nx\r\n";
    assert_eq!(
        conn.deliver(&tx(&to, small), None).await[0].kind,
        ResultKind::Delivered
    );
    conn.quit().await;
    let mails: Vec<String> = server
        .commands()
        .into_iter()
        .filter(|c| c.starts_with("MAIL"))
        .collect();
    assert_eq!(
        mails,
        [format!("MAIL FROM:<{SENDER}> SIZE={}", small.len())]
    );
}

#[tokio::test]
async fn smtputf8_is_passed_on_or_the_message_bounces() {
    let utf8 = params(&[("SMTPUTF8", ""), ("BODY", "8BITMIME")]);
    let body = "Subject: Gr\u{fc}\u{df}e\r\n\r\nHallo J\u{f6}rg\r\n".as_bytes();
    let ascii_body = "Subject: hi\r\n\r\nHallo J\u{f6}rg\r\n".as_bytes();
    let to = rcpts(&["j\u{f6}rg@example.com"]);
    let ascii_to = rcpts(&["jorg@example.com"]);

    let offers = Scripted::start(Script::default().with("SMTPUTF8")).await;
    let mut conn = open(offers.addr).await;
    let results = conn
        .deliver(
            &Transaction {
                mail_params: &utf8,
                ..tx(&to, body)
            },
            None,
        )
        .await;
    assert_eq!(results[0].kind, ResultKind::Delivered, "{results:?}");
    conn.quit().await;
    assert!(
        offers.commands().contains(&format!(
            "MAIL FROM:<{SENDER}> SIZE={} BODY=8BITMIME SMTPUTF8",
            body.len()
        )),
        "{:?}",
        offers.commands()
    );

    let lacks = Scripted::start(Script::default()).await;
    let mut conn = open(lacks.addr).await;
    for (recipients, body) in [(&to, ascii_body), (&ascii_to, body)] {
        let results = conn
            .deliver(
                &Transaction {
                    mail_params: &utf8,
                    ..tx(recipients, body)
                },
                None,
            )
            .await;
        assert_result(
            &results[0],
            ResultKind::Bounced,
            "5.6.7",
            "SMTPUTF8 is required",
        );
    }
    // Nothing needs SMTPUTF8: delivered without it (RFC 6531 §3.4).
    let results = conn
        .deliver(
            &Transaction {
                mail_params: &utf8,
                ..tx(&ascii_to, ascii_body)
            },
            None,
        )
        .await;
    assert_eq!(results[0].kind, ResultKind::Delivered, "{results:?}");
    conn.quit().await;
    let mails: Vec<String> = lacks
        .commands()
        .into_iter()
        .filter(|c| c.starts_with("MAIL"))
        .collect();
    assert_eq!(
        mails,
        [format!(
            "MAIL FROM:<{SENDER}> SIZE={} BODY=8BITMIME",
            ascii_body.len()
        )]
    );
}

#[tokio::test]
async fn addresses_that_would_break_the_command_line_are_refused_locally() {
    let server = Scripted::start(Script::default()).await;
    let mut conn = open(server.addr).await;
    let to = rcpts(&[
        "evil@example.com>\r\nRCPT TO:<victim@example.com",
        "alice@example.com",
    ]);
    let results = conn.deliver(&tx(&to, BODY), None).await;
    assert_result(
        &results[0],
        ResultKind::Bounced,
        "5.1.3",
        "bad recipient address syntax",
    );
    assert!(!results[0].remote_reply);
    assert_eq!(results[1].kind, ResultKind::Delivered);
    let bad_sender = Transaction {
        sender: "a@b\r\nRSET",
        ..tx(&to[1..], BODY)
    };
    let results = conn.deliver(&bad_sender, None).await;
    assert_result(
        &results[0],
        ResultKind::Bounced,
        "5.1.7",
        "bad sender address syntax",
    );
    conn.quit().await;
    let commands = server.commands();
    assert!(
        !commands.iter().any(|c| c.contains("victim") || c == "RSET"),
        "{commands:?}"
    );
}

#[tokio::test]
async fn exact_bytes_reach_a_peer_that_ends_lines_at_lf() {
    let server = Scripted::start(Script::default()).await;
    let mut conn = open(server.addr).await;
    let mut bodies = nasty_bodies();
    bodies.push(b"lone\rCR and a CR at the end\r".to_vec());
    bodies.push(Vec::new());
    for body in &bodies {
        let to = rcpts(&["alice@example.com"]);
        let results = conn.deliver(&tx(&to, body), None).await;
        assert_eq!(results[0].kind, ResultKind::Delivered, "{results:?}");
    }
    conn.quit().await;
    let messages = server.messages();
    assert_eq!(messages.len(), bodies.len());
    for (i, (got, body)) in messages.iter().zip(&bodies).enumerate() {
        let mut want = body.clone();
        if !want.is_empty() && !want.ends_with(b"\r\n") {
            want.extend_from_slice(b"\r\n");
        }
        assert_same_bytes(got, &want, &format!("message {i}"));
    }
}

#[tokio::test]
async fn lmtp_final_replies_per_recipient() {
    let server = Scripted::start(Script {
        lmtp: true,
        ..lmtp_finals().rcpt(
            "bob@example.com",
            "550 5.1.1 <bob@example.com> User doesn't exist",
        )
    })
    .await;
    let mut conn = open_lmtp(server.addr).await;
    let to = rcpts(&[
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
        "erin@example.com",
    ]);
    let results = conn.deliver(&tx(&to, BODY), None).await;
    assert_result(
        &results[0],
        ResultKind::Delivered,
        "2.0.0",
        "<alice@example.com> Saved",
    );
    assert_result(
        &results[1],
        ResultKind::Bounced,
        "5.1.1",
        "User doesn't exist",
    );
    assert_result(&results[2], ResultKind::Deferred, "4.2.2", "Quota exceeded");
    assert_result(&results[3], ResultKind::Bounced, "5.2.2", "Mailbox full");
    assert_result(
        &results[4],
        ResultKind::Delivered,
        "2.0.0",
        "<erin@example.com> Saved",
    );
    assert!(conn.is_reusable());
    conn.quit().await;
    assert_eq!(server.commands()[1], format!("LHLO {HELO}"));
}

#[tokio::test]
async fn transactions_sent_ahead_go_with_the_final_dot_and_keep_their_results() {
    let server =
        Scripted::start(Script::default().rcpt("bob@example.com", "550 5.1.1 no bob")).await;
    let mut conn = open(server.addr).await;
    let (alice, bob_carol, bob, dave) = (
        rcpts(&["alice@example.com"]),
        rcpts(&["bob@example.com", "carol@example.com"]),
        rcpts(&["bob@example.com"]),
        rcpts(&["dave@example.com"]),
    );
    let bodies: [&[u8]; 4] = [b"one\r\n", b"two two\r\n", b"three three\r\n", b"four\r\n"];
    let t1 = tx(&alice, bodies[0]);
    let t2 = tx(&bob_carol, bodies[1]);
    let t3 = tx(&bob, bodies[2]);
    let t4 = tx(&dave, bodies[3]);

    let r1 = conn.deliver(&t1, Some(&t2)).await;
    assert_result(&r1[0], ResultKind::Delivered, "2.0.0", "SCRIPTED1");
    assert!(conn.is_ready_for(&t2) && !conn.is_ready_for(&t3));
    let r2 = conn.deliver(&t2, Some(&t3)).await;
    assert_result(&r2[0], ResultKind::Bounced, "5.1.1", "no bob");
    assert_result(&r2[1], ResultKind::Delivered, "2.0.0", "SCRIPTED1");
    // Every recipient of the one sent ahead is refused: no message, RSET before the next.
    let r3 = conn.deliver(&t3, Some(&t4)).await;
    assert_result(&r3[0], ResultKind::Bounced, "5.1.1", "no bob");
    let r4 = conn.deliver(&t4, None).await;
    assert_result(&r4[0], ResultKind::Delivered, "2.0.0", "SCRIPTED1");
    conn.quit().await;

    let record = server.record();
    assert_eq!(record.messages, [bodies[0], bodies[1], bodies[3]]);
    let mail = |b: &[u8]| format!("MAIL FROM:<{SENDER}> SIZE={}", b.len());
    assert_eq!(record.ahead, [mail(bodies[1]), mail(bodies[2])]);
    let count = |c: &str| record.commands.iter().filter(|x| *x == c).count();
    assert_eq!(
        (count("<connect>"), count("RSET"), count("QUIT")),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn a_transaction_other_than_the_one_sent_ahead_is_not_sent() {
    let server = Scripted::start(Script::default()).await;
    let mut conn = open(server.addr).await;
    let (alice, bob) = (rcpts(&["alice@example.com"]), rcpts(&["bob@example.com"]));
    let t1 = tx(&alice, b"first\r\n");
    let t2 = tx(&alice, b"second, sent ahead\r\n");
    let other = tx(&bob, b"not the one sent ahead\r\n");
    let r1 = conn.deliver(&t1, Some(&t2)).await;
    assert_result(&r1[0], ResultKind::Delivered, "2.0.0", "SCRIPTED1");
    assert!(!conn.is_ready_for(&other));
    let r = conn.deliver(&other, None).await;
    assert_result(&r[0], ResultKind::Deferred, "4.4.2", "out of step");
    assert!(!conn.is_reusable());
    conn.quit().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let record = server.record();
    // The peer was left in DATA for the second message; closing dropped it.
    assert_eq!(record.messages, [b"first\r\n".to_vec()]);
    assert!(
        !record
            .commands
            .iter()
            .any(|c| c == "QUIT" || c.contains("bob")),
        "{:?}",
        record.commands
    );
}

#[tokio::test]
async fn a_peer_that_closes_after_the_final_dot_is_not_used_for_the_one_sent_ahead() {
    let server = Scripted::start(Script {
        close_after: Some(".".to_string()),
        ..Script::default()
    })
    .await;
    let mut conn = open(server.addr).await;
    let alice = rcpts(&["alice@example.com"]);
    let (t1, t2) = (tx(&alice, b"first\r\n"), tx(&alice, b"second\r\n"));
    let r1 = conn.deliver(&t1, Some(&t2)).await;
    assert_result(&r1[0], ResultKind::Deferred, "4.4.2", "");
    assert!(!conn.is_ready_for(&t2));
    assert_eq!(server.messages(), [b"first\r\n".to_vec()]);
}

#[tokio::test]
async fn lmtp_replies_stay_with_their_transaction_when_one_is_sent_ahead() {
    let server = Scripted::start(Script {
        lmtp: true,
        ..lmtp_finals()
    })
    .await;
    let mut conn = open_lmtp(server.addr).await;
    let (first, second) = (
        rcpts(&["alice@example.com", "carol@example.com"]),
        rcpts(&["dave@example.com", "erin@example.com"]),
    );
    let (t1, t2) = (tx(&first, b"one\r\n"), tx(&second, b"two\r\n"));
    let r1 = conn.deliver(&t1, Some(&t2)).await;
    assert_result(
        &r1[0],
        ResultKind::Delivered,
        "2.0.0",
        "<alice@example.com> Saved",
    );
    assert_result(&r1[1], ResultKind::Deferred, "4.2.2", "Quota exceeded");
    let r2 = conn.deliver(&t2, None).await;
    assert_result(&r2[0], ResultKind::Bounced, "5.2.2", "Mailbox full");
    assert_result(
        &r2[1],
        ResultKind::Delivered,
        "2.0.0",
        "<erin@example.com> Saved",
    );
    conn.quit().await;
    let record = server.record();
    assert_eq!(record.messages, [b"one\r\n".to_vec(), b"two\r\n".to_vec()]);
    assert_eq!(record.ahead.len(), 1, "{:?}", record.commands);
}

/// A CA, a certificate for mx.test.example, and an acceptor for the scripted server.
fn tls_setup(dir: &std::path::Path) -> (TestPki, tokio_rustls::TlsAcceptor) {
    let pki = TestPki::new(dir, &["mx.test.example"]);
    let acceptor = splitmx::smtp::tls::acceptor(&pki.cert, &pki.key).expect("acceptor");
    (pki, acceptor)
}

#[tokio::test]
async fn opportunistic_and_required_tls_use_starttls_with_any_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_pki, acceptor) = tls_setup(dir.path());
    for policy in [TlsPolicy::Opportunistic, TlsPolicy::Required] {
        let server = Scripted::start(Script {
            starttls: Some(acceptor.clone()),
            ..Script::default()
        })
        .await;
        // The CA is not trusted here: only `verify` would care.
        let mut conn = Connection::open(&peer(server.addr), Protocol::Smtp, policy, &settings())
            .await
            .unwrap_or_else(|e| panic!("{policy:?}: {e}"));
        assert!(conn.tls_used());
        let to = rcpts(&["alice@example.com"]);
        assert_eq!(
            conn.deliver(&tx(&to, BODY), None).await[0].kind,
            ResultKind::Delivered
        );
        conn.quit().await;
        let record = server.record();
        assert_eq!(
            record.commands[1..5],
            [
                format!("EHLO {HELO}"),
                "STARTTLS".to_string(),
                "<TLS>".to_string(),
                format!("EHLO {HELO}"),
            ]
        );
        assert_eq!(record.messages, [BODY.to_vec()]);
    }
}

#[tokio::test]
async fn tls_required_but_not_offered_or_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_pki, acceptor) = tls_setup(dir.path());
    let plain = Scripted::start(Script::default()).await;
    for policy in [TlsPolicy::Required, TlsPolicy::Verify] {
        let e = Connection::open(&peer(plain.addr), Protocol::Smtp, policy, &settings())
            .await
            .expect_err("no STARTTLS");
        assert_eq!((e.temporary, e.status.as_str()), (true, "4.7.4"));
        assert_eq!(
            e.detail,
            format!(
                "TLS is required, but was not offered by host {}",
                peer(plain.addr)
            )
        );
    }
    let conn = Connection::open(
        &peer(plain.addr),
        Protocol::Smtp,
        TlsPolicy::Opportunistic,
        &settings(),
    )
    .await
    .expect("plain text is fine when opportunistic");
    assert!(!conn.tls_used());

    let refusing = Scripted::start(Script {
        starttls: Some(acceptor),
        starttls_reply: "454 4.7.0 TLS not available due to local problem".to_string(),
        ..Script::default()
    })
    .await;
    let e = Connection::open(
        &peer(refusing.addr),
        Protocol::Smtp,
        TlsPolicy::Required,
        &settings(),
    )
    .await
    .expect_err("refused STARTTLS");
    assert_eq!(e.status, "4.7.4");
    assert!(e.detail.contains("454 4.7.0 TLS not available"), "{e:?}");
    let mut conn = Connection::open(
        &peer(refusing.addr),
        Protocol::Smtp,
        TlsPolicy::Opportunistic,
        &settings(),
    )
    .await
    .expect("opportunistic continues in plain text");
    assert!(!conn.tls_used());
    let to = rcpts(&["alice@example.com"]);
    assert_eq!(
        conn.deliver(&tx(&to, BODY), None).await[0].kind,
        ResultKind::Delivered
    );
}

#[tokio::test]
async fn a_failed_handshake_or_injected_plaintext_ends_the_session() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_pki, acceptor) = tls_setup(dir.path());
    let broken = Scripted::start(Script {
        starttls: Some(acceptor.clone()),
        break_tls: true,
        ..Script::default()
    })
    .await;
    // Opportunistic too: the session cannot go back to plain text after STARTTLS.
    for policy in [TlsPolicy::Opportunistic, TlsPolicy::Required] {
        let e = Connection::open(&peer(broken.addr), Protocol::Smtp, policy, &settings())
            .await
            .expect_err("no TLS handshake");
        assert_eq!((e.temporary, e.status.as_str()), (true, "4.7.5"), "{e:?}");
        assert!(e.detail.starts_with("TLS handshake with"), "{e:?}");
    }
    let injecting = Scripted::start(Script {
        starttls: Some(acceptor),
        starttls_reply: "220 2.0.0 Ready\r\n250-injected before the handshake".to_string(),
        ..Script::default()
    })
    .await;
    let e = Connection::open(
        &peer(injecting.addr),
        Protocol::Smtp,
        TlsPolicy::Opportunistic,
        &settings(),
    )
    .await
    .expect_err("plaintext after the STARTTLS reply");
    assert_eq!(e.status, "4.7.5");
    assert!(
        e.detail
            .contains("unexpected data after its STARTTLS reply"),
        "{e:?}"
    );
}

#[tokio::test]
async fn verify_checks_the_certificate_against_the_host_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (pki, acceptor) = tls_setup(dir.path());
    let server = Scripted::start(Script {
        starttls: Some(acceptor),
        ..Script::default()
    })
    .await;
    let trusting = settings_with(|c| c.tls_ca_file = Some(pki.ca.clone()));

    let mut conn = Connection::open(
        &peer(server.addr),
        Protocol::Smtp,
        TlsPolicy::Verify,
        &trusting,
    )
    .await
    .expect("certificate valid for mx.test.example");
    assert!(conn.tls_used());
    let to = rcpts(&["alice@example.com"]);
    assert_eq!(
        conn.deliver(&tx(&to, BODY), None).await[0].kind,
        ResultKind::Delivered
    );
    conn.quit().await;

    let other = Peer {
        host: "other.test.example".to_string(),
        ..peer(server.addr)
    };
    for (peer, settings, why) in [
        (&other, &trusting, "not valid for name"),
        (&peer(server.addr), &settings(), "UnknownIssuer"),
    ] {
        let e = Connection::open(peer, Protocol::Smtp, TlsPolicy::Verify, settings)
            .await
            .expect_err("certificate must not verify");
        assert_eq!((e.temporary, e.status.as_str()), (true, "4.7.5"), "{e:?}");
        assert!(e.detail.starts_with("TLS handshake with"), "{e:?}");
        assert!(e.detail.contains(why), "{e:?}");
    }
}

#[tokio::test]
async fn dovecot_lmtp_over_tcp_and_unix_socket() {
    let dovecot = Dovecot::start(&["alice@example.com", "bob@example.com"]);
    let endpoints = [
        Endpoint::Tcp(dovecot.addr),
        Endpoint::Unix(dovecot.socket.clone()),
    ];
    for (n, endpoint) in endpoints.into_iter().enumerate() {
        let peer = Peer {
            endpoint,
            host: "localhost".to_string(),
        };
        let mut conn =
            Connection::open(&peer, Protocol::Lmtp, TlsPolicy::Opportunistic, &settings())
                .await
                .unwrap_or_else(|e| panic!("{peer}: {e}\n{}", dovecot.log()));
        let bodies = nasty_bodies();
        for body in [&bodies[0], &bodies[1], &bodies[2], &bodies[3]] {
            let to = rcpts(&["alice@example.com", "nobody@example.com", "bob@example.com"]);
            let results = conn.deliver(&tx(&to, body), None).await;
            assert_eq!(results.len(), 3);
            assert_result(
                &results[0],
                ResultKind::Delivered,
                "2.0.0",
                "<alice@example.com>",
            );
            assert!(results[0].detail.ends_with("Saved"), "{results:?}");
            assert_result(
                &results[1],
                ResultKind::Bounced,
                "5.1.1",
                "User doesn't exist",
            );
            assert_result(
                &results[2],
                ResultKind::Delivered,
                "2.0.0",
                "<bob@example.com>",
            );
            assert_eq!(results[2].remote, Some(peer.to_string()));
        }
        assert!(conn.is_reusable());
        conn.quit().await;
        for user in ["alice@example.com", "bob@example.com"] {
            let stored = dovecot.messages(user);
            assert_eq!(stored.len(), 4 * (n + 1), "{user}: {}", dovecot.log());
            for (i, body) in bodies[..4].iter().enumerate() {
                let (added, message) = split_added_fields(&stored[4 * n + i]);
                assert!(
                    added.contains(&format!("Return-Path: <{SENDER}>")),
                    "{added}"
                );
                assert_same_bytes(
                    message,
                    &as_stored_with_lf(body),
                    &format!("{user} message {i}"),
                );
            }
        }
    }
}

/// Throughput of one pipelined, reused connection to smtp-sink (no dump files).
/// `cargo test --test delivery_client -- --ignored --nocapture throughput`
#[tokio::test]
#[ignore = "prints a measurement"]
async fn throughput_to_smtp_sink() {
    let sink = Sink::discarding(&[]);
    let mut body = b"From: <sender@sender.example>\r\nSubject: load\r\n\r\n".to_vec();
    while body.len() < 4096 {
        body.extend_from_slice(
            b"The quick brown fox jumps over the lazy dog, again and again.\r\n",
        );
    }
    body.truncate(4094);
    body.extend_from_slice(b"\r\n");
    let mut conn = open(sink.addr).await;
    let to = rcpts(&["alice@example.com"]);
    let n = 1000;
    let start = Instant::now();
    for _ in 0..n {
        let results = conn.deliver(&tx(&to, &body), None).await;
        assert_eq!(results[0].kind, ResultKind::Delivered, "{results:?}");
    }
    let elapsed = start.elapsed();
    conn.quit().await;
    println!(
        "{n} messages of {} bytes over one connection in {elapsed:?}: {:.0} messages/s",
        body.len(),
        f64::from(n) / elapsed.as_secs_f64()
    );
}
