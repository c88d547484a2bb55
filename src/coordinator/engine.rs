//! The incident engine: results in, incidents and notifications out.
//!
//! One [`Engine`] owns the coordinator's live state — per-check region
//! tracks, latency windows, certificate expiries, the open incidents, the
//! last time each region reported — and is the only writer of the store.
//! Everything it decides in one step (a batch of results, a tick of the
//! clock, an API action) is written in **one transaction**: the results,
//! the check state, the incident changes, their timeline and the outbox
//! rows. A crash therefore never leaves an incident without its
//! notification, a notification without its incident, or a result counted
//! without its effect. If a write fails, the engine reloads its state from
//! the store, so memory never runs ahead of disk.
//!
//! # Conditions
//!
//! For each check and each rule matching it, the engine evaluates the rule's
//! condition at `now` as **active**, **clear** or **unknown**:
//!
//! * `down`: the verdict under the rule's quorum is DOWN (active), UP or
//!   DEGRADED (clear), or UNKNOWN — no fresh region with a known state.
//! * `degraded`: the verdict under the majority quorum is DEGRADED.
//! * `latency`: the rule's percentile of its phase over its window, per
//!   region with a sample in the window, is above the threshold in a quorum
//!   of those regions; unknown without samples.
//! * `cert_expiry`: the earliest certificate expiry reported by any fresh
//!   region is within the threshold; unknown when no fresh region reported
//!   a certificate.
//! * `probe_offline` (per region, not per check): the region's last batch
//!   arrived more than `after` ago (coordinator clock).
//!
//! An **unknown** condition changes nothing: an open incident stays open
//! and a pending one keeps its start. Silence from the fleet is never read
//! as a target being up or down.
//!
//! # Incidents
//!
//! An active condition held for the rule's `for` opens an incident, one per
//! fingerprint (rule + check, or rule + region for probe_offline). A clear
//! condition resolves it. Notifications are outbox rows written in the same
//! transaction; their idempotency keys (`varde-<id>-firing`, ...) make each
//! kind at most once per incident.
//!
//! Notifications are **held** while the incident is *suppressed*: by a
//! silence or maintenance window matching its labels, by a dependency (a
//! check in `depends_on` whose verdict is DOWN, or that is failing in a
//! fresh region not yet judged DOWN there — so a dependent's failure that
//! arrives just before its dependency's is held too, while a dependency
//! long down in one region only does not hold every dependent), or by its
//! check flapping.
//!
//! A region that was DOWN and went stale is not evidence of recovery: a
//! `down` condition clears only when the remaining voters say UP, and a
//! `degraded` one only when they say UP or DOWN with no such region.
//! When the suppression ends and the incident is still open, the held
//! firing notification is queued then. An incident that was notified gets
//! exactly one resolved notification, whatever suppresses it by then; one
//! that was never notified resolves silently (recorded in its timeline).
//!
//! **Flapping:** a check whose verdict (majority quorum) changed more than
//! `flapping.changes` times within `flapping.window` is flapping. Its open
//! incidents stay open while it flaps (one incident per episode, not one per
//! flap), get one `flapping` notification, and hold everything else. The
//! flapping ends when the changes within the window fall to half the limit;
//! then the incident resolves (if the condition is clear) or its firing
//! notification is queued (if still active and never sent).
//!
//! **Manual resolve** (API): the incident is resolved at once (with its
//! resolved notification, if notified). While the condition stays active,
//! no new incident opens for that fingerprint ("latched"); once the
//! condition clears, the latch is dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::config::{CoordinatorConfig, Settings};
use super::latency::LatencyWindow;
use super::rules::{Rule, RuleKind};
use super::silence::Silence;
use super::store::{
    Incident, IncidentState, NotifyKind, PreparedBatch, SilenceRow, SqliteStore, StoreError,
    StoredResult, Txn,
};
use super::verdict::{CheckTrack, Observation, Policy, Quorum, RegionState, Verdict, VerdictState};
use crate::check::CheckResult;
use crate::notify::RegionView;
use crate::probe::CheckDef;
use crate::wire::{BatchAck, ResultBatch};

/// Who resolves incidents whose condition cleared.
pub const SYSTEM_ACTOR: &str = "varde";

/// What the engine remembers per check across restarts (stored as JSON in
/// `check_state`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CheckMem {
    track: CheckTrack,
    /// The verdict (majority quorum) at the last evaluation.
    #[serde(default = "unknown")]
    verdict: VerdictState,
    /// When the verdict changed, within the flapping window.
    #[serde(default)]
    changes: Vec<DateTime<Utc>>,
    #[serde(default)]
    flapping: bool,
    /// Rule name → since when its condition has been active without an
    /// incident (waiting for `for`).
    #[serde(default)]
    pending: BTreeMap<String, DateTime<Utc>>,
    /// Rules whose incident was resolved by hand while the condition held.
    #[serde(default)]
    latched: BTreeSet<String>,
    /// Region → earliest certificate expiry in its latest TLS result.
    #[serde(default)]
    certs: BTreeMap<String, DateTime<Utc>>,
}

fn unknown() -> VerdictState {
    VerdictState::Unknown
}

impl Default for CheckMem {
    fn default() -> Self {
        CheckMem {
            track: CheckTrack::default(),
            verdict: VerdictState::Unknown,
            changes: Vec::new(),
            flapping: false,
            pending: BTreeMap::new(),
            latched: BTreeSet::new(),
            certs: BTreeMap::new(),
        }
    }
}

/// The configuration, indexed for evaluation.
struct Compiled {
    cfg: Arc<CoordinatorConfig>,
    checks: HashMap<String, Arc<CheckDef>>,
    /// Check → [`check_labels`], computed once.
    labels: HashMap<String, Arc<BTreeMap<String, String>>>,
    /// Check → indexes of the rules that apply to it (not probe_offline).
    rules_for: HashMap<String, Arc<[usize]>>,
    /// Checks with a latency or cert_expiry rule: every result may change
    /// their condition.
    timed: BTreeSet<String>,
    /// Checks with a latency rule: the only ones whose samples are kept.
    latency_checks: BTreeSet<String>,
    /// Rule name → index.
    rule_index: HashMap<String, usize>,
    /// Check → checks that depend on it.
    dependents: HashMap<String, Vec<String>>,
    /// Indexes of probe_offline rules.
    offline_rules: Vec<usize>,
    /// The longest latency window of any rule (how much history to keep).
    latency_keep: Duration,
    /// Check names in a stable order, for the sweep.
    order: Vec<String>,
}

impl Compiled {
    fn new(cfg: Arc<CoordinatorConfig>) -> Self {
        let mut rules_for: HashMap<String, Arc<[usize]>> = HashMap::new();
        let mut all_labels = HashMap::new();
        let mut timed = BTreeSet::new();
        let mut latency_checks = BTreeSet::new();
        let mut dependents: HashMap<String, Vec<String>> = HashMap::new();
        let mut offline_rules = Vec::new();
        let mut latency_keep = Duration::ZERO;
        for (i, r) in cfg.rules.rules.iter().enumerate() {
            match &r.kind {
                RuleKind::ProbeOffline { .. } => offline_rules.push(i),
                RuleKind::Latency { window, .. } => latency_keep = latency_keep.max(*window),
                _ => {}
            }
        }
        for c in &cfg.checks {
            let labels = check_labels(c);
            let idx: Arc<[usize]> = cfg
                .rules
                .rules
                .iter()
                .enumerate()
                .filter(|(_, r)| !matches!(r.kind, RuleKind::ProbeOffline { .. }))
                .filter(|(_, r)| r.matches(&labels))
                .map(|(i, _)| i)
                .collect();
            if idx.iter().any(|&i| {
                matches!(
                    cfg.rules.rules[i].kind,
                    RuleKind::Latency { .. } | RuleKind::CertExpiry { .. }
                )
            }) {
                timed.insert(c.name.clone());
            }
            if idx
                .iter()
                .any(|&i| matches!(cfg.rules.rules[i].kind, RuleKind::Latency { .. }))
            {
                latency_checks.insert(c.name.clone());
            }
            rules_for.insert(c.name.clone(), idx);
            all_labels.insert(c.name.clone(), Arc::new(labels));
            for d in &c.depends_on {
                dependents
                    .entry(d.clone())
                    .or_default()
                    .push(c.name.clone());
            }
        }
        Compiled {
            checks: cfg
                .checks
                .iter()
                .map(|c| (c.name.clone(), Arc::new(c.clone())))
                .collect(),
            labels: all_labels,
            timed,
            latency_checks,
            rule_index: cfg
                .rules
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| (r.name.clone(), i))
                .collect(),
            order: cfg.checks.iter().map(|c| c.name.clone()).collect(),
            rules_for,
            dependents,
            offline_rules,
            latency_keep,
            cfg,
        }
    }

    fn policy(&self, def: &CheckDef, quorum: Quorum) -> Policy {
        let s = &self.cfg.settings;
        Policy {
            fail_after: s.fail_after,
            recover_after: s.recover_after,
            stale_after: def.interval.mul_f64(s.stale_intervals),
            quorum,
        }
    }
}

/// The labels rules, silences and routes match for a check: its own, plus
/// `check`, `kind` and `target`.
pub fn check_labels(def: &CheckDef) -> BTreeMap<String, String> {
    let mut l = def.labels.clone();
    l.insert("check".into(), def.name.clone());
    l.insert("kind".into(), def.kind().as_str().to_owned());
    l.insert("target".into(), def.target.clone());
    l
}

/// An open incident's key, hex SHA-256 of rule, check and region.
pub fn fingerprint(rule: &str, check: &str, region: Option<&str>) -> String {
    let mut h = Sha256::new();
    for part in [rule, check, region.unwrap_or("")] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// A rule condition at one instant.
#[derive(Clone, Debug)]
enum Cond {
    Active(Facts),
    Clear(Facts),
    Unknown,
}

/// What a condition saw: template values and the timeline detail.
#[derive(Clone, Debug, Default)]
struct Facts {
    verdict: Option<Verdict>,
    reason: Option<String>,
    value: Option<String>,
    threshold: Option<String>,
    phase: Option<String>,
    region: Option<String>,
}

impl Facts {
    fn detail(&self) -> serde_json::Value {
        let mut d = serde_json::Map::new();
        if let Some(v) = &self.verdict {
            d.insert("verdict".into(), json!(v));
        }
        for (k, v) in [
            ("reason", &self.reason),
            ("value", &self.value),
            ("threshold", &self.threshold),
            ("phase", &self.phase),
            ("region", &self.region),
        ] {
            if let Some(v) = v {
                d.insert(k.into(), json!(v));
            }
        }
        serde_json::Value::Object(d)
    }
}

/// A write the current step decided; applied in one transaction.
enum Op {
    Open(Box<Incident>),
    Update(Box<Incident>),
    Event {
        incident: i64,
        at: DateTime<Utc>,
        kind: &'static str,
        actor: Option<String>,
        detail: serde_json::Value,
    },
    Outbox {
        incident: i64,
        kind: NotifyKind,
        /// The n-th repeat (0 for other kinds).
        n: u32,
        receiver: String,
        payload: serde_json::Value,
        at: DateTime<Utc>,
    },
    Supersede(i64),
}

/// What [`Engine::ingest`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub ack: BatchAck,
    /// Firing notifications queued by this batch.
    pub notifications: usize,
}

/// Why an API action on an incident was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no incident {0}")]
    NotFound(i64),
    #[error("incident {id} is {state}")]
    Conflict { id: i64, state: &'static str },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Per-region view for the API and metrics.
#[derive(Clone, Debug, Serialize)]
pub struct RegionStatus {
    pub state: super::verdict::RegionState,
    pub stale: bool,
    pub last_result_at: Option<DateTime<Utc>>,
    pub fail_streak: u32,
    pub success_streak: u32,
    pub last_reason: Option<String>,
}

/// One check's status for the API.
#[derive(Clone, Debug, Serialize)]
pub struct CheckStatus {
    pub check: String,
    pub target: String,
    pub verdict: VerdictState,
    pub flapping: bool,
    pub regions: BTreeMap<String, RegionStatus>,
    pub open_incidents: Vec<i64>,
}

/// Counts for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub checks_by_verdict: BTreeMap<&'static str, u64>,
    pub open_by_state: BTreeMap<&'static str, u64>,
    pub region_last_seen: BTreeMap<String, DateTime<Utc>>,
    pub flapping: u64,
}

/// The incident engine. Not thread-safe by itself: the coordinator keeps it
/// behind a mutex and calls it from blocking threads.
pub struct Engine {
    store: Arc<SqliteStore>,
    c: Compiled,
    mem: HashMap<String, CheckMem>,
    latency: HashMap<(String, String), LatencyWindow>,
    /// (check, region) → what its latest result said, kept from a region's
    /// first failure until the check is up again everywhere: what
    /// notifications show per region (reason, message, phases). Not
    /// persisted.
    views: HashMap<String, BTreeMap<String, RegionView>>,
    /// Open incidents by fingerprint.
    open: HashMap<String, Incident>,
    /// Region → when its latest batch arrived.
    regions: BTreeMap<String, DateTime<Utc>>,
    /// probe_offline fingerprints resolved by hand while still offline.
    offline_latched: BTreeSet<String>,
    /// Live API silences.
    silences: Vec<(i64, Silence)>,
    /// Incident id → the latest repeat queued (the outbox's idempotency
    /// keys make a repeat after a restart a no-op).
    repeated: HashMap<i64, u32>,
    /// Checks whose saved state must change in the next write (a region
    /// changed state, a timer, flapping, a certificate...).
    dirty: BTreeSet<String>,
    /// Checks whose only change is in streak counters and last-seen keys:
    /// saved at the next checkpoint ([`CHECKPOINT_EVERY`]). After a crash
    /// the results since then are replayed from the store instead.
    lazy: BTreeSet<String>,
    /// When each lazy check first changed, oldest first; a tick saves
    /// those older than half of [`CHECKPOINT_EVERY`] (a steady trickle,
    /// never all checks at once).
    lazy_since: VecDeque<(DateTime<Utc>, String)>,
    ops: Vec<Op>,
    /// Temporary ids of incidents opened in the current step.
    next_temp: i64,
    cursor: usize,
}

/// Checks whose only change is their streaks are saved within half of
/// this. A restart replays the results received in the last two of these
/// (they are in the store, written in the same transactions), so no streak
/// is lost.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

/// How many checks a tick sweeps at least (all of them every
/// `SWEEP_TICKS` ticks), besides those with pending or open incidents.
const SWEEP_TICKS: usize = 5;

impl Engine {
    /// Builds the engine from the store's state and `cfg`.
    pub fn new(
        store: Arc<SqliteStore>,
        cfg: Arc<CoordinatorConfig>,
        now: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        let mut e = Engine {
            store,
            c: Compiled::new(cfg),
            mem: HashMap::new(),
            latency: HashMap::new(),
            views: HashMap::new(),
            open: HashMap::new(),
            regions: BTreeMap::new(),
            offline_latched: BTreeSet::new(),
            silences: Vec::new(),
            repeated: HashMap::new(),
            dirty: BTreeSet::new(),
            lazy: BTreeSet::new(),
            lazy_since: VecDeque::new(),
            ops: Vec::new(),
            next_temp: -1,
            cursor: 0,
        };
        e.reload(now)?;
        e.sweep_unconfigured(now);
        e.commit(now)?;
        Ok(e)
    }

    pub fn store(&self) -> &Arc<SqliteStore> {
        &self.store
    }

    pub fn config(&self) -> &Arc<CoordinatorConfig> {
        &self.c.cfg
    }

    /// Drops all memory and rebuilds it from the store: after a panic in
    /// the middle of a step (whose transaction rolled back), memory may be
    /// ahead of disk.
    pub fn recover(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.next_temp = -1;
        self.reload(now)
    }

    /// Replaces all memory with what the store holds.
    fn reload(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.ops.clear();
        self.dirty.clear();
        self.lazy.clear();
        self.lazy_since.clear();
        self.mem = self
            .store
            .load_check_states::<CheckMem>()?
            .into_iter()
            .collect();
        self.open = self
            .store
            .open_incidents()?
            .into_iter()
            .map(|i| (i.fingerprint.clone(), i))
            .collect();
        self.regions.clear();
        for p in self.store.probes()? {
            let e = self.regions.entry(p.region).or_insert(p.last_seen);
            *e = (*e).max(p.last_seen);
        }
        // While the coordinator was down nobody could report: a region gets
        // a full `after` from now before it counts as offline, unless it
        // already had an open probe_offline incident (that one stays).
        for (region, seen) in self.regions.iter_mut() {
            let offline = self
                .open
                .values()
                .any(|i| i.check.is_empty() && i.region.as_deref() == Some(region.as_str()));
            if !offline {
                *seen = (*seen).max(now);
            }
        }
        self.silences = self
            .store
            .silences(now, false)?
            .into_iter()
            .filter_map(|s| silence_from_row(&s).ok().map(|x| (s.id, x)))
            .collect();
        // One pass over the recent results serves two needs:
        // * streaks changed since the last checkpoint were not saved: replay
        //   the results of the last two checkpoint periods before the latest
        //   arrival (already applied ones are ignored by their key), and
        //   save what they changed at the next write;
        // * latency windows live only in memory: rebuild them from the
        //   results that arrived within the longest window.
        self.latency.clear();
        let replay_since = self.store.latest_arrival()?.map(|latest| {
            latest - TimeDelta::from_std(CHECKPOINT_EVERY * 2).unwrap_or(TimeDelta::MAX)
        });
        let latency_since = (!self.c.latency_keep.is_zero())
            .then(|| now - TimeDelta::from_std(self.c.latency_keep).unwrap_or(TimeDelta::MAX));
        let Some(since) = replay_since.into_iter().chain(latency_since).min() else {
            return Ok(());
        };
        for stored in self.store.results_since(since)? {
            let StoredResult {
                check,
                region,
                seq,
                received_at,
                result: r,
            } = stored;
            if latency_since.is_some_and(|t| received_at > t)
                && r.success
                && self.c.latency_checks.contains(&check)
            {
                self.latency
                    .entry((check.clone(), region.clone()))
                    .or_default()
                    .push(r.started_at, r.duration, &r.phases);
            }
            if replay_since.is_none_or(|t| received_at < t) {
                continue;
            }
            let Some(def) = self.c.checks.get(&check) else {
                continue;
            };
            let policy = self.c.policy(def, Quorum::Majority);
            let mem = self.mem.entry(check.clone()).or_default();
            let _ = mem
                .track
                .apply(&region, &Observation::from_result(seq, &r), &policy);
            self.dirty.insert(check);
        }
        Ok(())
    }

    /// Applies a new configuration: checks and rules no longer configured
    /// resolve their open incidents.
    pub fn set_config(
        &mut self,
        cfg: Arc<CoordinatorConfig>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.c = Compiled::new(cfg);
        self.sweep_unconfigured(now);
        let removed: Vec<String> = self
            .mem
            .keys()
            .filter(|k| !self.c.checks.contains_key(*k))
            .cloned()
            .collect();
        self.mem.retain(|k, _| self.c.checks.contains_key(k));
        self.latency
            .retain(|(k, _), _| self.c.latency_checks.contains(k));
        if !removed.is_empty() {
            self.store.delete_check_states(&removed)?;
        }
        self.commit(now)
    }

    /// Resolves open incidents whose check or rule is no longer configured
    /// (or no longer applies), and forgets timers and latches of rules that
    /// no longer apply to a check. Runs at start, on reload and every tick,
    /// so an incident orphaned while the coordinator was stopped, or by a
    /// failed write, still gets its resolved notification.
    fn sweep_unconfigured(&mut self, now: DateTime<Utc>) {
        let cfg = self.c.cfg.clone();
        let applies =
            |check: &str, rule: &str| -> bool {
                if check.is_empty() {
                    return cfg.rules.rules.iter().any(|r| {
                        r.name == rule && matches!(r.kind, RuleKind::ProbeOffline { .. })
                    });
                }
                self.c
                    .rules_for
                    .get(check)
                    .is_some_and(|v| v.iter().any(|&r| cfg.rules.rules[r].name == rule))
            };
        let gone: Vec<String> = self
            .open
            .values()
            .filter(|i| !applies(&i.check, &i.rule))
            .map(|i| i.fingerprint.clone())
            .collect();
        let mut stale_timers = Vec::new();
        for (check, mem) in &self.mem {
            if mem
                .pending
                .keys()
                .chain(mem.latched.iter())
                .any(|r| !applies(check, r))
            {
                stale_timers.push(check.clone());
            }
        }
        for fp in gone {
            self.resolve(&fp, now, "config", "no longer configured");
        }
        for check in stale_timers {
            if let Some(mem) = self.mem.get_mut(&check) {
                let keep: BTreeSet<String> = self
                    .c
                    .rules_for
                    .get(&check)
                    .map(|v| v.iter().map(|&r| cfg.rules.rules[r].name.clone()).collect())
                    .unwrap_or_default();
                mem.pending.retain(|r, _| keep.contains(r));
                mem.latched.retain(|r| keep.contains(r));
                self.dirty.insert(check);
            }
        }
    }

    // === ingest ===

    /// Stores a batch and applies its new results, in one transaction.
    pub fn ingest(
        &mut self,
        batch: &ResultBatch,
        received_at: DateTime<Utc>,
    ) -> Result<IngestOutcome, StoreError> {
        let prepared = PreparedBatch::new(batch.clone())?;
        let (acks, notifications) =
            self.ingest_group(std::slice::from_ref(&prepared), received_at)?;
        Ok(IngestOutcome {
            ack: acks[0],
            notifications,
        })
    }

    /// Stores several batches and applies their new results in **one**
    /// transaction (group commit: one fsync for all of them). Returns each
    /// batch's acknowledgement, in order, and the firing notifications the
    /// group queued. A store failure fails them all; nothing is stored.
    pub fn ingest_group(
        &mut self,
        batches: &[PreparedBatch],
        received_at: DateTime<Utc>,
    ) -> Result<(Vec<BatchAck>, usize), StoreError> {
        // The results are stored in the same transaction as their effects;
        // which of them are new is known only inside it, so the effects are
        // computed there too.
        let mut acks = Vec::with_capacity(batches.len());
        let mut notifications = 0;
        let result = self.store.clone().transaction(|tx| {
            let mut touched: BTreeSet<String> = BTreeSet::new();
            let open_checks: BTreeSet<String> =
                self.open.values().map(|i| i.check.clone()).collect();
            for prepared in batches {
                let batch = prepared.batch();
                let (ack, new) = tx.insert_batch(prepared, received_at)?;
                acks.push(ack);
                let region = &batch.region;
                let seen = self.regions.entry(region.clone()).or_insert(received_at);
                *seen = (*seen).max(received_at);
                for i in new {
                    let rec = &batch.results[i];
                    if self.apply_result(
                        &rec.check,
                        region,
                        rec.seq,
                        &rec.result,
                        received_at,
                        &open_checks,
                    ) && !touched.contains(&rec.check)
                    {
                        touched.insert(rec.check.clone());
                    }
                }
            }
            let mut deps: BTreeSet<String> = BTreeSet::new();
            for check in &touched {
                self.evaluate(check, received_at);
                for d in self.c.dependents.get(check).into_iter().flatten() {
                    if !touched.contains(d) {
                        deps.insert(d.clone());
                    }
                }
            }
            for d in deps {
                if open_checks.contains(&d) {
                    self.evaluate(&d, received_at);
                }
            }
            self.probe_offline(received_at);
            notifications = self
                .ops
                .iter()
                .filter(|o| {
                    matches!(
                        o,
                        Op::Outbox {
                            kind: NotifyKind::Firing,
                            ..
                        }
                    )
                })
                .count();
            self.write(tx, received_at)
        });
        self.finish(result, received_at)?;
        Ok((acks, notifications))
    }

    /// Applies one new result to memory. Returns whether the check must be
    /// evaluated now: a result that changes no region's state, brings no
    /// stale region back, and meets no timer, open incident, latency or
    /// certificate rule cannot change any condition (the tick's sweep
    /// covers time passing), so most results of healthy checks skip it.
    fn apply_result(
        &mut self,
        check: &str,
        region: &str,
        seq: u64,
        r: &CheckResult,
        now: DateTime<Utc>,
        open_checks: &BTreeSet<String>,
    ) -> bool {
        let Some(def) = self.c.checks.get(check) else {
            // A check removed from config while the probe still ran it, or
            // one the probe has locally: stored, not judged.
            return false;
        };
        let policy = self.c.policy(def, Quorum::Majority);
        if !self.mem.contains_key(check) {
            self.mem.insert(check.to_owned(), CheckMem::default());
        }
        let Some(mem) = self.mem.get_mut(check) else {
            return false;
        };
        let was_stale = mem
            .track
            .region(region)
            .is_none_or(|t| t.is_stale(now, &policy));
        let obs = Observation::from_result(seq, r);
        let transition = mem.track.apply(region, &obs, &policy);
        let waiting = !mem.pending.is_empty() || mem.flapping || !mem.latched.is_empty();
        let mut now_dirty = transition.is_some();
        if let Some(tls) = &r.tls
            && let Some(exp) = tls.earliest_expiry
            && mem.certs.get(region) != Some(&exp)
        {
            mem.certs.insert(region.to_owned(), exp);
            now_dirty = true;
        }
        if !r.success || self.views.contains_key(check) {
            let views = self.views.entry(check.to_owned()).or_default();
            views.insert(region.to_owned(), region_view(r));
            if views.values().all(|v| v.success) {
                self.views.remove(check);
            }
        }
        if r.success && self.c.latency_checks.contains(check) {
            let w = self
                .latency
                .entry((check.to_owned(), region.to_owned()))
                .or_default();
            w.push(r.started_at, r.duration, &r.phases);
            w.prune(now, self.c.latency_keep);
        }
        let needs_eval = now_dirty
            || was_stale
            || waiting
            || self.c.timed.contains(check)
            || open_checks.contains(check);
        if now_dirty {
            self.dirty.insert(check.to_owned());
        } else if !self.lazy.contains(check) {
            self.lazy.insert(check.to_owned());
            self.lazy_since.push_back((now, check.to_owned()));
        }
        if let Some(t) = transition {
            let detail = json!({
                "region": t.region, "from": t.from, "to": t.to,
                "reason": t.reason.map(|r| r.as_str()), "result_started_at": t.at,
            });
            let ids: Vec<i64> = self
                .open
                .values()
                .filter(|i| i.check == check)
                .map(|i| i.id)
                .collect();
            for id in ids {
                self.ops.push(Op::Event {
                    incident: id,
                    at: now,
                    kind: "vote",
                    actor: Some(region.to_owned()),
                    detail: detail.clone(),
                });
            }
        }
        needs_eval
    }

    // === ticks ===

    /// Advances time-driven state: staleness, `for` durations, latency
    /// windows, certificate thresholds, probe_offline, silences and
    /// maintenance windows starting or ending, flapping ending. Call about
    /// once a second. Checks with something pending or open are evaluated
    /// every tick; all others at least every [`SWEEP_TICKS`] ticks.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.silences.retain(|(_, s)| s.ends_at > now);
        self.sweep_unconfigured(now);
        let due = now - TimeDelta::from_std(CHECKPOINT_EVERY / 2).unwrap_or(TimeDelta::MAX);
        while let Some((since, _)) = self.lazy_since.front() {
            if *since > due {
                break;
            }
            if let Some((_, check)) = self.lazy_since.pop_front()
                && self.lazy.remove(&check)
            {
                self.dirty.insert(check);
            }
        }
        let mut due: BTreeSet<String> = self
            .open
            .values()
            .filter(|i| !i.check.is_empty())
            .map(|i| i.check.clone())
            .collect();
        due.extend(
            self.mem
                .iter()
                .filter(|(_, m)| !m.pending.is_empty() || m.flapping || !m.latched.is_empty())
                .map(|(k, _)| k.clone()),
        );
        let n = self.c.order.len();
        if n > 0 {
            let per_tick = n.div_ceil(SWEEP_TICKS);
            for _ in 0..per_tick {
                self.cursor %= n;
                due.insert(self.c.order[self.cursor].clone());
                self.cursor += 1;
            }
        }
        for check in &due {
            if self.c.checks.contains_key(check) {
                self.evaluate(check, now);
            }
        }
        self.probe_offline(now);
        self.repeats(now);
        self.commit(now)
    }

    /// Queues the repeat notifications due: a firing incident, notified,
    /// not acknowledged and not held, is notified again every `repeat` of
    /// its rule after its first notification. A repeat skipped (the
    /// incident was held, or the coordinator was down) is not made up: only
    /// the latest is sent.
    fn repeats(&mut self, now: DateTime<Utc>) {
        let cfg = self.c.cfg.clone();
        let due: Vec<(Incident, u32)> = self
            .open
            .values()
            .filter(|i| i.state == IncidentState::Firing && i.suppressed_by.is_none())
            .filter_map(|i| {
                let every = cfg.rules.rules[*self.c.rule_index.get(&i.rule)?].repeat?;
                let since = now.signed_duration_since(i.notified_at?).to_std().ok()?;
                let n = u32::try_from(since.as_nanos() / every.as_nanos().max(1)).ok()?;
                (n > 0 && self.repeated.get(&i.id).is_none_or(|&sent| sent < n))
                    .then(|| (i.clone(), n))
            })
            .collect();
        for (inc, n) in due {
            self.repeated.insert(inc.id, n);
            let detail = json!({ "repeat": n });
            self.notify_n(&inc, NotifyKind::Repeat, n, Some(&detail), now);
        }
    }

    // === evaluation ===

    /// Evaluates every rule of one check at `now` and drives its incidents.
    fn evaluate(&mut self, check: &str, now: DateTime<Utc>) {
        let Some(def) = self.c.checks.get(check).cloned() else {
            return;
        };
        let mem = self.mem.entry(check.to_owned()).or_default();
        // Flapping, on the majority verdict.
        let policy = self.c.policy(&def, Quorum::Majority);
        let verdict = mem.track.verdict(now, &policy);
        let settings: Settings = self.c.cfg.settings;
        let window = TimeDelta::from_std(settings.flap_window).unwrap_or(TimeDelta::MAX);
        let mut changed = false;
        if verdict.state != mem.verdict {
            if mem.verdict != VerdictState::Unknown && verdict.state != VerdictState::Unknown {
                mem.changes.push(now);
            }
            mem.verdict = verdict.state;
            changed = true;
        }
        let before = mem.changes.len();
        mem.changes
            .retain(|t| now.signed_duration_since(*t) < window);
        changed |= mem.changes.len() != before;
        let count = mem.changes.len() as u32;
        let entered = !mem.flapping && count > settings.flap_changes;
        let left = mem.flapping && count <= settings.flap_changes / 2;
        if entered {
            mem.flapping = true;
        } else if left {
            mem.flapping = false;
        }
        if changed || entered || left {
            self.dirty.insert(check.to_owned());
        }
        let labels = self.c.labels.get(check).cloned().unwrap_or_default();
        let rules = self
            .c
            .rules_for
            .get(check)
            .cloned()
            .unwrap_or_else(|| Arc::from([]));
        let cfg = self.c.cfg.clone();
        for &i in rules.iter() {
            let rule = &cfg.rules.rules[i];
            let cond = self.condition(rule, &def, now);
            self.drive(rule, &def, &labels, None, cond, now);
        }
        if entered || left {
            let fps: Vec<String> = self
                .open
                .values()
                .filter(|i| i.check == check)
                .map(|i| i.fingerprint.clone())
                .collect();
            for fp in fps {
                if entered {
                    self.flapping_notice(&fp, now, count);
                } else {
                    self.flapping_ended(&fp, &def, &labels, now);
                }
            }
        }
    }

    fn condition(&self, rule: &Rule, def: &CheckDef, now: DateTime<Utc>) -> Cond {
        let Some(mem) = self.mem.get(&def.name) else {
            return Cond::Unknown;
        };
        match &rule.kind {
            RuleKind::Down { .. } | RuleKind::Degraded { .. } => {
                let q = match &rule.kind {
                    RuleKind::Down { quorum, .. } => *quorum,
                    _ => Quorum::Majority,
                };
                let v = mem.track.verdict(now, &self.c.policy(def, q));
                let want = if matches!(rule.kind, RuleKind::Down { .. }) {
                    VerdictState::Down
                } else {
                    VerdictState::Degraded
                };
                let reason = v
                    .down
                    .iter()
                    .find_map(|r| mem.track.region(r).and_then(|t| t.last_reason()))
                    .map(|r| r.as_str().to_owned());
                // A region that was down and went silent is not evidence of
                // recovery: while one is stale, only UP (for `down`) or
                // DOWN/UP (for `degraded`) among the others clears.
                let stale_down = v.stale.iter().any(|r| {
                    mem.track
                        .region(r)
                        .is_some_and(|t| t.state() == RegionState::Down)
                });
                let facts = Facts {
                    reason,
                    verdict: Some(v.clone()),
                    ..Facts::default()
                };
                // Fresh regions without enough evidence yet hold the
                // decision: when counting them changes the verdict (1 of 3
                // down is DEGRADED, 1 of 1 would be DOWN), nothing fires
                // and nothing clears until they make up their minds.
                let known = v.down.len() + v.up.len();
                let known_state = if known == 0 {
                    VerdictState::Unknown
                } else if q.is_met(v.down.len(), known) {
                    VerdictState::Down
                } else if v.down.is_empty() {
                    VerdictState::Up
                } else {
                    VerdictState::Degraded
                };
                let undecided = !v.unknown.is_empty() && known_state != v.state;
                match v.state {
                    VerdictState::Unknown => Cond::Unknown,
                    _ if undecided => Cond::Unknown,
                    s if s == want => Cond::Active(facts),
                    VerdictState::Up | VerdictState::Degraded if stale_down => {
                        if want == VerdictState::Down && v.state == VerdictState::Up {
                            Cond::Clear(facts)
                        } else {
                            Cond::Unknown
                        }
                    }
                    _ => Cond::Clear(facts),
                }
            }
            RuleKind::Latency {
                percentile,
                phase,
                window,
                threshold,
                quorum,
                ..
            } => {
                let policy = self.c.policy(def, *quorum);
                let (mut voters, mut over, mut worst) = (0usize, 0usize, Duration::ZERO);
                for (region, track) in mem.track.regions() {
                    if track.is_stale(now, &policy) {
                        continue;
                    }
                    let Some(w) = self.latency.get(&(def.name.clone(), region.to_owned())) else {
                        continue;
                    };
                    let Some(p) = w.percentile(*phase, *percentile, *window, now) else {
                        continue;
                    };
                    voters += 1;
                    worst = worst.max(p);
                    if p > *threshold {
                        over += 1;
                    }
                }
                let facts = Facts {
                    value: Some(human(worst)),
                    threshold: Some(human(*threshold)),
                    phase: Some(phase.map_or("total", |p| p.as_str()).to_owned()),
                    ..Facts::default()
                };
                if voters == 0 {
                    Cond::Unknown
                } else if quorum.is_met(over, voters) {
                    Cond::Active(facts)
                } else {
                    Cond::Clear(facts)
                }
            }
            RuleKind::CertExpiry { threshold } => {
                let policy = self.c.policy(def, Quorum::Majority);
                let earliest = mem
                    .certs
                    .iter()
                    .filter(|(r, _)| {
                        mem.track
                            .region(r)
                            .is_some_and(|t| !t.is_stale(now, &policy))
                    })
                    .map(|(_, e)| *e)
                    .min();
                let Some(exp) = earliest else {
                    return Cond::Unknown;
                };
                let left = exp.signed_duration_since(now);
                let facts = Facts {
                    value: Some(match left.to_std() {
                        Ok(d) => human(Duration::from_secs(d.as_secs())),
                        Err(_) => "expired".to_owned(),
                    }),
                    threshold: Some(human(*threshold)),
                    ..Facts::default()
                };
                if left < TimeDelta::from_std(*threshold).unwrap_or(TimeDelta::MAX) {
                    Cond::Active(facts)
                } else {
                    Cond::Clear(facts)
                }
            }
            RuleKind::ProbeOffline { .. } => Cond::Unknown,
        }
    }

    /// Evaluates every probe_offline rule for every region ever seen.
    fn probe_offline(&mut self, now: DateTime<Utc>) {
        let cfg = self.c.cfg.clone();
        let regions: Vec<(String, DateTime<Utc>)> =
            self.regions.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let mut driven = BTreeSet::new();
        for &i in &self.c.offline_rules.clone() {
            let rule = &cfg.rules.rules[i];
            let RuleKind::ProbeOffline { after } = rule.kind else {
                continue;
            };
            for (region, seen) in &regions {
                let mut labels = BTreeMap::new();
                labels.insert("region".to_owned(), region.clone());
                if !rule.matches(&labels) {
                    continue;
                }
                let silent = now.signed_duration_since(*seen);
                let facts = Facts {
                    region: Some(region.clone()),
                    value: Some(human(Duration::from_secs(
                        u64::try_from(silent.num_seconds()).unwrap_or(0),
                    ))),
                    threshold: Some(human(after)),
                    ..Facts::default()
                };
                let cond = if silent > TimeDelta::from_std(after).unwrap_or(TimeDelta::MAX) {
                    Cond::Active(facts)
                } else {
                    Cond::Clear(facts)
                };
                driven.insert(fingerprint(&rule.name, "", Some(region)));
                self.drive_offline(rule, region, &labels, cond, now);
            }
        }
        // A probe_offline incident whose region no probe reports for any
        // more (the probe moved region) or that its rule no longer covers
        // resolves: nothing would ever clear it otherwise.
        let orphans: Vec<String> = self
            .open
            .values()
            .filter(|i| i.check.is_empty() && !driven.contains(&i.fingerprint))
            .map(|i| i.fingerprint.clone())
            .collect();
        for fp in orphans {
            self.resolve(&fp, now, "config", "region no longer tracked by this rule");
        }
    }

    fn drive_offline(
        &mut self,
        rule: &Rule,
        region: &str,
        labels: &BTreeMap<String, String>,
        cond: Cond,
        now: DateTime<Utc>,
    ) {
        let fp = fingerprint(&rule.name, "", Some(region));
        match cond {
            Cond::Active(f) => {
                if self.open.contains_key(&fp) {
                    self.resuppress(&fp, labels, None, now);
                } else if !self.offline_latched.contains(&fp) {
                    self.fire(rule, None, labels, Some(region), &f, now);
                }
            }
            Cond::Clear(f) => {
                self.offline_latched.remove(&fp);
                if self.open.contains_key(&fp) {
                    self.resolve_with(&fp, now, SYSTEM_ACTOR, "region reporting again", Some(&f));
                }
            }
            Cond::Unknown => {}
        }
    }

    /// Moves one (rule, check) incident along its lifecycle.
    fn drive(
        &mut self,
        rule: &Rule,
        def: &CheckDef,
        labels: &BTreeMap<String, String>,
        region: Option<&str>,
        cond: Cond,
        now: DateTime<Utc>,
    ) {
        let fp = fingerprint(&rule.name, &def.name, region);
        let for_ = match &rule.kind {
            RuleKind::Down { for_, .. }
            | RuleKind::Latency { for_, .. }
            | RuleKind::Degraded { for_ } => *for_,
            _ => Duration::ZERO,
        };
        let flapping = self.mem.get(&def.name).is_some_and(|m| m.flapping);
        match cond {
            Cond::Unknown => {
                if self.open.contains_key(&fp) {
                    self.resuppress(&fp, labels, Some(def), now);
                }
            }
            Cond::Clear(facts) => {
                let mem = self.mem.entry(def.name.clone()).or_default();
                let mut dirty = mem.pending.remove(&rule.name).is_some();
                dirty |= mem.latched.remove(&rule.name);
                if dirty {
                    self.dirty.insert(def.name.clone());
                }
                if self.open.contains_key(&fp) {
                    if flapping {
                        self.resuppress(&fp, labels, Some(def), now);
                    } else {
                        self.resolve_with(
                            &fp,
                            now,
                            SYSTEM_ACTOR,
                            "condition cleared",
                            Some(&facts),
                        );
                    }
                }
            }
            Cond::Active(facts) => {
                if self.open.contains_key(&fp) {
                    self.resuppress(&fp, labels, Some(def), now);
                    return;
                }
                let mem = self.mem.entry(def.name.clone()).or_default();
                if mem.latched.contains(&rule.name) {
                    return;
                }
                let since = *mem.pending.entry(rule.name.clone()).or_insert_with(|| {
                    self.dirty.insert(def.name.clone());
                    now
                });
                let held = now.signed_duration_since(since);
                if held >= TimeDelta::from_std(for_).unwrap_or(TimeDelta::MAX) {
                    mem.pending.remove(&rule.name);
                    self.dirty.insert(def.name.clone());
                    self.fire(rule, Some(def), labels, region, &facts, now);
                }
            }
        }
    }

    /// Why notifications of an incident with these labels are held now.
    fn suppression(
        &self,
        labels: &BTreeMap<String, String>,
        def: Option<&CheckDef>,
        now: DateTime<Utc>,
    ) -> Option<String> {
        for (id, s) in &self.silences {
            if s.is_active(now) && s.matches(labels) {
                return Some(format!("silence:{id}"));
            }
        }
        for (i, s) in self.c.cfg.rules.silences.iter().enumerate() {
            if s.is_active(now) && s.matches(labels) {
                return Some(format!("silence:config-{}", i + 1));
            }
        }
        for m in &self.c.cfg.rules.maintenance {
            if m.matches(labels) && m.is_active(now) {
                return Some(format!("maintenance:{}", m.name));
            }
        }
        let def = def?;
        for dep in &def.depends_on {
            let (Some(ddef), Some(dmem)) = (self.c.checks.get(dep), self.mem.get(dep)) else {
                continue;
            };
            let policy = self.c.policy(ddef, Quorum::Majority);
            let v = dmem.track.verdict(now, &policy);
            // DOWN, or failing somewhere it is not yet judged down (its
            // failure may simply not have reached fail_after yet). A region
            // where the dependency has long been down while the verdict is
            // only DEGRADED does not hold dependents' pages.
            let failing = dmem.track.regions().any(|(_, t)| {
                !t.is_stale(now, &policy) && t.fail_streak() > 0 && t.state() != RegionState::Down
            });
            if v.state == VerdictState::Down || failing {
                return Some(format!("dependency:{dep}"));
            }
        }
        if self.mem.get(&def.name).is_some_and(|m| m.flapping) {
            return Some("flapping".to_owned());
        }
        None
    }

    fn fire(
        &mut self,
        rule: &Rule,
        def: Option<&CheckDef>,
        labels: &BTreeMap<String, String>,
        region: Option<&str>,
        facts: &Facts,
        now: DateTime<Utc>,
    ) {
        let check = def.map_or("", |d| d.name.as_str());
        let fp = fingerprint(&rule.name, check, region);
        let mut all = labels.clone();
        all.insert("rule".into(), rule.name.clone());
        all.insert("severity".into(), rule.severity.as_str().to_owned());
        if let Some(r) = region {
            all.insert("region".into(), r.to_owned());
        }
        let suppressed = self.suppression(&all, def, now);
        let annotations = render(rule, def, region, facts);
        let id = self.next_temp;
        self.next_temp -= 1;
        let mut inc = Incident {
            id,
            fingerprint: fp.clone(),
            rule: rule.name.clone(),
            kind: rule.kind.as_str().to_owned(),
            check: check.to_owned(),
            region: region.map(str::to_owned),
            state: IncidentState::Firing,
            severity: rule.severity.as_str().to_owned(),
            receiver: rule.receiver.clone(),
            started_at: now,
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
            resolved_by: None,
            notified_at: None,
            suppressed_by: suppressed.clone(),
            flapping: def.is_some_and(|d| self.mem.get(&d.name).is_some_and(|m| m.flapping)),
            labels: all,
            annotations,
            updated_at: now,
        };
        let detail = facts.detail();
        // Held only because its check flaps: the one notice it gets is
        // the flapping notice.
        let flap_notice = suppressed.as_deref() == Some("flapping");
        if suppressed.is_none() || flap_notice {
            inc.notified_at = Some(now);
        }
        self.ops.push(Op::Open(Box::new(inc.clone())));
        self.ops.push(Op::Event {
            incident: id,
            at: now,
            kind: "firing",
            actor: None,
            detail: detail.clone(),
        });
        match &suppressed {
            None => self.notify(&inc, NotifyKind::Firing, Some(&detail), now),
            Some(by) => {
                self.ops.push(Op::Event {
                    incident: id,
                    at: now,
                    kind: "suppressed",
                    actor: None,
                    detail: json!({ "by": by }),
                });
                if flap_notice {
                    self.notify(&inc, NotifyKind::Flapping, Some(&detail), now);
                }
            }
        }
        self.open.insert(fp, inc);
    }

    /// Re-checks an open incident's suppression; queues the held firing
    /// notification when it ends.
    fn resuppress(
        &mut self,
        fp: &str,
        _labels: &BTreeMap<String, String>,
        def: Option<&CheckDef>,
        now: DateTime<Utc>,
    ) {
        let Some(inc) = self.open.get(fp) else { return };
        let now_by = self.suppression(&inc.labels, def, now);
        if now_by == inc.suppressed_by {
            return;
        }
        let mut inc = inc.clone();
        let was = inc.suppressed_by.take();
        inc.suppressed_by = now_by.clone();
        inc.updated_at = now;
        match &now_by {
            Some(by) => self.ops.push(Op::Event {
                incident: inc.id,
                at: now,
                kind: "suppressed",
                actor: None,
                detail: json!({ "by": by, "was": was }),
            }),
            None => {
                self.ops.push(Op::Event {
                    incident: inc.id,
                    at: now,
                    kind: "unsuppressed",
                    actor: None,
                    detail: json!({ "was": was }),
                });
                // At most once per incident (idempotency key): an incident
                // notified before its suppression is not paged again, and
                // one a person acknowledged while it was held is not paged.
                if inc.state == IncidentState::Firing {
                    if inc.notified_at.is_none() {
                        inc.notified_at = Some(now);
                    }
                    self.notify(&inc, NotifyKind::Firing, None, now);
                }
            }
        }
        self.ops.push(Op::Update(Box::new(inc.clone())));
        self.open.insert(fp.to_owned(), inc);
    }

    fn flapping_notice(&mut self, fp: &str, now: DateTime<Utc>, changes: u32) {
        let Some(mut inc) = self.open.get(fp).cloned() else {
            return;
        };
        inc.flapping = true;
        inc.updated_at = now;
        let detail = json!({ "changes": changes });
        self.ops.push(Op::Event {
            incident: inc.id,
            at: now,
            kind: "flapping",
            actor: None,
            detail: detail.clone(),
        });
        // Held by a silence, maintenance or dependency: not even this.
        let other = inc
            .suppressed_by
            .as_deref()
            .is_some_and(|s| s != "flapping");
        if !other {
            inc.notified_at.get_or_insert(now);
            self.notify(&inc, NotifyKind::Flapping, Some(&detail), now);
        }
        self.ops.push(Op::Update(Box::new(inc.clone())));
        self.open.insert(fp.to_owned(), inc);
    }

    fn flapping_ended(
        &mut self,
        fp: &str,
        def: &CheckDef,
        labels: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) {
        let Some(mut inc) = self.open.get(fp).cloned() else {
            return;
        };
        inc.flapping = false;
        inc.updated_at = now;
        self.ops.push(Op::Event {
            incident: inc.id,
            at: now,
            kind: "flapping_ended",
            actor: None,
            detail: json!({}),
        });
        self.ops.push(Op::Update(Box::new(inc.clone())));
        self.open.insert(fp.to_owned(), inc.clone());
        let cfg = self.c.cfg.clone();
        let Some(rule) = cfg.rules.rules.iter().find(|r| r.name == inc.rule) else {
            return;
        };
        let cond = self.condition(rule, def, now);
        match cond {
            Cond::Clear(f) => {
                self.resolve_with(fp, now, SYSTEM_ACTOR, "condition cleared", Some(&f));
            }
            _ => self.resuppress(fp, labels, Some(def), now),
        }
    }

    /// Resolves an open incident; queues the resolved notification if it
    /// was notified.
    fn resolve(&mut self, fp: &str, now: DateTime<Utc>, actor: &str, why: &str) {
        self.resolve_with(fp, now, actor, why, None);
    }

    fn resolve_with(
        &mut self,
        fp: &str,
        now: DateTime<Utc>,
        actor: &str,
        why: &str,
        facts: Option<&Facts>,
    ) {
        let Some(mut inc) = self.open.remove(fp) else {
            return;
        };
        self.repeated.remove(&inc.id);
        inc.state = IncidentState::Resolved;
        inc.resolved_at = Some(now);
        inc.resolved_by = Some(actor.to_owned());
        inc.updated_at = now;
        let mut detail = facts.map_or_else(|| json!({}), Facts::detail);
        if let Some(obj) = detail.as_object_mut() {
            obj.insert("why".into(), json!(why));
        }
        self.ops.push(Op::Event {
            incident: inc.id,
            at: now,
            kind: "resolved",
            actor: Some(actor.to_owned()),
            detail: detail.clone(),
        });
        self.ops.push(Op::Update(Box::new(inc.clone())));
        if inc.notified_at.is_some() {
            self.ops.push(Op::Supersede(inc.id));
            self.notify(&inc, NotifyKind::Resolved, Some(&detail), now);
        }
    }

    fn notify(
        &mut self,
        inc: &Incident,
        kind: NotifyKind,
        detail: Option<&serde_json::Value>,
        now: DateTime<Utc>,
    ) {
        self.notify_n(inc, kind, 0, detail, now);
    }

    fn notify_n(
        &mut self,
        inc: &Incident,
        kind: NotifyKind,
        n: u32,
        detail: Option<&serde_json::Value>,
        now: DateTime<Utc>,
    ) {
        let mut payload = json!({
            "status": kind.as_str(),
            "incident": inc.id,
            "fingerprint": inc.fingerprint,
            "rule": inc.rule,
            "kind": inc.kind,
            "severity": inc.severity,
            "receiver": inc.receiver,
            "check": inc.check,
            "region": inc.region,
            "state": inc.state,
            "started_at": inc.started_at,
            "resolved_at": inc.resolved_at,
            "labels": inc.labels,
            "annotations": inc.annotations,
            "at": now,
        });
        if let (Some(d), Some(obj)) = (detail, payload.as_object_mut()) {
            obj.insert("detail".into(), d.clone());
        }
        if let Some(obj) = payload.as_object_mut()
            && let Some(mem) = self.mem.get(&inc.check)
            && let Some(def) = self.c.checks.get(&inc.check)
        {
            let v = mem
                .track
                .verdict(now, &self.c.policy(def, Quorum::Majority));
            obj.insert("target".into(), json!(def.target));
            if let Some(views) = self.views.get(&inc.check) {
                obj.insert("views".into(), json!(views));
            }
            obj.insert(
                "regions".into(),
                json!({ "down": v.down, "up": v.up, "stale": v.stale, "unknown": v.unknown }),
            );
        }
        self.ops.push(Op::Outbox {
            incident: inc.id,
            kind,
            n,
            receiver: inc.receiver.clone(),
            payload,
            at: now,
        });
    }

    // === writing ===

    /// Writes the pending ops in their own transaction.
    fn commit(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        if self.ops.is_empty() && self.dirty.is_empty() {
            return Ok(());
        }
        let result = self.store.clone().transaction(|tx| self.write(tx, now));
        self.finish(result, now)
    }

    /// Applies the ops inside `tx`; returns temp id → real id.
    fn write(
        &mut self,
        tx: &mut Txn<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let mut ids: HashMap<i64, i64> = HashMap::new();
        let real = |ids: &HashMap<i64, i64>, id: i64| ids.get(&id).copied().unwrap_or(id);
        for check in std::mem::take(&mut self.dirty) {
            self.lazy.remove(&check);
            if let Some(mem) = self.mem.get(&check) {
                tx.save_check_state(&check, mem, now)?;
            }
        }
        for op in std::mem::take(&mut self.ops) {
            match op {
                Op::Open(inc) => {
                    let id = tx.open_incident(&inc)?;
                    ids.insert(inc.id, id);
                }
                Op::Update(mut inc) => {
                    inc.id = real(&ids, inc.id);
                    tx.update_incident(&inc)?;
                }
                Op::Event {
                    incident,
                    at,
                    kind,
                    actor,
                    detail,
                } => tx.add_event(real(&ids, incident), at, kind, actor.as_deref(), &detail)?,
                Op::Outbox {
                    incident,
                    kind,
                    n,
                    receiver,
                    mut payload,
                    at,
                } => {
                    let id = real(&ids, incident);
                    if let Some(obj) = payload.as_object_mut() {
                        obj.insert("incident".into(), json!(id));
                    }
                    let key = if n > 0 {
                        format!("varde-{id}-{}-{n}", kind.as_str())
                    } else {
                        format!("varde-{id}-{}", kind.as_str())
                    };
                    tx.add_outbox(id, kind, &receiver, &key, &payload, at)?;
                }
                Op::Supersede(id) => {
                    tx.supersede_pending(
                        real(&ids, id),
                        &[NotifyKind::Firing, NotifyKind::Repeat, NotifyKind::Flapping],
                    )?;
                }
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// After a transaction: fixes temporary ids, or reloads on failure.
    fn finish(
        &mut self,
        result: Result<Vec<(i64, i64)>, StoreError>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.next_temp = -1;
        match result {
            Ok(ids) => {
                if !ids.is_empty() {
                    let map: HashMap<i64, i64> = ids.into_iter().collect();
                    for inc in self.open.values_mut() {
                        if let Some(&id) = map.get(&inc.id) {
                            inc.id = id;
                        }
                    }
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "store write failed; reloading state from the store");
                if let Err(e2) = self.reload(now) {
                    tracing::error!(error = %e2, "reloading state failed");
                }
                Err(e)
            }
        }
    }

    // === API actions ===

    /// Acknowledges an open incident.
    pub fn acknowledge(
        &mut self,
        id: i64,
        by: &str,
        comment: &str,
        now: DateTime<Utc>,
    ) -> Result<Incident, ActionError> {
        let fp = self.open_fp(id)?;
        let Some(mut inc) = self.open.get(&fp).cloned() else {
            return Err(ActionError::NotFound(id));
        };
        if inc.state == IncidentState::Acknowledged {
            return Err(ActionError::Conflict {
                id,
                state: "already acknowledged",
            });
        }
        inc.state = IncidentState::Acknowledged;
        inc.acknowledged_at = Some(now);
        inc.acknowledged_by = Some(by.to_owned());
        inc.updated_at = now;
        self.ops.push(Op::Event {
            incident: id,
            at: now,
            kind: "acknowledged",
            actor: Some(by.to_owned()),
            detail: json!({ "comment": comment }),
        });
        self.ops.push(Op::Update(Box::new(inc.clone())));
        self.open.insert(fp, inc.clone());
        self.commit(now)?;
        Ok(inc)
    }

    /// Resolves an open incident by hand; it will not reopen while its
    /// condition stays active.
    pub fn resolve_by_hand(
        &mut self,
        id: i64,
        by: &str,
        comment: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ActionError> {
        let fp = self.open_fp(id)?;
        let Some(inc) = self.open.get(&fp).cloned() else {
            return Err(ActionError::NotFound(id));
        };
        if inc.check.is_empty() {
            self.offline_latched.insert(fp.clone());
        } else {
            let mem = self.mem.entry(inc.check.clone()).or_default();
            mem.latched.insert(inc.rule.clone());
            self.dirty.insert(inc.check.clone());
        }
        let why = if comment.is_empty() {
            "resolved by hand".to_owned()
        } else {
            format!("resolved by hand: {comment}")
        };
        self.resolve(&fp, now, by, &why);
        self.commit(now)?;
        Ok(())
    }

    fn open_fp(&self, id: i64) -> Result<String, ActionError> {
        if let Some(i) = self.open.values().find(|i| i.id == id) {
            return Ok(i.fingerprint.clone());
        }
        match self.store.incident(id)? {
            Some(_) => Err(ActionError::Conflict {
                id,
                state: "resolved",
            }),
            None => Err(ActionError::NotFound(id)),
        }
    }

    /// Adds a silence; it applies from the next evaluation (at once for
    /// open incidents).
    pub fn add_silence(
        &mut self,
        matchers: BTreeMap<String, String>,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        author: &str,
        comment: &str,
        now: DateTime<Utc>,
    ) -> Result<SilenceRow, ActionError> {
        let ms = super::rules::parse_matchers(&matchers).map_err(ActionError::Invalid)?;
        let silence = Silence::new(
            ms,
            starts_at,
            ends_at,
            author.to_owned(),
            comment.to_owned(),
        )
        .map_err(ActionError::Invalid)?;
        if ends_at <= now {
            return Err(ActionError::Invalid("ends_at is in the past".into()));
        }
        if chrono::Datelike::year(&ends_at) > 9999 {
            return Err(ActionError::Invalid(
                "ends_at is after the year 9999".into(),
            ));
        }
        let mut row = SilenceRow {
            id: 0,
            matchers,
            starts_at,
            ends_at,
            author: author.to_owned(),
            comment: comment.to_owned(),
            created_at: now,
            expired_at: None,
        };
        row.id = self.store.transaction(|tx| tx.insert_silence(&row))?;
        self.silences.push((row.id, silence));
        self.recheck_open(now)?;
        Ok(row)
    }

    /// Ends a silence now. Held firing notifications of incidents it
    /// covered are queued.
    pub fn expire_silence(&mut self, id: i64, now: DateTime<Utc>) -> Result<(), ActionError> {
        if !self.store.transaction(|tx| tx.expire_silence(id, now))? {
            return Err(ActionError::NotFound(id));
        }
        self.silences.retain(|(i, _)| *i != id);
        self.recheck_open(now)?;
        Ok(())
    }

    fn recheck_open(&mut self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let fps: Vec<(String, String)> = self
            .open
            .values()
            .map(|i| (i.fingerprint.clone(), i.check.clone()))
            .collect();
        for (fp, check) in fps {
            let def = self.c.checks.get(&check).cloned();
            let labels = self
                .open
                .get(&fp)
                .map(|i| i.labels.clone())
                .unwrap_or_default();
            self.resuppress(&fp, &labels, def.as_deref(), now);
        }
        self.commit(now)
    }

    // === reads ===

    /// Every configured check's status, or one.
    pub fn check_status(&self, only: Option<&str>, now: DateTime<Utc>) -> Vec<CheckStatus> {
        let mut out = Vec::new();
        let mut open_by_check: HashMap<&str, Vec<i64>> = HashMap::new();
        for i in self.open.values() {
            open_by_check
                .entry(i.check.as_str())
                .or_default()
                .push(i.id);
        }
        for name in &self.c.order {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let def = &self.c.checks[name];
            let policy = self.c.policy(def, Quorum::Majority);
            let mem = self.mem.get(name);
            let mut regions = BTreeMap::new();
            let mut verdict = VerdictState::Unknown;
            if let Some(m) = mem {
                verdict = m.track.verdict(now, &policy).state;
                for (r, t) in m.track.regions() {
                    regions.insert(
                        r.to_owned(),
                        RegionStatus {
                            state: t.state(),
                            stale: t.is_stale(now, &policy),
                            last_result_at: t.last_key().map(|k| k.0),
                            fail_streak: t.fail_streak(),
                            success_streak: t.success_streak(),
                            last_reason: t.last_reason().map(|r| r.as_str().to_owned()),
                        },
                    );
                }
            }
            out.push(CheckStatus {
                check: name.clone(),
                target: def.target.clone(),
                verdict,
                flapping: mem.is_some_and(|m| m.flapping),
                regions,
                open_incidents: open_by_check
                    .get(name.as_str())
                    .cloned()
                    .unwrap_or_default(),
            });
        }
        out
    }

    /// Counts for `/metrics`.
    pub fn snapshot(&self, now: DateTime<Utc>) -> Snapshot {
        let mut s = Snapshot {
            region_last_seen: self.regions.clone(),
            ..Snapshot::default()
        };
        for st in ["unknown", "up", "degraded", "down"] {
            s.checks_by_verdict.insert(st, 0);
        }
        for name in &self.c.order {
            let def = &self.c.checks[name];
            let (v, flapping) = match self.mem.get(name) {
                Some(m) => (
                    m.track
                        .verdict(now, &self.c.policy(def, Quorum::Majority))
                        .state,
                    m.flapping,
                ),
                None => (VerdictState::Unknown, false),
            };
            *s.checks_by_verdict.entry(verdict_str(v)).or_default() += 1;
            s.flapping += u64::from(flapping);
        }
        s.open_by_state.insert("firing", 0);
        s.open_by_state.insert("acknowledged", 0);
        for i in self.open.values() {
            *s.open_by_state.entry(i.state.as_str()).or_default() += 1;
        }
        s
    }

    /// Live API silences (config silences are in the config).
    pub fn silences(&self) -> &[(i64, Silence)] {
        &self.silences
    }
}

pub fn verdict_str(v: VerdictState) -> &'static str {
    match v {
        VerdictState::Unknown => "unknown",
        VerdictState::Up => "up",
        VerdictState::Degraded => "degraded",
        VerdictState::Down => "down",
    }
}

fn silence_from_row(s: &SilenceRow) -> Result<Silence, String> {
    let ms = super::rules::parse_matchers(&s.matchers)?;
    Silence::new(
        ms,
        s.starts_at,
        s.ends_at,
        s.author.clone(),
        s.comment.clone(),
    )
}

fn human(d: Duration) -> String {
    let d = if d >= Duration::from_secs(60) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX))
    };
    humantime::format_duration(d).to_string()
}

/// Renders a rule's annotations for an incident.
fn render(
    rule: &Rule,
    def: Option<&CheckDef>,
    region: Option<&str>,
    f: &Facts,
) -> BTreeMap<String, String> {
    let value = |field: &str| -> Option<String> {
        match field {
            "rule" => Some(rule.name.clone()),
            "kind" => Some(rule.kind.as_str().to_owned()),
            "severity" => Some(rule.severity.as_str().to_owned()),
            "receiver" => Some(rule.receiver.clone()),
            "check" => def.map(|d| d.name.clone()),
            "target" => def.map(|d| d.target.clone()),
            "region" => region.map(str::to_owned).or_else(|| f.region.clone()),
            "regions" => f.verdict.as_ref().map(|v| v.voters.to_string()),
            "down_regions" => f.verdict.as_ref().map(|v| v.down.len().to_string()),
            "reason" => f.reason.clone(),
            "phase" => f.phase.clone(),
            "value" => f.value.clone(),
            "threshold" => f.threshold.clone(),
            other => other
                .strip_prefix("labels.")
                .and_then(|l| def.and_then(|d| d.labels.get(l).cloned())),
        }
    };
    rule.annotations
        .iter()
        .map(|(k, t)| (k.clone(), t.render(&value)))
        .collect()
}

/// What a notification shows of one region's latest result.
fn region_view(r: &CheckResult) -> RegionView {
    RegionView {
        success: r.success,
        reason: r.reason.map(|x| x.as_str().to_owned()),
        message: r.message.chars().take(500).collect(),
        phases: crate::check::Phase::ALL
            .iter()
            .map(|p| (p.as_str().to_owned(), r.phases.get(*p).as_secs_f64()))
            .filter(|(_, v)| *v > 0.0)
            .collect(),
        duration_seconds: r.duration.as_secs_f64(),
        started_at: r.started_at,
    }
}
