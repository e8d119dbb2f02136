//! The `splitmx` command as an administrator runs it: exit codes and what it prints.
#![cfg(feature = "cli")]

use std::path::Path;
use std::process::{Command, Output};

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

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn check_accepts_the_shipped_sample_tables() {
    let out = splitmx(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.starts_with("routing: ok: 3 files, "), "{text}");
    assert!(text.contains(" domains, 7 recipients, version "), "{text}");
}

#[test]
fn check_lists_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        "routes:\n  m365: smtp:mx.example.net\ndomains: [example.com]\ndefault: m356\nrecipients:\n  bob@exmaple.com: m365\n",
    );
    let routing = dir.path().to_str().unwrap();
    let out = splitmx(&["check", "--routing", routing]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(
        lines[0],
        format!("{routing}/a.yaml:4:10: unknown route 'm356' (defined routes: m365)")
    );
    assert!(lines[1].starts_with(&format!(
        "{routing}/a.yaml:6:3: recipient 'bob@exmaple.com' is in domain 'exmaple.com'"
    )));
    assert_eq!(
        lines[2],
        format!("{routing}: 2 errors; the tables were not loaded")
    );
}

#[test]
fn check_json_reports_errors_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        "domains: [example.com]\ndefault: nowhere\n",
    );
    let out = splitmx(&["check", "--json", "--routing", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"][0]["line"], 2);
    assert_eq!(v["errors"][0]["column"], 10);
    assert_eq!(
        v["errors"][0]["kind"],
        "unknown route 'nowhere' (defined routes: none)"
    );
}

#[test]
fn check_flags_a_route_to_the_gateway_itself_using_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("routing")).unwrap();
    write(
        dir.path(),
        "splitmx.yaml",
        "hostname: mx.example.com\nlisten: [\"127.0.0.1:2525\"]\n",
    );
    write(
        &dir.path().join("routing"),
        "t.yaml",
        "domains: [example.com]\ndefault: \"smtp:[127.0.0.1]:2525\"\n",
    );
    let config = dir.path().join("splitmx.yaml");
    let out = splitmx(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("t.yaml:2:10: route 'smtp:[127.0.0.1]:2525' delivers to [127.0.0.1]:2525, which is this gateway itself"), "{}", stdout(&out));
}

#[test]
fn bad_config_file_names_its_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "splitmx.yaml",
        "hostname: mx.example.com\nroutnig:\n  dir: x\n",
    );
    let config = dir.path().join("splitmx.yaml");
    let out = splitmx(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("splitmx.yaml:2:1: unknown field `routnig`"),
        "{err}"
    );
}

#[test]
fn explain_shows_steps_route_and_provenance() {
    let out = splitmx(&["explain", "Bob+news@Example.NET"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for want in [
        "recipient:  Bob+news@Example.NET",
        "1. recipient                    bob+news@example.net",
        "2. recipient without extension  bob@example.net                          hit",
        "route:      m365 (smtp:example-com.mail.protection.outlook.com)",
        "matched:    routing/example.com.yaml:",
        "reply:      250 2.1.5 Recipient ok",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[test]
fn explain_json_and_exit_code_for_unrouted() {
    let out = splitmx(&["explain", "--json", "someone@not-ours.example"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["reply"]["code"], 554);
    assert_eq!(v["reply"]["status"], "5.7.1");
    assert_eq!(v["resolution"]["outcome"]["result"], "unrouted");

    let out = splitmx(&["explain", "--json", "carol@example.com"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["resolution"]["outcome"]["route"]["name"], "m365");
    assert_eq!(
        v["resolution"]["outcome"]["recipient"],
        "carol.smith@example.onmicrosoft.com"
    );
    assert_eq!(
        v["resolution"]["outcome"]["provenance"]["source"]["line"],
        16
    );
}

#[test]
fn explain_rejects_a_malformed_address_with_exit_2() {
    let out = splitmx(&["explain", "not an address"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an address"));
}

#[cfg(feature = "server")]
#[test]
fn queue_list_and_show_read_the_spool() {
    use splitmx::spool::{NewMessage, QueueId, Spool, SpoolOptions, SpooledRecipient};
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "splitmx.yaml",
        "hostname: mx.example.com\nspool: spool\n",
    );
    let id = QueueId::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let spool = Spool::open(&dir.path().join("spool"), SpoolOptions::default())
            .await
            .unwrap();
        spool
            .commit(NewMessage {
                id,
                received_at: std::time::SystemTime::now(),
                client: "127.0.0.1:1234 (client.example)".into(),
                sender: "sender@example.org".into(),
                recipients: vec![SpooledRecipient {
                    original: "Alice@Example.com".into(),
                    deliver_to: "alice@tenant.example.net".into(),
                    route: "m365".into(),
                    route_kind: "smtp:[mx.example.net]:25".into(),
                    provenance: "routing/example.com.yaml:5:3 recipient alice@example.com".into(),
                    tls: String::new(),
                    params: vec![],
                }],
                table_version: "0123456789abcdef".into(),
                body: b"Subject: queued\r\n\r\nbody line\r\n".to_vec(),
                params: vec![],
            })
            .await
            .unwrap();
        spool.close().await.unwrap();
    });
    let config = dir.path().join("splitmx.yaml");
    let config = config.to_str().unwrap();
    let out = splitmx(&["queue", "list", "--config", config]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let line = text.lines().nth(1).unwrap();
    assert!(line.starts_with(&id.to_string()), "{text}");
    assert!(
        line.contains("queued")
            && line.contains("sender@example.org")
            && line.contains("Alice@Example.com")
            && line.ends_with("smtp:[mx.example.net]:25"),
        "{line}"
    );
    assert!(
        text.ends_with("1 message in ") || text.contains("1 message in "),
        "{text}"
    );

    let out = splitmx(&[
        "queue",
        "show",
        &id.to_string(),
        "--config",
        config,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["recipients"][0]["route"], "m365");
    assert_eq!(v["recipients"][0]["deliver_to"], "alice@tenant.example.net");
    assert_eq!(v["table_version"], "0123456789abcdef");
    assert_eq!(v["message"], "Subject: queued\r\n");

    let out = splitmx(&["queue", "show", "NOSUCHID00000000", "--config", config]);
    assert_ne!(out.status.code(), Some(0));
}
