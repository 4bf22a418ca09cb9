//! The lean HTTP/1 path: the common request served without hyper.
//!
//! ```text
//! client bytes ─► parse the head once (httparse, strict framing)
//!              ─► the same decision as hyper's path (`http::decide`: limits, host rules, route plugin)
//!              ─► the edited head written to an idle pooled backend connection (or a new one)
//!              ─► the body relayed by its framing ─► the response head parsed, edited, written
//!              ─► the response body relayed by its framing ─► the backend connection back to the pool
//! ```
//!
//! One task per client connection, no task per backend connection, no
//! header map rebuilt twice, buffers reused for the connection's life.
//! HTTP/1.0 clients are served here too (a body of unknown length reaches
//! them unchunked, up to the close). Anything unusual — an upgrade, `Expect`,
//! a target that is not origin-form, a transfer coding besides `chunked`, or
//! any transfer coding in HTTP/1.0 — is handed to hyper with every byte read
//! so far ([`serve`] returns the stream).
//!
//! - [`parse`]: request and response heads, and the RFC 9112 framing rules.
//! - [`framing`]: bodies by Content-Length, chunked, or read-to-close.
//! - [`pool`]: idle backend connections, per thread.
//! - [`exchange`]: one request to a backend and its response head.
//! - [`serve`]: the connection loop.
//! - [`deadline`]: the per-connection timers.

mod deadline;
mod exchange;
mod framing;
mod parse;
mod pool;
mod serve;

pub use serve::{Served, serve};

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes read from a stream and not consumed yet; the buffer lives as long
/// as the stream.
pub struct Buffered<S> {
    pub io: S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// How much a read asks for at least.
const READ_SIZE: usize = 16 * 1024;
/// What the first read into an empty client buffer asks for: a request head
/// usually fits, and an idle keep-alive connection holds no more than this.
const FIRST_READ: usize = 2 * 1024;

impl<S: AsyncRead + Unpin> Buffered<S> {
    pub fn new(io: S, buf: Vec<u8>) -> Self {
        let end = buf.len();
        Self { io, buf, start: 0, end }
    }

    /// Between requests, with nothing buffered: give back a buffer that grew
    /// for a large head or body, so an idle connection stays small.
    pub fn release(&mut self) {
        if self.start == self.end && self.buf.len() > FIRST_READ {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }

    /// A buffer kept from an earlier stream, holding nothing yet (its
    /// length is kept, so it is not zeroed again).
    pub fn reuse(io: S, buf: Vec<u8>) -> Self {
        Self { io, buf, start: 0, end: 0 }
    }

    /// The bytes read and not consumed.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Read more; `Ok(0)` at the end of the stream.
    pub async fn fill(&mut self) -> io::Result<usize> {
        let want = if self.end == 0 && self.buf.len() <= FIRST_READ { FIRST_READ } else { READ_SIZE };
        if self.start > 0 && self.buf.len() - self.end < want {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < want {
            self.buf.resize(self.end + want, 0);
        }
        let n = self.io.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// The stream and the bytes not consumed, for whoever reads it next.
    pub fn into_parts(mut self) -> (Vec<u8>, S) {
        self.buf.truncate(self.end);
        self.buf.drain(..self.start);
        (self.buf, self.io)
    }

    /// The stream and the buffer (for [`Buffered::reuse`]); `Err` when
    /// bytes are left unread in it.
    pub fn into_empty(self) -> Result<(S, Vec<u8>), (S, Vec<u8>)> {
        if self.start != self.end {
            return Err((self.io, self.buf));
        }
        Ok((self.io, self.buf))
    }
}

/// Output gathered into one buffer, so a head and a small body go out in
/// one write; large pieces go straight through.
pub struct Sink {
    pub out: Vec<u8>,
    /// Bytes of body passed on (for the byte counters).
    pub body_bytes: u64,
    /// Write a chunked or read-to-close body as bare bytes, delimited by the
    /// close: for an HTTP/1.0 client, which cannot read chunks.
    pub plain: bool,
}

/// Past this, gathered output is written before more is added.
const GATHER: usize = 64 * 1024;

impl Sink {
    pub fn new(out: Vec<u8>) -> Self {
        Self { out, body_bytes: 0, plain: false }
    }

    pub async fn put<W: AsyncWrite + Unpin>(&mut self, io: &mut W, bytes: &[u8]) -> io::Result<()> {
        if self.out.len() + bytes.len() <= GATHER {
            self.out.extend_from_slice(bytes);
            return Ok(());
        }
        self.flush(io).await?;
        if bytes.len() <= GATHER {
            self.out.extend_from_slice(bytes);
            return Ok(());
        }
        io.write_all(bytes).await
    }

    pub async fn flush<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> io::Result<()> {
        if !self.out.is_empty() {
            io.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }
}

pub use crate::text::push_decimal;
