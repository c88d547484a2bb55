//! The HTTP notification channels against real receivers: in-process hyper
//! servers on 127.0.0.1 that record what they get and answer as scripted,
//! and raw TCP servers that misbehave (never answer, answer forever).

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use varde::notify::channel::Secret;
use varde::notify::channel::webhook::{
    HttpSender, PagerDutySpec, SlackSpec, TeamsSpec, WebhookSpec, verify_signature,
};
use varde::notify::{Alert, Item, MessageKind, Outgoing, Regions, SendOutcome};

// === receiver ===

#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    path: String,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Recorded {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A hyper server that records requests and answers from a script
/// (status, body, optional `Retry-After`), then 200 "ok" once the script
/// runs out.
struct Receiver {
    port: u16,
    seen: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(script: Vec<(u16, &str)>) -> Receiver {
        Self::start_with(script.into_iter().map(|(s, b)| (s, b, None)).collect()).await
    }

    async fn start_with(script: Vec<(u16, &str, Option<&str>)>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        type Answer = (u16, String, Option<String>);
        let script: Arc<Mutex<VecDeque<Answer>>> = Arc::new(Mutex::new(
            script
                .into_iter()
                .map(|(s, b, r)| (s, b.to_owned(), r.map(str::to_owned)))
                .collect(),
        ));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen2.clone();
                let script = script.clone();
                let svc = service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    let script = script.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes().to_vec();
                        seen.lock().unwrap().push(Recorded {
                            method: parts.method.to_string(),
                            path: parts
                                .uri
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            headers: parts.headers,
                            body,
                        });
                        let (status, text, retry_after) = script
                            .lock()
                            .unwrap()
                            .pop_front()
                            .unwrap_or((200, "ok".to_owned(), None));
                        let mut resp = Response::new(Full::new(Bytes::from(text)));
                        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                        if let Some(r) = retry_after {
                            resp.headers_mut().insert("retry-after", r.parse().unwrap());
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                conns.spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Receiver { port, seen, task }
    }

    /// A Slack-style URL whose path is the secret part.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/services/T000/SECRET", self.port)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }
}

/// Accepts connections and never answers; holds them open.
async fn silent_server() -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (port, task)
}

/// Reads a request's head, answers with `status` headers promising a body
/// of 100 bytes, sends 7 of them, then holds the connection forever.
async fn stalls_mid_body(status: u16) -> (u16, JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!("HTTP/1.1 {status} X\r\ncontent-length: 100\r\n\r\npartial");
            let _ = s.write_all(head.as_bytes()).await;
            held.push(s);
        }
    });
    (port, task)
}

/// Answers every request with `status` and a 100 MB body, written as fast
/// as the client reads; reports how many body bytes it managed to write.
async fn firehose_server(status: u16) -> (u16, Arc<Mutex<u64>>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let written = Arc::new(Mutex::new(0u64));
    let w = written.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let w = w.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 {status} Whatever\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                    100u64 * 1024 * 1024
                );
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'a'; 64 * 1024];
                for _ in 0..1600 {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                    *w.lock().unwrap() += chunk.len() as u64;
                }
            });
        }
    });
    (port, written, task)
}

fn refused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// === messages ===

fn alert(incident: i64, check: &str) -> Alert {
    Alert {
        status: "firing".into(),
        incident,
        fingerprint: format!("api-down/{check}"),
        rule: "api-down".into(),
        kind: "down".into(),
        severity: "page".into(),
        receiver: "ops".into(),
        check: check.into(),
        region: None,
        target: Some(format!("https://{check}.example.com/health")),
        started_at: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap(),
        resolved_at: None,
        labels: BTreeMap::from([("team".to_owned(), "core".to_owned())]),
        annotations: BTreeMap::from([(
            "runbook_url".to_owned(),
            "https://wiki.example.com/runbooks/api".to_owned(),
        )]),
        regions: Some(Regions {
            down: vec!["eu".into(), "us".into(), "ap".into()],
            up: vec![],
            ..Regions::default()
        }),
        detail: Some(json!({"reason": "connection_refused"})),
        views: BTreeMap::new(),
        at: Utc.with_ymd_and_hms(2026, 3, 1, 12, 1, 0).unwrap(),
    }
}

fn item(incident: i64, check: &str, kind: MessageKind) -> Item {
    Item {
        kind,
        key: format!("varde-{incident}-{}", kind.as_str()),
        alert: alert(incident, check),
        ack_url: Some(format!(
            "http://127.0.0.1:9480/ack/{incident}?action=ack&exp=1&sig=aa"
        )),
        resolve_url: Some(format!(
            "http://127.0.0.1:9480/ack/{incident}?action=resolve&exp=1&sig=bb"
        )),
        acknowledged_by: None,
        level: 0,
    }
}

fn single(kind: MessageKind) -> Outgoing {
    let it = item(12, "api-health", kind);
    Outgoing {
        address: None,
        key: it.key.clone(),
        items: vec![it],
    }
}

fn digest() -> Outgoing {
    Outgoing {
        address: None,
        key: "varde-digest-7-2".into(),
        items: vec![
            item(12, "api-health", MessageKind::Firing),
            item(13, "billing", MessageKind::Resolved),
        ],
    }
}

fn sender(timeout: Duration) -> HttpSender {
    HttpSender::new(timeout).unwrap()
}

fn slack_spec(url: String) -> SlackSpec {
    SlackSpec {
        url: Secret::new(url),
    }
}

fn webhook_spec(url: String, secret: Option<&str>) -> WebhookSpec {
    WebhookSpec {
        url: Secret::new(url),
        secret: secret.map(Secret::new),
    }
}

fn reason(o: &SendOutcome) -> &str {
    match o {
        SendOutcome::Delivered => "",
        SendOutcome::Retry(r) | SendOutcome::RetryAfter(r, _) | SendOutcome::Failed(r) => r,
    }
}

fn assert_retry(o: &SendOutcome) {
    assert!(matches!(o, SendOutcome::Retry(_)), "want Retry, got {o:?}");
}

fn assert_failed(o: &SendOutcome) {
    assert!(
        matches!(o, SendOutcome::Failed(_)),
        "want Failed, got {o:?}"
    );
}

fn assert_no_secret(o: &SendOutcome) {
    let r = reason(o);
    assert!(!r.contains("SECRET"), "reason leaks the URL: {r}");
    assert!(!r.contains("/services/"), "reason leaks the URL: {r}");
}

// === Slack ===

#[tokio::test]
async fn slack_posts_text_blocks_and_channel() {
    let rx = Receiver::start(vec![]).await;
    let mut out = single(MessageKind::Firing);
    out.address = Some("#emea-oncall".into());
    let o = sender(Duration::from_secs(5))
        .slack(&slack_spec(rx.url()), &out)
        .await;
    assert_eq!(o, SendOutcome::Delivered);

    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/services/T000/SECRET");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("user-agent").unwrap().starts_with("varde/"));
    let v = r.json();
    assert_eq!(v["channel"], "#emea-oncall");
    let text = v["text"].as_str().unwrap();
    assert!(
        text.starts_with("[FIRING] api-health down in 3/3 regions"),
        "{text}"
    );
    let blocks = v["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    let all = v["blocks"].to_string();
    for want in [
        "Severity",
        "page",
        "eu, us, ap",
        "connection_refused",
        "2026-03-01T12:00:00Z",
        "https://wiki.example.com/runbooks/api",
        "action=ack",
        "action=resolve",
    ] {
        assert!(all.contains(want), "blocks lack {want}: {all}");
    }
    let actions = blocks.iter().find(|b| b["type"] == "actions").unwrap();
    let labels: Vec<&str> = actions["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["text"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["Acknowledge", "Resolve", "Runbook"]);
}

#[tokio::test]
async fn slack_digest_is_one_message_listing_every_item() {
    let rx = Receiver::start(vec![]).await;
    let o = sender(Duration::from_secs(5))
        .slack(&slack_spec(rx.url()), &digest())
        .await;
    assert_eq!(o, SendOutcome::Delivered);
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let v = reqs[0].json();
    assert!(v.get("channel").is_none());
    let text = v["text"].as_str().unwrap();
    assert!(text.contains("[FIRING] api-health"), "{text}");
    assert!(text.contains("[RESOLVED] billing"), "{text}");
    let blocks = v["blocks"].to_string();
    assert!(blocks.contains("2 alerts"), "{blocks}");
    assert!(blocks.contains("/ack/12?") && blocks.contains("/ack/13?"));
}

#[tokio::test]
async fn slack_escapes_mrkdwn_control_characters() {
    let rx = Receiver::start(vec![]).await;
    let mut out = single(MessageKind::Firing);
    out.items[0].alert.detail = Some(json!({"reason": "<!channel> & friends"}));
    sender(Duration::from_secs(5))
        .slack(&slack_spec(rx.url()), &out)
        .await;
    let body = rx.requests()[0].json().to_string();
    assert!(!body.contains("<!channel>"), "{body}");
    assert!(body.contains("&lt;!channel&gt; &amp; friends"), "{body}");
}

// === Teams ===

#[tokio::test]
async fn teams_posts_an_adaptive_card() {
    let rx = Receiver::start(vec![]).await;
    let spec = TeamsSpec {
        url: Secret::new(rx.url()),
    };
    let o = sender(Duration::from_secs(5))
        .teams(&spec, &single(MessageKind::Firing))
        .await;
    assert_eq!(o, SendOutcome::Delivered);
    let v = rx.requests()[0].json();
    assert_eq!(v["type"], "message");
    let att = &v["attachments"][0];
    assert_eq!(
        att["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &att["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert_eq!(
        card["body"][0]["text"],
        "[FIRING] api-health down in 3/3 regions"
    );
    let facts = card["body"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "FactSet")
        .unwrap();
    assert!(facts.to_string().contains("Severity"));
    let actions = card["actions"].as_array().unwrap();
    assert!(actions.iter().all(|a| a["type"] == "Action.OpenUrl"));
    let titles: Vec<&str> = actions
        .iter()
        .map(|a| a["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Acknowledge", "Resolve", "Runbook"]);
}

#[tokio::test]
async fn teams_digest_lists_every_item() {
    let rx = Receiver::start(vec![]).await;
    let spec = TeamsSpec {
        url: Secret::new(rx.url()),
    };
    let o = sender(Duration::from_secs(5)).teams(&spec, &digest()).await;
    assert_eq!(o, SendOutcome::Delivered);
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let body = reqs[0].json()["attachments"][0]["content"]["body"].clone();
    let containers: Vec<&Value> = body
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "Container")
        .collect();
    assert_eq!(containers.len(), 2);
    assert!(containers[1].to_string().contains("[RESOLVED] billing"));
}

// === PagerDuty ===

fn pd_spec(url: String) -> PagerDutySpec {
    PagerDutySpec {
        routing_key: Secret::new("R0UTINGKEY"),
        url,
    }
}

#[tokio::test]
async fn pagerduty_maps_kinds_to_event_actions_with_fingerprint_dedup() {
    let rx = Receiver::start(vec![
        (202, r#"{"status":"success"}"#),
        (202, r#"{"status":"success"}"#),
        (202, r#"{"status":"success"}"#),
    ])
    .await;
    let url = format!("http://127.0.0.1:{}/v2/enqueue", rx.port);
    let s = sender(Duration::from_secs(5));
    for kind in [
        MessageKind::Firing,
        MessageKind::Acknowledged,
        MessageKind::Resolved,
    ] {
        let o = s.pagerduty(&pd_spec(url.clone()), &single(kind)).await;
        assert_eq!(o, SendOutcome::Delivered, "{kind:?}");
    }
    let reqs = rx.requests();
    let actions: Vec<String> = reqs
        .iter()
        .map(|r| r.json()["event_action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["trigger", "acknowledge", "resolve"]);
    for r in &reqs {
        assert_eq!(r.path, "/v2/enqueue");
        let v = r.json();
        assert_eq!(v["routing_key"], "R0UTINGKEY");
        assert_eq!(v["dedup_key"], "api-down/api-health");
    }
    let trigger = reqs[0].json();
    let p = &trigger["payload"];
    assert_eq!(p["severity"], "critical");
    assert_eq!(p["source"], "https://api-health.example.com/health");
    assert_eq!(p["component"], "api-health");
    assert_eq!(p["group"], "api-down");
    assert_eq!(p["class"], "down");
    assert!(
        p["summary"]
            .as_str()
            .unwrap()
            .starts_with("[FIRING] api-health down in 3/3 regions")
    );
    assert_eq!(p["custom_details"]["incident"], 12);
    assert_eq!(p["custom_details"]["labels"]["team"], "core");
    assert_eq!(p["custom_details"]["regions"]["down"][0], "eu");
    let links = trigger["links"].to_string();
    assert!(links.contains("runbooks/api") && links.contains("action=ack"));
}

#[tokio::test]
async fn pagerduty_sends_one_event_per_item_and_caps_the_summary() {
    let rx = Receiver::start(vec![]).await;
    let url = format!("http://127.0.0.1:{}/v2/enqueue", rx.port);
    let mut out = digest();
    out.items[0].alert.detail = Some(json!({"reason": "x".repeat(5000)}));
    let o = sender(Duration::from_secs(5))
        .pagerduty(&pd_spec(url), &out)
        .await;
    assert_eq!(o, SendOutcome::Delivered);
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].json()["dedup_key"], "api-down/api-health");
    assert_eq!(reqs[1].json()["dedup_key"], "api-down/billing");
    assert_eq!(reqs[1].json()["event_action"], "resolve");
    let summary = reqs[0].json()["payload"]["summary"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(summary.chars().count() <= 1024);
}

#[tokio::test]
async fn pagerduty_400_fails_and_429_retries_without_leaking_the_key() {
    let rx = Receiver::start(vec![
        (
            400,
            r#"{"status":"invalid event","message":"Event object is invalid","errors":["bad routing_key R0UTINGKEY"]}"#,
        ),
        (429, "slow down"),
    ])
    .await;
    let url = format!("http://127.0.0.1:{}/v2/enqueue", rx.port);
    let s = sender(Duration::from_secs(5));
    let o = s
        .pagerduty(&pd_spec(url.clone()), &single(MessageKind::Firing))
        .await;
    assert_failed(&o);
    assert!(reason(&o).contains("400"), "{o:?}");
    assert!(!reason(&o).contains("R0UTINGKEY"), "{o:?}");
    let o = s
        .pagerduty(&pd_spec(url), &single(MessageKind::Firing))
        .await;
    assert_retry(&o);
}

#[tokio::test]
async fn pagerduty_stops_at_the_first_retry() {
    let rx = Receiver::start(vec![(503, "")]).await;
    let url = format!("http://127.0.0.1:{}/v2/enqueue", rx.port);
    let o = sender(Duration::from_secs(5))
        .pagerduty(&pd_spec(url), &digest())
        .await;
    assert_retry(&o);
    assert!(reason(&o).contains("event 1/2"), "{o:?}");
    assert_eq!(rx.requests().len(), 1);
}

// === generic webhook ===

#[tokio::test]
async fn webhook_is_signed_and_carries_the_idempotency_key() {
    let rx = Receiver::start(vec![]).await;
    let out = single(MessageKind::Firing);
    let o = sender(Duration::from_secs(5))
        .webhook(&webhook_spec(rx.url(), Some("hmac-key")), &out)
        .await;
    assert_eq!(o, SendOutcome::Delivered);
    let r = &rx.requests()[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("idempotency-key"), Some("varde-12-firing"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("user-agent").unwrap().starts_with("varde/"));

    let ts = r.header("x-varde-timestamp").unwrap();
    let secs: i64 = ts.parse().unwrap();
    assert!((Utc::now().timestamp() - secs).abs() < 60);
    let sig = r.header("x-varde-signature").unwrap();
    assert!(sig.starts_with("sha256="));
    assert!(verify_signature(b"hmac-key", ts, &r.body, sig));

    let mut tampered = r.body.clone();
    tampered[10] ^= 1;
    assert!(!verify_signature(b"hmac-key", ts, &tampered, sig));
    assert!(!verify_signature(b"other-key", ts, &r.body, sig));
    let later = (secs + 1).to_string();
    assert!(!verify_signature(b"hmac-key", &later, &r.body, sig));

    let v = r.json();
    assert_eq!(v["version"], 1);
    assert_eq!(v["idempotency_key"], "varde-12-firing");
    assert_eq!(v["status"], "firing");
    let it = &v["items"][0];
    assert_eq!(it["kind"], "firing");
    assert_eq!(it["idempotency_key"], "varde-12-firing");
    assert_eq!(it["level"], 0);
    assert!(it["ack_url"].as_str().unwrap().contains("action=ack"));
    assert!(
        it["resolve_url"]
            .as_str()
            .unwrap()
            .contains("action=resolve")
    );
    let incident = Alert::from_payload(&it["incident"]).unwrap();
    assert_eq!(incident, out.items[0].alert);
}

#[tokio::test]
async fn webhook_unsigned_and_digest() {
    let rx = Receiver::start(vec![]).await;
    let o = sender(Duration::from_secs(5))
        .webhook(&webhook_spec(rx.url(), None), &digest())
        .await;
    assert_eq!(o, SendOutcome::Delivered);
    let r = &rx.requests()[0];
    assert!(r.header("x-varde-signature").is_none());
    assert!(r.header("x-varde-timestamp").is_none());
    assert_eq!(r.header("idempotency-key"), Some("varde-digest-7-2"));
    let v = r.json();
    assert_eq!(v["status"], "digest");
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    assert_eq!(v["items"][1]["kind"], "resolved");
}

// === outcomes ===

#[tokio::test]
async fn server_error_retries_then_succeeds() {
    let rx = Receiver::start(vec![(500, "boom"), (503, "busy")]).await;
    let s = sender(Duration::from_secs(5));
    let spec = webhook_spec(rx.url(), Some("k"));
    let out = single(MessageKind::Firing);
    let o = s.webhook(&spec, &out).await;
    assert_retry(&o);
    assert!(reason(&o).contains("500"), "{o:?}");
    assert_no_secret(&o);
    let o = s.webhook(&spec, &out).await;
    assert_retry(&o);
    assert!(reason(&o).contains("503"), "{o:?}");
    let o = s.webhook(&spec, &out).await;
    assert_eq!(o, SendOutcome::Delivered);
    assert_eq!(rx.requests().len(), 3);
}

#[tokio::test]
async fn client_error_fails_with_status_and_snippet_but_not_the_url() {
    let rx = Receiver::start(vec![(
        404,
        "channel_not_found\n for https://hooks/services/T000/SECRET",
    )])
    .await;
    let o = sender(Duration::from_secs(5))
        .slack(&slack_spec(rx.url()), &single(MessageKind::Firing))
        .await;
    assert_failed(&o);
    let r = reason(&o);
    assert!(r.contains("404"), "{r}");
    assert!(r.contains("channel_not_found"), "{r}");
    assert!(!r.contains('\n'), "{r}");
    assert_no_secret(&o);
}

#[tokio::test]
async fn bad_request_fails_and_too_many_requests_retries() {
    let rx = Receiver::start(vec![(400, "invalid_payload"), (429, ""), (408, "")]).await;
    let s = sender(Duration::from_secs(5));
    let spec = slack_spec(rx.url());
    let out = single(MessageKind::Firing);
    let o = s.slack(&spec, &out).await;
    assert_failed(&o);
    assert!(reason(&o).contains("400") && reason(&o).contains("invalid_payload"));
    assert_no_secret(&o);
    let o = s.slack(&spec, &out).await;
    assert_retry(&o);
    assert!(reason(&o).contains("429"), "{o:?}");
    assert_retry(&s.slack(&spec, &out).await);
}

#[tokio::test]
async fn retry_after_of_a_429_or_503_is_passed_on_and_ignored_elsewhere() {
    let date = (chrono::Utc::now() + chrono::Duration::seconds(600))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let rx = Receiver::start_with(vec![
        (429, "rate_limited", Some("120")),
        (503, "", Some(date.as_str())),
        (500, "", Some("60")),
        (429, "", Some("soon")),
        (400, "", Some("60")),
    ])
    .await;
    let s = sender(Duration::from_secs(5));
    let spec = slack_spec(rx.url());
    let out = single(MessageKind::Firing);

    match s.slack(&spec, &out).await {
        SendOutcome::RetryAfter(r, after) => {
            assert_eq!(after, Duration::from_secs(120));
            assert!(r.contains("429") && r.contains("rate_limited"), "{r}");
        }
        o => panic!("want RetryAfter, got {o:?}"),
    }
    match s.slack(&spec, &out).await {
        // An HTTP-date: the wait from now (a second or two of slack for
        // the date's whole seconds and the time the request took).
        SendOutcome::RetryAfter(_, after) => {
            assert!((597..=600).contains(&after.as_secs()), "{after:?}");
        }
        o => panic!("want RetryAfter, got {o:?}"),
    }
    // Retry-After on a 500 means nothing; an unparsable value is ignored;
    // a 400 stays final whatever it says.
    assert_retry(&s.slack(&spec, &out).await);
    assert_retry(&s.slack(&spec, &out).await);
    assert_failed(&s.slack(&spec, &out).await);
}

#[test]
fn retry_after_values_parse_as_seconds_or_http_dates() {
    use varde::notify::channel::webhook::parse_retry_after;
    let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let p = |v: &str| parse_retry_after(v, now);
    assert_eq!(p("0"), Some(Duration::ZERO));
    assert_eq!(p(" 30 "), Some(Duration::from_secs(30)));
    assert_eq!(
        p("99999999999999999999999"),
        Some(Duration::from_secs(u64::MAX))
    );
    assert_eq!(
        p("Mon, 07 Dec 2026 12:01:30 GMT"),
        Some(Duration::from_secs(90))
    );
    assert_eq!(p("Mon, 07 Dec 2026 11:00:00 GMT"), Some(Duration::ZERO));
    for bad in ["", "-5", "1.5", "soon", "2026-12-07T12:01:30Z"] {
        assert_eq!(p(bad), None, "{bad:?}");
    }
}

#[tokio::test]
async fn a_2xx_whose_body_stalls_is_delivered_not_retried() {
    let s = sender(Duration::from_secs(1));
    let out = single(MessageKind::Firing);
    let (port, _task) = stalls_mid_body(200).await;
    let spec = webhook_spec(format!("http://127.0.0.1:{port}/hook"), None);
    let o = tokio::time::timeout(Duration::from_secs(10), s.webhook(&spec, &out))
        .await
        .expect("bounded");
    // The receiver said 200: sending again would deliver it twice.
    assert_eq!(o, SendOutcome::Delivered);

    let (port, _task) = stalls_mid_body(503).await;
    let spec = webhook_spec(format!("http://127.0.0.1:{port}/hook"), None);
    let o = tokio::time::timeout(Duration::from_secs(10), s.webhook(&spec, &out))
        .await
        .expect("bounded");
    assert_retry(&o);
    assert!(reason(&o).contains("503"), "{o:?}");
}

#[tokio::test]
async fn silent_receiver_is_retried_within_the_timeout() {
    let (port, _task) = silent_server().await;
    let url = format!("http://127.0.0.1:{port}/services/T000/SECRET");
    let started = Instant::now();
    let o = tokio::time::timeout(
        Duration::from_secs(5),
        sender(Duration::from_millis(300)).slack(&slack_spec(url), &single(MessageKind::Firing)),
    )
    .await
    .expect("the sender's own timeout fires first");
    let took = started.elapsed();
    assert_retry(&o);
    assert!(reason(&o).contains("no response within"), "{o:?}");
    assert_no_secret(&o);
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn huge_error_body_is_not_read_to_the_end() {
    let (port, written, _task) = firehose_server(400).await;
    let url = format!("http://127.0.0.1:{port}/services/T000/SECRET");
    let started = Instant::now();
    let o = tokio::time::timeout(
        Duration::from_secs(20),
        sender(Duration::from_secs(10))
            .webhook(&webhook_spec(url, None), &single(MessageKind::Firing)),
    )
    .await
    .expect("does not hang");
    assert_failed(&o);
    assert!(reason(&o).contains("400"), "{o:?}");
    assert!(reason(&o).len() < 400, "snippet is short: {o:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Give the server a moment to notice the closed connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = *written.lock().unwrap();
    assert!(
        sent < 32 * 1024 * 1024,
        "read {sent} bytes of a 100 MB body"
    );
}

#[tokio::test]
async fn huge_success_body_still_delivers() {
    let (port, _written, _task) = firehose_server(200).await;
    let url = format!("http://127.0.0.1:{port}/hook");
    let o = tokio::time::timeout(
        Duration::from_secs(20),
        sender(Duration::from_secs(10))
            .webhook(&webhook_spec(url, None), &single(MessageKind::Firing)),
    )
    .await
    .expect("does not hang");
    assert_eq!(o, SendOutcome::Delivered);
}

#[tokio::test]
async fn connection_refused_is_retried() {
    let url = format!("http://127.0.0.1:{}/services/T000/SECRET", refused_port());
    let s = sender(Duration::from_secs(2));
    let out = single(MessageKind::Firing);
    let o = s.slack(&slack_spec(url.clone()), &out).await;
    assert_retry(&o);
    assert!(reason(&o).contains("connection refused"), "{o:?}");
    assert!(
        reason(&o).starts_with("POST to slack channel failed"),
        "{o:?}"
    );
    assert_no_secret(&o);
    let spec = TeamsSpec {
        url: Secret::new(url.clone()),
    };
    assert_retry(&s.teams(&spec, &out).await);
    assert_retry(&s.webhook(&webhook_spec(url.clone(), Some("k")), &out).await);
    let o = s.pagerduty(&pd_spec(url), &out).await;
    assert_retry(&o);
    assert!(!reason(&o).contains("R0UTINGKEY"));
    assert_no_secret(&o);
}

#[tokio::test]
async fn invalid_url_fails_without_echoing_it() {
    let s = sender(Duration::from_secs(2));
    let out = single(MessageKind::Firing);
    for url in [
        "not a url SECRET",
        "ftp://example.com/SECRET",
        "/services/SECRET",
    ] {
        let o = s.slack(&slack_spec(url.into()), &out).await;
        assert_failed(&o);
        assert_no_secret(&o);
    }
}

#[tokio::test]
async fn untrusted_certificate_is_not_delivered() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _task = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(s).await;
            });
        }
    });
    let url = format!("https://localhost:{port}/services/T000/SECRET");
    let o = tokio::time::timeout(
        Duration::from_secs(10),
        sender(Duration::from_secs(5)).slack(&slack_spec(url), &single(MessageKind::Firing)),
    )
    .await
    .expect("does not hang");
    assert_ne!(o, SendOutcome::Delivered);
    assert!(reason(&o).contains("TLS"), "{o:?}");
    assert_no_secret(&o);
}
