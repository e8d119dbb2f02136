//! Where a delivery connects: an address and the host name it was found under.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A transport endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix-domain socket (LMTP).
    Unix(PathBuf),
}

/// One place to try delivering to: the endpoint plus the host name it came from (used
/// for TLS server name checks, SNI and logs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// The host name (an MX host, the `[host]` of a route, or the IP address as text).
    pub host: String,
}

impl fmt::Display for Peer {
    /// `mx1.example.com[192.0.2.1]:25`, or `unix:/run/dovecot/lmtp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Endpoint::Tcp(a) => write!(f, "{}[{}]:{}", self.host, a.ip(), a.port()),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_postfix_relay_field() {
        let p = Peer {
            endpoint: Endpoint::Tcp("192.0.2.1:25".parse().unwrap()),
            host: "mx1.example.com".into(),
        };
        assert_eq!(p.to_string(), "mx1.example.com[192.0.2.1]:25");
    }
}
