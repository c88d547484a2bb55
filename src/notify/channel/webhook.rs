//! HTTP channels: Slack and Microsoft Teams incoming webhooks, PagerDuty
//! Events API v2 and the generic JSON webhook. Placeholder: filled in by
//! the webhook channel work.

use std::time::Duration;

use super::Secret;
use crate::notify::{Outgoing, SendOutcome};

#[derive(Clone, Debug, PartialEq)]
pub struct SlackSpec {
    pub url: Secret,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TeamsSpec {
    pub url: Secret,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PagerDutySpec {
    pub routing_key: Secret,
    /// Default `https://events.pagerduty.com/v2/enqueue`.
    pub url: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WebhookSpec {
    pub url: Secret,
    /// HMAC-SHA256 key for the signature header; `None`: unsigned.
    pub secret: Option<Secret>,
}

pub struct HttpSender {}

impl HttpSender {
    pub fn new(_timeout: Duration) -> Result<HttpSender, String> {
        Ok(HttpSender {})
    }

    pub async fn slack(&self, _s: &SlackSpec, _out: &Outgoing) -> SendOutcome {
        SendOutcome::Failed("not implemented yet".into())
    }

    pub async fn teams(&self, _s: &TeamsSpec, _out: &Outgoing) -> SendOutcome {
        SendOutcome::Failed("not implemented yet".into())
    }

    pub async fn pagerduty(&self, _s: &PagerDutySpec, _out: &Outgoing) -> SendOutcome {
        SendOutcome::Failed("not implemented yet".into())
    }

    pub async fn webhook(&self, _s: &WebhookSpec, _out: &Outgoing) -> SendOutcome {
        SendOutcome::Failed("not implemented yet".into())
    }
}
