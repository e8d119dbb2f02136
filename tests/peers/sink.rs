//! Postfix's `smtp-sink` as a real SMTP (or LMTP, `-L`) peer. With a dump directory it
//! writes each transaction to a file: a few `X-` lines (client, HELO, MAIL and RCPT
//! arguments), a three-line `Received:` field, the message as received with LF line ends,
//! and an empty line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{current_user, free_port, greets};

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

/// A running smtp-sink, killed on drop.
pub struct Sink {
    /// Holds the dump directory.
    pub dir: tempfile::TempDir,
    /// Where it listens.
    pub addr: SocketAddr,
    dumps: Option<PathBuf>,
    child: Child,
}

/// One captured transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    /// The HELO/EHLO argument.
    pub helo: String,
    /// The MAIL FROM arguments (`<sender> PARAM=...`).
    pub mail_args: String,
    /// The RCPT TO arguments, in order.
    pub rcpt_args: Vec<String>,
    /// The message as stored (LF line ends).
    pub data: Vec<u8>,
}

impl Sink {
    /// smtp-sink writing every transaction to a file; `args` are extra options (`-p`
    /// no PIPELINING, `-L` LMTP, ...).
    pub fn dumping(args: &[&str]) -> Sink {
        Sink::start(args, true)
    }

    /// smtp-sink throwing every message away (for throughput).
    pub fn discarding(args: &[&str]) -> Sink {
        Sink::start(args, false)
    }

    /// smtp-sink dumping every transaction, on a port chosen beforehand (a next hop that
    /// comes up after the gateway tried it).
    pub fn dumping_on(port: u16, args: &[&str]) -> Sink {
        Sink::start_on(Some(port), args, true)
    }

    /// Transactions dumped so far (complete or not).
    pub fn count(&self) -> usize {
        self.dumps
            .as_ref()
            .and_then(|d| std::fs::read_dir(d).ok())
            .map_or(0, |rd| rd.count())
    }

    fn start(args: &[&str], dump: bool) -> Sink {
        Sink::start_on(None, args, dump)
    }

    fn start_on(port: Option<u16>, args: &[&str], dump: bool) -> Sink {
        assert!(
            Path::new(SMTP_SINK).exists(),
            "{SMTP_SINK} is needed (Debian: apt-get install postfix)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let dumps = dump.then(|| dir.path().join("dumps"));
        let mut last = String::new();
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], port.unwrap_or_else(free_port)));
            let mut cmd = Command::new(SMTP_SINK);
            if current_user().0 == 0 {
                cmd.args(["-u", "root"]);
            }
            if let Some(d) = &dumps {
                cmd.arg("-d").arg(format!("{}/msg.", d.display()));
            }
            cmd.args(args)
                .arg(addr.to_string())
                .arg("100")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("run smtp-sink");
            if greets(addr, Duration::from_secs(10)) {
                return Sink {
                    dir,
                    addr,
                    dumps,
                    child,
                };
            }
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait for smtp-sink");
            last = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        panic!("smtp-sink did not start: {last}");
    }

    /// Wait until `n` transactions are dumped, and return them (in no particular order).
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Dump> {
        let dir = self.dumps.as_ref().expect("started with a dump directory");
        let deadline = Instant::now() + within;
        let read = || -> Vec<Dump> {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            files.sort();
            files
                .iter()
                .filter_map(|f| std::fs::read(f).ok())
                .filter_map(|bytes| parse_dump(&bytes))
                .collect()
        };
        loop {
            let dumps = read();
            // Files are written as the message arrives: take them once they stop changing.
            if dumps.len() >= n {
                std::thread::sleep(Duration::from_millis(50));
                if read() == dumps {
                    return dumps;
                }
                continue;
            }
            assert!(
                Instant::now() < deadline,
                "smtp-sink dumped {} of {n} messages within {within:?}",
                dumps.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Split a dump file into its `X-` lines and the message; `None` while incomplete.
fn parse_dump(bytes: &[u8]) -> Option<Dump> {
    let mut dump = Dump {
        helo: String::new(),
        mail_args: String::new(),
        rcpt_args: Vec::new(),
        data: Vec::new(),
    };
    let mut rest = bytes;
    let mut received_lines = 0;
    while received_lines < 3 {
        let nl = rest.iter().position(|&b| b == b'\n')?;
        let line = String::from_utf8_lossy(&rest[..nl]).into_owned();
        rest = &rest[nl + 1..];
        if received_lines > 0 || line.starts_with("Received: ") {
            received_lines += 1;
        } else if let Some(v) = line.strip_prefix("X-Helo-Args: ") {
            dump.helo = v.to_string();
        } else if let Some(v) = line.strip_prefix("X-Mail-Args: ") {
            dump.mail_args = v.to_string();
        } else if let Some(v) = line.strip_prefix("X-Rcpt-Args: ") {
            dump.rcpt_args.push(v.to_string());
        }
    }
    dump.data = rest.strip_suffix(b"\n")?.to_vec();
    Some(dump)
}
