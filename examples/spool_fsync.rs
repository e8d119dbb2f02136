//! Measures the durability options for the spool on this machine (std only, no splitmx
//! code): what one fsynced 4 KiB message costs when
//!
//! 1. every message is a new file (create + write + fsync, optionally + directory fsync),
//! 2. each thread overwrites 4 KiB in place in its own preallocated file + `fdatasync`,
//! 3. messages are appended to one preallocated, zero-filled file, one `fdatasync` per
//!    batch (group commit), with 1, 8 and 20 concurrent writers,
//! 4. 1, 2 or 4 threads each write and `fdatasync` their own messages in one such file at
//!    once: whether this disk completes syncs in parallel (if it does, a group commit
//!    could start the next batch's sync while the previous one is in flight).
//!
//! Run: `cargo run --release --example spool_fsync [DIR] [SECONDS]`
//! (DIR defaults to a fresh directory under the current one; it must be on the disk the
//! spool will live on, not tmpfs).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// The message size measured.
const MSG: usize = 4096;
/// Size of the preallocated file.
const PREALLOC: u64 = 256 << 20;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("spool-fsync-bench"));
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let dur = Duration::from_secs_f64(secs);
    fs::create_dir_all(&base)?;

    for threads in [1, 8] {
        let rate = file_per_message(&base.join("fpm"), threads, dur, false)?;
        println!("file per message, {threads} thread(s):              {rate:8.0} msg/s");
        let rate = file_per_message(&base.join("fpmd"), threads, dur, true)?;
        println!("file per message + dir fsync, {threads} thread(s):  {rate:8.0} msg/s");
    }
    for threads in [1, 8] {
        let rate = overwrite_in_place(&base.join("inplace"), threads, dur)?;
        println!("overwrite 4 KiB in place + fdatasync, {threads} thread(s): {rate:8.0} msg/s");
    }
    for writers in [1, 8, 20] {
        let (rate, batches) = group_commit(&base.join("prealloc.seg"), writers, dur)?;
        println!(
            "preallocated append, group commit, {writers:2} writer(s): {rate:8.0} msg/s \
             ({:.1} msgs per fdatasync)",
            rate * secs / batches as f64
        );
    }
    for threads in [1, 2, 4] {
        let (rate, p50) = concurrent_syncs(&base.join("concurrent.seg"), threads, dur)?;
        println!(
            "one file, {threads} thread(s) each write + fdatasync: {rate:8.0} syncs/s \
             (p50 {p50:.3} ms)"
        );
    }
    fs::remove_dir_all(&base)?;
    Ok(())
}

/// A preallocated, zero-filled file of [`PREALLOC`] bytes, synced with its directory.
fn preallocated(path: &Path) -> std::io::Result<File> {
    let _ = fs::remove_file(path);
    {
        let mut f = File::create(path)?;
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(PREALLOC >> 20) {
            f.write_all(&zeros)?;
        }
        f.sync_all()?;
        if let Some(parent) = path.parent() {
            File::open(parent)?.sync_all()?;
        }
    }
    OpenOptions::new().write(true).open(path)
}

/// `threads` threads each appending 4 KiB messages to their own stripes of one
/// preallocated file, an `fdatasync` after each; returns (syncs/s, median latency in ms).
fn concurrent_syncs(path: &Path, threads: usize, dur: Duration) -> std::io::Result<(f64, f64)> {
    let file = Arc::new(preallocated(path)?);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads as u64)
        .map(|t| {
            let (file, stop) = (file.clone(), stop.clone());
            thread::spawn(move || -> std::io::Result<Vec<Duration>> {
                let buf = vec![b'x'; MSG];
                let stride = (MSG * threads) as u64;
                let mut offset = t * MSG as u64;
                let mut took = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if offset + MSG as u64 > PREALLOC {
                        offset = t * MSG as u64;
                    }
                    let began = Instant::now();
                    file.write_all_at(&buf, offset)?;
                    file.sync_data()?;
                    took.push(began.elapsed());
                    offset += stride;
                }
                Ok(took)
            })
        })
        .collect();
    thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    let mut took = Vec::new();
    for h in handles {
        took.extend(
            h.join()
                .map_err(|_| std::io::Error::other("thread panicked"))??,
        );
    }
    let elapsed = start.elapsed().as_secs_f64();
    fs::remove_file(path)?;
    took.sort();
    let p50 = took
        .get(took.len() / 2)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3);
    Ok((took.len() as f64 / elapsed, p50))
}

/// Threads each creating files with one 4 KiB write and an fsync; returns messages/s.
fn file_per_message(
    dir: &Path,
    threads: usize,
    dur: Duration,
    dir_sync: bool,
) -> std::io::Result<f64> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (dir, done, stop) = (dir.to_path_buf(), done.clone(), stop.clone());
            thread::spawn(move || -> std::io::Result<()> {
                let buf = vec![b'x'; MSG];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut f = File::create(dir.join(format!("{t}-{n}")))?;
                    f.write_all(&buf)?;
                    f.sync_all()?;
                    if dir_sync {
                        File::open(&dir)?.sync_all()?;
                    }
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join()
            .map_err(|_| std::io::Error::other("thread panicked"))??;
    }
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    fs::remove_dir_all(dir)?;
    Ok(rate)
}

/// Threads each overwriting the first 4 KiB of their own preallocated file, fdatasync
/// after each; returns writes/s.
fn overwrite_in_place(dir: &Path, threads: usize, dur: Duration) -> std::io::Result<f64> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut files = Vec::new();
    for t in 0..threads {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join(format!("{t}")))?;
        f.write_all(&vec![0u8; 1 << 20])?;
        f.sync_all()?;
        files.push(f);
    }
    File::open(dir)?.sync_all()?;
    let start = Instant::now();
    let handles: Vec<_> = files
        .into_iter()
        .map(|f| {
            let (done, stop) = (done.clone(), stop.clone());
            thread::spawn(move || -> std::io::Result<()> {
                let buf = vec![b'x'; MSG];
                while !stop.load(Ordering::Relaxed) {
                    f.write_all_at(&buf, 0)?;
                    f.sync_data()?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join()
            .map_err(|_| std::io::Error::other("thread panicked"))??;
    }
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    fs::remove_dir_all(dir)?;
    Ok(rate)
}

/// One writer thread owning a preallocated file; `writers` threads send 4 KiB records and
/// wait for the answer sent after the fdatasync covering them. Returns (messages/s, batches).
fn group_commit(path: &Path, writers: usize, dur: Duration) -> std::io::Result<(f64, u64)> {
    let file = preallocated(path)?;
    let (tx, rx) = mpsc::channel::<(Vec<u8>, mpsc::SyncSender<()>)>();
    let batches = Arc::new(AtomicU64::new(0));
    let b2 = batches.clone();
    let writer = thread::spawn(move || -> std::io::Result<()> {
        let mut offset = 0u64;
        let mut buf = Vec::with_capacity(1 << 20);
        let mut waiters = Vec::new();
        while let Ok(first) = rx.recv() {
            buf.clear();
            buf.extend_from_slice(&first.0);
            waiters.push(first.1);
            while let Ok(more) = rx.try_recv() {
                buf.extend_from_slice(&more.0);
                waiters.push(more.1);
            }
            if offset + buf.len() as u64 > PREALLOC {
                offset = 0;
            }
            file.write_all_at(&buf, offset)?;
            offset += buf.len() as u64;
            file.sync_data()?;
            b2.fetch_add(1, Ordering::Relaxed);
            for w in waiters.drain(..) {
                let _ = w.send(());
            }
        }
        Ok(())
    });
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let (tx, done, stop) = (tx.clone(), done.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (rtx, rrx) = mpsc::sync_channel(1);
                    if tx.send((vec![b'x'; MSG], rtx)).is_err() || rrx.recv().is_err() {
                        break;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    drop(tx);
    thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    writer
        .join()
        .map_err(|_| std::io::Error::other("writer panicked"))??;
    fs::remove_file(path)?;
    Ok((
        done.load(Ordering::Relaxed) as f64 / elapsed,
        batches.load(Ordering::Relaxed),
    ))
}
