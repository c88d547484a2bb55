//! Shared support for the HTTP and TLS integration tests: a test PKI built
//! with rcgen, in-process hyper servers (plain and TLS, HTTP/1.1 and HTTP/2,
//! optional client authentication) that record what they receive, and raw
//! TCP/UDP servers that misbehave on purpose.
//!
//! Every server runs in a task that is aborted when its handle is dropped;
//! connections are owned by a `JoinSet` inside that task, so they end with it.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use varde::check::{CheckResult, CheckSpec, HttpOptions, Reason};

// ---------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------

/// Midnight UTC of the given day.
pub fn utc(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
}

/// Validity windows of the test PKI, as (year, month, day) of not_before / not_after.
pub const ROOT_NOT_BEFORE: (i32, u32, u32) = (2020, 1, 1);
pub const ROOT_NOT_AFTER: (i32, u32, u32) = (2035, 1, 1);
pub const INTERMEDIATE_NOT_BEFORE: (i32, u32, u32) = (2020, 1, 1);
pub const INTERMEDIATE_NOT_AFTER: (i32, u32, u32) = (2033, 1, 1);
pub const LEAF_NOT_BEFORE: (i32, u32, u32) = (2024, 1, 1);
pub const LEAF_NOT_AFTER: (i32, u32, u32) = (2031, 1, 1);
pub const EXPIRED_NOT_BEFORE: (i32, u32, u32) = (2020, 1, 1);
pub const EXPIRED_NOT_AFTER: (i32, u32, u32) = (2021, 1, 1);
pub const FUTURE_NOT_BEFORE: (i32, u32, u32) = (2040, 1, 1);
pub const FUTURE_NOT_AFTER: (i32, u32, u32) = (2041, 1, 1);
pub const SELF_SIGNED_NOT_AFTER: (i32, u32, u32) = (2032, 1, 1);
/// An extra, unrelated CA certificate some servers present after the chain.
pub const STRAY_NOT_AFTER: (i32, u32, u32) = (2028, 1, 1);

pub fn date((y, m, d): (i32, u32, u32)) -> DateTime<Utc> {
    utc(y, m, d)
}

/// `rcgen::date_time_ymd` for a (year, month, day) triple (the `time` type is not nameable here).
macro_rules! rc_date {
    ($ymd:expr) => {{
        let (y, m, d): (i32, u32, u32) = $ymd;
        rcgen::date_time_ymd(y, m as u8, d as u8)
    }};
}

// ---------------------------------------------------------------------------
// PKI
// ---------------------------------------------------------------------------

/// The kinds of server chains the test PKI can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaf {
    /// localhost + 127.0.0.1, 2024..2031, served with the intermediate.
    Valid,
    /// Only "other.example", otherwise like `Valid`.
    WrongHost,
    /// localhost, 2020..2021.
    Expired,
    /// localhost, 2040..2041.
    NotYetValid,
    /// localhost, its own issuer (not in the CA file), 2024..2032.
    SelfSigned,
    /// The valid leaf served without its intermediate.
    MissingIntermediate,
    /// The valid chain plus an unrelated CA certificate (expiring 2028).
    WithStray,
}

/// A certificate chain (leaf first, as served) and the leaf's key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }
}

/// Root CA → intermediate CA → leaves, with the root written to a PEM file
/// for `tls.ca_file` and a client certificate/key for mTLS.
pub struct Pki {
    pub root: CertificateDer<'static>,
    pub intermediate: CertificateDer<'static>,
    valid: Identity,
    wrong_host: Identity,
    expired: Identity,
    not_yet_valid: Identity,
    self_signed: Identity,
    stray: CertificateDer<'static>,
    dir: tempfile::TempDir,
    /// The root's not_after as generated.
    pub root_not_after: DateTime<Utc>,
}

fn ca_params(cn: &str, nb: (i32, u32, u32), na: (i32, u32, u32)) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rc_date!(nb);
    p.not_after = rc_date!(na);
    p.use_authority_key_identifier_extension = true;
    p
}

fn leaf_params(
    cn: &str,
    sans: &[&str],
    nb: (i32, u32, u32),
    na: (i32, u32, u32),
    eku: ExtendedKeyUsagePurpose,
) -> CertificateParams {
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::NoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![eku];
    p.not_before = rc_date!(nb);
    p.not_after = rc_date!(na);
    p.use_authority_key_identifier_extension = true;
    p
}

fn pkcs8(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    pub fn new() -> Self {
        Self::with_root_not_after(ROOT_NOT_AFTER)
    }

    /// A PKI whose root expires at `root_not_after` (the rest unchanged).
    pub fn with_root_not_after(root_not_after: (i32, u32, u32)) -> Self {
        let root = CertifiedIssuer::self_signed(
            ca_params("varde test root", ROOT_NOT_BEFORE, root_not_after),
            KeyPair::generate().unwrap(),
        )
        .unwrap();
        let intermediate = CertifiedIssuer::signed_by(
            ca_params(
                "varde test intermediate",
                INTERMEDIATE_NOT_BEFORE,
                INTERMEDIATE_NOT_AFTER,
            ),
            KeyPair::generate().unwrap(),
            &root,
        )
        .unwrap();
        let stray_key = KeyPair::generate().unwrap();
        let stray = ca_params("varde test stray", ROOT_NOT_BEFORE, STRAY_NOT_AFTER)
            .signed_by(&stray_key, &root)
            .unwrap()
            .der()
            .clone();

        let issue = |cn: &str, sans: &[&str], nb, na| -> Identity {
            let key = KeyPair::generate().unwrap();
            let cert = leaf_params(cn, sans, nb, na, ExtendedKeyUsagePurpose::ServerAuth)
                .signed_by(&key, &intermediate)
                .unwrap();
            Identity {
                chain: vec![cert.der().clone(), intermediate.der().clone()],
                key: pkcs8(&key),
            }
        };
        let valid = issue(
            "localhost",
            &["localhost", "127.0.0.1"],
            LEAF_NOT_BEFORE,
            LEAF_NOT_AFTER,
        );
        let wrong_host = issue(
            "other.example",
            &["other.example"],
            LEAF_NOT_BEFORE,
            LEAF_NOT_AFTER,
        );
        let expired = issue(
            "localhost",
            &["localhost", "127.0.0.1"],
            EXPIRED_NOT_BEFORE,
            EXPIRED_NOT_AFTER,
        );
        let not_yet_valid = issue(
            "localhost",
            &["localhost", "127.0.0.1"],
            FUTURE_NOT_BEFORE,
            FUTURE_NOT_AFTER,
        );
        let self_signed = {
            let key = KeyPair::generate().unwrap();
            let cert = leaf_params(
                "localhost",
                &["localhost", "127.0.0.1"],
                LEAF_NOT_BEFORE,
                SELF_SIGNED_NOT_AFTER,
                ExtendedKeyUsagePurpose::ServerAuth,
            )
            .self_signed(&key)
            .unwrap();
            Identity {
                chain: vec![cert.der().clone()],
                key: pkcs8(&key),
            }
        };
        let client_key = KeyPair::generate().unwrap();
        let client = leaf_params(
            "varde test client",
            &[],
            LEAF_NOT_BEFORE,
            LEAF_NOT_AFTER,
            ExtendedKeyUsagePurpose::ClientAuth,
        )
        .signed_by(&client_key, &intermediate)
        .unwrap();

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.pem"), root.pem()).unwrap();
        // The client chain includes the intermediate: the server trusts only the root.
        std::fs::write(
            dir.path().join("client.pem"),
            format!("{}{}", client.pem(), intermediate.pem()),
        )
        .unwrap();
        std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).unwrap();
        std::fs::write(
            dir.path().join("self_signed.pem"),
            pem_cert(&self_signed.chain[0]),
        )
        .unwrap();

        Self {
            root: root.der().clone(),
            intermediate: intermediate.der().clone(),
            valid,
            wrong_host,
            expired,
            not_yet_valid,
            self_signed,
            stray,
            dir,
            root_not_after: date(root_not_after),
        }
    }

    /// The chain and key a server presents for `kind`.
    pub fn identity(&self, kind: Leaf) -> Identity {
        match kind {
            Leaf::Valid => self.valid.clone(),
            Leaf::WrongHost => self.wrong_host.clone(),
            Leaf::Expired => self.expired.clone(),
            Leaf::NotYetValid => self.not_yet_valid.clone(),
            Leaf::SelfSigned => self.self_signed.clone(),
            Leaf::MissingIntermediate => {
                let mut id = self.valid.clone();
                id.chain.truncate(1);
                id
            }
            Leaf::WithStray => {
                let mut id = self.valid.clone();
                id.chain.push(self.stray.clone());
                id
            }
        }
    }

    /// PEM file with the root CA only (for `tls.ca_file`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("root.pem")
    }

    /// PEM file with the client certificate and the intermediate.
    pub fn client_cert_file(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }

    /// PEM file with the client's private key.
    pub fn client_key_file(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }

    /// PEM file with the self-signed leaf (to trust it explicitly).
    pub fn self_signed_file(&self) -> PathBuf {
        self.dir.path().join("self_signed.pem")
    }
}

fn pem_cert(der: &CertificateDer<'_>) -> String {
    // Tiny PEM encoder so tests need no extra dependency.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.as_ref().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// SHA-256 of a DER certificate, lowercase hex (as `CertInfo::fingerprint_sha256`).
pub fn sha256_hex(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------
// Response bodies
// ---------------------------------------------------------------------------

enum Step {
    Data(Bytes),
    Pause(Duration),
    /// Yield this chunk forever.
    Forever(Bytes),
}

/// A response body made of data chunks and pauses, possibly endless.
pub struct TestBody {
    steps: VecDeque<Step>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    exact_len: Option<u64>,
}

impl TestBody {
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        let len = b.len() as u64;
        let steps = if b.is_empty() {
            VecDeque::new()
        } else {
            VecDeque::from([Step::Data(b)])
        };
        Self {
            steps,
            sleep: None,
            exact_len: Some(len),
        }
    }

    /// `first`, then a pause of `pause`, then `rest` (length declared up front).
    pub fn slow(first: impl Into<Bytes>, pause: Duration, rest: impl Into<Bytes>) -> Self {
        let (first, rest) = (first.into(), rest.into());
        let len = (first.len() + rest.len()) as u64;
        Self {
            steps: VecDeque::from([Step::Data(first), Step::Pause(pause), Step::Data(rest)]),
            sleep: None,
            exact_len: Some(len),
        }
    }

    /// `chunk` every `every`, `times` times (no length declared).
    pub fn drip(chunk: impl Into<Bytes>, every: Duration, times: usize) -> Self {
        let chunk = chunk.into();
        let mut steps = VecDeque::new();
        for i in 0..times {
            if i > 0 {
                steps.push_back(Step::Pause(every));
            }
            steps.push_back(Step::Data(chunk.clone()));
        }
        Self {
            steps,
            sleep: None,
            exact_len: None,
        }
    }

    /// 64 KiB chunks forever, no length declared.
    pub fn infinite() -> Self {
        Self {
            steps: VecDeque::from([Step::Forever(Bytes::from(vec![b'x'; 64 * 1024]))]),
            sleep: None,
            exact_len: None,
        }
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            if let Some(s) = this.sleep.as_mut() {
                ready!(s.as_mut().poll(cx));
                this.sleep = None;
            }
            match this.steps.pop_front() {
                None => return Poll::Ready(None),
                Some(Step::Data(b)) => return Poll::Ready(Some(Ok(Frame::data(b)))),
                Some(Step::Forever(b)) => {
                    this.steps.push_front(Step::Forever(b.clone()));
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Some(Step::Pause(d)) => this.sleep = Some(Box::pin(tokio::time::sleep(d))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.steps.is_empty() && self.sleep.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact_len {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

// ---------------------------------------------------------------------------
// Replies and handlers
// ---------------------------------------------------------------------------

/// What a handler answers: status, headers, a delay before the response
/// head is returned (time to first byte), and the body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
    pub body: TestBody,
}

impl Reply {
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Self::status(200).body(TestBody::full(body))
    }

    pub fn status(code: u16) -> Self {
        Self {
            status: code,
            headers: Vec::new(),
            delay: Duration::ZERO,
            body: TestBody::empty(),
        }
    }

    pub fn redirect(code: u16, location: &str) -> Self {
        Self::status(code).header("location", location)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    pub fn body(mut self, b: TestBody) -> Self {
        self.body = b;
        self
    }

    fn into_response(self) -> Response<TestBody> {
        let mut resp = Response::new(self.body);
        *resp.status_mut() = StatusCode::from_u16(self.status).unwrap();
        for (k, v) in self.headers {
            resp.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(&v).unwrap(),
            );
        }
        resp
    }
}

/// A request as the server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// One TLS handshake as the server saw it.
#[derive(Clone, Debug, Default)]
pub struct HandshakeRecord {
    /// The handshake completed with a client certificate the server verified.
    pub client_authenticated: bool,
    pub alpn: Option<String>,
    pub sni: Option<String>,
    /// Why the handshake failed, if it did.
    pub error: Option<String>,
}

type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

#[derive(Default)]
struct Log {
    requests: Mutex<Vec<Recorded>>,
    handshakes: Mutex<Vec<HandshakeRecord>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// hyper servers
// ---------------------------------------------------------------------------

/// A running in-process server; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    log: Arc<Log>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.log.requests).clone()
    }

    /// TLS handshakes attempted so far, in order.
    pub fn handshakes(&self) -> Vec<HandshakeRecord> {
        lock(&self.log.handshakes).clone()
    }

    /// A plain HTTP server (HTTP/1.1, and HTTP/2 with prior knowledge) on 127.0.0.1.
    pub async fn http(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Server {
        ServerBuilder::new().start(handler).await.unwrap()
    }

    /// A TLS server on 127.0.0.1 presenting `identity`, ALPN h2 + http/1.1.
    pub async fn tls(
        identity: Identity,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Server {
        ServerBuilder::new()
            .tls(identity)
            .start(handler)
            .await
            .unwrap()
    }
}

/// Configures a [`Server`].
pub struct ServerBuilder {
    bind: SocketAddr,
    identity: Option<Identity>,
    h1_only: bool,
    client_ca: Option<CertificateDer<'static>>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerBuilder {
    pub fn new() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            identity: None,
            h1_only: false,
            client_ca: None,
        }
    }

    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Serve TLS with this chain and key.
    pub fn tls(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// HTTP/1.1 only (ALPN offers only "http/1.1").
    pub fn h1_only(mut self) -> Self {
        self.h1_only = true;
        self
    }

    /// Require a client certificate issued under `root`.
    pub fn require_client_cert(mut self, root: CertificateDer<'static>) -> Self {
        self.client_ca = Some(root);
        self
    }

    pub async fn start(
        self,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Log::default());
        let handler: Handler = Arc::new(handler);
        let alpn: &[&[u8]] = if self.h1_only {
            &[b"http/1.1"]
        } else {
            &[b"h2", b"http/1.1"]
        };
        let acceptor = self
            .identity
            .map(|id| tls_acceptor(id, self.client_ca, alpn));
        let h1_only = self.h1_only;
        let task_log = log.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let _ = tcp.set_nodelay(true);
                        let (log, handler, acceptor) =
                            (task_log.clone(), handler.clone(), acceptor.clone());
                        conns.spawn(async move {
                            match acceptor {
                                None => serve(tcp, h1_only, log, handler).await,
                                Some(acceptor) => match acceptor.accept(tcp).await {
                                    Ok(tls) => {
                                        let (_, conn) = tls.get_ref();
                                        let rec = HandshakeRecord {
                                            client_authenticated: conn
                                                .peer_certificates()
                                                .is_some_and(|c| !c.is_empty()),
                                            alpn: conn.alpn_protocol().map(|p| {
                                                String::from_utf8_lossy(p).into_owned()
                                            }),
                                            sni: conn.server_name().map(str::to_owned),
                                            error: None,
                                        };
                                        lock(&log.handshakes).push(rec);
                                        serve(tls, h1_only, log, handler).await
                                    }
                                    Err(e) => lock(&log.handshakes).push(HandshakeRecord {
                                        error: Some(e.to_string()),
                                        ..HandshakeRecord::default()
                                    }),
                                },
                            }
                        });
                    }
                    // Reap finished connections so the set does not grow.
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(Server { addr, log, task })
    }
}

async fn serve<I>(io: I, h1_only: bool, log: Arc<Log>, handler: Handler)
where
    I: AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if h1_only {
        builder = builder.http1_only();
    }
    let svc = service_fn(move |req: Request<Incoming>| {
        let (log, handler) = (log.clone(), handler.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let rec = Recorded {
                method: parts.method.to_string(),
                path: parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_else(|| "/".into()),
                version: parts.version,
                headers: parts.headers,
                body,
            };
            let reply = handler(&rec);
            lock(&log.requests).push(rec);
            if !reply.delay.is_zero() {
                tokio::time::sleep(reply.delay).await;
            }
            Ok::<_, Infallible>(reply.into_response())
        }
    });
    let _ = builder.serve_connection(TokioIo::new(io), svc).await;
}

// ---------------------------------------------------------------------------
// Raw, hostile TCP servers
// ---------------------------------------------------------------------------

/// A TLS acceptor presenting `id`, optionally requiring a client
/// certificate issued under `client_ca`, offering `alpn`; no session tickets.
pub fn tls_acceptor(
    id: Identity,
    client_ca: Option<CertificateDer<'static>>,
    alpn: &[&[u8]],
) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(root) => {
            let mut roots = RootCertStore::empty();
            roots.add(root).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(id.chain, id.key).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.send_tls13_tickets = 0;
    TlsAcceptor::from(Arc::new(config))
}

/// A raw TCP server on 127.0.0.1 running `behave` on every connection;
/// stops (with its connections) when dropped.
pub struct RawServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn discard<R: AsyncRead + Unpin>(mut r: R) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

impl RawServer {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub async fn start<F, Fut>(behave: F) -> RawServer
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((tcp, _)) = accepted {
                            conns.spawn(behave(tcp));
                        }
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        RawServer { addr, task }
    }

    /// Accepts, reads and discards everything, never writes, holds the socket open.
    pub async fn never_answers() -> RawServer {
        Self::start(|tcp| async move {
            let (r, _w) = tcp.into_split();
            discard(r).await;
            std::future::pending::<()>().await;
        })
        .await
    }

    /// Writes a status line, then a header that never ends, one byte every 200 ms.
    pub async fn drip_feed() -> RawServer {
        Self::start(|tcp| async move {
            let (r, mut w) = tcp.into_split();
            let drip = async move {
                let head = b"HTTP/1.1 200 OK\r\nX-Drip: ";
                for i in 0.. {
                    let b = head.get(i).copied().unwrap_or(b'a');
                    if w.write_all(&[b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            };
            tokio::join!(discard(r), drip);
        })
        .await
    }

    /// Answers with an SSH banner and binary junk, then holds the socket open.
    pub async fn garbage() -> RawServer {
        Self::start(|tcp| async move {
            let (r, mut w) = tcp.into_split();
            let mut junk = b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n".to_vec();
            junk.extend_from_slice(&[0x00, 0x00, 0x01, 0x14, 0x0a, 0x14, 0xff, 0xfe, 0x80, 0x7f]);
            junk.extend((0u8..=255).rev());
            let _ = w.write_all(&junk).await;
            discard(r).await;
            std::future::pending::<()>().await;
        })
        .await
    }

    /// Accepts and closes at once.
    pub async fn closes_immediately() -> RawServer {
        Self::start(|tcp| async move { drop(tcp) }).await
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn refused_port() -> u16 {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    l.local_addr().unwrap().port()
}

/// A UDP socket on 127.0.0.1 that never answers (keep it alive while used).
pub async fn silent_udp() -> UdpSocket {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap()
}

/// Whether an IPv6 loopback socket can be bound here.
pub fn ipv6_loopback_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

// ---------------------------------------------------------------------------
// Running checks
// ---------------------------------------------------------------------------

/// `https://localhost:{port}{path}` trusting the test root, IPv4 first.
pub fn https_to(port: u16, path: &str, pki: &Pki) -> HttpOptions {
    HttpOptions {
        url: format!("https://localhost:{port}{path}"),
        tls: varde::check::TlsOptions {
            ca_file: Some(pki.ca_file()),
            ..Default::default()
        },
        net: varde::check::NetOptions {
            ip_preference: varde::check::IpPreference::Ip4,
            ..Default::default()
        },
        ..HttpOptions::default()
    }
}

pub async fn run_http(o: HttpOptions, timeout: Duration) -> CheckResult {
    CheckSpec::Http(o)
        .build(timeout)
        .expect("check definition builds")
        .run()
        .await
}

#[track_caller]
pub fn assert_success(r: &CheckResult) {
    assert!(
        r.success && r.reason.is_none(),
        "expected success, got {:?}: {}\n{r:#?}",
        r.reason,
        r.message
    );
}

#[track_caller]
pub fn assert_reason(r: &CheckResult, want: Reason) {
    assert!(
        !r.success,
        "expected {want}, got success: {}\n{r:#?}",
        r.message
    );
    assert_eq!(
        r.reason,
        Some(want),
        "expected {want}, got {:?}: {}\n{r:#?}",
        r.reason,
        r.message
    );
}
