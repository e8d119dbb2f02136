//! `splitmx queue list|show`: the spool as an administrator inspects it, read-only, also
//! while the gateway runs. The spool keeps messages in segment files rather than one file
//! each; these commands make it as inspectable as a directory of files.

use std::process::ExitCode;
use std::time::SystemTime;

use serde_json::json;

use crate::config::GatewayConfig;
use crate::spool::{self, MessageInfo, QueueId};

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
        "{:<18} {:>8} {:>9} {:<8} {:<32} recipients",
        "id", "age", "size", "state", "sender"
    );
    for m in &messages {
        println!(
            "{:<18} {:>8} {:>9} {:<8} {:<32} {}",
            m.id,
            age(m),
            m.size,
            format!("{:?}", m.state).to_lowercase(),
            if m.sender.is_empty() { "<>" } else { &m.sender },
            recipients(m)
        );
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
    let secs = SystemTime::now()
        .duration_since(m.received_at)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn recipients(m: &MessageInfo) -> String {
    match m.recipients.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} (+{})", rest.len()),
    }
}
