//! Email over SMTP: lettre's SMTP client on tokio over a connection
//! resolved by hickory and opened by [`HostResolver`]; TLS by rustls only
//! (STARTTLS required, implicit TLS, or none for a relay on localhost).
//!
//! One message per [`Outgoing`]: a single incident, or a digest of several.
//! The `Message-ID` is derived from the idempotency key, so a message sent
//! twice after an ambiguous failure is recognisable as the same one.
//!
//! SMTP replies map onto [`SendOutcome`] by their class: 4xx and every
//! connection, TLS or timeout failure are worth retrying; 5xx replies and
//! addresses that do not parse are final.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::Secret;
use crate::notify::{Item, MessageKind, Outgoing, SendOutcome};
use crate::resolve::HostResolver;

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
    /// SMTP server name; also the name its certificate must carry.
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// Log in with `username` and `password` (both or neither).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `Name <addr>` or `addr`.
    pub from: String,
    /// Default recipients (a contact's address replaces them).
    pub to: Vec<String>,
    /// Extra trust anchors (PEM), for a private CA.
    pub ca_file: Option<PathBuf>,
}

/// An SMTP client for one email channel, built once per configuration.
/// Every [`Mailer::send`] opens its own connection: the server's name is
/// resolved by hickory (never the libc resolver), each address tried in
/// turn, then lettre speaks SMTP over the connected socket.
pub struct Mailer {
    host: String,
    port: u16,
    /// `host:port`, for failure reasons.
    server: String,
    tls: SmtpTls,
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
    resolver: HostResolver,
    username: Option<String>,
    /// Kept only to scrub it from failure reasons.
    password: Option<Secret>,
    from: Mailbox,
    to: Vec<Mailbox>,
    timeout: Duration,
}

/// What happens on the connection before the first SMTP command.
enum Security {
    None,
    /// STARTTLS, required: a server that does not offer it is a failure.
    StartTls(Box<TlsParameters>),
    /// TLS from the first byte, verified against `host`.
    Implicit(tokio_rustls::TlsConnector, ServerName<'static>),
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from.to_string())
            .field(
                "to",
                &self.to.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Mailer {
    /// Builds the client for `spec`. Fails on what can be checked before
    /// the first message: addresses that do not parse, an unreadable or
    /// invalid `ca_file`, a username without a password (or the reverse).
    /// `timeout` bounds each attempt (resolve, connect, TLS, login and send).
    pub fn new(spec: &EmailSpec, timeout: Duration) -> Result<Mailer, String> {
        if spec.host.trim().is_empty() {
            return Err("email: host is empty".into());
        }
        let from: Mailbox = spec
            .from
            .parse()
            .map_err(|e| format!("email: invalid from address {:?}: {e}", spec.from))?;
        let to = spec
            .to
            .iter()
            .map(|a| {
                a.parse::<Mailbox>()
                    .map_err(|e| format!("email: invalid to address {a:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let host = spec
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let security = match spec.tls {
            SmtpTls::None => Security::None,
            SmtpTls::StartTls => Security::StartTls(Box::new(tls_parameters(spec)?)),
            SmtpTls::Implicit => {
                let mut config = crate::probe::push::tls_config(spec.ca_file.as_deref())
                    .map_err(|e| format!("email: ca_file {e}"))?;
                config.alpn_protocols.clear();
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| format!("email: host {:?}: {e}", spec.host))?;
                Security::Implicit(
                    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
                    name,
                )
            }
        };
        let credentials = match (&spec.username, &spec.password) {
            (Some(user), Some(password)) => {
                Some(Credentials::new(user.clone(), password.expose().to_owned()))
            }
            (None, None) => None,
            (Some(_), None) => return Err("email: username given without a password".into()),
            (None, Some(_)) => return Err("email: password given without a username".into()),
        };

        Ok(Mailer {
            server: format!("{}:{}", spec.host, spec.port),
            host,
            port: spec.port,
            tls: spec.tls,
            security,
            credentials,
            hello: ClientId::default(),
            resolver: HostResolver::system(),
            username: spec.username.clone(),
            password: spec.password.clone(),
            from,
            to,
            timeout,
        })
    }

    /// Sends `out` as one message to `out.address` (or the channel's `to`).
    /// Never panics; the reason of a failure never holds the password.
    pub async fn send(&self, out: &Outgoing) -> SendOutcome {
        let message = match self.message(out) {
            Ok(m) => m,
            Err(reason) => return SendOutcome::Failed(reason),
        };
        let outcome = match tokio::time::timeout(self.timeout, self.deliver(&message)).await {
            Ok(Ok(mut conn)) => {
                // The server has taken the message: QUIT, best effort and
                // outside the attempt's deadline, so a server that stalls
                // after accepting cannot turn a delivery into a retry (and
                // a duplicate).
                // (At most the timeout again: the dispatcher gives a send
                // twice its channel's timeout before it gives up on it.)
                let grace = QUIT_GRACE.min(self.timeout);
                let _ = tokio::time::timeout(grace, conn.abort()).await;
                SendOutcome::Delivered
            }
            Ok(Err(Attempt::Connect(e))) => {
                SendOutcome::Retry(format!("SMTP {}: connect: {e}", self.server))
            }
            Ok(Err(Attempt::Smtp(e))) => self.classify(&e),
            Err(_) => SendOutcome::Retry(format!(
                "SMTP {}: no answer within {}",
                self.server,
                humantime::format_duration(self.timeout)
            )),
        };
        match outcome {
            SendOutcome::Retry(r) => SendOutcome::Retry(self.scrub(r)),
            SendOutcome::RetryAfter(r, after) => SendOutcome::RetryAfter(self.scrub(r), after),
            SendOutcome::Failed(r) => SendOutcome::Failed(self.scrub(r)),
            SendOutcome::Delivered => SendOutcome::Delivered,
        }
    }

    /// One SMTP session up to the server's acceptance of the message:
    /// connect, TLS as configured, EHLO, login, the message. The connection
    /// is returned for the QUIT.
    async fn deliver(&self, message: &Message) -> Result<AsyncSmtpConnection, Attempt> {
        let tcp = self
            .resolver
            .connect(&self.host, self.port, self.timeout)
            .await
            .map_err(Attempt::Connect)?;
        let stream: Box<dyn AsyncTokioStream> = match &self.security {
            Security::Implicit(connector, name) => Box::new(ImplicitTls(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| Attempt::Connect(tls_error(e)))?,
            )),
            _ => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(Attempt::Smtp)?;
        let result = async {
            if let Security::StartTls(params) = &self.security {
                conn.starttls((**params).clone(), &self.hello).await?;
            }
            if let Some(credentials) = &self.credentials {
                conn.auth(DEFAULT_MECHANISMS, credentials).await?;
            }
            conn.send(message.envelope(), &message.formatted()).await
        }
        .await;
        match result {
            Ok(_) => Ok(conn),
            // Dropped, not QUIT: lettre has already closed a connection whose
            // command failed, and a failed STARTTLS leaves no stream to write.
            Err(e) => Err(Attempt::Smtp(e)),
        }
    }

    /// The message for `out`, or why it cannot be built (a final failure).
    fn message(&self, out: &Outgoing) -> Result<Message, String> {
        if out.items.is_empty() {
            return Err("nothing to send: the message has no items".into());
        }
        let recipients = match &out.address {
            Some(a) => vec![
                a.parse::<Mailbox>()
                    .map_err(|e| format!("invalid recipient address {a:?}: {e}"))?,
            ],
            None => self.to.clone(),
        };
        if recipients.is_empty() {
            return Err("no recipient: the contact has no address and the channel no `to`".into());
        }

        let key = sanitize_key(&out.key);
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject(out))
            .message_id(Some(format!("<{key}@varde>")))
            .date_now()
            .header(ContentType::TEXT_PLAIN);
        for r in recipients {
            builder = builder.to(r);
        }
        if let Ok(name) = HeaderName::new_from_ascii("X-Varde-Idempotency-Key".to_owned()) {
            builder = builder.raw_header(HeaderValue::new(name, key));
        }
        builder
            .body(body(out))
            .map_err(|e| format!("cannot build the message: {e}"))
    }

    fn classify(&self, e: &lettre::transport::smtp::Error) -> SendOutcome {
        let reason = format!("SMTP {}: {}", self.server, error_chain(e));
        if e.is_permanent() {
            // 5xx: the server will not take it (unknown mailbox, bad login).
            SendOutcome::Failed(reason)
        } else if e.is_client() {
            // The server lacks something the channel requires (STARTTLS, a
            // login mechanism): retrying the same server will not help.
            SendOutcome::Failed(reason)
        } else {
            // 4xx, network, TLS, timeout, an unparsable reply.
            SendOutcome::Retry(reason)
        }
    }

    /// Removes the password from `reason`, should a server ever echo it.
    fn scrub(&self, reason: String) -> String {
        match &self.password {
            Some(p) if !p.expose().is_empty() && reason.contains(p.expose()) => {
                reason.replace(p.expose(), "<redacted>")
            }
            _ => reason,
        }
    }
}

/// How long the QUIT after an accepted message may take.
const QUIT_GRACE: Duration = Duration::from_secs(2);

/// Why an attempt failed: before SMTP (resolve, connect, implicit TLS)
/// or in it.
enum Attempt {
    Connect(std::io::Error),
    Smtp(lettre::transport::smtp::Error),
}

/// An implicit-TLS failure as one line: the rustls error when there is one
/// (tokio-rustls wraps it in an `io::Error`).
fn tls_error(e: std::io::Error) -> std::io::Error {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) => std::io::Error::new(e.kind(), format!("TLS error: {tls}")),
        None => std::io::Error::new(e.kind(), format!("TLS handshake: {e}")),
    }
}

/// A TLS stream lettre can speak SMTP over (for implicit TLS, where the
/// handshake happens before lettre sees the connection).
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

/// TLS settings: webpki roots plus the channel's `ca_file`, if any.
fn tls_parameters(spec: &EmailSpec) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(spec.host.clone());
    if let Some(path) = &spec.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("email: cannot read ca_file {}: {e}", path.display()))?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| format!("email: invalid ca_file {}: {e}", path.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build_rustls()
        .map_err(|e| format!("email: TLS settings for {}: {e}", spec.host))
}

/// The error and its sources, `: `-separated (lettre's Display stops at
/// the kind and code; the cause is what tells a TLS failure apart).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    // lettre repeats its kind when it wraps its own error
    // (`Connection error: Connection error: invalid peer certificate`).
    let mut parts: Vec<&str> = Vec::new();
    for part in s.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

/// Keeps the characters a Message-ID's left part may hold.
fn sanitize_key(key: &str) -> String {
    let k: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if k.is_empty() { "unkeyed".into() } else { k }
}

// === Subject and body ===

/// `[FIRING] api-health down in 3/3 regions` for one item;
/// `[varde] 3 notifications: 2 firing, 1 resolved` for a digest.
fn subject(out: &Outgoing) -> String {
    match out.items.as_slice() {
        [item] => format!("[{}] {}", item.kind.tag(), item.alert.headline()),
        items => {
            let mut counts: Vec<(&'static str, usize)> = Vec::new();
            for item in items {
                let tag = item.kind.tag();
                match counts.iter_mut().find(|(t, _)| *t == tag) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((tag, 1)),
                }
            }
            // Most urgent first, whatever order the items came in.
            counts.sort_by_key(|(tag, _)| tag_rank(tag));
            let parts: Vec<String> = counts
                .iter()
                .map(|(tag, n)| format!("{n} {}", tag.to_ascii_lowercase()))
                .collect();
            format!(
                "[varde] {} notifications: {}",
                items.len(),
                parts.join(", ")
            )
        }
    }
}

fn tag_rank(tag: &str) -> u8 {
    match tag {
        "ESCALATED" => 0,
        "FIRING" => 1,
        "FLAPPING" => 2,
        "ACKNOWLEDGED" => 3,
        "RESOLVED" => 4,
        _ => 5,
    }
}

/// The plain-text body: for a digest an index first, then every item in
/// full.
fn body(out: &Outgoing) -> String {
    let mut s = String::new();
    if let [item] = out.items.as_slice() {
        item_text(&mut s, item);
    } else {
        let _ = writeln!(s, "{}\n", subject(out));
        for (i, item) in out.items.iter().enumerate() {
            let _ = writeln!(
                s,
                "{:>2}. [{}] {} (incident {})",
                i + 1,
                item.kind.tag(),
                item.alert.headline(),
                item.alert.incident
            );
        }
        for (i, item) in out.items.iter().enumerate() {
            let _ = writeln!(s, "\n{}", "=".repeat(72));
            let _ = writeln!(s, "{}/{}", i + 1, out.items.len());
            item_text(&mut s, item);
        }
    }
    let _ = writeln!(s, "\n-- \nSent by varde. Message key: {}", out.key);
    s
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Seconds as milliseconds, to a tenth below 10 ms.
fn millis(seconds: f64) -> String {
    let ms = seconds * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn item_text(s: &mut String, item: &Item) {
    let a = &item.alert;
    let _ = writeln!(s, "[{}] {}", item.kind.tag(), a.headline());
    if let Some(summary) = a.annotations.get("summary") {
        let _ = writeln!(s, "{summary}");
    }
    s.push('\n');

    match item.kind {
        MessageKind::Acknowledged => {
            let by = item.acknowledged_by.as_deref().unwrap_or("someone");
            let _ = writeln!(s, "Acknowledged by {by}.\n");
        }
        MessageKind::Escalation => {
            let _ = writeln!(
                s,
                "Not acknowledged in time: escalated to level {}.\n",
                item.level
            );
        }
        MessageKind::Repeat => {
            let _ = writeln!(s, "Still firing and not acknowledged.\n");
        }
        MessageKind::Flapping => {
            let _ = writeln!(
                s,
                "The check is flapping; the incident stays open until it settles.\n"
            );
        }
        MessageKind::Firing | MessageKind::Resolved => {}
    }

    let mut facts: Vec<(&str, String)> = vec![
        ("Incident", a.incident.to_string()),
        ("Rule", format!("{} ({})", a.rule, a.kind)),
        ("Severity", a.severity.clone()),
    ];
    if !a.check.is_empty() {
        facts.push(("Check", a.check.clone()));
    }
    if let Some(t) = &a.target {
        facts.push(("Target", t.clone()));
    }
    if let Some(r) = &a.region {
        facts.push(("Region", r.clone()));
    }
    facts.push(("Started", time(a.started_at)));
    if let Some(end) = a.resolved_at {
        let lasted = (end - a.started_at).to_std().unwrap_or_default();
        let lasted = Duration::from_secs(lasted.as_secs());
        facts.push((
            "Resolved",
            format!(
                "{} (lasted {})",
                time(end),
                humantime::format_duration(lasted)
            ),
        ));
    }
    if let Some(reason) = a.reason() {
        facts.push(("Reason", reason.to_owned()));
    }
    if let Some(detail) = detail_text(a.detail.as_ref()) {
        facts.push(("Detail", detail));
    }
    if let Some(r) = &a.regions {
        facts.push(("Down in", list(&r.down)));
        facts.push(("Up in", list(&r.up)));
        if !r.stale.is_empty() {
            facts.push(("Stale", list(&r.stale)));
        }
        if !r.unknown.is_empty() {
            facts.push(("Unknown", list(&r.unknown)));
        }
    }
    if let Some(runbook) = a.annotations.get("runbook") {
        facts.push(("Runbook", runbook.clone()));
    }
    // Nothing left to acknowledge or resolve once it is over.
    if item.kind != MessageKind::Resolved {
        if let Some(url) = &item.ack_url {
            facts.push(("Acknowledge", url.clone()));
        }
        if let Some(url) = &item.resolve_url {
            facts.push(("Resolve", url.clone()));
        }
    }
    let width = facts.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (k, v) in &facts {
        let _ = writeln!(s, "{:<width$} {v}", format!("{k}:"), width = width);
    }

    if !a.views.is_empty() {
        let _ = writeln!(s, "\nLast result per region:");
        for (region, v) in &a.views {
            let verdict = if v.success { "up" } else { "down" };
            let _ = write!(s, "  {region}: {verdict}");
            if let Some(reason) = &v.reason {
                let _ = write!(s, " ({reason})");
            }
            if !v.message.is_empty() {
                let _ = write!(s, ": {}", v.message);
            }
            let _ = writeln!(
                s,
                ", {} at {}",
                millis(v.duration_seconds),
                time(v.started_at)
            );
            if !v.phases.is_empty() {
                let mut phases: Vec<(&String, &f64)> = v.phases.iter().collect();
                phases.sort_by_key(|(p, _)| phase_rank(p));
                let phases: Vec<String> = phases
                    .iter()
                    .map(|(p, secs)| format!("{p} {}", millis(**secs)))
                    .collect();
                let _ = writeln!(s, "    {}", phases.join(", "));
            }
        }
    }

    let others: BTreeMap<&String, &String> = a
        .annotations
        .iter()
        .filter(|(k, _)| k.as_str() != "summary" && k.as_str() != "runbook")
        .collect();
    if !others.is_empty() {
        let _ = writeln!(s, "\nAnnotations:");
        for (k, v) in others {
            let _ = writeln!(s, "  {k}: {v}");
        }
    }
    if !a.labels.is_empty() {
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(s, "\nLabels: {}", labels.join(", "));
    }
}

/// Phases in the order a request goes through them; unknown ones last.
fn phase_rank(phase: &str) -> usize {
    const ORDER: [&str; 5] = ["resolve", "connect", "tls", "processing", "transfer"];
    ORDER
        .iter()
        .position(|p| *p == phase)
        .unwrap_or(ORDER.len())
}

/// The condition's detail other than `reason`: `value=2.4, threshold=1`.
fn detail_text(detail: Option<&serde_json::Value>) -> Option<String> {
    let obj = detail?.as_object()?;
    let parts: Vec<String> = obj
        .iter()
        .filter(|(k, v)| k.as_str() != "reason" && !v.is_null())
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    if parts.is_empty() {
        None
    } else {
        Some(parts.join(", "))
    }
}
