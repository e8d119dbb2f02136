//! How `splitmx diff` groups and words its result: changed recipients grouped by
//! (from → to), a one-line summary for the merge request, and the plain-text listing.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::diff::{Answer, Changed, Diff, Source};
use crate::routing::address::Address;

/// What happens to the recipients of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Change {
    /// Accepted on another route (or the same route going elsewhere).
    Move,
    /// Refused with a 5xx reply: senders get a bounce.
    Bounce,
    /// Refused with a 4xx reply: senders retry.
    Defer,
}

/// Recipients that change the same way.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Group {
    pub(super) from: String,
    pub(super) to: String,
    pub(super) change: Change,
    pub(super) recipients: usize,
    pub(super) messages: u64,
    pub(super) list: Vec<Changed>,
}

/// Group changed recipients by (from, to): moves first, then bounces, then deferrals;
/// the busiest group first; in a group the busiest recipient first.
pub(super) fn group(changed: Vec<Changed>) -> Vec<Group> {
    let mut map: BTreeMap<(Change, String, String), Vec<Changed>> = BTreeMap::new();
    for c in changed {
        let (from, to) = labels(&c.from, &c.to);
        map.entry((change_of(&c.to), from, to)).or_default().push(c);
    }
    let mut groups: Vec<Group> = map
        .into_iter()
        .map(|((change, from, to), mut list)| {
            list.sort_by(|a, b| {
                b.messages
                    .cmp(&a.messages)
                    .then_with(|| a.recipient.cmp(&b.recipient))
            });
            Group {
                from,
                to,
                change,
                recipients: list.len(),
                messages: list.iter().map(|c| c.messages).sum(),
                list,
            }
        })
        .collect();
    groups.sort_by(|a, b| {
        a.change
            .cmp(&b.change)
            .then_with(|| b.messages.cmp(&a.messages))
            .then_with(|| b.recipients.cmp(&a.recipients))
            .then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to)))
    });
    groups
}

fn change_of(to: &Answer) -> Change {
    match to {
        Answer::Routed { .. } => Change::Move,
        Answer::Refused { code, .. } if *code >= 500 => Change::Bounce,
        Answer::Refused { .. } => Change::Defer,
    }
}

/// Group labels; a route that keeps its name but changes what it does is told apart by
/// its kind, or by the rewritten recipient.
fn labels(from: &Answer, to: &Answer) -> (String, String) {
    match (from, to) {
        (
            Answer::Routed {
                route: a, kind: ka, ..
            },
            Answer::Routed {
                route: b, kind: kb, ..
            },
        ) if a == b => {
            if ka != kb {
                (format!("{a} ({ka})"), format!("{b} ({kb})"))
            } else {
                (a.clone(), format!("{b} (recipient rewritten differently)"))
            }
        }
        _ => (from.label(), to.label()),
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The one-line summary: "this change moves 12 recipients (340 messages in the last 7
/// days) from legacy to m365; 1 would become unknown (550 5.1.1)".
pub(super) fn summary(groups: &[Group], checked: usize, days: u32) -> String {
    if groups.is_empty() {
        return format!(
            "no change: none of the {} checked would be routed differently",
            plural(checked as u64, "recipient", "recipients")
        );
    }
    let mut parts = Vec::new();
    let moves: Vec<&Group> = groups.iter().filter(|g| g.change == Change::Move).collect();
    if !moves.is_empty() {
        let n: usize = moves.iter().map(|g| g.recipients).sum();
        let m: u64 = moves.iter().map(|g| g.messages).sum();
        let mut s = format!(
            "this change moves {} ({} in the last {})",
            plural(n as u64, "recipient", "recipients"),
            plural(m, "message", "messages"),
            plural(u64::from(days), "day", "days"),
        );
        match moves.as_slice() {
            [one] => {
                let _ = write!(s, " from {} to {}", one.from, one.to);
            }
            many => {
                let each: Vec<String> = many
                    .iter()
                    .map(|g| format!("{} from {} to {}", g.recipients, g.from, g.to))
                    .collect();
                let _ = write!(s, ": {}", each.join(", "));
            }
        }
        parts.push(s);
    } else {
        parts.push("this change moves no recipient".to_string());
    }
    // Refusals are summed by what the recipients would get, whatever they had before.
    let mut refused: Vec<(String, usize)> = Vec::new();
    for g in groups.iter().filter(|g| g.change != Change::Move) {
        let Some(first) = g.list.first() else {
            continue;
        };
        let what = would(&first.to);
        match refused.iter_mut().find(|(w, _)| *w == what) {
            Some((_, n)) => *n += g.recipients,
            None => refused.push((what, g.recipients)),
        }
    }
    for (what, n) in refused {
        parts.push(format!("{n} would {what}"));
    }
    parts.join("; ")
}

fn would(answer: &Answer) -> String {
    let Answer::Refused {
        label,
        code,
        status,
        ..
    } = answer
    else {
        return "move".to_string();
    };
    match label.as_str() {
        "unknown" => format!("become unknown ({code} {status})"),
        "relay denied" => format!("be refused as relaying ({code} {status})"),
        "temporary failure" => format!("fail temporarily ({code} {status})"),
        route if *code >= 500 => format!("be rejected by route {route} ({code} {status})"),
        route => format!("be deferred by route {route} ({code} {status})"),
    }
}

/// The plain-text report.
pub(super) fn text(diff: &Diff) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "live:     {} (version {})",
        diff.live.dir.display(),
        diff.live.version
    );
    let _ = writeln!(
        out,
        "proposed: {} (version {})",
        diff.proposed.dir.display(),
        diff.proposed.version
    );
    let from = match &diff.source {
        Source::Journal { .. } => {
            format!("the journal, {} to {}", diff.period.first, diff.period.last)
        }
        Source::File { path } => path.display().to_string(),
    };
    let _ = writeln!(
        out,
        "checked:  {} from {from}",
        plural(diff.checked as u64, "recipient", "recipients")
    );
    let _ = writeln!(out, "{}", diff.summary);
    for g in &diff.groups {
        let _ = writeln!(
            out,
            "\n{} -> {}: {}, {}",
            g.from,
            g.to,
            plural(g.recipients as u64, "recipient", "recipients"),
            plural(g.messages, "message", "messages")
        );
        for c in &g.list {
            let _ = write!(
                out,
                "  {}  {}",
                c.recipient,
                plural(c.messages, "message", "messages")
            );
            if let Answer::Routed { deliver_to, .. } = &c.to
                && Address::parse(deliver_to).is_ok_and(|a| a.key() != c.recipient)
            {
                let _ = write!(out, ", delivered to {deliver_to}");
            }
            out.push('\n');
        }
    }
    if !diff.unresolved.is_empty() {
        let _ = writeln!(
            out,
            "\nunresolved on both sides (temporary failure): {}",
            diff.unresolved.len()
        );
        for c in &diff.unresolved {
            let _ = writeln!(out, "  {}  {}", c.recipient, c.to.label());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(route: &str, kind: &str, to: &str) -> Answer {
        Answer::Routed {
            route: route.to_string(),
            kind: kind.to_string(),
            deliver_to: to.to_string(),
        }
    }

    fn refused(label: &str, code: u16, status: &str) -> Answer {
        Answer::Refused {
            label: label.to_string(),
            code,
            status: status.to_string(),
            text: "text".to_string(),
        }
    }

    fn changed(who: &str, messages: u64, from: Answer, to: Answer) -> Changed {
        Changed {
            recipient: who.to_string(),
            messages,
            from,
            to,
        }
    }

    #[test]
    fn several_moves_and_refusals_are_summed_in_one_line() {
        let legacy = || routed("legacy", "smtp:[192.0.2.25]:25", "x@example.com");
        let m365 = || routed("m365", "smtp:m365.example", "x@example.com");
        let groups = group(vec![
            changed("a@example.com", 5, legacy(), m365()),
            changed("b@example.com", 1, legacy(), m365()),
            changed("c@example.com", 9, m365(), legacy()),
            changed(
                "d@example.com",
                2,
                legacy(),
                refused("unknown", 550, "5.1.1"),
            ),
            changed("e@example.com", 2, m365(), refused("unknown", 550, "5.1.1")),
            changed(
                "f@example.com",
                0,
                legacy(),
                refused("relay denied", 554, "5.7.1"),
            ),
            changed(
                "g@example.com",
                1,
                legacy(),
                refused("temporary failure", 451, "4.4.3"),
            ),
        ]);
        assert_eq!(
            summary(&groups, 10, 7),
            "this change moves 3 recipients (15 messages in the last 7 days): 1 from m365 to legacy, 2 from legacy to m365; \
             2 would become unknown (550 5.1.1); 1 would be refused as relaying (554 5.7.1); 1 would fail temporarily (451 4.4.3)"
        );
        let order: Vec<(&str, &str)> = groups
            .iter()
            .map(|g| (g.from.as_str(), g.to.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("m365", "legacy"),
                ("legacy", "m365"),
                ("legacy", "unknown (550 5.1.1)"),
                ("m365", "unknown (550 5.1.1)"),
                ("legacy", "relay denied (554 5.7.1)"),
                ("legacy", "temporary failure (451 4.4.3)"),
            ]
        );
    }

    #[test]
    fn a_route_that_keeps_its_name_is_told_apart_by_what_it_does() {
        let groups = group(vec![
            changed(
                "a@example.com",
                1,
                routed("legacy", "smtp:[192.0.2.25]:25", "a@example.com"),
                routed("legacy", "smtp:[192.0.2.26]:25", "a@example.com"),
            ),
            changed(
                "b@example.com",
                1,
                routed("m365", "smtp:m365.example", "b@example.com"),
                routed("m365", "smtp:m365.example", "b@tenant.example"),
            ),
        ]);
        let labels: Vec<String> = groups
            .iter()
            .map(|g| format!("{} -> {}", g.from, g.to))
            .collect();
        assert_eq!(
            labels,
            [
                "legacy (smtp:[192.0.2.25]:25) -> legacy (smtp:[192.0.2.26]:25)",
                "m365 -> m365 (recipient rewritten differently)",
            ]
        );
    }
}
