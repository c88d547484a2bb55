//! The coordinator's configuration directory:
//!
//! ```text
//! DIR/probes/*.toml        checks (the same files `varde probe` reads)
//! DIR/alert-rules/*.toml   rules, silences and maintenance windows
//! DIR/coordinator.toml     who may talk to the coordinator, and settings
//! ```
//!
//! `coordinator.toml`, every key optional:
//!
//! ```toml
//! [verdict]
//! fail_after = 2          # consecutive failures before a region is DOWN
//! recover_after = 2       # consecutive successes before it is UP again
//! stale_intervals = 2     # a region whose last result is older than this many
//!                         # check intervals is STALE and does not vote
//!
//! [flapping]
//! changes = 6             # a check whose verdict changes more than this often
//! window = "1h"           # within this window is flapping
//!
//! [retention]
//! results = "2h"          # raw results kept
//! incidents = "180d"      # resolved incidents (timeline, notifications,
//!                         # deliveries) and ended silences and overrides are
//!                         # forgotten this long after they ended; at least 1d
//!
//! [links]
//! public_url = "https://varde.example.com"  # where people reach this API; with
//!                         # it, pages carry signed acknowledge/resolve links
//! ttl = "7d"              # how long such a link works
//!
//! [[probe]]               # one per probe (or per region): a bearer token
//! name = "eu-1"
//! region = "eu"           # optional: the only region this token may report as
//! token_file = "secrets/eu-1.token"   # or token_env = "VAR", or token = "..."
//!
//! [[api_token]]           # who may acknowledge, resolve and silence
//! name = "alice"          # recorded as the author of what the token does
//! token_env = "VARDE_API_TOKEN_ALICE"
//! ```
//!
//! A token is read from exactly one of `token_file` (relative paths are
//! relative to `DIR`; surrounding whitespace is dropped, as `varde probe
//! --token-file` does), `token_env` or
//! `token` (inline; fine for tests, not for secrets in version control). A
//! token has at least [`MIN_TOKEN_LEN`] characters and is unique across all
//! entries. Only its SHA-256 digest is kept in memory; comparisons are
//! constant-time and never stop at the first differing entry.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use toml::Spanned;

use super::rules::{self, Rules};
use crate::probe::CheckDef;
use crate::probe::config::{self as probe_config, ConfigError, ConfigErrors, FileStamp, Src};

/// The settings file inside the config dir.
pub const FILE: &str = "coordinator.toml";
/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// Everything the coordinator is configured with.
#[derive(Clone, Debug, Default)]
pub struct CoordinatorConfig {
    pub checks: Vec<CheckDef>,
    pub rules: Rules,
    pub auth: Auth,
    pub settings: Settings,
    pub links: LinkSettings,
}

/// `[links]` of `coordinator.toml`: signed acknowledge/resolve links.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkSettings {
    /// The base URL people reach the coordinator at; no links without it.
    pub public_url: Option<url::Url>,
    /// How long a link works after the message is sent.
    pub ttl: Duration,
}

impl Default for LinkSettings {
    fn default() -> Self {
        LinkSettings {
            public_url: None,
            ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Engine settings of `coordinator.toml`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub fail_after: NonZeroU32,
    pub recover_after: NonZeroU32,
    /// A region is stale after this many intervals without a result.
    pub stale_intervals: f64,
    pub flap_changes: u32,
    pub flap_window: Duration,
    pub results_retention: Duration,
    /// How long resolved incidents, ended silences and overrides are kept.
    pub history_retention: Duration,
}

/// The shortest `[retention] incidents` accepted: a day of history is the
/// least anyone reviewing last night's pages needs.
pub const MIN_HISTORY_RETENTION: Duration = Duration::from_secs(24 * 3600);

impl Default for Settings {
    fn default() -> Self {
        Settings {
            fail_after: NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN),
            recover_after: NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN),
            stale_intervals: 2.0,
            flap_changes: 6,
            flap_window: Duration::from_secs(3600),
            results_retention: Duration::from_secs(2 * 3600),
            history_retention: Duration::from_secs(180 * 24 * 3600),
        }
    }
}

/// Who may push results, fetch checks, and change incidents.
#[derive(Clone, Default)]
pub struct Auth {
    pub probes: Vec<Credential>,
    pub api: Vec<Credential>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field(
                "probes",
                &self.probes.iter().map(|c| &c.name).collect::<Vec<_>>(),
            )
            .field("api", &self.api.iter().map(|c| &c.name).collect::<Vec<_>>())
            .finish()
    }
}

/// A named token. Only its digest is kept.
#[derive(Clone)]
pub struct Credential {
    pub name: String,
    /// For probes: the only region it may report as.
    pub region: Option<String>,
    digest: [u8; 32],
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Credential {
    pub fn new(name: &str, region: Option<&str>, token: &str) -> Self {
        Credential {
            name: name.to_owned(),
            region: region.map(str::to_owned),
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }
}

impl Auth {
    /// The probe credential `token` belongs to.
    pub fn probe(&self, token: &str) -> Option<&Credential> {
        find(&self.probes, token)
    }

    /// The API credential `token` belongs to.
    pub fn api(&self, token: &str) -> Option<&Credential> {
        find(&self.api, token)
    }
}

/// Compares the digest of `token` with every entry in constant time (the
/// digest hides the length; every entry is compared).
fn find<'a>(creds: &'a [Credential], token: &str) -> Option<&'a Credential> {
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let mut found = None;
    for c in creds {
        if bool::from(c.digest.ct_eq(&presented)) {
            found = Some(c);
        }
    }
    found
}

/// Loads `dir`: `probes/` (required), `alert-rules/` and `coordinator.toml`
/// (both optional). Every problem in every file is reported.
pub fn load(dir: &Path) -> Result<CoordinatorConfig, ConfigErrors> {
    let mut errors = Vec::new();
    let probes_dir = dir.join("probes");
    let checks = match probe_config::load_dir(&probes_dir) {
        Ok(c) => c.checks,
        Err(ConfigErrors(mut e)) => {
            errors.append(&mut e);
            Vec::new()
        }
    };
    let rules_dir = dir.join("alert-rules");
    let rules = if rules_dir.is_dir() {
        match rules::load_dir(&rules_dir) {
            Ok(r) => r,
            Err(ConfigErrors(mut e)) => {
                errors.append(&mut e);
                Rules::default()
            }
        }
    } else {
        Rules::default()
    };
    let (auth, settings, links) = match load_settings(dir) {
        Ok(v) => v.unwrap_or_default(),
        Err(ConfigErrors(mut e)) => {
            errors.append(&mut e);
            Default::default()
        }
    };
    if errors.is_empty() {
        Ok(CoordinatorConfig {
            checks,
            rules,
            auth,
            settings,
            links,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Reads `dir/coordinator.toml`: `None` when there is none. Tokens are read
/// (from files and the environment) as the coordinator would.
pub fn load_settings(dir: &Path) -> Result<Option<(Auth, Settings, LinkSettings)>, ConfigErrors> {
    let file = dir.join(FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => parse_settings(dir, &file, &text)
            .map(Some)
            .map_err(ConfigErrors),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file,
            line: 0,
            column: 0,
            message: format!("cannot read the file: {e}"),
        }])),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    verdict: RawVerdict,
    #[serde(default)]
    flapping: RawFlapping,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    links: RawLinks,
    #[serde(default)]
    probe: Vec<Spanned<RawCred>>,
    #[serde(default)]
    api_token: Vec<Spanned<RawCred>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVerdict {
    fail_after: Option<Spanned<u32>>,
    recover_after: Option<Spanned<u32>>,
    stale_intervals: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFlapping {
    changes: Option<Spanned<u32>>,
    window: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    results: Option<Spanned<String>>,
    incidents: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLinks {
    public_url: Option<Spanned<String>>,
    ttl: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCred {
    name: Spanned<String>,
    region: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    token_env: Option<Spanned<String>>,
}

fn parse_settings(
    dir: &Path,
    file: &Path,
    text: &str,
) -> Result<(Auth, Settings, LinkSettings), Vec<ConfigError>> {
    let src = Src {
        idx: 0,
        path: file,
        text,
    };
    let mut errors = Vec::new();
    let mut err = |span: std::ops::Range<usize>, message: String| {
        let at = src.loc(&span);
        errors.push(ConfigError {
            file: file.to_owned(),
            line: at.line,
            column: at.column,
            message,
        });
    };
    let raw: RawFile = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            err(e.span().unwrap_or(0..0), e.message().to_owned());
            return Err(errors);
        }
    };
    let mut s = Settings::default();
    let positive = |v: &Spanned<u32>, key: &str, err: &mut dyn FnMut(_, String)| {
        NonZeroU32::new(*v.get_ref()).or_else(|| {
            err(v.span(), format!("{key}: must be at least 1"));
            None
        })
    };
    if let Some(v) = &raw.verdict.fail_after {
        s.fail_after = positive(v, "fail_after", &mut err).unwrap_or(s.fail_after);
    }
    if let Some(v) = &raw.verdict.recover_after {
        s.recover_after = positive(v, "recover_after", &mut err).unwrap_or(s.recover_after);
    }
    if let Some(v) = &raw.verdict.stale_intervals {
        if v.get_ref().is_finite() && *v.get_ref() >= 1.0 && *v.get_ref() <= 100.0 {
            s.stale_intervals = *v.get_ref();
        } else {
            err(
                v.span(),
                "stale_intervals: expected a number from 1 to 100".into(),
            );
        }
    }
    if let Some(v) = &raw.flapping.changes {
        s.flap_changes = *v.get_ref();
        if s.flap_changes < 2 {
            err(v.span(), "changes: must be at least 2 (a check that goes down and comes back once is not flapping)".into());
        }
    }
    let mut dur = |v: &Option<Spanned<String>>, key: &str, out: &mut Duration| {
        if let Some(v) = v {
            match humantime::parse_duration(v.get_ref()) {
                Ok(d) if !d.is_zero() => *out = d,
                Ok(_) => err(v.span(), format!("{key}: must be longer than zero")),
                Err(e) => err(
                    v.span(),
                    format!("{key}: invalid duration {:?}: {e}", v.get_ref()),
                ),
            }
        }
    };
    dur(&raw.flapping.window, "window", &mut s.flap_window);
    dur(&raw.retention.results, "results", &mut s.results_retention);
    dur(
        &raw.retention.incidents,
        "incidents",
        &mut s.history_retention,
    );
    let mut links = LinkSettings::default();
    dur(&raw.links.ttl, "ttl", &mut links.ttl);
    if let Some(v) = &raw.retention.incidents
        && s.history_retention < MIN_HISTORY_RETENTION
    {
        err(v.span(), "incidents: must be at least 1d".into());
    }
    if let Some(u) = &raw.links.public_url {
        match url::Url::parse(u.get_ref()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                links.public_url = Some(url);
            }
            _ => err(
                u.span(),
                format!(
                    "public_url: expected an http:// or https:// URL, found {:?}",
                    u.get_ref()
                ),
            ),
        }
    }

    let mut auth = Auth::default();
    let mut names: BTreeMap<(&str, String), ()> = BTreeMap::new();
    let mut digests: Vec<[u8; 32]> = Vec::new();
    for (table, list, out) in [
        ("probe", &raw.probe, &mut auth.probes),
        ("api_token", &raw.api_token, &mut auth.api),
    ] {
        for c in list {
            let span = c.span();
            let c = c.get_ref();
            if c.name.get_ref().trim().is_empty() {
                err(c.name.span(), "name: must not be empty".into());
                continue;
            }
            if names
                .insert((table, c.name.get_ref().clone()), ())
                .is_some()
            {
                err(
                    c.name.span(),
                    format!("name: duplicate {table} name {:?}", c.name.get_ref()),
                );
                continue;
            }
            if let Some(r) = &c.region
                && r.get_ref().trim().is_empty()
            {
                err(r.span(), "region: must not be empty".into());
                continue;
            }
            let sources = [&c.token, &c.token_file, &c.token_env]
                .into_iter()
                .filter(|v| v.is_some())
                .count();
            if sources != 1 {
                err(
                    span,
                    format!(
                        "{table} {:?}: give exactly one of token_file, token_env or token",
                        c.name.get_ref()
                    ),
                );
                continue;
            }
            let token = if let Some(t) = &c.token {
                Ok((t.span(), t.get_ref().clone()))
            } else if let Some(f) = &c.token_file {
                let path = dir.join(f.get_ref());
                std::fs::read_to_string(&path)
                    .map(|t| (f.span(), t.trim().to_owned()))
                    .map_err(|e| {
                        (
                            f.span(),
                            format!("token_file: cannot read {}: {e}", path.display()),
                        )
                    })
            } else if let Some(v) = &c.token_env {
                std::env::var(v.get_ref())
                    .map(|t| (v.span(), t))
                    .map_err(|_| {
                        (
                            v.span(),
                            format!("token_env: environment variable {} is not set", v.get_ref()),
                        )
                    })
            } else {
                continue;
            };
            match token {
                Err((span, message)) => err(span, message),
                Ok((span, token)) => {
                    if token.chars().count() < MIN_TOKEN_LEN {
                        err(
                            span,
                            format!(
                                "token of {table} {:?}: shorter than {MIN_TOKEN_LEN} characters",
                                c.name.get_ref()
                            ),
                        );
                        continue;
                    }
                    let cred = Credential::new(
                        c.name.get_ref(),
                        c.region.as_ref().map(|r| r.get_ref().as_str()),
                        &token,
                    );
                    if digests.contains(&cred.digest) {
                        err(
                            span,
                            format!(
                                "token of {table} {:?}: the same token is used by another entry; give each its own",
                                c.name.get_ref()
                            ),
                        );
                        continue;
                    }
                    digests.push(cred.digest);
                    out.push(cred);
                }
            }
        }
    }
    if errors.is_empty() {
        Ok((auth, s, links))
    } else {
        Err(errors)
    }
}

/// The files the coordinator reads, with sizes and modification times: a
/// cheap change detector for hot reload.
pub fn fingerprint(dir: &Path) -> Vec<FileStamp> {
    let mut out = probe_config::toml_stamps(&dir.join("probes"));
    out.extend(probe_config::toml_stamps(&dir.join("alert-rules")));
    out.push(probe_config::file_stamp(dir.join(FILE)));
    out.sort();
    out
}
