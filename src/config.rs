//! The gateway's configuration file (`splitmx.yaml`), and the built-in default used when
//! there is none.
//!
//! The file is YAML, read with the same bounded parser as the routing tables; an unknown
//! or malformed setting is an error that names file:line:column. Relative paths in the
//! file are taken relative to the file's own directory, so a config can travel with its
//! tables; without a config file they are relative to the working directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::routing::config::{DEFAULT_MAX_TABLE_BYTES, RoutingConfig};
use crate::routing::hops::LoopPolicy;

/// Where the gateway listens by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2525";

/// The whole gateway configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where the configuration came from (`None`: the built-in default).
    pub source: Option<PathBuf>,
    /// The gateway's host name, used in greetings, `Received:` stamps and loop checks.
    pub hostname: String,
    /// Addresses to accept SMTP on.
    pub listen: Vec<SocketAddr>,
    /// Routing tables and lookup settings.
    pub routing: RoutingConfig,
    /// Watch the routing directory and reload on change.
    pub watch: bool,
    /// Loop limits.
    pub loops: LoopPolicy,
    /// Spool directory.
    pub spool: PathBuf,
    /// Root of the default Maildir delivery.
    pub mail: PathBuf,
    /// The LDAP directory source, when configured.
    #[cfg(feature = "ldap")]
    pub ldap: Option<crate::ldap::LdapConfig>,
    /// SMTP front end limits, timeouts and TLS.
    #[cfg(feature = "server")]
    pub smtp: crate::smtp::SmtpConfig,
    /// Delivery: concurrency, timeouts, retries, DNS and outbound TLS.
    #[cfg(feature = "server")]
    pub delivery: crate::delivery::DeliveryConfig,
    /// The recipient journal (under `<spool>/journal`).
    #[cfg(feature = "server")]
    pub journal: crate::journal::JournalConfig,
    /// The Prometheus endpoint.
    #[cfg(feature = "server")]
    pub metrics: crate::metrics::MetricsConfig,
}

/// A configuration file that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {error}")]
    Io {
        /// The file.
        file: String,
        /// Why.
        error: String,
    },
    /// A syntax error or bad value, with its place.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line.
        line: u64,
        /// 1-based column.
        column: u64,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    hostname: Option<String>,
    listen: Option<Vec<String>>,
    #[serde(default)]
    routing: RawRouting,
    #[serde(default)]
    loops: RawLoops,
    spool: Option<PathBuf>,
    mail: Option<PathBuf>,
    #[cfg(feature = "ldap")]
    ldap: Option<crate::ldap::LdapConfig>,
    #[cfg(feature = "server")]
    #[serde(default)]
    smtp: crate::smtp::SmtpConfig,
    #[cfg(feature = "server")]
    #[serde(default)]
    delivery: crate::delivery::DeliveryConfig,
    #[cfg(feature = "server")]
    #[serde(default)]
    journal: crate::journal::JournalConfig,
    #[cfg(feature = "server")]
    #[serde(default)]
    metrics: crate::metrics::MetricsConfig,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    dir: Option<PathBuf>,
    recipient_delimiter: Option<String>,
    watch: Option<bool>,
    max_table_bytes: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLoops {
    max_hops: Option<usize>,
    max_self_passes: Option<usize>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        let hostname = system_hostname();
        let listen: Vec<SocketAddr> = DEFAULT_LISTEN.parse().into_iter().collect();
        GatewayConfig {
            source: None,
            routing: RoutingConfig::new("routing")
                .with_hostname(&hostname)
                .with_local_addresses(listen.clone()),
            hostname,
            listen,
            watch: false,
            loops: LoopPolicy::default(),
            spool: PathBuf::from("spool"),
            mail: PathBuf::from("mail"),
            #[cfg(feature = "ldap")]
            ldap: None,
            #[cfg(feature = "server")]
            smtp: crate::smtp::SmtpConfig::default(),
            #[cfg(feature = "server")]
            delivery: crate::delivery::DeliveryConfig::default(),
            #[cfg(feature = "server")]
            journal: crate::journal::JournalConfig::default(),
            #[cfg(feature = "server")]
            metrics: crate::metrics::MetricsConfig::default(),
        }
    }
}

impl GatewayConfig {
    /// Read a configuration file, or the built-in default when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<GatewayConfig, ConfigError> {
        let Some(path) = path else {
            return Ok(GatewayConfig::default());
        };
        let file = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| ConfigError::Io {
            file: file.clone(),
            error: e.to_string(),
        })?;
        if meta.len() > 1024 * 1024 {
            return Err(ConfigError::Io {
                file,
                error: "larger than 1 MiB".to_string(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            file: file.clone(),
            error: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        GatewayConfig::from_yaml(&text, &file, base)
    }

    /// Parse configuration text; `file` names it in errors, relative paths are under `base`.
    pub fn from_yaml(text: &str, file: &str, base: &Path) -> Result<GatewayConfig, ConfigError> {
        let invalid = |line: u64, column: u64, message: String| ConfigError::Invalid {
            file: file.to_string(),
            line,
            column,
            message,
        };
        let mut options = serde_saphyr::Options::default();
        let mut budget = serde_saphyr::Budget::default();
        budget.max_depth = 16;
        budget.max_aliases = 100;
        budget.max_documents = 1;
        options.budget = Some(budget);
        options.with_snippet = false;
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_saphyr::from_str_with_options::<Option<RawConfig>>(text, options)
                .map_err(|e| {
                    let (l, c) = e
                        .location()
                        .map(|l| (l.line(), l.column()))
                        .unwrap_or((1, 1));
                    let msg = crate::routing::table::yaml_message(&e.to_string());
                    invalid(l.max(1), c.max(1), msg)
                })?
                .unwrap_or_default()
        };
        let mut config = GatewayConfig {
            source: Some(PathBuf::from(file)),
            ..GatewayConfig::default()
        };
        if let Some(h) = raw.hostname {
            config.hostname = crate::routing::address::normalize_domain(&h)
                .map_err(|e| invalid(1, 1, format!("hostname '{h}': {e}")))?;
        }
        if let Some(listen) = raw.listen {
            config.listen = listen
                .iter()
                .map(|l| {
                    l.parse::<SocketAddr>()
                        .map_err(|e| invalid(1, 1, format!("listen '{l}': {e} (expected IP:PORT)")))
                })
                .collect::<Result<_, _>>()?;
        }
        let dir = base.join(raw.routing.dir.unwrap_or_else(|| PathBuf::from("routing")));
        let mut routing = RoutingConfig::new(dir)
            .with_hostname(&config.hostname)
            .with_local_addresses(config.listen.clone())
            .with_max_table_bytes(
                raw.routing
                    .max_table_bytes
                    .unwrap_or(DEFAULT_MAX_TABLE_BYTES),
            );
        if let Some(d) = raw.routing.recipient_delimiter {
            routing = routing.with_recipient_delimiter(&d);
        }
        config.routing = routing;
        config.watch = raw.routing.watch.unwrap_or(false);
        if let Some(n) = raw.loops.max_hops {
            config.loops.max_hops = n;
        }
        if let Some(n) = raw.loops.max_self_passes {
            config.loops.max_self_passes = n;
        }
        config.spool = base.join(raw.spool.unwrap_or_else(|| PathBuf::from("spool")));
        config.mail = base.join(raw.mail.unwrap_or_else(|| PathBuf::from("mail")));
        #[cfg(feature = "server")]
        {
            config.smtp = raw.smtp;
            config.smtp.resolve_paths(base);
            config.delivery = raw.delivery;
            config.delivery.resolve_paths(base);
            raw.journal.validate().map_err(|m| invalid(1, 1, m))?;
            config.journal = raw.journal;
            config.metrics = raw.metrics;
        }
        #[cfg(feature = "ldap")]
        {
            config.ldap = raw.ldap.map(|mut l| {
                l.resolve_paths(base);
                l
            });
        }
        Ok(config)
    }
}

/// The machine's host name, or `localhost`.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
