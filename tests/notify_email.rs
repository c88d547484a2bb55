//! The email channel against a real SMTP server: aiosmtpd
//! (`tests/support/smtp_server.py`, Debian's `python3-aiosmtpd`, run by
//! `/usr/bin/python3`) on 127.0.0.1, one per test, with plain SMTP,
//! STARTTLS, implicit TLS, AUTH and scripted 550/451 answers. The server
//! reports every accepted message as a JSON line, which the tests read.
//!
//! The tests fail (never skip) when the server cannot start: `.ci/run`
//! installs the package.

mod smtp;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};
use varde::notify::channel::Secret;
use varde::notify::channel::email::{EmailSpec, Mailer, SmtpTls};
use varde::notify::{Alert, Item, MessageKind, Outgoing, SendOutcome};

use smtp::{ATTEMPT, SmtpServer, WAIT};

// === A test CA ===

/// A CA and a server certificate for localhost/127.0.0.1, as PEM files.
struct TestPki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn test_pki() -> TestPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "varde email test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &ca).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    let cert_path = dir.path().join("server.pem");
    let key_path = dir.path().join("server.key");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, leaf_cert.pem()).unwrap();
    std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();
    TestPki {
        _dir: dir,
        ca: ca_path,
        cert: cert_path,
        key: key_path,
    }
}

impl TestPki {
    fn server_args(&self, tls: &str) -> Vec<String> {
        vec![
            "--tls".into(),
            tls.into(),
            "--cert".into(),
            self.cert.display().to_string(),
            "--key".into(),
            self.key.display().to_string(),
        ]
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// === Messages ===

fn spec(port: u16, tls: SmtpTls) -> EmailSpec {
    EmailSpec {
        host: "127.0.0.1".into(),
        port,
        tls,
        username: None,
        password: None,
        from: "varde <varde@example.com>".into(),
        to: vec!["oncall@example.com".into(), "team@example.com".into()],
        ca_file: None,
    }
}

fn alert(incident: i64, check: &str, status: &str) -> Alert {
    Alert::from_payload(&json!({
        "status": status,
        "incident": incident,
        "fingerprint": format!("api-down/{check}"),
        "rule": "api-down",
        "kind": "down",
        "severity": "page",
        "receiver": "api-team",
        "check": check,
        "target": "https://api.example.com/health",
        "started_at": "2026-11-23T03:00:00Z",
        "resolved_at": if status == "resolved" { json!("2026-11-23T03:42:10Z") } else { Value::Null },
        "labels": { "team": "api", "env": "prod" },
        "annotations": {
            "summary": "The public API health endpoint is failing",
            "runbook": "https://runbooks.example.com/api-health",
            "dashboard": "https://grafana.example.com/d/api"
        },
        "regions": { "down": ["ap-south", "eu-west", "us-east"], "up": [], "stale": [] },
        "detail": { "reason": "connect_refused", "value": 3, "threshold": 2 },
        "views": {
            "eu-west": {
                "success": false,
                "reason": "connect_refused",
                "message": "connection refused",
                "phases": { "resolve": 0.0021, "connect": 0.0153 },
                "duration_seconds": 0.0174,
                "started_at": "2026-11-23T03:00:00Z"
            }
        },
        "at": "2026-11-23T03:00:05Z"
    }))
    .unwrap()
}

fn item(incident: i64, check: &str, kind: MessageKind) -> Item {
    let key = format!("varde-{incident}-{}-c1", kind.as_str());
    Item {
        kind,
        key,
        alert: alert(incident, check, kind.as_str()),
        ack_url: Some(format!(
            "https://varde.example.com/ack/{incident}?sig=abc123"
        )),
        resolve_url: Some(format!(
            "https://varde.example.com/resolve/{incident}?sig=def456"
        )),
        acknowledged_by: None,
        level: 0,
    }
}

fn one(item: Item, address: Option<&str>) -> Outgoing {
    Outgoing {
        address: address.map(str::to_owned),
        key: item.key.clone(),
        items: vec![item],
    }
}

fn rcpts(m: &Value) -> Vec<&str> {
    m["rcpt_tos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

fn body(m: &Value) -> &str {
    m["body"].as_str().unwrap()
}

fn mailer(spec: &EmailSpec) -> Mailer {
    Mailer::new(spec, ATTEMPT).unwrap()
}

// === Tests ===

#[tokio::test]
async fn plain_smtp_delivers_one_firing_item_with_everything_on_call_needs() {
    let server = SmtpServer::start(&[]);
    let m = mailer(&spec(server.port, SmtpTls::None));
    let out = one(item(7, "api-health", MessageKind::Firing), None);

    assert_eq!(m.send(&out).await, SendOutcome::Delivered);
    let msg = server.next_message();
    assert_eq!(msg["mail_from"], "varde@example.com");
    assert_eq!(rcpts(&msg), ["oncall@example.com", "team@example.com"]);
    assert_eq!(msg["subject"], "[FIRING] api-health down in 3/3 regions");
    assert_eq!(msg["message_id"], "<varde-7-firing-c1@varde>");
    assert_eq!(msg["idempotency_key"], "varde-7-firing-c1");
    assert!(
        msg["content_type"]
            .as_str()
            .unwrap()
            .starts_with("text/plain"),
        "{msg}"
    );
    assert_eq!(msg["tls"], false);

    let b = body(&msg);
    for want in [
        "[FIRING] api-health down in 3/3 regions",
        "The public API health endpoint is failing",
        "Incident:",
        "7",
        "api-down (down)",
        "page",
        "https://api.example.com/health",
        "2026-11-23 03:00:00 UTC",
        "connect_refused",
        "ap-south, eu-west, us-east",
        "Runbook:",
        "https://runbooks.example.com/api-health",
        "Acknowledge: https://varde.example.com/ack/7?sig=abc123",
        "https://varde.example.com/resolve/7?sig=def456",
        "eu-west: down (connect_refused): connection refused",
        "resolve 2.1 ms, connect 15 ms",
        "dashboard: https://grafana.example.com/d/api",
        "env=prod, team=api",
    ] {
        assert!(b.contains(want), "body lacks {want:?}:\n{b}");
    }
}

#[tokio::test]
async fn a_contact_address_replaces_the_channel_recipients() {
    let server = SmtpServer::start(&[]);
    let m = mailer(&spec(server.port, SmtpTls::None));
    let out = one(
        item(8, "api-health", MessageKind::Firing),
        Some("bob@example.com"),
    );
    assert_eq!(m.send(&out).await, SendOutcome::Delivered);
    assert_eq!(rcpts(&server.next_message()), ["bob@example.com"]);
}

#[tokio::test]
async fn no_recipient_or_a_bad_address_fails_without_connecting() {
    let server = SmtpServer::start(&[]);
    let mut s = spec(server.port, SmtpTls::None);
    s.to.clear();
    let m = mailer(&s);
    let out = one(item(9, "api-health", MessageKind::Firing), None);
    assert!(matches!(m.send(&out).await, SendOutcome::Failed(_)));

    let out = one(
        item(9, "api-health", MessageKind::Firing),
        Some("not an address"),
    );
    match m.send(&out).await {
        SendOutcome::Failed(r) => assert!(r.contains("not an address"), "{r}"),
        other => panic!("{other:?}"),
    }
    server.assert_nothing_delivered();
}

#[tokio::test]
async fn acknowledged_and_resolved_items_say_who_and_when() {
    let server = SmtpServer::start(&[]);
    let m = mailer(&spec(server.port, SmtpTls::None));
    let mut ack = item(10, "api-health", MessageKind::Acknowledged);
    ack.acknowledged_by = Some("alice".into());
    ack.ack_url = None;
    assert_eq!(m.send(&one(ack, None)).await, SendOutcome::Delivered);
    let msg = server.next_message();
    assert_eq!(
        msg["subject"],
        "[ACKNOWLEDGED] api-health down in 3/3 regions"
    );
    assert!(
        body(&msg).contains("Acknowledged by alice."),
        "{}",
        body(&msg)
    );
    assert!(!body(&msg).contains("Acknowledge:"), "{}", body(&msg));

    let resolved = item(10, "api-health", MessageKind::Resolved);
    assert_eq!(m.send(&one(resolved, None)).await, SendOutcome::Delivered);
    let msg = server.next_message();
    assert_eq!(msg["subject"], "[RESOLVED] api-health down in 3/3 regions");
    assert!(
        body(&msg).contains("2026-11-23 03:42:10 UTC (lasted 42m 10s)"),
        "{}",
        body(&msg)
    );
    assert!(!body(&msg).contains("Acknowledge:"), "{}", body(&msg));
}

#[tokio::test]
async fn starttls_with_the_test_ca_delivers_over_tls() {
    let pki = test_pki();
    let server = SmtpServer::start(&strs(&pki.server_args("starttls")));
    let mut s = spec(server.port, SmtpTls::StartTls);
    s.ca_file = Some(pki.ca.clone());
    let m = mailer(&s);

    let out = one(item(11, "api-health", MessageKind::Firing), None);
    assert_eq!(m.send(&out).await, SendOutcome::Delivered);
    let msg = server.next_message();
    assert_eq!(msg["tls"], true);
    assert_eq!(msg["subject"], "[FIRING] api-health down in 3/3 regions");
}

#[tokio::test]
async fn starttls_without_the_ca_is_refused_and_nothing_is_delivered() {
    let pki = test_pki();
    let server = SmtpServer::start(&strs(&pki.server_args("starttls")));
    let m = mailer(&spec(server.port, SmtpTls::StartTls));

    let out = one(item(12, "api-health", MessageKind::Firing), None);
    // A TLS failure may be a transient interception or a certificate about
    // to be fixed: retried, with the cause in the reason (once).
    match m.send(&out).await {
        SendOutcome::Retry(r) => {
            assert!(r.contains("invalid peer certificate"), "{r}");
            assert!(!r.contains("Connection error: Connection error"), "{r}");
        }
        other => panic!("{other:?}"),
    }
    server.assert_nothing_delivered();
}

#[tokio::test]
async fn starttls_required_but_not_offered_is_not_sent_in_clear() {
    let server = SmtpServer::start(&[]);
    let m = mailer(&spec(server.port, SmtpTls::StartTls));
    let out = one(item(13, "api-health", MessageKind::Firing), None);
    match m.send(&out).await {
        SendOutcome::Failed(r) => assert!(r.contains("STARTTLS"), "{r}"),
        other => panic!("{other:?}"),
    }
    server.assert_nothing_delivered();
}

#[tokio::test]
async fn implicit_tls_delivers() {
    let pki = test_pki();
    let server = SmtpServer::start(&strs(&pki.server_args("implicit")));
    let mut s = spec(server.port, SmtpTls::Implicit);
    s.ca_file = Some(pki.ca.clone());
    let m = mailer(&s);

    let out = one(item(14, "api-health", MessageKind::Firing), None);
    assert_eq!(m.send(&out).await, SendOutcome::Delivered);
    assert_eq!(server.next_message()["tls"], true);
}

#[tokio::test]
async fn auth_with_the_right_password_delivers_and_a_wrong_one_fails_without_leaking_it() {
    let pki = test_pki();
    let mut args = pki.server_args("starttls");
    args.extend(["--auth".into(), "varde:s3cret-right".into()]);
    let server = SmtpServer::start(&strs(&args));

    let mut s = spec(server.port, SmtpTls::StartTls);
    s.ca_file = Some(pki.ca.clone());
    s.username = Some("varde".into());
    s.password = Some(Secret::new("s3cret-right"));
    let m = mailer(&s);
    let out = one(item(15, "api-health", MessageKind::Firing), None);
    assert_eq!(m.send(&out).await, SendOutcome::Delivered);
    assert_eq!(server.next_message()["authenticated"], true);

    s.password = Some(Secret::new("hunter2-wrong"));
    let m = mailer(&s);
    let debug = format!("{m:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    match m.send(&out).await {
        SendOutcome::Failed(r) => {
            assert!(r.contains("535"), "{r}");
            assert!(!r.contains("hunter2"), "{r}");
        }
        other => panic!("{other:?}"),
    }
    server.assert_nothing_delivered();

    // Without credentials the server refuses MAIL FROM (530): final.
    s.username = None;
    s.password = None;
    match mailer(&s).send(&out).await {
        SendOutcome::Failed(r) => assert!(r.contains("530"), "{r}"),
        other => panic!("{other:?}"),
    }
    server.assert_nothing_delivered();
}

#[tokio::test]
async fn a_550_recipient_is_final_and_a_451_is_retried() {
    let server = SmtpServer::start(&[
        "--reject-rcpt",
        "gone@example.com",
        "--tempfail-rcpt",
        "busy@example.com",
    ]);
    let m = mailer(&spec(server.port, SmtpTls::None));

    let out = one(
        item(16, "api-health", MessageKind::Firing),
        Some("gone@example.com"),
    );
    match m.send(&out).await {
        SendOutcome::Failed(r) => assert!(r.contains("550"), "{r}"),
        other => panic!("{other:?}"),
    }
    let out = one(
        item(16, "api-health", MessageKind::Firing),
        Some("busy@example.com"),
    );
    match m.send(&out).await {
        SendOutcome::Retry(r) => assert!(r.contains("451"), "{r}"),
        other => panic!("{other:?}"),
    }
    server.assert_nothing_delivered();
}

#[tokio::test]
async fn nobody_listening_is_retried() {
    // A port that was free a moment ago: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let m = mailer(&spec(port, SmtpTls::None));
    let out = one(item(17, "api-health", MessageKind::Firing), None);
    assert!(matches!(m.send(&out).await, SendOutcome::Retry(_)));
}

#[tokio::test]
async fn a_server_that_never_greets_is_retried_after_the_timeout() {
    // Accepted by the kernel's backlog, never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let m = Mailer::new(&spec(port, SmtpTls::None), Duration::from_millis(500)).unwrap();
    let out = one(item(18, "api-health", MessageKind::Firing), None);
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(WAIT, m.send(&out))
        .await
        .expect("send outlived its timeout");
    assert!(matches!(outcome, SendOutcome::Retry(_)), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A minimal SMTP server that accepts one message and then never answers
/// QUIT. Returns its port and a flag set once the message was accepted.
async fn stalls_after_accepting() -> (u16, Arc<std::sync::atomic::AtomicBool>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = accepted.clone();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(b"220 stall.test ESMTP\r\n").await.unwrap();
        let mut in_data = false;
        while let Ok(Some(line)) = lines.next_line().await {
            let reply: &[u8] = if in_data {
                if line != "." {
                    continue;
                }
                in_data = false;
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                b"250 queued\r\n"
            } else {
                match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                    Some("EHLO") => b"250 stall.test\r\n",
                    Some("DATA") => {
                        in_data = true;
                        b"354 go ahead\r\n"
                    }
                    // Never answers; holds the connection open.
                    Some("QUIT") => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    _ => b"250 ok\r\n",
                }
            };
            w.write_all(reply).await.unwrap();
        }
    });
    (port, accepted)
}

#[tokio::test]
async fn a_server_that_stalls_after_accepting_is_still_a_delivery() {
    let (port, accepted) = stalls_after_accepting().await;
    let m = Mailer::new(&spec(port, SmtpTls::None), Duration::from_secs(1)).unwrap();
    let out = one(item(19, "api-health", MessageKind::Firing), None);
    let outcome = tokio::time::timeout(WAIT, m.send(&out))
        .await
        .expect("send outlived its QUIT grace");
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst));
    // Retrying would send it twice: the server said 250 to the message.
    assert_eq!(outcome, SendOutcome::Delivered);
}

#[tokio::test]
async fn a_digest_is_one_message_listing_every_incident() {
    let server = SmtpServer::start(&[]);
    let m = mailer(&spec(server.port, SmtpTls::None));
    let out = Outgoing {
        address: Some("bob@example.com".into()),
        key: "varde-digest-41-3".into(),
        items: vec![
            item(21, "api-health", MessageKind::Firing),
            item(22, "checkout", MessageKind::Resolved),
            item(23, "login", MessageKind::Firing),
        ],
    };
    assert_eq!(m.send(&out).await, SendOutcome::Delivered);
    let msg = server.next_message();
    assert_eq!(
        msg["subject"],
        "[varde] 3 notifications: 2 firing, 1 resolved"
    );
    assert_eq!(msg["message_id"], "<varde-digest-41-3@varde>");
    assert_eq!(rcpts(&msg), ["bob@example.com"]);
    let b = body(&msg);
    for want in [
        "[FIRING] api-health down in 3/3 regions (incident 21)",
        "[RESOLVED] checkout down in 3/3 regions (incident 22)",
        "[FIRING] login down in 3/3 regions (incident 23)",
        "https://varde.example.com/ack/21?sig=abc123",
        "https://varde.example.com/ack/23?sig=abc123",
    ] {
        assert!(b.contains(want), "body lacks {want:?}:\n{b}");
    }
    server.assert_nothing_delivered();
}

#[test]
fn bad_settings_are_rejected_when_the_channel_is_built() {
    let mut s = spec(25, SmtpTls::StartTls);
    s.ca_file = Some("/nonexistent/ca.pem".into());
    assert!(Mailer::new(&s, ATTEMPT).unwrap_err().contains("ca_file"));

    let mut s = spec(25, SmtpTls::None);
    s.from = "not an address".into();
    assert!(Mailer::new(&s, ATTEMPT).is_err());

    let mut s = spec(25, SmtpTls::None);
    s.password = Some(Secret::new("pw"));
    assert!(Mailer::new(&s, ATTEMPT).is_err());
}
