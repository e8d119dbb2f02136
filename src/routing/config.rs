//! What the routing core needs to know about the gateway it serves.
//!
//! [`RoutingConfig`] names the directory of routing tables and the facts that validation
//! and lookup depend on: the gateway's own host name and listening addresses (so a route
//! back to the gateway itself is caught as a loop), the address-extension delimiters, and
//! the bounds on table input. It is plain data; loading it from the gateway's YAML config
//! file is the job of [`crate::config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Largest routing table file accepted by default (bytes).
pub const DEFAULT_MAX_TABLE_BYTES: u64 = 256 * 1024 * 1024;

/// How a [`crate::Router`] finds and checks its routing tables.
///
/// ```
/// use splitmx::RoutingConfig;
///
/// let config = RoutingConfig::new("routing")
///     .with_hostname("mx.example.com")
///     .with_recipient_delimiter("+-");
/// assert_eq!(config.recipient_delimiter(), "+-");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingConfig {
    dir: PathBuf,
    hostname: String,
    local_addresses: Vec<SocketAddr>,
    recipient_delimiter: String,
    max_table_bytes: u64,
}

impl RoutingConfig {
    /// Tables in `dir`, host name `localhost`, delimiter `+`, default limits.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RoutingConfig {
            dir: dir.into(),
            hostname: "localhost".to_string(),
            local_addresses: Vec::new(),
            recipient_delimiter: "+".to_string(),
            max_table_bytes: DEFAULT_MAX_TABLE_BYTES,
        }
    }

    /// The gateway's own host name (lower-cased): a route to it is a mail loop.
    pub fn with_hostname(mut self, hostname: &str) -> Self {
        self.hostname = hostname.trim_end_matches('.').to_ascii_lowercase();
        self
    }

    /// The addresses the gateway listens on: a route to one of them is a mail loop.
    pub fn with_local_addresses(mut self, addrs: Vec<SocketAddr>) -> Self {
        self.local_addresses = addrs;
        self
    }

    /// Address-extension delimiters; each character is one (`"+-"` like Postfix's
    /// `recipient_delimiter`). Empty turns extension stripping off.
    pub fn with_recipient_delimiter(mut self, delimiters: &str) -> Self {
        self.recipient_delimiter = delimiters.to_string();
        self
    }

    /// Largest table file accepted, in bytes.
    pub fn with_max_table_bytes(mut self, max: u64) -> Self {
        self.max_table_bytes = max;
        self
    }

    /// The routing table directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The gateway's own host name.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The gateway's listening addresses.
    pub fn local_addresses(&self) -> &[SocketAddr] {
        &self.local_addresses
    }

    /// Address-extension delimiters.
    pub fn recipient_delimiter(&self) -> &str {
        &self.recipient_delimiter
    }

    /// Largest table file accepted, in bytes.
    pub fn max_table_bytes(&self) -> u64 {
        self.max_table_bytes
    }
}
