//! Measures what the gateway's per-message log lines cost to format: the three `info`
//! events of an accepted and delivered message (`recipient`, `message queued`,
//! `delivery`, with the fields `splitmx serve` gives them) through the same
//! `tracing_subscriber::fmt` setup as `serve` (text without colour, or JSON), into a
//! writer that discards the bytes. Writing them out is the log writer thread's job and is
//! not counted here.
//!
//! Run: `cargo run --release --features cli --example log_cost [text|json]`
//!
//! Prints nanoseconds per message (three lines), the median of 7 rounds of 100,000.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

/// A writer that drops everything (the formatting is what is measured).
struct Discard;

impl Write for Discard {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const ROUNDS: usize = 7;
const MESSAGES: u32 = 100_000;

fn main() {
    let json = std::env::args().nth(1).as_deref() == Some("json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(|| Discard);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    let client = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000);
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for i in 0..MESSAGES {
            one_message(client, i);
        }
        rounds.push(started.elapsed().as_nanos() as f64 / f64::from(MESSAGES));
    }
    rounds.sort_by(f64::total_cmp);
    println!(
        "{} format: {:.0} ns per message for its three log lines (median of {ROUNDS} rounds; {:.0}-{:.0})",
        if json { "json" } else { "text" },
        rounds[ROUNDS / 2],
        rounds[0],
        rounds[ROUNDS - 1],
    );
}

/// The three events of one message, shaped as in `smtp::session` and `delivery::queue`.
fn one_message(client: SocketAddr, i: u32) {
    let queue_id = "4Xk3f9Qm2Jr7";
    let rcpt = format!("{}user@example.com", i % 10_000 + 1);
    tracing::info!(
        queue_id = %queue_id, client = %client, sender = "sender@example.net", rcpt = %rcpt,
        route = "local", deliver_to = %rcpt, provenance = %"recipients:3:3",
        version = %"3f9a2c1b", reply = "250 2.1.5", "recipient"
    );
    tracing::info!(client = %client, queue_id = %queue_id, size = 4_300u64, recipients = 1usize, "message queued");
    tracing::info!(
        queue_id = %queue_id,
        recipient = rcpt.as_str(),
        route = "local",
        next_hop = %"smtp:[127.0.0.1]:40001",
        relay = "127.0.0.1:40001",
        delay_ms = 3u64,
        result = "delivered",
        status = %"2.0.0",
        detail = %"250 2.0.0 Ok: queued as 4Xk3f9Qm2Jr7",
        version = %"3f9a2c1b",
        "delivery"
    );
}
