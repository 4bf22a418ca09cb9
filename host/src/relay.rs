//! The relay stage: copy bytes both ways between the client and a backend.
//!
//! - Full duplex: each direction is pumped on its own.
//! - Half-close: when one side finishes sending (FIN), the other side's write
//!   half is shut down and the opposite direction keeps flowing until it
//!   finishes too.
//! - Idle timeout: the relay ends when no byte moved in either direction for
//!   the backend's `idle-timeout`.
//! - An error on either side (reset, broken pipe) ends both directions.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Bytes read per system call in each direction.
const BUFFER_SIZE: usize = 128 << 10;

/// How a relay ended. Each variant is a label in logs.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both sides finished sending.
    Done,
    /// Nothing moved for the idle timeout.
    Idle,
    /// Reading from or writing to the client failed.
    ClientError(io::Error),
    /// Reading from or writing to the backend failed.
    BackendError(io::Error),
}

impl RelayEnd {
    pub fn label(&self) -> &'static str {
        match self {
            RelayEnd::Done => "done",
            RelayEnd::Idle => "idle-timeout",
            RelayEnd::ClientError(_) => "client-error",
            RelayEnd::BackendError(_) => "backend-error",
        }
    }
}

/// What a relay moved, and how it ended.
#[derive(Debug)]
pub struct RelayStats {
    pub client_to_backend: u64,
    pub backend_to_client: u64,
    pub end: RelayEnd,
}

#[derive(Clone, Copy)]
enum Side {
    Client,
    Backend,
}

/// A stream split into halves that can be driven at once. TCP streams split
/// for free; other streams (TLS) go through `tokio::io::split`.
pub trait IntoHalves {
    type Read: AsyncRead + Unpin;
    type Write: AsyncWrite + Unpin;
    fn into_halves(self) -> (Self::Read, Self::Write);
}

impl IntoHalves for tokio::net::TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl IntoHalves for tokio::io::DuplexStream {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

impl IntoHalves for hyper_util::rt::TokioIo<hyper::upgrade::Upgraded> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// A TLS stream from the termination stage. A newtype so it can be split
/// (and so the sniff stage's generic code sees one concrete type).
pub struct TlsStreamHalves(pub tokio_rustls::server::TlsStream<crate::io::PrefixedIo<tokio::net::TcpStream>>);

impl IntoHalves for TlsStreamHalves {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

impl AsyncRead for TlsStreamHalves {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStreamHalves {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, data)
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Relay until both sides are done, one fails, or the link is idle.
pub async fn relay<C, B>(client: C, backend: B, idle_timeout: Duration) -> RelayStats
where
    C: IntoHalves,
    B: IntoHalves,
{
    let (client_read, client_write) = client.into_halves();
    let (backend_read, backend_write) = backend.into_halves();
    let start = Instant::now();
    // Milliseconds since `start` of the last byte moved, in either direction.
    let last_activity = AtomicU64::new(0);
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);

    let both = async {
        tokio::try_join!(
            pump(client_read, backend_write, Side::Client, Side::Backend, &up, &last_activity, start),
            pump(backend_read, client_write, Side::Backend, Side::Client, &down, &last_activity, start),
        )
    };
    let end = tokio::select! {
        result = both => match result {
            Ok(_) => RelayEnd::Done,
            Err((Side::Client, e)) => RelayEnd::ClientError(e),
            Err((Side::Backend, e)) => RelayEnd::BackendError(e),
        },
        () = idle(&last_activity, start, idle_timeout) => RelayEnd::Idle,
    };
    RelayStats { client_to_backend: up.into_inner(), backend_to_client: down.into_inner(), end }
}

/// Copy `from` → `to` until `from` finishes, then shut `to` down (pass the FIN on).
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    from_side: Side,
    to_side: Side,
    moved: &AtomicU64,
    last_activity: &AtomicU64,
    start: Instant,
) -> Result<(), (Side, io::Error)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; BUFFER_SIZE];
    loop {
        let n = from.read(&mut buffer).await.map_err(|e| (from_side, e))?;
        if n == 0 {
            // Shutting down a half whose peer already left is not an error worth reporting.
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buffer[..n]).await.map_err(|e| (to_side, e))?;
        moved.fetch_add(n as u64, Ordering::Relaxed);
        last_activity.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Resolves once nothing has moved for `timeout`.
async fn idle(last_activity: &AtomicU64, start: Instant, timeout: Duration) {
    loop {
        let last = start + Duration::from_millis(last_activity.load(Ordering::Relaxed));
        let deadline = last + timeout;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn half_close_keeps_the_other_direction_flowing() {
        let (client, mut client_peer) = duplex(1024);
        let (backend, mut backend_peer) = duplex(1024);
        let relay = tokio::spawn(relay(client, backend, Duration::from_secs(60)));

        client_peer.write_all(b"request").await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        backend_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request", "the backend sees the bytes, then the FIN");

        backend_peer.write_all(b"response after the client's FIN").await.unwrap();
        backend_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        client_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"response after the client's FIN");

        let stats = relay.await.unwrap();
        assert!(matches!(stats.end, RelayEnd::Done), "{stats:?}");
        assert_eq!((stats.client_to_backend, stats.backend_to_client), (7, 31));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_links_are_closed() {
        let (client, mut client_peer) = duplex(1024);
        let (backend, _backend_peer) = duplex(1024);
        let relay = tokio::spawn(relay(client, backend, Duration::from_secs(30)));
        client_peer.write_all(b"x").await.unwrap();
        let stats = relay.await.unwrap();
        assert!(matches!(stats.end, RelayEnd::Idle), "{stats:?}");
        assert_eq!(stats.client_to_backend, 1);
    }
}
