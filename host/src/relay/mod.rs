//! The relay stage: copy bytes both ways between the client and a backend.
//!
//! - Full duplex: each direction is pumped on its own.
//! - Half-close: when one side finishes sending (FIN), the other side's write
//!   half is shut down and the opposite direction keeps flowing until it
//!   finishes too.
//! - Idle timeout: the relay ends when no byte moved in either direction for
//!   the backend's `idle-timeout`.
//! - An error on either side (reset, broken pipe) ends both directions.
//! - Bytes an earlier stage read but did not pass on ([`Pending`]) are written
//!   first.
//!
//! Two ways to move the bytes, same semantics:
//!
//! - [`splice`] (Linux, plain TCP on both sides): kernel-side through a pipe,
//!   never copied into the proxy's memory.
//! - [`copy`] (TLS, upgraded hyper streams, other systems): through a buffer
//!   in user space.
//!
//! Neither holds a buffer or a pipe while the link is idle: an idle relay
//! costs its sockets and a few hundred bytes of task state.

mod copy;
#[cfg(target_os = "linux")]
mod splice;
mod tunnel;

pub use tunnel::tunnel;

use bytes::Bytes;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

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
    /// The proxy itself could not go on (e.g. out of file descriptors for a pipe).
    LocalError(io::Error),
}

impl RelayEnd {
    pub fn label(&self) -> &'static str {
        match self {
            RelayEnd::Done => "done",
            RelayEnd::Idle => "idle-timeout",
            RelayEnd::ClientError(_) => "client-error",
            RelayEnd::BackendError(_) => "backend-error",
            RelayEnd::LocalError(_) => "local-error",
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

impl Side {
    fn error(self, error: io::Error) -> RelayEnd {
        match self {
            Side::Client => RelayEnd::ClientError(error),
            Side::Backend => RelayEnd::BackendError(error),
        }
    }
}

/// Bytes already read from one side by an earlier stage (e.g. what hyper
/// buffered past an Upgrade's head) and not yet written to the other.
#[derive(Default)]
pub struct Pending {
    pub to_backend: Bytes,
    pub to_client: Bytes,
}

/// A stream split into halves that can be driven at once. TCP streams split
/// for free; other streams (TLS) go through `tokio::io::split`.
pub trait IntoHalves {
    type Read: AsyncRead + Unpin;
    type Write: AsyncWrite + Unpin;
    fn into_halves(self) -> (Self::Read, Self::Write);

    /// The plain TCP stream this is, if it is one, so [`relay_tcp`] can take it.
    fn into_tcp(self) -> Result<TcpStream, Self>
    where
        Self: Sized,
    {
        Err(self)
    }
}

impl IntoHalves for TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }

    fn into_tcp(self) -> Result<TcpStream, Self> {
        Ok(self)
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

/// Relay until both sides are done, one fails, or the link is idle, copying
/// through user space. For two plain TCP streams, [`relay_tcp`] is cheaper.
pub async fn relay<C, B>(client: C, backend: B, idle_timeout: Duration) -> RelayStats
where
    C: IntoHalves,
    B: IntoHalves,
{
    relay_copy(client, backend, Pending::default(), idle_timeout).await
}

/// Drop the waker a stream may still hold for the task that used it before
/// (tokio keeps the last `poll_read_ready`/`poll_write_ready` waker in the
/// stream's readiness slots). A stream handed over from another task (the
/// HTTP connection that upgraded to a WebSocket) would otherwise keep that
/// finished task's whole future allocated for as long as the tunnel lives:
/// ~14 KiB per idle WebSocket, measured with heaptrack.
pub fn forget_previous_task(stream: &TcpStream) {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // Pending (the usual, idle case) stores the no-op waker in place of the old one.
    let _ = stream.poll_read_ready(&mut cx);
    let _ = stream.poll_write_ready(&mut cx);
}

/// Relay between two plain TCP streams: spliced in the kernel on Linux,
/// copied elsewhere. `pending` is written before anything else moves. On
/// Linux the future is a small hand-written one (~200 bytes): an idle
/// tunnel's task is little more than this.
#[cfg(target_os = "linux")]
pub fn relay_tcp(
    client: TcpStream,
    backend: TcpStream,
    pending: Pending,
    idle_timeout: Duration,
) -> impl Future<Output = RelayStats> + Send {
    splice::relay(client, backend, pending, idle_timeout)
}

/// Relay between two plain TCP streams (copied through user space here).
#[cfg(not(target_os = "linux"))]
pub async fn relay_tcp(client: TcpStream, backend: TcpStream, pending: Pending, idle_timeout: Duration) -> RelayStats {
    relay_copy(client, backend, pending, idle_timeout).await
}

/// Relay any two streams through user space.
pub async fn relay_copy<C, B>(client: C, backend: B, pending: Pending, idle_timeout: Duration) -> RelayStats
where
    C: IntoHalves,
    B: IntoHalves,
{
    let (client_read, client_write) = client.into_halves();
    let (backend_read, backend_write) = backend.into_halves();
    let clock = Clock::new();
    let up = Flow::new(Side::Client, Side::Backend, &clock);
    let down = Flow::new(Side::Backend, Side::Client, &clock);
    let end = drive(
        copy::pump(client_read, backend_write, pending.to_backend, &up),
        copy::pump(backend_read, client_write, pending.to_client, &down),
        &clock,
        idle_timeout,
    )
    .await;
    RelayStats { client_to_backend: up.total(), backend_to_client: down.total(), end }
}

/// Run both directions until both finish, one fails, or nothing moved for `idle_timeout`.
async fn drive(
    up: impl Future<Output = Result<(), RelayEnd>>,
    down: impl Future<Output = Result<(), RelayEnd>>,
    clock: &Clock,
    idle_timeout: Duration,
) -> RelayEnd {
    tokio::select! {
        result = async { tokio::try_join!(up, down) } => match result {
            Ok(_) => RelayEnd::Done,
            Err(end) => end,
        },
        () = clock.idle_for(idle_timeout) => RelayEnd::Idle,
    }
}

/// When the last byte moved, in either direction.
struct Clock {
    start: Instant,
    /// Milliseconds since `start` of the last byte moved.
    last_activity: AtomicU64,
}

impl Clock {
    fn new() -> Self {
        Self { start: Instant::now(), last_activity: AtomicU64::new(0) }
    }

    fn touch(&self) {
        self.last_activity.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_activity.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// One direction of a relay: the side it reads, the side it writes, and
/// how many bytes it delivered.
struct Flow<'a> {
    from: Side,
    to: Side,
    moved: AtomicU64,
    clock: &'a Clock,
}

impl<'a> Flow<'a> {
    fn new(from: Side, to: Side, clock: &'a Clock) -> Self {
        Self { from, to, moved: AtomicU64::new(0), clock }
    }

    /// `n` bytes reached the other side.
    fn delivered(&self, n: usize) {
        self.moved.fetch_add(n as u64, Ordering::Relaxed);
        self.clock.touch();
    }

    fn read_error(&self, error: io::Error) -> RelayEnd {
        self.from.error(error)
    }

    fn write_error(&self, error: io::Error) -> RelayEnd {
        self.to.error(error)
    }

    fn total(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

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
