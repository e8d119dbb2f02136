//! The routing core: from an envelope recipient to a route, with provenance.
//!
//! This module does no network I/O and depends on nothing of the SMTP server, spool,
//! queue or delivery; it compiles with `default-features = false`. Its parts, in the
//! order mail meets them:
//!
//! - [`address`]: parse and normalise envelope addresses (RFC 5321/6531, IDNA).
//! - [`route`]: routes, next hops, replies, rewrites; Postfix transport(5) syntax.
//! - [`table`]: read and validate the YAML tables (errors with file:line:column).
//! - [`snapshot`]: the immutable, merged lookup structure.
//! - [`resolve`]: the lookup order and its provenance.
//! - [`directory`]: the directory-source interface (LDAP implements it elsewhere).
//! - [`router`]: the snapshot behind `arc-swap`, and reload.
//! - [`watch`]: reload triggers (directory watcher, SIGHUP).
//! - [`hops`]: loop rules: hop counting and the gateway's own stamps.
//! - [`config`]: what the core needs to know about the gateway.

pub mod address;
pub mod config;
pub mod directory;
pub mod hops;
mod recipient_lines;
pub mod resolve;
pub mod route;
pub mod router;
pub mod snapshot;
pub mod table;
pub mod version;
pub mod watch;
