//! Load side of `bench/run.sh`. Every mode prints one JSON line on stdout.
//!
//! * `throughput` — runs one built varde HTTP(S) check N times (fresh TCP
//!   and TLS every run) with C in flight and reports checks per CPU-second
//!   of this whole process, and its peak RSS.
//! * `accuracy` — fires checks against `/delay?ms=D` at a fixed rate, each
//!   as its own task, and compares varde's `processing` phase with D and
//!   with the delay the server itself measured for that very request.
//! * `blackbox` — drives blackbox_exporter's `/probe` endpoint N times with
//!   C keep-alive connections; CPU and peak RSS are those of the exporter
//!   process (`--pid`), read from /proc, so this generator is not counted.
//! * `get` — GET a URL and print the body (waits for readiness).
//! * `report` — prints the final table from the JSON lines of the others.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use varde::check::{Check, CheckSpec, HttpOptions, IpPreference, NetOptions, TlsOptions};

#[derive(Parser, Debug)]
#[command(about = "Load generator and reporter for the varde benchmark")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Raw varde check throughput: checks per CPU-second of this process.
    Throughput {
        #[arg(long)]
        url: String,
        /// CA PEM to trust (HTTPS).
        #[arg(long)]
        ca: Option<PathBuf>,
        #[arg(long, default_value_t = 10_000)]
        checks: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Untimed checks run first (connection setup paths, allocator warm-up).
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        /// Tokio worker threads; 0 = current-thread runtime (as `varde check`).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Also serialize every result to JSON (as a real probe would
        /// export it); off by default: raw check throughput.
        #[arg(long)]
        serialize: bool,
        /// Label copied into the output.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Accuracy of the `processing` phase at a fixed check rate.
    Accuracy {
        /// A `/delay?ms=D` URL of bench_server (http or https).
        #[arg(long)]
        url: String,
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Checks started per second.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Plain-HTTP base URL of bench_server for /reset, /stats and
        /// /delays (default: scheme+host+port of --url when it is http).
        #[arg(long)]
        stats_url: Option<String>,
        /// Tokio worker threads; 0 = current-thread runtime (as `varde check`).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// PID of bench_server, to report its CPU use over the run (both
        /// share the machine: a saturated CPU delays every wake-up).
        #[arg(long)]
        server_pid: Option<u32>,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Drive blackbox_exporter /probe; measure the exporter's CPU and RSS.
    Blackbox {
        /// Full /probe?module=..&target=.. URL.
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 10_000)]
        requests: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        /// PID of the blackbox_exporter process.
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// GET a URL over plain HTTP and print the body; retries until it answers.
    Get {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 10.0)]
        wait_secs: f64,
    },
    /// Print the final table from the JSON result files in a directory.
    Report {
        #[arg(long)]
        dir: PathBuf,
    },
}

fn main() {
    let args = Args::parse();
    let threads = match &args.cmd {
        Cmd::Throughput { threads, .. } | Cmd::Accuracy { threads, .. } => *threads,
        _ => 1,
    };
    let rt = if threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let code = rt.block_on(async move {
        match args.cmd {
            Cmd::Throughput {
                url,
                ca,
                checks,
                concurrency,
                warmup,
                threads,
                serialize,
                label,
            } => {
                let opts = RunOpts {
                    concurrency,
                    serialize,
                };
                throughput(&url, ca, checks, warmup, threads, opts, &label).await
            }
            Cmd::Accuracy {
                url,
                ca,
                rate,
                seconds,
                stats_url,
                threads,
                server_pid,
                label,
            } => {
                let pace = Pace {
                    rate,
                    seconds,
                    threads,
                    server_pid,
                };
                accuracy(&url, ca, pace, stats_url, &label).await
            }
            Cmd::Blackbox {
                url,
                requests,
                concurrency,
                warmup,
                pid,
                label,
            } => blackbox(&url, requests, concurrency, warmup, pid, &label).await,
            Cmd::Get { url, wait_secs } => get_cmd(&url, wait_secs).await,
            Cmd::Report { dir } => report(&dir),
        }
    });
    std::process::exit(code);
}

// ---------------------------------------------------------------- /proc ---

/// Clock ticks per second for /proc/<pid>/stat (`getconf CLK_TCK`, once).
fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// utime + stime of a whole process (all threads, live and exited), seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, i.e. the 12th and 13th after ")".
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clk_tck()
}

/// A `Vm*` line of /proc/<pid>/status, in KiB.
fn status_kib(pid: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

// --------------------------------------------------------------- checks ---

fn build_check(url: &str, ca: Option<&Path>) -> Check {
    let spec = CheckSpec::Http(HttpOptions {
        url: url.to_owned(),
        net: NetOptions {
            ip_preference: IpPreference::Ip4,
            ..Default::default()
        },
        tls: TlsOptions {
            ca_file: ca.map(Path::to_path_buf),
            ..Default::default()
        },
        ..Default::default()
    });
    match spec.build(Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid check for {url}: {e}");
            std::process::exit(2);
        }
    }
}

#[derive(Default)]
struct Tally {
    ok: usize,
    failed: usize,
    failures: HashMap<String, usize>,
    versions: HashMap<String, usize>,
    json_bytes: usize,
}

impl Tally {
    fn add(&mut self, r: &varde::check::CheckResult) {
        if r.success {
            self.ok += 1;
            let v = r
                .http
                .as_ref()
                .and_then(|h| h.version.clone())
                .unwrap_or_default();
            *self.versions.entry(v).or_default() += 1;
        } else {
            self.failed += 1;
            let key = format!(
                "{}: {}",
                r.reason.map(|r| r.as_str()).unwrap_or("?"),
                r.message
            );
            if self.failures.len() < 20 || self.failures.contains_key(&key) {
                *self.failures.entry(key).or_default() += 1;
            }
        }
    }
}

#[derive(Clone, Copy)]
struct RunOpts {
    concurrency: usize,
    serialize: bool,
}

/// Runs `n` checks with `concurrency` in flight: `concurrency` tasks pull
/// the next index from a shared counter, so no task is spawned per check.
async fn run_many(check: Arc<Check>, n: usize, opts: RunOpts) -> Tally {
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..opts.concurrency.max(1) {
        let check = check.clone();
        let next = next.clone();
        set.spawn(async move {
            let mut t = Tally::default();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let r = check.run().await;
                if opts.serialize {
                    t.json_bytes += serde_json::to_vec(&r).map_or(0, |v| v.len());
                }
                t.add(&r);
            }
            t
        });
    }
    let mut all = Tally::default();
    while let Some(t) = set.join_next().await {
        let t = t.expect("worker panicked");
        all.ok += t.ok;
        all.failed += t.failed;
        all.json_bytes += t.json_bytes;
        for (k, v) in t.failures {
            *all.failures.entry(k).or_default() += v;
        }
        for (k, v) in t.versions {
            *all.versions.entry(k).or_default() += v;
        }
    }
    all
}

async fn throughput(
    url: &str,
    ca: Option<PathBuf>,
    checks: usize,
    warmup: usize,
    threads: usize,
    opts: RunOpts,
    label: &str,
) -> i32 {
    let check = Arc::new(build_check(url, ca.as_deref()));
    if warmup > 0 {
        let w = run_many(check.clone(), warmup, opts).await;
        if w.failed > 0 {
            eprintln!("warm-up failures: {:?}", w.failures);
        }
    }
    let cpu0 = cpu_seconds("self");
    let t0 = Instant::now();
    let tally = run_many(check, checks, opts).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds("self") - cpu0;
    for (k, v) in &tally.failures {
        eprintln!("FAILED x{v}: {k}");
    }
    let out = json!({
        "mode": "throughput",
        "label": label,
        "prober": "varde",
        "url": url,
        "checks": checks,
        "ok": tally.ok,
        "failed": tally.failed,
        "concurrency": opts.concurrency,
        "runtime": if threads == 0 { "current_thread".to_string() } else { format!("multi_thread({threads})") },
        "serialized_json_bytes": opts.serialize.then_some(tally.json_bytes),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "checks_per_cpu_s": round(tally.ok as f64 / cpu.max(1e-9), 1),
        "checks_per_wall_s": round(tally.ok as f64 / wall.max(1e-9), 1),
        "peak_rss_kib": status_kib("self", "VmHWM"),
        "http_versions": tally.versions,
    });
    println!("{out}");
    i32::from(tally.failed > 0)
}

// ------------------------------------------------------------- accuracy ---

fn percentiles(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
        round(v[i.clamp(1, v.len()) - 1], 1)
    };
    json!({
        "n": v.len(),
        "p50": pct(50.0), "p90": pct(90.0), "p99": pct(99.0),
        "p999": pct(99.9), "max": round(*v.last().unwrap(), 1),
    })
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

struct Pace {
    rate: u32,
    seconds: u32,
    threads: usize,
    server_pid: Option<u32>,
}

async fn accuracy(
    url: &str,
    ca: Option<PathBuf>,
    pace: Pace,
    stats_url: Option<String>,
    label: &str,
) -> i32 {
    let Pace {
        rate,
        seconds,
        threads,
        server_pid,
    } = pace;
    let server_pid = server_pid.map(|p| p.to_string());
    let parsed = url::Url::parse(url).expect("valid --url");
    let delay_ms: f64 = parsed
        .query_pairs()
        .find(|(k, _)| k == "ms")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0);
    let stats_base = stats_url.unwrap_or_else(|| {
        format!(
            "http://{}:{}",
            parsed.host_str().unwrap_or("127.0.0.1"),
            parsed.port_or_known_default().unwrap_or(80)
        )
    });
    let total = (rate as usize) * (seconds as usize);
    // A fleet of `rate` checks, each run once a second as a probe would
    // schedule them (and, like the probe's scheduler, never overlapping
    // itself). Each check's URL carries its id; the server records its own
    // measured delay per id in arrival order, which for one non-overlapping
    // check is the order of its runs.
    let sep = if parsed.query().is_some() { '&' } else { '?' };
    let fleet = (rate as usize).max(1);
    let checks: Vec<Arc<Check>> = (0..fleet)
        .map(|i| Arc::new(build_check(&format!("{url}{sep}id={i}"), ca.as_deref())))
        .collect();
    let busy: Vec<Arc<std::sync::atomic::AtomicBool>> = (0..fleet)
        .map(|_| Arc::new(std::sync::atomic::AtomicBool::new(false)))
        .collect();
    let mut runs = vec![0usize; fleet];
    let mut skipped_busy = 0usize;
    let mut processing_us: Vec<((usize, usize), f64)> = Vec::with_capacity(total);
    let mut failed_ids = std::collections::HashSet::new();
    let mut tally = Tally::default();
    // Results are taken as they complete, as a probe would hand them on.
    let mut reap =
        |r: Result<((usize, usize), varde::check::CheckResult), tokio::task::JoinError>| {
            let (id, r) = r.expect("check task panicked");
            tally.add(&r);
            if r.success {
                processing_us.push((id, r.phases.processing.as_secs_f64() * 1e6));
            } else {
                // A failed run may or may not have reached the server, so the
                // server's list for this check can no longer be matched by index.
                failed_ids.insert(id.0);
            }
        };
    if let Err(e) = http_get(&format!("{stats_base}/reset")).await {
        eprintln!("cannot reset server stats at {stats_base}: {e}");
        return 2;
    }

    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let deadline = Duration::from_secs(u64::from(seconds));
    let mut set = JoinSet::new();
    let server_cpu0 = server_pid.as_deref().map(cpu_seconds);
    let cpu0 = cpu_seconds("self");
    let t0 = Instant::now();
    let mut fired = 0usize;
    let mut lateness_us = Vec::with_capacity(total);
    while fired < total {
        let at = tick.tick().await;
        if t0.elapsed() >= deadline {
            break;
        }
        lateness_us.push(at.elapsed().as_secs_f64() * 1e6);
        let id = fired % fleet;
        fired += 1;
        if busy[id].swap(true, std::sync::atomic::Ordering::AcqRel) {
            skipped_busy += 1;
            continue;
        }
        let (check, flag, run) = (checks[id].clone(), busy[id].clone(), runs[id]);
        runs[id] += 1;
        set.spawn(async move {
            let r = check.run().await;
            flag.store(false, std::sync::atomic::Ordering::Release);
            ((id, run), r)
        });
        while let Some(r) = set.try_join_next() {
            reap(r);
        }
    }
    let fire_secs = t0.elapsed().as_secs_f64();
    while let Some(r) = set.join_next().await {
        reap(r);
    }
    let cpu = cpu_seconds("self") - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let server_cpu = server_pid
        .as_deref()
        .zip(server_cpu0)
        .map(|(p, c0)| round(cpu_seconds(p) - c0, 3));
    for (k, v) in &tally.failures {
        eprintln!("FAILED x{v}: {k}");
    }

    let server_delays: HashMap<usize, Vec<f64>> =
        match http_get(&format!("{stats_base}/delays")).await {
            Ok(body) => serde_json::from_slice::<HashMap<String, Vec<f64>>>(&body)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
                .collect(),
            Err(e) => {
                eprintln!("cannot fetch server delays: {e}");
                HashMap::new()
            }
        };
    let server_stats: Value = match http_get(&format!("{stats_base}/stats")).await {
        Ok(body) => serde_json::from_slice(&body).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };

    let d_us = delay_ms * 1000.0;
    let vs_nominal: Vec<f64> = processing_us.iter().map(|(_, p)| p - d_us).collect();
    let abs_nominal: Vec<f64> = vs_nominal.iter().map(|e| e.abs()).collect();
    let mut corrected = Vec::new();
    let mut overshoot = Vec::new();
    for ((id, run), p) in &processing_us {
        if failed_ids.contains(id) {
            continue;
        }
        if let Some(s) = server_delays.get(id).and_then(|v| v.get(*run)) {
            corrected.push(p - s);
            overshoot.push(s - d_us);
        }
    }
    let abs_corrected: Vec<f64> = corrected.iter().map(|e| e.abs()).collect();
    let out = json!({
        "mode": "accuracy",
        "label": label,
        "url": url,
        "delay_ms": delay_ms,
        "target_rate": rate,
        "seconds": seconds,
        "fired": fired,
        "checks_in_fleet": fleet,
        "skipped_busy": skipped_busy,
        "achieved_rate": round(fired as f64 / fire_secs.max(1e-9), 1),
        "ok": tally.ok,
        "failed": tally.failed,
        "runtime": if threads == 0 { "current_thread".to_string() } else { format!("multi_thread({threads})") },
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "server_cpu_s": server_cpu,
        "tick_lateness_us": percentiles(lateness_us),
        "abs_error_vs_nominal_us": percentiles(abs_nominal),
        "signed_error_vs_nominal_us": percentiles(vs_nominal),
        "abs_error_vs_server_measured_us": percentiles(abs_corrected),
        "signed_error_vs_server_measured_us": percentiles(corrected),
        "server_overshoot_us": percentiles(overshoot),
        "server_stats": server_stats,
        "peak_rss_kib": status_kib("self", "VmHWM"),
        "http_versions": tally.versions,
    });
    println!("{out}");
    i32::from(tally.failed > 0)
}

// ------------------------------------------------------- plain HTTP GET ---

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// One keep-alive HTTP/1.1 connection to `authority`.
async fn connect(authority: &str) -> Result<Sender, String> {
    let tcp = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn send(sender: &mut Sender, authority: &str, path: &str) -> Result<(u16, Bytes), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("not ready: {e}"))?;
    let req = Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// Splits an `http://host:port/path?query` URL into authority and path.
fn split_url(url: &str) -> Result<(String, String), String> {
    let u = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    if u.scheme() != "http" {
        return Err(format!("{url}: only http:// is supported here"));
    }
    let authority = format!(
        "{}:{}",
        u.host_str().unwrap_or("127.0.0.1"),
        u.port_or_known_default().unwrap_or(80)
    );
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    };
    Ok((authority, path))
}

async fn http_get(url: &str) -> Result<Bytes, String> {
    let (authority, path) = split_url(url)?;
    let mut s = connect(&authority).await?;
    let (status, body) = send(&mut s, &authority, &path).await?;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    Ok(body)
}

async fn get_cmd(url: &str, wait_secs: f64) -> i32 {
    let until = Instant::now() + Duration::from_secs_f64(wait_secs);
    loop {
        match http_get(url).await {
            Ok(body) => {
                print!("{}", String::from_utf8_lossy(&body));
                return 0;
            }
            Err(e) if Instant::now() >= until => {
                eprintln!("GET {url}: {e}");
                return 1;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

// ------------------------------------------------------------- blackbox ---

async fn probe_many(url: &str, n: usize, concurrency: usize) -> (usize, usize, Option<String>) {
    let (authority, path) = split_url(url).expect("valid --url");
    let (authority, path) = (Arc::new(authority), Arc::new(path));
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (authority, path, next) = (authority.clone(), path.clone(), next.clone());
        set.spawn(async move {
            let (mut ok, mut failed, mut first) = (0usize, 0usize, None);
            let mut sender: Option<Sender> = None;
            while next.fetch_add(1, Ordering::Relaxed) < n {
                if sender.is_none() {
                    match connect(&authority).await {
                        Ok(s) => sender = Some(s),
                        Err(e) => {
                            failed += 1;
                            first.get_or_insert(e);
                            continue;
                        }
                    }
                }
                let s = sender.as_mut().expect("connected");
                match send(s, &authority, &path).await {
                    Ok((200, body)) if contains(&body, b"\nprobe_success 1\n") => ok += 1,
                    Ok((status, body)) => {
                        failed += 1;
                        first.get_or_insert_with(|| {
                            let text = String::from_utf8_lossy(&body);
                            let lines: Vec<&str> = text
                                .lines()
                                .filter(|l| l.starts_with("probe_") && !l.starts_with('#'))
                                .collect();
                            format!("status {status}: {}", lines.join("; "))
                        });
                    }
                    Err(e) => {
                        failed += 1;
                        first.get_or_insert(e);
                        sender = None;
                    }
                }
            }
            (ok, failed, first)
        });
    }
    let (mut ok, mut failed, mut first) = (0, 0, None);
    while let Some(r) = set.join_next().await {
        let (o, f, e) = r.expect("worker panicked");
        ok += o;
        failed += f;
        if first.is_none() {
            first = e;
        }
    }
    (ok, failed, first)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn blackbox(
    url: &str,
    requests: usize,
    concurrency: usize,
    warmup: usize,
    pid: u32,
    label: &str,
) -> i32 {
    let pid_s = pid.to_string();
    if !Path::new(&format!("/proc/{pid}/stat")).exists() {
        eprintln!("no process {pid}");
        return 2;
    }
    if warmup > 0 {
        let (_, f, e) = probe_many(url, warmup, concurrency).await;
        if f > 0 {
            eprintln!("warm-up failures: {f} (first: {e:?})");
        }
    }
    let cpu0 = cpu_seconds(&pid_s);
    let t0 = Instant::now();
    let (ok, failed, first) = probe_many(url, requests, concurrency).await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(&pid_s) - cpu0;
    if let Some(e) = &first {
        eprintln!("FAILED x{failed}, first: {e}");
    }
    let out = json!({
        "mode": "blackbox",
        "label": label,
        "prober": "blackbox_exporter",
        "url": url,
        "checks": requests,
        "ok": ok,
        "failed": failed,
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "checks_per_cpu_s": round(ok as f64 / cpu.max(1e-9), 1),
        "checks_per_wall_s": round(ok as f64 / wall.max(1e-9), 1),
        "peak_rss_kib": status_kib(&pid_s, "VmHWM"),
    });
    println!("{out}");
    i32::from(failed > 0)
}

// --------------------------------------------------------------- report ---

/// Every JSON line of a result file (one per round).
fn load_all(dir: &Path, name: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// The last JSON line of a result file.
fn load(dir: &Path, name: &str) -> Value {
    load_all(dir, name).pop().unwrap_or(Value::Null)
}

/// The round with the median checks per CPU-second (lower median).
fn median_round(mut rounds: Vec<Value>) -> (Value, Vec<f64>) {
    let mut rates: Vec<f64> = rounds
        .iter()
        .filter_map(|v| num(v, &["checks_per_cpu_s"]))
        .collect();
    rates.sort_by(f64::total_cmp);
    rounds.sort_by(|a, b| {
        let k = |v: &Value| num(v, &["checks_per_cpu_s"]).unwrap_or(0.0);
        k(a).total_cmp(&k(b))
    });
    let mid = rounds.len().saturating_sub(1) / 2;
    (rounds.into_iter().nth(mid).unwrap_or(Value::Null), rates)
}

fn join_rates(r: &[f64]) -> String {
    r.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

fn fmt_opt(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(x) => format!("{x:.digits$}"),
        None => "n/a".into(),
    }
}

fn report(dir: &Path) -> i32 {
    println!();
    println!("== Raw check throughput (fresh connection per check; 127.0.0.1) ==");
    println!(
        "c/cpu: checks per CPU-second of the prober's process; c/wall: per wall-second; RSS: peak (VmHWM)"
    );
    println!(
        "{:<6} {:>8} {:>12} {:>12} {:>8} {:>7} {:>12} {:>12} {:>10} {:>10}",
        "proto",
        "checks",
        "varde c/cpu",
        "bbox c/cpu",
        "ratio",
        "target",
        "varde c/wall",
        "bbox c/wall",
        "varde RSS",
        "bbox RSS"
    );
    let mut verdicts: Vec<String> = Vec::new();
    for (proto, target) in [("http", 5.0), ("https", 1.5)] {
        let (v, v_rates) = median_round(load_all(dir, &format!("varde_{proto}.json")));
        let (b, b_rates) = median_round(load_all(dir, &format!("blackbox_{proto}.json")));
        let vc = num(&v, &["checks_per_cpu_s"]);
        let bc = num(&b, &["checks_per_cpu_s"]);
        let ratio = match (vc, bc) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let met = ratio.is_some_and(|r| r >= target);
        verdicts.push(format!(
            "{} >= {target}x blackbox: {}",
            proto.to_uppercase(),
            if met { "met" } else { "NOT met" }
        ));
        let mib = |x: Option<f64>| fmt_opt(x.map(|k| k / 1024.0), 1) + " MiB";
        println!(
            "{:<6} {:>8} {:>12} {:>12} {:>8} {:>7} {:>12} {:>12} {:>10} {:>10}",
            proto.to_uppercase(),
            fmt_opt(num(&v, &["checks"]), 0),
            fmt_opt(vc, 0),
            fmt_opt(bc, 0),
            fmt_opt(ratio, 2) + "x",
            format!("{target}x{}", if met { "" } else { "!" }),
            fmt_opt(num(&v, &["checks_per_wall_s"]), 0),
            fmt_opt(num(&b, &["checks_per_wall_s"]), 0),
            mib(num(&v, &["peak_rss_kib"])),
            mib(num(&b, &["peak_rss_kib"])),
        );
        println!(
            "       varde    (median round): ok {} failed {} cpu {} s wall {} s, {}, {}; all rounds c/cpu: {}",
            fmt_opt(num(&v, &["ok"]), 0),
            fmt_opt(num(&v, &["failed"]), 0),
            fmt_opt(num(&v, &["cpu_s"]), 2),
            fmt_opt(num(&v, &["wall_s"]), 2),
            v.get("runtime").and_then(Value::as_str).unwrap_or("?"),
            v.get("http_versions")
                .map(Value::to_string)
                .unwrap_or_default(),
            join_rates(&v_rates),
        );
        println!(
            "       blackbox (median round): ok {} failed {} cpu {} s wall {} s, server saw {}; all rounds c/cpu: {}",
            fmt_opt(num(&b, &["ok"]), 0),
            fmt_opt(num(&b, &["failed"]), 0),
            fmt_opt(num(&b, &["cpu_s"]), 2),
            fmt_opt(num(&b, &["wall_s"]), 2),
            load(dir, &format!("server_{proto}_blackbox.json"))
                .get("requests")
                .map(Value::to_string)
                .unwrap_or_else(|| "?".into()),
            join_rates(&b_rates),
        );
    }
    println!();
    println!("== processing-phase accuracy (µs; |error| percentiles; target p99 <= 1000) ==");
    println!(
        "{:<6} {:>7} {:>9} {:>6} {:<30} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "proto", "delay", "rate", "failed", "measure", "p50", "p90", "p99", "p99.9", "max"
    );
    for proto in ["http", "https"] {
        let a = load(dir, &format!("accuracy_{proto}.json"));
        if a.is_null() {
            continue;
        }
        let head = format!(
            "{:<6} {:>5}ms {:>8}/s {:>6}",
            proto.to_uppercase(),
            fmt_opt(num(&a, &["delay_ms"]), 0),
            fmt_opt(num(&a, &["achieved_rate"]), 0),
            fmt_opt(num(&a, &["failed"]), 0),
        );
        let blank = " ".repeat(head.chars().count());
        let rows = [
            (
                "abs_error_vs_server_measured_us",
                "|processing - server-measured|",
            ),
            ("abs_error_vs_nominal_us", "|processing - D|"),
            ("server_overshoot_us", "server overshoot (measured-D)"),
        ];
        for (i, (key, name)) in rows.iter().enumerate() {
            let p = |k: &str| fmt_opt(num(&a, &[key, k]), 0);
            println!(
                "{} {:<30} {:>8} {:>8} {:>8} {:>8} {:>8}",
                if i == 0 { &head } else { &blank },
                name,
                p("p50"),
                p("p90"),
                p("p99"),
                p("p999"),
                p("max")
            );
        }
        let p99 = num(&a, &["abs_error_vs_server_measured_us", "p99"]);
        let met = p99.is_some_and(|p| p <= 1000.0);
        verdicts.push(format!(
            "{} p99 accuracy <= 1 ms at {}/s: {}",
            proto.to_uppercase(),
            fmt_opt(num(&a, &["target_rate"]), 0),
            if met { "met" } else { "NOT met" }
        ));
        println!(
            "{blank} p99 |processing - server-measured| {} 1 ms; CPU over {} s: varde {} s ({}), server {} s",
            if met { "within" } else { "NOT within" },
            fmt_opt(num(&a, &["wall_s"]), 1),
            fmt_opt(num(&a, &["cpu_s"]), 2),
            a.get("runtime").and_then(Value::as_str).unwrap_or("?"),
            fmt_opt(num(&a, &["server_cpu_s"]), 2),
        );
    }
    println!();
    println!("targets: {}", verdicts.join("; "));
    0
}
