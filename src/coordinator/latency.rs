//! Recent check durations per (check, region) and their percentiles, for
//! `latency` rules: pure logic, no I/O, no clock — every question takes
//! `now` as an argument.
//!
//! # What is recorded
//!
//! Only **successful** runs. A failed run's duration says how long the
//! check waited before giving up (for a timeout: the timeout itself), not how
//! fast the service answered; failures are the `down` rule's business.
//! [`LatencyWindow::push_result`] takes a [`CheckResult`] and ignores
//! failures; [`LatencyWindow::push`] records whatever it is given, so its
//! caller passes successes only.
//!
//! # Storage
//!
//! Samples are kept sorted by `started_at` (arrival order does not matter:
//! a replayed, older result lands in its place), at most
//! [`LatencyWindow::MAX_SAMPLES`] per window; past that the sample with the
//! earliest `started_at` is dropped first. A sample identical to one already
//! held (same `started_at`, same durations) is a replay and is ignored.
//!
//! One sample is 32 bytes: `started_at` as `i64` nanoseconds since the Unix
//! epoch (exact for chrono's resolution; clamped outside 1677–2262), and the
//! total and the five phase durations as `u32` microseconds (truncated to
//! the microsecond, saturating at about 71 minutes, far above any check
//! timeout). Percentiles are therefore whole microseconds.
//!
//! # Percentile
//!
//! Nearest rank over the `n` samples with `started_at` in the half-open
//! window **`(now - window, now]`**: a sample exactly `window` old is out,
//! one that starts exactly at `now` is in, one that claims to start after
//! `now` (probe clock ahead) is not counted until `now` reaches it.
//! The `p`-th percentile is the smallest sample value `v` such that at least
//! `p`% of the samples are `<= v`: the value of rank `ceil(p/100 * n)` in
//! ascending order, with the rank at least 1. So p100 is the maximum, p50 of
//! 1..=100 is 50, and any `p` up to `100/n` is the minimum. `p` is clamped to
//! `[0, 100]` (`p <= 0` gives the minimum); a NaN `p` gives `None`. A phase
//! the check does not go through (TLS of plain HTTP) counts as zero.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::check::{CheckResult, Phase, Phases};

/// Slot of the total duration in [`Sample::micros`]; phases follow.
const TOTAL: usize = 0;

fn slot(phase: Option<Phase>) -> usize {
    match phase {
        None => TOTAL,
        Some(Phase::Resolve) => 1,
        Some(Phase::Connect) => 2,
        Some(Phase::Tls) => 3,
        Some(Phase::Processing) => 4,
        Some(Phase::Transfer) => 5,
    }
}

/// One successful run: when it started and how long each part took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample {
    /// `started_at`, nanoseconds since the Unix epoch.
    at: i64,
    /// Total, then the phases in [`slot`] order; whole microseconds.
    micros: [u32; 6],
}

/// Nanoseconds since the epoch, clamped to what `i64` holds.
fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// `now - d` in epoch nanoseconds, saturating.
fn before(now: DateTime<Utc>, d: Duration) -> i64 {
    nanos(now).saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Nearest-rank index (0-based) of the `p`-th percentile among `n > 0`
/// sorted values; `None` for a NaN `p`.
fn rank_index(p: f64, n: usize) -> Option<usize> {
    if p.is_nan() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    // `p * n / 100` rather than `p / 100 * n`: exact when p*n is an integer.
    // The epsilon absorbs float error in `p` itself (99.9 is not exact) so
    // that a rank which is mathematically an integer is not rounded up; real
    // fractional parts are far larger (n <= MAX_SAMPLES).
    let x = p * n as f64 / 100.0;
    let rank = (x - 1e-9).ceil().max(1.0) as usize;
    Some(rank.min(n) - 1)
}

/// Recent durations of one check in one region. See the [module
/// docs](self) for what is recorded and how percentiles are defined.
#[derive(Clone, Debug, Default)]
pub struct LatencyWindow {
    /// Sorted by `at` (ties in arrival order).
    samples: VecDeque<Sample>,
}

impl LatencyWindow {
    /// Memory bound per (check, region): past it, the sample that started
    /// earliest is dropped first.
    pub const MAX_SAMPLES: usize = 4096;

    pub fn new() -> Self {
        Self::default()
    }

    /// Records one **successful** run (the caller filters failures; see
    /// [`LatencyWindow::push_result`]). Out-of-order arrival is fine; an
    /// exact replay of a held sample is ignored.
    pub fn push(&mut self, started_at: DateTime<Utc>, total: Duration, phases: &Phases) {
        let mut m = [0; 6];
        m[TOTAL] = micros(total);
        for phase in Phase::ALL {
            m[slot(Some(phase))] = micros(phases.get(phase));
        }
        let sample = Sample {
            at: nanos(started_at),
            micros: m,
        };
        // In-order arrival (the common case) appends.
        let idx = match self.samples.back() {
            Some(last) if last.at > sample.at => {
                self.samples.partition_point(|s| s.at <= sample.at)
            }
            _ => self.samples.len(),
        };
        // Samples with the same start sit just before `idx`.
        let mut same_start = self
            .samples
            .range(..idx)
            .rev()
            .take_while(|s| s.at == sample.at);
        if same_start.any(|s| *s == sample) {
            return;
        }
        if self.samples.len() == Self::MAX_SAMPLES {
            if idx == 0 {
                // Older than everything held: it would be the one dropped.
                return;
            }
            self.samples.pop_front();
            self.samples.insert(idx - 1, sample);
        } else {
            self.samples.insert(idx, sample);
        }
    }

    /// Records `result` if it succeeded; returns whether it did. Failures
    /// are not latency (a timed-out run lasts its timeout).
    pub fn push_result(&mut self, result: &CheckResult) -> bool {
        if result.success {
            self.push(result.started_at, result.duration, &result.phases);
        }
        result.success
    }

    /// The nearest-rank `p`-th percentile (0 < p <= 100) of `phase` (`None`:
    /// the total duration) over the samples that started in
    /// `(now - window, now]`; `None` when there is none (or `p` is NaN).
    pub fn percentile(
        &self,
        phase: Option<Phase>,
        p: f64,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Option<Duration> {
        let from = before(now, window);
        let to = nanos(now);
        let lo = self.samples.partition_point(|s| s.at <= from);
        let hi = self.samples.partition_point(|s| s.at <= to);
        if lo >= hi {
            return None;
        }
        let k = slot(phase);
        let mut values: Vec<u32> = self.samples.range(lo..hi).map(|s| s.micros[k]).collect();
        let idx = rank_index(p, values.len())?;
        let (_, v, _) = values.select_nth_unstable(idx);
        Some(Duration::from_micros(u64::from(*v)))
    }

    /// Drops every sample that no window of length `keep` ending at `now`
    /// or later can see: those with `started_at <= now - keep`. The engine
    /// calls this with the longest window of any rule.
    pub fn prune(&mut self, now: DateTime<Utc>, keep: Duration) {
        let edge = before(now, keep);
        let n = self.samples.partition_point(|s| s.at <= edge);
        self.samples.drain(..n);
    }

    /// Samples held (in any window).
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{CheckKind, Reason};
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: i64) -> chrono::TimeDelta {
        chrono::TimeDelta::seconds(n)
    }

    /// A window holding total durations 1..=n ms, one per second ending at t0.
    fn one_to(n: u64) -> LatencyWindow {
        let mut w = LatencyWindow::new();
        for i in 1..=n {
            w.push(t0() - secs((n - i) as i64), ms(i), &Phases::default());
        }
        w
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn nearest_rank_over_one_to_hundred() {
        let w = one_to(100);
        let p = |p| w.percentile(None, p, HOUR, t0());
        assert_eq!(p(50.0), Some(ms(50)));
        assert_eq!(p(95.0), Some(ms(95)));
        assert_eq!(p(99.0), Some(ms(99)));
        assert_eq!(p(99.9), Some(ms(100)));
        assert_eq!(p(100.0), Some(ms(100)));
        // Just above a rank boundary takes the next value.
        assert_eq!(p(50.5), Some(ms(51)));
    }

    #[test]
    fn small_p_is_the_minimum_and_ranks_round_up() {
        let w = one_to(100);
        let p = |p| w.percentile(None, p, HOUR, t0());
        assert_eq!(p(0.1), Some(ms(1)));
        assert_eq!(p(1.0), Some(ms(1)));
        assert_eq!(p(1.5), Some(ms(2)));
        assert_eq!(p(0.0), Some(ms(1)), "p <= 0 is clamped to the minimum");
        assert_eq!(p(150.0), Some(ms(100)), "p > 100 is clamped to the maximum");
        assert_eq!(p(f64::NAN), None);
    }

    #[test]
    fn rank_is_not_pushed_up_by_float_error() {
        // 99.9 and 0.3 are not exact in binary; p*n/100 is an integer here.
        assert_eq!(rank_index(99.9, 1000), Some(998));
        assert_eq!(rank_index(0.3, 1000), Some(2));
        assert_eq!(rank_index(95.0, 20), Some(18));
        assert_eq!(rank_index(95.0, 21), Some(19)); // ceil(19.95) = 20
        assert_eq!(rank_index(50.0, 3), Some(1)); // ceil(1.5) = 2
    }

    #[test]
    fn single_sample_is_every_percentile() {
        let mut w = LatencyWindow::new();
        w.push(t0(), ms(42), &Phases::default());
        for p in [0.01, 1.0, 50.0, 99.0, 100.0] {
            assert_eq!(w.percentile(None, p, HOUR, t0()), Some(ms(42)), "p{p}");
        }
    }

    #[test]
    fn empty_window_has_no_percentile() {
        let w = LatencyWindow::new();
        assert!(w.is_empty());
        assert_eq!(w.percentile(None, 95.0, HOUR, t0()), None);
        // Samples exist, none in the window.
        let w = one_to(10);
        let later = t0() + secs(3600);
        assert_eq!(
            w.percentile(None, 95.0, Duration::from_secs(60), later),
            None
        );
    }

    #[test]
    fn window_excludes_its_start_and_includes_now() {
        let mut w = LatencyWindow::new();
        let window = Duration::from_secs(60);
        let ns = chrono::TimeDelta::nanoseconds(1);
        w.push(t0() - secs(60), ms(1), &Phases::default()); // exactly `window` old: out
        w.push(t0() - secs(60) + ns, ms(2), &Phases::default()); // 1 ns younger: in
        w.push(t0(), ms(3), &Phases::default()); // exactly now: in
        w.push(t0() + ns, ms(4), &Phases::default()); // after now: out
        let p = |p| w.percentile(None, p, window, t0());
        assert_eq!(p(1.0), Some(ms(2)));
        assert_eq!(p(100.0), Some(ms(3)));
        // The future sample is counted once `now` reaches it.
        assert_eq!(w.percentile(None, 100.0, window, t0() + ns), Some(ms(4)));
        // ... and the oldest one drops out as the window moves.
        assert_eq!(w.percentile(None, 1.0, window, t0() + ns), Some(ms(3)));
    }

    #[test]
    fn phases_and_total_are_separate_series() {
        let mut w = LatencyWindow::new();
        for i in 1..=10u64 {
            let phases = Phases {
                resolve: ms(i),
                connect: ms(10 * i),
                tls: Duration::ZERO,
                processing: ms(100 * i),
                transfer: Duration::from_micros(i),
            };
            // Processing grows while the total shrinks: the series must not mix.
            w.push(t0() - secs(i as i64), ms(10_000 - i), &phases);
        }
        let p = |phase, p| w.percentile(phase, p, HOUR, t0());
        assert_eq!(p(None, 100.0), Some(ms(9_999)));
        assert_eq!(p(None, 10.0), Some(ms(9_990)));
        assert_eq!(p(Some(Phase::Resolve), 90.0), Some(ms(9)));
        assert_eq!(p(Some(Phase::Connect), 50.0), Some(ms(50)));
        assert_eq!(p(Some(Phase::Processing), 100.0), Some(ms(1000)));
        assert_eq!(p(Some(Phase::Tls), 99.0), Some(Duration::ZERO));
        assert_eq!(
            p(Some(Phase::Transfer), 20.0),
            Some(Duration::from_micros(2))
        );
    }

    #[test]
    fn durations_are_whole_microseconds() {
        let mut w = LatencyWindow::new();
        w.push(t0(), Duration::from_nanos(1_999), &Phases::default());
        assert_eq!(
            w.percentile(None, 50.0, HOUR, t0()),
            Some(Duration::from_micros(1))
        );
    }

    #[test]
    fn out_of_order_pushes_give_the_same_answers() {
        let in_order = one_to(50);
        let mut shuffled = LatencyWindow::new();
        // A fixed permutation of 1..=50 (stride 17 is coprime with 50).
        for k in 0..50u64 {
            let i = (k * 17) % 50 + 1;
            shuffled.push(t0() - secs((50 - i) as i64), ms(i), &Phases::default());
        }
        assert_eq!(shuffled.len(), 50);
        for window in [10, 25, 49, 3600] {
            let window = Duration::from_secs(window);
            for p in [1.0, 50.0, 90.0, 100.0] {
                assert_eq!(
                    shuffled.percentile(None, p, window, t0()),
                    in_order.percentile(None, p, window, t0()),
                    "p{p} over {window:?}"
                );
            }
        }
        // A late replay older than the window is stored but not counted.
        shuffled.push(t0() - secs(7200), ms(999_999), &Phases::default());
        assert_eq!(shuffled.len(), 51);
        assert_eq!(shuffled.percentile(None, 100.0, HOUR, t0()), Some(ms(50)));
    }

    #[test]
    fn exact_replays_are_counted_once() {
        let mut w = LatencyWindow::new();
        w.push(t0(), ms(5), &Phases::default());
        w.push(t0() + secs(1), ms(7), &Phases::default());
        w.push(t0(), ms(5), &Phases::default());
        assert_eq!(w.len(), 2);
        // Same start, different content: a different run, kept.
        w.push(t0(), ms(6), &Phases::default());
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn failures_are_not_latency() {
        let result = |success: bool, d: Duration| CheckResult {
            kind: CheckKind::Http,
            target: "http://127.0.0.1/".into(),
            success,
            reason: (!success).then_some(Reason::Timeout),
            message: String::new(),
            started_at: t0(),
            duration: d,
            phases: Phases::default(),
            tls: None,
            http: None,
            dns: None,
            tcp: None,
        };
        let mut w = LatencyWindow::new();
        assert!(!w.push_result(&result(false, Duration::from_secs(10))));
        assert!(w.is_empty());
        assert!(w.push_result(&result(true, ms(20))));
        assert_eq!(w.percentile(None, 100.0, HOUR, t0()), Some(ms(20)));
    }

    #[test]
    fn memory_is_bounded_and_the_earliest_start_goes_first() {
        let n = LatencyWindow::MAX_SAMPLES as i64;
        let mut w = LatencyWindow::new();
        for i in 0..n + 10 {
            w.push(t0() + secs(i), ms(i as u64), &Phases::default());
        }
        assert_eq!(w.len(), LatencyWindow::MAX_SAMPLES);
        let now = t0() + secs(n + 10);
        let all = Duration::from_secs(1_000_000);
        assert_eq!(w.percentile(None, 0.0, all, now), Some(ms(10)));
        // A replay older than everything held is the one that would go.
        w.push(t0(), ms(0), &Phases::default());
        assert_eq!(w.len(), LatencyWindow::MAX_SAMPLES);
        assert_eq!(w.percentile(None, 0.0, all, now), Some(ms(10)));
        // A late one in the middle displaces the earliest.
        w.push(
            t0() + secs(100) + chrono::TimeDelta::milliseconds(500),
            ms(1),
            &Phases::default(),
        );
        assert_eq!(w.len(), LatencyWindow::MAX_SAMPLES);
        assert_eq!(w.percentile(None, 0.0, all, now), Some(ms(1)));
        assert_eq!(
            w.percentile(None, 2.0 * 100.0 / n as f64, all, now),
            Some(ms(11))
        );
    }

    #[test]
    fn prune_drops_what_no_window_of_keep_can_see() {
        let mut w = one_to(100); // started at t0-99s ..= t0
        w.prune(t0(), Duration::from_secs(30));
        // Kept: started in (t0-30s, t0], i.e. values 71..=100.
        assert_eq!(w.len(), 30);
        assert_eq!(w.percentile(None, 0.0, HOUR, t0()), Some(ms(71)));
        // Pruning is idempotent and never touches the future.
        w.push(t0() + secs(3600), ms(1), &Phases::default());
        w.prune(t0(), Duration::from_secs(30));
        assert_eq!(w.len(), 31);
        w.prune(t0() + secs(7200), Duration::from_secs(60));
        assert!(w.is_empty());
    }

    #[test]
    fn prune_and_percentile_agree_on_the_edge() {
        let mut w = one_to(10);
        let window = Duration::from_secs(5);
        let unpruned = w.percentile(None, 0.0, window, t0());
        w.prune(t0(), window);
        assert_eq!(w.len(), 5);
        assert_eq!(w.percentile(None, 0.0, window, t0()), unpruned);
    }

    #[test]
    fn a_sample_is_compact() {
        assert_eq!(std::mem::size_of::<Sample>(), 32);
    }
}
