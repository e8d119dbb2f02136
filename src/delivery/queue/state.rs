//! What the queue manager knows about each live message between attempts. Owned behind
//! one mutex; every decision here is quick and does no I/O.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hashbrown::HashMap;
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
    jobs: VecDeque<Job>,
    /// Workers running (each may hold a connection).
    pub(crate) workers: usize,
    /// Workers waiting for a job.
    pub(crate) idle: usize,
    pub(crate) notify: Arc<Notify>,
    /// Jobs queued and taken since the hop was set up: a job is still waiting while
    /// `taken` is below the `queued` count of its time.
    queued: u64,
    taken: u64,
    /// How long this next hop's recent transactions took (a moving average).
    pub(crate) tx_time: Option<Duration>,
    /// The `queued` count when the check for jobs waiting too long for a busy worker
    /// was set; `None` when no check is due.
    pub(crate) wait_check: Option<u64>,
}

impl Hop {
    /// Adds a job at the end of the line.
    pub(crate) fn push(&mut self, job: Job) {
        self.jobs.push_back(job);
        self.queued += 1;
    }

    /// Takes the first job in line.
    pub(crate) fn pop(&mut self) -> Option<Job> {
        let job = self.jobs.pop_front()?;
        self.taken += 1;
        Some(job)
    }

    /// The first job in line.
    pub(crate) fn front(&self) -> Option<&Job> {
        self.jobs.front()
    }

    /// Jobs in line.
    pub(crate) fn waiting(&self) -> usize {
        self.jobs.len()
    }

    /// Workers that are delivering (or about to look for their next job).
    pub(crate) fn busy(&self) -> usize {
        self.workers.saturating_sub(self.idle)
    }

    /// Jobs queued before the `queued` count was `mark` that are still in line.
    pub(crate) fn waiting_since(&self, mark: u64) -> usize {
        usize::try_from(mark.saturating_sub(self.taken)).unwrap_or(usize::MAX)
    }

    /// The queued count, to compare later with [`Hop::waiting_since`].
    pub(crate) fn mark(&self) -> u64 {
        self.queued
    }

    /// Folds one transaction's duration into [`Hop::tx_time`] (weight 1/8, so one slow
    /// transaction moves it, and a next hop that slows down shows within a few).
    pub(crate) fn observe(&mut self, took: Duration) {
        self.tx_time = Some(match self.tx_time {
            None => took,
            Some(t) => (t * 7 + took) / 8,
        });
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            id: QueueId::new(),
            indices: vec![0],
        }
    }

    #[test]
    fn one_slow_transaction_moves_the_hops_time_by_an_eighth() {
        let mut h = Hop::default();
        h.observe(Duration::from_millis(2));
        assert_eq!(h.tx_time, Some(Duration::from_millis(2)));
        h.observe(Duration::from_millis(802));
        assert_eq!(h.tx_time, Some(Duration::from_millis(102)));
    }

    #[test]
    fn jobs_queued_before_a_mark_are_counted_until_taken() {
        let mut h = Hop::default();
        h.push(job());
        h.push(job());
        let mark = h.mark();
        h.push(job());
        assert_eq!(h.waiting_since(mark), 2);
        assert!(h.pop().is_some());
        assert_eq!(h.waiting_since(mark), 1);
        assert!(h.pop().is_some());
        assert_eq!(h.waiting_since(mark), 0);
        assert_eq!(h.waiting(), 1, "the one queued after the mark still waits");
    }
}
