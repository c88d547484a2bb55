//! Channels: where messages go. A channel is declared once in
//! `alert-rules/*.toml` as a `[[channel]]` table ([`ChannelSpec`]) and
//! referenced by contacts (`"NAME"` or `"NAME:ADDRESS"`) in teams, policies
//! and overrides. Secrets (webhook URLs, routing keys, passwords, HMAC
//! keys) come from `*_env` or `*_file` keys and live in a [`Secret`], which
//! never prints.

pub mod email;
pub mod webhook;

use std::fmt;
use std::time::Duration;

use super::{Outgoing, SendOutcome};

/// A secret value read from the environment or a file. `Debug` and
/// `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One `[[channel]]`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelSpec {
    /// Unique among channels; what contacts refer to.
    pub name: String,
    pub kind: ChannelKind,
    /// Per attempt (connect + send + response). Default 10s.
    pub timeout: Duration,
    /// Wait this long after the first notification for a contact before
    /// sending, so that others arriving meanwhile go in the same digest.
    /// Default 0s (no grouping: every notification is its own message).
    pub group_wait: Duration,
    /// After a message to a contact, hold the next wave this long.
    /// Default 0s.
    pub group_interval: Duration,
    /// Messages in flight to one contact at once. Default 4.
    pub max_in_flight: usize,
    /// Give up retrying a delivery this long after it was queued. Default 12h.
    pub expire_after: Duration,
}

/// Channel types and their settings.
#[derive(Clone, Debug, PartialEq)]
pub enum ChannelKind {
    Email(email::EmailSpec),
    Slack(webhook::SlackSpec),
    Teams(webhook::TeamsSpec),
    PagerDuty(webhook::PagerDutySpec),
    Webhook(webhook::WebhookSpec),
    /// One line per item on stdout (for `varde up`).
    Console,
}

impl ChannelKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            ChannelKind::Email(_) => "email",
            ChannelKind::Slack(_) => "slack",
            ChannelKind::Teams(_) => "teams",
            ChannelKind::PagerDuty(_) => "pagerduty",
            ChannelKind::Webhook(_) => "webhook",
            ChannelKind::Console => "console",
        }
    }

    /// Whether a contact of this channel may carry an address
    /// (`email:bob@example.com`, `slack:#ops`).
    pub fn takes_address(&self) -> bool {
        matches!(self, ChannelKind::Email(_) | ChannelKind::Slack(_))
    }

    /// Whether several items may go out as one digest message. PagerDuty
    /// events are one per incident (each has its own dedup_key).
    pub fn groups(&self) -> bool {
        !matches!(self, ChannelKind::PagerDuty(_))
    }
}

/// A channel ready to send: its spec and its client (SMTP transport, HTTP
/// client), built once per configuration.
pub struct Channel {
    pub spec: ChannelSpec,
    sender: Sender,
}

enum Sender {
    /// Boxed: a mailer holds its TLS settings, credentials and addresses.
    Email(Box<email::Mailer>),
    Http(webhook::HttpSender),
    Console,
}

impl Channel {
    /// Builds the client for `spec`. Fails on settings only detectable
    /// here (an unreadable CA file, an invalid URL).
    pub fn new(spec: ChannelSpec) -> Result<Channel, String> {
        let sender = match &spec.kind {
            ChannelKind::Email(e) => Sender::Email(Box::new(email::Mailer::new(e, spec.timeout)?)),
            ChannelKind::Console => Sender::Console,
            _ => Sender::Http(webhook::HttpSender::new(spec.timeout)?),
        };
        Ok(Channel { spec, sender })
    }

    /// Sends one message; never panics, never logs a secret.
    pub async fn send(&self, out: &Outgoing) -> SendOutcome {
        match (&self.sender, &self.spec.kind) {
            (Sender::Email(m), _) => m.send(out).await,
            (Sender::Console, _) => {
                for item in &out.items {
                    println!("{}", console_line(item));
                }
                SendOutcome::Delivered
            }
            (Sender::Http(h), ChannelKind::Slack(s)) => h.slack(s, out).await,
            (Sender::Http(h), ChannelKind::Teams(t)) => h.teams(t, out).await,
            (Sender::Http(h), ChannelKind::PagerDuty(p)) => h.pagerduty(p, out).await,
            (Sender::Http(h), ChannelKind::Webhook(w)) => h.webhook(w, out).await,
            (Sender::Http(_), _) => SendOutcome::Failed("channel misconfigured".into()),
        }
    }
}

/// `[FIRING] api-health down in 3/3 regions — incident 12 (api-down, page)`
pub fn console_line(item: &super::Item) -> String {
    let a = &item.alert;
    let mut line = format!(
        "[{}] {} — incident {} ({}, {})",
        item.kind.tag(),
        a.headline(),
        a.incident,
        a.rule,
        a.severity
    );
    if let Some(r) = a.reason() {
        line.push_str(&format!(": {r}"));
    }
    if let Some(by) = &item.acknowledged_by {
        line.push_str(&format!(" by {by}"));
    }
    line
}
