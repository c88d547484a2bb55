//! The probe daemon (`varde probe`): runs configured checks on schedules in
//! one region, exports Prometheus metrics, answers blackbox-style `/probe`
//! requests and pushes every result to the coordinator.
//!
//! * [`config`]: `probes/*.toml` → validated [`CheckDef`]s and `/probe` modules;
//! * [`schedule`]: runs each check every interval, spread, never overlapping;
//! * [`metrics`]: `/metrics` and the blackbox-format `/probe` answer;
//! * [`push`]: batches results to the coordinator, spooling to disk.
//!
//! The scheduler reports to [`ResultSink`]s; metrics and the pusher are two.

use std::time::Duration;

use crate::check::CheckResult;

pub mod config;
pub mod daemon;
pub mod def;
pub mod metrics;
pub mod push;
pub mod schedule;

pub use def::CheckDef;

/// Why a scheduled run did not happen at its tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// The previous run of the same check was still going (checks never
    /// overlap themselves).
    StillRunning,
    /// The probe was at its concurrency limit for longer than the interval
    /// allowed: the probe is overloaded.
    Overloaded,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::StillRunning => "still_running",
            SkipReason::Overloaded => "overloaded",
        }
    }
}

/// Where the scheduler reports. Implementations must not block: they are
/// called from the scheduler's tasks.
pub trait ResultSink: Send + Sync + 'static {
    /// A run finished (successfully or not).
    fn result(&self, def: &CheckDef, result: &CheckResult);
    /// A check was removed or replaced by a reload: forget its series.
    fn removed(&self, def: &CheckDef);
    /// A run started `lag` after its scheduled time.
    fn lag(&self, _def: &CheckDef, _lag: Duration) {}
    /// A tick was skipped.
    fn skipped(&self, _def: &CheckDef, _why: SkipReason) {}
    /// Runs in flight changed.
    fn in_flight(&self, _n: usize) {}
}
