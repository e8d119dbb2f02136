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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::GatewayConfig;

    fn load(text: &str) -> Result<JournalConfig, String> {
        GatewayConfig::from_yaml(text, "splitmx.yaml", Path::new("."))
            .map(|c| c.journal)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_section_is_optional_and_read_with_durations() {
        assert_eq!(
            load("hostname: mx.example.com\n"),
            Ok(JournalConfig::default())
        );
        let c = load("journal:\n  days: 90\n  flush_interval: 2m\n  enabled: false\n").unwrap();
        assert_eq!(
            (c.days, c.flush_interval, c.enabled, c.max_recipients),
            (90, Duration::from_secs(120), false, 1_000_000)
        );
    }

    #[test]
    fn bad_settings_are_refused_with_their_name() {
        assert_eq!(
            load("journal:\n  days: 0\n"),
            Err("splitmx.yaml:1:1: journal.days must be between 1 and 3660, not 0".to_string())
        );
        let unknown = load("journal:\n  dayz: 7\n").unwrap_err();
        assert!(unknown.starts_with("splitmx.yaml:2:"), "{unknown}");
        assert!(unknown.contains("dayz"), "{unknown}");
    }
}
