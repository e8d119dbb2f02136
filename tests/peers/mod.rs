//! Real peers started by the tests, on 127.0.0.1 with free ports.

pub mod dns;
