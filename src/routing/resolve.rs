//! Lookup: from a recipient to a route, in the order the product promises.
//!
//! 1. an exact table entry for the address, then for it without its extension;
//! 2. the directory, when one is in scope for the domain;
//! 3. the table default for the domain, else for the nearest parent domain that opted in
//!    to subdomains (a domain with a table of its own never falls back to its parent);
//! 4. otherwise `550 5.1.1` for a domain we serve, `554 5.7.1` for any other.
//!
//! Input is a parsed [`Address`] and a [`Snapshot`] (and optionally a [`Directory`]);
//! output is a [`Resolution`] that says what happened and why (provenance), and, for
//! `explain`, every step tried. A directory failure is [`Outcome::TempFail`], never a
//! bounce.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use super::address::Address;
use super::directory::{Directory, DirectoryAnswer, DirectoryEntry, DirectoryScope};
use super::route::{NextHop, Reply, Route, RouteKind, SMTP_PORT, TlsPolicy};
use super::snapshot::{Entry, Snapshot, TableVersion};

/// How many times a directory `mailRoutingAddress` may send a recipient through the
/// tables again before the router calls it a rewrite loop.
pub const MAX_REWRITES: usize = 4;

/// The answer for one recipient.
#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    /// The recipient as given.
    pub recipient: Address,
    /// What to do with it.
    pub outcome: Outcome,
    /// The table version that answered.
    pub version: Arc<TableVersion>,
    /// Every step tried, in order (filled by `explain` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
}

/// What to do with a recipient.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Outcome {
    /// A route was found (it may still be a `reject` or `defer` route).
    Routed(Routed),
    /// No route: unknown user or relay denied.
    Unrouted(Unrouted),
    /// The answer is not known now (directory down, rewrite loop): `451`, try later.
    TempFail {
        /// Why, for the log.
        reason: String,
        /// The reply for the client.
        reply: Reply,
    },
}

/// A recipient with its route.
#[derive(Debug, Clone, Serialize)]
pub struct Routed {
    /// The route.
    pub route: Arc<Route>,
    /// The envelope recipient to deliver to (after any rewrite).
    pub recipient: Address,
    /// Which source answered and which key matched.
    pub provenance: Provenance,
}

/// Why a recipient has no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unrouted {
    /// A domain we serve, but no such recipient: `550 5.1.1`.
    UnknownUser,
    /// A domain we do not serve: `554 5.7.1`, splitmx is not an open relay.
    RelayDenied,
}

/// Which source answered, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// Which lookup step matched.
    pub matched: Matched,
    /// The key that matched (address, address without extension, domain or mail host).
    pub key: String,
    /// Table file, line and column, or directory name and entry.
    pub source: Source,
    /// For a directory answer that rewrote the recipient: how the new address was routed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub then: Option<Box<Provenance>>,
}

/// Which lookup step matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Matched {
    /// An entry for the exact address.
    Recipient,
    /// An entry for the address without its extension.
    WithoutExtension,
    /// A directory entry.
    Directory,
    /// A `mail_hosts` entry for the directory's mail host.
    MailHost,
    /// The default route of the recipient's domain.
    DomainDefault,
    /// The default route of a parent domain that opted in to subdomains.
    ParentDefault,
}

/// Where an answer came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Source {
    /// A routing table.
    Table {
        /// The file.
        file: Arc<str>,
        /// 1-based line.
        line: u32,
        /// 1-based column.
        column: u32,
    },
    /// A directory entry.
    Directory {
        /// The directory's name (server).
        name: String,
        /// The entry (LDAP DN).
        entry: String,
    },
}

/// One lookup step, for `explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// What was looked up.
    pub lookup: &'static str,
    /// With which key.
    pub key: String,
    /// `hit`, `miss`, `skipped`, or an error.
    pub result: String,
}

impl Outcome {
    /// The reply for the client at RCPT time: the one place a routing outcome becomes
    /// SMTP.
    ///
    /// ```
    /// use splitmx::{Outcome, Unrouted};
    /// let reply = Outcome::Unrouted(Unrouted::RelayDenied).reply();
    /// assert_eq!((reply.code, reply.status.as_str()), (554, "5.7.1"));
    /// ```
    pub fn reply(&self) -> Reply {
        match self {
            Outcome::Routed(r) => match r.route.kind() {
                RouteKind::Reject(reply) | RouteKind::Defer(reply) => reply.clone(),
                _ => Reply::ok(),
            },
            Outcome::Unrouted(Unrouted::UnknownUser) => {
                Reply::new(550, "5.1.1", "Recipient address rejected: user unknown")
            }
            Outcome::Unrouted(Unrouted::RelayDenied) => {
                Reply::new(554, "5.7.1", "Relay access denied")
            }
            Outcome::TempFail { reply, .. } => reply.clone(),
        }
    }

    /// The route, when there is one.
    pub fn route(&self) -> Option<&Arc<Route>> {
        match self {
            Outcome::Routed(r) => Some(&r.route),
            _ => None,
        }
    }
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.matched {
            Matched::Recipient => "recipient",
            Matched::WithoutExtension => "recipient without extension",
            Matched::Directory => "directory entry",
            Matched::MailHost => "mail host",
            Matched::DomainDefault => "default of domain",
            Matched::ParentDefault => "default of parent domain",
        };
        match &self.source {
            Source::Table { file, line, column } => {
                write!(f, "{file}:{line}:{column} {what} {}", self.key)?
            }
            Source::Directory { name, entry } => write!(f, "{name} {what} {entry}")?,
        }
        if let Some(then) = &self.then {
            write!(f, " -> {then}")?;
        }
        Ok(())
    }
}

/// Collects steps for `explain`; the no-op version costs nothing on the hot path.
pub(crate) trait Trace {
    fn step(&mut self, f: impl FnOnce() -> Step);
    /// True when steps are recorded (so a directory is asked for its own steps too).
    fn enabled(&self) -> bool;
}

impl Trace for () {
    #[inline]
    fn step(&mut self, _: impl FnOnce() -> Step) {}
    #[inline]
    fn enabled(&self) -> bool {
        false
    }
}

impl Trace for Vec<Step> {
    fn step(&mut self, f: impl FnOnce() -> Step) {
        self.push(f());
    }
    fn enabled(&self) -> bool {
        true
    }
}

fn step(lookup: &'static str, key: &str, result: &str) -> Step {
    Step {
        lookup,
        key: key.to_string(),
        result: result.to_string(),
    }
}

/// What the tables say before the directory is asked.
enum Domain {
    /// A default route applies.
    Default(Routed),
    /// The domain is served but has no default.
    ServedNoDefault,
    /// The tables do not serve the domain.
    NotServed,
}

impl Snapshot {
    /// Resolve with the tables only (no directory). Fast and synchronous: this is what an
    /// MTA without a directory calls for each RCPT.
    pub fn resolve(&self, rcpt: &Address) -> Outcome {
        self.resolve_static(rcpt, &mut ())
    }

    pub(crate) fn resolve_static(&self, rcpt: &Address, trace: &mut impl Trace) -> Outcome {
        if let Some(routed) = self.lookup_recipient(rcpt, trace) {
            return routed;
        }
        trace.step(|| step("directory", rcpt.key(), "skipped (none configured)"));
        self.finish_with_domain(rcpt, trace)
    }

    fn finish_with_domain(&self, rcpt: &Address, trace: &mut impl Trace) -> Outcome {
        match self.lookup_domain(rcpt, trace) {
            Domain::Default(routed) => Outcome::Routed(routed),
            Domain::ServedNoDefault => Outcome::Unrouted(Unrouted::UnknownUser),
            Domain::NotServed => Outcome::Unrouted(Unrouted::RelayDenied),
        }
    }

    /// Steps 1 and 1b: the address, then the address without its extension.
    fn lookup_recipient(&self, rcpt: &Address, trace: &mut impl Trace) -> Option<Outcome> {
        if let Some(entry) = self.recipients.get(rcpt.key()) {
            trace.step(|| step("recipient", rcpt.key(), "hit"));
            return Some(self.routed(rcpt, *entry, Matched::Recipient, rcpt.key()));
        }
        trace.step(|| step("recipient", rcpt.key(), "miss"));
        let mut stack = [0u8; BASE_KEY_STACK];
        match base_key(rcpt, &self.delimiters, &mut stack) {
            Some(base) => {
                let base: &str = &base;
                if let Some(entry) = self.recipients.get(base) {
                    trace.step(|| step("recipient without extension", base, "hit"));
                    return Some(self.routed(rcpt, *entry, Matched::WithoutExtension, base));
                }
                trace.step(|| step("recipient without extension", base, "miss"));
            }
            None => trace.step(|| {
                step(
                    "recipient without extension",
                    rcpt.key(),
                    "skipped (no extension)",
                )
            }),
        }
        None
    }

    /// Step 3: the domain's default, then a parent's.
    fn lookup_domain(&self, rcpt: &Address, trace: &mut impl Trace) -> Domain {
        let domain = rcpt.domain();
        let Some((ruled, rule, is_parent)) = self.domain_rule(domain) else {
            trace.step(|| step("domain default", domain, "miss (domain not served)"));
            return Domain::NotServed;
        };
        let lookup = if is_parent {
            "parent domain default"
        } else {
            "domain default"
        };
        match rule.default {
            Some(entry) => {
                trace.step(|| step(lookup, ruled, "hit"));
                let matched = if is_parent {
                    Matched::ParentDefault
                } else {
                    Matched::DomainDefault
                };
                match self.routed(rcpt, entry, matched, ruled) {
                    Outcome::Routed(r) => Domain::Default(r),
                    _ => Domain::ServedNoDefault,
                }
            }
            None => {
                trace.step(|| step(lookup, ruled, "miss (no default)"));
                Domain::ServedNoDefault
            }
        }
    }

    fn routed(&self, rcpt: &Address, entry: Entry, matched: Matched, key: &str) -> Outcome {
        let Some(target) = self.target(entry) else {
            return temp_fail("internal error: table entry without target".to_string());
        };
        let rewrite = target.rewrite.as_ref().or(target.route.rewrite());
        let recipient = match rewrite {
            None => rcpt.clone(),
            Some(rw) => match rw.apply(rcpt, &self.delimiters) {
                Ok(a) => a,
                Err(e) => return temp_fail(format!("rewrite of {rcpt} failed: {e}")),
            },
        };
        Outcome::Routed(Routed {
            route: target.route.clone(),
            recipient,
            provenance: Provenance {
                matched,
                key: key.to_string(),
                source: Source::Table {
                    file: self.file_arc(entry.pos),
                    line: entry.pos.line,
                    column: entry.pos.column,
                },
                then: None,
            },
        })
    }

    /// Full lookup with a directory, following `mailRoutingAddress` rewrites (bounded).
    pub(crate) async fn resolve_with(
        &self,
        rcpt: &Address,
        directory: &dyn Directory,
        trace: &mut impl Trace,
    ) -> Outcome {
        let mut current = rcpt.clone();
        let mut chain: Vec<Provenance> = Vec::new();
        for _ in 0..=MAX_REWRITES {
            let outcome = self.resolve_once(&current, directory, trace).await;
            match outcome {
                // A routing address in a domain nobody here serves (the typical
                // `alice@tenant.onmicrosoft.com`) is relayed by MX, as Sendmail does.
                Step1::Done(Outcome::Unrouted(Unrouted::RelayDenied)) if !chain.is_empty() => {
                    trace.step(|| {
                        step(
                            "external routing address",
                            current.key(),
                            "relay by MX of its domain",
                        )
                    });
                    return attach_chain(Outcome::Routed(external(&current)), chain);
                }
                Step1::Done(outcome) => return attach_chain(outcome, chain),
                Step1::Rewritten(next, provenance) => {
                    chain.push(provenance);
                    current = next;
                }
            }
        }
        temp_fail(format!(
            "directory rewrite loop: {rcpt} was rewritten more than {MAX_REWRITES} times"
        ))
    }

    async fn resolve_once(
        &self,
        rcpt: &Address,
        directory: &dyn Directory,
        trace: &mut impl Trace,
    ) -> Step1 {
        if let Some(outcome) = self.lookup_recipient(rcpt, trace) {
            return Step1::Done(outcome);
        }
        let scope = directory.scope(rcpt.domain());
        if scope == DirectoryScope::None {
            trace.step(|| step("directory", rcpt.key(), "skipped (domain not in scope)"));
            return Step1::Done(self.finish_with_domain(rcpt, trace));
        }
        let mut answer = directory_lookup(directory, rcpt, trace).await;
        // Not found with an extension: ask again for the address without it, as the
        // tables do (`alice+news@` is `alice@` to the directory too).
        let mut base = None;
        if answer == DirectoryAnswer::NotFound {
            base = rcpt
                .extension(&self.delimiters)
                .and_then(|ext| rcpt.with_local_part(ext.user).ok());
            if let Some(base) = &base {
                trace.step(|| step("directory", rcpt.key(), "miss"));
                answer = directory_lookup(directory, base, trace).await;
            }
        }
        let asked = base.as_ref().unwrap_or(rcpt);
        match answer {
            DirectoryAnswer::Found(entry) => {
                trace.step(|| {
                    let cache = entry.cache.as_deref().unwrap_or("");
                    step(
                        "directory",
                        asked.key(),
                        &format!("hit {} {cache}", entry.dn),
                    )
                });
                self.directory_entry(rcpt, directory.name(), entry, trace)
            }
            DirectoryAnswer::NotFound if scope == DirectoryScope::Authoritative => {
                trace.step(|| step("directory", asked.key(), "miss (authoritative)"));
                Step1::Done(Outcome::Unrouted(Unrouted::UnknownUser))
            }
            DirectoryAnswer::NotFound => {
                trace.step(|| step("directory", asked.key(), "miss"));
                Step1::Done(self.finish_with_domain(rcpt, trace))
            }
            DirectoryAnswer::TempError { reason } => {
                trace.step(|| step("directory", asked.key(), &format!("error: {reason}")));
                Step1::Done(Outcome::TempFail {
                    reason: format!("directory {}: {reason}", directory.name()),
                    reply: Reply::new(451, "4.4.3", "Directory lookup failed, try again later"),
                })
            }
        }
    }

    /// Map a directory entry after the LDAP mail-routing draft.
    fn directory_entry(
        &self,
        rcpt: &Address,
        name: &str,
        entry: DirectoryEntry,
        trace: &mut impl Trace,
    ) -> Step1 {
        let provenance = |then| Provenance {
            matched: Matched::Directory,
            key: rcpt.key().to_string(),
            source: Source::Directory {
                name: name.to_string(),
                entry: entry.dn.clone(),
            },
            then,
        };
        let routing_address = match entry.routing_address.as_deref().map(Address::parse) {
            None => None,
            Some(Ok(a)) => Some(a),
            Some(Err(e)) => {
                return Step1::Done(temp_fail(format!(
                    "directory entry {} has a bad routing address: {e}",
                    entry.dn
                )));
            }
        };
        match (entry.mail_host.as_deref(), routing_address) {
            // Rewrite only: route the new address through the tables again.
            (None, Some(next)) => Step1::Rewritten(next, provenance(None)),
            // A mail host: its route, for the (maybe rewritten) recipient.
            (Some(host), routing_address) => {
                let recipient = routing_address.unwrap_or_else(|| rcpt.clone());
                match self.mail_host_route(host, &recipient, trace) {
                    Ok(routed) => Step1::Done(Outcome::Routed(Routed {
                        provenance: provenance(Some(Box::new(routed.provenance))),
                        ..routed
                    })),
                    Err(reason) => Step1::Done(temp_fail(reason)),
                }
            }
            // Entry without routing attributes: the domain's default.
            (None, None) => match self.lookup_domain(rcpt, trace) {
                Domain::Default(routed) => Step1::Done(Outcome::Routed(Routed {
                    provenance: provenance(Some(Box::new(routed.provenance))),
                    ..routed
                })),
                Domain::ServedNoDefault | Domain::NotServed => Step1::Done(temp_fail(format!(
                    "directory entry {} has no routing attribute and domain {} has no default route",
                    entry.dn,
                    rcpt.domain()
                ))),
            },
        }
    }

    fn mail_host_route(
        &self,
        host: &str,
        recipient: &Address,
        trace: &mut impl Trace,
    ) -> Result<Routed, String> {
        let key = host.trim().trim_end_matches('.').to_ascii_lowercase();
        if let Some(entry) = self.mail_hosts.get(key.as_str()) {
            trace.step(|| step("mail host", &key, "hit"));
            return match self.routed(recipient, *entry, Matched::MailHost, &key) {
                Outcome::Routed(r) => Ok(r),
                Outcome::TempFail { reason, .. } => Err(reason),
                Outcome::Unrouted(_) => Err(format!("mail host {key} has no route")),
            };
        }
        trace.step(|| step("mail host", &key, "miss (relay over SMTP with MX lookup)"));
        let next_hop = NextHop::parse(&key, SMTP_PORT, false)
            .map_err(|e| format!("directory mail host: {e}"))?;
        Ok(Routed {
            route: Arc::new(Route::new(
                format!("smtp:{key}"),
                RouteKind::Smtp {
                    next_hop,
                    tls: TlsPolicy::default(),
                },
                None,
            )),
            recipient: recipient.clone(),
            provenance: Provenance {
                matched: Matched::MailHost,
                key,
                source: Source::Directory {
                    name: "mailHost".to_string(),
                    entry: host.to_string(),
                },
                then: None,
            },
        })
    }
}

/// Ask the directory; when `explain` records steps, the directory's own steps (server,
/// query, cache) go in too.
async fn directory_lookup(
    directory: &dyn Directory,
    rcpt: &Address,
    trace: &mut impl Trace,
) -> DirectoryAnswer {
    if !trace.enabled() {
        return directory.lookup(rcpt).await;
    }
    let (answer, steps) = directory.lookup_explained(rcpt).await;
    for s in steps {
        trace.step(move || s);
    }
    answer
}

/// An SMTP route to the MX of the recipient's own domain, for directory routing
/// addresses outside the domains we serve.
fn external(rcpt: &Address) -> Routed {
    Routed {
        route: Arc::new(Route::new(
            "smtp:",
            RouteKind::Smtp {
                next_hop: NextHop::RecipientDomain { port: SMTP_PORT },
                tls: TlsPolicy::default(),
            },
            None,
        )),
        recipient: rcpt.clone(),
        provenance: Provenance {
            matched: Matched::Directory,
            key: rcpt.key().to_string(),
            source: Source::Directory {
                name: "mailRoutingAddress".to_string(),
                entry: rcpt.domain().to_string(),
            },
            then: None,
        },
    }
}

/// Room for an extension-stripped key on the stack (a path is at most 256 octets; case
/// folding can lengthen non-ASCII local parts, which then take the heap path).
const BASE_KEY_STACK: usize = 320;

/// The key without its extension, built without allocating for ordinary addresses.
/// Delimiters are matched in the case-folded local part; ASCII delimiters are unchanged by
/// folding, so this finds the same split as [`Address::extension`].
fn base_key<'b>(
    rcpt: &Address,
    delimiters: &str,
    stack: &'b mut [u8; BASE_KEY_STACK],
) -> Option<std::borrow::Cow<'b, str>> {
    if !delimiters.is_ascii() {
        return rcpt.base_key(delimiters).map(std::borrow::Cow::Owned);
    }
    let local = rcpt.local_key();
    let cut = local
        .bytes()
        .position(|b| delimiters.as_bytes().contains(&b))
        .filter(|&i| i > 0)?;
    let user = &local.as_bytes()[..cut];
    let domain = rcpt.domain().as_bytes();
    let len = user.len() + 1 + domain.len();
    if len > stack.len() {
        return rcpt.base_key(delimiters).map(std::borrow::Cow::Owned);
    }
    stack[..user.len()].copy_from_slice(user);
    stack[user.len()] = b'@';
    stack[user.len() + 1..len].copy_from_slice(domain);
    // Built from two str slices split at ASCII bytes and an ASCII '@': valid UTF-8.
    std::str::from_utf8(&stack[..len])
        .ok()
        .map(std::borrow::Cow::Borrowed)
}

enum Step1 {
    Done(Outcome),
    Rewritten(Address, Provenance),
}

fn temp_fail(reason: String) -> Outcome {
    Outcome::TempFail {
        reason,
        reply: Reply::new(451, "4.3.0", "Temporary routing failure, try again later"),
    }
}

/// Put the directory rewrites that led to `outcome` in front of its provenance.
fn attach_chain(outcome: Outcome, chain: Vec<Provenance>) -> Outcome {
    let Outcome::Routed(mut routed) = outcome else {
        return outcome;
    };
    for mut p in chain.into_iter().rev() {
        p.then = Some(Box::new(routed.provenance));
        routed.provenance = p;
    }
    Outcome::Routed(routed)
}
