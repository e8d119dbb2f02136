//! What the queue manager knows about each live message between attempts. Owned behind
//! one mutex; every decision here is quick and does no I/O.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::Notify;

use crate::delivery::{HopKey, RcptResult};
use crate::spool::{MessageInfo, MessageState, NewMessage, QueueId, RecipientState};

/// One recipient's latest state.
#[derive(Debug, Clone)]
pub(crate) struct Rcpt {
    pub(crate) state: RecipientState,
    /// The last result, for notices (none after a restart).
    pub(crate) last: Option<RcptResult>,
    /// The last detail recorded in the spool.
    pub(crate) detail: String,
}

/// A live message.
#[derive(Debug)]
pub(crate) struct Msg {
    /// Envelope and body, when in memory.
    pub(crate) envelope: Option<Arc<NewMessage>>,
    pub(crate) received_at: SystemTime,
    pub(crate) rcpts: Vec<Rcpt>,
    pub(crate) held: bool,
    /// Jobs (or loads, notices) under way; no new attempt starts while non-zero.
    pub(crate) in_flight: usize,
    /// Attempts that ended with a recipient still deferred.
    pub(crate) failures: u32,
    /// When the next attempt is due (also in the timer set).
    pub(crate) due: Option<Instant>,
    /// Whether a delay notice was sent by this process.
    pub(crate) warned: bool,
    /// Deleted by an administrator while jobs were running.
    pub(crate) deleted: bool,
    /// Recipients that failed permanently while other jobs of the message were still
    /// running: the message's last job reports them in one notice with its own. Not in
    /// the spool yet (they are marked once the notice is stored), so a crash retries
    /// them instead of losing their notice.
    pub(crate) bounce_later: Vec<(usize, RcptResult)>,
}

impl Msg {
    /// A message just accepted.
    pub(crate) fn new(envelope: Arc<NewMessage>, keep_body: bool) -> Msg {
        let rcpts = vec![
            Rcpt {
                state: RecipientState::Pending,
                last: None,
                detail: String::new(),
            };
            envelope.recipients.len()
        ];
        Msg {
            received_at: envelope.received_at,
            envelope: keep_body.then_some(envelope),
            rcpts,
            held: false,
            in_flight: 0,
            failures: 0,
            due: None,
            warned: false,
            deleted: false,
            bounce_later: Vec::new(),
        }
    }

    /// A message found in the spool at start.
    pub(crate) fn recovered(info: &MessageInfo) -> Msg {
        let rcpts = info
            .recipient_status
            .iter()
            .map(|s| Rcpt {
                state: s.state,
                last: None,
                detail: s.detail.clone(),
            })
            .collect();
        Msg {
            envelope: None,
            received_at: info.received_at,
            rcpts,
            held: info.state == MessageState::Held,
            in_flight: 0,
            failures: 0,
            due: None,
            warned: false,
            deleted: false,
            bounce_later: Vec::new(),
        }
    }

    /// Indices of recipients not delivered or bounced yet.
    pub(crate) fn open_recipients(&self) -> Vec<usize> {
        (0..self.rcpts.len())
            .filter(|&i| !self.rcpts[i].state.is_final())
            .collect()
    }

    /// Whether every recipient is delivered or bounced.
    pub(crate) fn is_done(&self) -> bool {
        self.rcpts.iter().all(|r| r.state.is_final())
    }

    /// Bytes of body kept in memory.
    pub(crate) fn memory(&self) -> usize {
        self.envelope.as_ref().map_or(0, |e| e.body.len())
    }
}

/// One transaction's worth of work: some recipients of one message, one next hop.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) id: QueueId,
    pub(crate) indices: Vec<usize>,
}

/// The work waiting for one next hop, and its workers.
#[derive(Debug, Default)]
pub(crate) struct Hop {
    pub(crate) jobs: VecDeque<Job>,
    /// Workers running (each may hold a connection).
    pub(crate) workers: usize,
    /// Workers waiting for a job.
    pub(crate) idle: usize,
    pub(crate) notify: Arc<Notify>,
}

/// Everything behind the queue's mutex.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) messages: HashMap<QueueId, Msg>,
    pub(crate) hops: HashMap<HopKey, Hop>,
    /// (due, id) of messages waiting for a retry.
    pub(crate) timers: BTreeSet<(Instant, QueueId)>,
    /// Body bytes held in memory.
    pub(crate) memory: usize,
    /// Set when shutting down: no new attempts.
    pub(crate) stopping: bool,
    /// Jobs whose results are still being recorded after their worker went on.
    pub(crate) recording: usize,
}

impl State {
    /// Puts message `id` in the timer set for `due` (replacing an earlier time).
    pub(crate) fn schedule(&mut self, id: QueueId, due: Instant) {
        if let Some(m) = self.messages.get_mut(&id) {
            if let Some(old) = m.due.replace(due) {
                self.timers.remove(&(old, id));
            }
            self.timers.insert((due, id));
        }
    }

    /// Takes message `id` off the timer set.
    pub(crate) fn unschedule(&mut self, id: &QueueId) {
        if let Some(m) = self.messages.get_mut(id)
            && let Some(old) = m.due.take()
        {
            self.timers.remove(&(old, *id));
        }
    }

    /// Forgets message `id`.
    pub(crate) fn remove(&mut self, id: &QueueId) {
        self.unschedule(id);
        if let Some(m) = self.messages.remove(id) {
            self.memory = self.memory.saturating_sub(m.memory());
        }
    }

    /// Ids whose retry time has come, taken off the timer set.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<QueueId> {
        let mut ids = Vec::new();
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(m) = self.messages.get_mut(&id) {
                m.due = None;
            }
            ids.push(id);
        }
        ids
    }

    /// The next retry time, if any.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }
}
