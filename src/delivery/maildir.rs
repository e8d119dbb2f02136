//! Local delivery into Maildir folders (`maildir:` routes).
//!
//! Inputs: a route's path template (`mail/{domain}/{user}`), the recipient, and the
//! message bytes. Output: the path of the new file in the mailbox's `new/` directory.
//!
//! # Mailbox names
//!
//! The placeholders are those of [`Rewrite`](crate::routing::route::Rewrite): `{local}`
//! (the whole local part), `{user}` (without its extension), `{extension}` and
//! `{domain}`. Relative templates are taken under the root given to [`Maildir::new`].
//! A recipient address may carry `/`, `..` or a leading dot inside quotes
//! (`"../x"@example.com`), so every placeholder value is checked before it becomes part
//! of a path: a value that contains `/` or NUL, is `.` or `..`, or starts with `.` is
//! refused ([`MaildirError::BadName`], a permanent `5.1.3`), and so is a path component
//! that a placeholder leaves empty. Nothing is created for a refused name.
//!
//! Case: the domain is the recipient's domain in lower-case ASCII (A-labels), so
//! `Example.COM` and `example.com` share a folder; the local part is used as the
//! recipient spelled it (RFC 5321 leaves its case to the receiving system), so `Alice@`
//! and `alice@` are two folders unless the route rewrites them to one spelling.
//!
//! # Writing
//!
//! The Maildir protocol: create `tmp/`, `new/`, `cur/` (mode 0700) when missing, write
//! the message to `tmp/NAME`, fsync it, rename it to `new/NAME`, fsync `new/` (and every
//! directory created on the way, through its parent). A reader never sees a partial
//! message, and once [`Maildir::deliver`] returns the message survives a crash. Names
//! follow the Maildir specification: `SECONDS.M<micros>P<pid>Q<count>R<random>.HOST,S=SIZE`,
//! with `/` and `:` in the host name written as `\057` and `\072`.
//!
//! The bytes are written exactly as spooled: CRLF line ends are kept (Dovecot and most
//! Maildir readers handle them; `S=` is then the size in CRLF form), and no
//! `Delivered-To:` or `Return-Path:` is added.
//!
//! # Failures
//!
//! A bad mailbox name bounces; a template with an unknown placeholder is a configuration
//! error and defers; I/O errors defer (full disk `4.3.1`, quota `4.2.2`, permissions or a
//! file where a directory belongs `4.2.0`, anything else `4.3.0`). See
//! [`MaildirError::rcpt_result`].

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Address;
use crate::delivery::{RcptResult, ResultKind};

/// Delivers messages into Maildir folders under one root. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
    host: String,
    delimiters: String,
}

/// Why a message could not be written to a Maildir.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaildirError {
    /// A placeholder value cannot be a folder name (path traversal, hidden folder, empty).
    #[error("recipient <{recipient}> gives no safe mailbox name: {placeholder} {reason}")]
    BadName {
        /// The recipient.
        recipient: String,
        /// The placeholder, e.g. `{user}`.
        placeholder: &'static str,
        /// What is wrong with its value.
        reason: &'static str,
    },
    /// The template has an unknown or unclosed placeholder.
    #[error("maildir template '{template}': {reason}")]
    Template {
        /// The template.
        template: String,
        /// What is wrong.
        reason: String,
    },
    /// A file system operation failed.
    #[error("maildir {op} {path}: {source}")]
    Io {
        /// What was being done: `create directory`, `write`, `rename`, ...
        op: &'static str,
        /// The path it was done on.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The blocking task running the delivery did not finish (runtime shutting down).
    #[error("maildir delivery task failed: {0}")]
    Task(String),
}

impl MaildirError {
    /// The recipient's result: a bad mailbox name bounces (`5.1.3`); everything else is
    /// temporary, so the administrator can fix the disk or the configuration before the
    /// message expires.
    pub fn rcpt_result(&self) -> RcptResult {
        let status = match self {
            MaildirError::BadName { .. } => {
                return RcptResult::local(ResultKind::Bounced, "5.1.3", self.to_string());
            }
            MaildirError::Template { .. } => "4.3.5",
            MaildirError::Io { source, .. } => io_status(source),
            MaildirError::Task(_) => "4.3.0",
        };
        RcptResult::local(ResultKind::Deferred, status, self.to_string())
    }
}

/// The enhanced status code of a file system error.
fn io_status(e: &io::Error) -> &'static str {
    use io::ErrorKind as K;
    match e.kind() {
        K::StorageFull => "4.3.1",
        K::QuotaExceeded => "4.2.2",
        K::PermissionDenied
        | K::ReadOnlyFilesystem
        | K::NotADirectory
        | K::IsADirectory
        | K::AlreadyExists
        | K::NotFound => "4.2.0",
        _ => "4.3.0",
    }
}

/// The result of a successful delivery to `path`.
pub fn delivered(path: &Path) -> RcptResult {
    RcptResult::local(
        ResultKind::Delivered,
        "2.0.0",
        format!("delivered to maildir {}", path.display()),
    )
}

impl Maildir {
    /// A Maildir deliverer: relative templates are under `root`; `hostname` goes into the
    /// unique file names; `delimiters` split `{user}` from `{extension}` (the routing
    /// `recipient_delimiter`).
    pub fn new(root: &Path, hostname: &str, delimiters: &str) -> Maildir {
        Maildir {
            root: root.to_path_buf(),
            host: escape_host(hostname),
            delimiters: delimiters.to_string(),
        }
    }

    /// The mailbox directory for `rcpt` under `template`. Refuses any placeholder value
    /// that could leave the intended folder (see the module documentation).
    pub fn mailbox(&self, template: &str, rcpt: &Address) -> Result<PathBuf, MaildirError> {
        let ext = rcpt.extension(&self.delimiters);
        let user = ext.map(|e| e.user).unwrap_or_else(|| rcpt.local_part());
        let values = [
            ("{local}", rcpt.local_part()),
            ("{user}", user),
            ("{extension}", ext.map(|e| e.extension).unwrap_or("")),
            ("{domain}", rcpt.domain()),
        ];
        let bad = |placeholder, reason| MaildirError::BadName {
            recipient: rcpt.original().to_string(),
            placeholder,
            reason,
        };
        let template_error = |reason: &str| MaildirError::Template {
            template: template.to_string(),
            reason: reason.to_string(),
        };
        let mut path = PathBuf::new();
        for (i, part) in template.split('/').enumerate() {
            if part.is_empty() {
                if i == 0 {
                    path.push("/");
                }
                continue;
            }
            let mut out = String::with_capacity(part.len());
            let mut rest = part;
            let mut first = None;
            while let Some(open) = rest.find('{') {
                out.push_str(rest.get(..open).unwrap_or(""));
                let tail = rest.get(open..).unwrap_or("");
                let Some((name, value)) = values.iter().find(|(n, _)| tail.starts_with(n)) else {
                    return Err(template_error(
                        "unknown placeholder: use {local}, {user}, {extension} or {domain}",
                    ));
                };
                check_value(value).map_err(|reason| bad(*name, reason))?;
                first.get_or_insert(*name);
                out.push_str(value);
                rest = tail.get(name.len()..).unwrap_or("");
            }
            if rest.contains('}') {
                return Err(template_error("'}' without '{'"));
            }
            out.push_str(rest);
            if let Some(name) = first
                && (out.is_empty() || out == "." || out == "..")
            {
                return Err(bad(name, "leaves an empty, '.' or '..' folder name"));
            }
            path.push(out);
        }
        if path.as_os_str().is_empty() {
            return Err(template_error("the template names no folder"));
        }
        Ok(self.root.join(path))
    }

    /// Write one message into the Maildir `mailbox` (as [`Maildir::mailbox`] returned it)
    /// and return the path of the new file. Blocking: from async code use
    /// [`Maildir::deliver_async`].
    pub fn deliver(&self, mailbox: &Path, body: &[u8]) -> Result<PathBuf, MaildirError> {
        create_dirs(mailbox)?;
        let (tmp, name) = self.create_tmp(mailbox, body.len())?;
        let result = write_and_move(tmp, mailbox, &name, body);
        if result.is_err() {
            // Best effort: a left-over tmp file is harmless (readers ignore tmp/), but
            // would count against the quota.
            let _ = fs::remove_file(mailbox.join("tmp").join(&name));
        }
        result
    }

    /// [`Maildir::deliver`] on tokio's blocking thread pool.
    pub async fn deliver_async<B>(&self, mailbox: PathBuf, body: B) -> Result<PathBuf, MaildirError>
    where
        B: AsRef<[u8]> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.deliver(&mailbox, body.as_ref()))
            .await
            .map_err(|e| MaildirError::Task(e.to_string()))?
    }

    /// Create `tmp/NAME` exclusively, trying a fresh name should one exist already.
    fn create_tmp(&self, mailbox: &Path, size: usize) -> Result<(File, String), MaildirError> {
        let mut attempt = 0;
        loop {
            let name = self.unique_name(size);
            let path = mailbox.join("tmp").join(&name);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => return Ok((f, name)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 5 => attempt += 1,
                Err(source) => {
                    return Err(MaildirError::Io {
                        op: "create",
                        path,
                        source,
                    });
                }
            }
        }
    }

    /// `SECONDS.M<micros>P<pid>Q<count>R<random>.HOST,S=SIZE`.
    fn unique_name(&self, size: usize) -> String {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let count = COUNT.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}.M{}P{}Q{}R{:08x}.{},S={}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            count,
            process_random(),
            self.host,
            size
        )
    }
}

/// Whether a placeholder value can be (part of) a folder name.
fn check_value(value: &str) -> Result<(), &'static str> {
    if value.contains('/') {
        Err("contains '/'")
    } else if value.contains('\0') {
        Err("contains NUL")
    } else if value.starts_with('.') {
        Err("starts with '.'")
    } else {
        Ok(())
    }
}

/// Write, fsync, rename into `new/`, fsync `new/`.
fn write_and_move(
    mut tmp: File,
    mailbox: &Path,
    name: &str,
    body: &[u8],
) -> Result<PathBuf, MaildirError> {
    let tmp_path = mailbox.join("tmp").join(name);
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| MaildirError::Io { op, path, source }
    };
    tmp.write_all(body).map_err(io("write", &tmp_path))?;
    tmp.sync_all().map_err(io("fsync", &tmp_path))?;
    drop(tmp);
    let new_dir = mailbox.join("new");
    let final_path = new_dir.join(name);
    fs::rename(&tmp_path, &final_path).map_err(io("rename into new/", &final_path))?;
    sync_dir(&new_dir)?;
    Ok(final_path)
}

/// Create `mailbox` (and missing ancestors) and its `tmp`, `new`, `cur`, mode 0700,
/// fsyncing the parent of everything created so the new names survive a crash.
fn create_dirs(mailbox: &Path) -> Result<(), MaildirError> {
    let subdirs = ["tmp", "new", "cur"].map(|d| mailbox.join(d));
    if subdirs.iter().all(|d| d.is_dir()) {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut dir = mailbox;
    while !dir.exists() {
        missing.push(dir);
        match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => dir = parent,
            _ => break,
        }
    }
    for dir in missing
        .iter()
        .rev()
        .copied()
        .chain(subdirs.iter().map(PathBuf::as_path))
    {
        make_dir(dir)?;
    }
    Ok(())
}

/// Create one directory (0700) unless it is there; fsync its parent when created.
fn make_dir(dir: &Path) -> Result<(), MaildirError> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        // Another delivery made it first, or it was there: fine if it is a directory.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(source) => {
            return Err(MaildirError::Io {
                op: "create directory",
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    match dir.parent() {
        Some(p) if p.as_os_str().is_empty() => sync_dir(Path::new(".")),
        Some(p) => sync_dir(p),
        None => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), MaildirError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| MaildirError::Io {
            op: "fsync directory",
            path: dir.to_path_buf(),
            source,
        })
}

/// The host name as the Maildir specification wants it in a file name.
fn escape_host(host: &str) -> String {
    let host = if host.is_empty() { "localhost" } else { host };
    host.replace('/', "\\057").replace(':', "\\072")
}

/// Random bits fixed for the process: keeps names of two processes with the same pid
/// apart (containers sharing a mail store, pid reuse after a restart).
fn process_random() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    static RANDOM: OnceLock<u32> = OnceLock::new();
    *RANDOM.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish() as u32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md() -> Maildir {
        Maildir::new(Path::new("/srv/mail"), "mx/1:a", "+")
    }

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn fills_placeholders() {
        let p = md()
            .mailbox("{domain}/{user}", &addr("Alice+news@Example.COM"))
            .unwrap();
        assert_eq!(p, Path::new("/srv/mail/example.com/Alice"));
        let p = md()
            .mailbox("x/{local}/.{extension}", &addr("bob+lists@example.com"))
            .unwrap();
        assert_eq!(p, Path::new("/srv/mail/x/bob+lists/.lists"));
        let p = md()
            .mailbox(
                "/var/vmail/{domain}/{user}{extension}",
                &addr("bob@example.com"),
            )
            .unwrap();
        assert_eq!(p, Path::new("/var/vmail/example.com/bob"));
        let p = md().mailbox("shared", &addr("bob@example.com")).unwrap();
        assert_eq!(p, Path::new("/srv/mail/shared"));
    }

    #[test]
    fn refuses_traversal_and_hidden_names() {
        for (template, rcpt) in [
            ("{domain}/{user}", r#""../x"@example.com"#),
            ("{domain}/{user}", r#"".."@example.com"#),
            ("{domain}/{user}", r#"".x"@example.com"#),
            ("{domain}/{user}", r#""a/b"@x.example"#),
            ("{domain}/{local}", r#""a+/../b"@x.example"#),
            ("{domain}/{extension}", "bob@example.com"),
            ("{domain}/{extension}", r#""bob+.."@example.com"#),
            ("{domain}/{user}-{extension}", r#""bob+a/b"@example.com"#),
        ] {
            match md().mailbox(template, &addr(rcpt)) {
                Err(e @ MaildirError::BadName { .. }) => {
                    assert_eq!(e.rcpt_result().kind, ResultKind::Bounced);
                    assert_eq!(e.rcpt_result().status, "5.1.3");
                }
                other => panic!("{template} {rcpt}: {other:?}"),
            }
        }
    }

    #[test]
    fn template_errors_defer() {
        for t in ["{nope}/x", "{user", "a}/{user}"] {
            let e = md().mailbox(t, &addr("bob@example.com")).unwrap_err();
            assert!(matches!(e, MaildirError::Template { .. }), "{t}: {e:?}");
            assert_eq!(e.rcpt_result().kind, ResultKind::Deferred);
            assert_eq!(e.rcpt_result().status, "4.3.5");
        }
    }

    #[test]
    fn unique_names_follow_the_spec() {
        let m = md();
        let a = m.unique_name(42);
        let b = m.unique_name(42);
        assert_ne!(a, b);
        assert!(a.ends_with(".mx\\0571\\072a,S=42"), "{a}");
        assert!(!a.contains('/') && !a.contains(':'));
        let (secs, rest) = a.split_once('.').unwrap();
        assert!(secs.bytes().all(|c| c.is_ascii_digit()));
        assert!(rest.starts_with('M'));
    }

    #[test]
    fn io_errors_map_to_statuses() {
        let e = |kind| MaildirError::Io {
            op: "write",
            path: PathBuf::from("/x"),
            source: io::Error::from(kind),
        };
        let r = e(io::ErrorKind::StorageFull).rcpt_result();
        assert_eq!((r.kind, r.status.as_str()), (ResultKind::Deferred, "4.3.1"));
        assert_eq!(
            e(io::ErrorKind::PermissionDenied).rcpt_result().status,
            "4.2.0"
        );
        assert_eq!(
            e(io::ErrorKind::QuotaExceeded).rcpt_result().status,
            "4.2.2"
        );
        assert_eq!(e(io::ErrorKind::Other).rcpt_result().status, "4.3.0");
        assert!(!e(io::ErrorKind::Other).rcpt_result().detail.contains('\n'));
    }
}
