//! Maildir delivery on a real file system: what lands where, byte for byte, and what is
//! refused.

#![cfg(feature = "server")]

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use splitmx::Address;
use splitmx::delivery::ResultKind;
use splitmx::delivery::maildir::{Maildir, MaildirError, delivered};

const TEMPLATE: &str = "{domain}/{user}";

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    out
}

/// Every path under `dir`, recursively.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in files(dir) {
        if p.is_dir() {
            out.extend(tree(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn message_lands_in_new_with_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mail");
    let md = Maildir::new(&root, "mx.test.example", "+");
    let rcpt = Address::parse("Alice+news@Example.COM").unwrap();
    let mailbox = md.mailbox(TEMPLATE, &rcpt).unwrap();
    assert_eq!(mailbox, root.join("example.com").join("Alice"));

    let body = b"Received: by mx\r\nSubject: caf\xc3\xa9\r\n\r\nline 1\r\n.dot\r\n\x00bin\xff\r\n";
    let path = md.deliver(&mailbox, body).unwrap();

    assert_eq!(path.parent(), Some(mailbox.join("new").as_path()));
    assert_eq!(fs::read(&path).unwrap(), body);
    assert_eq!(files(&mailbox.join("new")), vec![path.clone()]);
    assert!(files(&mailbox.join("tmp")).is_empty(), "tmp/ not empty");
    assert!(files(&mailbox.join("cur")).is_empty());
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(
        name.ends_with(&format!(".mx.test.example,S={}", body.len())),
        "{name}"
    );
    for d in ["", "tmp", "new", "cur"] {
        let mode = fs::metadata(mailbox.join(d)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{d}/ mode {mode:o}");
    }
    let r = delivered(&path);
    assert_eq!(
        (r.kind, r.status.as_str()),
        (ResultKind::Delivered, "2.0.0")
    );
}

#[test]
fn second_message_goes_into_the_existing_maildir() {
    let dir = tempfile::tempdir().unwrap();
    let md = Maildir::new(dir.path(), "h", "+");
    let mailbox = md
        .mailbox(TEMPLATE, &Address::parse("bob@example.com").unwrap())
        .unwrap();
    let a = md.deliver(&mailbox, b"A\r\n").unwrap();
    let b = md.deliver(&mailbox, b"B\r\n").unwrap();
    assert_ne!(a, b);
    assert_eq!(fs::read(a).unwrap(), b"A\r\n");
    assert_eq!(fs::read(b).unwrap(), b"B\r\n");
}

#[test]
fn concurrent_deliveries_give_distinct_files() {
    let dir = tempfile::tempdir().unwrap();
    let md = Arc::new(Maildir::new(dir.path(), "h", "+"));
    let mailbox = md
        .mailbox(TEMPLATE, &Address::parse("carol@example.com").unwrap())
        .unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let md = Arc::clone(&md);
            let mailbox = mailbox.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        let body = format!("Subject: {t}-{i}\r\n\r\nbody\r\n");
                        (md.deliver(&mailbox, body.as_bytes()).unwrap(), body)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for t in threads {
        for (path, body) in t.join().unwrap() {
            assert_eq!(fs::read_to_string(&path).unwrap(), body);
            assert!(seen.insert(path));
        }
    }
    assert_eq!(seen.len(), 200);
    assert_eq!(files(&mailbox.join("new")).len(), 200);
    assert!(files(&mailbox.join("tmp")).is_empty());
}

#[tokio::test]
async fn async_delivery_runs_on_the_blocking_pool() {
    let dir = tempfile::tempdir().unwrap();
    let md = Maildir::new(dir.path(), "h", "+");
    let mailbox = md
        .mailbox(TEMPLATE, &Address::parse("dave@example.com").unwrap())
        .unwrap();
    let body: Arc<[u8]> = Arc::from(&b"Subject: x\r\n\r\nasync\r\n"[..]);
    let path = md.deliver_async(mailbox, Arc::clone(&body)).await.unwrap();
    assert_eq!(fs::read(path).unwrap(), &body[..]);
}

#[test]
fn traversal_attempts_write_nothing_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let md = Maildir::new(&root, "h", "+");
    let all = [TEMPLATE, "{local}", "{domain}/{user}/{extension}"];
    let ext_only = ["{local}", "{domain}/{user}/{extension}"];
    for (rcpt, templates) in [
        (r#""../x"@example.com"#, &all[..]),
        (r#"".."@example.com"#, &all[..]),
        (r#""."@example.com"#, &all[..]),
        (r#""a/b"@x.example"#, &all[..]),
        (r#""../../etc"@example.com"#, &all[..]),
        (r#"".ssh"@example.com"#, &all[..]),
        // The user part "x" is a fine name; the extension is not.
        (r#""x+/../../y"@example.com"#, &ext_only[..]),
        (r#""x+.."@example.com"#, &ext_only[1..]),
    ] {
        let addr = Address::parse(rcpt).unwrap_or_else(|e| panic!("{rcpt}: {e}"));
        for template in templates {
            match md.mailbox(template, &addr) {
                Err(e @ MaildirError::BadName { .. }) => {
                    let r = e.rcpt_result();
                    assert_eq!((r.kind, r.status.as_str()), (ResultKind::Bounced, "5.1.3"));
                }
                Ok(p) => panic!("{rcpt} with {template} gave {}", p.display()),
                Err(e) => panic!("{rcpt} with {template}: {e}"),
            }
        }
    }
    assert!(
        tree(dir.path()) == vec![root.clone()],
        "{:?}",
        tree(dir.path())
    );
}

#[test]
fn file_where_the_mailbox_should_be_defers() {
    let dir = tempfile::tempdir().unwrap();
    let md = Maildir::new(dir.path(), "h", "+");
    let rcpt = Address::parse("erin@example.com").unwrap();
    let mailbox = md.mailbox(TEMPLATE, &rcpt).unwrap();
    fs::create_dir_all(mailbox.parent().unwrap()).unwrap();
    fs::write(&mailbox, b"not a directory").unwrap();

    let e = md.deliver(&mailbox, b"Subject: x\r\n\r\n").unwrap_err();
    let r = e.rcpt_result();
    assert_eq!(r.kind, ResultKind::Deferred, "{e}");
    assert!(r.status.starts_with("4."), "{}", r.status);
    assert!(r.detail.contains("erin"), "{}", r.detail);
    assert_eq!(fs::read(&mailbox).unwrap(), b"not a directory");
}

#[test]
fn file_where_new_should_be_defers_and_leaves_tmp_clean() {
    let dir = tempfile::tempdir().unwrap();
    let md = Maildir::new(dir.path(), "h", "+");
    let mailbox = md
        .mailbox(TEMPLATE, &Address::parse("frank@example.com").unwrap())
        .unwrap();
    for d in ["tmp", "cur"] {
        fs::create_dir_all(mailbox.join(d)).unwrap();
    }
    fs::write(mailbox.join("new"), b"").unwrap();

    let e = md.deliver(&mailbox, b"Subject: x\r\n\r\n").unwrap_err();
    assert_eq!(e.rcpt_result().kind, ResultKind::Deferred, "{e}");
    assert!(files(&mailbox.join("tmp")).is_empty());
}

/// A Dovecot instance started by the test on a mail tree (auth and config services only,
/// no listeners), so `doveadm` can read the Maildir as a user. Killed on drop.
struct Dovecot {
    child: std::process::Child,
    config: PathBuf,
}

/// The user Dovecot reads the Maildir as (it refuses uid 0).
const MAIL_UID: u32 = 65534;

impl Dovecot {
    fn start(dir: &Path, maildir: &Path) -> Dovecot {
        let config = dir.join("dovecot.conf");
        let home = dir.join("home");
        fs::create_dir_all(&home).unwrap();
        fs::write(
            &config,
            format!(
                "protocols =\n\
                 ssl = no\n\
                 base_dir = {base}\n\
                 state_dir = {state}\n\
                 log_path = /dev/stderr\n\
                 default_internal_user = root\n\
                 default_login_user = root\n\
                 default_internal_group = root\n\
                 mail_location = maildir:{maildir}\n\
                 userdb {{\n  driver = static\n  args = uid={MAIL_UID} gid={MAIL_UID} home={home}\n}}\n\
                 passdb {{\n  driver = static\n  args = nopassword=y\n}}\n",
                base = dir.join("run").display(),
                state = dir.join("state").display(),
                maildir = maildir.display(),
                home = home.display(),
            ),
        )
        .unwrap();
        chown_tree(dir);
        let child = std::process::Command::new("/usr/sbin/dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start dovecot (/usr/sbin/dovecot)");
        let socket = dir.join("run").join("auth-userdb");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !socket.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "dovecot did not create {}",
                socket.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Dovecot { child, config }
    }

    /// `doveadm fetch FIELDS mailbox INBOX all`: stdout; panics on any error.
    fn fetch(&self, fields: &str) -> String {
        let out = std::process::Command::new("/usr/bin/doveadm")
            .arg("-c")
            .arg(&self.config)
            .args(["fetch", "-u", "tester", fields, "mailbox", "INBOX", "all"])
            .output()
            .expect("run doveadm");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("Error"),
            "doveadm fetch failed: {}\n{stderr}",
            out.status
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chown_tree(dir: &Path) {
    std::os::unix::fs::chown(dir, Some(MAIL_UID), Some(MAIL_UID)).unwrap();
    for p in tree(dir) {
        std::os::unix::fs::lchown(&p, Some(MAIL_UID), Some(MAIL_UID)).unwrap();
    }
}

/// Dovecot reads what we write: CRLF kept, `S=` the true size, and a bounce built by
/// `delivery::bounce` parses as a three-part multipart/report.
#[test]
fn dovecot_reads_the_maildir_including_a_bounce() {
    use splitmx::delivery::RcptResult;
    use splitmx::delivery::bounce::{self, BounceInput, NoticeKind, ReportedRecipient};
    use splitmx::spool::{NewMessage, SpooledRecipient};

    let dir = tempfile::tempdir().unwrap();
    let md = Maildir::new(&dir.path().join("mail"), "mx.test.example", "+");
    let mailbox = md
        .mailbox(TEMPLATE, &Address::parse("tester@example.com").unwrap())
        .unwrap();
    let plain = b"From: a@example.org\r\nSubject: plain\r\n\r\nline one\r\nline two\r\n";
    let first = md.deliver(&mailbox, plain).unwrap();

    let original = NewMessage {
        id: "0K8ZQ3XG4A7MB2NR".parse().unwrap(),
        received_at: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600),
        client: "[192.0.2.9]:52100 (client.example)".to_string(),
        sender: "tester@example.com".to_string(),
        recipients: vec![SpooledRecipient {
            original: "bob@example.net".to_string(),
            deliver_to: "bob@example.net".to_string(),
            ..SpooledRecipient::default()
        }],
        table_version: "0".to_string(),
        body: b"Subject: original\r\nMessage-ID: <o@example.com>\r\n\r\nbody\r\n".to_vec(),
        params: vec![("RET".to_string(), "FULL".to_string())],
    };
    let result = RcptResult::reply(
        ResultKind::Bounced,
        "5.1.1",
        "550 5.1.1 user unknown",
        "mx.example.net[192.0.2.1]:25",
    );
    let dsn = bounce::build(&BounceInput {
        reporting_mta: "mx.test.example",
        original: &original,
        recipients: vec![ReportedRecipient {
            index: 0,
            result: &result,
            last_attempt: None,
        }],
        kind: NoticeKind::Failure,
        now: original.received_at,
        retry_until: None,
    })
    .unwrap();
    let second = md.deliver(&mailbox, &dsn.message).unwrap();

    let dovecot = Dovecot::start(dir.path(), &mailbox);
    let sizes = dovecot.fetch("size.physical size.virtual");
    let expected = [first, second]
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .map(|n| format!("size.physical: {n}\nsize.virtual: {n}\n"))
        .collect::<Vec<_>>()
        .join("\u{c}\n");
    assert_eq!(sizes.trim(), expected.trim(), "{sizes}");

    let body = dovecot.fetch("body");
    assert!(body.contains("line one\r\nline two"), "{body:?}");

    let structure = dovecot.fetch("imap.bodystructure").to_ascii_lowercase();
    assert!(
        structure.contains("\"report\" (\"report-type\" \"delivery-status\" \"boundary\""),
        "{structure}"
    );
    for part in [
        "(\"text\" \"plain\"",
        "(\"message\" \"delivery-status\"",
        "(\"message\" \"rfc822\"",
        "\"original\"",
    ] {
        assert!(structure.contains(part), "{part} missing in {structure}");
    }
}
