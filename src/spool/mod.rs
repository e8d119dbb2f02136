//! The durable spool: accepted messages, fsynced before the client hears `250`.
//!
//! Inputs: messages from the SMTP session ([`Spool::commit`]) and state changes from
//! delivery and the queue CLI ([`Spool::mark`], [`Spool::mark_recipients`]). Outputs: the
//! live messages ([`Spool::list`], [`scan`]) and each message's envelope and bytes
//! ([`Spool::read`], [`read_message`]).
//!
//! # On disk
//!
//! ```text
//! <spool>/lock                     held (flock) by the one process writing
//! <spool>/segments/00000001.seg    append-only segments, preallocated (64 MiB) and
//! <spool>/segments/00000002.seg    zero-filled; the next one is created ahead of time
//! ```
//!
//! A segment is a 32-byte header, then records: a message (envelope as text lines, an
//! empty line, the body as committed) or a state change (the message's full state as text
//! lines). Each record carries its length, a CRC-32C, and the checksum of the record
//! before it (the formats are documented in `segment.rs`, `record.rs` and `envelope.rs`).
//! `strings` or `less` on a segment shows senders, recipients and states; `splitmx queue`
//! reads the same files through [`scan`] and [`read_message`].
//!
//! # Durability
//!
//! One writer thread owns the active segment and does group commit: every request that
//! arrived while the previous fsync ran is written with one write and covered by one
//! `fdatasync`, and [`Spool::commit`] returns only after that. A segment's size does not
//! change after creation (zeros are written and fsynced when it is made, and the
//! directory fsynced after its rename), so the data fsync is all a commit needs; only a
//! message larger than a segment extends the fresh segment it is put in (`fdatasync`
//! then also writes the new size). A crash
//! mid-write leaves at most a torn tail, which recovery detects by length, checksum and
//! chain and never returns as a message.
//!
//! # Failure modes
//!
//! A failed write or fsync fails the requests of that batch (the session answers 451) and
//! the writer moves to a new segment; when no new segment can be created (disk full),
//! commits fail until one can. A second writer on the same directory gets
//! [`SpoolError::Locked`]. Damaged records are logged and skipped, never a panic.
//!
//! # Reclaiming space
//!
//! A segment is deleted when every message in it is final and it holds no latest state
//! of a message stored elsewhere (see `index.rs`), by a thread of its own so that group
//! commits do not wait for it (see `reclaim.rs`). A message held for a long time keeps
//! its whole segment; compaction (copying it forward) is not done yet.

mod crc;
mod envelope;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod id;
mod index;
mod message;
mod prealloc;
mod reader;
mod reclaim;
mod record;
mod recover;
mod segment;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

pub use error::SpoolError;
pub use id::{ParseQueueIdError, QUEUE_ID_LEN, QueueId};
pub use message::{
    MessageInfo, MessageState, NewMessage, NextHopBacklog, RecipientState, RecipientStatus,
    RecipientUpdate, SpooledRecipient, StoredMessage,
};
pub use reader::{read_message, scan};

use index::Index;
use writer::{Change, Counters, Request, Writer};

/// Tuning of the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolOptions {
    /// Size of a segment file (preallocated). A message larger than this gets a segment
    /// of its own, extended to fit. Default 64 MiB; at least 4 KiB is used.
    pub segment_bytes: u64,
    /// Most requests covered by one fsync. Default 1024.
    pub max_batch: usize,
    /// Most bytes buffered before they are written (still one fsync per batch).
    /// Default 16 MiB.
    pub max_batch_bytes: usize,
    /// Requests that may wait for the writer before `commit` itself waits. Default 4096.
    pub queue_depth: usize,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            segment_bytes: 64 << 20,
            max_batch: 1024,
            max_batch_bytes: 16 << 20,
            queue_depth: 4096,
        }
    }
}

/// Totals since the spool was opened (for metrics and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Messages committed.
    pub commits: u64,
    /// State changes recorded.
    pub marks: u64,
    /// Group commits: fsyncs that acknowledged at least one request.
    pub syncs: u64,
    /// Bytes written in those group commits.
    pub bytes: u64,
    /// Batches refused because a write or fsync failed.
    pub failures: u64,
}

/// The spool of a running gateway: a cheap, cloneable handle to the writer thread and the
/// index of messages.
#[derive(Debug, Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    tx: mpsc::Sender<Request>,
    index: Arc<Mutex<Index>>,
    counters: Arc<Counters>,
}

impl Spool {
    /// Opens (creating it if need be) the spool under `dir`, recovers its messages and
    /// starts the writer thread. Call inside a tokio runtime. Fails with
    /// [`SpoolError::Locked`] if another writer has it open.
    pub async fn open(dir: &Path, options: SpoolOptions) -> Result<Spool, SpoolError> {
        let dir = dir.to_path_buf();
        let mut options = options;
        options.segment_bytes = options.segment_bytes.max(4096);
        let depth = options.queue_depth.max(1);
        let open_dir = dir.clone();
        let writer = tokio::task::spawn_blocking(move || Writer::open(&open_dir, options))
            .await
            .map_err(|_| SpoolError::Closed)??;
        let index = writer.index();
        let counters = writer.counters();
        let (tx, rx) = mpsc::channel(depth);
        let wake = tx.downgrade();
        std::thread::Builder::new()
            .name("splitmx-spool".into())
            .spawn(move || writer.run(rx, wake))
            .map_err(|e| SpoolError::io("start the writer thread for", &dir, e))?;
        Ok(Spool {
            inner: Arc::new(Inner {
                dir,
                tx,
                index,
                counters,
            }),
        })
    }

    /// Durably stores one message under `message.id`; returns after the fsync that covers
    /// it. Fails for an id already in the spool and for a message without recipients.
    pub async fn commit(&self, message: NewMessage) -> Result<QueueId, SpoolError> {
        self.commit_shared(Arc::new(message)).await
    }

    /// [`Spool::commit`] for a message the caller keeps: the writer reads the bytes from
    /// the shared copy, so the queue manager can deliver from memory without a copy or a
    /// read back from disk.
    pub async fn commit_shared(&self, message: Arc<NewMessage>) -> Result<QueueId, SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.request(Request::Commit { message, reply }).await?;
        answer.await.map_err(|_| SpoolError::Closed)?
    }

    /// Durably records a new state for message `id` (hold, release with `Queued`,
    /// delivered, bounced, deleted). A final message cannot change any more.
    pub async fn mark(&self, id: &QueueId, state: MessageState) -> Result<(), SpoolError> {
        self.change(id, Change::Message(state)).await
    }

    /// Records new states for some recipients of message `id`. When every recipient is
    /// then delivered or bounced, the message becomes final: `Bounced` if any recipient
    /// bounced, else `Delivered`.
    ///
    /// It returns once the record is written: a `kill -9` cannot lose it. Its fsync is
    /// the next one of the spool (a message, a state change, a segment reclaimed, the
    /// spool closed): a power cut before that can lose it, and the recipients are then
    /// delivered again, never lost.
    pub async fn mark_recipients(
        &self,
        id: &QueueId,
        updates: Vec<RecipientUpdate>,
    ) -> Result<(), SpoolError> {
        self.change(id, Change::Recipients(updates)).await
    }

    /// Live messages (not final), oldest first.
    pub fn list(&self) -> Vec<MessageInfo> {
        writer::lock(&self.inner.index).live()
    }

    /// The messages still to deliver, per next hop, for monitoring. The index is walked a
    /// few thousand messages at a time, letting go of it in between, so that a backlog of
    /// a million messages does not hold up commits while a scrape copies it (as
    /// [`Spool::list`] would). Not a snapshot: messages that change meanwhile may count
    /// in their old or new state.
    pub fn backlog(&self) -> Vec<NextHopBacklog> {
        const CHUNK: usize = 4096;
        let mut acc = std::collections::BTreeMap::new();
        let mut from = None;
        while let Some(last) = writer::lock(&self.inner.index).backlog_chunk(from, CHUNK, &mut acc)
        {
            from = Some(last);
        }
        acc.into_iter()
            .map(|(next_hop, (messages, oldest))| NextHopBacklog {
                next_hop,
                messages,
                oldest,
            })
            .collect()
    }

    /// The summary of message `id`, final or not (until its space is reclaimed).
    pub fn info(&self, id: &QueueId) -> Option<MessageInfo> {
        writer::lock(&self.inner.index)
            .get(id)
            .map(|e| e.info.clone())
    }

    /// Reads message `id`: envelope, body and current state.
    pub async fn read(&self, id: &QueueId) -> Result<StoredMessage, SpoolError> {
        let not_found = || SpoolError::NotFound {
            id: *id,
            dir: self.inner.dir.clone(),
        };
        let info = self.info(id).ok_or_else(not_found)?;
        let (dir, id) = (self.inner.dir.clone(), *id);
        tokio::task::spawn_blocking(move || {
            let envelope = reader::read_record(&dir, &info.segment, info.offset, &id)?;
            Ok(StoredMessage { info, envelope })
        })
        .await
        .map_err(|_| SpoolError::Closed)?
    }

    /// Totals since the spool was opened.
    pub fn stats(&self) -> SpoolStats {
        let c = &self.inner.counters;
        SpoolStats {
            commits: c.commits.load(Ordering::Relaxed),
            marks: c.marks.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
        }
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Stops the writer after everything sent before is durable and answered. Other
    /// handles then get [`SpoolError::Closed`]. Returns once the lock is released.
    pub async fn close(self) -> Result<(), SpoolError> {
        let (reply, done) = oneshot::channel();
        if self.inner.tx.send(Request::Close { reply }).await.is_err() {
            return Ok(());
        }
        let _ = done.await;
        Ok(())
    }

    async fn change(&self, id: &QueueId, change: Change) -> Result<(), SpoolError> {
        let (reply, answer) = oneshot::channel();
        let id = *id;
        self.request(Request::Mark { id, change, reply }).await?;
        answer.await.map_err(|_| SpoolError::Closed)?
    }

    async fn request(&self, request: Request) -> Result<(), SpoolError> {
        self.inner
            .tx
            .send(request)
            .await
            .map_err(|_| SpoolError::Closed)
    }
}
