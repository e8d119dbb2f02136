//! Delivery end to end: the real gateway (`splitmx serve`) delivering to real peers started
//! here: Postfix's smtp-sink as the external suite, a scripted SMTP server for chosen
//! replies, Dovecot LMTP for local mailboxes, Maildir, and a DNS responder for MX records.
//! Every assertion is on what a user would see: bytes at the backends, notices in
//! mailboxes, the queue as `splitmx queue` shows it, log lines.

#![cfg(feature = "server")]

mod peers;
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use peers::dns::{DnsServer, Zone};
use peers::dovecot::{Dovecot, split_added_fields};
use peers::scripted::{Script, Scripted};
use peers::sink::Sink;
use splitmx::delivery::bounce;
use support::{Gateway, HOSTNAME, Options, split_stamp};

/// A message whose bytes are easy to damage: dots at line starts, a lone dot line, 8-bit.
const BODY: &[u8] = b"Subject: split delivery\r\nMessage-ID: <split-1@test>\r\n\r\n.leading dot\r\n.\r\n..two dots\r\ncaf\xc3\xa9 8-bit\r\nend\r\n";

/// Options with these tables and delivery on (fast retries, the DNS responder).
fn options(tables: &[(&str, String)], dns: &DnsServer, delivery: &[&str]) -> Options {
    let o = Options {
        tables: tables
            .iter()
            .map(|(n, c)| (n.to_string(), c.clone()))
            .collect(),
        ..Options::default()
    };
    let ns = format!("nameservers: [\"{}\"]", dns.addr());
    let mut lines: Vec<&str> = delivery.to_vec();
    for default in [
        ns.as_str(),
        "retry_min: 1s",
        "retry_max: 2s",
        "connect_timeout: 5s",
    ] {
        let key = default.split(':').next().unwrap_or("");
        if !lines.iter().any(|l| l.starts_with(key)) {
            lines.push(default);
        }
    }
    o.delivery(&lines)
}

/// Files delivered into the Maildir `dir` (new/), waiting up to `within` for `n`.
fn maildir_messages(dir: &Path, n: usize, within: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + within;
    loop {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("new"))
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        if files.len() >= n || Instant::now() >= deadline {
            return files.iter().filter_map(|f| std::fs::read(f).ok()).collect();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `splitmx queue list --json` as JSON.
fn queue_json(gw: &Gateway) -> serde_json::Value {
    let (status, out, err) = gw.run_cli(&["queue", "list", "--json"]);
    assert!(status.success(), "queue list failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("queue list --json: {e}: {out}"))
}

/// Waits until `check` holds for the queue listing.
fn wait_queue(
    gw: &Gateway,
    within: Duration,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let q = queue_json(gw);
        if check(&q) {
            return q;
        }
        assert!(
            Instant::now() < deadline,
            "queue never showed {what}: {q}\n--- gateway log ---\n{}",
            gw.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn messages(q: &serde_json::Value) -> Vec<serde_json::Value> {
    q["messages"].as_array().cloned().unwrap_or_default()
}

fn send(gw: &Gateway, from: &str, to: &[&str], body: &[u8]) -> String {
    let mut c = gw.session();
    let reply = c.mail(from, to, body);
    assert_eq!(reply.code, 250, "message refused: {reply:?}");
    reply.queue_id()
}

fn dns_zone() -> Zone {
    let mut z = Zone::new();
    z.mx("suite.test", 10, "mx1.suite.test")
        .a("mx1.suite.test", "127.0.0.1")
        // An MX pointing back at the gateway's own host name.
        .mx("loop.test", 10, HOSTNAME)
        .a(HOSTNAME, "127.0.0.1");
    z
}

#[test]
fn mixed_recipients_land_exactly_once_at_the_right_backend_with_bytes_unchanged() {
    let dns = DnsServer::start(dns_zone());
    let suite = Sink::dumping(&[]);
    let direct = Sink::dumping(&[]);
    let dovecot = Dovecot::start(&["lmtpuser@example.com"]);
    let tables = [(
        "example.com.yaml",
        format!(
            "routes:\n  suite: smtp:suite.test:{}\n  onprem: lmtp:[127.0.0.1]:{}\n  direct: smtp:[127.0.0.1]:{}\n  local:\n    maildir: \"{{domain}}/{{user}}\"\ndomains: [example.com]\nrecipients:\n  s1@example.com: suite\n  s2@example.com: suite\n  lmtpuser@example.com: onprem\n  carol@example.com: local\n  dave@example.com: direct\n",
            suite.addr.port(),
            dovecot.addr.port(),
            direct.addr.port()
        ),
    )];
    let gw = Gateway::with(options(&tables, &dns, &[]));
    send(
        &gw,
        "sender@example.net",
        &[
            "s1@example.com",
            "lmtpuser@example.com",
            "s2@example.com",
            "carol@example.com",
            "dave@example.com",
        ],
        BODY,
    );
    // Maildir: the message as spooled, our Received field first.
    let carol = maildir_messages(
        &gw.dir.path().join("mail/example.com/carol"),
        1,
        Duration::from_secs(20),
    );
    assert_eq!(carol.len(), 1, "carol's maildir: {}", gw.stderr_text());
    let (stamp, rest) = split_stamp(&carol[0]);
    assert_eq!(rest, BODY);
    assert!(stamp.contains("mx.test.example"), "{stamp}");
    let full = carol[0].clone();
    // The suite, found by MX: one transaction for both of its recipients.
    let dumps = suite.wait_for(1, Duration::from_secs(20));
    assert_eq!(dumps.len(), 1, "one copy for the suite");
    assert_eq!(dumps[0].rcpt_args, ["<s1@example.com>", "<s2@example.com>"]);
    assert!(
        dumps[0].mail_args.starts_with("<sender@example.net>"),
        "{}",
        dumps[0].mail_args
    );
    assert_eq!(dumps[0].data, peers::as_stored_by_smtp_sink(&full));
    let dumps = direct.wait_for(1, Duration::from_secs(20));
    assert_eq!(dumps.len(), 1);
    assert_eq!(dumps[0].rcpt_args, ["<dave@example.com>"]);
    assert_eq!(dumps[0].data, peers::as_stored_by_smtp_sink(&full));
    // Dovecot over LMTP.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = dovecot.messages("lmtpuser@example.com");
    while got.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        got = dovecot.messages("lmtpuser@example.com");
    }
    assert_eq!(got.len(), 1, "dovecot log: {}", dovecot.log());
    let (_, message) = split_added_fields(&got[0]);
    assert_eq!(message, peers::as_stored_with_lf(&full));
    // Nothing left in the queue, nothing delivered twice.
    wait_queue(&gw, Duration::from_secs(10), "an empty queue", |q| {
        messages(q).is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(suite.wait_for(1, Duration::from_secs(1)).len(), 1);
    assert_eq!(direct.wait_for(1, Duration::from_secs(1)).len(), 1);
    assert_eq!(dovecot.messages("lmtpuser@example.com").len(), 1);
}

#[test]
fn a_next_hop_down_for_a_while_gets_the_message_after_a_retry() {
    let dns = DnsServer::start(dns_zone());
    let port = peers::free_port();
    let tables = [(
        "example.com.yaml",
        format!(
            "routes:\n  suite: smtp:[127.0.0.1]:{port}\ndomains: [example.com]\ndefault: suite\n"
        ),
    )];
    let gw = Gateway::with(options(&tables, &dns, &[]));
    let id = send(&gw, "sender@example.net", &["bob@example.com"], BODY);
    let q = wait_queue(&gw, Duration::from_secs(20), "a deferred recipient", |q| {
        messages(q)
            .iter()
            .any(|m| m["recipient_status"][0]["state"] == "deferred")
    });
    let m = &messages(&q)[0];
    assert_eq!(m["id"], id);
    let detail = m["recipient_status"][0]["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("127.0.0.1") && detail.to_lowercase().contains("refused"),
        "{detail}"
    );
    assert!(
        m["changed_at"]["secs_since_epoch"].as_u64().is_some(),
        "when the attempt ended: {m}"
    );
    let (_, list, _) = gw.run_cli(&["queue", "list"]);
    assert!(
        list.contains(&id) && list.contains(&format!("smtp:[127.0.0.1]:{port}")),
        "{list}"
    );
    assert!(
        list.contains("s ago) "),
        "the error says how long ago: {list}"
    );
    // The next hop comes up: the next retry delivers.
    let sink = Sink::dumping_on(port, &[]);
    let dumps = sink.wait_for(1, Duration::from_secs(20));
    assert_eq!(dumps[0].rcpt_args, ["<bob@example.com>"]);
    assert!(
        dumps[0]
            .data
            .ends_with(&peers::as_stored_by_smtp_sink(BODY))
    );
    wait_queue(&gw, Duration::from_secs(10), "an empty queue", |q| {
        messages(q).is_empty()
    });
}

/// Tables routing example.com to a next hop on `port`, except sender@example.com, whose
/// mail (the notices) lands in a Maildir under the gateway's directory.
/// A table sending all of example.com to the peer on `port`.
fn suite_only(port: u16) -> [(&'static str, String); 1] {
    [(
        "example.com.yaml",
        format!(
            "routes:\n  suite: smtp:[127.0.0.1]:{port}\ndomains: [example.com]\ndefault: suite\n"
        ),
    )]
}

fn suite_with_sender_inbox(port: u16) -> [(&'static str, String); 1] {
    [(
        "example.com.yaml",
        format!(
            "routes:\n  suite: smtp:[127.0.0.1]:{port}\n  local:\n    maildir: \"{{domain}}/{{user}}\"\ndomains: [example.com]\ndefault: suite\nrecipients:\n  sender@example.com: local\n"
        ),
    )]
}

/// The notices in `sender`'s maildir, parsed.
fn notices(gw: &Gateway, user: &str, n: usize) -> Vec<Vec<u8>> {
    maildir_messages(
        &gw.dir.path().join("mail/example.com").join(user),
        n,
        Duration::from_secs(20),
    )
}

#[test]
fn a_5xx_for_one_recipient_bounces_only_that_one_with_a_dsn() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let suite = rt.block_on(Scripted::start(Script::default().rcpt(
        "bad@example.com",
        "550 5.1.1 <bad@example.com>: Recipient address rejected: User unknown",
    )));
    let dns = DnsServer::start(dns_zone());
    let tables = [(
        "example.com.yaml",
        format!(
            "routes:\n  suite: smtp:[127.0.0.1]:{}\n  local:\n    maildir: \"{{domain}}/{{user}}\"\ndomains: [example.com]\ndefault: suite\nrecipients:\n  sender@example.com: local\n",
            suite.addr.port()
        ),
    )];
    let gw = Gateway::with(options(&tables, &dns, &[]));
    let id = send(
        &gw,
        "sender@example.com",
        &["good@example.com", "bad@example.com"],
        BODY,
    );
    let got = notices(&gw, "sender", 1);
    assert_eq!(got.len(), 1, "one notice: {}", gw.stderr_text());
    let parsed = bounce::parse(&got[0]).unwrap_or_else(|e| panic!("not a DSN: {e}"));
    assert_eq!(
        parsed.recipients.len(),
        1,
        "only the failed recipient is reported"
    );
    assert_eq!(
        parsed.recipient_field(0, "Final-Recipient"),
        Some("rfc822; bad@example.com")
    );
    assert_eq!(parsed.recipient_field(0, "Action"), Some("failed"));
    assert_eq!(parsed.recipient_field(0, "Status"), Some("5.1.1"));
    let diag = parsed.recipient_field(0, "Diagnostic-Code").unwrap_or("");
    assert!(diag.starts_with("smtp; 550 5.1.1"), "{diag}");
    let text = String::from_utf8_lossy(&got[0]);
    assert!(text.contains(&id), "the notice names the queue id");
    assert!(
        text.contains("Message-ID: <split-1@test>"),
        "original headers returned"
    );
    assert!(
        !text.contains("good@example.com"),
        "the delivered recipient is not reported"
    );
    // The good recipient got the message once; the queue is empty.
    assert_eq!(suite.messages().len(), 1);
    wait_queue(&gw, Duration::from_secs(10), "an empty queue", |q| {
        messages(q).is_empty()
    });
}

/// A busy next hop (one connection, slow to greet while the messages pile up): each
/// message's MAIL, RCPT and DATA go out behind the previous message's final dot, and
/// every message still reaches its own recipient, once.
#[test]
fn a_busy_next_hop_gets_transactions_sent_ahead_and_each_message_once() {
    const CLIENTS: usize = 8;
    const EACH: usize = 25;
    const ALL: usize = CLIENTS * EACH;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let suite = rt.block_on(Scripted::start(Script {
        greeting_delay: Duration::from_secs(2),
        ..Script::default()
    }));
    let dns = DnsServer::start(dns_zone());
    let tables = suite_only(suite.addr.port());
    let gw = Gateway::with(options(&tables, &dns, &["max_per_next_hop: 1"]));
    std::thread::scope(|s| {
        for t in 0..CLIENTS {
            let gw = &gw;
            s.spawn(move || {
                let mut c = gw.session();
                for k in 0..EACH {
                    let i = t * EACH + k;
                    let to = format!("u{i}@example.com");
                    let body = format!("Subject: m{i}\r\n\r\nmessage {i}\r\n");
                    let reply = c.mail("sender@example.net", &[&to], body.as_bytes());
                    assert_eq!(reply.code, 250, "message {i} refused: {reply:?}");
                }
            });
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while suite.messages().len() < ALL && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let record = suite.record();
    assert_eq!(record.messages.len(), ALL, "{}", gw.stderr_text());
    let connects = record.commands.iter().filter(|c| *c == "<connect>").count();
    assert_eq!(connects, 1, "one worker, one connection");
    // One connection, one transaction after the other: the n-th RCPT is the n-th message's.
    let rcpts: Vec<&String> = record
        .commands
        .iter()
        .filter(|c| c.starts_with("RCPT TO:"))
        .collect();
    assert_eq!(rcpts.len(), ALL);
    let mut seen = [false; ALL];
    for (rcpt, message) in rcpts.iter().zip(&record.messages) {
        let i: usize = rcpt
            .strip_prefix("RCPT TO:<u")
            .and_then(|r| r.split_once('@'))
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected {rcpt}"));
        let want = format!("message {i}\r\n");
        assert!(
            message.ends_with(want.as_bytes()),
            "{rcpt} got {:?}",
            String::from_utf8_lossy(message)
        );
        assert!(!std::mem::replace(&mut seen[i], true), "{rcpt} twice");
    }
    assert!(
        record.ahead.len() >= ALL / 2,
        "only {} of {ALL} transactions went ahead",
        record.ahead.len()
    );
    wait_queue(&gw, Duration::from_secs(10), "an empty queue", |q| {
        messages(q).is_empty()
    });
}

/// A next hop with one connection busy on a slow transaction, and the `wait` setting.
struct BusyHop {
    suite: Scripted,
    gw: Gateway,
    metrics: std::net::SocketAddr,
    _dns: DnsServer,
    _rt: tokio::runtime::Runtime,
}

impl BusyHop {
    /// Starts the peer (RCPT of `slow@example.com` answered after `slow`) and the gateway
    /// with `wait_for_busy_connection: wait`, and delivers one message so that the
    /// gateway has one open, idle connection and knows the next hop answers quickly.
    fn start(slow: Duration, wait: &str) -> BusyHop {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let suite = rt.block_on(Scripted::start(
            Script::default().slow_rcpt("slow@example.com", slow),
        ));
        let dns = DnsServer::start(dns_zone());
        let tables = suite_only(suite.addr.port());
        let setting = format!("wait_for_busy_connection: {wait}");
        let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], support::free_port()));
        let gw = Gateway::with(
            // Connections stay open for the whole test, to be counted.
            options(&tables, &dns, &[setting.as_str(), "idle_timeout: 60s"])
                .config(&format!("metrics:\n  listen: \"{metrics}\"")),
        );
        let hop = BusyHop {
            suite,
            gw,
            metrics,
            _dns: dns,
            _rt: rt,
        };
        send(
            &hop.gw,
            "sender@example.net",
            &["warm@example.com"],
            b"Subject: warm\r\n\r\nwarm\r\n",
        );
        hop.wait_messages(1);
        // Its result recorded: the connection is idle and its time is known.
        wait_queue(&hop.gw, Duration::from_secs(10), "an empty queue", |q| {
            messages(q).is_empty()
        });
        hop
    }

    /// Sends `slow@example.com` a message, waits until its transaction is at the peer,
    /// then sends `next@example.com` one, and waits for all three messages.
    fn slow_then_next(&self) -> peers::scripted::Record {
        send(
            &self.gw,
            "sender@example.net",
            &["slow@example.com"],
            b"Subject: slow\r\n\r\nslow\r\n",
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self
            .suite
            .commands()
            .iter()
            .any(|c| c == "RCPT TO:<slow@example.com>")
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        send(
            &self.gw,
            "sender@example.net",
            &["next@example.com"],
            b"Subject: next\r\n\r\nnext\r\n",
        );
        self.wait_messages(3);
        self.suite.record()
    }

    /// The open-connections gauge of the next hop and the sent-ahead counter, once they
    /// read `want` (the gauge moves when a transaction ends), or as they are after 20 s.
    fn connections_and_sent_ahead(&self, want: (f64, f64)) -> (f64, f64) {
        let hop = format!(
            "splitmx_delivery_connections{{next_hop=\"smtp:[127.0.0.1]:{}\"}}",
            self.suite.addr.port()
        );
        let reading = |m: &std::collections::HashMap<String, f64>| {
            let at = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
            (at(&hop), at("splitmx_delivery_sent_ahead_total"))
        };
        reading(&support::scrape_until(self.metrics, |m| reading(m) == want))
    }

    fn wait_messages(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.suite.messages().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(self.suite.messages().len(), n, "{}", self.gw.stderr_text());
    }
}

/// The subjects of the messages the peer received, in order.
fn subjects(record: &peers::scripted::Record) -> Vec<String> {
    record
        .messages
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(m);
            let at = text.find("Subject: ").map_or(0, |i| i + 9);
            text[at..].lines().next().unwrap_or("").to_string()
        })
        .collect()
}

/// A next hop that answers quickly: a message that arrives while its one connection is
/// busy waits for that connection and goes out behind the message ahead of it (its
/// MAIL in the same packet as the final dot), instead of opening a second connection.
/// With `wait_for_busy_connection: 0s` it takes a connection of its own at once.
#[test]
fn a_message_for_a_quick_next_hop_waits_for_its_busy_connection_and_goes_behind_the_dot() {
    let hop = BusyHop::start(Duration::from_millis(1500), "5s");
    let record = hop.slow_then_next();
    let connects = record.commands.iter().filter(|c| *c == "<connect>").count();
    assert_eq!(connects, 1, "{:?}", record.commands);
    assert_eq!(subjects(&record), ["warm", "slow", "next"]);
    assert_eq!(record.ahead.len(), 1, "{:?}", record.commands);
    assert!(
        record.ahead[0].starts_with("MAIL FROM:<sender@example.net>"),
        "{:?}",
        record.ahead
    );
    // The message sent ahead follows the slow one's dot directly: MAIL, RCPT, DATA.
    let rcpts: Vec<&String> = record
        .commands
        .iter()
        .filter(|c| c.starts_with("RCPT"))
        .collect();
    assert_eq!(
        rcpts,
        [
            "RCPT TO:<warm@example.com>",
            "RCPT TO:<slow@example.com>",
            "RCPT TO:<next@example.com>"
        ]
    );
    // What an administrator sees: one connection open, one transaction sent ahead.
    assert_eq!(hop.connections_and_sent_ahead((1.0, 1.0)), (1.0, 1.0));

    let hop = BusyHop::start(Duration::from_millis(1500), "0s");
    let record = hop.slow_then_next();
    let connects = record.commands.iter().filter(|c| *c == "<connect>").count();
    assert_eq!(
        connects, 2,
        "turned off, the message takes a connection of its own: {:?}",
        record.commands
    );
    assert_eq!(subjects(&record), ["warm", "next", "slow"]);
    assert!(record.ahead.is_empty(), "{:?}", record.ahead);
    assert_eq!(hop.connections_and_sent_ahead((2.0, 0.0)), (2.0, 0.0));
}

/// A busy connection that stalls holds a waiting message no longer than
/// `wait_for_busy_connection`: then it gets a connection of its own, and is delivered
/// long before the stalled transaction ends.
#[test]
fn a_message_waits_no_longer_than_wait_for_busy_connection_behind_a_stalled_transaction() {
    let hop = BusyHop::start(Duration::from_secs(4), "200ms");
    let started = Instant::now();
    let record = hop.slow_then_next();
    let connects = record.commands.iter().filter(|c| *c == "<connect>").count();
    assert_eq!(connects, 2, "{:?}", record.commands);
    assert_eq!(subjects(&record), ["warm", "next", "slow"]);
    assert!(record.ahead.is_empty(), "{:?}", record.ahead);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "the slow one took its time"
    );
    assert_eq!(hop.connections_and_sent_ahead((2.0, 0.0)), (2.0, 0.0));
}

/// Recipients refused by two different next hops in the same attempt are reported to the
/// sender in one notice, not one per next hop.
#[test]
fn failures_at_two_next_hops_make_one_notice() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let refuse = |who: &str| {
        Script::default().rcpt(
            who,
            &format!("550 5.1.1 <{who}>: Recipient address rejected: User unknown"),
        )
    };
    let suite = rt.block_on(Scripted::start(refuse("gone@example.com")));
    let legacy = rt.block_on(Scripted::start(refuse("old@example.com")));
    let dns = DnsServer::start(dns_zone());
    let tables = [(
        "example.com.yaml",
        format!(
            "routes:\n  suite: smtp:[127.0.0.1]:{}\n  legacy: smtp:[127.0.0.1]:{}\n  local:\n    maildir: \"{{domain}}/{{user}}\"\ndomains: [example.com]\ndefault: suite\nrecipients:\n  sender@example.com: local\n  old@example.com: legacy\n  kept@example.com: legacy\n",
            suite.addr.port(),
            legacy.addr.port()
        ),
    )];
    let gw = Gateway::with(options(&tables, &dns, &[]));
    send(
        &gw,
        "sender@example.com",
        &[
            "good@example.com",
            "gone@example.com",
            "kept@example.com",
            "old@example.com",
        ],
        BODY,
    );
    let got = notices(&gw, "sender", 1);
    wait_queue(&gw, Duration::from_secs(10), "an empty queue", |q| {
        messages(q).is_empty()
    });
    // A second notice would have been delivered before the queue emptied; give it
    // another half second anyway.
    let got_later = maildir_messages(
        &gw.dir.path().join("mail/example.com/sender"),
        2,
        Duration::from_millis(500),
    );
    assert_eq!(
        got_later.len(),
        1,
        "one notice in all: {}",
        gw.stderr_text()
    );
    let parsed = bounce::parse(&got[0]).unwrap_or_else(|e| panic!("not a DSN: {e}"));
    let mut reported: Vec<&str> = (0..parsed.recipients.len())
        .filter_map(|i| parsed.recipient_field(i, "Final-Recipient"))
        .collect();
    reported.sort();
    assert_eq!(
        reported,
        ["rfc822; gone@example.com", "rfc822; old@example.com"]
    );
    assert_eq!(suite.messages().len(), 1, "good@ delivered once");
    assert_eq!(legacy.messages().len(), 1, "kept@ delivered once");
    let log = gw.stderr_text();
    assert_eq!(log.matches("notice queued").count(), 1, "{log}");
}

#[test]
fn lifetime_expiry_bounces_with_a_dsn_and_a_null_sender_is_never_bounced() {
    let dns = DnsServer::start(dns_zone());
    let port = peers::free_port();
    let tables = suite_with_sender_inbox(port);
    let gw = Gateway::with(options(
        &tables,
        &dns,
        &["lifetime: 3s", "delay_warning: 0s"],
    ));
    send(&gw, "sender@example.com", &["bob@example.com"], BODY);
    send(&gw, "", &["nobody@example.com"], BODY);
    let got = notices(&gw, "sender", 1);
    assert_eq!(got.len(), 1, "{}", gw.stderr_text());
    let parsed = bounce::parse(&got[0]).unwrap_or_else(|e| panic!("not a DSN: {e}"));
    assert_eq!(
        parsed.recipient_field(0, "Final-Recipient"),
        Some("rfc822; bob@example.com")
    );
    assert_eq!(parsed.recipient_field(0, "Action"), Some("failed"));
    let text = String::from_utf8_lossy(&got[0]);
    assert!(text.contains("expired"), "{text}");
    // Both messages leave the queue; the null-sender one without a notice to anyone.
    wait_queue(&gw, Duration::from_secs(20), "an empty queue", |q| {
        messages(q).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(notices(&gw, "sender", 2).len(), 1, "exactly one notice");
    assert!(
        gw.log_with("null sender", Duration::from_secs(5)).is_some(),
        "the log says why there is no notice: {}",
        gw.stderr_text()
    );
}

/// A restart carries on with each message's backoff and remembers the delay notice it
/// sent: no retry of everything at once, no second "delayed" notice.
#[test]
fn a_restart_keeps_the_backoff_and_sends_no_second_delay_notice() {
    let dns = DnsServer::start(dns_zone());
    let port = peers::free_port();
    let tables = suite_with_sender_inbox(port);
    // Attempts at 0 s and 4.5-6 s fail (jitter shortens a delay by up to 25 %); the
    // second sends the delay notice. The restart estimates one or two failures, so the
    // third attempt is due 4.5 s or more after the second.
    let mut gw = Gateway::with(options(
        &tables,
        &dns,
        &["retry_min: 6s", "retry_max: 1h", "delay_warning: 3s"],
    ));
    let id = send(&gw, "sender@example.com", &["bob@example.com"], BODY);
    let got = notices(&gw, "sender", 1);
    assert_eq!(got.len(), 1, "{}", gw.stderr_text());
    let notice = bounce::parse(&got[0]).unwrap_or_else(|e| panic!("not a DSN: {e}"));
    assert_eq!(notice.recipient_field(0, "Action"), Some("delayed"));
    // The next hop comes up, then the gateway restarts: the message waits for its retry
    // time instead of going at once.
    let sink = Sink::dumping_on(port, &[]);
    gw.restart();
    assert!(
        gw.log_with("waiting_for_retry=1", Duration::from_secs(10))
            .is_some(),
        "the restarted queue does not say the message waits: {}",
        gw.stderr_text()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.count(), 0, "retried at once after the restart");
    let dumps = sink.wait_for(1, Duration::from_secs(20));
    assert_eq!(dumps[0].rcpt_args, ["<bob@example.com>"]);
    wait_queue(&gw, Duration::from_secs(10), "an empty queue", |q| {
        messages(q).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let inbox = gw.dir.path().join("mail/example.com/sender");
    let got = maildir_messages(&inbox, 2, Duration::ZERO);
    assert_eq!(got.len(), 1, "a second delay notice for {id}");
}

#[test]
fn an_mx_pointing_back_at_the_gateway_is_deferred_4_4_6_not_delivered_to_itself() {
    let dns = DnsServer::start(dns_zone());
    let tables = [(
        "example.com.yaml",
        "routes:\n  away: smtp:loop.test\ndomains: [example.com]\ndefault: away\n".to_string(),
    )];
    let gw = Gateway::with(options(&tables, &dns, &[]));
    let id = send(&gw, "sender@example.net", &["bob@example.com"], BODY);
    let q = wait_queue(&gw, Duration::from_secs(20), "a 4.4.6 deferral", |q| {
        messages(q).iter().any(|m| {
            m["recipient_status"][0]["detail"]
                .as_str()
                .is_some_and(|d| d.contains("4.4.6") || d.contains("loops back"))
        })
    });
    assert_eq!(
        messages(&q).len(),
        1,
        "the gateway did not send the message to itself"
    );
    assert_eq!(messages(&q)[0]["id"], id);
    assert!(
        gw.log_with("this gateway itself", Duration::from_secs(5))
            .is_some(),
        "the loop is logged: {}",
        gw.stderr_text()
    );
}

#[test]
fn queue_cli_verbs_each_change_what_they_say() {
    let dns = DnsServer::start(dns_zone());
    let port = peers::free_port();
    let tables = [(
        "example.com.yaml",
        format!(
            "routes:\n  suite: smtp:[127.0.0.1]:{port}\ndomains: [example.com]\ndefault: suite\n"
        ),
    )];
    // Retries an hour apart: only `queue retry` makes anything happen soon.
    let gw = Gateway::with(options(&tables, &dns, &["retry_min: 1h", "retry_max: 1h"]));
    let a = send(&gw, "sender@example.net", &["a@example.com"], BODY);
    let b = send(&gw, "sender@example.net", &["b@example.com"], BODY);
    wait_queue(&gw, Duration::from_secs(20), "two deferred messages", |q| {
        messages(q)
            .iter()
            .filter(|m| m["recipient_status"][0]["state"] == "deferred")
            .count()
            == 2
    });
    let state = |id: &str| -> String {
        messages(&queue_json(&gw))
            .iter()
            .find(|m| m["id"] == id)
            .map(|m| m["state"].as_str().unwrap_or("").to_string())
            .unwrap_or_else(|| "gone".to_string())
    };
    let ok = |args: &[&str]| {
        let (status, out, err) = gw.run_cli(args);
        assert!(status.success(), "{args:?}: {out}{err}");
        out
    };
    assert!(ok(&["queue", "hold", &a]).contains("held"));
    assert_eq!(state(&a), "held");
    assert!(ok(&["queue", "release", &a]).contains("released"));
    assert_eq!(state(&a), "queued");
    let (status, _, err) = gw.run_cli(&["queue", "release", &a]);
    assert!(!status.success() && err.contains("not held"), "{err}");
    assert!(ok(&["queue", "delete", &a]).contains("deleted"));
    assert_eq!(state(&a), "gone");
    let (status, _, err) = gw.run_cli(&["queue", "hold", &a]);
    assert!(!status.success() && err.contains("no message"), "{err}");
    // The next hop is up now, but b's retry is an hour away: `queue retry` sends it.
    let sink = Sink::dumping_on(port, &[]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        queue_json(&gw)["messages"]
            .as_array()
            .is_some_and(|m| m.len() == 1)
    );
    assert!(ok(&["queue", "retry", &b]).contains("scheduled"));
    let dumps = sink.wait_for(1, Duration::from_secs(20));
    assert_eq!(dumps.len(), 1);
    assert_eq!(dumps[0].rcpt_args, ["<b@example.com>"]);
    wait_queue(&gw, Duration::from_secs(10), "an empty queue", |q| {
        messages(q).is_empty()
    });
    let out = ok(&["queue", "retry", "--all", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["result"], "0");
}
