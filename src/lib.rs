//! splitmx: a split-delivery SMTP routing gateway.
//!
//! splitmx is the single MX of a domain whose mailboxes live on more than one platform,
//! usually during a migration (on-premises Postfix/Dovecot or Exchange on one side,
//! Microsoft 365 or Google Workspace on the other). For every recipient it decides where
//! the mailbox lives and gets the message there.
//!
//! This crate holds the whole gateway. Its heart, the [`routing`] module, resolves an
//! envelope recipient to a [`Route`] and compiles without the SMTP server
//! (`default-features = false`), so an MTA can embed it:
//!
//! ```
//! use splitmx::{Address, Outcome, RoutingConfig, Router};
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("example.com.yaml"), "
//! routes:
//!   m365: smtp:[example-com.mail.protection.outlook.com]:25
//! domains: [example.com]
//! default: m365
//! ").unwrap();
//!
//! let router = Router::load(RoutingConfig::new(dir.path())).unwrap();
//! let rcpt = Address::parse("Alice@Example.COM").unwrap();
//! match router.resolve_tables(&rcpt).outcome {
//!     Outcome::Routed(routed) => assert_eq!(routed.route.name(), "m365"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod config;
#[cfg(any(feature = "server", feature = "ldap"))]
mod duration;
pub mod import;
pub mod journal;
pub mod routing;

#[cfg(feature = "server")]
pub mod delivery;
#[cfg(feature = "ldap")]
pub mod ldap;
#[cfg(any(feature = "server", feature = "ldap"))]
pub mod metrics;
#[cfg(feature = "server")]
pub mod smtp;
#[cfg(feature = "server")]
pub mod spool;

#[cfg(feature = "cli")]
pub mod cli;

// The public interface: what embedders use, re-exported in one place.
pub use config::{ConfigError, GatewayConfig};
pub use routing::address::{Address, AddressError};
pub use routing::config::RoutingConfig;
pub use routing::directory::{Directory, DirectoryAnswer, DirectoryEntry, DirectoryFuture};
pub use routing::hops::{HopCount, HopCounter, LoopError, LoopPolicy};
pub use routing::resolve::{Outcome, Provenance, Resolution, Routed, Step, Unrouted};
pub use routing::route::{NextHop, Reply, Route, RouteKind, TlsPolicy};
pub use routing::router::{ReloadError, ReloadOutcome, Router};
pub use routing::snapshot::{Snapshot, TableVersion};
pub use routing::table::{TableError, TableErrors};
