//! A small client of the coordinator's HTTP API, for the CLI (`varde
//! oncall override ...`). JSON in and out, a bearer token, a timeout on
//! every request, a cap on response bodies; https trusts the webpki roots
//! plus an optional private CA.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::resolve::HostResolver;

/// Whole-request timeout.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read.
const MAX_BODY: usize = 4 << 20;

/// A coordinator API client.
pub struct ApiClient {
    base: url::Url,
    token: Option<String>,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector<HostResolver>>, Full<Bytes>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ApiClient {
    /// A client of the coordinator at `base` (http or https).
    pub fn new(
        base: url::Url,
        token: Option<String>,
        ca_file: Option<&Path>,
    ) -> Result<ApiClient, String> {
        if !matches!(base.scheme(), "http" | "https") {
            return Err(format!("{base}: expected an http:// or https:// URL"));
        }
        let mut tls = crate::probe::push::tls_config(ca_file).map_err(|e| e.to_string())?;
        // The connector sets ALPN itself (and refuses a config that has it).
        tls.alpn_protocols.clear();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(crate::resolve::http_connector(TIMEOUT));
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(ApiClient {
            base,
            token,
            client,
        })
    }

    /// `method path` with an optional JSON body; the status and the JSON
    /// answer (`null` for an empty one).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), String> {
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| format!("{path}: {e}"))?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header("user-agent", concat!("varde/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(b).map_err(|e| e.to_string())?)
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let host = self.base.host_str().unwrap_or("?").to_owned();
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("cannot reach the coordinator at {host}: {e}"))?;
            let status = resp.status().as_u16();
            let bytes = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            let value = if bytes.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
                })
            };
            Ok((status, value))
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| format!("the coordinator at {host} did not answer within 30s"))?
    }
}
