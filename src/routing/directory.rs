//! The directory source: where the routing core asks "where does this mailbox live" when
//! the tables have no entry for the address itself.
//!
//! This module only defines the interface. The LDAP implementation lives in its own module;
//! [`StaticDirectory`] is an in-memory source for tests and for embedders with their own
//! store. A lookup has four outcomes (found, not found, temporary error, configuration
//! error) and an error never falls through to a default route: the router answers
//! `451 4.4.3` so the sending server tries again later.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

use super::address::Address;
use super::resolve::Step;

/// The future a [`Directory`] lookup returns.
pub type DirectoryFuture<'a> = Pin<Box<dyn Future<Output = DirectoryAnswer> + Send + 'a>>;

/// The future [`Directory::lookup_explained`] returns: the answer and the steps taken.
pub type ExplainedFuture<'a> =
    Pin<Box<dyn Future<Output = (DirectoryAnswer, Vec<Step>)> + Send + 'a>>;

/// A source of per-recipient routing facts, such as an LDAP directory.
///
/// The router calls [`Directory::scope`] first (synchronously, so a domain the directory
/// does not know costs nothing) and [`Directory::lookup`] only for domains in scope.
pub trait Directory: Send + Sync {
    /// Whether and how the directory answers for `domain` (lower-case A-labels).
    fn scope(&self, domain: &str) -> DirectoryScope;

    /// Look up one recipient.
    fn lookup<'a>(&'a self, rcpt: &'a Address) -> DirectoryFuture<'a>;

    /// Look up one recipient and say how, for `splitmx explain`: the answer and the
    /// directory's own steps (server asked, query sent, cache hit or miss). The default
    /// is [`Directory::lookup`] with no steps.
    fn lookup_explained<'a>(&'a self, rcpt: &'a Address) -> ExplainedFuture<'a> {
        Box::pin(async move { (self.lookup(rcpt).await, Vec::new()) })
    }

    /// A short name for logs and `explain`, e.g. `ldap://ldap1.example.com`.
    fn name(&self) -> &str;
}

/// How a directory relates to a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryScope {
    /// The directory knows nothing of this domain: skip it.
    None,
    /// Ask the directory; when it has no entry, go on to the domain's default route.
    Consult,
    /// The directory is the truth for this domain: no entry means no such user (550 5.1.1).
    Authoritative,
}

/// The outcome of a directory lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
#[non_exhaustive]
pub enum DirectoryAnswer {
    /// One entry found.
    Found(DirectoryEntry),
    /// No entry for this recipient.
    NotFound,
    /// The directory could not answer now (down, timed out, ambiguous): defer, never bounce.
    TempError {
        /// What went wrong, for the log.
        reason: String,
    },
}

/// The routing facts of one directory entry, after the LDAP mail-routing draft
/// (`mailHost`, `mailRoutingAddress`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DirectoryEntry {
    /// The entry's identity for provenance (an LDAP DN).
    pub dn: String,
    /// The host that holds the mailbox (`mailHost`): mapped to a named route through the
    /// tables' `mail_hosts`, otherwise relayed to over SMTP with MX lookup.
    pub mail_host: Option<String>,
    /// The address to deliver to instead (`mailRoutingAddress`).
    pub routing_address: Option<String>,
    /// Whether this answer came from a cache, and how fresh it is (for `explain`).
    pub cache: Option<String>,
}

/// An in-memory directory: a fixed map from recipient key to entry.
///
/// ```
/// use splitmx::routing::directory::{StaticDirectory, DirectoryScope};
/// use splitmx::DirectoryEntry;
///
/// let mut dir = StaticDirectory::new("static", ["example.com"], DirectoryScope::Authoritative);
/// dir.insert("alice@example.com", DirectoryEntry {
///     dn: "uid=alice,ou=people,dc=example,dc=com".into(),
///     mail_host: Some("outlook.example".into()),
///     ..Default::default()
/// });
/// ```
#[derive(Debug, Clone, Default)]
pub struct StaticDirectory {
    name: String,
    domains: Vec<String>,
    scope: Option<DirectoryScope>,
    entries: HashMap<String, DirectoryAnswer>,
}

impl StaticDirectory {
    /// A directory serving `domains` with the given scope.
    pub fn new<'a>(
        name: &str,
        domains: impl IntoIterator<Item = &'a str>,
        scope: DirectoryScope,
    ) -> Self {
        StaticDirectory {
            name: name.to_string(),
            domains: domains.into_iter().map(str::to_ascii_lowercase).collect(),
            scope: Some(scope),
            entries: HashMap::new(),
        }
    }

    /// Add an entry for a recipient key (`local@domain`, lower case).
    pub fn insert(&mut self, key: &str, entry: DirectoryEntry) {
        self.entries
            .insert(key.to_lowercase(), DirectoryAnswer::Found(entry));
    }

    /// Make lookups of `key` fail temporarily, as a directory outage would.
    pub fn fail(&mut self, key: &str, reason: &str) {
        self.entries.insert(
            key.to_lowercase(),
            DirectoryAnswer::TempError {
                reason: reason.to_string(),
            },
        );
    }
}

impl Directory for StaticDirectory {
    fn scope(&self, domain: &str) -> DirectoryScope {
        match self.scope {
            Some(scope) if self.domains.iter().any(|d| d == domain) => scope,
            _ => DirectoryScope::None,
        }
    }

    fn lookup<'a>(&'a self, rcpt: &'a Address) -> DirectoryFuture<'a> {
        let answer = self
            .entries
            .get(rcpt.key())
            .cloned()
            .unwrap_or(DirectoryAnswer::NotFound);
        Box::pin(std::future::ready(answer))
    }

    fn name(&self) -> &str {
        &self.name
    }
}
