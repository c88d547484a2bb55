//! Silences and weekly maintenance windows: exact UTC instants across the
//! daylight-saving changes of three zones (both hemispheres), the edges of
//! every window, and loading `[[silence]]` / `[[maintenance]]` from
//! `alert-rules/*.toml` with `file:line:column` errors. `now` is always an
//! argument: no test reads the clock.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc, Weekday};
use varde::coordinator::rules::{
    Matcher, Rules, load_dir, matchers_map, parse_files, parse_matchers,
};
use varde::coordinator::silence::{
    Maintenance, Silence, parse_instant, parse_time_of_day, parse_timezone, parse_weekday,
};

fn utc(s: &str) -> DateTime<Utc> {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test instant {s:?}: {e}"))
}

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A window on `team = "db"` checks.
fn window(days: &[&str], start: &str, end: &str, tz: &str) -> Maintenance {
    Maintenance {
        name: "w".to_owned(),
        matchers: vec![Matcher::parse("team", "db").unwrap()],
        days: days.iter().map(|d| parse_weekday(d).unwrap()).collect(),
        start: parse_time_of_day(start).unwrap(),
        end: parse_time_of_day(end).unwrap(),
        tz: parse_timezone(tz).unwrap(),
        comment: String::new(),
    }
}

/// The occurrence starting on local date `day`, checked to be exactly
/// [`start`, `end`) and `hours` long, with its edges behaving: inactive a
/// second before the start, active at it and a second before the end,
/// inactive at the end; `window_at` and `next_change` agree.
#[track_caller]
fn assert_occurrence(w: &Maintenance, day: &str, start: &str, end: &str, length: TimeDelta) {
    let (start, end) = (utc(start), utc(end));
    assert_eq!(w.occurrence(date(day)), Some((start, end)), "{day}");
    assert_eq!(end - start, length, "length of the {day} occurrence");
    let second = TimeDelta::seconds(1);
    assert!(!w.is_active(start - second), "a second before the start");
    assert!(w.is_active(start), "at the start");
    assert!(w.is_active(end - second), "a second before the end");
    assert!(!w.is_active(end), "at the end");
    assert_eq!(w.window_at(start), Some((start, end)));
    assert_eq!(w.window_at(end - second), Some((start, end)));
    assert_eq!(w.window_at(end), None);
    assert_eq!(w.next_change(start - second), Some(start));
    assert_eq!(w.next_change(start), Some(end));
    assert_eq!(w.next_change(end - second), Some(end));
}

fn hours(h: i64) -> TimeDelta {
    TimeDelta::hours(h)
}

fn minutes(m: i64) -> TimeDelta {
    TimeDelta::minutes(m)
}

// === Europe/Oslo: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET ===

#[test]
fn oslo_a_start_in_the_spring_gap_opens_when_the_clocks_jump() {
    // 02:30 does not exist on 2026-03-29: the window opens at 03:00 CEST.
    let w = window(&["sun"], "02:30", "05:00", "Europe/Oslo");
    assert_occurrence(
        &w,
        "2026-03-29",
        "2026-03-29T01:00:00Z",
        "2026-03-29T03:00:00Z",
        hours(2),
    );
    // The first skipped minute itself is the jump too.
    let w = window(&["sun"], "02:00", "05:00", "Europe/Oslo");
    assert_eq!(
        w.occurrence(date("2026-03-29")).unwrap().0,
        utc("2026-03-29T01:00:00Z")
    );
}

#[test]
fn oslo_an_end_in_the_spring_gap_closes_when_the_clocks_jump() {
    let w = window(&["sun"], "00:00", "02:30", "Europe/Oslo");
    assert_occurrence(
        &w,
        "2026-03-29",
        "2026-03-28T23:00:00Z",
        "2026-03-29T01:00:00Z",
        hours(2),
    );
}

#[test]
fn oslo_a_window_wholly_in_the_spring_gap_is_empty_that_day() {
    let w = window(&["sun"], "02:10", "02:50", "Europe/Oslo");
    let jump = utc("2026-03-29T01:00:00Z");
    assert_eq!(w.occurrence(date("2026-03-29")), Some((jump, jump)));
    assert!(!w.is_active(jump));
    assert!(!w.is_active(jump - TimeDelta::seconds(1)));
    // The empty occurrence is no change; the next Sunday's is.
    assert_eq!(
        w.next_change(utc("2026-03-29T00:00:00Z")),
        Some(utc("2026-04-05T00:10:00Z"))
    );
}

#[test]
fn oslo_the_repeated_autumn_hour_starts_early_and_ends_late() {
    // 02:30 happens at 00:30Z (CEST) and again at 01:30Z (CET).
    let w = window(&["sun"], "02:30", "02:45", "Europe/Oslo");
    assert_occurrence(
        &w,
        "2026-10-25",
        "2026-10-25T00:30:00Z",
        "2026-10-25T01:45:00Z",
        minutes(75),
    );
    let w = window(&["sun"], "01:00", "02:30", "Europe/Oslo");
    assert_occurrence(
        &w,
        "2026-10-25",
        "2026-10-24T23:00:00Z",
        "2026-10-25T01:30:00Z",
        minutes(150),
    );
}

#[test]
fn oslo_a_night_window_lasts_6_hours_5_in_spring_7_in_autumn() {
    let w = window(&["sat"], "22:00", "04:00", "Europe/Oslo");
    assert_occurrence(
        &w,
        "2026-03-21",
        "2026-03-21T21:00:00Z",
        "2026-03-22T03:00:00Z",
        hours(6),
    );
    assert_occurrence(
        &w,
        "2026-03-28",
        "2026-03-28T21:00:00Z",
        "2026-03-29T02:00:00Z",
        hours(5),
    );
    assert_occurrence(
        &w,
        "2026-10-24",
        "2026-10-24T20:00:00Z",
        "2026-10-25T03:00:00Z",
        hours(7),
    );
}

#[test]
fn a_window_across_midnight_is_active_in_the_small_hours_of_the_next_day() {
    // Sunday 03:30 CEST belongs to Saturday's occurrence: the check must
    // look at occurrences that started the previous local day.
    let w = window(&["sat"], "22:00", "04:00", "Europe/Oslo");
    let now = utc("2026-03-29T01:30:00Z");
    assert!(w.is_active(now));
    assert_eq!(
        w.window_at(now),
        Some((utc("2026-03-28T21:00:00Z"), utc("2026-03-29T02:00:00Z")))
    );
    assert_eq!(w.next_change(now), Some(utc("2026-03-29T02:00:00Z")));

    // An ordinary week: Monday's window covers Tuesday 03:00, not Monday
    // 03:00 (no window started on Sunday).
    let w = window(&["mon"], "22:00", "04:00", "Europe/Oslo");
    assert!(w.is_active(utc("2026-06-09T01:00:00Z")), "Tue 03:00 CEST");
    assert!(!w.is_active(utc("2026-06-08T01:00:00Z")), "Mon 03:00 CEST");
    assert!(w.is_active(utc("2026-06-08T20:00:00Z")), "Mon 22:00 CEST");
}

#[test]
fn start_equal_to_end_is_a_whole_day_of_local_clock_time() {
    let w = window(&["sat"], "12:00", "12:00", "Europe/Oslo");
    assert_occurrence(
        &w,
        "2026-03-21",
        "2026-03-21T11:00:00Z",
        "2026-03-22T11:00:00Z",
        hours(24),
    );
    // Across the spring change the day has 23 hours.
    assert_occurrence(
        &w,
        "2026-03-28",
        "2026-03-28T11:00:00Z",
        "2026-03-29T10:00:00Z",
        hours(23),
    );
}

#[test]
fn next_change_treats_touching_whole_days_as_one_stretch() {
    // Saturday and Sunday, midnight to midnight: active from Saturday 00:00
    // CET to Monday 00:00 CEST without a change at Sunday midnight.
    let w = window(&["sat", "sun"], "00:00", "00:00", "Europe/Oslo");
    let sat = utc("2026-03-27T23:00:00Z");
    assert_eq!(w.next_change(sat - TimeDelta::seconds(1)), Some(sat));
    assert_eq!(w.next_change(sat), Some(utc("2026-03-29T22:00:00Z")));
    let sunday_noon = utc("2026-03-29T10:00:00Z");
    assert_eq!(
        w.window_at(sunday_noon),
        Some((utc("2026-03-28T23:00:00Z"), utc("2026-03-29T22:00:00Z")))
    );
}

#[test]
fn overlapping_whole_days_at_the_autumn_change_report_the_first_and_the_stretch_end() {
    // 02:30 to 02:30 on Saturday and Sunday: Saturday's ends at the second
    // 02:30 (01:30Z), Sunday's starts at the first (00:30Z).
    let w = window(&["sat", "sun"], "02:30", "02:30", "Europe/Oslo");
    let now = utc("2026-10-25T01:00:00Z");
    assert_eq!(
        w.window_at(now),
        Some((utc("2026-10-24T00:30:00Z"), utc("2026-10-25T01:30:00Z")))
    );
    assert_eq!(w.next_change(now), Some(utc("2026-10-26T01:30:00Z")));
}

#[test]
fn next_change_finds_the_next_weekly_opening() {
    let w = window(&["mon"], "22:00", "04:00", "Europe/Oslo");
    // Closed at Tuesday 04:00 CEST; opens again next Monday 22:00 CEST.
    let closed = utc("2026-03-31T02:00:00Z");
    assert!(!w.is_active(closed));
    assert_eq!(w.next_change(closed), Some(utc("2026-04-06T20:00:00Z")));
    // A one-minute weekly window, just after it closed: almost 7 days on.
    let w = window(&["sun"], "01:00", "01:01", "Europe/Oslo");
    assert_eq!(
        w.next_change(utc("2026-03-22T00:01:00Z")),
        Some(utc("2026-03-29T00:00:00Z"))
    );
}

#[test]
fn next_change_is_none_when_nothing_ever_changes() {
    let never = window(&[], "22:00", "04:00", "Europe/Oslo");
    assert!(!never.is_active(utc("2026-03-29T01:00:00Z")));
    assert_eq!(never.next_change(utc("2026-03-29T01:00:00Z")), None);
    let always = window(
        &["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "00:00",
        "00:00",
        "Europe/Oslo",
    );
    for now in ["2026-03-29T01:00:00Z", "2026-10-25T01:30:00Z"] {
        assert!(always.is_active(utc(now)), "{now}");
        assert_eq!(always.next_change(utc(now)), None, "{now}");
    }
}

// === America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST ===

#[test]
fn new_york_a_start_in_the_spring_gap_opens_when_the_clocks_jump() {
    let w = window(&["sun"], "02:30", "05:00", "America/New_York");
    assert_occurrence(
        &w,
        "2026-03-08",
        "2026-03-08T07:00:00Z",
        "2026-03-08T09:00:00Z",
        hours(2),
    );
}

#[test]
fn new_york_the_repeated_autumn_hour_starts_early_and_ends_late() {
    // 01:15 EDT = 05:15Z; 01:45 EST = 06:45Z: half an hour becomes 90 minutes.
    let w = window(&["sun"], "01:15", "01:45", "America/New_York");
    assert_occurrence(
        &w,
        "2026-11-01",
        "2026-11-01T05:15:00Z",
        "2026-11-01T06:45:00Z",
        minutes(90),
    );
}

#[test]
fn new_york_a_night_window_lasts_5_hours_in_spring_and_7_in_autumn() {
    let w = window(&["sat"], "22:00", "04:00", "America/New_York");
    assert_occurrence(
        &w,
        "2026-03-07",
        "2026-03-08T03:00:00Z",
        "2026-03-08T08:00:00Z",
        hours(5),
    );
    assert_occurrence(
        &w,
        "2026-10-31",
        "2026-11-01T02:00:00Z",
        "2026-11-01T09:00:00Z",
        hours(7),
    );
    // Sunday 01:30 EST (the second one) is still inside Saturday's window.
    assert!(w.is_active(utc("2026-11-01T06:30:00Z")));
}

// === Australia/Sydney: 2026-04-05 03:00 AEDT -> 02:00 AEST; 2026-10-04 02:00 AEST -> 03:00 AEDT ===

#[test]
fn sydney_the_repeated_autumn_hour_starts_early_and_ends_late() {
    // April is autumn in Sydney: 02:30 AEDT = 15:30Z, 02:45 AEST = 16:45Z.
    let w = window(&["sun"], "02:30", "02:45", "Australia/Sydney");
    assert_occurrence(
        &w,
        "2026-04-05",
        "2026-04-04T15:30:00Z",
        "2026-04-04T16:45:00Z",
        minutes(75),
    );
}

#[test]
fn sydney_a_start_in_the_spring_gap_opens_when_the_clocks_jump() {
    let w = window(&["sun"], "02:30", "05:00", "Australia/Sydney");
    assert_occurrence(
        &w,
        "2026-10-04",
        "2026-10-03T16:00:00Z",
        "2026-10-03T18:00:00Z",
        hours(2),
    );
}

#[test]
fn sydney_a_night_window_lasts_7_hours_in_april_and_5_in_october() {
    let w = window(&["sat"], "22:00", "04:00", "Australia/Sydney");
    assert_occurrence(
        &w,
        "2026-04-04",
        "2026-04-04T11:00:00Z",
        "2026-04-04T18:00:00Z",
        hours(7),
    );
    assert_occurrence(
        &w,
        "2026-10-03",
        "2026-10-03T12:00:00Z",
        "2026-10-03T17:00:00Z",
        hours(5),
    );
    // Sunday 03:30 AEDT, after the jump, is in Saturday's window.
    assert!(w.is_active(utc("2026-10-03T16:30:00Z")));
}

// === matching ===

#[test]
fn a_maintenance_window_applies_only_to_matching_checks() {
    let w = window(&["sat"], "22:00", "04:00", "Europe/Oslo");
    assert!(w.matches(&labels(&[("team", "db"), ("check", "pg")])));
    assert!(!w.matches(&labels(&[("team", "web")])));
    let everything = Maintenance {
        matchers: Vec::new(),
        ..w
    };
    assert!(
        !everything.matches(&labels(&[("team", "db")])),
        "no matchers match nothing"
    );
}

// === Silence ===

fn silence(matchers: &[(&str, &str)], starts_at: &str, ends_at: &str) -> Result<Silence, String> {
    let map: BTreeMap<String, String> = labels(matchers);
    Silence::new(
        parse_matchers(&map)?,
        utc(starts_at),
        utc(ends_at),
        "alice",
        "DB migration",
    )
}

#[test]
fn a_silence_is_active_from_its_start_until_just_before_its_end() {
    let s = silence(
        &[("check", "api-health")],
        "2026-11-24T22:00:00Z",
        "2026-11-25T02:00:00Z",
    )
    .unwrap();
    assert!(!s.is_active(utc("2026-11-24T21:59:59Z")));
    assert!(s.is_active(utc("2026-11-24T22:00:00Z")));
    assert!(s.is_active(utc("2026-11-25T01:59:59Z")));
    assert!(!s.is_active(utc("2026-11-25T02:00:00Z")));
}

#[test]
fn a_silence_matches_when_every_matcher_holds() {
    let s = silence(
        &[("check", "~api-.*"), ("env", "!staging")],
        "2026-11-24T22:00:00Z",
        "2026-11-25T02:00:00Z",
    )
    .unwrap();
    assert!(s.matches(&labels(&[("check", "api-health"), ("env", "prod")])));
    assert!(s.matches(&labels(&[("check", "api-health")])));
    assert!(!s.matches(&labels(&[("check", "api-health"), ("env", "staging")])));
    assert!(!s.matches(&labels(&[("check", "web-health"), ("env", "prod")])));
}

#[test]
fn a_silence_of_everything_a_backwards_one_and_an_anonymous_one_are_refused() {
    let e = silence(&[], "2026-11-24T22:00:00Z", "2026-11-25T02:00:00Z").unwrap_err();
    assert_eq!(
        e,
        "a silence needs at least one matcher (a silence of everything would hide every alert)"
    );
    let e = silence(
        &[("check", "x")],
        "2026-11-24T22:00:00Z",
        "2026-11-24T22:00:00Z",
    )
    .unwrap_err();
    assert_eq!(
        e,
        "ends_at 2026-11-24T22:00:00Z is not after starts_at 2026-11-24T22:00:00Z"
    );
    let m = vec![Matcher::parse("check", "x").unwrap()];
    let e = Silence::new(
        m.clone(),
        utc("2026-11-24T22:00:00Z"),
        utc("2026-11-25T02:00:00Z"),
        " ",
        "",
    )
    .unwrap_err();
    assert_eq!(e, "author must not be empty");

    // Built by hand without matchers, it still silences nothing.
    let mut s = Silence::new(
        m,
        utc("2026-11-24T22:00:00Z"),
        utc("2026-11-25T02:00:00Z"),
        "alice",
        "",
    )
    .unwrap();
    s.matchers.clear();
    assert!(!s.matches(&labels(&[("check", "x")])));
}

// === matchers: written form and map form ===

#[test]
fn written_matchers_parse_back_to_the_same_matcher() {
    for value in [
        "web",
        "",
        "!web",
        "~api-.*",
        "!~.*-canary",
        "~",
        "~~x",
        "\\!important",
        "\\~x",
        "\\\\x",
        "!\\~x",
        "!\\!x",
        "!\\\\x",
        "a\\b!~",
    ] {
        let m = Matcher::parse("tag", value).unwrap();
        let again = Matcher::parse("tag", &m.written()).unwrap();
        assert_eq!(again, m, "{value:?} written as {:?}", m.written());
    }
}

#[test]
fn written_escapes_exactly_a_leading_operator() {
    let eq = |v: &str| Matcher {
        name: "tag".to_owned(),
        op: varde::coordinator::rules::MatchOp::Equal(v.to_owned()),
    };
    let ne = |v: &str| Matcher {
        name: "tag".to_owned(),
        op: varde::coordinator::rules::MatchOp::NotEqual(v.to_owned()),
    };
    assert_eq!(eq("!important").written(), "\\!important");
    assert_eq!(eq("~x").written(), "\\~x");
    assert_eq!(eq("\\x").written(), "\\\\x");
    assert_eq!(eq("a!b").written(), "a!b");
    assert_eq!(ne("~x").written(), "!\\~x");
    assert_eq!(ne("\\x").written(), "!\\\\x");
    assert_eq!(ne("x").written(), "!x");
    for m in [eq("!x"), eq("\\"), ne("!"), ne("\\"), ne("~")] {
        assert_eq!(Matcher::parse("tag", &m.written()).unwrap(), m);
    }
    assert_eq!(
        Matcher::parse("check", "~api-.*").unwrap().written(),
        "~api-.*"
    );
}

#[test]
fn the_map_form_round_trips_and_names_a_bad_label() {
    let map = labels(&[("check", "~api-.*"), ("env", "!staging"), ("tag", "\\!x")]);
    let ms = parse_matchers(&map).unwrap();
    assert_eq!(ms.len(), 3);
    assert_eq!(matchers_map(&ms), map);

    let e = parse_matchers(&labels(&[("service", "~api-(")])).unwrap_err();
    assert!(
        e.starts_with("match.service: invalid regex \"api-(\""),
        "{e}"
    );
    let e = parse_matchers(&labels(&[("bad-name", "x")])).unwrap_err();
    assert_eq!(
        e,
        "match: \"bad-name\" is not a valid label name (expected [a-zA-Z_][a-zA-Z0-9_]*)"
    );
}

// === parsing helpers ===

#[test]
fn days_times_zones_and_instants_parse_in_their_documented_forms() {
    assert_eq!(parse_weekday("sat"), Ok(Weekday::Sat));
    assert_eq!(parse_weekday("Saturday"), Ok(Weekday::Sat));
    assert_eq!(parse_weekday("MON"), Ok(Weekday::Mon));
    assert!(parse_weekday("sa").is_err());
    assert_eq!(
        parse_time_of_day("22:00"),
        Ok(NaiveTime::from_hms_opt(22, 0, 0).unwrap())
    );
    assert_eq!(
        parse_time_of_day("04:05:06"),
        Ok(NaiveTime::from_hms_opt(4, 5, 6).unwrap())
    );
    for bad in [
        "24:00",
        "9:00",
        "22:60",
        "22:00:60",
        "22",
        "22:00:00:00",
        "ab:cd",
        "22:00:00.5",
    ] {
        assert!(parse_time_of_day(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_timezone("Europe/Oslo"), Ok(chrono_tz::Europe::Oslo));
    assert_eq!(
        parse_timezone("europe/oslo"),
        Err("unknown time zone \"europe/oslo\": did you mean \"Europe/Oslo\"?".to_owned())
    );
    assert_eq!(
        parse_instant("2026-11-24T23:00:00+01:00"),
        Ok(utc("2026-11-24T22:00:00Z"))
    );
}

// === config ===

fn load(text: &str) -> Result<Rules, Vec<String>> {
    parse_files(&[("maintenance.toml".into(), text.to_owned())])
        .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
}

fn ok(text: &str) -> Rules {
    load(text).unwrap_or_else(|e| panic!("expected a valid file, got:\n{e:#?}"))
}

#[track_caller]
fn one_error(text: &str) -> String {
    let errs = load(text).expect_err("expected errors");
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    errs.into_iter().next().unwrap()
}

const SILENCE: &str = r#"
[[silence]]
match = { check = "api-health", env = "prod" }
starts_at = "2026-11-24T22:00:00Z"
ends_at = "2026-11-25T02:00:00Z"
author = "alice"
comment = "DB migration"
"#;

const MAINTENANCE: &str = r#"
[[maintenance]]
name = "db-weekly"
match = { team = "db" }
days = ["sat", "Sunday"]
start = "22:00"
end = "04:00"
timezone = "Europe/Oslo"
comment = "vacuum"
"#;

#[test]
fn the_repository_example_loads_its_maintenance_window() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("alert-rules");
    let rules = load_dir(&dir).unwrap_or_else(|e| panic!("alert-rules/ is invalid:\n{e}"));
    assert!(
        rules.maintenance.iter().any(|m| m.name == "db-weekly"),
        "{:?}",
        rules.maintenance
    );
}

#[test]
fn a_silence_and_a_maintenance_window_load_with_their_values() {
    let rules = ok(&format!(
        "{SILENCE}{MAINTENANCE}\n[[rule]]\nname = \"d\"\nkind = \"down\"\n"
    ));
    assert_eq!(rules.rules.len(), 1);
    assert_eq!(
        rules.silences,
        [Silence {
            matchers: vec![
                Matcher::parse("check", "api-health").unwrap(),
                Matcher::parse("env", "prod").unwrap(),
            ],
            starts_at: utc("2026-11-24T22:00:00Z"),
            ends_at: utc("2026-11-25T02:00:00Z"),
            author: "alice".to_owned(),
            comment: "DB migration".to_owned(),
        }]
    );
    assert_eq!(
        rules.maintenance,
        [Maintenance {
            name: "db-weekly".to_owned(),
            matchers: vec![Matcher::parse("team", "db").unwrap()],
            days: vec![Weekday::Sat, Weekday::Sun],
            start: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(4, 0, 0).unwrap(),
            tz: chrono_tz::Europe::Oslo,
            comment: "vacuum".to_owned(),
        }]
    );
}

#[test]
fn toml_date_times_and_local_times_are_accepted_and_comments_are_optional() {
    let rules = ok(r#"
[[silence]]
match = { check = "x" }
starts_at = 2026-11-24T23:00:00+01:00
ends_at = 2026-11-25T02:00:00Z
author = "bob"

[[maintenance]]
name = "m"
match = { team = "db" }
days = ["mon"]
start = 22:00:00
end = "04:00:30"
timezone = "UTC"
"#);
    let s = &rules.silences[0];
    assert_eq!(s.starts_at, utc("2026-11-24T22:00:00Z"));
    assert_eq!(s.ends_at, utc("2026-11-25T02:00:00Z"));
    assert_eq!(s.comment, "");
    let m = &rules.maintenance[0];
    assert_eq!(m.start, NaiveTime::from_hms_opt(22, 0, 0).unwrap());
    assert_eq!(m.end, NaiveTime::from_hms_opt(4, 0, 30).unwrap());
    assert_eq!(m.tz, chrono_tz::UTC);
    assert_eq!(m.comment, "");
}

#[test]
fn an_unknown_time_zone_is_named() {
    let e = one_error(&MAINTENANCE.replace("Europe/Oslo", "Oslo"));
    assert_eq!(
        e,
        "maintenance.toml:8:12: timezone: unknown time zone \"Oslo\": expected an IANA name like \"Europe/Oslo\""
    );
}

#[test]
fn an_unknown_or_repeated_day_is_an_error_at_the_day() {
    let e = one_error(&MAINTENANCE.replace("\"Sunday\"", "\"sundy\""));
    assert_eq!(
        e,
        "maintenance.toml:5:16: days: unknown day \"sundy\": expected mon, tue, wed, thu, fri, sat or sun (or the full name)"
    );
    let e = one_error(&MAINTENANCE.replace("\"Sunday\"", "\"Saturday\""));
    assert_eq!(
        e,
        "maintenance.toml:5:16: days: \"Saturday\" names a day already listed"
    );
    let e = one_error(&MAINTENANCE.replace("[\"sat\", \"Sunday\"]", "[]"));
    assert_eq!(e, "maintenance.toml:5:8: days: must name at least one day");
    let e = one_error(&MAINTENANCE.replace("[\"sat\", \"Sunday\"]", "\"sat\""));
    assert_eq!(
        e,
        "maintenance.toml:5:8: days: expected an array of day names like [\"sat\", \"sun\"], found a string"
    );
}

#[test]
fn a_bad_time_of_day_is_an_error_at_the_time() {
    let e = one_error(&MAINTENANCE.replace("\"04:00\"", "\"4am\""));
    assert_eq!(
        e,
        "maintenance.toml:7:7: end: invalid time \"4am\": expected HH:MM or HH:MM:SS (24-hour, e.g. \"22:00\")"
    );
    let e = one_error(&MAINTENANCE.replace("\"22:00\"", "\"24:00\""));
    assert_eq!(
        e,
        "maintenance.toml:6:9: start: invalid time \"24:00\": expected HH:MM or HH:MM:SS (24-hour, e.g. \"22:00\")"
    );
}

#[test]
fn ends_at_not_after_starts_at_is_an_error_at_ends_at() {
    let e = one_error(&SILENCE.replace("2026-11-25T02:00:00Z", "2026-11-24T22:00:00Z"));
    assert_eq!(
        e,
        "maintenance.toml:5:11: ends_at: must be after starts_at (2026-11-24T22:00:00Z)"
    );
    let e = one_error(&SILENCE.replace("2026-11-25T02:00:00Z", "2026-11-24T21:00:00Z"));
    assert_eq!(
        e,
        "maintenance.toml:5:11: ends_at: must be after starts_at (2026-11-24T22:00:00Z)"
    );
}

#[test]
fn a_bad_instant_is_an_error_at_the_value() {
    let e = one_error(&SILENCE.replace("\"2026-11-24T22:00:00Z\"", "\"tomorrow\""));
    assert!(
        e.starts_with("maintenance.toml:4:13: starts_at: invalid date-time \"tomorrow\": "),
        "{e}"
    );
    assert!(
        e.ends_with("(expected RFC 3339, e.g. \"2026-11-24T22:00:00Z\")"),
        "{e}"
    );
    let e = one_error(&SILENCE.replace("\"2026-11-24T22:00:00Z\"", "2026-11-24T22:00:00"));
    assert_eq!(
        e,
        "maintenance.toml:4:13: starts_at: 2026-11-24T22:00:00 is not a date and time with a UTC offset (expected e.g. \"2026-11-24T22:00:00Z\")"
    );
}

#[test]
fn a_missing_or_empty_author_is_an_error() {
    let e = one_error(&SILENCE.replace("author = \"alice\"\n", ""));
    assert_eq!(
        e,
        "maintenance.toml:2:1: silence: missing `author` (who made the silence)"
    );
    let e = one_error(&SILENCE.replace("\"alice\"", "\"\""));
    assert_eq!(e, "maintenance.toml:6:10: author: must not be empty");
}

#[test]
fn an_empty_or_missing_match_is_an_error() {
    let e = one_error(&SILENCE.replace("{ check = \"api-health\", env = \"prod\" }", "{}"));
    assert_eq!(
        e,
        "maintenance.toml:3:9: match: must not be empty: a silence needs at least one label matcher (a silence of everything would hide every alert)"
    );
    let e = one_error(&MAINTENANCE.replace("{ team = \"db\" }", "{ }"));
    assert_eq!(
        e,
        "maintenance.toml:4:9: match: must not be empty: a maintenance window needs at least one label matcher (a window over everything would hide every alert)"
    );
    let e = one_error(&MAINTENANCE.replace("match = { team = \"db\" }\n", ""));
    assert_eq!(
        e,
        "maintenance.toml:2:1: maintenance: missing `match` (at least one label matcher, e.g. match = { check = \"api-health\" })"
    );
    let e = one_error(&SILENCE.replace("\"api-health\"", "\"~api-(\""));
    assert!(
        e.starts_with("maintenance.toml:3:19: match.check: invalid regex \"api-(\""),
        "{e}"
    );
}

#[test]
fn unknown_keys_are_errors_at_the_key() {
    let e = one_error(&SILENCE.replace("comment =", "reason ="));
    assert_eq!(
        e,
        "maintenance.toml:7:1: unknown field `reason`, expected one of `match`, `starts_at`, `ends_at`, `author`, `comment`"
    );
    let errs = load(&MAINTENANCE.replace("timezone =", "tz =")).unwrap_err();
    assert_eq!(
        errs,
        [
            "maintenance.toml:2:1: maintenance: missing `timezone` (an IANA name like \"Europe/Oslo\")",
            "maintenance.toml:8:1: unknown field `tz`, expected one of `name`, `match`, `days`, `start`, `end`, `timezone`, `comment`",
        ]
    );
}

#[test]
fn a_duplicate_maintenance_name_points_at_the_second_and_names_the_first() {
    let errs = parse_files(&[
        ("a.toml".into(), MAINTENANCE.to_owned()),
        ("b.toml".into(), MAINTENANCE.replace("vacuum", "again")),
    ])
    .unwrap_err()
    .0
    .iter()
    .map(|e| e.to_string())
    .collect::<Vec<_>>();
    assert_eq!(
        errs,
        ["b.toml:3:8: name: duplicate maintenance name \"db-weekly\" (first defined at a.toml:3)"]
    );
    // A rule may share a maintenance window's name: separate name spaces.
    ok(&format!(
        "{MAINTENANCE}\n[[rule]]\nname = \"db-weekly\"\nkind = \"down\"\n"
    ));
}

#[test]
fn every_error_in_a_table_is_reported_at_once() {
    let errs = load(
        r#"
[[maintenance]]
match = {}
days = ["sat", "caturday"]
start = "25:00"
timezone = "Mars/Olympus"
"#,
    )
    .unwrap_err();
    assert_eq!(
        errs,
        [
            "maintenance.toml:2:1: maintenance: missing `end` (the local time the window closes, e.g. \"04:00\")",
            "maintenance.toml:2:1: maintenance: missing `name` (unique among maintenance windows)",
            "maintenance.toml:3:9: match: must not be empty: a maintenance window needs at least one label matcher (a window over everything would hide every alert)",
            "maintenance.toml:4:16: days: unknown day \"caturday\": expected mon, tue, wed, thu, fri, sat or sun (or the full name)",
            "maintenance.toml:5:9: start: invalid time \"25:00\": expected HH:MM or HH:MM:SS (24-hour, e.g. \"22:00\")",
            "maintenance.toml:6:12: timezone: unknown time zone \"Mars/Olympus\": expected an IANA name like \"Europe/Oslo\"",
        ]
    );
}

#[test]
fn unknown_top_level_tables_list_every_kind_and_a_single_table_asks_for_the_array() {
    let e = one_error("[[silences]]\nauthor = \"a\"\n");
    assert_eq!(
        e,
        "maintenance.toml:1:3: unknown field `silences`, expected one of `rule`, `silence`, `maintenance`, `team`, `channel`, `route`, `policy`, `oncall`"
    );
    let e = one_error(&MAINTENANCE.replace("[[maintenance]]", "[maintenance]"));
    assert_eq!(
        e,
        "maintenance.toml:2:1: maintenance: expected an array of tables: write each maintenance window under its own [[maintenance]] header"
    );
}
