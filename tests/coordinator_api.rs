//! The coordinator's HTTP API on a real socket: probe and API tokens, bad
//! input (wrong token, oversized body, malformed JSON, replays), check lists
//! with ETags, incidents (list, get, acknowledge, resolve), silences,
//! probes, status, /metrics, and config reload keeping the old config on
//! errors.

mod results;

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use results::result;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use varde::coordinator::daemon::{CoordinatorOptions, serve};
use varde::wire::{ResultBatch, ResultRecord};

const EU: &str = "eu-probe-token-0123456789";
const US: &str = "us-probe-token-0123456789";
const ALICE: &str = "alice-api-token-0123456789";

fn write_config(dir: &Path, checks: &str) {
    std::fs::create_dir_all(dir.join("probes")).unwrap();
    std::fs::create_dir_all(dir.join("alert-rules")).unwrap();
    std::fs::write(dir.join("probes/checks.toml"), checks).unwrap();
    std::fs::write(
        dir.join("alert-rules/rules.toml"),
        "[[rule]]\nname = \"down\"\nkind = \"down\"\nquorum = \"any\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("eu.token"), format!("{EU}\n")).unwrap();
    std::fs::write(
        dir.join("coordinator.toml"),
        format!(
            r#"
[[probe]]
name = "eu-1"
region = "eu"
token_file = "eu.token"

[[probe]]
name = "us-1"
token = "{US}"

[[api_token]]
name = "alice"
token = "{ALICE}"
"#
        ),
    )
    .unwrap();
}

const CHECKS: &str = r#"
[[check]]
name = "api"
target = "http://127.0.0.1:9/"
interval = "30s"

[[check]]
name = "us-only"
target = "http://127.0.0.1:9/us"
interval = "30s"
regions = ["us"]
"#;

struct Coordinator {
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Coordinator {
    async fn start() -> Coordinator {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), CHECKS);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut opts = CoordinatorOptions::new(dir.path().into(), dir.path().join("data"), addr);
        opts.reload_interval = Duration::from_millis(50);
        opts.tick = Duration::from_millis(50);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(opts, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let c = Coordinator {
            addr,
            dir,
            stop: Some(tx),
            task,
        };
        // Answered once the config is loaded and the store open.
        let (s, _, _) = c.req("GET", "/healthz", None, "", &[]).await;
        assert_eq!(s, 200);
        c
    }

    async fn req(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> (u16, hyper::HeaderMap, Bytes) {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "coordinator")
            .header("content-type", "application/json");
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = send
            .send_request(b.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    }

    async fn json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let raw = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body).unwrap()
        };
        let (s, _, b) = self.req(method, path, token, raw, &[]).await;
        let v = if b.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&b)
                .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", String::from_utf8_lossy(&b)))
        };
        (s, v)
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("coordinator stops")
            .unwrap();
    }
}

fn batch(region: &str, seqs: std::ops::RangeInclusive<u64>, ok: bool) -> ResultBatch {
    let probe_id = format!("probe-{region}");
    let now = Utc::now();
    ResultBatch {
        probe_id: probe_id.clone(),
        region: region.into(),
        version: "test".into(),
        results: seqs
            .map(|seq| ResultRecord {
                check: "api".into(),
                region: region.into(),
                probe_id: probe_id.clone(),
                seq,
                result: result(
                    ok,
                    now - chrono::TimeDelta::seconds(10)
                        + chrono::TimeDelta::milliseconds(seq as i64),
                ),
            })
            .collect(),
    }
}

fn body(b: &ResultBatch) -> Vec<u8> {
    serde_json::to_vec(b).unwrap()
}

async fn probes_total(c: &Coordinator) -> u64 {
    let (s, v) = c.json("GET", "/api/v1/probes", None, Value::Null).await;
    assert_eq!(s, 200);
    v["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["results_total"].as_u64().unwrap())
        .sum()
}

#[tokio::test]
async fn results_need_a_known_probe_token_and_nothing_is_stored_without_one() {
    let c = Coordinator::start().await;
    let b = body(&batch("eu", 1..=2, true));
    for token in [None, Some("wrong-token-0123456789"), Some(ALICE)] {
        let (s, h, _) = c
            .req("POST", "/api/v1/results", token, b.clone(), &[])
            .await;
        assert_eq!(s, 401, "{token:?}");
        assert_eq!(h["www-authenticate"], "Bearer");
    }
    // A token bound to eu may not report us.
    let (s, _, msg) = c
        .req(
            "POST",
            "/api/v1/results",
            Some(EU),
            body(&batch("us", 1..=1, true)),
            &[],
        )
        .await;
    assert_eq!(s, 403, "{msg:?}");
    assert_eq!(probes_total(&c).await, 0);

    let (s, _, ack) = c
        .req("POST", "/api/v1/results", Some(EU), b.clone(), &[])
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&ack).unwrap(),
        json!({"accepted": 2, "duplicates": 0})
    );
    // Replay: all duplicates, nothing changes.
    let (s, _, ack) = c.req("POST", "/api/v1/results", Some(EU), b, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&ack).unwrap(),
        json!({"accepted": 0, "duplicates": 2})
    );
    // Overlap: only the new one counts.
    let (_, _, ack) = c
        .req(
            "POST",
            "/api/v1/results",
            Some(EU),
            body(&batch("eu", 2..=3, true)),
            &[],
        )
        .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&ack).unwrap(),
        json!({"accepted": 1, "duplicates": 1})
    );
    // An unbound token may report any region.
    let (s, _, _) = c
        .req(
            "POST",
            "/api/v1/results",
            Some(US),
            body(&batch("us", 1..=1, true)),
            &[],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(probes_total(&c).await, 4);
    // probe-eu belongs to the eu token: the us token may not push as it
    // (and so may not claim its next sequence numbers).
    let (s, _, msg) = c
        .req(
            "POST",
            "/api/v1/results",
            Some(US),
            body(&batch("eu", 4..=5, true)),
            &[],
        )
        .await;
    assert_eq!(s, 403, "{msg:?}");
    assert_eq!(probes_total(&c).await, 4);
    c.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_batches_are_refused_with_a_reason() {
    let c = Coordinator::start().await;
    let (s, v) = c
        .json("POST", "/api/v1/results", Some(EU), json!({"probe_id": 1}))
        .await;
    assert_eq!(s, 400);
    assert!(
        v["error"].as_str().unwrap().contains("malformed JSON"),
        "{v}"
    );
    let (s, _, b) = c
        .req("POST", "/api/v1/results", Some(EU), "{not json", &[])
        .await;
    assert_eq!(s, 400, "{b:?}");
    // A record of another probe inside the batch: refused whole.
    let mut b = batch("eu", 1..=2, true);
    b.results[1].probe_id = "someone-else".into();
    let (s, _, msg) = c
        .req("POST", "/api/v1/results", Some(EU), body(&b), &[])
        .await;
    assert_eq!(s, 400);
    assert!(
        String::from_utf8_lossy(&msg).contains("someone-else"),
        "{msg:?}"
    );
    // Over 4 MiB.
    let big = vec![b' '; 5 * 1024 * 1024];
    let (s, _, b) = c.req("POST", "/api/v1/results", Some(EU), big, &[]).await;
    assert_eq!(s, 413);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert!(v["error"].as_str().unwrap().contains("4194304"), "{v}");
    assert_eq!(probes_total(&c).await, 0);
    // The API's own limit is far smaller.
    let (s, _, b) = c
        .req(
            "POST",
            "/api/v1/silences",
            Some(ALICE),
            vec![b' '; 100 * 1024],
            &[],
        )
        .await;
    assert_eq!(s, 413);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert!(v["error"].as_str().unwrap().contains("65536"), "{v}");
    c.stop().await;
}

#[tokio::test]
async fn check_lists_by_region_with_etag() {
    let c = Coordinator::start().await;
    let (s, h, b) = c
        .req("GET", "/api/v1/checks?region=us", Some(US), "", &[])
        .await;
    assert_eq!(s, 200);
    let list: Value = serde_json::from_slice(&b).unwrap();
    let names: Vec<&str> = list["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "us-only"]);
    let etag = h["etag"].to_str().unwrap().to_owned();
    let (s, _, b) = c
        .req(
            "GET",
            "/api/v1/checks?region=us",
            Some(US),
            "",
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(s, 304);
    assert!(b.is_empty());
    // The eu-bound token gets eu's list without asking, and may not ask for us.
    let (s, h2, b) = c.req("GET", "/api/v1/checks", Some(EU), "", &[]).await;
    assert_eq!(s, 200);
    assert_ne!(h2["etag"], etag);
    let list: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(list["checks"].as_array().unwrap().len(), 1);
    let (s, _, _) = c
        .req("GET", "/api/v1/checks?region=us", Some(EU), "", &[])
        .await;
    assert_eq!(s, 403);
    let (s, _, _) = c
        .req("GET", "/api/v1/checks?region=us", None, "", &[])
        .await;
    assert_eq!(s, 401);

    // A config change changes the list and its ETag.
    std::fs::write(
        c.dir.path().join("probes/checks.toml"),
        CHECKS.replace("us-only", "us-only-2"),
    )
    .unwrap();
    let mut changed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (s, _, _) = c
            .req(
                "GET",
                "/api/v1/checks?region=us",
                Some(US),
                "",
                &[("if-none-match", &etag)],
            )
            .await;
        if s == 200 {
            changed = true;
            break;
        }
    }
    assert!(changed, "the new config is served");
    c.stop().await;
}

#[tokio::test]
async fn incidents_acknowledge_resolve_and_errors() {
    let c = Coordinator::start().await;
    let (s, _, _) = c
        .req(
            "POST",
            "/api/v1/results",
            Some(EU),
            body(&batch("eu", 1..=2, false)),
            &[],
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = c
        .json("GET", "/api/v1/incidents?state=open", None, Value::Null)
        .await;
    assert_eq!(s, 200);
    let list = v["incidents"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    let id = list[0]["id"].as_i64().unwrap();
    assert_eq!(list[0]["state"], "firing");

    let path = format!("/api/v1/incidents/{id}/ack");
    let (s, _) = c.json("POST", &path, None, Value::Null).await;
    assert_eq!(s, 401);
    let (s, _) = c.json("POST", &path, Some(EU), Value::Null).await;
    assert_eq!(s, 401, "a probe token is not an API token");
    let (s, v) = c
        .json("POST", &path, Some(ALICE), json!({"comment": "on it"}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["incident"]["state"], "acknowledged");
    assert_eq!(v["incident"]["acknowledged_by"], "alice");
    let (s, _) = c.json("POST", &path, Some(ALICE), Value::Null).await;
    assert_eq!(s, 409);
    let (s, v) = c
        .json("POST", &path, Some(ALICE), json!({"coment": "typo"}))
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = c
        .json(
            "POST",
            "/api/v1/incidents/999/ack",
            Some(ALICE),
            Value::Null,
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = c
        .json(
            "POST",
            "/api/v1/incidents/abc/ack",
            Some(ALICE),
            Value::Null,
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = c
        .json("GET", "/api/v1/incidents/999", None, Value::Null)
        .await;
    assert_eq!(s, 404);
    let (s, _) = c
        .json("GET", "/api/v1/incidents?state=bogus", None, Value::Null)
        .await;
    assert_eq!(s, 400);

    let (s, v) = c
        .json(
            "POST",
            &format!("/api/v1/incidents/{id}/resolve"),
            Some(ALICE),
            json!({"comment": "fixed"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["incident"]["state"], "resolved");
    assert_eq!(v["incident"]["resolved_by"], "alice");
    let (s, v) = c
        .json("GET", &format!("/api/v1/incidents/{id}"), None, Value::Null)
        .await;
    assert_eq!(s, 200);
    let kinds: Vec<&str> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["firing", "acknowledged", "resolved"]);
    let notes: Vec<&str> = v["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap())
        .collect();
    assert_eq!(notes, ["firing", "resolved"]);
    c.stop().await;
}

#[tokio::test]
async fn silences_by_api() {
    let c = Coordinator::start().await;
    let (s, v) = c
        .json(
            "POST",
            "/api/v1/silences",
            Some(ALICE),
            json!({"match": {"check": "api"}, "duration": "1h", "comment": "deploy"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["silence"]["id"].as_i64().unwrap();
    assert_eq!(v["silence"]["author"], "alice");
    for bad in [
        json!({"match": {}, "duration": "1h"}),
        json!({"match": {"check": "~("}, "duration": "1h"}),
        json!({"match": {"check": "api"}}),
        json!({"match": {"check": "api"}, "duration": "soon"}),
        json!({"match": {"check": "api"}, "duration": "1h", "ends_at": "2030-01-01T00:00:00Z"}),
        json!({"match": {"check": "api"}, "ends_at": "2000-01-01T00:00:00Z"}),
    ] {
        let (s, v) = c
            .json("POST", "/api/v1/silences", Some(ALICE), bad.clone())
            .await;
        assert_eq!(s, 400, "{bad} → {v}");
        assert!(v["error"].is_string());
    }
    let (s, _) = c
        .json(
            "POST",
            "/api/v1/silences",
            None,
            json!({"match": {"check": "api"}, "duration": "1h"}),
        )
        .await;
    assert_eq!(s, 401);

    // A silenced outage is recorded, not paged.
    c.req(
        "POST",
        "/api/v1/results",
        Some(EU),
        body(&batch("eu", 1..=2, false)),
        &[],
    )
    .await;
    let (_, v) = c
        .json("GET", "/api/v1/incidents?state=open", None, Value::Null)
        .await;
    let inc = &v["incidents"][0];
    assert_eq!(inc["suppressed_by"], format!("silence:{id}"));
    let (_, v) = c
        .json(
            "GET",
            &format!("/api/v1/incidents/{}", inc["id"]),
            None,
            Value::Null,
        )
        .await;
    assert_eq!(v["notifications"].as_array().unwrap().len(), 0);

    let (s, v) = c.json("GET", "/api/v1/silences", None, Value::Null).await;
    assert_eq!(s, 200);
    assert_eq!(v["silences"].as_array().unwrap().len(), 1);
    let (s, _, _) = c
        .req(
            "DELETE",
            &format!("/api/v1/silences/{id}"),
            Some(ALICE),
            "",
            &[],
        )
        .await;
    assert_eq!(s, 204);
    let (s, _, _) = c
        .req(
            "DELETE",
            &format!("/api/v1/silences/{id}"),
            Some(ALICE),
            "",
            &[],
        )
        .await;
    assert_eq!(s, 404);
    // Expired: the held page is queued.
    let (_, v) = c
        .json(
            "GET",
            &format!("/api/v1/incidents/{}", inc["id"]),
            None,
            Value::Null,
        )
        .await;
    assert_eq!(v["notifications"][0]["kind"], "firing");
    c.stop().await;
}

#[tokio::test]
async fn status_probes_and_metrics() {
    let c = Coordinator::start().await;
    c.req(
        "POST",
        "/api/v1/results",
        Some(EU),
        body(&batch("eu", 1..=2, false)),
        &[],
    )
    .await;
    c.req(
        "POST",
        "/api/v1/results",
        Some(US),
        body(&batch("us", 1..=2, true)),
        &[],
    )
    .await;
    let (s, v) = c.json("GET", "/api/v1/status/api", None, Value::Null).await;
    assert_eq!(s, 200);
    assert_eq!(v["check"]["verdict"], "degraded");
    assert_eq!(v["check"]["regions"]["eu"]["state"], "down");
    assert_eq!(v["check"]["regions"]["us"]["state"], "up");
    let (s, _) = c
        .json("GET", "/api/v1/status/nope", None, Value::Null)
        .await;
    assert_eq!(s, 404);
    let (s, v) = c.json("GET", "/api/v1/probes", None, Value::Null).await;
    assert_eq!(s, 200);
    let regions: Vec<&str> = v["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions, ["eu", "us"]);
    assert!(v["probes"][0]["results_per_second"].as_f64().unwrap() > 0.0);

    // The delivery worker routes the page in the background: wait (5 s at
    // most) until it has.
    let mut text = String::new();
    for _ in 0..100 {
        let (s, h, b) = c.req("GET", "/metrics", None, "", &[]).await;
        assert_eq!(s, 200);
        assert!(h["content-type"].to_str().unwrap().contains("openmetrics"));
        text = String::from_utf8(b.to_vec()).unwrap();
        if text.contains("varde_coordinator_notifications_unrouted_total 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for want in [
        "varde_coordinator_results_total{region=\"eu\"} 2",
        "varde_coordinator_batches_total{outcome=\"accepted\"} 2",
        "varde_coordinator_checks{verdict=\"degraded\"} 1",
        "varde_coordinator_incidents{state=\"firing\"} 1",
        // No [[route]] here: the page is recorded as undeliverable, not
        // left pending.
        "varde_coordinator_outbox_pending 0",
        "varde_coordinator_notifications_unrouted_total 1",
        "varde_coordinator_region_age_seconds{region=\"us\"}",
        "varde_coordinator_notify_latency_seconds_count 1",
        "varde_coordinator_config_last_reload_successful 1",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    for secret in [EU, US, ALICE] {
        assert!(!text.contains(secret));
    }
    c.stop().await;
}

#[tokio::test]
async fn bad_config_keeps_the_running_one_and_says_why() {
    let c = Coordinator::start().await;
    std::fs::write(
        c.dir.path().join("alert-rules/rules.toml"),
        "[[rule]]\nname = \"x\"\nkind = \"nope\"\n",
    )
    .unwrap();
    let mut v = Value::Null;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        v = c.json("GET", "/api/v1/config", None, Value::Null).await.1;
        if v["ok"] == false {
            break;
        }
    }
    assert_eq!(v["ok"], false, "{v}");
    let err = v["errors"][0].as_str().unwrap();
    assert!(err.contains("rules.toml:3:8"), "{err}");
    // The old rule still pages.
    c.req(
        "POST",
        "/api/v1/results",
        Some(EU),
        body(&batch("eu", 1..=2, false)),
        &[],
    )
    .await;
    let (_, v) = c
        .json("GET", "/api/v1/incidents?state=open", None, Value::Null)
        .await;
    assert_eq!(v["incidents"][0]["rule"], "down");
    let (_, _, m) = c.req("GET", "/metrics", None, "", &[]).await;
    assert!(
        String::from_utf8_lossy(&m).contains("varde_coordinator_config_last_reload_successful 0")
    );
    c.stop().await;
}
