//! Postfix transport(5) keys, read into splitmx terms and indexed for lookup.
//!
//! Input: the entries of a map (see [`super::postfix_map`]). Output: each transport
//! entry's key (an address, a domain, `.domain` for its subdomains, or `*`) with what
//! its value does ([`super::transport_value`]), indexed for Postfix's lookup order.
//! A key Postfix never matches, or one that repeats an earlier key, is not carried over
//! and yields a finding with its line. Keys are matched case-insensitively (postmap
//! folds them); for a repeated key postmap keeps the first.

use hashbrown::HashMap;

use super::postfix_map::MapEntry;
use super::report::Severity;
use super::transport_value::{Action, Converted, ValueRules};
use crate::routing::address::{Address, normalize_domain};

/// What a transport map key matches.
#[derive(Debug, Clone)]
pub(crate) enum Key {
    /// `user@domain` or `user+ext@domain`.
    Address(Address),
    /// `domain`: that domain only (Postfix's default `parent_domain_matches_subdomains`
    /// does not list transport_maps).
    Domain(String),
    /// `.domain`: every subdomain of it, at any depth, but not the domain itself.
    Subdomains(String),
    /// `*`: anything no other entry matches.
    Wildcard,
}

/// One transport entry.
#[derive(Debug, Clone)]
pub(crate) struct TransportEntry {
    pub(crate) line: u32,
    pub(crate) key_text: String,
    pub(crate) value_text: String,
    pub(crate) key: Key,
    pub(crate) action: Action,
}

/// A finding about one source line, before the file name is attached.
#[derive(Debug, Clone)]
pub(crate) struct LineNote {
    pub(crate) line: u32,
    pub(crate) severity: Severity,
    pub(crate) entry: String,
    /// The domain the entry is about (for `--domain` selection); None for `*` and lines
    /// that could not be read.
    pub(crate) domain: Option<String>,
    pub(crate) message: String,
}

/// Read a transport map key; an error says why Postfix never matches it or it cannot
/// be served.
fn transport_key(text: &str) -> Result<Key, String> {
    if text == "*" {
        return Ok(Key::Wildcard);
    }
    if text.contains('@') {
        if text.starts_with('@') {
            return Err("Postfix never looks up '@domain' in a transport map (only user@domain, domain, .domain and *): the line has no effect there".to_string());
        }
        if text.ends_with('@') {
            return Err("Postfix never looks up 'user@' in a transport map (only user@domain, domain, .domain and *): the line has no effect there".to_string());
        }
        return recipient_address(text).map(Key::Address);
    }
    if let Some(parent) = text.strip_prefix('.') {
        return normalize_domain(parent)
            .map(Key::Subdomains)
            .map_err(|e| format!("not a domain: {e}"));
    }
    normalize_domain(text)
        .map(Key::Domain)
        .map_err(|e| format!("not a domain: {e}"))
}

pub(crate) fn recipient_address(text: &str) -> Result<Address, String> {
    let addr = Address::parse(text).map_err(|e| format!("not an address: {e}"))?;
    if addr.is_domain_literal() {
        return Err("a domain literal ([address]) is not a domain splitmx serves".to_string());
    }
    Ok(addr)
}

/// A transport map read into entries, with indexes for lookup.
#[derive(Debug, Default)]
pub(crate) struct TransportMap {
    pub(crate) entries: Vec<TransportEntry>,
    pub(crate) notes: Vec<LineNote>,
    pub(crate) addresses: HashMap<String, usize>,
    pub(crate) domains: HashMap<String, usize>,
    pub(crate) subdomains: HashMap<String, usize>,
    pub(crate) wildcard: Option<usize>,
}

impl TransportMap {
    /// Read the entries of a transport map.
    pub(crate) fn read(entries: Vec<MapEntry>, rules: &ValueRules) -> TransportMap {
        let mut map = TransportMap::default();
        // A large map repeats a handful of values: convert each once.
        let mut converted: HashMap<String, Converted> = HashMap::new();
        for e in entries {
            let key = match transport_key(&e.key) {
                Ok(k) => k,
                Err(message) => {
                    map.notes.push(LineNote {
                        line: e.line,
                        severity: Severity::NotCarried,
                        domain: key_domain_guess(&e.key),
                        entry: super::report::entry_text(&e.key, &e.value),
                        message,
                    });
                    continue;
                }
            };
            let index = map.entries.len();
            let slot = match &key {
                Key::Address(a) => map.addresses.entry(a.key().to_string()),
                Key::Domain(d) => map.domains.entry(d.clone()),
                Key::Subdomains(d) => map.subdomains.entry(d.clone()),
                Key::Wildcard => {
                    if let Some(first) = map.wildcard {
                        map.notes.push(duplicate(&e, &key, &map.entries, first));
                        continue;
                    }
                    map.wildcard = Some(index);
                    map.push(e, key, rules, &mut converted);
                    continue;
                }
            };
            match slot {
                hashbrown::hash_map::Entry::Occupied(o) => {
                    let first = *o.get();
                    map.notes.push(duplicate(&e, &key, &map.entries, first));
                }
                hashbrown::hash_map::Entry::Vacant(v) => {
                    v.insert(index);
                    map.push(e, key, rules, &mut converted);
                }
            }
        }
        map
    }

    fn push(
        &mut self,
        e: MapEntry,
        key: Key,
        rules: &ValueRules,
        cache: &mut HashMap<String, Converted>,
    ) {
        let Converted { action, notes } = cache
            .entry_ref(e.value.as_str())
            .or_insert_with(|| rules.convert(&e.value))
            .clone();
        let note = |severity, message| LineNote {
            line: e.line,
            severity,
            entry: super::report::entry_text(&e.key, &e.value),
            domain: key_domain(&key),
            message,
        };
        if let Action::NotCarried(why) = &action {
            self.notes.push(note(
                Severity::NotCarried,
                format!("{why}; its recipients are deferred (route not-imported)"),
            ));
        }
        for (severity, message) in notes {
            self.notes.push(note(severity, message));
        }
        self.entries.push(TransportEntry {
            line: e.line,
            key_text: e.key,
            value_text: e.value,
            key,
            action,
        });
    }
}

/// The domain an entry is about, for `--domain` selection (None for `*`).
fn key_domain(key: &Key) -> Option<String> {
    match key {
        Key::Address(a) => Some(a.domain().to_string()),
        Key::Domain(d) | Key::Subdomains(d) => Some(d.clone()),
        Key::Wildcard => None,
    }
}

fn duplicate(e: &MapEntry, key: &Key, entries: &[TransportEntry], first: usize) -> LineNote {
    let first_line = entries.get(first).map_or(0, |f| f.line);
    LineNote {
        line: e.line,
        severity: Severity::NotCarried,
        entry: super::report::entry_text(&e.key, &e.value),
        domain: key_domain(key),
        message: format!(
            "the same key as line {first_line} (keys ignore case); postmap keeps the first, so this line has no effect"
        ),
    }
}

/// The domain a key that could not be read seems to be about, for `--domain` selection.
pub(crate) fn key_domain_guess(key: &str) -> Option<String> {
    let d = key
        .rsplit('@')
        .next()
        .unwrap_or(key)
        .trim_start_matches('.');
    normalize_domain(d).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_duplicates() {
        let entries = vec![
            MapEntry {
                line: 1,
                key: "Alice@Example.com".into(),
                value: "smtp:[a]".into(),
            },
            MapEntry {
                line: 2,
                key: "alice@example.COM".into(),
                value: "smtp:[b]".into(),
            },
            MapEntry {
                line: 3,
                key: ".example.com".into(),
                value: "smtp:[c]".into(),
            },
            MapEntry {
                line: 4,
                key: "user@".into(),
                value: "smtp:[d]".into(),
            },
            MapEntry {
                line: 5,
                key: "*".into(),
                value: "smtp:[e]".into(),
            },
            MapEntry {
                line: 6,
                key: "bad_domain".into(),
                value: "smtp:[f]".into(),
            },
        ];
        let map = TransportMap::read(entries, &ValueRules::default());
        assert_eq!(map.entries.len(), 3);
        assert_eq!(map.addresses.get("alice@example.com"), Some(&0));
        assert_eq!(map.subdomains.get("example.com"), Some(&1));
        assert_eq!(map.wildcard, Some(2));
        let lines: Vec<u32> = map.notes.iter().map(|n| n.line).collect();
        assert_eq!(lines, vec![2, 4, 6]);
        assert!(map.notes[0].message.contains("line 1"));
    }
}
