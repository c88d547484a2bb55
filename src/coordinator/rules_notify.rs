//! `[[channel]]`, `[[route]]` and `[[policy]]` tables of `alert-rules/`,
//! and the cross-checks of every contact, team and policy reference
//! (each error at the reference's own file:line:column).

use std::path::Path;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::{Loader, Src, Value};
use crate::notify::channel::email::{EmailSpec, SmtpTls};
use crate::notify::channel::webhook::{PagerDutySpec, SlackSpec, TeamsSpec, WebhookSpec};
use crate::notify::channel::{ChannelKind, ChannelSpec, Secret};
use crate::notify::route::{Contact, Level, Policy, Route, TeamRef};
use crate::probe::config::{Loc, type_name};

pub(super) const CHANNEL_COMMON: &[&str] = &[
    "name",
    "type",
    "timeout",
    "group_wait",
    "group_interval",
    "max_in_flight",
    "expire_after",
];
const EMAIL_KEYS: &[&str] = &[
    "smtp_host",
    "smtp_port",
    "tls",
    "username",
    "password_env",
    "password_file",
    "from",
    "to",
    "ca_file",
];
const URL_KEYS: &[&str] = &["url", "url_env", "url_file"];
const PAGERDUTY_KEYS: &[&str] = &["routing_key_env", "routing_key_file", "url"];
const WEBHOOK_KEYS: &[&str] = &["url", "url_env", "url_file", "secret_env", "secret_file"];
const CHANNEL_TYPES: &[&str] = &["email", "slack", "teams", "pagerduty", "webhook", "console"];
const ROUTE_KEYS: &[&str] = &["match", "policy"];
const POLICY_KEYS: &[&str] = &["name", "ack_timeout", "repeat", "level"];
const LEVEL_KEYS: &[&str] = &["teams", "contacts", "channels", "during_shift"];

pub(super) const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// A reference checked once every file is read.
pub(super) enum Ref {
    Contact(Loc, String),
    Team(Loc, String),
    Policy(Loc, String),
    Channel(Loc, String),
}

impl Loader {
    pub(super) fn channel(&mut self, src: &Src<'_>, header: &Value<'_>, t: &DeTable<'_>) {
        let at = src.loc(&header.span());
        let errors_before = self.errors.len();
        let name = self
            .required(
                at,
                t,
                "channel",
                "name",
                "unique among channels; what contacts refer to",
            )
            .and_then(|v| self.unique_name(src, "channel", v));
        let ty = self
            .required(at, t, "channel", "type", &CHANNEL_TYPES.join(" | "))
            .and_then(|v| {
                self.string(src, "type", v)
                    .map(|s| (s.to_owned(), src.loc(&v.span())))
            });
        let Some((ty, ty_at)) = ty else {
            return;
        };
        let own: &[&str] = match ty.as_str() {
            "email" => EMAIL_KEYS,
            "slack" | "teams" => URL_KEYS,
            "pagerduty" => PAGERDUTY_KEYS,
            "webhook" => WEBHOOK_KEYS,
            "console" => &[],
            other => {
                self.error(
                    ty_at,
                    format!(
                        "type: unknown channel type {other:?}, expected one of {}",
                        CHANNEL_TYPES.join(", ")
                    ),
                );
                return;
            }
        };
        let known: Vec<&str> = CHANNEL_COMMON.iter().chain(own).copied().collect();
        self.unknown_keys(src, t, &known);

        let timeout = self.opt_duration(src, t, "timeout", Duration::from_secs(10));
        if timeout.is_zero() {
            self.error(at, "timeout: must be more than 0s");
        }
        let group_wait = self.opt_duration(src, t, "group_wait", Duration::ZERO);
        let group_interval = self.opt_duration(src, t, "group_interval", Duration::ZERO);
        let expire_after =
            self.opt_duration(src, t, "expire_after", Duration::from_secs(12 * 3600));
        let max_in_flight = match t.get("max_in_flight") {
            None => 4,
            Some(v) => match v.get_ref() {
                DeValue::Integer(i) => match i.as_str().replace('_', "").parse::<usize>() {
                    Ok(n) if (1..=256).contains(&n) => n,
                    _ => {
                        self.error(src.loc(&v.span()), "max_in_flight: expected 1 to 256");
                        4
                    }
                },
                other => {
                    self.error(
                        src.loc(&v.span()),
                        format!(
                            "max_in_flight: expected an integer, found {}",
                            type_name(other)
                        ),
                    );
                    4
                }
            },
        };

        let kind = match ty.as_str() {
            "email" => self.email(src, at, t).map(ChannelKind::Email),
            "slack" => self
                .secret(src, at, t, "url", true)
                .flatten()
                .map(|url| ChannelKind::Slack(SlackSpec { url })),
            "teams" => self
                .secret(src, at, t, "url", true)
                .flatten()
                .map(|url| ChannelKind::Teams(TeamsSpec { url })),
            "pagerduty" => {
                let key = self.secret(src, at, t, "routing_key", false).flatten();
                let url = match t.get("url") {
                    Some(v) => self.http_url(src, "url", v),
                    None => Some(PAGERDUTY_URL.to_owned()),
                };
                match (key, url) {
                    (Some(routing_key), Some(url)) => {
                        Some(ChannelKind::PagerDuty(PagerDutySpec { routing_key, url }))
                    }
                    _ => None,
                }
            }
            "webhook" => {
                let url = self.secret(src, at, t, "url", true).flatten();
                let secret = self.optional_secret(src, t, "secret");
                url.map(|url| ChannelKind::Webhook(WebhookSpec { url, secret }))
            }
            _ => Some(ChannelKind::Console),
        };
        if self.errors.len() != errors_before {
            return;
        }
        let (Some(name), Some(kind)) = (name, kind) else {
            return;
        };
        self.channels.push((
            at,
            ChannelSpec {
                name,
                kind,
                timeout,
                group_wait,
                group_interval,
                max_in_flight,
                expire_after,
            },
        ));
    }

    fn email(&mut self, src: &Src<'_>, at: Loc, t: &DeTable<'_>) -> Option<EmailSpec> {
        let host = self
            .required(at, t, "channel", "smtp_host", "the SMTP server's name")
            .and_then(|v| self.non_empty(src, "smtp_host", v));
        let tls = match t.get("tls") {
            None => Some(SmtpTls::StartTls),
            Some(v) => match self.string(src, "tls", v) {
                Some("starttls") => Some(SmtpTls::StartTls),
                Some("tls") => Some(SmtpTls::Implicit),
                Some("none") => Some(SmtpTls::None),
                Some(other) => {
                    self.error(
                        src.loc(&v.span()),
                        format!("tls: expected \"starttls\", \"tls\" or \"none\", found {other:?}"),
                    );
                    None
                }
                None => None,
            },
        }?;
        let port = match t.get("smtp_port") {
            None => match tls {
                SmtpTls::Implicit => 465,
                SmtpTls::StartTls => 587,
                SmtpTls::None => 25,
            },
            Some(v) => match v.get_ref() {
                DeValue::Integer(i) => match i.as_str().replace('_', "").parse::<u16>() {
                    Ok(p) if p > 0 => p,
                    _ => {
                        self.error(src.loc(&v.span()), "smtp_port: expected 1 to 65535");
                        return None;
                    }
                },
                other => {
                    self.error(
                        src.loc(&v.span()),
                        format!("smtp_port: expected an integer, found {}", type_name(other)),
                    );
                    return None;
                }
            },
        };
        let username = t
            .get("username")
            .and_then(|v| self.non_empty(src, "username", v));
        let password = self.optional_secret(src, t, "password");
        if username.is_some() != password.is_some() {
            self.error(
                at,
                "channel: `username` and `password_env`/`password_file` go together",
            );
        }
        let from = self
            .required(
                at,
                t,
                "channel",
                "from",
                "the sender, e.g. \"varde <varde@example.com>\"",
            )
            .and_then(|v| {
                let s = self.non_empty(src, "from", v)?;
                self.mailbox(src, "from", v, &s)
            });
        let to = match t.get("to") {
            None => Vec::new(),
            Some(v) => {
                let list = self.located_list(src, "to", v);
                list.into_iter()
                    .filter_map(|(loc, s)| match s.parse::<lettre::message::Mailbox>() {
                        Ok(_) => Some(s),
                        Err(e) => {
                            self.error(loc, format!("to: invalid address {s:?}: {e}"));
                            None
                        }
                    })
                    .collect()
            }
        };
        let ca_file = t
            .get("ca_file")
            .and_then(|v| self.non_empty(src, "ca_file", v))
            .map(|f| relative(src.path, &f));
        if let Some(f) = &ca_file
            && let Err(e) = std::fs::metadata(f)
        {
            self.error(at, format!("ca_file: cannot read {}: {e}", f.display()));
        }
        Some(EmailSpec {
            host: host?,
            port,
            tls,
            username,
            password,
            from: from?,
            to,
            ca_file,
        })
    }

    /// `{base}`, `{base}_env` or `{base}_file` (exactly one; the inline
    /// form only where `inline` is allowed). `None` on error; `Some(None)`
    /// never happens for a required secret (an error is reported).
    fn secret(
        &mut self,
        src: &Src<'_>,
        at: Loc,
        t: &DeTable<'_>,
        base: &str,
        inline: bool,
    ) -> Option<Option<Secret>> {
        let keys: Vec<String> = if inline {
            vec![
                base.to_owned(),
                format!("{base}_env"),
                format!("{base}_file"),
            ]
        } else {
            vec![format!("{base}_env"), format!("{base}_file")]
        };
        let given: Vec<&String> = keys
            .iter()
            .filter(|k| t.get(k.as_str()).is_some())
            .collect();
        if given.len() != 1 {
            let list = keys
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            self.error(at, format!("channel: give exactly one of {list}"));
            return None;
        }
        let s = self.read_secret(src, t, given[0])?;
        if base == "url" && !(s.starts_with("http://") || s.starts_with("https://")) {
            let v = t.get(given[0].as_str())?;
            // Never echo the value: webhook URLs carry tokens.
            self.error(
                src.loc(&v.span()),
                format!("{}: expected an http:// or https:// URL", given[0]),
            );
            return None;
        }
        Some(Some(Secret::new(s)))
    }

    /// `{base}_env` or `{base}_file`, if either is given.
    fn optional_secret(&mut self, src: &Src<'_>, t: &DeTable<'_>, base: &str) -> Option<Secret> {
        let env = format!("{base}_env");
        let file = format!("{base}_file");
        match (t.get(env.as_str()), t.get(file.as_str())) {
            (None, None) => None,
            (Some(_), Some(v)) => {
                self.error(
                    src.loc(&v.span()),
                    format!("{file}: give one of `{env}` or `{file}`, not both"),
                );
                None
            }
            (Some(_), None) => self.read_secret(src, t, &env).map(Secret::new),
            (None, Some(_)) => self.read_secret(src, t, &file).map(Secret::new),
        }
    }

    /// Reads the value of `key` (inline, `*_env` or `*_file`), trimmed.
    fn read_secret(&mut self, src: &Src<'_>, t: &DeTable<'_>, key: &str) -> Option<String> {
        let v = t.get(key)?;
        let at = src.loc(&v.span());
        let named = self.non_empty(src, key, v)?;
        let value = if key.ends_with("_env") {
            match std::env::var(&named) {
                Ok(s) => s,
                Err(_) => {
                    self.error(
                        at,
                        format!("{key}: environment variable {named} is not set"),
                    );
                    return None;
                }
            }
        } else if key.ends_with("_file") {
            let path = relative(src.path, &named);
            match std::fs::read_to_string(&path) {
                Ok(s) => s,
                Err(e) => {
                    self.error(at, format!("{key}: cannot read {}: {e}", path.display()));
                    return None;
                }
            }
        } else {
            named
        };
        let value = value.trim().to_owned();
        if value.is_empty() {
            self.error(at, format!("{key}: the value is empty"));
            return None;
        }
        Some(value)
    }

    fn mailbox(&mut self, src: &Src<'_>, key: &str, v: &Value<'_>, s: &str) -> Option<String> {
        match s.parse::<lettre::message::Mailbox>() {
            Ok(_) => Some(s.to_owned()),
            Err(e) => {
                self.error(
                    src.loc(&v.span()),
                    format!(
                        "{key}: invalid address {s:?}: {e} (e.g. \"varde <varde@example.com>\")"
                    ),
                );
                None
            }
        }
    }

    fn http_url(&mut self, src: &Src<'_>, key: &str, v: &Value<'_>) -> Option<String> {
        let s = self.non_empty(src, key, v)?;
        match url::Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(s),
            _ => {
                self.error(
                    src.loc(&v.span()),
                    format!("{key}: expected an http:// or https:// URL"),
                );
                None
            }
        }
    }

    /// A list of non-empty strings, with where each was written.
    fn located_list(&mut self, src: &Src<'_>, key: &str, v: &Value<'_>) -> Vec<(Loc, String)> {
        let DeValue::Array(items) = v.get_ref() else {
            self.error(
                src.loc(&v.span()),
                format!(
                    "{key}: expected an array of strings, found {}",
                    type_name(v.get_ref())
                ),
            );
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|item| {
                self.non_empty(src, key, item)
                    .map(|s| (src.loc(&item.span()), s))
            })
            .collect()
    }

    /// Team contacts: parsed, and checked against the channels at the end.
    pub(super) fn contact_list(&mut self, src: &Src<'_>, key: &str, v: &Value<'_>) -> Vec<String> {
        let items = self.located_list(src, key, v);
        let mut out = Vec::new();
        for (at, s) in items {
            match Contact::parse(&s) {
                Ok(_) => {
                    self.refs.push(Ref::Contact(at, s.clone()));
                    out.push(s);
                }
                Err(e) => self.error(at, format!("{key}: {e}")),
            }
        }
        out
    }

    pub(super) fn route(&mut self, src: &Src<'_>, header: &Value<'_>, t: &DeTable<'_>) {
        let at = src.loc(&header.span());
        self.unknown_keys(src, t, ROUTE_KEYS);
        let matchers = match t.get("match") {
            None => Vec::new(),
            Some(v) => self.matchers(src, v),
        };
        let policy = self
            .required(at, t, "route", "policy", "the name of a [[policy]]")
            .and_then(|v| {
                let s = self.non_empty(src, "policy", v)?;
                self.refs.push(Ref::Policy(src.loc(&v.span()), s.clone()));
                Some(s)
            });
        if let Some(policy) = policy {
            self.routes.push(Route { matchers, policy });
        }
    }

    pub(super) fn policy(&mut self, src: &Src<'_>, header: &Value<'_>, t: &DeTable<'_>) {
        let at = src.loc(&header.span());
        let errors_before = self.errors.len();
        self.unknown_keys(src, t, POLICY_KEYS);
        let name = self
            .required(
                at,
                t,
                "policy",
                "name",
                "unique among policies; routes refer to it",
            )
            .and_then(|v| self.unique_name(src, "policy", v));
        let ack_timeout = self.opt_duration(src, t, "ack_timeout", DEFAULT_ACK_TIMEOUT);
        if ack_timeout < Duration::from_secs(1) {
            self.error(at, "ack_timeout: must be at least 1s");
        }
        let repeat = t.get("repeat").and_then(|v| {
            let d = self.duration(src, "repeat", v)?;
            if d < Duration::from_secs(60) {
                self.error(src.loc(&v.span()), "repeat: must be at least 1m");
                return None;
            }
            Some(d)
        });
        let mut levels = Vec::new();
        match t.get("level") {
            None => self.error(
                at,
                "policy: missing `level` (at least one [[policy.level]] with teams or contacts)",
            ),
            Some(v) => match v.get_ref() {
                DeValue::Array(items) if !items.is_empty() => {
                    for item in items.iter() {
                        match item.get_ref() {
                            DeValue::Table(lt) => {
                                if let Some(l) = self.level(src, item, lt) {
                                    levels.push(l);
                                }
                            }
                            other => self.error(
                                src.loc(&item.span()),
                                format!("level: expected a table, found {}", type_name(other)),
                            ),
                        }
                    }
                }
                other => self.error(
                    src.loc(&v.span()),
                    format!(
                        "level: expected a non-empty array of tables ([[policy.level]]), found {}",
                        type_name(other)
                    ),
                ),
            },
        }
        if self.errors.len() != errors_before {
            return;
        }
        if let Some(name) = name {
            self.policies.push(Policy {
                name,
                ack_timeout,
                repeat,
                levels,
            });
        }
    }

    fn level(&mut self, src: &Src<'_>, header: &Value<'_>, t: &DeTable<'_>) -> Option<Level> {
        let at = src.loc(&header.span());
        self.unknown_keys(src, t, LEVEL_KEYS);
        let teams: Vec<TeamRef> = match t.get("teams") {
            None => Vec::new(),
            Some(v) => self
                .located_list(src, "teams", v)
                .into_iter()
                .map(|(loc, s)| {
                    let r = TeamRef::parse(&s);
                    if let TeamRef::Named(n) = &r {
                        self.refs.push(Ref::Team(loc, n.clone()));
                    }
                    if matches!(&r, TeamRef::Label(l) if l.is_empty()) {
                        self.error(
                            loc,
                            "teams: `label:` needs a label name, e.g. \"label:team\"",
                        );
                    }
                    r
                })
                .collect(),
        };
        let contacts: Vec<Contact> = match t.get("contacts") {
            None => Vec::new(),
            Some(v) => self
                .contact_list(src, "contacts", v)
                .iter()
                .filter_map(|c| Contact::parse(c).ok())
                .collect(),
        };
        let channels: Vec<String> = match t.get("channels") {
            None => Vec::new(),
            Some(v) => self
                .located_list(src, "channels", v)
                .into_iter()
                .map(|(loc, s)| {
                    self.refs.push(Ref::Channel(loc, s.clone()));
                    s
                })
                .collect(),
        };
        let during_shift = match t.get("during_shift") {
            None => false,
            Some(v) => match v.get_ref() {
                DeValue::Boolean(b) => *b,
                other => {
                    self.error(
                        src.loc(&v.span()),
                        format!(
                            "during_shift: expected true or false, found {}",
                            type_name(other)
                        ),
                    );
                    false
                }
            },
        };
        if teams.is_empty() && contacts.is_empty() {
            self.error(
                at,
                "level: give `teams` (on_duty, next_on_duty, a team name or label:KEY) or `contacts`",
            );
            return None;
        }
        Some(Level {
            teams,
            contacts,
            channels,
            during_shift,
        })
    }

    /// Checks every reference against what was defined, once all files are
    /// read.
    pub(super) fn finish_refs(&mut self, teams: &[String]) {
        // Every channel written, even one with errors of its own (so its
        // references are not reported too); whether it takes an address is
        // known for the valid ones.
        let mut channels: Vec<(String, bool)> = self
            .names
            .keys()
            .filter(|(kind, _)| *kind == "channel")
            .map(|(_, n)| {
                let addr = self
                    .channels
                    .iter()
                    .find(|(_, c)| c.name == *n)
                    .is_none_or(|(_, c)| c.kind.takes_address());
                (n.clone(), addr)
            })
            .collect();
        channels.sort();
        let email_channels: Vec<String> = self
            .channels
            .iter()
            .filter(|(_, c)| matches!(c.kind, ChannelKind::Email(_)))
            .map(|(_, c)| c.name.clone())
            .collect();
        let policies: Vec<String> = self.policies.iter().map(|p| p.name.clone()).collect();
        let channel_list = || {
            if channels.is_empty() {
                "no [[channel]] is defined".to_owned()
            } else {
                format!(
                    "channels: {}",
                    channels
                        .iter()
                        .map(|(n, _)| format!("{n:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        };
        for r in std::mem::take(&mut self.refs) {
            match r {
                Ref::Contact(at, s) => {
                    let Ok(c) = Contact::parse(&s) else { continue };
                    match channels.iter().find(|(n, _)| *n == c.channel) {
                        None => self.error(
                            at,
                            format!(
                                "contact {s:?}: unknown channel {:?} ({})",
                                c.channel,
                                channel_list()
                            ),
                        ),
                        Some((_, false)) if c.address.is_some() => self.error(
                            at,
                            format!(
                                "contact {s:?}: channel {:?} takes no address (only email and slack channels do); write {:?}",
                                c.channel, c.channel
                            ),
                        ),
                        Some(_) => {
                            if let Some(addr) = &c.address
                                && email_channels.contains(&c.channel)
                                && let Err(e) = addr.parse::<lettre::Address>()
                            {
                                self.error(
                                    at,
                                    format!("contact {s:?}: invalid email address {addr:?}: {e}"),
                                );
                            }
                        }
                    }
                }
                Ref::Channel(at, s) => {
                    if !channels.iter().any(|(n, _)| *n == s) {
                        self.error(
                            at,
                            format!("channels: unknown channel {s:?} ({})", channel_list()),
                        );
                    }
                }
                Ref::Team(at, s) => {
                    if teams.is_empty() {
                        self.error(
                            at,
                            format!("teams: unknown team {s:?} (no [[team]] is defined)"),
                        );
                    } else if !teams.contains(&s) {
                        self.error(at, format!("teams: {}", super::unknown_team(&s, teams)));
                    }
                }
                Ref::Policy(at, s) => {
                    if !policies.contains(&s) {
                        let list = if policies.is_empty() {
                            "no [[policy]] is defined".to_owned()
                        } else {
                            format!("policies: {}", policies.join(", "))
                        };
                        self.error(at, format!("policy: unknown policy {s:?} ({list})"));
                    }
                }
            }
        }
    }
}

/// `name` relative to the directory of the file that names it.
fn relative(file: &Path, name: &str) -> std::path::PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        file.parent().unwrap_or(Path::new("")).join(p)
    }
}
