//! The log writer of `splitmx serve`: events are appended to a buffer in memory and one
//! thread writes them to stderr, as many lines per `write(2)` as have piled up.
//!
//! Why: with a `write(2)` per event from the tokio workers, the three log lines of a
//! message cost about a quarter of the gateway's CPU at 2,000 messages/s
//! (`benches/e2e-vs-postfix.sh` with `SPLITMX_LOG=warn` against `info`), and a slow log
//! disk stalled SMTP sessions. Waking the writer for every line was no better: a futex
//! wake and a context switch per line (`perf trace -s`: 15,000 futex calls in 3 s on the
//! log thread). So a line only wakes the writer when it was idle or when [`FLUSH_AT`]
//! bytes wait; once awake, the writer lingers [`LINGER`] to let more lines join, then
//! writes them with one call. Under load that is one wake and one write per [`LINGER`].
//!
//! Nothing is dropped: when [`MAX_BUFFERED`] bytes wait, the thread logging waits for the
//! writer, as it would on a blocking stderr. What is buffered is written when [`LogFlush`]
//! is dropped at exit; a `kill -9` can lose the last [`LINGER`] of log lines, never mail.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Bytes of log lines that may wait for the writer thread before logging blocks.
pub(crate) const MAX_BUFFERED: usize = 1 << 20;

/// Bytes of log lines after which the writer is woken without waiting for [`LINGER`].
pub(crate) const FLUSH_AT: usize = 64 << 10;

/// How long the writer, once woken, waits for more lines before it writes.
pub(crate) const LINGER: Duration = Duration::from_millis(10);

#[derive(Debug, Default)]
struct State {
    buf: Vec<u8>,
    /// The writer thread is asleep waiting for lines (so an append must wake it).
    idle: bool,
    /// The writer was woken early because [`FLUSH_AT`] bytes wait.
    hurried: bool,
    /// [`LogFlush`] was dropped: events go straight to stderr.
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Where the lines go: stderr, or a buffer in tests.
    out: Mutex<Box<dyn Write + Send>>,
    /// Lines arrived, or closing.
    wake: Condvar,
    /// The writer took the buffer: there is room again.
    room: Condvar,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    fn new(out: Box<dyn Write + Send>) -> Shared {
        Shared {
            state: Mutex::default(),
            out: Mutex::new(out),
            wake: Condvar::new(),
            room: Condvar::new(),
        }
    }

    fn output(&self, bytes: &[u8]) -> io::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.write_all(bytes)?;
        out.flush()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only bytes in a Vec: still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, line: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        while !st.closed && !st.buf.is_empty() && st.buf.len() + line.len() > MAX_BUFFERED {
            st = self.room.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        if st.closed {
            drop(st);
            return self.output(line);
        }
        st.buf.extend_from_slice(line);
        if st.idle {
            st.idle = false;
            self.wake.notify_one();
        } else if !st.hurried && st.buf.len() >= FLUSH_AT {
            st.hurried = true;
            self.wake.notify_one();
        }
        Ok(())
    }

    /// The writer thread: waits for a line, lets more join for [`LINGER`], takes
    /// everything buffered, writes it with one call, repeats.
    fn run(&self) {
        let mut spare = Vec::new();
        loop {
            let mut st = self.lock();
            while st.buf.is_empty() && !st.closed {
                st.idle = true;
                st = self.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            if st.buf.is_empty() {
                return;
            }
            let until = Instant::now() + LINGER;
            while !st.closed && st.buf.len() < FLUSH_AT {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                st = self
                    .wake
                    .wait_timeout(st, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            st.hurried = false;
            std::mem::swap(&mut st.buf, &mut spare);
            drop(st);
            self.room.notify_all();
            // stderr failing (closed, disk full) cannot be reported anywhere; the lines
            // are dropped and the gateway goes on, as with eprintln.
            let _ = self.output(&spare);
            spare.clear();
            if spare.capacity() > 4 * MAX_BUFFERED {
                spare = Vec::new();
            }
        }
    }
}

/// The [`MakeWriter`] handed to `tracing_subscriber::fmt`: each event's formatted line is
/// appended to the shared buffer.
#[derive(Debug, Clone)]
pub(crate) struct BufferedStderr {
    shared: Arc<Shared>,
}

/// One event's writer (the fmt layer writes each formatted event with one `write_all`).
#[derive(Debug)]
pub(crate) struct EventWriter<'a> {
    shared: &'a Shared,
}

impl Write for EventWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.append(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.shared.append(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedStderr {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            shared: &self.shared,
        }
    }
}

/// Writes what is still buffered and stops the writer thread when dropped; later events
/// go to stderr directly.
#[derive(Debug)]
pub(crate) struct LogFlush {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogFlush {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        self.shared.room.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Start the writer thread. Without a thread (the system refuses one), lines are written
/// directly, as before.
pub(crate) fn start() -> (BufferedStderr, LogFlush) {
    start_with(Box::new(io::stderr()))
}

fn start_with(out: Box<dyn Write + Send>) -> (BufferedStderr, LogFlush) {
    let shared = Arc::new(Shared::new(out));
    let worker = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("splitmx-log".into())
        .spawn(move || worker.run())
        .ok();
    if thread.is_none() {
        shared.lock().closed = true;
    }
    (
        BufferedStderr {
            shared: Arc::clone(&shared),
        },
        LogFlush { shared, thread },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_in_order_by_the_time_the_flush_returns() {
        let out = Captured::default();
        let (w, flush) = start_with(Box::new(out.clone()));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        let line = format!("t{t} line {i}\n");
                        w.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(flush);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 20_000);
        for t in 0..4 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            let want: Vec<String> = (0..5_000).map(|i| format!("t{t} line {i}")).collect();
            assert_eq!(mine, want);
        }
        // After the flush, lines go straight through.
        w.make_writer().write_all(b"late\n").unwrap();
        assert!(out.0.lock().unwrap().ends_with(b"late\n"));
    }

    #[test]
    fn lines_reach_the_output_after_the_linger_without_a_flush() {
        let out = Captured::default();
        let (w, flush) = start_with(Box::new(out.clone()));
        for round in 0..3 {
            let line = format!("round {round}\n");
            w.make_writer().write_all(line.as_bytes()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while !String::from_utf8_lossy(&out.0.lock().unwrap()).contains(&line) {
                assert!(Instant::now() < deadline, "{line:?} never written");
                std::thread::sleep(LINGER / 2);
            }
        }
        drop(flush);
    }

    #[test]
    fn a_line_larger_than_the_buffer_is_taken_whole() {
        let out = Captured::default();
        let (w, flush) = start_with(Box::new(out.clone()));
        let big = vec![b'x'; MAX_BUFFERED + 10];
        w.make_writer().write_all(&big).unwrap();
        w.make_writer().write_all(b"\n").unwrap();
        drop(flush);
        assert_eq!(out.0.lock().unwrap().len(), MAX_BUFFERED + 11);
    }
}
