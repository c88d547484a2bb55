//! Delivery end to end through a real `varde coordinator` process: results
//! pushed over HTTP fire incidents; a real webhook receiver (hyper, in this
//! process) that fails for a while then recovers gets every notification
//! exactly once afterwards, each HMAC-signed; a real SMTP server (aiosmtpd)
//! gets the email with its subject and Message-ID; the signed acknowledge
//! link works (GET confirms, POST acknowledges, a tampered one is refused);
//! on-call overrides go through the API; and a coordinator killed with
//! SIGKILL between a receiver taking a message and the row being marked
//! sends that message exactly once more after it restarts.

mod hook;
mod results;
mod smtp;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use hook::{Mode, Receiver};
use results::result;
use serde_json::{Value, json};
use smtp::SmtpServer;
use varde::wire::{ResultBatch, ResultRecord};

const PROBE_TOKEN: &str = "notify-process-probe-token-0123";
const API_TOKEN: &str = "notify-process-api-token-456789";
const HOOK_SECRET: &str = "notify-process-hmac-secret-abcdef";
const CHECKS: usize = 3;

// === the coordinator process ===

fn write_config(dir: &Path, hook_port: u16, smtp_port: u16, timeout: &str) {
    std::fs::create_dir_all(dir.join("probes")).unwrap();
    std::fs::create_dir_all(dir.join("alert-rules")).unwrap();
    let mut checks = String::new();
    for i in 0..CHECKS {
        checks += &format!(
            "[[check]]\nname = \"api-{i}\"\ntarget = \"http://127.0.0.1:9/{i}\"\ninterval = \"30s\"\nlabels = {{ team = \"web\" }}\n\n"
        );
    }
    std::fs::write(dir.join("probes/checks.toml"), checks).unwrap();
    std::fs::write(
        dir.join("alert-rules/rules.toml"),
        format!(
            r#"
[[rule]]
name = "api-down"
kind = "down"
quorum = "all"
severity = "page"
[rule.annotations]
runbook = "https://runbooks.example.com/{{{{ check }}}}"

[[channel]]
name = "hooks"
type = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
secret_env = "VARDE_TEST_HOOK_SECRET"
timeout = "{timeout}"

[[channel]]
name = "email"
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
tls = "none"
from = "varde <varde@example.com>"

[oncall]
order = ["web", "dba"]
fallback = "web"

[[team]]
name = "web"
timezone = "UTC"
contacts = ["hooks", "email:web-oncall@example.com"]
[[team.shift]]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "00:00"

[[team]]
name = "dba"
timezone = "UTC"
contacts = ["email:dba@example.com"]
[[team.shift]]
days = ["mon"]
start = "00:00"
end = "00:00"

[[route]]
policy = "page"

[[policy]]
name = "page"
[[policy.level]]
teams = ["on_duty"]
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("coordinator.toml"),
        format!(
            "[links]\npublic_url = \"http://varde.test\"\n\n\
             [[probe]]\nname = \"all\"\ntoken = \"{PROBE_TOKEN}\"\n\n\
             [[api_token]]\nname = \"alice\"\ntoken = \"{API_TOKEN}\"\n"
        ),
    )
    .unwrap();
}

struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Proc {
    fn start(config: &Path, data: &Path) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_varde"))
            .args(["coordinator", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(data)
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
                assert!(
                    !line.contains(HOOK_SECRET) && !line.contains(API_TOKEN),
                    "a secret in the log: {line}"
                );
                if !sent && let Some(rest) = line.split("listen=").nth(1) {
                    let word = rest.split_whitespace().next().unwrap_or("");
                    let _ = tx.send(word.to_owned());
                    sent = true;
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("coordinator prints its address")
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

/// One HTTP/1.1 request with a bearer token; (status, headers, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: c\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..at]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, raw[at..].to_vec())
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (s, _, b) = http(addr, "GET", path, "", b"");
    assert_eq!(s, 200, "{path}: {}", String::from_utf8_lossy(&b));
    serde_json::from_slice(&b).unwrap()
}

/// Pushes one round of results for every check from eu, us and ap.
fn push_round(addr: SocketAddr, ok: bool, at: DateTime<Utc>, seq: &mut u64) {
    for region in ["eu", "us", "ap"] {
        let probe_id = format!("probe-{region}");
        let results = (0..CHECKS)
            .map(|i| {
                *seq += 1;
                ResultRecord {
                    check: format!("api-{i}"),
                    region: region.into(),
                    probe_id: probe_id.clone(),
                    seq: *seq,
                    result: result(ok, at),
                }
            })
            .collect();
        let batch = ResultBatch {
            probe_id,
            region: region.into(),
            version: "test".into(),
            results,
        };
        let body = serde_json::to_vec(&batch).unwrap();
        let (s, _, b) = http(addr, "POST", "/api/v1/results", PROBE_TOKEN, &body);
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }
}

/// The probes' side: sequence numbers and the start time of the last
/// round (results older than a region's last are ignored, so rounds only
/// move forward).
struct Feed {
    seq: u64,
    last: DateTime<Utc>,
}

impl Feed {
    fn new() -> Feed {
        Feed {
            seq: 0,
            last: DateTime::<Utc>::MIN_UTC,
        }
    }
}

/// Two failing (or passing) rounds, up to 30 s apart in probe time and
/// after every earlier round: enough for a verdict (fail_after =
/// recover_after = 2).
fn push_two(addr: SocketAddr, ok: bool, feed: &mut Feed) {
    let now = Utc::now();
    let first = (now - TimeDelta::seconds(30)).max(feed.last + TimeDelta::seconds(1));
    let second = now.max(first + TimeDelta::seconds(1));
    push_round(addr, ok, first, &mut feed.seq);
    push_round(addr, ok, second, &mut feed.seq);
    feed.last = second;
}

async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// === the tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_while_gets_everything_once_signed_and_links_acknowledge() {
    let hook = Receiver::start(Mode::Down, HOOK_SECRET).await;
    let mail = SmtpServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    write_config(&dir.path().join("cfg"), hook.port, mail.port, "5s");
    let c = Proc::start(&dir.path().join("cfg"), &dir.path().join("data"));
    let mut seq = Feed::new();

    push_two(c.addr, false, &mut seq);
    // The receiver answers 503 to the three pages for a while...
    wait_for("failed attempts", Duration::from_secs(20), || {
        hook.got().iter().filter(|g| g.status == 503).count() >= 6
    })
    .await;
    assert!(hook.accepted().is_empty());
    // ...and comes back: each page arrives once.
    hook.set(Mode::Up);
    wait_for("three pages", Duration::from_secs(30), || {
        hook.accepted().len() == 3
    })
    .await;

    // Email: one message per incident to the team's address.
    let mut subjects = Vec::new();
    for _ in 0..CHECKS {
        let m = mail.next_message();
        assert_eq!(m["rcpt_tos"], json!(["web-oncall@example.com"]));
        let mid = m["message_id"].as_str().unwrap();
        assert!(
            mid.starts_with("<varde-") && mid.contains("-firing-") && mid.ends_with("@varde>"),
            "{mid}"
        );
        let body = m["body"].as_str().unwrap();
        assert!(body.contains("https://runbooks.example.com/api-"), "{body}");
        assert!(body.contains("http://varde.test/ack/"), "{body}");
        subjects.push(m["subject"].as_str().unwrap().to_owned());
    }
    subjects.sort();
    assert_eq!(
        subjects,
        (0..CHECKS)
            .map(|i| format!("[FIRING] api-{i} down in 3/3 regions"))
            .collect::<Vec<_>>()
    );

    // The acknowledge link of the first page.
    let first = hook.got().into_iter().find(|g| g.status == 200).unwrap();
    assert!(first.signed, "HMAC verified on the receiving side");
    let item = &first.body["items"][0];
    let incident = item["incident"]["incident"].as_i64().unwrap();
    let ack_url = item["ack_url"].as_str().unwrap().to_owned();
    let path = ack_url
        .strip_prefix("http://varde.test")
        .unwrap()
        .to_owned();
    let (s, head, page) = http(c.addr, "GET", &path, "", b"");
    assert_eq!(s, 200);
    assert!(head.to_ascii_lowercase().contains("text/html"));
    assert!(String::from_utf8_lossy(&page).contains("<form method=\"post\""));
    let inc = get_json(c.addr, &format!("/api/v1/incidents/{incident}"));
    assert_eq!(inc["incident"]["state"], "firing", "a GET changes nothing");
    // The link names its recipient, under the signature.
    assert!(path.contains("&to=hooks&"), "{path}");
    // Tampered: another incident, another recipient, or a changed signature.
    let someone = path.replacen("&to=hooks&", "&to=email%3Aboss%40example.com&", 1);
    assert_eq!(http(c.addr, "POST", &someone, "", b"").0, 403);
    let other = path.replacen(
        &format!("/ack/{incident}?"),
        &format!("/ack/{}?", incident + 1),
        1,
    );
    assert_eq!(http(c.addr, "POST", &other, "", b"").0, 403);
    let mut bad = path.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == '0' { '1' } else { '0' });
    assert_eq!(http(c.addr, "POST", &bad, "", b"").0, 403);
    assert_eq!(
        get_json(c.addr, &format!("/api/v1/incidents/{incident}"))["incident"]["state"],
        "firing"
    );
    let (s, _, _) = http(c.addr, "POST", &path, "", b"");
    assert_eq!(s, 200);
    let inc = get_json(c.addr, &format!("/api/v1/incidents/{incident}"));
    assert_eq!(inc["incident"]["state"], "acknowledged");
    assert_eq!(inc["incident"]["acknowledged_by"], "hooks via link");
    wait_for("the acknowledgement", Duration::from_secs(10), || {
        hook.accepted().keys().any(|k| k.contains("-acknowledged-"))
    })
    .await;

    // Recovery: one resolve per incident to the webhook and by email.
    push_two(c.addr, true, &mut seq);
    wait_for("three resolves", Duration::from_secs(20), || {
        hook.accepted()
            .keys()
            .filter(|k| k.contains("-resolved-"))
            .count()
            == 3
    })
    .await;
    for _ in 0..CHECKS {
        let m = mail.next_message();
        assert!(
            m["subject"]
                .as_str()
                .unwrap()
                .starts_with("[RESOLVED] api-"),
            "{m}"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let accepted = hook.accepted();
    assert_eq!(
        accepted.len(),
        7,
        "3 pages, 1 acknowledgement, 3 resolves: {accepted:?}"
    );
    assert!(
        accepted.values().all(|&n| n == 1),
        "each exactly once: {accepted:?}"
    );
    assert!(hook.got().iter().all(|g| g.signed), "every request signed");
    mail.assert_nothing_delivered();

    // The incident shows its deliveries, with attempts.
    let inc = get_json(c.addr, &format!("/api/v1/incidents/{incident}"));
    let deliveries = inc["deliveries"].as_array().unwrap();
    let hook_page = deliveries
        .iter()
        .find(|d| d["contact"] == "hooks" && d["kind"] == "firing")
        .unwrap();
    assert_eq!(hook_page["state"], "delivered");
    assert!(hook_page["attempts"].as_u64().unwrap() >= 2, "{hook_page}");
    // No secret anywhere in the API or metrics.
    let (_, _, metrics) = http(c.addr, "GET", "/metrics", "", b"");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(
            "varde_coordinator_deliveries_total{channel=\"webhook\",result=\"delivered\"} 7"
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("varde_coordinator_deliveries_total{channel=\"webhook\",result=\"retry\"}")
    );
    for text in [inc.to_string(), metrics.to_string()] {
        assert!(!text.contains(HOOK_SECRET));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_through_the_api_change_who_is_paged() {
    let hook = Receiver::start(Mode::Up, HOOK_SECRET).await;
    let mail = SmtpServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    write_config(&dir.path().join("cfg"), hook.port, mail.port, "5s");
    let c = Proc::start(&dir.path().join("cfg"), &dir.path().join("data"));

    // Without a token: 401. Unknown team, no replacement, bad contact: 400.
    let body = json!({ "team": "web", "by_team": "dba", "duration": "1h", "comment": "holiday" });
    let (s, _, _) = http(
        c.addr,
        "POST",
        "/api/v1/overrides",
        "",
        body.to_string().as_bytes(),
    );
    assert_eq!(s, 401);
    for (bad, why) in [
        (
            json!({ "team": "nope", "by_team": "dba", "duration": "1h" }),
            "unknown team",
        ),
        (
            json!({ "team": "web", "duration": "1h" }),
            "who takes the pages",
        ),
        (
            json!({ "team": "web", "contacts": ["fax:123"], "duration": "1h" }),
            "unknown channel",
        ),
        (
            json!({ "team": "web", "by_team": "dba" }),
            "ends_at or duration",
        ),
    ] {
        let (s, _, b) = http(
            c.addr,
            "POST",
            "/api/v1/overrides",
            API_TOKEN,
            bad.to_string().as_bytes(),
        );
        assert_eq!(s, 400, "{bad}");
        assert!(
            String::from_utf8_lossy(&b).contains(why),
            "{}",
            String::from_utf8_lossy(&b)
        );
    }
    let (s, _, b) = http(
        c.addr,
        "POST",
        "/api/v1/overrides",
        API_TOKEN,
        body.to_string().as_bytes(),
    );
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
    let o: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(o["override"]["author"], "alice");
    let id = o["override"]["id"].as_i64().unwrap();
    let now = get_json(c.addr, "/api/v1/oncall");
    assert_eq!(now["team"], "web");
    assert_eq!(now["contacts"], json!(["email:dba@example.com"]));
    assert_eq!(
        get_json(c.addr, "/api/v1/overrides")["overrides"][0]["comment"],
        "holiday"
    );

    // A page now goes to the replacement only.
    let mut seq = Feed::new();
    push_two(c.addr, false, &mut seq);
    let mut to = Vec::new();
    for _ in 0..CHECKS {
        to.push(
            mail.next_message()["rcpt_tos"][0]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert!(to.iter().all(|t| t == "dba@example.com"), "{to:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        hook.got().is_empty(),
        "the replaced team's webhook is not paged"
    );

    // Ended: back to the team's own contacts.
    let (s, _, _) = http(
        c.addr,
        "DELETE",
        &format!("/api/v1/overrides/{id}"),
        API_TOKEN,
        b"",
    );
    assert_eq!(s, 204);
    let (s, _, _) = http(
        c.addr,
        "DELETE",
        &format!("/api/v1/overrides/{id}"),
        API_TOKEN,
        b"",
    );
    assert_eq!(s, 404);
    assert_eq!(
        get_json(c.addr, "/api/v1/oncall")["contacts"],
        json!(["hooks", "email:web-oncall@example.com"])
    );

    // The same through the CLI.
    let url = format!("http://{}/", c.addr);
    let varde = |args: &[&str], token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_varde"));
        cmd.args(args).env_remove("VARDE_API_TOKEN");
        if let Some(t) = token {
            cmd.env("VARDE_API_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let add = [
        "oncall",
        "override",
        "add",
        "--coordinator",
        &url,
        "--team",
        "web",
        "--contact",
        "email:sub@example.com",
        "--for",
        "2h",
        "--comment",
        "swap",
    ];
    let (code, _, err) = varde(&add, None);
    assert_eq!(code, Some(2), "no token: {err}");
    let (code, out, err) = varde(&add, Some(API_TOKEN));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("web → email:sub@example.com") && out.contains("by alice (swap)"),
        "{out}"
    );
    let (code, out, _) = varde(&["oncall", "override", "list", "--coordinator", &url], None);
    assert_eq!(code, Some(0));
    assert!(out.contains("web → email:sub@example.com"), "{out}");
    let (code, out, _) = varde(&["oncall", "--coordinator", &url], None);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("web on duty") && out.contains("contact: email:sub@example.com"),
        "{out}"
    );
    let id = get_json(c.addr, "/api/v1/overrides")["overrides"][0]["id"]
        .as_i64()
        .unwrap();
    let (code, _, err) = varde(
        &[
            "oncall",
            "override",
            "add",
            "--coordinator",
            &url,
            "--team",
            "nope",
            "--by-team",
            "web",
            "--for",
            "1h",
        ],
        Some(API_TOKEN),
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown team"), "{err}");
    let (code, out, _) = varde(
        &[
            "oncall",
            "override",
            "end",
            "--coordinator",
            &url,
            &id.to_string(),
        ],
        Some(API_TOKEN),
    );
    assert_eq!(code, Some(0));
    assert!(out.contains("ended"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_send_and_mark_sends_that_message_once_more() {
    let hook = Receiver::start(Mode::Up, HOOK_SECRET).await;
    let mail = SmtpServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (cfg, data) = (dir.path().join("cfg"), dir.path().join("data"));
    // A 1 s channel timeout: the lease of a message in flight is 6 s.
    write_config(&cfg, hook.port, mail.port, "1s");
    let c = Proc::start(&cfg, &data);
    hook.set(Mode::Hang);
    let mut seq = Feed::new();
    push_two(c.addr, false, &mut seq);
    // The receiver holds the pages it got; the coordinator is killed
    // before it can mark them delivered.
    wait_for(
        "pages held by the receiver",
        Duration::from_secs(20),
        || hook.got().len() == CHECKS,
    )
    .await;
    // The emails went out at once (and were marked).
    for _ in 0..CHECKS {
        mail.next_message();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.kill9();
    let killed = Instant::now();
    hook.set(Mode::Up);
    let held: Vec<String> = hook.got().iter().map(|g| g.key.clone()).collect();

    let c = Proc::start(&cfg, &data);
    wait_for("the pages sent again", Duration::from_secs(30), || {
        hook.accepted().len() == CHECKS
    })
    .await;
    assert!(
        killed.elapsed() >= Duration::from_secs(3),
        "not before the lease ran out"
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    let all: Vec<String> = hook.got().iter().map(|g| g.key.clone()).collect();
    for key in &held {
        assert_eq!(
            all.iter().filter(|k| *k == key).count(),
            2,
            "{key}: the bounded duplicate is exactly one resend: {all:?}"
        );
    }
    assert_eq!(all.len(), 2 * CHECKS, "{all:?}");
    let incidents = get_json(c.addr, "/api/v1/incidents");
    let id = incidents["incidents"][0]["id"].as_i64().unwrap();
    let inc = get_json(c.addr, &format!("/api/v1/incidents/{id}"));
    let d = inc["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["contact"] == "hooks")
        .unwrap()
        .clone();
    assert_eq!(d["state"], "delivered");
    assert_eq!(d["attempts"], 2);
    // Email was delivered and marked before the kill: never sent again.
    mail.assert_nothing_delivered();
}
