//! `alert-rules/*.toml`: which verdicts become alerts, how urgent they are
//! and who gets them, and when they are held back (silences and maintenance
//! windows). Loaded and validated up front, like `probes/*.toml`: every
//! problem is reported at once as `file:line:column: message`. A file holds
//! any mix of `[[rule]]`, `[[silence]]`, `[[maintenance]]`, `[[team]]`,
//! `[[channel]]`, `[[route]]` and `[[policy]]` tables and the `[oncall]`
//! table; any other top-level key, or a key a table does not take, is an
//! error. Channels, routes and policies are read in `rules_notify.rs`
//! (their semantics: [`crate::notify`]; a commented reference:
//! `alert-rules/channels.toml`).
//!
//! ```toml
//! [[rule]]
//! name = "api-down"                 # required, unique across all files
//! kind = "down"                     # required: down | latency | cert_expiry | probe_offline | degraded
//! match = { team = "web", check = "~api-.*" }  # optional; every matcher must hold
//! severity = "page"                 # page | ticket | info (default: by kind, below)
//! receiver = "oncall"               # routing key (default "default")
//! repeat = "4h"                     # re-notify while firing and unacknowledged (default: once; at least 1m)
//! quorum = "majority"               # down, latency: any | majority | all | N (default majority)
//! for = "2m"                        # down, latency, degraded: how long it must hold (default 0s)
//! [rule.annotations]                # optional; free names, values are templates
//! summary = "{{ check }} down in {{ down_regions }}/{{ regions }} regions"
//! ```
//!
//! Keys per kind, besides the common `name`, `kind`, `match`, `severity`,
//! `receiver` and `annotations`:
//!
//! | kind            | keys (default)                                                                 | default severity |
//! |-----------------|--------------------------------------------------------------------------------|------------------|
//! | `down`          | `quorum` (majority), `for` (0s)                                                | page             |
//! | `latency`       | `threshold` (required), `percentile` (95), `phase` (total), `window` (5m), `quorum` (majority), `for` (0s) | ticket |
//! | `cert_expiry`   | `threshold` (14d: fire when the certificate expires within it)                 | ticket           |
//! | `probe_offline` | `after` (5m: a region silent this long)                                        | page             |
//! | `degraded`      | `for` (0s)                                                                     | info             |
//!
//! A key another kind takes (`percentile` on a `down` rule) is an error.
//! Durations are humantime strings ("30s", "5m", "21d"). `percentile` is a
//! number with 0 < p <= 100. `phase` is `total`, `resolve`, `connect`,
//! `tls`, `processing` or `transfer`.
//!
//! **Matchers** (`match`): keys are check label names, or `check` (the
//! check's name) and `kind` (the check's kind: http, dns, tcp); the value
//! says how to compare:
//!
//! | value      | matches when the label                       |
//! |------------|----------------------------------------------|
//! | `"web"`    | equals `web`                                 |
//! | `"!web"`   | does not equal `web`                         |
//! | `"~api-.*"`  | matches the regex, anchored at both ends   |
//! | `"!~api-.*"` | does not match the regex                   |
//!
//! A label the check lacks compares as the empty string, so `"!web"`
//! matches it and `"web"` does not. A value starting with a literal `~`,
//! `!` or `\` is written with a `\` in front: `"\\!important"` equals
//! `!important`, `"!\\~x"` does not equal `~x`.
//!
//! **Templates** (annotation values): `{{ field }}` is replaced by the
//! field's value when the alert is sent; a field without a value renders as
//! the empty string; there is no escape for a literal `{{`. The fields are
//! [`TEMPLATE_FIELDS`] and `labels.NAME` (the check's label `NAME`); any
//! other name is a configuration error, reported at its `{{`.
//!
//! **Silences** hold back alerts of matching checks for a fixed stretch of
//! time; **maintenance windows** do so every week. Their exact semantics
//! (time zones, daylight-saving changes, windows across midnight) are in
//! [`super::silence`].
//!
//! ```toml
//! [[silence]]
//! match = { check = "api-health", env = "prod" }  # required, at least one matcher
//! starts_at = "2026-11-24T22:00:00Z"   # required, RFC 3339 (or a TOML offset date-time)
//! ends_at = "2026-11-25T02:00:00Z"     # required, after starts_at; exclusive
//! author = "alice"                     # required
//! comment = "DB migration"             # optional
//!
//! [[maintenance]]
//! name = "db-weekly"         # required, unique among maintenance windows
//! match = { team = "db" }    # required, at least one matcher
//! days = ["sat", "sun"]      # required: the local days a window starts on;
//!                            # mon tue wed thu fri sat sun or full names, any case
//! start = "22:00"            # required, local HH:MM or HH:MM:SS
//! end = "04:00"              # required; at or before start: the next day
//! timezone = "Europe/Oslo"   # required, IANA name
//! comment = "weekly vacuum"  # optional
//! ```
//!
//! A day listed twice, an empty `days` and an empty `match` are errors.
//!
//! **On-call** teams and their weekly shifts (semantics in
//! [`crate::oncall`]); `[oncall]` is a single table, at most once across
//! all files, and required as soon as any `[[team]]` exists:
//!
//! ```toml
//! [oncall]
//! order = ["emea", "amer", "apac"]  # optional: overlap priority; each name once, an
//!                                   # existing team (default: written order; teams
//!                                   # not listed follow in written order)
//! fallback = "platform"             # required: an existing team; gets what no shift covers
//!
//! [[team]]
//! name = "emea"                     # required, unique among teams
//! timezone = "Europe/Oslo"          # required, IANA name
//! contacts = ["email:emea@example.com", "slack:#emea"]  # optional, free-form strings
//! [[team.shift]]                    # at least one, except for the fallback team
//! days = ["mon", "tue", "wed", "thu", "fri"]  # required: the local days a shift starts on
//! start = "08:00"                   # required, local HH:MM or HH:MM:SS
//! end = "16:00"                     # required; at or before start: the next day
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;
use regex::Regex;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::silence::{self, Maintenance, Silence, WeeklyWindow};
use crate::notify::channel::ChannelSpec;
use crate::notify::route::{Policy, Route};

#[path = "rules_notify.rs"]
mod notify;
use super::verdict::Quorum;
use crate::check::Phase;
use crate::oncall::{OnCall, Team};
use crate::probe::config::{ConfigError, ConfigErrors, Loc, Src, type_name, unknown};

/// The fields a template may name, besides `labels.NAME`: the rule's
/// `rule` (name), `kind`, `severity` and `receiver`; the check's `check`
/// (name) and `target`; `region` (a probe_offline rule's silent region);
/// `regions` (voting regions) and `down_regions` (how many are down);
/// `reason` (the failure reason); `phase` (a latency rule's phase);
/// `value` (the measured value: latency, time to certificate expiry,
/// silence) and `threshold` (the rule's limit for it).
pub const TEMPLATE_FIELDS: &[&str] = &[
    "rule",
    "kind",
    "severity",
    "receiver",
    "check",
    "target",
    "region",
    "regions",
    "down_regions",
    "reason",
    "phase",
    "value",
    "threshold",
];

/// Shortest `repeat` interval.
pub const MIN_REPEAT: Duration = Duration::from_secs(60);

/// Default `percentile` of a latency rule.
pub const DEFAULT_PERCENTILE: f64 = 95.0;
/// Default `window` of a latency rule.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Default `threshold` of a cert_expiry rule.
pub const DEFAULT_CERT_THRESHOLD: Duration = Duration::from_secs(14 * 24 * 60 * 60);
/// Default `after` of a probe_offline rule.
pub const DEFAULT_OFFLINE_AFTER: Duration = Duration::from_secs(5 * 60);
/// Receiver of a rule that names none.
pub const DEFAULT_RECEIVER: &str = "default";

const COMMON_KEYS: &[&str] = &[
    "name",
    "kind",
    "match",
    "severity",
    "receiver",
    "repeat",
    "annotations",
];
const KINDS: &[&str] = &[
    "down",
    "latency",
    "cert_expiry",
    "probe_offline",
    "degraded",
];
const PHASES: &[&str] = &[
    "total",
    "resolve",
    "connect",
    "tls",
    "processing",
    "transfer",
];

// === public types ===

/// Everything `alert-rules/*.toml` defines, validated.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// In file order, then in the order written (so are the others).
    pub rules: Vec<Rule>,
    pub silences: Vec<Silence>,
    pub maintenance: Vec<Maintenance>,
    /// The on-call schedule (`[[team]]` and `[oncall]`), if any team is
    /// defined.
    pub oncall: Option<OnCall>,
    /// Notification channels (`[[channel]]`), in the order written.
    pub channels: Vec<ChannelSpec>,
    /// Routes (`[[route]]`): the first matching one decides the policy.
    pub routes: Vec<Route>,
    /// Escalation policies (`[[policy]]`).
    pub policies: Vec<Policy>,
    /// The files read, in the order read.
    pub files: Vec<PathBuf>,
}

/// One alert rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    /// All must match a check's labels for the rule to apply to it.
    pub matchers: Vec<Matcher>,
    pub severity: Severity,
    pub receiver: String,
    /// Re-notify a firing, unacknowledged incident this often (`None`:
    /// notify once).
    pub repeat: Option<Duration>,
    pub annotations: BTreeMap<String, Template>,
}

impl Rule {
    /// Whether the rule applies to a check with these labels (which should
    /// include `check` and `kind`).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// What a rule watches for, with the settings of that kind.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RuleKind {
    /// The check's verdict is down at `quorum`, for `for_`.
    Down { quorum: Quorum, for_: Duration },
    /// The `percentile` of `phase` over `window` is above `threshold` in
    /// `quorum` regions, for `for_`.
    Latency {
        percentile: f64,
        /// `None` is the whole check (`phase = "total"`).
        phase: Option<Phase>,
        window: Duration,
        threshold: Duration,
        quorum: Quorum,
        for_: Duration,
    },
    /// The certificate expires within `threshold`.
    CertExpiry { threshold: Duration },
    /// A region has sent nothing for `after`.
    ProbeOffline { after: Duration },
    /// Some region down but below quorum, for `for_`.
    Degraded { for_: Duration },
}

impl RuleKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RuleKind::Down { .. } => "down",
            RuleKind::Latency { .. } => "latency",
            RuleKind::CertExpiry { .. } => "cert_expiry",
            RuleKind::ProbeOffline { .. } => "probe_offline",
            RuleKind::Degraded { .. } => "degraded",
        }
    }
}

/// How urgent an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Wake someone up.
    Page,
    /// Someone looks during working hours.
    Ticket,
    /// Visible, never notifies urgently.
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
            Severity::Info => "info",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "page" => Ok(Severity::Page),
            "ticket" => Ok(Severity::Ticket),
            "info" => Ok(Severity::Info),
            _ => Err(format!(
                "unknown severity {s:?}: expected \"page\", \"ticket\" or \"info\""
            )),
        }
    }
}

/// One label matcher: `name` compared with the label's value (the empty
/// string when the label is absent).
#[derive(Clone, Debug, PartialEq)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
}

/// How a [`Matcher`] compares. A regex is held as [`Matcher::parse`]
/// builds it, `^(?:regex)$`.
#[derive(Clone, Debug)]
pub enum MatchOp {
    /// `"value"`
    Equal(String),
    /// `"!value"`
    NotEqual(String),
    /// `"~regex"`, anchored at both ends.
    Regex(Regex),
    /// `"!~regex"`, anchored at both ends.
    NotRegex(Regex),
}

/// Regexes are equal when written the same.
impl PartialEq for MatchOp {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (MatchOp::Equal(a), MatchOp::Equal(b))
            | (MatchOp::NotEqual(a), MatchOp::NotEqual(b)) => a == b,
            (MatchOp::Regex(a), MatchOp::Regex(b))
            | (MatchOp::NotRegex(a), MatchOp::NotRegex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Matcher {
    /// Parses the value syntax of `match = { name = "value" }`.
    pub fn parse(name: &str, value: &str) -> Result<Matcher, String> {
        let anchored = |re: &str| {
            Regex::new(&format!("^(?:{re})$"))
                .map_err(|e| format!("invalid regex {re:?}: {}", one_line(&e.to_string())))
        };
        let op = if let Some(rest) = value.strip_prefix('\\') {
            MatchOp::Equal(rest.to_owned())
        } else if let Some(re) = value.strip_prefix("!~") {
            MatchOp::NotRegex(anchored(re)?)
        } else if let Some(re) = value.strip_prefix('~') {
            MatchOp::Regex(anchored(re)?)
        } else if let Some(rest) = value.strip_prefix('!') {
            MatchOp::NotEqual(rest.strip_prefix('\\').unwrap_or(rest).to_owned())
        } else {
            MatchOp::Equal(value.to_owned())
        };
        Ok(Matcher {
            name: name.to_owned(),
            op,
        })
    }

    /// The value as written in `match = { name = "value" }`: the inverse of
    /// [`Matcher::parse`]: a literal leading `~`, `!` or `\` gets a `\` in
    /// front.
    pub fn written(&self) -> String {
        fn literal(v: &str) -> String {
            if v.starts_with(['~', '!', '\\']) {
                format!("\\{v}")
            } else {
                v.to_owned()
            }
        }
        fn unanchored(re: &Regex) -> &str {
            let s = re.as_str();
            s.strip_prefix("^(?:")
                .and_then(|s| s.strip_suffix(")$"))
                .unwrap_or(s)
        }
        match &self.op {
            MatchOp::Equal(v) => literal(v),
            MatchOp::NotEqual(v) => format!("!{}", literal(v)),
            MatchOp::Regex(re) => format!("~{}", unanchored(re)),
            MatchOp::NotRegex(re) => format!("!~{}", unanchored(re)),
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map_or("", String::as_str);
        match &self.op {
            MatchOp::Equal(want) => v == want,
            MatchOp::NotEqual(want) => v != want,
            MatchOp::Regex(re) => re.is_match(v),
            MatchOp::NotRegex(re) => !re.is_match(v),
        }
    }
}

/// Parses a matcher set in its map form, the same as `match = { ... }` in
/// config (and in the JSON API). Every error names its label; several are
/// joined with "; ".
pub fn parse_matchers(map: &BTreeMap<String, String>) -> Result<Vec<Matcher>, String> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (name, value) in map {
        if !label_name_valid(name) {
            errors.push(invalid_label_name(name));
            continue;
        }
        match Matcher::parse(name, value) {
            Ok(m) => out.push(m),
            Err(e) => errors.push(format!("match.{name}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors.join("; "))
    }
}

/// The map form of a matcher set: the inverse of [`parse_matchers`]. Of two
/// matchers on one label (which config cannot express) the last wins.
pub fn matchers_map(ms: &[Matcher]) -> BTreeMap<String, String> {
    ms.iter().map(|m| (m.name.clone(), m.written())).collect()
}

fn invalid_label_name(name: &str) -> String {
    format!("match: {name:?} is not a valid label name (expected [a-zA-Z_][a-zA-Z0-9_]*)")
}

/// An annotation template: text with `{{ field }}` placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

impl Template {
    /// Parses a template, accepting only [`TEMPLATE_FIELDS`] and
    /// `labels.NAME`.
    pub fn parse(s: &str) -> Result<Template, String> {
        Self::parse_at(s).map_err(|(_, e)| e)
    }

    /// Like [`Template::parse`], with the error's placeholder number (0 for
    /// the first `{{`), so the loader can point at it.
    fn parse_at(s: &str) -> Result<Template, (usize, String)> {
        let mut parts = Vec::new();
        let mut rest = s;
        let mut placeholder = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err((
                    placeholder,
                    "unclosed `{{`: expected `{{ field }}`".to_owned(),
                ));
            };
            let field = after[..close].trim();
            if !is_template_field(field) {
                return Err((
                    placeholder,
                    format!(
                        "unknown template field {field:?}: expected one of {}, or labels.NAME",
                        TEMPLATE_FIELDS.join(", ")
                    ),
                ));
            }
            placeholder += 1;
            parts.push(Part::Field(field.to_owned()));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// The fields named, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f) => Some(f.as_str()),
            Part::Text(_) => None,
        })
    }

    /// Fills in each field with `value(field)`; `None` renders as "".
    pub fn render(&self, value: &dyn Fn(&str) -> Option<String>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => out.push_str(&value(f).unwrap_or_default()),
            }
        }
        out
    }
}

fn is_template_field(field: &str) -> bool {
    TEMPLATE_FIELDS.contains(&field) || field.strip_prefix("labels.").is_some_and(label_name_valid)
}

fn label_name_valid(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// === loading ===

/// Loads every `*.toml` directly in `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Rules, ConfigErrors> {
    crate::probe::config::load_toml_dir(dir, parse_files)
}

/// Parses and validates files given as (path, contents).
pub fn parse_files(files: &[(PathBuf, String)]) -> Result<Rules, ConfigErrors> {
    let mut l = Loader {
        files: files.iter().map(|(p, _)| p.clone()).collect(),
        errors: Vec::new(),
        rules: Vec::new(),
        silences: Vec::new(),
        maintenance: Vec::new(),
        teams: Vec::new(),
        oncall_settings: None,
        names: HashMap::new(),
        channels: Vec::new(),
        routes: Vec::new(),
        policies: Vec::new(),
        refs: Vec::new(),
    };
    for (idx, (path, text)) in files.iter().enumerate() {
        l.file(&Src { idx, path, text });
    }
    let oncall = l.finish_oncall();
    let mut team_names: Vec<String> = l
        .names
        .keys()
        .filter(|(kind, _)| *kind == "team")
        .map(|(_, n)| n.clone())
        .collect();
    team_names.sort();
    l.finish_refs(&team_names);
    if !l.errors.is_empty() {
        l.errors.sort();
        l.errors.dedup();
        let files = &l.files;
        return Err(ConfigErrors(
            l.errors
                .into_iter()
                .map(|(at, message)| ConfigError {
                    file: files[at.file].clone(),
                    line: at.line,
                    column: at.column,
                    message,
                })
                .collect(),
        ));
    }
    Ok(Rules {
        rules: l.rules,
        silences: l.silences,
        maintenance: l.maintenance,
        oncall,
        channels: l.channels.into_iter().map(|(_, c)| c).collect(),
        routes: l.routes,
        policies: l.policies,
        files: l.files,
    })
}

type Value<'i> = Spanned<DeValue<'i>>;

/// `[oncall]` as written, checked against the teams once every file is read.
struct OnCallSettings {
    at: Loc,
    fallback: Option<(Loc, String)>,
    order: Option<Vec<(Loc, String)>>,
}

fn unknown_team(name: &str, names: &[String]) -> String {
    format!(
        "unknown team {name:?} (teams: {})",
        names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A kind of top-level table (`[[rule]]`, ...) and how to read one.
struct TableKind {
    /// The top-level key.
    key: &'static str,
    /// What one table is, in messages.
    noun: &'static str,
    read: fn(&mut Loader, &Src<'_>, &Value<'_>, &DeTable<'_>),
}

/// The tables an alert-rules file may hold, each an array of tables.
const TABLE_KINDS: &[TableKind] = &[
    TableKind {
        key: "rule",
        noun: "rule",
        read: Loader::rule,
    },
    TableKind {
        key: "silence",
        noun: "silence",
        read: Loader::silence,
    },
    TableKind {
        key: "maintenance",
        noun: "maintenance window",
        read: Loader::maintenance,
    },
    TableKind {
        key: "team",
        noun: "on-call team",
        read: Loader::team,
    },
    TableKind {
        key: "channel",
        noun: "notification channel",
        read: Loader::channel,
    },
    TableKind {
        key: "route",
        noun: "route",
        read: Loader::route,
    },
    TableKind {
        key: "policy",
        noun: "escalation policy",
        read: Loader::policy,
    },
];

/// The single `[oncall]` settings table (not an array of tables).
const ONCALL_KEY: &str = "oncall";
const ONCALL_KEYS: &[&str] = &["order", "fallback"];
const TEAM_KEYS: &[&str] = &["name", "timezone", "contacts", "shift"];
const SHIFT_KEYS: &[&str] = &["days", "start", "end"];

const SILENCE_KEYS: &[&str] = &["match", "starts_at", "ends_at", "author", "comment"];
const MAINTENANCE_KEYS: &[&str] = &[
    "name", "match", "days", "start", "end", "timezone", "comment",
];

/// What `starts_at` and `ends_at` take.
const INSTANT_HINT: &str = "an RFC 3339 date-time, e.g. \"2026-11-24T22:00:00Z\"";

struct Loader {
    files: Vec<PathBuf>,
    errors: Vec<(Loc, String)>,
    rules: Vec<Rule>,
    silences: Vec<Silence>,
    maintenance: Vec<Maintenance>,
    /// `[[team]]` tables read, with where each was written.
    teams: Vec<(Loc, Team)>,
    /// The first `[oncall]` table read.
    oncall_settings: Option<OnCallSettings>,
    /// Where each name was first defined, by table kind (names are unique
    /// within a kind).
    names: HashMap<(&'static str, String), Loc>,
    /// `[[channel]]` tables read.
    channels: Vec<(Loc, ChannelSpec)>,
    routes: Vec<Route>,
    policies: Vec<Policy>,
    /// Contact, team, channel and policy references, checked at the end.
    refs: Vec<notify::Ref>,
}

impl Loader {
    fn error(&mut self, at: Loc, message: impl Into<String>) {
        self.errors.push((at, message.into()));
    }

    fn file(&mut self, src: &Src<'_>) {
        let doc = match DeTable::parse(src.text) {
            Ok(doc) => doc.into_inner(),
            Err(e) => {
                let at = src.loc(&e.span().unwrap_or(0..0));
                self.error(at, format!("invalid TOML: {}", e.message()));
                return;
            }
        };
        for (k, v) in doc.iter() {
            let key: &str = k.get_ref();
            if key == ONCALL_KEY {
                self.oncall(src, v);
                continue;
            }
            let Some(kind) = TABLE_KINDS.iter().find(|kind| kind.key == key) else {
                let mut keys: Vec<&str> = TABLE_KINDS.iter().map(|kind| kind.key).collect();
                keys.push(ONCALL_KEY);
                self.error(src.loc(&k.span()), unknown(key, &keys));
                continue;
            };
            let DeValue::Array(tables) = v.get_ref() else {
                self.error(
                    src.loc(&v.span()),
                    format!(
                        "{key}: expected an array of tables: write each {} under its own [[{key}]] header",
                        kind.noun
                    ),
                );
                continue;
            };
            for item in tables.iter() {
                match item.get_ref() {
                    DeValue::Table(t) => (kind.read)(self, src, item, t),
                    other => self.error(
                        src.loc(&item.span()),
                        format!("{key}: expected a table, found {}", type_name(other)),
                    ),
                }
            }
        }
    }

    /// A non-empty `name`, claimed among the names of `kind` so a later
    /// duplicate is an error (the first one wins, even if its table has
    /// other errors).
    fn unique_name(&mut self, src: &Src<'_>, kind: &'static str, v: &Value<'_>) -> Option<String> {
        let s = self.string(src, "name", v)?;
        let here = src.loc(&v.span());
        if s.trim().is_empty() {
            self.error(here, "name: must not be empty");
            return None;
        }
        match self.names.get(&(kind, s.to_owned())) {
            Some(first) => {
                let place = format!("{}:{}", self.files[first.file].display(), first.line);
                self.error(
                    here,
                    format!("name: duplicate {kind} name {s:?} (first defined at {place})"),
                );
            }
            None => {
                self.names.insert((kind, s.to_owned()), here);
            }
        }
        Some(s.to_owned())
    }

    /// `t[key]`, or an error at the table's header naming what is missing.
    fn required<'t, 'i>(
        &mut self,
        at: Loc,
        t: &'t DeTable<'i>,
        table: &str,
        key: &str,
        hint: &str,
    ) -> Option<&'t Value<'i>> {
        let v = t.get(key);
        if v.is_none() {
            self.error(at, format!("{table}: missing `{key}` ({hint})"));
        }
        v
    }

    fn unknown_keys(&mut self, src: &Src<'_>, t: &DeTable<'_>, known: &[&str]) {
        for (k, _) in t.iter() {
            if !known.contains(&k.get_ref().as_ref()) {
                self.error(src.loc(&k.span()), unknown(k.get_ref(), known));
            }
        }
    }

    fn rule(&mut self, src: &Src<'_>, header: &Value<'_>, t: &DeTable<'_>) {
        let at = src.loc(&header.span());
        let errors_before = self.errors.len();
        let get = |key: &str| t.get(key);

        let name = match get("name") {
            None => {
                self.error(at, "rule: missing `name`");
                None
            }
            Some(v) => self.unique_name(src, "rule", v),
        };

        let kind = match get("kind") {
            None => {
                self.error(
                    at,
                    format!(
                        "rule: missing `kind` (expected one of {})",
                        KINDS.join(", ")
                    ),
                );
                None
            }
            Some(v) => self.string(src, "kind", v).and_then(|s| {
                if KINDS.contains(&s) {
                    Some(s)
                } else {
                    self.error(
                        src.loc(&v.span()),
                        format!(
                            "kind: unknown kind {s:?}, expected one of {}",
                            KINDS.join(", ")
                        ),
                    );
                    None
                }
            }),
        };

        // Unknown keys: only judged against the kind when the kind is known.
        let kind_keys: &[&str] = match kind {
            Some("down") => &["quorum", "for"],
            Some("latency") => &[
                "percentile",
                "phase",
                "window",
                "threshold",
                "quorum",
                "for",
            ],
            Some("cert_expiry") => &["threshold"],
            Some("probe_offline") => &["after"],
            Some("degraded") => &["for"],
            _ => &[],
        };
        const ANY_KIND: &[&str] = &[
            "quorum",
            "for",
            "percentile",
            "phase",
            "window",
            "threshold",
            "after",
        ];
        for (k, _) in t.iter() {
            let key: &str = k.get_ref();
            if COMMON_KEYS.contains(&key) || kind_keys.contains(&key) {
                continue;
            }
            match kind {
                Some(kind) if ANY_KIND.contains(&key) => {
                    let takes: Vec<String> = kind_keys.iter().map(|k| format!("`{k}`")).collect();
                    let takes = if takes.is_empty() {
                        "none".to_owned()
                    } else {
                        takes.join(", ")
                    };
                    self.error(
                        src.loc(&k.span()),
                        format!(
                            "`{key}` does not apply to a {kind} rule (a {kind} rule takes {takes} besides the common keys)"
                        ),
                    );
                }
                None if ANY_KIND.contains(&key) => {}
                _ => {
                    let mut all: Vec<&str> = COMMON_KEYS.to_vec();
                    all.extend(kind_keys);
                    self.error(src.loc(&k.span()), unknown(key, &all));
                }
            }
        }

        let matchers = get("match")
            .map(|v| self.matchers(src, v))
            .unwrap_or_default();
        let severity = get("severity").and_then(|v| {
            let s = self.string(src, "severity", v)?;
            s.parse::<Severity>()
                .map_err(|e| self.error(src.loc(&v.span()), format!("severity: {e}")))
                .ok()
        });
        let receiver = match get("receiver") {
            None => Some(DEFAULT_RECEIVER.to_owned()),
            Some(v) => self.string(src, "receiver", v).and_then(|s| {
                if s.trim().is_empty() {
                    self.error(src.loc(&v.span()), "receiver: must not be empty");
                    None
                } else {
                    Some(s.to_owned())
                }
            }),
        };
        let annotations = get("annotations")
            .map(|v| self.annotations(src, v))
            .unwrap_or_default();
        let repeat = get("repeat").and_then(|v| {
            let d = self.duration(src, "repeat", v)?;
            if d < MIN_REPEAT {
                self.error(
                    src.loc(&v.span()),
                    format!(
                        "repeat: at least {} (a page every few seconds helps no one)",
                        humantime::format_duration(MIN_REPEAT)
                    ),
                );
                return None;
            }
            Some(d)
        });

        let kind = kind.map(|k| match k {
            "down" => RuleKind::Down {
                quorum: self.quorum(src, get("quorum")),
                for_: self.opt_duration(src, t, "for", Duration::ZERO),
            },
            "latency" => {
                let window = self.opt_duration(src, t, "window", DEFAULT_WINDOW);
                let for_ = self.opt_duration(src, t, "for", Duration::ZERO);
                let threshold = match get("threshold") {
                    None => {
                        self.error(
                            at,
                            "rule: a latency rule needs `threshold` (e.g. \"800ms\")",
                        );
                        Duration::ZERO
                    }
                    Some(v) => self.duration(src, "threshold", v).unwrap_or(Duration::ZERO),
                };
                RuleKind::Latency {
                    percentile: get("percentile")
                        .map_or(DEFAULT_PERCENTILE, |v| self.percentile(src, v)),
                    phase: get("phase").and_then(|v| self.phase(src, v)),
                    window,
                    threshold,
                    quorum: self.quorum(src, get("quorum")),
                    for_,
                }
            }
            "cert_expiry" => RuleKind::CertExpiry {
                threshold: self.opt_duration(src, t, "threshold", DEFAULT_CERT_THRESHOLD),
            },
            "probe_offline" => RuleKind::ProbeOffline {
                after: self.opt_duration(src, t, "after", DEFAULT_OFFLINE_AFTER),
            },
            _ => RuleKind::Degraded {
                for_: self.opt_duration(src, t, "for", Duration::ZERO),
            },
        });

        if self.errors.len() != errors_before {
            return;
        }
        let (Some(name), Some(kind), Some(receiver)) = (name, kind, receiver) else {
            return;
        };
        let severity = severity.unwrap_or(match kind {
            RuleKind::Down { .. } | RuleKind::ProbeOffline { .. } => Severity::Page,
            RuleKind::Latency { .. } | RuleKind::CertExpiry { .. } => Severity::Ticket,
            RuleKind::Degraded { .. } => Severity::Info,
        });
        self.rules.push(Rule {
            name,
            kind,
            matchers,
            severity,
            receiver,
            repeat,
            annotations,
        });
    }

    fn silence(&mut self, src: &Src<'_>, header: &Value<'_>, t: &DeTable<'_>) {
        let at = src.loc(&header.span());
        let errors_before = self.errors.len();
        self.unknown_keys(src, t, SILENCE_KEYS);

        let matchers = self.required_matchers(
            src,
            at,
            t,
            "silence",
            "a silence needs at least one label matcher (a silence of everything would hide every alert)",
        );
        let starts_at = self
            .required(at, t, "silence", "starts_at", INSTANT_HINT)
            .and_then(|v| self.instant(src, "starts_at", v));
        let ends_at_v = self.required(at, t, "silence", "ends_at", INSTANT_HINT);
        let ends_at = ends_at_v.and_then(|v| self.instant(src, "ends_at", v));
        if let (Some(starts_at), Some(ends_at), Some(v)) = (starts_at, ends_at, ends_at_v)
            && ends_at <= starts_at
        {
            self.error(
                src.loc(&v.span()),
                format!(
                    "ends_at: must be after starts_at ({})",
                    starts_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                ),
            );
        }
        let author = self
            .required(at, t, "silence", "author", "who made the silence")
            .and_then(|v| self.non_empty(src, "author", v));
        let comment = self.comment(src, t);

        if self.errors.len() != errors_before {
            return;
        }
        let (Some(starts_at), Some(ends_at), Some(author)) = (starts_at, ends_at, author) else {
            return;
        };
        match Silence::new(matchers, starts_at, ends_at, author, comment) {
            Ok(silence) => self.silences.push(silence),
            Err(e) => self.error(at, format!("silence: {e}")),
        }
    }

    fn maintenance(&mut self, src: &Src<'_>, header: &Value<'_>, t: &DeTable<'_>) {
        let at = src.loc(&header.span());
        let errors_before = self.errors.len();
        self.unknown_keys(src, t, MAINTENANCE_KEYS);

        let name = self
            .required(
                at,
                t,
                "maintenance",
                "name",
                "unique among maintenance windows",
            )
            .and_then(|v| self.unique_name(src, "maintenance", v));
        let matchers = self.required_matchers(
            src,
            at,
            t,
            "maintenance",
            "a maintenance window needs at least one label matcher (a window over everything would hide every alert)",
        );
        let days = self
            .required(
                at,
                t,
                "maintenance",
                "days",
                "e.g. days = [\"sat\", \"sun\"]",
            )
            .and_then(|v| self.days(src, v));
        let start = self
            .required(
                at,
                t,
                "maintenance",
                "start",
                "the local time the window opens, e.g. \"22:00\"",
            )
            .and_then(|v| self.time_of_day(src, "start", v));
        let end = self
            .required(
                at,
                t,
                "maintenance",
                "end",
                "the local time the window closes, e.g. \"04:00\"",
            )
            .and_then(|v| self.time_of_day(src, "end", v));
        let tz = self
            .required(
                at,
                t,
                "maintenance",
                "timezone",
                "an IANA name like \"Europe/Oslo\"",
            )
            .and_then(|v| self.timezone(src, v));
        let comment = self.comment(src, t);

        if self.errors.len() != errors_before {
            return;
        }
        let (Some(name), Some(days), Some(start), Some(end), Some(tz)) =
            (name, days, start, end, tz)
        else {
            return;
        };
        self.maintenance.push(Maintenance {
            name,
            matchers,
            days,
            start,
            end,
            tz,
            comment,
        });
    }

    fn team(&mut self, src: &Src<'_>, header: &Value<'_>, t: &DeTable<'_>) {
        let at = src.loc(&header.span());
        let errors_before = self.errors.len();
        self.unknown_keys(src, t, TEAM_KEYS);

        let name = self
            .required(at, t, "team", "name", "unique among teams")
            .and_then(|v| self.unique_name(src, "team", v));
        let tz = self
            .required(
                at,
                t,
                "team",
                "timezone",
                "an IANA name like \"Europe/Oslo\"",
            )
            .and_then(|v| self.timezone(src, v));
        let contacts = match t.get("contacts") {
            None => Vec::new(),
            Some(v) => self.contact_list(src, "contacts", v),
        };
        let mut shifts = Vec::new();
        if let Some(v) = t.get("shift") {
            match v.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        match item.get_ref() {
                            DeValue::Table(st) => {
                                if let Some(shift) = self.shift(src, item, st) {
                                    shifts.push(shift);
                                }
                            }
                            other => self.error(
                                src.loc(&item.span()),
                                format!("shift: expected a table, found {}", type_name(other)),
                            ),
                        }
                    }
                }
                other => self.error(
                    src.loc(&v.span()),
                    format!(
                        "shift: expected an array of tables: write each shift under its own [[team.shift]] header, found {}",
                        type_name(other)
                    ),
                ),
            }
        }

        if self.errors.len() != errors_before {
            return;
        }
        let (Some(name), Some(tz)) = (name, tz) else {
            return;
        };
        let shifts = shifts
            .into_iter()
            .map(|(days, start, end)| WeeklyWindow {
                days,
                start,
                end,
                tz,
            })
            .collect();
        self.teams.push((
            at,
            Team {
                name,
                tz,
                contacts,
                shifts,
            },
        ));
    }

    /// One `[[team.shift]]`: days, start and end (the zone is the team's).
    fn shift(
        &mut self,
        src: &Src<'_>,
        header: &Value<'_>,
        t: &DeTable<'_>,
    ) -> Option<(Vec<Weekday>, NaiveTime, NaiveTime)> {
        let at = src.loc(&header.span());
        self.unknown_keys(src, t, SHIFT_KEYS);
        let days = self
            .required(at, t, "shift", "days", "e.g. days = [\"mon\", \"tue\"]")
            .and_then(|v| self.days(src, v));
        let start = self
            .required(
                at,
                t,
                "shift",
                "start",
                "the local time the shift begins, e.g. \"08:00\"",
            )
            .and_then(|v| self.time_of_day(src, "start", v));
        let end = self
            .required(
                at,
                t,
                "shift",
                "end",
                "the local time the shift ends, e.g. \"16:00\"",
            )
            .and_then(|v| self.time_of_day(src, "end", v));
        Some((days?, start?, end?))
    }

    /// The `[oncall]` table; only one across all files.
    fn oncall(&mut self, src: &Src<'_>, v: &Value<'_>) {
        let here = src.loc(&v.span());
        let DeValue::Table(t) = v.get_ref() else {
            self.error(
                src.loc(&v.span()),
                format!(
                    "oncall: expected a table: write the settings under one [oncall] header, found {}",
                    type_name(v.get_ref())
                ),
            );
            return;
        };
        if let Some(first) = &self.oncall_settings {
            let place = format!("{}:{}", self.files[first.at.file].display(), first.at.line);
            self.error(
                here,
                format!("oncall: defined more than once (first at {place})"),
            );
            return;
        }
        self.unknown_keys(src, t, ONCALL_KEYS);
        let fallback = t.get("fallback").and_then(|v| {
            let name = self.non_empty(src, "fallback", v)?;
            Some((src.loc(&v.span()), name))
        });
        let order = t.get("order").map(|v| {
            let DeValue::Array(items) = v.get_ref() else {
                self.error(
                    src.loc(&v.span()),
                    format!(
                        "order: expected an array of team names like [\"emea\", \"amer\"], found {}",
                        type_name(v.get_ref())
                    ),
                );
                return Vec::new();
            };
            items
                .iter()
                .filter_map(|item| {
                    let name = self.non_empty(src, "order", item)?;
                    Some((src.loc(&item.span()), name))
                })
                .collect()
        });
        self.oncall_settings = Some(OnCallSettings {
            at: here,
            fallback,
            order,
        });
    }

    /// Cross-checks `[oncall]` against the teams of every file.
    fn finish_oncall(&mut self) -> Option<OnCall> {
        let settings = self.oncall_settings.take();
        let teams = std::mem::take(&mut self.teams);
        // Names of every team written, even one dropped for its own errors,
        // so a fallback naming it is not reported twice.
        let mut written: Vec<(Loc, String)> = self
            .names
            .iter()
            .filter(|((kind, _), _)| *kind == "team")
            .map(|((_, name), at)| (*at, name.clone()))
            .collect();
        written.sort();
        let names: Vec<String> = written.into_iter().map(|(_, n)| n).collect();
        let known = |name: &str| names.iter().any(|n| n == name);
        let Some(settings) = settings else {
            if let Some((at, _)) = teams.first() {
                self.error(
                    *at,
                    "team: teams need an [oncall] table naming the `fallback` team (pages no shift covers go to it)",
                );
            }
            return None;
        };
        if names.is_empty() {
            self.error(settings.at, "oncall: no [[team]] is defined");
            return None;
        }
        let mut ok = true;
        match &settings.fallback {
            None => {
                self.error(
                    settings.at,
                    "oncall: missing `fallback` (the team that gets pages no shift covers)",
                );
                ok = false;
            }
            Some((at, name)) if !known(name) => {
                self.error(*at, format!("fallback: {}", unknown_team(name, &names)));
                ok = false;
            }
            Some(_) => {}
        }
        let mut order: Vec<String> = Vec::new();
        for (at, name) in settings.order.iter().flatten() {
            if !known(name) {
                self.error(*at, format!("order: {}", unknown_team(name, &names)));
                ok = false;
            } else if order.contains(name) {
                self.error(*at, format!("order: team {name:?} is listed twice"));
                ok = false;
            } else {
                order.push(name.clone());
            }
        }
        for (at, team) in &teams {
            let is_fallback = settings
                .fallback
                .as_ref()
                .is_some_and(|(_, f)| *f == team.name);
            if team.shifts.is_empty() && !is_fallback {
                self.error(
                    *at,
                    format!(
                        "team: {:?} has no [[team.shift]]; only the fallback team may have none",
                        team.name
                    ),
                );
                ok = false;
            }
        }
        if !ok || !self.errors.is_empty() {
            return None;
        }
        let mut teams: Vec<Team> = teams.into_iter().map(|(_, t)| t).collect();
        // Listed teams first in `order`, the rest in written order (stable).
        teams.sort_by_key(|t| {
            order
                .iter()
                .position(|n| *n == t.name)
                .unwrap_or(usize::MAX)
        });
        Some(OnCall {
            teams,
            fallback: settings.fallback.map(|(_, f)| f)?,
        })
    }

    /// A `match` that must be present and name at least one label.
    fn required_matchers(
        &mut self,
        src: &Src<'_>,
        at: Loc,
        t: &DeTable<'_>,
        table: &str,
        why_not_empty: &str,
    ) -> Vec<Matcher> {
        let Some(v) = self.required(
            at,
            t,
            table,
            "match",
            "at least one label matcher, e.g. match = { check = \"api-health\" }",
        ) else {
            return Vec::new();
        };
        if let DeValue::Table(m) = v.get_ref()
            && m.is_empty()
        {
            self.error(
                src.loc(&v.span()),
                format!("match: must not be empty: {why_not_empty}"),
            );
        }
        self.matchers(src, v)
    }

    /// An RFC 3339 string, or a TOML offset date-time.
    fn instant(&mut self, src: &Src<'_>, key: &str, v: &Value<'_>) -> Option<DateTime<Utc>> {
        let parsed = match v.get_ref() {
            DeValue::Datetime(dt)
                if dt.date.is_some() && dt.time.is_some() && dt.offset.is_some() =>
            {
                silence::parse_instant(&dt.to_string())
            }
            DeValue::Datetime(dt) => Err(format!(
                "{dt} is not a date and time with a UTC offset (expected e.g. \"2026-11-24T22:00:00Z\")"
            )),
            _ => silence::parse_instant(self.string(src, key, v)?),
        };
        parsed
            .map_err(|e| self.error(src.loc(&v.span()), format!("{key}: {e}")))
            .ok()
    }

    /// `HH:MM` or `HH:MM:SS` as a string, or a TOML local time.
    fn time_of_day(&mut self, src: &Src<'_>, key: &str, v: &Value<'_>) -> Option<NaiveTime> {
        let parsed = match v.get_ref() {
            DeValue::Datetime(dt) if dt.date.is_none() && dt.offset.is_none() => {
                silence::parse_time_of_day(&dt.to_string())
            }
            _ => silence::parse_time_of_day(self.string(src, key, v)?),
        };
        parsed
            .map_err(|e| self.error(src.loc(&v.span()), format!("{key}: {e}")))
            .ok()
    }

    fn days(&mut self, src: &Src<'_>, v: &Value<'_>) -> Option<Vec<Weekday>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.error(
                src.loc(&v.span()),
                format!(
                    "days: expected an array of day names like [\"sat\", \"sun\"], found {}",
                    type_name(v.get_ref())
                ),
            );
            return None;
        };
        if items.is_empty() {
            self.error(src.loc(&v.span()), "days: must name at least one day");
            return None;
        }
        let mut days = Vec::new();
        for item in items.iter() {
            let Some(s) = self.string(src, "days", item) else {
                continue;
            };
            match silence::parse_weekday(s) {
                Ok(day) if days.contains(&day) => self.error(
                    src.loc(&item.span()),
                    format!("days: {s:?} names a day already listed"),
                ),
                Ok(day) => days.push(day),
                Err(e) => self.error(src.loc(&item.span()), format!("days: {e}")),
            }
        }
        Some(days)
    }

    fn timezone(&mut self, src: &Src<'_>, v: &Value<'_>) -> Option<Tz> {
        let s = self.string(src, "timezone", v)?;
        silence::parse_timezone(s)
            .map_err(|e| self.error(src.loc(&v.span()), format!("timezone: {e}")))
            .ok()
    }

    /// The optional free-text `comment`, "" when absent.
    fn comment(&mut self, src: &Src<'_>, t: &DeTable<'_>) -> String {
        t.get("comment")
            .and_then(|v| self.string(src, "comment", v))
            .unwrap_or_default()
            .to_owned()
    }

    fn non_empty(&mut self, src: &Src<'_>, key: &str, v: &Value<'_>) -> Option<String> {
        let s = self.string(src, key, v)?;
        if s.trim().is_empty() {
            self.error(src.loc(&v.span()), format!("{key}: must not be empty"));
            return None;
        }
        Some(s.to_owned())
    }

    fn matchers(&mut self, src: &Src<'_>, v: &Value<'_>) -> Vec<Matcher> {
        let DeValue::Table(t) = v.get_ref() else {
            self.error(
                src.loc(&v.span()),
                format!(
                    "match: expected a table of label matchers like {{ team = \"web\" }}, found {}",
                    type_name(v.get_ref())
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in t.iter() {
            let name: &str = k.get_ref();
            if !label_name_valid(name) {
                self.error(src.loc(&k.span()), invalid_label_name(name));
                continue;
            }
            let Some(value) = self.string(src, &format!("match.{name}"), v) else {
                continue;
            };
            match Matcher::parse(name, value) {
                Ok(m) => out.push(m),
                Err(e) => self.error(src.loc(&v.span()), format!("match.{name}: {e}")),
            }
        }
        out
    }

    fn annotations(&mut self, src: &Src<'_>, v: &Value<'_>) -> BTreeMap<String, Template> {
        let DeValue::Table(t) = v.get_ref() else {
            self.error(
                src.loc(&v.span()),
                format!(
                    "annotations: expected a table of templates, found {}",
                    type_name(v.get_ref())
                ),
            );
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for (k, v) in t.iter() {
            let key = format!("annotations.{}", k.get_ref());
            let Some(s) = self.string(src, &key, v) else {
                continue;
            };
            match Template::parse_at(s) {
                Ok(tpl) => {
                    out.insert(k.get_ref().to_string(), tpl);
                }
                Err((n, e)) => {
                    // Point at the placeholder when the source spells it
                    // plainly (no escapes inside `{{`), else at the value.
                    let span = v.span();
                    let at = src
                        .text
                        .get(span.clone())
                        .and_then(|raw| raw.match_indices("{{").nth(n))
                        .map_or(span.start, |(i, _)| span.start + i);
                    self.error(src.loc(&(at..at)), format!("{key}: {e}"));
                }
            }
        }
        out
    }

    fn quorum(&mut self, src: &Src<'_>, v: Option<&Value<'_>>) -> Quorum {
        let Some(v) = v else {
            return Quorum::default();
        };
        let parsed = match v.get_ref() {
            DeValue::String(s) => s.parse::<Quorum>().map_err(|e| e.to_string()),
            DeValue::Integer(i) => i
                .as_str()
                .replace('_', "")
                .parse::<Quorum>()
                .map_err(|e| e.to_string()),
            other => Err(format!(
                "expected \"any\", \"majority\", \"all\" or a number of regions, found {}",
                type_name(other)
            )),
        };
        parsed.unwrap_or_else(|e| {
            self.error(src.loc(&v.span()), format!("quorum: {e}"));
            Quorum::default()
        })
    }

    fn percentile(&mut self, src: &Src<'_>, v: &Value<'_>) -> f64 {
        let raw = match v.get_ref() {
            DeValue::Integer(i) if i.radix() == 10 => Some(i.as_str()),
            DeValue::Float(f) => Some(f.as_str()),
            _ => None,
        };
        let p = raw.and_then(|s| s.replace('_', "").parse::<f64>().ok());
        match p {
            Some(p) if p > 0.0 && p <= 100.0 => p,
            Some(p) => {
                self.error(
                    src.loc(&v.span()),
                    format!("percentile: {p} is out of range: expected a number with 0 < p <= 100"),
                );
                DEFAULT_PERCENTILE
            }
            None => {
                self.error(
                    src.loc(&v.span()),
                    format!(
                        "percentile: expected a number with 0 < p <= 100 (e.g. 99), found {}",
                        type_name(v.get_ref())
                    ),
                );
                DEFAULT_PERCENTILE
            }
        }
    }

    fn phase(&mut self, src: &Src<'_>, v: &Value<'_>) -> Option<Phase> {
        let s = self.string(src, "phase", v)?;
        if s == "total" {
            return None;
        }
        let phase = Phase::ALL.into_iter().find(|p| p.as_str() == s);
        if phase.is_none() {
            self.error(
                src.loc(&v.span()),
                format!(
                    "phase: unknown phase {s:?}, expected one of {}",
                    PHASES.join(", ")
                ),
            );
        }
        phase
    }

    fn opt_duration(
        &mut self,
        src: &Src<'_>,
        t: &DeTable<'_>,
        key: &str,
        default: Duration,
    ) -> Duration {
        match t.get(key) {
            None => default,
            Some(v) => self.duration(src, key, v).unwrap_or(default),
        }
    }

    fn string<'v>(&mut self, src: &Src<'_>, key: &str, v: &'v Value<'_>) -> Option<&'v str> {
        crate::probe::config::expect_str(src, key, v)
            .map_err(|(at, message)| self.error(at, message))
            .ok()
    }

    fn duration(&mut self, src: &Src<'_>, key: &str, v: &Value<'_>) -> Option<Duration> {
        let s = self.string(src, key, v)?;
        match humantime::parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    src.loc(&v.span()),
                    format!("{key}: invalid duration {s:?}: {e} (expected e.g. \"30s\", \"5m\", \"14d\")"),
                );
                None
            }
        }
    }
}
