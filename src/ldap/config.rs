//! The `ldap:` section of the gateway configuration.
//!
//! Input: YAML, read by the gateway configuration loader. Output: an [`LdapConfig`] whose
//! every value has been checked (server URLs, filter template, domains, durations,
//! limits), so that a mistake is reported with the file, line and column of the config,
//! when the configuration is loaded, not at the first recipient. Files named here (the
//! bind password, the CA certificates) are read when the directory is built.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::duration;

use serde::Deserialize;

use super::filter::FilterTemplate;
use crate::routing::address::normalize_domain;

/// How to reach and query the directory.
///
/// ```yaml
/// ldap:
///   servers: [ldap://ldap1.example.com, ldap://ldap2.example.com]
///   starttls: true
///   ca_file: ldap-ca.pem
///   bind_dn: cn=splitmx,ou=services,dc=example,dc=com
///   bind_password_file: ldap.secret
///   base: ou=people,dc=example,dc=com
///   filter: "(|(mail=%s)(mailLocalAddress=%s))"
///   domains: [example.com]
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawLdapConfig")]
pub struct LdapConfig {
    /// Server URLs (`ldap://host[:port]` or `ldaps://host[:port]`), tried in order.
    pub servers: Vec<String>,
    /// Upgrade `ldap://` connections with StartTLS (`ldaps://` is always TLS).
    pub starttls: bool,
    /// PEM file with the CA certificates that sign the servers' certificates; without it
    /// the system's trust store is used.
    pub ca_file: Option<PathBuf>,
    /// DN for a simple bind; anonymous when absent.
    pub bind_dn: Option<String>,
    /// File holding the bind password (one line; a final newline is ignored).
    pub bind_password_file: Option<PathBuf>,
    /// Search base DN.
    pub base: String,
    /// Search scope.
    pub scope: SearchScope,
    /// Search filter template: `%s` full address, `%u` local part, `%d` domain, `%%` a
    /// percent sign; every value is escaped per RFC 4515.
    pub filter: FilterTemplate,
    /// Domains the directory is authoritative for: no entry means no such user (550 5.1.1).
    pub domains: Vec<String>,
    /// Domains where the directory is consulted: no entry means the domain's default route.
    pub consult_domains: Vec<String>,
    /// Entries the server may return (sent as the search size limit); more than one
    /// entry for a recipient is a temporary failure, never a guess.
    pub size_limit: u32,
    /// Server-side search time limit, in whole seconds (0: none).
    pub time_limit: u32,
    /// Names of the routing attributes.
    pub attributes: Attributes,
    /// Time to open a connection to one server (TCP, TLS and bind).
    pub connect_timeout: Duration,
    /// Time for a whole lookup (waiting for a connection, failover, search): past it the
    /// recipient gets `451 4.4.3`.
    pub timeout: Duration,
    /// Most connections open at once (and lookups in flight).
    pub pool_size: usize,
    /// Idle connections older than this are closed instead of reused.
    pub idle_timeout: Duration,
    /// After a server fails, the next servers are tried first for this long.
    pub server_retry: Duration,
    /// The answer cache (off unless configured).
    pub cache: CacheConfig,
}

/// LDAP search scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchScope {
    /// The base entry only.
    Base,
    /// The entries directly below the base.
    One,
    /// The base and everything below it.
    #[default]
    Sub,
}

/// Names of the routing attributes (the LDAP mail routing draft's by default).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Attributes {
    /// The host that holds the mailbox (default `mailHost`).
    pub mail_host: String,
    /// The address to deliver to instead (default `mailRoutingAddress`).
    pub routing_address: String,
}

impl Default for Attributes {
    fn default() -> Self {
        Attributes {
            mail_host: "mailHost".to_string(),
            routing_address: "mailRoutingAddress".to_string(),
        }
    }
}

/// The answer cache. All durations default to 0 (off).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// How long an entry that was found is reused.
    #[serde(deserialize_with = "duration::deserialize")]
    pub positive_ttl: Duration,
    /// How long "no such entry" is reused.
    #[serde(deserialize_with = "duration::deserialize")]
    pub negative_ttl: Duration,
    /// While the directory fails, a found entry keeps routing for this long after its
    /// positive TTL ran out (last known good). A "no such entry" is never reused this way.
    #[serde(deserialize_with = "duration::deserialize")]
    pub stale_if_error: Duration,
    /// Most recipients kept.
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            positive_ttl: Duration::ZERO,
            negative_ttl: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            max_entries: 100_000,
        }
    }
}

impl CacheConfig {
    /// True when anything is cached at all.
    pub fn enabled(&self) -> bool {
        !(self.positive_ttl.is_zero()
            && self.negative_ttl.is_zero()
            && self.stale_if_error.is_zero())
            && self.max_entries > 0
    }
}

impl LdapConfig {
    /// Make relative paths (password file, CA file) relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        for path in [&mut self.ca_file, &mut self.bind_password_file]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }
}

/// The section as written, before its values are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdapConfig {
    servers: Vec<String>,
    #[serde(default)]
    starttls: bool,
    ca_file: Option<PathBuf>,
    bind_dn: Option<String>,
    bind_password_file: Option<PathBuf>,
    base: String,
    #[serde(default)]
    scope: SearchScope,
    filter: Option<String>,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    consult_domains: Vec<String>,
    size_limit: Option<u32>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    time_limit: Option<Duration>,
    #[serde(default)]
    attributes: Attributes,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    timeout: Option<Duration>,
    pool_size: Option<usize>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize_opt")]
    server_retry: Option<Duration>,
    #[serde(default)]
    cache: CacheConfig,
}

/// The filter used when none is configured.
pub const DEFAULT_FILTER: &str = "(mail=%s)";

impl TryFrom<RawLdapConfig> for LdapConfig {
    type Error = String;

    fn try_from(raw: RawLdapConfig) -> Result<Self, String> {
        if raw.servers.is_empty() {
            return Err("ldap: servers: list at least one ldap:// or ldaps:// URL".into());
        }
        let servers = raw
            .servers
            .iter()
            .map(|s| check_url(s))
            .collect::<Result<Vec<_>, _>>()?;
        let filter = FilterTemplate::parse(raw.filter.as_deref().unwrap_or(DEFAULT_FILTER))
            .map_err(|e| format!("ldap: filter: {e}"))?;
        let domains = normalize_domains("domains", &raw.domains)?;
        let consult_domains = normalize_domains("consult_domains", &raw.consult_domains)?;
        if domains.is_empty() && consult_domains.is_empty() {
            return Err(
                "ldap: list the domains the directory answers for in 'domains' (authoritative) or 'consult_domains'"
                    .into(),
            );
        }
        if let Some(d) = domains.iter().find(|d| consult_domains.contains(d)) {
            return Err(format!(
                "ldap: domain '{d}' is in both 'domains' and 'consult_domains'"
            ));
        }
        if raw.bind_password_file.is_some() && raw.bind_dn.is_none() {
            return Err("ldap: bind_password_file needs a bind_dn".into());
        }
        if raw.bind_dn.is_some() && raw.bind_password_file.is_none() {
            return Err("ldap: bind_dn needs a bind_password_file".into());
        }
        if raw.starttls && servers.iter().all(|s| s.starts_with("ldaps://")) {
            return Err("ldap: starttls applies to ldap:// URLs; ldaps:// is TLS already".into());
        }
        if raw.base.trim().is_empty() {
            return Err("ldap: base: the search base DN is empty".into());
        }
        for (what, name) in [
            ("attributes.mail_host", &raw.attributes.mail_host),
            (
                "attributes.routing_address",
                &raw.attributes.routing_address,
            ),
        ] {
            if !is_attribute_name(name) {
                return Err(format!("ldap: {what}: '{name}' is not an attribute name"));
            }
        }
        let timeout = raw.timeout.unwrap_or(Duration::from_secs(5));
        let connect_timeout = raw.connect_timeout.unwrap_or(Duration::from_secs(2));
        if timeout.is_zero() || connect_timeout.is_zero() {
            return Err("ldap: timeout and connect_timeout must be more than 0".into());
        }
        let size_limit = raw.size_limit.unwrap_or(2);
        if size_limit == 0 || size_limit > i32::MAX as u32 {
            return Err("ldap: size_limit must be at least 1 (2 detects ambiguous entries)".into());
        }
        let time_limit = match raw.time_limit {
            Some(t) => whole_seconds(t),
            None => whole_seconds(timeout),
        };
        let pool_size = raw.pool_size.unwrap_or(4);
        if pool_size == 0 || pool_size > 1024 {
            return Err("ldap: pool_size must be between 1 and 1024".into());
        }
        Ok(LdapConfig {
            servers,
            starttls: raw.starttls,
            ca_file: raw.ca_file,
            bind_dn: raw.bind_dn,
            bind_password_file: raw.bind_password_file,
            base: raw.base,
            scope: raw.scope,
            filter,
            domains,
            consult_domains,
            size_limit,
            time_limit,
            attributes: raw.attributes,
            connect_timeout,
            timeout,
            pool_size,
            idle_timeout: raw.idle_timeout.unwrap_or(Duration::from_secs(60)),
            server_retry: raw.server_retry.unwrap_or(Duration::from_secs(10)),
            cache: raw.cache,
        })
    }
}

/// Seconds for the LDAP time limit, rounded up, at most `i32::MAX`.
fn whole_seconds(d: Duration) -> u32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs.min(i32::MAX as u64)).unwrap_or(0)
}

fn normalize_domains(what: &str, domains: &[String]) -> Result<Vec<String>, String> {
    domains
        .iter()
        .map(|d| normalize_domain(d).map_err(|e| format!("ldap: {what}: '{d}': {e}")))
        .collect()
}

fn is_attribute_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';')
}

/// Check a server URL: `ldap://` or `ldaps://`, a host, maybe a port, nothing else.
/// Returns it without a trailing `/`.
fn check_url(url: &str) -> Result<String, String> {
    let bad = |why: &str| format!("ldap: servers: '{url}': {why}");
    let rest = url
        .strip_prefix("ldap://")
        .or_else(|| url.strip_prefix("ldaps://"))
        .ok_or_else(|| bad("expected ldap://host[:port] or ldaps://host[:port]"))?;
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    if hostport.is_empty() {
        return Err(bad("no host"));
    }
    if hostport.contains(['/', '?', '@', ' ']) {
        return Err(bad(
            "only a host and port are allowed (base and filter are separate settings)",
        ));
    }
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed '[' in the host"))?;
            (host, after.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if let Some(port) = port
        && port.parse::<u16>().ok().filter(|p| *p > 0).is_none()
    {
        return Err(bad("the port must be a number from 1 to 65535"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(check_url("ldap://h:389/").as_deref(), Ok("ldap://h:389"));
        assert!(check_url("ldaps://[::1]:636").is_ok());
        assert!(check_url("http://h").is_err());
        assert!(check_url("ldap://h:0").is_err());
        assert!(check_url("ldap://h/dc=x??sub").is_err());
        assert!(check_url("ldap://").is_err());
    }

    #[test]
    fn time_limit_rounds_up() {
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::ZERO), 0);
    }
}
