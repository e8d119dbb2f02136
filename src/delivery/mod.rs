//! Delivery: getting every spooled message to its next hop, and telling the sender when
//! that finally fails.
//!
//! The parts, in the order a message meets them (Postfix's qmgr / smtp / lmtp / local /
//! bounce split):
//!
//! - `queue`: the queue manager. Reads the spool, groups recipients by next hop (one
//!   copy per next hop), limits concurrency, retries with backoff, expires, and records
//!   every recipient's outcome in the spool before it forgets it.
//! - `mx`: turns a next hop into an ordered list of addresses (MX preference, then
//!   A/AAAA), and refuses addresses that are the gateway itself.
//! - `client`: the SMTP and LMTP client, with STARTTLS and PIPELINING, giving one
//!   result per recipient.
//! - `maildir`: local delivery into Maildir folders.
//! - `bounce`: RFC 3464 delivery status notifications.
//! - `control`: the socket through which `splitmx queue` changes a running queue.
//!
//! Everything here works on one [`Transaction`]: a message's bytes and the recipients that
//! share a next hop, and answers with one [`RcptResult`] per recipient.

pub mod bounce;
pub mod client;
mod config;
pub mod control;
mod deliverer;
mod hop;
pub mod maildir;
pub mod mx;
mod peer;
pub mod queue;
pub mod retry;
mod transaction;

pub use config::DeliveryConfig;
pub use deliverer::{Deliverer, DelivererError};
pub use hop::{HopError, HopKey};
pub use peer::{Endpoint, Peer};
pub use transaction::{NextTransaction, RcptResult, ResultKind, Transaction, TxRecipient};
