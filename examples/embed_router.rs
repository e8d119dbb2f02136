//! Embedding the splitmx routing core in a custom MTA's RCPT handler.
//!
//! The MTA parses `RCPT TO:<...>`, asks the router, and answers with the reply the router
//! gives; for routed recipients it keeps the route to deliver later. Tables are reloaded
//! in place (e.g. on SIGHUP) while RCPTs keep being answered.
//!
//! Run: `cargo run --example embed_router --no-default-features -- routing`
//! (the argument is a routing directory; the shipped `routing/` works).

use std::sync::Arc;

use splitmx::routing::address::parse_path;
use splitmx::{Outcome, Router, RoutingConfig};

/// What our MTA remembers about an accepted recipient.
struct Accepted {
    rcpt: String,
    route: String,
    next_hop: String,
    table_version: String,
}

/// The MTA's RCPT handler: returns the SMTP reply line, and the recipient if accepted.
fn handle_rcpt(router: &Router, path: &str) -> (String, Option<Accepted>) {
    let rcpt = match parse_path(path) {
        Ok(Some(addr)) => addr,
        Ok(None) => return ("501 5.1.3 Null recipient not allowed".into(), None),
        Err(e) => return (format!("501 5.1.3 Bad recipient address: {e}"), None),
    };
    // Tables only: this MTA has no directory. `router.resolve(&rcpt).await` adds one.
    let resolution = router.resolve_tables(&rcpt);
    let reply = resolution.outcome.reply();
    let line = format!("{} {} {}", reply.code, reply.status, reply.text);
    let accepted = match &resolution.outcome {
        Outcome::Routed(r) if reply.is_positive() => Some(Accepted {
            rcpt: r.recipient.to_smtp(),
            route: r.route.name().to_string(),
            next_hop: r
                .route
                .next_hop()
                .map(ToString::to_string)
                .unwrap_or_else(|| r.route.kind().to_string()),
            table_version: resolution.version.to_string(),
        }),
        _ => None,
    };
    (line, accepted)
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "routing".to_string());
    let config = RoutingConfig::new(&dir).with_hostname("mx.example.com");
    let router = match Router::load(config) {
        Ok(r) => Arc::new(r),
        Err(errors) => {
            eprintln!("{errors}");
            std::process::exit(1);
        }
    };
    for path in [
        "<alice@example.com>",
        "<Bob+news@Example.NET>",
        "<carol@example.com>",
        "<nobody@example.com>",
        "<dave@example.com>",
        "<someone@elsewhere.example>",
        "<broken@@example.com>",
    ] {
        let (line, accepted) = handle_rcpt(&router, path);
        println!("RCPT TO:{path:<30} -> {line}");
        if let Some(a) = accepted {
            println!(
                "    deliver {} via {} ({}), tables {}",
                a.rcpt, a.route, a.next_hop, a.table_version
            );
        }
    }
    // A reload keeps answering from the old tables until the new ones are valid.
    match router.reload() {
        Ok(outcome) => println!("reload: {outcome:?}"),
        Err(e) => println!("reload refused, still serving {}: {}", e.kept, e.errors),
    }
}
