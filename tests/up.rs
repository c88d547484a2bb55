//! `varde up` as a newcomer runs it: the built binary on a copy of the
//! repository's own probes/ and alert-rules/, the example checks green, a
//! broken check added by hand firing on the console and resolving when
//! fixed, Ctrl-C, and a restart that remembers. Also `varde healthcheck`,
//! the container image's HEALTHCHECK.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(40);

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP GET with a deadline: status and body, or `None` when
/// nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

fn get_json(port: u16, path: &str) -> Option<Value> {
    match get(port, path)? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

struct Ports {
    coordinator: u16,
    probe: u16,
    demo: u16,
}

/// Copies the repository's probes/*.toml and alert-rules/*.toml into
/// `dir`, pointed at `ports` and made quick (1s intervals), so that the
/// test runs the very files a newcomer gets.
fn copy_repo_config(dir: &Path, ports: &Ports) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sub in ["probes", "alert-rules"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for entry in std::fs::read_dir(repo.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if !(path.is_file() && path.extension().is_some_and(|e| e == "toml")) {
                continue;
            }
            let mut text = std::fs::read_to_string(&path).unwrap();
            if sub == "probes" {
                text = text
                    .replace(
                        "127.0.0.1:9480",
                        &format!("127.0.0.1:{}", ports.coordinator),
                    )
                    .replace("127.0.0.1:9490", &format!("127.0.0.1:{}", ports.probe))
                    .replace("127.0.0.1:9499", &format!("127.0.0.1:{}", ports.demo))
                    .replace("interval = \"15s\"", "interval = \"1s\"")
                    .replace("interval = \"10s\"", "interval = \"1s\"")
                    .replace("timeout = \"5s\"", "timeout = \"800ms\"")
                    .replace("timeout = \"3s\"", "timeout = \"800ms\"");
            }
            std::fs::write(dir.join(sub).join(path.file_name().unwrap()), text).unwrap();
        }
    }
    // The substitutions took: every check is local and quick.
    let demo = std::fs::read_to_string(dir.join("probes/demo.toml")).unwrap();
    assert!(
        demo.contains(&format!("127.0.0.1:{}/", ports.demo)),
        "{demo}"
    );
    let own = std::fs::read_to_string(dir.join("probes/varde.toml")).unwrap();
    assert!(own.contains(&format!("127.0.0.1:{}/healthz", ports.coordinator)));
    assert!(!own.contains("15s") && !demo.contains("interval = \"10s\""));
}

/// A running `varde up`; killed on drop.
struct Up {
    child: Child,
    stdout: mpsc::Receiver<String>,
    /// Every stdout line seen so far.
    seen: Vec<String>,
}

impl Up {
    fn start(config: &Path, data: &Path, ports: &Ports, log: &Path) -> Up {
        let mut child = Command::new(env!("CARGO_BIN_EXE_varde"))
            .arg("up")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{}", ports.coordinator)])
            .args(["--probe-listen", &format!("127.0.0.1:{}", ports.probe)])
            .args(["--demo-listen", &format!("127.0.0.1:{}", ports.demo)])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(File::create(log).unwrap())
            .spawn()
            .expect("start varde up");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Up {
            child,
            stdout: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line containing `needle`.
    fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .stdout
                .recv_timeout(left.min(Duration::from_millis(500)))
            {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {}
                Err(e) => panic!("no line with {needle:?} ({e:?}); stdout: {:?}", self.seen),
            }
        }
    }

    fn drain(&mut self) {
        while let Ok(line) = self.stdout.try_recv() {
            self.seen.push(line);
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

    /// The exit status, waiting at most `within`.
    fn exit_within(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "varde up did not exit in {within:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `pred` holds for the coordinator's answer at `path`.
fn wait_json(port: u16, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    let mut last = None;
    loop {
        if let Some(v) = get_json(port, path) {
            if pred(&v) {
                return v;
            }
            last = Some(v);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last {path}: {last:#?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

fn verdicts(status: &Value) -> Vec<(String, String)> {
    status["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["check"].as_str().unwrap_or("").to_owned(),
                c["verdict"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn broken_check(ports: &Ports, status: u16) -> String {
    format!(
        "[[check]]\nname = \"demo-broken\"\ntarget = \"http://127.0.0.1:{}/status/{status}\"\n\
         interval = \"1s\"\ntimeout = \"800ms\"\nlabels = {{ team = \"demo\" }}\n",
        ports.demo
    )
}

#[test]
fn up_runs_the_repository_examples_green_pages_a_broken_check_and_resumes() {
    let ports = Ports {
        coordinator: free_port(),
        probe: free_port(),
        demo: free_port(),
    };
    let config = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    copy_repo_config(config.path(), &ports);
    let mut up = Up::start(
        config.path(),
        data.path(),
        &ports,
        &logs.path().join("1.log"),
    );

    // Every example check turns UP: nothing in probes/ needs the internet.
    let status = wait_json(ports.coordinator, "/api/v1/status", "all checks up", |v| {
        let vs = verdicts(v);
        vs.len() >= 7 && vs.iter().all(|(_, verdict)| verdict == "up")
    });
    let names: Vec<String> = verdicts(&status).into_iter().map(|(n, _)| n).collect();
    for want in ["demo-home", "demo-port", "varde-coordinator-health"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    // The image's HEALTHCHECK against the live coordinator.
    let hc = Command::new(env!("CARGO_BIN_EXE_varde"))
        .args([
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{}/healthz", ports.coordinator),
        ])
        .status()
        .unwrap();
    assert!(hc.success());
    // The demo target and the probe answer where the banner says.
    assert_eq!(get(ports.demo, "/status/503").unwrap().0, 503);
    let metrics = get(ports.probe, "/metrics").unwrap().1;
    assert!(metrics.contains("probe_success"), "{metrics}");

    // A broken check, added by hand (hot reload): one page, on the console.
    let file = config.path().join("probes/broken.toml");
    std::fs::write(&file, broken_check(&ports, 500)).unwrap();
    let firing = up.wait_line("[FIRING] demo-broken");
    assert!(firing.contains("demo-down"), "{firing}");
    // Fixed: resolved, once.
    std::fs::write(&file, broken_check(&ports, 200)).unwrap();
    up.wait_line("[RESOLVED] demo-broken");
    thread::sleep(Duration::from_millis(500));
    up.drain();
    let pages: Vec<&String> = up.seen.iter().filter(|l| l.starts_with('[')).collect();
    assert_eq!(
        pages.len(),
        2,
        "only the broken check pages, firing then resolved: {:?}",
        up.seen
    );

    // Ctrl-C: a clean stop.
    up.signal("-INT");
    let exit = up.exit_within(Duration::from_secs(20));
    assert!(exit.success(), "{exit:?}");

    // The local token: private, and never printed.
    let token_path = data.path().join("up/probe.token");
    let token = std::fs::read_to_string(&token_path).unwrap();
    let token = token.trim();
    assert!(token.len() >= 32);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let log = std::fs::read_to_string(logs.path().join("1.log")).unwrap();
    assert!(log.contains("coordinator API"), "the banner: {log}");
    assert!(!log.contains(token), "the token was logged");
    assert!(!up.seen.iter().any(|l| l.contains(token)));
    drop(up);

    // Started again on the same data dir: the incident is remembered, and
    // the same token is accepted (the probe's results arrive).
    let mut up2 = Up::start(
        config.path(),
        data.path(),
        &ports,
        &logs.path().join("2.log"),
    );
    let incidents = wait_json(
        ports.coordinator,
        "/api/v1/incidents?check=demo-broken",
        "the old incident",
        |v| v["incidents"].as_array().is_some_and(|a| !a.is_empty()),
    );
    let list = incidents["incidents"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{incidents:#}");
    assert_eq!(list[0]["state"], "resolved", "{incidents:#}");
    let total = |v: &Value| {
        v["probes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["region"] == "local")
            .filter_map(|p| p["results_total"].as_u64())
            .sum::<u64>()
    };
    let before = total(&wait_json(
        ports.coordinator,
        "/api/v1/probes",
        "probes",
        |_| true,
    ));
    wait_json(
        ports.coordinator,
        "/api/v1/probes",
        "new results from the local probe",
        |v| total(v) > before,
    );
    up2.signal("-TERM");
    assert!(up2.exit_within(Duration::from_secs(20)).success());
}

#[test]
fn healthcheck_exits_0_on_2xx_and_1_when_refused() {
    let ok = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            for s in listener.incoming().take(4) {
                let Ok(mut s) = s else { continue };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
                );
            }
        });
        port
    };
    let run = |url: String| {
        Command::new(env!("CARGO_BIN_EXE_varde"))
            .args(["healthcheck", "--url", &url])
            .output()
            .unwrap()
    };
    let out = run(format!("http://127.0.0.1:{ok}/healthz"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The image sets no --url: a probe container names its port by env.
    let out = Command::new(env!("CARGO_BIN_EXE_varde"))
        .arg("healthcheck")
        .env(
            "VARDE_HEALTHCHECK_URL",
            format!("http://127.0.0.1:{ok}/healthz"),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let refused = free_port();
    let started = Instant::now();
    let out = run(format!("http://127.0.0.1:{refused}/healthz"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unhealthy"));
    assert!(started.elapsed() < Duration::from_secs(10));
}
