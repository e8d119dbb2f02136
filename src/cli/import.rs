//! `splitmx import postfix-transport FILE --out DIR`: a Postfix transport map (and
//! relay_recipients) into routing tables, then the same validation as `splitmx check`
//! on DIR.
//!
//! Exit codes: 0 everything was carried over and DIR checks clean; 1 the tables were
//! written but something needs a decision (an entry not carried over, an address routed
//! differently from Postfix) or DIR does not check clean; 2 nothing was written (a map
//! unreadable or too large, a bad option, files in the way without `--force`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::ConfigArgs;
use crate::import::{self, ImportOptions, MapFile};
use crate::routing::table;

#[derive(clap::Args, Debug)]
pub(super) struct PostfixTransportArgs {
    /// The transport map's source file (e.g. /etc/postfix/transport).
    file: PathBuf,
    /// relay_recipient_maps source file: in its domains only the recipients it lists
    /// exist (others get 550 5.1.1).
    #[arg(long, value_name = "FILE")]
    relay_recipients: Option<PathBuf>,
    /// Directory to write the tables into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Import only this domain and its subdomains (repeatable).
    #[arg(long = "domain", value_name = "DOMAIN")]
    domains: Vec<String>,
    /// Where Postfix sends what no entry decides (main.cf's relay_transport and
    /// relayhost), e.g. "smtp:[old-mx.example.com]". Without it, such recipients are
    /// deferred with the not-imported route.
    #[arg(long, value_name = "TRANSPORT")]
    fallback: Option<String>,
    /// Read master.cf service NAME as TYPE: smtp, relay, lmtp, error or retry
    /// (repeatable), e.g. --service slow=smtp.
    #[arg(long = "service", value_name = "NAME=TYPE")]
    services: Vec<String>,
    /// Postfix's recipient_delimiter from main.cf ("" when it sets none).
    #[arg(long, value_name = "CHARS", default_value = "+")]
    recipient_delimiter: String,
    /// Overwrite table files that exist in DIR.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

pub(super) fn postfix_transport(args: PostfixTransportArgs) -> ExitCode {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("splitmx import: {e}");
        ExitCode::from(2)
    };
    let config = match args.config.load(Some(&args.out)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut services = Vec::new();
    for s in &args.services {
        match s.split_once('=') {
            Some((name, kind)) => services.push((name.to_string(), kind.to_string())),
            None => {
                return fail(&format!(
                    "--service {s}: expected NAME=TYPE, e.g. slow=smtp"
                ));
            }
        }
    }
    let transport_name = args.file.display().to_string();
    let transport = match import::read_map_file(&args.file) {
        Ok(b) => b,
        Err(e) => return fail(&e),
    };
    let relay_name = args
        .relay_recipients
        .as_ref()
        .map(|p| p.display().to_string());
    let relay = match &args.relay_recipients {
        Some(p) => match import::read_map_file(p) {
            Ok(b) => Some(b),
            Err(e) => return fail(&e),
        },
        None => None,
    };
    let options = ImportOptions {
        domains: args.domains.clone(),
        fallback: args.fallback.clone(),
        services,
        postfix_delimiter: args.recipient_delimiter.clone(),
        routing: config.routing.clone(),
        date: Some(utc_date(SystemTime::now())),
    };
    let relay_file = match (&relay_name, &relay) {
        (Some(name), Some(bytes)) => Some(MapFile { name, bytes }),
        _ => None,
    };
    let result = import::import_postfix(
        MapFile {
            name: &transport_name,
            bytes: &transport,
        },
        relay_file,
        &options,
    );
    let imported = match result {
        Ok(i) => i,
        Err(e) => return fail(&e),
    };
    let out = args.out.display().to_string();
    if imported.report.summary.domains == 0 {
        if args.json {
            println!(
                "{}",
                json!({ "ok": false, "written": [], "report": imported.report })
            );
        } else {
            println!("{}", imported.report);
            println!("{out}: nothing written: the maps name no domain to import");
        }
        return ExitCode::from(1);
    }
    let written = match import::write_files(&args.out, &imported.files, args.force) {
        Ok(w) => w,
        Err(e) => return fail(&e),
    };
    let check = table::load(&config.routing);
    let ok = check.is_ok() && !imported.report.needs_attention();
    if args.json {
        let check = match &check {
            Ok(snapshot) => json!({ "ok": true, "summary": snapshot.summary() }),
            Err(errors) => json!({ "ok": false, "errors": errors }),
        };
        let written: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        println!(
            "{}",
            json!({ "ok": ok, "written": written, "report": imported.report, "check": check })
        );
    } else {
        println!("{}", imported.report);
        if let Some(errors) = &imported.load_errors {
            println!(
                "the generated tables do not load, so they were not probed ({} error{}, below)",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
        }
        println!("wrote {} files to {out}", written.len());
        match &check {
            Ok(snapshot) => {
                let s = snapshot.summary();
                println!(
                    "{out}: ok: {} files, {} routes, {} domains, {} recipients, version {}",
                    s.files, s.routes, s.domains, s.recipients, s.version
                );
            }
            Err(errors) => {
                for e in errors.iter() {
                    println!("{e}");
                }
                println!(
                    "{out}: {} error{}; fix them before the gateway can load these tables",
                    errors.len(),
                    if errors.len() == 1 { "" } else { "s" }
                );
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `YYYY-MM-DD` (UTC) for the files' header comment.
fn utc_date(now: SystemTime) -> String {
    let days = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_are_utc_calendar_days() {
        let at = |secs| utc_date(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01");
        assert_eq!(at(951_782_400), "2000-02-29");
        assert_eq!(at(1_709_251_199), "2024-02-29");
        assert_eq!(at(1_735_689_600), "2025-01-01");
    }
}
