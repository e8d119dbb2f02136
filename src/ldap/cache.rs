//! The answer cache: positive and negative TTLs, and last-known-good answers while the
//! directory fails.
//!
//! Input: the answers of successful searches only (an entry, or no entry). A failed
//! search is never stored, so an outage can never turn into a cached "no such user";
//! while the directory fails, an entry found earlier keeps routing for `stale_if_error`
//! after its TTL. A fresh "no such entry" removes any earlier entry, so a deleted
//! mailbox is not routed from the past. Bounded by `max_entries`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::config::CacheConfig;
use super::mapping::Found;

/// What the cache holds for one recipient.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    /// The entry, or `None` for "no such entry".
    pub(crate) found: Option<Arc<Found>>,
    /// How old the answer is.
    pub(crate) age: Duration,
}

struct Stored {
    found: Option<Arc<Found>>,
    at: Instant,
}

/// The cache.
pub(crate) struct Cache {
    config: CacheConfig,
    map: Mutex<HashMap<Box<str>, Stored>>,
}

impl Cache {
    /// A cache, or `None` when the configuration caches nothing.
    pub(crate) fn new(config: &CacheConfig) -> Option<Cache> {
        config.enabled().then(|| Cache {
            config: config.clone(),
            map: Mutex::new(HashMap::new()),
        })
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Box<str>, Stored>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh answer for `key`: an entry within the positive TTL, or "no such entry"
    /// within the negative TTL.
    pub(crate) fn fresh(&self, key: &str, now: Instant) -> Option<Cached> {
        let map = self.map();
        let stored = map.get(key)?;
        let age = now.saturating_duration_since(stored.at);
        let ttl = match stored.found {
            Some(_) => self.config.positive_ttl,
            None => self.config.negative_ttl,
        };
        (age < ttl).then(|| Cached {
            found: stored.found.clone(),
            age,
        })
    }

    /// The last known entry for `key`, for use while the directory fails: only an entry
    /// found, and only within the positive TTL plus the stale-if-error window.
    pub(crate) fn stale(&self, key: &str, now: Instant) -> Option<(Arc<Found>, Duration)> {
        let map = self.map();
        let stored = map.get(key)?;
        let found = stored.found.clone()?;
        let age = now.saturating_duration_since(stored.at);
        (age < self.config.positive_ttl + self.config.stale_if_error).then_some((found, age))
    }

    /// Store the answer of a successful search.
    pub(crate) fn store(&self, key: &str, found: Option<Arc<Found>>, now: Instant) {
        let keep = match found {
            Some(_) => !(self.config.positive_ttl + self.config.stale_if_error).is_zero(),
            None => !self.config.negative_ttl.is_zero(),
        };
        let mut map = self.map();
        if !keep {
            map.remove(key);
            return;
        }
        if map.len() >= self.config.max_entries && !map.contains_key(key) {
            self.make_room(&mut map, now);
        }
        map.insert(key.into(), Stored { found, at: now });
    }

    /// Drop expired answers; if that is not enough, drop an eighth of the rest.
    fn make_room(&self, map: &mut HashMap<Box<str>, Stored>, now: Instant) {
        let positive = self.config.positive_ttl + self.config.stale_if_error;
        let negative = self.config.negative_ttl;
        map.retain(|_, s| {
            let age = now.saturating_duration_since(s.at);
            age < if s.found.is_some() {
                positive
            } else {
                negative
            }
        });
        if map.len() >= self.config.max_entries {
            let excess = map.len() + 1 - self.config.max_entries + self.config.max_entries / 8;
            let victims: Vec<Box<str>> = map.keys().take(excess).cloned().collect();
            for k in victims {
                map.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found() -> Option<Arc<Found>> {
        Some(Arc::new(Found {
            dn: "uid=a".into(),
            mail_host: None,
            routing_address: None,
            server: Arc::from("ldap://test"),
        }))
    }

    fn cache(pos: u64, neg: u64, stale: u64, max: usize) -> Cache {
        Cache::new(&CacheConfig {
            positive_ttl: Duration::from_secs(pos),
            negative_ttl: Duration::from_secs(neg),
            stale_if_error: Duration::from_secs(stale),
            max_entries: max,
        })
        .unwrap_or_else(|| panic!("cache disabled"))
    }

    #[test]
    fn ttls_and_stale_window() {
        let c = cache(10, 5, 100, 10);
        let t0 = Instant::now();
        c.store("a", found(), t0);
        c.store("n", None, t0);
        assert!(c.fresh("a", t0 + Duration::from_secs(9)).is_some());
        assert!(c.fresh("a", t0 + Duration::from_secs(11)).is_none());
        assert!(c.stale("a", t0 + Duration::from_secs(109)).is_some());
        assert!(c.stale("a", t0 + Duration::from_secs(111)).is_none());
        assert!(c.fresh("n", t0 + Duration::from_secs(4)).is_some());
        assert!(c.fresh("n", t0 + Duration::from_secs(6)).is_none());
        assert!(c.stale("n", t0).is_none(), "no stale negatives");
    }

    #[test]
    fn not_found_replaces_an_entry_even_without_negative_caching() {
        let c = cache(10, 0, 100, 10);
        let t0 = Instant::now();
        c.store("a", found(), t0);
        c.store("a", None, t0);
        assert!(c.stale("a", t0).is_none());
        assert!(c.fresh("a", t0).is_none());
    }

    #[test]
    fn bounded() {
        let c = cache(10, 10, 0, 16);
        let t0 = Instant::now();
        for i in 0..100 {
            c.store(&format!("k{i}"), None, t0);
        }
        assert!(c.map().len() <= 16);
        assert!(c.fresh("k99", t0).is_some());
    }

    #[test]
    fn disabled_when_nothing_is_kept() {
        assert!(Cache::new(&CacheConfig::default()).is_none());
    }
}
