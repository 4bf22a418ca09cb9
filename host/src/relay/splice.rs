//! Relay two TCP sockets both ways with splice(2): socket → pipe → socket, so the bytes stay in the kernel and are never copied into
//! the proxy's memory.
//!
//! One hand-written future drives both directions (no async state machines,
//! which nest tokio's readiness futures and grow to ~3 KB): it holds the two
//! sockets, a few counters per direction and the idle timer, ~200 bytes, so
//! an idle tunnel costs little more than its sockets' registrations.
//!
//! Driven by tokio's readiness: when the source is readable, splice what it
//! has into a pipe, then splice the pipe into the destination as it becomes
//! writable. A splice that would block clears the readiness (`try_io`), so
//! the next poll really waits.
//!
//! A direction holds a pipe only while bytes move: when the source runs dry
//! the (empty) pipe goes back to a small process-wide pool, so an idle relay
//! holds no pipe, no descriptors beyond its sockets, and no kernel buffers.

#![allow(unsafe_code)] // the FFI calls below, each with its SAFETY note

use super::{RelayEnd, RelayStats, Side};
use bytes::{Buf, Bytes};
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// The pipe size asked for: bigger pipes move more per system call. The
/// kernel may refuse (`/proc/sys/fs/pipe-max-size`, or the per-user pipe
/// budget); the default size (64 KiB) is used then.
const PIPE_SIZE: usize = 1 << 20;

/// Empty pipes kept for the next burst of any relay. More pipes than this
/// are only in use during a burst of that many relays at once, and are
/// closed afterwards.
const SPARE_PIPES: usize = 64;

static SPARES: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

/// Relay two TCP sockets both ways until both finish, one fails, or nothing
/// moved for `idle`. `pending.to_backend` / `to_client` are written first.
pub(super) fn relay(client: TcpStream, backend: TcpStream, pending: super::Pending, idle: Duration) -> SpliceRelay {
    let now = Instant::now();
    SpliceRelay {
        client,
        backend,
        up: Direction::new(pending.to_backend),
        down: Direction::new(pending.to_client),
        idle,
        last_activity: now,
        timer: Box::pin(tokio::time::sleep_until(now + idle)),
    }
}

/// Both directions of a spliced relay, and its idle timer.
pub(super) struct SpliceRelay {
    client: TcpStream,
    backend: TcpStream,
    /// client → backend
    up: Direction,
    /// backend → client
    down: Direction,
    idle: Duration,
    last_activity: Instant,
    /// Fires at `last_activity + idle` or earlier; re-armed when it fires early.
    timer: Pin<Box<Sleep>>,
}

/// One direction's state between polls.
struct Direction {
    /// Bytes an earlier stage read and this direction must write first.
    pending: Bytes,
    /// Held from the first byte of a burst until the source has nothing more.
    pipe: Option<Pipe>,
    /// Bytes in `pipe` not yet written to the destination.
    in_pipe: usize,
    /// The source finished (FIN seen).
    eof: bool,
    /// The destination's write half was shut down: this direction is over.
    done: bool,
    moved: u64,
}

impl Direction {
    fn new(pending: Bytes) -> Self {
        Self { pending, pipe: None, in_pipe: 0, eof: false, done: false, moved: 0 }
    }

    /// The pipe goes back to the pool while the source has nothing to give.
    fn release_pipe(&mut self) {
        if self.in_pipe == 0
            && let Some(pipe) = self.pipe.take()
        {
            pipe.give_back();
        }
    }

    /// Move what can be moved now; `Ready(Ok)` once the direction is over.
    /// `moved_now` is set when any byte reached the destination.
    fn poll_move(
        &mut self,
        cx: &mut Context<'_>,
        (from, from_side): (&TcpStream, Side),
        (to, to_side): (&TcpStream, Side),
        moved_now: &mut bool,
    ) -> Poll<Result<(), RelayEnd>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            while !self.pending.is_empty() {
                ready!(to.poll_write_ready(cx)).map_err(|e| to_side.error(e))?;
                match to.try_write(&self.pending) {
                    Ok(n) => {
                        self.pending.advance(n);
                        self.moved += n as u64;
                        *moved_now = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(to_side.error(e))),
                }
            }
            self.pending = Bytes::new(); // may be a slice of a larger buffer: do not keep it alive
            while self.in_pipe > 0 {
                ready!(to.poll_write_ready(cx)).map_err(|e| to_side.error(e))?;
                let pipe = self.pipe.as_ref().expect("bytes in the pipe mean a pipe");
                // The pipe holds bytes here, so a splice that would block means the socket is full.
                match to.try_io(Interest::WRITABLE, || splice(pipe.read.as_fd(), to.as_fd(), self.in_pipe)) {
                    Ok(n) => {
                        self.in_pipe -= n;
                        self.moved += n as u64;
                        *moved_now = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(to_side.error(e))),
                }
            }
            if self.eof {
                self.release_pipe();
                // Pass the FIN on. Shutting down a half whose peer already
                // left is not an error worth reporting.
                shutdown_write(to);
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            match from.poll_read_ready(cx) {
                Poll::Pending => {
                    self.release_pipe();
                    return Poll::Pending;
                }
                Poll::Ready(result) => result.map_err(|e| from_side.error(e))?,
            }
            let pipe = match &mut self.pipe {
                Some(pipe) => pipe,
                None => self.pipe.insert(Pipe::take().map_err(RelayEnd::LocalError)?),
            };
            // The pipe is empty here, so a splice that would block means the socket has nothing.
            match from.try_io(Interest::READABLE, || splice(from.as_fd(), pipe.write.as_fd(), pipe.capacity)) {
                Ok(0) => self.eof = true,
                Ok(n) => self.in_pipe = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.release_pipe(),
                Err(e) => return Poll::Ready(Err(from_side.error(e))),
            }
        }
    }
}

impl Future for SpliceRelay {
    type Output = RelayStats;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RelayStats> {
        let this = self.get_mut();
        let mut moved_now = false;
        let client = (&this.client, Side::Client);
        let backend = (&this.backend, Side::Backend);
        let up = this.up.poll_move(cx, client, backend, &mut moved_now);
        let down = this.down.poll_move(cx, backend, client, &mut moved_now);
        let end = match (up, down) {
            (Poll::Ready(Err(end)), _) | (_, Poll::Ready(Err(end))) => Some(end),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Some(RelayEnd::Done),
            _ => None,
        };
        if let Some(end) = end {
            return Poll::Ready(this.stats(end));
        }
        if moved_now {
            this.last_activity = Instant::now();
        }
        // The timer was set for the last activity known then; when it fires
        // early (bytes moved since), it is set again for the new deadline.
        while this.timer.as_mut().poll(cx).is_ready() {
            let deadline = this.last_activity + this.idle;
            if Instant::now() >= deadline {
                return Poll::Ready(this.stats(RelayEnd::Idle));
            }
            this.timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

impl SpliceRelay {
    fn stats(&mut self, end: RelayEnd) -> RelayStats {
        // A pipe dropped mid-burst still holds bytes: closed, not pooled.
        RelayStats { client_to_backend: self.up.moved, backend_to_client: self.down.moved, end }
    }
}

/// Send our FIN on `socket` (its read side stays open).
fn shutdown_write(socket: &TcpStream) {
    // SAFETY: shutdown on a descriptor the borrowed stream keeps open; it touches no memory of ours.
    unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_WR) };
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
