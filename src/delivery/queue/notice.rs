//! Queues delivery status notifications: routes the original sender like any recipient,
//! stores the notice in the spool (fsynced) and hands it to the queue. Notices come from
//! the null sender, so a notice that fails is never answered with another.

use std::sync::Arc;
use std::time::SystemTime;

use super::{Agent, Queue, QueueContext};
use crate::delivery::RcptResult;
use crate::delivery::bounce::{self, BounceInput, NoticeKind, ReportedRecipient};
use crate::routing::address::Address;
use crate::routing::resolve::{Outcome, Unrouted};
use crate::routing::route::{RouteKind, TlsPolicy};
use crate::spool::{NewMessage, QueueId, SpooledRecipient};

/// Why a notice could not be queued now (the recipients it reports stay deferred and
/// the notice is tried again with them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    /// The sender's route is not known now (directory down).
    #[error("route to sender {sender} unknown for now: {reason}")]
    Route {
        /// The original sender.
        sender: String,
        /// Why.
        reason: String,
    },
    /// The spool refused the notice.
    #[error("cannot store the notice: {0}")]
    Spool(String),
}

/// Reports permanently failed recipients to the sender.
pub(super) async fn failure<A: Agent>(
    ctx: &QueueContext,
    original: &NewMessage,
    failed: &[(usize, RcptResult)],
    queue: &Queue<A>,
) -> Result<(), NoticeError> {
    send(ctx, original, failed, NoticeKind::Failure, None, queue).await
}

/// Tells the sender that recipients are still being retried, until `until`.
pub(super) async fn delay<A: Agent>(
    ctx: &QueueContext,
    original: &NewMessage,
    deferred: &[(usize, RcptResult)],
    until: SystemTime,
    queue: &Queue<A>,
) -> Result<(), NoticeError> {
    send(
        ctx,
        original,
        deferred,
        NoticeKind::Delay,
        Some(until),
        queue,
    )
    .await
}

async fn send<A: Agent>(
    ctx: &QueueContext,
    original: &NewMessage,
    results: &[(usize, RcptResult)],
    kind: NoticeKind,
    retry_until: Option<SystemTime>,
    queue: &Queue<A>,
) -> Result<(), NoticeError> {
    if !bounce::may_bounce(original) {
        tracing::info!(queue_id = %original.id, notice = ?kind, "no notice: the message has the null sender");
        return Ok(());
    }
    let now = SystemTime::now();
    let recipients: Vec<ReportedRecipient<'_>> = results
        .iter()
        .filter(|(i, _)| {
            original
                .recipients
                .get(*i)
                .is_some_and(|r| bounce::wants_notice(r, kind))
        })
        .map(|(i, r)| ReportedRecipient {
            index: *i,
            result: r,
            last_attempt: Some(now),
        })
        .collect();
    if recipients.is_empty() {
        return Ok(());
    }
    let Some(to) = route_sender(ctx, &original.sender).await? else {
        tracing::warn!(queue_id = %original.id, sender = %original.sender, notice = ?kind, "notice dropped: the sender cannot receive mail");
        return Ok(());
    };
    let Some(dsn) = bounce::build(&BounceInput {
        reporting_mta: &ctx.hostname,
        original,
        recipients,
        kind,
        now,
        retry_until,
    }) else {
        return Ok(());
    };
    let notice = Arc::new(NewMessage {
        id: QueueId::new(),
        received_at: now,
        client: format!("notice about {}", original.id),
        sender: String::new(),
        recipients: vec![to],
        table_version: ctx.router.snapshot().version().to_string(),
        params: dsn.mail_params(),
        body: dsn.message,
    });
    ctx.spool
        .commit_shared(Arc::clone(&notice))
        .await
        .map_err(|e| NoticeError::Spool(e.to_string()))?;
    tracing::info!(queue_id = %notice.id, about = %original.id, to = %original.sender, notice = ?kind, "notice queued");
    queue.submit_notice(notice);
    Ok(())
}

/// The sender as a spooled recipient of the notice; `None` when mail to it cannot be
/// delivered at all (unknown in our own domain, a reject route, not an address).
async fn route_sender(
    ctx: &QueueContext,
    sender: &str,
) -> Result<Option<SpooledRecipient>, NoticeError> {
    let Ok(addr) = Address::parse(sender) else {
        return Ok(None);
    };
    let resolution = ctx.router.resolve(&addr).await;
    match resolution.outcome {
        Outcome::Routed(routed) => match routed.route.kind() {
            RouteKind::Reject(_) => Ok(None),
            RouteKind::Defer(reply) => Err(NoticeError::Route {
                sender: sender.to_string(),
                reason: reply.to_string(),
            }),
            kind => {
                let tls = match kind {
                    RouteKind::Smtp { tls, .. } | RouteKind::Lmtp { tls, .. }
                        if *tls != TlsPolicy::default() =>
                    {
                        tls.to_string()
                    }
                    _ => String::new(),
                };
                Ok(Some(SpooledRecipient {
                    original: sender.to_string(),
                    deliver_to: routed.recipient.to_smtp(),
                    route: routed.route.name().to_string(),
                    route_kind: kind.to_string(),
                    provenance: routed.provenance.to_string(),
                    tls,
                    params: Vec::new(),
                }))
            }
        },
        // Not a domain of ours: relay to the sender's own MX.
        Outcome::Unrouted(Unrouted::RelayDenied) => Ok(Some(SpooledRecipient {
            original: sender.to_string(),
            deliver_to: addr.to_smtp(),
            route: "sender-mx".to_string(),
            route_kind: "smtp:(recipient domain):25".to_string(),
            provenance: "notice to a sender outside our domains".to_string(),
            tls: String::new(),
            params: Vec::new(),
        })),
        Outcome::Unrouted(Unrouted::UnknownUser) => Ok(None),
        Outcome::TempFail { reason, .. } => Err(NoticeError::Route {
            sender: sender.to_string(),
            reason,
        }),
    }
}
