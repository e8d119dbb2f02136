//! Connections: a small pool over the configured servers, with failover and reconnect.
//!
//! Input: the server list, bind credentials, TLS settings and limits. Output: search
//! replies, each with the server that gave it. A lookup waits for a free slot (at most
//! `pool_size` connections are in use at once), reuses an idle connection or opens a new
//! one, trying the servers in configured order. Failure modes, all bounded by the lookup
//! timeout:
//!
//! - a server that refuses, fails TLS, refuses the bind or does not answer within
//!   `connect_timeout` is skipped for `server_retry` (tried last, not never), and the
//!   next server is tried;
//! - a reused connection that turns out dead (the server restarted) is dropped and the
//!   query is sent once more on a fresh connection, so routing recovers by itself;
//! - a search that does not answer in time drops its connection (and the server's idle
//!   ones) and marks the server down.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, ResultEntry, Scope, SearchOptions, SearchResult};
use rustls::ClientConfig;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

use super::error::LdapError;

/// How to reach the servers.
pub(crate) struct PoolSettings {
    pub(crate) servers: Vec<String>,
    pub(crate) bind_dn: String,
    pub(crate) bind_password: String,
    pub(crate) starttls: bool,
    pub(crate) tls: Option<Arc<ClientConfig>>,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) server_retry: Duration,
}

/// The connection pool.
pub(crate) struct Pool {
    settings: PoolSettings,
    servers: Vec<Server>,
    idle: Mutex<Vec<Conn>>,
    slots: Semaphore,
}

struct Server {
    url: Arc<str>,
    down_until: Mutex<Option<Instant>>,
}

/// One open, bound connection. Dropping it closes it.
struct Conn {
    ldap: ldap3::Ldap,
    server: usize,
    idle_since: Instant,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// One search.
pub(crate) struct Query<'a> {
    pub(crate) base: &'a str,
    pub(crate) scope: Scope,
    pub(crate) filter: &'a str,
    pub(crate) attrs: &'a [String],
    pub(crate) size_limit: i32,
    pub(crate) time_limit: i32,
}

/// A server's answer to a search.
pub(crate) struct Reply {
    /// The server that answered.
    pub(crate) server: Arc<str>,
    /// The entries returned.
    pub(crate) entries: Vec<ResultEntry>,
    /// The result code and message.
    pub(crate) rc: u32,
    /// The server's diagnostic message.
    pub(crate) text: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    pub(crate) fn new(settings: PoolSettings) -> Pool {
        let servers = settings
            .servers
            .iter()
            .map(|url| Server {
                url: Arc::from(url.as_str()),
                down_until: Mutex::new(None),
            })
            .collect();
        Pool {
            slots: Semaphore::new(settings.pool_size),
            idle: Mutex::new(Vec::with_capacity(settings.pool_size)),
            servers,
            settings,
        }
    }

    /// Run one search, within the lookup timeout.
    pub(crate) async fn search(&self, query: &Query<'_>) -> Result<Reply, LdapError> {
        let deadline = Instant::now() + self.settings.timeout;
        let _slot = match timeout_at(deadline, self.slots.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(LdapError::Config("connection pool closed".into())),
            Err(_) => {
                return Err(LdapError::Timeout {
                    server: "ldap".into(),
                    during: "waiting for a free connection",
                    after: self.settings.timeout,
                });
            }
        };
        if let Some(conn) = self.take_idle() {
            let server = self.url(conn.server);
            match self.search_on(conn, query, deadline).await {
                Err(e) if e.is_connection() => {
                    tracing::debug!(server = %server, error = %e, "ldap pooled connection failed, reconnecting");
                }
                other => return other,
            }
        }
        let conn = self.connect(deadline).await?;
        let index = conn.server;
        let result = self.search_on(conn, query, deadline).await;
        if matches!(&result, Err(e) if e.is_connection()) {
            self.mark_down(index);
        }
        result
    }

    fn url(&self, index: usize) -> Arc<str> {
        self.servers
            .get(index)
            .map(|s| s.url.clone())
            .unwrap_or_else(|| Arc::from("ldap"))
    }

    async fn search_on(
        &self,
        mut conn: Conn,
        query: &Query<'_>,
        deadline: Instant,
    ) -> Result<Reply, LdapError> {
        let server = self.url(conn.server);
        let options = SearchOptions::new()
            .sizelimit(query.size_limit)
            .timelimit(query.time_limit);
        let search = conn.ldap.with_search_options(options).search(
            query.base,
            query.scope,
            query.filter,
            query.attrs,
        );
        match timeout_at(deadline, search).await {
            Err(_) => {
                self.mark_down(conn.server);
                Err(LdapError::Timeout {
                    server: server.to_string(),
                    during: "search",
                    after: self.settings.timeout,
                })
            }
            Ok(Err(e)) => Err(LdapError::Connection {
                server: server.to_string(),
                error: e.to_string(),
            }),
            Ok(Ok(SearchResult(entries, result))) => {
                self.put_back(conn);
                Ok(Reply {
                    server,
                    entries,
                    rc: result.rc,
                    text: result.text,
                })
            }
        }
    }

    /// Open a connection: servers not marked down first, in configured order, then the
    /// ones marked down (a server is never given up on).
    async fn connect(&self, deadline: Instant) -> Result<Conn, LdapError> {
        let now = Instant::now();
        let (mut order, down): (Vec<usize>, Vec<usize>) =
            (0..self.servers.len()).partition(|&i| !self.is_down(i, now));
        order.extend(down);
        let mut errors: Vec<LdapError> = Vec::new();
        for index in order {
            let server = self.url(index);
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let limit = deadline.min(now + self.settings.connect_timeout);
            let error = match timeout_at(limit, self.connect_one(index)).await {
                Ok(Ok(conn)) => {
                    *lock(&self.servers[index].down_until) = None;
                    return Ok(conn);
                }
                Ok(Err(e)) => e,
                Err(_) => LdapError::Timeout {
                    server: server.to_string(),
                    during: "connect and bind",
                    after: limit.saturating_duration_since(now),
                },
            };
            tracing::warn!(server = %server, error = %error, "ldap server failed");
            self.mark_down(index);
            errors.push(error);
        }
        match errors.len() {
            0 => Err(LdapError::Timeout {
                server: "ldap".into(),
                during: "connect",
                after: self.settings.timeout,
            }),
            1 => Err(errors.remove(0)),
            _ => Err(LdapError::AllServersFailed(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }

    async fn connect_one(&self, index: usize) -> Result<Conn, LdapError> {
        let server = self.url(index);
        let mut settings = LdapConnSettings::new();
        if let Some(tls) = &self.settings.tls {
            settings = settings.set_config(tls.clone());
        }
        if self.settings.starttls && server.starts_with("ldap://") {
            settings = settings.set_starttls(true);
        }
        let (driver, ldap) = LdapConnAsync::with_settings(settings, &server)
            .await
            .map_err(|e| LdapError::Connect {
                server: server.to_string(),
                error: e.to_string(),
            })?;
        let label = server.clone();
        let driver = tokio::spawn(async move {
            if let Err(e) = driver.drive().await {
                tracing::debug!(server = %label, error = %e, "ldap connection closed");
            }
        });
        let mut conn = Conn {
            ldap,
            server: index,
            idle_since: Instant::now(),
            driver,
        };
        let bound = conn
            .ldap
            .simple_bind(&self.settings.bind_dn, &self.settings.bind_password)
            .await
            .map_err(|e| LdapError::Connect {
                server: server.to_string(),
                error: e.to_string(),
            })?;
        if bound.rc != 0 {
            return Err(LdapError::Bind {
                server: server.to_string(),
                dn: self.settings.bind_dn.clone(),
                rc: bound.rc,
                text: result_text(bound.rc, &bound.text),
            });
        }
        tracing::debug!(server = %server, "ldap connection opened");
        Ok(conn)
    }

    fn is_down(&self, index: usize, now: Instant) -> bool {
        self.servers
            .get(index)
            .and_then(|s| *lock(&s.down_until))
            .is_some_and(|until| until > now)
    }

    /// Skip `index` for `server_retry`, and close its idle connections.
    fn mark_down(&self, index: usize) {
        if let Some(s) = self.servers.get(index) {
            *lock(&s.down_until) = Some(Instant::now() + self.settings.server_retry);
        }
        let closed: Vec<Conn> = {
            let mut idle = lock(&self.idle);
            let (closed, kept) = idle.drain(..).partition(|c| c.server == index);
            *idle = kept;
            closed
        };
        drop(closed);
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut discarded = Vec::new();
        let found = {
            let mut idle = lock(&self.idle);
            loop {
                match idle.pop() {
                    None => break None,
                    Some(mut c) => {
                        if c.ldap.is_closed() || c.idle_since.elapsed() > self.settings.idle_timeout
                        {
                            discarded.push(c);
                        } else {
                            break Some(c);
                        }
                    }
                }
            }
        };
        drop(discarded);
        found
    }

    fn put_back(&self, mut conn: Conn) {
        conn.idle_since = Instant::now();
        let mut idle = lock(&self.idle);
        if idle.len() < self.settings.pool_size {
            idle.push(conn);
        }
    }
}

/// The server's message, or the name of the result code when it sent none.
pub(crate) fn result_text(rc: u32, text: &str) -> String {
    if !text.is_empty() {
        return text.to_string();
    }
    match rc {
        1 => "operationsError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        10 => "referral",
        11 => "adminLimitExceeded",
        32 => "noSuchObject",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        _ => "error",
    }
    .to_string()
}
