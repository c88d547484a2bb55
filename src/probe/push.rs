//! Pushes every result to the coordinator in batches, through a bounded
//! on-disk spool, so that a coordinator outage (or a probe restart) loses
//! nothing but what the spool bound forces it to drop.
//!
//! * [`Pusher::result`] (the [`ResultSink`] side) only appends to a bounded
//!   in-memory queue and never blocks; when the queue is full the oldest
//!   queued result is dropped and counted.
//! * One background task moves queued results into the spool (assigning the
//!   sequence number), then sends the oldest unacknowledged records as a
//!   [`crate::wire::ResultBatch`] (`POST {coordinator}{RESULTS_PATH}`, bearer token) and
//!   forgets them once the coordinator acknowledges them. Batches hold at
//!   most `max_batch` records and [`MAX_BODY_BYTES`] of JSON and leave at
//!   the latest `max_delay` after their oldest record was spooled.
//! * Failures (connect error, timeout, 5xx, 408, 429, 401) keep the batch
//!   and retry it with exponential backoff and jitter; any other 4xx is a
//!   permanent rejection: that batch is dropped, logged and counted.
//!
//! # Spool format
//! The spool directory holds:
//! * `NNNNNNNNNNNN.jsonl` segments: append-only, one serialized
//!   [`ResultRecord`] per line, in sequence order. A segment is at most
//!   1/8 of `spool_max_bytes` (max 8 MiB) unless one record is bigger.
//!   Fully acknowledged segments are deleted; when the spool would exceed
//!   `spool_max_bytes` the oldest segments are deleted and their
//!   unacknowledged records counted as dropped.
//! * `acked`: the highest sequence number acknowledged (or rejected or
//!   dropped); everything at or below it is never sent again.
//! * `seq`: the sequence high-water mark. Numbers are reserved in blocks of
//!   [`SEQ_BLOCK`] and the reservation is made durable before any of them
//!   is used, so numbers are never reused across restarts (there are gaps).
//! * `probe_id`: the generated probe identity (unless given explicitly).
//! * `lock`: held with an exclusive lock while a pusher owns the directory.
//!
//! Lines that are not a valid record (a truncated last line after a crash)
//! are skipped and counted as dropped, never fatal.
//!
//! # Durability
//! Every result goes through the spool before it is sent (write-ahead).
//! Records moved from the queue are appended and `fdatasync`ed as one group
//! before any of them is sent, and the directory is fsynced when a segment
//! is created, so a result survives `kill -9` (and power loss) once it left
//! the in-memory queue, which happens within milliseconds. The `acked` file
//! is replaced by rename without fsync: losing an update only replays a
//! batch, which the coordinator recognizes by `(probe_id, seq)`.

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::check::CheckResult;
use crate::probe::{CheckDef, ResultSink};
use crate::resolve::HostResolver;
use crate::wire::{BatchAck, RESULTS_PATH, ResultRecord};

/// Default maximum records per batch.
pub const DEFAULT_MAX_BATCH: usize = 500;
/// Default time a record may wait for its batch to fill.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(1);
/// Default bound of the on-disk spool.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default timeout of one POST (connect, request and response).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default first retry delay; doubled per consecutive failure.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Default cap of the retry delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Default number of results held in memory on their way to the spool.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
/// Upper bound of one batch's encoded body (a single bigger record is sent alone).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Sequence numbers reserved (durably) at a time.
pub const SEQ_BLOCK: u64 = 1000;

/// Largest coordinator answer read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Largest spool segment.
const MAX_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// How long `shutdown` waits past its deadline for the final spool write.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where and how to push. Build with [`PushOptions::new`] and adjust fields.
#[derive(Clone)]
pub struct PushOptions {
    /// Base URL of the coordinator (`http` or `https`); [`RESULTS_PATH`] is appended.
    pub coordinator: url::Url,
    /// Bearer token; never logged or `Debug`-printed.
    pub token: String,
    pub region: String,
    /// Directory of the spool (created if missing, locked while in use).
    pub spool_dir: PathBuf,
    /// Probe identity; `None` uses (or generates once) the one stored in the spool dir.
    pub probe_id: Option<String>,
    pub max_batch: usize,
    pub max_delay: Duration,
    pub spool_max_bytes: u64,
    pub request_timeout: Duration,
    /// Extra PEM CA certificates trusted for an `https` coordinator, besides the web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// First retry delay after a failed push; doubles per failure up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Results held in memory between the scheduler and the spool.
    pub queue_capacity: usize,
}

impl PushOptions {
    /// Options with the defaults for everything but the essentials.
    pub fn new(
        coordinator: url::Url,
        token: impl Into<String>,
        region: impl Into<String>,
        spool_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            coordinator,
            token: token.into(),
            region: region.into(),
            spool_dir: spool_dir.into(),
            probe_id: None,
            max_batch: DEFAULT_MAX_BATCH,
            max_delay: DEFAULT_MAX_DELAY,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            ca_file: None,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
        }
    }
}

impl fmt::Debug for PushOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushOptions")
            .field("coordinator", &redacted_url(&self.coordinator))
            .field("token", &"<redacted>")
            .field("region", &self.region)
            .field("spool_dir", &self.spool_dir)
            .field("probe_id", &self.probe_id)
            .field("max_batch", &self.max_batch)
            .field("max_delay", &self.max_delay)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("ca_file", &self.ca_file)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_max", &self.backoff_max)
            .field("queue_capacity", &self.queue_capacity)
            .finish()
    }
}

/// Counters of the pusher, for `/metrics` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Records acknowledged by the coordinator (accepted or duplicate).
    pub sent_total: u64,
    /// Records in the spool not yet acknowledged.
    pub spooled: u64,
    /// Size of the spool's segment files.
    pub spool_bytes: u64,
    /// Records lost: queue or spool full, unreadable spool lines, results
    /// reported after shutdown, spool write errors.
    pub dropped_total: u64,
    /// Failed push attempts (each retried later).
    pub failures_total: u64,
    /// Records in batches the coordinator rejected permanently (4xx).
    pub rejected_total: u64,
    /// Wall-clock time of the last acknowledged batch.
    pub last_success_unix: Option<i64>,
}

/// Pushes results to the coordinator. Cheap to clone; call
/// [`Pusher::shutdown`] once to stop it.
#[derive(Clone)]
pub struct Pusher {
    shared: Arc<Shared>,
}

struct Shared {
    probe_id: String,
    queue: Mutex<Queue>,
    queue_capacity: usize,
    wake: Notify,
    stats: Mutex<PushStats>,
    shutdown: watch::Sender<Option<Instant>>,
    task: Mutex<Option<JoinHandle<()>>>,
    drop_warned: AtomicBool,
}

struct Queue {
    items: VecDeque<Pending>,
    closed: bool,
}

struct Pending {
    check: String,
    result: CheckResult,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn stats(&self, f: impl FnOnce(&mut PushStats)) {
        f(&mut lock(&self.stats));
    }
}

// === impl Pusher ===

impl Pusher {
    /// Opens (or creates) and locks the spool, then spawns the background
    /// task on the current tokio runtime. Fails if the spool directory
    /// cannot be created or is in use, or if the options are invalid.
    pub fn start(opts: PushOptions) -> io::Result<Pusher> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        if opts.max_batch == 0 || opts.queue_capacity == 0 || opts.spool_max_bytes == 0 {
            return Err(invalid(
                "max_batch, queue_capacity and spool_max_bytes must be greater than zero".into(),
            ));
        }
        let transport = Transport::new(&opts)?;
        let spool = Spool::open(&opts.spool_dir, opts.spool_max_bytes, opts.probe_id.clone())?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| io::Error::other(format!("no tokio runtime: {e}")))?;
        let (shutdown, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            probe_id: spool.probe_id.clone(),
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                closed: false,
            }),
            queue_capacity: opts.queue_capacity,
            wake: Notify::new(),
            stats: Mutex::new(PushStats::default()),
            shutdown,
            task: Mutex::new(None),
            drop_warned: AtomicBool::new(false),
        });
        let mut worker = Worker {
            shared: shared.clone(),
            transport: Arc::new(transport),
            spool: Some(spool),
            region: opts.region,
            max_batch: opts.max_batch,
            max_delay: opts.max_delay,
            backoff_base: opts.backoff_base,
            backoff_max: opts.backoff_max,
            outcome: OutcomeDelta::default(),
        };
        worker.publish();
        tracing::info!(
            probe_id = %shared.probe_id,
            coordinator = %redacted_url(&opts.coordinator),
            spool = %opts.spool_dir.display(),
            "pushing results"
        );
        let task = runtime.spawn(worker.run());
        *lock(&shared.task) = Some(task);
        Ok(Pusher { shared })
    }

    /// The stable identity of this probe's spool.
    pub fn probe_id(&self) -> &str {
        &self.shared.probe_id
    }

    pub fn stats(&self) -> PushStats {
        *lock(&self.shared.stats)
    }

    /// Sends what it can until `deadline` from now, then returns with every
    /// result not acknowledged written to the spool (a restart replays it).
    /// Results reported afterwards (through clones) are dropped and counted.
    pub async fn shutdown(self, deadline: Duration) {
        let at = Instant::now() + deadline;
        self.shared.shutdown.send_replace(Some(at));
        let task = lock(&self.shared.task).take();
        let Some(mut task) = task else { return };
        if tokio::time::timeout_at(at + SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            tracing::error!("pusher did not stop in time; results still queued in memory are lost");
            task.abort();
        }
    }
}

impl ResultSink for Pusher {
    fn result(&self, def: &CheckDef, result: &CheckResult) {
        let s = &self.shared;
        let dropped = {
            let mut q = lock(&s.queue);
            if q.closed {
                true
            } else {
                let full = q.items.len() >= s.queue_capacity;
                if full {
                    q.items.pop_front();
                }
                q.items.push_back(Pending {
                    check: def.name.clone(),
                    result: result.clone(),
                });
                full
            }
        };
        if dropped {
            s.stats(|st| st.dropped_total += 1);
            if !s.drop_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "result queue full or pusher stopped: dropping results (see dropped_total)"
                );
            }
        }
        s.wake.notify_one();
    }

    fn removed(&self, _def: &CheckDef) {}
}

// === impl Worker ===

/// The background task: owns the spool and the connection.
struct Worker {
    shared: Arc<Shared>,
    transport: Arc<Transport>,
    /// `None` only while a blocking spool operation runs.
    spool: Option<Spool>,
    region: String,
    max_batch: usize,
    max_delay: Duration,
    backoff_base: Duration,
    backoff_max: Duration,
    /// Counted with the next publication, so that `sent`/`rejected` and
    /// `spooled` change together.
    outcome: OutcomeDelta,
}

/// Counters of a finished batch, published with the spool's.
#[derive(Default)]
struct OutcomeDelta {
    sent: u64,
    rejected: u64,
    success_at: Option<i64>,
}

impl Worker {
    fn spool(&self) -> &Spool {
        self.spool
            .as_ref()
            .expect("spool is back after each operation")
    }

    /// Runs `f` on the spool on the blocking pool (file I/O and fsync must
    /// not stall the runtime), then publishes the spool's counters.
    async fn blocking<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Spool) -> T + Send + 'static,
    ) -> T {
        let mut spool = self.spool.take().expect("one spool operation at a time");
        let (spool, out) = tokio::task::spawn_blocking(move || {
            let out = f(&mut spool);
            (spool, out)
        })
        .await
        .expect("spool operation panicked");
        self.spool = Some(spool);
        self.publish();
        out
    }

    fn publish(&mut self) {
        let spool = self.spool.as_mut().expect("spool present");
        let dropped = std::mem::take(&mut spool.newly_dropped);
        let (spooled, bytes) = (spool.unacked(), spool.total_bytes);
        let delta = std::mem::take(&mut self.outcome);
        self.shared.stats(|st| {
            st.sent_total += delta.sent;
            st.rejected_total += delta.rejected;
            if delta.success_at.is_some() {
                st.last_success_unix = delta.success_at;
            }
            st.dropped_total += dropped;
            st.spooled = spooled;
            st.spool_bytes = bytes;
        });
    }

    /// Moves queued results into the spool. Returns how many were written.
    async fn drain(&mut self) -> usize {
        let items: Vec<Pending> = lock(&self.shared.queue).items.drain(..).collect();
        if items.is_empty() {
            return 0;
        }
        let n = items.len();
        let (probe_id, region) = (self.shared.probe_id.clone(), self.region.clone());
        match self
            .blocking(move |s| s.append(items, &probe_id, &region))
            .await
        {
            Ok(()) => n,
            Err((e, lost)) => {
                tracing::error!(error = %e, lost, "spool write failed: results dropped");
                self.shared.stats(|st| st.dropped_total += lost);
                n - lost as usize
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.backoff_max);
        // Equal jitter: half fixed, half random, so probes that lost the
        // coordinator together do not come back in lockstep.
        let r = RandomState::new().hash_one(attempt) % 1_000_000;
        exp / 2 + (exp / 2).mul_f64(r as f64 / 1_000_000.0)
    }

    async fn run(mut self) {
        let mut shutdown = self.shared.shutdown.subscribe();
        let mut attempt: u32 = 0;
        let mut retry_at: Option<Instant> = None;
        // When the oldest record not yet in a batch was spooled; a backlog
        // found at start is due at once.
        let mut oldest: Option<Instant> = self.spool().has_pending().then(|| {
            Instant::now()
                .checked_sub(self.max_delay)
                .unwrap_or_else(Instant::now)
        });
        loop {
            if self.drain().await > 0 && oldest.is_none() {
                oldest = Some(Instant::now());
            }
            let deadline = *shutdown.borrow_and_update();
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
            if !self.spool().has_pending() {
                oldest = None;
                if deadline.is_some() {
                    break;
                }
                tokio::select! {
                    _ = self.shared.wake.notified() => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let due = match retry_at {
                Some(t) => t,
                None if deadline.is_some() || self.spool().unacked() >= self.max_batch as u64 => {
                    now
                }
                None => oldest.unwrap_or(now) + self.max_delay,
            };
            if due > now {
                let wake_at = deadline.map_or(due, |d| d.min(due));
                tokio::select! {
                    _ = tokio::time::sleep_until(wake_at) => {}
                    _ = self.shared.wake.notified() => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }

            let max_batch = self.max_batch;
            let batch = match self
                .blocking(move |s| s.read_batch(max_batch, MAX_BODY_BYTES))
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "spool read failed; retrying");
                    attempt += 1;
                    retry_at = Some(Instant::now() + self.backoff(attempt));
                    continue;
                }
            };
            if batch.lines.is_empty() {
                // Only unreadable lines: skip them.
                self.blocking(move |s| s.ack(&batch)).await;
                continue;
            }
            let backlog_beyond = self.spool().unacked() > batch.lines.len() as u64;
            let body = batch.encode(&self.shared.probe_id, &self.region);
            let transport = self.transport.clone();
            let post = transport.post(body);
            tokio::pin!(post);
            let mut spooled_during: Option<Instant> = None;
            let outcome = loop {
                tokio::select! {
                    biased;
                    o = &mut post => break Some(o),
                    _ = until_deadline(&mut shutdown) => break None,
                    _ = self.shared.wake.notified() => {
                        if self.drain().await > 0 && spooled_during.is_none() {
                            spooled_during = Some(Instant::now());
                        }
                    }
                }
            };
            let n = batch.lines.len() as u64;
            let (first, last) = (batch.first_seq, batch.last_seq);
            match outcome {
                None => break,
                Some(Outcome::Acked(ack)) => {
                    self.outcome.sent = n;
                    self.outcome.success_at = Some(chrono::Utc::now().timestamp());
                    self.blocking(move |s| s.ack(&batch)).await;
                    if ack.accepted + ack.duplicates != n {
                        tracing::debug!(
                            records = n,
                            accepted = ack.accepted,
                            duplicates = ack.duplicates,
                            "coordinator acknowledged a different count"
                        );
                    }
                    if attempt > 0 {
                        tracing::info!("coordinator reachable again; replaying spool");
                    }
                    attempt = 0;
                    retry_at = None;
                    oldest = if backlog_beyond {
                        Some(
                            Instant::now()
                                .checked_sub(self.max_delay)
                                .unwrap_or_else(Instant::now),
                        )
                    } else {
                        spooled_during
                    };
                }
                Some(Outcome::Rejected(status)) => {
                    tracing::error!(
                        status = status.as_u16(),
                        records = n,
                        first_seq = first,
                        last_seq = last,
                        "coordinator rejected a batch permanently; dropping it"
                    );
                    self.outcome.rejected = n;
                    self.blocking(move |s| s.ack(&batch)).await;
                    attempt = 0;
                    retry_at = None;
                }
                Some(Outcome::Retry { why, retry_after }) => {
                    attempt += 1;
                    let mut delay = self.backoff(attempt);
                    if let Some(ra) = retry_after {
                        delay = delay.max(ra.min(self.backoff_max));
                    }
                    retry_at = Some(Instant::now() + delay);
                    self.shared.stats(|st| st.failures_total += 1);
                    tracing::warn!(
                        error = %why,
                        attempt,
                        retry_in_ms = delay.as_millis() as u64,
                        spooled = self.spool().unacked(),
                        "pushing results failed; spooling and retrying"
                    );
                }
            }
        }
        // Stop accepting results, then put everything still queued on disk.
        lock(&self.shared.queue).closed = true;
        self.drain().await;
        let left = self.spool().unacked();
        tracing::info!(
            unacknowledged = left,
            "pusher stopped; unacknowledged results stay spooled"
        );
    }
}

/// Completes when the shutdown deadline (once set) passes.
async fn until_deadline(rx: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *rx.borrow_and_update();
        match deadline {
            Some(d) => return tokio::time::sleep_until(d).await,
            None => {
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }
}

// === impl Transport ===

/// What became of one POST.
enum Outcome {
    Acked(BatchAck),
    /// Keep the batch and try again later.
    Retry {
        why: String,
        retry_after: Option<Duration>,
    },
    /// Drop the batch: the coordinator will never take it.
    Rejected(StatusCode),
}

/// One HTTP/1.1 connection to the coordinator, kept alive between batches
/// and re-established after any error.
struct Transport {
    /// Origin-form request target (path and query).
    target: http::Uri,
    host_header: HeaderValue,
    connect_host: String,
    port: u16,
    auth: HeaderValue,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// hickory, caching for the TTL: the coordinator's name is looked up
    /// again only when a connection has to be re-established.
    resolver: HostResolver,
    timeout: Duration,
    conn: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl Transport {
    fn new(opts: &PushOptions) -> io::Result<Transport> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let url = &opts.coordinator;
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            s => return Err(invalid(format!("coordinator: unsupported scheme {s:?}"))),
        };
        let host = url
            .host_str()
            .ok_or_else(|| invalid("coordinator: URL has no host".into()))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| invalid("coordinator: URL has no port".into()))?;
        let connect_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let host_header = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let host_header = HeaderValue::from_str(&host_header)
            .map_err(|e| invalid(format!("coordinator host: {e}")))?;
        let mut target = format!("{}{}", url.path().trim_end_matches('/'), RESULTS_PATH);
        if let Some(q) = url.query() {
            target = format!("{target}?{q}");
        }
        let target: http::Uri = target
            .parse()
            .map_err(|e| invalid(format!("coordinator path: {e}")))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", opts.token))
            .map_err(|_| invalid("token contains characters not allowed in a header".into()))?;
        auth.set_sensitive(true);
        let tls = if https {
            let name = ServerName::try_from(connect_host.clone())
                .map_err(|e| invalid(format!("coordinator host: {e}")))?;
            Some((
                TlsConnector::from(Arc::new(tls_config(opts.ca_file.as_deref())?)),
                name,
            ))
        } else {
            None
        };
        Ok(Transport {
            target,
            host_header,
            connect_host,
            port,
            auth,
            tls,
            resolver: HostResolver::system(),
            timeout: opts.request_timeout,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    async fn post(self: Arc<Self>, body: Bytes) -> Outcome {
        match tokio::time::timeout(self.timeout, self.exchange(body)).await {
            Ok(o) => o,
            Err(_) => Outcome::Retry {
                why: format!("no answer within {:?}", self.timeout),
                retry_after: None,
            },
        }
    }

    async fn exchange(&self, body: Bytes) -> Outcome {
        let retry = |why: String| Outcome::Retry {
            why,
            retry_after: None,
        };
        // Taken out: a cancelled or failed exchange leaves no connection behind.
        let mut slot = self.conn.lock().await;
        let mut cached = slot.take().filter(|s| !s.is_closed());
        if let Some(s) = &mut cached
            && s.ready().await.is_err()
        {
            cached = None;
        }
        let mut sender = match cached {
            Some(s) => s,
            None => match self.connect().await {
                Ok(s) => s,
                Err(e) => return retry(format!("connect: {e}")),
            },
        };
        let request = Request::post(self.target.clone())
            .header(HOST, self.host_header.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("varde-probe/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .expect("request parts are valid");
        let response = match sender.send_request(request).await {
            Ok(r) => r,
            Err(e) => return retry(format!("request: {e}")),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = match Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => return retry(format!("reading response: {e}")),
        };
        *slot = Some(sender);
        drop(slot);
        match status.as_u16() {
            200..=299 => Outcome::Acked(serde_json::from_slice(&body).unwrap_or_default()),
            401 => {
                tracing::error!(
                    "coordinator answered 401: token rejected; results stay spooled until it is accepted"
                );
                Outcome::Retry {
                    why: "401 token rejected".into(),
                    retry_after: None,
                }
            }
            408 | 429 | 500..=599 => Outcome::Retry {
                why: format!("status {status}"),
                retry_after,
            },
            400..=499 => Outcome::Rejected(status),
            _ => retry(format!("unexpected status {status}")),
        }
    }

    async fn connect(&self) -> io::Result<SendRequest<Full<Bytes>>> {
        let tcp = self
            .resolver
            .connect(&self.connect_host, self.port, self.timeout)
            .await?;
        match &self.tls {
            None => handshake(tcp).await,
            Some((connector, name)) => handshake(connector.connect(name.clone(), tcp).await?).await,
        }
    }
}

async fn handshake<T>(io: T) -> io::Result<SendRequest<Full<Bytes>>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "coordinator connection ended");
        }
    });
    Ok(sender)
}

pub(crate) fn tls_config(ca_file: Option<&Path>) -> io::Result<ClientConfig> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let bad = |e: String| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: {e}", path.display()),
            )
        };
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificates found".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The URL without credentials, for logs.
fn redacted_url(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

// === impl Spool ===

/// A position in the spool: byte offset in a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pos {
    segment: u64,
    offset: u64,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    len: u64,
    /// Valid records in the segment not yet acknowledged.
    unacked: u64,
}

/// Records read for one POST.
struct Batch {
    /// Each a serialized [`ResultRecord`], without the newline.
    lines: Vec<Vec<u8>>,
    first_seq: u64,
    last_seq: u64,
    /// Just past the last line read (records or skipped lines).
    end: Pos,
    /// Records per segment, to keep the segments' counts.
    per_segment: Vec<(u64, u64)>,
    /// Unreadable lines passed over.
    corrupt: u64,
}

impl Batch {
    /// The [`crate::wire::ResultBatch`] JSON, reusing the spooled lines.
    fn encode(&self, probe_id: &str, region: &str) -> Bytes {
        let head = serde_json::json!({
            "probe_id": probe_id,
            "region": region,
            "version": env!("CARGO_PKG_VERSION"),
        })
        .to_string();
        let size = head.len() + self.lines.iter().map(|l| l.len() + 1).sum::<usize>() + 16;
        let mut body = Vec::with_capacity(size);
        body.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        body.extend_from_slice(b",\"results\":[");
        for (i, line) in self.lines.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(line);
        }
        body.extend_from_slice(b"]}");
        Bytes::from(body)
    }
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

struct Spool {
    dir: PathBuf,
    probe_id: String,
    max_bytes: u64,
    segment_max: u64,
    segments: VecDeque<Segment>,
    /// Open for appending: the last segment, created by this process.
    active: Option<File>,
    next_segment: u64,
    /// Everything before is acknowledged, rejected or dropped.
    acked: Pos,
    acked_seq: u64,
    next_seq: u64,
    /// Durably reserved: sequence numbers up to here may be used.
    reserved: u64,
    total_bytes: u64,
    /// Dropped since the worker last published the counters.
    newly_dropped: u64,
    _lock: File,
}

impl Spool {
    fn open(dir: &Path, max_bytes: u64, probe_id: Option<String>) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        // std's advisory lock (flock); the toolchain is newer than the
        // manifest's rust-version.
        #[allow(clippy::incompatible_msrv)]
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("spool {} is in use by another pusher", dir.display()),
            ),
            fs::TryLockError::Error(e) => e,
        })?;

        let probe_id = match probe_id {
            Some(id) => id,
            None => match read_trimmed(&dir.join("probe_id"))? {
                Some(id) if !id.is_empty() => id,
                _ => {
                    let id = generate_probe_id();
                    write_durably(dir, "probe_id", id.as_bytes())?;
                    id
                }
            },
        };
        let num = |name: &str| -> io::Result<u64> {
            Ok(read_trimmed(&dir.join(name))?
                .and_then(|s| s.parse().ok())
                .unwrap_or(0))
        };
        let reserved = num("seq")?;
        let acked_seq = num("acked")?;

        let mut ids = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name
                .strip_suffix(".jsonl")
                .filter(|s| s.len() == 12)
                .and_then(|s| s.parse::<u64>().ok())
            {
                ids.push(id);
            } else if name.ends_with(".tmp") {
                let _ = fs::remove_file(dir.join(&*name));
            }
        }
        ids.sort_unstable();

        let mut segments = VecDeque::new();
        let mut max_seq = 0;
        let mut total_bytes = 0;
        let mut acked = Pos {
            segment: ids.first().copied().unwrap_or(1),
            offset: 0,
        };
        let mut seen_unacked = false;
        for &id in &ids {
            let data = fs::read(segment_path(dir, id))?;
            let mut unacked = 0;
            let mut offset = 0;
            for line in data.split_inclusive(|&b| b == b'\n') {
                offset += line.len() as u64;
                let parsed = line
                    .strip_suffix(b"\n")
                    .and_then(|l| serde_json::from_slice::<SeqOnly>(l).ok());
                if let Some(r) = parsed {
                    max_seq = max_seq.max(r.seq);
                    if r.seq > acked_seq {
                        unacked += 1;
                        seen_unacked = true;
                    }
                }
                if !seen_unacked {
                    acked = Pos {
                        segment: id,
                        offset,
                    };
                }
            }
            total_bytes += data.len() as u64;
            segments.push_back(Segment {
                id,
                len: data.len() as u64,
                unacked,
            });
        }
        let next_segment = ids.last().map_or(1, |l| l + 1);
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            probe_id,
            max_bytes,
            segment_max: (max_bytes / 8).clamp(1, MAX_SEGMENT_BYTES),
            segments,
            active: None,
            next_segment,
            acked,
            acked_seq,
            next_seq: reserved.max(max_seq).max(acked_seq) + 1,
            reserved,
            total_bytes,
            newly_dropped: 0,
            _lock: lock,
        };
        spool.remove_acked_segments();
        Ok(spool)
    }

    fn unacked(&self) -> u64 {
        self.segments.iter().map(|s| s.unacked).sum()
    }

    /// Whether anything after the acknowledged position remains (records or
    /// unreadable lines still to be skipped).
    fn has_pending(&self) -> bool {
        self.segments.iter().any(|s| {
            Pos {
                segment: s.id,
                offset: s.len,
            } > self.acked
        })
    }

    /// Appends results as records with new sequence numbers and syncs them.
    /// On error returns how many results were lost.
    fn append(
        &mut self,
        items: Vec<Pending>,
        probe_id: &str,
        region: &str,
    ) -> Result<(), (io::Error, u64)> {
        let n = items.len() as u64;
        let last = self.next_seq + n - 1;
        if last > self.reserved {
            let reserve = last + SEQ_BLOCK;
            write_durably(&self.dir, "seq", reserve.to_string().as_bytes()).map_err(|e| (e, n))?;
            self.reserved = reserve;
        }
        let mut written = 0;
        for item in items {
            let record = ResultRecord {
                check: item.check,
                region: region.to_string(),
                probe_id: probe_id.to_string(),
                seq: self.next_seq,
                result: item.result,
            };
            self.next_seq += 1;
            let mut line = match serde_json::to_vec(&record) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "result not serializable; dropped");
                    self.newly_dropped += 1;
                    continue;
                }
            };
            line.push(b'\n');
            if let Err(e) = self.write_line(&line) {
                return Err((e, n - written));
            }
            written += 1;
        }
        if let Some(f) = &self.active {
            f.sync_data().map_err(|e| (e, 0))?;
        }
        Ok(())
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if len > self.max_bytes {
            tracing::warn!(bytes = len, "result larger than the whole spool; dropped");
            self.newly_dropped += 1;
            return Ok(());
        }
        while self.total_bytes + len > self.max_bytes && !self.segments.is_empty() {
            self.drop_oldest_segment();
        }
        let rotate = match (&self.active, self.segments.back()) {
            (Some(_), Some(seg)) => seg.len > 0 && seg.len + len > self.segment_max,
            _ => true,
        };
        if rotate {
            self.new_segment()?;
        }
        let file = self.active.as_mut().expect("segment open");
        let seg = self.segments.back_mut().expect("segment exists");
        if let Err(e) = file.write_all(line) {
            // Never leave half a line for the next record to join.
            let _ = file.set_len(seg.len);
            self.active = None;
            return Err(e);
        }
        seg.len += len;
        seg.unacked += 1;
        self.total_bytes += len;
        Ok(())
    }

    fn new_segment(&mut self) -> io::Result<()> {
        if let Some(f) = self.active.take() {
            f.sync_data()?;
        }
        let id = self.next_segment;
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(segment_path(&self.dir, id))?;
        sync_dir(&self.dir)?;
        self.next_segment += 1;
        self.segments.push_back(Segment {
            id,
            len: 0,
            unacked: 0,
        });
        self.active = Some(file);
        Ok(())
    }

    fn drop_oldest_segment(&mut self) {
        let Some(seg) = self.segments.pop_front() else {
            return;
        };
        if self.segments.is_empty() {
            self.active = None;
        }
        remove_segment(&self.dir, seg.id);
        self.total_bytes -= seg.len;
        self.newly_dropped += seg.unacked;
        if seg.unacked > 0 {
            tracing::warn!(
                records = seg.unacked,
                "spool full: dropped the oldest results"
            );
        }
        if self.acked.segment <= seg.id {
            self.acked = Pos {
                segment: self.segments.front().map_or(self.next_segment, |s| s.id),
                offset: 0,
            };
        }
    }

    /// Deletes segments that hold nothing unacknowledged.
    fn remove_acked_segments(&mut self) {
        while let Some(front) = self.segments.front() {
            let done = front.id < self.acked.segment
                || (front.id == self.acked.segment && self.acked.offset >= front.len);
            if !done {
                break;
            }
            let seg = self.segments.pop_front().expect("front exists");
            if self.segments.is_empty() {
                self.active = None;
            }
            remove_segment(&self.dir, seg.id);
            self.total_bytes -= seg.len;
            if self.acked.segment == seg.id {
                self.acked = Pos {
                    segment: self.segments.front().map_or(self.next_segment, |s| s.id),
                    offset: 0,
                };
            }
        }
    }

    /// Reads the oldest unacknowledged records: at most `max_records` and
    /// `max_body` bytes (at least one record).
    fn read_batch(&self, max_records: usize, max_body: usize) -> io::Result<Batch> {
        let mut batch = Batch {
            lines: Vec::new(),
            first_seq: 0,
            last_seq: 0,
            end: self.acked,
            per_segment: Vec::new(),
            corrupt: 0,
        };
        let mut bytes = 0;
        for seg in self.segments.iter().filter(|s| s.id >= self.acked.segment) {
            let start = if seg.id == self.acked.segment {
                self.acked.offset
            } else {
                0
            };
            if start >= seg.len {
                continue;
            }
            let mut file = File::open(segment_path(&self.dir, seg.id))?;
            file.seek(SeekFrom::Start(start))?;
            let mut reader = BufReader::new(file.take(seg.len - start));
            let mut offset = start;
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = reader.read_until(b'\n', &mut line)?;
                if n == 0 {
                    break;
                }
                let record = line
                    .strip_suffix(b"\n")
                    .and_then(|l| serde_json::from_slice::<ResultRecord>(l).ok());
                match record {
                    Some(r) if r.seq > self.acked_seq => {
                        if !batch.lines.is_empty() && bytes + n > max_body {
                            return Ok(batch);
                        }
                        bytes += n;
                        if batch.lines.is_empty() {
                            batch.first_seq = r.seq;
                        }
                        batch.last_seq = r.seq;
                        batch.lines.push(line[..n - 1].to_vec());
                        match batch.per_segment.last_mut() {
                            Some((id, count)) if *id == seg.id => *count += 1,
                            _ => batch.per_segment.push((seg.id, 1)),
                        }
                    }
                    Some(_) => {}
                    None => {
                        tracing::warn!(
                            segment = seg.id,
                            offset,
                            "skipping an unreadable spool line"
                        );
                        batch.corrupt += 1;
                    }
                }
                offset += n as u64;
                batch.end = Pos {
                    segment: seg.id,
                    offset,
                };
                if batch.lines.len() >= max_records {
                    return Ok(batch);
                }
            }
        }
        Ok(batch)
    }

    /// Forgets a batch the coordinator acknowledged (or rejected).
    fn ack(&mut self, batch: &Batch) {
        self.newly_dropped += batch.corrupt;
        if batch.end > self.acked {
            self.acked = batch.end;
        }
        for &(id, n) in &batch.per_segment {
            if let Some(seg) = self.segments.iter_mut().find(|s| s.id == id) {
                seg.unacked = seg.unacked.saturating_sub(n);
            }
        }
        self.remove_acked_segments();
        if batch.last_seq > self.acked_seq {
            self.acked_seq = batch.last_seq;
            if let Err(e) = write_file(&self.dir, "acked", self.acked_seq.to_string().as_bytes()) {
                // Harmless: a restart would replay what the coordinator has.
                tracing::warn!(error = %e, "recording the acknowledged position failed");
            }
        }
    }
}

/// Deletes a segment file; one already gone is fine.
fn remove_segment(dir: &Path, id: u64) {
    if let Err(e) = fs::remove_file(segment_path(dir, id))
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::error!(error = %e, segment = id, "removing spool segment failed");
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:012}.jsonl"))
}

fn read_trimmed(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces `dir/name` atomically (write, rename), without fsync.
fn write_file(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    fs::write(&tmp, data)?;
    fs::rename(&tmp, dir.join(name))
}

/// Replaces `dir/name` atomically and durably.
fn write_durably(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A random-looking id: hash of host name, process, time and a random key.
fn generate_probe_id() -> String {
    let mut h = Sha256::new();
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    h.update(host.trim().as_bytes());
    h.update(std::process::id().to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(now.as_nanos().to_le_bytes());
    h.update(RandomState::new().hash_one(now).to_le_bytes());
    let digest = h.finalize();
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("p-{hex}")
}
