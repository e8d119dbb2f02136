//! `splitmx report` over a known journal (the day files in `tests/fixtures/diff/journal/`,
//! copied by the test into a spool): exact shares per route in text and JSON, the
//! recipients still on the old side, and the HTML page.
#![cfg(feature = "cli")]

use std::path::Path;
use std::process::{Command, Output};

fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("spool/journal");
    std::fs::create_dir_all(&journal).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diff/journal");
    for day in ["2024-05-06", "2024-05-07"] {
        let name = format!("{day}.tsv");
        std::fs::copy(fixtures.join(&name), journal.join(&name)).unwrap();
    }
    std::fs::write(
        dir.path().join("splitmx.yaml"),
        "hostname: mx.test.example\nspool: spool\n",
    )
    .unwrap();
    dir
}

fn report(site: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_splitmx"))
        .arg("report")
        .arg("--config")
        .arg(site.join("splitmx.yaml"))
        .args(args)
        .env("SPLITMX_LOG", "off")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn shares_per_route_and_the_old_side_in_text() {
    let site = site();
    let out = report(site.path(), &["--until", "2024-05-07", "--old", "legacy"]);
    assert_eq!(out.status.code(), Some(0));
    let journal = site.path().join("spool/journal");
    let expected = format!(
        "journal:    {} (2024-05-01 to 2024-05-07, 7 days)
total:      6 recipients, 24 messages

route   kind                                                      recipients           messages
legacy  smtp:[192.0.2.25]:25                                       4   66.7%         18   75.0%
m365    smtp:[example-com.mail.protection.outlook.com]:25          2   33.3%          6   25.0%

still on the old side (legacy): 4 recipients (66.7%), 16 messages
  bob@example.com  legacy  10 messages  last 2024-05-07T16:00:00Z
  carol@example.com  legacy  3 messages  last 2024-05-06T11:00:00Z
  dave@example.com  legacy  2 messages  last 2024-05-06T10:05:00Z
  erin@example.com  legacy  1 message  last 2024-05-07T13:00:00Z
",
        journal.display()
    );
    assert_eq!(stdout(&out), expected);
}

#[test]
fn json_gives_exact_percentages_and_counts_a_moved_recipient_on_its_last_route() {
    let site = site();
    let out = report(
        site.path(),
        &[
            "--until",
            "2024-05-07",
            "--days",
            "2",
            "--old",
            "legacy",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["days"], 2);
    assert_eq!(
        v["period"],
        serde_json::json!({"first": "2024-05-06", "last": "2024-05-07"})
    );
    assert_eq!((&v["recipients"], &v["messages"]), (&6.into(), &24.into()));
    // frank sent 2 messages on legacy, then 1 on m365: his 3 messages are split by
    // route, and he counts as an m365 recipient.
    assert_eq!(
        v["routes"],
        serde_json::json!([
            {"route": "legacy", "kind": "smtp:[192.0.2.25]:25", "recipients": 4,
             "recipients_percent": 66.7, "messages": 18, "messages_percent": 75.0},
            {"route": "m365", "kind": "smtp:[example-com.mail.protection.outlook.com]:25",
             "recipients": 2, "recipients_percent": 33.3, "messages": 6, "messages_percent": 25.0},
        ])
    );
    let old = &v["old"];
    assert_eq!(old["routes"], serde_json::json!(["legacy"]));
    assert_eq!(
        (&old["recipients"], &old["messages"]),
        (&4.into(), &16.into())
    );
    assert_eq!(
        old["list"][0],
        serde_json::json!({"recipient": "bob@example.com", "route": "legacy",
            "kind": "smtp:[192.0.2.25]:25", "messages": 10, "last_seen": "2024-05-07T16:00:00Z"})
    );
    assert_eq!(v["files"], 2);
}

#[test]
fn one_day_sees_only_that_days_file() {
    let site = site();
    let out = report(
        site.path(),
        &["--until", "2024-05-06", "--days", "1", "--json"],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    // 2024-05-06: alice 3 on m365; bob 6, carol 3, dave 2, frank 2 on legacy.
    assert_eq!((&v["recipients"], &v["messages"]), (&5.into(), &16.into()));
    assert_eq!(v["routes"][0]["route"], "legacy");
    assert_eq!(v["routes"][0]["recipients_percent"], 80.0);
    assert_eq!(v["routes"][0]["messages_percent"], 81.3);
    assert_eq!(v["routes"][1]["messages_percent"], 18.8);
    assert_eq!(v["old"], serde_json::Value::Null);
}

#[test]
fn an_empty_period_is_zero_and_says_so() {
    let site = site();
    let out = report(site.path(), &["--until", "2024-01-31", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (&v["recipients"], &v["messages"], &v["files"]),
        (&0.into(), &0.into(), &0.into())
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no journal files in"), "{err}");
}

#[test]
fn the_html_page_is_self_contained_with_an_svg_chart() {
    let site = site();
    let page = site.path().join("report.html");
    let out = report(
        site.path(),
        &[
            "--until",
            "2024-05-07",
            "--old",
            "legacy",
            "--html",
            page.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    // One bar per route and measure: 66.7% of a 400-pixel bar.
    assert!(
        html.contains("<rect class=\"old\" x=\"160\" y=\"6\" width=\"266.8\""),
        "{html}"
    );
    assert!(
        html.contains("<title>m365: 25.0% of messages</title>"),
        "{html}"
    );
    assert!(html.contains("<tr><td>bob@example.com</td><td>legacy</td><td class=\"n\">10</td>"));
    for external in ["<script", "src=", "href=", "<link"] {
        assert!(!html.contains(external), "{external} in {html}");
    }
}

#[test]
fn a_bad_date_is_an_error() {
    let site = site();
    let out = report(site.path(), &["--until", "2024-02-30"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--until '2024-02-30' is not a date"));
}
