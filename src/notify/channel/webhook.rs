//! HTTP channels: Slack and Microsoft Teams incoming webhooks, PagerDuty
//! Events API v2 and the generic JSON webhook.
//!
//! All four share one [`HttpSender`]: a pooled hyper client (HTTP/1.1 and
//! HTTP/2, `http` and `https`; HTTPS trusts the webpki roots only) with a
//! total per-attempt timeout covering connect, request and response, and a
//! cap on how much of a response body is read. A receiver that never
//! answers, or answers with an endless body, costs at most one timeout.
//!
//! # Outcomes
//!
//! 2xx is [`SendOutcome::Delivered`]; 408, 429, 5xx, timeouts, connection
//! and TLS errors are [`SendOutcome::Retry`]; any other status is
//! [`SendOutcome::Failed`] (redirects are not followed). Reasons name the
//! channel type and what happened (`POST to slack channel failed:
//! connection refused`, `slack channel answered 404 Not Found:
//! channel_not_found`) and never contain the URL or any secret: Slack and
//! Teams webhook URLs embed their tokens, so the URL, its path and query,
//! the routing key and the HMAC key are redacted from every reason,
//! including text echoed back in a response body.
//!
//! # PagerDuty
//!
//! One Events API v2 event per item, never a digest, with `dedup_key` = the
//! incident's fingerprint. When a message holds several items they are
//! sent in order; the outcome is `Delivered` only if every event was
//! accepted. The first `Retry` stops the loop and the whole message is
//! retried later: events already accepted are sent again, which is
//! harmless because PagerDuty deduplicates on `dedup_key` (a second
//! trigger of an open incident, or a second resolve, changes nothing). A
//! `Failed` event does not stop the others; the message is `Failed` if
//! any event was refused and none asked to retry.
//!
//! # Generic webhook signature
//!
//! When the channel has a `secret`, each request carries
//!
//! ```text
//! X-Varde-Timestamp: 1767225600
//! X-Varde-Signature: sha256=<hex(HMAC-SHA256(secret, timestamp + "." + body))>
//! ```
//!
//! where `body` is the exact bytes of the request body. A receiver verifies
//! it by:
//!
//! 1. reading the raw body *before* parsing it as JSON (re-serialising
//!    changes the bytes);
//! 2. computing `HMAC-SHA256(secret, "<X-Varde-Timestamp>.<body>")` and
//!    comparing it with the hex after `sha256=` in **constant time**
//!    (e.g. `hmac::Mac::verify_slice`, Python's `hmac.compare_digest`,
//!    Node's `crypto.timingSafeEqual`) — [`verify_signature`] does exactly
//!    this;
//! 3. rejecting a timestamp more than a few minutes away from its own
//!    clock (e.g. ±5 minutes), so a captured request cannot be replayed
//!    later; within that window, the `Idempotency-Key` header (also
//!    `idempotency_key` in the body) identifies duplicates, since varde
//!    delivers at least once.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sha2::Sha256;

use super::Secret;
use crate::notify::links::{hex_decode, hex_encode};
use crate::notify::{Item, MessageKind, Outgoing, SendOutcome};
use crate::resolve::HostResolver;

/// A Slack incoming webhook.
#[derive(Clone, Debug, PartialEq)]
pub struct SlackSpec {
    /// `https://hooks.slack.com/services/...`: a secret (it embeds the token).
    pub url: Secret,
}

/// A Microsoft Teams incoming webhook (connector or Workflows URL).
#[derive(Clone, Debug, PartialEq)]
pub struct TeamsSpec {
    /// The webhook URL: a secret (it embeds the token).
    pub url: Secret,
}

/// A PagerDuty service's Events API v2 integration.
#[derive(Clone, Debug, PartialEq)]
pub struct PagerDutySpec {
    /// The integration's routing key.
    pub routing_key: Secret,
    /// Default `https://events.pagerduty.com/v2/enqueue`.
    pub url: String,
}

/// A generic JSON webhook, optionally signed (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookSpec {
    /// Where to POST; a secret, since such URLs often carry tokens.
    pub url: Secret,
    /// HMAC-SHA256 key for the signature header; `None`: unsigned.
    pub secret: Option<Secret>,
}

/// The PagerDuty Events API v2 endpoint.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// How much of a response body is read: enough for an error message, not
/// enough for a hostile receiver to bloat us.
pub const RESPONSE_BODY_CAP: usize = 64 * 1024;

/// Longest body snippet quoted in a reason.
const SNIPPET_CHARS: usize = 200;

/// Slack allows 50 blocks per message; a digest item takes two.
const SLACK_DIGEST_ITEMS: usize = 20;

/// Teams cards stay well under the 28 KB payload limit at this size.
const TEAMS_DIGEST_ITEMS: usize = 20;

/// PagerDuty's limit on `payload.summary`.
const PAGERDUTY_SUMMARY_CHARS: usize = 1024;

/// How long a response body may take after its status line and headers.
const BODY_GRACE: Duration = Duration::from_secs(2);

const SIGNATURE_HEADER: &str = "x-varde-signature";
const TIMESTAMP_HEADER: &str = "x-varde-timestamp";
const IDEMPOTENCY_HEADER: &str = "idempotency-key";

type HttpsClient = Client<HttpsConnector<HttpConnector<HostResolver>>, Full<Bytes>>;

/// The client behind the HTTP channels: built once per channel
/// configuration, cheap to share.
pub struct HttpSender {
    /// Boxed: the client is a few hundred bytes and `HttpSender` sits in
    /// an enum next to small senders.
    client: Box<HttpsClient>,
    timeout: Duration,
}

/// A request to make: which channel it is for (for reasons), where, what.
struct Post<'a> {
    channel: &'static str,
    url: &'a str,
    headers: Vec<(HeaderName, String)>,
    body: Vec<u8>,
    /// Strings that must never appear in a reason besides the URL.
    secrets: Vec<&'a str>,
}

impl HttpSender {
    /// Builds the pooled client. `timeout` bounds each attempt: connect,
    /// TLS, request and reading the response.
    pub fn new(timeout: Duration) -> Result<HttpSender, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(crate::resolve::http_connector(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(8)
            .build(https);
        Ok(HttpSender {
            client: Box::new(client),
            timeout,
        })
    }

    /// Posts `out` to a Slack incoming webhook: a `text` fallback and
    /// Block Kit blocks; `out.address` (a channel such as `#ops`) is passed
    /// as `channel`.
    pub async fn slack(&self, s: &SlackSpec, out: &Outgoing) -> SendOutcome {
        let body = slack_payload(out);
        self.post(Post {
            channel: "slack",
            url: s.url.expose(),
            headers: Vec::new(),
            body: body.to_string().into_bytes(),
            secrets: Vec::new(),
        })
        .await
    }

    /// Posts `out` to a Teams incoming webhook as an Adaptive Card 1.4.
    pub async fn teams(&self, t: &TeamsSpec, out: &Outgoing) -> SendOutcome {
        let body = teams_payload(out);
        self.post(Post {
            channel: "teams",
            url: t.url.expose(),
            headers: Vec::new(),
            body: body.to_string().into_bytes(),
            secrets: Vec::new(),
        })
        .await
    }

    /// Sends one PagerDuty event per item (see the module docs for how the
    /// outcomes combine).
    pub async fn pagerduty(&self, p: &PagerDutySpec, out: &Outgoing) -> SendOutcome {
        let url = if p.url.trim().is_empty() {
            PAGERDUTY_EVENTS_URL
        } else {
            p.url.as_str()
        };
        let total = out.items.len();
        let mut failures = Vec::new();
        for (i, item) in out.items.iter().enumerate() {
            let event = pagerduty_event(p.routing_key.expose(), item);
            let outcome = self
                .post(Post {
                    channel: "pagerduty",
                    url,
                    headers: Vec::new(),
                    body: event.to_string().into_bytes(),
                    secrets: vec![p.routing_key.expose()],
                })
                .await;
            let which = |r: &str| {
                if total == 1 {
                    r.to_owned()
                } else {
                    format!(
                        "event {}/{total} (incident {}): {r}",
                        i + 1,
                        item.alert.incident
                    )
                }
            };
            match outcome {
                SendOutcome::Delivered => {}
                SendOutcome::Retry(r) => return SendOutcome::Retry(which(&r)),
                SendOutcome::RetryAfter(r, after) => {
                    return SendOutcome::RetryAfter(which(&r), after);
                }
                SendOutcome::Failed(r) => failures.push(which(&r)),
            }
        }
        if failures.is_empty() {
            SendOutcome::Delivered
        } else {
            SendOutcome::Failed(failures.join("; "))
        }
    }

    /// Posts `out` as the generic JSON document, signed when the channel
    /// has a secret.
    pub async fn webhook(&self, w: &WebhookSpec, out: &Outgoing) -> SendOutcome {
        let body = webhook_payload(out).to_string().into_bytes();
        let mut headers = vec![(HeaderName::from_static(IDEMPOTENCY_HEADER), out.key.clone())];
        let mut secrets = Vec::new();
        if let Some(secret) = &w.secret {
            let timestamp = Utc::now().timestamp().to_string();
            let signature = sign(secret.expose().as_bytes(), &timestamp, &body);
            headers.push((HeaderName::from_static(TIMESTAMP_HEADER), timestamp));
            headers.push((HeaderName::from_static(SIGNATURE_HEADER), signature));
            secrets.push(secret.expose());
        }
        self.post(Post {
            channel: "webhook",
            url: w.url.expose(),
            headers,
            body,
            secrets,
        })
        .await
    }

    /// One attempt: POST, bounded by the timeout, body read up to the cap.
    async fn post(&self, p: Post<'_>) -> SendOutcome {
        let channel = p.channel;
        let scrub = |s: &str| redact(s, p.url, &p.secrets);
        let uri: Uri = match p.url.parse() {
            Ok(u) => u,
            Err(_) => return SendOutcome::Failed(format!("{channel} channel: invalid URL")),
        };
        match uri.scheme_str() {
            Some("http") | Some("https") if uri.host().is_some() => {}
            _ => {
                return SendOutcome::Failed(format!(
                    "{channel} channel: URL must be http:// or https:// with a host"
                ));
            }
        }
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("varde/", env!("CARGO_PKG_VERSION")).to_owned(),
            );
        for (name, value) in &p.headers {
            match HeaderValue::from_str(value) {
                Ok(v) => builder = builder.header(name, v),
                Err(_) => {
                    return SendOutcome::Failed(format!(
                        "{channel} channel: invalid {name} header value"
                    ));
                }
            }
        }
        let request = match builder.body(Full::new(Bytes::from(p.body))) {
            Ok(r) => r,
            Err(_) => return SendOutcome::Failed(format!("{channel} channel: invalid request")),
        };

        let attempt = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, Utc::now()));
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, response))
        };
        let (status, retry_after, response) =
            match tokio::time::timeout(self.timeout, attempt).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => {
                    return SendOutcome::Retry(scrub(&format!(
                        "POST to {channel} channel failed: {}",
                        describe_error(&e)
                    )));
                }
                Err(_) => {
                    return SendOutcome::Retry(format!(
                        "POST to {channel} channel failed: no response within {}",
                        humantime::format_duration(self.timeout)
                    ));
                }
            };
        // The status is the answer. The body (read for the reason of a
        // failure, and so that the connection can be reused) gets a bounded
        // grace of its own: a receiver that said 2xx and then stalls has
        // still taken the message, and treating that as a retry would send
        // it twice.
        let grace = BODY_GRACE.min(self.timeout);
        let body =
            tokio::time::timeout(grace, read_capped(response.into_body(), RESPONSE_BODY_CAP))
                .await
                .unwrap_or_default();
        match classify(channel, status, &body, &scrub) {
            SendOutcome::Retry(r)
                if matches!(
                    status,
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                ) =>
            {
                match retry_after {
                    Some(after) => SendOutcome::RetryAfter(r, after),
                    None => SendOutcome::Retry(r),
                }
            }
            other => other,
        }
    }
}

/// Reads at most `cap` bytes of a body; stops (dropping the rest, and with
/// it the connection) once the cap is reached or on a read error.
async fn read_capped(mut body: hyper::body::Incoming, cap: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    while buf.len() < cap {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = cap - buf.len();
                    buf.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    buf
}

fn classify(
    channel: &str,
    status: StatusCode,
    body: &[u8],
    redact: &dyn Fn(&str) -> String,
) -> SendOutcome {
    if status.is_success() {
        return SendOutcome::Delivered;
    }
    let snippet = redact(&snippet(body));
    let mut reason = format!("{channel} channel answered {status}");
    if status.is_redirection() {
        reason.push_str(" (redirects are not followed)");
    }
    if !snippet.is_empty() {
        reason.push_str(": ");
        reason.push_str(&snippet);
    }
    let retry = status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error();
    if retry {
        SendOutcome::Retry(reason)
    } else {
        SendOutcome::Failed(reason)
    }
}

/// A `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110 10.2.3),
/// as the wait from `now` (zero for a date in the past). `None` for
/// anything else.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurd values saturate; the dispatcher caps the wait anyway.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// The start of a response body on one line: control characters become
/// spaces, runs of whitespace collapse, at most [`SNIPPET_CHARS`] chars.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(4 * SNIPPET_CHARS)]);
    let mut out = String::new();
    let mut count = 0;
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            count += 1;
            space = false;
        }
        if count >= SNIPPET_CHARS {
            out.push('…');
            break;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// Removes the URL, its path and query, and the secrets from a reason.
fn redact(reason: &str, url: &str, secrets: &[&str]) -> String {
    let mut needles: Vec<&str> = vec![url];
    if let Ok(uri) = url.parse::<Uri>()
        && let Some(pq) = uri.path_and_query()
    {
        // Index into `url` so the needles borrow from it.
        if pq.as_str().len() > 1
            && let Some(at) = url.find(pq.as_str())
        {
            needles.push(&url[at..at + pq.as_str().len()]);
        }
        let path = pq.path();
        if path.len() > 1
            && let Some(at) = url.find(path)
        {
            needles.push(&url[at..at + path.len()]);
        }
        if let Some(q) = pq.query().filter(|q| !q.is_empty())
            && let Some(at) = url.find(q)
        {
            needles.push(&url[at..at + q.len()]);
        }
    }
    needles.extend(secrets.iter().copied());
    // Longest first, so a path is not half-replaced by a shorter needle.
    needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = reason.to_owned();
    for n in needles {
        if !n.is_empty() {
            out = out.replace(n, "<redacted>");
        }
    }
    out
}

/// A transport error in a few words: `connection refused`, `TLS error:
/// invalid peer certificate: UnknownIssuer`, ...
fn describe_error(e: &(dyn StdError + 'static)) -> String {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    let mut deepest = e.to_string();
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return format!("TLS error: {tls}");
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            let known = match io.kind() {
                K::ConnectionRefused => Some("connection refused"),
                K::ConnectionReset => Some("connection reset"),
                K::ConnectionAborted => Some("connection aborted"),
                K::TimedOut => Some("connect timed out"),
                K::UnexpectedEof => Some("connection closed unexpectedly"),
                _ => None,
            };
            if let Some(k) = known {
                return k.to_owned();
            }
            // `io::Error::source` skips the wrapped error itself (tokio-rustls
            // and hyper-rustls wrap rustls errors in one or two of them).
            if let Some(inner) = io.get_ref() {
                cur = Some(inner);
                continue;
            }
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && h.is_incomplete_message()
        {
            return "connection closed before a complete response".to_owned();
        }
        if err.source().is_none() {
            deepest = err.to_string();
        }
        cur = err.source();
    }
    if let Some(connect) = e.downcast_ref::<hyper_util::client::legacy::Error>()
        && connect.is_connect()
    {
        return format!("connect: {deepest}");
    }
    deepest
}

// === signatures ===

/// `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = new_mac(secret);
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex_encode(&mac.finalize().into_bytes()))
}

fn new_mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; the error is unreachable for it.
    match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

/// Checks a generic-webhook signature the way a receiver should: `header`
/// is the `X-Varde-Signature` value (`sha256=<hex>`), `timestamp` the
/// `X-Varde-Timestamp` value, `body` the raw request body. The comparison
/// is constant-time. It does not judge the timestamp's age: a receiver
/// should also reject timestamps far from its clock (replay).
pub fn verify_signature(secret: &[u8], timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(hex) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Some(tag) = hex_decode(hex) else {
        return false;
    };
    let mut mac = new_mac(secret);
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

// === message bodies ===

fn runbook(item: &Item) -> Option<&str> {
    let a = &item.alert.annotations;
    a.get("runbook_url")
        .or_else(|| a.get("runbook"))
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// `[FIRING] api-health down in 3/3 regions`
fn title(item: &Item) -> String {
    format!("[{}] {}", item.kind.tag(), item.alert.headline())
}

/// Title of a whole message: the item's, or a digest count.
fn message_title(out: &Outgoing) -> String {
    match out.items.as_slice() {
        [one] => title(one),
        items => {
            let firing = items
                .iter()
                .filter(|i| i.kind != MessageKind::Resolved)
                .count();
            let resolved = items.len() - firing;
            let mut parts = Vec::new();
            if firing > 0 {
                parts.push(format!("{firing} firing"));
            }
            if resolved > 0 {
                parts.push(format!("{resolved} resolved"));
            }
            format!("[DIGEST] {} alerts: {}", items.len(), parts.join(", "))
        }
    }
}

/// The facts every channel shows, as (label, value) pairs.
fn facts(item: &Item) -> Vec<(&'static str, String)> {
    let a = &item.alert;
    let mut f = vec![("Severity", a.severity.clone())];
    if let Some(r) = &a.regions {
        if !r.down.is_empty() {
            f.push(("Regions down", r.down.join(", ")));
        }
        if !r.up.is_empty() {
            f.push(("Regions up", r.up.join(", ")));
        }
        if !r.stale.is_empty() {
            f.push(("Regions stale", r.stale.join(", ")));
        }
    }
    if let Some(region) = &a.region {
        f.push(("Region", region.clone()));
    }
    if let Some(reason) = a.reason() {
        f.push(("Reason", reason.to_owned()));
    }
    if let Some(target) = &a.target {
        f.push(("Target", target.clone()));
    }
    f.push((
        "Started",
        a.started_at.to_rfc3339_opts(SecondsFormat::Secs, true),
    ));
    if let Some(at) = a.resolved_at {
        f.push(("Resolved", at.to_rfc3339_opts(SecondsFormat::Secs, true)));
    }
    if let Some(by) = &item.acknowledged_by {
        f.push(("Acknowledged by", by.clone()));
    }
    if item.level > 0 {
        f.push(("Escalation level", item.level.to_string()));
    }
    f.push(("Incident", format!("{} (rule {})", a.incident, a.rule)));
    f
}

/// (label, url) of the links an item offers.
fn links(item: &Item) -> Vec<(&'static str, &str)> {
    let mut l = Vec::new();
    if let Some(u) = &item.ack_url {
        l.push(("Acknowledge", u.as_str()));
    }
    if let Some(u) = &item.resolve_url {
        l.push(("Resolve", u.as_str()));
    }
    if let Some(u) = runbook(item) {
        l.push(("Runbook", u));
    }
    l
}

/// Escapes the three characters Slack's mrkdwn treats as control.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max_chars.saturating_sub(1)).collect();
    t.push('…');
    t
}

fn slack_item_blocks(item: &Item, with_title: bool) -> Vec<Value> {
    let fields: Vec<Value> = facts(item)
        .into_iter()
        .take(10)
        .map(|(k, v)| json!({"type": "mrkdwn", "text": truncate(&format!("*{k}*\n{}", slack_escape(&v)), 2000)}))
        .collect();
    let mut section = json!({"type": "section", "fields": fields});
    let mut text = String::new();
    if with_title {
        text.push_str(&format!("*{}*", slack_escape(&title(item))));
    }
    if let Some(summary) = item.alert.annotations.get("summary") {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&slack_escape(summary));
    }
    if !text.is_empty() {
        section["text"] = json!({"type": "mrkdwn", "text": truncate(&text, 3000)});
    }
    let mut blocks = vec![section];
    let buttons: Vec<Value> = links(item)
        .into_iter()
        .filter(|(_, u)| u.len() <= 3000)
        .map(|(label, url)| {
            let mut b = json!({
                "type": "button",
                "text": {"type": "plain_text", "text": label},
                "url": url,
            });
            if label == "Acknowledge" {
                b["style"] = json!("primary");
            }
            b
        })
        .collect();
    if !buttons.is_empty() {
        blocks.push(json!({"type": "actions", "elements": buttons}));
    }
    blocks
}

/// A Slack incoming-webhook message.
fn slack_payload(out: &Outgoing) -> Value {
    let head = message_title(out);
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": truncate(&head, 150), "emoji": false},
    })];
    let mut fallback = head.clone();
    if let [one] = out.items.as_slice() {
        blocks.extend(slack_item_blocks(one, false));
        if let Some(r) = one.alert.reason() {
            fallback.push_str(&format!(": {r}"));
        }
    } else {
        for item in out.items.iter().take(SLACK_DIGEST_ITEMS) {
            blocks.push(json!({"type": "divider"}));
            blocks.extend(slack_item_blocks(item, true));
        }
        for item in &out.items {
            fallback.push_str(&format!("\n{}", title(item)));
        }
        if out.items.len() > SLACK_DIGEST_ITEMS {
            blocks.push(json!({
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": format!("…and {} more", out.items.len() - SLACK_DIGEST_ITEMS)}],
            }));
        }
    }
    let mut payload = json!({"text": slack_escape(&fallback), "blocks": blocks});
    if let Some(channel) = &out.address {
        payload["channel"] = json!(channel);
    }
    payload
}

fn teams_item(item: &Item, with_title: bool) -> Vec<Value> {
    let mut body = Vec::new();
    if with_title {
        body.push(json!({
            "type": "TextBlock", "text": title(item), "weight": "Bolder", "wrap": true,
            "color": teams_color(item.kind),
        }));
    }
    if let Some(summary) = item.alert.annotations.get("summary") {
        body.push(json!({"type": "TextBlock", "text": summary, "wrap": true}));
    }
    let facts: Vec<Value> = facts(item)
        .into_iter()
        .map(|(k, v)| json!({"title": k, "value": v}))
        .collect();
    body.push(json!({"type": "FactSet", "facts": facts}));
    body
}

fn teams_actions(item: &Item) -> Vec<Value> {
    links(item)
        .into_iter()
        .map(|(label, url)| json!({"type": "Action.OpenUrl", "title": label, "url": url}))
        .collect()
}

fn teams_color(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Resolved => "Good",
        MessageKind::Acknowledged => "Accent",
        MessageKind::Flapping => "Warning",
        _ => "Attention",
    }
}

/// A Teams incoming-webhook message carrying an Adaptive Card 1.4.
fn teams_payload(out: &Outgoing) -> Value {
    let head = message_title(out);
    let color = match out.items.as_slice() {
        [one] => teams_color(one.kind),
        _ => "Default",
    };
    let mut body = vec![json!({
        "type": "TextBlock", "text": head, "size": "Large", "weight": "Bolder",
        "wrap": true, "color": color,
    })];
    let mut actions = Vec::new();
    if let [one] = out.items.as_slice() {
        body.extend(teams_item(one, false));
        actions = teams_actions(one);
    } else {
        for item in out.items.iter().take(TEAMS_DIGEST_ITEMS) {
            let mut items = teams_item(item, true);
            let acts = teams_actions(item);
            if !acts.is_empty() {
                items.push(json!({"type": "ActionSet", "actions": acts}));
            }
            body.push(json!({"type": "Container", "separator": true, "items": items}));
        }
        if out.items.len() > TEAMS_DIGEST_ITEMS {
            body.push(json!({
                "type": "TextBlock", "wrap": true, "isSubtle": true,
                "text": format!("…and {} more", out.items.len() - TEAMS_DIGEST_ITEMS),
            }));
        }
    }
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "msteams": {"width": "Full"},
    });
    if !actions.is_empty() {
        card["actions"] = json!(actions);
    }
    json!({
        "type": "message",
        "summary": head,
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

fn pagerduty_action(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::Firing
        | MessageKind::Repeat
        | MessageKind::Escalation
        | MessageKind::Flapping => "trigger",
        MessageKind::Acknowledged => "acknowledge",
        MessageKind::Resolved => "resolve",
    }
}

/// varde severities (`page`, `ticket`, ...) as PagerDuty's four; the
/// PagerDuty names themselves pass through.
fn pagerduty_severity(s: &str) -> &'static str {
    match s {
        "page" | "critical" => "critical",
        "error" => "error",
        "ticket" | "warning" => "warning",
        _ => "info",
    }
}

/// One Events API v2 event for an item.
fn pagerduty_event(routing_key: &str, item: &Item) -> Value {
    let a = &item.alert;
    let mut summary = title(item);
    if let Some(r) = a.reason() {
        summary.push_str(&format!(": {r}"));
    }
    let source = a
        .target
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| (!a.check.is_empty()).then(|| a.check.clone()))
        .or_else(|| a.region.clone())
        .unwrap_or_else(|| "varde".to_owned());
    let mut details = json!({
        "incident": a.incident,
        "status": item.kind.as_str(),
        "severity": a.severity,
        "labels": a.labels,
        "annotations": a.annotations,
        "started_at": a.started_at.to_rfc3339_opts(SecondsFormat::Secs, true),
    });
    if let Some(r) = &a.regions {
        details["regions"] = json!(r);
    }
    if let Some(r) = a.reason() {
        details["reason"] = json!(r);
    }
    if let Some(d) = &a.detail {
        details["detail"] = d.clone();
    }
    if let Some(by) = &item.acknowledged_by {
        details["acknowledged_by"] = json!(by);
    }
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": pagerduty_action(item.kind),
        "dedup_key": a.fingerprint,
        "client": "varde",
        "payload": {
            "summary": truncate(&summary, PAGERDUTY_SUMMARY_CHARS),
            "source": source,
            "severity": pagerduty_severity(&a.severity),
            "timestamp": a.at.to_rfc3339_opts(SecondsFormat::Secs, true),
            "group": a.rule,
            "class": a.kind,
            "custom_details": details,
        },
    });
    if !a.check.is_empty() {
        event["payload"]["component"] = json!(a.check);
    }
    let links: Vec<Value> = links(item)
        .into_iter()
        .map(|(label, url)| json!({"href": url, "text": label}))
        .collect();
    if !links.is_empty() {
        event["links"] = json!(links);
    }
    event
}

/// The generic webhook document (version 1).
fn webhook_payload(out: &Outgoing) -> Value {
    let status = match out.items.as_slice() {
        [one] => one.kind.as_str(),
        _ => "digest",
    };
    let items: Vec<Value> = out
        .items
        .iter()
        .map(|item| {
            json!({
                "kind": item.kind.as_str(),
                "idempotency_key": item.key,
                "title": title(item),
                "incident": item.alert,
                "ack_url": item.ack_url,
                "resolve_url": item.resolve_url,
                "acknowledged_by": item.acknowledged_by,
                "level": item.level,
            })
        })
        .collect();
    json!({
        "version": 1,
        "idempotency_key": out.key,
        "status": status,
        "title": message_title(out),
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_url_path_and_secrets() {
        let url = "https://hooks.example.com/services/T000/SECRET?token=abc";
        let r = redact(
            &format!("failed {url} /services/T000/SECRET token=abc KEY"),
            url,
            &["KEY"],
        );
        assert!(!r.contains("SECRET"), "{r}");
        assert!(!r.contains("abc"), "{r}");
        assert!(!r.contains("KEY"), "{r}");
    }

    #[test]
    fn snippet_is_one_short_line() {
        let s = snippet(b"  bad\r\n\tpayload \x1b[31m  ");
        assert_eq!(s, "bad payload [31m");
        assert!(snippet(&[b'x'; 5000]).chars().count() <= SNIPPET_CHARS + 1);
    }

    #[test]
    fn signature_round_trip() {
        let h = sign(b"k", "1", b"{}");
        assert!(verify_signature(b"k", "1", b"{}", &h));
        assert!(!verify_signature(b"k", "2", b"{}", &h));
        assert!(!verify_signature(b"k", "1", b"{}", "sha256=zz"));
    }
}
