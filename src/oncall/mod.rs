//! Follow-the-sun on-call: which team is on duty at an instant, and the
//! coverage of a stretch of time. Pure logic: every question takes the
//! instant as an argument. Read from `alert-rules/*.toml` (`[[team]]` and
//! `[oncall]`; see [`crate::coordinator::rules`]).
//!
//! # Teams and shifts
//!
//! A [`Team`] has an IANA time zone, contacts and weekly shifts. A shift is
//! a [`WeeklyWindow`] in the team's zone, exactly like a maintenance
//! window: `days` are the local days a shift *starts* on; it runs from
//! local `start` to local `end` that day, or to `end` the next day when
//! `end <= start` (crossing midnight; `start == end` is 24 hours). A shift
//! is half-open, `[start, end)`: the team is on duty at its start and no
//! longer at its end.
//!
//! # Daylight-saving changes
//!
//! Each local start and end becomes a UTC instant with the zone's rules
//! for that date:
//!
//! - **Skipped local time** (clocks spring forward): the instant the clocks
//!   jump, for starts and ends alike. A shift starting at 02:30 in
//!   Europe/Oslo on 2026-03-29 starts at 03:00 CEST = 01:00 UTC; one ending
//!   at 02:30 that day ends at the same instant.
//! - **Repeated local time** (clocks fall back): a start is the *earlier*
//!   of the two instants and an end the *later*, so the repetition never
//!   shortens a shift. In Europe/Oslo on 2026-10-25, 02:30 is 00:30 UTC
//!   (CEST) as a start and 01:30 UTC (CET) as an end.
//!
//! So a shift lasts the local clock time it spans, plus or minus a change
//! inside it: an overnight 22:00–06:00 shift is 8 real hours on an ordinary
//! night, 7 across the spring change and 9 across the autumn change. A
//! shift lying wholly inside a skipped hour is empty that day.
//!
//! Consequences at a handoff between two teams in the *same* zone: when the
//! handoff time is repeated, the earlier shift ends at the later instant and
//! the next begins at the earlier one, so both are on duty for the repeated
//! hour (the overlap goes to the team first in priority order); when it is
//! skipped, both edges are the jump instant, so there is no gap. Teams in
//! different zones change clocks on different dates (and in opposite
//! directions across hemispheres): a handoff that meets exactly in winter
//! may open a one-hour gap or overlap in summer, which [`OnCall::coverage`]
//! and `varde validate` show.
//!
//! # Who is on duty
//!
//! At instant t, every team with a shift holding t is *covering*. The
//! on-duty team is the first covering team in priority order (`[oncall]
//! order`, else the order the teams are written in; teams missing from
//! `order` follow it in written order). When no team covers t, the
//! `fallback` team is on duty and the [`Duty`] says so.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::coordinator::silence::WeeklyWindow;

/// A team that takes pages during its shifts.
#[derive(Clone, Debug, PartialEq)]
pub struct Team {
    /// Unique among teams.
    pub name: String,
    /// The zone its shifts are written in.
    pub tz: Tz,
    /// Free-form channel references such as `email:oncall@example.com`.
    pub contacts: Vec<String>,
    /// Its weekly shifts, each in `tz`. May be empty only for the fallback.
    pub shifts: Vec<WeeklyWindow>,
}

impl Team {
    /// Whether one of its shifts holds `t`.
    pub fn covers(&self, t: DateTime<Utc>) -> bool {
        self.shifts.iter().any(|s| s.contains(t))
    }
}

/// The whole schedule: teams in priority order and the fallback.
#[derive(Clone, Debug, PartialEq)]
pub struct OnCall {
    /// In priority order: on an overlap the first covering team is on duty.
    pub teams: Vec<Team>,
    /// Name of the team (one of `teams`) on duty when no shift covers.
    pub fallback: String,
}

/// Who is on duty at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duty {
    /// The team on duty: the first covering team, else the fallback.
    pub team: String,
    /// Every team whose shift holds the instant, in priority order.
    pub covering: Vec<String>,
    /// True when no shift holds the instant and `team` is the fallback.
    pub fallback: bool,
}

/// A stretch [start, end) during which [`OnCall::on_duty`] does not change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The team on duty (the fallback in a gap).
    pub team: String,
    /// Every covering team, in priority order; empty in a gap.
    pub covering: Vec<String>,
    /// No shift covers it: pages go to the fallback.
    pub gap: bool,
}

impl OnCall {
    /// The team named `name`.
    pub fn team(&self, name: &str) -> Option<&Team> {
        self.teams.iter().find(|t| t.name == name)
    }

    /// Who is on duty at `t`; see the module documentation.
    pub fn on_duty(&self, t: DateTime<Utc>) -> Duty {
        let covering: Vec<String> = self
            .teams
            .iter()
            .filter(|team| team.covers(t))
            .map(|team| team.name.clone())
            .collect();
        match covering.first() {
            Some(first) => Duty {
                team: first.clone(),
                covering,
                fallback: false,
            },
            None => Duty {
                team: self.fallback.clone(),
                covering,
                fallback: true,
            },
        }
    }

    /// [`OnCall::on_duty`] over [from, to) as consecutive segments, split
    /// wherever the duty (team, covering teams or gap) changes; neighbours
    /// with the same duty are merged. Empty when `to <= from`.
    pub fn coverage(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Segment> {
        if to <= from {
            return Vec::new();
        }
        let mut edges = vec![from, to];
        for shift in self.teams.iter().flat_map(|t| &t.shifts) {
            for (start, end) in shift.occurrences(from, to) {
                edges.extend([start, end].into_iter().filter(|&e| from < e && e < to));
            }
        }
        edges.sort();
        edges.dedup();
        let mut segments: Vec<Segment> = Vec::new();
        for pair in edges.windows(2) {
            let (start, end) = (pair[0], pair[1]);
            let duty = self.on_duty(start);
            match segments.last_mut() {
                Some(last)
                    if last.team == duty.team
                        && last.covering == duty.covering
                        && last.gap == duty.fallback =>
                {
                    last.end = end;
                }
                _ => segments.push(Segment {
                    start,
                    end,
                    team: duty.team,
                    covering: duty.covering,
                    gap: duty.fallback,
                }),
            }
        }
        segments
    }

    /// The gaps of [`OnCall::coverage`] over [from, to).
    pub fn gaps(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Segment> {
        self.coverage(from, to)
            .into_iter()
            .filter(|s| s.gap)
            .collect()
    }
}
