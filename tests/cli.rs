//! `varde check` as a user runs it: the built binary against real sockets
//! on 127.0.0.1, asserting on its output and exit status.

mod std_http;

use std_http::http_responder;

use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Output};

const OK_RESPONSE: &str = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nhello varde\n";
const NOT_FOUND: &str = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

fn varde(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_varde"))
        .args(args)
        .output()
        .expect("run varde")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn successful_http_check_prints_phase_table_and_exits_0() {
    let port = http_responder(OK_RESPONSE, 1);
    let out = varde(&["check", &format!("http://127.0.0.1:{port}/health")]);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {text}\nstderr: {}",
        stderr(&out)
    );
    for phase in [
        "resolve",
        "connect",
        "tls",
        "processing",
        "transfer",
        "total",
    ] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(phase) && l.ends_with(" ms")),
            "no {phase} row in:\n{text}"
        );
    }
    assert!(text.contains("HTTP  HTTP/1.1 200"), "{text}");
    assert!(text.contains("\nOK    HTTP/1.1 200 OK, 12 bytes"), "{text}");
}

#[test]
fn json_output_has_stable_fields() {
    let port = http_responder(OK_RESPONSE, 1);
    let out = varde(&["check", &format!("http://127.0.0.1:{port}/"), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["success"], true);
    assert!(v["reason"].is_null());
    assert!(v["message"].as_str().unwrap().contains("200"));
    for phase in ["resolve", "connect", "tls", "processing", "transfer"] {
        assert!(v["phases"][phase].is_f64(), "phases.{phase} missing: {v}");
    }
    assert_eq!(v["http"]["status"], 200);
    assert_eq!(v["http"]["version"], "HTTP/1.1");
    assert_eq!(v["http"]["body_bytes"], 12);
    assert!(v.get("tls").is_none(), "plain HTTP has no tls facts: {v}");
}

#[test]
fn failed_check_exits_1_with_reason() {
    let port = http_responder(NOT_FOUND, 2);
    let out = varde(&["check", &format!("http://127.0.0.1:{port}/missing")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("FAIL  http_status: status 404 is not valid (expected 2xx)"),
        "{}",
        stdout(&out)
    );
    // The same response is fine when 404 is declared valid.
    let out = varde(&[
        "check",
        &format!("http://127.0.0.1:{port}/missing"),
        "--status",
        "404",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn refused_connection_is_connect_refused() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = varde(&["check", &format!("http://127.0.0.1:{port}/"), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["success"], false);
    assert_eq!(v["reason"], "connect_refused");
}

#[test]
fn body_assertion_failure_names_the_text() {
    let port = http_responder(OK_RESPONSE, 1);
    let out = varde(&[
        "check",
        &format!("http://127.0.0.1:{port}/"),
        "--body-contains",
        "goodbye",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("FAIL  http_body_mismatch: body does not contain \"goodbye\""),
        "{}",
        stdout(&out)
    );
}

#[test]
fn tcp_send_expect_matches_banner() {
    let port = http_responder(OK_RESPONSE, 1);
    let out = varde(&[
        "check",
        &format!("tcp://127.0.0.1:{port}"),
        "--send",
        "GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n",
        "--expect",
        "^HTTP/1\\.1 200",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("banner         HTTP/1.1 200 OK"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn dns_server_that_never_answers_times_out_with_exit_1() {
    // Bound and never read: datagrams queue and are never answered.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let out = varde(&[
        "check",
        &format!("dns://127.0.0.1:{port}/example.com?type=MX"),
        "--timeout",
        "300ms",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reason"], "dns_timeout", "{v}");
    assert_eq!(v["dns"]["query_type"], "MX", "{v}");
    drop(silent);
}

#[test]
fn usage_errors_exit_2_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["check", "example.com"], "needs a scheme"),
        (
            &["check", "ftp://example.com/"],
            "unsupported scheme \"ftp\"",
        ),
        (
            &["check", "tcp://127.0.0.1:1", "--body-contains", "x"],
            "--body-contains applies to http:// and https:// targets only",
        ),
        (
            &["check", "http://127.0.0.1:1/", "--body-regex", "("],
            "invalid body_regex: invalid regex \"(\"",
        ),
        (
            &["check", "http://127.0.0.1:1/", "--timeout", "soon"],
            "expected e.g.",
        ),
        (&["check", "dns://127.0.0.1/"], "needs a name"),
        (
            &["check", "dns://127.0.0.1/x", "--type", "BOGUS"],
            "query_type",
        ),
        (
            &["check", "http://127.0.0.1:1/", "--no-such-flag"],
            "--no-such-flag",
        ),
    ];
    for (args, needle) in cases {
        let out = varde(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(needle),
            "{args:?}: stderr was {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    }
}
