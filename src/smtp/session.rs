//! One ESMTP session: greeting, EHLO, the mail transaction, DATA, and STARTTLS.
//!
//! The session is generic over its stream, so it runs the same over TCP, over TLS after
//! STARTTLS, and in memory in tests. The transaction state is a type: a RCPT is only
//! handled inside `State::Mail`, so "RCPT before MAIL" cannot be mishandled, only
//! answered `503`. Each RCPT is resolved through the router when it arrives (a reload
//! during a session applies to the next RCPT); the message is answered `250` only after
//! the spool has fsynced it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite};

use super::command::{self, Command, CommandError, MailCommand};
use super::conn::{Conn, Line, ReadError};
use super::data::{DataError, DataReceiver};
use super::received::Stamp;
use super::server::Shared;
use crate::metrics::metrics;
use crate::routing::address::Address;
use crate::routing::resolve::{Outcome, Routed, Unrouted};
use crate::routing::route::{RouteKind, TlsPolicy};
use crate::routing::snapshot::TableVersion;
use crate::spool::{NewMessage, QueueId, SpooledRecipient};

/// How a session run ended.
pub enum End<S> {
    /// The connection is finished.
    Closed,
    /// The client asked for STARTTLS; the caller does the handshake on this stream and
    /// runs a new session over TLS. Buffered plaintext has been dropped.
    StartTls(S),
}

/// An accepted recipient of the open transaction.
struct Accepted {
    routed: Routed,
    original: Address,
    params: Vec<(String, String)>,
    version: Arc<TableVersion>,
}

/// The mail transaction state.
enum State {
    /// No transaction open.
    Idle,
    /// After MAIL FROM.
    Mail(Box<Transaction>),
}

struct Transaction {
    id: QueueId,
    mail: MailCommand,
    recipients: Vec<Accepted>,
}

/// A session's facts that survive STARTTLS.
pub struct Session {
    shared: Arc<Shared>,
    peer: SocketAddr,
    helo: Option<String>,
    esmtp: bool,
    tls: Option<String>,
    errors: usize,
    state: State,
}

enum Flow {
    Continue,
    Quit,
    StartTls,
}

fn line(code: u16, status: &str, text: &str) -> String {
    format!("{code} {status} {text}\r\n")
}

impl Session {
    /// A new session for a client.
    pub fn new(shared: Arc<Shared>, peer: SocketAddr) -> Self {
        Session {
            shared,
            peer,
            helo: None,
            esmtp: false,
            tls: None,
            errors: 0,
            state: State::Idle,
        }
    }

    /// After a TLS handshake: everything is forgotten but the TLS details (RFC 3207).
    pub fn after_tls(&mut self, tls: String) {
        self.helo = None;
        self.esmtp = false;
        self.state = State::Idle;
        self.tls = Some(tls);
    }

    fn hostname(&self) -> &str {
        &self.shared.hostname
    }

    /// The 220 greeting.
    pub fn greeting(&self) -> String {
        format!("220 {} ESMTP splitmx\r\n", self.hostname())
    }

    /// Serve commands until QUIT, disconnect, timeout, too many errors, or STARTTLS.
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, mut conn: Conn<S>) -> End<S> {
        let mut shutdown = self.shared.shutdown.clone();
        loop {
            let config = &self.shared.config;
            let read = tokio::select! {
                biased;
                r = conn.read_line(config.max_command_line, config.command_timeout) => r,
                _ = async { drop(shutdown.wait_for(|s| *s).await) } => {
                    conn.queue(&line(421, "4.3.2", "Service shutting down, try again later"));
                    let _ = conn.flush().await;
                    return End::Closed;
                }
            };
            let flow = match read {
                Ok(Line::Complete(bytes)) => self.command(&bytes, &mut conn).await,
                Ok(Line::TooLong) => {
                    let max = self.shared.config.max_command_line;
                    self.error(
                        &mut conn,
                        500,
                        "5.5.2",
                        &format!("Line too long (limit {max} octets)"),
                    )
                }
                Err(ReadError::Timeout) => {
                    conn.queue(&line(421, "4.4.2", "Timeout exceeded, closing connection"));
                    let _ = conn.flush().await;
                    tracing::info!(client = %self.peer, "session timed out");
                    return End::Closed;
                }
                Err(ReadError::Closed) | Err(ReadError::Io(_)) => return End::Closed,
            };
            match flow {
                Flow::Continue => {}
                Flow::Quit => {
                    let _ = conn.flush().await;
                    return End::Closed;
                }
                Flow::StartTls => {
                    if conn.flush().await.is_err() {
                        return End::Closed;
                    }
                    // Plaintext pipelined after STARTTLS is dropped with the buffer.
                    return End::StartTls(conn.into_inner());
                }
            }
        }
    }

    /// Answer a bad command; after too many, close.
    fn error<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        code: u16,
        status: &str,
        text: &str,
    ) -> Flow {
        self.errors += 1;
        if self.errors > self.shared.config.max_errors {
            conn.queue(&line(421, "4.7.0", "Too many errors, closing connection"));
            tracing::info!(client = %self.peer, errors = self.errors, "session closed after too many errors");
            return Flow::Quit;
        }
        conn.queue(&line(code, status, text));
        Flow::Continue
    }

    async fn command<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        bytes: &[u8],
        conn: &mut Conn<S>,
    ) -> Flow {
        let cmd = match command::parse(bytes) {
            Ok(c) => c,
            Err(CommandError::Unknown) => {
                return self.error(conn, 500, "5.5.2", "Command not recognized");
            }
            Err(CommandError::Syntax(s)) => {
                return self.error(conn, 501, "5.5.4", &format!("Syntax: {s}"));
            }
            Err(CommandError::Address(e)) => {
                return self.error(conn, 553, "5.1.3", &format!("Bad address syntax: {e}"));
            }
            Err(CommandError::Parameter(e)) => {
                return self.error(
                    conn,
                    555,
                    "5.5.4",
                    &format!("Parameter not recognized: {e}"),
                );
            }
        };
        match cmd {
            Command::Hello { host, extended } => {
                self.helo = Some(host);
                self.esmtp = extended;
                self.state = State::Idle;
                conn.queue(&self.hello_reply(extended));
                Flow::Continue
            }
            Command::Mail(mail) => self.mail(mail, conn),
            Command::Rcpt(rcpt) => self.rcpt(rcpt, conn).await,
            Command::Data => self.data(conn).await,
            Command::Rset => {
                self.state = State::Idle;
                conn.queue(&line(250, "2.0.0", "Ok"));
                Flow::Continue
            }
            Command::Noop => {
                conn.queue(&line(250, "2.0.0", "Ok"));
                Flow::Continue
            }
            Command::Quit => {
                conn.queue(&line(221, "2.0.0", "Bye"));
                Flow::Quit
            }
            Command::Vrfy => {
                conn.queue(&line(
                    252,
                    "2.5.0",
                    "Cannot VRFY user, but will accept message and attempt delivery",
                ));
                Flow::Continue
            }
            Command::Expn => self.error(conn, 502, "5.5.1", "EXPN not available"),
            Command::Help => {
                conn.queue(&line(
                    214,
                    "2.0.0",
                    "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS",
                ));
                Flow::Continue
            }
            Command::Bdat => self.error(conn, 502, "5.5.1", "BDAT not available, use DATA"),
            Command::NotImplemented(verb) => {
                self.error(conn, 502, "5.5.1", &format!("{verb} not available"))
            }
            Command::StartTls => {
                if self.tls.is_some() {
                    return self.error(conn, 503, "5.5.1", "TLS already active");
                }
                if self.shared.tls.is_none() {
                    return self.error(conn, 502, "5.5.1", "STARTTLS not available");
                }
                conn.queue(&line(220, "2.0.0", "Ready to start TLS"));
                Flow::StartTls
            }
        }
    }

    fn hello_reply(&self, extended: bool) -> String {
        let name = self.hostname();
        if !extended {
            return format!("250 {name}\r\n");
        }
        let mut lines = vec![
            name.to_string(),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.shared.config.max_message_size),
            "8BITMIME".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "SMTPUTF8".to_string(),
            "DSN".to_string(),
        ];
        if self.tls.is_none() && self.shared.tls.is_some() {
            lines.push("STARTTLS".to_string());
        }
        let last = lines.len() - 1;
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
            .collect()
    }

    fn mail<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mail: MailCommand,
        conn: &mut Conn<S>,
    ) -> Flow {
        if self.helo.is_none() {
            return self.error(conn, 503, "5.5.1", "Send EHLO or HELO first");
        }
        if matches!(self.state, State::Mail(_)) {
            return self.error(conn, 503, "5.5.1", "Nested MAIL command");
        }
        let max = self.shared.config.max_message_size;
        if mail.size > max {
            return self.error(
                conn,
                552,
                "5.3.4",
                &format!("Message size exceeds fixed limit of {max} bytes"),
            );
        }
        if mail.sender.as_ref().is_some_and(Address::needs_smtputf8) && !mail.smtputf8 {
            return self.error(conn, 553, "5.6.7", "Non-ASCII address needs SMTPUTF8");
        }
        conn.queue(&line(250, "2.1.0", "Sender ok"));
        self.state = State::Mail(Box::new(Transaction {
            id: QueueId::new(),
            mail,
            recipients: Vec::new(),
        }));
        Flow::Continue
    }

    async fn rcpt<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        rcpt: command::RcptCommand,
        conn: &mut Conn<S>,
    ) -> Flow {
        let State::Mail(tx) = &mut self.state else {
            return self.error(conn, 503, "5.5.1", "Need MAIL before RCPT");
        };
        if tx.recipients.len() >= self.shared.config.max_recipients {
            conn.queue(&line(452, "4.5.3", "Too many recipients"));
            return Flow::Continue;
        }
        let recipient = match rcpt.recipient {
            command::Recipient::Address(a) => a,
            command::Recipient::Postmaster => match postmaster(&self.shared) {
                Some(a) => a,
                None => return self.error(conn, 550, "5.1.1", "No postmaster route configured"),
            },
        };
        if recipient.needs_smtputf8() && !tx.mail.smtputf8 {
            return self.error(conn, 553, "5.6.7", "Non-ASCII address needs SMTPUTF8");
        }
        let resolution = self.shared.router.resolve(&recipient).await;
        let reply = resolution.outcome.reply();
        let sender = tx.mail.sender.as_ref().map(Address::original).unwrap_or("");
        log_recipient(
            &tx.id,
            self.peer,
            sender,
            &recipient,
            &resolution.outcome,
            &resolution.version,
            &reply,
        );
        let text = line(reply.code, &reply.status, &reply.text);
        if !reply.is_positive() {
            return self.error(conn, reply.code, &reply.status, &reply.text);
        }
        if let Outcome::Routed(routed) = resolution.outcome {
            tx.recipients.push(Accepted {
                routed,
                original: recipient,
                params: rcpt.params,
                version: resolution.version,
            });
        }
        conn.queue(&text);
        Flow::Continue
    }

    async fn data<S: AsyncRead + AsyncWrite + Unpin>(&mut self, conn: &mut Conn<S>) -> Flow {
        let ready = match &self.state {
            State::Idle => Err((503, "Need MAIL command")),
            State::Mail(tx) if tx.recipients.is_empty() => Err((554, "No valid recipients")),
            State::Mail(_) => Ok(()),
        };
        if let Err((code, text)) = ready {
            return self.error(conn, code, "5.5.1", text);
        }
        let State::Mail(tx) = std::mem::replace(&mut self.state, State::Idle) else {
            return Flow::Continue;
        };
        conn.queue("354 End data with <CR><LF>.<CR><LF>\r\n");
        let config = &self.shared.config;
        let mut receiver = DataReceiver::new(
            config.max_message_size,
            config.max_text_line,
            &self.shared.hostname,
        );
        let received_at = SystemTime::now();
        match conn
            .read_until(config.data_timeout, |b| receiver.ingest(b))
            .await
        {
            Ok(()) => {}
            Err(ReadError::Timeout) => {
                conn.queue(&line(
                    421,
                    "4.4.2",
                    "Timeout exceeded during DATA, closing connection",
                ));
                tracing::info!(client = %self.peer, queue_id = %tx.id, "DATA timed out, nothing queued");
                return Flow::Quit;
            }
            Err(_) => {
                tracing::info!(client = %self.peer, queue_id = %tx.id, "client disconnected during DATA, nothing queued");
                return Flow::Quit;
            }
        }
        let (body, hops) = receiver.finish();
        let body = match body {
            Ok(b) => b,
            Err(DataError::TooBig) => {
                metrics().refused("too_big");
                let max = config.max_message_size;
                return self.error(
                    conn,
                    552,
                    "5.3.4",
                    &format!("Message size exceeds fixed limit of {max} bytes"),
                );
            }
            Err(DataError::LineTooLong) => {
                metrics().refused("line_too_long");
                let max = config.max_text_line;
                return self.error(
                    conn,
                    500,
                    "5.5.2",
                    &format!("Message has a line longer than {max} octets"),
                );
            }
        };
        if let Err(e) = self
            .shared
            .loops
            .check_with_hostname(&hops, &self.shared.hostname)
        {
            let (code, status, text) = e.reply();
            metrics().refused("loop");
            tracing::warn!(client = %self.peer, queue_id = %tx.id, received = hops.received, self_passes = hops.self_passes, error = %e, "message refused: mail loop");
            conn.queue(&line(code, status, &text));
            return Flow::Continue;
        }
        self.commit(*tx, body, received_at, conn).await
    }

    async fn commit<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        tx: Transaction,
        body: Vec<u8>,
        received_at: SystemTime,
        conn: &mut Conn<S>,
    ) -> Flow {
        let version = tx
            .recipients
            .first()
            .map(|a| a.version.to_string())
            .unwrap_or_default();
        let for_rcpt = (tx.recipients.len() == 1).then(|| tx.recipients[0].original.to_smtp());
        let id = tx.id.to_string();
        let stamp = Stamp {
            helo: self.helo.as_deref().unwrap_or(""),
            client_ip: self.peer.ip(),
            hostname: &self.shared.hostname,
            esmtp: self.esmtp,
            tls: self.tls.as_deref(),
            smtputf8: tx.mail.smtputf8,
            id: &id,
            for_rcpt: for_rcpt.as_deref(),
            table_version: &version,
            at: received_at,
        }
        .render();
        let mut message = Vec::with_capacity(stamp.len() + body.len());
        message.extend_from_slice(stamp.as_bytes());
        message.extend_from_slice(&body);
        drop(body);
        let size = message.len();
        let recipients = tx
            .recipients
            .iter()
            .map(|a| SpooledRecipient {
                original: a.original.original().to_string(),
                deliver_to: a.routed.recipient.to_smtp(),
                route: a.routed.route.name().to_string(),
                route_kind: a.routed.route.kind().to_string(),
                provenance: a.routed.provenance.to_string(),
                tls: route_tls(a.routed.route.kind()),
                params: a.params.clone(),
            })
            .collect();
        let new = NewMessage {
            id: tx.id,
            received_at,
            client: format!("{} ({})", self.peer, self.helo.as_deref().unwrap_or("")),
            sender: tx
                .mail
                .sender
                .as_ref()
                .map(|a| a.to_smtp())
                .unwrap_or_default(),
            recipients,
            table_version: version,
            body: message,
            params: tx.mail.params.clone(),
        };
        let new = Arc::new(new);
        let waiting = Instant::now();
        let committed = self.shared.spool.commit_shared(Arc::clone(&new)).await;
        metrics().spool_commit(waiting.elapsed());
        match committed {
            Ok(id) => {
                metrics().spooled(size as u64);
                if let Some(hook) = &self.shared.on_queued {
                    hook(new);
                }
                tracing::info!(client = %self.peer, queue_id = %id, size, recipients = tx.recipients.len(), "message queued");
                if let Some(journal) = &self.shared.journal {
                    journal.record(
                        SystemTime::now(),
                        tx.recipients
                            .iter()
                            .map(|a| (a.original.key(), &a.routed.route)),
                    );
                }
                conn.queue(&line(250, "2.0.0", &format!("Ok: queued as {id}")));
            }
            Err(e) => {
                metrics().refused("spool");
                tracing::error!(client = %self.peer, queue_id = %tx.id, error = %e, "spool write failed, message not accepted");
                conn.queue(&line(
                    451,
                    "4.3.0",
                    "Local error in processing, try again later",
                ));
            }
        }
        Flow::Continue
    }
}

/// The TLS policy to spool with a recipient: empty for the default.
fn route_tls(kind: &RouteKind) -> String {
    match kind {
        RouteKind::Smtp { tls, .. } | RouteKind::Lmtp { tls, .. }
            if *tls != TlsPolicy::default() =>
        {
            tls.to_string()
        }
        _ => String::new(),
    }
}

/// `<Postmaster>` without a domain: postmaster of our host name when the tables serve it,
/// else of the first domain they serve (RFC 5321 4.5.1 requires accepting it).
fn postmaster(shared: &Shared) -> Option<Address> {
    let snapshot = shared.router.snapshot();
    let domain = if snapshot.serves(&shared.hostname) {
        shared.hostname.clone()
    } else {
        snapshot.domains().first()?.to_string()
    };
    Address::parse(&format!("postmaster@{domain}")).ok()
}

/// The RCPT answer in `splitmx_recipients_total`.
fn count_recipient(outcome: &Outcome) {
    let m = metrics();
    match outcome {
        Outcome::Routed(r) => {
            let route = r.route.name();
            match r.route.kind() {
                RouteKind::Reject(_) => m.recipient("rejected", "route_reject", route),
                RouteKind::Defer(_) => m.recipient("deferred", "route_defer", route),
                _ => m.recipient("accepted", "ok", route),
            }
        }
        Outcome::Unrouted(Unrouted::UnknownUser) => m.recipient("rejected", "unknown", ""),
        Outcome::Unrouted(Unrouted::RelayDenied) => m.recipient("rejected", "relay_denied", ""),
        Outcome::TempFail { .. } => m.recipient("deferred", "directory", ""),
    }
}

fn log_recipient(
    id: &QueueId,
    client: SocketAddr,
    sender: &str,
    rcpt: &Address,
    outcome: &Outcome,
    version: &TableVersion,
    reply: &crate::routing::route::Reply,
) {
    let reply = format!("{} {}", reply.code, reply.status);
    count_recipient(outcome);
    match outcome {
        Outcome::Routed(r) => tracing::info!(
            queue_id = %id, client = %client, sender, rcpt = %rcpt, route = r.route.name(),
            deliver_to = %r.recipient, provenance = %r.provenance, version = %version, reply,
            "recipient"
        ),
        Outcome::Unrouted(u) => {
            let why = match u {
                Unrouted::UnknownUser => "no entry in a served domain",
                Unrouted::RelayDenied => "domain not served",
            };
            tracing::info!(
                queue_id = %id, client = %client, sender, rcpt = %rcpt, route = "none",
                provenance = why, version = %version, reply, "recipient"
            )
        }
        Outcome::TempFail { reason, .. } => tracing::warn!(
            queue_id = %id, client = %client, sender, rcpt = %rcpt, route = "none",
            provenance = %reason, version = %version, reply, "recipient"
        ),
    }
}
