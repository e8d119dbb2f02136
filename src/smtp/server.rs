//! The gateway process: listeners, connection limits, STARTTLS handshakes, reload on
//! SIGHUP, and graceful shutdown on SIGTERM/SIGINT.
//!
//! Connection limits are enforced before a session starts: over the total or the
//! per-client-IP limit, the client gets `421 4.7.0` and the connection is closed. On
//! shutdown the listeners close first; idle sessions get `421 4.3.2`; a session inside
//! DATA finishes its message (bounded by the grace period), so nothing acknowledged is
//! lost and nothing half-received is acknowledged.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::config::SmtpConfig;
use super::conn::Conn;
use super::session::{End, Session};
use crate::journal::Journal;
use crate::routing::hops::LoopPolicy;
use crate::routing::router::Router;
use crate::spool::{NewMessage, Spool};

/// What every session shares.
pub struct Shared {
    /// Limits and timeouts.
    pub config: SmtpConfig,
    /// Our host name.
    pub hostname: String,
    /// Loop limits checked at the end of DATA.
    pub loops: LoopPolicy,
    /// The routing tables.
    pub router: Arc<Router>,
    /// Where accepted messages go.
    pub spool: Spool,
    /// STARTTLS, when a certificate is configured.
    pub tls: Option<TlsAcceptor>,
    /// Becomes true when the gateway is shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Told of every message once it is durable (after the fsync, before the `250`).
    pub on_queued: Option<QueuedHook>,
    /// Where accepted recipients are counted, when the journal is on.
    pub journal: Option<Arc<Journal>>,
}

/// A function told of every message the front end has made durable; the queue manager
/// uses it to start delivery from memory.
pub type QueuedHook = Arc<dyn Fn(Arc<NewMessage>) + Send + Sync>;

/// A running SMTP front end.
pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
    stop: watch::Sender<bool>,
}

/// Counts connections per client address; the guard gives the slot back.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

struct IpSlot(Arc<PerIp>, IpAddr);

impl PerIp {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot(Arc::clone(self), ip))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

impl Server {
    /// Bind the listeners.
    pub async fn bind(
        addrs: &[SocketAddr],
        config: SmtpConfig,
        hostname: String,
        loops: LoopPolicy,
        router: Arc<Router>,
        spool: Spool,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<Server> {
        let mut listeners = Vec::new();
        for addr in addrs {
            listeners.push(TcpListener::bind(addr).await?);
        }
        let (stop, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            hostname,
            loops,
            router,
            spool,
            tls,
            shutdown,
            on_queued: None,
            journal: None,
        });
        Ok(Server {
            shared,
            listeners,
            stop,
        })
    }

    /// Count every accepted recipient in `journal` (before [`Server::run`]).
    pub fn with_journal(mut self, journal: Arc<Journal>) -> Server {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.journal = Some(journal),
            // Only `run` shares the state; before it this Server holds the one reference.
            None => tracing::error!("journal attached after the server started; not recording"),
        }
        self
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Tells `hook` of every message once it is durable. Call before [`Server::run`].
    pub fn on_queued(mut self, hook: QueuedHook) -> Server {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.on_queued = Some(hook);
        }
        self
    }

    /// Serve until `stop` resolves; then close the listeners and wait for sessions to end
    /// (at most the grace period).
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        let Server {
            shared,
            listeners,
            stop: stop_tx,
        } = self;
        let total = Arc::new(Semaphore::new(shared.config.max_connections));
        let per_ip = Arc::new(PerIp::default());
        // Sessions are spawned by the accept tasks themselves: a hand-off through this
        // task would cost a cross-thread wake per connection (it runs on the main thread).
        let sessions = Arc::new(Mutex::new(JoinSet::new()));
        let mut accepts = JoinSet::new();
        for listener in listeners {
            let shared = Arc::clone(&shared);
            let total = Arc::clone(&total);
            let per_ip = Arc::clone(&per_ip);
            let sessions = Arc::clone(&sessions);
            accepts.spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, peer)) => {
                            let _ = stream.set_nodelay(true);
                            let session = connection(
                                Arc::clone(&shared),
                                stream,
                                peer,
                                Arc::clone(&total),
                                Arc::clone(&per_ip),
                            );
                            let mut set = lock(&sessions);
                            // Reap the ended sessions so the set holds only open ones.
                            while set.try_join_next().is_some() {}
                            set.spawn(session);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            });
        }
        stop.await;
        // Stop accepting, tell idle sessions, let transactions in DATA finish.
        accepts.shutdown().await;
        let mut sessions = std::mem::take(&mut *lock(&sessions));
        let _ = stop_tx.send(true);
        let grace = shared.config.shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                open = sessions.len(),
                "shutdown grace period over, closing sessions"
            );
            sessions.abort_all();
        }
        tracing::info!("SMTP front end stopped");
    }
}

async fn connection(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    total: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
) {
    let _open = crate::metrics::metrics().session();
    let Ok(_permit) = total.try_acquire() else {
        tracing::warn!(client = %peer, "connection refused: too many connections");
        let _ = stream
            .write_all(b"421 4.7.0 Too many connections, try again later\r\n")
            .await;
        return;
    };
    let Some(_slot) = per_ip.take(peer.ip(), shared.config.max_connections_per_ip) else {
        tracing::warn!(client = %peer, "connection refused: too many connections from this address");
        let _ = stream
            .write_all(b"421 4.7.0 Too many connections from your address, try again later\r\n")
            .await;
        return;
    };
    tracing::debug!(client = %peer, "connection");
    let mut session = Session::new(Arc::clone(&shared), peer);
    let mut conn = Conn::new(stream);
    conn.queue(&session.greeting());
    let End::StartTls(stream) = session.run(conn).await else {
        return;
    };
    let Some(acceptor) = shared.tls.clone() else {
        return;
    };
    let handshake =
        tokio::time::timeout(shared.config.command_timeout, acceptor.accept(stream)).await;
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(client = %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(client = %peer, "TLS handshake timed out");
            return;
        }
    };
    let (_, connection) = tls.get_ref();
    let description = format!(
        "{} with cipher {}",
        connection
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_else(|| "TLS".to_string()),
        connection
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_else(|| "unknown".to_string())
    );
    session.after_tls(description);
    // After TLS the client speaks first (EHLO); no new greeting (RFC 3207).
    let _ = session.run(Conn::new(tls)).await;
}

/// Locks the session set, whether or not a thread panicked while holding it (a `JoinSet`
/// stays usable).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
