//! The recipient journal: which recipients the gateway accepted mail for recently, on
//! which route, how often, first and last seen. It is what `splitmx report` (migration
//! progress) and `splitmx diff` (which recipients a table change moves) read.
//!
//! # What is recorded
//!
//! After the spool has committed a message, the SMTP session records one message for
//! each of its recipients: the recipient's matching key (case-folded `local@domain`), the
//! route name and what the route does (`smtp:[legacy.example]:25`). Refused recipients and
//! failed transactions are not recorded. Recording touches only memory (a mutex around a
//! hash map); a background task writes it out every `flush_interval` (60 s) and at
//! shutdown, so a crash loses at most one interval of counts, never a file.
//!
//! # On disk
//!
//! `<spool>/journal/YYYY-MM-DD.tsv`, one file per UTC day, one line per (recipient,
//! route) with tab-separated fields: recipient, route, kind, messages, first seen, last
//! seen (UTC, `2024-05-01T07:02:11Z`); `#` lines are comments. See [`format`] for the
//! details. The files are plain text on purpose: `grep`, `sort` and `awk` work on them,
//! and a test or an import can write one by hand. Files older than `days` (30) are
//! deleted; at most `max_recipients` (1,000,000) distinct recipients are kept per day, the
//! rest are counted ([`Journal::overflow`]) and logged once.
//!
//! # Settings
//!
//! ```yaml
//! journal:
//!   enabled: true
//!   days: 30
//!   max_recipients: 1000000
//!   flush_interval: 60s
//! ```
//!
//! The reading side ([`load`], [`JournalView`]) needs no server and no async runtime; the
//! writing side ([`Journal`]) is part of the `server` feature.

pub mod day;
pub mod format;
pub mod read;

#[cfg(feature = "server")]
mod config;
#[cfg(feature = "server")]
mod recorder;
#[cfg(feature = "server")]
mod store;
#[cfg(feature = "server")]
mod writer;

use std::path::{Path, PathBuf};

pub use day::Day;
pub use format::{JournalError, Row};
pub use read::{JournalView, Period, RecipientHistory, RouteUse, load, recipient_address};

#[cfg(feature = "server")]
pub use config::JournalConfig;
#[cfg(feature = "server")]
pub use store::FlushReport;
#[cfg(feature = "server")]
pub use writer::Journal;

/// The journal directory of a spool directory: `<spool>/journal`.
pub fn journal_dir(spool: &Path) -> PathBuf {
    spool.join("journal")
}
