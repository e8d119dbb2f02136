//! The reclaimer: a thread that deletes spent segments, so that the writer's group
//! commits never wait for an unlink and a directory fsync (together 50–100 ms for a
//! 64 MiB segment on a busy disk, during which every SMTP session waits for its 250).
//!
//! The writer picks the victims (segments with nothing left to keep), marks them as being
//! reclaimed in the index so they are not picked twice, syncs the records that made them
//! spent and hands them over. The reclaimer unlinks them, fsyncs the directory and only
//! then forgets them in the index: forgetting releases the pins their messages held on
//! later segments, and those segments must not go before these are durably gone. Then it
//! wakes the writer, which may now find those later segments spent.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use tokio::sync::mpsc as tokio_mpsc;

use super::error::SpoolError;
use super::index::Index;
use super::segment;
use super::writer::{Request, lock};

/// Segments to delete: number and path.
pub(crate) type Victims = Vec<(u32, PathBuf)>;

/// Handle to the reclaimer thread; dropping it lets the thread finish what it was given
/// and waits for it.
#[derive(Debug)]
pub(crate) struct Reclaimer {
    work: Option<mpsc::Sender<Victims>>,
    thread: Option<JoinHandle<()>>,
}

impl Reclaimer {
    /// Starts the thread for the segments in `segments`. `wake` reaches the writer once
    /// segments are gone; it is weak so that the reclaimer does not keep the writer alive.
    pub(crate) fn start(
        segments: PathBuf,
        index: Arc<Mutex<Index>>,
        wake: tokio_mpsc::WeakSender<Request>,
    ) -> Result<Self, SpoolError> {
        let (tx, rx) = mpsc::channel::<Victims>();
        let dir = segments.clone();
        let thread = std::thread::Builder::new()
            .name("splitmx-spool-reclaim".into())
            .spawn(move || {
                while let Ok(victims) = rx.recv() {
                    let reclaimed = delete(&dir, &index, victims);
                    if reclaimed && let Some(writer) = wake.upgrade() {
                        // A full queue means the writer runs again soon anyway.
                        let _ = writer.try_send(Request::Reclaimed);
                    }
                }
            })
            .map_err(|e| SpoolError::io("start the reclaimer thread for", &segments, e))?;
        Ok(Reclaimer {
            work: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hands `victims` (already marked in the index) over; gives them back if the thread
    /// is gone.
    pub(crate) fn reclaim(&self, victims: Victims) -> Result<(), Victims> {
        match &self.work {
            Some(w) => w.send(victims).map_err(|e| e.0),
            None => Err(victims),
        }
    }

    /// Waits until everything handed over is done.
    pub(crate) fn finish(&mut self) {
        self.work = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Deletes `victims`, makes the deletions durable and forgets them in the index; `true`
/// if it did. On failure the victims are given back to the index, to be tried again.
pub(crate) fn delete(dir: &Path, index: &Mutex<Index>, victims: Victims) -> bool {
    for (_, path) in &victims {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(segment = %path.display(), error = %e, "cannot delete spool segment");
                lock(index).unclaim(&victims);
                return false;
            }
        }
    }
    // The deletions must be durable before the records they make unnecessary (pins) may
    // go too.
    if let Err(e) = segment::sync_dir(dir) {
        tracing::warn!(error = %e, "cannot fsync the segments directory after deleting");
        lock(index).unclaim(&victims);
        return false;
    }
    let mut index = lock(index);
    for (number, path) in victims {
        index.remove_segment(number);
        tracing::info!(segment = %path.display(), "reclaimed spool segment");
    }
    true
}
