//! Real peers for delivery tests, each on a free 127.0.0.1 port and stopped on drop:
//! Postfix's `smtp-sink` ([`sink`]), a scripted SMTP/LMTP server in this process
//! ([`scripted`]), Dovecot LMTP ([`dovecot`]), and certificates for STARTTLS ([`pki`]).
//!
//! A test file uses them with `mod peers;`. A peer that cannot be started fails the
//! test: nothing here skips.
#![allow(dead_code)]

pub mod dns;
pub mod dovecot;
pub mod pki;
pub mod scripted;
pub mod sink;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A free port on 127.0.0.1 (bound, then released for the peer to take).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Whether something at `addr` sends a 220 greeting within `within`.
pub fn greets(addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut line = String::new();
            if BufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with("220") {
                let _ = std::io::Write::write_all(&mut &s, b"QUIT\r\n");
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    false
}

/// What a receiver that stores LF line ends (smtp-sink, Dovecot) keeps of `body`: CRLF
/// becomes LF, and a body not ending in a line end gets the one the client adds.
pub fn as_stored_with_lf(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'\r' && body.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(body[i]);
        i += 1;
    }
    if !body.is_empty() && !body.ends_with(b"\n") {
        out.push(b'\n');
    }
    out
}

/// What smtp-sink stores of `body`. It ends lines at CRLF only, so the dot the client
/// adds before a dot that follows a bare LF (to keep a lenient receiver from ending the
/// data there) stays; and it writes LF line ends.
pub fn as_stored_by_smtp_sink(body: &[u8]) -> Vec<u8> {
    let mut sent = Vec::with_capacity(body.len());
    for (i, &b) in body.iter().enumerate() {
        let after_bare_lf = i > 0 && body[i - 1] == b'\n' && (i < 2 || body[i - 2] != b'\r');
        if b == b'.' && after_bare_lf {
            sent.push(b'.');
        }
        sent.push(b);
    }
    as_stored_with_lf(&sent)
}

/// The current user's numeric id and name, from id(1).
pub fn current_user() -> (u32, String, u32, String) {
    let id = |flag: &str| {
        let out = std::process::Command::new("id")
            .arg(flag)
            .output()
            .expect("id(1) must be installed");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    (
        id("-u").parse().expect("numeric uid"),
        id("-un"),
        id("-g").parse().expect("numeric gid"),
        id("-gn"),
    )
}
