//! The fleet end to end (issue 6, "End-to-end scenarios"): real processes of
//! the built binary — one `varde coordinator`, probes for regions eu, us and
//! ap — against local target servers, a real SMTP server (aiosmtpd), a real
//! webhook receiver (hyper, HMAC-verified) and a real Prometheus. Each
//! scenario asserts on what the receivers actually got.
//!
//! Each probe connects from its own loopback address (`--source-address`
//! 127.0.0.2/3/4), so a target can refuse one region.

mod hook;
mod smtp;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{TimeDelta, Timelike, Utc};
use hook::{Mode, Receiver};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use serde_json::Value;
use smtp::SmtpServer;

const REGIONS: [&str; 3] = ["eu", "us", "ap"];
/// Where each region's probe connects from.
fn source_of(region: &str) -> IpAddr {
    match region {
        "eu" => [127, 0, 0, 2].into(),
        "us" => [127, 0, 0, 3].into(),
        _ => [127, 0, 0, 4].into(),
    }
}
const HOOK_SECRET: &str = "e2e-fleet-hmac-secret-0123456789";
/// The check that the scenarios make fail; `static` stays up throughout.
const SHOP: &str = "shop";

// === waiting ===

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    wait_until(
        what,
        timeout,
        || if f() { Ok(()) } else { Err(String::new()) },
    );
}

/// Like [`wait_for`]; a timeout reports what `f` last said.
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<(), String>) {
    // Generous: the machine may be busy with other test binaries.
    let deadline = Instant::now() + timeout * 2;
    loop {
        match f() {
            Ok(()) => return,
            Err(last) => assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// === the target: /shop fails while told to, /static always answers ===

/// Connections from `refused` are closed unanswered.
#[derive(Clone)]
struct Target {
    failing: Arc<AtomicBool>,
    refused: Arc<Mutex<Option<IpAddr>>>,
    port: u16,
}

impl Target {
    async fn start() -> Target {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = Target {
            failing: Arc::new(AtomicBool::new(false)),
            refused: Arc::new(Mutex::new(None)),
            port: listener.local_addr().unwrap().port(),
        };
        let failing = t.failing.clone();
        let refused = t.refused.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    return;
                };
                if *refused.lock().unwrap() == Some(peer.ip()) {
                    drop(stream);
                    continue;
                }
                let failing = failing.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let fail = req.uri().path() == "/shop" && failing.load(Ordering::SeqCst);
                        async move {
                            let status = if fail { 503 } else { 200 };
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(b"ok\n")))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        t
    }

    fn fail(&self, yes: bool) {
        self.failing.store(yes, Ordering::SeqCst);
    }

    fn refuse(&self, source: Option<IpAddr>) {
        *self.refused.lock().unwrap() = source;
    }
}

// === processes ===

/// A child process of the varde binary, killed (SIGKILL) when dropped.
struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .env("VARDE_TEST_HOOK_SECRET", HOOK_SECRET)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                assert!(!line.contains(HOOK_SECRET), "a secret in the log: {line}");
                if !sent && let Some(rest) = line.split("listen=").nth(1) {
                    // `listen=ADDR` (coordinator) or `listen=Some(ADDR)` (probe).
                    let word = rest.split_whitespace().next().unwrap_or("");
                    let addr = word
                        .trim_start_matches("Some(")
                        .trim_end_matches(')')
                        .to_owned();
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the process prints its address")
            .parse()
            .unwrap();
        Proc { child, addr }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 GET; `None` if the connection failed or broke.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some((status, raw[at..].to_vec()))
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (s, b) = get(addr, path).unwrap_or_else(|| panic!("GET {path} works"));
    assert_eq!(s, 200, "{path}: {}", String::from_utf8_lossy(&b));
    serde_json::from_slice(&b).unwrap()
}

// === the fleet ===

/// The rules file: a majority `down` rule, a quick `probe_offline` rule, a
/// webhook and an email channel, and two teams of which the clock decides:
/// `day` holds the hours around now (UTC), `other` the rest, and `other`
/// is first in `order`, so only the time of day makes `day` the one on duty.
fn rules_toml(hook_port: u16, smtp_port: u16) -> String {
    let now = Utc::now();
    let start = (now - TimeDelta::hours(2)).hour();
    let end = (now + TimeDelta::hours(3)).hour();
    format!(
        r#"
[[rule]]
name = "down"
kind = "down"
quorum = "majority"
severity = "page"

[[rule]]
name = "offline"
kind = "probe_offline"
after = "5s"

[[channel]]
name = "hooks"
type = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
secret_env = "VARDE_TEST_HOOK_SECRET"
timeout = "2s"

[[channel]]
name = "email"
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
tls = "none"
from = "varde <varde@example.com>"

[oncall]
order = ["other", "day"]
fallback = "other"

[[team]]
name = "day"
timezone = "UTC"
contacts = ["hooks", "email:day@example.com"]
[[team.shift]]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "{start:02}:00"
end = "{end:02}:00"

[[team]]
name = "other"
timezone = "UTC"
contacts = ["email:other@example.com"]
[[team.shift]]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "{end:02}:00"
end = "{start:02}:00"

[[route]]
policy = "page"

[[policy]]
name = "page"
[[policy.level]]
teams = ["on_duty"]
"#
    )
}

struct Fleet {
    // Processes first: they are killed before the servers they talk to go.
    probes: BTreeMap<&'static str, Proc>,
    coordinator: Option<Proc>,
    addr: SocketAddr,
    target: Target,
    hook: Receiver,
    mail: SmtpServer,
    /// Every message the SMTP server reported so far.
    mails: Vec<Value>,
    dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

impl Fleet {
    fn start() -> Fleet {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let target = rt.block_on(Target::start());
        let hook = rt.block_on(Receiver::start(Mode::Up, HOOK_SECRET));
        let mail = SmtpServer::start(&[]);
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("cfg");
        std::fs::create_dir_all(cfg.join("probes")).unwrap();
        std::fs::create_dir_all(cfg.join("alert-rules")).unwrap();
        let port = target.port;
        std::fs::write(
            cfg.join("probes/checks.toml"),
            format!(
                "[[check]]\nname = \"{SHOP}\"\ntarget = \"http://127.0.0.1:{port}/shop\"\ninterval = \"1s\"\n\n\
                 [[check]]\nname = \"static\"\ntarget = \"http://127.0.0.1:{port}/static\"\ninterval = \"1s\"\n"
            ),
        )
        .unwrap();
        std::fs::write(
            cfg.join("alert-rules/rules.toml"),
            rules_toml(hook.port, mail.port),
        )
        .unwrap();
        // With 1 s checks and pushes batched for up to 1 s, the default
        // staleness (2 intervals) would flap regions to STALE on a busy host.
        let mut coord =
            String::from("[verdict]\nfail_after = 2\nrecover_after = 2\nstale_intervals = 5\n\n");
        for region in REGIONS {
            std::fs::write(
                cfg.join(format!("{region}.token")),
                format!("{region}-e2e-fleet-token-0123456789\n"),
            )
            .unwrap();
            coord += &format!(
                "[[probe]]\nname = \"{region}\"\nregion = \"{region}\"\ntoken_file = \"{region}.token\"\n\n"
            );
        }
        std::fs::write(cfg.join("coordinator.toml"), coord).unwrap();

        let mut f = Fleet {
            probes: BTreeMap::new(),
            coordinator: None,
            addr: "127.0.0.1:9".parse().unwrap(),
            target,
            hook,
            mail,
            mails: Vec::new(),
            dir,
            _rt: rt,
        };
        f.start_coordinator("127.0.0.1:0");
        for region in REGIONS {
            let p = Proc::spawn(
                Command::new(env!("CARGO_BIN_EXE_varde"))
                    .args(["probe", "--listen", "127.0.0.1:0", "--poll-interval", "1s"])
                    .args(["--region", region])
                    .arg("--source-address")
                    .arg(source_of(region).to_string())
                    .arg("--coordinator")
                    .arg(format!("http://{}/", f.addr))
                    .arg("--token-file")
                    .arg(f.cfg().join(format!("{region}.token")))
                    .arg("--data-dir")
                    .arg(f.dir.path().join(format!("probe-{region}"))),
            );
            f.probes.insert(region, p);
        }
        f.wait_all_up();
        f
    }

    fn cfg(&self) -> PathBuf {
        self.dir.path().join("cfg")
    }

    fn start_coordinator(&mut self, listen: &str) {
        let c = Proc::spawn(
            Command::new(env!("CARGO_BIN_EXE_varde"))
                .args(["coordinator", "--listen", listen, "--config"])
                .arg(self.cfg())
                .arg("--data-dir")
                .arg(self.dir.path().join("coordinator-data")),
        );
        self.addr = c.addr;
        self.coordinator = Some(c);
    }

    /// Both checks UP in every region.
    fn wait_all_up(&self) {
        wait_for(
            "both checks up in all regions",
            Duration::from_secs(40),
            || {
                ["shop", "static"].iter().all(|c| {
                    let s = self.status(c);
                    s["verdict"] == "up" && REGIONS.iter().all(|r| s["regions"][r]["state"] == "up")
                })
            },
        );
    }

    fn status(&self, check: &str) -> Value {
        match get(self.addr, &format!("/api/v1/status/{check}")) {
            Some((200, b)) => serde_json::from_slice::<Value>(&b).unwrap()["check"].clone(),
            _ => Value::Null,
        }
    }

    fn open_incidents(&self) -> Vec<Value> {
        get_json(self.addr, "/api/v1/incidents?state=open")["incidents"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn all_incidents(&self) -> Vec<Value> {
        get_json(self.addr, "/api/v1/incidents?limit=100")["incidents"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Collects what the SMTP server got, waiting up to `wait` for more.
    fn mails(&mut self, wait: Duration) -> Vec<Value> {
        let deadline = Instant::now() + wait;
        while let Some(m) = self
            .mail
            .try_next(deadline.saturating_duration_since(Instant::now()))
        {
            self.mails.push(m);
        }
        self.mails.clone()
    }

    /// Waits until `n` messages whose subject starts with `prefix` arrived.
    fn wait_mails(&mut self, prefix: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got: Vec<Value> = self
                .mails(Duration::from_millis(200))
                .into_iter()
                .filter(|m| m["subject"].as_str().unwrap_or("").starts_with(prefix))
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} mails {prefix}: {:#?}",
                self.mails
            );
        }
    }

    fn assert_quiet(&mut self) {
        assert!(
            self.hook.got().is_empty(),
            "webhook got {:#?}",
            self.hook.got()
        );
        let mails = self.mails(Duration::from_millis(300));
        assert!(mails.is_empty(), "mail got {mails:#?}");
    }

    /// Results produced by the probe of `region` (its `varde_checks_total`).
    fn probe_results(&self, region: &str) -> Option<u64> {
        let (s, b) = get(self.probes[region].addr, "/metrics")?;
        assert_eq!(s, 200);
        let text = String::from_utf8_lossy(&b).to_string();
        let mut total = 0.0;
        for line in text.lines() {
            if line.starts_with("varde_checks_total{") {
                total += line.rsplit(' ').next()?.parse::<f64>().ok()?;
            }
        }
        Some(total as u64)
    }

    /// Results the coordinator stored per region.
    fn coordinator_results(&self) -> BTreeMap<String, u64> {
        get_json(self.addr, "/api/v1/probes")["probes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["region"].as_str().unwrap().to_owned(),
                    p["results_total"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

fn subjects(mails: &[Value]) -> Vec<String> {
    mails
        .iter()
        .map(|m| m["subject"].as_str().unwrap_or("").to_owned())
        .collect()
}

// === scenarios ===

/// Scenarios 1 to 4: quiet while healthy; one region's failing view is
/// DEGRADED and pages nobody; a failure everywhere pages
/// the on-duty team once by email and webhook; a coordinator SIGKILLed while
/// the incident fires comes back on the same port, the probes' spooled
/// results arrive without loss, no second page, and one resolve each.
#[test]
fn fleet_pages_the_on_duty_team_once_and_survives_a_coordinator_sigkill() {
    let mut f = Fleet::start();

    // 1. Healthy for several intervals: nothing at either receiver.
    std::thread::sleep(Duration::from_secs(5));
    f.assert_quiet();
    assert!(f.all_incidents().is_empty());

    // 2. The target refuses eu's source address: DEGRADED, no page.
    f.target.refuse(Some(source_of("eu")));
    wait_for(
        "shop degraded with eu down",
        Duration::from_secs(30),
        || {
            let s = f.status(SHOP);
            s["verdict"] == "degraded"
                && s["regions"]["eu"]["state"] == "down"
                && s["regions"]["us"]["state"] == "up"
                && s["regions"]["ap"]["state"] == "up"
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let s = f.status(SHOP);
    assert_eq!(s["verdict"], "degraded", "{s:#}");
    f.assert_quiet();
    assert!(f.all_incidents().is_empty(), "{:#?}", f.all_incidents());
    f.target.refuse(None);
    f.wait_all_up();

    // 3. The target fails for every region: one page, to `day`.
    f.target.fail(true);
    wait_for("the firing webhook", Duration::from_secs(30), || {
        !f.hook.accepted_with("-firing-").is_empty()
    });
    let fired = f.wait_mails("[FIRING]", 1);
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(
        fired[0]["rcpt_tos"],
        serde_json::json!(["day@example.com"]),
        "the team on duty now gets the page, not `other`"
    );
    assert!(subjects(&fired)[0].contains(SHOP), "{:?}", subjects(&fired));
    let open = f.open_incidents();
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(open[0]["check"], SHOP);
    let id = open[0]["id"].clone();

    // 4. SIGKILL while firing; restart on the same data dir and port.
    let addr = f.addr;
    let before = f.coordinator_results();
    f.coordinator.take().unwrap().kill9();
    std::thread::sleep(Duration::from_secs(3));
    f.start_coordinator(&addr.to_string());
    assert_eq!(f.addr, addr);
    // Every result a probe produced reaches the coordinator: after the
    // restart the gap between what each probe counted and what the
    // coordinator stored closes to what is in flight (one push), which is
    // far less than the ~3 s × 2 checks produced while it was down.
    wait_until(
        "the probes' spooled results replayed",
        Duration::from_secs(30),
        || {
            let stored = f.coordinator_results();
            let mut state = Vec::new();
            for r in REGIONS {
                let produced = f.probe_results(r).unwrap_or(u64::MAX);
                let s = stored.get(r).copied().unwrap_or(0);
                let was = before.get(r).copied().unwrap_or(0);
                state.push(format!("{r}: produced {produced}, stored {s} (was {was})"));
                if s <= was || produced.saturating_sub(s) > 2 {
                    return Err(state.join("; "));
                }
            }
            Ok(())
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let open = f.open_incidents();
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(open[0]["id"], id, "the same incident, not a new one");
    assert_eq!(f.all_incidents().len(), 1);

    // Recovery: exactly one resolve each.
    f.target.fail(false);
    wait_for("the resolved webhook", Duration::from_secs(30), || {
        !f.hook.accepted_with("-resolved-").is_empty()
    });
    let resolved = f.wait_mails("[RESOLVED]", 1);
    std::thread::sleep(Duration::from_secs(3));
    let resolved_after = f.wait_mails("[RESOLVED]", 1);
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved_after.len(), 1, "{resolved_after:#?}");
    assert_eq!(
        resolved_after[0]["rcpt_tos"],
        serde_json::json!(["day@example.com"])
    );
    let firing_mails = f.wait_mails("[FIRING]", 1);
    assert_eq!(firing_mails.len(), 1, "no second firing page by email");
    let firing = f.hook.accepted_with("-firing-");
    let resolved = f.hook.accepted_with("-resolved-");
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0].1, 1, "{firing:?}");
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0].1, 1, "{resolved:?}");
    assert!(f.open_incidents().is_empty());
}

/// Scenarios 8, 6 and 5: a bad rules file keeps the running config (and
/// says where it is wrong) and still pages; a webhook receiver that answers
/// 503 for a while gets every notification once after it returns; a killed
/// probe raises probe_offline for its region and no incident for its checks.
#[test]
fn bad_config_webhook_outage_and_a_killed_probe() {
    let mut f = Fleet::start();

    // 8. A bad edit is refused with file:line:column; the old config runs.
    let rules = f.cfg().join("alert-rules/rules.toml");
    let good = std::fs::read_to_string(&rules).unwrap();
    std::fs::write(&rules, "[[rule]]\nname = \"x\"\nkind = \"nope\"\n").unwrap();
    let mut cfg = Value::Null;
    wait_for("the config error", Duration::from_secs(20), || {
        cfg = get_json(f.addr, "/api/v1/config");
        cfg["ok"] == false
    });
    let err = cfg["errors"][0].as_str().unwrap_or("").to_owned();
    assert!(err.contains("rules.toml:3:8"), "{cfg}");

    // 6. The receiver is down (503) when the (new) failure pages.
    f.hook.set(Mode::Down);
    f.target.fail(true);
    wait_for("failed webhook attempts", Duration::from_secs(30), || {
        f.hook.got().iter().filter(|g| g.status == 503).count() >= 2
    });
    assert!(f.hook.accepted().is_empty());
    // The email still went out, under the old config's routing.
    let fired = f.wait_mails("[FIRING]", 1);
    assert_eq!(fired[0]["rcpt_tos"], serde_json::json!(["day@example.com"]));
    std::thread::sleep(Duration::from_secs(2));
    f.hook.set(Mode::Up);
    wait_for(
        "the page after the receiver returns",
        Duration::from_secs(60),
        || !f.hook.accepted_with("-firing-").is_empty(),
    );
    f.target.fail(false);
    wait_for("the resolve", Duration::from_secs(30), || {
        !f.hook.accepted_with("-resolved-").is_empty()
    });
    std::thread::sleep(Duration::from_secs(3));
    let accepted = f.hook.accepted();
    assert_eq!(accepted.len(), 2, "one firing, one resolved: {accepted:#?}");
    assert!(accepted.values().all(|&n| n == 1), "{accepted:#?}");
    assert_eq!(f.wait_mails("[FIRING]", 1).len(), 1);
    assert_eq!(f.wait_mails("[RESOLVED]", 1).len(), 1);

    // Fixing the file is picked up again.
    std::fs::write(&rules, good).unwrap();
    wait_for("the config ok again", Duration::from_secs(20), || {
        get_json(f.addr, "/api/v1/config")["ok"] == true
    });

    // 5. A probe is killed: probe_offline for its region, nothing else.
    let before = f.all_incidents().len();
    f.probes.remove("ap").unwrap().kill9();
    wait_for(
        "a probe_offline incident for ap",
        Duration::from_secs(40),
        || {
            f.open_incidents()
                .iter()
                .any(|i| i["rule"] == "offline" && i.to_string().contains("\"ap\""))
        },
    );
    let offline = f.wait_mails("[FIRING]", 2);
    assert_eq!(offline.len(), 2, "{:?}", subjects(&offline));
    wait_for(
        "the probe_offline page by webhook",
        Duration::from_secs(30),
        || f.hook.accepted_with("-firing-").len() == 2,
    );
    std::thread::sleep(Duration::from_secs(3));
    let open = f.open_incidents();
    assert_eq!(open.len(), 1, "only probe_offline is open: {open:#?}");
    assert_eq!(
        f.all_incidents().len(),
        before + 1,
        "{:#?}",
        f.all_incidents()
    );
    for check in ["shop", "static"] {
        assert_eq!(f.status(check)["verdict"], "up", "{check}");
    }
}

/// Scenario 7: a real Prometheus scrapes a probe and the coordinator; its
/// HTTP API has `probe_success` and the HTTP phase durations of every check.
#[test]
fn prometheus_scrapes_probe_and_coordinator() {
    let prometheus = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("the `prometheus` server binary is missing: apt-get install -y prometheus (CI's .ci/run installs it)");
    let f = Fleet::start();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let prom_addr = free.local_addr().unwrap();
    drop(free);
    let probe = f.probes["eu"].addr;
    let config = f.dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n\
             \x20 - job_name: varde-probe\n    static_configs:\n      - targets: ['{probe}']\n\
             \x20 - job_name: varde-coordinator\n    static_configs:\n      - targets: ['{}']\n",
            f.addr
        ),
    )
    .unwrap();
    let mut child = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            f.dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={prom_addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(&mut child);

    let query = |q: &str| -> Vec<Value> {
        match get(prom_addr, &format!("/api/v1/query?query={q}")) {
            Some((200, b)) => serde_json::from_slice::<Value>(&b).unwrap()["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    };
    let checks_of = |series: &[Value]| -> Vec<String> {
        let mut c: Vec<String> = series
            .iter()
            .filter_map(|s| s["metric"]["check"].as_str().map(str::to_owned))
            .collect();
        c.sort();
        c.dedup();
        c
    };
    let mut success = Vec::new();
    wait_for(
        "probe_success in Prometheus",
        Duration::from_secs(40),
        || {
            success = query("probe_success");
            checks_of(&success) == ["shop", "static"]
        },
    );
    for s in &success {
        assert_eq!(s["value"][1], "1", "{s}");
        assert_eq!(s["metric"]["region"], "eu", "{s}");
        assert_eq!(s["metric"]["job"], "varde-probe", "{s}");
    }
    for phase in ["resolve", "connect", "processing", "transfer"] {
        let q = format!("probe_http_duration_seconds%7Bphase%3D%22{phase}%22%7D");
        let series = query(&q);
        assert_eq!(
            checks_of(&series),
            ["shop", "static"],
            "phase {phase}: {series:#?}"
        );
    }
    // The coordinator is scraped too.
    wait_for(
        "the coordinator's metrics in Prometheus",
        Duration::from_secs(20),
        || {
            query("up%7Bjob%3D%22varde-coordinator%22%7D")
                .first()
                .is_some_and(|s| s["value"][1] == "1")
                && !query("varde_coordinator_results_total").is_empty()
        },
    );
}
