//! TCP check: connect (optionally TLS), optionally send, then expect a regex
//! on the first bytes read, within a bounded read.

use regex::bytes::Regex;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::net::Net;
use super::tls::TlsClient;
use super::{Facts, Failure, NetOptions, Phase, Reason, Recorder, SpecError, TlsOptions};

/// Default number of bytes read while looking for `expect`.
pub const DEFAULT_READ_LIMIT: u64 = 64 * 1024;

/// A TCP check as written by a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpOptions {
    /// `host:port` (IPv6 literals in brackets).
    pub address: String,
    /// Speak TLS after connecting (present, even empty, means TLS).
    pub tls: Option<TlsOptions>,
    /// Bytes to send once connected.
    pub send: Option<String>,
    /// Regex the data read must match (read until it matches, the peer
    /// closes, or `read_limit` bytes).
    pub expect: Option<String>,
    /// Maximum bytes read while looking for `expect`.
    pub read_limit: u64,
    pub net: NetOptions,
}

impl Default for TcpOptions {
    fn default() -> Self {
        Self {
            address: String::new(),
            tls: None,
            send: None,
            expect: None,
            read_limit: DEFAULT_READ_LIMIT,
            net: NetOptions::default(),
        }
    }
}

/// What a TCP check saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpFacts {
    pub remote_addr: Option<String>,
    /// Bytes read from the peer.
    pub bytes_read: u64,
    /// First line the peer sent (lossy UTF-8, at most 256 characters).
    pub banner: Option<String>,
    /// The text `expect` matched (at most 256 characters).
    pub matched: Option<String>,
}

#[derive(Debug)]
pub(crate) struct TcpCheck {
    target: String,
    host: String,
    port: u16,
    tls: Option<TlsClient>,
    send: Option<Vec<u8>>,
    expect: Option<(String, Regex)>,
    read_limit: u64,
    net: Net,
}

/// Splits `host:port`, accepting `[v6]:port`.
pub(crate) fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let bad = || format!("expected host:port, got {s:?}");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
        return Err(bad());
    }
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    ))
}

impl TcpCheck {
    pub(crate) fn build(o: &TcpOptions) -> Result<Self, SpecError> {
        let (host, port) = split_host_port(&o.address).map_err(|m| SpecError::new("address", m))?;
        let expect = o
            .expect
            .as_ref()
            .map(|p| {
                Regex::new(p)
                    .map(|r| (p.clone(), r))
                    .map_err(|e| SpecError::new("expect", format!("invalid regex {p:?}: {e}")))
            })
            .transpose()?;
        if o.read_limit == 0 {
            return Err(SpecError::new("read_limit", "must be greater than zero"));
        }
        Ok(Self {
            target: o.address.clone(),
            host,
            port,
            tls: o
                .tls
                .as_ref()
                .map(|t| TlsClient::build(t, "tls"))
                .transpose()?,
            send: o.send.as_ref().map(|s| s.as_bytes().to_vec()),
            expect,
            read_limit: o.read_limit,
            net: Net::build(&o.net)?,
        })
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    pub(crate) async fn run(
        &self,
        rec: &mut Recorder,
        facts: &mut Facts,
    ) -> Result<String, Failure> {
        let addrs = self.net.resolve(&self.host, rec).await?;
        let (tcp, addr) = self.net.connect(&addrs, self.port, rec).await?;
        facts.tcp = Some(TcpFacts {
            remote_addr: Some(addr.to_string()),
            ..TcpFacts::default()
        });
        match &self.tls {
            None => self.converse(tcp, rec, facts).await,
            Some(tls) => {
                let hs = match tls.handshake(tcp, &self.host, &[], rec).await {
                    Ok(hs) => hs,
                    Err((f, tls_facts)) => {
                        facts.tls = Some(tls_facts);
                        return Err(f);
                    }
                };
                let expiring = tls.check_expiry(&hs.facts, chrono::Utc::now());
                facts.tls = Some(hs.facts);
                let msg = self.converse(hs.stream, rec, facts).await?;
                expiring?;
                Ok(msg)
            }
        }
    }

    async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        rec: &mut Recorder,
        facts: &mut Facts,
    ) -> Result<String, Failure> {
        let tcp = facts.tcp.get_or_insert_with(TcpFacts::default);
        let remote = tcp.remote_addr.clone().unwrap_or_default();
        rec.start(Phase::Processing);
        if let Some(data) = &self.send {
            stream
                .write_all(data)
                .await
                .and(stream.flush().await)
                .map_err(|e| io_failure(&e, "send"))?;
        }
        let Some((src, re)) = &self.expect else {
            rec.end();
            return Ok(format!("connected to {remote}"));
        };
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let room = (self.read_limit as usize)
                .saturating_sub(buf.len())
                .min(chunk.len());
            if room == 0 {
                return Err(Failure::new(
                    Reason::TcpExpectMismatch,
                    format!("no match for {src:?} in the first {} bytes", buf.len()),
                ));
            }
            let n = stream
                .read(&mut chunk[..room])
                .await
                .map_err(|e| io_failure(&e, "read"))?;
            if n == 0 {
                return Err(Failure::new(
                    Reason::TcpExpectMismatch,
                    format!(
                        "peer closed after {} bytes without a match for {src:?}",
                        buf.len()
                    ),
                ));
            }
            if buf.is_empty() {
                rec.start(Phase::Transfer);
            }
            buf.extend_from_slice(&chunk[..n]);
            tcp.bytes_read = buf.len() as u64;
            if tcp.banner.is_none()
                && let Some(end) = buf.iter().position(|b| *b == b'\n')
            {
                tcp.banner = Some(clip(&buf[..end]));
            }
            if let Some(m) = re.find(&buf) {
                tcp.matched = Some(clip(m.as_bytes()));
                rec.end();
                return Ok(format!(
                    "matched {src:?} after {} bytes from {remote}",
                    buf.len()
                ));
            }
        }
    }
}

fn clip(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim_end_matches('\r');
    s.chars().take(256).collect()
}

fn io_failure(e: &std::io::Error, during: &str) -> Failure {
    super::tls::late_tls_failure(e, during)
        .unwrap_or_else(|| Failure::new(Reason::IoError, format!("{during}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("example.com:25"),
            Ok(("example.com".into(), 25))
        );
        assert_eq!(split_host_port("[::1]:22"), Ok(("::1".into(), 22)));
        assert!(split_host_port("::1:22").is_err());
        assert!(split_host_port("host").is_err());
        assert!(split_host_port("host:0").is_err());
        assert!(split_host_port(":80").is_err());
    }
}
