//! What an import tells the administrator: every entry not carried over or carried over
//! with a change, every probed address that splitmx would route differently from
//! Postfix, and a summary.
//!
//! Findings name the source file and line (`/etc/postfix/transport:23`) or, for what
//! concerns a whole domain, the domain. The text form is one finding per line, for a
//! terminal or a merge-request comment; the JSON form (serde) has the same content.

use std::fmt;

use serde::Serialize;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The entry is not carried over: the addresses it matched are deferred with the
    /// `not-imported` route (or, where noted, not served) until someone decides.
    NotCarried,
    /// Carried over with a change or an assumption the administrator should confirm.
    Changed,
    /// Carried over as Postfix has it, but worth a look (a likely loop, a wildcard).
    Warning,
}

impl Severity {
    fn label(self) -> &'static str {
        match self {
            Severity::NotCarried => "not carried over",
            Severity::Changed => "changed",
            Severity::Warning => "warning",
        }
    }
}

/// One thing the administrator should know about the import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// The source file, when the finding is about one of its lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The 1-based line in `file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// The domain it is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The source entry (`key value`), shortened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// What happened and what to do.
    pub message: String,
}

/// An address splitmx would route differently from Postfix, found by probing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The probed address.
    pub address: String,
    /// What Postfix does with it (and which line says so).
    pub postfix: String,
    /// What the generated tables do with it.
    pub splitmx: String,
}

/// Counts for the last line of the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Entries read from the transport map.
    pub transport_entries: usize,
    /// Entries read from relay_recipients (0 without one).
    pub relay_recipients: usize,
    /// Recipient entries written.
    pub recipients: usize,
    /// Domains written (one table file each).
    pub domains: usize,
    /// Routes written.
    pub routes: usize,
    /// Entries left out because their domain was not selected (`--domain`).
    pub not_selected: usize,
    /// Addresses probed against both Postfix's lookup rules and the generated tables.
    pub probed: usize,
}

/// Most differences listed; the rest are counted (one systematic cause can touch every
/// recipient of a large map).
pub const MAX_LISTED_DIFFERENCES: usize = 50;

/// Everything an import has to say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Per-entry and per-domain findings, in source order.
    pub findings: Vec<Finding>,
    /// Notes that hold for the whole import.
    pub notes: Vec<String>,
    /// Probed addresses routed differently (at most [`MAX_LISTED_DIFFERENCES`]).
    pub differences: Vec<Difference>,
    /// How many probed addresses differ in all.
    pub differences_total: usize,
    /// Counts.
    pub summary: Summary,
}

impl Report {
    /// True when something was not carried over or routes differently: the tables need
    /// a person's decision before they replace Postfix.
    pub fn needs_attention(&self) -> bool {
        self.differences_total > 0
            || self
                .findings
                .iter()
                .any(|f| f.severity == Severity::NotCarried)
    }

    /// Number of findings of one severity.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    pub(crate) fn add_difference(&mut self, d: Difference) {
        self.differences_total += 1;
        if self.differences.len() < MAX_LISTED_DIFFERENCES {
            self.differences.push(d);
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line, &self.domain) {
            (Some(file), Some(line), _) => write!(f, "{file}:{line}: ")?,
            (Some(file), None, _) => write!(f, "{file}: ")?,
            (None, _, Some(domain)) => write!(f, "{domain}: ")?,
            (None, _, None) => {}
        }
        write!(f, "{}: ", self.severity.label())?;
        if let Some(entry) = &self.entry {
            write!(f, "'{entry}': ")?;
        }
        f.write_str(&self.message)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        if self.differences_total > 0 {
            writeln!(
                f,
                "{} probed address{} routed differently from Postfix:",
                self.differences_total,
                if self.differences_total == 1 {
                    " is"
                } else {
                    "es are"
                }
            )?;
            for d in &self.differences {
                writeln!(f, "  {}", d.address)?;
                writeln!(f, "    postfix: {}", d.postfix)?;
                writeln!(f, "    splitmx: {}", d.splitmx)?;
            }
            if self.differences_total > self.differences.len() {
                writeln!(
                    f,
                    "  ... and {} more",
                    self.differences_total - self.differences.len()
                )?;
            }
        }
        let s = &self.summary;
        write!(
            f,
            "imported {} recipient{}, {} domain{}, {} route{} from {} transport entr{}",
            s.recipients,
            plural(s.recipients),
            s.domains,
            plural(s.domains),
            s.routes,
            plural(s.routes),
            s.transport_entries,
            if s.transport_entries == 1 { "y" } else { "ies" },
        )?;
        if s.relay_recipients > 0 {
            write!(f, " and {} relay_recipients entries", s.relay_recipients)?;
        }
        write!(
            f,
            "; {} not carried over, {} changed, {} warning{}; {} of {} probed address{} differ{}",
            self.count(Severity::NotCarried),
            self.count(Severity::Changed),
            self.count(Severity::Warning),
            plural(self.count(Severity::Warning)),
            self.differences_total,
            s.probed,
            if s.probed == 1 { "" } else { "es" },
            if self.differences_total == 1 { "s" } else { "" },
        )?;
        if s.not_selected > 0 {
            write!(
                f,
                "; {} entries for other domains left out (--domain)",
                s.not_selected
            )?;
        }
        Ok(())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A source entry for a finding: `key value`, cut to one short line.
pub(crate) fn entry_text(key: &str, value: &str) -> String {
    let text = if value.is_empty() {
        key.to_string()
    } else {
        format!("{key} {value}")
    };
    match text.char_indices().nth(100) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}
