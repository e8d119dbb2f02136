//! What can go wrong with the LDAP directory, in words an administrator can act on.
//!
//! Setup errors ([`LdapError::Config`], [`LdapError::File`], [`LdapError::Tls`]) stop the
//! gateway from starting with a broken directory. Every other error happens during a
//! lookup and becomes a temporary failure (`451 4.4.3`): the sending server retries, no
//! mail is bounced because the directory was down, slow or ambiguous.

use std::path::PathBuf;
use std::time::Duration;

/// An LDAP directory error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LdapError {
    /// A setting that cannot work.
    #[error("ldap: {0}")]
    Config(String),
    /// A file named in the configuration could not be used.
    #[error("ldap: {what} {path}: {error}")]
    File {
        /// Which setting (`bind_password_file`, `ca_file`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        error: String,
    },
    /// The TLS client configuration could not be built.
    #[error("ldap: TLS setup: {0}")]
    Tls(String),
    /// A server could not be reached or refused the TLS handshake.
    #[error("{server}: cannot connect: {error}")]
    Connect {
        /// The server URL.
        server: String,
        /// Why.
        error: String,
    },
    /// The server refused the bind.
    #[error("{server}: bind as '{dn}' refused: {text} (result code {rc})")]
    Bind {
        /// The server URL.
        server: String,
        /// The bind DN (empty for an anonymous bind).
        dn: String,
        /// LDAP result code.
        rc: u32,
        /// The server's message.
        text: String,
    },
    /// An open connection failed during a search.
    #[error("{server}: connection lost: {error}")]
    Connection {
        /// The server URL.
        server: String,
        /// Why.
        error: String,
    },
    /// No answer in time.
    #[error("{server}: no answer within {} ms ({during})", .after.as_millis())]
    Timeout {
        /// The server URL, or `ldap` when no server was involved yet.
        server: String,
        /// What was being waited for.
        during: &'static str,
        /// The time allowed.
        after: Duration,
    },
    /// The search failed on the server.
    #[error("{server}: search failed: {text} (result code {rc})")]
    Search {
        /// The server URL.
        server: String,
        /// LDAP result code.
        rc: u32,
        /// The server's message.
        text: String,
    },
    /// More than one entry matches the recipient: the directory must be fixed, splitmx
    /// does not guess.
    #[error("{server}: {count} entries match {filter}: ambiguous ({dns})")]
    Ambiguous {
        /// The server URL.
        server: String,
        /// The filter sent.
        filter: String,
        /// How many entries came back (at least; the size limit may have cut them off).
        count: usize,
        /// Their DNs, comma-separated (at most five).
        dns: String,
    },
    /// A routing attribute has several values.
    #[error("{server}: entry {dn}: attribute {attribute} has {count} values, expected one")]
    MultiValued {
        /// The server URL.
        server: String,
        /// The entry.
        dn: String,
        /// The attribute.
        attribute: String,
        /// How many values.
        count: usize,
    },
    /// The server sent an entry splitmx cannot read.
    #[error("{server}: malformed search result entry")]
    Malformed {
        /// The server URL.
        server: String,
    },
    /// Every server failed; each one's error is listed.
    #[error("no LDAP server answered: {0}")]
    AllServersFailed(String),
}

impl LdapError {
    /// True when the connection, not the query, failed: a pooled connection that fails
    /// this way is replaced and the query sent again once.
    pub(crate) fn is_connection(&self) -> bool {
        matches!(self, LdapError::Connection { .. })
    }
}
