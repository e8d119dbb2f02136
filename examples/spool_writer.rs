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
//! spool_writer open DIR
//!     Opens (recovers) the spool and prints how long that took and what it found.
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
        "bench" => runtime.block_on(bench(
            dir,
            number(2, 1) as usize,
            number(3, 5),
            number(4, 4096) as usize,
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
    spool.close().await
}

#[cfg(feature = "server")]
async fn bench(
    dir: std::path::PathBuf,
    concurrency: usize,
    seconds: u64,
    size: usize,
) -> Result<(), splitmx::spool::SpoolError> {
    use splitmx::spool::{QueueId, Spool, SpoolOptions};
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
                while !stop.load(Ordering::Relaxed) {
                    let id = QueueId::new();
                    spool.commit(payload::message_for(id, size)).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), splitmx::spool::SpoolError>(())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            return Err(e);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let stats = spool.stats();
    println!(
        "{concurrency} committer(s), {size}-byte bodies: {n} commits in {elapsed:.1} s = {:.0} commits/s, \
         {:.1} messages per fsync",
        n as f64 / elapsed,
        stats.commits as f64 / stats.syncs.max(1) as f64
    );
    spool.close().await
}
