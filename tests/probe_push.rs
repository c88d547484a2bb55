//! The pusher against a real in-process coordinator that stores records by
//! `(probe_id, seq)` and can be told to fail, drop connections or be down.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use varde::check::{CheckKind, CheckResult, CheckSpec, Phases, TcpOptions};
use varde::probe::push::{PushOptions, Pusher};
use varde::probe::{CheckDef, ResultSink};
use varde::wire::{BatchAck, RESULTS_PATH, ResultBatch};

mod support;
use support::{Leaf, Pki, Reply, Server};

const TOKEN: &str = "s3cret-token";

// === test coordinator ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Ok,
    /// Answer every batch with this status.
    Status(u16),
    /// Close connections without answering.
    Drop,
}

#[derive(Default)]
struct Seen {
    /// Stored records: (probe_id, seq) → check name.
    stored: BTreeMap<(String, u64), String>,
    /// Seqs in the order they were first stored.
    arrivals: Vec<u64>,
    duplicates: u64,
    /// Sizes of batches answered 200.
    batch_sizes: Vec<usize>,
    /// Authorization headers received.
    auth: Vec<Option<String>>,
    /// Batches answered with an error status.
    refused: u64,
}

struct State {
    mode: Mode,
    /// Answer the next batch with this status, once.
    reject_next: Option<u16>,
    seen: Seen,
}

struct Coordinator {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: Option<JoinHandle<()>>,
}

impl Coordinator {
    /// A coordinator that is down: the address is reserved but nobody listens.
    fn down() -> Coordinator {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        Coordinator {
            addr,
            state: Arc::new(Mutex::new(State {
                mode: Mode::Ok,
                reject_next: None,
                seen: Seen::default(),
            })),
            task: None,
        }
    }

    async fn up() -> Coordinator {
        let mut c = Coordinator::down();
        c.start().await;
        c
    }

    async fn start(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        let state = self.state.clone();
        self.task = Some(tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if state.lock().unwrap().mode == Mode::Drop {
                    drop(stream);
                    continue;
                }
                let state = state.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }));
    }

    /// Stops listening and closes every connection.
    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    fn url(&self) -> url::Url {
        format!("http://{}", self.addr).parse().unwrap()
    }

    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.state.lock().unwrap().seen)
    }

    fn stored(&self) -> usize {
        self.seen(|s| s.stored.len())
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug)]
struct Hangup;
impl std::fmt::Display for Hangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hang up")
    }
}
impl std::error::Error for Hangup {}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Hangup> {
    let auth = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|_| Hangup)?
        .to_bytes();
    let mut st = state.lock().unwrap();
    st.seen.auth.push(auth.clone());
    let status = match st.mode {
        Mode::Drop => return Err(Hangup),
        Mode::Status(s) => Some(s),
        Mode::Ok if path != RESULTS_PATH => Some(404),
        Mode::Ok if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) => Some(401),
        Mode::Ok => st.reject_next.take(),
    };
    if let Some(s) = status {
        st.seen.refused += 1;
        return Ok(Response::builder()
            .status(s)
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    let batch: ResultBatch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(_) => {
            return Ok(Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(Full::new(Bytes::new()))
                .unwrap());
        }
    };
    let mut ack = BatchAck::default();
    st.seen.batch_sizes.push(batch.results.len());
    for r in batch.results {
        assert_eq!(r.probe_id, batch.probe_id);
        if st
            .seen
            .stored
            .insert((r.probe_id.clone(), r.seq), r.check.clone())
            .is_none()
        {
            st.seen.arrivals.push(r.seq);
            ack.accepted += 1;
        } else {
            st.seen.duplicates += 1;
            ack.duplicates += 1;
        }
    }
    Ok(Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&ack).unwrap(),
    ))))
}

// === helpers ===

fn def(name: &str) -> CheckDef {
    CheckDef {
        name: name.into(),
        target: "tcp://127.0.0.1:1".into(),
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(1),
        labels: Default::default(),
        regions: vec![],
        depends_on: vec![],
        spec: CheckSpec::Tcp(TcpOptions {
            address: "127.0.0.1:1".into(),
            ..Default::default()
        }),
    }
}

fn result(i: usize) -> CheckResult {
    CheckResult {
        kind: CheckKind::Tcp,
        target: "tcp://127.0.0.1:1".into(),
        success: !i.is_multiple_of(3),
        reason: None,
        message: format!("run {i}"),
        started_at: chrono::Utc::now(),
        duration: Duration::from_millis(3),
        phases: Phases::default(),
        tls: None,
        http: None,
        dns: None,
        tcp: None,
    }
}

fn opts(coordinator: &Coordinator, dir: &Path) -> PushOptions {
    let mut o = PushOptions::new(coordinator.url(), TOKEN, "eu-west", dir);
    o.max_delay = Duration::from_millis(20);
    o.backoff_base = Duration::from_millis(10);
    o.backoff_max = Duration::from_millis(80);
    o.request_timeout = Duration::from_secs(2);
    o
}

fn push(p: &Pusher, range: std::ops::Range<usize>) {
    let d = def("web");
    for i in range {
        p.result(&d, &result(i));
    }
}

/// Polls `cond` until it holds; fails the test after `limit`.
async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    v.sort();
    v
}

fn assert_strictly_increasing(seqs: &[u64]) {
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "not in order: {seqs:?}"
    );
}

const LIMIT: Duration = Duration::from_secs(5);

// === tests ===

/// The headline of the issue: an outage of the coordinator loses nothing,
/// doubles nothing and reorders nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_arrive_once_in_order_after_coordinator_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::up().await;
    let mut o = opts(&coord, dir.path());
    o.max_batch = 50;
    let p = Pusher::start(o).unwrap();

    push(&p, 0..40);
    wait_for("first results", LIMIT, || coord.stored() == 40).await;

    coord.set_mode(Mode::Status(503));
    push(&p, 40..200);
    wait_for("failures", LIMIT, || p.stats().failures_total >= 3).await;
    coord.set_mode(Mode::Drop);
    push(&p, 200..300);
    wait_for("more failures", LIMIT, || p.stats().failures_total >= 6).await;
    assert!(p.stats().spooled > 0);

    coord.set_mode(Mode::Ok);
    push(&p, 300..350);
    wait_for("all results", LIMIT, || coord.stored() == 350).await;

    let (arrivals, dups) = coord.seen(|s| (s.arrivals.clone(), s.duplicates));
    assert_eq!(arrivals.len(), 350);
    assert_strictly_increasing(&arrivals);
    assert_eq!(dups, 0, "no batch was acknowledged twice");
    wait_for("spool emptied", LIMIT, || p.stats().spooled == 0).await;
    let st = p.stats();
    assert_eq!(st.spool_bytes, 0);
    assert_eq!(st.sent_total, 350);
    assert_eq!(st.dropped_total, 0);
    assert_eq!(st.rejected_total, 0);
    assert!(st.last_success_unix.is_some());
    assert!(
        segment_files(dir.path()).is_empty(),
        "acked segments deleted"
    );
    p.shutdown(Duration::from_secs(1)).await;
}

/// Unacknowledged results survive a restart and are replayed exactly once;
/// the new process continues the sequence instead of reusing numbers.
#[tokio::test]
async fn spool_is_replayed_after_restart_without_reusing_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let mut coord = Coordinator::down();

    let p = Pusher::start(opts(&coord, dir.path())).unwrap();
    let id = p.probe_id().to_string();
    push(&p, 0..30);
    wait_for("spooled", LIMIT, || p.stats().spooled == 30).await;
    p.shutdown(Duration::from_millis(100)).await;
    assert!(!segment_files(dir.path()).is_empty());

    let p = Pusher::start(opts(&coord, dir.path())).unwrap();
    assert_eq!(p.probe_id(), id, "probe id is stored in the spool");
    assert_eq!(p.stats().spooled, 30);
    push(&p, 30..50);
    wait_for("spooled", LIMIT, || p.stats().spooled == 50).await;

    coord.start().await;
    wait_for("replay", LIMIT, || coord.stored() == 50).await;
    let (arrivals, keys, dups) = coord.seen(|s| {
        (
            s.arrivals.clone(),
            s.stored.keys().cloned().collect::<Vec<_>>(),
            s.duplicates,
        )
    });
    assert_strictly_increasing(&arrivals);
    assert!(keys.iter().all(|(pid, _)| *pid == id));
    assert_eq!(dups, 0);
    p.shutdown(Duration::from_secs(1)).await;

    // A third run numbers after everything used before.
    let max_before = *arrivals.last().unwrap();
    let p = Pusher::start(opts(&coord, dir.path())).unwrap();
    push(&p, 50..51);
    wait_for("new result", LIMIT, || coord.stored() == 51).await;
    let last = coord.seen(|s| *s.arrivals.last().unwrap());
    assert!(
        last > max_before,
        "seq {last} reused (max before {max_before})"
    );
    p.shutdown(Duration::from_secs(1)).await;
}

/// A full spool drops the oldest results, counts them, keeps the newest,
/// and its files stay within the bound.
#[tokio::test]
async fn full_spool_drops_oldest_and_keeps_newest() {
    let dir = tempfile::tempdir().unwrap();
    let mut coord = Coordinator::down();
    let mut o = opts(&coord, dir.path());
    o.spool_max_bytes = 32 * 1024;
    let p = Pusher::start(o).unwrap();

    let total = 1000;
    for chunk in (0..total).step_by(100) {
        push(&p, chunk..chunk + 100);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_for("all spooled or dropped", LIMIT, || {
        let st = p.stats();
        st.spooled + st.dropped_total == total as u64
    })
    .await;
    let st = p.stats();
    assert!(st.dropped_total > 0, "{st:?}");
    assert!(st.spool_bytes <= 32 * 1024, "{st:?}");
    let on_disk: u64 = segment_files(dir.path())
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert!(on_disk <= 32 * 1024, "{on_disk} bytes on disk");

    coord.start().await;
    let kept = st.spooled as usize;
    wait_for("replay", LIMIT, || coord.stored() == kept).await;
    let arrivals = coord.seen(|s| s.arrivals.clone());
    assert_strictly_increasing(&arrivals);
    // The newest survive: a contiguous run ending with the last result.
    let last = *arrivals.last().unwrap();
    let first = arrivals[0];
    assert_eq!(last - first + 1, kept as u64, "kept results are contiguous");
    let names = coord.seen(|s| s.stored.len());
    assert_eq!(names, kept);
    p.shutdown(Duration::from_secs(1)).await;
}

/// The bearer token is sent; a 401 keeps results spooled until the token
/// is accepted, and never loses them.
#[tokio::test]
async fn token_is_sent_and_401_keeps_results() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::up().await;
    coord.set_mode(Mode::Status(401));
    let p = Pusher::start(opts(&coord, dir.path())).unwrap();
    push(&p, 0..20);
    wait_for("401s", LIMIT, || p.stats().failures_total >= 3).await;
    assert_eq!(p.stats().spooled, 20);
    assert_eq!(p.stats().rejected_total, 0);

    coord.set_mode(Mode::Ok);
    wait_for("delivery", LIMIT, || coord.stored() == 20).await;
    let auth = coord.seen(|s| s.auth.clone());
    assert!(
        auth.iter()
            .all(|a| a.as_deref() == Some(&*format!("Bearer {TOKEN}")))
    );
    p.shutdown(Duration::from_secs(1)).await;
}

/// A permanent rejection (400) drops that batch only, is counted, and
/// the pusher carries on.
#[tokio::test]
async fn rejected_batch_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::up().await;
    coord.state.lock().unwrap().reject_next = Some(400);
    let p = Pusher::start(opts(&coord, dir.path())).unwrap();
    push(&p, 0..5);
    wait_for("rejection", LIMIT, || p.stats().rejected_total == 5).await;
    push(&p, 5..12);
    wait_for("later results", LIMIT, || coord.stored() == 7).await;
    wait_for("acks counted", LIMIT, || p.stats().sent_total == 7).await;
    let st = p.stats();
    assert_eq!(st.rejected_total, 5);
    assert_eq!(st.sent_total, 7);
    assert_eq!(st.failures_total, 0);
    assert_eq!(st.spooled, 0);
    p.shutdown(Duration::from_secs(1)).await;
}

/// After a crash mid-write the last line of a segment may be cut short:
/// it is skipped and counted, and everything else is delivered.
#[tokio::test]
async fn truncated_last_line_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let mut coord = Coordinator::down();
    let p = Pusher::start(opts(&coord, dir.path())).unwrap();
    push(&p, 0..10);
    wait_for("spooled", LIMIT, || p.stats().spooled == 10).await;
    p.shutdown(Duration::from_millis(50)).await;

    let last = segment_files(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&last).unwrap();
    data.extend_from_slice(br#"{"check":"web","region":"eu-west","probe_id":"x","se"#);
    std::fs::write(&last, data).unwrap();

    let p = Pusher::start(opts(&coord, dir.path())).unwrap();
    push(&p, 10..15);
    coord.start().await;
    wait_for("delivery", LIMIT, || coord.stored() == 15).await;
    wait_for("corrupt line counted", LIMIT, || {
        p.stats().dropped_total == 1
    })
    .await;
    assert_strictly_increasing(&coord.seen(|s| s.arrivals.clone()));
    p.shutdown(Duration::from_secs(1)).await;
}

/// Batches never exceed `max_batch`; a backlog goes out in full batches and
/// a lone result leaves after `max_delay` without waiting for company.
#[tokio::test]
async fn batches_respect_max_batch_and_max_delay() {
    let dir = tempfile::tempdir().unwrap();
    let mut coord = Coordinator::down();
    let mut o = opts(&coord, dir.path());
    o.max_batch = 7;
    let p = Pusher::start(o).unwrap();
    push(&p, 0..50);
    wait_for("spooled", LIMIT, || p.stats().spooled == 50).await;
    coord.start().await;
    wait_for("delivery", LIMIT, || coord.stored() == 50).await;
    let sizes = coord.seen(|s| s.batch_sizes.clone());
    assert!(sizes.iter().all(|&n| n <= 7), "{sizes:?}");
    assert_eq!(sizes.iter().filter(|&&n| n == 7).count(), 7, "{sizes:?}");

    push(&p, 50..51);
    wait_for("lone result", Duration::from_secs(2), || {
        coord.stored() == 51
    })
    .await;
    p.shutdown(Duration::from_secs(1)).await;
}

/// `shutdown` returns by its deadline even when the coordinator is down,
/// with everything on disk; results reported afterwards are counted as dropped.
#[tokio::test]
async fn shutdown_keeps_everything_spooled_within_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::down();
    let p = Pusher::start(opts(&coord, dir.path())).unwrap();
    let other = p.clone();
    push(&p, 0..25);
    let started = std::time::Instant::now();
    p.shutdown(Duration::from_millis(200)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(other.stats().spooled, 25);
    push(&other, 25..26);
    assert_eq!(other.stats().dropped_total, 1);
    let lines: usize = segment_files(dir.path())
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().lines().count())
        .sum();
    assert_eq!(lines, 25);
}

#[tokio::test]
async fn spool_dir_is_locked_and_token_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::down();
    let p = Pusher::start(opts(&coord, dir.path())).unwrap();
    let err = Pusher::start(opts(&coord, dir.path()))
        .err()
        .expect("locked");
    assert!(err.to_string().contains("in use"), "{err}");
    assert!(!format!("{:?}", opts(&coord, dir.path())).contains(TOKEN));
    p.shutdown(Duration::from_millis(50)).await;
    // Released on shutdown.
    let p = Pusher::start(opts(&coord, dir.path())).unwrap();
    p.shutdown(Duration::from_millis(50)).await;
}

/// An `https` coordinator whose certificate chains to an extra CA file is
/// trusted; without the CA file it is not, and results stay spooled.
#[tokio::test]
async fn https_coordinator_trusted_through_ca_file() {
    let pki = Pki::new();
    let server = Server::tls(pki.identity(Leaf::Valid), |_| {
        Reply::ok(r#"{"accepted":3,"duplicates":0}"#)
    })
    .await;
    let url: url::Url = format!("https://localhost:{}", server.port())
        .parse()
        .unwrap();
    let coord = Coordinator::down();

    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&coord, dir.path());
    o.coordinator = url.clone();
    let p = Pusher::start(o).unwrap();
    push(&p, 0..3);
    wait_for("untrusted failures", LIMIT, || {
        p.stats().failures_total >= 2
    })
    .await;
    assert_eq!(p.stats().spooled, 3);
    p.shutdown(Duration::from_millis(50)).await;

    let mut o = opts(&coord, dir.path());
    o.coordinator = url;
    o.ca_file = Some(pki.ca_file());
    let p = Pusher::start(o).unwrap();
    wait_for("delivery over https", LIMIT, || p.stats().sent_total == 3).await;
    let req = server.requests().pop().unwrap();
    assert_eq!(req.path, RESULTS_PATH);
    assert_eq!(req.header("authorization"), Some(format!("Bearer {TOKEN}")));
    let batch: ResultBatch = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(batch.results.len(), 3);
    assert_eq!(batch.probe_id, p.probe_id());
    p.shutdown(Duration::from_millis(50)).await;
}

/// A probe killed without `shutdown` (its runtime dropped, as close to
/// `kill -9` as a test gets) loses nothing that reached the spool.
#[test]
fn spooled_results_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let mut coord = Coordinator::down();

    let first = rt();
    first.block_on(async {
        let p = Pusher::start(opts(&coord, dir.path())).unwrap();
        push(&p, 0..40);
        wait_for("spooled", LIMIT, || p.stats().spooled == 40).await;
        std::mem::forget(p);
    });
    drop(first);

    let second = rt();
    second.block_on(async {
        coord.start().await;
        let p = Pusher::start(opts(&coord, dir.path())).unwrap();
        wait_for("replay after crash", LIMIT, || coord.stored() == 40).await;
        assert_strictly_increasing(&coord.seen(|s| s.arrivals.clone()));
        p.shutdown(Duration::from_millis(100)).await;
        coord.stop();
    });
}
