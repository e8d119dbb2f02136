//! Queue ids: 16 characters of `[0-9A-Z]`, unique, sortable by creation time.
//!
//! Layout: 11 characters of base-32 microseconds since the Unix epoch (55 bits, good until
//! the year 3111), then 5 characters (25 bits) of per-process randomness. The alphabet is
//! Crockford's base 32 (`0-9`, `A-Z` without `I L O U`), which is in ASCII order, so
//! ordering ids as strings orders them by time. Within one process the time part is
//! strictly increasing (a clock step backwards or two ids in one microsecond take the next
//! microsecond), so ids never repeat; the random part keeps ids of two processes, or of a
//! restart after the clock went back, apart.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The base-32 alphabet, in ASCII order.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Length of a queue id.
pub const QUEUE_ID_LEN: usize = 16;
/// Characters of the time part.
const TIME_CHARS: usize = 11;

/// The last time part handed out by this process (microseconds).
static LAST_MICROS: AtomicU64 = AtomicU64::new(0);

/// A queue id, e.g. `0K8ZQ3XG4A7MB2NR`: made by the SMTP session before the message is
/// committed (the `Received:` field carries it), then the message's name in the spool,
/// the logs and `splitmx queue`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId([u8; QUEUE_ID_LEN]);

impl QueueId {
    /// A new id, unique and later than every id made before by this process.
    pub fn new() -> QueueId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let mut last = LAST_MICROS.load(Ordering::Relaxed);
        let micros = loop {
            let next = now.max(last.saturating_add(1));
            match LAST_MICROS.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break next,
                Err(seen) => last = seen,
            }
        };
        let mut id = [0u8; QUEUE_ID_LEN];
        encode(micros, &mut id[..TIME_CHARS]);
        encode(random(micros), &mut id[TIME_CHARS..]);
        QueueId(id)
    }

    /// When the id was made (microsecond precision).
    pub fn created(&self) -> SystemTime {
        let micros = self.0[..TIME_CHARS].iter().fold(0u64, |acc, &c| {
            (acc << 5) | u64::from(value(c).unwrap_or(0))
        });
        UNIX_EPOCH
            .checked_add(Duration::from_micros(micros))
            .unwrap_or(UNIX_EPOCH)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        // Every byte is from ALPHABET (checked by every constructor), hence ASCII.
        std::str::from_utf8(&self.0).unwrap_or("????????????????")
    }
}

impl Default for QueueId {
    fn default() -> Self {
        QueueId::new()
    }
}

/// Writes the low `5 * out.len()` bits of `v`, most significant first.
fn encode(mut v: u64, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v & 31) as usize];
        v >>= 5;
    }
}

/// The value of an alphabet character.
fn value(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u8)
}

/// 64 random-looking bits: the per-process random key of std's `RandomState`, mixed with
/// the time part and a counter.
fn random(micros: u64) -> u64 {
    // The pid is read once: `getpid(2)` per message showed in `perf trace`.
    static KEYS: OnceLock<(RandomState, u32)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (keys, pid) = KEYS.get_or_init(|| (RandomState::new(), std::process::id()));
    let mut h = keys.build_hasher();
    h.write_u64(micros);
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(*pid);
    h.finish()
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({})", self.as_str())
    }
}

/// A string that is not a queue id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a queue id: {0:?} (expected 16 characters of 0-9 and A-Z without I, L, O, U)")]
pub struct ParseQueueIdError(pub String);

impl FromStr for QueueId {
    type Err = ParseQueueIdError;

    /// Parses an id as displayed; lower case is accepted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseQueueIdError(s.chars().take(64).collect());
        let bytes = s.as_bytes();
        if bytes.len() != QUEUE_ID_LEN {
            return Err(bad());
        }
        let mut id = [0u8; QUEUE_ID_LEN];
        for (slot, &c) in id.iter_mut().zip(bytes) {
            let c = c.to_ascii_uppercase();
            if value(c).is_none() {
                return Err(bad());
            }
            *slot = c;
        }
        Ok(QueueId(id))
    }
}

impl serde::Serialize for QueueId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for QueueId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_sorted_and_round_trip() {
        let ids: Vec<QueueId> = (0..10_000).map(|_| QueueId::new()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
            assert!(pair[0].as_str() < pair[1].as_str());
        }
        for id in &ids[..10] {
            let s = id.to_string();
            assert_eq!(s.len(), 16);
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            );
            assert_eq!(s.parse::<QueueId>(), Ok(*id));
            assert_eq!(s.to_ascii_lowercase().parse::<QueueId>(), Ok(*id));
        }
        let age = SystemTime::now()
            .duration_since(ids[0].created())
            .unwrap_or_default();
        assert!(age < Duration::from_secs(60), "created() is {age:?} ago");
    }

    #[test]
    fn rejects_non_ids() {
        for s in [
            "",
            "0123456789ABCDE",
            "0123456789ABCDEFG",
            "0123456789ABCDEI",
            "0123456789ABCDé",
        ] {
            assert!(s.parse::<QueueId>().is_err(), "{s:?}");
        }
    }
}
