//! A throwaway OpenLDAP server for the tests and the benchmark.
//!
//! A static `slapd.conf` in a temporary directory (schemas core, cosine, inetorgperson
//! and misc for `inetLocalMailRecipient`; the mdb backend loaded as a module), entries
//! loaded offline with `slapadd`, then `slapd` in the foreground on a free 127.0.0.1 port
//! (and an `ldaps://` one when TLS files are given). Ready once it answers an anonymous
//! bind. Killed when dropped. A machine without slapd fails the test: nothing is skipped.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The suffix of the test directory.
pub const SUFFIX: &str = "dc=example,dc=com";
/// The root DN (it may bind with [`ADMIN_PASSWORD`]).
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=com";
/// The root DN's password.
pub const ADMIN_PASSWORD: &str = "secret";

/// Certificate files for the `ldaps://` listener and StartTLS.
pub struct TlsFiles {
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA that signed it (PEM).
    pub ca: PathBuf,
}

/// A running slapd.
pub struct Slapd {
    dir: tempfile::TempDir,
    port: u16,
    tls_port: Option<u16>,
    child: Option<Child>,
}

impl Slapd {
    /// Start a slapd holding `ldif`.
    pub fn start(ldif: &str) -> Slapd {
        Slapd::start_with(ldif, None)
    }

    /// Start a slapd holding `ldif`, with TLS (StartTLS and `ldaps://`) when `tls` is given.
    pub fn start_with(ldif: &str, tls: Option<&TlsFiles>) -> Slapd {
        let dir = tempfile::Builder::new()
            .prefix("splitmx-slapd-")
            .tempdir()
            .unwrap_or_else(|e| panic!("slapd: cannot make a temporary directory: {e}"));
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap_or_else(|e| panic!("slapd: {}: {e}", db.display()));
        let conf = dir.path().join("slapd.conf");
        write(&conf, &config(dir.path(), tls));
        let data = dir.path().join("data.ldif");
        write(&data, ldif);
        let out = Command::new(binary("slapadd"))
            .arg("-q")
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&data)
            .output()
            .unwrap_or_else(|e| {
                panic!("slapd: cannot run slapadd ({e}); install slapd and ldap-utils")
            });
        assert!(
            out.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut slapd = Slapd {
            dir,
            port: 0,
            tls_port: None,
            child: None,
        };
        // Another process may take the free port between our probe and slapd's bind:
        // try a few ports.
        let mut last = String::new();
        for _ in 0..5 {
            slapd.port = free_port();
            slapd.tls_port = tls.map(|_| free_port());
            match slapd.launch() {
                Ok(()) => return slapd,
                Err(e) => last = e,
            }
        }
        panic!("slapd did not start: {last}");
    }

    /// `ldap://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:PORT` (only when started with TLS).
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port.unwrap_or(0))
    }

    /// The plain port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kill slapd (as a crash would) and wait for it to go.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start slapd again, on the same ports with the same data.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("slapd did not restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Freeze slapd (SIGSTOP): connections are accepted by the kernel, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
        // kill(2) returns before every thread has stopped; a search answered in that
        // window made the frozen-directory test see a 250 (seen once in a full run).
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return;
        };
        let stopped = || {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return false;
            };
            tasks.flatten().all(|t| {
                std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                    // The state follows the parenthesised command name.
                    stat.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with(['T', 't']))
                })
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !stopped() {
            assert!(
                std::time::Instant::now() < deadline,
                "slapd {pid} did not stop"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Thaw slapd (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self
            .child
            .as_ref()
            .map(Child::id)
            .unwrap_or_else(|| panic!("slapd is not running"));
        let status = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .unwrap_or_else(|e| panic!("kill {sig} {pid}: {e}"));
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    fn launch(&mut self) -> Result<(), String> {
        let mut urls = format!("ldap://127.0.0.1:{}/", self.port);
        if let Some(p) = self.tls_port {
            urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
        }
        let log_path = self.dir.path().join("slapd.log");
        let log = File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(binary("slapd"))
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(&urls)
            .arg("-d")
            .arg("0")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot run slapd ({e}); install slapd and ldap-utils"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("slapd exited ({status}) on {urls}: {log}"));
            }
            if answers_bind(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!("slapd did not answer on {urls} within 5 s"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config(dir: &Path, tls: Option<&TlsFiles>) -> String {
    let d = dir.display();
    let schema = "/etc/ldap/schema";
    let mut conf = format!(
        "include   {schema}/core.schema
include   {schema}/cosine.schema
include   {schema}/inetorgperson.schema
include   {schema}/misc.schema
pidfile   {d}/slapd.pid
argsfile  {d}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
loglevel  none
"
    );
    if let Some(t) = tls {
        conf.push_str(&format!(
            "TLSCACertificateFile {}\nTLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
            t.ca.display(),
            t.cert.display(),
            t.key.display()
        ));
    }
    conf.push_str(&format!(
        "database  mdb
maxsize   16777216
suffix    \"{SUFFIX}\"
rootdn    \"{ADMIN_DN}\"
rootpw    {ADMIN_PASSWORD}
directory {d}/db
index     objectClass eq
index     mail,mailLocalAddress eq
access to * by * read
"
    ));
    conf
}

fn write(path: &Path, text: &str) {
    File::create(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Find a program on PATH or in the sbin directories (slapd lives in /usr/sbin).
fn binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: install slapd and ldap-utils"))
}

/// True when an LDAP server on `port` answers an anonymous bind.
fn answers_bind(port: u16) -> bool {
    // BindRequest: messageID 1, version 3, name "", simple "".
    const BIND: [u8; 14] = [
        0x30, 0x0c, 0x02, 0x01, 0x01, 0x60, 0x07, 0x02, 0x01, 0x03, 0x04, 0x00, 0x80, 0x00,
    ];
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 64];
    s.write_all(&BIND).is_ok() && matches!(s.read(&mut reply), Ok(n) if n >= 2 && reply[0] == 0x30)
}

/// A TCP server that accepts connections and never answers: a hung directory.
pub struct BlackHole {
    port: u16,
    _thread: std::thread::JoinHandle<()>,
}

impl BlackHole {
    /// Listen on a free 127.0.0.1 port.
    pub fn start() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("black hole: cannot listen: {e}"));
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("black hole: {e}"));
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
            }
        });
        BlackHole {
            port,
            _thread: thread,
        }
    }

    /// `ldap://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }
}
