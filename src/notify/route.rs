//! Routing: which contacts a notification goes to.
//!
//! A [`Route`] maps an incident to a [`Policy`] by matchers over its labels
//! (the check's labels, `check` and `kind`, plus `severity`, `rule`,
//! `rule_kind` and `receiver`); routes are tried in the order written and
//! the first that matches wins. A policy is a list of escalation
//! [`Level`]s: level 0 is notified when the incident fires; if nobody
//! acknowledges within `ack_timeout`, the next level is notified, and so
//! on; after the last level, `repeat` (if set) re-notifies everyone
//! notified so far while the incident stays unacknowledged.
//!
//! A level names teams and contacts:
//!
//! - `on_duty`: the team on duty at that instant (follow-the-sun, see
//!   [`crate::oncall`]), after overrides;
//! - `next_on_duty`: the next team to come on duty after the current one;
//! - `NAME`: that team, on duty or not;
//! - `label:KEY`: the team named by the check's label `KEY` (the owning
//!   team), or the fallback team when no team has that name;
//! - contacts: `CHANNEL` or `CHANNEL:ADDRESS` (`email:bob@example.com`).
//!
//! `channels` keeps only the contacts on those channels (a ticket goes to
//! the team's email, not its pager); `during_shift` holds a delivery until
//! the team's next shift when it is off duty (tickets during working
//! hours). An [`Override`] replaces a team by another team or by named
//! contacts for a window (a holiday swap); shifts keep their hours.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::coordinator::rules::Matcher;
use crate::oncall::OnCall;

/// A contact reference: `CHANNEL` or `CHANNEL:ADDRESS`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Contact {
    pub channel: String,
    pub address: Option<String>,
}

impl Contact {
    /// Parses `CHANNEL` or `CHANNEL:ADDRESS` (both parts non-empty).
    pub fn parse(s: &str) -> Result<Contact, String> {
        let (channel, address) = match s.split_once(':') {
            Some((c, a)) => (c.trim(), Some(a.trim())),
            None => (s.trim(), None),
        };
        if channel.is_empty() {
            return Err(format!(
                "invalid contact {s:?}: expected CHANNEL or CHANNEL:ADDRESS"
            ));
        }
        if address.is_some_and(str::is_empty) {
            return Err(format!(
                "invalid contact {s:?}: empty address after `{channel}:`"
            ));
        }
        Ok(Contact {
            channel: channel.to_owned(),
            address: address.map(str::to_owned),
        })
    }
}

impl fmt::Display for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.address {
            Some(a) => write!(f, "{}:{a}", self.channel),
            None => f.write_str(&self.channel),
        }
    }
}

/// A team reference in a level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TeamRef {
    OnDuty,
    NextOnDuty,
    Named(String),
    /// The team named by this check label.
    Label(String),
}

impl TeamRef {
    pub fn parse(s: &str) -> TeamRef {
        match s {
            "on_duty" => TeamRef::OnDuty,
            "next_on_duty" => TeamRef::NextOnDuty,
            _ => match s.strip_prefix("label:") {
                Some(l) => TeamRef::Label(l.to_owned()),
                None => TeamRef::Named(s.to_owned()),
            },
        }
    }
}

/// One escalation level.
#[derive(Clone, Debug, PartialEq)]
pub struct Level {
    pub teams: Vec<TeamRef>,
    pub contacts: Vec<Contact>,
    /// Keep only contacts on these channels (empty: all).
    pub channels: Vec<String>,
    /// Hold deliveries to an off-duty team until its next shift.
    pub during_shift: bool,
}

/// A `[[policy]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub name: String,
    /// Escalate to the next level when unacknowledged this long.
    pub ack_timeout: Duration,
    /// After the last level: re-notify everyone notified this often while
    /// unacknowledged (`None`: no repeat).
    pub repeat: Option<Duration>,
    /// At least one.
    pub levels: Vec<Level>,
}

/// A `[[route]]`.
#[derive(Clone, Debug)]
pub struct Route {
    pub matchers: Vec<Matcher>,
    pub policy: String,
}

impl Route {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// A team replaced for a window (stored; made through the API or CLI).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Override {
    pub id: i64,
    /// The team replaced.
    pub team: String,
    /// The team that takes its pages, if any.
    pub by_team: Option<String>,
    /// Contacts that take its pages (with or instead of `by_team`).
    pub contacts: Vec<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub author: String,
    pub comment: String,
    pub created_at: DateTime<Utc>,
    /// Set when ended early.
    pub expired_at: Option<DateTime<Utc>>,
}

impl Override {
    /// Whether it applies at `t`.
    pub fn active(&self, t: DateTime<Utc>) -> bool {
        self.starts_at <= t && t < self.ends_at && self.expired_at.is_none_or(|e| t < e)
    }
}

/// Where one delivery goes, and from when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub contact: Contact,
    /// Hold until then (`during_shift` with the team off duty).
    pub not_before: Option<DateTime<Utc>>,
    /// The team it was reached through, for the timeline.
    pub team: Option<String>,
}

/// Everything routing reads, at one instant.
pub struct Router<'a> {
    pub routes: &'a [Route],
    pub policies: &'a [Policy],
    pub oncall: Option<&'a OnCall>,
    pub overrides: &'a [Override],
}

impl Router<'_> {
    /// The policy of the first route matching `labels`.
    pub fn policy_for(&self, labels: &BTreeMap<String, String>) -> Option<&Policy> {
        let route = self.routes.iter().find(|r| r.matches(labels))?;
        self.policies.iter().find(|p| p.name == route.policy)
    }

    /// The contacts of `level` at `now`, without duplicates, in order.
    pub fn targets(
        &self,
        level: &Level,
        labels: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Vec<Target> {
        let mut out: Vec<Target> = Vec::new();
        let push = |t: Target, out: &mut Vec<Target>| {
            if (level.channels.is_empty() || level.channels.contains(&t.contact.channel))
                && !out.iter().any(|o| o.contact == t.contact)
            {
                out.push(t);
            }
        };
        for team_ref in &level.teams {
            let Some(name) = self.team_name(team_ref, labels, now) else {
                continue;
            };
            let not_before = if level.during_shift {
                self.next_shift(&name, now)
            } else {
                None
            };
            for contact in self.team_contacts(&name, now) {
                push(
                    Target {
                        contact,
                        not_before,
                        team: Some(name.clone()),
                    },
                    &mut out,
                );
            }
        }
        for c in &level.contacts {
            push(
                Target {
                    contact: c.clone(),
                    not_before: None,
                    team: None,
                },
                &mut out,
            );
        }
        out
    }

    /// The team a reference means at `now`.
    pub fn team_name(
        &self,
        r: &TeamRef,
        labels: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let oncall = self.oncall?;
        match r {
            TeamRef::OnDuty => Some(oncall.on_duty(now).team),
            TeamRef::NextOnDuty => {
                let current = oncall.on_duty(now).team;
                oncall
                    .coverage(now, now + chrono::Duration::days(8))
                    .into_iter()
                    .find(|s| s.team != current)
                    .map(|s| s.team)
                    .or(Some(current))
            }
            TeamRef::Named(n) => Some(n.clone()),
            TeamRef::Label(l) => match labels.get(l) {
                Some(v) if oncall.team(v).is_some() => Some(v.clone()),
                _ => Some(oncall.fallback.clone()),
            },
        }
    }

    /// A team's contacts at `now`, after overrides.
    pub fn team_contacts(&self, name: &str, now: DateTime<Utc>) -> Vec<Contact> {
        let team_contacts = |n: &str| -> Vec<Contact> {
            self.oncall
                .and_then(|o| o.team(n))
                .map(|t| {
                    t.contacts
                        .iter()
                        .filter_map(|c| Contact::parse(c).ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        // The latest override that applies wins.
        let active = self
            .overrides
            .iter()
            .filter(|o| o.team == name && o.active(now))
            .max_by_key(|o| (o.created_at, o.id));
        match active {
            None => team_contacts(name),
            Some(o) => {
                let mut out = o.by_team.as_deref().map(team_contacts).unwrap_or_default();
                out.extend(o.contacts.iter().filter_map(|c| Contact::parse(c).ok()));
                out
            }
        }
    }

    /// When `name`'s next shift starts, if it is off duty at `now` (`None`
    /// when on duty, or when it has no shifts).
    pub fn next_shift(&self, name: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let team = self.oncall?.team(name)?;
        if team.shifts.is_empty() || team.covers(now) {
            return None;
        }
        team.shifts
            .iter()
            .flat_map(|s| s.occurrences(now, now + chrono::Duration::days(8)))
            .map(|(start, _)| start)
            .filter(|&s| s >= now)
            .min()
    }
}
