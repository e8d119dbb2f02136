//! The `splitmx` command line: argument parsing and dispatch to one file per command.
//!
//! Exit codes: 0 success, 1 the command ran and found a problem (bad tables, unknown
//! recipient) or, for `diff`, a change, 2 the command could not run (bad arguments,
//! unreadable config).

mod check;
mod diff;
mod diff_output;
mod explain;
mod import;
mod log_fields;
mod log_writer;
#[cfg(feature = "server")]
mod queue;
mod report;
mod report_html;
#[cfg(feature = "server")]
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::GatewayConfig;

/// splitmx: split-delivery SMTP routing gateway.
#[derive(Parser, Debug)]
#[command(name = "splitmx", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway.
    Serve(ConfigArgs),
    /// Ask the running gateway to reload its routing tables (validated here first).
    Reload(ConfigArgs),
    /// Inspect the queue (read-only; works while the gateway runs).
    #[cfg(feature = "server")]
    Queue {
        #[command(subcommand)]
        action: QueueAction,
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the result as JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Validate the routing tables (and config); exit 1 on any error. For CI and git hooks.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
        /// Check this routing directory instead of the configured one.
        #[arg(long)]
        routing: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show how an address is routed: every lookup step, the route and its provenance.
    Explain {
        /// The recipient address.
        address: String,
        #[command(flatten)]
        config: ConfigArgs,
        /// Explain with this routing directory instead of the configured one.
        #[arg(long)]
        routing: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Turn another mail system's routing into routing tables, with a report of what
    /// could not be carried over; the result is checked like `splitmx check`.
    Import {
        #[command(subcommand)]
        what: ImportKind,
    },
    /// Dry run of a routing change: which recipients the tables in DIR would route
    /// differently. Exit 0: no change, 1: changes, 2: could not compare.
    Diff {
        #[command(flatten)]
        config: ConfigArgs,
        /// The proposed routing directory (e.g. a checkout of the merge request).
        #[arg(long, value_name = "DIR")]
        against: PathBuf,
        /// Use this routing directory as the live side instead of the configured one.
        #[arg(long, value_name = "DIR")]
        routing: Option<PathBuf>,
        /// Check the recipients in FILE (one address per line, `#` comments) instead of
        /// the journal's.
        #[arg(long, value_name = "FILE")]
        recipients: Option<PathBuf>,
        /// Journal period in days: which recipients are checked, and their message counts.
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=3660))]
        days: u32,
        /// Last day of the period, YYYY-MM-DD (default: today, UTC).
        #[arg(long, value_name = "DATE")]
        until: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Migration progress from the recipient journal: share of recipients and messages
    /// per route, and the recipients still on the old side.
    Report {
        #[command(flatten)]
        config: ConfigArgs,
        /// Period in days.
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=3660))]
        days: u32,
        /// Last day of the period, YYYY-MM-DD (default: today, UTC).
        #[arg(long, value_name = "DATE")]
        until: Option<String>,
        /// The old side's routes (comma-separated or repeated): list who is still there.
        #[arg(long, value_name = "ROUTE[,ROUTE]")]
        old: Vec<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Also write a self-contained HTML page with a chart to FILE.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ImportKind {
    /// A Postfix transport(5) map (and relay_recipients): one table per domain.
    PostfixTransport(import::PostfixTransportArgs),
}

#[cfg(feature = "server")]
#[derive(Subcommand, Debug)]
enum QueueAction {
    /// One line per queued message: id, age, size, state, sender, recipients.
    List,
    /// One message: envelope, each recipient's route and state, and its header.
    Show {
        /// The queue id.
        id: String,
        /// Print the whole message, not only its header.
        #[arg(long)]
        body: bool,
    },
    /// Try a deferred message now (`--all`: every message), instead of at its retry time.
    Retry {
        /// The queue id.
        #[arg(required_unless_present = "all")]
        id: Option<String>,
        /// Every message in the queue (a flush).
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Keep a message from being delivered until it is released.
    Hold {
        /// The queue id.
        id: String,
    },
    /// Let a held message be delivered again, at once.
    Release {
        /// The queue id.
        id: String,
    },
    /// Remove a message without delivering it or telling the sender.
    Delete {
        /// The queue id.
        id: String,
    },
}

#[derive(clap::Args, Debug)]
struct ConfigArgs {
    /// Gateway configuration file (default: the built-in configuration).
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
}

impl ConfigArgs {
    fn load(&self, routing: Option<&PathBuf>) -> Result<GatewayConfig, ExitCode> {
        let mut config = GatewayConfig::load(self.config.as_deref()).map_err(|e| {
            eprintln!("splitmx: {e}");
            ExitCode::from(2)
        })?;
        if let Some(dir) = routing {
            config.routing = routing_in(&config, dir);
        }
        Ok(config)
    }
}

/// The configured routing settings, with the tables read from `dir` instead.
pub(crate) fn routing_in(
    config: &GatewayConfig,
    dir: &std::path::Path,
) -> crate::routing::config::RoutingConfig {
    crate::routing::config::RoutingConfig::new(dir)
        .with_hostname(&config.hostname)
        .with_local_addresses(config.listen.clone())
        .with_recipient_delimiter(config.routing.recipient_delimiter())
        .with_max_table_bytes(config.routing.max_table_bytes())
}

/// Run the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let _log_flush = init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => args.load(None).map(serve_command),
        Command::Reload(args) => args.load(None).map(|c| reload_command(&c)),
        #[cfg(feature = "server")]
        Command::Queue {
            action,
            config,
            json,
        } => config.load(None).map(|c| match action {
            QueueAction::List => queue::list(&c, json),
            QueueAction::Show { id, body } => queue::show(&c, &id, json, body),
            QueueAction::Retry { id, all } => queue::change(&c, "retry", id.as_deref(), all, json),
            QueueAction::Hold { id } => queue::change(&c, "hold", Some(&id), false, json),
            QueueAction::Release { id } => queue::change(&c, "release", Some(&id), false, json),
            QueueAction::Delete { id } => queue::change(&c, "delete", Some(&id), false, json),
        }),
        Command::Check {
            config,
            routing,
            json,
        } => config.load(routing.as_ref()).map(|c| check::run(&c, json)),
        Command::Explain {
            address,
            config,
            routing,
            json,
        } => config
            .load(routing.as_ref())
            .map(|c| explain::run(&c, &address, json)),
        Command::Import {
            what: ImportKind::PostfixTransport(args),
        } => Ok(import::postfix_transport(args)),
        Command::Diff {
            config,
            against,
            routing,
            recipients,
            days,
            until,
            json,
        } => config.load(routing.as_ref()).map(|c| {
            let args = diff::Args {
                against,
                recipients,
                days,
                until,
                json,
            };
            diff::run(&c, &args)
        }),
        Command::Report {
            config,
            days,
            until,
            old,
            json,
            html,
        } => config.load(None).map(|c| {
            let args = report::Args {
                days,
                until,
                old,
                json,
                html,
            };
            report::run(&c, &args)
        }),
    };
    result.unwrap_or_else(|code| code)
}

#[cfg(feature = "server")]
fn serve_command(config: GatewayConfig) -> ExitCode {
    serve::run(config)
}

#[cfg(not(feature = "server"))]
fn serve_command(_: GatewayConfig) -> ExitCode {
    eprintln!("splitmx serve: this build has no SMTP server (feature `server`)");
    ExitCode::from(2)
}

/// The file where a running gateway writes its process id.
pub(crate) fn pid_file(config: &GatewayConfig) -> PathBuf {
    config.spool.join("splitmx.pid")
}

/// Validate the tables, then send SIGHUP to the gateway named in the pid file.
fn reload_command(config: &GatewayConfig) -> ExitCode {
    if let Err(errors) = crate::routing::table::load(&config.routing) {
        println!("{errors}");
        println!(
            "splitmx reload: not sent: the tables have errors; the gateway keeps its current tables"
        );
        return ExitCode::from(1);
    }
    let pid_file = pid_file(config);
    let pid = match std::fs::read_to_string(&pid_file) {
        Ok(p) if p.trim().parse::<u32>().is_ok() => p.trim().to_string(),
        _ => {
            eprintln!(
                "splitmx reload: no running gateway ({} missing or invalid)",
                pid_file.display()
            );
            return ExitCode::from(2);
        }
    };
    match std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
    {
        Ok(s) if s.success() => {
            println!("splitmx reload: sent SIGHUP to process {pid}; the gateway logs the outcome");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("splitmx reload: cannot signal process {pid} (is the gateway running?)");
            ExitCode::from(2)
        }
    }
}

/// The router the commands resolve with: the routing tables, plus the configured
/// directory source. Errors are printed; the exit code says the command could not run.
pub(crate) fn load_router(config: &GatewayConfig) -> Result<crate::Router, ExitCode> {
    let router = crate::Router::load(config.routing.clone()).map_err(|errors| {
        eprintln!("{errors}");
        eprintln!("splitmx: the routing tables have errors (run splitmx check)");
        ExitCode::from(2)
    })?;
    Ok(match directory(config)? {
        Some(d) => router.with_directory(d),
        None => router,
    })
}

/// The configured directory source, if any (one connection pool, to share between
/// routers).
pub(crate) fn directory(
    config: &GatewayConfig,
) -> Result<Option<std::sync::Arc<dyn crate::Directory>>, ExitCode> {
    #[cfg(feature = "ldap")]
    if let Some(ldap) = &config.ldap {
        let directory = crate::ldap::LdapDirectory::new(ldap.clone()).map_err(|e| {
            eprintln!("splitmx: {e}");
            ExitCode::from(2)
        })?;
        return Ok(Some(std::sync::Arc::new(directory)));
    }
    #[cfg(not(feature = "ldap"))]
    let _ = config;
    Ok(None)
}

/// Print a command's output; a reader that went away (`| head`) is not an error.
pub(crate) fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// A runtime for commands that await directory lookups.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("splitmx: cannot start the async runtime: {e}");
            ExitCode::from(2)
        })
}

/// Logging to stderr, filtered by `SPLITMX_LOG`. `serve` logs through a writer thread
/// (see `log_writer`); the returned guard writes what is buffered when `main` returns.
fn init_logging() -> Option<log_writer::LogFlush> {
    use tracing_subscriber::EnvFilter;
    let serve = std::env::args().nth(1).as_deref() == Some("serve");
    let default = if serve { "info" } else { "warn" };
    let filter = EnvFilter::try_from_env("SPLITMX_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only for a person at a terminal, never in a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = std::env::var("SPLITMX_LOG_FORMAT").as_deref() == Ok("json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .fmt_fields(log_fields::LogFields);
    if serve {
        let (writer, flush) = log_writer::start();
        let builder = builder.with_writer(writer);
        let _ = if json {
            builder.json().try_init()
        } else {
            builder.try_init()
        };
        Some(flush)
    } else {
        let builder = builder.with_writer(std::io::stderr);
        let _ = if json {
            builder.json().try_init()
        } else {
            builder.try_init()
        };
        None
    }
}
