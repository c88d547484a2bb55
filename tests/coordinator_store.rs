//! The SQLite store on real files: migrations, idempotent ingest, check
//! state across a reopen, durability of acknowledged batches under SIGKILL,
//! and the one-open-incident-per-fingerprint index.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use rusqlite::Connection;
use varde::check::{CheckKind, CheckResult, Phases, Reason};
use varde::coordinator::store::{DB_FILE, SCHEMA_VERSION, SqliteStore, StoreError};
use varde::coordinator::verdict::{CheckTrack, Observation, Policy};
use varde::wire::{BatchAck, ResultBatch, ResultRecord};

const PROBE: &str = "probe-a";
const REGION: &str = "eu-west";

/// `secs` seconds after 2026-03-01T00:00:00Z.
fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap() + TimeDelta::seconds(secs)
}

fn result(success: bool, started_at: DateTime<Utc>) -> CheckResult {
    CheckResult {
        kind: CheckKind::Http,
        target: "https://example.test/".into(),
        success,
        reason: (!success).then_some(Reason::Timeout),
        message: String::new(),
        started_at,
        duration: Duration::from_millis(120),
        phases: Phases::default(),
        tls: None,
        http: None,
        dns: None,
        tcp: None,
    }
}

fn record(seq: u64) -> ResultRecord {
    ResultRecord {
        check: "home".into(),
        region: REGION.into(),
        probe_id: PROBE.into(),
        seq,
        result: result(!seq.is_multiple_of(3), t(seq as i64 * 60)),
    }
}

fn batch(seqs: impl IntoIterator<Item = u64>) -> ResultBatch {
    ResultBatch {
        probe_id: PROBE.into(),
        region: REGION.into(),
        version: "0.1.0".into(),
        results: seqs.into_iter().map(record).collect(),
    }
}

/// A second, raw connection to the store's file, for assertions.
fn raw(dir: &Path) -> Connection {
    Connection::open(dir.join(DB_FILE)).unwrap()
}

fn count(c: &Connection, table: &str) -> i64 {
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn user_version(c: &Connection) -> i64 {
    c.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

fn seqs(records: &[ResultRecord]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

// === Migrations ===

#[test]
fn fresh_dir_is_migrated_and_reopen_is_a_no_op() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let store = SqliteStore::open(&dir).unwrap();
    assert_eq!(store.path(), dir.join(DB_FILE));
    let c = raw(&dir);
    assert_eq!(user_version(&c), SCHEMA_VERSION);
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let schema = |c: &Connection| -> Vec<String> {
        let mut s = c
            .prepare("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let before = schema(&c);
    for table in [
        "probes",
        "results",
        "check_state",
        "incidents",
        "incident_events",
        "silences",
        "outbox",
    ] {
        let n: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "missing table {table}");
    }
    store.ingest(&batch([1]), t(0)).unwrap();
    drop(store);

    let store = SqliteStore::open(&dir).unwrap();
    assert_eq!(user_version(&c), SCHEMA_VERSION);
    assert_eq!(schema(&c), before);
    assert_eq!(count(&c, "results"), 1, "reopening keeps the data");
    drop(store);
}

#[test]
fn database_from_a_newer_varde_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(tmp.path()).unwrap());
    raw(tmp.path())
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();

    let err = SqliteStore::open(tmp.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported, .. }
            if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("newer than this varde supports"), "{msg}");
    assert!(msg.contains(DB_FILE), "names the file: {msg}");
    assert_eq!(
        user_version(&raw(tmp.path())),
        SCHEMA_VERSION + 1,
        "left alone"
    );
}

// === Ingest ===

#[test]
fn replayed_batch_is_all_duplicates_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(tmp.path()).unwrap();
    let c = raw(tmp.path());

    let (ack, new) = store.ingest(&batch([1, 2, 3]), t(10)).unwrap();
    assert_eq!(
        ack,
        BatchAck {
            accepted: 3,
            duplicates: 0
        }
    );
    assert_eq!(seqs(&new), [1, 2, 3]);
    let probe = store.probes().unwrap();
    assert_eq!(probe.len(), 1);
    assert_eq!(probe[0].probe_id, PROBE);
    assert_eq!(probe[0].region, REGION);
    assert_eq!(probe[0].version, "0.1.0");
    assert_eq!(probe[0].first_seen, t(10));
    assert_eq!(probe[0].last_seen, t(10));
    assert_eq!(probe[0].results_total, 3);

    let (ack, new) = store.ingest(&batch([1, 2, 3]), t(20)).unwrap();
    assert_eq!(
        ack,
        BatchAck {
            accepted: 0,
            duplicates: 3
        }
    );
    assert!(new.is_empty());
    assert_eq!(count(&c, "results"), 3);
    let probe = &store.probes().unwrap()[0];
    assert_eq!(probe.results_total, 3, "duplicates are not counted");
    assert_eq!(
        probe.last_seen,
        t(20),
        "a replay still shows the probe alive"
    );

    let stored: (String, String, i64, Option<String>, f64, String) = c
        .query_row(
            "SELECT check_name, started_at, success, reason, duration_seconds, received_at
             FROM results WHERE probe_id = ?1 AND seq = 3",
            [PROBE],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(
        stored,
        (
            "home".to_owned(),
            "2026-03-01T00:03:00.000000Z".to_owned(),
            0,
            Some("timeout".to_owned()),
            0.12,
            "2026-03-01T00:00:10.000000Z".to_owned(),
        ),
        "received_at is from the first, storing batch"
    );
}

#[test]
fn overlapping_batch_stores_only_the_new_records_in_seq_order() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(tmp.path()).unwrap();
    store.ingest(&batch([1, 2, 3]), t(0)).unwrap();

    let mut b = batch([5, 3, 4, 2]);
    b.version = "0.2.0".into();
    let (ack, new) = store.ingest(&b, t(30)).unwrap();
    assert_eq!(
        ack,
        BatchAck {
            accepted: 2,
            duplicates: 2
        }
    );
    assert_eq!(seqs(&new), [4, 5]);
    assert_eq!(count(&raw(tmp.path()), "results"), 5);
    let probe = &store.probes().unwrap()[0];
    assert_eq!(probe.results_total, 5);
    assert_eq!(probe.version, "0.2.0");
    assert_eq!(probe.first_seen, t(0));
    assert_eq!(probe.last_seen, t(30));
}

#[test]
fn record_from_another_probe_or_region_rejects_the_whole_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(tmp.path()).unwrap();

    let mut b = batch([1, 2, 3]);
    b.results[2].probe_id = "probe-b".into();
    let err = store.ingest(&b, t(0)).unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid { reason } if reason.contains("probe-b")),
        "{err:?}"
    );

    let mut b = batch([1, 2, 3]);
    b.results[0].region = "us-east".into();
    let err = store.ingest(&b, t(0)).unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");

    let c = raw(tmp.path());
    assert_eq!(count(&c, "results"), 0);
    assert_eq!(count(&c, "probes"), 0, "not even the probe row");
}

#[test]
fn prune_deletes_only_results_received_before_the_cutoff() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(tmp.path()).unwrap();
    store.ingest(&batch(1..=4), t(0)).unwrap();
    store.ingest(&batch(5..=6), t(100)).unwrap();

    assert_eq!(store.prune_results(t(100)).unwrap(), 4);
    assert_eq!(store.prune_results(t(100)).unwrap(), 0);
    assert_eq!(count(&raw(tmp.path()), "results"), 2);
    assert_eq!(
        store.probes().unwrap()[0].results_total,
        6,
        "a running total"
    );
}

// === Check state ===

#[test]
fn check_state_survives_a_reopen_and_still_ignores_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Policy::for_interval(Duration::from_secs(60));
    let mut track = CheckTrack::new();
    let mut fed = Vec::new();
    {
        let store = SqliteStore::open(tmp.path()).unwrap();
        let (_, new) = store.ingest(&batch(1..=5), t(0)).unwrap();
        for r in &new {
            let obs = Observation::from_result(r.seq, &r.result);
            let _ = track.apply(&r.region, &obs, &p);
            fed.push(obs);
        }
        store.save_check_state("home", &track, t(300)).unwrap();
        store
            .save_check_state("other", &CheckTrack::new(), t(300))
            .unwrap();
        store.save_check_state("home", &track, t(301)).unwrap();
    }

    let store = SqliteStore::open(tmp.path()).unwrap();
    let mut loaded = store.load_check_states::<CheckTrack>().unwrap();
    assert_eq!(
        loaded.keys().collect::<Vec<_>>(),
        ["home", "other"],
        "one row per check"
    );
    let home = loaded.get_mut("home").unwrap();
    assert_eq!(*home, track);
    let region = home.region(REGION).unwrap();
    for obs in &fed {
        assert!(!region.accepts(obs), "seq {} accepted again", obs.seq);
    }
    let before = home.clone();
    for obs in &fed {
        assert_eq!(home.apply(REGION, obs, &p), None);
    }
    assert_eq!(*home, before, "replayed observations change nothing");

    let (ack, new) = store.ingest(&batch(1..=5), t(400)).unwrap();
    assert_eq!(ack.duplicates, 5);
    assert!(new.is_empty(), "nothing reaches the verdict engine twice");
}

// === Durability ===

const CHILD_ENV: &str = "VARDE_STORE_CHILD";

/// Not a test of its own: the writer process for
/// `acknowledged_batches_survive_sigkill`. Ingests one record per batch and
/// prints `ack SEQ` once the batch is committed.
#[test]
fn child_writer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = SqliteStore::open(Path::new(&dir)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = std::io::stdout().lock();
    for seq in 1..=1_000_000 {
        if Instant::now() > deadline {
            break;
        }
        let (ack, _) = store.ingest(&batch([seq]), Utc::now()).unwrap();
        assert_eq!(ack.accepted, 1);
        writeln!(out, "ack {seq}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_batches_survive_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The harness's own "test child_writer ... " may share the first line.
            // A line cut short by the kill parses as nothing: it was never an ack.
            if let Some(seq) = line
                .split_once("ack ")
                .and_then(|(_, s)| s.parse::<u64>().ok())
                && tx.send(seq).is_err()
            {
                break;
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut acked = Vec::new();
    while acked.len() < 25 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(seq) => acked.push(seq),
            Err(e) => {
                let _ = child.kill();
                panic!("writer gave {} acks before {e:?}", acked.len());
            }
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix: no destructors, no checkpoint.
    child.wait().unwrap();
    reader.join().unwrap();
    acked.extend(rx.try_iter()); // acks printed before the kill landed
    assert_eq!(acked, (1..=acked.len() as u64).collect::<Vec<_>>());

    let store = SqliteStore::open(tmp.path()).unwrap();
    let c = raw(tmp.path());
    let integrity: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let mut missing = Vec::new();
    for &seq in &acked {
        let found: i64 = c
            .query_row(
                "SELECT count(*) FROM results WHERE probe_id = ?1 AND seq = ?2",
                rusqlite::params![PROBE, seq as i64],
                |r| r.get(0),
            )
            .unwrap();
        if found != 1 {
            missing.push(seq);
        }
    }
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    let total = store.probes().unwrap()[0].results_total;
    assert!(total >= acked.len() as u64, "{total} < {}", acked.len());
    assert_eq!(total as i64, count(&c, "results"), "total matches the rows");
}

// === Incidents ===

#[test]
fn one_open_incident_per_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(tmp.path()).unwrap());
    let c = raw(tmp.path());
    let open = |c: &Connection| {
        c.execute(
            "INSERT INTO incidents (fingerprint, rule, check_name, state, severity, started_at)
             VALUES ('fp1', 'down', 'home', 'firing', 'page', '2026-03-01T00:00:00.000000Z')",
            [],
        )
    };
    open(&c).unwrap();
    let err = open(&c).unwrap_err();
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ConstraintViolation),
        "{err}"
    );
    c.execute(
        "UPDATE incidents SET state = 'acknowledged',
             acknowledged_at = '2026-03-01T00:01:00.000000Z', acknowledged_by = 'ana'
         WHERE fingerprint = 'fp1'",
        [],
    )
    .unwrap();
    open(&c).unwrap_err();

    c.execute(
        "UPDATE incidents SET state = 'resolved', resolved_at = '2026-03-01T00:05:00.000000Z'
         WHERE fingerprint = 'fp1'",
        [],
    )
    .unwrap();
    open(&c).unwrap();
    open(&c).unwrap_err();
    let per_state: Vec<(String, i64)> = c
        .prepare("SELECT state, count(*) FROM incidents GROUP BY state ORDER BY state")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        per_state,
        [("firing".to_owned(), 1), ("resolved".to_owned(), 1)]
    );

    let err = c
        .execute(
            "UPDATE incidents SET state = 'resolved' WHERE state = 'firing'",
            [],
        )
        .unwrap_err();
    assert_eq!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ConstraintViolation),
        "resolved needs resolved_at: {err}"
    );
}
