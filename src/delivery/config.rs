//! Settings of delivery: concurrency, timeouts, retry schedule, DNS and outbound TLS.
//! Read from the `delivery:` section of the gateway configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// How splitmx delivers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Deliver queued mail. `false` only accepts and queues (a maintenance switch: the
    /// spool keeps everything until the gateway runs with delivery on again).
    pub enabled: bool,
    /// Simultaneous delivery transactions in total.
    pub max_connections: usize,
    /// Simultaneous transactions to one next hop.
    pub max_per_next_hop: usize,
    /// Most recipients in one transaction (more are split into several copies).
    pub max_recipients_per_transaction: usize,
    /// Time allowed to connect to one address.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub connect_timeout: Duration,
    /// Time allowed for each reply to a command (RFC 5321 §4.5.3.2 suggests 5 minutes).
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub command_timeout: Duration,
    /// Time allowed for sending the message and getting the reply to the final dot.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub data_timeout: Duration,
    /// How long a job may wait for a busy connection to its next hop, to go out behind
    /// its message (one round trip less) rather than on an idle or new connection. Only
    /// while that next hop's transactions take no longer than this; `0s` sends every job
    /// on a free connection at once, up to `max_per_next_hop`.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub wait_for_busy_connection: Duration,
    /// How long an idle connection to a next hop is kept open for reuse.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub idle_timeout: Duration,
    /// First retry delay after a temporary failure; doubled on each further failure.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub retry_min: Duration,
    /// Longest retry delay.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub retry_max: Duration,
    /// How long a message may stay in the queue before its undelivered recipients bounce.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub lifetime: Duration,
    /// Send a "delayed" notice after this long in the queue; `0s` sends none.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub delay_warning: Duration,
    /// DNS servers for MX and address lookups; empty uses the system's resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// Extra CA certificates (PEM) trusted by `tls: verify` routes, besides the webpki roots.
    pub tls_ca_file: Option<PathBuf>,
    /// The name splitmx gives in EHLO/LHLO; the gateway's host name when unset.
    pub helo_name: Option<String>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            enabled: true,
            max_connections: 100,
            max_per_next_hop: 20,
            max_recipients_per_transaction: 100,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            wait_for_busy_connection: Duration::from_millis(20),
            idle_timeout: Duration::from_secs(5),
            retry_min: Duration::from_secs(60),
            retry_max: Duration::from_secs(4 * 3600),
            lifetime: Duration::from_secs(5 * 24 * 3600),
            delay_warning: Duration::from_secs(4 * 3600),
            nameservers: Vec::new(),
            tls_ca_file: None,
            helo_name: None,
        }
    }
}

impl DeliveryConfig {
    /// Make a relative CA file path relative to `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = &mut self.tls_ca_file
            && p.is_relative()
        {
            *p = base.join(&*p);
        }
    }
}
