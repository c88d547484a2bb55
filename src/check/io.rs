//! Streams for checks: plain or TLS behind one type, with an I/O clock that
//! notes when the request finished writing and when the first byte of the
//! answer arrived — the edges of the `processing` phase.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

/// A TCP stream, possibly wrapped in TLS.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(TlsStream<TcpStream>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// When the last write ended and when the first read after it arrived,
/// and the TLS error the stream failed with, if any (HTTP/2 keeps only the
/// text of the I/O error that ended a connection).
#[derive(Clone, Debug, Default)]
pub(crate) struct IoTimes {
    pub last_write: Option<Instant>,
    pub first_read_after_write: Option<Instant>,
    pub tls_error: Option<rustls::Error>,
}

/// A stream that records [`IoTimes`] on the plaintext side (so TLS
/// records such as session tickets never count as "the answer").
pub(crate) struct TimedIo<S> {
    inner: S,
    times: Arc<Mutex<IoTimes>>,
}

impl<S> TimedIo<S> {
    pub(crate) fn new(inner: S) -> (Self, Arc<Mutex<IoTimes>>) {
        let times = Arc::new(Mutex::new(IoTimes::default()));
        (
            Self {
                inner,
                times: times.clone(),
            },
            times,
        )
    }

    fn note_error(&self, e: &io::Error) {
        if let Some(r) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            let mut t = self.times.lock().unwrap_or_else(PoisonError::into_inner);
            t.tls_error.get_or_insert_with(|| r.clone());
        }
    }

    fn note_write(&self) {
        let mut t = self.times.lock().unwrap_or_else(PoisonError::into_inner);
        t.last_write = Some(Instant::now());
        t.first_read_after_write = None;
    }
}

pub(crate) fn snapshot(times: &Mutex<IoTimes>) -> IoTimes {
    times.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &res {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let mut t = this.times.lock().unwrap_or_else(PoisonError::into_inner);
                if t.last_write.is_some() && t.first_read_after_write.is_none() {
                    t.first_read_after_write = Some(Instant::now());
                }
            }
            Poll::Ready(Err(e)) => this.note_error(e),
            _ => {}
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        match &res {
            Poll::Ready(Ok(n)) if *n > 0 => this.note_write(),
            Poll::Ready(Err(e)) => this.note_error(e),
            _ => {}
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        match &res {
            Poll::Ready(Ok(n)) if *n > 0 => this.note_write(),
            Poll::Ready(Err(e)) => this.note_error(e),
            _ => {}
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
