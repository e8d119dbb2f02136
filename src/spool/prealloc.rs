//! The preallocator: a thread that creates the next segment before the writer needs it,
//! so a segment roll costs the writer a channel receive, not 64 MiB of zeros.
//!
//! It keeps one segment ready. When creating it fails (disk full), it logs and tries again
//! when the writer asks; the writer then gets the error, and the commits waiting on that
//! roll fail, instead of the spool stopping.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::error::SpoolError;
use super::segment::{self, Writable};

/// Handle to the preallocator thread; dropping it stops the thread (after the segment it
/// is creating, if any, is done).
#[derive(Debug)]
pub(crate) struct Preallocator {
    want: Option<mpsc::Sender<()>>,
    ready: mpsc::Receiver<Result<Writable, SpoolError>>,
    thread: Option<JoinHandle<()>>,
    segments: PathBuf,
}

impl Preallocator {
    /// Starts creating segments of `bytes` bytes in `segments`, numbered from `first`.
    pub(crate) fn start(segments: PathBuf, first: u32, bytes: u64) -> Result<Self, SpoolError> {
        let (want_tx, want_rx) = mpsc::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let dir = segments.clone();
        let thread = std::thread::Builder::new()
            .name("splitmx-spool-prealloc".into())
            .spawn(move || {
                let mut number = first;
                let mut ahead: Option<Writable> = None;
                loop {
                    if ahead.is_none() {
                        match segment::create(&dir, number, bytes) {
                            Ok(w) => {
                                ahead = Some(w);
                                number = number.saturating_add(1);
                            }
                            Err(e) => tracing::warn!(
                                error = %e,
                                "cannot create the next spool segment ahead of time; will retry when needed"
                            ),
                        }
                    }
                    if want_rx.recv().is_err() {
                        break;
                    }
                    let reply = match ahead.take() {
                        Some(w) => Ok(w),
                        None => segment::create(&dir, number, bytes).inspect(|_| {
                            number = number.saturating_add(1);
                        }),
                    };
                    if ready_tx.send(reply).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| SpoolError::io("start preallocator thread for", &segments, e))?;
        Ok(Preallocator {
            want: Some(want_tx),
            ready: ready_rx,
            thread: Some(thread),
            segments,
        })
    }

    /// The next segment, waiting for it to be created if need be.
    pub(crate) fn next(&mut self) -> Result<Writable, SpoolError> {
        let stopped = || {
            SpoolError::io(
                "create segment in",
                &self.segments,
                std::io::Error::other("preallocator thread stopped"),
            )
        };
        let Some(want) = &self.want else {
            return Err(stopped());
        };
        want.send(()).map_err(|_| stopped())?;
        self.ready.recv().map_err(|_| stopped())?
    }
}

impl Drop for Preallocator {
    fn drop(&mut self) {
        self.want = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
