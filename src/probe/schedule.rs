//! The probe scheduler: runs each check every interval, forever, never
//! overlapping itself, spread over the interval so that many checks at the
//! same interval do not fire together.
//!
//! # Slots
//! A check's runs happen at *slots* on a grid anchored at the Unix epoch:
//! slot `k` is at wall time `k * interval + offset + jitter(k)` (see
//! [`slot_time`]). The [`offset`] is a hash of the check name and the region,
//! so a restarted probe keeps the same phase and probes in different regions
//! do not synchronise; the jitter is a small deterministic hash of the slot
//! number, below [`max_jitter`] (`min(interval / 100, 1s)`). Offsets and
//! jitter are whole milliseconds, the resolution of Tokio's timer, so the
//! schedule is exact under paused time.
//!
//! Wall time is read once, in [`Scheduler::new`] (or injected with
//! [`SchedulerOptions::epoch`]), and paired with Tokio's monotonic clock;
//! after that only `tokio::time::Instant` is used, so a wall-clock step does
//! not disturb running schedules and tests can pause time.
//!
//! # Missed slots
//! * A run still going when its next slot comes skips that slot
//!   ([`SkipReason::StillRunning`], one report per slot); the next run is at
//!   the first slot at or after the moment the run finished.
//! * Runs share a bounded number of concurrency permits. **Overload rule:** a
//!   run may wait for a permit until its check's *next* slot; each slot that
//!   passes while still waiting is lost and reported as
//!   [`SkipReason::Overloaded`] (and a rate-limited warning is logged). The
//!   wait keeps its place in the (FIFO) permit queue, and when the permit
//!   comes the run counts for the latest slot, so its reported lag is always
//!   below one interval: the schedule never silently drifts.
//!
//! # Reload and shutdown
//! [`Scheduler::apply`] diffs by name. A removed or changed check's in-flight
//! run is *cancelled*: its result is never reported, and
//! [`ResultSink::removed`] is called after it is stopped, so nothing is
//! reported for the old definition afterwards. [`Scheduler::shutdown`] stops
//! scheduling, lets in-flight runs finish until the deadline and cancels the
//! rest.
//!
//! The [`Runner`] is trusted to bound each run by the check's timeout
//! ([`Check::run`] does).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use super::{CheckDef, ResultSink, SkipReason};
use crate::check::{Check, CheckResult, SpecError};

/// Default maximum number of runs in flight at once.
pub const DEFAULT_MAX_CONCURRENCY: usize = 256;

/// At most one overload warning is logged per this period.
const OVERLOAD_WARN_EVERY: Duration = Duration::from_secs(10);

/// What runs a check: the daemon uses [`CheckRunner`] (calls [`Check::run`]),
/// tests a fake.
pub trait Runner: Send + Sync + 'static {
    fn run(
        &self,
        def: Arc<CheckDef>,
        check: Arc<Check>,
    ) -> Pin<Box<dyn Future<Output = CheckResult> + Send>>;
}

/// Runs the real check.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckRunner;

impl Runner for CheckRunner {
    fn run(
        &self,
        _def: Arc<CheckDef>,
        check: Arc<Check>,
    ) -> Pin<Box<dyn Future<Output = CheckResult> + Send>> {
        Box::pin(async move { check.run().await })
    }
}

#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// This probe's region: offsets depend on it, and only checks that
    /// [`CheckDef::runs_in`] it are scheduled.
    pub region: String,
    /// Maximum runs in flight at once (at least 1).
    pub max_concurrency: usize,
    /// The wall time at the moment [`Scheduler::new`] is called; `None`
    /// reads the system clock. Tests inject it so the grid is exact.
    pub epoch: Option<SystemTime>,
}

impl SchedulerOptions {
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            epoch: None,
        }
    }
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self::new("")
    }
}

// === slot arithmetic ===

const NANOS_PER_SEC: u128 = 1_000_000_000;

fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_le_bytes(first)
}

fn from_nanos(n: u128) -> Duration {
    Duration::new((n / NANOS_PER_SEC) as u64, (n % NANOS_PER_SEC) as u32)
}

/// Deterministic offset of a check within its interval: a hash of name and
/// region, in whole milliseconds, in `[0, interval)` (zero for intervals
/// under a millisecond).
pub fn offset(name: &str, region: &str, interval: Duration) -> Duration {
    let ms = interval.as_millis();
    if ms == 0 {
        return Duration::ZERO;
    }
    let h = hash64(&[b"offset", name.as_bytes(), region.as_bytes()]);
    Duration::from_millis((u128::from(h) % ms) as u64)
}

/// Exclusive upper bound of the jitter added to a slot:
/// `min(interval / 100, 1s)`.
pub fn max_jitter(interval: Duration) -> Duration {
    (interval / 100).min(Duration::from_secs(1))
}

/// Deterministic jitter of slot `slot` of a check, in whole milliseconds,
/// below [`max_jitter`].
pub fn jitter(name: &str, region: &str, interval: Duration, slot: u64) -> Duration {
    let bound = max_jitter(interval).as_millis();
    if bound == 0 {
        return Duration::ZERO;
    }
    let h = hash64(&[
        b"jitter",
        name.as_bytes(),
        region.as_bytes(),
        &slot.to_le_bytes(),
    ]);
    Duration::from_millis((u128::from(h) % bound) as u64)
}

/// Wall time (since the Unix epoch) of slot `slot` of a check:
/// `slot * interval + offset + jitter(slot)`.
pub fn slot_time(name: &str, region: &str, interval: Duration, slot: u64) -> Duration {
    from_nanos(
        u128::from(slot) * interval.as_nanos()
            + offset(name, region, interval).as_nanos()
            + jitter(name, region, interval, slot).as_nanos(),
    )
}

/// Maps a check's slots onto Tokio's clock.
#[derive(Clone, Debug)]
struct Grid {
    name: String,
    region: String,
    interval: Duration,
    /// Tokio instant at which the wall clock read `base_unix`.
    base: Instant,
    base_unix: u128,
}

impl Grid {
    fn at(&self, slot: u64) -> Instant {
        let unix = slot_time(&self.name, &self.region, self.interval, slot).as_nanos();
        if unix >= self.base_unix {
            self.base + from_nanos(unix - self.base_unix)
        } else {
            let back = from_nanos(self.base_unix - unix);
            self.base.checked_sub(back).unwrap_or(self.base)
        }
    }

    /// The first slot at or after `t`.
    fn first_at_or_after(&self, t: Instant) -> u64 {
        let unix = self.base_unix + t.saturating_duration_since(self.base).as_nanos();
        let off = offset(&self.name, &self.region, self.interval).as_nanos();
        // Jitter is below one interval, so this is at most one slot early.
        let mut slot = (unix.saturating_sub(off) / self.interval.as_nanos()) as u64;
        slot = slot.saturating_sub(1);
        while self.at(slot) < t {
            slot += 1;
        }
        slot
    }
}

// === impl Scheduler ===

/// Runs the checks of one region; see the module docs for the rules.
pub struct Scheduler {
    shared: Arc<Shared>,
    checks: BTreeMap<String, Scheduled>,
    stop: watch::Sender<bool>,
}

struct Shared {
    region: String,
    max_concurrency: usize,
    runner: Arc<dyn Runner>,
    sink: Arc<dyn ResultSink>,
    permits: Arc<Semaphore>,
    base: Instant,
    base_unix: u128,
    in_flight: Mutex<usize>,
    overload: Mutex<OverloadLog>,
}

#[derive(Default)]
struct OverloadLog {
    last_warn: Option<Instant>,
    lost_since: u64,
}

struct Scheduled {
    def: Arc<CheckDef>,
    offset: Duration,
    state: Arc<Mutex<TaskState>>,
    task: JoinHandle<()>,
}

/// Shared between a check's task and the scheduler, so that cancelling a
/// check and reporting for it never race: a cancelled check reports nothing.
#[derive(Debug)]
struct TaskState {
    live: bool,
    in_run: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Scheduler {
    pub fn new(opts: SchedulerOptions, runner: Arc<dyn Runner>, sink: Arc<dyn ResultSink>) -> Self {
        let base = Instant::now();
        let wall = opts.epoch.unwrap_or_else(SystemTime::now);
        let base_unix = wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos();
        let max_concurrency = opts.max_concurrency.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            shared: Arc::new(Shared {
                region: opts.region,
                max_concurrency,
                runner,
                sink,
                permits: Arc::new(Semaphore::new(max_concurrency)),
                base,
                base_unix,
                in_flight: Mutex::new(0),
                overload: Mutex::new(OverloadLog::default()),
            }),
            checks: BTreeMap::new(),
            stop: watch::channel(false).0,
        }
    }

    /// Replaces the set of checks. Checks not for this region are ignored;
    /// the others are diffed by name: added ones start, removed ones stop
    /// (in-flight run cancelled, then [`ResultSink::removed`]), changed ones
    /// are removed and started again, unchanged ones keep running untouched.
    ///
    /// Builds each added or changed def; defs that fail to build (or have a
    /// zero interval, or repeat a name) are not scheduled and are returned
    /// with their error. Must be called within a Tokio runtime.
    pub fn apply(&mut self, defs: Vec<CheckDef>) -> Vec<(String, SpecError)> {
        let mut errors = Vec::new();
        let mut wanted: BTreeMap<String, CheckDef> = BTreeMap::new();
        for def in defs {
            if !def.runs_in(&self.shared.region) {
                continue;
            }
            if wanted.contains_key(&def.name) {
                errors.push((
                    def.name.clone(),
                    SpecError::new("name", "duplicate check name"),
                ));
                continue;
            }
            wanted.insert(def.name.clone(), def);
        }

        let stale: Vec<String> = self
            .checks
            .iter()
            .filter(|(name, s)| wanted.get(*name) != Some(&*s.def))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(s) = self.checks.remove(&name) {
                s.cancel();
                self.shared.sink.removed(&s.def);
            }
        }

        let now = Instant::now();
        for (name, def) in wanted {
            if self.checks.contains_key(&name) {
                continue;
            }
            if def.interval.is_zero() {
                errors.push((
                    name,
                    SpecError::new("interval", "must be greater than zero"),
                ));
                continue;
            }
            match def.build() {
                Ok(check) => {
                    let s = self.start(Arc::new(def), Arc::new(check), now);
                    self.checks.insert(name, s);
                }
                Err(e) => errors.push((name, e)),
            }
        }
        errors
    }

    /// Names of the checks currently scheduled, sorted.
    pub fn scheduled(&self) -> Vec<String> {
        self.checks.keys().cloned().collect()
    }

    /// The offset of a scheduled check within its interval.
    pub fn offset_of(&self, name: &str) -> Option<Duration> {
        self.checks.get(name).map(|s| s.offset)
    }

    /// Stops scheduling, waits up to `deadline` for in-flight runs to finish
    /// (their results are reported), then cancels the rest. Returns how many
    /// runs were cancelled.
    pub async fn shutdown(mut self, deadline: Duration) -> usize {
        let until = Instant::now() + deadline;
        self.stop.send_replace(true);
        let mut checks: Vec<(Scheduled, bool)> = std::mem::take(&mut self.checks)
            .into_values()
            .map(|s| (s, false))
            .collect();
        let _ = tokio::time::timeout_at(until, async {
            for (s, done) in &mut checks {
                let _ = (&mut s.task).await;
                *done = true;
            }
        })
        .await;
        let mut cancelled = 0;
        for (s, done) in &checks {
            if !done && s.cancel() {
                cancelled += 1;
            }
        }
        for (s, done) in checks {
            if !done {
                // Let cancelled tasks drop their permits and in-flight counts.
                let _ = s.task.await;
            }
        }
        cancelled
    }

    fn start(&self, def: Arc<CheckDef>, check: Arc<Check>, not_before: Instant) -> Scheduled {
        let grid = Grid {
            name: def.name.clone(),
            region: self.shared.region.clone(),
            interval: def.interval,
            base: self.shared.base,
            base_unix: self.shared.base_unix,
        };
        let state = Arc::new(Mutex::new(TaskState {
            live: true,
            in_run: false,
        }));
        let task = tokio::spawn(run_check(
            self.shared.clone(),
            def.clone(),
            check,
            grid,
            not_before,
            state.clone(),
            self.stop.subscribe(),
        ));
        Scheduled {
            offset: offset(&def.name, &self.shared.region, def.interval),
            def,
            state,
            task,
        }
    }
}

impl Drop for Scheduler {
    /// A dropped scheduler stops its checks (without `removed` reports).
    fn drop(&mut self) {
        for s in self.checks.values() {
            s.cancel();
        }
    }
}

impl Scheduled {
    /// Stops the check's task; nothing more is reported for it. Returns
    /// whether a run was in flight (and is now cancelled).
    fn cancel(&self) -> bool {
        let was_running = {
            let mut st = lock(&self.state);
            st.live = false;
            st.in_run
        };
        self.task.abort();
        was_running
    }
}

// === the per-check task ===

/// Counts a run in flight; reports the change on creation and drop (also
/// when the run is cancelled).
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: Arc<Shared>) -> Self {
        {
            let mut n = lock(&shared.in_flight);
            *n += 1;
            shared.sink.in_flight(*n);
        }
        Self(shared)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut n = lock(&self.0.in_flight);
        *n -= 1;
        self.0.sink.in_flight(*n);
    }
}

impl Shared {
    fn overloaded(&self, def: &CheckDef) {
        let now = Instant::now();
        let mut log = lock(&self.overload);
        log.lost_since += 1;
        if log
            .last_warn
            .is_none_or(|t| now.duration_since(t) >= OVERLOAD_WARN_EVERY)
        {
            tracing::warn!(
                check = %def.name,
                lost_slots = log.lost_since,
                max_concurrency = self.max_concurrency,
                "probe overloaded: runs waited past their next slot for a concurrency permit; slots skipped"
            );
            log.last_warn = Some(now);
            log.lost_since = 0;
        }
    }
}

/// Reports through `f` unless the check was cancelled; returns whether it is live.
fn report(state: &Mutex<TaskState>, f: impl FnOnce()) -> bool {
    let st = lock(state);
    if st.live {
        f();
    }
    st.live
}

async fn run_check(
    shared: Arc<Shared>,
    def: Arc<CheckDef>,
    check: Arc<Check>,
    grid: Grid,
    not_before: Instant,
    state: Arc<Mutex<TaskState>>,
    mut stop: watch::Receiver<bool>,
) {
    let sink = &shared.sink;
    let mut slot = grid.first_at_or_after(not_before);
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = sleep_until(grid.at(slot)) => {}
        }

        // Wait for a permit; every slot that passes meanwhile is lost.
        let acquire = shared.permits.clone().acquire_owned();
        tokio::pin!(acquire);
        let permit = loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                p = &mut acquire => match p {
                    Ok(p) => break p,
                    Err(_) => return,
                },
                _ = sleep_until(grid.at(slot + 1)) => {
                    if !report(&state, || sink.skipped(&def, SkipReason::Overloaded)) {
                        return;
                    }
                    shared.overloaded(&def);
                    slot += 1;
                }
            }
        };
        let start = Instant::now();
        while grid.at(slot + 1) <= start {
            // Lost slots not seen by the wait above (a late wake-up).
            if !report(&state, || sink.skipped(&def, SkipReason::Overloaded)) {
                return;
            }
            shared.overloaded(&def);
            slot += 1;
        }

        {
            let mut st = lock(&state);
            if !st.live {
                return;
            }
            st.in_run = true;
            sink.lag(&def, start.saturating_duration_since(grid.at(slot)));
        }
        let in_flight = InFlight::new(shared.clone());
        let result = shared.runner.run(def.clone(), check.clone()).await;
        {
            let mut st = lock(&state);
            if !st.live {
                return;
            }
            st.in_run = false;
            sink.result(&def, &result);
        }
        drop(in_flight);
        drop(permit);

        if *stop.borrow() {
            return;
        }
        let next = grid.first_at_or_after(Instant::now()).max(slot + 1);
        for _ in slot + 1..next {
            if !report(&state, || sink.skipped(&def, SkipReason::StillRunning)) {
                return;
            }
        }
        slot = next;
    }
}
