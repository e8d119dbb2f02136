//! Postfix's own lookup order, for the import to follow and to check itself against.
//!
//! trivial-rewrite(8) (`transport_lookup` in `transport.c`) searches a transport map for
//! a recipient `user+ext@sub.example.com` in this order, first hit wins:
//!
//! 1. the full address; 2. the address without its extension (`recipient_delimiter`);
//! 3. the domain `sub.example.com`, then `.example.com`, then `.com` (with the default
//!    `parent_domain_matches_subdomains`, which does not list transport_maps, a bare
//!    `example.com` key never matches its subdomains); 4. `*`.
//!
//! Before routing, smtpd(8) checks relay_recipient_maps (`mail_addr_find`): the full
//! address, the address without extension, then `@domain` (never a parent domain). Which
//! domains are relay domains is main.cf's business; here a domain is one when it or a
//! parent has an entry in relay_recipients (relay_domains matches subdomains by
//! default). A domain with no entry at all is taken as not a relay domain (its
//! recipients are checked elsewhere in Postfix, or not at all) and is not restricted.

use super::postfix_transport::TransportMap;
use super::relay_recipients::RelayRecipients;
use crate::routing::address::Address;

/// The transport map and relay_recipients, searched the way Postfix searches them.
pub(crate) struct PostfixLookup<'a> {
    pub(crate) transport: &'a TransportMap,
    pub(crate) relay: Option<&'a RelayRecipients>,
    /// Postfix's `recipient_delimiter`.
    pub(crate) delimiters: &'a str,
}

impl PostfixLookup<'_> {
    /// The transport entry Postfix uses for `addr`, or None (main.cf decides).
    pub(crate) fn transport_entry(&self, addr: &Address) -> Option<usize> {
        let t = self.transport;
        if let Some(&i) = t.addresses.get(addr.key()) {
            return Some(i);
        }
        if let Some(base) = self.without_extension(addr)
            && let Some(&i) = t.addresses.get(&base)
        {
            return Some(i);
        }
        self.domain_entry(addr.domain()).or(t.wildcard)
    }

    /// The entry for a domain: its own key, then `.parent` keys, nearest first (no `*`).
    pub(crate) fn domain_entry(&self, domain: &str) -> Option<usize> {
        if let Some(&i) = self.transport.domains.get(domain) {
            return Some(i);
        }
        self.parent_entry(domain)
    }

    /// The `.parent` entry nearest above `domain` (not `.domain` itself).
    fn parent_entry(&self, domain: &str) -> Option<usize> {
        let mut rest = domain;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(&i) = self.transport.subdomains.get(parent) {
                return Some(i);
            }
            rest = parent;
        }
        None
    }

    /// The entry for a subdomain of `domain` that has no key of its own: `.domain`, then
    /// `.parent` keys (no `*`: the wildcard serves no domain by itself).
    pub(crate) fn subdomain_entry(&self, domain: &str) -> Option<usize> {
        if let Some(&i) = self.transport.subdomains.get(domain) {
            return Some(i);
        }
        self.parent_entry(domain)
    }

    /// True when relay_recipients lets `addr` in (or does not apply to its domain).
    pub(crate) fn accepted(&self, addr: &Address) -> bool {
        !self.restricted(addr.domain()) || self.listed(addr)
    }

    /// True when relay_recipients lists `addr` itself, or it without its extension.
    pub(crate) fn listed(&self, addr: &Address) -> bool {
        let Some(relay) = self.relay else {
            return false;
        };
        relay.address_keys.contains(addr.key())
            || self
                .without_extension(addr)
                .is_some_and(|base| relay.address_keys.contains(&base))
    }

    /// True when `domain` counts as one of Postfix's relay_domains: relay_recipients has
    /// an entry in it or in a parent domain (relay_domains matches subdomains by default).
    pub(crate) fn relay_domain(&self, domain: &str) -> bool {
        let Some(relay) = self.relay else {
            return false;
        };
        let mut rest = domain;
        loop {
            if relay.listed_domains.contains(rest) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) => rest = parent,
                None => return false,
            }
        }
    }

    /// True when only the recipients relay_recipients lists exist in `domain`: a relay
    /// domain without an `@domain` entry (`@parent` does not cover subdomains).
    pub(crate) fn restricted(&self, domain: &str) -> bool {
        self.relay_domain(domain)
            && self
                .relay
                .is_some_and(|r| !r.whole_domains.contains(domain))
    }

    /// The address key without its extension, as Postfix's `split_addr` strips it.
    pub(crate) fn without_extension(&self, addr: &Address) -> Option<String> {
        let local = addr.local_key();
        if self.delimiters.is_empty()
            || matches!(local, "postmaster" | "mailer-daemon" | "double-bounce")
        {
            return None;
        }
        // Backwards compatibility in Postfix: owner-foo and foo-request stay whole.
        if self.delimiters.contains('-')
            && (local.starts_with("owner-") || (local.len() > 8 && local.ends_with("-request")))
        {
            return None;
        }
        let pos = local.find(|c: char| self.delimiters.contains(c))?;
        if pos == 0 {
            return None;
        }
        Some(format!("{}@{}", &local[..pos], addr.domain()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::postfix_map::parse_map;
    use super::super::transport_value::ValueRules;
    use super::*;

    fn map(text: &str) -> TransportMap {
        TransportMap::read(parse_map(text.as_bytes()).entries, &ValueRules::default())
    }

    fn line(t: &TransportMap, l: &PostfixLookup, addr: &str) -> Option<u32> {
        let a = Address::parse(addr).unwrap();
        l.transport_entry(&a).map(|i| t.entries[i].line)
    }

    #[test]
    fn lookup_order_is_trivial_rewrites() {
        let t = map(
            "alice@example.com smtp:[a]\nalice+x@example.com smtp:[b]\nexample.com smtp:[c]\n.example.com smtp:[d]\nb.example.com smtp:[e]\n.b.example.com smtp:[f]\n* smtp:[g]\n",
        );
        let l = PostfixLookup {
            transport: &t,
            relay: None,
            delimiters: "+",
        };
        assert_eq!(line(&t, &l, "Alice@Example.com"), Some(1));
        assert_eq!(line(&t, &l, "alice+x@example.com"), Some(2));
        assert_eq!(line(&t, &l, "alice+y@example.com"), Some(1));
        assert_eq!(line(&t, &l, "bob@example.com"), Some(3));
        assert_eq!(line(&t, &l, "bob@sub.example.com"), Some(4));
        assert_eq!(line(&t, &l, "bob@b.example.com"), Some(5));
        assert_eq!(line(&t, &l, "bob@x.b.example.com"), Some(6));
        assert_eq!(line(&t, &l, "bob@y.x.b.example.com"), Some(6));
        assert_eq!(line(&t, &l, "bob@example.org"), Some(7));
        let plain = PostfixLookup {
            delimiters: "",
            ..l
        };
        assert_eq!(line(&t, &plain, "alice+y@example.com"), Some(3));
    }

    #[test]
    fn split_addr_keeps_postfix_exceptions() {
        let t = map("");
        let l = PostfixLookup {
            transport: &t,
            relay: None,
            delimiters: "+-",
        };
        let strip = |a: &str| l.without_extension(&Address::parse(a).unwrap());
        assert_eq!(strip("a+b@x.example").as_deref(), Some("a@x.example"));
        assert_eq!(strip("a-b+c@x.example").as_deref(), Some("a@x.example"));
        assert_eq!(strip("+a@x.example"), None);
        assert_eq!(strip("owner-list@x.example"), None);
        assert_eq!(strip("list-request@x.example"), None);
        assert_eq!(strip("mailer-daemon@x.example"), None);
    }
}
