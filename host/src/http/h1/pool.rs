//! Idle keep-alive backend connections, per thread and per server address:
//! no lock, no task per connection. A connection is checked before reuse:
//! one the server closed while it sat idle, or that has bytes nobody asked
//! for, is dropped rather than used.
//!
//! The check costs a `recv(MSG_PEEK)` only when it must be certain. For a
//! request that may be sent again (idempotent, no body) the event loop's
//! word is enough: a connection with no read event since its last response
//! is taken without a system call, and if the server closed it a moment ago
//! the exchange fails before any answer and is sent again on a new one.

use http::HeaderMap;
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use tokio::net::TcpStream;

/// Most idle connections kept per server on one thread.
const MAX_IDLE_PER_SERVER: usize = 64;

/// Most spare read buffers kept per thread.
const MAX_SPARE_BUFFERS: usize = 64;

/// What a client's write buffer starts with, and the most a kept one may hold.
const WRITE_BUFFER: usize = 1024;
const MAX_KEPT_WRITE_BUFFER: usize = 4 * 1024;

thread_local! {
    /// Keyed by the configured server address (never client input): Fx, not SipHash.
    static IDLE: RefCell<FxHashMap<SocketAddr, Vec<TcpStream>>> = RefCell::new(FxHashMap::default());
    /// Read buffers of finished backend exchanges, for the next ones.
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// Write buffers of answered requests: an idle client connection holds none.
    static SPARE_WRITE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// Header maps of forwarded requests, cleared: a new map costs two allocations.
    static SPARE_MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// Most fields a kept header map may have room for (a larger one is freed).
const MAX_KEPT_MAP: usize = 128;

/// An empty header map with room for `fields` (one used before, when there is one).
pub fn header_map(fields: usize) -> HeaderMap {
    match SPARE_MAPS.with_borrow_mut(Vec::pop) {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Give a request's header map back once the request is sent.
pub fn give_back_header_map(mut map: HeaderMap) {
    if map.capacity() > MAX_KEPT_MAP {
        return;
    }
    map.clear();
    SPARE_MAPS.with_borrow_mut(|spare| {
        if spare.len() < MAX_SPARE_BUFFERS {
            spare.push(map);
        }
    });
}

/// A write buffer that goes back to the worker's spares when dropped.
pub struct SpareWrite(Vec<u8>);

impl SpareWrite {
    pub fn new() -> Self {
        SpareWrite(write_buffer())
    }
}

impl Drop for SpareWrite {
    fn drop(&mut self) {
        give_back_write_buffer(std::mem::take(&mut self.0));
    }
}

impl Deref for SpareWrite {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for SpareWrite {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

/// A read buffer for a backend exchange (one used before, when there is one).
pub fn buffer() -> Vec<u8> {
    SPARE.with_borrow_mut(Vec::pop).unwrap_or_default()
}

/// Give a read buffer back for the next exchange.
pub fn give_back(buffer: Vec<u8>) {
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < MAX_SPARE_BUFFERS && buffer.len() <= 64 * 1024 {
            spare.push(buffer);
        }
    });
}

/// An empty write buffer for one request's answer.
pub fn write_buffer() -> Vec<u8> {
    SPARE_WRITE.with_borrow_mut(Vec::pop).unwrap_or_else(|| Vec::with_capacity(WRITE_BUFFER))
}

/// Give a write buffer back once the answer is out (one that grew large is freed).
pub fn give_back_write_buffer(mut buffer: Vec<u8>) {
    buffer.clear();
    SPARE_WRITE.with_borrow_mut(|spare| {
        if spare.len() < MAX_SPARE_BUFFERS && buffer.capacity() <= MAX_KEPT_WRITE_BUFFER {
            spare.push(buffer);
        }
    });
}

/// An idle connection to `server` that still looks open; `replayable`:
/// the request can be sent again if the connection turns out closed.
pub fn take(server: SocketAddr, replayable: bool) -> Option<TcpStream> {
    IDLE.with_borrow_mut(|idle| {
        let streams = idle.get_mut(&server)?;
        while let Some(stream) = streams.pop() {
            if (replayable && !read_event_since_idle(&stream)) || still_open(&stream) {
                return Some(stream);
            }
        }
        None
    })
}

/// Keep `stream` for the next request to `server`.
pub fn put(server: SocketAddr, stream: TcpStream) {
    IDLE.with_borrow_mut(|idle| {
        let streams = idle.entry(server).or_default();
        if streams.len() < MAX_IDLE_PER_SERVER {
            streams.push(stream);
        }
    });
}

/// Whether the event loop saw the socket readable (data or a close) since
/// the last read cleared its readiness; no system call.
fn read_event_since_idle(stream: &TcpStream) -> bool {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    stream.poll_read_ready(&mut context).is_ready()
}

/// Nothing to read and not closed: a peek that would block.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // one recv(2) with MSG_PEEK, with its SAFETY note
fn still_open(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: a valid open socket and a one-byte buffer that outlives the call.
    let n = unsafe {
        libc::recv(stream.as_raw_fd(), (&raw mut byte).cast::<libc::c_void>(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

#[cfg(not(target_os = "linux"))]
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}
