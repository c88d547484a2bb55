//! The HTTP(S) check against in-process hyper servers and raw hostile TCP
//! servers: status and assertions, request shaping, phase attribution,
//! redirects, timeouts and limits, connect/DNS failures and address families.
//!
//! Timing assertions are bounds that guard *attribution* (a known server
//! delay lands in the right phase), not speed tests.

mod support;

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use hyper::Version;
use support::*;
use varde::check::{
    BasicAuth, CheckResult, HeaderMatch, HttpFacts, HttpOptions, IpPreference, Reason, Secret,
};

const TIMEOUT: Duration = Duration::from_secs(2);
const MS: Duration = Duration::from_millis(1);
const DELAY: Duration = Duration::from_millis(300);
/// Slack above a known delay, and the bound for phases that should be ~0.
const SLACK: Duration = Duration::from_millis(200);
const SMALL: Duration = Duration::from_millis(100);

fn http(port: u16, path: &str) -> HttpOptions {
    HttpOptions {
        url: format!("http://127.0.0.1:{port}{path}"),
        ..HttpOptions::default()
    }
}

fn facts(r: &CheckResult) -> &HttpFacts {
    r.http
        .as_ref()
        .unwrap_or_else(|| panic!("no HTTP facts reported: {r:#?}"))
}

#[track_caller]
fn assert_small(r: &CheckResult, name: &str, d: Duration) {
    assert!(
        d < SMALL,
        "{name} phase {d:?} should be < {SMALL:?}: {r:#?}"
    );
}

// ---------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------

#[tokio::test]
async fn plain_http11_get_succeeds_and_reports_status_and_request() {
    let server = Server::http(|_| Reply::ok("hello")).await;
    let r = run_http(http(server.port(), "/health?x=1"), TIMEOUT).await;
    assert_success(&r);
    let h = facts(&r);
    assert_eq!(h.status, Some(200));
    assert_eq!(h.version.as_deref(), Some("HTTP/1.1"));
    assert_eq!(
        h.final_url,
        format!("http://127.0.0.1:{}/health?x=1", server.port())
    );
    assert_eq!(h.redirects, 0);
    assert_eq!(h.remote_addr, Some(server.addr.to_string()));
    assert_eq!(h.content_length, Some(5));
    assert_eq!(h.body_bytes, 5);
    assert!(!h.credentials_withheld);
    assert!(r.tls.is_none());
    assert_eq!(r.phases.tls, Duration::ZERO);

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!(req.method, "GET");
    assert_eq!(req.path, "/health?x=1");
    assert_eq!(req.version, Version::HTTP_11);
    assert_eq!(
        req.header("host"),
        Some(format!("127.0.0.1:{}", server.port()))
    );
    assert!(
        req.header("user-agent")
            .is_some_and(|ua| ua.starts_with("varde/")),
        "{req:#?}"
    );
}

#[tokio::test]
async fn non_2xx_status_fails_with_http_status_by_default() {
    let server = Server::http(|_| Reply::status(404)).await;
    let r = run_http(http(server.port(), "/missing"), TIMEOUT).await;
    assert_reason(&r, Reason::HttpStatus);
    assert_eq!(facts(&r).status, Some(404));

    let server = Server::http(|_| Reply::status(500)).await;
    let r = run_http(http(server.port(), "/"), TIMEOUT).await;
    assert_reason(&r, Reason::HttpStatus);
    assert_eq!(facts(&r).status, Some(500));
}

#[tokio::test]
async fn valid_status_exact_code_accepts_that_code_only() {
    let server = Server::http(|req| match req.path.as_str() {
        "/missing" => Reply::status(404),
        _ => Reply::ok("fine"),
    })
    .await;
    let mut o = http(server.port(), "/missing");
    o.valid_status = vec!["404".into()];
    let r = run_http(o.clone(), TIMEOUT).await;
    assert_success(&r);
    assert_eq!(facts(&r).status, Some(404));

    // 200 is no longer valid once valid_status is set.
    o.url = format!("http://127.0.0.1:{}/", server.port());
    let r = run_http(o, TIMEOUT).await;
    assert_reason(&r, Reason::HttpStatus);
    assert_eq!(facts(&r).status, Some(200));
}

#[tokio::test]
async fn valid_status_range_and_class_are_honoured() {
    let server = Server::http(|req| match req.path.as_str() {
        "/moved" => Reply::redirect(302, "/elsewhere"),
        "/nocontent" => Reply::status(204),
        _ => Reply::status(404),
    })
    .await;
    let range = |path: &str, valid: &str| {
        let mut o = http(server.port(), path);
        o.valid_status = vec![valid.into()];
        o.follow_redirects = false;
        o
    };
    let r = run_http(range("/moved", "200-399"), TIMEOUT).await;
    assert_success(&r);
    assert_eq!(facts(&r).status, Some(302));

    let r = run_http(range("/missing", "200-399"), TIMEOUT).await;
    assert_reason(&r, Reason::HttpStatus);
    assert_eq!(facts(&r).status, Some(404));

    let r = run_http(range("/nocontent", "2xx"), TIMEOUT).await;
    assert_success(&r);
    assert_eq!(facts(&r).status, Some(204));
}

// ---------------------------------------------------------------------------
// Phase attribution
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_phase_contains_the_server_delay_over_http11() {
    let server = Server::http(|_| Reply::ok("late").delay(DELAY)).await;
    let r = run_http(http(server.port(), "/"), TIMEOUT).await;
    assert_success(&r);
    let p = r.phases;
    assert!(
        p.processing >= DELAY && p.processing < DELAY + SLACK,
        "processing {:?} should be in [{DELAY:?}, {:?}): {r:#?}",
        p.processing,
        DELAY + SLACK
    );
    assert_small(&r, "resolve", p.resolve);
    assert_small(&r, "connect", p.connect);
    assert_eq!(p.tls, Duration::ZERO);
    assert_small(&r, "transfer", p.transfer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_phase_contains_the_server_delay_over_https_h2() {
    let pki = Pki::new();
    let server = Server::tls(pki.identity(Leaf::Valid), |_| {
        Reply::ok("late").delay(DELAY)
    })
    .await;
    let r = run_http(https_to(server.port(), "/", &pki), TIMEOUT).await;
    assert_success(&r);
    assert_eq!(facts(&r).version.as_deref(), Some("HTTP/2"));
    let p = r.phases;
    assert!(
        p.processing >= DELAY && p.processing < DELAY + SLACK,
        "processing {:?} should be in [{DELAY:?}, {:?}): {r:#?}",
        p.processing,
        DELAY + SLACK
    );
    assert_small(&r, "resolve", p.resolve);
    assert_small(&r, "connect", p.connect);
    assert_small(&r, "tls", p.tls);
    assert!(p.tls > Duration::ZERO, "a TLS handshake takes some time");
    assert_small(&r, "transfer", p.transfer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_phase_contains_a_pause_in_the_body_over_http11() {
    let server = Server::http(|_| {
        Reply::status(200).body(TestBody::slow("first half|", DELAY, "second half"))
    })
    .await;
    let r = run_http(http(server.port(), "/"), TIMEOUT).await;
    assert_success(&r);
    assert_eq!(facts(&r).body_bytes, 22);
    let p = r.phases;
    assert!(
        p.transfer >= DELAY && p.transfer < DELAY + SLACK,
        "transfer {:?}: {r:#?}",
        p.transfer
    );
    assert_small(&r, "processing", p.processing);
    assert_small(&r, "resolve", p.resolve);
    assert_small(&r, "connect", p.connect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_phase_contains_a_pause_in_the_body_over_https_h2() {
    let pki = Pki::new();
    let server = Server::tls(pki.identity(Leaf::Valid), |_| {
        Reply::status(200).body(TestBody::slow("first half|", DELAY, "second half"))
    })
    .await;
    let r = run_http(https_to(server.port(), "/", &pki), TIMEOUT).await;
    assert_success(&r);
    assert_eq!(facts(&r).version.as_deref(), Some("HTTP/2"));
    assert_eq!(facts(&r).body_bytes, 22);
    let p = r.phases;
    assert!(
        p.transfer >= DELAY && p.transfer < DELAY + SLACK,
        "transfer {:?}: {r:#?}",
        p.transfer
    );
    assert_small(&r, "processing", p.processing);
    assert_small(&r, "tls", p.tls);
}

// ---------------------------------------------------------------------------
// Request shaping
// ---------------------------------------------------------------------------

#[tokio::test]
async fn method_headers_and_body_are_sent_as_configured() {
    let server = Server::http(|_| Reply::status(201)).await;
    let mut o = http(server.port(), "/submit");
    o.method = "POST".into();
    o.headers = BTreeMap::from([
        ("X-Probe".to_string(), "yes".to_string()),
        ("Content-Type".to_string(), "application/json".to_string()),
    ]);
    o.body = Some(r#"{"a":1}"#.into());
    let r = run_http(o, TIMEOUT).await;
    assert_success(&r);
    assert_eq!(facts(&r).status, Some(201));

    let req = server.requests().pop().unwrap();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/submit");
    assert_eq!(req.header("x-probe").as_deref(), Some("yes"));
    assert_eq!(
        req.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(req.body.as_ref(), br#"{"a":1}"#);
}

#[tokio::test]
async fn basic_auth_and_bearer_token_are_sent_as_authorization() {
    let server = Server::http(|_| Reply::ok("ok")).await;
    let mut o = http(server.port(), "/");
    o.basic_auth = Some(BasicAuth {
        username: "user".into(),
        password: Secret("pass".into()),
    });
    let r = run_http(o, TIMEOUT).await;
    assert_success(&r);
    let req = server.requests().pop().unwrap();
    assert_eq!(
        req.header("authorization").as_deref(),
        Some("Basic dXNlcjpwYXNz")
    );

    let mut o = http(server.port(), "/");
    o.bearer_token = Some(Secret("s3cret".into()));
    let r = run_http(o, TIMEOUT).await;
    assert_success(&r);
    assert!(!facts(&r).credentials_withheld);
    let req = server.requests().pop().unwrap();
    assert_eq!(
        req.header("authorization").as_deref(),
        Some("Bearer s3cret")
    );
}

// ---------------------------------------------------------------------------
// Body and header assertions
// ---------------------------------------------------------------------------

const BODY: &str = "service: checkout\nstatus: healthy\nversion: 1.2.3\n";

async fn body_server() -> Server {
    Server::http(|_| Reply::ok(BODY).header("x-version", "1.2.3")).await
}

#[tokio::test]
async fn body_assertions_pass_when_the_body_matches() {
    let server = body_server().await;
    let mut o = http(server.port(), "/");
    o.body_contains = vec!["status: healthy".into(), "1.2.3".into()];
    o.body_regex = vec![r"(?m)^status: \w+$".into()];
    o.body_not_regex = vec!["(?i)error".into()];
    let r = run_http(o, TIMEOUT).await;
    assert_success(&r);
    assert_eq!(facts(&r).body_bytes, BODY.len() as u64);
}

#[tokio::test]
async fn body_contains_missing_string_fails_with_body_mismatch() {
    let server = body_server().await;
    let mut o = http(server.port(), "/");
    // Literal, not a regex: "1.2.3" is present, "1x2x3" is not.
    o.body_contains = vec!["1x2x3".into()];
    let r = run_http(o, TIMEOUT).await;
    assert_reason(&r, Reason::HttpBodyMismatch);
    assert_eq!(facts(&r).status, Some(200));
}

#[tokio::test]
async fn body_regex_not_matching_fails_with_body_mismatch() {
    let server = body_server().await;
    let mut o = http(server.port(), "/");
    o.body_regex = vec![r"status: (degraded|down)".into()];
    let r = run_http(o, TIMEOUT).await;
    assert_reason(&r, Reason::HttpBodyMismatch);
}

#[tokio::test]
async fn body_not_regex_matching_fails_with_body_mismatch() {
    let server = body_server().await;
    let mut o = http(server.port(), "/");
    o.body_not_regex = vec![r"status: healthy".into()];
    let r = run_http(o, TIMEOUT).await;
    assert_reason(&r, Reason::HttpBodyMismatch);
}

#[tokio::test]
async fn header_match_passes_and_fails_with_header_mismatch() {
    let server = body_server().await;
    let check = |m: HeaderMatch| {
        let mut o = http(server.port(), "/");
        o.header_match = vec![m];
        run_http(o, TIMEOUT)
    };
    let hm = |name: &str, regex: &str, allow_missing: bool| HeaderMatch {
        name: name.into(),
        regex: regex.into(),
        allow_missing,
    };
    assert_success(&check(hm("X-Version", r"^1\.2\.", false)).await);
    assert_reason(
        &check(hm("x-version", r"^2\.", false)).await,
        Reason::HttpHeaderMismatch,
    );
    assert_reason(
        &check(hm("x-absent", ".*", false)).await,
        Reason::HttpHeaderMismatch,
    );
    assert_success(&check(hm("x-absent", "^never$", true)).await);
}

// ---------------------------------------------------------------------------
// Redirects
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_to_the_final_status_with_phases_summed() {
    let hop = Duration::from_millis(100);
    let server = Server::http(move |req| match req.path.as_str() {
        "/start" => Reply::redirect(302, "/middle").delay(hop),
        // An absolute Location to the same origin.
        "/middle" => {
            let host = req.header("host").unwrap();
            Reply::redirect(301, &format!("http://{host}/final")).delay(hop)
        }
        "/final" => Reply::ok("done"),
        _ => Reply::status(404),
    })
    .await;
    let r = run_http(http(server.port(), "/start"), TIMEOUT).await;
    assert_success(&r);
    let h = facts(&r);
    assert_eq!(h.status, Some(200));
    assert_eq!(h.redirects, 2);
    assert_eq!(
        h.final_url,
        format!("http://127.0.0.1:{}/final", server.port())
    );
    assert_eq!(h.body_bytes, 4);
    let p = r.phases;
    assert!(
        p.processing >= 2 * hop && p.processing < 2 * hop + SLACK,
        "processing {:?} should sum both hops: {r:#?}",
        p.processing
    );
    // Three connections were made; their connects are summed but tiny.
    assert_small(&r, "connect", p.connect);
    let paths: Vec<String> = server.requests().into_iter().map(|q| q.path).collect();
    assert_eq!(paths, ["/start", "/middle", "/final"]);
}

#[tokio::test]
async fn redirect_loop_fails_with_http_redirect_loop() {
    let server = Server::http(|req| match req.path.as_str() {
        "/a" => Reply::redirect(302, "/b"),
        "/b" => Reply::redirect(302, "/a"),
        _ => Reply::status(404),
    })
    .await;
    let r = run_http(http(server.port(), "/a"), TIMEOUT).await;
    assert_reason(&r, Reason::HttpRedirectLoop);
    let paths: Vec<String> = server.requests().into_iter().map(|q| q.path).collect();
    assert_eq!(
        paths,
        ["/a", "/b"],
        "the loop is detected without refetching /a"
    );
}

/// `/hop/N` redirects to `/hop/N+1` until `last`, which answers 200.
async fn hop_server(last: u32) -> Server {
    Server::http(move |req| {
        let n: u32 = req
            .path
            .strip_prefix("/hop/")
            .and_then(|n| n.parse().ok())
            .unwrap_or(u32::MAX);
        if n < last {
            Reply::redirect(302, &format!("/hop/{}", n + 1))
        } else if n == last {
            Reply::ok("end")
        } else {
            Reply::status(404)
        }
    })
    .await
}

#[tokio::test]
async fn more_redirects_than_max_redirects_fails_with_too_many_redirects() {
    let server = hop_server(100).await;
    let mut o = http(server.port(), "/hop/0");
    o.max_redirects = 3;
    let r = run_http(o, TIMEOUT).await;
    assert_reason(&r, Reason::HttpTooManyRedirects);
    assert_eq!(facts(&r).redirects, 3);
    // The first request plus three followed redirects; the fourth is not followed.
    assert_eq!(server.requests().len(), 4);
}

#[tokio::test]
async fn exactly_max_redirects_succeeds() {
    let server = hop_server(3).await;
    let mut o = http(server.port(), "/hop/0");
    o.max_redirects = 3;
    let r = run_http(o, TIMEOUT).await;
    assert_success(&r);
    assert_eq!(facts(&r).redirects, 3);
    assert_eq!(
        facts(&r).final_url,
        format!("http://127.0.0.1:{}/hop/3", server.port())
    );
}

#[tokio::test]
async fn without_follow_redirects_the_redirect_status_is_the_result() {
    let server = Server::http(|req| match req.path.as_str() {
        "/old" => Reply::redirect(302, "/new"),
        _ => Reply::ok("new"),
    })
    .await;
    let mut o = http(server.port(), "/old");
    o.follow_redirects = false;
    let r = run_http(o.clone(), TIMEOUT).await;
    assert_reason(&r, Reason::HttpStatus);
    assert_eq!(facts(&r).status, Some(302));
    assert_eq!(facts(&r).redirects, 0);

    o.valid_status = vec!["302".into()];
    let r = run_http(o, TIMEOUT).await;
    assert_success(&r);
    let h = facts(&r);
    assert_eq!(h.status, Some(302));
    assert_eq!(h.redirects, 0);
    assert_eq!(
        h.final_url,
        format!("http://127.0.0.1:{}/old", server.port())
    );
    assert_eq!(server.requests().len(), 2, "/new was never fetched");
}

#[tokio::test]
async fn see_other_after_post_is_followed_with_get_and_no_body() {
    let server = Server::http(|req| match req.path.as_str() {
        "/submit" => Reply::redirect(303, "/result"),
        _ => Reply::ok("result"),
    })
    .await;
    let mut o = http(server.port(), "/submit");
    o.method = "POST".into();
    o.body = Some("payload".into());
    let r = run_http(o, TIMEOUT).await;
    assert_success(&r);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].body.as_ref()),
        ("POST", &b"payload"[..])
    );
    assert_eq!(reqs[1].method, "GET");
    assert_eq!(reqs[1].path, "/result");
    assert!(reqs[1].body.is_empty());
}

#[tokio::test]
async fn credentials_are_not_forwarded_to_another_origin_on_redirect() {
    let other = Server::http(|_| Reply::ok("landed")).await;
    let target = format!("http://127.0.0.1:{}/landing", other.port());
    let server = Server::http(move |req| match req.path.as_str() {
        "/start" => Reply::redirect(302, "/same-origin"),
        "/same-origin" => Reply::redirect(302, &target),
        _ => Reply::status(404),
    })
    .await;
    let mut o = http(server.port(), "/start");
    o.bearer_token = Some(Secret("s3cret".into()));
    let r = run_http(o, TIMEOUT).await;
    assert_success(&r);
    assert_eq!(facts(&r).redirects, 2);
    assert!(facts(&r).credentials_withheld);
    for req in server.requests() {
        assert_eq!(
            req.header("authorization").as_deref(),
            Some("Bearer s3cret"),
            "same origin keeps credentials: {req:#?}"
        );
    }
    let landed = other.requests();
    assert_eq!(landed.len(), 1);
    assert_eq!(landed[0].header("authorization"), None, "{landed:#?}");
}

// ---------------------------------------------------------------------------
// Hostile servers, limits and deadlines
// ---------------------------------------------------------------------------

#[tokio::test]
async fn never_answering_server_fails_with_timeout_at_the_deadline() {
    let server = RawServer::never_answers().await;
    let started = Instant::now();
    let r = run_http(http(server.port(), "/"), 500 * MS).await;
    let elapsed = started.elapsed();
    assert_reason(&r, Reason::Timeout);
    assert!(elapsed < TIMEOUT, "returned after {elapsed:?}");
    assert!(r.duration >= 500 * MS, "{:?}", r.duration);
    assert!(r.phases.processing >= 400 * MS, "{r:#?}");
    // What was seen before the deadline is still reported (check::Facts).
    assert_eq!(
        facts(&r).remote_addr,
        Some(server.addr.to_string()),
        "{r:#?}"
    );
}

#[tokio::test]
async fn drip_feeding_server_fails_with_timeout() {
    let server = RawServer::drip_feed().await;
    let started = Instant::now();
    let r = run_http(http(server.port(), "/"), Duration::from_secs(1)).await;
    let elapsed = started.elapsed();
    assert_reason(&r, Reason::Timeout);
    assert!(elapsed < TIMEOUT, "returned after {elapsed:?}");
}

#[tokio::test]
async fn slow_drip_body_fails_with_timeout_during_transfer() {
    let server = Server::http(|_| {
        Reply::status(200).body(TestBody::drip("x", Duration::from_millis(200), 50))
    })
    .await;
    let r = run_http(http(server.port(), "/"), Duration::from_secs(1)).await;
    assert_reason(&r, Reason::Timeout);
    // Facts are "filled as it goes so that a check that fails (or times
    // out) half-way still reports what it saw" (check::Facts).
    let h = facts(&r);
    assert_eq!(
        h.status,
        Some(200),
        "the head arrived before the deadline: {r:#?}"
    );
    assert_eq!(h.remote_addr, Some(server.addr.to_string()), "{r:#?}");
    assert!(h.body_bytes >= 3, "some body bytes were read: {r:#?}");
    assert!(r.phases.transfer >= 800 * MS, "{r:#?}");
    assert_small(&r, "processing", r.phases.processing);
}

#[tokio::test]
async fn endless_body_is_cut_at_the_body_limit() {
    let server = Server::http(|_| Reply::status(200).body(TestBody::infinite())).await;
    let limit: u64 = 1024 * 1024;
    let mut o = http(server.port(), "/");
    o.body_limit = limit;
    let started = Instant::now();
    let r = run_http(o, Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    assert_reason(&r, Reason::HttpBodyTooLarge);
    assert!(elapsed < TIMEOUT, "returned after {elapsed:?}");
    let h = facts(&r);
    assert_eq!(h.content_length, None);
    assert!(
        h.body_bytes > limit && h.body_bytes <= limit + 64 * 1024,
        "body_bytes {}",
        h.body_bytes
    );
}

#[tokio::test]
async fn declared_length_over_the_body_limit_fails_before_reading() {
    let big = vec![b'z'; 2 * 1024 * 1024];
    let server = Server::http(move |_| Reply::ok(big.clone())).await;
    let mut o = http(server.port(), "/");
    o.body_limit = 1024 * 1024;
    let r = run_http(o, TIMEOUT).await;
    assert_reason(&r, Reason::HttpBodyTooLarge);
    let h = facts(&r);
    assert_eq!(h.content_length, Some(2 * 1024 * 1024));
    assert_eq!(h.body_bytes, 0);
}

#[tokio::test]
async fn garbage_response_fails_with_http_protocol() {
    let server = RawServer::garbage().await;
    let r = run_http(http(server.port(), "/"), TIMEOUT).await;
    assert_reason(&r, Reason::HttpProtocol);
    assert_eq!(facts(&r).status, None);
}

/// The peer accepted and closed before sending a single byte: the
/// connection broke (`io_error`); nothing invalid was *spoken*, so this is
/// not `http_protocol`.
#[tokio::test]
async fn server_closing_immediately_fails_with_io_error() {
    let server = RawServer::closes_immediately().await;
    let r = run_http(http(server.port(), "/"), TIMEOUT).await;
    assert_reason(&r, Reason::IoError);
    assert_eq!(facts(&r).status, None);
}

#[tokio::test]
async fn connection_refused_fails_with_connect_refused() {
    let port = refused_port();
    let r = run_http(http(port, "/"), TIMEOUT).await;
    assert_reason(&r, Reason::ConnectRefused);
}

#[tokio::test]
async fn unanswered_dns_query_fails_with_dns_timeout() {
    let dns = silent_udp().await;
    let mut o = HttpOptions {
        url: "http://varde-probe-target.test/".into(),
        ..HttpOptions::default()
    };
    o.net.dns_server = Some(dns.local_addr().unwrap().to_string());
    let started = Instant::now();
    let r = run_http(o, 500 * MS).await;
    let elapsed = started.elapsed();
    assert_reason(&r, Reason::DnsTimeout);
    assert!(elapsed < TIMEOUT, "returned after {elapsed:?}");
    assert!(r.phases.resolve >= 400 * MS, "{r:#?}");
    drop(dns);
}

// ---------------------------------------------------------------------------
// Address families
// ---------------------------------------------------------------------------

#[tokio::test]
async fn ipv6_loopback_server_is_reached_first_by_default() {
    if !ipv6_loopback_available() {
        eprintln!("skipped: [::1] cannot be bound here");
        return;
    }
    let server = ServerBuilder::new()
        .bind(SocketAddr::from((Ipv6Addr::LOCALHOST, 0)))
        .start(|_| Reply::ok("v6"))
        .await
        .unwrap();
    let o = HttpOptions {
        url: format!("http://localhost:{}/", server.port()),
        ..HttpOptions::default()
    };
    let r = run_http(o, TIMEOUT).await;
    assert_success(&r);
    assert_eq!(
        facts(&r).remote_addr,
        Some(format!("[::1]:{}", server.port()))
    );
}

#[tokio::test]
async fn ipv4_only_server_is_reached_by_falling_back_from_ipv6() {
    let server = Server::http(|_| Reply::ok("v4")).await;
    let o = HttpOptions {
        url: format!("http://localhost:{}/", server.port()),
        ..HttpOptions::default()
    };
    assert_eq!(o.net.ip_preference, IpPreference::Ip6);
    let r = run_http(o, TIMEOUT).await;
    assert_success(&r);
    assert_eq!(
        facts(&r).remote_addr,
        Some(format!("127.0.0.1:{}", server.port()))
    );
}

#[tokio::test]
async fn without_fallback_ipv6_preference_does_not_reach_an_ipv4_only_server() {
    if !ipv6_loopback_available() {
        eprintln!("skipped: [::1] cannot be bound here");
        return;
    }
    let server = Server::http(|_| Reply::ok("v4")).await;
    let mut o = HttpOptions {
        url: format!("http://localhost:{}/", server.port()),
        ..HttpOptions::default()
    };
    o.net.ip_fallback = false;
    let r = run_http(o, TIMEOUT).await;
    assert_reason(&r, Reason::ConnectRefused);
    assert!(server.requests().is_empty());
}
