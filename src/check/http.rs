//! Http check.

use serde::{Deserialize, Serialize};

use super::{Facts, Failure, Recorder, SpecError};

/// A Http check as written by a user. (Stub: being written.)
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpOptions {}

/// What a Http check saw.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HttpFacts {}

#[derive(Debug)]
pub(crate) struct HttpCheck {
    target: String,
}

impl HttpCheck {
    pub(crate) fn build(_o: &HttpOptions) -> Result<Self, SpecError> {
        Err(SpecError::new("kind", "http checks are not implemented yet"))
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    pub(crate) async fn run(&self, _rec: &mut Recorder, _facts: &mut Facts) -> Result<String, Failure> {
        unimplemented!()
    }
}
