//! TLS for checks: a client handshake that reports the presented chain even
//! when verification fails, and classifies why it failed.
//!
//! Verification is rustls' own [`WebPkiServerVerifier`], wrapped so that the
//! chain and the verification error are captured per connection. With
//! `insecure`, the wrapper accepts the chain after recording the error; the
//! configured credentials (the client certificate's signature here, HTTP
//! credentials in the HTTP check) are then withheld, because the peer is not
//! proven to be who it claims.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{Failure, Phase, Reason, Recorder, SpecError, human_duration};

/// TLS options as written by a user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsOptions {
    /// PEM file of CA certificates to trust instead of the built-in web roots.
    pub ca_file: Option<PathBuf>,
    /// PEM file with the client certificate chain (needs `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM file with the client private key (needs `cert_file`).
    pub key_file: Option<PathBuf>,
    /// Name used for SNI and certificate verification instead of the target host.
    pub server_name: Option<String>,
    /// Complete the handshake even when verification fails (the chain and the
    /// failure are still reported; credentials are withheld).
    pub insecure: bool,
    /// Fail when the earliest presented expiry is closer than this ("14d").
    #[serde(with = "human_duration", skip_serializing_if = "Option::is_none")]
    pub expiry_threshold: Option<Duration>,
}

/// One certificate as presented by the server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: Option<DateTime<Utc>>,
    pub not_after: Option<DateTime<Utc>>,
    /// DNS names and IP addresses from subjectAltName.
    pub sans: Vec<String>,
    /// SHA-256 of the DER encoding, lowercase hex.
    pub fingerprint_sha256: String,
    /// The certificate is its own issuer.
    pub self_issued: bool,
}

/// What a TLS connection showed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFacts {
    /// Name sent as SNI and verified against (empty for IP targets without override).
    pub server_name: String,
    /// e.g. "TLS 1.3"; `None` if the handshake did not complete.
    pub version: Option<String>,
    pub cipher: Option<String>,
    pub alpn: Option<String>,
    /// The chain verified against the trust roots.
    pub verified: bool,
    /// Why verification failed, for humans.
    pub verify_error: Option<String>,
    /// The presented chain, leaf first, as sent.
    pub chain: Vec<CertInfo>,
    /// Earliest `notAfter` over all presented certificates.
    pub earliest_expiry: Option<DateTime<Utc>>,
    /// Earliest `notAfter` on the verified path (leaf, the intermediates it
    /// uses, and the anchor where its certificate is known from `ca_file`).
    pub verified_chain_expiry: Option<DateTime<Utc>>,
}

impl TlsFacts {
    pub fn leaf(&self) -> Option<&CertInfo> {
        self.chain.first()
    }
}

/// A completed handshake.
pub(crate) struct Handshake<IO> {
    pub stream: TlsStream<IO>,
    pub facts: TlsFacts,
    /// In insecure mode, why the chain did not verify: the check goes on
    /// but must withhold credentials.
    pub unverified: Option<Failure>,
}

/// A prepared TLS client: trust roots, client identity and policy, loaded
/// once when the check is built.
#[derive(Clone)]
pub(crate) struct TlsClient {
    provider: Arc<CryptoProvider>,
    verifier: Arc<WebPkiServerVerifier>,
    /// Certificates from `ca_file`, parsed, to find the anchor's own expiry.
    custom_cas: Arc<[ParsedCert]>,
    /// Presented certificates already parsed: a target presents the same
    /// chain on every run, and parsing and hashing it is a measurable part
    /// of a check's CPU.
    parsed: Arc<CertCache>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<dyn SigningKey>)>,
    server_name: Option<ServerName<'static>>,
    insecure: bool,
    expiry_threshold: Option<Duration>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("custom_cas", &self.custom_cas.len())
            .field("client_cert", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .field("insecure", &self.insecure)
            .field("expiry_threshold", &self.expiry_threshold)
            .finish()
    }
}

fn web_roots() -> Arc<RootCertStore> {
    static ROOTS: std::sync::OnceLock<Arc<RootCertStore>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            Arc::new(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
        })
        .clone()
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

impl TlsClient {
    /// Loads and validates TLS material. `field` prefixes error field names
    /// (e.g. "tls").
    pub(crate) fn build(o: &TlsOptions, field: &str) -> Result<Self, SpecError> {
        let err = |name: &str, msg: String| SpecError::new(format!("{field}.{name}"), msg);
        let provider = provider();
        let (roots, custom_cas) = match &o.ca_file {
            None => (web_roots(), Arc::from([])),
            Some(path) => {
                let certs = load_certs(path).map_err(|m| err("ca_file", m))?;
                let mut store = RootCertStore::empty();
                for c in &certs {
                    store
                        .add(c.clone())
                        .map_err(|e| err("ca_file", format!("{}: {e}", path.display())))?;
                }
                let cas = certs.iter().map(parse_cert).collect();
                (Arc::new(store), cas)
            }
        };
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| err("ca_file", e.to_string()))?;
        let identity = match (&o.cert_file, &o.key_file) {
            (None, None) => None,
            (Some(_), None) => return Err(err("key_file", "required with cert_file".into())),
            (None, Some(_)) => return Err(err("cert_file", "required with key_file".into())),
            (Some(cert), Some(key)) => {
                let chain = load_certs(cert).map_err(|m| err("cert_file", m))?;
                // Never echo key material: only the path and the kind of problem.
                let der = PrivateKeyDer::from_pem_file(key).map_err(|_| {
                    err(
                        "key_file",
                        format!("{}: no readable PEM private key", key.display()),
                    )
                })?;
                let signing = provider.key_provider.load_private_key(der).map_err(|_| {
                    err(
                        "key_file",
                        format!("{}: unsupported private key type", key.display()),
                    )
                })?;
                Some((chain, signing))
            }
        };
        let server_name = o
            .server_name
            .as_deref()
            .map(|n| {
                ServerName::try_from(n.to_owned())
                    .map_err(|_| err("server_name", format!("not a valid DNS name or IP: {n:?}")))
            })
            .transpose()?;
        Ok(Self {
            provider,
            verifier,
            custom_cas,
            parsed: Arc::new(CertCache::default()),
            identity,
            server_name,
            insecure: o.insecure,
            expiry_threshold: o.expiry_threshold,
        })
    }

    /// Performs a fresh handshake (no resumption) in the `tls` phase.
    ///
    /// On failure the facts gathered so far (the presented chain) are
    /// returned alongside the failure.
    pub(crate) async fn handshake<IO>(
        &self,
        io: IO,
        host: &str,
        alpn: &[&[u8]],
        rec: &mut Recorder,
    ) -> Result<Handshake<IO>, (Failure, TlsFacts)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        rec.start(Phase::Tls);
        let capture = Arc::new(Mutex::new(Capture::default()));
        let server_name = match &self.server_name {
            Some(n) => n.clone(),
            None => {
                let h = host.trim_start_matches('[').trim_end_matches(']');
                match ServerName::try_from(h.to_owned()) {
                    Ok(n) => n,
                    Err(_) => {
                        return Err((
                            Failure::new(
                                Reason::TlsHandshake,
                                format!("invalid server name {h:?}"),
                            ),
                            TlsFacts::default(),
                        ));
                    }
                }
            }
        };
        let config = self.client_config(&capture, alpn);
        let connector = TlsConnector::from(Arc::new(config));
        let result = connector.connect(server_name.clone(), io).await;
        let cap = std::mem::take(&mut *capture.lock().unwrap_or_else(PoisonError::into_inner));
        let mut facts = self.facts(&server_name, &cap);
        match result {
            Ok(stream) => {
                let (_, conn) = stream.get_ref();
                facts.version = conn.protocol_version().map(version_name);
                facts.cipher = conn
                    .negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite()));
                facts.alpn = conn
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                let unverified = cap.error.as_ref().map(|e| classify_verify_error(e, &facts));
                Ok(Handshake {
                    stream,
                    facts,
                    unverified,
                })
            }
            Err(e) => {
                let failure = match &cap.error {
                    Some(ve) => {
                        let mut f = classify_verify_error(ve, &facts);
                        if self.insecure && self.identity.is_some() {
                            // Insecure mode only fails here because our key refused to sign.
                            f.message.push_str(
                                "; client certificate withheld from the unverified server",
                            );
                        }
                        f
                    }
                    None => handshake_failure(&e),
                };
                Err((failure, facts))
            }
        }
    }

    /// Fails when the earliest presented expiry is within the threshold.
    pub(crate) fn check_expiry(&self, facts: &TlsFacts, now: DateTime<Utc>) -> Result<(), Failure> {
        let (Some(threshold), Some(earliest)) = (self.expiry_threshold, facts.earliest_expiry)
        else {
            return Ok(());
        };
        let left = earliest - now;
        let threshold_c = chrono::Duration::from_std(threshold).unwrap_or(chrono::Duration::MAX);
        if left < threshold_c {
            let left_s = left.num_seconds().max(0) as u64;
            return Err(Failure::new(
                Reason::TlsExpiringSoon,
                format!(
                    "certificate expires {} (in {}), within the threshold of {}",
                    earliest.to_rfc3339(),
                    humantime::format_duration(Duration::from_secs(left_s)),
                    humantime::format_duration(threshold)
                ),
            ));
        }
        Ok(())
    }

    fn client_config(&self, capture: &Arc<Mutex<Capture>>, alpn: &[&[u8]]) -> ClientConfig {
        let verifier = Arc::new(RecordingVerifier {
            inner: self.verifier.clone(),
            insecure: self.insecure,
            capture: capture.clone(),
        });
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring provider supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder.with_client_cert_resolver(Arc::new(GuardedIdentity(
                Arc::new(CertifiedKey::new(
                    chain.clone(),
                    Arc::new(GuardedKey {
                        inner: key.clone(),
                        capture: capture.clone(),
                    }),
                )),
            ))),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.resumption = Resumption::disabled();
        config.enable_early_data = false;
        config
    }

    fn facts(&self, server_name: &ServerName<'_>, cap: &Capture) -> TlsFacts {
        let parsed: Vec<Arc<ParsedCert>> = cap.chain.iter().map(|c| self.parsed.get(c)).collect();
        let chain: Vec<CertInfo> = parsed.iter().map(|p| p.info.clone()).collect();
        let earliest_expiry = chain.iter().filter_map(|c| c.not_after).min();
        let verified = cap.verified && cap.error.is_none();
        let verified_chain_expiry = if verified {
            self.verified_path_expiry(&parsed)
        } else {
            None
        };
        TlsFacts {
            server_name: match server_name {
                ServerName::DnsName(n) => n.as_ref().to_owned(),
                ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
                _ => String::new(),
            },
            version: None,
            cipher: None,
            alpn: None,
            verified,
            verify_error: cap.error.as_ref().map(|e| e.to_string()),
            chain,
            earliest_expiry,
            verified_chain_expiry,
        }
    }

    /// The path webpki accepted, rebuilt by issuer/subject names from the
    /// leaf through the presented intermediates (signatures were already
    /// checked by the verifier), plus the anchor when its certificate came
    /// from `ca_file`.
    fn verified_path_expiry(&self, parsed: &[Arc<ParsedCert>]) -> Option<DateTime<Utc>> {
        let leaf = parsed.first()?;
        let mut earliest = leaf.info.not_after;
        let mut used = vec![0usize];
        let mut current = leaf;
        // Bounded by the number of presented certificates.
        while current.issuer != current.subject {
            let next = parsed
                .iter()
                .enumerate()
                .find(|(i, c)| !used.contains(i) && c.subject == current.issuer);
            match next {
                Some((i, c)) => {
                    used.push(i);
                    earliest = min_opt(earliest, c.info.not_after);
                    current = c;
                }
                None => break,
            }
        }
        for ca in self.custom_cas.iter() {
            if ca.subject == current.issuer {
                earliest = min_opt(earliest, ca.info.not_after);
            }
        }
        earliest
    }
}

/// A presented certificate as reported, with the raw names that link a path.
#[derive(Debug)]
struct ParsedCert {
    info: CertInfo,
    subject: Vec<u8>,
    issuer: Vec<u8>,
}

/// Parsed certificates by DER, bounded: when full it starts over, so a
/// target that presents a new certificate every time costs a parse per
/// run and no memory growth.
#[derive(Debug, Default)]
struct CertCache(Mutex<std::collections::HashMap<Vec<u8>, Arc<ParsedCert>>>);

impl CertCache {
    const CAPACITY: usize = 32;

    fn get(&self, der: &CertificateDer<'_>) -> Arc<ParsedCert> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = map.get(der.as_ref()) {
            return p.clone();
        }
        let p = Arc::new(parse_cert(der));
        if map.len() >= Self::CAPACITY {
            map.clear();
        }
        map.insert(der.as_ref().to_vec(), p.clone());
        p
    }
}

/// Reads every certificate of a PEM file; an empty file is an error.
fn load_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificates found", path.display()));
    }
    Ok(certs)
}

fn min_opt(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn version_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2".into(),
        rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3".into(),
        other => format!("{other:?}"),
    }
}

/// What the verifier saw on one connection.
#[derive(Debug, Default)]
struct Capture {
    chain: Vec<CertificateDer<'static>>,
    verified: bool,
    error: Option<rustls::Error>,
}

/// rustls' WebPKI verifier, recording the chain and the outcome.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    insecure: bool,
    capture: Arc<Mutex<Capture>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let mut cap = self.capture.lock().unwrap_or_else(PoisonError::into_inner);
        cap.chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        match result {
            Ok(v) => {
                cap.verified = true;
                Ok(v)
            }
            Err(e) => {
                cap.error = Some(e.clone());
                if self.insecure {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(e)
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Offers the client certificate; its key refuses to sign unless the server
/// chain verified, so an unverified peer never gets proof of our identity.
#[derive(Debug)]
struct GuardedIdentity(Arc<CertifiedKey>);

impl ResolvesClientCert for GuardedIdentity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[derive(Debug)]
struct GuardedKey {
    inner: Arc<dyn SigningKey>,
    capture: Arc<Mutex<Capture>>,
}

impl SigningKey for GuardedKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let inner = self.inner.choose_scheme(offered)?;
        Some(Box::new(GuardedSigner {
            inner,
            capture: self.capture.clone(),
        }))
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        self.inner.algorithm()
    }
}

#[derive(Debug)]
struct GuardedSigner {
    inner: Box<dyn Signer>,
    capture: Arc<Mutex<Capture>>,
}

impl Signer for GuardedSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let verified = {
            let cap = self.capture.lock().unwrap_or_else(PoisonError::into_inner);
            cap.verified && cap.error.is_none()
        };
        if !verified {
            return Err(rustls::Error::General(
                "client certificate withheld: server certificate not verified".into(),
            ));
        }
        self.inner.sign(message)
    }

    fn scheme(&self) -> SignatureScheme {
        self.inner.scheme()
    }
}

/// Maps a verification error to a reason, telling self-signed leaves apart
/// from other untrusted chains.
fn classify_verify_error(e: &rustls::Error, facts: &TlsFacts) -> Failure {
    let msg = format!("certificate verification failed: {e}");
    let reason = match e {
        rustls::Error::InvalidCertificate(ce) => match ce {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                Reason::TlsExpired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Reason::TlsNotYetValid
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Reason::TlsHostname
            }
            CertificateError::UnknownIssuer => {
                if facts.chain.len() == 1 && facts.chain[0].self_issued {
                    Reason::TlsSelfSigned
                } else {
                    Reason::TlsUntrusted
                }
            }
            _ => Reason::TlsCertificate,
        },
        _ => Reason::TlsCertificate,
    };
    Failure::new(reason, msg)
}

fn handshake_failure(e: &std::io::Error) -> Failure {
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .map(|r| r.to_string());
    let msg = match inner {
        Some(r) => format!("TLS handshake failed: {r}"),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "TLS handshake failed: connection closed by peer".to_owned()
        }
        None => format!("TLS handshake failed: {e}"),
    };
    Failure::new(Reason::TlsHandshake, msg)
}

/// The TLS error behind an I/O error after the handshake, if any.
///
/// In TLS 1.3 the client finishes its side of the handshake before the
/// server has checked the client's certificate; a server that rejects it
/// (or requires one that was not sent) answers with an alert that surfaces
/// on the first read. That is a handshake failure, not an I/O error.
pub(crate) fn late_tls_failure(
    e: &(dyn std::error::Error + 'static),
    during: &str,
) -> Option<Failure> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(tls_rejected(r, during));
        }
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(tls_rejected(r, during));
        }
        cur = err.source();
    }
    None
}

pub(crate) fn tls_rejected(e: &rustls::Error, during: &str) -> Failure {
    Failure::new(
        Reason::TlsHandshake,
        format!("TLS session rejected during {during}: {e}"),
    )
}

fn asn1_to_chrono(t: x509_parser::time::ASN1Time) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp(t.timestamp(), 0)
}

/// Parses the facts of one certificate; unparseable certificates still get
/// their fingerprint.
fn parse_cert(der: &CertificateDer<'_>) -> ParsedCert {
    use x509_parser::prelude::*;
    let fingerprint_sha256 = hex(&Sha256::digest(der.as_ref()));
    let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
        return ParsedCert {
            info: CertInfo {
                subject: "<unparseable certificate>".into(),
                fingerprint_sha256,
                ..CertInfo::default()
            },
            subject: Vec::new(),
            issuer: Vec::new(),
        };
    };
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(n) => sans.push((*n).to_owned()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => sans.push(
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string(),
                    ),
                    16 => sans.push(
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string(),
                    ),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let info = CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string(),
        not_before: asn1_to_chrono(cert.validity().not_before),
        not_after: asn1_to_chrono(cert.validity().not_after),
        sans,
        fingerprint_sha256,
        self_issued: cert.subject().as_raw() == cert.issuer().as_raw(),
    };
    ParsedCert {
        info,
        subject: cert.subject().as_raw().to_vec(),
        issuer: cert.issuer().as_raw().to_vec(),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
