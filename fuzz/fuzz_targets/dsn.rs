//! Fuzz target for `splitmx::delivery::bounce`: the DSN checker never panics on any bytes,
//! and every notice the builder makes from any envelope, result and original passes the
//! checker with one recipient block per reported recipient.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use splitmx::delivery::bounce::{self, BounceInput, NoticeKind, ReportedRecipient};
use splitmx::delivery::{RcptResult, ResultKind};
use splitmx::spool::{NewMessage, QueueId, SpooledRecipient};

fuzz_target!(|data: &[u8]| {
    let _ = bounce::parse(data);

    // Fields separated by 0xFF bytes: flags, sender, deliver_to, ORCPT, NOTIFY, ENVID,
    // status, detail, remote, host; the rest is the original message.
    let mut fields = data.splitn(11, |b| *b == 0xFF);
    let flags = fields.next().and_then(|f| f.first().copied()).unwrap_or(0);
    let mut text = || String::from_utf8_lossy(fields.next().unwrap_or(&[])).into_owned();
    let (sender, deliver_to, orcpt, notify, envid) = (text(), text(), text(), text(), text());
    let (status, detail, remote, host) = (text(), text(), text(), text());
    let body = fields.next().unwrap_or(&[]).to_vec();

    let mut rcpt_params = Vec::new();
    if flags & 1 != 0 {
        rcpt_params.push(("ORCPT".to_string(), orcpt));
    }
    if flags & 2 != 0 {
        rcpt_params.push(("NOTIFY".to_string(), notify));
    }
    let mut params = Vec::new();
    if flags & 4 != 0 {
        params.push(("ENVID".to_string(), envid));
    }
    if flags & 8 != 0 {
        params.push(("RET".to_string(), "FULL".to_string()));
    }
    if flags & 16 != 0 {
        params.push(("SMTPUTF8".to_string(), String::new()));
    }
    let original = NewMessage {
        id: QueueId::new(),
        received_at: UNIX_EPOCH + Duration::from_secs(1_767_225_600),
        client: String::new(),
        sender,
        recipients: vec![SpooledRecipient {
            original: deliver_to.clone(),
            deliver_to,
            params: rcpt_params,
            ..SpooledRecipient::default()
        }],
        table_version: String::new(),
        body,
        params,
    };
    let result = RcptResult {
        kind: ResultKind::Bounced,
        status,
        detail,
        remote: (flags & 32 != 0).then_some(remote),
        remote_reply: flags & 64 != 0,
    };
    let kind = if flags & 128 != 0 {
        NoticeKind::Delay
    } else {
        NoticeKind::Failure
    };
    let input = BounceInput {
        reporting_mta: &host,
        original: &original,
        recipients: vec![ReportedRecipient {
            index: 0,
            result: &result,
            last_attempt: Some(original.received_at),
        }],
        kind,
        now: original.received_at,
        retry_until: Some(original.received_at),
    };
    if let Some(dsn) = bounce::build(&input) {
        match bounce::parse(&dsn.message) {
            Ok(parsed) => {
                assert_eq!(parsed.recipients.len(), dsn.reported);
                assert_eq!(parsed.parts.len(), 3);
            }
            Err(e) => panic!("built DSN does not parse: {e}"),
        }
        assert_eq!(dsn.eight_bit, !dsn.message.is_ascii());
    }
});
