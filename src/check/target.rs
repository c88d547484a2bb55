//! Target URLs, one syntax for `varde check`, `probes/*.toml` and `/probe`:
//!
//! * `http://host[:port]/path`, `https://host[:port]/path` — an HTTP check;
//! * `dns://SERVER[:port]/NAME[?type=MX&transport=tcp]` — a DNS query;
//! * `tcp://host:port` — a TCP connect; `tls://host:port` — TCP + TLS.

use super::dns::DnsTransport;
use super::{CheckKind, CheckSpec, DnsOptions, HttpOptions, TcpOptions, TlsOptions};

/// What a target URL says, before any options are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Http {
        url: String,
    },
    Dns {
        server: String,
        name: String,
        /// From `?type=`; `None` leaves the option's default (A).
        query_type: Option<String>,
        /// From `?transport=`.
        transport: Option<DnsTransport>,
    },
    Tcp {
        address: String,
        tls: bool,
    },
}

/// The target schemes, for messages.
pub const SCHEMES: &str = "http://, https://, dns://, tcp:// or tls://";

impl Target {
    /// Parses a target URL; the error says what was expected.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("target {s:?} needs a scheme: {SCHEMES}"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => {
                let url = url::Url::parse(s).map_err(|e| format!("invalid URL {s:?}: {e}"))?;
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(format!("URL {s:?} has no host"));
                }
                Ok(Target::Http { url: s.to_owned() })
            }
            "dns" => parse_dns(s),
            scheme @ ("tcp" | "tls") => {
                let address = rest.trim_end_matches('/');
                if address.is_empty() || address.contains('/') || address.contains('?') {
                    return Err(format!("{scheme}:// targets are host:port only, got {s:?}"));
                }
                super::tcp::split_host_port(address)?;
                Ok(Target::Tcp {
                    address: address.to_owned(),
                    tls: scheme == "tls",
                })
            }
            other => Err(format!("unsupported scheme {other:?}: use {SCHEMES}")),
        }
    }

    pub fn kind(&self) -> CheckKind {
        match self {
            Target::Http { .. } => CheckKind::Http,
            Target::Dns { .. } => CheckKind::Dns,
            Target::Tcp { .. } => CheckKind::Tcp,
        }
    }

    /// Whether the target speaks TLS (https:// or tls://).
    pub fn is_tls(&self) -> bool {
        match self {
            Target::Http { url } => url
                .get(..8)
                .is_some_and(|p| p.eq_ignore_ascii_case("https://")),
            Target::Tcp { tls, .. } => *tls,
            Target::Dns { .. } => false,
        }
    }

    /// A definition with default options and this target filled in.
    pub fn default_spec(&self) -> CheckSpec {
        match self.clone() {
            Target::Http { url } => CheckSpec::Http(HttpOptions {
                url,
                ..HttpOptions::default()
            }),
            Target::Dns {
                server,
                name,
                query_type,
                transport,
            } => {
                let d = DnsOptions::default();
                CheckSpec::Dns(DnsOptions {
                    server,
                    name,
                    query_type: query_type.unwrap_or(d.query_type.clone()),
                    transport: transport.unwrap_or(d.transport),
                    ..d
                })
            }
            Target::Tcp { address, tls } => CheckSpec::Tcp(TcpOptions {
                address,
                tls: tls.then(TlsOptions::default),
                ..TcpOptions::default()
            }),
        }
    }
}

fn parse_dns(s: &str) -> Result<Target, String> {
    let url = url::Url::parse(s).map_err(|e| format!("invalid URL {s:?}: {e}"))?;
    let server = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) if h.contains(':') => format!("[{}]:{p}", h.trim_matches(['[', ']'])),
        (Some(h), Some(p)) if !h.is_empty() => format!("{h}:{p}"),
        (Some(h), None) if !h.is_empty() => h.to_owned(),
        _ => return Err("dns:// target needs a server: dns://SERVER/NAME".into()),
    };
    let name = url.path().trim_start_matches('/').to_owned();
    if name.is_empty() {
        return Err("dns:// target needs a name: dns://SERVER/NAME".into());
    }
    let mut query_type = None;
    let mut transport = None;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "type" => query_type = Some(v.to_ascii_uppercase()),
            "transport" => {
                transport = Some(match v.as_ref() {
                    "udp" => DnsTransport::Udp,
                    "tcp" => DnsTransport::Tcp,
                    other => return Err(format!("transport must be udp or tcp, got {other:?}")),
                })
            }
            other => {
                return Err(format!(
                    "unknown dns:// parameter {other:?} (expected type, transport)"
                ));
            }
        }
    }
    Ok(Target::Dns {
        server,
        name,
        query_type,
        transport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            Target::parse("https://example.com/health").unwrap(),
            Target::Http {
                url: "https://example.com/health".into()
            }
        );
        assert_eq!(
            Target::parse("dns://[::1]:5353/example.com?type=mx&transport=tcp").unwrap(),
            Target::Dns {
                server: "[::1]:5353".into(),
                name: "example.com".into(),
                query_type: Some("MX".into()),
                transport: Some(DnsTransport::Tcp),
            }
        );
        assert_eq!(
            Target::parse("tls://mail.example.com:465").unwrap(),
            Target::Tcp {
                address: "mail.example.com:465".into(),
                tls: true
            }
        );
        assert!(
            Target::parse("tls://mail.example.com:465")
                .unwrap()
                .is_tls()
        );
        assert!(!Target::parse("http://a/").unwrap().is_tls());
    }

    #[test]
    fn rejects_what_it_cannot_check() {
        for (bad, says) in [
            ("example.com", "needs a scheme"),
            ("ftp://example.com/", "unsupported scheme"),
            ("tcp://host", "host:port"),
            ("tcp://host:25/path", "host:port only"),
            ("dns://1.1.1.1/", "needs a name"),
            ("dns://1.1.1.1/a?foo=1", "unknown dns:// parameter"),
            ("http://", "invalid URL"),
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
