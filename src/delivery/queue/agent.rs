//! The seam between the queue manager and the delivery agents (SMTP, LMTP, Maildir).
//! The gateway uses [`crate::delivery::Deliverer`]; an MTA embedding the queue, or a
//! test, can plug in its own.

use std::future::Future;

use crate::delivery::{HopKey, NextTransaction, RcptResult, Transaction};

/// Something that can deliver a transaction to a next hop.
///
/// The queue runs several workers per next hop; each keeps its own `Session` (an open
/// connection) between transactions, so a connection is reused for as long as the next
/// hop has work and closed after the idle timeout.
pub trait Agent: Send + Sync + 'static {
    /// A worker's reusable state, e.g. an open connection.
    type Session: Send + 'static;

    /// Delivers `tx` to `hop`, reusing or replacing `session`. Returns exactly one
    /// result per recipient of `tx`, in order.
    ///
    /// `next` hands out the next hop's next job for this `session` when the agent asks
    /// for it: an agent may send part of it ahead, as the SMTP client pipelines its
    /// MAIL, RCPT and DATA behind this message's final dot. Once it took one, the next
    /// call with this session is for that transaction. An agent that never asks
    /// delivers one job per call.
    fn deliver<'a>(
        &'a self,
        hop: &'a HopKey,
        session: &'a mut Option<Self::Session>,
        tx: &'a Transaction<'a>,
        next: &'a mut dyn NextTransaction,
    ) -> impl Future<Output = Vec<RcptResult>> + Send + 'a;

    /// Closes a session that is no longer needed (QUIT).
    fn close(&self, session: Self::Session) -> impl Future<Output = ()> + Send;
}
