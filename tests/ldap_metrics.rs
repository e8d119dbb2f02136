//! LDAP metrics against a real slapd: lookups by outcome, the latency histogram and the
//! cache. A test binary of its own, so that no other test moves the process-wide
//! counters while this one compares them.
#![cfg(feature = "ldap")]

mod common_ldap;

use std::path::Path;
use std::sync::Arc;

use common_ldap::slapd::Slapd;
use splitmx::ldap::LdapDirectory;
use splitmx::routing::table::load_from_strs;
use splitmx::{Address, GatewayConfig, Router, RoutingConfig};

const PEOPLE: &str = include_str!("fixtures/ldap/people.ldif");

fn router(url: &str) -> Router {
    let text = format!(
        "ldap:\n  servers: [\"{url}\"]\n  base: ou=people,dc=example,dc=com\n  filter: \"(mail=%s)\"\n  domains: [example.com]\n  timeout: 1s\n  connect_timeout: 500ms\n  cache:\n    positive_ttl: 1h\n    negative_ttl: 1h\n"
    );
    let ldap = GatewayConfig::from_yaml(&text, "splitmx.yaml", Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"))
        .ldap
        .expect("ldap section");
    let directory = LdapDirectory::new(ldap).unwrap_or_else(|e| panic!("{e}"));
    let config = RoutingConfig::new("routing");
    let tables = "routes:\n  m365: smtp:[192.0.2.1]:25\ndomains: [example.com]\nmail_hosts:\n  outlook.example: m365\n";
    let snapshot = load_from_strs(&config, &[("t.yaml", tables)]).unwrap_or_else(|e| panic!("{e}"));
    Router::from_snapshot(config, snapshot).with_directory(Arc::new(directory))
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn lookups_cache_answers_and_latency_are_counted() {
    let slapd = Slapd::start(PEOPLE);
    let r = router(&slapd.url());
    let metrics = splitmx::metrics::metrics();
    let before = metrics.encode();
    for rcpt in [
        "alice@example.com",
        "alice@example.com",
        "nobody@example.com",
        "nobody@example.com",
    ] {
        let address = Address::parse(rcpt).unwrap();
        r.resolve(&address).await;
    }
    let after = metrics.encode();
    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(
        moved("splitmx_ldap_lookups_total{outcome=\"found\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        moved("splitmx_ldap_lookups_total{outcome=\"not_found\"}"),
        1.0
    );
    assert_eq!(moved("splitmx_ldap_lookups_total{outcome=\"error\"}"), 0.0);
    assert_eq!(moved("splitmx_ldap_cache_total{result=\"miss\"}"), 2.0);
    assert_eq!(moved("splitmx_ldap_cache_total{result=\"hit\"}"), 2.0);
    assert_eq!(moved("splitmx_ldap_lookup_duration_seconds_count"), 2.0);
    assert!(moved("splitmx_ldap_lookup_duration_seconds_sum") > 0.0);
}
