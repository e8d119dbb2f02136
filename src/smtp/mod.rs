//! The SMTP front end: the part the Internet talks to.
//!
//! Postfix's smtpd in one module tree: [`server`] accepts connections within limits and
//! handles STARTTLS and shutdown; [`session`] runs the ESMTP dialogue; [`command`] parses
//! command lines (smtp-proto plus the routing core's path parser); [`data`] receives the
//! message; [`conn`] does bounded, pipelined I/O; [`received`] writes our stamp; [`tls`]
//! loads the certificate. Accepted messages go to [`crate::spool`] and are answered `250`
//! only once fsynced.

pub mod command;
pub mod config;
pub mod conn;
pub mod data;
pub mod received;
pub mod server;
pub mod session;
pub mod tls;

pub use config::SmtpConfig;
pub use server::Server;
