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
use rusqlite::{Connection, TransactionBehavior, params};

use crate::coordinator::verdict::CheckTrack;
use crate::wire::{BatchAck, ResultBatch, ResultRecord};

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
const MIGRATIONS: &[&str] = &[SCHEMA_V1];

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
        let rows = validate(batch)?;
        let received = ts(received_at);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO probes (probe_id, region, version, first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (probe_id) DO UPDATE SET
                 region = excluded.region,
                 version = excluded.version,
                 last_seen = max(last_seen, excluded.last_seen)",
            params![batch.probe_id, batch.region, batch.version, received],
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
            for (record, row) in batch.results.iter().zip(&rows) {
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
                    stored.push(record.clone());
                }
            }
        }
        let accepted = stored.len() as u64;
        tx.execute(
            "UPDATE probes SET results_total = results_total + ?2 WHERE probe_id = ?1",
            params![batch.probe_id, accepted as i64],
        )?;
        tx.commit()?;
        stored.sort_by_key(|r| r.seq);
        let ack = BatchAck {
            accepted,
            duplicates: batch.results.len() as u64 - accepted,
        };
        Ok((ack, stored))
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
    pub fn save_check_state(
        &self,
        check: &str,
        state: &CheckTrack,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(state).map_err(|e| StoreError::Corrupt {
            what: format!("check state of {check:?}"),
            detail: e.to_string(),
        })?;
        self.lock().execute(
            "INSERT INTO check_state (check_name, state, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (check_name) DO UPDATE SET
                 state = excluded.state, updated_at = excluded.updated_at",
            params![check, json, ts(at)],
        )?;
        Ok(())
    }

    /// Every saved check state, by check name.
    pub fn load_check_states(&self) -> Result<BTreeMap<String, CheckTrack>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached("SELECT check_name, state FROM check_state")?;
        let raw = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter()
            .map(|(name, json)| {
                let track = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                    what: format!("check state of {name:?}"),
                    detail: e.to_string(),
                })?;
                Ok((name, track))
            })
            .collect()
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
