//! TLS through the HTTPS check against in-process rustls servers presenting
//! chains from a test PKI with known validity windows: verification
//! outcomes and their reasons, the reported chain and expiry dates,
//! insecure mode (credentials withheld), client certificates, and the
//! negotiated protocol.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::Version;
use support::*;
use varde::check::{CheckResult, HttpOptions, Reason, Secret, TlsFacts};

const TIMEOUT: Duration = Duration::from_secs(2);

fn tls_facts(r: &CheckResult) -> &TlsFacts {
    r.tls
        .as_ref()
        .unwrap_or_else(|| panic!("no TLS facts reported: {r:#?}"))
}

fn ok_server() -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    |_| Reply::ok("hello over tls\n")
}

async fn serve(pki: &Pki, leaf: Leaf) -> Server {
    Server::tls(pki.identity(leaf), ok_server()).await
}

// ---------------------------------------------------------------------------
// Verified chains and expiry dates
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_chain_verifies_and_reports_leaf_intermediate_and_expiries() {
    let pki = Pki::new();
    let server = serve(&pki, Leaf::Valid).await;
    let r = run_http(https_to(server.port(), "/", &pki), TIMEOUT).await;
    assert_success(&r);
    assert_eq!(r.http.as_ref().unwrap().status, Some(200));

    let t = tls_facts(&r);
    assert!(t.verified, "{t:#?}");
    assert_eq!(t.verify_error, None);
    assert_eq!(t.server_name, "localhost");
    assert_eq!(t.chain.len(), 2, "leaf + intermediate: {t:#?}");

    let leaf = &t.chain[0];
    assert_eq!(leaf.subject, "CN=localhost");
    assert_eq!(leaf.issuer, "CN=varde test intermediate");
    assert_eq!(leaf.sans, vec!["localhost".to_string(), "127.0.0.1".into()]);
    assert_eq!(
        leaf.fingerprint_sha256,
        sha256_hex(pki.identity(Leaf::Valid).leaf())
    );
    assert!(!leaf.self_issued);
    assert_eq!(leaf.not_before, Some(date(LEAF_NOT_BEFORE)));
    assert_eq!(leaf.not_after, Some(date(LEAF_NOT_AFTER)));
    assert!(!leaf.serial.is_empty());

    let int = &t.chain[1];
    assert_eq!(int.subject, "CN=varde test intermediate");
    assert_eq!(int.issuer, "CN=varde test root");
    assert_eq!(int.fingerprint_sha256, sha256_hex(&pki.intermediate));
    assert_eq!(int.not_after, Some(date(INTERMEDIATE_NOT_AFTER)));

    // The leaf expires first of the presented certificates.
    assert_eq!(t.earliest_expiry, Some(date(LEAF_NOT_AFTER)));
    // The verified path is leaf + intermediate + root (from ca_file).
    let path_min = [LEAF_NOT_AFTER, INTERMEDIATE_NOT_AFTER, ROOT_NOT_AFTER]
        .into_iter()
        .map(date)
        .min();
    assert_eq!(t.verified_chain_expiry, path_min);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_chain_expiry_includes_the_root_from_ca_file() {
    // The root (not presented by the server) expires before the leaf.
    let pki = Pki::with_root_not_after((2029, 6, 1));
    let server = serve(&pki, Leaf::Valid).await;
    let r = run_http(https_to(server.port(), "/", &pki), TIMEOUT).await;
    assert_success(&r);
    let t = tls_facts(&r);
    assert!(t.verified);
    assert_eq!(t.chain.len(), 2);
    assert_eq!(t.earliest_expiry, Some(date(LEAF_NOT_AFTER)));
    assert_eq!(t.verified_chain_expiry, Some(utc(2029, 6, 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_presented_certificate_counts_for_earliest_expiry_but_not_the_verified_path() {
    let pki = Pki::new();
    let server = serve(&pki, Leaf::WithStray).await;
    let r = run_http(https_to(server.port(), "/", &pki), TIMEOUT).await;
    assert_success(&r);
    let t = tls_facts(&r);
    assert!(t.verified);
    assert_eq!(t.chain.len(), 3, "{t:#?}");
    assert_eq!(t.chain[2].subject, "CN=varde test stray");
    assert_eq!(t.earliest_expiry, Some(date(STRAY_NOT_AFTER)));
    assert_eq!(t.verified_chain_expiry, Some(date(LEAF_NOT_AFTER)));
}

// ---------------------------------------------------------------------------
// Verification failures
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_leaf_fails_with_tls_expired_and_reports_chain() {
    let pki = Pki::new();
    let server = serve(&pki, Leaf::Expired).await;
    let r = run_http(https_to(server.port(), "/", &pki), TIMEOUT).await;
    assert_reason(&r, Reason::TlsExpired);
    let t = tls_facts(&r);
    assert!(!t.verified);
    assert!(t.verify_error.is_some());
    assert_eq!(t.version, None, "handshake did not complete");
    assert_eq!(t.chain.len(), 2);
    assert_eq!(t.chain[0].subject, "CN=localhost");
    assert_eq!(t.chain[0].not_after, Some(date(EXPIRED_NOT_AFTER)));
    assert_eq!(t.earliest_expiry, Some(utc(2021, 1, 1)));
    assert_eq!(t.verified_chain_expiry, None);
    assert!(server.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_yet_valid_leaf_fails_with_tls_not_yet_valid() {
    let pki = Pki::new();
    let server = serve(&pki, Leaf::NotYetValid).await;
    let r = run_http(https_to(server.port(), "/", &pki), TIMEOUT).await;
    assert_reason(&r, Reason::TlsNotYetValid);
    let t = tls_facts(&r);
    assert!(!t.verified);
    assert_eq!(t.chain.len(), 2);
    assert_eq!(t.chain[0].not_before, Some(date(FUTURE_NOT_BEFORE)));
    assert_eq!(t.chain[0].not_after, Some(date(FUTURE_NOT_AFTER)));
    // The intermediate (2033) expires before this leaf (2041).
    assert_eq!(t.earliest_expiry, Some(date(INTERMEDIATE_NOT_AFTER)));
    assert!(server.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_hostname_fails_with_tls_hostname() {
    let pki = Pki::new();
    let server = serve(&pki, Leaf::WrongHost).await;
    let r = run_http(https_to(server.port(), "/", &pki), TIMEOUT).await;
    assert_reason(&r, Reason::TlsHostname);
    let t = tls_facts(&r);
    assert!(!t.verified);
    assert_eq!(t.chain.len(), 2);
    assert_eq!(t.chain[0].sans, vec!["other.example".to_string()]);
    assert_eq!(t.earliest_expiry, Some(date(LEAF_NOT_AFTER)));
    assert!(server.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_leaf_fails_with_tls_self_signed() {
    let pki = Pki::new();
    let server = serve(&pki, Leaf::SelfSigned).await;
    let r = run_http(https_to(server.port(), "/", &pki), TIMEOUT).await;
    assert_reason(&r, Reason::TlsSelfSigned);
    let t = tls_facts(&r);
    assert!(!t.verified);
    assert_eq!(t.chain.len(), 1);
    assert!(t.chain[0].self_issued);
    assert_eq!(t.chain[0].subject, "CN=localhost");
    assert_eq!(t.chain[0].issuer, "CN=localhost");
    assert_eq!(t.earliest_expiry, Some(date(SELF_SIGNED_NOT_AFTER)));
    assert!(server.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_intermediate_fails_with_tls_untrusted() {
    let pki = Pki::new();
    let server = serve(&pki, Leaf::MissingIntermediate).await;
    let r = run_http(https_to(server.port(), "/", &pki), TIMEOUT).await;
    assert_reason(&r, Reason::TlsUntrusted);
    let t = tls_facts(&r);
    assert!(!t.verified);
    assert_eq!(t.chain.len(), 1);
    assert!(!t.chain[0].self_issued);
    assert_eq!(t.earliest_expiry, Some(date(LEAF_NOT_AFTER)));
    assert!(server.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_web_roots_do_not_trust_the_test_ca() {
    let pki = Pki::new();
    let server = serve(&pki, Leaf::Valid).await;
    let mut o = https_to(server.port(), "/", &pki);
    o.tls.ca_file = None;
    let r = run_http(o, TIMEOUT).await;
    assert_reason(&r, Reason::TlsUntrusted);
    let t = tls_facts(&r);
    assert!(!t.verified);
    assert_eq!(t.chain.len(), 2);
    assert_eq!(t.earliest_expiry, Some(date(LEAF_NOT_AFTER)));
    assert!(server.requests().is_empty());
}

// ---------------------------------------------------------------------------
// Insecure mode and credentials
// ---------------------------------------------------------------------------

/// A bearer token plus user-set credential headers and one ordinary header.
fn with_credentials(mut o: HttpOptions) -> HttpOptions {
    o.bearer_token = Some(Secret("s3cret".into()));
    o.headers = BTreeMap::from([
        ("Cookie".to_string(), "session=abc".to_string()),
        ("X-Probe".to_string(), "kept".to_string()),
    ]);
    o
}

/// Only a user-set `Authorization` header.
fn with_authorization_header(mut o: HttpOptions) -> HttpOptions {
    o.headers = BTreeMap::from([(
        "Authorization".to_string(),
        "Basic Zm9vOmJhcg==".to_string(),
    )]);
    o
}

async fn insecure_run_withholds_credentials(leaf: Leaf, chain_len: usize) {
    let pki = Pki::new();
    let server = serve(&pki, leaf).await;
    let mut base = https_to(server.port(), "/", &pki);
    base.tls.insecure = true;

    for (label, o) in [
        ("bearer + cookie", with_credentials(base.clone())),
        (
            "authorization header",
            with_authorization_header(base.clone()),
        ),
    ] {
        let before = server.requests().len();
        let r = run_http(o, TIMEOUT).await;
        assert_success(&r);
        let h = r.http.as_ref().unwrap();
        assert_eq!(h.status, Some(200), "{label}");
        assert!(h.credentials_withheld, "{label}: {h:#?}");
        let t = tls_facts(&r);
        assert!(!t.verified, "{label}");
        assert!(t.verify_error.is_some(), "{label}");
        assert_eq!(t.chain.len(), chain_len, "{label}");
        assert_eq!(t.version.as_deref(), Some("TLS 1.3"), "{label}");

        let reqs = server.requests();
        assert_eq!(reqs.len(), before + 1, "{label}");
        let req = reqs.last().unwrap();
        assert_eq!(req.header("authorization"), None, "{label}: {req:#?}");
        assert_eq!(req.header("cookie"), None, "{label}: {req:#?}");
        if label == "bearer + cookie" {
            assert_eq!(req.header("x-probe").as_deref(), Some("kept"), "{label}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_against_expired_server_succeeds_unverified_and_withholds_credentials() {
    insecure_run_withholds_credentials(Leaf::Expired, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_against_self_signed_server_succeeds_unverified_and_withholds_credentials() {
    insecure_run_withholds_credentials(Leaf::SelfSigned, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_against_expired_server_reports_chain_and_expiry() {
    let pki = Pki::new();
    let server = serve(&pki, Leaf::Expired).await;
    let mut o = https_to(server.port(), "/", &pki);
    o.tls.insecure = true;
    let r = run_http(o, TIMEOUT).await;
    assert_success(&r);
    let t = tls_facts(&r);
    assert!(!t.verified);
    assert_eq!(t.chain.len(), 2);
    assert_eq!(t.earliest_expiry, Some(date(EXPIRED_NOT_AFTER)));
    assert_eq!(t.verified_chain_expiry, None);
    // Nothing configured, nothing withheld.
    assert!(!r.http.as_ref().unwrap().credentials_withheld);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_sent_when_the_chain_verifies() {
    let pki = Pki::new();
    let server = serve(&pki, Leaf::Valid).await;
    for insecure in [false, true] {
        let mut base = https_to(server.port(), "/", &pki);
        base.tls.insecure = insecure;

        let r = run_http(with_credentials(base.clone()), TIMEOUT).await;
        assert_success(&r);
        assert!(tls_facts(&r).verified);
        assert!(!r.http.as_ref().unwrap().credentials_withheld);
        let req = server.requests().pop().unwrap();
        assert_eq!(
            req.header("authorization").as_deref(),
            Some("Bearer s3cret"),
            "insecure={insecure}"
        );
        assert_eq!(req.header("cookie").as_deref(), Some("session=abc"));
        assert_eq!(req.header("x-probe").as_deref(), Some("kept"));

        let r = run_http(with_authorization_header(base), TIMEOUT).await;
        assert_success(&r);
        assert!(!r.http.as_ref().unwrap().credentials_withheld);
        let req = server.requests().pop().unwrap();
        assert_eq!(
            req.header("authorization").as_deref(),
            Some("Basic Zm9vOmJhcg=="),
            "insecure={insecure}"
        );
    }
}

// ---------------------------------------------------------------------------
// Expiry threshold
// ---------------------------------------------------------------------------

fn until_leaf_expiry() -> Duration {
    (date(LEAF_NOT_AFTER) - chrono::Utc::now())
        .to_std()
        .unwrap()
}

const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_threshold_beyond_the_leaf_expiry_fails_with_tls_expiring_soon() {
    let pki = Pki::new();
    let server = serve(&pki, Leaf::Valid).await;
    let mut o = https_to(server.port(), "/", &pki);
    o.tls.expiry_threshold = Some(until_leaf_expiry() + 30 * DAY);
    let r = run_http(o, TIMEOUT).await;
    assert_reason(&r, Reason::TlsExpiringSoon);
    let t = tls_facts(&r);
    assert!(t.verified);
    assert_eq!(t.earliest_expiry, Some(date(LEAF_NOT_AFTER)));
    assert_eq!(r.http.as_ref().unwrap().status, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_threshold_short_of_the_leaf_expiry_succeeds() {
    let pki = Pki::new();
    let server = serve(&pki, Leaf::Valid).await;
    let mut o = https_to(server.port(), "/", &pki);
    o.tls.expiry_threshold = Some(until_leaf_expiry() - 30 * DAY);
    let r = run_http(o, TIMEOUT).await;
    assert_success(&r);
    assert_eq!(tls_facts(&r).earliest_expiry, Some(date(LEAF_NOT_AFTER)));
}

// ---------------------------------------------------------------------------
// Client certificates
// ---------------------------------------------------------------------------

async fn mtls_server(pki: &Pki, leaf: Leaf) -> Server {
    ServerBuilder::new()
        .tls(pki.identity(leaf))
        .require_client_cert(pki.root.clone())
        .start(ok_server())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_is_presented_to_a_server_requiring_it() {
    let pki = Pki::new();
    let server = mtls_server(&pki, Leaf::Valid).await;
    let mut o = https_to(server.port(), "/", &pki);
    o.tls.cert_file = Some(pki.client_cert_file());
    o.tls.key_file = Some(pki.client_key_file());
    let r = run_http(o, TIMEOUT).await;
    assert_success(&r);
    assert!(tls_facts(&r).verified);
    let hs = server.handshakes();
    assert_eq!(hs.len(), 1, "{hs:#?}");
    assert!(hs[0].client_authenticated, "{hs:#?}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_mode_never_signs_with_the_client_key_for_an_untrusted_server() {
    let pki = Pki::new();
    let server = mtls_server(&pki, Leaf::SelfSigned).await;
    let mut o = https_to(server.port(), "/", &pki);
    o.tls.insecure = true;
    o.tls.cert_file = Some(pki.client_cert_file());
    o.tls.key_file = Some(pki.client_key_file());
    let r = run_http(o, TIMEOUT).await;
    // The handshake fails on our side (our key refuses to sign) and the
    // failure names why the server was not trusted.
    assert_reason(&r, Reason::TlsSelfSigned);
    let t = tls_facts(&r);
    assert!(!t.verified);
    assert_eq!(t.chain.len(), 1);
    let hs = server.handshakes();
    assert!(
        hs.iter().all(|h| !h.client_authenticated),
        "the server authenticated a client: {hs:#?}"
    );
    assert!(server.requests().is_empty());
}

// ---------------------------------------------------------------------------
// Negotiated protocol
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_and_h2_are_negotiated_and_reported() {
    let pki = Pki::new();
    let server = serve(&pki, Leaf::Valid).await;
    let r = run_http(https_to(server.port(), "/", &pki), TIMEOUT).await;
    assert_success(&r);
    let t = tls_facts(&r);
    assert_eq!(t.version.as_deref(), Some("TLS 1.3"));
    let cipher = t.cipher.as_deref().unwrap_or_default();
    assert!(cipher.starts_with("TLS13_"), "cipher {cipher:?}");
    assert_eq!(t.alpn.as_deref(), Some("h2"));
    assert_eq!(r.http.as_ref().unwrap().version.as_deref(), Some("HTTP/2"));
    assert_eq!(server.requests()[0].version, Version::HTTP_2);
    assert_eq!(server.handshakes()[0].alpn.as_deref(), Some("h2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_only_server_negotiates_http11() {
    let pki = Pki::new();
    let server = ServerBuilder::new()
        .tls(pki.identity(Leaf::Valid))
        .h1_only()
        .start(ok_server())
        .await
        .unwrap();
    let r = run_http(https_to(server.port(), "/", &pki), TIMEOUT).await;
    assert_success(&r);
    let t = tls_facts(&r);
    assert_eq!(t.version.as_deref(), Some("TLS 1.3"));
    assert_eq!(t.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(
        r.http.as_ref().unwrap().version.as_deref(),
        Some("HTTP/1.1")
    );
    assert_eq!(server.requests()[0].version, Version::HTTP_11);
}

// ---------------------------------------------------------------------------
// Server name
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_override_is_sent_as_sni_and_verified_when_connecting_by_ip() {
    let pki = Pki::new();
    let server = serve(&pki, Leaf::Valid).await;
    let mut o = https_to(server.port(), "/", &pki);
    o.url = format!("https://127.0.0.1:{}/", server.port());
    o.tls.server_name = Some("localhost".into());
    let r = run_http(o, TIMEOUT).await;
    assert_success(&r);
    let t = tls_facts(&r);
    assert!(t.verified);
    assert_eq!(t.server_name, "localhost");
    assert_eq!(
        r.http.as_ref().unwrap().remote_addr,
        Some(server.addr.to_string())
    );
    assert_eq!(server.handshakes()[0].sni.as_deref(), Some("localhost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_override_decides_hostname_verification() {
    let pki = Pki::new();
    let server = serve(&pki, Leaf::WrongHost).await;
    let by_ip = format!("https://127.0.0.1:{}/", server.port());

    // By IP, the certificate (only "other.example") does not match.
    let mut o = https_to(server.port(), "/", &pki);
    o.url = by_ip.clone();
    let r = run_http(o.clone(), TIMEOUT).await;
    assert_reason(&r, Reason::TlsHostname);
    assert_eq!(tls_facts(&r).server_name, "127.0.0.1");

    // With the override, it is verified against "other.example".
    o.tls.server_name = Some("other.example".into());
    let r = run_http(o, TIMEOUT).await;
    assert_success(&r);
    assert_eq!(tls_facts(&r).server_name, "other.example");
    assert_eq!(
        server.handshakes().last().unwrap().sni.as_deref(),
        Some("other.example")
    );
}

/// In TLS 1.3 the client finishes its side of the handshake before the
/// server checks the (empty) client certificate; the server's rejection
/// arrives as a TLS alert on the first read. It is a failed TLS handshake,
/// not a broken connection nor an HTTP protocol error, whichever HTTP
/// version was negotiated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_requiring_a_client_certificate_rejects_a_check_without_one() {
    let pki = Pki::new();
    for h1_only in [false, true] {
        let mut b = ServerBuilder::new()
            .tls(pki.identity(Leaf::Valid))
            .require_client_cert(pki.root.clone());
        if h1_only {
            b = b.h1_only();
        }
        let server = b.start(ok_server()).await.unwrap();
        let r = run_http(https_to(server.port(), "/", &pki), TIMEOUT).await;
        assert!(!r.success, "h1_only={h1_only}");
        assert_eq!(
            r.reason,
            Some(Reason::TlsHandshake),
            "h1_only={h1_only}: {}\n{r:#?}",
            r.message
        );
        assert!(server.requests().is_empty());
        assert!(server.handshakes().iter().all(|h| !h.client_authenticated));
    }
}
