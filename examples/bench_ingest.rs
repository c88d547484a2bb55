//! Load side of `bench/coordinator.sh`: pushes probe result batches to a
//! coordinator's `POST /api/v1/results` the way probes do, built from the
//! real [`ResultBatch`] / [`CheckResult`] structs.
//!
//! * `--write-config DIR` — writes the config the run expects: `probes/bench.toml`
//!   (`--checks` TCP checks named `{prefix}00000`.., interval `--interval`),
//!   `alert-rules/bench.toml` (one `down` rule, quorum majority, matching
//!   every check), `coordinator.toml` and one `REGION.token` per region.
//!   The check names and targets in the results are those of this file.
//! * `--rate N` — paced: N results per second in total for `--duration`,
//!   each region its share, pushed once per `--tick` (1 s) like a probe's
//!   pusher, one batch in flight per region. Every check runs once per
//!   `interval = regions * checks / N` in every region; its results carry
//!   `started_at` on that schedule. A `--failing` fraction of checks fails
//!   in every region (`connect_refused`) so that incidents fire.
//! * `--max` — as fast as possible for `--duration` with `--concurrency`
//!   batches in flight. Each in-flight slot is its own probe (own
//!   `probe_id`, one batch at a time), so every probe's `seq` arrives in
//!   increasing order, as from a real probe.
//!
//! Probe ids are `{prefix}{region}-{run}[-{slot}]`, `run` being the start
//! time, so two runs against the same coordinator never reuse a
//! `(probe_id, seq)`. Prints one JSON line on stdout and a human summary
//! on stderr; exits 1 if any batch failed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{ArgGroup, Parser};
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use varde::check::{CheckKind, CheckResult, Phases, Reason, TcpFacts};
use varde::wire::{BatchAck, RESULTS_PATH, ResultBatch, ResultRecord};

#[derive(Parser, Debug)]
#[command(about = "Ingest load generator for a varde coordinator (bench/coordinator.sh)")]
#[command(group(ArgGroup::new("mode").required(true).args(["rate", "max", "write_config"])))]
struct Args {
    /// Coordinator base URL (plain http).
    #[arg(long, default_value = "http://127.0.0.1:9480")]
    url: String,
    /// Bearer token files: one for every region, or one per region in
    /// `--regions` order (trailing newline trimmed).
    #[arg(long = "token-file", value_name = "FILE")]
    token_files: Vec<PathBuf>,
    #[arg(long, value_delimiter = ',', default_value = "eu,us,ap")]
    regions: Vec<String>,
    #[arg(long, default_value_t = 10_000)]
    checks: usize,
    /// Check names are `{prefix}{index:05}`; probe ids start with it too.
    #[arg(long, default_value = "bench-")]
    prefix: String,
    /// Most results per batch.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Paced mode: results per second, all regions together.
    #[arg(long)]
    rate: Option<f64>,
    /// Flat-out mode: as many results as accepted.
    #[arg(long)]
    max: bool,
    /// Write the matching config directory and exit.
    #[arg(long, value_name = "DIR")]
    write_config: Option<PathBuf>,
    /// Check interval written by `--write-config`.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    interval: Duration,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Fraction of checks failing in every region.
    #[arg(long, default_value_t = 0.01)]
    failing: f64,
    /// `--max`: batches in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Paced: how often each region pushes what came due.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    tick: Duration,
    /// Paced: how long to keep sending a backlog after `--duration`.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Tokio worker threads; 1 = current-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() {
    let args = Args::parse();
    if let Some(dir) = &args.write_config {
        match write_config(dir, &args) {
            Ok(()) => std::process::exit(0),
            Err(e) => fail(&format!("--write-config {}: {e}", dir.display())),
        }
    }
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let code = rt.block_on(run(args));
    std::process::exit(code);
}

fn fail(msg: &str) -> ! {
    eprintln!("bench_ingest: {msg}");
    std::process::exit(2);
}

// ------------------------------------------------------------ the fleet ---

/// What every generated result is derived from, shared by all tasks.
struct Fleet {
    checks: usize,
    prefix: String,
    /// `failing[i]`: check i fails in every region.
    failing: Vec<bool>,
}

impl Fleet {
    fn new(checks: usize, prefix: &str, fraction: f64) -> Self {
        let f = fraction.clamp(0.0, 1.0);
        // Exactly floor(checks * f) failing checks, evenly spread.
        let failing = (0..checks)
            .map(|i| ((i + 1) as f64 * f).floor() > (i as f64 * f).floor())
            .collect();
        Self {
            checks,
            prefix: prefix.to_owned(),
            failing,
        }
    }

    fn name(&self, i: usize) -> String {
        format!("{}{i:05}", self.prefix)
    }

    fn failing_count(&self) -> usize {
        self.failing.iter().filter(|f| **f).count()
    }

    /// The result of run `run` of check `i` in region number `region`.
    fn result(
        &self,
        i: usize,
        run: u64,
        region: usize,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> CheckResult {
        let target = target_addr(i);
        let base = CheckResult {
            kind: CheckKind::Tcp,
            target: target.clone(),
            success: true,
            reason: None,
            message: String::new(),
            started_at,
            duration: Duration::ZERO,
            phases: Phases::default(),
            tls: None,
            http: None,
            dns: None,
            tcp: None,
        };
        if self.failing[i] {
            let connect = Duration::from_micros(150 + splitmix(i as u64 ^ run << 24) % 200);
            return CheckResult {
                success: false,
                reason: Some(Reason::ConnectRefused),
                message: format!("connect to {target}: Connection refused (os error 111)"),
                duration: connect + Duration::from_micros(10),
                phases: Phases {
                    resolve: Duration::from_micros(5),
                    connect,
                    ..Phases::default()
                },
                ..base
            };
        }
        // A stable per-check base latency (1-40 ms) with per-run jitter (+0-25%).
        let h = splitmix(i as u64);
        let base_us = 1_000 + h % 39_000;
        let jitter = splitmix(h ^ run << 20 ^ (region as u64) << 52) % (base_us / 4 + 1);
        let connect = Duration::from_micros(base_us + jitter);
        CheckResult {
            message: format!("connected to {target}"),
            duration: connect + Duration::from_micros(12),
            phases: Phases {
                resolve: Duration::from_micros(6),
                connect,
                ..Phases::default()
            },
            tcp: Some(TcpFacts {
                remote_addr: Some(target.clone()),
                bytes_read: 0,
                banner: None,
                matched: None,
            }),
            ..base
        }
    }
}

/// The TCP target of check `i` (nothing listens there: the coordinator
/// never runs checks, it only judges results).
fn target_addr(i: usize) -> String {
    format!("127.0.0.1:{}", 20_000 + i % 40_000)
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

// --------------------------------------------------------------- config ---

fn write_config(dir: &Path, a: &Args) -> std::io::Result<()> {
    use std::fmt::Write as _;
    std::fs::create_dir_all(dir.join("probes"))?;
    std::fs::create_dir_all(dir.join("alert-rules"))?;
    let fleet = Fleet::new(a.checks, &a.prefix, 0.0);
    let interval = humantime::format_duration(a.interval);
    let timeout = humantime::format_duration((a.interval / 2).min(Duration::from_secs(5)));
    let mut probes = format!(
        "# Generated by bench_ingest --write-config: {} TCP checks. The coordinator\n\
         # only serves and judges them; nothing listens on the targets.\n\n\
         [defaults]\ninterval = \"{interval}\"\ntimeout = \"{timeout}\"\nlabels = {{ team = \"bench\" }}\n\n",
        a.checks
    );
    for i in 0..a.checks {
        let _ = writeln!(
            probes,
            "[[check]]\nname = \"{}\"\ntarget = \"tcp://{}\"\n",
            fleet.name(i),
            target_addr(i)
        );
    }
    std::fs::write(dir.join("probes/bench.toml"), probes)?;
    std::fs::write(
        dir.join("alert-rules/bench.toml"),
        "# Generated by bench_ingest --write-config: every check, down in most regions.\n\
         [[rule]]\nname = \"bench-down\"\nkind = \"down\"\nquorum = \"majority\"\n\
         severity = \"page\"\n[rule.annotations]\n\
         summary = \"{{ check }} down in {{ down_regions }}/{{ regions }} regions ({{ reason }})\"\n",
    )?;
    let mut coord =
        String::from("# Generated by bench_ingest --write-config: one probe token per region.\n");
    for region in &a.regions {
        std::fs::write(
            dir.join(format!("{region}.token")),
            format!("{}\n", token()?),
        )?;
        let _ = writeln!(
            coord,
            "\n[[probe]]\nname = \"{}{region}\"\ntoken_file = \"{region}.token\"\nregion = \"{region}\"",
            a.prefix
        );
    }
    std::fs::write(dir.join("coordinator.toml"), coord)?;
    eprintln!(
        "wrote {}: {} checks every {interval}, 1 rule, {} probe tokens",
        dir.display(),
        a.checks,
        a.regions.len()
    );
    Ok(())
}

/// 32 hex characters from the kernel's random source.
fn token() -> std::io::Result<String> {
    use std::io::Read as _;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

// ----------------------------------------------------------------- HTTP ---

type Sender = SendRequest<Full<Bytes>>;

#[derive(Clone)]
struct Endpoint {
    authority: String,
    path: String,
    timeout: Duration,
}

/// One probe's connection: reconnects after a transport error.
struct Conn {
    ep: Arc<Endpoint>,
    token: Arc<str>,
    sender: Option<Sender>,
}

/// Why a batch was not acknowledged, as a short stable key for the report.
enum SendError {
    /// Worth retrying (transport, timeout, 5xx, 408, 429).
    Retry(String),
    /// The coordinator refused the batch for good (other 4xx, bad answer).
    Rejected(String),
}

impl Conn {
    async fn post(&mut self, body: Bytes) -> Result<BatchAck, SendError> {
        let timeout = self.ep.timeout;
        match tokio::time::timeout(timeout, self.post_inner(body)).await {
            Ok(r) => r,
            Err(_) => {
                self.sender = None;
                Err(SendError::Retry("timeout".into()))
            }
        }
    }

    async fn post_inner(&mut self, body: Bytes) -> Result<BatchAck, SendError> {
        if self.sender.is_none() {
            let tcp = TcpStream::connect(&self.ep.authority)
                .await
                .map_err(|e| SendError::Retry(format!("connect: {}", e.kind())))?;
            let _ = tcp.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| SendError::Retry(format!("handshake: {e}")))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("connected");
        let transport = |e: hyper::Error| SendError::Retry(format!("http: {e}"));
        let sent = async {
            sender.ready().await?;
            let req = Request::post(self.ep.path.as_str())
                .header(hyper::header::HOST, self.ep.authority.as_str())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(
                    hyper::header::AUTHORIZATION,
                    format!("Bearer {}", self.token),
                )
                .body(Full::new(body))
                .expect("valid request");
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), 64 * 1024).collect().await;
            Ok::<_, hyper::Error>((status, body))
        }
        .await;
        let (status, body) = match sent {
            Ok(x) => x,
            Err(e) => {
                self.sender = None;
                return Err(transport(e));
            }
        };
        let body = match body {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.sender = None;
                return Err(SendError::Retry(format!("body: {e}")));
            }
        };
        match status {
            200 => serde_json::from_slice::<BatchAck>(&body)
                .map_err(|e| SendError::Rejected(format!("bad ack: {e}"))),
            408 | 429 | 500..=599 => Err(SendError::Retry(format!("status {status}"))),
            _ => Err(SendError::Rejected(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
            ))),
        }
    }
}

// ---------------------------------------------------------------- stats ---

#[derive(Default)]
struct Stats {
    batches: u64,
    records: u64,
    accepted: u64,
    duplicates: u64,
    /// Records in batches that were never acknowledged.
    lost: u64,
    retries: u64,
    errors: BTreeMap<String, u64>,
    /// Milliseconds from sending a batch to its ack (acked batches only).
    request_ms: Vec<f64>,
    /// Paced: records that came due but were not sent by the end.
    behind: u64,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.batches += o.batches;
        self.records += o.records;
        self.accepted += o.accepted;
        self.duplicates += o.duplicates;
        self.lost += o.lost;
        self.retries += o.retries;
        self.behind += o.behind;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.request_ms.extend(o.request_ms);
    }
}

/// One probe: identity, sequence and connection.
struct Probe {
    region: String,
    region_idx: usize,
    probe_id: String,
    next_seq: u64,
    conn: Conn,
    stats: Stats,
}

const RETRIES: u32 = 3;

impl Probe {
    /// Sends one batch (retrying transient failures with the same `seq`s,
    /// as a real probe replays) and records the outcome.
    async fn send(&mut self, fleet: &Fleet, items: Vec<(usize, CheckResult)>) {
        let n = items.len() as u64;
        let results = items
            .into_iter()
            .map(|(i, result)| {
                let seq = self.next_seq;
                self.next_seq += 1;
                ResultRecord {
                    check: fleet.name(i),
                    region: self.region.clone(),
                    probe_id: self.probe_id.clone(),
                    seq,
                    result,
                }
            })
            .collect::<Vec<_>>();
        let batch = ResultBatch {
            probe_id: self.probe_id.clone(),
            region: self.region.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            results,
        };
        let body = Bytes::from(serde_json::to_vec(&batch).expect("serializable batch"));
        self.stats.batches += 1;
        self.stats.records += n;
        let mut attempt = 0;
        loop {
            let t0 = Instant::now();
            match self.conn.post(body.clone()).await {
                Ok(ack) => {
                    self.stats.request_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                    self.stats.accepted += ack.accepted;
                    self.stats.duplicates += ack.duplicates;
                    return;
                }
                Err(SendError::Retry(e)) if attempt < RETRIES => {
                    *self
                        .stats
                        .errors
                        .entry(format!("retried: {e}"))
                        .or_default() += 1;
                    self.stats.retries += 1;
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                Err(SendError::Retry(e) | SendError::Rejected(e)) => {
                    *self.stats.errors.entry(e).or_default() += 1;
                    self.stats.lost += n;
                    return;
                }
            }
        }
    }
}

// ------------------------------------------------------------------ run ---

async fn run(a: Args) -> i32 {
    let (authority, base_path) = split_url(&a.url).unwrap_or_else(|e| fail(&e));
    let ep = Arc::new(Endpoint {
        authority,
        path: format!("{}{RESULTS_PATH}", base_path.trim_end_matches('/')),
        timeout: a.timeout,
    });
    if a.regions.is_empty() || a.checks == 0 || a.batch == 0 {
        fail("--regions, --checks and --batch must not be empty or zero");
    }
    let tokens: Vec<Arc<str>> = match a.token_files.len() {
        0 => fail("--token-file is required"),
        1 => vec![read_token(&a.token_files[0]); a.regions.len()],
        n if n == a.regions.len() => a.token_files.iter().map(|p| read_token(p)).collect(),
        n => fail(&format!(
            "{n} --token-file for {} regions: give one, or one per region",
            a.regions.len()
        )),
    };
    let fleet = Arc::new(Fleet::new(a.checks, &a.prefix, a.failing));
    let run_id = chrono::Utc::now().timestamp_micros();
    let probe = |slot: Option<usize>, region_idx: usize| {
        let region = a.regions[region_idx].clone();
        let probe_id = match slot {
            None => format!("{}{region}-{run_id}", a.prefix),
            Some(s) => format!("{}{region}-{run_id}-{s}", a.prefix),
        };
        Probe {
            region,
            region_idx,
            probe_id,
            next_seq: 1,
            conn: Conn {
                ep: ep.clone(),
                token: tokens[region_idx].clone(),
                sender: None,
            },
            stats: Stats::default(),
        }
    };

    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut set = JoinSet::new();
    let (mode, target_rate) = if let Some(rate) = a.rate {
        if !rate.is_finite() || rate <= 0.0 {
            fail("--rate must be positive");
        }
        let per_region = rate / a.regions.len() as f64;
        for r in 0..a.regions.len() {
            let p = probe(None, r);
            let pace = Pace {
                per_region,
                tick: a.tick,
                duration: a.duration,
                drain: a.duration + a.drain,
                batch: a.batch,
            };
            set.spawn(paced(p, fleet.clone(), pace, start));
        }
        ("paced", Some(rate))
    } else {
        for s in 0..a.concurrency.max(1) {
            let p = probe(Some(s), s % a.regions.len());
            let first = s * a.checks / a.concurrency.max(1);
            set.spawn(flat_out(
                p,
                fleet.clone(),
                first,
                a.batch,
                start + a.duration,
            ));
        }
        ("max", None)
    };
    let mut stats = Stats::default();
    while let Some(s) = set.join_next().await {
        stats.merge(s.expect("probe task panicked"));
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;

    let interval = a.rate.map(|r| a.regions.len() as f64 * a.checks as f64 / r);
    let req = percentiles(&mut stats.request_ms);
    let summary = json!({
        "mode": mode,
        "url": a.url,
        "regions": a.regions,
        "checks": a.checks,
        "failing_checks": fleet.failing_count(),
        "batch": a.batch,
        "concurrency": (mode == "max").then_some(a.concurrency),
        "target_rate": target_rate,
        "interval_s": interval.map(|i| round(i, 3)),
        "duration_s": a.duration.as_secs_f64(),
        "wall_s": round(wall, 3),
        "batches": stats.batches,
        "records_sent": stats.records,
        "accepted": stats.accepted,
        "duplicates": stats.duplicates,
        "lost": stats.lost,
        "behind": stats.behind,
        "retries": stats.retries,
        "errors": stats.errors,
        "accepted_per_s": round(stats.accepted as f64 / wall.max(1e-9), 1),
        "request_ms": req,
        "client_cpu_s": round(cpu, 3),
        "client_threads": a.threads.max(1),
    });
    println!("{summary}");
    eprintln!(
        "{mode}: {} results in {} batches over {wall:.1}s from {} region(s); accepted {} ({:.0}/s), duplicates {}, lost {}, behind {}",
        stats.records,
        stats.batches,
        a.regions.len(),
        stats.accepted,
        stats.accepted as f64 / wall.max(1e-9),
        stats.duplicates,
        stats.lost,
        stats.behind,
    );
    if let Some(r) = target_rate {
        eprintln!(
            "  target {r}/s: every check once per {:.1}s per region; {} of {} checks failing everywhere",
            interval.unwrap_or(0.0),
            fleet.failing_count(),
            a.checks
        );
    }
    eprintln!(
        "  request latency ms: p50 {} p90 {} p99 {} max {}; client CPU {cpu:.2}s ({:.1}% of {} thread(s){})",
        req["p50"],
        req["p90"],
        req["p99"],
        req["max"],
        100.0 * cpu / wall.max(1e-9),
        a.threads.max(1),
        if cpu / wall.max(1e-9) > 0.9 * a.threads.max(1) as f64 {
            ": the client may be the bottleneck"
        } else {
            ""
        }
    );
    for (k, v) in &stats.errors {
        eprintln!("  error x{v}: {k}");
    }
    i32::from(stats.lost > 0 || stats.behind > 0)
}

struct Pace {
    per_region: f64,
    tick: Duration,
    duration: Duration,
    /// When to give up on a backlog, from the start.
    drain: Duration,
    batch: usize,
}

/// One region's probe at a fixed rate: run `j` (0, 1, ..) of the region is
/// check `j % checks`, scheduled at `start + j / per_region`, so every check
/// runs once per `checks / per_region`. Each tick sends what came due,
/// one batch at a time.
async fn paced(mut p: Probe, fleet: Arc<Fleet>, pace: Pace, start: Instant) -> Stats {
    let wall0 = chrono::Utc::now();
    let spacing = 1.0 / pace.per_region;
    let end = start + pace.duration;
    let give_up = start + pace.drain;
    let total = (pace.duration.as_secs_f64() * pace.per_region).floor() as u64;
    let mut next: u64 = 0;
    let mut tick = tokio::time::interval_at(start + pace.tick, pace.tick);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        let now = if Instant::now() >= end {
            end
        } else {
            tick.tick().await.min(end)
        };
        let due = (((now - start).as_secs_f64() * pace.per_region).floor() as u64).min(total);
        while next < due {
            if Instant::now() >= give_up {
                p.stats.behind += total - next;
                return p.stats;
            }
            let upto = due.min(next + pace.batch as u64);
            let items = (next..upto)
                .map(|j| {
                    let i = (j % fleet.checks as u64) as usize;
                    let run = j / fleet.checks as u64;
                    let at =
                        wall0 + chrono::TimeDelta::nanoseconds((j as f64 * spacing * 1e9) as i64);
                    (i, fleet.result(i, run, p.region_idx, at))
                })
                .collect();
            p.send(&fleet, items).await;
            next = upto;
        }
        if now >= end {
            return p.stats;
        }
    }
}

/// One in-flight slot of `--max`: builds and sends batch after batch of
/// consecutive checks (from `first`, wrapping) until `deadline`.
async fn flat_out(
    mut p: Probe,
    fleet: Arc<Fleet>,
    first: usize,
    batch: usize,
    deadline: Instant,
) -> Stats {
    let mut cursor = first as u64;
    while Instant::now() < deadline {
        let now = chrono::Utc::now();
        let items = (cursor..cursor + batch as u64)
            .map(|j| {
                let i = (j % fleet.checks as u64) as usize;
                (
                    i,
                    fleet.result(i, j / fleet.checks as u64, p.region_idx, now),
                )
            })
            .collect();
        cursor += batch as u64;
        p.send(&fleet, items).await;
    }
    p.stats
}

// ---------------------------------------------------------------- utils ---

fn read_token(path: &Path) -> Arc<str> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Arc::from(s.trim_end_matches(['\n', '\r'])),
        Ok(_) => fail(&format!("{}: empty token file", path.display())),
        Err(e) => fail(&format!("{}: {e}", path.display())),
    }
}

fn split_url(url: &str) -> Result<(String, String), String> {
    let u = url::Url::parse(url).map_err(|e| format!("--url {url}: {e}"))?;
    if u.scheme() != "http" {
        return Err(format!("--url {url}: only http:// is supported"));
    }
    let authority = format!(
        "{}:{}",
        u.host_str().unwrap_or("127.0.0.1"),
        u.port_or_known_default().unwrap_or(80)
    );
    Ok((authority, u.path().to_owned()))
}

/// utime + stime of this process, in seconds (/proc/self/stat).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clk_tck()
}

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

fn percentiles(v: &mut [f64]) -> serde_json::Value {
    if v.is_empty() {
        return json!({"n": 0, "p50": null, "p90": null, "p99": null, "max": null});
    }
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
        round(v[i.clamp(1, v.len()) - 1], 2)
    };
    json!({"n": v.len(), "p50": pct(50.0), "p90": pct(90.0), "p99": pct(99.0), "max": round(v[v.len() - 1], 2)})
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}
