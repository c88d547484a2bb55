//! The probe ↔ coordinator HTTP API schema, used by both sides.
//!
//! * `GET {CHECKS_PATH}?region=NAME` with `Authorization: Bearer TOKEN` and
//!   `If-None-Match` → `200` with a [`CheckList`] and an `ETag`, or `304`.
//! * `POST {RESULTS_PATH}` with a JSON [`ResultBatch`] and the bearer token
//!   → `200` with a [`BatchAck`]. Replays are idempotent by
//!   `(probe_id, seq)`: a record already stored counts as a duplicate.

use serde::{Deserialize, Serialize};

use crate::check::CheckResult;
use crate::probe::CheckDef;

/// Where a probe fetches its check list.
pub const CHECKS_PATH: &str = "/api/v1/checks";
/// Where a probe pushes result batches.
pub const RESULTS_PATH: &str = "/api/v1/results";

/// The checks a region should run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckList {
    pub checks: Vec<CheckDef>,
}

/// One check run, as reported by one probe.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResultRecord {
    /// The check's name.
    pub check: String,
    pub region: String,
    /// Stable identity of the probe process's spool (survives restarts).
    pub probe_id: String,
    /// Strictly increasing per `probe_id`, never reused, even across restarts.
    pub seq: u64,
    pub result: CheckResult,
}

/// Results pushed together, in sequence order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResultBatch {
    pub probe_id: String,
    pub region: String,
    /// The probe's varde version.
    pub version: String,
    pub results: Vec<ResultRecord>,
}

/// The coordinator's answer to a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAck {
    /// Records stored now.
    pub accepted: u64,
    /// Records already stored by an earlier (replayed) batch.
    pub duplicates: u64,
}
