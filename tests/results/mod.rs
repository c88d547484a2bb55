//! A plain check result, for tests that feed the coordinator.

use std::time::Duration;

use chrono::{DateTime, Utc};
use varde::check::{CheckKind, CheckResult, Phases, Reason};

/// An HTTP result started at `started_at`: a success, or a refused
/// connection.
pub fn result(ok: bool, started_at: DateTime<Utc>) -> CheckResult {
    CheckResult {
        kind: CheckKind::Http,
        target: "http://127.0.0.1:9/".into(),
        success: ok,
        reason: (!ok).then_some(Reason::ConnectRefused),
        message: String::new(),
        started_at,
        duration: Duration::from_millis(20),
        phases: Phases::default(),
        tls: None,
        http: None,
        dns: None,
        tcp: None,
    }
}
