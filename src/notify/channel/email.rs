//! Email over SMTP (lettre, rustls only). Placeholder: filled in by the
//! email channel work.

use std::time::Duration;

use super::Secret;
use crate::notify::{Outgoing, SendOutcome};

/// How to reach the SMTP server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP, upgraded with STARTTLS (required).
    StartTls,
    /// TLS from the first byte (SMTPS, port 465).
    Implicit,
    /// No TLS at all (only for a relay on localhost).
    None,
}

/// A `[[channel]]` with `type = "email"`.
#[derive(Clone, Debug, PartialEq)]
pub struct EmailSpec {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `Name <addr>` or `addr`.
    pub from: String,
    /// Default recipients (a contact's address replaces them).
    pub to: Vec<String>,
    /// Extra trust anchors (PEM), for a private CA.
    pub ca_file: Option<std::path::PathBuf>,
}

pub struct Mailer {}

impl Mailer {
    pub fn new(_spec: &EmailSpec, _timeout: Duration) -> Result<Mailer, String> {
        Ok(Mailer {})
    }

    pub async fn send(&self, _out: &Outgoing) -> SendOutcome {
        SendOutcome::Failed("email is not implemented yet".into())
    }
}
