//! The router: the current routing snapshot behind `arc-swap`, and reload.
//!
//! Every lookup takes the snapshot once and answers from it alone, so an answer is always
//! from one table version, never a mix. A reload (API call, SIGHUP, or the opt-in
//! directory watcher) reads and validates every table, builds a new snapshot and swaps
//! it in; if anything is wrong the old snapshot keeps serving and the errors are
//! returned, logged and counted. Readers never wait for a reload.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::address::Address;
use super::config::RoutingConfig;
use super::directory::Directory;
use super::resolve::{Outcome, Resolution, Step};
use super::snapshot::{Snapshot, TableVersion};
use super::table::{self, TableErrors};

/// Resolves recipients against hot-reloadable routing tables.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # std::fs::write(dir.path().join("t.yaml"), "domains: [example.com]\ndefault: smtp:[192.0.2.1]:25\n").unwrap();
/// use splitmx::{Address, Router, RoutingConfig};
///
/// let router = Router::load(RoutingConfig::new(dir.path())).unwrap();
/// let before = router.version();
/// router.reload().unwrap(); // nothing changed on disk
/// assert_eq!(router.version(), before);
/// ```
pub struct Router {
    config: RoutingConfig,
    current: ArcSwap<Snapshot>,
    directory: Option<Arc<dyn Directory>>,
    reload_lock: Mutex<()>,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    swapped: AtomicU64,
    unchanged: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Reload counters, for metrics and `splitmx reload`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadStats {
    /// Reloads that swapped in a new snapshot.
    pub swapped: u64,
    /// Reloads that found the same table version.
    pub unchanged: u64,
    /// Reloads rejected because of errors.
    pub failed: u64,
    /// The errors of the last failed reload.
    pub last_error: Option<String>,
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum ReloadOutcome {
    /// New tables are in force.
    Swapped {
        /// The version before.
        old: TableVersion,
        /// The version now.
        new: TableVersion,
        /// Recipient entries now.
        recipients: usize,
        /// Time spent reading, validating and building.
        #[serde(with = "millis")]
        took: Duration,
    },
    /// The tables have not changed (same content hash and commit).
    Unchanged(TableVersion),
}

/// A reload that was refused; the previous tables keep serving.
#[derive(Debug, Clone, thiserror::Error)]
#[error("routing tables not reloaded, version {kept} keeps serving:\n{errors}")]
pub struct ReloadError {
    /// The version still in force.
    pub kept: TableVersion,
    /// Everything wrong with the new tables.
    pub errors: TableErrors,
}

mod millis {
    pub(super) fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

impl Router {
    /// Load the tables in `config.dir()`; fails with every error found.
    pub fn load(config: RoutingConfig) -> Result<Router, TableErrors> {
        let snapshot = table::load(&config)?;
        tracing::info!(
            version = %snapshot.version(),
            recipients = snapshot.recipient_count(),
            dir = %config.dir().display(),
            "routing tables loaded"
        );
        Ok(Router::from_snapshot(config, snapshot))
    }

    /// A router serving a snapshot built elsewhere (for example from tables in memory).
    pub fn from_snapshot(config: RoutingConfig, snapshot: Snapshot) -> Router {
        Router {
            config,
            current: ArcSwap::from_pointee(snapshot),
            directory: None,
            reload_lock: Mutex::new(()),
            stats: Stats::default(),
        }
    }

    /// Consult `directory` (after the exact-address tables, before domain defaults).
    pub fn with_directory(mut self, directory: Arc<dyn Directory>) -> Router {
        self.directory = Some(directory);
        self
    }

    /// The configuration the router reloads from.
    pub fn config(&self) -> &RoutingConfig {
        &self.config
    }

    /// The snapshot in force now. Hold it for a whole SMTP transaction if every RCPT of
    /// it should see the same tables.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The table version in force now.
    pub fn version(&self) -> TableVersion {
        (**self.current.load().version()).clone()
    }

    /// Resolve with the tables only, synchronously (the directory, if any, is not asked).
    pub fn resolve_tables(&self, rcpt: &Address) -> Resolution {
        let snapshot = self.current.load();
        Resolution {
            recipient: rcpt.clone(),
            outcome: snapshot.resolve(rcpt),
            version: snapshot.version().clone(),
            steps: Vec::new(),
        }
    }

    /// Resolve a recipient: tables, directory, defaults, in the documented order.
    pub async fn resolve(&self, rcpt: &Address) -> Resolution {
        let snapshot = self.current.load_full();
        let outcome = match &self.directory {
            Some(dir) => snapshot.resolve_with(rcpt, dir.as_ref(), &mut ()).await,
            None => snapshot.resolve(rcpt),
        };
        log_outcome(rcpt, &outcome, snapshot.version());
        Resolution {
            recipient: rcpt.clone(),
            outcome,
            version: snapshot.version().clone(),
            steps: Vec::new(),
        }
    }

    /// Resolve and record every step tried, for `splitmx explain`.
    pub async fn explain(&self, rcpt: &Address) -> Resolution {
        let snapshot = self.current.load_full();
        let mut steps: Vec<Step> = Vec::new();
        let outcome = match &self.directory {
            Some(dir) => snapshot.resolve_with(rcpt, dir.as_ref(), &mut steps).await,
            None => snapshot.resolve_static(rcpt, &mut steps),
        };
        Resolution {
            recipient: rcpt.clone(),
            outcome,
            version: snapshot.version().clone(),
            steps,
        }
    }

    /// Read and validate the tables again and swap them in. On error the old snapshot
    /// keeps serving and the errors are returned (and logged and counted).
    pub fn reload(&self) -> Result<ReloadOutcome, ReloadError> {
        // One reload at a time; readers are never blocked.
        let _guard = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        let old = self.current.load_full();
        let built = table::read(&self.config).and_then(|read| {
            if read.version == **old.version() {
                Ok(None)
            } else {
                read.build(&self.config).map(Some)
            }
        });
        match built {
            Ok(None) => {
                self.stats.unchanged.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(version = %old.version(), "routing tables unchanged");
                Ok(ReloadOutcome::Unchanged((**old.version()).clone()))
            }
            Ok(Some(new)) => {
                let outcome = ReloadOutcome::Swapped {
                    old: (**old.version()).clone(),
                    new: (**new.version()).clone(),
                    recipients: new.recipient_count(),
                    took: started.elapsed(),
                };
                // Counted first, so the counter never lags what readers already see.
                self.stats.swapped.fetch_add(1, Ordering::SeqCst);
                self.current.store(Arc::new(new));
                if let ReloadOutcome::Swapped { old, new, took, .. } = &outcome {
                    tracing::info!(old = %old, new = %new, took_ms = took.as_millis() as u64, "routing tables reloaded");
                }
                Ok(outcome)
            }
            Err(errors) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                for e in errors.iter() {
                    tracing::error!(
                        file = %e.file, line = e.line, column = e.column, error = %e.kind,
                        kept = %old.version(), "routing table error, reload refused"
                    );
                }
                let text = errors.to_string();
                *self
                    .stats
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(text);
                Err(ReloadError {
                    kept: (**old.version()).clone(),
                    errors,
                })
            }
        }
    }

    /// True when the tables on disk differ from the ones in force (by content hash), or
    /// cannot be read; costs a read of the files, no parse.
    pub fn tables_changed(&self) -> bool {
        match table::read(&self.config) {
            Ok(read) => read.version != **self.current.load().version(),
            Err(_) => true,
        }
    }

    /// Reload counters.
    pub fn stats(&self) -> ReloadStats {
        ReloadStats {
            swapped: self.stats.swapped.load(Ordering::SeqCst),
            unchanged: self.stats.unchanged.load(Ordering::Relaxed),
            failed: self.stats.failed.load(Ordering::Relaxed),
            last_error: self
                .stats
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

fn log_outcome(rcpt: &Address, outcome: &Outcome, version: &TableVersion) {
    match outcome {
        Outcome::Routed(r) => tracing::debug!(
            rcpt = %rcpt, route = r.route.name(), deliver_to = %r.recipient,
            provenance = %r.provenance, version = %version, "recipient routed"
        ),
        Outcome::Unrouted(u) => {
            tracing::debug!(rcpt = %rcpt, unrouted = ?u, version = %version, "recipient not routed")
        }
        Outcome::TempFail { reason, .. } => {
            tracing::warn!(rcpt = %rcpt, reason = %reason, version = %version, "recipient deferred")
        }
    }
}
