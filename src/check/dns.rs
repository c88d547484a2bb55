//! DNS check: one query to a given server over UDP or TCP, with assertions.

use serde::{Deserialize, Serialize};

use super::{Facts, Failure, Recorder, SpecError};

/// A DNS check as written by a user. (Stub: being written.)
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsOptions {}

/// What a DNS check saw.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DnsFacts {}

#[derive(Debug)]
pub(crate) struct DnsCheck {
    target: String,
}

impl DnsCheck {
    pub(crate) fn build(_o: &DnsOptions) -> Result<Self, SpecError> {
        Err(SpecError::new("kind", "dns checks are not implemented yet"))
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    pub(crate) async fn run(&self, _rec: &mut Recorder, _facts: &mut Facts) -> Result<String, Failure> {
        unimplemented!()
    }
}
