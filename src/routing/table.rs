//! Loading and validating routing tables: YAML files in a directory, merged into one
//! [`Snapshot`].
//!
//! Inputs: every `*.yaml` / `*.yml` file directly in the routing directory (hidden files
//! skipped), read in name order. Each file may define `routes`, and may serve `domains`
//! with a `default` route, `subdomains` opt-in, `recipients` and `mail_hosts` (see the
//! README for the format). Output: a snapshot, or every error found, each naming
//! file:line:column and what is wrong. Nothing is half-loaded: any error rejects the whole
//! set, so a running gateway keeps its previous snapshot.
//!
//! Input is bounded: file size (`max_table_bytes`), YAML nesting depth, aliases and
//! anchors, and documents per file are all capped before any value is built.

use std::fmt;
use std::fs;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hashbrown::HashMap;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::address::{Address, AddressError, normalize_domain};
use super::config::RoutingConfig;
use super::route::{NextHop, Rewrite, Route, RouteError, RouteKind, TlsPolicy, check_maildir};
use super::snapshot::{DomainRule, Entry, Pos, Snapshot, Target, governing_rule};
use super::version::{TableVersion, VersionHasher};

/// One problem in the routing tables, with its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{file}:{line}:{column}: {kind}")]
pub struct TableError {
    /// The table file (the routing directory joined with the file name).
    pub file: String,
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// What is wrong.
    pub kind: TableErrorKind,
}

/// What is wrong in a routing table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(into = "String")]
#[non_exhaustive]
pub enum TableErrorKind {
    /// The file or directory could not be read.
    #[error("cannot read: {0}")]
    Io(String),
    /// The file is larger than the configured limit.
    #[error("file is {size} bytes, the limit is {max} (routing.max_table_bytes)")]
    TooLarge {
        /// File size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The file is not UTF-8.
    #[error("not valid UTF-8 text")]
    NotUtf8,
    /// YAML syntax, an unknown field, a value of the wrong type, or a parser limit.
    #[error("{0}")]
    Yaml(String),
    /// The directory holds no table file.
    #[error("no routing tables (*.yaml) in this directory")]
    NoTables,
    /// A route, next hop, reply or rewrite is malformed.
    #[error("{0}")]
    Route(#[from] RouteError),
    /// A route map that is not exactly one of the route types, or has an option that
    /// does not fit its type.
    #[error("{0}")]
    RouteShape(String),
    /// A route name with characters other than letters, digits, `.`, `_` and `-`.
    #[error("bad route name '{0}': use letters, digits, '.', '_' and '-'")]
    RouteName(String),
    /// A reference to a route no file defines.
    #[error("unknown route '{name}' (defined routes: {known})")]
    UnknownRoute {
        /// The name used.
        name: String,
        /// The routes that exist.
        known: String,
    },
    /// A key defined twice, in one file or across files.
    #[error("{what} '{key}' is defined twice; first at {first}")]
    Duplicate {
        /// What kind of key: route, domain, recipient, mail host.
        what: &'static str,
        /// The key, normalised.
        key: String,
        /// file:line:column of the first definition.
        first: String,
    },
    /// A recipient key that is not a valid address.
    #[error("bad recipient '{key}': {error}")]
    BadAddress {
        /// The key as written.
        key: String,
        /// Why it is not an address.
        error: AddressError,
    },
    /// A domain that is not a valid domain name.
    #[error("bad domain '{domain}': {error}")]
    BadDomain {
        /// The domain as written.
        domain: String,
        /// Why it is not a domain.
        error: AddressError,
    },
    /// A recipient whose domain no table serves (often a typo).
    #[error(
        "recipient '{key}' is in domain '{domain}', which no table serves (add it to a table's domains)"
    )]
    DomainNotServed {
        /// The recipient key.
        key: String,
        /// Its domain.
        domain: String,
    },
    /// A file with recipients or a default but no domains to apply them to.
    #[error("'{field}' needs 'domains' in the same file")]
    NoDomains {
        /// The field that needs domains.
        field: &'static str,
    },
    /// A route that delivers back to this gateway.
    #[error("route '{route}' delivers to {host}, which is this gateway itself ({why}): mail loop")]
    SelfRoute {
        /// The route.
        route: String,
        /// Its host.
        host: String,
        /// Why that is this gateway.
        why: String,
    },
}

impl From<TableErrorKind> for String {
    fn from(k: TableErrorKind) -> String {
        k.to_string()
    }
}

/// Every problem found in a set of routing tables.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct TableErrors(pub Vec<TableError>);

impl fmt::Display for TableErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TableErrors {}

impl TableErrors {
    /// The errors, in the order found.
    pub fn iter(&self) -> impl Iterator<Item = &TableError> {
        self.0.iter()
    }

    /// Number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no error.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Read, validate and merge every table in `config.dir()`.
pub fn load(config: &RoutingConfig) -> Result<Snapshot, TableErrors> {
    read(config)?.build(config)
}

/// Table files read from disk and their version, not yet parsed: a reload compares the
/// version with the one in force and skips the parse when nothing changed.
pub(crate) struct ReadTables {
    files: Vec<TableFile>,
    pub(crate) version: TableVersion,
}

/// Read every table file of `config.dir()` and compute the version.
pub(crate) fn read(config: &RoutingConfig) -> Result<ReadTables, TableErrors> {
    let files = read_dir(config)?;
    let mut hasher = VersionHasher::new();
    for f in &files {
        hasher.add_file(&f.name, f.text.as_bytes());
    }
    let version = hasher.finish(config.dir());
    Ok(ReadTables { files, version })
}

impl ReadTables {
    /// Parse, validate and merge.
    pub(crate) fn build(self, config: &RoutingConfig) -> Result<Snapshot, TableErrors> {
        load_texts(config, &self.files, self.version)
    }
}

/// The table files of a directory with their contents, for loading or hashing.
pub(crate) struct TableFile {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) text: String,
}

/// The table file paths of a routing directory, in load order.
pub(crate) fn table_paths(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let is_table = name.ends_with(".yaml") || name.ends_with(".yml");
        if is_table && !name.starts_with('.') && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

fn read_dir(config: &RoutingConfig) -> Result<Vec<TableFile>, TableErrors> {
    let dir = config.dir();
    let whole = |kind| TableErrors(vec![at(&dir.display().to_string(), 1, 1, kind)]);
    let paths = table_paths(dir).map_err(|e| whole(TableErrorKind::Io(e.to_string())))?;
    if paths.is_empty() {
        return Err(whole(TableErrorKind::NoTables));
    }
    let mut files = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for path in paths {
        let shown = path.display().to_string();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match read_bounded(&path, config.max_table_bytes()) {
            Ok(text) => files.push(TableFile {
                name,
                path: shown,
                text,
            }),
            Err(kind) => errors.push(at(&shown, 1, 1, kind)),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(TableErrors(errors))
    }
}

fn read_bounded(path: &Path, max: u64) -> Result<String, TableErrorKind> {
    let size = fs::metadata(path)
        .map_err(|e| TableErrorKind::Io(e.to_string()))?
        .len();
    if size > max {
        return Err(TableErrorKind::TooLarge { size, max });
    }
    let bytes = fs::read(path).map_err(|e| TableErrorKind::Io(e.to_string()))?;
    // The file may have grown between stat and read.
    if bytes.len() as u64 > max {
        return Err(TableErrorKind::TooLarge {
            size: bytes.len() as u64,
            max,
        });
    }
    String::from_utf8(bytes).map_err(|_| TableErrorKind::NotUtf8)
}

/// Validate and merge tables given as (name, text) pairs; for tests, fuzzing and `check`
/// of content that is not on disk. Names are shown in errors as `dir/name`.
pub fn load_from_strs(
    config: &RoutingConfig,
    tables: &[(&str, &str)],
) -> Result<Snapshot, TableErrors> {
    let mut hasher = VersionHasher::new();
    let files: Vec<TableFile> = tables
        .iter()
        .map(|(name, text)| {
            hasher.add_file(name, text.as_bytes());
            TableFile {
                name: name.to_string(),
                path: config.dir().join(name).display().to_string(),
                text: text.to_string(),
            }
        })
        .collect();
    for f in &files {
        if f.text.len() as u64 > config.max_table_bytes() {
            return Err(TableErrors(vec![at(
                &f.path,
                1,
                1,
                TableErrorKind::TooLarge {
                    size: f.text.len() as u64,
                    max: config.max_table_bytes(),
                },
            )]));
        }
    }
    let version = hasher.finish(config.dir());
    load_texts(config, &files, version)
}

fn at(file: &str, line: u64, column: u64, kind: TableErrorKind) -> TableError {
    TableError {
        file: file.to_string(),
        line,
        column,
        kind,
    }
}

// ---------------------------------------------------------------------------------------
// The YAML shape of a table file.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    routes: Pairs<RawRoute>,
    #[serde(default)]
    domains: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    subdomains: Option<Spanned<bool>>,
    #[serde(default)]
    default: Option<Spanned<RawTarget>>,
    #[serde(default)]
    recipients: Recipients,
    #[serde(default)]
    mail_hosts: Pairs<RawTarget>,
}

/// Longest scalar accepted anywhere in a table (addresses are at most 256 octets).
const MAX_SCALAR: usize = 4096;

/// A string scalar of bounded length. Checked on the borrowed text, before any copy, so
/// an anchored huge scalar replayed through aliases cannot multiply memory.
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text, E> {
                bounded(s).map(|s| Text(s.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

trait IntoString {
    fn into_string(self) -> Spanned<String>;
}

impl IntoString for Spanned<Text> {
    fn into_string(self) -> Spanned<String> {
        Spanned::new(self.value.0, self.referenced, self.defined)
    }
}

fn bounded<E: de::Error>(s: &str) -> Result<&str, E> {
    if s.len() > MAX_SCALAR {
        return Err(E::custom(format!(
            "value is {} bytes long, the limit is {MAX_SCALAR}",
            s.len()
        )));
    }
    Ok(s)
}

/// A value for an error message: long values are cut, so a message stays one line.
fn clip(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// A YAML mapping kept as spanned pairs in file order, so that duplicates (also after
/// normalisation, like `Alice@x` and `alice@x`) are reported with both positions.
struct Pairs<V>(Vec<(Spanned<String>, Spanned<V>)>);

impl<V> Default for Pairs<V> {
    fn default() -> Self {
        Pairs(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Pairs<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PairsVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for PairsVisitor<V> {
            type Value = Pairs<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Pairs(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(key) = map.next_key::<Spanned<Text>>()? {
                    let value = map.next_value::<Spanned<V>>()?;
                    out.push((key.into_string(), value));
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_any(PairsVisitor(PhantomData))
    }
}

/// `domains: example.com` or `domains: [example.com, example.net]`.
struct OneOrMany(Vec<Spanned<String>>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a domain or a list of domains")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(d) = seq.next_element::<Spanned<Text>>()? {
                    out.push(d.into_string());
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_seq(V)
    }
}

/// The `recipients:` mapping, kept compact while parsing: a large table has a million
/// entries, mostly naming one of a few routes, so values are interned per file and each
/// entry is its key and four numbers.
#[derive(Default)]
struct Recipients {
    entries: Vec<RawRecipient>,
    values: Vec<RawTarget>,
}

struct RawRecipient {
    key: Box<str>,
    key_at: (u32, u32),
    value: u32,
    value_at: (u32, u32),
}

fn line_col<T>(s: &Spanned<T>) -> (u32, u32) {
    let clamp = |n: u64| n.clamp(1, u32::MAX as u64) as u32;
    (clamp(s.referenced.line()), clamp(s.referenced.column()))
}

impl<'de> Deserialize<'de> for Recipients {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Recipients;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of recipients to routes")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Recipients, E> {
                Ok(Recipients::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Recipients, A::Error> {
                let mut out = Recipients::default();
                let mut names: HashMap<String, u32> = HashMap::new();
                while let Some(key) = map.next_key::<Spanned<Text>>()? {
                    let value = map.next_value::<Spanned<RawTarget>>()?;
                    let value_at = line_col(&value);
                    let index = match value.value {
                        RawTarget::Name(name) => match names.get(&name) {
                            Some(&i) => i,
                            None => {
                                let i = out.values.len() as u32;
                                names.insert(name.clone(), i);
                                out.values.push(RawTarget::Name(name));
                                i
                            }
                        },
                        other => {
                            out.values.push(other);
                            (out.values.len() - 1) as u32
                        }
                    };
                    out.entries.push(RawRecipient {
                        key_at: line_col(&key),
                        key: key.value.0.into_boxed_str(),
                        value: index,
                        value_at,
                    });
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

/// A route definition: transport(5) text, or a mapping.
enum RawRoute {
    Transport(String),
    Map(RawRouteMap),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteMap {
    lmtp: Option<Text>,
    smtp: Option<Text>,
    maildir: Option<Text>,
    reject: Option<Text>,
    defer: Option<Text>,
    tls: Option<Text>,
    rewrite: Option<Text>,
}

/// Where a recipient, default or mail host goes: a route name, inline transport(5) text,
/// or `{route: NAME, rewrite: ADDRESS}`.
enum RawTarget {
    Name(String),
    Map(RawTargetMap),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTargetMap {
    route: Text,
    rewrite: Option<Text>,
}

macro_rules! string_or_map {
    ($ty:ident, $string:ident, $map:ident, $maptype:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$ty, E> {
                        bounded(s).map(|s| $ty::$string(s.to_string()))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<$ty, A::Error> {
                        <$maptype>::deserialize(de::value::MapAccessDeserializer::new(map))
                            .map($ty::$map)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}
string_or_map!(
    RawRoute,
    Transport,
    Map,
    RawRouteMap,
    "a transport like smtp:[host]:25, or a route mapping"
);
string_or_map!(
    RawTarget,
    Name,
    Map,
    RawTargetMap,
    "a route name, a transport like smtp:[host]:25, or {route: NAME, rewrite: ADDRESS}"
);

fn parse_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = 16;
    // Tables rarely need aliases; a few are allowed, an alias bomb is not.
    budget.max_aliases = 100;
    budget.max_anchors = 100;
    budget.max_recorded_anchor_events = 10_000;
    budget.max_recorded_anchor_bytes = 64 * 1024;
    budget.max_documents = 1;
    budget.max_nodes = 16_000_000;
    budget.max_events = 40_000_000;
    budget.max_total_scalar_bytes = 512 * 1024 * 1024;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = 10_000;
    alias_limits.max_replay_stack_depth = 8;
    options.alias_limits = alias_limits;
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    // Routing tables have no use for `<<` merges, and supporting them makes the parser
    // remember every key (a fifth of the load time of a large table).
    options.merge_keys = serde_saphyr::MergeKeyPolicy::Error;
    options.with_snippet = false;
    options
}

/// Parse one file; a large plain `recipients:` block is read by the line scanner, the
/// rest by the YAML parser (see `recipient_lines`).
fn parse_file(file: &TableFile, fast: bool) -> Result<RawFile, TableError> {
    let Some(block) = fast
        .then(|| super::recipient_lines::scan(&file.text))
        .flatten()
    else {
        return parse_yaml(&file.path, &file.text);
    };
    let mut raw = parse_yaml(&file.path, &block.rest)?;
    raw.recipients = Recipients {
        entries: block
            .lines
            .into_iter()
            .map(|l| RawRecipient {
                key: l.key,
                key_at: l.key_at,
                value: l.value,
                value_at: l.value_at,
            })
            .collect(),
        values: block.values.into_iter().map(RawTarget::Name).collect(),
    };
    Ok(raw)
}

fn parse_yaml(path: &str, text: &str) -> Result<RawFile, TableError> {
    if text.trim().is_empty() {
        return Ok(RawFile::default());
    }
    match serde_saphyr::from_str_with_options::<Option<RawFile>>(text, parse_options()) {
        Ok(raw) => Ok(raw.unwrap_or_default()),
        Err(e) => {
            let (line, column) = e
                .location()
                .map(|l| (l.line().max(1), l.column().max(1)))
                .unwrap_or((1, 1));
            Err(at(
                path,
                line,
                column,
                TableErrorKind::Yaml(yaml_message(&e.to_string())),
            ))
        }
    }
}

/// The parser's message without its own "at line X column Y" (we print file:line:column).
pub(crate) fn yaml_message(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    let first = match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

// ---------------------------------------------------------------------------------------
// Building the snapshot.

struct Builder<'c> {
    config: &'c RoutingConfig,
    files: Vec<Arc<str>>,
    errors: Vec<TableError>,
    routes: Vec<Arc<Route>>,
    route_index: HashMap<String, (u32, Pos)>,
    targets: Vec<Target>,
    target_index: HashMap<(u32, Option<String>), u32>,
    domains: HashMap<Box<str>, DomainRule>,
    recipients: HashMap<compact_str::CompactString, Entry>,
    mail_hosts: HashMap<Box<str>, Entry>,
}

fn load_texts(
    config: &RoutingConfig,
    files: &[TableFile],
    version: TableVersion,
) -> Result<Snapshot, TableErrors> {
    load_parsed(config, files, version, true)
}

fn load_parsed(
    config: &RoutingConfig,
    files: &[TableFile],
    version: TableVersion,
    fast: bool,
) -> Result<Snapshot, TableErrors> {
    let mut b = Builder {
        config,
        files: files.iter().map(|f| Arc::from(f.path.as_str())).collect(),
        errors: Vec::new(),
        routes: Vec::new(),
        route_index: HashMap::new(),
        targets: Vec::new(),
        target_index: HashMap::new(),
        domains: HashMap::new(),
        recipients: HashMap::new(),
        mail_hosts: HashMap::new(),
    };
    let mut raws = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        match parse_file(file, fast) {
            Ok(raw) => raws.push((i as u32, raw)),
            Err(e) => b.errors.push(e),
        }
    }
    // A file that is not valid YAML would only cause follow-on errors elsewhere
    // ("unknown route" for the routes it defines): report the syntax errors alone.
    if !b.errors.is_empty() {
        return Err(TableErrors(b.errors));
    }
    // Routes first (any file may use a route another defines), then domains (a recipient
    // may be in a domain another file serves), then what refers to both.
    for (file, raw) in &mut raws {
        for (name, route) in std::mem::take(&mut raw.routes.0) {
            b.add_route(*file, name, route);
        }
    }
    let mut file_domains = Vec::with_capacity(raws.len());
    for (file, raw) in &raws {
        file_domains.push(b.add_domains(*file, raw));
    }
    for ((file, raw), domains) in raws.into_iter().zip(file_domains) {
        b.add_entries(file, raw, &domains);
    }
    if !b.errors.is_empty() {
        let mut errors = b.errors;
        errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        return Err(TableErrors(errors));
    }
    b.recipients.shrink_to_fit();
    Ok(Snapshot {
        recipients: b.recipients,
        domains: b.domains,
        mail_hosts: b.mail_hosts,
        targets: b.targets,
        routes: b.routes,
        files: b.files,
        version: Arc::new(version),
        delimiters: config.recipient_delimiter().to_string(),
    })
}

fn pos_of<T>(file: u32, s: &Spanned<T>) -> Pos {
    Pos {
        file,
        line: s.referenced.line().clamp(1, u32::MAX as u64) as u32,
        column: s.referenced.column().clamp(1, u32::MAX as u64) as u32,
    }
}

impl Builder<'_> {
    fn error(&mut self, pos: Pos, kind: TableErrorKind) {
        let file = self.show_file(pos);
        self.errors
            .push(at(&file, pos.line.into(), pos.column.into(), kind));
    }

    fn show_file(&self, pos: Pos) -> String {
        self.files
            .get(pos.file as usize)
            .map(|f| f.to_string())
            .unwrap_or_default()
    }

    fn show(&self, pos: Pos) -> String {
        format!("{}:{}:{}", self.show_file(pos), pos.line, pos.column)
    }

    fn add_route(&mut self, file: u32, name: Spanned<String>, raw: Spanned<RawRoute>) {
        let name_pos = pos_of(file, &name);
        let value_pos = pos_of(file, &raw);
        let name = name.value;
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid_name {
            return self.error(name_pos, TableErrorKind::RouteName(name));
        }
        if let Some((_, first)) = self.route_index.get(&name) {
            let first = self.show(*first);
            return self.error(
                name_pos,
                TableErrorKind::Duplicate {
                    what: "route",
                    key: name,
                    first,
                },
            );
        }
        let route = match raw.value {
            RawRoute::Transport(spec) => {
                Route::parse_transport(name.clone(), &spec).map_err(TableErrorKind::Route)
            }
            RawRoute::Map(map) => route_from_map(&name, map),
        };
        match route {
            Ok(route) => {
                self.check_self_route(&route, value_pos);
                let idx = self.routes.len() as u32;
                self.routes.push(Arc::new(route));
                self.route_index.insert(name, (idx, name_pos));
            }
            Err(kind) => self.error(value_pos, kind),
        }
    }

    fn check_self_route(&mut self, route: &Route, pos: Pos) {
        let Some(hop) = route.next_hop() else { return };
        let Some(host) = hop.host() else { return };
        let own = self.config.hostname();
        let why = if !own.is_empty() && own != "localhost" && host == own {
            Some("the gateway's hostname".to_string())
        } else if let (NextHop::Direct { host, port }, Ok(ip)) = (hop, host.parse::<IpAddr>()) {
            self.config
                .local_addresses()
                .iter()
                .find(|a| {
                    a.port() == *port
                        && (a.ip() == ip || (a.ip().is_unspecified() && ip.is_loopback()))
                })
                .map(|a| format!("the gateway listens on {a}"))
                .filter(|_| !host.is_empty())
        } else {
            None
        };
        if let Some(why) = why {
            self.error(
                pos,
                TableErrorKind::SelfRoute {
                    route: route.name().to_string(),
                    host: hop.to_string(),
                    why,
                },
            );
        }
    }

    fn add_domains(&mut self, file: u32, raw: &RawFile) -> Vec<String> {
        let mut out = Vec::new();
        let subdomains = raw.subdomains.as_ref().is_some_and(|s| s.value);
        for d in raw.domains.iter().flat_map(|d| d.value.0.iter()) {
            let pos = pos_of(file, d);
            let domain = match normalize_domain(&d.value) {
                Ok(domain) => domain,
                Err(error) => {
                    self.error(
                        pos,
                        TableErrorKind::BadDomain {
                            domain: d.value.clone(),
                            error,
                        },
                    );
                    continue;
                }
            };
            if let Some(first) = self.domains.get(domain.as_str()) {
                let first = self.show(first.pos);
                self.error(
                    pos,
                    TableErrorKind::Duplicate {
                        what: "domain",
                        key: domain,
                        first,
                    },
                );
                continue;
            }
            self.domains.insert(
                domain.clone().into_boxed_str(),
                DomainRule {
                    default: None,
                    subdomains,
                    pos,
                },
            );
            out.push(domain);
        }
        out
    }

    fn add_entries(&mut self, file: u32, raw: RawFile, domains: &[String]) {
        let has_domains = raw.domains.as_ref().is_some_and(|d| !d.value.0.is_empty());
        if let Some(default) = raw.default {
            let pos = pos_of(file, &default);
            if !has_domains {
                self.error(pos, TableErrorKind::NoDomains { field: "default" });
            } else if let Some(target) = self.target(default.value, pos) {
                for d in domains {
                    if let Some(rule) = self.domains.get_mut(d.as_str()) {
                        rule.default = Some(Entry { target, pos });
                    }
                }
            }
        }
        if let Some(sub) = &raw.subdomains
            && !has_domains
        {
            self.error(
                pos_of(file, sub),
                TableErrorKind::NoDomains {
                    field: "subdomains",
                },
            );
        }
        let Recipients { entries, values } = raw.recipients;
        self.recipients.reserve(entries.len());
        // Each distinct value is resolved once; its errors are reported at every use.
        let mut resolved: Vec<Option<Result<u32, TableErrorKind>>> = vec![None; values.len()];
        let mut values: Vec<Option<RawTarget>> = values.into_iter().map(Some).collect();
        for entry in entries {
            let pos = Pos {
                file,
                line: entry.key_at.0,
                column: entry.key_at.1,
            };
            let vpos = Pos {
                file,
                line: entry.value_at.0,
                column: entry.value_at.1,
            };
            let i = entry.value as usize;
            let target = match resolved.get(i).cloned().flatten() {
                Some(result) => result,
                None => {
                    let raw = values.get_mut(i).and_then(Option::take);
                    let result = match raw {
                        Some(raw) => self.resolve_target(raw, vpos),
                        None => Err(TableErrorKind::RouteShape("internal: value missing".into())),
                    };
                    if let Some(slot) = resolved.get_mut(i) {
                        *slot = Some(result.clone());
                    }
                    result
                }
            };
            match target {
                Ok(target) => self.add_recipient(pos, &entry.key, target, domains),
                Err(kind) => self.error(vpos, kind),
            }
        }
        for (key, value) in raw.mail_hosts.0 {
            let pos = pos_of(file, &key);
            let host = match normalize_domain(&key.value) {
                Ok(h) => h,
                Err(error) => {
                    self.error(
                        pos,
                        TableErrorKind::BadDomain {
                            domain: key.value,
                            error,
                        },
                    );
                    continue;
                }
            };
            let vpos = pos_of(file, &value);
            if let Some(first) = self.mail_hosts.get(host.as_str()) {
                let first = self.show(first.pos);
                self.error(
                    pos,
                    TableErrorKind::Duplicate {
                        what: "mail host",
                        key: host,
                        first,
                    },
                );
            } else if let Some(target) = self.target(value.value, vpos) {
                self.mail_hosts
                    .insert(host.into_boxed_str(), Entry { target, pos });
            }
        }
    }

    fn add_recipient(&mut self, pos: Pos, key: &str, target: u32, domains: &[String]) {
        if key.contains('@') {
            let addr = match Address::parse(key) {
                Ok(a) => a,
                Err(error) => {
                    return self.error(
                        pos,
                        TableErrorKind::BadAddress {
                            key: clip(key),
                            error,
                        },
                    );
                }
            };
            if self.snapshot_serves(addr.domain()) {
                self.insert_recipient(addr.key(), target, pos);
            } else {
                let domain = addr.domain().to_string();
                self.error(
                    pos,
                    TableErrorKind::DomainNotServed {
                        key: clip(key),
                        domain,
                    },
                );
            }
            return;
        }
        // A bare local part: that user in every domain of this file.
        if domains.is_empty() {
            return self.error(
                pos,
                TableErrorKind::NoDomains {
                    field: "recipients",
                },
            );
        }
        for d in domains {
            match Address::parse(&format!("{key}@{d}")) {
                Ok(addr) => self.insert_recipient(addr.key(), target, pos),
                Err(error) => {
                    return self.error(
                        pos,
                        TableErrorKind::BadAddress {
                            key: clip(key),
                            error,
                        },
                    );
                }
            }
        }
    }

    fn snapshot_serves(&self, domain: &str) -> bool {
        governing_rule(&self.domains, domain).is_some()
    }

    fn insert_recipient(&mut self, key: &str, target: u32, pos: Pos) {
        if let Some(first) = self.recipients.get(key) {
            let first = self.show(first.pos);
            self.error(
                pos,
                TableErrorKind::Duplicate {
                    what: "recipient",
                    key: key.to_string(),
                    first,
                },
            );
        } else {
            self.recipients
                .insert(compact_str::CompactString::from(key), Entry { target, pos });
        }
    }

    /// Resolve a target, reporting an error at `pos`.
    fn target(&mut self, raw: RawTarget, pos: Pos) -> Option<u32> {
        match self.resolve_target(raw, pos) {
            Ok(t) => Some(t),
            Err(kind) => {
                self.error(pos, kind);
                None
            }
        }
    }

    /// Resolve a target (route name, inline transport, or route + rewrite) to an index.
    /// `pos` is where an inline transport route is first written.
    fn resolve_target(&mut self, raw: RawTarget, pos: Pos) -> Result<u32, TableErrorKind> {
        let (name, rewrite) = match raw {
            RawTarget::Name(name) => (name, None),
            RawTarget::Map(m) => (m.route.0, m.rewrite.map(|t| t.0)),
        };
        let name = name.trim().to_string();
        let route = match self.route_index.get(&name) {
            Some((idx, _)) => *idx,
            None if name.contains(':') => {
                // Inline transport(5) syntax, named by its own text.
                let route = Route::parse_transport(name.clone(), &name)?;
                self.check_self_route(&route, pos);
                let idx = self.routes.len() as u32;
                self.routes.push(Arc::new(route));
                self.route_index.insert(name, (idx, pos));
                idx
            }
            None => {
                let mut known: Vec<&str> = self
                    .routes
                    .iter()
                    .map(|r| r.name())
                    .filter(|n| !n.contains(':'))
                    .collect();
                known.sort_unstable();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                return Err(TableErrorKind::UnknownRoute {
                    name: clip(&name),
                    known,
                });
            }
        };
        let rewrite = rewrite.map(|r| Rewrite::parse(&r)).transpose()?;
        let key = (route, rewrite.as_ref().map(|r| r.template().to_string()));
        if let Some(t) = self.target_index.get(&key) {
            return Ok(*t);
        }
        let t = self.targets.len() as u32;
        let route = self.routes.get(route as usize).cloned().ok_or_else(|| {
            TableErrorKind::RouteShape("internal: route index out of range".into())
        })?;
        self.targets.push(Target { route, rewrite });
        self.target_index.insert(key, t);
        Ok(t)
    }
}

fn route_from_map(name: &str, m: RawRouteMap) -> Result<Route, TableErrorKind> {
    let given: Vec<&str> = [
        ("lmtp", m.lmtp.is_some()),
        ("smtp", m.smtp.is_some()),
        ("maildir", m.maildir.is_some()),
        ("reject", m.reject.is_some()),
        ("defer", m.defer.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(k, _)| *k)
    .collect();
    if given.len() != 1 {
        return Err(TableErrorKind::RouteShape(format!(
            "route '{name}' needs exactly one of lmtp, smtp, maildir, reject, defer; it has {}",
            if given.is_empty() {
                "none".to_string()
            } else {
                given.join(" and ")
            }
        )));
    }
    let kind = if let Some(Text(v)) = m.lmtp {
        RouteKind::Lmtp {
            next_hop: NextHop::parse(&v, super::route::LMTP_PORT, true)?,
            tls: TlsPolicy::default(),
        }
    } else if let Some(Text(v)) = m.smtp {
        RouteKind::Smtp {
            next_hop: NextHop::parse(&v, super::route::SMTP_PORT, false)?,
            tls: TlsPolicy::default(),
        }
    } else if let Some(Text(v)) = m.maildir {
        RouteKind::Maildir {
            path: check_maildir(&v)?,
        }
    } else if let Some(Text(v)) = m.reject {
        RouteKind::Reject(super::route::Reply::parse_reject(&v)?)
    } else if let Some(Text(v)) = m.defer {
        RouteKind::Defer(super::route::Reply::parse_defer(&v)?)
    } else {
        return Err(TableErrorKind::RouteShape(format!(
            "route '{name}' is empty"
        )));
    };
    let mut route = Route::new(name, kind, None);
    if let Some(Text(tls)) = m.tls {
        let policy = tls
            .parse::<TlsPolicy>()
            .map_err(TableErrorKind::RouteShape)?;
        if !route.set_tls(policy) {
            return Err(TableErrorKind::RouteShape(format!(
                "route '{name}': tls applies to smtp and lmtp routes only"
            )));
        }
    }
    if let Some(Text(rewrite)) = m.rewrite {
        if !route.delivers() {
            return Err(TableErrorKind::RouteShape(format!(
                "route '{name}': a reject or defer route cannot rewrite"
            )));
        }
        route.set_rewrite(Some(Rewrite::parse(&rewrite)?));
    }
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(texts: &[(&str, String)]) -> Vec<TableFile> {
        texts
            .iter()
            .map(|(n, t)| TableFile {
                name: n.to_string(),
                path: format!("routing/{n}"),
                text: t.clone(),
            })
            .collect()
    }

    fn both(
        texts: &[(&str, String)],
    ) -> (Result<Snapshot, TableErrors>, Result<Snapshot, TableErrors>) {
        let config = RoutingConfig::new("routing");
        let fs = files(texts);
        let v = VersionHasher::new().finish(Path::new("/nonexistent"));
        (
            load_parsed(&config, &fs, v.clone(), true),
            load_parsed(&config, &fs, v, false),
        )
    }

    fn big_table(extra: &str) -> String {
        let mut t = String::from(
            "routes:\n  m365: smtp:[mx.example.net]:25\n  local: maildir:mail\ndomains: [example.com]\nrecipients:\n",
        );
        for i in 0..200 {
            let spaces = " ".repeat(1 + i % 3);
            let route = if i % 2 == 0 { "m365" } else { "local" };
            t.push_str(&format!("  User{i}@Example.com:{spaces}{route}  \n"));
            if i % 50 == 0 {
                t.push_str("\n  # a comment inside the block\n");
            }
        }
        t.push_str(extra);
        t.push_str("# trailing comment\ndefault: local\n");
        t
    }

    #[test]
    fn line_scanner_and_yaml_parser_report_the_same_errors() {
        let text = big_table(
            "  bob@example.com: m356\n  eve@exmaple.com: m365\n  user7@example.com: local\n",
        );
        assert!(
            super::super::recipient_lines::scan(&text).is_some(),
            "fast path taken"
        );
        let (fast, slow) = both(&[("a.yaml", text)]);
        let (fast, slow) = (fast.unwrap_err(), slow.unwrap_err());
        assert_eq!(fast.len(), 3, "{fast}");
        assert_eq!(fast.to_string(), slow.to_string());
    }

    #[test]
    fn line_scanner_and_yaml_parser_build_the_same_snapshot() {
        let (fast, slow) = both(&[("a.yaml", big_table(""))]);
        let (fast, slow) = (fast.unwrap(), slow.unwrap());
        assert_eq!(fast.recipient_count(), 200);
        for i in [0, 1, 77, 199] {
            let rcpt = Address::parse(&format!("user{i}@example.com")).unwrap();
            let (a, b) = (fast.resolve(&rcpt), slow.resolve(&rcpt));
            let route =
                |o: &super::super::resolve::Outcome| o.route().map(|r| r.name().to_string());
            assert_eq!(route(&a), route(&b));
            let prov = |o: super::super::resolve::Outcome| match o {
                super::super::resolve::Outcome::Routed(r) => r.provenance.to_string(),
                _ => String::new(),
            };
            assert_eq!(prov(a), prov(b));
        }
    }
}
