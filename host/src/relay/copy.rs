//! Relay one direction through user space, for streams the kernel cannot
//! splice (TLS, upgraded hyper streams) and for systems without splice(2).
//!
//! A relay direction owns no buffer while it waits: it reads into a scratch
//! buffer of the worker thread and writes what it got to the other side in
//! the same poll. Only bytes the other side does not take at once are copied
//! into a buffer of their own, held until they are written. So an idle
//! tunnel (a quiet WebSocket) costs no buffer at all.

use super::{Flow, RelayEnd};
use bytes::Bytes;
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Bytes read per call.
const SCRATCH_SIZE: usize = 64 << 10;

thread_local! {
    /// Shared by every relay on this worker thread: it is only borrowed
    /// inside one synchronous poll, never across an await.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// What one read-and-forward step did.
enum Step {
    /// The source finished sending.
    Eof,
    /// Everything read was written.
    Forwarded(usize),
    /// `written` bytes were written; the other side is full, `rest` still waits.
    Blocked { written: usize, rest: Vec<u8> },
}

/// Copy `from` → `to` until `from` finishes, then shut `to` down (pass the FIN on).
pub(super) async fn pump<R, W>(mut from: R, mut to: W, pending: Bytes, flow: &Flow<'_>) -> Result<(), RelayEnd>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if !pending.is_empty() {
        to.write_all(&pending).await.map_err(|e| flow.write_error(e))?;
        flow.delivered(pending.len());
    }
    drop(pending); // may be a slice of a larger buffer: do not keep it alive
    loop {
        match std::future::poll_fn(|cx| read_and_forward(cx, &mut from, &mut to, flow)).await? {
            Step::Eof => break,
            Step::Forwarded(n) => flow.delivered(n),
            Step::Blocked { written, rest } => {
                flow.delivered(written);
                to.write_all(&rest).await.map_err(|e| flow.write_error(e))?;
                flow.delivered(rest.len());
            }
        }
    }
    // Shutting down a half whose peer already left is not an error worth reporting.
    let _ = to.shutdown().await;
    Ok(())
}

/// Read once into the thread's scratch buffer and write as much as `to`
/// takes right away.
fn read_and_forward<R, W>(
    cx: &mut Context<'_>,
    from: &mut R,
    to: &mut W,
    flow: &Flow<'_>,
) -> Poll<Result<Step, RelayEnd>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => forward_through(cx, from, to, flow, &mut scratch),
        // Only if a stream's poll re-entered a relay on this thread; never seen, but safe.
        Err(_) => forward_through(cx, from, to, flow, &mut vec![0; SCRATCH_SIZE]),
    })
}

fn forward_through<R, W>(
    cx: &mut Context<'_>,
    from: &mut R,
    to: &mut W,
    flow: &Flow<'_>,
    buffer: &mut [u8],
) -> Poll<Result<Step, RelayEnd>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut read = ReadBuf::new(buffer);
    if let Err(e) = ready!(Pin::new(&mut *from).poll_read(cx, &mut read)) {
        return Poll::Ready(Err(flow.read_error(e)));
    }
    let data = read.filled();
    if data.is_empty() {
        return Poll::Ready(Ok(Step::Eof));
    }
    let mut written = 0;
    while written < data.len() {
        match Pin::new(&mut *to).poll_write(cx, &data[written..]) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(flow.write_error(io::ErrorKind::WriteZero.into()))),
            Poll::Ready(Ok(n)) => written += n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(flow.write_error(e))),
            // The bytes were read: keep them, and let the caller wait for room.
            Poll::Pending => return Poll::Ready(Ok(Step::Blocked { written, rest: data[written..].to_vec() })),
        }
    }
    Poll::Ready(Ok(Step::Forwarded(written)))
}
