//! Silences and recurring maintenance windows: alerts the coordinator holds
//! back while people are working on a system. Pure logic: every question
//! takes `now` as an argument, so a test can ask about 2026-03-29T01:30Z
//! without waiting for it. Both are read from `alert-rules/*.toml` next to
//! the rules (`[[silence]]`, `[[maintenance]]`; see [`super::rules`]).
//!
//! # Silences
//!
//! A [`Silence`] applies to every check whose labels satisfy all of its
//! matchers (the same matchers as a rule's `match`), from `starts_at`
//! inclusive to `ends_at` exclusive, both absolute instants. It needs at
//! least one matcher (a silence of everything would hide every alert),
//! `ends_at` after `starts_at`, and an author; [`Silence::new`] and the
//! loader check this. A silence with no matchers built by hand matches
//! nothing, never everything.
//!
//! # Maintenance windows
//!
//! A [`Maintenance`] window recurs every week in a time zone (`tz`, IANA
//! rules via chrono-tz).
//!
//! **Occurrences.** For every local date D whose weekday is in `days`, one
//! occurrence starts at local `start` on D and ends at local `end` on D when
//! `end > start`, or at local `end` on D+1 when `end <= start` (the window
//! crosses midnight). `start == end` is a whole day: from `start` on D to
//! the same time on D+1. So `days` are the days an occurrence *starts* on:
//! `days = ["fri"]`, 22:00–04:00 is Friday night into Saturday morning. An
//! occurrence is half-open, `[start, end)`: active at its start, no longer
//! at its end.
//!
//! **Local times to instants.** Each local start and end is turned into an
//! instant with the zone's rules for that date:
//!
//! - A local time that does not exist (skipped when the clocks spring
//!   forward) is the instant the clocks jump, i.e. the first local time
//!   after the gap: Europe/Oslo 2026-03-29 02:30 is 03:00 CEST = 01:00 UTC.
//!   This holds for starts and ends alike.
//! - A local time that happens twice (repeated when the clocks fall back):
//!   a start is the *earlier* instant and an end the *later* one, so the
//!   repetition never shortens a window: Europe/Oslo 2026-10-25 02:30 starts
//!   at 00:30 UTC (CEST) and ends at 01:30 UTC (CET).
//!
//! Consequently a window lasts the local clock time it spans, plus or minus
//! the clock change inside it: 22:00–04:00 lasts 6 real hours on an
//! ordinary night, 5 across the spring change and 7 across the autumn
//! change. A window lying wholly inside a skipped hour (02:10–02:50 in
//! Oslo on 2026-03-29) is empty that day: never active.
//!
//! **At `now`.** The window is active when any occurrence contains `now`,
//! including occurrences that started on an earlier local date: with
//! `days = ["mon"]`, 22:00–04:00, Tuesday 03:00 is inside Monday's
//! occurrence. Occurrences of consecutive days can touch (24-hour windows
//! on consecutive days) or, around a fall-back change, overlap;
//! [`Maintenance::window_at`] gives the one that started first, and
//! [`Maintenance::next_change`] treats touching and overlapping
//! occurrences as one stretch, reporting only instants where
//! [`Maintenance::is_active`] really changes.
//!
//! A window with no matchers built by hand matches nothing; the loader
//! rejects an empty `match`, an empty `days` and a repeated day.

use std::collections::BTreeMap;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, TimeDelta,
    TimeZone, Timelike, Utc, Weekday,
};
use chrono_tz::Tz;

use super::rules::Matcher;

/// How far ahead [`Maintenance::next_change`] looks.
pub const NEXT_CHANGE_HORIZON: TimeDelta = TimeDelta::days(8);

// === Silence ===

/// Alerts of matching checks held back for a fixed stretch of time.
#[derive(Clone, Debug, PartialEq)]
pub struct Silence {
    /// All must match a check's labels; never empty (see [`Silence::new`]).
    pub matchers: Vec<Matcher>,
    /// Inclusive.
    pub starts_at: DateTime<Utc>,
    /// Exclusive.
    pub ends_at: DateTime<Utc>,
    /// Who created it.
    pub author: String,
    /// Why; may be empty.
    pub comment: String,
}

impl Silence {
    /// A validated silence: at least one matcher, `ends_at` after
    /// `starts_at`, and a non-empty author.
    pub fn new(
        matchers: Vec<Matcher>,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        author: impl Into<String>,
        comment: impl Into<String>,
    ) -> Result<Silence, String> {
        let author = author.into();
        if matchers.is_empty() {
            return Err(
                "a silence needs at least one matcher (a silence of everything would hide every alert)"
                    .to_owned(),
            );
        }
        if ends_at <= starts_at {
            return Err(format!(
                "ends_at {} is not after starts_at {}",
                rfc3339(ends_at),
                rfc3339(starts_at)
            ));
        }
        if author.trim().is_empty() {
            return Err("author must not be empty".to_owned());
        }
        Ok(Silence {
            matchers,
            starts_at,
            ends_at,
            author,
            comment: comment.into(),
        })
    }

    /// `starts_at <= now < ends_at`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    /// Whether every matcher holds for these labels (which should include
    /// `check` and `kind`, as for rules). No matchers match nothing.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.matchers.is_empty() && self.matchers.iter().all(|m| m.matches(labels))
    }
}

// === Maintenance ===

/// A weekly maintenance window in a time zone; the module documentation
/// gives the exact semantics.
#[derive(Clone, Debug, PartialEq)]
pub struct Maintenance {
    /// Unique among maintenance windows.
    pub name: String,
    /// All must match a check's labels.
    pub matchers: Vec<Matcher>,
    /// The local days an occurrence starts on.
    pub days: Vec<Weekday>,
    /// Local time of day an occurrence starts.
    pub start: NaiveTime,
    /// Local time of day it ends: the same day when after `start`, else the
    /// next day (`start == end` is 24 hours).
    pub end: NaiveTime,
    pub tz: Tz,
    /// Why; may be empty.
    pub comment: String,
}

/// Which edge of an occurrence a local time is: decides a repeated time.
#[derive(Clone, Copy)]
enum Edge {
    Start,
    End,
}

impl Maintenance {
    /// Whether every matcher holds for these labels. No matchers match
    /// nothing.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.matchers.is_empty() && self.matchers.iter().all(|m| m.matches(labels))
    }

    /// The recurrence alone, without the matchers.
    pub fn weekly(&self) -> WeeklyWindow {
        WeeklyWindow {
            days: self.days.clone(),
            start: self.start,
            end: self.end,
            tz: self.tz,
        }
    }

    /// Whether an occurrence contains `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.weekly().contains(now)
    }

    /// See [`WeeklyWindow::window_at`].
    pub fn window_at(&self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.weekly().window_at(now)
    }

    /// See [`WeeklyWindow::next_change`].
    pub fn next_change(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.weekly().next_change(now)
    }

    /// See [`WeeklyWindow::occurrence`].
    pub fn occurrence(&self, date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.weekly().occurrence(date)
    }
}

// === WeeklyWindow ===

/// A span of local time recurring every week in a time zone: the shape
/// shared by maintenance windows and on-call shifts (see
/// [`crate::oncall`]). The module documentation gives the exact semantics
/// (occurrences, midnight, skipped and repeated local times).
#[derive(Clone, Debug, PartialEq)]
pub struct WeeklyWindow {
    /// The local days an occurrence starts on.
    pub days: Vec<Weekday>,
    /// Local time of day an occurrence starts.
    pub start: NaiveTime,
    /// Local time of day it ends: the same day when after `start`, else the
    /// next day (`start == end` is 24 hours).
    pub end: NaiveTime,
    pub tz: Tz,
}

impl WeeklyWindow {
    /// Whether an occurrence contains `now`.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        self.window_at(now).is_some()
    }

    /// The occurrence containing `now`, as UTC instants [start, end); if
    /// two do (24-hour windows overlapping at a fall-back change), the one
    /// that started first.
    pub fn window_at(&self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let today = self.local_date(now);
        // An occurrence ends by the end of the local day after it starts,
        // so two days back is more than enough (it also covers a clock
        // that falls back across midnight).
        (-2..=1)
            .filter_map(|d| self.occurrence(shift(today, d)?))
            .find(|&(start, end)| start <= now && now < end)
    }

    /// The next instant after `now` at which [`WeeklyWindow::contains`]
    /// changes (a window opens or closes), looking at most
    /// [`NEXT_CHANGE_HORIZON`] ahead. `None` if it does not change within
    /// that: no days, only empty occurrences, or every day covered by
    /// 24-hour windows.
    pub fn next_change(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let today = self.local_date(now);
        // Occurrences starting up to 9 local days ahead: any starting later
        // starts more than 8 days after `now`, so it can neither be the
        // answer nor join a stretch ending within the horizon.
        let mut occurrences: Vec<_> = (-2..=9)
            .filter_map(|d| self.occurrence(shift(today, d)?))
            .filter(|(start, end)| start < end)
            .collect();
        occurrences.sort();
        let mut stretches: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
        for (start, end) in occurrences {
            match stretches.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => stretches.push((start, end)),
            }
        }
        stretches
            .iter()
            .flat_map(|&(start, end)| [start, end])
            .find(|&at| at > now)
            .filter(|&at| at <= now + NEXT_CHANGE_HORIZON)
    }

    /// The occurrence starting on local date `date`, as UTC instants
    /// [start, end); `None` when `date`'s weekday is not one of `days`. It
    /// is empty (start == end) when it lies wholly in a skipped hour.
    pub fn occurrence(&self, date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if !self.days.contains(&date.weekday()) {
            return None;
        }
        let end_date = if self.end <= self.start {
            date.succ_opt()?
        } else {
            date
        };
        let start = instant(self.tz, date.and_time(self.start), Edge::Start)?;
        let end = instant(self.tz, end_date.and_time(self.end), Edge::End)?;
        Some((start, end))
    }

    /// Every non-empty occurrence overlapping [from, to), in start order.
    pub fn occurrences(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let (first, last) = (self.local_date(from), self.local_date(to));
        let mut out = Vec::new();
        let mut date = shift(first, -2);
        while let Some(d) = date.filter(|&d| d <= last) {
            if let Some((start, end)) = self.occurrence(d)
                && start < end
                && start < to
                && from < end
            {
                out.push((start, end));
            }
            date = d.succ_opt();
        }
        out.sort();
        out
    }

    /// The local date at `now` in the window's zone.
    pub fn local_date(&self, now: DateTime<Utc>) -> NaiveDate {
        now.with_timezone(&self.tz).date_naive()
    }
}

fn shift(date: NaiveDate, days: i64) -> Option<NaiveDate> {
    date.checked_add_signed(TimeDelta::days(days))
}

/// The instant of a local time; see the module documentation for skipped
/// and repeated times.
fn instant(tz: Tz, local: NaiveDateTime, edge: Edge) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.to_utc()),
        LocalResult::Ambiguous(earlier, later) => Some(match edge {
            Edge::Start => earlier.to_utc(),
            Edge::End => later.to_utc(),
        }),
        LocalResult::None => after_gap(tz, local),
    }
}

/// For a local time in a gap: the instant the clocks jumped, which is the
/// first local time after the gap.
fn after_gap(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    // Transitions fall on whole seconds, so searching whole seconds from
    // the truncated time (still in the gap) finds the gap's end exactly.
    let local = local.with_nanosecond(0)?;
    let at = |secs: i64| {
        let t = local.checked_add_signed(TimeDelta::seconds(secs))?;
        tz.from_local_datetime(&t).earliest()
    };
    // Gallop until past the gap (gaps are an hour, rarely up to a day),
    // then bisect: `lo` is in the gap, `hi` is not.
    let (mut lo, mut hi) = (0_i64, 1_i64);
    while at(hi).is_none() {
        lo = hi;
        hi *= 2;
        if hi > 1 << 18 {
            return None;
        }
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if at(mid).is_some() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    at(hi).map(|t| t.to_utc())
}

// === parsing ===

/// A day name: `mon` … `sun` or the full name, in any case.
pub fn parse_weekday(s: &str) -> Result<Weekday, String> {
    let day = match s.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Mon,
        "tue" | "tuesday" => Weekday::Tue,
        "wed" | "wednesday" => Weekday::Wed,
        "thu" | "thursday" => Weekday::Thu,
        "fri" | "friday" => Weekday::Fri,
        "sat" | "saturday" => Weekday::Sat,
        "sun" | "sunday" => Weekday::Sun,
        _ => {
            return Err(format!(
                "unknown day {s:?}: expected mon, tue, wed, thu, fri, sat or sun (or the full name)"
            ));
        }
    };
    Ok(day)
}

/// A local time of day: `HH:MM` or `HH:MM:SS`, 24-hour, two digits each.
pub fn parse_time_of_day(s: &str) -> Result<NaiveTime, String> {
    let invalid =
        || format!("invalid time {s:?}: expected HH:MM or HH:MM:SS (24-hour, e.g. \"22:00\")");
    let parts: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid());
    }
    // Two ASCII digits each, so parsing cannot fail.
    let n = |i: usize| {
        parts
            .get(i)
            .map_or(0, |p| p.parse::<u32>().unwrap_or(u32::MAX))
    };
    NaiveTime::from_hms_opt(n(0), n(1), n(2)).ok_or_else(invalid)
}

/// An IANA time zone name such as `Europe/Oslo` (exact case; a name that
/// differs only in case is suggested).
pub fn parse_timezone(s: &str) -> Result<Tz, String> {
    if let Ok(tz) = s.parse::<Tz>() {
        return Ok(tz);
    }
    match chrono_tz::TZ_VARIANTS
        .iter()
        .find(|tz| tz.name().eq_ignore_ascii_case(s))
    {
        Some(tz) => Err(format!(
            "unknown time zone {s:?}: did you mean {:?}?",
            tz.name()
        )),
        None => Err(format!(
            "unknown time zone {s:?}: expected an IANA name like \"Europe/Oslo\""
        )),
    }
}

/// An RFC 3339 date-time with a UTC offset, e.g. `2026-11-24T22:00:00Z`.
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| {
            format!(
                "invalid date-time {s:?}: {e} (expected RFC 3339, e.g. \"2026-11-24T22:00:00Z\")"
            )
        })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}
