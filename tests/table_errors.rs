//! Every kind of routing-table error, pinned by fixtures: each file in
//! `fixtures/errors/` holds table files (`--- NAME`) and, after `=== expected`, exactly
//! what `splitmx check` prints for them: file:line:column and what is wrong.
//!
//! To see what the loader says for a new case, run with `SPLITMX_PRINT_ERRORS=1`.

use std::path::Path;

use splitmx::RoutingConfig;
use splitmx::routing::table::{TableErrorKind, load, load_from_strs};

struct Case {
    files: Vec<(String, String)>,
    expected: Vec<String>,
}

fn parse_case(text: &str) -> Case {
    let (tables, expected) = text.split_once("=== expected\n").unwrap_or((text, ""));
    let mut files = Vec::new();
    for chunk in tables.split("--- ").skip(1) {
        let (name, body) = chunk.split_once('\n').unwrap_or((chunk, ""));
        files.push((name.trim().to_string(), body.to_string()));
    }
    let expected = expected
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    Case { files, expected }
}

fn config() -> RoutingConfig {
    RoutingConfig::new("routing")
        .with_hostname("mx.example.com")
        .with_local_addresses(vec!["127.0.0.1:2525".parse().unwrap()])
}

#[test]
fn every_error_fixture_reports_file_line_column_and_reason() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/errors");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    names.sort();
    assert!(names.len() >= 13, "fixtures missing: {names:?}");
    let print = std::env::var_os("SPLITMX_PRINT_ERRORS").is_some();
    let mut failures = Vec::new();
    for path in names {
        let case = parse_case(&std::fs::read_to_string(&path).unwrap());
        let tables: Vec<(&str, &str)> = case
            .files
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let got: Vec<String> = match load_from_strs(&config(), &tables) {
            Ok(_) => vec!["(loaded without error)".to_string()],
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        };
        let name = path.file_name().unwrap().to_string_lossy();
        if print {
            println!("=== {name}\n{}", got.join("\n"));
        }
        if got != case.expected {
            failures.push(format!(
                "{name}:\n  want:\n    {}\n  got:\n    {}",
                case.expected.join("\n    "),
                got.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn oversized_table_file_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.yaml"), "#".repeat(2048)).unwrap();
    let config = RoutingConfig::new(dir.path()).with_max_table_bytes(1024);
    let errors = load(&config).unwrap_err();
    let e = errors.iter().next().unwrap();
    assert_eq!((e.line, e.column), (1, 1));
    assert!(e.file.ends_with("big.yaml"));
    assert_eq!(
        e.kind,
        TableErrorKind::TooLarge {
            size: 2048,
            max: 1024
        }
    );
}

#[test]
fn directory_without_tables_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.txt"), "not a table").unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "domains: [x.example]").unwrap();
    let errors = load(&RoutingConfig::new(dir.path())).unwrap_err();
    assert_eq!(errors.iter().next().unwrap().kind, TableErrorKind::NoTables);
}

#[test]
fn missing_directory_is_an_error_not_a_panic() {
    let errors = load(&RoutingConfig::new("/nonexistent/splitmx/routing")).unwrap_err();
    let e = errors.iter().next().unwrap();
    assert!(matches!(e.kind, TableErrorKind::Io(_)), "{e}");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/splitmx/routing:1:1: cannot read")
    );
}

#[test]
fn non_utf8_table_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), b"domains: [\xff]\n").unwrap();
    let errors = load(&RoutingConfig::new(dir.path())).unwrap_err();
    assert_eq!(errors.iter().next().unwrap().kind, TableErrorKind::NotUtf8);
}

#[test]
fn empty_and_comment_only_files_are_valid() {
    let config = config();
    let snapshot = load_from_strs(
        &config,
        &[
            ("empty.yaml", ""),
            ("comments.yaml", "# nothing yet\n"),
            ("t.yaml", "domains: [example.com]\n"),
        ],
    )
    .unwrap();
    assert_eq!(snapshot.domains(), vec!["example.com"]);
}

#[test]
fn deeply_nested_yaml_is_refused_without_exhausting_the_stack() {
    for (open, close) in [("[", "]"), ("{a: ", "}")] {
        let text = format!(
            "routes: {}{}\n",
            open.repeat(100_000),
            close.repeat(100_000)
        );
        let errors = load_from_strs(&config(), &[("deep.yaml", &text)]).unwrap_err();
        let e = errors.iter().next().unwrap();
        assert!(matches!(e.kind, TableErrorKind::Yaml(_)), "{e}");
        assert_eq!(e.file, "routing/deep.yaml");
    }
}

#[test]
fn a_big_anchored_scalar_cannot_be_replayed_into_gigabytes() {
    // 60 KiB scalar replayed through aliases: bounded by the anchor byte budget.
    let mut text = format!(
        "routes:\n  m365: smtp:[mx.example.net]:25\ndomains: [example.com]\nrecipients:\n  a@example.com: &big \"{}\"\n",
        "x".repeat(70 * 1024)
    );
    for i in 0..90 {
        text.push_str(&format!("  u{i}@example.com: *big\n"));
    }
    let errors = load_from_strs(&config(), &[("a.yaml", &text)]).unwrap_err();
    let e = errors.iter().next().unwrap();
    assert!(matches!(e.kind, TableErrorKind::Yaml(_)), "{e}");
}
