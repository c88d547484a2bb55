//! A configured check: what `probes/*.toml` defines and what the
//! coordinator serves to probes (as JSON, via [`crate::wire`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check::{Check, CheckKind, CheckSpec, SpecError, duration};

/// One check as the scheduler runs it: a validated definition with its
/// schedule and labels. Equality is what a reload compares: a check whose
/// definition changed in any way is restarted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckDef {
    /// Unique across all files.
    pub name: String,
    /// The target as written (a URL of `check::target`), used as the
    /// `target` label.
    pub target: String,
    #[serde(with = "duration")]
    pub interval: Duration,
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// The check's own labels (team, service, ...), exported on metrics.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Regions the check runs in; empty means all.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Names of checks this one depends on (used by the coordinator).
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The kind and its options.
    pub spec: CheckSpec,
}

impl CheckDef {
    pub fn kind(&self) -> CheckKind {
        match &self.spec {
            CheckSpec::Http(_) => CheckKind::Http,
            CheckSpec::Dns(_) => CheckKind::Dns,
            CheckSpec::Tcp(_) => CheckKind::Tcp,
        }
    }

    /// Whether the check runs in `region`.
    pub fn runs_in(&self, region: &str) -> bool {
        self.regions.is_empty() || self.regions.iter().any(|r| r == region)
    }

    /// Prepares the check for running (reads TLS files, compiles regexes).
    pub fn build(&self) -> Result<Check, SpecError> {
        self.spec.build(self.timeout)
    }
}
