//! Record payloads as readable text, so `strings` or `less` on a segment shows who sent
//! what to whom.
//!
//! A message payload is header lines, an empty line, then the body exactly as committed:
//!
//! ```text
//! Splitmx-Message: 1
//! Id: 0K8ZQ3XG4A7MB2NR
//! Received-At: 1767225600.123456
//! Client: [192.0.2.1]:52100 (helo.example)
//! Sender: <alice@example.org>
//! Param: BODY=8BITMIME
//! Table-Version: 3f2a…
//! Body-Size: 5120
//! Rcpt: <bob@example.com>
//! Rcpt-Deliver-To: <bob@example-com.mail.protection.outlook.com>
//! Rcpt-Route: m365
//! Rcpt-Route-Kind: smtp:[example-com.mail.protection.outlook.com]:25
//! Rcpt-Provenance: example.com.yaml:12 recipients
//! Rcpt-Param: NOTIFY=FAILURE
//!
//! Received: from …
//! ```
//!
//! A state payload is the full state of one message after a change (not a delta, so the
//! latest one is all that counts):
//!
//! ```text
//! Splitmx-State: 1
//! Id: 0K8ZQ3XG4A7MB2NR
//! State: queued
//! At: 1767225660.000000
//! Rcpt-State: 0 deferred 451 4.4.1 connection timed out
//! ```
//!
//! Values are UTF-8 with control characters, DEL and `%` written as `%XX` (and `=` in
//! parameter names), so a value can never break a line. Decoding checks every field and
//! returns an error, never panics, whatever the bytes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::id::QueueId;
use super::message::{MessageState, NewMessage, RecipientState, RecipientStatus, SpooledRecipient};

const MESSAGE_MARKER: &str = "Splitmx-Message: 1";
const STATE_MARKER: &str = "Splitmx-State: 1";

/// The envelope of a message payload, without the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) id: QueueId,
    pub(crate) received_at: SystemTime,
    pub(crate) client: String,
    pub(crate) sender: String,
    pub(crate) params: Vec<(String, String)>,
    pub(crate) table_version: String,
    pub(crate) body_size: u64,
    pub(crate) recipients: Vec<SpooledRecipient>,
}

/// The full state of a message, as a state record holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) state: MessageState,
    /// One entry per recipient.
    pub(crate) recipients: Vec<RecipientStatus>,
    /// When the state record was written (`None` before the first one).
    pub(crate) changed_at: Option<SystemTime>,
}

/// The envelope lines of `m`, ending with the empty line; the body follows.
pub(crate) fn encode_head(m: &NewMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + 200 * m.recipients.len());
    line(&mut out, MESSAGE_MARKER);
    field(&mut out, "Id", m.id.as_str());
    field(&mut out, "Received-At", &time(m.received_at));
    field(&mut out, "Client", &m.client);
    path(&mut out, "Sender", &m.sender);
    for (k, v) in &m.params {
        param(&mut out, "Param", k, v);
    }
    field(&mut out, "Table-Version", &m.table_version);
    field(&mut out, "Body-Size", &m.body.len().to_string());
    for r in &m.recipients {
        path(&mut out, "Rcpt", &r.original);
        path(&mut out, "Rcpt-Deliver-To", &r.deliver_to);
        field(&mut out, "Rcpt-Route", &r.route);
        field(&mut out, "Rcpt-Route-Kind", &r.route_kind);
        field(&mut out, "Rcpt-Provenance", &r.provenance);
        if !r.tls.is_empty() {
            field(&mut out, "Rcpt-Route-Tls", &r.tls);
        }
        for (k, v) in &r.params {
            param(&mut out, "Rcpt-Param", k, v);
        }
    }
    out.push(b'\n');
    out
}

/// Decodes the envelope at the start of a message payload; returns it and the offset of
/// the body, whose length has been checked against `Body-Size`.
pub(crate) fn decode_head(payload: &[u8]) -> Result<(Head, usize), String> {
    let end = payload
        .windows(2)
        .position(|w| w == b"\n\n")
        .ok_or("no end of envelope")?;
    let text = std::str::from_utf8(&payload[..end]).map_err(|_| "envelope is not UTF-8")?;
    let mut lines = text.split('\n');
    if lines.next() != Some(MESSAGE_MARKER) {
        return Err("not a message envelope".into());
    }
    let mut id = None;
    let mut received_at = None;
    let mut client = None;
    let mut sender = None;
    let mut params = Vec::new();
    let mut table_version = None;
    let mut body_size = None;
    let mut recipients: Vec<SpooledRecipient> = Vec::new();
    for l in lines {
        let (key, raw) = l
            .split_once(": ")
            .ok_or_else(|| format!("bad line {l:?}"))?;
        let value = || unescape(raw);
        let rcpt = |recipients: &mut Vec<SpooledRecipient>| -> Result<usize, String> {
            recipients
                .len()
                .checked_sub(1)
                .ok_or_else(|| format!("{key} before any Rcpt"))
        };
        match key {
            "Id" => id = Some(raw.parse::<QueueId>().map_err(|e| e.to_string())?),
            "Received-At" => received_at = Some(parse_time(raw)?),
            "Client" => client = Some(value()?),
            "Sender" => sender = Some(unpath(raw)?),
            "Param" => params.push(unparam(raw)?),
            "Table-Version" => table_version = Some(value()?),
            "Body-Size" => {
                body_size = Some(
                    raw.parse::<u64>()
                        .map_err(|_| format!("bad Body-Size {raw:?}"))?,
                )
            }
            "Rcpt" => recipients.push(SpooledRecipient {
                original: unpath(raw)?,
                ..SpooledRecipient::default()
            }),
            "Rcpt-Deliver-To" => {
                let i = rcpt(&mut recipients)?;
                recipients[i].deliver_to = unpath(raw)?;
            }
            "Rcpt-Route" => {
                let i = rcpt(&mut recipients)?;
                recipients[i].route = value()?;
            }
            "Rcpt-Route-Kind" => {
                let i = rcpt(&mut recipients)?;
                recipients[i].route_kind = value()?;
            }
            "Rcpt-Provenance" => {
                let i = rcpt(&mut recipients)?;
                recipients[i].provenance = value()?;
            }
            "Rcpt-Route-Tls" => {
                let i = rcpt(&mut recipients)?;
                recipients[i].tls = value()?;
            }
            "Rcpt-Param" => {
                let i = rcpt(&mut recipients)?;
                recipients[i].params.push(unparam(raw)?);
            }
            // Fields added by later versions are skipped.
            _ => {}
        }
    }
    let body_start = end + 2;
    let body_size = body_size.ok_or("no Body-Size")?;
    if (payload.len() - body_start) as u64 != body_size {
        return Err(format!(
            "body is {} bytes, Body-Size says {body_size}",
            payload.len() - body_start
        ));
    }
    let head = Head {
        id: id.ok_or("no Id")?,
        received_at: received_at.ok_or("no Received-At")?,
        client: client.ok_or("no Client")?,
        sender: sender.ok_or("no Sender")?,
        params,
        table_version: table_version.ok_or("no Table-Version")?,
        body_size,
        recipients,
    };
    Ok((head, body_start))
}

/// The message of a payload: its envelope and (moved out of `payload`) its body.
pub(crate) fn decode_message(mut payload: Vec<u8>) -> Result<NewMessage, String> {
    let (head, body_start) = decode_head(&payload)?;
    payload.drain(..body_start);
    Ok(NewMessage {
        id: head.id,
        received_at: head.received_at,
        client: head.client,
        sender: head.sender,
        recipients: head.recipients,
        table_version: head.table_version,
        body: payload,
        params: head.params,
    })
}

/// The payload of a state record for message `id`.
pub(crate) fn encode_state(id: &QueueId, status: &Status, at: SystemTime) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    line(&mut out, STATE_MARKER);
    field(&mut out, "Id", id.as_str());
    field(&mut out, "State", status.state.as_str());
    field(&mut out, "At", &time(at));
    for (i, r) in status.recipients.iter().enumerate() {
        if r.state == RecipientState::Pending && r.detail.is_empty() {
            continue;
        }
        let mut v = format!("{i} {} ", r.state.as_str());
        escape_into(&r.detail, b"", &mut v);
        field_raw(&mut out, "Rcpt-State", &v);
    }
    out
}

/// A decoded state payload: the message, its state, the recipients not pending (by
/// index), and when it was written (records without a readable `At` give `None`).
pub(crate) type StateRecord = (
    QueueId,
    MessageState,
    Vec<(usize, RecipientStatus)>,
    Option<SystemTime>,
);

/// Decodes a state payload.
pub(crate) fn decode_state(payload: &[u8]) -> Result<StateRecord, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "state is not UTF-8")?;
    let mut lines = text.split('\n').filter(|l| !l.is_empty());
    if lines.next() != Some(STATE_MARKER) {
        return Err("not a state record".into());
    }
    let mut id = None;
    let mut state = None;
    let mut at = None;
    let mut recipients = Vec::new();
    for l in lines {
        let (key, raw) = l
            .split_once(": ")
            .ok_or_else(|| format!("bad line {l:?}"))?;
        match key {
            "Id" => id = Some(raw.parse::<QueueId>().map_err(|e| e.to_string())?),
            "State" => state = Some(raw.parse::<MessageState>()?),
            // Only schedules depend on it: an unreadable time is no reason to drop the
            // record.
            "At" => at = parse_time(raw).ok(),
            "Rcpt-State" => {
                let mut parts = raw.splitn(3, ' ');
                let index = parts
                    .next()
                    .and_then(|i| i.parse::<usize>().ok())
                    .ok_or_else(|| format!("bad Rcpt-State {raw:?}"))?;
                let st = parts
                    .next()
                    .ok_or_else(|| format!("bad Rcpt-State {raw:?}"))?
                    .parse()?;
                let detail = unescape(parts.next().unwrap_or(""))?;
                recipients.push((index, RecipientStatus { state: st, detail }));
            }
            _ => {}
        }
    }
    Ok((id.ok_or("no Id")?, state.ok_or("no State")?, recipients, at))
}

fn line(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
}

fn field(out: &mut Vec<u8>, key: &str, value: &str) {
    escaped_field(out, key, "", value, "");
}

fn field_raw(out: &mut Vec<u8>, key: &str, escaped: &str) {
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(escaped.as_bytes());
    out.push(b'\n');
}

/// A reverse or forward path, written in angle brackets (`<>` for the null sender).
fn path(out: &mut Vec<u8>, key: &str, value: &str) {
    escaped_field(out, key, "<", value, ">");
}

/// `key: ` then `value` escaped between `open` and `close`, straight into the record.
fn escaped_field(out: &mut Vec<u8>, key: &str, open: &str, value: &str, close: &str) {
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(open.as_bytes());
    escape_runs(value, b"", |run| out.extend_from_slice(run.as_bytes()));
    out.extend_from_slice(close.as_bytes());
    out.push(b'\n');
}

fn unpath(raw: &str) -> Result<String, String> {
    let inner = raw
        .strip_prefix('<')
        .and_then(|r| r.strip_suffix('>'))
        .ok_or_else(|| format!("path not in <>: {raw:?}"))?;
    unescape(inner)
}

fn param(out: &mut Vec<u8>, key: &str, name: &str, value: &str) {
    let mut v = String::with_capacity(name.len() + value.len() + 1);
    escape_into(name, b"=", &mut v);
    v.push('=');
    escape_into(value, b"", &mut v);
    field_raw(out, key, &v);
}

fn unparam(raw: &str) -> Result<(String, String), String> {
    let (k, v) = raw
        .split_once('=')
        .ok_or_else(|| format!("parameter without '=': {raw:?}"))?;
    Ok((unescape(k)?, unescape(v)?))
}

/// Appends `s` with control characters, DEL, `%` and the bytes in `extra` as `%XX`.
fn escape_into(s: &str, extra: &[u8], out: &mut String) {
    escape_runs(s, extra, |run| out.push_str(run));
}

/// Hands `s` to `push` in runs: unchanged stretches, and `%XX` for each control
/// character, `%` and byte of `extra`. Only ASCII is escaped, so every run is whole
/// characters; a field without escapes is one run, with no copy in between.
fn escape_runs(s: &str, extra: &[u8], mut push: impl FnMut(&str)) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if b < 0x20 || b == 0x7f || b == b'%' || extra.contains(&b) {
            push(s.get(start..i).unwrap_or_default());
            let escaped = [b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]];
            push(std::str::from_utf8(&escaped).unwrap_or_default());
            start = i + 1;
        }
    }
    push(s.get(start..).unwrap_or_default());
}

fn unescape(s: &str) -> Result<String, String> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("escaped value is not UTF-8: {s:?}"))
}

/// `secs.micros` since the Unix epoch (times before it are written as 0).
fn time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

fn parse_time(raw: &str) -> Result<SystemTime, String> {
    let bad = || format!("bad time {raw:?}");
    let (secs, micros) = raw.split_once('.').ok_or_else(bad)?;
    let secs: u64 = secs.parse().map_err(|_| bad())?;
    let micros: u32 = micros.parse().map_err(|_| bad())?;
    if micros >= 1_000_000 {
        return Err(bad());
    }
    UNIX_EPOCH
        .checked_add(Duration::new(secs, micros * 1000))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NewMessage {
        NewMessage {
            id: QueueId::new(),
            received_at: UNIX_EPOCH + Duration::from_micros(1_767_225_600_123_456),
            client: "[192.0.2.1]:52100 (helo\r\n100%\u{7f})".into(),
            sender: String::new(),
            recipients: vec![
                SpooledRecipient {
                    original: "bob@example.com".into(),
                    deliver_to: "bob@m365.example>".into(),
                    route: "m365".into(),
                    route_kind: "smtp:[m365.example]:25".into(),
                    provenance: "example.com.yaml:12".into(),
                    tls: "verify".into(),
                    params: vec![
                        ("NOTIFY".into(), "SUCCESS,FAILURE".into()),
                        ("ORCPT".into(), "rfc822;bob=x@y".into()),
                    ],
                },
                SpooledRecipient {
                    original: "jörg@exämple.com".into(),
                    ..Default::default()
                },
            ],
            table_version: "abc".into(),
            body: b"Subject: x\r\n\r\n\0\xff\n\n.\r\n".to_vec(),
            params: vec![
                ("BODY".into(), "8BITMIME".into()),
                ("SMTPUTF8".into(), String::new()),
                ("X=Y".into(), "z".into()),
            ],
        }
    }

    #[test]
    fn escapes_controls_percent_and_extra_bytes_only() {
        let mut out = String::new();
        escape_into("a%b\x01c\x7f\u{e9}=\r\n", b"=", &mut out);
        assert_eq!(out, "a%25b%01c%7F\u{e9}%3D%0D%0A");
        assert_eq!(unescape(&out).as_deref(), Ok("a%b\x01c\x7f\u{e9}=\r\n"));
        let mut field_bytes = Vec::new();
        path(&mut field_bytes, "From", "odd\tname@example.com");
        assert_eq!(field_bytes, b"From: <odd%09name@example.com>\n");
    }

    #[test]
    fn message_round_trip() {
        let m = sample();
        let mut payload = encode_head(&m);
        payload.extend_from_slice(&m.body);
        assert_eq!(decode_message(payload).unwrap(), m);
    }

    #[test]
    fn state_round_trip() {
        let id = QueueId::new();
        let status = Status {
            state: MessageState::Held,
            recipients: vec![
                RecipientStatus::default(),
                RecipientStatus {
                    state: RecipientState::Deferred,
                    detail: "451 4.4.1 x\ny%".into(),
                },
            ],
            changed_at: None,
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_767_225_600_123_456);
        let p = encode_state(&id, &status, at);
        let (got_id, state, rcpts, got_at) = decode_state(&p).unwrap();
        assert_eq!((got_id, state), (id, MessageState::Held));
        assert_eq!(rcpts, vec![(1, status.recipients[1].clone())]);
        assert_eq!(got_at, Some(at));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let m = sample();
        let mut payload = encode_head(&m);
        payload.extend_from_slice(&m.body);
        for cut in 0..payload.len() {
            let _ = decode_message(payload[..cut].to_vec());
            let mut p = payload.clone();
            p[cut] = b'%';
            let _ = decode_message(p);
            let _ = decode_state(&payload[..cut]);
        }
    }
}
