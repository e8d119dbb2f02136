//! `splitmx report`: the migration's progress, from the recipient journal.
//!
//! For a period (the last `--days` days, UTC, ending `--until`), per route: how many
//! recipients it carries now (each recipient counts for the route of its last message) and
//! how many messages it carried; and the recipients still on the old side (`--old
//! legacy,onprem`), busiest first. Plain text, `--json`, or a self-contained HTML page
//! with a bar chart (`--html FILE`).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use crate::config::GatewayConfig;
use crate::journal::{self, Day, JournalView, Period, day::format_timestamp};

/// The command's arguments.
pub(super) struct Args {
    pub(super) days: u32,
    pub(super) until: Option<String>,
    pub(super) old: Vec<String>,
    pub(super) json: bool,
    pub(super) html: Option<PathBuf>,
}

/// One route's share.
#[derive(Debug, Clone, Serialize)]
pub(super) struct RouteShare {
    pub(super) route: String,
    pub(super) kind: String,
    pub(super) recipients: usize,
    pub(super) recipients_percent: f64,
    pub(super) messages: u64,
    pub(super) messages_percent: f64,
}

/// A recipient still on the old side.
#[derive(Debug, Clone, Serialize)]
pub(super) struct OldRecipient {
    pub(super) recipient: String,
    pub(super) route: String,
    pub(super) kind: String,
    pub(super) messages: u64,
    pub(super) last_seen: String,
}

/// The recipients still on the old side.
#[derive(Debug, Clone, Serialize)]
pub(super) struct OldSide {
    pub(super) routes: Vec<String>,
    pub(super) recipients: usize,
    pub(super) recipients_percent: f64,
    pub(super) messages: u64,
    pub(super) list: Vec<OldRecipient>,
}

/// The report, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Report {
    pub(super) journal: PathBuf,
    pub(super) period: Period,
    pub(super) days: u32,
    pub(super) recipients: usize,
    pub(super) messages: u64,
    pub(super) routes: Vec<RouteShare>,
    pub(super) old: Option<OldSide>,
    pub(super) files: usize,
    pub(super) skipped_lines: usize,
}

pub(super) fn run(config: &GatewayConfig, args: &Args) -> ExitCode {
    let until = match &args.until {
        Some(s) => match Day::parse(s) {
            Some(d) => d,
            None => {
                eprintln!("splitmx report: --until '{s}' is not a date (YYYY-MM-DD)");
                return ExitCode::from(2);
            }
        },
        None => Day::today(),
    };
    let period = Period::ending(until, args.days);
    let dir = journal::journal_dir(&config.spool);
    let view = match journal::load(&dir, period) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("splitmx report: journal: {e}");
            return ExitCode::from(2);
        }
    };
    for w in &view.warnings {
        eprintln!("splitmx report: journal: {w}");
    }
    if view.files == 0 {
        eprintln!(
            "splitmx report: no journal files in {} from {} to {}",
            dir.display(),
            period.first,
            period.last
        );
    }
    let old: Vec<String> = args
        .old
        .iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let report = build(&view, &old);
    for name in &old {
        if !report.routes.iter().any(|r| &r.route == name) {
            eprintln!(
                "splitmx report: route '{name}' carried no mail from {} to {}",
                period.first, period.last
            );
        }
    }
    if let Some(path) = &args.html {
        let page = super::report_html::page(&report);
        if let Err(e) = std::fs::write(path, page) {
            eprintln!("splitmx report: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => super::print_out(&format!("{s}\n")),
            Err(e) => {
                eprintln!("splitmx report: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        super::print_out(&text(&report));
    }
    ExitCode::SUCCESS
}

/// A percentage with one decimal.
pub(super) fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 1000.0 / whole as f64).round() / 10.0
}

/// Compute the report from the journal.
pub(super) fn build(view: &JournalView, old: &[String]) -> Report {
    struct Acc {
        kind: String,
        kind_seen: u64,
        recipients: usize,
        messages: u64,
    }
    let mut routes: HashMap<&str, Acc> = HashMap::new();
    for r in &view.recipients {
        for (i, u) in r.routes.iter().enumerate() {
            let acc = routes.entry(u.route.as_str()).or_insert(Acc {
                kind: String::new(),
                kind_seen: 0,
                recipients: 0,
                messages: 0,
            });
            acc.messages += u.messages;
            if u.last_seen >= acc.kind_seen {
                acc.kind_seen = u.last_seen;
                acc.kind.clone_from(&u.kind);
            }
            // A recipient counts for the route of its last message.
            if i == 0 {
                acc.recipients += 1;
            }
        }
    }
    let total_recipients = view.recipients.len();
    let total_messages: u64 = view.recipients.iter().map(|r| r.messages()).sum();
    let mut shares: Vec<RouteShare> = routes
        .into_iter()
        .map(|(route, a)| RouteShare {
            route: route.to_string(),
            kind: a.kind,
            recipients: a.recipients,
            recipients_percent: percent(a.recipients as u64, total_recipients as u64),
            messages: a.messages,
            messages_percent: percent(a.messages, total_messages),
        })
        .collect();
    shares.sort_by(|a, b| {
        b.recipients
            .cmp(&a.recipients)
            .then_with(|| b.messages.cmp(&a.messages))
            .then_with(|| a.route.cmp(&b.route))
    });
    let old = (!old.is_empty()).then(|| {
        let names: BTreeSet<&str> = old.iter().map(String::as_str).collect();
        let mut list: Vec<OldRecipient> = view
            .recipients
            .iter()
            .filter_map(|r| {
                let current = r.current()?;
                names
                    .contains(current.route.as_str())
                    .then(|| OldRecipient {
                        recipient: r.recipient.clone(),
                        route: current.route.clone(),
                        kind: current.kind.clone(),
                        messages: r.messages(),
                        last_seen: format_timestamp(r.last_seen()),
                    })
            })
            .collect();
        list.sort_by(|a, b| {
            b.messages
                .cmp(&a.messages)
                .then_with(|| a.recipient.cmp(&b.recipient))
        });
        OldSide {
            routes: names.iter().map(|s| s.to_string()).collect(),
            recipients: list.len(),
            recipients_percent: percent(list.len() as u64, total_recipients as u64),
            messages: list.iter().map(|o| o.messages).sum(),
            list,
        }
    });
    Report {
        journal: view.dir.clone(),
        period: view.period,
        days: view.period.days(),
        recipients: total_recipients,
        messages: total_messages,
        routes: shares,
        old,
        files: view.files,
        skipped_lines: view.skipped,
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The plain-text report.
pub(super) fn text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "journal:    {} ({} to {}, {})",
        report.journal.display(),
        report.period.first,
        report.period.last,
        plural(u64::from(report.days), "day", "days")
    );
    let _ = writeln!(
        out,
        "total:      {}, {}",
        plural(report.recipients as u64, "recipient", "recipients"),
        plural(report.messages, "message", "messages")
    );
    if !report.routes.is_empty() {
        let rw = report
            .routes
            .iter()
            .map(|r| r.route.len())
            .max()
            .unwrap_or(0)
            .max("route".len());
        let kw = report
            .routes
            .iter()
            .map(|r| r.kind.len())
            .max()
            .unwrap_or(0)
            .max("kind".len());
        let _ = writeln!(
            out,
            "\n{:<rw$}  {:<kw$}  {:>17}  {:>17}",
            "route", "kind", "recipients", "messages"
        );
        for r in &report.routes {
            let _ = writeln!(
                out,
                "{:<rw$}  {:<kw$}  {:>9} {:>6.1}%  {:>9} {:>6.1}%",
                r.route, r.kind, r.recipients, r.recipients_percent, r.messages, r.messages_percent
            );
        }
    }
    if let Some(old) = &report.old {
        let _ = writeln!(
            out,
            "\nstill on the old side ({}): {} ({:.1}%), {}",
            old.routes.join(", "),
            plural(old.recipients as u64, "recipient", "recipients"),
            old.recipients_percent,
            plural(old.messages, "message", "messages")
        );
        for o in &old.list {
            let _ = writeln!(
                out,
                "  {}  {}  {}  last {}",
                o.recipient,
                o.route,
                plural(o.messages, "message", "messages"),
                o.last_seen
            );
        }
    }
    out
}
