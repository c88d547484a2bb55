//! Streams for checks: plain or TLS behind one type, with an I/O clock that
//! notes when the request finished writing and when the first byte of the
//! answer arrived — the edges of the `processing` phase.
//!
//! On HTTP/1.1 the answer is the first byte read after the request was
//! written. On HTTP/2 the connection also carries SETTINGS, PING and
//! WINDOW_UPDATE frames in both directions, so the clock scans the frame
//! headers it reads and notes the first HEADERS frame of a stream instead —
//! at the read that brought it, not when the HTTP layer gets round to
//! parsing it (which can be a scheduling round later on a busy probe).

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

/// What counts as the first byte of the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Any byte read after the last write (HTTP/1.1, raw TCP).
    Raw,
    /// The first HEADERS frame on a stream (HTTP/2).
    H2,
}

/// Incremental HTTP/2 frame-header scanner over the bytes a client reads
/// (the server sends no preface, only frames).
#[derive(Debug, Default)]
struct H2Scan {
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
}

impl H2Scan {
    const HEADERS: u8 = 0x1;

    /// Feeds read bytes; true when a HEADERS frame of a stream starts in them.
    fn feed(&mut self, mut data: &[u8]) -> bool {
        let mut found = false;
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (9 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 9 {
                let h = &self.header;
                let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                found |= h[3] == Self::HEADERS && stream != 0;
                self.skip = len;
                self.have = 0;
            }
        }
        found
    }
}

/// A stream that records [`IoTimes`] on the plaintext side (so TLS
/// records such as session tickets never count as "the answer").
pub(crate) struct TimedIo<S> {
    inner: S,
    times: Arc<Mutex<IoTimes>>,
    h2: Option<H2Scan>,
}

impl<S> TimedIo<S> {
    pub(crate) fn new(inner: S, framing: Framing) -> (Self, Arc<Mutex<IoTimes>>) {
        let times = Arc::new(Mutex::new(IoTimes::default()));
        (
            Self {
                inner,
                times: times.clone(),
                h2: (framing == Framing::H2).then(H2Scan::default),
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
        // HTTP/2 writes frames of its own after the request (acks, window
        // updates); only the response HEADERS frame counts there.
        if self.h2.is_none() {
            t.first_read_after_write = None;
        }
    }

    fn note_read(&mut self, data: &[u8]) {
        let now = Instant::now();
        let answer = match &mut self.h2 {
            None => true,
            Some(scan) => scan.feed(data),
        };
        if answer {
            let mut t = self.times.lock().unwrap_or_else(PoisonError::into_inner);
            if t.last_write.is_some() && t.first_read_after_write.is_none() {
                t.first_read_after_write = Some(now);
            }
        }
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
                this.note_read(&buf.filled()[before..]);
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

#[cfg(test)]
mod tests {
    use super::H2Scan;

    fn frame(ty: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.push(ty);
        f.push(0);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn h2_scan_finds_headers_after_control_frames_in_any_split() {
        let mut bytes = frame(0x4, 0, &[0u8; 12]); // SETTINGS
        bytes.extend(frame(0x4, 0, &[])); // SETTINGS ack
        bytes.extend(frame(0x8, 0, &[0, 0, 1, 0])); // WINDOW_UPDATE
        let at = bytes.len();
        bytes.extend(frame(0x1, 1, &[0x88])); // HEADERS :status 200
        bytes.extend(frame(0x0, 1, b"ok")); // DATA
        for split in 0..bytes.len() {
            let mut scan = H2Scan::default();
            let first = scan.feed(&bytes[..split]);
            let second = scan.feed(&bytes[split..]);
            // Found in the read that completes the HEADERS frame header.
            assert_eq!(first, split >= at + 9, "split at {split}");
            assert_eq!(second, split < at + 9, "split at {split}");
        }
    }

    #[test]
    fn h2_scan_ignores_a_headers_type_byte_inside_a_payload() {
        let mut scan = H2Scan::default();
        // A PING whose payload looks like a HEADERS frame header.
        let ping = frame(0x6, 0, &[0, 0, 1, 1, 0, 0, 0, 0]);
        assert!(!scan.feed(&ping));
        assert!(scan.feed(&frame(0x1, 3, &[0x88])));
    }
}
