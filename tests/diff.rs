//! `splitmx diff --against DIR` as CI runs it: the journal (written by the test from
//! `tests/fixtures/diff/journal/`) or a list of recipients, the live tables in
//! `tests/fixtures/diff/live/`, and a proposed directory; the exact lines printed, the JSON
//! shape and the exit code (0 no change, 1 changes, 2 error).
#![cfg(feature = "cli")]

#[cfg(feature = "ldap")]
mod common_ldap;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diff")
}

/// A config whose live tables are the fixture's and whose spool holds the fixture journal.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("spool/journal");
        std::fs::create_dir_all(&journal).unwrap();
        for day in ["2024-05-06", "2024-05-07"] {
            let name = format!("{day}.tsv");
            std::fs::copy(fixtures().join("journal").join(&name), journal.join(&name)).unwrap();
        }
        std::fs::write(
            dir.path().join("splitmx.yaml"),
            format!(
                "hostname: mx.test.example\nrouting:\n  dir: {}\nspool: spool\n",
                fixtures().join("live").display()
            ),
        )
        .unwrap();
        Site { dir }
    }

    /// Use these live tables and this extra config text (an `ldap:` section).
    fn with(self, live: &str, extra: &str) -> Site {
        std::fs::write(
            self.dir.path().join("splitmx.yaml"),
            format!(
                "hostname: mx.test.example\nrouting:\n  dir: {}\nspool: spool\n{extra}",
                fixtures().join(live).display()
            ),
        )
        .unwrap();
        self
    }

    fn diff(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_splitmx"))
            .arg("diff")
            .arg("--config")
            .arg(self.dir.path().join("splitmx.yaml"))
            .args(["--until", "2024-05-07"])
            .args(args)
            .env("SPLITMX_LOG", "off")
            .output()
            .unwrap()
    }
}

fn against(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The lines after the two `live:`/`proposed:` lines (which carry table versions).
fn body(o: &Output) -> Vec<String> {
    let text = stdout(o);
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert!(
        lines.len() > 2 && lines[0].starts_with("live:     ") && lines[1].starts_with("proposed: "),
        "{text}"
    );
    lines[2..].to_vec()
}

#[test]
fn a_wave_that_moves_recipients_lists_them_by_route_and_exits_1() {
    let site = Site::new();
    let out = site.diff(&["--against", &against("proposed")]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        body(&out),
        [
            "checked:  6 recipients from the journal, 2024-05-01 to 2024-05-07",
            "this change moves 2 recipients (13 messages in the last 7 days) from legacy to m365; 1 would be deferred by route moving (450 4.2.1)",
            "",
            "legacy -> m365: 2 recipients, 13 messages",
            "  bob@example.com  10 messages",
            "  carol@example.com  3 messages",
            "",
            "legacy -> moving (450 4.2.1): 1 recipient, 2 messages",
            "  dave@example.com  2 messages",
        ]
    );
}

#[test]
fn dropping_the_default_makes_a_journal_recipient_unknown() {
    let site = Site::new();
    let out = site.diff(&["--against", &against("proposed-unknown")]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        body(&out),
        [
            "checked:  6 recipients from the journal, 2024-05-01 to 2024-05-07",
            "this change moves no recipient; 1 would become unknown (550 5.1.1)",
            "",
            "legacy -> unknown (550 5.1.1): 1 recipient, 1 message",
            "  erin@example.com  1 message",
        ]
    );
}

#[test]
fn the_same_tables_change_nothing_and_exit_0() {
    let site = Site::new();
    let out = site.diff(&["--against", &against("live")]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        body(&out),
        [
            "checked:  6 recipients from the journal, 2024-05-01 to 2024-05-07",
            "no change: none of the 6 recipients checked would be routed differently",
        ]
    );
}

#[test]
fn a_shorter_period_checks_fewer_recipients_with_their_recent_counts() {
    let site = Site::new();
    // Only 2024-05-07: carol and dave were not seen that day.
    let out = site.diff(&["--against", &against("proposed"), "--days", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        body(&out)[..4],
        [
            "checked:  4 recipients from the journal, 2024-05-07 to 2024-05-07",
            "this change moves 1 recipient (4 messages in the last 1 day) from legacy to m365",
            "",
            "legacy -> m365: 1 recipient, 4 messages",
        ]
    );
}

#[test]
fn a_recipient_list_replaces_the_journal() {
    let site = Site::new();
    let list = site.dir.path().join("wave2.txt");
    std::fs::write(
        &list,
        "# wave 2, as HR sent it\n\n<Bob@Example.COM>\n  new.hire@example.com\ndave@example.com\nbob@example.com\n",
    )
    .unwrap();
    let out = site.diff(&[
        "--against",
        &against("proposed"),
        "--recipients",
        list.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        body(&out),
        [
            format!("checked:  3 recipients from {}", list.display()).as_str(),
            "this change moves 1 recipient (10 messages in the last 7 days) from legacy to m365; 1 would be deferred by route moving (450 4.2.1)",
            "",
            "legacy -> m365: 1 recipient, 10 messages",
            "  bob@example.com  10 messages",
            "",
            "legacy -> moving (450 4.2.1): 1 recipient, 2 messages",
            "  dave@example.com  2 messages",
        ]
    );
}

#[test]
fn a_bad_line_in_the_recipient_list_is_an_error_with_its_line() {
    let site = Site::new();
    let list = site.dir.path().join("list.txt");
    std::fs::write(&list, "bob@example.com\nnot an address\n").unwrap();
    let out = site.diff(&[
        "--against",
        &against("proposed"),
        "--recipients",
        list.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: line 2: 'not an address' is not an address",
            list.display()
        )),
        "{err}"
    );
}

#[test]
fn proposed_tables_with_errors_exit_2_and_say_where() {
    let site = Site::new();
    let broken = site.dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("a.yaml"),
        "domains: [example.com]\ndefault: nowhere\n",
    )
    .unwrap();
    let out = site.diff(&["--against", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a.yaml:2:10: unknown route 'nowhere'"),
        "{err}"
    );
    assert!(err.contains("the proposed tables in"), "{err}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn json_gives_the_summary_groups_and_both_answers_per_recipient() {
    let site = Site::new();
    let out = site.diff(&["--against", &against("proposed"), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["checked"], 6);
    assert_eq!(v["changed"], 3);
    assert_eq!(v["messages"], 15);
    assert_eq!(v["days"], 7);
    assert_eq!(v["period"]["first"], "2024-05-01");
    assert_eq!(v["source"]["type"], "journal");
    assert_eq!(v["proposed"]["dir"], against("proposed"));
    assert!(v["live"]["version"].as_str().is_some_and(|s| s.len() >= 16));
    assert_eq!(
        v["summary"],
        "this change moves 2 recipients (13 messages in the last 7 days) from legacy to m365; 1 would be deferred by route moving (450 4.2.1)"
    );
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(
        (&groups[0]["from"], &groups[0]["to"], &groups[0]["change"]),
        (&"legacy".into(), &"m365".into(), &"move".into())
    );
    assert_eq!(groups[0]["recipients"], 2);
    assert_eq!(groups[0]["messages"], 13);
    let bob = &groups[0]["list"][0];
    assert_eq!(bob["recipient"], "bob@example.com");
    assert_eq!(bob["messages"], 10);
    assert_eq!(
        bob["from"],
        serde_json::json!({"result": "routed", "route": "legacy", "kind": "smtp:[192.0.2.25]:25", "deliver_to": "bob@example.com"})
    );
    assert_eq!(bob["to"]["route"], "m365");
    assert_eq!(groups[1]["change"], "defer");
    assert_eq!(
        groups[1]["list"][0]["to"],
        serde_json::json!({"result": "refused", "label": "moving", "code": 450, "status": "4.2.1", "text": "Mailbox is being moved, try again later"})
    );
    assert_eq!(v["unresolved"], serde_json::json!([]));
}

#[cfg(feature = "ldap")]
fn ldap_section(url: &str) -> String {
    format!(
        "ldap:\n  servers: [{url}]\n  base: ou=people,dc=example,dc=com\n  domains: [example.com]\n  timeout: 2s\n  connect_timeout: 1s\n"
    )
}

#[cfg(feature = "ldap")]
#[test]
fn with_the_directory_in_the_loop_a_mail_host_switch_moves_its_people() {
    let slapd = common_ldap::slapd::Slapd::start(
        &std::fs::read_to_string(fixtures().join("people.ldif")).unwrap(),
    );
    let site = Site::new().with("ldap-live", &ldap_section(&slapd.url()));
    let list = site.dir.path().join("list.txt");
    // alice and bob have entries (mailHost outlook.example and onprem.example); carol has
    // none, so she is unknown on both sides.
    std::fs::write(
        &list,
        "alice@example.com\nbob@example.com\ncarol@example.com\n",
    )
    .unwrap();
    let out = site.diff(&[
        "--against",
        &against("ldap-proposed"),
        "--recipients",
        list.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        body(&out)[1..],
        [
            "this change moves 1 recipient (10 messages in the last 7 days) from legacy to m365",
            "",
            "legacy -> m365: 1 recipient, 10 messages",
            "  bob@example.com  10 messages",
        ]
    );
}

#[cfg(feature = "ldap")]
#[test]
fn a_directory_that_cannot_answer_makes_the_comparison_fail_with_exit_2() {
    // Nothing listens on port 1: every lookup is a temporary failure on both sides.
    let site = Site::new().with("ldap-live", &ldap_section("ldap://127.0.0.1:1"));
    let out = site.diff(&["--against", &against("ldap-proposed")]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("unresolved on both sides (temporary failure): 6"),
        "{text}"
    );
    assert!(
        text.contains("  bob@example.com  temporary failure (451 4.4.3)"),
        "{text}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("6 recipients could not be resolved"), "{err}");
}
