//! `varde probe` and `varde validate` as an operator runs them: the built
//! binary, real signals (SIGHUP reload, SIGTERM shutdown) and exit codes.

mod std_http;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(15);

/// Answers every connection with 200 (at most `max` connections).
fn http_ok(max: usize) -> u16 {
    std_http::http_responder(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
        max,
    )
}

/// A plain HTTP GET with a deadline; the body.
fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

struct Probe {
    child: Child,
    addr: String,
    log: mpsc::Receiver<String>,
}

impl Probe {
    /// Starts `varde probe` on an ephemeral port and learns the port from its log.
    fn start(config: &Path, data: &Path) -> Probe {
        let mut child = Command::new(env!("CARGO_BIN_EXE_varde"))
            .args(["probe", "--listen", "127.0.0.1:0", "--region", "eu"])
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start varde probe");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + PATIENCE;
        let addr = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("varde probe logged its address");
            if let Some(rest) = line.split("listen=Some(").nth(1) {
                break rest.split(')').next().unwrap().to_owned();
            }
        };
        Probe {
            child,
            addr,
            log: rx,
        }
    }

    fn metrics(&self) -> String {
        get(&self.addr, "/metrics")
    }

    fn wait_metrics(&self, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let m = self.metrics();
            if pred(&m) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{m}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check(name: &str, port: u16) -> String {
    format!(
        "[[check]]\nname = \"{name}\"\ntarget = \"http://127.0.0.1:{port}/\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n"
    )
}

#[test]
fn sighup_reloads_a_change_the_file_watch_cannot_see() {
    let port = http_ok(10_000);
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let file = dir.path().join("checks.toml");
    std::fs::write(&file, check("aa", port)).unwrap();
    let probe = Probe::start(dir.path(), data.path());
    probe.wait_metrics("check aa", |m| m.contains("probe_success{check=\"aa\""));

    // Same size, same modification time: only SIGHUP can notice.
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    std::fs::write(&file, check("bb", port)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    thread::sleep(Duration::from_secs(3)); // more than the 2s file check
    assert!(
        !probe.metrics().contains("check=\"bb\""),
        "the unchanged fingerprint must not trigger a reload"
    );

    probe.signal("-HUP");
    probe.wait_metrics("bb replaces aa after SIGHUP", |m| {
        m.contains("probe_success{check=\"bb\"") && !m.contains("check=\"aa\"")
    });
}

#[test]
fn sigterm_shuts_down_cleanly_with_exit_0() {
    let port = http_ok(10_000);
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("checks.toml"), check("web", port)).unwrap();
    let mut probe = Probe::start(dir.path(), data.path());
    probe.wait_metrics("check web", |m| m.contains("probe_success{check=\"web\""));
    probe.signal("-TERM");
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(s) = probe.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "probe did not exit after SIGTERM"
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let log: Vec<String> = probe.log.try_iter().collect();
    assert!(log.iter().any(|l| l.contains("shutting down")), "{log:#?}");
}

#[test]
fn probe_refuses_to_start_with_a_bad_config_and_names_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[check]]\nname = \"x\"\ntarget = \"ftp://nope\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_varde"))
        .args(["probe", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.path())
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3:10:"), "{err}");
    assert!(err.contains("unsupported scheme"), "{err}");
}

#[test]
fn validate_reports_every_error_and_exits_2_or_accepts_the_examples() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        "[[check]]\nname = \"x\"\ntarget = \"http://a/\"\ninterval = \"5s\"\ntimeout = \"10s\"\n[[check]]\nname = \"x\"\ntarget = \"http://b/\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_varde"))
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a.toml:5:11:"), "{err}");
    assert!(err.contains("a.toml:7:8: duplicate check name"), "{err}");
    assert!(err.contains("2 error(s)"), "{err}");

    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_varde"))
        .arg("validate")
        .arg(repo)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

#[test]
fn validate_covers_alert_rules_next_to_probes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("probes")).unwrap();
    std::fs::create_dir(dir.path().join("alert-rules")).unwrap();
    std::fs::write(
        dir.path().join("probes/web.toml"),
        "[[check]]\nname = \"web\"\ntarget = \"http://127.0.0.1:1/\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("alert-rules/rules.toml"),
        "[[rule]]\nname = \"slow\"\nkind = \"latency\"\nthreshold = \"800ms\"\npercentile = 120\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_varde"))
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rules.toml:5:14:"), "{err}");
    assert!(err.contains("1 error(s)"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 checks"));
}
