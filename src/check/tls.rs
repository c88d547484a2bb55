//! TLS facts and verification.
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TlsFacts {}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CertInfo {}
