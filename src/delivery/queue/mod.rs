//! The queue manager: takes accepted messages (from the front end, or from the spool at
//! start), groups their recipients by next hop, runs a bounded number of workers per next
//! hop (each reusing its connection), records every recipient's outcome in the spool,
//! retries with backoff, and hands failures to the notice writer.
//!
//! Recovery: the spool is the truth. After a crash every message that is not final is
//! found again by [`Queue::start`] and every recipient not yet recorded as delivered or
//! bounced is tried again. A recipient the next hop accepted just before the crash, but
//! whose result had not reached the spool, is delivered a second time: that window is
//! one fsync wide and is the only way to a duplicate.

mod agent;
mod ahead;
mod notice;
mod state;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, Semaphore};

pub use agent::Agent;
pub use notice::NoticeError;

use self::ahead::TakeAhead;
use self::state::{Job, Msg, State};
use crate::delivery::retry::RetryPolicy;
use crate::delivery::{DeliveryConfig, HopKey, RcptResult, ResultKind, Transaction, TxRecipient};
use crate::routing::router::Router;
use crate::spool::{
    MessageState, NewMessage, QueueId, RecipientState, RecipientUpdate, Spool, SpoolError,
};

/// Body bytes kept in memory for messages waiting for delivery; beyond this, bodies are
/// read back from the spool when their turn comes.
const MEMORY_BUDGET: usize = 256 << 20;

/// What the queue needs from the rest of the gateway.
#[derive(Clone)]
pub struct QueueContext {
    /// The spool holding the messages.
    pub spool: Spool,
    /// The routing tables, used to route notices to the senders.
    pub router: Arc<Router>,
    /// Our host name (notices come from `MAILER-DAEMON@` it).
    pub hostname: String,
    /// Concurrency, retry and lifetime settings.
    pub config: DeliveryConfig,
}

/// Totals since start, for metrics and tests.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Recipients delivered.
    pub delivered: AtomicU64,
    /// Recipient attempts that failed temporarily.
    pub deferred: AtomicU64,
    /// Recipients bounced (permanent failure or expiry).
    pub bounced: AtomicU64,
    /// Delivery status notifications queued (failures and delays).
    pub notices: AtomicU64,
    /// Transactions run.
    pub transactions: AtomicU64,
}

/// The answer to an administrator's request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No live message has this id.
    #[error("no message {0} in the queue")]
    NotFound(QueueId),
    /// The message is not in a state the request applies to.
    #[error("message {id} is {state}: {hint}")]
    WrongState {
        /// The message.
        id: QueueId,
        /// Its state.
        state: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// Recording the change failed.
    #[error("message {id}: {error}")]
    Spool {
        /// The message.
        id: QueueId,
        /// The spool's error.
        error: String,
    },
}

/// A running queue manager. Cloning gives another handle to the same queue.
pub struct Queue<A: Agent> {
    inner: Arc<Inner<A>>,
}

impl<A: Agent> Clone for Queue<A> {
    fn clone(&self) -> Self {
        Queue {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<A: Agent> {
    ctx: QueueContext,
    agent: A,
    state: std::sync::Mutex<State>,
    /// Wakes the timer task (new timers, shutdown).
    wake: Notify,
    /// Transactions under way, in total.
    permits: Semaphore,
    stats: QueueStats,
}

impl<A: Agent> Queue<A> {
    /// Starts the queue: loads every live message from the spool, starts delivering those
    /// that are not held, and runs the retry timer. Call inside a tokio runtime.
    pub fn start(ctx: QueueContext, agent: A) -> Queue<A> {
        let permits = Semaphore::new(ctx.config.max_connections.max(1));
        let queue = Queue {
            inner: Arc::new(Inner {
                ctx,
                agent,
                state: std::sync::Mutex::new(State::default()),
                wake: Notify::new(),
                permits,
                stats: QueueStats::default(),
            }),
        };
        let live = queue.inner.ctx.spool.list();
        let (now, clock) = (Instant::now(), SystemTime::now());
        let policy = RetryPolicy::from_config(&queue.inner.ctx.config);
        let mut waiting = 0usize;
        {
            let mut st = queue.lock();
            for info in &live {
                // A message with a deferred recipient failed before the restart: carry on
                // with its backoff (and its delay notice) rather than start over.
                let failed = info
                    .recipient_status
                    .iter()
                    .any(|r| r.state == RecipientState::Deferred);
                let resumed =
                    policy.resume(info.received_at, info.changed_at.filter(|_| failed), clock);
                let mut msg = Msg::recovered(info);
                msg.failures = resumed.failures;
                msg.warned = resumed.warned;
                st.messages.insert(info.id, msg);
                if info.state != MessageState::Held {
                    let wait = resumed.next_at.duration_since(clock).unwrap_or_default();
                    waiting += usize::from(!wait.is_zero());
                    st.schedule(info.id, now + wait);
                }
            }
        }
        tracing::info!(
            messages = live.len(),
            waiting_for_retry = waiting,
            "queue loaded from spool"
        );
        let timer = queue.clone();
        tokio::spawn(async move { timer.run_timers().await });
        queue
    }

    /// Hands a message that was just made durable to the queue; delivery starts at once.
    pub fn submit(&self, message: Arc<NewMessage>) {
        let id = message.id;
        let mut st = self.lock();
        if st.messages.contains_key(&id) {
            return;
        }
        let keep = st.memory + message.body.len() <= MEMORY_BUDGET;
        let msg = Msg::new(message, keep);
        st.memory += msg.memory();
        st.messages.insert(id, msg);
        self.dispatch(&mut st, id);
    }

    /// Totals since start.
    pub fn stats(&self) -> &QueueStats {
        &self.inner.stats
    }

    /// Live messages known to the queue (delivered and bounced ones are gone).
    pub fn len(&self) -> usize {
        self.lock().messages.len()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tries message `id` (or, with `None`, every deferred message) now instead of at its
    /// retry time. Returns how many messages were scheduled.
    pub fn retry(&self, id: Option<QueueId>) -> Result<usize, ControlError> {
        let mut st = self.lock();
        let ids: Vec<QueueId> = match id {
            Some(id) => {
                let m = st.messages.get(&id).ok_or(ControlError::NotFound(id))?;
                if m.held {
                    return Err(ControlError::WrongState {
                        id,
                        state: "held",
                        hint: "release it first (splitmx queue release ID)",
                    });
                }
                vec![id]
            }
            None => st
                .messages
                .iter()
                .filter(|(_, m)| !m.held && m.in_flight == 0)
                .map(|(id, _)| *id)
                .collect(),
        };
        let mut n = 0;
        for id in ids {
            st.unschedule(&id);
            if st.messages.get(&id).is_some_and(|m| m.in_flight == 0) {
                self.dispatch(&mut st, id);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Keeps message `id` from being tried until it is released. A transaction already
    /// under way finishes.
    pub async fn hold(&self, id: QueueId) -> Result<(), ControlError> {
        {
            let mut st = self.lock();
            let m = st.messages.get_mut(&id).ok_or(ControlError::NotFound(id))?;
            m.held = true;
            st.unschedule(&id);
        }
        self.mark(id, MessageState::Held).await
    }

    /// Lets a held message be tried again, at once.
    pub async fn release(&self, id: QueueId) -> Result<(), ControlError> {
        {
            let st = self.lock();
            let m = st.messages.get(&id).ok_or(ControlError::NotFound(id))?;
            if !m.held {
                return Err(ControlError::WrongState {
                    id,
                    state: "not held",
                    hint: "only held messages can be released; use retry to try now",
                });
            }
        }
        self.mark(id, MessageState::Queued).await?;
        let mut st = self.lock();
        if let Some(m) = st.messages.get_mut(&id) {
            m.held = false;
            self.dispatch(&mut st, id);
        }
        Ok(())
    }

    /// Removes message `id` from the queue without delivering or bouncing it.
    pub async fn delete(&self, id: QueueId) -> Result<(), ControlError> {
        {
            let mut st = self.lock();
            let m = st.messages.get_mut(&id).ok_or(ControlError::NotFound(id))?;
            m.deleted = true;
            m.held = true;
            st.unschedule(&id);
        }
        self.mark(id, MessageState::Deleted).await?;
        let mut st = self.lock();
        if st.messages.get(&id).is_some_and(|m| m.in_flight == 0) {
            st.remove(&id);
        }
        tracing::warn!(queue_id = %id, "message deleted by administrator");
        Ok(())
    }

    /// Stops starting attempts and waits (at most `grace`) for transactions under way.
    pub async fn stop(&self, grace: Duration) {
        self.lock().stopping = true;
        self.inner.wake.notify_one();
        let deadline = Instant::now() + grace;
        loop {
            let busy: usize = {
                let st = self.lock();
                st.hops.values().map(|h| h.workers - h.idle).sum::<usize>() + st.recording
            };
            if busy == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Wake idle workers so they close their connections.
        let st = self.lock();
        for hop in st.hops.values() {
            hop.notify.notify_waiters();
        }
    }

    async fn mark(&self, id: QueueId, state: MessageState) -> Result<(), ControlError> {
        self.inner
            .ctx
            .spool
            .mark(&id, state)
            .await
            .map_err(|e| ControlError::Spool {
                id,
                error: e.to_string(),
            })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts an attempt for message `id`: its open recipients become jobs on their next
    /// hops' queues. Needs the envelope; loads it first when it is not in memory.
    fn dispatch(&self, st: &mut State, id: QueueId) {
        if st.stopping {
            return;
        }
        let Some(m) = st.messages.get_mut(&id) else {
            return;
        };
        if m.held || m.deleted || m.in_flight > 0 {
            return;
        }
        let Some(envelope) = m.envelope.clone() else {
            m.in_flight += 1;
            let queue = self.clone();
            tokio::spawn(async move { queue.load_and_dispatch(id).await });
            return;
        };
        let mut groups: Vec<(HopKey, Vec<usize>)> = Vec::new();
        let mut broken: Vec<(usize, RcptResult)> = Vec::new();
        for i in m.open_recipients() {
            let Some(r) = envelope.recipients.get(i) else {
                continue;
            };
            match HopKey::of(r) {
                Ok(hop) => match groups.iter_mut().find(|(h, _)| *h == hop) {
                    Some((_, v)) => v.push(i),
                    None => groups.push((hop, vec![i])),
                },
                Err(e) => {
                    tracing::error!(queue_id = %id, error = %e, "spooled route cannot be delivered");
                    let result = RcptResult::local(ResultKind::Deferred, "4.3.5", e.to_string());
                    broken.push((i, result));
                }
            }
        }
        let chunk = self.inner.ctx.config.max_recipients_per_transaction.max(1);
        let jobs: usize = groups.iter().map(|(_, v)| v.len().div_ceil(chunk)).sum();
        m.in_flight += jobs + usize::from(!broken.is_empty());
        if !broken.is_empty() {
            let queue = self.clone();
            let env = Arc::clone(&envelope);
            tokio::spawn(async move {
                let (indices, results): (Vec<usize>, Vec<RcptResult>) = broken.into_iter().unzip();
                let job = Job { id, indices };
                queue.complete(job, &env, None, results).await;
            });
        }
        for (hop, indices) in groups {
            for part in indices.chunks(chunk) {
                let job = Job {
                    id,
                    indices: part.to_vec(),
                };
                self.enqueue(st, hop.clone(), job);
            }
        }
    }

    /// Puts a job on its next hop's queue ([`Queue::enqueue_job`]).
    fn enqueue(&self, st: &mut State, hop: HopKey, job: Job) {
        let h = st.hops.entry(hop.clone()).or_default();
        self.enqueue_job(&hop, h, job);
    }

    async fn load_and_dispatch(&self, id: QueueId) {
        let loaded = self.inner.ctx.spool.read(&id).await;
        let mut st = self.lock();
        let Some(m) = st.messages.get_mut(&id) else {
            return;
        };
        m.in_flight = m.in_flight.saturating_sub(1);
        match loaded {
            Ok(stored) => {
                let envelope = Arc::new(stored.envelope);
                if envelope.recipients.len() != m.rcpts.len() {
                    tracing::error!(queue_id = %id, "spooled envelope and state disagree on the recipients; message left in the queue");
                    return;
                }
                let keep = st.memory + envelope.body.len() <= MEMORY_BUDGET;
                let m = match st.messages.get_mut(&id) {
                    Some(m) => m,
                    None => return,
                };
                m.envelope = Some(envelope);
                let added = m.memory();
                st.memory += added;
                self.dispatch(&mut st, id);
                // Not enough room to keep it: the jobs hold their own reference.
                if !keep && let Some(m) = st.messages.get_mut(&id) {
                    let freed = m.memory();
                    m.envelope = None;
                    st.memory = st.memory.saturating_sub(freed);
                }
            }
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "cannot read message from spool; will retry");
                let due = Instant::now() + self.inner.ctx.config.retry_min;
                st.schedule(id, due);
                self.inner.wake.notify_one();
            }
        }
    }

    /// One worker of a next hop: takes its jobs one after the other over one session,
    /// and ends after the idle timeout. While it delivers a job the agent may take the
    /// next one ([`TakeAhead`]) to send its commands ahead; that job is delivered next,
    /// even when the queue is stopping. A job's results are recorded (spool, notices)
    /// while the worker delivers the next one, at most one job behind: the spool's
    /// answer is not something the peer should wait for.
    async fn worker(self, hop: HopKey) {
        let mut session: Option<A::Session> = None;
        let mut ahead: Option<(Job, Arc<NewMessage>)> = None;
        let mut recording: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            let (job, envelope) = match ahead.take() {
                Some(taken) => taken,
                None => {
                    let Some(job) = self.next_job(&hop).await else {
                        break;
                    };
                    match self.envelope(&job.id).await {
                        Ok(Some(e)) => (job, e),
                        // Deleted meanwhile.
                        Ok(None) => {
                            self.finish_job(&job.id);
                            continue;
                        }
                        Err(e) => {
                            self.unreadable(job, &e).await;
                            continue;
                        }
                    }
                }
            };
            let (results, took) = {
                let _permit = self.inner.permits.acquire().await;
                let recipients = tx_recipients(&envelope, &job);
                let tx = transaction(&envelope, &recipients);
                self.inner
                    .stats
                    .transactions
                    .fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let mut next = TakeAhead {
                    queue: &self,
                    hop: &hop,
                    taken: None,
                };
                let had = session.is_some();
                let mut results = self
                    .inner
                    .agent
                    .deliver(&hop, &mut session, &tx, &mut next)
                    .await;
                ahead = next.taken;
                if had != session.is_some() {
                    connections(&hop, if had { -1 } else { 1 });
                }
                // An agent must answer for every recipient; anything missing is retried.
                results.resize_with(recipients.len(), || {
                    RcptResult::local(
                        ResultKind::Deferred,
                        "4.3.0",
                        "no result from the delivery agent",
                    )
                });
                (results, started.elapsed())
            };
            if let Some(previous) = recording.take() {
                let _ = previous.await;
            }
            {
                let mut st = self.lock();
                st.recording += 1;
                if let Some(h) = st.hops.get_mut(&hop) {
                    h.observe(took);
                }
            }
            let queue = self.clone();
            let at = hop.clone();
            recording = Some(tokio::spawn(async move {
                queue.complete(job, &envelope, Some(&at), results).await;
                queue.lock().recording -= 1;
            }));
        }
        if let Some(previous) = recording {
            let _ = previous.await;
        }
        if let Some(s) = session {
            connections(&hop, -1);
            self.inner.agent.close(s).await;
        }
    }

    /// A job whose message cannot be read from the spool: deferred.
    async fn unreadable(&self, job: Job, error: &SpoolError) {
        let results = job
            .indices
            .iter()
            .map(|_| {
                RcptResult::local(
                    ResultKind::Deferred,
                    "4.3.0",
                    format!("cannot read message from spool: {error}"),
                )
            })
            .collect();
        let env = Arc::new(NewMessage {
            id: job.id,
            received_at: SystemTime::now(),
            client: String::new(),
            sender: String::new(),
            recipients: Vec::new(),
            table_version: String::new(),
            body: Vec::new(),
            params: Vec::new(),
        });
        self.complete(job, &env, None, results).await;
    }

    /// The next job for `hop`, waiting up to the idle timeout; `None` ends the worker.
    async fn next_job(&self, hop: &HopKey) -> Option<Job> {
        let idle = self.inner.ctx.config.idle_timeout;
        loop {
            let notify = {
                let mut st = self.lock();
                let stopping = st.stopping;
                let h = st.hops.get_mut(hop)?;
                if !stopping && let Some(job) = h.pop() {
                    return Some(job);
                }
                if stopping {
                    h.workers -= 1;
                    return None;
                }
                h.idle += 1;
                Arc::clone(&h.notify)
            };
            let woken = tokio::time::timeout(idle, notify.notified()).await.is_ok();
            let mut st = self.lock();
            let stopping = st.stopping;
            let h = st.hops.get_mut(hop)?;
            h.idle -= 1;
            if !stopping && let Some(job) = h.pop() {
                return Some(job);
            }
            if !woken || stopping {
                h.workers -= 1;
                if h.workers == 0 && h.waiting() == 0 {
                    st.hops.remove(hop);
                }
                return None;
            }
        }
    }

    /// The envelope of message `id`, from memory or the spool; `None` if it was deleted.
    async fn envelope(&self, id: &QueueId) -> Result<Option<Arc<NewMessage>>, SpoolError> {
        {
            let st = self.lock();
            match st.messages.get(id) {
                None => return Ok(None),
                Some(m) if m.deleted => return Ok(None),
                Some(m) => {
                    if let Some(e) = &m.envelope {
                        return Ok(Some(Arc::clone(e)));
                    }
                }
            }
        }
        let stored = self.inner.ctx.spool.read(id).await?;
        Ok(Some(Arc::new(stored.envelope)))
    }

    /// Records a job's results: notices for bounces first (so a crash can repeat a
    /// notice but never lose one), then the spool, then the in-memory state. A message
    /// gets one failure notice per attempt, however many jobs (next hops) it took:
    /// bounces wait in [`Msg::bounce_later`] while other jobs of the message still run.
    async fn complete(
        &self,
        job: Job,
        envelope: &Arc<NewMessage>,
        hop: Option<&HopKey>,
        mut results: Vec<RcptResult>,
    ) {
        let failed_now: Vec<(usize, RcptResult)> = job
            .indices
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.kind == ResultKind::Bounced)
            .map(|(&i, r)| (i, r.clone()))
            .collect();
        let (wait, mut earlier) = {
            let mut st = self.lock();
            match st.messages.get_mut(&job.id) {
                Some(m) if !failed_now.is_empty() && m.in_flight > 1 => {
                    m.bounce_later.extend(failed_now.iter().cloned());
                    (true, Vec::new())
                }
                Some(m) => (false, std::mem::take(&mut m.bounce_later)),
                None => (false, Vec::new()),
            }
        };
        let mut failed = earlier.clone();
        if !wait {
            failed.extend(failed_now);
        }
        if !failed.is_empty()
            && let Err(e) = notice::failure(&self.inner.ctx, envelope, &failed, self).await
        {
            tracing::warn!(queue_id = %job.id, recipients = failed.len(), error = %e, "cannot queue the failure notice yet; recipients stay deferred");
            let defer = |r: &mut RcptResult| {
                *r = RcptResult::local(
                    ResultKind::Deferred,
                    "4.3.0",
                    format!("{} (bounce not sent yet: {e})", r.detail),
                );
            };
            // `failed` holds this job's bounces only when they were not set aside.
            if !wait {
                results
                    .iter_mut()
                    .filter(|r| r.kind == ResultKind::Bounced)
                    .for_each(defer);
            }
            earlier.iter_mut().for_each(|(_, r)| defer(r));
        }
        // Set aside: logged now (this attempt's outcome), recorded with the notice.
        let set_aside = |r: &RcptResult| wait && r.kind == ResultKind::Bounced;
        let age = SystemTime::now()
            .duration_since(envelope.received_at)
            .unwrap_or_default();
        let mut updates = Vec::with_capacity(results.len());
        for (&i, r) in job.indices.iter().zip(&results) {
            let rcpt = envelope.recipients.get(i);
            let stats = &self.inner.stats;
            crate::metrics::metrics()
                .delivery(rcpt.map_or("", |r| r.route.as_str()), r.kind.as_str());
            match r.kind {
                ResultKind::Delivered => stats.delivered.fetch_add(1, Ordering::Relaxed),
                ResultKind::Deferred => stats.deferred.fetch_add(1, Ordering::Relaxed),
                ResultKind::Bounced => stats.bounced.fetch_add(1, Ordering::Relaxed),
            };
            tracing::info!(
                queue_id = %job.id,
                recipient = rcpt.map_or("", |r| r.deliver_to.as_str()),
                route = rcpt.map_or("", |r| r.route.as_str()),
                next_hop = %hop.map(ToString::to_string).unwrap_or_default(),
                relay = r.remote.as_deref().unwrap_or("none"),
                delay_ms = age.as_millis() as u64,
                result = r.kind.as_str(),
                status = %r.status,
                detail = %r.detail,
                version = %envelope.table_version,
                "delivery"
            );
            if set_aside(r) {
                continue;
            }
            updates.push(RecipientUpdate {
                index: i,
                state: recipient_state(r.kind),
                detail: r.detail.clone(),
            });
        }
        updates.extend(earlier.iter().map(|(i, r)| RecipientUpdate {
            index: *i,
            state: recipient_state(r.kind),
            detail: r.detail.clone(),
        }));
        if !updates.is_empty()
            && let Err(e) = self.inner.ctx.spool.mark_recipients(&job.id, updates).await
        {
            tracing::error!(queue_id = %job.id, error = %e, "cannot record delivery results in the spool");
        }
        let mut st = self.lock();
        if let Some(m) = st.messages.get_mut(&job.id) {
            let recorded = job.indices.iter().copied().zip(results).chain(earlier);
            for (i, r) in recorded {
                if let Some(rc) = m.rcpts.get_mut(i) {
                    if !set_aside(&r) {
                        rc.state = recipient_state(r.kind);
                        rc.detail.clone_from(&r.detail);
                    }
                    rc.last = Some(r);
                }
            }
        }
        self.job_done(&mut st, job.id);
    }

    /// A job of `id` ended without results (the message was deleted).
    fn finish_job(&self, id: &QueueId) {
        let mut st = self.lock();
        self.job_done(&mut st, *id);
    }

    /// Bookkeeping after a job: when the attempt is over, decide what comes next.
    fn job_done(&self, st: &mut State, id: QueueId) {
        let Some(m) = st.messages.get_mut(&id) else {
            return;
        };
        m.in_flight = m.in_flight.saturating_sub(1);
        if m.in_flight > 0 {
            return;
        }
        if m.deleted {
            m.bounce_later.clear();
        }
        if !m.bounce_later.is_empty() {
            // Jobs that ended together each left their bounces for the other.
            m.in_flight += 1;
            let queue = self.clone();
            tokio::spawn(async move { queue.send_bounces(id).await });
            return;
        }
        if m.deleted || m.is_done() {
            st.remove(&id);
            return;
        }
        m.failures += 1;
        // The same policy a restart resumes from (`RetryPolicy::resume`).
        let policy = RetryPolicy::from_config(&self.inner.ctx.config);
        let now = SystemTime::now();
        if policy.expired(m.received_at, now) {
            m.in_flight += 1;
            let queue = self.clone();
            tokio::spawn(async move { queue.expire(id).await });
            return;
        }
        if !m.warned && policy.delay_warning_due(m.received_at, now) {
            m.warned = true;
            let queue = self.clone();
            tokio::spawn(async move { queue.warn_delay(id).await });
        }
        let age = now.duration_since(m.received_at).unwrap_or_default();
        // Never retry after the lifetime without expiring first.
        let delay = policy
            .delay(m.failures)
            .min(policy.lifetime.saturating_sub(age) + Duration::from_millis(10));
        if m.held {
            return;
        }
        st.schedule(id, Instant::now() + delay);
        self.inner.wake.notify_one();
    }

    /// Sends the failure notice for the bounces set aside, and records them.
    async fn send_bounces(&self, id: QueueId) {
        match self.envelope(&id).await {
            Ok(Some(envelope)) => {
                let job = Job {
                    id,
                    indices: Vec::new(),
                };
                self.complete(job, &envelope, None, Vec::new()).await;
            }
            other => {
                if let Err(e) = other {
                    tracing::warn!(queue_id = %id, error = %e, "cannot read message from spool for its failure notice; its recipients will be tried again");
                }
                // Not in the spool as bounced: they are simply tried again.
                let mut st = self.lock();
                if let Some(m) = st.messages.get_mut(&id) {
                    m.bounce_later.clear();
                }
                self.job_done(&mut st, id);
            }
        }
    }

    /// The queue lifetime is over: the recipients still open bounce.
    async fn expire(&self, id: QueueId) {
        let Ok(Some(envelope)) = self.envelope(&id).await else {
            self.finish_job(&id);
            return;
        };
        let (indices, results): (Vec<usize>, Vec<RcptResult>) = {
            let st = self.lock();
            let Some(m) = st.messages.get(&id) else {
                return;
            };
            let lifetime = crate::duration::format(self.inner.ctx.config.lifetime);
            m.open_recipients()
                .into_iter()
                .map(|i| {
                    let last = m.rcpts[i].last.clone();
                    let why = last
                        .as_ref()
                        .map(|r| r.detail.clone())
                        .unwrap_or_else(|| m.rcpts[i].detail.clone());
                    let mut r = last.unwrap_or_else(|| {
                        RcptResult::local(ResultKind::Bounced, "4.4.7", String::new())
                    });
                    r.kind = ResultKind::Bounced;
                    r.detail = format!(
                        "delivery time expired ({lifetime} in the queue); last error: {why}"
                    );
                    (i, r)
                })
                .unzip()
        };
        tracing::warn!(queue_id = %id, recipients = indices.len(), "queue lifetime expired");
        self.complete(Job { id, indices }, &envelope, None, results)
            .await;
    }

    /// Tells the sender that some recipients are still being retried.
    async fn warn_delay(&self, id: QueueId) {
        let Ok(Some(envelope)) = self.envelope(&id).await else {
            return;
        };
        let deferred: Vec<(usize, RcptResult)> = {
            let st = self.lock();
            let Some(m) = st.messages.get(&id) else {
                return;
            };
            m.open_recipients()
                .into_iter()
                .map(|i| {
                    let r = m.rcpts[i].last.clone().unwrap_or_else(|| {
                        RcptResult::local(ResultKind::Deferred, "4.0.0", m.rcpts[i].detail.clone())
                    });
                    (i, r)
                })
                .collect()
        };
        let until = envelope.received_at + self.inner.ctx.config.lifetime;
        if let Err(e) = notice::delay(&self.inner.ctx, &envelope, &deferred, until, self).await {
            tracing::warn!(queue_id = %id, error = %e, "cannot queue the delay notice");
        }
    }

    /// Starts attempts whose retry time has come.
    async fn run_timers(self) {
        loop {
            let next = {
                let mut st = self.lock();
                if st.stopping {
                    return;
                }
                let due = st.due(Instant::now());
                for id in due {
                    self.dispatch(&mut st, id);
                }
                st.next_due()
            };
            let wake = self.inner.wake.notified();
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = wake => {}
                    }
                }
                None => wake.await,
            }
        }
    }

    /// Queues a notice message (already durable) for delivery.
    fn submit_notice(&self, message: Arc<NewMessage>) {
        self.inner.stats.notices.fetch_add(1, Ordering::Relaxed);
        self.submit(message);
    }
}

/// The recipients of `job`, as the agent sees them.
fn tx_recipients<'e>(envelope: &'e NewMessage, job: &Job) -> Vec<TxRecipient<'e>> {
    job.indices
        .iter()
        .filter_map(|&i| envelope.recipients.get(i))
        .map(|r| TxRecipient {
            address: &r.deliver_to,
            params: &r.params,
        })
        .collect()
}

/// Moves the open-connections gauge of `hop`.
fn connections(hop: &HopKey, change: i64) {
    crate::metrics::metrics().delivery_connection(&hop.to_string(), change);
}

/// The transaction for `recipients` of `envelope`.
fn transaction<'e>(envelope: &'e NewMessage, recipients: &'e [TxRecipient<'e>]) -> Transaction<'e> {
    Transaction {
        sender: &envelope.sender,
        mail_params: &envelope.params,
        recipients,
        body: &envelope.body,
    }
}

/// What the spool records for a result.
fn recipient_state(kind: ResultKind) -> RecipientState {
    match kind {
        ResultKind::Delivered => RecipientState::Delivered,
        ResultKind::Deferred => RecipientState::Deferred,
        ResultKind::Bounced => RecipientState::Bounced,
    }
}
