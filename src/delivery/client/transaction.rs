//! One mail transaction: MAIL, RCPT for each recipient, DATA, the dot-stuffed message
//! and the reply (SMTP) or replies (LMTP, one per accepted recipient) to the final dot.
//!
//! With PIPELINING, MAIL, every RCPT and DATA go in one write and the replies are read
//! in order (RFC 2920); without it, one command at a time. Every recipient gets exactly
//! one result: its own RCPT reply when refused, the MAIL, DATA or final reply otherwise,
//! or `4.4.2` when the connection fails before its fate is known.

use std::io::Write as _;

use super::failure::{Stage, describe};
use super::reply::Reply;
use super::stream::WireError;
use super::stuffing::DotStuffer;
use super::{Connection, Protocol, State};
use crate::delivery::{NextTransaction, RcptResult, ResultKind, Transaction, TxRecipient};

/// Results so far: `None` until a recipient's fate is known.
type Results = [Option<RcptResult>];

impl Connection {
    /// Deliver one transaction. Always returns exactly `tx.recipients.len()` results,
    /// in the order of `tx.recipients`.
    ///
    /// `next` is the transaction the caller will deliver next on this connection, when
    /// it is already known: with PIPELINING its MAIL, RCPT and DATA go out in the same
    /// write as this message's final dot (RFC 2920 §3.1 allows the message to start a
    /// group), which saves a round trip per message to a busy next hop. The next call
    /// must then be for `next` ([`Connection::is_ready_for`] says so); any other
    /// transaction finds the connection unusable, and closing it makes the peer drop
    /// the transaction sent ahead.
    pub async fn deliver(
        &mut self,
        tx: &Transaction<'_>,
        mut next: Option<&Transaction<'_>>,
    ) -> Vec<RcptResult> {
        self.deliver_taking(tx, &mut next).await
    }

    /// [`Connection::deliver`], asking `next` for the transaction to send ahead only
    /// when the final dot is about to go out (and only if the peer pipelines): a queue
    /// can then hand over a job that arrived while this message was under way.
    pub async fn deliver_taking(
        &mut self,
        tx: &Transaction<'_>,
        next: &mut dyn NextTransaction,
    ) -> Vec<RcptResult> {
        let mut results: Vec<Option<RcptResult>> = vec![None; tx.recipients.len()];
        if let Err(undecided) = self.transaction(tx, next, &mut results).await {
            for r in results.iter_mut().filter(|r| r.is_none()) {
                *r = Some(undecided.clone());
            }
        }
        results
            .into_iter()
            .map(|r| {
                // Every path above decides every recipient; this is a safety net, not a
                // result anyone should see.
                r.unwrap_or_else(|| {
                    self.local(ResultKind::Deferred, "4.3.0", "internal error: no result")
                })
            })
            .collect()
    }

    /// Fill `results`; `Err` is the result of every recipient still undecided.
    async fn transaction(
        &mut self,
        tx: &Transaction<'_>,
        next: &mut dyn NextTransaction,
        results: &mut Results,
    ) -> Result<(), RcptResult> {
        if results.is_empty() {
            return Ok(());
        }
        let sent_ahead = match self.state {
            State::Pipelined(k) if k == key(tx) => true,
            State::Pipelined(_) => return Err(self.out_of_step()),
            State::Broken => {
                return Err(self.local(
                    ResultKind::Deferred,
                    "4.4.2",
                    format!("connection with {} is no longer usable", self.remote),
                ));
            }
            State::Ready | State::NeedsReset => false,
        };
        let checked = self.check_message(tx);
        let sendable = self.sendable(tx, results);
        if sent_ahead {
            // It passed the same checks when it was sent ahead; if it no longer does,
            // the peer is in DATA and only closing the connection ends that.
            if checked.is_err() || sendable.is_empty() {
                return Err(self.out_of_step());
            }
            self.state = State::Ready;
            return match self.command_replies(&sendable, results).await? {
                Some((data, accepted)) => {
                    self.send_message(tx, next, data, &accepted, results).await
                }
                None => Ok(()),
            };
        }
        let smtputf8 = checked?;
        if sendable.is_empty() {
            return Ok(());
        }
        if self.state == State::NeedsReset {
            self.reset().await?;
        }
        if self.caps.pipelining {
            self.queue_commands(tx, &sendable, smtputf8);
            self.flush(Stage::Mail).await?;
            match self.command_replies(&sendable, results).await? {
                Some((data, accepted)) => {
                    self.send_message(tx, next, data, &accepted, results).await
                }
                None => Ok(()),
            }
        } else {
            self.queue_mail(tx, smtputf8);
            let mail = self.command(Stage::Mail).await?;
            if !mail.is_positive() {
                let refused = self.result_of(&mail);
                for &i in &sendable {
                    set(results, i, refused.clone());
                }
                return Ok(());
            }
            let mut accepted = Vec::with_capacity(sendable.len());
            for &i in &sendable {
                self.queue_rcpt(tx.recipients.get(i));
                let reply = self.command(Stage::Rcpt).await?;
                self.judge_rcpt(i, &reply, None, &mut accepted, results);
            }
            if accepted.is_empty() {
                self.state = State::NeedsReset;
                return Ok(());
            }
            self.wire.queue(b"DATA\r\n");
            let data = self.command(Stage::Data).await?;
            self.send_message(tx, &mut None, data, &accepted, results)
                .await
        }
    }

    /// The recipients that can go in a command line; the others are bounced here.
    fn sendable(&self, tx: &Transaction<'_>, results: &mut Results) -> Vec<usize> {
        let mut sendable = Vec::with_capacity(tx.recipients.len());
        for (i, rcpt) in tx.recipients.iter().enumerate() {
            if printable(rcpt.address) {
                sendable.push(i);
            } else {
                set(
                    results,
                    i,
                    RcptResult::local(
                        ResultKind::Bounced,
                        "5.1.3",
                        format!("bad recipient address syntax: {:?}", rcpt.address),
                    ),
                );
            }
        }
        sendable
    }

    /// MAIL, a RCPT per sendable recipient and DATA, as one pipelined group.
    fn queue_commands(&mut self, tx: &Transaction<'_>, sendable: &[usize], smtputf8: bool) {
        self.queue_mail(tx, smtputf8);
        for &i in sendable {
            self.queue_rcpt(tx.recipients.get(i));
        }
        self.wire.queue(b"DATA\r\n");
    }

    /// The replies to a pipelined group: the DATA reply and the accepted recipients
    /// when the message is to be sent, `None` when the transaction ended here.
    async fn command_replies(
        &mut self,
        sendable: &[usize],
        results: &mut Results,
    ) -> Result<Option<(Reply, Vec<usize>)>, RcptResult> {
        let mail = self.read(Stage::Mail).await?;
        let refused = (!mail.is_positive()).then(|| self.result_of(&mail));
        let mut accepted = Vec::with_capacity(sendable.len());
        for &i in sendable {
            let reply = self.read(Stage::Rcpt).await?;
            self.judge_rcpt(i, &reply, refused.as_ref(), &mut accepted, results);
        }
        let data = self.read(Stage::Data).await?;
        if accepted.is_empty() {
            if data.code() == 354 {
                // RFC 2920 §3.1: DATA accepted without recipients; end it empty.
                self.wire.queue(b".\r\n");
                self.flush(Stage::EndOfData).await?;
                self.read(Stage::EndOfData).await?;
            }
            self.state = State::NeedsReset;
            return Ok(None);
        }
        Ok(Some((data, accepted)))
    }

    /// The commands of `next`, queued behind the message when they can go ahead: the
    /// peer pipelines, and `next` passes the checks that need no round trip. Returns
    /// the key of what was queued.
    fn queue_ahead(&mut self, next: &mut dyn NextTransaction) -> Option<u64> {
        if !self.caps.pipelining {
            return None;
        }
        let mut ahead = None;
        next.take_with(&mut |t| ahead = self.queue_commands_ahead(t));
        if ahead.is_some() {
            crate::metrics::metrics().sent_ahead();
        }
        ahead
    }

    /// [`Connection::queue_ahead`] for the transaction taken.
    fn queue_commands_ahead(&mut self, next: &Transaction<'_>) -> Option<u64> {
        let smtputf8 = self.check_message(next).ok()?;
        if next.recipients.is_empty() || !next.recipients.iter().all(|r| printable(r.address)) {
            return None;
        }
        let all: Vec<usize> = (0..next.recipients.len()).collect();
        self.queue_commands(next, &all, smtputf8);
        Some(key(next))
    }

    /// A transaction other than the one sent ahead: the connection cannot be used.
    fn out_of_step(&mut self) -> RcptResult {
        self.state = State::Broken;
        tracing::warn!(peer = %self.remote, "transaction differs from the one sent ahead; closing the connection");
        self.local(
            ResultKind::Deferred,
            "4.4.2",
            format!("connection with {} is out of step", self.remote),
        )
    }

    /// Checks that need no round trip: the sender's syntax, the peer's size limit, and
    /// SMTPUTF8. Returns whether to send SMTPUTF8.
    fn check_message(&self, tx: &Transaction<'_>) -> Result<bool, RcptResult> {
        if !printable(tx.sender) {
            return Err(RcptResult::local(
                ResultKind::Bounced,
                "5.1.7",
                format!("bad sender address syntax: {:?}", tx.sender),
            ));
        }
        if let Some(limit) = self.caps.size_limit()
            && tx.body.len() as u64 > limit
        {
            return Err(self.local(
                ResultKind::Bounced,
                "5.3.4",
                format!(
                    "message size {} exceeds size limit {limit} of server {}",
                    tx.body.len(),
                    self.remote
                ),
            ));
        }
        let wants_utf8 = param(tx.mail_params, "SMTPUTF8").is_some();
        if wants_utf8 && !self.caps.smtputf8 && needs_smtputf8(tx) {
            return Err(self.local(
                ResultKind::Bounced,
                "5.6.7",
                format!(
                    "SMTPUTF8 is required, but was not offered by host {}",
                    self.remote
                ),
            ));
        }
        Ok(wants_utf8 && self.caps.smtputf8)
    }

    /// RSET after a transaction that did not end with the final dot.
    async fn reset(&mut self) -> Result<(), RcptResult> {
        self.wire.queue(b"RSET\r\n");
        let reply = self.command(Stage::Reset).await?;
        if !reply.is_positive() {
            self.state = State::Broken;
            return Err(self.local(
                ResultKind::Deferred,
                "4.5.0",
                format!("host {} refused RSET: {reply}", self.remote),
            ));
        }
        self.state = State::Ready;
        Ok(())
    }

    /// A RCPT reply: accepted, or the recipient's result (the MAIL refusal when MAIL was
    /// refused, whatever the RCPT reply says).
    fn judge_rcpt(
        &self,
        i: usize,
        reply: &Reply,
        mail_refused: Option<&RcptResult>,
        accepted: &mut Vec<usize>,
        results: &mut Results,
    ) {
        match mail_refused {
            Some(refused) => set(results, i, refused.clone()),
            None if reply.is_positive() => accepted.push(i),
            None => set(results, i, self.result_of(reply)),
        }
    }

    /// After the reply to DATA: the message (with the commands of `next` behind its
    /// final dot when they can go ahead) and the final reply(s), or the DATA refusal for
    /// every accepted recipient.
    async fn send_message(
        &mut self,
        tx: &Transaction<'_>,
        next: &mut dyn NextTransaction,
        data: Reply,
        accepted: &[usize],
        results: &mut Results,
    ) -> Result<(), RcptResult> {
        if data.code() != 354 {
            let refused = self.result_of(&data);
            for &i in accepted {
                set(results, i, refused.clone());
            }
            self.state = State::NeedsReset;
            return Ok(());
        }
        // One time limit for sending the whole message, the commands sent ahead included.
        let deadline = tokio::time::Instant::now() + self.data_timeout;
        let wire = &mut self.wire;
        let sent = tokio::time::timeout_at(deadline, async {
            let mut stuffer = DotStuffer::new();
            for piece in stuffer.pieces(tx.body) {
                wire.put(piece).await?;
            }
            wire.put(stuffer.terminator()).await
        })
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.broken(WireError::Io(e), Stage::Body)),
            Err(_) => return Err(self.broken(WireError::Timeout, Stage::Body)),
        }
        let ahead = self.queue_ahead(next);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match self.wire.flush_within(left).await {
            Ok(()) => {}
            Err(e) => return Err(self.broken(e, Stage::Body)),
        }
        match self.protocol {
            Protocol::Smtp => {
                let reply = self
                    .read_within(self.data_timeout, Stage::EndOfData)
                    .await?;
                let result = self.result_of(&reply);
                for &i in accepted {
                    set(results, i, result.clone());
                }
            }
            Protocol::Lmtp => {
                for &i in accepted {
                    let reply = self
                        .read_within(self.data_timeout, Stage::EndOfData)
                        .await?;
                    set(results, i, self.result_of(&reply));
                }
            }
        }
        self.state = ahead.map_or(State::Ready, State::Pipelined);
        Ok(())
    }

    fn queue_mail(&mut self, tx: &Transaction<'_>, smtputf8: bool) {
        let caps = self.caps;
        let out = self.wire.out();
        out.extend_from_slice(b"MAIL FROM:<");
        out.extend_from_slice(tx.sender.as_bytes());
        out.push(b'>');
        if caps.size.is_some() {
            // Writing to a Vec cannot fail.
            let _ = write!(out, " SIZE={}", tx.body.len());
        }
        if caps.eight_bit_mime
            && param(tx.mail_params, "BODY").is_some_and(|v| v.eq_ignore_ascii_case("8BITMIME"))
        {
            out.extend_from_slice(b" BODY=8BITMIME");
        }
        if smtputf8 {
            out.extend_from_slice(b" SMTPUTF8");
        }
        if caps.dsn {
            if let Some(ret) = param(tx.mail_params, "RET")
                .filter(|v| v.eq_ignore_ascii_case("FULL") || v.eq_ignore_ascii_case("HDRS"))
            {
                out.extend_from_slice(b" RET=");
                out.extend_from_slice(ret.as_bytes());
            }
            if let Some(envid) = param(tx.mail_params, "ENVID").filter(|v| !v.is_empty()) {
                out.extend_from_slice(b" ENVID=");
                xtext(envid, out);
            }
        }
        out.extend_from_slice(b"\r\n");
    }

    fn queue_rcpt(&mut self, rcpt: Option<&TxRecipient<'_>>) {
        let Some(rcpt) = rcpt else {
            return;
        };
        let dsn = self.caps.dsn;
        let out = self.wire.out();
        out.extend_from_slice(b"RCPT TO:<");
        out.extend_from_slice(rcpt.address.as_bytes());
        out.push(b'>');
        if dsn {
            if let Some(notify) = param(rcpt.params, "NOTIFY").filter(|v| {
                !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphabetic() || b == b',')
            }) {
                out.extend_from_slice(b" NOTIFY=");
                out.extend_from_slice(notify.as_bytes());
            }
            if let Some(orcpt) = param(rcpt.params, "ORCPT").filter(|v| !v.is_empty()) {
                // Spooled decoded, without its address type (the SMTP front end accepts
                // only rfc822).
                out.extend_from_slice(b" ORCPT=rfc822;");
                xtext(orcpt, out);
            }
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Send what is queued and read one reply.
    async fn command(&mut self, stage: Stage) -> Result<Reply, RcptResult> {
        self.flush(stage).await?;
        self.read(stage).await
    }

    async fn flush(&mut self, stage: Stage) -> Result<(), RcptResult> {
        match self.wire.flush_within(self.command_timeout).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.broken(e, stage)),
        }
    }

    async fn read(&mut self, stage: Stage) -> Result<Reply, RcptResult> {
        self.read_within(self.command_timeout, stage).await
    }

    /// One reply. A 421 means the peer is closing: it decides every undecided recipient.
    async fn read_within(
        &mut self,
        limit: std::time::Duration,
        stage: Stage,
    ) -> Result<Reply, RcptResult> {
        match self.wire.reply(limit).await {
            Ok(reply) => {
                tracing::debug!(peer = %self.remote, after = stage.name(), code = reply.code(), reply = %reply, "reply");
                if reply.code() == 421 {
                    self.state = State::Broken;
                    return Err(self.result_of(&reply));
                }
                Ok(reply)
            }
            Err(e) => Err(self.broken(e, stage)),
        }
    }

    /// The connection is out of step: the result for whoever is undecided.
    fn broken(&mut self, error: WireError, stage: Stage) -> RcptResult {
        self.state = State::Broken;
        let (status, detail) = describe(&self.remote, &error, stage);
        tracing::debug!(peer = %self.remote, after = stage.name(), detail = %detail, "connection failed");
        self.local(ResultKind::Deferred, status, detail)
    }

    /// A result from the peer's reply: 2xx delivered, 5xx bounced, anything else
    /// deferred.
    fn result_of(&self, reply: &Reply) -> RcptResult {
        let kind = match reply.class() {
            2 => ResultKind::Delivered,
            5 => ResultKind::Bounced,
            _ => ResultKind::Deferred,
        };
        RcptResult::reply(kind, &reply.status(), reply.detail(), &*self.remote)
    }

    /// A result decided here, about this peer.
    fn local(&self, kind: ResultKind, status: &str, detail: impl Into<String>) -> RcptResult {
        let mut r = RcptResult::local(kind, status, detail);
        r.remote = Some(self.remote.clone());
        r
    }
}

fn set(results: &mut Results, i: usize, result: RcptResult) {
    if let Some(slot) = results.get_mut(i) {
        *slot = Some(result);
    }
}

/// A spooled parameter's value, by upper-case name.
fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Identifies a transaction sent ahead, so that no other is taken for it: its envelope
/// and the size of its message.
pub(super) fn key(tx: &Transaction<'_>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    tx.sender.hash(&mut h);
    tx.mail_params.hash(&mut h);
    for r in tx.recipients {
        r.address.hash(&mut h);
        r.params.hash(&mut h);
    }
    tx.body.len().hash(&mut h);
    h.finish()
}

/// No control characters: an address is sent inside a command line.
fn printable(address: &str) -> bool {
    !address.chars().any(char::is_control)
}

/// Whether the envelope or the header section needs SMTPUTF8 (RFC 6531 §3.4: a client
/// should not ask for it when nothing does; Postfix downgrades the same way).
fn needs_smtputf8(tx: &Transaction<'_>) -> bool {
    !tx.sender.is_ascii()
        || tx.recipients.iter().any(|r| !r.address.is_ascii())
        || !header_section(tx.body).is_ascii()
}

/// The message up to the first empty line (CRLF or bare LF).
fn header_section(body: &[u8]) -> &[u8] {
    if body.starts_with(b"\r\n") || body.starts_with(b"\n") {
        return &[];
    }
    for nl in memchr::memchr_iter(b'\n', body) {
        let next = body.get(nl + 1..).unwrap_or_default();
        if next.starts_with(b"\r\n") || next.starts_with(b"\n") {
            return body.get(..=nl).unwrap_or(body);
        }
    }
    body
}

/// xtext (RFC 3461 §4): printable ASCII but '+' and '=' as is, everything else `+HH`.
/// A character the SMTP front end decoded from `+HH` into U+0080..U+00FF goes back to
/// that byte; other non-ASCII characters go as their UTF-8 bytes.
fn xtext(value: &str, out: &mut Vec<u8>) {
    fn hex(b: u8, out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        out.push(b'+');
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0x0f)]);
    }
    for c in value.chars() {
        match u8::try_from(c) {
            Ok(b @ 0x21..=0x7e) if b != b'+' && b != b'=' => out.push(b),
            Ok(b) => hex(b, out),
            Err(_) => {
                let mut buf = [0u8; 4];
                for &b in c.encode_utf8(&mut buf).as_bytes() {
                    hex(b, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_round_trips_through_the_front_end_decoder() {
        let mut out = Vec::new();
        xtext("George @Tax- ME .GOV+=x", &mut out);
        assert_eq!(out, b"George+20@Tax-+20ME+20.GOV+2B+3Dx");
    }

    #[test]
    fn header_section_ends_at_the_first_empty_line() {
        assert_eq!(header_section(b"A: b\r\n\r\nbody"), b"A: b\r\n");
        assert_eq!(header_section(b"A: b\n\nbody"), b"A: b\n");
        assert_eq!(header_section(b"\r\nbody"), b"");
        assert_eq!(header_section(b"A: b"), b"A: b");
    }

    #[test]
    fn smtputf8_only_when_something_needs_it() {
        let params = [("SMTPUTF8".to_string(), String::new())];
        let ascii = [TxRecipient {
            address: "bob@example.com",
            params: &[],
        }];
        let tx = Transaction {
            sender: "a@example.com",
            mail_params: &params,
            recipients: &ascii,
            body: b"Subject: hi\r\n\r\nj\xc3\xb6rg\r\n",
        };
        assert!(!needs_smtputf8(&tx));
        let tx2 = Transaction {
            body: b"Subject: j\xc3\xb6rg\r\n\r\n",
            ..tx
        };
        assert!(needs_smtputf8(&tx2));
        let utf8 = [TxRecipient {
            address: "jörg@example.com",
            params: &[],
        }];
        let tx3 = Transaction {
            recipients: &utf8,
            ..tx
        };
        assert!(needs_smtputf8(&tx3));
    }
}
