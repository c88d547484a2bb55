//! `varde coordinator`: the store, the incident engine, the HTTP API, and
//! the background work (clock ticks, config reload, retention).
//!
//! The engine is one `Engine` behind a mutex, driven from blocking threads
//! (its every step is a SQLite transaction); HTTP handlers never hold the
//! lock across an await.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;

use super::api;
use super::config::{self, CoordinatorConfig};
use super::engine::Engine;
use super::store::{SqliteStore, StoreError};
use crate::notify::dispatch::{
    self, Channels, DeliveryMetrics, Dispatcher, LinkMaker, NotifyConfig,
};
use crate::probe::config::ConfigErrors;

/// Everything `varde coordinator` is started with.
#[derive(Clone, Debug)]
pub struct CoordinatorOptions {
    /// Holds `probes/`, `alert-rules/` and `coordinator.toml`.
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// How often time-driven state is evaluated.
    pub tick: Duration,
    /// How often the config files are checked for changes.
    pub reload_interval: Duration,
    /// Probe credentials accepted besides the `[[probe]]` entries of
    /// `coordinator.toml`, merged in on every (re)load: `varde up` gives its
    /// own local probe one, so a newcomer writes no token file. Empty for
    /// `varde coordinator`.
    pub extra_probes: Vec<config::Credential>,
}

impl CoordinatorOptions {
    pub fn new(config_dir: PathBuf, data_dir: PathBuf, listen: SocketAddr) -> Self {
        CoordinatorOptions {
            config_dir,
            data_dir,
            listen,
            tick: Duration::from_secs(1),
            reload_interval: Duration::from_secs(2),
            extra_probes: Vec::new(),
        }
    }
}

/// Result batches that may wait for the ingest thread.
const INGEST_QUEUE: usize = 64;

/// Why the coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// The outcome of the latest config (re)load, for the API and metrics.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConfigStatus {
    /// Whether the files on disk are the running config.
    pub ok: bool,
    /// When the running config was loaded.
    pub loaded_at: chrono::DateTime<Utc>,
    /// The errors of the latest failed reload (the running config is the
    /// previous one).
    pub errors: Vec<String>,
    pub checks: usize,
    pub rules: usize,
}

impl ConfigStatus {
    fn loaded(cfg: &CoordinatorConfig) -> Self {
        ConfigStatus {
            ok: true,
            loaded_at: Utc::now(),
            errors: Vec::new(),
            checks: cfg.checks.len(),
            rules: cfg.rules.rules.len(),
        }
    }
}

/// State shared by handlers and background tasks.
pub struct Shared {
    pub engine: Mutex<Engine>,
    /// The engine's store, for reads that need not wait for the engine.
    pub store: Arc<SqliteStore>,
    pub config: RwLock<Arc<CoordinatorConfig>>,
    pub config_status: Mutex<ConfigStatus>,
    pub metrics: api::Metrics,
    /// probe_id → recent (arrival, accepted) for results/second.
    pub rates: Mutex<HashMap<String, VecDeque<(Instant, u64)>>>,
    pub started: Instant,
    /// Result batches for the ingest thread; taken at shutdown so that the
    /// thread (which holds a `Shared` itself) sees the channel close.
    pub ingest: Mutex<Option<tokio::sync::mpsc::Sender<api::IngestJob>>>,
    /// Wakes the delivery worker after a change that may have queued a
    /// notification (ingest, tick, acknowledge, resolve).
    pub delivery_wake: Arc<dispatch::Wake>,
    pub delivery_metrics: DeliveryMetrics,
    /// What the delivery worker works from; replaced on reload.
    pub delivery_config: tokio::sync::watch::Sender<Arc<NotifyConfig>>,
    /// Makes signed acknowledge/resolve links, and checks them.
    pub links: Option<Arc<crate::notify::links::LinkSigner>>,
}

impl Shared {
    /// The engine. If a step panicked while holding it, its memory is
    /// rebuilt from the store first (the step's transaction rolled back).
    pub fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        match self.engine.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                let mut g = poisoned.into_inner();
                self.engine.clear_poison();
                if let Err(e) = g.recover(Utc::now()) {
                    tracing::error!(error = %e, "rebuilding the engine's state after a panic failed");
                }
                g
            }
        }
    }

    /// Tells the delivery worker to look for new notifications now.
    pub fn wake_delivery(&self) {
        self.delivery_wake.poke();
    }

    /// Tells the delivery worker an incident was acknowledged or resolved
    /// by hand (escalation stops, PagerDuty hears the acknowledgement).
    pub fn incident_changed(&self) {
        self.delivery_wake.incident_changed();
    }

    pub fn config(&self) -> Arc<CoordinatorConfig> {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Binds `opts.listen` and runs until `shutdown` resolves.
pub async fn run(
    opts: CoordinatorOptions,
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

/// Runs the coordinator on a bound listener until `shutdown` resolves.
pub async fn serve(
    opts: CoordinatorOptions,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let mut fingerprint = config::fingerprint(&opts.config_dir);
    let cfg = Arc::new(load_config(&opts.config_dir, &opts.extra_probes)?);
    if cfg.auth.probes.is_empty() {
        tracing::warn!(
            "no [[probe]] tokens in {}: no probe can fetch checks or push results",
            opts.config_dir.join(config::FILE).display()
        );
    }
    let data_dir = opts.data_dir.clone();
    let cfg2 = cfg.clone();
    let (engine, checkpointer) = tokio::task::spawn_blocking(move || {
        let store = Arc::new(SqliteStore::open(&data_dir)?);
        let checkpointer = store.start_checkpointer(Duration::from_secs(1))?;
        Ok::<_, StoreError>((Engine::new(store, cfg2, Utc::now())?, checkpointer))
    })
    .await
    .map_err(|e| StartError::Io {
        what: "engine start".into(),
        source: std::io::Error::other(e.to_string()),
    })??;
    let status = ConfigStatus::loaded(&cfg);
    let links = link_signer(&cfg, &opts.data_dir)?;
    let delivery = notify_config(&cfg, links.clone()).map_err(|e| StartError::Io {
        what: "notification channels".into(),
        source: std::io::Error::other(e),
    })?;
    let (delivery_config, delivery_rx) = tokio::sync::watch::channel(Arc::new(delivery));
    // Bounded: when the store falls behind, handlers wait here and probes
    // see slower acknowledgements (and spool), not unbounded memory.
    let (ingest_tx, ingest_rx) = tokio::sync::mpsc::channel(INGEST_QUEUE);
    let shared = Arc::new(Shared {
        store: engine.store().clone(),
        engine: Mutex::new(engine),
        config: RwLock::new(cfg),
        config_status: Mutex::new(status),
        metrics: api::Metrics::default(),
        rates: Mutex::new(HashMap::new()),
        started: Instant::now(),
        ingest: Mutex::new(Some(ingest_tx)),
        delivery_wake: Arc::new(dispatch::Wake::default()),
        delivery_metrics: DeliveryMetrics::default(),
        delivery_config,
        links,
    });
    shared.metrics.config_reload(true);
    let ingest_thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("varde-ingest".into())
            .spawn(move || api::ingest_loop(shared, ingest_rx))
            .map_err(|e| StartError::Io {
                what: "cannot start the ingest thread".into(),
                source: e,
            })?
    };
    tracing::info!(
        listen = %listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()),
        data_dir = %opts.data_dir.display(),
        "coordinator started"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Delivery: its own thread and runtime (its store calls block).
    let delivery_thread = {
        let dispatcher = Dispatcher::new(
            shared.store.clone(),
            delivery_rx,
            dispatch::system_clock(),
            shared.delivery_wake.clone(),
            shared.delivery_metrics.clone(),
        );
        let mut stop = stop_rx.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StartError::Io {
                what: "cannot start the delivery runtime".into(),
                source: e,
            })?;
        std::thread::Builder::new()
            .name("varde-delivery".into())
            .spawn(move || {
                rt.block_on(dispatcher.run(async move {
                    let _ = stop.changed().await;
                }));
            })
            .map_err(|e| StartError::Io {
                what: "cannot start the delivery thread".into(),
                source: e,
            })?
    };
    let mut tasks = Vec::new();
    // Clock ticks.
    {
        let shared = shared.clone();
        let mut stop = stop_rx.clone();
        let tick = opts.tick;
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop.changed() => break,
                }
                let s = shared.clone();
                let r = tokio::task::spawn_blocking(move || s.engine().tick(Utc::now())).await;
                if let Ok(Err(e)) = r {
                    tracing::error!(error = %e, "evaluation tick failed");
                }
                shared.wake_delivery();
            }
        }));
    }
    // Config reload: on change of any file, or SIGHUP.
    {
        let shared = shared.clone();
        let mut stop = stop_rx.clone();
        let dir = opts.config_dir.clone();
        let extra = opts.extra_probes.clone();
        let every = opts.reload_interval;
        tasks.push(tokio::spawn(async move {
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                let forced = tokio::select! {
                    _ = tokio::time::sleep(every) => false,
                    _ = async { match &mut hup { Some(h) => { h.recv().await; } None => std::future::pending().await } } => true,
                    _ = stop.changed() => break,
                };
                let fp = config::fingerprint(&dir);
                if !forced && fp == fingerprint {
                    continue;
                }
                fingerprint = fp;
                let s = shared.clone();
                let d = dir.clone();
                let x = extra.clone();
                let _ = tokio::task::spawn_blocking(move || reload(&s, &d, &x)).await;
            }
        }));
    }
    // Retention.
    {
        let shared = shared.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(300)) => {}
                    _ = stop.changed() => break,
                }
                let s = shared.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let settings = s.config().settings;
                    // A retention longer than the calendar keeps everything
                    // (no overflow panic for "1000000y").
                    let before = |keep: Duration| {
                        chrono::TimeDelta::from_std(keep)
                            .ok()
                            .and_then(|d| Utc::now().checked_sub_signed(d))
                            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC)
                    };
                    let store = s.engine().store().clone();
                    match store.prune_results(before(settings.results_retention)) {
                        Ok(n) if n > 0 => tracing::info!(deleted = n, "pruned old results"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "pruning results failed"),
                    }
                    match store.prune_history(before(settings.history_retention)) {
                        Ok(p) if p != Default::default() => tracing::info!(
                            incidents = p.incidents,
                            silences = p.silences,
                            overrides = p.overrides,
                            "forgot history past [retention] incidents"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "pruning history failed"),
                    }
                })
                .await;
            }
        }));
    }

    let router = api::router(shared.clone());
    crate::serve::serve(listener, router, crate::serve::Limits::default(), shutdown).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    // Every handler is done: dropping the last sender lets the ingest
    // thread drain what is queued and end.
    shared
        .ingest
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    drop(shared);
    let _ = tokio::task::spawn_blocking(move || {
        let _ = ingest_thread.join();
        let _ = delivery_thread.join();
        drop(checkpointer);
    })
    .await;
    tracing::info!("coordinator stopped");
    Ok(())
}

/// Loads the config dir, with `extra` probe credentials added to its own.
fn load_config(
    dir: &std::path::Path,
    extra: &[config::Credential],
) -> Result<CoordinatorConfig, ConfigErrors> {
    let mut cfg = config::load(dir)?;
    cfg.auth.probes.extend(extra.iter().cloned());
    Ok(cfg)
}

/// Loads the config dir again; keeps the running config on any error.
fn reload(shared: &Shared, dir: &std::path::Path, extra: &[config::Credential]) {
    match load_config(dir, extra) {
        Ok(cfg) => {
            let delivery = match notify_config(&cfg, shared.links.clone()) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!("config reload failed, keeping the running config: {e}");
                    let mut st = shared
                        .config_status
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    st.ok = false;
                    st.errors = vec![e];
                    shared.metrics.config_reload(false);
                    return;
                }
            };
            shared.delivery_config.send_replace(Arc::new(delivery));
            let cfg = Arc::new(cfg);
            let result = shared.engine().set_config(cfg.clone(), Utc::now());
            if let Err(e) = result {
                tracing::error!(error = %e, "applying the new config failed");
            }
            let status = ConfigStatus::loaded(&cfg);
            *shared
                .config
                .write()
                .unwrap_or_else(PoisonError::into_inner) = cfg;
            *shared
                .config_status
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = status;
            shared.metrics.config_reload(true);
            tracing::info!("config reloaded");
        }
        Err(errors) => {
            tracing::error!("config reload failed, keeping the running config:\n{errors}");
            let mut st = shared
                .config_status
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            st.ok = false;
            st.errors = errors.0.iter().map(ToString::to_string).collect();
            shared.metrics.config_reload(false);
        }
    }
}

/// What the delivery worker needs from a config: channels (with their
/// clients built), routes, policies, the on-call schedule, links.
pub fn notify_config(
    cfg: &CoordinatorConfig,
    links: Option<Arc<crate::notify::links::LinkSigner>>,
) -> Result<NotifyConfig, String> {
    let r = &cfg.rules;
    let transport = Channels::new(&r.channels)?;
    // At most ten years: the expiry must stay a date (and `now + ttl` must
    // not overflow) whatever `[links] ttl` says.
    let ttl = chrono::TimeDelta::from_std(cfg.links.ttl)
        .unwrap_or(chrono::TimeDelta::MAX)
        .min(chrono::TimeDelta::days(3650));
    let links: Option<LinkMaker> = links.map(|signer| {
        let make: LinkMaker = Arc::new(move |incident: i64, action: &str, to: &str| {
            let action = if action == "resolve" {
                crate::notify::links::LinkAction::Resolve
            } else {
                crate::notify::links::LinkAction::Ack
            };
            signer.url_to(incident, action, Utc::now() + ttl, to)
        });
        make
    });
    Ok(NotifyConfig {
        channels: r.channels.clone(),
        routes: r.routes.clone(),
        policies: r.policies.clone(),
        oncall: r.oncall.clone(),
        transport: Arc::new(transport),
        links,
    })
}

/// The link signer, when `[links] public_url` is set: its key is
/// `DATA_DIR/link.key`, created on first use, so links survive restarts.
fn link_signer(
    cfg: &CoordinatorConfig,
    data_dir: &std::path::Path,
) -> Result<Option<Arc<crate::notify::links::LinkSigner>>, StartError> {
    let Some(url) = &cfg.links.public_url else {
        return Ok(None);
    };
    std::fs::create_dir_all(data_dir).map_err(|e| StartError::Io {
        what: format!("cannot create {}", data_dir.display()),
        source: e,
    })?;
    let path = data_dir.join("link.key");
    let key = crate::notify::links::load_or_create_key(&path).map_err(|e| StartError::Io {
        what: format!("cannot read or create {}", path.display()),
        source: e,
    })?;
    let signer =
        crate::notify::links::LinkSigner::new(&key, url.as_str()).map_err(|e| StartError::Io {
            what: "link signing key".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
    Ok(Some(Arc::new(signer)))
}
