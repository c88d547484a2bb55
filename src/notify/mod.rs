//! Delivery of notifications: from the coordinator's outbox to people.
//!
//! The incident engine writes one *intent* per notification into the
//! outbox (`firing`, `repeat`, `resolved`, `flapping`), in the same
//! transaction as the change that caused it. The [`dispatch`] worker turns
//! each intent into *deliveries*, one per contact, with routing
//! ([`route`]: severity and labels → a policy → on-call teams or named
//! contacts), escalation and grouping, and hands messages to a
//! [`channel`]: email, Slack, Microsoft Teams, PagerDuty, generic webhook
//! or console.
//!
//! This module holds the types every part shares: what a message says
//! ([`Alert`], [`Item`], [`Outgoing`]) and what sending it did
//! ([`SendOutcome`]).

pub mod channel;
pub mod dispatch;
pub mod links;
pub mod route;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why a message is sent. The engine's intent kinds plus what delivery
/// adds (escalation to the next level, acknowledgement).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// The incident started paging.
    Firing,
    /// Still firing and unacknowledged (rule `repeat` or policy `repeat`).
    Repeat,
    /// Not acknowledged in time: sent to the next escalation level.
    Escalation,
    /// Someone acknowledged it (sent to PagerDuty so its incident follows).
    Acknowledged,
    /// The check is flapping; the incident stays open until it settles.
    Flapping,
    /// It is over.
    Resolved,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Firing => "firing",
            MessageKind::Repeat => "repeat",
            MessageKind::Escalation => "escalation",
            MessageKind::Acknowledged => "acknowledged",
            MessageKind::Flapping => "flapping",
            MessageKind::Resolved => "resolved",
        }
    }

    /// The tag in subjects and titles: `FIRING`, `RESOLVED`, ...
    pub fn tag(self) -> &'static str {
        match self {
            MessageKind::Firing => "FIRING",
            MessageKind::Repeat => "FIRING",
            MessageKind::Escalation => "ESCALATED",
            MessageKind::Acknowledged => "ACKNOWLEDGED",
            MessageKind::Flapping => "FLAPPING",
            MessageKind::Resolved => "RESOLVED",
        }
    }

    pub fn parse(s: &str) -> Option<MessageKind> {
        Some(match s {
            "firing" => MessageKind::Firing,
            "repeat" => MessageKind::Repeat,
            "escalation" => MessageKind::Escalation,
            "acknowledged" => MessageKind::Acknowledged,
            "flapping" => MessageKind::Flapping,
            "resolved" => MessageKind::Resolved,
            _ => return None,
        })
    }
}

/// Regions behind a check's verdict when the notification was queued.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regions {
    #[serde(default)]
    pub down: Vec<String>,
    #[serde(default)]
    pub up: Vec<String>,
    #[serde(default)]
    pub stale: Vec<String>,
    #[serde(default)]
    pub unknown: Vec<String>,
}

/// What one region last saw of the check (for message bodies).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionView {
    pub success: bool,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: String,
    /// Phase name (resolve, connect, tls, processing, transfer) → seconds.
    #[serde(default)]
    pub phases: BTreeMap<String, f64>,
    #[serde(default)]
    pub duration_seconds: f64,
    pub started_at: DateTime<Utc>,
}

/// An incident as a notification describes it: the outbox payload the
/// engine wrote, typed. Unknown fields are ignored; missing optional ones
/// are empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The intent's kind as the engine wrote it.
    pub status: String,
    pub incident: i64,
    /// Rule + check (+ region): PagerDuty's dedup_key.
    pub fingerprint: String,
    pub rule: String,
    /// The rule's kind: down, latency, cert_expiry, probe_offline, degraded.
    pub kind: String,
    pub severity: String,
    pub receiver: String,
    /// Empty for probe_offline.
    #[serde(default)]
    pub check: String,
    /// The silent region of a probe_offline incident.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub regions: Option<Regions>,
    /// What the condition saw: reason, value, threshold, phase, region.
    #[serde(default)]
    pub detail: Option<serde_json::Value>,
    /// Per-region last result, when the engine knew it.
    #[serde(default)]
    pub views: BTreeMap<String, RegionView>,
    /// When the intent was queued.
    pub at: DateTime<Utc>,
}

impl Alert {
    /// Reads an outbox payload.
    pub fn from_payload(v: &serde_json::Value) -> Result<Alert, serde_json::Error> {
        Alert::deserialize(v)
    }

    /// The name the alert is about: the check, or `probes in REGION` for
    /// probe_offline.
    pub fn subject_name(&self) -> String {
        if self.check.is_empty() {
            match &self.region {
                Some(r) => format!("probes in {r}"),
                None => self.rule.clone(),
            }
        } else {
            self.check.clone()
        }
    }

    /// One line: `api-health down in 3/3 regions`, `api-health latency`,
    /// `probes in eu offline`, ...
    pub fn headline(&self) -> String {
        let name = self.subject_name();
        let what = match self.kind.as_str() {
            "down" | "degraded" => {
                let word = if self.kind == "down" {
                    "down"
                } else {
                    "degraded"
                };
                // Of the regions reporting: those without enough evidence
                // yet count, so a page fired by the first region to fail
                // reads "1/3", not "1/1".
                match &self.regions {
                    Some(r) if !r.down.is_empty() || !r.up.is_empty() => {
                        let reporting = r.down.len() + r.up.len() + r.unknown.len();
                        format!("{word} in {}/{reporting} regions", r.down.len())
                    }
                    _ => word.to_owned(),
                }
            }
            "probe_offline" => "offline".to_owned(),
            "latency" => "slow".to_owned(),
            "cert_expiry" => "certificate expiring".to_owned(),
            other => other.to_owned(),
        };
        format!("{name} {what}")
    }

    /// `detail.reason`, if the condition recorded one.
    pub fn reason(&self) -> Option<&str> {
        self.detail.as_ref()?.get("reason")?.as_str()
    }
}

/// One incident inside a message (a digest holds several).
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub kind: MessageKind,
    /// The delivery's idempotency key: `varde-<incident>-<kind>[-n]` plus
    /// the contact's suffix; unique per (notification, contact).
    pub key: String,
    pub alert: Alert,
    /// Signed acknowledge link (absent when no public URL is configured or
    /// the item is not a page).
    pub ack_url: Option<String>,
    /// Signed resolve link.
    pub resolve_url: Option<String>,
    /// Who acknowledged (for [`MessageKind::Acknowledged`]).
    pub acknowledged_by: Option<String>,
    /// The escalation level (0 = first notified).
    pub level: u32,
}

/// A message for one contact: one item, or a digest of several.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    /// The contact's address within its channel: an email recipient for
    /// email, a channel name for Slack; `None` to use the channel's own.
    pub address: Option<String>,
    /// The message's idempotency key: the item's key for a single item, a
    /// digest key (`varde-digest-<first delivery id>-<n>`) for several.
    /// Sent as `Idempotency-Key` / `Message-ID` / PagerDuty needs per-item
    /// dedup keys instead (the incident fingerprint).
    pub key: String,
    /// At least one.
    pub items: Vec<Item>,
}

/// What an attempt to send did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The receiver took it.
    Delivered,
    /// Worth trying again later (5xx, 429, timeout, connection error).
    Retry(String),
    /// Worth trying again, but not before the receiver asked: a 429 or
    /// 503 with a `Retry-After` header. The dispatcher waits the longer of
    /// this and its own backoff (at most an hour), within the expiry.
    RetryAfter(String, std::time::Duration),
    /// Cannot succeed (4xx other than 408/429, bad address): give up.
    Failed(String),
}
