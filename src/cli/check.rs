//! `splitmx check`: validate the routing tables offline, list every error, exit 1 on any.

use std::process::ExitCode;

use serde_json::json;

use crate::config::GatewayConfig;
use crate::routing::table;

pub(super) fn run(config: &GatewayConfig, json: bool) -> ExitCode {
    match table::load(&config.routing) {
        Ok(snapshot) => {
            let summary = snapshot.summary();
            if json {
                println!("{}", json!({ "ok": true, "summary": summary }));
            } else {
                println!(
                    "{}: ok: {} files, {} routes, {} domains, {} recipients, version {}",
                    config.routing.dir().display(),
                    summary.files,
                    summary.routes,
                    summary.domains,
                    summary.recipients,
                    summary.version
                );
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            if json {
                println!("{}", json!({ "ok": false, "errors": errors }));
            } else {
                for e in errors.iter() {
                    println!("{e}");
                }
                println!(
                    "{}: {} error{}; the tables were not loaded",
                    config.routing.dir().display(),
                    errors.len(),
                    if errors.len() == 1 { "" } else { "s" }
                );
            }
            ExitCode::from(1)
        }
    }
}
