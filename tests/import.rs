//! Importing a Postfix transport map (and relay_recipients) into routing tables.
//!
//! The fixture in `fixtures/import/` is a real-looking map; `expected.txt` (the map
//! alone) and `expected-relay.txt` (with relay_recipients and `main.cf`) list, per
//! address, what Postfix answers and what the imported tables answer. Postfix's column
//! is checked against Postfix itself (`postmap -q` on the fixture, searched in
//! trivial-rewrite's order), the splitmx column against the tables loaded by `Router`.

#![cfg(all(feature = "cli", feature = "server"))]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use splitmx::import::{self, Import, ImportOptions, MapFile, NOT_IMPORTED, Severity};
use splitmx::{Address, Outcome, Route, Router, RoutingConfig};

const POSTMAP: &str = "/usr/sbin/postmap";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
}

/// Import the fixture map (with relay_recipients or not) into `dir`.
fn import_fixture(dir: &Path, relay: bool) -> Import {
    let transport = std::fs::read(fixture("transport")).unwrap();
    let recipients = std::fs::read(fixture("relay_recipients")).unwrap();
    let options = ImportOptions::new(RoutingConfig::new(dir));
    let imported = import::import_postfix(
        MapFile {
            name: "transport",
            bytes: &transport,
        },
        relay.then_some(MapFile {
            name: "relay_recipients",
            bytes: &recipients,
        }),
        &options,
    )
    .unwrap();
    assert!(imported.load_errors.is_none(), "{:?}", imported.load_errors);
    import::write_files(dir, &imported.files, false).unwrap();
    imported
}

/// What the tables answer at RCPT time: "250 smtp:[host]:25", "451 not-imported", "550".
fn splitmx_answer(router: &Router, address: &str) -> String {
    let rcpt = Address::parse(address).unwrap_or_else(|e| panic!("{address}: {e}"));
    let outcome = router.resolve_tables(&rcpt).outcome;
    let reply = outcome.reply();
    match &outcome {
        Outcome::Routed(r) if r.route.name() == NOT_IMPORTED => {
            format!("{} not-imported", reply.code)
        }
        Outcome::Routed(r) => format!("{} {}", reply.code, r.route.kind()),
        _ => reply.code.to_string(),
    }
}

/// Looks keys up in a map with Postfix's own postmap, all keys in one run.
fn postmap(map: &Path, keys: &[String]) -> HashMap<String, String> {
    // Its own empty configuration: a Postfix installed with "No configuration" has no
    // /etc/postfix/main.cf, and postmap refuses to start without one.
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("main.cf"), "compatibility_level = 3.6\n").unwrap();
    let mut child = Command::new(POSTMAP)
        .arg("-c")
        .arg(config.path())
        .arg("-q")
        .arg("-")
        .arg(format!("texthash:{}", map.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{POSTMAP} is needed to check the fixture (apt-get install postfix): {e}")
        });
    let mut stdin = child.stdin.take().unwrap();
    for k in keys {
        writeln!(stdin, "{k}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    // Exit 1 only means some key was not found; warnings about the fixture's deliberately
    // bad lines are expected, a fatal error is not.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code().is_some_and(|c| c <= 1) && !stderr.contains("fatal:"),
        "{POSTMAP} failed ({}): {}",
        out.status,
        stderr
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The keys trivial-rewrite tries for an address, in order (recipient_delimiter "+").
fn transport_keys(address: &str) -> Vec<String> {
    let address = address.to_lowercase();
    let (local, domain) = address.rsplit_once('@').unwrap();
    let mut keys = vec![address.clone()];
    if let Some(pos) = local.find('+').filter(|&p| p > 0) {
        keys.push(format!("{}@{domain}", &local[..pos]));
    }
    keys.push(domain.to_string());
    let mut rest = domain;
    while let Some(i) = rest.get(1..).and_then(|r| r.find('.')).map(|i| i + 1) {
        rest = &rest[i..];
        keys.push(rest.to_string());
    }
    keys.push("*".to_string());
    keys
}

/// The keys smtpd tries in relay_recipient_maps (mail_addr_find, for a relay domain).
fn relay_keys(address: &str) -> Vec<String> {
    let address = address.to_lowercase();
    let (local, domain) = address.rsplit_once('@').unwrap();
    let mut keys = vec![address.clone()];
    if let Some(pos) = local.find('+').filter(|&p| p > 0) {
        keys.push(format!("{}@{domain}", &local[..pos]));
    }
    keys.push(format!("@{domain}"));
    keys
}

/// relay_domains from the fixture's main.cf.
fn relay_domains() -> Vec<String> {
    let main_cf = std::fs::read_to_string(fixture("main.cf")).unwrap();
    let line = main_cf
        .lines()
        .find_map(|l| l.strip_prefix("relay_domains"))
        .unwrap();
    line.trim_start_matches([' ', '='])
        .split([',', ' '])
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

/// Postfix's answer for each address: the transport value it finds, or "refused".
fn postfix_answers(addresses: &[&str], relay: bool) -> Vec<String> {
    let all: Vec<String> = addresses.iter().flat_map(|a| transport_keys(a)).collect();
    let transport = postmap(&fixture("transport"), &all);
    let all: Vec<String> = addresses.iter().flat_map(|a| relay_keys(a)).collect();
    let recipients = postmap(&fixture("relay_recipients"), &all);
    let relay_domains = relay_domains();
    addresses
        .iter()
        .map(|a| {
            if relay {
                let domain = a.rsplit_once('@').unwrap().1.to_lowercase();
                // relay_domains matches subdomains (parent_domain_matches_subdomains).
                let is_relay_domain = relay_domains
                    .iter()
                    .any(|d| domain == *d || domain.ends_with(&format!(".{d}")));
                if !is_relay_domain || !relay_keys(a).iter().any(|k| recipients.contains_key(k)) {
                    return "refused".to_string();
                }
            }
            transport_keys(a)
                .iter()
                .find_map(|k| transport.get(k).cloned())
                .unwrap_or_else(|| "none".to_string())
        })
        .collect()
}

/// What splitmx should answer for a Postfix answer, derived by hand from transport(5),
/// error(8) and smtp(8)/lmtp(8) (LMTP never looks up MX records).
fn translate(postfix: &str) -> String {
    if postfix == "refused" {
        return postfix.to_string();
    }
    let (transport, hop) = postfix.split_once(':').unwrap_or((postfix, ""));
    let route = |spec: String| {
        Route::parse_transport("x", &spec)
            .unwrap()
            .kind()
            .to_string()
    };
    match transport {
        "smtp" | "relay" | "" => format!("250 {}", route(format!("smtp:{hop}"))),
        "lmtp" => match hop.strip_prefix("inet:") {
            Some(inet) => {
                let (host, port) = inet.rsplit_once(':').unwrap();
                format!("250 lmtp:[{host}]:{port}")
            }
            None => format!("250 lmtp:{hop}"),
        },
        "error" => {
            let (status, text) = hop.split_once(' ').unwrap();
            format!("550 reject:550 {status} {text}")
        }
        "retry" => {
            let (status, text) = hop.split_once(' ').unwrap();
            format!("450 defer:450 {status} {text}")
        }
        _ => "451 not-imported".to_string(),
    }
}

fn refusal(answer: &str) -> bool {
    answer == "550" || answer == "554"
}

/// Check every line of an expected file; returns the number of addresses checked.
fn check_expected(name: &str, relay: bool) -> usize {
    let dir = tempfile::tempdir().unwrap();
    import_fixture(dir.path(), relay);
    let router = Router::load(RoutingConfig::new(dir.path())).unwrap();
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let rows: Vec<(usize, Vec<&str>)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|(n, l)| (n + 1, l.split('|').map(str::trim).collect()))
        .collect();
    let addresses: Vec<&str> = rows.iter().map(|(_, c)| c[0]).collect();
    let postfix = postfix_answers(&addresses, relay);
    let mut problems = Vec::new();
    for ((line, cols), real_postfix) in rows.iter().zip(&postfix) {
        let (address, want_postfix, want_splitmx) = (cols[0], cols[1], cols[2]);
        let (want_splitmx, known_difference) = match want_splitmx.strip_suffix(" !") {
            Some(s) => (s, true),
            None => (want_splitmx, false),
        };
        if real_postfix != want_postfix {
            problems.push(format!("{name}:{line}: {address}: postmap says '{real_postfix}', the fixture '{want_postfix}'"));
        }
        let got = splitmx_answer(&router, address);
        if got != want_splitmx {
            problems.push(format!(
                "{name}:{line}: {address}: splitmx says '{got}', the fixture '{want_splitmx}'"
            ));
        }
        let derived = translate(want_postfix);
        let agrees = derived == want_splitmx || (derived == "refused" && refusal(want_splitmx));
        if !known_difference && !agrees {
            problems.push(format!("{name}:{line}: {address}: Postfix's '{want_postfix}' means '{derived}', the fixture says splitmx '{want_splitmx}'"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    rows.len()
}

#[test]
fn routes_every_key_as_postfix_would() {
    assert!(check_expected("expected.txt", false) >= 20);
}

#[test]
fn with_relay_recipients_only_listed_recipients_exist() {
    assert!(check_expected("expected-relay.txt", true) >= 20);
}

fn findings(imported: &Import) -> Vec<(String, Severity)> {
    imported
        .report
        .findings
        .iter()
        .map(|f| {
            let place = match (&f.file, f.line, &f.domain) {
                (Some(file), Some(line), _) => format!("{file}:{line}"),
                (_, _, Some(d)) => d.clone(),
                _ => String::new(),
            };
            (place, f.severity)
        })
        .collect()
}

#[test]
fn the_report_names_every_entry_not_carried_over() {
    let dir = tempfile::tempdir().unwrap();
    let imported = import_fixture(dir.path(), false);
    let report = &imported.report;
    let got = findings(&imported);
    let want: Vec<(String, Severity)> = [
        ("transport:26", Severity::NotCarried),
        ("transport:30", Severity::Changed),
        ("transport:30", Severity::NotCarried),
        ("transport:34", Severity::Warning),
        ("transport:37", Severity::NotCarried),
        ("transport:40", Severity::Warning),
        ("transport:43", Severity::Changed),
    ]
    .iter()
    .map(|(p, s)| (p.to_string(), *s))
    .collect();
    assert_eq!(got, want, "{report}");
    let text = report.to_string();
    assert!(
        text.contains(
            "transport:26: not carried over: 'root@example.com local:': Postfix's local(8) agent"
        ),
        "{text}"
    );
    assert!(
        text.contains("transport:37: not carried over: 'postmaster@ smtp:[mx.legacy.example.com]': Postfix never looks up 'user@'"),
        "{text}"
    );
    assert!(
        text.contains("subdomains of sales.example.com are not served (554 5.7.1)"),
        "{text}"
    );
    // The two addresses routed differently are the subdomain rules reported above.
    assert_eq!(report.differences_total, 2, "{text}");
    let differences: Vec<(&str, &str)> = report
        .differences
        .iter()
        .map(|d| (d.address.as_str(), d.postfix.as_str()))
        .collect();
    assert_eq!(
        differences,
        [
            (
                "splitmx-import-probe@branch.example.net",
                "smtp:[relay.example.net]:587 (transport:40)"
            ),
            (
                "splitmx-import-probe@splitmx-import-probe.sales.example.com",
                "smtp:[10.1.2.3]:2525 (transport:30)"
            )
        ]
    );
    let s = &report.summary;
    assert_eq!((s.domains, s.routes, s.recipients), (5, 11, 10), "{text}");
    assert!(text.ends_with(
        "imported 10 recipients, 5 domains, 11 routes from 19 transport entries; 3 not carried over, 2 changed, 2 warnings; 2 of 27 probed addresses differ"
    ), "{text}");
    assert!(report.needs_attention());
}

#[test]
fn relay_recipients_restrict_their_domains_and_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let imported = import_fixture(dir.path(), true);
    let report = &imported.report;
    let got = findings(&imported);
    let want: Vec<(String, Severity)> = [
        ("transport:13", Severity::NotCarried),
        ("transport:26", Severity::NotCarried),
        ("transport:30", Severity::Changed),
        ("transport:34", Severity::Warning),
        ("transport:37", Severity::NotCarried),
        ("transport:40", Severity::Warning),
        ("relay_recipients:14", Severity::NotCarried),
        ("relay_recipients:16", Severity::NotCarried),
    ]
    .iter()
    .map(|(p, s)| (p.to_string(), *s))
    .collect();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(got_sorted, want_sorted, "{report}");
    let text = report.to_string();
    assert!(text.contains("transport:13: not carried over: 'zoe@example.com smtp:[example-com.mail.protection.outlook.com]': not in relay_recipients"), "{text}");
    assert!(
        text.contains("relay_recipients:14: not carried over: 'ivan@example.com' has no value"),
        "{text}"
    );
    assert_eq!(report.differences_total, 0, "{text}");
    let table = std::fs::read_to_string(dir.path().join("example.com.yaml")).unwrap();
    assert!(!table.contains("\ndefault:"), "{table}");
    assert!(table.contains("only the recipients below exist"), "{table}");
    assert!(
        table.contains("  henry@example.com: mx-legacy-example-com\n"),
        "{table}"
    );
}

#[test]
fn generated_files_say_where_they_came_from() {
    let dir = tempfile::tempdir().unwrap();
    import_fixture(dir.path(), false);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "branch.example.net.yaml",
            "example.com.yaml",
            "example.org.yaml",
            "lists.example.org.yaml",
            "postfix-routes.yaml",
            "sales.example.com.yaml"
        ]
    );
    let table = std::fs::read_to_string(dir.path().join("example.com.yaml")).unwrap();
    assert!(
        table.starts_with("# example.com, imported from transport\n"),
        "{table}"
    );
    assert!(table.contains("\ndomains: [example.com]\nsubdomains: true  # transport:6: .example.com smtp:[mx.legacy.example.com]:25\ndefault: mx-legacy-example-com  # transport:5: example.com smtp:[mx.legacy.example.com]:25\n"), "{table}");
    assert!(
        table.contains("  # transport:26: Postfix's local(8) agent"),
        "{table}"
    );
    assert!(
        table.contains("  root@example.com: not-imported\n"),
        "{table}"
    );
    let routes = std::fs::read_to_string(dir.path().join("postfix-routes.yaml")).unwrap();
    assert!(
        routes.contains(
            "  dovecot-lmtp: \"lmtp:unix:/var/run/dovecot/lmtp\"  # first used at transport:16\n"
        ),
        "{routes}"
    );
    assert!(
        routes.contains("  not-imported:\n    defer: \"451 4.3.0 "),
        "{routes}"
    );
}

#[test]
fn domain_selection_imports_one_domain_and_counts_the_rest() {
    let transport = std::fs::read(fixture("transport")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut options = ImportOptions::new(RoutingConfig::new(dir.path()));
    options.domains = vec!["example.org".into()];
    let imported = import::import_postfix(
        MapFile {
            name: "transport",
            bytes: &transport,
        },
        None,
        &options,
    )
    .unwrap();
    let names: Vec<&str> = imported.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "postfix-routes.yaml",
            "example.org.yaml",
            "lists.example.org.yaml"
        ]
    );
    let places = findings(&imported);
    assert_eq!(
        places,
        vec![
            ("transport:34".to_string(), Severity::Warning),
            ("transport:37".to_string(), Severity::NotCarried),
            ("transport:40".to_string(), Severity::Warning)
        ],
        "{}",
        imported.report
    );
    assert_eq!(imported.report.summary.not_selected, 15);
}

#[test]
fn fallback_and_services_replace_main_cf_and_master_cf() {
    let map = b"example.com :\nalice@example.com slow:[mx.example.net]\nbob@example.com smtp:[m365.example]\n";
    let dir = tempfile::tempdir().unwrap();
    let mut options = ImportOptions::new(RoutingConfig::new(dir.path()));
    let file = MapFile {
        name: "t",
        bytes: map,
    };
    let without = import::import_postfix(file, None, &options).unwrap();
    assert_eq!(
        without.report.count(Severity::NotCarried),
        2,
        "{}",
        without.report
    );
    options.fallback = Some("smtp:[old-mx.example.com]".into());
    options.services = vec![("slow".into(), "smtp".into())];
    let with = import::import_postfix(file, None, &options).unwrap();
    assert_eq!(
        with.report.count(Severity::NotCarried),
        0,
        "{}",
        with.report
    );
    assert_eq!(with.report.differences_total, 0, "{}", with.report);
    import::write_files(dir.path(), &with.files, false).unwrap();
    let router = Router::load(RoutingConfig::new(dir.path())).unwrap();
    assert_eq!(
        splitmx_answer(&router, "x@example.com"),
        "250 smtp:[old-mx.example.com]:25"
    );
    assert_eq!(
        splitmx_answer(&router, "alice@example.com"),
        "250 smtp:[mx.example.net]:25"
    );
    options.services = vec![("slow".into(), "pipe".into())];
    assert!(import::import_postfix(file, None, &options).is_err());
}

#[test]
fn a_different_delimiter_is_noted_and_its_differences_listed() {
    let map = b"alice@example.com smtp:[m365.example]\nexample.com smtp:[legacy.example]\n";
    let dir = tempfile::tempdir().unwrap();
    let mut options = ImportOptions::new(RoutingConfig::new(dir.path()));
    // Postfix's default: no recipient_delimiter, so alice+x@ follows the domain entry.
    options.postfix_delimiter = String::new();
    let imported = import::import_postfix(
        MapFile {
            name: "t",
            bytes: map,
        },
        None,
        &options,
    )
    .unwrap();
    let report = &imported.report;
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("recipient_delimiter")),
        "{report}"
    );
    assert_eq!(report.differences_total, 0, "{report}");
    options.postfix_delimiter = "-".into();
    let imported = import::import_postfix(
        MapFile {
            name: "t",
            bytes: map,
        },
        None,
        &options,
    )
    .unwrap();
    // alice-splitmx-import-probe@: Postfix strips at '-', splitmx (delimiter '+') does not.
    assert_eq!(imported.report.differences_total, 1, "{}", imported.report);
}

#[test]
fn a_next_hop_yaml_would_misread_gets_a_safe_route_name() {
    // Found by fuzzing: `smtp:y` named its route `y`, which YAML reads as `true`.
    let dir = tempfile::tempdir().unwrap();
    let imported = import::import_postfix(
        MapFile {
            name: "t",
            bytes: b"example.org smtp:y\nexample.net smtp:[1e3]\n",
        },
        None,
        &ImportOptions::new(RoutingConfig::new(dir.path())),
    )
    .unwrap();
    assert!(imported.load_errors.is_none(), "{:?}", imported.load_errors);
    assert_eq!(imported.report.differences_total, 0, "{}", imported.report);
    assert!(
        imported.files[0].text.contains("\n  route-y: \"smtp:y\""),
        "{}",
        imported.files[0].text
    );
}

// ---------------------------------------------------------------------------------------
// The command as an administrator runs it.

#[cfg(feature = "cli")]
mod command {
    use super::*;

    fn splitmx(args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_splitmx"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("SPLITMX_LOG", "off")
            .output()
            .unwrap()
    }

    fn stdout(o: &Output) -> String {
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn stderr(o: &Output) -> String {
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    #[test]
    fn cli_writes_tables_reports_and_checks_them() {
        let dir = tempfile::tempdir().unwrap();
        let out_dir = dir.path().join("routing");
        let out = out_dir.to_str().unwrap();
        let args = [
            "import",
            "postfix-transport",
            "tests/fixtures/import/transport",
            "--relay-recipients",
            "tests/fixtures/import/relay_recipients",
            "--out",
            out,
        ];
        let first = splitmx(&args);
        assert_eq!(
            first.status.code(),
            Some(1),
            "{}{}",
            stdout(&first),
            stderr(&first)
        );
        let text = stdout(&first);
        assert!(
            text.contains(
                "tests/fixtures/import/transport:26: not carried over: 'root@example.com local:'"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "tests/fixtures/import/relay_recipients:16: not carried over: 'postmaster OK'"
            ),
            "{text}"
        );
        assert!(text.contains("\nwrote 6 files to "), "{text}");
        let last = text.lines().last().unwrap();
        assert!(
            last.starts_with(&format!("{out}: ok: 6 files, 11 routes, 5 domains, ")),
            "{text}"
        );
        let table = std::fs::read_to_string(out_dir.join("example.com.yaml")).unwrap();
        assert!(
            table.starts_with("# example.com, imported from tests/fixtures/import/transport and tests/fixtures/import/relay_recipients\n# by `splitmx import postfix-transport` on 20"),
            "{table}"
        );
        let check = splitmx(&["check", "--routing", out]);
        assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));

        // Nothing is overwritten without --force.
        std::fs::write(out_dir.join("example.com.yaml"), "# edited by hand\n").unwrap();
        let again = splitmx(&args);
        assert_eq!(again.status.code(), Some(2));
        assert!(
            stderr(&again).contains("exist already; nothing was written (overwrite with --force)"),
            "{}",
            stderr(&again)
        );
        assert_eq!(
            std::fs::read_to_string(out_dir.join("example.com.yaml")).unwrap(),
            "# edited by hand\n"
        );
        let forced = splitmx(&[&args[..], &["--force"]].concat());
        assert_eq!(forced.status.code(), Some(1), "{}", stdout(&forced));
        assert!(
            std::fs::read_to_string(out_dir.join("example.com.yaml"))
                .unwrap()
                .starts_with("# example.com, imported")
        );
    }

    #[test]
    fn cli_clean_import_exits_0_and_json_has_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let map = dir.path().join("transport");
        std::fs::write(
            &map,
            "# a clean map\nexample.com smtp:[mx.legacy.example.com]\n.example.com smtp:[mx.legacy.example.com]\nalice@example.com lmtp:unix:/run/dovecot/lmtp\n",
        )
        .unwrap();
        let out = dir.path().join("routing");
        let o = splitmx(&[
            "import",
            "postfix-transport",
            map.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        assert!(
            stdout(&o).contains("0 not carried over, 0 changed, 0 warnings; 0 of "),
            "{}",
            stdout(&o)
        );

        let json_out = dir.path().join("json");
        let o = splitmx(&[
            "import",
            "postfix-transport",
            "tests/fixtures/import/transport",
            "--out",
            json_out.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(o.status.code(), Some(1));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["check"]["ok"], true);
        assert_eq!(v["report"]["summary"]["domains"], 5);
        let root = v["report"]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["line"] == 26)
            .unwrap();
        assert_eq!(root["severity"], "not_carried");
        assert_eq!(root["entry"], "root@example.com local:");
    }

    #[test]
    fn cli_cannot_run_exits_2_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("routing");
        let o = splitmx(&[
            "import",
            "postfix-transport",
            "no/such/transport",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            stderr(&o).starts_with("splitmx import: no/such/transport: cannot read: "),
            "{}",
            stderr(&o)
        );
        let o = splitmx(&[
            "import",
            "postfix-transport",
            "tests/fixtures/import/transport",
            "--out",
            out.to_str().unwrap(),
            "--service",
            "slow",
        ]);
        assert_eq!(o.status.code(), Some(2));
        assert!(!out.exists());
    }
}
