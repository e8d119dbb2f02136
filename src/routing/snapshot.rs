//! An immutable routing snapshot: every table merged into hash maps, ready for lookup.
//!
//! A [`Snapshot`] is built once by the table loader and never changed; a reload builds a
//! new one and swaps it in whole. Recipient entries are kept compact (a key and 16 bytes)
//! so a million-recipient table stays well under 200 bytes per entry.

use std::sync::Arc;

use compact_str::CompactString;
use hashbrown::HashMap;
use serde::Serialize;

use super::route::{Rewrite, Route};
pub use super::version::TableVersion;

/// A position in a table file: which file, line and column (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) file: u32,
    pub(crate) line: u32,
    pub(crate) column: u32,
}

/// One recipient entry: which target, and where it was written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) target: u32,
    pub(crate) pos: Pos,
}

/// A route plus an optional per-entry rewrite; entries share targets.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) route: Arc<Route>,
    pub(crate) rewrite: Option<Rewrite>,
}

/// What a table says about one domain.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DomainRule {
    pub(crate) default: Option<Entry>,
    pub(crate) subdomains: bool,
    pub(crate) pos: Pos,
}

/// The merged, validated routing tables at one version.
#[derive(Debug)]
pub struct Snapshot {
    pub(crate) recipients: HashMap<CompactString, Entry>,
    pub(crate) domains: HashMap<Box<str>, DomainRule>,
    pub(crate) mail_hosts: HashMap<Box<str>, Entry>,
    pub(crate) targets: Vec<Target>,
    pub(crate) routes: Vec<Arc<Route>>,
    pub(crate) files: Vec<Arc<str>>,
    pub(crate) version: Arc<TableVersion>,
    pub(crate) delimiters: String,
}

/// Counts describing a snapshot, for `check` and logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotSummary {
    /// Table files loaded.
    pub files: usize,
    /// Named and inline routes.
    pub routes: usize,
    /// Domains served by tables.
    pub domains: usize,
    /// Recipient entries.
    pub recipients: usize,
    /// The table version.
    pub version: TableVersion,
}

impl Snapshot {
    /// The version of the tables this snapshot was built from.
    pub fn version(&self) -> &Arc<TableVersion> {
        &self.version
    }

    /// Number of recipient entries.
    pub fn recipient_count(&self) -> usize {
        self.recipients.len()
    }

    /// The domains the tables serve, sorted.
    pub fn domains(&self) -> Vec<&str> {
        let mut d: Vec<&str> = self.domains.keys().map(|k| &**k).collect();
        d.sort_unstable();
        d
    }

    /// Every route, named and inline, in definition order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// A route by name.
    pub fn route(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.name() == name)
    }

    /// The table files, in load order.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|f| &**f)
    }

    /// The address-extension delimiters in force.
    pub fn delimiters(&self) -> &str {
        &self.delimiters
    }

    /// Counts for `check` and logs.
    pub fn summary(&self) -> SnapshotSummary {
        SnapshotSummary {
            files: self.files.len(),
            routes: self.routes.len(),
            domains: self.domains.len(),
            recipients: self.recipients.len(),
            version: (*self.version).clone(),
        }
    }

    /// The rule that governs `domain`: see [`governing_rule`].
    pub(crate) fn domain_rule<'a>(&self, domain: &'a str) -> Option<(&'a str, &DomainRule, bool)> {
        governing_rule(&self.domains, domain)
    }

    /// True when the tables serve `domain`, itself or through a parent's subdomain opt-in.
    pub fn serves(&self, domain: &str) -> bool {
        self.domain_rule(domain).is_some()
    }

    pub(crate) fn file_arc(&self, pos: Pos) -> Arc<str> {
        self.files
            .get(pos.file as usize)
            .cloned()
            .unwrap_or_else(|| Arc::from("?"))
    }

    pub(crate) fn target(&self, entry: Entry) -> Option<&Target> {
        self.targets.get(entry.target as usize)
    }
}

/// The rule that governs `domain`: its own table, else the nearest parent domain that
/// opted in to subdomains (a parent without the opt-in ends the search). Returns the
/// domain whose rule applies and whether it is a parent. Loading (is a recipient's domain
/// served?) and lookup use this one definition.
pub(crate) fn governing_rule<'a, 'm>(
    domains: &'m HashMap<Box<str>, DomainRule>,
    domain: &'a str,
) -> Option<(&'a str, &'m DomainRule, bool)> {
    if let Some(rule) = domains.get(domain) {
        return Some((domain, rule, false));
    }
    let mut rest = domain;
    while let Some((_, parent)) = rest.split_once('.') {
        if let Some(rule) = domains.get(parent) {
            return rule.subdomains.then_some((parent, rule, true));
        }
        rest = parent;
    }
    None
}
