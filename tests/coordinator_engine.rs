//! The incident engine on a real SQLite store, with `now` as input: quorum
//! per rule, staleness, probe_offline, deduplication, silences, maintenance
//! windows across a DST change, dependencies, flapping, `for` durations,
//! acknowledgement and manual resolve, latency and certificate rules, and a
//! restart on the same store.

mod results;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use results::result;
use varde::check::{CheckResult, TlsFacts};
use varde::coordinator::config::{CoordinatorConfig, Settings};
use varde::coordinator::engine::{ActionError, Engine};
use varde::coordinator::rules;
use varde::coordinator::store::{Incident, IncidentState, SqliteStore};
use varde::probe::config as probe_config;
use varde::wire::{ResultBatch, ResultRecord};

/// `secs` seconds after 2026-03-01T00:00:00Z.
fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + TimeDelta::seconds(secs)
}

const ONE_CHECK: &str = r#"
[[check]]
name = "api"
target = "http://127.0.0.1:9/"
interval = "30s"
labels = { team = "web" }
"#;

fn config(probes: &str, rules: &str, settings: Settings) -> Arc<CoordinatorConfig> {
    let checks = probe_config::parse_files(&[(PathBuf::from("probes/p.toml"), probes.into())])
        .unwrap_or_else(|e| panic!("{e}"))
        .checks;
    let rules = rules::parse_files(&[(PathBuf::from("alert-rules/r.toml"), rules.into())])
        .unwrap_or_else(|e| panic!("{e}"));
    Arc::new(CoordinatorConfig {
        checks,
        rules,
        auth: Default::default(),
        settings,
        links: Default::default(),
    })
}

struct H {
    engine: Engine,
    store: Arc<SqliteStore>,
    cfg: Arc<CoordinatorConfig>,
    seq: HashMap<String, u64>,
    dir: tempfile::TempDir,
}

impl H {
    fn new(probes: &str, rules: &str) -> H {
        Self::with(config(probes, rules, Settings::default()))
    }

    fn with(cfg: Arc<CoordinatorConfig>) -> H {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let engine = Engine::new(store.clone(), cfg.clone(), t(0)).unwrap();
        H {
            engine,
            store,
            cfg,
            seq: HashMap::new(),
            dir,
        }
    }

    /// Drops the engine and store and opens both again on the same file.
    fn restart(&mut self, now: DateTime<Utc>) {
        let store = Arc::new(SqliteStore::open(self.dir.path()).unwrap());
        self.engine = Engine::new(store.clone(), self.cfg.clone(), now).unwrap();
        self.store = store;
    }

    fn push_result(&mut self, region: &str, check: &str, r: CheckResult, received: DateTime<Utc>) {
        let seq = self.seq.entry(region.to_owned()).or_default();
        *seq += 1;
        let probe_id = format!("probe-{region}");
        let batch = ResultBatch {
            probe_id: probe_id.clone(),
            region: region.into(),
            version: "test".into(),
            results: vec![ResultRecord {
                check: check.into(),
                region: region.into(),
                probe_id,
                seq: *seq,
                result: r,
            }],
        };
        let out = self.engine.ingest(&batch, received).unwrap();
        assert_eq!(out.ack.accepted, 1);
    }

    fn push(&mut self, region: &str, check: &str, ok: bool, at: DateTime<Utc>) {
        self.push_result(region, check, result(ok, at), at);
    }

    /// Every region in `down` fails and every other of eu/us/ap succeeds,
    /// twice (fail_after = recover_after = 2), 30 s apart from `at`.
    fn rounds(&mut self, check: &str, down: &[&str], at: i64) {
        for i in 0..2 {
            for region in ["eu", "us", "ap"] {
                self.push(region, check, !down.contains(&region), t(at + 30 * i));
            }
        }
    }

    fn incidents(&self) -> Vec<Incident> {
        let mut v = self
            .store
            .incidents(&varde::coordinator::store::IncidentFilter {
                limit: 1000,
                ..Default::default()
            })
            .unwrap();
        v.reverse();
        v
    }

    fn open(&self) -> Vec<Incident> {
        self.incidents()
            .into_iter()
            .filter(|i| i.is_open())
            .collect()
    }

    /// (incident id, kind) of every outbox row, in order.
    fn outbox(&self) -> Vec<(i64, String)> {
        self.store
            .outbox()
            .unwrap()
            .into_iter()
            .map(|o| (o.incident_id, o.kind))
            .collect()
    }

    fn rules_of_open(&self) -> Vec<String> {
        let mut v: Vec<String> = self.open().into_iter().map(|i| i.rule).collect();
        v.sort();
        v
    }
}

// === quorum ===

const QUORUM_RULES: &str = r#"
[[rule]]
name = "q-any"
kind = "down"
quorum = "any"
[[rule]]
name = "q-majority"
kind = "down"
[[rule]]
name = "q-all"
kind = "down"
quorum = "all"
[[rule]]
name = "q-2"
kind = "down"
quorum = 2
[[rule]]
name = "degraded"
kind = "degraded"
"#;

#[test]
fn quorum_table_one_two_three_of_three_regions_down() {
    let table: [(&[&str], &[&str]); 4] = [
        (&[], &[]),
        (&["eu"], &["degraded", "q-any"]),
        (&["eu", "us"], &["q-2", "q-any", "q-majority"]),
        (
            &["eu", "us", "ap"],
            &["q-2", "q-all", "q-any", "q-majority"],
        ),
    ];
    for (down, want) in table {
        let mut h = H::new(ONE_CHECK, QUORUM_RULES);
        // Everyone up first, so every region is a voter.
        h.rounds("api", &[], 0);
        assert!(h.open().is_empty());
        h.rounds("api", down, 60);
        assert_eq!(h.rules_of_open(), want, "down in {down:?}");
        // Exactly one firing notification per open incident (a degraded
        // incident on the way to DOWN fired and resolved).
        let open: Vec<i64> = h.open().iter().map(|i| i.id).collect();
        let firing: Vec<i64> = h
            .outbox()
            .into_iter()
            .filter(|(i, k)| k == "firing" && open.contains(i))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(firing.len(), want.len(), "down in {down:?}");
    }
}

#[test]
fn a_stale_region_does_not_vote() {
    let mut h = H::new(ONE_CHECK, QUORUM_RULES);
    h.rounds("api", &[], 0);
    // ap goes down, then stops reporting; eu and us stay up for a while.
    h.push("ap", "api", false, t(60));
    h.push("ap", "api", false, t(90));
    for s in [60, 90, 120, 150, 180, 210, 240] {
        h.push("eu", "api", true, t(s));
        h.push("us", "api", true, t(s));
    }
    // ap is stale since 150 s; the voters eu and us say UP: the `down`
    // incidents resolve, the `degraded` one (whose clearing needs DOWN or
    // UP without a silent down region) stays.
    assert_eq!(h.rules_of_open(), ["degraded"]);
    // Then eu fails. At 300 s ap's last result (90 s) is long stale.
    for s in [270, 300] {
        h.push("eu", "api", false, t(s));
        h.push("us", "api", true, t(s));
    }
    let status = h.engine.check_status(Some("api"), t(300));
    assert!(status[0].regions["ap"].stale);
    // Voters eu (down) and us (up): 1 of 2 is no majority, and q-2 is not
    // met either, though ap was down when it went silent; `any` fires.
    assert_eq!(h.rules_of_open(), ["degraded", "q-any"]);
}

#[test]
fn a_region_going_silent_raises_probe_offline_not_down() {
    let rules = format!(
        "{QUORUM_RULES}\n[[rule]]\nname = \"offline\"\nkind = \"probe_offline\"\nafter = \"5m\"\n"
    );
    let mut h = H::new(ONE_CHECK, &rules);
    h.rounds("api", &[], 0);
    // ap stops; eu and us keep reporting up.
    for s in (60..=420).step_by(30) {
        h.push("eu", "api", true, t(s));
        h.push("us", "api", true, t(s));
        h.engine.tick(t(s)).unwrap();
    }
    let open = h.open();
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(open[0].rule, "offline");
    assert_eq!(open[0].region.as_deref(), Some("ap"));
    assert_eq!(open[0].labels["region"], "ap");
    // The other regions' verdict on the check is unaffected.
    let s = h.engine.check_status(Some("api"), t(420));
    assert_eq!(format!("{:?}", s[0].verdict), "Up");
    // ap returns: the offline incident resolves, with its notification.
    h.push("ap", "api", true, t(450));
    let id = open[0].id;
    assert!(h.open().is_empty());
    assert_eq!(
        h.outbox(),
        [(id, "firing".to_owned()), (id, "resolved".to_owned())]
    );
}

#[test]
fn a_down_region_going_stale_does_not_resolve_the_incident() {
    let mut h = H::new(ONE_CHECK, DOWN_RULE);
    h.rounds("api", &[], 0);
    h.rounds("api", &["eu", "us"], 60); // 2 of 3 down: DOWN
    let id = h.open()[0].id;
    // us's probe dies; eu stays down, ap up: DEGRADED among the voters,
    // but us was down when it went silent — not a recovery.
    for s in (120..=300).step_by(30) {
        h.push("eu", "api", false, t(s));
        h.push("ap", "api", true, t(s));
        h.engine.tick(t(s)).unwrap();
    }
    assert_eq!(h.open().len(), 1);
    assert_eq!(h.outbox(), [(id, "firing".to_owned())]);
    // eu recovers too: the remaining voters say UP, that is a recovery.
    h.push("eu", "api", true, t(330));
    h.push("eu", "api", true, t(360));
    assert!(h.open().is_empty());
    assert_eq!(h.outbox().last(), Some(&(id, "resolved".to_owned())));
}

#[test]
fn every_region_silent_is_unknown_and_changes_no_incident() {
    let mut h = H::new(ONE_CHECK, QUORUM_RULES);
    h.rounds("api", &["eu", "us", "ap"], 0);
    let before = h.rules_of_open();
    assert_eq!(before.len(), 4);
    let queued = h.outbox().len();
    // Nothing arrives for an hour: no voter, no resolve, no new incident.
    for s in (60..3600).step_by(60) {
        h.engine.tick(t(s)).unwrap();
    }
    assert_eq!(h.rules_of_open(), before);
    assert_eq!(h.outbox().len(), queued);
}

// === dedup and lifecycle ===

const DOWN_RULE: &str = r#"
[[rule]]
name = "api-down"
kind = "down"
receiver = "web-oncall"
[rule.annotations]
summary = "{{ check }} down in {{ down_regions }}/{{ regions }} regions ({{ reason }}), team {{ labels.team }}"
"#;

#[test]
fn a_hundred_failures_make_one_incident_and_recovery_one_resolved_row() {
    let mut h = H::new(ONE_CHECK, DOWN_RULE);
    h.rounds("api", &[], 0);
    for i in 0..100 {
        for region in ["eu", "us", "ap"] {
            h.push(region, "api", false, t(60 + 30 * i));
        }
        h.engine.tick(t(60 + 30 * i)).unwrap();
    }
    let all = h.incidents();
    assert_eq!(all.len(), 1);
    let inc = &all[0];
    assert_eq!(inc.state, IncidentState::Firing);
    assert_eq!(inc.receiver, "web-oncall");
    assert_eq!(
        inc.annotations["summary"],
        "api down in 2/3 regions (connect_refused), team web"
    );
    assert_eq!(h.outbox(), [(inc.id, "firing".to_owned())]);

    let end = 60 + 30 * 100;
    h.rounds("api", &[], end);
    let all = h.incidents();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, IncidentState::Resolved);
    assert_eq!(all[0].resolved_by.as_deref(), Some("varde"));
    assert_eq!(
        h.outbox(),
        [
            (inc.id, "firing".to_owned()),
            (inc.id, "resolved".to_owned())
        ]
    );
    // The timeline has the firing, the votes of the third region, and the
    // resolve.
    let events = h.store.incident(inc.id).unwrap().unwrap().timeline;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"firing"));
    assert_eq!(kinds.last(), Some(&"resolved"));
    assert!(kinds.contains(&"vote"), "{kinds:?}");
}

#[test]
fn a_new_outage_after_resolve_is_a_new_incident() {
    let mut h = H::new(ONE_CHECK, DOWN_RULE);
    h.rounds("api", &["eu", "us", "ap"], 0);
    h.rounds("api", &[], 60);
    h.rounds("api", &["eu", "us", "ap"], 120);
    let all = h.incidents();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].state, IncidentState::Resolved);
    assert_eq!(all[1].state, IncidentState::Firing);
    assert_ne!(all[0].id, all[1].id);
    assert_eq!(all[0].fingerprint, all[1].fingerprint);
}

#[test]
fn for_duration_fires_only_after_the_condition_held_that_long() {
    let rules = "[[rule]]\nname = \"d\"\nkind = \"down\"\nfor = \"2m\"\n";
    let mut h = H::new(ONE_CHECK, rules);
    h.rounds("api", &[], 0);
    h.rounds("api", &["eu", "us", "ap"], 60); // down from 90 s
    assert!(h.open().is_empty());
    for s in [120, 150, 180] {
        for region in ["eu", "us", "ap"] {
            h.push(region, "api", false, t(s));
        }
    }
    h.engine.tick(t(209)).unwrap();
    assert!(h.open().is_empty(), "1m59s is not 2m");
    h.engine.tick(t(210)).unwrap();
    assert_eq!(h.open().len(), 1);
    assert_eq!(h.open()[0].started_at, t(210));

    // A blip that clears before `for` resets it.
    let mut h = H::new(ONE_CHECK, rules);
    h.rounds("api", &[], 0);
    h.rounds("api", &["eu", "us", "ap"], 60);
    h.rounds("api", &[], 120);
    h.engine.tick(t(400)).unwrap();
    assert!(h.incidents().is_empty());
}

#[test]
fn acknowledge_then_resolve_by_hand_and_no_refire_while_still_down() {
    let mut h = H::new(ONE_CHECK, DOWN_RULE);
    h.rounds("api", &["eu", "us", "ap"], 0);
    let id = h.open()[0].id;
    let inc = h.engine.acknowledge(id, "ana", "on it", t(40)).unwrap();
    assert_eq!(inc.state, IncidentState::Acknowledged);
    assert_eq!(inc.acknowledged_by.as_deref(), Some("ana"));
    assert!(matches!(
        h.engine.acknowledge(id, "bo", "", t(41)),
        Err(ActionError::Conflict { .. })
    ));
    assert!(matches!(
        h.engine.acknowledge(999, "bo", "", t(41)),
        Err(ActionError::NotFound(999))
    ));
    // Still down, more failures: the acknowledged incident stays as is.
    h.rounds("api", &["eu", "us", "ap"], 60);
    assert_eq!(h.open()[0].state, IncidentState::Acknowledged);

    h.engine
        .resolve_by_hand(id, "ana", "fixed upstream", t(130))
        .unwrap();
    assert!(h.open().is_empty());
    // Still failing: no new incident while the condition holds.
    h.rounds("api", &["eu", "us", "ap"], 150);
    h.engine.tick(t(300)).unwrap();
    assert!(h.open().is_empty());
    assert_eq!(
        h.outbox(),
        [(id, "firing".to_owned()), (id, "resolved".to_owned())]
    );
    assert!(matches!(
        h.engine.resolve_by_hand(id, "ana", "", t(301)),
        Err(ActionError::Conflict { .. })
    ));
    // Recovers, then fails again: that is a new incident.
    h.rounds("api", &[], 330);
    h.rounds("api", &["eu", "us", "ap"], 390);
    assert_eq!(h.open().len(), 1);
    assert_ne!(h.open()[0].id, id);
}

#[test]
fn repeats_while_firing_and_unacknowledged() {
    let rules = "[[rule]]\nname = \"d\"\nkind = \"down\"\nrepeat = \"10m\"\n";
    let mut h = H::new(ONE_CHECK, rules);
    h.rounds("api", &["eu", "us", "ap"], 0); // fires at 30 s
    let id = h.open()[0].id;
    let keep_down = |h: &mut H, s: i64| {
        for region in ["eu", "us", "ap"] {
            h.push(region, "api", false, t(s));
        }
        h.engine.tick(t(s)).unwrap();
    };
    for s in (60..630).step_by(30) {
        keep_down(&mut h, s);
    }
    assert_eq!(h.outbox(), [(id, "firing".to_owned())], "9m30s");
    keep_down(&mut h, 630);
    let keys: Vec<String> = h
        .store
        .outbox()
        .unwrap()
        .into_iter()
        .map(|o| o.idempotency_key)
        .collect();
    assert_eq!(
        keys,
        [format!("varde-{id}-firing"), format!("varde-{id}-repeat-1")]
    );
    // A restart does not repeat the repeat.
    h.restart(t(640));
    keep_down(&mut h, 660);
    assert_eq!(h.outbox().len(), 2);
    h.engine.acknowledge(id, "ana", "", t(700)).unwrap();
    for s in (720..2000).step_by(30) {
        keep_down(&mut h, s);
    }
    assert_eq!(h.outbox().len(), 2, "no repeat once acknowledged");
}

// === silences ===

fn matchers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn silence_after_the_firing_notification_still_queues_the_resolved_one() {
    let mut h = H::new(ONE_CHECK, DOWN_RULE);
    h.rounds("api", &["eu", "us", "ap"], 0);
    let id = h.open()[0].id;
    h.engine
        .add_silence(
            matchers(&[("check", "api")]),
            t(40),
            t(4000),
            "ana",
            "deploy",
            t(40),
        )
        .unwrap();
    assert_eq!(h.open()[0].suppressed_by.as_deref(), Some("silence:1"));
    h.rounds("api", &[], 60);
    assert!(h.open().is_empty());
    assert_eq!(
        h.outbox(),
        [(id, "firing".to_owned()), (id, "resolved".to_owned())]
    );
}

#[test]
fn silenced_incident_is_recorded_not_paged_and_pages_when_the_silence_ends() {
    let mut h = H::new(ONE_CHECK, DOWN_RULE);
    h.engine
        .add_silence(matchers(&[("team", "web")]), t(0), t(300), "ana", "", t(0))
        .unwrap();
    h.rounds("api", &["eu", "us", "ap"], 0);
    let inc = h.open().remove(0);
    assert_eq!(inc.suppressed_by.as_deref(), Some("silence:1"));
    assert_eq!(inc.notified_at, None);
    assert!(h.outbox().is_empty());
    // Still down when the silence ends at 300 s: the held page goes out.
    h.engine.tick(t(299)).unwrap();
    assert!(h.outbox().is_empty());
    h.engine.tick(t(300)).unwrap();
    assert_eq!(h.outbox(), [(inc.id, "firing".to_owned())]);
    assert_eq!(h.open()[0].suppressed_by, None);
}

#[test]
fn incident_silenced_from_start_to_end_sends_nothing() {
    let mut h = H::new(ONE_CHECK, DOWN_RULE);
    let s = h
        .engine
        .add_silence(
            matchers(&[("check", "~ap.*")]),
            t(0),
            t(3000),
            "ana",
            "",
            t(0),
        )
        .unwrap();
    h.rounds("api", &["eu", "us", "ap"], 0);
    h.rounds("api", &[], 60);
    let all = h.incidents();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, IncidentState::Resolved);
    assert!(h.outbox().is_empty());
    // Expiring an expired silence: 404-style error.
    h.engine.expire_silence(s.id, t(100)).unwrap();
    assert!(matches!(
        h.engine.expire_silence(s.id, t(101)),
        Err(ActionError::NotFound(_))
    ));
}

#[test]
fn expiring_a_silence_pages_the_incidents_it_held() {
    let mut h = H::new(ONE_CHECK, DOWN_RULE);
    let s = h
        .engine
        .add_silence(
            matchers(&[("check", "api")]),
            t(0),
            t(3000),
            "ana",
            "",
            t(0),
        )
        .unwrap();
    h.rounds("api", &["eu", "us", "ap"], 0);
    assert!(h.outbox().is_empty());
    h.engine.expire_silence(s.id, t(100)).unwrap();
    let id = h.open()[0].id;
    assert_eq!(h.outbox(), [(id, "firing".to_owned())]);
}

#[test]
fn bad_silences_are_refused() {
    let mut h = H::new(ONE_CHECK, DOWN_RULE);
    for (m, from, to) in [
        (matchers(&[]), t(0), t(10)),
        (matchers(&[("check", "~(")]), t(0), t(10)),
        (matchers(&[("check", "api")]), t(10), t(10)),
        (matchers(&[("check", "api")]), t(-100), t(-10)),
    ] {
        assert!(
            matches!(
                h.engine.add_silence(m.clone(), from, to, "ana", "", t(0)),
                Err(ActionError::Invalid(_))
            ),
            "{m:?} {from} {to}"
        );
    }
}

#[test]
fn maintenance_window_across_the_spring_dst_change_in_oslo() {
    // Saturday 22:00 → Sunday 04:00 Europe/Oslo. On 2026-03-29 the clocks
    // jump 02:00 → 03:00, so the window is 21:00Z → 02:00Z (5 real hours).
    let rules = format!(
        "{DOWN_RULE}\n[[maintenance]]\nname = \"weekly\"\nmatch = {{ team = \"web\" }}\n\
         days = [\"sat\"]\nstart = \"22:00\"\nend = \"04:00\"\ntimezone = \"Europe/Oslo\"\n"
    );
    let cfg = config(ONE_CHECK, &rules, Settings::default());
    let base = Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap(); // 03:00 CEST
    let at = |s: i64| base + TimeDelta::seconds(s);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let mut engine = Engine::new(store.clone(), cfg, base).unwrap();
    let mut seq = 0;
    let mut push = |engine: &mut Engine, ok: bool, s: i64| {
        for region in ["eu", "us", "ap"] {
            seq += 1;
            let b = ResultBatch {
                probe_id: format!("p-{region}"),
                region: region.into(),
                version: "t".into(),
                results: vec![ResultRecord {
                    check: "api".into(),
                    region: region.into(),
                    probe_id: format!("p-{region}"),
                    seq,
                    result: result(ok, at(s)),
                }],
            };
            engine.ingest(&b, at(s)).unwrap();
        }
    };
    push(&mut engine, false, 0);
    push(&mut engine, false, 30);
    let open = store.open_incidents().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].suppressed_by.as_deref(), Some("maintenance:weekly"));
    assert!(store.outbox().unwrap().is_empty());
    // 01:59:59Z is 03:59:59 CEST: still inside.
    engine.tick(at(3599)).unwrap();
    assert!(store.outbox().unwrap().is_empty());
    // 02:00Z = 04:00 CEST: the window is over and the check still down.
    engine.tick(at(3600)).unwrap();
    let out = store.outbox().unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, "firing");
}

// === dependencies ===

const DEPENDENT: &str = r#"
[[check]]
name = "db"
target = "tcp://127.0.0.1:9"
interval = "30s"

[[check]]
name = "api"
target = "http://127.0.0.1:9/"
interval = "30s"
depends_on = ["db"]
"#;

#[test]
fn a_dependent_is_suppressed_while_its_dependency_is_down_and_pages_after() {
    let mut h = H::new(DEPENDENT, DOWN_RULE);
    h.rounds("db", &[], 0);
    h.rounds("api", &[], 0);
    // db fails first, then api.
    h.rounds("db", &["eu", "us", "ap"], 60);
    h.rounds("api", &["eu", "us", "ap"], 60);
    let open = h.open();
    assert_eq!(open.len(), 2);
    let db = open.iter().find(|i| i.check == "db").unwrap().clone();
    let api = open.iter().find(|i| i.check == "api").unwrap().clone();
    assert_eq!(api.suppressed_by.as_deref(), Some("dependency:db"));
    assert_eq!(h.outbox(), [(db.id, "firing".to_owned())]);

    // db recovers while api is still down: api pages now.
    h.rounds("db", &[], 120);
    h.push("eu", "api", false, t(180));
    assert_eq!(
        h.outbox(),
        [
            (db.id, "firing".to_owned()),
            (db.id, "resolved".to_owned()),
            (api.id, "firing".to_owned()),
        ]
    );
    h.rounds("api", &[], 210);
    assert_eq!(h.outbox().last(), Some(&(api.id, "resolved".to_owned())));
}

#[test]
fn a_dependent_that_recovers_while_suppressed_resolves_silently() {
    let mut h = H::new(DEPENDENT, DOWN_RULE);
    h.rounds("db", &[], 0);
    h.rounds("api", &[], 0);
    h.rounds("db", &["eu", "us", "ap"], 60);
    h.rounds("api", &["eu", "us", "ap"], 60);
    h.rounds("api", &[], 120);
    h.rounds("db", &[], 120);
    let all = h.incidents();
    assert!(all.iter().all(|i| i.state == IncidentState::Resolved));
    let db = all.iter().find(|i| i.check == "db").unwrap().id;
    // Only the dependency paged and resolved.
    assert_eq!(
        h.outbox(),
        [(db, "firing".to_owned()), (db, "resolved".to_owned())]
    );
}

#[test]
fn a_dependent_failing_first_by_one_result_is_still_held() {
    let mut h = H::new(DEPENDENT, DOWN_RULE);
    h.rounds("db", &[], 0);
    h.rounds("api", &[], 0);
    // db's first failures arrive in every region (not yet DOWN: fail_after
    // is 2) just before api reaches DOWN.
    for region in ["eu", "us", "ap"] {
        h.push(region, "db", false, t(60));
    }
    h.rounds("api", &["eu", "us", "ap"], 60);
    let api = h.open().into_iter().find(|i| i.check == "api").unwrap();
    assert_eq!(api.suppressed_by.as_deref(), Some("dependency:db"));
    assert!(h.outbox().is_empty());
}

// === flapping ===

#[test]
fn a_flapping_check_keeps_one_incident_and_sends_one_flapping_notice() {
    let settings = Settings {
        flap_changes: 4,
        flap_window: Duration::from_secs(3600),
        ..Settings::default()
    };
    let mut h = H::with(config(ONE_CHECK, DOWN_RULE, settings));
    h.rounds("api", &[], 0);
    // Down/up every minute: verdict changes at each round.
    let mut at = 60;
    for _ in 0..6 {
        h.rounds("api", &["eu", "us", "ap"], at);
        h.rounds("api", &[], at + 60);
        at += 120;
    }
    // The first down/up cycle is four verdict changes (up → degraded →
    // down → degraded → up): incident 1 fires and resolves. The fifth
    // change (> 4) makes the check flap; incident 2 opens while it flaps,
    // gets one flapping notice instead of a page, and stays open through
    // every later flap.
    let open = h.open();
    assert_eq!(open.len(), 1, "{:#?}", h.incidents());
    assert!(open[0].flapping);
    assert_eq!(open[0].suppressed_by.as_deref(), Some("flapping"));
    let (first, second) = (open[0].id - 1, open[0].id);
    assert_eq!(
        h.outbox(),
        [
            (first, "firing".to_owned()),
            (first, "resolved".to_owned()),
            (second, "flapping".to_owned()),
        ]
    );
    // Stable (up) for an hour: the flapping ends and the incident resolves
    // with one resolved notification.
    for s in (at..at + 3700).step_by(30) {
        for region in ["eu", "us", "ap"] {
            h.push(region, "api", true, t(s));
        }
        h.engine.tick(t(s)).unwrap();
    }
    assert!(h.open().is_empty());
    assert_eq!(h.incidents().len(), 2);
    assert_eq!(h.outbox().last(), Some(&(second, "resolved".to_owned())));
    assert_eq!(h.outbox().len(), 4);
}

// === latency and certificates ===

#[test]
fn latency_rule_fires_on_the_percentile_in_quorum_regions() {
    let rules = r#"
[[rule]]
name = "slow"
kind = "latency"
percentile = 90
phase = "processing"
window = "5m"
threshold = "500ms"
quorum = 2
[rule.annotations]
summary = "p90 {{ phase }} {{ value }} > {{ threshold }}"
"#;
    let mut h = H::new(ONE_CHECK, rules);
    let slow = |ms: u64, at: DateTime<Utc>| {
        let mut r = result(true, at);
        r.phases.processing = Duration::from_millis(ms);
        r
    };
    for i in 0..10 {
        let at = t(30 * i);
        h.push_result("eu", "api", slow(900, at), at);
        h.push_result("us", "api", slow(100, at), at);
        h.push_result("ap", "api", slow(100, at), at);
    }
    assert!(h.open().is_empty(), "one slow region of three is not 2");
    for i in 10..20 {
        let at = t(30 * i);
        h.push_result("eu", "api", slow(900, at), at);
        h.push_result("us", "api", slow(800, at), at);
        h.push_result("ap", "api", slow(100, at), at);
    }
    let open = h.open();
    assert_eq!(open.len(), 1);
    assert_eq!(
        open[0].annotations["summary"],
        "p90 processing 900ms > 500ms"
    );
    // Fast again for a whole window: resolves.
    for i in 20..32 {
        let at = t(30 * i);
        for region in ["eu", "us", "ap"] {
            h.push_result(region, "api", slow(50, at), at);
        }
    }
    assert!(h.open().is_empty());
}

#[test]
fn cert_expiry_rule_fires_within_the_threshold() {
    let rules = "[[rule]]\nname = \"cert\"\nkind = \"cert_expiry\"\nthreshold = \"21d\"\n";
    let mut h = H::new(ONE_CHECK, rules);
    let with_cert = |days: i64, at: DateTime<Utc>| {
        let mut r = result(true, at);
        r.tls = Some(TlsFacts {
            earliest_expiry: Some(at + TimeDelta::days(days)),
            ..TlsFacts::default()
        });
        r
    };
    h.push_result("eu", "api", with_cert(30, t(0)), t(0));
    assert!(h.open().is_empty());
    h.push_result("eu", "api", with_cert(20, t(30)), t(30));
    assert_eq!(h.open().len(), 1);
    // Renewed.
    h.push_result("eu", "api", with_cert(90, t(60)), t(60));
    assert!(h.open().is_empty());
}

// === restart ===

#[test]
fn a_restart_resumes_state_without_duplicates() {
    let mut h = H::new(ONE_CHECK, DOWN_RULE);
    h.rounds("api", &[], 0);
    h.push("eu", "api", false, t(60));
    h.push("us", "api", false, t(60));
    // Restart between the first and second failure: the fail streaks
    // survive, so the second failure makes DOWN.
    h.restart(t(70));
    h.push("eu", "api", false, t(90));
    h.push("us", "api", false, t(90));
    let open = h.open();
    assert_eq!(open.len(), 1);
    h.restart(t(100));
    for i in 0..5 {
        h.rounds("api", &["eu", "us"], 120 + 60 * i);
    }
    assert_eq!(h.incidents().len(), 1);
    h.restart(t(500));
    h.rounds("api", &[], 500);
    assert_eq!(
        h.outbox(),
        [
            (open[0].id, "firing".to_owned()),
            (open[0].id, "resolved".to_owned())
        ]
    );
}

#[test]
fn a_check_removed_while_the_coordinator_was_stopped_resolves_at_start() {
    let mut h = H::new(DEPENDENT, DOWN_RULE);
    h.rounds("api", &["eu", "us", "ap"], 0);
    let id = h.open()[0].id;
    let only_db = "[[check]]\nname = \"db\"\ntarget = \"tcp://127.0.0.1:9\"\ninterval = \"30s\"\n";
    h.cfg = config(only_db, DOWN_RULE, Settings::default());
    h.restart(t(100));
    assert!(h.open().is_empty());
    assert_eq!(
        h.outbox(),
        [(id, "firing".to_owned()), (id, "resolved".to_owned())]
    );
}

#[test]
fn an_acknowledged_incident_is_not_paged_when_its_silence_ends() {
    let mut h = H::new(ONE_CHECK, DOWN_RULE);
    h.engine
        .add_silence(matchers(&[("check", "api")]), t(0), t(200), "ana", "", t(0))
        .unwrap();
    h.rounds("api", &["eu", "us", "ap"], 0);
    let id = h.open()[0].id;
    h.engine.acknowledge(id, "ana", "seen it", t(50)).unwrap();
    for s in (60..400).step_by(30) {
        for region in ["eu", "us", "ap"] {
            h.push(region, "api", false, t(s));
        }
        h.engine.tick(t(s)).unwrap();
    }
    assert!(h.outbox().is_empty(), "{:?}", h.outbox());
    assert_eq!(h.open()[0].suppressed_by, None);
}

#[test]
fn a_removed_check_resolves_its_incidents() {
    let mut h = H::new(DEPENDENT, DOWN_RULE);
    h.rounds("api", &["eu", "us", "ap"], 0);
    assert_eq!(h.open().len(), 1);
    let only_db = "[[check]]\nname = \"db\"\ntarget = \"tcp://127.0.0.1:9\"\ninterval = \"30s\"\n";
    h.engine
        .set_config(config(only_db, DOWN_RULE, Settings::default()), t(100))
        .unwrap();
    let all = h.incidents();
    assert_eq!(all[0].state, IncidentState::Resolved);
    assert_eq!(all[0].resolved_by.as_deref(), Some("config"));
    assert_eq!(h.outbox().len(), 2);
}

#[test]
fn a_region_without_enough_evidence_neither_fires_nor_clears() {
    let rules = "[[rule]]\nname = \"all-down\"\nkind = \"down\"\nquorum = \"all\"\n";
    let mut h = H::new(ONE_CHECK, rules);
    // eu and us fail twice: DOWN in all of them (ap has never reported).
    for s in [0, 30] {
        h.push("eu", "api", false, t(s));
        h.push("us", "api", false, t(s));
    }
    assert_eq!(h.open().len(), 1);
    let id = h.open()[0].id;
    // ap appears with one success: not yet UP, so "2 of 3 down" cannot
    // resolve the incident...
    h.push("ap", "api", true, t(40));
    h.engine.tick(t(41)).unwrap();
    assert_eq!(h.open().len(), 1, "an undecided region does not resolve");
    // ...until it is UP.
    h.push("ap", "api", true, t(50));
    assert!(h.open().is_empty());
    assert_eq!(h.outbox().last(), Some(&(id, "resolved".to_owned())));

    // A fleet starting up: eu crosses fail_after first while us and ap
    // have one failure each: no page until they decide.
    let mut h = H::new(ONE_CHECK, rules);
    for r in ["eu", "us", "ap"] {
        h.push(r, "api", false, t(0));
    }
    h.push("eu", "api", false, t(30));
    assert!(
        h.open().is_empty(),
        "1 of 3 known, 2 undecided: no page yet"
    );
    h.push("us", "api", false, t(31));
    assert!(h.open().is_empty());
    h.push("ap", "api", false, t(32));
    assert_eq!(h.open().len(), 1, "all three down: one page");
    assert_eq!(h.outbox().len(), 1);
}
