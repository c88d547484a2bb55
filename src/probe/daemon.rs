//! `varde probe`: wires the scheduler, metrics, the pusher and the HTTP
//! endpoints together, and keeps the check list current (local files with
//! hot reload, or the coordinator's list with an on-disk cache).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::{Semaphore, watch};

use super::config::{self, Module};
use super::metrics::{MetricsChunks, ProbeMetrics, PushGauges, render_probe};
use super::push::{PushOptions, Pusher};
use super::schedule::{CheckRunner, Scheduler, SchedulerOptions};
use super::{CheckDef, ResultSink};
use crate::check::CheckResult;
use crate::wire::{CHECKS_PATH, CheckList};

/// Everything `varde probe` is started with.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Local check definitions (`probes/*.toml`) and `/probe` modules.
    pub config_dir: Option<PathBuf>,
    /// The coordinator to fetch checks from and push results to.
    pub coordinator: Option<url::Url>,
    /// Bearer token for the coordinator (read from a file by the CLI).
    pub token: Option<String>,
    pub region: String,
    pub listen: SocketAddr,
    /// Spool and the cached check list live here.
    pub data_dir: PathBuf,
    pub max_concurrency: usize,
    /// How often the coordinator's check list is re-polled. Local files are
    /// checked for changes every [`FILE_CHECK_INTERVAL`] (or this, if shorter).
    pub poll_interval: Duration,
    /// How long shutdown waits for in-flight checks and the last push.
    pub shutdown_grace: Duration,
    /// Extra CA for an https coordinator.
    pub coordinator_ca: Option<PathBuf>,
    /// The local address checks connect from, unless a check sets its own.
    pub source_address: Option<std::net::IpAddr>,
}

/// Why the probe could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] config::ConfigErrors),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

/// Reports to several sinks.
struct Fanout(Vec<Arc<dyn ResultSink>>);

impl ResultSink for Fanout {
    fn result(&self, def: &CheckDef, result: &CheckResult) {
        self.0.iter().for_each(|s| s.result(def, result));
    }
    fn removed(&self, def: &CheckDef) {
        self.0.iter().for_each(|s| s.removed(def));
    }
    fn lag(&self, def: &CheckDef, lag: Duration) {
        self.0.iter().for_each(|s| s.lag(def, lag));
    }
    fn skipped(&self, def: &CheckDef, why: super::SkipReason) {
        self.0.iter().for_each(|s| s.skipped(def, why));
    }
    fn in_flight(&self, n: usize) {
        self.0.iter().for_each(|s| s.in_flight(n));
    }
}

/// State the HTTP handlers share.
struct Shared {
    metrics: Arc<ProbeMetrics>,
    modules: Mutex<Arc<std::collections::BTreeMap<String, Module>>>,
    ready: watch::Receiver<bool>,
    /// Bounds concurrent `/probe` requests.
    probe_permits: Semaphore,
}

/// How often local config files are checked for changes (a directory
/// listing and a stat per file).
pub const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Most concurrent `/probe` requests; more get 503.
const MAX_PROBE_REQUESTS: usize = 128;
/// Upper bound of a `/probe` run when the module or scraper asks for more.
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(120);

/// Binds `opts.listen` and runs the probe until `shutdown` resolves.
pub async fn run(
    opts: ProbeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| StartError::Io {
            what: format!("cannot listen on {}", opts.listen),
            source: e,
        })?;
    serve(opts, listener, shutdown).await
}

/// Runs the probe on an already bound listener until `shutdown` resolves.
pub async fn serve(
    opts: ProbeOptions,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    if opts.config_dir.is_none() && opts.coordinator.is_none() {
        return Err(StartError::Usage(
            "give --config DIR, --coordinator URL, or both".into(),
        ));
    }
    if opts.coordinator.is_some() && opts.token.is_none() {
        return Err(StartError::Usage("--coordinator needs --token-file".into()));
    }
    // Installed first: SIGHUP's default action would end the process.
    let mut hup = signal(tokio::signal::unix::SignalKind::hangup());
    std::fs::create_dir_all(&opts.data_dir).map_err(|e| StartError::Io {
        what: format!("cannot create data dir {}", opts.data_dir.display()),
        source: e,
    })?;
    // Nothing starts with a bad local config. The fingerprint is taken
    // before reading, so an edit racing the first load is reloaded.
    let initial_fingerprint = dir_fingerprint(opts.config_dir.as_deref());
    let local = match &opts.config_dir {
        Some(dir) => Some(config::load_dir(dir)?),
        None => None,
    };

    let metrics = Arc::new(ProbeMetrics::new(&opts.region));
    let pusher = match &opts.coordinator {
        Some(url) => Some(
            Pusher::start(PushOptions {
                ca_file: opts.coordinator_ca.clone(),
                ..PushOptions::new(
                    url.clone(),
                    opts.token.clone().unwrap_or_default(),
                    opts.region.clone(),
                    opts.data_dir.join("spool"),
                )
            })
            .map_err(|e| StartError::Io {
                what: "cannot open the result spool".into(),
                source: e,
            })?,
        ),
        None => None,
    };
    let mut sinks: Vec<Arc<dyn ResultSink>> = vec![metrics.clone()];
    if let Some(p) = &pusher {
        sinks.push(Arc::new(p.clone()));
    }
    let mut scheduler = Scheduler::new(
        SchedulerOptions {
            max_concurrency: opts.max_concurrency,
            ..SchedulerOptions::new(opts.region.clone())
        },
        Arc::new(CheckRunner),
        Arc::new(Fanout(sinks)),
    );

    let (ready_tx, ready_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        modules: Mutex::new(Arc::new(with_builtin_modules(
            local
                .as_ref()
                .map(|c| c.modules.clone())
                .unwrap_or_default(),
        ))),
        ready: ready_rx,
        probe_permits: Semaphore::new(MAX_PROBE_REQUESTS),
    });

    let local_addr = listener.local_addr().ok();
    tracing::info!(
        listen = ?local_addr,
        region = %opts.region,
        "probe listening: /metrics /probe /healthz /readyz"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = {
        let mut stop = stop_rx.clone();
        let app = router(shared.clone());
        tokio::spawn(async move {
            let graceful = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            crate::serve::serve(listener, app, crate::serve::Limits::default(), graceful).await;
        })
    };

    // First check list: local files, or the coordinator (or its cached list).
    let mut source = Source::new(&opts);
    let mut current: Option<Vec<CheckDef>> = None;
    if let Some(cfg) = local {
        if opts.coordinator.is_none() {
            current = Some(cfg.checks.clone());
        }
        source.local_fingerprint = initial_fingerprint;
    }
    if opts.coordinator.is_some() {
        current = source.fetch_remote().await.or_else(|| source.cached());
    }
    if let Some(defs) = current.take() {
        apply(&mut scheduler, &metrics, defs, &opts);
        let _ = ready_tx.send(true);
    }

    let mut tick = tokio::time::interval(opts.poll_interval.min(FILE_CHECK_INTERVAL));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last_poll = tokio::time::Instant::now();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let forced = tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => false,
            _ = recv(&mut hup) => true,
        };
        if let Some(p) = &pusher {
            metrics.push_stats(gauges(p));
        }
        // Local files: reload on change (or SIGHUP); modules always come from here.
        if let Some(dir) = &opts.config_dir {
            let fp = dir_fingerprint(Some(dir));
            if forced || fp != source.local_fingerprint {
                source.local_fingerprint = fp;
                match config::load_dir(dir) {
                    Ok(cfg) => {
                        *shared
                            .modules
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) =
                            Arc::new(with_builtin_modules(cfg.modules.clone()));
                        if opts.coordinator.is_none() {
                            apply(&mut scheduler, &metrics, cfg.checks, &opts);
                            let _ = ready_tx.send(true);
                        } else {
                            metrics.config_reload(true, chrono::Utc::now());
                        }
                    }
                    Err(errors) => {
                        metrics.config_reload(false, chrono::Utc::now());
                        tracing::error!(
                            "config reload failed, keeping the running config:\n{errors}"
                        );
                    }
                }
            }
        }
        if opts.coordinator.is_some() && (forced || last_poll.elapsed() >= opts.poll_interval) {
            last_poll = tokio::time::Instant::now();
            let fetched = tokio::select! {
                _ = &mut shutdown => break,
                f = source.fetch_remote() => f,
            };
            if let Some(defs) = fetched {
                apply(&mut scheduler, &metrics, defs, &opts);
                let _ = ready_tx.send(true);
            }
        }
    }

    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let cancelled = scheduler.shutdown(opts.shutdown_grace).await;
    if cancelled > 0 {
        tracing::warn!(cancelled, "in-flight checks cancelled at shutdown");
    }
    if let Some(p) = pusher {
        p.shutdown(opts.shutdown_grace).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}

/// The configured modules over the built-in ones.
fn with_builtin_modules(
    configured: std::collections::BTreeMap<String, Module>,
) -> std::collections::BTreeMap<String, Module> {
    let mut all = config::builtin_modules();
    all.extend(configured);
    all
}

fn gauges(p: &Pusher) -> PushGauges {
    let s = p.stats();
    PushGauges {
        sent_total: s.sent_total,
        spooled: s.spooled,
        spool_bytes: s.spool_bytes,
        dropped_total: s.dropped_total,
        failures_total: s.failures_total,
        last_success_unix: s.last_success_unix.map(|t| t as f64),
    }
}

fn apply(
    scheduler: &mut Scheduler,
    metrics: &ProbeMetrics,
    mut defs: Vec<CheckDef>,
    opts: &ProbeOptions,
) {
    if let Some(ip) = opts.source_address {
        for d in &mut defs {
            d.spec.default_source_address(ip);
        }
    }
    let n = defs.iter().filter(|d| d.runs_in(&opts.region)).count();
    let errors = scheduler.apply(defs);
    for (name, e) in &errors {
        tracing::error!(check = %name, "check not scheduled: {e}");
    }
    metrics.config_reload(errors.is_empty(), chrono::Utc::now());
    tracing::info!(
        checks = n - errors.len(),
        failed = errors.len(),
        "check list applied"
    );
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).ok()
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// The `*.toml` files of the local config dir, for change detection.
fn dir_fingerprint(dir: Option<&Path>) -> Vec<config::FileStamp> {
    dir.map(config::toml_stamps).unwrap_or_default()
}

// === Check list from the coordinator ===

struct Source {
    client: Option<CoordinatorClient>,
    etag: Option<String>,
    cache: PathBuf,
    local_fingerprint: Vec<config::FileStamp>,
}

impl Source {
    fn new(opts: &ProbeOptions) -> Self {
        Self {
            client: opts.coordinator.as_ref().map(|u| CoordinatorClient {
                base: u.clone(),
                token: opts.token.clone().unwrap_or_default(),
                region: opts.region.clone(),
                ca_file: opts.coordinator_ca.clone(),
                resolver: crate::resolve::HostResolver::system(),
            }),
            etag: None,
            cache: opts.data_dir.join("checks.json"),
            local_fingerprint: Vec::new(),
        }
    }

    /// The last good list, cached on disk, for starting while the
    /// coordinator is down.
    fn cached(&self) -> Option<Vec<CheckDef>> {
        let text = std::fs::read(&self.cache).ok()?;
        match serde_json::from_slice::<CheckList>(&text) {
            Ok(l) => {
                tracing::warn!(
                    path = %self.cache.display(),
                    checks = l.checks.len(),
                    "coordinator unreachable: running the cached check list"
                );
                Some(l.checks)
            }
            Err(e) => {
                tracing::error!(path = %self.cache.display(), "cached check list unreadable: {e}");
                None
            }
        }
    }

    /// A new list when the coordinator has one; `None` when unchanged or
    /// unreachable (the running list stays).
    async fn fetch_remote(&mut self) -> Option<Vec<CheckDef>> {
        let client = self.client.as_ref()?;
        match client.fetch(self.etag.as_deref()).await {
            Ok(Fetched::NotModified) => None,
            Ok(Fetched::List { list, etag, body }) => {
                self.etag = etag;
                if let Err(e) = write_atomic(&self.cache, &body) {
                    tracing::warn!(path = %self.cache.display(), "cannot cache the check list: {e}");
                }
                Some(list.checks)
            }
            Err(e) => {
                tracing::warn!("cannot fetch the check list from the coordinator: {e}");
                None
            }
        }
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

struct CoordinatorClient {
    base: url::Url,
    token: String,
    region: String,
    ca_file: Option<PathBuf>,
    resolver: crate::resolve::HostResolver,
}

enum Fetched {
    NotModified,
    List {
        list: CheckList,
        etag: Option<String>,
        body: Vec<u8>,
    },
}

/// Largest check list accepted from the coordinator.
const MAX_CHECK_LIST_BYTES: usize = 64 * 1024 * 1024;
/// Bound on one check-list fetch, connect to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

impl CoordinatorClient {
    async fn fetch(&self, etag: Option<&str>) -> Result<Fetched, String> {
        tokio::time::timeout(FETCH_TIMEOUT, self.fetch_inner(etag))
            .await
            .map_err(|_| format!("no complete answer within {FETCH_TIMEOUT:?}"))?
    }

    async fn fetch_inner(&self, etag: Option<&str>) -> Result<Fetched, String> {
        use http_body_util::{BodyExt, Empty, Limited};
        use hyper_util::rt::TokioIo;

        let mut url = self.base.clone();
        url.set_path(&format!(
            "{}{CHECKS_PATH}",
            self.base.path().trim_end_matches('/')
        ));
        url.query_pairs_mut().append_pair("region", &self.region);
        let host = url
            .host_str()
            .ok_or("coordinator URL has no host")?
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or("coordinator URL has no port")?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let mut req = hyper::Request::get(path)
            .header(header::HOST, authority)
            .header(header::AUTHORIZATION, bearer(&self.token)?)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("varde-probe/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(t) = etag {
            req = req.header(header::IF_NONE_MATCH, t);
        }
        let req = req
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tcp = self
            .resolver
            .connect(&bare, port, FETCH_TIMEOUT)
            .await
            .map_err(|e| format!("connect {bare}:{port}: {e}"))?;
        let stream = match url.scheme() {
            "http" => crate::check::io::Stream::Plain(tcp),
            "https" => {
                let config =
                    super::push::tls_config(self.ca_file.as_deref()).map_err(|e| e.to_string())?;
                let name = rustls_pki_types::ServerName::try_from(bare.clone())
                    .map_err(|e| format!("coordinator host: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS to the coordinator: {e}"))?;
                crate::check::io::Stream::Tls(tls)
            }
            s => return Err(format!("unsupported coordinator scheme {s:?}")),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let conn = tokio::spawn(conn);
        let resp = sender.send_request(req).await.map_err(|e| e.to_string());
        let result = async {
            let resp = resp?;
            let status = resp.status();
            if status == StatusCode::NOT_MODIFIED {
                return Ok(Fetched::NotModified);
            }
            if !status.is_success() {
                return Err(format!("coordinator answered {status}"));
            }
            let etag = resp
                .headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = Limited::new(resp.into_body(), MAX_CHECK_LIST_BYTES)
                .collect()
                .await
                .map_err(|e| format!("check list body: {e}"))?
                .to_bytes()
                .to_vec();
            let list: CheckList = serde_json::from_slice(&body)
                .map_err(|e| format!("check list is not valid: {e}"))?;
            Ok(Fetched::List { list, etag, body })
        }
        .await;
        conn.abort();
        result
    }
}

fn bearer(token: &str) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the token contains characters not allowed in a header".to_owned())?;
    v.set_sensitive(true);
    Ok(v)
}

// === HTTP endpoints ===

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/probe", get(probe_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(shared)
}

/// Streams the exposition chunk by chunk ([`ProbeMetrics::chunks`]): the
/// whole text (tens of MB for thousands of checks) never sits in memory, and
/// the metrics lock is taken once per ~64 KiB chunk.
async fn metrics_handler(State(s): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, ProbeMetrics::CONTENT_TYPE)],
        axum::body::Body::new(ChunkedBody(s.metrics.chunks())),
    )
        .into_response()
}

/// A response body of [`MetricsChunks`]; each poll encodes the next chunk
/// (a bounded, non-blocking piece of work).
struct ChunkedBody(MetricsChunks);

impl axum::body::HttpBody for ChunkedBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(
            self.0
                .next()
                .map(|chunk| Ok(hyper::body::Frame::data(bytes::Bytes::from(chunk)))),
        )
    }
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    if *s.ready.borrow() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no check list yet\n",
        )
            .into_response()
    }
}

#[derive(Deserialize)]
struct ProbeQuery {
    target: Option<String>,
    module: Option<String>,
}

/// blackbox_exporter's `/probe`: run one check of `module` against
/// `target` now and answer with its metrics.
async fn probe_handler(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<ProbeQuery>,
) -> Response {
    let bad = |msg: String| (StatusCode::BAD_REQUEST, format!("{msg}\n")).into_response();
    let Some(target) = q.target.filter(|t| !t.is_empty()) else {
        return bad("Target parameter is missing".into());
    };
    let module_name = q.module.unwrap_or_else(|| "http_2xx".into());
    let modules = s
        .modules
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let Some(module) = modules.get(&module_name) else {
        return bad(format!("Unknown module {module_name:?}"));
    };
    let spec = match module.spec_for(&target) {
        Ok(spec) => spec,
        Err(e) => {
            return bad(format!(
                "Invalid target {target:?} for module {module_name:?}: {e}"
            ));
        }
    };
    // Like blackbox: never run longer than Prometheus waits for the scrape.
    let mut timeout = module.timeout.min(MAX_PROBE_TIMEOUT);
    if let Some(scrape) = headers
        .get("X-Prometheus-Scrape-Timeout-Seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
    {
        let scrape = Duration::from_secs_f64((scrape - 0.5).clamp(0.1, 120.0));
        timeout = timeout.min(scrape);
    }
    let check = match spec.build(timeout) {
        Ok(c) => c,
        Err(e) => return bad(format!("Invalid target {target:?}: {e}")),
    };
    let Ok(_permit) = s.probe_permits.try_acquire() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many concurrent /probe requests\n",
        )
            .into_response();
    };
    let result = check.run().await;
    (
        [(header::CONTENT_TYPE, ProbeMetrics::CONTENT_TYPE)],
        render_probe(&result),
    )
        .into_response()
}
