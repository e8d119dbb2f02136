//! From Postfix's maps to splitmx tables: which domains, which defaults, which recipients.
//!
//! Every domain the maps name is served by a table of its own: domain keys, the domains
//! of address keys, the parent of each `.domain` key, and the domains of
//! relay_recipients. For each, Postfix's own lookup order ([`PostfixLookup`]) decides:
//!
//! - the `default`: what an unlisted user of the domain gets (its key, a `.parent`
//!   key, `*`, or `--fallback`); none when relay_recipients restricts the domain, so
//!   only the listed recipients exist (550 5.1.1 for others, as Postfix answers);
//! - `subdomains: true` when a `.domain` entry routes its subdomains like the domain
//!   itself. A splitmx table gives a domain and its subdomains one default; when
//!   Postfix routes them differently, the subdomains are not served and that is
//!   reported (unless the domain is named only by `.domain`, then it follows it);
//! - `recipients`: every address key (that relay_recipients lets in), and for a
//!   restricted domain every listed address, each with Postfix's route for it.
//!
//! What Postfix leaves to main.cf or what cannot be carried over goes to the
//! [`super::routes::NOT_IMPORTED`] route and is reported.

use std::collections::BTreeMap;

use hashbrown::{HashMap, HashSet};

use super::postfix_lookup::PostfixLookup;
use super::postfix_transport::Key;
use super::report::{Finding, Severity, entry_text};
use super::routes::Routes;
use super::transport_value::Action;
use crate::routing::route::RouteKind;

/// Where a default or recipient goes, with a comment for the YAML file.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) route: usize,
    pub(crate) comment: Option<String>,
}

/// One recipient entry.
#[derive(Debug, Clone)]
pub(crate) struct Recipient {
    pub(crate) address: String,
    pub(crate) slot: Slot,
}

/// One domain table.
#[derive(Debug, Clone)]
pub(crate) struct DomainTable {
    pub(crate) domain: String,
    /// The `.domain` entry that opts the subdomains in, as a comment.
    pub(crate) subdomains: Option<String>,
    pub(crate) default: Option<Slot>,
    /// Only the listed recipients exist (relay_recipients).
    pub(crate) restricted: bool,
    pub(crate) recipients: Vec<Recipient>,
}

/// The tables to write and what planning found.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) routes: Routes,
    pub(crate) tables: Vec<DomainTable>,
    pub(crate) findings: Vec<Finding>,
}

/// What Postfix does, in splitmx terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// This route; `line` is the transport entry (None: the --fallback).
    Route { kind: RouteKind, line: Option<u32> },
    /// Not known here: the entry was not carried over, or main.cf decides.
    Undetermined { line: Option<u32>, why: String },
}

/// What planning needs besides the maps.
pub(crate) struct Inputs<'a> {
    pub(crate) lookup: &'a PostfixLookup<'a>,
    pub(crate) fallback: Option<&'a RouteKind>,
    pub(crate) transport_file: &'a str,
    /// True for a domain to import (`--domain`).
    pub(crate) selected: &'a dyn Fn(&str) -> bool,
}

impl Inputs<'_> {
    /// Postfix's decision for a transport entry, or for no entry.
    pub(crate) fn decide(&self, entry: Option<usize>) -> Decision {
        let e = entry.and_then(|i| self.lookup.transport.entries.get(i));
        match e {
            Some(e) => match &e.action {
                Action::Route(kind) => Decision::Route {
                    kind: kind.clone(),
                    line: Some(e.line),
                },
                Action::NotCarried(why) => Decision::Undetermined {
                    line: Some(e.line),
                    why: format!("{}:{}: {why}", self.transport_file, e.line),
                },
            },
            None => match self.fallback {
                Some(kind) => Decision::Route {
                    kind: kind.clone(),
                    line: None,
                },
                None => Decision::Undetermined {
                    line: None,
                    why: "no transport entry applies; Postfix uses main.cf (relay_transport, relayhost)".to_string(),
                },
            },
        }
    }

    fn entry_comment(&self, entry: Option<usize>) -> Option<String> {
        match entry.and_then(|i| self.lookup.transport.entries.get(i)) {
            Some(e) => Some(format!(
                "{}:{}: {}",
                self.transport_file,
                e.line,
                entry_text(&e.key_text, &e.value_text)
            )),
            None if self.fallback.is_some() => Some("--fallback".to_string()),
            None => None,
        }
    }
}

fn slot(routes: &mut Routes, decision: &Decision, comment: Option<String>) -> Slot {
    match decision {
        Decision::Route { kind, line } => Slot {
            route: routes.intern(kind, *line),
            comment,
        },
        Decision::Undetermined { why, .. } => Slot {
            route: routes.placeholder(),
            comment: Some(why.clone()),
        },
    }
}

fn same(a: &Decision, b: &Decision) -> bool {
    match (a, b) {
        (Decision::Route { kind: x, .. }, Decision::Route { kind: y, .. }) => x == y,
        (Decision::Undetermined { .. }, Decision::Undetermined { .. }) => true,
        _ => false,
    }
}

fn describe(d: &Decision) -> String {
    match d {
        Decision::Route { kind, .. } => kind.to_string(),
        Decision::Undetermined { .. } => {
            "main.cf's default or an entry not carried over".to_string()
        }
    }
}

/// Plan the tables.
pub(crate) fn plan(inputs: &Inputs<'_>) -> Plan {
    let lookup = inputs.lookup;
    let transport = lookup.transport;
    let file = inputs.transport_file;
    let mut routes = Routes::new();
    let mut findings = Vec::new();

    // Domains, and whether something names the domain itself (not only `.domain`).
    let mut served: BTreeMap<String, bool> = BTreeMap::new();
    let mut addresses: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, e) in transport.entries.iter().enumerate() {
        match &e.key {
            Key::Address(a) => {
                served.insert(a.domain().to_string(), true);
                addresses.entry(a.domain()).or_default().push(i);
            }
            Key::Domain(d) => {
                served.insert(d.clone(), true);
            }
            Key::Subdomains(d) => {
                served.entry(d.clone()).or_insert(false);
            }
            Key::Wildcard => {}
        }
    }
    let mut relay_addresses: HashMap<&str, Vec<usize>> = HashMap::new();
    if let Some(relay) = lookup.relay {
        for (i, (_, a)) in relay.addresses.iter().enumerate() {
            served.insert(a.domain().to_string(), true);
            relay_addresses.entry(a.domain()).or_default().push(i);
        }
        for d in &relay.whole_domains {
            served.insert(d.clone(), true);
        }
    }

    let mut tables = Vec::new();
    let mut wildcard_defaults = 0usize;
    for (domain, named) in served {
        if !(inputs.selected)(&domain) {
            continue;
        }
        let own_entry = lookup.domain_entry(&domain).or(transport.wildcard);
        if own_entry.is_some() && own_entry == transport.wildcard {
            wildcard_defaults += 1;
        }
        let own = inputs.decide(own_entry);
        let restricted = lookup.restricted(&domain);
        let mut table = DomainTable {
            domain: domain.clone(),
            subdomains: None,
            default: None,
            restricted,
            recipients: Vec::new(),
        };
        let domain_finding =
            |severity, line: Option<u32>, entry: Option<String>, message| Finding {
                severity,
                file: line.map(|_| file.to_string()),
                line,
                domain: Some(domain.clone()),
                entry,
                message,
            };
        if lookup.relay.is_some() && !lookup.relay_domain(&domain) {
            findings.push(domain_finding(
                Severity::Warning,
                None,
                None,
                format!("no entry in relay_recipients: taken as not one of Postfix's relay_domains, so every recipient the transport map routes is accepted here; if {domain} is a relay domain, Postfix rejects them all (add its recipients, or @{domain})"),
            ));
        }
        if !restricted {
            let mut default = own.clone();
            let mut default_entry = own_entry;
            // A fresh subdomain under a relay domain is refused by relay_recipients.
            let sub_entry = lookup
                .subdomain_entry(&domain)
                .filter(|_| !lookup.relay_domain(&domain));
            if let Some(s) = sub_entry {
                let sub = inputs.decide(Some(s));
                let sub_line = transport.entries.get(s).map(|e| e.line);
                let sub_text = transport
                    .entries
                    .get(s)
                    .map(|e| entry_text(&e.key_text, &e.value_text));
                if same(&own, &sub) {
                    table.subdomains = inputs.entry_comment(Some(s));
                } else if !named {
                    table.subdomains = inputs.entry_comment(Some(s));
                    default = sub.clone();
                    default_entry = Some(s);
                    findings.push(domain_finding(
                        Severity::Changed,
                        sub_line,
                        sub_text,
                        format!("{domain} itself has no entry: Postfix routes its recipients to {}; here they follow this line too (a table gives a domain and its subdomains one default)", describe(&own)),
                    ));
                } else {
                    findings.push(domain_finding(
                        Severity::NotCarried,
                        sub_line,
                        sub_text,
                        format!("subdomains of {domain} are not served (554 5.7.1): Postfix routes them by this line to {}, but {domain} itself to {}, and a table gives a domain and its subdomains one default; give the subdomains tables of their own", describe(&sub), describe(&own)),
                    ));
                }
            }
            if default_entry.is_none() && matches!(default, Decision::Undetermined { .. }) {
                findings.push(domain_finding(
                    Severity::NotCarried,
                    None,
                    None,
                    "no transport entry decides where its unlisted recipients go (Postfix uses main.cf: relay_transport, relayhost); here they are deferred with route not-imported (give --fallback TRANSPORT)".to_string(),
                ));
            }
            table.default = Some(slot(
                &mut routes,
                &default,
                inputs.entry_comment(default_entry),
            ));
        }

        let mut listed: HashSet<&str> = HashSet::new();
        for &i in addresses.get(domain.as_str()).into_iter().flatten() {
            let Some(e) = transport.entries.get(i) else {
                continue;
            };
            let Key::Address(a) = &e.key else { continue };
            if !lookup.accepted(a) {
                findings.push(Finding {
                    severity: Severity::NotCarried,
                    file: Some(file.to_string()),
                    line: Some(e.line),
                    domain: Some(domain.clone()),
                    entry: Some(entry_text(&e.key_text, &e.value_text)),
                    message: "not in relay_recipients: Postfix rejects this address (550 5.1.1) before the entry is used".to_string(),
                });
                continue;
            }
            listed.insert(a.key());
            let decision = inputs.decide(Some(i));
            table.recipients.push(Recipient {
                address: a.to_smtp(),
                slot: slot(&mut routes, &decision, None),
            });
        }
        if restricted && let Some(relay) = lookup.relay {
            let mut undetermined = 0usize;
            for &i in relay_addresses.get(domain.as_str()).into_iter().flatten() {
                let Some((_, a)) = relay.addresses.get(i) else {
                    continue;
                };
                if listed.contains(a.key()) {
                    continue;
                }
                let entry = lookup.transport_entry(a);
                let decision = inputs.decide(entry);
                if entry.is_none() && matches!(decision, Decision::Undetermined { .. }) {
                    undetermined += 1;
                }
                table.recipients.push(Recipient {
                    address: a.to_smtp(),
                    slot: slot(&mut routes, &decision, None),
                });
            }
            if undetermined > 0 {
                findings.push(domain_finding(
                    Severity::NotCarried,
                    None,
                    None,
                    format!("{undetermined} recipient{} from relay_recipients {} no transport entry (Postfix uses main.cf: relay_transport, relayhost); here they are deferred with route not-imported (give --fallback TRANSPORT)", if undetermined == 1 { "" } else { "s" }, if undetermined == 1 { "has" } else { "have" }),
                ));
            }
        }
        tables.push(table);
    }

    if let Some(e) = transport.wildcard.and_then(|i| transport.entries.get(i)) {
        findings.push(Finding {
            severity: Severity::Warning,
            file: Some(file.to_string()),
            line: Some(e.line),
            domain: None,
            entry: Some(entry_text(&e.key_text, &e.value_text)),
            message: format!(
                "Postfix applies '*' to every domain, also to mail your users send out; here {}, and no other domain is served (splitmx is never an open relay)",
                match wildcard_defaults {
                    0 => "no imported domain uses it (each has an entry of its own)".to_string(),
                    1 => "it is the default of the one imported domain without an entry of its own".to_string(),
                    n => format!("it is the default of the {n} imported domains without an entry of their own"),
                }
            ),
        });
    }
    Plan {
        routes,
        tables,
        findings,
    }
}
