//! Per-region state and per-check verdicts: hysteresis, ordering, staleness
//! and quorum, with `now` passed in and exact times asserted.

use std::num::NonZeroU32;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use varde::check::Reason;
use varde::coordinator::verdict::{
    CheckTrack, Observation, Policy, Quorum, QuorumError, RegionState, RegionTrack, Transition,
    Verdict, VerdictState,
};

const INTERVAL: Duration = Duration::from_secs(60);

/// `secs` seconds after 2026-03-01T00:00:00Z.
fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + TimeDelta::seconds(secs)
}

fn ok(seq: u64, secs: i64) -> Observation {
    Observation {
        seq,
        started_at: t(secs),
        success: true,
        reason: None,
    }
}

fn fail(seq: u64, secs: i64) -> Observation {
    Observation {
        seq,
        started_at: t(secs),
        success: false,
        reason: Some(Reason::Timeout),
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn policy() -> Policy {
    Policy::for_interval(INTERVAL)
}

fn with_quorum(q: Quorum) -> Policy {
    Policy {
        quorum: q,
        ..policy()
    }
}

/// Feeds `results` to one region and returns the states after each.
fn states(p: &Policy, results: &[Observation]) -> Vec<RegionState> {
    let mut r = RegionTrack::default();
    results
        .iter()
        .map(|o| {
            let _ = r.apply(o, p);
            r.state()
        })
        .collect()
}

/// A check where each named region has settled Up or Down by two results at
/// t=0 and t=60.
fn settled(regions: &[(&str, RegionState)], p: &Policy) -> CheckTrack {
    let mut c = CheckTrack::new();
    for (name, state) in regions {
        for (seq, secs) in [(1, 0), (2, 60)] {
            let o = match state {
                RegionState::Up => ok(seq, secs),
                RegionState::Down => fail(seq, secs),
                RegionState::Unknown => unreachable!("settled regions are up or down"),
            };
            let _ = c.apply(name, &o, p);
        }
        assert_eq!(c.region(name).unwrap().state(), *state);
    }
    c
}

fn three_with_down(n: usize, p: &Policy) -> CheckTrack {
    let regions: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let s = if i < n {
                RegionState::Down
            } else {
                RegionState::Up
            };
            (name, s)
        })
        .collect();
    settled(&regions, p)
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// === hysteresis ===

#[test]
fn a_new_region_is_unknown_until_fail_after_failures_make_it_down() {
    let p = policy();
    let mut r = RegionTrack::default();
    assert_eq!(r.state(), RegionState::Unknown);
    assert_eq!(r.apply(&fail(1, 0), &p), None);
    assert_eq!(r.state(), RegionState::Unknown);
    let change = r.apply(&fail(2, 60), &p).unwrap();
    assert_eq!(
        (change.from, change.to),
        (RegionState::Unknown, RegionState::Down)
    );
}

#[test]
fn a_new_region_is_unknown_until_recover_after_successes_make_it_up() {
    let p = policy();
    let mut r = RegionTrack::default();
    assert_eq!(r.apply(&ok(1, 0), &p), None);
    assert_eq!(r.state(), RegionState::Unknown);
    let change = r.apply(&ok(2, 60), &p).unwrap();
    assert_eq!(
        (change.from, change.to),
        (RegionState::Unknown, RegionState::Up)
    );
}

#[test]
fn alternating_results_on_a_new_region_never_leave_unknown() {
    let got = states(
        &policy(),
        &[fail(1, 0), ok(2, 60), fail(3, 120), ok(4, 180)],
    );
    assert_eq!(got, vec![RegionState::Unknown; 4]);
}

#[test]
fn an_up_region_goes_down_only_after_fail_after_consecutive_failures() {
    let p = policy();
    let mut c = CheckTrack::new();
    assert_eq!(c.apply("eu", &ok(1, 0), &p), None);
    let up = c.apply("eu", &ok(2, 60), &p).unwrap();
    assert_eq!((up.from, up.to), (RegionState::Unknown, RegionState::Up));
    assert_eq!(c.apply("eu", &fail(3, 120), &p), None);
    assert_eq!(
        c.apply("eu", &fail(4, 180), &p),
        Some(Transition {
            region: "eu".into(),
            from: RegionState::Up,
            to: RegionState::Down,
            at: t(180),
            reason: Some(Reason::Timeout),
        })
    );
}

#[test]
fn a_down_region_recovers_only_after_recover_after_consecutive_successes() {
    let p = policy();
    let mut c = CheckTrack::new();
    let _ = c.apply("eu", &fail(1, 0), &p);
    let _ = c.apply("eu", &fail(2, 60), &p);
    assert_eq!(c.apply("eu", &ok(3, 120), &p), None);
    assert_eq!(c.region("eu").unwrap().state(), RegionState::Down);
    assert_eq!(
        c.apply("eu", &ok(4, 180), &p),
        Some(Transition {
            region: "eu".into(),
            from: RegionState::Down,
            to: RegionState::Up,
            at: t(180),
            reason: None,
        })
    );
}

#[test]
fn a_single_failure_blip_does_not_take_an_up_region_down() {
    let got = states(
        &policy(),
        &[ok(1, 0), ok(2, 60), fail(3, 120), ok(4, 180), fail(5, 240)],
    );
    use RegionState::*;
    assert_eq!(got, vec![Unknown, Up, Up, Up, Up]);
}

#[test]
fn a_single_success_blip_does_not_bring_a_down_region_up() {
    let got = states(
        &policy(),
        &[
            fail(1, 0),
            fail(2, 60),
            ok(3, 120),
            fail(4, 180),
            ok(5, 240),
        ],
    );
    use RegionState::*;
    assert_eq!(got, vec![Unknown, Down, Down, Down, Down]);
}

#[test]
fn custom_thresholds_are_honoured_both_ways() {
    let p = Policy {
        fail_after: nz(3),
        recover_after: nz(1),
        ..policy()
    };
    use RegionState::*;
    let got = states(
        &p,
        &[
            ok(1, 0),
            fail(2, 60),
            fail(3, 120),
            fail(4, 180),
            ok(5, 240),
        ],
    );
    assert_eq!(got, vec![Up, Up, Up, Down, Up]);
}

#[test]
fn the_last_failure_reason_is_kept_and_cleared_by_a_success() {
    let p = policy();
    let mut r = RegionTrack::default();
    let _ = r.apply(&fail(1, 0), &p);
    assert_eq!(r.last_reason(), Some(Reason::Timeout));
    assert_eq!(r.fail_streak(), 1);
    let _ = r.apply(&ok(2, 60), &p);
    assert_eq!(r.last_reason(), None);
    assert_eq!((r.fail_streak(), r.success_streak()), (0, 1));
}

// === ordering and duplicates ===

#[test]
fn an_out_of_order_replay_does_not_flip_a_down_region_back_up() {
    let p = policy();
    let mut c = CheckTrack::new();
    let _ = c.apply("eu", &fail(3, 120), &p);
    let _ = c.apply("eu", &fail(4, 180), &p);
    // Older successes arrive late (a probe's spool replayed after a partition).
    assert_eq!(c.apply("eu", &ok(1, 0), &p), None);
    assert_eq!(c.apply("eu", &ok(2, 60), &p), None);
    let r = c.region("eu").unwrap();
    assert_eq!(r.state(), RegionState::Down);
    assert_eq!(r.last_key(), Some((t(180), 4)));
    assert_eq!((r.fail_streak(), r.success_streak()), (2, 0));
}

#[test]
fn an_exact_duplicate_is_applied_once() {
    let p = policy();
    let mut r = RegionTrack::default();
    let _ = r.apply(&fail(1, 0), &p);
    assert!(!r.accepts(&fail(1, 0)));
    assert_eq!(r.apply(&fail(1, 0), &p), None);
    // Two copies of one failure are not two consecutive failures.
    assert_eq!(r.state(), RegionState::Unknown);
    assert_eq!(r.fail_streak(), 1);
}

#[test]
fn at_equal_start_times_results_are_ordered_by_seq() {
    let p = policy();
    let mut r = RegionTrack::default();
    let _ = r.apply(&ok(5, 60), &p);
    assert!(!r.accepts(&fail(4, 60)));
    assert_eq!(r.apply(&fail(4, 60), &p), None);
    assert_eq!(r.success_streak(), 1);
    assert!(r.accepts(&ok(6, 60)));
    let _ = r.apply(&ok(6, 60), &p);
    assert_eq!(r.state(), RegionState::Up);
    assert_eq!(r.last_key(), Some((t(60), 6)));
}

#[test]
fn a_later_start_time_wins_even_with_a_lower_seq() {
    // seq is per probe; a region's second probe may have lower numbers.
    let p = policy();
    let mut r = RegionTrack::default();
    let _ = r.apply(&ok(900, 0), &p);
    assert!(r.accepts(&ok(3, 60)));
    let _ = r.apply(&ok(3, 60), &p);
    assert_eq!(r.state(), RegionState::Up);
}

// === staleness ===

#[test]
fn stale_after_defaults_to_twice_the_interval() {
    let p = policy();
    assert_eq!(p.stale_after, Duration::from_secs(120));
    assert_eq!(p.fail_after.get(), 2);
    assert_eq!(p.recover_after.get(), 2);
    assert_eq!(p.quorum, Quorum::Majority);
}

#[test]
fn a_result_exactly_stale_after_old_is_fresh_and_one_nanosecond_older_is_stale() {
    let p = policy();
    let mut r = RegionTrack::default();
    let _ = r.apply(&ok(1, 0), &p);
    assert!(!r.is_stale(t(120), &p));
    assert!(r.is_stale(t(120) + TimeDelta::nanoseconds(1), &p));
}

#[test]
fn a_result_from_the_future_is_fresh() {
    let p = policy();
    let mut r = RegionTrack::default();
    let _ = r.apply(&ok(1, 600), &p);
    assert!(!r.is_stale(t(0), &p));
}

#[test]
fn a_region_without_any_result_is_stale() {
    assert!(RegionTrack::default().is_stale(t(0), &policy()));
}

#[test]
fn a_silent_region_resumes_with_its_previous_state_and_streaks() {
    let p = policy();
    let mut c = settled(&[("eu", RegionState::Down)], &p);
    assert!(c.region("eu").unwrap().is_stale(t(3600), &p));
    assert_eq!(c.apply("eu", &ok(3, 3600), &p), None);
    assert_eq!(c.region("eu").unwrap().state(), RegionState::Down);
    assert_eq!(c.verdict(t(3600), &p).down, names(&["eu"]));
}

// === verdicts by quorum, three regions ===

#[test]
fn all_up_is_up_under_every_quorum() {
    for q in [
        Quorum::Any,
        Quorum::Majority,
        Quorum::All,
        Quorum::AtLeast(nz(2)),
    ] {
        let p = with_quorum(q);
        let v = three_with_down(0, &p).verdict(t(60), &p);
        assert_eq!(v.state, VerdictState::Up, "{q}");
        assert_eq!(v.up, names(&["a", "b", "c"]));
        assert_eq!(v.voters, 3);
    }
}

fn verdicts_for(q: Quorum) -> Vec<VerdictState> {
    let p = with_quorum(q);
    (1..=3)
        .map(|n| three_with_down(n, &p).verdict(t(60), &p).state)
        .collect()
}

#[test]
fn any_quorum_is_down_at_one_of_three() {
    use VerdictState::*;
    assert_eq!(verdicts_for(Quorum::Any), vec![Down, Down, Down]);
}

#[test]
fn majority_quorum_is_degraded_at_one_of_three_and_down_at_two() {
    use VerdictState::*;
    assert_eq!(verdicts_for(Quorum::Majority), vec![Degraded, Down, Down]);
}

#[test]
fn all_quorum_is_degraded_at_one_and_two_of_three_and_down_at_three() {
    use VerdictState::*;
    assert_eq!(verdicts_for(Quorum::All), vec![Degraded, Degraded, Down]);
}

#[test]
fn at_least_two_quorum_is_degraded_at_one_of_three_and_down_at_two() {
    use VerdictState::*;
    assert_eq!(
        verdicts_for(Quorum::AtLeast(nz(2))),
        vec![Degraded, Down, Down]
    );
}

#[test]
fn majority_of_two_voters_needs_both_down() {
    let p = policy();
    let c = settled(&[("a", RegionState::Down), ("b", RegionState::Up)], &p);
    assert_eq!(c.verdict(t(60), &p).state, VerdictState::Degraded);
}

#[test]
fn the_verdict_names_down_and_up_regions_sorted_for_down_in_2_of_3() {
    let p = policy();
    let c = settled(
        &[
            ("us-east", RegionState::Down),
            ("ap-south", RegionState::Up),
            ("eu-west", RegionState::Down),
        ],
        &p,
    );
    assert_eq!(
        c.verdict(t(60), &p),
        Verdict {
            state: VerdictState::Down,
            down: names(&["eu-west", "us-east"]),
            up: names(&["ap-south"]),
            stale: vec![],
            unknown: vec![],
            voters: 3,
        }
    );
}

// === stale and unknown regions do not vote ===

#[test]
fn one_stale_region_and_two_up_is_up_with_the_stale_one_listed() {
    let p = policy();
    let mut c = settled(&[("a", RegionState::Up), ("b", RegionState::Up)], &p);
    let _ = c.apply("c", &fail(1, -300), &p);
    let _ = c.apply("c", &fail(2, -240), &p);
    let v = c.verdict(t(60), &p);
    assert_eq!(v.state, VerdictState::Up);
    assert_eq!(v.up, names(&["a", "b"]));
    assert_eq!(v.stale, names(&["c"]));
    assert!(v.down.is_empty());
    assert_eq!(v.voters, 2);
}

#[test]
fn every_region_stale_is_unknown_never_up_or_down() {
    let p = policy();
    let c = settled(
        &[
            ("a", RegionState::Up),
            ("b", RegionState::Down),
            ("c", RegionState::Down),
        ],
        &p,
    );
    // Last results at t=60; stale after 120 s.
    let v = c.verdict(t(181), &p);
    assert_eq!(v.state, VerdictState::Unknown);
    assert_eq!(v.stale, names(&["a", "b", "c"]));
    assert!(v.down.is_empty() && v.up.is_empty());
    assert_eq!(v.voters, 0);
}

/// Documented consequence: the quorum is over voters, so a lone fresh region
/// is the whole electorate while the others are silent.
#[test]
fn one_region_down_and_the_others_stale_is_down_under_majority_by_one_of_one_voter() {
    let p = policy();
    let mut c = settled(&[("a", RegionState::Up), ("b", RegionState::Up)], &p);
    let _ = c.apply("c", &fail(3, 300), &p);
    let _ = c.apply("c", &fail(4, 360), &p);
    let v = c.verdict(t(360), &p);
    assert_eq!(v.state, VerdictState::Down);
    assert_eq!(v.down, names(&["c"]));
    assert_eq!(v.stale, names(&["a", "b"]));
    assert_eq!(v.voters, 1);

    let all = with_quorum(Quorum::All);
    assert_eq!(c.verdict(t(360), &all).state, VerdictState::Down);
    // A rule that must not page on one region asks for two.
    let two = with_quorum(Quorum::AtLeast(nz(2)));
    assert_eq!(c.verdict(t(360), &two).state, VerdictState::Degraded);
}

#[test]
fn fresh_regions_without_enough_evidence_are_listed_unknown_and_hold_a_quorum_back() {
    let p = policy();
    let mut c = settled(&[("a", RegionState::Up)], &p);
    let _ = c.apply("b", &fail(1, 60), &p);
    let v = c.verdict(t(60), &p);
    assert_eq!(v.state, VerdictState::Up);
    assert_eq!(v.unknown, names(&["b"]));
    assert_eq!(v.voters, 2, "in the denominator, neither down nor up");

    // A fleet starting up: the first region to cross fail_after is 1 of 3,
    // not 1 of 1 — DEGRADED, not DOWN, until a second region agrees.
    let mut c = CheckTrack::new();
    for (i, r) in ["a", "b", "c"].iter().enumerate() {
        let _ = c.apply(r, &fail(1, i as i64), &p);
    }
    let _ = c.apply("a", &fail(2, 30), &p);
    let v = c.verdict(t(30), &p);
    assert_eq!((v.down.len(), v.voters), (1, 3));
    assert_eq!(v.state, VerdictState::Degraded);
    let _ = c.apply("b", &fail(2, 31), &p);
    assert_eq!(c.verdict(t(31), &p).state, VerdictState::Down);
}

#[test]
fn a_check_no_region_has_reported_is_unknown() {
    let p = policy();
    let v = CheckTrack::new().verdict(t(0), &p);
    assert_eq!(v.state, VerdictState::Unknown);
    assert_eq!(v.voters, 0);
}

#[test]
fn a_region_crossing_the_stale_boundary_leaves_the_vote_exactly_then() {
    let p = policy();
    let mut c = settled(&[("a", RegionState::Up)], &p);
    let _ = c.apply("b", &fail(3, 100), &p);
    let _ = c.apply("b", &fail(4, 130), &p);
    // a's last result is at t=60: fresh through t=180 inclusive.
    assert_eq!(c.verdict(t(180), &p).state, VerdictState::Degraded);
    let later = t(180) + TimeDelta::nanoseconds(1);
    let v = c.verdict(later, &p);
    assert_eq!(v.state, VerdictState::Down);
    assert_eq!(v.stale, names(&["a"]));
}

// === quorum parsing ===

#[test]
fn quorum_parses_words_and_region_counts() {
    assert_eq!("any".parse(), Ok(Quorum::Any));
    assert_eq!("majority".parse(), Ok(Quorum::Majority));
    assert_eq!("all".parse(), Ok(Quorum::All));
    assert_eq!("2".parse(), Ok(Quorum::AtLeast(nz(2))));
    for q in [
        Quorum::Any,
        Quorum::Majority,
        Quorum::All,
        Quorum::AtLeast(nz(7)),
    ] {
        assert_eq!(q.to_string().parse(), Ok(q));
    }
}

#[test]
fn quorum_parse_errors_say_what_was_expected() {
    assert_eq!("".parse::<Quorum>(), Err(QuorumError::Empty));
    assert_eq!("0".parse::<Quorum>(), Err(QuorumError::Zero));
    for bad in ["most", "Majority", " any", "-1", "+2", "two", "99999999999"] {
        assert_eq!(
            bad.parse::<Quorum>(),
            Err(QuorumError::Invalid(bad.into())),
            "{bad:?}"
        );
    }
    assert_eq!(
        "most".parse::<Quorum>().unwrap_err().to_string(),
        r#"unknown quorum "most": expected "any", "majority", "all" or a number of regions like "2""#
    );
    assert_eq!(
        "0".parse::<Quorum>().unwrap_err().to_string(),
        r#"quorum "0" would call a check down with no region down: use a number of regions of at least 1, or "any""#
    );
}

#[test]
fn quorum_deserializes_from_a_string_or_a_number_and_serializes_as_a_string() {
    let q: Quorum = serde_json::from_str(r#""majority""#).unwrap();
    assert_eq!(q, Quorum::Majority);
    let q: Quorum = serde_json::from_str("2").unwrap();
    assert_eq!(q, Quorum::AtLeast(nz(2)));
    let q: Quorum = serde_json::from_str(r#""3""#).unwrap();
    assert_eq!(q, Quorum::AtLeast(nz(3)));
    assert_eq!(
        serde_json::to_string(&Quorum::AtLeast(nz(2))).unwrap(),
        r#""2""#
    );
    assert_eq!(serde_json::to_string(&Quorum::All).unwrap(), r#""all""#);

    let err = serde_json::from_str::<Quorum>("0").unwrap_err().to_string();
    assert!(
        err.contains(r#"quorum "0" would call a check down"#),
        "{err}"
    );
    let err = serde_json::from_str::<Quorum>(r#""most""#)
        .unwrap_err()
        .to_string();
    assert!(err.contains(r#"unknown quorum "most""#), "{err}");
    let err = serde_json::from_str::<Quorum>("true")
        .unwrap_err()
        .to_string();
    assert!(err.contains("a number of regions"), "{err}");
}

// === persistence ===

#[test]
fn check_state_round_trips_through_serde_and_keeps_ignoring_old_results() {
    let p = policy();
    let c = settled(&[("a", RegionState::Down), ("b", RegionState::Up)], &p);
    let json = serde_json::to_string(&c).unwrap();
    let mut back: CheckTrack = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c);
    assert_eq!(back.verdict(t(60), &p), c.verdict(t(60), &p));
    // The last applied key survives a restart, so a replay is still ignored.
    assert_eq!(back.apply("a", &ok(1, 0), &p), None);
    assert_eq!(back.region("a").unwrap().last_key(), Some((t(60), 2)));
}
