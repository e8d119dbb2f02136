//! A spool client for crash tests and throughput figures.
//!
//! ```text
//! spool_writer loop DIR [SEGMENT_BYTES] [CONCURRENCY]
//!     Commits messages (content derived from the id, see tests/support/spool_payload.rs)
//!     from CONCURRENCY tasks (default 4) until killed, printing each id on its own line
//!     on stdout, flushed, as soon as commit returns. The kill -9 test in tests/spool.rs
//!     runs this and checks that every printed id is in the spool, whole.
//! spool_writer bench DIR CONCURRENCY SECONDS [SIZE]
//!     Commits SIZE-byte messages (default 4096) from CONCURRENCY tasks for SECONDS and
//!     prints commits/s and messages per fsync.
//! spool_writer churn DIR CONCURRENCY SECONDS [SIZE]
//!     As bench, but each message is marked delivered right after its commit, as the
//!     gateway does, so spent segments are reclaimed while commits go on; also prints the
//!     commit latency (p50, p99, p99.9, max), where a reclaim that holds up the writer
//!     shows.
//! spool_writer open DIR
//!     Opens (recovers) the spool and prints how long that took and what it found, and
//!     how long a metrics scrape holds the index: `list()` (one lock for a full copy)
//!     against `backlog()` (chunks of 4,096 messages).
//! ```

#[cfg(feature = "server")]
#[path = "../tests/support/spool_payload.rs"]
mod payload;

#[cfg(not(feature = "server"))]
fn main() {
    eprintln!("spool_writer needs the `server` feature");
    std::process::exit(2);
}

#[cfg(feature = "server")]
fn main() {
    use std::path::PathBuf;

    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let number = |i: usize, default: u64| arg(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (Some(mode), Some(dir)) = (arg(0), arg(1)) else {
        eprintln!(
            "usage: spool_writer loop DIR [SEGMENT_BYTES] [CONCURRENCY]\n       spool_writer bench DIR CONCURRENCY SECONDS [SIZE]"
        );
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match mode {
        "loop" => runtime.block_on(run_loop(dir, number(2, 64 << 20), number(3, 4) as usize)),
        "bench" | "churn" => runtime.block_on(bench(
            dir,
            number(2, 1) as usize,
            number(3, 5),
            number(4, 4096) as usize,
            mode == "churn",
        )),
        "open" => runtime.block_on(open(dir)),
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("spool_writer: {e}");
        std::process::exit(1);
    }
}

#[cfg(feature = "server")]
async fn run_loop(
    dir: std::path::PathBuf,
    segment_bytes: u64,
    concurrency: usize,
) -> Result<(), splitmx::spool::SpoolError> {
    use splitmx::spool::{QueueId, Spool, SpoolOptions};
    use std::io::Write;

    let options = SpoolOptions {
        segment_bytes,
        ..SpoolOptions::default()
    };
    let spool = Spool::open(&dir, options).await?;
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let spool = spool.clone();
            tokio::spawn(async move {
                loop {
                    let id = QueueId::new();
                    let size = payload::size_for(&id);
                    spool.commit(payload::message_for(id, size)).await?;
                    let mut out = std::io::stdout().lock();
                    // A closed stdout means the test is gone: stop.
                    if writeln!(out, "{id}").and_then(|()| out.flush()).is_err() {
                        return Ok::<(), splitmx::spool::SpoolError>(());
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(feature = "server")]
async fn open(dir: std::path::PathBuf) -> Result<(), splitmx::spool::SpoolError> {
    use splitmx::spool::{Spool, SpoolOptions};

    let started = std::time::Instant::now();
    let spool = Spool::open(&dir, SpoolOptions::default()).await?;
    let elapsed = started.elapsed();
    let listed = spool.list();
    let bytes: u64 = listed.iter().map(|m| m.size).sum();
    println!(
        "recovered {} messages ({:.0} MB of bodies) in {:.2} s",
        listed.len(),
        bytes as f64 / 1e6,
        elapsed.as_secs_f64()
    );
    let t = std::time::Instant::now();
    let n = spool.list().len();
    let list_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = std::time::Instant::now();
    let hops = spool.backlog();
    let backlog_ms = t.elapsed().as_secs_f64() * 1e3;
    let chunks = n.div_ceil(4096).max(1);
    println!(
        "list(): {list_ms:.1} ms under one lock for {n} messages; backlog(): {backlog_ms:.1} ms \
         for {} next hop(s) in {chunks} chunks, about {:.2} ms per lock",
        hops.len(),
        backlog_ms / chunks as f64
    );
    spool.close().await
}

#[cfg(feature = "server")]
async fn bench(
    dir: std::path::PathBuf,
    concurrency: usize,
    seconds: u64,
    size: usize,
    deliver: bool,
) -> Result<(), splitmx::spool::SpoolError> {
    use splitmx::spool::{MessageState, QueueId, Spool, SpoolOptions};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    let spool = Spool::open(&dir, SpoolOptions::default()).await?;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (spool, done, stop) = (spool.clone(), done.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let id = QueueId::new();
                    let t = Instant::now();
                    spool.commit(payload::message_for(id, size)).await?;
                    latencies.push(t.elapsed());
                    done.fetch_add(1, Ordering::Relaxed);
                    if deliver {
                        spool.mark(&id, MessageState::Delivered).await?;
                    }
                }
                Ok::<_, splitmx::spool::SpoolError>(latencies)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Err(e)) => return Err(e),
            Ok(Ok(l)) => latencies.extend(l),
            Err(_) => {}
        }
    }
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let elapsed = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let stats = spool.stats();
    println!(
        "{concurrency} committer(s), {size}-byte bodies: {n} commits in {elapsed:.1} s = {:.0} commits/s, \
         {:.1} messages per fsync",
        n as f64 / elapsed,
        stats.commits as f64 / stats.syncs.max(1) as f64
    );
    println!(
        "commit latency, ms: p50 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.1}",
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    );
    spool.close().await
}
