//! Target server for `bench/run.sh`: a separate process (so its CPU is never
//! counted against a prober) serving plain HTTP and HTTPS on 127.0.0.1 with
//! hyper's auto (HTTP/1.1 + HTTP/2) connection builder.
//!
//! * `GET /anything` → `200 ok\n`.
//! * `GET /delay?ms=N[&us=N][&id=K]` → `200 ok\n` after N ms (+ N µs), slept
//!   on a blocking thread (`std::thread::sleep`, not a 1 ms-granular tokio
//!   timer). The delay measured by the server, from handler entry to
//!   response creation, is sent in `x-server-delay-us` and recorded (by `id`
//!   when given) so a client can correlate it with its own measurement.
//! * `GET /stats` → JSON: requests by HTTP version, and the distribution of
//!   the delay overshoot (measured − requested).
//! * `GET /delays` → JSON object `{"<id>": [measured_us, ...], ...}`, each
//!   id's delays in the order its requests arrived.
//! * `GET /reset` → clears all of the above.
//!
//! The CA that signed the HTTPS certificate (for `localhost` and
//! `127.0.0.1`) is written as PEM to `--ca-out`. When ready, one JSON line
//! `{"http_port":..,"https_port":..,"http_ports":[..],"https_ports":[..],"ca":..,"pid":..}`
//! is printed on stdout (`--listeners N` opens N ports of each kind).
//! On SIGTERM / SIGINT the stats are printed on stderr and the server exits.
//!
//! ```text
//! cargo run --release --example bench_server -- --ca-out /tmp/ca.pem [--threads 1]
//! ```

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Parser, Debug)]
#[command(about = "Local target server for the varde throughput/accuracy benchmark")]
struct Args {
    /// Where to write the PEM of the CA that signed the HTTPS certificate.
    #[arg(long)]
    ca_out: PathBuf,
    /// Tokio worker threads (multi-thread runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Number of plain HTTP and of HTTPS listeners, each on its own free
    /// port of 127.0.0.1. A benchmark can give every phase a fresh port so
    /// that the TIME_WAIT sockets left by one phase (tens of thousands of
    /// fresh connections) never crowd the ephemeral ports of the next.
    #[arg(long, default_value_t = 1)]
    listeners: usize,
}

/// Upper bound on recorded delay samples (memory stays bounded).
const MAX_SAMPLES: usize = 2_000_000;

#[derive(Default)]
struct Stats {
    http1: AtomicU64,
    http2: AtomicU64,
    other: AtomicU64,
    tls_errors: AtomicU64,
    delays: Mutex<Delays>,
}

#[derive(Default)]
struct Delays {
    /// measured − requested, µs (may be negative in theory, never in practice).
    overshoot_us: Vec<i64>,
    /// id → measured µs of each request with that id, in arrival order.
    by_id: BTreeMap<u64, Vec<u64>>,
    samples: usize,
}

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Delays> {
        self.delays.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reset(&self) {
        self.http1.store(0, Ordering::Relaxed);
        self.http2.store(0, Ordering::Relaxed);
        self.other.store(0, Ordering::Relaxed);
        self.tls_errors.store(0, Ordering::Relaxed);
        let mut d = self.lock();
        d.overshoot_us.clear();
        d.by_id.clear();
        d.samples = 0;
    }

    fn json(&self) -> serde_json::Value {
        let mut over = self.lock().overshoot_us.clone();
        over.sort_unstable();
        let pct = |p: f64| -> serde_json::Value {
            if over.is_empty() {
                return serde_json::Value::Null;
            }
            let i = ((p / 100.0) * over.len() as f64).ceil() as usize;
            over[i.clamp(1, over.len()) - 1].into()
        };
        serde_json::json!({
            "requests": {
                "HTTP/1.1": self.http1.load(Ordering::Relaxed),
                "HTTP/2": self.http2.load(Ordering::Relaxed),
                "other": self.other.load(Ordering::Relaxed),
            },
            "tls_errors": self.tls_errors.load(Ordering::Relaxed),
            "delays": {
                "count": over.len(),
                "overshoot_us": {
                    "p50": pct(50.0), "p90": pct(90.0), "p99": pct(99.0),
                    "p999": pct(99.9), "max": over.last().copied(),
                },
            },
        })
    }
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn json_response(v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::OK, v.to_string());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(
    req: Request<Incoming>,
    stats: Arc<Stats>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let entry = Instant::now();
    let path = req.uri().path();
    let query = req.uri().query();
    match path {
        "/stats" => return Ok(json_response(&stats.json())),
        "/delays" => {
            let map: serde_json::Map<String, serde_json::Value> = stats
                .lock()
                .by_id
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone().into()))
                .collect();
            return Ok(json_response(&serde_json::Value::Object(map)));
        }
        "/reset" => {
            stats.reset();
            return Ok(text(StatusCode::OK, "reset\n"));
        }
        _ => {}
    }
    match req.version() {
        Version::HTTP_11 => &stats.http1,
        Version::HTTP_2 => &stats.http2,
        _ => &stats.other,
    }
    .fetch_add(1, Ordering::Relaxed);
    if path != "/delay" {
        return Ok(text(StatusCode::OK, "ok\n"));
    }
    let ms: u64 = query_param(query, "ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let us: u64 = query_param(query, "us")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let id: Option<u64> = query_param(query, "id").and_then(|v| v.parse().ok());
    let want = Duration::from_millis(ms) + Duration::from_micros(us);
    if !want.is_zero() {
        // Timers in tokio have 1 ms granularity; a blocking sleep is precise
        // to the kernel's timer slack (~50 µs).
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(want)).await;
    }
    let mut resp = text(StatusCode::OK, "ok\n");
    let measured = entry.elapsed();
    let measured_us = measured.as_micros() as u64;
    resp.headers_mut().insert(
        "x-server-delay-us",
        hyper::header::HeaderValue::from(measured_us),
    );
    {
        let mut d = stats.lock();
        if d.overshoot_us.len() < MAX_SAMPLES {
            d.overshoot_us
                .push(measured_us as i64 - want.as_micros() as i64);
        }
        if let Some(id) = id
            && d.samples < MAX_SAMPLES
        {
            d.samples += 1;
            d.by_id.entry(id).or_default().push(measured_us);
        }
    }
    Ok(resp)
}

/// A CA and a leaf for `localhost` / `127.0.0.1` signed by it (ECDSA P-256).
fn make_certs() -> (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "varde bench CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("ca key");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca cert");

    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("leaf params");
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("leaf cert");

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    (ca.pem(), vec![leaf.der().clone(), ca.der().clone()], key)
}

async fn serve<I>(io: I, stats: Arc<Stats>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let svc = service_fn(move |req| handle(req, stats.clone()));
    let _ = builder.serve_connection(TokioIo::new(io), svc).await;
}

async fn run(args: Args) -> std::io::Result<()> {
    let (ca_pem, chain, key) = make_certs();
    let tmp = args.ca_out.with_extension("tmp");
    std::fs::write(&tmp, ca_pem)?;
    std::fs::rename(&tmp, &args.ca_out)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports default versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("valid certificate");
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Clients under test never resume; don't spend server CPU on tickets.
    tls.send_tls13_tickets = 0;
    let acceptor = TlsAcceptor::from(Arc::new(tls));

    let stats = Arc::new(Stats::default());
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let (mut http_ports, mut https_ports) = (Vec::new(), Vec::new());
    for _ in 0..args.listeners.max(1) {
        let plain = TcpListener::bind(any).await?;
        http_ports.push(plain.local_addr()?.port());
        let stats_p = stats.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = plain.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve(tcp, stats_p.clone()));
            }
        });

        let secure = TcpListener::bind(any).await?;
        https_ports.push(secure.local_addr()?.port());
        let stats_s = stats.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = secure.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let stats = stats_s.clone();
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(tls) => serve(tls, stats).await,
                        Err(_) => {
                            stats.tls_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
    }

    let ready = serde_json::json!({
        "http_port": http_ports[0],
        "https_port": https_ports[0],
        "http_ports": http_ports,
        "https_ports": https_ports,
        "ca": args.ca_out,
        "pid": std::process::id(),
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ready}")?;
        out.flush()?;
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("bench_server stats: {}", stats.json());
    Ok(())
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}
