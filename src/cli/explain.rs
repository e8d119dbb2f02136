//! `splitmx explain ADDRESS`: how one recipient is routed, step by step.

use std::process::ExitCode;

use crate::config::GatewayConfig;
use crate::routing::address::Address;
use crate::routing::resolve::Outcome;

pub(super) fn run(config: &GatewayConfig, address: &str, json: bool) -> ExitCode {
    let trimmed = address.trim().trim_start_matches('<').trim_end_matches('>');
    let rcpt = match Address::parse(trimmed) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("splitmx explain: '{address}' is not an address: {e}");
            return ExitCode::from(2);
        }
    };
    let (router, runtime) = match (super::load_router(config), super::runtime()) {
        (Ok(router), Ok(runtime)) => (router, runtime),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let resolution = runtime.block_on(router.explain(&rcpt));
    let reply = resolution.outcome.reply();
    if json {
        let value = serde_json::json!({ "resolution": resolution, "reply": reply });
        println!("{value}");
    } else {
        println!("recipient:  {}", resolution.recipient);
        println!("key:        {}", rcpt.key());
        println!(
            "tables:     {} ({})",
            resolution.version,
            config.routing.dir().display()
        );
        println!("steps:");
        for (i, s) in resolution.steps.iter().enumerate() {
            println!("  {}. {:<28} {:<40} {}", i + 1, s.lookup, s.key, s.result);
        }
        match &resolution.outcome {
            Outcome::Routed(r) => {
                println!("route:      {} ({})", r.route.name(), r.route.kind());
                if let Some(hop) = r.route.next_hop() {
                    println!("next hop:   {hop}");
                }
                println!("deliver to: {}", r.recipient);
                println!("matched:    {}", r.provenance);
            }
            Outcome::Unrouted(u) => println!("route:      none ({u:?})"),
            Outcome::TempFail { reason, .. } => {
                println!("route:      none, temporary failure: {reason}")
            }
        }
        println!("reply:      {reply}");
    }
    match resolution.outcome {
        Outcome::Routed(_) => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}
