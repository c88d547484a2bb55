//! HTTP(S) check on its own connector: resolve → TCP → TLS → hyper client
//! connection (HTTP/1.1, or HTTP/2 via ALPN), timing every phase.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use regex::bytes::Regex;
use serde::{Deserialize, Serialize};
use url::Url;

use super::io::{Framing, IoTimes, Stream, TimedIo, snapshot};
use super::net::Net;
use super::tls::{TlsClient, late_tls_failure, tls_rejected};
use super::{Facts, Failure, NetOptions, Phase, Reason, Recorder, SpecError, TlsOptions};

/// Default cap on the response body a check reads (10 MiB).
pub const DEFAULT_BODY_LIMIT: u64 = 10 * 1024 * 1024;
/// Default number of redirects followed.
pub const DEFAULT_MAX_REDIRECTS: u32 = 10;

/// A string that never shows in `Debug` output or logs.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// HTTP protocol to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpVersion {
    /// HTTP/2 when the server offers it via ALPN, else HTTP/1.1 (plain
    /// `http://` always uses HTTP/1.1).
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only (via ALPN for https, prior knowledge for http).
    Http2,
}

/// A header assertion: the header must be present and match `regex`
/// (any of its values), unless `allow_missing`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    pub regex: String,
    #[serde(default)]
    pub allow_missing: bool,
}

/// HTTP basic credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

/// An HTTP(S) check as written by a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpOptions {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Request method (default GET).
    pub method: String,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Request body.
    pub body: Option<String>,
    /// Valid status codes: "200", "2xx", "200-399". Empty means 2xx.
    pub valid_status: Vec<String>,
    /// Each string must occur in the body.
    pub body_contains: Vec<String>,
    /// Each regex must match the body.
    pub body_regex: Vec<String>,
    /// No regex here may match the body.
    pub body_not_regex: Vec<String>,
    /// Header assertions.
    pub header_match: Vec<HeaderMatch>,
    /// Follow 3xx redirects (default true).
    pub follow_redirects: bool,
    /// Maximum redirects followed (default 10).
    pub max_redirects: u32,
    /// Maximum body bytes read; more fails with `http_body_too_large`.
    pub body_limit: u64,
    pub http_version: HttpVersion,
    pub basic_auth: Option<BasicAuth>,
    pub bearer_token: Option<Secret>,
    pub net: NetOptions,
    pub tls: TlsOptions,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            url: String::new(),
            method: "GET".into(),
            headers: BTreeMap::new(),
            body: None,
            valid_status: Vec::new(),
            body_contains: Vec::new(),
            body_regex: Vec::new(),
            body_not_regex: Vec::new(),
            header_match: Vec::new(),
            follow_redirects: true,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            body_limit: DEFAULT_BODY_LIMIT,
            http_version: HttpVersion::Auto,
            basic_auth: None,
            bearer_token: None,
            net: NetOptions::default(),
            tls: TlsOptions::default(),
        }
    }
}

/// What an HTTP check saw (of the last request, except `redirects`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpFacts {
    /// Status of the last response.
    pub status: Option<u16>,
    /// "HTTP/1.1" or "HTTP/2".
    pub version: Option<String>,
    /// URL of the last request.
    pub final_url: String,
    /// Redirects followed.
    pub redirects: u32,
    /// Address connected to for the last request.
    pub remote_addr: Option<String>,
    /// `Content-Length` of the last response, if sent.
    pub content_length: Option<u64>,
    /// Body bytes read from the last response.
    pub body_bytes: u64,
    /// Credentials were configured but not sent because TLS verification
    /// failed (insecure mode) or a redirect left the original origin.
    pub credentials_withheld: bool,
}

/// Header size cap for responses (HTTP/1.1 buffer and HTTP/2 header list).
const MAX_HEADER_BYTES: usize = 64 * 1024;

const USER_AGENT: &str = concat!("varde/", env!("CARGO_PKG_VERSION"));

/// A built HTTP check: URL parsed, regexes compiled, TLS material loaded.
#[derive(Debug)]
pub(crate) struct HttpCheck {
    target: String,
    url: Url,
    method: Method,
    headers: HeaderMap,
    /// Header values that authenticate us; withheld from unverified peers.
    credentials: HeaderMap,
    body: Bytes,
    valid_status: Vec<(u16, u16)>,
    body_contains: Vec<(String, Regex)>,
    body_regex: Vec<(String, Regex)>,
    body_not_regex: Vec<(String, Regex)>,
    header_match: Vec<(HeaderName, String, regex::Regex, bool)>,
    follow_redirects: bool,
    max_redirects: u32,
    body_limit: u64,
    version: HttpVersion,
    net: Net,
    tls: TlsClient,
}

/// Headers that carry credentials when set by the user.
fn is_credential_header(name: &HeaderName) -> bool {
    name == header::AUTHORIZATION || name == header::PROXY_AUTHORIZATION || name == header::COOKIE
}

fn compile_all(
    field: &str,
    pats: &[String],
    escape: bool,
) -> Result<Vec<(String, Regex)>, SpecError> {
    pats.iter()
        .map(|p| {
            let src = if escape { regex::escape(p) } else { p.clone() };
            Regex::new(&src)
                .map(|r| (p.clone(), r))
                .map_err(|e| SpecError::new(field, format!("invalid regex {p:?}: {e}")))
        })
        .collect()
}

/// Parses "200", "2xx" or "200-399".
fn parse_status_range(s: &str) -> Result<(u16, u16), String> {
    let s = s.trim();
    let bad = || format!("expected a status like \"200\", \"2xx\" or \"200-399\", got {s:?}");
    let code = |t: &str| -> Result<u16, String> {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(bad)
    };
    if let Some(c) = s.strip_suffix("xx").or_else(|| s.strip_suffix("XX")) {
        let d: u16 = c
            .parse()
            .ok()
            .filter(|d| (1..=5).contains(d))
            .ok_or_else(bad)?;
        return Ok((d * 100, d * 100 + 99));
    }
    if let Some((a, b)) = s.split_once('-') {
        let (a, b) = (code(a)?, code(b)?);
        if a > b {
            return Err(bad());
        }
        return Ok((a, b));
    }
    let c = code(s)?;
    Ok((c, c))
}

impl HttpCheck {
    pub(crate) fn build(o: &HttpOptions) -> Result<Self, SpecError> {
        let url =
            Url::parse(&o.url).map_err(|e| SpecError::new("url", format!("{e}: {:?}", o.url)))?;
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(SpecError::new(
                    "url",
                    format!("scheme must be http or https, got {other:?}"),
                ));
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(SpecError::new("url", "missing host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(SpecError::new(
                "url",
                "credentials in the URL are not allowed; use basic_auth",
            ));
        }
        let method = Method::from_bytes(o.method.as_bytes())
            .map_err(|_| SpecError::new("method", format!("invalid method {:?}", o.method)))?;
        let mut headers = HeaderMap::new();
        let mut credentials = HeaderMap::new();
        for (k, v) in &o.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| SpecError::new("headers", format!("invalid header name {k:?}")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| SpecError::new("headers", format!("invalid value for header {k}")))?;
            if is_credential_header(&name) {
                credentials.append(name, value);
            } else {
                headers.append(name, value);
            }
        }
        if let Some(b) = &o.basic_auth {
            use base64_engine::encode;
            let v = format!(
                "Basic {}",
                encode(format!("{}:{}", b.username, b.password.0).as_bytes())
            );
            let mut v = HeaderValue::from_str(&v).map_err(|_| {
                SpecError::new("basic_auth", "username/password not valid in a header")
            })?;
            v.set_sensitive(true);
            credentials.insert(header::AUTHORIZATION, v);
        }
        if let Some(t) = &o.bearer_token {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", t.0))
                .map_err(|_| SpecError::new("bearer_token", "not valid in a header"))?;
            v.set_sensitive(true);
            credentials.insert(header::AUTHORIZATION, v);
        }
        for v in credentials.values_mut() {
            v.set_sensitive(true);
        }
        let valid_status = o
            .valid_status
            .iter()
            .map(|s| parse_status_range(s).map_err(|m| SpecError::new("valid_status", m)))
            .collect::<Result<Vec<_>, _>>()?;
        let header_match = o
            .header_match
            .iter()
            .map(|m| {
                let name = HeaderName::from_bytes(m.name.as_bytes()).map_err(|_| {
                    SpecError::new("header_match", format!("invalid header name {:?}", m.name))
                })?;
                let re = regex::Regex::new(&m.regex).map_err(|e| {
                    SpecError::new("header_match", format!("invalid regex {:?}: {e}", m.regex))
                })?;
                Ok((name, m.regex.clone(), re, m.allow_missing))
            })
            .collect::<Result<Vec<_>, SpecError>>()?;
        if o.body_limit == 0 {
            return Err(SpecError::new("body_limit", "must be greater than zero"));
        }
        Ok(Self {
            target: o.url.clone(),
            method,
            headers,
            credentials,
            body: Bytes::from(o.body.clone().unwrap_or_default()),
            valid_status,
            body_contains: compile_all("body_contains", &o.body_contains, true)?,
            body_regex: compile_all("body_regex", &o.body_regex, false)?,
            body_not_regex: compile_all("body_not_regex", &o.body_not_regex, false)?,
            header_match,
            follow_redirects: o.follow_redirects,
            max_redirects: o.max_redirects,
            body_limit: o.body_limit,
            version: o.http_version,
            net: Net::build(&o.net)?,
            tls: TlsClient::build(&o.tls, "tls")?,
            url,
        })
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    fn needs_body(&self) -> bool {
        !(self.body_contains.is_empty()
            && self.body_regex.is_empty()
            && self.body_not_regex.is_empty())
    }

    fn status_ok(&self, s: StatusCode) -> bool {
        let c = s.as_u16();
        if self.valid_status.is_empty() {
            return s.is_success();
        }
        self.valid_status
            .iter()
            .any(|(a, b)| (*a..=*b).contains(&c))
    }

    pub(crate) async fn run(
        &self,
        rec: &mut Recorder,
        facts: &mut Facts,
    ) -> Result<String, Failure> {
        let mut url = self.url.clone();
        let mut method = self.method.clone();
        let mut body = self.body.clone();
        let mut visited: HashSet<(Method, String)> = HashSet::new();
        let mut expiring: Option<Failure> = None;
        // Facts are written into `facts` as they are learned, so a deadline
        // that cancels this future mid-exchange still reports what was seen.
        facts.http = Some(HttpFacts::default());
        loop {
            visited.insert((method.clone(), url.to_string()));
            http_facts(facts).final_url = url.to_string();
            let send_credentials = same_origin(&url, &self.url);
            let (status, headers, bytes) = self
                .exchange(&url, &method, &body, send_credentials, rec, facts)
                .await?;
            if let Some(t) = &facts.tls
                && let Err(f) = self.tls.check_expiry(t, chrono::Utc::now())
            {
                expiring.get_or_insert(f);
            }
            if self.follow_redirects
                && status.is_redirection()
                && status != StatusCode::NOT_MODIFIED
                && let Some(loc) = headers.get(header::LOCATION)
            {
                let next = loc
                    .to_str()
                    .ok()
                    .and_then(|l| url.join(l).ok())
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        Failure::new(
                            Reason::HttpBadRedirect,
                            format!("{status} with unusable Location {loc:?}"),
                        )
                    })?;
                if http_facts(facts).redirects >= self.max_redirects {
                    return Err(Failure::new(
                        Reason::HttpTooManyRedirects,
                        format!(
                            "more than {} redirects (last to {next})",
                            self.max_redirects
                        ),
                    ));
                }
                // As browsers and Go: 303 (and 301/302 after a POST) become GET without body.
                if status == StatusCode::SEE_OTHER
                    || ((status == StatusCode::MOVED_PERMANENTLY || status == StatusCode::FOUND)
                        && method == Method::POST)
                {
                    if method != Method::HEAD {
                        method = Method::GET;
                    }
                    body = Bytes::new();
                }
                if visited.contains(&(method.clone(), next.to_string())) {
                    return Err(Failure::new(
                        Reason::HttpRedirectLoop,
                        format!("redirect loop: {url} → {next} was already visited"),
                    ));
                }
                http_facts(facts).redirects += 1;
                url = next;
                continue;
            }
            // Final response: assertions.
            if !self.status_ok(status) {
                return Err(Failure::new(
                    Reason::HttpStatus,
                    format!(
                        "status {} is not valid ({})",
                        status.as_u16(),
                        self.valid_status_text()
                    ),
                ));
            }
            self.check_headers(&headers)?;
            self.check_body(&bytes)?;
            if let Some(f) = expiring {
                return Err(f);
            }
            let http = http_facts(facts);
            let version = http.version.clone().unwrap_or_default();
            return Ok(format!(
                "{} {} {}, {} bytes{}",
                version,
                status.as_u16(),
                status.canonical_reason().unwrap_or(""),
                http.body_bytes,
                if http.redirects > 0 {
                    format!(" after {} redirect(s)", http.redirects)
                } else {
                    String::new()
                }
            ));
        }
    }

    fn valid_status_text(&self) -> String {
        if self.valid_status.is_empty() {
            return "expected 2xx".into();
        }
        let parts: Vec<String> = self
            .valid_status
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        format!("expected {}", parts.join(", "))
    }

    fn check_headers(&self, headers: &HeaderMap) -> Result<(), Failure> {
        for (name, src, re, allow_missing) in &self.header_match {
            let values: Vec<&HeaderValue> = headers.get_all(name).iter().collect();
            if values.is_empty() {
                if *allow_missing {
                    continue;
                }
                return Err(Failure::new(
                    Reason::HttpHeaderMismatch,
                    format!("header {name} missing (expected to match {src:?})"),
                ));
            }
            if !values
                .iter()
                .any(|v| re.is_match(&String::from_utf8_lossy(v.as_bytes())))
            {
                return Err(Failure::new(
                    Reason::HttpHeaderMismatch,
                    format!("header {name} does not match {src:?}"),
                ));
            }
        }
        Ok(())
    }

    fn check_body(&self, body: &[u8]) -> Result<(), Failure> {
        for (src, re) in &self.body_contains {
            if !re.is_match(body) {
                return Err(Failure::new(
                    Reason::HttpBodyMismatch,
                    format!("body does not contain {src:?}"),
                ));
            }
        }
        for (src, re) in &self.body_regex {
            if !re.is_match(body) {
                return Err(Failure::new(
                    Reason::HttpBodyMismatch,
                    format!("body does not match {src:?}"),
                ));
            }
        }
        for (src, re) in &self.body_not_regex {
            if re.is_match(body) {
                return Err(Failure::new(
                    Reason::HttpBodyMismatch,
                    format!("body matches forbidden {src:?}"),
                ));
            }
        }
        Ok(())
    }

    /// One request on a fresh connection. Returns status, headers and the
    /// body (only buffered when assertions need it).
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        url: &Url,
        method: &Method,
        body: &Bytes,
        send_credentials: bool,
        rec: &mut Recorder,
        facts: &mut Facts,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), Failure> {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        let https = url.scheme() == "https";
        let addrs = self.net.resolve(host, rec).await?;
        let (tcp, addr) = self.net.connect(&addrs, port, rec).await?;
        let http = http_facts(facts);
        http.remote_addr = Some(addr.to_string());
        // Reset what a previous hop of a redirect chain reported.
        http.status = None;
        http.version = None;
        http.content_length = None;
        http.body_bytes = 0;
        let mut withhold = !send_credentials;
        let (stream, h2) = if https {
            let alpn: &[&[u8]] = match self.version {
                HttpVersion::Auto => &[b"h2", b"http/1.1"],
                HttpVersion::Http1 => &[b"http/1.1"],
                HttpVersion::Http2 => &[b"h2"],
            };
            let hs = match self.tls.handshake(tcp, host, alpn, rec).await {
                Ok(hs) => hs,
                Err((f, tls_facts)) => {
                    facts.tls = Some(tls_facts);
                    return Err(f);
                }
            };
            withhold |= hs.unverified.is_some();
            let h2 = hs.facts.alpn.as_deref() == Some("h2");
            facts.tls = Some(hs.facts);
            if self.version == HttpVersion::Http2 && !h2 {
                return Err(Failure::new(
                    Reason::HttpProtocol,
                    "server did not negotiate HTTP/2 (ALPN h2)",
                ));
            }
            (Stream::Tls(hs.stream), h2)
        } else {
            (Stream::Plain(tcp), self.version == HttpVersion::Http2)
        };
        if withhold && !self.credentials.is_empty() {
            http_facts(facts).credentials_withheld = true;
        }

        let req = self.request(url, method, body, h2, !withhold)?;
        let framing = if h2 { Framing::H2 } else { Framing::Raw };
        let (io, times) = TimedIo::new(stream, framing);
        let io = TokioIo::new(io);
        rec.start(Phase::Processing);
        let (resp_fut, conn): (
            BoxFut<hyper::Result<Response<Incoming>>>,
            BoxFut<hyper::Result<()>>,
        ) = if h2 {
            let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .max_header_list_size(MAX_HEADER_BYTES as u32)
                .handshake(io)
                .await
                .map_err(|e| hyper_failure(&e, "HTTP/2 handshake", true))?;
            (
                Box::pin(async move { sender.send_request(req).await }),
                Box::pin(conn),
            )
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
                .max_buf_size(MAX_HEADER_BYTES.max(8192))
                .handshake(io)
                .await
                .map_err(|e| hyper_failure(&e, "HTTP/1.1 handshake", false))?;
            (
                Box::pin(async move { sender.send_request(req).await }),
                Box::pin(conn),
            )
        };
        let mut conn = Conn {
            fut: Some(conn),
            error: None,
            times: times.clone(),
        };
        let resp = match conn.with(resp_fut).await {
            Ok(resp) => resp,
            Err(e) => return Err(conn.failure(&e, "response", h2).await),
        };
        let head_at = tokio::time::Instant::now();
        // The read that brought the first byte of the answer (see io.rs).
        let first_byte = snapshot(&times).first_read_after_write.unwrap_or(head_at);
        rec.start_at(Phase::Transfer, first_byte.min(head_at));

        let status = resp.status();
        let http = http_facts(facts);
        http.status = Some(status.as_u16());
        http.version = Some(version_name(resp.version()).into());
        let (parts, mut incoming) = resp.into_parts();
        http.content_length = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        if let Some(cl) = http.content_length
            && cl > self.body_limit
        {
            return Err(Failure::new(
                Reason::HttpBodyTooLarge,
                format!(
                    "Content-Length {cl} exceeds the body limit of {} bytes",
                    self.body_limit
                ),
            ));
        }
        let keep = self.needs_body() && !(status.is_redirection() && self.follow_redirects);
        let mut buf = Vec::new();
        loop {
            let frame = conn.with(incoming.frame()).await;
            match frame {
                None => break,
                Some(Err(e)) => return Err(conn.failure(&e, "body", h2).await),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let http = http_facts(facts);
                        http.body_bytes += data.len() as u64;
                        if http.body_bytes > self.body_limit {
                            return Err(Failure::new(
                                Reason::HttpBodyTooLarge,
                                format!("body exceeds the limit of {} bytes", self.body_limit),
                            ));
                        }
                        if keep {
                            buf.extend_from_slice(&data);
                        }
                    }
                }
            }
        }
        rec.end();
        Ok((status, parts.headers, buf))
    }

    fn request(
        &self,
        url: &Url,
        method: &Method,
        body: &Bytes,
        h2: bool,
        with_credentials: bool,
    ) -> Result<Request<Full<Bytes>>, Failure> {
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        // HTTP/2 carries :authority in an absolute URI; HTTP/1.1 wants the
        // origin form plus a Host header.
        let uri = if h2 {
            format!("{}://{authority}{path}", url.scheme())
        } else {
            path
        };
        let mut builder = Request::builder().method(method.clone()).uri(uri);
        let headers = builder.headers_mut().expect("fresh builder has headers");
        if !h2 {
            headers.insert(
                header::HOST,
                HeaderValue::from_str(&authority).map_err(|_| {
                    Failure::new(Reason::HttpBadRedirect, "host not valid in a header")
                })?,
            );
        }
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        for (k, v) in &self.headers {
            headers.insert(k.clone(), v.clone());
        }
        if with_credentials {
            for (k, v) in &self.credentials {
                headers.insert(k.clone(), v.clone());
            }
        }
        builder.body(Full::new(body.clone())).map_err(|e| {
            Failure::new(
                Reason::HttpBadRedirect,
                format!("cannot build request: {e}"),
            )
        })
    }
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Runs `fut` while also driving the connection in the same task (no
/// cross-task wake-ups between "byte arrived" and "we noticed"). Once the
/// connection future ends, `fut` runs alone; its own error reports why.
/// The HTTP facts of a running check, created on first use.
fn http_facts(facts: &mut Facts) -> &mut HttpFacts {
    facts.http.get_or_insert_with(HttpFacts::default)
}

/// A hyper client connection driven in the check's own task, with the
/// error it ended with (often the real cause of a failed request).
struct Conn {
    fut: Option<BoxFut<hyper::Result<()>>>,
    error: Option<hyper::Error>,
    times: Arc<Mutex<IoTimes>>,
}

impl Conn {
    /// Runs `fut` while driving the connection.
    async fn with<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        if let Some(c) = self.fut.as_mut() {
            tokio::select! {
                biased;
                out = &mut fut => return out,
                res = c => {
                    self.fut = None;
                    self.error = res.err();
                }
            }
        }
        fut.await
    }

    /// Classifies a request or body error, preferring a TLS failure seen
    /// by either the request or the connection. A request fails as soon as
    /// its connection dies, so poll the connection once more for its error.
    async fn failure(&mut self, e: &hyper::Error, during: &str, h2: bool) -> Failure {
        if let Some(c) = self.fut.as_mut() {
            let polled = std::future::poll_fn(|cx| Poll::Ready(c.as_mut().poll(cx))).await;
            if let Poll::Ready(res) = polled {
                self.fut = None;
                self.error = res.err();
            }
        }
        if let Some(f) = self
            .error
            .as_ref()
            .and_then(|ce| late_tls_failure(ce, during))
        {
            return f;
        }
        if let Some(r) = &snapshot(&self.times).tls_error {
            return tls_rejected(r, during);
        }
        hyper_failure(e, during, h2)
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

fn version_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

fn hyper_failure(e: &hyper::Error, during: &str, h2: bool) -> Failure {
    if let Some(f) = late_tls_failure(e, during) {
        return f;
    }
    let mut msg = format!("{during}: {e}");
    let mut io_cause = false;
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        io_cause |= s.downcast_ref::<std::io::Error>().is_some();
        src = s.source();
    }
    let reason = if e.is_parse() || e.is_parse_status() {
        Reason::HttpProtocol
    } else if e.is_incomplete_message() || io_cause {
        // The peer closed or reset before a complete response.
        Reason::IoError
    } else if h2 {
        // HTTP/2 framing and stream errors carry no I/O cause: the peer did
        // not speak valid HTTP/2 (or reset the stream).
        Reason::HttpProtocol
    } else {
        Reason::IoError
    };
    Failure::new(reason, msg)
}

/// Standard base64 (RFC 4648) for basic auth, without pulling a crate for it.
mod base64_engine {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(input: &[u8]) -> String {
        let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[cfg(test)]
    #[test]
    fn rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(i.as_bytes()), o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges_parse() {
        assert_eq!(parse_status_range("200"), Ok((200, 200)));
        assert_eq!(parse_status_range("2xx"), Ok((200, 299)));
        assert_eq!(parse_status_range("200-399"), Ok((200, 399)));
        assert!(parse_status_range("399-200").is_err());
        assert!(parse_status_range("9xx").is_err());
        assert!(parse_status_range("abc").is_err());
        assert!(parse_status_range("1000").is_err());
    }

    #[test]
    fn build_rejects_bad_options() {
        let bad = |o: HttpOptions| HttpCheck::build(&o).unwrap_err().field;
        let base = || HttpOptions {
            url: "http://127.0.0.1/".into(),
            ..HttpOptions::default()
        };
        assert_eq!(
            bad(HttpOptions {
                url: "ftp://x/".into(),
                ..base()
            }),
            "url"
        );
        assert_eq!(
            bad(HttpOptions {
                url: "http://u:p@x/".into(),
                ..base()
            }),
            "url"
        );
        assert_eq!(
            bad(HttpOptions {
                method: "G ET".into(),
                ..base()
            }),
            "method"
        );
        assert_eq!(
            bad(HttpOptions {
                body_regex: vec!["(".into()],
                ..base()
            }),
            "body_regex"
        );
        assert_eq!(
            bad(HttpOptions {
                valid_status: vec!["2x".into()],
                ..base()
            }),
            "valid_status"
        );
        assert_eq!(
            bad(HttpOptions {
                tls: TlsOptions {
                    ca_file: Some("/nonexistent.pem".into()),
                    ..TlsOptions::default()
                },
                ..base()
            }),
            "tls.ca_file"
        );
    }
}
