//! The `journal:` section of the gateway configuration.

use std::time::Duration;

use serde::Deserialize;

/// How the gateway keeps its recipient journal.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Keep the journal (on by default: it is what `splitmx report` and `diff` read).
    pub enabled: bool,
    /// Days of day files kept; older ones are deleted.
    pub days: u32,
    /// Distinct recipients recorded per day; more are counted, not recorded.
    pub max_recipients: usize,
    /// How often what was recorded in memory is written to the day file.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub flush_interval: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            enabled: true,
            days: 30,
            max_recipients: 1_000_000,
            flush_interval: Duration::from_secs(60),
        }
    }
}

impl JournalConfig {
    /// What is wrong with the settings, if anything.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=super::read::MAX_DAYS).contains(&self.days) {
            return Err(format!(
                "journal.days must be between 1 and {}, not {}",
                super::read::MAX_DAYS,
                self.days
            ));
        }
        if self.max_recipients == 0 {
            return Err("journal.max_recipients must be at least 1".to_string());
        }
        if self.flush_interval < Duration::from_secs(1) {
            return Err("journal.flush_interval must be at least 1s".to_string());
        }
        Ok(())
    }
}
