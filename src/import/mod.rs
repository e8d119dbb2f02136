//! Importing routing from other mail systems: a Postfix transport(5) map, with its
//! relay_recipients, into splitmx routing tables.
//!
//! Input: the map files' bytes (at most [`MAX_MAP_BYTES`] each) and [`ImportOptions`].
//! Output: an [`Import`]: the table files to write (one per domain plus
//! [`ROUTES_FILE`]) and a [`Report`] of every entry not carried over or carried over
//! with a change, each with file:line, plus every probed address the tables would route
//! differently from Postfix. Nothing here touches the network; reading and writing
//! files is done by [`read_map_file`] and [`write_files`], for the CLI.
//!
//! The principle: the tables route every address as Postfix's lookup order would
//! (full address, address without extension, domain, `.parent` domains, `*`). What
//! Postfix leaves to main.cf, or what has no splitmx equivalent (`local:`, pipes), is
//! deferred with the [`NOT_IMPORTED`] route, never bounced and never sent elsewhere, and
//! reported. The generated tables are loaded and probed before they are returned.

pub mod postfix_map;

mod emit;
mod plan;
mod postfix_lookup;
mod postfix_transport;
mod relay_recipients;
mod report;
mod routes;
mod transport_value;
mod verify;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use emit::ROUTES_FILE;
pub use report::{Difference, Finding, MAX_LISTED_DIFFERENCES, Report, Severity, Summary};
pub use routes::NOT_IMPORTED;

use crate::routing::address::normalize_domain;
use crate::routing::config::RoutingConfig;
use crate::routing::route::RouteKind;
use crate::routing::table::{TableErrors, load_from_strs};
use postfix_lookup::PostfixLookup;
use postfix_transport::TransportMap;
use relay_recipients::RelayRecipients;
use transport_value::{Action, Service, ValueRules};

/// Largest map file read (bytes).
pub const MAX_MAP_BYTES: u64 = 64 * 1024 * 1024;

/// A map file: its name as reports and headers show it, and its contents.
#[derive(Debug, Clone, Copy)]
pub struct MapFile<'a> {
    /// The path as given (shown as `NAME:LINE` in findings).
    pub name: &'a str,
    /// The contents.
    pub bytes: &'a [u8],
}

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Import only these domains and their subdomains (all when empty).
    pub domains: Vec<String>,
    /// Where Postfix sends what no entry decides (main.cf's relay_transport and
    /// relayhost), in transport(5) syntax, e.g. `smtp:[old-mx.example.com]`.
    pub fallback: Option<String>,
    /// master.cf services to read as a known type: (name, one of `smtp`, `relay`,
    /// `lmtp`, `error`, `retry`), e.g. `("slow", "smtp")`.
    pub services: Vec<(String, String)>,
    /// Postfix's `recipient_delimiter` (main.cf); Postfix's own default is empty.
    pub postfix_delimiter: String,
    /// The gateway's routing configuration: the tables are checked and probed with it
    /// (its delimiter, host name and listening addresses).
    pub routing: RoutingConfig,
    /// The date for the files' header comment (none: no date).
    pub date: Option<String>,
}

impl ImportOptions {
    /// Options with the gateway's routing configuration, Postfix delimiter `+`, no
    /// fallback, every domain.
    pub fn new(routing: RoutingConfig) -> ImportOptions {
        ImportOptions {
            domains: Vec::new(),
            fallback: None,
            services: Vec::new(),
            postfix_delimiter: "+".to_string(),
            routing,
            date: None,
        }
    }
}

/// One generated table file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// File name (in the output directory).
    pub name: String,
    /// YAML text.
    pub text: String,
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Import {
    /// The files to write, routes first.
    pub files: Vec<GeneratedFile>,
    /// What was not carried over, changed, or routes differently.
    pub report: Report,
    /// Errors when the generated tables do not load (with the configured host name a
    /// route may point back at the gateway); they were not probed then.
    pub load_errors: Option<TableErrors>,
}

/// Why an import could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A map file could not be read.
    #[error("{path}: cannot read: {error}")]
    Read {
        /// The file.
        path: String,
        /// The system's error.
        error: String,
    },
    /// A map file is larger than [`MAX_MAP_BYTES`].
    #[error("{path}: file is {size} bytes, the limit is {MAX_MAP_BYTES}")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
    },
    /// An option has a bad value.
    #[error("{option}: {reason}")]
    Option {
        /// The option.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Files to be written exist already.
    #[error("{dir}: {} exist already; nothing was written (overwrite with --force)", .names.join(", "))]
    Exists {
        /// The output directory.
        dir: String,
        /// The files.
        names: Vec<String>,
    },
    /// A domain whose table file would be the routes file.
    #[error("domain '{0}' would be written to {ROUTES_FILE}, the file of the imported routes")]
    NameClash(String),
    /// A file could not be written.
    #[error("{path}: cannot write: {error}")]
    Write {
        /// The file.
        path: String,
        /// The system's error.
        error: String,
    },
}

/// Read a map file, refusing one larger than [`MAX_MAP_BYTES`].
pub fn read_map_file(path: &Path) -> Result<Vec<u8>, ImportError> {
    let shown = path.display().to_string();
    let read_err = |e: std::io::Error| ImportError::Read {
        path: shown.clone(),
        error: e.to_string(),
    };
    let file = fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    // Read one byte past the limit to tell "exactly the limit" from "larger".
    file.take(MAX_MAP_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_MAP_BYTES {
        let size = fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
        return Err(ImportError::TooLarge { path: shown, size });
    }
    Ok(bytes)
}

/// Turn a transport map (and relay_recipients) into routing tables.
pub fn import_postfix(
    transport: MapFile<'_>,
    relay: Option<MapFile<'_>>,
    options: &ImportOptions,
) -> Result<Import, ImportError> {
    for f in std::iter::once(&transport).chain(relay.as_ref()) {
        if f.bytes.len() as u64 > MAX_MAP_BYTES {
            return Err(ImportError::TooLarge {
                path: f.name.to_string(),
                size: f.bytes.len() as u64,
            });
        }
    }
    let rules = value_rules(options)?;
    let selection = selection(options)?;
    let selected = |d: &str| {
        selection.is_empty()
            || selection
                .iter()
                .any(|s| d == s || d.strip_suffix(s.as_str()).is_some_and(|p| p.ends_with('.')))
    };
    // An entry is relevant when its domain is selected or lies above a selected one.
    let relevant = |d: &str| {
        selected(d)
            || selection
                .iter()
                .any(|s| s.strip_suffix(d).is_some_and(|p| p.ends_with('.')))
    };

    let transport_map = postfix_map::parse_map(transport.bytes);
    let relay_map = relay.map(|r| postfix_map::parse_map(r.bytes));
    let mut report = Report::default();
    report.summary.transport_entries = transport_map.entries.len();
    report.summary.relay_recipients = relay_map.as_ref().map_or(0, |m| m.entries.len());
    let mut findings: Vec<(usize, report::Finding)> = Vec::new();
    let mut line_findings = |order: usize, name: &str, problems: &[postfix_map::LineProblem]| {
        for p in problems {
            findings.push((
                order,
                Finding {
                    severity: Severity::NotCarried,
                    file: Some(name.to_string()),
                    line: Some(p.line),
                    domain: None,
                    entry: None,
                    message: p.kind.to_string(),
                },
            ));
        }
    };
    line_findings(0, transport.name, &transport_map.problems);
    if let (Some(r), Some(m)) = (&relay, &relay_map) {
        line_findings(1, r.name, &m.problems);
    }

    let map = TransportMap::read(transport_map.entries, &rules);
    let relay_recipients = relay_map.map(|m| RelayRecipients::read(m.entries));
    let mut not_selected = 0usize;
    let mut line_notes = |order: usize, name: &str, notes: &[postfix_transport::LineNote]| {
        for n in notes {
            if n.domain.as_deref().is_some_and(|d| !relevant(d)) {
                continue;
            }
            findings.push((
                order,
                Finding {
                    severity: n.severity,
                    file: Some(name.to_string()),
                    line: Some(n.line),
                    domain: n.domain.clone(),
                    entry: Some(n.entry.clone()),
                    message: n.message.clone(),
                },
            ));
        }
    };
    line_notes(0, transport.name, &map.notes);
    if let (Some(r), Some(rr)) = (&relay, &relay_recipients) {
        line_notes(1, r.name, &rr.notes);
    }
    for e in &map.entries {
        let domain = match &e.key {
            postfix_transport::Key::Address(a) => Some(a.domain()),
            postfix_transport::Key::Domain(d) | postfix_transport::Key::Subdomains(d) => {
                Some(d.as_str())
            }
            postfix_transport::Key::Wildcard => None,
        };
        if domain.is_some_and(|d| !relevant(d)) {
            not_selected += 1;
        }
    }
    if let Some(rr) = &relay_recipients {
        not_selected += rr
            .addresses
            .iter()
            .filter(|(_, a)| !relevant(a.domain()))
            .count();
    }
    report.summary.not_selected = not_selected;

    let lookup = PostfixLookup {
        transport: &map,
        relay: relay_recipients.as_ref(),
        delimiters: &options.postfix_delimiter,
    };
    let inputs = plan::Inputs {
        lookup: &lookup,
        fallback: rules.fallback.as_ref(),
        transport_file: transport.name,
        selected: &selected,
    };
    let plan = plan::plan(&inputs);
    for f in &plan.findings {
        // Findings about a transport line sort with that line; about a domain, last.
        let order = if f.line.is_some() { 0 } else { 2 };
        findings.push((order, f.clone()));
    }
    findings.sort_by_key(|(order, f)| (*order, f.line.unwrap_or(u32::MAX), f.domain.clone()));
    report.findings = findings.into_iter().map(|(_, f)| f).collect();
    report.notes = notes(options, &map, &plan);

    let mut sources = vec![transport.name.to_string()];
    if let Some(r) = &relay {
        sources.push(r.name.to_string());
    }
    let header = emit::Header {
        sources: &sources,
        date: options.date.as_deref(),
    };
    let mut files = vec![GeneratedFile {
        name: ROUTES_FILE.to_string(),
        text: emit::routes_file(&plan.routes, &header, transport.name),
    }];
    for t in &plan.tables {
        let name = format!("{}.yaml", t.domain);
        if name == ROUTES_FILE {
            return Err(ImportError::NameClash(t.domain.clone()));
        }
        files.push(GeneratedFile {
            name,
            text: emit::domain_file(t, &plan.routes, &header),
        });
    }
    report.summary.domains = plan.tables.len();
    report.summary.routes = plan.routes.list.len();
    report.summary.recipients = plan.tables.iter().map(|t| t.recipients.len()).sum();

    let texts: Vec<(&str, &str)> = files
        .iter()
        .map(|f| (f.name.as_str(), f.text.as_str()))
        .collect();
    let load_errors = if plan.tables.is_empty() {
        None
    } else {
        match load_from_strs(&options.routing, &texts) {
            Ok(snapshot) => {
                report.summary.probed = verify::verify(&snapshot, &inputs, &plan, &mut report);
                None
            }
            Err(errors) => Some(errors),
        }
    };
    Ok(Import {
        files,
        report,
        load_errors,
    })
}

fn value_rules(options: &ImportOptions) -> Result<ValueRules, ImportError> {
    let mut rules = ValueRules::default();
    for (name, kind) in &options.services {
        let service = Service::parse(kind).ok_or_else(|| ImportError::Option {
            option: "--service",
            reason: format!("'{kind}' for '{name}': expected smtp, relay, lmtp, error or retry"),
        })?;
        if name.is_empty() || name.contains(':') {
            return Err(ImportError::Option {
                option: "--service",
                reason: format!("'{name}' is not a master.cf service name"),
            });
        }
        rules.services.insert(name.clone(), service);
    }
    if let Some(spec) = &options.fallback {
        let converted = rules.convert(spec);
        match converted.action {
            Action::Route(kind) => rules.fallback = Some(kind),
            Action::NotCarried(why) => {
                return Err(ImportError::Option {
                    option: "--fallback",
                    reason: format!("'{spec}': {why}"),
                });
            }
        }
    }
    Ok(rules)
}

fn selection(options: &ImportOptions) -> Result<Vec<String>, ImportError> {
    options
        .domains
        .iter()
        .map(|d| {
            normalize_domain(d).map_err(|e| ImportError::Option {
                option: "--domain",
                reason: format!("'{d}': {e}"),
            })
        })
        .collect()
}

fn notes(options: &ImportOptions, map: &TransportMap, plan: &plan::Plan) -> Vec<String> {
    let mut notes = Vec::new();
    let kinds: Vec<&RouteKind> = plan
        .routes
        .list
        .iter()
        .filter_map(|r| r.kind.as_ref())
        .collect();
    let splitmx_delimiter = options.routing.recipient_delimiter();
    let has_addresses = map
        .entries
        .iter()
        .any(|e| matches!(e.key, postfix_transport::Key::Address(_)));
    if has_addresses && options.postfix_delimiter != splitmx_delimiter {
        notes.push(format!(
            "Postfix's recipient_delimiter is '{}' (--recipient-delimiter), the gateway's routing.recipient_delimiter is '{splitmx_delimiter}': addresses with an extension may be routed differently",
            options.postfix_delimiter
        ));
    }
    if kinds
        .iter()
        .any(|k| matches!(k, RouteKind::Reject(_) | RouteKind::Defer(_)))
    {
        notes.push("error: and retry: entries became reject and defer routes: splitmx refuses those recipients at RCPT time, where Postfix accepted the mail and then bounced or deferred it".to_string());
    }
    if kinds
        .iter()
        .any(|k| matches!(k, RouteKind::Smtp { .. } | RouteKind::Lmtp { .. }))
    {
        notes.push("outbound TLS is opportunistic on every imported route; Postfix's smtp_tls_security_level and smtp_tls_policy_maps are not imported (set tls: on a route where needed)".to_string());
    }
    notes
}

/// Write the files into `dir` (created if missing). Refuses, writing nothing, when any
/// exists already unless `force`. Each file is written to a hidden temporary name and
/// renamed, so a gateway watching `dir` never reads half a file.
pub fn write_files(
    dir: &Path,
    files: &[GeneratedFile],
    force: bool,
) -> Result<Vec<PathBuf>, ImportError> {
    let write_err = |path: &Path, e: std::io::Error| ImportError::Write {
        path: path.display().to_string(),
        error: e.to_string(),
    };
    fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
    if !force {
        let existing: Vec<String> = files
            .iter()
            .filter(|f| dir.join(&f.name).exists())
            .map(|f| f.name.clone())
            .collect();
        if !existing.is_empty() {
            return Err(ImportError::Exists {
                dir: dir.display().to_string(),
                names: existing,
            });
        }
    }
    let mut written = Vec::with_capacity(files.len());
    for f in files {
        let path = dir.join(&f.name);
        let tmp = dir.join(format!(".{}.import-tmp", f.name));
        fs::write(&tmp, &f.text).map_err(|e| write_err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| write_err(&path, e))?;
        written.push(path);
    }
    Ok(written)
}
