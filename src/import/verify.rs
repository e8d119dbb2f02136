//! Checking the generated tables against Postfix's lookup rules, address by address.
//!
//! Probes: every address key of the transport map and every listed relay recipient in an
//! imported domain; each such address again with an extension; an unlisted user in each
//! imported domain; and an unlisted subdomain wherever a `.domain` entry applies. For
//! each, Postfix's answer ([`PostfixLookup`]: accepted or refused, which entry, what it
//! does) is compared with what the loaded snapshot resolves. Refusals compare equal
//! whatever their code (550 or 554: which one Postfix gives depends on main.cf), and
//! what Postfix leaves undetermined must meet the `not-imported` route.

use hashbrown::HashSet;

use super::plan::{Decision, Inputs, Plan};
use super::report::{Difference, Report};
use super::routes::NOT_IMPORTED;
use crate::routing::address::Address;
use crate::routing::resolve::Outcome;
use crate::routing::snapshot::Snapshot;

/// The local part of made-up probe addresses (made unique if a map uses it).
const PROBE: &str = "splitmx-import-probe";

/// Probe the snapshot and add every difference to the report; returns how many
/// addresses were probed.
pub(crate) fn verify(
    snapshot: &Snapshot,
    inputs: &Inputs<'_>,
    plan: &Plan,
    report: &mut Report,
) -> usize {
    let lookup = inputs.lookup;
    let mut probes: Vec<Address> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut add = |a: Address, probes: &mut Vec<Address>| {
        if seen.insert(a.key().to_string()) {
            probes.push(a);
        }
    };
    let extension = |a: &Address| -> Option<Address> {
        let delimiter = lookup.delimiters.chars().next()?;
        if lookup.without_extension(a).is_some() {
            return None;
        }
        a.with_local_part(&format!("{}{delimiter}{PROBE}", a.local_part()))
            .ok()
    };
    let served: HashSet<&str> = plan.tables.iter().map(|t| t.domain.as_str()).collect();
    for e in &lookup.transport.entries {
        if let super::postfix_transport::Key::Address(a) = &e.key
            && served.contains(a.domain())
        {
            add(a.clone(), &mut probes);
            if let Some(x) = extension(a) {
                add(x, &mut probes);
            }
        }
    }
    if let Some(relay) = lookup.relay {
        for (_, a) in &relay.addresses {
            if served.contains(a.domain()) {
                add(a.clone(), &mut probes);
                if let Some(x) = extension(a) {
                    add(x, &mut probes);
                }
            }
        }
    }
    let local = unused_local_part(inputs);
    for t in &plan.tables {
        if let Ok(a) = Address::parse(&format!("{local}@{}", t.domain)) {
            add(a, &mut probes);
        }
        let sub = format!("{PROBE}.{}", t.domain);
        if lookup.subdomain_entry(&t.domain).is_some()
            && !served.contains(sub.as_str())
            && let Ok(a) = Address::parse(&format!("{local}@{sub}"))
        {
            add(a, &mut probes);
        }
    }

    for addr in &probes {
        let expected = if lookup.accepted(addr) {
            Some(inputs.decide(lookup.transport_entry(addr)))
        } else {
            None
        };
        let outcome = snapshot.resolve(addr);
        if !agrees(expected.as_ref(), &outcome) {
            report.add_difference(Difference {
                address: addr.original().to_string(),
                postfix: postfix_text(expected.as_ref(), inputs.transport_file),
                splitmx: splitmx_text(&outcome),
            });
        }
    }
    probes.len()
}

fn agrees(expected: Option<&Decision>, outcome: &Outcome) -> bool {
    match (expected, outcome) {
        (None, Outcome::Unrouted(_)) => true,
        (Some(Decision::Route { kind, .. }), Outcome::Routed(r)) => {
            r.route.name() != NOT_IMPORTED && r.route.kind() == kind && r.route.rewrite().is_none()
        }
        (Some(Decision::Undetermined { .. }), Outcome::Routed(r)) => r.route.name() == NOT_IMPORTED,
        _ => false,
    }
}

fn postfix_text(expected: Option<&Decision>, file: &str) -> String {
    match expected {
        None => "refused: not in relay_recipients (550 5.1.1)".to_string(),
        Some(Decision::Route {
            kind,
            line: Some(l),
        }) => format!("{kind} ({file}:{l})"),
        Some(Decision::Route { kind, line: None }) => format!("{kind} (--fallback)"),
        Some(Decision::Undetermined { why, .. }) => format!("undetermined: {why}"),
    }
}

fn splitmx_text(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Routed(r) => format!(
            "route {} ({}) from {}",
            r.route.name(),
            r.route.kind(),
            r.provenance
        ),
        other => format!("refused: {}", other.reply()),
    }
}

/// A local part no map entry uses.
fn unused_local_part(inputs: &Inputs<'_>) -> String {
    let used = |local: &str| {
        inputs
            .lookup
            .transport
            .entries
            .iter()
            .any(|e| match &e.key {
                super::postfix_transport::Key::Address(a) => a.local_key() == local,
                _ => false,
            })
            || inputs
                .lookup
                .relay
                .is_some_and(|r| r.addresses.iter().any(|(_, a)| a.local_key() == local))
    };
    let mut local = PROBE.to_string();
    let mut n = 2;
    while used(&local) {
        local = format!("{PROBE}{n}");
        n += 1;
    }
    local
}
