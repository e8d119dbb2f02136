//! What the spool stores and reports: the envelope and body handed to `commit`, the
//! summary `list` and `scan` return, and message and recipient states.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::SystemTime;

use super::id::QueueId;

/// A message to store: everything the delivery side needs, exactly as accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The queue id (made with [`QueueId::new`] before the `Received:` field was written).
    pub id: QueueId,
    /// When the message was accepted. Stored with microsecond precision.
    pub received_at: SystemTime,
    /// The client, e.g. `[192.0.2.1]:52100 (helo.example)`.
    pub client: String,
    /// The reverse path without `<>`; empty for the null sender.
    pub sender: String,
    /// The recipients, each with its resolved route.
    pub recipients: Vec<SpooledRecipient>,
    /// The routing table version used to resolve the recipients.
    pub table_version: String,
    /// The message exactly as it is to be delivered (our `Received:` prepended), CRLF
    /// line ends, any bytes.
    pub body: Vec<u8>,
    /// MAIL FROM parameters kept (`BODY=8BITMIME`, `SMTPUTF8`, `RET`, `ENVID`); a
    /// parameter without a value has an empty value.
    pub params: Vec<(String, String)>,
}

/// One recipient of a spooled message and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpooledRecipient {
    /// The address as the client gave it in RCPT TO.
    pub original: String,
    /// The address to deliver to (after any rewrite).
    pub deliver_to: String,
    /// The route's name.
    pub route: String,
    /// The route's transport and next hop, e.g. `smtp:[host]:25`.
    pub route_kind: String,
    /// Why this route was chosen (table and entry).
    pub provenance: String,
    /// The route's outbound TLS policy (`opportunistic`, `required`, `verify`); empty for
    /// the default (opportunistic) and for routes that do not connect anywhere.
    pub tls: String,
    /// RCPT TO parameters kept (`NOTIFY`, `ORCPT`).
    pub params: Vec<(String, String)>,
}

/// A message read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Where it is and what state it is in.
    pub info: MessageInfo,
    /// Envelope and body, as committed.
    pub envelope: NewMessage,
}

/// The messages still to deliver to one next hop (see [`crate::spool::Spool::backlog`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHopBacklog {
    /// The next hop, as spooled for each recipient (e.g. `smtp:[192.0.2.1]:25`).
    pub next_hop: String,
    /// Messages with at least one recipient for it not yet delivered or bounced
    /// (held messages included).
    pub messages: u64,
    /// When the oldest of them was received.
    pub oldest: SystemTime,
}

/// A summary of one spooled message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MessageInfo {
    /// The queue id.
    pub id: QueueId,
    /// When it was accepted.
    pub received_at: SystemTime,
    /// The reverse path, empty for the null sender.
    pub sender: String,
    /// The recipients as given in RCPT TO.
    pub recipients: Vec<String>,
    /// Each recipient's route kind and next hop (e.g. `smtp:[192.0.2.1]:25`), in the
    /// order of `recipients`.
    pub next_hops: Vec<String>,
    /// Size of the body in bytes.
    pub size: u64,
    /// The message's state.
    pub state: MessageState,
    /// Per-recipient state, in the order of `recipients`.
    pub recipient_status: Vec<RecipientStatus>,
    /// When its state last changed (a delivery attempt's results, hold, release); `None`
    /// while it is as accepted. The queue manager resumes its retry schedule from it
    /// after a restart.
    pub changed_at: Option<SystemTime>,
    /// The segment file holding the message.
    pub segment: PathBuf,
    /// Byte offset of the message's record in the segment.
    pub offset: u64,
}

/// The state of a spooled message. The final states (delivered, bounced, deleted) are
/// not listed, and their space is reclaimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// Waiting for delivery (the state after `commit`).
    Queued,
    /// Kept back by an administrator until released (marked `Queued` again).
    Held,
    /// Delivered to every recipient (final).
    Delivered,
    /// Given up on; the sender was told where there was one to tell (final).
    Bounced,
    /// Removed by an administrator (final).
    Deleted,
}

impl MessageState {
    /// Whether the state is final: delivered, bounced or deleted.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            MessageState::Delivered | MessageState::Bounced | MessageState::Deleted
        )
    }

    /// The lower-case name, as written in the spool.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Queued => "queued",
            MessageState::Held => "held",
            MessageState::Delivered => "delivered",
            MessageState::Bounced => "bounced",
            MessageState::Deleted => "deleted",
        }
    }
}

impl fmt::Display for MessageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "queued" => MessageState::Queued,
            "held" => MessageState::Held,
            "delivered" => MessageState::Delivered,
            "bounced" => MessageState::Bounced,
            "deleted" => MessageState::Deleted,
            other => return Err(format!("unknown message state {other:?}")),
        })
    }
}

/// The delivery state of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientState {
    /// Not tried yet.
    #[default]
    Pending,
    /// Tried; failed temporarily; will be retried.
    Deferred,
    /// Delivered (final).
    Delivered,
    /// Failed permanently or expired (final).
    Bounced,
}

impl RecipientState {
    /// Whether the state is final.
    pub fn is_final(self) -> bool {
        matches!(self, RecipientState::Delivered | RecipientState::Bounced)
    }

    /// The lower-case name, as written in the spool.
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientState::Pending => "pending",
            RecipientState::Deferred => "deferred",
            RecipientState::Delivered => "delivered",
            RecipientState::Bounced => "bounced",
        }
    }
}

impl FromStr for RecipientState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "pending" => RecipientState::Pending,
            "deferred" => RecipientState::Deferred,
            "delivered" => RecipientState::Delivered,
            "bounced" => RecipientState::Bounced,
            other => return Err(format!("unknown recipient state {other:?}")),
        })
    }
}

/// One recipient's state and the last reply or error about it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct RecipientStatus {
    /// The state.
    pub state: RecipientState,
    /// The last reply or error (e.g. `451 4.4.1 connection timed out`); empty if none.
    pub detail: String,
}

/// A change to one recipient's state, for [`Spool::mark_recipients`](super::Spool::mark_recipients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientUpdate {
    /// Index of the recipient in [`NewMessage::recipients`].
    pub index: usize,
    /// The new state.
    pub state: RecipientState,
    /// The reply or error that led to it.
    pub detail: String,
}
