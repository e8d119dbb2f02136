//! Settings of the SMTP front end: limits (RFC 5321 §4.5.3 and resource bounds), timeouts
//! and the TLS certificate. Read from the `smtp:` section of the gateway configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Limits and timeouts of the SMTP front end.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Longest command line, including CRLF (RFC 5321: 512).
    pub max_command_line: usize,
    /// Longest text line in DATA, including CRLF (RFC 5321: 1000); 0 accepts any length.
    pub max_text_line: usize,
    /// Largest message accepted, in bytes (announced with SIZE).
    pub max_message_size: usize,
    /// Recipients per message; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Simultaneous connections in total; more get `421 4.7.0`.
    pub max_connections: usize,
    /// Simultaneous connections from one client IP address.
    pub max_connections_per_ip: usize,
    /// Errors (4xx/5xx replies to bad commands) tolerated before the session is closed.
    pub max_errors: usize,
    /// Time allowed for one command line (RFC 5321: 5 minutes).
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub command_timeout: Duration,
    /// Time allowed for a whole DATA transfer.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub data_timeout: Duration,
    /// Time allowed to finish open transactions on shutdown.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub shutdown_grace: Duration,
    /// TLS certificate chain (PEM) for STARTTLS; STARTTLS is offered only with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            max_command_line: 512,
            max_text_line: 1000,
            max_message_size: 32 * 1024 * 1024,
            max_recipients: 1000,
            max_connections: 1000,
            max_connections_per_ip: 20,
            max_errors: 20,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(30),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl SmtpConfig {
    /// Make relative certificate paths relative to `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.tls_cert, &mut self.tls_key]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}
