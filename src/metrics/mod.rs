//! Prometheus metrics: what the gateway counts, and the registry they are served from.
//!
//! One process-wide set ([`metrics()`]); the SMTP front end, delivery, the LDAP source and
//! reloads count into it with atomics, and `splitmx serve` exposes it over HTTP when
//! `metrics.listen` is set ([`http`]). Queue depth and age are read from the spool when
//! the endpoint is scraped, so the delivery path keeps no extra bookkeeping. Every metric
//! is listed with its labels in `docs/metrics.md`.
//!
//! Label values are bounded: route names and next hops come from the routing tables, reasons
//! and outcomes are fixed words; addresses never appear in labels.
//!
//! ```
//! let m = splitmx::metrics::metrics();
//! m.spooled(4096);
//! assert!(m.encode().contains("# TYPE splitmx_messages_spooled counter"));
//! ```

#[cfg(feature = "server")]
pub mod http;

use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::routing::router::Router;

/// Labels of one or two fixed keys with owned values.
type Labels1 = [(&'static str, String); 1];
type Labels2 = [(&'static str, String); 2];
type Labels3 = [(&'static str, String); 3];

/// Where the metrics are served (`metrics:` in the gateway configuration).
///
/// ```yaml
/// metrics:
///   listen: "127.0.0.1:9425"   # absent: no endpoint
/// ```
#[cfg(feature = "server")]
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the HTTP endpoint (`GET /metrics`); off when absent.
    pub listen: Option<std::net::SocketAddr>,
}

/// Queue depth of one next hop, as computed at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct HopDepth {
    /// The next hop, e.g. `smtp:[192.0.2.1]:25`.
    pub next_hop: String,
    /// Messages with at least one recipient for it still to deliver.
    pub messages: i64,
    /// Age of the oldest of them, in seconds.
    pub oldest_seconds: f64,
}

/// Computes the queue depth per next hop when the endpoint is scraped.
pub type QueueProbe = Box<dyn Fn() -> Vec<HopDepth> + Send + Sync>;

/// Queue depth per next hop from the spool's live messages: each message counts once for
/// every next hop it still has a recipient for. Walks the spool index in chunks
/// ([`crate::spool::Spool::backlog`]), so a scrape does not stall commits.
#[cfg(feature = "server")]
pub fn spool_probe(spool: crate::spool::Spool) -> QueueProbe {
    Box::new(move || {
        let now = std::time::SystemTime::now();
        spool
            .backlog()
            .into_iter()
            .map(|b| HopDepth {
                next_hop: b.next_hop,
                messages: i64::try_from(b.messages).unwrap_or(i64::MAX),
                oldest_seconds: now
                    .duration_since(b.oldest)
                    .unwrap_or_default()
                    .as_secs_f64(),
            })
            .collect()
    })
}

/// The spool's totals, read when the endpoint is scraped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolTotals {
    /// Group commits: fsyncs that acknowledged at least one request.
    pub syncs: u64,
    /// Batches refused because a write or fsync failed.
    pub failures: u64,
}

/// Reads the spool's totals when the endpoint is scraped.
pub type SpoolTotalsProbe = Box<dyn Fn() -> SpoolTotals + Send + Sync>;

/// The totals of `spool` (fsyncs, failed batches) for the metrics endpoint.
#[cfg(feature = "server")]
pub fn spool_totals(spool: crate::spool::Spool) -> SpoolTotalsProbe {
    Box::new(move || {
        let s = spool.stats();
        SpoolTotals {
            syncs: s.syncs,
            failures: s.failures,
        }
    })
}

/// Every metric of the gateway. Get it with [`metrics()`].
pub struct Metrics {
    registry: Registry,
    sessions: Counter,
    sessions_open: Gauge,
    recipients: Family<Labels3, Counter>,
    messages_spooled: Counter,
    message_bytes_spooled: Counter,
    messages_refused: Family<Labels1, Counter>,
    deliveries: Family<Labels2, Counter>,
    self_loops: Counter,
    delivery_connections: Family<Labels1, Gauge>,
    sent_ahead: Counter,
    queue_messages: Family<Labels1, Gauge>,
    queue_oldest: Family<Labels1, Gauge<f64, std::sync::atomic::AtomicU64>>,
    ldap_lookups: Family<Labels1, Counter>,
    ldap_duration: Histogram,
    ldap_cache: Family<Labels1, Counter>,
    reloads: Family<Labels1, Counter>,
    table_info: Family<Labels2, Gauge>,
    journal_flushes: Family<Labels1, Counter>,
    journal_recipients: Gauge,
    spool_commit_wait: Histogram,
    spool_syncs: Counter,
    spool_failures: Counter,
    spool_totals_probe: Mutex<Option<SpoolTotalsProbe>>,
    queue_probe: Mutex<Option<QueueProbe>>,
    router: Mutex<Option<std::sync::Weak<Router>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::with_prefix("splitmx");
        let m = Metrics {
            sessions: Counter::default(),
            sessions_open: Gauge::default(),
            recipients: Family::default(),
            messages_spooled: Counter::default(),
            message_bytes_spooled: Counter::default(),
            messages_refused: Family::default(),
            deliveries: Family::default(),
            self_loops: Counter::default(),
            delivery_connections: Family::default(),
            sent_ahead: Counter::default(),
            queue_messages: Family::default(),
            queue_oldest: Family::default(),
            ldap_lookups: Family::default(),
            ldap_duration: Histogram::new(exponential_buckets(0.000_25, 2.0, 15)),
            ldap_cache: Family::default(),
            reloads: Family::default(),
            table_info: Family::default(),
            journal_flushes: Family::default(),
            journal_recipients: Gauge::default(),
            // 100 µs to 3.3 s: a local disk's fsync to a stalled one.
            spool_commit_wait: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            spool_syncs: Counter::default(),
            spool_failures: Counter::default(),
            spool_totals_probe: Mutex::new(None),
            registry: Registry::default(),
            queue_probe: Mutex::new(None),
            router: Mutex::new(None),
        };
        r.register(
            "smtp_sessions",
            "SMTP sessions accepted",
            m.sessions.clone(),
        );
        r.register(
            "smtp_sessions_open",
            "SMTP sessions open now",
            m.sessions_open.clone(),
        );
        r.register(
            "recipients",
            "RCPT TO answers by outcome (accepted, rejected, deferred), reason and route",
            m.recipients.clone(),
        );
        r.register(
            "messages_spooled",
            "Messages fsynced to the spool and acknowledged with 250",
            m.messages_spooled.clone(),
        );
        r.register_with_unit(
            "spooled",
            "Bytes of messages acknowledged with 250",
            Unit::Bytes,
            m.message_bytes_spooled.clone(),
        );
        r.register(
            "messages_refused",
            "Messages refused at the end of DATA, by reason",
            m.messages_refused.clone(),
        );
        r.register(
            "deliveries",
            "Delivery attempts per recipient, by route and outcome (delivered, deferred, bounced)",
            m.deliveries.clone(),
        );
        r.register(
            "delivery_self_loops",
            "Recipients deferred (4.4.6) because their next hop is this gateway",
            m.self_loops.clone(),
        );
        r.register(
            "delivery_connections",
            "Delivery connections open, per next hop",
            m.delivery_connections.clone(),
        );
        r.register(
            "delivery_sent_ahead",
            "Transactions whose MAIL, RCPT and DATA went out behind the previous message's final dot",
            m.sent_ahead.clone(),
        );
        r.register(
            "queue_messages",
            "Messages in the queue with recipients still to deliver, per next hop",
            m.queue_messages.clone(),
        );
        r.register_with_unit(
            "queue_oldest_message_age",
            "Age of the oldest message still to deliver, per next hop",
            Unit::Seconds,
            m.queue_oldest.clone(),
        );
        r.register(
            "ldap_lookups",
            "LDAP searches by outcome (found, not_found, error)",
            m.ldap_lookups.clone(),
        );
        r.register_with_unit(
            "ldap_lookup_duration",
            "Time of LDAP searches, cache hits excluded",
            Unit::Seconds,
            m.ldap_duration.clone(),
        );
        r.register(
            "ldap_cache",
            "LDAP cache answers by result (hit, miss, stale)",
            m.ldap_cache.clone(),
        );
        r.register(
            "reloads",
            "Routing table reloads by outcome (applied, unchanged, refused)",
            m.reloads.clone(),
        );
        r.register(
            "routing_table_info",
            "The routing table in use: version (content hash) and git commit; value 1",
            m.table_info.clone(),
        );
        r.register(
            "journal_flushes",
            "Recipient journal flushes to its day files, by outcome (ok, error)",
            m.journal_flushes.clone(),
        );
        r.register(
            "journal_recipients",
            "Recipients in the recipient journal's file of the current day, as of the last flush",
            m.journal_recipients.clone(),
        );
        r.register_with_unit(
            "spool_commit_wait",
            "Time a message waited at the end of DATA for the spool to write and fsync it, before its reply",
            Unit::Seconds,
            m.spool_commit_wait.clone(),
        );
        r.register(
            "spool_syncs",
            "Spool group commits: fsyncs that acknowledged at least one request",
            m.spool_syncs.clone(),
        );
        r.register(
            "spool_write_failures",
            "Spool batches refused because a write or fsync failed",
            m.spool_failures.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// An SMTP session began; the guard counts it as open until dropped.
    pub fn session(&'static self) -> OpenSession {
        self.sessions.inc();
        self.sessions_open.inc();
        OpenSession(self)
    }

    /// A RCPT TO answered: `outcome` is accepted, rejected or deferred, `reason` a fixed
    /// word (ok, unknown, relay_denied, directory, ...), `route` the route name or empty.
    pub fn recipient(&self, outcome: &'static str, reason: &'static str, route: &str) {
        self.recipients
            .get_or_create(&[
                ("outcome", outcome.to_string()),
                ("reason", reason.to_string()),
                ("route", route.to_string()),
            ])
            .inc();
    }

    /// A message acknowledged with 250 (fsynced).
    pub fn spooled(&self, bytes: u64) {
        self.messages_spooled.inc();
        self.message_bytes_spooled.inc_by(bytes);
    }

    /// A message refused at the end of DATA (`loop`, `spool`, ...).
    pub fn refused(&self, reason: &'static str) {
        self.messages_refused
            .get_or_create(&[("reason", reason.to_string())])
            .inc();
    }

    /// A delivery connection to `next_hop` opened (`1`) or closed (`-1`).
    pub fn delivery_connection(&self, next_hop: &str, change: i64) {
        self.delivery_connections
            .get_or_create(&[("next_hop", next_hop.to_string())])
            .inc_by(change);
    }

    /// A transaction's commands went out behind the previous message's final dot.
    pub fn sent_ahead(&self) {
        self.sent_ahead.inc();
    }

    /// One recipient's delivery attempt ended.
    pub fn delivery(&self, route: &str, outcome: &'static str) {
        self.deliveries
            .get_or_create(&[
                ("route", route.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }

    /// The recipient journal was flushed (`ok` with the recipients in today's file, or
    /// `error`).
    pub fn journal_flush(&self, recipients: Option<usize>) {
        let outcome = if recipients.is_some() { "ok" } else { "error" };
        self.journal_flushes
            .get_or_create(&[("outcome", outcome.to_string())])
            .inc();
        if let Some(n) = recipients {
            self.journal_recipients
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Recipients deferred because their next hop is this gateway.
    pub fn self_loops(&self, recipients: u64) {
        self.self_loops.inc_by(recipients);
    }

    /// An LDAP search ended (`found`, `not_found` or `error`) after `took`.
    pub fn ldap_lookup(&self, outcome: &'static str, took: Duration) {
        self.ldap_lookups
            .get_or_create(&[("outcome", outcome.to_string())])
            .inc();
        self.ldap_duration.observe(took.as_secs_f64());
    }

    /// The LDAP cache answered (`hit`), was asked in vain (`miss`), or stood in for a
    /// failing directory (`stale`).
    pub fn ldap_cache(&self, result: &'static str) {
        self.ldap_cache
            .get_or_create(&[("result", result.to_string())])
            .inc();
    }

    /// The router whose reloads and table version are reported (set by `splitmx serve`;
    /// read at scrape time from [`Router::stats`] and the snapshot in force).
    pub fn set_router(&self, router: &std::sync::Arc<Router>) {
        *self.router.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(std::sync::Arc::downgrade(router));
    }

    /// Brings the reload counters up to `total` for `outcome`.
    fn reloads_up_to(&self, outcome: &'static str, total: u64) {
        up_to(
            &self
                .reloads
                .get_or_create(&[("outcome", outcome.to_string())]),
            total,
        );
    }

    fn table(&self, version: &str, commit: &str) {
        self.table_info.clear();
        self.table_info
            .get_or_create(&[
                ("version", version.to_string()),
                ("commit", commit.to_string()),
            ])
            .set(1);
    }

    /// A message waited `took` for the spool's group commit (write and fsync).
    pub fn spool_commit(&self, took: Duration) {
        self.spool_commit_wait.observe(took.as_secs_f64());
    }

    /// Where the spool's totals come from at scrape time (set by `splitmx serve`).
    pub fn set_spool_totals_probe(&self, probe: SpoolTotalsProbe) {
        *self
            .spool_totals_probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(probe);
    }

    /// Where queue depth comes from at scrape time (set by `splitmx serve`).
    pub fn set_queue_probe(&self, probe: QueueProbe) {
        *self
            .queue_probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(probe);
    }

    /// Every metric in the OpenMetrics text format, queue depth measured now.
    pub fn encode(&self) -> String {
        let router = self
            .router
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(std::sync::Weak::upgrade);
        if let Some(router) = router {
            let stats = router.stats();
            self.reloads_up_to("applied", stats.swapped);
            self.reloads_up_to("unchanged", stats.unchanged);
            self.reloads_up_to("refused", stats.failed);
            let snapshot = router.snapshot();
            let v = snapshot.version();
            self.table(&v.hash, v.commit.as_deref().unwrap_or(""));
        }
        if let Some(probe) = &*self
            .spool_totals_probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            let t = probe();
            up_to(&self.spool_syncs, t.syncs);
            up_to(&self.spool_failures, t.failures);
        }
        if let Some(probe) = &*self
            .queue_probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            let depths = probe();
            self.queue_messages.clear();
            self.queue_oldest.clear();
            for d in depths {
                let key = [("next_hop", d.next_hop)];
                self.queue_messages.get_or_create(&key).set(d.messages);
                self.queue_oldest.get_or_create(&key).set(d.oldest_seconds);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Raises counter `c` to `total`, a total kept elsewhere (never lowers it).
fn up_to(c: &Counter, total: u64) {
    let seen = c.get();
    if total > seen {
        c.inc_by(total - seen);
    }
}

/// An open SMTP session, for the open-sessions gauge.
#[derive(Debug)]
pub struct OpenSession(&'static Metrics);

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.sessions_open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = metrics();
        m.recipient("accepted", "ok", "unit_test_route");
        m.delivery("unit_test_route", "delivered");
        m.spooled(100);
        let text = m.encode();
        for name in [
            "# TYPE splitmx_smtp_sessions counter",
            "# TYPE splitmx_recipients counter",
            "# TYPE splitmx_spooled_bytes counter",
            "# TYPE splitmx_ldap_lookup_duration_seconds histogram",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
        assert!(
            value(
                &text,
                "splitmx_recipients_total{outcome=\"accepted\",reason=\"ok\",route=\"unit_test_route\"}"
            )
            .is_some_and(|v| v >= 1.0),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_table_info_names_only_the_current_table() {
        let m = metrics();
        m.table("v1", "c1");
        m.table("v2", "c2");
        let text = m.encode();
        assert!(text.contains("splitmx_routing_table_info{version=\"v2\",commit=\"c2\"} 1"));
        assert!(!text.contains("version=\"v1\""));
    }

    #[test]
    fn spool_totals_are_read_at_scrape_and_commit_waits_land_in_their_bucket() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let m = Metrics::new();
        let failures = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&failures);
        m.set_spool_totals_probe(Box::new(move || SpoolTotals {
            syncs: 7,
            failures: seen.load(Ordering::Relaxed),
        }));
        m.spool_commit(Duration::from_micros(150));
        let text = m.encode();
        assert_eq!(
            value(&text, "splitmx_spool_syncs_total"),
            Some(7.0),
            "{text}"
        );
        assert_eq!(
            value(&text, "splitmx_spool_write_failures_total"),
            Some(0.0)
        );
        let bucket = |text: &str, le: &str| {
            value(
                text,
                &format!("splitmx_spool_commit_wait_seconds_bucket{{le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket(&text, "0.0001"), Some(0.0), "{text}");
        assert_eq!(bucket(&text, "0.0002"), Some(1.0), "{text}");
        failures.store(2, Ordering::Relaxed);
        let text = m.encode();
        assert_eq!(
            value(&text, "splitmx_spool_write_failures_total"),
            Some(2.0)
        );
        assert_eq!(value(&text, "splitmx_spool_syncs_total"), Some(7.0));
    }

    #[test]
    fn reload_counters_follow_the_router_totals() {
        let m = Metrics::new();
        m.reloads_up_to("applied", 3);
        m.reloads_up_to("applied", 3);
        m.reloads_up_to("applied", 5);
        let text = {
            let mut out = String::new();
            let _ = encode(&mut out, &m.registry);
            out
        };
        assert_eq!(
            value(&text, "splitmx_reloads_total{outcome=\"applied\"}"),
            Some(5.0)
        );
    }
}
