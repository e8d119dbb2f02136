//! The self-loop guard: a next hop that leads back to this gateway is never delivered
//! to (DESIGN: Loops). An MX record or a route that points at the gateway itself would
//! otherwise pass each message between the spool and the front end until its hop count
//! runs out.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::local_addrs::local_addresses;
use crate::delivery::{Endpoint, Peer, RcptResult, ResultKind};

/// Decides whether a [`Peer`] is this gateway. Cheap to clone.
///
/// A peer is this gateway when its host name is the gateway's host name, when its address
/// and port are one of the listening addresses, or when the gateway listens on an
/// unspecified address (`0.0.0.0`, `[::]`) on the peer's port and the peer's address is a
/// loopback address or one of this machine's addresses. `0.0.0.0` covers IPv4 peers only;
/// `[::]` covers both families (Linux binds it dual-stack by default).
///
/// This machine's addresses are read once, in [`SelfGuard::new`], from `/proc` on Linux
/// (IPv4 `/32 host LOCAL` entries of `/proc/net/fib_trie`, `/proc/net/if_inet6`);
/// elsewhere only loopback counts. An address added to an interface later is not seen
/// until the guard is made again.
#[derive(Debug, Clone)]
pub struct SelfGuard {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    hostname: String,
    listen: Vec<SocketAddr>,
    local: HashSet<IpAddr>,
}

impl SelfGuard {
    /// A guard for a gateway named `hostname` listening on `listen` (which may hold
    /// unspecified addresses such as `0.0.0.0:25` or `[::]:25`).
    pub fn new(hostname: &str, listen: &[SocketAddr]) -> SelfGuard {
        SelfGuard::with_local_addresses(hostname, listen, local_addresses())
    }

    /// Like [`SelfGuard::new`], with this machine's addresses given instead of read from
    /// `/proc` (for systems without it, and for tests).
    pub fn with_local_addresses(
        hostname: &str,
        listen: &[SocketAddr],
        local: impl IntoIterator<Item = IpAddr>,
    ) -> SelfGuard {
        SelfGuard {
            inner: Arc::new(Inner {
                hostname: host_key(hostname),
                listen: listen
                    .iter()
                    .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
                    .collect(),
                local: local.into_iter().map(|ip| ip.to_canonical()).collect(),
            }),
        }
    }

    /// Whether connecting to `peer` would reach this gateway. A unix-socket peer never
    /// does: the gateway listens on TCP only.
    pub fn is_self(&self, peer: &Peer) -> bool {
        let Endpoint::Tcp(addr) = &peer.endpoint else {
            return false;
        };
        let inner = &*self.inner;
        if !inner.hostname.is_empty() && host_key(&peer.host) == inner.hostname {
            return true;
        }
        let ip = addr.ip().to_canonical();
        inner.listen.iter().any(|l| {
            if l.port() != addr.port() {
                return false;
            }
            if l.ip() == ip {
                return true;
            }
            let covers = match l.ip() {
                IpAddr::V4(v4) => v4.is_unspecified() && ip.is_ipv4(),
                IpAddr::V6(v6) => v6.is_unspecified(),
            };
            covers && (ip.is_loopback() || inner.local.contains(&ip))
        })
    }

    /// The result of a recipient whose next hop is this gateway: deferred with `4.4.6`,
    /// so that the administrator can fix the route or the DNS before the message expires.
    pub fn result(&self, peer: &Peer) -> RcptResult {
        RcptResult::local(
            ResultKind::Deferred,
            "4.4.6",
            format!("mail for {peer} loops back to myself"),
        )
    }
}

/// A host name as compared: lower case, without a trailing dot.
fn host_key(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, addr: &str) -> Peer {
        Peer {
            endpoint: Endpoint::Tcp(addr.parse().unwrap()),
            host: host.to_string(),
        }
    }

    fn guard(listen: &[&str], local: &[&str]) -> SelfGuard {
        let listen: Vec<SocketAddr> = listen.iter().map(|a| a.parse().unwrap()).collect();
        let local: Vec<IpAddr> = local.iter().map(|a| a.parse().unwrap()).collect();
        SelfGuard::with_local_addresses("MX.Example.com.", &listen, local)
    }

    #[test]
    fn this_machines_addresses_count_only_on_a_wildcard_listener_port() {
        let g = guard(&["0.0.0.0:25"], &["10.0.0.7", "2001:db8::7"]);
        assert!(g.is_self(&tcp("other", "10.0.0.7:25")));
        assert!(!g.is_self(&tcp("other", "10.0.0.7:2525")));
        assert!(!g.is_self(&tcp("other", "10.0.0.8:25")));
        // 0.0.0.0 does not take IPv6 connections.
        assert!(!g.is_self(&tcp("other", "[2001:db8::7]:25")));
        let g6 = guard(&["[::]:25"], &["10.0.0.7", "2001:db8::7"]);
        assert!(g6.is_self(&tcp("other", "[2001:db8::7]:25")));
        assert!(g6.is_self(&tcp("other", "10.0.0.7:25")));
        assert!(g6.is_self(&tcp("other", "[::ffff:10.0.0.7]:25")));
        assert!(g6.is_self(&tcp("other", "[::1]:25")));
    }

    #[test]
    fn a_specific_listener_matches_only_itself() {
        let g = guard(&["192.0.2.1:25"], &["192.0.2.1", "127.0.0.1"]);
        assert!(g.is_self(&tcp("other", "192.0.2.1:25")));
        assert!(!g.is_self(&tcp("other", "127.0.0.1:25")));
    }

    #[test]
    fn host_name_match_ignores_case_and_trailing_dot() {
        let g = guard(&[], &[]);
        assert!(g.is_self(&tcp("mx.example.com", "192.0.2.9:25")));
        assert!(!g.is_self(&tcp("mx2.example.com", "192.0.2.9:25")));
        let unix = Peer {
            endpoint: Endpoint::Unix("/run/lmtp".into()),
            host: "mx.example.com".into(),
        };
        assert!(!g.is_self(&unix));
    }

    #[test]
    fn loop_result_is_a_4_4_6_deferral_naming_the_peer() {
        let g = guard(&[], &[]);
        let r = g.result(&tcp("mx.example.com", "192.0.2.9:25"));
        assert_eq!(r.kind, ResultKind::Deferred);
        assert_eq!(r.status, "4.4.6");
        assert_eq!(
            r.detail,
            "mail for mx.example.com[192.0.2.9]:25 loops back to myself"
        );
    }
}
