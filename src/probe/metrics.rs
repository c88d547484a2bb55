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
//! # Format
//! prometheus-client encodes OpenMetrics text; [`ProbeMetrics::encode`]
//! rewrites it to the Prometheus text format 0.0.4 (counter families named
//! with their `_total` samples, no `# UNIT` / `# EOF`), which every Prometheus
//! scrapes and `promtool check metrics` accepts.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::check::dns::DnsTransport;
use crate::check::{CheckKind, CheckResult, Phase, Reason};
use crate::probe::{CheckDef, ResultSink, SkipReason};

/// A label set in a fixed order: `check`, `target`, `region`, the check's own
/// labels sorted by name, then the family's own labels (`phase`, ...).
type Labels = Vec<(String, String)>;
type GaugeF = Gauge<f64, AtomicU64>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Buckets for check and phase durations: network latencies from 1ms to the
/// longest sensible deadline.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
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

/// One blackbox series of a result: family, the family's own labels, value.
struct Sample {
    g: G,
    labels: Labels,
    value: f64,
}

fn label(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The series blackbox_exporter would report for `r` (see the module docs
/// for which series a result leaves out).
fn probe_samples(r: &CheckResult) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut put = |g: G, labels: Labels, value: f64| out.push(Sample { g, labels, value });
    put(G::Success, vec![], if r.success { 1.0 } else { 0.0 });
    put(G::Duration, vec![], secs(r.duration));
    put(G::DnsLookupTime, vec![], secs(r.phases.resolve));

    let remote = match r.kind {
        CheckKind::Http => r.http.as_ref().and_then(|h| h.remote_addr.clone()),
        CheckKind::Tcp => r.tcp.as_ref().and_then(|t| t.remote_addr.clone()),
        CheckKind::Dns => r.dns.as_ref().map(|d| d.server.clone()),
    };
    if let Some(ip) = remote.as_deref().and_then(parse_ip) {
        put(G::IpProtocol, vec![], if ip.is_ipv4() { 4.0 } else { 6.0 });
        let octets = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        put(G::IpAddrHash, vec![], f64::from(fnv1a32(&octets)));
    }

    let mut tls_spoken = r.tls.is_some();
    match r.kind {
        CheckKind::Http => {
            let h = r.http.clone().unwrap_or_default();
            let responded = h.status.is_some();
            for phase in Phase::ALL {
                put(
                    G::HttpDuration,
                    vec![label("phase", phase.as_str())],
                    secs(r.phases.get(phase)),
                );
            }
            put(G::HttpStatusCode, vec![], h.status.map_or(0.0, f64::from));
            put(
                G::HttpVersion,
                vec![],
                h.version.as_deref().map_or(0.0, http_version_number),
            );
            // blackbox: -1 when the response had no Content-Length.
            let content_length = match (responded, h.content_length) {
                (false, _) => 0.0,
                (true, None) => -1.0,
                (true, Some(n)) => n as f64,
            };
            put(G::HttpContentLength, vec![], content_length);
            put(G::HttpUncompressedBodyLength, vec![], h.body_bytes as f64);
            put(G::HttpRedirects, vec![], f64::from(h.redirects));
            let https = h.final_url.starts_with("https:");
            put(
                G::HttpSsl,
                vec![],
                if https && responded { 1.0 } else { 0.0 },
            );
            let regex_failed = matches!(
                r.reason,
                Some(Reason::HttpBodyMismatch | Reason::HttpHeaderMismatch)
            );
            put(
                G::FailedDueToRegex,
                vec![],
                if regex_failed { 1.0 } else { 0.0 },
            );
            // TLS facts may be left from an earlier hop of a redirect chain.
            tls_spoken &= https;
        }
        CheckKind::Tcp => {
            let failed = r.reason == Some(Reason::TcpExpectMismatch);
            put(G::FailedDueToRegex, vec![], if failed { 1.0 } else { 0.0 });
        }
        CheckKind::Dns => {
            let d = r.dns.clone().unwrap_or_default();
            let responded = d.rcode.is_some();
            let request = d
                .lookup_time
                .unwrap_or(r.phases.processing + r.phases.transfer);
            for (phase, v) in [
                ("resolve", r.phases.resolve),
                ("connect", r.phases.connect),
                ("request", request),
            ] {
                put(G::DnsDuration, vec![label("phase", phase)], secs(v));
            }
            put(G::DnsAnswerRrs, vec![], d.answers.len() as f64);
            put(G::DnsAuthorityRrs, vec![], d.authority.len() as f64);
            put(G::DnsAdditionalRrs, vec![], d.additional.len() as f64);
            put(
                G::DnsQuerySucceeded,
                vec![],
                if responded { 1.0 } else { 0.0 },
            );
            let serial = d
                .answers
                .iter()
                .filter(|a| a.record_type == "SOA")
                .find_map(|a| a.data.split_whitespace().nth(2)?.parse::<u32>().ok());
            if let Some(serial) = serial {
                put(G::DnsSerial, vec![], f64::from(serial));
            }
        }
    }

    if let Some(t) = r.tls.as_ref().filter(|_| tls_spoken) {
        if let Some(v) = &t.version {
            put(G::TlsVersionInfo, vec![label("version", v.clone())], 1.0);
        }
        if let Some(at) = t.earliest_expiry {
            put(G::SslEarliestCertExpiry, vec![], unix(at));
        }
        if let Some(at) = t.verified_chain_expiry.filter(|_| t.verified) {
            put(G::SslLastChainExpiry, vec![], unix(at));
        }
        if let Some(leaf) = t.leaf() {
            let info = vec![
                label("fingerprint_sha256", leaf.fingerprint_sha256.clone()),
                label("issuer", leaf.issuer.clone()),
                label("subject", leaf.subject.clone()),
                label("subjectalternative", leaf.sans.join(",")),
            ];
            put(G::SslLastChainInfo, info, 1.0);
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

/// The body blackbox_exporter's `/probe` returns for one result (its metric
/// names, no check/region labels), Prometheus text format.
pub fn render_probe(result: &CheckResult) -> String {
    let samples = probe_samples(result);
    let mut registry = Registry::default();
    for g in G::ALL {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.g == g).collect();
        if mine.is_empty() {
            continue;
        }
        let family = Family::<Labels, GaugeF>::default();
        for s in mine {
            family.get_or_create(&s.labels).set(s.value);
        }
        let (name, help) = g.describe();
        registry.register(name, help, family);
    }
    encode_text(&registry)
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

/// The series one check has produced, so removal can name every label set
/// (prometheus-client removes by exact label set only).
#[derive(Default)]
struct Emitted {
    base: Labels,
    gauges: HashSet<(G, Labels)>,
    checks_total: HashSet<Labels>,
    duration: HashSet<Labels>,
    phases: HashSet<Labels>,
    skipped: HashSet<Labels>,
}

/// Everything the probe exports on `/metrics`. Cheap to share (`Arc`); every
/// method takes `&self` and never blocks on I/O.
pub struct ProbeMetrics {
    region: String,
    registry: Registry,
    gauges: HashMap<G, Family<Labels, GaugeF>>,
    checks_total: Family<Labels, Counter>,
    check_duration: HistogramFamily,
    phase_duration: HistogramFamily,
    skipped: Family<Labels, Counter>,
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
    /// Per check name. Held while a check's series change, so a removal
    /// never interleaves with a result of the same check.
    emitted: Mutex<HashMap<String, Emitted>>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS.iter().copied())
}

impl ProbeMetrics {
    /// What [`ProbeMetrics::encode`] produces (Prometheus text format 0.0.4).
    pub const CONTENT_TYPE: &str = TEXT_CONTENT_TYPE;

    pub fn new(region: &str) -> Self {
        let mut registry = Registry::default();
        let mut gauges = HashMap::new();
        for g in G::ALL {
            let family = Family::<Labels, GaugeF>::default();
            let (name, help) = g.describe();
            registry.register(name, help, family.clone());
            gauges.insert(g, family);
        }
        let checks_total = Family::<Labels, Counter>::default();
        registry.register(
            "varde_checks",
            "Check runs by result and failure reason (reason=\"none\" on success)",
            checks_total.clone(),
        );
        let check_duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "varde_check_duration_seconds",
            "Total duration of check runs",
            check_duration.clone(),
        );
        let phase_duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "varde_check_phase_duration_seconds",
            "Duration of check runs by phase, summed over redirects",
            phase_duration.clone(),
        );
        let skipped = Family::<Labels, Counter>::default();
        registry.register(
            "varde_checks_skipped",
            "Scheduled runs skipped, by reason",
            skipped.clone(),
        );

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
            region: region.to_owned(),
            registry,
            gauges,
            checks_total,
            check_duration,
            phase_duration,
            skipped,
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
            emitted: Mutex::new(HashMap::new()),
        }
    }

    /// Prometheus text exposition (what `/metrics` serves).
    pub fn encode(&self) -> String {
        encode_text(&self.registry)
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Emitted>> {
        self.emitted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `check`, `target`, `region`, then the check's labels (sorted, as the
    /// `BTreeMap` holds them), names made valid and unique.
    fn base_labels(&self, def: &CheckDef) -> Labels {
        let mut out = vec![
            label("check", def.name.clone()),
            label("target", def.target.clone()),
            label("region", self.region.clone()),
        ];
        for (k, v) in &def.labels {
            let mut name = sanitize_label_name(k);
            if RESERVED_LABELS.contains(&name.as_str()) {
                name = format!("exported_{name}");
            }
            if out.iter().any(|(n, _)| *n == name) {
                continue;
            }
            out.push((name, v.clone()));
        }
        out
    }

    /// The record for `def`, emptied first if its base labels changed
    /// (a changed definition that was not reported as removed).
    fn record<'m>(&self, map: &'m mut HashMap<String, Emitted>, def: &CheckDef) -> &'m mut Emitted {
        let base = self.base_labels(def);
        let e = map.entry(def.name.clone()).or_default();
        if e.base != base {
            self.forget(e);
            e.base = base;
        }
        e
    }

    /// Removes every series in `e`.
    fn forget(&self, e: &mut Emitted) {
        for (g, labels) in e.gauges.drain() {
            self.gauges[&g].remove(&labels);
        }
        for l in e.checks_total.drain() {
            self.checks_total.remove(&l);
        }
        for l in e.duration.drain() {
            self.check_duration.remove(&l);
        }
        for l in e.phases.drain() {
            self.phase_duration.remove(&l);
        }
        for l in e.skipped.drain() {
            self.skipped.remove(&l);
        }
    }
}

/// The phases a kind of check goes through (a phase it never enters would
/// only add empty histograms).
fn phases_of(r: &CheckResult) -> Vec<Phase> {
    match r.kind {
        CheckKind::Http | CheckKind::Tcp => Phase::ALL
            .into_iter()
            .filter(|p| *p != Phase::Tls || r.tls.is_some())
            .collect(),
        CheckKind::Dns => {
            let tcp = r
                .dns
                .as_ref()
                .is_some_and(|d| d.transport == DnsTransport::Tcp || d.truncated_retry);
            [Phase::Resolve, Phase::Connect, Phase::Processing]
                .into_iter()
                .filter(|p| *p != Phase::Connect || tcp)
                .collect()
        }
    }
}

fn with(base: &Labels, extra: impl IntoIterator<Item = (String, String)>) -> Labels {
    let mut l = base.clone();
    l.extend(extra);
    l
}

impl ResultSink for ProbeMetrics {
    fn result(&self, def: &CheckDef, r: &CheckResult) {
        let mut map = self.lock();
        let e = self.record(&mut map, def);

        let mut now = HashSet::new();
        for s in probe_samples(r) {
            let labels = with(&e.base, s.labels);
            self.gauges[&s.g].get_or_create(&labels).set(s.value);
            now.insert((s.g, labels));
        }
        for (g, labels) in e.gauges.difference(&now) {
            self.gauges[g].remove(labels);
        }
        e.gauges = now;

        // Pre-create the success series so a first failure is an increase.
        let ok = with(
            &e.base,
            [label("result", "success"), label("reason", "none")],
        );
        let this = match r.reason.filter(|_| !r.success) {
            None => ok.clone(),
            Some(reason) => with(
                &e.base,
                [label("result", "failure"), label("reason", reason.as_str())],
            ),
        };
        self.checks_total.get_or_create(&ok).inc_by(0);
        self.checks_total.get_or_create(&this).inc();
        e.checks_total.insert(ok);
        e.checks_total.insert(this);

        self.check_duration
            .get_or_create(&e.base)
            .observe(secs(r.duration));
        e.duration.insert(e.base.clone());
        for phase in phases_of(r) {
            let labels = with(&e.base, [label("phase", phase.as_str())]);
            self.phase_duration
                .get_or_create(&labels)
                .observe(secs(r.phases.get(phase)));
            e.phases.insert(labels);
        }
    }

    fn removed(&self, def: &CheckDef) {
        if let Some(mut e) = self.lock().remove(&def.name) {
            self.forget(&mut e);
        }
    }

    fn lag(&self, _def: &CheckDef, lag: Duration) {
        self.lag.observe(secs(lag));
    }

    fn skipped(&self, def: &CheckDef, why: SkipReason) {
        let mut map = self.lock();
        let e = self.record(&mut map, def);
        let labels = with(&e.base, [label("reason", why.as_str())]);
        self.skipped.get_or_create(&labels).inc();
        e.skipped.insert(labels);
    }

    fn in_flight(&self, n: usize) {
        self.in_flight.set(saturating_i64(n as u64));
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
