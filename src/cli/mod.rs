//! The `splitmx` command line: argument parsing and dispatch to one file per command.
//!
//! Exit codes: 0 success, 1 the command ran and found a problem (bad tables, unknown
//! recipient), 2 the command could not run (bad arguments, unreadable config).

mod check;
mod explain;

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
}

#[derive(clap::Args, Debug)]
struct ConfigArgs {
    /// Gateway configuration file (default: the built-in configuration).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
}

impl ConfigArgs {
    fn load(&self, routing: Option<&PathBuf>) -> Result<GatewayConfig, ExitCode> {
        let mut config = GatewayConfig::load(self.config.as_deref()).map_err(|e| {
            eprintln!("splitmx: {e}");
            ExitCode::from(2)
        })?;
        if let Some(dir) = routing {
            let r = crate::routing::config::RoutingConfig::new(dir)
                .with_hostname(&config.hostname)
                .with_local_addresses(config.listen.clone())
                .with_recipient_delimiter(config.routing.recipient_delimiter())
                .with_max_table_bytes(config.routing.max_table_bytes());
            config.routing = r;
        }
        Ok(config)
    }
}

/// Run the command line; returns the process exit code.
pub fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => args.load(None).map(|_| {
            eprintln!("splitmx serve: the SMTP front end is not built yet (see the issue tracker)");
            ExitCode::from(2)
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
    };
    result.unwrap_or_else(|code| code)
}

/// The router the commands resolve with: the routing tables, plus the configured
/// directory source. Errors are printed; the exit code says the command could not run.
pub(crate) fn load_router(config: &GatewayConfig) -> Result<crate::Router, ExitCode> {
    let router = crate::Router::load(config.routing.clone()).map_err(|errors| {
        eprintln!("{errors}");
        eprintln!("splitmx: the routing tables have errors (run splitmx check)");
        ExitCode::from(2)
    })?;
    Ok(router)
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

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SPLITMX_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
