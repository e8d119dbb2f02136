//! The writer: one thread that owns the active segment and does group commit.
//!
//! It takes the first waiting request, then everything else already queued (up to
//! `max_batch`), appends their records to the active segment with one write, calls
//! `fdatasync` once, and only then updates the index and answers each request. A request
//! therefore returns only after the fsync covering its record, and every request that
//! arrived while an fsync was running shares the next one. The exception is a batch of
//! recipient results only (delivered, deferred, bounced): it is answered once written,
//! and the next fsync covers it (see [`Writer::flush`]).
//!
//! When a record does not fit in the active segment, the records before it are written
//! and synced, and the writer moves on to the segment the preallocator has ready. If a
//! write or fsync fails, the requests of that batch get the error and the segment is
//! abandoned (no later record goes after data whose fate is unknown); the next request
//! starts a new segment. After each batch, segments with nothing left to keep are
//! handed to the reclaimer thread (see [`super::reclaim`]), which deletes them off the
//! commit path; on opening and closing the writer deletes them itself.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use hashbrown::HashMap;
use tokio::sync::{mpsc, oneshot};

use super::SpoolOptions;
use super::envelope::{Head, Status, encode_head, encode_state};
use super::error::SpoolError;
use super::id::QueueId;
use super::index::Index;
use super::message::{MessageState, NewMessage, RecipientState, RecipientStatus, RecipientUpdate};
use super::prealloc::Preallocator;
use super::reclaim::{self, Reclaimer};
use super::record::{self, Kind};
use super::recover::{Recovered, recover};
use super::segment::{self, Writable};

/// The lock file in the spool directory, held by the writer.
const LOCK_FILE: &str = "lock";

/// A request to the writer.
#[derive(Debug)]
pub(crate) enum Request {
    /// Store a message.
    Commit {
        message: Arc<NewMessage>,
        reply: oneshot::Sender<Result<QueueId, SpoolError>>,
    },
    /// Change a message's state.
    Mark {
        id: QueueId,
        change: Change,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    },
    /// Finish what came before, then stop.
    Close { reply: oneshot::Sender<()> },
    /// The reclaimer deleted segments: later ones may now be spent too.
    Reclaimed,
}

/// A state change.
#[derive(Debug)]
pub(crate) enum Change {
    /// Set the message's state.
    Message(MessageState),
    /// Set some recipients' states.
    Recipients(Vec<RecipientUpdate>),
}

/// Counters kept by the writer.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) marks: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) failures: AtomicU64,
}

/// What to do to the index once a record is durable.
#[derive(Debug)]
enum Effect {
    Insert { head: Head, offset: u64 },
    Status { id: QueueId, status: Status },
}

/// The answer owed once a record is durable.
#[derive(Debug)]
enum Reply {
    Commit(oneshot::Sender<Result<QueueId, SpoolError>>, QueueId),
    Mark(oneshot::Sender<Result<(), SpoolError>>),
}

impl Reply {
    fn send(self, result: Result<(), SpoolError>) {
        // A requester that gave up (dropped its future) no longer needs the answer.
        match self {
            Reply::Commit(tx, id) => {
                let _ = tx.send(result.map(|()| id));
            }
            Reply::Mark(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// The writer's state.
#[derive(Debug)]
pub(crate) struct Writer {
    dir: PathBuf,
    segments: PathBuf,
    options: SpoolOptions,
    index: Arc<Mutex<Index>>,
    /// The segment being appended to; `None` after a failure, until the next record.
    active: Option<Writable>,
    prealloc: Preallocator,
    /// Deletes spent segments off the commit path; `None` until [`Writer::run`], and
    /// after closing (the writer then deletes them itself).
    reclaimer: Option<Reclaimer>,
    /// Records not yet written; they go at `active.pos`.
    buf: Vec<u8>,
    /// Records written or in `buf` but not yet synced, with what to do after the sync.
    pending: Vec<(Effect, Reply)>,
    /// States changed by `pending` (a second change in the same batch builds on them).
    overlay: HashMap<QueueId, Status>,
    /// Ids of messages in `pending`.
    pending_ids: hashbrown::HashSet<QueueId>,
    /// `pending` holds a record that must be synced before its answer: a message, or a
    /// change of a message's state (hold, release, delete). Recipient results alone are
    /// answered once written; see [`Writer::flush`].
    needs_sync: bool,
    /// Records of the active segment are written but not yet synced.
    unsynced: bool,
    /// Shared with the `Spool` handles.
    counters: Arc<Counters>,
    /// Held for the writer's lifetime: one writer per spool.
    _lock: File,
}

/// Locks the index, whether or not another thread panicked while holding it (every
/// update leaves it consistent).
pub(crate) fn lock(index: &Mutex<Index>) -> MutexGuard<'_, Index> {
    index.lock().unwrap_or_else(|e| e.into_inner())
}

impl Writer {
    /// Opens the spool under `dir` for writing: creates it if need be, takes the lock,
    /// recovers the index and picks the segment to append to.
    pub(crate) fn open(dir: &Path, options: SpoolOptions) -> Result<Writer, SpoolError> {
        let started = Instant::now();
        let segments = segment::segments_dir(dir);
        if !segments.is_dir() {
            fs::create_dir_all(&segments).map_err(|e| SpoolError::io("create", &segments, e))?;
            segment::sync_dir(dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                segment::sync_dir(parent)?;
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| SpoolError::io("open", &lock_path, e))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(SpoolError::Locked { path: lock_path }),
            Err(TryLockError::Error(e)) => return Err(SpoolError::io("lock", &lock_path, e)),
        }
        segment::remove_partial(&segments)?;
        let mut recovered = recover(dir)?;
        drop_unused_tail(&segments, &mut recovered)?;
        let last = recovered.segments.last();
        let next_number = last.map_or(1, |s| s.number.saturating_add(1));
        let resume = match last {
            Some(s) if s.header.is_some() => Some(Writable::resume(
                s.number,
                s.path.clone(),
                s.end,
                s.last_crc,
            )?),
            _ => None,
        };
        let mut prealloc =
            Preallocator::start(segments.clone(), next_number, options.segment_bytes)?;
        let active = match resume {
            Some(w) => w,
            None => prealloc.next()?,
        };
        let mut index = recovered.index;
        index.add_segment(active.number, &active.path);
        let (messages, segment_count) = index.counts();
        tracing::info!(
            dir = %dir.display(),
            messages,
            live = index.live_count(),
            segments = segment_count,
            active = %active.path.display(),
            offset = active.pos,
            ms = started.elapsed().as_millis() as u64,
            "spool opened"
        );
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            segments,
            options,
            index: Arc::new(Mutex::new(index)),
            active: Some(active),
            prealloc,
            reclaimer: None,
            buf: Vec::new(),
            pending: Vec::new(),
            overlay: HashMap::new(),
            pending_ids: hashbrown::HashSet::new(),
            needs_sync: false,
            unsynced: false,
            counters: Arc::default(),
            _lock: lock_file,
        };
        writer.collect_garbage();
        Ok(writer)
    }

    /// The index, shared with the `Spool` handles.
    pub(crate) fn index(&self) -> Arc<Mutex<Index>> {
        Arc::clone(&self.index)
    }

    /// The counters, shared with the `Spool` handles.
    pub(crate) fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Serves requests until `Close` or until every sender is gone. `wake` is how the
    /// reclaimer tells it that segments are gone.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Request>, wake: mpsc::WeakSender<Request>) {
        match Reclaimer::start(self.segments.clone(), Arc::clone(&self.index), wake) {
            Ok(r) => self.reclaimer = Some(r),
            Err(e) => tracing::warn!(error = %e, "spent segments are deleted on the commit path"),
        }
        let mut close = None;
        while close.is_none() {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(request) = next.take() {
                taken += 1;
                match request {
                    Request::Close { reply } => {
                        close = Some(reply);
                        break;
                    }
                    Request::Commit { message, reply } => self.commit(message, reply),
                    Request::Mark { id, change, reply } => self.mark(id, change, reply),
                    Request::Reclaimed => {}
                }
                if taken < self.options.max_batch.max(1) {
                    next = rx.try_recv().ok();
                }
            }
            self.flush();
            self.collect_garbage();
        }
        self.sync_written();
        // What the reclaimer was given is gone before closing returns, and so is what
        // that made spent in turn.
        if let Some(mut r) = self.reclaimer.take() {
            r.finish();
        }
        self.collect_garbage();
        rx.close();
        while let Ok(request) = rx.try_recv() {
            match request {
                Request::Commit { reply, .. } => {
                    let _ = reply.send(Err(SpoolError::Closed));
                }
                Request::Mark { reply, .. } => {
                    let _ = reply.send(Err(SpoolError::Closed));
                }
                Request::Close { reply } => {
                    let _ = reply.send(());
                }
                Request::Reclaimed => {}
            }
        }
        let dir = self.dir.clone();
        // Stops the preallocator and releases the lock before anyone hears "closed".
        drop(self);
        tracing::info!(dir = %dir.display(), "spool closed");
        if let Some(reply) = close {
            let _ = reply.send(());
        }
    }

    fn commit(
        &mut self,
        message: Arc<NewMessage>,
        reply: oneshot::Sender<Result<QueueId, SpoolError>>,
    ) {
        let id = message.id;
        if message.recipients.is_empty() {
            let reason = "no recipients".to_owned();
            let _ = reply.send(Err(SpoolError::Invalid { id, reason }));
            return;
        }
        if self.pending_ids.contains(&id) || lock(&self.index).contains(&id) {
            let _ = reply.send(Err(SpoolError::Duplicate { id }));
            return;
        }
        let head_bytes = encode_head(&message);
        if u32::try_from(head_bytes.len() + message.body.len()).is_err() {
            let reason = format!(
                "{} bytes is more than a record can hold (4 GiB)",
                message.body.len()
            );
            let _ = reply.send(Err(SpoolError::Invalid { id, reason }));
            return;
        }
        let parts: [&[u8]; 2] = [&head_bytes, &message.body];
        let head = Head {
            id,
            received_at: message.received_at,
            client: message.client.clone(),
            sender: message.sender.clone(),
            params: message.params.clone(),
            table_version: message.table_version.clone(),
            body_size: message.body.len() as u64,
            recipients: message.recipients.clone(),
        };
        let reply = Reply::Commit(reply, id);
        match self.append(Kind::Message, &parts) {
            Ok(offset) => {
                self.needs_sync = true;
                self.pending_ids.insert(id);
                let effect = Effect::Insert { head, offset };
                self.pending.push((effect, reply));
            }
            Err(e) => reply.send(Err(e)),
        }
    }

    fn mark(
        &mut self,
        id: QueueId,
        change: Change,
        reply: oneshot::Sender<Result<(), SpoolError>>,
    ) {
        // Operator changes are synced before their answer; recipient results are not.
        let must_sync = matches!(change, Change::Message(_));
        let current = match self.overlay.get(&id) {
            Some(s) => Some(s.clone()),
            None => lock(&self.index).get(&id).map(|e| e.status()),
        };
        let result = match current {
            None => Err(SpoolError::NotFound {
                id,
                dir: self.dir.clone(),
            }),
            Some(s) if s.state.is_final() => Err(SpoolError::AlreadyFinal { id, state: s.state }),
            Some(s) => apply(id, s, change),
        };
        let status = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let mut status = status;
        let now = SystemTime::now();
        status.changed_at = Some(now);
        let payload = encode_state(&id, &status, now);
        self.needs_sync |= must_sync;
        let reply = Reply::Mark(reply);
        match self.append(Kind::State, &[&payload]) {
            Ok(_) => {
                self.overlay.insert(id, status.clone());
                self.pending.push((Effect::Status { id, status }, reply));
            }
            Err(e) => reply.send(Err(e)),
        }
    }

    /// Adds a record to the batch, moving to a new segment first if it does not fit;
    /// returns its offset.
    fn append(&mut self, kind: Kind, parts: &[&[u8]]) -> Result<u64, SpoolError> {
        let payload_len: usize = parts.iter().map(|p| p.len()).sum();
        let len = record::record_len(payload_len);
        if u32::try_from(payload_len).is_err() {
            let exceeded = io::Error::new(io::ErrorKind::InvalidInput, "record larger than 4 GiB");
            return Err(SpoolError::io("append to", &self.segments, exceeded));
        }
        let fits = self.active.as_ref().is_some_and(|a| {
            let end = a.pos + self.buf.len() as u64;
            end + len <= a.capacity || end == segment::HEADER_LEN
        });
        if !fits {
            self.flush();
            self.sync_written();
            if let Some(full) = self.active.take() {
                tracing::debug!(segment = %full.path.display(), "spool segment full");
            }
            let next = self.prealloc.next()?;
            lock(&self.index).add_segment(next.number, &next.path);
            tracing::info!(segment = %next.path.display(), "appending to a new spool segment");
            self.active = Some(next);
        }
        let Some(active) = self.active.as_mut() else {
            return Err(SpoolError::Closed);
        };
        let offset = active.pos + self.buf.len() as u64;
        // The length was checked above, so encoding cannot refuse it.
        let Some(crc) = record::encode(kind, active.prev, parts, &mut self.buf) else {
            return Err(SpoolError::Closed);
        };
        active.prev = crc;
        if self.buf.len() >= self.options.max_batch_bytes {
            self.spill()?;
        }
        Ok(offset)
    }

    /// Writes the buffered records without syncing (a batch too large to hold in memory).
    /// On failure the batch so far is refused, and the error is the caller's too.
    fn spill(&mut self) -> Result<(), SpoolError> {
        let Some(active) = self.active.as_mut() else {
            return Err(SpoolError::Closed);
        };
        match active.file.write_all_at(&self.buf, active.pos) {
            Ok(()) => {
                active.pos += self.buf.len() as u64;
                self.buf.clear();
                Ok(())
            }
            Err(e) => {
                let e = SpoolError::io("write to", &active.path, e);
                self.fail(e.duplicate());
                Err(e)
            }
        }
    }

    /// Writes and syncs the batch, then updates the index and answers every request in it.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            self.buf.clear();
            return;
        }
        let Some(active) = self.active.as_mut() else {
            self.fail(SpoolError::Closed);
            return;
        };
        let started = Instant::now();
        let bytes = self.buf.len();
        // A batch of recipient results only is answered once written, without its own
        // fsync: the next message's fsync covers it (same file), and so do segment
        // rollover, reclaiming and closing. A kill -9 cannot lose a written record; a
        // power cut can, and then the recipient is delivered again, never lost. This is
        // what Postfix does when it removes a delivered queue file. It keeps mark-only
        // fsyncs from delaying the next batch of messages.
        let sync = self.needs_sync;
        let result = active
            .file
            .write_all_at(&self.buf, active.pos)
            .map_err(|e| SpoolError::io("write to", &active.path, e))
            .and_then(|()| {
                if !sync {
                    return Ok(());
                }
                active
                    .file
                    .sync_data()
                    .map_err(|e| SpoolError::io("fsync", &active.path, e))
            });
        self.needs_sync = false;
        if let Err(e) = result {
            self.fail(e);
            return;
        }
        self.unsynced = !sync;
        active.pos += bytes as u64;
        self.buf.clear();
        let number = active.number;
        let records = self.pending.len();
        tracing::debug!(
            segment = %active.path.display(),
            records,
            bytes,
            us = started.elapsed().as_micros() as u64,
            synced = sync,
            "group commit"
        );
        let c = &self.counters;
        if sync {
            c.syncs.fetch_add(1, Ordering::Relaxed);
        }
        c.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let mut replies = Vec::with_capacity(records);
        {
            let mut index = lock(&self.index);
            for (effect, reply) in self.pending.drain(..) {
                match effect {
                    Effect::Insert { head, offset } => {
                        c.commits.fetch_add(1, Ordering::Relaxed);
                        index.insert(number, offset, &head);
                    }
                    Effect::Status { id, status } => {
                        c.marks.fetch_add(1, Ordering::Relaxed);
                        index.set_status(&id, number, status);
                    }
                }
                replies.push(reply);
            }
        }
        self.overlay.clear();
        self.pending_ids.clear();
        for reply in replies {
            reply.send(Ok(()));
        }
    }

    /// Syncs records that were answered without a sync (recipient results); false when
    /// the sync failed, and then the segment is abandoned.
    fn sync_written(&mut self) -> bool {
        if !self.unsynced {
            return true;
        }
        self.unsynced = false;
        let Some(active) = self.active.as_ref() else {
            return true;
        };
        match active.file.sync_data() {
            Ok(()) => {
                self.counters.syncs.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                let error = SpoolError::io("fsync", &active.path, e);
                tracing::error!(error = %error, "spool sync failed; the segment is abandoned");
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                self.active = None;
                false
            }
        }
    }

    /// Fails every pending request with `error` and abandons the active segment.
    fn fail(&mut self, error: SpoolError) {
        tracing::error!(
            error = %error,
            requests = self.pending.len(),
            "spool write failed; the batch is refused and its segment abandoned"
        );
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        self.active = None;
        self.needs_sync = false;
        self.unsynced = false;
        self.buf.clear();
        self.overlay.clear();
        self.pending_ids.clear();
        for (_, reply) in self.pending.drain(..) {
            reply.send(Err(error.duplicate()));
        }
    }

    /// Deletes the segments nothing depends on any more: hands them to the reclaimer, or
    /// without one deletes them here, and then the ones that made spent in turn.
    fn collect_garbage(&mut self) {
        let keep = self.active.as_ref().map(|a| a.number);
        loop {
            let victims = lock(&self.index).claim_deletable(keep);
            if victims.is_empty() {
                return;
            }
            // The results that made these segments deletable must not outlive them.
            if !self.sync_written() {
                lock(&self.index).unclaim(&victims);
                return;
            }
            let victims = match &self.reclaimer {
                Some(r) => match r.reclaim(victims) {
                    Ok(()) => return,
                    Err(victims) => {
                        tracing::error!("the spool reclaimer stopped; deleting on the commit path");
                        self.reclaimer = None;
                        victims
                    }
                },
                None => victims,
            };
            if !reclaim::delete(&self.segments, &self.index, victims) {
                return;
            }
        }
    }
}

/// The state of a message after `change`.
fn apply(id: QueueId, mut status: Status, change: Change) -> Result<Status, SpoolError> {
    match change {
        Change::Message(state) => status.state = state,
        Change::Recipients(updates) => {
            for u in updates {
                let n = status.recipients.len();
                let slot =
                    status
                        .recipients
                        .get_mut(u.index)
                        .ok_or_else(|| SpoolError::Invalid {
                            id,
                            reason: format!("no recipient #{} (the message has {n})", u.index),
                        })?;
                *slot = RecipientStatus {
                    state: u.state,
                    detail: u.detail,
                };
            }
            if status.recipients.iter().all(|r| r.state.is_final()) {
                let bounced = status
                    .recipients
                    .iter()
                    .any(|r| r.state == RecipientState::Bounced);
                status.state = if bounced {
                    MessageState::Bounced
                } else {
                    MessageState::Delivered
                };
            }
        }
    }
    Ok(status)
}

/// The previous run created its next segment ahead of time. If nothing was written to it,
/// remove it and carry on in the segment before: otherwise every restart would leave a
/// 64 MiB segment behind.
fn drop_unused_tail(segments: &Path, recovered: &mut Recovered) -> Result<(), SpoolError> {
    let [.., prev, last] = recovered.segments.as_slice() else {
        return Ok(());
    };
    if last.header.is_none() || last.records > 0 || prev.header.is_none() {
        return Ok(());
    }
    let (number, path) = (last.number, last.path.clone());
    fs::remove_file(&path).map_err(|e| SpoolError::io("remove", &path, e))?;
    segment::sync_dir(segments)?;
    recovered.index.remove_segment(number);
    recovered.segments.pop();
    tracing::debug!(segment = %path.display(), "removed the unused segment of the previous run");
    Ok(())
}
