//! Reload triggers that run beside the gateway: watching the routing directory (opt-in)
//! and, with the `signals` feature, SIGHUP for embedders without an async runtime.
//!
//! The watcher polls a cheap fingerprint of the directory (file names, sizes and
//! modification times) instead of relying on inotify, so it also works on network file
//! systems and after `git checkout` replaces files. A change is acted on only once the
//! directory has been quiet for the debounce period (an editor or `git pull` writes
//! several files), and the reload itself skips a no-op change by content hash.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::router::Router;
use super::table::table_paths;

/// A running directory watcher; dropping it stops the watcher thread.
#[derive(Debug)]
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Fingerprint = Vec<(std::path::PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(dir: &Path) -> Fingerprint {
    let Ok(paths) = table_paths(dir) else {
        return Vec::new();
    };
    paths
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let len = meta.as_ref().map(|m| m.len()).unwrap_or(0);
            let modified = meta.and_then(|m| m.modified().ok());
            (p, len, modified)
        })
        .collect()
}

impl Router {
    /// Watch the routing directory and reload after changes, once it has been quiet for
    /// `debounce`. Polls every `interval`.
    pub fn watch(
        self: &Arc<Self>,
        interval: Duration,
        debounce: Duration,
    ) -> std::io::Result<Watcher> {
        let stop = Arc::new(AtomicBool::new(false));
        let router = Arc::clone(self);
        let stopped = Arc::clone(&stop);
        // Taken before returning, so a change made right after `watch` is seen.
        let dir = router.config().dir().to_path_buf();
        let mut seen = fingerprint(&dir);
        let thread = std::thread::Builder::new()
            .name("splitmx-watch".into())
            .spawn(move || {
                // A change between loading the tables and starting to watch goes through
                // the same debounce as any other.
                let mut changed_at = router.tables_changed().then(Instant::now);
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(interval);
                    let now = fingerprint(&dir);
                    if now != seen {
                        seen = now;
                        changed_at = Some(Instant::now());
                        continue;
                    }
                    if changed_at.is_some_and(|t| t.elapsed() >= debounce) {
                        changed_at = None;
                        tracing::info!(dir = %dir.display(), "routing directory changed, reloading");
                        // Errors are logged and counted by reload itself.
                        let _ = router.reload();
                    }
                }
            })?;
        Ok(Watcher {
            stop,
            thread: Some(thread),
        })
    }
}

/// Reload `router` on every SIGHUP, from a background thread. Returns the handle that
/// stops it. For programs with a tokio runtime, `tokio::signal` does the same job.
#[cfg(feature = "signals")]
pub fn reload_on_sighup(router: Arc<Router>) -> std::io::Result<SighupHandle> {
    use signal_hook::consts::SIGHUP;
    use signal_hook::iterator::Signals;
    let mut signals = Signals::new([SIGHUP])?;
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("splitmx-sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                tracing::info!("SIGHUP: reloading routing tables");
                let _ = router.reload();
            }
        })?;
    Ok(SighupHandle {
        handle,
        thread: Some(thread),
    })
}

/// Stops the SIGHUP reload thread when dropped.
#[cfg(feature = "signals")]
pub struct SighupHandle {
    handle: signal_hook::iterator::Handle,
    thread: Option<JoinHandle<()>>,
}

#[cfg(feature = "signals")]
impl Drop for SighupHandle {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
