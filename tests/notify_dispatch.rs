//! The delivery worker on a real SQLite store and the real incident
//! engine, under `tokio::time::pause()`: routing by severity to the team
//! on duty, escalation and repeat at exact instants, acknowledge and
//! resolve, overrides, tickets held until the owning team's shift,
//! grouping into digests, retry with backoff, permanent failures, expiry,
//! superseding a stale page, and a restart mid-send.
//!
//! Messages go to a recording transport that notes the (paused) clock at
//! every send; the channels themselves are tested against real servers in
//! notify_email.rs and notify_webhook.rs.

mod results;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use results::result;
use tokio::sync::watch;
use varde::coordinator::config::{CoordinatorConfig, Settings};
use varde::coordinator::engine::Engine;
use varde::coordinator::rules;
use varde::coordinator::store::{DeliveryRow, SqliteStore};
use varde::notify::dispatch::{
    ChannelResult, DeliveryMetrics, Dispatcher, NotifyConfig, SendFuture, Transport, Wake,
    tokio_clock,
};
use varde::notify::route::{Contact, Override};
use varde::notify::{MessageKind, Outgoing, SendOutcome};
use varde::probe::config as probe_config;
use varde::wire::{ResultBatch, ResultRecord};

const PROBES: &str = r#"
[[check]]
name = "api"
target = "http://127.0.0.1:9/"
interval = "30s"
labels = { team = "web" }

[[check]]
name = "db"
target = "http://127.0.0.1:9/"
interval = "30s"
labels = { team = "dbteam" }

[[check]]
name = "cache"
target = "http://127.0.0.1:9/"
interval = "30s"
labels = { team = "web" }
"#;

/// Winter (no clock change near): emea 08–16 Oslo = 07–15Z, amer 10–18
/// New York = 15–23Z, weekdays; platform is the fallback.
const RULES: &str = r#"
[[rule]]
name = "down"
kind = "down"
match = { check = "!db" }
severity = "page"

[[rule]]
name = "db-down"
kind = "down"
match = { check = "db" }
severity = "ticket"

[[channel]]
name = "email"
type = "email"
smtp_host = "localhost"
from = "varde@example.com"

[[channel]]
name = "pager"
type = "webhook"
url = "http://127.0.0.1:9/hook"

[[channel]]
name = "digest"
type = "email"
smtp_host = "localhost"
from = "varde@example.com"
group_wait = "30s"
group_interval = "2m"

[[channel]]
name = "flaky"
type = "webhook"
url = "http://127.0.0.1:9/hook"
expire_after = "2m"

[oncall]
order = ["emea", "amer"]
fallback = "platform"

[[team]]
name = "emea"
timezone = "Europe/Oslo"
contacts = ["email:emea@example.com", "pager"]
[[team.shift]]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "08:00"
end = "16:00"

[[team]]
name = "amer"
timezone = "America/New_York"
contacts = ["email:amer@example.com"]
[[team.shift]]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "10:00"
end = "18:00"

[[team]]
name = "dbteam"
timezone = "Europe/Oslo"
contacts = ["email:db@example.com", "pager"]
[[team.shift]]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "09:00"
end = "17:00"

[[team]]
name = "platform"
timezone = "UTC"
contacts = ["email:platform@example.com"]

[[route]]
match = { severity = "page" }
policy = "page"

[[route]]
match = { severity = "ticket" }
policy = "ticket"

[[policy]]
name = "page"
ack_timeout = "10m"
repeat = "30m"
[[policy.level]]
teams = ["on_duty"]
[[policy.level]]
teams = ["next_on_duty"]
[[policy.level]]
contacts = ["email:boss@example.com"]

[[policy]]
name = "ticket"
[[policy.level]]
teams = ["label:team"]
channels = ["email"]
during_shift = true
"#;

/// One message as the transport saw it.
#[derive(Clone, Debug)]
struct Sent {
    at: DateTime<Utc>,
    contact: String,
    key: String,
    kinds: Vec<MessageKind>,
    incidents: Vec<i64>,
}

/// Records every message; answers from a script per contact (default
/// Delivered).
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<Sent>>,
    script: Mutex<std::collections::HashMap<String, VecDeque<SendOutcome>>>,
    /// Contacts whose sends never finish (a hung receiver).
    hang: Mutex<Vec<String>>,
    clock: Mutex<Option<varde::notify::dispatch::Clock>>,
}

impl Transport for Recorder {
    fn send<'a>(&'a self, contact: &'a Contact, out: &'a Outgoing) -> SendFuture<'a> {
        Box::pin(async move {
            let now = (self.clock.lock().unwrap().as_ref().unwrap())();
            self.sent.lock().unwrap().push(Sent {
                at: now,
                contact: contact.to_string(),
                key: out.key.clone(),
                kinds: out.items.iter().map(|i| i.kind).collect(),
                incidents: out.items.iter().map(|i| i.alert.incident).collect(),
            });
            if self.hang.lock().unwrap().contains(&contact.to_string()) {
                std::future::pending::<()>().await;
            }
            self.script
                .lock()
                .unwrap()
                .get_mut(&contact.to_string())
                .and_then(|q| q.pop_front())
                .unwrap_or(SendOutcome::Delivered)
        })
    }
}

struct H {
    engine: Engine,
    store: Arc<SqliteStore>,
    rec: Arc<Recorder>,
    wake: Arc<Wake>,
    clock: varde::notify::dispatch::Clock,
    cfg_tx: watch::Sender<Arc<NotifyConfig>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    seq: u64,
    dir: tempfile::TempDir,
    /// The dispatcher's counters (shared across a restart).
    metrics: DeliveryMetrics,
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn notify_config(rules: &rules::Rules, rec: &Arc<Recorder>) -> Arc<NotifyConfig> {
    Arc::new(NotifyConfig {
        channels: rules.channels.clone(),
        routes: rules.routes.clone(),
        policies: rules.policies.clone(),
        oncall: rules.oncall.clone(),
        transport: rec.clone(),
        links: None,
    })
}

impl H {
    /// Everything starts at `start` (tokio's clock is paused).
    fn new(start: DateTime<Utc>) -> H {
        let checks = probe_config::parse_files(&[(PathBuf::from("probes/p.toml"), PROBES.into())])
            .unwrap_or_else(|e| panic!("{e}"))
            .checks;
        let rules = rules::parse_files(&[(PathBuf::from("alert-rules/r.toml"), RULES.into())])
            .unwrap_or_else(|e| panic!("{e}"));
        let cfg = Arc::new(CoordinatorConfig {
            checks,
            rules: rules.clone(),
            auth: Default::default(),
            settings: Settings::default(),
            links: Default::default(),
        });
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let engine = Engine::new(store.clone(), cfg, start).unwrap();
        let rec = Arc::new(Recorder::default());
        let clock = tokio_clock(start);
        *rec.clock.lock().unwrap() = Some(clock.clone());
        let (cfg_tx, _) = watch::channel(notify_config(&rules, &rec));
        let mut h = H {
            engine,
            store,
            rec,
            wake: Arc::new(Wake::default()),
            clock,
            cfg_tx,
            stop: None,
            task: None,
            seq: 0,
            dir,
            metrics: DeliveryMetrics::default(),
        };
        h.start_dispatcher();
        h
    }

    fn start_dispatcher(&mut self) {
        let d = Dispatcher::new(
            self.store.clone(),
            self.cfg_tx.subscribe(),
            self.clock.clone(),
            self.wake.clone(),
            self.metrics.clone(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(d.run(async move {
            let _ = stopped.await;
        })));
    }

    /// Kills the dispatcher without letting it finish (its sends in flight
    /// are abandoned), reopens the store, and starts a new one.
    async fn crash_and_restart(&mut self) {
        self.task.take().unwrap().abort();
        let _ = self.task.take();
        self.stop = None;
        tokio::task::yield_now().await;
        self.store = Arc::new(SqliteStore::open(self.dir.path()).unwrap());
        self.start_dispatcher();
    }

    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Every region fails (or succeeds) `check` once, now.
    fn round(&mut self, check: &str, ok: bool) {
        let now = self.now();
        for region in ["eu", "us", "ap"] {
            self.seq += 1;
            let probe_id = format!("probe-{region}");
            let batch = ResultBatch {
                probe_id: probe_id.clone(),
                region: region.into(),
                version: "test".into(),
                results: vec![ResultRecord {
                    check: check.into(),
                    region: region.into(),
                    probe_id,
                    seq: self.seq,
                    result: result(ok, now),
                }],
            };
            self.engine.ingest(&batch, now).unwrap();
        }
        self.wake.poke();
    }

    /// Fails `check` in every region twice, 30 s apart: it fires at the
    /// second round. Returns the instant it fired.
    async fn fire(&mut self, check: &str) -> DateTime<Utc> {
        self.round(check, false);
        tokio::time::sleep(Duration::from_secs(30)).await;
        self.round(check, false);
        self.settle().await;
        self.now()
    }

    async fn recover(&mut self, check: &str) {
        self.round(check, true);
        tokio::time::sleep(Duration::from_secs(30)).await;
        self.round(check, true);
        self.settle().await;
    }

    /// Lets the dispatcher run everything due now (paused time does not
    /// move while tasks are runnable).
    async fn settle(&self) {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    fn sent(&self) -> Vec<Sent> {
        self.rec.sent.lock().unwrap().clone()
    }

    fn sent_to(&self, contact: &str) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.contact == contact)
            .collect()
    }

    /// The first delivery row for `contact`.
    fn delivery_to(&self, contact: &str) -> DeliveryRow {
        self.store
            .deliveries()
            .unwrap()
            .into_iter()
            .find(|r| r.contact == contact)
            .unwrap_or_else(|| panic!("no delivery to {contact}"))
    }

    fn incident_id(&self, check: &str) -> i64 {
        let mut all = self.store.open_incidents().unwrap();
        all.retain(|i| i.check == check);
        all.first().map(|i| i.id).expect("an open incident")
    }
}

fn mins(m: i64) -> chrono::Duration {
    chrono::Duration::minutes(m)
}

/// Monday 2026-03-02 10:00Z: emea (07–15Z) is on duty, amer comes next.
fn monday_morning() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap()
}

/// (time, contact, kinds), sorted by time then contact (messages due at
/// one instant go out in no particular order).
fn summary(sent: &[Sent]) -> Vec<(DateTime<Utc>, String, Vec<MessageKind>)> {
    let mut v: Vec<_> = sent
        .iter()
        .map(|s| (s.at, s.contact.clone(), s.kinds.clone()))
        .collect();
    v.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    v
}

#[tokio::test(start_paused = true)]
async fn a_page_escalates_repeats_and_stops_on_acknowledge_at_exact_times() {
    use MessageKind::*;
    let mut h = H::new(monday_morning());
    let f = h.fire("api").await;
    assert_eq!(f, monday_morning() + chrono::Duration::seconds(30));
    let id = h.incident_id("api");

    // Nobody acknowledges: next_on_duty at +10m, the boss at +20m, then
    // everyone told every 30m.
    tokio::time::sleep(Duration::from_secs(50 * 60 + 5)).await;
    h.settle().await;
    let emea = "email:emea@example.com".to_owned();
    let pager = "pager".to_owned();
    let amer = "email:amer@example.com".to_owned();
    let boss = "email:boss@example.com".to_owned();
    assert_eq!(
        summary(&h.sent()),
        vec![
            (f, emea.clone(), vec![Firing]),
            (f, pager.clone(), vec![Firing]),
            (f + mins(10), amer.clone(), vec![Escalation]),
            (f + mins(20), boss.clone(), vec![Escalation]),
            (f + mins(50), amer.clone(), vec![Repeat]),
            (f + mins(50), boss.clone(), vec![Repeat]),
            (f + mins(50), emea.clone(), vec![Repeat]),
            (f + mins(50), pager.clone(), vec![Repeat]),
        ]
    );

    // Acknowledged at +55m: the pager (not email) hears it; no repeat at +80m.
    h.engine
        .acknowledge(id, "alice", "looking", h.now())
        .unwrap();
    h.wake.incident_changed();
    h.settle().await;
    let acked = h.now();
    tokio::time::sleep(Duration::from_secs(60 * 60)).await;
    h.settle().await;
    let after: Vec<_> = summary(&h.sent()).into_iter().skip(8).collect();
    assert_eq!(after, vec![(acked, pager.clone(), vec![Acknowledged])]);

    // Resolved: everyone told hears it once.
    h.recover("api").await;
    let resolved = h.now();
    let after: Vec<_> = summary(&h.sent()).into_iter().skip(9).collect();
    assert_eq!(
        after,
        vec![
            (resolved, amer.clone(), vec![Resolved]),
            (resolved, boss.clone(), vec![Resolved]),
            (resolved, emea.clone(), vec![Resolved]),
            (resolved, pager.clone(), vec![Resolved]),
        ]
    );
    // Every delivery is recorded as delivered, once, with its attempt.
    let rows = h.store.deliveries().unwrap();
    assert_eq!(rows.len(), 13);
    assert!(
        rows.iter()
            .all(|r| r.state == "delivered" && r.attempts == 1),
        "{rows:#?}"
    );
    let keys: std::collections::HashSet<_> = rows.iter().map(|r| &r.idempotency_key).collect();
    assert_eq!(keys.len(), 13);
    // The engine's intents are settled too.
    assert!(
        h.store
            .outbox()
            .unwrap()
            .iter()
            .all(|o| o.state == "delivered")
    );
}

#[tokio::test(start_paused = true)]
async fn follow_the_sun_and_overrides_pick_the_contacts() {
    // 16:00Z on Monday: emea is off (until 15Z), amer is on.
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 16, 0, 0).unwrap();
    let mut h = H::new(start);
    // emea is replaced by a named person from 16:30Z to 18:00Z; amer by
    // emea over the same window.
    h.store
        .insert_override(&Override {
            id: 0,
            team: "amer".into(),
            by_team: Some("emea".into()),
            contacts: vec!["email:sub@example.com".into()],
            starts_at: utc("2026-03-02T16:30:00Z"),
            ends_at: utc("2026-03-02T18:00:00Z"),
            author: "bob".into(),
            comment: "dentist".into(),
            created_at: start,
            expired_at: None,
        })
        .unwrap();
    let f = h.fire("api").await;
    let first: Vec<String> = summary(&h.sent()).into_iter().map(|s| s.1).collect();
    assert_eq!(first, ["email:amer@example.com"], "amer is on duty at {f}");
    h.recover("api").await;

    tokio::time::sleep(Duration::from_secs(30 * 60)).await;
    let before = h.sent().len();
    h.fire("cache").await;
    let second: Vec<String> = summary(&h.sent()[before..])
        .into_iter()
        .map(|s| s.1)
        .collect();
    assert_eq!(
        second,
        ["email:emea@example.com", "email:sub@example.com", "pager"],
        "during the override amer's pages go to emea's contacts and the substitute"
    );
}

#[tokio::test(start_paused = true)]
async fn a_ticket_waits_for_the_owning_teams_shift() {
    // Saturday 2026-03-07 12:00Z: dbteam is off until Monday 09:00 Oslo
    // (08:00Z).
    let start = Utc.with_ymd_and_hms(2026, 3, 7, 12, 0, 0).unwrap();
    let mut h = H::new(start);
    h.fire("db").await;
    assert!(
        h.sent().is_empty(),
        "no ticket on a Saturday: {:?}",
        h.sent()
    );
    tokio::time::sleep(Duration::from_secs(2 * 24 * 3600)).await;
    h.settle().await;
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        sent[0].contact, "email:db@example.com",
        "email only, not the pager"
    );
    assert_eq!(sent[0].at, utc("2026-03-09T08:00:00Z"));
}

#[tokio::test(start_paused = true)]
async fn notifications_for_one_contact_are_grouped_into_digests() {
    let mut h = H::new(monday_morning());
    // Route pages to the digest channel only.
    let mut rules =
        rules::parse_files(&[(PathBuf::from("alert-rules/r.toml"), RULES.into())]).unwrap();
    rules.policies[0].levels[0].teams.clear();
    rules.policies[0].levels[0].contacts = vec![Contact::parse("digest:ops@example.com").unwrap()];
    h.cfg_tx.send(notify_config(&rules, &h.rec)).unwrap();

    h.round("api", false);
    h.round("cache", false);
    tokio::time::sleep(Duration::from_secs(30)).await;
    h.round("api", false);
    h.round("cache", false);
    h.settle().await;
    let fired = h.now();
    assert!(h.sent().is_empty(), "held for group_wait");
    tokio::time::sleep(Duration::from_secs(31)).await;
    h.settle().await;
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].at, fired + chrono::Duration::seconds(30));
    assert_eq!(sent[0].incidents.len(), 2);
    assert!(sent[0].key.starts_with("varde-digest-"), "{}", sent[0].key);

    // The resolves come as a second wave, group_interval after the first.
    h.recover("api").await;
    h.recover("cache").await;
    tokio::time::sleep(Duration::from_secs(5 * 60)).await;
    h.settle().await;
    let sent = h.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1].at, fired + chrono::Duration::seconds(30) + mins(2));
    assert_eq!(
        sent[1].kinds,
        vec![MessageKind::Resolved, MessageKind::Resolved]
    );
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_permanent_failures_stop_and_old_rows_expire() {
    let mut h = H::new(monday_morning());
    // The email contact fails twice (5xx-like), then takes it; the pager
    // refuses it for good (4xx-like).
    h.rec.script.lock().unwrap().insert(
        "email:emea@example.com".into(),
        VecDeque::from([
            SendOutcome::Retry("451 try later".into()),
            SendOutcome::Retry("451 try later".into()),
        ]),
    );
    h.rec.script.lock().unwrap().insert(
        "pager".into(),
        VecDeque::from([SendOutcome::Failed("HTTP 400: bad payload".into())]),
    );
    let f = h.fire("api").await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    h.settle().await;
    let email = h.sent_to("email:emea@example.com");
    assert_eq!(email.len(), 3, "{email:?}");
    assert!(
        email.windows(2).all(|w| w[0].key == w[1].key),
        "same key every attempt"
    );
    // Backoff: 1 s then 2 s, each drawn from [½, 1] of it.
    let gap1 = (email[1].at - email[0].at).num_milliseconds();
    let gap2 = (email[2].at - email[1].at).num_milliseconds();
    assert!((500..=1000).contains(&gap1), "first wait {gap1} ms");
    assert!((1000..=2000).contains(&gap2), "second wait {gap2} ms");
    assert_eq!(email[0].at, f);
    assert_eq!(
        h.sent_to("pager").len(),
        1,
        "a permanent failure is not retried"
    );

    let e = h.delivery_to("email:emea@example.com");
    assert_eq!((e.state.as_str(), e.attempts), ("delivered", 3));
    let p = h.delivery_to("pager");
    assert_eq!(p.state, "failed");
    assert_eq!(p.last_error.as_deref(), Some("HTTP 400: bad payload"));

    // A contact whose channel expires rows after 2m and never answers
    // well: retried, then expired, then left alone.
    let mut rules =
        rules::parse_files(&[(PathBuf::from("alert-rules/r.toml"), RULES.into())]).unwrap();
    rules.policies[0].levels[0].teams.clear();
    rules.policies[0].levels[0].contacts = vec![Contact::parse("flaky").unwrap()];
    h.cfg_tx.send(notify_config(&rules, &h.rec)).unwrap();
    h.rec.script.lock().unwrap().insert(
        "flaky".into(),
        (0..100)
            .map(|_| SendOutcome::Retry("HTTP 503".into()))
            .collect(),
    );
    h.fire("cache").await;
    tokio::time::sleep(Duration::from_secs(30 * 60)).await;
    h.settle().await;
    let flaky = h.sent_to("flaky");
    let row = h.delivery_to("flaky");
    assert_eq!(row.state, "expired");
    assert_eq!(row.attempts as usize, flaky.len());
    let counted = |result: &str| {
        h.metrics
            .deliveries
            .get_or_create(&ChannelResult {
                channel: "webhook".into(),
                result: result.into(),
            })
            .get()
    };
    assert_eq!(
        counted("expired"),
        1,
        "the last attempt is counted as expired"
    );
    assert_eq!(counted("retry") as usize, flaky.len() - 1);
    assert!(
        flaky.len() >= 5 && flaky.len() <= 9,
        "{} attempts in 2m",
        flaky.len()
    );
    assert!(flaky.last().unwrap().at <= row.expires_at);
}

#[tokio::test(start_paused = true)]
async fn a_receivers_retry_after_is_honoured_up_to_an_hour() {
    let mut h = H::new(monday_morning());
    // A ticket (one email contact, no escalation): rate limited for 90 s,
    // then for ten hours (capped at one), then "retry now" (the backoff
    // still applies), then taken.
    h.rec.script.lock().unwrap().insert(
        "email:db@example.com".into(),
        VecDeque::from([
            SendOutcome::RetryAfter("HTTP 429".into(), Duration::from_secs(90)),
            SendOutcome::RetryAfter("HTTP 429".into(), Duration::from_secs(10 * 3600)),
            SendOutcome::RetryAfter("HTTP 503".into(), Duration::ZERO),
        ]),
    );
    let f = h.fire("db").await;
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    h.settle().await;
    let sent = h.sent_to("email:db@example.com");
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert_eq!(sent[0].at, f);
    assert_eq!(sent[1].at, f + chrono::Duration::seconds(90));
    assert_eq!(sent[2].at, sent[1].at + chrono::Duration::hours(1));
    let gap = (sent[3].at - sent[2].at).num_milliseconds();
    assert!((2000..=4000).contains(&gap), "third backoff {gap} ms");
    let row = h.delivery_to("email:db@example.com");
    assert_eq!((row.state.as_str(), row.attempts), ("delivered", 4));
}

#[tokio::test(start_paused = true)]
async fn history_past_retention_is_forgotten_except_what_is_pending_or_newest() {
    let mut h = H::new(monday_morning());
    let count = |h: &H, sql: &str, id: i64| -> i64 {
        let c = rusqlite::Connection::open(h.store.path()).unwrap();
        c.query_row(sql, [id], |r| r.get(0)).unwrap()
    };
    // A: paged, resolved, everything delivered.
    h.fire("api").await;
    let a = h.incident_id("api");
    h.recover("api").await;
    // B: a ticket whose email keeps failing: still pending when resolved.
    h.rec.script.lock().unwrap().insert(
        "email:db@example.com".into(),
        (0..1000)
            .map(|_| SendOutcome::Retry("451 try later".into()))
            .collect(),
    );
    h.fire("db").await;
    let b = h.incident_id("db");
    h.recover("db").await;
    // C: open, and the newest incident.
    h.fire("cache").await;
    let c = h.incident_id("cache");
    assert!(a < b && b < c);
    tokio::time::sleep(Duration::from_secs(60)).await;
    h.settle().await;
    assert!(
        count(
            &h,
            "SELECT count(*) FROM incident_events WHERE incident_id = ?1",
            a
        ) > 0
    );
    assert!(!h.store.deliveries_of(a).unwrap().is_empty());
    let now = h.now();
    let ended = |ends_at| Override {
        id: 0,
        team: "emea".into(),
        by_team: Some("amer".into()),
        contacts: vec![],
        starts_at: monday_morning() - chrono::Duration::days(2),
        ends_at,
        author: "bob".into(),
        comment: String::new(),
        created_at: monday_morning() - chrono::Duration::days(2),
        expired_at: None,
    };
    h.store
        .insert_override(&ended(monday_morning() - chrono::Duration::days(1)))
        .unwrap();
    let later = h
        .store
        .insert_override(&ended(now + chrono::Duration::days(2)))
        .unwrap();

    // A cutoff after everything above ended.
    let pruned = h
        .store
        .prune_history(now + chrono::Duration::days(1))
        .unwrap();
    assert_eq!((pruned.incidents, pruned.overrides), (1, 1), "{pruned:?}");
    assert!(h.store.incident(a).unwrap().is_none());
    assert!(h.store.deliveries_of(a).unwrap().is_empty());
    for table in ["incident_events", "outbox", "deliveries", "escalations"] {
        let sql = format!("SELECT count(*) FROM {table} WHERE incident_id = ?1");
        assert_eq!(count(&h, &sql, a), 0, "{table} of the pruned incident");
    }
    assert!(
        h.store.incident(b).unwrap().is_some(),
        "B has a pending delivery"
    );
    assert!(h.store.incident(c).unwrap().is_some(), "C is open");
    let overrides = h
        .store
        .overrides(monday_morning() - chrono::Duration::days(30))
        .unwrap();
    assert_eq!(overrides.iter().map(|o| o.id).collect::<Vec<_>>(), [later]);

    // B's email expires after its 12 h; C resolves. Now B goes, and C stays
    // as the newest incident, so the next one cannot reuse an id (and with
    // it the idempotency keys receivers remember).
    tokio::time::sleep(Duration::from_secs(13 * 3600)).await;
    h.settle().await;
    h.recover("cache").await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    h.settle().await;
    let pruned = h
        .store
        .prune_history(h.now() + chrono::Duration::days(1))
        .unwrap();
    assert_eq!(pruned.incidents, 1, "{pruned:?}");
    assert!(h.store.incident(b).unwrap().is_none());
    assert!(h.store.incident(c).unwrap().is_some(), "the newest is kept");
    h.fire("api").await;
    assert_eq!(h.incident_id("api"), c + 1);
}

#[tokio::test(start_paused = true)]
async fn a_page_not_yet_delivered_when_resolved_is_replaced_by_the_resolve() {
    let mut h = H::new(monday_morning());
    // The email contact is down for a while.
    h.rec.script.lock().unwrap().insert(
        "email:emea@example.com".into(),
        (0..20)
            .map(|_| SendOutcome::Retry("connection refused".into()))
            .collect(),
    );
    h.fire("api").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.recover("api").await;
    // The receiver comes back (after the resolve was queued; its first
    // attempts may still have failed).
    h.rec.script.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_secs(10 * 60)).await;
    h.settle().await;
    let email = h.sent_to("email:emea@example.com");
    let delivered_kinds: Vec<_> = h
        .store
        .deliveries()
        .unwrap()
        .into_iter()
        .filter(|r| r.contact == "email:emea@example.com")
        .map(|r| (r.kind, r.state))
        .collect();
    assert_eq!(
        delivered_kinds,
        vec![
            ("firing".to_owned(), "superseded".to_owned()),
            ("resolved".to_owned(), "delivered".to_owned()),
        ]
    );
    let resolves: Vec<&Sent> = email
        .iter()
        .filter(|s| s.kinds == [MessageKind::Resolved])
        .collect();
    assert!(!resolves.is_empty());
    assert!(
        resolves.iter().all(|s| s.key == resolves[0].key),
        "every attempt of the resolve is the same message"
    );
    assert!(
        email
            .iter()
            .filter(|s| s.kinds == [MessageKind::Firing])
            .all(|s| s.at < resolves[0].at),
        "no page after the resolve"
    );
    // The pager took both, in order.
    let pager: Vec<_> = h.sent_to("pager").iter().map(|s| s.kinds[0]).collect();
    assert_eq!(pager, [MessageKind::Firing, MessageKind::Resolved]);
}

#[tokio::test(start_paused = true)]
async fn a_crash_mid_send_resends_once_after_the_lease_with_the_same_key() {
    let mut h = H::new(monday_morning());
    h.rec.hang.lock().unwrap().push("pager".into());
    h.fire("api").await;
    assert_eq!(h.sent_to("pager").len(), 1);
    // Killed while the pager's receiver holds the message: the row is
    // leased for timeout (10s) + 5s.
    h.crash_and_restart().await;
    h.rec.hang.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_secs(14)).await;
    h.settle().await;
    assert_eq!(h.sent_to("pager").len(), 1, "not before the lease runs out");
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.settle().await;
    let pager = h.sent_to("pager");
    assert_eq!(pager.len(), 2, "sent again once");
    assert_eq!(pager[0].key, pager[1].key, "with the same idempotency key");
    // (Acknowledged, so that no escalation repeat reaches the pager.)
    let id = h.incident_id("api");
    h.engine.acknowledge(id, "alice", "", h.now()).unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    h.settle().await;
    let firing: Vec<_> = h
        .sent_to("pager")
        .into_iter()
        .filter(|s| s.kinds == [MessageKind::Firing])
        .collect();
    assert_eq!(firing.len(), 2, "and never again");
    let row = h.delivery_to("pager");
    assert_eq!((row.state.as_str(), row.attempts), ("delivered", 2));
    // The email contact was delivered before the crash and is not resent.
    assert_eq!(h.sent_to("email:emea@example.com").len(), 1);
}
