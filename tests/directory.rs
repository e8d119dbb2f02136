//! Lookup order with a directory source (an in-memory one here; the LDAP source has its
//! own tests against slapd): exact table entries first, then the directory, then domain
//! defaults; directory failures defer (451 4.4.3), never bounce.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use splitmx::routing::directory::{DirectoryScope, StaticDirectory};
use splitmx::routing::resolve::{Matched, Source};
use splitmx::routing::table::load_from_strs;
use splitmx::{Address, DirectoryEntry, Outcome, Resolution, Router, RoutingConfig};

const TABLES: &str = "
routes:
  local: maildir:mail/{domain}/{user}
  m365: smtp:example-com.mail.protection.outlook.com
  dovecot: lmtp:[192.0.2.10]:24
domains: [example.com]
default: local
recipients:
  pinned@example.com: local
mail_hosts:
  outlook.example: m365
  dovecot1.local.example: dovecot
---
";

fn router(dir: StaticDirectory) -> Router {
    let config = RoutingConfig::new("routing");
    let tables = TABLES.trim_end_matches("---\n");
    let strict = "domains: [strict.example]\n";
    let snapshot = load_from_strs(&config, &[("t.yaml", tables), ("strict.yaml", strict)])
        .unwrap_or_else(|e| panic!("{e}"));
    Router::from_snapshot(config, snapshot).with_directory(Arc::new(dir))
}

fn entry(dn: &str, host: Option<&str>, routing: Option<&str>) -> DirectoryEntry {
    DirectoryEntry {
        dn: dn.to_string(),
        mail_host: host.map(String::from),
        routing_address: routing.map(String::from),
        cache: None,
    }
}

fn directory(scope: DirectoryScope) -> StaticDirectory {
    let mut d = StaticDirectory::new("ldap://test", ["example.com", "strict.example"], scope);
    d.insert(
        "pinned@example.com",
        entry("uid=pinned", Some("outlook.example"), None),
    );
    d.insert(
        "alice@example.com",
        entry("uid=alice", Some("outlook.example"), None),
    );
    d.insert(
        "bob@example.com",
        entry("uid=bob", None, Some("bob.t@example.com")),
    );
    d.insert(
        "bob.t@example.com",
        entry("uid=bob-t", Some("Outlook.Example."), None),
    );
    d.insert(
        "frank@example.com",
        entry("uid=frank", None, Some("frank@tenant.onmicrosoft.com")),
    );
    d.insert(
        "carol@example.com",
        entry(
            "uid=carol",
            Some("dovecot1.local.example"),
            Some("carol@mbox.example.com"),
        ),
    );
    d.insert("dan@example.com", entry("uid=dan", None, None));
    d.insert(
        "erin@example.com",
        entry("uid=erin", Some("mx.other.example"), None),
    );
    d.insert(
        "loop1@example.com",
        entry("uid=l1", None, Some("loop2@example.com")),
    );
    d.insert(
        "loop2@example.com",
        entry("uid=l2", None, Some("loop1@example.com")),
    );
    d.insert(
        "bad@example.com",
        entry("uid=bad", None, Some("not an address")),
    );
    d.insert("only@strict.example", entry("uid=only", None, None));
    d.fail("down@example.com", "connection refused");
    d
}

fn resolve(router: &Router, rcpt: &str) -> Resolution {
    let rcpt = Address::parse(rcpt).unwrap();
    let mut fut = std::pin::pin!(router.explain(&rcpt));
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
            return r;
        }
    }
}

fn summary(r: &Resolution) -> (u16, String, String) {
    let reply = r.outcome.reply();
    match &r.outcome {
        Outcome::Routed(routed) => (
            reply.code,
            routed.route.name().to_string(),
            routed.recipient.original().to_string(),
        ),
        _ => (reply.code, reply.status, "-".to_string()),
    }
}

fn s(code: u16, a: &str, b: &str) -> (u16, String, String) {
    (code, a.to_string(), b.to_string())
}

#[test]
fn exact_table_entry_wins_over_the_directory() {
    let r = router(directory(DirectoryScope::Consult));
    let res = resolve(&r, "pinned@example.com");
    assert_eq!(summary(&res), s(250, "local", "pinned@example.com"));
    assert!(
        !res.steps.iter().any(|s| s.lookup == "directory"),
        "{:?}",
        res.steps
    );
}

#[test]
fn mail_host_maps_to_a_named_route() {
    let r = router(directory(DirectoryScope::Consult));
    let res = resolve(&r, "Alice@Example.com");
    assert_eq!(summary(&res), s(250, "m365", "Alice@Example.com"));
    let Outcome::Routed(routed) = &res.outcome else {
        unreachable!()
    };
    assert_eq!(routed.provenance.matched, Matched::Directory);
    assert_eq!(
        routed.provenance.source,
        Source::Directory {
            name: "ldap://test".into(),
            entry: "uid=alice".into()
        }
    );
    assert_eq!(
        routed.provenance.then.as_ref().map(|p| p.matched),
        Some(Matched::MailHost)
    );
}

#[test]
fn routing_address_only_is_routed_through_the_tables_again() {
    let r = router(directory(DirectoryScope::Consult));
    // bob -> bob.t@example.com, whose own directory entry names the outlook host.
    let res = resolve(&r, "bob@example.com");
    assert_eq!(summary(&res), s(250, "m365", "bob.t@example.com"));
    let Outcome::Routed(routed) = &res.outcome else {
        unreachable!()
    };
    let text = routed.provenance.to_string();
    assert!(
        text.contains("uid=bob ->") && text.contains("uid=bob-t"),
        "{text}"
    );
}

#[test]
fn mail_host_and_routing_address_rewrite_and_relay_to_the_host() {
    let r = router(directory(DirectoryScope::Consult));
    assert_eq!(
        summary(&resolve(&r, "carol@example.com")),
        s(250, "dovecot", "carol@mbox.example.com")
    );
}

#[test]
fn entry_without_routing_attributes_uses_the_domain_default() {
    let r = router(directory(DirectoryScope::Consult));
    assert_eq!(
        summary(&resolve(&r, "dan@example.com")),
        s(250, "local", "dan@example.com")
    );
}

#[test]
fn unmapped_mail_host_is_relayed_to_over_smtp_with_mx_lookup() {
    let r = router(directory(DirectoryScope::Consult));
    let res = resolve(&r, "erin@example.com");
    assert_eq!(
        summary(&res),
        s(250, "smtp:mx.other.example", "erin@example.com")
    );
    let route = res.outcome.route().unwrap();
    assert_eq!(
        route.next_hop().map(ToString::to_string).as_deref(),
        Some("mx.other.example")
    );
}

#[test]
fn not_in_a_consulted_directory_falls_through_to_the_domain_default() {
    let r = router(directory(DirectoryScope::Consult));
    assert_eq!(
        summary(&resolve(&r, "nobody@example.com")),
        s(250, "local", "nobody@example.com")
    );
}

#[test]
fn not_in_an_authoritative_directory_is_unknown_user() {
    let r = router(directory(DirectoryScope::Authoritative));
    assert_eq!(
        summary(&resolve(&r, "nobody@example.com")),
        s(550, "5.1.1", "-")
    );
    // The table entry still wins, and a directory entry still routes.
    assert_eq!(summary(&resolve(&r, "pinned@example.com")).0, 250);
    assert_eq!(
        summary(&resolve(&r, "only@strict.example")).0,
        451,
        "no default to fall to"
    );
}

#[test]
fn directory_outage_is_451_never_a_bounce() {
    for scope in [DirectoryScope::Consult, DirectoryScope::Authoritative] {
        let r = router(directory(scope));
        let res = resolve(&r, "down@example.com");
        assert_eq!(summary(&res), s(451, "4.4.3", "-"));
        let Outcome::TempFail { reason, .. } = &res.outcome else {
            unreachable!()
        };
        assert!(reason.contains("connection refused"), "{reason}");
    }
}

#[test]
fn directory_rewrite_loop_is_deferred_not_followed_forever() {
    let r = router(directory(DirectoryScope::Consult));
    let res = resolve(&r, "loop1@example.com");
    assert_eq!(res.outcome.reply().code, 451);
    let Outcome::TempFail { reason, .. } = &res.outcome else {
        unreachable!()
    };
    assert!(reason.contains("rewrite loop"), "{reason}");
}

#[test]
fn malformed_routing_address_is_deferred() {
    let r = router(directory(DirectoryScope::Consult));
    assert_eq!(resolve(&r, "bad@example.com").outcome.reply().code, 451);
}

#[test]
fn domains_outside_the_directory_scope_never_query_it() {
    let r = router(directory(DirectoryScope::Authoritative));
    let res = resolve(&r, "x@foreign.example");
    assert_eq!(summary(&res), s(554, "5.7.1", "-"));
    let dir_step = res.steps.iter().find(|s| s.lookup == "directory").unwrap();
    assert_eq!(dir_step.result, "skipped (domain not in scope)");
}

#[test]
fn routing_address_in_a_foreign_domain_is_relayed_by_its_mx() {
    let r = router(directory(DirectoryScope::Authoritative));
    let res = resolve(&r, "frank@example.com");
    assert_eq!(
        summary(&res),
        s(250, "smtp:", "frank@tenant.onmicrosoft.com")
    );
    let hop = res.outcome.route().and_then(|r| r.next_hop().cloned());
    assert_eq!(hop, Some(splitmx::NextHop::RecipientDomain { port: 25 }));
}
