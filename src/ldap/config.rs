//! The `ldap:` section of the gateway configuration.

use std::path::Path;

use serde::Deserialize;

/// How to reach and query the directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// Server URLs, tried in order.
    pub servers: Vec<String>,
}

impl LdapConfig {
    /// Make relative paths (password file, CA file) relative to `base`.
    pub fn resolve_paths(&mut self, _base: &Path) {}
}
