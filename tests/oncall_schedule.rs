//! Follow-the-sun on-call: the team on duty at exact instants across a
//! week, overlaps resolved by priority order, gaps going to the fallback,
//! exact UTC handoffs across the daylight-saving changes of three zones
//! (both hemispheres), coverage segments, `file:line:column` config errors
//! and the `varde oncall` / `varde validate` command line. The instant is
//! always an argument: no test reads the clock (but validate's warning).

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use varde::coordinator::rules::{Rules, load_dir, parse_files};
use varde::oncall::{Duty, OnCall, Segment};
use varde::probe::config::ConfigErrors;

fn utc(s: &str) -> DateTime<Utc> {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test instant {s:?}: {e}"))
}

fn parse(text: &str) -> Result<Rules, ConfigErrors> {
    parse_files(&[(PathBuf::from("oncall.toml"), text.to_owned())])
}

fn oncall(text: &str) -> OnCall {
    parse(text)
        .unwrap_or_else(|e| panic!("expected a valid schedule, got:\n{e}"))
        .oncall
        .expect("an on-call schedule")
}

/// The errors, each as `oncall.toml:line:column: message`.
fn errors(text: &str) -> Vec<String> {
    parse(text)
        .expect_err("expected errors")
        .0
        .iter()
        .map(|e| e.to_string())
        .collect()
}

#[track_caller]
fn assert_duty(o: &OnCall, at: &str, team: &str, covering: &[&str]) {
    let duty = o.on_duty(utc(at));
    assert_eq!(
        duty,
        Duty {
            team: team.to_owned(),
            covering: covering.iter().map(|s| s.to_string()).collect(),
            fallback: covering.is_empty(),
        },
        "at {at}"
    );
}

// === follow-the-sun over a week ===

/// In the week of Monday 2026-03-23 (New York already on EDT, Oslo still
/// on CET, Sydney still on AEDT):
///   apac  09:00–17:00 AEDT  = 22:00Z the day before – 06:00Z
///   emea  08:00–16:00 CET   = 07:00Z – 15:00Z
///   amer  09:00–17:00 EDT   = 13:00Z – 21:00Z
/// so 06–07Z and 21–22Z are gaps on weekdays, 13–15Z an emea/amer overlap,
/// and the weekend from Friday 21:00Z to Sunday 22:00Z is a gap.
const FOLLOW_THE_SUN: &str = r#"
[[channel]]
name = "email"
type = "email"
smtp_host = "localhost"
from = "varde@example.com"

[[channel]]
name = "slack"
type = "slack"
url = "https://hooks.slack.com/services/T000/B000/XXXX"

[oncall]
order = ["emea", "amer", "apac"]
fallback = "platform"

[[team]]
name = "apac"
timezone = "Australia/Sydney"
contacts = ["email:apac@example.com"]
[[team.shift]]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "09:00"
end = "17:00"

[[team]]
name = "amer"
timezone = "America/New_York"
contacts = ["email:amer@example.com"]
[[team.shift]]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "09:00"
end = "17:00"

[[team]]
name = "emea"
timezone = "Europe/Oslo"
contacts = ["email:emea@example.com", "slack:#emea-oncall"]
[[team.shift]]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "08:00"
end = "16:00"

[[team]]
name = "platform"
timezone = "UTC"
contacts = ["email:platform@example.com"]
"#;

#[test]
fn follow_the_sun_hands_over_at_the_exact_instants_of_a_week() {
    let o = oncall(FOLLOW_THE_SUN);
    // `order` puts emea first although apac is written first.
    let names: Vec<&str> = o.teams.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["emea", "amer", "apac", "platform"]);
    assert_eq!(
        o.team("emea").unwrap().contacts,
        ["email:emea@example.com", "slack:#emea-oncall"]
    );

    // Sunday evening: Sydney's Monday starts at 22:00Z.
    assert_duty(&o, "2026-03-22T21:59:59Z", "platform", &[]);
    assert_duty(&o, "2026-03-22T22:00:00Z", "apac", &["apac"]);
    for day in 23..=27 {
        let at = |hms: &str| format!("2026-03-{day}T{hms}Z");
        assert_duty(&o, &at("05:59:59"), "apac", &["apac"]);
        assert_duty(&o, &at("06:00:00"), "platform", &[]);
        assert_duty(&o, &at("06:59:59"), "platform", &[]);
        assert_duty(&o, &at("07:00:00"), "emea", &["emea"]);
        assert_duty(&o, &at("12:59:59"), "emea", &["emea"]);
        // Overlap: emea is first in `order`.
        assert_duty(&o, &at("13:00:00"), "emea", &["emea", "amer"]);
        assert_duty(&o, &at("14:59:59"), "emea", &["emea", "amer"]);
        assert_duty(&o, &at("15:00:00"), "amer", &["amer"]);
        assert_duty(&o, &at("20:59:59"), "amer", &["amer"]);
        assert_duty(&o, &at("21:00:00"), "platform", &[]);
        if day < 27 {
            assert_duty(&o, &at("22:00:00"), "apac", &["apac"]);
        } else {
            // Sydney's Saturday has no shift.
            assert_duty(&o, &at("22:00:00"), "platform", &[]);
        }
    }
    assert_duty(&o, "2026-03-28T12:00:00Z", "platform", &[]);
    assert_duty(&o, "2026-03-29T21:59:59Z", "platform", &[]);
    assert_duty(&o, "2026-03-29T22:00:00Z", "apac", &["apac"]);
}

#[test]
fn overlaps_go_to_the_first_team_in_order_and_order_defaults_to_file_order() {
    let reordered = FOLLOW_THE_SUN.replace(
        r#"order = ["emea", "amer", "apac"]"#,
        r#"order = ["amer", "emea"]"#,
    );
    let o = oncall(&reordered);
    // Teams missing from `order` follow it in written order.
    let names: Vec<&str> = o.teams.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["amer", "emea", "apac", "platform"]);
    assert_duty(&o, "2026-03-24T13:00:00Z", "amer", &["amer", "emea"]);

    let unordered = FOLLOW_THE_SUN.replace(r#"order = ["emea", "amer", "apac"]"#, "");
    let o = oncall(&unordered);
    let names: Vec<&str> = o.teams.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["apac", "amer", "emea", "platform"]);
    assert_duty(&o, "2026-03-24T14:00:00Z", "amer", &["amer", "emea"]);
}

#[test]
fn a_fallback_with_shifts_covers_them_like_any_team() {
    let text = FOLLOW_THE_SUN.replace(
        "contacts = [\"email:platform@example.com\"]",
        "contacts = [\"email:platform@example.com\"]\n[[team.shift]]\ndays = [\"sat\"]\nstart = \"00:00\"\nend = \"00:00\"",
    );
    let o = oncall(&text);
    assert_duty(&o, "2026-03-28T12:00:00Z", "platform", &["platform"]);
    assert_duty(&o, "2026-03-29T12:00:00Z", "platform", &[]);
}

// === coverage ===

fn seg(start: &str, end: &str, team: &str, covering: &[&str]) -> Segment {
    Segment {
        start: utc(start),
        end: utc(end),
        team: team.to_owned(),
        covering: covering.iter().map(|s| s.to_string()).collect(),
        gap: covering.is_empty(),
    }
}

#[test]
fn coverage_over_a_week_splits_at_every_shift_edge_and_shows_gaps() {
    let o = oncall(FOLLOW_THE_SUN);
    let from = utc("2026-03-23T00:00:00Z");
    let got = o.coverage(from, from + TimeDelta::days(7));
    let mut want = vec![seg(
        "2026-03-23T00:00:00Z",
        "2026-03-23T06:00:00Z",
        "apac",
        &["apac"],
    )];
    for day in 23..=27 {
        let at = |h: u32| format!("2026-03-{day}T{h:02}:00:00Z");
        want.push(seg(&at(6), &at(7), "platform", &[]));
        want.push(seg(&at(7), &at(13), "emea", &["emea"]));
        want.push(seg(&at(13), &at(15), "emea", &["emea", "amer"]));
        want.push(seg(&at(15), &at(21), "amer", &["amer"]));
        if day < 27 {
            want.push(seg(&at(21), &at(22), "platform", &[]));
            let next = format!("2026-03-{}T06:00:00Z", day + 1);
            want.push(seg(&at(22), &next, "apac", &["apac"]));
        }
    }
    want.push(seg(
        "2026-03-27T21:00:00Z",
        "2026-03-29T22:00:00Z",
        "platform",
        &[],
    ));
    want.push(seg(
        "2026-03-29T22:00:00Z",
        "2026-03-30T00:00:00Z",
        "apac",
        &["apac"],
    ));
    assert_eq!(got, want);
    // Segments tile the range.
    assert!(got.windows(2).all(|w| w[0].end == w[1].start));
    assert_eq!(o.gaps(from, from + TimeDelta::days(7)).len(), 10);
    assert!(o.coverage(from, from).is_empty());
}

// === daylight-saving changes ===

/// Two teams in one zone handing over on Sunday `date` at local `handoff`:
/// night works Saturday 22:00 → handoff, day works handoff → 12:00.
fn handoff(tz: &str, handoff: &str, order: &[&str]) -> OnCall {
    let order: Vec<String> = order.iter().map(|n| format!("{n:?}")).collect();
    oncall(&format!(
        r#"
[oncall]
order = [{}]
fallback = "platform"

[[team]]
name = "night"
timezone = "{tz}"
[[team.shift]]
days = ["sat"]
start = "22:00"
end = "{handoff}"

[[team]]
name = "day"
timezone = "{tz}"
[[team.shift]]
days = ["sun"]
start = "{handoff}"
end = "12:00"

[[team]]
name = "platform"
timezone = "UTC"
"#,
        order.join(", ")
    ))
}

fn sunday_shift(o: &OnCall, team: &str, date: &str) -> (DateTime<Utc>, DateTime<Utc>) {
    let d: NaiveDate = date.parse().unwrap();
    o.team(team).unwrap().shifts[0].occurrence(d).unwrap()
}

/// Spring forward: a handoff time in the skipped hour is the instant the
/// clocks jump, for the ending and the starting shift alike: no gap.
#[track_caller]
fn assert_spring_handoff(tz: &str, sunday: &str, skipped: &str, jump: &str) {
    let o = handoff(tz, skipped, &["night", "day"]);
    let jump = utc(jump);
    assert_eq!(sunday_shift(&o, "day", sunday).0, jump, "{tz} day start");
    let saturday = (sunday.parse::<NaiveDate>().unwrap() - TimeDelta::days(1)).to_string();
    assert_eq!(
        sunday_shift(&o, "night", &saturday).1,
        jump,
        "{tz} night end"
    );
    let s = TimeDelta::seconds(1);
    assert_eq!(o.on_duty(jump - s).covering, ["night"], "{tz} before");
    assert_eq!(o.on_duty(jump).covering, ["day"], "{tz} at the jump");
    assert!(
        o.gaps(jump - TimeDelta::hours(3), jump + TimeDelta::hours(3))
            .is_empty()
    );
}

/// Fall back: a handoff time in the repeated hour ends the night shift at
/// its later instant and starts the day shift at its earlier one, so both
/// cover the repeated hour and the order decides.
#[track_caller]
fn assert_fall_handoff(tz: &str, sunday: &str, repeated: &str, earlier: &str, later: &str) {
    let (earlier, later) = (utc(earlier), utc(later));
    assert_eq!(later - earlier, TimeDelta::hours(1));
    let s = TimeDelta::seconds(1);
    let o = handoff(tz, repeated, &["night", "day"]);
    assert_eq!(sunday_shift(&o, "day", sunday).0, earlier, "{tz} day start");
    let saturday = (sunday.parse::<NaiveDate>().unwrap() - TimeDelta::days(1)).to_string();
    assert_eq!(
        sunday_shift(&o, "night", &saturday).1,
        later,
        "{tz} night end"
    );
    assert_eq!(o.on_duty(earlier - s).covering, ["night"]);
    assert_eq!(o.on_duty(earlier).covering, ["night", "day"]);
    assert_eq!(o.on_duty(earlier).team, "night");
    assert_eq!(o.on_duty(later - s).team, "night");
    assert_eq!(o.on_duty(later).covering, ["day"]);
    assert_eq!(
        o.coverage(earlier - TimeDelta::hours(1), later + TimeDelta::hours(1)),
        vec![
            Segment {
                start: earlier - TimeDelta::hours(1),
                end: earlier,
                team: "night".into(),
                covering: vec!["night".into()],
                gap: false,
            },
            Segment {
                start: earlier,
                end: later,
                team: "night".into(),
                covering: vec!["night".into(), "day".into()],
                gap: false,
            },
            Segment {
                start: later,
                end: later + TimeDelta::hours(1),
                team: "day".into(),
                covering: vec!["day".into()],
                gap: false,
            },
        ]
    );
    // With day first it takes the repeated hour.
    let o = handoff(tz, repeated, &["day", "night"]);
    assert_eq!(o.on_duty(earlier).team, "day");
    assert_eq!(o.on_duty(earlier - s).team, "night");
}

#[test]
fn oslo_spring_forward_handoff_in_the_skipped_hour_is_the_jump() {
    // 02:00 CET → 03:00 CEST on 2026-03-29: the jump is 01:00Z.
    assert_spring_handoff("Europe/Oslo", "2026-03-29", "02:30", "2026-03-29T01:00:00Z");
}

#[test]
fn oslo_fall_back_handoff_in_the_repeated_hour_overlaps_for_an_hour() {
    // 03:00 CEST → 02:00 CET on 2026-10-25: 02:30 is 00:30Z and 01:30Z.
    assert_fall_handoff(
        "Europe/Oslo",
        "2026-10-25",
        "02:30",
        "2026-10-25T00:30:00Z",
        "2026-10-25T01:30:00Z",
    );
}

#[test]
fn new_york_spring_forward_handoff_in_the_skipped_hour_is_the_jump() {
    // 02:00 EST → 03:00 EDT on 2026-03-08: the jump is 07:00Z.
    assert_spring_handoff(
        "America/New_York",
        "2026-03-08",
        "02:30",
        "2026-03-08T07:00:00Z",
    );
}

#[test]
fn new_york_fall_back_handoff_in_the_repeated_hour_overlaps_for_an_hour() {
    // 02:00 EDT → 01:00 EST on 2026-11-01: 01:30 is 05:30Z and 06:30Z.
    assert_fall_handoff(
        "America/New_York",
        "2026-11-01",
        "01:30",
        "2026-11-01T05:30:00Z",
        "2026-11-01T06:30:00Z",
    );
}

#[test]
fn sydney_fall_back_in_april_handoff_in_the_repeated_hour_overlaps() {
    // 03:00 AEDT → 02:00 AEST on 2026-04-05: 02:30 is 15:30Z and 16:30Z on
    // Saturday 2026-04-04.
    assert_fall_handoff(
        "Australia/Sydney",
        "2026-04-05",
        "02:30",
        "2026-04-04T15:30:00Z",
        "2026-04-04T16:30:00Z",
    );
}

#[test]
fn sydney_spring_forward_in_october_handoff_in_the_skipped_hour_is_the_jump() {
    // 02:00 AEST → 03:00 AEDT on 2026-10-04: the jump is 16:00Z on
    // Saturday 2026-10-03.
    assert_spring_handoff(
        "Australia/Sydney",
        "2026-10-04",
        "02:30",
        "2026-10-03T16:00:00Z",
    );
}

#[test]
fn an_overnight_shift_lasts_one_hour_less_in_spring_and_one_more_in_autumn() {
    let o = oncall(
        r#"
[oncall]
fallback = "night"
[[team]]
name = "night"
timezone = "Europe/Oslo"
[[team.shift]]
days = ["sat"]
start = "22:00"
end = "06:00"
"#,
    );
    let shift = &o.team("night").unwrap().shifts[0];
    let length = |d: &str| {
        let (start, end) = shift.occurrence(d.parse().unwrap()).unwrap();
        end - start
    };
    assert_eq!(length("2026-03-21"), TimeDelta::hours(8));
    assert_eq!(length("2026-03-28"), TimeDelta::hours(7));
    assert_eq!(length("2026-10-24"), TimeDelta::hours(9));
}

/// Different zones change clocks on different dates: a handoff that meets
/// exactly while both are on standard time opens a gap once New York has
/// sprung forward and Oslo has not.
#[test]
fn zones_changing_clocks_on_different_dates_open_a_gap() {
    let o = oncall(
        r#"
[oncall]
fallback = "platform"
[[team]]
name = "emea"
timezone = "Europe/Oslo"
[[team.shift]]
days = ["mon"]
start = "08:00"
end = "15:00"
[[team]]
name = "amer"
timezone = "America/New_York"
[[team.shift]]
days = ["mon"]
start = "09:00"
end = "17:00"
[[team]]
name = "platform"
timezone = "UTC"
"#,
    );
    // 2026-03-02: CET and EST, 14:00Z both ways: no gap.
    let day = |d: &str| {
        (
            utc(&format!("{d}T00:00:00Z")),
            utc(&format!("{d}T23:59:59Z")),
        )
    };
    let (from, to) = day("2026-03-02");
    let inner: Vec<_> = o
        .gaps(from, to)
        .into_iter()
        .map(|g| (g.start, g.end))
        .collect();
    assert_eq!(
        inner,
        [
            (from, utc("2026-03-02T07:00:00Z")),
            (utc("2026-03-02T22:00:00Z"), to)
        ]
    );
    // 2026-03-09: New York on EDT (09:00 = 13:00Z), Oslo still CET: overlap.
    assert_duty(&o, "2026-03-09T13:30:00Z", "emea", &["emea", "amer"]);
    // 2026-10-26: Oslo back on CET (15:00 = 14:00Z), New York still EDT
    // until 2026-11-01 (09:00 = 13:00Z): overlap again; 2026-11-02 meets.
    assert_duty(&o, "2026-10-26T13:30:00Z", "emea", &["emea", "amer"]);
    assert_duty(&o, "2026-11-02T13:59:59Z", "emea", &["emea"]);
    assert_duty(&o, "2026-11-02T14:00:00Z", "amer", &["amer"]);
}

// === configuration errors ===

#[test]
fn unknown_teams_in_order_and_fallback_are_errors_at_their_place() {
    let text = r#"[oncall]
order = ["emea", "amre"]
fallback = "platfrom"

[[team]]
name = "emea"
timezone = "Europe/Oslo"
[[team.shift]]
days = ["mon"]
start = "08:00"
end = "16:00"
"#;
    assert_eq!(
        errors(text),
        [
            r#"oncall.toml:2:18: order: unknown team "amre" (teams: "emea")"#,
            r#"oncall.toml:3:12: fallback: unknown team "platfrom" (teams: "emea")"#,
        ]
    );
}

#[test]
fn bad_timezone_bad_day_and_duplicate_team_are_all_reported() {
    let text = r#"[oncall]
fallback = "emea"

[[team]]
name = "emea"
timezone = "Europe/Olso"
[[team.shift]]
days = ["mon", "funday"]
start = "08:00"
end = "16:00"

[[team]]
name = "emea"
timezone = "europe/oslo"
"#;
    assert_eq!(
        errors(text),
        [
            r#"oncall.toml:6:12: timezone: unknown time zone "Europe/Olso": expected an IANA name like "Europe/Oslo""#,
            r#"oncall.toml:8:16: days: unknown day "funday": expected mon, tue, wed, thu, fri, sat or sun (or the full name)"#,
            r#"oncall.toml:13:8: name: duplicate team name "emea" (first defined at oncall.toml:5)"#,
            r#"oncall.toml:14:12: timezone: unknown time zone "europe/oslo": did you mean "Europe/Oslo"?"#,
        ]
    );
}

#[test]
fn schedule_shape_errors() {
    // Teams without [oncall].
    assert_eq!(
        errors("[[team]]\nname = \"a\"\ntimezone = \"UTC\"\n"),
        [
            "oncall.toml:1:1: team: teams need an [oncall] table naming the `fallback` team (pages no shift covers go to it)"
        ]
    );
    // No fallback; a team other than the fallback without shifts; order
    // listing a team twice.
    let text = r#"[oncall]
order = ["a", "a"]

[[team]]
name = "a"
timezone = "UTC"
"#;
    assert_eq!(
        errors(text),
        [
            "oncall.toml:1:1: oncall: missing `fallback` (the team that gets pages no shift covers)",
            r#"oncall.toml:2:15: order: team "a" is listed twice"#,
            r#"oncall.toml:4:1: team: "a" has no [[team.shift]]; only the fallback team may have none"#,
        ]
    );
    // [oncall] without teams; an unknown key.
    assert_eq!(
        errors("[oncall]\nfallback = \"x\"\nescalate = true\n"),
        [
            "oncall.toml:1:1: oncall: no [[team]] is defined",
            "oncall.toml:3:1: unknown field `escalate`, expected one of `order`, `fallback`",
        ]
    );
}

#[test]
fn oncall_settings_in_two_files_are_an_error_and_teams_may_be_split_across_files() {
    let a = "[oncall]\nfallback = \"b\"\n[[team]]\nname = \"a\"\ntimezone = \"UTC\"\n[[team.shift]]\ndays = [\"mon\"]\nstart = \"08:00\"\nend = \"16:00\"\n";
    let b = "[[team]]\nname = \"b\"\ntimezone = \"UTC\"\n";
    let files = |b: &str| {
        vec![
            (PathBuf::from("a.toml"), a.to_owned()),
            (PathBuf::from("b.toml"), b.to_owned()),
        ]
    };
    let o = parse_files(&files(b)).unwrap().oncall.unwrap();
    assert_eq!(o.fallback, "b");
    assert_eq!(o.teams.len(), 2);
    let errs: Vec<String> = parse_files(&files(&format!("{b}\n[oncall]\nfallback = \"a\"\n")))
        .unwrap_err()
        .0
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        errs,
        ["b.toml:5:1: oncall: defined more than once (first at a.toml:1)"]
    );
}

// === the repository's example and the command line ===

#[test]
fn the_repository_oncall_example_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("alert-rules");
    let rules = load_dir(&dir).unwrap_or_else(|e| panic!("alert-rules/ is invalid:\n{e}"));
    let o = rules
        .oncall
        .expect("alert-rules/oncall.toml defines a schedule");
    assert!(o.team(&o.fallback).is_some());
    assert!(o.teams.len() >= 3);
}

fn config_dir(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("alert-rules")).unwrap();
    std::fs::write(dir.path().join("alert-rules/oncall.toml"), text).unwrap();
    dir
}

fn varde(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_varde"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_oncall_at_prints_the_team_on_duty_and_its_contacts() {
    let dir = config_dir(FOLLOW_THE_SUN);
    let d = dir.path().to_str().unwrap();
    let (code, out, err) = varde(&["oncall", "--config", d, "--at", "2026-03-24T13:30:00Z"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("2026-03-24T13:30:00Z: emea on duty (Europe/Oslo Tue 14:30 CET)\n"),
        "{out}"
    );
    assert!(out.contains("  overlap: amer\n"), "{out}");
    assert!(out.contains("  contact: slack:#emea-oncall\n"), "{out}");

    let (code, out, _) = varde(&["oncall", "--config", d, "--at", "2026-03-28T12:00:00Z"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("2026-03-28T12:00:00Z: platform on duty"),
        "{out}"
    );
    assert!(out.contains("fallback"), "{out}");
}

#[test]
fn cli_oncall_week_lists_segments_and_gaps() {
    let dir = config_dir(FOLLOW_THE_SUN);
    let d = dir.path().to_str().unwrap();
    let (code, out, err) = varde(&[
        "oncall",
        "--config",
        d,
        "--at",
        "2026-03-23T10:00:00+01:00",
        "--week",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "coverage Mon 2026-03-23 – Mon 2026-03-30 (UTC):");
    assert_eq!(lines[1], "Mon 2026-03-23 00:00Z – 06:00Z  apac");
    assert_eq!(
        lines[2],
        "Mon 2026-03-23 06:00Z – 07:00Z  GAP → fallback platform"
    );
    assert_eq!(
        lines[4],
        "Mon 2026-03-23 13:00Z – 15:00Z  emea  (overlap: amer)"
    );
    assert_eq!(
        lines[7],
        "Mon 2026-03-23 22:00Z – Tue 2026-03-24 06:00Z  apac"
    );
    assert!(
        out.contains("Fri 2026-03-27 21:00Z – Sun 2026-03-29 22:00Z  GAP → fallback platform\n"),
        "{out}"
    );
    assert_eq!(lines.last(), Some(&"Sun 2026-03-29 22:00Z – 24:00Z  apac"));
}

#[test]
fn cli_bad_config_exits_2_with_positions() {
    let dir = config_dir(
        "[oncall]\nfallback = \"nobody\"\n[[team]]\nname = \"a\"\ntimezone = \"UTC\"\n[[team.shift]]\ndays = [\"mon\"]\nstart = \"08:00\"\nend = \"16:00\"\n",
    );
    let d = dir.path().to_str().unwrap();
    let (code, _, err) = varde(&["oncall", "--config", d]);
    assert_eq!(code, 2);
    assert!(
        err.contains("oncall.toml:2:12: fallback: unknown team \"nobody\" (teams: \"a\")"),
        "{err}"
    );
}

#[test]
fn cli_validate_warns_about_gaps_and_exits_0() {
    // Weekday office hours only: every week has gaps.
    let dir = config_dir(FOLLOW_THE_SUN);
    let d = dir.path().to_str().unwrap();
    let (code, out, err) = varde(&["validate", d]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 on-call teams"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("warning: on-call gap ")
            && l.ends_with(": no shift covers it (fallback platform)")),
        "{out}"
    );
}
