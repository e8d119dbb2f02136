//! The LDAP directory source against a real slapd, started by each test on a free
//! 127.0.0.1 port (see `common_ldap/slapd.rs`; no slapd on the machine fails the test).
//!
//! Each test asserts on what a sending server or an administrator sees: the SMTP reply,
//! the route, the envelope recipient delivered to, the entry DN in the provenance, the
//! steps `explain` prints, the log line.
#![cfg(feature = "ldap")]

mod common_ldap;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common_ldap::logs::capture;
use common_ldap::pki::TestPki;
use common_ldap::slapd::{ADMIN_DN, ADMIN_PASSWORD, BlackHole, Slapd};
use splitmx::ldap::{LdapConfig, LdapDirectory, escape_filter_value};
use splitmx::routing::resolve::Source;
use splitmx::routing::table::load_from_strs;
use splitmx::{Address, GatewayConfig, Outcome, Resolution, Router, RoutingConfig, Step};

const PEOPLE: &str = include_str!("fixtures/ldap/people.ldif");

const TABLES: &str = "
routes:
  local: maildir:mail/{domain}/{user}
  m365: smtp:[example-com.mail.protection.outlook.com]:25
  dovecot: lmtp:[192.0.2.10]:24
domains: [example.com, example.net]
default: local
mail_hosts:
  outlook.example: m365
  dovecot1.local.example: dovecot
";

const FILTER: &str = "(|(mail=%s)(mailLocalAddress=%s))";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The `ldap:` section: the defaults below, with `overrides` replacing or adding keys
/// (values are YAML, indented for a nested mapping where needed).
fn section(servers: &[String], overrides: &[(&str, &str)]) -> String {
    let servers = format!("[{}]", servers.join(", "));
    let filter = format!("\"{FILTER}\"");
    let defaults = [
        ("servers", servers.as_str()),
        ("base", "ou=people,dc=example,dc=com"),
        ("filter", filter.as_str()),
        ("domains", "[example.com]"),
        ("consult_domains", "[example.net]"),
        ("timeout", "2s"),
        ("connect_timeout", "1s"),
    ];
    let mut text = String::from("ldap:\n");
    for (key, value) in defaults {
        if !overrides.iter().any(|(k, _)| *k == key) {
            text.push_str(&format!("  {key}: {value}\n"));
        }
    }
    for (key, value) in overrides {
        text.push_str(&format!("  {key}: {value}\n"));
    }
    text
}

fn ldap_config(text: &str) -> LdapConfig {
    GatewayConfig::from_yaml(text, "splitmx.yaml", Path::new("."))
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .ldap
        .unwrap_or_else(|| panic!("no ldap section in\n{text}"))
}

fn directory(text: &str) -> LdapDirectory {
    LdapDirectory::new(ldap_config(text)).unwrap_or_else(|e| panic!("{e}"))
}

fn router(directory: LdapDirectory) -> Router {
    let config = RoutingConfig::new("routing");
    let snapshot = load_from_strs(&config, &[("t.yaml", TABLES)]).unwrap_or_else(|e| panic!("{e}"));
    Router::from_snapshot(config, snapshot).with_directory(Arc::new(directory))
}

fn ldap_router(servers: &[String], overrides: &[(&str, &str)]) -> Router {
    router(directory(&section(servers, overrides)))
}

/// What the client and the administrator see for one recipient.
#[derive(Debug)]
struct Seen {
    code: u16,
    status: String,
    route: String,
    deliver: String,
    /// The directory entry that answered first (top of the provenance).
    dn: String,
    provenance: String,
    reason: String,
    /// The cache text of the router's "directory" step.
    directory_step: String,
    steps: Vec<Step>,
    took: Duration,
}

impl Seen {
    fn step(&self, lookup: &str) -> &Step {
        self.steps
            .iter()
            .find(|s| s.lookup == lookup)
            .unwrap_or_else(|| panic!("no '{lookup}' step in {:#?}", self.steps))
    }
}

async fn see(router: &Router, rcpt: &str) -> Seen {
    let address = Address::parse(rcpt).unwrap_or_else(|e| panic!("{rcpt}: {e}"));
    let started = Instant::now();
    let res: Resolution = router.explain(&address).await;
    let took = started.elapsed();
    let reply = res.outcome.reply();
    let directory_step = res
        .steps
        .iter()
        .rev()
        .find(|s| s.lookup == "directory")
        .map(|s| s.result.clone())
        .unwrap_or_default();
    let mut seen = Seen {
        code: reply.code,
        status: reply.status.clone(),
        route: "-".into(),
        deliver: "-".into(),
        dn: "-".into(),
        provenance: String::new(),
        reason: String::new(),
        directory_step,
        steps: res.steps.clone(),
        took,
    };
    match &res.outcome {
        Outcome::Routed(r) => {
            seen.route = r.route.name().to_string();
            seen.deliver = r.recipient.original().to_string();
            seen.provenance = r.provenance.to_string();
            if let Source::Directory { entry, .. } = &r.provenance.source {
                seen.dn = entry.clone();
            }
        }
        Outcome::TempFail { reason, .. } => seen.reason = reason.clone(),
        Outcome::Unrouted(_) => {}
    }
    seen
}

/// (code, route, deliver to, DN): the four things most tests look at.
fn brief(s: &Seen) -> (u16, &str, &str, &str) {
    (s.code, s.route.as_str(), s.deliver.as_str(), s.dn.as_str())
}

fn dn(uid: &str) -> String {
    format!("uid={uid},ou=people,dc=example,dc=com")
}

// ---------------------------------------------------------------------------------------
// Mapping: the LDAP mail routing draft
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn mail_host_only_relays_the_unchanged_address_to_the_hosts_route() {
    let slapd = Slapd::start(PEOPLE);
    let r = ldap_router(&[slapd.url()], &[]);
    let alice = see(&r, "alice@example.com").await;
    assert_eq!(
        brief(&alice),
        (250, "m365", "alice@example.com", dn("alice").as_str())
    );
    // Case-insensitive match, original spelling kept; an extension is looked up without it.
    let shouty = see(&r, "Alice+News@Example.COM").await;
    assert_eq!(
        brief(&shouty),
        (250, "m365", "Alice+News@Example.COM", dn("alice").as_str())
    );
}

#[tokio::test]
async fn routing_address_only_is_routed_again_or_relayed_by_its_mx() {
    let slapd = Slapd::start(PEOPLE);
    let r = ldap_router(&[slapd.url()], &[]);
    // robert -> alice@example.com, whose own entry names the outlook host.
    let robert = see(&r, "robert@example.com").await;
    assert_eq!(
        brief(&robert),
        (250, "m365", "alice@example.com", dn("robert").as_str())
    );
    assert!(
        robert.provenance.contains(&dn("alice")),
        "{}",
        robert.provenance
    );
    // bob -> bob@tenant.onmicrosoft.com, a domain nobody here serves: its MX.
    let bob = see(&r, "bob@example.com").await;
    assert_eq!(
        brief(&bob),
        (
            250,
            "smtp:",
            "bob@tenant.onmicrosoft.com",
            dn("bob").as_str()
        )
    );
}

#[tokio::test]
async fn both_attributes_rewrite_and_send_to_the_host_and_neither_uses_the_default() {
    let slapd = Slapd::start(PEOPLE);
    let r = ldap_router(&[slapd.url()], &[]);
    let carol = see(&r, "carol@example.com").await;
    assert_eq!(
        brief(&carol),
        (
            250,
            "dovecot",
            "carol@mbox.example.com",
            dn("carol").as_str()
        )
    );
    // Found through mailLocalAddress, the filter's second half.
    let alias = see(&r, "c.local@example.com").await;
    assert_eq!(
        brief(&alias),
        (
            250,
            "dovecot",
            "carol@mbox.example.com",
            dn("carol").as_str()
        )
    );
    let dan = see(&r, "dan@example.com").await;
    assert_eq!(
        brief(&dan),
        (250, "local", "dan@example.com", dn("dan").as_str())
    );
}

#[tokio::test]
async fn not_found_is_550_in_an_authoritative_domain_and_the_default_elsewhere() {
    let slapd = Slapd::start(PEOPLE);
    let r = ldap_router(&[slapd.url()], &[]);
    let nobody = see(&r, "nobody@example.com").await;
    assert_eq!((nobody.code, nobody.status.as_str()), (550, "5.1.1"));
    // example.net is consult-only: found routes, not found takes the domain default.
    let eve = see(&r, "eve@example.net").await;
    assert_eq!(
        brief(&eve),
        (250, "m365", "eve@example.net", dn("eve").as_str())
    );
    let other = see(&r, "nobody@example.net").await;
    assert_eq!(brief(&other), (250, "local", "nobody@example.net", "-"));
    // A domain the directory does not serve is never asked.
    let foreign = see(&r, "x@elsewhere.example").await;
    assert_eq!((foreign.code, foreign.status.as_str()), (554, "5.7.1"));
    assert!(!foreign.steps.iter().any(|s| s.lookup == "ldap search"));
}

#[tokio::test]
async fn several_entries_for_one_address_is_451_and_a_log_line_not_a_guess() {
    let slapd = Slapd::start(PEOPLE);
    let (logs, _guard) = capture();
    for size_limit in ["2", "1"] {
        let r = ldap_router(&[slapd.url()], &[("size_limit", size_limit)]);
        let shared = see(&r, "shared@example.com").await;
        assert_eq!(
            (shared.code, shared.status.as_str()),
            (451, "4.4.3"),
            "{shared:?}"
        );
        assert!(shared.reason.contains("ambiguous"), "{}", shared.reason);
        assert!(shared.reason.contains("uid=shared"), "{}", shared.reason);
    }
    let lines = logs.lines();
    let warned: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("WARN") && l.contains("several entries match"))
        .collect();
    assert_eq!(warned.len(), 2, "{lines:#?}");
    assert!(
        warned[0].contains("rcpt=shared@example.com"),
        "{}",
        warned[0]
    );
    assert!(warned[0].contains("count=2"), "{}", warned[0]);
    assert!(warned[0].contains(&dn("shared1")), "{}", warned[0]);
}

// ---------------------------------------------------------------------------------------
// Injection
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn injection_attempts_match_only_themselves() {
    let slapd = Slapd::start(PEOPLE);
    let r = ldap_router(&[slapd.url()], &[]);
    // Unescaped, each of these would match every entry (or break the filter).
    for rcpt in [
        r#""*"@example.com"#,
        r#""*)(uid=*"@example.com"#,
        r#""a*"@example.com"#,
        r#""alice)(mail=*"@example.com"#,
        r#""*)(|(mail=*"@example.com"#,
        r#""\\"@example.com"#,
        r#""alice@example.com)(mail=*"@example.com"#,
    ] {
        let s = see(&r, rcpt).await;
        assert_eq!((s.code, s.status.as_str()), (550, "5.1.1"), "{rcpt}: {s:?}");
    }
    // The filter shown is the escaped one.
    let s = see(&r, r#""*)(uid=*"@example.com"#).await;
    assert_eq!(
        s.step("ldap search").key,
        r"(|(mail=\2a\29\28uid=\2a@example.com)(mailLocalAddress=\2a\29\28uid=\2a@example.com))"
    );
    let searched = &s.step("ldap search").result;
    assert!(
        searched.starts_with(&format!("no entry from {};", slapd.url())),
        "{searched}"
    );
    // An address made of specials finds its own entry, and only it.
    let special = see(&r, r#""a(b)*c\\d"@example.com"#).await;
    assert_eq!(
        brief(&special),
        (
            250,
            "dovecot",
            r#""a(b)*c\\d"@example.com"#,
            dn("special").as_str()
        )
    );
}

#[tokio::test]
async fn escaped_values_including_nul_match_only_themselves_on_the_server() {
    // SMTP addresses cannot carry NUL (the address parser refuses control characters),
    // so this asks slapd directly with escaped values. (slapd compares IA5 values such as
    // `mail` only up to an escaped NUL, so `alice@example.com\00` would find alice: the
    // server's matching rule, and unreachable from SMTP.)
    let slapd = Slapd::start(PEOPLE);
    let (conn, mut ldap) = ldap3::LdapConnAsync::new(&slapd.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = conn.drive().await;
    });
    let mut count = async |attr: &str, value: &str| {
        let filter = format!("({attr}={})", escape_filter_value(value));
        let (entries, result) = ldap
            .search(
                "dc=example,dc=com",
                ldap3::Scope::Subtree,
                &filter,
                vec!["mail"],
            )
            .await
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
            .success()
            .unwrap_or_else(|e| panic!("{filter}: {e}"));
        drop(result);
        entries.len()
    };
    for value in [
        "*",
        "*)(uid=*",
        "\0",
        "alice\0@example.com",
        "\0)(mail=*",
        "x\0*",
        "(",
        ")",
        "\\",
        "a(b)*",
    ] {
        assert_eq!(count("mail", value).await, 0, "{value:?}");
    }
    assert_eq!(count("uid", "alice\0").await, 0);
    assert_eq!(count("uid", "alice").await, 1);
    assert_eq!(count("mail", "a(b)*c\\d@example.com").await, 1);
    assert_eq!(count("mail", "alice@example.com").await, 1);
}

// ---------------------------------------------------------------------------------------
// Outages: failover, stop, restart, slow server, stale cache
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn failover_to_the_second_server_when_the_first_is_stopped() {
    let mut first = Slapd::start(PEOPLE);
    let second = Slapd::start(PEOPLE);
    let r = ldap_router(&[first.url(), second.url()], &[]);
    let before = see(&r, "alice@example.com").await;
    assert_eq!(before.code, 250);
    assert!(
        before
            .step("ldap entry")
            .result
            .ends_with(&format!("from {}", first.url())),
        "{:?}",
        before.steps
    );
    first.stop();
    let after = see(&r, "alice@example.com").await;
    assert_eq!(
        brief(&after),
        (250, "m365", "alice@example.com", dn("alice").as_str())
    );
    assert!(
        after
            .step("ldap entry")
            .result
            .ends_with(&format!("from {}", second.url())),
        "{:?}",
        after.steps
    );
    assert!(after.took < Duration::from_secs(1), "{:?}", after.took);
    // The second server answers "no such user" too: still 550, not a failure.
    assert_eq!(see(&r, "nobody@example.com").await.code, 550);
}

#[tokio::test]
async fn failover_past_a_server_that_accepts_and_never_answers() {
    let hole = BlackHole::start();
    let second = Slapd::start(PEOPLE);
    let r = ldap_router(
        &[hole.url(), second.url()],
        &[("connect_timeout", "300ms"), ("timeout", "2s")],
    );
    let first = see(&r, "alice@example.com").await;
    assert_eq!(first.code, 250, "{first:?}");
    assert!(first.took >= Duration::from_millis(300), "{:?}", first.took);
    assert!(first.took < Duration::from_millis(1500), "{:?}", first.took);
    // The hung server is now tried last: the next new connection goes straight to the
    // second (a recipient not seen yet, so nothing is reused by chance).
    let next = see(&r, "carol@example.com").await;
    assert_eq!(next.code, 250, "{next:?}");
}

#[tokio::test]
async fn slapd_stopped_mid_run_defers_then_routing_recovers_after_restart() {
    let mut slapd = Slapd::start(PEOPLE);
    let r = ldap_router(
        &[slapd.url()],
        &[("timeout", "1s"), ("connect_timeout", "500ms")],
    );
    assert_eq!(see(&r, "alice@example.com").await.code, 250);
    slapd.stop();
    for rcpt in [
        "alice@example.com",
        "nobody@example.com",
        "carol@example.com",
    ] {
        let s = see(&r, rcpt).await;
        // Never 550: a directory that is down is not "user unknown".
        assert_eq!((s.code, s.status.as_str()), (451, "4.4.3"), "{rcpt}: {s:?}");
        assert!(s.took < Duration::from_millis(1500), "{:?}", s.took);
        assert!(s.reason.contains(&slapd.url()), "{}", s.reason);
    }
    slapd.restart();
    assert_eq!(
        brief(&see(&r, "alice@example.com").await),
        (250, "m365", "alice@example.com", dn("alice").as_str())
    );
    assert_eq!(see(&r, "nobody@example.com").await.code, 550);
}

#[tokio::test]
async fn a_slow_server_is_451_within_the_configured_timeout() {
    // A listener that accepts and never answers; the lookup timeout bounds the wait even
    // when the connect timeout is longer.
    let hole = BlackHole::start();
    let r = ldap_router(
        &[hole.url()],
        &[("timeout", "800ms"), ("connect_timeout", "5s")],
    );
    let s = see(&r, "alice@example.com").await;
    assert_eq!((s.code, s.status.as_str()), (451, "4.4.3"), "{s:?}");
    assert!(s.took >= Duration::from_millis(750), "{:?}", s.took);
    assert!(s.took < Duration::from_millis(1300), "{:?}", s.took);
    assert!(s.reason.contains("no answer within"), "{}", s.reason);

    // A slapd that freezes mid-run (SIGSTOP) with a connection open in the pool.
    let slapd = Slapd::start(PEOPLE);
    let r = ldap_router(
        &[slapd.url()],
        &[("timeout", "1s"), ("connect_timeout", "500ms")],
    );
    assert_eq!(see(&r, "alice@example.com").await.code, 250);
    slapd.pause();
    let s = see(&r, "carol@example.com").await;
    slapd.resume();
    assert_eq!((s.code, s.status.as_str()), (451, "4.4.3"), "{s:?}");
    assert!(s.took >= Duration::from_millis(950), "{:?}", s.took);
    assert!(s.took < Duration::from_millis(1500), "{:?}", s.took);
    assert!(s.reason.contains("(search)"), "{}", s.reason);
    // Thawed: routing recovers on its own.
    assert_eq!(see(&r, "carol@example.com").await.code, 250);
}

#[tokio::test]
async fn stale_cache_keeps_known_recipients_routing_and_errors_are_never_cached() {
    let mut slapd = Slapd::start(PEOPLE);
    let cache = "\n    positive_ttl: 100ms\n    negative_ttl: 1h\n    stale_if_error: 1h";
    let r = ldap_router(
        &[slapd.url()],
        &[
            ("timeout", "1s"),
            ("connect_timeout", "500ms"),
            ("cache", cache),
        ],
    );
    let first = see(&r, "alice@example.com").await;
    assert_eq!(first.code, 250);
    assert!(first.directory_step.contains("(cache miss)"), "{first:?}");
    assert_eq!(first.step("ldap cache").result, "miss");
    let again = see(&r, "alice@example.com").await;
    assert!(again.directory_step.contains("(cache hit"), "{again:?}");
    assert_eq!(
        again.step("ldap search").result.split(';').next(),
        Some("not sent (cache hit)")
    );
    assert_eq!(see(&r, "nobody@example.com").await.code, 550);

    slapd.stop();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Past its TTL, alice routes from the last good answer while the directory is down.
    let stale = see(&r, "alice@example.com").await;
    assert_eq!(
        brief(&stale),
        (250, "m365", "alice@example.com", dn("alice").as_str())
    );
    assert!(stale.directory_step.contains("stale cache"), "{stale:?}");
    assert!(
        stale
            .step("ldap cache")
            .result
            .starts_with("stale entry used")
    );
    // Never seen: 451, not a guess and not a bounce.
    let carol = see(&r, "carol@example.com").await;
    assert_eq!((carol.code, carol.status.as_str()), (451, "4.4.3"));
    // A "no such user" learnt from a successful search is still fresh.
    assert_eq!(see(&r, "nobody@example.com").await.code, 550);

    slapd.restart();
    // carol's failure was not cached as "no such user" (negative TTL is one hour).
    assert_eq!(
        brief(&see(&r, "carol@example.com").await),
        (
            250,
            "dovecot",
            "carol@mbox.example.com",
            dn("carol").as_str()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_pool_serves_many_concurrent_lookups() {
    let slapd = Slapd::start(PEOPLE);
    let r = Arc::new(ldap_router(&[slapd.url()], &[("pool_size", "2")]));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..40 {
        let r = r.clone();
        set.spawn(async move {
            let rcpt = [
                "alice@example.com",
                "carol@example.com",
                "nobody@example.com",
            ][i % 3];
            let address = Address::parse(rcpt).unwrap_or_else(|e| panic!("{e}"));
            (rcpt, r.resolve(&address).await.outcome.reply().code)
        });
    }
    while let Some(done) = set.join_next().await {
        let (rcpt, code) = done.unwrap_or_else(|e| panic!("{e}"));
        let want = if rcpt.starts_with("nobody") { 550 } else { 250 };
        assert_eq!(code, want, "{rcpt}");
    }
}

// ---------------------------------------------------------------------------------------
// TLS and bind
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn starttls_and_ldaps_with_a_test_ca() {
    let files_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pki = TestPki::new(&["127.0.0.1", "localhost"]);
    let files = pki.write(files_dir.path());
    let slapd = Slapd::start_with(PEOPLE, Some(&files));
    let ca = format!("\"{}\"", files.ca.display());

    let starttls = ldap_router(&[slapd.url()], &[("starttls", "true"), ("ca_file", &ca)]);
    assert_eq!(
        brief(&see(&starttls, "alice@example.com").await),
        (250, "m365", "alice@example.com", dn("alice").as_str())
    );
    let ldaps = ldap_router(&[slapd.ldaps_url()], &[("ca_file", &ca)]);
    assert_eq!(see(&ldaps, "carol@example.com").await.code, 250);

    // A certificate from another CA is refused: 451, and no plaintext fallback.
    let other = TestPki::new(&["127.0.0.1"]);
    let other_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let other_ca = format!("\"{}\"", other.write(other_dir.path()).ca.display());
    for (url, starttls) in [(slapd.url(), "true"), (slapd.ldaps_url(), "false")] {
        let r = ldap_router(
            std::slice::from_ref(&url),
            &[("starttls", starttls), ("ca_file", &other_ca)],
        );
        let s = see(&r, "alice@example.com").await;
        assert_eq!((s.code, s.status.as_str()), (451, "4.4.3"), "{url}: {s:?}");
        assert!(
            s.reason.to_lowercase().contains("certificate"),
            "{url}: {}",
            s.reason
        );
    }
}

#[tokio::test]
async fn simple_bind_with_the_password_from_a_file() {
    let slapd = Slapd::start(PEOPLE);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let good = dir.path().join("good.secret");
    let bad = dir.path().join("bad.secret");
    std::fs::write(&good, format!("{ADMIN_PASSWORD}\n")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&bad, "not-the-password\n").unwrap_or_else(|e| panic!("{e}"));
    let bind_dn = format!("\"{ADMIN_DN}\"");

    let with = |file: &Path| {
        section(
            &[slapd.url()],
            &[
                ("bind_dn", bind_dn.as_str()),
                ("bind_password_file", &format!("\"{}\"", file.display())),
            ],
        )
    };
    let r = router(directory(&with(&good)));
    assert_eq!(see(&r, "alice@example.com").await.code, 250);

    let r = router(directory(&with(&bad)));
    let s = see(&r, "alice@example.com").await;
    assert_eq!((s.code, s.status.as_str()), (451, "4.4.3"));
    assert!(
        s.reason
            .contains("bind as 'cn=admin,dc=example,dc=com' refused"),
        "{}",
        s.reason
    );
    assert!(!s.reason.contains("not-the-password"), "{}", s.reason);

    let missing = dir.path().join("missing.secret");
    let err = LdapDirectory::new(ldap_config(&with(&missing)))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("bind_password_file") && err.contains("missing.secret"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// explain and configuration
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn explain_shows_server_escaped_filter_dn_attributes_and_cache() {
    let slapd = Slapd::start(PEOPLE);
    let cache = "\n    positive_ttl: 1m";
    let r = ldap_router(&[slapd.url()], &[("cache", cache)]);
    let s = see(&r, "alice@example.com").await;
    assert_eq!(s.step("ldap cache").result, "miss");
    let search = s.step("ldap search");
    assert_eq!(
        search.key,
        "(|(mail=alice@example.com)(mailLocalAddress=alice@example.com))"
    );
    assert!(
        search
            .result
            .starts_with(&format!("1 entry from {}", slapd.url())),
        "{search:?}"
    );
    assert!(
        search
            .result
            .contains("base ou=people,dc=example,dc=com, scope sub")
    );
    let entry = s.step("ldap entry");
    assert_eq!(entry.key, dn("alice"));
    assert!(
        entry
            .result
            .starts_with("mailHost=outlook.example, mailRoutingAddress=(none)"),
        "{entry:?}"
    );
    assert_eq!(
        s.step("directory").result,
        format!("hit {} (cache miss)", dn("alice"))
    );
    let hit = see(&r, "alice@example.com").await;
    assert!(
        hit.step("ldap cache").result.starts_with("hit (age"),
        "{hit:?}"
    );
}

#[cfg(feature = "cli")]
#[test]
fn splitmx_explain_prints_the_ldap_step() {
    let slapd = Slapd::start(PEOPLE);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let routing = dir.path().join("routing");
    std::fs::create_dir(&routing).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(routing.join("example.com.yaml"), TABLES).unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("splitmx.yaml");
    std::fs::write(&config, section(&[slapd.url()], &[])).unwrap_or_else(|e| panic!("{e}"));

    let run = |rcpt: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_splitmx"))
            .arg("explain")
            .arg("--config")
            .arg(&config)
            .arg(rcpt)
            .output()
            .unwrap_or_else(|e| panic!("splitmx explain: {e}"));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run("alice@example.com");
    assert_eq!(code, Some(0), "{out}");
    for want in [
        "ldap cache",
        "off",
        "(|(mail=alice@example.com)(mailLocalAddress=alice@example.com))",
        &format!("1 entry from {}", slapd.url()),
        &dn("alice"),
        "mailHost=outlook.example",
        "route:      m365",
        "reply:      250",
    ] {
        assert!(out.contains(want), "missing '{want}' in:\n{out}");
    }
    let (code, out) = run(r#""*)(uid=*"@example.com"#);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(r"(mail=\2a\29\28uid=\2a@example.com)"),
        "{out}"
    );
    assert!(out.contains("550 5.1.1"), "{out}");
}

#[test]
fn configuration_mistakes_are_reported_when_the_config_is_read() {
    let base = "ldap:\n  servers: [ldap://127.0.0.1:1]\n  base: dc=example,dc=com\n";
    for (extra, want) in [
        (
            "  domains: [example.com]\n  filter: \"(mail=%x)\"\n",
            "unknown placeholder '%x'",
        ),
        (
            "  domains: [example.com]\n  filter: \"(mail=alice)\"\n",
            "no placeholder",
        ),
        ("  domains: [example.com]\n  filtr: x\n", "filtr"),
        ("  filter: \"(mail=%s)\"\n", "domains"),
        (
            "  domains: [example.com]\n  timeout: 5 parsecs\n",
            "not a duration",
        ),
        (
            "  domains: [example.com]\n  bind_dn: cn=x\n",
            "bind_password_file",
        ),
    ] {
        let text = format!("{base}{extra}");
        let err = GatewayConfig::from_yaml(&text, "splitmx.yaml", Path::new("."))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("accepted:\n{text}"));
        assert!(err.contains(want), "{err}\nfor:\n{text}");
        assert!(err.starts_with("splitmx.yaml:"), "{err}");
    }
    let err = GatewayConfig::from_yaml(
        "ldap:\n  servers: [http://x]\n  base: dc=x\n  domains: [example.com]\n",
        "splitmx.yaml",
        Path::new("."),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("expected ldap://host[:port]"), "{err}");
}
