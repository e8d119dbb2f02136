//! The in-memory side of the journal: what the SMTP session touches for every accepted
//! message. One mutex around a hash map from recipient key to its routes and counts; no
//! I/O, and no allocation for a recipient already seen since the last flush. Keys are
//! inline up to 24 bytes (most addresses), which saves a cache miss per lookup.
//!
//! The map holds what arrived since the last flush (a delta), for the current UTC day;
//! when a message arrives on a new day, the old day's delta is set aside for the flusher.
//! At most `cap` recipients are kept per delta; more are counted as overflow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use compact_str::CompactString;
use hashbrown::HashMap;
use hashbrown::hash_map::EntryRef;

use super::day::{Day, unix_secs};
use crate::routing::route::Route;

/// One route of one recipient in a delta.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub(crate) route: Arc<Route>,
    pub(crate) messages: u64,
    pub(crate) first_seen: u64,
    pub(crate) last_seen: u64,
    /// The `record` call that last counted it, so a recipient named twice in one message
    /// counts once.
    generation: u64,
}

/// The routes of one recipient; nearly always one.
#[derive(Debug, Clone)]
pub(crate) enum Hits {
    One(Hit),
    Many(Vec<Hit>),
}

impl Hits {
    pub(crate) fn as_slice(&self) -> &[Hit] {
        match self {
            Hits::One(h) => std::slice::from_ref(h),
            Hits::Many(v) => v,
        }
    }

    fn find(&mut self, route: &Arc<Route>) -> Option<&mut Hit> {
        let same = |h: &&mut Hit| Arc::ptr_eq(&h.route, route) || h.route.name() == route.name();
        match self {
            Hits::One(h) => Some(h).filter(same),
            Hits::Many(v) => v.iter_mut().find(same),
        }
    }

    fn push(&mut self, hit: Hit) {
        match self {
            Hits::One(h) => {
                let first = h.clone();
                *self = Hits::Many(vec![first, hit]);
            }
            Hits::Many(v) => v.push(hit),
        }
    }
}

/// What arrived for one day since the last flush.
#[derive(Debug, Default)]
pub(crate) struct Delta {
    pub(crate) day: Option<Day>,
    pub(crate) map: HashMap<CompactString, Hits>,
}

struct Hot {
    current: Delta,
    /// Deltas of past days, waiting for the flusher.
    finished: Vec<Delta>,
    generation: u64,
    /// The overflow of the current day has been logged.
    overflow_logged: bool,
    /// Something was recorded since the last `take`.
    dirty: bool,
}

/// The recorder: cheap to call for every message.
pub(crate) struct Recorder {
    hot: Mutex<Hot>,
    cap: usize,
    overflow: AtomicU64,
}

impl Recorder {
    /// A recorder keeping at most `cap` recipients between flushes.
    pub(crate) fn new(cap: usize) -> Recorder {
        Recorder {
            hot: Mutex::new(Hot {
                current: Delta::default(),
                finished: Vec::new(),
                generation: 0,
                overflow_logged: false,
                dirty: false,
            }),
            cap: cap.max(1),
            overflow: AtomicU64::new(0),
        }
    }

    /// Count one message for each recipient (key and route); a recipient given twice
    /// counts once. Returns true when this call is the first of the day to overflow.
    pub(crate) fn record<'a>(
        &self,
        at: SystemTime,
        recipients: impl IntoIterator<Item = (&'a str, &'a Arc<Route>)>,
    ) -> bool {
        let secs = unix_secs(at);
        let day = Day::of_secs(secs);
        let mut hot = self.hot.lock().unwrap_or_else(|e| e.into_inner());
        let hot = &mut *hot;
        match hot.current.day {
            Some(d) if d >= day => {}
            Some(_) => {
                // A new day: set the old one aside. (A clock going backwards keeps
                // counting into the current day instead.)
                let old = std::mem::take(&mut hot.current);
                if !old.map.is_empty() {
                    hot.finished.push(old);
                }
                hot.current.day = Some(day);
                hot.overflow_logged = false;
            }
            None => hot.current.day = Some(day),
        }
        hot.generation += 1;
        hot.dirty = true;
        let generation = hot.generation;
        let mut overflowed = 0;
        for (key, route) in recipients {
            let full = hot.current.map.len() >= self.cap;
            match hot.current.map.entry_ref(key) {
                EntryRef::Occupied(mut e) => match e.get_mut().find(route) {
                    Some(hit) if hit.generation == generation => {}
                    Some(hit) => {
                        hit.messages += 1;
                        hit.last_seen = hit.last_seen.max(secs);
                        hit.generation = generation;
                    }
                    None => e.get_mut().push(new_hit(route, secs, generation)),
                },
                EntryRef::Vacant(_) if full => overflowed += 1,
                EntryRef::Vacant(e) => {
                    e.insert_with_key(
                        CompactString::from(key),
                        Hits::One(new_hit(route, secs, generation)),
                    );
                }
            }
        }
        if overflowed == 0 {
            return false;
        }
        self.overflow.fetch_add(overflowed, Ordering::Relaxed);
        !std::mem::replace(&mut hot.overflow_logged, true)
    }

    /// Take everything recorded since the last call: past days first, then the current
    /// day. Empty when nothing was recorded.
    pub(crate) fn take(&self) -> Vec<Delta> {
        let mut hot = self.hot.lock().unwrap_or_else(|e| e.into_inner());
        if !std::mem::replace(&mut hot.dirty, false) {
            return Vec::new();
        }
        let mut out = std::mem::take(&mut hot.finished);
        let day = hot.current.day;
        let current = std::mem::replace(
            &mut hot.current,
            Delta {
                day,
                map: HashMap::new(),
            },
        );
        if !current.map.is_empty() {
            out.push(current);
        }
        out
    }

    /// Recipients not recorded because a delta was full.
    pub(crate) fn overflow(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }

    /// Count recipients dropped elsewhere (by the store) in the same counter.
    pub(crate) fn add_overflow(&self, n: u64) {
        self.overflow.fetch_add(n, Ordering::Relaxed);
    }
}

fn new_hit(route: &Arc<Route>, secs: u64, generation: u64) -> Hit {
    Hit {
        route: Arc::clone(route),
        messages: 1,
        first_seen: secs,
        last_seen: secs,
        generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::day::from_unix_secs;

    fn route(name: &str) -> Arc<Route> {
        Arc::new(Route::parse_transport(name, "smtp:[192.0.2.1]:25").unwrap())
    }

    const T: u64 = 1_714_521_600; // 2024-05-01T00:00:00Z

    fn counts(deltas: &[Delta]) -> Vec<(String, String, String, u64)> {
        let mut out: Vec<_> = deltas
            .iter()
            .flat_map(|d| {
                d.map.iter().flat_map(move |(k, hits)| {
                    hits.as_slice().iter().map(move |h| {
                        (
                            d.day.map(|d| d.to_string()).unwrap_or_default(),
                            k.to_string(),
                            h.route.name().to_string(),
                            h.messages,
                        )
                    })
                })
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn counts_messages_per_recipient_and_route_once_per_message() {
        let r = Recorder::new(10);
        let (a, b) = (route("legacy"), route("m365"));
        r.record(
            from_unix_secs(T),
            [("alice@x", &a), ("alice@x", &a), ("bob@x", &a)],
        );
        r.record(from_unix_secs(T + 5), [("alice@x", &a)]);
        r.record(from_unix_secs(T + 9), [("alice@x", &b)]);
        let deltas = r.take();
        assert_eq!(
            counts(&deltas),
            [
                ("2024-05-01".into(), "alice@x".into(), "legacy".into(), 2),
                ("2024-05-01".into(), "alice@x".into(), "m365".into(), 1),
                ("2024-05-01".into(), "bob@x".into(), "legacy".into(), 1),
            ]
        );
        assert!(r.take().is_empty(), "a second take has nothing new");
    }

    #[test]
    fn a_new_day_sets_the_old_one_aside() {
        let r = Recorder::new(10);
        let a = route("legacy");
        r.record(from_unix_secs(T + 86_399), [("alice@x", &a)]);
        r.record(from_unix_secs(T + 86_400), [("alice@x", &a)]);
        // A clock step backwards counts into the current day.
        r.record(from_unix_secs(T), [("bob@x", &a)]);
        let deltas = r.take();
        assert_eq!(
            counts(&deltas),
            [
                ("2024-05-01".into(), "alice@x".into(), "legacy".into(), 1),
                ("2024-05-02".into(), "alice@x".into(), "legacy".into(), 1),
                ("2024-05-02".into(), "bob@x".into(), "legacy".into(), 1),
            ]
        );
    }

    #[test]
    fn recipients_beyond_the_cap_are_counted_as_overflow_and_reported_once() {
        let r = Recorder::new(2);
        let a = route("legacy");
        assert!(!r.record(from_unix_secs(T), [("a@x", &a), ("b@x", &a)]));
        assert!(r.record(from_unix_secs(T), [("c@x", &a), ("a@x", &a)]));
        assert!(!r.record(from_unix_secs(T), [("d@x", &a)]), "logged once");
        assert_eq!(r.overflow(), 2);
        let deltas = r.take();
        let c = counts(&deltas);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].3, 2, "known recipients still count");
        // A new day may log again.
        r.record(from_unix_secs(T + 86_400), [("a@x", &a), ("b@x", &a)]);
        assert!(r.record(from_unix_secs(T + 86_400), [("e@x", &a)]));
    }
}
