//! Tcp check.

use serde::{Deserialize, Serialize};

use super::{Facts, Failure, Recorder, SpecError};

/// A Tcp check as written by a user. (Stub: being written.)
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpOptions {}

/// What a Tcp check saw.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TcpFacts {}

#[derive(Debug)]
pub(crate) struct TcpCheck {
    target: String,
}

impl TcpCheck {
    pub(crate) fn build(_o: &TcpOptions) -> Result<Self, SpecError> {
        Err(SpecError::new("kind", "tcp checks are not implemented yet"))
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    pub(crate) async fn run(&self, _rec: &mut Recorder, _facts: &mut Facts) -> Result<String, Failure> {
        unimplemented!()
    }
}
