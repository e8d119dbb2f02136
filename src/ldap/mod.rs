//! The LDAP directory source: `mailHost` / `mailRoutingAddress` routing from OpenLDAP,
//! 389-DS or Active Directory, implementing [`crate::Directory`].

mod config;

pub use config::LdapConfig;
