//! Reading the journal over a period: every recipient seen, with the routes it was
//! accepted for and its message counts, summed over the day files of the period.
//!
//! This is what `splitmx diff` and `splitmx report` read. It needs no server and no async
//! runtime: it reads the files the gateway wrote (or a test, or an administrator).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::day::Day;
use super::format::{JournalError, day_path, read_day};
use crate::routing::address::{Address, AddressError};

/// The longest period read, in days (ten years).
pub const MAX_DAYS: u32 = 3660;

/// A run of whole UTC days, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Period {
    /// The first day.
    pub first: Day,
    /// The last day.
    pub last: Day,
}

impl Period {
    /// The `days` days ending with `last` (at least one, at most [`MAX_DAYS`]).
    pub fn ending(last: Day, days: u32) -> Period {
        let days = days.clamp(1, MAX_DAYS);
        Period {
            first: last.minus(days - 1),
            last,
        }
    }

    /// Number of days.
    pub fn days(&self) -> u32 {
        self.last.days().saturating_sub(self.first.days()) + 1
    }

    /// Every day, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = Day> {
        (self.first.days()..=self.last.days()).map(Day::from_days)
    }
}

/// One route a recipient was accepted for during the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteUse {
    /// The route name.
    pub route: String,
    /// What the route did, as last recorded (`smtp:[legacy.example]:25`).
    pub kind: String,
    /// Messages over the period.
    pub messages: u64,
    /// First message, Unix seconds.
    pub first_seen: u64,
    /// Last message, Unix seconds.
    pub last_seen: u64,
}

/// A recipient over the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipientHistory {
    /// The recipient's matching key (case-folded `local@domain`).
    pub recipient: String,
    /// Its routes, the most recently used first.
    pub routes: Vec<RouteUse>,
}

impl RecipientHistory {
    /// The route of its last message.
    pub fn current(&self) -> Option<&RouteUse> {
        self.routes.first()
    }

    /// Messages over the period, all routes together.
    pub fn messages(&self) -> u64 {
        self.routes.iter().map(|r| r.messages).sum()
    }

    /// Its last message, Unix seconds.
    pub fn last_seen(&self) -> u64 {
        self.current().map(|r| r.last_seen).unwrap_or(0)
    }
}

/// The journal over a period.
#[derive(Debug, Clone, Serialize)]
pub struct JournalView {
    /// The directory read.
    pub dir: PathBuf,
    /// The period.
    pub period: Period,
    /// Every recipient seen, sorted by key.
    pub recipients: Vec<RecipientHistory>,
    /// Day files found in the period.
    pub files: usize,
    /// Malformed lines skipped, all files together.
    pub skipped: usize,
    /// What was wrong with the first malformed line of each file (`file:line: why`).
    pub warnings: Vec<String>,
}

impl JournalView {
    /// The recipient with this key, if seen.
    pub fn get(&self, key: &str) -> Option<&RecipientHistory> {
        self.recipients
            .binary_search_by(|r| r.recipient.as_str().cmp(key))
            .ok()
            .and_then(|i| self.recipients.get(i))
    }
}

/// Read the day files of `period` in `dir`. Missing days (and a missing directory) are
/// empty; a file that cannot be read is an error.
pub fn load(dir: &Path, period: Period) -> Result<JournalView, JournalError> {
    let mut by_key: HashMap<String, Vec<RouteUse>> = HashMap::new();
    let mut view = JournalView {
        dir: dir.to_path_buf(),
        period,
        recipients: Vec::new(),
        files: 0,
        skipped: 0,
        warnings: Vec::new(),
    };
    for day in period.iter() {
        let path = day_path(dir, day);
        if !path.exists() {
            continue;
        }
        let file = read_day(&path)?;
        view.files += 1;
        view.skipped += file.skipped;
        if let Some((line, why)) = file.first_error {
            view.warnings
                .push(format!("{}:{line}: {why} (line skipped)", path.display()));
        }
        for row in file.rows {
            let routes = by_key.entry(row.recipient).or_default();
            match routes.iter_mut().find(|r| r.route == row.route) {
                Some(r) => {
                    r.messages = r.messages.saturating_add(row.messages);
                    r.first_seen = r.first_seen.min(row.first_seen);
                    if row.last_seen >= r.last_seen {
                        r.last_seen = row.last_seen;
                        r.kind = row.kind;
                    }
                }
                None => routes.push(RouteUse {
                    route: row.route,
                    kind: row.kind,
                    messages: row.messages,
                    first_seen: row.first_seen,
                    last_seen: row.last_seen,
                }),
            }
        }
    }
    view.recipients = by_key
        .into_iter()
        .map(|(recipient, mut routes)| {
            routes.sort_by(|a, b| {
                b.last_seen
                    .cmp(&a.last_seen)
                    .then_with(|| a.route.cmp(&b.route))
            });
            RecipientHistory { recipient, routes }
        })
        .collect();
    view.recipients
        .sort_by(|a, b| a.recipient.cmp(&b.recipient));
    Ok(view)
}

/// The address a journal key stands for. A key is the decoded, case-folded local part,
/// `@`, and the domain; a local part that needs quoting in SMTP (`"john doe"@x`) is
/// quoted again.
pub fn recipient_address(key: &str) -> Result<Address, AddressError> {
    match Address::parse(key) {
        Ok(a) => Ok(a),
        Err(e) => {
            let Some((local, domain)) = key.rsplit_once('@') else {
                return Err(e);
            };
            let quoted = local.replace('\\', "\\\\").replace('"', "\\\"");
            Address::parse(&format!("\"{quoted}\"@{domain}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, day: &str, lines: &[&str]) {
        std::fs::write(dir.join(format!("{day}.tsv")), lines.join("\n")).unwrap();
    }

    #[test]
    fn days_are_summed_and_the_last_route_is_current() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "2024-05-01",
            &[
                "alice@example.com\tlegacy\tsmtp:[192.0.2.1]:25\t4\t2024-05-01T08:00:00Z\t2024-05-01T09:00:00Z",
                "bob@example.com\tlegacy\tsmtp:[192.0.2.1]:25\t1\t2024-05-01T08:00:00Z\t2024-05-01T08:00:00Z",
            ],
        );
        write(
            dir.path(),
            "2024-05-02",
            &[
                "alice@example.com\tlegacy\tsmtp:[192.0.2.9]:25\t2\t2024-05-02T08:00:00Z\t2024-05-02T08:30:00Z",
                "alice@example.com\tm365\tsmtp:m365.example\t3\t2024-05-02T10:00:00Z\t2024-05-02T11:00:00Z",
            ],
        );
        // Outside the period.
        write(
            dir.path(),
            "2024-04-30",
            &["carol@example.com\tlegacy\tk\t9\t2024-04-30T08:00:00Z\t2024-04-30T08:00:00Z"],
        );
        let last = Day::parse("2024-05-02").unwrap();
        let view = load(dir.path(), Period::ending(last, 2)).unwrap();
        assert_eq!(view.files, 2);
        let alice = view.get("alice@example.com").unwrap();
        assert_eq!(alice.messages(), 9);
        assert_eq!(alice.current().map(|r| r.route.as_str()), Some("m365"));
        let legacy = alice.routes.iter().find(|r| r.route == "legacy").unwrap();
        assert_eq!(
            (legacy.messages, legacy.kind.as_str()),
            (6, "smtp:[192.0.2.9]:25")
        );
        assert!(view.get("carol@example.com").is_none());
        let keys: Vec<&str> = view
            .recipients
            .iter()
            .map(|r| r.recipient.as_str())
            .collect();
        assert_eq!(keys, ["alice@example.com", "bob@example.com"]);
    }

    #[test]
    fn a_missing_directory_is_an_empty_journal() {
        let view = load(
            Path::new("/nonexistent/journal"),
            Period::ending(Day::today(), 7),
        )
        .unwrap();
        assert_eq!((view.files, view.recipients.len()), (0, 0));
    }

    #[test]
    fn keys_that_need_quoting_become_addresses_again() {
        let a = recipient_address("john doe@example.com").unwrap();
        assert_eq!(a.key(), "john doe@example.com");
        assert_eq!(
            recipient_address("alice@example.com").unwrap().key(),
            "alice@example.com"
        );
    }
}
