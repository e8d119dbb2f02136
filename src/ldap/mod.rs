//! The LDAP directory source: `mailHost` / `mailRoutingAddress` routing from OpenLDAP,
//! 389-DS or Active Directory, implementing [`crate::Directory`].
//!
//! Input: the `ldap:` section of the gateway configuration and, per lookup, a recipient.
//! Output: the routing facts of the one matching entry (DN, mail host, routing address),
//! "no entry", or a temporary error; the router maps them after the LDAP mail routing
//! draft. Failure modes: a server that is down, slow or ambiguous gives a temporary
//! error (`451 4.4.3` at RCPT), never "user unknown". See `docs/ldap.md`.
//!
//! One job per file:
//!
//! - `config`: the `ldap:` settings, checked when the configuration is read;
//! - `filter`: the filter template and RFC 4515 escaping;
//! - `tls`: the rustls client configuration (ring provider, CA file);
//! - `pool`: connections, failover across servers, reconnect, timeouts;
//! - `mapping`: a search reply to one entry's routing facts;
//! - `cache`: positive, negative and stale-if-error answers;
//! - `source`: [`LdapDirectory`], tying them together, with `explain` steps and logs;
//! - `error`: [`LdapError`].

mod cache;
mod config;
mod error;
mod filter;
mod mapping;
mod pool;
mod source;
mod tls;

pub use config::{Attributes, CacheConfig, DEFAULT_FILTER, LdapConfig, SearchScope};
pub use error::LdapError;
pub use filter::{FilterTemplate, escape_filter_value};
pub use source::LdapDirectory;
