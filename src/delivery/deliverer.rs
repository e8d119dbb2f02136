//! The gateway's delivery agent: SMTP and LMTP to next hops found through DNS (never to
//! the gateway itself), and Maildir for local mailboxes.

use std::sync::atomic::{AtomicU64, Ordering};

use super::client::{ClientError, ClientSettings, Connection, Protocol};
use super::maildir::Maildir;
use super::mx::{MxError, Resolver, SelfGuard};
use super::queue::Agent;
use super::{HopKey, NextTransaction, RcptResult, ResultKind, Transaction};
use crate::config::GatewayConfig;
use crate::routing::address::Address;

/// Why delivery cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DelivererError {
    /// The outbound TLS settings (CA file) are unusable.
    #[error("delivery TLS settings: {0}")]
    Client(#[from] ClientError),
    /// The DNS resolver cannot be set up.
    #[error("delivery DNS settings: {0}")]
    Dns(#[from] MxError),
}

/// Delivers over SMTP, LMTP and into Maildir folders.
pub struct Deliverer {
    settings: ClientSettings,
    resolver: Resolver,
    guard: SelfGuard,
    maildir: Maildir,
    self_loops: AtomicU64,
}

impl Deliverer {
    /// Builds the agent from the gateway configuration.
    pub fn new(config: &GatewayConfig) -> Result<Deliverer, DelivererError> {
        let settings = ClientSettings::new(&config.delivery, &config.hostname)?;
        let resolver = Resolver::new(&config.delivery)?;
        let delimiters = config.routing.recipient_delimiter().to_string();
        Ok(Deliverer {
            settings,
            resolver,
            guard: SelfGuard::new(&config.hostname, &config.listen),
            maildir: Maildir::new(&config.mail, &config.hostname, &delimiters),
            self_loops: AtomicU64::new(0),
        })
    }

    /// Recipients deferred because their next hop is this gateway.
    pub fn self_loops(&self) -> u64 {
        self.self_loops.load(Ordering::Relaxed)
    }

    async fn maildir(&self, template: &str, tx: &Transaction<'_>) -> Vec<RcptResult> {
        let mut results = Vec::with_capacity(tx.recipients.len());
        for r in tx.recipients {
            let result = match Address::parse(r.address) {
                Err(e) => RcptResult::local(
                    ResultKind::Bounced,
                    "5.1.3",
                    format!("bad recipient address {:?}: {e}", r.address),
                ),
                Ok(addr) => match self.maildir.mailbox(template, &addr) {
                    Err(e) => e.rcpt_result(),
                    // Written in place (the body is borrowed from the queue): the write
                    // and its fsyncs block this worker thread only.
                    Ok(mailbox) => match tokio::task::block_in_place(|| {
                        self.maildir.deliver(&mailbox, tx.body)
                    }) {
                        Ok(path) => super::maildir::delivered(&path),
                        Err(e) => e.rcpt_result(),
                    },
                },
            };
            results.push(result);
        }
        results
    }
}

impl Agent for Deliverer {
    type Session = Connection;

    async fn deliver<'a>(
        &'a self,
        hop: &'a HopKey,
        session: &'a mut Option<Connection>,
        tx: &'a Transaction<'a>,
        next: &'a mut dyn NextTransaction,
    ) -> Vec<RcptResult> {
        let all = |r: RcptResult| vec![r; tx.recipients.len()];
        let (protocol, next_hop, tls) = match hop {
            HopKey::Maildir { template } => return self.maildir(template, tx).await,
            HopKey::Smtp { next_hop, tls } => (Protocol::Smtp, next_hop, *tls),
            HopKey::Lmtp { next_hop, tls } => (Protocol::Lmtp, next_hop, *tls),
        };
        if let Some(conn) = session.as_mut() {
            if conn.is_ready_for(tx) {
                return conn.deliver_taking(tx, next).await;
            }
            if let Some(old) = session.take() {
                old.quit().await;
            }
        }
        let domain = tx
            .recipients
            .first()
            .and_then(|r| r.address.rsplit_once('@'))
            .map_or("", |(_, d)| d);
        let peers = match self.resolver.peers(next_hop, domain).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(next_hop = %hop, error = %e.detail, "next hop lookup failed");
                return all(e.result());
            }
        };
        let mut last_error = None;
        let mut looped = None;
        for peer in &peers {
            // RFC 5321 5.1: hosts at our own preference or worse are not tried; the
            // list is in preference order, so stop at the first that is us.
            if self.guard.is_self(peer) {
                tracing::error!(next_hop = %hop, peer = %peer, "next hop is this gateway itself; not connecting (mail loop)");
                looped = Some(peer.clone());
                break;
            }
            match Connection::open(peer, protocol, tls, &self.settings).await {
                Ok(mut conn) => {
                    let results = conn.deliver_taking(tx, next).await;
                    *session = Some(conn);
                    return results;
                }
                Err(e) => {
                    tracing::info!(next_hop = %hop, peer = %peer, error = %e.detail, "cannot connect; trying the next address");
                    last_error = Some(e);
                }
            }
        }
        match (last_error, looped) {
            (Some(e), _) => all(e.result()),
            (None, Some(peer)) => {
                self.self_loops
                    .fetch_add(tx.recipients.len() as u64, Ordering::Relaxed);
                crate::metrics::metrics().self_loops(tx.recipients.len() as u64);
                all(self.guard.result(&peer))
            }
            (None, None) => all(RcptResult::local(
                ResultKind::Deferred,
                "4.4.4",
                format!("{hop}: no address to connect to"),
            )),
        }
    }

    async fn close(&self, session: Connection) {
        session.quit().await;
    }
}
