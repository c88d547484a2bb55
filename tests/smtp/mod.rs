//! A real SMTP server for tests: aiosmtpd (`tests/support/smtp_server.py`,
//! Debian's `python3-aiosmtpd`, run by `/usr/bin/python3`) on 127.0.0.1.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub const PYTHON: &str = "/usr/bin/python3";
/// Bound on every wait for the server (start-up, a message).
pub const WAIT: Duration = Duration::from_secs(15);
/// The client's per-attempt timeout.
pub const ATTEMPT: Duration = Duration::from_secs(10);

/// An aiosmtpd child process; killed when dropped.
pub struct SmtpServer {
    child: Child,
    /// Held so the server sees EOF (and exits) if this process dies.
    _stdin: ChildStdin,
    pub port: u16,
    messages: mpsc::Receiver<Value>,
}

impl SmtpServer {
    pub fn start(args: &[&str]) -> SmtpServer {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_server.py");
        let mut child = Command::new(PYTHON)
            .arg(&script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {PYTHON} (apt-get install python3-aiosmtpd): {e}")
            });
        let stdin = child.stdin.take().expect("child stdin");
        let stdout = child.stdout.take().expect("child stdout");

        let (port_tx, port_rx) = mpsc::channel::<u16>();
        let (msg_tx, messages) = mpsc::channel::<Value>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(p) = line.strip_prefix("PORT ") {
                    if let Ok(p) = p.trim().parse() {
                        let _ = port_tx.send(p);
                    }
                    continue;
                }
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        let _ = msg_tx.send(v);
                    }
                    Err(e) => eprintln!("smtp_server.py printed {line:?}: {e}"),
                }
            }
        });
        let port = match port_rx.recv_timeout(WAIT) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "the SMTP test server did not start (is python3-aiosmtpd installed \
                     for {PYTHON}?): {status:?}"
                );
            }
        };
        SmtpServer {
            child,
            _stdin: stdin,
            port,
            messages,
        }
    }

    /// The next message the server accepted.
    pub fn next_message(&self) -> Value {
        self.messages
            .recv_timeout(WAIT)
            .expect("no message reached the SMTP server in time")
    }

    /// The next message if one arrives within `wait`.
    pub fn try_next(&self, wait: Duration) -> Option<Value> {
        self.messages.recv_timeout(wait).ok()
    }

    /// Asserts that no message arrived. The server reports a message before
    /// it answers the DATA, so after `send` returned a short wait suffices.
    pub fn assert_nothing_delivered(&self) {
        if let Ok(m) = self.messages.recv_timeout(Duration::from_millis(300)) {
            panic!("a message was delivered: {m}");
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
