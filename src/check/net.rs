//! Name resolution and TCP connect, shared by every check kind.
//!
//! Each run builds its own hickory resolver from configuration read at build
//! time, so no answer is ever cached between runs, and connects a fresh
//! socket: a check measures what a new client would see.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};

use super::{Failure, Phase, Reason, Recorder, SpecError};

/// Which address family to try first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpPreference {
    /// IPv6 first (blackbox_exporter's default).
    #[default]
    Ip6,
    /// IPv4 first.
    Ip4,
}

/// Network options common to all check kinds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetOptions {
    /// Address family tried first.
    pub ip_preference: IpPreference,
    /// Whether the other family may be used when the preferred one has no
    /// address or its connects fail. `false` restricts to the preferred family.
    pub ip_fallback: bool,
    /// Resolve with this DNS server (`IP` or `IP:port`) instead of the system's.
    pub dns_server: Option<String>,
    /// Local address to connect from (e.g. to act as a given region).
    pub source_address: Option<IpAddr>,
}

impl Default for NetOptions {
    fn default() -> Self {
        Self {
            ip_preference: IpPreference::Ip6,
            ip_fallback: true,
            dns_server: None,
            source_address: None,
        }
    }
}

/// Prepared resolver configuration and connect policy.
#[derive(Clone, Debug)]
pub struct Net {
    options: NetOptions,
    /// `None` until a host name needs resolving; then the system or custom config.
    resolver: Option<Arc<(ResolverConfig, ResolverOpts)>>,
}

/// How long a read of the system resolver configuration is reused: building
/// thousands of checks (a config load, a burst of `/probe` requests) reads
/// it once, and a changed resolv.conf is still picked up soon.
const SYSTEM_CONF_TTL: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) fn system_conf() -> (ResolverConfig, ResolverOpts) {
    use std::sync::{Mutex, PoisonError};
    type Cached = Option<(std::time::Instant, (ResolverConfig, ResolverOpts))>;
    static CACHE: Mutex<Cached> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((at, conf)) = cache.as_ref()
        && at.elapsed() < SYSTEM_CONF_TTL
    {
        return conf.clone();
    }
    let conf = match hickory_resolver::system_conf::read_system_conf() {
        Ok((config, opts)) => (config, opts),
        // No resolv.conf (minimal containers): use the loopback resolver;
        // failures surface as dns_error per run.
        Err(_) => (
            ResolverConfig::from_parts(
                None,
                vec![],
                vec![NameServerConfig::udp_and_tcp(IpAddr::from([127, 0, 0, 1]))],
            ),
            ResolverOpts::default(),
        ),
    };
    *cache = Some((std::time::Instant::now(), conf.clone()));
    conf
}

/// A resolver that asks only the DNS server at `addr` (UDP, then TCP for
/// truncated answers) and never reads the hosts file.
pub(crate) fn server_conf(addr: SocketAddr) -> (ResolverConfig, ResolverOpts) {
    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
    for c in &mut ns.connections {
        c.port = addr.port();
    }
    let config = ResolverConfig::from_parts(None, vec![], vec![ns]);
    let mut opts = ResolverOpts::default();
    opts.use_hosts_file = ResolveHosts::Never;
    (config, opts)
}

impl Net {
    /// Validates the options and reads the resolver configuration once.
    pub fn build(options: &NetOptions) -> Result<Self, SpecError> {
        let resolver = match &options.dns_server {
            Some(server) => {
                let addr =
                    parse_server_addr(server, 53).map_err(|m| SpecError::new("dns_server", m))?;
                server_conf(addr)
            }
            None => system_conf(),
        };
        let (config, mut opts) = resolver;
        opts.cache_size = 0;
        opts.ip_strategy = match (options.ip_preference, options.ip_fallback) {
            (IpPreference::Ip6, true) => LookupIpStrategy::Ipv6AndIpv4,
            (IpPreference::Ip4, true) => LookupIpStrategy::Ipv4AndIpv6,
            (IpPreference::Ip6, false) => LookupIpStrategy::Ipv6Only,
            (IpPreference::Ip4, false) => LookupIpStrategy::Ipv4Only,
        };
        Ok(Self {
            options: options.clone(),
            resolver: Some(Arc::new((config, opts))),
        })
    }

    pub fn options(&self) -> &NetOptions {
        &self.options
    }

    /// Resolves `host` (a name or an IP literal, brackets allowed) in the
    /// `resolve` phase, returning addresses with the preferred family first.
    pub async fn resolve(&self, host: &str, rec: &mut Recorder) -> Result<Vec<IpAddr>, Failure> {
        rec.start(Phase::Resolve);
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let mut addrs = if let Ok(ip) = literal.parse::<IpAddr>() {
            vec![ip]
        } else {
            self.lookup(host).await?
        };
        self.order(&mut addrs);
        if addrs.is_empty() {
            return Err(Failure::new(
                Reason::DnsNoAddress,
                format!("{host} has no address of an allowed family"),
            ));
        }
        Ok(addrs)
    }

    async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, Failure> {
        let Some(cfg) = &self.resolver else {
            return Err(Failure::new(Reason::DnsError, "no resolver configured"));
        };
        let (config, opts) = (**cfg).clone();
        let resolver: TokioResolver = hickory_resolver::Resolver::builder_with_config(
            config,
            TokioRuntimeProvider::default(),
        )
        .with_options(opts)
        .build()
        .map_err(|e| Failure::new(Reason::DnsError, format!("resolver setup: {e}")))?;
        // A fully-qualified query avoids search-list expansion surprises for
        // names with dots; bare names (e.g. "localhost") keep the search list.
        match resolver.lookup_ip(host).await {
            Ok(lookup) => Ok(lookup.iter().collect()),
            Err(e) => Err(classify_resolve_error(host, &e)),
        }
    }

    /// Orders addresses: preferred family first, the other dropped when
    /// fallback is off. Stable within a family (the resolver's order).
    fn order(&self, addrs: &mut Vec<IpAddr>) {
        let preferred = |ip: &IpAddr| match self.options.ip_preference {
            IpPreference::Ip6 => ip.is_ipv6(),
            IpPreference::Ip4 => ip.is_ipv4(),
        };
        if !self.options.ip_fallback {
            addrs.retain(preferred);
        }
        addrs.sort_by_key(|ip| !preferred(ip));
        addrs.dedup();
    }

    /// Connects to the first address that accepts, in order, in the
    /// `connect` phase. Refused/unreachable addresses fall through to the
    /// next; the reason reported is that of the last attempt.
    pub async fn connect(
        &self,
        addrs: &[IpAddr],
        port: u16,
        rec: &mut Recorder,
    ) -> Result<(TcpStream, SocketAddr), Failure> {
        rec.start(Phase::Connect);
        let mut last = Failure::new(Reason::ConnectError, "no address to connect to");
        for ip in addrs {
            let addr = SocketAddr::new(*ip, port);
            match self.connect_one(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok((s, addr));
                }
                Err(e) => last = classify_connect_error(addr, &e),
            }
        }
        Err(last)
    }

    async fn connect_one(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(src) = self.options.source_address {
            if src.is_ipv4() != addr.is_ipv4() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrNotAvailable,
                    format!("source address {src} cannot reach {addr}"),
                ));
            }
            socket.bind(SocketAddr::new(src, 0))?;
        }
        socket.connect(addr).await
    }
}

/// Parses `IP`, `IP:port` or `[IPv6]:port`.
pub fn parse_server_addr(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let bare = match s.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .ok_or_else(|| format!("unbalanced brackets in {s:?}"))?,
        None => s,
    };
    bare.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| format!("expected IP or IP:port, got {s:?}"))
}

fn classify_resolve_error(host: &str, e: &NetError) -> Failure {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr))
            if nr.response_code == ResponseCode::NXDomain =>
        {
            Failure::new(
                Reason::DnsNxdomain,
                format!("{host}: no such domain (NXDOMAIN)"),
            )
        }
        NetError::Dns(DnsError::NoRecordsFound(_)) => Failure::new(
            Reason::DnsNoAddress,
            format!("{host}: no address records of an allowed family"),
        ),
        NetError::Dns(DnsError::ResponseCode(code)) => Failure::new(
            Reason::DnsError,
            format!("{host}: resolver answered {code}"),
        ),
        NetError::Timeout => {
            Failure::new(Reason::DnsTimeout, format!("{host}: resolver timed out"))
        }
        other => Failure::new(Reason::DnsError, format!("{host}: {other}")),
    }
}

pub(crate) fn classify_connect_error(addr: SocketAddr, e: &std::io::Error) -> Failure {
    use std::io::ErrorKind::*;
    let reason = match e.kind() {
        ConnectionRefused => Reason::ConnectRefused,
        TimedOut => Reason::ConnectTimeout,
        _ => Reason::ConnectError,
    };
    Failure::new(reason, format!("connect to {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addr_forms() {
        assert_eq!(
            parse_server_addr("127.0.0.1", 53).unwrap(),
            "127.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_server_addr("[::1]:5353", 53).unwrap(),
            "[::1]:5353".parse().unwrap()
        );
        assert_eq!(
            parse_server_addr("::1", 53).unwrap(),
            "[::1]:53".parse().unwrap()
        );
        assert!(parse_server_addr("dns.example", 53).is_err());
        assert!(parse_server_addr("[::1", 53).is_err());
        assert!(parse_server_addr("::1]", 53).is_err());
        assert_eq!(
            parse_server_addr("[::1]", 53).unwrap(),
            "[::1]:53".parse().unwrap()
        );
    }

    #[test]
    fn order_prefers_family_and_drops_without_fallback() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        let mut net = Net {
            options: NetOptions::default(),
            resolver: None,
        };
        let mut a = vec![v4, v6];
        net.order(&mut a);
        assert_eq!(a, vec![v6, v4]);
        net.options.ip_preference = IpPreference::Ip4;
        net.options.ip_fallback = false;
        let mut a = vec![v6, v4];
        net.order(&mut a);
        assert_eq!(a, vec![v4]);
    }
}
