//! [`LdapDirectory`]: the LDAP implementation of [`Directory`].
//!
//! Input: a recipient in a domain the directory serves. Output: found (DN, mail host,
//! routing address), not found, or a temporary error; with the steps for `explain`
//! (cache, server, escaped filter, entry). Order of work: the cache (when configured),
//! then a search through the connection pool, then the cache again if the search failed
//! (last known good, for entries only). A lookup never takes longer than `timeout`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use ldap3::Scope;

use super::cache::{Cache, Cached};
use super::config::{Attributes, LdapConfig, SearchScope};
use super::error::LdapError;
use super::filter::FilterTemplate;
use super::mapping::{Found, map_reply};
use super::pool::{Pool, PoolSettings, Query};
use super::tls;
use crate::routing::address::Address;
use crate::routing::directory::{
    Directory, DirectoryAnswer, DirectoryEntry, DirectoryFuture, DirectoryScope, ExplainedFuture,
};
use crate::routing::resolve::Step;

/// Routes recipients from an LDAP directory (OpenLDAP, 389-DS, Active Directory).
///
/// Built from the `ldap:` section of the gateway configuration; connects lazily, on the
/// first lookup. Lookups must run inside a tokio runtime (with time and I/O enabled).
///
/// ```no_run
/// # async fn example(config: splitmx::GatewayConfig) -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use splitmx::ldap::LdapDirectory;
///
/// let ldap = LdapDirectory::new(config.ldap.clone().ok_or("no ldap section")?)?;
/// let router = splitmx::Router::load(config.routing.clone())?.with_directory(Arc::new(ldap));
/// let rcpt = splitmx::Address::parse("alice@example.com")?;
/// println!("{}", router.resolve(&rcpt).await.outcome.reply());
/// # Ok(()) }
/// ```
pub struct LdapDirectory {
    name: String,
    authoritative: HashSet<String>,
    consulted: HashSet<String>,
    base: String,
    scope: Scope,
    filter: FilterTemplate,
    attributes: Attributes,
    requested: Vec<String>,
    size_limit: i32,
    time_limit: i32,
    pool: Pool,
    cache: Option<Cache>,
}

/// Where the answer came from, for logs and `explain`.
enum Via {
    /// Searched now (with or without a cache configured).
    Search { cache: bool },
    /// A fresh cache answer.
    Cache { age_secs: u64 },
    /// The directory failed; a last known entry answered.
    Stale { age_secs: u64, error: LdapError },
}

/// One lookup, with what `explain` shows.
struct Trail {
    answer: Result<Option<Arc<Found>>, LdapError>,
    via: Via,
    filter: String,
    /// The server that answered the search, when one did.
    server: Option<Arc<str>>,
}

impl LdapDirectory {
    /// Build the directory: reads the bind password and CA files, sets up TLS. No
    /// connection is opened yet.
    pub fn new(config: LdapConfig) -> Result<LdapDirectory, LdapError> {
        let bind_password = match &config.bind_password_file {
            Some(path) => read_password(path)?,
            None => String::new(),
        };
        let tls = tls::client_config(config.ca_file.as_deref())?;
        let size_limit = i32::try_from(config.size_limit)
            .map_err(|_| LdapError::Config("size_limit is too large".into()))?;
        let time_limit = i32::try_from(config.time_limit)
            .map_err(|_| LdapError::Config("time_limit is too large".into()))?;
        let pool = Pool::new(PoolSettings {
            servers: config.servers.clone(),
            bind_dn: config.bind_dn.clone().unwrap_or_default(),
            bind_password,
            starttls: config.starttls,
            tls,
            pool_size: config.pool_size,
            connect_timeout: config.connect_timeout,
            timeout: config.timeout,
            idle_timeout: config.idle_timeout,
            server_retry: config.server_retry,
        });
        Ok(LdapDirectory {
            name: config.servers.join(","),
            authoritative: config.domains.iter().cloned().collect(),
            consulted: config.consult_domains.iter().cloned().collect(),
            base: config.base,
            scope: match config.scope {
                SearchScope::Base => Scope::Base,
                SearchScope::One => Scope::OneLevel,
                SearchScope::Sub => Scope::Subtree,
            },
            filter: config.filter,
            requested: vec![
                config.attributes.mail_host.clone(),
                config.attributes.routing_address.clone(),
            ],
            attributes: config.attributes,
            size_limit,
            time_limit,
            pool,
            cache: Cache::new(&config.cache),
        })
    }

    /// The filter sent for `rcpt` (escaped), as `explain` shows it.
    pub fn filter_for(&self, rcpt: &Address) -> String {
        self.filter.render(rcpt)
    }

    async fn run(&self, rcpt: &Address) -> Trail {
        let key = rcpt.key();
        let filter = self.filter.render(rcpt);
        if let Some(cached) = self
            .cache
            .as_ref()
            .and_then(|c| c.fresh(key, Instant::now()))
        {
            tracing::debug!(rcpt = %rcpt, found = cached.found.is_some(), age_s = cached.age.as_secs(), "ldap cache hit");
            crate::metrics::metrics().ldap_cache("hit");
            let Cached { found, age } = cached;
            return Trail {
                answer: Ok(found),
                via: Via::Cache {
                    age_secs: age.as_secs(),
                },
                filter,
                server: None,
            };
        }
        let started = Instant::now();
        let answer = self.search(&filter).await;
        let took = started.elapsed();
        let elapsed_ms = took.as_millis() as u64;
        let cache = self.cache.is_some();
        let m = crate::metrics::metrics();
        if cache {
            m.ldap_cache("miss");
        }
        let outcome = match &answer {
            Ok((_, Some(_))) => "found",
            Ok((_, None)) => "not_found",
            Err(_) => "error",
        };
        m.ldap_lookup(outcome, took);
        match answer {
            Ok((server, found)) => {
                let found = found.map(Arc::new);
                match &found {
                    Some(f) => {
                        tracing::debug!(rcpt = %rcpt, filter = %filter, server = %server, dn = %f.dn, elapsed_ms, "ldap entry found")
                    }
                    None => {
                        tracing::debug!(rcpt = %rcpt, filter = %filter, server = %server, elapsed_ms, "ldap entry not found")
                    }
                }
                if let Some(c) = &self.cache {
                    c.store(key, found.clone(), Instant::now());
                }
                Trail {
                    answer: Ok(found),
                    via: Via::Search { cache },
                    filter,
                    server: Some(server),
                }
            }
            Err(error) => {
                if let LdapError::Ambiguous {
                    server, count, dns, ..
                } = &error
                {
                    tracing::warn!(rcpt = %rcpt, filter = %filter, server = %server, count, dns = %dns, "ldap: several entries match one recipient, deferring");
                } else {
                    tracing::warn!(rcpt = %rcpt, filter = %filter, error = %error, elapsed_ms, "ldap lookup failed");
                }
                let stale = self
                    .cache
                    .as_ref()
                    .and_then(|c| c.stale(key, Instant::now()));
                match stale {
                    Some((found, age)) => {
                        m.ldap_cache("stale");
                        tracing::warn!(rcpt = %rcpt, dn = %found.dn, age_s = age.as_secs(), "ldap: routing from the last known entry while the directory fails");
                        Trail {
                            answer: Ok(Some(found)),
                            via: Via::Stale {
                                age_secs: age.as_secs(),
                                error,
                            },
                            filter,
                            server: None,
                        }
                    }
                    None => Trail {
                        answer: Err(error),
                        via: Via::Search { cache },
                        filter,
                        server: None,
                    },
                }
            }
        }
    }

    /// Search; the server that answered, and its one entry or none.
    async fn search(&self, filter: &str) -> Result<(Arc<str>, Option<Found>), LdapError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(LdapError::Config(
                "lookup outside a tokio runtime (the LDAP source needs one)".into(),
            ));
        }
        let query = Query {
            base: &self.base,
            scope: self.scope,
            filter,
            attrs: &self.requested,
            size_limit: self.size_limit,
            time_limit: self.time_limit,
        };
        let reply = self.pool.search(&query).await?;
        let server = reply.server.clone();
        Ok((server, map_reply(reply, filter, &self.attributes)?))
    }

    fn answer(trail: &Trail) -> DirectoryAnswer {
        match &trail.answer {
            Ok(Some(found)) => DirectoryAnswer::Found(DirectoryEntry {
                dn: found.dn.clone(),
                mail_host: found.mail_host.clone(),
                routing_address: found.routing_address.clone(),
                cache: match &trail.via {
                    Via::Search { cache: false } => None,
                    Via::Search { cache: true } => Some("(cache miss)".to_string()),
                    Via::Cache { age_secs } => Some(format!("(cache hit, age {age_secs}s)")),
                    Via::Stale { age_secs, error } => Some(format!(
                        "(stale cache, age {age_secs}s; directory failed: {error})"
                    )),
                },
            }),
            Ok(None) => DirectoryAnswer::NotFound,
            Err(e) => DirectoryAnswer::TempError {
                reason: e.to_string(),
            },
        }
    }

    fn steps(&self, rcpt: &Address, trail: &Trail) -> Vec<Step> {
        let mut steps = Vec::with_capacity(3);
        let cache = match &trail.via {
            Via::Search { cache: false } => "off".to_string(),
            Via::Search { cache: true } => "miss".to_string(),
            Via::Cache { age_secs } => format!("hit (age {age_secs}s)"),
            Via::Stale { age_secs, .. } => {
                format!("stale entry used (age {age_secs}s), the directory failed")
            }
        };
        steps.push(step("ldap cache", rcpt.key(), cache));
        let scope = match self.scope {
            Scope::Base => "base",
            Scope::OneLevel => "one",
            Scope::Subtree => "sub",
        };
        let mut search = String::new();
        match (&trail.via, &trail.answer) {
            (Via::Cache { .. }, _) => search.push_str("not sent (cache hit)"),
            (Via::Stale { error, .. }, _) => {
                let _ = write!(search, "error: {error}");
            }
            (Via::Search { .. }, Ok(Some(f))) => {
                let _ = write!(search, "1 entry from {}", f.server);
            }
            (Via::Search { .. }, Ok(None)) => {
                let server = trail.server.as_deref().unwrap_or(&self.name);
                let _ = write!(search, "no entry from {server}");
            }
            (Via::Search { .. }, Err(e)) => {
                let _ = write!(search, "error: {e}");
            }
        }
        let _ = write!(search, "; base {}, scope {scope}", self.base);
        steps.push(step("ldap search", &trail.filter, search));
        if let Ok(Some(f)) = &trail.answer {
            let value = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
            steps.push(step(
                "ldap entry",
                &f.dn,
                format!(
                    "{}={}, {}={}, from {}",
                    self.attributes.mail_host,
                    value(&f.mail_host),
                    self.attributes.routing_address,
                    value(&f.routing_address),
                    f.server
                ),
            ));
        }
        steps
    }
}

fn step(lookup: &'static str, key: &str, result: String) -> Step {
    Step {
        lookup,
        key: key.to_string(),
        result,
    }
}

impl Directory for LdapDirectory {
    fn scope(&self, domain: &str) -> DirectoryScope {
        if self.authoritative.contains(domain) {
            DirectoryScope::Authoritative
        } else if self.consulted.contains(domain) {
            DirectoryScope::Consult
        } else {
            DirectoryScope::None
        }
    }

    fn lookup<'a>(&'a self, rcpt: &'a Address) -> DirectoryFuture<'a> {
        Box::pin(async move { Self::answer(&self.run(rcpt).await) })
    }

    fn lookup_explained<'a>(&'a self, rcpt: &'a Address) -> ExplainedFuture<'a> {
        Box::pin(async move {
            let trail = self.run(rcpt).await;
            (Self::answer(&trail), self.steps(rcpt, &trail))
        })
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Debug for LdapDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapDirectory")
            .field("servers", &self.name)
            .field("base", &self.base)
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

/// Read the bind password: the file's first line, without its line ending.
fn read_password(path: &std::path::Path) -> Result<String, LdapError> {
    let error = |error: String| LdapError::File {
        what: "bind_password_file",
        path: path.to_path_buf(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(|e| error(e.to_string()))?;
    if meta.len() > 4096 {
        return Err(error("larger than 4 KiB; expected one line".into()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let password = text.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        return Err(error(
            "empty (an empty password would be an unauthenticated bind)".into(),
        ));
    }
    Ok(password)
}
