//! TCP checks against real servers on 127.0.0.1: connect, send/expect,
//! bounded reads, deadlines, and TLS over TCP with the same facts and
//! reasons as HTTPS.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use varde::check::{CheckResult, CheckSpec, Reason, TcpFacts, TcpOptions, TlsOptions};

const MS: Duration = Duration::from_millis(1);
/// Generous bound for "ended by its deadline" (the checks use far less).
const TIMEOUT: Duration = Duration::from_secs(5);

fn tcp(port: u16) -> TcpOptions {
    TcpOptions {
        address: format!("127.0.0.1:{port}"),
        ..TcpOptions::default()
    }
}

fn tls_to(port: u16, pki: &Pki) -> TcpOptions {
    TcpOptions {
        address: format!("localhost:{port}"),
        tls: Some(TlsOptions {
            ca_file: Some(pki.ca_file()),
            ..TlsOptions::default()
        }),
        ..TcpOptions::default()
    }
}

async fn run(o: TcpOptions, timeout: Duration) -> CheckResult {
    CheckSpec::Tcp(o)
        .build(timeout)
        .expect("check definition builds")
        .run()
        .await
}

fn facts(r: &CheckResult) -> &TcpFacts {
    r.tcp
        .as_ref()
        .unwrap_or_else(|| panic!("no TCP facts: {r:#?}"))
}

/// Reads one line (up to `\n`, at most 1 KiB) from `s`.
async fn read_line<S: AsyncReadExt + Unpin>(s: &mut S) -> Vec<u8> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 1024 && s.read(&mut b).await.unwrap_or(0) == 1 {
        line.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    line
}

/// Answers `PING\r\n` with `+PONG\r\n` after `delay`, then holds the socket.
async fn pong_server(delay: Duration) -> RawServer {
    RawServer::start(move |mut tcp: TcpStream| async move {
        if read_line(&mut tcp).await == b"PING\r\n" {
            tokio::time::sleep(delay).await;
            let _ = tcp.write_all(b"+PONG\r\n").await;
        }
        std::future::pending::<()>().await;
    })
    .await
}

#[tokio::test]
async fn connect_only_succeeds_and_reports_the_peer() {
    let server = RawServer::never_answers().await;
    let r = run(tcp(server.port()), TIMEOUT).await;
    assert_success(&r);
    let t = facts(&r);
    assert_eq!(t.remote_addr, Some(server.addr.to_string()));
    assert_eq!(t.bytes_read, 0);
    assert!(r.tls.is_none() && r.http.is_none());
}

#[tokio::test]
async fn send_then_expect_measures_the_server_delay_as_processing() {
    let delay = 150 * MS;
    let server = pong_server(delay).await;
    let mut o = tcp(server.port());
    o.send = Some("PING\r\n".into());
    o.expect = Some(r"^\+PONG".into());
    let r = run(o, TIMEOUT).await;
    assert_success(&r);
    let t = facts(&r);
    assert_eq!(t.matched.as_deref(), Some("+PONG"));
    assert_eq!(t.banner.as_deref(), Some("+PONG"));
    assert_eq!(t.bytes_read, 7);
    assert!(r.phases.processing >= delay, "{r:#?}");
    assert!(r.phases.processing < delay + 100 * MS, "{r:#?}");
    assert!(r.phases.connect < 50 * MS, "{r:#?}");
    assert!(r.phases.transfer < 50 * MS, "{r:#?}");
}

#[tokio::test]
async fn banner_is_matched_without_sending() {
    let server = RawServer::start(|mut tcp: TcpStream| async move {
        let _ = tcp.write_all(b"220 mail.test ESMTP ready\r\n").await;
        std::future::pending::<()>().await;
    })
    .await;
    let mut o = tcp(server.port());
    o.expect = Some(r"^220 \S+ ESMTP".into());
    let r = run(o, TIMEOUT).await;
    assert_success(&r);
    let t = facts(&r);
    assert_eq!(t.banner.as_deref(), Some("220 mail.test ESMTP ready"));
    assert_eq!(t.matched.as_deref(), Some("220 mail.test ESMTP"));
}

#[tokio::test]
async fn peer_closing_without_a_match_fails_with_expect_mismatch() {
    let server = RawServer::start(|mut tcp: TcpStream| async move {
        let _ = tcp.write_all(b"-ERR unknown command\r\n").await;
    })
    .await;
    let mut o = tcp(server.port());
    o.expect = Some(r"^\+OK".into());
    let r = run(o, TIMEOUT).await;
    assert_reason(&r, Reason::TcpExpectMismatch);
    assert_eq!(facts(&r).bytes_read, 22);
    assert_eq!(facts(&r).banner.as_deref(), Some("-ERR unknown command"));
}

#[tokio::test]
async fn endless_stream_is_cut_at_the_read_limit() {
    let server = RawServer::start(|mut tcp: TcpStream| async move {
        let chunk = [b'a'; 8192];
        while tcp.write_all(&chunk).await.is_ok() {}
    })
    .await;
    let mut o = tcp(server.port());
    o.expect = Some("b".into());
    o.read_limit = 10_000;
    let started = Instant::now();
    let r = run(o, TIMEOUT).await;
    assert!(started.elapsed() < TIMEOUT);
    assert_reason(&r, Reason::TcpExpectMismatch);
    assert_eq!(facts(&r).bytes_read, 10_000, "never reads past the limit");
    assert!(r.message.contains("10000"), "{}", r.message);
}

#[tokio::test]
async fn silent_server_fails_with_timeout_in_processing() {
    let server = RawServer::never_answers().await;
    let mut o = tcp(server.port());
    o.send = Some("PING\r\n".into());
    o.expect = Some("PONG".into());
    let started = Instant::now();
    let r = run(o, 400 * MS).await;
    assert!(started.elapsed() < TIMEOUT);
    assert_reason(&r, Reason::Timeout);
    assert!(r.phases.processing >= 300 * MS, "{r:#?}");
    assert_eq!(facts(&r).remote_addr, Some(server.addr.to_string()));
}

#[tokio::test]
async fn refused_port_fails_with_connect_refused() {
    let r = run(tcp(refused_port()), TIMEOUT).await;
    assert_reason(&r, Reason::ConnectRefused);
}

#[test]
fn bad_definitions_are_rejected_with_the_field() {
    for (o, field) in [
        (
            TcpOptions {
                address: "no-port".into(),
                ..TcpOptions::default()
            },
            "address",
        ),
        (
            TcpOptions {
                address: "::1:80".into(),
                ..TcpOptions::default()
            },
            "address",
        ),
        (
            TcpOptions {
                address: "127.0.0.1:0".into(),
                ..TcpOptions::default()
            },
            "address",
        ),
        (
            TcpOptions {
                expect: Some("(".into()),
                ..tcp(1)
            },
            "expect",
        ),
        (
            TcpOptions {
                read_limit: 0,
                ..tcp(1)
            },
            "read_limit",
        ),
    ] {
        let e = CheckSpec::Tcp(o.clone())
            .build(TIMEOUT)
            .expect_err(&format!("{o:?} must be rejected"));
        assert_eq!(e.field, field, "{e}");
    }
}

// ---------------------------------------------------------------------------
// TLS over TCP
// ---------------------------------------------------------------------------

/// A TLS server that writes a banner after the handshake.
async fn tls_banner_server(pki: &Pki, leaf: Leaf, client_ca: bool) -> RawServer {
    let acceptor = tls_acceptor(pki.identity(leaf), client_ca.then(|| pki.root.clone()), &[]);
    RawServer::start(move |tcp: TcpStream| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls.write_all(b"* OK IMAP4rev1 ready\r\n").await;
                let _ = tls.flush().await;
                std::future::pending::<()>().await;
            }
        }
    })
    .await
}

#[tokio::test]
async fn tls_over_tcp_reports_the_verified_chain_and_matches_the_banner() {
    let pki = Pki::new();
    let server = tls_banner_server(&pki, Leaf::Valid, false).await;
    let mut o = tls_to(server.port(), &pki);
    o.expect = Some(r"^\* OK".into());
    let r = run(o, TIMEOUT).await;
    assert_success(&r);
    let t = r.tls.as_ref().expect("TLS facts");
    assert!(t.verified, "{t:#?}");
    assert_eq!(t.version.as_deref(), Some("TLS 1.3"));
    assert_eq!(t.chain.len(), 2);
    assert_eq!(t.earliest_expiry, Some(date(LEAF_NOT_AFTER)));
    assert_eq!(t.verified_chain_expiry, Some(date(LEAF_NOT_AFTER)));
    assert_eq!(
        t.leaf().unwrap().fingerprint_sha256,
        sha256_hex(pki.identity(Leaf::Valid).leaf())
    );
    assert!(r.phases.tls > Duration::ZERO);
    assert_eq!(facts(&r).matched.as_deref(), Some("* OK"));
}

#[tokio::test]
async fn tls_over_tcp_with_an_expired_leaf_fails_and_still_reports_the_chain() {
    let pki = Pki::new();
    let server = tls_banner_server(&pki, Leaf::Expired, false).await;
    let r = run(tls_to(server.port(), &pki), TIMEOUT).await;
    assert_reason(&r, Reason::TlsExpired);
    let t = r.tls.as_ref().expect("TLS facts even on failure");
    assert!(!t.verified);
    assert_eq!(t.earliest_expiry, Some(date(EXPIRED_NOT_AFTER)));
    assert!(!t.chain.is_empty());
}

#[tokio::test]
async fn tls_over_tcp_expiry_threshold_fails_with_expiring_soon() {
    let pki = Pki::new();
    let server = tls_banner_server(&pki, Leaf::Valid, false).await;
    let mut o = tls_to(server.port(), &pki);
    let until = (date(LEAF_NOT_AFTER) - chrono::Utc::now())
        .to_std()
        .unwrap();
    o.tls.as_mut().unwrap().expiry_threshold = Some(until + Duration::from_secs(86_400));
    let r = run(o, TIMEOUT).await;
    assert_reason(&r, Reason::TlsExpiringSoon);
}

#[tokio::test]
async fn tls_over_tcp_rejected_for_a_missing_client_certificate_is_a_handshake_failure() {
    let pki = Pki::new();
    let server = tls_banner_server(&pki, Leaf::Valid, true).await;
    let mut o = tls_to(server.port(), &pki);
    o.expect = Some(r"^\* OK".into());
    let r = run(o, TIMEOUT).await;
    assert_reason(&r, Reason::TlsHandshake);
    assert!(r.message.contains("CertificateRequired"), "{}", r.message);
}

#[tokio::test]
async fn tls_over_tcp_presents_the_client_certificate() {
    let pki = Pki::new();
    let server = tls_banner_server(&pki, Leaf::Valid, true).await;
    let mut o = tls_to(server.port(), &pki);
    o.expect = Some(r"^\* OK".into());
    let t = o.tls.as_mut().unwrap();
    t.cert_file = Some(pki.client_cert_file());
    t.key_file = Some(pki.client_key_file());
    let r = run(o, TIMEOUT).await;
    assert_success(&r);
}
