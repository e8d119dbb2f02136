//! Which connection a next hop's job goes out on: a free one at once, or a busy one
//! behind its current message.
//!
//! A job that goes behind a busy connection's final dot costs one write and one read
//! less on both sides (its MAIL, RCPT and DATA ride in the same packet as the dot), and
//! fewer connections stay open. It also waits for that message's final reply. So a job
//! waits for a busy connection only while the next hop answers quickly: its recent
//! transactions took at most `wait_for_busy_connection`, and no more jobs wait than
//! connections are busy. A job that has waited that long anyway (a transaction that
//! stalled) wakes an idle worker or starts one. Otherwise jobs spread over up to
//! `max_per_next_hop` connections, as Postfix does.

use std::sync::Arc;

use super::state::{Hop, Job};
use super::{Agent, Queue, transaction, tx_recipients};
use crate::delivery::{HopKey, NextTransaction, Transaction};
use crate::spool::NewMessage;

impl<A: Agent> Queue<A> {
    /// Whether this next hop answers quickly enough for jobs to wait for its busy
    /// connections: its recent transactions took at most `wait_for_busy_connection`.
    /// Never for Maildir, where nothing goes ahead.
    fn answers_quickly(&self, hop: &HopKey, h: &Hop) -> bool {
        let wait = self.inner.ctx.config.wait_for_busy_connection;
        !wait.is_zero()
            && !matches!(hop, HopKey::Maildir { .. })
            && h.tx_time.is_some_and(|t| t <= wait)
    }

    /// Puts a job on its next hop's queue, and wakes or starts a worker unless a busy
    /// one will take it: one job per busy worker at most, so none waits for more than
    /// one transaction.
    pub(super) fn enqueue_job(&self, hop: &HopKey, h: &mut Hop, job: Job) {
        h.push(job);
        if h.waiting() <= h.busy() && self.answers_quickly(hop, h) {
            self.check_waiting_later(hop, h);
            return;
        }
        self.wake_or_start(hop, h, 1);
    }

    /// Wakes up to `n` idle workers, and starts workers for the rest while the next hop
    /// may have more.
    fn wake_or_start(&self, hop: &HopKey, h: &mut Hop, n: usize) {
        let max = self.inner.ctx.config.max_per_next_hop.max(1);
        let wake = n.min(h.idle);
        for _ in 0..wake {
            h.notify.notify_one();
        }
        for _ in wake..n {
            if h.workers >= max {
                break;
            }
            h.workers += 1;
            let queue = self.clone();
            let hop = hop.clone();
            tokio::spawn(async move { queue.worker(hop).await });
        }
    }

    /// Makes sure jobs now waiting for a busy worker are looked at again after
    /// `wait_for_busy_connection`.
    fn check_waiting_later(&self, hop: &HopKey, h: &mut Hop) {
        if h.wait_check.is_some() {
            return;
        }
        h.wait_check = Some(h.mark());
        let queue = self.clone();
        let hop = hop.clone();
        let wait = self.inner.ctx.config.wait_for_busy_connection;
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            queue.check_waiting(&hop);
        });
    }

    /// Jobs that waited a whole `wait_for_busy_connection` for a busy worker get a
    /// worker of their own.
    fn check_waiting(&self, hop: &HopKey) {
        let mut st = self.lock();
        if st.stopping {
            return;
        }
        let Some(h) = st.hops.get_mut(hop) else {
            return;
        };
        let Some(mark) = h.wait_check.take() else {
            return;
        };
        let late = h.waiting_since(mark).min(h.waiting());
        if late > 0 {
            tracing::debug!(next_hop = %hop, jobs = late, "jobs waited too long for a busy connection");
            self.wake_or_start(hop, h, late);
        }
        if h.waiting() > 0 {
            self.check_waiting_later(hop, h);
        }
    }

    /// The next job of `hop`, for a worker whose message is about to end, to send
    /// ahead behind it: when the job would wait anyway (every worker the next hop may
    /// have is busy), or the next hop answers quickly. Its message must be in memory.
    fn take_ahead(&self, hop: &HopKey) -> Option<(Job, Arc<NewMessage>)> {
        let mut st = self.lock();
        if st.stopping {
            return None;
        }
        let super::state::State { hops, messages, .. } = &mut *st;
        let h = hops.get_mut(hop)?;
        let saturated = h.idle == 0 && h.workers >= self.inner.ctx.config.max_per_next_hop.max(1);
        // Otherwise a job behind a slow final reply would wait while another worker
        // could take it at once.
        if !saturated && !self.answers_quickly(hop, h) {
            return None;
        }
        let m = messages.get(&h.front()?.id)?;
        if m.deleted {
            return None;
        }
        let envelope = Arc::clone(m.envelope.as_ref()?);
        let job = h.pop()?;
        Some((job, envelope))
    }
}

/// What a worker lends its agent for one delivery: the next hop's next job, taken
/// from the queue only when the agent asks for it.
pub(super) struct TakeAhead<'q, A: Agent> {
    pub(super) queue: &'q Queue<A>,
    pub(super) hop: &'q HopKey,
    /// The job handed to the agent; the worker delivers it next.
    pub(super) taken: Option<(Job, Arc<NewMessage>)>,
}

impl<A: Agent> NextTransaction for TakeAhead<'_, A> {
    fn take_with(&mut self, send: &mut dyn FnMut(&Transaction<'_>)) {
        if self.taken.is_some() {
            return;
        }
        let Some((job, envelope)) = self.queue.take_ahead(self.hop) else {
            return;
        };
        let recipients = tx_recipients(&envelope, &job);
        send(&transaction(&envelope, &recipients));
        self.taken = Some((job, envelope));
    }
}
