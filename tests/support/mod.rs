//! Shared harness for the SMTP integration tests (`tests/smtp.rs`, `tests/crash.rs`): a
//! gateway process started by the test (`splitmx serve --config FILE` in a temporary
//! directory, on a free 127.0.0.1 port), an SMTP client over a raw socket (plain or TLS),
//! and the spool read back through `splitmx::spool`.
//!
//! Every gateway is a real process: SIGKILLed when its [`Gateway`] is dropped, its
//! stderr captured (and printed when a test fails, to explain the failure).

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use splitmx::spool::{self, QueueId, StoredMessage};

/// The gateway's host name in every test.
pub const HOSTNAME: &str = "mx.test.example";

/// Routes used by the default tables.
pub const ROUTES: &str = r#"routes:
  route_a: "smtp:[192.0.2.1]:25"
  route_b: "smtp:[192.0.2.2]:25"
  local:
    maildir: "{domain}/{user}"
  moving:
    defer: "450 4.2.1 Mailbox is being moved, try again later"
  closed:
    reject: "550 5.1.1 This mailbox was closed"
"#;

/// example.com: a default route (every user routes), and a few listed recipients.
pub const EXAMPLE_COM: &str = r#"domains: [example.com]
default: local
recipients:
  alice@example.com: route_a
  dave@example.com: moving
  eve@example.com: closed
"#;

/// example.org: served, no default (unknown users get 550 5.1.1).
pub const EXAMPLE_ORG: &str = r#"domains: [example.org]
recipients:
  known@example.org: route_b
"#;

/// How to start a gateway.
#[derive(Clone, Debug)]
pub struct Options {
    /// Lines added under `smtp:` in the config (e.g. `max_message_size: 100000`).
    pub smtp: Vec<String>,
    /// Files of the routing directory: (name, content).
    pub tables: Vec<(String, String)>,
    /// Make a self-signed certificate and offer STARTTLS.
    pub tls: bool,
    /// Extra environment for the process.
    pub env: Vec<(String, String)>,
    /// Lines under `delivery:`. The front-end tests keep delivery off (`enabled: false`)
    /// so what they accepted stays in the spool to be inspected; delivery tests replace
    /// it with [`Options::delivery`].
    pub delivery: Vec<String>,
    /// Top-level lines appended to the config (e.g. `journal: { flush_interval: 1s }`).
    pub config: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            smtp: Vec::new(),
            tables: vec![
                ("routes.yaml".to_string(), ROUTES.to_string()),
                ("example.com.yaml".to_string(), EXAMPLE_COM.to_string()),
                ("example.org.yaml".to_string(), EXAMPLE_ORG.to_string()),
            ],
            tls: false,
            env: Vec::new(),
            delivery: vec!["enabled: false".to_string()],
            config: Vec::new(),
        }
    }
}

impl Options {
    /// Add a line under `smtp:`.
    pub fn smtp(mut self, line: &str) -> Self {
        self.smtp.push(line.to_string());
        self
    }

    /// Offer STARTTLS with a fresh self-signed certificate.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Turn delivery on, with these lines under `delivery:` (e.g. `retry_min: 1s`).
    pub fn delivery(mut self, lines: &[&str]) -> Self {
        self.delivery = lines.iter().map(ToString::to_string).collect();
        self
    }

    /// Set an environment variable for the gateway process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Append a top-level line to the config file.
    pub fn config(mut self, line: &str) -> Self {
        self.config.push(line.to_string());
        self
    }

    /// Replace (or add) a routing table file.
    pub fn table(mut self, name: &str, content: &str) -> Self {
        self.tables.retain(|(n, _)| n != name);
        self.tables.push((name.to_string(), content.to_string()));
        self
    }
}

/// A running `splitmx serve`, killed on drop.
pub struct Gateway {
    /// The temporary directory holding config, routing/, spool/ and the certificate.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// The spool directory.
    pub spool: PathBuf,
    /// The routing directory.
    pub routing: PathBuf,
    /// Where the gateway listens.
    pub addr: SocketAddr,
    /// The certificate (DER) when STARTTLS is offered.
    pub cert_der: Option<Vec<u8>>,
    options: Options,
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

/// A request to a gateway's metrics endpoint (the whole request, e.g. `GET path`): (status line, body).
pub fn get(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// Every sample of a scrape: series (name and labels as printed) → value.
pub fn scrape(addr: SocketAddr) -> std::collections::HashMap<String, f64> {
    let (status, body) = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Scrapes until `done` holds (delivery runs in the background), at most 20 s.
pub fn scrape_until(
    addr: SocketAddr,
    done: impl Fn(&std::collections::HashMap<String, f64>) -> bool,
) -> std::collections::HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = scrape(addr);
        if done(&m) || Instant::now() > deadline {
            return m;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A free port on 127.0.0.1 (bound, then released for the gateway to take).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl Gateway {
    /// Start a gateway with the default tables and limits.
    pub fn start() -> Gateway {
        Gateway::with(Options::default())
    }

    /// Start a gateway with these options.
    pub fn with(options: Options) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let routing = dir.path().join("routing");
        let spool = dir.path().join("spool");
        std::fs::create_dir_all(&routing).expect("mkdir routing");
        for (name, content) in &options.tables {
            std::fs::write(routing.join(name), content).expect("write table");
        }
        let cert_der = options.tls.then(|| {
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
                .expect("self-signed certificate");
            std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).expect("write cert");
            std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem())
                .expect("write key");
            ck.cert.der().to_vec()
        });
        let config = dir.path().join("splitmx.yaml");
        let mut gw = Gateway {
            config,
            spool,
            routing,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            cert_der,
            options,
            child: None,
            stderr: Arc::new(Mutex::new(Vec::new())),
            dir,
        };
        // Another process may take the port between our probe and the gateway's bind:
        // try a few ports.
        let mut last = String::new();
        for _ in 0..5 {
            gw.addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            gw.write_config();
            match gw.spawn() {
                Ok(()) => return gw,
                Err(e) => last = e,
            }
        }
        panic!("the gateway did not start: {last}");
    }

    fn write_config(&self) {
        let mut text = format!(
            "hostname: {HOSTNAME}\nlisten: [\"{}\"]\nrouting:\n  dir: routing\nloops:\n  max_hops: 50\n  max_self_passes: 2\nspool: spool\n",
            self.addr
        );
        let mut smtp = self.options.smtp.clone();
        if self.options.tls {
            smtp.push("tls_cert: cert.pem".to_string());
            smtp.push("tls_key: key.pem".to_string());
        }
        if !smtp.is_empty() {
            text.push_str("smtp:\n");
            for line in &smtp {
                text.push_str(&format!("  {line}\n"));
            }
        }
        if !self.options.delivery.is_empty() {
            text.push_str("delivery:\n");
            for line in &self.options.delivery {
                text.push_str(&format!("  {line}\n"));
            }
        }
        for line in &self.options.config {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&self.config, text).expect("write config");
    }

    /// Start the process on the configured port and wait for its 220 greeting.
    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_splitmx"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.options.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run splitmx: {e}"))?;
        let mut err = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&self.stderr);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match err.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => sink
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&chunk[..n]),
                }
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                std::thread::sleep(Duration::from_millis(50));
                return Err(format!(
                    "exited with {status} before accepting: {}",
                    self.stderr_text()
                ));
            }
            if let Ok(s) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) {
                let mut c = Client::new(s);
                if let Ok(r) = c.reply() {
                    assert_eq!(r.code, 220, "greeting: {r}");
                    // Leave politely, so the connection's slot is free again at once.
                    let _ = c.send(b"QUIT\r\n");
                    let _ = c.reply();
                    let _ = c.wait_closed(Duration::from_secs(2));
                    std::thread::sleep(Duration::from_millis(20));
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "no 220 greeting within 20 s: {}",
            self.stderr_text()
        ))
    }

    /// Kill the process with SIGKILL (if running) and start it again on the same port,
    /// config and spool.
    pub fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        for _ in 0..50 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the gateway did not restart: {last}");
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("gateway running").id()
    }

    /// Send a signal (`TERM`, `HUP`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill(1) must be installed");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Wait for the process to exit on its own.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            let child = self.child.as_mut().expect("gateway running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not exit within {within:?}: {}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// The log once it contains `needle` (`serve` writes its log lines up to 10 ms after
    /// the event); `None` if it does not within `within`.
    pub fn log_with(&self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let text = self.stderr_text();
            if text.contains(needle) {
                return Some(text);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A `key: N kB` figure from /proc/PID/status (e.g. `VmHWM`, `VmRSS`), in bytes.
    pub fn proc_status(&self, key: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in /proc status"));
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad line {line}"));
        kb * 1024
    }

    /// Connect a new SMTP client and read the greeting (asserted to be 220).
    pub fn connect(&self) -> Client {
        let mut c = self.connect_raw();
        let r = c.reply().expect("greeting");
        assert_eq!(r.code, 220, "greeting: {r}");
        c
    }

    /// Connect without reading anything.
    pub fn connect_raw(&self) -> Client {
        let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10))
            .expect("connect to the gateway");
        Client::new(s)
    }

    /// A client that has been greeted and has said EHLO.
    pub fn session(&self) -> Client {
        let mut c = self.connect();
        c.ehlo("client.example");
        c
    }

    /// Every message in the spool, read in full.
    pub fn spooled(&self) -> Vec<StoredMessage> {
        spooled(&self.spool)
    }

    /// One message by the id the client saw.
    pub fn spooled_message(&self, id: &str) -> StoredMessage {
        read(&self.spool, id)
    }

    /// Rewrite a routing table file (atomically, as a git checkout would).
    pub fn write_table(&self, name: &str, content: &str) {
        let tmp = self.routing.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).expect("write table");
        std::fs::rename(&tmp, self.routing.join(name)).expect("rename table");
    }

    /// Replace the lines under `delivery:` and rewrite the config (takes effect at the
    /// next [`Gateway::restart`]).
    pub fn reconfigure_delivery(&mut self, lines: &[&str]) {
        self.options.delivery = lines.iter().map(ToString::to_string).collect();
        self.write_config();
    }

    /// Run `splitmx ARGS... --config FILE`; returns the status, stdout and stderr.
    pub fn run_cli(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_splitmx"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .output()
            .expect("run splitmx");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Run `splitmx SUBCOMMAND --config FILE`; returns the status and stdout + stderr.
    pub fn cli(&self, sub: &str) -> (ExitStatus, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_splitmx"))
            .arg(sub)
            .arg("--config")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .output()
            .expect("run splitmx");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status, text)
    }

    /// A rustls client configuration that trusts this gateway's certificate (for the name
    /// `localhost`).
    pub fn tls_client_config(&self) -> Arc<rustls::ClientConfig> {
        let der = self.cert_der.clone().expect("gateway started with .tls()");
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from(der))
            .expect("add the test certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let text = self.stderr_text();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("--- gateway stderr (last {} lines) ---", tail.len());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Every live message in a spool directory, read in full.
pub fn spooled(dir: &Path) -> Vec<StoredMessage> {
    let infos = spool::scan(dir).expect("scan the spool");
    infos
        .iter()
        .map(|i| spool::read_message(dir, &i.id).unwrap_or_else(|e| panic!("read {}: {e}", i.id)))
        .collect()
}

/// Open a spool whose gateway is stopped (it takes the writer lock), with a runtime to
/// drive it: reads go through its index instead of a recovery per message.
pub fn open_spool(dir: &Path) -> (tokio::runtime::Runtime, spool::Spool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let s = rt
        .block_on(spool::Spool::open(dir, spool::SpoolOptions::default()))
        .expect("open the spool");
    (rt, s)
}

/// One spooled message by its queue id as the client saw it.
pub fn read(dir: &Path, id: &str) -> StoredMessage {
    let qid: QueueId = id
        .parse()
        .unwrap_or_else(|_| panic!("'{id}' is not a queue id"));
    spool::read_message(dir, &qid).unwrap_or_else(|e| panic!("message {id} not in the spool: {e}"))
}

/// Split a spooled message into our `Received:` field (the first field, with its folded
/// lines) and the rest, which must be the bytes the client sent.
pub fn split_stamp(message: &[u8]) -> (String, &[u8]) {
    assert!(
        message.starts_with(b"Received: "),
        "the spooled message does not start with our Received field: {:?}",
        String::from_utf8_lossy(&message[..message.len().min(200)])
    );
    let mut end = 0;
    loop {
        end += message[end..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("the Received field ends with CRLF")
            + 2;
        match message.get(end) {
            Some(b' ') | Some(b'\t') => continue,
            _ => break,
        }
    }
    (
        String::from_utf8_lossy(&message[..end]).into_owned(),
        &message[end..],
    )
}

/// One SMTP reply (possibly multi-line).
#[derive(Debug, Clone)]
pub struct Reply {
    /// The reply code.
    pub code: u16,
    /// Each line's text after the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    /// The enhanced status code (first word of the last line), or "".
    pub fn enhanced(&self) -> &str {
        self.lines
            .last()
            .and_then(|l| l.split_whitespace().next())
            .filter(|w| w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('.'))
            .unwrap_or("")
    }

    /// The queue id of a `250 ... queued as ID` reply.
    pub fn queue_id(&self) -> String {
        let last = self.lines.last().expect("a reply has a line");
        let id = last
            .split("queued as ")
            .nth(1)
            .unwrap_or_else(|| panic!("no 'queued as' in {self}"));
        id.trim().to_string()
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" | "))
    }
}

/// An SMTP client over any byte stream (TCP, or TLS after STARTTLS).
pub struct Client<S: Read + Write = TcpStream> {
    stream: S,
    buf: Vec<u8>,
}

impl Client<TcpStream> {
    /// Wrap a TCP stream, with 30 s read and write timeouts.
    pub fn new(stream: TcpStream) -> Self {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream
            .set_write_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let _ = stream.set_nodelay(true);
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// STARTTLS is done (220 read): hand the socket to rustls and complete the handshake.
    /// Panics if the server sent anything after its 220 in plaintext.
    pub fn into_tls(
        self,
        config: Arc<rustls::ClientConfig>,
    ) -> Client<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
        assert!(
            self.buf.is_empty(),
            "plaintext from the server after its 220 to STARTTLS: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let conn = rustls::ClientConnection::new(config, name).expect("TLS client");
        let mut tls = rustls::StreamOwned::new(conn, self.stream);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
        }
        Client {
            stream: tls,
            buf: Vec::new(),
        }
    }
}

impl<S: Read + Write + AsTcp> Client<S> {
    /// The socket.
    pub fn tcp(&self) -> &TcpStream {
        self.stream.tcp()
    }

    /// Write bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Read one line (without CRLF).
    pub fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(p) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=p).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            let mut chunk = [0u8; 16384];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed (pending {:?})",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Read one reply (all its lines).
    pub fn reply(&mut self) -> io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line()?;
            let text = String::from_utf8_lossy(&line).into_owned();
            let code: u16 = text.get(..3).and_then(|c| c.parse().ok()).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not a reply line: {text:?}"),
                )
            })?;
            let sep = text.as_bytes().get(3).copied().unwrap_or(b' ');
            lines.push(text.get(4..).unwrap_or("").to_string());
            if sep != b'-' {
                return Ok(Reply { code, lines });
            }
        }
    }

    /// Read `n` replies.
    pub fn replies(&mut self, n: usize) -> Vec<Reply> {
        (0..n)
            .map(|i| {
                self.reply()
                    .unwrap_or_else(|e| panic!("reply {} of {n}: {e}", i + 1))
            })
            .collect()
    }

    /// Send one command line (CRLF added) and read its reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("send {line:?}: {e}"));
        self.reply()
            .unwrap_or_else(|e| panic!("reply to {line:?}: {e}"))
    }

    /// Send a command and assert the reply code.
    pub fn expect(&mut self, line: &str, code: u16) -> Reply {
        let r = self.cmd(line);
        assert_eq!(r.code, code, "{line:?} -> {r}");
        r
    }

    /// EHLO, asserted 250.
    pub fn ehlo(&mut self, name: &str) -> Reply {
        self.expect(&format!("EHLO {name}"), 250)
    }

    /// MAIL, RCPTs, DATA and the message (dot-stuffed here); returns the final reply.
    /// Every RCPT must be accepted.
    pub fn mail(&mut self, from: &str, to: &[&str], body: &[u8]) -> Reply {
        self.expect(&format!("MAIL FROM:<{from}>"), 250);
        for rcpt in to {
            self.expect(&format!("RCPT TO:<{rcpt}>"), 250);
        }
        self.expect("DATA", 354);
        self.send(&data_bytes(body)).expect("send the message");
        self.reply().expect("reply after DATA")
    }

    /// True when no byte arrives within `wait` and the connection is still open.
    pub fn nothing_pending(&mut self, wait: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.stream
            .tcp()
            .set_read_timeout(Some(wait))
            .expect("timeout");
        let mut b = [0u8; 256];
        let r = self.stream.read(&mut b);
        self.stream
            .tcp()
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        match r {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&b[..n]);
                false
            }
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        }
    }

    /// Read until the server closes the connection; true if it did within `within`
    /// (a reset counts as closed). Bytes read meanwhile are kept.
    pub fn wait_closed(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let closed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            self.stream
                .tcp()
                .set_read_timeout(Some(left))
                .expect("timeout");
            let mut b = [0u8; 4096];
            match self.stream.read(&mut b) {
                Ok(0) => break true,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break false;
                }
                Err(_) => break true,
            }
        };
        let _ = self
            .stream
            .tcp()
            .set_read_timeout(Some(Duration::from_secs(30)));
        closed
    }
}

/// Access to the TCP socket under a stream.
pub trait AsTcp {
    /// The socket.
    fn tcp(&self) -> &TcpStream;
}

impl AsTcp for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl AsTcp for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// The DATA bytes for a message: lines starting with '.' get another dot, and the end
/// marker is added (after a CRLF if the message does not end with one).
pub fn data_bytes(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 64 + 5);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// A small deterministic pseudo-random generator (xorshift64*), for test data and
/// random kill moments without a crate.
pub struct Rng(u64);

impl Rng {
    /// Seeded; 0 is replaced.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// Seeded from the clock.
    pub fn from_time() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng::new(nanos)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

/// Find a program on PATH; a test that needs it fails (never skips) when it is missing.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is required by this test and is not installed (see .ci/run)")
        })
}
