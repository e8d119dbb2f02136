//! Helpers for the LDAP integration tests: a throwaway slapd, a test PKI, and a tracing
//! subscriber that records log events so tests can assert on them.
#![allow(dead_code)]

pub mod logs;
pub mod pki;
pub mod slapd;
