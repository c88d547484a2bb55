//! The HTTP server every endpoint runs on: hostile clients are cut off.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use varde::serve::{Limits, serve};

async fn start(limits: Limits) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, router, limits, async move {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// Reads until the peer closes; `None` if it is still open after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| got)
}

fn limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(300),
        max_connections: 2,
        shutdown_grace: Duration::from_secs(1),
    }
}

#[tokio::test]
async fn slowloris_and_idle_connections_are_closed_at_the_header_deadline() {
    let (addr, _stop) = start(limits()).await;
    let mut partial = TcpStream::connect(&addr).await.unwrap();
    partial
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    for s in [&mut partial, &mut idle] {
        assert!(
            closed_within(s, Duration::from_secs(5)).await.is_some(),
            "connection still open long after the header deadline"
        );
    }
}

#[tokio::test]
async fn keep_alive_connection_is_closed_when_idle_after_a_request() {
    let (addr, _stop) = start(limits()).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("closed after idling");
    assert!(got.starts_with(b"HTTP/1.1 200 OK"), "{got:?}");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let (addr, _stop) = start(Limits {
        header_read_timeout: Duration::from_secs(30),
        ..limits()
    })
    .await;
    let _a = TcpStream::connect(&addr).await.unwrap();
    let _b = TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = TcpStream::connect(&addr).await.unwrap();
    let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let got = closed_within(&mut c, Duration::from_secs(5))
        .await
        .expect("third connection closed");
    assert!(got.is_empty(), "served beyond the limit: {got:?}");
    drop((_a, _b));
    // Capacity comes back once the others are gone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut d = TcpStream::connect(&addr).await.unwrap();
    d.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = closed_within(&mut d, Duration::from_secs(5)).await.unwrap();
    assert!(got.starts_with(b"HTTP/1.1 200 OK"), "{got:?}");
}
