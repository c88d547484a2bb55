//! The probe daemon end to end, in-process: real check targets, real
//! HTTP to its endpoints, config files rewritten while it runs, and a
//! fake coordinator serving the check list and receiving results.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use varde::probe::daemon::{ProbeOptions, serve};
use varde::wire::{CheckList, ResultBatch};

/// Upper bound for anything the tests wait for.
const PATIENCE: Duration = Duration::from_secs(15);

async fn get(url: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.get(url.parse().unwrap()))
        .await
        .expect("GET timed out")
        .expect("GET failed");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The value of the first sample of `metric` whose labels contain all of `labels`.
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let (name, rest) = l.split_once(['{', ' ']).unwrap_or((l, ""));
            name == metric
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `/metrics` until `pred` holds, or panics after PATIENCE.
async fn wait_metrics(base: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, text) = get(&format!("{base}/metrics")).await;
        if pred(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last /metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Probe {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<Result<(), varde::probe::daemon::StartError>>,
}

impl Probe {
    async fn start(opts: ProbeOptions) -> Probe {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(opts, listener, async move {
            let _ = rx.await;
        }));
        Probe {
            base,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("probe did not stop in time")
            .unwrap()
            .unwrap();
    }
}

fn options(config: Option<&Path>, data: &Path) -> ProbeOptions {
    ProbeOptions {
        config_dir: config.map(Path::to_path_buf),
        coordinator: None,
        token: None,
        region: "eu".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.to_path_buf(),
        max_concurrency: 16,
        poll_interval: Duration::from_millis(100),
        shutdown_grace: Duration::from_secs(2),
        coordinator_ca: None,
        source_address: None,
    }
}

fn check_toml(name: &str, port: u16, path: &str) -> String {
    format!(
        "[[check]]\nname = \"{name}\"\ntarget = \"http://127.0.0.1:{port}{path}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nlabels = {{ team = \"web\" }}\n"
    )
}

const MODULES: &str = "[modules.http_2xx]\nkind = \"http\"\ntimeout = \"5s\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_checks_run_and_export_blackbox_metrics_with_labels() {
    let target = Server::http(|r| {
        if r.path == "/down" {
            Reply::status(503)
        } else {
            Reply::ok("ok")
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("web.toml"),
        check_toml("up", target.port(), "/") + &check_toml("down", target.port(), "/down"),
    )
    .unwrap();
    let probe = Probe::start(options(Some(dir.path()), data.path())).await;
    let text = wait_metrics(&probe.base, "both checks", |t| {
        sample(t, "probe_success", &[("check", "up")]) == Some(1.0)
            && sample(t, "probe_success", &[("check", "down")]) == Some(0.0)
    })
    .await;
    let up = [("check", "up"), ("region", "eu"), ("team", "web")];
    assert_eq!(sample(&text, "probe_http_status_code", &up), Some(200.0));
    assert_eq!(
        sample(&text, "probe_http_status_code", &[("check", "down")]),
        Some(503.0)
    );
    assert!(sample(&text, "probe_duration_seconds", &up).unwrap() > 0.0);
    assert!(
        sample(
            &text,
            "probe_http_duration_seconds",
            &[("check", "up"), ("phase", "connect")]
        )
        .is_some()
    );
    assert_eq!(get(&format!("{}/healthz", probe.base)).await.0, 200);
    assert_eq!(get(&format!("{}/readyz", probe.base)).await.0, 200);
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_adds_removes_and_survives_a_bad_config() {
    let target = Server::http(|_| Reply::ok("ok")).await;
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.toml");
    std::fs::write(&file, check_toml("a", target.port(), "/a")).unwrap();
    let probe = Probe::start(options(Some(dir.path()), data.path())).await;
    wait_metrics(&probe.base, "check a", |t| {
        sample(t, "probe_success", &[("check", "a")]) == Some(1.0)
    })
    .await;

    // Replace a with b: a's series go, b's appear.
    std::fs::write(&file, check_toml("b", target.port(), "/b")).unwrap();
    let text = wait_metrics(&probe.base, "a removed, b added", |t| {
        sample(t, "probe_success", &[("check", "b")]) == Some(1.0) && !t.contains("check=\"a\"")
    })
    .await;
    assert_eq!(
        sample(&text, "varde_config_last_reload_successful", &[]),
        Some(1.0)
    );

    // A broken file: b keeps running, the reload is reported as failed.
    std::fs::write(&file, "[[check]]\nname = \"b\"\ntarget = \"nope\"\n").unwrap();
    let text = wait_metrics(&probe.base, "failed reload reported", |t| {
        sample(t, "varde_config_last_reload_successful", &[]) == Some(0.0)
    })
    .await;
    assert_eq!(sample(&text, "probe_success", &[("check", "b")]), Some(1.0));
    let requests_before = target.requests().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        target.requests().len() > requests_before,
        "b still runs after a bad reload"
    );
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_endpoint_answers_like_blackbox_exporter() {
    let target = Server::http(|_| Reply::ok("hello")).await;
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("modules.toml"), MODULES).unwrap();
    let probe = Probe::start(options(Some(dir.path()), data.path())).await;
    let url = format!(
        "{}/probe?module=http_2xx&target=http://127.0.0.1:{}/",
        probe.base,
        target.port()
    );
    let (status, body) = get(&url).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sample(&body, "probe_success", &[]), Some(1.0), "{body}");
    assert_eq!(sample(&body, "probe_http_status_code", &[]), Some(200.0));

    let (status, body) = get(&format!("{}/probe?module=nope&target=x", probe.base)).await;
    assert_eq!(status, 400);
    assert!(body.contains("Unknown module"), "{body}");
    let (status, body) = get(&format!("{}/probe?module=http_2xx", probe.base)).await;
    assert_eq!(status, 400);
    assert!(body.contains("Target parameter is missing"), "{body}");
    probe.stop().await;
}

// === With a coordinator ===

#[derive(Default)]
struct Coord {
    list: Mutex<String>,
    results: Mutex<BTreeMap<(String, u64), String>>,
    list_requests: Mutex<Vec<Option<String>>>,
}

async fn coord_checks(State(c): State<Arc<Coord>>, headers: HeaderMap) -> impl IntoResponse {
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some("Bearer s3cret")
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let inm = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    c.list_requests.lock().unwrap().push(inm.clone());
    let body = c.list.lock().unwrap().clone();
    let etag = format!("\"{}\"", body.len());
    if inm.as_deref() == Some(etag.as_str()) {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    ([(header::ETAG, etag)], body).into_response()
}

async fn coord_results(
    State(c): State<Arc<Coord>>,
    Json(batch): Json<ResultBatch>,
) -> impl IntoResponse {
    let mut r = c.results.lock().unwrap();
    for rec in batch.results {
        r.insert((rec.probe_id.clone(), rec.seq), rec.check.clone());
    }
    Json(varde::wire::BatchAck::default())
}

async fn start_coordinator(c: Arc<Coord>) -> (String, JoinHandle<()>) {
    let app = axum::Router::new()
        .route(varde::wire::CHECKS_PATH, axum::routing::get(coord_checks))
        .route(
            varde::wire::RESULTS_PATH,
            axum::routing::post(coord_results),
        )
        .with_state(c);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", l.local_addr().unwrap());
    (
        base,
        tokio::spawn(async move {
            axum::serve(l, app).await.unwrap();
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_list_is_run_results_are_pushed_and_the_list_is_cached() {
    let target = Server::http(|_| Reply::ok("ok")).await;
    let list = CheckList {
        checks: vec![
            serde_json::from_value(serde_json::json!({
                "name": "api",
                "target": format!("http://127.0.0.1:{}/", target.port()),
                "interval": "1s",
                "timeout": "500ms",
                "spec": {"kind": "http", "url": format!("http://127.0.0.1:{}/", target.port())}
            }))
            .unwrap(),
        ],
    };
    let coord = Arc::new(Coord::default());
    *coord.list.lock().unwrap() = serde_json::to_string(&list).unwrap();
    let (base, server) = start_coordinator(coord.clone()).await;
    let data = tempfile::tempdir().unwrap();
    let mut opts = options(None, data.path());
    opts.coordinator = Some(base.parse().unwrap());
    opts.token = Some("s3cret".into());
    let probe = Probe::start(opts.clone()).await;
    wait_metrics(&probe.base, "api from the coordinator", |t| {
        sample(t, "probe_success", &[("check", "api")]) == Some(1.0)
    })
    .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while coord.results.lock().unwrap().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no results pushed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Re-polls carry the ETag.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !coord
        .list_requests
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.is_some())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no conditional re-poll"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    probe.stop().await;

    // The coordinator goes away; a restarted probe runs the cached list.
    server.abort();
    let _ = server.await;
    let probe = Probe::start(opts).await;
    wait_metrics(&probe.base, "api from the cached list", |t| {
        sample(t, "probe_success", &[("check", "api")]) == Some(1.0)
    })
    .await;
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackbox_default_modules_work_without_any_configured() {
    let target = Server::http(|_| Reply::ok("hello")).await;
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("web.toml"),
        check_toml("a", target.port(), "/"),
    )
    .unwrap();
    let probe = Probe::start(options(Some(dir.path()), data.path())).await;
    for (module, t) in [
        ("http_2xx", format!("http://127.0.0.1:{}/", target.port())),
        ("tcp_connect", format!("127.0.0.1:{}", target.port())),
    ] {
        let (status, body) = get(&format!("{}/probe?module={module}&target={t}", probe.base)).await;
        assert_eq!(status, 200, "{module}: {body}");
        assert_eq!(
            sample(&body, "probe_success", &[]),
            Some(1.0),
            "{module}: {body}"
        );
    }
    probe.stop().await;
}
