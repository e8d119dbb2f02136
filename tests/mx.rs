//! Next-hop resolution against a DNS server started by each test (`peers/dns.rs`): what
//! the queue manager is told for each kind of next hop and DNS answer (the peers, in
//! order, with their host names and ports, or the status it defers or bounces with), and
//! which queries went out. And the self-loop guard.
#![cfg(feature = "server")]

mod peers;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use peers::dns::{A, AAAA, DnsServer, MX, Zone};
use splitmx::NextHop;
use splitmx::delivery::mx::{MxError, Resolver, SelfGuard};
use splitmx::delivery::{DeliveryConfig, Endpoint, Peer, ResultKind};

fn resolver(dns: &DnsServer) -> Resolver {
    resolver_with_timeout(dns, Duration::from_secs(30))
}

fn resolver_with_timeout(dns: &DnsServer, connect_timeout: Duration) -> Resolver {
    let config = DeliveryConfig {
        nameservers: vec![dns.addr()],
        connect_timeout,
        ..DeliveryConfig::default()
    };
    Resolver::new(&config).expect("resolver")
}

fn mx(domain: &str) -> NextHop {
    NextHop::Mx {
        domain: domain.to_string(),
        port: 25,
    }
}

/// Peers as `host[ip]:port` strings, the way logs show them.
fn shown(peers: &[Peer]) -> Vec<String> {
    peers.iter().map(ToString::to_string).collect()
}

async fn peers_of(r: &Resolver, hop: &NextHop) -> Vec<String> {
    match r.peers(hop, "unused.example").await {
        Ok(p) => shown(&p),
        Err(e) => panic!("{hop}: {e}"),
    }
}

async fn error_of(r: &Resolver, hop: &NextHop) -> MxError {
    match r.peers(hop, "unused.example").await {
        Ok(p) => panic!("{hop}: expected an error, got {:?}", shown(&p)),
        Err(e) => e,
    }
}

#[tokio::test]
async fn mx_hosts_come_in_preference_order_each_with_its_addresses() {
    let mut zone = Zone::new();
    zone.mx("example.com", 20, "mx2.example.com")
        .mx("example.com", 10, "MX1.Example.com.")
        .a("mx1.example.com", "192.0.2.1")
        .aaaa("mx1.example.com", "2001:db8::1")
        .a("mx1.example.com", "192.0.2.11")
        .a("mx2.example.com", "192.0.2.2");
    let dns = DnsServer::start(zone);
    let r = resolver(&dns);

    assert_eq!(
        peers_of(&r, &mx("example.com")).await,
        [
            "mx1.example.com[192.0.2.1]:25",
            "mx1.example.com[192.0.2.11]:25",
            "mx1.example.com[2001:db8::1]:25",
            "mx2.example.com[192.0.2.2]:25",
        ]
    );
}

#[tokio::test]
async fn equal_preferences_are_shuffled() {
    let mut zone = Zone::new();
    zone.mx("example.com", 10, "a.example.com")
        .mx("example.com", 10, "b.example.com")
        .mx("example.com", 5, "first.example.com")
        .a("a.example.com", "192.0.2.1")
        .a("b.example.com", "192.0.2.2")
        .a("first.example.com", "192.0.2.3");
    let dns = DnsServer::start(zone);
    let r = resolver(&dns);

    let mut orders = HashSet::new();
    for _ in 0..50 {
        let peers = peers_of(&r, &mx("example.com")).await;
        assert_eq!(
            peers.first().map(String::as_str),
            Some("first.example.com[192.0.2.3]:25")
        );
        orders.insert(peers);
    }
    // Both orders of a and b; the chance of seeing only one in 50 lookups is 2^-49.
    assert_eq!(orders.len(), 2, "{orders:?}");
}

#[tokio::test]
async fn no_mx_records_means_the_domain_itself() {
    let mut zone = Zone::new();
    zone.a("example.com", "192.0.2.5")
        .aaaa("example.com", "2001:db8::5");
    let dns = DnsServer::start(zone);
    let r = resolver(&dns);

    assert_eq!(
        peers_of(&r, &mx("example.com")).await,
        ["example.com[192.0.2.5]:25", "example.com[2001:db8::5]:25"]
    );
    assert_eq!(dns.count("example.com", MX), 1);
}

#[tokio::test]
async fn null_mx_bounces_with_5_1_10() {
    let mut zone = Zone::new();
    zone.null_mx("example.com").a("example.com", "192.0.2.5");
    let dns = DnsServer::start(zone);
    let r = resolver(&dns);

    let e = error_of(&r, &mx("example.com")).await;
    assert!(!e.temporary);
    assert_eq!(e.status, "5.1.10");
    assert!(e.detail.contains("does not accept mail"), "{}", e.detail);
    let result = e.result();
    assert_eq!(
        (result.kind, result.status.as_str()),
        (ResultKind::Bounced, "5.1.10")
    );
    // No address lookup: the domain said no.
    assert_eq!(dns.count("example.com", A), 0);
}

#[tokio::test]
async fn nonexistent_domain_bounces_with_5_1_2() {
    let dns = DnsServer::start(Zone::new());
    let r = resolver(&dns);

    let e = error_of(&r, &mx("nowhere.example")).await;
    assert!(!e.temporary);
    assert_eq!(e.status, "5.1.2");
    assert!(e.detail.contains("nowhere.example"), "{}", e.detail);
    assert_eq!(e.result().kind, ResultKind::Bounced);

    let e = error_of(
        &r,
        &NextHop::Direct {
            host: "nohost.example".into(),
            port: 25,
        },
    )
    .await;
    assert_eq!((e.temporary, e.status.as_str()), (false, "5.1.2"));
}

#[tokio::test]
async fn servfail_defers_with_4_4_3() {
    let mut zone = Zone::new();
    zone.servfail("broken.example");
    let dns = DnsServer::start(zone);
    let r = resolver(&dns);

    let e = error_of(&r, &mx("broken.example")).await;
    assert!(e.temporary);
    assert_eq!(e.status, "4.4.3");
    assert!(e.detail.contains("server failure"), "{}", e.detail);
    assert_eq!(e.result().kind, ResultKind::Deferred);
}

#[tokio::test]
async fn refused_defers_with_4_4_3() {
    let mut zone = Zone::new();
    zone.refused("refused.example");
    let dns = DnsServer::start(zone);
    let r = resolver(&dns);

    let e = error_of(&r, &mx("refused.example")).await;
    assert_eq!((e.temporary, e.status.as_str()), (true, "4.4.3"));
}

#[tokio::test]
async fn unanswered_lookup_defers_within_the_budget() {
    let mut zone = Zone::new();
    zone.silent("slow.example");
    let dns = DnsServer::start(zone);
    // Budget = connect_timeout clamped to 1..=10 s: 2 s here.
    let r = resolver_with_timeout(&dns, Duration::from_secs(2));

    let started = Instant::now();
    let e = error_of(&r, &mx("slow.example")).await;
    let took = started.elapsed();
    assert_eq!((e.temporary, e.status.as_str()), (true, "4.4.3"), "{e}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(dns.count("slow.example", MX) >= 1);
}

#[tokio::test]
async fn unanswered_mx_host_is_skipped_for_the_others() {
    let mut zone = Zone::new();
    zone.mx("example.com", 10, "slow.example.com")
        .mx("example.com", 20, "mx2.example.com")
        .silent("slow.example.com")
        .a("mx2.example.com", "192.0.2.2");
    let dns = DnsServer::start(zone);
    let r = resolver_with_timeout(&dns, Duration::from_secs(2));

    assert_eq!(
        peers_of(&r, &mx("example.com")).await,
        ["mx2.example.com[192.0.2.2]:25"]
    );
}

#[tokio::test]
async fn bracketed_host_is_looked_up_for_addresses_only() {
    let mut zone = Zone::new();
    zone.mx("relay.example", 10, "elsewhere.example")
        .a("relay.example", "192.0.2.7")
        .aaaa("relay.example", "2001:db8::7");
    let dns = DnsServer::start(zone);
    let r = resolver(&dns);

    let hop = NextHop::Direct {
        host: "relay.example".into(),
        port: 2525,
    };
    assert_eq!(
        peers_of(&r, &hop).await,
        [
            "relay.example[192.0.2.7]:2525",
            "relay.example[2001:db8::7]:2525"
        ]
    );
    assert_eq!(dns.count("relay.example", A), 1);
    assert_eq!(dns.count("relay.example", AAAA), 1);
    assert!(
        dns.queries().iter().all(|q| q.qtype != MX),
        "{:?}",
        dns.queries()
    );
}

#[tokio::test]
async fn ip_literal_sends_no_query() {
    let dns = DnsServer::start(Zone::new());
    let r = resolver(&dns);

    for (host, shown_as) in [
        ("192.0.2.9", "192.0.2.9[192.0.2.9]:24"),
        ("2001:db8::9", "2001:db8::9[2001:db8::9]:24"),
        ("IPv6:2001:db8::9", "2001:db8::9[2001:db8::9]:24"),
    ] {
        let hop = NextHop::Direct {
            host: host.into(),
            port: 24,
        };
        assert_eq!(peers_of(&r, &hop).await, [shown_as]);
    }
    let literal = r
        .peers(&NextHop::RecipientDomain { port: 25 }, "[192.0.2.8]")
        .await
        .expect("address literal");
    assert_eq!(shown(&literal), ["192.0.2.8[192.0.2.8]:25"]);
    assert_eq!(dns.queries(), []);
}

#[tokio::test]
async fn ports_are_carried_through() {
    let mut zone = Zone::new();
    zone.mx("example.com", 10, "mx.example.com")
        .a("mx.example.com", "192.0.2.1")
        .mx("rcpt.example", 10, "mx.rcpt.example")
        .a("mx.rcpt.example", "192.0.2.3");
    let dns = DnsServer::start(zone);
    let r = resolver(&dns);

    let hop = NextHop::Mx {
        domain: "example.com".into(),
        port: 2525,
    };
    assert_eq!(peers_of(&r, &hop).await, ["mx.example.com[192.0.2.1]:2525"]);

    let peers = r
        .peers(&NextHop::RecipientDomain { port: 587 }, "Rcpt.Example")
        .await
        .expect("recipient domain");
    assert_eq!(shown(&peers), ["mx.rcpt.example[192.0.2.3]:587"]);
}

#[tokio::test]
async fn mx_host_without_address_is_skipped() {
    let mut zone = Zone::new();
    zone.mx("example.com", 10, "noaddr.example.com")
        .mx("example.com", 20, "gone.example.com")
        .mx("example.com", 30, "mx3.example.com")
        .exists("noaddr.example.com")
        .a("mx3.example.com", "192.0.2.3");
    let dns = DnsServer::start(zone);
    let r = resolver(&dns);

    assert_eq!(
        peers_of(&r, &mx("example.com")).await,
        ["mx3.example.com[192.0.2.3]:25"]
    );
}

#[tokio::test]
async fn no_mx_host_with_an_address_defers_with_4_4_4() {
    let mut zone = Zone::new();
    zone.mx("example.com", 10, "noaddr.example.com")
        .mx("example.com", 20, "gone.example.com")
        .exists("noaddr.example.com");
    let dns = DnsServer::start(zone);
    let r = resolver(&dns);

    let e = error_of(&r, &mx("example.com")).await;
    assert_eq!((e.temporary, e.status.as_str()), (true, "4.4.4"), "{e}");
    assert!(
        e.detail.contains("no MX host for example.com"),
        "{}",
        e.detail
    );

    // One of them failing to answer makes it a DNS failure: 4.4.3.
    dns.update(|z| {
        z.servfail("gone.example.com");
    });
    let e = error_of(&r, &mx("example.com")).await;
    assert_eq!((e.temporary, e.status.as_str()), (true, "4.4.3"), "{e}");
}

#[tokio::test]
async fn host_without_address_bounces_with_5_4_4() {
    let mut zone = Zone::new();
    zone.exists("example.com");
    let dns = DnsServer::start(zone);
    let r = resolver(&dns);

    let e = error_of(&r, &mx("example.com")).await;
    assert_eq!((e.temporary, e.status.as_str()), (false, "5.4.4"), "{e}");
}

#[tokio::test]
async fn addresses_are_limited_to_ten() {
    let mut zone = Zone::new();
    for i in 0..8u8 {
        let host = format!("mx{i}.example.com");
        zone.mx("example.com", u16::from(i), &host)
            .a(&host, &format!("192.0.2.{i}"))
            .a(&host, &format!("198.51.100.{i}"));
    }
    let dns = DnsServer::start(zone);
    let r = resolver(&dns);

    let peers = peers_of(&r, &mx("example.com")).await;
    assert_eq!(peers.len(), 10, "{peers:?}");
    assert_eq!(
        peers.first().map(String::as_str),
        Some("mx0.example.com[192.0.2.0]:25")
    );
    assert_eq!(
        peers.last().map(String::as_str),
        Some("mx4.example.com[198.51.100.4]:25")
    );
}

#[tokio::test]
async fn truncated_udp_answer_is_retried_over_tcp() {
    let mut zone = Zone::new();
    zone.mx("example.com", 10, "mx.example.com")
        .a("mx.example.com", "192.0.2.1")
        .truncate_udp("example.com");
    let dns = DnsServer::start(zone);
    let r = resolver(&dns);

    assert_eq!(
        peers_of(&r, &mx("example.com")).await,
        ["mx.example.com[192.0.2.1]:25"]
    );
    assert!(
        dns.queries()
            .iter()
            .any(|q| q.name == "example.com" && q.qtype == MX && q.tcp),
        "{:?}",
        dns.queries()
    );
}

#[tokio::test]
async fn changed_mx_is_seen_after_its_ttl() {
    let mut zone = Zone::new();
    zone.mx("example.com", 10, "old.example.com")
        .a("old.example.com", "192.0.2.1")
        .a("new.example.com", "192.0.2.2");
    let dns = DnsServer::start(zone);
    let r = resolver(&dns);
    assert_eq!(
        peers_of(&r, &mx("example.com")).await,
        ["old.example.com[192.0.2.1]:25"]
    );

    // TTL 0: the next lookup asks again.
    dns.update(|z| {
        z.clear_mx("example.com")
            .mx("example.com", 10, "new.example.com");
    });
    assert_eq!(
        peers_of(&r, &mx("example.com")).await,
        ["new.example.com[192.0.2.2]:25"]
    );

    // TTL 300: the answer is cached, a change is not seen.
    dns.update(|z| {
        z.ttl(300)
            .clear_mx("example.com")
            .mx("example.com", 10, "old.example.com");
    });
    assert_eq!(
        peers_of(&r, &mx("example.com")).await,
        ["old.example.com[192.0.2.1]:25"]
    );
    dns.update(|z| {
        z.clear_mx("example.com")
            .mx("example.com", 10, "new.example.com");
    });
    assert_eq!(
        peers_of(&r, &mx("example.com")).await,
        ["old.example.com[192.0.2.1]:25"]
    );
}

#[tokio::test]
async fn unix_socket_is_one_peer() {
    let dns = DnsServer::start(Zone::new());
    let r = resolver(&dns);

    let peers = r
        .peers(
            &NextHop::Unix {
                path: "/run/dovecot/lmtp".into(),
            },
            "example.com",
        )
        .await
        .expect("unix");
    assert_eq!(
        peers,
        [Peer {
            endpoint: Endpoint::Unix("/run/dovecot/lmtp".into()),
            host: "localhost".into(),
        }]
    );
    assert_eq!(dns.queries(), []);
}

fn peer(host: &str, addr: &str) -> Peer {
    Peer {
        endpoint: Endpoint::Tcp(addr.parse().expect("address")),
        host: host.to_string(),
    }
}

fn listen(addrs: &[&str]) -> Vec<SocketAddr> {
    addrs.iter().map(|a| a.parse().expect("address")).collect()
}

#[test]
fn self_guard_knows_our_host_name() {
    let guard = SelfGuard::new("mx.test.example", &listen(&["192.0.2.1:25"]));
    assert!(guard.is_self(&peer("MX.Test.Example", "203.0.113.9:25")));
    assert!(!guard.is_self(&peer("mx2.test.example", "203.0.113.9:25")));
}

#[test]
fn self_guard_knows_our_listening_address() {
    let guard = SelfGuard::new("mx.test.example", &listen(&["127.0.0.1:2525"]));
    assert!(guard.is_self(&peer("other.example", "127.0.0.1:2525")));
    assert!(!guard.is_self(&peer("other.example", "127.0.0.1:25")));
    assert!(!guard.is_self(&peer("other.example", "127.0.0.2:2525")));
}

#[test]
fn self_guard_on_a_wildcard_listener_covers_loopback_on_that_port() {
    let guard = SelfGuard::new("mx.test.example", &listen(&["0.0.0.0:25"]));
    assert!(guard.is_self(&peer("other.example", "127.0.0.1:25")));
    assert!(guard.is_self(&peer("other.example", "127.0.0.53:25")));
    assert!(!guard.is_self(&peer("other.example", "127.0.0.1:2525")));
    assert!(!guard.is_self(&peer("other.example", "192.0.2.200:25")));

    let result = guard.result(&peer("mx.test.example", "127.0.0.1:25"));
    assert_eq!(result.kind, ResultKind::Deferred);
    assert_eq!(result.status, "4.4.6");
    assert_eq!(
        result.detail,
        "mail for mx.test.example[127.0.0.1]:25 loops back to myself"
    );
}

#[tokio::test]
async fn self_guard_catches_an_mx_pointing_at_us() {
    let mut zone = Zone::new();
    zone.mx("example.com", 10, "loop.example.com")
        .a("loop.example.com", "127.0.0.1");
    let dns = DnsServer::start(zone);
    let r = resolver(&dns);
    let guard = SelfGuard::new("mx.test.example", &listen(&["[::]:25"]));

    let peers = r
        .peers(&mx("example.com"), "example.com")
        .await
        .expect("peers");
    assert_eq!(shown(&peers), ["loop.example.com[127.0.0.1]:25"]);
    assert!(peers.iter().all(|p| guard.is_self(p)));
}
