//! The retry schedule: how long to wait after a temporary failure, and when a message has
//! been queued long enough to bounce or to warn its sender.
//!
//! Inputs: the number of failed attempts so far, the `delivery:` settings (`retry_min`,
//! `retry_max`, `lifetime`, `delay_warning`) and the clock values the caller reads. Outputs:
//! delays and points in time; nothing here sleeps or reads the clock except to seed the
//! jitter. Nothing here can overflow or panic, whatever the numbers.
//!
//! The delay before attempt `failures + 1` is `retry_min * 2^(failures - 1)`, capped at
//! `retry_max`. Jitter only ever shortens it: the delay is drawn uniformly from
//! `[d * (1 - jitter), d]`. So the cap holds with jitter too, the schedule never runs
//! later than the administrator wrote, and recipients that failed together (a next hop
//! went down) spread out instead of all coming back in the same second.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::DeliveryConfig;

/// The jitter [`RetryPolicy::from_config`] uses: a delay lands between 75% and 100% of
/// its nominal value.
pub const DEFAULT_JITTER: f64 = 0.25;

/// The delay before attempt number `failures + 1`: `min * 2^(failures - 1)`, at most
/// `max`, shortened by a random fraction of at most `jitter` (clamped to `0..=1`).
///
/// `failures` 0 is treated as 1 (the first retry waits `min`). When `min > max`, `max`
/// wins: the cap is the administrator's promise about the longest wait.
///
/// ```
/// use std::time::Duration;
/// use splitmx::delivery::retry::backoff;
///
/// let (min, max) = (Duration::from_secs(60), Duration::from_secs(3600));
/// assert_eq!(backoff(1, min, max, 0.0), min);
/// assert_eq!(backoff(3, min, max, 0.0), Duration::from_secs(240));
/// assert_eq!(backoff(u32::MAX, min, max, 0.0), max);
/// let d = backoff(3, min, max, 0.5);
/// assert!(d >= Duration::from_secs(120) && d <= Duration::from_secs(240));
/// ```
pub fn backoff(failures: u32, min: Duration, max: Duration, jitter: f64) -> Duration {
    let nominal = nominal(failures, min, max);
    let jitter = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    if jitter == 0.0 || nominal.is_zero() {
        return nominal;
    }
    // A fraction in [0, 1) from the top 53 bits, as an f64 holds them exactly.
    let unit = (next_random() >> 11) as f64 / (1u64 << 53) as f64;
    let cut = nominal.mul_f64(jitter * unit);
    nominal.saturating_sub(cut)
}

/// The un-jittered delay: `min * 2^(failures - 1)` capped at `max`.
fn nominal(failures: u32, min: Duration, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1);
    let factor = 1u32.checked_shl(doublings).filter(|f| *f != 0);
    factor
        .and_then(|f| min.checked_mul(f))
        .unwrap_or(max)
        .min(max)
}

/// The retry settings of a running queue, with the arithmetic the queue manager needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// First retry delay.
    pub min: Duration,
    /// Longest retry delay.
    pub max: Duration,
    /// Fraction (0 to 1) by which a delay may be shortened at random.
    pub jitter: f64,
    /// How long a message may stay queued before its undelivered recipients bounce.
    pub lifetime: Duration,
    /// Queue time after which the sender gets a "delayed" notice; zero sends none.
    pub delay_warning: Duration,
}

impl RetryPolicy {
    /// The policy of the `delivery:` settings, with [`DEFAULT_JITTER`].
    pub fn from_config(config: &DeliveryConfig) -> RetryPolicy {
        RetryPolicy {
            min: config.retry_min,
            max: config.retry_max,
            jitter: DEFAULT_JITTER,
            lifetime: config.lifetime,
            delay_warning: config.delay_warning,
        }
    }

    /// The delay after `failures` failed attempts ([`backoff`]).
    pub fn delay(&self, failures: u32) -> Duration {
        backoff(failures, self.min, self.max, self.jitter)
    }

    /// When to try again after `failures` failed attempts, the last one at `now`. Never
    /// later than [`RetryPolicy::retry_until`], so the last try happens when the lifetime
    /// runs out rather than up to `max` after it.
    pub fn next_attempt(
        &self,
        failures: u32,
        now: SystemTime,
        received_at: SystemTime,
    ) -> SystemTime {
        let next = now.checked_add(self.delay(failures)).unwrap_or(now);
        next.min(self.retry_until(received_at).max(now))
    }

    /// When a message received at `received_at` stops being retried (the DSN's
    /// `Will-Retry-Until`).
    pub fn retry_until(&self, received_at: SystemTime) -> SystemTime {
        received_at
            .checked_add(self.lifetime)
            .unwrap_or(far_future())
    }

    /// True when a message received at `received_at` has been queued for its whole
    /// lifetime at `now`: its undelivered recipients bounce after the current attempt.
    pub fn expired(&self, received_at: SystemTime, now: SystemTime) -> bool {
        now >= self.retry_until(received_at)
    }

    /// True when a "delayed" notice is due at `now` for a message received at
    /// `received_at` (the caller remembers that it sent one). Never when the warning is
    /// off, and never once the message has expired (its bounce says it all).
    pub fn delay_warning_due(&self, received_at: SystemTime, now: SystemTime) -> bool {
        if self.delay_warning.is_zero() || self.delay_warning >= self.lifetime {
            return false;
        }
        let due = received_at
            .checked_add(self.delay_warning)
            .unwrap_or(far_future());
        now >= due && !self.expired(received_at, now)
    }
}

/// Where a message's retry schedule stands after a restart ([`RetryPolicy::resume`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    /// Failed attempts so far, as the schedule would have made them.
    pub failures: u32,
    /// Whether the "delayed" notice was due at the last attempt (and so was sent then).
    pub warned: bool,
    /// When to try next: never before `now`.
    pub next_at: SystemTime,
}

impl RetryPolicy {
    /// Picks up the schedule of a message found in the spool at start, from what the spool
    /// keeps: when it was received and when its last attempt ended (`None`: never tried,
    /// or nothing failed). Without this a restart would retry every deferred message at
    /// once, start each backoff again from `min`, and send a second delay notice.
    ///
    /// The number of failures is the number of attempts the un-jittered schedule makes
    /// between reception and the last attempt; jitter and manual retries make the real
    /// number somewhat larger, so the estimate errs towards retrying sooner.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use splitmx::delivery::retry::RetryPolicy;
    ///
    /// let min = Duration::from_secs(60);
    /// let policy = RetryPolicy {
    ///     min,
    ///     max: Duration::from_secs(4 * 3600),
    ///     jitter: 0.0,
    ///     lifetime: Duration::from_secs(5 * 86400),
    ///     delay_warning: Duration::from_secs(4 * 3600),
    /// };
    /// let received = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    /// // Attempts at 0, 1, 3 and 7 minutes failed; the gateway restarts at 8 minutes.
    /// let last = received + 7 * min;
    /// let r = policy.resume(received, Some(last), received + 8 * min);
    /// assert_eq!(r.failures, 4);
    /// assert_eq!(r.next_at, last + 8 * min);
    /// assert!(!r.warned);
    /// ```
    pub fn resume(
        &self,
        received_at: SystemTime,
        last_attempt: Option<SystemTime>,
        now: SystemTime,
    ) -> Resumed {
        let Some(last) = last_attempt else {
            return Resumed {
                failures: 0,
                warned: false,
                next_at: now,
            };
        };
        let elapsed = last.duration_since(received_at).unwrap_or_default();
        let mut failures = 1u32;
        let mut sum = Duration::ZERO;
        loop {
            let d = nominal(failures, self.min, self.max);
            if d.is_zero() {
                break;
            }
            if d >= self.max {
                // From here every step is `max`: count them at once.
                let steps = elapsed.saturating_sub(sum).as_secs_f64() / d.as_secs_f64();
                failures = failures.saturating_add(steps.floor().min(f64::from(u32::MAX)) as u32);
                break;
            }
            match sum.checked_add(d) {
                Some(s) if s <= elapsed => {
                    sum = s;
                    failures += 1;
                }
                _ => break,
            }
        }
        Resumed {
            failures,
            warned: self.delay_warning_due(received_at, last),
            next_at: self.next_attempt(failures, last, received_at).max(now),
        }
    }
}

/// A time no schedule reaches (used when an addition would overflow `SystemTime`).
fn far_future() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1 << 40)
}

/// The next number of a per-process xorshift-style generator (splitmix64 over a counter),
/// seeded once from the process's random hash keys and the clock. Not for secrets: it
/// only spreads retries apart.
fn next_random() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let mut h = RandomState::new().build_hasher();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    /// 1 min to 4 h, 5 days, warning at 4 h, no jitter.
    fn resume_policy() -> RetryPolicy {
        RetryPolicy {
            min: MIN,
            max: Duration::from_secs(4 * 3600),
            jitter: 0.0,
            lifetime: Duration::from_secs(5 * 86400),
            delay_warning: Duration::from_secs(4 * 3600),
        }
    }

    #[test]
    fn resume_without_a_failed_attempt_tries_now() {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let r = resume_policy().resume(t, None, t + MIN);
        assert_eq!((r.failures, r.warned, r.next_at), (0, false, t + MIN));
    }

    #[test]
    fn resume_after_a_long_outage_continues_at_the_cap_and_remembers_the_warning() {
        let p = resume_policy();
        let received = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // 1+2+...+128 minutes (8 attempts after the first) reach the 4 h cap at 255 min;
        // then 4 h steps: at 3 days, (4320 - 255) / 240 = 16 more.
        let last = received + Duration::from_secs(3 * 86400);
        let r = p.resume(received, Some(last), last + Duration::from_secs(600));
        assert_eq!(r.failures, 1 + 8 + 16);
        assert!(r.warned);
        assert_eq!(r.next_at, last + p.max);
        // The restart came after the retry time: try now, not in the past.
        let late = last + Duration::from_secs(86400);
        assert_eq!(p.resume(received, Some(last), late).next_at, late);
    }

    #[test]
    fn resume_never_schedules_past_the_lifetime_and_survives_odd_clocks() {
        let p = resume_policy();
        let received = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let last = received + p.lifetime - Duration::from_secs(60);
        let r = p.resume(received, Some(last), last);
        assert_eq!(r.next_at, p.retry_until(received));
        // The last attempt before reception (clock stepped back): one failure.
        let r = p.resume(received, Some(received - MIN), received);
        assert_eq!(r.failures, 1);
        // A zero minimum does not loop.
        let zero = RetryPolicy {
            min: Duration::ZERO,
            ..p
        };
        assert_eq!(zero.resume(received, Some(last), last).failures, 1);
        let huge = received + Duration::from_secs(u64::from(u32::MAX));
        assert!(p.resume(received, Some(huge), huge).failures > 1000);
    }
    const MAX: Duration = Duration::from_secs(4 * 3600);

    #[test]
    fn first_retry_waits_min() {
        assert_eq!(backoff(1, MIN, MAX, 0.0), MIN);
        assert_eq!(backoff(0, MIN, MAX, 0.0), MIN);
    }

    #[test]
    fn doubles_without_jitter() {
        let delays: Vec<u64> = (1..=6)
            .map(|n| backoff(n, MIN, MAX, 0.0).as_secs())
            .collect();
        assert_eq!(delays, [60, 120, 240, 480, 960, 1920]);
    }

    #[test]
    fn monotone_and_capped_without_jitter() {
        let mut last = Duration::ZERO;
        for n in 0..200 {
            let d = backoff(n, MIN, MAX, 0.0);
            assert!(d >= last, "delay {n} went down: {d:?} < {last:?}");
            assert!(d <= MAX, "delay {n} over the cap: {d:?}");
            last = d;
        }
        assert_eq!(last, MAX);
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        for n in [31, 32, 33, 63, 64, 65, 1000, u32::MAX - 1, u32::MAX] {
            assert_eq!(backoff(n, MIN, MAX, 0.0), MAX, "failures {n}");
            assert!(backoff(n, MIN, MAX, 1.0) <= MAX);
        }
        let huge = Duration::MAX;
        assert_eq!(backoff(u32::MAX, huge, huge, 0.0), huge);
        assert_eq!(backoff(2, huge, huge, 0.0), huge);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        for n in 1..40 {
            let nominal = backoff(n, MIN, MAX, 0.0);
            for _ in 0..50 {
                let d = backoff(n, MIN, MAX, 0.25);
                assert!(d <= nominal, "{d:?} above {nominal:?}");
                assert!(d >= nominal.mul_f64(0.75), "{d:?} below 75% of {nominal:?}");
            }
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let delays: std::collections::HashSet<Duration> =
            (0..100).map(|_| backoff(5, MIN, MAX, 0.5)).collect();
        assert!(delays.len() > 10, "only {} distinct delays", delays.len());
    }

    #[test]
    fn odd_jitter_values_are_clamped() {
        assert_eq!(backoff(2, MIN, MAX, f64::NAN), 2 * MIN);
        assert_eq!(backoff(2, MIN, MAX, -3.0), 2 * MIN);
        assert!(backoff(2, MIN, MAX, 7.0) <= 2 * MIN);
        assert_eq!(backoff(2, Duration::ZERO, MAX, 0.5), Duration::ZERO);
    }

    #[test]
    fn cap_wins_over_min() {
        assert_eq!(backoff(1, MAX, MIN, 0.0), MIN);
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::from_config(&DeliveryConfig::default())
        }
    }

    #[test]
    fn lifetime_and_warning() {
        let p = policy();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        assert_eq!(p.retry_until(t0), t0 + 5 * 24 * hour);
        assert!(!p.expired(t0, t0 + 5 * 24 * hour - Duration::from_secs(1)));
        assert!(p.expired(t0, t0 + 5 * 24 * hour));
        assert!(!p.delay_warning_due(t0, t0 + 3 * hour));
        assert!(p.delay_warning_due(t0, t0 + 4 * hour));
        assert!(!p.delay_warning_due(t0, t0 + 6 * 24 * hour));
        let off = RetryPolicy {
            delay_warning: Duration::ZERO,
            ..p
        };
        assert!(!off.delay_warning_due(t0, t0 + 4 * hour));
    }

    #[test]
    fn last_attempt_is_at_the_end_of_the_lifetime() {
        let p = policy();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let until = p.retry_until(t0);
        let late = until - Duration::from_secs(10);
        assert_eq!(p.next_attempt(30, late, t0), until);
        assert_eq!(p.next_attempt(1, t0, t0), t0 + MIN);
        // Past the lifetime already: try now, not in the past.
        let after = until + Duration::from_secs(5);
        assert_eq!(p.next_attempt(3, after, t0), after);
    }
}
