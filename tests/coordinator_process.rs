//! A real `varde coordinator` process killed with SIGKILL in the middle of
//! a stream of result batches, restarted on the same data dir, and sent the
//! whole stream again (what probes replaying their spools do): it ends in
//! exactly the state of a coordinator that was never killed — every result
//! stored once, one incident per failing check, one firing notification
//! each, and one resolved notification after recovery.

mod results;

mod std_http;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use results::result;
use serde_json::Value;
use varde::wire::{ResultBatch, ResultRecord};

const TOKEN: &str = "process-test-token-0123456789";
const REGIONS: [&str; 3] = ["eu", "us", "ap"];
const CHECKS: usize = 5;
/// Checks c0..c2 fail everywhere; c3, c4 succeed.
const FAILING: usize = 3;

fn write_config(dir: &Path) {
    std::fs::create_dir_all(dir.join("probes")).unwrap();
    std::fs::create_dir_all(dir.join("alert-rules")).unwrap();
    let mut checks = String::new();
    for i in 0..CHECKS {
        checks += &format!(
            "[[check]]\nname = \"c{i}\"\ntarget = \"http://127.0.0.1:9/{i}\"\ninterval = \"30s\"\n\n"
        );
    }
    std::fs::write(dir.join("probes/checks.toml"), checks).unwrap();
    std::fs::write(
        dir.join("alert-rules/rules.toml"),
        "[[rule]]\nname = \"down\"\nkind = \"down\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("coordinator.toml"),
        format!("[[probe]]\nname = \"all\"\ntoken = \"{TOKEN}\"\n"),
    )
    .unwrap();
}

struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Proc {
    fn start(config: &Path, data: &Path) -> Proc {
        Self::start_at(config, data, "127.0.0.1:0")
    }

    fn start_at(config: &Path, data: &Path, listen: &str) -> Proc {
        Self::spawn(
            Command::new(env!("CARGO_BIN_EXE_varde"))
                .args(["coordinator", "--listen", listen, "--config"])
                .arg(config)
                .arg("--data-dir")
                .arg(data),
        )
    }

    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
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
            .expect("coordinator prints its address")
            .parse()
            .unwrap();
        Proc { child, addr }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; `None` if the connection failed or broke.
fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: c\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some((status, raw[at..].to_vec()))
}

fn get(addr: SocketAddr, path: &str) -> Value {
    let (s, b) = http(addr, "GET", path, b"").expect("GET works");
    assert_eq!(s, 200, "{path}: {}", String::from_utf8_lossy(&b));
    serde_json::from_slice(&b).unwrap()
}

/// `rounds` batches per region, each with one result per check, all
/// started within the last 40 s of `now` (so every region is fresh).
fn stream(now: DateTime<Utc>, rounds: u64, first_seq: u64, ok_all: bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for round in 0..rounds {
        for region in REGIONS {
            let probe_id = format!("probe-{region}");
            let results = (0..CHECKS)
                .map(|i| {
                    let seq = first_seq + round * CHECKS as u64 + i as u64;
                    let at = now - TimeDelta::seconds(40)
                        + TimeDelta::milliseconds((first_seq + round) as i64 * 10);
                    ResultRecord {
                        check: format!("c{i}"),
                        region: region.into(),
                        probe_id: probe_id.clone(),
                        seq,
                        result: result(ok_all || i >= FAILING, at),
                    }
                })
                .collect();
            let b = ResultBatch {
                probe_id,
                region: region.into(),
                version: "test".into(),
                results,
            };
            out.push(serde_json::to_vec(&b).unwrap());
        }
    }
    out
}

/// Posts every batch, retrying each until acknowledged.
fn post_all(addr: SocketAddr, batches: &[Vec<u8>]) {
    for b in batches {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match http(addr, "POST", "/api/v1/results", b) {
                Some((200, _)) => break,
                other => {
                    assert!(Instant::now() < deadline, "batch not accepted: {other:?}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// What must be identical between the killed and the never-killed run.
fn summary(addr: SocketAddr) -> Value {
    let probes = get(addr, "/api/v1/probes");
    let mut totals: Vec<(String, u64)> = probes["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["probe_id"].as_str().unwrap().to_owned(),
                p["results_total"].as_u64().unwrap(),
            )
        })
        .collect();
    totals.sort();
    let incidents = get(addr, "/api/v1/incidents?limit=1000");
    let mut per_incident = Vec::new();
    for i in incidents["incidents"].as_array().unwrap() {
        let full = get(addr, &format!("/api/v1/incidents/{}", i["id"]));
        let kinds: Vec<String> = full["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["kind"].as_str().unwrap().to_owned())
            .collect();
        per_incident.push(serde_json::json!({
            "check": i["check"], "state": i["state"], "rule": i["rule"], "notifications": kinds,
        }));
    }
    per_incident.sort_by_key(|v| v["check"].as_str().unwrap_or("").to_owned());
    let status = get(addr, "/api/v1/status");
    let verdicts: Vec<(String, String)> = status["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_owned(),
                c["verdict"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    serde_json::json!({ "results": totals, "incidents": per_incident, "verdicts": verdicts })
}

#[test]
fn sigkill_mid_stream_then_replay_matches_a_run_that_was_never_killed() {
    let now = Utc::now();
    let down = stream(now, 200, 1, false);
    let up = stream(now, 4, 1 + 200 * CHECKS as u64, true);

    // Reference: never killed.
    let reference = {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path());
        let p = Proc::start(dir.path(), &dir.path().join("data"));
        post_all(p.addr, &down);
        let mid = summary(p.addr);
        post_all(p.addr, &up);
        let end = summary(p.addr);
        (mid, end)
    };
    assert_eq!(reference.0["incidents"].as_array().unwrap().len(), FAILING);

    // Killed mid-stream, three times, each restart replaying everything.
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let data = dir.path().join("data");
    let mut posted = Vec::new();
    for kill_after in [
        Duration::from_millis(150),
        Duration::from_millis(400),
        Duration::from_millis(50),
    ] {
        let p = Proc::start(dir.path(), &data);
        let addr = p.addr;
        let feeder = {
            let down = down.clone();
            std::thread::spawn(move || {
                // Stops at the first failure: the process is gone.
                let mut n = 0;
                for b in &down {
                    if !matches!(http(addr, "POST", "/api/v1/results", b), Some((200, _))) {
                        break;
                    }
                    n += 1;
                }
                n
            })
        };
        std::thread::sleep(kill_after);
        p.kill9();
        posted.push(feeder.join().unwrap());
    }
    // The kills landed mid-stream (at least one of them; the machine's
    // speed decides the exact points).
    assert!(
        posted.iter().any(|&n| n > 0 && n < down.len()),
        "batches acknowledged before each kill: {posted:?} of {}",
        down.len()
    );
    let p = Proc::start(dir.path(), &data);
    post_all(p.addr, &down);
    assert_eq!(summary(p.addr), reference.0, "after the replay");
    post_all(p.addr, &up);
    assert_eq!(summary(p.addr), reference.1, "after recovery");
    let end = &reference.1["incidents"];
    for i in end.as_array().unwrap() {
        assert_eq!(i["state"], "resolved");
        assert_eq!(
            i["notifications"],
            serde_json::json!(["firing", "resolved"])
        );
    }
}

// === a fleet: real probes pushing to a real coordinator ===

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn open_incidents(addr: SocketAddr) -> Vec<Value> {
    match http(addr, "GET", "/api/v1/incidents?state=open", b"") {
        Some((200, b)) => serde_json::from_slice::<Value>(&b).unwrap()["incidents"]
            .as_array()
            .unwrap()
            .clone(),
        _ => Vec::new(),
    }
}

#[test]
fn probes_push_to_the_coordinator_which_survives_sigkill_without_a_second_page() {
    let up_port = std_http::http_responder(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
        100_000,
    );
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_port = refused.local_addr().unwrap().port();
    drop(refused);

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path();
    std::fs::create_dir_all(cfg.join("probes")).unwrap();
    std::fs::create_dir_all(cfg.join("alert-rules")).unwrap();
    std::fs::write(
        cfg.join("probes/checks.toml"),
        format!(
            "[[check]]\nname = \"web\"\ntarget = \"http://127.0.0.1:{up_port}/\"\ninterval = \"1s\"\n\n\
             [[check]]\nname = \"gone\"\ntarget = \"http://127.0.0.1:{down_port}/\"\ninterval = \"1s\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        cfg.join("alert-rules/rules.toml"),
        "[[rule]]\nname = \"down\"\nkind = \"down\"\nquorum = \"all\"\n",
    )
    .unwrap();
    for region in ["eu", "us"] {
        std::fs::write(
            cfg.join(format!("{region}.token")),
            format!("{region}-fleet-token-0123456789\n"),
        )
        .unwrap();
    }
    std::fs::write(
        cfg.join("coordinator.toml"),
        "[[probe]]\nname = \"eu\"\nregion = \"eu\"\ntoken_file = \"eu.token\"\n\
         [[probe]]\nname = \"us\"\nregion = \"us\"\ntoken_file = \"us.token\"\n",
    )
    .unwrap();
    let data = cfg.join("coordinator-data");
    let coordinator = Proc::start(cfg, &data);
    let addr = coordinator.addr;
    let probes: Vec<Proc> = ["eu", "us"]
        .into_iter()
        .map(|region| {
            Proc::spawn(
                Command::new(env!("CARGO_BIN_EXE_varde"))
                    .args(["probe", "--listen", "127.0.0.1:0", "--poll-interval", "1s"])
                    .args(["--region", region])
                    .arg("--coordinator")
                    .arg(format!("http://{addr}/"))
                    .arg("--token-file")
                    .arg(cfg.join(format!("{region}.token")))
                    .arg("--data-dir")
                    .arg(cfg.join(format!("probe-{region}"))),
            )
        })
        .collect();

    wait_for("one incident for `gone`", || {
        let open = open_incidents(addr);
        open.len() == 1 && open[0]["check"] == "gone"
    });
    wait_for("`web` up in both regions", || {
        let s = get(addr, "/api/v1/status/web");
        s["check"]["verdict"] == "up"
            && s["check"]["regions"]["eu"]["state"] == "up"
            && s["check"]["regions"]["us"]["state"] == "up"
    });
    let id = open_incidents(addr)[0]["id"].clone();

    // SIGKILL the coordinator; the probes spool and keep retrying.
    coordinator.kill9();
    std::thread::sleep(Duration::from_secs(3));
    let coordinator = Proc::start_at(cfg, &data, &addr.to_string());
    assert_eq!(coordinator.addr, addr);
    // The probes' spooled results arrive; still one incident, one page.
    wait_for("results from both regions again", || {
        let s = get(addr, "/api/v1/probes");
        s["probes"].as_array().is_some_and(|p| {
            p.len() == 2
                && p.iter()
                    .all(|p| p["seconds_since_last_seen"].as_f64().unwrap_or(99.0) < 2.0)
        })
    });
    std::thread::sleep(Duration::from_secs(2));
    let open = open_incidents(addr);
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(open[0]["id"], id);
    let full = get(addr, &format!("/api/v1/incidents/{id}"));
    let kinds: Vec<&str> = full["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["firing"]);
    let all = get(addr, "/api/v1/incidents?limit=100");
    assert_eq!(all["incidents"].as_array().unwrap().len(), 1, "{all:#}");
    drop(probes);
    drop(coordinator);
}
