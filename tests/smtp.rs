//! The SMTP front end against real clients over 127.0.0.1: `swaks` for the plain and
//! STARTTLS happy paths, raw sockets (plain or rustls) for byte-exact and hostile cases.
//! Every test starts its own `splitmx serve` process and asserts reply codes, and for
//! accepted messages the spooled bytes (read back with `splitmx::spool`).
#![cfg(feature = "server")]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Client, Gateway, HOSTNAME, Options, Reply, data_bytes, require_tool, split_stamp};

const SENDER: &str = "sender@sender.example";

/// A small message with CRLF lines.
fn small_message(subject: &str) -> Vec<u8> {
    format!("From: <{SENDER}>\r\nTo: <alice@example.com>\r\nSubject: {subject}\r\nMessage-Id: <{subject}@sender.example>\r\n\r\nHello.\r\n").into_bytes()
}

/// Assert the spooled message `id` holds exactly `body` after our Received field, and
/// return the field.
fn assert_spooled(gw: &Gateway, id: &str, body: &[u8]) -> String {
    let stored = gw.spooled_message(id);
    assert_eq!(
        stored.info.id.to_string(),
        id,
        "the spooled id is the one in the 250 reply"
    );
    let (stamp, rest) = split_stamp(&stored.envelope.body);
    if rest != body {
        let at = rest
            .iter()
            .zip(body)
            .position(|(a, b)| a != b)
            .unwrap_or(rest.len().min(body.len()));
        panic!(
            "spooled bytes differ from the sent ones: {} vs {} bytes, first difference at {at}: spooled {:?} sent {:?}",
            rest.len(),
            body.len(),
            String::from_utf8_lossy(&rest[at.saturating_sub(20)..(at + 20).min(rest.len())]),
            String::from_utf8_lossy(&body[at.saturating_sub(20)..(at + 20).min(body.len())]),
        );
    }
    stamp
}

fn assert_reply(r: &Reply, code: u16, enhanced: &str) {
    assert_eq!((r.code, r.enhanced()), (code, enhanced), "reply {r}");
}

/// swaks output: the queue id from `<-  250 2.0.0 Ok: queued as ID`.
fn swaks_queue_id(out: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.contains("queued as "))
        .unwrap_or_else(|| panic!("no 'queued as' in swaks output:\n{out}"));
    line.split("queued as ")
        .nth(1)
        .expect("id")
        .trim()
        .to_string()
}

fn swaks(gw: &Gateway, extra: &[&str], data: &[u8]) -> String {
    let swaks = require_tool("swaks");
    let file = gw.dir.path().join("swaks-data.eml");
    // swaks sends CRLF "." CRLF after the data: the file holds the message without its
    // last CRLF.
    let data = data.strip_suffix(b"\r\n").unwrap_or(data);
    std::fs::write(&file, data).expect("write data");
    let out = Command::new(swaks)
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            &gw.addr.port().to_string(),
        ])
        .args([
            "--helo",
            "client.example",
            "--from",
            SENDER,
            "--to",
            "alice@example.com",
        ])
        .args(["--timeout", "30"])
        .arg("--data")
        .arg(format!("@{}", file.display()))
        .args(extra)
        .output()
        .expect("run swaks");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "swaks failed ({}):\n{text}",
        out.status
    );
    text
}

#[test]
fn swaks_plain_message_is_spooled_byte_exact() {
    let gw = Gateway::start();
    let body = b"From: <sender@sender.example>\r\nTo: <alice@example.com>\r\nSubject: swaks plain\r\nMessage-Id: <swaks-plain@sender.example>\r\n\r\nfirst line\r\n.a line that starts with a dot\r\nlast line\r\n";
    let out = swaks(&gw, &[], body);
    let id = swaks_queue_id(&out);
    let stamp = assert_spooled(&gw, &id, body);
    assert!(
        stamp.contains(&format!("by {HOSTNAME} (splitmx) with ESMTP id {id}")),
        "{stamp}"
    );
    let stored = gw.spooled_message(&id);
    assert_eq!(stored.envelope.sender, SENDER);
    let rcpts: Vec<(&str, &str)> = stored
        .envelope
        .recipients
        .iter()
        .map(|r| (r.original.as_str(), r.route.as_str()))
        .collect();
    assert_eq!(rcpts, [("alice@example.com", "route_a")]);
}

#[test]
fn swaks_starttls_message_is_spooled_with_tls_in_the_stamp() {
    let gw = Gateway::with(Options::default().tls());
    let body = b"Subject: swaks tls\r\nMessage-Id: <swaks-tls@sender.example>\r\n\r\nover TLS\r\n";
    let out = swaks(&gw, &["--tls"], body);
    assert!(
        out.contains("TLS started"),
        "swaks did not start TLS:\n{out}"
    );
    let id = swaks_queue_id(&out);
    let stamp = assert_spooled(&gw, &id, body);
    assert!(
        stamp.contains(&format!("by {HOSTNAME} (splitmx) with ESMTPS id {id}")),
        "{stamp}"
    );
    assert!(stamp.contains("(using TLS"), "{stamp}");
}

#[test]
fn starttls_discards_plaintext_pipelined_after_it() {
    let gw = Gateway::with(Options::default().tls());
    let mut c = gw.connect();
    let ehlo = c.ehlo("client.example");
    assert!(
        ehlo.lines.iter().any(|l| l == "STARTTLS"),
        "STARTTLS offered: {ehlo}"
    );
    // The injection of CVE-2011-0411: plaintext in the same packet as STARTTLS.
    c.send(b"STARTTLS\r\nNOOP\r\nMAIL FROM:<injected@evil.example>\r\n")
        .unwrap();
    assert_reply(&c.reply().unwrap(), 220, "2.0.0");
    assert!(
        c.nothing_pending(Duration::from_millis(300)),
        "the server answered the plaintext after STARTTLS"
    );
    let mut tls = c.into_tls(gw.tls_client_config());
    // The first reply over TLS must be the one to our EHLO, not a stray 250 to the NOOP.
    tls.send(b"EHLO client.example\r\n").unwrap();
    let r = tls.reply().unwrap();
    assert_eq!(r.code, 250, "{r}");
    assert_eq!(
        r.lines[0], HOSTNAME,
        "first reply over TLS is the EHLO reply: {r}"
    );
    assert!(r.lines.len() > 1, "multi-line EHLO reply expected: {r}");
    assert!(
        !r.lines.iter().any(|l| l == "STARTTLS"),
        "no STARTTLS offered over TLS: {r}"
    );
    assert!(
        tls.nothing_pending(Duration::from_millis(300)),
        "stray reply over TLS"
    );
    // The injected MAIL did not open a transaction: RCPT is out of sequence.
    assert_reply(&tls.cmd("RCPT TO:<alice@example.com>"), 503, "5.5.1");
    let body = small_message("after-starttls");
    let r = tls.mail(SENDER, &["alice@example.com"], &body);
    assert_reply(&r, 250, "2.0.0");
    let stamp = assert_spooled(&gw, &r.queue_id(), &body);
    assert!(stamp.contains("with ESMTPS id"), "{stamp}");
    assert_eq!(gw.spooled().len(), 1, "only our message is spooled");
}

#[test]
fn state_is_reset_after_starttls() {
    let gw = Gateway::with(Options::default().tls());
    let mut c = gw.session();
    assert_reply(&c.cmd("STARTTLS"), 220, "2.0.0");
    let mut tls = c.into_tls(gw.tls_client_config());
    // RFC 3207: the client must say EHLO again.
    assert_reply(&tls.cmd(&format!("MAIL FROM:<{SENDER}>")), 503, "5.5.1");
    tls.ehlo("client.example");
    assert_reply(&tls.cmd("STARTTLS"), 503, "5.5.1");
    assert_reply(&tls.cmd("QUIT"), 221, "2.0.0");
}

#[test]
fn pipelining_1000_rcpts_in_one_write() {
    let gw = Gateway::start();
    let mut c = gw.session();
    let mut batch = format!("MAIL FROM:<{SENDER}>\r\n");
    let rcpts: Vec<String> = (0..1000)
        .map(|i| format!("user{i:04}@example.com"))
        .collect();
    for r in &rcpts {
        batch.push_str(&format!("RCPT TO:<{r}>\r\n"));
    }
    batch.push_str("DATA\r\n");
    c.send(batch.as_bytes()).unwrap();
    let replies = c.replies(1002);
    assert_reply(&replies[0], 250, "2.1.0");
    for (r, rcpt) in replies[1..1001].iter().zip(&rcpts) {
        assert_eq!(r.code, 250, "RCPT {rcpt}: {r}");
    }
    assert_eq!(replies[1001].code, 354, "{}", replies[1001]);
    let body = small_message("thousand");
    c.send(&data_bytes(&body)).unwrap();
    let r = c.reply().unwrap();
    assert_reply(&r, 250, "2.0.0");
    let id = r.queue_id();
    assert_spooled(&gw, &id, &body);
    let stored = gw.spooled_message(&id);
    let spooled: Vec<&str> = stored
        .envelope
        .recipients
        .iter()
        .map(|r| r.original.as_str())
        .collect();
    assert_eq!(
        spooled,
        rcpts.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(
        stored
            .envelope
            .recipients
            .iter()
            .all(|r| r.route == "local")
    );
    assert_eq!(stored.info.recipients.len(), 1000);
    assert_eq!(gw.spooled().len(), 1);
}

#[test]
fn recipients_over_the_limit_get_452() {
    let gw = Gateway::with(Options::default().smtp("max_recipients: 5"));
    let mut c = gw.session();
    c.expect(&format!("MAIL FROM:<{SENDER}>"), 250);
    for i in 0..5 {
        c.expect(&format!("RCPT TO:<u{i}@example.com>"), 250);
    }
    assert_reply(&c.cmd("RCPT TO:<u5@example.com>"), 452, "4.5.3");
    c.expect("DATA", 354);
    let body = small_message("five");
    c.send(&data_bytes(&body)).unwrap();
    let r = c.reply().unwrap();
    assert_reply(&r, 250, "2.0.0");
    assert_eq!(
        gw.spooled_message(&r.queue_id()).envelope.recipients.len(),
        5
    );
}

#[test]
fn eight_bit_and_nul_bytes_are_kept_exactly() {
    let gw = Gateway::start();
    let mut c = gw.session();
    let mut body =
        b"Subject: =?utf-8?q?bytes?=\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".to_vec();
    // Every byte value but LF, in lines short enough for the text line limit; CR alone
    // inside a line, NUL runs, invalid UTF-8, and a line that is only NULs.
    let all: Vec<u8> = (0u8..=255).filter(|&b| b != b'\n').collect();
    for chunk in all.chunks(60) {
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"\0\0\0\0\r\n\xff\xfe\xc3\x28 caf\xc3\xa9 \xe2\x82\r\n");
    c.expect(&format!("MAIL FROM:<{SENDER}> BODY=8BITMIME"), 250);
    c.expect("RCPT TO:<alice@example.com>", 250);
    c.expect("DATA", 354);
    c.send(&data_bytes(&body)).unwrap();
    let r = c.reply().unwrap();
    assert_reply(&r, 250, "2.0.0");
    assert_spooled(&gw, &r.queue_id(), &body);
    let stored = gw.spooled_message(&r.queue_id());
    assert!(
        stored
            .envelope
            .params
            .iter()
            .any(|(k, v)| k == "BODY" && v == "8BITMIME"),
        "BODY=8BITMIME kept: {:?}",
        stored.envelope.params
    );
}

#[test]
fn dot_stuffing_is_undone() {
    let gw = Gateway::start();
    let mut c = gw.session();
    c.expect(&format!("MAIL FROM:<{SENDER}>"), 250);
    c.expect("RCPT TO:<alice@example.com>", 250);
    c.expect("DATA", 354);
    // Sent stuffed by hand: every line that starts with a dot has one more.
    c.send(b"Subject: dots\r\n\r\n..x\r\n...\r\n..\r\na.b\r\n..\r.\r\n.\r\n")
        .unwrap();
    let r = c.reply().unwrap();
    assert_reply(&r, 250, "2.0.0");
    assert_spooled(
        &gw,
        &r.queue_id(),
        b"Subject: dots\r\n\r\n.x\r\n..\r\n.\r\na.b\r\n.\r.\r\n",
    );
}

#[test]
fn twenty_megabyte_message_is_byte_exact() {
    let gw = Gateway::start();
    let mut c = gw.session();
    let mut body = b"Subject: big\r\nMessage-Id: <big@sender.example>\r\n\r\n".to_vec();
    let mut rng = support::Rng::new(20);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/.";
    while body.len() < 20 * 1024 * 1024 {
        // Up to 997 octets: a line starting with '.' then stays within 1000 on the wire
        // (the stuffed-dot case has its own test).
        let len = rng.range(1, 998) as usize;
        for _ in 0..len {
            body.push(alphabet[rng.range(0, alphabet.len() as u64) as usize]);
        }
        body.extend_from_slice(b"\r\n");
    }
    c.expect(&format!("MAIL FROM:<{SENDER}> SIZE={}", body.len()), 250);
    c.expect("RCPT TO:<alice@example.com>", 250);
    c.expect("DATA", 354);
    c.send(&data_bytes(&body)).unwrap();
    let r = c.reply().unwrap();
    assert_reply(&r, 250, "2.0.0");
    assert_spooled(&gw, &r.queue_id(), &body);
}

#[test]
fn text_line_of_998_octets_is_accepted_and_999_refused() {
    let gw = Gateway::start();
    let mut c = gw.session();
    // 998 octets + CRLF is the RFC 5321 limit (§4.5.3.1.6).
    let mut body = b"Subject: long line\r\n\r\n".to_vec();
    body.extend_from_slice(&[b'p'; 998]);
    body.extend_from_slice(b"\r\n");
    let r = c.mail(SENDER, &["alice@example.com"], &body);
    assert_reply(&r, 250, "2.0.0");
    assert_spooled(&gw, &r.queue_id(), &body);
    let mut too_long = b"Subject: too long\r\n\r\n".to_vec();
    too_long.extend_from_slice(&[b'x'; 999]);
    too_long.extend_from_slice(b"\r\n");
    let r = c.mail(SENDER, &["alice@example.com"], &too_long);
    assert_reply(&r, 500, "5.5.2");
    assert_eq!(gw.spooled().len(), 1);
}

#[test]
fn stuffed_dot_does_not_count_toward_the_text_line_limit() {
    let gw = Gateway::start();
    let mut c = gw.session();
    // RFC 5321 §4.5.3.1.6: 1000 octets including CRLF, "not counting the leading dot
    // duplicated for transparency". A 998-octet line starting with '.' is 999 + CRLF on
    // the wire, and must be accepted like any 998-octet line.
    let mut body = b"Subject: long dotted line\r\n\r\n.".to_vec();
    body.extend_from_slice(&[b'd'; 997]);
    body.extend_from_slice(b"\r\n");
    let r = c.mail(SENDER, &["alice@example.com"], &body);
    assert_reply(&r, 250, "2.0.0");
    assert_spooled(&gw, &r.queue_id(), &body);
}

#[test]
fn declared_size_over_the_limit_gets_552_at_mail() {
    let gw = Gateway::with(Options::default().smtp("max_message_size: 100000"));
    let mut c = gw.session();
    let ehlo = c.ehlo("client.example");
    assert!(ehlo.lines.iter().any(|l| l == "SIZE 100000"), "{ehlo}");
    assert_reply(
        &c.cmd(&format!("MAIL FROM:<{SENDER}> SIZE=100001")),
        552,
        "5.3.4",
    );
    // The session goes on; a declared size within the limit is fine.
    c.expect(&format!("MAIL FROM:<{SENDER}> SIZE=100000"), 250);
    assert!(gw.spooled().is_empty());
}

#[test]
fn undeclared_size_over_the_limit_gets_552_after_data() {
    let gw = Gateway::with(Options::default().smtp("max_message_size: 100000"));
    let mut c = gw.session();
    c.expect(&format!("MAIL FROM:<{SENDER}>"), 250);
    c.expect("RCPT TO:<alice@example.com>", 250);
    c.expect("DATA", 354);
    let mut body = b"Subject: too big\r\n\r\n".to_vec();
    while body.len() <= 200_000 {
        body.extend_from_slice(&[b'x'; 98]);
        body.extend_from_slice(b"\r\n");
    }
    c.send(&data_bytes(&body)).unwrap();
    assert_reply(&c.reply().unwrap(), 552, "5.3.4");
    assert!(gw.spooled().is_empty(), "nothing spooled");
    // The transaction is over; the session is not.
    assert_reply(&c.cmd("RCPT TO:<alice@example.com>"), 503, "5.5.1");
    let small = small_message("after-552");
    let r = c.mail(SENDER, &["alice@example.com"], &small);
    assert_reply(&r, 250, "2.0.0");
    assert_spooled(&gw, &r.queue_id(), &small);
    assert_eq!(gw.spooled().len(), 1);
}

#[test]
fn command_line_of_100_kb_gets_500_and_the_session_survives() {
    let gw = Gateway::start();
    let mut c = gw.session();
    let mut line = b"RCPT TO:<".to_vec();
    line.extend(std::iter::repeat_n(b'a', 100 * 1024));
    line.extend_from_slice(b"@example.com>\r\n");
    c.send(&line).unwrap();
    assert_reply(&c.reply().unwrap(), 500, "5.5.2");
    assert_reply(&c.cmd("NOOP"), 250, "2.0.0");
    // And a transaction still works in the same session.
    let body = small_message("after-long-line");
    let r = c.mail(SENDER, &["alice@example.com"], &body);
    assert_reply(&r, 250, "2.0.0");
    assert_spooled(&gw, &r.queue_id(), &body);
}

#[test]
fn sixty_four_megabytes_without_a_line_feed_keep_memory_flat() {
    let gw = Gateway::start();
    let before = gw.proc_status("VmHWM");
    let chunk = vec![b'a'; 1024 * 1024];
    // As a command line.
    let mut c = gw.session();
    for _ in 0..64 {
        c.send(&chunk).unwrap();
    }
    c.send(b"\r\n").unwrap();
    assert_reply(&c.reply().unwrap(), 500, "5.5.2");
    assert_reply(&c.cmd("NOOP"), 250, "2.0.0");
    // As message data.
    c.expect(&format!("MAIL FROM:<{SENDER}>"), 250);
    c.expect("RCPT TO:<alice@example.com>", 250);
    c.expect("DATA", 354);
    for _ in 0..64 {
        c.send(&chunk).unwrap();
    }
    c.send(b"\r\n.\r\n").unwrap();
    let r = c.reply().unwrap();
    assert!(
        matches!(r.code, 552 | 500),
        "552 or 500 after 64 MB without a line feed: {r}"
    );
    assert_reply(&c.cmd("NOOP"), 250, "2.0.0");
    let after = gw.proc_status("VmHWM");
    let growth = after.saturating_sub(before);
    eprintln!(
        "VmHWM before {} KiB, after {} KiB, growth {} KiB after 2 x 64 MiB without a line feed",
        before / 1024,
        after / 1024,
        growth / 1024
    );
    assert!(
        growth < 40 * 1024 * 1024,
        "peak RSS grew by {} MiB",
        growth / (1024 * 1024)
    );
    assert!(gw.spooled().is_empty());
}

#[test]
fn commands_out_of_order_get_503() {
    let gw = Gateway::start();
    let mut c = gw.connect();
    assert_reply(&c.cmd(&format!("MAIL FROM:<{SENDER}>")), 503, "5.5.1");
    c.ehlo("client.example");
    assert_reply(&c.cmd("RCPT TO:<alice@example.com>"), 503, "5.5.1");
    assert_reply(&c.cmd("DATA"), 503, "5.5.1");
    c.expect(&format!("MAIL FROM:<{SENDER}>"), 250);
    assert_reply(&c.cmd(&format!("MAIL FROM:<{SENDER}>")), 503, "5.5.1");
    // DATA before any RCPT: RFC 5321 §3.3 allows 503 or 554 ("no valid recipients").
    let r = c.cmd("DATA");
    assert!(
        matches!(r.code, 503 | 554) && r.enhanced() == "5.5.1",
        "DATA before RCPT: {r}"
    );
    // RSET ends the transaction: RCPT is out of order again.
    c.expect("RSET", 250);
    assert_reply(&c.cmd("RCPT TO:<alice@example.com>"), 503, "5.5.1");
    c.expect("NOOP", 250);
    assert!(gw.spooled().is_empty());
}

#[test]
fn non_utf8_and_unknown_commands_are_errors_and_the_session_survives() {
    let gw = Gateway::start();
    let mut c = gw.session();
    c.send(b"MAIL FROM:<\xff\xfe@sender.example>\r\n").unwrap();
    assert_eq!(c.reply().unwrap().code / 100, 5);
    assert_reply(&c.cmd("FROBNICATE now"), 500, "5.5.2");
    c.send(b"\0\0\0\r\n").unwrap();
    assert_eq!(c.reply().unwrap().code / 100, 5);
    assert_reply(&c.cmd("VRFY alice"), 252, "2.5.0");
    let body = small_message("after-garbage");
    let r = c.mail(SENDER, &["alice@example.com"], &body);
    assert_reply(&r, 250, "2.0.0");
    assert_spooled(&gw, &r.queue_id(), &body);
}

#[test]
fn too_many_errors_close_the_session() {
    let gw = Gateway::with(Options::default().smtp("max_errors: 3"));
    let mut c = gw.session();
    for _ in 0..3 {
        assert_reply(&c.cmd("BOGUS"), 500, "5.5.2");
    }
    assert_reply(&c.cmd("BOGUS"), 421, "4.7.0");
    assert!(
        c.wait_closed(Duration::from_secs(5)),
        "closed after too many errors"
    );
}

#[test]
fn abrupt_disconnect_mid_data_spools_nothing() {
    let gw = Gateway::start();
    for tail in [
        &b"Subject: cut\r\n\r\nhalf a mess"[..],
        b"Subject: cut\r\n\r\nalmost\r\n.\r",
        b"Subject: cut\r\n\r\nalmost\r\n.",
    ] {
        let mut c = gw.session();
        c.expect(&format!("MAIL FROM:<{SENDER}>"), 250);
        c.expect("RCPT TO:<alice@example.com>", 250);
        c.expect("DATA", 354);
        c.send(tail).unwrap();
        c.tcp().shutdown(std::net::Shutdown::Both).unwrap();
        drop(c);
    }
    // The gateway saw the three disconnects (it says so) and queued nothing.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw
        .stderr_text()
        .matches("client disconnected during DATA")
        .count()
        < 3
    {
        assert!(
            Instant::now() < deadline,
            "no log of the disconnects:\n{}",
            gw.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        gw.spooled().is_empty(),
        "nothing spooled after a disconnect mid-DATA"
    );
    let mut c = gw.session();
    c.expect("NOOP", 250);
}

/// Send `bytes` one per `interval` until the server answers; returns the reply and the
/// time from the first byte.
fn drip(c: &mut Client, bytes: &[u8], interval: Duration) -> (Reply, Duration) {
    let start = Instant::now();
    c.tcp().set_read_timeout(Some(interval)).unwrap();
    for b in bytes {
        if c.send(&[*b]).is_err() {
            break;
        }
        match c.reply() {
            Ok(r) => {
                c.tcp()
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                return (r, start.elapsed());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!(
                "connection failed without a reply after {:?}: {e}",
                start.elapsed()
            ),
        }
    }
    c.tcp()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let r = c
        .reply()
        .unwrap_or_else(|e| panic!("no reply after the drip ({:?}): {e}", start.elapsed()));
    (r, start.elapsed())
}

#[test]
fn slow_drip_client_is_timed_out() {
    let gw = Gateway::with(
        Options::default()
            .smtp("command_timeout: 2s")
            .smtp("data_timeout: 2s"),
    );
    let step = Duration::from_millis(500);
    // A command line dribbled a byte every 0.5 s never completes within 2 s.
    let mut c = gw.connect();
    let (r, took) = drip(&mut c, b"EHLO a.very.slow.client.example\r\n", step);
    assert_reply(&r, 421, "4.4.2");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(4500),
        "command timeout after {took:?}"
    );
    assert!(
        c.wait_closed(Duration::from_secs(2)),
        "closed after the timeout"
    );
    // A message dribbled the same way: the DATA deadline is for the whole transfer.
    let mut c = gw.session();
    c.expect(&format!("MAIL FROM:<{SENDER}>"), 250);
    c.expect("RCPT TO:<alice@example.com>", 250);
    c.expect("DATA", 354);
    let (r, took) = drip(
        &mut c,
        b"Subject: slow\r\n\r\nthis message takes its time to arrive\r\n.\r\n",
        step,
    );
    assert_reply(&r, 421, "4.4.2");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(4500),
        "DATA timeout after {took:?}"
    );
    assert!(
        c.wait_closed(Duration::from_secs(2)),
        "closed after the timeout"
    );
    assert!(gw.spooled().is_empty());
}

#[test]
fn too_many_connections_from_one_ip_get_421() {
    let gw = Gateway::with(Options::default().smtp("max_connections_per_ip: 3"));
    let mut open: Vec<Client> = (0..3).map(|_| gw.connect()).collect();
    let mut fourth = gw.connect_raw();
    assert_reply(&fourth.reply().unwrap(), 421, "4.7.0");
    assert!(
        fourth.wait_closed(Duration::from_secs(5)),
        "the 4th connection is closed"
    );
    // The three are still served.
    for c in &mut open {
        c.expect("NOOP", 250);
    }
    // A slot comes back when one leaves.
    let mut first = open.remove(0);
    first.expect("QUIT", 221);
    assert!(first.wait_closed(Duration::from_secs(5)));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = gw.connect_raw();
        let r = c.reply().unwrap();
        if r.code == 220 {
            break;
        }
        assert_reply(&r, 421, "4.7.0");
        assert!(Instant::now() < deadline, "the slot was not given back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn received_fields(n: usize) -> String {
    (0..n)
        .map(|i| format!("Received: from h{i}.example by relay{i}.example with SMTP id {i}; Mon, 1 Jan 2024 00:00:00 +0000\r\n"))
        .collect()
}

#[test]
fn hop_count_over_the_limit_gets_554_5_4_6() {
    let gw = Gateway::start();
    let mut c = gw.session();
    let ok = format!("{}Subject: 50 hops\r\n\r\nbody\r\n", received_fields(50)).into_bytes();
    let r = c.mail(SENDER, &["alice@example.com"], &ok);
    assert_reply(&r, 250, "2.0.0");
    assert_spooled(&gw, &r.queue_id(), &ok);
    let looping = format!("{}Subject: 51 hops\r\n\r\nbody\r\n", received_fields(51)).into_bytes();
    let r = c.mail(SENDER, &["alice@example.com"], &looping);
    assert_reply(&r, 554, "5.4.6");
    assert_eq!(gw.spooled().len(), 1, "the looping message is not spooled");
    c.expect("NOOP", 250);
}

#[test]
fn own_stamps_get_554_5_4_6() {
    let gw = Gateway::start();
    let mut c = gw.session();
    let stamp = |id: &str| {
        format!(
            "Received: from x by {HOSTNAME} (splitmx) with ESMTP id {id}; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        )
    };
    let once = format!("{}Subject: once\r\n\r\nbody\r\n", stamp("A1")).into_bytes();
    let r = c.mail(SENDER, &["alice@example.com"], &once);
    assert_reply(&r, 250, "2.0.0");
    assert_spooled(&gw, &r.queue_id(), &once);
    let twice = format!(
        "{}{}Subject: twice\r\n\r\nbody\r\n",
        stamp("A2"),
        stamp("A1")
    )
    .into_bytes();
    let r = c.mail(SENDER, &["alice@example.com"], &twice);
    assert_reply(&r, 554, "5.4.6");
    assert!(
        r.lines[0].contains(HOSTNAME),
        "the reply names the loop: {r}"
    );
    assert_eq!(gw.spooled().len(), 1);
}

#[test]
fn rcpt_replies_follow_the_routing_tables() {
    let gw = Gateway::start();
    let mut c = gw.session();
    c.expect(&format!("MAIL FROM:<{SENDER}>"), 250);
    assert_reply(&c.cmd("RCPT TO:<nobody@example.org>"), 550, "5.1.1");
    assert_reply(&c.cmd("RCPT TO:<someone@foreign.example>"), 554, "5.7.1");
    let r = c.cmd("RCPT TO:<eve@example.com>");
    assert_reply(&r, 550, "5.1.1");
    assert!(
        r.lines[0].contains("This mailbox was closed"),
        "the reject route's own text: {r}"
    );
    let r = c.cmd("RCPT TO:<dave@example.com>");
    assert_reply(&r, 450, "4.2.1");
    assert!(
        r.lines[0].contains("Mailbox is being moved"),
        "the defer route's own text: {r}"
    );
    // No valid recipient yet.
    let r = c.cmd("DATA");
    assert!(
        r.code == 554 || r.code == 503,
        "DATA without valid recipients: {r}"
    );
    c.expect("RSET", 250);
    c.expect(&format!("MAIL FROM:<{SENDER}>"), 250);
    c.expect("RCPT TO:<known@example.org>", 250);
    c.expect("RCPT TO:<Alice@EXAMPLE.com>", 250);
    assert_reply(&c.cmd("RCPT TO:<nobody@example.org>"), 550, "5.1.1");
    c.expect("DATA", 354);
    let body = small_message("routes");
    c.send(&data_bytes(&body)).unwrap();
    let r = c.reply().unwrap();
    assert_reply(&r, 250, "2.0.0");
    assert_spooled(&gw, &r.queue_id(), &body);
    let stored = gw.spooled_message(&r.queue_id());
    let rcpts: Vec<(&str, &str)> = stored
        .envelope
        .recipients
        .iter()
        .map(|r| (r.original.as_str(), r.route.as_str()))
        .collect();
    assert_eq!(
        rcpts,
        [
            ("known@example.org", "route_b"),
            ("Alice@EXAMPLE.com", "route_a")
        ]
    );
}

#[test]
fn reload_during_an_open_session_applies_to_the_next_rcpt() {
    let table = |first: &str, probe: &str| {
        format!(
            "domains: [example.com]\ndefault: local\nrecipients:\n  first@example.com: {first}\n  second@example.com: {first}\n  probe@example.com: {probe}\n"
        )
    };
    let gw =
        Gateway::with(Options::default().table("example.com.yaml", &table("route_a", "route_a")));
    let mut c = gw.session();
    c.expect(&format!("MAIL FROM:<{SENDER}>"), 250);
    c.expect("RCPT TO:<first@example.com>", 250);
    // Another session open across the reload, idle.
    let mut idle = gw.session();

    gw.write_table("example.com.yaml", &table("route_b", "closed"));
    let (status, out) = gw.cli("reload");
    assert!(status.success(), "splitmx reload: {out}");
    // The reload is asynchronous: wait until a new session sees the new table.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut p = gw.session();
        p.expect(&format!("MAIL FROM:<{SENDER}>"), 250);
        let r = p.cmd("RCPT TO:<probe@example.com>");
        if r.code == 550 {
            break;
        }
        assert_eq!(r.code, 250, "{r}");
        assert!(
            Instant::now() < deadline,
            "the reload did not take effect:\n{}",
            gw.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Same session, not dropped: the next RCPT uses the new table.
    c.expect("RCPT TO:<second@example.com>", 250);
    c.expect("DATA", 354);
    let body = small_message("reload");
    c.send(&data_bytes(&body)).unwrap();
    let r = c.reply().unwrap();
    assert_reply(&r, 250, "2.0.0");
    assert_spooled(&gw, &r.queue_id(), &body);
    let stored = gw.spooled_message(&r.queue_id());
    let rcpts: Vec<(&str, &str)> = stored
        .envelope
        .recipients
        .iter()
        .map(|r| (r.original.as_str(), r.route.as_str()))
        .collect();
    assert_eq!(
        rcpts,
        [
            ("first@example.com", "route_a"),
            ("second@example.com", "route_b")
        ]
    );
    idle.expect("NOOP", 250);
    let body = small_message("idle-after-reload");
    let r = idle.mail(SENDER, &["second@example.com"], &body);
    assert_reply(&r, 250, "2.0.0");
    assert_eq!(
        gw.spooled_message(&r.queue_id()).envelope.recipients[0].route,
        "route_b"
    );
}

#[test]
fn received_field_names_the_host_queue_id_and_table_version() {
    let gw = Gateway::start();
    let version =
        splitmx::Router::load(splitmx::RoutingConfig::new(&gw.routing).with_hostname(HOSTNAME))
            .expect("tables load")
            .version()
            .to_string();
    let mut c = gw.session();
    let body = small_message("stamp");
    let r = c.mail(SENDER, &["alice@example.com"], &body);
    assert_reply(&r, 250, "2.0.0");
    let id = r.queue_id();
    let stamp = assert_spooled(&gw, &id, &body);
    assert!(
        stamp.starts_with("Received: from client.example ([127.0.0.1])"),
        "{stamp}"
    );
    assert!(
        stamp.contains(&format!("by {HOSTNAME} (splitmx) with ESMTP id {id}")),
        "{stamp}"
    );
    assert!(
        stamp.contains(&format!("(routing tables {version})")),
        "version {version}: {stamp}"
    );
    assert!(stamp.contains("for <alice@example.com>;"), "{stamp}");
    let stored = gw.spooled_message(&id);
    assert_eq!(stored.envelope.table_version, version);
    assert_eq!(stored.envelope.id.to_string(), id);
    assert_eq!(gw.spooled().len(), 1);
    // Folded lines only; no bare LF, no line over 998 octets.
    for l in stamp.split("\r\n").filter(|l| !l.is_empty()) {
        assert!(!l.contains('\n') && l.len() <= 998, "{l:?}");
    }
}

/// The JSON events of the gateway's stderr with `message == "recipient"`, as field maps.
fn recipient_events(gw: &Gateway) -> Vec<serde_json::Map<String, serde_json::Value>> {
    gw.stderr_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let fields = v.get("fields").cloned().unwrap_or(v);
            let map = fields.as_object()?.clone();
            (map.get("message").and_then(|m| m.as_str()) == Some("recipient")).then_some(map)
        })
        .collect()
}

#[test]
fn one_log_event_per_recipient() {
    let gw = Gateway::with(
        Options::default()
            .env("SPLITMX_LOG_FORMAT", "json")
            .env("SPLITMX_LOG", "info"),
    );
    let mut c = gw.session();
    c.expect(&format!("MAIL FROM:<{SENDER}>"), 250);
    let rcpts = [
        ("alice@example.com", 250),
        ("eve@example.com", 550),
        ("dave@example.com", 450),
        ("nobody@example.org", 550),
        ("someone@foreign.example", 554),
    ];
    for (rcpt, code) in rcpts {
        c.expect(&format!("RCPT TO:<{rcpt}>"), code);
    }
    c.expect("DATA", 354);
    c.send(&data_bytes(&small_message("log"))).unwrap();
    let r = c.reply().unwrap();
    assert_reply(&r, 250, "2.0.0");
    let id = r.queue_id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = recipient_events(&gw);
        if events.len() >= rcpts.len() || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        events.len(),
        rcpts.len(),
        "one event per RCPT:\n{}",
        gw.stderr_text()
    );
    let s = |e: &serde_json::Map<String, serde_json::Value>, k: &str| {
        e.get(k).map(|v| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        })
    };
    for ((rcpt, code), e) in rcpts.iter().zip(&events) {
        assert_eq!(s(e, "rcpt").as_deref(), Some(*rcpt), "{e:?}");
        assert_eq!(s(e, "queue_id").as_deref(), Some(id.as_str()), "{e:?}");
        assert!(
            s(e, "client").is_some_and(|c| c.starts_with("127.0.0.1:")),
            "{e:?}"
        );
        assert_eq!(s(e, "sender").as_deref(), Some(SENDER), "{e:?}");
        assert!(s(e, "version").is_some_and(|v| !v.is_empty()), "{e:?}");
        assert!(
            s(e, "reply").is_some_and(|r| r.starts_with(&code.to_string())),
            "{e:?}"
        );
    }
    // Recipients that a route answered (accepted, rejected, deferred) name the route and
    // the table line.
    for e in &events[..3] {
        assert!(
            s(e, "route").is_some_and(|r| !r.is_empty()),
            "route in {e:?}"
        );
        assert!(
            s(e, "provenance").is_some_and(|p| p.contains(".yaml:")),
            "provenance in {e:?}"
        );
    }
    assert_eq!(s(&events[0], "route").as_deref(), Some("route_a"));
    assert_eq!(s(&events[1], "route").as_deref(), Some("closed"));
    assert_eq!(s(&events[2], "route").as_deref(), Some("moving"));
    // Unrouted recipients say so in the same fields.
    for e in &events[3..] {
        assert_eq!(s(e, "route").as_deref(), Some("none"), "{e:?}");
        assert!(s(e, "provenance").is_some_and(|p| !p.is_empty()), "{e:?}");
    }
}

#[test]
fn sigterm_gives_idle_sessions_421_and_exits_0() {
    let mut gw = Gateway::start();
    let mut idle = gw.session();
    let mut greeted = gw.connect();
    gw.signal("TERM");
    for c in [&mut idle, &mut greeted] {
        assert_reply(&c.reply().unwrap(), 421, "4.3.2");
        assert!(c.wait_closed(Duration::from_secs(5)));
    }
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        gw.stderr_text()
    );
}

#[test]
fn sigterm_mid_data_lets_the_client_finish() {
    let mut gw = Gateway::with(Options::default().smtp("shutdown_grace: 20s"));
    let mut c = gw.session();
    c.expect(&format!("MAIL FROM:<{SENDER}>"), 250);
    c.expect("RCPT TO:<alice@example.com>", 250);
    c.expect("DATA", 354);
    let body = small_message("shutdown");
    let data = data_bytes(&body);
    let (first, rest) = data.split_at(data.len() / 2);
    c.send(first).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    gw.signal("TERM");
    // The listener closes: new clients are refused (or get no session).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::net::TcpStream::connect_timeout(&gw.addr, Duration::from_secs(1)) {
            Err(_) => break,
            Ok(s) => {
                let mut probe = Client::new(s);
                match probe.reply() {
                    Err(_) => break,
                    Ok(r) if r.code != 220 => break,
                    Ok(_) => {}
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "still accepting 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.send(rest).unwrap();
    let r = c.reply().unwrap();
    assert_reply(&r, 250, "2.0.0");
    let id = r.queue_id();
    let status = gw.wait_exit(Duration::from_secs(25));
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        gw.stderr_text()
    );
    assert_spooled(&gw, &id, &body);
    assert_eq!(gw.spooled().len(), 1);
}

#[test]
fn postmaster_without_a_domain_is_accepted() {
    let gw = Gateway::start();
    let mut c = gw.session();
    c.expect(&format!("MAIL FROM:<{SENDER}>"), 250);
    c.expect("RCPT TO:<Postmaster>", 250);
    c.expect("DATA", 354);
    c.send(&data_bytes(&small_message("postmaster"))).unwrap();
    let r = c.reply().unwrap();
    assert_reply(&r, 250, "2.0.0");
    let stored = gw.spooled_message(&r.queue_id());
    let rcpt = &stored.envelope.recipients[0];
    // The gateway's host name is not served by the test tables: the first served domain.
    assert_eq!(rcpt.original, "postmaster@example.com");
    assert_eq!(rcpt.route, "local");
}
