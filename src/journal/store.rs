//! The on-disk side of the journal: merges what the recorder collected into the day's
//! table and rewrites the day file; deletes day files older than the retention.
//!
//! Runs on a blocking thread (never on the SMTP path). The table of the most recent day
//! stays in memory between flushes, loaded from its file the first time it is needed, so
//! a restart keeps counting where the last flush left off. A day file is rewritten whole
//! (see `format.rs`: temporary file, fsync, rename), so it is always a complete, sorted
//! file; what arrived after the last flush is lost in a crash (at most one interval).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use compact_str::CompactString;
use hashbrown::HashMap;

use super::day::Day;
use super::format::{self, JournalError, RowRef};
use super::recorder::Delta;
use crate::routing::route::Route;

/// One route of one recipient for a day.
#[derive(Debug, Clone)]
struct Entry {
    route: Arc<str>,
    kind: Arc<str>,
    messages: u64,
    first_seen: u64,
    last_seen: u64,
}

/// One day's counts.
#[derive(Debug)]
struct DayTable {
    day: Day,
    map: HashMap<CompactString, Vec<Entry>>,
    dirty: bool,
}

/// What a flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Day files written.
    pub days_written: usize,
    /// Recipients in the most recent day's file.
    pub recipients: usize,
    /// Recipients not recorded because the day was full.
    pub dropped: u64,
    /// Old day files deleted.
    pub pruned: usize,
}

pub(crate) struct Store {
    dir: PathBuf,
    days: u32,
    cap: usize,
    table: Option<DayTable>,
    names: HashMap<Box<str>, Arc<str>>,
    full_logged: Option<Day>,
}

impl Store {
    pub(crate) fn new(dir: PathBuf, days: u32, cap: usize) -> Store {
        Store {
            dir,
            days: days.max(1),
            cap: cap.max(1),
            table: None,
            names: HashMap::new(),
            full_logged: None,
        }
    }

    /// Merge the deltas (oldest day first), write every day touched, prune.
    pub(crate) fn flush(
        &mut self,
        deltas: Vec<Delta>,
        today: Day,
    ) -> Result<FlushReport, JournalError> {
        let mut report = FlushReport::default();
        let mut first_error = None;
        for delta in deltas {
            let Some(day) = delta.day else { continue };
            let current = self.table.as_ref().map(|t| t.day);
            if current.is_some_and(|c| day < c) {
                // A late delta for a past day: merge into that day's file on the side.
                let mut past = self.load(day)?;
                report.dropped += self.merge(&mut past, delta);
                match self.write(&mut past) {
                    Ok(()) => report.days_written += 1,
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
                continue;
            }
            if current != Some(day) {
                // Write what the previous day still owes before letting it go.
                if let Some(mut old) = self.table.take()
                    && old.dirty
                {
                    match self.write(&mut old) {
                        Ok(()) => report.days_written += 1,
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                // Route names seen on older days need not stay interned.
                self.names.clear();
                self.table = Some(self.load(day)?);
            }
            if let Some(mut table) = self.table.take() {
                report.dropped += self.merge(&mut table, delta);
                self.table = Some(table);
            }
        }
        if let Some(mut table) = self.table.take() {
            report.recipients = table.map.len();
            if table.dirty {
                match self.write(&mut table) {
                    Ok(()) => report.days_written += 1,
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            self.table = Some(table);
        }
        report.pruned = self.prune(today)?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Delete day files older than the retention, and temporary files left by a crash.
    pub(crate) fn prune(&self, today: Day) -> Result<usize, JournalError> {
        let oldest_kept = today.minus(self.days - 1);
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(JournalError::io(&self.dir, e)),
        };
        let mut pruned = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let stale_tmp = name.starts_with('.') && name.ends_with(".tmp");
            let old = format::day_of_file_name(name).is_some_and(|d| d < oldest_kept);
            if stale_tmp || old {
                let path = entry.path();
                match std::fs::remove_file(&path) {
                    Ok(()) => pruned += usize::from(old),
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "journal: cannot delete an old file")
                    }
                }
            }
        }
        Ok(pruned)
    }

    fn load(&mut self, day: Day) -> Result<DayTable, JournalError> {
        let path = format::day_path(&self.dir, day);
        let file = format::read_day(&path)?;
        if let Some((line, why)) = &file.first_error {
            tracing::warn!(
                file = %path.display(), line, error = %why, skipped = file.skipped,
                "journal: malformed lines in a day file are dropped when it is rewritten"
            );
        }
        let mut table = DayTable {
            day,
            map: HashMap::with_capacity(file.rows.len()),
            dirty: false,
        };
        for row in file.rows {
            let entry = Entry {
                route: self.intern(&row.route),
                kind: self.intern(&row.kind),
                messages: row.messages,
                first_seen: row.first_seen,
                last_seen: row.last_seen,
            };
            add(
                table
                    .map
                    .entry(CompactString::from(row.recipient))
                    .or_default(),
                entry,
            );
        }
        Ok(table)
    }

    /// Merge a delta into a table; returns the recipients dropped because it was full.
    fn merge(&mut self, table: &mut DayTable, delta: Delta) -> u64 {
        let mut dropped = 0;
        let mut kinds: Vec<(Arc<Route>, Arc<str>)> = Vec::new();
        for (key, hits) in delta.map {
            let full = table.map.len() >= self.cap;
            let entries = match table.map.get_mut(&*key) {
                Some(e) => e,
                None if full => {
                    dropped += 1;
                    continue;
                }
                None => table.map.entry(key).or_default(),
            };
            for hit in hits.as_slice() {
                // Many recipients share a route: render its kind once per flush.
                let kind = match kinds.iter().find(|(r, _)| Arc::ptr_eq(r, &hit.route)) {
                    Some((_, k)) => Arc::clone(k),
                    None => {
                        let k = intern(&mut self.names, &hit.route.kind().to_string());
                        kinds.push((Arc::clone(&hit.route), Arc::clone(&k)));
                        k
                    }
                };
                let entry = Entry {
                    route: intern(&mut self.names, hit.route.name()),
                    kind,
                    messages: hit.messages,
                    first_seen: hit.first_seen,
                    last_seen: hit.last_seen,
                };
                add(entries, entry);
            }
        }
        table.dirty = true;
        if dropped > 0 && self.full_logged != Some(table.day) {
            self.full_logged = Some(table.day);
            tracing::warn!(
                day = %table.day, max_recipients = self.cap, dropped,
                "journal: the day's recipient limit is reached; further new recipients are not recorded today"
            );
        }
        dropped
    }

    fn write(&self, table: &mut DayTable) -> Result<(), JournalError> {
        let mut rows: Vec<RowRef<'_>> = table
            .map
            .iter()
            .flat_map(|(k, entries)| {
                entries.iter().map(move |e| RowRef {
                    recipient: k,
                    route: &e.route,
                    kind: &e.kind,
                    messages: e.messages,
                    first_seen: e.first_seen,
                    last_seen: e.last_seen,
                })
            })
            .collect();
        rows.sort_unstable_by(|a, b| (a.recipient, a.route).cmp(&(b.recipient, b.route)));
        format::write_day(&self.dir, table.day, rows)?;
        table.dirty = false;
        Ok(())
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        intern(&mut self.names, s)
    }

    /// The journal directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

fn intern(names: &mut HashMap<Box<str>, Arc<str>>, s: &str) -> Arc<str> {
    if let Some(a) = names.get(s) {
        return Arc::clone(a);
    }
    let a: Arc<str> = Arc::from(s);
    names.insert(Box::from(s), Arc::clone(&a));
    a
}

/// Add an entry to a recipient's routes (same route name: counts add up, the latest kind
/// wins).
fn add(entries: &mut Vec<Entry>, entry: Entry) {
    match entries.iter_mut().find(|e| e.route == entry.route) {
        Some(e) => {
            e.messages = e.messages.saturating_add(entry.messages);
            e.first_seen = e.first_seen.min(entry.first_seen);
            if entry.last_seen >= e.last_seen {
                e.last_seen = entry.last_seen;
                e.kind = entry.kind;
            }
        }
        None => entries.push(entry),
    }
}
