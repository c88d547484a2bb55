//! The delivery side of the store: deliveries (one per notification and
//! contact), escalation timers and on-call overrides. The dispatcher
//! ([`crate::notify::dispatch`]) is the only writer of these tables.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{OutboxRow, SqliteStore, StoreError, json_text, outbox_rows, parse_ts, ts};
use crate::notify::route::Override;

// v5: routing of outbox intents into per-contact deliveries, escalation
// timers of paging incidents, and on-call overrides.
pub(super) const SCHEMA_V5: &str = r#"
ALTER TABLE outbox ADD COLUMN routed_at TEXT;
CREATE INDEX outbox_unrouted ON outbox (id) WHERE routed_at IS NULL AND state = 'pending';

-- One notification for one contact. `idempotency_key` is the intent's key
-- plus the contact, so a receiver can drop a duplicate.
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    outbox_id       INTEGER REFERENCES outbox (id),
    incident_id     INTEGER NOT NULL REFERENCES incidents (id),
    kind            TEXT    NOT NULL CHECK (kind IN
                    ('firing', 'repeat', 'escalation', 'acknowledged', 'flapping', 'resolved')),
    level           INTEGER NOT NULL DEFAULT 0 CHECK (level >= 0),
    contact         TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL UNIQUE,
    payload         TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    expires_at      TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed', 'superseded', 'expired')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at TEXT    NOT NULL,
    delivered_at    TEXT,
    last_error      TEXT,
    message_key     TEXT,
    CHECK ((state = 'delivered') = (delivered_at IS NOT NULL))
) STRICT;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_pending_by_contact ON deliveries (contact, id) WHERE state = 'pending';
CREATE INDEX deliveries_by_incident ON deliveries (incident_id);
CREATE INDEX deliveries_by_outbox ON deliveries (outbox_id);

-- The escalation timer of a notified incident: which policy, the level
-- reached, how many repeats were sent, when the next step is due.
CREATE TABLE escalations (
    incident_id INTEGER PRIMARY KEY REFERENCES incidents (id),
    policy      TEXT    NOT NULL,
    level       INTEGER NOT NULL CHECK (level >= 0),
    repeats     INTEGER NOT NULL DEFAULT 0 CHECK (repeats >= 0),
    next_at     TEXT,
    payload     TEXT    NOT NULL,
    labels      TEXT    NOT NULL
) STRICT;
CREATE INDEX escalations_next ON escalations (next_at) WHERE next_at IS NOT NULL;

CREATE TABLE overrides (
    id          INTEGER PRIMARY KEY,
    team        TEXT NOT NULL,
    by_team     TEXT,
    contacts    TEXT NOT NULL DEFAULT '[]',
    starts_at   TEXT NOT NULL,
    ends_at     TEXT NOT NULL,
    author      TEXT NOT NULL,
    comment     TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    expired_at  TEXT,
    CHECK (ends_at > starts_at),
    CHECK (by_team IS NOT NULL OR contacts != '[]')
) STRICT;
CREATE INDEX overrides_live ON overrides (ends_at) WHERE expired_at IS NULL;
"#;

/// A delivery to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewDelivery {
    pub kind: &'static str,
    pub level: u32,
    pub contact: String,
    pub idempotency_key: String,
    pub payload: serde_json::Value,
    pub next_attempt_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A delivery as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeliveryRow {
    pub id: i64,
    pub outbox_id: Option<i64>,
    pub incident_id: i64,
    pub kind: String,
    pub level: u32,
    pub contact: String,
    pub idempotency_key: String,
    #[serde(skip)]
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub state: String,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The message it went out in (a digest's key when grouped).
    pub message_key: Option<String>,
}

/// An escalation timer, with its incident's state.
#[derive(Clone, Debug, PartialEq)]
pub struct EscalationRow {
    pub incident_id: i64,
    pub policy: String,
    pub level: u32,
    pub repeats: u32,
    pub next_at: Option<DateTime<Utc>>,
    pub payload: serde_json::Value,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The incident's state now: firing, acknowledged, resolved.
    pub incident_state: String,
    pub acknowledged_by: Option<String>,
}

/// How an intent was routed.
pub struct Routing {
    pub outbox_id: i64,
    pub incident_id: i64,
    pub deliveries: Vec<NewDelivery>,
    /// Start (or replace) the incident's escalation timer.
    pub escalation: Option<EscalationRow>,
    /// Supersede the incident's pending firing/repeat/escalation/flapping
    /// deliveries and drop its timer (a resolve).
    pub resolve: bool,
    /// Settle the intent at once (no delivery): state and reason.
    pub settle: Option<(&'static str, String)>,
}

/// What sending a message did, for [`SqliteStore::settle_deliveries`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settle {
    Delivered {
        message_key: String,
    },
    Retry {
        error: String,
        next_attempt_at: DateTime<Utc>,
    },
    Failed {
        error: String,
    },
}

/// Deliveries of kinds that say "it is firing".
const FIRING_KINDS: &str = "('firing', 'repeat', 'escalation', 'flapping')";

/// Incidents forgotten per transaction by [`SqliteStore::prune_history`].
const PRUNE_INCIDENTS: usize = 500;

/// What [`SqliteStore::prune_history`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub incidents: usize,
    pub silences: usize,
    pub overrides: usize,
}

impl SqliteStore {
    /// Outbox intents not routed yet, oldest first.
    pub fn unrouted(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let conn = self.lock();
        outbox_rows(
            &conn,
            "WHERE routed_at IS NULL AND state = 'pending' ORDER BY id LIMIT ?1",
            params![i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    /// The contacts that were told an incident is firing (delivered or
    /// still pending), in the order first told.
    pub fn notified_contacts(&self, incident_id: i64) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT contact FROM deliveries
             WHERE incident_id = ?1 AND kind IN {FIRING_KINDS} AND state IN ('pending', 'delivered')
             GROUP BY contact ORDER BY min(id)"
        ))?;
        let rows = stmt
            .query_map([incident_id], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Records how an intent was routed, in one transaction.
    pub fn route_intent(&self, r: &Routing, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.route_intents(std::slice::from_ref(r), now)
    }

    /// [`SqliteStore::route_intent`] for several intents, in one
    /// transaction (in order).
    pub fn route_intents(&self, all: &[Routing], now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.transaction(|txn| {
            let mut total = 0;
            for r in all {
                total += route_in(&txn.tx, r, now)?;
            }
            Ok(total)
        })
    }

    /// Escalation timers due at `now` (or with an incident no longer
    /// firing), with their incidents' state.
    pub fn escalations_due(
        &self,
        now: DateTime<Utc>,
        with_state_changes: bool,
    ) -> Result<Vec<EscalationRow>, StoreError> {
        let conn = self.lock();
        // The time-due query uses escalations_next; the state scan reads
        // every timer, so callers run it sparingly.
        let filter = if with_state_changes {
            "i.state != 'firing' OR (e.next_at IS NOT NULL AND e.next_at <= ?1)"
        } else {
            "e.next_at IS NOT NULL AND e.next_at <= ?1"
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT e.incident_id, e.policy, e.level, e.repeats, e.next_at, e.payload, e.labels,
                 i.state, i.acknowledged_by
             FROM escalations e JOIN incidents i ON i.id = e.incident_id
             WHERE {filter}
             ORDER BY e.incident_id"
        ))?;
        let raw = stmt
            .query_map([ts(now)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        drop(conn);
        raw.into_iter()
            .map(
                |(id, policy, level, repeats, next_at, payload, labels, state, by)| {
                    Ok(EscalationRow {
                        incident_id: id,
                        policy,
                        level: u32::try_from(level).unwrap_or(0),
                        repeats: u32::try_from(repeats).unwrap_or(0),
                        next_at: next_at
                            .map(|s| parse_ts("escalations.next_at", &s))
                            .transpose()?,
                        payload: json_value("escalations.payload", &payload)?,
                        labels: serde_json::from_str(&labels).map_err(|e| StoreError::Corrupt {
                            what: "escalations.labels".into(),
                            detail: e.to_string(),
                        })?,
                        incident_state: state,
                        acknowledged_by: by,
                    })
                },
            )
            .collect()
    }

    /// Moves an escalation timer on (or drops it with `next = None` and
    /// `keep = false`) and queues its deliveries, in one transaction.
    pub fn escalate(
        &self,
        e: &EscalationRow,
        keep: bool,
        deliveries: &[NewDelivery],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        self.transaction(|txn| {
            let tx = &txn.tx;
            if keep {
                tx.prepare_cached(
                    "UPDATE escalations SET level = ?2, repeats = ?3, next_at = ?4 WHERE incident_id = ?1",
                )?
                .execute(params![e.incident_id, e.level, e.repeats, e.next_at.map(ts)])?;
            } else {
                tx.prepare_cached("DELETE FROM escalations WHERE incident_id = ?1")?
                    .execute([e.incident_id])?;
            }
            let mut n = 0;
            for d in deliveries {
                n += tx
                    .prepare_cached(
                        "INSERT INTO deliveries (outbox_id, incident_id, kind, level, contact,
                             idempotency_key, payload, created_at, expires_at, next_attempt_at)
                         VALUES (NULL, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                         ON CONFLICT (idempotency_key) DO NOTHING",
                    )?
                    .execute(params![
                        e.incident_id,
                        d.kind,
                        d.level,
                        d.contact,
                        d.idempotency_key,
                        json_text("delivery payload", &d.payload)?,
                        ts(now),
                        ts(d.expires_at),
                        ts(d.next_attempt_at),
                    ])?;
            }
            Ok(n)
        })
    }

    /// The earliest escalation step still to come.
    pub fn next_escalation_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let conn = self.lock();
        let s: Option<String> = conn
            .prepare_cached("SELECT min(next_at) FROM escalations")?
            .query_row([], |r| r.get(0))?;
        s.map(|s| parse_ts("escalations.next_at", &s)).transpose()
    }

    /// Contacts with pending deliveries due at `now`.
    pub fn due_contacts(&self, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT contact FROM deliveries
             WHERE state = 'pending' AND next_attempt_at <= ?1",
        )?;
        let rows = stmt
            .query_map([ts(now)], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// One contact's pending deliveries due at `now`, oldest first.
    pub fn due_for(
        &self,
        contact: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let conn = self.lock();
        delivery_rows(
            &conn,
            "WHERE state = 'pending' AND next_attempt_at <= ?1 AND contact = ?2
             ORDER BY id LIMIT ?3",
            params![ts(now), contact, i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    /// The earliest pending delivery due after `now`.
    pub fn next_delivery_at(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let conn = self.lock();
        let s: Option<String> = conn
            .prepare_cached(
                "SELECT min(next_attempt_at) FROM deliveries
                 WHERE state = 'pending' AND next_attempt_at > ?1",
            )?
            .query_row([ts(now)], |r| r.get(0))?;
        s.map(|s| parse_ts("deliveries.next_attempt_at", &s))
            .transpose()
    }

    /// Marks deliveries as being sent: one more attempt, and not due again
    /// before `until` (so that a crash mid-send retries them after it, and
    /// the loop does not pick them twice).
    pub fn lease_deliveries(&self, leases: &[(i64, DateTime<Utc>)]) -> Result<(), StoreError> {
        self.transaction(|txn| {
            for (id, until) in leases {
                txn.tx
                    .prepare_cached(
                        "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?2
                         WHERE id = ?1 AND state = 'pending'",
                    )?
                    .execute(params![id, ts(*until)])?;
            }
            Ok(())
        })
    }

    /// Records what sending did to `ids`. A retry past a delivery's expiry
    /// expires it. Intents whose deliveries are all settled are settled too.
    pub fn settle_deliveries(
        &self,
        ids: &[i64],
        outcome: &Settle,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.settle_many(&[(ids, outcome)], now)
    }

    /// [`SqliteStore::settle_deliveries`] for several outcomes, in one
    /// transaction.
    pub fn settle_many(
        &self,
        all: &[(&[i64], &Settle)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.transaction(|txn| {
            let tx = &txn.tx;
            let mut intents = Vec::new();
            for (id, outcome) in all
                .iter()
                .flat_map(|(ids, o)| ids.iter().map(move |id| (id, *o)))
            {
                match outcome {
                    Settle::Delivered { message_key } => tx
                        .prepare_cached(
                            "UPDATE deliveries SET state = 'delivered', delivered_at = ?2,
                                 message_key = ?3, last_error = NULL
                             WHERE id = ?1 AND state = 'pending'",
                        )?
                        .execute(params![id, ts(now), message_key])?,
                    Settle::Retry {
                        error,
                        next_attempt_at,
                    } => tx
                        .prepare_cached(
                            "UPDATE deliveries SET last_error = ?2, next_attempt_at = ?3,
                                 state = CASE WHEN ?3 > expires_at THEN 'expired' ELSE state END
                             WHERE id = ?1 AND state = 'pending'",
                        )?
                        .execute(params![id, error, ts(*next_attempt_at)])?,
                    Settle::Failed { error } => tx
                        .prepare_cached(
                            "UPDATE deliveries SET state = 'failed', last_error = ?2
                             WHERE id = ?1 AND state = 'pending'",
                        )?
                        .execute(params![id, error])?,
                };
                if let Some(o) = tx
                    .prepare_cached("SELECT outbox_id FROM deliveries WHERE id = ?1")?
                    .query_row([id], |r| r.get::<_, Option<i64>>(0))
                    .optional()?
                    .flatten()
                {
                    intents.push(o);
                }
            }
            intents.sort_unstable();
            intents.dedup();
            settle_intents(tx, &intents, now)
        })
    }

    /// Forgets history that ended before `older_than`: incidents resolved
    /// before it — with their timeline, notifications, deliveries and
    /// escalation timer — once nothing of theirs is still pending, and
    /// silences and overrides that ended (or were expired) before it.
    ///
    /// The newest incident is always kept: ids are `max + 1`, and the
    /// idempotency keys receivers deduplicate on are built from them, so an
    /// id must never come back. Works in transactions of at most
    /// [`PRUNE_INCIDENTS`] incidents so that ingest is never held up long.
    pub fn prune_history(&self, older_than: DateTime<Utc>) -> Result<Pruned, StoreError> {
        let cutoff = ts(older_than);
        let mut pruned = Pruned::default();
        loop {
            let n = self.transaction(|txn| {
                let tx = &txn.tx;
                let ids: Vec<i64> = tx
                    .prepare_cached(
                        "SELECT i.id FROM incidents i
                         WHERE i.state = 'resolved' AND i.resolved_at < ?1
                           AND i.id < (SELECT max(id) FROM incidents)
                           AND NOT EXISTS (SELECT 1 FROM outbox o
                                           WHERE o.incident_id = i.id AND o.state = 'pending')
                           AND NOT EXISTS (SELECT 1 FROM deliveries d
                                           WHERE d.incident_id = i.id AND d.state = 'pending')
                         ORDER BY i.id LIMIT ?2",
                    )?
                    .query_map(params![cutoff, PRUNE_INCIDENTS as i64], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                for id in &ids {
                    for sql in [
                        "DELETE FROM deliveries WHERE incident_id = ?1",
                        "DELETE FROM escalations WHERE incident_id = ?1",
                        "DELETE FROM outbox WHERE incident_id = ?1",
                        // incident_events go with it (ON DELETE CASCADE).
                        "DELETE FROM incidents WHERE id = ?1",
                    ] {
                        tx.prepare_cached(sql)?.execute([id])?;
                    }
                }
                Ok(ids.len())
            })?;
            pruned.incidents += n;
            if n < PRUNE_INCIDENTS {
                break;
            }
        }
        let conn = self.lock();
        pruned.silences = conn.execute(
            "DELETE FROM silences WHERE min(ends_at, coalesce(expired_at, ends_at)) < ?1",
            params![cutoff],
        )?;
        pruned.overrides = conn.execute(
            "DELETE FROM overrides WHERE min(ends_at, coalesce(expired_at, ends_at)) < ?1",
            params![cutoff],
        )?;
        Ok(pruned)
    }

    /// Every delivery of an incident, oldest first.
    pub fn deliveries_of(&self, incident_id: i64) -> Result<Vec<DeliveryRow>, StoreError> {
        let conn = self.lock();
        delivery_rows(
            &conn,
            "WHERE incident_id = ?1 ORDER BY id",
            params![incident_id],
        )
    }

    /// Every delivery, oldest first (tests and tools).
    pub fn deliveries(&self) -> Result<Vec<DeliveryRow>, StoreError> {
        let conn = self.lock();
        delivery_rows(&conn, "ORDER BY id", params![])
    }

    /// Pending deliveries (plus intents not yet routed) and the creation
    /// time of the oldest.
    pub fn delivery_depth(&self) -> Result<(u64, Option<DateTime<Utc>>), StoreError> {
        let conn = self.lock();
        let (n, oldest): (i64, Option<String>) = conn
            .prepare_cached(
                "SELECT sum(n), min(oldest) FROM (
                     SELECT count(*) AS n, min(created_at) AS oldest FROM deliveries
                         WHERE state = 'pending'
                     UNION ALL
                     SELECT count(*), min(created_at) FROM outbox
                         WHERE state = 'pending' AND routed_at IS NULL)",
            )?
            .query_row([], |r| {
                Ok((r.get::<_, Option<i64>>(0)?.unwrap_or(0), r.get(1)?))
            })?;
        drop(conn);
        Ok((
            u64::try_from(n).unwrap_or(0),
            oldest.map(|s| parse_ts("created_at", &s)).transpose()?,
        ))
    }

    // === overrides ===

    /// Stores an override; returns its id.
    pub fn insert_override(&self, o: &Override) -> Result<i64, StoreError> {
        self.transaction(|txn| {
            txn.tx.execute(
                "INSERT INTO overrides (team, by_team, contacts, starts_at, ends_at, author,
                     comment, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    o.team,
                    o.by_team,
                    json_text("override contacts", &o.contacts)?,
                    ts(o.starts_at),
                    ts(o.ends_at),
                    o.author,
                    o.comment,
                    ts(o.created_at),
                ],
            )?;
            Ok(txn.tx.last_insert_rowid())
        })
    }

    /// Overrides not ended before `since`, by id.
    pub fn overrides(&self, since: DateTime<Utc>) -> Result<Vec<Override>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, team, by_team, contacts, starts_at, ends_at, author, comment, created_at,
                 expired_at
             FROM overrides WHERE ends_at > ?1 AND (expired_at IS NULL OR expired_at > ?1)
             ORDER BY id",
        )?;
        let raw = stmt
            .query_map([ts(since)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    [
                        r.get::<_, String>(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                    ],
                    r.get::<_, Option<String>>(9)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter()
            .map(
                |(
                    id,
                    team,
                    by_team,
                    [contacts, starts, ends, author, comment, created],
                    expired,
                )| {
                    Ok(Override {
                        id,
                        team,
                        by_team,
                        contacts: serde_json::from_str(&contacts).map_err(|e| {
                            StoreError::Corrupt {
                                what: "overrides.contacts".into(),
                                detail: e.to_string(),
                            }
                        })?,
                        starts_at: parse_ts("overrides.starts_at", &starts)?,
                        ends_at: parse_ts("overrides.ends_at", &ends)?,
                        author,
                        comment,
                        created_at: parse_ts("overrides.created_at", &created)?,
                        expired_at: expired
                            .map(|s| parse_ts("overrides.expired_at", &s))
                            .transpose()?,
                    })
                },
            )
            .collect()
    }

    /// Ends an override now. `Ok(false)`: no such override, or already over.
    pub fn expire_override(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.transaction(|txn| {
            let n = txn.tx.execute(
                "UPDATE overrides SET expired_at = ?2
                 WHERE id = ?1 AND expired_at IS NULL AND ends_at > ?2",
                params![id, ts(now)],
            )?;
            Ok(n == 1)
        })
    }
}

/// Writes one intent's routing inside `tx`.
fn route_in(
    tx: &rusqlite::Transaction<'_>,
    r: &Routing,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    if r.resolve {
        let touched: Vec<i64> = tx
            .prepare_cached(&format!(
                "SELECT DISTINCT outbox_id FROM deliveries
                 WHERE incident_id = ?1 AND state = 'pending' AND kind IN {FIRING_KINDS}
                     AND outbox_id IS NOT NULL"
            ))?
            .query_map([r.incident_id], |row| row.get::<_, i64>(0))?
            .collect::<Result<_, _>>()?;
        tx.prepare_cached(&format!(
            "UPDATE deliveries SET state = 'superseded',
                 last_error = 'incident resolved before delivery'
             WHERE incident_id = ?1 AND state = 'pending' AND kind IN {FIRING_KINDS}"
        ))?
        .execute([r.incident_id])?;
        tx.prepare_cached("DELETE FROM escalations WHERE incident_id = ?1")?
            .execute([r.incident_id])?;
        settle_intents(tx, &touched, now)?;
    }
    let mut n = 0;
    for d in &r.deliveries {
        n += tx
            .prepare_cached(
                "INSERT INTO deliveries (outbox_id, incident_id, kind, level, contact,
                     idempotency_key, payload, created_at, expires_at, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )?
            .execute(params![
                r.outbox_id,
                r.incident_id,
                d.kind,
                d.level,
                d.contact,
                d.idempotency_key,
                json_text("delivery payload", &d.payload)?,
                ts(now),
                ts(d.expires_at),
                ts(d.next_attempt_at),
            ])?;
    }
    if let Some(e) = &r.escalation {
        tx.prepare_cached(
            "INSERT INTO escalations (incident_id, policy, level, repeats, next_at, payload, labels)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (incident_id) DO UPDATE SET policy = excluded.policy,
                 level = excluded.level, repeats = excluded.repeats,
                 next_at = excluded.next_at, payload = excluded.payload,
                 labels = excluded.labels",
        )?
        .execute(params![
            e.incident_id,
            e.policy,
            e.level,
            e.repeats,
            e.next_at.map(ts),
            json_text("escalation payload", &e.payload)?,
            json_text("escalation labels", &e.labels)?,
        ])?;
    }
    match &r.settle {
        Some((state, why)) => {
            tx.prepare_cached(
                "UPDATE outbox SET routed_at = ?2, state = ?3, last_error = ?4 WHERE id = ?1",
            )?
            .execute(params![r.outbox_id, ts(now), state, why])?;
        }
        None => {
            tx.prepare_cached("UPDATE outbox SET routed_at = ?2 WHERE id = ?1")?
                .execute(params![r.outbox_id, ts(now)])?;
            if n == 0 {
                // Every delivery already existed (a replay): the
                // intent is as settled as they are.
                settle_intents(tx, &[r.outbox_id], now)?;
            }
        }
    }
    Ok(n)
}

/// Settles intents whose deliveries are all settled: delivered if any was
/// delivered, else failed (or superseded when all were superseded).
fn settle_intents(
    tx: &rusqlite::Transaction<'_>,
    intents: &[i64],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for id in intents {
        let (pending, delivered, superseded, total, attempts, err): (
            i64,
            i64,
            i64,
            i64,
            i64,
            Option<String>,
        ) = tx
            .prepare_cached(
                "SELECT count(*) FILTER (WHERE state = 'pending'),
                     count(*) FILTER (WHERE state = 'delivered'),
                     count(*) FILTER (WHERE state = 'superseded'),
                     count(*), coalesce(max(attempts), 0),
                     max(last_error)
                 FROM deliveries WHERE outbox_id = ?1",
            )?
            .query_row([id], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?;
        if pending > 0 {
            continue;
        }
        let (state, delivered_at) = if delivered > 0 {
            ("delivered", Some(ts(now)))
        } else if total > 0 && superseded == total {
            ("superseded", None)
        } else {
            ("failed", None)
        };
        tx.prepare_cached(
            "UPDATE outbox SET state = ?2, delivered_at = ?3, attempts = ?4,
                 last_error = CASE WHEN ?2 = 'delivered' THEN NULL ELSE ?5 END
             WHERE id = ?1 AND state = 'pending'",
        )?
        .execute(params![id, state, delivered_at, attempts, err])?;
    }
    Ok(())
}

fn json_value(what: &str, s: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        what: what.into(),
        detail: e.to_string(),
    })
}

fn delivery_rows(
    conn: &rusqlite::Connection,
    tail: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<DeliveryRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, outbox_id, incident_id, kind, level, contact, idempotency_key, payload,
             created_at, expires_at, state, attempts, next_attempt_at, delivered_at, last_error,
             message_key
         FROM deliveries {tail}"
    ))?;
    let raw = stmt
        .query_map(args, |r| {
            Ok((
                (
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, i64>(2)?,
                ),
                [
                    r.get::<_, String>(3)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(12)?,
                ],
                (r.get::<_, i64>(4)?, r.get::<_, i64>(11)?),
                [r.get::<_, Option<String>>(13)?, r.get(14)?, r.get(15)?],
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    raw.into_iter()
        .map(
            |(
                (id, outbox_id, incident_id),
                [kind, contact, key, payload, created, expires, state, next],
                (level, attempts),
                [delivered, err, message_key],
            )| {
                Ok(DeliveryRow {
                    id,
                    outbox_id,
                    incident_id,
                    kind,
                    level: u32::try_from(level).unwrap_or(0),
                    contact,
                    idempotency_key: key,
                    payload: json_value("deliveries.payload", &payload)?,
                    created_at: parse_ts("deliveries.created_at", &created)?,
                    expires_at: parse_ts("deliveries.expires_at", &expires)?,
                    state,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    next_attempt_at: parse_ts("deliveries.next_attempt_at", &next)?,
                    delivered_at: delivered
                        .map(|s| parse_ts("deliveries.delivered_at", &s))
                        .transpose()?,
                    last_error: err,
                    message_key,
                })
            },
        )
        .collect()
}
