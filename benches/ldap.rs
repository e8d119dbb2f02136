//! LDAP directory lookups against a local slapd: lookups per second and latency (p50,
//! p99) for cached hits, uncached hits and misses, with 1 and 8 concurrent callers.
//!
//!     cargo bench --bench ldap
//!
//! Each caller resolves recipients through `Router::resolve` (what the SMTP server calls
//! at RCPT) in a loop for `SPLITMX_BENCH_SECS` seconds (default 2) per row. The directory
//! holds 2,000 entries with `mailHost`; the pool has 8 connections. slapd runs on the
//! same machine, so the figures include its CPU time, not a network.

#[path = "../tests/common_ldap/slapd.rs"]
mod slapd;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slapd::Slapd;
use splitmx::ldap::LdapDirectory;
use splitmx::routing::table::load_from_strs;
use splitmx::{Address, GatewayConfig, Router, RoutingConfig};

const USERS: usize = 2_000;

const TABLES: &str = "
routes:
  local: maildir:mail/{domain}/{user}
  m365: smtp:[example-com.mail.protection.outlook.com]:25
domains: [example.com]
default: local
mail_hosts:
  outlook.example: m365
";

fn ldif() -> String {
    let mut out = String::from(
        "dn: dc=example,dc=com\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
         dn: ou=people,dc=example,dc=com\nobjectClass: organizationalUnit\nou: people\n\n",
    );
    for i in 0..USERS {
        let _ = write!(
            out,
            "dn: uid=user{i},ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\n\
             objectClass: inetLocalMailRecipient\nuid: user{i}\ncn: User {i}\nsn: {i}\n\
             mail: user{i}@example.com\nmailHost: outlook.example\n\n"
        );
    }
    out
}

fn router(url: &str, cache: bool) -> Router {
    let mut text = format!(
        "ldap:\n  servers: [{url}]\n  base: ou=people,dc=example,dc=com\n  \
         filter: \"(|(mail=%s)(mailLocalAddress=%s))\"\n  domains: [example.com]\n  pool_size: 8\n"
    );
    if cache {
        text.push_str("  cache:\n    positive_ttl: 1h\n    negative_ttl: 1h\n");
    }
    let config = GatewayConfig::from_yaml(&text, "bench.yaml", Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"));
    let ldap = config.ldap.unwrap_or_else(|| panic!("no ldap section"));
    let directory = LdapDirectory::new(ldap).unwrap_or_else(|e| panic!("{e}"));
    let routing = RoutingConfig::new("routing");
    let snapshot =
        load_from_strs(&routing, &[("t.yaml", TABLES)]).unwrap_or_else(|e| panic!("{e}"));
    Router::from_snapshot(routing, snapshot).with_directory(Arc::new(directory))
}

fn addresses(prefix: &str) -> Arc<Vec<Address>> {
    Arc::new(
        (0..USERS)
            .map(|i| {
                Address::parse(&format!("{prefix}{i}@example.com"))
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect(),
    )
}

struct Row {
    lookups: usize,
    wrong: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn run(
    router: Arc<Router>,
    addrs: Arc<Vec<Address>>,
    callers: usize,
    time: Duration,
    want: u16,
) -> Row {
    let started = Instant::now();
    let deadline = started + time;
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..callers {
        let router = router.clone();
        let addrs = addrs.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut wrong = 0;
            let mut i = caller * 7919;
            while Instant::now() < deadline {
                let rcpt = &addrs[i % addrs.len()];
                i += callers;
                let t = Instant::now();
                let code = router.resolve(rcpt).await.outcome.reply().code;
                latencies.push(t.elapsed());
                if code != want {
                    wrong += 1;
                }
            }
            (latencies, wrong)
        });
    }
    let mut row = Row {
        lookups: 0,
        wrong: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    while let Some(done) = tasks.join_next().await {
        let (latencies, wrong) = done.unwrap_or_else(|e| panic!("{e}"));
        row.wrong += wrong;
        row.latencies.extend(latencies);
    }
    row.elapsed = started.elapsed();
    row.lookups = row.latencies.len();
    row.latencies.sort_unstable();
    row
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn main() {
    let secs: u64 = std::env::var("SPLITMX_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let time = Duration::from_secs(secs);
    let slapd = Slapd::start(&ldif());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let hits = addresses("user");
    let misses = addresses("nobody");
    let cached = Arc::new(router(&slapd.url(), true));
    let uncached = Arc::new(router(&slapd.url(), false));

    println!(
        "LDAP lookups via Router::resolve, slapd on 127.0.0.1, {USERS} entries, pool 8, {secs} s per row"
    );
    println!(
        "{:<14} {:>7} {:>9} {:>11} {:>9} {:>9}",
        "case", "callers", "lookups", "lookups/s", "p50 µs", "p99 µs"
    );
    runtime.block_on(async {
        // Warm the cache with every hit, so the cached rows never ask slapd.
        for a in hits.iter() {
            cached.resolve(a).await;
        }
        for (case, router, addrs, want) in [
            ("cached hit", &cached, &hits, 250),
            ("uncached hit", &uncached, &hits, 250),
            ("miss", &uncached, &misses, 550),
        ] {
            for callers in [1, 8] {
                let row = run(router.clone(), addrs.clone(), callers, time, want).await;
                assert_eq!(row.wrong, 0, "{case}: {} wrong answers", row.wrong);
                println!(
                    "{:<14} {:>7} {:>9} {:>11.0} {:>9} {:>9}",
                    case,
                    callers,
                    row.lookups,
                    row.lookups as f64 / row.elapsed.as_secs_f64(),
                    micros(percentile(&row.latencies, 0.50)),
                    micros(percentile(&row.latencies, 0.99)),
                );
            }
        }
    });
    drop(slapd);
}
