//! The delivery worker: outbox intents → deliveries → messages.
//!
//! One [`Dispatcher`] runs per coordinator. Each step, at instant `now`:
//!
//! 1. **Route** every intent the engine queued: its first matching
//!    [`Route`](super::route::Route) picks a policy; a `firing` intent goes
//!    to the policy's first level and starts the incident's escalation
//!    timer; `repeat` and `flapping` go to everyone already told; a
//!    `resolved` intent goes to everyone told (delivered or still pending:
//!    a pending firing delivery is superseded, so the contact gets the
//!    resolve instead of a stale page) and stops the timer. Each
//!    (intent, contact) becomes one row in `deliveries` with its own
//!    idempotency key, `<intent key>-<contact hash>`, in one transaction
//!    with the intent's routing.
//! 2. **Escalate**: a timer that is due while the incident is still
//!    firing and unacknowledged notifies the next level (`escalation`),
//!    then, after the last level, everyone told every `repeat`; an
//!    acknowledged incident's timer sends `acknowledged` to the chat,
//!    PagerDuty and webhook contacts told (not email) and stops.
//! 3. **Deliver** due rows: per contact, at most the channel's
//!    `max_in_flight` messages at once and never two for one incident (so
//!    a resolve cannot overtake its page); with `group_wait` > 0 every row
//!    due for a contact goes out as one digest (up to [`MAX_DIGEST`]
//!    items). A slow contact only delays itself: every send is its own
//!    task, bounded overall by [`MAX_SENDS`].
//!
//! **Outcomes.** Delivered rows are marked with the time, attempt count
//! and message key. A retryable failure (5xx, 429, timeout, connection
//! error) is tried again after an exponential backoff with jitter (1 s
//! doubling to 5 min, each wait drawn from [½, 1] of that; a 429 or 503
//! with `Retry-After` waits at least that long, capped at an hour), until
//! the channel's `expire_after` has passed since the row was queued; then
//! it is `expired`. A permanent failure (other 4xx, a rejected recipient) is
//! `failed` with the reason at once.
//!
//! **Restarts.** Every state change above is a SQLite transaction, so an
//! intent is never lost and a delivered row is never sent again. Before a
//! send, its rows are *leased*: their attempt count goes up and they are
//! not due again until the channel timeout (+5 s) has passed. A coordinator
//! killed between a receiver taking a message and the row being marked
//! therefore sends that message once more after it restarts, after the
//! lease runs out — at most one duplicate per message in flight at the
//! kill, carrying the same idempotency key (Idempotency-Key header,
//! Message-ID, PagerDuty dedup_key) so receivers can drop it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore, mpsc, watch};

use super::channel::{Channel, ChannelKind, ChannelSpec};
use super::route::{Contact, Override, Policy, Route, Router, Target};
use super::{Alert, Item, MessageKind, Outgoing, SendOutcome};
use crate::coordinator::store::{
    DeliveryRow, EscalationRow, NewDelivery, OutboxRow, Routing, Settle, SqliteStore, StoreError,
};
use crate::oncall::OnCall;

/// Messages being sent at once, over all contacts.
pub const MAX_SENDS: usize = 64;
/// How often escalation timers are checked for incidents acknowledged or
/// resolved when nobody said so (due timers are handled at once).
const STATE_SCAN: Duration = Duration::from_secs(30);
/// Intents routed per step (one transaction).
const ROUTE_PAGE: usize = 100;
/// Items in one digest message.
pub const MAX_DIGEST: usize = 50;
/// First retry wait; doubles per attempt.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry wait.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Longest wait a receiver's `Retry-After` can impose.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);
/// How long the loop sleeps at most when nothing is due.
const IDLE: Duration = Duration::from_secs(30);

/// The current time. Production uses the wall clock; tests map tokio's
/// (pausable) clock onto a fixed start.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// A clock that follows tokio's, from `start` (for tests under
/// `tokio::time::pause()`).
pub fn tokio_clock(start: DateTime<Utc>) -> Clock {
    let origin = tokio::time::Instant::now();
    Arc::new(move || {
        start + chrono::Duration::from_std(origin.elapsed()).unwrap_or(chrono::Duration::zero())
    })
}

/// A boxed send future.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = SendOutcome> + Send + 'a>>;

/// Where messages go. [`Channels`] in production; tests may record.
pub trait Transport: Send + Sync {
    fn send<'a>(&'a self, contact: &'a Contact, out: &'a Outgoing) -> SendFuture<'a>;
}

/// The configured channels, as a [`Transport`].
pub struct Channels {
    channels: HashMap<String, Channel>,
}

impl Channels {
    /// Builds every channel's client; the first failure is returned.
    pub fn new(specs: &[ChannelSpec]) -> Result<Channels, String> {
        let mut channels = HashMap::new();
        for s in specs {
            let c = Channel::new(s.clone()).map_err(|e| format!("channel {:?}: {e}", s.name))?;
            channels.insert(s.name.clone(), c);
        }
        Ok(Channels { channels })
    }
}

impl Transport for Channels {
    fn send<'a>(&'a self, contact: &'a Contact, out: &'a Outgoing) -> SendFuture<'a> {
        Box::pin(async move {
            match self.channels.get(&contact.channel) {
                Some(c) => c.send(out).await,
                None => SendOutcome::Failed(format!("no channel {:?}", contact.channel)),
            }
        })
    }
}

/// How the coordinator wakes the delivery worker.
#[derive(Debug, Default)]
pub struct Wake {
    notify: Notify,
    changed: AtomicBool,
}

impl Wake {
    /// New notifications may be queued (after an ingest or a tick).
    pub fn poke(&self) {
        self.notify.notify_one();
    }

    /// An incident was acknowledged or resolved by hand: look at the
    /// escalation timers now.
    pub fn incident_changed(&self) {
        self.changed.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

/// Makes signed links: (incident, "ack" | "resolve", the contact the
/// message goes to) → URL.
pub type LinkMaker = Arc<dyn Fn(i64, &str, &str) -> String + Send + Sync>;

/// What the dispatcher works from; replaced whole on a config reload.
pub struct NotifyConfig {
    pub channels: Vec<ChannelSpec>,
    pub routes: Vec<Route>,
    pub policies: Vec<Policy>,
    pub oncall: Option<OnCall>,
    pub transport: Arc<dyn Transport>,
    /// Signed acknowledge/resolve links in pages, when configured.
    pub links: Option<LinkMaker>,
}

impl NotifyConfig {
    fn spec(&self, channel: &str) -> Option<&ChannelSpec> {
        self.channels.iter().find(|c| c.name == channel)
    }
}

/// Delivery counters, registered in the coordinator's registry.
#[derive(Clone, Default)]
pub struct DeliveryMetrics {
    /// Messages by channel type and result (delivered, retry, failed,
    /// expired: a failed attempt after which the message is past its
    /// `expire_after`).
    pub deliveries: Family<ChannelResult, Counter>,
    /// Deliveries queued, by kind.
    pub queued: Family<KindLabel, Counter>,
    /// Intents that matched no route or reached no contact.
    pub unrouted: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelResult {
    pub channel: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

impl DeliveryMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "varde_coordinator_deliveries",
            "Notification messages sent, by channel type and result (delivered, retry, failed, expired)",
            self.deliveries.clone(),
        );
        r.register(
            "varde_coordinator_deliveries_queued",
            "Deliveries queued (one per notification and contact), by kind",
            self.queued.clone(),
        );
        r.register(
            "varde_coordinator_notifications_unrouted",
            "Notifications that matched no route or reached no contact",
            self.unrouted.clone(),
        );
    }
}

/// A send that finished.
struct Done {
    contact: String,
    incidents: Vec<i64>,
    ids: Vec<i64>,
    attempts: u32,
    channel_type: &'static str,
    message_key: String,
    /// When the last of its rows expires: a retry due after it is `expired`.
    expires_at: DateTime<Utc>,
    outcome: SendOutcome,
}

/// A message about to go out.
struct Outbound {
    spec: ChannelSpec,
    contact: Contact,
    contact_s: String,
    ids: Vec<i64>,
    incidents: Vec<i64>,
    attempts: u32,
    expires_at: DateTime<Utc>,
    out: Outgoing,
}

/// The delivery worker. See the module documentation.
pub struct Dispatcher {
    store: Arc<SqliteStore>,
    config: watch::Receiver<Arc<NotifyConfig>>,
    overrides: Vec<Override>,
    clock: Clock,
    wake: Arc<Wake>,
    metrics: DeliveryMetrics,
    /// Contact → messages in flight.
    in_flight: HashMap<String, usize>,
    /// (contact, incident) with a message in flight.
    busy: HashSet<(String, i64)>,
    /// Contact → when its current wave goes out (grouping).
    waves: HashMap<String, DateTime<Utc>>,
    /// Contact → when a message last went out.
    last_sent: HashMap<String, DateTime<Utc>>,
    sends: Arc<Semaphore>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    jitter: std::collections::hash_map::RandomState,
    last_state_scan: Option<tokio::time::Instant>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<SqliteStore>,
        config: watch::Receiver<Arc<NotifyConfig>>,
        clock: Clock,
        wake: Arc<Wake>,
        metrics: DeliveryMetrics,
    ) -> Dispatcher {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Dispatcher {
            store,
            config,
            overrides: Vec::new(),
            clock,
            wake,
            metrics,
            in_flight: HashMap::new(),
            busy: HashSet::new(),
            waves: HashMap::new(),
            last_sent: HashMap::new(),
            sends: Arc::new(Semaphore::new(MAX_SENDS)),
            done_tx,
            done_rx,
            jitter: Default::default(),
            last_state_scan: None,
        }
    }

    /// Runs until `shutdown` completes. Store errors are logged and the
    /// step is tried again a second later.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut config_open = true;
        loop {
            let now = (self.clock)();
            let next = match self.step(now) {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(error = %e, "delivery step failed; retrying in 1s");
                    Some(now + chrono::Duration::seconds(1))
                }
            };
            let now = (self.clock)();
            let sleep = next
                .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(IDLE)
                .min(IDLE);
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.wake.notify.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                r = self.config.changed(), if config_open => {
                    // The sender is gone (shutting down): stop watching.
                    config_open = r.is_ok();
                }
                Some(done) = self.done_rx.recv() => {
                    let mut batch = vec![done];
                    while let Ok(done) = self.done_rx.try_recv() {
                        batch.push(done);
                    }
                    self.finish(batch);
                }
            }
        }
        // Let sends in flight finish briefly; unmarked ones are retried
        // after their lease by the next start.
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        while self.in_flight.values().any(|&n| n > 0) {
            tokio::select! {
                _ = &mut deadline => break,
                Some(done) = self.done_rx.recv() => self.finish(vec![done]),
            }
        }
    }

    /// One step; returns when something is due next. The store calls
    /// block (short SQLite transactions): the coordinator runs the
    /// dispatcher on its own thread and runtime.
    fn step(&mut self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.overrides = self.store.overrides(now)?;
        let cfg = self.config.borrow().clone();
        let more = self.route_new(&cfg, now)?;
        // Incidents acknowledged or resolved by hand: looked for when told
        // ([`Wake::incident_changed`]) and every STATE_SCAN as a safety net
        // (the scan reads every timer); due timers always.
        let scan = self.wake.changed.swap(false, Ordering::AcqRel)
            || self
                .last_state_scan
                .is_none_or(|t| t.elapsed() >= STATE_SCAN);
        if scan {
            self.last_state_scan = Some(tokio::time::Instant::now());
        }
        self.escalate(&cfg, now, scan)?;
        self.deliver(&cfg, now)?;
        if more {
            return Ok(Some(now));
        }
        let mut next = self.store.next_delivery_at(now)?;
        if let Some(e) = self.store.next_escalation_at()? {
            next = Some(next.map_or(e, |n| n.min(e)));
        }
        Ok(next)
    }

    fn router<'a>(&'a self, cfg: &'a NotifyConfig) -> Router<'a> {
        Router {
            routes: &cfg.routes,
            policies: &cfg.policies,
            oncall: cfg.oncall.as_ref(),
            overrides: &self.overrides,
        }
    }

    // === 1. routing ===

    /// Routes up to [`ROUTE_PAGE`] intents, in one transaction (two when
    /// an incident has two intents in the page: the second must see the
    /// first's deliveries). Returns whether more are waiting.
    fn route_new(&mut self, cfg: &NotifyConfig, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let intents = self.store.unrouted(ROUTE_PAGE)?;
        let mut batch: Vec<Routing> = Vec::new();
        let mut in_batch = HashSet::new();
        for intent in &intents {
            if !in_batch.insert(intent.incident_id) {
                self.store.route_intents(&batch, now)?;
                for r in &batch {
                    self.count_queued(&r.deliveries);
                }
                batch.clear();
                in_batch.clear();
                in_batch.insert(intent.incident_id);
            }
            batch.push(self.route_one(cfg, intent, now)?);
        }
        if !batch.is_empty() {
            self.store.route_intents(&batch, now)?;
        }
        for r in &batch {
            self.count_queued(&r.deliveries);
        }
        Ok(intents.len() == ROUTE_PAGE)
    }

    fn route_one(
        &mut self,
        cfg: &NotifyConfig,
        intent: &OutboxRow,
        now: DateTime<Utc>,
    ) -> Result<Routing, StoreError> {
        let labels = route_labels(&intent.payload);
        let kind = MessageKind::parse(&intent.kind).unwrap_or(MessageKind::Firing);
        let router = self.router(cfg);
        let policy = router.policy_for(&labels).cloned();
        let mut routing = Routing {
            outbox_id: intent.id,
            incident_id: intent.incident_id,
            deliveries: Vec::new(),
            escalation: None,
            resolve: kind == MessageKind::Resolved,
            settle: None,
        };
        let told = if kind == MessageKind::Firing {
            Vec::new()
        } else {
            self.store.notified_contacts(intent.incident_id)?
        };
        let mut escalation = None;
        let targets: Vec<Target> = if !told.is_empty() {
            told.iter()
                .filter_map(|c| Contact::parse(c).ok())
                .map(|contact| Target {
                    contact,
                    not_before: None,
                    team: None,
                })
                .collect()
        } else if kind == MessageKind::Resolved {
            Vec::new()
        } else {
            match &policy {
                None => Vec::new(),
                Some(p) => {
                    if kind == MessageKind::Firing {
                        let next_at = if p.levels.len() > 1 {
                            Some(now + chrono_dur(p.ack_timeout))
                        } else {
                            p.repeat.map(|r| now + chrono_dur(r))
                        };
                        escalation = Some(EscalationRow {
                            incident_id: intent.incident_id,
                            policy: p.name.clone(),
                            level: 0,
                            repeats: 0,
                            next_at,
                            payload: intent.payload.clone(),
                            labels: labels.clone(),
                            incident_state: "firing".into(),
                            acknowledged_by: None,
                        });
                    }
                    p.levels
                        .first()
                        .map(|l| router.targets(l, &labels, now))
                        .unwrap_or_default()
                }
            }
        };
        let deliveries: Vec<NewDelivery> = targets
            .iter()
            .filter_map(|t| {
                self.new_delivery(
                    cfg,
                    kind.as_str(),
                    0,
                    &intent.idempotency_key,
                    t,
                    intent.payload.clone(),
                    now,
                )
            })
            .collect();
        if deliveries.is_empty() {
            let why = if kind == MessageKind::Resolved {
                (
                    "superseded",
                    "no contact was told this incident was firing".to_owned(),
                )
            } else if policy.is_none() {
                (
                    "failed",
                    format!("no route matches ({})", describe(&labels)),
                )
            } else {
                ("failed", "the route's policy reached no contact".to_owned())
            };
            if why.0 == "failed" {
                self.metrics.unrouted.inc();
                tracing::warn!(incident = intent.incident_id, kind = %intent.kind, reason = %why.1, "notification not delivered");
            }
            routing.settle = Some(why);
        }
        routing.escalation = escalation.filter(|_| !deliveries.is_empty());
        routing.deliveries = deliveries;
        Ok(routing)
    }

    /// A delivery for target `t`, or `None` when its channel is gone.
    #[allow(clippy::too_many_arguments)]
    fn new_delivery(
        &mut self,
        cfg: &NotifyConfig,
        kind: &'static str,
        level: u32,
        base_key: &str,
        t: &Target,
        payload: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Option<NewDelivery> {
        let spec = cfg.spec(&t.contact.channel)?;
        let contact = t.contact.to_string();
        let start = t.not_before.map_or(now, |nb| nb.max(now));
        let due = self.wave_time(spec, &contact, start);
        Some(NewDelivery {
            kind,
            level,
            idempotency_key: format!("{base_key}-{}", contact_hash(&contact)),
            contact,
            payload,
            next_attempt_at: due,
            expires_at: due + chrono_dur(spec.expire_after),
        })
    }

    /// When a delivery queued at `start` for `contact` goes out: at once
    /// without grouping; else with the contact's wave (`group_wait` after
    /// the wave's first, and at least `group_interval` after the last
    /// message).
    fn wave_time(
        &mut self,
        spec: &ChannelSpec,
        contact: &str,
        start: DateTime<Utc>,
    ) -> DateTime<Utc> {
        if spec.group_wait.is_zero() && spec.group_interval.is_zero() {
            return start;
        }
        if let Some(&w) = self.waves.get(contact)
            && w >= start
        {
            return w;
        }
        let mut due = start + chrono_dur(spec.group_wait);
        if let Some(&last) = self.last_sent.get(contact) {
            due = due.max(last + chrono_dur(spec.group_interval));
        }
        self.waves.insert(contact.to_owned(), due);
        due
    }

    // === 2. escalation ===

    fn escalate(
        &mut self,
        cfg: &NotifyConfig,
        now: DateTime<Utc>,
        scan: bool,
    ) -> Result<(), StoreError> {
        for mut e in self.store.escalations_due(now, scan)? {
            match e.incident_state.as_str() {
                "firing" => {}
                "acknowledged" => {
                    let mut payload = e.payload.clone();
                    if let Some(o) = payload.as_object_mut() {
                        o.insert("status".into(), json!("acknowledged"));
                        o.insert("acknowledged_by".into(), json!(e.acknowledged_by));
                        o.insert("at".into(), json!(now));
                    }
                    let base = format!("varde-{}-acknowledged", e.incident_id);
                    let told = self.store.notified_contacts(e.incident_id)?;
                    let deliveries: Vec<NewDelivery> = told
                        .iter()
                        .filter_map(|c| Contact::parse(c).ok())
                        .filter(|c| {
                            cfg.spec(&c.channel)
                                .is_some_and(|s| !matches!(s.kind, ChannelKind::Email(_)))
                        })
                        .filter_map(|contact| {
                            let t = Target {
                                contact,
                                not_before: None,
                                team: None,
                            };
                            self.new_delivery(
                                cfg,
                                "acknowledged",
                                e.level,
                                &base,
                                &t,
                                payload.clone(),
                                now,
                            )
                        })
                        .collect();
                    self.store.escalate(&e, false, &deliveries, now)?;
                    self.count_queued(&deliveries);
                    continue;
                }
                _ => {
                    self.store.escalate(&e, false, &[], now)?;
                    continue;
                }
            }
            let Some(policy) = cfg.policies.iter().find(|p| p.name == e.policy).cloned() else {
                self.store.escalate(&e, false, &[], now)?;
                continue;
            };
            let Some(due) = e.next_at else { continue };
            let mut payload = e.payload.clone();
            if let Some(o) = payload.as_object_mut() {
                o.insert("at".into(), json!(now));
            }
            let next_level = e.level as usize + 1;
            let deliveries: Vec<NewDelivery> = if next_level < policy.levels.len() {
                e.level = next_level as u32;
                e.next_at = if next_level + 1 < policy.levels.len() {
                    Some(due + chrono_dur(policy.ack_timeout))
                } else {
                    policy.repeat.map(|r| due + chrono_dur(r))
                };
                if let Some(o) = payload.as_object_mut() {
                    o.insert("status".into(), json!("escalation"));
                    o.insert("level".into(), json!(next_level));
                }
                let base = format!("varde-{}-escalation-{next_level}", e.incident_id);
                let targets = self
                    .router(cfg)
                    .targets(&policy.levels[next_level], &e.labels, now);
                targets
                    .iter()
                    .filter_map(|t| {
                        self.new_delivery(
                            cfg,
                            "escalation",
                            e.level,
                            &base,
                            t,
                            payload.clone(),
                            now,
                        )
                    })
                    .collect()
            } else if let Some(every) = policy.repeat {
                e.repeats += 1;
                e.next_at = Some(due + chrono_dur(every));
                if let Some(o) = payload.as_object_mut() {
                    o.insert("status".into(), json!("repeat"));
                }
                let base = format!("varde-{}-escalation-repeat-{}", e.incident_id, e.repeats);
                let told = self.store.notified_contacts(e.incident_id)?;
                told.iter()
                    .filter_map(|c| Contact::parse(c).ok())
                    .filter_map(|contact| {
                        let t = Target {
                            contact,
                            not_before: None,
                            team: None,
                        };
                        self.new_delivery(cfg, "repeat", e.level, &base, &t, payload.clone(), now)
                    })
                    .collect()
            } else {
                e.next_at = None;
                Vec::new()
            };
            self.store.escalate(&e, true, &deliveries, now)?;
            self.count_queued(&deliveries);
        }
        Ok(())
    }

    fn count_queued(&self, deliveries: &[NewDelivery]) {
        for d in deliveries {
            self.metrics
                .queued
                .get_or_create(&KindLabel {
                    kind: d.kind.to_owned(),
                })
                .inc();
        }
    }

    // === 3. delivery ===

    fn deliver(&mut self, cfg: &NotifyConfig, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut sends: Vec<Outbound> = Vec::new();
        let mut settles: Vec<(Vec<i64>, Settle, &'static str)> = Vec::new();
        // Contact by contact, so that one contact's backlog never hides
        // another's due rows.
        for contact_s in self.store.due_contacts(now)? {
            let Ok(contact) = Contact::parse(&contact_s) else {
                let ids = self.due_ids(&contact_s, now)?;
                let error = format!("invalid contact {contact_s:?}");
                settles.push((ids, Settle::Failed { error }, "invalid"));
                continue;
            };
            let Some(spec) = cfg.spec(&contact.channel).cloned() else {
                let ids = self.due_ids(&contact_s, now)?;
                let error = format!("channel {:?} is no longer configured", contact.channel);
                settles.push((ids, Settle::Failed { error }, "unknown"));
                continue;
            };
            let in_flight = self.in_flight.get(&contact_s).copied().unwrap_or(0);
            if in_flight >= spec.max_in_flight {
                continue;
            }
            let digest = spec.kind.groups() && !spec.group_wait.is_zero();
            let take = if digest { MAX_DIGEST } else { 1 };
            let free = spec.max_in_flight - in_flight;
            // Enough to fill the free slots past incidents already in flight.
            let busy = self.busy.iter().filter(|(c, _)| *c == contact_s).count();
            let rows = self.store.due_for(&contact_s, now, free * take + busy)?;
            // One row per incident at a time, in queue order.
            let mut seen = HashSet::new();
            let ready: Vec<DeliveryRow> = rows
                .into_iter()
                .filter(|r| {
                    !self.busy.contains(&(contact_s.clone(), r.incident_id))
                        && seen.insert(r.incident_id)
                })
                .collect();
            let mut ready = ready.into_iter().peekable();
            let mut started = 0;
            while ready.peek().is_some() && started < free {
                let rows: Vec<DeliveryRow> = ready.by_ref().take(take).collect();
                let mut items = Vec::new();
                let mut ids = Vec::new();
                let mut bad = Vec::new();
                for r in &rows {
                    match item_of(cfg, r) {
                        Some(item) => {
                            items.push(item);
                            ids.push(r.id);
                        }
                        None => bad.push(r.id),
                    }
                }
                if !bad.is_empty() {
                    let error = "unreadable notification payload".to_owned();
                    settles.push((bad, Settle::Failed { error }, spec.kind.type_name()));
                }
                if items.is_empty() {
                    continue;
                }
                started += 1;
                let key = if items.len() == 1 {
                    items[0].key.clone()
                } else {
                    format!("varde-digest-{}-{}", ids[0], items.len())
                };
                sends.push(Outbound {
                    spec: spec.clone(),
                    contact: contact.clone(),
                    contact_s: contact_s.clone(),
                    attempts: rows.iter().map(|r| r.attempts).max().unwrap_or(0) + 1,
                    expires_at: rows.iter().map(|r| r.expires_at).max().unwrap_or(now),
                    incidents: rows.iter().map(|r| r.incident_id).collect(),
                    ids,
                    out: Outgoing {
                        address: contact.address.clone(),
                        key,
                        items,
                    },
                });
            }
            self.waves.remove(&contact_s);
        }
        if !settles.is_empty() {
            let all: Vec<(&[i64], &Settle)> = settles
                .iter()
                .map(|(ids, s, _)| (ids.as_slice(), s))
                .collect();
            self.store.settle_many(&all, now)?;
            for (ids, _, channel) in &settles {
                self.bump(channel, "failed", ids.len());
            }
        }
        if sends.is_empty() {
            return Ok(());
        }
        // One transaction leases every row about to go out.
        let leases: Vec<(i64, DateTime<Utc>)> = sends
            .iter()
            .flat_map(|s| {
                let until = now + chrono_dur(s.spec.timeout + Duration::from_secs(5));
                s.ids.iter().map(move |&id| (id, until))
            })
            .collect();
        self.store.lease_deliveries(&leases)?;
        for s in sends {
            self.start_send(cfg, s);
        }
        Ok(())
    }

    fn due_ids(&self, contact: &str, now: DateTime<Utc>) -> Result<Vec<i64>, StoreError> {
        Ok(self
            .store
            .due_for(contact, now, 1000)?
            .iter()
            .map(|r| r.id)
            .collect())
    }

    fn start_send(&mut self, cfg: &NotifyConfig, s: Outbound) {
        *self.in_flight.entry(s.contact_s.clone()).or_default() += 1;
        for &i in &s.incidents {
            self.busy.insert((s.contact_s.clone(), i));
        }
        let transport = cfg.transport.clone();
        let sends = self.sends.clone();
        let done = self.done_tx.clone();
        let channel_type = s.spec.kind.type_name();
        let limit = s.spec.timeout * 2 + Duration::from_secs(1);
        tokio::spawn(async move {
            let outcome = match sends.acquire().await {
                Ok(_permit) => {
                    match tokio::time::timeout(limit, transport.send(&s.contact, &s.out)).await {
                        Ok(o) => o,
                        Err(_) => SendOutcome::Retry(format!(
                            "no answer within {}",
                            humantime::format_duration(limit)
                        )),
                    }
                }
                Err(_) => SendOutcome::Retry("shutting down".into()),
            };
            let _ = done.send(Done {
                contact: s.contact_s,
                incidents: s.incidents,
                ids: s.ids,
                attempts: s.attempts,
                channel_type,
                message_key: s.out.key,
                expires_at: s.expires_at,
                outcome,
            });
        });
    }

    /// Records finished sends, all in one transaction.
    fn finish(&mut self, batch: Vec<Done>) {
        let now = (self.clock)();
        let mut settles = Vec::with_capacity(batch.len());
        for done in &batch {
            if let Some(n) = self.in_flight.get_mut(&done.contact) {
                *n = n.saturating_sub(1);
            }
            for i in &done.incidents {
                self.busy.remove(&(done.contact.clone(), *i));
            }
            let (settle, result) = match &done.outcome {
                SendOutcome::Delivered => {
                    self.last_sent.insert(done.contact.clone(), now);
                    let message_key = done.message_key.clone();
                    (Settle::Delivered { message_key }, "delivered")
                }
                SendOutcome::Retry(e) | SendOutcome::RetryAfter(e, _) => {
                    let mut wait = self.backoff(done.ids[0], done.attempts);
                    if let SendOutcome::RetryAfter(_, after) = &done.outcome {
                        // The receiver's own wish, if longer; a hostile or
                        // confused one cannot park a row beyond an hour.
                        wait = wait.max((*after).min(RETRY_AFTER_MAX));
                    }
                    let next_attempt_at = now + chrono_dur(wait);
                    // The store expires a row whose next attempt would come
                    // after its expiry; count the message so once all have.
                    let result = if next_attempt_at > done.expires_at {
                        tracing::warn!(contact = %done.contact, attempts = done.attempts, error = %e, "delivery failed; expired");
                        "expired"
                    } else {
                        tracing::warn!(contact = %done.contact, attempts = done.attempts, error = %e, retry_in_ms = wait.as_millis() as u64, "delivery failed; will retry");
                        "retry"
                    };
                    let settle = Settle::Retry {
                        error: e.clone(),
                        next_attempt_at,
                    };
                    (settle, result)
                }
                SendOutcome::Failed(e) => {
                    tracing::warn!(contact = %done.contact, error = %e, "delivery failed permanently");
                    (Settle::Failed { error: e.clone() }, "failed")
                }
            };
            self.bump(done.channel_type, result, 1);
            settles.push(settle);
        }
        let all: Vec<(&[i64], &Settle)> = batch
            .iter()
            .zip(&settles)
            .map(|(d, s)| (d.ids.as_slice(), s))
            .collect();
        if let Err(e) = self.store.settle_many(&all, now) {
            tracing::error!(error = %e, "recording delivery outcomes failed; they will be sent again after their lease");
        }
    }

    fn bump(&self, channel: &str, result: &str, n: usize) {
        self.metrics
            .deliveries
            .get_or_create(&ChannelResult {
                channel: channel.to_owned(),
                result: result.to_owned(),
            })
            .inc_by(n as u64);
    }

    /// The wait before attempt `attempts + 1`: 1 s doubling to 5 min, drawn
    /// from [½, 1] of that.
    fn backoff(&self, id: i64, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(20);
        let full = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX);
        let mut h = self.jitter.build_hasher();
        h.write_i64(id);
        h.write_u32(attempts);
        let frac = (h.finish() % 1000) as f64 / 1000.0;
        full.mul_f64(0.5 + 0.5 * frac)
    }
}

/// The labels routes match: the check's labels plus `severity`, `rule`,
/// `rule_kind`, `receiver` and `check` of the notification.
pub fn route_labels(payload: &serde_json::Value) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = payload
        .get("labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    for (k, field) in [
        ("severity", "severity"),
        ("rule", "rule"),
        ("rule_kind", "kind"),
        ("receiver", "receiver"),
        ("check", "check"),
    ] {
        if let Some(v) = payload.get(field).and_then(|v| v.as_str()) {
            labels.insert(k.to_owned(), v.to_owned());
        }
    }
    if let Some(r) = payload.get("region").and_then(|v| v.as_str()) {
        labels
            .entry("region".to_owned())
            .or_insert_with(|| r.to_owned());
    }
    labels
}

fn describe(labels: &BTreeMap<String, String>) -> String {
    ["severity", "rule", "check"]
        .iter()
        .filter_map(|k| labels.get(*k).map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The message item of a stored delivery.
fn item_of(cfg: &NotifyConfig, r: &DeliveryRow) -> Option<Item> {
    let alert = Alert::from_payload(&r.payload).ok()?;
    let kind = MessageKind::parse(&r.kind)?;
    let page = matches!(
        kind,
        MessageKind::Firing | MessageKind::Repeat | MessageKind::Escalation
    );
    let (ack_url, resolve_url) = match (&cfg.links, page) {
        (Some(make), true) => (
            Some(make(alert.incident, "ack", &r.contact)),
            Some(make(alert.incident, "resolve", &r.contact)),
        ),
        _ => (None, None),
    };
    let acknowledged_by = r
        .payload
        .get("acknowledged_by")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    Some(Item {
        kind,
        key: r.idempotency_key.clone(),
        alert,
        ack_url,
        resolve_url,
        acknowledged_by,
        level: r.level,
    })
}

/// Eight hex digits naming a contact inside idempotency keys (keys stay
/// `[A-Za-z0-9-]`, valid in a Message-ID).
fn contact_hash(contact: &str) -> String {
    let d = Sha256::digest(contact.as_bytes());
    d.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
