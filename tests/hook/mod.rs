//! A real webhook receiver for tests (hyper on 127.0.0.1, port 0): answers
//! 200, 503, or holds requests, by mode; records every request with its
//! idempotency key and whether its HMAC signature verified.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use serde_json::Value;
use varde::notify::channel::webhook::verify_signature;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Answer 503.
    Down,
    /// Answer 200.
    Up,
    /// Hold each request without answering until the mode changes (its
    /// arrival is recorded with status 0).
    Hang,
}

#[derive(Clone, Debug)]
pub struct Got {
    pub key: String,
    pub status: u16,
    pub body: Value,
    pub signed: bool,
}

#[derive(Clone)]
pub struct Receiver {
    mode: Arc<Mutex<Mode>>,
    got: Arc<Mutex<Vec<Got>>>,
    secret: &'static str,
    pub port: u16,
}

impl Receiver {
    /// Starts a receiver verifying signatures with `secret`.
    pub async fn start(mode: Mode, secret: &'static str) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver {
            mode: Arc::new(Mutex::new(mode)),
            got: Arc::new(Mutex::new(Vec::new())),
            secret,
            port: listener.local_addr().unwrap().port(),
        };
        let r2 = r.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let r = r2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let r = r.clone();
                        async move { Ok::<_, Infallible>(r.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        r
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let h = req.headers().clone();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let header = |n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let signed = verify_signature(
            self.secret.as_bytes(),
            &header("x-varde-timestamp"),
            &body,
            &header("x-varde-signature"),
        );
        let mode = *self.mode.lock().unwrap();
        let status = match mode {
            Mode::Up => 200,
            Mode::Down => 503,
            Mode::Hang => {
                self.record(&header("idempotency-key"), 0, &body, signed);
                while *self.mode.lock().unwrap() == Mode::Hang {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                return Response::builder()
                    .status(200)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
            }
        };
        self.record(&header("idempotency-key"), status, &body, signed);
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap()
    }

    fn record(&self, key: &str, status: u16, body: &[u8], signed: bool) {
        self.got.lock().unwrap().push(Got {
            key: key.to_owned(),
            status,
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
            signed,
        });
    }

    pub fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Accepted (200) requests by idempotency key → how many times; each
    /// must carry a valid signature.
    pub fn accepted(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for g in self.got().into_iter().filter(|g| g.status == 200) {
            assert!(g.signed, "HMAC verifies on the receiving side: {g:?}");
            *m.entry(g.key).or_default() += 1;
        }
        m
    }

    /// Accepted keys containing `part` (e.g. "-firing-"), with their counts.
    pub fn accepted_with(&self, part: &str) -> Vec<(String, usize)> {
        self.accepted()
            .into_iter()
            .filter(|(k, _)| k.contains(part))
            .collect()
    }
}
