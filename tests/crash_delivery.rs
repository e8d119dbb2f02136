//! kill -9 while a backlog drains: the gateway is SIGKILLed at random moments (after a
//! random number of deliveries, or a random time), at least 50 times, while it delivers a queue of messages to smtp-sink, and restarted each time.
//! At the end every message must have arrived; duplicates (a recipient accepted by the
//! next hop just before a kill, before the result reached the spool) are counted and
//! printed, not hidden.

#![cfg(feature = "server")]

mod peers;
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use peers::sink::Sink;
use support::{Gateway, Options, Rng};

const MESSAGES: usize = 1500;
const KILLS: usize = 50;

#[test]
fn kill_9_during_delivery_loses_nothing() {
    let sink_port = peers::free_port();
    let o = Options {
        tables: vec![(
            "example.com.yaml".to_string(),
            format!(
                "routes:\n  suite: smtp:[127.0.0.1]:{sink_port}\ndomains: [example.com]\ndefault: suite\n"
            ),
        )],
        ..Options::default()
    };
    // Fill the queue with delivery off, so the whole backlog is there at the first kill.
    let mut gw = Gateway::with(o);
    {
        let mut c = gw.session();
        for i in 0..MESSAGES {
            let body = format!(
                "Subject: backlog {i}\r\nMessage-ID: <backlog-{i}@test>\r\n\r\nmessage {i}\r\n"
            );
            let reply = c.mail(
                "sender@example.net",
                &[&format!("u{i}@example.com")],
                body.as_bytes(),
            );
            assert_eq!(reply.code, 250, "message {i}: {reply:?}");
        }
    }
    let sink = Sink::dumping_on(sink_port, &[]);
    gw.reconfigure_delivery(&["max_per_next_hop: 4", "retry_min: 1s", "retry_max: 1s"]);
    let mut rng = Rng::from_time();
    let mut delivered_at_kill = Vec::new();
    for _ in 0..KILLS {
        let before = sink.count();
        gw.restart();
        // A kill lands after a random number of deliveries (1..24) or a random time,
        // whichever comes first: on a fast machine a fixed delay would let the whole
        // backlog drain in the first few rounds, and the kills would hit an idle queue.
        // One round in five kills early, while the queue is still being loaded.
        let (target, cap) = if rng.range(0, 5) == 0 {
            (usize::MAX, rng.range(0, 40))
        } else {
            (before + rng.range(1, 25) as usize, rng.range(20, 500))
        };
        let started = Instant::now();
        while sink.count() < target && started.elapsed() < Duration::from_millis(cap) {
            std::thread::sleep(Duration::from_millis(1));
        }
        gw.kill();
        delivered_at_kill.push(sink.count());
    }
    gw.restart();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut dumps = sink.wait_for(MESSAGES, Duration::from_secs(120));
    let mut seen: HashMap<String, usize> = HashMap::new();
    loop {
        seen.clear();
        for d in &dumps {
            let text = String::from_utf8_lossy(&d.data);
            let id = text
                .lines()
                .find_map(|l| l.strip_prefix("Message-ID: "))
                .unwrap_or("?")
                .to_string();
            *seen.entry(id).or_default() += 1;
        }
        if seen.len() >= MESSAGES || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        dumps = sink.wait_for(dumps.len(), Duration::from_secs(1));
    }
    let missing: Vec<usize> = (0..MESSAGES)
        .filter(|i| !seen.contains_key(&format!("<backlog-{i}@test>")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} messages lost after {KILLS} kills, e.g. {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        gw.stderr_text()
    );
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let draining = delivered_at_kill.iter().filter(|&&n| n < MESSAGES).count();
    println!(
        "kill -9 during delivery: {KILLS} kills ({draining} while the backlog was draining), {MESSAGES} messages, all delivered, {duplicates} duplicate deliveries; sink count at each kill: {delivered_at_kill:?}"
    );
    assert!(
        draining >= KILLS / 2,
        "most kills must hit a draining backlog: {delivered_at_kill:?}"
    );
    // The spool agrees: nothing left to deliver.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, out, _) = gw.run_cli(&["queue", "list", "--json"]);
        assert!(status.success());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        if v["messages"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(Instant::now() < deadline, "queue not empty: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
