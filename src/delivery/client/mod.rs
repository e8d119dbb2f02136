//! The SMTP and LMTP client: delivers a [`Transaction`] to one [`Peer`] and answers with
//! one [`RcptResult`] per recipient.
//!
//! A [`Connection`] is opened to a peer (greeting, EHLO or LHLO, STARTTLS as the route's
//! [`TlsPolicy`] says, EHLO again), then carries any number of transactions, each
//! pipelined (RFC 2920) when the peer offers it, and is closed with QUIT. The caller (the
//! queue manager) picks peers, retries and records results; this module only talks.
//!
//! Failure modes, as the caller sees them:
//! - the peer cannot be reached, refuses the session (greeting or EHLO 4xx/5xx), or TLS
//!   cannot be had as the policy demands: [`Connection::open`] gives a [`ConnectError`]
//!   and the caller tries the next peer. With opportunistic TLS a STARTTLS that the peer
//!   refuses continues in plain text, but a failed handshake is a `4.7.5` error (the
//!   session cannot be resumed in plain text; Postfix instead retries in plain text the
//!   next time);
//! - the peer rejects the sender, a recipient, or the message: that recipient's result
//!   carries the reply (4xx deferred, 5xx bounced);
//! - the connection breaks, a reply times out, or a reply is malformed: every recipient
//!   not yet decided is deferred (`4.4.2`, `4.5.0` for a malformed reply) and the
//!   connection is not reused.

mod connect;
mod ehlo;
mod failure;
mod reply;
mod stream;
mod stuffing;
mod tls;
mod transaction;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

pub use reply::{MAX_LINE, MAX_LINES, Reply, ReplyDecoder, ReplyError};
pub use stuffing::{DotStuffer, Pieces};

use super::{DeliveryConfig, Peer, RcptResult, ResultKind, Transaction};
#[cfg(doc)]
use crate::TlsPolicy;
use ehlo::Capabilities;
use stream::Wire;

/// Which dialect to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// SMTP (RFC 5321): EHLO, one reply after the message.
    Smtp,
    /// LMTP (RFC 2033): LHLO, one reply per accepted recipient after the message.
    Lmtp,
}

/// What every connection needs: the name to greet with, time limits and TLS
/// configurations. Built once, shared by all deliveries.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The name given in EHLO, HELO and LHLO.
    pub helo_name: String,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed for each reply (and the TLS handshake).
    pub command_timeout: Duration,
    /// Time allowed to send the message and get the reply to the final dot.
    pub data_timeout: Duration,
    /// For `tls: verify`: webpki roots plus the configured extra CA file.
    pub verifying_tls: Arc<ClientConfig>,
    /// For opportunistic and required TLS: any certificate is accepted.
    pub any_certificate_tls: Arc<ClientConfig>,
}

impl ClientSettings {
    /// Settings from the `delivery:` configuration; `hostname` is the gateway's host
    /// name, used in EHLO unless `helo_name` is set.
    pub fn new(config: &DeliveryConfig, hostname: &str) -> Result<ClientSettings, ClientError> {
        let helo_name = config.helo_name.as_deref().unwrap_or(hostname).to_string();
        if helo_name.is_empty()
            || helo_name
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || !b.is_ascii())
        {
            return Err(ClientError::HeloName(helo_name));
        }
        Ok(ClientSettings {
            helo_name,
            connect_timeout: config.connect_timeout,
            command_timeout: config.command_timeout,
            data_timeout: config.data_timeout,
            verifying_tls: tls::verifying_config(config.tls_ca_file.as_deref())?,
            any_certificate_tls: tls::any_certificate_config()?,
        })
    }
}

/// The client cannot be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `delivery.tls_ca_file` cannot be read or holds no usable certificate.
    #[error("delivery.tls_ca_file {}: {reason}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("outbound TLS configuration: {0}")]
    Tls(String),
    /// The EHLO name is empty or not printable ASCII without spaces.
    #[error("delivery.helo_name {0:?}: must be a host name (printable ASCII, no spaces)")]
    HeloName(String),
}

/// A peer could not be used: unreachable, refused the session, or could not give the
/// TLS the policy requires. The caller tries the next peer or defers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct ConnectError {
    /// Whether this is a temporary failure (always, except a 5xx greeting or EHLO/HELO
    /// reply, which the caller may still treat as temporary when other peers remain).
    pub temporary: bool,
    /// Enhanced status code: the reply's, or `4.4.1` (connect), `4.4.2` (lost or timed
    /// out), `4.5.0` (malformed reply), `4.7.4` (TLS not offered or refused), `4.7.5`
    /// (TLS handshake or certificate failure).
    pub status: String,
    /// One line: `connect to mx1.example.com[192.0.2.1]:25: Connection refused`, or the
    /// peer's reply when `remote_reply`.
    pub detail: String,
    /// Whether `detail` is the peer's reply.
    pub remote_reply: bool,
    /// The peer (`mx1.example.com[192.0.2.1]:25`) when a connection was made.
    pub remote: Option<String>,
}

impl ConnectError {
    /// The result to record for every recipient when no other peer is left.
    pub fn result(&self) -> RcptResult {
        let kind = if self.temporary {
            ResultKind::Deferred
        } else {
            ResultKind::Bounced
        };
        let mut r = RcptResult::local(kind, &self.status, &*self.detail);
        r.remote = self.remote.clone();
        r.remote_reply = self.remote_reply;
        r
    }
}

/// Where a connection stands between transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Ready for MAIL.
    Ready,
    /// A transaction may still be open at the peer: send RSET before the next MAIL.
    NeedsReset,
    /// The commands of the next transaction (MAIL, RCPT, DATA) went out behind the
    /// previous message (RFC 2920 §3.1), their replies not yet read; the number
    /// identifies that transaction, and only it may come next.
    Pipelined(u64),
    /// Out of step with the peer or closed: not to be used again.
    Broken,
}

/// An open session with one peer, after the greeting, EHLO/LHLO and any STARTTLS.
#[derive(Debug)]
pub struct Connection {
    wire: Wire,
    peer: Peer,
    /// `peer` as text, for results and logs.
    remote: String,
    protocol: Protocol,
    caps: Capabilities,
    tls_used: bool,
    command_timeout: Duration,
    data_timeout: Duration,
    state: State,
}

/// Longest wait for the reply to QUIT: the message is delivered by then.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

impl Connection {
    /// Whether another transaction may be sent on this connection.
    pub fn is_reusable(&self) -> bool {
        self.state != State::Broken
    }

    /// Whether `tx` may be delivered on this connection next: it is usable, and if a
    /// transaction was sent ahead, it is `tx`.
    pub fn is_ready_for(&self, tx: &Transaction<'_>) -> bool {
        match self.state {
            State::Ready | State::NeedsReset => true,
            State::Pipelined(key) => key == transaction::key(tx),
            State::Broken => false,
        }
    }

    /// Say QUIT (when the connection is still in step) and close. A connection with a
    /// transaction sent ahead is only closed: after its DATA, QUIT would be message
    /// text, and a close before the final dot makes the peer drop the transaction.
    pub async fn quit(mut self) {
        let limit = self.command_timeout.min(QUIT_TIMEOUT);
        if matches!(self.state, State::Ready | State::NeedsReset) {
            self.wire.queue(b"QUIT\r\n");
            if self.wire.flush_within(limit).await.is_ok() {
                let _ = self.wire.reply(limit).await;
            }
        }
        self.wire.shutdown(limit).await;
    }

    /// The peer this connection talks to.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Whether the session runs over TLS (STARTTLS succeeded).
    pub fn tls_used(&self) -> bool {
        self.tls_used
    }
}
