//! A plain std-thread HTTP/1.1 responder for tests that drive the built
//! binary and need no tokio runtime of their own.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;

/// A one-shot-per-connection HTTP/1.1 responder on a std thread: answers
/// every connection with `response` then closes. Bounded: serves at most
/// `max` connections.
pub fn http_responder(response: &'static str, max: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            // Read the request head (bounded) before answering.
            while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 64 * 1024 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(response.as_bytes());
        }
    });
    port
}
