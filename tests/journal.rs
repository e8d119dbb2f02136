//! The recipient journal of a running gateway: mail sent over SMTP to a real `splitmx
//! serve`, then `splitmx report --json` run as an administrator would, after a graceful
//! stop (SIGTERM flushes the journal) or while the gateway runs (periodic flush).
#![cfg(feature = "server")]

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::{Gateway, Options};

const SENDER: &str = "sender@sender.example";
const BODY: &[u8] = b"From: <sender@sender.example>\r\nSubject: journal\r\n\r\nHello.\r\n";

fn report(gw: &Gateway, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_splitmx"))
        .arg("report")
        .arg("--config")
        .arg(&gw.config)
        .args(args)
        .current_dir(gw.dir.path())
        .env("SPLITMX_LOG", "off")
        .output()
        .expect("run splitmx report")
}

fn report_json(gw: &Gateway, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = report(gw, &all);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("report --json is JSON")
}

/// (route, recipients, messages) per route.
fn routes(v: &serde_json::Value) -> Vec<(String, u64, u64)> {
    v["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| {
            (
                r["route"].as_str().unwrap_or("").to_string(),
                r["recipients"].as_u64().unwrap_or(0),
                r["messages"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn report_counts_exactly_the_accepted_messages_after_a_graceful_stop() {
    let mut gw = Gateway::start();
    let mut c = gw.session();
    // One message to three recipients (one of them twice, spelled differently); two
    // recipients refused at RCPT time.
    c.expect(&format!("MAIL FROM:<{SENDER}>"), 250);
    c.expect("RCPT TO:<alice@example.com>", 250);
    c.expect("RCPT TO:<bob@example.com>", 250);
    c.expect("RCPT TO:<Alice@Example.COM>", 250);
    c.expect("RCPT TO:<dave@example.com>", 450);
    c.expect("RCPT TO:<nobody@example.org>", 550);
    c.expect("DATA", 354);
    c.send(&support::data_bytes(BODY)).unwrap();
    assert_eq!(c.reply().unwrap().code, 250);
    // A second message to alice.
    assert_eq!(c.mail(SENDER, &["alice@example.com"], BODY).code, 250);
    // A transaction abandoned before DATA counts for nobody.
    c.expect(&format!("MAIL FROM:<{SENDER}>"), 250);
    c.expect("RCPT TO:<known@example.org>", 250);
    c.expect("RSET", 250);
    // A message refused at the end of DATA (too many Received: fields) neither.
    let looping: Vec<u8> = (0..60)
        .flat_map(|i| format!("Received: from hop{i}.example by hop{i}.example; Tue, 1 Jan 2030 00:00:00 +0000\r\n").into_bytes())
        .chain(BODY.iter().copied())
        .collect();
    c.expect(&format!("MAIL FROM:<{SENDER}>"), 250);
    c.expect("RCPT TO:<known@example.org>", 250);
    c.expect("DATA", 354);
    c.send(&support::data_bytes(&looping)).unwrap();
    assert_eq!(c.reply().unwrap().code, 554);
    // Another client, another route.
    let mut d = gw.session();
    assert_eq!(d.mail(SENDER, &["known@example.org"], BODY).code, 250);
    c.expect("QUIT", 221);
    d.expect("QUIT", 221);

    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "exit {status}: {}", gw.stderr_text());

    let v = report_json(&gw, &["--old", "route_a"]);
    assert_eq!(
        (&v["recipients"], &v["messages"]),
        (&3.into(), &4.into()),
        "{v:#}"
    );
    let mut got = routes(&v);
    got.sort();
    assert_eq!(
        got,
        [
            ("local".to_string(), 1, 1),
            ("route_a".to_string(), 1, 2),
            ("route_b".to_string(), 1, 1),
        ]
    );
    let kinds: Vec<&str> = v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"smtp:[192.0.2.1]:25"), "{kinds:?}");
    assert_eq!(v["old"]["list"][0]["recipient"], "alice@example.com");
    assert_eq!(v["old"]["list"][0]["messages"], 2);
    // The day file is plain text under the spool.
    let today = splitmx::journal::Day::today();
    let file = gw.spool.join("journal").join(format!("{today}.tsv"));
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').take(4).collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["alice@example.com", "route_a", "smtp:[192.0.2.1]:25", "2"],
            ["bob@example.com", "local", "maildir:{domain}/{user}", "1"],
            ["known@example.org", "route_b", "smtp:[192.0.2.2]:25", "1"],
        ]
    );
}

#[test]
fn the_running_gateway_flushes_every_interval_and_a_restart_keeps_counting() {
    let mut gw = Gateway::with(Options::default().config("journal:\n  flush_interval: 1s"));
    let mut c = gw.session();
    assert_eq!(c.mail(SENDER, &["known@example.org"], BODY).code, 250);
    c.expect("QUIT", 221);
    // No stop: the periodic flush writes the file.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = report_json(&gw, &[]);
        if v["messages"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not flushed within 20 s: {v:#}\n{}",
            gw.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // After a crash the next gateway continues from the file.
    gw.restart();
    let mut c = gw.session();
    assert_eq!(c.mail(SENDER, &["known@example.org"], BODY).code, 250);
    c.expect("QUIT", 221);
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(20)).success());
    let v = report_json(&gw, &[]);
    assert_eq!(routes(&v), [("route_b".to_string(), 1, 2)], "{v:#}");
}

#[test]
fn a_disabled_journal_writes_nothing() {
    let mut gw = Gateway::with(Options::default().config("journal:\n  enabled: false"));
    let mut c = gw.session();
    assert_eq!(c.mail(SENDER, &["alice@example.com"], BODY).code, 250);
    c.expect("QUIT", 221);
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(20)).success());
    assert!(!gw.spool.join("journal").exists());
}
