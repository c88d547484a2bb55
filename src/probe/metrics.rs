//! The probe's Prometheus outputs: `/metrics` for every scheduled check, and
//! the blackbox_exporter-format body of `/probe` for one ad-hoc result.
//!
//! Per-check gauges use blackbox_exporter's names, types, label names and
//! units (`probe_success`, `probe_http_duration_seconds{phase}`, ...), with
//! the labels `check`, `target`, `region` and the check's own labels added, so
//! existing dashboards keep working. What blackbox lacks is added under
//! `varde_`: duration histograms, result counters, scheduler and push health.
//!
//! # Stale facts
//! Every result replaces *all* blackbox-style series of its check: the series
//! a result does not produce are removed, never left at an older value.
//! Which series a result produces follows blackbox:
//! * `probe_http_*` (status, version, lengths, redirects, ssl, phases) and
//!   `probe_failed_due_to_regex` are always set for HTTP checks, `0` when no
//!   response arrived (blackbox reports status code 0 then);
//! * `probe_dns_*` counts and `probe_dns_query_succeeded` are always set for
//!   DNS checks, `0` when no response arrived; `probe_dns_serial` only for a
//!   SOA answer;
//! * `probe_ip_protocol` / `probe_ip_addr_hash` only when a peer address was
//!   reached;
//! * TLS series only when TLS was spoken (for HTTP: when the final URL is
//!   `https`): `probe_tls_version_info` when the handshake completed,
//!   `probe_ssl_earliest_cert_expiry` and `probe_ssl_last_chain_info` when a
//!   certificate was presented (also when it failed verification, unlike
//!   blackbox, which has no certificate then), and
//!   `probe_ssl_last_chain_expiry_timestamp_seconds` only for a verified chain
//!   (blackbox reports year 1 when nothing verified).
//!
//! A removed check loses every series labelled with it (gauges, counters,
//! its duration histogram); a check whose target or labels change without a
//! removal starts over under its new labels.
//!
//! # Cardinality
//! Per check there are only the blackbox gauges (about 20 lines),
//! `varde_checks_total{result,reason}`, `varde_checks_skipped_total{reason}`
//! and one total-duration histogram `varde_check_duration_seconds` with 13
//! buckets. Phase durations are histogrammed **per fleet, not per check**:
//! `varde_check_phase_duration_seconds{region,kind,phase}` (kind = `http`,
//! `dns`, `tcp`). Per check they would cost 5 phases × 16 lines for every
//! check on every scrape (800k lines for 10,000 checks), and the per-check
//! phase breakdown of the latest run is already in
//! `probe_http_duration_seconds{phase}` / `probe_dns_duration_seconds{phase}`.
//!
//! # Storage and encoding
//! prometheus-client `Family`s keep a full label set per series and lock the
//! family for a whole encode, which does not scale to thousands of checks.
//! Everything labelled per check is instead kept in one compact
//! `CheckSeries` per check (its label block rendered once as escaped text,
//! gauge values as `(family, extra label, f64)` triples, counters and the
//! histogram as plain numbers) in a `BTreeMap` by check name behind one
//! mutex. A result takes the mutex only to copy its values in. Encoding
//! ([`ProbeMetrics::chunks`]) writes one family at a time over every check
//! in name order, in chunks of about [`CHUNK_BYTES`], taking the mutex once
//! per chunk and resuming after the last check written, so scrapes never
//! hold up results for long. A check added or removed between two chunks is
//! simply in or out of the later families.
//!
//! Per check that is roughly 700 bytes (on x86_64, for an HTTPS check:
//! ~220 bytes of `CheckSeries`, 21 gauges × 16 bytes, the counters, the
//! B-tree entry) plus the label text and the check name; measured RSS is
//! about 1 KB per check in all (the ignored test `memory_per_check`).
//!
//! # Format
//! The output is the Prometheus text format 0.0.4 (counter families named
//! with their `_total` samples, no `# UNIT` / `# EOF`), which every
//! Prometheus scrapes and `promtool check metrics` accepts. Region-level
//! metrics (scheduler lag, in-flight, reload, push) stay prometheus-client
//! metrics; their (small) OpenMetrics encoding is rewritten to 0.0.4.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::check::dns::DnsTransport;
use crate::check::{CheckKind, CheckResult, Phase, Reason};
use crate::probe::{CheckDef, ResultSink, SkipReason};

type GaugeF = Gauge<f64, AtomicU64>;

/// Buckets for check durations (per check) and phase durations (per fleet):
/// network latencies from 1ms to the longest sensible deadline.
const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets for scheduler lag: normally sub-millisecond, seconds when overloaded.
const LAG_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Label names a check's own label may not take (they would collide with
/// ours); such a label is exported as `exported_<name>`, as Prometheus does.
const RESERVED_LABELS: &[&str] = &[
    "check",
    "target",
    "region",
    "phase",
    "version",
    "result",
    "reason",
    "le",
    "fingerprint_sha256",
    "issuer",
    "subject",
    "subjectalternative",
    "serialnumber",
];

/// What [`ProbeMetrics::encode`] produces: Prometheus text format 0.0.4.
const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The size [`MetricsChunks`] aims for: a chunk ends after the first check
/// that takes it to this size (so a chunk exceeds it by at most one check's
/// lines of one family).
pub const CHUNK_BYTES: usize = 64 * 1024;

// === blackbox gauges ===

/// A blackbox_exporter gauge family. `ALL` is in name order, the order
/// blackbox prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum G {
    DnsAdditionalRrs,
    DnsAnswerRrs,
    DnsAuthorityRrs,
    DnsDuration,
    DnsLookupTime,
    DnsQuerySucceeded,
    DnsSerial,
    Duration,
    FailedDueToRegex,
    HttpContentLength,
    HttpDuration,
    HttpRedirects,
    HttpSsl,
    HttpStatusCode,
    HttpUncompressedBodyLength,
    HttpVersion,
    IpAddrHash,
    IpProtocol,
    SslEarliestCertExpiry,
    SslLastChainExpiry,
    SslLastChainInfo,
    Success,
    TlsVersionInfo,
}

impl G {
    const ALL: [G; 23] = [
        G::DnsAdditionalRrs,
        G::DnsAnswerRrs,
        G::DnsAuthorityRrs,
        G::DnsDuration,
        G::DnsLookupTime,
        G::DnsQuerySucceeded,
        G::DnsSerial,
        G::Duration,
        G::FailedDueToRegex,
        G::HttpContentLength,
        G::HttpDuration,
        G::HttpRedirects,
        G::HttpSsl,
        G::HttpStatusCode,
        G::HttpUncompressedBodyLength,
        G::HttpVersion,
        G::IpAddrHash,
        G::IpProtocol,
        G::SslEarliestCertExpiry,
        G::SslLastChainExpiry,
        G::SslLastChainInfo,
        G::Success,
        G::TlsVersionInfo,
    ];

    /// Name and help text, exactly as blackbox_exporter has them.
    fn describe(self) -> (&'static str, &'static str) {
        match self {
            G::DnsAdditionalRrs => (
                "probe_dns_additional_rrs",
                "Returns number of entries in the additional resource record list",
            ),
            G::DnsAnswerRrs => (
                "probe_dns_answer_rrs",
                "Returns number of entries in the answer resource record list",
            ),
            G::DnsAuthorityRrs => (
                "probe_dns_authority_rrs",
                "Returns number of entries in the authority resource record list",
            ),
            G::DnsDuration => (
                "probe_dns_duration_seconds",
                "Duration of DNS request by phase",
            ),
            G::DnsLookupTime => (
                "probe_dns_lookup_time_seconds",
                "Returns the time taken for probe dns lookup in seconds",
            ),
            G::DnsQuerySucceeded => (
                "probe_dns_query_succeeded",
                "Displays whether or not the query was executed successfully",
            ),
            G::DnsSerial => ("probe_dns_serial", "Returns the serial number of the zone"),
            G::Duration => (
                "probe_duration_seconds",
                "Returns how long the probe took to complete in seconds",
            ),
            G::FailedDueToRegex => (
                "probe_failed_due_to_regex",
                "Indicates if probe failed due to regex",
            ),
            G::HttpContentLength => (
                "probe_http_content_length",
                "Length of http content response",
            ),
            G::HttpDuration => (
                "probe_http_duration_seconds",
                "Duration of http request by phase, summed over all redirects",
            ),
            G::HttpRedirects => ("probe_http_redirects", "The number of redirects"),
            G::HttpSsl => (
                "probe_http_ssl",
                "Indicates if SSL was used for the final redirect",
            ),
            G::HttpStatusCode => ("probe_http_status_code", "Response HTTP status code"),
            G::HttpUncompressedBodyLength => (
                "probe_http_uncompressed_body_length",
                "Length of uncompressed response body",
            ),
            G::HttpVersion => (
                "probe_http_version",
                "Returns the version of HTTP of the probe response",
            ),
            G::IpAddrHash => (
                "probe_ip_addr_hash",
                "Specifies the hash of IP address. It's useful to detect if the IP address changes.",
            ),
            G::IpProtocol => (
                "probe_ip_protocol",
                "Specifies whether probe ip protocol is IP4 or IP6",
            ),
            G::SslEarliestCertExpiry => (
                "probe_ssl_earliest_cert_expiry",
                "Returns last SSL chain expiry in unixtime",
            ),
            G::SslLastChainExpiry => (
                "probe_ssl_last_chain_expiry_timestamp_seconds",
                "Returns last SSL chain expiry in timestamp",
            ),
            G::SslLastChainInfo => (
                "probe_ssl_last_chain_info",
                "Contains SSL leaf certificate information",
            ),
            G::Success => (
                "probe_success",
                "Displays whether or not the probe was a success",
            ),
            G::TlsVersionInfo => (
                "probe_tls_version_info",
                "Returns the TLS version used or NaN when unknown",
            ),
        }
    }
}

// === samples of a result ===

/// The `phase` label values of the blackbox phase gauges: [`Phase`] in its
/// order, then DNS's `request`.
const PHASE_LABELS: [&str; 6] = [
    "phase=\"resolve\"",
    "phase=\"connect\"",
    "phase=\"tls\"",
    "phase=\"processing\"",
    "phase=\"transfer\"",
    "phase=\"request\"",
];
const PHASE_REQUEST: u8 = 5;

/// The family's own labels of a sample, after the check's labels.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Extra {
    None,
    /// Index into [`PHASE_LABELS`].
    Phase(u8),
    /// Index into the result's rendered dynamic label blocks (TLS version,
    /// certificate info).
    Dyn(u8),
}

/// One blackbox series of a result: family, the family's own labels, value.
/// 16 bytes, `Copy`: a result's samples are copied into place.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Sample {
    value: f64,
    g: G,
    extra: Extra,
}

/// Enough for any result: every family at most once, except 5 HTTP or 3
/// DNS phases.
const MAX_SAMPLES: usize = 32;

/// A result's samples, on the stack.
struct SampleBuf {
    items: [Sample; MAX_SAMPLES],
    len: usize,
    /// Rendered label blocks [`Extra::Dyn`] points at.
    dyn_labels: Vec<Box<str>>,
}

impl SampleBuf {
    fn new() -> Self {
        let empty = Sample {
            value: 0.0,
            g: G::Success,
            extra: Extra::None,
        };
        Self {
            items: [empty; MAX_SAMPLES],
            len: 0,
            dyn_labels: Vec::new(),
        }
    }

    fn put(&mut self, g: G, extra: Extra, value: f64) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = Sample { value, g, extra };
            self.len += 1;
        } else {
            debug_assert!(false, "more than {MAX_SAMPLES} samples");
        }
    }

    /// Adds a rendered label block, for [`Extra::Dyn`].
    fn dyn_label(&mut self, block: String) -> Extra {
        self.dyn_labels.push(block.into_boxed_str());
        Extra::Dyn(u8::try_from(self.dyn_labels.len() - 1).unwrap_or(u8::MAX))
    }

    fn samples(&self) -> &[Sample] {
        &self.items[..self.len]
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The series blackbox_exporter would report for `r` (see the module docs
/// for which series a result leaves out).
fn probe_samples(r: &CheckResult) -> SampleBuf {
    let mut out = SampleBuf::new();
    let none = Extra::None;
    out.put(G::Success, none, if r.success { 1.0 } else { 0.0 });
    out.put(G::Duration, none, secs(r.duration));
    out.put(G::DnsLookupTime, none, secs(r.phases.resolve));

    let remote = match r.kind {
        CheckKind::Http => r.http.as_ref().and_then(|h| h.remote_addr.as_deref()),
        CheckKind::Tcp => r.tcp.as_ref().and_then(|t| t.remote_addr.as_deref()),
        CheckKind::Dns => r.dns.as_ref().map(|d| d.server.as_str()),
    };
    if let Some(ip) = remote.and_then(parse_ip) {
        out.put(G::IpProtocol, none, if ip.is_ipv4() { 4.0 } else { 6.0 });
        let hash = match ip {
            IpAddr::V4(v4) => fnv1a32(&v4.octets()),
            IpAddr::V6(v6) => fnv1a32(&v6.octets()),
        };
        out.put(G::IpAddrHash, none, f64::from(hash));
    }

    let mut tls_spoken = r.tls.is_some();
    match r.kind {
        CheckKind::Http => {
            let default = Default::default();
            let h = r.http.as_ref().unwrap_or(&default);
            let responded = h.status.is_some();
            for phase in Phase::ALL {
                out.put(
                    G::HttpDuration,
                    Extra::Phase(phase as u8),
                    secs(r.phases.get(phase)),
                );
            }
            out.put(G::HttpStatusCode, none, h.status.map_or(0.0, f64::from));
            out.put(
                G::HttpVersion,
                none,
                h.version.as_deref().map_or(0.0, http_version_number),
            );
            // blackbox: -1 when the response had no Content-Length.
            let content_length = match (responded, h.content_length) {
                (false, _) => 0.0,
                (true, None) => -1.0,
                (true, Some(n)) => n as f64,
            };
            out.put(G::HttpContentLength, none, content_length);
            out.put(G::HttpUncompressedBodyLength, none, h.body_bytes as f64);
            out.put(G::HttpRedirects, none, f64::from(h.redirects));
            let https = h.final_url.starts_with("https:");
            out.put(G::HttpSsl, none, if https && responded { 1.0 } else { 0.0 });
            let regex_failed = matches!(
                r.reason,
                Some(Reason::HttpBodyMismatch | Reason::HttpHeaderMismatch)
            );
            out.put(
                G::FailedDueToRegex,
                none,
                if regex_failed { 1.0 } else { 0.0 },
            );
            // TLS facts may be left from an earlier hop of a redirect chain.
            tls_spoken &= https;
        }
        CheckKind::Tcp => {
            let failed = r.reason == Some(Reason::TcpExpectMismatch);
            out.put(G::FailedDueToRegex, none, if failed { 1.0 } else { 0.0 });
        }
        CheckKind::Dns => {
            let default = Default::default();
            let d = r.dns.as_ref().unwrap_or(&default);
            let responded = d.rcode.is_some();
            let request = d
                .lookup_time
                .unwrap_or(r.phases.processing + r.phases.transfer);
            for (phase, v) in [
                (Phase::Resolve as u8, r.phases.resolve),
                (Phase::Connect as u8, r.phases.connect),
                (PHASE_REQUEST, request),
            ] {
                out.put(G::DnsDuration, Extra::Phase(phase), secs(v));
            }
            out.put(G::DnsAnswerRrs, none, d.answers.len() as f64);
            out.put(G::DnsAuthorityRrs, none, d.authority.len() as f64);
            out.put(G::DnsAdditionalRrs, none, d.additional.len() as f64);
            out.put(
                G::DnsQuerySucceeded,
                none,
                if responded { 1.0 } else { 0.0 },
            );
            let serial = d
                .answers
                .iter()
                .filter(|a| a.record_type == "SOA")
                .find_map(|a| a.data.split_whitespace().nth(2)?.parse::<u32>().ok());
            if let Some(serial) = serial {
                out.put(G::DnsSerial, none, f64::from(serial));
            }
        }
    }

    if let Some(t) = r.tls.as_ref().filter(|_| tls_spoken) {
        if let Some(v) = &t.version {
            let extra = out.dyn_label(render_labels(&[("version", v)]));
            out.put(G::TlsVersionInfo, extra, 1.0);
        }
        if let Some(at) = t.earliest_expiry {
            out.put(G::SslEarliestCertExpiry, none, unix(at));
        }
        if let Some(at) = t.verified_chain_expiry.filter(|_| t.verified) {
            out.put(G::SslLastChainExpiry, none, unix(at));
        }
        if let Some(leaf) = t.leaf() {
            let block = render_labels(&[
                ("fingerprint_sha256", &leaf.fingerprint_sha256),
                ("issuer", &leaf.issuer),
                ("subject", &leaf.subject),
                ("subjectalternative", &leaf.sans.join(",")),
            ]);
            let extra = out.dyn_label(block);
            out.put(G::SslLastChainInfo, extra, 1.0);
        }
    }
    out
}

fn unix(at: DateTime<Utc>) -> f64 {
    at.timestamp() as f64
}

/// "HTTP/1.1" → 1.1, "HTTP/2" → 2, as blackbox parses `resp.Proto`.
fn http_version_number(v: &str) -> f64 {
    v.trim_start_matches("HTTP/").parse().unwrap_or(0.0)
}

/// The IP of a socket address ("1.2.3.4:80", "[::1]:53") or a bare IP.
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| s.parse::<IpAddr>())
        .ok()
}

/// FNV-1a 32-bit over the address bytes (4 for IPv4, 16 for IPv6), the
/// hash blackbox uses for `probe_ip_addr_hash`.
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

// === text format ===

/// Appends `v` escaped as a label value of the text format: `\`, `"` and
/// newline are backslash-escaped.
fn escape_label_value(out: &mut String, v: &str) {
    let mut rest = v;
    while let Some(i) = rest.find(['\\', '"', '\n']) {
        out.push_str(&rest[..i]);
        out.push_str(match rest.as_bytes()[i] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        });
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

/// `k1="v1",k2="v2"` with the values escaped (names must be valid).
fn render_labels(labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape_label_value(&mut out, v);
        out.push('"');
    }
    out
}

/// A sample value as the text format reads it: shortest round-trip decimal
/// (`1.0`, `0.12`, `1e-7`), `NaN`, `+Inf`, `-Inf`.
struct Value(f64);

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.is_nan() {
            f.write_str("NaN")
        } else if v.is_infinite() {
            f.write_str(if v > 0.0 { "+Inf" } else { "-Inf" })
        } else {
            write!(f, "{v:?}")
        }
    }
}

/// Appends `# HELP` and `# TYPE` of a family.
fn write_header(out: &mut String, name: &str, help: &str, kind: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    out.push_str(help);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// Appends one sample line `name{blocks...} value`; empty label blocks are
/// skipped, and without any the line reads `name value`.
fn write_sample(out: &mut String, name: &str, blocks: &[&str], value: impl fmt::Display) {
    out.push_str(name);
    let mut first = true;
    for b in blocks.iter().filter(|b| !b.is_empty()) {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(b);
    }
    if !first {
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A histogram over [`DURATION_BUCKETS`] (120 bytes).
#[derive(Clone, Copy, Debug, Default)]
struct Hist {
    /// Observations per bucket (not cumulative); above the last bucket only
    /// in `count`.
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Hist {
    fn observe(&mut self, v: f64) {
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| v <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }

    /// The `_bucket` (cumulative, `le` last), `_sum` and `_count` lines.
    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let mut le = String::new();
        for (bound, n) in DURATION_BUCKETS.iter().zip(self.buckets) {
            cumulative += n;
            le.clear();
            let _ = write!(le, "le=\"{}\"", Value(*bound));
            write_bucket(out, name, labels, &le, cumulative);
        }
        write_bucket(out, name, labels, "le=\"+Inf\"", self.count);
        write_suffixed(out, name, "_sum", labels, Value(self.sum));
        write_suffixed(out, name, "_count", labels, self.count);
    }
}

fn write_bucket(out: &mut String, name: &str, labels: &str, le: &str, n: u64) {
    out.push_str(name);
    out.push_str("_bucket");
    out.push('{');
    if !labels.is_empty() {
        out.push_str(labels);
        out.push(',');
    }
    out.push_str(le);
    let _ = writeln!(out, "}} {n}");
}

fn write_suffixed(out: &mut String, name: &str, suffix: &str, labels: &str, v: impl fmt::Display) {
    out.push_str(name);
    out.push_str(suffix);
    if labels.is_empty() {
        let _ = writeln!(out, " {v}");
    } else {
        let _ = writeln!(out, "{{{labels}}} {v}");
    }
}

/// The body blackbox_exporter's `/probe` returns for one result (its metric
/// names, no check/region labels), Prometheus text format.
pub fn render_probe(result: &CheckResult) -> String {
    let buf = probe_samples(result);
    let mut out = String::new();
    for g in G::ALL {
        write_gauge(&mut out, g, "", buf.samples(), &buf.dyn_labels, &mut false);
    }
    out
}

/// Appends the samples of family `g` among `samples` under the label block
/// `base`, preceded by the family's header unless `header` says it is out.
fn write_gauge(
    out: &mut String,
    g: G,
    base: &str,
    samples: &[Sample],
    dyn_labels: &[Box<str>],
    header: &mut bool,
) {
    let (name, help) = g.describe();
    for s in samples.iter().filter(|s| s.g == g) {
        if !*header {
            write_header(out, name, help, "gauge");
            *header = true;
        }
        let extra = match s.extra {
            Extra::None => "",
            Extra::Phase(i) => PHASE_LABELS.get(usize::from(i)).copied().unwrap_or(""),
            Extra::Dyn(i) => dyn_labels.get(usize::from(i)).map_or("", |b| &**b),
        };
        write_sample(out, name, &[base, extra], Value(s.value));
    }
}

// === ProbeMetrics ===

/// Gauges about pushing results to the coordinator, as the pusher counts them.
#[derive(Clone, Copy, Debug, Default)]
pub struct PushGauges {
    /// Results acknowledged by the coordinator since start.
    pub sent_total: u64,
    /// Results waiting in the spool.
    pub spooled: u64,
    /// Size of the spool on disk.
    pub spool_bytes: u64,
    /// Results dropped because the spool was full.
    pub dropped_total: u64,
    /// Push attempts that failed.
    pub failures_total: u64,
    /// Wall-clock time of the last acknowledged push.
    pub last_success_unix: Option<f64>,
}

/// Every series of one check.
#[derive(Debug)]
struct CheckSeries {
    /// `check="..",target="..",region="..",<own labels sorted>`, escaped.
    labels: Box<str>,
    /// The blackbox gauges of the latest result.
    gauges: Box<[Sample]>,
    /// Label blocks of the latest result that are not fixed text.
    dyn_labels: Box<[Box<str>]>,
    /// `varde_checks_total` by failure reason, `None` = success.
    totals: Vec<(Option<Reason>, u64)>,
    /// `varde_checks_skipped_total` by reason.
    skipped: Vec<(SkipReason, u64)>,
    /// `varde_check_duration_seconds`.
    duration: Hist,
}

impl CheckSeries {
    fn new(labels: &str) -> Self {
        Self {
            labels: labels.into(),
            gauges: Box::default(),
            dyn_labels: Box::default(),
            totals: Vec::new(),
            skipped: Vec::new(),
            duration: Hist::default(),
        }
    }
}

/// Adds `by` to the counter for `key` (creating it at 0).
fn bump<K: PartialEq>(counters: &mut Vec<(K, u64)>, key: K, by: u64) {
    match counters.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => *n += by,
        None => counters.push((key, by)),
    }
}

const KINDS: [CheckKind; 3] = [CheckKind::Http, CheckKind::Dns, CheckKind::Tcp];

/// What the mutex guards.
struct Inner {
    checks: BTreeMap<Box<str>, CheckSeries>,
    /// `varde_check_phase_duration_seconds` by [`KINDS`] and [`Phase`].
    phases: [[Hist; Phase::ALL.len()]; KINDS.len()],
}

/// Everything the probe exports on `/metrics`. Cheap to share (`Arc`); every
/// method takes `&self` and never blocks on I/O.
pub struct ProbeMetrics {
    /// `region=".."`, escaped.
    region_label: Box<str>,
    inner: Mutex<Inner>,
    /// Region-level metrics only.
    registry: Registry,
    lag: Histogram,
    in_flight: Gauge,
    reload_ok: Gauge,
    reload_success_at: GaugeF,
    push_sent: Counter,
    push_dropped: Counter,
    push_failures: Counter,
    push_spooled: Gauge,
    push_spool_bytes: Gauge,
    push_last_success: GaugeF,
}

thread_local! {
    /// Where a check's label block is rendered to compare it with the stored one.
    static LABEL_SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

impl ProbeMetrics {
    /// What [`ProbeMetrics::encode`] produces (Prometheus text format 0.0.4).
    pub const CONTENT_TYPE: &str = TEXT_CONTENT_TYPE;

    pub fn new(region: &str) -> Self {
        let mut registry = Registry::default();
        let lag = Histogram::new(LAG_BUCKETS.iter().copied());
        let in_flight = Gauge::default();
        let reload_ok = Gauge::default();
        let reload_success_at = GaugeF::default();
        let push_sent = Counter::default();
        let push_dropped = Counter::default();
        let push_failures = Counter::default();
        let push_spooled = Gauge::default();
        let push_spool_bytes = Gauge::default();
        let push_last_success = GaugeF::default();
        let r = registry.sub_registry_with_label(("region".into(), region.to_owned().into()));
        r.register(
            "varde_scheduler_lag_seconds",
            "How late runs started after their scheduled time",
            lag.clone(),
        );
        r.register(
            "varde_checks_in_flight",
            "Check runs in progress",
            in_flight.clone(),
        );
        r.register(
            "varde_config_last_reload_successful",
            "Whether the last configuration reload succeeded",
            reload_ok.clone(),
        );
        r.register(
            "varde_config_last_reload_success_timestamp_seconds",
            "Timestamp of the last successful configuration reload",
            reload_success_at.clone(),
        );
        r.register(
            "varde_push_sent",
            "Results acknowledged by the coordinator",
            push_sent.clone(),
        );
        r.register(
            "varde_push_dropped",
            "Results dropped because the spool was full",
            push_dropped.clone(),
        );
        r.register(
            "varde_push_failures",
            "Failed pushes to the coordinator",
            push_failures.clone(),
        );
        r.register(
            "varde_push_spooled_results",
            "Results waiting in the spool",
            push_spooled.clone(),
        );
        r.register(
            "varde_push_spool_bytes",
            "Size of the spool on disk",
            push_spool_bytes.clone(),
        );
        r.register(
            "varde_push_last_success_timestamp_seconds",
            "Timestamp of the last acknowledged push (0 if none yet)",
            push_last_success.clone(),
        );

        Self {
            region_label: render_labels(&[("region", region)]).into(),
            inner: Mutex::new(Inner {
                checks: BTreeMap::new(),
                phases: Default::default(),
            }),
            registry,
            lag,
            in_flight,
            reload_ok,
            reload_success_at,
            push_sent,
            push_dropped,
            push_failures,
            push_spooled,
            push_spool_bytes,
            push_last_success,
        }
    }

    /// Prometheus text exposition (what `/metrics` serves): every chunk of
    /// [`ProbeMetrics::chunks`] in one string.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let mut state = ChunkState::default();
        while self.next_chunk(&mut state, &mut out) {}
        out
    }

    /// The exposition in chunks of about [`CHUNK_BYTES`], for streaming a
    /// response: each chunk takes the lock only for the checks it writes.
    pub fn chunks(self: &Arc<Self>) -> MetricsChunks {
        MetricsChunks {
            metrics: Arc::clone(self),
            state: ChunkState::default(),
        }
    }

    /// Records a configuration reload.
    pub fn config_reload(&self, ok: bool, at: DateTime<Utc>) {
        self.reload_ok.set(i64::from(ok));
        if ok {
            self.reload_success_at.set(unix_precise(at));
        }
    }

    /// Sets the push gauges from the pusher's own counts. Counters never go
    /// down: a smaller total than already exported is ignored.
    pub fn push_stats(&self, s: PushGauges) {
        set_counter(&self.push_sent, s.sent_total);
        set_counter(&self.push_dropped, s.dropped_total);
        set_counter(&self.push_failures, s.failures_total);
        self.push_spooled.set(saturating_i64(s.spooled));
        self.push_spool_bytes.set(saturating_i64(s.spool_bytes));
        self.push_last_success
            .set(s.last_success_unix.unwrap_or(0.0));
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Renders the label block of `def` into `out`: `check`, `target`,
    /// `region`, then the check's labels (sorted, as the `BTreeMap` holds
    /// them), names made valid and unique.
    fn render_base_labels(&self, def: &CheckDef, out: &mut String) {
        out.clear();
        out.push_str("check=\"");
        escape_label_value(out, &def.name);
        out.push_str("\",target=\"");
        escape_label_value(out, &def.target);
        out.push_str("\",");
        out.push_str(&self.region_label);
        let mut taken: Vec<String> = Vec::new();
        for (k, v) in &def.labels {
            let mut name = sanitize_label_name(k);
            if RESERVED_LABELS.contains(&name.as_str()) {
                name.insert_str(0, "exported_");
            }
            if taken.contains(&name) {
                continue;
            }
            out.push(',');
            out.push_str(&name);
            out.push_str("=\"");
            escape_label_value(out, v);
            out.push('"');
            taken.push(name);
        }
    }

    /// Runs `f` on the series of `def` under the lock (created if missing,
    /// started over if its label block changed without a removal). Whatever
    /// `f` returns is dropped after the lock is released.
    fn with_series<T>(
        &self,
        def: &CheckDef,
        f: impl FnOnce(&mut CheckSeries, &mut Inner2) -> T,
    ) -> T {
        LABEL_SCRATCH.with_borrow_mut(|labels| {
            self.render_base_labels(def, labels);
            let mut guard = self.lock();
            let Inner { checks, phases } = &mut *guard;
            let mut stale = None;
            let e = match checks.get_mut(def.name.as_str()) {
                Some(e) => {
                    if *e.labels != **labels {
                        stale = Some(std::mem::replace(e, CheckSeries::new(labels)));
                    }
                    e
                }
                None => checks
                    .entry(def.name.as_str().into())
                    .or_insert_with(|| CheckSeries::new(labels)),
            };
            let out = f(e, &mut Inner2 { phases });
            drop(guard);
            drop(stale);
            out
        })
    }
}

/// The fleet-level part of [`Inner`] a result updates besides its check.
struct Inner2<'a> {
    phases: &'a mut [[Hist; Phase::ALL.len()]; KINDS.len()],
}

/// The phases a kind of check goes through (a phase it never enters would
/// only add empty histograms).
fn phases_of(r: &CheckResult) -> impl Iterator<Item = Phase> + '_ {
    let dns_tcp = r
        .dns
        .as_ref()
        .is_some_and(|d| d.transport == DnsTransport::Tcp || d.truncated_retry);
    Phase::ALL.into_iter().filter(move |p| match r.kind {
        CheckKind::Http | CheckKind::Tcp => *p != Phase::Tls || r.tls.is_some(),
        CheckKind::Dns => match p {
            Phase::Resolve | Phase::Processing => true,
            Phase::Connect => dns_tcp,
            Phase::Tls | Phase::Transfer => false,
        },
    })
}

fn kind_index(k: CheckKind) -> usize {
    match k {
        CheckKind::Http => 0,
        CheckKind::Dns => 1,
        CheckKind::Tcp => 2,
    }
}

impl ResultSink for ProbeMetrics {
    fn result(&self, def: &CheckDef, r: &CheckResult) {
        let mut buf = probe_samples(r);
        let dyn_labels = std::mem::take(&mut buf.dyn_labels).into_boxed_slice();
        let samples = buf.samples();
        let failure = r.reason.filter(|_| !r.success);
        let kind = kind_index(r.kind);
        let duration = secs(r.duration);
        // Replaced allocations are dropped after the lock is released.
        let _old = self.with_series(def, |e, fleet| {
            let mut old_gauges = None;
            if e.gauges.len() == samples.len() {
                e.gauges.copy_from_slice(samples);
            } else {
                old_gauges = Some(std::mem::replace(&mut e.gauges, samples.into()));
            }
            let old_dyn = if *e.dyn_labels == *dyn_labels {
                None
            } else {
                Some(std::mem::replace(&mut e.dyn_labels, dyn_labels))
            };
            // The success series exists from the first result on, so a
            // first failure is an increase of an existing counter.
            bump(&mut e.totals, None, u64::from(failure.is_none()));
            if failure.is_some() {
                bump(&mut e.totals, failure, 1);
            }
            e.duration.observe(duration);
            for phase in phases_of(r) {
                fleet.phases[kind][phase as usize].observe(secs(r.phases.get(phase)));
            }
            (old_gauges, old_dyn)
        });
    }

    fn removed(&self, def: &CheckDef) {
        let gone = self.lock().checks.remove(def.name.as_str());
        drop(gone);
    }

    fn lag(&self, _def: &CheckDef, lag: Duration) {
        self.lag.observe(secs(lag));
    }

    fn skipped(&self, def: &CheckDef, why: SkipReason) {
        self.with_series(def, |e, _| bump(&mut e.skipped, why, 1));
    }

    fn in_flight(&self, n: usize) {
        self.in_flight.set(saturating_i64(n as u64));
    }
}

// === encoding ===

/// The families of `/metrics`, in output order.
#[derive(Clone, Copy, Debug)]
enum Family {
    Gauge(G),
    ChecksTotal,
    CheckDuration,
    PhaseDuration,
    Skipped,
    Region,
}

impl Family {
    fn at(i: usize) -> Option<Family> {
        let n = G::ALL.len();
        if i < n {
            return Some(Family::Gauge(G::ALL[i]));
        }
        [
            Family::ChecksTotal,
            Family::CheckDuration,
            Family::PhaseDuration,
            Family::Skipped,
            Family::Region,
        ]
        .get(i - n)
        .copied()
    }

    fn per_check(self) -> bool {
        !matches!(self, Family::PhaseDuration | Family::Region)
    }
}

const CHECKS_TOTAL: &str = "varde_checks_total";
const CHECK_DURATION: &str = "varde_check_duration_seconds";
const PHASE_DURATION: &str = "varde_check_phase_duration_seconds";
const SKIPPED: &str = "varde_checks_skipped_total";

/// Where an encode stands.
#[derive(Debug, Default)]
struct ChunkState {
    /// Index for [`Family::at`].
    family: usize,
    /// The last check written in the current family.
    after: Option<Box<str>>,
    /// Whether the current family's `# HELP`/`# TYPE` are out.
    header: bool,
}

impl ProbeMetrics {
    /// Appends the next chunk to `out`; false when there was nothing left.
    fn next_chunk(&self, st: &mut ChunkState, out: &mut String) -> bool {
        let start = out.len();
        while let Some(family) = Family::at(st.family) {
            let finished = if family.per_check() {
                self.write_checks(family, st, out, start)
            } else {
                self.write_fleet(family, out);
                true
            };
            if finished {
                st.family += 1;
                st.after = None;
                st.header = false;
            }
            if out.len() - start >= CHUNK_BYTES {
                break;
            }
        }
        out.len() > start
    }

    /// Writes `family` for the checks after `st.after` until the chunk is
    /// full; true when every check is written.
    fn write_checks(
        &self,
        family: Family,
        st: &mut ChunkState,
        out: &mut String,
        start: usize,
    ) -> bool {
        let inner = self.lock();
        let range = match &st.after {
            Some(after) => inner
                .checks
                .range::<str, _>((Bound::Excluded(&**after), Bound::Unbounded)),
            None => inner.checks.range::<str, _>(..),
        };
        for (name, e) in range {
            write_check_family(family, e, &mut st.header, out);
            if out.len() - start >= CHUNK_BYTES {
                st.after = Some(name.clone());
                return false;
            }
        }
        true
    }

    fn write_fleet(&self, family: Family, out: &mut String) {
        match family {
            Family::PhaseDuration => {
                let phases = self.lock().phases;
                let mut header = false;
                let mut labels = String::new();
                for (kind, hists) in KINDS.iter().zip(&phases) {
                    for (phase, h) in Phase::ALL.iter().zip(hists) {
                        if h.count == 0 {
                            continue;
                        }
                        if !header {
                            write_header(
                                out,
                                PHASE_DURATION,
                                "Duration of check runs by kind of check and phase, summed over redirects (all checks of the region together)",
                                "histogram",
                            );
                            header = true;
                        }
                        labels.clear();
                        labels.push_str(&self.region_label);
                        labels.push_str(",kind=\"");
                        labels.push_str(kind.as_str());
                        labels.push_str("\",phase=\"");
                        labels.push_str(phase.as_str());
                        labels.push('"');
                        h.write(out, PHASE_DURATION, &labels);
                    }
                }
            }
            Family::Region => out.push_str(&encode_text(&self.registry)),
            _ => {}
        }
    }
}

/// Appends the samples of `family` for one check.
fn write_check_family(family: Family, e: &CheckSeries, header: &mut bool, out: &mut String) {
    let mut head = |out: &mut String, name: &str, help: &str, kind: &str| {
        if !*header {
            write_header(out, name, help, kind);
            *header = true;
        }
    };
    match family {
        Family::Gauge(g) => write_gauge(out, g, &e.labels, &e.gauges, &e.dyn_labels, header),
        Family::ChecksTotal => {
            for (reason, n) in &e.totals {
                head(
                    out,
                    CHECKS_TOTAL,
                    "Check runs by result and failure reason (reason=\"none\" on success)",
                    "counter",
                );
                match reason {
                    None => write_sample(
                        out,
                        CHECKS_TOTAL,
                        &[&e.labels, "result=\"success\",reason=\"none\""],
                        n,
                    ),
                    Some(r) => {
                        let tail = format!("result=\"failure\",reason=\"{}\"", r.as_str());
                        write_sample(out, CHECKS_TOTAL, &[&e.labels, &tail], n);
                    }
                }
            }
        }
        Family::CheckDuration => {
            if e.duration.count > 0 {
                head(
                    out,
                    CHECK_DURATION,
                    "Total duration of check runs",
                    "histogram",
                );
                e.duration.write(out, CHECK_DURATION, &e.labels);
            }
        }
        Family::Skipped => {
            for (why, n) in &e.skipped {
                head(out, SKIPPED, "Scheduled runs skipped, by reason", "counter");
                let reason = format!("reason=\"{}\"", why.as_str());
                write_sample(out, SKIPPED, &[&e.labels, &reason], n);
            }
        }
        Family::PhaseDuration | Family::Region => {}
    }
}

/// The exposition of a [`ProbeMetrics`] in chunks of about [`CHUNK_BYTES`]
/// (see [`ProbeMetrics::chunks`]). Concatenated they are
/// [`ProbeMetrics::encode`]; every family's samples are within one run of
/// chunks under a single `# HELP`/`# TYPE`.
pub struct MetricsChunks {
    metrics: Arc<ProbeMetrics>,
    state: ChunkState,
}

impl Iterator for MetricsChunks {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let mut out = String::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4);
        self.metrics
            .next_chunk(&mut self.state, &mut out)
            .then_some(out)
    }
}

// === encoding helpers ===

fn unix_precise(at: DateTime<Utc>) -> f64 {
    at.timestamp() as f64 + f64::from(at.timestamp_subsec_millis()) / 1000.0
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Raises a counter to `total` (never lowers it).
fn set_counter(c: &Counter, total: u64) {
    c.inner().fetch_max(total, Ordering::Relaxed);
}

/// A name valid as a Prometheus label: `[a-zA-Z_][a-zA-Z0-9_]*`, not `__`-prefixed.
fn sanitize_label_name(k: &str) -> String {
    let mut s: String = k
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) || s.starts_with("__") {
        s.insert_str(0, "exported_");
    }
    s
}
/// Encodes `registry` in the Prometheus text format 0.0.4.
fn encode_text(registry: &Registry) -> String {
    let mut om = String::new();
    text::encode_registry(&mut om, registry).expect("writing to a String cannot fail");
    openmetrics_to_text(&om)
}

/// Rewrites prometheus-client's OpenMetrics text to Prometheus text 0.0.4:
/// a counter family `x` (samples `x_total`) is declared as `x_total`,
/// `# UNIT` / `# EOF` lines go, and the period prometheus-client appends to
/// every help text is taken off again (so help reads as blackbox's does).
/// Label values are escaped the same way in both formats, so sample lines
/// stay as they are.
fn openmetrics_to_text(om: &str) -> String {
    let counters: HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 16 * counters.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let Some((prefix, rest)) = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)))
        else {
            // `name{} 1` (no labels, as in /probe answers) reads `name 1` in
            // blackbox's output; both parse, the short form is the familiar one.
            match line.split_once("{} ") {
                Some((name, value)) if !name.contains(['{', ' ']) => {
                    out.push_str(name);
                    out.push(' ');
                    out.push_str(value);
                }
                _ => out.push_str(line),
            }
            out.push('\n');
            continue;
        };
        let (name, mut tail) = rest.split_once(' ').unwrap_or((rest, ""));
        if prefix == "# HELP " {
            tail = tail.strip_suffix('.').unwrap_or(tail);
        }
        let total = if counters.contains(name) {
            "_total"
        } else {
            ""
        };
        out.push_str(&format!("{prefix}{name}{total} {tail}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_blackbox_for_loopback() {
        // blackbox_exporter 0.23 reports probe_ip_addr_hash 3.668918509e+09 for 127.0.0.1.
        assert_eq!(fnv1a32(&[127, 0, 0, 1]), 3_668_918_509);
    }

    #[test]
    fn label_names_are_made_valid() {
        assert_eq!(sanitize_label_name("team"), "team");
        assert_eq!(
            sanitize_label_name("app.kubernetes/name"),
            "app_kubernetes_name"
        );
        assert_eq!(sanitize_label_name("1x"), "exported_1x");
        assert_eq!(sanitize_label_name("__name__"), "exported___name__");
        assert_eq!(sanitize_label_name(""), "exported_");
    }

    #[test]
    fn label_values_are_escaped() {
        let esc = |v: &str| {
            let mut s = String::new();
            escape_label_value(&mut s, v);
            s
        };
        assert_eq!(esc("plain"), "plain");
        assert_eq!(esc(""), "");
        assert_eq!(esc("a\"b"), "a\\\"b");
        assert_eq!(esc("a\\b"), "a\\\\b");
        assert_eq!(esc("a\nb"), "a\\nb");
        assert_eq!(esc("\\\"\n"), "\\\\\\\"\\n");
        // Only these three: tabs, carriage returns and UTF-8 pass through.
        assert_eq!(esc("t\tr\rü✓"), "t\tr\rü✓");
        assert_eq!(
            render_labels(&[("a", "x\"y"), ("b", "")]),
            "a=\"x\\\"y\",b=\"\""
        );
    }

    #[test]
    fn base_labels_are_rendered_once_in_order() {
        let m = ProbeMetrics::new("r\"1");
        let def = CheckDef {
            name: "c\\1".into(),
            target: "t\n".into(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            labels: [("team", "sre"), ("region", "x"), ("exported_region", "y")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            regions: vec![],
            depends_on: vec![],
            spec: crate::check::CheckSpec::Tcp(Default::default()),
        };
        let mut s = String::new();
        m.render_base_labels(&def, &mut s);
        assert_eq!(
            s,
            "check=\"c\\\\1\",target=\"t\\n\",region=\"r\\\"1\",exported_region=\"y\",team=\"sre\""
        );
    }

    #[test]
    fn values_as_the_text_format_reads_them() {
        let v = |x: f64| Value(x).to_string();
        assert_eq!(v(1.0), "1.0");
        assert_eq!(v(0.12), "0.12");
        assert_eq!(v(-1.0), "-1.0");
        assert_eq!(v(3_668_918_509.0), "3668918509.0");
        assert_eq!(v(f64::NAN), "NaN");
        assert_eq!(v(f64::INFINITY), "+Inf");
        assert_eq!(v(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn histogram_lines_are_cumulative() {
        let mut h = Hist::default();
        for v in [0.0005, 0.003, 0.003, 11.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.write(&mut out, "h", "a=\"b\"");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "h_bucket{a=\"b\",le=\"0.001\"} 1");
        assert_eq!(lines[2], "h_bucket{a=\"b\",le=\"0.005\"} 3");
        assert_eq!(lines[12], "h_bucket{a=\"b\",le=\"10.0\"} 3");
        assert_eq!(lines[13], "h_bucket{a=\"b\",le=\"+Inf\"} 4");
        assert_eq!(lines[14], "h_sum{a=\"b\"} 11.0065");
        assert_eq!(lines[15], "h_count{a=\"b\"} 4");
    }

    #[test]
    fn samples_are_small() {
        assert_eq!(std::mem::size_of::<Sample>(), 16);
        assert!(std::mem::size_of::<CheckSeries>() <= 256);
    }

    #[test]
    fn counters_are_declared_with_their_total_name() {
        let om = "# HELP c C.\n# TYPE c counter\nc_total 1\n# HELP g G. x.\n# TYPE g gauge\n# UNIT g seconds\ng 2\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP c_total C\n# TYPE c_total counter\nc_total 1\n# HELP g G. x\n# TYPE g gauge\ng 2\n"
        );
    }

    #[test]
    fn http_versions_as_blackbox_numbers() {
        assert_eq!(http_version_number("HTTP/1.1"), 1.1);
        assert_eq!(http_version_number("HTTP/2"), 2.0);
        assert_eq!(http_version_number("HTTP/1.0"), 1.0);
    }
}
