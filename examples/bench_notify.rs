//! Pieces of `bench/notify.sh`, the delivery benchmark (see bench/README.md).
//!
//! * `write-config DIR` — a coordinator config: `--checks` TCP checks
//!   (`nb-00000`..; nothing listens, the coordinator only judges results),
//!   one `down` rule with `quorum = "any"` (one region's second consecutive
//!   failure fires), a `fast` webhook channel and, with `--slow-port`, a
//!   `slow` one, both HMAC-signed (`secret_env`), one route to a policy
//!   whose single level names every channel as a contact, and a probe token
//!   (`eu.token`) for region `eu`.
//! * `receiver` — a webhook receiver (hyper, current-thread runtime, its
//!   own process): answers 200 after `--delay`, verifies the signature,
//!   and writes one JSON line per request to `--out`: receipt time, the
//!   `Idempotency-Key`, the check, `items[0].incident.at` and
//!   `receipt − at`, and how many requests it held at once when this one
//!   arrived. Exits when `--expect` distinct keys have arrived and then
//!   `--linger` passed without a new request (so late duplicates are still
//!   counted), or at `--max-wait` (exit 1). Prints a JSON summary.
//! * `push` — plays a probe of region `eu`: `--prime` sends one failing
//!   result for every check (no incident yet: `fail_after` is 2); then
//!   either `--rate R` sends the second failing result check by check, one
//!   per POST, R per second, or `--batch B` sends them B checks per POST
//!   back to back. One JSON line per check to `--out`: when the POST that
//!   fired it was sent and acknowledged.
//!
//! Times are wall-clock microseconds since the epoch (every process on one
//! machine, one clock), so they can be compared across processes.

use std::collections::HashSet;
use std::convert::Infallible;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};
use varde::check::{CheckKind, CheckResult, Phases, Reason};
use varde::notify::channel::webhook::verify_signature;
use varde::wire::{BatchAck, RESULTS_PATH, ResultBatch, ResultRecord};

const REGION: &str = "eu";
const PREFIX: &str = "nb-";

#[derive(Parser, Debug)]
#[command(about = "Delivery benchmark pieces for varde (bench/notify.sh)")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write a coordinator config directory.
    WriteConfig {
        dir: PathBuf,
        #[arg(long)]
        checks: usize,
        #[arg(long)]
        fast_port: u16,
        #[arg(long)]
        slow_port: Option<u16>,
        /// `max_in_flight` of both channels.
        #[arg(long, default_value_t = 4)]
        max_in_flight: usize,
        /// Environment variable holding the HMAC secret.
        #[arg(long, default_value = "VARDE_BENCH_HOOK_SECRET")]
        secret_env: String,
        #[arg(long, default_value = "60s")]
        interval: String,
    },
    /// Run a webhook receiver.
    Receiver {
        /// Written with the port once listening.
        #[arg(long)]
        port_file: PathBuf,
        /// One JSON line per request.
        #[arg(long)]
        out: PathBuf,
        /// Answer each request after this long.
        #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
        delay: Duration,
        /// Distinct idempotency keys to wait for.
        #[arg(long)]
        expect: usize,
        /// After the last expected key, keep listening this long.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        linger: Duration,
        #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
        max_wait: Duration,
        /// Environment variable with the HMAC secret (signatures are
        /// verified when it is set).
        #[arg(long, default_value = "VARDE_BENCH_HOOK_SECRET")]
        secret_env: String,
    },
    /// Push failing results as a probe of region `eu`.
    Push {
        #[arg(long)]
        url: String,
        #[arg(long)]
        token_file: PathBuf,
        #[arg(long)]
        checks: usize,
        /// One failing result per check, in batches of 500.
        #[arg(long, conflicts_with_all = ["rate", "batch"])]
        prime: bool,
        /// Checks fired per second, one per POST.
        #[arg(long)]
        rate: Option<f64>,
        /// Checks per POST, back to back.
        #[arg(long)]
        batch: Option<usize>,
        /// One JSON line per check.
        #[arg(long)]
        out: Option<PathBuf>,
        /// `probe_id` (the same across --prime and the firing run, so
        /// that `seq` keeps increasing).
        #[arg(long, default_value = "nb-eu")]
        probe_id: String,
        /// First `seq` to use.
        #[arg(long, default_value_t = 1)]
        seq: u64,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match args.cmd {
        Cmd::WriteConfig {
            dir,
            checks,
            fast_port,
            slow_port,
            max_in_flight,
            secret_env,
            interval,
        } => match write_config(
            &dir,
            checks,
            fast_port,
            slow_port,
            max_in_flight,
            &secret_env,
            &interval,
        ) {
            Ok(()) => 0,
            Err(e) => fail(&format!("write-config {}: {e}", dir.display())),
        },
        Cmd::Receiver {
            port_file,
            out,
            delay,
            expect,
            linger,
            max_wait,
            secret_env,
        } => rt.block_on(receiver(RecvOpts {
            port_file,
            out,
            delay,
            expect,
            linger,
            max_wait,
            secret: std::env::var(&secret_env).ok().filter(|s| !s.is_empty()),
        })),
        Cmd::Push {
            url,
            token_file,
            checks,
            prime,
            rate,
            batch,
            out,
            probe_id,
            seq,
            timeout,
        } => {
            let mode = match (prime, rate, batch) {
                (true, _, _) => Mode::Prime,
                (false, Some(r), None) if r.is_finite() && r > 0.0 => Mode::Rate(r),
                (false, None, Some(b)) if b > 0 => Mode::Batch(b),
                _ => fail("push: give one of --prime, --rate R (> 0) or --batch B (> 0)"),
            };
            rt.block_on(push(PushOpts {
                url,
                token: read_token(&token_file),
                checks,
                mode,
                out,
                probe_id,
                seq,
                timeout,
            }))
        }
    };
    std::process::exit(code);
}

fn fail(msg: &str) -> ! {
    eprintln!("bench_notify: {msg}");
    std::process::exit(2);
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

fn check_name(i: usize) -> String {
    format!("{PREFIX}{i:05}")
}

// --------------------------------------------------------------- config ---

fn write_config(
    dir: &Path,
    checks: usize,
    fast_port: u16,
    slow_port: Option<u16>,
    max_in_flight: usize,
    secret_env: &str,
    interval: &str,
) -> std::io::Result<()> {
    use std::fmt::Write as _;
    std::fs::create_dir_all(dir.join("probes"))?;
    std::fs::create_dir_all(dir.join("alert-rules"))?;
    let mut probes = format!(
        "# Generated by bench_notify write-config: {checks} TCP checks, judged only.\n\n\
         [defaults]\ninterval = \"{interval}\"\ntimeout = \"5s\"\nlabels = {{ team = \"bench\" }}\n\n"
    );
    for i in 0..checks {
        let _ = writeln!(
            probes,
            "[[check]]\nname = \"{}\"\ntarget = \"tcp://127.0.0.1:{}\"\n",
            check_name(i),
            20_000 + i % 40_000
        );
    }
    std::fs::write(dir.join("probes/bench.toml"), probes)?;
    let channel = |name: &str, port: u16| {
        format!(
            "[[channel]]\nname = \"{name}\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hook\"\n\
             secret_env = \"{secret_env}\"\nmax_in_flight = {max_in_flight}\n\n"
        )
    };
    let mut rules = String::from(
        "# Generated by bench_notify write-config.\n\
         [[rule]]\nname = \"nb-down\"\nkind = \"down\"\nquorum = \"any\"\nseverity = \"page\"\n\n",
    );
    rules += &channel("fast", fast_port);
    let mut contacts = vec!["\"fast\""];
    if let Some(p) = slow_port {
        rules += &channel("slow", p);
        contacts.push("\"slow\"");
    }
    let _ = write!(
        rules,
        "[[route]]\npolicy = \"page\"\n\n[[policy]]\nname = \"page\"\n[[policy.level]]\ncontacts = [{}]\n",
        contacts.join(", ")
    );
    std::fs::write(dir.join("alert-rules/bench.toml"), rules)?;
    std::fs::write(
        dir.join(format!("{REGION}.token")),
        format!("{}\n", token()?),
    )?;
    std::fs::write(
        dir.join("coordinator.toml"),
        format!(
            "# Generated by bench_notify write-config.\n\
             [[probe]]\nname = \"nb-{REGION}\"\ntoken_file = \"{REGION}.token\"\nregion = \"{REGION}\"\n"
        ),
    )?;
    Ok(())
}

fn token() -> std::io::Result<String> {
    use std::io::Read as _;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn read_token(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_owned(),
        Ok(_) => fail(&format!("{}: empty token file", path.display())),
        Err(e) => fail(&format!("{}: {e}", path.display())),
    }
}

// ------------------------------------------------------------- receiver ---

struct RecvOpts {
    port_file: PathBuf,
    out: PathBuf,
    delay: Duration,
    expect: usize,
    linger: Duration,
    max_wait: Duration,
    secret: Option<String>,
}

#[derive(Default)]
struct Seen {
    lines: Vec<String>,
    keys: HashSet<String>,
    requests: usize,
    duplicates: usize,
    bad_signatures: usize,
    unreadable: usize,
    max_in_flight: usize,
    first_us: Option<i64>,
    last_us: Option<i64>,
    /// When the last request arrived (for --linger).
    last_arrival: Option<Instant>,
}

struct RecvState {
    delay: Duration,
    secret: Option<String>,
    in_flight: AtomicUsize,
    seen: Mutex<Seen>,
}

async fn receiver(o: RecvOpts) -> i32 {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => fail(&format!("bind: {e}")),
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let tmp = o.port_file.with_extension("tmp");
    if let Err(e) =
        std::fs::write(&tmp, format!("{port}\n")).and_then(|()| std::fs::rename(&tmp, &o.port_file))
    {
        fail(&format!("{}: {e}", o.port_file.display()));
    }
    let st = Arc::new(RecvState {
        delay: o.delay,
        secret: o.secret.clone(),
        in_flight: AtomicUsize::new(0),
        seen: Mutex::new(Seen::default()),
    });
    let accept = {
        let st = st.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(&st, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        })
    };
    let start = Instant::now();
    let mut done_at: Option<Instant> = None;
    let ok = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let s = st.seen.lock().unwrap_or_else(|p| p.into_inner());
        if s.keys.len() >= o.expect {
            let since = s.last_arrival.map_or(Duration::ZERO, |t| t.elapsed());
            let d = *done_at.get_or_insert_with(Instant::now);
            if since >= o.linger && d.elapsed() >= o.linger {
                break true;
            }
        }
        if start.elapsed() >= o.max_wait {
            break false;
        }
    };
    accept.abort();
    let s = st.seen.lock().unwrap_or_else(|p| p.into_inner());
    let write = std::fs::File::create(&o.out).and_then(|mut f| {
        for l in &s.lines {
            writeln!(f, "{l}")?;
        }
        Ok(())
    });
    if let Err(e) = write {
        fail(&format!("{}: {e}", o.out.display()));
    }
    let summary = json!({
        "expect": o.expect,
        "requests": s.requests,
        "distinct_keys": s.keys.len(),
        "duplicates": s.duplicates,
        "bad_signatures": s.bad_signatures,
        "unreadable": s.unreadable,
        "max_in_flight": s.max_in_flight,
        "first_us": s.first_us,
        "last_us": s.last_us,
        "delay_ms": o.delay.as_secs_f64() * 1e3,
        "complete": ok,
    });
    println!("{summary}");
    if !ok {
        eprintln!(
            "bench_notify receiver: only {} of {} keys within {:?}",
            s.keys.len(),
            o.expect,
            o.max_wait
        );
        return 1;
    }
    0
}

async fn handle(st: &RecvState, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let recv_us = now_us();
    let held = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let key = header("idempotency-key");
    let ts = header("x-varde-timestamp");
    let sig = header("x-varde-signature");
    let body = Limited::new(req.into_body(), 1 << 20)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let signed = st
        .secret
        .as_ref()
        .is_none_or(|s| verify_signature(s.as_bytes(), &ts, &body, &sig));
    let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let item = &doc["items"][0];
    let check = item["incident"]["check"].as_str().unwrap_or("").to_owned();
    let at_us = item["incident"]["at"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp_micros());
    let items = doc["items"].as_array().map_or(0, Vec::len);
    {
        let mut s = st.seen.lock().unwrap_or_else(|p| p.into_inner());
        s.requests += 1;
        s.max_in_flight = s.max_in_flight.max(held);
        s.first_us = Some(s.first_us.map_or(recv_us, |f| f.min(recv_us)));
        s.last_us = Some(s.last_us.map_or(recv_us, |l| l.max(recv_us)));
        s.last_arrival = Some(Instant::now());
        if !signed {
            s.bad_signatures += 1;
        }
        if at_us.is_none() || key.is_empty() {
            s.unreadable += 1;
        }
        if !s.keys.insert(key.clone()) {
            s.duplicates += 1;
        }
        let line = json!({
            "key": key,
            "check": check,
            "kind": item["kind"],
            "items": items,
            "recv_us": recv_us,
            "at_us": at_us,
            "latency_ms": at_us.map(|a| (recv_us - a) as f64 / 1e3),
            "in_flight": held,
            "signed": signed,
        });
        s.lines.push(line.to_string());
    }
    if !st.delay.is_zero() {
        tokio::time::sleep(st.delay).await;
    }
    st.in_flight.fetch_sub(1, Ordering::SeqCst);
    Response::builder()
        .status(200)
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("response")
}

// ----------------------------------------------------------------- push ---

enum Mode {
    Prime,
    Rate(f64),
    Batch(usize),
}

struct PushOpts {
    url: String,
    token: String,
    checks: usize,
    mode: Mode,
    out: Option<PathBuf>,
    probe_id: String,
    seq: u64,
    timeout: Duration,
}

struct Client {
    authority: String,
    path: String,
    token: String,
    timeout: Duration,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    /// POSTs one batch; retries a transport error or 5xx twice (same
    /// body, so the same `seq`s: a replay is harmless).
    async fn post(&mut self, body: Bytes) -> Result<BatchAck, String> {
        let mut last = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            match tokio::time::timeout(self.timeout, self.post_once(body.clone())).await {
                Ok(Ok(ack)) => return Ok(ack),
                Ok(Err((e, retry))) => {
                    self.sender = None;
                    if !retry {
                        return Err(e);
                    }
                    last = e;
                }
                Err(_) => {
                    self.sender = None;
                    last = "timeout".into();
                }
            }
        }
        Err(last)
    }

    async fn post_once(&mut self, body: Bytes) -> Result<BatchAck, (String, bool)> {
        if self.sender.is_none() {
            let tcp = TcpStream::connect(&self.authority)
                .await
                .map_err(|e| (format!("connect: {e}"), true))?;
            let _ = tcp.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| (format!("handshake: {e}"), true))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("connected");
        sender
            .ready()
            .await
            .map_err(|e| (format!("http: {e}"), true))?;
        let req = Request::post(self.path.as_str())
            .header(hyper::header::HOST, self.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .body(Full::new(body))
            .expect("valid request");
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| (format!("http: {e}"), true))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| (format!("body: {e}"), true))?
            .to_bytes();
        match status {
            200 => serde_json::from_slice(&body).map_err(|e| (format!("bad ack: {e}"), false)),
            s => Err((
                format!(
                    "status {s}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
                s >= 500 || s == 429,
            )),
        }
    }
}

fn failing(started_at: DateTime<Utc>) -> CheckResult {
    CheckResult {
        kind: CheckKind::Tcp,
        target: "127.0.0.1:9".into(),
        success: false,
        reason: Some(Reason::ConnectRefused),
        message: "connect: Connection refused (os error 111)".into(),
        started_at,
        duration: Duration::from_micros(200),
        phases: Phases {
            connect: Duration::from_micros(190),
            ..Phases::default()
        },
        tls: None,
        http: None,
        dns: None,
        tcp: None,
    }
}

async fn push(o: PushOpts) -> i32 {
    let u = match url::Url::parse(&o.url) {
        Ok(u) if u.scheme() == "http" => u,
        _ => fail(&format!("--url {}: expected http://HOST:PORT", o.url)),
    };
    let mut client = Client {
        authority: format!(
            "{}:{}",
            u.host_str().unwrap_or("127.0.0.1"),
            u.port_or_known_default().unwrap_or(80)
        ),
        path: format!("{}{RESULTS_PATH}", u.path().trim_end_matches('/')),
        token: o.token.clone(),
        timeout: o.timeout,
        sender: None,
    };
    let per_post = match o.mode {
        Mode::Prime => 500,
        Mode::Rate(_) => 1,
        Mode::Batch(b) => b,
    };
    let mut tick = match o.mode {
        Mode::Rate(r) => {
            let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            Some(t)
        }
        _ => None,
    };
    let mut seq = o.seq;
    let mut lines = Vec::with_capacity(o.checks);
    let (mut accepted, mut errors) = (0u64, 0usize);
    let start = Instant::now();
    let mut i = 0;
    while i < o.checks {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        let upto = (i + per_post).min(o.checks);
        // The prime result is 2 s in the past; the firing one is now (and
        // always after the prime, which is what the verdict orders by).
        let at = match o.mode {
            Mode::Prime => Utc::now() - TimeDelta::seconds(2),
            _ => Utc::now(),
        };
        let results = (i..upto)
            .map(|c| {
                seq += 1;
                ResultRecord {
                    check: check_name(c),
                    region: REGION.into(),
                    probe_id: o.probe_id.clone(),
                    seq: seq - 1,
                    result: failing(at),
                }
            })
            .collect();
        let batch = ResultBatch {
            probe_id: o.probe_id.clone(),
            region: REGION.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            results,
        };
        let body = Bytes::from(serde_json::to_vec(&batch).expect("serializable"));
        let posted = now_us();
        match client.post(body).await {
            Ok(ack) => accepted += ack.accepted,
            Err(e) => {
                errors += 1;
                eprintln!("bench_notify push: checks {i}..{upto}: {e}");
            }
        }
        let acked = now_us();
        for c in i..upto {
            lines.push(
                json!({"check": check_name(c), "posted_us": posted, "acked_us": acked}).to_string(),
            );
        }
        i = upto;
    }
    let wall = start.elapsed().as_secs_f64();
    if let Some(path) = &o.out {
        let write = std::fs::File::create(path).and_then(|mut f| {
            for l in &lines {
                writeln!(f, "{l}")?;
            }
            Ok(())
        });
        if let Err(e) = write {
            fail(&format!("{}: {e}", path.display()));
        }
    }
    println!(
        "{}",
        json!({"checks": o.checks, "accepted": accepted, "errors": errors, "wall_s": wall, "next_seq": seq})
    );
    i32::from(errors > 0 || accepted != o.checks as u64)
}
