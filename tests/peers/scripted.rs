//! A scripted SMTP/LMTP server inside the test process (tokio): it answers what the
//! test chose (per-recipient RCPT replies, a MAIL or final-dot failure, a greeting, no
//! PIPELINING, STARTTLS, a dropped or stalled connection, a malformed reply) and records
//! every command line and message it receives, so tests can assert exact commands.
//!
//! Messages are received like Postfix and Dovecot do: lines end at LF, the data ends
//! at a line that is only a dot, one leading dot is removed from other lines.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// What the server answers.
#[derive(Clone)]
pub struct Script {
    /// The greeting line(s).
    pub greeting: String,
    /// How long to wait before the greeting (a slow peer).
    pub greeting_delay: Duration,
    /// Speak LMTP: one final reply per accepted recipient.
    pub lmtp: bool,
    /// EHLO keywords (STARTTLS is added when `starttls` is set).
    pub extensions: Vec<String>,
    /// Replaces the whole EHLO reply (e.g. `502 5.5.1 no EHLO` to force HELO).
    pub ehlo_reply: Option<String>,
    /// Reply to MAIL.
    pub mail_reply: String,
    /// Reply to RCPT per address (lower case); others get `250 2.1.5 Ok`.
    pub rcpt_replies: HashMap<String, String>,
    /// How long to wait before answering RCPT, per address (lower case): a slow
    /// transaction, holding its connection busy.
    pub rcpt_delays: HashMap<String, Duration>,
    /// Reply to DATA when a recipient was accepted.
    pub data_reply: String,
    /// Reply to the final dot (SMTP).
    pub final_reply: String,
    /// LMTP final replies per address; others get `250 2.0.0 <addr> Saved`.
    pub lmtp_replies: HashMap<String, String>,
    /// Offer STARTTLS with this acceptor.
    pub starttls: Option<TlsAcceptor>,
    /// Reply to STARTTLS.
    pub starttls_reply: String,
    /// After a positive STARTTLS reply, send plain text instead of a TLS handshake.
    pub break_tls: bool,
    /// Close the connection without replying after this command (`DATA`, `RCPT`, or
    /// `.` for the end of the message).
    pub close_after: Option<String>,
    /// Stop replying (but keep the connection open) after this command.
    pub stall_after: Option<String>,
    /// Answer 354 to DATA even when no recipient was accepted (a broken server).
    pub accept_data_without_recipients: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            greeting: "220 scripted.test ESMTP".to_string(),
            greeting_delay: Duration::ZERO,
            lmtp: false,
            extensions: [
                "PIPELINING",
                "8BITMIME",
                "SIZE 10000000",
                "DSN",
                "ENHANCEDSTATUSCODES",
            ]
            .map(String::from)
            .to_vec(),
            ehlo_reply: None,
            mail_reply: "250 2.1.0 Ok".to_string(),
            rcpt_replies: HashMap::new(),
            rcpt_delays: HashMap::new(),
            data_reply: "354 End data with <CR><LF>.<CR><LF>".to_string(),
            final_reply: "250 2.0.0 Ok: queued as SCRIPTED1".to_string(),
            lmtp_replies: HashMap::new(),
            starttls: None,
            starttls_reply: "220 2.0.0 Ready to start TLS".to_string(),
            break_tls: false,
            close_after: None,
            stall_after: None,
            accept_data_without_recipients: false,
        }
    }
}

impl Script {
    /// Answer RCPT for `address` with `reply`.
    pub fn rcpt(mut self, address: &str, reply: &str) -> Script {
        self.rcpt_replies
            .insert(address.to_ascii_lowercase(), reply.to_string());
        self
    }

    /// Wait `delay` before answering RCPT for `address`.
    pub fn slow_rcpt(mut self, address: &str, delay: Duration) -> Script {
        self.rcpt_delays.insert(address.to_ascii_lowercase(), delay);
        self
    }

    /// Answer the end of data for `address` with `reply` (LMTP).
    pub fn lmtp_final(mut self, address: &str, reply: &str) -> Script {
        self.lmtp_replies
            .insert(address.to_ascii_lowercase(), reply.to_string());
        self
    }

    /// Do not announce `keyword`.
    pub fn without(mut self, keyword: &str) -> Script {
        self.extensions.retain(|e| {
            !e.split(' ')
                .next()
                .unwrap_or("")
                .eq_ignore_ascii_case(keyword)
        });
        self
    }

    /// Announce `keyword` (with any arguments).
    pub fn with(mut self, keyword: &str) -> Script {
        self.extensions.push(keyword.to_string());
        self
    }

    fn pipelining(&self) -> bool {
        self.extensions
            .iter()
            .any(|e| e.eq_ignore_ascii_case("PIPELINING"))
    }
}

/// What the server received.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// Every command line without its line end, in order over all connections; `<TLS>`
    /// marks a completed STARTTLS handshake, `<connect>` a new connection.
    pub commands: Vec<String>,
    /// Each message as stored (unstuffed, line ends as received).
    pub messages: Vec<Vec<u8>>,
    /// Commands that arrived before the reply to the previous one was sent, on a server
    /// that does not offer PIPELINING.
    pub early: Vec<String>,
    /// The first command after a message when it had arrived with the message's final
    /// dot: a transaction the client sent ahead.
    pub ahead: Vec<String>,
}

/// A running scripted server; stops accepting on drop.
pub struct Scripted {
    /// Where it listens.
    pub addr: SocketAddr,
    record: Arc<Mutex<Record>>,
    task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    /// Listen on a free 127.0.0.1 port and serve `script` to every connection.
    pub async fn start(script: Script) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let record = Arc::new(Mutex::new(Record::default()));
        let script = Arc::new(script);
        let rec = Arc::clone(&record);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = Arc::clone(&script);
                let rec = Arc::clone(&rec);
                tokio::spawn(async move {
                    let _ = session(Box::new(stream), &script, &rec).await;
                });
            }
        });
        Scripted { addr, record, task }
    }

    /// A copy of what was received so far.
    pub fn record(&self) -> Record {
        self.record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The command lines received so far.
    pub fn commands(&self) -> Vec<String> {
        self.record().commands
    }

    /// The messages received so far.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        self.record().messages
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Conn = BufReader<Box<dyn Io>>;

async fn send(conn: &mut Conn, reply: &str) -> std::io::Result<()> {
    let w = conn.get_mut();
    w.write_all(reply.as_bytes()).await?;
    w.write_all(b"\r\n").await?;
    w.flush().await
}

/// Read until the peer goes away, answering nothing.
async fn stall(conn: &mut Conn) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match tokio::time::timeout(Duration::from_secs(60), conn.read_until(b'\n', &mut buf)).await
        {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

fn push(record: &Mutex<Record>, f: impl FnOnce(&mut Record)) {
    f(&mut record.lock().unwrap_or_else(|e| e.into_inner()));
}

async fn session(
    stream: Box<dyn Io>,
    script: &Script,
    record: &Mutex<Record>,
) -> std::io::Result<()> {
    let mut conn: Conn = BufReader::new(stream);
    push(record, |r| r.commands.push("<connect>".to_string()));
    tokio::time::sleep(script.greeting_delay).await;
    send(&mut conn, &script.greeting).await?;
    let mut tls = false;
    let mut in_mail = false;
    let mut accepted: Vec<String> = Vec::new();
    let mut line = Vec::new();
    let mut after_dot = false;
    loop {
        line.clear();
        if conn.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let early = !script.pipelining() && !conn.buffer().is_empty();
        let ahead = std::mem::take(&mut after_dot);
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        let verb = text.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let verb = verb.split(':').next().unwrap_or("").to_string();
        push(record, |r| {
            r.commands.push(text.clone());
            if early {
                r.early.push(text.clone());
            }
            if ahead {
                r.ahead.push(text.clone());
            }
        });
        if script.close_after.as_deref() == Some(verb.as_str()) {
            return Ok(());
        }
        if script.stall_after.as_deref() == Some(verb.as_str()) {
            stall(&mut conn).await;
            return Ok(());
        }
        match verb.as_str() {
            "EHLO" | "LHLO" => {
                let reply = match &script.ehlo_reply {
                    Some(r) => r.clone(),
                    None => {
                        let mut keywords = script.extensions.clone();
                        if script.starttls.is_some() && !tls {
                            keywords.push("STARTTLS".to_string());
                        }
                        let mut r = "250".to_string();
                        r.push(if keywords.is_empty() { ' ' } else { '-' });
                        r.push_str("scripted.test");
                        for (i, k) in keywords.iter().enumerate() {
                            let sep = if i + 1 == keywords.len() { ' ' } else { '-' };
                            r.push_str(&format!("\r\n250{sep}{k}"));
                        }
                        r
                    }
                };
                send(&mut conn, &reply).await?;
            }
            "HELO" => send(&mut conn, "250 scripted.test").await?,
            "STARTTLS" => match &script.starttls {
                Some(acceptor) if !tls => {
                    send(&mut conn, &script.starttls_reply).await?;
                    if script.starttls_reply.starts_with('2') && script.break_tls {
                        // Answer the ClientHello with plain text.
                        let mut hello = [0u8; 512];
                        let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut hello).await?;
                        send(&mut conn, "this is not a TLS handshake").await?;
                        return Ok(());
                    }
                    if script.starttls_reply.starts_with('2') {
                        let inner = conn.into_inner();
                        let stream = acceptor.accept(inner).await?;
                        conn = BufReader::new(Box::new(stream));
                        tls = true;
                        in_mail = false;
                        accepted.clear();
                        push(record, |r| r.commands.push("<TLS>".to_string()));
                    }
                }
                _ => send(&mut conn, "502 5.5.1 STARTTLS not available").await?,
            },
            "MAIL" => {
                send(&mut conn, &script.mail_reply).await?;
                in_mail = script.mail_reply.starts_with('2');
                accepted.clear();
            }
            "RCPT" => {
                if !in_mail {
                    send(&mut conn, "503 5.5.1 Error: need MAIL command").await?;
                    continue;
                }
                let address = text
                    .split_once('<')
                    .and_then(|(_, rest)| rest.split_once('>'))
                    .map(|(a, _)| a.to_ascii_lowercase())
                    .unwrap_or_default();
                let reply = script
                    .rcpt_replies
                    .get(&address)
                    .cloned()
                    .unwrap_or_else(|| "250 2.1.5 Ok".to_string());
                if let Some(delay) = script.rcpt_delays.get(&address) {
                    tokio::time::sleep(*delay).await;
                }
                if reply.starts_with('2') {
                    accepted.push(address);
                }
                send(&mut conn, &reply).await?;
            }
            "DATA" => {
                if !in_mail {
                    send(&mut conn, "503 5.5.1 Error: need MAIL command").await?;
                    continue;
                }
                if accepted.is_empty() && !script.accept_data_without_recipients {
                    send(&mut conn, "554 5.5.1 Error: no valid recipients").await?;
                    continue;
                }
                send(&mut conn, &script.data_reply).await?;
                if !script.data_reply.starts_with("354") {
                    continue;
                }
                let message = read_message(&mut conn).await?;
                after_dot = !conn.buffer().is_empty();
                push(record, |r| r.messages.push(message));
                if script.close_after.as_deref() == Some(".") {
                    return Ok(());
                }
                if script.stall_after.as_deref() == Some(".") {
                    stall(&mut conn).await;
                    return Ok(());
                }
                if script.lmtp {
                    for a in &accepted {
                        let reply = script
                            .lmtp_replies
                            .get(a)
                            .cloned()
                            .unwrap_or_else(|| format!("250 2.0.0 <{a}> Saved"));
                        send(&mut conn, &reply).await?;
                    }
                } else if !accepted.is_empty() {
                    send(&mut conn, &script.final_reply).await?;
                } else {
                    send(&mut conn, "554 5.5.1 Error: no valid recipients").await?;
                }
                in_mail = false;
                accepted.clear();
            }
            "RSET" => {
                in_mail = false;
                accepted.clear();
                send(&mut conn, "250 2.0.0 Ok").await?;
            }
            "NOOP" => send(&mut conn, "250 2.0.0 Ok").await?,
            "QUIT" => {
                send(&mut conn, "221 2.0.0 Bye").await?;
                return Ok(());
            }
            _ => send(&mut conn, "502 5.5.2 Error: command not recognized").await?,
        }
    }
}

/// The message up to the line that is only a dot, unstuffed.
async fn read_message(conn: &mut Conn) -> std::io::Result<Vec<u8>> {
    let mut message = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if conn.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(message);
        }
        message.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
    }
}
