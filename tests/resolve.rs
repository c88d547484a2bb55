//! varde's own connections (probe → coordinator, notification channels,
//! the CLI's API client) resolve names with hickory, never getaddrinfo: a
//! real DNS server (hickory-server on loopback) answers, and the built
//! binary does not even import the libc resolver.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{Name, RData, Record};
use hickory_server::Server;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use varde::resolve::HostResolver;

const PER_ADDRESS: Duration = Duration::from_secs(2);

fn record(owner: &str, data: RData) -> Record {
    Record::from_rdata(Name::from_str(owner).unwrap(), 60, data)
}

/// A DNS server for `fleet.test.`: `coordinator` has one IPv4 address,
/// `dual` an IPv6 and an IPv4 one, `hooks` points at 127.0.0.9 (where
/// nothing listens); every other name is NXDOMAIN. Dropping the server
/// stops it.
async fn dns_server() -> (Server<Catalog>, SocketAddr) {
    let origin = Name::from_str("fleet.test.").unwrap();
    let mut zone: InMemoryZoneHandler =
        InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
    let soa = SOA::new(
        Name::from_str("ns.fleet.test.").unwrap(),
        Name::from_str("hostmaster.fleet.test.").unwrap(),
        1,
        3600,
        600,
        86400,
        60,
    );
    for r in [
        record("fleet.test.", RData::SOA(soa)),
        record("coordinator.fleet.test.", RData::A(A(Ipv4Addr::LOCALHOST))),
        record("dual.fleet.test.", RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))),
        record("dual.fleet.test.", RData::A(A(Ipv4Addr::LOCALHOST))),
        record(
            "hooks.fleet.test.",
            RData::A(A(Ipv4Addr::new(127, 0, 0, 9))),
        ),
    ] {
        assert!(zone.upsert_mut(r, 1), "record rejected by the zone");
    }
    let mut catalog = Catalog::new();
    catalog.upsert(origin.into(), vec![Arc::new(zone)]);

    // UDP and TCP on one port, as a DNS server has them.
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = TcpListener::bind(addr).await {
            let mut server = Server::new(catalog);
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 32);
            return (server, addr);
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

/// Accepts connections and answers each with `hello` then closes.
async fn greeter(hello: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(hello).await;
        }
    });
    port
}

/// Connects to `host:port` through `resolver` and reads until the peer closes.
async fn read_from(resolver: &HostResolver, host: &str, port: u16) -> Vec<u8> {
    let mut s = resolver.connect(host, port, PER_ADDRESS).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    buf
}

#[tokio::test]
async fn a_name_resolves_through_the_dns_server_and_connects() {
    let (_dns, dns_addr) = dns_server().await;
    let resolver = HostResolver::with_server(dns_addr);

    assert_eq!(
        resolver.lookup("coordinator.fleet.test").await.unwrap(),
        vec![std::net::IpAddr::V4(Ipv4Addr::LOCALHOST)]
    );

    let port = greeter(b"hi").await;
    assert_eq!(
        read_from(&resolver, "coordinator.fleet.test", port).await,
        b"hi"
    );
}

#[tokio::test]
async fn every_address_is_tried_until_one_accepts() {
    let (_dns, dns_addr) = dns_server().await;
    let resolver = HostResolver::with_server(dns_addr);
    let mut addrs = resolver.lookup("dual.fleet.test").await.unwrap();
    addrs.sort();
    assert_eq!(
        addrs,
        vec![
            std::net::IpAddr::V4(Ipv4Addr::LOCALHOST),
            std::net::IpAddr::V6(Ipv6Addr::LOCALHOST)
        ]
    );
    // Only 127.0.0.1 listens: ::1 refuses (or does not exist), whichever
    // order the answer came in.
    let port = greeter(b"v4").await;
    assert_eq!(read_from(&resolver, "dual.fleet.test", port).await, b"v4");
}

#[tokio::test]
async fn failures_name_the_host_or_the_address() {
    let (_dns, dns_addr) = dns_server().await;
    let resolver = HostResolver::with_server(dns_addr);

    let e = resolver.lookup("missing.fleet.test").await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    assert!(e.to_string().contains("missing.fleet.test"), "{e}");

    // A port nothing listens on: refused, with the address tried.
    let closed = TcpListener::bind("127.0.0.9:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let e = resolver
        .connect("hooks.fleet.test", port, PER_ADDRESS)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    assert!(e.to_string().contains(&format!("127.0.0.9:{port}")), "{e}");
}

#[tokio::test]
async fn localhost_and_literals_need_no_dns_server() {
    // A "DNS server" that never answers: nothing below may ask it.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let resolver = HostResolver::with_server(silent.local_addr().unwrap());
    let loopback = vec![
        std::net::IpAddr::V4(Ipv4Addr::LOCALHOST),
        std::net::IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    assert_eq!(resolver.lookup("localhost").await.unwrap(), loopback);
    assert_eq!(resolver.lookup("LOCALHOST.").await.unwrap(), loopback);
    assert_eq!(resolver.lookup("probe.localhost").await.unwrap(), loopback);
    assert_eq!(
        resolver.lookup("[::1]").await.unwrap(),
        vec![std::net::IpAddr::V6(Ipv6Addr::LOCALHOST)]
    );
    assert_eq!(
        resolver.lookup("127.0.0.3").await.unwrap(),
        vec![std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))]
    );
}

#[tokio::test]
async fn hyper_clients_resolve_through_it() {
    let (_dns, dns_addr) = dns_server().await;
    // A one-shot HTTP server on 127.0.0.1.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| {
            let host = req
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            async move {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                    Bytes::from(host),
                )))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(s), svc)
            .await;
    });

    let connector = HttpConnector::new_with_resolver(HostResolver::with_server(dns_addr));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let uri: hyper::Uri = format!("http://coordinator.fleet.test:{port}/healthz")
        .parse()
        .unwrap();
    let resp = client.get(uri).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        &body[..],
        format!("coordinator.fleet.test:{port}").as_bytes()
    );
}

/// The regression guard for the whole binary: no code path may fall back
/// to the libc resolver (a static image has none that works), so the
/// symbol must not be linked at all.
#[test]
fn the_binary_does_not_link_getaddrinfo() {
    let bin = std::fs::read(env!("CARGO_BIN_EXE_varde")).unwrap();
    let libc_resolver = regex::bytes::Regex::new("getaddrinfo|gethostbyname").unwrap();
    if let Some(m) = libc_resolver.find(&bin) {
        panic!(
            "the varde binary references {}",
            String::from_utf8_lossy(m.as_bytes())
        );
    }
}
