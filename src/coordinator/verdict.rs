//! Per-region state and per-check verdicts: pure logic, no I/O, no clock.
//! Every time-dependent question takes `now` as an argument.
//!
//! # Region state (per check, per region) — [`RegionTrack`]
//!
//! * A region starts [`RegionState::Unknown`]: no evidence yet, neither up
//!   nor down. It becomes [`Up`](RegionState::Up) after `recover_after`
//!   consecutive successes and [`Down`](RegionState::Down) after `fail_after`
//!   consecutive failures. With the defaults (2 and 2) a single first result
//!   leaves it `Unknown`.
//! * Hysteresis: once `Up`, it stays `Up` until `fail_after` failures in a
//!   row; once `Down`, it stays `Down` until `recover_after` successes in a
//!   row. A single blip of the other kind resets the opposite streak and
//!   changes nothing. A region never returns to `Unknown`.
//! * Results are ordered by `(started_at, seq)`. A result whose key is not
//!   strictly after the last applied one for that (check, region) is
//!   ignored: an out-of-order replay must not flip state back, and an exact
//!   duplicate (same key) is applied once. (Two results with the same key but
//!   different content count as duplicates too: the first one wins.)
//! * Staleness does not reset a region: when a silent region reports again,
//!   its streaks and state continue from where they were.
//!
//! # Staleness
//!
//! A region is STALE at `now` when its last applied result started more than
//! `stale_after` before `now`: `now - started_at > stale_after`. The bound is
//! exclusive — a result exactly `stale_after` old is still fresh; one
//! nanosecond older is stale. A result that claims to start after `now`
//! (probe clock skew) is fresh. Staleness is judged by the result's own
//! `started_at`, not by when it arrived. The default `stale_after` is twice
//! the check's interval ([`Policy::for_interval`]).
//!
//! # Verdict (per check, across regions) — [`CheckTrack::verdict`]
//!
//! Each known region lands in exactly one list of the [`Verdict`]: `stale`
//! (whatever its state), else `down`, `up` or `unknown` by its state. Lists
//! are sorted by region name.
//!
//! * **Voters** are the fresh regions. Stale regions do not vote: silence is
//!   never read as up or down. A fresh `Unknown` region (reporting, but
//!   without `fail_after`/`recover_after` results in a row yet) is in the
//!   denominator but neither down nor up: it can hold a page back (while a
//!   fleet starts, the first region to cross `fail_after` is 1 of 3, not
//!   1 of 1) but never causes one. The incident engine goes one step
//!   further: while counting such regions changes the verdict, a rule's
//!   condition is undecided — nothing fires and nothing resolves until
//!   they are up or down.
//! * The quorum is met when the number of `Down` voters reaches:
//!   - `any`: at least one;
//!   - `majority` (default): more than half of the voters (1 of 2 is *not* a
//!     majority);
//!   - `all`: every voter, and at least one;
//!   - `N` ([`Quorum::AtLeast`]): at least N, whatever the number of voters
//!     (with fewer than N voters the check can be DEGRADED, never DOWN).
//! * [`VerdictState::Down`] when the quorum is met; [`Degraded`] when some but
//!   fewer than quorum voters are down; [`Up`] when no voter is down and at
//!   least one is up; [`Unknown`](VerdictState::Unknown) when no fresh
//!   region is up or down (e.g. every region stale or still without enough
//!   evidence).
//!
//! **Consequence to know:** the quorum is taken over the voters, not over
//! all regions. If one region is down and all the others are stale, that one
//! region is the whole electorate: `majority` and `all` both say DOWN
//! (1 of 1). This is deliberate — the other regions' silence is reported as
//! `stale` (and, fleet-wide, as `probe_offline`), never counted as up — but
//! it means a single region can page while the rest of the fleet is offline.
//! A rule that must not page on one region uses `AtLeast(2)`.
//!
//! [`Degraded`]: VerdictState::Degraded
//! [`Up`]: VerdictState::Up

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::check::{CheckResult, Reason};

// === Quorum ===

/// How many fresh, known regions must see a check down for it to be DOWN.
///
/// Written in config as `"any"`, `"majority"`, `"all"` or a number of regions
/// (`"2"` or `2`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Quorum {
    /// At least one voter down.
    Any,
    /// More than half of the voters down.
    #[default]
    Majority,
    /// Every voter down (and at least one voter).
    All,
    /// At least this many voters down.
    AtLeast(NonZeroU32),
}

impl Quorum {
    /// Whether `down` down voters out of `voters` meet this quorum.
    pub fn is_met(self, down: usize, voters: usize) -> bool {
        match self {
            Quorum::Any => down >= 1,
            Quorum::Majority => down * 2 > voters,
            Quorum::All => voters >= 1 && down == voters,
            Quorum::AtLeast(n) => u64::try_from(down).is_ok_and(|d| d >= u64::from(n.get())),
        }
    }
}

/// Why a quorum did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuorumError {
    /// The value was empty.
    #[error(r#"empty quorum: expected "any", "majority", "all" or a number of regions like "2""#)]
    Empty,
    /// A number of regions of zero, which would call a check down with no
    /// region down.
    #[error(
        r#"quorum "0" would call a check down with no region down: use a number of regions of at least 1, or "any""#
    )]
    Zero,
    /// Neither a known word nor a number of regions.
    #[error(
        r#"unknown quorum "{0}": expected "any", "majority", "all" or a number of regions like "2""#
    )]
    Invalid(String),
}

impl FromStr for Quorum {
    type Err = QuorumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" => Err(QuorumError::Empty),
            "any" => Ok(Quorum::Any),
            "majority" => Ok(Quorum::Majority),
            "all" => Ok(Quorum::All),
            _ if s.bytes().all(|b| b.is_ascii_digit()) => {
                let n: u32 = s.parse().map_err(|_| QuorumError::Invalid(s.to_owned()))?;
                NonZeroU32::new(n)
                    .map(Quorum::AtLeast)
                    .ok_or(QuorumError::Zero)
            }
            _ => Err(QuorumError::Invalid(s.to_owned())),
        }
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::Any => f.write_str("any"),
            Quorum::Majority => f.write_str("majority"),
            Quorum::All => f.write_str("all"),
            Quorum::AtLeast(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Quorum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Quorum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Quorum;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""any", "majority", "all" or a number of regions"#)
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quorum, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quorum, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quorum, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

// === Policy ===

/// The rule's knobs for one check. Built from config; not persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Consecutive failures that make a region DOWN.
    pub fail_after: NonZeroU32,
    /// Consecutive successes that make a region UP.
    pub recover_after: NonZeroU32,
    /// A region whose last result is older than this is STALE.
    pub stale_after: Duration,
    pub quorum: Quorum,
}

impl Policy {
    /// Default consecutive failures before DOWN.
    pub const DEFAULT_FAIL_AFTER: NonZeroU32 = NonZeroU32::new(2).unwrap();
    /// Default consecutive successes before UP.
    pub const DEFAULT_RECOVER_AFTER: NonZeroU32 = NonZeroU32::new(2).unwrap();

    /// The defaults for a check run every `interval`: 2 failures, 2
    /// successes, stale after 2 × `interval`, majority quorum.
    pub fn for_interval(interval: Duration) -> Self {
        Policy {
            fail_after: Self::DEFAULT_FAIL_AFTER,
            recover_after: Self::DEFAULT_RECOVER_AFTER,
            stale_after: interval.saturating_mul(2),
            quorum: Quorum::default(),
        }
    }
}

// === Observation ===

/// One check result from one region, reduced to what the verdict needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// The probe's sequence number (tie-breaker at equal `started_at`).
    pub seq: u64,
    pub started_at: DateTime<Utc>,
    pub success: bool,
    /// `None` on success.
    pub reason: Option<Reason>,
}

impl Observation {
    /// An observation from a result as a probe reported it.
    pub fn from_result(seq: u64, r: &CheckResult) -> Self {
        Observation {
            seq,
            started_at: r.started_at,
            success: r.success,
            reason: r.reason,
        }
    }

    fn key(&self) -> (DateTime<Utc>, u64) {
        (self.started_at, self.seq)
    }
}

// === Region state ===

/// A region's view of one check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionState {
    /// Not enough evidence yet.
    #[default]
    Unknown,
    Up,
    Down,
}

/// A region's state changed from `from` to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub from: RegionState,
    pub to: RegionState,
}

/// One (check, region): streaks, state and the last applied result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionTrack {
    state: RegionState,
    fail_streak: u32,
    success_streak: u32,
    last_started_at: Option<DateTime<Utc>>,
    last_seq: u64,
    last_reason: Option<Reason>,
}

impl RegionTrack {
    /// Applies `obs` and returns the state change it caused, if any.
    /// Results not strictly after the last applied one (by `started_at`, then
    /// `seq`) are ignored and return `None`.
    pub fn apply(&mut self, obs: &Observation, p: &Policy) -> Option<Change> {
        if !self.accepts(obs) {
            return None;
        }
        self.last_started_at = Some(obs.started_at);
        self.last_seq = obs.seq;
        self.last_reason = obs.reason;

        let from = self.state;
        if obs.success {
            self.success_streak = self.success_streak.saturating_add(1);
            self.fail_streak = 0;
            if self.success_streak >= p.recover_after.get() {
                self.state = RegionState::Up;
            }
        } else {
            self.fail_streak = self.fail_streak.saturating_add(1);
            self.success_streak = 0;
            if self.fail_streak >= p.fail_after.get() {
                self.state = RegionState::Down;
            }
        }
        (from != self.state).then_some(Change {
            from,
            to: self.state,
        })
    }

    /// Whether `obs` would be applied: it is strictly after the last applied
    /// result (an older replay or an exact duplicate is not).
    pub fn accepts(&self, obs: &Observation) -> bool {
        self.last_key().is_none_or(|last| obs.key() > last)
    }

    /// Stale at `now`: the last result started more than `stale_after`
    /// before `now` (exclusive bound), or there is no result at all.
    pub fn is_stale(&self, now: DateTime<Utc>, p: &Policy) -> bool {
        let Some(last) = self.last_started_at else {
            return true;
        };
        match TimeDelta::from_std(p.stale_after) {
            Ok(limit) => now.signed_duration_since(last) > limit,
            // A bound beyond chrono's range: nothing is ever that old.
            Err(_) => false,
        }
    }

    pub fn state(&self) -> RegionState {
        self.state
    }

    /// Consecutive failures up to the last applied result.
    pub fn fail_streak(&self) -> u32 {
        self.fail_streak
    }

    /// Consecutive successes up to the last applied result.
    pub fn success_streak(&self) -> u32 {
        self.success_streak
    }

    /// `(started_at, seq)` of the last applied result.
    pub fn last_key(&self) -> Option<(DateTime<Utc>, u64)> {
        self.last_started_at.map(|t| (t, self.last_seq))
    }

    /// The failure reason of the last applied result (`None` if it succeeded).
    pub fn last_reason(&self) -> Option<Reason> {
        self.last_reason
    }
}

// === Check state ===

/// A region's state change, for the check's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub region: String,
    pub from: RegionState,
    pub to: RegionState,
    /// `started_at` of the result that caused it.
    pub at: DateTime<Utc>,
    /// That result's failure reason (`None` if it succeeded).
    pub reason: Option<Reason>,
}

/// One check across all regions that have reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckTrack {
    regions: BTreeMap<String, RegionTrack>,
}

impl CheckTrack {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a result from `region`; returns the region's transition, if
    /// it changed state. Ignored results (older or duplicate) return `None`.
    pub fn apply(&mut self, region: &str, obs: &Observation, p: &Policy) -> Option<Transition> {
        let track = match self.regions.get_mut(region) {
            Some(t) => t,
            None => self.regions.entry(region.to_owned()).or_default(),
        };
        let Change { from, to } = track.apply(obs, p)?;
        Some(Transition {
            region: region.to_owned(),
            from,
            to,
            at: obs.started_at,
            reason: obs.reason,
        })
    }

    /// The region's track, if it has ever reported.
    pub fn region(&self, region: &str) -> Option<&RegionTrack> {
        self.regions.get(region)
    }

    /// Every region that has reported, by name.
    pub fn regions(&self) -> impl Iterator<Item = (&str, &RegionTrack)> {
        self.regions.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The check's verdict at `now` under `p` (see the module docs).
    pub fn verdict(&self, now: DateTime<Utc>, p: &Policy) -> Verdict {
        let mut v = Verdict {
            state: VerdictState::Unknown,
            down: Vec::new(),
            up: Vec::new(),
            stale: Vec::new(),
            unknown: Vec::new(),
            voters: 0,
        };
        // BTreeMap iteration keeps every list sorted by region name.
        for (name, track) in &self.regions {
            let list = if track.is_stale(now, p) {
                &mut v.stale
            } else {
                match track.state() {
                    RegionState::Down => &mut v.down,
                    RegionState::Up => &mut v.up,
                    RegionState::Unknown => &mut v.unknown,
                }
            };
            list.push(name.clone());
        }
        v.voters = v.down.len() + v.up.len() + v.unknown.len();
        v.state = if v.down.is_empty() && v.up.is_empty() {
            VerdictState::Unknown
        } else if p.quorum.is_met(v.down.len(), v.voters) {
            VerdictState::Down
        } else if !v.down.is_empty() {
            VerdictState::Degraded
        } else {
            VerdictState::Up
        };
        v
    }
}

// === Verdict ===

/// A check's state across regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictState {
    /// No voters: no fresh region with a known state.
    Unknown,
    /// No voter down, at least one up.
    Up,
    /// Some voters down, fewer than the quorum: visible, never a page.
    Degraded,
    /// Down in at least the quorum of voters.
    Down,
}

/// A check's verdict at one instant, with the regions behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub state: VerdictState,
    /// Fresh regions that are down, sorted.
    pub down: Vec<String>,
    /// Fresh regions that are up, sorted.
    pub up: Vec<String>,
    /// Regions whose last result is too old, whatever their state, sorted.
    pub stale: Vec<String>,
    /// Fresh regions without enough evidence yet, sorted.
    pub unknown: Vec<String>,
    /// `down.len() + up.len() + unknown.len()` (the fresh regions): the
    /// denominator of the quorum and of "down in 2/3 regions".
    pub voters: usize,
}
