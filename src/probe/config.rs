//! `probes/*.toml`: check definitions and blackbox-style `/probe` modules,
//! loaded and validated up front so a bad config fails at start-up, with
//! every error naming `file:line:column` and the expected form.
//!
//! ```toml
//! [defaults]                      # optional; applies to the checks of this file only
//! interval = "30s"                # default 1m
//! timeout = "10s"                 # default 10s, capped at 4/5 of the interval
//! labels = { team = "web" }       # merged with each check's labels (the check wins)
//! regions = ["eu", "us"]          # default: all regions (a check's list replaces it)
//! tls = { expiry_threshold = "14d" }  # merged into https:// and tls:// checks' `tls`
//! net = { ip_preference = "ip4" }     # merged into every check's `net`
//!
//! [[check]]
//! name = "api-health"                        # unique across all files
//! target = "https://api.example.com/health"  # the scheme gives the kind
//! interval = "15s"
//! labels = { service = "api" }
//! depends_on = ["edge-dns"]
//! valid_status = ["2xx"]                     # the kind's options, flat
//!
//! [modules.http_2xx]              # for /probe?module=http_2xx&target=URL
//! kind = "http"                   # http | dns | tcp
//! timeout = "5s"                  # default 10s
//! valid_status = ["2xx"]
//! ```
//!
//! A check's options are exactly the fields of the kind's options struct
//! ([`HttpOptions`], [`DnsOptions`], [`TcpOptions`]) minus what the target
//! already says: `url` (http), `server`, `name`, `query_type`, `transport`
//! (dns: `dns://SERVER/NAME?type=MX&transport=tcp`), `address` (tcp).
//! TLS over TCP is a `tls://` target; its options go in `tls = { ... }`.
//! Relative `tls.ca_file`, `cert_file` and `key_file` are relative to the
//! file's directory.
//!
//! Modules take a target at request time: a URL for `http`; `host:port` (or
//! a `tcp://`/`tls://` URL) for `tcp`, where `tls = true` or
//! `tls = { ... }` makes the module speak TLS; `SERVER/NAME` (or a `dns://`
//! URL) for `dns`, or just `SERVER` when the module sets `query_name`.
//! A dns module may set `query_type` and `transport`; a `?type=` or
//! `?transport=` in the target overrides them. `[defaults]` does not apply
//! to modules.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::CheckDef;
use crate::check::target::{SCHEMES, Target};
use crate::check::{
    CheckKind, CheckSpec, DEFAULT_TIMEOUT, DnsOptions, HttpOptions, TcpOptions, TlsOptions,
};

/// Interval of a check that sets none (and whose file's defaults set none).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Label names varde sets itself on metrics and results.
pub const RESERVED_LABELS: &[&str] = &["check", "target", "region", "phase", "reason", "result"];

const TOP_KEYS: &[&str] = &["defaults", "check", "modules"];
const DEFAULTS_KEYS: &[&str] = &["interval", "timeout", "labels", "regions", "tls", "net"];
const CHECK_KEYS: &[&str] = &[
    "name",
    "kind",
    "target",
    "interval",
    "timeout",
    "labels",
    "regions",
    "depends_on",
];

// === public types ===

/// Everything `probes/*.toml` defines, validated.
#[derive(Clone, Debug, Default)]
pub struct ProbeConfig {
    /// In file order, then in the order written.
    pub checks: Vec<CheckDef>,
    pub modules: BTreeMap<String, Module>,
    /// The files read, in the order read.
    pub files: Vec<PathBuf>,
}

/// A `/probe` module: a check template whose target comes with the request.
#[derive(Clone, Debug)]
pub struct Module {
    pub name: String,
    pub timeout: Duration,
    /// The options, with the target fields left empty.
    template: CheckSpec,
    /// For dns modules: the name asked when the target is only a server.
    query_name: Option<String>,
}

impl Module {
    pub fn kind(&self) -> CheckKind {
        spec_kind(&self.template)
    }

    /// The module's check for `target`, validated (`build` succeeds):
    /// a URL for http, `host:port` for tcp, `SERVER/NAME` for dns.
    pub fn spec_for(&self, target: &str) -> Result<CheckSpec, String> {
        let target = target.trim();
        let url = match self.kind() {
            CheckKind::Http => target.to_owned(),
            CheckKind::Tcp if target.contains("://") => target.to_owned(),
            CheckKind::Tcp => format!("tcp://{target}"),
            CheckKind::Dns if target.contains("://") => target.to_owned(),
            CheckKind::Dns if target.contains('/') => format!("dns://{target}"),
            CheckKind::Dns => match &self.query_name {
                Some(q) => format!("dns://{target}/{q}"),
                None => {
                    return Err(format!(
                        "module {:?} expects SERVER/NAME or dns://SERVER/NAME, got {target:?}",
                        self.name
                    ));
                }
            },
        };
        let parsed = Target::parse(&url)?;
        if parsed.kind() != self.kind() {
            let expected = match self.kind() {
                CheckKind::Http => "an http:// or https:// URL",
                CheckKind::Dns => "SERVER/NAME or dns://SERVER/NAME",
                CheckKind::Tcp => "host:port",
            };
            return Err(format!(
                "module {:?} is a {} module: expected {expected}, got {target:?}",
                self.name,
                self.kind().as_str()
            ));
        }
        let mut spec = self.template.clone();
        fill_target(&mut spec, &parsed);
        spec.build(self.timeout).map_err(|e| e.to_string())?;
        Ok(spec)
    }
}

/// One problem in the configuration. `line` and `column` are 1-based
/// (column in characters); 0 means the problem is not at a position (an
/// unreadable file or directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found, in file and position order.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
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

impl std::error::Error for ConfigErrors {}

/// Loads every `*.toml` directly in `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<ProbeConfig, ConfigErrors> {
    load_toml_dir(dir, parse_files)
}

/// Reads every `*.toml` directly in `dir`, in name order, and hands them to
/// `parse`; files that cannot be read are reported beside `parse`'s errors.
/// Shared by the probe config and the alert rules.
pub(crate) fn load_toml_dir<T>(
    dir: &Path,
    parse: impl FnOnce(&[(PathBuf, String)]) -> Result<T, ConfigErrors>,
) -> Result<T, ConfigErrors> {
    let whole = |message: String| {
        ConfigErrors(vec![ConfigError {
            file: dir.to_owned(),
            line: 0,
            column: 0,
            message,
        }])
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| whole(format!("cannot read the directory: {e}")))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| whole(format!("cannot read the directory: {e}")))?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    let mut unreadable = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push((path, text)),
            Err(e) => unreadable.push(ConfigError {
                file: path,
                line: 0,
                column: 0,
                message: format!("cannot read the file: {e}"),
            }),
        }
    }
    match parse(&files) {
        Ok(parsed) if unreadable.is_empty() => Ok(parsed),
        Ok(_) => Err(ConfigErrors(unreadable)),
        Err(ConfigErrors(mut errors)) => {
            unreadable.append(&mut errors);
            Err(ConfigErrors(unreadable))
        }
    }
}

/// A file's path, size and modification time: what hot reload compares
/// to notice an edit without a file-watching service.
pub(crate) type FileStamp = (PathBuf, u64, Option<std::time::SystemTime>);

/// The [`FileStamp`] of `path` (size 0 and no time when it is missing).
pub(crate) fn file_stamp(path: PathBuf) -> FileStamp {
    let m = std::fs::metadata(&path).ok();
    let len = m.as_ref().map_or(0, |m| m.len());
    let modified = m.and_then(|m| m.modified().ok());
    (path, len, modified)
}

/// The stamps of the `*.toml` files directly in `dir`, sorted (empty when
/// the directory cannot be read). Shared by the probe and the coordinator.
pub(crate) fn toml_stamps(dir: &Path) -> Vec<FileStamp> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .map(|e| file_stamp(e.path()))
        .collect();
    out.sort();
    out
}

/// Parses and validates files given as (path, contents); paths name the
/// files in errors and anchor relative TLS file paths.
pub fn parse_files(files: &[(PathBuf, String)]) -> Result<ProbeConfig, ConfigErrors> {
    let mut loader = Loader {
        files: files.iter().map(|(p, _)| p.clone()).collect(),
        errors: Vec::new(),
        checks: Vec::new(),
        modules: BTreeMap::new(),
        broken: false,
    };
    for (idx, (path, text)) in files.iter().enumerate() {
        loader.file(&Src { idx, path, text });
    }
    loader.finish()
}

// === positions ===

/// One file being read.
pub(crate) struct Src<'a> {
    pub(crate) idx: usize,
    pub(crate) path: &'a Path,
    pub(crate) text: &'a str,
}

impl Src<'_> {
    pub(crate) fn loc(&self, span: &Range<usize>) -> Loc {
        let mut at = span.start.min(self.text.len());
        while !self.text.is_char_boundary(at) {
            at -= 1;
        }
        let before = &self.text[..at];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Loc {
            file: self.idx,
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new(""))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Loc {
    pub(crate) file: usize,
    pub(crate) line: usize,
    pub(crate) column: usize,
}

// === the loader ===

struct Loader {
    files: Vec<PathBuf>,
    errors: Vec<(Loc, String)>,
    /// Every check that has a name, valid or not (for duplicates and
    /// dependencies).
    checks: Vec<Parsed>,
    modules: BTreeMap<String, (Module, Loc)>,
    /// Some file did not parse: its check names are unknown.
    broken: bool,
}

struct Parsed {
    name: String,
    at: Loc,
    depends_on: Vec<(String, Loc)>,
    def: Option<CheckDef>,
}

/// `[defaults]` of one file.
#[derive(Default)]
struct Defaults<'i> {
    interval: Option<(Duration, Loc)>,
    timeout: Option<(Duration, Loc)>,
    labels: BTreeMap<String, String>,
    regions: Option<Vec<String>>,
    tls: Option<Spanned<DeValue<'i>>>,
    net: Option<Spanned<DeValue<'i>>>,
}

type Value<'i> = Spanned<DeValue<'i>>;

/// The string in `v`, or where it is and what was expected instead.
/// Shared by the probe config and the alert rules.
pub(crate) fn expect_str<'v>(
    src: &Src<'_>,
    key: &str,
    v: &'v Spanned<DeValue<'_>>,
) -> Result<&'v str, (Loc, String)> {
    match v.get_ref() {
        DeValue::String(s) => Ok(s.as_ref()),
        other => Err((
            src.loc(&v.span()),
            format!("{key}: expected a string, found {}", type_name(other)),
        )),
    }
}

impl Loader {
    fn error(&mut self, at: Loc, message: impl Into<String>) {
        self.errors.push((at, message.into()));
    }

    /// `file:line`, to say where something was first defined.
    fn place(&self, at: Loc) -> String {
        format!("{}:{}", self.files[at.file].display(), at.line)
    }

    fn file(&mut self, src: &Src<'_>) {
        let doc = match DeTable::parse(src.text) {
            Ok(doc) => doc.into_inner(),
            Err(e) => {
                let at = src.loc(&e.span().unwrap_or(0..0));
                self.error(at, format!("invalid TOML: {}", e.message()));
                self.broken = true;
                return;
            }
        };
        for (k, _) in doc.iter() {
            if !TOP_KEYS.contains(&k.get_ref().as_ref()) {
                self.error(src.loc(&k.span()), unknown(k.get_ref(), TOP_KEYS));
            }
        }
        let defaults = match doc.get("defaults") {
            Some(v) => self.defaults(src, v),
            None => Defaults::default(),
        };
        if let Some(v) = doc.get("check") {
            match v.get_ref() {
                DeValue::Array(checks) => {
                    for c in checks.iter() {
                        match c.get_ref() {
                            DeValue::Table(t) => self.check(src, c.span(), t, &defaults),
                            other => self.error(
                                src.loc(&c.span()),
                                format!("check: expected a table, found {}", type_name(other)),
                            ),
                        }
                    }
                }
                _ => self.error(
                    src.loc(&v.span()),
                    "check: expected an array of tables: write each check under its own [[check]] header",
                ),
            }
        }
        if let Some(v) = doc.get("modules")
            && let Some(t) = self.table(src, "modules", v)
        {
            for (name, m) in t.iter() {
                self.module(src, name, m);
            }
        }
    }

    fn defaults<'i>(&mut self, src: &Src<'_>, v: &Value<'i>) -> Defaults<'i> {
        let mut d = Defaults::default();
        let Some(t) = self.table(src, "defaults", v) else {
            return d;
        };
        for (k, v) in t.iter() {
            match k.get_ref().as_ref() {
                "interval" => d.interval = self.duration(src, "interval", v),
                "timeout" => d.timeout = self.duration(src, "timeout", v),
                "labels" => d.labels = self.labels(src, v).unwrap_or_default(),
                "regions" => d.regions = self.regions(src, v),
                "tls" => {
                    let t = DeTable::from_iter([(k.clone(), v.clone())]);
                    self.options::<DefaultTls>(src, v.span(), t);
                    d.tls = Some(v.clone());
                }
                "net" => {
                    let t = DeTable::from_iter([(k.clone(), v.clone())]);
                    self.options::<DefaultNet>(src, v.span(), t);
                    d.net = Some(v.clone());
                }
                other => self.error(src.loc(&k.span()), unknown(other, DEFAULTS_KEYS)),
            }
        }
        d
    }

    fn check<'i>(
        &mut self,
        src: &Src<'_>,
        header: Range<usize>,
        t: &DeTable<'i>,
        d: &Defaults<'i>,
    ) {
        let at = src.loc(&header);
        let mut failed = false;
        let mut name = None;
        let mut raw_target: Option<(String, Range<usize>)> = None;
        let mut kind_given: Option<(String, Range<usize>)> = None;
        let mut interval = None;
        let mut timeout = None;
        let mut labels = None;
        let mut regions = None;
        let mut depends_on = Vec::new();
        let mut opts = DeTable::new();
        for (k, v) in t.iter() {
            let ok = match k.get_ref().as_ref() {
                "name" => {
                    name = self.string(src, "name", v).and_then(|s| {
                        if s.trim().is_empty() {
                            self.error(src.loc(&v.span()), "name: must not be empty");
                            None
                        } else {
                            Some(s.to_owned())
                        }
                    });
                    name.is_some()
                }
                "target" => {
                    raw_target = self
                        .string(src, "target", v)
                        .map(|s| (s.to_owned(), v.span()));
                    raw_target.is_some()
                }
                "kind" => {
                    kind_given = self.string(src, "kind", v).and_then(|k| {
                        if matches!(k, "http" | "dns" | "tcp" | "tls") {
                            Some((k.to_owned(), v.span()))
                        } else {
                            self.error(
                                src.loc(&v.span()),
                                format!("kind: expected \"http\", \"dns\", \"tcp\" or \"tls\", got {k:?}"),
                            );
                            None
                        }
                    });
                    kind_given.is_some()
                }
                "interval" => {
                    interval = self.duration(src, "interval", v);
                    interval.is_some()
                }
                "timeout" => {
                    timeout = self.duration(src, "timeout", v);
                    timeout.is_some()
                }
                "labels" => {
                    labels = self.labels(src, v);
                    labels.is_some()
                }
                "regions" => {
                    regions = self.regions(src, v);
                    regions.is_some()
                }
                "depends_on" => match self.strings(src, "depends_on", v) {
                    Some(deps) => {
                        depends_on = deps;
                        true
                    }
                    None => false,
                },
                _ => {
                    opts.insert(k.clone(), v.clone());
                    true
                }
            };
            failed |= !ok;
        }
        // An invalid `kind` was reported; the target cannot be read without it.
        let kind_bad = t.get("kind").is_some() && kind_given.is_none();
        let target =
            raw_target.filter(|_| !kind_bad).and_then(|(raw, span)| {
                match resolve_target(&raw, kind_given.as_ref().map(|(k, _)| k.as_str())) {
                    Ok(parsed) => Some((raw, parsed, span)),
                    Err(TargetError::Target(m)) => {
                        self.error(src.loc(&span), format!("target: {m}"));
                        None
                    }
                    Err(TargetError::Kind(m)) => {
                        let kspan = kind_given.as_ref().map_or(span, |(_, s)| s.clone());
                        self.error(src.loc(&kspan), format!("kind: {m}"));
                        None
                    }
                }
            });
        if t.get("name").is_none() {
            self.error(at, "missing field `name`");
        }
        if t.get("target").is_none() {
            self.error(at, format!("missing field `target` (a URL: {SCHEMES})"));
        }
        if let Some(name) = &name {
            self.checks.push(Parsed {
                name: name.clone(),
                at: t.get("name").map_or(at, |v| src.loc(&v.span())),
                depends_on: depends_on.clone(),
                def: None,
            });
        }
        let Some((target_str, target, target_span)) = target else {
            return;
        };
        let kind = target.kind();

        // Options: only the kind's fields, minus what the target says.
        let fields = option_fields(kind);
        let bad_keys: Vec<String> = opts
            .iter()
            .filter_map(|(k, _)| {
                let key = k.get_ref().as_ref();
                let message = if let Some(how) = from_target(kind, key) {
                    format!("`{key}` is set by the target: {how}")
                } else if kind == CheckKind::Tcp && key == "tls" && !target.is_tls() {
                    "`tls` needs a tls:// target (tcp:// is plain TCP)".to_owned()
                } else if !fields.contains(&key) {
                    let expected: Vec<&str> = CHECK_KEYS.iter().chain(&fields).copied().collect();
                    format!(
                        "{} (for a {} check)",
                        unknown(key, &expected),
                        kind.as_str()
                    )
                } else {
                    return None;
                };
                self.error(src.loc(&k.span()), message);
                Some(key.to_owned())
            })
            .collect();
        failed |= !bad_keys.is_empty();
        for k in &bad_keys {
            opts.remove(k.as_str());
        }

        // Defaults merged into the check's own tables (the check wins).
        let empty_at = header.start..header.start;
        if target.is_tls() && kind == CheckKind::Tcp && opts.get("tls").is_none() {
            opts.insert(
                Spanned::new(empty_at.clone(), Cow::Borrowed("tls")),
                Spanned::new(empty_at.clone(), DeValue::Table(DeTable::new())),
            );
        }
        if let Some(net) = &d.net {
            merge_default(&mut opts, "net", net);
        }
        if let (Some(tls), CheckKind::Http | CheckKind::Tcp) = (&d.tls, kind)
            && (kind == CheckKind::Http || target.is_tls())
        {
            merge_default(&mut opts, "tls", tls);
        }
        let (spec, clean) = self.spec(src, header.clone(), kind, &opts);
        failed |= !clean;

        // Schedule.
        let (interval, interval_at) = match interval.or(d.interval) {
            Some((i, at)) => (i, Some(at)),
            None => (DEFAULT_INTERVAL, None),
        };
        let timeout_from_defaults = timeout.is_none() && d.timeout.is_some();
        let (timeout, timeout_at) = match timeout.or(d.timeout) {
            Some((t, at)) => (t, Some(at)),
            None => (DEFAULT_TIMEOUT.min(interval * 4 / 5), None),
        };
        if interval.is_zero() {
            self.error(
                interval_at.unwrap_or(at),
                "interval: must be greater than zero",
            );
            failed = true;
        }
        if let (true, Some(timeout_at)) = (timeout.is_zero(), timeout_at) {
            self.error(timeout_at, "timeout: must be greater than zero");
            failed = true;
        } else if !interval.is_zero() && timeout >= interval {
            let whose = match (&name, timeout_from_defaults) {
                (Some(n), true) => format!(" of check {n:?}"),
                _ => String::new(),
            };
            self.error(
                timeout_at.unwrap_or(at),
                format!(
                    "timeout: {} must be shorter than the interval ({}){whose}",
                    humantime::format_duration(timeout),
                    humantime::format_duration(interval)
                ),
            );
            failed = true;
        }

        let Some(mut spec) = spec else { return };
        fill_target(&mut spec, &target);
        resolve_paths(&mut spec, src.dir());
        if !timeout.is_zero()
            && let Err(e) = spec.build(timeout)
        {
            let field_at = match e.field.as_str() {
                "url" | "server" | "name" | "address" | "query_type" | "transport" => {
                    Some(target_span.clone())
                }
                "timeout" => None,
                field => field_span(&opts, field, &e.message),
            };
            let loc = match (field_at, e.field.as_str()) {
                (Some(span), _) => src.loc(&span),
                (None, "timeout") => timeout_at.unwrap_or(at),
                (None, _) => at,
            };
            self.error(loc, e.to_string());
            failed = true;
        }
        if failed {
            return;
        }
        let Some(name) = name else { return };
        let mut all_labels = d.labels.clone();
        all_labels.extend(labels.unwrap_or_default());
        let def = CheckDef {
            name,
            target: target_str,
            interval,
            timeout,
            labels: all_labels,
            regions: regions.or_else(|| d.regions.clone()).unwrap_or_default(),
            depends_on: depends_on.into_iter().map(|(n, _)| n).collect(),
            spec,
        };
        if let Some(last) = self.checks.last_mut() {
            last.def = Some(def);
        }
    }

    fn module<'i>(&mut self, src: &Src<'_>, key: &Spanned<Cow<'i, str>>, v: &Value<'i>) {
        let name = key.get_ref().to_string();
        let key_at = src.loc(&key.span());
        let what = format!("modules.{name}");
        let Some(t) = self.table(src, &what, v) else {
            return;
        };
        if let Some((_, first)) = self.modules.get(&name) {
            let message = format!(
                "duplicate module name {name:?} (first defined at {})",
                self.place(*first)
            );
            self.error(key_at, message);
            return;
        }
        let header = v.span();
        let at = src.loc(&header);
        let mut failed = false;
        let kind = match t.get("kind") {
            None => {
                self.error(at, "missing field `kind` (\"http\", \"dns\" or \"tcp\")");
                None
            }
            Some(k) => match self.string(src, "kind", k) {
                Some("http") => Some(CheckKind::Http),
                Some("dns") => Some(CheckKind::Dns),
                Some("tcp") => Some(CheckKind::Tcp),
                Some(other) => {
                    self.error(
                        src.loc(&k.span()),
                        format!("kind: expected \"http\", \"dns\" or \"tcp\", found {other:?}"),
                    );
                    None
                }
                None => None,
            },
        };
        let timeout = match t.get("timeout") {
            None => Some((DEFAULT_TIMEOUT, at)),
            Some(v) => self.duration(src, "timeout", v),
        };
        let mut query_name = None;
        let Some(kind) = kind else { return };
        let fields = all_fields(kind);
        let mut opts = DeTable::new();
        for (k, v) in t.iter() {
            let key = k.get_ref().as_ref();
            match key {
                "kind" | "timeout" => {}
                "query_name" if kind == CheckKind::Dns => {
                    query_name = self.string(src, "query_name", v).map(str::to_owned);
                    failed |= query_name.is_none();
                }
                "tls" if kind == CheckKind::Tcp => match v.get_ref() {
                    DeValue::Boolean(false) => {}
                    DeValue::Boolean(true) => {
                        opts.insert(
                            k.clone(),
                            Spanned::new(v.span(), DeValue::Table(DeTable::new())),
                        );
                    }
                    _ => {
                        opts.insert(k.clone(), v.clone());
                    }
                },
                "url" | "server" | "name" | "address" => {
                    self.error(
                        src.loc(&k.span()),
                        format!("`{key}` comes from the /probe request's target"),
                    );
                    failed = true;
                }
                _ if fields.contains(&key) => {
                    opts.insert(k.clone(), v.clone());
                }
                _ => {
                    let mut expected = vec!["kind", "timeout"];
                    if kind == CheckKind::Dns {
                        expected.push("query_name");
                    }
                    expected.extend(
                        fields
                            .iter()
                            .filter(|f| !matches!(**f, "url" | "server" | "name" | "address")),
                    );
                    self.error(
                        src.loc(&k.span()),
                        format!(
                            "{} (for a {} module)",
                            unknown(key, &expected),
                            kind.as_str()
                        ),
                    );
                    failed = true;
                }
            }
        }
        let (spec, clean) = self.spec(src, header.clone(), kind, &opts);
        failed |= !clean;
        let (Some(mut spec), Some((timeout, timeout_at))) = (spec, timeout) else {
            return;
        };
        resolve_paths(&mut spec, src.dir());
        // Validate with a stand-in target: everything but the target is known now.
        let stand_in = match kind {
            CheckKind::Http => "http://example.invalid/",
            CheckKind::Dns => "dns://127.0.0.1/example.invalid",
            CheckKind::Tcp => "tcp://example.invalid:1",
        };
        let mut probe = spec.clone();
        fill_target(
            &mut probe,
            &Target::parse(stand_in).expect("stand-in target parses"),
        );
        if let Err(e) = probe.build(timeout) {
            let loc = match e.field.as_str() {
                "timeout" => timeout_at,
                field => field_span(&opts, field, &e.message).map_or(at, |s| src.loc(&s)),
            };
            self.error(loc, e.to_string());
            failed = true;
        }
        if !failed {
            let module = Module {
                name: name.clone(),
                timeout,
                template: spec,
                query_name,
            };
            self.modules.insert(name, (module, key_at));
        }
    }

    /// Deserializes a kind's options from `opts` (target fields aside); see
    /// [`Loader::options`].
    fn spec(
        &mut self,
        src: &Src<'_>,
        header: Range<usize>,
        kind: CheckKind,
        opts: &DeTable<'_>,
    ) -> (Option<CheckSpec>, bool) {
        fn map<T>(r: (Option<T>, bool), f: fn(T) -> CheckSpec) -> (Option<CheckSpec>, bool) {
            (r.0.map(f), r.1)
        }
        match kind {
            CheckKind::Http => map(
                self.options::<HttpOptions>(src, header, opts.clone()),
                CheckSpec::Http,
            ),
            CheckKind::Dns => {
                // Required by the struct; filled from the target afterwards.
                let mut opts = opts.clone();
                let none = header.start..header.start;
                for key in ["server", "name"] {
                    opts.insert(
                        Spanned::new(none.clone(), Cow::Borrowed(key)),
                        Spanned::new(none.clone(), DeValue::String(Cow::Borrowed(""))),
                    );
                }
                map(
                    self.options::<DnsOptions>(src, header, opts),
                    CheckSpec::Dns,
                )
            }
            CheckKind::Tcp => map(
                self.options::<TcpOptions>(src, header, opts.clone()),
                CheckSpec::Tcp,
            ),
        }
    }

    /// Deserializes `T` from a table, reporting every error: after each one
    /// the offending top-level key is dropped and the rest tried again, so
    /// the result (with `false`: not clean) can still be validated further.
    fn options<T: DeserializeOwned>(
        &mut self,
        src: &Src<'_>,
        header: Range<usize>,
        mut opts: DeTable<'_>,
    ) -> (Option<T>, bool) {
        let mut clean = true;
        loop {
            let value = Spanned::new(header.clone(), DeValue::Table(opts.clone()));
            let err = match T::deserialize(ValueDeserializer::from(value)) {
                Ok(v) => return (Some(v), clean),
                Err(e) => e,
            };
            clean = false;
            let span = err.span().unwrap_or(header.clone());
            let found = path_at(&opts, span.start);
            let prefix = match &found {
                Some((path, on_key)) => {
                    let shown = if *on_key {
                        &path[..path.len() - 1]
                    } else {
                        &path[..]
                    };
                    join_path(shown)
                }
                None => String::new(),
            };
            let message = if prefix.is_empty() {
                err.message().to_owned()
            } else {
                format!("{prefix}: {}", err.message())
            };
            self.error(src.loc(&span), message);
            match found {
                Some((path, _)) => {
                    opts.remove(path[0].as_str());
                }
                None => return (None, false),
            }
        }
    }

    // --- value helpers: report and return None when the value is wrong ---

    fn string<'v>(&mut self, src: &Src<'_>, key: &str, v: &'v Value<'_>) -> Option<&'v str> {
        expect_str(src, key, v)
            .map_err(|(at, message)| self.error(at, message))
            .ok()
    }

    fn table<'v, 'i>(
        &mut self,
        src: &Src<'_>,
        key: &str,
        v: &'v Value<'i>,
    ) -> Option<&'v DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.error(
                    src.loc(&v.span()),
                    format!("{key}: expected a table, found {}", type_name(other)),
                );
                None
            }
        }
    }

    fn strings(&mut self, src: &Src<'_>, key: &str, v: &Value<'_>) -> Option<Vec<(String, Loc)>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.error(
                src.loc(&v.span()),
                format!(
                    "{key}: expected an array of strings, found {}",
                    type_name(v.get_ref())
                ),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items.iter() {
            match self.string(src, key, item) {
                Some(s) if s.trim().is_empty() => {
                    self.error(
                        src.loc(&item.span()),
                        format!("{key}: entries must not be empty"),
                    );
                    ok = false;
                }
                Some(s) => out.push((s.to_owned(), src.loc(&item.span()))),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn regions(&mut self, src: &Src<'_>, v: &Value<'_>) -> Option<Vec<String>> {
        self.strings(src, "regions", v)
            .map(|r| r.into_iter().map(|(s, _)| s).collect())
    }

    fn duration(&mut self, src: &Src<'_>, key: &str, v: &Value<'_>) -> Option<(Duration, Loc)> {
        let s = self.string(src, key, v)?;
        match humantime::parse_duration(s) {
            Ok(d) => Some((d, src.loc(&v.span()))),
            Err(e) => {
                self.error(
                    src.loc(&v.span()),
                    format!("{key}: invalid duration {s:?}: {e} (expected e.g. \"30s\", \"5m\")"),
                );
                None
            }
        }
    }

    fn labels(&mut self, src: &Src<'_>, v: &Value<'_>) -> Option<BTreeMap<String, String>> {
        let t = self.table(src, "labels", v)?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, v) in t.iter() {
            if let Some(problem) = label_name_problem(k.get_ref()) {
                self.error(src.loc(&k.span()), format!("labels: {problem}"));
                ok = false;
            }
            match self.string(src, &format!("labels.{}", k.get_ref()), v) {
                Some(s) => {
                    out.insert(k.get_ref().to_string(), s.to_owned());
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    // --- across files ---

    fn finish(mut self) -> Result<ProbeConfig, ConfigErrors> {
        // Names: the first definition wins; later ones are errors.
        let mut first: HashMap<String, usize> = HashMap::new();
        let mut dups = Vec::new();
        for (i, c) in self.checks.iter().enumerate() {
            if let Some(&j) = first.get(&c.name) {
                let message = format!(
                    "duplicate check name {:?} (first defined at {})",
                    c.name,
                    self.place(self.checks[j].at)
                );
                dups.push((c.at, message));
            } else {
                first.insert(c.name.clone(), i);
            }
        }
        self.errors.append(&mut dups);
        for c in &self.checks {
            for (dep, at) in &c.depends_on {
                if *dep == c.name {
                    self.errors.push((
                        *at,
                        format!("depends_on: check {:?} depends on itself", c.name),
                    ));
                } else if !first.contains_key(dep) && !self.broken {
                    self.errors
                        .push((*at, format!("depends_on: no check is named {dep:?}")));
                }
            }
        }
        self.cycles(&first);

        if !self.errors.is_empty() {
            self.errors.sort();
            self.errors.dedup();
            return Err(ConfigErrors(
                self.errors
                    .into_iter()
                    .map(|(at, message)| ConfigError {
                        file: self.files[at.file].clone(),
                        line: at.line,
                        column: at.column,
                        message,
                    })
                    .collect(),
            ));
        }
        Ok(ProbeConfig {
            checks: self.checks.into_iter().filter_map(|c| c.def).collect(),
            modules: self
                .modules
                .into_iter()
                .map(|(name, (m, _))| (name, m))
                .collect(),
            files: self.files,
        })
    }

    /// Reports each dependency cycle once, at the entry that closes it.
    fn cycles(&mut self, first: &HashMap<String, usize>) {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        let n = self.checks.len();
        let mut mark = vec![Mark::New; n];
        let mut found = Vec::new();
        for root in 0..n {
            if mark[root] != Mark::New || first.get(&self.checks[root].name) != Some(&root) {
                continue;
            }
            // Iterative DFS: (node, next edge index); `path` holds open nodes.
            let mut stack = vec![(root, 0usize)];
            mark[root] = Mark::Open;
            while let Some(&mut (node, ref mut edge)) = stack.last_mut() {
                let deps = &self.checks[node].depends_on;
                if *edge == deps.len() {
                    mark[node] = Mark::Done;
                    stack.pop();
                    continue;
                }
                let (dep, at) = &deps[*edge];
                *edge += 1;
                let Some(&next) = first.get(dep) else {
                    continue;
                };
                if next == node {
                    continue; // reported as depending on itself
                }
                match mark[next] {
                    Mark::New => {
                        mark[next] = Mark::Open;
                        stack.push((next, 0));
                    }
                    Mark::Open => {
                        let from = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        let mut names: Vec<&str> = stack[from..]
                            .iter()
                            .map(|(n, _)| self.checks[*n].name.as_str())
                            .collect();
                        names.push(dep);
                        found.push((
                            *at,
                            format!("depends_on: dependency cycle: {}", names.join(" → ")),
                        ));
                    }
                    Mark::Done => {}
                }
            }
        }
        self.errors.extend(found);
    }
}

// === helpers ===

pub(crate) fn unknown(key: &str, expected: &[&str]) -> String {
    let list: Vec<String> = expected.iter().map(|k| format!("`{k}`")).collect();
    format!("unknown field `{key}`, expected one of {}", list.join(", "))
}

pub(crate) fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Why `name` cannot be a label name, if it cannot.
fn label_name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        Some(format!(
            "{name:?} is not a valid label name (expected [a-zA-Z_][a-zA-Z0-9_]*)"
        ))
    } else if name.starts_with("__") {
        Some(format!(
            "{name:?}: label names starting with \"__\" are reserved"
        ))
    } else if RESERVED_LABELS.contains(&name) {
        Some(format!(
            "{name:?} is reserved: varde sets it itself (reserved: {})",
            RESERVED_LABELS.join(", ")
        ))
    } else {
        None
    }
}

/// Where a check option the target sets comes from, for messages.
fn from_target(kind: CheckKind, key: &str) -> Option<&'static str> {
    match (kind, key) {
        (CheckKind::Http, "url") => Some("write the URL as `target`"),
        (CheckKind::Dns, "server" | "name") => Some("dns://SERVER/NAME"),
        (CheckKind::Dns, "query_type") => Some("dns://SERVER/NAME?type=MX"),
        (CheckKind::Dns, "transport") => Some("dns://SERVER/NAME?transport=tcp"),
        (CheckKind::Tcp, "address") => Some("tcp://host:port or tls://host:port"),
        _ => None,
    }
}

/// The fields of a kind's options struct.
fn all_fields(kind: CheckKind) -> &'static [&'static str] {
    match kind {
        CheckKind::Http => struct_fields::<HttpOptions>(),
        CheckKind::Dns => struct_fields::<DnsOptions>(),
        CheckKind::Tcp => struct_fields::<TcpOptions>(),
    }
}

/// The options a check may set: its kind's fields but what the target says.
fn option_fields(kind: CheckKind) -> Vec<&'static str> {
    all_fields(kind)
        .iter()
        .copied()
        .filter(|f| from_target(kind, f).is_none())
        .collect()
}

/// The field names a derived `Deserialize` struct accepts (serde passes
/// them to `deserialize_struct`), so the lists here never drift from the
/// option structs.
fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor, value::Error};

    struct Grab<'a>(&'a mut &'static [&'static str]);

    impl<'de> serde::Deserializer<'de> for Grab<'_> {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            *self.0 = fields;
            Err(Error::custom("fields only"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Grab(&mut fields));
    fields
}

/// `[defaults] tls`, deserialized only for its errors.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct DefaultTls {
    #[serde(default)]
    tls: TlsOptions,
}

/// `[defaults] net`, deserialized only for its errors.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct DefaultNet {
    #[serde(default)]
    net: crate::check::NetOptions,
}

/// Adds the keys of a `[defaults]` table the check's own table lacks.
fn merge_default<'i>(opts: &mut DeTable<'i>, key: &'static str, default: &Value<'i>) {
    match opts.get_mut(key) {
        None => {
            // An empty key span: positions inside the value find the value.
            let at = default.span().start;
            opts.insert(Spanned::new(at..at, Cow::Borrowed(key)), default.clone());
        }
        Some(mine) => {
            if let (DeValue::Table(mine), DeValue::Table(theirs)) =
                (mine.get_mut(), default.get_ref())
            {
                for (k, v) in theirs.iter() {
                    if !mine.contains_key(k.get_ref().as_ref()) {
                        mine.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
}

/// The path (keys, `[i]` for array items) of the entry at byte `offset`,
/// and whether `offset` is on the key itself (an unknown-field error)
/// rather than on the value.
fn path_at(t: &DeTable<'_>, offset: usize) -> Option<(Vec<String>, bool)> {
    for (k, v) in t.iter() {
        let key = k.get_ref().to_string();
        if k.span().contains(&offset) {
            return Some((vec![key], true));
        }
        if let Some((mut rest, on_key)) = path_in(v, offset) {
            rest.insert(0, key);
            return Some((rest, on_key));
        }
        if v.span().contains(&offset) || v.span().start == offset {
            return Some((vec![key], false));
        }
    }
    None
}

fn path_in(v: &Value<'_>, offset: usize) -> Option<(Vec<String>, bool)> {
    match v.get_ref() {
        DeValue::Table(t) => path_at(t, offset),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let inner = path_in(item, offset);
            let here = item.span().contains(&offset).then(|| (Vec::new(), false));
            inner.or(here).map(|(mut rest, on_key)| {
                rest.insert(0, format!("[{i}]"));
                (rest, on_key)
            })
        }),
        _ => None,
    }
}

fn join_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if !out.is_empty() && !seg.starts_with('[') {
            out.push('.');
        }
        out.push_str(seg);
    }
    out
}

/// The span of the option a `SpecError` names (`body_regex`, `tls.ca_file`),
/// narrowed to the array item the message quotes.
fn field_span(opts: &DeTable<'_>, field: &str, message: &str) -> Option<Range<usize>> {
    let lookup = |path: &str| {
        let mut parts = path.split('.');
        let mut v = opts.get(parts.next()?)?;
        for part in parts {
            match v.get_ref() {
                DeValue::Table(t) => v = t.get(part)?,
                _ => return None,
            }
        }
        Some(v)
    };
    // Some builders name a `net` field without its prefix.
    let v = lookup(field).or_else(|| lookup(&format!("net.{field}")))?;
    if let DeValue::Array(items) = v.get_ref() {
        let quoted = items.iter().find(|item| match item.get_ref() {
            DeValue::String(s) => message.contains(&format!("{:?}", s.as_ref())),
            _ => false,
        });
        if let Some(item) = quoted {
            return Some(item.span());
        }
    }
    Some(v.span())
}

fn spec_kind(spec: &CheckSpec) -> CheckKind {
    match spec {
        CheckSpec::Http(_) => CheckKind::Http,
        CheckSpec::Dns(_) => CheckKind::Dns,
        CheckSpec::Tcp(_) => CheckKind::Tcp,
    }
}

/// Puts what a target says into a spec of the same kind. A dns target's
/// `?type=`/`?transport=` override the options only when given.
fn fill_target(spec: &mut CheckSpec, target: &Target) {
    match (spec, target) {
        (CheckSpec::Http(o), Target::Http { url }) => o.url = url.clone(),
        (
            CheckSpec::Dns(o),
            Target::Dns {
                server,
                name,
                query_type,
                transport,
            },
        ) => {
            o.server = server.clone();
            o.name = name.clone();
            if let Some(q) = query_type {
                o.query_type = q.clone();
            }
            if let Some(t) = transport {
                o.transport = *t;
            }
        }
        (CheckSpec::Tcp(o), Target::Tcp { address, tls }) => {
            o.address = address.clone();
            if *tls && o.tls.is_none() {
                o.tls = Some(TlsOptions::default());
            }
        }
        _ => {}
    }
}

/// Makes relative TLS file paths relative to the config file's directory.
fn resolve_paths(spec: &mut CheckSpec, dir: &Path) {
    let tls = match spec {
        CheckSpec::Http(o) => Some(&mut o.tls),
        CheckSpec::Tcp(o) => o.tls.as_mut(),
        CheckSpec::Dns(_) => None,
    };
    if let Some(tls) = tls {
        for path in [&mut tls.ca_file, &mut tls.cert_file, &mut tls.key_file]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }
}

/// Modules every probe has, as blackbox_exporter's example config ships
/// them, so a scrape config written for blackbox works before any module is
/// configured. A module of the same name in the config directory wins.
const BUILTIN_MODULES: &str = r#"
[modules.http_2xx]
kind = "http"
timeout = "10s"

[modules.http_post_2xx]
kind = "http"
method = "POST"
timeout = "10s"

[modules.tcp_connect]
kind = "tcp"
timeout = "10s"

[modules.tls_connect]
kind = "tcp"
tls = true
timeout = "10s"

[modules.dns_a]
kind = "dns"
query_type = "A"
timeout = "10s"
"#;

/// The built-in `/probe` modules: `http_2xx`, `http_post_2xx`, `tcp_connect`,
/// `tls_connect` and `dns_a`, as blackbox_exporter's example config has them.
pub fn builtin_modules() -> BTreeMap<String, Module> {
    parse_files(&[(
        PathBuf::from("<built-in modules>"),
        BUILTIN_MODULES.to_owned(),
    )])
    .expect("built-in modules are valid")
    .modules
}

enum TargetError {
    /// The target itself is wrong.
    Target(String),
    /// `kind` disagrees with the target.
    Kind(String),
}

/// Parses a check's target, using an explicit `kind` for a target written
/// without a scheme (`host:port` for tcp/tls, `SERVER/NAME` for dns) and
/// checking that an explicit `kind` agrees with a target's scheme.
fn resolve_target(raw: &str, kind: Option<&str>) -> Result<Target, TargetError> {
    let Some(kind) = kind else {
        return Target::parse(raw).map_err(TargetError::Target);
    };
    if !raw.contains("://") {
        return match kind {
            "http" => Err(TargetError::Target(format!(
                "an http check needs an http:// or https:// URL, got {raw:?}"
            ))),
            scheme => Target::parse(&format!("{scheme}://{raw}")).map_err(TargetError::Target),
        };
    }
    let parsed = Target::parse(raw).map_err(TargetError::Target)?;
    let agrees = match kind {
        "http" => parsed.kind() == CheckKind::Http,
        "dns" => parsed.kind() == CheckKind::Dns,
        "tcp" => parsed.kind() == CheckKind::Tcp,
        _ => parsed.kind() == CheckKind::Tcp && parsed.is_tls(),
    };
    if agrees {
        Ok(parsed)
    } else {
        Err(TargetError::Kind(format!(
            "{kind:?} does not match the target {raw:?}"
        )))
    }
}
