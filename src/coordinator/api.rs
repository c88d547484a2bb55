//! The coordinator's HTTP API.
//!
//! Probes (bearer token of a `[[probe]]` entry):
//! * `GET /api/v1/checks?region=R` — the region's checks, with `ETag` /
//!   `If-None-Match` → 304. A token bound to a region gets that region's
//!   list (asking for another is 403).
//! * `POST /api/v1/results` — a [`ResultBatch`]; → [`BatchAck`]. Idempotent
//!   by `(probe_id, seq)`.
//!
//! Reads (no token): `GET /api/v1/incidents[?state=open|firing|acknowledged|resolved&check=&limit=]`,
//! `GET /api/v1/incidents/{id}` (with timeline and notifications),
//! `GET /api/v1/silences`, `GET /api/v1/probes`, `GET /api/v1/status`
//! (every check's verdict and regions), `GET /api/v1/status/{check}`,
//! `GET /api/v1/config` (is the running config the files on disk?),
//! `/metrics`, `/healthz`, `/readyz`.
//!
//! Writes (bearer token of an `[[api_token]]` entry, whose name is recorded
//! as the author): `POST /api/v1/incidents/{id}/ack`,
//! `POST /api/v1/incidents/{id}/resolve` (body optional:
//! `{"comment": "..."}`), `POST /api/v1/silences`
//! (`{"match": {...}, "starts_at"?, "ends_at" | "duration", "comment"?}`),
//! `DELETE /api/v1/silences/{id}`.
//!
//! Errors are JSON `{"error": "..."}`: 400 malformed, 401 no or unknown
//! token, 403 token not allowed this, 404 unknown id, 409 wrong state, 413
//! body too large.

// Handlers' helpers return the error response itself (axum style); its
// size does not matter on this path.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::config::Credential;
use super::daemon::Shared;
use super::engine::{ActionError, verdict_str};
use super::store::{IncidentDetail, IncidentFilter, IncidentState, PreparedBatch, StoreError};
use crate::wire::{CHECKS_PATH, CheckList, RESULTS_PATH, ResultBatch};

#[path = "api_notify.rs"]
mod notify;

/// Largest result batch accepted (probes send at most 1 MiB).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Largest body of any other request.
pub const MAX_API_BYTES: usize = 64 * 1024;
/// How long any request may take, body and answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a result batch's body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Most incidents one list returns.
pub const MAX_LIST: usize = 1000;

/// The coordinator's own metrics that are not read from the engine at
/// scrape time.
#[derive(Default)]
pub struct Metrics {
    results: Family<RegionLabel, Counter>,
    batches: Family<OutcomeLabel, Counter>,
    ingest_seconds: HistogramCell,
    notify_latency: HistogramCell,
    reload_ok: Gauge,
    reload_at: Gauge<f64, AtomicU64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegionLabel {
    region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// A histogram with latency buckets from 100 µs to 10 s, fine around the
/// 50 ms notification target.
#[derive(Clone)]
struct HistogramCell(Histogram);

impl Default for HistogramCell {
    fn default() -> Self {
        HistogramCell(Histogram::new([
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075,
            0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]))
    }
}

impl Metrics {
    pub fn config_reload(&self, ok: bool) {
        self.reload_ok.set(i64::from(ok));
        if ok {
            self.reload_at
                .set(Utc::now().timestamp_micros() as f64 / 1e6);
        }
    }

    fn batch(&self, outcome: &'static str) {
        self.batches.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route(CHECKS_PATH, get(checks))
        .route("/api/v1/incidents", get(list_incidents))
        .route("/api/v1/incidents/{id}", get(get_incident))
        .route("/api/v1/incidents/{id}/ack", post(ack))
        .route("/api/v1/incidents/{id}/resolve", post(resolve))
        .route("/api/v1/silences", get(list_silences).post(add_silence))
        .route("/api/v1/silences/{id}", delete(expire_silence))
        .route("/api/v1/probes", get(probes))
        .route("/api/v1/status", get(status_all))
        .route("/api/v1/status/{check}", get(status_one))
        .route("/api/v1/config", get(config_status))
        .route("/api/v1/oncall", get(notify::oncall))
        .route(
            "/api/v1/overrides",
            get(notify::list_overrides).post(notify::add_override),
        )
        .route("/api/v1/overrides/{id}", delete(notify::expire_override))
        .route("/ack/{id}", get(notify::link_get).post(notify::link_post))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .layer(DefaultBodyLimit::max(MAX_API_BYTES));
    let ingest = Router::new()
        .route(RESULTS_PATH, post(results))
        .layer(DefaultBodyLimit::max(MAX_BATCH_BYTES));
    api.merge(ingest)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::middleware::from_fn(limits))
        .with_state(shared)
}

/// Every request, body included, must complete within [`REQUEST_TIMEOUT`]
/// (a slow body cannot hold a connection slot for long), and axum's
/// plain-text 413 becomes the API's JSON error.
async fn limits(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r)
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE
                && r.headers()
                    .get(header::CONTENT_TYPE)
                    .is_none_or(|v| v != "application/json") =>
        {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {MAX_API_BYTES} bytes"),
            )
        }
        Ok(r) => r,
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request not completed within {}s",
                REQUEST_TIMEOUT.as_secs()
            ),
        ),
    }
}

// === helpers ===

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut r = (status, axum::Json(json!({ "error": msg.into() }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn probe_auth(s: &Shared, headers: &HeaderMap) -> Result<Credential, Response> {
    let cfg = s.config();
    bearer(headers)
        .and_then(|t| cfg.auth.probe(t).cloned())
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "missing or unknown probe token"))
}

fn api_auth(s: &Shared, headers: &HeaderMap) -> Result<Credential, Response> {
    let cfg = s.config();
    bearer(headers)
        .and_then(|t| cfg.auth.api(t).cloned())
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "missing or unknown API token"))
}

fn store_error(e: &StoreError) -> Response {
    match e {
        StoreError::Invalid { reason } => error(StatusCode::BAD_REQUEST, reason.clone()),
        other => {
            tracing::error!(error = %other, "store error");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is unavailable; retry later",
            )
        }
    }
}

fn action_error(e: ActionError) -> Response {
    match e {
        ActionError::NotFound(id) => error(
            StatusCode::NOT_FOUND,
            format!("no incident or silence {id}"),
        ),
        ActionError::Conflict { id, state } => {
            error(StatusCode::CONFLICT, format!("{id} is {state}"))
        }
        ActionError::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
        ActionError::Store(e) => store_error(&e),
    }
}

/// Runs `f` on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], empty_ok: bool) -> Result<T, Response> {
    let body = if body.iter().all(u8::is_ascii_whitespace) && empty_ok {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}")))
}

// === probes ===

#[derive(Deserialize)]
struct RegionQuery {
    region: Option<String>,
}

async fn checks(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<RegionQuery>,
) -> Response {
    let cred = match probe_auth(&s, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let region = match (q.region.filter(|r| !r.is_empty()), &cred.region) {
        (Some(asked), Some(bound)) if &asked != bound => {
            return error(
                StatusCode::FORBIDDEN,
                format!("this token may only fetch the checks of region {bound:?}"),
            );
        }
        (Some(asked), _) => asked,
        (None, Some(bound)) => bound.clone(),
        (None, None) => return error(StatusCode::BAD_REQUEST, "missing ?region="),
    };
    let cfg = s.config();
    let list = CheckList {
        checks: cfg
            .checks
            .iter()
            .filter(|c| c.runs_in(&region))
            .cloned()
            .collect(),
    };
    let body = match serde_json::to_vec(&list) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let digest = Sha256::digest(&body);
    let etag = format!(
        "\"{}\"",
        digest[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let etag_h = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_h)]).into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag_h),
        ],
        body,
    )
        .into_response()
}

async fn results(State(s): State<Arc<Shared>>, req: axum::extract::Request) -> Response {
    let t0 = Instant::now();
    let (parts, body) = req.into_parts();
    // The token is checked before a byte of the body is read, and the body
    // must arrive within BODY_TIMEOUT: unauthenticated or slow clients can
    // hold neither memory nor a connection for long.
    let cred = match probe_auth(&s, &parts.headers) {
        Ok(c) => c,
        Err(r) => {
            s.metrics.batch("unauthorized");
            return r;
        }
    };
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BATCH_BYTES))
        .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|c| c.is::<http_body_util::LengthLimitError>());
            s.metrics
                .batch(if too_large { "too_large" } else { "malformed" });
            return if too_large {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("result batch over {MAX_BATCH_BYTES} bytes"),
                )
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("reading the body failed: {e}"),
                )
            };
        }
        Err(_) => {
            s.metrics.batch("timeout");
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {}s", BODY_TIMEOUT.as_secs()),
            );
        }
    };
    // Parsing and serializing for the store are CPU work: off the runtime,
    // and outside the engine's lock, so several batches prepare at once.
    let store = s.store.clone();
    let prepared = blocking(move || -> Result<PreparedBatch, Response> {
        let batch: ResultBatch = parse_json(&body, false)?;
        drop(body);
        if let Some(bound) = &cred.region
            && bound != &batch.region
        {
            return Err(error(
                StatusCode::FORBIDDEN,
                format!(
                    "this token may only report region {bound:?}, the batch is from {:?}",
                    batch.region
                ),
            ));
        }
        // A probe_id belongs to the token it first pushed with: no other
        // token may write (and so pre-empt) its sequence numbers.
        match store.probe_owner(&batch.probe_id) {
            Ok(Some(owner)) if owner != cred.name => {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    format!("probe_id {:?} pushes with another token", batch.probe_id),
                ));
            }
            Ok(_) => {}
            Err(e) => return Err(store_error(&e)),
        }
        PreparedBatch::new(batch)
            .map(|p| p.sent_by(&cred.name))
            .map_err(|e| store_error(&e))
    })
    .await;
    let prepared = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(r)) | Err(r) => {
            s.metrics.batch(match r.status() {
                StatusCode::FORBIDDEN => "forbidden",
                StatusCode::BAD_REQUEST => "malformed",
                _ => "error",
            });
            return r;
        }
    };
    let region = prepared.batch().region.clone();
    let probe_id = prepared.batch().probe_id.clone();
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job = IngestJob {
        prepared,
        received: t0,
        reply,
    };
    let tx = s
        .ingest
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let Some(tx) = tx else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down; retry later",
        );
    };
    if tx.send(job).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down; retry later",
        );
    }
    let Ok(result) = answer.await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down; retry later",
        );
    };
    match result {
        Ok(ack) => {
            s.metrics
                .results
                .get_or_create(&RegionLabel { region })
                .inc_by(ack.accepted);
            s.metrics.batch(if ack.accepted == 0 && ack.duplicates > 0 {
                "duplicate"
            } else {
                "accepted"
            });
            let mut rates = s.rates.lock().unwrap_or_else(PoisonError::into_inner);
            let q = rates.entry(probe_id).or_default();
            let now = Instant::now();
            q.push_back((now, ack.accepted));
            while q.front().is_some_and(|(t, _)| now - *t > RATE_WINDOW) {
                q.pop_front();
            }
            axum::Json(ack).into_response()
        }
        Err(e) => {
            s.metrics.batch("error");
            store_error(&e)
        }
    }
}

/// A batch waiting for the ingest thread.
pub struct IngestJob {
    pub prepared: PreparedBatch,
    /// When its request arrived.
    pub received: Instant,
    pub reply: tokio::sync::oneshot::Sender<Result<crate::wire::BatchAck, StoreError>>,
}

/// Most results one group commit takes.
const GROUP_RESULTS: usize = 10_000;

/// The ingest thread: takes every batch waiting (up to [`GROUP_RESULTS`]
/// results) and stores and evaluates them in one transaction — one fsync
/// for the group — then answers each. Ends when every sender is gone.
pub fn ingest_loop(s: Arc<Shared>, mut rx: tokio::sync::mpsc::Receiver<IngestJob>) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        let mut n = jobs[0].prepared.len();
        while n < GROUP_RESULTS {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.prepared.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let (prepared, waiters): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .map(|j| (j.prepared, (j.received, j.reply)))
            .unzip();
        let result = s.engine().ingest_group(&prepared, Utc::now());
        drop(prepared);
        match result {
            Ok((acks, notifications)) => {
                let oldest = waiters.iter().map(|(t, _)| *t).min();
                for ((t, reply), ack) in waiters.into_iter().zip(acks) {
                    s.metrics
                        .ingest_seconds
                        .0
                        .observe(t.elapsed().as_secs_f64());
                    let _ = reply.send(Ok(ack));
                }
                // Resolves and other kinds are not counted; always look.
                s.wake_delivery();
                // The group's notifications, timed from its oldest batch.
                if let Some(t) = oldest {
                    let secs = t.elapsed().as_secs_f64();
                    for _ in 0..notifications {
                        s.metrics.notify_latency.0.observe(secs);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "storing a group of result batches failed");
                let msg = e.to_string();
                for (_, reply) in waiters {
                    let _ = reply.send(Err(StoreError::Unavailable {
                        reason: msg.clone(),
                    }));
                }
            }
        }
    }
}

const RATE_WINDOW: Duration = Duration::from_secs(60);

// === incidents ===

#[derive(Deserialize)]
struct IncidentQuery {
    state: Option<String>,
    check: Option<String>,
    limit: Option<usize>,
}

async fn list_incidents(State(s): State<Arc<Shared>>, Query(q): Query<IncidentQuery>) -> Response {
    let states = match q.state.as_deref() {
        None | Some("") | Some("all") => vec![],
        Some("open") => vec![IncidentState::Firing, IncidentState::Acknowledged],
        Some("firing") => vec![IncidentState::Firing],
        Some("acknowledged") => vec![IncidentState::Acknowledged],
        Some("resolved") => vec![IncidentState::Resolved],
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown state {other:?}: expected open, firing, acknowledged, resolved or all"
                ),
            );
        }
    };
    let filter = IncidentFilter {
        states,
        check: q.check,
        limit: q.limit.unwrap_or(100).clamp(1, MAX_LIST),
    };
    let store = s.store.clone();
    match blocking(move || store.incidents(&filter)).await {
        Ok(Ok(list)) => axum::Json(json!({ "incidents": list })).into_response(),
        Ok(Err(e)) => store_error(&e),
        Err(r) => r,
    }
}

fn parse_id(raw: &str) -> Result<i64, Response> {
    raw.parse::<i64>().ok().filter(|i| *i > 0).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            format!("invalid id {raw:?}: expected a positive integer"),
        )
    })
}

async fn get_incident(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let store = s.store.clone();
    let r = blocking(move || {
        let d = store.incident(id)?;
        let deliveries = store.deliveries_of(id)?;
        Ok::<_, StoreError>(d.map(|d| (d, deliveries)))
    })
    .await;
    match r {
        Ok(Ok(Some((
            IncidentDetail {
                incident: inc,
                timeline: events,
                notifications: outbox,
            },
            deliveries,
        )))) => {
            let notifications: Vec<_> = outbox
                .into_iter()
                .map(|o| {
                    json!({
                        "id": o.id, "kind": o.kind, "receiver": o.receiver,
                        "idempotency_key": o.idempotency_key, "state": o.state,
                        "created_at": o.created_at, "attempts": o.attempts,
                        "delivered_at": o.delivered_at, "last_error": o.last_error,
                    })
                })
                .collect();
            axum::Json(json!({
                "incident": inc, "timeline": events, "notifications": notifications,
                "deliveries": deliveries,
            }))
            .into_response()
        }
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, format!("no incident {id}")),
        Ok(Err(e)) => store_error(&e),
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Comment {
    #[serde(default)]
    comment: String,
}

async fn ack(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    incident_action(s, headers, id, body, true).await
}

async fn resolve(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    incident_action(s, headers, id, body, false).await
}

async fn incident_action(
    s: Arc<Shared>,
    headers: HeaderMap,
    id: String,
    body: Bytes,
    acknowledge: bool,
) -> Response {
    let cred = match api_auth(&s, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let id = match parse_id(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let c: Comment = match parse_json(&body, true) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let s2 = s.clone();
    let r = blocking(move || {
        let mut e = s2.engine();
        let now = Utc::now();
        if acknowledge {
            e.acknowledge(id, &cred.name, &c.comment, now).map(|_| ())
        } else {
            e.resolve_by_hand(id, &cred.name, &c.comment, now)
        }
    })
    .await;
    match r {
        Ok(Ok(())) => {
            s.incident_changed();
            let store = s.store.clone();
            match blocking(move || store.incident(id)).await {
                Ok(Ok(Some(d))) => axum::Json(json!({ "incident": d.incident })).into_response(),
                Ok(Ok(None)) => error(StatusCode::NOT_FOUND, format!("no incident {id}")),
                Ok(Err(e)) => store_error(&e),
                Err(r) => r,
            }
        }
        Ok(Err(e)) => action_error(e),
        Err(r) => r,
    }
}

// === silences ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilence {
    #[serde(rename = "match")]
    matchers: BTreeMap<String, String>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    /// Alternative to `ends_at`: humantime, from `starts_at`.
    duration: Option<String>,
    #[serde(default)]
    comment: String,
}

async fn list_silences(State(s): State<Arc<Shared>>) -> Response {
    let cfg = s.config();
    let store = s.store.clone();
    let api = match blocking(move || store.silences(Utc::now(), true)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return store_error(&e),
        Err(r) => return r,
    };
    let config: Vec<_> = cfg
        .rules
        .silences
        .iter()
        .enumerate()
        .map(|(i, x)| {
            json!({
                "id": format!("config-{}", i + 1),
                "match": super::rules::matchers_map(&x.matchers),
                "starts_at": x.starts_at, "ends_at": x.ends_at,
                "author": x.author, "comment": x.comment,
            })
        })
        .collect();
    let maintenance: Vec<_> = cfg
        .rules
        .maintenance
        .iter()
        .map(|m| {
            let now = Utc::now();
            json!({
                "name": m.name,
                "match": super::rules::matchers_map(&m.matchers),
                "days": m.days.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                "start": m.start.format("%H:%M").to_string(),
                "end": m.end.format("%H:%M").to_string(),
                "timezone": m.tz.name(),
                "active": m.is_active(now),
                "next_change": m.next_change(now),
                "comment": m.comment,
            })
        })
        .collect();
    axum::Json(json!({ "silences": api, "config_silences": config, "maintenance": maintenance }))
        .into_response()
}

/// The end of a window given as `ends_at` or as a `duration` (humantime)
/// from `starts_at`: exactly one of them.
fn window_end(
    starts_at: DateTime<Utc>,
    ends_at: Option<DateTime<Utc>>,
    duration: Option<&str>,
) -> Result<DateTime<Utc>, String> {
    match (ends_at, duration) {
        (Some(e), None) => Ok(e),
        (None, Some(d)) => {
            let d = humantime::parse_duration(d)
                .ok()
                .and_then(|d| chrono::TimeDelta::from_std(d).ok())
                .ok_or_else(|| format!("invalid duration {d:?} (e.g. \"2h\")"))?;
            starts_at
                .checked_add_signed(d)
                .ok_or_else(|| "duration is too long".to_owned())
        }
        _ => Err("give exactly one of ends_at or duration".to_owned()),
    }
}

async fn add_silence(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let cred = match api_auth(&s, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let n: NewSilence = match parse_json(&body, false) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let now = Utc::now();
    let starts_at = n.starts_at.unwrap_or(now);
    let ends_at = match window_end(starts_at, n.ends_at, n.duration.as_deref()) {
        Ok(t) => t,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let s2 = s.clone();
    match blocking(move || {
        s2.engine()
            .add_silence(n.matchers, starts_at, ends_at, &cred.name, &n.comment, now)
    })
    .await
    {
        Ok(Ok(row)) => (StatusCode::CREATED, axum::Json(json!({ "silence": row }))).into_response(),
        Ok(Err(e)) => action_error(e),
        Err(r) => r,
    }
}

async fn expire_silence(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = api_auth(&s, &headers) {
        return r;
    }
    let id = match parse_id(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let s2 = s.clone();
    match blocking(move || s2.engine().expire_silence(id, Utc::now())).await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(ActionError::NotFound(_))) => {
            error(StatusCode::NOT_FOUND, format!("no live silence {id}"))
        }
        Ok(Err(e)) => action_error(e),
        Err(r) => r,
    }
}

// === probes, status, config ===

async fn probes(State(s): State<Arc<Shared>>) -> Response {
    let store = s.store.clone();
    let rows = match blocking(move || store.probes()).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return store_error(&e),
        Err(r) => return r,
    };
    let now = Utc::now();
    let rates = s.rates.lock().unwrap_or_else(PoisonError::into_inner);
    let list: Vec<_> = rows
        .into_iter()
        .map(|p| {
            let rate = rates.get(&p.probe_id).map_or(0.0, rate);
            json!({
                "probe_id": p.probe_id, "region": p.region, "version": p.version,
                "first_seen": p.first_seen, "last_seen": p.last_seen,
                "seconds_since_last_seen": (now - p.last_seen).num_milliseconds() as f64 / 1000.0,
                "results_total": p.results_total,
                "results_per_second": rate,
            })
        })
        .collect();
    axum::Json(json!({ "probes": list })).into_response()
}

/// Results per second over the window (or since the first batch in it).
fn rate(q: &VecDeque<(Instant, u64)>) -> f64 {
    let total: u64 = q.iter().map(|(_, n)| n).sum();
    let span = q
        .front()
        .map_or(RATE_WINDOW, |(t, _)| {
            t.elapsed().max(Duration::from_secs(1))
        })
        .min(RATE_WINDOW);
    total as f64 / span.as_secs_f64()
}

async fn status_all(State(s): State<Arc<Shared>>) -> Response {
    let s2 = s.clone();
    match blocking(move || s2.engine().check_status(None, Utc::now())).await {
        Ok(list) => axum::Json(json!({ "checks": list })).into_response(),
        Err(r) => r,
    }
}

async fn status_one(State(s): State<Arc<Shared>>, Path(check): Path<String>) -> Response {
    let s2 = s.clone();
    let c = check.clone();
    match blocking(move || s2.engine().check_status(Some(&c), Utc::now())).await {
        Ok(mut list) if !list.is_empty() => {
            axum::Json(json!({ "check": list.remove(0) })).into_response()
        }
        Ok(_) => error(StatusCode::NOT_FOUND, format!("no check {check:?}")),
        Err(r) => r,
    }
}

async fn config_status(State(s): State<Arc<Shared>>) -> Response {
    let st = s
        .config_status
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    axum::Json(st).into_response()
}

// === /metrics ===

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let s2 = s.clone();
    let gathered = blocking(move || {
        let now = Utc::now();
        let (snap, store) = {
            let e = s2.engine();
            (e.snapshot(now), e.store().clone())
        };
        (snap, store.incident_counts(), store.delivery_depth(), now)
    })
    .await;
    let (snap, counts, depth, now) = match gathered {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut reg = Registry::default();
    let m = &s.metrics;
    reg.register(
        "varde_coordinator_results",
        "Results stored, by region (duplicates not counted)",
        m.results.clone(),
    );
    reg.register(
        "varde_coordinator_batches",
        "Result batches received, by outcome",
        m.batches.clone(),
    );
    reg.register(
        "varde_coordinator_ingest_seconds",
        "Time to store and evaluate one result batch",
        m.ingest_seconds.0.clone(),
    );
    reg.register(
        "varde_coordinator_notify_latency_seconds",
        "From receipt of the batch whose result fired an incident to the commit of its outbox row",
        m.notify_latency.0.clone(),
    );
    reg.register(
        "varde_coordinator_config_last_reload_successful",
        "Whether the last config (re)load succeeded (1) or kept the previous config (0)",
        m.reload_ok.clone(),
    );
    reg.register(
        "varde_coordinator_config_last_reload_success_timestamp_seconds",
        "When the running config was loaded",
        m.reload_at.clone(),
    );
    let last_seen = Family::<RegionLabel, Gauge<f64, AtomicU64>>::default();
    let age = Family::<RegionLabel, Gauge<f64, AtomicU64>>::default();
    for (region, t) in &snap.region_last_seen {
        let l = RegionLabel {
            region: region.clone(),
        };
        last_seen
            .get_or_create(&l)
            .set(t.timestamp_micros() as f64 / 1e6);
        age.get_or_create(&l)
            .set((now - *t).num_milliseconds().max(0) as f64 / 1e3);
    }
    reg.register(
        "varde_coordinator_region_last_seen_timestamp_seconds",
        "When the latest batch from each region arrived",
        last_seen,
    );
    reg.register(
        "varde_coordinator_region_age_seconds",
        "Seconds since the latest batch from each region (freshness)",
        age,
    );
    let checks = Family::<VerdictLabel, Gauge>::default();
    for (v, n) in &snap.checks_by_verdict {
        checks
            .get_or_create(&VerdictLabel { verdict: v })
            .set(*n as i64);
    }
    reg.register(
        "varde_coordinator_checks",
        "Configured checks by verdict",
        checks,
    );
    let flapping: Gauge = Gauge::default();
    flapping.set(snap.flapping as i64);
    reg.register(
        "varde_coordinator_flapping_checks",
        "Checks now flapping",
        flapping,
    );
    let incidents = Family::<StateLabel, Gauge>::default();
    if let Ok(counts) = counts {
        for st in ["firing", "acknowledged", "resolved"] {
            incidents
                .get_or_create(&StateLabel { state: st })
                .set(counts.get(st).copied().unwrap_or(0) as i64);
        }
    }
    reg.register(
        "varde_coordinator_incidents",
        "Incidents by state",
        incidents,
    );
    if let Ok((pending, oldest)) = depth {
        let g: Gauge = Gauge::default();
        g.set(pending as i64);
        reg.register(
            "varde_coordinator_outbox_pending",
            "Notifications queued and not yet delivered",
            g,
        );
        let a: Gauge<f64, AtomicU64> = Gauge::default();
        a.set(oldest.map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1e3));
        reg.register(
            "varde_coordinator_outbox_oldest_pending_age_seconds",
            "Age of the oldest undelivered notification (0 when none)",
            a,
        );
    }
    s.delivery_metrics.register(&mut reg);
    let _ = verdict_str;
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed");
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: &'static str,
}
