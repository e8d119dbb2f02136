//! Dovecot LMTP as a real local-delivery peer: a throwaway configuration in a temporary
//! directory (LMTP only, on a free 127.0.0.1 port and on a unix socket, users from a
//! passwd-file so unknown users are refused at RCPT, Maildir under the directory), the
//! daemon in the foreground as a child process, killed on drop.
//!
//! Dovecot never delivers mail as root: when the tests run as root, mail is owned by
//! `nobody` (65534) and the directory is opened up for it.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{current_user, free_port, greets};

const DOVECOT: &str = "/usr/sbin/dovecot";

/// A running Dovecot, killed on drop.
pub struct Dovecot {
    /// Configuration, runtime files, log and mail.
    pub dir: tempfile::TempDir,
    /// The LMTP TCP listener.
    pub addr: SocketAddr,
    /// The LMTP unix socket.
    pub socket: PathBuf,
    /// The configuration file (for `doveadm -c`).
    pub config: PathBuf,
    child: Child,
}

impl Dovecot {
    /// Start Dovecot knowing only `users` (full addresses, e.g. `alice@example.com`).
    pub fn start(users: &[&str]) -> Dovecot {
        assert!(
            Path::new(DOVECOT).exists(),
            "{DOVECOT} is needed (Debian: apt-get install dovecot-lmtpd)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let (uid, user, gid, group) = current_user();
        // Mail processes run as this uid/gid; Dovecot refuses uid 0.
        let (mail_uid, mail_gid) = if uid == 0 { (65534, 65534) } else { (uid, gid) };
        let mail = root.join("mail");
        let run = root.join("run");
        for d in [&mail, &run] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        if uid == 0 {
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))
                .expect("chmod temp dir");
            std::fs::set_permissions(&mail, std::fs::Permissions::from_mode(0o777))
                .expect("chmod mail dir");
        }
        let users_file = root.join("users");
        let mut passwd = String::new();
        for u in users {
            passwd.push_str(&format!(
                "{u}::{mail_uid}:{mail_gid}::{}::\n",
                mail.display()
            ));
        }
        std::fs::write(&users_file, passwd).expect("write users");
        let socket = run.join("lmtp");
        let config = root.join("dovecot.conf");
        let log = root.join("dovecot.log");

        let mut last = String::new();
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let conf = format!(
                r#"base_dir = {run}
state_dir = {run}
instance_name = splitmx-test-{port}
log_path = {log}
protocols = lmtp
ssl = no
listen = 127.0.0.1
default_login_user = {user}
default_internal_user = {user}
default_internal_group = {group}
first_valid_uid = {mail_uid}
first_valid_gid = {mail_gid}
mail_location = maildir:{mail}/%d/%n
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = passwd-file
  args = {users}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  unix_listener lmtp {{
    mode = 0666
  }}
}}
"#,
                run = run.display(),
                port = addr.port(),
                log = log.display(),
                mail = mail.display(),
                users = users_file.display(),
            );
            std::fs::write(&config, conf).expect("write dovecot.conf");
            let mut child = Command::new(DOVECOT)
                .arg("-F")
                .arg("-c")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run dovecot");
            if greets(addr, Duration::from_secs(15)) && wait_for_path(&socket) {
                return Dovecot {
                    dir,
                    addr,
                    socket,
                    config,
                    child,
                };
            }
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait for dovecot");
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("dovecot did not start: {last}");
    }

    /// The messages delivered to `address` (Maildir `new/` and `cur/`), oldest first.
    pub fn messages(&self, address: &str) -> Vec<Vec<u8>> {
        let (user, domain) = address.split_once('@').expect("user@domain");
        let maildir = self.dir.path().join("mail").join(domain).join(user);
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = ["new", "cur"]
            .iter()
            .flat_map(|sub| std::fs::read_dir(maildir.join(sub)).into_iter().flatten())
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|(_, f)| std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
            .collect()
    }

    /// Dovecot's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_path(path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Split a delivered message into the fields Dovecot puts in front (Return-Path,
/// Delivered-To for a single recipient, and one Received with its continuation lines) and the message as
/// received. Panics when they are not there.
pub fn split_added_fields(stored: &[u8]) -> (String, &[u8]) {
    let mut rest = stored;
    let mut added = String::new();
    let mut take = |rest: &mut &[u8]| {
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .expect("a header line");
        added.push_str(&String::from_utf8_lossy(&rest[..=nl]));
        *rest = &rest[nl + 1..];
    };
    for field in [&b"Return-Path: "[..], b"Delivered-To: ", b"Received: "] {
        // Delivered-To is left out when one message goes to several recipients.
        if field == b"Delivered-To: " && !rest.starts_with(field) {
            continue;
        }
        assert!(
            rest.starts_with(field),
            "expected {:?} next in {:?}",
            String::from_utf8_lossy(field),
            String::from_utf8_lossy(&rest[..rest.len().min(200)])
        );
        take(&mut rest);
    }
    while rest.starts_with(b"\t") || rest.starts_with(b" ") {
        take(&mut rest);
    }
    (added, rest)
}
