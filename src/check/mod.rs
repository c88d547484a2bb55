//! The measurement path every probe runs: HTTP(S), TLS, DNS and TCP checks.
//!
//! A check is built once from its options ([`CheckSpec::build`]), which parses
//! URLs, compiles regexes and loads TLS material, so a bad definition fails at
//! start-up. Running it ([`Check::run`]) opens fresh connections every time (no
//! pool, no TLS resumption, no DNS cache) and always returns a [`CheckResult`]:
//! every failure is a bounded [`Reason`], never a free string.

pub mod dns;
pub mod http;
pub(crate) mod io;
pub mod net;
pub mod target;
pub mod tcp;
pub mod tls;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use dns::{DnsFacts, DnsOptions};
pub use http::{BasicAuth, HeaderMatch, HttpFacts, HttpOptions, HttpVersion, Secret};
pub use net::{IpPreference, NetOptions};
pub use tcp::{TcpFacts, TcpOptions};
pub use tls::{CertInfo, TlsFacts, TlsOptions};

/// Default total deadline of a check when none is configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a check failed. Bounded: it is used as a metric label and a stable
/// JSON value (`snake_case`), so variants are only ever added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// The target name does not exist (NXDOMAIN).
    DnsNxdomain,
    /// The name exists but has no address of an allowed family.
    DnsNoAddress,
    /// The resolver did not answer in time.
    DnsTimeout,
    /// The resolver answered with an error (SERVFAIL, REFUSED, ...) or failed.
    DnsError,
    /// The peer refused the connection (RST).
    ConnectRefused,
    /// The TCP connection was not established in time.
    ConnectTimeout,
    /// Any other connect failure (unreachable network or host, ...).
    ConnectError,
    /// The TLS handshake did not complete in time.
    TlsTimeout,
    /// The TLS handshake failed for a reason other than certificate verification.
    TlsHandshake,
    /// A presented certificate has expired.
    TlsExpired,
    /// A presented certificate is not valid yet.
    TlsNotYetValid,
    /// The chain does not lead to a trusted root (unknown issuer, missing intermediate).
    TlsUntrusted,
    /// The server presented a self-signed certificate that is not trusted.
    TlsSelfSigned,
    /// The certificate is not valid for the requested name.
    TlsHostname,
    /// Another certificate problem (bad signature, revoked, unsupported, ...).
    TlsCertificate,
    /// The earliest certificate expiry is within the configured threshold.
    TlsExpiringSoon,
    /// The peer spoke something that is not valid HTTP.
    HttpProtocol,
    /// The final status code is not one of the valid codes.
    HttpStatus,
    /// A redirect pointed back to a URL already visited.
    HttpRedirectLoop,
    /// More redirects than allowed.
    HttpTooManyRedirects,
    /// A redirect had a missing or unusable `Location`.
    HttpBadRedirect,
    /// The body exceeded the size limit.
    HttpBodyTooLarge,
    /// A body assertion (contains, regex, must-not-match) failed.
    HttpBodyMismatch,
    /// A header assertion failed.
    HttpHeaderMismatch,
    /// The DNS response code is not one of the valid codes.
    DnsRcode,
    /// A DNS answer assertion failed.
    DnsAnswerMismatch,
    /// Fewer DNS answers than required.
    DnsTooFewAnswers,
    /// The DNS server sent something that is not a valid response.
    DnsMalformed,
    /// The TCP peer's data did not match the expectation.
    TcpExpectMismatch,
    /// The connection broke while reading or writing.
    IoError,
    /// The check's total deadline passed while waiting for the peer.
    Timeout,
}

impl Reason {
    /// Every reason, for pre-registering metric label values.
    pub const ALL: &'static [Reason] = &[
        Reason::DnsNxdomain,
        Reason::DnsNoAddress,
        Reason::DnsTimeout,
        Reason::DnsError,
        Reason::ConnectRefused,
        Reason::ConnectTimeout,
        Reason::ConnectError,
        Reason::TlsTimeout,
        Reason::TlsHandshake,
        Reason::TlsExpired,
        Reason::TlsNotYetValid,
        Reason::TlsUntrusted,
        Reason::TlsSelfSigned,
        Reason::TlsHostname,
        Reason::TlsCertificate,
        Reason::TlsExpiringSoon,
        Reason::HttpProtocol,
        Reason::HttpStatus,
        Reason::HttpRedirectLoop,
        Reason::HttpTooManyRedirects,
        Reason::HttpBadRedirect,
        Reason::HttpBodyTooLarge,
        Reason::HttpBodyMismatch,
        Reason::HttpHeaderMismatch,
        Reason::DnsRcode,
        Reason::DnsAnswerMismatch,
        Reason::DnsTooFewAnswers,
        Reason::DnsMalformed,
        Reason::TcpExpectMismatch,
        Reason::IoError,
        Reason::Timeout,
    ];

    /// The stable `snake_case` name used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        use Reason::*;
        match self {
            DnsNxdomain => "dns_nxdomain",
            DnsNoAddress => "dns_no_address",
            DnsTimeout => "dns_timeout",
            DnsError => "dns_error",
            ConnectRefused => "connect_refused",
            ConnectTimeout => "connect_timeout",
            ConnectError => "connect_error",
            TlsTimeout => "tls_timeout",
            TlsHandshake => "tls_handshake",
            TlsExpired => "tls_expired",
            TlsNotYetValid => "tls_not_yet_valid",
            TlsUntrusted => "tls_untrusted",
            TlsSelfSigned => "tls_self_signed",
            TlsHostname => "tls_hostname",
            TlsCertificate => "tls_certificate",
            TlsExpiringSoon => "tls_expiring_soon",
            HttpProtocol => "http_protocol",
            HttpStatus => "http_status",
            HttpRedirectLoop => "http_redirect_loop",
            HttpTooManyRedirects => "http_too_many_redirects",
            HttpBadRedirect => "http_bad_redirect",
            HttpBodyTooLarge => "http_body_too_large",
            HttpBodyMismatch => "http_body_mismatch",
            HttpHeaderMismatch => "http_header_mismatch",
            DnsRcode => "dns_rcode",
            DnsAnswerMismatch => "dns_answer_mismatch",
            DnsTooFewAnswers => "dns_too_few_answers",
            DnsMalformed => "dns_malformed",
            TcpExpectMismatch => "tcp_expect_mismatch",
            IoError => "io_error",
            Timeout => "timeout",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A check failure: the bounded reason plus a human message with detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// The phase a check is in; used to name what a deadline interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Resolve,
    Connect,
    Tls,
    Processing,
    Transfer,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Resolve,
        Phase::Connect,
        Phase::Tls,
        Phase::Processing,
        Phase::Transfer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Resolve => "resolve",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Processing => "processing",
            Phase::Transfer => "transfer",
        }
    }

    /// The reason to report when the deadline passes during this phase of
    /// a check of `kind`: a DNS check waiting for its answer is a DNS timeout.
    fn timeout_reason(self, kind: CheckKind) -> Reason {
        match (self, kind) {
            (Phase::Resolve, _) | (Phase::Processing | Phase::Transfer, CheckKind::Dns) => {
                Reason::DnsTimeout
            }
            (Phase::Connect, _) => Reason::ConnectTimeout,
            (Phase::Tls, _) => Reason::TlsTimeout,
            (Phase::Processing | Phase::Transfer, _) => Reason::Timeout,
        }
    }
}

/// Per-phase durations, summed over redirects. Serialized in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    #[serde(with = "secs")]
    pub resolve: Duration,
    #[serde(with = "secs")]
    pub connect: Duration,
    #[serde(with = "secs")]
    pub tls: Duration,
    #[serde(with = "secs")]
    pub processing: Duration,
    #[serde(with = "secs")]
    pub transfer: Duration,
}

impl Phases {
    pub fn get(&self, phase: Phase) -> Duration {
        match phase {
            Phase::Resolve => self.resolve,
            Phase::Connect => self.connect,
            Phase::Tls => self.tls,
            Phase::Processing => self.processing,
            Phase::Transfer => self.transfer,
        }
    }

    pub fn add(&mut self, phase: Phase, d: Duration) {
        let slot = match phase {
            Phase::Resolve => &mut self.resolve,
            Phase::Connect => &mut self.connect,
            Phase::Tls => &mut self.tls,
            Phase::Processing => &mut self.processing,
            Phase::Transfer => &mut self.transfer,
        };
        *slot += d;
    }
}

/// Records phases as a check goes, on tokio's monotonic clock (so tests can
/// pause time). Survives the check future being dropped at the deadline, so
/// the result still says which phase was interrupted and what came before.
#[derive(Debug)]
pub struct Recorder {
    phases: Phases,
    current: Option<(Phase, tokio::time::Instant)>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            phases: Phases::default(),
            current: None,
        }
    }

    /// Starts `phase`, ending the current one.
    pub fn start(&mut self, phase: Phase) {
        self.start_at(phase, tokio::time::Instant::now());
    }

    /// Starts `phase` at a time observed earlier (e.g. at the I/O layer).
    pub fn start_at(&mut self, phase: Phase, at: tokio::time::Instant) {
        self.end_at(at);
        self.current = Some((phase, at));
    }

    /// Ends the current phase now.
    pub fn end(&mut self) {
        self.end_at(tokio::time::Instant::now());
    }

    /// Ends the current phase at `at` (clamped so a phase is never negative).
    pub fn end_at(&mut self, at: tokio::time::Instant) {
        if let Some((phase, since)) = self.current.take() {
            self.phases.add(phase, at.saturating_duration_since(since));
        }
    }

    /// The phase in progress, if any.
    pub fn current(&self) -> Option<Phase> {
        self.current.map(|(p, _)| p)
    }

    pub fn phases(&self) -> Phases {
        self.phases
    }
}

/// What kind of check produced a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    Http,
    Dns,
    Tcp,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Http => "http",
            CheckKind::Dns => "dns",
            CheckKind::Tcp => "tcp",
        }
    }
}

/// The outcome of one check run. Field names are a stable JSON contract.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckResult {
    pub kind: CheckKind,
    pub target: String,
    pub success: bool,
    /// `None` on success.
    pub reason: Option<Reason>,
    /// One line for humans; detail for failures.
    pub message: String,
    /// Wall-clock start, for reports (durations use the monotonic clock).
    pub started_at: chrono::DateTime<chrono::Utc>,
    #[serde(with = "secs", rename = "duration_seconds")]
    pub duration: Duration,
    pub phases: Phases,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tls: Option<TlsFacts>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub http: Option<HttpFacts>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dns: Option<DnsFacts>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tcp: Option<TcpFacts>,
}

/// The facts a check gathered so far; filled as it goes so that a check
/// that fails (or times out) half-way still reports what it saw.
#[derive(Debug, Default)]
pub struct Facts {
    pub tls: Option<TlsFacts>,
    pub http: Option<HttpFacts>,
    pub dns: Option<DnsFacts>,
    pub tcp: Option<TcpFacts>,
}

/// A check definition as written by a user (config file or command line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
// Definitions are built once per check, not stored in bulk: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum CheckSpec {
    Http(HttpOptions),
    Dns(DnsOptions),
    Tcp(TcpOptions),
}

impl CheckSpec {
    /// Connect from `ip` unless the check names its own source address.
    pub fn default_source_address(&mut self, ip: std::net::IpAddr) {
        let net = match self {
            CheckSpec::Http(o) => &mut o.net,
            CheckSpec::Dns(o) => &mut o.net,
            CheckSpec::Tcp(o) => &mut o.net,
        };
        net.source_address.get_or_insert(ip);
    }
}

/// An invalid check definition; raised when the check is built, never at run time.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The option at fault, as the user wrote it (`url`, `tls.ca_file`, ...).
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl CheckSpec {
    /// Validates the definition and prepares everything a run needs.
    pub fn build(&self, timeout: Duration) -> Result<Check, SpecError> {
        if timeout.is_zero() {
            return Err(SpecError::new("timeout", "must be greater than zero"));
        }
        let inner = match self {
            CheckSpec::Http(o) => Inner::Http(http::HttpCheck::build(o)?),
            CheckSpec::Dns(o) => Inner::Dns(dns::DnsCheck::build(o)?),
            CheckSpec::Tcp(o) => Inner::Tcp(tcp::TcpCheck::build(o)?),
        };
        Ok(Check { inner, timeout })
    }
}

/// A validated, ready-to-run check. Cheap to run repeatedly; each run uses
/// fresh connections.
#[derive(Debug)]
pub struct Check {
    inner: Inner,
    timeout: Duration,
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per check, built once
enum Inner {
    Http(http::HttpCheck),
    Dns(dns::DnsCheck),
    Tcp(tcp::TcpCheck),
}

impl Check {
    pub fn kind(&self) -> CheckKind {
        match &self.inner {
            Inner::Http(_) => CheckKind::Http,
            Inner::Dns(_) => CheckKind::Dns,
            Inner::Tcp(_) => CheckKind::Tcp,
        }
    }

    pub fn target(&self) -> &str {
        match &self.inner {
            Inner::Http(c) => c.target(),
            Inner::Dns(c) => c.target(),
            Inner::Tcp(c) => c.target(),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs the check once, within its total deadline.
    pub async fn run(&self) -> CheckResult {
        let started_at = chrono::Utc::now();
        let start = tokio::time::Instant::now();
        let mut rec = Recorder::new();
        let mut facts = Facts::default();
        let outcome = {
            let fut = async {
                match &self.inner {
                    Inner::Http(c) => c.run(&mut rec, &mut facts).await,
                    Inner::Dns(c) => c.run(&mut rec, &mut facts).await,
                    Inner::Tcp(c) => c.run(&mut rec, &mut facts).await,
                }
            };
            tokio::time::timeout(self.timeout, fut).await
        };
        let outcome = match outcome {
            Ok(r) => r,
            Err(_) => {
                let phase = rec.current().unwrap_or(Phase::Processing);
                Err(Failure::new(
                    phase.timeout_reason(self.kind()),
                    format!(
                        "deadline of {} passed during {}",
                        humantime::format_duration(self.timeout),
                        phase.as_str()
                    ),
                ))
            }
        };
        rec.end();
        let duration = start.elapsed();
        let (success, reason, message) = match outcome {
            Ok(msg) => (true, None, msg),
            Err(f) => (false, Some(f.reason), f.message),
        };
        CheckResult {
            kind: self.kind(),
            target: self.target().to_owned(),
            success,
            reason,
            message,
            started_at,
            duration,
            phases: rec.phases(),
            tls: facts.tls,
            http: facts.http,
            dns: facts.dns,
            tcp: facts.tcp,
        }
    }
}

/// Serde helpers: `Duration` as fractional seconds.
pub(crate) mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// Serde helpers: optional `Duration` as a humantime string ("14d", "500ms").
pub(crate) mod human_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v = Option::<String>::deserialize(d)?;
        v.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Serde helpers: a required `Duration` as a humantime string ("30s").
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("{e} (expected e.g. \"30s\", \"5m\")")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    #[tokio::test(start_paused = true)]
    async fn recorder_attributes_time_to_the_phase_in_progress() {
        let mut r = Recorder::new();
        r.start(Phase::Resolve);
        advance(Duration::from_millis(10)).await;
        r.start(Phase::Connect);
        advance(Duration::from_millis(5)).await;
        r.end();
        // Time between phases belongs to none.
        advance(Duration::from_millis(100)).await;
        r.start(Phase::Processing);
        advance(Duration::from_millis(7)).await;
        r.start(Phase::Transfer);
        r.end();
        // A second hop adds to the same phases.
        r.start(Phase::Resolve);
        advance(Duration::from_millis(1)).await;
        r.end();
        let p = r.phases();
        assert_eq!(p.resolve, Duration::from_millis(11));
        assert_eq!(p.connect, Duration::from_millis(5));
        assert_eq!(p.tls, Duration::ZERO);
        assert_eq!(p.processing, Duration::from_millis(7));
        assert_eq!(p.transfer, Duration::ZERO);
        assert_eq!(r.current(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_names_the_interrupted_phase_and_keeps_exact_time() {
        // A DNS server that never answers: the check waits in `processing`
        // until the deadline; with time paused the deadline is exact.
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let spec = CheckSpec::Dns(DnsOptions {
            server: silent.local_addr().unwrap().to_string(),
            name: "example.com".into(),
            ..DnsOptions::default()
        });
        let check = spec.build(Duration::from_secs(3)).unwrap();
        let r = check.run().await;
        assert!(!r.success);
        assert_eq!(r.reason, Some(Reason::DnsTimeout), "{}", r.message);
        assert_eq!(r.duration, Duration::from_secs(3));
        assert_eq!(r.phases.processing, Duration::from_secs(3));
        assert!(r.message.contains("during processing"), "{}", r.message);
    }

    #[test]
    fn reasons_serialize_as_their_label() {
        let mut seen = std::collections::HashSet::new();
        for &r in Reason::ALL {
            assert!(seen.insert(r.as_str()), "duplicate label {r}");
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
    }

    #[test]
    fn zero_timeout_is_rejected() {
        let spec = CheckSpec::Tcp(TcpOptions {
            address: "127.0.0.1:1".into(),
            ..TcpOptions::default()
        });
        assert_eq!(spec.build(Duration::ZERO).unwrap_err().field, "timeout");
    }
}
