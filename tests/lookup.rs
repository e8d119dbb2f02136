//! The lookup order, pinned by a fixture a mail administrator can read:
//! `fixtures/lookup/routing/` holds the tables, `fixtures/lookup/expected.txt` what each
//! recipient gets at RCPT time (reply, route, delivery recipient, which entry matched).

use std::path::Path;

use splitmx::routing::resolve::Matched;
use splitmx::{Address, Outcome, Router, RoutingConfig};

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lookup")
}

fn matched_name(m: Matched) -> &'static str {
    match m {
        Matched::Recipient => "recipient",
        Matched::WithoutExtension => "without_extension",
        Matched::Directory => "directory",
        Matched::MailHost => "mail_host",
        Matched::DomainDefault => "domain_default",
        Matched::ParentDefault => "parent_default",
    }
}

/// The columns of expected.txt for one resolution.
fn columns(rcpt: &Address, router: &Router) -> Vec<String> {
    let resolution = router.resolve_tables(rcpt);
    let reply = resolution.outcome.reply();
    let mut out = vec![
        rcpt.original().to_string(),
        reply.code.to_string(),
        reply.status,
    ];
    match &resolution.outcome {
        Outcome::Routed(r) => {
            out.push(r.route.name().replace(' ', "_"));
            out.push(r.recipient.original().to_string());
            out.push(format!(
                "{}:{}",
                matched_name(r.provenance.matched),
                r.provenance.key
            ));
        }
        _ => out.extend(["-", "-", "-"].map(String::from)),
    }
    out
}

#[test]
fn every_recipient_in_the_fixture_gets_the_expected_answer() {
    let config = RoutingConfig::new(fixture().join("routing")).with_recipient_delimiter("+-");
    let router = Router::load(config).unwrap_or_else(|e| panic!("fixture tables: {e}"));
    let expected = std::fs::read_to_string(fixture().join("expected.txt")).unwrap();
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for (n, line) in expected.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let want: Vec<&str> = line.split_whitespace().collect();
        let rcpt = Address::parse(want[0]).unwrap_or_else(|e| panic!("line {}: {e}", n + 1));
        let got = columns(&rcpt, &router);
        if got != want {
            mismatches.push(format!(
                "expected.txt:{}\n  want {want:?}\n  got  {got:?}",
                n + 1
            ));
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} cases read");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn provenance_names_table_file_line_and_column() {
    let config = RoutingConfig::new(fixture().join("routing"));
    let router = Router::load(config).unwrap();
    let rcpt = Address::parse("carol@example.com").unwrap();
    let Outcome::Routed(r) = router.resolve_tables(&rcpt).outcome else {
        panic!("carol is routed");
    };
    let text = r.provenance.to_string();
    assert!(
        text.ends_with("example.com.yaml:8:3 recipient carol@example.com"),
        "{text}"
    );
    let rcpt = Address::parse("x@lists.example.com").unwrap();
    let Outcome::Routed(r) = router.resolve_tables(&rcpt).outcome else {
        panic!("subdomain is routed by the parent's default");
    };
    assert!(
        r.provenance
            .to_string()
            .ends_with("example.com.yaml:3:10 default of parent domain example.com"),
        "{}",
        r.provenance
    );
}

#[test]
fn explain_lists_every_step_in_order() {
    let config = RoutingConfig::new(fixture().join("routing"));
    let router = Router::load(config).unwrap();
    let rcpt = Address::parse("nobody+tag@example.com").unwrap();
    let resolution = futures_lite_block_on(router.explain(&rcpt));
    let steps: Vec<(&str, &str, &str)> = resolution
        .steps
        .iter()
        .map(|s| (s.lookup, s.key.as_str(), s.result.as_str()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("recipient", "nobody+tag@example.com", "miss"),
            ("recipient without extension", "nobody@example.com", "miss"),
            (
                "directory",
                "nobody+tag@example.com",
                "skipped (none configured)"
            ),
            ("domain default", "example.com", "hit"),
        ]
    );
}

#[test]
fn table_version_is_reported_with_each_answer() {
    let config = RoutingConfig::new(fixture().join("routing"));
    let router = Router::load(config).unwrap();
    let rcpt = Address::parse("alice@example.com").unwrap();
    let resolution = router.resolve_tables(&rcpt);
    assert_eq!(resolution.version.hash.len(), 16);
    assert_eq!(*resolution.version, router.version());
}

/// A tiny executor: the in-memory lookups here are always ready.
fn futures_lite_block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
}
