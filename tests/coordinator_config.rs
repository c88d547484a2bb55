//! `coordinator.toml`: settings, tokens from files, the environment or
//! inline, and every error as file:line:column.

use std::path::Path;
use std::time::Duration;

use varde::coordinator::config::{self, Settings};

fn write(dir: &Path, text: &str) {
    std::fs::write(dir.join(config::FILE), text).unwrap();
}

fn errors(dir: &Path) -> Vec<String> {
    let e = config::load_settings(dir).expect_err("invalid");
    e.0.iter()
        .map(|e| e.to_string().replace(&format!("{}/", dir.display()), ""))
        .collect()
}

#[test]
fn settings_and_tokens_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("eu.token"), "  eu-token-from-a-file-0001\n").unwrap();
    write(
        dir.path(),
        r#"
[verdict]
fail_after = 3
recover_after = 1
stale_intervals = 2.5

[flapping]
changes = 10
window = "30m"

[retention]
results = "6h"
incidents = "30d"

[[probe]]
name = "eu-1"
region = "eu"
token_file = "eu.token"

[[probe]]
name = "any"
token = "inline-token-000000001"

[[api_token]]
name = "alice"
token = "alice-inline-token-0001"
"#,
    );
    let (auth, s, _) = config::load_settings(dir.path()).unwrap().unwrap();
    assert_eq!(s.fail_after.get(), 3);
    assert_eq!(s.recover_after.get(), 1);
    assert_eq!(s.stale_intervals, 2.5);
    assert_eq!(s.flap_changes, 10);
    assert_eq!(s.flap_window, Duration::from_secs(1800));
    assert_eq!(s.results_retention, Duration::from_secs(6 * 3600));
    assert_eq!(s.history_retention, Duration::from_secs(30 * 24 * 3600));
    let eu = auth.probe("eu-token-from-a-file-0001").unwrap();
    assert_eq!(
        (eu.name.as_str(), eu.region.as_deref()),
        ("eu-1", Some("eu"))
    );
    assert_eq!(auth.probe("inline-token-000000001").unwrap().name, "any");
    assert!(
        auth.probe("alice-inline-token-0001").is_none(),
        "API tokens are not probe tokens"
    );
    assert_eq!(auth.api("alice-inline-token-0001").unwrap().name, "alice");
    assert!(auth.api("alice-inline-token-000").is_none());
    assert!(auth.probe("").is_none());
    // Debug output names entries, never tokens.
    let debug = format!("{auth:?}");
    assert!(
        debug.contains("eu-1") && !debug.contains("eu-token"),
        "{debug}"
    );
}

/// `token_env`, through the binary (setting a variable in this process
/// would need `unsafe`): `varde validate` reads the token as the
/// coordinator would.
#[test]
fn token_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "[[api_token]]\nname = \"alice\"\ntoken_env = \"VARDE_TEST_TOKEN_ALICE\"\n",
    );
    std::fs::create_dir(dir.path().join("probes")).unwrap();
    let run = |env: Option<&str>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_varde"));
        c.arg("validate").arg(dir.path());
        c.env_remove("VARDE_TEST_TOKEN_ALICE");
        if let Some(v) = env {
            c.env("VARDE_TEST_TOKEN_ALICE", v);
        }
        c.output().unwrap()
    };
    let ok = run(Some("alice-token-from-env-0001"));
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("0 probe tokens, 1 API tokens: OK"));
    let bad = run(None);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("coordinator.toml:3:13: token_env: environment variable VARDE_TEST_TOKEN_ALICE is not set"),
        "{err}"
    );
    // The token itself never appears in output.
    let out = format!("{ok:?}");
    assert!(!out.contains("alice-token-from-env"), "{out}");
}

#[test]
fn absent_file_is_defaults() {
    let dir = tempfile::tempdir().unwrap();
    assert!(config::load_settings(dir.path()).unwrap().is_none());
    assert_eq!(Settings::default().fail_after.get(), 2);
}

#[test]
fn every_error_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        r#"[verdict]
fail_after = 0
stale_intervals = 0.5
[flapping]
changes = 1
window = "soon"
[[probe]]
name = "a"
token = "short"
[[probe]]
name = "a"
token = "another-token-00000001"
[[probe]]
name = "b"
token_file = "missing.token"
[[probe]]
name = "c"
token_env = "VARDE_TEST_SURELY_UNSET_VARIABLE"
[[probe]]
name = "d"
token = "same-token-0000000001"
[[api_token]]
name = "e"
token = "same-token-0000000001"
[[api_token]]
name = "f"
token = "x-token-000000000001"
token_env = "X"
"#,
    );
    let got = errors(dir.path());
    let want = [
        "coordinator.toml:2:14: fail_after: must be at least 1",
        "coordinator.toml:3:19: stale_intervals: expected a number from 1 to 100",
        "coordinator.toml:5:11: changes: must be at least 2 (a check that goes down and comes back once is not flapping)",
        "coordinator.toml:6:10: window: invalid duration \"soon\": expected number at 0",
        "coordinator.toml:9:9: token of probe \"a\": shorter than 16 characters",
        "coordinator.toml:11:8: name: duplicate probe name \"a\"",
        "coordinator.toml:15:14: token_file: cannot read missing.token: No such file or directory (os error 2)",
        "coordinator.toml:18:13: token_env: environment variable VARDE_TEST_SURELY_UNSET_VARIABLE is not set",
        "coordinator.toml:24:9: token of api_token \"e\": the same token is used by another entry; give each its own",
        "coordinator.toml:25:1: api_token \"f\": give exactly one of token_file, token_env or token",
    ];
    assert_eq!(got, want);
}

#[test]
fn history_retention_defaults_to_180_days_and_is_at_least_a_day() {
    assert_eq!(
        Settings::default().history_retention,
        Duration::from_secs(180 * 24 * 3600)
    );
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "[retention]\nincidents = \"12h\"\n");
    assert_eq!(
        errors(dir.path()),
        ["coordinator.toml:2:13: incidents: must be at least 1d"]
    );
    write(dir.path(), "[retention]\nincidents = \"0s\"\n");
    assert_eq!(
        errors(dir.path()),
        ["coordinator.toml:2:13: incidents: must be longer than zero"]
    );
}

#[test]
fn unknown_keys_and_bad_toml() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "[verdict]\nfail_afte = 2\n");
    let got = errors(dir.path());
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("coordinator.toml:2:1: unknown field `fail_afte`"),
        "{got:?}"
    );
    write(dir.path(), "[[probe]\n");
    let got = errors(dir.path());
    assert!(got[0].starts_with("coordinator.toml:1:"), "{got:?}");
}
