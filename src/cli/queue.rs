//! `splitmx queue list|show`: the spool as an administrator inspects it, read-only, also
//! while the gateway runs. The spool keeps messages in segment files rather than one file
//! each; these commands make it as inspectable as a directory of files.
//!
//! `splitmx queue retry|hold|release|delete` change the queue: through the control socket
//! of the running gateway, or, when no gateway runs, by writing the spool directly.

use std::process::ExitCode;
use std::time::SystemTime;

use serde_json::json;

use crate::config::GatewayConfig;
use crate::delivery::control::{self, Request};
use crate::spool::{self, MessageInfo, MessageState, QueueId, RecipientState, Spool, SpoolError};

/// `queue list`: one line per live message, oldest first.
pub(super) fn list(config: &GatewayConfig, json: bool) -> ExitCode {
    let messages = match spool::scan(&config.spool) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("splitmx queue: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        println!("{}", json!({ "messages": messages }));
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<16} {:>6} {:>9} {:<7} {:<28} {:<28} {:<28} last error",
        "id", "age", "size", "state", "sender", "recipients", "next hop"
    );
    for m in &messages {
        let line = format!(
            "{:<16} {:>6} {:>9} {:<7} {:<28} {:<28} {:<28} {}",
            m.id,
            age(m),
            m.size,
            m.state.as_str(),
            if m.sender.is_empty() { "<>" } else { &m.sender },
            recipients(m),
            next_hops(m),
            last_error(m),
        );
        println!("{}", line.trim_end());
    }
    println!(
        "{} message{} in {}",
        messages.len(),
        if messages.len() == 1 { "" } else { "s" },
        config.spool.display()
    );
    ExitCode::SUCCESS
}

/// `queue show ID`: envelope, routes, state and the message header (or the whole message).
pub(super) fn show(config: &GatewayConfig, id: &str, json: bool, body: bool) -> ExitCode {
    let Ok(id) = id.parse::<QueueId>() else {
        eprintln!("splitmx queue show: '{id}' is not a queue id");
        return ExitCode::from(2);
    };
    let stored = match spool::read_message(&config.spool, &id) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("splitmx queue show: {e}");
            return ExitCode::from(1);
        }
    };
    let env = &stored.envelope;
    let text = &env.body;
    let header_end = text
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2)
        .unwrap_or(text.len());
    let shown = if body { &text[..] } else { &text[..header_end] };
    if json {
        let rcpts: Vec<_> = env
            .recipients
            .iter()
            .zip(
                stored
                    .info
                    .recipient_status
                    .iter()
                    .map(Some)
                    .chain(std::iter::repeat(None)),
            )
            .map(|(r, status)| {
                json!({
                    "recipient": r.original, "deliver_to": r.deliver_to, "route": r.route,
                    "next_hop": r.route_kind, "provenance": r.provenance, "params": r.params,
                    "status": status,
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "info": stored.info, "client": env.client, "sender": env.sender,
                "table_version": env.table_version, "params": env.params, "recipients": rcpts,
                "message": String::from_utf8_lossy(shown),
            })
        );
        return ExitCode::SUCCESS;
    }
    println!("id:            {}", stored.info.id);
    println!("state:         {:?}", stored.info.state);
    println!("received:      {} ago", age(&stored.info));
    println!("client:        {}", env.client);
    println!("sender:        <{}>", env.sender);
    println!("size:          {}", stored.info.size);
    println!("tables:        {}", env.table_version);
    println!(
        "segment:       {} @ {}",
        stored.info.segment.display(),
        stored.info.offset
    );
    for (i, r) in env.recipients.iter().enumerate() {
        let status = stored.info.recipient_status.get(i);
        println!("recipient:     <{}>", r.original);
        println!("  deliver to:  <{}>", r.deliver_to);
        println!("  route:       {} ({})", r.route, r.route_kind);
        println!("  matched:     {}", r.provenance);
        if let Some(s) = status {
            println!("  state:       {:?} {}", s.state, s.detail);
        }
    }
    println!();
    print!("{}", String::from_utf8_lossy(shown));
    ExitCode::SUCCESS
}

fn age(m: &MessageInfo) -> String {
    since(m.received_at)
}

/// How long ago `t` was, in the unit an operator reads at a glance.
fn since(t: SystemTime) -> String {
    let secs = SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `queue retry|hold|release|delete`.
pub(super) fn change(
    config: &GatewayConfig,
    verb: &str,
    id: Option<&str>,
    all: bool,
    json: bool,
) -> ExitCode {
    let id = match id.map(str::parse::<QueueId>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            eprintln!(
                "splitmx queue {verb}: '{}' is not a queue id",
                id.unwrap_or("")
            );
            return ExitCode::from(2);
        }
    };
    let request = match (verb, id) {
        ("retry", _) if all => Request::Retry(None),
        ("retry", Some(id)) => Request::Retry(Some(id)),
        ("hold", Some(id)) => Request::Hold(id),
        ("release", Some(id)) => Request::Release(id),
        ("delete", Some(id)) => Request::Delete(id),
        _ => {
            eprintln!("splitmx queue {verb}: a queue id is needed");
            return ExitCode::from(2);
        }
    };
    let Ok(runtime) = super::runtime() else {
        return ExitCode::from(2);
    };
    let answer = runtime.block_on(async {
        match control::send(&config.spool, request).await {
            Ok(answer) => Ok(answer),
            // No gateway listening: change the spool itself (this takes its lock, so it
            // fails cleanly if a gateway is starting right now).
            Err(_) => offline(&config.spool, request).await,
        }
    });
    let (ok, text) = match answer {
        Ok(a) => match a.strip_prefix("ok ") {
            Some(n) => (true, n.to_string()),
            None => (false, a.strip_prefix("error ").unwrap_or(&a).to_string()),
        },
        Err(e) => (false, e.to_string()),
    };
    if json {
        println!(
            "{}",
            json!({ "request": request.to_line(), "ok": ok, "result": text })
        );
    } else if ok {
        let what = match request {
            Request::Retry(None) => format!("{text} message(s) scheduled for delivery now"),
            Request::Retry(Some(id)) => format!("{id} scheduled for delivery now"),
            Request::Hold(id) => format!("{id} held"),
            Request::Release(id) => format!("{id} released"),
            Request::Delete(id) => format!("{id} deleted"),
        };
        println!("{what}");
    } else {
        eprintln!("splitmx queue {verb}: {text}");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Applies a request to the spool of a stopped gateway.
async fn offline(dir: &std::path::Path, request: Request) -> Result<String, SpoolError> {
    let spool = Spool::open(dir, spool::SpoolOptions::default()).await?;
    let live = |id: QueueId| -> Result<MessageInfo, SpoolError> {
        spool
            .info(&id)
            .filter(|i| !i.state.is_final())
            .ok_or(SpoolError::NotFound {
                id,
                dir: dir.to_path_buf(),
            })
    };
    let result = match request {
        // Without a gateway nothing is delivered; the next start tries every message.
        Request::Retry(None) => Ok(format!("{}", spool.list().len())),
        Request::Retry(Some(id)) => live(id).map(|_| "1".to_string()),
        Request::Hold(id) => match live(id) {
            Ok(_) => spool
                .mark(&id, MessageState::Held)
                .await
                .map(|()| "1".into()),
            Err(e) => Err(e),
        },
        Request::Release(id) => match live(id) {
            Ok(i) if i.state == MessageState::Held => spool
                .mark(&id, MessageState::Queued)
                .await
                .map(|()| "1".into()),
            Ok(_) => Ok(format!("error message {id} is not held")),
            Err(e) => Err(e),
        },
        Request::Delete(id) => match live(id) {
            Ok(_) => spool
                .mark(&id, MessageState::Deleted)
                .await
                .map(|()| "1".into()),
            Err(e) => Err(e),
        },
    };
    let _ = spool.close().await;
    result.map(|n| {
        if n.starts_with("error ") {
            n
        } else {
            format!("ok {n}")
        }
    })
}

/// The distinct next hops of a message's open recipients.
fn next_hops(m: &MessageInfo) -> String {
    let mut hops: Vec<&str> = Vec::new();
    for (i, hop) in m.next_hops.iter().enumerate() {
        let open = m
            .recipient_status
            .get(i)
            .is_none_or(|s| !s.state.is_final());
        if open && !hops.contains(&hop.as_str()) {
            hops.push(hop);
        }
    }
    match hops.as_slice() {
        [] => String::new(),
        [one] => (*one).to_string(),
        [first, rest @ ..] => format!("{first} (+{})", rest.len()),
    }
}

/// The last temporary error, with how long ago the attempt that got it ended: "(3m ago)
/// 451 4.4.1 ...".
fn last_error(m: &MessageInfo) -> String {
    let Some(detail) = m
        .recipient_status
        .iter()
        .rev()
        .find(|s| s.state == RecipientState::Deferred && !s.detail.is_empty())
        .map(|s| s.detail.as_str())
    else {
        return String::new();
    };
    match m.changed_at {
        Some(t) => format!("({} ago) {detail}", since(t)),
        None => detail.to_string(),
    }
}

fn recipients(m: &MessageInfo) -> String {
    match m.recipients.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} (+{})", rest.len()),
    }
}
