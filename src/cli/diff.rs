//! `splitmx diff --against DIR`: a dry run of a routing change.
//!
//! Resolves recipients (the journal's, or a list) through the live tables and through the
//! proposed ones in DIR, both with the configured directory in the loop, and says who
//! would be routed differently: moved to another route, or refused (unknown, rejected,
//! deferred) where they were accepted before, with their message counts from the journal.
//!
//! Exit codes, for CI: 0 nothing changes, 1 something changes, 2 the comparison could not
//! be made (bad arguments, tables with errors, an unreadable journal or list, or
//! recipients whose answer is unknown on both sides, e.g. the directory is down).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;

use super::diff_output::{self, Group};
use crate::config::GatewayConfig;
use crate::journal::{self, Day, JournalView, Period};
use crate::routing::address::Address;
use crate::routing::resolve::{Outcome, Unrouted};
use crate::routing::route::RouteKind;
use crate::routing::router::Router;

/// Largest `--recipients` file read.
const MAX_LIST_BYTES: u64 = 256 * 1024 * 1024;
/// Lookups in flight at once (they matter with a directory in the loop).
const CONCURRENCY: usize = 32;

/// The command's arguments.
pub(super) struct Args {
    pub(super) against: PathBuf,
    pub(super) recipients: Option<PathBuf>,
    pub(super) days: u32,
    pub(super) until: Option<String>,
    pub(super) json: bool,
}

/// What one side of the comparison says about a recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub(super) enum Answer {
    /// Accepted and delivered on a route.
    Routed {
        route: String,
        kind: String,
        deliver_to: String,
    },
    /// Refused at RCPT time.
    Refused {
        /// `unknown`, `relay denied`, `temporary failure`, or the reject/defer route's name.
        label: String,
        code: u16,
        status: String,
        text: String,
    },
}

impl Answer {
    fn of(outcome: &Outcome) -> Answer {
        let refused = |label: &str, reply: crate::Reply| Answer::Refused {
            label: label.to_string(),
            code: reply.code,
            status: reply.status,
            text: reply.text,
        };
        match outcome {
            Outcome::Routed(r) => match r.route.kind() {
                RouteKind::Reject(_) | RouteKind::Defer(_) => {
                    refused(r.route.name(), outcome.reply())
                }
                kind => Answer::Routed {
                    route: r.route.name().to_string(),
                    kind: kind.to_string(),
                    deliver_to: r.recipient.to_smtp(),
                },
            },
            Outcome::Unrouted(Unrouted::UnknownUser) => refused("unknown", outcome.reply()),
            Outcome::Unrouted(Unrouted::RelayDenied) => refused("relay denied", outcome.reply()),
            Outcome::TempFail { .. } => refused("temporary failure", outcome.reply()),
        }
    }

    /// How the answer is named in groups: the route, or why it is refused and the reply.
    pub(super) fn label(&self) -> String {
        match self {
            Answer::Routed { route, .. } => route.clone(),
            Answer::Refused {
                label,
                code,
                status,
                ..
            } => format!("{label} ({code} {status})"),
        }
    }

    fn is_temp_fail(&self) -> bool {
        matches!(self, Answer::Refused { label, .. } if label == "temporary failure")
    }
}

/// One recipient whose answer changes.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Changed {
    pub(super) recipient: String,
    pub(super) messages: u64,
    pub(super) from: Answer,
    pub(super) to: Answer,
}

/// Where the checked recipients came from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub(super) enum Source {
    Journal { dir: PathBuf },
    File { path: PathBuf },
}

/// One side's tables.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Tables {
    pub(super) dir: PathBuf,
    pub(super) version: String,
}

/// The whole result, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Diff {
    pub(super) live: Tables,
    pub(super) proposed: Tables,
    pub(super) source: Source,
    pub(super) period: Period,
    pub(super) days: u32,
    pub(super) checked: usize,
    pub(super) changed: usize,
    pub(super) messages: u64,
    pub(super) summary: String,
    pub(super) groups: Vec<Group>,
    /// Recipients neither side could answer now (temporary failure on both).
    pub(super) unresolved: Vec<Changed>,
}

pub(super) fn run(config: &GatewayConfig, args: &Args) -> ExitCode {
    match compare(config, args) {
        Ok(diff) => {
            if args.json {
                match serde_json::to_string_pretty(&diff) {
                    Ok(s) => super::print_out(&format!("{s}\n")),
                    Err(e) => {
                        eprintln!("splitmx diff: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                super::print_out(&diff_output::text(&diff));
            }
            if !diff.unresolved.is_empty() {
                eprintln!(
                    "splitmx diff: {} recipients could not be resolved on either side (temporary failure); the result is incomplete",
                    diff.unresolved.len()
                );
                ExitCode::from(2)
            } else if diff.changed > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(code) => code,
    }
}

fn compare(config: &GatewayConfig, args: &Args) -> Result<Diff, ExitCode> {
    let until = match &args.until {
        Some(s) => Day::parse(s).ok_or_else(|| {
            eprintln!("splitmx diff: --until '{s}' is not a date (YYYY-MM-DD)");
            ExitCode::from(2)
        })?,
        None => Day::today(),
    };
    let period = Period::ending(until, args.days);
    let journal_dir = journal::journal_dir(&config.spool);
    let view = journal::load(&journal_dir, period).map_err(|e| {
        eprintln!("splitmx diff: journal: {e}");
        ExitCode::from(2)
    })?;
    for w in &view.warnings {
        eprintln!("splitmx diff: journal: {w}");
    }
    let (recipients, source) = match &args.recipients {
        Some(path) => (read_list(path)?, Source::File { path: path.clone() }),
        None => (
            journal_recipients(&view),
            Source::Journal {
                dir: journal_dir.clone(),
            },
        ),
    };
    if recipients.is_empty() {
        eprintln!(
            "splitmx diff: no recipients to check (the journal in {} has none from {} to {}; give --recipients FILE)",
            journal_dir.display(),
            period.first,
            period.last
        );
    }
    let directory = super::directory(config)?;
    let live = load_side(&config.routing, directory.clone(), "live")?;
    let proposed_config = super::routing_in(config, &args.against);
    let proposed = load_side(&proposed_config, directory, "proposed")?;
    let runtime = super::runtime()?;
    let answers = runtime.block_on(resolve_all(&live, &proposed, &recipients));
    let mut changed = Vec::new();
    let mut unresolved = Vec::new();
    for (rcpt, (from, to)) in recipients.iter().zip(answers) {
        if from == to {
            if from.is_temp_fail() {
                unresolved.push(Changed {
                    recipient: rcpt.key().to_string(),
                    messages: messages_of(&view, rcpt),
                    from,
                    to,
                });
            }
            continue;
        }
        changed.push(Changed {
            recipient: rcpt.key().to_string(),
            messages: messages_of(&view, rcpt),
            from,
            to,
        });
    }
    let groups = diff_output::group(changed);
    let changed_count = groups.iter().map(|g| g.recipients).sum();
    let messages = groups.iter().map(|g| g.messages).sum();
    let summary = diff_output::summary(&groups, recipients.len(), period.days());
    Ok(Diff {
        live: Tables {
            dir: config.routing.dir().to_path_buf(),
            version: live.version().to_string(),
        },
        proposed: Tables {
            dir: args.against.clone(),
            version: proposed.version().to_string(),
        },
        source,
        period,
        days: period.days(),
        checked: recipients.len(),
        changed: changed_count,
        messages,
        summary,
        groups,
        unresolved,
    })
}

fn messages_of(view: &JournalView, rcpt: &Address) -> u64 {
    view.get(rcpt.key()).map(|r| r.messages()).unwrap_or(0)
}

fn load_side(
    routing: &crate::RoutingConfig,
    directory: Option<Arc<dyn crate::Directory>>,
    which: &str,
) -> Result<Arc<Router>, ExitCode> {
    let router = Router::load(routing.clone()).map_err(|errors| {
        eprintln!("{errors}");
        eprintln!(
            "splitmx diff: the {which} tables in {} have errors (run splitmx check --routing {})",
            routing.dir().display(),
            routing.dir().display()
        );
        ExitCode::from(2)
    })?;
    Ok(Arc::new(match directory {
        Some(d) => router.with_directory(d),
        None => router,
    }))
}

async fn resolve_all(
    live: &Arc<Router>,
    proposed: &Arc<Router>,
    recipients: &[Address],
) -> Vec<(Answer, Answer)> {
    let mut out: Vec<Option<(Answer, Answer)>> = vec![None; recipients.len()];
    let mut tasks = tokio::task::JoinSet::new();
    for (i, rcpt) in recipients.iter().enumerate() {
        if tasks.len() >= CONCURRENCY
            && let Some(Ok((j, answers))) = tasks.join_next().await
            && let Some(slot) = out.get_mut(j)
        {
            *slot = Some(answers);
        }
        let (live, proposed, rcpt) = (Arc::clone(live), Arc::clone(proposed), rcpt.clone());
        tasks.spawn(async move {
            let from = Answer::of(&live.resolve(&rcpt).await.outcome);
            let to = Answer::of(&proposed.resolve(&rcpt).await.outcome);
            (i, (from, to))
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok((j, answers)) = done
            && let Some(slot) = out.get_mut(j)
        {
            *slot = Some(answers);
        }
    }
    let lost = || Answer::Refused {
        label: "temporary failure".to_string(),
        code: 451,
        status: "4.3.0".to_string(),
        text: "lookup task failed".to_string(),
    };
    out.into_iter()
        .map(|a| a.unwrap_or_else(|| (lost(), lost())))
        .collect()
}

/// The journal's recipients as addresses (keys that no longer parse are reported).
fn journal_recipients(view: &JournalView) -> Vec<Address> {
    view.recipients
        .iter()
        .filter_map(|r| match journal::recipient_address(&r.recipient) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!(
                    "splitmx diff: journal recipient '{}' is not an address ({e}); skipped",
                    r.recipient
                );
                None
            }
        })
        .collect()
}

/// A list of recipients: one address per line, `#` starts a comment line, blank lines
/// are ignored, `<...>` is accepted. Duplicates (same key) are checked once.
fn read_list(path: &Path) -> Result<Vec<Address>, ExitCode> {
    let fail = |what: String| {
        eprintln!("splitmx diff: {}: {what}", path.display());
        ExitCode::from(2)
    };
    let size = std::fs::metadata(path)
        .map_err(|e| fail(e.to_string()))?
        .len();
    if size > MAX_LIST_BYTES {
        return Err(fail(format!("larger than {MAX_LIST_BYTES} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bare = line.trim_start_matches('<').trim_end_matches('>');
        let rcpt = Address::parse(bare)
            .map_err(|e| fail(format!("line {}: '{line}' is not an address: {e}", n + 1)))?;
        if seen.insert(rcpt.key().to_string()) {
            out.push(rcpt);
        }
    }
    Ok(out)
}
