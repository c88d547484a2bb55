//! The probe scheduler under paused Tokio time: a fake runner records when
//! each run starts and sleeps a set duration; a fake sink records every
//! report. Times are asserted exactly, relative to the scheduler's creation.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{Instant, sleep_until};
use varde::check::{Check, CheckKind, CheckResult, CheckSpec, NetOptions, Phases, TcpOptions};
use varde::probe::schedule::{
    Runner, Scheduler, SchedulerOptions, jitter, max_jitter, offset, slot_time,
};
use varde::probe::{CheckDef, ResultSink, SkipReason};

const REGION: &str = "eu-west";
/// Wall time when each test's scheduler is created: a multiple of every
/// interval used, so relative and Unix slot arithmetic agree.
const EPOCH_SECS: u64 = 1_699_999_980;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn def(name: &str, interval: Duration) -> CheckDef {
    CheckDef {
        name: name.to_string(),
        target: "127.0.0.1:9".to_string(),
        interval,
        timeout: secs(1),
        labels: BTreeMap::new(),
        regions: vec![],
        depends_on: vec![],
        spec: CheckSpec::Tcp(TcpOptions {
            address: "127.0.0.1:9".to_string(),
            net: NetOptions {
                dns_server: Some("127.0.0.1:53".to_string()),
                ..NetOptions::default()
            },
            ..TcpOptions::default()
        }),
    }
}

/// A check name whose offset in this region is exactly `want`.
fn name_with_offset(prefix: &str, interval: Duration, want: Duration) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|n| offset(n, REGION, interval) == want)
        .unwrap()
}

/// Slot times of `name`, relative to the scheduler's creation, in `[from, until)`.
fn slots(name: &str, interval: Duration, from: Duration, until: Duration) -> Vec<Duration> {
    let epoch = secs(EPOCH_SECS);
    let first = ((epoch + from).as_nanos() / interval.as_nanos()) as u64 - 1;
    (first..)
        .map(|k| slot_time(name, REGION, interval, k))
        .skip_while(|t| *t < epoch + from)
        .take_while(|t| *t < epoch + until)
        .map(|t| t - epoch)
        .collect()
}

// === fakes ===

#[derive(Clone, Debug, PartialEq)]
enum Ev {
    Result {
        name: String,
        at: Duration,
    },
    Removed {
        name: String,
        version: Option<String>,
    },
    Lag {
        name: String,
        lag: Duration,
    },
    Skipped {
        name: String,
        why: SkipReason,
        at: Duration,
    },
    InFlight(usize),
}

struct Sink {
    t0: Instant,
    events: Mutex<Vec<Ev>>,
}

impl Sink {
    fn new(t0: Instant) -> Arc<Self> {
        Arc::new(Self {
            t0,
            events: Mutex::new(vec![]),
        })
    }

    fn push(&self, ev: Ev) {
        self.events.lock().unwrap().push(ev);
    }

    fn events(&self) -> Vec<Ev> {
        self.events.lock().unwrap().clone()
    }

    fn results(&self, name: &str) -> Vec<Duration> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Result { name: n, at } if n == name => Some(at),
                _ => None,
            })
            .collect()
    }

    fn lags(&self, name: &str) -> Vec<Duration> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Lag { name: n, lag } if n == name => Some(lag),
                _ => None,
            })
            .collect()
    }

    fn skips(&self, name: &str, reason: SkipReason) -> Vec<Duration> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Skipped { name: n, why, at } if n == name && why == reason => Some(at),
                _ => None,
            })
            .collect()
    }

    fn removals(&self) -> Vec<(String, Option<String>)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Removed { name, version } => Some((name, version)),
                _ => None,
            })
            .collect()
    }

    fn in_flights(&self) -> Vec<usize> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Ev::InFlight(n) => Some(n),
                _ => None,
            })
            .collect()
    }
}

impl ResultSink for Sink {
    fn result(&self, def: &CheckDef, _result: &CheckResult) {
        self.push(Ev::Result {
            name: def.name.clone(),
            at: self.t0.elapsed(),
        });
    }
    fn removed(&self, def: &CheckDef) {
        self.push(Ev::Removed {
            name: def.name.clone(),
            version: def.labels.get("v").cloned(),
        });
    }
    fn lag(&self, def: &CheckDef, lag: Duration) {
        self.push(Ev::Lag {
            name: def.name.clone(),
            lag,
        });
    }
    fn skipped(&self, def: &CheckDef, why: SkipReason) {
        self.push(Ev::Skipped {
            name: def.name.clone(),
            why,
            at: self.t0.elapsed(),
        });
    }
    fn in_flight(&self, n: usize) {
        self.push(Ev::InFlight(n));
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Start {
    name: String,
    at: Duration,
    version: Option<String>,
}

/// Shared state of the fake runner; the runner itself is a handle to it.
struct FakeRunner {
    t0: Instant,
    durations: HashMap<String, Duration>,
    default_duration: Duration,
    starts: Mutex<Vec<Start>>,
    running: Mutex<HashMap<String, usize>>,
    max_self_overlap: Mutex<usize>,
}

impl FakeRunner {
    fn new(t0: Instant, default_duration: Duration, durations: &[(&str, Duration)]) -> Arc<Self> {
        Arc::new(Self {
            t0,
            durations: durations.iter().map(|(n, d)| (n.to_string(), *d)).collect(),
            default_duration,
            starts: Mutex::new(vec![]),
            running: Mutex::new(HashMap::new()),
            max_self_overlap: Mutex::new(0),
        })
    }

    fn starts(&self, name: &str) -> Vec<Duration> {
        self.starts
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.at)
            .collect()
    }

    fn all_starts(&self) -> Vec<Start> {
        self.starts.lock().unwrap().clone()
    }
}

/// Decrements the per-check running count even when the run is cancelled.
struct Running(Arc<FakeRunner>, String);

struct RunnerHandle(Arc<FakeRunner>);

impl Drop for Running {
    fn drop(&mut self) {
        *self.0.running.lock().unwrap().get_mut(&self.1).unwrap() -= 1;
    }
}

impl Runner for RunnerHandle {
    fn run(
        &self,
        def: Arc<CheckDef>,
        _check: Arc<Check>,
    ) -> Pin<Box<dyn Future<Output = CheckResult> + Send>> {
        let me = self.0.clone();
        Box::pin(async move {
            let start = Instant::now();
            me.starts.lock().unwrap().push(Start {
                name: def.name.clone(),
                at: start - me.t0,
                version: def.labels.get("v").cloned(),
            });
            {
                let mut running = me.running.lock().unwrap();
                let n = running.entry(def.name.clone()).or_default();
                *n += 1;
                let mut max = me.max_self_overlap.lock().unwrap();
                *max = (*max).max(*n);
            }
            let _running = Running(me.clone(), def.name.clone());
            let d = me
                .durations
                .get(&def.name)
                .copied()
                .unwrap_or(me.default_duration);
            tokio::time::sleep(d).await;
            CheckResult {
                kind: CheckKind::Tcp,
                target: def.target.clone(),
                success: true,
                reason: None,
                message: "ok".to_string(),
                started_at: chrono::Utc::now(),
                duration: d,
                phases: Phases::default(),
                tls: None,
                http: None,
                dns: None,
                tcp: None,
            }
        })
    }
}

struct Harness {
    t0: Instant,
    runner: Arc<FakeRunner>,
    sink: Arc<Sink>,
    scheduler: Scheduler,
}

fn harness(
    max_concurrency: usize,
    default_duration: Duration,
    durations: &[(&str, Duration)],
) -> Harness {
    harness_at(
        max_concurrency,
        default_duration,
        durations,
        UNIX_EPOCH + secs(EPOCH_SECS),
    )
}

fn harness_at(
    max_concurrency: usize,
    default_duration: Duration,
    durations: &[(&str, Duration)],
    epoch: SystemTime,
) -> Harness {
    let t0 = Instant::now();
    let runner = FakeRunner::new(t0, default_duration, durations);
    let sink = Sink::new(t0);
    let scheduler = Scheduler::new(
        SchedulerOptions {
            region: REGION.to_string(),
            max_concurrency,
            epoch: Some(epoch),
        },
        Arc::new(RunnerHandle(runner.clone())),
        sink.clone(),
    );
    Harness {
        t0,
        runner,
        sink,
        scheduler,
    }
}

impl Harness {
    async fn until(&self, rel: Duration) {
        sleep_until(self.t0 + rel).await;
    }
}

// === offsets ===

#[test]
fn offset_is_deterministic_within_the_interval_and_differs_by_region() {
    let i = secs(30);
    let a = offset("api-health", "eu-west", i);
    assert_eq!(a, offset("api-health", "eu-west", i));
    assert!(a < i);
    let regions = ["eu-west", "us-east", "ap-south", "sa-east"];
    let per_region: Vec<Duration> = regions.iter().map(|r| offset("api-health", r, i)).collect();
    for (n, x) in per_region.iter().enumerate() {
        for y in &per_region[n + 1..] {
            assert_ne!(x, y, "two regions share a phase: {per_region:?}");
        }
    }
    assert_eq!(offset("x", "eu-west", Duration::ZERO), Duration::ZERO);
    assert_eq!(
        offset("x", "eu-west", Duration::from_micros(500)),
        Duration::ZERO
    );
}

#[test]
fn ten_thousand_checks_at_30s_spread_over_the_interval() {
    let i = secs(30);
    let mut buckets = vec![0usize; 300]; // 100 ms each
    for n in 0..10_000 {
        let off = offset(&format!("check-{n}"), REGION, i);
        assert!(off < i);
        buckets[(off.as_millis() / 100) as usize] += 1;
    }
    let mean = 10_000 / 300; // 33
    let max = *buckets.iter().max().unwrap();
    assert!(
        max <= 3 * mean,
        "a 100 ms bucket holds {max} checks (mean {mean})"
    );
    assert!(buckets.iter().all(|b| *b > 0), "an empty 100 ms bucket");
}

#[test]
fn jitter_is_deterministic_and_bounded_by_one_percent_or_one_second() {
    assert_eq!(max_jitter(secs(30)), ms(300));
    assert_eq!(max_jitter(secs(600)), secs(1));
    for i in [ms(100), secs(10), secs(30), secs(3600)] {
        let mut distinct = std::collections::HashSet::new();
        for k in 0..200 {
            let j = jitter("api", REGION, i, k);
            assert_eq!(j, jitter("api", REGION, i, k));
            assert!(j < max_jitter(i) || j.is_zero(), "{j:?} for {i:?}");
            distinct.insert(j);
            assert_eq!(
                slot_time("api", REGION, i, k),
                i * k as u32 + offset("api", REGION, i) + j
            );
        }
        if max_jitter(i) >= ms(100) {
            assert!(distinct.len() > 10, "jitter barely varies for {i:?}");
        }
    }
}

// === cadence ===

#[tokio::test(start_paused = true)]
async fn check_runs_at_every_slot_of_its_grid_with_zero_lag() {
    let mut h = harness(8, secs(1), &[]);
    let i = secs(30);
    assert!(h.scheduler.apply(vec![def("api", i)]).is_empty());
    assert_eq!(h.scheduler.scheduled(), vec!["api"]);
    assert_eq!(h.scheduler.offset_of("api"), Some(offset("api", REGION, i)));
    assert_eq!(h.scheduler.offset_of("nope"), None);

    // Just after the fourth run ended, well before the fifth slot.
    let off = offset("api", REGION, i);
    let end = off + i * 3 + secs(2);
    h.until(end).await;
    let expected = slots("api", i, Duration::ZERO, end);
    assert_eq!(expected.len(), 4);
    assert_eq!(h.runner.starts("api"), expected);
    // Offset plus jitter, one interval apart (up to the jitter).
    for (k, at) in expected.iter().enumerate() {
        let grid = off + i * k as u32;
        assert!(
            *at >= grid && *at - grid < max_jitter(i),
            "{at:?} vs {grid:?}"
        );
    }
    let finished: Vec<Duration> = expected.iter().map(|t| *t + secs(1)).collect();
    assert_eq!(h.sink.results("api"), finished);
    assert_eq!(h.sink.lags("api"), vec![Duration::ZERO; 4]);
    assert_eq!(h.sink.in_flights(), [1, 0].repeat(4));
}

#[tokio::test(start_paused = true)]
async fn restarted_probe_keeps_the_same_phase() {
    // Two probes started 7.25 s apart on the wall clock run the check at the
    // same wall-clock instants.
    let i = secs(10);
    let mut wall_starts = vec![];
    for started in [ms(0), ms(7_250)] {
        let epoch = UNIX_EPOCH + secs(EPOCH_SECS) + started;
        let mut h = harness_at(8, ms(10), &[], epoch);
        assert!(h.scheduler.apply(vec![def("api", i)]).is_empty());
        h.until(secs(40)).await;
        let wall: Vec<Duration> = h
            .runner
            .starts("api")
            .into_iter()
            .map(|t| secs(EPOCH_SECS) + started + t)
            .collect();
        h.scheduler.shutdown(Duration::ZERO).await;
        wall_starts.push(wall);
    }
    let first_slot = EPOCH_SECS / 10;
    let grid = |from: u64| -> Vec<Duration> {
        (from..from + 4)
            .map(|k| slot_time("api", REGION, i, k))
            .collect()
    };
    assert_eq!(wall_starts[0], grid(first_slot));
    // The second probe started after slot `first_slot`'s offset or not:
    // either way its runs are slots of the same grid.
    let k = if offset("api", REGION, i) + jitter("api", REGION, i, first_slot) >= ms(7_250) {
        first_slot
    } else {
        first_slot + 1
    };
    assert_eq!(wall_starts[1], grid(k));
}

#[tokio::test(start_paused = true)]
async fn run_longer_than_the_interval_is_never_overlapped_and_skipped_slots_are_reported() {
    let i = secs(10);
    let mut h = harness(8, secs(25), &[]);
    assert!(h.scheduler.apply(vec![def("slow", i)]).is_empty());
    h.until(secs(70)).await;

    let all = slots("slow", i, Duration::ZERO, secs(70));
    assert_eq!(all.len(), 7);
    // Runs at slots 0, 3, 6: a 25 s run covers the next two slots, and the
    // next run is at the first slot after it finished.
    let expected = vec![all[0], all[3], all[6]];
    assert_eq!(h.runner.starts("slow"), expected);
    assert_eq!(*h.runner.max_self_overlap.lock().unwrap(), 1);
    // Two skipped slots per finished run, reported when the run ended.
    assert_eq!(
        h.sink.skips("slow", SkipReason::StillRunning),
        vec![
            all[0] + secs(25),
            all[0] + secs(25),
            all[3] + secs(25),
            all[3] + secs(25)
        ]
    );
    assert!(h.sink.skips("slow", SkipReason::Overloaded).is_empty());
    assert_eq!(h.sink.lags("slow"), vec![Duration::ZERO; 3]);
}

// === concurrency ===

#[tokio::test(start_paused = true)]
async fn second_check_at_the_same_slot_waits_for_the_permit_and_reports_its_lag() {
    // 100 ms interval: jitter is zero, so equal offsets mean the same slot.
    let i = ms(100);
    let a = name_with_offset("a", i, ms(20));
    let b = name_with_offset("b", i, ms(20));
    let mut h = harness(1, ms(30), &[]);
    assert!(h.scheduler.apply(vec![def(&a, i), def(&b, i)]).is_empty());
    h.until(ms(290)).await;

    // Each slot (20, 120, 220): one runs at once, the other after it.
    let mut starts: Vec<Duration> = h.runner.all_starts().iter().map(|s| s.at).collect();
    starts.sort();
    assert_eq!(
        starts,
        vec![ms(20), ms(50), ms(120), ms(150), ms(220), ms(250)]
    );
    let mut lags = h.sink.lags(&a);
    lags.extend(h.sink.lags(&b));
    lags.sort();
    assert_eq!(lags, [vec![Duration::ZERO; 3], vec![ms(30); 3]].concat());
    assert!(h.sink.skips(&a, SkipReason::Overloaded).is_empty());
    assert!(h.sink.skips(&b, SkipReason::Overloaded).is_empty());
    // Never more than one in flight.
    assert!(h.sink.in_flights().iter().all(|n| *n <= 1));
}

#[tokio::test(start_paused = true)]
async fn slots_lost_waiting_for_a_permit_are_reported_as_overloaded() {
    let i = ms(100);
    let a = name_with_offset("a", i, ms(0));
    let b = name_with_offset("b", i, ms(50));
    let mut h = harness(1, ms(10), &[(a.as_str(), ms(230))]);
    assert!(h.scheduler.apply(vec![def(&a, i), def(&b, i)]).is_empty());
    h.until(ms(590)).await;

    // a runs 0–230 and 300–530 (skipping 100, 200, 400, 500).
    assert_eq!(h.runner.starts(&a), vec![ms(0), ms(300)]);
    assert_eq!(
        h.sink.skips(&a, SkipReason::StillRunning),
        vec![ms(230), ms(230), ms(530), ms(530)]
    );
    assert_eq!(h.sink.lags(&a), vec![Duration::ZERO; 2]);
    // b's slot 50 is lost at 150 while waiting; the wait carries on as slot
    // 150 and runs at 230 (lag 80). Slot 250 is free. Slot 350 is lost at
    // 450, and it runs at 530 for slot 450. Then 550 is free.
    assert_eq!(
        h.runner.starts(&b),
        vec![ms(230), ms(250), ms(530), ms(550)]
    );
    assert_eq!(h.sink.lags(&b), vec![ms(80), ms(0), ms(80), ms(0)]);
    assert_eq!(
        h.sink.skips(&b, SkipReason::Overloaded),
        vec![ms(150), ms(450)]
    );
    assert!(h.sink.skips(&b, SkipReason::StillRunning).is_empty());
}

// === reload ===

fn versioned(mut d: CheckDef, v: &str) -> CheckDef {
    d.labels.insert("v".to_string(), v.to_string());
    d
}

#[tokio::test(start_paused = true)]
async fn reload_starts_added_stops_removed_restarts_changed_and_keeps_unchanged() {
    let i = secs(10);
    let keep = name_with_offset("keep", i, ms(1_000));
    let gone = name_with_offset("gone", i, ms(1_500));
    let change = name_with_offset("change", i, ms(3_000));
    let added = name_with_offset("added", i, ms(5_000));
    let mut h = harness(8, secs(3), &[]);
    let errors = h.scheduler.apply(vec![
        def(&keep, i),
        def(&gone, i),
        versioned(def(&change, i), "1"),
    ]);
    assert!(errors.is_empty());

    // At 12 s, keep (11.x–14.x) and gone (11.5x–14.5x) are mid-run.
    let reload_at = secs(12);
    h.until(reload_at).await;
    assert_eq!(h.sink.in_flights().last(), Some(&2));
    let errors = h.scheduler.apply(vec![
        def(&keep, i),
        versioned(def(&change, i), "2"),
        def(&added, i),
    ]);
    assert!(errors.is_empty());
    let mut names = vec![keep.clone(), change.clone(), added.clone()];
    names.sort();
    assert_eq!(h.scheduler.scheduled(), names);
    let mut removed = h.sink.removals();
    removed.sort();
    let mut want = vec![
        (gone.clone(), None),
        (change.clone(), Some("1".to_string())),
    ];
    want.sort();
    assert_eq!(removed, want);

    h.until(secs(40)).await;
    let end = secs(40);
    // Unchanged: its run in flight at the reload finished and was reported;
    // its cadence is exactly its grid throughout.
    let keep_slots = slots(&keep, i, Duration::ZERO, end);
    assert_eq!(h.runner.starts(&keep), keep_slots);
    assert_eq!(
        h.sink.results(&keep),
        keep_slots.iter().map(|t| *t + secs(3)).collect::<Vec<_>>()
    );
    // Removed: its in-flight run was cancelled, nothing after.
    let gone_slots = slots(&gone, i, Duration::ZERO, reload_at);
    assert_eq!(h.runner.starts(&gone), gone_slots);
    assert_eq!(h.sink.results(&gone), vec![gone_slots[0] + secs(3)]);
    // Changed: the old version ran before the reload, the new one after.
    let change_runs: Vec<(Duration, Option<String>)> = h
        .runner
        .all_starts()
        .into_iter()
        .filter(|s| s.name == change)
        .map(|s| (s.at, s.version))
        .collect();
    let before = slots(&change, i, Duration::ZERO, reload_at);
    let after = slots(&change, i, reload_at, end);
    let expected: Vec<(Duration, Option<String>)> = before
        .iter()
        .map(|t| (*t, Some("1".to_string())))
        .chain(after.iter().map(|t| (*t, Some("2".to_string()))))
        .collect();
    assert_eq!(change_runs, expected);
    // Added: starts at its first slot after the reload.
    assert_eq!(h.runner.starts(&added), slots(&added, i, reload_at, end));
    assert_eq!(h.scheduler.shutdown(Duration::ZERO).await, 0);
}

#[tokio::test(start_paused = true)]
async fn reload_ignores_other_regions_and_returns_defs_that_fail_to_build() {
    let i = secs(10);
    let mut h = harness(8, ms(10), &[]);
    let mut elsewhere = def("elsewhere", i);
    elsewhere.regions = vec!["us-east".to_string()];
    let mut here = def("here", i);
    here.regions = vec!["us-east".to_string(), REGION.to_string()];
    let mut broken = def("broken", i);
    broken.spec = CheckSpec::Tcp(TcpOptions {
        address: "no-port".to_string(),
        ..TcpOptions::default()
    });
    let mut zero = def("zero", i);
    zero.interval = Duration::ZERO;

    let errors = h.scheduler.apply(vec![
        elsewhere,
        here,
        broken,
        zero,
        def("any", i),
        def("any", secs(5)),
    ]);
    let mut failed: Vec<(String, String)> = errors.into_iter().map(|(n, e)| (n, e.field)).collect();
    failed.sort();
    assert_eq!(
        failed,
        vec![
            ("any".to_string(), "name".to_string()),
            ("broken".to_string(), "address".to_string()),
            ("zero".to_string(), "interval".to_string()),
        ]
    );
    assert_eq!(h.scheduler.scheduled(), vec!["any", "here"]);

    h.until(secs(11)).await;
    let mut ran: Vec<String> = h.runner.all_starts().into_iter().map(|s| s.name).collect();
    ran.sort();
    ran.dedup();
    assert_eq!(ran, vec!["any", "here"]);
    assert!(h.sink.removals().is_empty());
}

// === shutdown ===

#[tokio::test(start_paused = true)]
async fn shutdown_lets_runs_finish_before_the_deadline_and_cancels_the_rest() {
    let i = secs(10);
    let fast = name_with_offset("fast", i, ms(1_000));
    let slow = name_with_offset("slow", i, ms(1_500));
    let h = harness(8, secs(2), &[(slow.as_str(), secs(8))]);
    let Harness {
        t0,
        runner,
        sink,
        mut scheduler,
    } = h;
    assert!(
        scheduler
            .apply(vec![def(&fast, i), def(&slow, i)])
            .is_empty()
    );
    sleep_until(t0 + secs(12)).await;
    assert_eq!(sink.in_flights().last(), Some(&2));

    let cancelled = scheduler.shutdown(secs(3)).await;
    assert_eq!(cancelled, 1);
    assert_eq!(t0.elapsed(), secs(15), "shutdown waits until the deadline");

    let fast_slots = slots(&fast, i, Duration::ZERO, secs(15));
    assert_eq!(
        sink.results(&fast),
        fast_slots.iter().map(|t| *t + secs(2)).collect::<Vec<_>>()
    );
    // slow's first run finished (at 9.5x); the second, started at 11.5x,
    // was cancelled at 15 s.
    let slow_slots = slots(&slow, i, Duration::ZERO, secs(15));
    assert_eq!(runner.starts(&slow), slow_slots);
    assert_eq!(sink.results(&slow), vec![slow_slots[0] + secs(8)]);
    assert_eq!(sink.in_flights().last(), Some(&0));

    // Nothing runs after shutdown.
    let runs = runner.all_starts().len();
    sleep_until(t0 + secs(60)).await;
    assert_eq!(runner.all_starts().len(), runs);
}

#[tokio::test(start_paused = true)]
async fn shutdown_with_nothing_in_flight_returns_at_once() {
    let mut h = harness(8, ms(10), &[]);
    assert!(h.scheduler.apply(vec![def("api", secs(30))]).is_empty());
    let t0 = h.t0;
    assert_eq!(h.scheduler.shutdown(secs(5)).await, 0);
    assert_eq!(t0.elapsed(), Duration::ZERO);
}
