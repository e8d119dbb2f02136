//! Maildir delivery on a real file system: what lands where, byte for byte, and what is
//! refused.

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
