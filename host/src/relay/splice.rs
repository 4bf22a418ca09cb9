//! Relay one direction between two TCP sockets with splice(2): socket →
//! pipe → socket, so the bytes stay in the kernel and are never copied into
//! the proxy's memory.
//!
//! Driven by tokio's readiness: wait until the source is readable, splice
//! what it has into a pipe, then splice the pipe into the destination as it
//! becomes writable. A splice that would block clears the readiness
//! (`try_io`), so the next wait really waits.
//!
//! A direction holds a pipe only while bytes move: when the source runs dry
//! the (empty) pipe goes back to a small process-wide pool, so an idle relay
//! holds no pipe, no descriptors beyond its sockets, and no kernel buffers.

#![allow(unsafe_code)] // the FFI calls below, each with its SAFETY note

use super::{Flow, RelayEnd};
use bytes::Bytes;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Mutex;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The pipe size asked for: bigger pipes move more per system call. The
/// kernel may refuse (`/proc/sys/fs/pipe-max-size`, or the per-user pipe
/// budget); the default size (64 KiB) is used then.
const PIPE_SIZE: usize = 1 << 20;

/// Empty pipes kept for the next burst of any relay. More pipes than this
/// are only in use during a burst of that many relays at once, and are
/// closed afterwards.
const SPARE_PIPES: usize = 64;

static SPARES: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

/// Splice `from` → `to` until `from` finishes, then shut `to` down (pass the FIN on).
pub(super) async fn pump(
    from: &OwnedReadHalf,
    mut to: OwnedWriteHalf,
    pending: Bytes,
    flow: &Flow<'_>,
) -> Result<(), RelayEnd> {
    if !pending.is_empty() {
        to.write_all(&pending).await.map_err(|e| flow.write_error(e))?;
        flow.delivered(pending.len());
    }
    drop(pending); // may be a slice of a larger buffer: do not keep it alive
    splice_until_eof(from.as_ref(), to.as_ref(), flow).await?;
    // Shutting down a half whose peer already left is not an error worth reporting.
    let _ = to.shutdown().await;
    Ok(())
}

async fn splice_until_eof(from: &TcpStream, to: &TcpStream, flow: &Flow<'_>) -> Result<(), RelayEnd> {
    // Held from the first byte of a burst until the source has nothing more;
    // dropped (closed, not pooled) if the relay ends mid-burst.
    let mut pipe: Option<Pipe> = None;
    loop {
        from.readable().await.map_err(|e| flow.read_error(e))?;
        let held = match &mut pipe {
            Some(held) => held,
            None => pipe.insert(Pipe::take().map_err(RelayEnd::LocalError)?),
        };
        // The pipe is empty here, so a splice that would block means the socket has nothing.
        let filled = from.try_io(Interest::READABLE, || splice(from.as_fd(), held.write.as_fd(), held.capacity));
        let mut in_pipe = match filled {
            Ok(0) => {
                if let Some(empty) = pipe.take() {
                    empty.give_back();
                }
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Idle again: the pipe goes back until bytes arrive.
                if let Some(empty) = pipe.take() {
                    empty.give_back();
                }
                continue;
            }
            Err(e) => return Err(flow.read_error(e)),
        };
        while in_pipe > 0 {
            to.writable().await.map_err(|e| flow.write_error(e))?;
            // The pipe holds bytes here, so a splice that would block means the socket is full.
            match to.try_io(Interest::WRITABLE, || splice(held.read.as_fd(), to.as_fd(), in_pipe)) {
                Ok(n) => {
                    in_pipe -= n;
                    flow.delivered(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(flow.write_error(e)),
            }
        }
    }
}

/// Move up to `len` bytes from `from` to `to`, one of which must be a pipe.
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (they are
    // borrowed), and null offsets are what sockets and pipes require; splice
    // touches no memory of ours.
    let moved = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if moved < 0 { Err(io::Error::last_os_error()) } else { Ok(moved as usize) }
}

/// A kernel pipe; both ends are closed when it is dropped.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// How many bytes it holds when full.
    capacity: usize,
}

impl Pipe {
    /// An empty pipe from the pool, or a new one.
    fn take() -> io::Result<Pipe> {
        let spare = SPARES.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        match spare {
            Some(pipe) => Ok(pipe),
            None => Pipe::new(),
        }
    }

    /// Return an empty pipe to the pool (or close it when the pool is full).
    fn give_back(self) {
        let mut spares = SPARES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if spares.len() < SPARE_PIPES {
            spares.push(self);
        }
    }

    fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given, which holds exactly two.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ and F_GETPIPE_SZ take
        // an integer argument and touch no memory of ours.
        let mut capacity = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) };
        if capacity <= 0 {
            // Refused: keep the size it has.
            // SAFETY: as above.
            capacity = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        }
        let capacity = if capacity > 0 { capacity as usize } else { 64 << 10 };
        Ok(Pipe { read, write, capacity })
    }
}
