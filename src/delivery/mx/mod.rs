//! Next-hop resolution: a route's [`NextHop`] becomes the ordered list of [`Peer`]s to try
//! (RFC 5321 §5.1, RFC 7505), and [`SelfGuard`] refuses peers that are this gateway.
//!
//! - `[host]:port` ([`NextHop::Direct`]): an IP address is used as it is, without any
//!   query; a name is looked up for A and AAAA only, never MX.
//! - `host` / `host:port` ([`NextHop::Mx`]) and `smtp:` ([`NextHop::RecipientDomain`],
//!   the recipient's own domain): the MX records, lowest preference first and equal
//!   preferences shuffled, then each MX host's addresses in turn. No MX record (NODATA)
//!   means the implicit MX: the domain's own addresses. A recipient domain that is an
//!   address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) is connected to directly.
//! - `unix:/path` ([`NextHop::Unix`]): one peer, the socket, named `localhost`.
//!
//! Each host's IPv4 addresses come before its IPv6 ones. At most [`MAX_ADDRESSES`] peers
//! are returned (Postfix's `smtp_mx_address_limit` is 5; more addresses only lengthen a
//! delivery that is failing anyway). An MX host that has no address, or whose address
//! lookup fails, is skipped; when no MX host is left the next hop is deferred (4.4.4, or
//! 4.4.3 if a lookup failed) rather than bounced, as Postfix does with
//! `smtp_defer_if_no_mx_address_found = yes`: a broken MX host is usually a DNS change in
//! progress. See [`MxError`] for every status.
//!
//! Time: one call takes at most the lookup budget, `connect_timeout` clamped to 1–10 s
//! (10 s with the default 30 s). Each DNS query gets half of the budget and one retry;
//! MX hosts are looked up concurrently, and a host still unanswered when the budget runs
//! out is skipped (or, if it was the last hope, the next hop is deferred 4.4.3).
//!
//! Caching is hickory's: answers are kept for their TTL (a TTL of 0 is not cached, so
//! tests can change records between lookups); negative answers for their SOA minimum.
//! With `nameservers` configured, only those servers answer (UDP, TCP after a truncated
//! answer) and `/etc/hosts` is not read; without, `/etc/resolv.conf` is read once, at
//! [`Resolver::new`], and `/etc/hosts` is consulted for addresses.

mod error;
mod local_addrs;
mod order;
mod self_guard;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};

use crate::NextHop;
use crate::delivery::{DeliveryConfig, Endpoint, Peer};
use crate::routing::address::normalize_domain;

pub use error::MxError;
pub use self_guard::SelfGuard;

use order::{MxRecord, is_null_mx, ordered_hosts};

/// Most peers returned for one next hop.
pub const MAX_ADDRESSES: usize = 10;
/// Shortest lookup budget, whatever `connect_timeout` says.
const MIN_BUDGET: Duration = Duration::from_secs(1);
/// Longest lookup budget.
const MAX_BUDGET: Duration = Duration::from_secs(10);

/// Turns next hops into peers. Cheap to clone: every clone shares one DNS cache.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    dns: TokioResolver,
    budget: Duration,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("budget", &self.inner.budget)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver using `config.nameservers` (UDP, with TCP after a truncated answer; any
    /// port), or the system's `/etc/resolv.conf` when that list is empty. The lookup
    /// budget comes from `config.connect_timeout` (see the module docs).
    pub fn new(config: &DeliveryConfig) -> Result<Resolver, MxError> {
        let budget = config.connect_timeout.clamp(MIN_BUDGET, MAX_BUDGET);
        let provider = TokioRuntimeProvider::default();
        let mut builder = if config.nameservers.is_empty() {
            let mut b = TokioResolver::builder(provider).map_err(|e| {
                MxError::temporary(
                    "4.3.5",
                    format!("reading the system DNS configuration (/etc/resolv.conf): {e}"),
                )
            })?;
            b.options_mut().use_hosts_file = ResolveHosts::Auto;
            b
        } else {
            let servers = config.nameservers.iter().map(name_server).collect();
            let mut b = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                provider,
            );
            b.options_mut().use_hosts_file = ResolveHosts::Never;
            b
        };
        let opts = builder.options_mut();
        opts.timeout = budget / 2;
        opts.attempts = 1;
        let dns = builder.build().map_err(|e| {
            MxError::temporary("4.3.5", format!("setting up the DNS resolver: {e}"))
        })?;
        Ok(Resolver {
            inner: Arc::new(Inner { dns, budget }),
        })
    }

    /// The peers to try for `hop`, best first. `rcpt_domain` is the recipient's domain,
    /// used by [`NextHop::RecipientDomain`] only. Never empty when `Ok`.
    pub async fn peers(&self, hop: &NextHop, rcpt_domain: &str) -> Result<Vec<Peer>, MxError> {
        let deadline = Instant::now() + self.inner.budget;
        match hop {
            NextHop::Unix { path } => Ok(vec![Peer {
                endpoint: Endpoint::Unix(PathBuf::from(path)),
                host: "localhost".to_string(),
            }]),
            NextHop::Direct { host, port } => match ip_literal(host) {
                Some(ip) => Ok(vec![literal_peer(ip, *port)]),
                None => self.direct(host, *port, deadline).await,
            },
            NextHop::Mx { domain, port } => self.mx(domain, *port, deadline).await,
            NextHop::RecipientDomain { port } => {
                if let Some(ip) = address_literal(rcpt_domain) {
                    return Ok(vec![literal_peer(ip, *port)]);
                }
                let domain = normalize_domain(rcpt_domain).map_err(|e| {
                    MxError::permanent(
                        "5.1.2",
                        format!("bad recipient domain '{rcpt_domain}': {e}"),
                    )
                })?;
                self.mx(&domain, *port, deadline).await
            }
        }
    }

    /// `[host]:port`: the host's addresses, no MX lookup.
    async fn direct(&self, host: &str, port: u16, deadline: Instant) -> Result<Vec<Peer>, MxError> {
        let name = fqdn(host)?;
        let answer = addresses(self.inner.dns.clone(), name, deadline).await;
        host_peers(host, port, answer)
    }

    /// MX resolution of `domain`.
    async fn mx(&self, domain: &str, port: u16, deadline: Instant) -> Result<Vec<Peer>, MxError> {
        let name = fqdn(domain)?;
        let records = match timeout_at(deadline, self.inner.dns.mx_lookup(name.clone())).await {
            Err(_) => return Err(timed_out(domain, "MX", self.inner.budget)),
            Ok(Ok(lookup)) => lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some(MxRecord {
                        preference: mx.preference,
                        host: host_text(&mx.exchange),
                    }),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            Ok(Err(e)) => match Failure::of(&e) {
                Failure::NoData => Vec::new(),
                Failure::NoSuchName => return Err(not_found(domain, "MX")),
                Failure::Temporary => return Err(dns_failure(domain, "MX", &e)),
            },
        };

        if records.is_empty() {
            tracing::debug!(domain, "no MX records, using the domain's own addresses");
            let answer = addresses(self.inner.dns.clone(), name, deadline).await;
            return host_peers(domain, port, answer);
        }
        if is_null_mx(&records) {
            return Err(MxError::permanent(
                "5.1.10",
                format!("domain {domain} does not accept mail (null MX)"),
            ));
        }

        let hosts = ordered_hosts(&records);
        let answers = self.host_addresses(&hosts, deadline).await;
        let mut peers = Vec::new();
        let mut failure = None;
        for (host, answer) in hosts.iter().zip(answers) {
            match answer {
                HostAnswer::Found(ips) => {
                    let room = MAX_ADDRESSES.saturating_sub(peers.len());
                    peers.extend(ips.into_iter().take(room).map(|ip| Peer {
                        endpoint: Endpoint::Tcp(SocketAddr::new(ip, port)),
                        host: host.clone(),
                    }));
                }
                HostAnswer::NoSuchHost | HostAnswer::NoAddress => {
                    tracing::warn!(domain, mx = %host, "MX host has no address record");
                }
                HostAnswer::Failed(detail) => {
                    tracing::warn!(domain, mx = %host, error = %detail, "MX host address lookup failed");
                    failure.get_or_insert(detail);
                }
            }
        }
        if !peers.is_empty() {
            return Ok(peers);
        }
        Err(match failure {
            Some(detail) => MxError::temporary("4.4.3", detail),
            None => MxError::temporary(
                "4.4.4",
                format!("no MX host for {domain} has a valid address record"),
            ),
        })
    }

    /// The addresses of each host, in the same order, looked up concurrently.
    async fn host_addresses(&self, hosts: &[String], deadline: Instant) -> Vec<HostAnswer> {
        let mut tasks = JoinSet::new();
        let mut answers: Vec<Option<HostAnswer>> = Vec::with_capacity(hosts.len());
        for (i, host) in hosts.iter().enumerate() {
            answers.push(None);
            match fqdn(host) {
                Ok(name) => {
                    let dns = self.inner.dns.clone();
                    tasks.spawn(async move { (i, addresses(dns, name, deadline).await) });
                }
                Err(_) => {
                    if let Some(slot) = answers.get_mut(i) {
                        *slot = Some(HostAnswer::NoSuchHost);
                    }
                }
            }
        }
        while let Some(joined) = tasks.join_next().await {
            // A task only ends without its answer if it panicked; that host stays unanswered.
            if let Ok((i, answer)) = joined
                && let Some(slot) = answers.get_mut(i)
            {
                *slot = Some(answer);
            }
        }
        answers
            .into_iter()
            .zip(hosts)
            .map(|(a, host)| {
                a.unwrap_or_else(|| HostAnswer::Failed(format!("address lookup of {host} failed")))
            })
            .collect()
    }
}

/// What the address lookup of one host found.
#[derive(Debug)]
enum HostAnswer {
    /// IPv4 addresses first, then IPv6.
    Found(Vec<IpAddr>),
    /// NXDOMAIN.
    NoSuchHost,
    /// The name exists without A or AAAA records.
    NoAddress,
    /// A temporary failure, described.
    Failed(String),
}

/// How a failed query failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// NOERROR without records of the type asked for.
    NoData,
    /// NXDOMAIN.
    NoSuchName,
    /// Anything else: SERVFAIL, REFUSED, timeouts, unreachable servers.
    Temporary,
}

impl Failure {
    fn of(e: &NetError) -> Failure {
        match e {
            NetError::Dns(DnsError::NoRecordsFound(NoRecords { response_code, .. })) => {
                match *response_code {
                    ResponseCode::NoError => Failure::NoData,
                    ResponseCode::NXDomain => Failure::NoSuchName,
                    _ => Failure::Temporary,
                }
            }
            _ => Failure::Temporary,
        }
    }
}

/// A and AAAA of `name`, both asked at once, within `deadline`.
async fn addresses(dns: TokioResolver, name: Name, deadline: Instant) -> HostAnswer {
    let host = host_text(&name);
    let both = async { tokio::join!(dns.ipv4_lookup(name.clone()), dns.ipv6_lookup(name.clone())) };
    let Ok((v4, v6)) = timeout_at(deadline, both).await else {
        return HostAnswer::Failed(format!("address lookup of {host} timed out"));
    };
    let mut ips = Vec::new();
    let mut failures = Vec::new();
    for (answer, rtype) in [(v4, "A"), (v6, "AAAA")] {
        match answer {
            Ok(lookup) => {
                for record in lookup.answers() {
                    let ip = match &record.data {
                        RData::A(a) => IpAddr::V4(a.0),
                        RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                        _ => continue,
                    };
                    if !ips.contains(&ip) {
                        ips.push(ip);
                    }
                }
            }
            Err(e) => failures.push((Failure::of(&e), rtype, e)),
        }
    }
    if !ips.is_empty() {
        return HostAnswer::Found(ips);
    }
    if let Some((_, rtype, e)) = failures.iter().find(|(f, ..)| *f == Failure::Temporary) {
        return HostAnswer::Failed(dns_failure(&host, rtype, e).detail);
    }
    if failures.iter().any(|(f, ..)| *f == Failure::NoSuchName) {
        return HostAnswer::NoSuchHost;
    }
    HostAnswer::NoAddress
}

/// The peers of a host looked up directly (`[host]` or an implicit MX).
fn host_peers(host: &str, port: u16, answer: HostAnswer) -> Result<Vec<Peer>, MxError> {
    match answer {
        HostAnswer::Found(ips) => Ok(ips
            .into_iter()
            .take(MAX_ADDRESSES)
            .map(|ip| Peer {
                endpoint: Endpoint::Tcp(SocketAddr::new(ip, port)),
                host: host.to_string(),
            })
            .collect()),
        HostAnswer::NoSuchHost => Err(not_found(host, "A")),
        HostAnswer::NoAddress => Err(MxError::permanent(
            "5.4.4",
            format!("host {host} has no A or AAAA record"),
        )),
        HostAnswer::Failed(detail) => Err(MxError::temporary("4.4.3", detail)),
    }
}

/// A name server from the configuration: UDP and TCP on its address's port.
fn name_server(addr: &SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

/// `name` as an absolute DNS name, so that no search domain is ever appended.
fn fqdn(name: &str) -> Result<Name, MxError> {
    let absolute = format!("{}.", name.trim_end_matches('.'));
    Name::from_ascii(&absolute)
        .map_err(|e| MxError::permanent("5.1.2", format!("bad host or domain name '{name}': {e}")))
}

/// A DNS name as a peer's host: lower case, no trailing dot; empty for the root.
fn host_text(name: &Name) -> String {
    let mut s = name.to_ascii().to_ascii_lowercase();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// `[host]` of a route: an IP address, with or without the `IPv6:` tag.
fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .get(..5)
        .filter(|tag| tag.eq_ignore_ascii_case("ipv6:"))
        .and_then(|_| host.get(5..))
        .unwrap_or(host);
    bare.parse().ok()
}

/// A recipient domain that is an address literal (RFC 5321 §4.1.3).
fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    ip_literal(inner)
}

fn literal_peer(ip: IpAddr, port: u16) -> Peer {
    Peer {
        endpoint: Endpoint::Tcp(SocketAddr::new(ip, port)),
        host: ip.to_string(),
    }
}

fn not_found(name: &str, rtype: &str) -> MxError {
    MxError::permanent(
        "5.1.2",
        format!(
            "host or domain name not found: name service error for name={name} type={rtype}: no such domain"
        ),
    )
}

fn dns_failure(name: &str, rtype: &str, e: &NetError) -> MxError {
    let what = match e {
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => {
            "server failure".to_string()
        }
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => "query refused".to_string(),
        NetError::Timeout => "timed out".to_string(),
        other => other.to_string(),
    };
    MxError::temporary(
        "4.4.3",
        format!("name service error for name={name} type={rtype}: {what}"),
    )
}

fn timed_out(name: &str, rtype: &str, budget: Duration) -> MxError {
    MxError::temporary(
        "4.4.3",
        format!(
            "name service error for name={name} type={rtype}: no answer within {}s",
            budget.as_secs()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_with_and_without_tag() {
        assert_eq!(ip_literal("192.0.2.1"), Some(IpAddr::from([192, 0, 2, 1])));
        assert_eq!(ip_literal("IPv6:2001:db8::1"), "2001:db8::1".parse().ok());
        assert_eq!(ip_literal("ipv6:2001:db8::1"), "2001:db8::1".parse().ok());
        assert_eq!(ip_literal("mx.example.com"), None);
        assert_eq!(ip_literal("ipv6"), None);
        assert_eq!(address_literal("[192.0.2.1]"), ip_literal("192.0.2.1"));
        assert_eq!(address_literal("example.com"), None);
    }

    #[test]
    fn resolver_is_made_outside_a_runtime_with_a_clamped_budget() {
        let config = DeliveryConfig {
            nameservers: vec!["127.0.0.1:5353".parse().unwrap()],
            connect_timeout: Duration::from_secs(300),
            ..DeliveryConfig::default()
        };
        let r = Resolver::new(&config).unwrap();
        assert_eq!(r.inner.budget, MAX_BUDGET);
        assert_eq!(r.inner.dns.options().timeout, MAX_BUDGET / 2);
    }

    #[test]
    fn host_text_is_lower_case_without_trailing_dot() {
        let name = Name::from_ascii("MX1.Example.COM.").unwrap();
        assert_eq!(host_text(&name), "mx1.example.com");
        assert_eq!(host_text(&Name::root()), "");
    }
}
