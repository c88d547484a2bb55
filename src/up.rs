//! `varde up`: the coordinator, one local probe (region `local`) and a small
//! demo target in one process, so that a newcomer sees the whole loop —
//! checks, verdicts, incidents, console notifications — with one command
//! and no configuration of their own.
//!
//! The coordinator reads the repository's `probes/` and `alert-rules/`
//! (hot reload included) and keeps its SQLite store under the data dir; the
//! probe fetches its check list from the coordinator and pushes results
//! back, exactly as a probe in another region would. The only thing `up`
//! adds is the local probe's token: random, made once, kept in
//! `DATA_DIR/up/probe.token` (mode 0600) and handed to the coordinator
//! directly, so no `coordinator.toml` is needed.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::sync::watch;

use crate::coordinator::config::Credential;
use crate::coordinator::daemon::{self as coordinator, CoordinatorOptions};
use crate::probe::daemon::{self as probe, ProbeOptions};

/// The region of the local probe.
pub const REGION: &str = "local";
/// Name of the local probe's credential (shown by `/api/v1/probes`).
pub const PROBE_NAME: &str = "up-local";
/// The token file, relative to the data dir.
pub const TOKEN_FILE: &str = "up/probe.token";

/// Everything `varde up` is started with.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// Holds `probes/` and `alert-rules/` (and optionally coordinator.toml).
    pub config_dir: PathBuf,
    /// The store (`coordinator/`), the probe's spool (`probe/`) and the
    /// local token (`up/`).
    pub data_dir: PathBuf,
    /// The coordinator's API, /metrics and /healthz.
    pub listen: SocketAddr,
    /// The probe's /metrics, /probe and /healthz.
    pub probe_listen: SocketAddr,
    /// The demo target; `None` starts none.
    pub demo_listen: Option<SocketAddr>,
    /// How often the probe asks the coordinator for a changed check list.
    pub poll_interval: Duration,
}

impl UpOptions {
    /// The defaults of the command line: `.`, `data`, ports 9480, 9490, 9499.
    pub fn new(config_dir: PathBuf, data_dir: PathBuf) -> Self {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        UpOptions {
            config_dir,
            data_dir,
            listen: SocketAddr::new(lo, 9480),
            probe_listen: SocketAddr::new(lo, 9490),
            demo_listen: Some(SocketAddr::new(lo, 9499)),
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// Why `varde up` stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpError {
    /// A listener could not be bound, or the data dir not written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        source: io::Error,
    },
    /// The coordinator could not start (bad config, store) or failed.
    #[error("coordinator: {0}")]
    Coordinator(#[from] coordinator::StartError),
    /// The probe could not start or failed.
    #[error("probe: {0}")]
    Probe(#[from] probe::StartError),
    /// A task panicked.
    #[error("a task failed: {0}")]
    Task(String),
}

/// Runs everything until `shutdown` resolves, then stops the probe first
/// (its last results are pushed while the coordinator still listens), then
/// the coordinator, then the demo target.
pub async fn run(
    opts: UpOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), UpError> {
    // A bad config fails here, with every error, before anything starts.
    crate::coordinator::config::load(&opts.config_dir).map_err(coordinator::StartError::from)?;
    let token = load_or_create_token(&opts.data_dir.join(TOKEN_FILE)).map_err(|e| UpError::Io {
        what: format!(
            "cannot read or create the local probe token {}",
            opts.data_dir.join(TOKEN_FILE).display()
        ),
        source: e,
    })?;
    let bind = |addr: SocketAddr, what: &'static str| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| UpError::Io {
                what: format!("cannot listen on {addr} for the {what}"),
                source: e,
            })
    };
    // Everything is bound before anything starts: a port in use fails at
    // once, and the probe's first fetch waits in the coordinator's backlog.
    let coord_listener = bind(opts.listen, "coordinator").await?;
    let probe_listener = bind(opts.probe_listen, "probe").await?;
    let demo_listener = match opts.demo_listen {
        Some(a) => Some(bind(a, "demo target").await?),
        None => None,
    };
    let coord_addr = coord_listener.local_addr().unwrap_or(opts.listen);
    let probe_addr = probe_listener.local_addr().unwrap_or(opts.probe_listen);
    let demo_addr = demo_listener.as_ref().and_then(|l| l.local_addr().ok());

    let coordinator_url =
        url::Url::parse(&format!("http://{}/", reachable(coord_addr))).map_err(|e| {
            UpError::Io {
                what: "coordinator URL".into(),
                source: io::Error::other(e.to_string()),
            }
        })?;
    let mut copts = CoordinatorOptions::new(
        opts.config_dir.clone(),
        opts.data_dir.join("coordinator"),
        coord_addr,
    );
    copts.extra_probes = vec![Credential::new(PROBE_NAME, Some(REGION), &token)];
    let popts = ProbeOptions {
        config_dir: Some(opts.config_dir.join("probes")),
        coordinator: Some(coordinator_url.clone()),
        token: Some(token),
        region: REGION.to_owned(),
        listen: probe_addr,
        data_dir: opts.data_dir.join("probe"),
        max_concurrency: 64,
        poll_interval: opts.poll_interval,
        shutdown_grace: Duration::from_secs(10),
        coordinator_ca: None,
        source_address: None,
    };

    let (stop_probe, probe_stop) = watch::channel(false);
    let (stop_coord, coord_stop) = watch::channel(false);
    let (stop_demo, demo_stop) = watch::channel(false);
    let mut coord = tokio::spawn(coordinator::serve(
        copts,
        coord_listener,
        stopped(coord_stop),
    ));
    let mut probe = tokio::spawn(probe::serve(popts, probe_listener, stopped(probe_stop)));
    let demo = demo_listener.map(|l| tokio::spawn(serve_demo(l, stopped(demo_stop))));

    eprint!(
        "{}",
        banner(
            &opts,
            &coordinator_url,
            probe_addr,
            demo_addr.map(reachable)
        )
    );

    // Until a signal, or until one half stops on its own (a start-up error).
    let mut shutdown = std::pin::pin!(shutdown);
    let mut coord_done = None;
    let mut probe_done = None;
    tokio::select! {
        _ = &mut shutdown => {}
        r = &mut coord => coord_done = Some(flatten(r)),
        r = &mut probe => probe_done = Some(flatten(r)),
    }
    tracing::info!("varde up: stopping");
    let _ = stop_probe.send(true);
    let probe_result = match probe_done {
        Some(r) => r,
        None => flatten(probe.await),
    };
    let _ = stop_coord.send(true);
    let coord_result = match coord_done {
        Some(r) => r,
        None => flatten(coord.await),
    };
    let _ = stop_demo.send(true);
    if let Some(d) = demo {
        let _ = d.await;
    }
    coord_result.and(probe_result)
}

/// A task's outcome as `up`'s.
fn flatten<E>(r: Result<Result<(), E>, tokio::task::JoinError>) -> Result<(), UpError>
where
    UpError: From<E>,
{
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(UpError::Task(e.to_string())),
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The address to connect to for a listen address: a wildcard listen
/// (`0.0.0.0`, `::`) is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// Where everything is, and what to try first. Never shows the token.
fn banner(
    opts: &UpOptions,
    coordinator: &url::Url,
    probe: SocketAddr,
    demo: Option<SocketAddr>,
) -> String {
    use std::fmt::Write as _;
    let c = coordinator.as_str().trim_end_matches('/');
    let p = format!("http://{}", reachable(probe));
    let cfg = opts.config_dir.display();
    let data = opts.data_dir.display();
    let mut s = String::new();
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "varde up: a coordinator and one probe (region {REGION}) in this process"
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "  coordinator API   {c}/api/v1/status");
    let _ = writeln!(s, "                    {c}/api/v1/incidents");
    let _ = writeln!(s, "  coordinator       {c}/metrics   {c}/healthz");
    let _ = writeln!(s, "  probe             {p}/metrics   {p}/healthz");
    match demo {
        Some(d) => {
            let _ = writeln!(
                s,
                "                    {p}/probe?module=http_2xx&target=http://{d}/"
            );
            let _ = writeln!(
                s,
                "  demo target       http://{d}/  (answers 200 \"ok\"; /status/NNN answers NNN)"
            );
        }
        None => {
            let _ = writeln!(
                s,
                "                    {p}/probe?module=http_2xx&target=URL"
            );
        }
    }
    let _ = writeln!(
        s,
        "  config            {cfg}/probes/ and {cfg}/alert-rules/ (reloaded on change)"
    );
    let _ = writeln!(
        s,
        "  data              {data}/ (store, probe spool, local probe token)"
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "Next steps:");
    let _ = writeln!(
        s,
        "  - watch the checks turn UP:  curl -s {c}/api/v1/status"
    );
    if let Some(d) = demo {
        let _ = writeln!(
            s,
            "  - break one: save this as {cfg}/probes/broken.toml\n      [[check]]\n      name = \"demo-broken\"\n      target = \"http://{d}/status/500\"\n      labels = {{ team = \"demo\" }}"
        );
        let _ = writeln!(
            s,
            "    and watch this console for [FIRING]; change 500 to 200 for [RESOLVED]"
        );
    }
    let _ = writeln!(
        s,
        "  - Ctrl-C stops everything; `varde up` again resumes from {data}/"
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Notifications are printed on stdout, one line each; logs go to stderr."
    );
    let _ = writeln!(s);
    s
}

// === the local probe token ===

/// The token in `path`, or a new random one written there (mode 0600, the
/// directory created) when there is none. A second probe may use the same
/// file with `varde probe --token-file` (it then reports as region `local`).
pub fn load_or_create_token(path: &Path) -> io::Result<String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match crate::notify::links::open_private(path) {
        Ok(mut f) => {
            let mut raw = [0u8; 32];
            getrandom::getrandom(&mut raw)
                .map_err(|e| io::Error::other(format!("random token: {e}")))?;
            let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            f.write_all(token.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            Ok(token)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let mut text = String::new();
            std::fs::File::open(path)?.read_to_string(&mut text)?;
            let token = text.trim();
            if token.len() < crate::coordinator::config::MIN_TOKEN_LEN {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the token is shorter than {} characters; delete the file to get a new one",
                        crate::coordinator::config::MIN_TOKEN_LEN
                    ),
                ));
            }
            Ok(token.to_owned())
        }
        Err(e) => Err(e),
    }
}

// === the demo target ===

/// The demo target's routes: `/` and `/healthz` answer 200 `ok`;
/// `/status/NNN` answers status NNN (100–599), so a check can be made to
/// fail by its URL alone.
pub fn demo_router() -> Router {
    Router::new()
        .route("/", get(|| async { "ok\n" }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/status/{code}", get(status))
}

async fn status(UrlPath(code): UrlPath<u16>) -> (StatusCode, String) {
    match StatusCode::from_u16(code) {
        Ok(s) if (200..600).contains(&code) => (s, format!("{code}\n")),
        _ => (
            StatusCode::BAD_REQUEST,
            "a status from 200 to 599, e.g. /status/500\n".into(),
        ),
    }
}

/// Serves [`demo_router`] on `listener` until `shutdown` resolves.
pub async fn serve_demo(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    crate::serve::serve(
        listener,
        demo_router(),
        crate::serve::Limits::default(),
        shutdown,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("up/probe.token");
        let a = load_or_create_token(&path).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(load_or_create_token(&path).unwrap(), a);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn wildcard_listen_is_reached_on_loopback() {
        let a: SocketAddr = "0.0.0.0:9480".parse().unwrap();
        assert_eq!(reachable(a).to_string(), "127.0.0.1:9480");
        let b: SocketAddr = "10.0.0.1:1".parse().unwrap();
        assert_eq!(reachable(b), b);
    }

    #[test]
    fn banner_shows_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKEN_FILE);
        let token = load_or_create_token(&path).unwrap();
        let opts = UpOptions::new(".".into(), dir.path().to_owned());
        let url = url::Url::parse("http://127.0.0.1:9480/").unwrap();
        let b = banner(&opts, &url, opts.probe_listen, opts.demo_listen);
        assert!(!b.contains(&token));
        assert!(b.contains("http://127.0.0.1:9480/api/v1/status"), "{b}");
        assert!(b.contains("http://127.0.0.1:9499/status/500"), "{b}");
    }
}
