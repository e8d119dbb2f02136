//! Postfix relay_recipients entries: the recipients that exist in relay domains.
//!
//! Input: the entries of a relay_recipient_maps source (see [`super::postfix_map`]);
//! the values are ignored, as Postfix ignores them. Output: the addresses and
//! `@domain` wildcards it lists. A bare user name (it matches only in Postfix's local
//! domains) or a key that is not an address is not carried over, with its line.

use hashbrown::HashSet;

use super::postfix_map::MapEntry;
use super::postfix_transport::{LineNote, key_domain_guess, recipient_address};
use super::report::Severity;
use crate::routing::address::{Address, normalize_domain};

/// The recipients a relay_recipients map accepts.
#[derive(Debug, Default)]
pub(crate) struct RelayRecipients {
    /// Address keys, in file order with their lines.
    pub(crate) addresses: Vec<(u32, Address)>,
    pub(crate) address_keys: HashSet<String>,
    /// Domains accepted whole (`@domain`).
    pub(crate) whole_domains: HashSet<String>,
    /// Domains with at least one entry (address or `@domain`).
    pub(crate) listed_domains: HashSet<String>,
    pub(crate) notes: Vec<LineNote>,
}

impl RelayRecipients {
    /// Read the entries of a relay_recipients map (the values are ignored, as Postfix
    /// ignores them).
    pub(crate) fn read(entries: Vec<MapEntry>) -> RelayRecipients {
        let mut r = RelayRecipients::default();
        for e in entries {
            let note = |message: String| LineNote {
                line: e.line,
                severity: Severity::NotCarried,
                entry: super::report::entry_text(&e.key, &e.value),
                domain: key_domain_guess(&e.key),
                message,
            };
            if let Some(domain) = e.key.strip_prefix('@') {
                match normalize_domain(domain) {
                    Ok(d) => {
                        r.listed_domains.insert(d.clone());
                        r.whole_domains.insert(d);
                    }
                    Err(err) => r.notes.push(note(format!("not a domain: {err}"))),
                }
                continue;
            }
            if !e.key.contains('@') {
                r.notes.push(note(
                    "a bare user name matches only in Postfix's local domains (mydestination), never in a relay domain".to_string(),
                ));
                continue;
            }
            if e.key.ends_with('@') {
                r.notes.push(note(
                    "Postfix never looks up 'user@' in relay_recipient_maps (only user@domain and @domain)".to_string(),
                ));
                continue;
            }
            match recipient_address(&e.key) {
                Ok(addr) => {
                    if r.address_keys.insert(addr.key().to_string()) {
                        r.listed_domains.insert(addr.domain().to_string());
                        r.addresses.push((e.line, addr));
                    }
                }
                Err(message) => r.notes.push(note(message)),
            }
        }
        r
    }
}
