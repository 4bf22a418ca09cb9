//! Idle keep-alive backend connections, per thread and per server address:
//! no lock, no task per connection. A connection is checked before reuse
//! (one non-blocking peek): one the server closed while it sat idle, or
//! that has bytes nobody asked for, is dropped rather than used.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// Most idle connections kept per server on one thread.
const MAX_IDLE_PER_SERVER: usize = 64;

/// Most spare read buffers kept per thread.
const MAX_SPARE_BUFFERS: usize = 64;

thread_local! {
    static IDLE: RefCell<HashMap<SocketAddr, Vec<TcpStream>>> = RefCell::new(HashMap::new());
    /// Read buffers of finished backend exchanges, for the next ones.
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
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

/// An idle connection to `server` that still looks open.
pub fn take(server: SocketAddr) -> Option<TcpStream> {
    IDLE.with_borrow_mut(|idle| {
        let streams = idle.get_mut(&server)?;
        while let Some(stream) = streams.pop() {
            if still_open(&stream) {
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
