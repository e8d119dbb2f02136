//! [`Journal`]: the gateway's recipient journal, recorded by the SMTP session and flushed
//! to day files by a background task.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::config::JournalConfig;
use super::day::Day;
use super::format::JournalError;
use super::recorder::Recorder;
use super::store::{FlushReport, Store};
use crate::routing::route::Route;

/// The recipient journal of a running gateway.
///
/// [`Journal::record`] is called for every message the spool accepted and only touches
/// memory; [`Journal::flush`] (every `flush_interval`, and at shutdown) writes the day
/// file and deletes the ones older than `days`.
pub struct Journal {
    recorder: Recorder,
    store: Mutex<Store>,
    config: JournalConfig,
}

impl Journal {
    /// A journal in `dir` (created if missing).
    pub fn open(dir: impl Into<PathBuf>, config: &JournalConfig) -> Result<Journal, JournalError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| JournalError::io(&dir, e))?;
        Ok(Journal {
            recorder: Recorder::new(config.max_recipients),
            store: Mutex::new(Store::new(dir, config.days, config.max_recipients)),
            config: config.clone(),
        })
    }

    /// The directory of the day files.
    pub fn dir(&self) -> PathBuf {
        self.lock_store().dir().to_path_buf()
    }

    /// Count one message, accepted at `at`, for each of its recipients: (matching key,
    /// route). A recipient named twice counts once. No I/O.
    pub fn record<'a>(
        &self,
        at: SystemTime,
        recipients: impl IntoIterator<Item = (&'a str, &'a Arc<Route>)>,
    ) {
        if self.recorder.record(at, recipients) {
            tracing::warn!(
                max_recipients = self.config.max_recipients,
                "journal: more distinct recipients than journal.max_recipients since the last flush; the others are counted, not recorded"
            );
        }
    }

    /// Write what was recorded to the day files and delete old ones. Blocking I/O: call
    /// it from a blocking thread.
    pub fn flush(&self) -> Result<FlushReport, JournalError> {
        self.flush_at(SystemTime::now())
    }

    /// [`Journal::flush`], pruning relative to `now` instead of the clock.
    pub fn flush_at(&self, now: SystemTime) -> Result<FlushReport, JournalError> {
        let mut store = self.lock_store();
        let deltas = self.recorder.take();
        let result = store.flush(deltas, Day::of(now));
        if let Ok(report) = &result {
            self.recorder.add_overflow(report.dropped);
        }
        result
    }

    /// Recipients counted but not recorded because a limit was reached, since start.
    pub fn overflow(&self) -> u64 {
        self.recorder.overflow()
    }

    /// The settings.
    pub fn config(&self) -> &JournalConfig {
        &self.config
    }

    /// Flush every `flush_interval` on a blocking thread, until the task is aborted.
    pub fn spawn_flusher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let journal = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(journal.config.flush_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                journal.flush_blocking().await;
            }
        })
    }

    /// Flush on a blocking thread and log the outcome (for the flusher and at shutdown).
    pub async fn flush_blocking(self: &Arc<Self>) {
        let journal = Arc::clone(self);
        let metrics = crate::metrics::metrics();
        match tokio::task::spawn_blocking(move || journal.flush()).await {
            Ok(Ok(report)) => {
                metrics.journal_flush(Some(report.recipients));
                tracing::debug!(
                    days_written = report.days_written,
                    recipients = report.recipients,
                    pruned = report.pruned,
                    "journal flushed"
                );
            }
            Ok(Err(e)) => {
                metrics.journal_flush(None);
                tracing::warn!(error = %e, "journal: flush failed; will retry");
            }
            Err(e) => {
                metrics.journal_flush(None);
                tracing::warn!(error = %e, "journal: flush task failed");
            }
        }
    }

    fn lock_store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir())
            .field("config", &self.config)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::day::from_unix_secs;
    use crate::journal::format::{day_path, read_day};

    const T: u64 = 1_714_521_600; // 2024-05-01T00:00:00Z
    const DAY: u64 = 86_400;

    fn route(name: &str, spec: &str) -> Arc<Route> {
        Arc::new(Route::parse_transport(name, spec).unwrap())
    }

    fn config(days: u32, max_recipients: usize) -> JournalConfig {
        JournalConfig {
            days,
            max_recipients,
            ..JournalConfig::default()
        }
    }

    fn lines(dir: &std::path::Path, day: &str) -> Vec<String> {
        std::fs::read_to_string(dir.join(format!("{day}.tsv")))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    }

    fn files(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_flush_writes_the_day_file_and_a_reopened_journal_keeps_counting() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("journal");
        let legacy = route("legacy", "smtp:[192.0.2.25]:25");
        let j = Journal::open(&dir, &config(30, 100)).unwrap();
        j.record(
            from_unix_secs(T + 60),
            [("bob@example.com", &legacy), ("alice@example.com", &legacy)],
        );
        j.record(from_unix_secs(T + 120), [("alice@example.com", &legacy)]);
        let report = j.flush_at(from_unix_secs(T + 130)).unwrap();
        assert_eq!((report.days_written, report.recipients), (1, 2));
        assert_eq!(
            lines(&dir, "2024-05-01"),
            [
                "alice@example.com\tlegacy\tsmtp:[192.0.2.25]:25\t2\t2024-05-01T00:01:00Z\t2024-05-01T00:02:00Z",
                "bob@example.com\tlegacy\tsmtp:[192.0.2.25]:25\t1\t2024-05-01T00:01:00Z\t2024-05-01T00:01:00Z",
            ]
        );
        // Nothing new: no rewrite needed, the file stays as it is.
        assert_eq!(j.flush_at(from_unix_secs(T + 190)).unwrap().days_written, 0);
        drop(j);
        // A restart: the day's counts continue from the file.
        let j = Journal::open(&dir, &config(30, 100)).unwrap();
        let m365 = route("m365", "smtp:example-com.mail.protection.outlook.com");
        j.record(
            from_unix_secs(T + 600),
            [("alice@example.com", &m365), ("bob@example.com", &legacy)],
        );
        j.flush_at(from_unix_secs(T + 601)).unwrap();
        assert_eq!(
            lines(&dir, "2024-05-01"),
            [
                "alice@example.com\tlegacy\tsmtp:[192.0.2.25]:25\t2\t2024-05-01T00:01:00Z\t2024-05-01T00:02:00Z",
                "alice@example.com\tm365\tsmtp:example-com.mail.protection.outlook.com\t1\t2024-05-01T00:10:00Z\t2024-05-01T00:10:00Z",
                "bob@example.com\tlegacy\tsmtp:[192.0.2.25]:25\t2\t2024-05-01T00:01:00Z\t2024-05-01T00:10:00Z",
            ]
        );
    }

    #[test]
    fn messages_across_midnight_go_to_their_own_day_files() {
        let tmp = tempfile::tempdir().unwrap();
        let legacy = route("legacy", "smtp:[192.0.2.25]:25");
        let j = Journal::open(tmp.path(), &config(30, 100)).unwrap();
        j.record(
            from_unix_secs(T + DAY - 1),
            [("alice@example.com", &legacy)],
        );
        j.record(from_unix_secs(T + DAY), [("alice@example.com", &legacy)]);
        j.record(
            from_unix_secs(T + DAY + 5),
            [("alice@example.com", &legacy)],
        );
        let report = j.flush_at(from_unix_secs(T + DAY + 10)).unwrap();
        assert_eq!(report.days_written, 2);
        assert_eq!(files(tmp.path()), ["2024-05-01.tsv", "2024-05-02.tsv"]);
        let counts = |day: &str| {
            read_day(&tmp.path().join(format!("{day}.tsv")))
                .unwrap()
                .rows[0]
                .messages
        };
        assert_eq!((counts("2024-05-01"), counts("2024-05-02")), (1, 2));
    }

    #[test]
    fn the_daily_recipient_limit_holds_across_flushes() {
        let tmp = tempfile::tempdir().unwrap();
        let r = route("legacy", "smtp:[192.0.2.25]:25");
        let j = Journal::open(tmp.path(), &config(30, 3)).unwrap();
        j.record(
            from_unix_secs(T),
            [("a@x.example", &r), ("b@x.example", &r)],
        );
        j.flush_at(from_unix_secs(T)).unwrap();
        // The recorder's delta is empty again, so the store must enforce the day's limit.
        j.record(
            from_unix_secs(T + 1),
            [
                ("c@x.example", &r),
                ("d@x.example", &r),
                ("a@x.example", &r),
            ],
        );
        let report = j.flush_at(from_unix_secs(T + 2)).unwrap();
        assert_eq!((report.recipients, report.dropped), (3, 1));
        assert_eq!(j.overflow(), 1);
        let file = read_day(&day_path(tmp.path(), Day::of_secs(T))).unwrap();
        let who: Vec<(&str, u64)> = file
            .rows
            .iter()
            .map(|r| (r.recipient.as_str(), r.messages))
            .collect();
        assert_eq!(who.len(), 3);
        assert_eq!(who[0], ("a@x.example", 2), "known recipients keep counting");
        // The next day starts from zero.
        j.record(from_unix_secs(T + DAY), [("d@x.example", &r)]);
        let report = j.flush_at(from_unix_secs(T + DAY)).unwrap();
        assert_eq!((report.recipients, report.dropped), (1, 0));
    }

    #[test]
    fn day_files_older_than_the_retention_and_stale_temporary_files_are_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for name in [
            "2024-04-24.tsv",
            "2024-04-25.tsv",
            "2024-04-26.tsv",
            ".2024-04-30.tsv.tmp",
            "notes.txt",
        ] {
            std::fs::write(dir.join(name), "# kept by hand\n").unwrap();
        }
        let j = Journal::open(dir, &config(7, 100)).unwrap();
        // Days kept with days: 7 on 2024-05-01: 2024-04-25 to 2024-05-01.
        let report = j.flush_at(from_unix_secs(T)).unwrap();
        assert_eq!(report.pruned, 1);
        assert_eq!(
            files(dir),
            ["2024-04-25.tsv", "2024-04-26.tsv", "notes.txt"]
        );
    }

    #[test]
    fn a_crash_during_a_write_leaves_the_last_complete_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let r = route("legacy", "smtp:[192.0.2.25]:25");
        let j = Journal::open(dir, &config(30, 100)).unwrap();
        j.record(from_unix_secs(T), [("a@x.example", &r)]);
        j.flush_at(from_unix_secs(T)).unwrap();
        let good = std::fs::read(dir.join("2024-05-01.tsv")).unwrap();
        // What a crash between write and rename leaves behind.
        std::fs::write(dir.join(".2024-05-01.tsv.tmp"), "a@x.example\tleg").unwrap();
        drop(j);
        let j = Journal::open(dir, &config(30, 100)).unwrap();
        j.flush_at(from_unix_secs(T)).unwrap();
        assert_eq!(std::fs::read(dir.join("2024-05-01.tsv")).unwrap(), good);
        assert_eq!(files(dir), ["2024-05-01.tsv"]);
    }
}
