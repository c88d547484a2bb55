//! Name resolution for varde's own connections: a probe pushing to its
//! coordinator, notification channels (webhooks, Slack, Teams, PagerDuty,
//! SMTP), the API client of the CLI and `varde healthcheck`.
//!
//! Everything goes through hickory, never the libc resolver
//! (`getaddrinfo`), so a static binary on an image with no libc resolves
//! names with nothing but `/etc/resolv.conf` and `/etc/hosts`, and a lookup
//! is an async task rather than a blocking thread.
//!
//! Checks do not use this: they build a fresh, uncached resolver per run
//! (`check::net`) because they measure resolution. This one is built once
//! per client and caches answers for their TTL. `localhost` and names
//! under `.localhost` are loopback without asking anyone (RFC 6761).

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use tokio::net::TcpStream;
use tokio::sync::OnceCell;

/// A shared, caching resolver. Cheap to clone; the hickory resolver is
/// built on first use, inside the runtime that uses it.
#[derive(Clone)]
pub struct HostResolver {
    inner: Arc<Inner>,
}

struct Inner {
    config: ResolverConfig,
    opts: ResolverOpts,
    resolver: OnceCell<TokioResolver>,
}

impl std::fmt::Debug for HostResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostResolver")
            .field("name_servers", &self.inner.config.name_servers().len())
            .finish()
    }
}

impl HostResolver {
    /// The system's resolver configuration (`/etc/resolv.conf`,
    /// `/etc/hosts`); without a resolv.conf, a resolver on 127.0.0.1.
    pub fn system() -> HostResolver {
        let (config, opts) = crate::check::net::system_conf();
        Self::from_parts(config, opts)
    }

    /// Asks only the DNS server at `server` (no hosts file): for tests and
    /// for hosts with a dedicated resolver.
    pub fn with_server(server: SocketAddr) -> HostResolver {
        let (config, opts) = crate::check::net::server_conf(server);
        Self::from_parts(config, opts)
    }

    fn from_parts(config: ResolverConfig, mut opts: ResolverOpts) -> HostResolver {
        // Both families, in the order the resolver returns them; `connect`
        // falls through to the next address when one refuses.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.timeout = opts.timeout.min(Duration::from_secs(5));
        HostResolver {
            inner: Arc::new(Inner {
                config,
                opts,
                resolver: OnceCell::new(),
            }),
        }
    }

    async fn resolver(&self) -> io::Result<&TokioResolver> {
        self.inner
            .resolver
            .get_or_try_init(|| async {
                hickory_resolver::Resolver::builder_with_config(
                    self.inner.config.clone(),
                    TokioRuntimeProvider::default(),
                )
                .with_options(self.inner.opts.clone())
                .build()
                .map_err(|e| io::Error::other(format!("resolver setup: {e}")))
            })
            .await
    }

    /// The addresses of `host`: an IP literal (brackets allowed) as is,
    /// `localhost` as loopback, anything else from DNS or the hosts file.
    /// Never empty on success.
    pub async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let name = bare.trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return Ok(vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]);
        }
        let resolver = self.resolver().await?;
        let lookup = resolver.lookup_ip(bare).await.map_err(|e| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("cannot resolve {bare}: {e}"),
            )
        })?;
        let mut addrs: Vec<IpAddr> = lookup.iter().collect();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("cannot resolve {bare}: no addresses"),
            ));
        }
        Ok(addrs)
    }

    /// A TCP connection to `host:port`: each address in turn, each given
    /// `per_address` to accept, until one does. The error is the last
    /// address's, naming it.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        per_address: Duration,
    ) -> io::Result<TcpStream> {
        let addrs = self.lookup(host).await?;
        let mut last = None;
        for ip in addrs {
            let addr = SocketAddr::new(ip, port);
            match tokio::time::timeout(per_address, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    stream.set_nodelay(true)?;
                    return Ok(stream);
                }
                Ok(Err(e)) => last = Some(io::Error::new(e.kind(), format!("{addr}: {e}"))),
                Err(_) => {
                    last = Some(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "{addr}: no answer within {}",
                            humantime::format_duration(per_address)
                        ),
                    ));
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other(format!("{host}: no address to connect to"))))
    }
}

/// The TCP connector of varde's own HTTP clients (notification channels,
/// the API client): names through [`HostResolver::system`], http and https
/// URLs (TLS is layered on top), no Nagle, `connect_timeout` per attempt.
pub fn http_connector(connect_timeout: Duration) -> HttpConnector<HostResolver> {
    let mut http = HttpConnector::new_with_resolver(HostResolver::system());
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http
}

/// hyper-util's `HttpConnector` resolves through this (its `Resolve` is
/// implemented for every such service). The connector sets the port.
impl tower_service::Service<Name> for HostResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.lookup(name.as_str()).await?;
            Ok(addrs
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}
