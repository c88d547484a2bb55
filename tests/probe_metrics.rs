//! `/metrics` and `/probe` output: real check results (from in-process
//! servers) and hand-built ones go through the `ResultSink` trait; the text is
//! parsed back and checked with `promtool check metrics` (skipped only when
//! promtool is missing and `VARDE_REQUIRE_PROMTOOL` is unset; CI sets it).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use varde::check::dns::DnsRecord;
use varde::check::{
    CheckKind, CheckResult, CheckSpec, DnsFacts, HttpFacts, HttpOptions, Phases, Reason, TlsFacts,
};
use varde::probe::metrics::{ProbeMetrics, PushGauges, render_probe};
use varde::probe::{CheckDef, ResultSink, SkipReason};

const TIMEOUT: Duration = Duration::from_secs(5);

// === helpers ===

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the sample lines of the text format, unescaping label values.
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).expect("sample has a value");
        let name = line[..name_end].to_owned();
        let mut labels = Vec::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices();
            let mut key = String::new();
            loop {
                let (_, c) = chars.next().expect("unterminated label set");
                match c {
                    '}' => break,
                    ',' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line}");
                        let mut value = String::new();
                        loop {
                            match chars.next().expect("unterminated value").1 {
                                '"' => break,
                                '\\' => match chars.next().unwrap().1 {
                                    'n' => value.push('\n'),
                                    c @ ('\\' | '"') => value.push(c),
                                    c => panic!("bad escape \\{c} in {line}"),
                                },
                                c => value.push(c),
                            }
                        }
                        labels.push((std::mem::take(&mut key), value));
                    }
                    c => key.push(c),
                }
            }
            let consumed = chars.next().map_or(r.len(), |(i, _)| i);
            rest = &r[consumed..];
        }
        let value = rest.trim().parse().unwrap_or_else(|_| panic!("{line}"));
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The samples of `name` whose labels include all of `want`.
fn find<'a>(samples: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name && want.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .collect()
}

#[track_caller]
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let found = find(samples, name, want);
    assert_eq!(found.len(), 1, "{name}{want:?}: {found:#?}");
    found[0].value
}

#[track_caller]
fn absent(samples: &[Sample], name: &str, want: &[(&str, &str)]) {
    let found = find(samples, name, want);
    assert!(
        found.is_empty(),
        "{name}{want:?} should be gone: {found:#?}"
    );
}

/// Runs `promtool check metrics` on `text`.
#[track_caller]
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("VARDE_REQUIRE_PROMTOOL").is_none() => {
            eprintln!(
                "SKIPPED promtool check: promtool not runnable ({e}); set VARDE_REQUIRE_PROMTOOL=1 to fail instead"
            );
            return;
        }
        Err(e) => panic!("promtool required (VARDE_REQUIRE_PROMTOOL) but not runnable: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics failed ({}):\n{}{}\n--- input ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

fn def(name: &str, target: &str, labels: &[(&str, &str)]) -> CheckDef {
    CheckDef {
        name: name.to_owned(),
        target: target.to_owned(),
        interval: Duration::from_secs(30),
        timeout: TIMEOUT,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        regions: vec![],
        depends_on: vec![],
        spec: CheckSpec::Http(HttpOptions {
            url: target.to_owned(),
            ..HttpOptions::default()
        }),
    }
}

fn base_result(kind: CheckKind, success: bool, reason: Option<Reason>) -> CheckResult {
    CheckResult {
        kind,
        target: "t".into(),
        success,
        reason,
        message: String::new(),
        started_at: utc(2026, 1, 1),
        duration: Duration::from_millis(120),
        phases: Phases {
            resolve: Duration::from_millis(1),
            connect: Duration::from_millis(2),
            tls: Duration::from_millis(3),
            processing: Duration::from_millis(4),
            transfer: Duration::from_millis(5),
        },
        tls: None,
        http: None,
        dns: None,
        tcp: None,
    }
}

fn https_ok() -> CheckResult {
    CheckResult {
        http: Some(HttpFacts {
            status: Some(200),
            version: Some("HTTP/2".into()),
            final_url: "https://example.com/".into(),
            remote_addr: Some("[2001:db8::1]:443".into()),
            content_length: Some(5),
            body_bytes: 5,
            ..HttpFacts::default()
        }),
        tls: Some(TlsFacts {
            version: Some("TLS 1.3".into()),
            verified: true,
            earliest_expiry: Some(utc(2031, 1, 1)),
            verified_chain_expiry: Some(utc(2031, 1, 1)),
            ..TlsFacts::default()
        }),
        ..base_result(CheckKind::Http, true, None)
    }
}

fn metric_names(text: &str) -> BTreeSet<String> {
    parse(text).into_iter().map(|s| s.name).collect()
}

// === /metrics ===

#[tokio::test]
async fn real_http_check_exports_blackbox_gauges_with_check_labels() {
    let server = Server::http(|_| Reply::ok("hello")).await;
    let target = format!("http://127.0.0.1:{}/", server.port());
    let r = run_http(
        HttpOptions {
            url: target.clone(),
            ..HttpOptions::default()
        },
        TIMEOUT,
    )
    .await;
    assert_success(&r);

    let m = ProbeMetrics::new("eu-west");
    let d = def("web", &target, &[("team", "sre"), ("app", "shop")]);
    m.result(&d, &r);
    let text = m.encode();
    promtool_check(&text);
    let s = parse(&text);

    let web = [("check", "web")];
    let success = find(&s, "probe_success", &web);
    assert_eq!(success.len(), 1);
    // Fixed order: check, target, region, then the check's labels sorted.
    let names: Vec<&str> = success[0].labels.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["check", "target", "region", "app", "team"]);
    assert_eq!(success[0].label("target"), Some(target.as_str()));
    assert_eq!(success[0].label("region"), Some("eu-west"));
    assert_eq!(success[0].value, 1.0);

    assert_eq!(value(&s, "probe_http_status_code", &web), 200.0);
    assert_eq!(value(&s, "probe_http_version", &web), 1.1);
    assert_eq!(value(&s, "probe_http_content_length", &web), 5.0);
    assert_eq!(value(&s, "probe_http_uncompressed_body_length", &web), 5.0);
    assert_eq!(value(&s, "probe_http_redirects", &web), 0.0);
    assert_eq!(value(&s, "probe_http_ssl", &web), 0.0);
    assert_eq!(value(&s, "probe_ip_protocol", &web), 4.0);
    assert_eq!(value(&s, "probe_ip_addr_hash", &web), 3_668_918_509.0);
    assert_eq!(
        value(&s, "probe_duration_seconds", &web),
        r.duration.as_secs_f64()
    );
    for phase in ["resolve", "connect", "tls", "processing", "transfer"] {
        let v = value(
            &s,
            "probe_http_duration_seconds",
            &[("check", "web"), ("phase", phase)],
        );
        assert!(v >= 0.0);
    }
    absent(&s, "probe_tls_version_info", &web);
    absent(&s, "probe_ssl_earliest_cert_expiry", &web);

    let ok = [("check", "web"), ("result", "success"), ("reason", "none")];
    assert_eq!(value(&s, "varde_checks_total", &ok), 1.0);
    assert_eq!(value(&s, "varde_check_duration_seconds_count", &web), 1.0);
    assert_eq!(
        value(
            &s,
            "varde_check_duration_seconds_bucket",
            &[("check", "web"), ("le", "+Inf")]
        ),
        1.0
    );
    // Phase histograms are per region and kind of check, not per check.
    absent(&s, "varde_check_phase_duration_seconds_count", &web);
    // Plain HTTP never enters the TLS phase: no histogram for it.
    let http = [("region", "eu-west"), ("kind", "http")];
    let phases: BTreeSet<&str> = find(&s, "varde_check_phase_duration_seconds_count", &http)
        .iter()
        .filter_map(|x| x.label("phase"))
        .collect();
    assert_eq!(
        phases,
        BTreeSet::from(["connect", "processing", "resolve", "transfer"])
    );
}

#[tokio::test]
async fn real_https_check_reports_tls_then_drops_what_a_failure_did_not_see() {
    let pki = Pki::new();
    let good = Server::tls(pki.identity(Leaf::Valid), |_| Reply::ok("hi")).await;
    let r = run_http(https_to(good.port(), "/", &pki), TIMEOUT).await;
    assert_success(&r);

    let m = ProbeMetrics::new("r1");
    let d = def("tls", "https://localhost/", &[]);
    m.result(&d, &r);
    let text = m.encode();
    promtool_check(&text);
    let s = parse(&text);
    let c = [("check", "tls")];
    let leaf_expiry = date(LEAF_NOT_AFTER).timestamp() as f64;
    assert_eq!(value(&s, "probe_http_ssl", &c), 1.0);
    assert_eq!(value(&s, "probe_http_version", &c), 2.0);
    assert_eq!(value(&s, "probe_ssl_earliest_cert_expiry", &c), leaf_expiry);
    assert_eq!(
        value(&s, "probe_ssl_last_chain_expiry_timestamp_seconds", &c),
        leaf_expiry
    );
    assert_eq!(
        value(
            &s,
            "probe_tls_version_info",
            &[("check", "tls"), ("version", "TLS 1.3")]
        ),
        1.0
    );
    let info = find(&s, "probe_ssl_last_chain_info", &c);
    assert_eq!(info.len(), 1);
    assert_eq!(
        info[0].label("fingerprint_sha256"),
        Some(sha256_hex(pki.identity(Leaf::Valid).leaf()).as_str())
    );
    assert_eq!(
        value(
            &s,
            "varde_check_phase_duration_seconds_count",
            &[("region", "r1"), ("kind", "http"), ("phase", "tls")]
        ),
        1.0
    );

    // The certificate expires: the chain is still reported (its expiry is
    // the point), but there is no response and no verified chain any more.
    let expired = Server::tls(pki.identity(Leaf::Expired), |_| Reply::ok("hi")).await;
    let r = run_http(https_to(expired.port(), "/", &pki), TIMEOUT).await;
    assert_reason(&r, Reason::TlsExpired);
    m.result(&d, &r);
    let text = m.encode();
    promtool_check(&text);
    let s = parse(&text);
    assert_eq!(value(&s, "probe_success", &c), 0.0);
    assert_eq!(value(&s, "probe_http_status_code", &c), 0.0);
    assert_eq!(value(&s, "probe_http_version", &c), 0.0);
    assert_eq!(value(&s, "probe_http_ssl", &c), 0.0);
    assert_eq!(
        value(&s, "probe_ssl_earliest_cert_expiry", &c),
        date(EXPIRED_NOT_AFTER).timestamp() as f64
    );
    absent(&s, "probe_ssl_last_chain_expiry_timestamp_seconds", &c);
    let fails = [
        ("check", "tls"),
        ("result", "failure"),
        ("reason", "tls_expired"),
    ];
    assert_eq!(value(&s, "varde_checks_total", &fails), 1.0);
    let ok = [("check", "tls"), ("result", "success"), ("reason", "none")];
    assert_eq!(value(&s, "varde_checks_total", &ok), 1.0);

    // Nothing listens: no TLS facts, no peer address at all.
    let r = run_http(https_to(refused_port(), "/", &pki), TIMEOUT).await;
    assert_reason(&r, Reason::ConnectRefused);
    m.result(&d, &r);
    let s = parse(&m.encode());
    for gone in [
        "probe_ssl_earliest_cert_expiry",
        "probe_ssl_last_chain_expiry_timestamp_seconds",
        "probe_ssl_last_chain_info",
        "probe_tls_version_info",
        "probe_ip_protocol",
        "probe_ip_addr_hash",
    ] {
        absent(&s, gone, &c);
    }
    assert_eq!(value(&s, "probe_http_status_code", &c), 0.0);
    assert_eq!(value(&s, "probe_http_content_length", &c), 0.0);
    assert_eq!(value(&s, "varde_check_duration_seconds_count", &c), 3.0);
}

#[test]
fn tls_version_change_replaces_the_info_series() {
    let m = ProbeMetrics::new("r1");
    let d = def("v", "https://example.com/", &[]);
    let mut r = https_ok();
    m.result(&d, &r);
    r.tls.as_mut().unwrap().version = Some("TLS 1.2".into());
    m.result(&d, &r);
    let s = parse(&m.encode());
    let versions: Vec<&str> = find(&s, "probe_tls_version_info", &[("check", "v")])
        .iter()
        .filter_map(|x| x.label("version"))
        .collect();
    assert_eq!(versions, ["TLS 1.2"]);
    assert_eq!(value(&s, "probe_ip_protocol", &[("check", "v")]), 6.0);
    // No Content-Length header: blackbox reports -1.
    r.http.as_mut().unwrap().content_length = None;
    m.result(&d, &r);
    let s = parse(&m.encode());
    assert_eq!(
        value(&s, "probe_http_content_length", &[("check", "v")]),
        -1.0
    );
}

#[test]
fn dns_result_exports_blackbox_dns_series() {
    let rec = |t: &str, data: &str| DnsRecord {
        name: "example.com.".into(),
        record_type: t.into(),
        ttl: 60,
        data: data.into(),
    };
    let r = CheckResult {
        dns: Some(DnsFacts {
            server: "127.0.0.1:53".into(),
            rcode: Some("NOERROR".into()),
            answers: vec![rec(
                "SOA",
                "ns.example.com. noc.example.com. 2026010101 7200 3600 1209600 3600",
            )],
            authority: vec![rec("NS", "ns.example.com."), rec("NS", "ns2.example.com.")],
            lookup_time: Some(Duration::from_millis(7)),
            ..DnsFacts::default()
        }),
        ..base_result(CheckKind::Dns, true, None)
    };
    let m = ProbeMetrics::new("r1");
    let d = def("soa", "dns://127.0.0.1/example.com", &[]);
    m.result(&d, &r);
    let text = m.encode();
    promtool_check(&text);
    let s = parse(&text);
    let c = [("check", "soa")];
    assert_eq!(value(&s, "probe_dns_answer_rrs", &c), 1.0);
    assert_eq!(value(&s, "probe_dns_authority_rrs", &c), 2.0);
    assert_eq!(value(&s, "probe_dns_additional_rrs", &c), 0.0);
    assert_eq!(value(&s, "probe_dns_query_succeeded", &c), 1.0);
    assert_eq!(value(&s, "probe_dns_serial", &c), 2_026_010_101.0);
    assert_eq!(
        value(
            &s,
            "probe_dns_duration_seconds",
            &[("check", "soa"), ("phase", "request")]
        ),
        0.007
    );
    assert_eq!(value(&s, "probe_ip_protocol", &c), 4.0);
    absent(&s, "probe_http_status_code", &c);

    // A timeout: no response, so counts are 0 and the serial goes.
    let r = CheckResult {
        dns: Some(DnsFacts {
            server: "127.0.0.1:53".into(),
            ..DnsFacts::default()
        }),
        ..base_result(CheckKind::Dns, false, Some(Reason::DnsTimeout))
    };
    m.result(&d, &r);
    let s = parse(&m.encode());
    assert_eq!(value(&s, "probe_dns_query_succeeded", &c), 0.0);
    assert_eq!(value(&s, "probe_dns_answer_rrs", &c), 0.0);
    absent(&s, "probe_dns_serial", &c);
    let t = [
        ("check", "soa"),
        ("result", "failure"),
        ("reason", "dns_timeout"),
    ];
    assert_eq!(value(&s, "varde_checks_total", &t), 1.0);
}

#[test]
fn removal_deletes_every_series_of_the_check() {
    let m = ProbeMetrics::new("r1");
    let x = def("x", "https://example.com/", &[("team", "a")]);
    let y = def("y", "https://example.org/", &[]);
    let fail = CheckResult {
        http: Some(HttpFacts {
            final_url: "https://example.com/".into(),
            ..HttpFacts::default()
        }),
        ..base_result(CheckKind::Http, false, Some(Reason::ConnectTimeout))
    };
    for r in [https_ok(), fail] {
        m.result(&x, &r);
        m.result(&y, &r);
    }
    m.skipped(&x, SkipReason::StillRunning);
    m.skipped(&x, SkipReason::Overloaded);
    m.lag(&x, Duration::from_millis(3));
    let before = m.encode();
    assert!(before.contains("check=\"x\""));
    let skipped = [("check", "x"), ("reason", "overloaded")];
    assert_eq!(
        value(&parse(&before), "varde_checks_skipped_total", &skipped),
        1.0
    );

    m.removed(&x);
    let after = m.encode();
    promtool_check(&after);
    assert!(
        !after.contains("check=\"x\""),
        "series of x left after removal:\n{after}"
    );
    let s = parse(&after);
    assert_eq!(value(&s, "probe_success", &[("check", "y")]), 0.0);
    assert_eq!(
        value(
            &s,
            "varde_checks_total",
            &[("check", "y"), ("reason", "connect_timeout")]
        ),
        1.0
    );
    // The lag histogram is per region, not per check: it stays.
    assert_eq!(
        value(&s, "varde_scheduler_lag_seconds_count", &[("region", "r1")]),
        1.0
    );
}

#[test]
fn hostile_label_values_are_escaped_and_valid() {
    let nasty = "https://ex\"am\\ple.com/a\nb?q=\"x\"\\";
    let m = ProbeMetrics::new("r\"1");
    let d = def(
        "we\"ird\\name",
        nasty,
        &[("team.name", "a\nb"), ("region", "collides"), ("1st", "x")],
    );
    m.result(&d, &https_ok());
    m.skipped(&d, SkipReason::StillRunning);
    let text = m.encode();
    promtool_check(&text);
    let s = parse(&text);
    let got = find(&s, "probe_success", &[("target", nasty)]);
    assert_eq!(got.len(), 1, "{text}");
    let labels: BTreeMap<&str, &str> = got[0]
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(labels["check"], "we\"ird\\name");
    assert_eq!(labels["region"], "r\"1");
    assert_eq!(labels["exported_region"], "collides");
    assert_eq!(labels["team_name"], "a\nb");
    assert_eq!(labels["exported_1st"], "x");
    m.removed(&d);
    assert!(find(&parse(&m.encode()), "probe_success", &[]).is_empty());
}

/// `n` checks (HTTPS, DNS and TCP mixed) with results, a few skips and failures.
fn fleet(n: usize) -> Arc<ProbeMetrics> {
    let m = Arc::new(ProbeMetrics::new("eu-west"));
    let dns = CheckResult {
        dns: Some(DnsFacts {
            server: "127.0.0.1:53".into(),
            rcode: Some("NOERROR".into()),
            ..DnsFacts::default()
        }),
        ..base_result(CheckKind::Dns, true, None)
    };
    let tcp = base_result(CheckKind::Tcp, false, Some(Reason::ConnectRefused));
    for i in 0..n {
        let name = format!("check-{i:05}");
        let target = format!("https://host-{i}.example.com/path?q=\"{i}\"");
        let d = def(&name, &target, &[("team", "sre"), ("tier", "gold")]);
        let r = match i % 3 {
            0 => https_ok(),
            1 => dns.clone(),
            _ => tcp.clone(),
        };
        m.result(&d, &r);
        if i % 7 == 0 {
            m.skipped(&d, SkipReason::Overloaded);
        }
    }
    m
}

#[test]
fn chunks_concatenated_are_the_encoding_and_stay_small() {
    let m = fleet(2_000);
    let chunks: Vec<String> = m.chunks().collect();
    let whole = m.encode();
    assert_eq!(chunks.concat(), whole);
    assert!(chunks.len() > 10, "{} chunks", chunks.len());
    for (i, c) in chunks.iter().enumerate() {
        assert!(c.len() <= 128 * 1024, "chunk {i} is {} bytes", c.len());
        assert!(c.ends_with('\n'), "chunk {i} ends mid-line");
    }
    // One HELP and TYPE per family, and each family's samples together.
    let mut helps = BTreeMap::<&str, usize>::new();
    let mut seen = BTreeSet::<&str>::new();
    let mut current = "";
    for line in whole.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            *helps.entry(name).or_default() += 1;
            assert!(seen.insert(name), "{name} declared twice");
            current = name;
        } else if !line.starts_with('#') {
            let name = &line[..line.find(['{', ' ']).unwrap()];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| *f == current))
                .unwrap_or(name);
            assert_eq!(family, current, "{line} outside its family");
        }
    }
    assert!(helps.values().all(|n| *n == 1), "{helps:?}");
    for family in [
        "probe_success",
        "probe_http_duration_seconds",
        "probe_dns_answer_rrs",
        "varde_checks_total",
        "varde_check_duration_seconds",
        "varde_check_phase_duration_seconds",
        "varde_checks_skipped_total",
        "varde_scheduler_lag_seconds",
    ] {
        assert!(helps.contains_key(family), "{family} missing");
    }
    let s = parse(&whole);
    assert_eq!(find(&s, "probe_success", &[]).len(), 2_000);
    assert_eq!(
        value(
            &s,
            "varde_check_phase_duration_seconds_count",
            &[("region", "eu-west"), ("kind", "http"), ("phase", "tls")]
        ),
        667.0
    );
    // Per check: one duration histogram (13 buckets + +Inf + sum + count).
    assert_eq!(
        find(
            &s,
            "varde_check_duration_seconds_bucket",
            &[("check", "check-00001")]
        )
        .len(),
        14
    );
    promtool_check(&whole);
}

#[test]
fn checks_added_or_removed_between_chunks_keep_the_output_valid() {
    let m = fleet(600);
    let mut chunks = m.chunks();
    let mut text = chunks.next().unwrap();
    // Mid-way through the first families: one check goes, one comes.
    m.removed(&def("check-00599", "x", &[]));
    let late = def("check-99999", "https://late.example.com/", &[]);
    m.result(&late, &https_ok());
    text.extend(chunks);
    promtool_check(&text);
    let s = parse(&text);
    assert_eq!(
        value(&s, "varde_checks_total", &[("check", "check-99999")]),
        1.0
    );
    assert!(find(&s, "varde_checks_total", &[("check", "check-00599")]).is_empty());
}

#[test]
fn removal_leaves_no_line_of_the_check() {
    let m = fleet(50);
    let x = def("x", "https://x.example.com/", &[("team", "a")]);
    m.result(&x, &https_ok());
    m.skipped(&x, SkipReason::StillRunning);
    assert!(m.encode().contains("check=\"x\""));
    m.removed(&x);
    let text: String = m.chunks().collect();
    assert!(
        text.lines().all(|l| !l.contains("check=\"x\"")),
        "series of x left after removal"
    );
    // A check coming back starts from zero.
    m.result(&x, &https_ok());
    let s = parse(&m.encode());
    assert_eq!(value(&s, "varde_checks_total", &[("check", "x")]), 1.0);
    assert!(find(&s, "varde_checks_skipped_total", &[("check", "x")]).is_empty());
}

#[test]
fn changed_labels_start_the_check_over() {
    let m = ProbeMetrics::new("r1");
    m.result(&def("c", "https://a/", &[("team", "a")]), &https_ok());
    m.result(&def("c", "https://a/", &[("team", "b")]), &https_ok());
    let s = parse(&m.encode());
    assert!(find(&s, "probe_success", &[("team", "a")]).is_empty());
    assert_eq!(value(&s, "varde_checks_total", &[("team", "b")]), 1.0);
}

/// Resident memory per check: `cargo test --release --test probe_metrics
/// -- --ignored --nocapture memory_per_check` (Linux; reads /proc).
#[test]
#[ignore]
fn memory_per_check() {
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
    let before = rss_kib();
    let m = fleet(10_000);
    let after = rss_kib();
    let per_check = (after - before) * 1024 / 10_000;
    let text_bytes: usize = m.chunks().map(|c| c.len()).sum();
    eprintln!(
        "{per_check} bytes RSS per check (label text included); /metrics is {} KiB",
        text_bytes / 1024
    );
    assert!(per_check < 2048, "{per_check} bytes per check");
}

#[test]
fn process_gauges_carry_the_region() {
    let m = ProbeMetrics::new("ap-south");
    m.config_reload(false, utc(2026, 1, 1));
    m.config_reload(true, utc(2026, 2, 1));
    m.config_reload(false, utc(2026, 3, 1));
    m.in_flight(7);
    m.push_stats(PushGauges {
        sent_total: 10,
        spooled: 3,
        spool_bytes: 4096,
        dropped_total: 1,
        failures_total: 2,
        last_success_unix: Some(1_767_225_600.5),
    });
    // A smaller total never lowers a counter.
    m.push_stats(PushGauges {
        sent_total: 9,
        ..PushGauges::default()
    });
    let text = m.encode();
    promtool_check(&text);
    let s = parse(&text);
    let r = [("region", "ap-south")];
    assert_eq!(value(&s, "varde_config_last_reload_successful", &r), 0.0);
    assert_eq!(
        value(&s, "varde_config_last_reload_success_timestamp_seconds", &r),
        utc(2026, 2, 1).timestamp() as f64
    );
    assert_eq!(value(&s, "varde_checks_in_flight", &r), 7.0);
    assert_eq!(value(&s, "varde_push_sent_total", &r), 10.0);
    assert_eq!(value(&s, "varde_push_dropped_total", &r), 1.0);
    assert_eq!(value(&s, "varde_push_failures_total", &r), 2.0);
    assert_eq!(value(&s, "varde_push_spooled_results", &r), 0.0);
    assert_eq!(
        value(&s, "varde_push_last_success_timestamp_seconds", &r),
        0.0
    );
    assert!(text.contains("# TYPE varde_push_sent_total counter"));
    assert!(ProbeMetrics::CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
    assert!(!text.contains("# EOF"));
}

// === /probe ===

#[test]
fn render_probe_uses_blackbox_names_without_check_labels() {
    let text = render_probe(&https_ok());
    promtool_check(&text);
    let s = parse(&text);
    assert!(
        s.iter()
            .all(|x| x.label("check").is_none() && x.label("region").is_none())
    );
    assert_eq!(value(&s, "probe_success", &[]), 1.0);
    assert_eq!(value(&s, "probe_http_ssl", &[]), 1.0);
    assert_eq!(
        value(&s, "probe_tls_version_info", &[("version", "TLS 1.3")]),
        1.0
    );
    assert!(text.contains(
        "# HELP probe_success Displays whether or not the probe was a success\n# TYPE probe_success gauge\n"
    ));
    assert!(!text.contains("varde_"));
}

/// Blackbox_exporter (Debian's `prometheus-blackbox-exporter`) probing the
/// same server must report the same metric names and phases as
/// `render_probe`. .ci/run installs the exporter and sets
/// `VARDE_REQUIRE_BLACKBOX`, so CI never skips this comparison.
#[tokio::test]
async fn render_probe_names_match_real_blackbox_exporter() {
    let Some(exe) = ["prometheus-blackbox-exporter", "blackbox_exporter"]
        .into_iter()
        .find(|e| Command::new(e).arg("--version").output().is_ok())
    else {
        assert!(
            std::env::var_os("VARDE_REQUIRE_BLACKBOX").is_none(),
            "VARDE_REQUIRE_BLACKBOX is set but blackbox_exporter is not installed"
        );
        eprintln!("SKIPPED: blackbox_exporter not installed (CI sets VARDE_REQUIRE_BLACKBOX)");
        return;
    };
    let server = Server::http(|_| Reply::ok("hello")).await;
    let target = format!("http://127.0.0.1:{}/", server.port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("blackbox.yml");
    std::fs::write(&config, "modules:\n  http:\n    prober: http\n").unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let _bbe = tokio::process::Command::new(exe)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut theirs = None;
    for _ in 0..50 {
        if let Some(body) = get(port, &format!("/probe?module=http&target={target}")).await {
            theirs = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let theirs = theirs.expect("blackbox_exporter answered /probe");
    let ours = render_probe(
        &run_http(
            HttpOptions {
                url: target.clone(),
                ..HttpOptions::default()
            },
            TIMEOUT,
        )
        .await,
    );
    assert_eq!(
        metric_names(&ours),
        metric_names(&theirs),
        "ours:\n{ours}\ntheirs:\n{theirs}"
    );
    let phases = |t: &str| -> BTreeSet<String> {
        parse(t)
            .into_iter()
            .filter(|s| s.name == "probe_http_duration_seconds")
            .filter_map(|s| s.label("phase").map(str::to_owned))
            .collect()
    };
    assert_eq!(phases(&ours), phases(&theirs));
    let b = parse(&theirs);
    let o = parse(&ours);
    for same in [
        "probe_success",
        "probe_http_status_code",
        "probe_http_content_length",
        "probe_ip_protocol",
        "probe_ip_addr_hash",
    ] {
        assert_eq!(value(&o, same, &[]), value(&b, same, &[]), "{same}");
    }
}

/// A minimal HTTP/1.0 GET; `None` until the server answers 200.
async fn get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_owned())
}
