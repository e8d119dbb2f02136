//! The Prometheus endpoint of a running gateway: scraped before and after real mail, a
//! reload and a broken table; the counters must move by exactly what was done. The next
//! hops are Postfix's smtp-sink; one next hop is down, to see the queue gauges.

#![cfg(feature = "server")]

mod peers;
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;

use peers::sink::Sink;
use support::{Gateway, Options, free_port, get, scrape, scrape_until};

const BODY: &[u8] = b"Subject: metrics\r\n\r\nhello\r\n";

/// A gateway with delivery on and the endpoint on a free port; routes `route_a` and
/// `route_b` to the two sinks, `route_down` to a port nobody listens on.
fn gateway(a: &Sink, b: &Sink, down_port: u16) -> (Gateway, SocketAddr) {
    gateway_with(a, b, down_port, &[])
}

/// [`gateway`] with more configuration lines.
fn gateway_with(a: &Sink, b: &Sink, down_port: u16, extra: &[&str]) -> (Gateway, SocketAddr) {
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let table = format!(
        "routes:\n  route_a: smtp:[127.0.0.1]:{}\n  route_b: smtp:[127.0.0.1]:{}\n  route_down: smtp:[127.0.0.1]:{down_port}\ndomains: [example.com]\nrecipients:\n  a1@example.com: route_a\n  a2@example.com: route_a\n  b1@example.com: route_b\n  stuck@example.com: route_down\n",
        a.addr.port(),
        b.addr.port()
    );
    let options = Options {
        tables: vec![("example.com.yaml".to_string(), table)],
        ..Options::default()
    }
    .delivery(&["retry_min: 1m", "connect_timeout: 2s", "idle_timeout: 1s"])
    .config(&format!("metrics:\n  listen: \"{metrics}\""));
    let options = extra.iter().fold(options, |o, line| o.config(line));
    (Gateway::with(options), metrics)
}

fn at(m: &HashMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

#[test]
fn counters_move_by_exactly_what_was_sent() {
    let a = Sink::dumping(&[]);
    let b = Sink::dumping(&[]);
    let down = free_port();
    let (gw, metrics) = gateway(&a, &b, down);
    let before = scrape(metrics);

    // Three sessions, three messages: 4 recipients to the sinks, 1 to the dead next
    // hop, 2 unknown users (rejected at RCPT).
    let mut c = gw.session();
    c.expect("MAIL FROM:<s@example.net>", 250);
    c.expect("RCPT TO:<a1@example.com>", 250);
    c.expect("RCPT TO:<nobody@example.com>", 550);
    c.expect("RCPT TO:<b1@example.com>", 250);
    c.expect("DATA", 354);
    c.send(&support::data_bytes(BODY)).unwrap();
    assert_eq!(c.reply().unwrap().code, 250);
    c.expect("QUIT", 221);
    let mut c = gw.session();
    assert_eq!(
        c.mail("s@example.net", &["a2@example.com", "b1@example.com"], BODY)
            .code,
        250
    );
    c.expect("QUIT", 221);
    let mut c = gw.session();
    c.expect("MAIL FROM:<s@example.net>", 250);
    c.expect("RCPT TO:<nobody2@example.com>", 550);
    c.expect("RCPT TO:<stuck@example.com>", 250);
    c.expect("DATA", 354);
    c.send(&support::data_bytes(BODY)).unwrap();
    assert_eq!(c.reply().unwrap().code, 250);
    c.expect("QUIT", 221);

    let delivered = |m: &HashMap<String, f64>, route: &str| {
        at(
            m,
            &format!("splitmx_deliveries_total{{route=\"{route}\",outcome=\"delivered\"}}"),
        )
    };
    let after = scrape_until(metrics, |m| {
        delivered(m, "route_a") >= 2.0
            && delivered(m, "route_b") >= 2.0
            && at(
                m,
                "splitmx_deliveries_total{route=\"route_down\",outcome=\"deferred\"}",
            ) >= 1.0
            && at(m, "splitmx_smtp_sessions_open") == 0.0
    });
    let moved = |series: &str| at(&after, series) - at(&before, series);
    assert_eq!(moved("splitmx_smtp_sessions_total"), 3.0);
    assert_eq!(at(&after, "splitmx_smtp_sessions_open"), 0.0);
    assert_eq!(
        moved("splitmx_recipients_total{outcome=\"accepted\",reason=\"ok\",route=\"route_a\"}"),
        2.0
    );
    assert_eq!(
        moved("splitmx_recipients_total{outcome=\"accepted\",reason=\"ok\",route=\"route_b\"}"),
        2.0
    );
    assert_eq!(
        moved("splitmx_recipients_total{outcome=\"accepted\",reason=\"ok\",route=\"route_down\"}"),
        1.0
    );
    assert_eq!(
        moved("splitmx_recipients_total{outcome=\"rejected\",reason=\"unknown\",route=\"\"}"),
        2.0
    );
    assert_eq!(moved("splitmx_messages_spooled_total"), 3.0);
    assert!(moved("splitmx_spooled_bytes_total") > 3.0 * BODY.len() as f64);
    // Each message waited for its own fsync (the sessions came one after the other).
    assert_eq!(moved("splitmx_spool_commit_wait_seconds_count"), 3.0);
    assert_eq!(
        moved("splitmx_spool_commit_wait_seconds_bucket{le=\"+Inf\"}"),
        3.0
    );
    assert!(moved("splitmx_spool_commit_wait_seconds_sum") > 0.0);
    assert!(moved("splitmx_spool_syncs_total") >= 3.0, "{after:#?}");
    assert_eq!(moved("splitmx_spool_write_failures_total"), 0.0);
    assert!(
        after.contains_key("splitmx_spool_write_failures_total"),
        "{after:#?}"
    );
    assert_eq!(
        delivered(&after, "route_a") - delivered(&before, "route_a"),
        2.0
    );
    assert_eq!(
        delivered(&after, "route_b") - delivered(&before, "route_b"),
        2.0
    );
    assert_eq!(
        moved("splitmx_deliveries_total{route=\"route_down\",outcome=\"deferred\"}"),
        1.0
    );
    assert_eq!(
        (a.count(), b.count()),
        (2, 2),
        "one transaction per message and next hop"
    );

    // The message for the dead next hop waits in the queue, and the gauges say so.
    let hop = format!("splitmx_queue_messages{{next_hop=\"smtp:[127.0.0.1]:{down}\"}}");
    assert_eq!(at(&after, &hop), 1.0, "{after:#?}");
    let age =
        format!("splitmx_queue_oldest_message_age_seconds{{next_hop=\"smtp:[127.0.0.1]:{down}\"}}");
    assert!(after.contains_key(&age), "{after:#?}");
    let sink_hop = format!(
        "splitmx_queue_messages{{next_hop=\"smtp:[127.0.0.1]:{}\"}}",
        a.addr.port()
    );
    assert!(
        !after.contains_key(&sink_hop),
        "delivered messages are not queued: {after:#?}"
    );

    // The connection to the sink was counted while open, and not after `idle_timeout`
    // closed it; the dead next hop never had one.
    let conns =
        |port: u16| format!("splitmx_delivery_connections{{next_hop=\"smtp:[127.0.0.1]:{port}\"}}");
    let (to_a, to_down) = (conns(a.addr.port()), conns(down));
    let idle = scrape_until(metrics, |m| m.get(&to_a) == Some(&0.0));
    assert_eq!(idle.get(&to_a), Some(&0.0), "{idle:#?}");
    assert!(!idle.contains_key(&to_down), "{idle:#?}");
    let ahead = "splitmx_delivery_sent_ahead_total";
    assert_eq!(at(&idle, ahead), at(&before, ahead));
}

#[test]
fn journal_flushes_and_its_recipients_are_reported() {
    let a = Sink::discarding(&[]);
    let b = Sink::discarding(&[]);
    let (gw, addr) = gateway_with(&a, &b, free_port(), &["journal:\n  flush_interval: 1s"]);
    let before = scrape(addr);
    assert_eq!(at(&before, "splitmx_journal_recipients"), 0.0);
    let mut c = gw.session();
    let reply = c.mail("s@example.net", &["a1@example.com", "b1@example.com"], BODY);
    assert_eq!(reply.code, 250, "{reply:?}");
    let reply = c.mail("s@example.net", &["a1@example.com"], BODY);
    assert_eq!(reply.code, 250, "{reply:?}");
    let after = scrape_until(addr, |m| at(m, "splitmx_journal_recipients") >= 2.0);
    assert_eq!(
        at(&after, "splitmx_journal_recipients"),
        2.0,
        "two distinct recipients today: {after:#?}"
    );
    assert!(at(&after, "splitmx_journal_flushes_total{outcome=\"ok\"}") >= 1.0);
    assert_eq!(
        at(&after, "splitmx_journal_flushes_total{outcome=\"error\"}"),
        0.0
    );
}

#[test]
fn reloads_and_the_table_version_are_reported() {
    let a = Sink::dumping(&[]);
    let b = Sink::dumping(&[]);
    let (gw, metrics) = gateway(&a, &b, free_port());
    let before = scrape(metrics);
    let version = |m: &HashMap<String, f64>| -> String {
        m.keys()
            .find_map(|k| k.strip_prefix("splitmx_routing_table_info{version=\""))
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_string()
    };
    let v1 = version(&before);
    assert_eq!(v1.len(), 16, "{before:#?}");
    let applied = "splitmx_reloads_total{outcome=\"applied\"}";
    let refused = "splitmx_reloads_total{outcome=\"refused\"}";

    gw.write_table(
        "extra.example.yaml",
        "domains: [extra.example]\ndefault: \"smtp:[127.0.0.1]:1\"\n",
    );
    gw.signal("HUP");
    let m = scrape_until(metrics, |m| at(m, applied) > at(&before, applied));
    assert_eq!(at(&m, applied) - at(&before, applied), 1.0);
    let v2 = version(&m);
    assert_ne!(v2, v1);

    gw.write_table("broken.yaml", "routes: [unclosed\n");
    gw.signal("HUP");
    let m2 = scrape_until(metrics, |m| at(m, refused) > at(&before, refused));
    assert_eq!(at(&m2, refused) - at(&before, refused), 1.0);
    assert_eq!(at(&m2, applied), at(&m, applied));
    assert_eq!(version(&m2), v2, "a refused reload keeps the table in use");
}

#[test]
fn the_endpoint_answers_only_what_it_serves() {
    let a = Sink::dumping(&[]);
    let b = Sink::dumping(&[]);
    let (_gw, metrics) = gateway(&a, &b, free_port());
    assert_eq!(
        get(metrics, b"GET / HTTP/1.1\r\n\r\n").0,
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        get(
            metrics,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        )
        .0,
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(
        get(metrics, b"EHLO me\r\n\r\n").0,
        "HTTP/1.1 400 Bad Request"
    );
    assert_eq!(
        get(metrics, b"\x16\x03\x01\x00\r\n\r\n").0,
        "HTTP/1.1 400 Bad Request"
    );
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 20_000));
    assert_eq!(
        get(metrics, &huge).0,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let (status, body) = get(metrics, b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
    // Still serving after all that.
    assert!(scrape(metrics).contains_key("splitmx_smtp_sessions_total"));
}

#[test]
fn a_port_already_taken_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("routing")).unwrap();
    std::fs::write(
        dir.path().join("routing/example.com.yaml"),
        "domains: [example.com]\n",
    )
    .unwrap();
    let config = dir.path().join("splitmx.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: [\"127.0.0.1:{}\"]\nmetrics:\n  listen: \"127.0.0.1:{port}\"\n",
            free_port()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_splitmx"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("metrics endpoint 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        !dir.path().join("spool").exists(),
        "nothing is opened before the endpoint is bound"
    );
}
