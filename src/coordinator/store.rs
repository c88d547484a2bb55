//! The coordinator's durable store: probe results, per-check state, and the
//! tables the incident engine writes (incidents, their timeline, silences,
//! and the notification outbox).
//!
//! [`SqliteStore`] is the single-node default: one SQLite file,
//! `DATA_DIR/varde.db`, in WAL mode with `synchronous=FULL`, so a transaction
//! that has committed (an acknowledged batch, a saved state) survives the
//! coordinator being killed with SIGKILL and the machine losing power. A
//! PostgreSQL store for HA will offer the same typed methods; callers never
//! see SQL.
//!
//! Every method blocks on disk I/O (and on SQLite's lock, up to
//! [`BUSY_TIMEOUT`]); async callers run them under
//! `tokio::task::spawn_blocking`.
//!
//! Timestamps are stored as RFC 3339 UTC text with microseconds
//! (`2026-03-01T00:00:00.000000Z`): readable in the `sqlite3` shell, and
//! ordered correctly by plain text comparison, which the indexes rely on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::check::CheckResult;

#[path = "store_delivery.rs"]
mod delivery;
use crate::wire::{BatchAck, ResultBatch, ResultRecord};
pub use delivery::{DeliveryRow, EscalationRow, NewDelivery, Pruned, Routing, Settle};

/// The database file's name inside the data dir.
pub const DB_FILE: &str = "varde.db";

/// How long a statement waits for another connection's write lock before
/// failing with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows deleted per transaction by [`SqliteStore::prune_results`], so that
/// retention never holds the write lock long enough to stall ingest.
const PRUNE_CHUNK: usize = 5_000;

/// Schema migrations, in order. Script `i` takes the database from
/// `user_version = i` to `i + 1`, in one transaction. Never edit a released
/// script: append a new one.
const MIGRATIONS: &[&str] = &[
    SCHEMA_V1,
    SCHEMA_V2,
    SCHEMA_V3,
    SCHEMA_V4,
    delivery::SCHEMA_V5,
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const SCHEMA_V1: &str = r#"
-- Probes as seen by the coordinator. A row is created by the first batch.
CREATE TABLE probes (
    probe_id      TEXT    PRIMARY KEY NOT NULL,
    region        TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    first_seen    TEXT    NOT NULL,
    last_seen     TEXT    NOT NULL,
    results_total INTEGER NOT NULL DEFAULT 0 CHECK (results_total >= 0)
) STRICT;

-- One row per check run. (probe_id, seq) is the idempotency key of ingest.
-- `body` is the full CheckResult as JSON; the other columns are the parts
-- that queries filter or aggregate on.
CREATE TABLE results (
    probe_id         TEXT    NOT NULL REFERENCES probes (probe_id),
    seq              INTEGER NOT NULL CHECK (seq >= 0),
    check_name       TEXT    NOT NULL,
    region           TEXT    NOT NULL,
    started_at       TEXT    NOT NULL,
    received_at      TEXT    NOT NULL,
    success          INTEGER NOT NULL CHECK (success IN (0, 1)),
    reason           TEXT,
    duration_seconds REAL    NOT NULL CHECK (duration_seconds >= 0),
    body             TEXT    NOT NULL CHECK (json_valid(body)),
    PRIMARY KEY (probe_id, seq)
) STRICT;
CREATE INDEX results_by_check ON results (check_name, region, started_at);
-- Retention deletes by arrival time (the coordinator's clock, not a probe's).
CREATE INDEX results_by_received ON results (received_at);

-- Per-check verdict state (a serialized CheckTrack), so a restart resumes
-- hysteresis and replay protection where it stopped.
CREATE TABLE check_state (
    check_name TEXT PRIMARY KEY NOT NULL,
    state      TEXT NOT NULL CHECK (json_valid(state)),
    updated_at TEXT NOT NULL
) STRICT;

-- One incident per fingerprint (rule + check + group labels) at a time.
CREATE TABLE incidents (
    id              INTEGER PRIMARY KEY,
    fingerprint     TEXT NOT NULL,
    rule            TEXT NOT NULL,
    check_name      TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('firing', 'acknowledged', 'resolved')),
    severity        TEXT NOT NULL,
    started_at      TEXT NOT NULL,
    acknowledged_at TEXT,
    acknowledged_by TEXT,
    resolved_at     TEXT,
    labels          TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(labels)),
    annotations     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(annotations)),
    CHECK ((state = 'resolved') = (resolved_at IS NOT NULL)),
    CHECK (state <> 'acknowledged' OR acknowledged_at IS NOT NULL)
) STRICT;
-- At most one open incident per fingerprint, enforced by the database so
-- that two coordinators (or a retried transaction) cannot open a second.
CREATE UNIQUE INDEX incidents_open_fingerprint ON incidents (fingerprint)
    WHERE state <> 'resolved';
CREATE INDEX incidents_by_state ON incidents (state, started_at);
CREATE INDEX incidents_by_check ON incidents (check_name, started_at);

-- The incident timeline: firing, acknowledged, escalated, notified, resolved...
CREATE TABLE incident_events (
    id          INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    at          TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    actor       TEXT,
    detail      TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(detail))
) STRICT;
CREATE INDEX incident_events_by_incident ON incident_events (incident_id, at);

CREATE TABLE silences (
    id         INTEGER PRIMARY KEY,
    matchers   TEXT NOT NULL CHECK (json_valid(matchers)),
    starts_at  TEXT NOT NULL,
    ends_at    TEXT NOT NULL,
    author     TEXT NOT NULL,
    comment    TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    expired_at TEXT,
    CHECK (ends_at > starts_at)
) STRICT;
CREATE INDEX silences_live ON silences (ends_at) WHERE expired_at IS NULL;

-- Notifications, written in the same transaction as the incident change
-- that caused them; delivered at least once, deduplicated by the receiver
-- through idempotency_key.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    incident_id     INTEGER NOT NULL REFERENCES incidents (id),
    kind            TEXT    NOT NULL CHECK (kind IN ('firing', 'repeat', 'resolved', 'flapping')),
    receiver        TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL UNIQUE,
    payload         TEXT    NOT NULL CHECK (json_valid(payload)),
    created_at      TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed', 'superseded')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at TEXT    NOT NULL,
    delivered_at    TEXT,
    last_error      TEXT,
    CHECK ((state = 'delivered') = (delivered_at IS NOT NULL))
) STRICT;
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_by_incident ON outbox (incident_id);
"#;

// v2: what the incident engine needs to resume after a restart: the rule
// kind and region (probe_offline) of an incident, its receiver, whether and
// when its firing notification was queued (so that exactly the notified
// incidents get a resolved one), why its notifications are held now, and
// whether its check is flapping.
const SCHEMA_V2: &str = r#"
ALTER TABLE incidents ADD COLUMN kind TEXT NOT NULL DEFAULT 'down';
ALTER TABLE incidents ADD COLUMN region TEXT;
ALTER TABLE incidents ADD COLUMN receiver TEXT NOT NULL DEFAULT 'default';
ALTER TABLE incidents ADD COLUMN notified_at TEXT;
ALTER TABLE incidents ADD COLUMN suppressed_by TEXT;
ALTER TABLE incidents ADD COLUMN flapping INTEGER NOT NULL DEFAULT 0 CHECK (flapping IN (0, 1));
ALTER TABLE incidents ADD COLUMN resolved_by TEXT;
ALTER TABLE incidents ADD COLUMN updated_at TEXT;
CREATE INDEX outbox_by_state ON outbox (state);
"#;

// v3: ingest speed. `results` and `check_state` are written for every
// result; SQLite's json_valid() CHECK re-parsed every body (the bodies are
// serialized by varde itself), and results_by_check was read by nothing.
// Both tables are rebuilt without them; retention keeps `results` small.
const SCHEMA_V3: &str = r#"
CREATE TABLE results_v3 (
    probe_id         TEXT    NOT NULL REFERENCES probes (probe_id),
    seq              INTEGER NOT NULL CHECK (seq >= 0),
    check_name       TEXT    NOT NULL,
    region           TEXT    NOT NULL,
    started_at       TEXT    NOT NULL,
    received_at      TEXT    NOT NULL,
    success          INTEGER NOT NULL CHECK (success IN (0, 1)),
    reason           TEXT,
    duration_seconds REAL    NOT NULL CHECK (duration_seconds >= 0),
    body             TEXT    NOT NULL,
    PRIMARY KEY (probe_id, seq)
) STRICT;
INSERT INTO results_v3
    SELECT probe_id, seq, check_name, region, started_at, received_at, success, reason,
           duration_seconds, body
    FROM results;
DROP TABLE results;
ALTER TABLE results_v3 RENAME TO results;
CREATE INDEX results_by_received ON results (received_at);

CREATE TABLE check_state_v3 (
    check_name TEXT PRIMARY KEY NOT NULL,
    state      TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;
INSERT INTO check_state_v3 SELECT check_name, state, updated_at FROM check_state;
DROP TABLE check_state;
ALTER TABLE check_state_v3 RENAME TO check_state;
"#;

// v4: the name of the token a probe first pushed with; its probe_id is
// refused to every other token (no token can write another probe's seqs).
const SCHEMA_V4: &str = r#"
ALTER TABLE probes ADD COLUMN credential TEXT;
"#;

/// What can go wrong in the store. Messages name files and limits, never
/// tokens or other secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data dir could not be created.
    #[error("cannot create data dir {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The database was written by a newer varde; this binary will not touch it.
    #[error(
        "database {} has schema version {found}, newer than this varde supports ({supported}); \
         upgrade varde or point it at another data dir",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// A schema migration failed; the database stays at `from`.
    #[error("schema migration {from} -> {} failed: {source}", from + 1)]
    Migration { from: i64, source: rusqlite::Error },
    /// SQLite would not switch to WAL (e.g. a file system without shared memory).
    #[error("database {} cannot use WAL journaling (journal_mode is {mode:?})", path.display())]
    NoWal { path: PathBuf, mode: String },
    /// A batch was refused as a whole; nothing of it was stored.
    #[error("invalid batch: {reason}")]
    Invalid { reason: String },
    /// A stored value could not be decoded (hand-edited or corrupt row).
    #[error("stored {what} is unreadable: {detail}")]
    Corrupt { what: String, detail: String },
    /// A write failed for a reason reported elsewhere (a group commit that
    /// failed for every batch in it); retry later.
    #[error("store unavailable: {reason}")]
    Unavailable { reason: String },
    /// SQLite reported an error (I/O, lock timeout, constraint).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// A probe as the coordinator has seen it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRow {
    pub probe_id: String,
    pub region: String,
    /// The varde version the probe reported in its latest batch.
    pub version: String,
    pub first_seen: DateTime<Utc>,
    /// When its latest batch arrived (coordinator clock).
    pub last_seen: DateTime<Utc>,
    /// Results stored from it, duplicates not counted.
    pub results_total: u64,
}

/// The background WAL checkpointer of [`SqliteStore::start_checkpointer`];
/// stops (after a last checkpoint) when dropped.
#[derive(Debug)]
pub struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The SQLite store. One connection behind a mutex: SQLite serializes
/// writers anyway, and the coordinator's write rate is modest.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

// === impl SqliteStore ===

impl SqliteStore {
    /// Opens (creating if needed) `data_dir/varde.db` and brings its schema
    /// up to [`SCHEMA_VERSION`].
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal { path, mode });
        }
        // FULL: in WAL mode, every commit fsyncs the WAL, so a committed
        // transaction survives power loss, not only a killed process.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn, &path)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves WAL checkpoints off the write path: turns off SQLite's
    /// automatic checkpoint (which runs inside a committing transaction and
    /// stalls it while it copies the WAL into the database and fsyncs) and
    /// runs a passive checkpoint every `every` on a thread with its own
    /// connection, which does not block writers. Stops when the returned
    /// guard is dropped.
    pub fn start_checkpointer(&self, every: Duration) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        self.lock().pragma_update(None, "wal_autocheckpoint", 0)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("varde-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                }
                // A last full checkpoint, so a clean stop leaves a small WAL.
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            })
            .map_err(|e| StoreError::DataDir {
                path: self.path.clone(),
                source: e,
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stores a batch in one transaction and answers how many records were
    /// new. Records already stored under the same `(probe_id, seq)` are
    /// duplicates and change nothing, so a probe may replay freely. Returns
    /// the newly stored records in `seq` order (what the verdict engine
    /// should see). A batch whose records do not all belong to its probe and
    /// region is refused whole.
    pub fn ingest(
        &self,
        batch: &ResultBatch,
        received_at: DateTime<Utc>,
    ) -> Result<(BatchAck, Vec<ResultRecord>), StoreError> {
        let prepared = PreparedBatch::new(batch.clone())?;
        let (ack, new) = self.transaction(|tx| tx.insert_batch(&prepared, received_at))?;
        let records = new.into_iter().map(|i| batch.results[i].clone()).collect();
        Ok((ack, records))
    }

    /// Runs `f` in one write transaction: everything it wrote is committed
    /// together when it returns `Ok`, and nothing is when it returns `Err`
    /// (or panics). The incident engine writes results, check state,
    /// incidents, their timeline and the outbox this way, so a crash never
    /// leaves a state change without its notification or the reverse.
    pub fn transaction<R>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut txn = Txn { tx };
        let out = f(&mut txn)?;
        txn.tx.commit()?;
        Ok(out)
    }

    /// The name of the token `probe_id` first pushed with, if any.
    pub fn probe_owner(&self, probe_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .prepare_cached("SELECT credential FROM probes WHERE probe_id = ?1")?
            .query_row([probe_id], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    }

    /// Every probe that has ever pushed a batch, by `probe_id`.
    pub fn probes(&self) -> Result<Vec<ProbeRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT probe_id, region, version, first_seen, last_seen, results_total
             FROM probes ORDER BY probe_id",
        )?;
        let raw = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter()
            .map(|(probe_id, region, version, first, last, total)| {
                Ok(ProbeRow {
                    first_seen: parse_ts("probes.first_seen", &first)?,
                    last_seen: parse_ts("probes.last_seen", &last)?,
                    results_total: u64::try_from(total).unwrap_or(0),
                    probe_id,
                    region,
                    version,
                })
            })
            .collect()
    }

    /// Saves (replacing) the verdict state of one check.
    pub fn save_check_state<T: Serialize>(
        &self,
        check: &str,
        state: &T,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.transaction(|tx| tx.save_check_state(check, state, at))
    }

    /// Every saved check state, by check name.
    pub fn load_check_states<T: DeserializeOwned>(
        &self,
    ) -> Result<BTreeMap<String, T>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT check_name, state FROM check_state")?;
        let raw = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter()
            .map(|(name, json)| {
                let state = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                    what: format!("check state of {name:?}"),
                    detail: e.to_string(),
                })?;
                Ok((name, state))
            })
            .collect()
    }

    /// Forgets the saved state of checks no longer configured.
    pub fn delete_check_states(&self, checks: &[String]) -> Result<(), StoreError> {
        self.transaction(|tx| {
            let mut stmt = tx
                .tx
                .prepare_cached("DELETE FROM check_state WHERE check_name = ?1")?;
            for c in checks {
                stmt.execute([c])?;
            }
            Ok(())
        })
    }

    /// Deletes results that arrived before `older_than`, in small
    /// transactions so ingest is never stalled for long; returns how many.
    ///
    /// A pruned `(probe_id, seq)` is forgotten: keep retention far longer
    /// than any probe's spool so a replay cannot outlive it.
    pub fn prune_results(&self, older_than: DateTime<Utc>) -> Result<usize, StoreError> {
        let cutoff = ts(older_than);
        let mut total = 0;
        loop {
            let n = self.lock().execute(
                "DELETE FROM results WHERE rowid IN (
                     SELECT rowid FROM results WHERE received_at < ?1 LIMIT ?2)",
                params![cutoff, PRUNE_CHUNK as i64],
            )?;
            total += n;
            if n < PRUNE_CHUNK {
                return Ok(total);
            }
        }
    }

    /// The connection. A panic while it was held cannot leave a transaction
    /// half-applied (an unfinished `Transaction` rolls back on drop), so a
    /// poisoned lock is safe to reuse.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === incidents, silences, outbox ===

/// Where an incident is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Firing,
    Acknowledged,
    Resolved,
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Firing => "firing",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Resolved => "resolved",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "firing" => Ok(IncidentState::Firing),
            "acknowledged" => Ok(IncidentState::Acknowledged),
            "resolved" => Ok(IncidentState::Resolved),
            other => Err(StoreError::Corrupt {
                what: "incidents.state".into(),
                detail: format!("unknown state {other:?}"),
            }),
        }
    }
}

/// One incident, as stored. The engine keeps the open ones in memory and
/// writes them back whole when they change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Incident {
    pub id: i64,
    /// Rule + check (+ region for probe_offline): at most one open at a time.
    pub fingerprint: String,
    pub rule: String,
    /// The rule's kind: down, latency, cert_expiry, probe_offline, degraded.
    pub kind: String,
    /// The check (empty for probe_offline).
    pub check: String,
    /// The silent region of a probe_offline incident.
    pub region: Option<String>,
    pub state: IncidentState,
    pub severity: String,
    pub receiver: String,
    pub started_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// `varde` when the condition cleared, else who resolved it by hand.
    pub resolved_by: Option<String>,
    /// When its firing notification was queued; `None` while it was never
    /// notified (silenced, in maintenance, behind a dependency, flapping).
    pub notified_at: Option<DateTime<Utc>>,
    /// Why notifications are held now (`silence:ID`, `maintenance:NAME`,
    /// `dependency:CHECK`, `flapping`), or `None`.
    pub suppressed_by: Option<String>,
    /// Its check is flapping: it stays open until the flapping ends.
    pub flapping: bool,
    /// The labels silences and routes match: the check's, plus `check`,
    /// `kind` (of the check), `rule`, `severity` and `region` where known.
    pub labels: BTreeMap<String, String>,
    /// Rendered annotations (summary, runbook...).
    pub annotations: BTreeMap<String, String>,
    pub updated_at: DateTime<Utc>,
}

impl Incident {
    pub fn is_open(&self) -> bool {
        self.state != IncidentState::Resolved
    }
}

/// One entry of an incident's timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IncidentEvent {
    pub at: DateTime<Utc>,
    /// firing, vote, suppressed, unsuppressed, notified, acknowledged,
    /// flapping, flapping_ended, resolved...
    pub kind: String,
    pub actor: Option<String>,
    pub detail: serde_json::Value,
}

/// An incident with its timeline and notifications.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IncidentDetail {
    pub incident: Incident,
    pub timeline: Vec<IncidentEvent>,
    pub notifications: Vec<OutboxRow>,
}

/// The kinds of notification the outbox carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    Firing,
    Repeat,
    Resolved,
    Flapping,
}

impl NotifyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyKind::Firing => "firing",
            NotifyKind::Repeat => "repeat",
            NotifyKind::Resolved => "resolved",
            NotifyKind::Flapping => "flapping",
        }
    }
}

/// A notification to send, as queued.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub incident_id: i64,
    pub kind: String,
    pub receiver: String,
    pub idempotency_key: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub state: String,
    pub attempts: u32,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// A silence created by the API, as stored. `matchers` is the same map as
/// `match = { ... }` in config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SilenceRow {
    pub id: i64,
    pub matchers: BTreeMap<String, String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub author: String,
    pub comment: String,
    pub created_at: DateTime<Utc>,
    /// Set when expired early through the API.
    pub expired_at: Option<DateTime<Utc>>,
}

/// A stored result, as [`SqliteStore::results_since`] reads it back.
#[derive(Clone, Debug)]
pub struct StoredResult {
    pub check: String,
    pub region: String,
    pub seq: u64,
    pub received_at: DateTime<Utc>,
    pub result: CheckResult,
}

/// Which incidents [`SqliteStore::incidents`] lists.
#[derive(Clone, Debug, Default)]
pub struct IncidentFilter {
    /// Only these states (all when empty).
    pub states: Vec<IncidentState>,
    pub check: Option<String>,
    /// Newest first; at most this many.
    pub limit: usize,
}

const INCIDENT_COLUMNS: &str = "id, fingerprint, rule, kind, check_name, region, state, severity,
    receiver, started_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by,
    notified_at, suppressed_by, flapping, labels, annotations, updated_at";

fn incident_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawIncident> {
    Ok(RawIncident {
        id: r.get(0)?,
        text: [
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
            r.get(17)?,
            r.get(18)?,
        ],
        opt: [
            r.get(5)?,
            r.get(10)?,
            r.get(11)?,
            r.get(12)?,
            r.get(13)?,
            r.get(14)?,
            r.get(15)?,
            r.get(19)?,
        ],
        flapping: r.get(16)?,
    })
}

/// An incident row before its text is decoded (outside the row callback,
/// where decoding errors can be reported as [`StoreError::Corrupt`]).
struct RawIncident {
    id: i64,
    text: [String; 10],
    opt: [Option<String>; 8],
    flapping: bool,
}

impl RawIncident {
    fn decode(self) -> Result<Incident, StoreError> {
        let [
            fingerprint,
            rule,
            kind,
            check,
            state,
            severity,
            receiver,
            started,
            labels,
            ann,
        ] = self.text;
        let [
            region,
            ack_at,
            ack_by,
            res_at,
            res_by,
            notified,
            suppressed,
            updated,
        ] = self.opt;
        let opt_ts = |what: &str, v: Option<String>| v.map(|s| parse_ts(what, &s)).transpose();
        let map = |what: &str, s: &str| {
            serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
                what: what.into(),
                detail: e.to_string(),
            })
        };
        let started_at = parse_ts("incidents.started_at", &started)?;
        Ok(Incident {
            id: self.id,
            state: IncidentState::parse(&state)?,
            acknowledged_at: opt_ts("incidents.acknowledged_at", ack_at)?,
            resolved_at: opt_ts("incidents.resolved_at", res_at)?,
            notified_at: opt_ts("incidents.notified_at", notified)?,
            updated_at: opt_ts("incidents.updated_at", updated)?.unwrap_or(started_at),
            labels: map("incidents.labels", &labels)?,
            annotations: map("incidents.annotations", &ann)?,
            started_at,
            fingerprint,
            rule,
            kind,
            check,
            region,
            severity,
            receiver,
            acknowledged_by: ack_by,
            resolved_by: res_by,
            suppressed_by: suppressed,
            flapping: self.flapping,
        })
    }
}

fn json_text(what: &str, v: &impl Serialize) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt {
        what: what.into(),
        detail: e.to_string(),
    })
}

/// A write transaction of [`SqliteStore::transaction`]. Its methods are the
/// whole write interface of the incident engine.
pub struct Txn<'c> {
    tx: rusqlite::Transaction<'c>,
}

impl Txn<'_> {
    /// Stores a prepared batch (see [`SqliteStore::ingest`]); returns the
    /// indexes of the records that were new, in `seq` order.
    pub fn insert_batch(
        &mut self,
        prepared: &PreparedBatch,
        received_at: DateTime<Utc>,
    ) -> Result<(BatchAck, Vec<usize>), StoreError> {
        let batch = &prepared.batch;
        let received = ts(received_at);
        let tx = &self.tx;
        tx.execute(
            "INSERT INTO probes (probe_id, region, version, first_seen, last_seen, credential)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5)
             ON CONFLICT (probe_id) DO UPDATE SET
                 region = excluded.region,
                 version = excluded.version,
                 last_seen = max(last_seen, excluded.last_seen),
                 credential = coalesce(credential, excluded.credential)",
            params![
                batch.probe_id,
                batch.region,
                batch.version,
                received,
                prepared.credential
            ],
        )?;
        let mut stored = Vec::new();
        {
            // ON CONFLICT DO NOTHING rather than INSERT OR IGNORE: only the
            // key conflict is a duplicate; any other constraint still fails.
            let mut insert = tx.prepare_cached(
                "INSERT INTO results (probe_id, seq, check_name, region, started_at,
                     received_at, success, reason, duration_seconds, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (probe_id, seq) DO NOTHING",
            )?;
            for (i, (record, row)) in batch.results.iter().zip(&prepared.rows).enumerate() {
                let n = insert.execute(params![
                    record.probe_id,
                    row.seq,
                    record.check,
                    record.region,
                    ts(record.result.started_at),
                    received,
                    record.result.success,
                    record.result.reason.map(|r| r.as_str()),
                    record.result.duration.as_secs_f64(),
                    row.body,
                ])?;
                if n == 1 {
                    stored.push(i);
                }
            }
        }
        let accepted = stored.len() as u64;
        tx.execute(
            "UPDATE probes SET results_total = results_total + ?2 WHERE probe_id = ?1",
            params![batch.probe_id, accepted as i64],
        )?;
        stored.sort_by_key(|&i| batch.results[i].seq);
        let ack = BatchAck {
            accepted,
            duplicates: batch.results.len() as u64 - accepted,
        };
        Ok((ack, stored))
    }

    /// Saves (replacing) the verdict state of one check.
    pub fn save_check_state<T: Serialize>(
        &mut self,
        check: &str,
        state: &T,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let json = json_text(&format!("check state of {check:?}"), state)?;
        self.tx
            .prepare_cached(
                "INSERT INTO check_state (check_name, state, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (check_name) DO UPDATE SET
                     state = excluded.state, updated_at = excluded.updated_at",
            )?
            .execute(params![check, json, ts(at)])?;
        Ok(())
    }

    /// Opens an incident and returns its id. Fails (constraint violation)
    /// if one with the same fingerprint is already open.
    pub fn open_incident(&mut self, i: &Incident) -> Result<i64, StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO incidents (fingerprint, rule, kind, check_name, region, state,
                     severity, receiver, started_at, notified_at, suppressed_by, flapping,
                     labels, annotations, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?
            .execute(params![
                i.fingerprint,
                i.rule,
                i.kind,
                i.check,
                i.region,
                i.state.as_str(),
                i.severity,
                i.receiver,
                ts(i.started_at),
                i.notified_at.map(ts),
                i.suppressed_by,
                i.flapping,
                json_text("incident labels", &i.labels)?,
                json_text("incident annotations", &i.annotations)?,
                ts(i.updated_at),
            ])?;
        Ok(self.tx.last_insert_rowid())
    }

    /// Writes back the fields of an incident that change over its life.
    pub fn update_incident(&mut self, i: &Incident) -> Result<(), StoreError> {
        let n = self
            .tx
            .prepare_cached(
                "UPDATE incidents SET state = ?2, acknowledged_at = ?3, acknowledged_by = ?4,
                     resolved_at = ?5, resolved_by = ?6, notified_at = ?7, suppressed_by = ?8,
                     flapping = ?9, annotations = ?10, updated_at = ?11
                 WHERE id = ?1",
            )?
            .execute(params![
                i.id,
                i.state.as_str(),
                i.acknowledged_at.map(ts),
                i.acknowledged_by,
                i.resolved_at.map(ts),
                i.resolved_by,
                i.notified_at.map(ts),
                i.suppressed_by,
                i.flapping,
                json_text("incident annotations", &i.annotations)?,
                ts(i.updated_at),
            ])?;
        if n != 1 {
            return Err(StoreError::Corrupt {
                what: format!("incident {}", i.id),
                detail: "not found".into(),
            });
        }
        Ok(())
    }

    /// Appends to an incident's timeline.
    pub fn add_event(
        &mut self,
        incident_id: i64,
        at: DateTime<Utc>,
        kind: &str,
        actor: Option<&str>,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO incident_events (incident_id, at, kind, actor, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                incident_id,
                ts(at),
                kind,
                actor,
                json_text("event detail", detail)?
            ])?;
        Ok(())
    }

    /// Queues a notification. Returns `false` (and changes nothing) when a
    /// row with the same idempotency key exists: a notification is queued
    /// once, however often the engine decides it.
    pub fn add_outbox(
        &mut self,
        incident_id: i64,
        kind: NotifyKind,
        receiver: &str,
        idempotency_key: &str,
        payload: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let n = self
            .tx
            .prepare_cached(
                "INSERT INTO outbox (incident_id, kind, receiver, idempotency_key, payload,
                     created_at, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )?
            .execute(params![
                incident_id,
                kind.as_str(),
                receiver,
                idempotency_key,
                json_text("outbox payload", payload)?,
                ts(at),
            ])?;
        Ok(n == 1)
    }

    /// Marks the still-pending notifications of an incident superseded (a
    /// firing notice that no longer says anything true once it resolved).
    pub fn supersede_pending(
        &mut self,
        incident_id: i64,
        kinds: &[NotifyKind],
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        for k in kinds {
            n += self
                .tx
                .prepare_cached(
                    "UPDATE outbox SET state = 'superseded', last_error = 'incident resolved before delivery'
                     WHERE incident_id = ?1 AND kind = ?2 AND state = 'pending'",
                )?
                .execute(params![incident_id, k.as_str()])?;
        }
        Ok(n)
    }

    /// Stores a new silence and returns its id.
    pub fn insert_silence(&mut self, s: &SilenceRow) -> Result<i64, StoreError> {
        self.tx.execute(
            "INSERT INTO silences (matchers, starts_at, ends_at, author, comment, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                json_text("silence matchers", &s.matchers)?,
                ts(s.starts_at),
                ts(s.ends_at),
                s.author,
                s.comment,
                ts(s.created_at),
            ],
        )?;
        Ok(self.tx.last_insert_rowid())
    }

    /// Ends a silence now; `false` when there is no such live silence.
    pub fn expire_silence(&mut self, id: i64, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let n = self.tx.execute(
            "UPDATE silences SET expired_at = ?2 WHERE id = ?1 AND expired_at IS NULL",
            params![id, ts(at)],
        )?;
        Ok(n == 1)
    }
}

// === reads ===

impl SqliteStore {
    /// Every incident not resolved, oldest first.
    pub fn open_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        self.incidents(&IncidentFilter {
            states: vec![IncidentState::Firing, IncidentState::Acknowledged],
            check: None,
            limit: usize::MAX,
        })
        .map(|mut v| {
            v.reverse();
            v
        })
    }

    /// Incidents matching `filter`, newest first.
    pub fn incidents(&self, filter: &IncidentFilter) -> Result<Vec<Incident>, StoreError> {
        let states: Vec<&str> = if filter.states.is_empty() {
            vec!["firing", "acknowledged", "resolved"]
        } else {
            filter.states.iter().map(|s| s.as_str()).collect()
        };
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents
             WHERE state IN (SELECT value FROM json_each(?1))
               AND (?2 IS NULL OR check_name = ?2)
             ORDER BY id DESC LIMIT ?3"
        ))?;
        let raw = stmt
            .query_map(
                params![json_text("states", &states)?, filter.check, limit],
                incident_from_row,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        drop(conn);
        raw.into_iter().map(RawIncident::decode).collect()
    }

    /// One incident with its timeline and notifications.
    pub fn incident(&self, id: i64) -> Result<Option<IncidentDetail>, StoreError> {
        let conn = self.lock();
        let raw = conn
            .prepare_cached(&format!(
                "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?1"
            ))?
            .query_row([id], incident_from_row)
            .optional()?;
        let Some(raw) = raw else { return Ok(None) };
        let events = conn
            .prepare_cached(
                "SELECT at, kind, actor, detail FROM incident_events
                 WHERE incident_id = ?1 ORDER BY id",
            )?
            .query_map([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let outbox = outbox_rows(&conn, "WHERE incident_id = ?1 ORDER BY id", params![id])?;
        drop(conn);
        let events = events
            .into_iter()
            .map(|(at, kind, actor, detail)| {
                Ok(IncidentEvent {
                    at: parse_ts("incident_events.at", &at)?,
                    kind,
                    actor,
                    detail: serde_json::from_str(&detail).map_err(|e| StoreError::Corrupt {
                        what: "incident_events.detail".into(),
                        detail: e.to_string(),
                    })?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some(IncidentDetail {
            incident: raw.decode()?,
            timeline: events,
            notifications: outbox,
        }))
    }

    /// Every outbox row, oldest first (tests and tools; the delivery
    /// workers of the next layer take due rows instead).
    pub fn outbox(&self) -> Result<Vec<OutboxRow>, StoreError> {
        let conn = self.lock();
        outbox_rows(&conn, "ORDER BY id", params![])
    }

    /// Pending notifications and the creation time of the oldest one.
    pub fn outbox_depth(&self) -> Result<(u64, Option<DateTime<Utc>>), StoreError> {
        let conn = self.lock();
        let (n, oldest): (i64, Option<String>) = conn
            .prepare_cached("SELECT count(*), min(created_at) FROM outbox WHERE state = 'pending'")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        drop(conn);
        Ok((
            u64::try_from(n).unwrap_or(0),
            oldest
                .map(|s| parse_ts("outbox.created_at", &s))
                .transpose()?,
        ))
    }

    /// Incident counts by state.
    pub fn incident_counts(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached("SELECT state, count(*) FROM incidents GROUP BY state")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .map(|(s, n)| (s, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// API silences: live ones (not expired, not yet ended at `now`), or
    /// all when `include_ended`.
    pub fn silences(
        &self,
        now: DateTime<Utc>,
        include_ended: bool,
    ) -> Result<Vec<SilenceRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, matchers, starts_at, ends_at, author, comment, created_at, expired_at
             FROM silences
             WHERE ?1 OR (expired_at IS NULL AND ends_at > ?2)
             ORDER BY id",
        )?;
        let raw = stmt
            .query_map(params![include_ended, ts(now)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    [
                        r.get::<_, String>(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ],
                    r.get::<_, Option<String>>(7)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        drop(conn);
        raw.into_iter()
            .map(
                |(id, [m, starts, ends, author, comment, created], expired)| {
                    Ok(SilenceRow {
                        id,
                        matchers: serde_json::from_str(&m).map_err(|e| StoreError::Corrupt {
                            what: "silences.matchers".into(),
                            detail: e.to_string(),
                        })?,
                        starts_at: parse_ts("silences.starts_at", &starts)?,
                        ends_at: parse_ts("silences.ends_at", &ends)?,
                        created_at: parse_ts("silences.created_at", &created)?,
                        expired_at: expired
                            .map(|s| parse_ts("silences.expired_at", &s))
                            .transpose()?,
                        author,
                        comment,
                    })
                },
            )
            .collect()
    }

    /// When the latest stored result arrived (coordinator clock).
    pub fn latest_arrival(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let latest: Option<String> = self
            .lock()
            .prepare_cached("SELECT max(received_at) FROM results")?
            .query_row([], |r| r.get(0))?;
        latest
            .map(|t| parse_ts("results.received_at", &t))
            .transpose()
    }

    /// The results that arrived at or after `since`, in arrival order: what
    /// a restart replays into the check state saved at the last checkpoint
    /// and rebuilds latency windows from.
    pub fn results_since(&self, since: DateTime<Utc>) -> Result<Vec<StoredResult>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT check_name, region, seq, received_at, body FROM results
             WHERE received_at >= ?1 ORDER BY received_at, probe_id, seq",
        )?;
        let raw = stmt
            .query_map([ts(since)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        drop(conn);
        raw.into_iter()
            .map(|(check, region, seq, received, body)| {
                let result = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                    what: format!("result of {check:?}"),
                    detail: e.to_string(),
                })?;
                Ok(StoredResult {
                    received_at: parse_ts("results.received_at", &received)?,
                    seq: u64::try_from(seq).unwrap_or(0),
                    check,
                    region,
                    result,
                })
            })
            .collect()
    }
}

fn outbox_rows(
    conn: &Connection,
    tail: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<OutboxRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, incident_id, kind, receiver, idempotency_key, payload, created_at, state,
             attempts, delivered_at, last_error
         FROM outbox {tail}"
    ))?;
    let raw = stmt
        .query_map(args, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                [
                    r.get::<_, String>(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ],
                r.get::<_, i64>(8)?,
                r.get::<_, Option<String>>(9)?,
                r.get::<_, Option<String>>(10)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    raw.into_iter()
        .map(
            |(
                id,
                incident_id,
                [kind, receiver, key, payload, created, state],
                attempts,
                delivered,
                err,
            )| {
                Ok(OutboxRow {
                    id,
                    incident_id,
                    kind,
                    receiver,
                    idempotency_key: key,
                    payload: serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt {
                        what: "outbox.payload".into(),
                        detail: e.to_string(),
                    })?,
                    created_at: parse_ts("outbox.created_at", &created)?,
                    state,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    delivered_at: delivered
                        .map(|s| parse_ts("outbox.delivered_at", &s))
                        .transpose()?,
                    last_error: err,
                })
            },
        )
        .collect()
}

/// Applies the migrations the database has not seen, one transaction each.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    loop {
        // IMMEDIATE takes the write lock before reading the version, so two
        // processes opening one new file cannot both run a migration.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path: path.to_owned(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let Some(script) = usize::try_from(version)
            .ok()
            .and_then(|v| MIGRATIONS.get(v))
        else {
            return Ok(());
        };
        let step = || -> Result<(), rusqlite::Error> {
            tx.execute_batch(script)?;
            tx.pragma_update(None, "user_version", version + 1)
        };
        step().map_err(|source| StoreError::Migration {
            from: version,
            source,
        })?;
        tx.commit().map_err(|source| StoreError::Migration {
            from: version,
            source,
        })?;
    }
}

/// The per-record values computed before the transaction starts.
struct Row {
    seq: i64,
    body: String,
}

/// A batch checked and serialized outside the write lock, ready for
/// [`Txn::insert_batch`].
pub struct PreparedBatch {
    batch: ResultBatch,
    rows: Vec<Row>,
    /// The name of the token that sent it; recorded as the probe's owner.
    credential: Option<String>,
}

impl PreparedBatch {
    /// Checks that every record belongs to the batch's probe and region and
    /// serializes the results; a batch that fails is refused whole.
    pub fn new(batch: ResultBatch) -> Result<Self, StoreError> {
        Ok(PreparedBatch {
            rows: validate(&batch)?,
            batch,
            credential: None,
        })
    }

    /// Records `name` as the token that sent the batch.
    pub fn sent_by(mut self, name: &str) -> Self {
        self.credential = Some(name.to_owned());
        self
    }

    pub fn batch(&self) -> &ResultBatch {
        &self.batch
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

fn validate(batch: &ResultBatch) -> Result<Vec<Row>, StoreError> {
    let invalid = |reason: String| StoreError::Invalid { reason };
    if batch.probe_id.is_empty() || batch.region.is_empty() {
        return Err(invalid("probe_id and region must not be empty".into()));
    }
    batch
        .results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if r.probe_id != batch.probe_id {
                return Err(invalid(format!(
                    "record {i} (seq {}) has probe_id {:?}, the batch is from {:?}",
                    r.seq, r.probe_id, batch.probe_id
                )));
            }
            if r.region != batch.region {
                return Err(invalid(format!(
                    "record {i} (seq {}) has region {:?}, the batch is from {:?}",
                    r.seq, r.region, batch.region
                )));
            }
            let seq = i64::try_from(r.seq)
                .map_err(|_| invalid(format!("record {i} has seq {} beyond 2^63", r.seq)))?;
            let body = serde_json::to_string(&r.result)
                .map_err(|e| invalid(format!("record {i} (seq {}): {e}", r.seq)))?;
            Ok(Row { seq, body })
        })
        .collect()
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(what: &str, s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt {
            what: what.to_owned(),
            detail: format!("{s:?}: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_sort_as_text() {
        let a = DateTime::parse_from_rfc3339("2026-03-01T00:00:09.5Z").unwrap();
        let b = DateTime::parse_from_rfc3339("2026-03-01T00:00:10Z").unwrap();
        assert!(ts(a.into()) < ts(b.into()));
        assert_eq!(parse_ts("t", &ts(a.into())).unwrap(), a);
    }

    #[test]
    fn migrations_fit_the_version_type() {
        assert_eq!(SCHEMA_VERSION as usize, MIGRATIONS.len());
    }
}
